"""Depth of a network with residual joins: how a DAG maps onto the chain of eq. (14).

Lemma 7 and Lemma 8 ([P1] eq. (28), (30)) are stated for a chain
``q^T M^T(g^(n)) ... M^T(g^(1))`` (eq. (14), (25)).  Networks with skip
connections (ResNet, EfficientNet, Swin) are DAGs.  This module states and
implements the reduction used by the audit.

Setting
-------
The backward pass runs on a DAG whose nodes are

* *rule ops*: affine maps ``y = W z`` (bias excluded in the backward pass) to
  which an LRP rule is applied output by output: convolutions and linear layers
  (BatchNorm folded into them), average pools / means, attention-weighted sums,
  and **residual joins** ``y = z_1 + z_2 = [I I] (z_1; z_2)`` (an affine map with
  two inputs per output, the rule applied to it like to any other layer);
* *pass ops*: activations, reshapes, padding, BatchNorm-after-folding, LayerNorm
  (engine convention), concatenation; in the backward pass they route relevance
  unchanged (transition ``M = I`` or a permutation/selection);
* *fan-out points*: a tensor consumed by several ops receives the **sum** of the
  relevances its consumers send back (as the gradient does).

Relevance flows only along *relevance edges*: the gate branch of a
squeeze-excitation ``x * sigmoid(s(x))`` and the query/key branch of attention
receive none (their value is a constant weight of the backward step).

Definition (level)
------------------
For a node ``v`` let ``D(v)`` be the largest number of rule ops on a relevance
path from ``v``'s output to the network output (``v`` excluded).  A rule op ``c``
has *depth* ``t(c) = D(c) + 1``: the final linear layer has depth 1, and the
relevance at ``c``'s input is compared with the bounds at ``t = t(c)``.  The
network depth is ``n = D(input)``: the number of rule ops on the longest
relevance path from the input to the output (convolutions, linears, residual
joins, average pools, attention sums all count; pass ops do not).

Theorem (DAG form of Lemma 7 / Lemma 8)
---------------------------------------
Let every rule op use LRP-beta (``beta >= 0``), or LRP-gamma with condition (29)
holding at every output of every rule op, and let ``(c_+, c_-)`` be the per-step
coefficients (``(1+beta, beta)``, resp. ``lemma8_coefficients(gamma)``).  Start
from ``q >= 0, sum q = 1``.  For ``t = 1..n`` let ``E_t`` be the set of relevance
edges ``p -> c`` (pass ops contracted) with ``t(c) <= t < t(p)`` (the input has
``t = n + 1``), ``P_t`` the sum of the positive and ``N_t`` the magnitude of the
sum of the negative entries of all edge relevances in ``E_t``.  Then
``(P_t, N_t) <= A^t (1, 0)`` entrywise with ``A = [[c_+, c_-], [c_-, c_+]]``,
i.e. the exact bounds of ``boundcheck.bounds.lemma7_bounds(.., "exact")``
(``lemma8_bounds``), and hence the paper bounds.  In particular

1. the input relevance of any single rule op ``c`` and the sum over all rule ops
   of one depth ``t`` are bounded by the depth-``t`` bounds (their edges are
   disjoint subsets of ``E_t``: every producer ``p`` of ``c`` has
   ``t(p) >= t(c) + 1``);
2. the attribution map of the input (sum of its edges) is bounded by the
   depth-``n`` bounds, since ``(a + b)_+ <= a_+ + b_+``.

Proof.  ``E_0`` is the output with relevance ``q``.  Going from ``E_{t-1}`` to
``E_t``: an edge whose producer has ``t(p) > t`` stays (transition ``I``, and
``I <= A`` entrywise since ``c_+ >= 1, c_- >= 0``).  The edges whose producer
``p`` has ``t(p) = t`` are exactly all out-edges of ``p`` (all consumers of ``p``
have depth ``< t``); they are summed at ``p``'s output (which does not increase
``P`` or ``N``) and replaced by ``p``'s input edges, whose sums obey the one-step
inequality of the lemma's induction (``P' <= c_+ P + c_- N``,
``N' <= c_- P + c_+ N``; [P1] eq. (86)/(101), (181)-(182)/(219)) applied to
``p`` alone.  Adding over the disjoint parts gives the step.  Pass ops with a
0/1 selection matrix (max-pooling, cropping) only drop or sum entries.  QED.

The longest path is necessary: in ``out = w3 (relu(w1 x) + x)`` with scalar
weights 1 and ``x > 0`` (LRP-beta, 0/0 := 0) the input map is
``(1+beta)^2 (2+beta)/2`` (6 for ``beta = 1``), which exceeds the exact depth-2
bound ``((1+2beta)^2+1)/2`` (the number of convolutions/linears on the longest
path) for every ``beta > 0`` but not the depth-3 bound (longest path with the
join counted); :func:`residual_counterexample`
builds it and ``tests/test_audit_depth.py`` checks it.

References
----------
[P1] eq. (14), (25), Lemma 7 (eq. (28), proof eq. (51)-(106)), Lemma 8
(eq. (29)-(30), proof eq. (107)-(224)).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from boundcheck.errors import InputError
from boundcheck.rules import DEFAULT_CONVENTIONS, Conventions, Rule, transition_matrix



# --------------------------------------------------------------------------- generic levels


def relevance_depths(inputs: dict[str, Sequence[str]], is_rule: dict[str, bool], output: str) -> dict[str, int]:
    """``D(v)`` for every node that reaches ``output`` along relevance edges.

    Parameters
    ----------
    inputs : dict node -> list of relevance inputs (the producers it sends relevance to)
    is_rule : dict node -> whether the node applies a rule (counts as a level)
    output : the output node (``D(output) = 0`` counting the output itself if it is a rule op
        is done by :func:`rule_depth`)

    Returns
    -------
    dict node -> D(node): the largest number of rule ops strictly downstream of the
    node on a relevance path, where ``output`` itself counts when it is a rule op.
    """
    for c, ins in inputs.items():
        for p in ins:
            if p not in inputs:
                raise InputError(f"unknown producer {p!r} of {c!r}")
    if output not in inputs:
        raise InputError(f"unknown output node {output!r}")
    return _weighted_depths(inputs, {v: 1 if is_rule.get(v, False) else 0 for v in inputs}, output)


def rule_depth(D: dict[str, int], is_rule: dict[str, bool], node: str) -> int:
    """Depth ``t(c) = D(c) + 1`` of a rule op (the depth of the relevance at its input)."""
    if not is_rule.get(node, False):
        raise InputError(f"{node!r} is not a rule op")
    return D[node] + 1


# --------------------------------------------------------------------------- numpy DAG (oracle)


@dataclass
class DagNode:
    """One node of :class:`AffineDAG`: ``op`` in {"input", "affine", "add", "relu"}."""

    name: str
    op: str
    inputs: tuple[str, ...] = ()
    W: np.ndarray | None = None
    b: np.ndarray | None = None


@dataclass
class DagBackward:
    """Result of :meth:`AffineDAG.backward`.

    Attributes
    ----------
    input_map : relevance of the network input (sum over its consumers)
    op_in : rule op -> relevance at its input (concatenated over its inputs)
    edges : (producer, consumer) -> relevance the consumer sends to that producer,
        pass ops contracted (producers are rule ops or the input)
    depth : rule op -> t(c); ``depth["input"] = n + 1``
    n : network depth
    matrices : rule op -> its transition matrix M (S x R)
    """

    input_map: np.ndarray
    op_in: dict[str, np.ndarray]
    edges: dict[tuple[str, str], np.ndarray]
    depth: dict[str, int]
    n: int
    matrices: dict[str, np.ndarray] = field(default_factory=dict)

    def cut_sums(self) -> list[tuple[float, float]]:
        """``(P_t, N_t)`` over the edge cut ``E_t`` for ``t = 1..n`` (module theorem)."""
        out = []
        for t in range(1, self.n + 1):
            P = N = 0.0
            for (p, c), r in self.edges.items():
                if self.depth[c] <= t < self.depth[p]:
                    P += float(r[r > 0].sum())
                    N += float(-r[r < 0].sum())
            out.append((P, N))
        return out

    def level_sums(self) -> list[tuple[float, float]]:
        """Sum over the rule ops of depth exactly ``t`` of their input relevance sums."""
        out = [[0.0, 0.0] for _ in range(self.n)]
        for c, r in self.op_in.items():
            t = self.depth[c]
            out[t - 1][0] += float(r[r > 0].sum())
            out[t - 1][1] += float(-r[r < 0].sum())
        return [tuple(x) for x in out]


class AffineDAG:
    """A small DAG of affine layers, ReLUs and residual joins, evaluated in float64.

    Nodes are given in topological order; the last node is the output (a rule op).
    ``"add"`` sums its inputs and, in the backward pass, applies the rule to the
    affine map ``[I I ...]`` exactly as to any layer (:func:`boundcheck.rules.transition_matrix`
    on the concatenated input).
    """

    def __init__(self, nodes: Sequence[DagNode]):
        self.nodes = list(nodes)
        names = [n.name for n in self.nodes]
        if len(set(names)) != len(names):
            raise InputError("node names must be unique")
        if not self.nodes or self.nodes[0].op != "input":
            raise InputError("the first node must be the input")
        self.by_name = {n.name: n for n in self.nodes}
        for n in self.nodes:
            if n.op not in ("input", "affine", "add", "relu"):
                raise InputError(f"unknown op {n.op!r}")
            for p in n.inputs:
                if p not in self.by_name or names.index(p) >= names.index(n.name):
                    raise InputError(f"{n.name!r}: inputs must be earlier nodes")
        self.output = self.nodes[-1].name
        if self.nodes[-1].op not in ("affine", "add"):
            raise InputError("the output node must be an affine layer or a join")

    def is_rule(self, name: str) -> bool:
        return self.by_name[name].op in ("affine", "add")

    def forward(self, x) -> dict[str, np.ndarray]:
        vals: dict[str, np.ndarray] = {}
        for n in self.nodes:
            if n.op == "input":
                vals[n.name] = np.asarray(x, dtype=np.float64)
            elif n.op == "affine":
                z = vals[n.inputs[0]]
                vals[n.name] = n.W @ z + (0.0 if n.b is None else n.b)
            elif n.op == "add":
                vals[n.name] = sum(vals[p] for p in n.inputs)
            else:
                vals[n.name] = np.maximum(vals[n.inputs[0]], 0.0)
        return vals

    def _source(self, name: str) -> str:
        """The rule op or input behind a chain of pass ops (ReLUs)."""
        while self.by_name[name].op == "relu":
            name = self.by_name[name].inputs[0]
        return name

    def depths(self) -> tuple[dict[str, int], int]:
        inputs = {n.name: tuple(n.inputs) for n in self.nodes}
        is_rule = {n.name: self.is_rule(n.name) for n in self.nodes}
        D = relevance_depths(inputs, is_rule, self.output)
        depth = {v: D[v] + 1 for v in D if is_rule[v]}
        n = D[self.nodes[0].name]
        depth[self.nodes[0].name] = n + 1
        return depth, n

    def backward(self, x, rule: Rule, q, conventions: Conventions = DEFAULT_CONVENTIONS) -> DagBackward:
        vals = self.forward(x)
        depth, n = self.depths()
        q = np.asarray(q, dtype=np.float64)
        rel_out: dict[str, np.ndarray] = {self.output: q.copy()}
        op_in: dict[str, np.ndarray] = {}
        edges: dict[tuple[str, str], np.ndarray] = {}
        mats: dict[str, np.ndarray] = {}

        for node in reversed(self.nodes):
            if node.op == "input" or node.name not in rel_out:
                continue
            R = rel_out[node.name]
            if node.op == "relu":
                # pass op: relevance flows through unchanged; edges are kept by the consumer
                p = node.inputs[0]
                rel_out[p] = rel_out.get(p, 0.0) + R
                continue
            if node.op == "affine":
                z = vals[node.inputs[0]]
                M = transition_matrix(node.W, z, rule, conventions, node.b)
                mats[node.name] = M
                rin = M @ R
                op_in[node.name] = rin
                self._route(node.inputs[0], rin, node.name, edges)
            else:  # add: [I I ...] on the concatenated input
                zs = [vals[p] for p in node.inputs]
                k, d = len(zs), zs[0].shape[0]
                W = np.hstack([np.eye(d)] * k)
                M = transition_matrix(W, np.concatenate(zs), rule, conventions)
                mats[node.name] = M
                rin = M @ R
                op_in[node.name] = rin
                for i, p in enumerate(node.inputs):
                    self._route(p, rin[i * d:(i + 1) * d], node.name, edges)
                    rel_out[p] = rel_out.get(p, 0.0) + rin[i * d:(i + 1) * d]
                continue
            p = node.inputs[0]
            rel_out[p] = rel_out.get(p, 0.0) + rin
        return DagBackward(
            input_map=np.asarray(rel_out[self.nodes[0].name], dtype=np.float64),
            op_in=op_in, edges=edges, depth=depth, n=n, matrices=mats,
        )

    def _route(self, producer: str, r: np.ndarray, consumer: str, edges):
        key = (self._source(producer), consumer)
        edges[key] = edges.get(key, 0.0) + r


def chain_dag(layers: Sequence[tuple]) -> AffineDAG:
    """A chain ``[(W_1, b_1), ..., (W_n, b_n)]`` with ReLUs as an :class:`AffineDAG`
    (same network as :func:`boundcheck.rules.forward_chain`)."""
    nodes = [DagNode("x", "input")]
    prev = "x"
    for i, (W, b) in enumerate(layers):
        nodes.append(DagNode(f"l{i + 1}", "affine", (prev,), np.asarray(W, float), None if b is None else np.asarray(b, float)))
        prev = f"l{i + 1}"
        if i < len(layers) - 1:
            nodes.append(DagNode(f"r{i + 1}", "relu", (prev,)))
            prev = f"r{i + 1}"
    return AffineDAG(nodes)


def residual_block_dag(W1, b1, W2, b2, W3, b3) -> AffineDAG:
    """``out = W3 relu(relu(W2 relu(W1 x + b1) + b2) + x) + b3``: one residual block then a head."""
    return AffineDAG([
        DagNode("x", "input"),
        DagNode("c1", "affine", ("x",), np.asarray(W1, float), np.asarray(b1, float)),
        DagNode("r1", "relu", ("c1",)),
        DagNode("c2", "affine", ("r1",), np.asarray(W2, float), np.asarray(b2, float)),
        DagNode("join", "add", ("c2", "x")),
        DagNode("r2", "relu", ("join",)),
        DagNode("head", "affine", ("r2",), np.asarray(W3, float), np.asarray(b3, float)),
    ])


def residual_counterexample() -> AffineDAG:
    """Scalar ``out = w3 (relu(w1 x) + x)``, all weights 1 (see the module docstring)."""
    one = np.ones((1, 1))
    return AffineDAG([
        DagNode("x", "input"),
        DagNode("c1", "affine", ("x",), one, None),
        DagNode("r1", "relu", ("c1",)),
        DagNode("join", "add", ("r1", "x")),
        DagNode("head", "affine", ("join",), one, None),
    ])


# --------------------------------------------------------------------------- torch graphs


@dataclass(frozen=True)
class NetworkDepth:
    """Longest relevance path of a torch model, by the module's definition.

    Attributes
    ----------
    n : int
        Rule ops on the longest relevance path (the chain depth for Lemma 7/8).
    counts : dict kind -> number of such ops on one longest path
    totals : dict kind -> number of rule ops of that kind in the whole network
    conv_linear_only : int
        Longest path counting only convolutions and linear layers (what a chain
        reading of the architecture would give; not a valid depth, see the module
        docstring).
    """

    n: int
    counts: dict
    totals: dict
    conv_linear_only: int


def torch_network_depth(model, conventions=None) -> NetworkDepth:
    """:class:`NetworkDepth` of a torch model, from the engine's node-kind table.

    The model is canonicalised and classified exactly as the engine does
    (:func:`empirical.engine.kinds.plan_graph`: BatchNorm folded where possible,
    every node's kind, depth weight and relevance inputs), so the depth is that
    of the graph the LRP maps are computed on: convolutions, linear layers,
    residual joins, average pools / means, elementwise affine maps (unfolded
    normalisations, with ``normalisation="affine"``), attention-weighted sums
    count 1, an attention module counts 3 (value projection, ``A @ V``, output
    projection); a gate ``x * s(x)`` sends relevance only to ``x`` and attention
    logits get none.  The model is not modified.
    """
    import torch

    from boundcheck.rules import DEFAULT_CONVENTIONS
    from empirical.engine.graph import canonicalise
    from empirical.engine.kinds import KINDS, plan_graph

    p = next(model.parameters(), None)
    dtype = p.dtype if p is not None and p.is_floating_point() else torch.float32
    gm = canonicalise(model, dtype, None)
    plan = plan_graph(gm, conventions or DEFAULT_CONVENTIONS)
    nodes = plan.nodes
    kind = {n.name: plan.plans[n].kind for n in nodes}
    inputs = {n.name: tuple(a.name for a in plan.plans[n].rel_inputs) for n in nodes}
    out = nodes[-1].name
    level = {v: KINDS[kind[v]].depth for v in inputs}
    D = _weighted_depths(inputs, level, out)
    x = [n.name for n in nodes if n.op == "placeholder"][0]
    n_depth = D[x]
    counts: dict[str, int] = {}
    consumers: dict[str, list[str]] = {u: [] for u in inputs}
    for c, ins in inputs.items():
        for q in ins:
            consumers[q].append(c)
    v = x
    while v != out:
        cands = [c for c in consumers[v] if c in D and D[c] + level[c] == D[v]]
        if not cands:
            break
        v = cands[0]
        if level[v]:
            counts[kind[v]] = counts.get(kind[v], 0) + level[v]
    totals: dict[str, int] = {}
    for u in inputs:
        if u in D and level[u]:
            totals[kind[u]] = totals.get(kind[u], 0) + level[u]
    cl_level = {u: (2 if kind[u] == "attention" else (1 if kind[u] in ("conv", "linear") else 0)) for u in inputs}
    D2 = _weighted_depths(inputs, cl_level, out)
    return NetworkDepth(n=n_depth, counts=counts, totals=totals, conv_linear_only=D2[x])


def _weighted_depths(inputs, level, output) -> dict[str, int]:
    """Longest relevance path to ``output``: ``D(v) = max over consumers c of D(c) + level(c)``.

    Nodes are processed in reverse post-order of a DFS from ``output`` along relevance
    inputs, so every consumer of ``v`` is done before ``v``.
    """
    consumers: dict[str, list[str]] = {v: [] for v in inputs}
    for c, ins in inputs.items():
        for p in ins:
            consumers[p].append(c)
    order: list[str] = []
    seen: set[str] = set()
    stack = [(output, False)]
    while stack:
        v, done = stack.pop()
        if done:
            order.append(v)
            continue
        if v in seen:
            continue
        seen.add(v)
        stack.append((v, True))
        for p in inputs[v]:
            if p not in seen:
                stack.append((p, False))
    D = {output: 0}
    for v in reversed(order):
        if v == output:
            continue
        vals = [D[c] + level[c] for c in consumers[v] if c in D]
        if vals:
            D[v] = max(vals)
    return D
