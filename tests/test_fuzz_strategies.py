"""Properties of the shared fuzz strategies (each property in the test name)."""

from __future__ import annotations

import math

import numpy as np
import pytest

pytest.importorskip("hypothesis")

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from boundcheck.fuzz import strategies as S  # noqa: E402

FAST = settings(max_examples=40, deadline=None, database=None, derandomize=True,
                suppress_health_check=list(HealthCheck))


@FAST
@given(S.conserving_matrices())
def test_conserving_matrices_have_unit_column_sums(M):
    assert M.ndim == 2 and 1 <= M.shape[0] <= S.MAX_WIDTH and 1 <= M.shape[1] <= S.MAX_WIDTH
    assert np.allclose(M.sum(axis=0), 1.0, rtol=0, atol=1e-9 * (1 + np.abs(M).sum(axis=0)).max())


@FAST
@given(S.layers())
def test_layers_are_finite_with_matching_shapes(layer):
    R, Sd = layer.W.shape
    assert 1 <= R <= S.MAX_WIDTH and 1 <= Sd <= S.MAX_WIDTH
    assert layer.z.shape == (Sd,) and layer.b.shape == (R,)
    assert np.all(np.isfinite(layer.W)) and np.all(np.isfinite(layer.z))


@FAST
@given(S.networks(n_inputs=3))
def test_networks_chain_shapes_and_q_on_simplex(net):
    assert 1 <= net.depth <= S.MAX_DEPTH and len(net.xs) == 3
    width = net.xs[0].size
    for W, b in net.layers:
        assert W.shape[1] == width and b.shape == (W.shape[0],)
        width = W.shape[0]
    assert net.q.shape == (width,) and np.all(net.q >= 0) and math.isclose(net.q.sum(), 1.0, abs_tol=1e-12)


@FAST
@given(S.condition29_networks(n_inputs=2))
def test_projected_networks_satisfy_condition_29_at_every_input(ng):
    net, gamma = ng
    for x in net.xs:  # plain numpy re-check of gamma^(-1/2) |N_a| < P_a where P_a > 0
        z = x
        for r, (W, b) in enumerate(net.layers):
            y = W * z
            P, N = np.maximum(y, 0).sum(1), -np.minimum(y, 0).sum(1)
            assert np.all((P == 0) | (N / math.sqrt(gamma) < P))
            a = W @ z + b
            z = np.maximum(a, 0) if r < net.depth - 1 else a


def test_projection_does_not_modify_its_input():
    W = np.array([[1.0, -5.0]])
    layers = ((W, np.zeros(1)),)
    out = S.project_condition29(layers, [np.array([1.0, 1.0])], 4.0, factor=0.5)
    assert W.tolist() == [[1.0, -5.0]]
    assert out[0][0].tolist() == [[1.0, -1.0]]  # |N| = 0.5 * P * sqrt(4)


@pytest.mark.parametrize("mode, check", [
    ("positive_rows", lambda y: np.all(y >= 0)),
    ("negative_rows", lambda y: np.all(y <= 0)),
    ("zero_rows", lambda y: np.all(y == 0)),
])
def test_degenerate_rows_have_one_sign_or_no_contributions(mode, check):
    rng = np.random.default_rng(1)
    W = rng.standard_normal((16, 8))
    z = rng.standard_normal(8)
    D = S.make_degenerate(rng, W, z, mode)
    changed = np.flatnonzero(np.any(D != W, axis=1) | np.all(D * z == 0, axis=1))
    assert changed.size >= 1
    assert all(check(D[a] * z) for a in changed)


@FAST
@given(S.cauchy_setups())
def test_cauchy_setups_satisfy_eq_21(c):
    assert np.all(c.xs >= 0) and np.all(c.xl > 0)
    assert c.xl.min() >= c.k * c.xs.max()


@FAST
@given(S.moments())
def test_moments_have_feasible_nonnegative_covariance(m):
    assert 0 <= m.sigma_ab <= m.sigma_a * m.sigma_b * (1 + 1e-12)
    assert m.c1 > 0 and m.c2 > 0


def test_same_seed_draws_the_same_example():
    from hypothesis import find, seed

    def draw():
        got = []

        @seed(7)
        @settings(max_examples=5, database=None, derandomize=False, deadline=None)
        @given(S.networks())
        def t(net):
            got.append(net.to_json())

        t()
        return got

    assert draw() == draw()
    assert callable(find)


@FAST
@given(st.data())
def test_weight_kinds_respect_sign_and_scale(data):
    kind = data.draw(st.sampled_from(S.WEIGHT_KINDS))
    scale = data.draw(st.sampled_from(S.SCALES))
    rng = np.random.default_rng(data.draw(st.integers(0, 2**31)))
    W = S.random_weights(rng, 5, 7, kind, scale)
    assert W.shape == (5, 7) and np.all(np.isfinite(W))
    if kind == "positive":
        assert np.all(W >= 0)
    if kind == "negative":
        assert np.all(W <= 0)
    if kind == "integer":
        assert np.all(np.round(W / scale) == W / scale)
