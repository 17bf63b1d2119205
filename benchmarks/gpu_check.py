"""GPU correctness check: the engine on CUDA (float32) against the CPU in float64.

Runs every paper method plus gradient and adaptive beta on EfficientNet-Lite0 (shipped
weights, shipped photos) and on random-init torchvision models, and prints, per model
and method, the relative l2 error ||A - A_cpu64|| / ||A_cpu64|| of CUDA float32 (TF32
off, the engine's default), CUDA with TF32 on, and the CPU in float32 (which separates
the device from the precision), and the top-1 agreement of the logits.  Usage::

    PYTHONPATH=. python benchmarks/gpu_check.py [--models ...] [--json FILE]
"""

from __future__ import annotations

import argparse
import json

import torch

from empirical.data import foolbox_photos, load_image
from empirical.engine import PAPER_METHODS, Explainer
from empirical.models import load_model

METHODS = ("gradient",) + tuple(PAPER_METHODS) + ("adaptive_beta",)


def check(name: str, n_images: int, size: int) -> list[dict]:
    pretrained = name == "efficientnet-lite0"
    loaded = load_model(name, pretrained=pretrained)
    items = foolbox_photos(n_images)
    x = torch.stack([loaded.preprocess(load_image(it.path)) for it in items])
    if size != x.shape[-1]:
        x = torch.nn.functional.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
    cpu = Explainer(loaded.model, dtype=torch.float64, device="cpu")
    ref = cpu.attribute(x.double(), METHODS)
    runs = {
        "cuda_fp32": Explainer(loaded.model, dtype=torch.float32, device="cuda").attribute(
            x.cuda(), METHODS, target=ref.target.cuda()),
        "cuda_tf32": Explainer(loaded.model, dtype=torch.float32, device="cuda", allow_tf32=True).attribute(
            x.cuda(), METHODS, target=ref.target.cuda()),
        "cpu_fp32": Explainer(loaded.model, dtype=torch.float32, device="cpu").attribute(
            x.float(), METHODS, target=ref.target),
    }
    got = runs["cuda_fp32"]
    rows = []
    for m in METHODS:
        b = ref.maps[m]
        row = {"model": name, "method": m, "finite": bool(torch.isfinite(got.maps[m]).all())}
        for key, att in runs.items():
            a = att.maps[m].double().cpu()
            row[key] = float((a - b).norm() / b.norm().clamp_min(1e-300))
        rows.append(row)
    top = bool((got.logits.argmax(1).cpu() == ref.logits.argmax(1)).all())
    for r in rows:
        r["top1_agree"] = top
    return rows


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", default="efficientnet-lite0,resnet50,efficientnet_v2_s,swin_v2_t")
    ap.add_argument("--n-images", type=int, default=2)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    rows = []
    for name in args.models.split(","):
        rows += check(name, args.n_images, args.size)
    print("relative l2 error against the CPU in float64")
    print(f"{'model':20s} {'method':18s} {'cuda fp32':>10s} {'cuda tf32':>10s} {'cpu fp32':>10s}  finite  top1")
    for r in rows:
        print(f"{r['model']:20s} {r['method']:18s} {r['cuda_fp32']:10.2e} {r['cuda_tf32']:10.2e} {r['cpu_fp32']:10.2e}"
              f"  {r['finite']!s:6s}  {r['top1_agree']}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=2)


if __name__ == "__main__":
    main()
