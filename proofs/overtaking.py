"""[P2] Theorem 2 (overtaking probability), proof Section E, eq. (21)-(41).

The ratio of independent zero-mean normals ``N(0, s1^2)/N(0, s2^2)`` is Cauchy with scale
``s1/s2`` (eq. 22); its tail ``1 - CDF_g(K)`` grows with ``g``; ``gamma_1 <= sqrt(|XS|/|XL|)/K``
(eq. 29-33).  Eq. (34)-(36) write ``CDF_gamma1(1) = CDF_gamma2(K)``; plugging the upper bound of
``gamma_1`` in only gives the inequality ``1 - CDF_gamma1(1) <= 1 - CDF_gamma2(K)``, with equality
iff ``gamma_1 = gamma_2/K``.
"""

from __future__ import annotations

import sympy as sp

from proofs.certificate import (NEEDS, PROVED, Certificate, Step, is_zero, sign_nonneg, sign_pos,
                                status_of)

SOURCE = "[P2] Theorem 2, proof eq. (21)-(41) (Section E)"

#: eq. (21) holds with K = 4; gamma_1 < gamma_2 / K strictly
COUNTEREXAMPLE_XS = (1, sp.Rational(1, 2))
COUNTEREXAMPLE_XL = (4,)
COUNTEREXAMPLE_K = 4


def cauchy_cdf(x, g):
    """``0.5 + atan(x/g)/pi`` ([P2] eq. (34))."""
    return sp.Rational(1, 2) + sp.atan(x / g) / sp.pi


def gamma1(xs, xl):
    """[P2] eq. (28): ``sqrt(sum xs^2 / sum xl^2)``."""
    return sp.sqrt(sum(sp.nsimplify(x) ** 2 for x in xs) / sum(sp.nsimplify(x) ** 2 for x in xl))


def certificate() -> Certificate:
    steps = []
    s1, s2 = sp.symbols("s1 s2", positive=True)
    z = sp.Symbol("z", real=True)
    y = sp.Symbol("y", positive=True)
    phi = lambda u, s: sp.exp(-u ** 2 / (2 * s ** 2)) / (s * sp.sqrt(2 * sp.pi))  # noqa: E731
    dens = 2 * sp.integrate(y * phi(z * y, s1) * phi(y, s2), (y, 0, sp.oo))
    g = s1 / s2
    eq22 = 1 / (sp.pi * g) / (z ** 2 / g ** 2 + 1)
    steps.append(Step(
        name="eq. 22: N(0,s1^2)/N(0,s2^2) has the Cauchy density with scale s1/s2",
        statement="f(z) = int |y| phi_s1(z y) phi_s2(y) dy = 1/(pi g) 1/(z^2/g^2+1), g = s1/s2",
        status=status_of(is_zero(dens - eq22)),
        method="sympy.integrate of the ratio distribution, simplify(difference)==0",
        assumptions=("independent zero-mean normals",),
    ))
    x = sp.Symbol("x", real=True)
    gp = sp.Symbol("g", positive=True)
    ok = is_zero(sp.diff(cauchy_cdf(x, gp), x) - (1 / (sp.pi * gp) / (x ** 2 / gp ** 2 + 1))) and is_zero(
        sp.limit(cauchy_cdf(x, gp), x, -sp.oo))
    steps.append(Step(
        name="eq. 34: CDF_g(x) = 1/2 + atan(x/g)/pi",
        statement="d/dx CDF = eq. 22 density, CDF(-oo) = 0",
        status=status_of(ok),
        method="sympy.diff, sympy.limit",
        assumptions=("g > 0",),
    ))
    K = sp.Symbol("K", positive=True)
    dtail = sp.diff(1 - cauchy_cdf(K, gp), gp)
    steps.append(Step(
        name="eq. 28 remark: the tail 1 - CDF_g(K) increases with g",
        statement=f"d/dg (1 - CDF_g(K)) = {sp.simplify(dtail)} > 0",
        status=status_of(sign_pos(sp.simplify(dtail))),
        method="sympy.diff + is_positive on K, g > 0",
        assumptions=("K > 0",),
    ))
    # eq. 29-33 with two small and two large inputs, parametrised to satisfy eq. (21)
    M, a1, a2, b1, b2, c = sp.symbols("M a1 a2 b1 b2 c", nonnegative=True)
    Mp = sp.Symbol("Mp", positive=True)
    xs = [Mp / (1 + a1), Mp / (1 + a2)]            # 0 < xs <= max = Mp
    m = K * Mp * (1 + c)                            # min xl >= K max xs   (eq. 21)
    xl = [m * (1 + b1), m * (1 + b2)]               # xl >= m
    g1sq = sum(v ** 2 for v in xs) / sum(v ** 2 for v in xl)
    step30 = 2 * Mp ** 2 / (2 * m ** 2)
    bound = sp.Rational(2, 2) / K ** 2               # |XS|/|XL| / K^2
    ok = (sign_nonneg(sp.factor(Mp ** 2 - xs[0] ** 2)) and sign_nonneg(sp.factor(xl[0] ** 2 - m ** 2))
          and sign_nonneg(sp.factor(sp.together(step30 - g1sq))) and sign_nonneg(sp.factor(sp.together(bound - step30))))
    steps.append(Step(
        name="eq. 29-33: gamma_1 <= sqrt(|XS|/|XL|)/K",
        statement="sum xs^2/sum xl^2 <= |XS| max xs^2/(|XL| min xl^2) <= |XS|/(|XL| K^2) under eq. 21 (|XS| = |XL| = 2, generic values)",
        status=status_of(ok),
        method="parametrise xs = M/(1+a), xl = m(1+b), m = K M (1+c); factor + is_nonnegative of each gap",
        assumptions=("eq. 21: min XL >= K max XS", "inputs > 0"),
    ))
    # eq. 34-36: scale invariance + monotonicity give the inequality
    g1, g2 = sp.symbols("gamma1 gamma2", positive=True)
    scale_ok = is_zero(sp.simplify(cauchy_cdf(1, g1) - cauchy_cdf(K, K * g1)))
    steps.append(Step(
        name="eq. 34-36 as inequality: 1 - CDF_gamma1(1) <= 1 - CDF_gamma2(K), gamma2 = sqrt(|XS|/|XL|)",
        statement="CDF_g1(1) = CDF_{K g1}(K) (scale invariance) and K g1 <= gamma2, tail increasing in g",
        status=status_of(scale_ok and sign_pos(sp.simplify(dtail))),
        method="simplify(scale identity)==0; derivative sign from the monotonicity step",
        assumptions=("gamma1 <= gamma2/K (eq. 33)",),
    ))
    sol = sp.solve(sp.Eq(sp.atan(1 / g1), sp.atan(K / g2)), g1)
    xs0, xl0, K0 = COUNTEREXAMPLE_XS, COUNTEREXAMPLE_XL, COUNTEREXAMPLE_K
    g1v = gamma1(xs0, xl0)
    g2v = sp.sqrt(sp.Rational(len(xs0), len(xl0)))
    lhs = 1 - cauchy_cdf(1, g1v)
    rhs = 1 - cauchy_cdf(K0, g2v)
    cond21 = min(xl0) >= K0 * max(xs0)
    equal = is_zero(lhs - rhs)
    status = PROVED if equal else (NEEDS if (cond21 and sign_pos(rhs - lhs) and len(sol) == 1
                                              and is_zero(sol[0] - g2 / K)) else "disproved")
    steps.append(Step(
        name="eq. 35-36 '=': CDF_gamma1(1) = CDF_gamma2(K)",
        statement=f"XS={list(xs0)}, XL={list(xl0)}, K={K0}: gamma1 = {g1v}, gamma2/K = {sp.simplify(g2v / K0)}; "
                  f"tail(gamma1, 1) = {sp.N(lhs, 6)} < tail(gamma2, K) = {sp.N(rhs, 6)}",
        status=status,
        method="sympy.solve(atan(1/g1) = atan(K/g2)) -> unique g1 = g2/K; exact counterexample compared",
        assumptions=("eq. 21",),
        note="the '=' holds only when gamma1 = gamma2/K (all xs equal, all xl equal, min xl = K max xs); "
             "in general it is the inequality proved above, which is what the theorem needs",
        data={"XS": [str(v) for v in xs0], "XL": [str(v) for v in xl0], "K": K0},
    ))
    nS, nL = sp.symbols("n_S n_L", positive=True)
    factor = sp.sqrt((1 / nS ** 2) / (1 / nL ** 2))
    ok = is_zero(factor - nL / nS) and is_zero(nL / nS * sp.sqrt(nS / nL) - sp.sqrt(nL / nS))
    steps.append(Step(
        name="eq. 40-41: averaged contributions give gamma2_avg = sqrt(|XL|/|XS|)",
        statement="sqrt((1/|XS|^2)/(1/|XL|^2)) = |XL|/|XS|; (|XL|/|XS|) sqrt(|XS|/|XL|) = sqrt(|XL|/|XS|)",
        status=status_of(ok),
        method="simplify(lhs-rhs)==0",
        assumptions=("|XS|, |XL| > 0",),
    ))
    return Certificate(claim="sanity_thm2_overtaking", source=SOURCE,
                       statement="P(sum_S w x >= sum_L w x) <= 1 - CDF_{gamma2}(K), gamma2 = sqrt(|XS|/|XL|) (Cauchy tail)",
                       steps=tuple(steps))
