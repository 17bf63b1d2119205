"""[P1] value ranges for Hoeffding's inequality: eq. (31) (LRP-beta) and eq. (33) (LRP-gamma)."""

from __future__ import annotations

import sympy as sp

from proofs import lemma7, lemma8
from proofs.certificate import Certificate, Step, is_zero, status_of

SOURCE31 = "[P1] eq. (31) from Lemma 7 eq. (28)"
SOURCE33 = "[P1] eq. (33) from Lemma 8 eq. (30)"


def certificate_eq31() -> Certificate:
    beta = sp.Symbol("beta", nonnegative=True)
    n = sp.Symbol("n", integer=True, positive=True)
    total = lemma7.paper_pos(n, beta) + lemma7.paper_neg(n, beta)
    eq31 = 2 ** (n - 1) * (1 + 2 * beta) * (1 + beta) ** (n - 1)
    steps = [Step(
        name="eq. 31, beta > 0: P_n + N_n = 2^(n-1)(1+2beta)(1+beta)^(n-1)",
        statement="2^(n-1)(1+beta)^n + 2^(n-1) beta (1+beta)^(n-1) = 2^(n-1)(1+2beta)(1+beta)^(n-1)",
        status=status_of(is_zero(total - eq31)),
        method="simplify(lhs-rhs)==0 for symbolic n",
        assumptions=("beta > 0", "n >= 1 integer"),
    )]
    ok = is_zero(lemma7.exact_pos(n, 0) + lemma7.exact_neg(n, 0) - 1)
    steps.append(Step(
        name="eq. 31, beta = 0: z_u - z_l = 1",
        statement="beta=0 case of Lemma 7: P_n = 1, N_n = 0, values in [0,1]",
        status=status_of(ok),
        method="exact recursion solution at beta=0, simplify",
        assumptions=("beta = 0",),
        note=f"the beta>0 formula at beta=0 gives {eq31.subs(beta, 0)}, so the case split is needed",
    ))
    return Certificate(claim="eq31", source=SOURCE31,
                       statement="z_u - z_l = 2^(n-1)(1+2beta)(1+beta)^(n-1) (beta>0), 1 (beta=0)",
                       steps=tuple(steps))


def certificate_eq31_exact() -> Certificate:
    beta = sp.Symbol("beta", nonnegative=True)
    n = sp.Symbol("n", integer=True, positive=True)
    total = lemma7.exact_pos(n, beta) + lemma7.exact_neg(n, beta)
    steps = [Step(
        name="exact range: P_n + N_n = (1+2beta)^n",
        statement="((1+2beta)^n+1)/2 + ((1+2beta)^n-1)/2 = (1+2beta)^n (covers beta = 0: 1)",
        status=status_of(is_zero(total - (1 + 2 * beta) ** n) and is_zero(total.subs(beta, 0) - 1)),
        method="simplify(lhs-rhs)==0",
        assumptions=("beta >= 0",),
        note="ratio to eq. 31: ((2+2beta)/(1+2beta))^(n-1), see lemma7_exact",
    )]
    return Certificate(claim="eq31_exact", source=SOURCE31 + " with the exact recursion solution",
                       statement="z_u - z_l <= (1+2beta)^n", steps=tuple(steps))


def certificate_eq33() -> Certificate:
    d = sp.Symbol("d", positive=True)
    s = 1 + d
    n = sp.Symbol("n", integer=True, positive=True)
    b = lemma8.b_of(s)
    pos = 2 ** (n - 1) * lemma8.c_plus(s) * b ** (n - 1)
    neg = 2 ** (n - 1) * lemma8.start_neg(s) * b ** (n - 1)
    steps = [Step(
        name="eq. 33: sum of the two bounds of eq. 30",
        statement="2^(n-1) c_plus b^(n-1) + 2^(n-1) b^(n-1)/(sqrt(gamma)-1) = 2^(n-1) b^(n-1) (c_plus + 1/(sqrt(gamma)-1))",
        status=status_of(is_zero(pos + neg - lemma8.paper_range(n, s))),
        method="simplify(lhs-rhs)==0 with b = Max(...) kept symbolic",
        assumptions=("gamma > 1", "(29)"),
    )]
    return Certificate(claim="eq33", source=SOURCE33,
                       statement="z_u - z_l = 2^(n-1) b(gamma)^(n-1) (c_plus + 1/(sqrt(gamma)-1))",
                       steps=tuple(steps))


def certificate_eq33_exact() -> Certificate:
    d = sp.Symbol("d", positive=True)
    s = 1 + d
    n = sp.Symbol("n", integer=True, positive=True)
    total = lemma8.exact_pos(n, s) + lemma8.exact_neg(n, s)
    g = sp.Symbol("gamma", positive=True)
    lim = sp.limit(((1 + g + sp.sqrt(g)) / (1 + g - sp.sqrt(g))), g, sp.oo)
    steps = [Step(
        name="exact range: P_n + N_n = ((1+gamma+sqrt(gamma))/(1+gamma-sqrt(gamma)))^n",
        statement="sum of the exact recursion solutions",
        status=status_of(is_zero(total - lemma8.exact_range(n, s)) and lim == 1),
        method="simplify(lhs-rhs)==0; limit of the base gamma -> oo",
        assumptions=("gamma > 1", "(29) in every layer"),
        note=f"base -> {lim} as gamma -> oo (the beta=0 range 1); at gamma=4 the paper's eq. 33 is (8/7)(10/7)^(n-1) times larger",
    )]
    return Certificate(claim="eq33_exact", source=SOURCE33 + " with the exact recursion solution",
                       statement="z_u - z_l <= ((1+gamma+sqrt(gamma))/(1+gamma-sqrt(gamma)))^n", steps=tuple(steps))
