"""The fast path: relevance-linear LRP rules as ONE modified gradient pass.

For a rule whose backward step is linear in the incoming relevance and needs no
split into positive and negative parts (LRP-0, LRP-epsilon, CP-LRP, AttnLRP),
the relevance at every node is its value times a *modified gradient*,
``R_v = v * g_v``, and each node's LRP step is a modified local derivative
(the identity of :mod:`empirical.oracle`, here built on the engine's canonical
graph and node plan).  So one forward pass with autograd and one backward pass
give the map ``x * g`` at the cost of a gradient pass, as in LXT
(``lxt/efficient/rules.py``).  The explicit path (:mod:`empirical.engine.ops`)
stays the reference: the two agree to rounding (``tests/test_engine_fastpath.py``).

The treatments, one per node kind of :data:`empirical.engine.kinds.KINDS`
(:data:`FAST_KINDS`; a plan with a kind missing here runs on the explicit path)

==========================  ===================================================================
kind                        modified local derivative
==========================  ===================================================================
conv (also transposed),     the node's own (affine) derivative, then the gradient at its output
linear, avgpool, resample,  times ``y / D`` (:class:`_RuleScale`): ``D`` is the rule's
add, diag, attnsum          denominator, ``y`` minus the bias part under
                            ``Conventions(bias="forward_only")`` (``y`` under ``"backward"``),
                            plus ``(stabiliser + epsilon) * sign(D)``, ``sign(0) = +1``; a ratio
                            with ``D == 0`` is 0 (``zero_denominator="zero"``, the only policy
                            of the fast path).  Then ``R_in = z * W^T (g * y/D) = z * W^T (R/D)``,
                            the explicit step.  Factors other than the relevance input (held
                            attention weights, constants) are detached.
diag (LayerNorm/GroupNorm)  ``(z - mean)/std * w + b`` with the statistics detached per
                            ``Conventions.normalisation``: ``"affine"`` mean and std,
                            ``"centre"`` std only (the centring is part of the linear map, as
                            LXT's ``layer_norm_forward``); ``"pass"`` makes them ``pass`` nodes
pass (activations)          secant ``sigma(z)/z`` (0 at ``z = 0``), so ``R_in = R_out``
                            (LXT's ``identity_rule_implicit`` with its ``epsilon`` 0); plain
                            ReLU and identities keep autograd's derivative (equal to the secant)
gate                        secant of the product in ``x``: ``g_x = g_y * g(x)``, the gate held
route, maxpool              autograd (data movement, winner-take-all)
weights                     detached (attention weights held constant: CP-LRP); under
                            ``attnlrp``: softmax with its own gradient (AttnLRP's softmax rule,
                            the gradient x input of the softmax) and the uniform rule on
                            ``q k^T`` (gradient to each factor halved, :class:`_Half`)
attention (MHA, Swin)       value projection, ``A @ V``, output projection as above; under
                            ``attnlrp`` (``nn.MultiheadAttention`` only): query/key
                            projections affine, uniform rule on ``q k^T`` and ``A @ V``
product (two input-         uniform rule: the gradient to each factor halved (the explicit
dependent factors)          engine's convention for such products)
==========================  ===================================================================

The start: the backward pass starts with ``q`` (``init="logit"``: ``R_out = logits * q``)
or ``q / logits`` (``init="q"``: ``R_out = q``); a logit exactly 0 with ``q > 0`` under
``init="q"`` is not expressible as ``value * gradient`` and sends the call to the
explicit path.

References
----------
[P1] Binder et al. (2025), eq. (7), Sec. 3.1.2.  Achtibat et al. (2024), AttnLRP (ICML),
eq. (7) (uniform rule), (9) (identity rule), Prop. 3.1 (softmax).  Ali et al. (2022),
XAI for Transformers: Better Explanations through Conservative Propagation (CP-LRP).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.fx as fx
import torch.nn as nn
import torch.nn.functional as F

from boundcheck.rules import Conventions, Rule
from empirical.engine import kinds as K

__all__ = ["FastMethod", "FAST_KINDS", "fast_rule", "unsupported_kinds", "attribute_fast"]

#: the attention treatments of the fast path: "held" (CP-LRP: attention weights constant)
#: and "uniform" (AttnLRP: uniform rule on q k^T and A V, softmax rule)
ATTENTION_TREATMENTS = ("held", "uniform")


@dataclass(frozen=True)
class FastMethod:
    """One relevance-linear method: the rule at affine nodes and the attention treatment."""

    name: str
    rule: Rule
    attention: str = "held"

    def __post_init__(self):
        if self.attention not in ATTENTION_TREATMENTS:
            raise ValueError(f"attention must be one of {ATTENTION_TREATMENTS}, got {self.attention!r}")


def fast_rule(rule: Rule) -> bool:
    """A rule the fast path evaluates: one term weighing all four sign parts 1 (LRP-0,
    LRP-epsilon), not adaptive."""
    return (rule.adaptive_beta_max is None and len(rule.terms) == 1
            and rule.terms[0].coefficient == 1.0 and tuple(rule.terms[0].parts) == (1.0, 1.0, 1.0, 1.0))


# --------------------------------------------------------------------------- modified derivatives

def _no_zero(t) -> bool:
    """No entry of ``t`` is 0 (NaN counts as non-zero).  ``count_nonzero`` reads ``t`` once
    and was 2-3x faster than ``torch.all`` on the CPU (which builds a boolean copy first)."""
    return int(torch.count_nonzero(t)) == t.numel()


class _RuleScale(torch.autograd.Function):
    """Forward ``y = base + bias`` (``bias`` None: ``y = base``).  Backward: the rule's
    ratio ``R / D`` with ``R = g * y`` (the relevance at the output) and ``D = base``,
    plus ``e * sign(D)`` (``sign(0) = +1``).  ``R / 0`` (and a quotient overflowing to
    +-inf) is 0 (``zero_denominator="zero"``, as :func:`empirical.engine.ops.lrp_step`).
    ``base`` is the affine map without the part of its bias that stays out of the
    denominator, so no ``y - bias`` cancels.  Written with as few passes over the
    tensor as the case allows (they are the fast path's whole cost over a gradient)."""

    @staticmethod
    def forward(ctx, base, bias, e):
        ctx.e = e
        y = base if bias is None else base + bias
        ctx.same = bias is None
        # y / y is 1 wherever y != 0: without a zero (one read of y, no temporary) the
        # backward step passes the gradient on and keeps nothing
        ctx.ones = ctx.same and e == 0.0 and _no_zero(y)
        if not ctx.ones:
            # with a bias: D and the bias, not y (an output-sized tensor less; y = D + bias is
            # recomputed in the backward pass with the forward pass' own arithmetic, bit for bit)
            ctx.save_for_backward(y) if bias is None else ctx.save_for_backward(base, bias)
        return y if bias is not None else base.view_as(base)

    @staticmethod
    def backward(ctx, g):
        e = ctx.e
        if ctx.ones:
            return g, None, None
        if ctx.same:
            (y,) = ctx.saved_tensors
            if e == 0.0:
                return g.masked_fill(y == 0, 0.0), None, None  # y / y: 1, and 0/0 := 0
            a = y.abs()  # y / (y + e sign y) = |y| / (|y| + e)
            r = g * a
            return r.div_(a.add_(e)), None, None
        D, bias = ctx.saved_tensors
        r = torch.add(D, bias).mul_(g)  # R = g * y
        if e == 0.0:
            return r.div_(D).nan_to_num_(nan=0.0, posinf=0.0, neginf=0.0), None, None
        pos = D.new_tensor(e)  # a 0-d tensor of D's dtype: Python scalars would make where() float32
        Dp = torch.where(D >= 0, pos, -pos).add_(D)
        return r.div_(Dp), None, None


class _Secant(torch.autograd.Function):
    """Forward ``out`` (precomputed ``sigma(z)``), backward ``g * out / z`` (0 at ``z = 0``)."""

    @staticmethod
    def forward(ctx, z, out):
        ctx.save_for_backward(z, out)
        ctx.nonzero = _no_zero(z)  # one read; without a zero the slope needs no mask
        return out.view_as(out)

    @staticmethod
    def backward(ctx, g):
        z, out = ctx.saved_tensors
        if ctx.nonzero:
            return (g * out).div_(z), None
        nz = z != 0
        slope = torch.where(nz, out / torch.where(nz, z, torch.ones_like(z)), torch.zeros_like(z))
        return g * slope, None


class _Half(torch.autograd.Function):
    """Forward unchanged, backward ``g / 2``: one factor of a product under the uniform rule
    (LXT's ``divide_gradient``)."""

    @staticmethod
    def forward(ctx, x):
        return x.view_as(x)

    @staticmethod
    def backward(ctx, g):
        return g * 0.5


def _half(t):
    return _Half.apply(t) if torch.is_tensor(t) and t.requires_grad else t


# --------------------------------------------------------------------------- per-node context

class _Run:
    """One fast forward pass: the explainer's plan, the conventions and the method."""

    def __init__(self, explainer, method: FastMethod):
        self.ex = explainer
        self.conv: Conventions = explainer.conventions
        self.method = method
        self.e = self.conv.stabiliser + method.rule.epsilon
        self.forward_only = self.conv.bias == "forward_only"
        self.zero_at_zero = explainer._fast_zero_at_zero

    def scale(self, base, bias=None, node=None):
        """The affine output ``base + bias`` with the rule's ratio on its gradient; the
        bias enters the denominator under ``Conventions(bias="backward")``.

        With the whole output in the denominator and no epsilon the ratio is ``y / y``:
        1, and 0 where ``y == 0`` (0/0 := 0).  When every user of ``node`` already sends
        back a gradient of 0 where its input is 0 (:func:`zero_at_zero_nodes`), that
        mask changes nothing and the output is returned as it is: the step costs
        exactly the gradient's."""
        if not base.requires_grad:
            return base if bias is None else base + bias
        if bias is not None:
            bias = bias.detach()
            if not self.forward_only:
                base, bias = base + bias, None
        if bias is None and self.e == 0.0 and node is not None and node in self.zero_at_zero:
            return base
        return _RuleScale.apply(base, bias, self.e)


def _args(node, env, keep=()):
    """Node arguments from ``env``; tensors of nodes not in ``keep`` detached (when keep is given)."""
    if keep is None:
        return fx.node.map_arg(node.args, lambda n: env[n]), fx.node.map_arg(node.kwargs, lambda n: env[n])
    f = lambda n: env[n] if n in keep else _detach_tree(env[n])  # noqa: E731
    return fx.node.map_arg(node.args, f), fx.node.map_arg(node.kwargs, f)


def _detach_tree(v):
    if torch.is_tensor(v):
        return v.detach()
    if isinstance(v, (tuple, list)):
        return type(v)(_detach_tree(a) for a in v)
    return v


# --------------------------------------------------------------------------- normalisations

def _norm_spec(node, modules):
    """``("layer", dims, w, b, eps)`` / ``("group", groups, w, b, eps)`` for a LayerNorm /
    GroupNorm node (module or functional), else None."""
    if node.op == "call_module":
        m = modules[node.target]
        if isinstance(m, nn.LayerNorm):
            return "layer", len(m.normalized_shape), m.weight, m.bias, m.eps
        if isinstance(m, nn.GroupNorm):
            return "group", m.num_groups, m.weight, m.bias, m.eps
        return None
    if node.op != "call_function" or node.target not in (F.layer_norm, F.group_norm):
        return None
    return "fn", node.target, None, None, None


def _norm_forward(run, node, z, args, kwargs, spec):
    """LayerNorm/GroupNorm as ``(base, bias)``: ``base = (z - mean) * w/std`` with only
    ``1/std`` held constant under "centre" (bias ``b``), ``base = z * w/std`` with mean and
    ``1/std`` held constant under "affine" (bias ``b - mean * w/std``)."""
    kind, a1, w, b, eps = spec
    if kind == "fn":
        a = list(args) + [None] * 5
        if a1 is F.layer_norm:
            shape = a[1] if a[1] is not None else kwargs["normalized_shape"]
            kind, a1 = "layer", (1 if isinstance(shape, int) else len(shape))
        else:
            kind, a1 = "group", a[1] if a[1] is not None else kwargs["num_groups"]
        w = a[2] if a[2] is not None else kwargs.get("weight")
        b = a[3] if a[3] is not None else kwargs.get("bias")
        eps = a[4] if a[4] is not None else kwargs.get("eps", 1e-5)
    shape = z.shape
    if kind == "layer":
        dims = tuple(range(-a1, 0))
        zz = z
    else:
        zz = z.reshape(shape[0], a1, -1)
        dims = (-1,)
    centre = run.conv.normalisation == "centre"
    mu = zz.mean(dim=dims, keepdim=True)
    # "centre": the centred input with its gradient (the centring is part of the linear map),
    # the output's factor and the variance's input at once; "affine": for the variance only
    zc = zz - mu if centre else zz.detach() - mu.detach()
    var = zc.detach().square().mean(dim=dims, keepdim=True)
    rstd = torch.rsqrt(var + eps)
    if kind == "group":
        G, n = a1, math.prod(shape[1:]) // a1
        wshape = (1, shape[1]) + (1,) * (len(shape) - 2)
        rstd = rstd.expand(shape[0], G, n).reshape(shape)
        mu = mu.expand(shape[0], G, n).reshape(shape)
        w = None if w is None else w.reshape(wshape)
        b = None if b is None else b.reshape(wshape)
    s = rstd if w is None else rstd * w
    if centre:  # the centring is part of the linear map; only 1/std held constant
        return zc.reshape(shape) * s, b
    mu = mu.detach()  # mean and 1/std held constant: s*z + c, the mean part of c a bias
    c = -mu * s
    return z * s, (c if b is None else c + b)


# --------------------------------------------------------------------------- node handlers

_RELU = {F.relu, torch.relu, "relu", "relu_"}


def _plain_pass(node, modules) -> bool:
    """Nodes whose autograd derivative already is the secant: plain ReLU and identities."""
    if node.op == "call_module":
        m = modules[node.target]
        return type(m) is nn.ReLU or isinstance(m, K.IDENTITY_MODULES)
    t = node.target
    try:
        return (t in _RELU or t in K.IDENTITY_FUNCTIONS or t in K.IDENTITY_METHODS
                or getattr(t, "__name__", "") == "stochastic_depth")
    except TypeError:
        return False


def _is_relu(node, modules) -> bool:
    if node.op == "call_module":
        return type(modules[node.target]) is nn.ReLU
    try:
        return node.target in _RELU
    except TypeError:
        return False


def zero_at_zero_nodes(plan, modules) -> frozenset:
    """Nodes every user of which sends back a gradient of exactly 0 where the node's
    value is 0, on the fast path: plain ReLUs (autograd's derivative at 0 is 0),
    activations and gates under the secant ``sigma(z)/z`` (0 at ``z = 0`` by
    :class:`_Secant`) whose relevance input is the node, and nodes that pass it no
    relevance.  At such a node the 0/0 := 0 mask of an LRP-0 ratio ``y / y`` is
    already in the gradient (:meth:`_Run.scale`)."""
    ok = set()
    for node, p in plan.plans.items():
        if not node.users:
            continue
        good = True
        for u in node.users:
            up = plan.plans.get(u)
            if up is None:
                good = False
            elif node not in up.rel_inputs and up.kind not in ("weights", "product"):
                continue  # a constant argument of u: detached on the fast path
            elif up.kind == "pass" and _is_relu(u, modules):
                continue
            elif (up.kind in ("pass", "gate") and up.rel_inputs and up.rel_inputs[0] is node
                  and not _plain_pass(u, modules) and list(u.all_input_nodes).count(node) == 1):
                continue
            else:
                good = False
            if not good:
                break
        if good:
            ok.add(node)
    return frozenset(ok)


def _affine(run, node, p, env):
    """conv / linear / avgpool / add / attnsum (held) / diag: the map without its bias
    (``base``), then the bias and the rule's scale (:meth:`_Run.scale`)."""
    ex = run.ex
    if p.kind == "attnsum" and run.method.attention == "uniform":
        return _uniform_product(run, node, env)
    args, kwargs = _args(node, env, keep=set(p.rel_inputs))
    if p.kind in ("diag", "centre"):
        spec = _norm_spec(node, ex._modules)
        if spec is not None:
            return run.scale(*_norm_forward(run, node, env[p.rel_inputs[0]], args, kwargs, spec), node=node)
        op = p.op if p.op is not None else p.build(_detach_tree(args), _detach_tree(kwargs))
        z = args[p.operand]
        return run.scale(z * _diag_scale(op), op.bias, node=node)
    if p.kind in ("conv", "linear"):
        op = p.op
        if op is None and p.build is not None:  # an operator of the call (a transposed convolution's output size)
            op = p.build(_detach_tree(args), _detach_tree(kwargs))
        if not run.forward_only or op is None or op.bias is None:  # the bias inside the denominator: y itself
            return run.scale(ex._call(node, args, kwargs), node=node)
        return run.scale(_without_bias(ex, node, p, op, args, kwargs), op.bias.reshape(op.bias_shape), node=node)
    return run.scale(ex._call(node, args, kwargs), node=node)


def _diag_scale(op):
    s = getattr(op, "_fast_scale", None)
    if s is None:
        s = op.Wp + op.Wn
        op._fast_scale = s
    return s


def _without_bias(ex, node, p, op, args, kwargs):
    """A (transposed) convolution's / linear layer's output without its bias."""
    z = args[p.operand]
    if hasattr(op, "forward_without_bias"):
        return op.forward_without_bias(z)
    if node.op == "call_module":
        mod = ex._modules[node.target]
        if isinstance(mod, (nn.Conv1d, nn.Conv2d, nn.Conv3d)):
            return mod._conv_forward(z, mod.weight, None)
        if isinstance(mod, nn.Linear):
            return F.linear(z, mod.weight)
    # another spelling of the same operator: its weights, kept once
    W = getattr(op, "_fast_weight", None)
    if W is None:
        W = op._fast_weight = op.Wp + op.Wn
    if p.kind == "linear":
        return F.linear(z, W)
    return F.conv2d(z, W, None, op.stride, op.padding, op.dilation, op.groups)


def _uniform_product(run, node, env):
    """AttnLRP's uniform rule: the product's own derivative, each factor's gradient halved."""
    args = fx.node.map_arg(node.args, lambda n: _half(env[n]))
    kwargs = fx.node.map_arg(node.kwargs, lambda n: _half(env[n]))
    return run.ex._call(node, args, kwargs)


def _pass(run, node, p, env):
    ex = run.ex
    if not p.rel_inputs:
        args, kwargs = _args(node, env, keep=())
        return ex._call(node, args, kwargs)
    if _plain_pass(node, ex._modules):
        args, kwargs = _args(node, env, keep=set(p.rel_inputs))
        return ex._call(node, args, kwargs)
    z = env[p.rel_inputs[0]]
    args, kwargs = _args(node, env, keep=())
    with torch.no_grad():
        y = ex._call(node, args, kwargs)
    if not z.requires_grad:
        return y
    return _Secant.apply(z, y)


def _plain(run, node, p, env):
    args, kwargs = _args(node, env, keep=None)
    return run.ex._call(node, args, kwargs)


def _weights(run, node, p, env):
    if run.method.attention == "uniform":
        ins = [a for a in node.all_input_nodes if torch.is_tensor(env[a]) and env[a].requires_grad]
        if len(ins) == 2 and not (_is_softmax(node, run.ex._modules)):
            return _uniform_product(run, node, env)
        return _plain(run, node, p, env)
    args, kwargs = _args(node, env, keep=())
    return run.ex._call(node, args, kwargs)


def _is_softmax(node, modules):
    if node.op == "call_module":
        return isinstance(modules[node.target], nn.Softmax)
    try:
        return node.target in K.SOFTMAX_FUNCTIONS or node.target in K.SOFTMAX_METHODS
    except TypeError:
        return False


def _const(run, node, p, env):
    args, kwargs = _args(node, env, keep=())
    return run.ex._call(node, args, kwargs)


def _attention(run, node, p, env):
    from empirical.engine.mha import MultiheadAttentionHandler
    from empirical.engine.swin import SwinAttentionHandler

    h = p.op
    args, kwargs = _args(node, env, keep=None)
    if isinstance(h, MultiheadAttentionHandler):
        return _mha(run, node, h, *args[:3])
    if isinstance(h, SwinAttentionHandler):
        if run.method.attention == "uniform":
            raise K.UnsupportedModuleError(
                f"unsupported module '{node.target}' for attnlrp: window attention (Swin) has no AttnLRP "
                "treatment here (cosine attention, relative position bias); cp_lrp holds its weights constant")
        return _swin(run, h, args[0])
    raise K.UnsupportedModuleError(f"no fast-path treatment for attention module '{node.target}'")


def _linear(run, z, W, b):
    if b is not None and not run.forward_only:  # the bias inside the denominator: one fused call
        return run.scale(F.linear(z, W, b.detach()), node=None)
    return run.scale(F.linear(z, W), b)


def _mha(run, node, h, query, key, value):
    mod = run.ex._modules[node.target]
    E = h.E
    W = mod.in_proj_weight
    q, k, v = h._bf(query), h._bf(key), h._bf(value)
    vh = h._split(_linear(run, v, W[2 * E :], h.v_op.bias))
    s = 1.0 / math.sqrt(h.d)
    if run.method.attention == "uniform":
        # the 1/sqrt(d) scaling folded into the query projection (one affine map)
        qh = h._split(_linear(run, q, W[:E] * s, None if h.bq is None else h.bq * s))
        kh = h._split(_linear(run, k, W[E : 2 * E], h.bk))
        A = torch.softmax(_half(qh) @ _half(kh).transpose(-2, -1), dim=-1)
        o = _half(A) @ _half(vh)
    else:
        with torch.no_grad():
            if query is key:  # self-attention: queries and keys from one product with W[:2E]
                b = None if mod.in_proj_bias is None else mod.in_proj_bias[: 2 * E]
                qk = F.linear(q.detach(), W[: 2 * E], b)
                qh, kh = h._split(qk[..., :E]), h._split(qk[..., E:])
            else:
                qh = h._split(F.linear(q.detach(), h.Wq, h.bq))
                kh = h._split(F.linear(k.detach(), h.Wk, h.bk))
            A = torch.softmax((qh * s) @ kh.transpose(-2, -1), dim=-1)
        o = run.scale(A @ vh)
    y = _linear(run, h._merge(o), mod.out_proj.weight, h.out_op.bias)
    return h._bf(y), None


def _swin(run, h, x):
    geo = h._geometry(x)
    B = x.shape[0]
    xw = h._partition(x, geo)
    with torch.no_grad():
        A = h._attention(xw.detach(), geo).to(x.dtype)
    C = h.C
    v = _linear(run, xw, h.m.qkv.weight[2 * C :], h.v_op.bias)
    o = run.scale(A @ h._split_heads(v))
    y = _linear(run, h._merge_heads(o), h.m.proj.weight, h.proj_op.bias)
    return h._reverse(y, geo, B)


#: the fast-path treatment of every node kind (module docstring); "product" is a product
#: of two input-dependent tensors under the uniform rule
FAST_KINDS = {
    "input": None, "output": None,
    "const": _const, "meta": _const,
    "conv": _affine, "linear": _affine, "avgpool": _affine, "resample": _affine, "add": _affine, "diag": _affine,
    "attnsum": _affine,
    "centre": _affine,
    "attention": _attention,
    "pass": _pass, "gate": _pass,
    "route": _plain, "maxpool": _plain,
    "weights": _weights,
    "product": lambda run, node, p, env: _uniform_product(run, node, env),
}


def unsupported_kinds(plan) -> list:
    """Kinds of ``plan`` without a fast-path treatment (empty: the fast path applies)."""
    return sorted({p.kind for p in plan.plans.values() if p.kind not in FAST_KINDS})


# --------------------------------------------------------------------------- the pass

def fast_forward(explainer, x, method: FastMethod):
    """``(x_leaf, output)``: the canonical graph evaluated with the method's modified
    local derivatives (autograd on)."""
    run = _Run(explainer, method)
    env = {}
    xl = x.detach().requires_grad_(True)
    out = None
    with torch.enable_grad():
        for node in explainer._nodes:
            p = explainer._plans[node]
            if p.kind == "input":
                env[node] = xl
                continue
            if p.kind == "output":
                out = env[node.args[0]]
                continue
            if node.op == "get_attr":
                env[node] = _fetch(explainer.gm, node.target)
                continue
            env[node] = FAST_KINDS[p.kind](run, node, p, env)
            for done in explainer._fast_release.get(node, ()):
                env.pop(done, None)
    return xl, out


def start_vector(logits, q, init):
    """Gradient at the output so that ``logits * start`` is the start relevance; None when
    ``init="q"`` meets a zero logit with ``q != 0`` (not expressible, explicit path)."""
    if init == "logit":
        return q
    if bool(((logits == 0) & (q != 0)).any()):
        return None
    return torch.where(logits == 0, torch.zeros_like(q), q / torch.where(logits == 0, torch.ones_like(logits), logits))


def attribute_fast(explainer, x, methods, q_fn):
    """Relevance maps (not reduced) of the fast ``methods`` and the logits.

    ``q_fn(logits) -> (q, target, start)``; returns ``(maps, logits, target)`` or
    ``None`` when the start is not expressible (:func:`start_vector`).
    """
    maps = {}
    logits = target = None
    for m in methods:
        xl, out = fast_forward(explainer, x, m)
        if logits is None:
            logits = out.detach()
            q, target, start = q_fn(logits)
            if start is None:
                return None
        (g,) = torch.autograd.grad(out, xl, start)
        maps[m.name] = x * g
    return maps, logits, target


def _fetch(mod, target):
    obj = mod
    for part in target.split("."):
        obj = getattr(obj, part)
    return obj

