"""``--model timm:NAME``: trained weights from the local Hugging Face hub cache or ``--weights FILE``,
random only on request, timm's own preprocessing, and one line for every way it can go wrong."""

from __future__ import annotations

import json
import math
import sys

import pytest

torch = pytest.importorskip("torch")
timm = pytest.importorskip("timm")

from boundcheck.cli import main  # noqa: E402
from boundcheck.errors import InputError  # noqa: E402
from empirical.models import resolve_model, timm_preprocessing  # noqa: E402

pytestmark = pytest.mark.torch


@pytest.fixture(autouse=True)
def _one_thread_and_empty_caches(tmp_path, monkeypatch):
    """One torch thread; the hub caches point at empty folders (a test never sees this machine's caches)."""
    import huggingface_hub.constants as hf

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    monkeypatch.setattr(hf, "HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    yield
    torch.set_num_threads(n)


def test_random_weights_and_preprocessing_from_the_pretrained_config():
    lm = resolve_model("timm:resnet18", random_weights=True)
    assert lm.source == "timm" and lm.weights_file == "random" and lm.weights_label == "random weights"
    cfg = timm.data.resolve_data_config({}, model=lm.model)
    assert lm.input_size == cfg["input_size"][-1] == 224
    assert lm.resize_size == math.floor(224 / cfg["crop_pct"])  # 235 for crop_pct 0.95
    assert lm.mean == tuple(cfg["mean"]) and lm.std == tuple(cfg["std"])
    assert timm_preprocessing(lm.model)["interpolation"].value == cfg["interpolation"]
    assert len(lm.categories) == 1000 and not lm.model.training


def test_mixer_has_its_own_mean_and_std():
    lm = resolve_model("timm:mixer_s16_224", random_weights=True)
    assert lm.mean == (0.5, 0.5, 0.5) and lm.std == (0.5, 0.5, 0.5)


def test_overrides_apply_to_timm_models():
    lm = resolve_model("timm:convnext_atto", random_weights=True, num_classes=7, input_size=96, mean=(0, 0, 0))
    assert lm.input_size == 96 and lm.mean == (0.0, 0.0, 0.0)
    assert lm.model(torch.zeros(1, 3, 96, 96)).shape == (1, 7)


def test_weights_file_round_trip(tmp_path):
    torch.manual_seed(0)
    a = resolve_model("timm:resnet18", random_weights=True)
    f = tmp_path / "r18.pth"
    torch.save(a.model.state_dict(), f)
    b = resolve_model("timm:resnet18", weights=f)
    assert b.weights_file == str(f) and b.trained
    x = torch.randn(1, 3, 64, 64)
    assert torch.equal(a.model(x), b.model(x))


def _fake_hf_cache(root, hub_id: str, state: dict) -> str:
    """The layout huggingface_hub writes: refs/main -> snapshots/<commit>/model.safetensors."""
    from safetensors.torch import save_file

    repo = root / ("models--" + hub_id.replace("/", "--"))
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("0123abcd")
    snap = repo / "snapshots" / "0123abcd"
    snap.mkdir(parents=True)
    path = snap / "model.safetensors"
    save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    return str(path)


def test_trained_weights_from_the_local_hugging_face_cache(tmp_path):
    import huggingface_hub.constants as hf

    torch.manual_seed(1)
    ref = resolve_model("timm:resnet18", random_weights=True)
    hub_id = timm.models.get_pretrained_cfg("resnet18").hf_hub_id
    path = _fake_hf_cache(tmp_path / "hf", hub_id, ref.model.state_dict())
    assert hf.HF_HUB_CACHE == str(tmp_path / "hf")
    lm = resolve_model("timm:resnet18")
    assert lm.weights_file == path and lm.weights_label == "trained weights"
    x = torch.randn(1, 3, 64, 64)
    assert torch.equal(lm.model(x), ref.model(x))


def test_missing_checkpoint_names_where_it_looked(tmp_path):
    with pytest.raises(InputError) as e:
        resolve_model("timm:resnet18")
    msg = str(e.value)
    assert "\n" not in msg and "trained weights not found" in msg
    assert str(tmp_path / "hf") in msg and "models--timm--resnet18" in msg
    assert str(tmp_path / "torch") in msg and "--random-weights" in msg


def test_unknown_timm_name_gets_the_closest():
    with pytest.raises(InputError, match=r"unknown timm model 'resnt18' \(closest: resnet18"):
        resolve_model("timm:resnt18")
    with pytest.raises(InputError, match="name the timm model"):
        resolve_model("timm:")


def test_class_count_of_trained_weights_is_checked():
    with pytest.raises(InputError, match="the trained weights have 1000"):
        resolve_model("timm:resnet18", num_classes=10)


def test_timm_not_installed_is_one_line(monkeypatch):
    monkeypatch.setitem(sys.modules, "timm", None)
    with pytest.raises(InputError, match=r"pip install '\.\[timm\]'"):
        resolve_model("timm:resnet18", random_weights=True)


def test_check_model_cli_on_a_timm_model(capsys):
    rc = main(["check-model", "timm:resnet18", "--random-weights", "--input-size", "64", "--json"])
    cap = capsys.readouterr()
    assert rc == 0, cap.err
    res = json.loads(cap.out)
    assert res["supported"] and res["model"] == "timm:resnet18" and res["weights_kind"] == "random weights"
    assert res["lrp0_oracle_rel_error"] < 1e-8 and res["gradient_rel_error"] < 1e-8
