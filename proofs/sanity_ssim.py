"""[P2] Theorem 1 (SSIM sensitivity), proof Section B, eq. (3)-(7).

For processes with ``sigma_AB >= 0`` the structure term ``|2 sigma_AB + C2| / (sigma_A^2 + sigma_B^2 + C2)``
is minimised at ``sigma_AB = 0`` (``C2 > 0``), and ``|2 mu_A mu_B + C1| <= 2|mu_A mu_B| + C1 <= mu_A^2 + mu_B^2 + C1``.
"""

from __future__ import annotations

import sympy as sp

from proofs.certificate import Certificate, Step, is_zero, sign_nonneg, sign_pos, status_of

SOURCE = "[P2] Theorem 1, proof eq. (3)-(7) (Section B)"


def certificate() -> Certificate:
    sab = sp.Symbol("sigma_AB", nonnegative=True)
    sa, sb = sp.symbols("sigma_A sigma_B", nonnegative=True)
    C1, C2 = sp.symbols("C1 C2", positive=True)
    term = sp.Abs(2 * sab + C2) / (sa ** 2 + sb ** 2 + C2)
    deriv = sp.diff(sp.simplify(term), sab)
    at0 = sp.simplify(term.subs(sab, 0))
    ok = sign_pos(deriv) and is_zero(at0 - C2 / (sa ** 2 + sb ** 2 + C2))
    steps = [Step(
        name="eq. 3-5: min_{sigma_AB >= 0} |2 sigma_AB + C2|/(sigma_A^2+sigma_B^2+C2) at sigma_AB = 0",
        statement=f"d/d sigma_AB = {sp.simplify(deriv)} > 0, value at 0 = {at0}",
        status=status_of(ok),
        method="sympy.diff + is_positive on sigma_AB >= 0, C2 > 0",
        assumptions=("sigma_AB >= 0", "C2 > 0", "sigma_A^2, sigma_B^2 fixed"),
    )]
    ma, mb = sp.symbols("mu_A mu_B", real=True)
    lum = sp.Abs(2 * ma * mb + C1) / (ma ** 2 + mb ** 2 + C1)
    ok4 = sign_nonneg(lum) and not lum.has(sab)
    steps.append(Step(
        name="eq. 4: the luminance factor is >= 0 and independent of sigma_AB, so it factors out of the min",
        statement="|2 mu_A mu_B + C1|/(mu_A^2+mu_B^2+C1) >= 0",
        status=status_of(ok4),
        method="is_nonnegative; free-symbol check",
        assumptions=("C1 > 0",),
    ))
    # eq. 6: triangle inequality |x + C| <= |x| + C, three exhaustive sign cases of x and x + C
    v, w = sp.symbols("v w", positive=True)
    w0 = sp.Symbol("w0", nonnegative=True)
    gap = lambda x, C: sp.Abs(x) + C - sp.Abs(x + C)  # noqa: E731
    cases = (
        (sp.Symbol("x", nonnegative=True), C1),   # x >= 0
        (-v, v + w0),                             # x < 0, x + C >= 0  (C = v + w0)
        (-(v + w), v),                            # x < 0, x + C < 0   (C = v)
    )
    ok6 = all(sign_nonneg(sp.simplify(gap(x, C))) for x, C in cases) and is_zero(
        sp.Abs(2 * ma * mb) - 2 * sp.Abs(ma * mb))
    steps.append(Step(
        name="eq. 6: |2 mu_A mu_B + C1| <= 2|mu_A mu_B| + C1",
        statement="|x + C1| <= |x| + C1 for x = 2 mu_A mu_B, cases x >= 0 / -C1 <= x < 0 / x < -C1",
        status=status_of(ok6),
        method="is_nonnegative of |x|+C1-|x+C1| on sign-constrained symbols, exhaustive cases",
        assumptions=("C1 > 0",),
    ))
    gap = ma ** 2 + mb ** 2 - 2 * sp.Abs(ma * mb)
    sq = (sp.Abs(ma) - sp.Abs(mb)) ** 2
    ok7 = is_zero(gap - sq) and sign_nonneg(sq)
    steps.append(Step(
        name="eq. 7: 2|mu_A mu_B| + C1 <= mu_A^2 + mu_B^2 + C1",
        statement="mu_A^2 + mu_B^2 - 2|mu_A mu_B| = (|mu_A| - |mu_B|)^2 >= 0",
        status=status_of(ok7),
        method="simplify(gap - square)==0, square is_nonnegative",
        assumptions=("mu_A, mu_B real",),
        note="so the luminance factor is <= 1 and the SSIM minimum is <= C2/(sigma_A^2+sigma_B^2+C2)",
    ))
    return Certificate(claim="sanity_thm1_ssim", source=SOURCE,
                       statement="min over sigma_AB >= 0 of SSIM is attained at sigma_AB = 0 and <= C2/(sigma_A^2+sigma_B^2+C2)",
                       steps=tuple(steps))
