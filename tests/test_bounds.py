"""Tests of boundcheck.bounds: hand values, recursions, witnesses, random networks, KR9."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from boundcheck.bounds import (
    SumBounds,
    condition29,
    condition29_min_gamma,
    condition29_pos_neg,
    cor5_singular_value_bound,
    eq19_gradient_norm_bound,
    eq20_lrp_beta_product_bound,
    eq31_value_range,
    eq31_value_range_log10,
    eq32_gradient_range,
    eq33_value_range,
    eq33_value_range_log10,
    kr9_exact_expected_norm,
    kr9_paper_expected_norm,
    lemma7_bounds,
    lemma7_bounds_log10,
    lemma7_witness,
    lemma8_b,
    lemma8_bounds,
    lemma8_bounds_log10,
    lemma8_coefficients,
    lemma8_witness,
    relevance_sums,
    thm3_rayleigh_quotient,
    thm3_value,
    thm4_singular_value_bound,
)
from boundcheck import bounds
from boundcheck.errors import InputError
from boundcheck.rules import forward_chain, lrp_beta, lrp_gamma, transition_matrix
from layer_strategies import network_specs

FAST = settings(max_examples=40, deadline=None)
NETS = settings(max_examples=25, deadline=None)

betas = st.floats(0.0, 10.0, allow_nan=False)
gammas = st.floats(1.0001, 1e4, allow_nan=False)
depths = st.integers(1, 60)

# --------------------------------------------------------------------------- hand values


def test_lemma7_hand_values():
    # paper beta=1, t=3: P <= 2^2 * 2^3 = 32, N <= 2^2 * 1 * 2^2 = 16; exact ((3^3 +- 1)/2) = (14, 13)
    assert lemma7_bounds(1.0, 3) == SumBounds(32.0, -16.0)
    assert lemma7_bounds(1.0, 3, "exact") == SumBounds(14.0, -13.0)
    assert lemma7_bounds(1.0, 1, "exact") == SumBounds(2.0, -1.0)
    assert lemma7_bounds(1.0, 1) == SumBounds(2.0, -1.0)
    assert lemma7_bounds(0.0, 7) == SumBounds(1.0, 0.0)
    assert lemma7_bounds(0.0, 7, "exact") == SumBounds(1.0, 0.0)
    assert lemma7_bounds(1.0, 3).value_range == 48.0


def test_eq31_hand_values():
    assert eq31_value_range(1.0, 3) == 48.0  # 2^2 * 3 * 2^2
    assert eq31_value_range(1.0, 3, "exact") == 27.0
    assert eq31_value_range(0.0, 50) == 1.0 and eq31_value_range(0.0, 50, "exact") == 1.0
    assert eq31_value_range(0.5, 1) == 2.0  # 1 + 2 beta, both forms


def test_lemma8_hand_values_gamma_4():
    # sqrt(gamma) = 2: c_plus = 5/3, c_minus = 2/3, b = max(1, 5/3) = 5/3
    c_plus, c_minus = lemma8_coefficients(4.0)
    assert c_plus == pytest.approx(5 / 3) and c_minus == pytest.approx(2 / 3)
    assert lemma8_b(4.0) == pytest.approx(5 / 3)
    paper = lemma8_bounds(4.0, 2)
    assert paper.positive_upper == pytest.approx(50 / 9) and paper.negative_lower == pytest.approx(-10 / 3)
    exact = lemma8_bounds(4.0, 2, "exact")
    assert exact.positive_upper == pytest.approx(29 / 9) and exact.negative_lower == pytest.approx(-20 / 9)
    assert eq33_value_range(4.0, 2) == pytest.approx(80 / 9)
    assert eq33_value_range(4.0, 2, "exact") == pytest.approx((7 / 3) ** 2)


def test_lemma8_b_switches_below_gamma_2_383():
    assert lemma8_b(2.0) == pytest.approx(1 / (math.sqrt(2) - 1))
    assert lemma8_b(2.39) == pytest.approx(lemma8_coefficients(2.39)[0])
    assert lemma8_b(2.38) == pytest.approx(1 / (math.sqrt(2.38) - 1))


@FAST
@given(gamma=gammas)
def test_lemma8_coefficients_differ_by_one(gamma):
    c_plus, c_minus = lemma8_coefficients(gamma)
    assert c_plus - c_minus == pytest.approx(1.0, rel=1e-12)
    assert 0 < c_minus < 1 / (math.sqrt(gamma) - 1)


def test_section4_hand_values():
    assert thm3_value(8, 2) == 2.0
    assert thm4_singular_value_bound(4, 1.0) == pytest.approx(2 * math.sqrt(5))
    assert thm4_singular_value_bound(4, 1.0, form="relaxed") == pytest.approx(2 * (1 + math.sqrt(2)))
    assert cor5_singular_value_bound(9) == 3.0
    assert eq19_gradient_norm_bound([2.0, 3.0, 4.0], 0.5) == pytest.approx(0.25 * 24)
    assert eq32_gradient_range([2.0, 3.0, 4.0], 0.5) == pytest.approx(12.0)
    assert eq20_lrp_beta_product_bound([4, 9], 1.0) == pytest.approx((1 + math.sqrt(2)) ** 2 * 6)


@FAST
@given(R=st.integers(1, 10**6), beta=betas)
def test_thm4_relaxed_form_dominates_exact_form(R, beta):
    assert thm4_singular_value_bound(R, beta) <= thm4_singular_value_bound(R, beta, "relaxed") * (1 + 1e-12)


@FAST
@given(S=st.integers(1, 12), R=st.integers(1, 12), seed=st.integers(0, 2**32 - 1), beta=st.floats(0, 3))
def test_thm3_rayleigh_quotient_and_thm4_bound_on_lrp_beta_matrices(S, R, seed, beta):
    rng = np.random.default_rng(seed)
    W, z = rng.standard_normal((R, S)), rng.standard_normal(S)
    M = transition_matrix(W, z, lrp_beta(beta))
    smax = np.linalg.svd(M, compute_uv=False)[0] if M.size else 0.0
    assert smax <= thm4_singular_value_bound(R, beta) * (1 + 1e-9)
    # a conserving matrix: normalise the columns of a random matrix
    C = rng.random((S, R)) + 0.01
    C /= C.sum(axis=0)
    assert thm3_rayleigh_quotient(C) == pytest.approx(R / S, rel=1e-12)
    assert np.linalg.svd(C, compute_uv=False)[0] >= thm3_value(R, S) * (1 - 1e-12)


def test_thm3_ones_vector_is_not_a_singular_vector_in_general():
    # columns sum to 1, Rayleigh quotient R/S = 1, but no singular value equals sqrt(R/S) = 1
    M = np.array([[1.0, 0.5], [0.0, 0.5]])
    assert thm3_rayleigh_quotient(M) == 1.0
    sv = np.linalg.svd(M, compute_uv=False)
    assert np.all(np.abs(sv - 1.0) > 0.1) and sv[0] > 1.0


# --------------------------------------------------------------------------- recursions


@FAST
@given(beta=betas, t=st.integers(2, 60))
def test_lemma7_exact_solution_satisfies_the_recursion(beta, t):
    prev, cur = lemma7_bounds(beta, t - 1, "exact"), lemma7_bounds(beta, t, "exact")
    P0, N0 = prev.positive_upper, -prev.negative_lower
    assert cur.positive_upper == pytest.approx((1 + beta) * P0 + beta * N0, rel=1e-10)
    assert -cur.negative_lower == pytest.approx(beta * P0 + (1 + beta) * N0, rel=1e-10, abs=1e-300)


@FAST
@given(beta=betas, t=st.integers(2, 60))
def test_lemma7_paper_bound_is_an_inductive_invariant_and_dominates_exact(beta, t):
    prev, cur = lemma7_bounds(beta, t - 1), lemma7_bounds(beta, t)
    P0, N0 = prev.positive_upper, -prev.negative_lower
    if beta > 0:  # the beta = 0 case is the separate statement "in [0, 1]"
        assert cur.positive_upper >= ((1 + beta) * P0 + beta * N0) * (1 - 1e-12)
        assert -cur.negative_lower >= (beta * P0 + (1 + beta) * N0) * (1 - 1e-12)
    ex = lemma7_bounds(beta, t, "exact")
    assert cur.positive_upper >= ex.positive_upper * (1 - 1e-12)
    assert cur.negative_lower <= ex.negative_lower * (1 - 1e-12)


@FAST
@given(gamma=gammas, t=st.integers(2, 60))
def test_lemma8_exact_solution_satisfies_the_recursion(gamma, t):
    c_plus, c_minus = lemma8_coefficients(gamma)
    prev, cur = lemma8_bounds(gamma, t - 1, "exact"), lemma8_bounds(gamma, t, "exact")
    P0, N0 = prev.positive_upper, -prev.negative_lower
    assert cur.positive_upper == pytest.approx(c_plus * P0 + c_minus * N0, rel=1e-10)
    assert -cur.negative_lower == pytest.approx(c_minus * P0 + c_plus * N0, rel=1e-10)
    t1 = lemma8_bounds(gamma, 1, "exact")
    assert (t1.positive_upper, t1.negative_lower) == pytest.approx((c_plus, -c_minus))


@FAST
@given(gamma=gammas, t=st.integers(2, 60))
def test_lemma8_paper_bound_is_an_inductive_invariant_and_dominates_exact(gamma, t):
    c_plus, c_minus = lemma8_coefficients(gamma)
    prev, cur = lemma8_bounds(gamma, t - 1), lemma8_bounds(gamma, t)
    P0, N0 = prev.positive_upper, -prev.negative_lower
    assert cur.positive_upper >= (c_plus * P0 + c_minus * N0) * (1 - 1e-12)
    assert -cur.negative_lower >= (c_minus * P0 + c_plus * N0) * (1 - 1e-12)
    ex = lemma8_bounds(gamma, t, "exact")
    assert cur.value_range >= ex.value_range * (1 - 1e-12)
    assert eq33_value_range(gamma, t) == pytest.approx(cur.value_range, rel=1e-12)


@FAST
@given(beta=betas, n=depths, bound=st.sampled_from(["paper", "exact"]))
def test_eq31_is_the_sum_of_lemma7_bounds_and_log10_agrees(beta, n, bound):
    sb = lemma7_bounds(beta, n, bound)
    assert eq31_value_range(beta, n, bound) == pytest.approx(sb.value_range, rel=1e-12)
    assert eq31_value_range_log10(beta, n, bound) == pytest.approx(math.log10(sb.value_range), abs=1e-12)
    lg = lemma7_bounds_log10(beta, n, bound)
    assert lg.positive_upper_log10 == pytest.approx(math.log10(sb.positive_upper), abs=1e-12)
    assert lg.value_range_log10 == pytest.approx(math.log10(sb.value_range), abs=1e-12)
    if sb.negative_lower < 0:
        assert lg.negative_magnitude_log10 == pytest.approx(math.log10(-sb.negative_lower), abs=1e-9)
    else:
        assert lg.negative_magnitude_log10 == -math.inf


@FAST
@given(gamma=gammas, n=depths, bound=st.sampled_from(["paper", "exact"]))
def test_eq33_log10_agrees(gamma, n, bound):
    sb = lemma8_bounds(gamma, n, bound)
    assert eq33_value_range_log10(gamma, n, bound) == pytest.approx(math.log10(sb.value_range), abs=1e-10)
    lg = lemma8_bounds_log10(gamma, n, bound)
    assert lg.value_range_log10 == pytest.approx(math.log10(sb.value_range), abs=1e-10)
    assert lg.negative_magnitude_log10 == pytest.approx(math.log10(-sb.negative_lower), abs=1e-9)


def test_depth_10000_in_log_space_and_overflow_is_an_input_error():
    assert eq31_value_range_log10(1.0, 10_000) == pytest.approx(9_999 * math.log10(4) + math.log10(3))
    assert eq31_value_range_log10(1.0, 10_000, "exact") == pytest.approx(10_000 * math.log10(3))
    for v in (eq31_value_range_log10(3.0, 10_000), eq33_value_range_log10(100.0, 10_000), eq33_value_range_log10(1.5, 10_000, "exact")):
        assert math.isfinite(v)
    assert math.isfinite(lemma7_bounds_log10(1.0, 10_000, "exact").negative_magnitude_log10)
    with pytest.raises(InputError, match="log10"):
        eq31_value_range(1.0, 10_000)
    with pytest.raises(InputError, match="log10"):
        lemma8_bounds(100.0, 10_000)


# --------------------------------------------------------------------------- witnesses


@pytest.mark.parametrize("beta", [0.0, 0.25, 1.0, 3.0])
def test_lemma7_witness_attains_the_exact_bound_at_every_depth(beta):
    depth = 9
    layers, x, q = lemma7_witness(beta, depth)
    rel = forward_chain(layers, x, lrp_beta(beta)).relevance(q)
    for t in range(1, depth + 1):
        P, N = relevance_sums(rel[t])
        sb = lemma7_bounds(beta, t, "exact")
        assert P == pytest.approx(sb.positive_upper, rel=1e-6)
        assert N == pytest.approx(-sb.negative_lower, rel=1e-6, abs=1e-12)
        assert P <= lemma7_bounds(beta, t).positive_upper * (1 + 1e-12)


@pytest.mark.parametrize("gamma", [1.5, 4.0, 100.0, 1000.0])
def test_lemma8_witness_satisfies_29_and_approaches_the_exact_bound(gamma):
    depth = 9
    layers, x, q = lemma8_witness(gamma, depth)
    chain = forward_chain(layers, x, lrp_gamma(gamma))
    for k, (W, _) in enumerate(layers):
        c = condition29(W, chain.inputs[k], gamma)
        assert c.all_hold and np.all(c.applicable)
        assert condition29_min_gamma(W, chain.inputs[k]) < gamma
    rel = chain.relevance(q)
    for t in range(1, depth + 1):
        P, N = relevance_sums(rel[t])
        sb = lemma8_bounds(gamma, t, "exact")
        # below the supremum (strictness of (29)), within the slack 1e-9 per layer
        assert P <= sb.positive_upper and N <= -sb.negative_lower
        assert P == pytest.approx(sb.positive_upper, rel=1e-6)
        assert N == pytest.approx(-sb.negative_lower, rel=1e-6)


def test_witness_arguments_validated():
    with pytest.raises(InputError):
        lemma7_witness(-1.0, 3)
    with pytest.raises(InputError):
        lemma7_witness(1.0, 13)
    with pytest.raises(InputError):
        lemma8_witness(1.0, 3)
    with pytest.raises(InputError):
        lemma8_witness(4.0, 3, slack=0.0)


# --------------------------------------------------------------------------- random networks


@NETS
@given(spec=network_specs(max_depth=5, max_width=12), beta=st.sampled_from([0.0, 0.5, 1.0, 2.0]))
def test_lemma7_bounds_hold_on_random_relu_networks(spec, beta):
    layers, x, q = spec.build()
    rel = forward_chain(layers, x, lrp_beta(beta)).relevance(q)
    for t in range(1, len(layers) + 1):
        P, N = relevance_sums(rel[t])
        ex = lemma7_bounds(beta, t, "exact")
        assert P <= ex.positive_upper * (1 + 1e-9) + 1e-12
        assert -N >= ex.negative_lower * (1 + 1e-9) - 1e-12
        if beta == 0:
            assert N == 0 and rel[t].sum() <= 1 + 1e-9


@NETS
@given(spec=network_specs(max_depth=5, max_width=12), factor=st.floats(1.0001, 10.0))
def test_lemma8_bounds_hold_on_random_relu_networks_satisfying_29(spec, factor):
    layers, x, q = spec.build()
    chain0 = forward_chain(layers, x)  # activations do not depend on the rule
    gamma = factor * max(condition29_min_gamma(W, chain0.inputs[k]) for k, (W, _) in enumerate(layers))
    chain = forward_chain(layers, x, lrp_gamma(gamma))
    for k, (W, _) in enumerate(layers):
        assert condition29(W, chain.inputs[k], gamma).all_hold
    rel = chain.relevance(q)
    for t in range(1, len(layers) + 1):
        P, N = relevance_sums(rel[t])
        ex = lemma8_bounds(gamma, t, "exact")
        assert P <= ex.positive_upper * (1 + 1e-9) + 1e-12
        assert N <= -ex.negative_lower * (1 + 1e-9) + 1e-12


# --------------------------------------------------------------------------- condition (29)


def test_condition29_hand_example():
    # y rows: [3, -1] (margin 3 - 1/2 > 0 at gamma 4), [1, -4] (1 - 2 < 0), [-1, -1] (not applicable), [0, 0]
    W = np.array([[3.0, -1.0], [1.0, -4.0], [-1.0, -1.0], [0.0, 0.0]])
    z = np.ones(2)
    c = condition29(W, z, 4.0)
    np.testing.assert_array_equal(c.applicable, [True, True, False, False])
    np.testing.assert_array_equal(c.holds, [True, False, True, True])
    np.testing.assert_allclose(c.margin, [2.5, -1.0, -1.0, 0.0])
    assert not c.all_hold
    assert condition29_min_gamma(W, z) == 16.0
    assert condition29(W, z, 16.0 * (1 + 1e-9)).all_hold
    assert not condition29(W, z, 16.0).all_hold  # strict inequality
    assert condition29_min_gamma(np.array([[1.0, -0.5]]), z) == 1.0  # the lemma's gamma > 1
    assert condition29_min_gamma(np.array([[-1.0, -0.5]]), z) == 1.0  # nothing applicable


def test_condition29_pos_neg_matches_layer_version_and_validates():
    W = np.array([[3.0, -1.0], [1.0, -4.0]])
    c = condition29_pos_neg(np.array([3.0, 1.0]), np.array([-1.0, -4.0]), 4.0)
    np.testing.assert_array_equal(c.holds, condition29(W, np.ones(2), 4.0).holds)
    c2 = condition29_pos_neg(np.ones((2, 3)), -np.ones((2, 3)), 4.0)
    assert c2.holds.shape == (2, 3)
    for pos, neg, g in [([1.0], [0.5], 4.0), ([-1.0], [0.0], 4.0), ([1.0, 2.0], [0.0], 4.0), ([1.0], [0.0], 1.0), ([np.nan], [0.0], 4.0)]:
        with pytest.raises(InputError):
            condition29_pos_neg(np.array(pos), np.array(neg), g)


# --------------------------------------------------------------------------- Known Result 9


@pytest.mark.parametrize("R, sigma", [(1, 1.0), (5, 2.0), (50, 0.1)])
def test_kr9_exact_matches_monte_carlo_and_paper_overestimates(R, sigma):
    rng = np.random.default_rng(20250912 + R)
    samples = np.linalg.norm(rng.standard_normal((200_000, R)) * sigma, axis=1)
    se = samples.std() / math.sqrt(len(samples))
    exact = kr9_exact_expected_norm(R, sigma)
    assert abs(samples.mean() - exact) < 4 * se
    paper = kr9_paper_expected_norm(R, sigma)
    assert paper > exact and abs(samples.mean() - paper) > 10 * se


def test_kr9_closed_forms_and_huge_R():
    assert kr9_exact_expected_norm(1, 1.0) == pytest.approx(math.sqrt(2 / math.pi), rel=1e-14)
    assert kr9_exact_expected_norm(2, 1.0) == pytest.approx(math.sqrt(math.pi / 2), rel=1e-14)
    for R in (10**3, 10**4, 10**6):
        ratio = kr9_exact_expected_norm(R, 3.0) / kr9_paper_expected_norm(R, 3.0)
        assert 1 - ratio == pytest.approx(1 / (4 * R), rel=1e-3)
    for R in (10**15, 10**30):  # 1 - ratio ~ 1/(4R) is below float resolution
        ratio = kr9_exact_expected_norm(R, 3.0) / kr9_paper_expected_norm(R, 3.0)
        assert math.isfinite(ratio) and abs(ratio - 1) <= 1e-15
    # continuity at the switch between gammaln and the asymptotic series (R = 2000)
    assert kr9_exact_expected_norm(1999, 1.0) < kr9_exact_expected_norm(2000, 1.0) < kr9_exact_expected_norm(2001, 1.0)


# --------------------------------------------------------------------------- validation


@pytest.mark.parametrize(
    "call",
    [
        lambda: lemma7_bounds(-0.1, 3),
        lambda: lemma7_bounds(1.0, 0),
        lambda: lemma7_bounds(1.0, 2.5),
        lambda: lemma7_bounds(1.0, 3, "tight"),
        lambda: lemma8_bounds(1.0, 3),
        lambda: lemma8_bounds(0.5, 3),
        lambda: lemma8_b(1.0),
        lambda: lemma8_coefficients(float("nan")),
        lambda: eq31_value_range(1.0, 0),
        lambda: eq33_value_range(1.0, 5),
        lambda: thm3_value(0, 2),
        lambda: thm3_value(2, 0),
        lambda: thm4_singular_value_bound(0, 1.0),
        lambda: thm4_singular_value_bound(2, -1.0),
        lambda: thm4_singular_value_bound(2, 1.0, form="loose"),
        lambda: cor5_singular_value_bound(0),
        lambda: eq19_gradient_norm_bound([1.0, -2.0], 1.0),
        lambda: eq19_gradient_norm_bound([1.0], 0.0),
        lambda: eq19_gradient_norm_bound([], 1.0),
        lambda: eq32_gradient_range("1,2", 1.0),
        lambda: eq20_lrp_beta_product_bound([0, 3], 1.0),
        lambda: kr9_paper_expected_norm(0, 1.0),
        lambda: kr9_exact_expected_norm(3, 0.0),
        lambda: kr9_exact_expected_norm(3, -1.0),
        lambda: thm3_rayleigh_quotient(np.ones(3)),
        lambda: SumBounds(1.0, 0.5),
    ],
)
def test_invalid_arguments_raise_input_error(call):
    with pytest.raises(InputError):
        call()


# --------------------------------------------------------------------------- rule -> bound (boundcheck.rule_bounds)


def test_rule_bounds_dispatch_matches_the_lemmas():
    from fractions import Fraction

    from boundcheck import rule_bounds as rb
    from boundcheck.rules import lrp_adaptive_beta, lrp_beta, lrp_epsilon, lrp_gamma, lrp_zero

    for beta in (0.0, 0.5, 1.0):
        r = lrp_beta(beta)
        assert rb.rule_lemma(r) == "lemma7"
        for bound in ("paper", "exact"):
            assert rb.value_range_log10(r, 7, bound) == bounds.eq31_value_range_log10(beta, 7, bound)
            assert rb.value_range(r, 7, bound) == bounds.eq31_value_range(beta, 7, bound)
            assert rb.sum_bounds_log10(r, 4, bound) == bounds.lemma7_bounds_log10(beta, 4, bound)
            assert rb.sum_bounds(r, 4, bound) == bounds.lemma7_bounds(beta, 4, bound)
            exact = rb.value_range_exact(r, 7, bound)
            assert float(exact) == pytest.approx(bounds.eq31_value_range(beta, 7, bound), rel=1e-15)
    assert rb.value_range_exact(lrp_beta(1.0), 50, "exact") == Fraction(3**50)
    for gamma in (1.5, 100.0):
        r = lrp_gamma(gamma)
        assert rb.rule_lemma(r) == "lemma8" and rb.value_range_exact(r, 3) is None
        for bound in ("paper", "exact"):
            assert rb.value_range_log10(r, 7, bound) == bounds.eq33_value_range_log10(gamma, 7, bound)
            assert rb.sum_bounds_log10(r, 4, bound) == bounds.lemma8_bounds_log10(gamma, 4, bound)
    for r in (lrp_zero(), lrp_epsilon(1e-6), lrp_adaptive_beta(), lrp_gamma(1.0), lrp_gamma(0.5)):
        assert rb.rule_lemma(r) is None
        with pytest.raises(InputError, match="no value bound"):
            rb.value_range_log10(r, 3)
        with pytest.raises(InputError, match="no value bound"):
            rb.sum_bounds_log10(r, 3)
    g = rb.GRADIENT
    assert rb.value_range_log10(g, 3, weight_norms=[3, 4, 5]) == bounds.eq32_gradient_range_log10([3, 4, 5], 1.0)
    assert rb.value_range_exact(g, 2, weight_norms=[0.5, 3], lipschitz=2) == Fraction(2 * 2 * 0.5 * 3)
    for bad in (dict(weight_norms=None), dict(weight_norms=[1, 2])):
        with pytest.raises(InputError):
            rb.value_range_log10(g, 3, **bad)
    with pytest.raises(InputError, match="exact"):
        rb.value_range_log10(g, 1, "exact", weight_norms=[1])
    with pytest.raises(InputError):
        rb.sum_bounds_log10(g, 1)
    with pytest.raises(InputError):
        rb.rule_lemma("lrp_beta_1")


def test_public_validators_and_huge_parameters():
    assert bounds.require_depth("n", 10**15) == 10**15
    with pytest.raises(InputError, match="10\\^15"):
        bounds.require_depth("n", 10**400)
    with pytest.raises(InputError):
        bounds.require_bound("loose")
    # beta = 1e308: 1 + 2 beta overflows a float, its log does not
    assert bounds.eq31_value_range_log10(1e308, 2, "exact") == pytest.approx(2 * (308 + math.log10(2)))
    assert math.isfinite(bounds.lemma7_bounds_log10(1e308, 3, "exact").value_range_log10)
    with pytest.raises(InputError, match="_log10"):
        bounds.eq31_value_range(1e308, 2, "exact")
