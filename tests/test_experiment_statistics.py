"""s1 (eq. 38), s2 (eq. 39), ratio of medians and the Wilcoxon direction on hand-made maps."""

import math

import numpy as np
import pytest

from empirical.experiment.statistics import (
    medians_by_method,
    paired_comparison,
    s1_statistic,
    s2_statistic,
    summarise,
)


def test_s1_is_l2_distance_of_means():
    a = np.array([[3.0, 0.0], [0.0, 0.0]])
    b = np.array([[0.0, 4.0], [0.0, 0.0]])
    assert s1_statistic(a, b) == pytest.approx(5.0)
    assert s1_statistic(a, a) == 0.0


def test_s1_scales_linearly_s2_is_scale_invariant():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(8, 8)), rng.normal(size=(8, 8))
    assert s1_statistic(10 * a, 10 * b) == pytest.approx(10 * s1_statistic(a, b))
    assert s2_statistic(10 * a, 3 * b) == pytest.approx(s2_statistic(a, b))


def test_s2_of_orthogonal_and_opposite_directions():
    a = np.array([1.0, 0.0, 0.0])
    assert s2_statistic(a, np.array([0.0, 7.0, 0.0])) == pytest.approx(math.sqrt(2))
    assert s2_statistic(a, -5 * a) == pytest.approx(2.0)
    assert s2_statistic(a, 2 * a) == pytest.approx(0.0)


def test_s2_zero_mean_is_nan_by_policy():
    assert math.isnan(s2_statistic(np.zeros(4), np.ones(4)))


def test_s1_accepts_torch_tensors_and_checks_shapes():
    torch = pytest.importorskip("torch")
    assert s1_statistic(torch.ones(2, 2), torch.zeros(2, 2)) == pytest.approx(2.0)
    with pytest.raises(ValueError):
        s1_statistic(np.ones(3), np.ones(4))


def test_wilcoxon_direction_and_ratio_of_medians():
    rng = np.random.default_rng(1)
    lrp = rng.uniform(1, 2, size=40)
    grad = lrp * 100 + rng.uniform(0, 1, size=40)
    r = paired_comparison(grad, lrp)
    assert r["n"] == 40
    assert r["p_value"] < 1e-6  # gradient-based > LRP is supported
    assert r["ratio"] == pytest.approx(np.median(grad) / np.median(lrp))
    rev = paired_comparison(lrp, grad)
    assert rev["p_value"] > 0.99  # the one-sided test in the other direction
    assert rev["ratio"] == pytest.approx(1 / r["ratio"], rel=1e-2)


def test_wilcoxon_matches_scipy_and_drops_nan_pairs():
    from scipy.stats import wilcoxon

    g = np.array([3.0, 5.0, 1.0, 8.0, np.nan, 4.0, 9.0, 2.5])
    l = np.array([1.0, 2.0, 1.5, 2.0, 1.0, 3.0, 1.0, 2.0])
    r = paired_comparison(g, l)
    ok = ~np.isnan(g)
    assert r["n"] == 7
    assert r["p_value"] == pytest.approx(wilcoxon(g[ok], l[ok], alternative="greater").pvalue)


def test_all_equal_pairs_give_nan_p_value():
    r = paired_comparison([1.0, 2.0], [1.0, 2.0])
    assert math.isnan(r["p_value"]) and r["ratio"] == 1.0


def _record(i, g, l):
    st = {"s1": {"5": g}, "s2": {"5": g / 10}, "mean_norm": {"5": [1.0, 1.0]}, "scale": 2.0 * g}
    sl = {"s1": {"5": l}, "s2": {"5": l / 10}, "mean_norm": {"5": [1.0, 1.0]}, "scale": 2.0 * l}
    return {"index": i, "id": str(i), "stats": {"gaussian": {"squared_gradient": st, "lrp_beta_0": sl}}}


def test_summarise_rows_and_medians():
    recs = [_record(i, 10.0 + i, 1.0 + 0.1 * i) for i in range(9)]
    rows = summarise(recs, "toy", ["gaussian"], [5], ["squared_gradient", "lrp_beta_0"])
    assert [(r["statistic"], r["grad_method"], r["lrp_method"]) for r in rows] == [
        ("s1", "squared_gradient", "lrp_beta_0"), ("s2", "squared_gradient", "lrp_beta_0")]
    r = rows[0]
    assert r["median_grad"] == 14.0 and r["median_lrp"] == pytest.approx(1.4)
    assert r["ratio"] == pytest.approx(10.0) and r["p_value"] < 0.01
    assert r["scale_grad"] == 28.0 and r["scale_lrp"] == pytest.approx(2.8)
    med = medians_by_method(recs, ["gaussian"], [5], ["squared_gradient", "lrp_beta_0"])
    assert med["gaussian"]["squared_gradient"]["s2"][5] == pytest.approx(1.4)
