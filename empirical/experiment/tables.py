"""Tables of the convergence experiment in the layout of Sections 6.3/6.4 (Markdown, CSV, JSON).

The paper prints one table per (network, normalisation, gradient-based method,
LRP family): rows augmentation x sample size m, and for each LRP variant the
Wilcoxon p-value (gradient-based > LRP) and the ratio of medians.  We print the
same, plus a table per network of the median statistics and the median
single-map scale ``||A||_2`` of every method, so that a large ratio can be
read as convergence or as scale (s1 is scale-dependent, s2 is not).
"""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path

from empirical.io import atomic_write_json, atomic_write_text
from empirical.experiment.statistics import GRAD_METHODS, LRP_BETA, LRP_GAMMA

LABELS = {
    "squared_gradient": "Grad",
    "gradient_x_input": "∇×x",
    "lrp_beta_0": "LRP-β=0",
    "lrp_beta_1": "LRP-β=1",
    "lrp_gamma_100": "LRP-γ=10²",
    "lrp_gamma_1000": "LRP-γ=10³",
}
GRAD_TITLES = {"squared_gradient": "Gradient (squared)", "gradient_x_input": "Gradient times input"}
STAT_TITLES = {"s1": "no normalization (s1, eq. 38)", "s2": "ℓ2-normalization (s2, eq. 39)"}
AUG_TITLES = {"gaussian": "Gaussian", "photometric": "photometric"}
CSV_COLUMNS = ("model", "augmentation", "statistic", "m", "grad_method", "lrp_method", "n", "median_grad",
               "median_lrp", "ratio", "p_value", "scale_grad", "scale_lrp")


def fmt_p(p: float) -> str:
    if p is None or (isinstance(p, float) and math.isnan(p)):
        return "n/a"
    return f"{p:.3g}" if p >= 1e-3 else f"{p:.2e}"


def fmt_num(x: float) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "n/a"
    if math.isinf(x):
        return "inf"
    if x == 0:
        return "0"
    ax = abs(x)
    return f"{x:.1f}" if 1 <= ax < 1e5 else f"{x:.3g}"


def paper_tables_markdown(rows: list[dict], meta: dict) -> str:
    """The Section 6.3/6.4 tables: one per (statistic, gradient method, LRP family)."""
    model = meta["model"]
    idx = {(r["augmentation"], r["statistic"], r["m"], r["grad_method"], r["lrp_method"]): r for r in rows}
    methods = meta["methods"]
    parts = []
    for stat in ("s1", "s2"):
        for g in [g for g in GRAD_METHODS if g in methods]:
            for family, fam_name in ((LRP_BETA, "LRP-β"), (LRP_GAMMA, "LRP-γ")):
                lrps = [m for m in family if m in methods]
                if not lrps:
                    continue
                parts.append(f"**{model}, {STAT_TITLES[stat]}, {GRAD_TITLES[g]}, comparison with {fam_name}** "
                             f"(n = {meta['n_images']} images)\n")
                head = "| Augmentation | Sample size |" + "".join(
                    f" {LABELS[g]} vs {LABELS[lm]}: p-value | ratio |" for lm in lrps)
                parts.append(head)
                parts.append("|---|---|" + "---|---|" * len(lrps))
                for aug in meta["augmentations"]:
                    for m in meta["m_grid"]:
                        cells = []
                        for lm in lrps:
                            r = idx[(aug, stat, m, g, lm)]
                            cells.append(f" {fmt_p(r['p_value'])} | {fmt_num(r['ratio'])} |")
                        parts.append(f"| {AUG_TITLES.get(aug, aug)} | m = {m} |" + "".join(cells))
                parts.append("")
    return "\n".join(parts)


def medians_markdown(med: dict, meta: dict) -> str:
    """Median s1, s2 per method and m, with the median single-map scale ||A||_2."""
    mg = meta["m_grid"]
    parts = [f"**{meta['model']}: medians over {meta['n_images']} images** (s1 depends on the map scale, "
             "s2 does not; scale = median over images of the per-image median ||A||_2 of one map)\n"]
    head = "| Augmentation | Method | scale ‖A‖₂ |" + "".join(f" s1 m={m} |" for m in mg) + "".join(
        f" s2 m={m} |" for m in mg)
    parts += [head, "|---|---|---|" + "---|" * (2 * len(mg))]
    for aug in meta["augmentations"]:
        for meth in meta["methods"]:
            d = med[aug][meth]
            parts.append(f"| {AUG_TITLES.get(aug, aug)} | {LABELS.get(meth, meth)} | {d['scale']:.3g} |"
                         + "".join(f" {d['s1'][m]:.3g} |" for m in mg)
                         + "".join(f" {d['s2'][m]:.3g} |" for m in mg))
    return "\n".join(parts) + "\n"


def rows_csv(rows: list[dict]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=CSV_COLUMNS, lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: (repr(r[k]) if isinstance(r[k], float) else r[k]) for k in CSV_COLUMNS})
    return buf.getvalue()


def summary_markdown(rows: list[dict], med: dict, meta: dict) -> str:
    """Short summary: ratio of medians (p-value) at the largest m, every pair, both statistics."""
    m = max(meta["m_grid"])
    lrps = [x for x in (*LRP_BETA, *LRP_GAMMA) if x in meta["methods"]]
    grads = [g for g in GRAD_METHODS if g in meta["methods"]]
    idx = {(r["augmentation"], r["statistic"], r["m"], r["grad_method"], r["lrp_method"]): r for r in rows}
    src = meta.get("source", {}).get("kind", "?")
    lines = [
        f"{meta['model']}, {meta['n_images']} images ({src}; {meta['n_skipped']} skipped), m per set in "
        f"{', '.join(map(str, meta['m_grid']))}, seed {meta['seed']}. Ratio of medians gradient-based / LRP "
        f"(one-sided paired Wilcoxon p-value, gradient-based > LRP) at m = {m}; ratio > 1: the LRP average "
        "is closer between the two disjoint sample sets.",
        "",
        "| Augmentation | Statistic | Gradient method |" + "".join(f" vs {LABELS[x]} |" for x in lrps),
        "|---|---|---|" + "---|" * len(lrps),
    ]
    for aug in meta["augmentations"]:
        for stat in ("s1", "s2"):
            for g in grads:
                cells = "".join(f" {fmt_num(idx[(aug, stat, m, g, x)]['ratio'])} "
                                f"({fmt_p(idx[(aug, stat, m, g, x)]['p_value'])}) |" for x in lrps)
                lines.append(f"| {AUG_TITLES.get(aug, aug)} | {stat} | {LABELS[g]} |{cells}")
    lines.append("")
    scales = "; ".join(
        f"{AUG_TITLES.get(aug, aug)}: " + ", ".join(f"{LABELS.get(x, x)} {med[aug][x]['scale']:.3g}"
                                                    for x in meta["methods"])
        for aug in meta["augmentations"])
    lines.append(f"Median single-map scale ||A||_2 (s1 scales with it): {scales}.")
    return "\n".join(lines) + "\n"


def write_tables(out, rows: list[dict], med: dict, meta: dict) -> dict:
    """Write ``tables.md``, ``tables.csv``, ``tables.json``; return their paths."""
    out = Path(out)
    md = (f"# Convergence experiment (Section 6): {meta['model']}\n\n"
          f"{meta['n_images']} images (expected {meta['n_expected']}, skipped {meta['n_skipped']}), "
          f"augmentations {', '.join(meta['augmentations'])}, m per set {', '.join(map(str, meta['m_grid']))}, "
          f"seed {meta['seed']}, Gaussian sigma {meta['sigma']} (network-input space), dtype {meta['dtype']}. "
          "p-value: one-sided paired Wilcoxon signed-rank test, gradient-based > LRP; "
          "ratio: median(gradient-based) / median(LRP).\n\n"
          + paper_tables_markdown(rows, meta) + "\n" + medians_markdown(med, meta))
    paths = {"markdown": out / "tables.md", "csv": out / "tables.csv", "json": out / "tables.json"}
    atomic_write_text(paths["markdown"], md)
    atomic_write_text(paths["csv"], rows_csv(rows))
    atomic_write_json(paths["json"], {"meta": meta, "rows": rows, "medians": med}, indent=1)
    return {k: str(v) for k, v in paths.items()}
