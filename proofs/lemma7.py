"""[P1] Lemma 7 (sequential value bound for LRP-beta), eq. (28), proof eq. (51)-(106).

With ``P_t`` the sum of positive and ``N_t`` the magnitude of the sum of negative
attributions at depth ``t`` the proof establishes

* induction start (eq. 55-68): ``P_1 <= 1 + beta``, ``N_1 <= beta``;
* induction step (eq. 86, 101): ``P_t <= (1+beta) P_{t-1} + beta N_{t-1}``,
  ``N_t <= beta P_{t-1} + (1+beta) N_{t-1}``;

and then relaxes the recursion to ``P_t <= 2^(t-1) (1+beta)^t``,
``N_t <= 2^(t-1) beta (1+beta)^(t-1)`` (eq. 90-91, 105-106).  The linear recursion
itself has the exact solution ``P_t = ((1+2beta)^t + 1)/2``, ``N_t = ((1+2beta)^t - 1)/2``.
"""

from __future__ import annotations

import sympy as sp

from proofs.certificate import (Certificate, Step, identity_status, is_zero,
                                sign_nonneg, status_of)

SOURCE = "[P1] Lemma 7, eq. (28), proof eq. (51)-(106) (Appendix A.2)"


def paper_pos(t, beta):
    """[P1] eq. (28)/(91): ``2^(t-1) (1+beta)^t``."""
    return 2 ** (t - 1) * (1 + beta) ** t


def paper_neg(t, beta):
    """[P1] eq. (28)/(106) magnitude: ``2^(t-1) beta (1+beta)^(t-1)``."""
    return 2 ** (t - 1) * beta * (1 + beta) ** (t - 1)


def exact_pos(t, beta):
    """Exact solution of the recursion of eq. (86)/(101): ``((1+2beta)^t + 1)/2``."""
    return ((1 + 2 * sp.sympify(beta)) ** t + 1) / 2


def exact_neg(t, beta):
    """Exact solution of the recursion of eq. (86)/(101): ``((1+2beta)^t - 1)/2``."""
    return ((1 + 2 * sp.sympify(beta)) ** t - 1) / 2


def _symbols():
    beta = sp.Symbol("beta", nonnegative=True)
    k = sp.Symbol("k", integer=True, nonnegative=True)
    return beta, k


def _start_steps(beta) -> list[Step]:
    """eq. 55-68 on a generic layer with 2 outputs and 3 inputs."""
    q1 = sp.Symbol("q1", nonnegative=True)
    q = [q1, 1 - q1]
    p_plus = [[sp.Symbol(f"pp{u}{b}", nonnegative=True) for b in range(2)] for u in range(2)]
    p_minus = [[sp.Symbol(f"pm{u}{b}", nonnegative=True) for b in range(2)] for u in range(2)]
    for u in range(2):
        p_plus[u].append(1 - p_plus[u][0] - p_plus[u][1])
        p_minus[u].append(1 - p_minus[u][0] - p_minus[u][1])
    pos_total = sum(q[u] * (1 + beta) * p_plus[u][b] for u in range(2) for b in range(3))
    neg_total = sum(q[u] * (-beta) * p_minus[u][b] for u in range(2) for b in range(3))
    # sign facts used in (60)-(61) and (65)-(66)
    qs = sp.Symbol("q", nonnegative=True)
    ps = sp.Symbol("p", nonnegative=True)
    signs = sign_nonneg(qs * (1 + beta) * ps) and sign_nonneg(-(qs * (-beta) * ps))
    return [
        Step(
            name="eq. 55-63: P_1 <= sum_b sum_u q_u (1+beta) p_ub+ = 1+beta",
            statement="dropping the non-positive terms and enlarging to all b; sum_b p_ub+ = 1, sum_u q_u = 1",
            status=status_of(signs and is_zero(pos_total - (1 + beta))),
            method="is_nonnegative of the dropped/added terms; simplify(sum - (1+beta))==0 (2 outputs, 3 inputs)",
            assumptions=("q_u >= 0, sum q_u = 1", "p_ub+- in [0,1], sum_b p_ub+- = 1", "beta >= 0"),
        ),
        Step(
            name="eq. 64-68: N_1 <= beta (negative sum >= -beta)",
            statement="sum_b sum_u q_u (-beta) p_ub- = -beta",
            status=status_of(signs and is_zero(neg_total + beta)),
            method="is_nonnegative sign facts; simplify(sum + beta)==0",
            assumptions=("q_u >= 0, sum q_u = 1", "sum_b p_ub- = 1", "beta >= 0"),
        ),
    ]


def _step_steps(beta) -> list[Step]:
    vp = sp.Symbol("v_pos", positive=True)
    vn = sp.Symbol("v_neg", negative=True)
    p = sp.Symbol("p", nonnegative=True)
    # eq. 78-82 / 93-97: term signs
    ok_signs = (sign_nonneg(vp * (1 + beta) * p) and sign_nonneg(-(vp * (-beta) * p))
                and sign_nonneg(-(vn * (1 + beta) * p)) and sign_nonneg(vn * (-beta) * p))
    # eq. 85-86 / 100-101: summing the normalised p over all b
    pp = [[sp.Symbol(f"pp{u}{b}", nonnegative=True) for b in range(2)] for u in range(2)]
    pm = [[sp.Symbol(f"pm{u}{b}", nonnegative=True) for b in range(2)] for u in range(2)]
    for u in range(2):
        pp[u].append(1 - pp[u][0] - pp[u][1])
        pm[u].append(1 - pm[u][0] - pm[u][1])
    upper = sum(vp * (1 + beta) * pp[0][b] + vn * (-beta) * pm[1][b] for b in range(3))
    lower = sum(vp * (-beta) * pm[0][b] + vn * (1 + beta) * pp[1][b] for b in range(3))
    ok_up = is_zero(upper - ((1 + beta) * vp + beta * (-vn)))
    ok_lo = is_zero(lower - (-(beta * vp) - (1 + beta) * (-vn)))
    return [
        Step(
            name="eq. 86: P_t <= (1+beta) P_{t-1} + beta N_{t-1}",
            statement="sign split (78)-(82), enlarge to all b (84), sum_b p_ub = 1 (85)-(86)",
            status=status_of(ok_signs and ok_up),
            method="is_nonnegative on sign-constrained symbols; simplify(sum - rhs)==0",
            assumptions=("beta >= 0", "p in [0,1]", "sum_b p_ub+- = 1"),
        ),
        Step(
            name="eq. 101: N_t <= beta P_{t-1} + (1+beta) N_{t-1}",
            statement="sign split (93)-(97), enlarge to all b (99), sum_b p_ub = 1 (100)-(101)",
            status=status_of(ok_signs and ok_lo),
            method="is_nonnegative on sign-constrained symbols; simplify(sum - rhs)==0",
            assumptions=("beta >= 0", "p in [0,1]", "sum_b p_ub+- = 1"),
        ),
    ]


def _closed_form_steps(beta, k) -> list[Step]:
    t = k + 2  # t >= 2
    steps = []
    ok_start = is_zero(paper_pos(1, beta) - (1 + beta)) and is_zero(paper_neg(1, beta) - beta)
    steps.append(Step(
        name="eq. 28 at t = 1 matches the induction start",
        statement="2^0 (1+beta)^1 = 1+beta, 2^0 beta (1+beta)^0 = beta",
        status=status_of(ok_start),
        method="simplify(subs(t=1) - start)==0",
        assumptions=(),
    ))
    d90 = (1 + beta) ** t - beta ** 2 * (1 + beta) ** (t - 2)
    fact = (1 + beta) ** (t - 2) * (1 + 2 * beta)
    steps.append(Step(
        name="eq. 90: beta^2 (1+beta)^(t-2) <= (1+beta)^t",
        statement="(1+beta)^t - beta^2 (1+beta)^(t-2) = (1+beta)^(t-2) (1+2 beta) >= 0",
        status=status_of(is_zero(d90 - fact) and sign_nonneg(fact)),
        method="simplify(difference - factorised)==0; is_nonnegative with beta >= 0, t = k+2, k >= 0 integer",
        assumptions=("beta >= 0", "t >= 2 integer"),
        note="slack: the dropped amount is 2^(t-2) (1+beta)^(t-2) (1+2beta) per step",
    ))
    rec_p = paper_pos(t, beta) - ((1 + beta) * paper_pos(t - 1, beta) + beta * paper_neg(t - 1, beta))
    steps.append(Step(
        name="eq. 91: 2^(t-1)(1+beta)^t satisfies P_t >= (1+beta)P_{t-1} + beta N_{t-1}",
        statement="2^(t-1)(1+beta)^t - [(1+beta) 2^(t-2)(1+beta)^(t-1) + beta 2^(t-2) beta (1+beta)^(t-2)] >= 0",
        status=status_of(is_zero(rec_p - 2 ** (t - 2) * fact) and sign_nonneg(2 ** (t - 2) * fact)),
        method="simplify(rec - 2^(t-2) (1+beta)^(t-2)(1+2beta))==0 and is_nonnegative",
        assumptions=("beta >= 0", "t >= 2 integer"),
    ))
    rec_n = paper_neg(t, beta) - (beta * paper_pos(t - 1, beta) + (1 + beta) * paper_neg(t - 1, beta))
    steps.append(Step(
        name="eq. 105-106: 2^(t-1) beta (1+beta)^(t-1) = beta P_{t-1} + (1+beta) N_{t-1}",
        statement="the negative closed form satisfies the recursion with equality",
        status=identity_status(rec_n, 0),
        method="simplify(lhs-rhs)==0 for symbolic t",
        assumptions=("t >= 2 integer",),
    ))
    # beta = 0: P_t = 1, N_t = 0 exactly (values in [0,1])
    ok0 = is_zero(exact_pos(t, 0) - 1) and is_zero(exact_neg(t, 0)) and is_zero(exact_pos(1, 0) - 1)
    steps.append(Step(
        name="eq. 28, beta = 0: attributions in [0,1]",
        statement="beta = 0: the recursion gives P_t = P_{t-1} = ... = 1, N_t = 0",
        status=status_of(ok0),
        method="exact recursion solution at beta = 0, simplify",
        assumptions=("beta = 0",),
    ))
    return steps


def certificate() -> Certificate:
    beta, k = _symbols()
    steps = _start_steps(beta) + _step_steps(beta) + _closed_form_steps(beta, k)
    return Certificate(
        claim="lemma7",
        source=SOURCE,
        statement="LRP-beta: sum of positive attributions <= 2^(t-1)(1+beta)^t, negative >= -2^(t-1) beta (1+beta)^(t-1)",
        steps=tuple(steps),
    )


def certificate_exact() -> Certificate:
    beta, k = _symbols()
    t = sp.Symbol("t", integer=True, nonnegative=True)
    P, N = exact_pos(t, beta), exact_neg(t, beta)
    ok_init = is_zero(P.subs(t, 0) - 1) and is_zero(N.subs(t, 0))
    ok_rec = (is_zero(P.subs(t, t + 1) - ((1 + beta) * P + beta * N))
              and is_zero(N.subs(t, t + 1) - (beta * P + (1 + beta) * N)))
    # cross-check with rsolve on the decoupled sum / difference sequences
    f = sp.Function("f")
    sol_sum = sp.rsolve(f(t + 1) - (1 + 2 * beta) * f(t), f(t), {f(0): 1})
    sol_dif = sp.rsolve(f(t + 1) - f(t), f(t), {f(0): 1})
    ok_rs = is_zero(sol_sum - (P + N)) and is_zero(sol_dif - (P - N))
    steps = [Step(
        name="exact solution of eq. (86)/(101) with P_0 = 1, N_0 = 0",
        statement="P_t = ((1+2beta)^t+1)/2, N_t = ((1+2beta)^t-1)/2",
        status=status_of(ok_init and ok_rec and ok_rs),
        method="initial values + simplify(recursion residual)==0 for symbolic t; rsolve of P+N and P-N",
        assumptions=("beta >= 0", "t >= 0 integer"),
        note="the coefficients are nonnegative, so by induction the true sums are <= this solution",
    )]
    # looseness of the positive bound
    ratio = paper_pos(t, beta) / exact_pos(t, beta)
    base = (2 + 2 * beta) / (1 + 2 * beta)
    lim_pos = sp.limit((ratio / base ** t).subs(beta, 1), t, sp.oo)
    lim_zero = sp.limit((ratio / base ** t).subs(beta, 0), t, sp.oo)
    ok = is_zero(sp.simplify(ratio / base ** t) - (1 + 2 * beta) ** t / ((1 + 2 * beta) ** t + 1)) and lim_pos == 1
    steps.append(Step(
        name="looseness: paper P_t / exact P_t ~ ((2+2beta)/(1+2beta))^t",
        statement=f"2^(t-1)(1+beta)^t / (((1+2beta)^t+1)/2) = ((2+2beta)/(1+2beta))^t * (1+2beta)^t/((1+2beta)^t+1); "
                  f"limit of the last factor: {lim_pos} at beta=1, {lim_zero} at beta=0",
        status=status_of(ok),
        method="simplify identity; sympy.limit t -> oo",
        assumptions=("beta >= 0",),
        note=f"growth base {sp.simplify(base)}: {base.subs(beta, 0)} at beta=0, {base.subs(beta, 1)} at beta=1",
    ))
    n = sp.Symbol("n", integer=True, positive=True)
    range_ratio = (paper_pos(n, beta) + paper_neg(n, beta)) / (exact_pos(n, beta) + exact_neg(n, beta))
    ok = is_zero(range_ratio - base ** (n - 1))
    steps.append(Step(
        name="looseness of the range (eq. 31 / exact): ((2+2beta)/(1+2beta))^(n-1)",
        statement=f"paper range / exact range = ({sp.simplify(base)})^(n-1); at beta=1: {sp.simplify(range_ratio.subs(beta, 1))}",
        status=status_of(ok),
        method="simplify(ratio - base^(n-1))==0",
        assumptions=("beta > 0",),
        note="at beta=1 the paper's range is (4/3)^(n-1) times the exact one",
    ))
    return Certificate(
        claim="lemma7_exact",
        source=SOURCE,
        statement="P_t <= ((1+2beta)^t+1)/2, N_t <= ((1+2beta)^t-1)/2 (exact solution of the proof's recursion)",
        steps=tuple(steps),
    )
