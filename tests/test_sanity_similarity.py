"""Similarity measures and normalisations of the randomisation check ([P2] C, D, eq. 11, Thm 4)."""

import numpy as np
import pytest

from empirical.sanity import similarity as S


def test_second_moment_normalisation_hand_value():
    a = np.array([[3.0, 4.0], [0.0, 0.0]])  # mean(a^2) = 25/4 -> sqrt = 2.5
    np.testing.assert_allclose(S.normalise_second_moment(a), a / 2.5)
    assert np.mean(S.normalise_second_moment(a) ** 2) == pytest.approx(1.0)


def test_normalisations_do_not_mutate_and_keep_zero_maps():
    a = np.array([[1.0, -2.0], [0.5, 0.0]])
    keep = a.copy()
    S.normalise_second_moment(a), S.normalise_max_abs(a)
    np.testing.assert_array_equal(a, keep)
    z = np.zeros((3, 3))
    np.testing.assert_array_equal(S.normalise_second_moment(z), z)
    np.testing.assert_array_equal(S.normalise_max_abs(z), z)
    np.testing.assert_allclose(S.normalise_max_abs(a), a / 2.0)


def test_mse_hand_value_and_ssim_of_identical_maps():
    a = np.array([[1.0, 2.0], [3.0, 4.0]])
    b = np.array([[1.0, 0.0], [3.0, 2.0]])
    assert S.mse(a, b) == pytest.approx((0 + 4 + 0 + 4) / 4)
    rng = np.random.default_rng(0)
    m = rng.normal(size=(16, 16))
    assert S.ssim(m, m) == pytest.approx(1.0)
    assert S.spearman(m, m) == pytest.approx(1.0)


def test_spearman_hand_value():
    a = np.array([[1.0, 2.0], [3.0, 4.0]])
    b = np.array([[10.0, 30.0], [20.0, 40.0]])  # ranks 1 3 2 4 vs 1 2 3 4
    # 1 - 6 sum d^2 / (n (n^2 - 1)) = 1 - 6 * 2 / 60
    assert S.spearman(a, b) == pytest.approx(0.8)


def test_mse_of_second_moment_maps_is_eq14_and_below_thm4_bound_when_cov_nonnegative():
    rng = np.random.default_rng(1)
    for _ in range(20):
        a = rng.normal(0.3, 1.0, size=(12, 12))
        b = 0.5 * a + rng.normal(0.2, 1.0, size=(12, 12))
        an, bn = S.normalise_second_moment(a), S.normalise_second_moment(b)
        den = np.sqrt(np.mean(a * a) * np.mean(b * b))
        cov = np.mean((a - a.mean()) * (b - b.mean()))
        eq14 = 2 - 2 * cov / den - 2 * a.mean() * b.mean() / den
        assert S.mse(an, bn) == pytest.approx(eq14, rel=1e-12)
        r = S.compare(a, b)
        assert r["cov_nonnegative"] == (cov >= 0)
        if cov >= 0:
            assert r["mse_second_moment"] <= r["thm4_bound"] + 1e-12


def test_compare_keys():
    rng = np.random.default_rng(2)
    r = S.compare(rng.normal(size=(10, 10)), rng.normal(size=(10, 10)))
    for m in S.MEASURES:
        for n in S.NORMALISATIONS:
            assert f"{m}_{n}" in r
    assert not r["zero_map"]


def test_agrees_with_quantus():
    """Quantus 0.6.0: normalise_by_average_second_moment_estimate, normalise_by_max, ssim, spearman."""
    pytest.importorskip("quantus")
    from quantus.functions import normalise_func as qn
    from quantus.functions import similarity_func as qs

    rng = np.random.default_rng(3)
    worst = {}
    for _ in range(5):
        a = rng.normal(0.1, 1.0, size=(32, 32))
        b = 0.3 * a + rng.normal(size=(32, 32))
        qa = qn.normalise_by_average_second_moment_estimate(a.copy())  # quantus divides in place
        qb = qn.normalise_by_average_second_moment_estimate(b.copy())
        ours_a, ours_b = S.normalise_second_moment(a), S.normalise_second_moment(b)
        worst["second_moment"] = max(worst.get("second_moment", 0), np.abs(qa - ours_a).max())
        worst["max_abs"] = max(worst.get("max_abs", 0), np.abs(qn.normalise_by_max(a.copy()) - S.normalise_max_abs(a)).max())
        worst["ssim"] = max(worst.get("ssim", 0), abs(qs.ssim(qa, qb) - S.ssim(ours_a, ours_b)))
        worst["spearman"] = max(worst.get("spearman", 0),
                                abs(qs.correlation_spearman(qa.ravel(), qb.ravel()) - S.spearman(ours_a, ours_b)))
    print("max abs difference to quantus:", worst)
    for k, v in worst.items():
        assert v < 1e-12, (k, v)
