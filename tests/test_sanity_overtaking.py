"""Overtaking probabilities of [P2] Thm 2 / Section I and non-positive fractions of Section J."""

import math

import numpy as np
import pytest
import scipy.stats

from empirical.sanity import overtaking as O


def test_quantile_grids():
    assert len(O.QUANTILES) == 18 and O.QUANTILES[0] == 0.95 and O.QUANTILES[-1] == 0.1
    assert O.Q_LOW == (0.5, 0.45, 0.4, 0.35, 0.3, 0.25, 0.2, 0.15, 0.1)


@pytest.mark.parametrize("K", [0.5, 1.0, 2.0, 7.5, 100.0])
@pytest.mark.parametrize("qh,ql", [(0.95, 0.5), (0.9, 0.1), (0.85, 0.3)])
def test_probability_matches_scipy_and_eq35(K, qh, ql):
    g = O.overtaking_gamma(qh, ql)
    assert g == pytest.approx(math.sqrt(ql / (1 - qh)))
    p = O.overtaking_probability(K, g)
    assert p == pytest.approx(1 - scipy.stats.cauchy.cdf(K, scale=g), abs=1e-14)
    # eq. (35): CDF_gamma(K) = 0.5 + arctan(K / gamma) / pi
    assert p == pytest.approx(1 - (0.5 + math.atan(K / g) / math.pi), abs=1e-14)


def test_K_policies():
    assert O.overtaking_K(4.0, 2.0) == 2.0          # positive: V(qh)/V(ql)
    assert O.overtaking_K(-0.5, -2.0) == 4.0        # negative: the inverse V(ql)/V(qh)
    assert O.overtaking_K(3.0, 0.0) == math.inf     # zeros cannot overtake
    assert math.isnan(O.overtaking_K(0.0, 0.0))
    assert O.overtaking_probability(math.inf, 1.0) == 0.0
    assert math.isnan(O.overtaking_probability(math.nan, 1.0))
    with pytest.raises(ValueError):
        O.overtaking_gamma(0.5, 0.9)


def test_table_from_mean_quantiles():
    V = np.tile(np.linspace(2.0, 0.2, 18), (2, 1))  # V(0.95)=2 ... V(0.1)=0.2
    rows = O.overtaking_table(["a#0", "b#0"], V)
    assert len(rows) == 2 * 3 * 9
    r = next(r for r in rows if r["layer"] == 1 and r["q_high"] == 0.9 and r["q_low"] == 0.3)
    vh, vl = V[1, O.QUANTILES.index(0.9)], V[1, O.QUANTILES.index(0.3)]
    assert r["K"] == pytest.approx(vh / vl)
    assert r["P"] == pytest.approx(scipy.stats.cauchy(scale=math.sqrt(0.3 / 0.1)).sf(vh / vl))


def test_statistics_on_toy_relu_net():
    torch = pytest.importorskip("torch")
    nn = torch.nn

    class Toy(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(4, 4, bias=False)
            self.act = nn.ReLU()

        def forward(self, x):
            return self.act(self.act(self.lin(x)) - 1.0)  # the module is called twice

    net = Toy()
    with torch.no_grad():
        net.lin.weight.copy_(torch.eye(4))
    x = torch.tensor([[-1.0, 0.5, 2.0, 3.0], [1.0, 2.0, 3.0, 4.0]])
    labels, V, frac = O.activation_statistics(net, x)
    assert labels == ["act#0", "act#1"]
    # call 0: relu(x) -> [0, .5, 2, 3] (1 of 4 non-positive), [1, 2, 3, 4] (0 of 4)
    # call 1: relu(relu(x) - 1) -> [0, 0, 1, 2] (2 of 4), [0, 1, 2, 3] (1 of 4)
    np.testing.assert_allclose(frac, [[0.25, 0.5], [0.0, 0.25]])
    np.testing.assert_allclose(V[0, 0], np.quantile([0, 0.5, 2, 3], O.QUANTILES))
    np.testing.assert_allclose(V[1, 1], np.quantile([0, 1, 2, 3], O.QUANTILES))
    assert not net.act._forward_hooks  # hooks removed
