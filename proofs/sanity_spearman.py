"""[P2] Theorem 3 (Spearman sensitivity), Section C, eq. (8)-(10), and the side claim on signs.

The theorem itself is trivial (a nonnegative ratio is minimised at a zero numerator).  The
side claim "sigma_R(A)R(B) >= 0 iff sigma_AB >= 0" is false: rank covariance and Pearson
covariance can have opposite signs.
"""

from __future__ import annotations

import sympy as sp

from proofs.certificate import Certificate, Step, is_zero, sign_nonneg, status_of

SOURCE = "[P2] Theorem 3, proof eq. (8)-(10) (Section C)"

#: paired values (uniform distribution over these 5 pairs): Pearson cov < 0, rank cov > 0
COUNTEREXAMPLE_A = (1, 2, 3, 4, 5)
COUNTEREXAMPLE_B = (1, 2, 3, -100, 4)


def ranks(values) -> list:
    """Ranks 1..n (no ties) as sympy Integers."""
    order = sorted(range(len(values)), key=lambda i: values[i])
    r = [0] * len(values)
    for pos, i in enumerate(order):
        r[i] = sp.Integer(pos + 1)
    return r


def covariance(x, y):
    """Exact population covariance of paired values (sympy Rationals)."""
    x = [sp.Rational(v) for v in x]
    y = [sp.Rational(v) for v in y]
    n = len(x)
    mx, my = sum(x) / n, sum(y) / n
    return sum((a - mx) * (b - my) for a, b in zip(x, y)) / n


def certificate() -> Certificate:
    c = sp.Symbol("sigma_RR", nonnegative=True)
    sa, sb = sp.symbols("sigma_RA sigma_RB", positive=True)
    ratio = c / (sa * sb)
    ok = sign_nonneg(ratio) and is_zero(ratio.subs(c, 0)) and sign_nonneg(sp.diff(ratio, c))
    steps = [Step(
        name="eq. 9-10: min_{sigma_R(A)R(B) >= 0} sigma_R(A)R(B)/(sigma_R(A) sigma_R(B)) = 0 at zero rank covariance",
        statement="ratio >= 0, nondecreasing in the covariance, = 0 at covariance 0",
        status=status_of(ok),
        method="is_nonnegative of ratio and derivative; subs(c=0) == 0",
        assumptions=("sigma_R(A)R(B) >= 0", "sigma_R(A), sigma_R(B) > 0"),
        note="the paper writes sigma_R(A), sigma_R(B) >= 0; the ratio needs them > 0",
    )]
    return Certificate(claim="sanity_thm3_spearman", source=SOURCE,
                       statement="expected Spearman correlation over processes with rank covariance >= 0 is minimised at zero rank covariance",
                       steps=tuple(steps))


def certificate_rank_sign() -> Certificate:
    a, b = COUNTEREXAMPLE_A, COUNTEREXAMPLE_B
    cov = covariance(a, b)
    rcov = covariance(ranks(a), ranks(b))
    same_sign = (cov >= 0) == (rcov >= 0)
    steps = [Step(
        name="Section C: sigma_R(A)R(B) >= 0 iff sigma_AB >= 0",
        statement=f"A = {a}, B = {b} (uniform over the pairs): sigma_AB = {cov}, sigma_R(A)R(B) = {rcov}",
        status=status_of(same_sign),
        method="exact Rational covariances of the values and of their ranks",
        assumptions=("ranks = sorted indices, no ties",),
        note="counterexample: Pearson covariance negative, rank covariance positive (one outlier dominates the "
             "Pearson covariance); the claim holds only for special families (e.g. bivariate normal, where both "
             "signs equal the sign of the correlation)",
        data={"A": list(a), "B": list(b), "cov": str(cov), "rank_cov": str(rcov)},
    )]
    return Certificate(claim="sanity_thm3_rank_sign", source=SOURCE,
                       statement="sigma_R(A)R(B) >= 0 iff sigma_AB >= 0", steps=tuple(steps))
