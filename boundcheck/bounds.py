"""Every stated bound of [P1], named after the paper, with the exact solutions of its recursions.

Notation: a network has ``n`` affine layers; relevance at *depth* ``t`` is the
attribution map of the input ``z^(n-t)`` of layer ``n-t+1`` ([P1] eq. (25));
``P_t`` is the sum of its positive entries and ``N_t`` the magnitude of the sum
of its negative entries, started from ``q >= 0, sum q = 1`` (``P_0 = 1``,
``N_0 = 0``).  The Hoeffding value range of one attribution entry is
``z_u - z_l = P_n + N_n``.

Paper bounds versus exact solutions
-----------------------------------
Both lemma proofs establish a linear one-step recursion and then relax it:

* Lemma 7 (LRP-beta), proof eq. (86) and (101)::

      P_t <= (1+beta) P_{t-1} + beta N_{t-1},   N_t <= beta P_{t-1} + (1+beta) N_{t-1}

  whose exact solution is ``P_t = ((1+2beta)^t + 1)/2``,
  ``N_t = ((1+2beta)^t - 1)/2`` (sum ``(1+2beta)^t``, difference 1), against the
  paper's ``2^(t-1)(1+beta)^t`` and ``2^(t-1) beta (1+beta)^(t-1)`` (eq. (28)).
* Lemma 8 (LRP-gamma) under condition (29): the same recursion with
  ``c_plus = (1+gamma)/(1+gamma-sqrt(gamma))`` in place of ``1+beta`` and
  ``c_minus = sqrt(gamma)/(1+gamma-sqrt(gamma))`` in place of ``beta``
  (``c_plus - c_minus = 1``), solved by ``((1+2 c_minus)^t +- 1)/2``, against
  the paper's eq. (30).  The paper's induction start uses the looser
  ``1/(sqrt(gamma)-1)`` for the negative part (eq. (135)/(140)); the exact
  per-step coefficient is ``c_minus`` (eq. (188)), and an output with no
  positive part passes its relevance with total coefficient 1 <= c_plus to the
  same sign (eq. (113)-(115)), so the exact recursion holds from ``t = 1``.

Both exact bounds are attained (Lemma 7) or approached arbitrarily closely
(Lemma 8, condition (29) is strict) by :func:`lemma7_witness` and
:func:`lemma8_witness`, so they cannot be improved in general.

Every function validates its arguments and raises :class:`InputError`; a
float-valued function whose value exceeds the float range raises
:class:`InputError` naming its ``_log10`` variant (never ``inf``).

References
----------
[P1] Binder, Takmil-Homayouni, Dogan (2025): Theorem 3 (eq. (17)), Theorem 4
(eq. (49)-(50)), Corollary 5, eq. (19)-(20), Lemma 7 (eq. (28), proof
eq. (51)-(106)), Lemma 8 (eq. (29)-(30), proof eq. (107)-(224)), eq. (31)-(33),
Known Result 9, Hoeffding eq. (22)-(24) (:mod:`boundcheck.hoeffding`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal, Sequence

import numpy as np

from boundcheck.errors import InputError, require_int, require_real
from boundcheck.rules import positive_negative_sums

Bound = Literal["paper", "exact"]

_LOG10_2 = math.log10(2.0)

#: Largest depth ``n``/``t`` accepted (``n log10(...)`` must stay an accurate float).
MAX_DEPTH = 10**15

#: Slack of the Lemma 8 witness: ``gamma^(-1/2) |N_a| = (1 - slack) P_a``.
LEMMA8_WITNESS_SLACK = 1e-9


# --------------------------------------------------------------------------- validation


def require_beta(beta) -> float:
    """``beta`` as a float ``>= 0`` (LRP-beta, [P1] eq. (7)), else :class:`InputError`."""
    beta = require_real("beta", beta)
    if beta < 0:
        raise InputError(f"beta must be >= 0 (LRP-beta, [P1] eq. (7)), got {beta}")
    return beta


def require_gamma(gamma) -> float:
    """``gamma`` as a float ``> 1`` (Lemma 8's assumption), else :class:`InputError`."""
    gamma = require_real("gamma", gamma)
    if not gamma > 1:
        raise InputError(f"gamma must be > 1 (Lemma 8 needs gamma > 1), got {gamma}")
    return gamma


def require_depth(name: str, value) -> int:
    """A depth (number of layers ``n`` or depth ``t``): an int in ``[1, MAX_DEPTH]``, else :class:`InputError`."""
    v = require_int(name, value, minimum=1)
    if v > MAX_DEPTH:
        raise InputError(f"{name} must be <= 10^15, got a number with {len(str(v)) if v < 10**4000 else 'over 4000'} digits")
    return v


def require_bound(bound) -> str:
    """``"paper"`` (the paper's closed form) or ``"exact"`` (exact solution of its recursion)."""
    if bound not in ("paper", "exact"):
        raise InputError(f"bound must be 'paper' or 'exact', got {bound!r}")
    return bound


def require_positive(name: str, value) -> float:
    """A finite float ``> 0`` (e.g. a Lipschitz constant), else :class:`InputError` naming ``name``."""
    v = require_real(name, value)
    if not v > 0:
        raise InputError(f"{name} must be > 0, got {v}")
    return v


def _dim(name: str, value) -> int:
    return require_int(name, value, minimum=1)


def require_norms(weight_norms) -> list[float]:
    """A non-empty list of finite spectral norms ``>= 0`` ([P1] eq. (19)), else :class:`InputError`."""
    if isinstance(weight_norms, (str, bytes)) or not hasattr(weight_norms, "__iter__"):
        raise InputError(f"weight_norms must be a sequence of numbers, got {weight_norms!r}")
    norms = [require_real("weight norm", w) for w in weight_norms]
    if len(norms) == 0:
        raise InputError("weight_norms must contain at least one layer's norm")
    for w in norms:
        if w < 0:
            raise InputError(f"weight norms must be >= 0, got {w}")
    return norms


def _finite(value: float, what: str, variant: str) -> float:
    if not math.isfinite(value):
        raise InputError(f"{what} exceeds the float range; use {variant}")
    return float(value)


def _pow(base: float, exponent: int, what: str, variant: str) -> float:
    try:
        return _finite(base**exponent, what, variant)
    except OverflowError:
        raise InputError(f"{what} exceeds the float range; use {variant}") from None


def _log10(x: float) -> float:
    return math.log10(x) if x > 0 else -math.inf


def _ln1p(x: float) -> float:
    """``ln(1 + x)`` for ``x >= 0`` of any float size (``log1p`` of an overflowed ``2 beta`` is inf)."""
    if math.isfinite(x) and x < 1e300:
        return math.log1p(x)
    return math.log(x) + math.log1p(1.0 / x)


def _ln1p_2x(x: float) -> float:
    """``ln(1 + 2x)`` for ``x >= 0``, finite for every finite ``x``."""
    return math.log1p(2.0 * x) if x < 1e300 else math.log(2.0) + math.log(x) + math.log1p(0.5 / x)


# --------------------------------------------------------------------------- Section 4


def thm3_rayleigh_quotient(M) -> float:
    """Rayleigh quotient of ``M M^T`` at the unit vector ``1_S/sqrt(S)`` ([P1] Thm 3, eq. (17)).

    ``(1/S) 1_S^T M M^T 1_S = ||M^T 1_S||^2 / S``.  For a relevance-conserving
    ``M`` (every column sums to 1, eq. (16)) this is ``R/S``, hence
    ``sigma_max(M) >= sqrt(R/S)`` (:func:`thm3_value`).

    Note: Theorem 3 states that ``sqrt(R/S)`` *is* a singular value with singular
    vector ``1_S/sqrt(S)``.  Eq. (17) only computes the Rayleigh quotient;
    ``1_S`` is a singular vector only when ``M M^T 1_S`` is parallel to ``1_S``
    (e.g. ``M = [[1, .5], [0, .5]]`` conserves relevance, has singular values
    1.144 and 0.437, and neither is ``sqrt(2/2) = 1``).  What holds is the lower
    bound on the largest singular value.

    Parameters
    ----------
    M : array_like, shape (S, R)
        A transition matrix ``M[b, a] = Att(g_a, z_b)`` (eq. (13)).

    Returns
    -------
    float

    Raises
    ------
    InputError
        If ``M`` is not a finite, non-empty 2-d array.
    """
    M = np.asarray(M, dtype=np.float64)
    if M.ndim != 2 or M.size == 0:
        raise InputError(f"M must be a non-empty 2-d (S, R) matrix, got shape {M.shape}")
    if not np.all(np.isfinite(M)):
        raise InputError("M must be finite")
    col = M.sum(axis=0)  # M^T 1_S
    return float(col @ col) / M.shape[0]


def thm3_value(R, S) -> float:
    """``sqrt(R/S)``: the value of Theorem 3 ([P1] eq. (17)), a lower bound on
    ``sigma_max(M)`` for a relevance-conserving ``S x R`` matrix ``M``.

    Raises
    ------
    InputError
        Unless ``R, S`` are integers >= 1.
    """
    R, S = _dim("R", R), _dim("S", S)
    return math.sqrt(R / S)


def thm4_singular_value_bound(R, beta, form: str = "exact") -> float:
    """Upper bound on the singular values of an LRP-beta transition matrix ([P1] Thm 4).

    ``form="exact"``: ``sqrt(R) sqrt((1+beta)^2 + beta^2)`` (eq. (49));
    ``form="relaxed"``: ``sqrt(R) (1 + sqrt(2) beta)`` (eq. (50)), never smaller.
    The proof (eq. (42)-(48)) bounds ``v^T M M^T v <= sum_k ||M[:, k]||^2`` and
    each column norm by ``(1+beta)^2 + beta^2``; it does not need conservation.

    Parameters
    ----------
    R : int >= 1
        Output dimension of the layer.
    beta : float >= 0
    form : {"exact", "relaxed"}

    Raises
    ------
    InputError
        On invalid ``R``, ``beta`` or ``form``.
    """
    R, beta = _dim("R", R), require_beta(beta)
    if form == "exact":
        return math.sqrt(R) * math.sqrt((1.0 + beta) ** 2 + beta**2)
    if form == "relaxed":
        return math.sqrt(R) * (1.0 + math.sqrt(2.0) * beta)
    raise InputError(f"form must be 'exact' (eq. 49) or 'relaxed' (eq. 50), got {form!r}")


def cor5_singular_value_bound(R) -> float:
    """``sqrt(R)``: limit ``gamma -> oo`` of the LRP-gamma singular-value bound ([P1] Cor 5).

    Raises
    ------
    InputError
        Unless ``R`` is an integer >= 1.
    """
    return math.sqrt(_dim("R", R))


def eq19_gradient_norm_bound(weight_norms: Sequence[float], lipschitz) -> float:
    """``L^(n-1) prod_l ||W_l||_2``: bound on the gradient's norm ([P1] eq. (19)).

    Parameters
    ----------
    weight_norms : sequence of float >= 0
        Spectral norms ``||W_1||_2, ..., ||W_n||_2``; ``n = len(weight_norms)``.
    lipschitz : float > 0
        Lipschitz constant ``L`` of the activations.

    Raises
    ------
    InputError
        On invalid input or when the value exceeds the float range (use
        :func:`eq19_gradient_norm_bound_log10`).
    """
    norms, L = require_norms(weight_norms), require_positive("lipschitz", lipschitz)
    log = eq19_gradient_norm_bound_log10(norms, L)
    if log > 308:
        raise InputError("eq. (19) bound exceeds the float range; use eq19_gradient_norm_bound_log10")
    value = _pow(L, len(norms) - 1, "eq. (19) bound", "eq19_gradient_norm_bound_log10")
    for w in norms:
        value *= w
    return _finite(value, "eq. (19) bound", "eq19_gradient_norm_bound_log10")


def eq19_gradient_norm_bound_log10(weight_norms: Sequence[float], lipschitz) -> float:
    """``log10`` of :func:`eq19_gradient_norm_bound` (``-inf`` when a norm is 0)."""
    norms, L = require_norms(weight_norms), require_positive("lipschitz", lipschitz)
    return (len(norms) - 1) * math.log10(L) + sum(_log10(w) for w in norms)


def eq20_lrp_beta_product_bound(output_dims: Sequence[int], beta) -> float:
    """``(1 + sqrt(2) beta)^n prod_l sqrt(R_l)``: bound on the norm of the product
    of LRP-beta transition matrices ([P1] eq. (20), from Thm 4 eq. (50)).

    Parameters
    ----------
    output_dims : sequence of int >= 1
        ``R_1, ..., R_n``.
    beta : float >= 0

    Raises
    ------
    InputError
        On invalid input or float overflow (use :func:`eq20_lrp_beta_product_bound_log10`).
    """
    log = eq20_lrp_beta_product_bound_log10(output_dims, beta)
    if log > 308:
        raise InputError("eq. (20) bound exceeds the float range; use eq20_lrp_beta_product_bound_log10")
    dims, beta = [_dim("output dimension", R) for R in output_dims], require_beta(beta)
    value = (1.0 + math.sqrt(2.0) * beta) ** len(dims)
    for R in dims:
        value *= math.sqrt(R)
    return _finite(value, "eq. (20) bound", "eq20_lrp_beta_product_bound_log10")


def eq20_lrp_beta_product_bound_log10(output_dims: Sequence[int], beta) -> float:
    """``log10`` of :func:`eq20_lrp_beta_product_bound`."""
    if isinstance(output_dims, (str, bytes)) or not hasattr(output_dims, "__iter__"):
        raise InputError(f"output_dims must be a sequence of integers, got {output_dims!r}")
    dims, beta = [_dim("output dimension", R) for R in output_dims], require_beta(beta)
    if not dims:
        raise InputError("output_dims must contain at least one layer")
    return len(dims) * math.log10(1.0 + math.sqrt(2.0) * beta) + 0.5 * sum(math.log10(R) for R in dims)


# --------------------------------------------------------------------------- Lemma 7 / 8


@dataclass(frozen=True)
class SumBounds:
    """Bounds on the positive and negative relevance sums at one depth.

    Attributes
    ----------
    positive_upper : float
        Upper bound on ``P_t``, the sum of positive attribution entries.
    negative_lower : float
        Lower bound (``<= 0``) on the sum of negative entries, ``-N_t``.
    """

    positive_upper: float
    negative_lower: float

    def __post_init__(self):
        if not self.negative_lower <= 0:
            raise InputError(f"negative_lower must be <= 0, got {self.negative_lower}")
        if not self.positive_upper >= 0:
            raise InputError(f"positive_upper must be >= 0, got {self.positive_upper}")

    @property
    def value_range(self) -> float:
        """``positive_upper - negative_lower``: the Hoeffding range ``z_u - z_l``."""
        return self.positive_upper - self.negative_lower


@dataclass(frozen=True)
class SumBoundsLog10:
    """``log10`` of the two magnitudes of :class:`SumBounds` (``-inf`` for a zero bound).

    Attributes
    ----------
    positive_upper_log10 : float
        ``log10`` of the bound on ``P_t``.
    negative_magnitude_log10 : float
        ``log10`` of the bound on ``N_t = -negative_lower``; ``-inf`` when it is 0.
    """

    positive_upper_log10: float
    negative_magnitude_log10: float

    @property
    def value_range_log10(self) -> float:
        """``log10(P_t + N_t)``."""
        a, b = self.positive_upper_log10, self.negative_magnitude_log10
        hi, lo = max(a, b), min(a, b)
        if lo == -math.inf:
            return hi
        return hi + math.log10(1.0 + 10.0 ** (lo - hi))


def _exact_pair_log10(log_growth: float, ln_growth: float, t: int) -> SumBoundsLog10:
    # P_t = (g^t + 1)/2, N_t = (g^t - 1)/2 with g = 10**log_growth.
    if ln_growth == 0.0:
        return SumBoundsLog10(0.0, -math.inf)
    x = t * log_growth
    tail = 10.0 ** (-x) if x < 400 else 0.0
    p = x + math.log10(1.0 + tail) - _LOG10_2
    n = x + math.log10(-math.expm1(-t * ln_growth)) - _LOG10_2
    return SumBoundsLog10(p, n)


def lemma7_bounds(beta, t, bound: Bound = "paper") -> SumBounds:
    """Bounds on the positive and negative relevance sums at depth ``t`` under LRP-beta ([P1] Lemma 7).

    ``bound="paper"`` (eq. (28)): ``P_t <= 2^(t-1) (1+beta)^t`` and
    ``-N_t >= -2^(t-1) beta (1+beta)^(t-1)`` for ``beta > 0``; for ``beta = 0``
    the map lies in ``[0, 1]`` and sums to at most 1: ``(1, 0)``.

    ``bound="exact"``: the exact solution of the proof's recursion (eq. (86),
    (101)) ``P_t <= (1+beta) P_{t-1} + beta N_{t-1}``,
    ``N_t <= beta P_{t-1} + (1+beta) N_{t-1}``, ``P_0 = 1, N_0 = 0``:
    ``P_t = ((1+2beta)^t + 1)/2``, ``N_t = ((1+2beta)^t - 1)/2``.  It is attained
    by :func:`lemma7_witness`; for ``beta = 0`` it is ``(1, 0)`` as well.

    Parameters
    ----------
    beta : float >= 0
    t : int >= 1
        Depth (number of layers the relevance has passed).
    bound : {"paper", "exact"}

    Returns
    -------
    SumBounds

    Raises
    ------
    InputError
        On invalid input or float overflow (use :func:`lemma7_bounds_log10`).
    """
    beta, t, bound = require_beta(beta), require_depth("t", t), require_bound(bound)
    v = "lemma7_bounds_log10"
    if bound == "paper":
        if beta == 0:
            return SumBounds(1.0, 0.0)
        p = _pow(2.0, t - 1, "Lemma 7 bound", v) * _pow(1.0 + beta, t, "Lemma 7 bound", v)
        n = _pow(2.0, t - 1, "Lemma 7 bound", v) * beta * _pow(1.0 + beta, t - 1, "Lemma 7 bound", v)
        return SumBounds(_finite(p, "Lemma 7 bound", v), -_finite(n, "Lemma 7 bound", v))
    g = _pow(1.0 + 2.0 * beta, t, "Lemma 7 bound", v)
    n = math.expm1(t * math.log1p(2.0 * beta)) if g < 2.0 else g - 1.0
    return SumBounds((g + 1.0) / 2.0, 0.0 - n / 2.0)


def lemma7_bounds_log10(beta, t, bound: Bound = "paper") -> SumBoundsLog10:
    """:func:`lemma7_bounds` in ``log10`` space (any depth, no overflow).

    Paper: ``(t-1) log10 2 + t log10(1+beta)`` and
    ``(t-1) log10 2 + log10 beta + (t-1) log10(1+beta)``; exact:
    ``log10(((1+2beta)^t +- 1)/2)``.  A zero bound is ``-inf``.
    """
    beta, t, bound = require_beta(beta), require_depth("t", t), require_bound(bound)
    if bound == "paper":
        if beta == 0:
            return SumBoundsLog10(0.0, -math.inf)
        lb = _ln1p(beta) / math.log(10.0)
        return SumBoundsLog10((t - 1) * _LOG10_2 + t * lb, (t - 1) * _LOG10_2 + math.log10(beta) + (t - 1) * lb)
    ln_g = _ln1p_2x(beta)
    return _exact_pair_log10(ln_g / math.log(10.0), ln_g, t)


def lemma8_coefficients(gamma) -> tuple[float, float]:
    """``(c_plus, c_minus)`` of the LRP-gamma step under condition (29) ([P1] eq. (139), (188)-(189)).

    ``c_plus = (1+gamma)/(1+gamma-sqrt(gamma))`` bounds the same-sign transfer,
    ``c_minus = sqrt(gamma)/(1+gamma-sqrt(gamma))`` the sign-flipping transfer
    of one layer; ``c_plus - c_minus = 1``.

    Raises
    ------
    InputError
        Unless ``gamma > 1``.
    """
    gamma = require_gamma(gamma)
    s = math.sqrt(gamma)
    d = 1.0 + gamma - s
    return (1.0 + gamma) / d, s / d


def lemma8_b(gamma) -> float:
    """``b(gamma) = max(1/(sqrt(gamma)-1), (1+gamma)/(1+gamma-sqrt(gamma)))`` ([P1] Lemma 8, eq. (30)).

    It equals ``c_plus`` for ``gamma >= 2.383...`` (root of
    ``s^3 - 2 s^2 + 2 s - 2 = 0`` in ``s = sqrt(gamma)``); the paper states
    ``gamma >= 4``, which is sufficient but not sharp.

    Raises
    ------
    InputError
        Unless ``gamma > 1``.
    """
    gamma = require_gamma(gamma)
    c_plus, _ = lemma8_coefficients(gamma)
    return max(1.0 / (math.sqrt(gamma) - 1.0), c_plus)


def lemma8_bounds(gamma, t, bound: Bound = "paper") -> SumBounds:
    """Bounds on the positive and negative relevance sums at depth ``t`` under LRP-gamma ([P1] Lemma 8).

    Valid when condition (29) holds in every layer (:func:`condition29`).

    ``bound="paper"`` (eq. (30)): ``P_t <= 2^(t-1) c_plus b^(t-1)``,
    ``-N_t >= -2^(t-1) b^(t-1)/(sqrt(gamma)-1)`` with ``b = lemma8_b(gamma)``.

    ``bound="exact"``: the exact solution of the recursion
    ``P_t <= c_plus P_{t-1} + c_minus N_{t-1}``,
    ``N_t <= c_minus P_{t-1} + c_plus N_{t-1}`` (``P_0 = 1, N_0 = 0``):
    ``P_t = ((1+2c_minus)^t + 1)/2``, ``N_t = ((1+2c_minus)^t - 1)/2``.  The
    supremum, approached by :func:`lemma8_witness` (not attained, since (29) is
    strict).

    Parameters
    ----------
    gamma : float > 1
    t : int >= 1
    bound : {"paper", "exact"}

    Raises
    ------
    InputError
        On invalid input or float overflow (use :func:`lemma8_bounds_log10`).
    """
    gamma, t, bound = require_gamma(gamma), require_depth("t", t), require_bound(bound)
    v = "lemma8_bounds_log10"
    c_plus, c_minus = lemma8_coefficients(gamma)
    if bound == "paper":
        b = lemma8_b(gamma)
        scale = _pow(2.0, t - 1, "Lemma 8 bound", v) * _pow(b, t - 1, "Lemma 8 bound", v)
        p = _finite(scale * c_plus, "Lemma 8 bound", v)
        n = _finite(scale / (math.sqrt(gamma) - 1.0), "Lemma 8 bound", v)
        return SumBounds(p, -n)
    g = _pow(1.0 + 2.0 * c_minus, t, "Lemma 8 bound", v)
    n = math.expm1(t * math.log1p(2.0 * c_minus)) if g < 2.0 else g - 1.0
    return SumBounds((g + 1.0) / 2.0, 0.0 - n / 2.0)


def lemma8_bounds_log10(gamma, t, bound: Bound = "paper") -> SumBoundsLog10:
    """:func:`lemma8_bounds` in ``log10`` space (any depth, no overflow)."""
    gamma, t, bound = require_gamma(gamma), require_depth("t", t), require_bound(bound)
    c_plus, c_minus = lemma8_coefficients(gamma)
    if bound == "paper":
        lb = math.log10(lemma8_b(gamma))
        base = (t - 1) * (_LOG10_2 + lb)
        return SumBoundsLog10(base + math.log10(c_plus), base - math.log10(math.sqrt(gamma) - 1.0))
    ln_g = math.log1p(2.0 * c_minus)
    return _exact_pair_log10(ln_g / math.log(10.0), ln_g, t)


# --------------------------------------------------------------------------- condition (29)


@dataclass(frozen=True)
class Condition29:
    """Condition (29) of Lemma 8 evaluated per output of one layer.

    Attributes
    ----------
    holds : ndarray of bool
        Per output: (29) holds, or is not applicable (no positive part).
    applicable : ndarray of bool
        Per output: ``P_a = sum_b (y_ab)_+ > 0``.
    margin : ndarray of float
        ``P_a - gamma^(-1/2) |N_a|``; (29) holds for an applicable output iff
        ``margin > 0``.
    """

    holds: np.ndarray
    applicable: np.ndarray
    margin: np.ndarray

    @property
    def all_hold(self) -> bool:
        """Whether (29) holds for every applicable output."""
        return bool(np.all(self.holds))


def condition29_pos_neg(pos, neg, gamma) -> Condition29:
    """Condition (29) from per-output sums: ``gamma^(-1/2) |N_a| < P_a`` wherever ``P_a > 0``.

    Parameters
    ----------
    pos : array_like
        ``P_a = sum_{b: y_ab > 0} y_ab >= 0`` per output (any shape).
    neg : array_like, same shape
        ``N_a = sum_{b: y_ab < 0} y_ab <= 0`` per output.
    gamma : float > 1

    Returns
    -------
    Condition29

    Raises
    ------
    InputError
        On mismatched shapes, non-finite values, ``pos < 0``, ``neg > 0`` or
        ``gamma <= 1``.

    References
    ----------
    [P1] Lemma 8, eq. (29).
    """
    gamma = require_gamma(gamma)
    pos = np.asarray(pos, dtype=np.float64)
    neg = np.asarray(neg, dtype=np.float64)
    if pos.shape != neg.shape:
        raise InputError(f"pos and neg must have the same shape, got {pos.shape} and {neg.shape}")
    if not (np.all(np.isfinite(pos)) and np.all(np.isfinite(neg))):
        raise InputError("pos and neg must be finite")
    if np.any(pos < 0) or np.any(neg > 0):
        raise InputError("pos must be >= 0 and neg must be <= 0")
    applicable = pos > 0
    margin = pos - np.abs(neg) / math.sqrt(gamma)
    holds = ~applicable | (margin > 0)
    return Condition29(holds=holds, applicable=applicable, margin=margin)


def condition29(W, z, gamma) -> Condition29:
    """Condition (29) for the layer ``g(z) = W z + b`` at input ``z`` ([P1] Lemma 8).

    Uses :func:`boundcheck.rules.positive_negative_sums` for ``P_a`` and ``N_a``
    of ``y_ab = w_ab z_b``, then :func:`condition29_pos_neg`.
    """
    pos, neg = positive_negative_sums(W, z)
    return condition29_pos_neg(pos, neg, gamma)


def condition29_min_gamma(W, z) -> float:
    """Infimum of the ``gamma`` for which Lemma 8's assumptions hold in this layer.

    (29) holds for output ``a`` iff ``gamma > (|N_a|/P_a)^2`` (any gamma when
    ``N_a = 0``), so the infimum over the applicable outputs is
    ``max_a (|N_a|/P_a)^2``.  Lemma 8 also needs ``gamma > 1``; the result is
    ``max(max_a (|N_a|/P_a)^2, 1.0)`` (1.0 when no output is applicable).  Both
    inequalities are strict: every gamma *strictly* above the returned value
    satisfies the lemma's assumptions for this layer; the value itself may not.
    """
    pos, neg = positive_negative_sums(W, z)
    applicable = pos > 0
    if not np.any(applicable):
        return 1.0
    ratio = np.abs(neg[applicable]) / pos[applicable]
    return max(float(np.max(ratio**2)), 1.0)


# --------------------------------------------------------------------------- eq. (31)-(33)


def eq31_value_range(beta, n, bound: Bound = "paper") -> float:
    """Hoeffding value range ``z_u - z_l`` for LRP-beta over ``n`` layers ([P1] eq. (31)).

    Paper: ``2^(n-1) (1+2beta) (1+beta)^(n-1)`` for ``beta > 0``, 1 for
    ``beta = 0``; exact: ``(1+2beta)^n`` (``P_n + N_n`` of the exact Lemma 7
    solution).

    Raises
    ------
    InputError
        On invalid input or float overflow (use :func:`eq31_value_range_log10`).
    """
    beta, n, bound = require_beta(beta), require_depth("n", n), require_bound(bound)
    v = "eq31_value_range_log10"
    if bound == "exact":
        return _pow(1.0 + 2.0 * beta, n, "eq. (31) range", v)
    if beta == 0:
        return 1.0
    r = _pow(2.0, n - 1, "eq. (31) range", v) * (1.0 + 2.0 * beta) * _pow(1.0 + beta, n - 1, "eq. (31) range", v)
    return _finite(r, "eq. (31) range", v)


def eq31_value_range_log10(beta, n, bound: Bound = "paper") -> float:
    """``log10`` of :func:`eq31_value_range`: exact ``n log10(1+2beta)``; paper
    ``(n-1) log10 2 + log10(1+2beta) + (n-1) log10(1+beta)`` (0 for ``beta = 0``)."""
    beta, n, bound = require_beta(beta), require_depth("n", n), require_bound(bound)
    ln10 = math.log(10.0)
    if bound == "exact":
        return n * _ln1p_2x(beta) / ln10
    if beta == 0:
        return 0.0
    return (n - 1) * _LOG10_2 + _ln1p_2x(beta) / ln10 + (n - 1) * _ln1p(beta) / ln10


def eq33_value_range(gamma, n, bound: Bound = "paper") -> float:
    """Hoeffding value range ``z_u - z_l`` for LRP-gamma over ``n`` layers ([P1] eq. (33)).

    Paper: ``2^(n-1) b^(n-1) (c_plus + 1/(sqrt(gamma)-1))``; exact:
    ``(1+2 c_minus)^n = ((1+gamma+sqrt(gamma))/(1+gamma-sqrt(gamma)))^n``.
    Valid under condition (29) in every layer.

    Raises
    ------
    InputError
        On invalid input (``gamma <= 1``) or float overflow (use
        :func:`eq33_value_range_log10`).
    """
    gamma, n, bound = require_gamma(gamma), require_depth("n", n), require_bound(bound)
    v = "eq33_value_range_log10"
    c_plus, c_minus = lemma8_coefficients(gamma)
    if bound == "exact":
        return _pow(1.0 + 2.0 * c_minus, n, "eq. (33) range", v)
    b = lemma8_b(gamma)
    r = _pow(2.0 * b, n - 1, "eq. (33) range", v) * (c_plus + 1.0 / (math.sqrt(gamma) - 1.0))
    return _finite(r, "eq. (33) range", v)


def eq33_value_range_log10(gamma, n, bound: Bound = "paper") -> float:
    """``log10`` of :func:`eq33_value_range` (any depth)."""
    gamma, n, bound = require_gamma(gamma), require_depth("n", n), require_bound(bound)
    c_plus, c_minus = lemma8_coefficients(gamma)
    if bound == "exact":
        return n * math.log1p(2.0 * c_minus) / math.log(10.0)
    b = lemma8_b(gamma)
    return (n - 1) * math.log10(2.0 * b) + math.log10(c_plus + 1.0 / (math.sqrt(gamma) - 1.0))


def eq32_gradient_range(weight_norms: Sequence[float], lipschitz) -> float:
    """``2 L^(n-1) prod_l ||W_l||_2``: Hoeffding range for a gradient entry ([P1] eq. (32)).

    Twice :func:`eq19_gradient_norm_bound` (an entry lies in ``[-G, G]``).

    Raises
    ------
    InputError
        On invalid input or float overflow (use :func:`eq32_gradient_range_log10`).
    """
    log = eq32_gradient_range_log10(weight_norms, lipschitz)
    if log > 308:
        raise InputError("eq. (32) range exceeds the float range; use eq32_gradient_range_log10")
    return _finite(2.0 * eq19_gradient_norm_bound(weight_norms, lipschitz), "eq. (32) range", "eq32_gradient_range_log10")


def eq32_gradient_range_log10(weight_norms: Sequence[float], lipschitz) -> float:
    """``log10`` of :func:`eq32_gradient_range` (``-inf`` when a norm is 0)."""
    return _LOG10_2 + eq19_gradient_norm_bound_log10(weight_norms, lipschitz)


# --------------------------------------------------------------------------- Known Result 9


def kr9_paper_expected_norm(R, sigma) -> float:
    """The paper's ``E||W||_2 = sqrt(R) sigma`` for ``R`` iid ``N(0, sigma^2)`` entries ([P1] Known Result 9).

    This is wrong: it is ``sqrt(E||W||^2)``, which by Jensen strictly exceeds
    ``E||W||`` (see :func:`kr9_exact_expected_norm`); the ratio tends to 1 as
    ``R -> oo`` (``1 - 1/(4R) + O(R^-2)``).

    Raises
    ------
    InputError
        Unless ``R >= 1`` is an integer and ``sigma > 0``.
    """
    R, sigma = _dim("R", R), require_positive("sigma", sigma)
    return math.sqrt(R) * sigma


def kr9_exact_expected_norm(R, sigma) -> float:
    """Exact ``E||W||_2 = sigma sqrt(2) Gamma((R+1)/2) / Gamma(R/2)`` (chi distribution mean).

    Computed with ``scipy.special.gammaln`` (imported here only) for
    ``R < 2000`` and with the asymptotic series of ``Gamma(x+1/2)/Gamma(x)``
    (error ``O(R^-5)``, below float resolution) above, so it stays accurate for
    huge ``R`` (a difference of two huge ``gammaln`` values would not).  Corrects [P1] Known Result 9 (:func:`kr9_paper_expected_norm`).

    Raises
    ------
    InputError
        Unless ``R >= 1`` is an integer and ``sigma > 0``.
    """
    R, sigma = _dim("R", R), require_positive("sigma", sigma)
    x = R / 2.0
    if x >= 1000.0:
        # Gamma(x+1/2)/Gamma(x) = sqrt(x) (1 - 1/(8x) + 1/(128x^2) + 5/(1024x^3) - 21/(32768x^4) + O(x^-5)):
        # the difference of two huge gammaln values would lose ~log10(x ln x) digits.
        u = 1.0 / x
        ratio = math.sqrt(x) * (1.0 - u / 8.0 + u**2 / 128.0 + 5.0 * u**3 / 1024.0 - 21.0 * u**4 / 32768.0)
    else:
        from scipy.special import gammaln

        ratio = math.exp(float(gammaln(x + 0.5) - gammaln(x)))
    return sigma * math.sqrt(2.0) * ratio


# --------------------------------------------------------------------------- witnesses


def _binary_tree_network(depth: int, negative_weight: float):
    """Layers of a ReLU net whose layer ``n-t+1`` has ``2^(t-1)`` outputs and ``2^t``
    inputs; output ``a`` reads input ``2a`` with weight +1 and input ``2a+1`` with
    weight ``-negative_weight``; bias ``negative_weight`` so every activation is 1."""
    layers = []
    for k in range(depth, 0, -1):  # layer index from input side: width 2^k -> 2^(k-1)
        R, S = 2 ** (k - 1), 2**k
        W = np.zeros((R, S))
        idx = np.arange(R)
        W[idx, 2 * idx] = 1.0
        W[idx, 2 * idx + 1] = -negative_weight
        layers.append((W, np.full(R, negative_weight)))
    x = np.ones(2**depth)
    q = np.ones(1)
    return layers, x, q


def _witness_depth(depth) -> int:
    depth = require_int("depth", depth, minimum=1)
    if depth > 12:
        raise InputError(f"depth must be <= 12 (width 2^depth), got {depth}")
    return depth


def lemma7_witness(beta, depth):
    """A ReLU network on which LRP-beta attains the exact Lemma 7 bound at every depth.

    Construction: ``depth`` layers; layer ``n-t+1`` maps ``2^t`` inputs to
    ``2^(t-1)`` outputs; output ``a`` reads input ``2a`` with weight +1 and
    input ``2a+1`` with weight -1 (disjoint inputs), bias +1, input ``x = 1``,
    so every activation is 1.  With the bias kept out of the backward pass
    (``Conventions(bias="forward_only")``, the default), each output sends
    ``(1+beta) v`` to its positive input and ``-beta v`` to its negative one;
    no two relevances meet, so positive and negative relevance never cancel and
    ``P_t = (1+beta) P_{t-1} + beta N_{t-1}``, ``N_t = beta P_{t-1} + (1+beta) N_{t-1}``
    hold with equality: ``P_t = ((1+2beta)^t + 1)/2``, ``N_t = ((1+2beta)^t - 1)/2``.

    Parameters
    ----------
    beta : float >= 0
    depth : int in [1, 12]

    Returns
    -------
    layers : list of (W, b)
        For :func:`boundcheck.rules.forward_chain` / ``chained_attribution``.
    x : ndarray, shape (2^depth,)
    q : ndarray, shape (1,)
    """
    require_beta(beta)
    return _binary_tree_network(_witness_depth(depth), 1.0)


def lemma8_witness(gamma, depth, slack: float = LEMMA8_WITNESS_SLACK):
    """A ReLU network satisfying (29) on which LRP-gamma approaches the exact Lemma 8 bound.

    Same binary tree as :func:`lemma7_witness`, but the negative weight is
    ``-a`` with ``a = (1 - slack) sqrt(gamma)``, so each output has
    ``P_a = 1`` and ``gamma^(-1/2) |N_a| = 1 - slack < 1 = P_a``: condition (29)
    holds (it is strict, so ``slack = 0`` is excluded and the supremum is not
    attained).  Each output sends ``(1+gamma)/(1+gamma-a) v`` to its positive and
    ``-a/(1+gamma-a) v`` to its negative input; as ``slack -> 0`` these tend to
    ``c_plus`` and ``c_minus`` and the sums to ``((1+2c_minus)^t +- 1)/2``
    (relative shortfall ``O(t slack)``).

    Parameters
    ----------
    gamma : float > 1
    depth : int in [1, 12]
    slack : float in (0, 1)

    Returns
    -------
    layers, x, q
        As :func:`lemma7_witness`.
    """
    gamma = require_gamma(gamma)
    slack = require_real("slack", slack)
    if not 0 < slack < 1:
        raise InputError(f"slack must be in (0, 1) (condition (29) is strict), got {slack}")
    return _binary_tree_network(_witness_depth(depth), (1.0 - slack) * math.sqrt(gamma))


def relevance_sums(r) -> tuple[float, float]:
    """``(P, N)``: sum of positive entries and magnitude of the sum of negative entries of ``r``."""
    r = np.asarray(r, dtype=np.float64)
    return float(r[r > 0].sum()), float(-r[r < 0].sum())
