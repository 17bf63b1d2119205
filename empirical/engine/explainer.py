"""The public API: :class:`Explainer` (gradient methods and LRP rules on one canonical graph).

Every modelling choice is documented in the package docstring
(``empirical/engine/__init__.py``).
"""

from __future__ import annotations

import contextlib
import operator
import re
from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.fx as fx
import torch.nn as nn

from boundcheck.errors import InputError
from boundcheck.rules import DEFAULT_CONVENTIONS, Conventions, lrp_zero, parse_rule
from empirical.engine import fastpath
from empirical.engine.graph import INSERTED, canonicalise
from empirical.engine.kinds import KINDS, LRP_OP_KINDS, UnsupportedModuleError, plan_graph
from empirical.engine.ops import (
    WeightCache,
    add_step,
    lrp_step,
    pos_neg_sums,
    product_split,
    sign_part_outputs,
    symmetric_rule,
)

__all__ = ["Explainer", "Attribution", "LayerRecord", "PAPER_METHODS", "parse_method", "UnsupportedModuleError"]

PAPER_METHODS = ("squared_gradient", "gradient_x_input", "lrp_beta_0", "lrp_beta_1", "lrp_gamma_100", "lrp_gamma_1000")

#: the smallest "auto" combined-weight budget (bytes)
AUTO_CACHE_FLOOR = 1 << 30

_GRADIENT_METHODS = ("gradient", "squared_gradient", "gradient_x_input")
_IG_RE = re.compile(r"^integrated_gradients(?:_(\d+))?$")
#: the transformer methods: ``cp_lrp`` (attention weights held constant, identity rule on
#: activations, LRP-0 or LRP-epsilon on the affine layers) and ``attnlrp`` (AttnLRP: uniform
#: rule on q k^T and A V, softmax rule, identity rule, LRP-0/-epsilon), optional ``_<epsilon>``
_TRANSFORMER_RE = re.compile(r"^(cp_lrp|attnlrp)(?:_([0-9.eE+-]+))?$")
#: the attribution paths of :meth:`Explainer.attribute`
PATHS = ("auto", "explicit", "fast")


def parse_method(name: str):
    """Validate a method name.

    Returns ``("gradient" | "squared_gradient" | "gradient_x_input", None)``,
    ``("integrated_gradients", steps)``, ``("lrp", Rule)`` or ``("attnlrp", Rule)``.

    ``cp_lrp`` / ``cp_lrp_<e>`` is ``("lrp", lrp_zero)`` / ``("lrp", lrp_epsilon(e))``:
    CP-LRP is what every LRP rule of this engine does at attention (weights held
    constant) and at activations (identity rule), so it is that rule under its
    transformer name.  ``attnlrp`` / ``attnlrp_<e>`` is ``("attnlrp", rule)``: the
    same rule on the affine layers, AttnLRP's uniform and softmax rules at
    attention (fast path only).

    Raises
    ------
    InputError
        Naming the method when it is not one of: gradient, squared_gradient,
        gradient_x_input, integrated_gradients[_<steps>], cp_lrp[_<e>],
        attnlrp[_<e>], or a :func:`boundcheck.rules.parse_rule` name.
    """
    if not isinstance(name, str):
        raise InputError(f"method must be a string, got {name!r}")
    if name in _GRADIENT_METHODS:
        return name, None
    m = _TRANSFORMER_RE.match(name)
    if m:
        rule = lrp_zero() if m.group(2) is None else parse_rule(f"lrp_epsilon_{m.group(2)}")
        return ("lrp" if m.group(1) == "cp_lrp" else "attnlrp"), rule
    m = _IG_RE.match(name)
    if m:
        steps = 32 if m.group(1) is None else int(m.group(1))
        if steps < 1:
            raise InputError(f"method {name!r}: integrated gradients needs >= 1 step")
        return "integrated_gradients", steps
    try:
        return "lrp", parse_rule(name)
    except InputError as exc:
        raise InputError(
            f"unknown method {name!r}: expected gradient, squared_gradient, gradient_x_input, "
            f"integrated_gradients[_<steps>], cp_lrp[_<e>], attnlrp[_<e>] or an LRP rule ({exc})"
        ) from None


@dataclass
class LayerRecord:
    """Relevance bookkeeping of one graph node for one LRP method (see the package docstring)."""

    node: str
    kind: str
    depth: int
    relevance_out_pos: torch.Tensor
    relevance_out_neg: torch.Tensor
    relevance_in_pos: torch.Tensor
    relevance_in_neg: torch.Tensor
    pos_sum: torch.Tensor | None = None
    neg_sum: torch.Tensor | None = None


@dataclass
class Attribution:
    """Result of :meth:`Explainer.attribute`."""

    maps: dict
    logits: torch.Tensor
    target: torch.Tensor
    records: dict | None = None


class Explainer:
    """Attribution maps of a classifier by gradients and LRP rules.

    Parameters
    ----------
    model : torch.nn.Module
        Any classifier mapping ``(B, C, H, W)`` to logits ``(B, K)`` built from the
        supported operations (package docstring).  It is copied (new modules and
        parameter objects; the weights that neither the dtype/device conversion nor
        BatchNorm folding changes share ``model``'s storage, so rebuild the
        Explainer after changing them); the copy is canonicalised once (eval mode,
        BatchNorm folded, traced with torch.fx); ``model`` itself is never modified.
    conventions : boundcheck.rules.Conventions
        Zero-denominator, bias and stabiliser policy of every LRP rule.
    dtype : torch.dtype
        float32 (default) or float64.
    device : torch.device or str, optional
        Where the canonical copy lives (default: where ``model`` is).

    Raises
    ------
    UnsupportedModuleError
        (an :class:`InputError`) naming the first module/operation without a
        backward rule, e.g. ``unsupported module 'features.3' of type LSTM``.
    """

    def __init__(self, model, conventions: Conventions = DEFAULT_CONVENTIONS, dtype=torch.float32, device=None,
                 allow_tf32: bool = False, channels_last: bool | None = None, weight_cache_bytes="auto",
                 input_shape=None, low_memory: bool = False):
        """``allow_tf32``: let CUDA convolutions/matmuls use TF32 (10-bit mantissa).
        Off by default: with TF32 the float32 maps on an H100 differed from float64
        by up to 10% (gradients) and more (LRP-gamma near condition-(29) violations)
        on ResNet-50/EfficientNets (``benchmarks/gpu_check.py``).  No effect on CPU.

        ``channels_last``: store the canonical copy's convolution weights and every
        4-d activation and relevance tensor channels-last (NHWC).  ``None`` (default):
        on the CPU only, where oneDNN's convolutions run natively in NHWC and were
        about 10% faster on ResNet-50's layers (``BENCHMARKS.md``); a layout choice,
        the values are the same up to summation order.

        ``weight_cache_bytes``: budget for the weight copies the LRP operators keep
        between calls (:class:`empirical.engine.ops.WeightCache`): each layer's
        ``[W+; W-]`` and the rules' combined weights, admitted in the order they are
        first needed; beyond it ``[W+; W-]`` is built per call in blocks of output
        channels and the rules are transposed with it (same maps, no stored copy).
        ``"auto"`` (default): the byte size of the model's parameters in ``dtype``
        but at least 1 GiB, less the canonical copy's own tensors (those BatchNorm
        folding or the dtype/layout conversion changed; the others share the caller's
        storage), so that on large networks the engine holds at most one weight-sized
        set of copies besides the caller's model, while the paper networks keep all
        of theirs (ResNet-50, six methods, float32: [W+; W-] 0.2 GiB and 0.5 GiB of
        combined weights); ``None``: no limit;
        an int: bytes.

        ``input_shape``: ``(C, H, W)`` of the example the model is traced on
        (default ``(3, 224, 224)``, :mod:`empirical.engine.tracing`).  It matters
        only for a model whose ``forward`` asks Python about shapes (TF "same"
        padding, window partitions, ``len(x)``): such a graph holds for its
        example's shape, and the explainer traces it again, once, for each other
        input shape it is given.  Unsupported operations are refused here, on
        this example.

        ``low_memory``: trade time for memory on the explicit path (LRP-β/γ and every
        rule that is not relevance-linear).  Its forward pass evaluates each affine layer
        as the model does (no sign-split weights) and keeps only its input (a reference
        to a value the pass holds anyway when it is non-negative) instead of its
        sign-part outputs; the backward pass computes them when it reaches the layer
        (the values the default mode stores; the layer outputs of the forward pass equal
        the default's sums of parts to rounding); the rules run one after another,
        each with its own forward pass, so that the backward pass drops the forward values
        as it goes and holds one rule's relevance buffers (per rule: a plain forward pass
        and the sign-part evaluation of every affine layer; the cost is measured in
        ``BENCHMARKS.md``); the ``"auto"`` weight budget drops its 1 GiB floor (the
        parameter bytes ``W`` less the canonical copy's own tensors).  The maps equal
        the default mode's to rounding (float64: 1e-12, tested); the fast path and the
        gradient methods are unchanged."""
        if not isinstance(model, nn.Module):
            raise InputError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        if not isinstance(conventions, Conventions):
            raise InputError("conventions must be a boundcheck.rules.Conventions")
        if dtype not in (torch.float32, torch.float64):
            raise InputError(f"dtype must be torch.float32 or torch.float64, got {dtype}")
        self.conventions = conventions
        self.dtype = dtype
        self.allow_tf32 = bool(allow_tf32)
        if device is None:
            p = next(model.parameters(), None)
            device = p.device if p is not None else torch.device("cpu")
        self.device = torch.device(device)
        if channels_last is None:
            channels_last = self.device.type == "cpu"
        self.channels_last = bool(channels_last)
        if not isinstance(low_memory, bool):
            raise InputError(f"low_memory must be True or False, got {low_memory!r}")
        self.low_memory = low_memory
        auto = weight_cache_bytes == "auto"
        if auto:
            nbytes = sum(p.numel() for p in model.parameters()) * (torch.finfo(dtype).bits // 8)
            weight_cache_bytes = nbytes if low_memory else max(AUTO_CACHE_FLOOR, nbytes)
        elif weight_cache_bytes is not None and (not isinstance(weight_cache_bytes, int) or weight_cache_bytes < 0):
            raise InputError(f"weight_cache_bytes must be 'auto', None or an int >= 0, got {weight_cache_bytes!r}")
        self.weight_cache = WeightCache(weight_cache_bytes)
        self._model = model  # traced again only for a model specialised to its example's shape
        self._graphs = {}
        self._use_graph(self._build_graph(input_shape))
        if auto:  # the canonical copy's own tensors (converted, folded) count against the same budget
            own = _own_bytes(self.gm, model)
            self.weight_cache.limit = max(0, self.weight_cache.limit - own)
        if self.gm.specialised_shape is None:
            self._model = None  # one graph serves every input shape

    # ------------------------------------------------------------------ graph analysis
    def _build_graph(self, input_shape):
        """Canonical copy, traced on an example of ``input_shape`` (C, H, W), and its plan."""
        gm = canonicalise(self._model, self.dtype, self.device, input_shape)
        if self.channels_last:  # 4-d weights and buffers only (a folded constant may have any rank)
            with torch.no_grad():
                for t in list(gm.parameters()) + list(gm.buffers()):
                    if t.dim() == 4:
                        t.data = t.data.contiguous(memory_format=torch.channels_last)
        for mod in gm.modules():
            if hasattr(mod, "inplace"):
                mod.inplace = False
        plan = plan_graph(gm, self.conventions)
        for p in plan.plans.values():
            if p.op is not None and hasattr(p.op, "_cache"):
                p.op.budget = self.weight_cache
        return gm, plan

    def _use_graph(self, graph):
        self.gm, self.plan = graph
        if self.gm.specialised_shape is not None:
            self._graphs[self.gm.specialised_shape] = graph
        self._modules = dict(self.gm.named_modules())
        self._nodes = self.plan.nodes
        self._plans = self.plan.plans
        self._kinds = {n: p.kind for n, p in self._plans.items()}
        self._depth = self.plan.depth
        self._nonneg = self.plan.nonneg  # inputs whose sign check is skipped
        self._index = {n: i for i, n in enumerate(self._nodes)}
        self._release = self._release_plan()
        self._rebuild = self._rebuild_plan()
        self._backward_release = self._backward_release_plan()
        self._fast_missing = fastpath.unsupported_kinds(self.plan)
        self._fast_release = self._fast_release_plan()
        self._fast_zero_at_zero = fastpath.zero_at_zero_nodes(self.plan, self._modules)

    def _graph_for(self, shape):
        """A model whose ``forward`` asked Python about its example's shape is traced
        again (once) for every other input shape (C, H, W)."""
        spec = self.gm.specialised_shape
        if spec is None or tuple(shape) == spec:
            return
        shape = tuple(shape)
        self._use_graph(self._graphs.get(shape) or self._build_graph(shape))

    def _release_plan(self):
        """``{node: [values to drop after it in the LRP forward pass]}`` (liveness).

        The LRP backward pass needs the values of the inputs of the kinds that
        read them (``Kind.keeps_inputs``: residual adds, routing, max pooling),
        the input and the output; every other value (e.g. a convolution's output
        once the activation after it has run) is dropped after its last use,
        which lowers the peak memory of the forward pass by about one activation
        tensor per affine layer.
        """
        index = self._index
        keep = set(self._input_and_output())
        for node in self._nodes:
            if KINDS[self._kinds[node]].keeps_inputs:
                keep.update(node.all_input_nodes)
        plan = {}
        for node in self._nodes:
            if node in keep or self._kinds[node] == "output" or node.op == "get_attr" or not node.users:
                continue
            last = max(index[u] for u in node.users)
            plan.setdefault(self._nodes[last], []).append(node)
        return plan

    def _input_and_output(self):
        """The input node and the nodes the output reads: their values stay to the end."""
        return {self._nodes[0], *self._nodes[-1].all_input_nodes}

    def _rebuild_plan(self):
        """``{node: [convolution/linear outputs kept for the backward pass whose stored value
        is swapped for their sign parts after ``node``]}``.

        A kept convolution's or linear layer's output (a residual add's summand) is, at
        an input without negative entries, ``O_pp + O_np + b``: exactly the sum the
        forward pass computed (:func:`empirical.engine.ops.sign_part_outputs`), from
        parts the backward pass stores anyway.  After its last forward user the value
        itself is dropped (:data:`_FROM_PARTS`) and rebuilt bit for bit when the
        backward pass first reads it: one output-sized tensor less per residual block.
        """
        fixed = self._input_and_output()
        dropped = {n for ns in self._release.values() for n in ns}
        plan = {}
        for node in self._nodes:
            if (self._kinds[node] in ("conv", "linear") and node not in fixed and node not in dropped
                    and node.users):
                plan.setdefault(self._nodes[max(self._index[u] for u in node.users)], []).append(node)
        return plan

    def _backward_release_plan(self):
        """``{node: [values to drop after its LRP backward step]}``.

        A value kept for the backward pass (:meth:`_release_plan`) is read only by the
        backward steps of its users whose kind ``keeps_inputs``; the backward pass
        visits nodes in reverse order, so after the step of the first such user (in
        forward order) nothing reads it again.  The input and the output stay.
        """
        fixed = self._input_and_output()
        plan = {}
        for node in self._nodes:
            if node in fixed:
                continue
            readers = [u for u in node.users if KINDS[self._kinds[u]].keeps_inputs]
            if readers:
                plan.setdefault(min(readers, key=self._index.__getitem__), []).append(node)
        return plan

    def _fast_release_plan(self):
        """``{node: [values to drop after it]}`` for the fast path's forward pass (autograd
        keeps what its backward pass needs)."""
        plan = {}
        for node in self._nodes:
            if self._kinds[node] in ("input", "output") or not node.users:
                continue
            plan.setdefault(self._nodes[max(self._index[u] for u in node.users)], []).append(node)
        return plan

    def fast_path_reason(self, rules=(), record=False):
        """Why LRP ``rules`` would not run on the fast path (``None``: they would)."""
        if self._fast_missing:
            return f"node kinds without a fast-path treatment: {', '.join(self._fast_missing)}"
        if self.conventions.zero_denominator != "zero":
            return f"zero_denominator={self.conventions.zero_denominator!r} (the fast path evaluates 'zero' only)"
        if self.conventions.normalisation == "pass":
            return ("normalisation='pass' (relevance copied through s*z + c reaches inputs equal to 0, "
                    "which a value times a gradient cannot carry)")
        if record:
            return "record=True (per-node records come from the explicit path)"
        slow = [r.name for r in rules if not fastpath.fast_rule(r)]
        if slow:
            return f"rules that are not relevance-linear without a sign split: {', '.join(slow)}"
        return None

    # ------------------------------------------------------------------ public
    @contextlib.contextmanager
    def _precision(self):
        """Apply :attr:`allow_tf32` for the duration of a call and restore the global flags."""
        if self.device.type != "cuda":
            yield
            return
        old = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
        torch.backends.cuda.matmul.allow_tf32 = self.allow_tf32
        torch.backends.cudnn.allow_tf32 = self.allow_tf32
        try:
            yield
        finally:
            torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = old

    def logits(self, x) -> torch.Tensor:
        """Logits ``(B, K)`` of the canonical copy (no gradient)."""
        x = self._input(x)
        with torch.no_grad(), self._precision():
            return self.gm(x)

    def attribute(self, x, methods, target=None, q=None, init="q", reduce="sum", record=False,
                  path="auto") -> Attribution:
        """Attribution maps of several methods for one batch; see :meth:`_attribute`."""
        with self._precision():
            return self._attribute(x, methods, target=target, q=q, init=init, reduce=reduce, record=record,
                                   path=path)

    def _attribute(self, x, methods, target=None, q=None, init="q", reduce="sum", record=False,
                   path="auto") -> Attribution:
        """Attribution maps of several methods for one batch.

        Parameters
        ----------
        x : Tensor (B, C, H, W)
        methods : str or sequence of str
            See :func:`parse_method`; LRP rules share one forward pass and run
            their backward passes batched.
        target : int or Tensor (B,), optional
            Class to explain; default the argmax of the logits.  Ignored when
            ``q`` is given (then ``target`` is ``q.argmax(1)``).
        q : Tensor (B, K), optional
            Output weights, ``q >= 0`` with rows summing to 1 ([P1] eq. (14));
            default one-hot at ``target``.
        init : {"q", "logit"}
            Start vector of every backward pass: ``q`` or ``q * logits``.
        reduce : {"sum", "none"}
            ``"sum"``: channel sum (sum of squares for squared_gradient) ->
            ``(B, H, W)``; ``"none"``: ``(B, C, H, W)``.
        record : bool
            Keep a :class:`LayerRecord` per node for every LRP method.
        path : {"auto", "explicit", "fast"}
            How the LRP rules run.  ``"auto"``: on the fast path
            (:mod:`empirical.engine.fastpath`, one modified gradient pass per
            method) when every requested LRP rule is relevance-linear (LRP-0,
            LRP-epsilon, cp_lrp, attnlrp), ``zero_denominator="zero"``, no
            ``record`` and every node kind has a fast treatment; else on the
            explicit path (sign-part forward, rule steps).  ``"explicit"``/
            ``"fast"`` force one (``"fast"`` raises when it does not apply).
            ``attnlrp`` exists on the fast path only.
        """
        if isinstance(methods, str):
            methods = [methods]
        methods = list(dict.fromkeys(methods))
        if not methods:
            raise InputError("methods must name at least one method")
        parsed = {m: parse_method(m) for m in methods}
        if init not in ("q", "logit"):
            raise InputError(f"init must be 'q' or 'logit', got {init!r}")
        if reduce not in ("sum", "none"):
            raise InputError(f"reduce must be 'sum' or 'none', got {reduce!r}")
        if path not in PATHS:
            raise InputError(f"path must be one of {', '.join(PATHS)}, got {path!r}")
        x = self._input(x)
        lrp = [(m, p[1]) for m, p in parsed.items() if p[0] == "lrp"]
        attn = [(m, p[1]) for m, p in parsed.items() if p[0] == "attnlrp"]
        why = self.fast_path_reason([r for _, r in lrp], record) if lrp else None
        if attn:
            why_attn = "path='explicit' was requested" if path == "explicit" else self.fast_path_reason(
                [r for _, r in attn], record)
            if why_attn is not None:
                raise InputError(f"attnlrp runs on the fast path only, not available here: {why_attn}")
        if path == "fast" and why is not None:
            raise InputError(f"path='fast' is not available: {why}")
        fast = bool(lrp) and why is None and path != "explicit"  # every LRP rule of the call, or none
        fast_maps = None
        logits = None
        if fast or attn:
            methods_fast = [fastpath.FastMethod(m, r, "held") for m, r in lrp] if fast else []
            methods_fast += [fastpath.FastMethod(m, r, "uniform") for m, r in attn]

            def start(lg):
                qq, tt = self._start(lg, target, q)
                return qq, tt, fastpath.start_vector(lg, qq, init)
            res = fastpath.attribute_fast(self, x, methods_fast, start)
            if res is None:
                if attn:
                    raise InputError("attnlrp with init='q' and a logit exactly 0 at q > 0: the start relevance is "
                                     "not a value times a gradient; use init='logit'")
                fast = False
            else:
                fast_maps, logits, _ = res
        maps = {}
        records = None
        grad_methods = [m for m, p in parsed.items() if p[0] in _GRADIENT_METHODS]
        explicit = bool(lrp) and not fast
        def gradient_forward():
            xl = x.detach().clone().requires_grad_(True)
            with torch.enable_grad():
                return xl, self.gm(xl)

        out = xg = None
        if explicit:
            compact = all(symmetric_rule(r) for _, r in lrp)  # one choice for every pass: the same sign parts
            env, store = self._lrp_forward(x, compact=compact)
            if logits is None:
                logits = env[self._output_node()]
        elif grad_methods:
            xg, out = gradient_forward()
            if logits is None:
                logits = out.detach()
        if logits is None:
            logits = self.logits(x)
        q, target = self._start(logits, target, q)
        v = q if init == "q" else q * logits
        if explicit:  # first, and its values dropped before the gradient's pass: the peaks do not add up
            B = x.shape[0]
            # low_memory: the rules one after another, each with its own forward pass, so that its
            # backward pass drops the forward values as it goes and its buffers are one rule's
            groups = [[k] for k in range(len(lrp))] if self.low_memory else [list(range(len(lrp)))]
            records = {} if record else None
            for i, group in enumerate(groups):
                if i > 0:
                    env, store = self._lrp_forward(x, compact=compact)
                rel, recs = self._lrp_backward(env, store, [lrp[k][1] for k in group], v, record)
                for j, k in enumerate(group):
                    maps[lrp[k][0]] = self._reduce(rel[j * B : (j + 1) * B], x, "lrp", reduce)
                    if record:
                        records[lrp[k][0]] = recs[j]
                del rel, recs
            del env, store
        if grad_methods:
            if out is None:
                xg, out = gradient_forward()
            (grad,) = torch.autograd.grad(out, xg, v)
            del out
            for m in grad_methods:
                maps[m] = self._reduce(grad, x, parsed[m][0], reduce)
        for m, p in parsed.items():
            if p[0] == "integrated_gradients":
                ig = self._integrated_gradients(x, v, p[1])
                maps[m] = self._reduce(ig, x, "integrated_gradients", reduce)
        if fast_maps is not None:
            for m, rmap in fast_maps.items():
                maps[m] = self._reduce(rmap, x, "lrp", reduce)
        maps = {m: maps[m] for m in methods}
        return Attribution(maps=maps, logits=logits.detach(), target=target, records=records)

    # ------------------------------------------------------------------ helpers
    def _input(self, x):
        if not torch.is_tensor(x):
            raise InputError(f"x must be a torch.Tensor, got {type(x).__name__}")
        if x.dim() < 2:
            raise InputError(f"x must have a batch axis and a channel axis, got shape {tuple(x.shape)}")
        if not torch.is_floating_point(x):
            raise InputError("x must be a floating-point tensor")
        x = x.detach().to(dtype=self.dtype, device=self.device)
        if self.channels_last and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        if not bool(torch.isfinite(x).all()):
            raise InputError("x must be finite")
        self._graph_for(x.shape[1:])
        return x

    def _output_node(self):
        out = self._nodes[-1]
        arg = out.args[0]
        if not isinstance(arg, fx.Node):
            raise UnsupportedModuleError("the model must return a single logits tensor")
        return arg

    def _start(self, logits, target, q):
        B, K = logits.shape
        if q is not None:
            q = torch.as_tensor(q).to(dtype=logits.dtype, device=logits.device)
            if q.shape != (B, K):
                raise InputError(f"q must have shape ({B}, {K}), got {tuple(q.shape)}")
            if not bool(torch.isfinite(q).all()) or bool((q < 0).any()):
                raise InputError("q must be finite and >= 0")
            if not torch.allclose(q.sum(1), torch.ones(B, dtype=q.dtype, device=q.device), rtol=0, atol=1e-6):
                raise InputError("every row of q must sum to 1 ([P1] eq. (14))")
            return q, q.argmax(1)
        if target is None:
            target = logits.argmax(1)
        else:
            target = torch.as_tensor(target, device=logits.device)
            if target.dim() == 0:
                target = target.expand(B)
            if target.shape != (B,) or target.dtype in (torch.float16, torch.float32, torch.float64):
                raise InputError(f"target must be an int or a (B,) integer tensor, got shape {tuple(target.shape)}")
            target = target.long()
            if bool((target < 0).any()) or bool((target >= K).any()):
                raise InputError(f"target must lie in [0, {K}), got {target.tolist()}")
        q = torch.zeros(B, K, dtype=logits.dtype, device=logits.device)
        q[torch.arange(B, device=logits.device), target] = 1.0
        return q, target

    @staticmethod
    def _reduce(m, x, kind, reduce):
        m = m.detach()
        if kind == "squared_gradient":
            m = m * m
        elif kind == "gradient_x_input":
            m = m * x
        if reduce == "sum" and m.dim() >= 3:
            m = m.sum(1)
        return m.contiguous()

    def _integrated_gradients(self, x, v, steps):
        total = torch.zeros_like(x)
        B = x.shape[0]
        chunk = max(1, 32 // B)
        alphas = [(i + 0.5) / steps for i in range(steps)]
        for s in range(0, steps, chunk):
            a = torch.tensor(alphas[s : s + chunk], dtype=x.dtype, device=x.device)
            xs = (a.view(-1, *([1] * x.dim())) * x.unsqueeze(0)).reshape(-1, *x.shape[1:]).requires_grad_(True)
            with torch.enable_grad():
                out = self.gm(xs)
            (g,) = torch.autograd.grad(out, xs, v.repeat(len(a), 1))
            total += g.reshape(len(a), *x.shape).sum(0)
        return x * total / steps

    # ------------------------------------------------------------------ LRP forward
    def _call(self, node, args, kwargs):
        if node.op == "call_module":
            return self._modules[node.target](*args, **kwargs)
        if node.op == "call_function":
            t = node.target
            t = _NOT_INPLACE.get(t, t)
            if "inplace" in kwargs:
                kwargs = dict(kwargs, inplace=False)
            return t(*args, **kwargs)
        if node.op == "call_method":
            name = node.target
            if name.endswith("_") and not name.endswith("__") and hasattr(args[0], name[:-1]):
                name = name[:-1]  # x.add_(y) -> x.add(y): values the backward pass reads stay intact
            return getattr(args[0], name)(*args[1:], **kwargs)
        raise AssertionError(node.op)

    def _lrp_forward(self, x, compact=False):
        """Values the backward pass reads and the LRP state of every affine node
        (``compact``: see :func:`empirical.engine.ops.sign_part_outputs`)."""
        env, store = {}, {}
        load = lambda n: env[n]  # noqa: E731
        with torch.no_grad():
            for node in self._nodes:
                p = self._plans[node]
                kind = p.kind
                if kind == "input":
                    env[node] = x
                    continue
                if kind == "output":
                    continue
                if node.op == "get_attr":
                    env[node] = _fetch_attr(self.gm, node.target)
                    continue
                args = fx.node.map_arg(node.args, load)
                kwargs = fx.node.map_arg(node.kwargs, load)
                if kind in LRP_OP_KINDS:
                    op = p.op if p.op is not None else p.build(args, kwargs)
                    z = args[p.operand]
                    known = node.args[p.operand] in self._nonneg
                    if self.low_memory:  # the node's own output; the backward pass computes the parts
                        store[node] = _Recompute(op, z, known or bool(torch.amin(z) >= 0), compact)
                        env[node] = self._call(node, args, kwargs)
                    else:
                        O, zp, zn, y = sign_part_outputs(op, z, nonneg=known, compact=compact)
                        if op.bias is not None:
                            b = op.bias.reshape(op.bias_shape)
                            y = y.add_(b) if kind in ("conv", "linear") else y + b  # conv/linear: y is fresh
                        store[node] = (op, O, zp, zn, z.shape)
                        env[node] = y
                elif kind == "attention":
                    y, st = p.op.forward(*args, **kwargs)
                    store[node] = st
                    env[node] = y
                else:
                    env[node] = self._call(node, args, kwargs)
                for done in self._release.get(node, ()):
                    env.pop(done, None)
                for done in self._rebuild.get(node, ()):
                    if _input_nonneg(store[done]):  # the value is the sum of its parts
                        env[done] = _FROM_PARTS
        return env, store

    # ------------------------------------------------------------------ LRP backward
    def _lrp_backward(self, env, store, rules, v, record):
        K = len(rules)
        B = v.shape[0]
        out_node = self._output_node()
        rel = {out_node: v.repeat(K, 1)}
        recs = [[] for _ in range(K)] if record else None
        input_rel = None

        def acc(n, r, index=None):
            if index is not None:
                lst = rel.setdefault(n, [None] * len(env[n]))
                lst[index] = r if lst[index] is None else lst[index] + r
                return
            rel[n] = r if n not in rel else rel[n] + r

        for node in reversed(self._nodes):
            if node not in rel:
                continue
            r = rel.pop(node)
            p = self._plans[node]
            kind = p.kind
            for a in node.all_input_nodes:
                if env.get(a) is _FROM_PARTS:
                    store[a] = _sign_parts(store[a])  # recomputed once (low_memory), kept for a's own step
                    env[a] = _sum_of_parts(store[a])
            if kind == "input":
                input_rel = r if input_rel is None else input_rel + r
                continue
            if kind in ("meta", "const", "weights", "output"):
                continue
            pos_sum = neg_sum = None
            rins = []
            if kind in LRP_OP_KINDS:
                op, O, zp, zn, in_shape = _sign_parts(store.pop(node))  # read once: dropped after this step
                rin = lrp_step(op, O, zp, zn, r, rules, self.conventions, in_shape, bias=op.bias)
                rins.append((p.rel_inputs[0], rin))
                if record:
                    pos_sum, neg_sum = pos_neg_sums(O)
            elif kind == "add":
                ins = list(p.rel_inputs)
                vals = [env[a] if s_ > 0 else -env[a] for a, s_ in zip(ins, p.signs or (1,) * len(ins))]
                outs, O = add_step(vals, r, rules, self.conventions, K, nonneg=[a in self._nonneg for a in ins])
                rins.extend(zip(ins, outs))
                if record:
                    pos_sum, neg_sum = O["pp"], O["pn"]
            elif kind == "attention":
                if isinstance(r, list):  # a module returning (output, weights)
                    r = r[0]
                    if r is None:
                        continue
                rin = p.op.backward(store.pop(node), r, rules, self.conventions)
                rins.append((p.rel_inputs[0], rin))
            elif kind == "product":
                a, b = p.rel_inputs
                if a is b:  # t * t: both halves reach t
                    rins.append((a, r))
                else:
                    fn = lambda u, w, _n=node: self._call(_n, *_swap_in(_n, env, {a: u, b: w}))  # noqa: E731
                    rins.extend(zip((a, b), product_split(fn, env[a], env[b], r, K)))
            elif kind in ("pass", "gate"):
                rins.append((p.rel_inputs[0], r))
            elif kind in ("route", "maxpool"):
                rins.extend(self._route(node, env, r, K))
            else:  # pragma: no cover - plan_graph knows no other kind
                raise AssertionError(kind)
            for n, rr in rins:
                if isinstance(n, tuple):
                    acc(n[0], rr, n[1])
                else:
                    acc(n, rr)
            if record and not isinstance(r, list) and not node.meta.get(INSERTED):
                self._record(recs, node, kind, r, rins, pos_sum, neg_sum, K, B)
            del r, rins
            for done in self._backward_release.get(node, ()):
                env.pop(done, None)
        if input_rel is None:
            input_rel = torch.zeros((K * B,) + tuple(env[self._nodes[0]].shape[1:]), dtype=v.dtype, device=v.device)
        return input_rel, recs

    def _route(self, node, env, r, K):
        """Data movement: relevance moves with autograd's vector-Jacobian product of the op."""
        src = [a for a in node.all_input_nodes if torch.is_tensor(env[a]) and torch.is_floating_point(env[a])]
        if node.op == "call_function" and node.target is operator.getitem and isinstance(env[node.args[0]], (tuple, list)):
            return [((node.args[0], node.args[1]), r)]
        if not src:
            return []
        leaves = {a: env[a].detach().requires_grad_(True) for a in src}
        with torch.enable_grad():
            args = fx.node.map_arg(node.args, lambda n: leaves.get(n, env[n]))
            kwargs = fx.node.map_arg(node.kwargs, lambda n: leaves.get(n, env[n]))
            out = self._call(node, args, kwargs)
        outs = list(out) if isinstance(out, (tuple, list)) else [out]
        rs = r if isinstance(r, list) else [r]
        pairs = [(o, g) for o, g in zip(outs, rs) if g is not None]
        results = {a: [] for a in src}
        for k in range(K):  # rows of each output: K stacked blocks (the op may merge the batch axis)
            grads = torch.autograd.grad(
                [o for o, _ in pairs], [leaves[a] for a in src],
                [g[k * o.shape[0] : (k + 1) * o.shape[0]] for o, g in pairs],
                retain_graph=k < K - 1, allow_unused=True,
            )
            for a, g in zip(src, grads):
                results[a].append(torch.zeros_like(env[a]) if g is None else g)
        return [(a, torch.cat(results[a])) for a in src]

    def _record(self, recs, node, kind, r, rins, pos_sum, neg_sum, K, B):
        def split(t):
            t = t.reshape(K, B, -1)
            return t.clamp(min=0).sum(-1), t.clamp(max=0).sum(-1)

        op_, on_ = split(r)
        ip = torch.zeros_like(op_)
        inn = torch.zeros_like(on_)
        for _, rr in rins:
            a, b = split(rr)
            ip, inn = ip + a, inn + b
        rk = kind
        for k in range(K):
            recs[k].append(
                LayerRecord(
                    node=node.name, kind=rk, depth=self._depth[node],
                    relevance_out_pos=op_[k], relevance_out_neg=on_[k],
                    relevance_in_pos=ip[k], relevance_in_neg=inn[k],
                    pos_sum=pos_sum, neg_sum=neg_sum,
                )
            )


def _own_bytes(gm, model) -> int:
    """Bytes of ``gm``'s parameters and buffers that do not share storage with ``model``'s."""
    theirs = {t.untyped_storage().data_ptr() for t in list(model.parameters()) + list(model.buffers())}
    seen, total = set(), 0
    for t in list(gm.parameters()) + list(gm.buffers()):
        ptr = t.untyped_storage().data_ptr()
        if ptr not in theirs and ptr not in seen:
            seen.add(ptr)
            total += t.untyped_storage().nbytes()
    return total


#: placeholder in the LRP forward pass' values: rebuilt by :func:`_sum_of_parts` when read
_FROM_PARTS = object()


class _Recompute(NamedTuple):
    """An affine layer's LRP state under ``Explainer(low_memory=True)``: its input only;
    :func:`_sign_parts` computes the sign-part outputs from it in the backward pass."""

    op: object
    z: torch.Tensor
    nonneg: bool  # no negative input entry (the forward pass' finding, not checked again)
    compact: bool


def _sign_parts(entry):
    """``(op, O, zp, zn, in_shape)`` of a stored affine step: as stored, or computed from a
    :class:`_Recompute` with the default forward pass' own call (the same values as the
    default mode stores)."""
    if not isinstance(entry, _Recompute):
        return entry
    O, zp, zn, _ = sign_part_outputs(entry.op, entry.z, nonneg=entry.nonneg, compact=entry.compact)
    return entry.op, O, zp, zn, entry.z.shape


def _input_nonneg(entry) -> bool:
    """Whether a stored affine step's input had no negative entry."""
    return entry.nonneg if isinstance(entry, _Recompute) else entry[3] is None


def _sum_of_parts(entry):
    """A convolution's / linear layer's output from its stored sign parts (input >= 0):
    ``(O_pp + O_np) + b``, the forward pass' own arithmetic (:meth:`Explainer._lrp_forward`)."""
    op, O, _, _, _ = entry
    y = O["pp"] + O["np"]  # both exist: convolutions and linear layers have weights of both signs
    if op.bias is not None:
        y.add_(op.bias.reshape(op.bias_shape))
    return y


_NOT_INPLACE = {operator.iadd: operator.add, operator.isub: operator.sub, operator.imul: operator.mul,
                operator.itruediv: operator.truediv}


def _swap_in(node, env, values):
    """``node``'s arguments from ``env``, with the nodes of ``values`` replaced."""
    load = lambda n: values[n] if n in values else env[n]  # noqa: E731
    return fx.node.map_arg(node.args, load), fx.node.map_arg(node.kwargs, load)


def _fetch_attr(mod, target):
    obj = mod
    for part in target.split("."):
        obj = getattr(obj, part)
    return obj
