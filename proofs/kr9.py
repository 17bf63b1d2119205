"""[P1] Known Result 9 (expected norm of Gaussian weights), Section 5 after eq. (32).

The paper states ``E||W||_2 = sqrt(R) sigma`` for ``w_d ~ N(0, sigma^2)``, ``d = 1..R``.
``||W||/sigma`` is chi-distributed with ``R`` degrees of freedom, so the exact value is
``sigma sqrt(2) Gamma((R+1)/2) / Gamma(R/2)``, strictly below ``sqrt(R) sigma`` (Jensen /
log-convexity of Gamma) and asymptotically equal.  The preceding sentence,
"the expectation of ||W_l||_2^2 is equal to sqrt(R_l) sigma", is also wrong: it is ``R sigma^2``.
"""

from __future__ import annotations

import sympy as sp

from proofs.certificate import (Certificate, Step, is_zero, status_of)

SOURCE = "[P1] Known Result 9 and the sentence before it (Section 5, after eq. (32))"


def _chi_moments():
    R = sp.Symbol("R", positive=True)
    r = sp.Symbol("r", positive=True)
    sigma = sp.Symbol("sigma", positive=True)
    f = r ** (R - 1) * sp.exp(-r ** 2 / 2) / (2 ** (R / 2 - 1) * sp.gamma(R / 2))
    m0 = sp.simplify(sp.integrate(f, (r, 0, sp.oo)))
    m1 = sp.simplify(sp.integrate(r * f, (r, 0, sp.oo)))
    m2 = sp.simplify(sp.integrate(r ** 2 * f, (r, 0, sp.oo)))
    return R, sigma, m0, sigma * m1, sigma ** 2 * m2


def exact_mean_norm(R, sigma):
    """``E||W||_2 = sigma sqrt(2) Gamma((R+1)/2)/Gamma(R/2)`` (chi distribution)."""
    return sigma * sp.sqrt(2) * sp.gamma(sp.sympify(R + 1) / 2) / sp.gamma(sp.sympify(R) / 2)


def _moment_step(R, sigma, m0, mean, second) -> Step:
    ok = is_zero(m0 - 1) and is_zero(mean - exact_mean_norm(R, sigma)) and is_zero(second - R * sigma ** 2)
    return Step(
        name="chi moments: E||W|| = sigma sqrt2 Gamma((R+1)/2)/Gamma(R/2), E||W||^2 = R sigma^2",
        statement=f"integral of the chi density: mass {m0}, mean {mean}, second moment {second}",
        status=status_of(ok),
        method="sympy.integrate of the chi(R) density, simplify",
        assumptions=("w_d iid N(0, sigma^2)", "R > 0"),
    )


def _strict_upper_step(R, sigma) -> Step:
    # Gamma((R+1)/2)^2 < Gamma(R/2) Gamma(R/2+1) (strict log-convexity: trigamma > 0), Gamma(R/2+1) = R/2 Gamma(R/2)
    x = sp.Symbol("x", positive=True)
    convex = sp.polygamma(1, x).is_positive
    shift = is_zero(sp.gammasimp(sp.gamma(R / 2 + 1) / sp.gamma(R / 2)) - R / 2)
    midpoint = is_zero(((R / 2) + (R / 2 + 1)) / 2 - (R + 1) / 2)
    ok = bool(convex) and shift and midpoint
    return Step(
        name="E||W|| < sqrt(R) sigma",
        statement="log Gamma strictly convex (trigamma > 0): Gamma((R+1)/2)^2 < Gamma(R/2) Gamma(R/2+1) = (R/2) Gamma(R/2)^2, "
                  "i.e. (E||W||)^2 = 2 sigma^2 Gamma((R+1)/2)^2/Gamma(R/2)^2 < R sigma^2",
        status=status_of(ok),
        method="polygamma(1, x).is_positive for x > 0; gammasimp(Gamma(R/2+1)/Gamma(R/2)) == R/2; midpoint identity",
        assumptions=("R > 0",),
        note="equivalently Jensen: E||W|| <= sqrt(E||W||^2), strict since ||W|| is not a.s. constant",
    )


def certificate() -> Certificate:
    R, sigma, m0, mean, second = _chi_moments()
    steps = [_moment_step(R, sigma, m0, mean, second)]
    paper = sp.sqrt(R) * sigma
    at1 = sp.simplify(mean.subs(R, 1))
    diff1 = sp.simplify(at1 - paper.subs(R, 1))
    steps.append(Step(
        name="KR 9: E||W||_2 = sqrt(R) sigma",
        statement=f"R=1: E|w| = {at1} vs sqrt(1) sigma = sigma; difference {diff1}",
        status=status_of(is_zero(mean - paper)),
        method="simplify(exact - paper) != 0; exact value at R = 1",
        assumptions=("w_d iid N(0, sigma^2)",),
        note="the equality is false for every R (see the strict upper bound); it holds only asymptotically, "
             "ratio exact/paper -> 1 as R -> oo",
        data={"R": 1, "sigma": 1, "exact": float(sp.N(at1.subs(sigma, 1))), "paper": 1.0},
    ))
    steps.append(_strict_upper_step(R, sigma))
    # the sentence before KR 9
    claim_sq = sp.sqrt(R) * sigma
    steps.append(Step(
        name="'the expectation of ||W_l||_2^2 is equal to sqrt(R_l) sigma'",
        statement=f"E||W||^2 = {second} vs sqrt(R) sigma; at R=4, sigma=1: {second.subs({R: 4, sigma: 1})} vs {claim_sq.subs({R: 4, sigma: 1})}",
        status=status_of(is_zero(second - claim_sq)),
        method="sympy.integrate second moment; simplify(difference) != 0",
        assumptions=("w_d iid N(0, sigma^2)",),
        note="E||W||^2 = R sigma^2 (the chi^2 mean stated one sentence earlier); sqrt(R) sigma is the RMS norm",
        data={"R": 4, "sigma": 1, "exact": 4.0, "paper": 2.0},
    ))
    return Certificate(claim="kr9", source=SOURCE,
                       statement="w_d ~ N(0, sigma^2), d=1..R: E||W||_2 = sqrt(R) sigma", steps=tuple(steps))


def certificate_upper() -> Certificate:
    R, sigma, m0, mean, second = _chi_moments()
    steps = [_moment_step(R, sigma, m0, mean, second), _strict_upper_step(R, sigma)]
    # squeeze: with R = 2x, ratio = Gamma(x+1/2)/(sqrt(x) Gamma(x)); log-convexity at x+1/2, x+3/2
    # (midpoint x+1) gives Gamma(x+1)^2 <= (x+1/2) Gamma(x+1/2)^2, i.e. ratio >= sqrt(x/(x+1/2)).
    x = sp.Symbol("x", positive=True)
    ratio = mean / (sp.sqrt(R) * sigma)
    r_x = sp.gamma(x + sp.Rational(1, 2)) / (sp.sqrt(x) * sp.gamma(x))
    ok_sub = is_zero(sp.gammasimp(ratio.subs(R, 2 * x) / r_x) - 1)
    convex = bool(sp.polygamma(1, x).is_positive)
    ok_ids = (is_zero(sp.expand_func(sp.gamma(x + sp.Rational(3, 2))) - (x + sp.Rational(1, 2)) * sp.gamma(x + sp.Rational(1, 2)))
              and is_zero(sp.gammasimp(sp.gamma(x + 1) / sp.gamma(x)) - x))
    lower = sp.sqrt(x / (x + sp.Rational(1, 2)))
    lim_low = sp.limit(lower, x, sp.oo)
    ok = ok_sub and convex and ok_ids and is_zero(lim_low - 1)
    steps.append(Step(
        name="E||W|| / (sqrt(R) sigma) -> 1 as R -> oo",
        statement=f"R = 2x: sqrt(x/(x+1/2)) <= ratio < 1 (log-convexity of Gamma); lim sqrt(x/(x+1/2)) = {lim_low}",
        status=status_of(ok),
        method="gammasimp/expand_func identities, polygamma(1,x).is_positive, sympy.limit of the lower bound (squeeze)",
        assumptions=("R > 0",),
        note="relative error of sqrt(R) sigma is below 1 - sqrt(R/(R+1)) ~ 1/(2R)",
    ))
    return Certificate(claim="kr9_upper", source=SOURCE,
                       statement="E||W||_2 <= sqrt(R) sigma, with ratio -> 1 as R -> oo", steps=tuple(steps))
