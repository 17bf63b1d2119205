"""The model resolver: torchvision names, Lite0, user code (FILE.py:build, package.module:build),
the one state_dict loader, preprocessing, and a one-line InputError for every bad input."""

from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
torchvision = pytest.importorskip("torchvision")

from boundcheck.errors import InputError  # noqa: E402
from empirical.models import (  # noqa: E402
    IMAGENET_MEAN, IMAGENET_STD, LITE0, MODEL_NAMES, imagenet_categories, list_classifiers, load_state_dict_file,
    resolve_model, torchvision_preprocessing, weights_path_for,
)

LENET = Path(__file__).parent / "fixtures" / "user_lenet.py"
SMALL_TV = ("resnet18", "mobilenet_v3_small", "squeezenet1_0")


def _img(h=40, w=50, seed=0):
    from PIL import Image

    return Image.fromarray((np.random.default_rng(seed).random((h, w, 3)) * 255).astype(np.uint8))


def _assert_one_line(ei):
    msg = str(ei.value)
    assert msg and "\n" not in msg and "Traceback" not in msg, msg


def _hub(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setattr(torch.hub, "_hub_dir", None)  # torch.hub.get_dir() follows TORCH_HOME


# --------------------------------------------------------------------------- names


def test_list_classifiers_is_every_torchvision_classifier_plus_lite0():
    names = list_classifiers()
    tv = torchvision.models.list_models(module=torchvision.models)
    assert names == sorted(names) and set(names) == set(tv) | {LITE0} and len(names) == len(tv) + 1
    assert set(MODEL_NAMES) <= set(names)
    for name in tv:  # every name has offline preprocessing and a hub-cache file name, without building
        pre = torchvision_preprocessing(name)
        assert pre["crop"] >= 1 and pre["resize"] >= pre["crop"] and len(pre["mean"]) == 3
        path, url = weights_path_for(name)
        assert path.name == url.rsplit("/", 1)[1] and path.parent.name == "checkpoints"


@pytest.mark.parametrize("typo, expected", [("resnet05", "resnet50"), ("efficientnet_lite0", LITE0),
                                            ("vit_b16", "vit_b_16"), ("mobilenetv3_small", "mobilenet_v3_small")])
def test_unknown_name_suggests_the_closest_names(typo, expected):
    with pytest.raises(InputError, match="unknown model") as ei:
        resolve_model(typo)
    _assert_one_line(ei)
    assert expected in str(ei.value).split("closest:")[1]


def test_paper_models_keep_the_papers_weights():
    assert weights_path_for("resnet50")[0].name == "resnet50-0676ba61.pth"  # IMAGENET1K_V1, not DEFAULT (V2)
    assert torchvision_preprocessing("resnet50")["resize"] == 256


# --------------------------------------------------------------------------- torchvision


@pytest.mark.parametrize("name", SMALL_TV)
def test_random_torchvision_model_with_the_weights_own_preprocessing(name):
    lm = resolve_model(name, random_weights=True)
    assert lm.weights_file == "random" and lm.source == "torchvision" and not lm.model.training
    assert not any(p.requires_grad for p in lm.model.parameters())
    assert lm.categories == imagenet_categories()
    img = _img()
    ref = torchvision.models.get_model_weights(name).DEFAULT.transforms()(img)
    assert lm.preprocess(img).shape == ref.shape == (3, lm.input_size, lm.input_size)
    assert torch.allclose(lm.preprocess(img), ref, atol=1e-5)


def test_trained_weights_only_from_the_hub_cache_or_a_file(tmp_path, monkeypatch):
    _hub(tmp_path, monkeypatch)
    with pytest.raises(InputError) as ei:
        resolve_model("resnet18")
    path, url = weights_path_for("resnet18")
    _assert_one_line(ei)
    assert str(path) in str(ei.value) and url in str(ei.value) and str(path).startswith(str(tmp_path))
    torch.manual_seed(0)
    state = torchvision.models.resnet18(weights=None).state_dict()
    path.parent.mkdir(parents=True)
    torch.save(state, path)
    lm = resolve_model("resnet18")
    assert lm.weights_file == str(path)
    assert torch.equal(lm.model.state_dict()["fc.weight"], state["fc.weight"])
    with pytest.raises(InputError, match="exclude each other"):
        resolve_model("resnet18", weights=path, random_weights=True)


def test_overrides_and_num_classes_for_torchvision():
    lm = resolve_model("resnet18", random_weights=True, input_size=160, mean=(0.5, 0.5, 0.5), std=(0.25, 0.5, 1))
    assert lm.input_size == 160 and lm.resize_size == round(160 * 256 / 224)
    assert lm.mean == (0.5, 0.5, 0.5) and lm.std == (0.25, 0.5, 1.0)
    assert lm.preprocess(_img()).shape == (3, 160, 160)
    lm = resolve_model("resnet18", random_weights=True, num_classes=10)
    assert lm.model.fc.out_features == 10 and lm.categories == [f"class_{k}" for k in range(10)]
    with pytest.raises(InputError, match="10 classes") as ei:
        resolve_model("resnet18", num_classes=10)  # trained weights have 1000
    _assert_one_line(ei)
    for bad in ({"mean": (0.5, 0.5)}, {"std": (0.2, 0.0, 0.2)}, {"input_size": 0}, {"num_classes": 0},
                {"mean": (float("nan"), 0, 0)}):
        with pytest.raises(InputError) as ei:
            resolve_model("resnet18", random_weights=True, **bad)
        _assert_one_line(ei)


def test_googlenet_trained_state_dict_with_aux_heads_loads(tmp_path):
    """torchvision's GoogLeNet weights hold the auxiliary heads; they load, then the heads are dropped."""
    ref = torchvision.models.googlenet(weights=None, aux_logits=True, init_weights=False, transform_input=True)
    f = tmp_path / "g.pth"
    torch.save(ref.state_dict(), f)
    lm = resolve_model("googlenet", weights=f)
    assert lm.model.aux1 is None and lm.model.transform_input and lm.weights_file == str(f)


# --------------------------------------------------------------------------- user code


def test_user_lenet_file_end_to_end():
    from torchvision.transforms import v2 as T

    lm = resolve_model(f"{LENET}:build", input_size=32)
    assert lm.source == "user" and lm.weights_file == "random" and not lm.model.training
    assert lm.categories == [f"class_{k}" for k in range(10)]  # 10 outputs, found by a dry forward
    assert lm.input_size == 32 and lm.resize_size == round(32 / 0.875)
    assert lm.mean == IMAGENET_MEAN and lm.std == IMAGENET_STD
    img = _img()
    ref = T.Compose([T.Resize(37, antialias=True), T.CenterCrop(32), T.PILToTensor(),  # resize on the PIL image
                     T.ToDtype(torch.float32, scale=True), T.Normalize(IMAGENET_MEAN, IMAGENET_STD)])(img)
    x = lm.preprocess(img)
    assert x.shape == (3, 32, 32) and torch.allclose(x, ref, atol=1e-5)
    with torch.no_grad():
        assert lm.model(x[None]).shape == (1, 10)


def test_user_model_num_classes_weights_and_default_size(tmp_path):
    lm = resolve_model(f"{LENET}:build", input_size=32, num_classes=1000)
    assert lm.categories == imagenet_categories()
    ref = resolve_model(f"{LENET}:build", input_size=32, num_classes=7)
    f = tmp_path / "lenet7.pth"
    torch.save({"state_dict": ref.model.state_dict()}, f)  # a training checkpoint layout
    lm = resolve_model(f"{LENET}:build", input_size=32, num_classes=7, weights=f)
    assert lm.weights_file == str(f) and len(lm.categories) == 7
    assert all(torch.equal(a, b) for a, b in zip(lm.model.state_dict().values(), ref.model.state_dict().values()))
    with pytest.raises(InputError, match="input-size") as ei:  # LeNet does not take 224x224
        resolve_model(f"{LENET}:build")
    _assert_one_line(ei)


def test_package_module_build(tmp_path, monkeypatch):
    pkg = tmp_path / "userpkg_resolver"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "nets.py").write_text(
        "import torch.nn as nn\n"
        "def build(num_classes=3):\n"
        "    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),\n"
        "                         nn.Linear(4, num_classes))\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    lm = resolve_model("userpkg_resolver.nets:build", input_size=16)
    assert len(lm.categories) == 3 and lm.resize_size == round(16 / 0.875)
    assert len(resolve_model("userpkg_resolver.nets:build", num_classes=5, input_size=16).categories) == 5


BAD_FILES = {
    "import_error.py": ("import no_such_module_for_resolver_tests\n", "ModuleNotFoundError"),
    "syntax_error.py": ("def build(:\n", "SyntaxError"),
    "not_module.py": ("def build():\n    return 3\n", "not a torch.nn.Module"),
    "raises.py": ("def build():\n    raise ValueError('boom\\nsecond line')\n", "raised ValueError: boom"),
    "exits.py": ("import sys\nsys.exit(3)\n", "SystemExit"),
    "no_build.py": ("def make():\n    pass\n", "has no 'build'"),
    "not_callable.py": ("build = 3\n", "not a callable"),
}


@pytest.mark.parametrize("fname", sorted(BAD_FILES))
def test_bad_user_file_is_one_line(tmp_path, fname):
    text, expected = BAD_FILES[fname]
    (tmp_path / fname).write_text(text)
    with pytest.raises(InputError) as ei:
        resolve_model(f"{tmp_path / fname}:build")
    _assert_one_line(ei)
    assert expected in str(ei.value)


def test_bad_user_spec_is_one_line(tmp_path):
    (tmp_path / "model.txt").write_text("x")
    cases = {
        f"{tmp_path / 'missing.py'}:build": "not found",
        f"{tmp_path / 'model.txt'}:build": "not a .py",
        "no_such_pkg_for_resolver_tests.mod:build": "cannot import module",
        f"{LENET}": "name the callable",
        f"{LENET}:": "expected FILE.py:CALLABLE",
    }
    for spec, expected in cases.items():
        with pytest.raises(InputError) as ei:
            resolve_model(spec)
        _assert_one_line(ei)
        assert expected in str(ei.value), (spec, str(ei.value))


# --------------------------------------------------------------------------- weights files


def _bad_weights(kind, path, other_state):
    if kind == "random_bytes":
        path.write_bytes(np.random.default_rng(0).integers(0, 256, 300, dtype=np.uint8).tobytes())
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "list":
        torch.save([1, 2, 3], path)
    elif kind == "dict_of_strings":
        torch.save({"a": "b", "c": "d"}, path)
    elif kind == "whole_model":
        torch.save(torch.nn.Linear(2, 2), path)
    elif kind == "other_architecture":
        torch.save(other_state, path)


KINDS = ("random_bytes", "empty", "list", "dict_of_strings", "whole_model", "other_architecture")
EXPECTED = {"random_bytes": "not a PyTorch weights file", "empty": "empty", "list": "holds a list",
            "dict_of_strings": "is a str, not a tensor", "whole_model": "pickled Python objects",
            "other_architecture": "missing key"}


@pytest.mark.parametrize("model", [LITE0, "resnet18"])
@pytest.mark.parametrize("kind", KINDS)
def test_bad_weights_file_is_one_line_for_lite0_and_torchvision(tmp_path, model, kind):
    other = torch.nn.Sequential(torch.nn.Conv2d(3, 2, 3), torch.nn.Linear(2, 2)).state_dict()
    f = tmp_path / "w.pth"
    _bad_weights(kind, f, other)
    with pytest.raises(InputError) as ei:
        resolve_model(model, weights=f)
    _assert_one_line(ei)
    assert EXPECTED[kind] in str(ei.value) and str(f) in str(ei.value)


def test_shape_mismatch_is_named_and_a_refused_file_changes_nothing(tmp_path):
    f = tmp_path / "r18_10.pth"
    torch.save(torchvision.models.resnet18(weights=None, num_classes=10).state_dict(), f)
    with pytest.raises(InputError, match=r"2 shape mismatch\(es\) \(fc.weight: file \(10, 512\) vs model \(1000, 512\)"):
        resolve_model("resnet18", weights=f)
    net = torch.nn.Linear(3, 2)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    g = tmp_path / "half.pth"
    torch.save({"weight": torch.ones(2, 3), "bias": torch.ones(5)}, g)  # weight fits, bias does not
    with pytest.raises(InputError, match="bias"):
        load_state_dict_file(g, net)
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())


def test_checkpoint_layouts_accepted(tmp_path):
    net = torch.nn.Linear(3, 2)
    src = {k: torch.randn_like(v) for k, v in net.state_dict().items()}
    for i, obj in enumerate(({"model": src}, {"state_dict": src, "epoch": 3},
                             {f"module.{k}": v for k, v in src.items()})):
        f = tmp_path / f"c{i}.pth"
        torch.save(obj, f)
        target = torch.nn.Linear(3, 2)
        assert load_state_dict_file(f, target) == str(f)
        assert all(torch.equal(src[k], v) for k, v in target.state_dict().items())
    with pytest.raises(InputError, match="not found"):
        load_state_dict_file(tmp_path / "nope.pth", net, what="--weights")
