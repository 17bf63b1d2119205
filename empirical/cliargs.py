"""Shared command-line option groups of the torch commands (empirical, audit, sanity, explain).

Each group is one call that adds its options with one spelling and one default
everywhere, plus a ``*_from_args`` function that turns the parsed options into
what the command needs::

    add_model_args(parser)           --model --weights --random-weights --num-classes --input-size --mean --std
    add_image_args(parser)           --images --image --imagenet-val --labels --n-images
    add_device_args(parser)          --device {auto,cpu,cuda,cuda:N} --dtype {float32,float64} --allow-tf32 --low-memory
    add_methods_arg(parser)          --methods a,b,c
    add_out_arg(parser)              --out DIR (checked writable before any work)
    add_threads_arg(parser)          --threads N
    add_progress_arg(parser)         --no-progress
    add_m_grid_arg(parser, ...)      --m-grid M1,M2,...

One spelling per option; an older spelling is a hidden alias (:func:`add_deprecated_alias`) that prints one
notice line.  No spelling is a prefix of a ``torchrun`` option, so every option passes through
``torchrun ... -m boundcheck COMMAND`` unharmed (tests/test_cli_contract.py).

Bad values are argparse errors (one line with the project's parser, exit 2) or
:class:`boundcheck.errors.InputError` from the ``*_from_args`` functions.
"""

from __future__ import annotations

import argparse
import math
import sys

from boundcheck.errors import InputError
from empirical.io import check_output_dir
from empirical.options import DEFAULT_MODEL, DTYPES

DEVICES = ("auto", "cpu", "cuda")  # and cuda:N (empirical.options.check_device)


# --------------------------------------------------------------------------- value types


def positive_int(text) -> int:
    """argparse type: an integer >= 1 (refuses 0, negatives and non-integers, one line)."""
    try:
        value = int(str(text).strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer (>= 1), got {value}")
    return value


def positive_int_list(text) -> tuple:
    """argparse type: comma-separated integers >= 1 (``--m 1,4,16``)."""
    try:
        vals = tuple(int(t) for t in str(text).split(",") if t.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not vals or min(vals) < 1:
        raise argparse.ArgumentTypeError(f"expected positive integers, got {text!r}")
    return vals


def nonnegative_int(text) -> int:
    """argparse type: an integer >= 0."""
    try:
        value = int(str(text).strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a non-negative integer, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a non-negative integer (>= 0), got {value}")
    return value


def _three_floats(positive: bool):
    def parse(text) -> tuple[float, float, float]:
        parts = [t.strip() for t in str(text).split(",")]
        try:
            vals = tuple(float(t) for t in parts)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected three comma-separated numbers R,G,B, got {text!r}") from None
        if len(vals) != 3 or not all(math.isfinite(v) for v in vals):
            raise argparse.ArgumentTypeError(f"expected three finite numbers R,G,B, got {text!r}")
        if positive and min(vals) <= 0:
            raise argparse.ArgumentTypeError(f"expected three positive numbers R,G,B, got {text!r}")
        return vals

    parse.__name__ = "three positive numbers" if positive else "three numbers"
    return parse


class _DeprecatedTrue(argparse.Action):
    """A store-true alias that prints one deprecation line on stderr."""

    def __init__(self, option_strings, dest, replacement: str, **kwargs):
        self.replacement = replacement
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None):
        print(f"{option_string} is deprecated; use {self.replacement}", file=sys.stderr)
        setattr(namespace, self.dest, True)


class _DeprecatedAlias(argparse.Action):
    """An older spelling of an option: one notice line on stderr, then the value is stored under the
    new option's ``dest`` (``append=True``: added to the list/tuple already there)."""

    def __init__(self, option_strings, dest, replacement: str, append: bool = False, **kwargs):
        self.replacement, self.append = replacement, append
        super().__init__(option_strings, dest, default=argparse.SUPPRESS, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None):
        print(f"{option_string} is deprecated; use {self.replacement}", file=sys.stderr)
        if self.append:
            seen = getattr(namespace, f"_{self.dest}_by_alias", False)
            old = tuple(getattr(namespace, self.dest, None) or ()) if seen else ()
            values = (*old, *(values if isinstance(values, (list, tuple)) else (values,)))
            setattr(namespace, f"_{self.dest}_by_alias", True)
        setattr(namespace, self.dest, values)


def add_deprecated_alias(parser, old: str, replacement: str, dest: str, append: bool = False, **kwargs):
    """Keep ``old`` working as a hidden alias of ``replacement`` (same ``dest``), with a notice line.

    ``const=VALUE`` (with ``nargs=0``) makes a flag that stores VALUE.
    """
    if "const" in kwargs:
        return parser.add_argument(old, dest=dest, action=_DeprecatedConst, replacement=replacement,
                                   const=kwargs.pop("const"), help=argparse.SUPPRESS, **kwargs)
    return parser.add_argument(old, dest=dest, action=_DeprecatedAlias, replacement=replacement, append=append,
                               help=argparse.SUPPRESS, **kwargs)


class _DeprecatedConst(argparse.Action):
    """An older flag: one notice line on stderr, then ``const`` is stored under the new option's ``dest``."""

    def __init__(self, option_strings, dest, replacement: str, const=None, **kwargs):
        self.replacement = replacement
        super().__init__(option_strings, dest, nargs=0, const=const, default=argparse.SUPPRESS, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None):
        print(f"{option_string} is deprecated; {self.replacement}", file=sys.stderr)
        setattr(namespace, self.dest, self.const)


def csv_list(text) -> tuple:
    """argparse type: a non-empty comma-separated list of words."""
    items = tuple(t.strip() for t in str(text).split(",") if t.strip())
    if not items:
        raise argparse.ArgumentTypeError(f"expected a comma-separated list, got {text!r}")
    return items


def add_m_grid_arg(parser, default, help: str):
    """``--m-grid M1,M2,...`` (older spelling ``--m``, which torchrun's own parser takes for an
    abbreviation of its ``--master-addr`` / ``--max-restarts`` / ``--module`` ...)."""
    a = parser.add_argument("--m-grid", dest="m", type=positive_int_list, default=default, metavar="M1,M2,...",
                            help=help)
    add_deprecated_alias(parser, "--m", "--m-grid", dest="m", type=positive_int_list)
    return a


# --------------------------------------------------------------------------- model


def add_model_args(parser, default: str = DEFAULT_MODEL):
    """``--model --weights --random-weights (--random-init) --num-classes --input-size --mean --std``."""
    g = parser.add_argument_group("model")
    g.add_argument("--model", default=default, metavar="SPEC",
                   help=f"torchvision classifier name, efficientnet-lite0, FILE.py:build or package.module:build "
                        f"(default {default})")
    w = g.add_mutually_exclusive_group()
    w.add_argument("--weights", metavar="FILE", default=None,
                   help="state_dict file (default: torch hub cache / shipped Lite0 weights; user models: random)")
    w.add_argument("--random-weights", dest="random_weights", action="store_true", default=False,
                   help="random initialisation, explicitly (architecture-only experiments)")
    w.add_argument("--random-init", dest="random_weights", action=_DeprecatedTrue, replacement="--random-weights",
                   help=argparse.SUPPRESS)
    g.add_argument("--num-classes", type=positive_int, default=None, metavar="N",
                   help="output classes, passed to the builder as num_classes=N")
    g.add_argument("--input-size", type=positive_int, default=None, metavar="N",
                   help="side of the square input (default: the weights' crop; user models 224)")
    g.add_argument("--mean", type=_three_floats(False), default=None, metavar="R,G,B",
                   help="normalisation mean (default: the weights'; user models ImageNet's)")
    g.add_argument("--std", type=_three_floats(True), default=None, metavar="R,G,B",
                   help="normalisation std (default: the weights'; user models ImageNet's)")
    return g


def model_from_args(args):
    """The :class:`empirical.models.ModelSpec` of the parsed model options, resolved -> ``LoadedModel``."""
    from empirical.options import model_spec

    return model_spec(args).resolve()


# --------------------------------------------------------------------------- images


def add_image_args(parser, n_images_default: int | None = None):
    """``--images DIR --image FILE (repeatable) --imagenet-val DIR --labels FILE --n-images N``.

    Without any source the 20 foolbox ImageNet photos are used.  ``n_images_default``
    None means all images (the experiment then applies the paper's 1000 for ImageNet).
    """
    g = parser.add_argument_group("images")
    g.add_argument("--images", metavar="DIR", default=None, help="a folder of images (label unknown)")
    g.add_argument("--image", metavar="FILE", action="append", default=None,
                   help="one image file, repeatable (label unknown)")
    g.add_argument("--imagenet-val", dest="imagenet_val", metavar="DIR", default=None,
                   help="ImageNet validation folder (flat with --labels, or wnid sub-folders)")
    g.add_argument("--labels", metavar="FILE", default=None,
                   help="devkit ILSVRC2012_validation_ground_truth.txt (flat --imagenet-val)")
    g.add_argument("--n-images", dest="n_images", type=positive_int, default=n_images_default, metavar="N",
                   help="the first N images by file name" + (f" (default {n_images_default})"
                                                             if n_images_default is not None else " (default all)"))
    return g


def images_from_args(args):
    """``(items, source)`` of :func:`empirical.data.list_images` for the parsed image options."""
    from empirical.data import list_images

    return list_images(imagenet_val=args.imagenet_val, labels=args.labels, images=args.images, n=args.n_images,
                       image_files=args.image)


# --------------------------------------------------------------------------- device


def add_device_args(parser):
    """``--device {auto,cpu,cuda,cuda:N}`` (default auto) ``--dtype {float32,float64}`` (default float32) ``--allow-tf32``
    ``--low-memory``."""
    g = parser.add_argument_group("device")
    g.add_argument("--device", type=_device_type, default="auto", metavar="{auto,cpu,cuda,cuda:N}",
                   help="auto (default): cuda if available, else cpu")
    g.add_argument("--dtype", choices=DTYPES, default="float32", help="floating-point type of model and input")
    g.add_argument("--allow-tf32", dest="allow_tf32", action="store_true", default=False,
                   help="CUDA only: TF32 convolutions/matmuls (faster, less exact); no effect on the CPU")
    g.add_argument("--low-memory", dest="low_memory", action="store_true", default=False,
                   help="LRP-β/γ: sign parts recomputed in the backward pass, one backward pass per rule, "
                        "no 1 GiB weight-cache floor, freed memory handed back to the system (same maps, "
                        "slower; BENCHMARKS.md)")
    return g


def _device_type(text) -> str:
    from empirical.options import check_device

    try:
        return check_device(text)
    except InputError as exc:
        raise argparse.ArgumentTypeError(str(exc).replace("--device must be", "must be")) from None


def device_from_args(args):
    """The ``torch.device`` of ``--device`` (:func:`empirical.options.resolve_device`)."""
    import torch

    from empirical.options import resolve_device

    return torch.device(resolve_device(getattr(args, "device", None)))


def dtype_from_args(args):
    """The ``torch.dtype`` of ``--dtype`` (:func:`empirical.options.check_dtype`)."""
    import torch

    from empirical.options import check_dtype

    return getattr(torch, check_dtype(getattr(args, "dtype", None)))


# --------------------------------------------------------------------------- methods


class _MethodsAction(argparse.Action):
    """``--methods a,b,c`` or (older spelling) ``--methods a b``; each validated by ``parse_method``."""

    def __call__(self, parser, namespace, values, option_string=None):
        from empirical.engine import parse_method

        names = [t.strip() for v in values for t in str(v).split(",") if t.strip()]
        if not names:
            parser.error(f"argument {option_string}: empty method list")
        for name in names:
            try:
                parse_method(name)
            except InputError as exc:
                parser.error(f"argument {option_string}: {exc}")
        setattr(namespace, self.dest, tuple(dict.fromkeys(names)))  # order kept, repeats dropped


def add_methods_arg(parser, default=None):
    """``--methods a,b,c`` (comma list; ``--methods a b`` also accepted), default the paper's methods."""
    if default is None:
        from empirical.engine import PAPER_METHODS

        default = PAPER_METHODS
    return parser.add_argument(
        "--methods", nargs="+", action=_MethodsAction, default=tuple(default), metavar="A,B,C",
        help=f"attribution methods, comma-separated (default {','.join(default)})",
    )


# --------------------------------------------------------------------------- output folder and numbers


def _out_type(text) -> str:
    try:
        return str(check_output_dir(text))
    except InputError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_out_arg(parser, required: bool = True):
    """``--out DIR``: the output folder, checked by :func:`check_output_dir` when parsed."""
    return parser.add_argument("--out", required=required, type=_out_type, metavar="DIR",
                               help="output folder (checked writable before any work; created by the command when missing)")


def add_progress_arg(parser):
    """``--no-progress``: no progress bar (:class:`empirical.runtime.progress_bar`, stderr, shown after 2 s)."""
    return parser.add_argument("--no-progress", dest="no_progress", action="store_true", default=False,
                               help="no progress bar")


def add_threads_arg(parser, default: int | None = None):
    """``--threads N`` (>= 1): torch CPU threads; default None leaves torch's choice."""
    return parser.add_argument("--threads", type=positive_int, default=default, metavar="N",
                               help="torch CPU threads (>= 1)" + (f", default {default}" if default else ""))
