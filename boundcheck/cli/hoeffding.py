"""``boundcheck samples | deviation | range``: Hoeffding sample sizes and value ranges from the bounds.

* ``samples``: required ``m`` for deviation ``t`` at confidence ``1 - delta``
  ([P1] eq. (24)), with the value range of eq. (31) (LRP-beta), eq. (33)
  (LRP-gamma) or eq. (32) (gradient).
* ``deviation``: deviation ``t`` reached with ``m`` samples (eq. (23)).
* ``range``: per-depth table of the Lemma 7/8 bounds, paper and exact.

The depth ``n`` is ``--layers N`` or, with ``--model NAME``, the longest
relevance path of the traced network (:func:`empirical.audit.depth.torch_network_depth`;
only then is torch imported).

Numbers policy
--------------
Light imports only (no torch, sympy or scipy): everything is computed in
``log10`` space first, so huge but finite inputs (``--beta 1e308``,
``--layers 10000000``, ``--delta 1e-310``, a 400-digit ``--m``) neither
overflow nor print ``inf``; bad or out-of-range input is one line on stderr,
exit 2.  Integer options (``--layers``, ``--m``, ``--components``) are parsed
exactly (``1e30`` is the integer ``10**30``, never a float).  ``t``, ``delta``
and the rule parameters are their binary float values.

* ``m`` (``samples``) is the exact ceiling of eq. (24), ``m_exact: true``, only
  when the value range is an exact rational (LRP-beta and the gradient, computed
  with :class:`fractions.Fraction`, :func:`boundcheck.rule_bounds.value_range_exact`)
  and ``m <= 10**1000``.  Otherwise ``m_exact: false`` and ``m_note`` says why:
  the range is a float (LRP-gamma: ``sqrt(gamma)``), or ``m`` is an upper bound
  exact in its leading 30 digits, or (more than 100,000 digits) ``m`` is a string
  in scientific notation rounded up.
* In ``--json`` a value beyond the float range is a string in scientific
  notation; ``log10_*`` keys are always finite numbers; NaN and Infinity never
  appear.  An integer beyond 4300 digits (Python's ``json.loads`` limit) is
  written as its exact decimal string, next to its ``log10_*`` number.
* ``range`` prints at most ``--max-rows`` rows (default 200, at most 100,000):
  the first and last halves, with the elided depths stated.
"""

from __future__ import annotations

import argparse
import math
from decimal import Decimal, InvalidOperation
from fractions import Fraction

from boundcheck import bounds, rule_bounds
from boundcheck.errors import InputError
from boundcheck.hoeffding import (
    EXACT_DIGITS,
    MAX_INT_DIGITS,
    format_log10,
    format_number,
    hoeffding_deviation,
    hoeffding_deviation_log10,
    hoeffding_samples,
    hoeffding_samples_log10,
    int_to_str,
    scientific_upper,
)
from boundcheck.rules import lrp_beta, lrp_gamma

RULES = ("lrp-beta", "lrp-gamma", "gradient")

#: Digits accepted in an integer option (``--m`` with 400 digits is fine).
MAX_INT_OPTION_DIGITS = 10_000

#: ``range``: default and largest number of printed rows.
DEFAULT_MAX_ROWS = 200
MAX_ROWS_LIMIT = 100_000

_FORMULAS = {
    ("lrp-beta", "paper"): "eq. (31): z_u - z_l = 2^(n-1) (1+2beta) (1+beta)^(n-1) (beta > 0), 1 (beta = 0)",
    ("lrp-beta", "exact"): "exact solution of the Lemma 7 recursion (eq. (86), (101)): z_u - z_l = (1+2beta)^n",
    ("lrp-gamma", "paper"): "eq. (33): z_u - z_l = 2^(n-1) b(gamma)^(n-1) (c_plus + 1/(sqrt(gamma)-1))",
    ("lrp-gamma", "exact"): "exact solution of the Lemma 8 recursion: z_u - z_l = (1+2c_minus)^n, c_minus = sqrt(gamma)/(1+gamma-sqrt(gamma))",
    ("gradient", "paper"): "eq. (32): z_u - z_l = 2 L^(n-1) prod_l ||W_l||_2",
}


# --------------------------------------------------------------------------- argument types


def _real(name: str):
    def parse(text: str) -> float:
        try:
            v = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{name} must be a number, got {text!r}") from None
        if not math.isfinite(v):
            raise argparse.ArgumentTypeError(f"{name} must be finite, got {text!r}")
        return v

    parse.__name__ = name
    return parse


def _integer(name: str):
    """An exact integer from ``"123"``, ``"1e30"`` or ``"1.0e3"`` (no float on the way)."""

    def parse(text: str) -> int:
        try:
            d = Decimal(text.strip())
        except InvalidOperation:
            raise argparse.ArgumentTypeError(f"{name} must be an integer, got {text!r}") from None
        if not d.is_finite():
            raise argparse.ArgumentTypeError(f"{name} must be an integer, got {text!r}")
        if d.adjusted() >= MAX_INT_OPTION_DIGITS:
            raise argparse.ArgumentTypeError(f"{name} must have at most {MAX_INT_OPTION_DIGITS} digits")
        if d != d.to_integral_value():
            raise argparse.ArgumentTypeError(f"{name} must be an integer, got {text!r}")
        return int(d)

    parse.__name__ = name
    return parse


def _norm_list(text: str) -> list[float]:
    items = [s.strip() for s in text.split(",") if s.strip()]
    if not items:
        raise argparse.ArgumentTypeError(f"weight norms must be a comma-separated list of numbers, got {text!r}")
    return [_real("weight norm")(s) for s in items]


def add_arguments(parser: argparse.ArgumentParser, name: str) -> None:
    """Options of ``samples``, ``deviation`` and ``range`` (``name`` selects which)."""
    parser.add_argument("--rule", choices=RULES, required=True, help="attribution method")
    parser.add_argument("--beta", type=_real("beta"), help="LRP-beta parameter (>= 0)")
    parser.add_argument("--gamma", type=_real("gamma"), help="LRP-gamma parameter (> 1, Lemma 8)")
    parser.add_argument("--lipschitz", type=_real("lipschitz"), default=None, help="gradient: Lipschitz constant L of the activations (default 1, ReLU)")
    parser.add_argument("--weight-norms", type=_norm_list, default=None, help="gradient: spectral norms ||W_1||_2,...,||W_n||_2, comma-separated")
    depth = parser.add_mutually_exclusive_group(required=True)
    depth.add_argument("--layers", type=_integer("layers"), help="number n of affine layers (1 to 10^15)")
    depth.add_argument("--model", metavar="NAME", default=None,
                       help="take n from this network (empirical.models name, e.g. efficientnet-lite0): the longest "
                            "relevance path traced by empirical.audit.depth.torch_network_depth (imports torch)")
    parser.add_argument("--random-weights", action="store_true",
                        help="with --model: random initialisation instead of the trained weights (the depth does not depend on them)")
    if name == "samples":
        parser.add_argument("--t", type=_real("t"), required=True, help="deviation t (> 0)")
    if name == "deviation":
        parser.add_argument("--m", type=_integer("m"), required=True, help=f"number of samples m (>= 1, an exact integer, at most {MAX_INT_OPTION_DIGITS} digits; 1e30 means 10^30)")
    if name in ("samples", "deviation"):
        parser.add_argument("--delta", type=_real("delta"), required=True, help="failure probability delta in (0, 1)")
        parser.add_argument("--bound", choices=("paper", "exact"), default="paper", help="paper's closed form or exact solution of its recursion (default paper)")
        parser.add_argument("--components", type=_integer("components"), default=1, help="union bound over D entries: delta -> delta/D (default 1)")
    if name == "range":
        parser.add_argument("--max-rows", type=_integer("max-rows"), default=DEFAULT_MAX_ROWS,
                            help=f"print at most this many depths (default {DEFAULT_MAX_ROWS}, at most {MAX_ROWS_LIMIT}): "
                                 "the first and the last half, the depths in between elided (stated in the output)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")


# --------------------------------------------------------------------------- helpers


def _float_or_str(log10_value: float):
    """A float where representable (and not lossy at 0), else scientific notation as a string."""
    if log10_value == -math.inf:
        return 0.0
    if -300 < log10_value < 300:
        return 10.0**log10_value
    return format_log10(log10_value, 6)


def _dumps(obj: dict) -> str:
    """Strict JSON any reader loads (:func:`empirical.io.dumps_strict`: no NaN/Infinity; an int beyond
    4300 digits is its exact decimal string beside a ``log10_`` number)."""
    from empirical.io import dumps_strict

    return dumps_strict(obj)


def _rule_of(args):
    """Validate the rule-specific options; return the rule (a Rule or "gradient") and the
    parameters for the output."""
    rule = args.rule
    wrong = {
        "lrp-beta": ("gamma", "lipschitz", "weight_norms"),
        "lrp-gamma": ("beta", "lipschitz", "weight_norms"),
        "gradient": ("beta", "gamma"),
    }[rule]
    for opt in wrong:
        if getattr(args, opt) is not None:
            raise InputError(f"--{opt.replace('_', '-')} does not apply to --rule {rule}")
    if rule == "lrp-beta":
        if args.beta is None:
            raise InputError("--rule lrp-beta needs --beta")
        beta = bounds.require_beta(args.beta)
        return lrp_beta(beta), {"beta": beta}
    if rule == "lrp-gamma":
        if args.gamma is None:
            raise InputError("--rule lrp-gamma needs --gamma")
        gamma = bounds.require_gamma(args.gamma)
        return lrp_gamma(gamma), {"gamma": gamma}
    if args.weight_norms is None:
        raise InputError("--rule gradient needs --weight-norms N1,...,Nn (one spectral norm per layer)")
    L = 1.0 if args.lipschitz is None else args.lipschitz
    bounds.require_norms(args.weight_norms)
    bounds.require_positive("lipschitz", L)
    return rule_bounds.GRADIENT, {"lipschitz": L, "weight_norms": list(args.weight_norms)}


def _depth(args) -> tuple[int, str]:
    """``(n, where n came from)``: ``--layers``, or the traced ``--model`` (imports torch)."""
    if args.model is None:
        if args.random_weights:
            raise InputError("--random-weights applies only with --model NAME")
        return bounds.require_depth("layers", args.layers), "--layers"
    from empirical.audit.depth import torch_network_depth
    from empirical.models import load_model

    loaded = load_model(args.model, pretrained=not args.random_weights)
    n = bounds.require_depth("traced depth", torch_network_depth(loaded.model).n)
    weights = "random weights" if args.random_weights else f"weights {loaded.weights_file}"
    return n, (f"--model {args.model} ({weights}): longest relevance path traced by "
               "empirical.audit.depth.torch_network_depth")


def _check_norm_count(rule, params: dict, layers: int) -> None:
    if rule == rule_bounds.GRADIENT and len(params["weight_norms"]) != layers:
        raise InputError(f"--weight-norms has {len(params['weight_norms'])} values but --layers is {layers}; give one norm per layer")


def _gradient_kw(params: dict) -> dict:
    return {k: params[k] for k in ("weight_norms", "lipschitz") if k in params}


def _range_log10(rule, params: dict, layers: int, bound: str) -> float:
    log = rule_bounds.value_range_log10(rule, layers, bound, **_gradient_kw(params))
    if log == -math.inf:
        raise InputError("the gradient range is 0 (a weight norm is 0): every sample size works")
    return log


def _range_kwargs(log_r: float, rule, params: dict, layers: int, bound: str) -> dict:
    """The range for hoeffding_*: the float itself when representable, else its log10."""
    if -300 < log_r < 300:
        return {"value_range": rule_bounds.value_range(rule, layers, bound, **_gradient_kw(params))}
    return {"value_range_log10": log_r}


def _exact_json(value: Fraction):
    """An exact rational for JSON: an int, or ``"p/q"``."""
    return value.numerator if value.denominator == 1 else f"{int_to_str(value.numerator)}/{int_to_str(value.denominator)}"


def _describe(args, params: dict) -> str:
    if args.rule == "lrp-beta":
        return f"LRP-beta (beta = {params['beta']:g})"
    if args.rule == "lrp-gamma":
        return f"LRP-gamma (gamma = {params['gamma']:g})"
    return f"gradient (L = {params['lipschitz']:g}, {len(params['weight_norms'])} weight norms)"


def _fmt_log(log10_value: float) -> str:
    return format_log10(log10_value) if (log10_value >= 6 or log10_value < -3) else format_number(10.0**log10_value)


# --------------------------------------------------------------------------- commands


def _samples_m(args, rule, params: dict, layers: int, log_r: float, kw: dict) -> dict:
    """``m`` of eq. (24) with its exactness (see the module's numbers policy)."""
    exact_r = rule_bounds.value_range_exact(rule, layers, args.bound, **_gradient_kw(params))
    log_m = hoeffding_samples_log10(args.t, args.delta, components=args.components, **kw)
    out = {"t": args.t, "log10_m": log_m}
    if log_m >= MAX_INT_DIGITS:
        out.update(m=scientific_upper(log_m, 6), m_exact=False,
                   m_note=f"m has more than {MAX_INT_DIGITS} digits: an upper bound in scientific notation")
        return out
    if exact_r is not None:
        m = hoeffding_samples(args.t, args.delta, exact_r, components=args.components)
        out["value_range_exact"] = _exact_json(exact_r)
    else:
        m = hoeffding_samples(args.t, args.delta, components=args.components, **kw)
    out.update(m=m, m_exact=bool(exact_r is not None and log_m <= EXACT_DIGITS))
    if log_m > EXACT_DIGITS:
        out["m_note"] = "upper bound, leading 30 digits exact" + ("" if exact_r is not None else " for the rounded float value range")
    elif exact_r is None:
        why = ("the LRP-gamma range involves sqrt(gamma)" if args.rule == "lrp-gamma"
               else "the exact rational range is too large to compute")
        out["m_note"] = f"not exact: the value range is a rounded float ({why}); m is the ceiling for that float"
    return out


def _samples_or_deviation(args) -> int:
    rule, params = _rule_of(args)
    layers, source = _depth(args)
    _check_norm_count(rule, params, layers)
    log_r = _range_log10(rule, params, layers, args.bound)
    kw = _range_kwargs(log_r, rule, params, layers, args.bound)
    out = {
        "command": args.command,
        "rule": args.rule,
        **{k: v for k, v in params.items()},
        "layers": layers,
        "depth_source": source,
        "delta": args.delta,
        "components": args.components,
        "bound": args.bound,
        "value_range": kw.get("value_range", _float_or_str(log_r)),
        "log10_value_range": log_r,
        "range_formula": _FORMULAS[(args.rule, args.bound)],
    }
    if args.command == "samples":
        out.update(_samples_m(args, rule, params, layers, log_r, kw))
        out["formula"] = "eq. (24): m = ceil((z_u - z_l)^2 ln(2 D/delta) / (2 t^2)), D = components (union bound)"
    else:
        log_t = hoeffding_deviation_log10(args.delta, args.m, components=args.components, **kw)
        t = hoeffding_deviation(args.delta, args.m, components=args.components, **kw) if -300 < log_t < 300 else format_log10(log_t, 6)
        out.update(m=args.m, t=t, log10_t=log_t, formula="eq. (23): t = (z_u - z_l) sqrt(ln(2 D/delta)/2) / sqrt(m), D = components (union bound)")
    if args.json:
        print(_dumps(out))
        return 0
    if args.model is not None:
        print(f"depth n = {layers} from {source}")
    print(f"rule: {_describe(args, params)}, n = {layers} layers, bound: {args.bound}")
    print(f"value range z_u - z_l = {_fmt_log(log_r)}")
    print(f"  {_FORMULAS[(args.rule, args.bound)]}")
    comps = args.components if args.components < 10**30 else format_number(args.components)
    print(f"delta = {args.delta:g}, components D = {comps}" + (" (union bound: delta -> delta/D)" if args.components > 1 else ""))
    if args.command == "samples":
        m = out["m"]
        note = f" ({out['m_note']})" if "m_note" in out else ""
        print(f"t = {args.t:g}")
        print(f"m = {m if isinstance(m, str) else format_number(m)}{note}")
        print(f"  {out['formula']}")
    else:
        print(f"m = {args.m if args.m < 10**30 else format_number(args.m)}")
        print(f"t = {_fmt_log(log_t)}")
        print(f"  {out['formula']}")
    return 0


def _shown_depths(layers: int, max_rows: int) -> tuple[list[int], tuple[int, int] | None]:
    """The depths printed by ``range`` and the elided span ``(first, last)`` or None."""
    if layers <= max_rows:
        return list(range(1, layers + 1)), None
    head = max_rows - max_rows // 2
    tail = max_rows // 2
    return list(range(1, head + 1)) + list(range(layers - tail + 1, layers + 1)), (head + 1, layers - tail)


def _range_table(args) -> int:
    if args.rule == "gradient":
        raise InputError("range: the per-depth table is for --rule lrp-beta or lrp-gamma (the gradient range is eq. (32), see 'samples')")
    rule, params = _rule_of(args)
    max_rows = args.max_rows
    if not 2 <= max_rows <= MAX_ROWS_LIMIT:
        raise InputError(f"--max-rows must be in [2, {MAX_ROWS_LIMIT}], got {max_rows}")
    layers, source = _depth(args)
    name = "Lemma 7 / eq. (28), (31)" if args.rule == "lrp-beta" else "Lemma 8 / eq. (30), (33)"
    shown, elided = _shown_depths(layers, max_rows)
    rows = []
    for t in shown:
        pa, ex = rule_bounds.sum_bounds_log10(rule, t, "paper"), rule_bounds.sum_bounds_log10(rule, t, "exact")
        rows.append((t, pa, ex, pa.value_range_log10 - ex.value_range_log10))
    if args.json:
        doc = {
            "command": "range",
            "rule": args.rule,
            **params,
            "layers": layers,
            "depth_source": source,
            "rows": [
                {
                    "t": t,
                    "paper": {"P": _float_or_str(pa.positive_upper_log10), "N": _float_or_str(pa.negative_magnitude_log10), "range": _float_or_str(pa.value_range_log10), "log10_range": pa.value_range_log10},
                    "exact": {"P": _float_or_str(ex.positive_upper_log10), "N": _float_or_str(ex.negative_magnitude_log10), "range": _float_or_str(ex.value_range_log10), "log10_range": ex.value_range_log10},
                    "ratio_paper_exact": _float_or_str(r),
                    "log10_ratio_paper_exact": r,
                }
                for t, pa, ex, r in rows
            ],
        }
        if elided is not None:
            doc["elided"] = {"from_t": elided[0], "to_t": elided[1], "count": elided[1] - elided[0] + 1,
                             "reason": f"at most --max-rows {max_rows} rows are printed"}
        print(_dumps(doc))
        return 0
    if args.model is not None:
        print(f"depth n = {layers} from {source}")
    print(f"{_describe(args, params)}: {name}; P_t = bound on the positive sum, N_t = on |negative sum|, range = P_t + N_t")
    header = ("t", "P_t paper", "N_t paper", "range paper", "P_t exact", "N_t exact", "range exact", "paper/exact")
    print("  ".join(f"{h:>11}" for h in header))
    for t, pa, ex, r in rows:
        if elided is not None and t == elided[1] + 1:
            print(f"  ... depths t = {elided[0]} to {elided[1]} ({elided[1] - elided[0] + 1} rows) elided: "
                  f"at most --max-rows {max_rows} rows are printed")
        cells = [
            str(t),
            format_log10(pa.positive_upper_log10),
            format_log10(pa.negative_magnitude_log10),
            format_log10(pa.value_range_log10),
            format_log10(ex.positive_upper_log10),
            format_log10(ex.negative_magnitude_log10),
            format_log10(ex.value_range_log10),
            format_log10(r),
        ]
        print("  ".join(f"{c:>11}" for c in cells))
    return 0


def run(args) -> int:
    """Run ``samples``, ``deviation`` or ``range``; bad input raises :class:`InputError`."""
    if args.command == "range":
        return _range_table(args)
    return _samples_or_deviation(args)
