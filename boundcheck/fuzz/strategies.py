"""Hypothesis strategies shared by every fuzz claim (one module, reused).

Every strategy mixes two branches with :func:`hypothesis.strategies.one_of`:

* an *explicit* branch whose entries are small integers drawn one by one by
  hypothesis (so shrinking reaches small, exact counterexamples such as
  ``M = [[0.0], [1.0]]``), and
* a *seeded* branch that draws a shape, a weight kind, a scale and a numpy seed
  and builds large arrays with :class:`numpy.random.Generator` (throughput:
  shapes 1..64, depth 1..12, scales 1e-3..1e3).

``one_of`` shrinks towards its first branch, so a failure found on a large
seeded example is, where possible, re-expressed as a small explicit one.

Weight kinds (:data:`WEIGHT_KINDS`): Gaussian, sparse Gaussian (80 % zeros),
small integers, one-sign (all positive / all negative), heavy-tailed (Cauchy,
Student-t with 2 degrees of freedom).  Input kinds (:data:`INPUT_KINDS`): both
signs, sparse, all zero, one-sign.  Degenerate rows (:data:`DEGENERATE_KINDS`):
some outputs get only positive, only negative or no contributions
``w_ab z_b`` at their actual input.

Examples are frozen dataclasses of float64 arrays; ``to_json()`` gives lists of
Python floats (``repr``-exact, so a printed counterexample is the exact input).

References
----------
[P1] eq. (3)-(4), (7), (9), (14), (16), (29); [P2] supplement B-E.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np
from hypothesis import assume
from hypothesis import strategies as st

from boundcheck.rules import relu

#: Weight distributions of the seeded branch.
WEIGHT_KINDS: tuple[str, ...] = ("gaussian", "sparse", "integer", "positive", "negative", "cauchy", "student_t")
#: Input distributions.
INPUT_KINDS: tuple[str, ...] = ("mixed", "sparse", "zero", "positive", "negative")
#: Degenerate-row modes (per layer, at the layer's actual input).
DEGENERATE_KINDS: tuple[str, ...] = ("none", "positive_rows", "negative_rows", "zero_rows", "mixed_rows")
#: Weight scales 1e-3 .. 1e3.
SCALES: tuple[float, ...] = (1e-3, 1e-2, 0.1, 1.0, 10.0, 100.0, 1e3)

MAX_WIDTH = 64
MAX_DEPTH = 12

_SEEDS = st.integers(min_value=0, max_value=2**32 - 1)
_SMALL_INT = st.integers(min_value=-3, max_value=3).map(float)


def _tolist(a) -> list:
    return np.asarray(a, dtype=np.float64).tolist()


# --------------------------------------------------------------------------- numpy builders


def random_weights(rng: np.random.Generator, R: int, S: int, kind: str, scale: float) -> np.ndarray:
    """An ``(R, S)`` weight matrix of one of :data:`WEIGHT_KINDS`, times ``scale``."""
    if kind == "gaussian":
        W = rng.standard_normal((R, S))
    elif kind == "sparse":
        W = rng.standard_normal((R, S)) * (rng.random((R, S)) < 0.2)
    elif kind == "integer":
        W = rng.integers(-3, 4, size=(R, S)).astype(np.float64)
    elif kind == "positive":
        W = np.abs(rng.standard_normal((R, S)))
    elif kind == "negative":
        W = -np.abs(rng.standard_normal((R, S)))
    elif kind == "cauchy":
        W = np.clip(rng.standard_cauchy((R, S)), -1e6, 1e6)
    elif kind == "student_t":
        W = rng.standard_t(2.0, size=(R, S))
    else:  # pragma: no cover - guarded by the strategies
        raise ValueError(kind)
    return W * scale


def random_input(rng: np.random.Generator, S: int, kind: str, scale: float = 1.0) -> np.ndarray:
    """An input vector of one of :data:`INPUT_KINDS`."""
    z = rng.standard_normal(S) * scale
    if kind == "sparse":
        z = z * (rng.random(S) < 0.3)
    elif kind == "zero":
        z = np.zeros(S)
    elif kind == "positive":
        z = np.abs(z)
    elif kind == "negative":
        z = -np.abs(z)
    return z


def make_degenerate(rng: np.random.Generator, W: np.ndarray, z: np.ndarray, mode: str) -> np.ndarray:
    """Copy of ``W`` where some rows have only positive / only negative / no
    contributions ``w_ab z_b`` at input ``z`` (``mode`` from :data:`DEGENERATE_KINDS`)."""
    if mode == "none" or W.shape[0] == 0:
        return W
    W = W.copy()
    R = W.shape[0]
    rows = rng.random(R) < 0.5
    if not np.any(rows):
        rows[rng.integers(R)] = True
    sz = np.sign(z)
    for a in np.flatnonzero(rows):
        m = mode if mode != "mixed_rows" else ("positive_rows", "negative_rows", "zero_rows")[rng.integers(3)]
        if m == "positive_rows":
            W[a] = np.abs(W[a]) * sz
        elif m == "negative_rows":
            W[a] = -np.abs(W[a]) * sz
        else:
            W[a] = 0.0
    return W


# --------------------------------------------------------------------------- examples


@dataclass(frozen=True)
class Layer:
    """One affine layer ``g(z) = W z + b`` evaluated at the input ``z``."""

    W: np.ndarray
    z: np.ndarray
    b: np.ndarray

    def to_json(self) -> dict:
        return {"W": _tolist(self.W), "z": _tolist(self.z), "b": _tolist(self.b)}


@dataclass(frozen=True)
class Network:
    """A ReLU network ``[(W_1, b_1), ..., (W_n, b_n)]`` (no activation after the
    last layer), inputs ``xs`` (one or several) and output weights ``q``
    (``q >= 0``, ``sum q = 1``, [P1] eq. (14))."""

    layers: tuple[tuple[np.ndarray, np.ndarray], ...]
    xs: tuple[np.ndarray, ...]
    q: np.ndarray

    @property
    def x(self) -> np.ndarray:
        return self.xs[0]

    @property
    def depth(self) -> int:
        return len(self.layers)

    def to_json(self) -> dict:
        d = {"layers": [{"W": _tolist(W), "b": _tolist(b)} for W, b in self.layers], "q": _tolist(self.q)}
        if len(self.xs) == 1:
            d["x"] = _tolist(self.xs[0])
        else:
            d["xs"] = [_tolist(x) for x in self.xs]
        return d


def _forward(layers, x):
    """Layer inputs ``z^(r)`` of a forward pass (ReLU between layers)."""
    z = np.asarray(x, dtype=np.float64)
    inputs = []
    for r, (W, b) in enumerate(layers):
        inputs.append(z)
        a = W @ z + b
        z = relu(a) if r < len(layers) - 1 else a
    return inputs


# --------------------------------------------------------------------------- layers


@st.composite
def explicit_layer(draw, max_out: int = 3, max_in: int = 3) -> Layer:
    """A small layer with integer weights and inputs (exact, shrinks well)."""
    R = draw(st.integers(1, max_out))
    S = draw(st.integers(1, max_in))
    W = np.array(draw(st.lists(st.lists(_SMALL_INT, min_size=S, max_size=S), min_size=R, max_size=R)))
    z = np.array(draw(st.lists(_SMALL_INT, min_size=S, max_size=S)))
    return Layer(W.reshape(R, S), z, np.zeros(R))


@st.composite
def seeded_layer(draw, max_out: int = MAX_WIDTH, max_in: int = MAX_WIDTH) -> Layer:
    """A layer of any shape 1..64, weight kind, scale, input kind and degenerate rows."""
    R = draw(st.integers(1, max_out))
    S = draw(st.integers(1, max_in))
    kind = draw(st.sampled_from(WEIGHT_KINDS))
    scale = draw(st.sampled_from(SCALES))
    in_kind = draw(st.sampled_from(INPUT_KINDS))
    in_scale = draw(st.sampled_from(SCALES))
    degenerate = draw(st.sampled_from(DEGENERATE_KINDS))
    rng = np.random.default_rng(draw(_SEEDS))
    W = random_weights(rng, R, S, kind, scale)
    z = random_input(rng, S, in_kind, in_scale)
    W = make_degenerate(rng, W, z, degenerate)
    b = rng.standard_normal(R) * scale
    return Layer(W, z, b)


def layers() -> st.SearchStrategy[Layer]:
    """Single affine layers at an input: explicit small integer ones or seeded large ones."""
    return st.one_of(explicit_layer(), seeded_layer())


# --------------------------------------------------------------------------- networks


def _q_from(draw, R: int) -> np.ndarray:
    w = np.array(draw(st.lists(st.integers(0, 3), min_size=R, max_size=R)), dtype=np.float64)
    if w.sum() == 0:
        w[0] = 1.0
    return w / w.sum()


@st.composite
def explicit_network(draw, max_depth: int = 3, max_width: int = 3, n_inputs: int = 1) -> Network:
    """A small ReLU network with integer weights, zero biases and integer inputs."""
    depth = draw(st.integers(1, max_depth))
    widths = [draw(st.integers(1, max_width)) for _ in range(depth + 1)]
    layers = []
    for r in range(depth):
        R, S = widths[r + 1], widths[r]
        W = np.array(draw(st.lists(_SMALL_INT, min_size=R * S, max_size=R * S))).reshape(R, S)
        layers.append((W, np.zeros(R)))
    xs = tuple(np.array(draw(st.lists(_SMALL_INT, min_size=widths[0], max_size=widths[0]))) for _ in range(n_inputs))
    return Network(tuple(layers), xs, _q_from(draw, widths[-1]))


@st.composite
def seeded_network(draw, max_depth: int = MAX_DEPTH, max_width: int = MAX_WIDTH, n_inputs: int = 1) -> Network:
    """A ReLU network of depth 1..12 and widths 1..64 with a weight kind, scale,
    input kind, optional biases and degenerate rows (made at the actual inputs)."""
    depth = draw(st.integers(1, max_depth))
    widths = [draw(st.integers(1, max_width)) for _ in range(depth + 1)]
    kind = draw(st.sampled_from(WEIGHT_KINDS + ("per_layer",)))
    scale = draw(st.sampled_from(SCALES))
    in_kind = draw(st.sampled_from(INPUT_KINDS))
    degenerate = draw(st.sampled_from(DEGENERATE_KINDS))
    bias = draw(st.booleans())
    rng = np.random.default_rng(draw(_SEEDS))
    x0 = random_input(rng, widths[0], in_kind, draw(st.sampled_from(SCALES)))
    xs = [x0]
    for _ in range(n_inputs - 1):  # augmentations: colour-like gain and shift, plus noise
        xs.append(x0 * rng.uniform(0.5, 1.5) + rng.normal(0, 0.1) + rng.normal(0, 0.05, widths[0]))
    layers = []
    z = x0
    for r in range(depth):
        R, S = widths[r + 1], widths[r]
        k = WEIGHT_KINDS[rng.integers(len(WEIGHT_KINDS))] if kind == "per_layer" else kind
        W = random_weights(rng, R, S, k, scale)
        W = make_degenerate(rng, W, z, degenerate)
        b = rng.standard_normal(R) * scale * 0.1 if bias else np.zeros(R)
        layers.append((W, b))
        a = W @ z + b
        z = relu(a) if r < depth - 1 else a
    q = rng.dirichlet(np.ones(widths[-1])) if draw(st.booleans()) else np.eye(widths[-1])[rng.integers(widths[-1])]
    return Network(tuple(layers), tuple(xs), q)


def networks(n_inputs: int = 1, max_depth: int = MAX_DEPTH, max_width: int = MAX_WIDTH) -> st.SearchStrategy[Network]:
    """ReLU networks: explicit small integer ones or seeded ones (depth 1..12, width 1..64)."""
    return st.one_of(
        explicit_network(n_inputs=n_inputs),
        seeded_network(max_depth=max_depth, max_width=max_width, n_inputs=n_inputs),
    )


def project_condition29(layers: Sequence[tuple], xs: Sequence[np.ndarray], gamma: float, factor: float = 0.9,
                        rounds: int = 20) -> tuple[tuple[np.ndarray, np.ndarray], ...]:
    """Rescale weights so that condition (29) holds in every layer at every input.

    Along the forward pass, layer by layer, for each output ``a`` with
    ``P_a = sum_b (w_ab z_b)_+ > 0`` and ``gamma^(-1/2) |N_a| >= P_a`` the weights
    with ``w_ab z_b < 0`` are multiplied by ``factor * P_a sqrt(gamma) / |N_a|``,
    so that afterwards ``gamma^(-1/2) |N_a| = factor * P_a < P_a``.  Outputs
    without a positive part are exempt (as in [P1] Lemma 8).  Because changing a
    layer changes the next layer's input, the pass is repeated (for every input)
    until nothing changes.  The caller's arrays are not modified.

    Returns the projected layers; check the result with
    :func:`boundcheck.bounds.condition29` (the projection may not converge within
    ``rounds`` for several inputs).
    """
    out = [(np.array(W, dtype=np.float64), np.array(b, dtype=np.float64)) for W, b in layers]
    sg = math.sqrt(gamma)
    for _ in range(rounds):
        changed = False
        for x in xs:
            z = np.asarray(x, dtype=np.float64)
            for r, (W, b) in enumerate(out):
                y = W * z
                P = np.maximum(y, 0.0).sum(axis=1)
                Nabs = -np.minimum(y, 0.0).sum(axis=1)
                bad = (P > 0) & (Nabs / sg >= P)
                if np.any(bad):
                    s = factor * P[bad] * sg / Nabs[bad]
                    neg = y[bad] < 0
                    W[bad] = np.where(neg, W[bad] * s[:, None], W[bad])
                    changed = True
                a = W @ z + b
                z = relu(a) if r < len(out) - 1 else a
        if not changed:
            break
    return tuple(out)


def condition29_holds(layers, xs, gamma) -> bool:
    """Whether condition (29) holds in every layer at every input (via :mod:`boundcheck.bounds`)."""
    from boundcheck.bounds import condition29

    for x in xs:
        for W, z in zip((W for W, _ in layers), _forward(layers, x)):
            if not condition29(W, z, gamma).all_hold:
                return False
    return True


GAMMAS = st.one_of(st.sampled_from([2.0, 4.0, 1.5, 10.0, 100.0]), st.floats(1.01, 1000.0))
BETAS = st.one_of(st.sampled_from([1.0, 0.0, 0.5, 2.0]), st.floats(0.0, 10.0))


@st.composite
def condition29_networks(draw, n_inputs: int = 1, max_depth: int = MAX_DEPTH, max_width: int = MAX_WIDTH):
    """``(network, gamma)`` with the network projected onto condition (29) for
    ``gamma`` at all its inputs (:func:`project_condition29`); the factor is drawn
    up to 0.999999 so that the condition is nearly tight."""
    net = draw(networks(n_inputs=n_inputs, max_depth=max_depth, max_width=max_width))
    gamma = draw(GAMMAS)
    factor = draw(st.sampled_from([0.999999, 0.9, 0.5, 0.99]))
    projected = project_condition29(net.layers, net.xs, gamma, factor)
    assume(condition29_holds(projected, net.xs, gamma))
    return Network(projected, net.xs, net.q), gamma


# --------------------------------------------------------------------------- matrices


@st.composite
def explicit_conserving_matrix(draw, max_dim: int = 3) -> np.ndarray:
    """A small ``S x R`` matrix whose columns sum to 1 ([P1] eq. (16)): integer
    entries in the first ``S-1`` rows, the last row completes each column."""
    S = draw(st.integers(1, max_dim))
    R = draw(st.integers(1, max_dim))
    top = np.array(draw(st.lists(_SMALL_INT, min_size=(S - 1) * R, max_size=(S - 1) * R))).reshape(S - 1, R)
    return np.vstack([top, 1.0 - top.sum(axis=0, keepdims=True)])


@st.composite
def seeded_conserving_matrix(draw, max_dim: int = MAX_WIDTH) -> np.ndarray:
    """A random ``S x R`` relevance-conserving matrix of a weight kind and scale."""
    S = draw(st.integers(1, max_dim))
    R = draw(st.integers(1, max_dim))
    kind = draw(st.sampled_from(WEIGHT_KINDS))
    scale = draw(st.sampled_from(SCALES))
    rng = np.random.default_rng(draw(_SEEDS))
    A = random_weights(rng, S, R, kind, scale)
    if draw(st.booleans()):  # normalised columns (a stochastic-like matrix)
        s = A.sum(axis=0)
        ok = np.abs(s) > 1e-12 * (np.abs(A).sum(axis=0) + 1e-300)
        A[:, ok] = A[:, ok] / s[ok]
        A[:, ~ok] = 0.0
    A[-1] += 1.0 - A.sum(axis=0)
    return A


def conserving_matrices() -> st.SearchStrategy[np.ndarray]:
    """Relevance-conserving matrices (every column sums to 1)."""
    return st.one_of(explicit_conserving_matrix(), seeded_conserving_matrix())


# --------------------------------------------------------------------------- [P2] statistics


@dataclass(frozen=True)
class Moments:
    """Means, standard deviations, a covariance ``0 <= sigma_AB <= sigma_A sigma_B``
    and the SSIM constants ``C1, C2 > 0``."""

    mu_a: float
    mu_b: float
    sigma_a: float
    sigma_b: float
    sigma_ab: float
    c1: float
    c2: float

    def to_json(self) -> dict:
        return dict(self.__dict__)


@st.composite
def moments(draw) -> Moments:
    mu = st.floats(-10.0, 10.0, allow_subnormal=False)
    sd = st.floats(1e-3, 10.0)
    sa, sb = draw(sd), draw(sd)
    rho = draw(st.floats(0.0, 1.0))
    c = st.one_of(st.sampled_from([1e-4, 9e-4, 0.01, 1.0]), st.floats(1e-6, 10.0))
    return Moments(draw(mu), draw(mu), sa, sb, rho * sa * sb, draw(c), draw(c))


@dataclass(frozen=True)
class Paired:
    """A small paired sample ``(A_i, B_i)``, ``i = 1..n``."""

    a: np.ndarray
    b: np.ndarray

    def to_json(self) -> dict:
        return {"a": _tolist(self.a), "b": _tolist(self.b)}


@st.composite
def paired_samples(draw, min_size: int = 2, max_size: int = 10, integers: bool = True) -> Paired:
    """Paired samples of size 2..10: small integers (exact arithmetic) or floats."""
    n = draw(st.integers(min_size, max_size))
    elem = st.integers(-20, 20).map(float) if integers else st.floats(-100.0, 100.0, allow_subnormal=False)
    a = draw(st.lists(elem, min_size=n, max_size=n))
    b = draw(st.lists(elem, min_size=n, max_size=n))
    return Paired(np.array(a), np.array(b))


@dataclass(frozen=True)
class CauchySetup:
    """Sets ``XS``, ``XL`` of non-negative activations with ``min XL >= K max XS``
    ([P2] E, eq. (21)) and a seed for the Monte-Carlo check."""

    xs: np.ndarray
    xl: np.ndarray
    k: float
    seed: int

    def to_json(self) -> dict:
        return {"XS": _tolist(self.xs), "XL": _tolist(self.xl), "K": self.k, "seed": self.seed}


@st.composite
def cauchy_setups(draw) -> CauchySetup:
    k = draw(st.one_of(st.sampled_from([1.0, 2.0, 10.0]), st.floats(0.01, 100.0)))
    nl = draw(st.integers(1, 20))
    ns = draw(st.integers(1, 20))
    rng = np.random.default_rng(draw(_SEEDS))
    scale = draw(st.sampled_from(SCALES))
    xl = scale * (1.0 + rng.exponential(1.0, nl))
    kind = draw(st.sampled_from(["uniform", "at_bound", "zero"]))
    cap = xl.min() / k
    if kind == "uniform":
        xs = cap * rng.random(ns)
    elif kind == "at_bound":
        xs = np.full(ns, cap)
    else:
        xs = np.zeros(ns)
    xs = np.minimum(xs, cap)  # keep eq. (21) exact after rounding
    while np.any(xs * k > xl.min()):
        xs = np.nextafter(xs, 0.0)
    return CauchySetup(xs, xl, float(k), int(draw(_SEEDS)))


@dataclass(frozen=True)
class HoeffdingSetup:
    """Bernoulli(p) variables scaled to ``{0, r}``, ``m`` samples, confidence ``1-delta``."""

    p: float
    m: int
    r: float
    delta: float
    components: int

    def to_json(self) -> dict:
        return dict(self.__dict__)


@st.composite
def hoeffding_setups(draw) -> HoeffdingSetup:
    return HoeffdingSetup(
        p=draw(st.one_of(st.sampled_from([0.5, 0.01, 0.99]), st.floats(0.0, 1.0, allow_subnormal=False))),
        m=draw(st.integers(1, 2000)),
        r=draw(st.one_of(st.sampled_from(SCALES), st.floats(1e-3, 1e3))),
        delta=draw(st.one_of(st.sampled_from([0.05, 0.01, 0.5]), st.floats(1e-9, 0.999))),
        components=draw(st.integers(1, 4)),
    )


@dataclass(frozen=True)
class NormSetup:
    """Dimension ``R`` and standard deviation ``sigma`` of ``w_d ~ N(0, sigma^2)`` ([P1] KR 9)."""

    R: int
    sigma: float
    seed: int

    def to_json(self) -> dict:
        return dict(self.__dict__)


@st.composite
def norm_setups(draw) -> NormSetup:
    R = draw(st.one_of(st.integers(1, 64), st.integers(1, 100_000)))
    sigma = draw(st.one_of(st.sampled_from([1.0, 0.5, 2.0, 1e-3, 1e3]), st.floats(1e-3, 1e3)))
    return NormSetup(R, sigma, draw(_SEEDS))
