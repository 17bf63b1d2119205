"""Runs written before config.json was versioned still resume: the folders in tests/fixtures/runs_v1 were
written by the previous release (see their README) and are resumed by today's commands."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from boundcheck.errors import InputError
from empirical.io import CONFIG_VERSION, CONFIG_VERSION_KEY, ResumableStore, migrate_config

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "runs_v1"


def test_version_1_keys_are_translated():
    old = {"model": "m", "pretrained": True, "format": 1}
    new = migrate_config(old)
    assert new == {"model": "m", "random_weights": False, "format": 1, CONFIG_VERSION_KEY: CONFIG_VERSION}
    assert "pretrained" in old  # the caller's dict is not modified
    assert migrate_config({"pretrained": False})["random_weights"] is True
    assert migrate_config(new) == new


def test_a_newer_version_is_one_line():
    with pytest.raises(InputError, match="written by a newer boundcheck"):
        migrate_config({CONFIG_VERSION_KEY: CONFIG_VERSION + 1})


def test_the_store_writes_the_version_and_resumes_a_version_1_folder(tmp_path):
    out = tmp_path / "run"
    ResumableStore(out, {"model": "m", "pretrained": True})
    written = json.loads((out / "config.json").read_text())
    assert written[CONFIG_VERSION_KEY] == CONFIG_VERSION and written["random_weights"] is False
    v1 = tmp_path / "v1"
    v1.mkdir()
    (v1 / "config.json").write_text(json.dumps({"model": "m", "pretrained": True}))
    assert ResumableStore.check(v1, {"model": "m", "random_weights": False}) is True
    with pytest.raises(InputError, match="random_weights: false -> true"):
        ResumableStore.check(v1, {"model": "m", "random_weights": True})


@pytest.mark.torch
def test_audit_folder_of_the_previous_release_is_accepted(tmp_path):
    pytest.importorskip("torch")
    from empirical.audit.run import AuditOptions, validate

    run = tmp_path / "audit"
    shutil.copytree(FIXTURES / "audit", run)
    opts = validate(AuditOptions(out=str(run), rules=("lrp_beta_1",), gammas=(100.0,), m_samples=0, n_images=1,
                                 threads=1))
    assert ResumableStore.check(run, opts.config()) is True


@pytest.mark.torch
def test_explain_folder_of_the_previous_release_resumes(tmp_path, capsys):
    """The same command in today's spelling continues the old folder: nothing recomputed, nothing refused.
    The stored code fingerprint is set to today's: it changes by design whenever the engine does."""
    torch = pytest.importorskip("torch")
    from boundcheck.cli import main
    from empirical.explain.run import code_hash

    run = tmp_path / "explain"
    shutil.copytree(FIXTURES / "explain", run)
    cfg = json.loads((run / "config.json").read_text())
    assert CONFIG_VERSION_KEY not in cfg and cfg["pretrained"] is True
    cfg["code"] = code_hash()
    (run / "config.json").write_text(json.dumps(cfg, indent=1, sort_keys=True) + "\n")
    before = (run / "records.jsonl").read_text()
    n = torch.get_num_threads()
    try:
        rc = main(["explain", "--out", str(run), "--methods", "gradient_x_input", "--m-grid", "1",
                   "--no-split-half", "--no-heatmaps", "--no-progress", "--threads", "1"])
    finally:
        torch.set_num_threads(n)
    err = capsys.readouterr().err
    assert rc == 0, err
    assert "0 image(s) written" in err
    assert (run / "records.jsonl").read_text() == before
    assert json.loads((run / "config.json").read_text()) == cfg  # the old file is kept as it was


def test_version_1_user_model_default_weights_read_as_random():
    """Version 1 of explain wrote weights "default" for a user model without --weights; it ran on the
    callable's random initialisation, which is what version 2 writes."""
    old = {"model": "net.py:build", "weights": "default", "pretrained": True}
    assert migrate_config(old)["weights"] == "random"
    assert migrate_config({"model": "resnet18", "weights": "default", "pretrained": True})["weights"] == "default"
    assert migrate_config({"model": "timm:resnet18", "weights": "default"})["weights"] == "default"
