"""Depths ``n`` of the networks of [P1] Section 6, as the bounds of Lemma 7/8 count them.

:data:`NETWORK_DEPTHS` is the depth the bounds need for networks with residual
joins: the number of *rule ops* on the longest relevance path from the input to
the output, where a rule op is any affine map the LRP rule is applied to --
convolutions and linear layers (BatchNorm folded), **residual joins**
``y = z_1 + z_2`` (the affine map ``[I I]``), average pooling, and per Swin
attention block the value projection, the attention-weighted sum and the output
projection.  ``empirical.audit.depth`` states and proves the DAG form of
Lemma 7/8 that makes this the right count, and shows by a two-layer residual
block that counting only convolutions/linears is *not* a valid depth (its input
map exceeds the depth-2 bound).  ``tests/test_networks.py`` checks the table
against ``empirical.audit.depth.torch_network_depth`` on the traced models.

:data:`CONV_LINEAR_DEPTHS` keeps the chain reading of the architecture ("n
layers" = convolutions and linear layers on the main path), for comparison with
the paper's own wording; it undercounts.  Its counting rules:

* Residual shortcuts are never longer than the main branch they bypass, so the
  longest path runs through every main-branch convolution; shortcut
  projections (ResNet ``downsample``) are not on it.
* Multiplicative gates (squeeze-and-excitation, ``x * s(x)``): LRP treats the
  gate ``s(x)`` as a constant and propagates relevance through ``x`` only, so
  the gate's two 1x1 convolutions are not counted (:data:`NETWORK_DEPTHS`).
  The gradient does flow through them; :data:`NETWORK_DEPTHS_WITH_GATES`
  counts them (relevant for the gradient bound eq. (32)).
* Attention (Swin): per block we count the ``qkv`` projection (through ``v``),
  the attention-weighted sum ``A v`` (linear in ``v`` for the attention
  weights ``A``, treated as constants by LRP for transformers), the output
  projection ``proj`` and the two MLP linears: 5.  The relative-position-bias
  MLP (``cpb_mlp``) reads a constant coordinate table, not the input, and is
  not counted; LayerNorm is not affine in its input and not counted here (in
  :data:`NETWORK_DEPTHS` it is: the engine holds its statistics constant).

Derivations (torchvision 0.29 sources, ``efficientnet_lite_pytorch`` 0.1.0):

* ``resnet50``: stem 7x7 conv (1) + 16 bottlenecks ([3, 4, 6, 3]) x 3 convs
  (1x1, 3x3, 1x1) (48) + ``fc`` (1) = **50**.
* ``efficientnet_v2_s``: stem conv (1); FusedMBConv stages (expand ratio,
  repeats) (1, 2): one 3x3 conv each (2); (4, 4) and (4, 4): expand 3x3 +
  project 1x1 (8 + 8); MBConv stages (4, 6), (6, 9), (6, 15): expand 1x1 +
  depthwise 3x3 + project 1x1 (18 + 27 + 45); head 1x1 conv to 1280 (1);
  classifier linear (1): **111**.  The 30 MBConv blocks carry SE gates
  (2 convs each): 171 with gates.
* ``swin_v2_t``: patch embedding 4x4 conv (1); 12 blocks ([2, 2, 6, 2]) x 5
  (60); 3 patch-merging reductions (3); head (1): **65**.
* ``efficientnet-lite0``: stem conv (1); 16 MBConv blocks (repeats
  [1, 2, 2, 3, 3, 4, 1]); the first has expand ratio 1 (depthwise + project:
  2), the other 15 have 3 convs (45); head 1x1 conv (1); ``_fc`` (1): **50**.
  Lite models have no SE (``use_se=False``).

``tests/test_networks.py`` rebuilds each model (random init) and counts its
Conv2d/Linear modules on the main path to check :data:`CONV_LINEAR_DEPTHS`.
"""

from __future__ import annotations

#: Rule ops (conv, linear, residual join, average pool, attention sum, and the
#: elementwise affine maps of unfoldable normalisations) on the longest relevance
#: path: the depth for which Lemma 7/8 hold on these DAGs, with the engine's
#: default ``Conventions(normalisation="affine")``.
#: resnet50 = 49 conv + 16 joins + pool + fc; efficientnet_v2_s = 110 conv +
#: 35 joins + pool + fc; swin_v2_t = 65 below + 24 joins + pool + 29 LayerNorms
#: (statistics constant: ``s*z + c``, the rule applied); efficientnet-lite0 =
#: 49 conv + 9 joins + pool + fc.  (All BatchNorms of the CNNs fold.)
NETWORK_DEPTHS: dict[str, int] = {
    "resnet50": 67,
    "efficientnet_v2_s": 147,
    "swin_v2_t": 119,
    "efficientnet-lite0": 60,
}

#: The same with ``normalisation="pass"`` (LayerNorm copies relevance through and
#: is not a rule op): only Swin changes.
NETWORK_DEPTHS_NORMALISATION_PASS: dict[str, int] = {**NETWORK_DEPTHS, "swin_v2_t": 90}

#: Convolutions and linear layers on the main path (a chain reading; undercounts).
CONV_LINEAR_DEPTHS: dict[str, int] = {
    "resnet50": 50,
    "efficientnet_v2_s": 111,
    "swin_v2_t": 65,
    "efficientnet-lite0": 50,
}

#: The same, counting the squeeze-and-excitation gate convolutions (gradient path).
NETWORK_DEPTHS_WITH_GATES: dict[str, int] = {
    "resnet50": 50,
    "efficientnet_v2_s": 171,
    "swin_v2_t": 65,
    "efficientnet-lite0": 50,
}

#: Input size of the paper's experiments (ImageNet-style, 224 x 224 pixels).
INPUT_PIXELS: int = 224 * 224
