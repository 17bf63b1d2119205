"""Top-down cascading randomisation schedules of [P2] A.1 (random-init models, no weights needed)."""

import pytest

torch = pytest.importorskip("torch")
torchvision = pytest.importorskip("torchvision")

from boundcheck.errors import InputError  # noqa: E402
from empirical.sanity.schedules import build_schedule, detect_architecture, parametrised_modules  # noqa: E402


def _check_nested(steps):
    seen = set()
    for k, s in enumerate(steps):
        assert s.index == k
        assert not (set(s.new) & seen), "a module randomised twice"
        seen |= set(s.new)
        assert s.cumulative == frozenset(seen)
        assert s.new[-1] == s.marker
        if k:
            assert steps[k - 1].cumulative < s.cumulative


def _top_down(model, steps):
    order = [n for n, _ in parametrised_modules(model)]
    flat = [n for s in steps for n in s.new]
    # the cumulative set after the last step is a suffix of the registration order, walked backwards
    assert flat == list(reversed(order[len(order) - len(flat):]))


def test_resnet50_schedule():
    m = torchvision.models.resnet50()
    steps = build_schedule(m)
    assert detect_architecture(m) == "resnet50"
    assert len(steps) == 17  # fc + 16 .conv1
    assert steps[0].new == ("fc",)
    assert steps[1].new == ("layer4.2.bn3", "layer4.2.conv3", "layer4.2.bn2", "layer4.2.conv2",
                            "layer4.2.bn1", "layer4.2.conv1")
    assert "layer4.0.downsample.0" in steps[3].new and steps[3].marker == "layer4.0.conv1"
    assert steps[-1].marker == "layer1.0.conv1"
    assert sum(n.endswith(".conv1") for n in steps[-1].cumulative) == 16
    assert "conv1" not in steps[-1].cumulative and "bn1" not in steps[-1].cumulative
    _check_nested(steps)
    _top_down(m, steps)
    assert len(build_schedule(m, max_steps=5)) == 5


def test_densenet121_schedule_every_third_conv1():
    m = torchvision.models.densenet121()
    steps = build_schedule(m)
    n_conv1 = sum(1 for n, _ in m.named_modules() if n.endswith(".conv1"))
    assert n_conv1 == 58  # fewer than the 63 of [P2] A.1: the schedule randomises all of them
    assert len(steps) == 1 + 20  # markers 3, 6, ..., 57 and 58
    assert steps[0].new == ("classifier",)
    for s in steps[1:-1]:
        assert sum(n.endswith(".conv1") for n in s.new) == 3
    assert sum(n.endswith(".conv1") for n in steps[-1].new) == 1
    assert sum(n.endswith(".conv1") for n in steps[-1].cumulative) == 58
    _check_nested(steps)
    _top_down(m, steps)


def test_efficientnet_lite0_schedule():
    from efficientnet_lite_pytorch import EfficientNet

    m = EfficientNet.from_name("efficientnet-lite0")
    steps = build_schedule(m)
    assert detect_architecture(m) == "efficientnet-lite0"
    assert len(steps) == 17  # _fc + 16 ._depthwise_conv
    assert steps[0].new == ("_fc",)
    assert steps[1].new[:2] == ("_bn1", "_conv_head") and steps[1].marker == "_blocks.15._depthwise_conv"
    assert steps[-1].marker == "_blocks.0._depthwise_conv"
    _check_nested(steps)
    _top_down(m, steps)


def test_efficientnet_v2_s_schedule():
    m = torchvision.models.efficientnet_v2_s()
    steps = build_schedule(m)
    assert len(steps) == 41  # classifier.1 + 40 blocks
    assert steps[0].new == ("classifier.1",)
    assert steps[1].marker == "features.6.14.block.1.0"  # MBConv: depthwise
    assert steps[-1].marker == "features.1.0.block.0.0"  # FusedMBConv: fused 3x3
    mods = dict(m.named_modules())
    for s in steps[1:]:
        assert tuple(mods[s.marker].kernel_size) == (3, 3)
    _check_nested(steps)


def test_unsupported_architecture():
    with pytest.raises(InputError):
        build_schedule(torch.nn.Sequential(torch.nn.Linear(2, 2)))
    with pytest.raises(InputError):
        build_schedule(torchvision.models.resnet50(), max_steps=0)


def test_swin_v2_t_schedule_one_block_per_step():
    m = torchvision.models.swin_v2_t()
    assert detect_architecture(m) == "swin_v2_t"
    steps = build_schedule(m)
    assert len(steps) == 13  # head + 2 + 2 + 6 + 2 blocks
    assert steps[0].new == ("head",)
    assert steps[1].marker == "features.7.1.norm1" and "norm" in steps[1].new  # the final norm goes with the top block
    assert steps[-1].marker == "features.1.0.norm1"
    for s in steps[1:]:
        prefix = s.marker[: -len("norm1")]
        # the block's attention (with its position-bias MLP) and MLP are randomised in the same step
        for part in ("attn.qkv", "attn.proj", "attn.cpb_mlp.0", "norm2", "mlp.0", "mlp.3"):
            assert prefix + part in s.new, (s.marker, part)
    # patch merging goes with the block below it; the patch embedding is never reached
    assert "features.6.reduction" in steps[3].new
    assert not any(n.startswith("features.0") for n in steps[-1].cumulative)
    _check_nested(steps)
