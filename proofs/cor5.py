"""[P1] Corollary 5 (LRP-gamma limit bound sqrt(R)) and Known Result 1, eq. (9)-(10).

Known Result 1 ([P1] eq. (10)): ``lim_{gamma->oo} (y_b + gamma (y_b)_+) / sum_b' (y_b' + gamma (y_b')_+)
= (y_b)_+ / sum_b' (y_b')_+`` with ``y_b = w_ab z_b``.  It needs ``sum_b (y_b)_+ > 0``: if
all contributions are negative the LRP-gamma entry is ``y_b / sum y`` for every gamma,
while the beta = 0 entry is ``0/0 := 0``.
"""

from __future__ import annotations

import sympy as sp

from proofs.certificate import (NEEDS, PROVED, Certificate, Step, is_zero,
                                sign_nonneg, status_of)
from proofs.thm4 import bound_exact, bound_relaxed

SOURCE_KR1 = "[P1] Known Result 1, eq. (9)-(10)"
SOURCE_COR5 = "[P1] Corollary 5, eq. (18), with Theorem 4 and Known Result 1"


def lrp_gamma_entry(y, b, gamma):
    """[P1] eq. (9): ``(y_b + gamma (y_b)_+) / sum_b' (y_b' + gamma (y_b')_+)``."""
    return (y[b] + gamma * sp.Max(y[b], 0)) / sum(v + gamma * sp.Max(v, 0) for v in y)


def lrp0_entry(y, b):
    """[P1] eq. (7) at beta = 0, with ``0/0 := 0``."""
    tot = sum(sp.Max(v, 0) for v in y)
    return sp.Integer(0) if tot == 0 else sp.Max(y[b], 0) / tot


def _generic_row():
    y1, y2 = sp.symbols("y1 y2", positive=True)
    y3 = sp.Symbol("y3", negative=True)
    return [y1, y2, y3]


def _limit_step_positive_case() -> Step:
    g = sp.Symbol("gamma", positive=True)
    y = _generic_row()
    ok = all(is_zero(sp.limit(lrp_gamma_entry(y, b, g), g, sp.oo) - lrp0_entry(y, b)) for b in range(3))
    return Step(
        name="eq. 10, sum_b (y_b)_+ > 0",
        statement="row y = (y1>0, y2>0, y3<0): lim_{gamma->oo} Att_gamma(b) = (y_b)_+/sum (y)_+ for every b",
        status=status_of(ok),
        method="sympy.limit on sign-constrained symbols, simplify(difference)==0",
        assumptions=("sum_b (w_ab z_b)_+ > 0",),
    )


def _degenerate_row():
    return list(sp.symbols("y1:4", negative=True))


def certificate_kr1() -> Certificate:
    g = sp.Symbol("gamma", positive=True)
    y = _degenerate_row()
    lims = [sp.limit(lrp_gamma_entry(y, b, g), g, sp.oo) for b in range(3)]
    indep = all(is_zero(sp.diff(lrp_gamma_entry(y, b, g), g)) for b in range(3))
    equal = all(is_zero(L - lrp0_entry(y, b)) for b, L in enumerate(lims))
    status = PROVED if equal else NEEDS
    degenerate = Step(
        name="eq. 10, sum_b (y_b)_+ = 0 (all contributions negative)",
        statement=f"row y = (y1,y2,y3 < 0): Att_gamma(b) = y_b/sum y for all gamma (d/dgamma = 0: {indep}); "
                  f"limits {lims} vs beta=0 entries 0/0 := 0",
        status=status,
        method="sympy.limit and diff on negative symbols; simplify(limit - 0) != 0",
        assumptions=("all w_ab z_b < 0",),
        note="needs sum_b (w_ab z_b)_+ > 0: otherwise the gamma-entry is y_b/sum_b' y_b' (gamma-independent, "
             "nonnegative, summing to 1) while the beta=0 entry is 0/0 := 0",
    )
    return Certificate(
        claim="kr1",
        source=SOURCE_KR1,
        statement="lim_{gamma->oo} LRP-gamma entry = LRP-beta entry at beta = 0",
        steps=(_limit_step_positive_case(), degenerate),
    )


def certificate() -> Certificate:
    g = sp.Symbol("gamma", positive=True)
    R = sp.Symbol("R", positive=True, integer=True)
    steps = [_limit_step_positive_case()]

    # Frobenius distance of the generic column to its limit -> 0 (Weyl: |sigma_i - sigma_i'| <= |dM|_2 <= |dM|_F)
    y = _generic_row()
    fro = sum((lrp_gamma_entry(y, b, g) - lrp0_entry(y, b)) ** 2 for b in range(3))
    steps.append(Step(
        name="eq. 18 + Weyl: |sigma_i(M_gamma) - sigma_i(M_0)| <= |M_gamma - M_0|_F -> 0",
        statement="sum_b (Att_gamma(b) - Att_0(b))^2 -> 0 as gamma -> oo for a generic row",
        status=status_of(is_zero(sp.limit(fro, g, sp.oo))),
        method="sympy.limit of the squared Frobenius distance",
        assumptions=("sum_b (y_b)_+ > 0 in every row",),
    ))

    # degenerate rows still give a column with nonneg entries summing to 1: |col|^2 <= 1
    yd = _degenerate_row()
    col = [lrp_gamma_entry(yd, b, g) for b in range(3)]
    ok = (all(sign_nonneg(sp.simplify(c)) for c in col) and is_zero(sum(col) - 1)
          and all(is_zero(sp.diff(c, g)) for c in col))
    steps.append(Step(
        name="degenerate rows (all y_b < 0): column entries in [0,1] summing to 1",
        statement="Att_gamma(b) = y_b / sum y >= 0, sum_b = 1, gamma-independent => |M[:,k]|^2 <= 1 (eq. 46-47 at beta=0)",
        status=status_of(ok),
        method="is_nonnegative on negative symbols, simplify(sum-1)==0, diff==0",
        assumptions=("all w_ab z_b < 0 in that row",),
        note="so the sqrt(R) bound survives where Known Result 1 itself fails",
    ))
    ok = is_zero(bound_exact(0, R) - sp.sqrt(R)) and is_zero(bound_relaxed(0, R) - sp.sqrt(R))
    steps.append(Step(
        name="Theorem 4 at beta = 0 gives sqrt(R)",
        statement="sqrt(R) sqrt((1+0)^2+0^2) = sqrt(R) (1+sqrt2*0) = sqrt(R)",
        status=status_of(ok),
        method="simplify(subs(beta=0) - sqrt(R))==0",
        assumptions=("beta = 0",),
    ))
    return Certificate(
        claim="cor5",
        source=SOURCE_COR5,
        statement="lim_{gamma->oo} sigma_max(M_gamma) <= sqrt(R)",
        steps=tuple(steps),
    )
