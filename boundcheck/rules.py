"""The LRP rules: the single source of truth for the oracle, the proofs and the engine.

For an affine layer ``g(z) = W z + b`` with ``W`` of shape ``(R, S)`` evaluated at an
input ``z`` of length ``S``, every rule here attributes output ``g_a`` to input
``z_b`` with a transition coefficient ``Att(g_a, z_b)``; collected into the
``S x R`` matrix ``M(g)`` with ``M[b, a] = Att(g_a, z_b)`` ([P1] eq. (13)).

Representation
--------------
The product ``y_ab = w_ab z_b`` splits into four *sign parts*, named by the sign
of the weight and of the input::

    "pp" = w+ z+    "pn" = w+ z-    "np" = w- z+    "nn" = w- z-

so that ``y = pp + pn + np + nn``, ``(y)_+ = pp + nn`` and ``(y)_- = pn + np``.
Every rule is a sum of *terms*; a term has a coefficient ``c_k`` and part weights
``a_k = (a_pp, a_pn, a_np, a_nn)`` and contributes::

    c_k * h_k(y_ab) / (sum_b' h_k(y_ab') + bias part + stabiliser),
    h_k(y) = sum_s a_k,s * part_s(y)

* LRP-beta ([P1] eq. (7)): ``(1+beta) * (y)_+/sum(y)_+  -  beta * (y)_-/sum(y)_-``,
  i.e. terms ``(1+beta, (1,0,0,1))`` and ``(-beta, (0,1,1,0))``.
* LRP-gamma ([P1] eq. (9)): ``(y + gamma (y)_+)/sum(y + gamma (y)_+)``, one term
  ``(1, (1+gamma, 1, 1, 1+gamma))``.
* LRP-0 and LRP-epsilon: one term ``(1, (1,1,1,1))``; LRP-epsilon adds
  ``epsilon * sign(D)`` to the denominator ``D``.
* Adaptive beta ([P2] A.2, eq. (1)-(2)): LRP-beta with a per-output
  ``beta_a = min(-N_a/(P_a+N_a), beta_max)``, ``P_a = sum_b (y_ab)_+``,
  ``N_a = sum_b (y_ab)_-``.

The torch engine (``empirical.engine``) evaluates exactly these terms on
convolutions; a test compares it with :func:`transition_matrix` on small layers.

Conventions (explicit, tested parameters; :class:`Conventions`)
---------------------------------------------------------------
* ``zero_denominator="zero"``: a ratio whose denominator is exactly 0 is defined
  as 0 (for LRP-beta this is the 0/0 case of an output with no positive or no
  negative contribution).  ``"nan"`` propagates NaN, ``"raise"`` raises.
* ``bias="forward_only"``: the bias is used in the forward pass (it determines the
  activations) but not in the backward pass, as in [P1] Sec. 6.1.  ``"backward"``
  treats the bias as an extra input with value 1 whose relevance is absorbed
  (dropped), as zennit does by default.
* ``stabiliser=0.0``: ``eps * sign(D)`` (with ``sign(0) := +1``) added to every
  denominator of every rule; default none.

Consequence (tested): LRP-beta conserves relevance (Definition 2, eq. (16): every
column of ``M`` sums to 1) only for outputs that have a positive contribution
and, when ``beta > 0``, a negative one; otherwise the column sums to ``-beta``,
``1+beta`` or 0.  :func:`conservation_defect` reports this per output.

References
----------
[P1] Binder et al. (2025), eq. (7), (9), (12)-(16), (25).  [P2] Supplement, A.2.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Callable, Literal, Sequence

import numpy as np

from boundcheck.errors import InputError, require_real

#: The four sign parts of ``w_ab z_b``: (weight sign, input sign).
SIGN_PARTS: tuple[str, str, str, str] = ("pp", "pn", "np", "nn")

ZeroDenominator = Literal["zero", "nan", "raise"]
BiasPolicy = Literal["forward_only", "backward"]


#: the treatments of an unfoldable normalisation (:attr:`Conventions.normalisation`)
NORMALISATIONS = ("affine", "centre", "pass")


@dataclass(frozen=True)
class Conventions:
    """The numerical conventions of every rule (see the module docstring).

    Parameters
    ----------
    zero_denominator : {"zero", "nan", "raise"}
        Value of a ratio whose denominator is exactly zero.  Default ``"zero"``
        (0/0 := 0).
    bias : {"forward_only", "backward"}
        Whether the bias enters the backward-pass denominators.  Default
        ``"forward_only"`` ([P1] Sec. 6.1: "bias terms set to zero in the backward
        pass, kept in the forward pass").
    stabiliser : float
        ``eps >= 0`` added as ``eps * sign(D)``, ``sign(0) := +1``, to every
        denominator.  Default 0 (none).
    normalisation : {"affine", "centre", "pass"}
        How the torch engine treats an affine map that cannot be folded into an
        adjacent convolution/linear layer: a BatchNorm (eval mode) after a join or
        before an activation, LayerNorm / LayerNorm2d / GroupNorm / RMSNorm with
        their statistics held constant, ConvNeXt's layer scale, multiplication by
        or addition of a constant.  ``"affine"`` (default): the elementwise map
        ``y = s*z + c`` with the mean and the standard deviation held constant;
        like every affine layer, the rule of the call is applied to it (each
        output has the single contribution ``s*z``; the shift ``c``, which holds
        the mean, is a bias and follows ``bias``); with ``bias="backward"`` and
        LRP-0 this keeps the identity LRP-0 = x * modified gradient exact.
        ``"centre"``: as ``"affine"``, except that a LayerNorm/GroupNorm keeps its
        centring in the linear map and only ``1/sigma`` is held constant
        (``y = s*(z - mean z) + b``, the convention of LXT and the AttnLRP paper):
        a dense linear map per normalised group whose off-diagonal weights
        ``-s_i/n`` spread relevance over the group; RMSNorm (no mean) is ``s*z``
        under both.  ``"pass"``: relevance is copied through unchanged (the
        engine's behaviour before this option; not an LRP rule).  The numeric
        oracle has no such layers; :mod:`empirical.oracle` models all three.
    """

    zero_denominator: ZeroDenominator = "zero"
    bias: BiasPolicy = "forward_only"
    stabiliser: float = 0.0
    normalisation: str = "affine"

    def __post_init__(self):
        if self.zero_denominator not in ("zero", "nan", "raise"):
            raise InputError(f"zero_denominator must be 'zero', 'nan' or 'raise', got {self.zero_denominator!r}")
        if self.bias not in ("forward_only", "backward"):
            raise InputError(f"bias must be 'forward_only' or 'backward', got {self.bias!r}")
        if self.normalisation not in NORMALISATIONS:
            raise InputError(f"normalisation must be 'affine', 'centre' or 'pass', got {self.normalisation!r}")
        eps = require_real("stabiliser", self.stabiliser)
        if eps < 0:
            raise InputError(f"stabiliser must be >= 0, got {eps}")


DEFAULT_CONVENTIONS = Conventions()


@dataclass(frozen=True)
class Term:
    """One term ``c * h(y)/sum h(y)`` of a rule; ``parts`` weights (pp, pn, np, nn)."""

    coefficient: float
    parts: tuple[float, float, float, float]


@dataclass(frozen=True)
class Rule:
    """An LRP rule: a sum of :class:`Term` objects plus a rule-own epsilon.

    Attributes
    ----------
    name : str
        Canonical name, e.g. ``"lrp_beta_1"``; :func:`parse_rule` inverts it.
    terms : tuple of Term
    epsilon : float
        The rule's own stabiliser (LRP-epsilon), added like
        :attr:`Conventions.stabiliser`.
    adaptive_beta_max : float or None
        When set, the rule is the adaptive beta rule of [P2] A.2 and the term
        coefficients are computed per output by :func:`adaptive_beta`.
    """

    name: str
    terms: tuple[Term, ...]
    epsilon: float = 0.0
    adaptive_beta_max: float | None = None
    params: dict = field(default_factory=dict, compare=False, hash=False)

    def coefficients(self, pos, neg):
        """Per-output coefficients of each term.

        ``pos``/``neg`` are the per-output sums ``P_a = sum_b (y_ab)_+`` and
        ``N_a = sum_b (y_ab)_-`` (numpy arrays or torch tensors).  Constant rules
        return plain floats; the adaptive beta rule returns arrays.
        """
        if self.adaptive_beta_max is None:
            return tuple(t.coefficient for t in self.terms)
        beta = adaptive_beta(pos, neg, self.adaptive_beta_max)
        return (1.0 + beta, -beta)


def _fmt(x: float) -> str:
    """Format a rule parameter for a rule name: 1.0 -> '1', 0.25 -> '0.25'."""
    return str(int(x)) if float(x).is_integer() else repr(float(x))


def lrp_beta(beta: float) -> Rule:
    """LRP-beta ([P1] eq. (7)); requires ``beta >= 0``."""
    beta = require_real("beta", beta)
    if beta < 0:
        raise InputError(f"beta must be >= 0 for LRP-beta, got {beta}")
    return Rule(
        name=f"lrp_beta_{_fmt(beta)}",
        terms=(Term(1.0 + beta, (1.0, 0.0, 0.0, 1.0)), Term(-beta, (0.0, 1.0, 1.0, 0.0))),
        params={"beta": beta},
    )


def lrp_gamma(gamma: float) -> Rule:
    """LRP-gamma ([P1] eq. (9)); requires ``gamma >= 0``."""
    gamma = require_real("gamma", gamma)
    if gamma < 0:
        raise InputError(f"gamma must be >= 0 for LRP-gamma, got {gamma}")
    g = 1.0 + gamma
    return Rule(name=f"lrp_gamma_{_fmt(gamma)}", terms=(Term(1.0, (g, 1.0, 1.0, g)),), params={"gamma": gamma})


def lrp_zero() -> Rule:
    """LRP-0: ``y_ab / sum_b' y_ab'`` (the reference rule)."""
    return Rule(name="lrp_zero", terms=(Term(1.0, (1.0, 1.0, 1.0, 1.0)),))


def lrp_epsilon(epsilon: float) -> Rule:
    """LRP-epsilon: ``y_ab / (sum_b' y_ab' + epsilon sign(.))`` (for reference)."""
    epsilon = require_real("epsilon", epsilon)
    if epsilon < 0:
        raise InputError(f"epsilon must be >= 0, got {epsilon}")
    return Rule(
        name=f"lrp_epsilon_{_fmt(epsilon)}",
        terms=(Term(1.0, (1.0, 1.0, 1.0, 1.0)),),
        epsilon=epsilon,
        params={"epsilon": epsilon},
    )


def lrp_adaptive_beta(beta_max: float = 3.0) -> Rule:
    """Forward-pass adaptive beta rule of [P2] A.2 with ``beta* = min(beta, beta_max)``."""
    beta_max = require_real("beta_max", beta_max)
    if beta_max < 0:
        raise InputError(f"beta_max must be >= 0, got {beta_max}")
    name = "adaptive_beta" if beta_max == 3.0 else f"adaptive_beta_{_fmt(beta_max)}"
    return Rule(
        name=name,
        # The coefficients (1 + beta_a, -beta_a) are per output: see Rule.coefficients.
        terms=(Term(1.0, (1.0, 0.0, 0.0, 1.0)), Term(0.0, (0.0, 1.0, 1.0, 0.0))),
        adaptive_beta_max=beta_max,
        params={"beta_max": beta_max},
    )


def adaptive_beta(pos, neg, beta_max: float = 3.0):
    """Per-output beta of the adaptive rule, [P2] A.2 eq. (1)-(2).

    Solving ``beta/(1+beta) = -N/P`` (eq. 1) gives ``beta = -N/(P+N)`` with
    ``P = sum (w x)_+ >= 0`` and ``N = sum (w x)_- <= 0``.  It is a valid
    (non-negative, finite) beta only when ``P + N > 0``.  Defined behaviour
    elsewhere: when ``P + N <= 0`` the negative contributions dominate, eq. (1)
    has no solution with ``beta >= 0`` (its right side is >= 1 while
    ``beta/(1+beta) < 1``), and ``beta -> +inf`` as ``P + N -> 0+``; we therefore
    use the cap ``beta_max``.  The result is clipped to ``[0, beta_max]``.

    Works on numpy arrays and torch tensors alike.
    """
    total = pos + neg
    positive = total > 0
    safe = total * positive + (~positive)  # 1 where total <= 0 (avoids 0-division)
    beta = (-neg) / safe
    beta = beta * positive + beta_max * (~positive)
    return beta.clip(0.0, beta_max)


_RULE_RE = re.compile(r"^(lrp_beta|lrp_gamma|lrp_epsilon|adaptive_beta)(?:_([0-9.eE+-]+))?$|^(lrp_zero)$")


def parse_rule(name: str) -> Rule:
    """Inverse of ``Rule.name``: ``"lrp_beta_1"``, ``"lrp_gamma_100"``, ``"lrp_zero"``,
    ``"lrp_epsilon_1e-06"``, ``"adaptive_beta"`` (beta_max 3) or ``"adaptive_beta_2"``."""
    m = _RULE_RE.match(name.strip()) if isinstance(name, str) else None
    if not m:
        raise InputError(
            f"unknown rule {name!r}; expected lrp_beta_<b>, lrp_gamma_<g>, lrp_epsilon_<e>, lrp_zero or adaptive_beta[_<max>]"
        )
    if m.group(3):
        return lrp_zero()
    kind, value = m.group(1), m.group(2)
    if kind == "adaptive_beta":
        return lrp_adaptive_beta(3.0 if value is None else _parse_float(name, value))
    if value is None:
        raise InputError(f"rule {name!r} needs a parameter, e.g. {kind}_1")
    v = _parse_float(name, value)
    return {"lrp_beta": lrp_beta, "lrp_gamma": lrp_gamma, "lrp_epsilon": lrp_epsilon}[kind](v)


def _parse_float(name: str, value: str) -> float:
    try:
        v = float(value)
    except ValueError:
        raise InputError(f"rule {name!r}: parameter {value!r} is not a number") from None
    if not math.isfinite(v):
        raise InputError(f"rule {name!r}: parameter must be finite")
    return v


# --------------------------------------------------------------------------- numeric


def _as_layer(W, z, b=None):
    W = np.asarray(W, dtype=np.float64)
    z = np.asarray(z, dtype=np.float64)
    if W.ndim != 2:
        raise InputError(f"W must be a 2-d (R, S) matrix, got shape {W.shape}")
    if z.shape != (W.shape[1],):
        raise InputError(f"z must have shape ({W.shape[1]},) to match W {W.shape}, got {z.shape}")
    if b is not None:
        b = np.asarray(b, dtype=np.float64)
        if b.shape != (W.shape[0],):
            raise InputError(f"b must have shape ({W.shape[0]},), got {b.shape}")
    if not (np.all(np.isfinite(W)) and np.all(np.isfinite(z))):
        raise InputError("W and z must be finite")
    return W, z, b


def sign_parts(W, z) -> dict[str, np.ndarray]:
    """The four ``(R, S)`` sign parts ``pp, pn, np, nn`` of ``y_ab = w_ab z_b``."""
    W, z, _ = _as_layer(W, z)
    wp, wn = np.maximum(W, 0.0), np.minimum(W, 0.0)
    zp, zn = np.maximum(z, 0.0), np.minimum(z, 0.0)
    return {"pp": wp * zp, "pn": wp * zn, "np": wn * zp, "nn": wn * zn}


def positive_negative_sums(W, z) -> tuple[np.ndarray, np.ndarray]:
    """``P_a = sum_b (w_ab z_b)_+ >= 0`` and ``N_a = sum_b (w_ab z_b)_- <= 0`` per output."""
    parts = sign_parts(W, z)
    return (parts["pp"] + parts["nn"]).sum(axis=1), (parts["pn"] + parts["np"]).sum(axis=1)


def _bias_parts(b: np.ndarray) -> dict[str, np.ndarray]:
    # The bias is an input of value +1 with weight b: only the pp and np parts.
    zero = np.zeros_like(b)
    return {"pp": np.maximum(b, 0.0), "pn": zero, "np": np.minimum(b, 0.0), "nn": zero}


def _stabilise(D, eps: float):
    if eps == 0.0:
        return D
    return D + eps * np.where(D >= 0, 1.0, -1.0)


def _safe_ratio(num, den, policy: ZeroDenominator):
    zero = den == 0
    if not np.any(zero):
        return num / den
    if policy == "raise":
        raise ZeroDivisionError("a rule denominator is exactly 0 (zero_denominator='raise')")
    with np.errstate(divide="ignore", invalid="ignore"):
        out = num / np.where(zero, 1.0, den)
    fill = 0.0 if policy == "zero" else np.nan
    return np.where(zero, fill, out)


def transition_matrix(W, z, rule: Rule, conventions: Conventions = DEFAULT_CONVENTIONS, b=None) -> np.ndarray:
    """The ``S x R`` transition matrix ``M(g)`` of ``rule`` at input ``z`` ([P1] eq. (13)).

    Parameters
    ----------
    W : array_like, shape (R, S)
        Weights of the affine layer ``g(z) = W z + b``.
    z : array_like, shape (S,)
        The layer's input (any signs).
    rule : Rule
    conventions : Conventions
    b : array_like, shape (R,), optional
        The bias; used only when ``conventions.bias == "backward"``.

    Returns
    -------
    ndarray, shape (S, R)
        ``M[b, a] = Att(g_a, z_b)``; the backward step is ``R_in = M @ R_out``.

    Raises
    ------
    InputError
        On shape mismatch or non-finite input.
    ZeroDivisionError
        When a denominator is 0 and ``conventions.zero_denominator == "raise"``.
    """
    W, z, b = _as_layer(W, z, b)
    parts = sign_parts(W, z)
    P = (parts["pp"] + parts["nn"]).sum(axis=1)
    N = (parts["pn"] + parts["np"]).sum(axis=1)
    coeffs = rule.coefficients(P, N)
    bias = _bias_parts(b) if (conventions.bias == "backward" and b is not None) else None
    eps = conventions.stabiliser + rule.epsilon
    M = np.zeros_like(W)
    for term, c in zip(rule.terms, coeffs):
        num = sum(a * parts[s] for a, s in zip(term.parts, SIGN_PARTS) if a != 0.0)
        if isinstance(num, int):  # all part weights zero
            continue
        den = num.sum(axis=1)
        if bias is not None:
            den = den + sum(a * bias[s] for a, s in zip(term.parts, SIGN_PARTS))
        den = _stabilise(den, eps)
        ratio = _safe_ratio(num, den[:, None], conventions.zero_denominator)
        c_arr = np.asarray(c, dtype=np.float64)
        M = M + (c_arr[:, None] if c_arr.ndim else c_arr) * ratio
    return M.T


def jacobian(W) -> np.ndarray:
    """The ``S x R`` Jacobian ``J(g)`` of ``g(z) = W z + b``: ``J[b, a] = w_ab`` ([P1] eq. (12))."""
    W = np.asarray(W, dtype=np.float64)
    if W.ndim != 2:
        raise InputError(f"W must be 2-d, got shape {W.shape}")
    return W.T.copy()


def conservation_defect(M) -> np.ndarray:
    """Per output ``a``: ``sum_b M[b, a] - 1`` (0 where Definition 2 / eq. (16) holds)."""
    M = np.asarray(M, dtype=np.float64)
    return M.sum(axis=0) - 1.0


# --------------------------------------------------------------------------- chaining

Activation = Callable[[np.ndarray], np.ndarray]


def relu(a: np.ndarray) -> np.ndarray:
    return np.maximum(a, 0.0)


def relu_derivative(a: np.ndarray) -> np.ndarray:
    """ReLU derivative with the convention ``relu'(0) := 0`` (as torch)."""
    return (a > 0).astype(np.float64)


@dataclass(frozen=True)
class Chain:
    """A forward pass through a list of affine layers with the matrices of one rule.

    ``inputs[r]`` is the input ``z^(r)`` of layer ``r`` (``inputs[0] = x``),
    ``pre[r]`` its pre-activation ``W_r z^(r) + b_r`` and ``matrices[r]`` its
    ``S_r x R_r`` transition matrix at that input.
    """

    inputs: tuple[np.ndarray, ...]
    pre: tuple[np.ndarray, ...]
    matrices: tuple[np.ndarray, ...]

    def relevance(self, q) -> list[np.ndarray]:
        """Relevance at every depth: ``out[t]`` is the map of layer ``n - t``'s input
        ``z^(n-t)`` for ``t = 1..n`` ([P1] eq. (25)); ``out[0] = q``."""
        r = _as_q(q, self.matrices[-1].shape[1])
        out = [r]
        for M in reversed(self.matrices):
            r = M @ r
            out.append(r)
        return out


def _as_q(q, R: int) -> np.ndarray:
    q = np.asarray(q, dtype=np.float64)
    if q.shape != (R,):
        raise InputError(f"q must have shape ({R},), got {q.shape}")
    if np.any(q < 0) or not math.isclose(float(q.sum()), 1.0, rel_tol=0, abs_tol=1e-9):
        raise InputError("q must satisfy q >= 0 and sum(q) = 1 ([P1] eq. (14))")
    return q


def forward_chain(
    layers: Sequence[tuple],
    x,
    rule: Rule | None = None,
    conventions: Conventions = DEFAULT_CONVENTIONS,
    activation: Activation = relu,
) -> Chain:
    """Run ``x`` through ``layers = [(W_1, b_1), ..., (W_n, b_n)]`` with ``activation``
    between layers (none after the last) and build each layer's transition
    matrix at its actual input ([P1] eq. (3)-(4), (14)).  With ``rule=None`` the
    matrices are the Jacobians of the affine maps (eq. (12))."""
    if len(layers) == 0:
        raise InputError("a network needs at least one layer")
    z = np.asarray(x, dtype=np.float64)
    inputs, pre, mats = [], [], []
    for r, layer in enumerate(layers):
        W, b = (layer if len(layer) == 2 else (layer[0], None))
        W = np.asarray(W, dtype=np.float64)
        b = np.zeros(W.shape[0]) if b is None else np.asarray(b, dtype=np.float64)
        inputs.append(z)
        mats.append(jacobian(W) if rule is None else transition_matrix(W, z, rule, conventions, b))
        a = W @ z + b
        pre.append(a)
        z = activation(a) if r < len(layers) - 1 else a
    return Chain(tuple(inputs), tuple(pre), tuple(mats))


def chained_attribution(
    layers: Sequence[tuple],
    x,
    rule: Rule,
    q,
    conventions: Conventions = DEFAULT_CONVENTIONS,
    activation: Activation = relu,
) -> np.ndarray:
    """``sum_u q_u Att(f_u, x) = q^T M^T(g^(n)) ... M^T(g^(1))`` ([P1] eq. (14)).

    Relevance passes through the activations unchanged (the paper's assumption
    for LRP); ``q >= 0`` with ``sum(q) = 1``.  Returns a vector of length ``S_1``.
    """
    return forward_chain(layers, x, rule, conventions, activation).relevance(q)[-1]


def chained_gradient(layers: Sequence[tuple], x, q, activation_derivative=relu_derivative, activation=relu) -> np.ndarray:
    """The gradient of ``sum_u q_u f_u`` at ``x`` as the Jacobian product ([P1] eq. (6))."""
    chain = forward_chain(layers, x, None, DEFAULT_CONVENTIONS, activation)
    r = _as_q(q, chain.matrices[-1].shape[1])
    n = len(chain.matrices)
    for k in range(n - 1, -1, -1):
        r = chain.matrices[k] @ r
        if k > 0:
            r = activation_derivative(chain.pre[k - 1]) * r
    return r


# --------------------------------------------------------------------------- symbolic


def transition_matrix_symbolic(W, z, rule: Rule, conventions: Conventions = DEFAULT_CONVENTIONS, b=None):
    """The same ``M(g)`` as :func:`transition_matrix`, built with sympy.

    ``W`` (R x S), ``z`` (S) and ``b`` (R) may hold sympy symbols or exact numbers;
    the zero-denominator policy becomes a ``Piecewise``.  sympy is imported here
    only, so the numeric core stays free of it.
    """
    import sympy as sp

    W = sp.Matrix(W)
    z = sp.Matrix(z)
    R, S = W.shape
    if z.shape != (S, 1):
        raise InputError(f"z must have {S} entries to match W, got shape {z.shape}")

    def pos(v):
        return sp.Max(v, 0)

    def neg(v):
        return sp.Min(v, 0)

    part = {
        "pp": lambda a, j: pos(W[a, j]) * pos(z[j]),
        "pn": lambda a, j: pos(W[a, j]) * neg(z[j]),
        "np": lambda a, j: neg(W[a, j]) * pos(z[j]),
        "nn": lambda a, j: neg(W[a, j]) * neg(z[j]),
    }
    P = [sum(part["pp"](a, j) + part["nn"](a, j) for j in range(S)) for a in range(R)]
    N = [sum(part["pn"](a, j) + part["np"](a, j) for j in range(S)) for a in range(R)]
    eps = sp.nsimplify(conventions.stabiliser + rule.epsilon)
    M = sp.zeros(S, R)
    for a in range(R):
        if rule.adaptive_beta_max is None:
            coeffs = [sp.nsimplify(t.coefficient) for t in rule.terms]
        else:
            bmax = sp.nsimplify(rule.adaptive_beta_max)
            tot = P[a] + N[a]
            # Guard the division itself: sympy evaluates every Piecewise branch.
            safe_tot = sp.Piecewise((tot, tot > 0), (1, True))
            beta = sp.Piecewise((sp.Min(sp.Max(-N[a] / safe_tot, 0), bmax), tot > 0), (bmax, True))
            coeffs = [1 + beta, -beta]
        for term, c in zip(rule.terms, coeffs):
            a_parts = [sp.nsimplify(v) for v in term.parts]
            nums = [sum(w * part[s](a, j) for w, s in zip(a_parts, SIGN_PARTS) if w != 0) for j in range(S)]
            den = sum(nums)
            if conventions.bias == "backward" and b is not None:
                bb = sp.Matrix(b)[a]
                den = den + a_parts[0] * pos(bb) + a_parts[2] * neg(bb)
            if eps != 0:
                den = den + eps * sp.Piecewise((1, den >= 0), (-1, True))
            for j in range(S):
                if conventions.zero_denominator == "zero":
                    ratio = sp.Piecewise((nums[j] / den, sp.Ne(den, 0)), (0, True))
                elif conventions.zero_denominator == "nan":
                    ratio = sp.Piecewise((nums[j] / den, sp.Ne(den, 0)), (sp.nan, True))
                else:
                    ratio = nums[j] / den
                M[j, a] += c * ratio
    return M
