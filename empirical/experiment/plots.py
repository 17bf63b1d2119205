"""Figures of the convergence experiment (matplotlib, Agg backend, PNG).

* ``boxplot_<gradient method>_<family>.png``: the box plots of Appendices B-D.
  Rows: s1 photometric, s1 Gaussian, s2 photometric, s2 Gaussian (the paper's
  row order); columns: m; boxes: the gradient-based method and the LRP variants
  of the family, over images.  Lower is better.
* ``convergence.png``: median s1 and s2 against m (log-log) for every method,
  per augmentation, and a third panel comparing log10(median s1) of the LRP
  methods with log10 of the high-probability l2 bound on s1
  (:func:`boundcheck.hoeffding.l2_deviation_bound_log10`, delta = 0.05) with
  B = P_n + N_n >= ||A||_1 >= ||A||_2 from eq. (31)/(33) (paper and exact
  forms) at the network's depth n (:data:`boundcheck.networks.NETWORK_DEPTHS`).
  The bound is drawn in log10 units because it can exceed the float range.
  The gradient's bound (eq. 19/32) needs the weight norms and is not drawn.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np

from boundcheck.paper import DELTA
from empirical.experiment.statistics import GRAD_METHODS, LRP_BETA, LRP_GAMMA
from empirical.experiment.tables import AUG_TITLES, LABELS

_ROWS = (("s1", "photometric"), ("s1", "gaussian"), ("s2", "photometric"), ("s2", "gaussian"))


def _plt():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def bound_curves_log10(model: str, methods, m_grid) -> dict:
    """{(method, form): [log10 bound at each m]} for the LRP methods, or {} when unavailable."""
    try:
        from boundcheck.errors import InputError
        from boundcheck.hoeffding import l2_deviation_bound_log10
        from boundcheck.networks import NETWORK_DEPTHS
        from boundcheck.rule_bounds import rule_lemma, value_range_log10
        from boundcheck.rules import parse_rule
    except ImportError:
        return {}
    n = NETWORK_DEPTHS.get(model)
    if n is None:
        return {}
    out = {}
    for meth in methods:
        try:
            rule = parse_rule(meth)
        except InputError:  # a gradient method: its bound (eq. 32) needs the weight norms
            continue
        if rule_lemma(rule) is None:
            continue
        for form in ("paper", "exact"):
            lb = value_range_log10(rule, n, form)
            out[(meth, form)] = [l2_deviation_bound_log10(DELTA, int(m), lb) for m in m_grid]
    return out


def _save(fig, path: Path) -> Path:
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp.png")  # ranks may merge at the same time
    fig.savefig(tmp, dpi=110, bbox_inches="tight")
    tmp.replace(path)
    return path


def boxplots(out: Path, records, meta) -> list[Path]:
    plt = _plt()
    paths = []
    methods, mg = meta["methods"], meta["m_grid"]
    rows = [(s, a) for s, a in _ROWS if a in meta["augmentations"]]
    for g in [g for g in GRAD_METHODS if g in methods]:
        for fam, fam_name in ((LRP_BETA, "beta"), (LRP_GAMMA, "gamma")):
            shown = [g] + [x for x in fam if x in methods]
            if len(shown) < 2:
                continue
            fig, axes = plt.subplots(len(rows), len(mg), figsize=(3.2 * len(mg), 2.6 * len(rows)), squeeze=False)
            for i, (stat, aug) in enumerate(rows):
                for j, m in enumerate(mg):
                    ax = axes[i][j]
                    data = []
                    for meth in shown:
                        v = np.asarray([r["stats"][aug][meth][stat][str(m)] for r in records], dtype=float)
                        data.append(v[np.isfinite(v)])
                    ax.boxplot(data, showfliers=True)
                    ax.set_xticks(range(1, len(shown) + 1), [LABELS[x] for x in shown], fontsize=7)
                    if stat == "s1" and all(d.size and (d > 0).all() for d in data):
                        ax.set_yscale("log")
                    ax.set_title(f"{'no norm.' if stat == 's1' else 'ℓ2-norm.'}, {AUG_TITLES[aug]}, m={m}",
                                 fontsize=8)
                    ax.tick_params(labelsize=7)
            fig.suptitle(f"{meta['model']}: convergence statistics, {LABELS[g]} vs LRP-{fam_name} "
                         f"({meta['n_images']} images; lower is better)", fontsize=9)
            fig.tight_layout()
            paths.append(_save(fig, Path(out) / f"boxplot_{g}_{fam_name}.png"))
            plt.close(fig)
    return paths


def convergence_curves(out: Path, med: dict, meta: dict) -> Path:
    plt = _plt()
    methods, mg, augs = meta["methods"], meta["m_grid"], meta["augmentations"]
    bounds = bound_curves_log10(meta["model"], methods, mg)
    fig, axes = plt.subplots(len(augs), 3, figsize=(15, 4.2 * len(augs)), squeeze=False)
    colors = {m: f"C{i}" for i, m in enumerate(methods)}
    for i, aug in enumerate(augs):
        for j, stat in enumerate(("s1", "s2")):
            ax = axes[i][j]
            for meth in methods:
                y = [med[aug][meth][stat][m] for m in mg]
                ax.plot(mg, y, "o-", color=colors[meth], label=LABELS.get(meth, meth))
            ref = [med[aug][methods[0]][stat][mg[0]] * math.sqrt(mg[0] / m) for m in mg]
            ax.plot(mg, ref, "k:", lw=1, label="∝ 1/√m")
            ax.set_xscale("log")
            ax.set_yscale("log")
            _m_ticks(ax, mg)
            ax.set_xlabel("m (samples per set)")
            ax.set_ylabel(f"median {stat}")
            ax.set_title(f"{AUG_TITLES[aug]}: median {stat} "
                         f"({'eq. 38, unnormalised' if stat == 's1' else 'eq. 39, ℓ2-normalised'})", fontsize=9)
            ax.legend(fontsize=7)
        ax = axes[i][2]
        lrps = [x for x in methods if x.startswith("lrp_")]
        for meth in lrps:
            y = [math.log10(v) if v > 0 else math.nan for v in (med[aug][meth]["s1"][m] for m in mg)]
            ax.plot(mg, y, "o-", color=colors[meth], label=f"{LABELS[meth]} measured")
            for form, ls in (("paper", "--"), ("exact", "-.")):
                if (meth, form) in bounds:
                    b = bounds[(meth, form)]
                    ax.plot(mg, b, ls, color=colors[meth], lw=1, label=f"{LABELS[meth]} bound ({form})")
                    ax.annotate(f"10^{b[-1]:.1f}", (mg[-1], b[-1]), fontsize=6, color=colors[meth],
                                xytext=(3, 0), textcoords="offset points")
        ax.set_xscale("log")
        _m_ticks(ax, mg)
        ax.set_xlabel("m (samples per set)")
        ax.set_ylabel("log10 s1")
        note = (f"l2 bound on s1 (δ={DELTA}, depth n from boundcheck.networks); log10 axis"
                if bounds else "no depth known for this network: bound not drawn")
        ax.set_title(f"{AUG_TITLES[aug]}: measured median s1 vs bound\n{note}", fontsize=8)
        ax.legend(fontsize=6, ncol=2, loc="upper center", bbox_to_anchor=(0.5, -0.2))
    fig.suptitle(f"{meta['model']}: convergence of averaged attribution maps ({meta['n_images']} images)",
                 fontsize=10)
    fig.tight_layout()
    path = _save(fig, Path(out) / "convergence.png")
    plt.close(fig)
    return path


def _m_ticks(ax, mg) -> None:
    from matplotlib.ticker import NullFormatter

    ax.set_xticks(list(mg), [str(m) for m in mg])
    ax.xaxis.set_minor_formatter(NullFormatter())


def write_figures(out, records, med, meta) -> list[Path]:
    """All figures; returns their paths."""
    return boxplots(Path(out), records, meta) + [convergence_curves(Path(out), med, meta)]
