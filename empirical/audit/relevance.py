"""Measured per-depth relevance sums and per-layer conservation against Lemma 7/8.

Input: the engine's :class:`empirical.engine.LayerRecord` list of one LRP rule
(``Attribution.records[rule]``) and a batch index.  The engine's ``depth`` of a
node is the number of rule ops strictly after it on the longest path; a rule op
``c`` therefore has depth ``t(c) = depth + w(c)`` in the sense of
:mod:`empirical.audit.depth` (``w = 3`` for a Swin attention module, else 1),
and the relevance at its input is compared with the depth-``t`` bounds.

Per depth ``t`` (:func:`depth_table`) the measured quantities are
``P_t = sum_{c: t(c) = t} (sum of positive entries of c's input relevance)`` and
``N_t`` likewise for the negative entries (magnitude); by the theorem of
:mod:`empirical.audit.depth` they are bounded by the Lemma 7 (LRP-beta) and,
where condition (29) holds everywhere, Lemma 8 (LRP-gamma) bounds, paper and
exact.  At ``t = n`` the attribution map of the input (``reduce="none"``, all
channels) is used as well.

Per layer (:func:`layer_table`): ``defect = sum(R_in) - sum(R_out)``, the
relevance a node creates (> 0) or loses (< 0), and for rule ops the fractions of
output neurons in the three zero-denominator cases of the ``0/0 := 0``
convention (no negative part: an LRP-beta column sums to ``1+beta``; no positive
part: to ``-beta``; neither: relevance dropped).  The backward pass is bias-free
(``Conventions(bias="forward_only")``), so no relevance is absorbed by biases.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from boundcheck.errors import InputError
from boundcheck.rule_bounds import rule_lemma, sum_bounds_log10
from boundcheck.rules import parse_rule

def is_rule_op(rec) -> bool:
    """Whether a record's node applies a rule (the engine's node-kind table)."""
    from empirical.engine.kinds import is_rule_kind

    return is_rule_kind(rec.kind)


def op_depth(rec) -> int:
    """``t(c)`` of a rule-op record (depth of the relevance at its input)."""
    from empirical.engine.kinds import depth_weight

    return int(rec.depth) + depth_weight(rec.kind)


def _f(x, b: int) -> float:
    return float(x[b]) if getattr(x, "ndim", 0) else float(x)


def _log10(x: float) -> float:
    return math.log10(x) if x > 0 else -math.inf


def rule_bounds_log10(rule_name: str, t: int):
    """``{(bound): (log10 P-bound, log10 N-bound)}`` for "paper" and "exact", or None.

    LRP-beta: Lemma 7; LRP-gamma with ``gamma > 1``: Lemma 8 (valid only where
    condition (29) holds, see :mod:`empirical.audit.condition29`); other rules: None.
    """
    rule = parse_rule(rule_name)
    if rule_lemma(rule) is None:
        return None
    out = {}
    for bound in ("paper", "exact"):
        b = sum_bounds_log10(rule, t, bound)
        out[bound] = (b.positive_upper_log10, b.negative_magnitude_log10)
    return out


def network_depth(records) -> int:
    """``n``: the largest ``t(c)`` over the rule-op records."""
    ts = [op_depth(r) for r in records if is_rule_op(r)]
    if not ts:
        raise InputError("no rule-op records (conv/linear/add/avgpool/attention) to audit")
    return max(ts)


def depth_sums(records, b: int = 0) -> dict[int, tuple[float, float]]:
    """``{t: (P_t, N_t)}``: measured sums over the rule ops of depth exactly ``t``."""
    out: dict[int, list[float]] = {}
    for r in records:
        if not is_rule_op(r):
            continue
        t = op_depth(r)
        acc = out.setdefault(t, [0.0, 0.0])
        acc[0] += _f(r.relevance_in_pos, b)
        acc[1] += -_f(r.relevance_in_neg, b)
    return {t: (v[0], v[1]) for t, v in sorted(out.items())}


def chain_depth_sums(relevances: Sequence[np.ndarray]) -> dict[int, tuple[float, float]]:
    """The same for a numpy chain: ``relevances`` from :meth:`boundcheck.rules.Chain.relevance`
    (``relevances[t]`` is the map at depth ``t``, ``relevances[0] = q``)."""
    return {t: (float(r[r > 0].sum()), float(-r[r < 0].sum())) for t, r in enumerate(relevances) if t > 0}


def depth_table(records, rule_name: str, b: int = 0, input_map=None) -> list[dict]:
    """One row per depth ``t = 1..n``: measured ``P_t``, ``N_t`` and the bounds.

    Columns: ``t``, ``measured_pos``, ``measured_neg`` (magnitude), for
    ``bound in (paper, exact)``: ``{bound}_pos_log10``, ``{bound}_neg_log10``,
    ``ratio_pos_{bound}`` (measured/bound), ``ratio_neg_{bound}``, ``exceeds_{bound}``.
    With ``input_map`` (the input attribution of this image, any shape) the row
    ``t = n`` also gets ``input_pos``/``input_neg`` and the ratios use the larger
    of the two measurements.
    """
    sums = depth_sums(records, b)
    n = network_depth(records)
    rows = []
    for t in range(1, n + 1):
        P, N = sums.get(t, (0.0, 0.0))
        row = {"rule": rule_name, "t": t, "measured_pos": P, "measured_neg": N, "n_ops": 0}
        row["n_ops"] = sum(1 for r in records if is_rule_op(r) and op_depth(r) == t)
        if t == n and input_map is not None:
            m = np.asarray(input_map, dtype=np.float64)
            row["input_pos"] = float(m[m > 0].sum())
            row["input_neg"] = float(-m[m < 0].sum())
            P, N = max(P, row["input_pos"]), max(N, row["input_neg"])
        bounds = rule_bounds_log10(rule_name, t)
        for bound in ("paper", "exact"):
            if bounds is None:
                row.update({f"{bound}_pos_log10": None, f"{bound}_neg_log10": None,
                            f"ratio_pos_{bound}": None, f"ratio_neg_{bound}": None, f"exceeds_{bound}": None})
                continue
            lp, ln = bounds[bound]
            rp = 10 ** (_log10(P) - lp) if P > 0 else 0.0
            if ln == -math.inf:
                rn = math.inf if N > 0 else 0.0
            else:
                rn = 10 ** (_log10(N) - ln) if N > 0 else 0.0
            tol = 1e-4  # float32 engine rounding
            row.update({
                f"{bound}_pos_log10": lp, f"{bound}_neg_log10": ln,
                f"ratio_pos_{bound}": rp, f"ratio_neg_{bound}": rn,
                f"exceeds_{bound}": bool(rp > 1 + tol or rn > 1 + tol),
            })
        rows.append(row)
    return rows


def zero_denominator_fractions(pos, neg) -> dict[str, float]:
    """Fractions of output neurons with ``P_a > 0 = N_a`` ("no_neg"), ``P_a = 0 > N_a``
    ("no_pos") and ``P_a = N_a = 0`` ("empty")."""
    pos = np.asarray(pos, dtype=np.float64).ravel()
    neg = np.asarray(neg, dtype=np.float64).ravel()
    n = max(pos.size, 1)
    return {
        "frac_no_neg": float(np.sum((pos > 0) & (neg == 0)) / n),
        "frac_no_pos": float(np.sum((pos == 0) & (neg < 0)) / n),
        "frac_empty": float(np.sum((pos == 0) & (neg == 0)) / n),
    }


def _np(x, b):
    import torch

    if x is None:
        return None
    if isinstance(x, torch.Tensor):
        x = x.detach().to("cpu", torch.float64).numpy()
    return np.asarray(x)[b]


def layer_table(records, rule_name: str, b: int = 0) -> list[dict]:
    """One row per record (backward order): relevance in/out and the defect.

    ``defect = (in_pos + in_neg) - (out_pos + out_neg)`` (``*_neg`` are signed,
    <= 0): > 0 means the node created relevance, < 0 lost it.  ``rel_defect`` is
    the defect divided by ``|sum(R_out)|`` (None when that is 0).
    """
    rows = []
    for r in records:
        op, on = _f(r.relevance_out_pos, b), _f(r.relevance_out_neg, b)
        ip, inn = _f(r.relevance_in_pos, b), _f(r.relevance_in_neg, b)
        total_out = op + on
        defect = (ip + inn) - total_out
        row = {
            "rule": rule_name, "node": r.node, "kind": r.kind, "engine_depth": int(r.depth),
            "t": op_depth(r) if is_rule_op(r) else None,
            "out_pos": op, "out_neg": on, "in_pos": ip, "in_neg": inn,
            "defect": defect, "rel_defect": (defect / abs(total_out)) if total_out != 0 else None,
            "frac_no_neg": None, "frac_no_pos": None, "frac_empty": None,
        }
        if r.pos_sum is not None:
            row.update(zero_denominator_fractions(_np(r.pos_sum, b), _np(r.neg_sum, b)))
        rows.append(row)
    return rows


def conservation_summary(layer_rows: list[dict]) -> list[dict]:
    """Defect per kind: number of nodes, nodes with |rel_defect| > 1e-4, total created and lost."""
    by: dict[str, dict] = {}
    for row in layer_rows:
        d = by.setdefault(row["kind"], {"kind": row["kind"], "nodes": 0, "nonconserving": 0, "created": 0.0, "lost": 0.0,
                                        "max_abs_rel_defect": 0.0})
        d["nodes"] += 1
        rd = row["rel_defect"]
        if rd is not None and abs(rd) > 1e-4:
            d["nonconserving"] += 1
            d["max_abs_rel_defect"] = max(d["max_abs_rel_defect"], abs(rd))
        if row["defect"] > 0:
            d["created"] += row["defect"]
        else:
            d["lost"] += row["defect"]
    return sorted(by.values(), key=lambda d: -abs(d["created"]) - abs(d["lost"]))


def max_ratio(depth_rows: list[dict], bound: str) -> tuple[float | None, int | None]:
    """Largest measured/bound ratio (positive or negative part) over depths and its depth."""
    best, where = None, None
    for row in depth_rows:
        for key in (f"ratio_pos_{bound}", f"ratio_neg_{bound}"):
            v = row.get(key)
            if v is not None and (best is None or v > best):
                best, where = v, row["t"]
    return best, where
