"""boundcheck audit: bad input (exit 2, one line) and EfficientNet-Lite0 at CI size."""

from __future__ import annotations

import math

import pytest

from boundcheck.cli import main


@pytest.mark.parametrize("argv", [
    ["audit", "--out", "{tmp}", "--model", "vgg11"],
    ["audit", "--out", "{tmp}", "--methods", "lrp_zero"],
    ["audit", "--out", "{tmp}", "--methods", "lrp_beta_x"],
    ["audit", "--out", "{tmp}", "--gamma-sweep", "0.5,100"],
    ["audit", "--out", "{tmp}", "--n-images", "0"],
    ["audit", "--out", "{tmp}", "--m-samples", "1"],
    ["audit", "--out", "{tmp}", "--images", "{tmp}/does-not-exist"],
    ["audit"],
])
def test_bad_input_is_one_line_and_exit_2(argv, tmp_path, capsys):
    pytest.importorskip("torch")
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("boundcheck: error:") and "\n" not in err and "Traceback" not in err


@pytest.mark.torch
def test_lite0_ci_size_measured_sums_below_exact_below_paper(tmp_path):
    pytest.importorskip("torch")
    pytest.importorskip("efficientnet_lite_pytorch")
    from empirical.audit.cli import audit

    res = audit(out_dir=tmp_path, n_images=1, rules=["lrp_beta_1", "lrp_gamma_100"], m_samples=0,
                gammas=(100.0, 1e6))
    assert res["depth"]["n"] == res["depth"]["n_fx"] == 60
    rows = next(iter(res["depth_tables"]["lrp_beta_1"].values()))
    assert len(rows) == 60
    for r in rows:
        # measured <= exact <= paper (log10 comparisons; 1e-4 relative float32 slack)
        for meas, key in ((r["measured_pos"], "pos"), (r["measured_neg"], "neg")):
            if meas > 0:
                assert math.log10(meas) <= r[f"exact_{key}_log10"] + 5e-5, (r["t"], key)
            assert r[f"exact_{key}_log10"] <= r[f"paper_{key}_log10"] + 1e-12
    assert res["summary"]["condition29"]["required_gamma"]
    for name in ("report.md", "depth_sums.csv", "layers.csv", "condition29.csv", "depth_sums_lrp_beta_1.png",
                 "condition29_violations.png", "required_gamma_hist.png", "audit.json"):
        assert (tmp_path / name).is_file()
    assert "Condition (29)" in res["markdown"]
