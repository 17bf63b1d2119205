"""The node-kind table: how every node of the traced graph is treated, defined once.

:data:`KINDS` maps a kind name to its :class:`Kind` (treatment, depth weight,
whether the backward step reads the node's input values).  :func:`plan_graph`
classifies every node of a canonical :class:`torch.fx.GraphModule` with the
matchers of this module and returns a :class:`GraphPlan`: per node its kind,
the inputs that receive relevance, the affine operator (or the builder of a
per-call operator), its static sign, its module path and a one-line note.  The
explainer (:mod:`empirical.engine.explainer`), the audit's network depth
(:mod:`empirical.audit.depth`) and ``boundcheck check-model`` all read this
plan; nothing else classifies nodes.

Adding an affine layer type costs one matcher entry here and, if no existing
operator fits, one operator class in :mod:`empirical.engine.ops`.

Treatments
----------
``affine``
    a rule op: the LRP rule of the call is applied ([P1] eq. (7), (9), (13));
    counts ``depth`` levels on a relevance path (Lemma 7/8 depth, see
    :mod:`empirical.audit.depth`).
``pass``
    relevance copied unchanged to the relevance input (activations, identity,
    dropout in eval, and with ``normalisation="pass"`` the elementwise affine
    maps).
``gate``
    ``x * g(x)`` with a sigmoid-type gate ``g`` (squeeze-excitation): all
    relevance to ``x``, none through ``g``.
``route``
    data movement: relevance moves with autograd's vector-Jacobian product
    (reshapes, permutations, padding, concatenation, indexing, max pooling).
``attention``
    an attention module (value path affine, the rule; attention weights
    constant), or a product with softmax attention weights held constant
    (affine in the values, weights >= 0).
``none``
    no relevance: input/output, constants, shapes, attention logits and weights.

The analysis is static (no forward pass): a node is *input-dependent* when an
input-dependent node is among its arguments; a product of two input-dependent
tensors is a gate when one factor is a sigmoid-type output, an
attention-weighted sum when one factor is a softmax output, attention logits
when its value only reaches the output through a softmax, and unsupported
otherwise.
"""

from __future__ import annotations

import math
import operator
from dataclasses import dataclass, field
from typing import Callable

import torch
import torch.fx as fx
import torch.nn as nn
import torch.nn.functional as F

from boundcheck.errors import InputError
from boundcheck.rules import Conventions
from empirical.engine.tracing import CAST_OVERRIDDEN, SHAPE


class UnsupportedModuleError(InputError):
    """The model contains a module or operation the engine has no backward rule for."""


def _optional(path, name):
    try:
        mod = __import__(path, fromlist=[name])
        return getattr(mod, name)
    except Exception:  # pragma: no cover - optional dependency
        return None


SqueezeExcitation = _optional("torchvision.ops.misc", "SqueezeExcitation")
StochasticDepth = _optional("torchvision.ops.stochastic_depth", "StochasticDepth")
ShiftedWindowAttention = _optional("torchvision.models.swin_transformer", "ShiftedWindowAttention")
_patch_merging_pad = _optional("torchvision.models.swin_transformer", "_patch_merging_pad")
RMSNorm = getattr(nn, "RMSNorm", None)

#: modules kept as single graph nodes by the tracer (their handler knows their inside)
LEAF_TYPES = tuple(t for t in (SqueezeExcitation, StochasticDepth, ShiftedWindowAttention) if t is not None)


# --------------------------------------------------------------------------- the kind table

@dataclass(frozen=True)
class Kind:
    """How one kind of node is treated.

    Attributes
    ----------
    name : str
    treatment : {"affine", "pass", "gate", "route", "attention", "none", "unsupported"}
    depth : int
        Rule ops the node stands for on a relevance path (Lemma 7/8 depth).
    keeps_inputs : bool
        The LRP backward step reads the values of the node's inputs (liveness).
    description : str
    """

    name: str
    treatment: str
    depth: int
    keeps_inputs: bool
    description: str


KINDS: dict[str, Kind] = {k.name: k for k in (
    Kind("input", "none", 0, False, "network input"),
    Kind("output", "none", 0, False, "network output"),
    Kind("const", "none", 0, False, "constant (parameter, buffer, or computed from them only)"),
    Kind("meta", "none", 0, False, "shape/size arithmetic, assertions"),
    Kind("conv", "affine", 1, False, "1-, 2- or 3-d convolution (BatchNorm folded) or transposed convolution"),
    Kind("linear", "affine", 1, False, "fully connected layer (BatchNorm folded)"),
    Kind("avgpool", "affine", 1, False, "average pooling / mean over axes (weights >= 0)"),
    Kind("resample", "affine", 1, False, "linear resampling (linear/bilinear/trilinear/area: weights >= 0; "
                                          "bicubic: weights of both signs), a separable linear map A X B^T"),
    Kind("add", "affine", 1, True, "sum of two input-dependent tensors (weights 1)"),
    Kind("diag", "affine", 1, False, "elementwise affine map s*z + c (unfolded BatchNorm, LayerNorm with "
                                      "statistics constant, layer scale, constant scaling/offset)"),
    Kind("centre", "affine", 1, False, "LayerNorm/GroupNorm with normalisation='centre': s*(z - mean z) + c, "
                                        "1/sigma held, the centring a dense linear map per row"),
    Kind("attnsum", "attention", 1, False, "product with attention weights held constant (weights >= 0)"),
    Kind("attention", "attention", 3, False, "attention module: value projection, A @ V, output projection"),
    Kind("pass", "pass", 0, False, "relevance unchanged (activation, identity, dropout)"),
    Kind("gate", "gate", 0, False, "x * g(x): all relevance to x, none through the gate g"),
    Kind("route", "route", 0, True, "data movement (vector-Jacobian product)"),
    Kind("maxpool", "route", 0, True, "max pooling (winner-take-all)"),
    Kind("product", "split", 0, True, "product of two input-dependent factors that is neither a gate, nor "
                                      "attention-weighted, nor scaled by a held statistic: each factor receives "
                                      "half of the relevance (AttnLRP's uniform rule)"),
    Kind("weights", "none", 0, False, "attention logits/weights and statistics (constant in the backward pass)"),
    Kind("unsupported", "unsupported", 0, False, "no treatment defined (only in plan_graph(collect=True))"),
)}

#: kinds whose operator goes through :func:`empirical.engine.ops.lrp_step`
LRP_OP_KINDS = frozenset({"conv", "linear", "avgpool", "resample", "diag", "centre", "attnsum"})


def depth_weight(kind: str) -> int:
    """Rule ops a node of ``kind`` stands for on a relevance path."""
    return KINDS[kind].depth


def is_rule_kind(kind: str) -> bool:
    return KINDS[kind].depth > 0


# --------------------------------------------------------------------------- node plans

@dataclass
class NodePlan:
    """The treatment of one node.

    ``op``: a static operator (built once); ``build``: ``(args, kwargs) -> op`` for
    operators that depend on the call (LayerNorm statistics, constant factors,
    attention weights); ``operand``: position in ``node.args`` of the tensor the
    affine operator acts on (the relevance input); ``sign``: ``"nonneg"`` when the
    output is >= 0 for every input, ``"keeps"`` when it is >= 0 whenever its tensor
    inputs are.
    """

    kind: str
    rel_inputs: tuple = ()
    op: object = None
    build: Callable | None = None
    operand: int = 0
    sign: str | None = None
    path: str = ""
    signs: tuple | None = None  # kind "add": the summands' signs (a difference a - b: (1, -1))
    note: str = ""


@dataclass
class GraphPlan:
    """:func:`plan_graph`'s result: per node its :class:`NodePlan`, and the depths."""

    nodes: list
    plans: dict
    depth: dict = field(default_factory=dict)
    nonneg: set = field(default_factory=set)
    unsupported: list = field(default_factory=list)

    def kind(self, node) -> str:
        return self.plans[node].kind


def module_path(node, modules=None) -> str:
    """The module path of a node: its target for a module call, else the innermost
    module of the user's code that issued it (``nn_module_stack``), else ``<root>``."""
    if node.op == "call_module":
        return str(node.target)
    stack = node.meta.get("nn_module_stack") if hasattr(node, "meta") else None
    if stack:
        key = list(stack.keys())[-1]
        val = stack[key]
        path = val[0] if isinstance(val, tuple) else key
        return str(path) or "<root>"
    return "<root>"


def _target_name(node) -> str:
    t = node.target
    return t if isinstance(t, str) else getattr(t, "__name__", str(t))


def _unsupported(node, modules, why) -> UnsupportedModuleError:
    if node.op == "call_module":
        what = f"module '{node.target}' of type {type(modules[node.target]).__name__}"
    else:
        what = f"operation '{_target_name(node)}' in module '{module_path(node)}' (node {node.name})"
    return UnsupportedModuleError(f"unsupported {what}: {why}")


# --------------------------------------------------------------------------- target families

ACTIVATION_MODULES = (
    nn.ReLU, nn.ReLU6, nn.SiLU, nn.GELU, nn.Hardswish, nn.LeakyReLU, nn.ELU, nn.Mish, nn.Tanh, nn.Softplus,
    nn.SELU, nn.CELU, nn.PReLU, nn.Hardtanh,
)
IDENTITY_MODULES = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout, nn.Identity) + tuple(
    t for t in (StochasticDepth,) if t is not None
)
GATE_ACTIVATION_MODULES = (nn.Sigmoid, nn.Hardsigmoid)
ROUTE_MODULES = (nn.Flatten, nn.Unflatten, nn.ZeroPad2d, nn.ConstantPad2d, nn.ZeroPad1d, nn.ConstantPad1d,
                 nn.ZeroPad3d, nn.ConstantPad3d, nn.PixelShuffle, nn.PixelUnshuffle, nn.ChannelShuffle, nn.Unfold)
UPSAMPLE_MODULES = (nn.Upsample,)
CONV_TRANSPOSE_MODULES = (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)
MAXPOOL_MODULES = (nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d, nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d,
                   nn.AdaptiveMaxPool3d)
AVGPOOL_MODULES = (nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d, nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d,
                   nn.AdaptiveAvgPool3d)
NONNEG_MODULES = (nn.ReLU, nn.ReLU6)

ACTIVATION_FUNCTIONS = {
    F.relu, F.relu6, F.silu, F.gelu, F.hardswish, F.leaky_relu, F.elu, F.mish, F.softplus, F.selu, F.celu,
    F.hardtanh, torch.relu, torch.tanh, F.tanh, torch.clamp, torch.clip, torch.clamp_min, torch.clamp_max,
}
IDENTITY_FUNCTIONS = {F.dropout, F.dropout1d, F.dropout2d, F.alpha_dropout}
GATE_ACTIVATION_FUNCTIONS = {torch.sigmoid, F.sigmoid, F.hardsigmoid}
NONNEG_FUNCTIONS = {F.relu, F.relu6, torch.relu}
ROUTE_FUNCTIONS = {
    torch.flatten, torch.reshape, torch.permute, torch.transpose, torch.swapaxes, torch.cat, torch.concat,
    torch.roll, F.pad, operator.getitem, torch.chunk, torch.split, torch.squeeze, torch.unsqueeze, torch.stack,
    torch.narrow, torch.movedim, torch.unbind, torch.flip, torch.tensor_split, torch.hstack, torch.vstack,
    torch.repeat_interleave, torch.tile, torch.gather, torch.index_select, torch.take_along_dim,
    F.pixel_shuffle, F.pixel_unshuffle, torch.channel_shuffle, torch.broadcast_to, torch.t, torch.atleast_2d,
    torch.concatenate, torch.moveaxis, torch.unflatten, torch.diagonal, F.unfold,
} | ({_patch_merging_pad} if _patch_merging_pad is not None else set())
MAXPOOL_FUNCTIONS = {F.max_pool1d, F.max_pool2d, F.max_pool3d, F.adaptive_max_pool1d, F.adaptive_max_pool2d,
                     F.adaptive_max_pool3d, torch.max_pool1d, torch.max_pool2d, torch.max_pool3d}
AVGPOOL_FUNCTIONS = {F.avg_pool1d, F.avg_pool2d, F.avg_pool3d, F.adaptive_avg_pool1d, F.adaptive_avg_pool2d,
                     F.adaptive_avg_pool3d, torch.avg_pool1d}
META_FUNCTIONS = {getattr, len, torch._assert}
SOFTMAX_FUNCTIONS = {F.softmax, torch.softmax}
SDPA_FUNCTIONS = {F.scaled_dot_product_attention}
SUM_FUNCTIONS = {torch.sum}
SUM_METHODS = {"sum"}
#: statistics of a tensor: held constant like LayerNorm's (a norm, and what is computed from norms only)
NORM_FUNCTIONS = {torch.norm, torch.linalg.vector_norm, torch.linalg.norm}
NORM_METHODS = {"norm", "sqrt", "rsqrt"}
#: square roots are taken as statistics too (a hand-written RMSNorm/LayerNorm: ``x * rsqrt(mean(x**2) + eps)``)
NORM_FUNCTIONS |= {torch.sqrt, torch.rsqrt}
NORMALIZE_FUNCTIONS = {F.normalize}
#: ``max``/``amax`` over an axis (VOLO's class-token pooling): like max pooling
MAX_REDUCTIONS = {torch.max, torch.amax, "max", "amax"}
#: ``F.fold``/``nn.Fold``: overlapping patches summed back (weights 1)
FOLD_FUNCTIONS = {F.fold}
INTERPOLATE_FUNCTIONS = {F.interpolate, F.upsample, F.upsample_nearest, F.upsample_bilinear}
#: ``z ** c`` with a constant exponent: an elementwise nonlinearity (StarReLU's ``relu(x) ** 2``)
POW = {torch.pow, operator.pow, "pow", "__pow__"}
ADDCMUL = {torch.addcmul, "addcmul"}
ADDCDIV = {torch.addcdiv, "addcdiv"}
MATMUL_FUNCTIONS = {operator.matmul, torch.matmul, torch.bmm, torch.einsum}

ACTIVATION_METHODS = {"relu", "relu_", "tanh", "gelu", "tanh_", "clamp", "clip", "clamp_min", "clamp_max"}
#: ``clamp(z, lo, hi)`` with constant bounds: a hard-tanh with those bounds (an activation; Gemma4-ViT's
#: clippable linear layers); input-dependent bounds are not an activation (refused)
CLAMP = {torch.clamp, torch.clip, torch.clamp_min, torch.clamp_max, "clamp", "clip", "clamp_min", "clamp_max"}
IDENTITY_METHODS = {"contiguous", "clone", "detach", "to", "float", "double", "type_as"}
GATE_ACTIVATION_METHODS = {"sigmoid", "sigmoid_"}
NONNEG_METHODS = {"relu", "relu_"}
ROUTE_METHODS = {
    "view", "reshape", "flatten", "permute", "transpose", "chunk", "split", "squeeze", "unsqueeze", "roll",
    "narrow", "unflatten", "expand", "expand_as", "swapaxes", "movedim", "view_as", "reshape_as", "unbind",
    "__getitem__", "flip", "repeat", "repeat_interleave", "tile", "gather", "index_select", "tensor_split",
    "moveaxis", "t", "broadcast_to", "diagonal", "unfold",
}
META_METHODS = {"size", "dim", "numel", "__len__"}
#: methods whose second argument is a shape/dtype reference, not a value (``mask.to(x)`` is a
#: constant when ``mask`` is one: it borrows ``x``'s dtype and device only)
SHAPE_REFERENCE_METHODS = {"view_as", "reshape_as", "expand_as", "type_as", "to"}
SOFTMAX_METHODS = {"softmax"}
MATMUL_METHODS = {"matmul", "bmm", "__matmul__"}

ADD = {operator.add, operator.iadd, torch.add, "add", "add_", "__add__", "__radd__"}
SUB = {operator.sub, operator.isub, torch.sub, "sub", "sub_", "__sub__", "__rsub__"}
MUL = {operator.mul, operator.imul, torch.mul, "mul", "mul_", "__mul__", "__rmul__"}
DIV = {operator.truediv, operator.itruediv, torch.div, "div", "div_", "__truediv__"}
NEG = {operator.neg, torch.neg, "neg", "__neg__"}
META_ARITH = {operator.floordiv, operator.mod, operator.eq, operator.ne, operator.lt, operator.le, operator.gt,
              operator.ge, operator.pow, math.sqrt, operator.getitem}

#: outputs >= 0 whenever every tensor input is (data movement, pooling, dropout in eval); for
#: "resample" only the plans with sign "keeps" (the modes with weights >= 0, not bicubic)
SIGN_KEEPING_KINDS = frozenset({"route", "maxpool", "avgpool", "resample"})


def _is(node, family) -> bool:
    t = node.target
    if node.op == "call_method":
        return t in family
    if node.op == "call_function":
        try:
            return t in family
        except TypeError:  # unhashable target
            return False
    return False


# --------------------------------------------------------------------------- classification

class _Planner:
    def __init__(self, gm: fx.GraphModule, conventions: Conventions, collect: bool = False):
        self.collect = collect
        self.errors = []
        self.gm = gm
        self.conv = conventions
        self.modules = dict(gm.named_modules())
        self.nodes = list(gm.graph.nodes)
        self.dep = {}       # input-dependent tensor (or tuple of tensors)
        self.meta = set()   # python values (shapes, sizes)
        self.softmax = set()  # attention weights (softmax outputs, moved/dropped only)
        self.gates = set()  # sigmoid-type outputs (moved only)
        self.stats = set()  # statistics held constant (norms, and what is computed from them only)
        self.mixed = set()  # attention weights mixed by further operations (talking heads): held, any sign
        self.plans = {}

    # ------------------------------------------------------------------ helpers
    def tensor_args(self, node):
        return [a for a in node.all_input_nodes if a not in self.meta]

    def dep_args(self, node):
        """The input-dependent tensors a node computes from (a ``*_as(other)``
        method's ``other`` only lends its shape or dtype)."""
        ins = node.all_input_nodes
        if node.op == "call_method" and node.target in SHAPE_REFERENCE_METHODS and len(node.args) > 1:
            ins = [a for a in ins if a is not node.args[1]]
        return [a for a in ins if self.dep.get(a)]

    def plan(self, node, kind, rel=None, **kw) -> NodePlan:
        if rel is None:
            rel = self.dep_args(node)[:1]
        return NodePlan(kind=kind, rel_inputs=tuple(rel), path=module_path(node), **kw)

    def unsupported(self, node, why):
        return _unsupported(node, self.modules, why)

    def failed(self, node, exc):
        """``collect=True``: record the error, keep the node in the graph (relevance stops)."""
        self.dep[node] = True
        self.errors.append(str(exc))
        self.failures.append((self.index[node], exc))
        self.plans[node] = NodePlan("unsupported", path=module_path(node), note=str(exc))

    # ------------------------------------------------------------------ pass 1: forward
    def run(self) -> GraphPlan:
        """Both passes collect every failure; without ``collect`` the first one in
        graph order is raised (a product resolved in pass 2 can precede a pass-1 failure)."""
        self.index = {n: i for i, n in enumerate(self.nodes)}
        self.failures = []
        collect, self.collect = self.collect, True
        for node in self.nodes:
            try:
                self.plans[node] = self.classify(node)
            except UnsupportedModuleError as exc:
                if node.op in ("placeholder", "output"):
                    raise
                self.failed(node, exc)
        self.resolve_products()
        self.collect = collect
        if self.failures and not collect:
            raise min(self.failures, key=lambda f: f[0])[1]
        plan = GraphPlan(nodes=self.nodes, plans=self.plans, unsupported=self.errors)
        plan.depth = relevance_depths(plan)
        plan.nonneg = self.nonneg_nodes()
        return plan

    def classify(self, node) -> NodePlan:
        if node.op == "placeholder":
            self.dep[node] = True
            return NodePlan("input", path="<input>")
        if node.op == "output":
            out = node.args[0]
            if not isinstance(out, fx.Node) or not self.dep.get(out):
                raise UnsupportedModuleError("the model must return a single logits tensor")
            return NodePlan("output", rel_inputs=(out,), path="<output>")
        if node.op == "get_attr":
            return NodePlan("const", path=str(node.target))
        dep = bool(self.dep_args(node))
        if node.op == "call_function" and node.target in META_FUNCTIONS or (
            node.op == "call_method" and node.target in META_METHODS
        ):
            self.meta.add(node)
            return self.plan(node, "meta", rel=())
        ins = node.all_input_nodes
        if ins and all(a in self.meta for a in ins) and node.op in ("call_function", "call_method") and not (
            node.op == "call_function" and node.target in (torch.cat, torch.stack)
        ) and (node.op == "call_method" or node.target in META_ARITH or node.target in ADD | SUB | MUL | DIV
               or node.target is operator.neg):
            self.meta.add(node)
            return self.plan(node, "meta", rel=())
        if not dep:
            return self.plan(node, "const", rel=())
        self.dep[node] = True
        ins = self.dep_args(node)
        if ins and all(a in self.softmax or a in self.mixed for a in ins) and not self.keeps_weights(node):
            self.mixed.add(node)
            return self.plan(node, "weights", rel=(), note="attention weights mixed after the softmax: held constant")
        if node.op == "call_module":
            return self.classify_module(node)
        return self.classify_call(node)

    def keeps_weights(self, node) -> bool:
        """Data movement, identity and softmax keep attention weights what they are (>= 0)."""
        if node.op == "call_module":
            return isinstance(self.modules[node.target], ROUTE_MODULES + IDENTITY_MODULES + (nn.Softmax,))
        return any(_is(node, f) for f in (ROUTE_FUNCTIONS, ROUTE_METHODS, IDENTITY_FUNCTIONS, IDENTITY_METHODS,
                                          SOFTMAX_FUNCTIONS, SOFTMAX_METHODS))

    def classify_module(self, node) -> NodePlan:
        from empirical.engine import ops

        mod = self.modules[node.target]
        if type(mod) in (nn.Conv1d, nn.Conv2d, nn.Conv3d):
            if mod.padding_mode != "zeros":
                raise self.unsupported(node, f"padding_mode={mod.padding_mode!r} (only zero padding)")
            try:
                op = ops.ConvOp(mod)
            except ValueError as exc:
                raise self.unsupported(node, str(exc)) from None
            return self.plan(node, "conv", op=op, note="convolution, rule applied")
        if type(mod) in CONV_TRANSPOSE_MODULES:
            return self.conv_transpose(node, mod)
        if type(mod) is nn.Linear:
            return self.plan(node, "linear", op=ops.LinearOp(mod.weight, mod.bias), note="linear, rule applied")
        if isinstance(mod, AVGPOOL_MODULES):
            gm = None
            if isinstance(mod, nn.AdaptiveAvgPool2d) and _pair(mod.output_size) == (1, 1):
                gm = ((-2, -1), True)
            return self.plan(node, "avgpool", op=ops.PoolOp(mod, global_mean_dims=gm), sign="keeps",
                             note="average pooling, rule applied")
        if isinstance(mod, (nn.BatchNorm1d, nn.BatchNorm2d)):
            if mod.training or mod.running_mean is None:
                raise self.unsupported(node, "BatchNorm without running statistics")
            return self.elementwise(node, lambda args, kw, m=mod: ops.batchnorm_diag(m, args[0]),
                                    "BatchNorm not foldable into an adjacent layer")
        if isinstance(mod, nn.LayerNorm):
            return self.norm(node, lambda args, kw, m=mod, c=self.centre: ops.layernorm_diag(
                args[0], m.normalized_shape, m.weight, m.bias, m.eps, centre=c), "LayerNorm")
        if isinstance(mod, nn.GroupNorm):
            return self.norm(node, lambda args, kw, m=mod, c=self.centre: ops.groupnorm_diag(
                args[0], m.num_groups, m.weight, m.bias, m.eps, centre=c), "GroupNorm")
        if RMSNorm is not None and isinstance(mod, RMSNorm):
            return self.elementwise(node, lambda args, kw, m=mod: ops.rmsnorm_diag(
                args[0], m.normalized_shape, m.weight, m.eps), "RMSNorm, scale constant")
        if SqueezeExcitation is not None and isinstance(mod, SqueezeExcitation):
            return self.plan(node, "gate", note="squeeze-excitation x*s(x): relevance to x")
        if ShiftedWindowAttention is not None and isinstance(mod, ShiftedWindowAttention):
            from empirical.engine.swin import SwinAttentionHandler

            return self.plan(node, "attention", op=SwinAttentionHandler(mod), note="window attention, value path")
        if isinstance(mod, nn.MultiheadAttention):
            from empirical.engine.mha import MultiheadAttentionHandler

            try:
                handler = MultiheadAttentionHandler(mod, node)
            except ValueError as exc:
                raise self.unsupported(node, str(exc)) from None
            return self.plan(node, "attention", rel=(handler.value_node,), op=handler,
                             note="multi-head attention, value path")
        if isinstance(mod, nn.Fold):
            return self.plan(node, "avgpool", op=ops.PoolOp(mod), sign="keeps",
                             note="fold: overlapping patches summed (weights 1), rule applied")
        if isinstance(mod, UPSAMPLE_MODULES):
            params = dict(size=mod.size, scale_factor=mod.scale_factor, align_corners=mod.align_corners,
                          recompute_scale_factor=mod.recompute_scale_factor, antialias=False)
            return self.interpolation(node, mod.mode, lambda args, kw, _p=params: _p)
        if isinstance(mod, MAXPOOL_MODULES):
            return self.plan(node, "maxpool", sign="keeps", note="max pooling, winner-take-all")
        if isinstance(mod, ROUTE_MODULES):
            self.propagate(node)
            keeps = not isinstance(mod, nn.ConstantPad2d) or mod.value >= 0
            return self.plan(node, "route", sign="keeps" if keeps else None, note="data movement")
        if isinstance(mod, IDENTITY_MODULES):
            self.propagate(node)
            return self.plan(node, "pass", sign="keeps", note="identity in eval mode")
        if isinstance(mod, GATE_ACTIVATION_MODULES):
            self.gates.add(node)
            return self.plan(node, "pass", note="sigmoid-type activation")
        if isinstance(mod, nn.Softmax):
            self.softmax.add(node)
            return self.plan(node, "weights", rel=(), note="softmax: attention weights")
        if isinstance(mod, ACTIVATION_MODULES):
            sign = "nonneg" if type(mod) in NONNEG_MODULES else None
            return self.plan(node, "pass", sign=sign, note="activation, relevance unchanged")
        return self.untreated(node, "no LRP treatment is defined for this module type")

    @property
    def centre(self) -> bool:
        return self.conv.normalisation == "centre"

    def norm(self, node, build, name):
        """A normalisation with input statistics: ``diag`` (mean and sigma held), ``centre``
        (sigma held, the centring part of the map) or ``pass``, by ``Conventions.normalisation``."""
        if self.centre:
            return self.plan(node, "centre", rel=(node.args[0],), build=build, operand=0,
                             note=name + ", 1/sigma constant, centring in the map, rule applied")
        return self.elementwise(node, build, name + ", statistics constant")

    def elementwise(self, node, build, note, operand=0):
        if self.conv.normalisation == "pass":
            dep = [node.args[operand]] if isinstance(node.args[operand], fx.Node) else self.dep_args(node)[:1]
            return self.plan(node, "pass", rel=dep, note=note + " (normalisation='pass': relevance unchanged)")
        return self.plan(node, "diag", rel=(node.args[operand],), build=build, operand=operand,
                         note=note + ", elementwise affine, rule applied")

    def classify_call(self, node) -> NodePlan:
        from empirical.engine import ops

        t = node.target
        held = self.held_statistic(node)
        if held is not None:
            return held
        if _is(node, ADD) or _is(node, SUB):
            return self.add_or_sub(node)
        if _is(node, SDPA_FUNCTIONS):
            return self.sdpa(node)
        if _is(node, SUM_FUNCTIONS) or _is(node, SUM_METHODS):
            return self.reduce_sum(node)
        if _is(node, POW) and len(node.args) == 2 and isinstance(node.args[1], (int, float)) and (
                isinstance(node.args[0], fx.Node) and self.dep.get(node.args[0])):
            return self.plan(node, "pass", rel=(node.args[0],), note="power with a constant exponent: an "
                                                                      "activation, relevance unchanged")
        if _is(node, ADDCMUL) or _is(node, ADDCDIV):
            return self.addc(node)
        if _is(node, NORMALIZE_FUNCTIONS):
            return self.normalize(node)
        if _is(node, FOLD_FUNCTIONS):
            return self.plan(node, "avgpool", build=_call_with(node), sign="keeps",
                             note="fold: overlapping patches summed (weights 1), rule applied")
        if _is(node, INTERPOLATE_FUNCTIONS):
            a = list(node.args) + [None] * 4
            mode = node.kwargs.get("mode", a[3] if a[3] is not None else "nearest")
            if t is F.upsample_bilinear:
                mode = "bilinear"
            elif t is F.upsample_nearest:
                mode = "nearest"
            return self.interpolation(node, mode, _interpolate_params(t))
        if _is(node, MUL) or _is(node, DIV):
            return self.product(node)
        if _is(node, NEG):
            return self.elementwise(node, lambda args, kw: ops.DiagOp(args[0].new_tensor(-1.0)), "negation")
        if _is(node, MATMUL_FUNCTIONS) or _is(node, MATMUL_METHODS):
            return self.product(node)
        if node.op == "call_function" and t is F.layer_norm:
            def build(args, kw):
                a = list(args) + [None] * 5
                shape = a[1] if a[1] is not None else kw["normalized_shape"]
                w = a[2] if a[2] is not None else kw.get("weight")
                b = a[3] if a[3] is not None else kw.get("bias")
                eps = a[4] if a[4] is not None else kw.get("eps", 1e-5)
                return ops.layernorm_diag(args[0], shape, w, b, eps, centre=centre)
            centre = self.centre
            return self.norm(node, build, "layer_norm")
        if node.op == "call_function" and t is F.group_norm:
            def build(args, kw):
                a = list(args) + [None] * 5
                g = a[1] if a[1] is not None else kw["num_groups"]
                return ops.groupnorm_diag(args[0], g, a[2] if a[2] is not None else kw.get("weight"),
                                          a[3] if a[3] is not None else kw.get("bias"),
                                          a[4] if a[4] is not None else kw.get("eps", 1e-5), centre=centre)
            centre = self.centre
            return self.norm(node, build, "group_norm")
        if node.op == "call_function" and t is getattr(F, "rms_norm", None):
            def build(args, kw):
                a = list(args) + [None] * 4
                shape = a[1] if a[1] is not None else kw["normalized_shape"]
                return ops.rmsnorm_diag(args[0], shape, a[2] if a[2] is not None else kw.get("weight"),
                                        a[3] if a[3] is not None else kw.get("eps"))
            return self.elementwise(node, build, "rms_norm, scale constant")
        if _is(node, AVGPOOL_FUNCTIONS):
            gmd = None
            if t is F.adaptive_avg_pool2d and _pair(node.args[1] if len(node.args) > 1 else node.kwargs.get("output_size")) == (1, 1):
                gmd = ((-2, -1), True)
            return self.plan(node, "avgpool", build=_call_with(node, gmd), sign="keeps",
                             note="average pooling, rule applied")
        if (node.op == "call_function" and t is torch.mean) or (node.op == "call_method" and t == "mean"):
            return self.mean(node)
        if _is(node, SOFTMAX_FUNCTIONS) or _is(node, SOFTMAX_METHODS):
            self.softmax.add(node)
            return self.plan(node, "weights", rel=(), note="softmax: attention weights")
        if _is(node, GATE_ACTIVATION_FUNCTIONS) or _is(node, GATE_ACTIVATION_METHODS):
            self.gates.add(node)
            return self.plan(node, "pass", note="sigmoid-type activation")
        if _is(node, CLAMP) and len(self.dep_args(node)) > 1:
            return self.untreated(node, "clamp with input-dependent bounds (not an activation)")
        if _is(node, ACTIVATION_FUNCTIONS) or _is(node, ACTIVATION_METHODS):
            sign = "nonneg" if _is(node, NONNEG_FUNCTIONS) or _is(node, NONNEG_METHODS) else None
            return self.plan(node, "pass", sign=sign, note="activation, relevance unchanged")
        if _is(node, IDENTITY_FUNCTIONS) or _is(node, IDENTITY_METHODS) or getattr(t, "__name__", "") == "stochastic_depth":
            self.propagate(node)
            if CAST_OVERRIDDEN in node.meta:
                return self.plan(node, "pass", sign="keeps", note=f"cast to {node.meta[CAST_OVERRIDDEN]} in forward(): "
                                                                  "computed in the engine's dtype instead")
            return self.plan(node, "pass", sign="keeps", note="identity in eval mode")
        if _is(node, MAX_REDUCTIONS) and (len(node.args) > 1 or "dim" in node.kwargs) and not (
                len(node.args) > 1 and isinstance(node.args[1], fx.Node) and self.dep.get(node.args[1])):
            return self.plan(node, "maxpool", sign="keeps", note="max over an axis, winner-take-all")
        if _is(node, MAXPOOL_FUNCTIONS):
            return self.plan(node, "maxpool", sign="keeps", note="max pooling, winner-take-all")
        if _is(node, ROUTE_FUNCTIONS) or _is(node, ROUTE_METHODS):
            self.propagate(node)
            keeps = True
            if node.op == "call_function" and t is F.pad:
                mode = node.args[2] if len(node.args) > 2 else node.kwargs.get("mode", "constant")
                value = node.args[3] if len(node.args) > 3 else node.kwargs.get("value", None)
                keeps = mode == "constant" and not isinstance(value, fx.Node) and (value or 0) >= 0
            return self.plan(node, "route", rel=self.dep_args(node), sign="keeps" if keeps else None,
                             note="data movement")
        return self.untreated(node, "no LRP treatment is defined for this operation")

    # ------------------------------------------------------------------ operations
    def untreated(self, node, why):
        """An operation without a treatment: an error only if relevance reaches it
        (decided with the products, :meth:`resolve_products`); one that only feeds
        attention logits, statistics or held divisors needs none."""
        return NodePlan("untreated?", path=module_path(node), note=str(self.unsupported(node, why)))

    def held_statistic(self, node):
        """A norm of an input-dependent tensor, or arithmetic on statistics only: a
        statistic held constant in the backward pass (like LayerNorm's)."""
        if _is(node, NORM_FUNCTIONS) or _is(node, NORM_METHODS):
            self.stats.add(node)
            return self.plan(node, "weights", rel=(), note="norm: a statistic held constant")
        ins = self.dep_args(node)
        if ins and all(a in self.stats for a in ins) and not _is(node, SDPA_FUNCTIONS):
            self.stats.add(node)
            return self.plan(node, "weights", rel=(), note="computed from statistics only: held constant")
        return None

    def const_matmul(self, node, operand):
        """``z @ W`` with a constant 2-d ``W``: the linear layer ``F.linear(z, W^T)``."""
        from empirical.engine import ops

        other = node.args[1 - operand] if len(node.args) == 2 else None
        shape = other.meta.get(SHAPE) if isinstance(other, fx.Node) else None
        if operand != 0 or node.target is torch.einsum or shape is None or len(shape) != 2:
            return self.untreated(node, "a matrix product with a constant matrix other than z @ W (2-d W)")

        def build(args, kw):
            return ops.LinearOp(args[1].transpose(0, 1))
        return self.plan(node, "linear", rel=(node.args[0],), build=build, note="z @ W with W constant, rule applied")

    def sdpa(self, node):
        """``F.scaled_dot_product_attention``: ``A @ v`` with ``A`` held constant."""
        from empirical.engine import ops

        names = ("query", "key", "value", "attn_mask", "dropout_p", "is_causal", "scale", "enable_gqa")
        a = dict(zip(names, node.args))
        a.update(node.kwargs)
        if "value" not in dict(zip(names, node.args)):
            raise self.unsupported(node, "scaled_dot_product_attention with the value passed by keyword")
        if not self.dep.get(a["value"]):
            return self.plan(node, "const", rel=())

        def build(args, kw):
            b = dict(zip(names, args))
            b.update(kw)
            q, k, v = b["query"], b["key"], b["value"]
            A = ops.sdpa_weights(q, k, b.get("attn_mask"), bool(b.get("is_causal", False)), b.get("scale"),
                                 bool(b.get("enable_gqa", False)))
            return ops.MatmulConstOp(A, groups=A.shape[-3] // v.shape[-3] if v.dim() >= 3 else 1)
        return self.plan(node, "attnsum", rel=(a["value"],), build=build, operand=2,
                         note="fused attention A @ v, weights held constant")

    def reduce_sum(self, node):
        from empirical.engine import ops

        dims = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim", None)
        keepdim = node.args[2] if len(node.args) > 2 else node.kwargs.get("keepdim", False)
        if dims is None or isinstance(dims, fx.Node) or isinstance(keepdim, fx.Node) or "dtype" in node.kwargs:
            raise self.unsupported(node, "a sum over all axes (it would mix the samples of a batch) or over "
                                         "axes computed at run time")
        dims = (dims,) if isinstance(dims, int) else tuple(dims)
        src = node.args[0] if isinstance(node.args[0], fx.Node) else None
        nd = len(src.meta[SHAPE]) if src is not None and SHAPE in src.meta else None
        if 0 in dims or (nd is not None and any(d % nd == 0 for d in dims)):
            raise self.unsupported(node, "a sum over the batch axis")
        op = ops.PoolOp(lambda z, _d=dims, _k=keepdim: z.sum(dim=_d, keepdim=_k))
        return self.plan(node, "avgpool", op=op, sign="keeps", note="sum over axes (weights 1), rule applied")

    def addc(self, node):
        """``torch.addcmul(c, t1, t2, value=v)`` = ``c + v t1 t2`` (``addcdiv``: ``c + v t1 / t2``)
        with one input-dependent operand: an elementwise affine map."""
        from empirical.engine import ops

        div = _is(node, ADDCDIV)
        args = list(node.args) + [None] * 3
        dep = [i for i, a in enumerate(args[:3]) if isinstance(a, fx.Node) and self.dep.get(a)]
        if len(dep) != 1 or (div and dep[0] == 2):
            raise self.unsupported(node, "addcmul/addcdiv with more than one input-dependent operand "
                                         "or an input-dependent divisor")
        i = dep[0]

        def build(args_, kw, _i=i, _div=div):
            c, t1, t2 = (list(args_) + [None] * 3)[:3]
            v = kw.get("value", 1)
            if _i == 0:
                return ops.DiagOp(c.new_tensor(1.0), v * (t1 / t2 if _div else t1 * t2))
            other = (1.0 / t2) if _div else (t2 if _i == 1 else t1)
            return ops.DiagOp(v * other, c)
        return self.elementwise(node, build, "addcmul/addcdiv with constant factors", operand=i)

    def normalize(self, node):
        """``F.normalize(x, p, dim, eps)`` = ``x / max(||x||_p, eps)`` with the norm held constant."""
        from empirical.engine import ops

        def build(args, kw):
            a = list(args) + [None] * 4
            p = kw.get("p", a[1] if a[1] is not None else 2.0)
            dim = kw.get("dim", a[2] if a[2] is not None else 1)
            eps = kw.get("eps", a[3] if a[3] is not None else 1e-12)
            z = args[0]
            return ops.DiagOp(1.0 / z.norm(p, dim, keepdim=True).clamp_min(eps))
        return self.elementwise(node, build, "normalize, norm held constant")

    def interpolation(self, node, mode, params):
        """Resampling: nearest is data movement; linear, bilinear, trilinear, area (weights
        >= 0) and bicubic (weights of both signs) are the separable linear maps they compute
        (:class:`empirical.engine.ops.ResampleOp`, the rule applied).  ``params(args, kw)``:
        the call's ``size``, ``scale_factor``, ``align_corners``, ``recompute_scale_factor``
        and ``antialias``."""
        from empirical.engine import ops

        if mode in ("nearest", "nearest-exact"):
            self.propagate(node)
            return self.plan(node, "route", sign="keeps", note=f"{mode} resampling: data movement")
        if not isinstance(mode, str) or mode not in ops.RESAMPLE_MODES:
            raise self.unsupported(node, f"resampling mode {mode!r} (not a linear mode of F.interpolate)")
        nonneg = mode in ops.NONNEG_RESAMPLE_MODES
        cache = {}

        def build(args, kw, _mode=mode):
            p = params(args, kw)
            z = args[0]
            key = (tuple(z.shape[2:]), z.dtype, z.device, _mode, repr(sorted(p.items())))
            mats = cache.get(key)
            if mats is None:
                mats = ops.resample_axis_matrices(tuple(z.shape[2:]), mode=_mode, dtype=z.dtype, device=z.device, **p)
                ops.check_resample(ops.ResampleOp(mats), lambda t: F.interpolate(t, mode=_mode, **p), z.shape,
                                   z.dtype, z.device)
                cache[key] = mats
            return ops.ResampleOp(mats)
        sign = "keeps" if nonneg else None
        what = "weights >= 0" if nonneg else "weights of both signs"
        return self.plan(node, "resample", rel=(node.args[0],), build=build, operand=0, sign=sign,
                         note=f"{mode} resampling, a separable linear map ({what}), rule applied")

    def conv_transpose(self, node, mod):
        """``nn.ConvTranspose1d/2d/3d`` (and ``F.conv_transpose*`` with a constant weight,
        lifted to the module): a linear layer, the rule applied (``output_size`` of the
        call: the output padding it implies, per call)."""
        from empirical.engine import ops

        try:
            op = ops.ConvTransposeOp(mod)
        except ValueError as exc:
            raise self.unsupported(node, str(exc)) from None
        if len(node.args) < 2 and node.kwargs.get("output_size") is None:
            return self.plan(node, "conv", rel=(node.args[0],), op=op, note="transposed convolution, rule applied")

        def build(args, kw, _m=mod):
            z = args[0]
            size = args[1] if len(args) > 1 else kw.get("output_size")
            nd = len(_m.kernel_size)
            pad = _m._output_padding(z, size, _m.stride, _m.padding, _m.kernel_size, nd, _m.dilation)
            return ops.ConvTransposeOp(_m, output_padding=pad)
        return self.plan(node, "conv", rel=(node.args[0],), build=build, operand=0,
                         note="transposed convolution (output size of the call), rule applied")

    def propagate(self, node):
        """Attention weights and gates stay what they are through data movement."""
        ins = self.dep_args(node)
        if ins and all(a in self.softmax for a in ins):
            self.softmax.add(node)
        elif ins and all(a in self.softmax or a in self.mixed for a in ins):
            self.mixed.add(node)
        if ins and all(a in self.gates for a in ins):
            self.gates.add(node)

    def mean(self, node) -> NodePlan:
        from empirical.engine import ops

        args = list(node.args[1:])
        kwargs = dict(node.kwargs)
        dims = args[0] if args else kwargs.get("dim", None)
        keepdim = args[1] if len(args) > 1 else kwargs.get("keepdim", False)
        if dims is None or isinstance(dims, fx.Node) or isinstance(keepdim, fx.Node):
            raise self.unsupported(node, "mean over all axes or over axes computed at run time")
        dims = (dims,) if isinstance(dims, int) else tuple(dims)
        op = ops.PoolOp(lambda z, _d=dims, _k=keepdim: z.mean(dim=_d, keepdim=_k), global_mean_dims=(dims, keepdim))
        return self.plan(node, "avgpool", op=op, sign="keeps", note="mean over axes, rule applied")

    def add_or_sub(self, node) -> NodePlan:
        from empirical.engine import ops

        dep = [a for a in node.args[:2] if isinstance(a, fx.Node) and self.dep.get(a)]
        alpha = node.kwargs.get("alpha", 1)
        if len(node.args) > 2 or alpha != 1:
            raise self.unsupported(node, "a sum with a scaling factor (alpha)")
        sub = _is(node, SUB)
        if len(dep) == 2:
            if sub:  # a - b = a + (-1) b: the summand -b (exact for rules weighing pp/nn and pn/np alike)
                return self.plan(node, "add", rel=tuple(dep), signs=(1, -1),
                                 note="difference a - b (summands a and -b), rule applied")
            return self.plan(node, "add", rel=tuple(dep), note="residual sum, rule applied")
        operand = 0 if dep[0] is node.args[0] else 1
        rsub = sub and (operand == 1 or node.target == "__rsub__")

        def build(args, kw, _o=operand, _sub=sub, _rsub=rsub):
            z, c = args[_o], args[1 - _o]
            c = torch.as_tensor(c, dtype=z.dtype, device=z.device)
            if _rsub:
                return ops.DiagOp(z.new_tensor(-1.0), c)
            return ops.DiagOp(z.new_tensor(1.0), -c if _sub else c)
        return self.elementwise(node, build, "constant offset (a bias)", operand=operand)

    def product(self, node) -> NodePlan:
        """Products: by a constant (affine), or of two input-dependent tensors (resolved later)."""
        from empirical.engine import ops

        operands = [a for a in (list(node.args) + list(node.kwargs.values())) if isinstance(a, fx.Node)]
        dep = [a for a in operands if self.dep.get(a)]
        matmul = _is(node, MATMUL_FUNCTIONS) or _is(node, MATMUL_METHODS)
        if len(dep) == 1:
            operand = list(node.args).index(dep[0]) if dep[0] in node.args else None
            if operand is None:
                raise self.unsupported(node, "the input-dependent operand must be positional")
            if matmul:
                return self.const_matmul(node, operand)
            if _is(node, DIV) and operand != 0:
                raise self.unsupported(node, "division by an input-dependent tensor")
            div = _is(node, DIV)

            def build(args, kw, _o=operand, _div=div):
                z, c = args[_o], args[1 - _o]
                c = torch.as_tensor(c, dtype=z.dtype, device=z.device)
                return ops.DiagOp(1.0 / c if _div else c)
            return self.elementwise(node, build, "scaling by a constant", operand=operand)
        if len(dep) != 2:
            raise self.unsupported(node, "a product of more than two input-dependent tensors")
        # two input-dependent factors: decided once the softmax/gate sets are known
        return NodePlan("product?", rel_inputs=tuple(dep), path=module_path(node))

    # ------------------------------------------------------------------ pass 2: products
    def resolve_products(self):
        from empirical.engine import ops

        pending = [n for n in self.nodes if self.plans[n].kind == "product?"]
        for node in pending:
            a, b = self.plans[node].rel_inputs
            matmul = _is(node, MATMUL_FUNCTIONS) or _is(node, MATMUL_METHODS)
            held = [x for x in (a, b) if x in self.softmax or x in self.mixed]
            gate = [x for x in (a, b) if x in self.gates]
            if len(held) == 1 and held[0] in self.mixed and matmul:
                other = b if held[0] is a else a
                if _is(node, {"einsum"}) or node.target is torch.einsum or other is not node.args[1]:
                    self.plans[node] = NodePlan("weights?", rel_inputs=(a, b), path=module_path(node))
                    continue

                def build(args, kw):
                    return ops.HeldMatmulOp(args[0])
                self.plans[node] = NodePlan("attnsum", rel_inputs=(other,), build=build, operand=1,
                                            path=module_path(node),
                                            note="sum weighted by mixed attention weights (any sign) held constant")
                continue
            if len(held) == 1:
                other = b if held[0] is a else a
                operand = list(node.args).index(other)
                if matmul:
                    def build(args, kw, _o=operand, _t=node.target, _m=node.op):
                        rest = list(args)
                        h = 1 - _o if _t is not torch.einsum else (2 if _o == 1 else 1)

                        def fn(z):
                            a = list(rest)
                            a[_o] = z
                            a[h] = _rows_like(rest[h], z)
                            return _apply(_t, _m, a, kw)
                        return ops.PoolOp(fn)
                else:
                    def build(args, kw, _o=operand):
                        return ops.DiagOp(args[1 - _o])
                self.plans[node] = NodePlan("attnsum", rel_inputs=(other,), build=build, operand=operand,
                                            path=module_path(node), note="attention-weighted sum, weights constant")
                continue
            if len(gate) == 1 and not matmul and (_is(node, MUL)):
                other = b if gate[0] is a else a
                self.plans[node] = NodePlan("gate", rel_inputs=(other,), path=module_path(node),
                                            note="gate x*g(x): relevance to x")
                continue
            stat = [x for x in (a, b) if x in self.stats]
            if _is(node, DIV) and not stat and node.args[1] in (a, b) and node.args[0] in (a, b):
                stat = [node.args[1]]  # a / b: the divisor held constant, a normalisation (linear attention)
            if len(stat) == 1 and not matmul and (_is(node, MUL) or (_is(node, DIV) and stat[0] is node.args[1])):
                other = b if stat[0] is a else a
                operand = list(node.args).index(other)
                div = _is(node, DIV)

                def build(args, kw, _o=operand, _div=div):
                    return ops.DiagOp(1.0 / args[1 - _o] if _div else args[1 - _o])
                if self.conv.normalisation == "pass":
                    self.plans[node] = NodePlan("pass", rel_inputs=(other,), path=module_path(node),
                                                note="scaled by a statistic (normalisation='pass': relevance unchanged)")
                else:
                    self.plans[node] = NodePlan("diag", rel_inputs=(other,), build=build, operand=operand,
                                                path=module_path(node),
                                                note="scaled by a statistic held constant, rule applied")
                continue
            self.plans[node] = NodePlan("weights?", rel_inputs=(a, b), path=module_path(node))
        # A product of two input-dependent factors without a held one: attention logits
        # when no relevance reaches it, else AttnLRP's uniform rule (half to each factor);
        # a factor of a split product can make further products relevant (fixpoint).
        while True:
            relevant = self.relevant_nodes()
            split = [n for n in pending if self.plans[n].kind == "weights?" and n in relevant]
            if not split:
                break
            for node in split:
                if _is(node, MUL) or _is(node, MATMUL_FUNCTIONS) or _is(node, MATMUL_METHODS):
                    self.plans[node].kind = "product"
                    self.plans[node].note = "product of two input-dependent factors: half the relevance to each"
                    continue
                exc = self.unsupported(node, "a quotient of two input-dependent tensors (neither is a statistic "
                                             "held constant)")
                if not self.collect:
                    raise exc
                self.failed(node, exc)
        for node in pending:
            if self.plans[node].kind == "weights?":
                self.plans[node] = NodePlan("weights", path=module_path(node), note="attention logits")
        for node in self.nodes:
            p = self.plans[node]
            if p.kind == "untreated?":
                if node in relevant:
                    self.failed(node, UnsupportedModuleError(p.note))
                else:
                    self.plans[node] = NodePlan("weights", path=p.path,
                                                note="no relevance reaches it, so it needs no treatment")
        for node in self.nodes:
            if self.plans[node].kind == "weights" and node in relevant:
                exc = self.unsupported(node, "attention weights (a softmax) or a statistic (a norm, a square root) "
                                             "used as a value, not as a factor held constant")
                if not self.collect:
                    raise exc
                self.failed(node, exc)
        for node in self.nodes:  # nodes that only feed attention logits carry no relevance either
            if node not in relevant and self.plans[node].kind not in ("input", "output", "const", "meta", "weights"):
                self.plans[node].note = (self.plans[node].note + "; no relevance reaches it").lstrip("; ")

    def relevant_nodes(self) -> set:
        out = set()
        for node in reversed(self.nodes):
            p = self.plans[node]
            if node.op == "output" or node in out:
                out.add(node)
                if p.kind in ("weights?", "weights", "untreated?"):
                    continue
                out.update(p.rel_inputs)
        return out

    def nonneg_nodes(self) -> set:
        out = set()
        for node in self.nodes:
            p = self.plans[node]
            if p.sign == "nonneg":
                out.add(node)
            elif p.sign == "keeps" and p.kind in ("pass", *SIGN_KEEPING_KINDS):
                ins = [a for a in node.all_input_nodes if a not in self.meta]
                if ins and all(a in out for a in ins):
                    out.add(node)
        return out


_INTERPOLATE_ARGS = ("input", "size", "scale_factor", "mode", "align_corners", "recompute_scale_factor",
                     "antialias")


def _interpolate_params(target):
    """``(args, kw) -> {size, scale_factor, align_corners, recompute_scale_factor, antialias}``
    of an ``F.interpolate`` / ``F.upsample`` / ``F.upsample_bilinear`` call
    (``upsample_bilinear`` is ``interpolate(..., mode="bilinear", align_corners=True)``)."""
    def params(args, kw):
        a = dict(zip(_INTERPOLATE_ARGS, args))
        a.update(kw)
        p = {k: a.get(k) for k in ("size", "scale_factor", "align_corners", "recompute_scale_factor")}
        p["antialias"] = bool(a.get("antialias") or False)
        if target is F.upsample_bilinear:
            p["align_corners"] = True
        return {k: (tuple(v) if isinstance(v, list) else v) for k, v in p.items()}
    return params


def _call_with(node, global_mean_dims=None):
    """Builder of a linear operator ``z -> target(z, *rest)`` with the call's own
    run-time arguments (sizes may come from the input's shape)."""
    from empirical.engine import ops

    def build(args, kw):
        rest = tuple(args[1:])
        return ops.PoolOp(lambda z: _apply(node.target, node.op, (z,) + rest, kw), global_mean_dims=global_mean_dims)
    return build


def _rows_like(held, z):
    """A held factor with one row per sample, repeated for stacked rules/sign halves of ``z``."""
    if held.dim() == z.dim() and held.shape[0] not in (1, z.shape[0]) and z.shape[0] % held.shape[0] == 0:
        return held.repeat(z.shape[0] // held.shape[0], *([1] * (held.dim() - 1)))
    return held


def _apply(target, op, args, kwargs):
    if op == "call_method":
        return getattr(args[0], target)(*args[1:], **kwargs)
    return target(*args, **kwargs)


def _pair(v):
    return (v, v) if isinstance(v, int) or v is None else tuple(v)


def relevance_depths(plan: GraphPlan) -> dict:
    """``D(v)``: rule ops strictly after ``v`` on the longest relevance path to the output
    (:mod:`empirical.audit.depth`); nodes no relevance reaches get 0."""
    D = {}
    for node in reversed(plan.nodes):
        D.setdefault(node, 0)
        p = plan.plans[node]
        w = KINDS[p.kind].depth if p.kind in KINDS else 0
        for a in p.rel_inputs:
            D[a] = max(D.get(a, 0), D[node] + w)
    return D


def plan_graph(gm: fx.GraphModule, conventions: Conventions, collect: bool = False) -> GraphPlan:
    """Classify every node of a canonical graph (see the module docstring).

    ``collect=True`` (``boundcheck check-model``): nodes without a treatment get
    the kind ``"unsupported"`` and their one-line errors are listed in
    ``GraphPlan.unsupported`` instead of raising.

    Raises
    ------
    UnsupportedModuleError
        Naming the module path and the blocker of the first node without a treatment.
    """
    return _Planner(gm, conventions, collect).run()
