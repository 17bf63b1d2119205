"""What the theory guarantees next to what one image shows.

Theory ([P1] eq. (24)): for a per-pixel deviation ``t`` with probability at
least ``1 - delta``, ``m = r^2 ln(2/delta) / (2 t^2)`` samples suffice, where
``r = z_u - z_l`` is the rule's value range at the network's depth ``n``:
eq. (31) for LRP-beta, eq. (33) for LRP-gamma (valid only under condition (29)
in every layer), each in the paper's closed form and as the exact solution of
the recursion its proof establishes (:mod:`boundcheck.bounds`).  The depth is
the longest relevance path (:func:`empirical.audit.depth.torch_network_depth`).
Gradient methods get no finite bound here: eq. (32) needs every layer's spectral
norm and Lipschitz constant, and ``gradient x input`` under Gaussian noise is
unbounded (the input is).

The l2 bound on s1 ([P1] eq. (38); :func:`boundcheck.hoeffding.l2_deviation_bound_log10`)
uses ``B = P_n + N_n >= ||A||_1 >= ||A||_2``, the same value range.

Measurement: the split-half statistics s1 (eq. (38)) and s2 (eq. (39)) of two
disjoint sets of ``m`` samples of ONE image
(:mod:`empirical.experiment.statistics`).  They describe that image, they are
not a guarantee.

Huge numbers are carried as ``log10``; every value written to JSON is finite or
``None`` with a reason.
"""

from __future__ import annotations

import math

from boundcheck.hoeffding import (
    format_log10,
    format_number,
    hoeffding_samples,
    hoeffding_samples_log10,
    l2_deviation_bound_log10,
)

#: sample sizes up to this are written as exact integers too
EXACT_M_LOG10 = 15.0
FORMS = ("paper", "exact")


def method_kind(method: str) -> tuple[str, object]:
    """``("gradient", None)`` for gradient methods, ``("lrp", Rule)`` for LRP rules (engine names)."""
    from empirical.engine import parse_method

    kind, arg = parse_method(method)
    return ("lrp", arg) if kind == "lrp" else ("gradient", None)


def value_range_log10(method: str, n: int, form: str) -> tuple[float | None, str]:
    """``(log10 r, formula)`` of the rule's value range at depth ``n``, or ``(None, reason)``.

    The number is :func:`boundcheck.rule_bounds.value_range_log10` (the one lemma -> range table);
    this function adds what ``explain`` says about it.
    """
    from boundcheck.rule_bounds import rule_lemma
    from boundcheck.rule_bounds import value_range_log10 as range_log10

    kind, rule = method_kind(method)
    if kind == "gradient":
        return None, ("no finite bound computed: eq. (32) needs every layer's spectral norm and Lipschitz "
                      "constant (`boundcheck samples --rule gradient --weight-norms ...`); x*gradient under "
                      "Gaussian noise is unbounded")
    if getattr(rule, "adaptive_beta_max", None) is not None:
        return None, "no bound: adaptive beta changes the rule per neuron (Lemma 7 needs one fixed beta)"
    lemma, p = rule_lemma(rule), rule.params
    if lemma == "lemma7":
        return range_log10(rule, n, form), f"eq. (31), beta={p['beta']:g}, n={n}, {form}"
    if lemma == "lemma8":
        return (range_log10(rule, n, form),
                f"eq. (33), gamma={p['gamma']:g}, n={n}, {form}; valid only under condition (29) in every layer")
    return None, f"no bound in [P1] for rule {method}"


def value_range_float(method: str, n: int, form: str) -> float | None:
    """The value range as a float (:func:`boundcheck.rule_bounds.value_range`), None beyond the float range
    or without one."""
    from boundcheck.errors import InputError
    from boundcheck.rule_bounds import value_range

    lr, _ = value_range_log10(method, n, form)
    if lr is None or lr > 300:
        return None
    try:
        return value_range(method_kind(method)[1], n, form)
    except InputError:  # overflow
        return None


def required_m(method: str, n: int, t: float, delta: float) -> dict:
    """The m of eq. (24) for ``method`` at depth ``n``, both forms.

    Returns
    -------
    dict ``{"t", "delta", "n", "paper": {...}, "exact": {...}, "finite": bool, "note"}`` where each
    form holds ``log10_range``, ``log10_m``, ``m`` (exact int when ``m <= 10**15``, else None),
    ``m_text`` (e.g. ``"9.50e+51"``) and ``formula``; ``None`` values come with ``note``.
    """
    out: dict = {"t": float(t), "delta": float(delta), "n": int(n), "finite": False}
    for form in FORMS:
        lr, formula = value_range_log10(method, n, form)
        if lr is None:
            out[form] = None
            out["note"] = formula
            continue
        lm = hoeffding_samples_log10(t, delta, value_range_log10=lr)
        r = value_range_float(method, n, form)  # the float range where representable, as `boundcheck samples`
        kw = {"value_range": r} if r is not None else {"value_range_log10": lr}
        m = hoeffding_samples(t, delta, **kw) if lm <= EXACT_M_LOG10 else None
        out[form] = {"log10_range": lr, "log10_m": lm, "m": m,
                     "m_text": format_number(m) if m is not None else format_log10(lm), "formula": formula}
        out["finite"] = True
    if out["finite"]:
        out["note"] = "per pixel, probability >= 1-delta, eq. (24) with the rule's value range at depth n"
    return out


def l2_bound_curve_log10(method: str, n: int, delta: float, m_values) -> dict:
    """``{form: {m: log10 of the l2 bound on s1}}`` (eq. (38), B = the value range), {} without a bound."""
    out = {}
    for form in FORMS:
        lr, _ = value_range_log10(method, n, form)
        if lr is not None:
            out[form] = {int(m): l2_deviation_bound_log10(delta, int(m), lr) for m in m_values}
    return out


def finite_or_none(value, reason: str, reasons: dict, key: str):
    """``value`` when finite, else None and ``reasons[key] = reason`` (JSON has no NaN)."""
    if value is None or not math.isfinite(float(value)):
        reasons[key] = reason
        return None
    return float(value)
