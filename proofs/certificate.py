"""Certificate data structures and the exact decision helpers shared by all proofs.

Every status in a :class:`Step` is the outcome of a sympy computation made by
one of the helpers below (or by the proof module itself): an identity is
``simplify(lhs - rhs) == 0``, a sign is decided on assumption-constrained
symbols (``is_nonnegative`` after factoring) or, for a univariate rational
function, by exact real-root isolation plus an exact point evaluation.
Nothing here returns a fixed status.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import sympy as sp

PROVED = "proved"
DISPROVED = "disproved"
NEEDS = "needs-assumption"
STATUSES = (PROVED, DISPROVED, NEEDS)


@dataclass(frozen=True)
class Step:
    """One checked step of a proof.

    Attributes
    ----------
    name : str
        Short label citing the equation, e.g. ``"eq. 90: ..."``.
    statement : str
        Human-readable statement (sympy ``str`` is fine).
    status : str
        ``"proved"``, ``"disproved"`` or ``"needs-assumption"``.
    method : str
        How sympy decided it.
    assumptions : tuple of str
        Assumptions under which it was decided.
    note : str
        The repairing assumption, a counterexample or the slack.
    data : dict
        Machine-readable payload (e.g. an embedded counterexample); JSON-ready.
    """

    name: str
    statement: str
    status: str
    method: str
    assumptions: tuple[str, ...] = ()
    note: str = ""
    data: dict = field(default_factory=dict, compare=False, hash=False)

    def __post_init__(self):
        if self.status not in STATUSES:
            raise ValueError(f"bad status {self.status!r}")

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "statement": self.statement,
            "status": self.status,
            "method": self.method,
            "assumptions": list(self.assumptions),
            "note": self.note,
            "data": self.data,
        }


@dataclass(frozen=True)
class Certificate:
    """A claim restated symbolically with its checked proof steps."""

    claim: str
    source: str
    statement: str
    steps: tuple[Step, ...]

    @property
    def status(self) -> str:
        """``proved`` if all steps are, ``disproved`` if any is, else ``needs-assumption``."""
        stats = [s.status for s in self.steps]
        if stats and all(s == PROVED for s in stats):
            return PROVED
        if DISPROVED in stats:
            return DISPROVED
        return NEEDS

    @property
    def n_proved(self) -> int:
        return sum(s.status == PROVED for s in self.steps)

    def to_dict(self) -> dict:
        return {
            "claim": self.claim,
            "status": self.status,
            "source": self.source,
            "statement": self.statement,
            "steps": [s.to_dict() for s in self.steps],
        }


# ----------------------------------------------------------------------------
# decision helpers
# ----------------------------------------------------------------------------

def is_zero(expr) -> bool:
    """Exact identity test: ``simplify(expr) == 0`` (after ``together``/``expand``).

    Matrices are zero when every entry is.
    """
    if isinstance(expr, sp.MatrixBase):
        return all(is_zero(x) for x in expr)
    e = sp.simplify(sp.together(sp.expand(sp.sympify(expr))))
    if e == 0 or e.is_zero is True:
        return True
    return sp.simplify(sp.expand(sp.powsimp(sp.expand_power_base(e, force=False)))) == 0


def identity_status(lhs, rhs, fail: str = DISPROVED) -> str:
    """``proved`` iff ``simplify(lhs - rhs) == 0``, else ``fail``."""
    return PROVED if is_zero(lhs - rhs) else fail


def _forms(expr):
    """Equivalent forms of ``expr``, cheapest first (generated lazily)."""
    yield expr
    yield sp.factor(sp.together(expr))
    yield sp.factor(sp.simplify(expr))


def sign_nonneg(expr) -> bool | None:
    """Decide ``expr >= 0`` from the symbols' assumptions (True/False/None)."""
    for form in _forms(sp.sympify(expr)):
        v = form.is_nonnegative
        if v is not None:
            return bool(v)
    return None


def sign_pos(expr) -> bool | None:
    """Decide ``expr > 0`` from the symbols' assumptions (True/False/None)."""
    for form in _forms(sp.sympify(expr)):
        v = form.is_positive
        if v is not None:
            return bool(v)
    return None


def _rational_near(x):
    """A rational close to the (possibly algebraic) real number ``x``."""
    x = sp.sympify(x)
    if x.is_Rational:
        return x
    return sp.Rational(str(sp.N(x, 40)))


def _interior_point(lo, hi):
    """An exact rational strictly inside (lo, hi); endpoints may be algebraic or infinite."""
    if hi is sp.oo and lo is -sp.oo:
        return sp.Integer(0)
    if hi is sp.oo:
        return sp.floor(_rational_near(lo)) + 1
    if lo is -sp.oo:
        return sp.ceiling(_rational_near(hi)) - 1
    c = (_rational_near(lo) + _rational_near(hi)) / 2
    if not (sp.sympify(lo) < c < sp.sympify(hi)):  # exact comparison (CRootOf vs Rational)
        raise ValueError("interval too narrow for a rational interior point")
    return c


def poly_sign_on_interval(expr, x, lo, hi):
    """Exact sign of a univariate rational function on the open interval (lo, hi).

    The numerator and denominator of ``together(expr)`` are isolated with
    ``sympy.real_roots``; if neither has a root strictly inside the interval,
    the sign is constant there and is read off an exact evaluation at an
    interior rational point.

    Returns
    -------
    (sign, roots) : (int or None, list)
        ``sign`` is +1 / -1 when constant on the interval, ``None`` if the
        numerator or denominator changes sign inside; ``roots`` are the exact
        roots found strictly inside (as ``CRootOf``/rationals).
    """
    num, den = sp.fraction(sp.together(sp.expand(expr)))
    inside = []
    for part in (num, den):
        part = sp.expand(part)
        if not part.has(x):
            continue
        for r in sp.real_roots(sp.Poly(part, x)):
            if (lo is -sp.oo or r > lo) and (hi is sp.oo or r < hi):
                inside.append(r)
    if inside:
        return None, inside
    val = sp.nsimplify(expr.subs(x, _interior_point(lo, hi)))
    val = sp.simplify(val)
    return (1 if val > 0 else -1 if val < 0 else 0), inside


def status_of(ok: bool | None, fail: str = DISPROVED) -> str:
    """Map a decided predicate to a status (undecided counts as a failure)."""
    return PROVED if ok else fail
