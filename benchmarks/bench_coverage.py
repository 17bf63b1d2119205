"""Coverage of the engine over torchvision's classifiers, checked against the LRP-0 oracle.

For each model (default: every name in ``torchvision.models.list_models(module=
torchvision.models)``; ``--models`` for a subset), in its OWN subprocess so that
memory peaks do not mix, with random weights and random norm-layer statistics at
the smallest square input the model takes
(:func:`empirical.oracle.torchvision_classifier`), one image:

* ``supported``: the engine builds and runs (else the one-line error);
* ``seconds_lrp_beta_1``: median (and ``_best``: fastest) seconds of
  ``Explainer(model).attribute(x, "lrp_beta_1")`` (float32, default conventions)
  over ``--reps`` calls after ``--warmup`` untimed ones (the first calls of a fresh
  process were up to 20x slower: MobileNetV3-Small 5.2, 3.3, 2.6, then 0.28 s), and ``peak_rss_mib``: the subprocess' resident-set high-water mark
  (``resource.getrusage``) after building the model, the float32 Explainer and
  these calls (measured before the float64 checks below; ``baseline_rss_mib``:
  the same mark after the imports, before the model is built);
* ``lrp0_oracle_rel_error`` and ``gradient_rel_error`` from
  :func:`empirical.oracle.compare_with_engine` (float64, ``Conventions(bias=
  "backward")``): LRP-0 with a logit start against ``x * modified gradient``, and
  the engine's gradient against plain autograd;
* ``parameters``: number of parameters.

The worker first calls ``empirical.runtime.retain_freed_memory()`` (glibc keeps
freed buffers, as in ``bench_engine.py``).  Writes a JSON file (no NaN/Infinity: a value that could not be measured is
``null`` with a ``*_reason``) and a Markdown table.

Usage::

    python benchmarks/bench_coverage.py --models squeezenet1_1,mnasnet0_5 --out coverage.json --md coverage.md
    python benchmarks/bench_coverage.py --out coverage.json --md coverage.md --timeout 1800   # all 80
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from boundcheck.errors import InputError  # noqa: E402

TOLERANCE = {"lrp0_oracle_rel_error": 1e-8, "gradient_rel_error": 1e-10}


def _one_line(exc):
    text = f"{type(exc).__name__}: {exc}".strip().splitlines()
    return text[0][:300] if text else type(exc).__name__


def _finite(value, key, row):
    """Store ``value`` under ``key``, or ``None`` plus ``key_reason`` when it is not finite."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        row[key] = None
        row[key + "_reason"] = "not finite (the engine's map has NaN/Inf entries)"
    else:
        row[key] = value


def worker(name, reps, threads, warmup):
    """Measure one model (runs in its own process); returns the row as a dict."""
    import torch

    from empirical.runtime import retain_freed_memory

    from empirical.engine import Explainer
    from empirical.oracle import compare_with_engine, randomise_batchnorm_stats, torchvision_classifier

    retain_freed_memory()
    torch.set_num_threads(threads)
    row = {"model": name, "baseline_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    model, side = torchvision_classifier(name)
    row["input"] = [1, 3, side, side]
    row["parameters"] = sum(p.numel() for p in model.parameters())
    model = randomise_batchnorm_stats(model, torch.Generator().manual_seed(1))
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
    try:
        r = compare_with_engine(model, x)
    except Exception as exc:  # noqa: BLE001
        row.update(supported=False, error=_one_line(exc), lrp0_oracle_rel_error=None, gradient_rel_error=None)
        return row
    row.update(supported=True, error=None)
    for key in TOLERANCE:
        _finite(r[key], key, row)
    row["exact"] = all(row[k] is not None and row[k] <= tol for k, tol in TOLERANCE.items())
    return row


def run_isolated(name, reps, threads, warmup, timeout):
    """Run :func:`worker` for ``name`` in a fresh interpreter; a crash or timeout becomes the row's error."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", name, "--reps", str(reps),
           "--threads", str(threads), "--warmup", str(warmup)]
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"model": name, "supported": None, "error": f"timed out after {timeout} s"}
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        return {"model": name, "supported": None, "error": f"worker exited {proc.returncode}: {tail[:300]}"}
    row = json.loads(lines[-1])
    row["wall_seconds"] = time.perf_counter() - t0
    return row


def _fmt(v, spec):
    return "–" if v is None else format(v, spec)


def markdown(rows):
    head = ("| model | params (M) | input | supported | LRP-0 vs oracle | gradient vs autograd | "
            "s / LRP-β1 call, fp32: median (best) | peak RSS (MiB) | error |\n"
            "|---|---:|---|---|---:|---:|---:|---:|---|\n")
    body = []
    for r in rows:
        sup = {True: "yes", False: "no", None: "?"}[r.get("supported")]
        if r.get("supported") and not r.get("exact", False):
            sup = "runs, not exact"
        size = "×".join(str(s) for s in r["input"][2:]) if r.get("input") else "–"
        params = r.get("parameters")
        err = (r.get("error") or "").replace("|", "\\|")
        body.append(f"| {r['model']} | {_fmt(params / 1e6 if params else None, '.1f')} | {size} | {sup} | "
                    f"{_fmt(r.get('lrp0_oracle_rel_error'), '.1e')} | {_fmt(r.get('gradient_rel_error'), '.1e')} | "
                    f"{_fmt(r.get('seconds_lrp_beta_1'), '.3f')} ({_fmt(r.get('seconds_lrp_beta_1_best'), '.3f')}) | {_fmt(r.get('peak_rss_mib'), '.0f')} | {err} |")
    return head + "\n".join(body) + "\n"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", help="comma-separated torchvision names (default: all classifiers)")
    p.add_argument("--reps", type=int, default=3, help="timed LRP-beta_1 calls after one warm-up (default 3)")
    p.add_argument("--warmup", type=int, default=3, help="untimed LRP-beta_1 calls first (default 3; the first "
                   "calls of a fresh process were 10-20x slower)")
    p.add_argument("--threads", type=int, default=2, help="torch threads per model (default 2)")
    p.add_argument("--timeout", type=float, default=900, help="seconds per model before it is recorded as timed out")
    p.add_argument("--out", default="bench_coverage.json", help="JSON output path")
    p.add_argument("--md", help="Markdown table output path (default: printed only)")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    try:
        if a.reps < 1 or a.threads < 1 or a.warmup < 0 or not a.timeout > 0:
            raise InputError("--reps and --threads must be >= 1, --warmup >= 0 and --timeout > 0")
        if a.worker:
            print(json.dumps(worker(a.worker, a.reps, a.threads, a.warmup)), flush=True)
            return 0
        import torchvision

        known = torchvision.models.list_models(module=torchvision.models)
        names = known if not a.models else [m.strip() for m in a.models.split(",") if m.strip()]
        bad = [m for m in names if m not in known]
        if bad or not names:
            raise InputError(f"--models: unknown torchvision classifier(s) {bad or a.models!r}")
    except InputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    rows = []
    for name in names:
        rows.append(run_isolated(name, a.reps, a.threads, a.warmup, a.timeout))
        r = rows[-1]
        print(f"{name}: supported={r.get('supported')} lrp0={r.get('lrp0_oracle_rel_error')} "
              f"grad={r.get('gradient_rel_error')} error={r.get('error')}", file=sys.stderr, flush=True)
        result = {"platform": platform.platform(), "python": platform.python_version(), "threads": a.threads,
                  "reps": a.reps, "warmup": a.warmup, "tolerance": TOLERANCE, "models": rows}
        Path(a.out).write_text(json.dumps(result, indent=1, allow_nan=False))  # after every model: nothing lost
    table = markdown(rows)
    if a.md:
        Path(a.md).write_text(table)
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
