"""The DAG depth definition of empirical.audit.depth against explicit matrices (numpy, float64)."""

from __future__ import annotations

import numpy as np
import pytest

from boundcheck.bounds import lemma7_bounds, lemma8_bounds
from boundcheck.rules import forward_chain, lrp_beta, lrp_gamma, transition_matrix
from empirical.audit.depth import (
    chain_dag,
    relevance_depths,
    residual_block_dag,
    residual_counterexample,
)


def _sums(r):
    return float(r[r > 0].sum()), float(-r[r < 0].sum())


def test_chain_dag_per_depth_sums_equal_the_numpy_chain():
    rng = np.random.default_rng(1)
    layers = [(rng.normal(size=(5, 4)), rng.normal(size=5)), (rng.normal(size=(3, 5)), rng.normal(size=3)),
              (rng.normal(size=(2, 3)), rng.normal(size=2))]
    x, q = rng.normal(size=4), np.array([0.25, 0.75])
    for rule in (lrp_beta(0.0), lrp_beta(1.0), lrp_gamma(100.0)):
        rs = forward_chain(layers, x, rule).relevance(q)
        bw = chain_dag(layers).backward(x, rule, q)
        assert bw.n == 3
        np.testing.assert_allclose(bw.input_map, rs[-1], rtol=1e-12, atol=1e-12)
        for t in range(1, 4):
            np.testing.assert_allclose(bw.cut_sums()[t - 1], _sums(rs[t]), rtol=1e-12, atol=1e-12)
            np.testing.assert_allclose(bw.level_sums()[t - 1], _sums(rs[t]), rtol=1e-12, atol=1e-12)


def test_residual_block_input_map_equals_the_explicit_matrix_product():
    """x -> c1 -> relu -> c2 -> join(+x) -> relu -> head: the input map is
    M_c1 M_c2 Msel2 M_join M_head q + Msel1 M_join M_head q (explicit matrices)."""
    rng = np.random.default_rng(2)
    d = 4
    W1, W2, W3 = rng.normal(size=(d, d)), rng.normal(size=(d, d)), rng.normal(size=(2, d))
    b1, b2, b3 = rng.normal(size=d), rng.normal(size=d), rng.normal(size=2)
    x, q = rng.normal(size=d), np.array([0.6, 0.4])
    rule = lrp_beta(1.0)
    dag = residual_block_dag(W1, b1, W2, b2, W3, b3)
    bw = dag.backward(x, rule, q)
    h1 = np.maximum(W1 @ x + b1, 0)
    c2 = W2 @ h1 + b2
    j = c2 + x
    Mh = transition_matrix(W3, np.maximum(j, 0), rule)
    Mj = transition_matrix(np.hstack([np.eye(d), np.eye(d)]), np.concatenate([c2, x]), rule)
    M2 = transition_matrix(W2, h1, rule)
    M1 = transition_matrix(W1, x, rule)
    rj = Mj @ (Mh @ q)
    truth = M1 @ (M2 @ rj[:d]) + rj[d:]
    np.testing.assert_allclose(bw.input_map, truth, rtol=1e-12, atol=1e-12)
    assert bw.n == 4 and bw.depth == {"head": 1, "join": 2, "c2": 3, "c1": 4, "x": 5}


@pytest.mark.parametrize("seed", range(5))
def test_residual_dag_edge_cut_sums_obey_exact_bounds_at_longest_path_depth(seed):
    rng = np.random.default_rng(seed)
    d = 5
    for _ in range(40):
        W = [rng.normal(size=(d, d)) for _ in range(3)]
        b = [0.3 * rng.normal(size=d) for _ in range(3)]
        dag = residual_block_dag(W[0], b[0], W[1], b[1], W[2][:3], b[2][:3])
        x = rng.normal(size=d)
        for beta in (0.5, 1.0):
            bw = dag.backward(x, lrp_beta(beta), np.array([0.2, 0.3, 0.5]))
            for t, ((P, N), (Pl, Nl)) in enumerate(zip(bw.cut_sums(), bw.level_sums()), 1):
                B = lemma7_bounds(beta, t, "exact")
                assert P <= B.positive_upper * (1 + 1e-9)
                assert N <= -B.negative_lower * (1 + 1e-9) + 1e-12
                assert Pl <= B.positive_upper * (1 + 1e-9)
            P, N = _sums(bw.input_map)
            B = lemma7_bounds(beta, bw.n, "exact")
            assert P <= B.positive_upper * (1 + 1e-9) and N <= -B.negative_lower * (1 + 1e-9) + 1e-12


def test_counting_only_convolutions_is_not_a_valid_depth_but_the_longest_path_is():
    dag = residual_counterexample()
    beta = 1.0
    bw = dag.backward(np.array([1.0]), lrp_beta(beta), np.array([1.0]))
    # head: 1+beta; join splits (1+beta)^2 in halves; c1 multiplies its half by 1+beta
    assert bw.input_map[0] == pytest.approx((1 + beta) ** 2 * (2 + beta) / 2)
    assert bw.n == 3  # head, join, c1
    assert bw.input_map[0] > lemma7_bounds(beta, 2, "exact").positive_upper  # 2 = convs/linears only
    assert bw.input_map[0] <= lemma7_bounds(beta, 3, "exact").positive_upper


def test_gamma_dag_bounds_hold_where_condition29_holds():
    rng = np.random.default_rng(7)
    d, gamma = 4, 100.0
    checked = 0
    for _ in range(200):
        W = [np.abs(rng.normal(size=(d, d))) - 0.2 for _ in range(3)]
        dag = residual_block_dag(W[0], np.zeros(d), W[1], np.zeros(d), W[2][:2], np.zeros(2))
        x = np.abs(rng.normal(size=d))
        bw = dag.backward(x, lrp_gamma(gamma), np.array([0.5, 0.5]))
        from boundcheck.bounds import condition29_pos_neg
        vals = dag.forward(x)
        ok = True
        for name, M in bw.matrices.items():
            node = dag.by_name[name]
            if node.op == "affine":
                z = vals[node.inputs[0]]
                Wn = node.W
            else:
                z = np.concatenate([vals[p] for p in node.inputs])
                Wn = np.hstack([np.eye(d)] * len(node.inputs))
            y = Wn * z
            ok &= condition29_pos_neg(np.clip(y, 0, None).sum(1), np.clip(y, None, 0).sum(1), gamma).all_hold
        if not ok:
            continue
        checked += 1
        for t, (P, N) in enumerate(bw.cut_sums(), 1):
            B = lemma8_bounds(gamma, t, "exact")
            assert P <= B.positive_upper * (1 + 1e-9) and N <= -B.negative_lower * (1 + 1e-9) + 1e-12
    assert checked > 20


def test_relevance_depths_longest_path_on_a_diamond():
    inputs = {"x": (), "a": ("x",), "b": ("a",), "c": ("x",), "j": ("b", "c"), "o": ("j",)}
    is_rule = {"x": False, "a": True, "b": True, "c": True, "j": True, "o": True}
    D = relevance_depths(inputs, is_rule, "o")
    assert D == {"o": 0, "j": 1, "b": 2, "c": 2, "a": 3, "x": 4}
