"""``boundcheck sanity {randomize,faithfulness,overtaking}``: the sanity checks of [P2].

randomize
    Top-down cascading model-parameter randomisation (schedules of
    :mod:`empirical.sanity.schedules`, [P2] A.1); similarity of every method's
    map on the original vs. each randomised model (SSIM, Spearman, MSE after
    second-moment and max-abs normalisation, :mod:`empirical.sanity.similarity`),
    with the Thm 4 bound beside the MSE.
faithfulness
    Region perturbation with a blurred copy ([P2] A.1,
    :mod:`empirical.sanity.faithfulness`): softmax curves and AUC (lower is better).
overtaking
    Activation quantiles, overtaking probabilities of Thm 2 / Section I and the
    fraction of non-positive activations of Section J
    (:mod:`empirical.sanity.overtaking`).

Every run writes ``config.json``, ``results.jsonl`` (one record per image,
fsync'ed; a restart with the same ``--out`` skips the done images and refuses a
directory made with a different configuration), tables (CSV/JSON/Markdown),
PNG figures and ``summary.md`` into ``--out``.

Targets: the image's ImageNet label when known (foolbox photos, ImageNet
validation folders), else the original model's top-1 class; the same target is
explained on every randomised model.

The work is done by :func:`empirical.sanity.run.run_check`; this module parses
the options (the shared groups of :mod:`empirical.cliargs`).
"""

from __future__ import annotations

import argparse

from boundcheck.errors import InputError
from empirical.options import DEFAULT_MODEL
from empirical.sanity.run import DEFAULT_METHODS, SUBCOMMANDS, SanityOptions, run_check

__all__ = ["add_arguments", "options_from_args", "run", "SanityOptions", "run_check"]


# --------------------------------------------------------------------------- argparse
def add_arguments(parser: argparse.ArgumentParser, name: str = "sanity") -> None:
    from empirical.cliargs import (add_deprecated_alias, add_device_args, add_image_args, add_methods_arg,
                                   add_model_args, add_out_arg, add_progress_arg, add_threads_arg)

    sub = parser.add_subparsers(dest="sanity_command", metavar="CHECK")
    helps = {
        "randomize": "top-down cascading model randomisation: SSIM / Spearman / MSE curves per method",
        "faithfulness": "region perturbation with a blurred copy: softmax curves and AUC per method",
        "overtaking": "overtaking probabilities (Thm 2, Sec. I) and non-positive activations (Sec. J)",
    }
    for cmd in SUBCOMMANDS:
        p = sub.add_parser(cmd, help=helps[cmd], description=helps[cmd])
        add_out_arg(p)
        add_model_args(p, default=DEFAULT_MODEL)
        add_image_args(p, n_images_default=4)
        add_device_args(p)
        add_threads_arg(p)
        p.add_argument("--seed", type=int, default=0, help="seed of the randomisation / random baseline")
        p.add_argument("--batch-size", dest="batch_size", type=int, default=8, help="images per batch")
        add_progress_arg(p)
        add_deprecated_alias(p, "--progress", "the progress bar is the default (--no-progress turns it off)",
                             dest="no_progress", const=False)
        if cmd != "overtaking":
            add_methods_arg(p, default=DEFAULT_METHODS)
        if cmd == "randomize":
            p.epilog = ("schedules ([P2] A.1): resnet50 (fc + 16 .conv1 steps), efficientnet-lite0 (_fc + 16 "
                        "._depthwise_conv steps), efficientnet_v2_s (classifier + 40 block steps), swin_v2_t (head + 12 block steps)")
            p.add_argument("--steps", type=int, help="keep the first K steps of the schedule (step 0 = fc)")
            p.add_argument("--stride", type=int, default=1,
                           help="explain every S-th step (and the last); the cascade itself runs all steps")
        if cmd == "faithfulness":
            p.add_argument("--region-size", dest="region_size", type=int, default=15, choices=(8, 15))
            p.add_argument("--n-regions", dest="n_regions", type=int, default=30,
                           help="cells replaced, at most the grid's cell count (225 for 15x15 cells of 224x224)")


def options_from_args(args) -> SanityOptions:
    cmd = getattr(args, "sanity_command", None)
    if cmd is None:
        raise InputError("sanity: choose a check: " + ", ".join(SUBCOMMANDS))
    from empirical.options import shared_kwargs

    kw = {"out": args.out, "batch_size": args.batch_size, **shared_kwargs(args)}
    if hasattr(args, "methods"):
        kw["methods"] = tuple(args.methods)
    for k in ("steps", "stride", "region_size", "n_regions"):
        if hasattr(args, k) and getattr(args, k) is not None:
            kw[k] = getattr(args, k)
    return SanityOptions(command=cmd, **kw)


def run(args) -> int:
    opts = options_from_args(args)
    result = run_check(opts)
    print(result["summary"])
    print(f"results in {opts.out}")
    return 0

