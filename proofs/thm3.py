"""[P1] Theorem 3 (singular value for the vector of ones), proof eq. (17).

The theorem claims that for every relevance-conserving ``M`` (``S x R``, columns
summing to one, [P1] eq. (16)) ``sqrt(R/S)`` is a singular value attained for the
singular vector ``1_S / sqrt(S)``.  The proof, eq. (17), only evaluates the
Rayleigh quotient ``1^T M M^T 1 / S = R/S``.  That identity is true and gives
``sigma_max >= sqrt(R/S)``; but ``M M^T 1_S = M 1_R`` is the vector of row sums,
so ``1_S`` is a singular vector only if the row sums are constant.
"""

from __future__ import annotations

import sympy as sp

from proofs.certificate import (Certificate, Step, identity_status,
                                is_zero, sign_nonneg, status_of)

SOURCE = "[P1] Theorem 3, eq. (16)-(17)"


def _conserving_matrix(S: int, R: int, prefix: str = "m") -> sp.Matrix:
    """Generic symbolic S x R matrix whose columns sum to 1 ([P1] eq. (16))."""
    M = sp.Matrix(S, R, lambda i, k: sp.Symbol(f"{prefix}{i}{k}", real=True))
    for k in range(R):
        M[S - 1, k] = 1 - sum(M[i, k] for i in range(S - 1))
    return M


def lrp0_matrix(W, z) -> sp.Matrix:
    """Exact LRP-beta matrix for beta = 0 ([P1] eq. (7), (13)): ``M[b, a] = (w_ab z_b)_+ / sum_b' (w_ab' z_b')_+``."""
    W = sp.Matrix(W)
    z = [sp.nsimplify(v) for v in z]
    R, S = W.shape
    M = sp.zeros(S, R)
    for a in range(R):
        pos = [sp.Max(W[a, b] * z[b], 0) for b in range(S)]
        tot = sum(pos)
        for b in range(S):
            M[b, a] = pos[b] / tot
    return M


#: explicit counterexample: W (R x S), z (S); M = M(g) is S x R.
COUNTEREXAMPLE_W = [[1, 0], [1, 1]]
COUNTEREXAMPLE_Z = [1, 1]


def _rayleigh_steps() -> list[Step]:
    steps = []
    for S, R in ((2, 3), (3, 2)):
        M = _conserving_matrix(S, R)
        one = sp.ones(S, 1)
        q = (one.T * M * M.T * one)[0, 0] / S
        steps.append(Step(
            name=f"eq. 17 ({S}x{R}): 1_S^T M M^T 1_S / S = R/S",
            statement=f"for generic {S}x{R} M with 1_S^T M = 1_R^T: (1^T M M^T 1)/S - {R}/{S} = 0",
            status=identity_status(q, sp.Rational(R, S)),
            method="simplify(lhs-rhs)==0 on a symbolic matrix with column sums substituted",
            assumptions=("columns of M sum to 1 (eq. 16)",),
        ))
    # consequence: sigma_max^2 = lambda_max(MM^T) >= Rayleigh quotient (2x2 Gram, generic)
    a, c = sp.symbols("a c", real=True)
    b = sp.Symbol("b", real=True)
    lam_max = (a + c) / 2 + sp.sqrt(((a - c) / 2) ** 2 + b ** 2)
    G = sp.Matrix([[a, b], [b, c]])
    lam = sp.Symbol("lam")
    char_ok = is_zero(G.charpoly(lam).as_expr().subs(lam, lam_max))
    rq = (sp.Matrix([[1, 1]]) * G * sp.Matrix([1, 1]))[0, 0] / 2  # unit vector (1,1)/sqrt 2
    # lam_max - rq = sqrt(d^2 + b^2) - b >= 0  <=  (d^2 + b^2) - b^2 = d^2 >= 0
    gap_sq = (((a - c) / 2) ** 2 + b ** 2) - b ** 2
    ok = char_ok and is_zero(lam_max - rq - (sp.sqrt(((a - c) / 2) ** 2 + b ** 2) - b)) and sign_nonneg(gap_sq)
    steps.append(Step(
        name="consequence: sigma_max(M) >= sqrt(R/S)",
        statement="lambda_max(G) >= u^T G u for unit u (G = M M^T), hence sigma_max^2 >= R/S",
        status=status_of(ok),
        method="2x2 Gram: lambda_max root of charpoly; lambda_max - u^T G u = sqrt(d^2+b^2) - b, d^2 >= 0 by assumptions",
        assumptions=("G symmetric", "u unit vector"),
        note="general S: Courant-Fischer; only a lower bound on sigma_max",
    ))
    return steps


def _singular_vector_steps() -> list[Step]:
    steps = []
    # identity M M^T 1_S = M 1_R (row sums) for every conserving M
    M = _conserving_matrix(2, 3)
    steps.append(Step(
        name="M M^T 1_S = M 1_R (row sums)",
        statement="for 1_S^T M = 1_R^T: M M^T 1_S - M 1_R = 0",
        status=identity_status(M * M.T * sp.ones(2, 1), M * sp.ones(3, 1)),
        method="simplify(lhs-rhs)==0, symbolic 2x3",
        assumptions=("columns of M sum to 1",),
    ))
    # counterexample
    M = lrp0_matrix(COUNTEREXAMPLE_W, COUNTEREXAMPLE_Z)
    S, R = M.shape
    col_ok = all(is_zero(s - 1) for s in (sp.ones(1, S) * M))
    G = M * M.T
    v = G * sp.ones(S, 1)
    parallel = is_zero(v[0] * 1 - v[1] * 1)  # v parallel to (1,1)?
    lam = sp.Symbol("lam")
    eig = sp.roots(G.charpoly(lam).as_expr(), lam)
    target = sp.Rational(R, S)
    is_sv = any(is_zero(e - target) for e in eig)
    ok = col_ok and (parallel or is_sv)
    steps.append(Step(
        name="Theorem 3: 1_S/sqrt(S) is a singular vector with value sqrt(R/S)",
        statement=f"M = {M.tolist()} (LRP-0 for W={COUNTEREXAMPLE_W}, z={COUNTEREXAMPLE_Z}): M M^T 1 = {list(v)}, eig(M M^T) = {list(eig)}",
        status=status_of(ok),
        method="exact rational M; charpoly roots of M M^T compared with R/S by simplify",
        assumptions=("columns of M sum to 1",),
        note=("counterexample: M M^T 1_S is not parallel to 1_S and R/S = "
              f"{target} is not an eigenvalue of M M^T, so sqrt(R/S) is not a singular value; "
              "repair: constant row sums M 1_R = (R/S) 1_S"),
        data={"M": [[str(x) for x in row] for row in M.tolist()], "R_over_S": str(target),
              "eigenvalues_MMt": [str(e) for e in eig]},
    ))
    # repair: constant row sums
    a_, b_ = sp.symbols("a b", real=True)
    Mr = sp.Matrix([[a_, b_, sp.Rational(3, 2) - a_ - b_], [1 - a_, 1 - b_, a_ + b_ - sp.Rational(1, 2)]])
    cols = sp.ones(1, 2) * Mr
    rows = Mr * sp.ones(3, 1)
    rep_ok = (all(is_zero(c - 1) for c in cols) and all(is_zero(r - sp.Rational(3, 2)) for r in rows)
              and is_zero((Mr * Mr.T * sp.ones(2, 1) - sp.Rational(3, 2) * sp.ones(2, 1)).norm() ** 2))
    steps.append(Step(
        name="repair: constant row sums M 1_R = (R/S) 1_S => singular vector",
        statement="generic 2x3 M with column sums 1 and row sums 3/2: M M^T 1_S = (R/S) 1_S",
        status=status_of(rep_ok),
        method="simplify(M M^T 1 - (R/S) 1)==0 on a symbolic matrix",
        assumptions=("columns sum to 1", "rows sum to R/S"),
        note="then M^T (1_S/sqrt S) has norm sqrt(R/S) and is an eigen-direction: sqrt(R/S) is a singular value",
    ))
    return steps


def certificate() -> Certificate:
    """Theorem 3 as stated (Rayleigh identity, singular-vector claim, repair)."""
    return Certificate(
        claim="thm3",
        source=SOURCE,
        statement="relevance-conserving M: sqrt(R/S) is a singular value of M attained for 1_S/sqrt(S)",
        steps=tuple(_rayleigh_steps() + _singular_vector_steps()),
    )


def rayleigh_certificate() -> Certificate:
    """What eq. (17) does prove: Rayleigh quotient R/S, hence sigma_max >= sqrt(R/S)."""
    return Certificate(
        claim="thm3_rayleigh",
        source=SOURCE,
        statement="relevance-conserving M: 1_S^T M M^T 1_S / S = R/S, hence sigma_max(M) >= sqrt(R/S)",
        steps=tuple(_rayleigh_steps()),
    )
