"""The fuzz checks: one :class:`Claim` per fuzzed result of [P1] and [P2].

Each claim is declared once in :mod:`boundcheck.claims_registry` (name, paper
reference, statement, expected verdict); :meth:`Claim.declared` binds a check to
that declaration and refuses an undeclared name, and importing this module fails
when a declared fuzzed claim has no check.  Each claim here adds a hypothesis
strategy (:mod:`boundcheck.fuzz.strategies`); a checker returning a
:class:`Check`; and optionally a :class:`Condition` under which it is expected
to hold (the runner reports ``HOLDS_ONLY_UNDER`` when every failure violates the
condition and every example satisfying it holds).

Every bound is taken from :mod:`boundcheck.bounds` / :mod:`boundcheck.hoeffding`
(the single source of truth) and every LRP matrix from :mod:`boundcheck.rules`.

Tolerance
---------
An inequality ``value <= bound`` is accepted when
``value <= bound + RTOL * |bound|`` with ``RTOL = 1e-9`` (:func:`le`).  An
equality of sums (Rayleigh quotient, conservation, moment identities) is
accepted within ``RTOL`` times the magnitude of its summands, because
cancellation leaves that much rounding error.  A ``ratio`` is always
``observed / bound`` (tightness; <= 1 means within the bound).

References
----------
[P1] Binder et al. (2025), Theorem 3-4, Corollary 5, Known Result 1 and 9,
Lemma 7-8, eq. (16), (22)-(33).  [P2] Supplement, A.2, B-E.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any, Callable

import numpy as np
from hypothesis import strategies as st

from boundcheck import bounds, claims_registry, rules
from boundcheck.errors import InputError
from boundcheck.fuzz import strategies as S

#: Relative tolerance of every "<=" comparison.
RTOL = 1e-9


def le(value: float, bound: float, rtol: float = RTOL) -> bool:
    """``value <= bound`` up to ``rtol * |bound|`` (NaN is never accepted)."""
    return bool(value <= bound + rtol * abs(bound))


def _ratio(value: float, bound: float) -> float:
    if bound > 0:
        return value / bound
    return 0.0 if value <= 0 else math.inf


@dataclass
class Check:
    """Result of checking one example.

    Attributes
    ----------
    ok : bool
        Whether the claim holds on the example.
    ratio : float or None
        Largest ``observed / bound`` on the example (tightness), if meaningful.
    depth : int or None
        Depth at which ``ratio`` was observed (Lemma 7/8).
    details : dict
        JSON-ready diagnostics (observed values, bounds, residuals).
    ratio_by_depth : dict or None
        ``{t: observed/bound}`` for every depth ``t`` of a network.
    """

    ok: bool
    ratio: float | None = None
    depth: int | None = None
    details: dict = field(default_factory=dict)
    ratio_by_depth: dict[int, float] | None = None


@dataclass(frozen=True)
class Condition:
    """A predicate on an example with its text (the hypothesis of a ``HOLDS_ONLY_UNDER`` verdict)."""

    text: str
    predicate: Callable[[Any], bool]


@dataclass(frozen=True)
class Claim:
    """A fuzzed claim: its declaration (:mod:`boundcheck.claims_registry`) with the
    hypothesis strategy, the checker and the JSON form of an example."""

    name: str
    source: str
    statement: str
    strategy: Callable[[], st.SearchStrategy]
    check: Callable[[Any], Check]
    to_json: Callable[[Any], dict]
    condition: Condition | None = None
    default_examples: int = 200
    adversarial: Callable[..., dict] | None = None
    #: Strategy of small explicit examples only, searched after a failure so that the
    #: reported counterexample is small and exact (hypothesis does not always shrink
    #: across the branches of ``one_of``).
    small_strategy: Callable[[], st.SearchStrategy] | None = None

    @classmethod
    def declared(cls, name: str, strategy, check, to_json, **kw) -> "Claim":
        """The fuzz check of the claim ``name`` declared in :mod:`boundcheck.claims_registry`
        (reference and statement from there).

        Raises
        ------
        ValueError
            When ``name`` is not declared there with an expected fuzz verdict.
        """
        spec = claims_registry.CLAIMS.get(name)
        if spec is None or not spec.fuzzed:
            raise ValueError(f"fuzz claim {name!r} is not declared as fuzzed in boundcheck.claims_registry")
        return cls(name, spec.reference, spec.statement, strategy, check, to_json, **kw)


# --------------------------------------------------------------------------- helpers


def _net_json(ex) -> dict:
    net, param = ex
    d = net.to_json()
    d.update(param)
    return d


def _layer_rule_json(ex) -> dict:
    layer, param = ex
    d = layer.to_json()
    d.update(param)
    return d


def _plain_json(ex) -> dict:
    return ex.to_json()


def _matrix_json(M) -> dict:
    return {"M": np.asarray(M, dtype=np.float64).tolist()}


def _colsum_tolerance(M) -> np.ndarray:
    return RTOL * (1.0 + np.abs(M).sum(axis=0))


def conserves(M) -> bool:
    """Every column of ``M`` sums to 1 ([P1] Definition 2, eq. (16)) within ``RTOL`` of its magnitude."""
    M = np.asarray(M, dtype=np.float64)
    return bool(np.all(np.abs(M.sum(axis=0) - 1.0) <= _colsum_tolerance(M)))


# --------------------------------------------------------------------------- Theorem 3


def _check_thm3(M) -> Check:
    """Theorem 3 as stated: ``sqrt(R/S)`` is a singular value with singular vector ``1_S/sqrt(S)``."""
    M = np.asarray(M, dtype=np.float64)
    Sdim, R = M.shape
    value = bounds.thm3_value(R, Sdim)
    sv = np.linalg.svd(M, compute_uv=False)
    u = np.ones(Sdim) / math.sqrt(Sdim)
    image = M @ (M.T @ u)  # M M^T u
    scale = RTOL * (1.0 + float(np.abs(M).sum()) ** 2)
    residual = float(np.linalg.norm(image - value**2 * u))
    is_vector = residual <= scale
    gap = float(np.min(np.abs(sv - value))) if sv.size else math.inf
    is_value = gap <= scale
    return Check(
        ok=bool(is_vector and is_value),
        details={
            "sqrt_R_over_S": value,
            "singular_values": sv.tolist(),
            "residual_MMt1_minus_RoverS_1": residual,
            "distance_to_nearest_singular_value": gap,
        },
    )


def _check_thm3_rayleigh(M) -> Check:
    """Eq. (17): ``1^T M M^T 1 / S = R/S`` and hence ``sigma_max >= sqrt(R/S)``."""
    M = np.asarray(M, dtype=np.float64)
    Sdim, R = M.shape
    value = bounds.thm3_value(R, Sdim)
    rq = bounds.thm3_rayleigh_quotient(M)
    tol = 3 * RTOL * float(((1.0 + np.abs(M).sum(axis=0)) ** 2).sum()) / Sdim
    smax = float(np.linalg.norm(M, 2))
    ok = abs(rq - value**2) <= tol and smax >= value * (1 - RTOL) - math.sqrt(tol)
    return Check(
        ok=bool(ok),
        ratio=value / smax if smax > 0 else math.inf,  # sqrt(R/S) / sigma_max <= 1
        details={"rayleigh_quotient": rq, "R_over_S": value**2, "sigma_max": smax,
                 "max_column_sum_defect": float(np.max(np.abs(M.sum(axis=0) - 1.0)))},
    )


@st.composite
def _lrp_matrices(draw):
    layer = draw(S.layers())
    kind = draw(st.sampled_from(["beta", "gamma", "zero"]))
    if kind == "beta":
        rule = rules.lrp_beta(draw(S.BETAS))
    elif kind == "gamma":
        rule = rules.lrp_gamma(draw(S.GAMMAS))
    else:
        rule = rules.lrp_zero()
    return rules.transition_matrix(layer.W, layer.z, rule)


# --------------------------------------------------------------------------- Theorem 4 / Corollary 5 / KR 1


def _layer_beta():
    return st.tuples(S.layers(), S.BETAS.map(lambda b: {"beta": b}))


def _check_thm4(ex) -> Check:
    layer, p = ex
    beta = p["beta"]
    M = rules.transition_matrix(layer.W, layer.z, rules.lrp_beta(beta))
    R = layer.W.shape[0]
    smax = float(np.linalg.norm(M, 2))
    exact = bounds.thm4_singular_value_bound(R, beta, "exact")
    relaxed = bounds.thm4_singular_value_bound(R, beta, "relaxed")
    ok = le(smax, exact) and le(exact, relaxed)
    return Check(ok=ok, ratio=_ratio(smax, exact),
                 details={"sigma_max": smax, "bound_eq49": exact, "bound_eq50": relaxed})


def gamma_limit_matrix(W, z) -> np.ndarray:
    """``lim_{gamma -> oo}`` of the LRP-gamma matrix ([P1] eq. (9)), entry by entry.

    ``Att_gamma(g_a, z_b) = (y_ab + gamma (y_ab)_+) / (sum_b' y_ab' + gamma P_a)`` is a
    ratio of two polynomials of degree 1 in ``gamma``; its limit is the ratio of
    the leading coefficients: ``(y_ab)_+ / P_a`` when ``P_a > 0``; when
    ``P_a = 0`` both ``gamma`` coefficients vanish and the entry is the constant
    ``y_ab / sum_b' y_ab'`` (0 when the denominator is 0, the 0/0 := 0
    convention of :mod:`boundcheck.rules`).  The sign parts come from
    :func:`boundcheck.rules.sign_parts`.
    """
    parts = rules.sign_parts(W, z)
    y = parts["pp"] + parts["pn"] + parts["np"] + parts["nn"]
    yp = parts["pp"] + parts["nn"]
    P = yp.sum(axis=1)
    C = y.sum(axis=1)
    lim = np.zeros_like(y)
    pos = P > 0
    lim[pos] = yp[pos] / P[pos, None]
    const = (~pos) & (C != 0)
    lim[const] = y[const] / C[const, None]
    return lim.T


def _numeric_limit_error(W, z) -> float:
    """Distance between the rules' LRP-gamma matrix at a huge gamma and :func:`gamma_limit_matrix`
    on the outputs with a positive part (a sanity check of the limit, reported only)."""
    parts = rules.sign_parts(W, z)
    y = sum(parts.values())
    P = (parts["pp"] + parts["nn"]).sum(axis=1)
    C = np.abs(y.sum(axis=1))
    pos = P > 0
    if not np.any(pos):
        return 0.0
    gamma = float(min(1e200, 1e12 * max(1.0, float(np.max(C[pos] / P[pos])))))
    M = rules.transition_matrix(W, z, rules.lrp_gamma(gamma))
    L = gamma_limit_matrix(W, z)
    return float(np.max(np.abs(M[:, pos] - L[:, pos]))) if np.all(np.isfinite(M)) else math.inf


def _check_kr1(layer) -> Check:
    """Known Result 1 (eq. (10)): the gamma -> oo limit equals the LRP-beta(0) entry."""
    L = gamma_limit_matrix(layer.W, layer.z)
    B0 = rules.transition_matrix(layer.W, layer.z, rules.lrp_beta(0.0))
    err = np.abs(L - B0)
    bad_outputs = np.flatnonzero(np.any(err > RTOL * (1.0 + np.abs(B0)), axis=0))
    return Check(ok=bad_outputs.size == 0, details={
        "max_abs_difference": float(err.max()) if err.size else 0.0,
        "outputs_differing": bad_outputs.tolist(),
        "numeric_limit_error": _numeric_limit_error(layer.W, layer.z),
    })


def _every_output_has_positive_part(layer) -> bool:
    P, _ = rules.positive_negative_sums(layer.W, layer.z)
    return bool(np.all(P > 0))


def _check_cor5(layer) -> Check:
    """Corollary 5: the singular values of the gamma -> oo limit matrix are <= sqrt(R)."""
    L = gamma_limit_matrix(layer.W, layer.z)
    R = layer.W.shape[0]
    smax = float(np.linalg.norm(L, 2))
    bound = bounds.cor5_singular_value_bound(R)
    return Check(ok=le(smax, bound), ratio=_ratio(smax, bound), details={"sigma_max_limit": smax, "sqrt_R": bound})


# --------------------------------------------------------------------------- Lemma 7 / 8


def relevance_by_depth(net, rule) -> list[np.ndarray]:
    """Relevance at every depth via :func:`boundcheck.rules.forward_chain` (``out[t]``, ``t = 0..n``)."""
    return rules.forward_chain(net.layers, net.x, rule).relevance(net.q)


def _sums(r) -> tuple[float, float]:
    r = np.asarray(r)
    return float(r[r > 0].sum()), float(-r[r < 0].sum())


def _check_sums(rel, bound_fn) -> Check:
    """Compare ``(P_t, N_t)`` with ``bound_fn(t)`` (a :class:`SumBounds`) at every depth."""
    by_depth: dict[int, float] = {}
    ok = True
    worst_t, worst = None, -math.inf
    observed = []
    for t in range(1, len(rel)):
        P, N = _sums(rel[t])
        try:
            sb = bound_fn(t)
            pu, nl = sb.positive_upper, sb.negative_lower
        except InputError:  # beyond the float range: the bound is +inf
            pu, nl = math.inf, -math.inf
        finite = math.isfinite(P) and math.isfinite(N)
        good = finite and le(P, pu) and le(N, -nl)
        ratio = max(_ratio(P, pu), _ratio(N, -nl)) if finite else math.inf
        by_depth[t] = ratio
        observed.append({"t": t, "P": P, "N": N, "P_bound": pu, "N_bound": -nl})
        ok = ok and good
        if ratio > worst:
            worst, worst_t = ratio, t
    return Check(ok=ok, ratio=worst, depth=worst_t, ratio_by_depth=by_depth, details={"sums": observed})


def _lemma7_examples():
    return st.tuples(S.networks(), S.BETAS.map(lambda b: {"beta": b}))


def _lemma7_checker(bound: str):
    def check(ex) -> Check:
        net, p = ex
        rel = relevance_by_depth(net, rules.lrp_beta(p["beta"]))
        return _check_sums(rel, lambda t: bounds.lemma7_bounds(p["beta"], t, bound))

    return check


def _lemma8_examples(projected: bool):
    if projected:
        return S.condition29_networks().map(lambda ng: (ng[0], {"gamma": ng[1]}))
    return st.tuples(S.networks(), S.GAMMAS.map(lambda g: {"gamma": g}))


def _lemma8_checker(bound: str):
    def check(ex) -> Check:
        net, p = ex
        with np.errstate(all="ignore"):
            rel = relevance_by_depth(net, rules.lrp_gamma(p["gamma"]))
        res = _check_sums(rel, lambda t: bounds.lemma8_bounds(p["gamma"], t, bound))
        if not res.ok:
            res.details["condition29_holds"] = S.condition29_holds(net.layers, net.xs, p["gamma"])
        return res

    return check


# --------------------------------------------------------------------------- adversarial search


def _small_net_from_params(theta, depth, width):
    """Unpack ``theta`` into a ReLU net ``width -> width -> ... -> 1`` (biases included) and an input."""
    layers, k = [], 0
    dims = [width] * depth + [1]
    for r in range(depth):
        R, Sd = dims[r + 1], dims[r]
        W = theta[k:k + R * Sd].reshape(R, Sd)
        k += R * Sd
        b = theta[k:k + R]
        k += R
        layers.append((W, b))
    x = theta[k:k + width]
    return layers, x


def _n_params(depth, width):
    dims = [width] * depth + [1]
    return sum(dims[r + 1] * dims[r] + dims[r + 1] for r in range(depth)) + width


def adversarial_search(rule_kind: str, param: float, configs=((2, 2), (2, 4), (3, 3), (4, 2)),
                       restarts: int = 3, maxfev: int = 1500, seed: int = 0) -> dict:
    """Worst case of the positive relevance sum at the input of small ReLU networks.

    Maximises ``P_n`` (sum of positive entries of the input attribution map,
    depth ``t = n``) over all weights, biases and the input of networks
    ``width -> ... -> 1`` (``q = [1]``) with Nelder-Mead from ``restarts`` random
    starts (seeded).  For ``rule_kind="gamma"`` every candidate is first
    projected onto condition (29) (:func:`strategies.project_condition29`,
    factor ``1 - 1e-9``), so the search stays inside Lemma 8's assumptions.
    Reports the worst case beside the paper bound and the exact bound
    (``worst/paper`` and ``worst/exact``), and the witnesses of
    :mod:`boundcheck.bounds` at the same depths.
    """
    from scipy.optimize import minimize

    if rule_kind == "beta":
        rule = rules.lrp_beta(param)
        bfn = bounds.lemma7_bounds
        witness = bounds.lemma7_witness
    else:
        rule = rules.lrp_gamma(param)
        bfn = bounds.lemma8_bounds
        witness = bounds.lemma8_witness
    rng = np.random.default_rng(seed)
    one = np.ones(1)
    results = []
    for depth, width in configs:
        best = {"value": -math.inf, "theta": None}
        evals = [0]

        def positive_sum(theta):
            evals[0] += 1
            layers, x = _small_net_from_params(theta, depth, width)
            if rule_kind == "gamma":
                layers = S.project_condition29(layers, [x], param, factor=1 - 1e-9)
            with np.errstate(all="ignore"):
                r = rules.forward_chain(layers, x, rule).relevance(one)[-1]
            v = float(r[r > 0].sum())
            if not math.isfinite(v):
                return 0.0
            if v > best["value"]:
                best["value"], best["theta"] = v, theta.copy()
            return -v

        n = _n_params(depth, width)
        # ReLU nets with random weights are often dead (all relevance 0, a flat objective):
        # start Nelder-Mead from the best of 32 random draws per restart.
        starts = rng.standard_normal((32 * restarts, n))
        scores = np.array([positive_sum(th) for th in starts])
        for th in starts[np.argsort(scores, kind="stable")[:restarts]]:
            minimize(positive_sum, th, method="Nelder-Mead",
                     options={"maxfev": maxfev, "xatol": 1e-10, "fatol": 1e-12, "adaptive": True})
        sb_paper = bfn(param, depth, "paper")
        sb_exact = bfn(param, depth, "exact")
        layers, x = _small_net_from_params(best["theta"], depth, width)
        if rule_kind == "gamma":
            layers = S.project_condition29(layers, [x], param, factor=1 - 1e-9)
        wl, wx, wq = witness(param, depth)
        wr = rules.forward_chain(wl, wx, rule).relevance(wq)[-1]
        w_pos = float(wr[wr > 0].sum())
        results.append({
            "depth": depth, "width": width, "evaluations": evals[0],
            "worst_positive_sum": best["value"],
            "paper_bound": sb_paper.positive_upper, "exact_bound": sb_exact.positive_upper,
            "worst_over_paper": best["value"] / sb_paper.positive_upper,
            "worst_over_exact": best["value"] / sb_exact.positive_upper,
            "witness_width": int(wx.size), "witness_positive_sum": w_pos,
            "witness_over_exact": w_pos / sb_exact.positive_upper,
            "worst_network": {"layers": [{"W": W.tolist(), "b": b.tolist()} for W, b in layers], "x": x.tolist(), "q": [1.0]},
        })
    return {"rule": rule.name, "parameter": param, "method": f"Nelder-Mead from the best {restarts} of {32 * restarts} seeded random starts, {maxfev} evaluations each",
            "searches": results,
            "max_worst_over_paper": max(r["worst_over_paper"] for r in results),
            "max_worst_over_exact": max(r["worst_over_exact"] for r in results)}


_ADV_CACHE: dict = {}


def _adversarial(kind: str, param: float):
    def run(budget: str = "default", seed: int = 0) -> dict:
        key = (kind, param, budget, seed)
        if key not in _ADV_CACHE:
            if budget == "small":
                _ADV_CACHE[key] = adversarial_search(kind, param, configs=((2, 2), (3, 2)), restarts=1, maxfev=300, seed=seed)
            else:
                _ADV_CACHE[key] = adversarial_search(kind, param, restarts=2, maxfev=800, seed=seed)
        return _ADV_CACHE[key]

    return run


# --------------------------------------------------------------------------- eq. (31) / (33)


def _range_check(net, rule, value_range: float) -> Check:
    maps = np.array([rules.chained_attribution(net.layers, x, rule, net.q) for x in net.xs])
    if not np.all(np.isfinite(maps)):
        return Check(ok=False, ratio=math.inf, details={"non_finite": True})
    spread = float(np.max(maps.max(axis=0) - maps.min(axis=0)))
    total = float(maps.max() - min(maps.min(), 0.0)) if maps.size else 0.0
    observed = max(spread, 0.0)
    ratio = _ratio(observed, value_range)
    return Check(ok=le(observed, value_range), ratio=ratio, depth=net.depth, ratio_by_depth={net.depth: ratio},
                 details={"max_component_spread_over_inputs": spread, "max_minus_min_all_entries": total,
                          "value_range_bound": value_range})


def _check_eq31(ex) -> Check:
    net, p = ex
    try:
        vr = bounds.eq31_value_range(p["beta"], net.depth, "paper")
    except InputError:
        vr = math.inf
    return _range_check(net, rules.lrp_beta(p["beta"]), vr)


def _check_eq33(ex) -> Check:
    net, p = ex
    try:
        vr = bounds.eq33_value_range(p["gamma"], net.depth, "paper")
    except InputError:
        vr = math.inf
    with np.errstate(all="ignore"):
        return _range_check(net, rules.lrp_gamma(p["gamma"]), vr)


# --------------------------------------------------------------------------- Hoeffding


def binomial_tail(m: int, p: float, r: float, t: float) -> float:
    """Exact ``P(|mean_m - E| >= t)`` for ``m`` iid variables ``r * Bernoulli(p)``.

    ``mean = r K / m`` with ``K ~ Bin(m, p)``; the event is ``|K - m p| >= m t / r``.
    Values within ``1e-9 m`` of the threshold are counted in (conservative).
    """
    from scipy.stats import binom

    k = np.arange(m + 1)
    try:
        pmf = binom.pmf(k, m, p)
    except OverflowError:  # boost's ibeta_derivative overflows for some extreme p
        from scipy.special import gammaln, xlog1py, xlogy

        pmf = np.exp(gammaln(m + 1) - gammaln(k + 1) - gammaln(m - k + 1) + xlogy(k, p) + xlog1py(m - k, -p))
    hit = np.abs(k - m * p) >= m * t / r - 1e-9 * m
    return float(min(1.0, pmf[hit].sum()))


def _check_hoeffding(h) -> Check:
    from boundcheck import hoeffding as H

    t = H.hoeffding_deviation(h.delta, h.m, h.r, components=h.components)
    m_back = H.hoeffding_samples(t, h.delta, h.r, components=h.components)
    # eq. (23)/(24) are inverses up to rounding: m_back reaches deviation t, m_back - 1 does not
    # (within RTOL; t is a rounded float, so the exact ceiling may be m + 1).
    reaches = le(H.hoeffding_deviation(h.delta, m_back, h.r, components=h.components), t)
    minimal = m_back == 1 or H.hoeffding_deviation(h.delta, m_back - 1, h.r, components=h.components) >= t * (1 - RTOL)
    inverse = bool(reaches and minimal and abs(m_back - h.m) <= 1)
    tail1 = binomial_tail(h.m, h.p, h.r, t)
    # independent components: P(some component deviates by >= t)
    tail = 1.0 - (1.0 - tail1) ** h.components
    bound_holds = le(tail, h.delta)
    return Check(ok=bool(inverse and bound_holds), ratio=_ratio(tail, h.delta), details={
        "t_eq23": t, "m_eq24_of_t": m_back, "m": h.m, "inverse_ok": inverse,
        "exact_tail": tail, "delta": h.delta})


# --------------------------------------------------------------------------- Known Result 9


def _independent_chi_mean(R: int, sigma: float) -> float:
    from scipy.stats import chi

    return float(chi(R).mean()) * sigma


def _check_kr9(n) -> Check:
    paper = bounds.kr9_paper_expected_norm(n.R, n.sigma)
    exact = _independent_chi_mean(n.R, n.sigma)
    return Check(ok=abs(paper - exact) <= RTOL * exact, ratio=exact / paper,
                 details={"paper_sqrtR_sigma": paper, "exact_chi_mean": exact})


def _check_kr9_upper(n) -> Check:
    paper = bounds.kr9_paper_expected_norm(n.R, n.sigma)
    exact = bounds.kr9_exact_expected_norm(n.R, n.sigma)
    independent = _independent_chi_mean(n.R, n.sigma)
    agree = abs(exact - independent) <= 1e-7 * independent
    mc_ok, mc = True, None
    if n.R <= 256:  # seeded Monte Carlo of E||w||, 5 standard errors
        rng = np.random.default_rng(n.seed)
        norms = np.linalg.norm(rng.standard_normal((4000, n.R)) * n.sigma, axis=1)
        se = norms.std(ddof=1) / math.sqrt(norms.size)
        mc = float(norms.mean())
        mc_ok = abs(mc - exact) <= 5 * se + 1e-12 * exact
    return Check(ok=bool(le(exact, paper) and agree and mc_ok), ratio=exact / paper,
                 details={"paper_sqrtR_sigma": paper, "exact": exact, "scipy_chi_mean": independent,
                          "monte_carlo_mean": mc})


# --------------------------------------------------------------------------- [P2] statistics


def _ssim(m, sab):
    return ((2 * m.mu_a * m.mu_b + m.c1) * (2 * sab + m.c2)) / (
        (m.mu_a**2 + m.mu_b**2 + m.c1) * (m.sigma_a**2 + m.sigma_b**2 + m.c2))


def _check_ssim(m) -> Check:
    """[P2] Thm 1 (proof B): over ``0 <= sigma_AB <= sigma_A sigma_B`` the minimum of
    ``|SSIM|`` is at ``sigma_AB = 0`` and is ``<= C2/(sigma_A^2+sigma_B^2+C2)``."""
    grid = np.concatenate([np.linspace(0.0, m.sigma_a * m.sigma_b, 33), [m.sigma_ab]])
    vals = np.abs(_ssim(m, grid))
    at0 = float(vals[0])
    bound = m.c2 / (m.sigma_a**2 + m.sigma_b**2 + m.c2)
    argmin_ok = bool(np.all(at0 <= vals * (1 + RTOL)))
    return Check(ok=argmin_ok and le(at0, bound), ratio=_ratio(at0, bound),
                 details={"abs_ssim_at_0": at0, "min_over_grid": float(vals.min()), "bound_eq7": bound})


def _check_overtaking(c) -> Check:
    """[P2] Thm 2 (proof E): ``1 - CDF_{gamma1}(1) <= 1 - CDF_{gamma2}(K)`` exactly (scipy), and the
    ratio ``sum w_s x_s / sum w_l x_l`` is Cauchy(0, gamma1) (seeded Monte Carlo, 5 binomial SE)."""
    from scipy.stats import cauchy

    g1 = math.sqrt(float((c.xs**2).sum()) / float((c.xl**2).sum()))
    g2 = math.sqrt(c.xs.size / c.xl.size)
    tail1 = float(cauchy.sf(1.0, scale=g1)) if g1 > 0 else 0.0
    tail2 = float(cauchy.sf(c.k, scale=g2))
    rng = np.random.default_rng(c.seed)
    n = 4000
    num = rng.standard_normal((n, c.xs.size)) @ c.xs
    den = rng.standard_normal((n, c.xl.size)) @ c.xl
    with np.errstate(divide="ignore", invalid="ignore"):
        freq = float(np.mean(num / den >= 1.0))
    se = math.sqrt(max(tail1 * (1 - tail1), 1.0 / n) / n)
    mc_ok = abs(freq - tail1) <= 5 * se + 1.0 / n
    return Check(ok=bool(le(tail1, tail2) and mc_ok), ratio=_ratio(tail1, tail2), details={
        "gamma1": g1, "gamma2": g2, "tail_gamma1_at_1": tail1, "tail_gamma2_at_K": tail2,
        "monte_carlo_frequency": freq, "monte_carlo_se": se})


def _ranks(x) -> list[Fraction]:
    """Average ranks (ties share the mean rank) as exact fractions."""
    x = list(x)
    order = sorted(range(len(x)), key=lambda i: x[i])
    ranks = [Fraction(0)] * len(x)
    i = 0
    while i < len(x):
        j = i
        while j + 1 < len(x) and x[order[j + 1]] == x[order[i]]:
            j += 1
        for k in range(i, j + 1):
            ranks[order[k]] = Fraction(i + j + 2, 2)
        i = j + 1
    return ranks


def _cov(a, b) -> Fraction:
    n = len(a)
    ma, mb = sum(a, Fraction(0)) / n, sum(b, Fraction(0)) / n
    return sum(((x - ma) * (y - mb) for x, y in zip(a, b)), Fraction(0)) / n


def _exact(x) -> list[Fraction]:
    return [Fraction(float(v)) for v in x]


def _check_spearman(p) -> Check:
    """[P2] Thm 3 (proof C): with rank covariance ``>= 0`` the Spearman correlation is ``>= 0``,
    and its minimum 0 is attained exactly at zero rank covariance (exact arithmetic)."""
    ra, rb = _ranks(p.a), _ranks(p.b)
    cov = _cov(ra, rb)
    va, vb = _cov(ra, ra), _cov(rb, rb)
    if va == 0 or vb == 0 or cov < 0:  # outside the theorem's premise
        return Check(ok=True, details={"premise": False})
    rho = float(cov) / math.sqrt(float(va) * float(vb))
    ok = rho >= 0 and ((rho == 0) == (cov == 0))
    return Check(ok=bool(ok), details={"premise": True, "rank_cov": float(cov), "spearman": rho})


def _check_rank_sign(p) -> Check:
    """[P2] C: "``sigma_R(A)R(B) >= 0`` iff ``sigma_AB >= 0``" (exact arithmetic)."""
    rank_cov = _cov(_ranks(p.a), _ranks(p.b))
    cov = _cov(_exact(p.a), _exact(p.b))
    return Check(ok=(rank_cov >= 0) == (cov >= 0), details={"rank_cov": str(rank_cov), "pearson_cov": str(cov)})


@st.composite
def _mse_examples(draw):
    return draw(S.paired_samples(integers=draw(st.booleans()))), draw(S.moments())


def _check_mse(ex) -> Check:
    """[P2] Thm 4 (proof D): ``E[(A/E[A^2]^.5 - B/E[B^2]^.5)^2] = 2 - 2 s_AB/.. - 2 mu_A mu_B/..``
    (checked on a sample's empirical distribution), ``<= 2 - 2 mu_A mu_B/(..)`` when ``s_AB >= 0``,
    and the maximum over ``s_AB >= 0`` is attained at ``s_AB = 0`` (checked on moments)."""
    p, m = ex
    a, b = p.a, p.b
    ea2, eb2 = float(np.mean(a * a)), float(np.mean(b * b))
    ok = True
    det: dict = {}
    if ea2 > 0 and eb2 > 0:
        na, nb = math.sqrt(ea2), math.sqrt(eb2)
        mse = float(np.mean((a / na - b / nb) ** 2))
        mua, mub = float(a.mean()), float(b.mean())
        sab = float(np.mean((a - mua) * (b - mub)))
        formula = 2 - 2 * sab / (na * nb) - 2 * mua * mub / (na * nb)
        tol = 8 * RTOL * (1 + float(np.mean(np.abs(a / na) * np.abs(b / nb))) + abs(mua * mub) / (na * nb))
        ok = abs(mse - formula) <= tol
        bound = 2 - 2 * mua * mub / (na * nb)
        if sab >= 0:
            ok = ok and mse <= bound + tol
        det.update(sample_mse=mse, eq14=formula, eq15_bound=bound, sample_cov=sab)
    # moments: MSE(s) = 2 - 2 (s + mu_A mu_B)/sqrt(E[A^2] E[B^2]) over s in [0, s_A s_B]
    ea2m, eb2m = m.sigma_a**2 + m.mu_a**2, m.sigma_b**2 + m.mu_b**2
    norm = math.sqrt(ea2m * eb2m)
    grid = np.linspace(0.0, m.sigma_a * m.sigma_b, 33)
    vals = 2 - 2 * (grid + m.mu_a * m.mu_b) / norm
    bound_m = 2 - 2 * m.mu_a * m.mu_b / norm
    max_ok = bool(np.all(vals <= vals[0] + RTOL * abs(vals[0]) + 1e-15)) and abs(vals[0] - bound_m) <= RTOL * (2 + abs(bound_m))
    det.update(moment_max_at_zero=float(vals[0]), moment_bound=bound_m)
    return Check(ok=bool(ok and max_ok), ratio=None, details=det)


# --------------------------------------------------------------------------- adaptive beta


#: Cap used when checking eq. (2): large enough never to bind when ``P + N > 0``.
ADAPTIVE_CAP = 1e300


def _check_adaptive_beta(layer) -> Check:
    """[P2] A.2: ``beta = -N/(P+N)`` (eq. (2), :func:`boundcheck.rules.adaptive_beta`) solves
    ``beta/(1+beta) = -N/P`` (eq. (1)) for every output."""
    P, N = rules.positive_negative_sums(layer.W, layer.z)
    beta = rules.adaptive_beta(P, N, ADAPTIVE_CAP)
    lhs = beta / (1.0 + beta)
    with np.errstate(divide="ignore", invalid="ignore"):
        rhs = np.where(P > 0, -N / np.where(P > 0, P, 1.0), np.nan)
    good = np.abs(lhs - rhs) <= RTOL * (1.0 + np.abs(rhs))
    bad = np.flatnonzero(~good)
    return Check(ok=bad.size == 0, details={"outputs_failing": bad.tolist(), "P": P.tolist(), "N": N.tolist()})


def _p_plus_n_positive(layer) -> bool:
    P, N = rules.positive_negative_sums(layer.W, layer.z)
    return bool(np.all(P + N > 0))


# --------------------------------------------------------------------------- registry


def _thm3_rayleigh_examples():
    return st.one_of(S.conserving_matrices(), _lrp_matrices())


CLAIMS: dict[str, Claim] = {}


def _register(c: Claim) -> None:
    CLAIMS[c.name] = c


_register(Claim.declared(
    "thm3",
    S.conserving_matrices, _check_thm3, _matrix_json, default_examples=150))
_register(Claim.declared(
    "thm3_rayleigh",
    _thm3_rayleigh_examples, _check_thm3_rayleigh, _matrix_json,
    condition=Condition("M conserves relevance: every column sums to 1 (eq. 16)", conserves), default_examples=250))
_register(Claim.declared(
    "thm4",
    _layer_beta, _check_thm4, _layer_rule_json, default_examples=250))
_register(Claim.declared(
    "cor5",
    S.layers, _check_cor5, _plain_json, default_examples=200))
_register(Claim.declared(
    "kr1",
    S.layers, _check_kr1, _plain_json, small_strategy=S.explicit_layer,
    condition=Condition("sum_b (w_ab z_b)_+ > 0 for every output a", _every_output_has_positive_part), default_examples=200))
_register(Claim.declared(
    "lemma7",
    _lemma7_examples, _lemma7_checker("paper"), _net_json, default_examples=200,
    adversarial=_adversarial("beta", 1.0)))
_register(Claim.declared(
    "lemma7_exact",
    _lemma7_examples, _lemma7_checker("exact"), _net_json, default_examples=200,
    adversarial=_adversarial("beta", 1.0)))
_register(Claim.declared(
    "lemma8",
    lambda: _lemma8_examples(True), _lemma8_checker("paper"), _net_json, default_examples=200,
    adversarial=_adversarial("gamma", 4.0)))
_register(Claim.declared(
    "lemma8_exact",
    lambda: _lemma8_examples(True), _lemma8_checker("exact"), _net_json, default_examples=200,
    adversarial=_adversarial("gamma", 4.0)))
_register(Claim.declared(
    "lemma8_no_condition",
    lambda: _lemma8_examples(False), _lemma8_checker("paper"), _net_json, default_examples=150,
    small_strategy=lambda: st.tuples(S.explicit_network(), S.GAMMAS.map(lambda g: {"gamma": g}))))
_register(Claim.declared(
    "eq31",
    lambda: st.tuples(S.networks(n_inputs=4), S.BETAS.map(lambda b: {"beta": b})), _check_eq31, _net_json,
    default_examples=150))
_register(Claim.declared(
    "eq33",
    lambda: S.condition29_networks(n_inputs=4).map(lambda ng: (ng[0], {"gamma": ng[1]})), _check_eq33, _net_json,
    default_examples=150))
_register(Claim.declared(
    "hoeffding",
    S.hoeffding_setups, _check_hoeffding, _plain_json, default_examples=250))
_register(Claim.declared(
    "kr9",
    S.norm_setups, _check_kr9, _plain_json, default_examples=100))
_register(Claim.declared(
    "kr9_upper",
    S.norm_setups, _check_kr9_upper, _plain_json, default_examples=150))
_register(Claim.declared(
    "sanity_thm1_ssim",
    S.moments, _check_ssim, _plain_json, default_examples=300))
_register(Claim.declared(
    "sanity_thm2_overtaking",
    S.cauchy_setups, _check_overtaking, _plain_json, default_examples=150))
_register(Claim.declared(
    "sanity_thm3_spearman",
    S.paired_samples, _check_spearman, _plain_json, default_examples=300))
_register(Claim.declared(
    "sanity_thm3_rank_sign",
    S.paired_samples, _check_rank_sign, _plain_json, default_examples=300))
_register(Claim.declared(
    "sanity_thm4_mse",
    _mse_examples, _check_mse, lambda ex: {"sample": ex[0].to_json(), "moments": ex[1].to_json()}, default_examples=250))
_register(Claim.declared(
    "adaptive_beta",
    S.layers, _check_adaptive_beta, _plain_json, small_strategy=S.explicit_layer,
    condition=Condition("P + N > 0 for every output (P = sum_b (w_ab z_b)_+, N = sum_b (w_ab z_b)_-)", _p_plus_n_positive),
    default_examples=200))


_undeclared = set(claims_registry.fuzzed()) ^ set(CLAIMS)
if _undeclared:
    raise ValueError(f"fuzz checks and boundcheck.claims_registry disagree on {sorted(_undeclared)}")
CLAIMS = {name: CLAIMS[name] for name in claims_registry.fuzzed()}  # the registry's order


def get_claim(name: str) -> Claim:
    """The claim named ``name``; :class:`InputError` naming it when unknown."""
    try:
        return CLAIMS[name]
    except KeyError:
        raise InputError(f"unknown claim {name!r}; known: {', '.join(CLAIMS)}") from None
