"""Condition (29) per neuron from engine records: constructed violation and exact required gamma."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from boundcheck.bounds import condition29_min_gamma  # noqa: E402
from empirical.audit import condition29 as c29  # noqa: E402
from empirical.engine import Explainer  # noqa: E402

pytestmark = pytest.mark.torch


def _net(W1, W2):
    l1 = torch.nn.Linear(W1.shape[1], W1.shape[0], bias=False, dtype=torch.float64)
    l2 = torch.nn.Linear(W2.shape[1], W2.shape[0], bias=False, dtype=torch.float64)
    with torch.no_grad():
        l1.weight.copy_(torch.from_numpy(W1))
        l2.weight.copy_(torch.from_numpy(W2))
    return torch.nn.Sequential(torch.nn.Flatten(), l1, torch.nn.ReLU(), l2).double().eval()


def _records(W1, W2, x):
    ex = Explainer(_net(W1, W2), dtype=torch.float64)
    att = ex.attribute(torch.from_numpy(x).reshape(1, -1, 1, 1), ["lrp_gamma_100"], record=True)
    return att.records["lrp_gamma_100"]


def test_constructed_violation_is_found_in_the_right_layer_with_the_right_fraction():
    x = np.array([1.0, 1.0, 1.0, 1.0])  # non-negative input: layer 1 contributions are w_ab
    W1 = np.eye(4)  # input layer: every neuron has N_a = 0 -> (29) holds
    # output layer on h = x: neuron 0: P = 1, |N| = 20 -> needs gamma > 400 (violated at 100);
    # neuron 1: P = 2, |N| = 1 -> gamma > 0.25 (holds); neuron 2: P = 1, |N| = 11 -> gamma > 121 (violated)
    W2 = np.array([[1.0, -20.0, 0.0, 0.0], [1.0, 1.0, -1.0, 0.0], [0.0, 0.0, 1.0, -11.0]])
    rows = c29.layer_rows(_records(W1, W2, x), 0, gammas=(100.0, 1000.0))
    by_t = {r["t"]: r for r in rows}
    assert set(by_t) == {1, 2}
    assert by_t[2]["viol_count_100"] == 0 and by_t[2]["required_gamma"] == 1.0
    assert by_t[1]["viol_count_100"] == 2 and by_t[1]["viol_frac_100"] == pytest.approx(2 / 3)
    assert by_t[1]["viol_count_1000"] == 0
    assert by_t[1]["required_gamma"] == pytest.approx(400.0)
    cov = c29.coverage(rows, [100.0, 1000.0])
    assert not cov["100"]["covered"] and cov["100"]["worst_layer"] == rows[0]["node"] if rows[0]["t"] == 1 else True
    assert cov["1000"]["covered"]
    assert c29.network_required_gamma(rows) == pytest.approx(400.0)


def test_required_gamma_is_computed_exactly_where_the_condition_holds():
    rng = np.random.default_rng(0)
    W1 = np.abs(rng.normal(size=(5, 4))) + 0.1
    W2 = rng.normal(size=(3, 5)) + 0.8
    x = np.abs(rng.normal(size=4))
    rows = c29.layer_rows(_records(W1, W2, x), 0, gammas=(2.0, 1e6))
    h = np.maximum(W1 @ x, 0)
    want = max(condition29_min_gamma(W1, x), condition29_min_gamma(W2, h))
    assert c29.network_required_gamma(rows) == pytest.approx(want, rel=1e-12)
    for r in rows:
        assert r["viol_count_1000000"] == 0
    assert all(r["viol_count_2"] == 0 for r in rows) == (want < 2.0)
