"""Top-down cascading randomisation schedules of [P2] Appendix A.1.

A schedule is a list of :class:`Step` s.  Step 0 randomises the fully connected
(classification) layer; every later step randomises *all* parametrised modules
from the last randomised one back to (and including) the next *marker* module,
walking the modules in reverse order of registration (output side first,
"top-down").  The sets are cumulative: step ``k`` randomises
``steps[k].cumulative`` = the union of ``steps[0..k].new``.

The schedules of [P2] A.1, literally:

* ResNet-50 (torchvision): the fc layer, then up to the next module whose name
  ends in ``.conv1``, until 16 ``.conv1`` modules are randomised
  (fc + 16 steps = 17 steps).  The stem ``conv1`` (name without a dot) is not a
  marker and is never reached.
* DenseNet-121 (torchvision): the classifier, then up to every third
  ``.conv1``, until 63 are randomised.  torchvision's DenseNet-121 has only 58
  ``.conv1`` modules (6 + 12 + 24 + 16 dense layers), so the limit is not
  reached: the steps end at markers 3, 6, ..., 57 and a last step ends at marker
  58 (fc + 20 steps = 21 steps).
* EfficientNet-B0 (Luke Melas' naming) and EfficientNet-Lite0 (the shipped
  implementation uses the same names): ``_fc``, then up to the next
  ``._depthwise_conv``, until 17 are randomised.  Both have 16 MBConv blocks,
  hence 16 depthwise convolutions: fc + 16 steps = 17 steps.
* EfficientNet-V2-S (torchvision; not in [P2], our equivalent): ``classifier.1``,
  then up to the next 3x3 convolution of a block, block by block from the top:
  the depthwise conv (``block.1.0``) of an MBConv block, the fused 3x3 conv
  (``block.0.0``) of a FusedMBConv block; 40 blocks, fc + 40 steps = 41 steps.
* Swin-V2-Tiny (torchvision; not in [P2], our equivalent): ``head``, then up to
  the next transformer block's first module (``features.<stage>.<block>.norm1``),
  block by block from the top: every step randomises one whole block (norm1,
  attention incl. the continuous position-bias MLP, norm2, MLP); the final
  ``norm`` goes with the top block and each patch-merging layer with the block
  below it.  Depths (2, 2, 6, 2): head + 12 steps = 13 steps; the patch
  embedding ``features.0`` is never reached, like ResNet's stem.

"Parametrised module" = a module with parameters or buffers of its own
(``recurse=False``); containers and parameter-free modules (ReLU, padding,
pooling) are skipped because there is nothing to re-initialise.

References
----------
[P2] Binder et al., "Shortcomings of top-down randomization-based sanity checks
for evaluations of deep neural network explanations", supplement, A.1.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Callable

from boundcheck.errors import InputError


@dataclass(frozen=True)
class Step:
    """One randomisation step.

    Attributes
    ----------
    index : int, 0 = the fully connected layer
    marker : str, the module that ends the step (the fc layer for step 0)
    new : tuple[str, ...], modules first randomised in this step (top-down order)
    cumulative : frozenset[str], every module randomised after this step
    """

    index: int
    marker: str
    new: tuple
    cumulative: frozenset = field(repr=False)


@dataclass(frozen=True)
class ScheduleSpec:
    """How to build a schedule: the fc layer, the marker test, every n-th marker, the limit."""

    fc: str
    is_marker: Callable  # (name, module) -> bool
    every: int
    limit: int
    description: str


def _name_endswith(suffix: str) -> Callable:
    return lambda name, module: name.endswith(suffix)


def _swin_marker(name: str, module) -> bool:
    return re.fullmatch(r"features\.\d+\.\d+\.norm1", name) is not None


def _v2s_marker(name: str, module) -> bool:
    import torch.nn as nn

    if not isinstance(module, nn.Conv2d) or tuple(module.kernel_size) != (3, 3):
        return False
    m = re.fullmatch(r"features\.(\d+)\.\d+\.block\.\d+\.0", name)
    return m is not None


SPECS: dict[str, ScheduleSpec] = {
    "resnet50": ScheduleSpec("fc", _name_endswith(".conv1"), 1, 16,
                             "fc, then up to the next `.conv1`, until 16 `.conv1` are randomised"),
    "densenet121": ScheduleSpec("classifier", _name_endswith(".conv1"), 3, 63,
                                "classifier, then up to every third `.conv1`, until 63 (58 exist)"),
    "efficientnet-b0": ScheduleSpec("_fc", _name_endswith("._depthwise_conv"), 1, 17,
                                    "_fc, then up to the next `._depthwise_conv`, until 17 (16 exist)"),
    "efficientnet-lite0": ScheduleSpec("_fc", _name_endswith("._depthwise_conv"), 1, 17,
                                       "_fc, then up to the next `._depthwise_conv`, until 17 (16 exist)"),
    "efficientnet_v2_s": ScheduleSpec("classifier.1", _v2s_marker, 1, 40,
                                      "classifier.1, then up to the next block's 3x3 (depthwise or fused) conv, 40 blocks"),
    "swin_v2_t": ScheduleSpec("head", _swin_marker, 1, 12,
                              "head, then up to the next transformer block's norm1, block by block, 12 blocks"),
}


def parametrised_modules(model) -> list[tuple[str, object]]:
    """``(name, module)`` with parameters or buffers of their own, in registration order."""
    out = []
    for name, module in model.named_modules():
        if any(True for _ in module.parameters(recurse=False)) or any(True for _ in module.buffers(recurse=False)):
            out.append((name, module))
    return out


def detect_architecture(model) -> str:
    """Name of the :data:`SPECS` entry whose layout ``model`` has (raises :class:`InputError`)."""
    names = {n for n, _ in model.named_modules()}
    if "_fc" in names and any(n.endswith("._depthwise_conv") for n in names):
        return "efficientnet-lite0"
    if "fc" in names and "layer4" in names:
        return "resnet50"
    if "classifier" in names and "features.denseblock1" in names:
        return "densenet121"
    if "classifier.1" in names and "features.1.0.block" in names:
        return "efficientnet_v2_s"
    if "head" in names and "features.1.0.attn" in names and "features.1.0.norm1" in names:
        return "swin_v2_t"
    raise InputError(
        "no randomisation schedule for this architecture; supported: " + ", ".join(SPECS)
    )


def build_schedule(model, arch: str | None = None, max_steps: int | None = None) -> list[Step]:
    """The cascading top-down schedule of ``model`` ([P2] A.1).

    Parameters
    ----------
    model : torch.nn.Module
    arch : key of :data:`SPECS`, or None to detect it from the module names
    max_steps : int, optional
        Keep only the first ``max_steps`` steps (step 0, the fc layer, included).

    Returns
    -------
    list[Step], nested: ``steps[k].cumulative`` is a subset of ``steps[k+1].cumulative``.

    Raises
    ------
    InputError
        Unknown architecture, a missing fc layer, or ``max_steps < 1``.
    """
    arch = detect_architecture(model) if arch is None else arch
    if arch not in SPECS:
        raise InputError(f"unknown schedule {arch!r}; choose one of {', '.join(SPECS)}")
    if max_steps is not None and max_steps < 1:
        raise InputError(f"--steps must be >= 1, got {max_steps}")
    spec = SPECS[arch]
    mods = parametrised_modules(model)
    names = [n for n, _ in mods]
    if spec.fc not in names:
        raise InputError(f"{arch} schedule: the model has no fully connected layer named {spec.fc!r}")
    ifc = names.index(spec.fc)
    # Step 0: the fc layer (and anything parametrised registered after it: none in
    # the supported architectures).
    first = tuple(reversed(names[ifc:]))
    steps = [Step(0, spec.fc, first, frozenset(first))]
    remaining = list(reversed(mods[:ifc]))  # top-down
    total_markers = sum(1 for n, m in remaining if spec.is_marker(n, m))
    target = min(spec.limit, total_markers)
    seen = 0
    current: list[str] = []
    cumulative = set(first)
    for name, module in remaining:
        if seen >= target:
            break
        current.append(name)
        if spec.is_marker(name, module):
            seen += 1
            if seen % spec.every == 0 or seen == target:
                cumulative.update(current)
                steps.append(Step(len(steps), name, tuple(current), frozenset(cumulative)))
                current = []
    if max_steps is not None:
        steps = steps[:max_steps]
    return steps


def schedule_table(steps: list[Step]) -> list[dict]:
    """One row per step: index, marker, number of new / cumulative modules."""
    return [
        {"step": s.index, "marker": s.marker, "new_modules": len(s.new), "cumulative_modules": len(s.cumulative)}
        for s in steps
    ]
