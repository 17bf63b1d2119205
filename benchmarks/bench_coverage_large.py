"""The torchvision coverage check (``bench_coverage.py``'s row) for the largest classifiers, with a
bounded engine weight budget in the float64 check.

``vit_h_14`` (632 M parameters) and ``regnet_y_128gf`` (645 M) in float64 need the caller's
float32 model, the float64 canonical copy and the oracle's float64 copy; with the default
budget (``Explainer(weight_cache_bytes="auto")`` = the float64 weight bytes) the check was
killed for memory on the 24 GB build machine.  This script measures the same row as
``bench_coverage.py`` (same functions: ``torchvision_classifier``, ``randomise_batchnorm_stats``,
a float32 ``lrp_beta_1`` timing with the default budget, ``compare_with_engine``) with the
float64 comparison's budget set by ``--weight-cache`` (default 0: no stored sign-split or
combined weights; the maps do not depend on the budget, ``tests/test_engine_memory.py``).
One model per subprocess.

Run: ``python benchmarks/bench_coverage_large.py --models vit_h_14,regnet_y_128gf --out rows.json --md rows.md``
"""

from __future__ import annotations

import argparse
import gc
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_coverage import TOLERANCE, _finite, _one_line, markdown  # noqa: E402


def worker(name, reps, threads, warmup, cache_bytes):
    import torch

    from empirical.engine import Explainer
    from empirical.oracle import compare_with_engine, randomise_batchnorm_stats, torchvision_classifier
    from empirical.runtime import retain_freed_memory

    retain_freed_memory()
    torch.set_num_threads(threads)
    row = {"model": name, "baseline_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
           "float64_weight_cache_bytes": cache_bytes}
    model, side = torchvision_classifier(name)
    row["input"] = [1, 3, side, side]
    row["parameters"] = sum(p.numel() for p in model.parameters())
    model = randomise_batchnorm_stats(model, torch.Generator().manual_seed(1))
    gc.collect()
    x = torch.randn(1, 3, side, side, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    try:
        ex = Explainer(model)
        x32 = x.float()
        for _ in range(warmup):
            ex.attribute(x32, "lrp_beta_1")
        times = []
        for _ in range(reps):
            t0 = time.perf_counter()
            ex.attribute(x32, "lrp_beta_1")
            times.append(time.perf_counter() - t0)
        row["seconds_lrp_beta_1"] = statistics.median(times)
        row["seconds_lrp_beta_1_best"] = min(times)
        del ex
    except Exception as exc:  # noqa: BLE001 - the one-line error is the measurement
        row.update(supported=False, error=_one_line(exc), seconds_lrp_beta_1=None)
    row["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    if row.get("supported") is False:
        row["lrp0_oracle_rel_error"] = row["gradient_rel_error"] = None
        return row
    gc.collect()
    try:
        r = compare_with_engine(model, x, weight_cache_bytes=cache_bytes)
    except Exception as exc:  # noqa: BLE001
        row.update(supported=False, error=_one_line(exc), lrp0_oracle_rel_error=None, gradient_rel_error=None)
        return row
    row.update(supported=True, error=None)
    for key in TOLERANCE:
        _finite(r[key], key, row)
    row["exact"] = all(row[k] is not None and row[k] <= tol for k, tol in TOLERANCE.items())
    row["peak_rss_float64_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return row


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="vit_h_14,regnet_y_128gf")
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--weight-cache", type=int, default=0, help="float64 check's weight_cache_bytes (default 0)")
    ap.add_argument("--timeout", type=float, default=3600)
    ap.add_argument("--out", default=None)
    ap.add_argument("--md", default=None)
    ap.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(args.worker, args.reps, args.threads, args.warmup, args.weight_cache)))
        return 0
    rows = []
    for name in args.models.split(","):
        cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", name, "--reps", str(args.reps),
               "--threads", str(args.threads), "--warmup", str(args.warmup), "--weight-cache", str(args.weight_cache)]
        t0 = time.perf_counter()
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout, check=False)
        except subprocess.TimeoutExpired:
            rows.append({"model": name, "supported": None, "error": f"timed out after {args.timeout} s"})
            continue
        lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
        if proc.returncode != 0 or not lines:
            tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
            rows.append({"model": name, "supported": None, "error": f"worker exited {proc.returncode}: {tail[:300]}"})
            continue
        row = json.loads(lines[-1])
        row["wall_seconds"] = time.perf_counter() - t0
        rows.append(row)
        print(json.dumps(row), flush=True)
    if args.out:
        Path(args.out).write_text(json.dumps(rows, indent=2, allow_nan=False))
    table = markdown(rows)
    if args.md:
        Path(args.md).write_text(table)
    print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
