"""The options every torch command shares, validated once in one wording.

* :class:`empirical.models.ModelSpec` (model, weights or random, classes, input size, mean, std):
  :func:`model_spec` reads it from any study's options, whichever older field name
  (``pretrained`` or ``random_weights``) the study uses.
* the device (``auto``, ``cpu``, ``cuda``, ``cuda:N``): :func:`check_device` when parsed,
  :func:`resolve_device` when used; "no CUDA device" is said in one place (:data:`NO_CUDA`).
* the dtype (``float32``, ``float64``): :func:`check_dtype`.

Nothing here imports torch at module level (the CLI parses options before loading it).
"""

from __future__ import annotations

import re

from boundcheck.errors import InputError

DTYPES = ("float32", "float64")
_DEVICE_RX = re.compile(r"^(auto|cpu|cuda|cuda:\d+)$")
#: the one wording of a CUDA device asked for on a machine without one
NO_CUDA = "--device {name}: no CUDA device is available; use --device cpu or auto"


def check_device(name) -> str:
    """``auto``, ``cpu``, ``cuda`` or ``cuda:N`` (``None`` -> ``auto``); else one line."""
    name = "auto" if name is None else str(name).strip()
    if not _DEVICE_RX.match(name):
        raise InputError(f"--device must be auto, cpu, cuda or cuda:N, got {name!r}")
    return name


def resolve_device(name, local_rank: int = 0, world: int = 1) -> str:
    """The device a run uses: ``auto`` -> ``cuda`` when available, else ``cpu``; ``cuda`` -> the
    process's GPU (``cuda:LOCAL_RANK`` under torchrun); ``cuda:N`` checked against the GPUs there."""
    import torch

    name = check_device(name)
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise InputError(NO_CUDA.format(name=name))
        if name == "cuda":
            return f"cuda:{local_rank}" if world > 1 or local_rank else "cuda:0"
        k = int(name.split(":")[1])
        if k >= torch.cuda.device_count():
            raise InputError(f"--device {name}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    return name


def check_dtype(name) -> str:
    """``float32`` or ``float64`` (``None`` -> ``float32``); else one line."""
    name = "float32" if name is None else str(name)
    if name not in DTYPES:
        raise InputError(f"--dtype must be float32 or float64, got {name!r}")
    return name


def model_spec(opts):
    """The :class:`empirical.models.ModelSpec` of any study's options (``pretrained`` or ``random_weights``)."""
    from empirical.models import ModelSpec

    if hasattr(opts, "random_weights"):
        random_weights = bool(opts.random_weights)
    else:
        random_weights = not getattr(opts, "pretrained", True)
    return ModelSpec(model=opts.model, weights=opts.weights, random_weights=random_weights,
                     num_classes=getattr(opts, "num_classes", None), input_size=getattr(opts, "input_size", None),
                     mean=getattr(opts, "mean", None), std=getattr(opts, "std", None))


def check_run_memory(loaded, batch: int, device: str, dtype: str = "float32") -> int | None:
    """Before any work: refuse a batch whose activations cannot fit in this machine's memory (one line).

    :func:`empirical.models.check_input_memory` at the model's input size for ``batch`` images (float64:
    twice the bytes).  Checked on the CPU, where a failed allocation comes late and as a long traceback;
    on CUDA the engine's own out-of-memory error is left to torch.  Objects without a ``model``
    (tests' stand-ins) are not checked.
    """
    if not str(device).startswith("cpu") or not hasattr(loaded, "model") or not hasattr(loaded, "input_size"):
        return None
    from empirical.models import check_input_memory

    return check_input_memory(loaded.model, int(loaded.input_size), getattr(loaded, "name", "model"),
                              batch=int(batch) * (2 if check_dtype(dtype) == "float64" else 1))


def check_count(option: str, value, minimum: int = 1, allow_none: bool = False):
    """An integer option (``--n-images``, ``--batch-size``, ...) that must be >= ``minimum``, in one wording:
    ``"--n-images must be an integer >= 1, got 0"``."""
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise InputError(f"{option} must be an integer >= {minimum}, got {value!r}")
    return value
