"""How much the treatment of normalisations changes LRP maps.

``Conventions(normalisation=...)``: ``"affine"`` (default: an unfoldable BatchNorm
or a LayerNorm with its mean and standard deviation held constant is an
elementwise affine layer and gets the rule; the mean acts as a bias), ``"centre"``
(a LayerNorm/GroupNorm keeps its centring in the linear map, only ``1/sigma``
held: LXT's and the AttnLRP paper's convention) and ``"pass"`` (relevance copied
through unchanged), compared pairwise, per rule, on shipped photos.

Trained weights of these networks are not shipped; the script uses the torch
hub cache when it has them and torchvision's default initialisation otherwise
(said in the output; an all-zero ``nn.Linear``, ViT's head, gets random weights,
else every map would be 0).  Figures per network, rule and pair of conventions
(medians over the images): relative L2 distance ``||a - b|| / ||b||``, Pearson and
Spearman correlation of the channel-summed maps, and the map sums (an LRP map of
a one-hot start sums to at most 1 when relevance is conserved).

Run: ``python benchmarks/bench_normalisation.py [--models vit_b_16,swin_v2_t] [--n-images 4]
[--conventions affine,centre,pass] [--rules lrp_zero,lrp_beta_1,lrp_gamma_100] [--json out.json]``
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from scipy.stats import pearsonr, spearmanr  # noqa: E402

from boundcheck.errors import InputError  # noqa: E402
from boundcheck.rules import NORMALISATIONS, Conventions  # noqa: E402
from empirical.data import foolbox_photos, load_image  # noqa: E402
from empirical.engine import Explainer  # noqa: E402
from empirical.models import resolve_model  # noqa: E402
from empirical.oracle import _redraw_zero_linears  # noqa: E402

RULES = ("lrp_zero", "lrp_beta_1", "lrp_gamma_100")


def _median(values):
    """Median of the finite values; None when there is none (no NaN in the JSON)."""
    finite = [v for v in values if np.isfinite(v)]
    return statistics.median(finite) if finite else None


def _fmt(v, spec):
    return "n/a" if v is None else format(v, spec)


def _pair(a, b) -> dict:
    rel, pr, sr, sa, sb = [], [], [], [], []
    for ai, bi in zip(a, b):
        ai, bi = ai.ravel(), bi.ravel()
        rel.append(float(np.linalg.norm(ai - bi) / max(np.linalg.norm(bi), 1e-300)))
        pr.append(float(pearsonr(ai, bi)[0]))
        sr.append(float(spearmanr(ai, bi)[0]))
        sa.append(float(ai.sum()))
        sb.append(float(bi.sum()))
    return {"rel_l2_distance": _median(rel), "pearson": _median(pr), "spearman": _median(sr),
            "sum_a": _median(sa), "sum_b": _median(sb)}


def measure(name: str, n_images: int, conventions, rules, dtype=torch.float64, seed: int = 0) -> dict:
    torch.manual_seed(seed)  # the random initialisation (when no trained weights) is reproducible
    try:
        lm = resolve_model(name)
        weights = "trained (" + str(lm.weights_file) + ")"
    except InputError:
        lm = resolve_model(name, random_weights=True)
        weights = "torchvision default initialisation (trained weights not in the hub cache)"
        _redraw_zero_linears(lm.model)
    items = foolbox_photos(n_images)
    x = torch.stack([lm.preprocess(load_image(it.path)) for it in items]).to(dtype)
    maps = {}
    for norm in conventions:
        ex = Explainer(lm.model, conventions=Conventions(normalisation=norm), dtype=dtype)
        maps[norm] = {r: m.numpy() for r, m in ex.attribute(x, list(rules)).maps.items()}
        del ex
    rows = {}
    for rule in rules:
        for a, b in itertools.combinations(conventions, 2):
            rows[f"{rule}:{a}-{b}"] = dict(rule=rule, a=a, b=b, **_pair(maps[a][rule], maps[b][rule]))
    return {"model": name, "weights": weights, "n_images": len(items), "pairs": rows}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="vit_b_16,swin_v2_t")
    ap.add_argument("--n-images", type=int, default=4)
    ap.add_argument("--conventions", default=",".join(NORMALISATIONS))
    ap.add_argument("--rules", default=",".join(RULES))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    conventions = args.conventions.split(",")
    for c in conventions:
        if c not in NORMALISATIONS:
            print(f"unknown convention {c!r} (choose from {', '.join(NORMALISATIONS)})", file=sys.stderr)
            return 2
    out = [measure(m, args.n_images, conventions, args.rules.split(",")) for m in args.models.split(",")]
    print("| network | weights | rule | a vs b | rel. L2 distance | Pearson | Spearman | map sum a | map sum b |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in out:
        for v in r["pairs"].values():
            print(f"| {r['model']} | {r['weights'].split(' (')[0]} | {v['rule']} | {v['a']} vs {v['b']} | "
                  f"{_fmt(v['rel_l2_distance'], '.3g')} | {_fmt(v['pearson'], '.3f')} | "
                  f"{_fmt(v['spearman'], '.3f')} | {_fmt(v['sum_a'], '.3g')} | {_fmt(v['sum_b'], '.3g')} |")
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2, allow_nan=False))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
