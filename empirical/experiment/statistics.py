"""The statistics of Section 6: s1 (eq. 38), s2 (eq. 39), medians, ratios, Wilcoxon.

Per image x and sample size m (means over the two disjoint sets of eq. 38):

    s1_m(x) = || mean_1 - mean_2 ||_2                                   (eq. 38)
    s2_m(x) = || mean_1 / ||mean_1||_2 - mean_2 / ||mean_2||_2 ||_2        (eq. 39)

0/0 policy (explicit): when a mean map is exactly zero its direction is
undefined and s2 is NaN; NaN statistics are left out of the paired comparison
(the number of pairs used is reported as ``n``).

Across images (Section 6.2), for a gradient-based method g and an LRP method l:
the ratio of the medians ``median(g) / median(l)`` and the p-value of the
one-sided paired Wilcoxon signed-rank test that g's statistic exceeds l's
(``scipy.stats.wilcoxon(g, l, alternative="greater")``; zero differences are
dropped, scipy's default ``zero_method="wilcox"``).
"""

from __future__ import annotations

import math
import warnings

import numpy as np

GRAD_METHODS: tuple[str, ...] = ("squared_gradient", "gradient_x_input")
LRP_BETA: tuple[str, ...] = ("lrp_beta_0", "lrp_beta_1")
LRP_GAMMA: tuple[str, ...] = ("lrp_gamma_1000", "lrp_gamma_100")  # the paper's column order
LRP_METHODS: tuple[str, ...] = (*LRP_BETA, *LRP_GAMMA)
STATISTICS: tuple[str, ...] = ("s1", "s2")


def _flat(a) -> np.ndarray:
    if hasattr(a, "detach"):
        a = a.detach().cpu().double().numpy()
    return np.asarray(a, dtype=np.float64).ravel()


def s1_statistic(mean1, mean2) -> float:
    """Eq. (38): l2 distance between the two sets' mean maps."""
    a, b = _flat(mean1), _flat(mean2)
    if a.shape != b.shape:
        raise ValueError(f"mean maps differ in size: {a.shape} vs {b.shape}")
    return float(np.linalg.norm(a - b))


def s2_statistic(mean1, mean2) -> float:
    """Eq. (39): l2 distance between the l2-normalised mean maps (NaN if a mean is 0)."""
    a, b = _flat(mean1), _flat(mean2)
    if a.shape != b.shape:
        raise ValueError(f"mean maps differ in size: {a.shape} vs {b.shape}")
    na, nb = np.linalg.norm(a), np.linalg.norm(b)
    if na == 0.0 or nb == 0.0:
        return math.nan
    return float(np.linalg.norm(a / na - b / nb))


def paired_comparison(g, lrp) -> dict:
    """Median of each, ratio of medians (g / lrp) and one-sided Wilcoxon p-value (g > lrp).

    Pairs with a NaN on either side are dropped.  ``p_value`` is NaN when the
    test is undefined (no pairs, or all differences zero).
    """
    from scipy.stats import wilcoxon

    g, lrp = np.asarray(g, dtype=np.float64), np.asarray(lrp, dtype=np.float64)
    if g.shape != lrp.shape:
        raise ValueError("paired samples must have the same length")
    ok = ~(np.isnan(g) | np.isnan(lrp))
    g, lrp = g[ok], lrp[ok]
    n = int(g.size)
    if n == 0:
        return {"n": 0, "median_grad": math.nan, "median_lrp": math.nan, "ratio": math.nan, "p_value": math.nan}
    mg, ml = float(np.median(g)), float(np.median(lrp))
    ratio = mg / ml if ml != 0 else (math.inf if mg > 0 else math.nan)
    p = math.nan
    if np.any(g != lrp):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                p = float(wilcoxon(g, lrp, alternative="greater").pvalue)
            except ValueError:
                p = math.nan
    return {"n": n, "median_grad": mg, "median_lrp": ml, "ratio": ratio, "p_value": p}


def summarise(records: list[dict], model: str, augmentations, m_grid, methods) -> list[dict]:
    """Long-format comparison rows over all images (records sorted by image index).

    One row per (augmentation, statistic, m, gradient method, LRP method) with
    the paired comparison plus ``scale_grad`` / ``scale_lrp``: the median over
    images of each method's per-image median single-map ||A||_2, so that a ratio
    can be read as convergence *or* scale.
    """
    rows = []
    grads = [g for g in GRAD_METHODS if g in methods]
    lrps = [m for m in LRP_METHODS if m in methods]
    for aug in augmentations:
        scale = {
            meth: float(np.median([r["stats"][aug][meth]["scale"] for r in records])) if records else math.nan
            for meth in methods
        }
        for stat in STATISTICS:
            for m in m_grid:
                key = str(int(m))
                for g in grads:
                    gv = [r["stats"][aug][g][stat][key] for r in records]
                    for lm in lrps:
                        lv = [r["stats"][aug][lm][stat][key] for r in records]
                        row = {"model": model, "augmentation": aug, "statistic": stat, "m": int(m),
                               "grad_method": g, "lrp_method": lm}
                        row.update(paired_comparison(gv, lv))
                        row.update({"scale_grad": scale[g], "scale_lrp": scale[lm]})
                        rows.append(row)
    return rows


def medians_by_method(records: list[dict], augmentations, m_grid, methods) -> dict:
    """{aug: {method: {stat: {m: median over images}}}} (NaN-ignoring) for curves and tables."""
    out: dict = {}
    for aug in augmentations:
        out[aug] = {}
        for meth in methods:
            out[aug][meth] = {}
            for stat in STATISTICS:
                vals = {}
                for m in m_grid:
                    v = np.asarray([r["stats"][aug][meth][stat][str(int(m))] for r in records], dtype=np.float64)
                    v = v[~np.isnan(v)]
                    vals[int(m)] = float(np.median(v)) if v.size else math.nan
                out[aug][meth][stat] = vals
            sc = [r["stats"][aug][meth]["scale"] for r in records]
            out[aug][meth]["scale"] = float(np.median(sc)) if sc else math.nan
    return out
