"""Check boundcheck.networks.NETWORK_DEPTHS against the architectures themselves (weights=None, meta device).

Counting rule (see the module docstring of boundcheck.networks): the longest
relevance path runs through every main-branch affine layer, so ``n`` is the
number of Conv2d/Linear modules *not* inside a shortcut projection
(``downsample``), a squeeze-and-excitation gate or Swin's position-bias MLP
(``cpb_mlp``), plus one attention-weighted sum ``A v`` per Swin attention block.
Every such module is on one sequential chain (blocks are applied one after
another, and within a block the counted layers are applied in sequence), so the
count is the path length.
"""

from __future__ import annotations

import pytest

from boundcheck.networks import CONV_LINEAR_DEPTHS, NETWORK_DEPTHS, NETWORK_DEPTHS_WITH_GATES

torch = pytest.importorskip("torch")
tvm = pytest.importorskip("torchvision.models")

pytestmark = pytest.mark.torch


def _build(factory, *args, **kwargs):
    # parameters on the "meta" device: the module structure without the cost of random init
    with torch.device("meta"):
        return factory(*args, **kwargs)


def _count(model, excluded_parents=(), excluded_types=()):
    nn = torch.nn
    n = 0
    for name, module in model.named_modules():
        if not isinstance(module, (nn.Conv2d, nn.Linear)):
            continue
        parts = name.split(".")
        if any(p in excluded_parents for p in parts):
            continue
        prefixes = [".".join(parts[:i]) for i in range(1, len(parts))]
        if any(isinstance(model.get_submodule(p), excluded_types) for p in prefixes):
            continue
        n += 1
    return n


def test_resnet50_depth():
    model = _build(tvm.resnet50, weights=None)
    assert _count(model, excluded_parents=("downsample",)) == CONV_LINEAR_DEPTHS["resnet50"] == 50


def test_efficientnet_v2_s_depth():
    from torchvision.ops.misc import SqueezeExcitation

    model = _build(tvm.efficientnet_v2_s, weights=None)
    assert _count(model, excluded_types=(SqueezeExcitation,)) == CONV_LINEAR_DEPTHS["efficientnet_v2_s"] == 111
    assert _count(model) == NETWORK_DEPTHS_WITH_GATES["efficientnet_v2_s"] == 171


def test_swin_v2_t_depth():
    from torchvision.models.swin_transformer import ShiftedWindowAttentionV2

    model = _build(tvm.swin_v2_t, weights=None)
    attention_blocks = sum(isinstance(m, ShiftedWindowAttentionV2) for m in model.modules())
    assert attention_blocks == 12
    assert _count(model, excluded_parents=("cpb_mlp",)) + attention_blocks == CONV_LINEAR_DEPTHS["swin_v2_t"] == 65


def test_efficientnet_lite0_depth():
    lite = pytest.importorskip("efficientnet_lite_pytorch")
    model = _build(lite.EfficientNet.from_name, "efficientnet-lite0")
    assert _count(model) == CONV_LINEAR_DEPTHS["efficientnet-lite0"] == 50


@pytest.mark.parametrize("name", ["resnet50", "efficientnet_v2_s", "swin_v2_t", "efficientnet-lite0"])
def test_network_depths_equal_traced_longest_rule_path(name):
    """NETWORK_DEPTHS is the longest relevance path of rule ops on the traced graph
    (the depth for which the DAG form of Lemma 7/8 in empirical.audit.depth holds)."""
    from empirical.audit.depth import torch_network_depth

    if name == "efficientnet-lite0":
        lite = pytest.importorskip("efficientnet_lite_pytorch")
        model = _build(lite.EfficientNet.from_name, "efficientnet-lite0")
    else:
        model = _build(getattr(tvm, name), weights=None)
    depth = torch_network_depth(model)
    assert depth.n == NETWORK_DEPTHS[name]
    from boundcheck.networks import NETWORK_DEPTHS_NORMALISATION_PASS
    from boundcheck.rules import Conventions

    assert torch_network_depth(model, Conventions(normalisation="pass")).n == NETWORK_DEPTHS_NORMALISATION_PASS[name]
