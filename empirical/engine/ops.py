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
        cout = W.shape[0]
        g = self.groups
        Wp, Wn = W.clamp(min=0), W.clamp(max=0)
        # group-major interleaving [g0+, g0-, g1+, g1-, ...] keeps the grouped structure
        self.W2 = torch.stack([Wp.reshape(g, cout // g, *W.shape[1:]), Wn.reshape(g, cout // g, *W.shape[1:])], 1).reshape(
            2 * cout, *W.shape[1:]
        ).contiguous()
        self.Wp = Wp.contiguous()
        self.cout = cout
        self.bias_shape = (cout, 1, 1)

    def forward(self, z):
        return F.conv2d(z, self.W2, None, self.stride, self.padding, self.dilation, self.groups)

    def parts(self, z):
        o = self.forward(z)
        n, _, h, w = o.shape
        o = o.reshape(n, self.groups, 2, self.cout // self.groups, h, w)
        return o[:, :, 0].reshape(n, self.cout, h, w), o[:, :, 1].reshape(n, self.cout, h, w)

    def _out_pad(self, in_hw, out_hw, W):
        pads = []
        for i in range(2):
            k = W.shape[2 + i]
            base = (out_hw[i] - 1) * self.stride[i] - 2 * self.padding[i] + self.dilation[i] * (k - 1) + 1
            pads.append(in_hw[i] - base)
        return tuple(pads)

    def transpose(self, gp, gn, in_shape):
        in_hw = in_shape[-2:]
        if gn is None:
            W = self.Wp
            g = gp
        else:
            n, _, h, w = gp.shape
            gr = self.groups
            g = torch.stack(
                [gp.reshape(n, gr, self.cout // gr, h, w), gn.reshape(n, gr, self.cout // gr, h, w)], 2
            ).reshape(n, 2 * self.cout, h, w)
            W = self.W2
        op = self._out_pad(in_hw, g.shape[-2:], W)
        return F.conv_transpose2d(g, W, None, self.stride, self.padding, op, self.groups, self.dilation)


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
        return o[..., : self.cout], o[..., self.cout :]

    def transpose(self, gp, gn, in_shape):
        if gn is None:
            return gp @ self.Wp
        return torch.cat([gp, gn], -1) @ self.W2


class PoolOp:
    """A linear operator with non-negative weights given as a function (avg pooling, mean).

    The transpose is the vector-Jacobian product of the (linear) function, computed
    by autograd at a zero input of the right shape; global averages are expanded
    directly.
    """

    kind = "avgpool"
    nonneg = True
    bias = None

    def __init__(self, fn, global_mean_dims=None):
        self.fn = fn
        self.global_mean_dims = global_mean_dims  # (dims, keepdim) when fn is a plain mean

    def parts(self, z):
        return self.fn(z), None

    def transpose(self, gp, gn, in_shape):
        shape = (gp.shape[0],) + tuple(in_shape[1:])
        if self.global_mean_dims is not None:
            dims, keepdim = self.global_mean_dims
            count = 1
            g = gp
            for d in sorted(d % len(shape) for d in dims):
                count *= shape[d]
                if not keepdim:
                    g = g.unsqueeze(d)
            return (g / count).expand(shape)
        with torch.enable_grad():
            x = torch.zeros(shape, dtype=gp.dtype, device=gp.device, requires_grad=True)
            (out,) = torch.autograd.grad(self.fn(x), x, gp)
        return out


class MatmulConstOp:
    """``y = A @ v`` with a constant non-negative matrix ``A`` (attention weights)."""

    kind = "attention"
    nonneg = True
    bias = None

    def __init__(self, A):
        self.A = A

    def _rep(self, n):
        k = n // self.A.shape[0]
        return self.A if k == 1 else self.A.repeat(k, *([1] * (self.A.dim() - 1)))

    def parts(self, z):
        return self._rep(z.shape[0]) @ z, None

    def transpose(self, gp, gn, in_shape):
        return self._rep(gp.shape[0]).transpose(-2, -1) @ gp


def _sign(D):
    return torch.where(D >= 0, 1.0, -1.0).to(D.dtype)


def _ratio(num, D, policy):
    zero = D == 0
    if policy == "raise":
        if bool(zero.any()):
            raise ZeroDivisionError("a rule denominator is exactly 0 (zero_denominator='raise')")
        return num / D
    out = num / torch.where(zero, torch.ones_like(D), D)
    fill = 0.0 if policy == "zero" else float("nan")
    return torch.where(zero, torch.full_like(out, fill), out)


class StepResult:
    __slots__ = ("rin", "pos", "neg")

    def __init__(self, rin, pos, neg):
        self.rin, self.pos, self.neg = rin, pos, neg


def sign_part_outputs(op, z):
    """Rule-independent sign-part outputs ``{part: O_s}`` of ``op`` at input ``z``.

    Missing parts (exactly zero: no negative inputs or no negative weights) are
    absent from the dict.  Returns ``(O, zp, zn)``.
    """
    zp = z.clamp(min=0)
    zn = z.clamp(max=0) if bool((z < 0).any()) else None
    B = z.shape[0]
    if zn is None:
        op_, om_ = op.parts(zp)
        O = {"pp": op_}
        if om_ is not None:
            O["np"] = om_
    else:
        op_, om_ = op.parts(torch.cat([zp, zn]))
        O = {"pp": op_[:B], "pn": op_[B:]}
        if om_ is not None:
            O["np"], O["nn"] = om_[:B], om_[B:]
    return O, zp, zn


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


def lrp_step(op, O, zp, zn, R, rules: list[Rule], conventions: Conventions, in_shape, bias=None):
    """One LRP backward step through ``op`` for ``K`` rules at once.

    Parameters
    ----------
    op : affine operator (see module docstring)
    O, zp, zn : from :func:`sign_part_outputs`
    R : Tensor (K*B, *out_shape)
        Relevance at the output, rule ``k`` in rows ``k*B:(k+1)*B``.
    rules : list of K rules
    bias : Tensor or None
        Used in the denominators only when ``conventions.bias == "backward"``.

    Returns
    -------
    Tensor (K*B, *in_shape[1:]) relevance at the input.
    """
    K = len(rules)
    B = O["pp"].shape[0]
    Rk = R.reshape(K, B, *R.shape[1:])
    P = N = None
    if any(r.adaptive_beta_max is not None for r in rules):
        P, N = pos_neg_sums(O)
    bias_parts = None
    if conventions.bias == "backward" and bias is not None:
        b = bias.reshape(op.bias_shape)
        bias_parts = {"pp": b.clamp(min=0), "np": b.clamp(max=0)}
    eps = conventions.stabiliser
    policy = conventions.zero_denominator
    G = {s: [None] * K for s in SIGN_PARTS}
    for k, rule in enumerate(rules):
        coeffs = rule.coefficients(P, N) if rule.adaptive_beta_max is not None else rule.coefficients(None, None)
        e = eps + rule.epsilon
        for term, c in zip(rule.terms, coeffs):
            a = dict(zip(SIGN_PARTS, term.parts))
            if all(v == 0.0 for v in term.parts):
                continue
            if policy == "zero" and not torch.is_tensor(c) and c == 0.0:
                continue  # exact: c * ratio == 0 for every finite ratio
            present = [s for s in SIGN_PARTS if s in O and a[s] != 0.0]
            D = None
            for s in present:
                D = a[s] * O[s] if D is None else D + a[s] * O[s]
            if D is None:
                D = torch.zeros_like(O["pp"])
            if bias_parts is not None:
                for s in ("pp", "np"):
                    if a[s] != 0.0:
                        D = D + a[s] * bias_parts[s]
            if e != 0.0:
                D = D + e * _sign(D)
            ratio = _ratio(c * Rk[k], D, policy)
            for s in present:
                t = a[s] * ratio if a[s] != 1.0 else ratio
                G[s][k] = t if G[s][k] is None else G[s][k] + t
    # assemble the transposes: W+ gets (pp | pn), W- gets (np | nn); z+ rows then z- rows
    def stack(s):
        vals = G[s]
        if all(v is None for v in vals):
            return None
        ref = next(v for v in vals if v is not None)
        return torch.cat([v if v is not None else torch.zeros_like(ref) for v in vals])

    gpp, gnp = stack("pp"), stack("np")
    if zn is not None:
        gpn, gnn = stack("pn"), stack("nn")
    else:
        gpn = gnn = None
    out_ref = Rk.reshape(K * B, *R.shape[1:])

    def zeros_like_out():
        return torch.zeros_like(out_ref)

    rows_p = gpp is not None or gnp is not None
    rows_n = gpn is not None or gnn is not None
    if not rows_p and not rows_n:
        return torch.zeros((K * B,) + tuple(in_shape[1:]), dtype=R.dtype, device=R.device)
    need_minus = (gnp is not None or gnn is not None) and not op.nonneg
    if rows_p and rows_n:
        gplus = torch.cat([gpp if gpp is not None else zeros_like_out(), gpn if gpn is not None else zeros_like_out()])
        gminus = None
        if need_minus:
            gminus = torch.cat([gnp if gnp is not None else zeros_like_out(), gnn if gnn is not None else zeros_like_out()])
        T = op.transpose(gplus, gminus, in_shape)
        Tp, Tn = T[: K * B], T[K * B :]
        rin = _mul_z(Tp, zp, K) + _mul_z(Tn, zn, K)
    elif rows_p:
        T = op.transpose(gpp if gpp is not None else zeros_like_out(), gnp if need_minus else None, in_shape)
        rin = _mul_z(T, zp, K)
    else:
        T = op.transpose(gpn if gpn is not None else zeros_like_out(), gnn if need_minus else None, in_shape)
        rin = _mul_z(T, zn, K)
    return rin


def _mul_z(T, z, K):
    B = z.shape[0]
    return (T.reshape(K, B, *T.shape[1:]) * z.unsqueeze(0)).reshape(T.shape)


def add_step(inputs, R, rules, conventions, K):
    """LRP step through ``y = sum_i z_i`` (weights 1: only the pp and pn parts exist).

    Summands may broadcast; each summand's relevance is summed back to its shape.
    Returns the list of input relevances and the sign-part outputs.
    """
    out_shape = torch.broadcast_shapes(*[z.shape for z in inputs])
    zs = [z.expand(out_shape) for z in inputs]
    pp = sum(z.clamp(min=0) for z in zs)
    pn = sum(z.clamp(max=0) for z in zs)
    O = {"pp": pp, "pn": pn}
    B = out_shape[0]
    Rk = R.reshape(K, B, *R.shape[1:])
    P, N = pp, pn
    eps, policy = conventions.stabiliser, conventions.zero_denominator
    Gp = [None] * K
    Gn = [None] * K
    for k, rule in enumerate(rules):
        coeffs = rule.coefficients(P, N) if rule.adaptive_beta_max is not None else rule.coefficients(None, None)
        e = eps + rule.epsilon
        for term, c in zip(rule.terms, coeffs):
            a_pp, a_pn = term.parts[0], term.parts[1]
            if all(v == 0.0 for v in term.parts):
                continue
            if policy == "zero" and not torch.is_tensor(c) and c == 0.0:
                continue
            D = a_pp * pp + a_pn * pn
            if e != 0.0:
                D = D + e * _sign(D)
            ratio = _ratio(c * Rk[k], D, policy)
            if a_pp != 0.0:
                Gp[k] = a_pp * ratio if Gp[k] is None else Gp[k] + a_pp * ratio
            if a_pn != 0.0:
                Gn[k] = a_pn * ratio if Gn[k] is None else Gn[k] + a_pn * ratio
    zero = torch.zeros_like(Rk[0])
    Gp = torch.stack([g if g is not None else zero for g in Gp])
    Gn = torch.stack([g if g is not None else zero for g in Gn])
    outs = []
    for z in inputs:
        ze = z.expand(out_shape)
        r = (Gp * ze.clamp(min=0) + Gn * ze.clamp(max=0)).reshape(K * B, *out_shape[1:])
        target = (K * B,) + tuple(z.shape[1:])
        if z.shape[0] != B:
            raise ValueError("a residual sum must not broadcast over the batch axis")
        outs.append(r.sum_to_size(target) if r.shape != target else r)
    return outs, O
