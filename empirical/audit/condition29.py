"""Condition (29) of Lemma 8 at every neuron of every rule op, on real activations.

For every rule op (convolution, linear, residual join, average pool) the engine
records ``P_a = sum_b (w_ab z_b)_+`` and ``N_a = sum_b (w_ab z_b)_-`` per output
neuron (bias excluded; rule independent).  Condition (29) holds at ``a`` iff
``gamma^(-1/2) |N_a| < P_a``; it is required only where ``P_a > 0``
("applicable").  The smallest gamma for which Lemma 8 covers an image is the
infimum ``max(1, max_a (|N_a|/P_a)^2)`` over all applicable neurons of all layers
(strict: every larger gamma works, the value itself need not).  The Swin
attention sum has no recorded ``P_a``/``N_a`` (its weights are non-negative
softmax values; it is audited through its projections).

[P1] line 366: "we never verified for LRP-gamma whether the condition in
Equation (29) holds" -- this module does.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from boundcheck.bounds import condition29_pos_neg
from empirical.audit.relevance import _np, is_rule_op, op_depth

#: default sweep (the paper uses gamma in {100, 1000})
DEFAULT_GAMMAS: tuple[float, ...] = (1.5, 2.0, 4.0, 10.0, 100.0, 1e3, 1e4, 1e6)


def required_gammas(pos, neg) -> np.ndarray:
    """Per applicable neuron ``(|N_a|/P_a)^2`` (flattened; non-applicable dropped)."""
    pos = np.asarray(pos, dtype=np.float64).ravel()
    neg = np.asarray(neg, dtype=np.float64).ravel()
    app = pos > 0
    return (np.abs(neg[app]) / pos[app]) ** 2


def layer_rows(records, b: int = 0, gammas: Sequence[float] = DEFAULT_GAMMAS) -> list[dict]:
    """One row per rule op with recorded ``P_a``/``N_a``.

    Columns: ``node``, ``kind``, ``t``, ``neurons``, ``applicable``,
    ``required_gamma`` (layer infimum, >= 1), ``viol_frac_{gamma}`` (fraction of
    applicable neurons violating (29)) and ``viol_count_{gamma}``.
    """
    rows = []
    for r in records:
        if not is_rule_op(r) or r.pos_sum is None:
            continue
        pos = np.clip(_np(r.pos_sum, b), 0.0, None)  # float rounding guard
        neg = np.clip(_np(r.neg_sum, b), None, 0.0)
        req = required_gammas(pos, neg)
        app = int(req.size)
        row = {"node": r.node, "kind": r.kind, "t": op_depth(r), "neurons": int(pos.size), "applicable": app,
               "required_gamma": max(float(req.max()) if app else 1.0, 1.0)}
        for g in gammas:
            c = condition29_pos_neg(pos, neg, g)
            v = int(np.sum(c.applicable & ~c.holds))
            row[f"viol_count_{_g(g)}"] = v
            row[f"viol_frac_{_g(g)}"] = v / app if app else 0.0
        rows.append(row)
    return rows


def _g(g: float) -> str:
    return str(int(g)) if float(g).is_integer() else repr(float(g))


def network_required_gamma(rows: list[dict]) -> float:
    """``max(1, max over layers of the layer infimum)``: Lemma 8 covers the image for every larger gamma."""
    return max([1.0] + [r["required_gamma"] for r in rows])


def coverage(rows: list[dict], gammas: Sequence[float]) -> dict:
    """Per gamma: whether (29) holds everywhere, violating layers, total violating neurons and the fraction."""
    out = {}
    total_app = sum(r["applicable"] for r in rows)
    for g in gammas:
        key = _g(g)
        bad = [r for r in rows if r[f"viol_count_{key}"] > 0]
        nv = sum(r[f"viol_count_{key}"] for r in rows)
        out[key] = {
            "gamma": g, "covered": not bad, "violating_layers": len(bad), "layers": len(rows),
            "violating_neurons": nv, "violating_fraction": nv / total_app if total_app else 0.0,
            "worst_layer": max(bad, key=lambda r: r[f"viol_frac_{key}"])["node"] if bad else None,
        }
    return out


def all_required_gammas_log10(records, b: int = 0, max_points: int = 200_000, seed: int = 0) -> np.ndarray:
    """``log10 (|N_a|/P_a)^2`` over all applicable neurons of all layers (subsampled
    uniformly to ``max_points`` for the histogram); ``-inf`` where ``N_a = 0``."""
    parts = []
    for r in records:
        if is_rule_op(r) and r.pos_sum is not None:
            req = required_gammas(np.clip(_np(r.pos_sum, b), 0, None), np.clip(_np(r.neg_sum, b), None, 0))
            parts.append(req)
    allv = np.concatenate(parts) if parts else np.zeros(0)
    if allv.size > max_points:
        allv = np.random.default_rng(seed).choice(allv, size=max_points, replace=False)
    with np.errstate(divide="ignore"):
        return np.log10(allv)


def input_layer_row(rows: list[dict]) -> dict | None:
    """The row of the deepest rule op (the input layer, pixels of both signs)."""
    return max(rows, key=lambda r: r["t"]) if rows else None


def gamma_of_layer_at_quantile(rows: list[dict], q: float = 0.5) -> float:
    """Quantile over layers of the per-layer required gamma (context for the report)."""
    v = sorted(r["required_gamma"] for r in rows)
    return v[min(len(v) - 1, int(math.floor(q * len(v))))] if v else 1.0
