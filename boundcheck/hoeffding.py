"""Hoeffding deviation and sample size ([P1] eq. (22)-(24)) and an l2 bound for s1 (eq. (38)).

Pure standard library (``math``, ``decimal``): importing this module imports no
numpy, scipy, sympy or torch, so the ``samples``/``deviation`` commands start
fast.

Known Result 6 ([P1] eq. (22)): for iid ``Z_i`` in ``[z_l, z_u]`` with
``r = z_u - z_l``, ``P(|mean - E Z| >= t) <= 2 exp(-2 t^2 m / r^2)``; so with
probability at least ``1 - delta``

* ``t = r sqrt(ln(2/delta)/2) / sqrt(m)``  (eq. (23)), and
* ``m = r^2 ln(2/delta) / (2 t^2)``        (eq. (24)) samples suffice.

For a whole attribution map with ``D`` entries, requiring every entry to be
within ``t`` simultaneously, the union bound replaces ``delta`` by
``delta / D`` (``components=D``).

Huge values: the LRP-beta paper range for 50 layers and ``beta = 1`` is about
``1e30``, giving ``m ~ 1e64``; ``m`` is computed with :mod:`decimal` at a
precision of ``(digits of m) + 40`` and rounded up to an exact Python ``int``.
The range may be given as ``value_range_log10`` when it exceeds the float range.
"""

from __future__ import annotations

import math
import numbers
from decimal import MAX_EMAX, MIN_EMIN, ROUND_CEILING, Context, Decimal
from fractions import Fraction

from boundcheck.errors import InputError, require_int, require_real


#: Sample sizes up to ``10**EXACT_DIGITS`` are exact ceilings (Decimal ln at that precision is fast).
EXACT_DIGITS = 1000

#: :func:`hoeffding_samples` returns an ``int`` only up to this many digits (above it, use
#: :func:`hoeffding_samples_log10` or :func:`scientific_upper`: the digits would be
#: megabytes of output).
MAX_INT_DIGITS = 100_000


# --------------------------------------------------------------------------- validation


def _delta(delta) -> float:
    delta = require_real("delta", delta)
    if not 0 < delta < 1:
        raise InputError(f"delta must be in (0, 1), got {delta}")
    return delta


def _components(components) -> int:
    return require_int("components", components, minimum=1)


def _m(m) -> int:
    if isinstance(m, float) and m.is_integer():
        m = int(m)
    return require_int("m", m, minimum=1)


def _t(t) -> float:
    t = require_real("t", t)
    if not t > 0:
        raise InputError(f"t must be > 0, got {t}")
    return t


def _range_log10(value_range, value_range_log10) -> float:
    """log10 of the value range from exactly one of the two arguments.

    ``value_range`` may be a float, an int or a :class:`fractions.Fraction` of any size.
    """
    if (value_range is None) == (value_range_log10 is None):
        raise InputError("give exactly one of value_range and value_range_log10")
    if value_range is not None:
        if isinstance(value_range, (int, Fraction)) and not isinstance(value_range, bool):
            r = Fraction(value_range)
            if not r > 0:
                raise InputError(f"value_range must be > 0, got {r}")
            return math.log10(r.numerator) - math.log10(r.denominator)
        r = require_real("value_range", value_range)
        if not r > 0:
            raise InputError(f"value_range must be > 0, got {r}")
        return math.log10(r)
    return require_real("value_range_log10", value_range_log10)


def _decimal(x, ctx: Context) -> Decimal:
    """A float, int or Fraction as a Decimal: exact for floats and ints, rounded by ``ctx`` for a Fraction."""
    if isinstance(x, Fraction):
        return ctx.divide(Decimal(x.numerator), Decimal(x.denominator))
    if isinstance(x, numbers.Integral):
        return Decimal(int(x))
    return Decimal(float(x))  # exact binary value of the float


def _range_decimal(value_range, value_range_log10, ctx: Context) -> Decimal:
    if value_range is not None:
        return _decimal(value_range, ctx)
    return ctx.power(Decimal(10), Decimal(repr(float(value_range_log10))))


def _context(prec: int, **kw) -> Context:
    """A Decimal context of precision ``prec`` with the widest exponent range (no Overflow)."""
    return Context(prec=prec, Emax=MAX_EMAX, Emin=MIN_EMIN, **kw)


def _ln_term(delta: float, components: int) -> float:
    """``ln(2 D / delta)`` (eq. (23)/(24) with the union bound), finite for subnormal
    ``delta`` and ``D`` of any size."""
    try:
        ratio = 2.0 * components / delta
    except OverflowError:  # D beyond the float range
        ratio = math.inf
    if math.isfinite(ratio):
        return math.log(ratio)
    return math.log(2 * int(components)) - math.log(delta)


# --------------------------------------------------------------------------- eq. (23)


def hoeffding_deviation_log10(delta, m, value_range=None, components=1, *, value_range_log10=None) -> float:
    """``log10`` of :func:`hoeffding_deviation` (for ranges beyond the float range)."""
    delta, m, components = _delta(delta), _m(m), _components(components)
    lr = _range_log10(value_range, value_range_log10)
    return lr + 0.5 * math.log10(_ln_term(delta, components) / 2.0) - 0.5 * math.log10(m)


def hoeffding_deviation(delta, m, value_range=None, components=1, *, value_range_log10=None) -> float:
    """Deviation ``t`` reached with probability ``>= 1 - delta`` by a mean of ``m`` samples ([P1] eq. (23)).

    ``t = r sqrt(ln(2 D/delta)/2) / sqrt(m)`` with ``r = z_u - z_l`` and the
    union bound over ``D = components`` entries (``D = 1``: eq. (23) as printed).

    Parameters
    ----------
    delta : float in (0, 1)
    m : int >= 1
    value_range : float > 0, optional
        ``r``; alternatively ``value_range_log10 = log10(r)`` (keyword).
    components : int >= 1

    Returns
    -------
    float

    Raises
    ------
    InputError
        On invalid input, or when ``t`` exceeds the float range (use
        :func:`hoeffding_deviation_log10`).
    """
    log_t = hoeffding_deviation_log10(delta, m, value_range, components, value_range_log10=value_range_log10)
    if log_t > 308:
        raise InputError("t exceeds the float range; use hoeffding_deviation_log10")
    if value_range is not None and int(m) < 2**1000 and abs(_range_log10(value_range, None)) < 300:
        t = float(value_range) * math.sqrt(_ln_term(float(delta), int(components)) / 2.0) / math.sqrt(int(m))
        if math.isfinite(t) and t > 0:
            return t
    return 10.0**log_t


# --------------------------------------------------------------------------- eq. (24)


def hoeffding_samples_log10(t, delta, value_range=None, components=1, *, value_range_log10=None) -> float:
    """``log10`` of the (real, un-rounded) sample size of eq. (24): never overflows."""
    t, delta, components = _t(t), _delta(delta), _components(components)
    lr = _range_log10(value_range, value_range_log10)
    return 2.0 * lr + math.log10(_ln_term(delta, components) / 2.0) - 2.0 * math.log10(t)


def hoeffding_samples(t, delta, value_range=None, components=1, *, value_range_log10=None) -> int:
    """Number of samples ``m`` for deviation ``t`` with probability ``>= 1 - delta`` ([P1] eq. (24)).

    ``m = ceil(r^2 ln(2 D/delta) / (2 t^2))`` with ``r = z_u - z_l`` and the
    union bound over ``D = components`` entries, rounded *up* to an ``int``.
    Computed with :mod:`decimal` at ``(digits of m) + 40`` significant digits,
    so the returned integer is the exact ceiling (for the given float inputs)
    whenever ``m <= 10**EXACT_DIGITS``; above that (e.g. depth 10,000) it is an
    upper bound equal to the exact value in its leading 30 digits (computed at
    40 digits and rounded *up* at the 30th), still a sufficient sample size.
    It never overflows.

    Parameters
    ----------
    t : float > 0
    delta : float in (0, 1)
    value_range : float, int or Fraction > 0, optional
        ``r``; alternatively ``value_range_log10 = log10(r)`` (keyword), for
        ranges beyond the float range.  A :class:`fractions.Fraction` (an exact
        rational range) is used exactly.
    components : int >= 1

    Returns
    -------
    int
        At least 1.

    Raises
    ------
    InputError
        On invalid input (``t <= 0``, ``delta`` outside ``(0, 1)``,
        ``value_range <= 0``, ``components < 1``, both or neither range given),
        or when ``m`` has more than :data:`MAX_INT_DIGITS` digits (use
        :func:`hoeffding_samples_log10` and :func:`scientific_upper`).
    """
    log_m = hoeffding_samples_log10(t, delta, value_range, components, value_range_log10=value_range_log10)
    if log_m >= MAX_INT_DIGITS:
        raise InputError(
            f"m has about {format_log10(math.log10(log_m), 3)} digits (more than {MAX_INT_DIGITS}); "
            "use hoeffding_samples_log10"
        )
    exact = log_m <= EXACT_DIGITS
    digits = (max(int(math.ceil(log_m)), 1) if exact else 0) + 40
    ctx = _context(digits)
    r = _range_decimal(value_range, value_range_log10, ctx)
    ln = ctx.ln(ctx.divide(Decimal(2 * int(components)), Decimal(float(delta))))
    td = Decimal(float(t))
    value = ctx.divide(ctx.multiply(ctx.multiply(r, r), ln), ctx.multiply(Decimal(2), ctx.multiply(td, td)))
    if not exact:
        # 40 significant digits computed, rounded up at 30: an upper bound on the exact ceiling.
        value = _context(30, rounding=ROUND_CEILING).plus(value)
    m = int(value.to_integral_value(rounding=ROUND_CEILING))
    return max(m, 1)


def scientific_upper(log10_value: float, digits: int = 6) -> str:
    """``10**log10_value`` in scientific notation, rounded *up* at ``digits`` significant digits.

    For numbers known only through a float ``log10`` (e.g. a sample size with
    millions of digits): a relative slack of ``16 eps |log10_value|`` covers the
    rounding of the logarithm, so the printed value is an upper bound.
    """
    lv = require_real("log10_value", log10_value)
    lv += 16 * 2.0**-52 * max(abs(lv), 1.0)
    e = math.floor(lv)
    mant = math.ceil(10.0 ** (lv - e + digits - 1)) / 10.0 ** (digits - 1)
    if mant >= 10.0:
        mant, e = mant / 10.0, e + 1
    return f"{mant:.{digits - 1}f}e{e:+d}"


def int_to_str(value: int) -> str:
    """Decimal digits of an int of any size (``str(int)`` refuses more than 4300 digits)."""
    v = int(value)
    if abs(v) < 10**4000:
        return str(v)
    return "{:f}".format(Context(prec=len_digits(v) + 5).create_decimal(v))


def len_digits(value: int) -> int:
    """Number of decimal digits of ``|value|`` (at least 1), without ``str``."""
    v = abs(int(value))
    if v == 0:
        return 1
    n = int(v.bit_length() * 0.30102999566398120) + 1
    while 10 ** (n - 1) > v:
        n -= 1
    while 10**n <= v:
        n += 1
    return n


# --------------------------------------------------------------------------- s1, eq. (38)


def l2_deviation_bound(delta, m, norm_bound) -> float:
    """High-probability bound on ``s1 = ||mean of m maps - mean of m other maps||_2`` ([P1] eq. (38)).

    With probability at least ``1 - delta``::

        s1 <= 2 B (1 + sqrt(2 ln(2/delta))) / sqrt(m)

    where ``B >= ||A||_2`` almost surely.  Inequalities used:

    1. The bound ``B``: for LRP, ``||A||_2 <= ||A||_1 <= P_n + N_n``, the value
       range of Lemma 7/8 (eq. (31)/(33)); for the gradient,
       ``||A||_2 <= L^(n-1) prod ||W_l||_2`` (eq. (19)).
    2. Triangle inequality (eq. (35)-(36)):
       ``s1 <= ||X1 - EX|| + ||X2 - EX||`` for the two independent means.
    3. Jensen and independence: ``E||Xbar - EX|| <= sqrt(E||Xbar - EX||^2)
       = sqrt(E||A - EA||^2 / m) <= sqrt(E||A||^2 / m) <= B / sqrt(m)``.
    4. McDiarmid: ``f = ||Xbar - EX||`` changes by at most ``2B/m`` when one
       sample changes, so ``P(f - E f >= eps) <= exp(-eps^2 m / (2 B^2))``;
       with ``delta/2`` this gives ``f <= B (1 + sqrt(2 ln(2/delta))) / sqrt(m)``
       with probability ``>= 1 - delta/2``.
    5. Union bound over the two means: probability ``>= 1 - delta``.

    Parameters
    ----------
    delta : float in (0, 1)
    m : int >= 1
        Samples per mean (``2m`` maps in all).
    norm_bound : float > 0
        ``B``.

    Raises
    ------
    InputError
        On invalid input or float overflow.
    """
    delta, m = _delta(delta), _m(m)
    B = require_real("norm_bound", norm_bound)
    if not B > 0:
        raise InputError(f"norm_bound must be > 0, got {B}")
    if not -300 < l2_deviation_bound_log10(delta, m, math.log10(B)) < 300:
        raise InputError("the l2 bound exceeds the float range; use l2_deviation_bound_log10")
    if m >= 2**1000:  # beyond the float range; the bound itself is representable
        return 10.0 ** l2_deviation_bound_log10(delta, m, math.log10(B))
    value = 2.0 * B * (1.0 + math.sqrt(2.0 * _ln_term(delta, 1))) / math.sqrt(m)
    if not math.isfinite(value):
        raise InputError("the l2 bound exceeds the float range; use l2_deviation_bound_log10")
    return value


def l2_deviation_bound_log10(delta, m, norm_bound_log10) -> float:
    """``log10`` of :func:`l2_deviation_bound` given ``log10(B)``."""
    delta, m = _delta(delta), _m(m)
    lb = require_real("norm_bound_log10", norm_bound_log10)
    return math.log10(2.0) + lb + math.log10(1.0 + math.sqrt(2.0 * _ln_term(delta, 1))) - 0.5 * math.log10(m)


# --------------------------------------------------------------------------- formatting


def format_log10(log10_value: float, digits: int = 3) -> str:
    """Scientific notation of ``10**log10_value`` without overflow, e.g. ``"1.23e+64"``."""
    if log10_value == -math.inf:
        return "0"
    e = math.floor(log10_value)
    mant = 10.0 ** (log10_value - e)
    if round(mant, digits - 1) >= 10.0:
        mant, e = mant / 10.0, e + 1
    return f"{mant:.{digits - 1}f}e{e:+03d}"


def format_number(value, digits: int = 3) -> str:
    """An int below 1e6 as is; otherwise (or a float) scientific notation; exact for huge ints."""
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        v = int(value)
        if abs(v) < 10**6:
            return str(v)
        # round the exact decimal value itself: no float conversion for huge ints
        d = Context(prec=len_digits(v) + 5).create_decimal(abs(v))
        txt = f"{d:.{digits - 1}e}"
        mant, exp = txt.split("e")
        return f"{'-' if v < 0 else ''}{mant}e{int(exp):+03d}"
    v = float(value)
    if v == 0:
        return "0"
    if 1e-3 <= abs(v) < 1e6:
        return f"{v:.{digits + 1}g}"
    return f"{v:.{digits - 1}e}"
