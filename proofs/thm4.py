"""[P1] Theorem 4 (upper bound for singular values under LRP-beta), proof eq. (41)-(50).

Claim: ``sigma_max(M) <= sqrt(R) sqrt((1+beta)^2 + beta^2) <= sqrt(R) (1 + sqrt(2) beta)``
for the LRP-beta transition matrix ``M`` (S x R) of one layer, ``beta >= 0``.
"""

from __future__ import annotations

import sympy as sp

from proofs.certificate import (Certificate, Step, identity_status, is_zero,
                                poly_sign_on_interval, sign_nonneg, status_of)

SOURCE = "[P1] Theorem 4, proof eq. (41)-(50) (Appendix A.1)"


def bound_exact(beta, R):
    """[P1] eq. (49): ``sqrt(R) sqrt((1+beta)^2 + beta^2)``."""
    return sp.sqrt(R) * sp.sqrt((1 + beta) ** 2 + beta ** 2)


def bound_relaxed(beta, R):
    """[P1] eq. (50): ``sqrt(R) (1 + sqrt(2) beta)``."""
    return sp.sqrt(R) * (1 + sp.sqrt(2) * beta)


def certificate() -> Certificate:
    beta = sp.Symbol("beta", nonnegative=True)
    R = sp.Symbol("R", positive=True, integer=True)
    steps = []

    # eq. 42: v^T M M^T v = sum_k (v . M[:,k])^2  (symbolic 3x2)
    S_, R_ = 3, 2
    M = sp.Matrix(S_, R_, lambda i, k: sp.Symbol(f"m{i}{k}", real=True))
    v = sp.Matrix(S_, 1, lambda i, _: sp.Symbol(f"v{i}", real=True))
    lhs = (v.T * M * M.T * v)[0, 0]
    rhs = sum((v.T * M[:, k])[0, 0] ** 2 for k in range(R_))
    steps.append(Step(
        name="eq. 42: v^T M M^T v = sum_k (v . M[:,k])^2",
        statement="generic 3x2 M, v in R^3",
        status=identity_status(lhs, rhs),
        method="simplify(lhs-rhs)==0",
        assumptions=("M real",),
    ))

    # eq. 43-44: Cauchy-Schwarz per column via Lagrange's identity
    m = sp.Matrix(S_, 1, lambda i, _: sp.Symbol(f"c{i}", real=True))
    vv = (v.T * v)[0, 0]
    mm = (m.T * m)[0, 0]
    vm = (v.T * m)[0, 0]
    lag = sum((v[i] * m[j] - v[j] * m[i]) ** 2 for i in range(S_) for j in range(i + 1, S_))
    ok = is_zero(vv * mm - vm ** 2 - lag) and sign_nonneg(lag)
    steps.append(Step(
        name="eq. 43-44: sup_{|v|=1} sum_k (v.M[:,k])^2 <= sum_k |M[:,k]|^2",
        statement="|v|^2 |m|^2 - (v.m)^2 = sum_{i<j} (v_i m_j - v_j m_i)^2 >= 0 (Lagrange identity), summed over columns with |v| = 1",
        status=status_of(ok),
        method="simplify(identity)==0 and sum of squares is_nonnegative",
        assumptions=("|v|_2 = 1",),
        note=("the paper's argument (choosing v = M[:,k]/|M[:,k]| per column) is heuristic; the bound "
              "itself is sigma_max^2 <= |M|_F^2, which Cauchy-Schwarz proves"),
    ))

    # eq. 46: p^2 <= p on [0, 1]
    p = sp.Symbol("p", real=True)
    sign, roots = poly_sign_on_interval(p - p ** 2, p, 0, 1)
    steps.append(Step(
        name="eq. 46: sum p_i^2 <= sum p_i for p_i in [0,1]",
        statement="p - p^2 > 0 on (0,1) (and = 0 at the end points)",
        status=status_of(sign == 1 and is_zero((p - p ** 2).subs(p, 0)) and is_zero((p - p ** 2).subs(p, 1))),
        method="real_roots of p - p^2 outside (0,1) + exact evaluation at p = 1/2",
        assumptions=("0 <= p_i <= 1",),
    ))

    # eq. 47: with sum p_+ = sum p_- = 1
    ps = sp.symbols("p1:4", nonnegative=True)
    qs = sp.symbols("q1:3", nonnegative=True)
    pos = list(ps[:-1]) + [1 - sum(ps[:-1])]
    neg = list(qs[:-1]) + [1 - sum(qs[:-1])]
    expr = (1 + beta) ** 2 * sum(pos) + beta ** 2 * sum(neg)
    steps.append(Step(
        name="eq. 47: (1+beta)^2 sum p_+ + beta^2 sum p_- = (1+beta)^2 + beta^2",
        statement="separately normalised positive and negative parts (eq. 45)",
        status=identity_status(expr, (1 + beta) ** 2 + beta ** 2),
        method="simplify(lhs-rhs)==0 with sum constraints substituted",
        assumptions=("sum_i p_{i,+} = 1", "sum_i p_{i,-} = 1"),
    ))

    # eq. 48-49
    k = sp.Symbol("k", integer=True, positive=True)
    total = sp.summation((1 + beta) ** 2 + beta ** 2, (k, 1, R))
    ok48 = is_zero(total - R * ((1 + beta) ** 2 + beta ** 2))
    ok49 = is_zero(sp.sqrt(total) - bound_exact(beta, R))
    steps.append(Step(
        name="eq. 48-49: sum_{k=1}^R |M[:,k]|^2 <= R((1+beta)^2+beta^2); sqrt gives sqrt(R) sqrt(...)",
        statement="summation over R columns and square root",
        status=status_of(ok48 and ok49),
        method="sympy summation + simplify(lhs-rhs)==0",
        assumptions=("R >= 1", "beta >= 0"),
    ))

    # eq. 50
    diff = sp.expand((1 + sp.sqrt(2) * beta) ** 2 - ((1 + beta) ** 2 + beta ** 2))
    slack = (2 * sp.sqrt(2) - 2) * beta
    ok = is_zero(diff - slack) and sign_nonneg(diff) and is_zero(sp.expand((1 + beta) ** 2 + beta ** 2) - (1 + 2 * beta + 2 * beta ** 2))
    ratio = sp.simplify(bound_relaxed(beta, R) / bound_exact(beta, R))
    ratio_lim = sp.limit(ratio, beta, sp.oo)
    crit = [c for c in sp.solve(sp.diff(ratio ** 2, beta), beta) if c.is_positive]
    worst = ", ".join(f"max {sp.nsimplify(sp.simplify(ratio.subs(beta, c)))} ~ {sp.N(ratio.subs(beta, c), 5)} at beta = {c}" for c in crit)
    steps.append(Step(
        name="eq. 50: (1+beta)^2+beta^2 <= (1+sqrt(2) beta)^2",
        statement="(1+sqrt2 beta)^2 - (1+2beta+2beta^2) = (2 sqrt2 - 2) beta >= 0",
        status=status_of(ok),
        method="expand + simplify(diff - slack)==0, is_nonnegative on beta >= 0",
        assumptions=("beta >= 0",),
        note=(f"slack (squared) = (2*sqrt(2)-2)*beta ~ {sp.N(2*sp.sqrt(2)-2, 4)} beta; "
              f"relaxed/exact -> {ratio_lim} as beta -> oo; {worst}"),
    ))
    return Certificate(
        claim="thm4",
        source=SOURCE,
        statement="LRP-beta: sigma_max(M) <= sqrt(R) sqrt((1+beta)^2+beta^2) <= sqrt(R)(1+sqrt(2) beta), beta >= 0",
        steps=tuple(steps),
    )
