"""Wall time of ``boundcheck explain`` end to end: one photo, four methods, m up to 16.

Runs the command as a user would (a fresh process: imports, model load, the
engine's set-up, 2 x 16 augmented samples, the split-half statistics, the
.npy files, 16 heatmaps, the montage and the convergence plot), ``--repeat``
times into fresh folders, and prints the median wall time, the time the
command itself reports for its image loop, and the CPU time (user + sys) of
the process: on a shared machine the wall time depends on the other load.

Usage::

    PYTHONPATH=. python benchmarks/bench_explain.py                  # CPU, Lite0, gaussian
    PYTHONPATH=. python benchmarks/bench_explain.py --augmentation photometric --repeat 3 --json bench.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
METHODS = "gradient_x_input,lrp_beta_0,lrp_beta_1,lrp_gamma_100"


def command(out: str, args) -> list[str]:
    return [sys.executable, "-m", "boundcheck", "explain", "--out", out, "--n-images", "1", "--methods", METHODS,
            "--m-grid", args.m, "--augmentation", args.augmentation, "--device", args.device, "--no-progress",
            *(["--threads", str(args.threads)] if args.threads else [])]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--m", default="1,4,16")
    p.add_argument("--augmentation", default="gaussian", choices=("gaussian", "photometric", "none"))
    p.add_argument("--device", default="cpu")
    p.add_argument("--repeat", type=int, default=1)
    p.add_argument("--threads", type=int, default=None, help="passed to the command (default: its own)")
    p.add_argument("--json", default=None, help="write the result here")
    args = p.parse_args(argv)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    walls, loops, cpus = [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.repeat):
            cmd = command(str(Path(tmp) / f"run{r}"), args)
            t0, r0 = time.perf_counter(), resource.getrusage(resource.RUSAGE_CHILDREN)
            proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
            walls.append(time.perf_counter() - t0)
            r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
            cpus.append((r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime))
            if proc.returncode != 0:
                print(proc.stderr, file=sys.stderr)
                return proc.returncode
            mt = re.search(r"\(([\d.]+) s\)\s*$", proc.stderr.strip())
            loops.append(float(mt.group(1)) if mt else float("nan"))
    m_max = max(int(v) for v in args.m.split(","))
    res = {"command": "boundcheck explain --out DIR --n-images 1 --methods " + METHODS + f" --m-grid {args.m} "
                      f"--augmentation {args.augmentation} --device {args.device}"
                      + (f" --threads {args.threads}" if args.threads else ""),
           "wall_s_median": statistics.median(walls), "wall_s": walls, "image_loop_s": loops, "cpu_s": cpus,
           "samples": 2 * m_max, "cpus": os.cpu_count(), "load_avg_1min": os.getloadavg()[0],
           "python": platform.python_version(), "machine": platform.machine()}
    print(f"{res['command']}\n  wall {res['wall_s_median']:.1f} s (median of {args.repeat}), image loop "
          f"{statistics.median(loops):.1f} s for {res['samples']} samples x 4 methods; CPU time "
          f"{statistics.median(cpus):.1f} s (user + sys); {res['cpus']} CPUs, 1-min load average "
          f"{res['load_avg_1min']:.1f}")
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
