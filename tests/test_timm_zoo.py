"""The timm zoo of ``benchmarks/bench_coverage.py --zoo timm``: which model represents a module,
how degenerate initialisations are redrawn, how refusals are grouped into blockers.

The sweep itself (every module, float64, against the oracle) is a benchmark, not a test: see
BENCHMARKS.md.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
timm = pytest.importorskip("timm")

pytestmark = [pytest.mark.torch]

_PATH = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_coverage.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_coverage", _PATH)
    mod = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("bench_coverage", mod)
    spec.loader.exec_module(mod)
    return mod


def _meta_parameters(name):
    with torch.device("meta"):
        model = timm.create_model(name, pretrained=False)
    return sum(p.numel() for p in model.parameters())


def test_representative_is_the_smallest_model_of_its_module(bench):
    from timm.models import _registry

    zoo = bench.timm_zoo(["convmixer"])
    (row,) = zoo["representatives"]
    members = [n for n in timm.list_models() if _registry._model_to_module[n] == "convmixer"]
    counts = {n: _meta_parameters(n) for n in members}
    assert row["candidates"] == len(members) >= 2
    assert row["parameters"] == counts[row["model"]] == min(counts.values())
    with torch.device("meta"):
        cfg = timm.create_model(row["model"], pretrained=False).pretrained_cfg
    assert row["input_size"] == list(cfg["input_size"])
    assert zoo["modules"] > 1 and zoo["models"] >= len(members)


def test_unknown_module_is_an_input_error(bench):
    from boundcheck.errors import InputError

    with pytest.raises(InputError, match="no_such_module"):
        bench.timm_zoo(["no_such_module"])


def test_redraw_degenerate_redraws_zero_and_tiny_parameters_but_not_biases(bench):
    net = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Linear(3, 2))
    gamma = torch.nn.Parameter(torch.full((3,), 1e-5))
    net.register_parameter("gamma", gamma)
    with torch.no_grad():
        net[1].weight.zero_()
        net[1].bias.zero_()
    before = net[0].weight.detach().clone()
    redrawn = bench.redraw_degenerate(net, torch.Generator().manual_seed(0))
    assert redrawn == ["1.weight", "gamma"]
    assert torch.equal(net[0].weight, before)  # an ordinary weight is kept
    assert bool((net[1].bias == 0).all())  # a zero bias is an ordinary model
    assert float(net[1].weight.detach().abs().min()) > 0
    assert bool(((gamma >= 0.5) & (gamma <= 1.5)).all())


@pytest.mark.parametrize(("error", "expected"), [
    (("UnsupportedModuleError: unsupported operation 'batch_norm' in module 'stem.bn1' (node batch_norm): "
      "no LRP treatment is defined for this operation"), "batch_norm"),
    ("UnsupportedModuleError: unsupported module 'rnn' of type LSTM: no LRP treatment is defined", "LSTM"),
    (("UnsupportedModuleError: the model cannot be traced by torch.fx (TraceError: symbolically traced "
      "variables cannot be used as inputs to control flow); data-dependent ..."), "fx trace (TraceError)"),
])
def test_blocker_names_the_operation_or_module_type(bench, error, expected):
    assert bench.blocker({"status": "refused", "error": error}) == expected


def test_traceback_blocker_is_the_exception_type(bench):
    assert bench.blocker({"status": "traceback", "error": "RuntimeError: Mismatch in shape"}) == "RuntimeError"


def test_report_groups_refusals_and_counts_statuses(bench, tmp_path):
    rows = [
        {"model": "a", "module": "m1", "status": "exact", "lrp0_oracle_rel_error": 1e-14, "gradient_rel_error": 1e-15},
        {"model": "b", "module": "m2", "status": "refused",
         "error": "UnsupportedModuleError: unsupported operation 'sub' in module 'x' (node sub): why"},
        {"model": "c", "module": "m3", "status": "refused",
         "error": "UnsupportedModuleError: unsupported operation 'sub' in module 'y' (node sub): why"},
        {"model": "d", "module": "m4", "status": "traceback", "error": "RuntimeError: boom", "where": "f.py:1 in g"},
        {"model": "e", "module": "m5", "status": "inexact", "lrp0_oracle_rel_error": 0.5, "gradient_rel_error": 1e-15},
    ]
    path = tmp_path / "sweep.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows) + json.dumps({**rows[3], "status": "exact"}) + "\n")
    read = bench.read_jsonl(path)
    assert len(read) == 5 and {r["model"]: r["status"] for r in read}["d"] == "exact"  # the last row wins
    text = bench.timm_markdown(rows)
    assert "1 exact, 1 inexact, 2 refused, 1 traceback" in text
    assert "| `sub` | refused | 2 | b, c | b: unsupported operation 'sub'" in text
    assert "| `RuntimeError` | traceback | 1 | d | d: RuntimeError: boom (at f.py:1 in g) |" in text
    assert "- e (m5): LRP-0 5.0e-01" in text


def test_cli_bad_input_is_one_line_and_status_2(bench, tmp_path, capsys):
    assert bench.main(["--zoo", "timm", "--report", str(tmp_path / "missing.jsonl")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "missing.jsonl" in err
    assert bench.main(["--zoo", "timm", "--jobs", "0"]) == 2
