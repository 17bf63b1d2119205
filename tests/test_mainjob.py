"""The main job (`make run`): sections are written as they finish, failures are contained,
and every section's entry point exists with the contract the main job uses."""

from __future__ import annotations

import inspect

import pytest

from boundcheck.cli import mainjob
from boundcheck.cli import main


def test_bounds_and_proofs_sections_written(tmp_path):
    out = tmp_path / "rep"
    assert main(["main", "--out", str(out), "--skip", "fuzz,empirical,audit,sanity,explain"]) == 0
    text = (out / "report.md").read_text()
    assert "## Bounds for the paper's settings" in text
    assert "`thm3` | **disproved**" in text
    assert "_skipped (--skip)._" in text
    # section headings are nested under the section titles
    assert "\n# " not in text.split("\n", 1)[1]


def test_a_failing_section_keeps_the_others(tmp_path, monkeypatch):
    def boom(out, args):
        raise RuntimeError("simulated failure")

    monkeypatch.setitem(mainjob._RUNNERS, "proofs", boom)
    out = tmp_path / "rep"
    assert main(["main", "--out", str(out), "--skip", "fuzz,empirical,audit,sanity,explain"]) == 1
    text = (out / "report.md").read_text()
    assert "## Bounds for the paper's settings" in text  # computed before the failure, kept
    assert "This section failed" in text and "simulated failure" in text
    assert (out / "proofs.error.txt").exists()


def test_bad_skip_is_one_line_exit_2(tmp_path, capsys):
    assert main(["main", "--out", str(tmp_path), "--skip", "nonsense"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "nonsense" in err


@pytest.mark.torch
def test_empirical_entry_points_exist_with_the_contract_used():
    pytest.importorskip("torch")
    from empirical.audit.cli import run_embedded_default as audit_default
    from empirical.experiment import run_embedded_default as experiment_default
    from empirical.sanity import run_embedded_default as sanity_default

    for fn in (audit_default, experiment_default, sanity_default):
        assert list(inspect.signature(fn).parameters)[0] == "out_dir"
    assert "seed" in inspect.signature(experiment_default).parameters
    src = inspect.getsource(mainjob)
    assert '["markdown"]' in src and src.count('["summary"]') == 2
