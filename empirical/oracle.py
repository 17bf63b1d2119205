"""Architecture-independent exactness oracle for LRP-0: ``R = x * (modified gradient)``.

The identity
============
LRP-0 with the bias in the backward denominators
(``boundcheck.rules.Conventions(bias="backward")``, rule ``"lrp_zero"``) and a
logit start (output relevance ``q * logits``, ``q`` one-hot at the target) equals
``x * g`` where ``g`` is the gradient of the target logit computed with a few
local derivatives replaced.  At an affine map ``z_j = sum_i w_ij a_i + b_j`` the
LRP-0 step ([P1] eq. (7) with beta = 0, bias as an input of value 1) is
``R_i = a_i sum_j w_ij R_j / z_j``; if ``R_j = z_j g_j`` then ``R_i = a_i g_i``
with ``g_i = sum_j w_ij g_j``, the chain rule.  An activation through which the
relevance passes unchanged ([P1] "identity mapping for activation functions")
keeps the identity exactly when its derivative is replaced by the secant slope
``sigma(z) / z``.  The oracle computes ``g`` with plain autograd and these
replacements, and nothing of :mod:`empirical.engine` (it is the reference the
engine is tested against).

Every modelling choice, in one place
====================================
The model
    Copied (new modules and parameter objects; a parameter or buffer already in
    ``dtype`` shares the caller's storage and is never written), ``eval()``, cast
    to ``dtype`` (default float64), parameters frozen, ``inplace`` flags switched
    off; the caller's model is never modified.
    The forward pass is the copy's own ``forward`` (no tracing), so any model
    that runs runs here; the replacements act through a
    :class:`torch.overrides.TorchFunctionMode` active during that forward pass.
Activations (derivative -> secant ``sigma(z)/z``, ``:= 0`` at ``z = 0``)
    ``relu``, ``relu6``/``hardtanh``, ``gelu``, ``silu``, ``hardswish``, ``mish``,
    ``elu``, ``selu``, ``celu``, ``leaky_relu``, ``softplus``, ``tanh``,
    ``clamp``/``clip``/``clamp_min``/``clamp_max`` (the bounds held constant; with
    ``lo <= 0 <= hi`` it is a hard-tanh, ``sigma(0) = 0``), ``z ** c``
    with a constant exponent (``pow``; StarReLU's ``relu(x) ** 2``), whether
    called as modules (``nn.ReLU`` ... call these functions), from
    ``torch.nn.functional``, ``torch`` or as ``Tensor`` methods, including the
    in-place variants (evaluated out of place and copied into their input).  The
    value ``0`` at ``z = 0`` matches the zero-denominator convention ``0/0 := 0``:
    the relevance there is ``sigma(0) = 0`` for every listed activation.  For
    ReLU networks the secant slope is the plain derivative (``relu'(0) = 0`` in
    torch), so the oracle is the plain gradient there.
Gates and attention weights
    ``sigmoid``/``hardsigmoid`` (torch, functional, ``Tensor``, ``torch.special.expit``)
    get the secant derivative like an activation (the engine passes relevance
    through a sigmoid that is a value, e.g. iFormer's ``v, gate = sigmoid(conv(x)).chunk(2)``);
    as a factor of an elementwise product, a sigmoid output (moved only: views,
    expands, chunks; found by walking its autograd nodes) is a gate and held
    constant (squeeze-excitation ``x * s(x)``, ECA, ``x * torch.sigmoid(conv(x))``),
    so all of the product's gradient goes through ``x``.  Note ``x * sigmoid(x)``
    written out by hand then gets the derivative ``sigmoid(x) = silu(x)/x``, the
    SiLU secant, so both spellings agree.  ``softmax`` (functional, torch,
    ``Tensor``, ``torch.special``): output detached, attention weights; a model
    returning probabilities would be out of scope (the oracle explains logits).
Attention (only the value path carries gradient)
    ``F.multi_head_attention_forward`` (called by ``nn.MultiheadAttention``; its
    fast path is never taken while a torch-function mode is active) and
    ``F.scaled_dot_product_attention`` are re-implemented as
    ``softmax(q k^T / sqrt(d) + mask).detach() @ v`` with the same projections;
    dropout is ignored (eval mode), ``bias_k``/``bias_v``/``add_zero_attn``/
    ``static_k``/``static_v`` raise :class:`~boundcheck.errors.InputError`.
    torchvision's Swin V1/V2 window attention and MaxViT's attention call
    ``softmax`` directly and are covered by the softmax rule (the attention
    logits, relative position bias and cosine attention then get no gradient).
Normalisation (``normalisation=``, the engine's ``Conventions.normalisation``)
    ``"affine"`` (default; statistics held constant, the elementwise affine part
    kept): ``layer_norm`` is ``(x - mean.detach()) / sqrt(var.detach() + eps) * w + b``
    (``LayerNorm`` and torchvision's ``LayerNorm2d`` call it); ``group_norm``,
    ``instance_norm`` (input statistics), ``rms_norm`` likewise; ``batch_norm``
    with running statistics is already affine (eval mode), with batch statistics
    (no running buffers) those are detached.  ``"centre"``: only the standard
    deviation is detached, ``(x - mean) / sqrt(var.detach() + eps) * w + b`` (the
    centring keeps its derivative; ``rms_norm`` has no mean and is the same as
    under ``"affine"``).  ``"pass"`` (the engine copies relevance through these
    maps): every normalisation with input statistics (``layer_norm``,
    ``group_norm``, ``instance_norm``, ``rms_norm``, ``batch_norm`` with batch
    statistics) and every addition or subtraction of a constant (a tensor or
    number that does not depend on the input, e.g. ViT's position embedding) gets
    the secant ``y / x`` as its derivative, elementwise, like an activation: then
    ``x * g_in = y * g_out``, the relevance copied through.  An eval-mode
    ``batch_norm`` with running statistics stays affine under ``"pass"`` (the
    engine folds those into the adjacent layer where it can, and only an unfolded
    one is passed through; the oracle does not trace, so under ``"pass"`` it
    models networks whose every BatchNorm the engine folds).  In-place additions
    of a constant (``x += c``) are not replaced.
Batch norm by its formula (both references)
    ``batch_norm`` and ``instance_norm`` (every spelling) never run torch's
    kernel, in :func:`modified_gradient` and in :func:`gradient_reference` alike:
    with running statistics ``z * s + c``, ``s = w / sqrt(var + eps)``,
    ``c = b - mean * s`` (the CPU inference kernel's formula; the parameters and
    buffers are constants), with input statistics ``(z - mean) / sqrt(var + eps)
    * w + b`` (statistics held as above; plain autograd differentiates them).
    Reason: torch's CPU ``native_batch_norm_backward`` (which ``instance_norm``
    calls on a ``(1, B*C, ...)`` view) returns wrong input gradients, silently,
    at a batch of one when the input and the incoming gradient have different
    memory layouts, e.g. a contiguous input and a channels-last gradient whose
    batch stride is not ``C*H*W``: what ``bn(x).flatten(2).transpose(1, 2)``
    followed by a LayerNorm or a mean sends back (timm's LeViT, XCiT,
    EfficientFormer, EfficientViT-M and iFormer, whose convolutional stems end so:
    plain gradients off by relative errors up to 4 in torch 2.14.1;
    ``tests/test_oracle.py::test_batch_norm_gradient_is_right_for_mixed_memory_layouts``).
    Written out, the derivative is autograd's elementwise one, right for every
    layout; values agree with the kernel's up to rounding.
Statistics (held constant)
    ``Tensor.norm``, ``torch.norm``, ``torch.linalg.vector_norm``/``norm``,
    ``sqrt``/``rsqrt`` (a hand-written RMSNorm): outputs detached, like the
    normalisation statistics (ConvNeXt-V2's GRN, cosine attention, XCiT).
    ``F.normalize(x, p, dim, eps)`` is replaced by
    ``x / max(||x||_p, eps).detach()``: a torch-function mode sees only the
    outermost call of a Python-level function, so the ``Tensor.norm`` inside
    ``F.normalize`` would otherwise keep its derivative (SwiftFormer's additive
    attention normalises its queries, keys and attention scores with it).
Products of two input-dependent tensors (AttnLRP's uniform rule)
    ``*``/``mul``, ``@``/``matmul``/``bmm``, two-operand ``einsum``: when both
    factors carry gradient, each factor's gradient is halved (``t/2 + (t/2).detach()``
    has ``t``'s value exactly), so each receives half of the product's relevance
    (gMLP's spatial gating, SwiGLU).  Gates and attention weights are detached
    above, so their products are untouched; a product of ``t`` with itself keeps
    the plain derivative.
Quotients of two input-dependent tensors (divisor held constant)
    ``a / b`` with both carrying gradient (``/``, ``div``, ``true_divide``): ``b``
    detached, a normalisation like LayerNorm's (EfficientViT's linear attention
    ``(v k^T) q / (1^T k^T q)``).
Casts inside the forward pass (``casts=``)
    ``"model"`` (default): the model's own casts, as its eager forward computes
    (timm's EfficientViT-MIT computes its linear attention under ``.float()``).
    ``"dtype"`` (the engine's convention, which ``compare_with_engine`` models):
    ``Tensor.float``/``double``/``half``/``bfloat16``/``to``/``type`` of a tensor
    that carries gradient (an input-dependent value), when the result is of
    another floating dtype, is computed as ``t.to(dtype)`` instead; casts of
    constants (parameters, buffers and what is computed from them only) and to
    integer or boolean dtypes are kept.
Max pooling, everything else
    Plain autograd (max pooling: winner-take-all).

References
----------
[P1] Binder et al. (2025), eq. (7), (13), (14), Sec. 3.1.2 and 6.1.
"""

from __future__ import annotations

import copy
import inspect
import math

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

from boundcheck.errors import InputError

__all__ = [
    "modified_gradient", "lrp0_reference", "gradient_reference", "compare_with_engine",
    "randomise_batchnorm_stats", "relative_error", "OracleMode", "torchvision_classifier",
]


# ---------------------------------------------------------------------------- registry
def _candidates(name):
    """Every callable spelled ``name`` that a torch-function mode may receive."""
    out = []
    for ns in (F, torch, torch.Tensor, torch._C._nn, torch.special):
        f = getattr(ns, name, None)
        if f is not None and f not in out:
            out.append(f)
    return out


def _registry(names):
    """``{callable: out-of-place callable}`` for ``names`` and their in-place ``name_`` forms."""
    table = {}
    for name in names:
        plain = _candidates(name)
        for f in plain:
            table[f] = f
        for f in _candidates(name + "_"):
            table.setdefault(f, plain[0] if plain else f)
    return table


_ACTIVATIONS = _registry([
    "relu", "relu6", "hardtanh", "gelu", "silu", "hardswish", "mish", "elu", "selu", "celu",
    "leaky_relu", "softplus", "tanh", "clamp", "clip", "clamp_min", "clamp_max",
])
_GATES = _registry(["sigmoid", "hardsigmoid", "expit"])
_ATTENTION_WEIGHTS = _registry(["softmax"])
#: statistics held constant like LayerNorm's (``F.normalize``: :func:`_normalize`)
_HELD_STATISTICS = set(_candidates("norm") + _candidates("sqrt") + _candidates("rsqrt") + [
    torch.linalg.vector_norm, torch.linalg.norm, torch.linalg.matrix_norm])
#: products of two tensors: with both factors input-dependent, each factor's gradient is halved
_PRODUCTS = set(_candidates("mul") + _candidates("matmul") + _candidates("bmm") + [
    torch.Tensor.__mul__, torch.Tensor.__rmul__, torch.Tensor.__matmul__, torch.Tensor.__rmatmul__,
    torch.einsum])


#: ``z ** c`` (constant exponent): an activation, derivative -> secant ``z**c / z``
_POWERS = set(_candidates("pow") + [torch.Tensor.__pow__])
#: quotients of two input-dependent tensors: the divisor is held constant (a normalisation)
_QUOTIENTS = set(_candidates("div") + _candidates("true_divide") + [torch.Tensor.__truediv__])


#: casts of a tensor; with ``casts="dtype"`` an input-dependent one computes in the oracle's dtype
_CASTS = {torch.Tensor.float, torch.Tensor.double, torch.Tensor.half, torch.Tensor.bfloat16, torch.Tensor.to,
          torch.Tensor.type}
#: the choices of ``casts=`` (module docstring)
_CAST_POLICIES = ("model", "dtype")


def _cast(dtype, func, args, kwargs):
    """``func(*args, **kwargs)``; a cast of an input-dependent tensor to another floating
    dtype than ``dtype`` is ``args[0].to(dtype)`` instead (``casts="dtype"``)."""
    value = func(*args, **kwargs)
    if (torch.is_tensor(value) and value.is_floating_point() and value.dtype != dtype and args[0].requires_grad
            and args[0].is_floating_point()):
        return args[0].to(dtype=dtype, device=value.device)
    return value


def _check_casts(casts):
    if casts not in _CAST_POLICIES:
        raise InputError(f"casts must be 'model' or 'dtype', got {casts!r}")


_MATMULS = set(_candidates("matmul") + _candidates("bmm") + [
    torch.Tensor.__matmul__, torch.Tensor.__rmatmul__, torch.einsum])


class _GateSecant(torch.autograd.Function):
    """A sigmoid-type output: the secant derivative like an activation (relevance passes
    through it when it is a value), recognised as a gate when it is a factor of a product."""

    @staticmethod
    def forward(ctx, z, out):
        nz = z != 0
        slope = torch.where(nz, out / torch.where(nz, z, torch.ones_like(z)), torch.zeros_like(z))
        ctx.save_for_backward(slope)
        return out.clone()

    @staticmethod
    def backward(ctx, g):
        (slope,) = ctx.saved_tensors
        return g * slope, None


#: autograd nodes of data movement, through which a gate stays a gate (views, chunks, copies)
_MOVES = ("ViewBackward", "ExpandBackward", "UnsqueezeBackward", "SqueezeBackward", "SplitBackward",
          "SplitWithSizesBackward", "UnbindBackward", "PermuteBackward", "TransposeBackward", "ReshapeAlias",
          "UnsafeViewBackward", "CloneBackward", "SelectBackward", "SliceBackward", "AsStridedBackward",
          "RepeatBackward", "ToCopyBackward", "UnsafeSplitBackward", "FlattenBackward")


def _is_gate(t) -> bool:
    """``t`` is a sigmoid-type output, moved only (the engine's gate: ``x * g(...)``)."""
    fn = t.grad_fn
    while fn is not None:
        name = type(fn).__name__
        if name == "_GateSecantBackward":
            return True
        if not name.startswith(_MOVES):
            return False
        nxt = [f for f, _ in fn.next_functions if f is not None]
        if len(nxt) != 1:
            return False
        fn = nxt[0]
    return False


def _half_gradient(t):
    """``t`` with the same value and half the gradient (``t/2`` is exact, so is the sum)."""
    h = t * 0.5
    return h + h.detach()
_SIGNATURES: dict = {}


def _bind(func, args, kwargs):
    """``inspect.BoundArguments`` of a Python-level function, or ``None`` for builtins."""
    if func not in _SIGNATURES:
        try:
            _SIGNATURES[func] = inspect.signature(func)
        except (TypeError, ValueError):
            _SIGNATURES[func] = None
    sig = _SIGNATURES[func]
    if sig is None:
        return None
    try:
        ba = sig.bind(*args, **kwargs)
    except TypeError:
        return None
    ba.apply_defaults()
    return ba


def _out_of_place(func, plain, args, kwargs):
    """Evaluate ``func`` out of place; returns ``(value, input_to_overwrite_or_None)``."""
    inplace = func is not plain
    ba = _bind(plain, args, kwargs)
    if ba is not None and "inplace" in ba.arguments:
        inplace = inplace or bool(ba.arguments["inplace"])
        ba.arguments["inplace"] = False
        value = plain(*ba.args, **ba.kwargs)
    else:
        value = plain(*args, **kwargs)
    return value, (args[0] if inplace else None)


class _Secant(torch.autograd.Function):
    """Forward ``sigma(z)`` (precomputed), backward ``g * sigma(z) / z`` (0 at ``z = 0``)."""

    @staticmethod
    def forward(ctx, z, out):
        nz = z != 0
        slope = torch.where(nz, out / torch.where(nz, z, torch.ones_like(z)), torch.zeros_like(z))
        ctx.save_for_backward(slope)  # a fresh tensor: in-place writes to ``z`` cannot affect it
        return out.clone()

    @staticmethod
    def backward(ctx, g):
        (slope,) = ctx.saved_tensors
        return g * slope, None


#: the treatments of a normalisation the oracle models (``boundcheck.rules.NORMALISATIONS``)
_HOW = ("affine", "centre", "pass")


def _stats_norm(x, dims, weight, bias, eps, centre=True, how="affine"):
    """``(x - mean) / sqrt(var + eps)`` over ``dims`` with the statistics detached
    (``how="centre"``: the variance only; ``how="plain"``: neither, the plain derivative
    of :func:`gradient_reference`; ``centre=False``: RMS, no mean)."""
    if centre:
        mean = x.mean(dims, keepdim=True)
        if how not in ("centre", "plain"):
            mean = mean.detach()
        var = x.var(dims, unbiased=False, keepdim=True)
        if how != "plain":
            var = var.detach()
        y = (x - mean) / torch.sqrt(var + eps)
    else:
        y = x / torch.sqrt((x * x).mean(dims, keepdim=True).detach() + eps)
    if weight is not None:
        y = y * weight
    if bias is not None:
        y = y + bias
    return y


def _shape(normalized_shape):
    return (normalized_shape,) if isinstance(normalized_shape, int) else tuple(normalized_shape)


def _layer_norm(input, normalized_shape, weight=None, bias=None, eps=1e-5, cudnn_enable=None, *, how="affine"):
    dims = tuple(range(input.dim() - len(_shape(normalized_shape)), input.dim()))
    return _stats_norm(input, dims, weight, bias, eps, how=how)


def _rms_norm(input, normalized_shape, weight=None, eps=None, *, how="affine"):
    dims = tuple(range(input.dim() - len(_shape(normalized_shape)), input.dim()))
    eps = torch.finfo(input.dtype).eps if eps is None else eps
    return _stats_norm(input, dims, weight, None, eps, centre=False)


def _channel_affine(y, weight, bias):
    shape = (1, -1) + (1,) * (y.dim() - 2)
    if weight is not None:
        y = y * weight.reshape(shape)
    if bias is not None:
        y = y + bias.reshape(shape)
    return y


def _group_norm(input, num_groups, weight=None, bias=None, eps=1e-5, cudnn_enabled=None, *, how="affine"):
    n = input.shape[0]
    g = input.reshape(n, num_groups, -1)
    y = _stats_norm(g, (2,), None, None, eps, how=how).reshape(input.shape)
    return _channel_affine(y, weight, bias)


def _running_norm(input, running_mean, running_var, weight, bias, eps):
    """Batch norm with running statistics, ``z * s + c`` with ``s = w / sqrt(var + eps)``,
    ``c = b - mean * s`` (the formula of torch's CPU inference kernel), in elementwise
    operations: their derivative is right for every memory layout, torch's
    ``native_batch_norm_backward`` is not (module docstring, "Batch norm by its formula")."""
    s = 1.0 / torch.sqrt(running_var + eps)
    if weight is not None:
        s = s * weight
    c = -running_mean * s
    if bias is not None:
        c = c + bias
    return _channel_affine(input, s, c)


def _instance_norm(input, running_mean=None, running_var=None, weight=None, bias=None,
                   use_input_stats=True, momentum=0.1, eps=1e-5, *, how="affine"):
    if not use_input_stats:
        return _running_norm(input, running_mean, running_var, weight, bias, eps)
    y = _stats_norm(input, tuple(range(2, input.dim())), None, None, eps, how=how)
    return _channel_affine(y, weight, bias)


def _running_stats(running_mean, running_var, training=False):
    return not training and running_mean is not None and running_var is not None


def _batch_norm(input, running_mean, running_var, weight=None, bias=None, training=False, momentum=0.1,
                eps=1e-5, *, how="affine"):
    if _running_stats(running_mean, running_var, training):
        return _running_norm(input, running_mean, running_var, weight, bias, eps)
    dims = (0,) + tuple(range(2, input.dim()))
    return _channel_affine(_stats_norm(input, dims, None, None, eps, how=how), weight, bias)


def _torch_batch_norm(input, weight, bias, running_mean, running_var, training, momentum, eps, cudnn_enabled=None,
                      *, how="affine"):
    """``torch.batch_norm``'s argument order."""
    return _batch_norm(input, running_mean, running_var, weight, bias, training, momentum, eps, how=how)


def _torch_instance_norm(input, weight, bias, running_mean, running_var, use_input_stats, momentum, eps,
                         cudnn_enabled=None, *, how="affine"):
    """``torch.instance_norm``'s argument order."""
    return _instance_norm(input, running_mean, running_var, weight, bias, use_input_stats, momentum, eps, how=how)


def _normalize(input, p=2.0, dim=1, eps=1e-12, out=None):
    """``F.normalize`` with the norm held constant: ``x / max(||x||_p, eps).detach()``."""
    if out is not None:
        raise InputError("F.normalize(..., out=...) is not supported by the oracle")
    return input / input.norm(p, dim, keepdim=True).clamp_min(eps).detach()


def _attend(q, k, v, mask=None):
    """``softmax(q k^T / sqrt(d) + mask).detach() @ v`` over the last two axes."""
    logits = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
    if mask is not None:
        logits = logits + mask
    a = torch.softmax(logits, dim=-1).detach()
    return a @ v, a


def _additive(mask, dtype):
    """A boolean mask (True = masked) as ``-inf`` entries; a float mask unchanged."""
    if mask is None:
        return None
    if mask.dtype == torch.bool:
        return torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill(mask, float("-inf"))
    return mask.to(dtype)


def _sdpa(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, enable_gqa=False):
    if enable_gqa and key.shape[-3] != query.shape[-3]:
        rep = query.shape[-3] // key.shape[-3]
        key, value = key.repeat_interleave(rep, -3), value.repeat_interleave(rep, -3)
    if scale is not None:
        query = query * (scale * math.sqrt(query.shape[-1]))
    L, S = query.shape[-2], key.shape[-2]
    mask = None
    if is_causal:
        mask = _additive(~torch.ones(L, S, dtype=torch.bool, device=query.device).tril(), query.dtype)
    if attn_mask is not None:
        # sdpa's boolean masks mean True = take part (the opposite of MHA's).
        m = _additive(~attn_mask if attn_mask.dtype == torch.bool else attn_mask, query.dtype)
        mask = m if mask is None else mask + m
    return _attend(query, key, value, mask)[0]


def _mha(query, key, value, embed_dim_to_check, num_heads, in_proj_weight, in_proj_bias, bias_k, bias_v,
         add_zero_attn, dropout_p, out_proj_weight, out_proj_bias, training=True, key_padding_mask=None,
         need_weights=True, attn_mask=None, use_separate_proj_weight=False, q_proj_weight=None,
         k_proj_weight=None, v_proj_weight=None, static_k=None, static_v=None, average_attn_weights=True,
         is_causal=False):
    """``F.multi_head_attention_forward`` with the attention weights detached (sequence-first layout)."""
    if bias_k is not None or bias_v is not None or add_zero_attn or static_k is not None or static_v is not None:
        raise InputError("multi-head attention with bias_k/bias_v/add_zero_attn/static_k/static_v is not supported")
    unbatched = query.dim() == 2
    if unbatched:
        query, key, value = query.unsqueeze(1), key.unsqueeze(1), value.unsqueeze(1)
        if key_padding_mask is not None:
            key_padding_mask = key_padding_mask.unsqueeze(0)
    L, N, E = query.shape
    S = key.shape[0]
    h = num_heads
    d = E // h
    if use_separate_proj_weight:
        wq, wk, wv = q_proj_weight, k_proj_weight, v_proj_weight
    else:
        wq, wk, wv = in_proj_weight.chunk(3)
    bq = bk = bv = None
    if in_proj_bias is not None:
        bq, bk, bv = in_proj_bias.chunk(3)

    def heads(t, n):
        return t.reshape(n, N, h, d).permute(1, 2, 0, 3)  # (N, h, n, d)

    q, k, v = heads(F.linear(query, wq, bq), L), heads(F.linear(key, wk, bk), S), heads(F.linear(value, wv, bv), S)
    mask = None
    if attn_mask is not None:
        m = _additive(attn_mask, q.dtype)
        mask = m.reshape(N, h, L, S) if m.dim() == 3 else m
    elif is_causal:
        mask = _additive(~torch.ones(L, S, dtype=torch.bool, device=q.device).tril(), q.dtype)
    if key_padding_mask is not None:
        m = _additive(key_padding_mask, q.dtype).reshape(N, 1, 1, S)
        mask = m if mask is None else mask + m
    out, a = _attend(q, k, v, mask)
    out = F.linear(out.permute(2, 0, 1, 3).reshape(L, N, E), out_proj_weight, out_proj_bias)
    weights = None
    if need_weights:
        weights = a.mean(1) if average_attn_weights else a
        if unbatched:
            weights = weights.squeeze(0)
    if unbatched:
        out = out.squeeze(1)
    return out, weights


#: normalisations with (possibly) input statistics: the ``normalisation`` choice applies
_NORM_FUNCS = {
    f: impl
    for f, impl in (
        (F.layer_norm, _layer_norm), (getattr(torch, "layer_norm", None), _layer_norm),
        (F.group_norm, _group_norm), (getattr(torch, "group_norm", None), _group_norm),
        (getattr(F, "rms_norm", None), _rms_norm), (getattr(torch, "rms_norm", None), _rms_norm),
        (F.instance_norm, _instance_norm), (getattr(torch, "instance_norm", None), _torch_instance_norm),
        (F.batch_norm, _batch_norm), (getattr(torch, "batch_norm", None), _torch_batch_norm),
    )
    if f is not None
}
#: every replaced call (the normalisations dispatch through :data:`_NORM_FUNCS` first)
_REPLACED = {**_NORM_FUNCS, F.multi_head_attention_forward: _mha, F.scaled_dot_product_attention: _sdpa,
             F.normalize: _normalize}
#: additions/subtractions: a constant offset gets the secant under ``normalisation="pass"``
_OFFSETS = {f for f in (torch.add, torch.sub, torch.subtract, torch.rsub, torch.Tensor.add, torch.Tensor.sub,
                        torch.Tensor.subtract, torch.Tensor.__add__, torch.Tensor.__radd__,
                        torch.Tensor.__sub__, torch.Tensor.__rsub__) if f is not None}


def _with_stats(func, args, kwargs):
    """Whether a normalisation call computes statistics from its input (else: running ones)."""
    if func in (F.batch_norm, getattr(torch, "batch_norm", None)):
        ba = _bind(_batch_norm if func is F.batch_norm else _torch_batch_norm, args, kwargs)
        return ba is None or not _running_stats(ba.arguments["running_mean"], ba.arguments["running_var"],
                                                bool(ba.arguments["training"]))
    if func in (F.instance_norm, getattr(torch, "instance_norm", None)):
        ba = _bind(_instance_norm if func is F.instance_norm else _torch_instance_norm, args, kwargs)
        return ba is None or bool(ba.arguments["use_input_stats"])
    return True


def _secant_of(z, value):
    """``value`` with the derivative ``value / z`` (elementwise, 0 at ``z = 0``) w.r.t. ``z``."""
    if not (torch.is_tensor(z) and z.requires_grad):
        return value
    if z.shape != value.shape:
        z = z.expand(value.shape)
    return _Secant.apply(z, value.detach())


def _constant_offset_operand(args):
    """The input-dependent operand of a sum/difference with a constant, or None."""
    if len(args) < 2:
        return None
    dep = [torch.is_tensor(a) and a.requires_grad for a in args[:2]]
    if dep.count(True) != 1:
        return None
    z = args[dep.index(True)]
    return z if z.is_floating_point() else None


class OracleMode(TorchFunctionMode):
    """The replacements of the module docstring, active for every torch call in its context.

    ``normalisation``: ``"affine"`` (default), ``"centre"`` or ``"pass"``, the
    engine's ``Conventions.normalisation`` (module docstring).  ``casts_to``:
    ``None`` (default; the model's casts) or the dtype in which a cast of an
    input-dependent tensor computes (``casts="dtype"``, module docstring).
    """

    def __init__(self, normalisation: str = "affine", casts_to=None):
        if normalisation not in _HOW:
            raise InputError(f"normalisation must be 'affine', 'centre' or 'pass', got {normalisation!r}")
        super().__init__()
        self.normalisation = normalisation
        self.casts_to = casts_to

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        try:
            hash(func)
        except TypeError:  # not one of ours (every registered callable is hashable)
            return func(*args, **kwargs)
        if self.casts_to is not None and func in _CASTS and args and torch.is_tensor(args[0]):
            return _cast(self.casts_to, func, args, kwargs)
        if func in _ACTIVATIONS and args and torch.is_tensor(args[0]) and args[0].is_floating_point():
            z = args[0]
            value, target = _out_of_place(func, _ACTIVATIONS[func], args, kwargs)
            if z.requires_grad:
                value = _Secant.apply(z, value.detach())
            return _write_back(target, value)
        if func in _ATTENTION_WEIGHTS:
            value, target = _out_of_place(func, _ATTENTION_WEIGHTS[func], args, kwargs)
            return _write_back(target, value.detach())
        if func in _GATES and args and torch.is_tensor(args[0]):
            z = args[0]
            value, target = _out_of_place(func, _GATES[func], args, kwargs)
            if z.requires_grad:
                value = _GateSecant.apply(z, value.detach())
            return _write_back(target, value)
        if func in _NORM_FUNCS:
            if self.normalisation == "pass" and _with_stats(func, args, kwargs):
                return _secant_of(args[0], func(*args, **kwargs))
            return _NORM_FUNCS[func](*args, **kwargs, how=self.normalisation)
        if func in _REPLACED:
            return _REPLACED[func](*args, **kwargs)
        if self.normalisation == "pass" and func in _OFFSETS:
            z = _constant_offset_operand(args)
            if z is not None:
                return _secant_of(z, func(*args, **kwargs))
        if (func in _POWERS and len(args) == 2 and torch.is_tensor(args[0]) and args[0].requires_grad
                and isinstance(args[1], (int, float)) and not kwargs):
            return _Secant.apply(args[0], func(args[0].detach(), args[1]))
        if func in _HELD_STATISTICS:
            return func(*args, **kwargs).detach()
        if func in _QUOTIENTS and len(args) >= 2 and all(torch.is_tensor(t) and t.requires_grad for t in args[:2]):
            return func(args[0], args[1].detach(), *args[2:], **kwargs)
        if func in _PRODUCTS:
            ops = list(args[1:]) if func is torch.einsum else list(args)
            flat = ops[0] if func is torch.einsum and len(ops) == 1 and isinstance(ops[0], (list, tuple)) else ops
            live = [t for t in flat if torch.is_tensor(t) and t.requires_grad]
            gates = [t for t in live if _is_gate(t)] if len(live) == 2 and func not in _MATMULS else []
            if len(gates) == 1:  # x * g(...): the gate held, all of the product's gradient through x
                held = [t.detach() if t is gates[0] else t for t in flat]
                return func(*held, **kwargs)
            if len(live) == 2 and live[0] is not live[1]:
                halved = [_half_gradient(t) if torch.is_tensor(t) and t.requires_grad else t for t in flat]
                if func is torch.einsum:
                    return func(args[0], *halved) if flat is ops else func(args[0], halved)
                return func(*halved, **kwargs)
        return func(*args, **kwargs)


#: batch and instance norm in every spelling: by their formulas in both modes, never torch's kernel
_FORMULA_NORMS = {f: impl for f, impl in _NORM_FUNCS.items()
                  if impl in (_batch_norm, _torch_batch_norm, _instance_norm, _torch_instance_norm)}


class _PlainMode(TorchFunctionMode):
    """Plain autograd (:func:`gradient_reference`), batch and instance norm evaluated by their
    formulas with their full derivatives (module docstring, "Batch norm by its formula");
    ``casts_to``: as :class:`OracleMode`'s (``casts="dtype"``)."""

    def __init__(self, casts_to=None):
        super().__init__()
        self.casts_to = casts_to

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        try:
            impl = _FORMULA_NORMS.get(func)
            cast = self.casts_to is not None and func in _CASTS
        except TypeError:  # unhashable: not one of ours
            impl, cast = None, False
        if cast and args and torch.is_tensor(args[0]):
            return _cast(self.casts_to, func, args, kwargs)
        if impl is not None:
            return impl(*args, **kwargs, how="plain")
        return func(*args, **kwargs)


def _write_back(target, value):
    if target is None:
        return value
    target.copy_(value)
    return target


# ---------------------------------------------------------------------------- public API
def _prepare(model, dtype):
    if not isinstance(model, nn.Module):
        raise InputError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if dtype not in (torch.float32, torch.float64):
        raise InputError(f"dtype must be torch.float32 or torch.float64, got {dtype}")
    # new module and parameter objects over the caller's storage: the copy costs no weight memory
    # unless ``.to(dtype)`` converts (which makes new tensors), and nothing here writes into a weight
    memo = {}
    for t in list(model.parameters()) + list(model.buffers()):
        if id(t) not in memo:
            memo[id(t)] = nn.Parameter(t.detach(), requires_grad=False) if isinstance(t, nn.Parameter) else t.detach()
    m = copy.deepcopy(model, memo).eval().to(dtype)
    for p in m.parameters():
        p.requires_grad_(False)
    for mod in m.modules():
        if isinstance(getattr(mod, "inplace", None), bool):
            mod.inplace = False
    return m


def _device_of(model):
    for t in list(model.parameters()) + list(model.buffers()):
        return t.device
    return torch.device("cpu")


def _input(x, dtype, device):
    if not torch.is_tensor(x):
        raise InputError(f"x must be a torch.Tensor, got {type(x).__name__}")
    if x.dim() < 2:
        raise InputError(f"x must have a batch axis and a channel axis, got shape {tuple(x.shape)}")
    if not torch.is_floating_point(x):
        raise InputError("x must be a floating-point tensor")
    if not bool(torch.isfinite(x).all()):
        raise InputError("x must be finite")
    return x.detach().to(dtype=dtype, device=device).clone().requires_grad_(True)


def _target(logits, target):
    if not torch.is_tensor(logits) or logits.dim() != 2:
        raise InputError("the model must return one logits tensor of shape (B, K)")
    B, K = logits.shape
    if target is None:
        return logits.detach().argmax(1)
    t = torch.as_tensor(target, device=logits.device)
    if t.dim() == 0:
        t = t.expand(B)
    if t.shape != (B,) or t.is_floating_point() or t.dtype == torch.bool:
        raise InputError(f"target must be an int or a (B,) integer tensor, got {target!r}")
    t = t.long()
    if bool((t < 0).any()) or bool((t >= K).any()):
        raise InputError(f"target must lie in [0, {K}), got {t.tolist()}")
    return t


def _grad_of_target(m, x, target, mode, normalisation="affine", casts="model"):
    _check_casts(casts)
    casts_to = x.dtype if casts == "dtype" else None
    with torch.enable_grad():
        with OracleMode(normalisation, casts_to) if mode else _PlainMode(casts_to):
            logits = m(x)
        t = _target(logits, target)
        picked = logits.gather(1, t[:, None]).sum()
        (grad,) = torch.autograd.grad(picked, x)
    return grad.detach(), logits.detach(), t


def modified_gradient(model, x, target=None, dtype=torch.float64, normalisation="affine", casts="model"):
    """Gradient of the target logit with the oracle's replacements (module docstring).

    Parameters
    ----------
    model : torch.nn.Module
        A classifier returning logits ``(B, K)``; deep-copied, never modified.
    x : Tensor (B, ...)
        Input batch (any shape with a batch axis; images are ``(B, C, H, W)``).
    target : int or Tensor (B,), optional
        Class per sample; default the argmax of the logits.
    dtype : torch.dtype
        float64 (default) or float32.
    normalisation : {"affine", "centre", "pass"}
        The engine's ``Conventions.normalisation`` to model (module docstring).
    casts : {"model", "dtype"}
        ``"model"`` (default): the model's casts inside its forward pass;
        ``"dtype"``: a cast of an input-dependent tensor to another floating dtype
        computes in ``dtype`` (the engine's convention; module docstring).

    Returns
    -------
    (grad, logits) : (Tensor like ``x``, Tensor (B, K))
        ``d logit_target / dx`` (modified) and the logits of the forward pass, which
        are the unmodified model's logits (the replacements change derivatives only;
        with ``casts="dtype"`` the model's values computed in ``dtype`` throughout).
    """
    if normalisation not in _HOW:
        raise InputError(f"normalisation must be 'affine', 'centre' or 'pass', got {normalisation!r}")
    _check_casts(casts)
    m = _prepare(model, dtype)
    xg = _input(x, dtype, _device_of(m))
    grad, logits, _ = _grad_of_target(m, xg, target, mode=True, normalisation=normalisation, casts=casts)
    return grad, logits


def lrp0_reference(model, x, target=None, dtype=torch.float64, normalisation="affine", casts="model"):
    """LRP-0 map (bias in the denominators, logit start) as ``x * modified_gradient``
    under the engine's ``Conventions(normalisation=normalisation)`` (``casts``: see
    :func:`modified_gradient`).

    Returns a tensor shaped like ``x`` (``(B, C, H, W)`` for images), channels kept.
    """
    grad, _ = modified_gradient(model, x, target, dtype, normalisation, casts)
    return x.detach().to(grad.dtype) * grad


def gradient_reference(model, x, target=None, dtype=torch.float64, casts="model"):
    """Plain autograd gradient of the target logit on an eval-mode copy of ``model``, batch
    and instance norm evaluated by their formulas (module docstring, "Batch norm by its
    formula": torch's CPU batch-norm backward kernel is wrong at a batch of one with mixed
    memory layouts); ``casts``: see :func:`modified_gradient`."""
    _check_casts(casts)
    m = _prepare(model, dtype)
    xg = _input(x, dtype, _device_of(m))
    grad, _, _ = _grad_of_target(m, xg, target, mode=False, casts=casts)
    return grad


def relative_error(a, ref) -> float:
    """``||a - ref|| / ||ref||`` (Frobenius); ``||a - ref||`` when ``ref`` is zero; ``inf`` if ``a`` is not finite."""
    a = a.detach().to(torch.float64)
    ref = ref.detach().to(device=a.device, dtype=torch.float64)
    if a.shape != ref.shape:
        raise InputError(f"shapes differ: {tuple(a.shape)} vs {tuple(ref.shape)}")
    if not bool(torch.isfinite(a).all()):
        return math.inf
    diff = float(torch.linalg.vector_norm(a - ref))
    den = float(torch.linalg.vector_norm(ref))
    return diff / den if den > 0 else diff


def compare_with_engine(model, x, target=None, normalisation="affine", weight_cache_bytes="auto",
                        low_memory=False) -> dict:
    """Relative errors of :class:`empirical.engine.Explainer` (float64) against the oracle.

    The engine runs with ``Conventions(bias="backward", normalisation=normalisation)``
    (and ``weight_cache_bytes``, its memory budget, and ``low_memory``, its memory mode: the maps
    do not depend on them beyond rounding)
    and the oracle models the same ``normalisation``: ``"lrp_zero"`` with
    ``init="logit"`` on its explicit path (``path="explicit"``; the fast path is
    tested against it and the oracle in ``tests/test_engine_fastpath.py``) against
    :func:`lrp0_reference`, and ``"gradient"`` with
    ``init="q"`` against :func:`gradient_reference`; both with ``reduce="none"``
    and the same target (default the argmax of the float64 logits).  The engine
    computes input-dependent values in float64 even where the model casts them to
    a lower precision (``empirical.engine.graph.casts_to_dtype``), so both
    references run with ``casts="dtype"``.

    Returns
    -------
    dict
        ``lrp0_oracle_rel_error``, ``gradient_rel_error``, ``logits_rel_error``
        (engine vs the model's forward pass in float64, ``casts="dtype"``),
        ``model_logits_rel_error`` (engine vs the model's forward pass with its own
        casts: above 0 only for a model that casts, e.g. to float32),
        ``lrp0_reference_norm`` (a comparison with a zero reference map proves
        nothing) and ``target``.

    Raises
    ------
    InputError
        Bad input, or the engine's :class:`~empirical.engine.UnsupportedModuleError`.
    """
    from boundcheck.rules import Conventions
    from empirical.engine import Explainer

    grad, logits = modified_gradient(model, x, target, normalisation=normalisation, casts="dtype")
    t = _target(logits, target)
    ref_lrp = x.detach().to(grad.dtype) * grad
    ref_grad = gradient_reference(model, x, t, casts="dtype")
    m = _prepare(model, torch.float64)
    with torch.no_grad():
        model_logits = m(_input(x, torch.float64, _device_of(m)).detach())
    del m
    ex = Explainer(model, conventions=Conventions(bias="backward", normalisation=normalisation), dtype=torch.float64,
                   weight_cache_bytes=weight_cache_bytes, input_shape=tuple(x.shape[1:]), low_memory=low_memory)
    xe = x.detach().to(torch.float64)
    a_lrp = ex.attribute(xe, ["lrp_zero"], target=t, init="logit", reduce="none", path="explicit")
    a_grad = ex.attribute(xe, ["gradient"], target=t, init="q", reduce="none")
    return {
        "lrp0_reference_norm": float(torch.linalg.vector_norm(ref_lrp)),
        "lrp0_oracle_rel_error": relative_error(a_lrp.maps["lrp_zero"].cpu(), ref_lrp.cpu()),
        "gradient_rel_error": relative_error(a_grad.maps["gradient"].cpu(), ref_grad.cpu()),
        "logits_rel_error": relative_error(a_lrp.logits.cpu(), logits.cpu()),
        "model_logits_rel_error": relative_error(a_lrp.logits.cpu(), model_logits.cpu()),
        "target": [int(v) for v in t.tolist()],
    }


_NORMS = (nn.modules.batchnorm._NormBase, nn.LayerNorm, nn.GroupNorm)


def randomise_batchnorm_stats(model, generator=None):
    """A copy of ``model`` with random statistics and affine parameters in every norm layer.

    BatchNorm/InstanceNorm running means ``~ N(0, 0.5^2)``, running variances
    ``~ U(0.5, 2)``; every norm layer's weight ``~ U(0.5, 1.5)`` and bias
    ``~ N(0, 0.3^2)``.  With the default initialisation (mean 0, variance 1,
    weight 1, bias 0) eval-mode BatchNorm is nearly the identity, so folding it
    into the previous layer would go untested.  ``model`` is not modified.

    Parameters
    ----------
    model : torch.nn.Module
    generator : torch.Generator, optional
        Source of the random values (CPU generator).
    """
    if not isinstance(model, nn.Module):
        raise InputError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    m = copy.deepcopy(model)

    def draw(t, kind):
        shape = t.shape
        if kind == "mean":
            v = torch.randn(shape, generator=generator, dtype=torch.float64) * 0.5
        elif kind == "var":
            v = 0.5 + 1.5 * torch.rand(shape, generator=generator, dtype=torch.float64)
        elif kind == "weight":
            v = 0.5 + torch.rand(shape, generator=generator, dtype=torch.float64)
        else:
            v = torch.randn(shape, generator=generator, dtype=torch.float64) * 0.3
        return v.to(dtype=t.dtype, device=t.device)

    with torch.no_grad():
        for mod in m.modules():
            if not isinstance(mod, _NORMS):
                continue
            if getattr(mod, "running_mean", None) is not None:
                mod.running_mean.copy_(draw(mod.running_mean, "mean"))
                mod.running_var.copy_(draw(mod.running_var, "var"))
            if getattr(mod, "weight", None) is not None:
                mod.weight.copy_(draw(mod.weight, "weight"))
            if getattr(mod, "bias", None) is not None:
                mod.bias.copy_(draw(mod.bias, "bias"))
    return m


# ---------------------------------------------------------------------------- torchvision coverage helpers
_SMALLEST_SIDE = {"alexnet": 63, "inception_v3": 75, "maxvit_t": 224}


def torchvision_classifier(name, num_classes=1000, seed=0):
    """Random-weight torchvision classifier ``name`` and the side of its smallest square input.

    The side is 32, the smallest power of two every convolutional family takes
    (VGG's five 2x2 max-poolings need 32; several families would also run at 16),
    except: ``alexnet`` 63 (three stride-2 max-poolings after a stride-4
    convolution; 62 fails), ``inception_v3`` 75 (its documented minimum),
    ``maxvit_t`` 224 (every stage's grid must be divisible by the partition size 7),
    and ViTs ``2 * patch_size`` (built with ``image_size`` set so: a 2x2 patch grid,
    so that attention mixes more than the class token and one patch).  A
    zero-initialised ``nn.Linear`` (ViT's head) gets random weights, else the
    logits and every map would be 0.
    ``googlenet``/``inception_v3`` are built without auxiliary heads and with
    their weight initialisation.

    Returns
    -------
    (torch.nn.Module, int)
    """
    import torchvision

    names = torchvision.models.list_models(module=torchvision.models)
    if name not in names:
        raise InputError(f"unknown torchvision classifier {name!r}")
    kwargs = {"weights": None, "num_classes": num_classes}
    side = _SMALLEST_SIDE.get(name, 32)
    if name in ("googlenet", "inception_v3"):
        kwargs.update(aux_logits=False, init_weights=True)
    if name.startswith("vit_"):
        side = 2 * int(name.rsplit("_", 1)[1])
        kwargs["image_size"] = side
    with torch.random.fork_rng():  # the caller's RNG state is left as it was
        torch.manual_seed(seed)
        model = torchvision.models.get_model(name, **kwargs)
        _redraw_zero_linears(model)
    return model, side


def _redraw_zero_linears(model):
    """Give every all-zero ``nn.Linear`` weight ``N(0, 1/fan_in)`` entries, in place.

    torchvision's ViT initialises its classification head to zeros: its logits, and so
    every attribution map, would be exactly 0 and any comparison trivially exact.
    """
    with torch.no_grad():
        for mod in model.modules():
            if isinstance(mod, nn.Linear) and not bool(mod.weight.any()):
                mod.weight.normal_(0.0, mod.in_features ** -0.5)
