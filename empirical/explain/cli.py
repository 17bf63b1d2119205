"""``boundcheck explain``: see the averaged maps, and how far they are from converged.

Per image and method, the running average of augmented maps at every m of the
grid (nested: the m = 16 average contains the m = 4 one), as ``.npy`` and PNG
heatmaps, a montage per image (rows = methods, columns = the input and each m),
the split-half statistics s1, s2 ([P1] eq. (38), (39)) measured on the image
beside the m the theory guarantees (eq. (24) with the rule's value range at the
network's depth, paper and exact), and a convergence plot.

Examples::

    boundcheck explain --out runs/explain                              # first shipped photo, Lite0
    boundcheck explain --out runs/p --image cat.jpg --image dog.jpg --augmentation photometric --m-grid 1,4,16
    boundcheck explain --out runs/t --target-s2 0.1 --max-m 256         # double m until s2 <= 0.1

Re-running the same command continues where it stopped.
"""

from __future__ import annotations

import argparse
import sys

from empirical.explain.average import AUGMENTATIONS
from empirical.explain.run import DEFAULT_DELTA, DEFAULT_M, DEFAULT_MAX_M, DEFAULT_METHODS, DEFAULT_T



def add_arguments(parser: argparse.ArgumentParser, name: str = "explain") -> None:
    from empirical.cliargs import (
        add_deprecated_alias,
        add_m_grid_arg,
        add_progress_arg,
        add_device_args,
        add_image_args,
        add_methods_arg,
        add_model_args,
        add_out_arg,
        add_threads_arg,
    )

    add_out_arg(parser)
    add_model_args(parser)
    images = add_image_args(parser)
    for action in images._group_actions:  # the one default that differs: the shipped photos
        if action.dest == "n_images":
            action.help = "the first N images by file name (default: all given; without a source the first shipped photo)"
    add_methods_arg(parser, default=DEFAULT_METHODS)
    add_device_args(parser)
    add_threads_arg(parser)
    g = parser.add_argument_group("averaging")
    g.add_argument("--augmentation", choices=AUGMENTATIONS, default="gaussian",
                   help="gaussian (noise in network-input space), photometric or none (default gaussian)")
    g.add_argument("--sigma", type=float, default=1.0, metavar="S",
                   help="Gaussian noise std in network-input space (default 1)")
    add_m_grid_arg(g, DEFAULT_M, help="sample sizes, e.g. 1,4,16,64 (the default)")
    g.add_argument("--seed", type=int, default=0, metavar="S", help="seeds every sample stream (default 0)")
    g.add_argument("--batch-size", type=int, default=None, metavar="B", help="samples per attribute() call (default 8 on "
                   "the CPU, 64 on CUDA)")
    g.add_argument("--deviation", dest="t", type=float, default=DEFAULT_T, metavar="T",
                   help=f"deviation t for the theory's m (default {DEFAULT_T})")
    add_deprecated_alias(g, "--t", "--deviation", dest="t", type=float)
    g.add_argument("--delta", type=float, default=DEFAULT_DELTA, metavar="D",
                   help=f"failure probability (default {DEFAULT_DELTA})")
    g.add_argument("--target-s2", type=float, default=None, metavar="X",
                   help="double m until the measured split-half s2 <= X (measured on the image, not a guarantee)")
    g.add_argument("--max-m", type=int, default=DEFAULT_MAX_M, metavar="M",
                   help=f"cap for --target-s2 (default {DEFAULT_MAX_M})")
    g.add_argument("--no-split-half", action="store_true", help="one set of samples only: half the cost, no s1/s2 "
                   "and no convergence plot")
    g.add_argument("--no-heatmaps", action="store_true", help="no PNG per map (montages, .npy files and "
                   "plots are still written)")
    add_progress_arg(g)
    g.add_argument("--stop-after", type=int, default=None, help=argparse.SUPPRESS)  # tests: simulated kill


def options_from_args(args):
    from empirical.explain.run import ExplainOptions

    from empirical.options import default_batch_size, shared_kwargs

    batch = args.batch_size if args.batch_size is not None else default_batch_size(args.device)
    return ExplainOptions(
        out=args.out, methods=tuple(args.methods), augmentation=args.augmentation, sigma=args.sigma,
        m_grid=tuple(args.m), batch_size=batch, t=args.t, delta=args.delta, target_s2=args.target_s2,
        max_m=args.max_m, split_half=not args.no_split_half, heatmaps=not args.no_heatmaps,
        stop_after=args.stop_after, **shared_kwargs(args))


def run(args) -> int:
    import torch

    from empirical.explain.run import run_explain

    torch.set_num_threads(args.threads or max(1, min(torch.get_num_threads(), 16)))
    res = run_explain(options_from_args(args))
    print(res["summary"])
    skipped = f", {len(res['skipped'])} unreadable image(s) skipped" if res.get("skipped") else ""
    print(f"{res['status']}: {res['written']} image(s) written to {res['out']}{skipped} ({res['seconds']:.1f} s)",
          file=sys.stderr)
    return 0
