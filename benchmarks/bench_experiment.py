"""Throughput of the convergence experiment (Section 6) and the paper's full grid extrapolated.

Measures, per model, the full per-image protocol of :mod:`empirical.experiment.protocol`
(both augmentations, two disjoint sets of m samples each, all six methods from
one batched ``Explainer.attribute`` call per chunk, statistics included) on the
first N foolbox photos, after one warm-up chunk.  Cost is linear in the number
of samples (chunks are full), so the measured samples/s give images/s for the
paper's protocol at m = 100 per set (2 augmentations x 2 sets x 100 = 400
samples per image; with nested prefixes m = 100 covers m = 25 and 50), and the
paper's full grid (3 networks x 1000 images) in hours, printed against the
paper's 21 h on two RTX A6000 and our target of one H100-hour.

Timing does not depend on the weights, so networks whose trained weights are
not in the hub cache are timed with random weights (said in the output).

Usage::

    # CPU here (Lite0, small N and m; the result is extrapolated)
    PYTHONPATH=. python benchmarks/bench_experiment.py --device cpu --models efficientnet-lite0 --n-images 2 --m 10
    # GPU: every model, the paper's m
    python benchmarks/bench_experiment.py --device cuda --n-images 4 --m 100 --batch-size 200 --json bench.json
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

# this checkout's code, not whichever boundcheck is installed (worktree comparisons)
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

PAPER_HOURS, PAPER_GPUS = 21.0, "2x RTX A6000"
TARGET_GPU_HOURS = 1.0
PAPER_MODELS = ("resnet50", "efficientnet_v2_s", "swin_v2_t")
FULL_IMAGES, FULL_SAMPLES_PER_IMAGE = 1000, 2 * 2 * 100


def bench_model(name, device, n_images, m, batch_size, dtype_name, seed=0, allow_tf32=False):
    import torch

    from boundcheck.errors import InputError
    from empirical.data import foolbox_photos, load_image
    from empirical.engine import Explainer
    from empirical.experiment.protocol import Protocol, run_group
    from empirical.experiment.runner import PAPER_METHODS
    from empirical.models import load_model

    dtype = torch.float64 if dtype_name == "float64" else torch.float32
    t0 = time.perf_counter()
    try:
        loaded, weights = load_model(name), "trained"
    except InputError:
        loaded, weights = load_model(name, pretrained=False), "random (trained weights not in the hub cache)"
    ex = Explainer(loaded.model, dtype=dtype, device=device, allow_tf32=allow_tf32)
    setup_s = time.perf_counter() - t0
    items = foolbox_photos(n_images)
    imgs = [(it, loaded.to_unit(load_image(it.path))) for it in items]
    proto = Protocol((m,), ("gaussian", "photometric"), PAPER_METHODS, seed)

    def sync():
        if str(device).startswith("cuda"):
            torch.cuda.synchronize()

    # warm-up: one chunk (kernel selection, allocator)
    warm = torch.stack([loaded.normalize(imgs[0][1])] * min(batch_size, 8)).to(device=device, dtype=dtype)
    ex.attribute(warm, PAPER_METHODS, target=torch.zeros(warm.shape[0], dtype=torch.long, device=warm.device))
    sync()
    if str(device).startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    while True:  # halve the batch on a GPU out-of-memory error (the batch used is reported)
        try:
            t, tc = time.perf_counter(), time.process_time()
            records = run_group(ex, loaded.normalize, imgs, proto, batch_size, device=device, dtype=dtype)
            sync()
            dt, dtc = time.perf_counter() - t, time.process_time() - tc
            break
        except torch.cuda.OutOfMemoryError:
            if batch_size == 1:
                raise
            batch_size //= 2
            torch.cuda.empty_cache()
            print(f"{name}: out of GPU memory, retrying with batch {batch_size}", file=sys.stderr, flush=True)
    samples = len(records) * proto.samples_per_image
    sps = samples / dt
    peak = torch.cuda.max_memory_allocated() / 2**30 if str(device).startswith("cuda") else None
    return {
        "model": name, "weights": weights, "device": str(device), "dtype": dtype_name, "n_images": len(records),
        "m": m, "batch_size": batch_size, "samples": samples, "seconds": dt, "cpu_seconds": dtc, "setup_seconds": setup_s,
        "samples_per_s": sps, "images_per_s_full_protocol": sps / FULL_SAMPLES_PER_IMAGE,
        "hours_1000_images": FULL_IMAGES * FULL_SAMPLES_PER_IMAGE / sps / 3600, "peak_gpu_gib": peak,
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu", help="cpu or cuda")
    ap.add_argument("--models", default=None,
                    help="comma list (default: efficientnet-lite0 on cpu; all four on cuda)")
    ap.add_argument("--n-images", type=int, default=None, help="default 2 on cpu, 4 on cuda")
    ap.add_argument("--m", type=int, default=None, help="samples per set (default 10 on cpu, 100 on cuda)")
    ap.add_argument("--batch-size", type=int, default=None,
                    help="default 8 on cpu (larger batches leave the caches: 2.3 samples/s at 20 against 4.7 at 8 "
                         "for Lite0 here), 200 on cuda")
    ap.add_argument("--dtype", default="float32", choices=("float32", "float64"))
    ap.add_argument("--allow-tf32", action="store_true", help="CUDA: the engine's TF32 opt-in (as `empirical --allow-tf32`)")
    ap.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    ap.add_argument("--json", default=None, help="write the results here")
    args = ap.parse_args(argv)

    import torch

    from empirical.runtime import retain_freed_memory

    retain_freed_memory()  # as the CLI's empirical command does
    torch.set_num_threads(args.threads)
    cuda = args.device.startswith("cuda")
    if cuda and not torch.cuda.is_available():
        print("CUDA is not available", file=sys.stderr)
        return 2
    device = "cuda:0" if args.device == "cuda" else args.device
    models = (args.models.split(",") if args.models else
              (["efficientnet-lite0", *PAPER_MODELS] if cuda else ["efficientnet-lite0"]))
    n = args.n_images or (4 if cuda else 2)
    m = args.m or (100 if cuda else 10)
    bs = args.batch_size or (200 if cuda else 8)
    hw = torch.cuda.get_device_name(0) if cuda else f"{platform.processor() or 'cpu'}, {args.threads} threads"
    print(f"# Convergence experiment throughput ({hw}; torch {torch.__version__}; N={n} images, m={m} per set, "
          f"batch {bs}, {args.dtype})\n")
    results = []
    for name in models:
        r = bench_model(name, device, n, m, bs, args.dtype, allow_tf32=args.allow_tf32)
        results.append(r)
        print(f"{name}: {r['samples']} samples in {r['seconds']:.1f} s (process CPU {r['cpu_seconds']:.1f} s) -> "
              f"{r['samples_per_s']:.2f} samples/s, "
              f"{r['images_per_s_full_protocol']:.4f} img/s full protocol (400 samples/img), "
              f"{r['hours_1000_images']:.2f} h per 1000 images"
              + (f", peak {r['peak_gpu_gib']:.1f} GiB" if r["peak_gpu_gib"] is not None else "")
              + f" [weights: {r['weights']}]", flush=True)
    print("\n| model | samples/s | img/s (full protocol) | h per 1000 images |\n|---|---|---|---|")
    for r in results:
        print(f"| {r['model']} | {r['samples_per_s']:.2f} | {r['images_per_s_full_protocol']:.4f} | "
              f"{r['hours_1000_images']:.2f} |")
    paper = [r for r in results if r["model"] in PAPER_MODELS]
    if len(paper) == len(PAPER_MODELS):
        total = sum(r["hours_1000_images"] for r in paper)
        print(f"\nPaper's full grid (3 networks x 1000 images x 2 augmentations x m in {{25,50,100}} x 6 methods; "
              f"nested prefixes: m=100 covers 25 and 50): {total:.2f} device-hours on this device, against the "
              f"paper's {PAPER_HOURS:.0f} h on {PAPER_GPUS} ({2 * PAPER_HOURS:.0f} GPU-hours) and our target of "
              f"{TARGET_GPU_HOURS:.0f} H100-hour: {'MET' if total <= TARGET_GPU_HOURS else 'NOT met'}.")
    else:
        r = results[0]
        est = len(PAPER_MODELS) * r["hours_1000_images"]
        print(f"\nExtrapolation from {r['model']} alone (3 x its cost; the paper's networks are heavier): "
              f"{est:.1f} h for the paper's full grid on this device, against the paper's {PAPER_HOURS:.0f} h on "
              f"{PAPER_GPUS} and our target of {TARGET_GPU_HOURS:.0f} H100-hour.")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"device": hw, "results": results}, fh, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
