"""How much the treatment of unfoldable normalisations changes LRP maps.

``Conventions(normalisation="affine")`` (default: an unfoldable BatchNorm or a
LayerNorm with its statistics held constant is an elementwise affine layer and
gets the rule) against ``"pass"`` (relevance copied through unchanged), for
LRP-beta_1 and LRP-gamma_100 on Swin-V2-T (29 LayerNorms on the longest path)
and DenseNet-121 (62 unfoldable BatchNorms), on shipped photos.

Trained weights of these networks are not shipped; the script uses the torch
hub cache when it has them and torchvision's default initialisation otherwise
(said in the output).  Figures per network and rule (medians over the images):
relative L2 distance of the two maps, Pearson and Spearman correlation of the
channel-summed maps, and the map sums (an LRP map of a one-hot start sums to at
most 1 when relevance is conserved).

Run: ``python benchmarks/bench_normalisation.py [--n-images 4] [--json out.json]``
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from scipy.stats import pearsonr, spearmanr  # noqa: E402

from boundcheck.errors import InputError  # noqa: E402
from boundcheck.rules import Conventions  # noqa: E402
from empirical.data import foolbox_photos, load_image  # noqa: E402
from empirical.engine import Explainer  # noqa: E402
from empirical.models import resolve_model  # noqa: E402

RULES = ("lrp_beta_1", "lrp_gamma_100")


def measure(name: str, n_images: int, dtype=torch.float64) -> dict:
    try:
        lm = resolve_model(name)
        weights = "trained (" + str(lm.weights_file) + ")"
    except InputError:
        lm = resolve_model(name, random_weights=True)
        weights = "torchvision default initialisation (trained weights not in the hub cache)"
    items = foolbox_photos(n_images)
    x = torch.stack([lm.preprocess(load_image(it.path)) for it in items]).to(dtype)
    maps = {}
    for norm in ("affine", "pass"):
        ex = Explainer(lm.model, conventions=Conventions(normalisation=norm), dtype=dtype)
        maps[norm] = ex.attribute(x, list(RULES)).maps
    rows = {}
    for rule in RULES:
        a, p = maps["affine"][rule].numpy(), maps["pass"][rule].numpy()
        rel, pr, sr, sa, sp = [], [], [], [], []
        for i in range(len(items)):
            ai, pi = a[i].ravel(), p[i].ravel()
            rel.append(float(np.linalg.norm(ai - pi) / max(np.linalg.norm(pi), 1e-300)))
            pr.append(float(pearsonr(ai, pi)[0]))
            sr.append(float(spearmanr(ai, pi)[0]))
            sa.append(float(ai.sum()))
            sp.append(float(pi.sum()))
        rows[rule] = {"rel_l2_distance": statistics.median(rel), "pearson": statistics.median(pr),
                      "spearman": statistics.median(sr), "sum_affine": statistics.median(sa),
                      "sum_pass": statistics.median(sp)}
    return {"model": name, "weights": weights, "n_images": len(items), "rules": rows}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="swin_v2_t,densenet121")
    ap.add_argument("--n-images", type=int, default=4)
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    out = [measure(m, args.n_images) for m in args.models.split(",")]
    print("| network | weights | rule | rel. L2 distance | Pearson | Spearman | map sum affine | map sum pass |")
    print("|---|---|---|---|---|---|---|---|")
    for r in out:
        for rule, v in r["rules"].items():
            print(f"| {r['model']} | {r['weights'].split(' (')[0]} | {rule} | {v['rel_l2_distance']:.3g} | "
                  f"{v['pearson']:.3f} | {v['spearman']:.3f} | {v['sum_affine']:.3g} | {v['sum_pass']:.3g} |")
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
