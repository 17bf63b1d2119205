"""LRP and gradient attribution engine (torch) that evaluates exactly the rules of
:mod:`boundcheck.rules`.

Public API: :class:`Explainer`, :class:`Attribution`, :class:`LayerRecord`,
:data:`PAPER_METHODS`, :func:`parse_method`, :class:`UnsupportedModuleError`.

Every modelling choice, in one place
====================================

Canonicalisation (once, in ``Explainer.__init__``; the user's model is never modified)
    copy (new module and parameter objects; a parameter or buffer that neither the
    dtype/device conversion nor BatchNorm folding changes keeps the caller's
    storage, nothing is written into it; tensors an earlier forward
    pass cached with autograd history are copied detached) -> ``eval()`` -> dtype/device -> parameters frozen ->
    efficientnet_lite's ``Conv2dStaticSamePadding`` replaced by
    ``Sequential(ZeroPad2d, Conv2d)`` -> traced by ``torch.fx`` with concrete
    shapes (:mod:`empirical.engine.tracing`: the traced program also runs on an
    example input of ``Explainer(input_shape=...)``, default (3, 224, 224), and
    Python's questions about shapes, dtypes and devices get the example's answer;
    questions about values stay errors; a graph that asked is specialised and
    traced again, once, for every other input shape; leaf modules: torch.nn
    modules, torchvision ``SqueezeExcitation``, ``StochasticDepth``,
    ``ShiftedWindowAttention[V2]``) -> ``forward``'s further arguments take
    their defaults -> a cast of an input-dependent value to another floating
    dtype inside ``forward`` (``.float()``, ``.half()``, ``.to(torch.float32)``
    ...) computes in the engine's dtype instead (``graph.casts_to_dtype``;
    ``check-model`` lists them; the oracle's ``casts="dtype"``) -> the graph run
    node by node on one sample and on two: a tensor whose batch axis is
    contracted or made a second axis, a failure, or a sample's logits changing
    with the other sample refuses the model, naming the module path
    (``graph._check_samples_independent``) -> every tensor computed from parameters and buffers only
    (weight standardisation, re-parametrised convolutions, concatenated q/k/v
    biases, relative-position biases gathered from their tables) folded into one
    constant -> one spelling per operation (:mod:`empirical.engine.spellings`:
    ``F.conv1d/2d/3d``, ``torch.conv*``, ``F.linear``, ``F.batch_norm`` and
    ``torch.batch_norm`` with constant parameters become the modules they
    compute) -> every eval-mode BatchNorm whose input is a
    Conv2d/Linear used only by it is folded into that layer ([P1] Sec. 3.1.2:
    "batch-normalization layers are fused"; the bias is kept for the forward
    pass), every other one computes ``z * s + c`` in elementwise operations
    (``graph._batchnorm_elementwise``: torch's CPU batch-norm backward kernel
    returns wrong gradients at a batch of one with mixed memory layouts, and
    the gradient methods differentiate the copy) -> ``contiguous()`` inserted before every ``view`` (the one operation
    whose success depends on the memory layout, so channels-last never breaks
    user code; a no-op on contiguous tensors).  ``inplace`` flags are switched
    off on the copy.  Then every node is classified ONCE, statically, by the
    node-kind table :mod:`empirical.engine.kinds` (``plan_graph``): its kind,
    the inputs that receive relevance, its operator; a node without a
    treatment raises :class:`UnsupportedModuleError` here, naming its module
    path and the blocker.

The node kinds (``empirical.engine.kinds.KINDS``; depth = rule ops on a relevance path)

    ==========  ==========  =====  ==============================================================
    kind        treatment   depth  nodes
    ==========  ==========  =====  ==============================================================
    conv        affine      1      ``nn.Conv1d/2d/3d`` and their functional forms (zero padding,
                                   ints/"valid"/symmetric "same"); ``nn.ConvTranspose1d/2d/3d``
                                   and ``F.conv_transpose*`` with a constant weight (groups,
                                   stride, padding, output_padding/output_size, dilation)
    linear      affine      1      ``nn.Linear`` (any leading axes)
    avgpool     affine      1      average pooling modules/functions (1-3 d), ``mean``/``sum`` over
                                   given axes (never the batch axis)
    resample    affine      1      ``F.interpolate``/``nn.Upsample`` in the modes linear, bilinear,
                                   trilinear, area (weights >= 0) and bicubic (both signs;
                                   ``align_corners``, ``antialias``, ``scale_factor``): the separable
                                   map ``A X B^T`` with torch's own per-axis matrices, sign parts
                                   ``A+ (x) B+- + A- (x) B-+`` applied axis by axis
    add         affine      1      ``a + b`` of two input-dependent tensors (weights 1); ``a - b``
                                   as the summands ``a`` and ``-b`` (exact for every rule weighing
                                   pp/nn and pn/np alike: all rules of [P1])
    diag        affine      1      ``s*z + c``: unfoldable BatchNorm (eval), LayerNorm /
                                   LayerNorm2d / ``F.layer_norm`` / GroupNorm with statistics
                                   constant, layer scale ``param * z``, ``z * const``,
                                   ``z / const``, ``z + const``, ``-z``, ``addcmul``/``addcdiv`` with
                                   constant factors, ``F.normalize`` and ``z * stat`` / ``z / stat``
                                   with a norm-derived statistic held constant (ConvNeXt-V2's GRN)
                                   RMSNorm (``normalisation="affine"``; RMSNorm also under ``"centre"``)
    centre      affine      1      ``s*(z - mean z) + b``: LayerNorm / LayerNorm2d / GroupNorm with
                                   only ``1/sigma`` constant (``normalisation="centre"``): a dense
                                   linear map per normalised group, ``W = diag(s)(I - 11^T/n)``
    attnsum     attention   1      ``softmax(...) @ v`` / ``einsum`` / ``* `` with the softmax
                                   weights held constant (a linear map with weights >= 0);
                                   ``F.scaled_dot_product_attention`` (masks, ``scale``,
                                   ``is_causal``, grouped-query heads): ``A @ v`` with ``A`` held
    attention   attention   3      ``nn.MultiheadAttention`` (ViT), torchvision
                                   ``ShiftedWindowAttention[V2]`` (Swin V1/V2): value
                                   projection, ``A @ V``, output projection
    pass        pass        0      activations (ReLU, ReLU6, GELU, SiLU, Hardswish, ELU,
                                   LeakyReLU, Mish, Tanh, Softplus, sigmoid not used as a gate,
                                   ...), Identity, Dropout, StochasticDepth (eval), contiguous,
                                   casts; with ``normalisation="pass"`` also the ``diag`` maps
    gate        gate        0      ``x * g(x)``: torchvision ``SqueezeExcitation``, or a product
                                   with a sigmoid/hardsigmoid output: all relevance to ``x``
    route       route       0      view/reshape/flatten/permute/transpose/swapaxes/roll/pad/
                                   getitem/cat/stack/chunk/split/squeeze/unsqueeze/expand/
                                   narrow/unbind/flip/repeat/gather/index_select/unfold/pixel
                                   shuffle, nearest resampling, ``_patch_merging_pad``: autograd's
                                   VJP (``*_as(other)``: ``other`` lends its shape only)
    maxpool     route       0      max pooling: all relevance to the arg-max input
    product     split       0      a product (``*``, ``@``, ``einsum``) of two input-dependent
                                   factors that is none of the above and reaches the output
                                   (gMLP's spatial gating, SwiGLU, MambaOut's gated conv): each
                                   factor receives half, ``R_a = a * VJP_a(R / Z) / 2`` (AttnLRP's
                                   uniform rule; the oracle halves each factor's gradient)
    weights     none        0      softmax outputs, attention logits, norms and what is computed
                                   from statistics only (no relevance)
    const/meta  none        0      parameters and what is computed from them only (e.g. ViT's
                                   class token: relevance reaching it is dropped like a bias's);
                                   shapes, sizes, assertions
    ==========  ==========  =====  ==============================================================

    A quotient of two input-dependent tensors whose divisor is not a held
    statistic is unsupported, and so is every operation without an entry (LSTM,
    ``exp``, a sum over the batch axis).
    ``Conventions.normalisation`` (beside ``bias`` and ``zero_denominator``)
    chooses between ``"affine"`` (default; makes LRP-0 with ``bias="backward"``
    equal x times the modified gradient on every architecture), ``"centre"``
    (LXT's and AttnLRP's LayerNorm; the identity holds with the oracle's
    ``normalisation="centre"``) and ``"pass"`` (the previous copy-through, not an
    LRP rule).

Backward step of an affine operator ``L`` at input ``z`` (``empirical.engine.ops``)
    sign-part outputs ``O_s = L(z_s; W_s)`` (one call with ``[W+; W-]``
    concatenated, per block of output channels when it is not stored;
    grouped/depthwise convolutions: one call per weight part; z- rows only when ``z`` has a negative entry, checked at run
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
    Weights: the canonical copy shares the caller's unchanged parameters;
    ``[W+; W-]`` and the combined weights are kept per operator within
    ``Explainer(weight_cache_bytes=...)`` (default the larger of 1 GiB and the
    model's parameter bytes), admitted in the order first needed; beyond it
    ``[W+; W-]`` is built per call in blocks of at most
    ``ops.SIGN_SPLIT_BLOCK_BYTES`` (64 MiB) and the terms are folded into the
    ratios and transposed with it (same maps).
Memory format
    ``Explainer(channels_last=None)``: on the CPU the canonical copy, the input
    and every relevance buffer are channels-last (oneDNN's native layout; about
    10% faster convolutions), on CUDA contiguous (NCHW).  Values agree up to
    summation order.
Anything else
    :class:`UnsupportedModuleError` (an ``InputError``) naming the module path
    and the blocker, e.g. ``unsupported module 'features.3' of type LSTM: no LRP
    treatment is defined for this module type``; always raised when the
    Explainer is built.

Gradient methods
    ``gradient``: ``d/dx sum_u v_u f_u(x)`` by autograd on the canonical copy with
    the start vector ``v`` (``q``, or ``q * logits`` with ``init="logit"``);
    ``squared_gradient``: its elementwise square (``reduce="sum"``: channel sum of
    squares); ``gradient_x_input``: ``x * gradient``; ``integrated_gradients[_m]``:
    zero baseline, ``m`` (default 32) midpoint-rule steps ``alpha = (i + 1/2)/m``,
    ``x * mean_i grad(alpha_i x)`` with ``v`` fixed at the input's logits.

Fast path (``empirical.engine.fastpath``; ``Explainer.attribute(path="auto")``)
    LRP-0, LRP-epsilon, ``cp_lrp`` and ``attnlrp`` as one forward and one
    backward pass with modified local derivatives (the rule's ratio ``R/D`` at
    every affine output, secant ``sigma(z)/z`` at activations, held factors
    detached, uniform rule ``1/2`` at AttnLRP's bilinear products); taken when
    every requested LRP rule allows it, ``zero_denominator="zero"``,
    ``normalisation`` is not ``"pass"``, no ``record`` and every node kind has a
    fast treatment.  The explicit path above is its reference (maps <= 1e-10
    relative in float64).  ``normalisation="centre"`` (LayerNorm/GroupNorm:
    only ``1/std`` held constant) runs on both paths (the explicit one with the
    dense centring operator ``CentreOp``).

LayerRecord
    One record per graph node carrying relevance, for each LRP method, in the
    order of the backward pass (output to input).  ``depth`` is the number of
    affine operators strictly after the node on the longest path from the node's
    output to the network output (the last Linear has depth 0; a Swin attention
    module counts as 3: value projection, ``A @ V``, output projection; every
    kind's weight is in ``empirical.engine.kinds.KINDS``).
    ``relevance_out_*``: sums of the positive / negative relevance arriving at
    the node's output; ``relevance_in_*``: after the node's step, over all its
    inputs together.  ``pos_sum``/``neg_sum``: for the rule ops of kinds conv, linear,
    avgpool, resample, add, diag and attnsum ``P_a = sum_b (w_ab z_b)_+`` and ``N_a = sum_b (w_ab z_b)_-`` per output
    neuron (bias excluded), shared by all rules; ``None`` elsewhere (including
    the attention modules).

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
