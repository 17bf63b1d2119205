"""``boundcheck audit`` is resumable: one record per image as it finishes, a re-run continues
(after a SIGKILL too) and gives the records of an uninterrupted run; unreadable images are
recorded and skipped; a resume with other options is refused."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("efficientnet_lite_pytorch")

from boundcheck.cli import main  # noqa: E402
from boundcheck.errors import InputError  # noqa: E402
from empirical.io import read_jsonl  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
#: small and fast: one rule, one gamma, one augmentation, K = 2
FAST = ["--methods", "lrp_beta_1", "--gamma-sweep", "100", "--m-samples", "2", "--augmentation", "gaussian",
        "--threads", "1"]
TABLES = ("depth_sums.csv", "layers.csv", "condition29.csv", "ranges.csv", "conservation.csv")


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    from empirical.data import foolbox_photos

    d = tmp_path_factory.mktemp("photos")
    for it in foolbox_photos(4):
        shutil.copy(it.path, d)
    return d


@pytest.fixture(scope="module")
def reference(tmp_path_factory, photos):
    out = tmp_path_factory.mktemp("ref")
    assert main(["audit", "--out", str(out), "--images", str(photos), "--n-images", "4", *FAST]) == 0
    return out


def _records(out):
    return sorted(read_jsonl(Path(out) / "results.jsonl"), key=lambda r: r["index"])


def _same_as_reference(out, reference):
    assert _records(out) == _records(reference)
    for name in TABLES:
        assert (Path(out) / name).read_text() == (reference / name).read_text(), name


def test_records_are_written_per_image_and_tables_built_from_them(reference):
    recs = _records(reference)
    assert [r["index"] for r in recs] == [0, 1, 2, 3]
    assert all("depth_tables" in r and "skipped" not in r for r in recs)
    cfg = json.loads((reference / "config.json").read_text())
    assert cfg["rules"] == ["lrp_beta_1"] and cfg["m_samples"] == 2
    audit = json.loads((reference / "audit.json").read_text())
    assert audit["images"] == [r["id"] for r in recs]
    assert "NaN" not in (reference / "audit.json").read_text()


def test_in_process_interruption_then_resume_is_identical(tmp_path, photos, reference, monkeypatch):
    import empirical.audit.run as run

    real, calls = run.audit_image, []

    def interrupted(*a, **kw):
        if len(calls) == 2:
            raise KeyboardInterrupt  # a kill after two images
        calls.append(1)
        return real(*a, **kw)

    monkeypatch.setattr(run, "audit_image", interrupted)
    out = tmp_path / "o"
    assert main(["audit", "--out", str(out), "--images", str(photos), "--n-images", "4", *FAST]) == 130
    assert len(_records(out)) == 2 and not (out / "report.md").exists()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = out / f".report.md.{int(dead.stdout)}.0123abcd.tmp"  # a kill while a table was being written
    stale.write_text("half a table")
    monkeypatch.setattr(run, "audit_image", real)
    assert main(["audit", "--out", str(out), "--images", str(photos), "--n-images", "4", *FAST]) == 0
    _same_as_reference(out, reference)
    assert not stale.exists()


def test_sigkill_then_rerun_gives_the_uninterrupted_records(tmp_path, photos, reference):
    out = tmp_path / "o"
    cmd = [sys.executable, "-m", "boundcheck", "audit", "--out", str(out), "--images", str(photos),
           "--n-images", "4", *FAST]
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    res_file = out / "results.jsonl"
    deadline = time.time() + 120
    try:
        while time.time() < deadline and proc.poll() is None:
            if res_file.exists() and res_file.read_bytes().count(b"\n") >= 1:
                break
            time.sleep(0.01)
        assert proc.poll() is None, "the audit finished before it could be killed"
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
    n_before = len(read_jsonl(res_file))
    assert 1 <= n_before < 4
    assert not (out / "report.md").exists()
    assert main(["audit", "--out", str(out), "--images", str(photos), "--n-images", "4", *FAST]) == 0
    _same_as_reference(out, reference)


def test_unreadable_images_are_recorded_and_skipped(tmp_path, photos, capsys):
    d = tmp_path / "imgs"
    d.mkdir()
    first = sorted(photos.iterdir())[0]
    shutil.copy(first, d / "b_good.jpg")
    (d / "a_empty.jpg").write_bytes(b"")
    (d / "c_text.png").write_text("not an image")
    (d / "d_truncated.jpg").write_bytes(first.read_bytes()[:2000])
    out = tmp_path / "o"
    assert main(["audit", "--out", str(out), "--images", str(d), "--n-images", "4", *FAST]) == 0
    recs = _records(out)
    assert [r["id"] for r in recs if "skipped" not in r] == ["b_good.jpg"]
    assert sorted(r["id"] for r in recs if "skipped" in r) == ["a_empty.jpg", "c_text.png", "d_truncated.jpg"]
    audit = json.loads((out / "audit.json").read_text())
    assert audit["images"] == ["b_good.jpg"] and len(audit["skipped"]) == 3
    assert "unreadable image(s) skipped" in (out / "report.md").read_text()


def test_every_image_unreadable_is_one_line_exit_2(tmp_path, capsys):
    d = tmp_path / "imgs"
    d.mkdir()
    (d / "a.jpg").write_bytes(b"")
    assert main(["audit", "--out", str(tmp_path / "o"), "--images", str(d), *FAST]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "a.jpg" in err and "readable" in err


def test_resume_with_other_options_is_refused_naming_the_key(reference, photos):
    from empirical.audit.cli import audit

    with pytest.raises(InputError) as ei:
        audit(out_dir=reference, images=str(photos), n_images=4, rules=["lrp_beta_1"], gammas=[100.0],
              m_samples=2, augmentations=["gaussian"], seed=7, threads=1)
    msg = str(ei.value)
    assert "\n" not in msg and "seed" in msg and "different configuration" in msg
