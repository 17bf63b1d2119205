"""``boundcheck sanity``: bad input is one line on stderr with exit status 2; runs resume."""

import json
import shutil

import pytest

from boundcheck.cli import main
from boundcheck.errors import InputError
from empirical.sanity.report import ResultStore


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
    s = ResultStore(tmp_path, {"a": 1, "m": ["x"]})
    s.append({"id": "i1", "v": 1.0})
    with open(s.path, "a") as f:
        f.write('{"id": "i2", "v"')  # interrupted write
    again = ResultStore(tmp_path, {"m": ["x"], "a": 1})
    assert again.done_ids() == {"i1"}
    with pytest.raises(InputError, match="different configuration"):
        ResultStore(tmp_path, {"a": 2, "m": ["x"]})


def test_overtaking_runs_resumes_and_refuses_other_source(tmp_path, capsys):
    pytest.importorskip("torch")
    from empirical.data import foolbox_photos

    out = tmp_path / "ov"
    assert main(["sanity", "overtaking", "--out", str(out), "--n-images", "1"]) == 0
    recs = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert len(recs) == 1 and len(recs[0]["layers"]) == 33
    for f in ("overtaking.csv", "overtaking.png", "nonpositive.png", "activation_layers.md", "summary.md"):
        assert (out / f).is_file(), f
    assert main(["sanity", "overtaking", "--out", str(out), "--n-images", "2"]) == 0  # extends: one more image
    assert len((out / "results.jsonl").read_text().splitlines()) == 2
    imgs = tmp_path / "imgs"
    imgs.mkdir()
    shutil.copy(foolbox_photos(1)[0].path, imgs)
    capsys.readouterr()
    assert main(["sanity", "overtaking", "--out", str(out), "--images", str(imgs)]) == 2
    assert "different configuration" in capsys.readouterr().err
