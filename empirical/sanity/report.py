"""Tables and figures of the sanity checks.

Resumable result files (``config.json`` + ``results.jsonl``) are kept by
:class:`empirical.io.ResumableStore` (see :mod:`empirical.sanity.run`).  Tables
are written atomically; their JSON is strict (an undefined value is ``null``
with a ``<column>_reason`` or ``<column>_nonfinite`` beside it).
"""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path

import numpy as np

from empirical.io import atomic_path, atomic_write_json, atomic_write_text


# --------------------------------------------------------------------------- tables
def _fmt(v) -> str:
    if v is None:
        return "n/a"
    if isinstance(v, float):
        if math.isnan(v):
            return "nan"
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
        return f"{v:.4g}"
    return str(v)


def write_tables(rows: list[dict], stem: Path) -> dict:
    """``stem.csv``, ``stem.json`` and ``stem.md`` from a list of flat dicts; returns the paths."""
    stem = Path(stem)
    cols: list[str] = []
    for r in rows:
        cols += [k for k in r if k not in cols]
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=cols, lineterminator="\r\n")
    w.writeheader()
    w.writerows(rows)
    atomic_write_text(stem.with_suffix(".csv"), buf.getvalue())
    atomic_write_json(stem.with_suffix(".json"), rows, indent=1, sort_keys=False)
    atomic_write_text(stem.with_suffix(".md"), markdown_table(rows, [c for c in cols if not c.endswith("_reason")]))
    return {k: str(stem.with_suffix("." + k)) for k in ("csv", "json", "md")}


def markdown_table(rows: list[dict], cols: list[str] | None = None) -> str:
    if not rows:
        return "(no rows)\n"
    cols = cols or list(rows[0])
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    for r in rows:
        lines.append("| " + " | ".join(_fmt(r.get(c)) for c in cols) + " |")
    return "\n".join(lines) + "\n"


def save_figure(fig, path, dpi: int = 100) -> None:
    """``fig.savefig`` as PNG through a temporary file (a kill never leaves half a figure)."""
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=dpi, format="png")


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


# --------------------------------------------------------------------------- randomisation
RAND_MEASURES = ("ssim", "spearman", "mse")
RAND_NORMS = ("second_moment", "max_abs")


def randomization_summary(records: list[dict]) -> list[dict]:
    """Mean over images of every measure per (method, step)."""
    acc: dict = {}
    for rec in records:
        for r in rec["rows"]:
            key = (r["method"], r["step"], r["marker"])
            acc.setdefault(key, []).append(r)
    out = []
    for (method, step, marker), rs in sorted(acc.items(), key=lambda kv: (kv[0][0], kv[0][1])):
        row = {"method": method, "step": step, "marker": marker, "n_images": len(rs)}
        for m in RAND_MEASURES:
            for n in RAND_NORMS:
                row[f"{m}_{n}"] = float(np.nanmean([r[f"{m}_{n}"] for r in rs]))
        row["thm4_bound"] = float(np.nanmean([r["thm4_bound"] for r in rs]))
        row["frac_cov_nonnegative"] = float(np.mean([r["cov_nonnegative"] for r in rs]))
        out.append(row)
    return out


def plot_randomization(summary: list[dict], out_dir: Path, title: str = "") -> list[str]:
    """One PNG per normalisation: SSIM, Spearman, MSE (with the Thm 4 bound) against the step."""
    plt = _plt()
    methods = sorted({r["method"] for r in summary})
    paths = []
    for n in RAND_NORMS:
        fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
        for ax, m in zip(axes, RAND_MEASURES):
            for i, meth in enumerate(methods):
                rs = sorted((r for r in summary if r["method"] == meth), key=lambda r: r["step"])
                color = f"C{i % 10}"
                ax.plot([r["step"] for r in rs], [r[f"{m}_{n}"] for r in rs], "o-", ms=3, color=color, label=meth)
                if m == "mse" and n == "second_moment":
                    ax.plot([r["step"] for r in rs], [r["thm4_bound"] for r in rs], ":", color=color, lw=1)
            ax.set_xlabel("randomisation step (0 = fc)")
            ylab = {"ssim": "SSIM (lower is better)", "spearman": "Spearman (lower is better)",
                    "mse": "MSE (higher is better)"}[m]
            if m == "mse" and n == "second_moment":
                ylab += "; dotted: Thm 4 bound"
            ax.set_ylabel(ylab)
            ax.grid(alpha=0.3)
        axes[0].legend(fontsize=7)
        fig.suptitle(f"{title} top-down randomisation, maps normalised by {n.replace('_', ' ')}")
        fig.tight_layout()
        p = Path(out_dir) / f"randomize_{n}.png"
        save_figure(fig, p, dpi=100)
        plt.close(fig)
        paths.append(str(p))
    return paths


# --------------------------------------------------------------------------- faithfulness
def faithfulness_summary(records: list[dict]) -> tuple[list[dict], dict]:
    """AUC table (mean, standard error over images) and mean curves per method."""
    methods = list(records[0]["curves"]) if records else []
    table, curves = [], {}
    for meth in methods:
        c = np.array([r["curves"][meth] for r in records], dtype=np.float64)
        a = np.array([r["auc"][meth] for r in records], dtype=np.float64)
        curves[meth] = c.mean(axis=0).tolist()
        sem = float(a.std(ddof=1) / np.sqrt(len(a))) if len(a) > 1 else None
        row = {"method": meth, "auc_mean": float(a.mean()), "auc_sem": sem, "score_start": float(c[:, 0].mean()),
               "score_end": float(c[:, -1].mean()), "n_images": len(a)}
        if sem is None:
            row["auc_sem_reason"] = "one image: no standard error"
        table.append(row)
    table.sort(key=lambda r: r["auc_mean"])
    return table, curves


def plot_faithfulness(curves: dict, path: Path, title: str = "") -> str:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    for i, (meth, c) in enumerate(curves.items()):
        ax.plot(range(len(c)), c, "--" if meth == "random" else "-", color="k" if meth == "random" else f"C{i % 10}",
                label=meth)
    ax.set_xlabel("region alteration step")
    ax.set_ylabel("softmax score of the explained class (lower is better)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    save_figure(fig, path, dpi=100)
    plt.close(fig)
    return str(path)


# --------------------------------------------------------------------------- overtaking
def plot_overtaking(rows: list[dict], labels: list[str], path: Path, title: str = "", max_panels: int = 36) -> str:
    """Figures 7-9 of [P2]: P against the bottom % (q_low) per layer, one line per q_high."""
    plt = _plt()
    L = len(labels)
    idx = list(range(L)) if L <= max_panels else sorted(set(np.linspace(0, L - 1, max_panels).round().astype(int)))
    ncol = 6
    nrow = -(-len(idx) // ncol)
    fig, axes = plt.subplots(nrow, ncol, figsize=(3 * ncol, 2.3 * nrow), squeeze=False)
    for ax in axes.ravel():
        ax.set_visible(False)
    for ax, li in zip(axes.ravel(), idx):
        ax.set_visible(True)
        for j, qh in enumerate(sorted({r["q_high"] for r in rows}, reverse=True)):
            rs = sorted((r for r in rows if r["layer"] == li and r["q_high"] == qh), key=lambda r: r["q_low"])
            ax.plot([100 * r["q_low"] for r in rs], [r["P"] for r in rs], "o-", ms=2, color=f"C{j}",
                    label=f"top {round(100 * (1 - qh))} %")
        ax.set_title(f"level {li}: {labels[li]}", fontsize=7)
        ax.tick_params(labelsize=6)
        ax.grid(alpha=0.3)
    axes[0, 0].legend(fontsize=6)
    fig.suptitle(f"{title} Theorem 2 tail probabilities P(Z >= K) against bottom % of activations")
    fig.subplots_adjust(left=0.04, right=0.99, bottom=0.04, top=0.93, wspace=0.3, hspace=0.55)
    save_figure(fig, path, dpi=72)
    plt.close(fig)
    return str(path)


def plot_nonpositive(labels: list[str], frac: np.ndarray, path: Path, title: str = "") -> str:
    """Figure 10 of [P2]: fraction of non-positive activations per layer."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(max(6, 0.22 * len(labels)), 4))
    ax.bar(range(len(labels)), frac)
    ax.set_xlabel("level (activation call, execution order)")
    ax.set_ylabel("fraction of activations <= 0")
    ax.set_ylim(0, 1)
    ax.set_title(title)
    ax.grid(alpha=0.3, axis="y")
    fig.tight_layout()
    save_figure(fig, path, dpi=100)
    plt.close(fig)
    return str(path)
