"""[P1] Lemma 8 (sequential value bound for LRP-gamma), eq. (29)-(30), proof eq. (107)-(224).

Notation: ``s = sqrt(gamma) > 1``, ``P = sum_b (y_b)_+ > 0``, ``Nm = -sum_{y_b<0} y_b >= 0``;
condition (29) reads ``Nm < s P``.  The per-step coefficients of the induction step
are ``c_plus = (1+gamma)/(1+gamma-s)`` (eq. 181) and ``c_minus = s/(1+gamma-s)``
(eq. 182, 188-189), with ``c_plus - c_minus = 1``.
"""

from __future__ import annotations

import sympy as sp

from proofs.certificate import (Certificate, Step, identity_status, is_zero,
                                poly_sign_on_interval, sign_nonneg, sign_pos, status_of)

SOURCE = "[P1] Lemma 8, eq. (29)-(30), proof eq. (107)-(224) (Appendix A.3)"


def c_plus(s):
    """[P1] eq. (139)/(181): ``(1+gamma)/(1+gamma-sqrt(gamma))`` with ``s = sqrt(gamma)``."""
    return (1 + s ** 2) / (1 + s ** 2 - s)


def c_minus(s):
    """[P1] eq. (188)-(189): ``sqrt(gamma)/(1+gamma-sqrt(gamma))``."""
    return s / (1 + s ** 2 - s)


def start_neg(s):
    """[P1] eq. (140): magnitude ``1/(sqrt(gamma)-1)`` of the induction-start negative bound."""
    return 1 / (s - 1)


def b_of(s):
    """[P1] eq. (30): ``b(gamma) = max(1/(sqrt(gamma)-1), c_plus)``."""
    return sp.Max(start_neg(s), c_plus(s))


def threshold_polynomial(s):
    """Numerator of ``c_plus - 1/(s-1)`` for ``s > 1`` (denominators are positive)."""
    num, _ = sp.fraction(sp.together(c_plus(s) - start_neg(s)))
    return sp.expand(num)


def gamma_threshold():
    """Exact ``(s0, gamma0)``: ``b(gamma) = c_plus`` iff ``gamma >= gamma0 = s0^2``."""
    s = sp.Symbol("s", real=True)
    roots = [r for r in sp.real_roots(sp.Poly(threshold_polynomial(s), s)) if r > 1]
    s0 = roots[0]
    return s0, s0 ** 2


def _syms():
    d = sp.Symbol("d", positive=True)   # s = 1 + d > 1
    s = 1 + d
    P = sp.Symbol("P", positive=True)
    eps = sp.Symbol("epsilon", positive=True)  # (29): Nm = (1-eps) s P, 0 < eps <= 1
    Nm = (1 - eps) * s * P
    return d, s, P, eps, Nm


def certificate() -> Certificate:
    d, s, P, eps, Nm = _syms()
    g = s ** 2
    steps = []
    D = -Nm / g + (1 + 1 / g) * P  # sum_b' gamma^-1 y_b' + (y_b')_+
    gap118 = D - (1 + 1 / g - 1 / s) * P
    steps.append(Step(
        name="eq. 118/163: (29) => sum_b' gamma^-1 y + (y)_+ > (1+1/gamma-1/sqrt(gamma)) sum (y)_+",
        statement="D - (1+1/g-1/s) P = eps P / s > 0 with Nm = (1-eps) s P (condition (29))",
        status=status_of(is_zero(gap118 - eps * P / s) and sign_pos(eps * P / s)),
        method="simplify(gap - eps P/s)==0, is_positive on P, eps > 0, s = 1+d",
        assumptions=("gamma > 1", "(29): gamma^-1/2 Nm < P", "P > 0"),
    ))
    low167 = (1 / g - (1 + 1 / g) / s) * (-Nm)
    gap167 = D - low167
    steps.append(Step(
        name="eq. 166-167: D > (gamma^-1 - (1+gamma^-1) gamma^-1/2) sum_{y<0} y",
        statement="D - (1/g - (1+1/g)/s)(-Nm) = (1+1/g) (P - Nm/s) > 0",
        status=status_of(is_zero(gap167 - (1 + 1 / g) * (P - Nm / s)) and sign_pos(sp.factor(gap167))),
        method="simplify identity + is_positive under (29)",
        assumptions=("gamma > 1", "(29)"),
        note="the lower bound itself is positive: (1+g-s)/s^3 * Nm",
    ))
    ok = (is_zero((1 + 1 / g) / (1 + 1 / g - 1 / s) - c_plus(s))
          and is_zero((1 / g) / (1 / g - (1 + 1 / g) / s) - 1 / (1 - (1 + 1 / g) * s)))
    steps.append(Step(
        name="eq. 179-182: coefficient simplification",
        statement="(1+1/g)/(1+1/g-1/s) = (1+g)/(1+g-s); g^-1/(g^-1-(1+g^-1)g^-1/2) = 1/(1-(1+g^-1)s)",
        status=status_of(ok),
        method="simplify(lhs-rhs)==0",
        assumptions=("gamma > 1",),
    ))
    steps.append(Step(
        name="eq. 188: -1/(1-(1+1/gamma) sqrt(gamma)) = sqrt(gamma)/(1+gamma-sqrt(gamma))",
        statement="identity, = c_minus",
        status=identity_status(-1 / (1 - (1 + 1 / g) * s), c_minus(s)),
        method="simplify(lhs-rhs)==0",
        assumptions=("gamma > 1",),
    ))
    diff = c_plus(s) - c_minus(s)
    steps.append(Step(
        name="eq. 189: c_minus <= c_plus",
        statement="c_plus - c_minus = 1 > 0",
        status=status_of(is_zero(diff - 1)),
        method="simplify(c_plus - c_minus - 1)==0",
        assumptions=("gamma > 1",),
    ))
    alpha = 1 / s
    gap = start_neg(s) - c_minus(s)
    ok = (is_zero(alpha / (alpha - 1) - 1 / (1 - s)) and sign_pos(gap)
          and is_zero(gap - 1 / ((s - 1) * (s ** 2 - s + 1))))
    steps.append(Step(
        name="eq. 135/140: induction-start negative bound 1/(1-sqrt(gamma)) (looser than c_minus)",
        statement="alpha/(alpha-1) = 1/(1-s) for alpha = 1/s; 1/(s-1) - c_minus = 1/((s-1)(s^2-s+1)) > 0",
        status=status_of(ok),
        method="simplify identities; is_positive with s = 1+d, d > 0",
        assumptions=("gamma > 1",),
        note="eq. (130) drops the factor (1+1/gamma) of sum (y)_+; keeping it gives N_1 <= c_minus (as in eq. 167)",
    ))
    # eq. 191-195 and 220-224: uses b >= c_plus, b >= 1/(s-1), c_minus <= c_plus
    B = sp.Symbol("b", positive=True)
    e1, e2 = sp.symbols("e1 e2", nonnegative=True)  # b = c_plus + e1 = 1/(s-1) + e2
    up_gap = (c_plus(s) * B + B * c_plus(s)) - (c_plus(s) ** 2 + start_neg(s) * c_minus(s))
    # rewrite as c_plus (b - c_plus) + c_plus (b - 1/(s-1)) + (c_plus - c_minus)/(s-1)
    decomposed = c_plus(s) * e1 + c_plus(s) * e2 + (c_plus(s) - c_minus(s)) / (s - 1)
    ok_up = (is_zero(up_gap.subs(B, c_plus(s) + e1) - decomposed.subs(e2, c_plus(s) + e1 - start_neg(s)))
             and sign_nonneg(c_plus(s) * e1) and sign_nonneg(c_plus(s) * e2) and sign_pos((c_plus(s) - c_minus(s)) / (s - 1)))
    steps.append(Step(
        name="eq. 191-195: c_plus^2 + c_minus/(sqrt(gamma)-1) <= 2 c_plus b(gamma)",
        statement="2 c_plus b - c_plus^2 - c_minus/(s-1) = c_plus(b-c_plus) + c_plus(b-1/(s-1)) + (c_plus-c_minus)/(s-1) >= 0",
        status=status_of(ok_up),
        method="simplify decomposition identity; is_nonnegative of each term (b >= both arguments of max)",
        assumptions=("gamma > 1", "b = max(1/(s-1), c_plus)"),
    ))
    low_gap = (-c_minus(s) * c_plus(s) - c_plus(s) * start_neg(s)) - (-2 * start_neg(s) * B)
    # = 1/(s-1) * (b - c_plus) * 2 ... check sign with b = c_plus + e1
    ok_low = sign_pos(start_neg(s) - c_minus(s)) and sign_nonneg(sp.factor(low_gap.subs(B, c_plus(s) + e1)))
    steps.append(Step(
        name="eq. 220-224: lower bound step, -c_minus c_plus - c_plus/(s-1) >= -2 b/(s-1)",
        statement="(221) uses -c_minus >= -1/(s-1); (223) uses c_plus <= b with the negative factor 1/(1-s)",
        status=status_of(ok_low),
        method="is_positive/is_nonnegative after substituting b = c_plus + e1, s = 1+d",
        assumptions=("gamma > 1", "b >= c_plus"),
    ))
    # rows with sum (y)_+ = 0 are exempt from (29); eq. (160) drops their terms as if non-positive
    yd = sp.symbols("y1:4", negative=True)
    gam = s ** 2
    row = [(v + gam * sp.Max(v, 0)) / sum(w + gam * sp.Max(w, 0) for w in yd) for v in yd]
    ok = (all(sign_nonneg(sp.simplify(e)) for e in row) and is_zero(sum(row) - 1)
          and sign_pos(c_plus(s) - 1) and sign_pos(c_plus(s) - c_minus(s)))
    steps.append(Step(
        name="eq. 158-160 for rows with sum_b (y_ub)_+ = 0 (exempt from (29))",
        statement="such a row has entries y_ub/sum_b' y_ub' >= 0 summing to 1: weight 1 < c_plus on the sign of v_u",
        status=status_of(ok),
        method="is_nonnegative on negative symbols, simplify(sum-1)==0, is_positive(c_plus-1)",
        assumptions=("gamma > 1",),
        note=("gap in the proof: eq. (158)-(160) treats v_u gamma^-1 y_ub / D as <= 0 for v_u > 0, y_ub < 0, which "
              "is false when D < 0 (all y_ub < 0; handled only in the induction start, eq. 113-115); "
              "the bound survives because the row's coefficient 1 is below c_plus"),
    ))
    # gamma >= 4 and the exact threshold
    sr = sp.Symbol("s", real=True)
    poly = threshold_polynomial(sr)
    target = sr ** 3 - 2 * sr ** 2 + 2 * sr - 2
    s0, g0 = gamma_threshold()
    sign_above, _ = poly_sign_on_interval(poly, sr, 2, sp.oo)
    sign_mid, _ = poly_sign_on_interval(poly, sr, s0, sp.oo)
    sign_below, _ = poly_sign_on_interval(poly, sr, 1, s0)
    den_pos = poly_sign_on_interval((1 + sr ** 2 - sr) * (sr - 1), sr, 1, sp.oo)[0] == 1
    ok = is_zero(poly - target) and den_pos and sign_above == 1 and poly.subs(sr, 2) > 0
    steps.append(Step(
        name="eq. 30 remark: gamma >= 4 => b(gamma) = (1+gamma)/(1+gamma-sqrt(gamma))",
        statement="with s = sqrt(gamma): c_plus - 1/(s-1) = (s^3-2s^2+2s-2)/((s-1)(s^2-s+1)) >= 0 for s >= 2",
        status=status_of(ok),
        method="together -> numerator polynomial; real_roots root isolation; exact evaluation",
        assumptions=("gamma >= 4",),
        note=(f"not sharp: the claim holds iff s^3-2s^2+2s-2 >= 0 iff s >= s0 = {s0} ~ {sp.N(s0, 6)}, "
              f"i.e. gamma >= gamma0 = s0^2 ~ {sp.N(g0, 6)} (positive on (s0, oo): {sign_mid == 1}, "
              f"negative on (1, s0): {sign_below == -1})"),
        data={"s0": float(sp.N(s0, 15)), "gamma0": float(sp.N(g0, 15))},
    ))
    return Certificate(
        claim="lemma8",
        source=SOURCE,
        statement="LRP-gamma under (29): positive sum <= 2^(t-1) c_plus b^(t-1), negative sum >= -2^(t-1) b^(t-1)/(sqrt(gamma)-1)",
        steps=tuple(steps),
    )


def exact_pos(t, s):
    """Exact solution of the proof's recursion: ``((1+2c_minus)^t + 1)/2``."""
    return ((1 + 2 * c_minus(s)) ** t + 1) / 2


def exact_neg(t, s):
    """Exact solution of the proof's recursion: ``((1+2c_minus)^t - 1)/2``."""
    return ((1 + 2 * c_minus(s)) ** t - 1) / 2


def paper_range(n, s):
    """[P1] eq. (33): ``2^(n-1) b^(n-1) (c_plus + 1/(sqrt(gamma)-1))``."""
    return 2 ** (n - 1) * b_of(s) ** (n - 1) * (c_plus(s) + start_neg(s))


def exact_range(n, s):
    """Exact range ``((1+gamma+sqrt(gamma))/(1+gamma-sqrt(gamma)))^n``."""
    return ((1 + s ** 2 + s) / (1 + s ** 2 - s)) ** n


def certificate_exact() -> Certificate:
    d = sp.Symbol("d", positive=True)
    s = 1 + d
    t = sp.Symbol("t", integer=True, nonnegative=True)
    cp, cm = c_plus(s), c_minus(s)
    P, N = exact_pos(t, s), exact_neg(t, s)
    ok = (is_zero(P.subs(t, 0) - 1) and is_zero(N.subs(t, 0))
          and is_zero(P.subs(t, t + 1) - (cp * P + cm * N))
          and is_zero(N.subs(t, t + 1) - (cm * P + cp * N))
          and sign_pos(cp) and sign_pos(cm))
    steps = [Step(
        name="exact solution: P_t <= c_plus P_{t-1} + c_minus N_{t-1}, N_t <= c_minus P_{t-1} + c_plus N_{t-1}",
        statement="P_0=1, N_0=0: P_t = ((1+2c_minus)^t+1)/2, N_t = ((1+2c_minus)^t-1)/2",
        status=status_of(ok),
        method="initial values + simplify(recursion residual)==0 for symbolic t; coefficients is_positive",
        assumptions=("gamma > 1", "(29) in every layer"),
        note="recursion from eq. (181)-(182) and (219); start N_1 <= c_minus from the (167) bound instead of (140)",
    )]
    steps.append(Step(
        name="1 + 2 c_minus = (1+gamma+sqrt(gamma))/(1+gamma-sqrt(gamma)) = c_plus + c_minus",
        statement="identity",
        status=status_of(is_zero(1 + 2 * cm - (1 + s ** 2 + s) / (1 + s ** 2 - s)) and is_zero(cp + cm - 1 - 2 * cm)),
        method="simplify(lhs-rhs)==0",
        assumptions=("gamma > 1",),
    ))
    # looseness at gamma = 4 and growth base for gamma >= gamma0
    n = sp.Symbol("n", integer=True, positive=True)
    r4 = sp.simplify(paper_range(n, sp.Integer(2)) / exact_range(n, sp.Integer(2)))
    base = sp.simplify(2 * cp / (1 + 2 * cm))
    g = sp.Symbol("gamma", positive=True)
    lim_base = sp.limit(base.subs(d, sp.sqrt(g) - 1), g, sp.oo)
    ok = is_zero(r4 - sp.Rational(8, 7) * sp.Rational(10, 7) ** (n - 1)) and lim_base == 2
    steps.append(Step(
        name="looseness: paper range (eq. 33) / exact range",
        statement=f"gamma=4: ratio = {r4}; for gamma >= gamma0 it grows like (2(1+gamma)/(1+gamma+sqrt(gamma)))^(n-1) -> 2^(n-1)",
        status=status_of(ok),
        method="simplify at gamma=4, sympy.limit of the growth base gamma -> oo",
        assumptions=("gamma >= gamma0",),
        note=f"growth base 2 b / (1+2c_minus) = {base} (b = c_plus); limit {lim_base}; exact range -> 1 as gamma -> oo",
    ))
    return Certificate(
        claim="lemma8_exact",
        source=SOURCE,
        statement="under (29): P_t <= ((1+2c_minus)^t+1)/2, N_t <= ((1+2c_minus)^t-1)/2, 1+2c_minus = (1+gamma+sqrt(gamma))/(1+gamma-sqrt(gamma))",
        steps=tuple(steps),
    )
