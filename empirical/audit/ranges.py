"""Hoeffding value ranges (eq. 31/33) and sample sizes (eq. 24) next to measured ranges.

Theory: the value range ``z_u - z_l`` of one entry of the input attribution map
over ``n`` rule ops is bounded by eq. (31) (LRP-beta) or eq. (33) (LRP-gamma,
under condition (29)), paper and exact forms (:mod:`boundcheck.bounds`), with
``n`` the longest relevance path of :mod:`empirical.audit.depth`.  The required
sample size for deviation ``t`` with probability ``>= 1 - delta`` is eq. (24)
(:func:`boundcheck.hoeffding.hoeffding_samples_log10`).

Measurement: ``K`` augmented samples ``x^(i)`` of one image (Gaussian noise
sigma 1 in the network input space, or the photometric augmentation of Sec. 6.1,
:mod:`empirical.augment`); the attribution map of every sample for the class
predicted on the clean image (``q`` one-hot, fixed), all channels
(``reduce="none"``).  Per component the spread ``max_i - min_i``; the
*measured range* is the largest spread over components (a lower estimate of the
true ``z_u - z_l``).  The *map range* is ``max - min`` within one map (largest
over the samples); the relative deviation target is 1% of it.
"""

from __future__ import annotations

import math

import numpy as np

from boundcheck.hoeffding import hoeffding_samples_log10
from boundcheck.paper import DELTA
from boundcheck.rule_bounds import rule_lemma, value_range_log10
from boundcheck.rules import parse_rule

T_ABSOLUTE = 0.01
T_RELATIVE = 0.01


def theory_range_log10(rule_name: str, n: int, bound: str) -> float | None:
    """``log10(z_u - z_l)`` by eq. (31)/(33) for ``n`` rule ops, or None (no bound for the rule)."""
    rule = parse_rule(rule_name)
    if rule_lemma(rule) is None:
        return None
    return value_range_log10(rule, n, bound)


def required_m_log10(range_log10: float | None, t: float, delta: float = DELTA) -> float | None:
    """``log10 m`` of eq. (24) (un-rounded) for a value range given by its log10."""
    if range_log10 is None or not math.isfinite(range_log10) or t <= 0:
        return None
    return hoeffding_samples_log10(t, delta, value_range_log10=range_log10)


def measured_ranges(maps) -> dict:
    """Spreads of ``K`` attribution maps ``maps`` (shape ``(K, ...)``).

    Returns ``range`` (max over components of ``max_i - min_i``), ``range_median``
    (median over components), ``map_range`` (largest within-map ``max - min``),
    ``abs_max`` and ``K``.
    """
    a = np.asarray(maps, dtype=np.float64)
    a = a.reshape(a.shape[0], -1)
    spread = a.max(axis=0) - a.min(axis=0)
    return {
        "K": int(a.shape[0]),
        "range": float(spread.max()),
        "range_median": float(np.median(spread)),
        "map_range": float((a.max(axis=1) - a.min(axis=1)).max()),
        "abs_max": float(np.abs(a).max()),
    }


def range_rows(rule_name: str, n: int, measured: dict[str, dict], delta: float = DELTA) -> list[dict]:
    """Theory versus measurement for one rule, one row per augmentation.

    Columns: ``augmentation``, ``n``, ``paper_range_log10``, ``exact_range_log10``,
    ``measured_range``, ``map_range``, ``orders_paper``/``orders_exact``
    (log10 bound/measured), and ``log10 m`` for ``t`` absolute 0.01 and relative
    1% of the map range with the paper, exact and measured ranges.
    """
    rows = []
    lp = theory_range_log10(rule_name, n, "paper")
    le = theory_range_log10(rule_name, n, "exact")
    for aug, m in measured.items():
        r = m["range"]
        lr = math.log10(r) if r > 0 else None
        t_rel = T_RELATIVE * m["map_range"]
        row = {"rule": rule_name, "augmentation": aug, "K": m["K"], "n": n,
               "paper_range_log10": lp, "exact_range_log10": le,
               "measured_range": r, "measured_range_median": m["range_median"], "map_range": m["map_range"],
               "orders_paper": (lp - lr) if (lp is not None and lr is not None) else None,
               "orders_exact": (le - lr) if (le is not None and lr is not None) else None,
               "t_relative": t_rel}
        for name, rl in (("paper", lp), ("exact", le), ("measured", lr)):
            row[f"m_abs_log10_{name}"] = required_m_log10(rl, T_ABSOLUTE, delta)
            row[f"m_rel_log10_{name}"] = required_m_log10(rl, t_rel, delta) if t_rel > 0 else None
        rows.append(row)
    return rows
