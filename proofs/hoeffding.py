"""[P1] Known Result 6 (Hoeffding), eq. (22)-(24): deviation and sample size are inverses."""

from __future__ import annotations

import sympy as sp

from proofs.certificate import Certificate, Step, is_zero, status_of

SOURCE = "[P1] Known Result 6, eq. (22)-(24)"


def deviation(width, delta, m):
    """[P1] eq. (23): ``t = (z_u - z_l) sqrt(-ln(delta/2)/2) / sqrt(m)``."""
    return width * sp.sqrt(-sp.log(delta / 2) / 2) / sp.sqrt(m)


def samples(width, delta, t):
    """[P1] eq. (24): ``m = (z_u - z_l)^2 ln(2/delta) / (2 t^2)``."""
    return width ** 2 * sp.log(2 / delta) / 2 / t ** 2


def _same(a, b) -> bool:
    return is_zero(sp.expand_log(a - b, force=True)) or is_zero(sp.logcombine(a - b, force=True))


def certificate() -> Certificate:
    w, m, t = sp.symbols("w m t", positive=True)
    delta = sp.Symbol("delta", positive=True)
    steps = []
    # eq. 22 with RHS = delta solved for t
    sols = [x for x in sp.solve(sp.Eq(2 * sp.exp(-2 * t ** 2 * m / w ** 2), delta), t)]
    d_half = sp.Rational(1, 2)
    ok = len(sols) == 1 and _same(sols[0], deviation(w, delta, m)) and _same(
        sols[0].subs(delta, d_half), deviation(w, d_half, m))
    steps.append(Step(
        name="eq. 22 -> eq. 23: 2 exp(-2 t^2 m / w^2) = delta solved for t",
        statement=f"solve gives t = {sols}",
        status=status_of(ok),
        method="sympy.solve on positive symbols, simplify(expand_log(difference))==0",
        assumptions=("0 < delta < 2", "m > 0", "w = z_u - z_l > 0"),
    ))
    msol = sp.solve(sp.Eq(deviation(w, delta, m), t), m)
    ok = len(msol) == 1 and _same(msol[0], samples(w, delta, t))
    steps.append(Step(
        name="eq. 23 solved for m gives eq. 24",
        statement=f"m = {msol}",
        status=status_of(ok),
        method="sympy.solve + simplify(expand_log(difference))==0",
        assumptions=("0 < delta < 2",),
    ))
    tsol = sp.solve(sp.Eq(samples(w, delta, t), m), t)
    ok = len(tsol) == 1 and _same(tsol[0], deviation(w, delta, m))
    steps.append(Step(
        name="eq. 24 solved for t gives eq. 23",
        statement=f"t = {tsol}",
        status=status_of(ok),
        method="sympy.solve + simplify(expand_log(difference))==0",
        assumptions=("0 < delta < 2",),
    ))
    return Certificate(
        claim="hoeffding",
        source=SOURCE,
        statement="eq. (23) and eq. (24) are inverse to each other and follow from eq. (22) = delta",
        steps=tuple(steps),
    )
