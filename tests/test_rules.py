"""Tests of boundcheck.rules: hand-worked matrices, numeric vs symbolic, conventions, chaining."""

from __future__ import annotations

import functools

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from boundcheck import rules
from boundcheck.errors import InputError
from boundcheck.rules import (
    Conventions,
    chained_attribution,
    chained_gradient,
    conservation_defect,
    forward_chain,
    lrp_adaptive_beta,
    lrp_beta,
    lrp_epsilon,
    lrp_gamma,
    lrp_zero,
    positive_negative_sums,
    transition_matrix,
    transition_matrix_symbolic,
)
from layer_strategies import layer_specs, network_specs

FAST = settings(max_examples=40, deadline=None)
SLOW = settings(max_examples=12, deadline=None)

# --------------------------------------------------------------------------- hand-worked 2x2


def test_lrp_beta_1_hand_worked_2x2():
    # y row 0 = [1, -2]: P = 1, N = -2 -> (2 * 1/1, -1 * (-2)/(-2)) = (2, -1), column sum 1
    # y row 1 = [2, 2]:  P = 4, N = 0  -> (2 * 2/4, 2 * 2/4) = (1, 1), negative term 0/0 := 0, sum 1+beta
    W = np.array([[1.0, -1.0], [2.0, 1.0]])
    z = np.array([1.0, 2.0])
    M = transition_matrix(W, z, lrp_beta(1.0))
    np.testing.assert_array_equal(M, np.array([[2.0, 1.0], [-1.0, 1.0]]))
    np.testing.assert_array_equal(conservation_defect(M), [0.0, 1.0])


def test_lrp_gamma_1_hand_worked_2x2():
    # row 0: y = [2, -1], numerators y + gamma y_+ = [4, -1], denominator 3
    # row 1: y = [1, 1],  numerators [2, 2], denominator 4
    W = np.array([[2.0, -1.0], [1.0, 1.0]])
    z = np.array([1.0, 1.0])
    M = transition_matrix(W, z, lrp_gamma(1.0))
    np.testing.assert_allclose(M, np.array([[4 / 3, 0.5], [-1 / 3, 0.5]]), rtol=0, atol=1e-15)
    np.testing.assert_allclose(M.sum(axis=0), [1.0, 1.0], atol=1e-15)


def test_lrp_zero_hand_worked_2x2():
    W = np.array([[2.0, -1.0], [1.0, 1.0]])
    z = np.array([1.0, 1.0])
    M = transition_matrix(W, z, lrp_zero())
    np.testing.assert_array_equal(M, np.array([[2.0, 0.5], [-1.0, 0.5]]))


def test_lrp_gamma_0_equals_lrp_zero():
    W = np.array([[2.0, -1.0], [1.0, 3.0]])
    z = np.array([0.5, 1.5])
    np.testing.assert_allclose(transition_matrix(W, z, lrp_gamma(0.0)), transition_matrix(W, z, lrp_zero()))


def test_lrp_gamma_large_tends_to_lrp_beta_0():
    # Known Result 1, eq. (10)
    W = np.array([[2.0, -1.0, 0.5], [1.0, 3.0, -2.0]])
    z = np.array([0.5, 1.5, 1.0])
    np.testing.assert_allclose(transition_matrix(W, z, lrp_gamma(1e9)), transition_matrix(W, z, lrp_beta(0.0)), atol=1e-8)


# --------------------------------------------------------------------------- conservation cases


@pytest.mark.parametrize("beta", [0.0, 0.5, 1.0, 3.0])
def test_lrp_beta_column_sums_all_cases(beta):
    # outputs: both signs -> 1; only positive -> 1+beta; only negative -> -beta; nothing -> 0
    z = np.array([1.0, 1.0])
    W = np.array([[2.0, -1.0], [1.0, 2.0], [-1.0, -3.0], [0.0, 0.0]])
    M = transition_matrix(W, z, lrp_beta(beta))
    expected = [1.0, 1.0 + beta, -beta, 0.0]
    np.testing.assert_allclose(M.sum(axis=0), expected, rtol=0, atol=1e-14)
    np.testing.assert_allclose(conservation_defect(M), np.array(expected) - 1.0, atol=1e-14)


# --------------------------------------------------------------------------- conventions


def test_zero_denominator_policies():
    W = np.array([[1.0, -1.0]])
    z = np.array([1.0, 1.0])  # y = [1, -1], sum 0 for LRP-0
    np.testing.assert_array_equal(transition_matrix(W, z, lrp_zero(), Conventions(zero_denominator="zero")), [[0.0], [0.0]])
    assert np.all(np.isnan(transition_matrix(W, z, lrp_zero(), Conventions(zero_denominator="nan"))))
    with pytest.raises(ZeroDivisionError):
        transition_matrix(W, z, lrp_zero(), Conventions(zero_denominator="raise"))


def test_zero_denominator_policy_lrp_beta_missing_sign():
    W = np.array([[1.0, 2.0]])
    z = np.array([1.0, 1.0])  # no negative part: the negative term is 0/0
    assert transition_matrix(W, z, lrp_beta(1.0), Conventions(zero_denominator="zero")).sum() == 2.0
    assert np.all(np.isnan(transition_matrix(W, z, lrp_beta(1.0), Conventions(zero_denominator="nan"))))
    with pytest.raises(ZeroDivisionError):
        transition_matrix(W, z, lrp_beta(1.0), Conventions(zero_denominator="raise"))


def test_bias_backward_changes_denominators():
    W = np.array([[1.0, 1.0]])
    z = np.array([1.0, 1.0])
    b = np.array([1.0])
    # LRP-0: denominator 2 + b = 3
    np.testing.assert_allclose(transition_matrix(W, z, lrp_zero(), Conventions(bias="backward"), b=b), [[1 / 3], [1 / 3]])
    np.testing.assert_allclose(transition_matrix(W, z, lrp_zero(), Conventions(bias="forward_only"), b=b), [[0.5], [0.5]])
    # LRP-beta: a positive bias enters only the positive term's denominator (pp part)
    W2 = np.array([[1.0, -1.0]])
    M = transition_matrix(W2, z, lrp_beta(1.0), Conventions(bias="backward"), b=b)
    np.testing.assert_allclose(M, [[1.0], [-1.0]])
    np.testing.assert_allclose(transition_matrix(W2, z, lrp_beta(1.0), b=b), [[2.0], [-1.0]])
    # a negative bias enters only the negative term's denominator (np part)
    M = transition_matrix(W2, z, lrp_beta(1.0), Conventions(bias="backward"), b=np.array([-1.0]))
    np.testing.assert_allclose(M, [[2.0], [-0.5]])


def test_stabiliser_adds_eps_sign_of_denominator():
    z = np.array([1.0, 1.0])
    c = Conventions(stabiliser=1.0)
    np.testing.assert_allclose(transition_matrix(np.array([[1.0, 1.0]]), z, lrp_zero(), c), [[1 / 3], [1 / 3]])
    np.testing.assert_allclose(transition_matrix(np.array([[-1.0, -1.0]]), z, lrp_zero(), c), [[1 / 3], [1 / 3]])
    # sign(0) := +1
    np.testing.assert_allclose(transition_matrix(np.array([[1.0, -1.0]]), z, lrp_zero(), c), [[1.0], [-1.0]])
    # the rule's own epsilon adds to the convention's
    np.testing.assert_allclose(transition_matrix(np.array([[1.0, 1.0]]), z, lrp_epsilon(1.0), c), [[0.25], [0.25]])


def test_conventions_validate():
    with pytest.raises(InputError):
        Conventions(zero_denominator="ignore")
    with pytest.raises(InputError):
        Conventions(bias="both")
    with pytest.raises(InputError):
        Conventions(stabiliser=-1.0)
    with pytest.raises(InputError):
        lrp_beta(-0.5)
    with pytest.raises(InputError):
        lrp_gamma(-1.0)


def test_adaptive_beta_values():
    pos, neg = np.array([3.0, 1.0, 1.0, 0.0]), np.array([-1.0, -1.0, -2.0, 0.0])
    # -N/(P+N): 1/2; P+N = 0 -> cap; P+N < 0 -> cap; nothing -> cap
    np.testing.assert_allclose(rules.adaptive_beta(pos, neg, 3.0), [0.5, 3.0, 3.0, 3.0])


def test_parse_rule_roundtrip():
    for r in [lrp_beta(1.0), lrp_beta(0.25), lrp_gamma(100.0), lrp_zero(), lrp_epsilon(1e-6)]:
        assert rules.parse_rule(r.name) == r
    # the adaptive rule stores NaN placeholder coefficients, so Rule.__eq__ is False even
    # for itself; compare what defines it
    for r in [lrp_adaptive_beta(), lrp_adaptive_beta(2.0)]:
        p = rules.parse_rule(r.name)
        assert (p.name, p.adaptive_beta_max, [t.parts for t in p.terms]) == (r.name, r.adaptive_beta_max, [t.parts for t in r.terms])
    with pytest.raises(InputError):
        rules.parse_rule("lrp_alpha_2")


# --------------------------------------------------------------------------- numeric vs symbolic

_SYMBOLIC_RULES = [lrp_beta(0.0), lrp_beta(1.0), lrp_beta(0.5), lrp_gamma(0.25), lrp_gamma(100.0), lrp_zero(), lrp_epsilon(0.5), lrp_adaptive_beta()]


@SLOW
@given(
    R=st.integers(1, 6),
    S=st.integers(1, 6),
    data=st.data(),
    rule=st.sampled_from(_SYMBOLIC_RULES),
    bias=st.sampled_from(["forward_only", "backward"]),
)
def test_numeric_equals_symbolic_on_exact_rationals(R, S, data, rule, bias):
    import sympy as sp

    ints = st.integers(-4, 4)
    Wn = [[data.draw(ints) for _ in range(S)] for _ in range(R)]
    zn = [data.draw(ints) for _ in range(S)]
    bn = [data.draw(ints) for _ in range(R)]
    # dyadic rationals: float sums are exact, so a denominator that is 0 exactly is 0.0 in
    # floats too (with thirds, 1/3 + 1/3 - 2/3 = 1e-16 and the float ratio explodes to 1e16
    # where the exact rule gives 0/0 := 0: the 0/0 policy acts on exact zeros only)
    den = data.draw(st.sampled_from([1, 2, 4]))
    if rule.adaptive_beta_max is not None:
        P, N = positive_negative_sums(np.array(Wn, float), np.array(zn, float))
        assume(np.all(P + N != 0))  # see test_symbolic_adaptive_beta_at_zero_total_fails
    W = [[sp.Rational(v, den) for v in row] for row in Wn]
    z = [sp.Rational(v, den) for v in zn]
    b = [sp.Rational(v, den) for v in bn]
    conv = Conventions(bias=bias)
    Ms = transition_matrix_symbolic(W, z, rule, conv, b=b)
    Mn = transition_matrix(np.array(Wn, float) / den, np.array(zn, float) / den, rule, conv, b=np.array(bn, float) / den)
    expected = np.array([[float(Ms[i, j]) for j in range(R)] for i in range(S)])
    np.testing.assert_allclose(Mn, expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("W, z", [([[0]], [0]), ([[1, -1]], [1, 1]), ([[1, -2]], [1, 1])])
def test_symbolic_adaptive_beta_at_nonpositive_total(W, z):
    """Where P + N <= 0 both builders use beta = beta_max (rules.adaptive_beta) and agree."""
    Mn = transition_matrix(np.array(W, float), np.array(z, float), lrp_adaptive_beta())
    Ms = transition_matrix_symbolic(W, z, lrp_adaptive_beta())
    np.testing.assert_allclose(Mn, np.array(Ms.evalf(), dtype=float), atol=1e-12)


def test_adaptive_rule_equals_itself():
    assert lrp_adaptive_beta() == lrp_adaptive_beta()


# --------------------------------------------------------------------------- chaining


def _explicit_chain_product(layers, x, rule, q):
    z = np.asarray(x, float)
    mats = []
    for k, (W, b) in enumerate(layers):
        mats.append(transition_matrix(W, z, rule))
        a = W @ z + b
        z = np.maximum(a, 0.0) if k < len(layers) - 1 else a
    return functools.reduce(lambda A, B: A @ B, mats) @ q  # M_1 M_2 ... M_n q


@FAST
@given(spec=network_specs(max_depth=6, max_width=16), rule=st.sampled_from([lrp_beta(0.0), lrp_beta(1.0), lrp_gamma(100.0), lrp_zero()]))
def test_chained_attribution_equals_explicit_matrix_product(spec, rule):
    layers, x, q = spec.build()
    got = chained_attribution(layers, x, rule, q)
    np.testing.assert_allclose(got, _explicit_chain_product(layers, x, rule, q), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("seed", range(6))
def test_chained_gradient_equals_finite_difference(seed):
    rng = np.random.default_rng(seed)
    widths = rng.integers(1, 9, size=rng.integers(2, 6))
    layers = [(rng.standard_normal((R, S)), rng.standard_normal(R)) for S, R in zip(widths[:-1], widths[1:])]
    x = rng.standard_normal(widths[0])
    q = rng.random(widths[-1])
    q /= q.sum()

    def f(v):
        return float(q @ forward_chain(layers, v).pre[-1])

    h = 1e-6
    fd = np.array([(f(x + h * e) - f(x - h * e)) / (2 * h) for e in np.eye(len(x))])
    np.testing.assert_allclose(chained_gradient(layers, x, q), fd, rtol=1e-5, atol=1e-6)


def test_chain_validates_q():
    layers = [(np.eye(2), np.zeros(2))]
    with pytest.raises(InputError):
        chained_attribution(layers, np.ones(2), lrp_zero(), np.array([0.7, 0.7]))
    with pytest.raises(InputError):
        chained_attribution(layers, np.ones(2), lrp_zero(), np.array([1.5, -0.5]))


# --------------------------------------------------------------------------- property tests on random layers


def _classify(W, z):
    P, N = positive_negative_sums(W, z)
    return P > 0, N < 0


@FAST
@given(spec=layer_specs(64), beta=st.sampled_from([0.0, 0.5, 1.0, 3.0]))
def test_lrp_beta_column_sums_follow_sign_cases_on_random_layers(spec, beta):
    W, z, _ = spec.build()
    M = transition_matrix(W, z, lrp_beta(beta))
    assert np.all(np.isfinite(M))
    has_pos, has_neg = _classify(W, z)
    expected = np.where(has_pos, 1.0 + beta, 0.0) - np.where(has_neg, beta, 0.0)
    np.testing.assert_allclose(M.sum(axis=0), expected, rtol=1e-9, atol=1e-9)


@FAST
@given(spec=layer_specs(64), beta=st.sampled_from([0.0, 0.5, 1.0, 3.0]))
def test_lrp_beta_entries_have_the_sign_of_y_and_bounded_size(spec, beta):
    W, z, _ = spec.build()
    M = transition_matrix(W, z, lrp_beta(beta))
    y = (W * z).T  # (S, R)
    assert np.all(M[y > 0] >= 0) and np.all(M[y < 0] <= 0) and np.all(M[y == 0] == 0)
    assert np.all(M <= 1.0 + beta + 1e-12) and np.all(M >= -beta - 1e-12)
    # column norms of Thm 4's proof, eq. (46)-(47)
    assert np.all((M**2).sum(axis=0) <= (1 + beta) ** 2 + beta**2 + 1e-9)


@FAST
@given(spec=layer_specs(64), gamma=st.sampled_from([0.0, 0.25, 1.0, 100.0]))
def test_lrp_gamma_conserves_where_denominator_nonzero(spec, gamma):
    W, z, _ = spec.build()
    M = transition_matrix(W, z, lrp_gamma(gamma))
    y = W * z
    den = (y + gamma * np.maximum(y, 0.0)).sum(axis=1)
    # where the denominator is (numerically) far from 0 the column sums to 1; exactly 0 -> 0
    scale = np.abs(y).sum(axis=1) * (1 + gamma)
    ok = np.abs(den) > 1e-6 * np.maximum(scale, 1e-300)
    np.testing.assert_allclose(M.sum(axis=0)[ok], 1.0, rtol=1e-6, atol=1e-6)
    assert np.all(M.sum(axis=0)[den == 0] == 0)


@FAST
@given(spec=layer_specs(64), rule=st.sampled_from([lrp_beta(1.0), lrp_gamma(100.0), lrp_zero(), lrp_adaptive_beta()]))
def test_transition_matrix_does_not_mutate_inputs_and_has_shape_S_by_R(spec, rule):
    W, z, b = spec.build()
    W0, z0, b0 = W.copy(), z.copy(), b.copy()
    M = transition_matrix(W, z, rule, Conventions(bias="backward"), b=b)
    assert M.shape == (spec.S, spec.R)
    np.testing.assert_array_equal(W, W0)
    np.testing.assert_array_equal(z, z0)
    np.testing.assert_array_equal(b, b0)


@FAST
@given(spec=layer_specs(64))
def test_positive_negative_sums_split_the_output(spec):
    W, z, _ = spec.build()
    P, N = positive_negative_sums(W, z)
    assert np.all(P >= 0) and np.all(N <= 0)
    np.testing.assert_allclose(P + N, W @ z, rtol=1e-9, atol=1e-9 * (np.abs(W) @ np.abs(z)).max(initial=1.0))


def test_shape_errors():
    with pytest.raises(InputError):
        transition_matrix(np.ones((2, 3)), np.ones(2), lrp_zero())
    with pytest.raises(InputError):
        transition_matrix(np.ones(3), np.ones(3), lrp_zero())
    with pytest.raises(InputError):
        transition_matrix(np.ones((2, 2)), np.array([np.nan, 1.0]), lrp_zero())
