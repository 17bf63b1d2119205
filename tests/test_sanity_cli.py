"""``boundcheck sanity``: bad input is one line on stderr with exit status 2; runs resume."""

import json
import shutil

import pytest

from boundcheck.cli import main
from boundcheck.errors import InputError
from empirical.io import ResumableStore


@pytest.mark.parametrize("argv", [
    ["sanity"],
    ["sanity", "faithfulness", "--out", "{d}", "--region-size", "9"],
    ["sanity", "randomize", "--out", "{d}", "--n-images", "0"],
    ["sanity", "randomize", "--out", "{d}", "--steps", "0"],
    ["sanity", "overtaking", "--out", "{d}", "--model", "vgg16"],
    ["sanity", "faithfulness", "--out", "{d}", "--methods", "no_such_method"],
    ["sanity", "randomize", "--out", "{d}", "--device", "tpu"],
    ["sanity", "overtaking", "--out", "{d}", "--weights", "/nonexistent/w.pth"],
    ["sanity", "overtaking", "--out", "{d}", "--images", "/nonexistent/folder"],
    ["sanity", "overtaking"],
])
def test_bad_input_is_one_line_exit_2(argv, tmp_path, capsys):
    argv = [a.replace("{d}", str(tmp_path / "o")) for a in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("boundcheck: error:") and "\n" not in err, err


def test_store_refuses_other_configuration_and_ignores_torn_line(tmp_path):
    s = ResumableStore(tmp_path, {"a": 1, "m": ["x"]})
    s.append({"id": "i1", "v": 1.0})
    with open(s.path, "a") as f:
        f.write('{"id": "i2", "v"')  # interrupted write
    again = ResumableStore(tmp_path, {"m": ["x"], "a": 1})
    assert again.done_keys() == {"i1"}
    with pytest.raises(InputError, match="different configuration"):
        ResumableStore(tmp_path, {"a": 2, "m": ["x"]})


def test_overtaking_runs_resumes_and_refuses_other_source(tmp_path, capsys):
    pytest.importorskip("torch")
    from empirical.data import foolbox_photos

    out = tmp_path / "ov"
    assert main(["sanity", "overtaking", "--out", str(out), "--n-images", "1"]) == 0
    recs = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert len(recs) == 1 and len(recs[0]["layers"]) == 33
    for f in ("overtaking.csv", "overtaking.png", "nonpositive.png", "activation_layers.md", "summary.md"):
        assert (out / f).is_file(), f
    for f in ("overtaking.json", "activation_layers.json", "results.jsonl", "config.json"):
        text = (out / f).read_text()
        for chunk in (text.splitlines() if f.endswith("l") else [text]):
            json.loads(chunk, parse_constant=lambda c: pytest.fail(f"{c} in {f}"))
    rows = json.loads((out / "overtaking.json").read_text())
    undefined = [r for r in rows if "K_reason" in r]  # both quantiles 0
    infinite = [r for r in rows if r.get("K_nonfinite") == "inf"]  # only the low one 0: P = 0
    assert undefined and all(r["K"] is None and r["P"] is None and "V(q_low) = 0" in r["P_reason"] for r in undefined)
    assert all(r["K"] is None and r["P"] == 0.0 for r in infinite)
    assert all(r["K"] is not None or "K_reason" in r or "K_nonfinite" in r for r in rows)
    assert main(["sanity", "overtaking", "--out", str(out), "--n-images", "2"]) == 0  # extends: one more image
    assert len((out / "results.jsonl").read_text().splitlines()) == 2
    imgs = tmp_path / "imgs"
    imgs.mkdir()
    shutil.copy(foolbox_photos(1)[0].path, imgs)
    capsys.readouterr()
    assert main(["sanity", "overtaking", "--out", str(out), "--images", str(imgs)]) == 2
    assert "different configuration" in capsys.readouterr().err


def test_every_image_unreadable_is_exit_2_naming_the_cause(tmp_path, capsys):
    pytest.importorskip("torch")
    imgs = tmp_path / "imgs"
    imgs.mkdir()
    (imgs / "empty.jpg").write_bytes(b"")
    (imgs / "text.png").write_text("not an image")
    out = tmp_path / "o"
    assert main(["sanity", "overtaking", "--out", str(out), "--images", str(imgs)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "readable" in err and "empty.jpg" in err


def test_too_many_regions_is_refused_naming_the_maximum(tmp_path, capsys):
    pytest.importorskip("torch")
    assert main(["sanity", "faithfulness", "--out", str(tmp_path / "o"), "--n-regions", "100000"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "maximum is 225" in err
    assert not (tmp_path / "o" / "results.jsonl").exists()


def test_one_image_auc_sem_is_null_with_reason_in_json(tmp_path):
    from empirical.sanity.report import faithfulness_summary, write_tables

    recs = [{"curves": {"a": [0.9, 0.5, 0.1]}, "auc": {"a": 0.5}}]
    table, _ = faithfulness_summary(recs)
    paths = write_tables(table, tmp_path / "t")
    text = open(paths["json"]).read()
    assert "NaN" not in text
    row = json.loads(text)[0]
    assert row["auc_sem"] is None and "one image" in row["auc_sem_reason"]
    assert "n/a" in open(paths["md"]).read()
