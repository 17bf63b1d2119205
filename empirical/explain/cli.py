"""``boundcheck explain``: see the averaged maps, and how far they are from converged.

Per image and method, the running average of augmented maps at every m of the
grid (nested: the m = 16 average contains the m = 4 one), as ``.npy`` and PNG
heatmaps, a montage per image (rows = methods, columns = the input and each m),
the split-half statistics s1, s2 ([P1] eq. (38), (39)) measured on the image
beside the m the theory guarantees (eq. (24) with the rule's value range at the
network's depth, paper and exact), and a convergence plot.

Examples::

    boundcheck explain --out runs/explain                              # first shipped photo, Lite0
    boundcheck explain --out runs/p --image cat.jpg --augmentation photometric --m 1,4,16
    boundcheck explain --out runs/t --target-s2 0.1 --max-m 256         # double m until s2 <= 0.1

Re-running the same command continues where it stopped.
"""

from __future__ import annotations

import argparse
import sys

from empirical.explain.average import AUGMENTATIONS
from empirical.explain.run import DEFAULT_DELTA, DEFAULT_M, DEFAULT_MAX_M, DEFAULT_METHODS, DEFAULT_T


def _csv(text: str) -> tuple:
    items = tuple(t.strip() for t in text.split(",") if t.strip())
    if not items:
        raise argparse.ArgumentTypeError(f"empty list {text!r}")
    return items


def _ints(text: str) -> tuple:
    try:
        vals = tuple(int(t) for t in text.split(",") if t.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"--m must be comma-separated integers, got {text!r}") from None
    if not vals or min(vals) < 1:
        raise argparse.ArgumentTypeError(f"--m must be positive integers, got {text!r}")
    return vals


def add_arguments(parser: argparse.ArgumentParser, name: str = "explain") -> None:
    from empirical.models import MODEL_NAMES

    parser.add_argument("--out", required=True, help="output folder (maps, PNGs, explain.json/md; resumable)")
    parser.add_argument("--model", choices=MODEL_NAMES, default="efficientnet-lite0",
                        help="default: efficientnet-lite0 (shipped ImageNet weights)")
    parser.add_argument("--weights", metavar="FILE", help="state_dict file (default: torch hub cache / shipped)")
    parser.add_argument("--random-weights", action="store_true", help="random initialisation, explicitly")
    parser.add_argument("--images", metavar="DIR", help="folder of images (target = top prediction)")
    parser.add_argument("--image", metavar="FILE", nargs="+", action="extend", default=[],
                        help="image file(s) (target = top prediction)")
    parser.add_argument("--n-images", type=int, default=None,
                        help="first N images (default: all given; 1 of the shipped photos without --images/--image)")
    parser.add_argument("--methods", type=_csv, default=DEFAULT_METHODS,
                        help="comma-separated engine method names (default: " + ",".join(DEFAULT_METHODS) + ")")
    parser.add_argument("--augmentation", choices=AUGMENTATIONS, default="gaussian",
                        help="gaussian (noise in network-input space), photometric or none (default gaussian)")
    parser.add_argument("--sigma", type=float, default=1.0, help="Gaussian noise std in network-input space")
    parser.add_argument("--m", type=_ints, default=DEFAULT_M, help="sample sizes, e.g. 1,4,16,64 (the default)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", choices=("cpu", "cuda"), default=None, help="default: cuda if available")
    parser.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    parser.add_argument("--batch-size", type=int, default=None, help="samples per attribute() call (default 8 on "
                        "the CPU, 64 on CUDA)")
    parser.add_argument("--t", type=float, default=DEFAULT_T, help=f"deviation t for the theory's m (default {DEFAULT_T})")
    parser.add_argument("--delta", type=float, default=DEFAULT_DELTA, help=f"failure probability (default {DEFAULT_DELTA})")
    parser.add_argument("--target-s2", type=float, default=None,
                        help="double m until the measured split-half s2 <= X (measured on the image, not a guarantee)")
    parser.add_argument("--max-m", type=int, default=DEFAULT_MAX_M, help=f"cap for --target-s2 (default {DEFAULT_MAX_M})")
    parser.add_argument("--no-heatmaps", action="store_true", help="no PNG per map (montages, .npy files and "
                        "plots are still written)")
    parser.add_argument("--no-progress", action="store_true", help="no tqdm bar")
    parser.add_argument("--stop-after", type=int, default=None, help=argparse.SUPPRESS)  # tests: simulated kill


def options_from_args(args):
    from empirical.explain.run import ExplainOptions

    batch = args.batch_size
    if batch is None:
        import torch

        batch = 64 if (args.device == "cuda" or (args.device is None and torch.cuda.is_available())) else 8
    return ExplainOptions(
        out=args.out, model=args.model, weights=args.weights, pretrained=not args.random_weights, images=args.images,
        image_files=tuple(args.image), n_images=args.n_images, methods=tuple(args.methods),
        augmentation=args.augmentation, sigma=args.sigma, m_grid=tuple(args.m), seed=args.seed, device=args.device,
        dtype=args.dtype, batch_size=batch, t=args.t, delta=args.delta, target_s2=args.target_s2, max_m=args.max_m,
        heatmaps=not args.no_heatmaps, progress=not args.no_progress, stop_after=args.stop_after)


def run(args) -> int:
    import torch

    from empirical.explain.run import run_explain

    torch.set_num_threads(max(1, min(torch.get_num_threads(), 16)))
    res = run_explain(options_from_args(args))
    print(res["summary"])
    print(f"{res['status']}: {res['written']} image(s) written to {res['out']} ({res['seconds']:.1f} s)",
          file=sys.stderr)
    return 0
