"""LRP and gradient attribution engine (torch) that evaluates exactly the rules of
:mod:`boundcheck.rules`.

Public API: :class:`Explainer`, :class:`Attribution`, :class:`LayerRecord`,
:data:`PAPER_METHODS`, :func:`parse_method`, :class:`UnsupportedModuleError`.

Every modelling choice, in one place
====================================

Canonicalisation (once, in ``Explainer.__init__``; the user's model is never modified)
    deep copy -> ``eval()`` -> dtype/device -> parameters frozen ->
    efficientnet_lite's ``Conv2dStaticSamePadding`` replaced by
    ``Sequential(ZeroPad2d, Conv2d)`` -> traced by ``torch.fx`` (leaf modules:
    torch.nn modules, torchvision ``SqueezeExcitation``, ``StochasticDepth``,
    ``ShiftedWindowAttention[V2]``) -> every eval-mode BatchNorm whose input is a
    Conv2d/Linear used only by it is folded into that layer ([P1] Sec. 3.1.2:
    "batch-normalization layers are fused"; the bias is kept for the forward
    pass).  ``inplace`` flags are switched off on the copy.  ``W+``/``W-`` of every
    affine layer are precomputed once.

Affine operators (the rule of the call is applied, the same rule at every layer,
including the input layer where pixels have both signs)
    * ``Conv2d``, ``Linear`` (weights of both signs; bias used in the forward pass,
      and in the backward denominators only with ``Conventions(bias="backward")``,
      as an input of value 1: ``b+`` joins the pp part, ``b-`` the np part).
    * average pooling (``AvgPool2d``, ``AdaptiveAvgPool2d``, ``F.avg_pool2d``,
      ``F.adaptive_avg_pool2d``, ``torch.mean``/``Tensor.mean`` over given axes):
      a linear operator with non-negative weights (so ``W- = 0``).
    * the residual sum ``a + b`` of two tensors (``operator.add``, ``+=``,
      ``torch.add``): an affine layer with weight 1 on both summands, so its sign
      parts are ``pp = a+ + b+`` and ``pn = a- + b-`` and the SAME rule applies
      (LRP-beta at an add is ``(1+beta) a+/(a+ + b+) - beta a-/(a- + b-)``).
    * Swin V2 window attention: the value projection (v-rows of the qkv Linear,
      with its bias), ``A @ V`` with the softmax attention ``A`` a constant of the
      backward pass (non-negative weights), and the output projection.  The
      attention logits (cosine attention, logit scale, relative position bias
      from the cpb MLP, shift mask) get no relevance.  The ``A @ V`` step runs in
      float64 whatever the dtype (the shift mask's -100 logits give weights of
      about e^-100, below float32's normal range; the rule's ratios overflowed).
Backward step of an affine operator ``L`` at input ``z`` (``empirical.engine.ops``)
    sign-part outputs ``O_s = L(z_s; W_s)`` (one call with ``[W+; W-]``
    concatenated; grouped/depthwise convolutions: one call per weight part; z- rows only when ``z`` has a negative entry, checked at run
    time); per term ``t``: ``D_t = sum_s a_ts O_s`` (+ bias part) (+ ``(eps_conv +
    rule.epsilon) sign(D_t)``, ``sign(0) = +1``; terms weighing pp/nn and pn/np
    alike, i.e. every rule of [P1], use ``P = O_pp + O_nn`` and ``N = O_pn + O_np``
    computed once per step for all rules), ratio ``g_t = R / D_t`` with the
    ``zero_denominator`` policy (``"zero"`` is evaluated as ``nan_to_num(R / D)``:
    for finite ``R`` the non-finite quotients are exactly those with ``D == 0``;
    a quotient overflowing to +-inf at a tiny non-zero ``D`` is set to 0 too);
    ``R_in = z+ L^T[sum_t c_t (a_pp W+ + a_np W-) g_t] + z- L^T[sum_t c_t (a_pn W+ + a_nn W-) g_t]``.
    The combined weights ``c_t (a W+ + a' W-)`` are built once per operator and
    rule and cached (they depend on the weights only), the terms' ratios are
    stacked along the channels, so one rule costs one transposed convolution per
    input sign with as many weight sets as it has terms: LRP-gamma and LRP-beta_0
    one, LRP-beta (beta > 0) two; both input signs share one call.  A per-output
    coefficient (adaptive beta) and a coefficient 0 under ``"nan"``/``"raise"``
    scale the ratio instead.  Terms with coefficient 0 are skipped only
    under ``zero_denominator="zero"`` (exact there).  Adaptive beta uses
    ``P``, ``N`` (bias excluded).  Several LRP rules share one forward pass (the
    ``O_s`` are rule-independent); rules with identical combined weights run their
    transposes stacked along the batch axis.  In the LRP forward pass an
    affine layer's output is computed as ``sum_s O_s + b`` (no separate plain
    forward), so the logits agree with :meth:`Explainer.logits` up to rounding.
    Gradient methods run their own forward pass: deriving the gradient from the
    sign-part forward was tried and dropped, ``z = P + N`` cancels and the float32
    gradient of ResNet-50 moved 1% from float64 (0.05-0.2% with a plain forward).
Memory
    The LRP forward pass drops every node value its backward pass does not read
    (liveness plan); with only symmetric rules (``ops.symmetric_rule``: every rule
    of [P1]) a mixed-sign layer keeps ``P`` and ``N`` instead of its four sign parts.
    Combined weights are cached per operator (one copy per rule and input sign).
Memory format
    ``Explainer(channels_last=None)``: on the CPU the canonical copy, the input
    and every relevance buffer are channels-last (oneDNN's native layout; about
    10% faster convolutions), on CUDA contiguous (NCHW).  Values agree up to
    summation order.
Pass-through (relevance unchanged, [P1] "identity mapping for activation functions")
    ReLU, ReLU6, SiLU, GELU, Hardswish, LeakyReLU, ELU, Mish, Tanh, Dropout,
    StochasticDepth (eval: identity), Identity, LayerNorm (statistics constant:
    an elementwise affine map), unfolded BatchNorm, ``contiguous``/``clone``, and
    multiplication/division by a Python constant.
Routing (data movement; relevance moves with autograd's vector-Jacobian product)
    view/reshape/flatten/permute/transpose/roll/pad/getitem/slicing/cat/stack/
    chunk/split/squeeze/unsqueeze, torchvision's ``_patch_merging_pad``, and
    max pooling (winner-take-all: all relevance to the arg-max input).
Gating
    torchvision ``SqueezeExcitation`` ``x * s(x)``: all relevance to ``x``, none
    through the gate ``s``.
Anything else
    :class:`UnsupportedModuleError` (an ``InputError``) naming the module path
    and type, e.g. ``unsupported module 'features.3' of type LSTM``; raised when
    the Explainer is built (operations whose tensor-ness is known only at run
    time, such as a product of two tensors, raise on the first call).

Gradient methods
    ``gradient``: ``d/dx sum_u v_u f_u(x)`` by autograd on the canonical copy with
    the start vector ``v`` (``q``, or ``q * logits`` with ``init="logit"``);
    ``squared_gradient``: its elementwise square (``reduce="sum"``: channel sum of
    squares); ``gradient_x_input``: ``x * gradient``; ``integrated_gradients[_m]``:
    zero baseline, ``m`` (default 32) midpoint-rule steps ``alpha = (i + 1/2)/m``,
    ``x * mean_i grad(alpha_i x)`` with ``v`` fixed at the input's logits.

LayerRecord
    One record per graph node carrying relevance, for each LRP method, in the
    order of the backward pass (output to input).  ``depth`` is the number of
    affine operators strictly after the node on the longest path from the node's
    output to the network output (the last Linear has depth 0; a Swin attention
    module counts as 3: value projection, ``A @ V``, output projection).
    ``relevance_out_*``: sums of the positive / negative relevance arriving at
    the node's output; ``relevance_in_*``: after the node's step, over all its
    inputs together.  ``pos_sum``/``neg_sum``: for conv, linear, pooling and add
    nodes ``P_a = sum_b (w_ab z_b)_+`` and ``N_a = sum_b (w_ab z_b)_-`` per output
    neuron (bias excluded), shared by all rules; ``None`` elsewhere (including
    the Swin attention module).

References
----------
[P1] Binder et al. (2025), eq. (7), (9), (13), (14), Sec. 3.1.2 and 6.1.
"""

from empirical.engine.explainer import (
    PAPER_METHODS,
    Attribution,
    Explainer,
    LayerRecord,
    UnsupportedModuleError,
    parse_method,
)

__all__ = ["Explainer", "Attribution", "LayerRecord", "PAPER_METHODS", "parse_method", "UnsupportedModuleError"]
