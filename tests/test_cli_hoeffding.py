"""Tests of the ``samples``, ``deviation``, ``range`` and ``report`` commands."""

from __future__ import annotations

import json
import math
import os
import pathlib
import subprocess
import sys

import pytest

from boundcheck import bounds
from boundcheck.cli import main
from boundcheck.hoeffding import hoeffding_deviation, hoeffding_samples

ROOT = pathlib.Path(__file__).resolve().parents[1]

SAMPLES = ["samples", "--rule", "lrp-beta", "--beta", "1", "--layers", "50", "--t", "0.01", "--delta", "0.05"]


def _json(capsys, argv, **kw):
    assert main(argv) == 0
    out = capsys.readouterr().out
    lines = out.strip().splitlines()
    assert len(lines) == 1
    return json.loads(lines[0], **kw)


def test_samples_json_paper_and_exact(capsys):
    d = _json(capsys, SAMPLES + ["--json"])
    for key in ("m", "log10_m", "value_range", "bound", "rule", "layers", "t", "delta", "components", "formula"):
        assert key in d
    assert isinstance(d["m"], int) and d["m"] == hoeffding_samples(0.01, 0.05, bounds.eq31_value_range(1.0, 50))
    assert 64 < d["log10_m"] < 65 and d["bound"] == "paper"
    assert d["value_range"] == bounds.eq31_value_range(1.0, 50)
    e = _json(capsys, SAMPLES + ["--json", "--bound", "exact"])
    assert e["value_range"] == 3.0**50 and e["bound"] == "exact" and e["m"] < d["m"]


def test_samples_human_output_uses_scientific_notation(capsys):
    assert main(SAMPLES) == 0
    out = capsys.readouterr().out
    assert "m = 1.67e+64" in out and "eq. (31)" in out and "eq. (24)" in out


def test_samples_gamma_gradient_and_union_bound(capsys):
    g = _json(capsys, ["samples", "--rule", "lrp-gamma", "--gamma", "100", "--layers", "5", "--t", "0.1", "--delta", "0.05", "--json"])
    assert g["m"] == hoeffding_samples(0.1, 0.05, bounds.eq33_value_range(100.0, 5))
    gr = _json(capsys, ["samples", "--rule", "gradient", "--weight-norms", "3,4,5", "--lipschitz", "1", "--layers", "3", "--t", "1", "--delta", "0.05", "--components", "50176", "--json"])
    assert gr["value_range"] == 120.0 and gr["m"] == hoeffding_samples(1.0, 0.05, 120.0, components=50176)


def test_deviation_json(capsys):
    d = _json(capsys, ["deviation", "--rule", "lrp-beta", "--beta", "0", "--layers", "50", "--m", "100", "--delta", "0.05", "--json"])
    assert d["t"] == pytest.approx(hoeffding_deviation(0.05, 100, 1.0))
    huge = _json(capsys, ["deviation", "--rule", "lrp-beta", "--beta", "1", "--layers", "10000", "--m", "100", "--delta", "0.05", "--json"])
    assert isinstance(huge["t"], str) and "e+" in huge["t"] and huge["log10_t"] > 6000


def test_samples_depth_10000_prints_a_finite_number(capsys):
    # an int over 4300 digits (Python's json.loads limit) is written as its exact decimal string:
    # plain json.loads reads it, no parse_int needed
    d = _json(capsys, ["samples", "--rule", "lrp-beta", "--beta", "1", "--layers", "10000", "--t", "0.01", "--delta", "0.05", "--json"])
    assert isinstance(d["m"], str) and d["m"].isdigit() and len(d["m"]) == int(d["log10_m"]) + 1 and 12000 < d["log10_m"] < 12100
    assert main(["samples", "--rule", "lrp-beta", "--beta", "1", "--layers", "10000", "--t", "0.01", "--delta", "0.05"]) == 0
    out = capsys.readouterr().out
    assert "inf" not in out and "nan" not in out


def test_range_table(capsys):
    assert main(["range", "--rule", "lrp-gamma", "--gamma", "100", "--layers", "5"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 2 + 5 and "paper/exact" in out[1]
    d = _json(capsys, ["range", "--rule", "lrp-beta", "--beta", "1", "--layers", "3", "--json"])
    row = d["rows"][2]
    assert row["t"] == 3 and row["paper"]["P"] == pytest.approx(32.0) and row["exact"]["P"] == pytest.approx(14.0)
    assert row["ratio_paper_exact"] == pytest.approx(48 / 27)


def test_report_command(tmp_path, capsys):
    out = tmp_path / "r.md"
    assert main(["report", "--out", str(out)]) == 0
    text = out.read_text()
    assert text.startswith("# ") and "resnet50" in text and "e+" in text


BAD = [
    (["samples", "--rule", "lrp-beta", "--beta", "1", "--layers", "5", "--t", "0.1", "--delta", "1.5"], "delta"),
    (["samples", "--rule", "lrp-beta", "--beta", "1", "--layers", "5", "--t", "0.1", "--delta", "0"], "delta"),
    (["samples", "--rule", "lrp-beta", "--beta", "1", "--layers", "5", "--t", "0", "--delta", "0.05"], "t must"),
    (["samples", "--rule", "lrp-beta", "--beta", "1", "--layers", "5", "--t", "-1", "--delta", "0.05"], "t must"),
    (["deviation", "--rule", "lrp-beta", "--beta", "1", "--layers", "5", "--m", "0", "--delta", "0.05"], "m must"),
    (["samples", "--rule", "lrp-beta", "--beta", "-1", "--layers", "5", "--t", "0.1", "--delta", "0.05"], "beta"),
    (["samples", "--rule", "lrp-gamma", "--gamma", "1", "--layers", "5", "--t", "0.1", "--delta", "0.05"], "gamma > 1"),
    (["samples", "--rule", "lrp-gamma", "--gamma", "0.5", "--layers", "5", "--t", "0.1", "--delta", "0.05"], "gamma > 1"),
    (["samples", "--rule", "lrp-beta", "--beta", "1", "--layers", "0", "--t", "0.1", "--delta", "0.05"], "layers"),
    (["samples", "--rule", "lrp-beta", "--beta", "abc", "--layers", "5", "--t", "0.1", "--delta", "0.05"], "beta"),
    (["samples", "--rule", "lrp-beta", "--beta", "1", "--layers", "five", "--t", "0.1", "--delta", "0.05"], "layers"),
    (["samples", "--rule", "lrp-beta", "--beta", "1", "--layers", "5", "--t", "x", "--delta", "0.05"], "t must"),
    (["samples", "--rule", "lrp-beta", "--beta", "1", "--layers", "5", "--t", "0.1", "--delta", "nan"], "delta"),
    (["samples", "--rule", "lrp-beta", "--layers", "5", "--t", "0.1", "--delta", "0.05"], "--beta"),
    (["samples", "--rule", "lrp-gamma", "--gamma", "10", "--beta", "1", "--layers", "5", "--t", "0.1", "--delta", "0.05"], "--beta"),
    (["samples", "--rule", "gradient", "--weight-norms", "1,2", "--layers", "3", "--t", "0.1", "--delta", "0.05"], "weight-norms"),
    (["samples", "--rule", "gradient", "--weight-norms", "1,x,2", "--layers", "3", "--t", "0.1", "--delta", "0.05"], "weight norm"),
    (["samples", "--rule", "gradient", "--weight-norms", "1,-2", "--layers", "2", "--t", "0.1", "--delta", "0.05"], "norm"),
    (["samples", "--rule", "gradient", "--weight-norms", "1,2", "--lipschitz", "0", "--layers", "2", "--t", "0.1", "--delta", "0.05"], "lipschitz"),
    (["samples", "--rule", "lrp-beta", "--beta", "1", "--layers", "5", "--t", "0.1", "--delta", "0.05", "--components", "0"], "components"),
    (["samples", "--rule", "lrp-zero", "--layers", "5", "--t", "0.1", "--delta", "0.05"], "rule"),
    (["range", "--rule", "gradient", "--weight-norms", "1", "--layers", "1"], "gradient"),
]


@pytest.mark.parametrize("argv, needle", BAD, ids=[" ".join(a[-4:]) for a, _ in BAD])
def test_bad_input_exits_2_with_one_line(capsys, argv, needle):
    assert main(argv) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, captured.err
    assert needle in lines[0]
    assert captured.out == ""


def test_samples_command_imports_neither_torch_nor_sympy():
    code = (
        "import sys, boundcheck.cli as c; "
        "rc = c.main(['samples', '--rule', 'lrp-beta', '--beta', '1', '--layers', '50', '--t', '0.01', '--delta', '0.05', '--json']); "
        "assert rc == 0; "
        "assert 'torch' not in sys.modules and 'sympy' not in sys.modules, 'heavy import'; "
        "assert 'scipy' not in sys.modules, 'scipy import'"
    )
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    res = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["m"] > 10**64


def test_report_with_verdicts_appends_the_verdict_table(tmp_path, monkeypatch):
    """`boundcheck report --verdicts` gains the fuzz verdict table (run at a tiny size here)."""
    import boundcheck.fuzz.runner as runner

    real = runner.run_claims
    monkeypatch.setattr(runner, "run_claims", lambda seed=0: real(names=["thm3", "kr9"], examples=5, seed=seed))
    out = tmp_path / "r.md"
    assert main(["report", "--verdicts", "--out", str(out)]) == 0
    text = out.read_text()
    assert "## Fuzz verdicts" in text
    assert "`thm3`" in text and "FAILS" in text
    assert "Verdicts differing from the declared expectation (`boundcheck prove --list`): none." in text


# --------------------------------------------------------------------------- numbers policy: huge but finite inputs

_M400 = "1" + "0" * 400


def _no_constants(name):
    raise AssertionError(f"non-finite JSON constant {name}")


def _walk_numbers(obj):
    if isinstance(obj, dict):
        for v in obj.values():
            yield from _walk_numbers(v)
    elif isinstance(obj, list):
        for v in obj:
            yield from _walk_numbers(v)
    elif isinstance(obj, (int, float)) and not isinstance(obj, bool):
        yield obj


#: (argv, expected exit status); every run must print a strict JSON object (exit 0)
#: or exactly one error line (exit 2), never a traceback.
HUGE = [
    (["samples", "--rule", "lrp-beta", "--beta", "1e308", "--layers", "5", "--t", "0.1", "--delta", "0.05"], 0),
    (["samples", "--rule", "lrp-beta", "--beta", "1e308", "--layers", "5", "--t", "0.1", "--delta", "0.05", "--bound", "exact"], 0),
    (["deviation", "--rule", "lrp-beta", "--beta", "1e308", "--layers", "5", "--m", "10", "--delta", "0.05"], 0),
    (["range", "--rule", "lrp-beta", "--beta", "1e308", "--layers", "3"], 0),
    (["samples", "--rule", "lrp-gamma", "--gamma", "1e308", "--layers", "5", "--t", "0.1", "--delta", "0.05"], 0),
    (["samples", "--rule", "lrp-gamma", "--gamma", "1e308", "--layers", "5", "--t", "0.1", "--delta", "0.05", "--bound", "exact"], 0),
    (["range", "--rule", "lrp-gamma", "--gamma", "1e308", "--layers", "3"], 0),
    (["samples", "--rule", "lrp-beta", "--beta", "1", "--layers", "10000000", "--t", "0.1", "--delta", "0.05"], 0),
    (["deviation", "--rule", "lrp-beta", "--beta", "1", "--layers", "10000000", "--m", "100", "--delta", "0.05"], 0),
    (["range", "--rule", "lrp-beta", "--beta", "1", "--layers", "10000000"], 0),
    (["samples", "--rule", "lrp-beta", "--beta", "1", "--layers", "5", "--t", "0.1", "--delta", "1e-310"], 0),
    (["deviation", "--rule", "lrp-gamma", "--gamma", "1e308", "--layers", "5", "--m", "10", "--delta", "1e-310"], 0),
    (["samples", "--rule", "lrp-beta", "--beta", "1", "--layers", "5", "--t", "1e-320", "--delta", "0.05"], 0),
    (["deviation", "--rule", "lrp-beta", "--beta", "1", "--layers", "5", "--m", _M400, "--delta", "0.05"], 0),
    (["deviation", "--rule", "lrp-beta", "--beta", "1", "--layers", "5", "--m", "1e30", "--delta", "0.05"], 0),
    (["samples", "--rule", "lrp-beta", "--beta", "1", "--layers", "5", "--t", "0.1", "--delta", "0.05", "--components", _M400], 0),
    (["samples", "--rule", "gradient", "--weight-norms", "1e308,1e308", "--layers", "2", "--t", "1e-300", "--delta", "0.05"], 0),
    (["samples", "--rule", "lrp-beta", "--beta", "1", "--layers", "1e400", "--t", "0.1", "--delta", "0.05"], 2),
    (["samples", "--rule", "lrp-beta", "--beta", "1e309", "--layers", "5", "--t", "0.1", "--delta", "0.05"], 2),
    (["deviation", "--rule", "lrp-beta", "--beta", "1", "--layers", "5", "--m", "1e30000", "--delta", "0.05"], 2),
    (["deviation", "--rule", "lrp-beta", "--beta", "1", "--layers", "5", "--m", "1.5", "--delta", "0.05"], 2),
    (["range", "--rule", "lrp-beta", "--beta", "1", "--layers", "5", "--max-rows", "1"], 2),
]


@pytest.mark.parametrize("argv, status", HUGE, ids=[" ".join(a)[:70] for a, _ in HUGE])
@pytest.mark.parametrize("as_json", [True, False], ids=["json", "text"])
def test_huge_inputs_answer_or_one_line(capsys, argv, status, as_json):
    rc = main(argv + (["--json"] if as_json else []))
    cap = capsys.readouterr()
    assert rc == status, cap.err
    assert "Traceback" not in cap.err and "Traceback" not in cap.out
    if status == 2:
        assert len(cap.err.strip().splitlines()) == 1 and cap.out == ""
        return
    assert cap.err == ""
    assert len(cap.out) < 100_000  # no megabytes of digits or rows
    if as_json:
        doc = json.loads(cap.out, parse_constant=_no_constants, parse_int=int)
        for x in _walk_numbers(doc):
            assert isinstance(x, int) or math.isfinite(x)
    else:
        assert "inf" not in cap.out.lower().replace("infimum", "") and "nan" not in cap.out.lower()


def test_log10_m_is_finite_at_subnormal_delta(capsys):
    d = _json(capsys, ["samples", "--rule", "lrp-beta", "--beta", "1", "--layers", "5", "--t", "0.1", "--delta", "1e-310", "--json"],
              parse_constant=_no_constants)
    # ln(2/delta) = ln 2 + 310 ln 10 + ln(1/(delta*1e310)) for the subnormal float delta
    ln_term = math.log(2.0) - math.log(1e-310)
    assert d["log10_m"] == pytest.approx(math.log10(768.0**2 * ln_term / (2 * 0.01)), rel=1e-12)
    assert d["m"] == hoeffding_samples(0.1, 1e-310, 768) and d["m_exact"] is True


def test_integer_options_are_exact(capsys):
    d = _json(capsys, ["deviation", "--rule", "lrp-beta", "--beta", "1", "--layers", "5", "--m", "1e30", "--delta", "0.05", "--json"])
    assert d["m"] == 10**30  # not int(1e30) = 1000000000000000019884624838656
    assert d["t"] == pytest.approx(hoeffding_deviation(0.05, 10**30, 768.0), rel=1e-12)
    big = _json(capsys, ["deviation", "--rule", "lrp-beta", "--beta", "1", "--layers", "5", "--m", _M400, "--delta", "0.05", "--json"])
    assert big["m"] == 10**400 and big["log10_t"] == pytest.approx(math.log10(768 * math.sqrt(math.log(40.0) / 2)) - 200)


def test_exact_bound_is_exact_only_for_rational_ranges(capsys):
    e = _json(capsys, SAMPLES + ["--bound", "exact", "--json"])
    assert e["value_range_exact"] == 3**50 and e["m_exact"] is True
    from fractions import Fraction

    assert e["m"] == hoeffding_samples(0.01, 0.05, Fraction(3**50))
    g = _json(capsys, ["samples", "--rule", "lrp-gamma", "--gamma", "100", "--layers", "50", "--t", "0.01", "--delta", "0.05",
                       "--bound", "exact", "--json"])
    assert g["m_exact"] is False and "sqrt(gamma)" in g["m_note"] and "value_range_exact" not in g
    deep = _json(capsys, ["samples", "--rule", "lrp-beta", "--beta", "1", "--layers", "10000000", "--t", "0.1", "--delta", "0.05", "--json"])
    assert deep["m_exact"] is False and isinstance(deep["m"], str) and "digits" in deep["m_note"]
    mant, exp = deep["m"].split("e")
    assert float(mant) * 10 ** (float(exp) - int(deep["log10_m"])) >= 10 ** (deep["log10_m"] - int(deep["log10_m"]))


def test_range_elides_rows_beyond_max_rows(capsys):
    d = _json(capsys, ["range", "--rule", "lrp-beta", "--beta", "1", "--layers", "10000000", "--json"])
    ts = [r["t"] for r in d["rows"]]
    assert len(ts) == 200 and ts[:3] == [1, 2, 3] and ts[-1] == 10_000_000
    assert d["elided"]["from_t"] == 101 and d["elided"]["to_t"] == 10_000_000 - 100
    assert d["elided"]["count"] + len(ts) == 10_000_000
    assert main(["range", "--rule", "lrp-beta", "--beta", "1", "--layers", "7", "--max-rows", "4"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 2 + 4 + 1 and "t = 3 to 5 (3 rows) elided" in out[4]
    with pytest.raises(SystemExit):
        main(["range", "--help"])
    assert "at most 100000" in " ".join(capsys.readouterr().out.split())


# --------------------------------------------------------------------------- --model: the depth from the traced network


@pytest.mark.torch
def test_samples_model_takes_the_traced_depth(capsys):
    pytest.importorskip("torch")
    from boundcheck.networks import NETWORK_DEPTHS

    d = _json(capsys, ["samples", "--rule", "lrp-beta", "--beta", "1", "--model", "efficientnet-lite0", "--t", "0.01", "--delta", "0.05", "--json"])
    n = NETWORK_DEPTHS["efficientnet-lite0"]
    assert d["layers"] == n and "torch_network_depth" in d["depth_source"] and "efficientnet-lite0" in d["depth_source"]
    same = _json(capsys, ["samples", "--rule", "lrp-beta", "--beta", "1", "--layers", str(n), "--t", "0.01", "--delta", "0.05", "--json"])
    assert d["m"] == same["m"] and same["depth_source"] == "--layers"
    assert main(["range", "--rule", "lrp-gamma", "--gamma", "100", "--model", "resnet50", "--random-weights", "--max-rows", "4"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"depth n = {NETWORK_DEPTHS['resnet50']} from --model resnet50 (random weights)")


@pytest.mark.parametrize("argv, needle", [
    (["samples", "--rule", "lrp-beta", "--beta", "1", "--layers", "3", "--model", "resnet50", "--t", "0.1", "--delta", "0.05"], "not allowed"),
    (["samples", "--rule", "lrp-beta", "--beta", "1", "--t", "0.1", "--delta", "0.05"], "--layers"),
    (["samples", "--rule", "lrp-beta", "--beta", "1", "--layers", "3", "--random-weights", "--t", "0.1", "--delta", "0.05"], "--model"),
])
def test_model_option_errors(capsys, argv, needle):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and needle in err
