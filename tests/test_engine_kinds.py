"""The node-kind table and what it newly covers: build-time errors, user code
written the common way, elementwise affine maps, gates, attention, the
combined-weight budget."""

from __future__ import annotations

import copy

import pytest

torch = pytest.importorskip("torch")
nn = torch.nn
F = torch.nn.functional

from boundcheck.errors import InputError  # noqa: E402
from boundcheck.rules import Conventions, lrp_adaptive_beta, lrp_beta, lrp_epsilon, lrp_gamma  # noqa: E402
from empirical.engine import Explainer, UnsupportedModuleError  # noqa: E402
from empirical.engine.kinds import KINDS, LRP_OP_KINDS  # noqa: E402

pytestmark = pytest.mark.torch

BIAS = Conventions(bias="backward")


class LeNet(nn.Module):
    """A user's CNN written the common way (functional ops, ``x.view``)."""

    def __init__(self):
        super().__init__()
        self.conv1, self.conv2 = nn.Conv2d(3, 6, 5), nn.Conv2d(6, 16, 5)
        self.fc1, self.fc2 = nn.Linear(16 * 5 * 5, 32), nn.Linear(32, 10)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        x = x.view(x.size(0), -1)
        return self.fc2(F.relu(self.fc1(x)))


class Gated(nn.Module):
    """A gate written with tensor ops, a layer scale, an unfoldable BatchNorm and a LayerNorm."""

    def __init__(self):
        super().__init__()
        self.conv, self.gate = nn.Conv2d(3, 4, 3, padding="same"), nn.Conv2d(4, 4, 1)
        self.scale = nn.Parameter(torch.rand(4, 1, 1) + 0.5)
        self.bn = nn.BatchNorm2d(4)
        self.ln = nn.LayerNorm(4)
        self.fc = nn.Linear(4, 3)

    def forward(self, x):
        h = self.conv(x)
        h = h * torch.sigmoid(self.gate(h))
        h = self.bn(self.scale * h + h)
        h = F.relu(h).mean((2, 3))
        return self.fc(self.ln(h) * 0.5 - 1.0)


def _randomise_bn(model, seed=0):
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.rand(m.num_features, generator=g) - 0.5)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
    return model.eval()


def _lrp0_vs_gradient_x_input(model, x):
    ex = Explainer(model, conventions=BIAS, dtype=torch.float64)
    lrp0 = ex.attribute(x, "lrp_zero", init="logit", reduce="none").maps["lrp_zero"]
    gxi = ex.attribute(x, "gradient_x_input", reduce="none").maps["gradient_x_input"]
    return float((lrp0 - gxi).norm() / gxi.norm())


def test_every_kind_the_planner_produces_is_in_the_table():
    model = _randomise_bn(Gated())
    ex = Explainer(model, dtype=torch.float64)
    kinds = set(ex._kinds.values())
    assert kinds <= set(KINDS)
    assert {"diag", "gate", "conv", "linear", "avgpool", "pass"} <= kinds
    assert LRP_OP_KINDS <= set(KINDS)
    assert all(KINDS[k].treatment in ("affine", "attention") and KINDS[k].depth == 1 for k in LRP_OP_KINDS)


def test_lenet_with_view_runs_in_channels_last_and_lrp0_equals_gradient_x_input():
    torch.manual_seed(0)
    model = LeNet().eval()
    x = torch.randn(2, 3, 32, 32, dtype=torch.float64)
    for cl in (True, False):
        ex = Explainer(model, dtype=torch.float64, channels_last=cl, conventions=BIAS)
        a = ex.attribute(x, ["gradient", "lrp_zero", "lrp_beta_1"], init="logit")
        assert all(torch.isfinite(v).all() for v in a.maps.values())
    assert _lrp0_vs_gradient_x_input(model, x) < 1e-12


def test_user_model_is_never_modified():
    torch.manual_seed(0)
    model = _randomise_bn(Gated())
    before = copy.deepcopy(model.state_dict())
    pad = model.conv.padding
    Explainer(model, dtype=torch.float64).attribute(torch.randn(1, 3, 8, 8), ["lrp_beta_1", "gradient"])
    assert model.conv.padding == pad == "same"
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_unfoldable_bn_layer_scale_and_constants_are_affine_layers():
    """With normalisation='affine' the identity LRP-0 = x * modified gradient holds; the
    modified gradient holds the gate and the LayerNorm statistics constant."""
    torch.manual_seed(1)
    model = _randomise_bn(Gated()).double()
    x = torch.randn(2, 3, 8, 8, dtype=torch.float64)
    ex = Explainer(model, conventions=BIAS, dtype=torch.float64)
    assert [ex._kinds[n] for n in ex._nodes].count("diag") == 5  # scale*h, bn, ln, *0.5, -1.0
    lrp0 = ex.attribute(x, "lrp_zero", init="logit", reduce="none").maps["lrp_zero"]

    xg = x.clone().requires_grad_(True)
    h = model.conv(xg)
    h = h * torch.sigmoid(model.gate(h)).detach()
    h = model.bn(model.scale * h + h)
    h = F.relu(h).mean((2, 3))
    mu, var = h.mean(-1, keepdim=True).detach(), h.var(-1, unbiased=False, keepdim=True).detach()
    ln = (h - mu) / torch.sqrt(var + model.ln.eps) * model.ln.weight + model.ln.bias
    out = model.fc(ln * 0.5 - 1.0)
    t = out.argmax(1)
    (g,) = torch.autograd.grad(out.gather(1, t[:, None]).sum(), xg)
    ref = x * g
    assert float((lrp0 - ref).norm() / ref.norm()) < 1e-10


def test_normalisation_pass_copies_relevance_through():
    torch.manual_seed(2)
    model = _randomise_bn(Gated()).double()
    x = torch.randn(1, 3, 8, 8, dtype=torch.float64)
    ex = Explainer(model, conventions=Conventions(normalisation="pass"), dtype=torch.float64)
    assert "diag" not in set(ex._kinds.values())
    a = ex.attribute(x, ["lrp_beta_1"], record=True)
    recs = {r.node: r for r in a.records["lrp_beta_1"]}
    bn = recs["bn"]
    assert float(bn.relevance_in_pos) == pytest.approx(float(bn.relevance_out_pos), rel=1e-12)
    with pytest.raises(InputError, match="normalisation"):
        Conventions(normalisation="fold")


def test_unsupported_operation_is_named_with_its_module_path_at_build_time():
    class Square(nn.Module):
        def __init__(self):
            super().__init__()
            self.inner = nn.Sequential(nn.Linear(4, 4))

        def forward(self, x):
            h = self.inner(x)
            return h / h.exp().sum(-1, keepdim=True) + h.exp()  # exp in a held divisor needs no treatment

    class Holder(nn.Module):
        def __init__(self):
            super().__init__()
            self.block = Square()

        def forward(self, x):
            return self.block(x)

    with pytest.raises(UnsupportedModuleError) as exc:
        Explainer(Holder())
    msg = str(exc.value)
    assert "block" in msg and "'exp'" in msg and "\n" not in msg

    class Lstm(nn.Module):
        def __init__(self):
            super().__init__()
            self.rnn = nn.LSTM(4, 4)

        def forward(self, x):
            return self.rnn(x)[0]

    with pytest.raises(UnsupportedModuleError, match="'rnn' of type LSTM"):
        Explainer(Lstm())


def test_softmax_weighted_sum_is_affine_in_the_values():
    class Attn(nn.Module):
        def __init__(self):
            super().__init__()
            self.qkv = nn.Linear(6, 18)
            self.out = nn.Linear(6, 3)

        def forward(self, x):
            q, k, v = self.qkv(x).chunk(3, dim=-1)
            a = torch.softmax(torch.einsum("bid,bjd->bij", q, k) / 2.0, dim=-1)
            return self.out(torch.einsum("bij,bjd->bid", a, v).mean(1))

    torch.manual_seed(3)
    model = Attn().double().eval()
    x = torch.randn(2, 5, 6, dtype=torch.float64)
    ex = Explainer(model, conventions=BIAS, dtype=torch.float64)
    kinds = [ex._kinds[n] for n in ex._nodes]
    assert "attnsum" in kinds and "weights" in kinds
    lrp0 = ex.attribute(x, "lrp_zero", init="logit", reduce="none").maps["lrp_zero"]
    xg = x.clone().requires_grad_(True)
    q, k, v = model.qkv(xg).chunk(3, dim=-1)
    a = torch.softmax(torch.einsum("bid,bjd->bij", q, k) / 2.0, dim=-1).detach()
    out = model.out(torch.einsum("bij,bjd->bid", a, v).mean(1))
    (g,) = torch.autograd.grad(out.gather(1, out.argmax(1)[:, None]).sum(), xg)
    assert float((lrp0 - x * g).norm() / (x * g).norm()) < 1e-10


@pytest.mark.parametrize("cl", [False, True])
def test_weight_budget_does_not_change_the_maps(cl):
    """Beyond the combined-weight budget the terms are folded into the ratios and
    transposed with [W+; W-]: the same maps, no extra weight copy."""
    torch.manual_seed(4)
    net = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.SiLU(), nn.Conv2d(8, 8, 3, padding=1, groups=2), nn.GELU(),
        nn.Conv2d(8, 6, 1), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(6, 5), nn.Tanh(), nn.Linear(5, 4),
    )
    x = torch.randn(3, 3, 8, 8, dtype=torch.float64)
    rules = ["lrp_beta_0", "lrp_beta_1", "lrp_gamma_100", "lrp_epsilon_0.01", "adaptive_beta", "lrp_zero"]
    full = Explainer(net, dtype=torch.float64, channels_last=cl, weight_cache_bytes=None)
    none = Explainer(net, dtype=torch.float64, channels_last=cl, weight_cache_bytes=0)
    a, b = full.attribute(x, rules), none.attribute(x, rules)
    assert full.weight_cache.used > 0
    assert none.weight_cache.used == sum(  # nothing is kept beyond a zero budget
        w.numel() * w.element_size() for p in none.plan.plans.values() if p.op is not None and hasattr(p.op, "_cache")
        for w in p.op._cache.values())
    for m in rules:
        assert torch.allclose(a.maps[m], b.maps[m], rtol=1e-10, atol=1e-13), m
    with pytest.raises(InputError, match="weight_cache_bytes"):
        Explainer(net, weight_cache_bytes=-1)


def test_rules_objects_for_reference():
    # the rules used above exist under these names (guards the string lists)
    names = {lrp_beta(0).name, lrp_beta(1).name, lrp_gamma(100).name, lrp_epsilon(0.01).name, lrp_adaptive_beta().name}
    assert names == {"lrp_beta_0", "lrp_beta_1", "lrp_gamma_100", "lrp_epsilon_0.01", "adaptive_beta"}


def test_batchnorm_before_an_unpadded_convolution_is_folded_into_it():
    net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.BatchNorm2d(4), nn.Conv2d(4, 5, 1),
                        nn.ReLU(), nn.BatchNorm2d(5), nn.Conv2d(5, 2, 3, padding=1),
                        nn.AdaptiveAvgPool2d(1), nn.Flatten())
    _randomise_bn(net, seed=5)
    ex = Explainer(net, conventions=BIAS, dtype=torch.float64)
    kinds = [ex._kinds[n] for n in ex._nodes]
    assert kinds.count("diag") == 1  # the first BN folds into the 1x1 conv; the second (padded conv) stays
    x = torch.randn(2, 3, 6, 6, dtype=torch.float64)
    assert torch.allclose(ex.logits(x), net.double()(x), rtol=1e-12, atol=1e-12)
    assert _lrp0_vs_gradient_x_input(net, x) < 1e-10


def test_untraceable_model_is_one_line():
    class Branchy(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(4, 2)

        def forward(self, x):
            if x.sum() > 0:  # data-dependent control flow
                return self.fc(x)
            return -self.fc(x)

    with pytest.raises(UnsupportedModuleError) as exc:
        Explainer(Branchy())
    assert "cannot be traced" in str(exc.value) and "\n" not in str(exc.value)


@pytest.mark.parametrize("reduce", ["sum", "mean"])
def test_sum_or_mean_over_a_stack_of_heads_is_a_residual_sum(reduce):
    """``torch.stack([h1, h2]).sum(0)`` / ``torch.mean(torch.stack(...), dim=0)`` (LeViT's,
    CrossViT's classifier heads) are rewritten into ``h1 + h2`` (``/ 2``): the stacking
    axis is not the batch axis, so a batch of 3 gets 3 maps, LRP-0 == gradient x input."""

    class Heads(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Linear(6, 4), nn.Linear(6, 4)

        def forward(self, x):
            s = torch.stack([self.a(x), self.b(torch.relu(x))], dim=0)
            return s.sum(0) if reduce == "sum" else torch.mean(s, dim=0)

    torch.manual_seed(7)
    model = Heads().double()
    x = torch.randn(3, 6, dtype=torch.float64)
    ex = Explainer(model, conventions=Conventions(bias="backward"), dtype=torch.float64)
    kinds = [p.kind for p in ex.plan.plans.values()]
    assert "add" in kinds and kinds.count("diag") == (reduce == "mean")
    res = ex.attribute(x, ["lrp_zero"], init="logit", reduce="none")
    assert res.maps["lrp_zero"].shape == x.shape
    assert torch.allclose(res.logits, model(x), rtol=1e-12)
    xg = x.clone().requires_grad_(True)
    out = model(xg)
    (g,) = torch.autograd.grad(out.gather(1, res.target[:, None]).sum(), xg)
    assert float((res.maps["lrp_zero"] - x * g).norm() / (x * g).norm()) < 1e-10
