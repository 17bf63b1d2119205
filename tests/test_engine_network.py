"""Network level exactness of the torch engine on small random ReLU MLPs (float64).

* LRP maps equal ``boundcheck.rules.chained_attribution`` ([P1] eq. (14)) for every rule
  and conventions variant; gradients equal ``chained_gradient``.
* Conservation (map sum == sum q) for LRP-gamma / LRP-0 / LRP-beta when every neuron
  has contributions of both signs.
* No NaN/Inf on degenerate layers (all-zero input, rows without positive or without
  negative contributions) under the default ``zero_denominator="zero"``.
"""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
import torch.nn as nn  # noqa: E402

from boundcheck.errors import InputError  # noqa: E402
from boundcheck.rules import Conventions, chained_attribution, chained_gradient, parse_rule  # noqa: E402
from empirical.engine import PAPER_METHODS, Explainer, UnsupportedModuleError, parse_method  # noqa: E402

pytestmark = pytest.mark.torch
torch.set_num_threads(2)

RULES = ["lrp_beta_0", "lrp_beta_1", "lrp_beta_0.5", "lrp_gamma_0.25", "lrp_gamma_100", "lrp_gamma_1000",
         "lrp_zero", "lrp_epsilon_0.01", "adaptive_beta"]


def _mlp(sizes, seed):
    torch.manual_seed(seed)
    layers = []
    for i in range(len(sizes) - 1):
        layers.append(nn.Linear(sizes[i], sizes[i + 1]).double())
        if i < len(sizes) - 2:
            layers.append(nn.ReLU())
    model = nn.Sequential(*layers)
    lin = [(m.weight.detach().numpy().copy(), m.bias.detach().numpy().copy()) for m in model if isinstance(m, nn.Linear)]
    return model, lin


def _q(K, B, seed):
    g = np.random.default_rng(seed)
    q = g.random((B, K)) + 0.01
    return q / q.sum(1, keepdims=True)


@pytest.mark.parametrize("conventions", [Conventions(), Conventions(bias="backward"), Conventions(stabiliser=1e-4)],
                         ids=["default", "bias_backward", "stabiliser"])
@pytest.mark.parametrize("seed", [0, 1])
def test_lrp_equals_chained_attribution(conventions, seed):
    model, lin = _mlp([6, 8, 7, 4], seed)
    x = torch.randn(3, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))
    q = _q(4, 3, seed)
    att = Explainer(model, conventions=conventions, dtype=torch.float64).attribute(x, RULES, q=torch.tensor(q))
    for name in RULES:
        for i in range(3):
            want = chained_attribution(lin, x[i].numpy(), parse_rule(name), q[i], conventions)
            np.testing.assert_allclose(att.maps[name][i].numpy(), want, rtol=1e-9, atol=1e-12, err_msg=name)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_gradient_equals_chained_gradient(seed):
    model, lin = _mlp([5, 9, 6, 3], seed)
    x = torch.randn(2, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))
    q = _q(3, 2, seed)
    att = Explainer(model, dtype=torch.float64).attribute(x, ["gradient", "gradient_x_input", "squared_gradient"],
                                                          q=torch.tensor(q))
    for i in range(2):
        g = chained_gradient(lin, x[i].numpy(), q[i])
        np.testing.assert_allclose(att.maps["gradient"][i].numpy(), g, rtol=1e-10, atol=1e-13)
        np.testing.assert_allclose(att.maps["gradient_x_input"][i].numpy(), g * x[i].numpy(), rtol=1e-10, atol=1e-13)
        np.testing.assert_allclose(att.maps["squared_gradient"][i].numpy(), g * g, rtol=1e-10, atol=1e-13)


def _both_signs_model(seed):
    """Every neuron has positive and negative contributions: inputs > 0, both weight signs per row,
    biases chosen so every hidden unit is active (positive pre-activation)."""
    torch.manual_seed(seed)
    l1, l2, l3 = nn.Linear(6, 8).double(), nn.Linear(8, 8).double(), nn.Linear(8, 3).double()
    with torch.no_grad():
        for lin in (l1, l2, l3):
            w = lin.weight.abs() + 0.1
            w[:, ::2] *= -0.5  # every row: both signs
            lin.weight.copy_(w)
            lin.bias.fill_(5.0)
    return nn.Sequential(l1, nn.ReLU(), l2, nn.ReLU(), l3)


@pytest.mark.parametrize("rule", ["lrp_gamma_0.25", "lrp_gamma_100", "lrp_zero", "lrp_beta_0", "lrp_beta_1"])
def test_conservation_when_every_neuron_has_both_signs(rule):
    model = _both_signs_model(3)
    x = torch.rand(2, 6, dtype=torch.float64) + 0.5
    with torch.no_grad():
        h = model[:4](x)
    assert bool((h > 0).all())
    q = torch.tensor(_q(3, 2, 3))
    att = Explainer(model, dtype=torch.float64).attribute(x, rule, q=q)
    np.testing.assert_allclose(att.maps[rule].sum(1).numpy(), q.sum(1).numpy(), rtol=1e-10)


def test_no_nan_on_degenerate_layers():
    """All-zero input, rows with no positive / no negative contributions: finite maps."""
    torch.manual_seed(0)
    l1, l2 = nn.Linear(4, 5).double(), nn.Linear(5, 3).double()
    with torch.no_grad():
        l1.weight[0] = torch.tensor([1.0, 2.0, 0.5, 1.0])      # no negative contributions for x >= 0
        l1.weight[1] = -torch.tensor([1.0, 2.0, 0.5, 1.0])     # no positive contributions
        l1.weight[2].zero_()                                    # nothing at all
    model = nn.Sequential(l1, nn.ReLU(), l2)
    e = Explainer(model, dtype=torch.float64)
    for x in (torch.zeros(1, 4, dtype=torch.float64), torch.tensor([[1.0, 0.5, 2.0, 0.0]], dtype=torch.float64)):
        att = e.attribute(x, RULES + ["gradient", "integrated_gradients"], record=True)
        for name, m in att.maps.items():
            assert bool(torch.isfinite(m).all()), name


def test_records_depth_and_sums():
    model, lin = _mlp([6, 8, 7, 4], 5)
    x = torch.randn(2, 6, dtype=torch.float64)
    att = Explainer(model, dtype=torch.float64).attribute(x, ["lrp_beta_1", "lrp_gamma_100"], record=True)
    recs = att.records["lrp_beta_1"]
    linear = [r for r in recs if r.kind == "linear"]
    assert [r.depth for r in linear] == [0, 1, 2]
    W, b = lin[-1]
    with torch.no_grad():
        z = model[:4](x).numpy()
    y = W[None] * z[:, None, :]
    np.testing.assert_allclose(linear[0].pos_sum.numpy(), np.clip(y, 0, None).sum(-1), rtol=1e-12)
    np.testing.assert_allclose(linear[0].neg_sum.numpy(), np.clip(y, None, 0).sum(-1), rtol=1e-12)
    # relevance arriving at the output is q = one-hot
    np.testing.assert_allclose(linear[0].relevance_out_pos.numpy(), [1.0, 1.0])
    total = att.maps["lrp_beta_1"].sum(1)
    np.testing.assert_allclose((linear[-1].relevance_in_pos + linear[-1].relevance_in_neg).numpy(), total.numpy())


def test_input_validation():
    model, _ = _mlp([3, 4, 2], 0)
    e = Explainer(model, dtype=torch.float64)
    x = torch.randn(2, 3, dtype=torch.float64)
    with pytest.raises(InputError, match="lrp_foo"):
        e.attribute(x, "lrp_foo")
    with pytest.raises(InputError, match="q"):
        e.attribute(x, "lrp_beta_1", q=torch.tensor([[0.5, 0.6], [1.0, 0.0]]))
    with pytest.raises(InputError, match="q"):
        e.attribute(x, "lrp_beta_1", q=torch.tensor([[-0.5, 1.5], [1.0, 0.0]]))
    with pytest.raises(InputError, match="target"):
        e.attribute(x, "gradient", target=5)
    assert parse_method("integrated_gradients_8") == ("integrated_gradients", 8)
    assert all(parse_method(m) for m in PAPER_METHODS)


def test_unsupported_module_is_named():
    model = nn.Sequential(nn.Linear(3, 4), nn.LSTM(4, 4))
    with pytest.raises(UnsupportedModuleError, match=r"'1' of type LSTM"):
        Explainer(model)
    assert issubclass(UnsupportedModuleError, InputError)
