"""Tests for the sympy proof certificates (``proofs``) and ``boundcheck prove``.

All certificates are built once per session through the CLI (``--json``); the
statuses are pinned so that a changed verdict fails CI, and every counterexample
embedded in a non-proved step is re-checked numerically with numpy, independently
of sympy.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import pathlib

import numpy as np
import pytest

import proofs
from boundcheck import claims_registry
from boundcheck.cli import main
from proofs.certificate import Certificate, Step

ROOT = pathlib.Path(__file__).resolve().parents[1]

#: claim -> expected certificate status, declared once in boundcheck.claims_registry
EXPECTED = {name: claims_registry.CLAIMS[name].expected_certificate for name in claims_registry.certified()}


@pytest.fixture(scope="session")
def cli_json():
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        rc = main(["prove", "--json"])
    assert rc == 0
    data = json.loads(buf.getvalue())
    return {d["claim"]: d for d in data}, [d["claim"] for d in data]


def _step(cert: dict, fragment: str) -> dict:
    hits = [s for s in cert["steps"] if fragment in s["name"]]
    assert hits, f"no step containing {fragment!r} in {cert['claim']}"
    return hits[0]


# --------------------------------------------------------------------------- registry / statuses

def test_registry_names_match_expected():
    assert list(proofs.REGISTRY) == list(EXPECTED)
    assert EXPECTED and all(status in claims_registry.CERTIFICATE_STATUSES for status in EXPECTED.values())


def test_cli_json_lists_every_claim(cli_json):
    by_name, order = cli_json
    assert order == list(proofs.REGISTRY)
    for d in by_name.values():
        assert {"claim", "status", "source", "statement", "steps"} <= set(d)
        assert d["steps"], d["claim"]
        for s in d["steps"]:
            assert s["status"] in ("proved", "disproved", "needs-assumption")
            assert s["method"]


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_status(cli_json, name):
    by_name, _ = cli_json
    assert by_name[name]["status"] == EXPECTED[name]


def test_non_proved_steps_carry_a_note(cli_json):
    by_name, _ = cli_json
    for d in by_name.values():
        for s in d["steps"]:
            if s["status"] != "proved":
                assert s["note"], (d["claim"], s["name"])


def test_certificate_status_rule():
    ok = Step("a", "a", "proved", "m")
    bad = Step("b", "b", "disproved", "m")
    needs = Step("c", "c", "needs-assumption", "m")
    assert Certificate("x", "s", "t", (ok, ok)).status == "proved"
    assert Certificate("x", "s", "t", (ok, needs)).status == "needs-assumption"
    assert Certificate("x", "s", "t", (needs, bad, ok)).status == "disproved"
    assert Certificate("x", "s", "t", (ok,)).to_dict()["steps"][0]["status"] == "proved"
    with pytest.raises(ValueError):
        Step("d", "d", "maybe", "m")


def test_certify_unknown_raises():
    with pytest.raises(KeyError):
        proofs.certify(["no_such_claim"])


# --------------------------------------------------------------------------- CLI

def test_cli_unknown_name_exit_2_one_line(capsys):
    rc = main(["prove", "no_such_claim"])
    captured = capsys.readouterr()
    assert rc == 2
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1
    assert "unknown claim 'no_such_claim'" in lines[0] and "thm3" in lines[0]


def test_cli_table_subset(capsys):
    rc = main(["prove", "thm3", "eq31"])
    out = capsys.readouterr().out
    assert rc == 0
    assert "claim" in out.splitlines()[0] and "status" in out.splitlines()[0]
    assert "thm3" in out and "disproved" in out and "eq31" in out
    assert "steps not proved:" in out and "constant row sums" in out


# --------------------------------------------------------------------------- numpy re-checks of counterexamples

def test_thm3_counterexample_numpy(cli_json):
    by_name, _ = cli_json
    step = _step(by_name["thm3"], "singular vector")
    assert step["status"] == "disproved"
    M = np.array([[float(eval(x)) for x in row] for row in step["data"]["M"]])  # noqa: S307 (rationals)
    # rebuild independently: LRP-0 for W = [[1,0],[1,1]], z = [1,1]
    W = np.array([[1.0, 0.0], [1.0, 1.0]])
    z = np.array([1.0, 1.0])
    contrib = np.maximum(W * z[None, :], 0.0)           # R x S
    M2 = (contrib / contrib.sum(axis=1, keepdims=True)).T  # S x R
    np.testing.assert_allclose(M, M2)
    S, R = M.shape
    np.testing.assert_allclose(M.sum(axis=0), np.ones(R))          # relevance conserving
    v = M @ M.T @ np.ones(S)
    assert abs(v[0] - v[1]) > 1e-6                                  # not parallel to 1_S
    sv = np.linalg.svd(M, compute_uv=False)
    assert np.min(np.abs(sv - math.sqrt(R / S))) > 1e-3             # sqrt(R/S) is no singular value
    assert sv.max() >= math.sqrt(R / S) - 1e-12                     # but the Rayleigh bound holds


def test_kr9_counterexamples_numpy(cli_json):
    by_name, _ = cli_json
    r = np.linspace(0.0, 40.0, 400001)

    def chi_pdf(R):
        return r ** (R - 1) * np.exp(-r ** 2 / 2) / (2 ** (R / 2 - 1) * math.gamma(R / 2))

    step = _step(by_name["kr9"], "KR 9")
    mean1 = np.trapezoid(r * chi_pdf(1), r)
    assert abs(mean1 - step["data"]["exact"]) < 1e-6
    assert abs(mean1 - step["data"]["paper"]) > 0.15                # sqrt(2/pi) ~ 0.798 vs 1
    step2 = _step(by_name["kr9"], "expectation of ||W_l||_2^2")
    second4 = np.trapezoid(r ** 2 * chi_pdf(4), r)
    assert abs(second4 - step2["data"]["exact"]) < 1e-6 and abs(second4 - step2["data"]["paper"]) > 1
    # E||W|| < sqrt(R) sigma and the ratio tends to 1
    ratios = [np.trapezoid(r * chi_pdf(R), r) / math.sqrt(R) for R in (1, 2, 10, 100)]
    assert all(q < 1 for q in ratios) and ratios == sorted(ratios) and ratios[-1] > 0.99


def test_rank_sign_counterexample_numpy(cli_json):
    by_name, _ = cli_json
    step = by_name["sanity_thm3_rank_sign"]["steps"][0]
    a = np.array(step["data"]["A"], dtype=float)
    b = np.array(step["data"]["B"], dtype=float)
    cov = np.cov(a, b, bias=True)[0, 1]
    ra, rb = a.argsort().argsort() + 1.0, b.argsort().argsort() + 1.0
    rcov = np.cov(ra, rb, bias=True)[0, 1]
    assert cov < 0 < rcov
    assert abs(cov - float(eval(step["data"]["cov"]))) < 1e-9       # noqa: S307
    assert abs(rcov - float(eval(step["data"]["rank_cov"]))) < 1e-9  # noqa: S307


def test_overtaking_counterexample_numpy(cli_json):
    by_name, _ = cli_json
    step = _step(by_name["sanity_thm2_overtaking"], "'='")
    xs = np.array([float(eval(v)) for v in step["data"]["XS"]])     # noqa: S307
    xl = np.array([float(eval(v)) for v in step["data"]["XL"]])     # noqa: S307
    K = step["data"]["K"]
    assert xl.min() >= K * xs.max()                                  # eq. (21)
    g1 = math.sqrt((xs ** 2).sum() / (xl ** 2).sum())
    g2 = math.sqrt(len(xs) / len(xl))
    tail = lambda x, g: 0.5 - math.atan(x / g) / math.pi  # noqa: E731
    assert g1 < g2 / K
    assert tail(1, g1) < tail(K, g2) - 1e-3                          # strict: "=" fails, "<=" holds
    # Monte Carlo sanity of the Cauchy ratio law (eq. 22) with the seeded generator
    rng = np.random.default_rng(0)
    w = rng.standard_normal((200000, 2))
    ratio = (w[:, 0] * 2.0) / (w[:, 1] * 0.5)                       # scale 4
    assert abs(np.mean(ratio >= 4.0) - tail(4.0, 4.0)) < 5e-3


def test_adaptive_beta_numpy(cli_json):
    by_name, _ = cli_json
    rng = np.random.default_rng(1)
    P = rng.uniform(1.0, 5.0, 100)
    N = -rng.uniform(0.0, 0.99, 100) * P                             # P + N > 0
    beta_a = -N / (P + N)
    beta_b = -N / (P - N)
    np.testing.assert_allclose(beta_a / (1 + beta_a), -N / P)
    assert np.all(np.abs(beta_b / (1 + beta_b) + N / P) > 1e-6)      # signed reading fails eq. (1)
    Pbad, Nbad = 1.0, -2.0                                           # P + N < 0
    assert -Nbad / (Pbad + Nbad) <= -1
    assert by_name["adaptive_beta"]["steps"][1]["status"] == "needs-assumption"


def test_lemma8_threshold_numpy(cli_json):
    by_name, _ = cli_json
    step = _step(by_name["lemma8"], "gamma >= 4")
    roots = np.roots([1.0, -2.0, 2.0, -2.0])
    s0 = float(roots[np.abs(roots.imag) < 1e-12].real.max())
    assert abs(s0 - step["data"]["s0"]) < 1e-9
    assert abs(s0 ** 2 - step["data"]["gamma0"]) < 1e-9 and 2.38 < s0 ** 2 < 2.39
    s = np.linspace(1.0001, 4.0, 20000)
    cplus = (1 + s ** 2) / (1 + s ** 2 - s)
    start = 1 / (s - 1)
    assert np.all((cplus >= start) == (s >= s0))


# --------------------------------------------------------------------------- the deciders react to the mathematics

def test_deciders_are_not_constant():
    import sympy as sp

    from proofs.certificate import identity_status, poly_sign_on_interval, sign_nonneg
    from proofs.lemma8 import threshold_polynomial

    b = sp.Symbol("beta", nonnegative=True)
    assert identity_status((1 + b) ** 2, 1 + 2 * b + b ** 2) == "proved"
    assert identity_status((1 + b) ** 2, 1 + 2 * b) == "disproved"
    assert sign_nonneg(-b - 1) is False
    s = sp.Symbol("s", real=True)
    poly = threshold_polynomial(s)
    assert poly_sign_on_interval(poly, s, 2, sp.oo)[0] == 1            # gamma >= 4: holds
    sign, roots = poly_sign_on_interval(poly, s, sp.sqrt(2), sp.oo)    # gamma >= 2: a root inside
    assert sign is None and len(roots) == 1


# --------------------------------------------------------------------------- the claim registry and its index


def test_every_declared_certificate_and_bound_resolves():
    import importlib

    for spec in claims_registry.CLAIMS.values():
        if spec.certificate is not None:
            assert callable(spec.load_certificate()), spec.name
        if spec.bound is not None:
            module, _, func = spec.bound_function.rpartition(".")
            assert callable(getattr(importlib.import_module(module), func)), spec.name
        assert spec.reference.startswith(("[P1]", "[P2]")) and spec.statement, spec.name
        assert spec.tests and all((ROOT / t).is_file() for t in spec.tests), spec.name


def test_cli_list_prints_the_index_without_sympy(capsys):
    import subprocess
    import sys

    assert main(["prove", "--list", "--json"]) == 0
    index = json.loads(capsys.readouterr().out)
    assert [d["claim"] for d in index] == list(claims_registry.CLAIMS)
    by = {d["claim"]: d for d in index}
    assert by["lemma8_no_condition"]["certificate"] is None and by["lemma8_no_condition"]["expected_fuzz"] == "FAILS"
    assert by["eq31_exact"]["fuzz"] is None and by["eq31_exact"]["expected_certificate"] == "proved"
    assert main(["prove", "--list"]) == 0
    text = capsys.readouterr().out
    assert all(name in text for name in claims_registry.CLAIMS)
    md = claims_registry.index_markdown().splitlines()
    assert len(md) == 2 + len(claims_registry.CLAIMS)
    assert all(row.startswith(f"| `{name}` | {spec.reference} |") for row, (name, spec) in zip(md[2:], claims_registry.CLAIMS.items()))
    code = ("import sys; from boundcheck.cli import main; main(['prove', '--list']); "
            "assert 'sympy' not in sys.modules and 'hypothesis' not in sys.modules and 'torch' not in sys.modules")
    res = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                         env={**__import__("os").environ, "PYTHONPATH": str(ROOT)})
    assert res.returncode == 0, res.stderr


def test_prove_rejects_a_fuzz_only_claim(capsys):
    assert main(["prove", "lemma8_no_condition"]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "no sympy certificate" in err


def test_registry_refuses_inconsistent_declarations():
    with pytest.raises(ValueError, match="twice"):
        claims_registry.declare("thm3", "[P1] x", "y")
    with pytest.raises(ValueError, match="expected status"):
        claims_registry.declare("new_claim_x", "[P1] x", "y", certificate="proofs.thm3:certificate")
    with pytest.raises(ValueError, match="verdict"):
        claims_registry.declare("new_claim_y", "[P1] x", "y", expected_fuzz="MAYBE")
    assert "new_claim_x" not in claims_registry.CLAIMS and "new_claim_y" not in claims_registry.CLAIMS
