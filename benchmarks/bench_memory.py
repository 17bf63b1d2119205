"""Peak resident memory of the engine per variant, in units of the model's weight bytes.

Each variant runs in its OWN subprocess (a resident-set high-water mark cannot be
reset across variants that share a process): imports, then ``VmRSS`` (the
baseline), then the model is built directly in the benchmark dtype (no float32
copy on the way: ``torch.set_default_dtype``), then the variant runs once on one
random image (``--batch``: a batch of them) and the process reports ``VmHWM`` (its peak resident set).  Figures:

* ``weights_mib``: the model's parameter and buffer bytes ``W``;
* ``peak_mib``: ``VmHWM - baseline`` (the caller's model included);
* ``ratio``: ``peak / W``;
* ``over_autograd_mib``: ``peak`` minus the peak of the ``autograd`` variant (the
  caller's model and the activations of one plain gradient pass), i.e. what the
  engine adds on top of one pass;
* ``target_mib``: the issue's bound ``3 W + A``, with ``A`` the activations of one pass
  (the ``autograd`` variant's peak less ``W``), and ``within`` whether the peak is under it.

Variants: ``autograd`` (plain ``torch.autograd`` gradient on the caller's model, no
engine: the reference "weights + activations of one pass"), ``gradient`` (the
engine's gradient), ``lrp_zero``, ``lrp4`` (the four paper LRP rules
``lrp_beta_0, lrp_beta_1, lrp_gamma_100, lrp_gamma_1000``), ``paper6`` (the six
paper methods).  ``empirical.runtime.retain_freed_memory()`` is called first, as
in the CLI and the other benchmarks.

``--weight-cache`` sets ``Explainer(weight_cache_bytes=...)`` (``auto``, the default:
the larger of 1 GiB and ``W``; ``weights``: ``W``; ``none``; or bytes).  ``--low-memory`` sets ``Explainer(low_memory=True)``
(sign parts recomputed in the backward pass, one backward pass per rule, the ``auto`` budget
without its 1 GiB floor) and, as the CLI's ``--low-memory`` does, calls
``empirical.runtime.return_freed_memory()`` instead of ``retain_freed_memory()`` (every variant,
the ``autograd`` reference included).

Run: ``python benchmarks/bench_memory.py [--model vgg16] [--dtype float64] [--side 224] [--batch 1]
[--variants autograd,lrp4] [--weight-cache auto] [--low-memory] [--json out.json]``
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

VARIANTS = {
    "autograd": None,
    "gradient": ["gradient"],
    "lrp_zero": ["lrp_zero"],
    "lrp4": ["lrp_beta_0", "lrp_beta_1", "lrp_gamma_100", "lrp_gamma_1000"],
    "paper6": ["squared_gradient", "gradient_x_input", "lrp_beta_0", "lrp_beta_1", "lrp_gamma_100",
               "lrp_gamma_1000"],
}


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {field}")


def _budget(spec: str, weights: int):
    """``Explainer(weight_cache_bytes=...)`` from ``--weight-cache``: auto, none, weights (= W) or bytes."""
    if spec == "auto":
        return "auto"
    if spec == "none":
        return None
    if spec == "weights":
        return weights
    return int(spec)


def _child(model_name: str, dtype_name: str, side: int, variant: str, threads: int, cache: str = "auto",
           batch: int = 1, low_memory: bool = False) -> dict:
    import torch
    import torchvision

    from empirical.engine import Explainer
    from empirical.runtime import retain_freed_memory, return_freed_memory

    return_freed_memory() if low_memory else retain_freed_memory()  # as the CLI does
    torch.set_num_threads(threads)
    dtype = getattr(torch, dtype_name)
    base = _status_kib("VmRSS")
    torch.manual_seed(0)
    old = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        model = torchvision.models.get_model(model_name, weights=None).eval()
    finally:
        torch.set_default_dtype(old)
    for p in model.parameters():
        p.requires_grad_(False)
    weights = sum(t.numel() * t.element_size() for t in list(model.parameters()) + list(model.buffers()))
    after_model = _status_kib("VmRSS")
    x = torch.randn(batch, 3, side, side, dtype=dtype)
    if VARIANTS[variant] is None:
        xg = x.clone().requires_grad_(True)
        out = model(xg)
        (g,) = torch.autograd.grad(out[0, out[0].argmax()], xg)
        assert torch.isfinite(g).all()
    else:
        ex = Explainer(model, dtype=dtype, weight_cache_bytes=_budget(cache, weights), low_memory=low_memory)
        a = ex.attribute(x, VARIANTS[variant])
        assert all(torch.isfinite(m).all() for m in a.maps.values())
    peak = _status_kib("VmHWM")
    return {"variant": variant, "weights_mib": weights / 2**20, "baseline_mib": base / 1024,
            "model_rss_mib": (after_model - base) / 1024, "peak_mib": (peak - base) / 1024}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="vgg16", help="torchvision classifier name (default vgg16)")
    ap.add_argument("--dtype", default="float64", choices=("float32", "float64"))
    ap.add_argument("--side", type=int, default=224, help="input side (default 224)")
    ap.add_argument("--batch", type=int, default=1, help="images per call (default 1)")
    ap.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated subset of " + ",".join(VARIANTS))
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--weight-cache", default="auto",
                    help="Explainer(weight_cache_bytes=...): auto (default), none, weights (= W) or bytes")
    ap.add_argument("--low-memory", action="store_true", help="Explainer(low_memory=True)")
    ap.add_argument("--json", default=None)
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        print(json.dumps(_child(args.model, args.dtype, args.side, args.child, args.threads, args.weight_cache,
                                args.batch, args.low_memory)))
        return 0
    rows = []
    for v in args.variants.split(","):
        if v not in VARIANTS:
            print(f"unknown variant {v!r} (choose from {', '.join(VARIANTS)})", file=sys.stderr)
            return 2
        cmd = [sys.executable, __file__, "--model", args.model, "--dtype", args.dtype, "--side", str(args.side),
               "--batch", str(args.batch),
               "--threads", str(args.threads), "--weight-cache", args.weight_cache, "--child", v]
        cmd += ["--low-memory"] if args.low_memory else []
        res = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if res.returncode != 0:
            tail = (res.stderr.strip().splitlines() or ["(no output)"])[-1]
            rows.append({"variant": v, "error": tail[:300]})
            continue
        rows.append(json.loads(res.stdout.strip().splitlines()[-1]))
    ref = next((r["peak_mib"] for r in rows if r.get("variant") == "autograd" and "peak_mib" in r), None)
    print(f"model {args.model}, {args.dtype}, {args.batch} image(s) of {args.side}x{args.side}, "
          f"weight_cache_bytes={args.weight_cache}, low_memory={args.low_memory}")
    print("| variant | weights W (MiB) | peak RSS over baseline (MiB) | peak / W | over autograd pass (MiB) "
          "| 3 W + A (MiB) | within |")
    print("|---|---:|---:|---:|---:|---:|---|")
    for r in rows:
        if "error" in r:
            print(f"| {r['variant']} | | | | error: {r['error']} |")
            continue
        r["ratio"] = r["peak_mib"] / r["weights_mib"]
        r["over_autograd_mib"] = None if ref is None else r["peak_mib"] - ref
        r["target_mib"] = None if ref is None else 3 * r["weights_mib"] + (ref - r["weights_mib"])
        r["within"] = None if ref is None else bool(r["peak_mib"] <= r["target_mib"])
        over = "" if r["over_autograd_mib"] is None else f"{r['over_autograd_mib']:.0f}"
        target = "" if r["target_mib"] is None else f"{r['target_mib']:.0f}"
        within = "" if r["within"] is None else ("yes" if r["within"] else "no")
        print(f"| {r['variant']} | {r['weights_mib']:.0f} | {r['peak_mib']:.0f} | {r['ratio']:.2f} | {over} "
              f"| {target} | {within} |")
    if args.json:
        Path(args.json).write_text(json.dumps({"model": args.model, "dtype": args.dtype, "side": args.side,
                                               "batch": args.batch,
                                               "weight_cache": args.weight_cache, "low_memory": args.low_memory,
                                               "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
