"""[P2] Theorem 4 (normalised MSE sensitivity), Section D, eq. (12)-(19)."""

from __future__ import annotations

import sympy as sp

from proofs.certificate import Certificate, Step, is_zero, sign_nonneg, status_of

SOURCE = "[P2] Theorem 4, proof eq. (12)-(19) (Section D)"


def certificate() -> Certificate:
    ma, mb = sp.symbols("mu_A mu_B", real=True)
    sa, sb = sp.symbols("sigma_A sigma_B", positive=True)
    sab = sp.Symbol("sigma_AB", nonnegative=True)
    EA2, EB2 = sa ** 2 + ma ** 2, sb ** 2 + mb ** 2
    EAB = sab + ma * mb
    a, b = sp.sqrt(EA2), sp.sqrt(EB2)
    # E[(A/a - B/b)^2] by linearity
    lhs = EA2 / a ** 2 - 2 * EAB / (a * b) + EB2 / b ** 2
    eq14 = 2 - 2 * sab / (a * b) - 2 * ma * mb / (a * b)
    steps = [Step(
        name="eq. 12-14: E[(A/a - B/b)^2] = 2 - 2 sigma_AB/(ab) - 2 mu_A mu_B/(ab)",
        statement="a = sqrt(E[A^2]), b = sqrt(E[B^2]), E[AB] = sigma_AB + mu_A mu_B",
        status=status_of(is_zero(lhs - eq14)),
        method="simplify(lhs-rhs)==0",
        assumptions=("E[A^2], E[B^2] > 0",),
    )]
    eq15 = 2 - 2 * ma * mb / (a * b)
    steps.append(Step(
        name="eq. 15: <= 2 - 2 mu_A mu_B/(ab) for sigma_AB >= 0, equality at sigma_AB = 0",
        statement="eq15 - eq14 = 2 sigma_AB/(ab) >= 0",
        status=status_of(sign_nonneg(eq15 - eq14) and is_zero((eq15 - eq14).subs(sab, 0))),
        method="is_nonnegative on sigma_AB >= 0; subs(sigma_AB=0)",
        assumptions=("sigma_AB >= 0",),
    ))
    e16 = EA2 - 2 * EAB + EB2
    e18 = sa ** 2 + sb ** 2 + (ma - mb) ** 2 - 2 * sab
    e17 = sa ** 2 - 2 * sab + sb ** 2 + ma ** 2 - 2 * ma * mb + mb ** 2
    steps.append(Step(
        name="eq. 16-18: E[(A-B)^2] = sigma_A^2 + sigma_B^2 + (mu_A-mu_B)^2 - 2 sigma_AB",
        statement="E[A^2] - 2E[AB] + E[B^2] expanded",
        status=status_of(is_zero(e16 - e17) and is_zero(e17 - e18)),
        method="simplify(lhs-rhs)==0",
        assumptions=(),
    ))
    e19 = sa ** 2 + sb ** 2 + (ma - mb) ** 2
    steps.append(Step(
        name="eq. 19: <= sigma_A^2 + sigma_B^2 + (mu_A-mu_B)^2 for sigma_AB >= 0",
        statement="difference 2 sigma_AB >= 0",
        status=status_of(sign_nonneg(e19 - e18)),
        method="is_nonnegative",
        assumptions=("sigma_AB >= 0",),
    ))
    return Certificate(claim="sanity_thm4_mse", source=SOURCE,
                       statement="over sigma_AB >= 0 the normalised MSE is maximised at sigma_AB = 0 with value 2 - 2 mu_A mu_B/(E[A^2]E[B^2])^(1/2)",
                       steps=tuple(steps))
