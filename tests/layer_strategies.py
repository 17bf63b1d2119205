"""Hypothesis strategies for random layers and networks, shared by the rule and bound tests.

Every strategy draws small parameters (shapes, a seed, a scale, a mode) and
builds the arrays with ``numpy.random.default_rng(seed)``: a failing example
prints its seed and is reproducible from it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from hypothesis import strategies as st

INPUT_MODES = ("positive", "mixed", "sparse", "zero")
ROW_KINDS = ("random", "allpos", "allneg", "zero")


@dataclass(frozen=True)
class LayerSpec:
    R: int
    S: int
    seed: int
    log10_scale: float
    input_mode: str
    weight_sparsity: float
    degenerate: bool

    def build(self):
        """``(W, z, b)`` for this spec."""
        rng = np.random.default_rng(self.seed)
        scale = 10.0**self.log10_scale
        W = rng.standard_normal((self.R, self.S)) * scale
        if self.weight_sparsity > 0:
            W = W * (rng.random((self.R, self.S)) >= self.weight_sparsity)
        z = rng.standard_normal(self.S)
        if self.input_mode == "positive":
            z = np.abs(z)
        elif self.input_mode == "sparse":
            z = np.abs(z) * (rng.random(self.S) < 0.3)
        elif self.input_mode == "zero":
            z = np.zeros(self.S)
        if self.degenerate:
            kinds = rng.choice(ROW_KINDS, size=self.R)
            s = np.sign(z)
            for a, kind in enumerate(kinds):
                if kind == "allpos":
                    W[a] = np.abs(W[a]) * s + (s == 0) * W[a]
                elif kind == "allneg":
                    W[a] = -np.abs(W[a]) * s + (s == 0) * W[a]
                elif kind == "zero":
                    W[a] = 0.0
        b = rng.standard_normal(self.R) * scale
        return W, z, b


def layer_specs(max_dim: int = 64) -> st.SearchStrategy[LayerSpec]:
    return st.builds(
        LayerSpec,
        R=st.integers(1, max_dim),
        S=st.integers(1, max_dim),
        seed=st.integers(0, 2**32 - 1),
        log10_scale=st.floats(-3.0, 3.0),
        input_mode=st.sampled_from(INPUT_MODES),
        weight_sparsity=st.sampled_from((0.0, 0.5, 0.9)),
        degenerate=st.booleans(),
    )


@dataclass(frozen=True)
class NetworkSpec:
    widths: tuple[int, ...]  # input width first, output width last
    seed: int
    mixed_input: bool

    def build(self):
        """``(layers, x, q)``: a ReLU network with biases, an input and output weights ``q``."""
        rng = np.random.default_rng(self.seed)
        layers = []
        for S, R in zip(self.widths[:-1], self.widths[1:]):
            W = rng.standard_normal((R, S)) / np.sqrt(S)
            b = 0.1 * rng.standard_normal(R)
            layers.append((W, b))
        x = rng.standard_normal(self.widths[0])
        if not self.mixed_input:
            x = np.abs(x)
        q = rng.random(self.widths[-1]) + 1e-3
        return layers, x, q / q.sum()


def network_specs(max_depth: int = 6, max_width: int = 16) -> st.SearchStrategy[NetworkSpec]:
    return st.builds(
        NetworkSpec,
        widths=st.integers(1, max_depth).flatmap(lambda d: st.tuples(*[st.integers(1, max_width)] * (d + 1))),
        seed=st.integers(0, 2**32 - 1),
        mixed_input=st.booleans(),
    )
