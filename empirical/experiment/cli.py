"""``boundcheck empirical [run|merge] ...``: the convergence experiment of Section 6.

``run`` (the default action) measures s1/s2 per image and appends them to the
output folder (resumable; torchrun-shardable), then builds the tables and
figures once every image is done.  ``merge`` builds them from what the folder
holds (all shards).  Without an image folder the 20 ImageNet photos shipped
with foolbox are used with EfficientNet-Lite0.

Examples::

    boundcheck empirical --out runs/lite0                                   # 20 foolbox photos, Lite0
    boundcheck empirical run --model resnet50 --imagenet-val VAL --labels \
        devkit/data/ILSVRC2012_validation_ground_truth.txt --out runs/r50   # first 1000 images, m 25,50,100
    torchrun --nproc_per_node 2 -m boundcheck empirical run --model resnet50 \
        --imagenet-val VAL --labels GT --out runs/r50                        # rank r: images i % 2 == r
    boundcheck empirical merge --out runs/r50                               # tables and figures, all shards

Re-running the same command after an interruption continues where it stopped.
"""

from __future__ import annotations

import argparse
import sys


def add_arguments(parser: argparse.ArgumentParser, name: str = "empirical") -> None:
    from empirical.cliargs import (
        add_deprecated_alias, add_device_args, add_image_args, add_m_grid_arg, add_methods_arg, add_model_args,
        add_out_arg, add_progress_arg, add_threads_arg, csv_list,
    )
    from empirical.augment import AUGMENTATIONS
    from empirical.experiment.runner import DEFAULT_M_GRID, PAPER_METHODS

    parser.add_argument("action", nargs="?", choices=("run", "merge"), default="run",
                        help="run (default): measure and, when complete, tabulate; merge: tabulate all shards")
    add_out_arg(parser)
    add_model_args(parser)
    add_image_args(parser, n_images_default=None)
    add_device_args(parser)
    add_threads_arg(parser)
    add_methods_arg(parser, default=PAPER_METHODS)
    add_m_grid_arg(parser, DEFAULT_M_GRID, help="samples per set, e.g. 25,50,100 (the default)")
    parser.add_argument("--augmentation", dest="augmentations", type=csv_list, default=AUGMENTATIONS,
                        metavar="A,B", help=f"comma-separated augmentations (default {','.join(AUGMENTATIONS)})")
    add_deprecated_alias(parser, "--augmentations", "--augmentation", dest="augmentations", type=csv_list)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--sigma", type=float, default=1.0, help="Gaussian noise std in network-input space")
    parser.add_argument("--batch-size", type=int, default=None,
                        help="samples per attribute() call (default: 8 on the CPU, where larger batches leave the "
                             "caches, 64 on CUDA)")
    parser.add_argument("--no-plots", action="store_true", help="tables only")
    add_progress_arg(parser)
    parser.add_argument("--stop-after", type=int, default=None, help=argparse.SUPPRESS)  # tests: simulated kill


def run(args) -> int:
    from empirical.experiment.runner import RunOptions, merge, run_experiment

    if args.action == "merge":
        res = merge(args.out, make_plots=not args.no_plots)
    else:
        from empirical.io import check_output_dir

        from empirical.options import default_batch_size, shared_kwargs

        check_output_dir(args.out)  # before torch is imported or anything loaded
        import torch

        if args.threads is None:
            torch.set_num_threads(max(1, min(torch.get_num_threads(), 16)))
        batch_size = args.batch_size if args.batch_size is not None else default_batch_size(args.device)
        opts = RunOptions(out=args.out, m_grid=args.m, augmentations=args.augmentations, methods=args.methods,
                          sigma=args.sigma, batch_size=batch_size, stop_after=args.stop_after,
                          make_plots=not args.no_plots, **shared_kwargs(args))
        res = run_experiment(opts)
        if res["status"] != "complete":
            print(f"{res['status']}: {res['written']} image(s) written to {args.out}", file=sys.stderr)
            return 0
    print(res["summary"])
    print(f"tables: {', '.join(res['tables'].values())}", file=sys.stderr)
    return 0
