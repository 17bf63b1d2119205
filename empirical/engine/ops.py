"""Affine operators with precomputed sign-split weights and the LRP backward step.

Every linear operator ``L`` of the network (convolution, fully connected layer,
average pooling, mean, attention-weighted sum; residual sums have
:func:`add_step`) is wrapped in an object with

``parts(z)``
    ``(O_+, O_-, O_+ + O_-)`` with ``O_+- = L_{W+-}(z)``: the operator applied with
    the positive and with the negative part of its weights, bias excluded, in ONE
    call (the two weight parts are concatenated along the output channels).
    Operators with non-negative weights return ``(L(z), None, L(z))``.
``term_buffer(n, rows, tail, ref)``
    a buffer for the ratios of ``n`` terms and its per-term slots.
``transpose_signs(buf, keys, in_shape)``
    for each key ``((alpha_t, beta_t))_t`` (one per input sign):
    ``sum_t L^T_{alpha_t W+ + beta_t W-} g_t`` (vector-Jacobian products) with
    cached combined weights, all keys in one call where the operator allows it.

:func:`lrp_step` evaluates the terms of a :class:`boundcheck.rules.Rule`
exactly as :func:`boundcheck.rules.transition_matrix` defines them, for a stack
of ``K`` rules at once (their relevances are stacked along a leading axis and
share the sign-part outputs, which are rule-independent).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from boundcheck.rules import SIGN_PARTS, Conventions, Rule


def rows_like(ref, rows, channels=None):
    """``torch.empty`` of shape ``(rows, *ref.shape[1:])`` (channel axis ``channels`` if
    given) in ``ref``'s dtype, device and memory format (channels-last stays
    channels-last, so that convolutions never reorder their operands)."""
    shape = [rows] + list(ref.shape[1:])
    if channels is not None:
        shape[1] = channels
    return torch.empty(shape, dtype=ref.dtype, device=ref.device, memory_format=_fmt_of(ref))


def separate_term_buffers(op, n, rows, tail, ref):
    """``term_buffer`` of an operator whose terms are transposed one by one: ``n`` separate
    ratio buffers ``(rows, *tail)``, each its own slot."""
    bufs = [rows_like(ref, rows) for _ in range(n)]
    return bufs, bufs


def _fmt_of(t):
    """channels-last for a 4-d tensor laid out that way (and not also plain contiguous)."""
    if t.dim() == 4 and not t.is_contiguous() and t.is_contiguous(memory_format=torch.channels_last):
        return torch.channels_last
    return torch.contiguous_format


def _combine(alpha, beta, Wp, Wn):
    """``alpha W+ + beta W-``."""
    W = Wp if alpha == 1.0 else alpha * Wp
    if beta != 0.0:
        W = W + (Wn if beta == 1.0 else beta * Wn)
    return W


class WeightCache:
    """A byte budget for the weight copies the LRP operators of one explainer keep:
    each operator's sign-split ``[W+; W-]`` and the combined weights
    ``sum_t c_t (a W+ + b W-)``.

    A copy is admitted when it is first needed and kept while the budget holds it
    (operators run in the forward order first, so ``[W+; W-]`` of the early layers
    are admitted before any combined weight).  Beyond the budget nothing more is
    kept: an operator without a stored ``[W+; W-]`` builds it per call, in blocks
    of output channels of at most :data:`SIGN_SPLIT_BLOCK_BYTES` (transient), and a
    rule without stored combined weights is folded into the ratios and transposed
    with ``[W+; W-]`` (same values, up to twice the work for rules with one term
    per sign).  ``limit_bytes=None``: no limit.
    """

    def __init__(self, limit_bytes: int | None = None):
        self.limit = limit_bytes
        self.used = 0

    def admit(self, nbytes: int, force: bool = False) -> bool:
        """Count ``nbytes`` against the budget if they fit (always with ``force``)."""
        if not force and self.limit is not None and self.used + nbytes > self.limit:
            return False
        self.used += nbytes
        return True


_NO_LIMIT = WeightCache(None)

#: the most bytes a float64 CPU convolution of the explicit path unfolds at once (its input's
#: ``im2col`` buffer; :meth:`ConvOp._unfold_rows`): VGG-16's conv1_2 unfolds 0.9 GiB at batch 4
UNFOLD_BLOCK_BYTES = 256 << 20

#: the most bytes of ``[W+; W-]`` built at once for an operator whose sign-split weights
#: are not stored (one block of output channels; at least one channel)
SIGN_SPLIT_BLOCK_BYTES = 64 << 20


def _nbytes(t) -> int:
    return t.numel() * t.element_size()


class _SignedOp:
    """Backward-pass machinery shared by operators with weights of both signs.

    The operator keeps its weight ``W`` (the canonical model's parameter, no copy).
    ``[W+; W-]`` (both parts stacked along the output channels, so that one call
    gives both sign-part outputs) is stored when the explainer's
    :class:`WeightCache` admits it, else built per call in blocks of output
    channels (:meth:`_signed_blocks`; the values are the same).

    ``transpose_terms(buf, key, in_shape)`` computes ``sum_t L^T_{V_t} g_t`` with
    ``V_t = alpha_t W+ + beta_t W-`` for ``key = ((alpha_1, beta_1), ...)``: the
    combined weights are built once per key and cached within the budget (they
    depend on the weights only), so a rule whose terms share one ratio per input
    sign costs ONE transpose (LRP-gamma: ``(1+gamma) W+ + W-``; LRP-beta_0: ``W+``)
    instead of one per weight part.
    """

    nonneg = False
    budget = _NO_LIMIT  # set by the explainer (one WeightCache for all its operators)
    _multi_out_dim = 1

    def _init_weight(self, W, fmt=torch.contiguous_format):
        self.W = W.detach()
        self.cout = W.shape[0]
        self.fmt = fmt
        self._w2 = None
        self._w2_decided = False
        self._cache = {}

    def _split(self, W):
        """``[W+; W-]`` of ``W`` (rows = output channels)."""
        return torch.cat([W.clamp(min=0), W.clamp(max=0)]).contiguous(memory_format=self.fmt)

    def _stored_w2(self):
        """The stored ``[W+; W-]``, or None when the budget did not admit it (decided at first use)."""
        if not self._w2_decided:
            self._w2_decided = True
            if self.budget.admit(2 * _nbytes(self.W)):
                self._w2 = self._split(self.W)
        return self._w2

    def _signed_blocks(self):
        """``(r0, r1, [W+; W-] of output channels r0:r1)``: the stored one (one block), or
        built now per block of at most :data:`SIGN_SPLIT_BLOCK_BYTES`."""
        W2 = self._stored_w2()
        if W2 is not None:
            yield 0, self.cout, W2
            return
        per_row = max(1, 2 * _nbytes(self.W) // max(1, self.cout))
        rows = max(1, SIGN_SPLIT_BLOCK_BYTES // per_row)
        for r0 in range(0, self.cout, rows):
            r1 = min(r0 + rows, self.cout)
            yield r0, r1, self._split(self.W[r0:r1])

    def _signed_parts(self, z):
        """``(O_+, O_-)``: the operator with ``W+`` and with ``W-`` at ``z`` (one call per block)."""
        ps, ns = [], []
        d = self._multi_out_dim
        for r0, r1, W2 in self._signed_blocks():
            o = self._forward_raw(z, W2)
            k = r1 - r0
            ps.append(o.narrow(d, 0, k))
            ns.append(o.narrow(d, k, k))
        if len(ps) == 1:
            return ps[0], ns[0]
        return torch.cat(ps, d), torch.cat(ns, d)

    def _build(self, key):
        """The combined weights of ``key`` (``sum``-free: one ``a W+ + b W-`` per term, stacked)."""
        W2 = self._stored_w2()
        if W2 is not None:
            Wp, Wn = W2[: self.cout], W2[self.cout :]
            parts = [_combine(a, b, Wp, Wn) for a, b in key]
        else:  # block by block: never more than one block of [W+; W-] besides the result
            parts = []
            for a, b in key:
                out = torch.empty_like(self.W, memory_format=self.fmt)
                for r0, r1, W2b in self._signed_blocks():
                    k = r1 - r0
                    out[r0:r1] = _combine(a, b, W2b[:k], W2b[k:])
                parts.append(out)
        W = parts[0] if len(parts) == 1 else torch.cat(parts, 0)
        return W.contiguous(memory_format=self.fmt)

    def _weights(self, key):
        """Combined weights of ``key``, cached within the budget; None beyond it
        (the caller then folds the terms, :meth:`_folded_transpose`)."""
        W = self._cache.get(key)
        if W is None:
            if not self.budget.admit(len(key) * _nbytes(self.W)):
                return None
            W = self._build(key)
            self._cache[key] = W
        return W

    def _weights_multi(self, keys, dim):
        """The weights of several keys side by side along ``dim`` (their outputs); the
        single keys' weights are not cached on the way (one copy per use).  None
        beyond the budget."""
        W = self._cache.get((dim,) + keys)
        if W is None:
            if not self.budget.admit(sum(len(k) for k in keys) * _nbytes(self.W)):
                return None
            parts = [self._cache[k] if k in self._cache else self._build(k) for k in keys]
            W = torch.cat(parts, dim).contiguous(memory_format=self.fmt)
            self._cache[(dim,) + keys] = W
        return W

    def _folded_transpose(self, buf, key, in_shape):
        """``sum_t L^T_{a_t W+ + b_t W-} g_t = L^T_{[W+; W-]} [sum_t a_t g_t; sum_t b_t g_t]``:
        the terms folded into the ratios, transposed with ``[W+; W-]`` (block by block
        when it is not stored)."""
        c = self.cout
        d = self._multi_out_dim
        gp = gn = None
        for t, (a, b) in enumerate(key):
            g = buf.narrow(d, t * c, c)
            if a != 0.0:
                gp = a * g if gp is None else gp.add_(g, alpha=a)
            if b != 0.0:
                gn = b * g if gn is None else gn.add_(g, alpha=b)
        T = None
        for r0, r1, W2 in self._signed_blocks():
            k = r1 - r0
            gpb = None if gp is None else gp.narrow(d, r0, k)
            gnb = None if gn is None else gn.narrow(d, r0, k)
            if gnb is None:
                Tb = self._transpose_raw(gpb, W2[:k], in_shape)
            elif gpb is None:
                Tb = self._transpose_raw(gnb, W2[k:], in_shape)
            else:
                Tb = self._transpose_raw(torch.cat([gpb, gnb], d), W2, in_shape)
            T = Tb if T is None else T.add_(Tb)
        return T

    def transpose_signs(self, buf, keys, in_shape):
        """:meth:`transpose_terms` for several keys (one per input sign) of the same buffer.

        Where the operator allows it (ungrouped convolution, linear layer) and the
        budget holds the weights, the keys' weights are placed side by side so that
        ONE call returns all of them.  Returns one tensor per key (None for a key
        without a non-zero weight).
        """
        live = [i for i, key in enumerate(keys) if any(ab != (0.0, 0.0) for ab in key)]
        out = [None] * len(keys)
        if len(live) > 1 and self._multi_dim is not None:
            sub = tuple(keys[i] for i in live)
            W = self._weights_multi(sub, self._multi_dim)
            if W is not None:
                T = self._transpose_raw(buf, W, in_shape)
                for j, T_j in enumerate(T.chunk(len(live), dim=self._multi_out_dim)):
                    out[live[j]] = T_j
                return out
        for i in live:
            out[i] = self.transpose_terms(buf, keys[i], in_shape)
        return out


def conv_padding(module) -> tuple:
    """A convolution's padding as integers (``"valid"``; ``"same"`` where it is symmetric).

    Raises ValueError for ``"same"`` padding that needs more zeros on one side
    (an even effective kernel size): not expressible as ``padding=(p, q)``.
    """
    pad = module.padding
    if not isinstance(pad, str):
        return tuple(pad)
    if pad == "valid":
        return (0,) * len(module.kernel_size)
    out = []
    for k, d in zip(module.kernel_size, module.dilation):
        total = d * (k - 1)
        if total % 2:
            raise ValueError("padding='same' with an even effective kernel size (asymmetric zero padding)")
        out.append(total // 2)
    return tuple(out)


class ConvOp(_SignedOp):
    """A 1-, 2- or 3-d convolution ``y = conv(z, W) + b`` (BatchNorm already folded).

    Ungrouped: ``[W+; W-]`` stored within the budget or built per call
    (:class:`_SignedOp`).  Grouped/depthwise: ``W+`` and ``W-`` as two tensors
    (stacking them along the output channels would mix the groups) and the
    combined weights of each term, stored within the budget or built per call
    (RegNet-Y-128GF's grouped convolutions hold a third of its weights).
    """

    kind = "conv"

    _CONV = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}
    _CONV_T = {1: F.conv_transpose1d, 2: F.conv_transpose2d, 3: F.conv_transpose3d}

    def __init__(self, module):
        W = module.weight.detach()
        self.nd = W.dim() - 2
        self.stride, self.dilation, self.groups = module.stride, module.dilation, module.groups
        self.padding = conv_padding(module)
        self.bias = None if module.bias is None else module.bias.detach()
        self.bias_shape = (W.shape[0],) + (1,) * self.nd
        # the canonical model's memory format (Explainer(channels_last=...))
        self._init_weight(W, _fmt_of(W))
        self._pair = None

    def _conv_raw(self, z, W):
        return self._CONV[self.nd](z, W, None, self.stride, self.padding, self.dilation, self.groups)

    def _unfold_rows(self, z, W):
        """Samples per call so that a float64 CPU convolution's unfolded input (its ``im2col``
        buffer, allocated for the whole batch: no oneDNN kernel for float64) stays within
        :data:`UNFOLD_BLOCK_BYTES`; all of them elsewhere."""
        if z.dtype != torch.float64 or z.device.type != "cpu" or z.shape[0] == 1:
            return z.shape[0]
        k = W.shape[2:]
        out = [(n + 2 * p - d * (kk - 1) - 1) // s + 1
               for n, p, d, kk, s in zip(z.shape[2:], self.padding, self.dilation, k, self.stride)]
        per = W.shape[1] * math.prod(k) * math.prod(out) * z.element_size()
        return max(1, UNFOLD_BLOCK_BYTES // max(1, per))

    def _conv(self, z, W):
        """``conv(z, W)``, in blocks of samples where :meth:`_unfold_rows` asks for it (same values:
        the unfolded convolution treats each sample on its own)."""
        rows = self._unfold_rows(z, W)
        B = z.shape[0]
        if rows >= B:
            return self._conv_raw(z, W)
        out = None
        for r0 in range(0, B, rows):
            o = self._conv_raw(z[r0 : r0 + rows], W)
            if out is None:
                out = torch.empty((B,) + tuple(o.shape[1:]), dtype=o.dtype, device=o.device,
                                  memory_format=_fmt_of(o))
            out[r0 : r0 + o.shape[0]].copy_(o)
            del o
        return out

    _forward_raw = _conv

    def _grouped_parts(self):
        """``(W+, W-)`` of a grouped convolution: stored within the budget, else built now."""
        if self._pair is not None:
            return self._pair
        pair = (self.W.clamp(min=0).contiguous(memory_format=self.fmt),
                self.W.clamp(max=0).contiguous(memory_format=self.fmt))
        if not self._w2_decided:
            self._w2_decided = True
            if self.budget.admit(2 * _nbytes(self.W)):
                self._pair = pair
        return pair

    def parts(self, z):
        if self.groups == 1:
            op_, on_ = self._signed_parts(z)
        else:
            Wp, Wn = self._grouped_parts()
            op_, on_ = self._conv(z, Wp), self._conv(z, Wn)
        return op_, on_, op_ + on_

    def term_buffer(self, n, rows, tail, ref):
        """Ratio buffer of ``n`` terms and its per-term slots ``(rows, *tail)``."""
        c = tail[0]
        if self.groups == 1:  # terms stacked along the channels: one transposed convolution
            buf = rows_like(ref, rows, n * c)
            return buf, [buf[:, t * c : (t + 1) * c] for t in range(n)]
        return separate_term_buffers(self, n, rows, tail, ref)

    def _out_pad(self, in_hw, out_hw):
        pads = []
        for i in range(self.nd):
            k = self.W.shape[2 + i]
            base = (out_hw[i] - 1) * self.stride[i] - 2 * self.padding[i] + self.dilation[i] * (k - 1) + 1
            pads.append(in_hw[i] - base)
        return tuple(pads)

    def _convT(self, g, W, in_shape):
        op = self._out_pad(in_shape[-self.nd:], g.shape[-self.nd:])
        return self._CONV_T[self.nd](g, W, None, self.stride, self.padding, op, self.groups, self.dilation)

    @property
    def _multi_dim(self):
        return 1 if self.groups == 1 else None  # conv_transpose2d weight: (in, out/groups, kh, kw)

    _multi_out_dim = 1

    def _transpose_raw(self, buf, W, in_shape):
        return self._convT(buf, W, in_shape)

    def _build(self, key):
        if self.groups == 1:
            return _SignedOp._build(self, key)
        Wp, Wn = self._grouped_parts()
        parts = [_combine(a, b, Wp, Wn) for a, b in key]
        W = parts[0] if len(parts) == 1 else torch.cat(parts, 0)
        return W.contiguous(memory_format=self.fmt)

    def _weights(self, key):
        if self.groups == 1:
            return _SignedOp._weights(self, key)
        W = self._cache.get(key)
        if W is None:  # grouped convolution: kept within the budget, else built for this call only
            if not self.budget.admit(len(key) * _nbytes(self.W)):
                return self._build(key)
            W = self._build(key)
            self._cache[key] = W
        return W

    def transpose_terms(self, buf, key, in_shape):
        if self.groups == 1:
            W = self._weights(key)
            if W is None:
                return self._folded_transpose(buf, key, in_shape)
            return self._transpose_raw(buf, W, in_shape)
        out = None
        for t, ab in enumerate(key):
            if ab == (0.0, 0.0):
                continue
            T = self._convT(buf[t], self._weights((ab,)), in_shape)
            out = T if out is None else out.add_(T)
        return out


class ConvTransposeOp(ConvOp):
    """A 1-, 2- or 3-d transposed convolution ``y = conv_transpose(z, W) + b``: the linear
    map whose transpose is the convolution with the same weight, stride, padding,
    dilation and groups (the weight's layout is ``(Cin, Cout/groups, *k)``).

    Every rule applies to it as to any layer with weights of both signs: ``W+`` and
    ``W-`` are the parts of the weight tensor, the sign-part outputs are
    ``conv_transpose(z, W+-)`` and the transposes ``conv(g, a W+ + b W-)``.  Ungrouped,
    the weight is kept with the output channels first (``W.transpose(0, 1)``, a view),
    so that :class:`_SignedOp`'s stacking of ``[W+; W-]`` and of the terms' weights
    along the output channels is the same as for :class:`ConvOp`; grouped, ``W+`` and
    ``W-`` are two tensors in the module's layout.  ``output_padding`` (or the output
    size of the call, :meth:`torch.nn.ConvTranspose2d.forward`'s ``output_size``) only
    adds output positions no input reaches; the transpose keeps the input's extent.
    """

    _CONV = {1: F.conv_transpose1d, 2: F.conv_transpose2d, 3: F.conv_transpose3d}
    _CONV_ADJ = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}

    def __init__(self, module, output_padding=None):
        if module.padding_mode != "zeros":
            raise ValueError(f"padding_mode={module.padding_mode!r} (only zero padding)")
        Wm = module.weight.detach()
        self.nd = Wm.dim() - 2
        self.stride, self.dilation, self.groups = module.stride, module.dilation, module.groups
        self.padding = tuple(module.padding)
        self.output_padding = tuple(module.output_padding if output_padding is None else output_padding)
        self.bias = None if module.bias is None else module.bias.detach()
        cout = Wm.shape[1] * self.groups
        self.bias_shape = (cout,) + (1,) * self.nd
        # ungrouped: rows = output channels (a view); grouped: the module's layout
        self._init_weight(Wm.transpose(0, 1) if self.groups == 1 else Wm)
        self._pair = None

    def _module_weight(self, W):
        """A weight of this operator's internal layout in ``conv_transpose``'s layout."""
        return W.transpose(0, 1) if self.groups == 1 else W

    def _conv(self, z, W):
        return self._CONV[self.nd](z, self._module_weight(W), None, self.stride, self.padding,
                                   self.output_padding, self.groups, self.dilation)

    _forward_raw = _conv

    def _convT(self, g, W, in_shape):
        t = self._CONV_ADJ[self.nd](g, self._module_weight(W), None, self.stride, self.padding, self.dilation,
                                    self.groups)
        # an output_padding >= stride (allowed when < dilation) adds input positions that do not exist
        for i, n in enumerate(in_shape[-self.nd:]):
            if t.shape[2 + i] != n:
                t = t.narrow(2 + i, 0, n)
        return t

    def forward_without_bias(self, z):
        """``conv_transpose(z, W)`` (the fast path's affine map without its bias)."""
        return self._conv(z, self.W)


class LinearOp(_SignedOp):
    """``y = z W^T + b`` on the last axis (any leading axes)."""

    kind = "linear"

    def __init__(self, weight, bias=None):
        self._init_weight(weight.detach().contiguous())
        self.bias = None if bias is None else bias.detach()
        self.bias_shape = (self.cout,)

    @staticmethod
    def _forward_raw(z, W):
        return F.linear(z, W)

    def parts(self, z):
        op_, on_ = self._signed_parts(z)
        return op_, on_, op_ + on_

    def term_buffer(self, n, rows, tail, ref):
        buf = torch.empty((rows,) + tail[:-1] + (n * tail[-1],), dtype=ref.dtype, device=ref.device)
        c = tail[-1]
        return buf, [buf[..., t * c : (t + 1) * c] for t in range(n)]

    _multi_dim = 1
    _multi_out_dim = -1

    def _transpose_raw(self, buf, W, in_shape):
        return buf @ W

    def transpose_terms(self, buf, key, in_shape):
        W = self._weights(key)
        if W is None:
            return self._folded_transpose(buf, key, in_shape)
        return buf @ W


class _NonNegOp:
    """Operators with non-negative weights (``W- = 0``): terms are combined before ONE transpose."""

    nonneg = True
    bias = None

    term_buffer = separate_term_buffers

    def transpose_terms(self, buf, key, in_shape):
        # the buffer also serves the other input sign: never modified here
        nz = [(a, buf[t]) for t, (a, _) in enumerate(key) if a != 0.0]
        if not nz:
            return None
        a0, g = nz[0]
        if a0 != 1.0 or len(nz) > 1:
            g = a0 * g  # a fresh tensor: the sum below must not write into the buffer
        for a, gt in nz[1:]:
            g.add_(gt, alpha=a)
        return self.transpose(g, in_shape)


    def transpose_signs(self, buf, keys, in_shape):
        return [self.transpose_terms(buf, key, in_shape) for key in keys]


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

    def transpose(self, gp, in_shape):
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
        return linear_vjp(self.fn, shape, gp)


class DiagOp:
    """The elementwise affine map ``y = s * z + c`` (``s``, ``c`` broadcastable to ``z``).

    Each output has the single contribution ``s_i z_i``; its sign parts are
    ``s+ z+``, ``s+ z-``, ``s- z+``, ``s- z-`` like any layer's, so the rule's terms
    apply unchanged (:func:`lrp_step`).  ``s``/``c`` may have one row per sample
    (LayerNorm statistics); they are repeated for stacked rules and sign halves.
    """

    kind = "diag"

    def __init__(self, scale, shift=None):
        s = torch.as_tensor(scale)
        self.Wp = s.clamp(min=0)
        self.Wn = s.clamp(max=0)
        self.nonneg = not bool((s < 0).any())
        self.bias = None if shift is None else torch.as_tensor(shift)
        self.bias_shape = None if shift is None else tuple(self.bias.shape)

    @staticmethod
    def _rows(t, z):
        """``t`` repeated along the batch axis to ``z``'s rows (only when ``t`` has one)."""
        n = z.shape[0]
        if t.dim() < z.dim() or t.shape[0] in (1, n):
            return t  # broadcast: no batch axis, or one row for all
        return t.repeat(n // t.shape[0], *([1] * (t.dim() - 1)))

    def _apply(self, W, z):
        """``L_W(z)``: the map with weights ``W`` (here elementwise)."""
        return z * self._rows(W, z)

    def _apply_t(self, W, g):
        """``L_W^T(g)`` (a diagonal map is its own transpose)."""
        return g * self._rows(W, g)

    def parts(self, z):
        op_ = self._apply(self.Wp, z)
        if self.nonneg:
            return op_, None, op_.clone()
        on_ = self._apply(self.Wn, z)
        return op_, on_, op_ + on_

    term_buffer = separate_term_buffers

    def transpose_signs(self, buf, keys, in_shape):
        out = []
        for key in keys:
            T = None
            for t, (a, b) in enumerate(key):
                if a == 0.0 and (b == 0.0 or self.nonneg):
                    continue
                w = a * self.Wp if self.nonneg else a * self.Wp + b * self.Wn
                term = self._apply_t(w, buf[t])
                T = term if T is None else T.add_(term)
            out.append(T)
        return out


def batchnorm_diag(bn, z) -> DiagOp:
    """An eval-mode BatchNorm as ``s*z + c`` (running statistics; channel axis 1)."""
    s = torch.rsqrt(bn.running_var.to(z.dtype) + bn.eps)
    if bn.weight is not None:
        s = s * bn.weight.to(z.dtype)
    c = -bn.running_mean.to(z.dtype) * s
    if bn.bias is not None:
        c = c + bn.bias.to(z.dtype)
    shape = (1, -1) + (1,) * (z.dim() - 2)
    return DiagOp(s.reshape(shape), c.reshape(shape))


class CentreOp:
    """The centring map ``y = s * (z - mean(z)) + c`` of a normalisation with only its
    scale held constant (``Conventions(normalisation="centre")``).

    ``z`` is viewed as ``(rows, g, n)`` (:attr:`view`): the mean runs over the last
    axis of ``n`` entries, ``s`` has one value per entry (``w / sigma``: affine weight
    over the held standard deviation, one row per sample).  Per group this is the
    dense linear map ``W = diag(s) (I - 1 1^T / n)``, ``W_ij = s_i (delta_ij - 1/n)``,
    not a diagonal one: output ``i`` has the contribution ``s_i (1 - 1/n) z_i`` of its
    own entry and ``-s_i z_j / n`` of every other entry, so LRP-beta/gamma see four
    sign parts like at a dense layer.  With ``p = s+``, ``m = s-``:

        W+ = diag(p (1 - 1/n)) + offdiag(-m / n),   W- = diag(m (1 - 1/n)) + offdiag(-p / n),

    and for a term weighing ``alpha W+ + beta W-`` (``u = alpha p + beta m``, ``v = alpha m + beta p``)

        (alpha W+ + beta W-) z = u z (1 - 1/n) - v (sum(z) - z) / n,
        (alpha W+ + beta W-)^T g = u g (1 - 1/n) - (sum(v g) - v g) / n,

    O(n) per group, never the ``n x n`` matrix.  ``c`` (the normalisation's bias) is
    the bias and follows ``Conventions.bias``.  ``n = 1``: ``W = 0``.
    """

    kind = "centre"
    nonneg = False

    def __init__(self, scale, shift, groups, n):
        self.s = scale  # (B, g, n)
        self.p, self.m = scale.clamp(min=0), scale.clamp(max=0)
        self.groups, self.n = groups, n
        self.bias = None if shift is None else torch.as_tensor(shift)
        self.bias_shape = None if shift is None else tuple(self.bias.shape)

    def view(self, t):
        return t.reshape(t.shape[0], self.groups, self.n)

    def _rows(self, t, rows):
        return t if t.shape[0] == rows else t.repeat(rows // t.shape[0], 1, 1)

    def _apply(self, u, v, z):
        n = self.n
        zs = z.sum(-1, keepdim=True)
        return u * z * (1.0 - 1.0 / n) - v * (zs - z) / n

    def _apply_t(self, u, v, g):
        n = self.n
        vg = v * g
        return u * g * (1.0 - 1.0 / n) - (vg.sum(-1, keepdim=True) - vg) / n

    def parts(self, z):
        zv = self.view(z)
        p, m = self._rows(self.p, zv.shape[0]), self._rows(self.m, zv.shape[0])
        op_ = self._apply(p, m, zv).reshape(z.shape)
        on_ = self._apply(m, p, zv).reshape(z.shape)
        return op_, on_, op_ + on_

    term_buffer = separate_term_buffers

    def transpose_signs(self, buf, keys, in_shape):
        out = []
        for key in keys:
            T = None
            for t, (a, b) in enumerate(key):
                if a == 0.0 and b == 0.0:
                    continue
                g = self.view(buf[t])
                p, m = self._rows(self.p, g.shape[0]), self._rows(self.m, g.shape[0])
                u, v = _axpby(a, p, b, m), _axpby(a, m, b, p)
                term = self._apply_t(u, v, g).reshape(buf[t].shape)
                T = term if T is None else T.add_(term)
            out.append(T)
        return out


def _norm_dims(normalized_shape):
    return len(normalized_shape) if not isinstance(normalized_shape, int) else 1


def layernorm_diag(z, normalized_shape, weight, bias, eps, centre: bool = False):
    """LayerNorm with its statistics held constant.

    ``centre=False`` (``normalisation="affine"``): the elementwise map ``s*z + c``,
    ``s = w / sigma``, ``c = b - mu s`` (mean and standard deviation held; the mean
    acts as a bias), a :class:`DiagOp`.  ``centre=True`` (``"centre"``): only
    ``sigma`` is held, ``y = s * (z - mean(z)) + b`` with the centring part of the
    linear map, a :class:`CentreOp` (``mu``, ``sigma`` per sample over the last
    ``len(normalized_shape)`` axes).
    """
    k = _norm_dims(normalized_shape)
    dims = tuple(range(-k, 0))
    mu = z.mean(dim=dims, keepdim=True)
    var = (z - mu).square().mean(dim=dims, keepdim=True)
    inv = torch.rsqrt(var + eps)
    s = inv if weight is None else inv * weight
    if centre:
        n = 1
        for d in z.shape[-k:]:
            n *= int(d)
        s = s.expand(z.shape).reshape(z.shape[0], -1, n)
        return CentreOp(s, bias, s.shape[1], n)
    c = -mu * s
    if bias is not None:
        c = c + bias
    return DiagOp(s, c)


def groupnorm_diag(z, groups, weight, bias, eps, centre: bool = False):
    """GroupNorm with its statistics held constant (per sample and group); ``centre``
    as in :func:`layernorm_diag` (the mean over each group is part of the map)."""
    B, C = z.shape[:2]
    zg = z.reshape(B, groups, -1)
    mu = zg.mean(-1, keepdim=True)
    inv = torch.rsqrt((zg - mu).square().mean(-1, keepdim=True) + eps)
    shape = (B, C) + (1,) * (z.dim() - 2)
    inv = inv.expand(B, groups, C // groups).reshape(shape)
    wshape = (1, C) + (1,) * (z.dim() - 2)
    s = inv if weight is None else inv * weight.reshape(wshape)
    if centre:
        s = s.expand(z.shape).reshape(B, groups, -1)
        return CentreOp(s, None if bias is None else bias.reshape(wshape), groups, s.shape[-1])
    mu = mu.expand(B, groups, C // groups).reshape(shape)
    c = -mu * s
    if bias is not None:
        c = c + bias.reshape(wshape)
    return DiagOp(s, c)


def rmsnorm_diag(z, normalized_shape, weight, eps) -> DiagOp:
    """RMSNorm with its scale held constant: ``s * z``, ``s = w / sqrt(mean(z^2) + eps)``
    (no centring, no bias: the same map under ``"affine"`` and ``"centre"``).  ``eps``
    None: ``torch.finfo(z.dtype).eps`` (torch's default)."""
    k = _norm_dims(normalized_shape)
    dims = tuple(range(-k, 0))
    eps = torch.finfo(z.dtype).eps if eps is None else eps
    s = torch.rsqrt(z.square().mean(dim=dims, keepdim=True) + eps)
    if weight is not None:
        s = s * weight
    return DiagOp(s)


class MatmulConstOp(_NonNegOp):
    """``y = A @ v`` with a constant non-negative matrix ``A`` (attention weights);
    ``groups > 1``: ``v`` has one head per group of ``A``'s heads (grouped-query attention)."""

    kind = "attention"

    def __init__(self, A, groups=1):
        self.A, self.groups = A, groups

    def _rep(self, n):
        k = n // self.A.shape[0]
        return self.A if k == 1 else self.A.repeat(k, *([1] * (self.A.dim() - 1)))

    def parts(self, z):
        if self.groups > 1:
            z = z.repeat_interleave(self.groups, -3)
        o = self._rep(z.shape[0]) @ z
        return o, None, o

    def transpose(self, g, in_shape):
        t = self._rep(g.shape[0]).transpose(-2, -1) @ g
        return t if self.groups == 1 else t.unflatten(-3, (-1, self.groups)).sum(-3)


class HeldMatmulOp(DiagOp):
    """``y = A @ v`` with attention weights ``A`` of either sign held constant (attention
    mixed across heads after the softmax: CaiT's / EfficientFormer-V2's talking heads).

    Sign parts as for any layer: ``A+ @ v``, ``A- @ v`` (:class:`DiagOp` with a
    matrix product); ``A`` has one block per sample, repeated for stacked rules."""

    kind = "attention"

    def __init__(self, A):
        super().__init__(A)

    @staticmethod
    def _rep(A, n):
        k = n // A.shape[0]
        return A if k == 1 else A.repeat(k, *([1] * (A.dim() - 1)))

    def _apply(self, W, z):
        return self._rep(W, z.shape[0]) @ z

    def _apply_t(self, W, g):
        return self._rep(W, g.shape[0]).transpose(-2, -1) @ g


#: interpolation modes that are linear maps, separable over the spatial axes (``nearest`` and
#: ``nearest-exact`` are data movement), and the modes among them whose weights are >= 0
RESAMPLE_MODES = ("linear", "bilinear", "trilinear", "bicubic", "area")
NONNEG_RESAMPLE_MODES = frozenset({"linear", "bilinear", "trilinear", "area"})


def resample_axis_matrices(in_sizes, size=None, scale_factor=None, mode="bilinear", align_corners=None,
                           recompute_scale_factor=None, antialias=False, dtype=torch.float64, device=None):
    """The per-axis matrices ``A_d`` (``out_d x in_d``) of ``F.interpolate``: the call
    maps ``X`` to ``X x_1 A_1 x_2 A_2 ...`` (``out = A X B^T`` per channel in 2-d).

    ``A_d`` is ``F.interpolate`` applied, with the call's own ``mode``, ``align_corners``,
    ``antialias``, ``recompute_scale_factor`` and the axis' own ``size``/``scale_factor``,
    to the identity ``I_{in_d}`` laid out along axis ``d`` (one channel per column), so
    the weights are torch's own: the index arithmetic, border clamping, the cubic
    kernel's ``A = -0.75`` and the antialiasing filter depend on the axis alone.  The
    other spatial axes have extent 2 and scale 1 (every mode maps them to themselves;
    extent 1 is avoided: torch 2.x's antialiased kernels mis-handle a 1 -> 1 axis), and
    the entries at index 0 of them are read.  :func:`check_resample` compares the
    result with the call itself.

    Parameters
    ----------
    in_sizes : tuple of int
        The input's spatial extents.
    size, scale_factor, mode, align_corners, recompute_scale_factor, antialias
        As in :func:`torch.nn.functional.interpolate` (one of ``size``/``scale_factor``).

    Returns
    -------
    list of Tensor, one ``(out_d, in_d)`` matrix per spatial axis.
    """
    nd = len(in_sizes)

    def per_axis(v, d, rest):
        if v is None:
            return None
        vs = tuple(v) if isinstance(v, (tuple, list)) else (v,) * nd
        return tuple(vs[d] if i == d else rest for i in range(nd))

    mats = []
    kw = dict(mode=mode, recompute_scale_factor=recompute_scale_factor)
    if align_corners is not None:
        kw["align_corners"] = align_corners
    if antialias:
        kw["antialias"] = antialias
    for d, n in enumerate(in_sizes):
        shape = [1, n] + [1] * nd
        shape[2 + d] = n
        eye = torch.eye(n, dtype=dtype, device=device).reshape(shape)
        eye = eye.expand([1, n] + [n if i == d else 2 for i in range(nd)]).contiguous()
        out = F.interpolate(eye, size=per_axis(size, d, 2), scale_factor=per_axis(scale_factor, d, 1.0), **kw)
        # out[0, k, ..., i, ...] = A[i, k] (index 0 on the other axes)
        out = out[(0, slice(None)) + tuple(slice(None) if i == d else 0 for i in range(nd))]
        mats.append(out.transpose(0, 1).contiguous())
    return mats


def check_resample(op, call, in_shape, dtype=torch.float64, device=None, rtol=1e-10):
    """Compare :class:`ResampleOp` ``op`` with the interpolation ``call`` it stands for on
    a random probe of one sample and channel of ``in_shape``'s spatial extent (each axis'
    matrix seen in every combination).

    Raises
    ------
    ValueError
        When they differ by more than ``rtol`` (relative, max norm): the call is not the
        separable map of its per-axis weights.
    """
    g = torch.Generator(device="cpu").manual_seed(0)
    probe = torch.randn((1, 1) + tuple(in_shape[2:]), dtype=torch.float64, generator=g).to(dtype=dtype, device=device)
    want = call(probe)
    got = op.parts(probe)[2]
    scale = float(want.abs().max()) or 1.0
    if got.shape != want.shape or float((got - want).abs().max()) > rtol * scale:
        raise ValueError("resampling differs from the separable map of its per-axis weights")


def _along(A, t, axis):
    """``A`` applied along ``axis`` of ``t`` (``t x_axis A``)."""
    if axis == t.dim() - 1:
        return t @ A.transpose(0, 1)
    if axis == t.dim() - 2:
        return A @ t
    return (A @ t.movedim(axis, -2)).movedim(-2, axis)


class ResampleOp:
    """Linear resampling (``F.interpolate`` / ``nn.Upsample`` in the modes
    :data:`RESAMPLE_MODES`) as the separable linear map it computes:
    ``y = X x_1 A_1 x_2 A_2 ...`` per sample and channel, ``out = A X B^T`` in 2-d, with
    the axis matrices of :func:`resample_axis_matrices` (bilinear, area: weights >= 0;
    bicubic: of both signs).

    The weight of output ``(i, j)`` on input ``(k, l)`` is ``a_ik b_jl``, so its sign parts
    are ``W+ = A+ (x) B+ + A- (x) B-`` and ``W- = A+ (x) B- + A- (x) B+``, and on more axes
    ``W+-`` sum the sign patterns with an even / odd number of negative factors.  Both
    are applied axis by axis without the dense ``prod(out) x prod(in)`` matrix: starting
    from ``(P, N) = (z, 0)``, each axis maps ``(P, N) -> (A+ P + A- N, A- P + A+ N)``;
    transposes start from ``(u, v) = (g_+, g_-)`` (the ratios meeting ``W+`` and ``W-``)
    and map ``(u, v) -> (A+^T u + A-^T v, A-^T u + A+^T v)``, ``W+^T g_+ + W-^T g_-``
    being the final ``u``.  No bias.
    """

    kind = "resample"
    bias = None
    bias_shape = None

    def __init__(self, mats):
        self.mats = list(mats)
        self.nd = len(self.mats)
        self.nonneg = all(not bool((A < 0).any()) for A in self.mats)
        self.split = [(A.clamp(min=0), A.clamp(max=0)) for A in self.mats]

    def _axes(self, t):
        return range(t.dim() - self.nd, t.dim())

    def _sweep(self, u, v, transpose, last_v=True):
        """``(u, v) -> (A+ u + A- v, A- u + A+ v)`` axis by axis (``v`` None: 0)."""
        axes = list(self._axes(u))
        for i, (ax, (Ap, An)) in enumerate(zip(axes, self.split)):
            if transpose:
                Ap, An = Ap.transpose(0, 1), An.transpose(0, 1)
            if self.nonneg:
                u = _along(Ap, u, ax)
                continue
            need_v = last_v or i < len(axes) - 1
            nu = _along(Ap, u, ax)
            if v is not None:
                nu = nu.add_(_along(An, v, ax))
            nv = None
            if need_v:
                nv = _along(An, u, ax)
                if v is not None:
                    nv = nv.add_(_along(Ap, v, ax))
            u, v = nu, nv
        return u, (None if self.nonneg else v)

    def parts(self, z):
        P, N = self._sweep(z, None, transpose=False)
        if N is None:
            return P, None, P
        return P, N, P + N

    term_buffer = separate_term_buffers

    def transpose_signs(self, buf, keys, in_shape):
        out = []
        for key in keys:
            gp = gn = None
            for t, (a, b) in enumerate(key):
                if a != 0.0:
                    gp = a * buf[t] if gp is None else gp.add_(buf[t], alpha=a)
                if b != 0.0 and not self.nonneg:
                    gn = b * buf[t] if gn is None else gn.add_(buf[t], alpha=b)
            if gp is None and gn is None:
                out.append(None)
                continue
            if gp is None:  # W-^T g: the odd part of the sweep started from (0, g)
                gp = torch.zeros_like(gn)
            u, _ = self._sweep(gp, gn, transpose=True, last_v=False)
            out.append(u)
        return out


def sdpa_weights(q, k, attn_mask=None, is_causal=False, scale=None, enable_gqa=False):
    """The attention weights ``A = softmax(q k^T scale + mask)`` of
    ``F.scaled_dot_product_attention`` (``scale`` default ``1/sqrt(E)``; a boolean
    ``attn_mask`` marks the entries that take part, a float one is added;
    ``is_causal``: lower-triangular; ``enable_gqa``: key heads shared by groups of
    query heads).  The fused kernel's output is ``A @ v``: affine in ``v`` with
    weights ``>= 0`` once ``A`` is held constant."""
    if enable_gqa and k.shape[-3] != q.shape[-3]:
        k = k.repeat_interleave(q.shape[-3] // k.shape[-3], -3)
    s = (1.0 / q.shape[-1] ** 0.5) if scale is None else scale
    logits = (q @ k.transpose(-2, -1)) * s
    L, S = q.shape[-2], k.shape[-2]
    if is_causal:
        keep = torch.ones(L, S, dtype=torch.bool, device=q.device).tril()
        logits = logits.masked_fill(~keep, float("-inf"))
    if attn_mask is not None:
        if attn_mask.dtype == torch.bool:
            logits = logits.masked_fill(~attn_mask, float("-inf"))
        else:
            logits = logits + attn_mask
    return torch.softmax(logits, dim=-1)


def product_split(fn, a, b, R, K):
    """AttnLRP's uniform rule at a product ``Z = fn(a, b)`` of two input-dependent
    factors (elementwise, ``@``, ``einsum``): each factor receives half of the
    relevance, ``R_a = a * VJP_a(R / Z) / 2`` and ``R_b = b * VJP_b(R / Z) / 2``
    (``0/0 := 0``).  As a modified gradient: the gradient to each factor halved,
    which is what the LRP-0 oracle does.  ``R`` holds ``K`` stacked rules."""
    la, lb = a.detach().requires_grad_(True), b.detach().requires_grad_(True)
    with torch.enable_grad():
        Z = fn(la, lb)
    n = Z.shape[0]
    outs_a, outs_b = [], []
    for k in range(K):
        Rk = R[k * n : (k + 1) * n]
        g = torch.nan_to_num(Rk / Z.detach(), nan=0.0, posinf=0.0, neginf=0.0)
        ga, gb = torch.autograd.grad(Z, (la, lb), g, retain_graph=k < K - 1, allow_unused=True)
        outs_a.append(torch.zeros_like(a) if ga is None else a * ga * 0.5)
        outs_b.append(torch.zeros_like(b) if gb is None else b * gb * 0.5)
    return torch.cat(outs_a), torch.cat(outs_b)


def linear_vjp(fn, shape, g):
    """``L^T g`` of a linear function ``fn`` at inputs of ``shape`` (autograd at zero)."""
    with torch.enable_grad():
        z = torch.zeros(shape, dtype=g.dtype, device=g.device, requires_grad=True)
        (out,) = torch.autograd.grad(fn(z), z, g)
    return out


def _sign(D):
    return torch.where(D >= 0, 1.0, -1.0).to(D.dtype)


def symmetric_rule(rule: Rule) -> bool:
    """Every term weighs ``pp``/``nn`` alike and ``pn``/``np`` alike (all rules of [P1]).

    Such a rule sees the sign parts only through ``P = O_pp + O_nn`` and
    ``N = O_pn + O_np``, which is what :func:`sign_part_outputs` keeps with
    ``compact=True``.
    """
    return all(t.parts[0] == t.parts[3] and t.parts[1] == t.parts[2] for t in rule.terms)


def sign_part_outputs(op, z, nonneg: bool = False, compact: bool = False):
    """Rule-independent sign-part outputs ``{part: O_s}`` of ``op`` at input ``z``.

    Missing parts (exactly zero: no negative inputs or no negative weights) are
    absent from the dict.  Returns ``(O, zp, zn, total)`` with ``total = sum_s O_s``
    (the output without bias).  ``nonneg=True`` asserts ``z >= 0`` (known from
    the graph, :func:`empirical.engine.graph.nonnegative_outputs`) and skips the
    run-time check.

    ``compact=True`` (only for :func:`symmetric_rule` rules): at a mixed-sign input
    of an operator with weights of both signs, keep ``{"pp": P, "np": N}`` instead
    of the four parts (half the memory; :func:`lrp_step` evaluates symmetric terms
    from ``P`` and ``N`` either way, and takes the weight parts from the operator).
    """
    if nonneg or bool(torch.amin(z) >= 0):
        zp, zn = z, None
        op_, om_, tot = op.parts(z)
        O = {"pp": op_}
        if om_ is not None:
            O["np"] = om_
        return O, zp, zn, tot
    zp, zn = z.clamp(min=0), z.clamp(max=0)
    B = z.shape[0]
    op_, om_, tot = op.parts(torch.cat([zp, zn]))
    y = tot[:B] + tot[B:]
    if compact and om_ is not None:
        return {"pp": op_[:B] + om_[B:], "np": op_[B:] + om_[:B]}, zp, zn, y
    O = {"pp": op_[:B], "pn": op_[B:]}
    if om_ is not None:
        O["np"], O["nn"] = om_[:B], om_[B:]
    return O, zp, zn, y


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


#: (part fed to L^T_{W+}, part fed to L^T_{W-}) for the positive / negative input entries
_BY_INPUT_SIGN = {"p": ("pp", "np"), "n": ("pn", "nn")}


class _Sums:
    """``P``, ``N`` of :func:`pos_neg_sums`, computed at most once per step."""

    def __init__(self, O):
        self.O = O
        self._pn = None

    def __call__(self):
        if self._pn is None:
            self._pn = pos_neg_sums(self.O)
        return self._pn


def _axpby(a, X, b, Y):
    """``a X + b Y`` with as few passes as possible (``X``/``Y`` may be None: zero)."""
    if Y is None or b == 0.0:
        return None if X is None or a == 0.0 else (X if a == 1.0 else a * X)
    if X is None or a == 0.0:
        return Y if b == 1.0 else b * Y
    if b == 1.0:
        return torch.add(Y, X, alpha=a)
    if a == 1.0:
        return torch.add(X, Y, alpha=b)
    return torch.add(a * X, Y, alpha=b)


def _denominator(a, O, sums):
    """``D = sum_s a_s O_s`` over the parts present in ``O`` (None when none is).

    When the term weighs ``pp``/``nn`` alike and ``pn``/``np`` alike (every rule
    of [P1]: LRP-beta's terms, LRP-gamma, -epsilon, -0), ``D = a_pp P + a_np N``
    with the per-step sums ``P``, ``N`` shared by all rules.
    """
    has = {s: s in O for s in SIGN_PARTS}
    sym_p = not has["nn"] or a["pp"] == a["nn"]
    sym_n = not (has["pn"] and has["np"]) or a["pn"] == a["np"]
    if sym_p and sym_n:
        ap = a["pp"]
        an = a["np"] if has["np"] else (a["pn"] if has["pn"] else 0.0)
        X = Y = None
        if ap != 0.0:
            X = sums()[0] if has["nn"] else O["pp"]
        if an != 0.0:
            Y = sums()[1] if (has["pn"] and has["np"]) else (O["np"] if has["np"] else O["pn"])
        if X is None and Y is None:
            return None
        return _axpby(ap, X, an, Y)
    D = None
    for s in SIGN_PARTS:
        if has[s] and a[s] != 0.0:
            D = _axpby(a[s], O[s], 0.0, None) if D is None else _axpby(1.0, D, a[s], O[s])
    return D


def _term_denominator(a, O, sums, bias_parts, e):
    """``D = sum_s a_s O_s`` (+ the bias parts) (+ ``e sign(D)``); zeros where no part exists."""
    D = _denominator(a, O, sums)
    if D is None:
        D = torch.zeros_like(O["pp"])
    if bias_parts is not None:
        for s in ("pp", "np"):
            if a[s] != 0.0:
                D = D + a[s] * bias_parts[s]
    if e != 0.0:
        D = D + e * _sign(D)
    return D


def lrp_step(op, O, zp, zn, R, rules: list[Rule], conventions: Conventions, in_shape, bias=None):
    """One LRP backward step through ``op`` for ``K`` rules at once.

    For every term ``t`` of every rule: ``D_t = sum_s a_ts O_s`` (+ bias part)
    (+ ``eps sign(D_t)``) and the ratio ``g_t = R / D_t`` with the
    zero-denominator policy (times ``c_t`` when the coefficient is per output,
    adaptive beta).  Then, per input sign, ONE transpose of the stacked ratios with
    the combined weights ``c_t (a_{t,+s} W+ + a_{t,-s} W-)`` (``_SignedOp``) and the
    product with ``z+`` (and ``z-``):

        R_in = z+ L^T[sum_t c_t (a_pp W+ + a_np W-) g_t] + z- L^T[sum_t c_t (a_pn W+ + a_nn W-) g_t],

    which is :func:`boundcheck.rules.transition_matrix` applied to ``R``.  Rules
    with the same combined weights (e.g. several epsilon rules) share their
    transposes, stacked along the batch axis.

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
    sums = _Sums(O)
    bias_parts = None
    if conventions.bias == "backward" and bias is not None:
        b = bias.reshape(op.bias_shape)
        bias_parts = {"pp": b.clamp(min=0), "np": b.clamp(max=0)}
    signs = ("p", "n") if zn is not None else ("p",)
    groups = {}  # signature -> [(k, [(sign-part weights a, epsilon, c_tensor)])]
    for k, rule in enumerate(rules):
        if rule.adaptive_beta_max is not None:
            coeffs = rule.coefficients(*sums())
        else:
            coeffs = rule.coefficients(None, None)
        terms, sig = [], []
        for term, c in zip(rule.terms, coeffs):
            if all(v == 0.0 for v in term.parts):
                continue
            scalar = not torch.is_tensor(c)
            if policy == "zero" and scalar and c == 0.0:
                continue  # exact: c * ratio == 0 for every finite ratio
            a = dict(zip(SIGN_PARTS, term.parts))
            e = conventions.stabiliser + rule.epsilon
            if not any(a[s] != 0.0 for s in O):
                # no part of this term exists: its numerators are all 0 (its denominator is
                # only looked at under "raise")
                if policy == "raise" and bool((_term_denominator(a, O, sums, bias_parts, e) == 0).any()):
                    raise ZeroDivisionError("a rule denominator is exactly 0 (zero_denominator='raise')")
                continue
            # a scalar coefficient goes into the combined weights; a per-output one (adaptive
            # beta) and 0 (kept under "nan"/"raise": 0 * NaN must stay NaN) scale the ratio
            fold = scalar and c != 0.0
            w = float(c) if fold else 1.0
            pair = tuple(
                (w * a[s_plus], 0.0 if op.nonneg else w * a[s_minus])
                for s_plus, s_minus in (_BY_INPUT_SIGN[sg] for sg in signs)
            )
            terms.append((a, e, None if fold else c))
            sig.append((pair, fold))
        groups.setdefault(tuple(sig), []).append((k, terms))
    Rin = rows_like(zp, K * B)
    for sig, members in groups.items():
        if not sig:
            for k, _ in members:
                Rin[k * B : (k + 1) * B].zero_()
            continue
        rows = len(members) * B
        buf, slots = op.term_buffer(len(sig), rows, tail, R)
        for j, (k, terms) in enumerate(members):
            Rk = R[k * B : (k + 1) * B]
            for t, (a, e, c) in enumerate(terms):
                # each denominator is built where it is used and dropped after: one output-sized
                # temporary at a time, not one per term of every rule
                D = _term_denominator(a, O, sums, bias_parts, e)
                if policy == "raise" and bool((D == 0).any()):
                    raise ZeroDivisionError("a rule denominator is exactly 0 (zero_denominator='raise')")
                g = slots[t][j * B : (j + 1) * B]
                torch.div(Rk, D, out=g)
                if policy == "zero":
                    # R/0 is +-inf or NaN exactly where D == 0 (R finite): one pass sets those to 0
                    g.nan_to_num_(nan=0.0, posinf=0.0, neginf=0.0)
                elif policy == "nan":
                    g.masked_fill_(D == 0, float("nan"))
                del D
                if c is not None:
                    g.mul_(c)
        keys = tuple(tuple(pair[i] for pair, _ in sig) for i in range(len(signs)))
        for i, (T, z) in enumerate(zip(op.transpose_signs(buf, keys, in_shape), (zp, zn))):
            for j, (k, _) in enumerate(members):
                out = Rin[k * B : (k + 1) * B]
                if T is None:
                    if i == 0:
                        out.zero_()
                    continue
                Tj = T[j * B : (j + 1) * B]
                if i == 0:
                    torch.mul(Tj, z, out=out)
                else:
                    out.addcmul_(Tj, z)
    return Rin


def add_step(inputs, R, rules, conventions, K, nonneg=None):
    """LRP step through ``y = sum_i z_i`` (weights 1: only the pp and pn parts exist).

    Summands may broadcast (not over the batch axis); each summand's relevance is
    summed back to its shape.  Per rule: ``G+ = sum_t c_t a_t,pp R / D_t`` and
    ``G- = sum_t c_t a_t,pn R / D_t`` written into two ``(K*B, ...)`` buffers, then
    ``R_i = G+ z_i+ + G- z_i-`` (one product and one fused multiply-add per summand).
    Returns the list of input relevances and the sign-part outputs
    ``{"pp": sum z_i+, "pn": sum z_i-}``.  ``nonneg``: per summand, ``True`` when
    it is known to be ``>= 0`` (no run-time check).
    """
    out_shape = torch.broadcast_shapes(*[z.shape for z in inputs])
    B = out_shape[0]
    split = []
    for i, z in enumerate(inputs):
        if z.shape[0] != B:
            raise ValueError("a residual sum must not broadcast over the batch axis")
        if (nonneg is not None and nonneg[i]) or bool(torch.amin(z) >= 0):
            split.append((z, None))
        else:
            split.append((z.clamp(min=0), z.clamp(max=0)))
    pp = split[0][0] + split[1][0] if len(split) == 2 else sum(p for p, _ in split)
    negs = [n for _, n in split if n is not None]
    pn = None if not negs else (negs[0] + negs[1] if len(negs) == 2 else sum(negs[1:], negs[0]))
    O = {"pp": pp, "pn": pn if pn is not None else torch.zeros_like(pp)}
    P, N = O["pp"], O["pn"]
    eps, policy = conventions.stabiliser, conventions.zero_denominator
    G = {"pp": None, "pn": None}
    written = {"pp": set(), "pn": set()}

    def slot(s, k):
        if G[s] is None:
            G[s] = rows_like(pp, K * B)
        return G[s][k * B : (k + 1) * B]

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
            D = _axpby(a_pp, pp, a_pn, pn)
            if D is None:
                D = torch.zeros_like(pp)
            if e != 0.0:
                D = D + e * _sign(D)
            targets = [(s, w) for s, w in (("pp", a_pp), ("pn", a_pn)) if w != 0.0]
            if pn is None and policy == "zero":
                targets = [(s, w) for s, w in targets if s == "pp"]  # z- = 0: G- is never used
            if not targets:
                continue
            (s0, w0), rest = targets[0], targets[1:]
            fresh = k not in written[s0]
            ratio = slot(s0, k) if fresh else torch.empty_like(Rk)
            torch.div(Rk, D, out=ratio)
            if policy == "zero":
                ratio.nan_to_num_(nan=0.0, posinf=0.0, neginf=0.0)
            else:
                if policy == "raise" and bool((D == 0).any()):
                    raise ZeroDivisionError("a rule denominator is exactly 0 (zero_denominator='raise')")
                ratio.masked_fill_(D == 0, float("nan"))
            if torch.is_tensor(c) or c != 1.0:
                ratio.mul_(c)
            for s, w in rest:  # before ratio gets its own weight
                if k in written[s]:
                    slot(s, k).add_(ratio, alpha=w)
                else:
                    torch.mul(ratio, w, out=slot(s, k))
                    written[s].add(k)
            if fresh:
                if w0 != 1.0:
                    ratio.mul_(w0)
                written[s0].add(k)
            else:
                slot(s0, k).add_(ratio, alpha=w0)
    for s in ("pp", "pn"):
        if G[s] is not None:
            for k in range(K):
                if k not in written[s]:
                    slot(s, k).zero_()
    Gp, Gn = G["pp"], G["pn"]
    outs = []
    for i, (zp, zn) in enumerate(split):
        target = (K * B,) + tuple(zp.shape[1:])
        if tuple(zp.shape) == tuple(out_shape):
            # rule by rule into a buffer of the summand's layout (a 5-d view of a channels-last
            # tensor sent the products down a strided path 10x slower, and every later step with it);
            # the last summand's products go into G+ itself when it has that layout (one buffer less)
            last = i == len(split) - 1 and Gp is not None and Gp[:B].stride() == zp.stride()
            r = Gp if last else rows_like(zp, K * B)
            for k in range(K):
                rk, rows = r[k * B : (k + 1) * B], slice(k * B, (k + 1) * B)
                if last:
                    rk.mul_(zp)
                elif Gp is not None:
                    torch.mul(Gp[rows], zp, out=rk)
                else:
                    rk.zero_()
                if Gn is not None and zn is not None:
                    rk.addcmul_(Gn[rows], zn)
            outs.append(r)
            continue
        r = None
        if Gp is not None:
            r = torch.mul(Gp.view(K, B, *out_shape[1:]), zp)
        if Gn is not None and zn is not None:
            gn = Gn.view(K, B, *out_shape[1:])
            r = gn * zn if r is None else r.addcmul_(gn, zn)
        if r is None:
            r = torch.zeros(target, dtype=R.dtype, device=R.device)
        else:
            r = r.reshape((K * B,) + tuple(out_shape[1:]))
        outs.append(r.sum_to_size(target) if r.shape != target else r)
    return outs, O
