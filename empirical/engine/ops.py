"""Affine operators with precomputed sign-split weights and the LRP backward step.

Every linear operator ``L`` of the network (convolution, fully connected layer,
average pooling, mean, residual sum, attention-weighted sum) is wrapped in an
object with two methods:

``parts(z)``
    ``(O_+, O_-) = (L_{W+}(z), L_{W-}(z))``: the operator applied with the
    positive and with the negative part of its weights, bias excluded, in ONE
    call (the two weight parts are concatenated along the output channels).
    Operators with non-negative weights return ``(L(z), None)``.
``transpose(g_plus, g_minus)``
    ``L^T_{W+} g_plus + L^T_{W-} g_minus`` (vector-Jacobian products), again one
    call with concatenated weights.

:func:`lrp_step` evaluates the terms of a :class:`boundcheck.rules.Rule`
exactly as :func:`boundcheck.rules.transition_matrix` defines them, for a stack
of ``K`` rules at once (their relevances are stacked along a leading axis and
share the sign-part outputs, which are rule-independent).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from boundcheck.rules import SIGN_PARTS, Conventions, Rule

_PLUS_PARTS = ("pp", "pn")  # parts that use W+ (z+ and z- respectively)


class ConvOp:
    """A 2-d convolution ``y = conv(z, W) + b`` (BatchNorm already folded)."""

    kind = "conv"
    nonneg = False

    def __init__(self, module: torch.nn.Conv2d):
        W = module.weight.detach()
        if isinstance(module.padding, str):
            raise ValueError("string padding is canonicalised before ops are built")
        self.stride, self.padding, self.dilation, self.groups = module.stride, module.padding, module.dilation, module.groups
        self.bias = None if module.bias is None else module.bias.detach()
        self.cout = W.shape[0]
        self.Wp = W.clamp(min=0).contiguous()
        self.Wn = W.clamp(max=0).contiguous()
        # groups == 1: both weight parts in ONE call ([W+; W-] along the output channels)
        self.W2 = torch.cat([self.Wp, self.Wn]).contiguous() if self.groups == 1 else None
        self.bias_shape = (self.cout, 1, 1)

    def _conv(self, z, W):
        return F.conv2d(z, W, None, self.stride, self.padding, self.dilation, self.groups)

    def parts(self, z):
        if self.W2 is not None:
            o = self._conv(z, self.W2)
            op_, on_ = o[:, : self.cout], o[:, self.cout :]
        else:
            op_, on_ = self._conv(z, self.Wp), self._conv(z, self.Wn)
        return op_, on_, op_ + on_

    # relevance buffers: "plus" rows feed L^T_{W+}, "minus" rows feed L^T_{W-}
    def buffer(self, rows, tail, with_minus, ref):
        if not with_minus:
            return torch.empty((rows,) + tail, dtype=ref.dtype, device=ref.device)
        if self.W2 is not None:
            return torch.empty((rows, 2) + tail, dtype=ref.dtype, device=ref.device)
        return torch.empty((2, rows) + tail, dtype=ref.dtype, device=ref.device)

    def plus(self, buf, with_minus):
        if not with_minus:
            return buf
        return buf[:, 0] if self.W2 is not None else buf[0]

    def minus(self, buf):
        return buf[:, 1] if self.W2 is not None else buf[1]

    def _out_pad(self, in_hw, out_hw):
        pads = []
        for i in range(2):
            k = self.Wp.shape[2 + i]
            base = (out_hw[i] - 1) * self.stride[i] - 2 * self.padding[i] + self.dilation[i] * (k - 1) + 1
            pads.append(in_hw[i] - base)
        return tuple(pads)

    def _convT(self, g, W, in_shape):
        op = self._out_pad(in_shape[-2:], g.shape[-2:])
        return F.conv_transpose2d(g, W, None, self.stride, self.padding, op, self.groups, self.dilation)

    def transpose(self, buf, with_minus, in_shape):
        if not with_minus:
            return self._convT(buf, self.Wp, in_shape)
        if self.W2 is not None:
            rows, _, c, h, w = buf.shape
            return self._convT(buf.view(rows, 2 * c, h, w), self.W2, in_shape)
        return self._convT(buf[0], self.Wp, in_shape).add_(self._convT(buf[1], self.Wn, in_shape))


class LinearOp:
    """``y = z W^T + b`` on the last axis (any leading axes)."""

    kind = "linear"
    nonneg = False

    def __init__(self, weight, bias=None):
        W = weight.detach()
        self.W2 = torch.cat([W.clamp(min=0), W.clamp(max=0)], 0).contiguous()
        self.Wp = W.clamp(min=0).contiguous()
        self.cout = W.shape[0]
        self.bias = None if bias is None else bias.detach()
        self.bias_shape = (self.cout,)

    def parts(self, z):
        o = F.linear(z, self.W2)
        op_, on_ = o[..., : self.cout], o[..., self.cout :]
        return op_, on_, op_ + on_

    def buffer(self, rows, tail, with_minus, ref):
        shape = (rows,) + tail[:-1] + ((2 * tail[-1],) if with_minus else (tail[-1],))
        return torch.empty(shape, dtype=ref.dtype, device=ref.device)

    def plus(self, buf, with_minus):
        return buf[..., : self.cout] if with_minus else buf

    def minus(self, buf):
        return buf[..., self.cout :]

    def transpose(self, buf, with_minus, in_shape):
        return buf @ (self.W2 if with_minus else self.Wp)


class _NonNegOp:
    """Common buffer handling of operators with non-negative weights (``W- = 0``)."""

    nonneg = True
    bias = None

    def buffer(self, rows, tail, with_minus, ref):
        return torch.empty((rows,) + tail, dtype=ref.dtype, device=ref.device)

    def plus(self, buf, with_minus):
        return buf


class PoolOp(_NonNegOp):
    """A linear operator with non-negative weights given as a function (avg pooling, mean).

    The transpose is the vector-Jacobian product of the (linear) function, computed
    by autograd at a zero input of the right shape; global averages are expanded
    directly.
    """

    kind = "avgpool"

    def __init__(self, fn, global_mean_dims=None):
        self.fn = fn
        self.global_mean_dims = global_mean_dims  # (dims, keepdim) when fn is a plain mean

    def parts(self, z):
        o = self.fn(z)
        return o, None, o

    def transpose(self, buf, with_minus, in_shape):
        gp = buf
        shape = (gp.shape[0],) + tuple(in_shape[1:])
        if self.global_mean_dims is not None:
            dims, keepdim = self.global_mean_dims
            count = 1
            g = gp
            for d in sorted(d % len(shape) for d in dims):
                count *= shape[d]
                if not keepdim:
                    g = g.unsqueeze(d)
            return (g / count).expand(shape).contiguous()
        with torch.enable_grad():
            x = torch.zeros(shape, dtype=gp.dtype, device=gp.device, requires_grad=True)
            (out,) = torch.autograd.grad(self.fn(x), x, gp)
        return out


class MatmulConstOp(_NonNegOp):
    """``y = A @ v`` with a constant non-negative matrix ``A`` (attention weights)."""

    kind = "attention"

    def __init__(self, A):
        self.A = A

    def _rep(self, n):
        k = n // self.A.shape[0]
        return self.A if k == 1 else self.A.repeat(k, *([1] * (self.A.dim() - 1)))

    def parts(self, z):
        o = self._rep(z.shape[0]) @ z
        return o, None, o

    def transpose(self, buf, with_minus, in_shape):
        return self._rep(buf.shape[0]).transpose(-2, -1) @ buf


def _sign(D):
    return torch.where(D >= 0, 1.0, -1.0).to(D.dtype)


def sign_part_outputs(op, z):
    """Rule-independent sign-part outputs ``{part: O_s}`` of ``op`` at input ``z``.

    Missing parts (exactly zero: no negative inputs or no negative weights) are
    absent from the dict.  Returns ``(O, zp, zn, total)`` with ``total = sum_s O_s``
    (the output without bias).
    """
    if bool(torch.amin(z) >= 0):
        zp, zn = z, None
        op_, om_, tot = op.parts(z)
        O = {"pp": op_}
        if om_ is not None:
            O["np"] = om_
        return O, zp, zn, tot
    zp, zn = z.clamp(min=0), z.clamp(max=0)
    B = z.shape[0]
    op_, om_, tot = op.parts(torch.cat([zp, zn]))
    O = {"pp": op_[:B], "pn": op_[B:]}
    if om_ is not None:
        O["np"], O["nn"] = om_[:B], om_[B:]
    return O, zp, zn, tot[:B] + tot[B:]


def pos_neg_sums(O):
    """``P = O_pp + O_nn`` and ``N = O_pn + O_np`` (bias excluded)."""
    pp = O["pp"]
    P = pp + O["nn"] if "nn" in O else pp
    N = None
    for s in ("pn", "np"):
        if s in O:
            N = O[s] if N is None else N + O[s]
    if N is None:
        N = torch.zeros_like(pp)
    return P, N


def _ratio(num, D, policy):
    zero = D == 0
    if policy == "raise":
        if bool(zero.any()):
            raise ZeroDivisionError("a rule denominator is exactly 0 (zero_denominator='raise')")
        return num / D
    return (num / D).masked_fill_(zero, 0.0 if policy == "zero" else float("nan"))


_MINUS = ("np", "nn")   # parts fed to L^T_{W-}
_ZROWS = ("pn", "nn")   # parts multiplied by z-


def lrp_step(op, O, zp, zn, R, rules: list[Rule], conventions: Conventions, in_shape, bias=None):
    """One LRP backward step through ``op`` for ``K`` rules at once.

    For every term ``k`` of every rule: ``D_k = sum_s a_ks O_s`` (+ bias part)
    (+ ``eps sign(D_k)``), the ratio ``c_k R / D_k`` with the zero-denominator
    policy, written into the relevance buffer of each present part ``s`` with
    weight ``a_ks``; then ONE transpose of the buffer and the products with
    ``z+`` / ``z-`` (see the module docstring).

    Parameters
    ----------
    op : affine operator
    O, zp, zn : from :func:`sign_part_outputs`
    R : Tensor (K*B, *out_shape)
        Relevance at the output, rule ``k`` in rows ``k*B:(k+1)*B``.
    rules : list of K rules
    bias : Tensor or None
        Used in the denominators only when ``conventions.bias == "backward"``.

    Returns
    -------
    Tensor (K*B, *in_shape[1:]): relevance at the input.
    """
    K = len(rules)
    B = O["pp"].shape[0]
    tail = tuple(R.shape[1:])
    policy = conventions.zero_denominator
    P = N = None
    if any(r.adaptive_beta_max is not None for r in rules):
        P, N = pos_neg_sums(O)
    bias_parts = None
    if conventions.bias == "backward" and bias is not None:
        b = bias.reshape(op.bias_shape)
        bias_parts = {"pp": b.clamp(min=0), "np": b.clamp(max=0)}
    plan = []
    for k, rule in enumerate(rules):
        coeffs = rule.coefficients(P, N) if rule.adaptive_beta_max is not None else rule.coefficients(None, None)
        for term, c in zip(rule.terms, coeffs):
            if all(v == 0.0 for v in term.parts):
                continue
            if policy == "zero" and not torch.is_tensor(c) and c == 0.0:
                continue  # exact: c * ratio == 0 for every finite ratio
            a = dict(zip(SIGN_PARTS, term.parts))
            present = [(s, a[s]) for s in SIGN_PARTS if s in O and a[s] != 0.0]
            plan.append((k, rule, c, a, present))
    with_minus = (not op.nonneg) and any(s in _MINUS for *_, present in plan for s, _ in present)
    z_rows = zn is not None and any(s in _ZROWS for *_, present in plan for s, _ in present)
    KB = K * B
    buf = op.buffer(KB * (2 if z_rows else 1), tail, with_minus, R)
    plus = op.plus(buf, with_minus)
    minus = op.minus(buf) if with_minus else None

    def slot(s, k):
        r0 = (KB if s in _ZROWS else 0) + k * B
        return (minus if s in _MINUS else plus)[r0 : r0 + B]

    written = set()
    fill = 0.0 if policy == "zero" else float("nan")
    for k, rule, c, a, present in plan:
        Rk = R[k * B : (k + 1) * B]
        D = None
        for s, w in present:
            t = O[s] if w == 1.0 else w * O[s]
            D = t if D is None else D + t
        if D is None:
            D = torch.zeros_like(O["pp"])
        if bias_parts is not None:
            for s in ("pp", "np"):
                if a[s] != 0.0:
                    D = D + a[s] * bias_parts[s]
        e = conventions.stabiliser + rule.epsilon
        if e != 0.0:
            D = D + e * _sign(D)
        zero = None
        if policy != "zero":
            zero = D == 0
            if policy == "raise" and bool(zero.any()):
                raise ZeroDivisionError("a rule denominator is exactly 0 (zero_denominator='raise')")
        if not present:
            continue
        s0, a0 = present[0]
        fresh = (s0, k) not in written
        base = slot(s0, k) if fresh else torch.empty_like(Rk)
        torch.div(Rk, D, out=base)
        if policy == "zero":
            # R/0 is +-inf or NaN exactly where D == 0 (R finite): one pass sets those to 0
            base.nan_to_num_(nan=0.0, posinf=0.0, neginf=0.0)
        elif policy == "nan":
            base.masked_fill_(zero, fill)
        if torch.is_tensor(c) or c != 1.0:
            base.mul_(c)
        # base = c R / D; the other parts first, then base itself gets its weight a0
        for s, w in present[1:]:
            if (s, k) in written:
                slot(s, k).add_(base, alpha=w)
            else:
                torch.mul(base, w, out=slot(s, k))
                written.add((s, k))
        if fresh:
            if a0 != 1.0:
                base.mul_(a0)
            written.add((s0, k))
        else:
            slot(s0, k).add_(base, alpha=a0)
    parts_in_buf = ["pp"] + (["np"] if with_minus else []) + (["pn"] + (["nn"] if with_minus else []) if z_rows else [])
    for s in parts_in_buf:
        for k in range(K):
            if (s, k) not in written:
                slot(s, k).zero_()
    T = op.transpose(buf, with_minus, in_shape)
    if z_rows:
        Tp, Tn = T[:KB], T[KB:]
        Tp.view(K, B, *Tp.shape[1:]).mul_(zp)
        Tn.view(K, B, *Tn.shape[1:]).mul_(zn)
        return Tp.add_(Tn)
    T.view(K, B, *T.shape[1:]).mul_(zp)
    return T


def add_step(inputs, R, rules, conventions, K):
    """LRP step through ``y = sum_i z_i`` (weights 1: only the pp and pn parts exist).

    Summands may broadcast (not over the batch axis); each summand's relevance is
    summed back to its shape.  Returns the list of input relevances and the
    sign-part outputs ``{"pp": sum z_i+, "pn": sum z_i-}``.
    """
    out_shape = torch.broadcast_shapes(*[z.shape for z in inputs])
    B = out_shape[0]
    split = []
    for z in inputs:
        if z.shape[0] != B:
            raise ValueError("a residual sum must not broadcast over the batch axis")
        if bool(torch.amin(z) >= 0):
            split.append((z, None))
        else:
            split.append((z.clamp(min=0), z.clamp(max=0)))
    pp = split[0][0] + split[1][0] if len(split) == 2 else sum(p for p, _ in split)
    negs = [n for _, n in split if n is not None]
    pn = None if not negs else (negs[0] if len(negs) == 1 else sum(negs[1:], negs[0]))
    O = {"pp": pp, "pn": pn if pn is not None else torch.zeros_like(pp)}
    P, N = O["pp"], O["pn"]
    eps, policy = conventions.stabiliser, conventions.zero_denominator
    Gp = [None] * K
    Gn = [None] * K
    for k, rule in enumerate(rules):
        Rk = R[k * B : (k + 1) * B]
        coeffs = rule.coefficients(P, N) if rule.adaptive_beta_max is not None else rule.coefficients(None, None)
        e = eps + rule.epsilon
        for term, c in zip(rule.terms, coeffs):
            a_pp, a_pn = term.parts[0], term.parts[1]
            if all(v == 0.0 for v in term.parts):
                continue
            if policy == "zero" and not torch.is_tensor(c) and c == 0.0:
                continue
            if pn is None and a_pp == 0.0 and policy == "zero":
                continue  # numerator and denominator are 0: ratio 0
            D = None
            if a_pp != 0.0:
                D = pp if a_pp == 1.0 else a_pp * pp
            if a_pn != 0.0:
                t = O["pn"] if a_pn == 1.0 else a_pn * O["pn"]
                D = t if D is None else D + t
            if D is None:
                D = torch.zeros_like(pp)
            if e != 0.0:
                D = D + e * _sign(D)
            if policy == "zero":
                ratio = torch.div(Rk, D).nan_to_num_(nan=0.0, posinf=0.0, neginf=0.0)
            else:
                ratio = _ratio(Rk, D, policy)
            if torch.is_tensor(c) or c != 1.0:
                ratio.mul_(c)
            if a_pp != 0.0:
                Gp[k] = a_pp * ratio if Gp[k] is None else Gp[k].add_(ratio, alpha=a_pp)
            if a_pn != 0.0 and (pn is not None or policy != "zero"):
                Gn[k] = a_pn * ratio if Gn[k] is None else Gn[k].add_(ratio, alpha=a_pn)
    zero = torch.zeros_like(R[:B])

    def cat(G):
        if all(g is None for g in G):
            return None
        G = [g if g is not None else zero for g in G]
        return G[0] if K == 1 else torch.cat(G)

    Gp, Gn = cat(Gp), cat(Gn)
    outs = []
    for zp, zn in split:
        r = None
        if Gp is not None:
            r = (Gp.view(K, B, *out_shape[1:]) * zp).reshape(K * B, *out_shape[1:])
        if Gn is not None and zn is not None:
            t = (Gn.view(K, B, *out_shape[1:]) * zn).reshape(K * B, *out_shape[1:])
            r = t if r is None else r.add_(t)
        if r is None:
            r = torch.zeros((K * B,) + tuple(out_shape[1:]), dtype=R.dtype, device=R.device)
        target = (K * B,) + tuple(zp.shape[1:])
        outs.append(r.sum_to_size(target) if r.shape != target else r)
    return outs, O
