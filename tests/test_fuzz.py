"""The fuzz claim registry at CI size: verdicts, independent re-checks of every
counterexample, reproducibility, JSON and the CLI's error handling.

The registry runs once per session (``examples=60``, ``seed=0``, small
adversarial budget).  A changed verdict fails CI.  Every counterexample is
recomputed here from its printed exact numbers with plain numpy/scipy, without
the claim's checker, :mod:`boundcheck.rules` or :mod:`boundcheck.bounds`.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

pytest.importorskip("hypothesis")

from boundcheck import claims_registry  # noqa: E402
from boundcheck.cli import main  # noqa: E402
from boundcheck.fuzz.claims import CLAIMS  # noqa: E402
from boundcheck.fuzz.runner import run_claims, verdict_table_markdown, verdict_table_text  # noqa: E402

CI_EXAMPLES = 60
SEED = 0

#: claim -> expected verdict at the CI size, declared once in boundcheck.claims_registry
EXPECTED = {name: claims_registry.CLAIMS[name].expected_fuzz for name in claims_registry.fuzzed()}


@pytest.fixture(scope="module")
def verdicts():
    return {v.claim: v for v in run_claims(examples=CI_EXAMPLES, seed=SEED, adversarial="small")}


def test_registry_has_every_claim_once():
    assert list(CLAIMS) == list(EXPECTED)
    for name, c in CLAIMS.items():  # reference and statement come from the one registry
        assert (c.source, c.statement) == (claims_registry.CLAIMS[name].reference, claims_registry.CLAIMS[name].statement)


def test_fuzz_check_of_an_undeclared_claim_is_refused():
    from boundcheck.fuzz.claims import Claim

    with pytest.raises(ValueError, match="not declared"):
        Claim.declared("no_such_claim", lambda: None, lambda ex: None, lambda ex: {})
    with pytest.raises(ValueError, match="not declared"):
        Claim.declared("eq31_exact", lambda: None, lambda ex: None, lambda ex: {})  # certified, not fuzzed


@pytest.mark.parametrize("name", list(EXPECTED))
def test_verdict_is_unchanged(verdicts, name):
    v = verdicts[name]
    assert v.verdict == EXPECTED[name], (name, v.verdict, v.counterexample, v.counterexample_details)
    assert v.examples >= 1
    if v.verdict == "HOLDS":
        assert v.counterexample is None
        assert v.examples == CI_EXAMPLES or name in ("kr9_upper",)  # small spaces may be exhausted
        if v.max_ratio is not None:
            assert v.max_ratio <= 1 + 1e-9
    if v.verdict in ("FAILS", "HOLDS_ONLY_UNDER"):
        assert v.counterexample is not None
    if v.verdict == "HOLDS_ONLY_UNDER":
        assert v.condition
        assert v.counterexample_details["satisfies_condition"] is False


# --------------------------------------------------------------------------- independent re-checks


def _lrp_gamma_relevances(layers, x, q, gamma):
    """Plain numpy LRP-gamma ([P1] eq. (9), 0/0 := 0, bias forward only), relevance at each depth."""
    zs, z = [], np.asarray(x, float)
    for r, (W, b) in enumerate(layers):
        zs.append(z)
        a = W @ z + b
        z = np.maximum(a, 0) if r < len(layers) - 1 else a
    rel, out = np.asarray(q, float), []
    for (W, _), z in zip(reversed(layers), reversed(zs)):
        y = W * z
        num = y + gamma * np.maximum(y, 0)
        den = num.sum(axis=1)
        M = np.divide(num, den[:, None], out=np.zeros_like(num), where=den[:, None] != 0)
        rel = M.T @ rel
        out.append(rel)
    return out


def test_thm3_counterexample_independently(verdicts):
    M = np.array(verdicts["thm3"].counterexample["M"])
    S, R = M.shape
    assert np.allclose(M.sum(axis=0), 1.0, rtol=0, atol=1e-12)  # relevance conserving
    sv = np.linalg.svd(M, compute_uv=False)
    one = np.ones(S)
    image = M @ M.T @ one
    not_vector = np.linalg.norm(image - (R / S) * one) > 1e-6
    not_value = np.min(np.abs(sv - math.sqrt(R / S))) > 1e-6
    assert not_vector or not_value


def test_lemma8_no_condition_counterexample_independently(verdicts):
    ce = verdicts["lemma8_no_condition"].counterexample
    layers = [(np.array(l["W"], float), np.array(l["b"], float)) for l in ce["layers"]]
    g = ce["gamma"]
    s = math.sqrt(g)
    c_plus = (1 + g) / (1 + g - s)
    b = max(1 / (s - 1), c_plus)
    rels = _lrp_gamma_relevances(layers, ce["x"], ce["q"], g)
    violated = False
    for t, r in enumerate(rels, start=1):
        P, N = r[r > 0].sum(), -r[r < 0].sum()
        violated |= P > 2 ** (t - 1) * c_plus * b ** (t - 1) * (1 + 1e-6)
        violated |= N > 2 ** (t - 1) * b ** (t - 1) / (s - 1) * (1 + 1e-6)
    assert violated
    # and condition (29) is indeed violated somewhere
    z, bad = np.asarray(ce["x"], float), False
    for r, (W, bb) in enumerate(layers):
        y = W * z
        Pa, Na = np.maximum(y, 0).sum(1), -np.minimum(y, 0).sum(1)
        bad |= bool(np.any((Pa > 0) & (Na / s >= Pa)))
        a = W @ z + bb
        z = np.maximum(a, 0) if r < len(layers) - 1 else a
    assert bad


def test_kr9_counterexample_independently(verdicts):
    from scipy.special import gammaln

    ce = verdicts["kr9"].counterexample
    R, sigma = ce["R"], ce["sigma"]
    exact = sigma * math.sqrt(2) * math.exp(gammaln((R + 1) / 2) - gammaln(R / 2))
    assert abs(exact - math.sqrt(R) * sigma) > 1e-6 * exact
    assert exact < math.sqrt(R) * sigma


def test_rank_sign_counterexample_independently(verdicts):
    from scipy.stats import rankdata

    ce = verdicts["sanity_thm3_rank_sign"].counterexample
    a, b = np.array(ce["a"]), np.array(ce["b"])
    pearson = np.mean((a - a.mean()) * (b - b.mean()))
    ra, rb = rankdata(a), rankdata(b)
    rank_cov = np.mean((ra - ra.mean()) * (rb - rb.mean()))
    assert (rank_cov >= 0) != (pearson >= 0), (rank_cov, pearson)
    assert min(abs(rank_cov), 1) > 1e-9 or min(abs(pearson), 1) > 1e-9 or rank_cov != pearson


def test_kr1_counterexample_independently(verdicts):
    ce = verdicts["kr1"].counterexample
    W, z = np.array(ce["W"]), np.array(ce["z"])
    y = W * z
    P = np.maximum(y, 0).sum(1)
    assert np.any(P == 0)  # violates the condition
    diffs = []
    for gamma in (1e6, 1e9, 1e12):  # the gamma entries are constant in gamma on these rows
        num = y + gamma * np.maximum(y, 0)
        den = num.sum(1)
        A = np.divide(num, den[:, None], out=np.zeros_like(num), where=den[:, None] != 0)
        B = np.divide(np.maximum(y, 0), P[:, None], out=np.zeros_like(y), where=P[:, None] != 0)
        diffs.append(np.max(np.abs(A - B)))
    assert min(diffs) > 0.1


def test_adaptive_beta_counterexample_independently(verdicts):
    ce = verdicts["adaptive_beta"].counterexample
    y = np.array(ce["W"]) * np.array(ce["z"])
    P, N = np.maximum(y, 0).sum(1), np.minimum(y, 0).sum(1)
    assert np.any(P + N <= 0)
    for p, n in zip(P, N):
        if p + n <= 0:  # eq. (1) has no solution beta >= 0 (or is 0/0)
            assert p == 0 or -n / p >= 1


def test_thm3_rayleigh_counterexample_independently(verdicts):
    M = np.array(verdicts["thm3_rayleigh"].counterexample["M"])
    S, R = M.shape
    assert not np.allclose(M.sum(axis=0), 1.0)
    assert abs((M.sum(axis=0) ** 2).sum() / S - R / S) > 1e-9


def test_adversarial_worst_cases_within_exact_bounds(verdicts):
    for name in ("lemma7", "lemma7_exact", "lemma8", "lemma8_exact"):
        adv = verdicts[name].adversarial
        assert adv is not None
        for s in adv["searches"]:
            assert s["worst_positive_sum"] <= s["exact_bound"] * (1 + 1e-9) <= s["paper_bound"] * (1 + 1e-9)
            assert s["witness_over_exact"] > 1 - 1e-6 and s["witness_over_exact"] <= 1 + 1e-9


# --------------------------------------------------------------------------- reproducibility, JSON, CLI


def test_same_seed_same_verdicts_and_counterexamples(verdicts):
    names = ["thm3", "lemma8_no_condition", "sanity_thm3_rank_sign", "kr1"]
    again = run_claims(names, examples=CI_EXAMPLES, seed=SEED, adversarial="none")
    for v in again:
        first = verdicts[v.claim].to_dict()
        second = v.to_dict()
        for key in ("seconds", "adversarial"):
            first.pop(key, None)
            second.pop(key, None)
        assert first == second


def test_verdicts_serialise_to_strict_json(verdicts):
    text = json.dumps([v.to_dict() for v in verdicts.values()], allow_nan=False)
    data = json.loads(text)
    assert {d["claim"] for d in data} == set(EXPECTED)
    assert all({"claim", "verdict", "examples"} <= set(d) for d in data)
    assert all("counterexample" in d for d in data if d["verdict"] == "FAILS")


def test_tables_render(verdicts):
    md = verdict_table_markdown(list(verdicts.values()))
    assert md.count("\n| `") >= len(EXPECTED)
    txt = verdict_table_text(list(verdicts.values()))
    assert "thm3: FAILS, shrunk counterexample" in txt


def test_cli_json_parses(capsys):
    assert main(["fuzz", "--claim", "thm3", "--claim", "kr9_upper", "--examples", "10", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert [d["claim"] for d in data] == ["thm3", "kr9_upper"]
    assert data[0]["verdict"] == "FAILS" and "counterexample" in data[0]


@pytest.mark.parametrize("argv, needle", [
    (["fuzz", "--claim", "no_such_claim"], "no_such_claim"),
    (["fuzz", "--examples", "0"], "--examples"),
    (["fuzz", "--examples", "x"], "examples"),
])
def test_cli_bad_input_is_one_line_exit_2(capsys, argv, needle):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and needle in err
