"""[P2] Section A.2, forward-pass adaptive beta, eq. (1)-(2).

Eq. (1): ``beta/(1+beta) = -N/P`` with ``P = sum_i (w_i x_i)_+ > 0`` and ``N = sum_i (w_i x_i)_- <= 0``.
Solving gives ``beta = -N/(P+N)``.  The extracted eq. (2) reads ``-N/(sum(wx)_+ - sum(wx)_-)``:
correct if the subtracted sum denotes the magnitude ``|N|`` (``P - |N| = P + N``), wrong for the signed
sum.  A solution ``beta >= 0`` exists only when ``P + N > 0``.
"""

from __future__ import annotations

import sympy as sp

from proofs.certificate import (DISPROVED, NEEDS, PROVED, Certificate, Step, is_zero, sign_pos,
                                status_of)

SOURCE = "[P2] Section A.2, eq. (1)-(2)"


def certificate() -> Certificate:
    P = sp.Symbol("P", positive=True)
    N = sp.Symbol("N", nonpositive=True)
    beta = sp.Symbol("beta")
    eq1 = beta / (1 + beta) + N / P
    sols = sp.solve(eq1, beta)
    reading_a = -N / (P + N)
    steps = [Step(
        name="eq. 1 solved for beta: beta = -N/(P+N)",
        statement=f"solve(beta/(1+beta) = -N/P) = {sols}",
        status=status_of(len(sols) == 1 and is_zero(sols[0] - reading_a) and is_zero(eq1.subs(beta, reading_a))),
        method="sympy.solve + simplify(residual)==0",
        assumptions=("P > 0", "N <= 0"),
    )]
    reading_b = -N / (P - N)
    resid = sp.factor(sp.simplify(eq1.subs(beta, reading_b)))
    Nmag = sp.Symbol("Nmag", nonnegative=True)  # |N|
    resid_mag = sp.simplify((beta / (1 + beta) - Nmag / P).subs(beta, Nmag / (P - Nmag)))
    status = PROVED if is_zero(resid) else (NEEDS if is_zero(resid_mag) else DISPROVED)
    steps.append(Step(
        name="eq. 2 as extracted: beta = -N/(sum(wx)_+ - sum(wx)_-)",
        statement=f"signed reading -N/(P-N): residual of eq. 1 = {resid} (!= 0 unless N = 0); "
                  f"magnitude reading |N|/(P-|N|): residual {resid_mag}",
        status=status,
        method="substitute into eq. 1, simplify residual; compare both readings of the denominator",
        assumptions=("P > 0", "N <= 0"),
        note="correct only if the subtracted sum is the magnitude |N| (denominator P - |N| = P + N); "
             "with the signed negative sum the formula does not solve eq. 1",
        data={"reading_signed_residual": str(resid)},
    ))
    # domain: beta >= 0 finite iff P + N > 0
    theta = sp.Symbol("theta", nonnegative=True)  # N = -theta P
    b_theta = sp.simplify(reading_a.subs(N, -theta * P))
    bb = sp.Symbol("b", nonnegative=True)
    below_one = sign_pos(1 - bb / (1 + bb))          # beta/(1+beta) < 1 for beta >= 0
    e = sp.Symbol("e", nonnegative=True)            # P + N = -e P <= 0
    b_bad = sp.simplify(reading_a.subs(N, -(1 + e) * P))
    ep = sp.Symbol("e", positive=True)
    below_minus_one = sign_pos(-(b_bad.subs(e, ep) + 1))   # formula < -1 for e > 0
    ratio_ge_one = sp.simplify((-N / P).subs(N, -(1 + e) * P) - 1)
    domain_ok = bool(below_one) and bool(sp.sympify(ratio_ge_one).is_nonnegative) and bool(below_minus_one)
    status = NEEDS if domain_ok else PROVED
    steps.append(Step(
        name="eq. 2 gives beta >= 0 (finite) for every neuron",
        statement=f"N = -theta P: beta = {b_theta}; if P + N = -e P <= 0 then -N/P - 1 = {ratio_ge_one} >= 0 "
                  f"while beta/(1+beta) < 1, and the formula gives {b_bad} (< -1 for e > 0, division by zero at e = 0)",
        status=status,
        method="is_positive(1 - b/(1+b)), is_nonnegative of -N/P - 1 under P + N <= 0, simplify",
        assumptions=("P > 0", "N <= 0"),
        note="needs P + N > 0 (positive contributions outweigh negative ones); otherwise no beta >= 0 solves eq. 1 "
             "(the experiments' clipping beta* = min(beta, 3) does not cover beta <= -1 / division by zero)",
    ))
    return Certificate(claim="adaptive_beta", source=SOURCE,
                       statement="beta = -N/(P+N) solves beta/(1+beta) = -N/P and is a valid beta >= 0",
                       steps=tuple(steps))
