"""Top-down cascading model-parameter randomisation ([P2] A.1, H).

The user's model is never modified: :func:`cascade` deep-copies it once and
re-initialises the copy step by step along a schedule of
:mod:`empirical.sanity.schedules`.

Re-initialisation
-----------------
Every randomised module gets its *type's default initialiser*,
``module.reset_parameters()`` (torch's: Kaiming-uniform with ``a = sqrt(5)`` for
Conv/Linear weights, uniform biases; BatchNorm: ``reset_parameters()`` which
also calls ``reset_running_stats()``, i.e. weight 1, bias 0, running mean 0,
running variance 1, ``num_batches_tracked`` 0).  [P2] cites He et al.'s
initialisation; torch's defaults are the documented, reproducible choice here.
Modules with parameters but no ``reset_parameters`` raise :class:`InputError`.

Seeding: module ``name`` is re-initialised under ``torch.manual_seed(s)`` with
``s = module_seed(seed, name)`` inside ``torch.random.fork_rng`` (the caller's
random state is untouched), on a CPU copy of the module whose values are then
copied into the model.  A module's random values therefore depend only on
``(seed, name)``, not on the order of the steps nor on the device, and the
cumulative model of step k equals ``randomised_copy(model, steps[k].cumulative)``.
"""

from __future__ import annotations

import copy
import zlib
from typing import Callable, Iterable, Iterator

import numpy as np

from boundcheck.errors import InputError
from empirical.sanity.schedules import Step
from empirical.sanity.similarity import NORMALISATIONS, compare


def module_seed(seed: int, name: str) -> int:
    """Seed of module ``name``: ``(seed * 1_000_003 + crc32(name)) mod 2**63``."""
    return (int(seed) * 1_000_003 + zlib.crc32(name.encode())) % (2**63)


def _reset_swin_attention_v2(module) -> None:
    """torchvision's ``ShiftedWindowAttentionV2`` has no ``reset_parameters``: its own
    parameter is the cosine-attention ``logit_scale``, initialised to ``log(10)`` in its
    ``__init__``; its buffers (relative coordinates table and position index) are
    geometry, the same for every initialisation.  Its children (qkv, proj, the
    position-bias MLP) are randomised as modules of their own."""
    import math

    module.logit_scale.fill_(math.log(10.0))


#: default initialisers of parametrised modules without ``reset_parameters``, by class name
DEFAULT_INITIALISERS = {"ShiftedWindowAttentionV2": _reset_swin_attention_v2}


def reset_module(module, seed: int) -> None:
    """Re-initialise ``module``'s own parameters and buffers in place with its default initialiser
    (``reset_parameters`` / ``reset_running_stats``, or :data:`DEFAULT_INITIALISERS`)."""
    import torch

    has_own = any(True for _ in module.parameters(recurse=False)) or any(True for _ in module.buffers(recurse=False))
    if not has_own:
        return
    custom = DEFAULT_INITIALISERS.get(type(module).__name__)
    if custom is not None:
        with torch.no_grad():
            custom(module)
        return
    if not hasattr(module, "reset_parameters") and not hasattr(module, "reset_running_stats"):
        raise InputError(f"cannot randomise {type(module).__name__}: it has no reset_parameters()")
    tmp = copy.deepcopy(module).to("cpu")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        with torch.no_grad():
            if hasattr(tmp, "reset_parameters"):
                tmp.reset_parameters()
            if hasattr(tmp, "reset_running_stats"):
                tmp.reset_running_stats()
    with torch.no_grad():
        for (n, p), (_, q) in zip(module.named_parameters(recurse=False), tmp.named_parameters(recurse=False)):
            p.copy_(q)
        for (n, b), (_, c) in zip(module.named_buffers(recurse=False), tmp.named_buffers(recurse=False)):
            if b is not None and c is not None:
                b.copy_(c)


def randomise_inplace(model, names: Iterable[str], seed: int) -> None:
    """Re-initialise the modules ``names`` of ``model`` (a copy you own) in place."""
    modules = dict(model.named_modules())
    for name in names:
        if name not in modules:
            raise InputError(f"model has no module named {name!r}")
        reset_module(modules[name], module_seed(seed, name))


def randomised_copy(model, names: Iterable[str], seed: int = 0):
    """A deep copy of ``model`` with the modules ``names`` re-initialised; ``model`` is untouched."""
    m = copy.deepcopy(model)
    randomise_inplace(m, names, seed)
    return m


def cascade(model, steps: list[Step], seed: int = 0) -> Iterator[tuple[Step, object]]:
    """Yield ``(step, randomised copy)`` for each step, cumulatively (one deep copy, mutated).

    The yielded copy is the same object each time, re-randomised further: build
    whatever you need from it (e.g. a new Explainer) before advancing.
    """
    m = copy.deepcopy(model)
    for step in steps:
        randomise_inplace(m, step.new, seed)
        yield step, m


def randomization_rows(
    model,
    x,
    target,
    steps: list[Step],
    methods: list[str],
    explainer_factory: Callable,
    seed: int = 0,
    normalisations=NORMALISATIONS,
    evaluate=None,
    base_explain: Callable | None = None,
) -> list[list[dict]]:
    """Similarity of each method's map on the original vs. each randomised model.

    Parameters
    ----------
    model : torch.nn.Module, the original (not modified)
    x : tensor (B, C, H, W), network inputs
    target : sequence of B class indices (the same for every step)
    steps : the schedule
    methods : attribution method names
    explainer_factory : callable ``model -> explain``, ``explain(x, methods, target)``
        returning ``{method: array (B, H, W)}``; called once per model.
    seed : randomisation seed (see :func:`module_seed`)
    evaluate : set of step indices to explain (default all); the cascade still
        randomises every step, so the models explained are the same either way
    base_explain : the original model's ``explain`` if already built

    Returns
    -------
    list over images of lists of rows ``{"step", "marker", "method", <measures of
    similarity.compare>}``.
    """
    base = (base_explain or explainer_factory(model))(x, methods, target)
    n = int(x.shape[0])
    rows: list[list[dict]] = [[] for _ in range(n)]
    for step, mk in cascade(model, steps, seed):
        if evaluate is not None and step.index not in evaluate:
            continue
        maps = explainer_factory(mk)(x, methods, target)
        for method in methods:
            a0, ak = np.asarray(base[method], dtype=np.float64), np.asarray(maps[method], dtype=np.float64)
            for b in range(n):
                r = compare(a0[b], ak[b], normalisations)
                rows[b].append({"step": step.index, "marker": step.marker, "method": method, **r})
    return rows
