"""``boundcheck samples | deviation | range``: Hoeffding sample sizes and value ranges from the bounds.

* ``samples``: required ``m`` for deviation ``t`` at confidence ``1 - delta``
  ([P1] eq. (24)), with the value range of eq. (31) (LRP-beta), eq. (33)
  (LRP-gamma) or eq. (32) (gradient).
* ``deviation``: deviation ``t`` reached with ``m`` samples (eq. (23)).
* ``range``: per-depth table of the Lemma 7/8 bounds, paper and exact.

Light imports only (no torch, sympy or scipy): everything is computed in
``log10`` space first, so depth 10,000 neither overflows nor prints ``inf``.
A value beyond the float range appears in ``--json`` output as a string in
scientific notation; ``log10_*`` keys are always numbers, and ``m`` is always an
exact JSON integer (beyond 4300 digits Python readers need
``json.loads(..., parse_int=...)`` or ``sys.set_int_max_str_digits(0)``).
"""

from __future__ import annotations

import argparse
import json
import math

from boundcheck import bounds
from boundcheck.errors import InputError
from boundcheck.hoeffding import (
    EXACT_DIGITS,
    format_log10,
    format_number,
    hoeffding_deviation,
    hoeffding_deviation_log10,
    hoeffding_samples,
    hoeffding_samples_log10,
    int_to_str,
)

RULES = ("lrp-beta", "lrp-gamma", "gradient")

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
    def parse(text: str) -> int:
        try:
            return int(text)
        except ValueError:
            pass
        try:
            v = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{name} must be an integer, got {text!r}") from None
        if not (math.isfinite(v) and v.is_integer()):
            raise argparse.ArgumentTypeError(f"{name} must be an integer, got {text!r}")
        return int(v)

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
    parser.add_argument("--layers", type=_integer("layers"), required=True, help="number n of affine layers")
    if name == "samples":
        parser.add_argument("--t", type=_real("t"), required=True, help="deviation t (> 0)")
    if name == "deviation":
        parser.add_argument("--m", type=_integer("m"), required=True, help="number of samples m (>= 1)")
    if name in ("samples", "deviation"):
        parser.add_argument("--delta", type=_real("delta"), required=True, help="failure probability delta in (0, 1)")
        parser.add_argument("--bound", choices=("paper", "exact"), default="paper", help="paper's closed form or exact solution of its recursion (default paper)")
        parser.add_argument("--components", type=_integer("components"), default=1, help="union bound over D entries: delta -> delta/D (default 1)")
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
    """``json.dumps`` that writes ints of any size exactly (``str(int)`` stops at 4300 digits)."""
    big = {}
    for k, v in list(obj.items()):
        if isinstance(v, int) and not isinstance(v, bool) and abs(v) >= 10**4000:
            big[k] = v
            obj = {**obj, k: f"__BIG_INT_{k}__"}
    text = json.dumps(obj)
    for k, v in big.items():
        text = text.replace(json.dumps(f"__BIG_INT_{k}__"), int_to_str(v))
    return text


def _check_rule_args(args) -> dict:
    """Validate the rule-specific options; return the parameters for the output."""
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
        return {"beta": bounds._beta(args.beta)}
    if rule == "lrp-gamma":
        if args.gamma is None:
            raise InputError("--rule lrp-gamma needs --gamma")
        return {"gamma": bounds._gamma(args.gamma)}
    if args.weight_norms is None:
        raise InputError("--rule gradient needs --weight-norms N1,...,Nn (one spectral norm per layer)")
    if len(args.weight_norms) != args.layers:
        raise InputError(f"--weight-norms has {len(args.weight_norms)} values but --layers is {args.layers}; give one norm per layer")
    L = 1.0 if args.lipschitz is None else args.lipschitz
    bounds._norms(args.weight_norms)
    bounds._positive("lipschitz", L)
    return {"lipschitz": L, "weight_norms": list(args.weight_norms)}


def _range_log10(rule: str, params: dict, layers: int, bound: str) -> float:
    if rule == "lrp-beta":
        return bounds.eq31_value_range_log10(params["beta"], layers, bound)
    if rule == "lrp-gamma":
        return bounds.eq33_value_range_log10(params["gamma"], layers, bound)
    if bound != "paper":
        raise InputError("--bound exact is not defined for --rule gradient (eq. (32) is its only bound)")
    log = bounds.eq32_gradient_range_log10(params["weight_norms"], params["lipschitz"])
    if log == -math.inf:
        raise InputError("the gradient range is 0 (a weight norm is 0): every sample size works")
    return log


def _range_kwargs(log_r: float, rule: str, params: dict, layers: int, bound: str) -> dict:
    """The range for hoeffding_*: the float itself when representable (exact), else its log10."""
    if log_r < 300:
        if rule == "lrp-beta":
            return {"value_range": bounds.eq31_value_range(params["beta"], layers, bound)}
        if rule == "lrp-gamma":
            return {"value_range": bounds.eq33_value_range(params["gamma"], layers, bound)}
        return {"value_range": bounds.eq32_gradient_range(params["weight_norms"], params["lipschitz"])}
    return {"value_range_log10": log_r}


def _describe(rule: str, params: dict) -> str:
    if rule == "lrp-beta":
        return f"LRP-beta (beta = {params['beta']:g})"
    if rule == "lrp-gamma":
        return f"LRP-gamma (gamma = {params['gamma']:g})"
    return f"gradient (L = {params['lipschitz']:g}, {len(params['weight_norms'])} weight norms)"


# --------------------------------------------------------------------------- commands


def _samples_or_deviation(args) -> int:
    params = _check_rule_args(args)
    layers = bounds._depth("layers", args.layers)
    log_r = _range_log10(args.rule, params, layers, args.bound)
    kw = _range_kwargs(log_r, args.rule, params, layers, args.bound)
    out = {
        "command": args.command,
        "rule": args.rule,
        **{k: v for k, v in params.items()},
        "layers": layers,
        "delta": args.delta,
        "components": args.components,
        "bound": args.bound,
        "value_range": kw.get("value_range", _float_or_str(log_r)),
        "log10_value_range": log_r,
        "range_formula": _FORMULAS[(args.rule, args.bound)],
    }
    if args.command == "samples":
        m = hoeffding_samples(args.t, args.delta, components=args.components, **kw)
        log_m = hoeffding_samples_log10(args.t, args.delta, components=args.components, **kw)
        out.update(
            t=args.t,
            m=m,
            log10_m=log_m,
            m_exact=bool(log_m <= EXACT_DIGITS),
            formula="eq. (24): m = ceil((z_u - z_l)^2 ln(2 D/delta) / (2 t^2)), D = components (union bound)",
        )
    else:
        log_t = hoeffding_deviation_log10(args.delta, args.m, components=args.components, **kw)
        t = hoeffding_deviation(args.delta, args.m, components=args.components, **kw) if log_t < 300 else format_log10(log_t, 6)
        out.update(m=args.m, t=t, log10_t=log_t, formula="eq. (23): t = (z_u - z_l) sqrt(ln(2 D/delta)/2) / sqrt(m), D = components (union bound)")
    if args.json:
        print(_dumps(out))
        return 0
    print(f"rule: {_describe(args.rule, params)}, n = {layers} layers, bound: {args.bound}")
    print(f"value range z_u - z_l = {format_log10(log_r) if log_r >= 6 or log_r < -3 else format_number(10.0 ** log_r)}")
    print(f"  {_FORMULAS[(args.rule, args.bound)]}")
    print(f"delta = {args.delta:g}, components D = {args.components}" + (" (union bound: delta -> delta/D)" if args.components > 1 else ""))
    if args.command == "samples":
        m = out["m"]
        approx = "" if out["m_exact"] else " (upper bound, leading 30 digits exact)"
        print(f"t = {args.t:g}")
        print(f"m = {format_number(m)}{approx}")
        print(f"  {out['formula']}")
    else:
        print(f"m = {args.m}")
        print(f"t = {format_log10(log_t) if (log_t >= 6 or log_t < -3) else format_number(10.0 ** log_t)}")
        print(f"  {out['formula']}")
    return 0


def _range_table(args) -> int:
    if args.rule == "gradient":
        raise InputError("range: the per-depth table is for --rule lrp-beta or lrp-gamma (the gradient range is eq. (32), see 'samples')")
    params = _check_rule_args(args)
    layers = bounds._depth("layers", args.layers)
    if args.rule == "lrp-beta":
        f, p, name = bounds.lemma7_bounds_log10, params["beta"], "Lemma 7 / eq. (28), (31)"
    else:
        f, p, name = bounds.lemma8_bounds_log10, params["gamma"], "Lemma 8 / eq. (30), (33)"
    rows = []
    for t in range(1, layers + 1):
        pa, ex = f(p, t, "paper"), f(p, t, "exact")
        ratio = pa.value_range_log10 - ex.value_range_log10
        rows.append((t, pa, ex, ratio))
    if args.json:
        print(
            _dumps(
                {
                    "command": "range",
                    "rule": args.rule,
                    **params,
                    "layers": layers,
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
            )
        )
        return 0
    print(f"{_describe(args.rule, params)}: {name}; P_t = bound on the positive sum, N_t = on |negative sum|, range = P_t + N_t")
    header = ("t", "P_t paper", "N_t paper", "range paper", "P_t exact", "N_t exact", "range exact", "paper/exact")
    print("  ".join(f"{h:>11}" for h in header))
    for t, pa, ex, r in rows:
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
