"""Per-depth accounting of empirical.audit.relevance: engine records on tiny torch nets vs numpy chains."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from boundcheck.bounds import lemma7_bounds  # noqa: E402
from boundcheck.rules import conservation_defect, forward_chain, parse_rule  # noqa: E402
from empirical.audit import relevance as rv  # noqa: E402
from empirical.engine import Explainer  # noqa: E402

pytestmark = pytest.mark.torch


def _mlp(seed=0, dims=(6, 5, 4, 3)):
    rng = np.random.default_rng(seed)
    layers = [(rng.normal(size=(dims[i + 1], dims[i])), 0.3 * rng.normal(size=dims[i + 1])) for i in range(len(dims) - 1)]
    mods = [torch.nn.Flatten()]
    for i, (W, b) in enumerate(layers):
        lin = torch.nn.Linear(W.shape[1], W.shape[0], dtype=torch.float64)
        with torch.no_grad():
            lin.weight.copy_(torch.from_numpy(W))
            lin.bias.copy_(torch.from_numpy(b))
        mods.append(lin)
        if i < len(layers) - 1:
            mods.append(torch.nn.ReLU())
    return layers, torch.nn.Sequential(*mods).double().eval()


@pytest.mark.parametrize("rule_name", ["lrp_beta_0", "lrp_beta_1", "lrp_gamma_100"])
def test_engine_depth_sums_equal_the_numpy_chain(rule_name):
    layers, model = _mlp()
    x = np.random.default_rng(3).normal(size=6)
    ex = Explainer(model, dtype=torch.float64)
    xt = torch.from_numpy(x).reshape(1, 6, 1, 1)
    att = ex.attribute(xt, [rule_name], record=True, reduce="none")
    target = int(att.target[0])
    q = np.zeros(3)
    q[target] = 1.0
    rs = forward_chain(layers, x, parse_rule(rule_name)).relevance(q)
    recs = att.records[rule_name]
    assert rv.network_depth(recs) == 3
    got = rv.depth_sums(recs, 0)
    want = rv.chain_depth_sums(rs)
    assert set(got) == set(want) == {1, 2, 3}
    for t in want:
        np.testing.assert_allclose(got[t], want[t], rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(att.maps[rule_name][0].reshape(-1).numpy(), rs[-1], rtol=1e-10, atol=1e-12)
    rows = rv.depth_table(recs, rule_name, 0, input_map=att.maps[rule_name][0].numpy())
    assert [r["t"] for r in rows] == [1, 2, 3]
    if rule_name.startswith("lrp_beta"):
        for r in rows:
            assert not r["exceeds_exact"] and not r["exceeds_paper"]


def test_layer_defect_equals_the_column_defects_of_the_transition_matrices():
    """Per layer, sum(R_in) - sum(R_out) = sum_a defect_a R_a (Definition 2 / eq. 16)."""
    layers, model = _mlp(seed=5)
    x = np.random.default_rng(4).normal(size=6)
    rule = parse_rule("lrp_beta_1")
    ex = Explainer(model, dtype=torch.float64)
    att = ex.attribute(torch.from_numpy(x).reshape(1, 6, 1, 1), ["lrp_beta_1"], record=True)
    q = np.zeros(3)
    q[int(att.target[0])] = 1.0
    chain = forward_chain(layers, x, rule)
    rs = chain.relevance(q)
    want = [float(conservation_defect(M) @ rs[len(layers) - 1 - i]) for i, M in enumerate(chain.matrices)]
    rows = [r for r in rv.layer_table(att.records["lrp_beta_1"], "lrp_beta_1") if r["kind"] == "linear"]
    got = {r["t"]: r["defect"] for r in rows}
    for i in range(len(layers)):
        t = len(layers) - i
        assert got[t] == pytest.approx(want[i], abs=1e-10)


def test_depth_table_flags_a_sum_above_the_bound():
    class R:  # a fake record: a linear op at t=1 whose input relevance exceeds 1+beta
        node, kind, depth = "fc", "linear", 0
        relevance_out_pos = np.array([1.0])
        relevance_out_neg = np.array([0.0])
        relevance_in_pos = np.array([2.5])
        relevance_in_neg = np.array([-0.5])
        pos_sum = neg_sum = None

    rows = rv.depth_table([R()], "lrp_beta_1")
    assert rows[0]["exceeds_exact"] and rows[0]["ratio_pos_exact"] == pytest.approx(2.5 / lemma7_bounds(1, 1, "exact").positive_upper)
