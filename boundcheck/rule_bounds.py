"""Rule -> bound: the Lemma 7/8 sum bounds and the eq. (31)-(33) value ranges of a rule, defined once.

Every place that turns an LRP rule into its bound (the CLI calculator, the
report, the audit, the experiment's figures) calls these functions with a
:class:`boundcheck.rules.Rule`; the gradient (eq. (32)) is the string
:data:`GRADIENT` with its weight norms and Lipschitz constant.

Which rule has which bound ([P1]):

* LRP-beta with a constant ``beta >= 0`` (eq. (7)): Lemma 7, eq. (28); value
  range eq. (31).
* LRP-gamma with ``gamma > 1`` (eq. (9)): Lemma 8, eq. (30), valid where
  condition (29) holds in every layer; value range eq. (33).
* The gradient: eq. (19) / (32) (``value_range*`` only; no sum bounds).
* Every other rule (LRP-0, LRP-epsilon, adaptive beta, LRP-gamma with
  ``gamma <= 1``): no bound in the papers; :func:`rule_lemma` is ``None`` and the
  bound functions raise :class:`InputError`.

Exact rationals: :func:`value_range_exact` gives the range as a
:class:`fractions.Fraction` computed from the exact binary value of the float
parameters (LRP-beta and the gradient only: the LRP-gamma range involves
``sqrt(gamma)`` and is irrational in general).
"""

from __future__ import annotations

from fractions import Fraction
from typing import Sequence, Union

from boundcheck import bounds
from boundcheck.errors import InputError
from boundcheck.rules import Rule

#: The gradient, which is not an LRP rule: its range is eq. (32).
GRADIENT = "gradient"

RuleLike = Union[Rule, str]

#: Largest size (bits of numerator plus denominator) of an exact range worth computing.
EXACT_RANGE_MAX_BITS = 1 << 16


def rule_lemma(rule: RuleLike) -> str | None:
    """``"lemma7"``, ``"lemma8"``, ``"eq32"`` (the gradient) or ``None`` (no bound for this rule).

    Parameters
    ----------
    rule : Rule or "gradient"
    """
    if isinstance(rule, str):
        if rule == GRADIENT:
            return "eq32"
        raise InputError(f"rule must be a boundcheck.rules.Rule or {GRADIENT!r}, got {rule!r}")
    if not isinstance(rule, Rule):
        raise InputError(f"rule must be a boundcheck.rules.Rule or {GRADIENT!r}, got {rule!r}")
    if rule.adaptive_beta_max is None and "beta" in rule.params:
        return "lemma7"
    if "gamma" in rule.params and rule.params["gamma"] > 1:
        return "lemma8"
    return None


def _lemma(rule: RuleLike, allow_gradient: bool) -> str:
    lemma = rule_lemma(rule)
    if lemma is None:
        raise InputError(
            f"rule {rule.name!r} has no value bound in [P1]: Lemma 7 covers LRP-beta, Lemma 8 LRP-gamma with gamma > 1"
        )
    if lemma == "eq32" and not allow_gradient:
        raise InputError("the gradient has no Lemma 7/8 sum bounds (its range is eq. (32))")
    return lemma


def _gradient_args(weight_norms, lipschitz, n: int) -> tuple[list[float], float]:
    if weight_norms is None:
        raise InputError("the gradient range (eq. (32)) needs weight_norms, one spectral norm per layer")
    norms = bounds.require_norms(weight_norms)
    if len(norms) != n:
        raise InputError(f"weight_norms has {len(norms)} values but n is {n}; give one norm per layer")
    L = bounds.require_positive("lipschitz", 1.0 if lipschitz is None else lipschitz)
    return norms, L


def _no_exact_gradient(bound: str) -> None:
    if bound != "paper":
        raise InputError("bound 'exact' is not defined for the gradient (eq. (32) is its only bound)")


def value_range_log10(rule: RuleLike, n, bound: bounds.Bound = "paper", *,
                      weight_norms: Sequence[float] | None = None, lipschitz=None) -> float:
    """``log10(z_u - z_l)``: the Hoeffding value range of one entry over ``n`` layers.

    LRP-beta: eq. (31) (:func:`boundcheck.bounds.eq31_value_range_log10`);
    LRP-gamma: eq. (33) (:func:`boundcheck.bounds.eq33_value_range_log10`);
    gradient: eq. (32) (``bound="paper"`` only; ``-inf`` when a norm is 0).

    Parameters
    ----------
    rule : Rule or "gradient"
    n : int >= 1
        Number of layers (rule ops on the longest relevance path).
    bound : {"paper", "exact"}
    weight_norms, lipschitz
        Gradient only: ``||W_1||_2, ..., ||W_n||_2`` and ``L`` (default 1).

    Raises
    ------
    InputError
        For a rule without a bound, or invalid arguments.
    """
    return _value_range(rule, n, bound, weight_norms, lipschitz, log10=True)


def value_range(rule: RuleLike, n, bound: bounds.Bound = "paper", *,
                weight_norms: Sequence[float] | None = None, lipschitz=None) -> float:
    """:func:`value_range_log10` as a float (eq. (31)/(33)/(32)).

    Raises
    ------
    InputError
        As :func:`value_range_log10`, or when the value exceeds the float range.
    """
    return _value_range(rule, n, bound, weight_norms, lipschitz, log10=False)


#: lemma -> (rule parameter, eq. (31)/(33) range as log10, as a float)
_RANGES = {
    "lemma7": ("beta", bounds.eq31_value_range_log10, bounds.eq31_value_range),
    "lemma8": ("gamma", bounds.eq33_value_range_log10, bounds.eq33_value_range),
}


def _value_range(rule, n, bound, weight_norms, lipschitz, log10: bool):
    """The one dispatch behind :func:`value_range_log10` and :func:`value_range`."""
    lemma = _lemma(rule, allow_gradient=True)
    n, bound = bounds.require_depth("n", n), bounds.require_bound(bound)
    if lemma in _RANGES:
        param, f_log10, f_float = _RANGES[lemma]
        return (f_log10 if log10 else f_float)(rule.params[param], n, bound)
    _no_exact_gradient(bound)
    norms, L = _gradient_args(weight_norms, lipschitz, n)
    return (bounds.eq32_gradient_range_log10 if log10 else bounds.eq32_gradient_range)(norms, L)


def value_range_exact(rule: RuleLike, n, bound: bounds.Bound = "paper", *,
                      weight_norms: Sequence[float] | None = None, lipschitz=None) -> Fraction | None:
    """The value range as an exact rational, or ``None`` where it is not one or too large.

    Computed with :class:`fractions.Fraction` from the exact binary values of the
    float parameters (no rounding anywhere): LRP-beta ``(1+2beta)^n`` (exact) or
    ``2^(n-1) (1+2beta) (1+beta)^(n-1)`` (paper, eq. (31)); gradient
    ``2 L^(n-1) prod ||W_l||`` (eq. (32)).  ``None`` for LRP-gamma (``sqrt(gamma)``
    is irrational in general) and when the result would need more than
    :data:`EXACT_RANGE_MAX_BITS` bits.
    """
    lemma = _lemma(rule, allow_gradient=True)
    n, bound = bounds.require_depth("n", n), bounds.require_bound(bound)
    if lemma == "lemma8":
        return None
    if lemma == "lemma7":
        beta = Fraction(bounds.require_beta(rule.params["beta"]))
        if bound == "exact":
            base, power, factor = 1 + 2 * beta, n, Fraction(1)
        elif beta == 0:
            return Fraction(1)
        else:
            base, power, factor = 2 * (1 + beta), n - 1, 1 + 2 * beta
        if not _small_enough(base, power, factor):
            return None
        return factor * base**power
    _no_exact_gradient(bound)
    norms, L = _gradient_args(weight_norms, lipschitz, n)
    Lf, prod = Fraction(L), Fraction(2)
    for w in norms:
        prod *= Fraction(w)
    if not _small_enough(Lf, n - 1, prod):
        return None
    return prod * Lf ** (n - 1)


def _small_enough(base: Fraction, power: int, factor: Fraction) -> bool:
    def bits(f: Fraction) -> int:
        return f.numerator.bit_length() + f.denominator.bit_length()

    return power * bits(base) + bits(factor) <= EXACT_RANGE_MAX_BITS


def sum_bounds_log10(rule: Rule, t, bound: bounds.Bound = "paper") -> bounds.SumBoundsLog10:
    """Bounds on the positive and negative relevance sums at depth ``t`` in ``log10`` space.

    LRP-beta: Lemma 7, eq. (28) (:func:`boundcheck.bounds.lemma7_bounds_log10`);
    LRP-gamma with ``gamma > 1``: Lemma 8, eq. (30), under condition (29)
    (:func:`boundcheck.bounds.lemma8_bounds_log10`).

    Raises
    ------
    InputError
        For a rule without a bound (see :func:`rule_lemma`) or invalid ``t``/``bound``.
    """
    lemma = _lemma(rule, allow_gradient=False)
    if lemma == "lemma7":
        return bounds.lemma7_bounds_log10(rule.params["beta"], t, bound)
    return bounds.lemma8_bounds_log10(rule.params["gamma"], t, bound)


def sum_bounds(rule: Rule, t, bound: bounds.Bound = "paper") -> bounds.SumBounds:
    """:func:`sum_bounds_log10` as floats (:func:`boundcheck.bounds.lemma7_bounds` / ``lemma8_bounds``).

    Raises
    ------
    InputError
        As :func:`sum_bounds_log10`, or on float overflow.
    """
    lemma = _lemma(rule, allow_gradient=False)
    if lemma == "lemma7":
        return bounds.lemma7_bounds(rule.params["beta"], t, bound)
    return bounds.lemma8_bounds(rule.params["gamma"], t, bound)
