"""Every command, many bad inputs: exit status 2, exactly one line on stderr, no traceback,
nothing written outside the output folder, and the output folder left as found (absent).

The table is the contract of ``boundcheck.errors``: bad input is refused with one line naming the
problem, before any model is loaded where the problem is visible from the options alone.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from boundcheck.cli import main

HOE = ["--rule", "lrp-beta", "--beta", "1", "--layers", "3", "--delta", "0.05"]
TORCH = pytest.mark.torch

#: (id, argv with placeholders, marks); placeholders: {out} the output folder (absent at start),
#: {file} an existing file, {under_file} a path below that file, {missing} a path that does not exist,
#: {empty} an empty folder, {bad_imgs} a folder of unreadable images, {junk} a file of random bytes
CASES = [
    # ------------------------------------------------------------------ samples / deviation / range
    ("samples-beta-word", ["samples", *HOE, "--t", "abc"], ()),
    ("samples-t-zero", ["samples", *HOE, "--t", "0"], ()),
    ("samples-delta-2", ["samples", "--rule", "lrp-beta", "--beta", "1", "--layers", "3", "--t", "0.1",
                         "--delta", "2"], ()),
    ("samples-layers-neg", ["samples", "--rule", "lrp-beta", "--beta", "1", "--layers", "-1", "--t", "0.1",
                            "--delta", "0.05"], ()),
    ("samples-unknown-rule", ["samples", "--rule", "lrp-zeta", "--layers", "3", "--t", "0.1", "--delta", "0.05"], ()),
    ("samples-beta-nan", ["samples", "--rule", "lrp-beta", "--beta", "nan", "--layers", "3", "--t", "0.1",
                          "--delta", "0.05"], ()),
    # huge but finite numbers are not bad input: they get an answer (tests/test_cli_hoeffding.py)
    ("samples-depth-beyond-limit", ["samples", "--rule", "lrp-beta", "--beta", "1", "--layers", "1e400",
                                    "--t", "0.01", "--delta", "0.05"], ()),
    ("deviation-m-zero", ["deviation", *HOE, "--m", "0"], ()),
    ("deviation-m-word", ["deviation", *HOE, "--m", "many"], ()),
    ("range-layers-zero", ["range", "--rule", "lrp-gamma", "--gamma", "100", "--layers", "0"], ()),
    ("range-gamma-below-1", ["range", "--rule", "lrp-gamma", "--gamma", "0.5", "--layers", "3"], ()),
    # ------------------------------------------------------------------ report / prove / fuzz
    ("report-out-is-folder", ["report", "--out", "{empty}"], ()),
    ("report-out-under-file", ["report", "--out", "{under_file}/r.md"], ()),
    ("report-out-missing-folder", ["report", "--out", "{missing}/r.md"], ()),
    ("prove-unknown-claim", ["prove", "no_such_claim"], ()),
    ("fuzz-unknown-claim", ["fuzz", "--claim", "no_such_claim"], ()),
    ("fuzz-examples-zero", ["fuzz", "--examples", "0"], ()),
    ("fuzz-examples-word", ["fuzz", "--examples", "ten"], ()),
    ("fuzz-adversarial", ["fuzz", "--adversarial", "huge"], ()),
    # ------------------------------------------------------------------ empirical
    ("empirical-m-zero", ["empirical", "--out", "{out}", "--m-grid", "0"], (TORCH,)),
    ("empirical-m-word", ["empirical", "--out", "{out}", "--m-grid", "a,b"], (TORCH,)),
    ("empirical-unknown-method", ["empirical", "--out", "{out}", "--methods", "squared_gradient,lrp_beta_0,nope"],
     (TORCH,)),
    ("empirical-unknown-model", ["empirical", "--out", "{out}", "--model", "vgg11"], (TORCH,)),
    ("empirical-augmentation", ["empirical", "--out", "{out}", "--augmentation", "blur"], (TORCH,)),
    ("empirical-n-images-zero", ["empirical", "--out", "{out}", "--n-images", "0"], (TORCH,)),
    ("empirical-batch-zero", ["empirical", "--out", "{out}", "--batch-size", "0"], (TORCH,)),
    ("empirical-sigma-neg", ["empirical", "--out", "{out}", "--sigma", "-1"], (TORCH,)),
    ("empirical-sigma-nan", ["empirical", "--out", "{out}", "--sigma", "nan"], (TORCH,)),
    ("empirical-out-is-file", ["empirical", "--out", "{file}"], (TORCH,)),
    ("empirical-out-under-file", ["empirical", "--out", "{under_file}"], (TORCH,)),
    ("empirical-images-missing", ["empirical", "--out", "{out}", "--images", "{missing}"], (TORCH,)),
    ("empirical-images-empty", ["empirical", "--out", "{out}", "--images", "{empty}"], (TORCH,)),
    ("empirical-weights-missing", ["empirical", "--out", "{out}", "--weights", "{missing}"], (TORCH,)),
    ("empirical-weights-junk", ["empirical", "--out", "{out}", "--weights", "{junk}"], (TORCH)),
    ("empirical-weights-and-random", ["empirical", "--out", "{out}", "--weights", "{junk}", "--random-weights"],
     (TORCH,)),
    ("empirical-merge-nothing", ["empirical", "merge", "--out", "{out}"], (TORCH,)),
    ("empirical-device", ["empirical", "--out", "{out}", "--device", "tpu"], (TORCH,)),
    ("empirical-no-such-model", ["empirical", "--out", "{out}", "--model", "no_such_net"], (TORCH,)),
    ("empirical-n-images-word", ["empirical", "--out", "{out}", "--n-images", "all"], (TORCH,)),
    # ------------------------------------------------------------------ audit
    ("audit-unknown-model", ["audit", "--out", "{out}", "--model", "vgg11"], (TORCH,)),
    ("audit-unknown-rule", ["audit", "--out", "{out}", "--methods", "lrp_zeta"], (TORCH,)),
    ("audit-rule-not-beta-gamma", ["audit", "--out", "{out}", "--methods", "lrp_zero"], (TORCH,)),
    ("audit-gamma-below-1", ["audit", "--out", "{out}", "--gamma-sweep", "0.5,100"], (TORCH,)),
    ("audit-gamma-word", ["audit", "--out", "{out}", "--gamma-sweep", "x"], (TORCH,)),
    ("audit-gamma-inf", ["audit", "--out", "{out}", "--gamma-sweep", "inf"], (TORCH,)),
    ("audit-n-images-zero", ["audit", "--out", "{out}", "--n-images", "0"], (TORCH,)),
    ("audit-m-samples-one", ["audit", "--out", "{out}", "--m-samples", "1"], (TORCH,)),
    ("audit-m-samples-neg", ["audit", "--out", "{out}", "--m-samples", "-3"], (TORCH,)),
    ("audit-threads-zero", ["audit", "--out", "{out}", "--threads", "0"], (TORCH,)),
    ("audit-threads-neg", ["audit", "--out", "{out}", "--threads", "-1"], (TORCH,)),
    ("audit-augmentation", ["audit", "--out", "{out}", "--augmentation", "blur"], (TORCH,)),
    ("audit-out-is-file", ["audit", "--out", "{file}"], (TORCH,)),
    ("audit-out-under-file", ["audit", "--out", "{under_file}"], (TORCH,)),
    ("audit-images-missing", ["audit", "--out", "{out}", "--images", "{missing}"], (TORCH,)),
    ("audit-images-empty", ["audit", "--out", "{out}", "--images", "{empty}"], (TORCH,)),
    ("audit-images-unreadable", ["audit", "--out", "{out}", "--images", "{bad_imgs}", "--m-samples", "0"], (TORCH,)),
    ("audit-weights-missing", ["audit", "--out", "{out}", "--weights", "{missing}"], (TORCH,)),
    ("audit-weights-junk", ["audit", "--out", "{out}", "--weights", "{junk}"], (TORCH)),
    ("audit-no-out", ["audit"], (TORCH,)),
    ("audit-no-such-model", ["audit", "--out", "{out}", "--model", "no_such_net"], (TORCH,)),
    ("audit-model-file-missing", ["audit", "--out", "{out}", "--model", "{missing}/net.py:build"], (TORCH,)),
    ("audit-mean-two-values", ["audit", "--out", "{out}", "--mean", "0.5,0.5"], (TORCH,)),
    ("audit-input-size-zero", ["audit", "--out", "{out}", "--input-size", "0"], (TORCH,)),
    ("audit-device", ["audit", "--out", "{out}", "--device", "tpu"], (TORCH,)),
    ("audit-image-file-missing", ["audit", "--out", "{out}", "--image", "{missing}.jpg"], (TORCH,)),
    ("audit-weights-and-random", ["audit", "--out", "{out}", "--weights", "{junk}", "--random-weights"], (TORCH,)),
    ("audit-images-and-image", ["audit", "--out", "{out}", "--images", "{empty}", "--image", "{file}"], (TORCH,)),
    # ------------------------------------------------------------------ sanity
    ("sanity-no-check", ["sanity"], (TORCH,)),
    ("sanity-unknown-check", ["sanity", "deletion", "--out", "{out}"], (TORCH,)),
    ("sanity-randomize-n-images-zero", ["sanity", "randomize", "--out", "{out}", "--n-images", "0"], (TORCH,)),
    ("sanity-randomize-steps-zero", ["sanity", "randomize", "--out", "{out}", "--steps", "0"], (TORCH,)),
    ("sanity-randomize-stride-zero", ["sanity", "randomize", "--out", "{out}", "--stride", "0"], (TORCH,)),
    ("sanity-randomize-unknown-method", ["sanity", "randomize", "--out", "{out}", "--methods", "nope"], (TORCH,)),
    ("sanity-randomize-device", ["sanity", "randomize", "--out", "{out}", "--device", "tpu"], (TORCH,)),
    ("sanity-randomize-out-is-file", ["sanity", "randomize", "--out", "{file}"], (TORCH,)),
    ("sanity-faithfulness-region-9", ["sanity", "faithfulness", "--out", "{out}", "--region-size", "9"], (TORCH,)),
    ("sanity-faithfulness-regions-zero", ["sanity", "faithfulness", "--out", "{out}", "--n-regions", "0"],
     (TORCH,)),
    ("sanity-faithfulness-regions-huge", ["sanity", "faithfulness", "--out", "{out}", "--n-regions", "100000"],
     (TORCH,)),
    ("sanity-faithfulness-random-method", ["sanity", "faithfulness", "--out", "{out}", "--methods", "random"],
     (TORCH,)),
    ("sanity-faithfulness-batch-zero", ["sanity", "faithfulness", "--out", "{out}", "--batch-size", "0"], (TORCH,)),
    ("sanity-faithfulness-out-under-file", ["sanity", "faithfulness", "--out", "{under_file}"], (TORCH,)),
    ("sanity-overtaking-unknown-model", ["sanity", "overtaking", "--out", "{out}", "--model", "vgg16"], (TORCH,)),
    ("sanity-overtaking-images-missing", ["sanity", "overtaking", "--out", "{out}", "--images", "{missing}"],
     (TORCH,)),
    ("sanity-overtaking-images-empty", ["sanity", "overtaking", "--out", "{out}", "--images", "{empty}"], (TORCH,)),
    ("sanity-overtaking-images-unreadable", ["sanity", "overtaking", "--out", "{out}", "--images", "{bad_imgs}"],
     (TORCH,)),
    ("sanity-overtaking-weights-missing", ["sanity", "overtaking", "--out", "{out}", "--weights", "{missing}"],
     (TORCH,)),
    ("sanity-overtaking-weights-junk", ["sanity", "overtaking", "--out", "{out}", "--weights", "{junk}"],
     (TORCH,)),
    ("sanity-overtaking-no-such-model", ["sanity", "overtaking", "--out", "{out}", "--model", "no_such_net"],
     (TORCH,)),
    ("sanity-overtaking-dtype", ["sanity", "overtaking", "--out", "{out}", "--dtype", "float16"], (TORCH,)),
    ("sanity-overtaking-std-zero", ["sanity", "overtaking", "--out", "{out}", "--std", "0,1,1"], (TORCH,)),
    ("sanity-overtaking-labels-without-val", ["sanity", "overtaking", "--out", "{out}", "--labels", "{file}"],
     (TORCH,)),
    # ------------------------------------------------------------------ explain
    ("explain-m-zero", ["explain", "--out", "{out}", "--m-grid", "0,4"], (TORCH,)),
    ("explain-unknown-augmentation", ["explain", "--out", "{out}", "--augmentation", "blur"], (TORCH,)),
    ("explain-out-is-file", ["explain", "--out", "{file}"], (TORCH,)),
    ("explain-image-missing", ["explain", "--out", "{out}", "--image", "{missing}"], (TORCH,)),
    ("explain-unknown-method", ["explain", "--out", "{out}", "--methods", "lrp_alpha"], (TORCH,)),
    ("explain-weights-junk", ["explain", "--out", "{out}", "--weights", "{junk}"], (TORCH,)),
    # ------------------------------------------------------------------ check-model
    ("check-model-unknown", ["check-model", "resnet05"], (TORCH,)),
    ("check-model-user-file-missing", ["check-model", "{missing}:build"], (TORCH,)),
    ("check-model-not-python", ["check-model", "{file}:build"], (TORCH,)),
    ("check-model-weights-junk", ["check-model", "efficientnet-lite0", "--weights", "{junk}"], (TORCH,)),
    ("check-model-weights-missing", ["check-model", "resnet18", "--weights", "{missing}"], (TORCH,)),
    ("check-model-input-size-zero", ["check-model", "resnet18", "--input-size", "0"], (TORCH,)),
    # ------------------------------------------------------------------ the user's own models (issue 19)
    ("explain-nan-weights", ["explain", "--out", "{out}", "--model", "{net}", "--weights", "{nan_w}"], (TORCH,)),
    ("check-model-nan-weights", ["check-model", "{net}", "--weights", "{nan_w}"], (TORCH,)),
    ("audit-nan-weights", ["audit", "--out", "{out}", "--model", "{net}", "--weights", "{nan_w}"], (TORCH,)),
    ("check-model-nan-layer", ["check-model", "{nan_layer}"], (TORCH,)),
    ("explain-nan-layer", ["explain", "--out", "{out}", "--model", "{nan_layer}"], (TORCH,)),
    ("empirical-nan-weights", ["empirical", "--out", "{out}", "--model", "{net}", "--weights", "{nan_w}", "--n-images",
                               "1", "--no-progress"], (TORCH,)),
    ("empirical-nan-layer", ["empirical", "--out", "{out}", "--model", "{nan_layer}", "--n-images", "1",
                             "--no-progress"], (TORCH,)),
    ("audit-nan-layer", ["audit", "--out", "{out}", "--model", "{nan_layer}"], (TORCH,)),
    ("sanity-randomize-nan-weights", ["sanity", "randomize", "--out", "{out}", "--model", "{net}", "--weights",
                                      "{nan_w}", "--n-images", "1"], (TORCH,)),
    ("sanity-faithfulness-nan-weights", ["sanity", "faithfulness", "--out", "{out}", "--model", "{net}", "--weights",
                                         "{nan_w}", "--n-images", "1"], (TORCH,)),
    ("sanity-overtaking-nan-weights", ["sanity", "overtaking", "--out", "{out}", "--model", "{net}", "--weights",
                                       "{nan_w}", "--n-images", "1"], (TORCH,)),
    ("sanity-randomize-nan-layer", ["sanity", "randomize", "--out", "{out}", "--model", "{nan_layer}", "--n-images",
                                    "1"], (TORCH,)),
    # finite on the zero probe, NaN on the photos: stopped at the first image, naming the layer
    ("check-model-nan-on-images", ["check-model", "{img_nan}", "--input-size", "32"], (TORCH,)),
    ("empirical-nan-on-images", ["empirical", "--out", "{out}", "--model", "{img_nan}", "--input-size", "32",
                                 "--n-images", "1", "--m-grid", "2", "--no-progress"], (TORCH,)),
    ("audit-nan-on-images", ["audit", "--out", "{out}", "--model", "{img_nan}", "--input-size", "32", "--m-samples",
                             "0", "--no-progress"], (TORCH,)),
    ("explain-nan-on-images", ["explain", "--out", "{out}", "--model", "{img_nan}", "--input-size", "32",
                               "--m-grid", "1", "--no-split-half", "--no-heatmaps", "--no-progress"], (TORCH,)),
    ("sanity-overtaking-nan-on-images", ["sanity", "overtaking", "--out", "{out}", "--model", "{img_nan}",
                                         "--input-size", "32", "--n-images", "1"], (TORCH,)),
    ("sanity-faithfulness-nan-on-images", ["sanity", "faithfulness", "--out", "{out}", "--model", "{img_nan}",
                                           "--input-size", "32", "--n-images", "1", "--n-regions", "4", "--methods",
                                           "gradient"], (TORCH,)),
    ("check-model-model-conflict", ["check-model", "resnet18", "--model", "vgg16"], (TORCH,)),
    ("explain-label-outside-classes", ["explain", "--out", "{out}", "--model", "{net}", "--no-progress"], (TORCH,)),
    ("empirical-label-outside-classes", ["empirical", "--out", "{out}", "--model", "{net}", "--n-images", "1",
                                         "--no-progress"], (TORCH,)),
    ("sanity-label-outside-classes", ["sanity", "overtaking", "--out", "{out}", "--model", "{net}", "--n-images",
                                      "1"], (TORCH,)),
    ("check-model-input-size-huge", ["check-model", "resnet18", "--random-weights", "--input-size", "10000"],
     (TORCH,)),
    ("explain-input-size-huge", ["explain", "--out", "{out}", "--model", "resnet18", "--random-weights",
                                 "--input-size", "10000", "--no-progress"], (TORCH,)),
    ("explain-images-unreadable", ["explain", "--out", "{out}", "--images", "{bad_imgs}"], (TORCH,)),
    ("explain-old-m-spelling-zero", ["explain", "--out", "{out}", "--m", "0"], (TORCH,)),
    ("explain-device-malformed", ["explain", "--out", "{out}", "--device", "cuda:x"], (TORCH,)),
    ("audit-device-malformed", ["audit", "--out", "{out}", "--device", "gpu0"], (TORCH,)),
    ("check-model-timm-unknown", ["check-model", "timm:resnt18"], (TORCH,)),
    ("check-model-timm-no-checkpoint", ["check-model", "timm:resnet18"], (TORCH,)),
    ("explain-timm-no-checkpoint", ["explain", "--out", "{out}", "--model", "timm:resnet18"], (TORCH,)),
    # ------------------------------------------------------------------ main
    ("main-unknown-section", ["main", "--out", "{out}", "--skip", "nonsense"], ()),
    ("main-fuzz-examples-zero", ["main", "--out", "{out}", "--fuzz-examples", "0"], ()),
    ("main-out-is-file", ["main", "--out", "{file}", "--skip", "fuzz,proofs,empirical,audit,sanity"], ()),
    ("main-out-under-file", ["main", "--out", "{under_file}", "--skip", "fuzz,proofs,empirical,audit,sanity"], ()),
    ("unknown-command", ["frobnicate"], ()),
]


#: a 10-class user model (the shipped photos' ImageNet labels do not fit it)
TEN_CLASS_NET = """
import torch
def build(num_classes=10):
    return torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1),
                               torch.nn.Flatten(), torch.nn.Linear(4, num_classes))
"""
#: finite weights, a layer whose output is NaN (sqrt of a negative number)
NAN_LAYER_NET = """
import torch
class Root(torch.nn.Module):
    def forward(self, x):
        return torch.sqrt(x - 1)
def build():
    return torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), Root(), torch.nn.AdaptiveAvgPool2d(1),
                               torch.nn.Flatten(), torch.nn.Linear(4, 3))
"""


#: what the one line must name for a model with NaN weights / a NaN layer output (sandbox key -> text)
NONFINITE_NAMED = {"nan_w": "non-finite weights: first parameter 4.weight (1 NaN/inf of 40 values)",
                   "nan_layer": "non-finite values on a zero input: first at 1 (Root)",
                   "img_nan": "first at 0 (Root)"}


#: finite on a zero input (the probe at resolution), NaN wherever a normalised pixel exceeds 1 in magnitude
IMG_NAN_NET = """
import torch
class Root(torch.nn.Module):
    def forward(self, x):
        return x * torch.sqrt(1 - x.abs())
def build():
    return torch.nn.Sequential(Root(), torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1),
                               torch.nn.Flatten(), torch.nn.Linear(4, 1000))
"""


def _snapshot(root: Path, skip: Path) -> dict:
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        d = Path(dirpath)
        if d == skip or skip in d.parents:
            continue
        for name in filenames:
            p = d / name
            st = p.stat()
            out[str(p)] = (st.st_size, st.st_mtime_ns)
        for name in dirnames:
            if d / name != skip:
                out[str(d / name)] = "dir"
    return out


@pytest.fixture
def sandbox(tmp_path, monkeypatch):
    (tmp_path / "afile.txt").write_text("a regular file\n")
    (tmp_path / "empty").mkdir()
    bad = tmp_path / "bad_imgs"
    bad.mkdir()
    (bad / "a.jpg").write_bytes(b"")
    (bad / "b.png").write_text("not an image")
    (tmp_path / "junk.pth").write_bytes(os.urandom(4096))
    models = tmp_path / "models"
    models.mkdir()
    (models / "net.py").write_text(TEN_CLASS_NET)
    (models / "nanlayer.py").write_text(NAN_LAYER_NET)
    (models / "imgnan.py").write_text(IMG_NAN_NET)
    try:
        import torch
    except ImportError:
        torch = None
    if torch is not None:
        import huggingface_hub.constants as hf

        import importlib.util
        spec = importlib.util.spec_from_file_location("_sweep_net", models / "net.py")
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        state = mod.build().state_dict()
        state["4.weight"][0, 0] = float("nan")
        torch.save(state, models / "nan.pth")
        monkeypatch.setattr(hf, "HF_HUB_CACHE", str(tmp_path / "hf-cache"))  # no timm checkpoint there
        monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    return {"out": str(tmp_path / "out"), "file": str(tmp_path / "afile.txt"),
            "under_file": str(tmp_path / "afile.txt" / "sub"), "missing": str(tmp_path / "missing"),
            "empty": str(tmp_path / "empty"), "bad_imgs": str(bad), "junk": str(tmp_path / "junk.pth"),
            "net": f"{models / 'net.py'}:build", "nan_w": str(models / "nan.pth"),
            "nan_layer": f"{models / 'nanlayer.py'}:build", "img_nan": f"{models / 'imgnan.py'}:build",
            "_root": tmp_path}


@pytest.mark.parametrize("argv", [pytest.param(a, id=i, marks=m) for i, a, m in CASES])
def test_bad_input_is_one_line_exit_2_and_writes_nothing_outside_out(argv, sandbox, capsys):
    if argv and argv[0] in ("empirical", "audit", "sanity"):
        pytest.importorskip("torch")
    root = sandbox["_root"]
    argv = [a.format(**sandbox) for a in argv]
    before = _snapshot(root, root / "out")
    rc = main(argv)
    cap = capsys.readouterr()
    lines = [ln for ln in cap.err.splitlines() if ln.strip()]
    assert rc == 2, (rc, cap.err[-500:])
    assert len(lines) == 1, cap.err[-1000:]
    assert lines[0].startswith("boundcheck: error:"), lines[0]
    # non-finite weights / layer outputs: the line names the first offending parameter / layer
    for kind, named in NONFINITE_NAMED.items():
        if any(a == sandbox[kind] for a in argv):
            assert named in lines[0], lines[0]
    assert "Traceback" not in cap.err and "Traceback" not in cap.out
    assert _snapshot(root, root / "out") == before
    # a refused run leaves --out as it found it (absent here)
    assert not (root / "out").exists(), sorted(p.name for p in (root / "out").iterdir())
