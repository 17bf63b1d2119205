"""The options every torch command shares, validated once in one wording.

* :class:`StudyOptions`: the base dataclass of every study's options (``RunOptions`` of the experiment,
  ``AuditOptions``, ``SanityOptions``, ``ExplainOptions``): model spec, images, seed, device, dtype,
  TF32, threads, progress, with one set of defaults and one :meth:`StudyOptions.check_shared`; each
  study's class adds only its own fields.  :func:`shared_kwargs` reads the shared fields from the parsed
  command line (the option groups of :mod:`empirical.cliargs`).
* :class:`empirical.models.ModelSpec` (model, weights or random, classes, input size, mean, std):
  :meth:`StudyOptions.model_spec` / :func:`model_spec` (which also reads a parsed command line, and the
  older ``pretrained`` spelling).  ``random_weights`` is the one field name; ``pretrained`` stays a
  read-only property (``not random_weights``), and ``config.json`` folders written with ``pretrained``
  are translated on resume (:func:`empirical.io.migrate_config`).
* the device (``auto``, ``cpu``, ``cuda``, ``cuda:N``): :func:`check_device` when parsed,
  :func:`resolve_device` when used; "no CUDA device" is said in one place (:data:`NO_CUDA`).
* the dtype (``float32``, ``float64``): :func:`check_dtype`; counts (``--n-images``, ``--threads``,
  ``--batch-size``, ...): :func:`check_count`, one wording ("must be an integer >= k, got v").

Nothing here imports torch at module level (the CLI parses options before loading it).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, fields

from boundcheck.errors import InputError
from empirical.models import LITE0

DTYPES = ("float32", "float64")
#: the model of every command when ``--model`` is not given
DEFAULT_MODEL = LITE0
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
    """The :class:`empirical.models.ModelSpec` of options or a parsed command line (``random_weights``, or
    the older ``pretrained``)."""
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


def default_batch_size(device) -> int:
    """The batch when none is given: 64 on CUDA, 8 on the CPU (where larger batches leave the caches)."""
    name = check_device(device)
    if name == "auto":
        import torch

        return 64 if torch.cuda.is_available() else 8
    return 64 if name.startswith("cuda") else 8


def check_count(option: str, value, minimum: int = 1, allow_none: bool = False):
    """An integer option (``--n-images``, ``--batch-size``, ...) that must be >= ``minimum``, in one wording:
    ``"--n-images must be an integer >= 1, got 0"``."""
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise InputError(f"{option} must be an integer >= {minimum}, got {value!r}")
    return value


def check_threads(value):
    """``--threads``: None (torch's own choice) or an integer >= 1; else one line."""
    return check_count("--threads", value, allow_none=True)


@dataclass(kw_only=True)
class StudyOptions:
    """The options every torch study shares (keyword-only; a study's own fields come first in its class).

    Model (:class:`empirical.models.ModelSpec`): ``model`` (a name, ``timm:NAME``, ``FILE.py:build`` or
    ``package.module:build``), ``weights`` (a state_dict file) or ``random_weights``, and the overrides
    ``num_classes``, ``input_size``, ``mean``, ``std`` (None: the weights' / builder's own).
    Images (:func:`empirical.data.list_images`): ``images`` (a folder), ``image_files`` (single files),
    ``imagenet_val`` with ``labels``, ``n_images`` (None: the study's own rule, documented there).
    Run: ``seed``; ``device`` ``auto`` (CUDA when available), ``cpu``, ``cuda`` or ``cuda:N``; ``dtype``
    ``float32`` or ``float64``; ``allow_tf32`` (CUDA only); ``low_memory`` (the engine's low-memory
    mode, ``Explainer(low_memory=True)``: same numbers, less memory, slower LRP-β/γ; the CLI also hands
    freed memory back to the system, :func:`empirical.runtime.return_freed_memory`); ``threads`` (torch
    CPU threads, None: leave torch's setting); ``progress`` (a bar on stderr, shown after 2 s).

    ``pretrained`` is the older name of ``not random_weights`` (read-only).
    """

    model: str = DEFAULT_MODEL
    weights: str | None = None
    random_weights: bool = False
    num_classes: int | None = None
    input_size: int | None = None
    mean: tuple | None = None
    std: tuple | None = None
    images: str | None = None
    image_files: tuple | None = None
    imagenet_val: str | None = None
    labels: str | None = None
    n_images: int | None = None
    seed: int = 0
    device: str = "auto"
    dtype: str = "float32"
    allow_tf32: bool = False
    low_memory: bool = False
    threads: int | None = None
    progress: bool = True

    @property
    def pretrained(self) -> bool:
        """Whether trained weights were asked for (the older spelling; ``not random_weights``)."""
        return not self.random_weights

    def model_spec(self):
        """The :class:`empirical.models.ModelSpec` of these options."""
        return model_spec(self)

    def check_shared(self):
        """Check the shared options in one wording, loading nothing; returns the checked ``ModelSpec``.

        Raises
        ------
        InputError
            One line naming the option (the model spec's own checks, ``--n-images``, ``--seed``,
            ``--device``, ``--dtype``, ``--threads``, an image source given twice).
        """
        check_count("--n-images", self.n_images, allow_none=True)
        check_count("--seed", self.seed, minimum=0)
        check_device(self.device)
        check_dtype(self.dtype)
        check_threads(self.threads)
        if self.image_files is not None and not isinstance(self.image_files, (tuple, list)):
            raise InputError(f"image_files must be a sequence of files, got {self.image_files!r}")
        return self.model_spec().check()

    def engine_options(self) -> dict:
        """The keyword arguments of :class:`empirical.engine.Explainer` these options set:
        ``dtype`` (a torch dtype), ``allow_tf32``, ``low_memory``."""
        import torch

        return {"dtype": getattr(torch, check_dtype(self.dtype)), "allow_tf32": bool(self.allow_tf32),
                "low_memory": bool(self.low_memory)}

    def apply_threads(self) -> None:
        """``torch.set_num_threads(threads)`` when ``threads`` is given."""
        if self.threads:
            import torch

            torch.set_num_threads(int(self.threads))


#: the names of the shared fields (what :func:`shared_kwargs` reads from a parsed command line)
SHARED_FIELDS = tuple(f.name for f in fields(StudyOptions))


def shared_kwargs(args) -> dict:
    """The shared fields from a parsed command line (:mod:`empirical.cliargs` option groups): ``--image``
    becomes ``image_files`` (a tuple or None), ``--no-progress`` ``progress``; a field the command has no
    option for keeps its default."""
    kw = {k: getattr(args, k) for k in SHARED_FIELDS if hasattr(args, k)}
    if hasattr(args, "image"):
        kw["image_files"] = tuple(args.image) if args.image else None
    if hasattr(args, "no_progress"):
        kw["progress"] = not args.no_progress
    return kw
