"""What the engine keeps in memory: the canonical copy shares the caller's unchanged
weights (never writing into them), and ``[W+; W-]`` / the combined weights are kept
only within ``Explainer(weight_cache_bytes=...)``; beyond it they are built per call,
block by block, with the same maps (``benchmarks/bench_memory.py`` measures the peaks)."""

from __future__ import annotations

import copy

import pytest

torch = pytest.importorskip("torch")
nn = torch.nn

from empirical.engine import Explainer  # noqa: E402
from empirical.engine import ops  # noqa: E402

pytestmark = pytest.mark.torch

RULES = ["lrp_beta_0", "lrp_beta_1", "lrp_gamma_100", "lrp_epsilon_0.01", "adaptive_beta", "lrp_zero"]


def _net():
    torch.manual_seed(4)
    net = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.SiLU(), nn.Conv2d(8, 8, 3, padding=1, groups=2),
        nn.GELU(), nn.Conv2d(8, 6, 1), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(6, 5), nn.Tanh(),
        nn.Linear(5, 4),
    ).double().eval()
    with torch.no_grad():
        net[1].running_mean.uniform_(-0.5, 0.5)
        net[1].running_var.uniform_(0.5, 1.5)
    return net


def _signed_ops(ex):
    return [p.op for p in ex.plan.plans.values() if isinstance(p.op, ops._SignedOp)]


def test_canonical_copy_shares_unchanged_weights_and_never_writes_the_callers():
    net = _net()
    before = copy.deepcopy(net.state_dict())
    grads = [p.requires_grad for p in net.parameters()]
    ex = Explainer(net, dtype=torch.float64, channels_last=False)
    ex.attribute(torch.randn(1, 3, 6, 6, dtype=torch.float64), RULES + ["gradient"])
    shared = {p.data_ptr() for p in ex.gm.parameters()}
    assert net[8].weight.data_ptr() in shared and net[10].weight.data_ptr() in shared  # linear: unchanged
    assert net[5].weight.data_ptr() in shared
    assert net[0].weight.data_ptr() not in shared  # folded with the BatchNorm: a new tensor
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())
    assert [p.requires_grad for p in net.parameters()] == grads
    # a conversion (dtype, channels-last) copies, and leaves the caller's tensors as they were
    net32 = _net().float()
    ex = Explainer(net32, dtype=torch.float64, channels_last=True)
    assert all(p.dtype == torch.float32 for p in net32.parameters())
    assert all(p.dtype == torch.float64 for p in ex.gm.parameters())


@pytest.mark.parametrize("cl", [False, True])
def test_sign_split_weights_built_per_call_in_blocks_give_the_same_maps(cl, monkeypatch):
    """Budget 0: no [W+; W-] and no combined weight is stored (grouped convolutions included);
    with blocks of one output channel the maps equal the fully stored ones to 1e-12."""
    net = _net()
    x = torch.randn(3, 3, 8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    full = Explainer(net, dtype=torch.float64, channels_last=cl, weight_cache_bytes=None)
    a = full.attribute(x, RULES)
    assert all(op._w2 is not None or op.groups != 1 for op in _signed_ops(full) if hasattr(op, "groups"))
    assert all(op._w2 is not None for op in _signed_ops(full) if isinstance(op, ops.LinearOp))
    monkeypatch.setattr(ops, "SIGN_SPLIT_BLOCK_BYTES", 1)  # one output channel per block
    none = Explainer(net, dtype=torch.float64, channels_last=cl, weight_cache_bytes=0)
    b = none.attribute(x, RULES)
    assert all(op._w2 is None and not op._cache for op in _signed_ops(none))
    assert none.weight_cache.used == 0
    for m in RULES:
        rel = float((a.maps[m] - b.maps[m]).norm() / a.maps[m].norm())
        assert rel <= 1e-12, (m, rel)


def test_the_budget_counts_the_sign_split_weights():
    net = _net()
    ex = Explainer(net, dtype=torch.float64, weight_cache_bytes=None)
    ex.attribute(torch.randn(1, 3, 6, 6, dtype=torch.float64), ["lrp_beta_0"])
    stored = sum(2 * op.W.numel() * op.W.element_size() for op in _signed_ops(ex))
    cached = sum(w.numel() * w.element_size() for op in _signed_ops(ex) for w in op._cache.values())
    assert ex.weight_cache.used == stored + cached


def test_auto_budget_counts_the_canonical_copys_own_tensors():
    # BatchNorm folding makes new convolution weights; the unchanged linear layer is shared
    import torch.nn as nn

    from empirical.engine.explainer import AUTO_CACHE_FLOOR, _own_bytes

    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 3))
    net = net.double().eval()
    ex = Explainer(net, dtype=torch.float64, channels_last=False)
    own = _own_bytes(ex.gm, net)
    folded = (4 * 3 * 3 * 3 + 4) * 8  # the folded convolution's weight and bias
    assert own == folded
    assert ex.weight_cache.limit == AUTO_CACHE_FLOOR - folded
    assert Explainer(net, dtype=torch.float64, weight_cache_bytes=1234).weight_cache.limit == 1234


def test_float64_convolutions_unfold_in_blocks_of_samples_with_the_same_maps(monkeypatch):
    # no oneDNN kernel for float64 on the CPU: the unfolded input (im2col) is allocated for the whole
    # batch, so the explicit path convolves a few samples at a time
    net = _net()
    x = torch.randn(5, 3, 12, 12, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    ex = Explainer(net, dtype=torch.float64)
    whole = ex.attribute(x, RULES, path="explicit").maps
    calls = []
    raw = ops.ConvOp._conv_raw

    def spy(self, z, W):
        calls.append(z.shape[0])
        return raw(self, z, W)
    monkeypatch.setattr(ops.ConvOp, "_conv_raw", spy)
    monkeypatch.setattr(ops, "UNFOLD_BLOCK_BYTES", 1)  # one sample per call
    blocks = ex.attribute(x, RULES, path="explicit").maps
    assert calls and max(calls) == 1
    for k in whole:
        assert torch.equal(whole[k], blocks[k]), k


def _low_memory_pair(net, **kw):
    """The default and the low-memory explainer (each with its own default weight budget)."""
    return Explainer(net, dtype=torch.float64, **kw), Explainer(net, dtype=torch.float64, low_memory=True, **kw)


def _close(a, b, tol=1e-12):
    return float((a - b).norm()) <= tol * max(float(a.norm()), 1e-300)


@pytest.mark.parametrize("record", [False, True])
def test_low_memory_computes_the_sign_parts_in_the_backward_pass_with_the_same_maps(record):
    """Mixed-sign inputs (the image, after SiLU/GELU/Tanh), a grouped convolution, adaptive β:
    the maps and the layer records of ``low_memory=True`` equal the default's to rounding
    (its forward pass evaluates the layers as the model does, not as sums of sign parts)."""
    net = _net()
    x = torch.randn(3, 3, 8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(6))
    fast, low = _low_memory_pair(net)
    a = fast.attribute(x, RULES, path="explicit", record=record)
    b = low.attribute(x, RULES, path="explicit", record=record)
    for m in RULES:
        assert _close(a.maps[m], b.maps[m]), m
    if record:
        for m in RULES:
            for ra, rb in zip(a.records[m], b.records[m], strict=True):
                assert ra.node == rb.node
                for f in ("relevance_out_pos", "relevance_out_neg", "relevance_in_pos", "relevance_in_neg"):
                    assert _close(getattr(ra, f), getattr(rb, f)), (ra.node, f)
                for sa, sb in ((ra.pos_sum, rb.pos_sum), (ra.neg_sum, rb.neg_sum)):
                    assert (sa is None) == (sb is None) and (sa is None or _close(sa, sb))


def test_low_memory_stores_no_sign_parts_and_rebuilds_residual_summands_from_their_parts():
    import torchvision

    from empirical.engine.explainer import _FROM_PARTS, _Recompute

    model = torchvision.models.resnet18(weights=None).eval()
    fast, low = _low_memory_pair(model)
    x = low._input(torch.randn(2, 3, 64, 64, dtype=torch.float64, generator=torch.Generator().manual_seed(7)))
    env, store = low._lrp_forward(x)
    affine = [n for n in low._nodes if low._kinds[n] in ("conv", "linear")]
    assert affine and all(isinstance(store[n], _Recompute) for n in affine)
    assert sum(v is _FROM_PARTS for v in env.values()) == 8 + 3  # rebuilt from recomputed parts
    # each layer's entry is its input itself (no clamped copy, no output): with every value kept
    # to the end, the very tensor the forward pass computed for the layer's operand
    low._release, low._rebuild = {}, {}
    env, store = low._lrp_forward(x)
    for n in affine:
        assert store[n].z is env[n.args[low._plans[n].operand]], n
    assert [n.name for n in affine if not store[n].nonneg] == [affine[0].name]  # the image only
    low._use_graph((low.gm, low.plan))
    rules = ["lrp_beta_0", "lrp_beta_1", "lrp_gamma_100", "lrp_gamma_1000"]
    a, b = fast.attribute(x, rules, path="explicit").maps, low.attribute(x, rules, path="explicit").maps
    for m in rules:
        assert _close(a[m], b[m]), m


def test_low_memory_auto_budget_has_no_floor_and_the_flag_is_checked():
    from boundcheck.errors import InputError
    from empirical.engine.explainer import _own_bytes

    net = _net()
    ex = Explainer(net, dtype=torch.float64, low_memory=True, channels_last=False)
    weights = sum(p.numel() for p in net.parameters()) * 8
    assert ex.weight_cache.limit == weights - _own_bytes(ex.gm, net)
    with pytest.raises(InputError, match="low_memory must be True or False"):
        Explainer(net, dtype=torch.float64, low_memory="yes")
