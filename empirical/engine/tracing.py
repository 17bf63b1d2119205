"""Concrete-shape tracing: ``torch.fx`` symbolic tracing that answers Python's questions.

Plain :func:`torch.fx.symbolic_trace` fails on a ``forward`` that asks Python
about a tensor (``if H % window:``, ``len(x)``, ``range(x.shape[1])``,
``int(N ** 0.5)``): a proxy has no value.  :class:`ConcreteTracer` runs the
traced operations once more on an example input (batch 1, the model's dtype,
as it goes, in program order) and answers each such question with the
example's value.  Every operation that does not ask stays symbolic, so a
``reshape(B, N, C)`` keeps reading ``B`` from the input at run time (the engine
stacks rules and sign halves along the batch axis).

Only questions about shapes, dtypes and devices are answered: a value that
depends on the input's *values* (``if x.sum() > 0``, ``x.max().item()``) is
never answered (data-dependent control flow stays an error, as in torch.fx).

A graph whose construction consulted a concrete value is *specialised* to the
example's shape (:attr:`ConcreteTracer.specialised`); the explainer then traces
once per input shape (C, H, W) it is given.  A graph that never asked is valid
for every input shape, as before.

Answers that depend on the batch size are the one case this cannot see (the
example has batch 1): no model of torchvision or timm branches on it.

After tracing, :func:`fold_constants` replaces every node that depends on
parameters and buffers only (a weight computed in ``forward``: weight
standardisation, re-parametrised convolutions, a concatenated q/k/v bias, a
relative-position bias gathered from its table) by one constant buffer, so
that the layer using it is recognised as the affine map it is.
"""

from __future__ import annotations

import contextlib
import operator

import torch
import torch.fx as fx
import torch.nn as nn
from torch.fx import _symbolic_trace
from torch.fx.node import map_aggregate

#: ``node.meta`` key: the example's value at the node is a tensor of this shape (batch 1)
SHAPE = "boundcheck_shape"
#: ``node.meta`` key of a cast inside ``forward`` whose floating dtype the engine overrode
#: (:func:`empirical.engine.graph.casts_to_dtype`): the dtype the model asked for
CAST_OVERRIDDEN = "boundcheck_cast_overridden"

_MISSING = object()


class _ConcreteProxy(fx.Proxy):
    """A proxy that gives Python the example's value where Python insists on one."""

    def _concrete(self):
        return self.tracer.concrete(self.node)

    def __getattr__(self, k):
        # device/dtype/rank are fixed for the explainer's copy: Python gets them as values
        # (``torch.autocast(device_type=x.device.type)``, ``if x.dtype == ...``)
        if k in _METADATA and self.tracer.example is not None:
            v = self.tracer.values.get(self.node, _MISSING)
            if torch.is_tensor(v):
                self.tracer.specialised = self.tracer.specialised or k == "ndim"
                return getattr(v, k)
        return super().__getattr__(k)

    def __setitem__(self, key, value):
        # ``t[idx] = v`` on a traced tensor: recorded in program order (side-effectful, never removed)
        self.tracer.create_proxy("call_function", operator.setitem, (self, key, value), {})

    def __len__(self):
        return len(self._concrete())

    def __index__(self):
        return operator.index(self._concrete())

    def __int__(self):
        return int(self._concrete())

    def __float__(self):
        return float(self._concrete())


class ConcreteTracer(fx.Tracer):
    """``fx.Tracer`` that evaluates the traced program on ``example`` alongside.

    Parameters
    ----------
    leaf_types : tuple of module types kept as single nodes.
    example : torch.Tensor or None
        The first ``forward`` argument's example value; ``None`` traces purely
        symbolically (a question about a value then raises, as in torch.fx).
        An example the model cannot evaluate (a wrong input size) switches to
        purely symbolic tracing on the spot; :attr:`example_error` says why.
    """

    def __init__(self, leaf_types=(), example=None):
        super().__init__()
        self.leaf_types = tuple(leaf_types)
        self.example = example
        self.values = {}
        self.specialised = False
        self.example_error = None  # why the example could not be evaluated (then purely symbolic)
        self.tainted = set()  # nodes whose value depends on tensor VALUES (never answered)
        self._placeholders = 0

    # ------------------------------------------------------------------ torch.fx hooks
    def is_leaf_module(self, m, qualname):
        if isinstance(m, self.leaf_types):
            return True
        return super().is_leaf_module(m, qualname)

    def proxy(self, node):
        return _ConcreteProxy(node, self)

    def create_node(self, kind, target, args, kwargs, name=None, type_expr=None):
        node = super().create_node(kind, target, args, kwargs, name, type_expr)
        if self.example is not None and kind != "output":
            try:
                value = self._evaluate(node)
            except Exception as exc:  # noqa: BLE001 - the example does not fit: trace symbolically on
                self.example_error = f"{type(exc).__name__}: {(str(exc).strip().splitlines() or [''])[0]}"
                self.example, self.values = None, {}
                return node
            self.values[node] = value
            if torch.is_tensor(value) or (
                    not _is_shape_query(node) and any(a in self.tainted for a in node.all_input_nodes)):
                self.tainted.add(node)
            if torch.is_tensor(value):
                node.meta[SHAPE] = tuple(value.shape)
        return node

    def _answerable(self, node):
        """The example's value at ``node`` when it depends on shapes/dtypes only, else ``_MISSING``."""
        if self.example is None or node in self.tainted:
            return _MISSING
        return self.values.get(node, _MISSING)

    def to_bool(self, obj):
        v = self._answerable(obj.node)
        if v is _MISSING:
            return super().to_bool(obj)
        self.specialised = True
        return bool(v)

    def iter(self, obj):
        v = self._answerable(obj.node)
        if v is _MISSING:
            return super().iter(obj)
        self.specialised = True
        return iter([obj[i] for i in range(len(v))])

    def keys(self, obj):
        v = self._answerable(obj.node)
        if v is _MISSING:
            return super().keys(obj)
        self.specialised = True
        return list(v.keys())

    # ------------------------------------------------------------------ concrete values
    def concrete(self, node):
        """The example's value at ``node`` (marks the graph as specialised)."""
        v = self._answerable(node)
        if v is _MISSING:
            raise fx.proxy.TraceError(
                f"'{node.name}' is used as a Python value and depends on the input's values (data-dependent "
                "control flow), or there is no example input")
        self.specialised = True
        return v

    def _evaluate(self, node):
        load = lambda n: self.values[n]  # noqa: E731
        if node.op == "placeholder":
            self._placeholders += 1
            if self._placeholders == 1:
                return self.example
            return node.args[0] if node.args else None
        if node.op == "get_attr":
            obj = self.root
            with _unpatched_modules():
                for part in node.target.split("."):
                    obj = getattr(obj, part)
            return obj
        args = map_aggregate(node.args, lambda a: load(a) if isinstance(a, fx.Node) else a)
        kwargs = map_aggregate(node.kwargs, lambda a: load(a) if isinstance(a, fx.Node) else a)
        with torch.no_grad(), _unpatched_modules():
            if node.op == "call_function":
                return node.target(*args, **kwargs)
            if node.op == "call_method":
                return getattr(args[0], node.target)(*args[1:], **kwargs)
            if node.op == "call_module":
                return self.root.get_submodule(node.target)(*args, **kwargs)
        raise AssertionError(node.op)  # pragma: no cover


_METADATA = {"device", "dtype", "is_cuda", "ndim", "layout", "is_quantized", "is_sparse"}
_SHAPE_ATTRS = {"shape", "dtype", "device", "ndim", "is_cuda", "layout", "is_floating_point", "requires_grad"}
_SHAPE_METHODS = {"size", "dim", "numel", "ndimension", "nelement", "is_floating_point", "is_contiguous",
                  "get_device", "element_size"}


def _is_shape_query(node) -> bool:
    """A node that reads a tensor's metadata, not its values."""
    if node.op == "call_method":
        return node.target in _SHAPE_METHODS
    if node.op == "call_function":
        if node.target is getattr:
            return len(node.args) > 1 and node.args[1] in _SHAPE_ATTRS
        return node.target is len
    return False


@contextlib.contextmanager
def _unpatched_modules():
    """While torch.fx traces, ``nn.Module.__call__``/``__getattr__`` record graph
    nodes; the concrete evaluation runs them as they are."""
    patched = nn.Module.__call__, nn.Module.__getattr__
    nn.Module.__call__, nn.Module.__getattr__ = _symbolic_trace._orig_module_call, _symbolic_trace._orig_module_getattr
    try:
        yield
    finally:
        nn.Module.__call__, nn.Module.__getattr__ = patched


def inline_default_arguments(gm: fx.GraphModule) -> None:
    """``forward(x, attn_mask=None, is_causal=False)``: the model is explained as a
    function of its first argument; the others take their default values.

    Raises ValueError naming an extra argument without a default."""
    placeholders = [n for n in gm.graph.nodes if n.op == "placeholder"]
    for node in placeholders[1:]:
        if not node.args:
            raise ValueError(f"forward() argument '{node.target}' has no default value (only the input is given)")
        default = node.args[0]
        for user in list(node.users):
            user.args = map_aggregate(user.args, lambda a, _n=node, _d=default: _d if a is _n else a)
            user.kwargs = map_aggregate(user.kwargs, lambda a, _n=node, _d=default: _d if a is _n else a)
        gm.graph.erase_node(node)
    if len(placeholders) > 1:
        gm.graph.lint()
        gm.recompile()


def input_dependent(graph: fx.Graph) -> set:
    """Nodes reached from a placeholder (everything else is a constant of the input)."""
    dep = set()
    for node in graph.nodes:
        if node.op == "placeholder" or any(a in dep for a in node.all_input_nodes):
            dep.add(node)
    return dep


def value_dependent(graph: fx.Graph) -> set:
    """Nodes whose value depends on the input's VALUES: reached from a placeholder along a
    path that does not pass through a shape query (``x.shape``, ``x.size()``, ``len(x)``).
    ``torch.arange(x.shape[-1]).float()`` is input-dependent (:func:`input_dependent`) but
    not value-dependent: for a given input shape it is a constant."""
    dep = set()
    for node in graph.nodes:
        if node.op == "placeholder" or (not _is_shape_query(node) and any(a in dep for a in node.all_input_nodes)):
            dep.add(node)
    return dep


def _evaluate_constant(gm, node, values):
    if node.op == "get_attr":
        obj = gm
        for part in node.target.split("."):
            obj = getattr(obj, part)
        return obj
    load = lambda a: values[a] if isinstance(a, fx.Node) else a  # noqa: E731 - KeyError: not a constant
    args, kwargs = map_aggregate(node.args, load), map_aggregate(node.kwargs, load)
    with torch.no_grad():
        if node.op == "call_function":
            return node.target(*args, **kwargs)
        if node.op == "call_method":
            return getattr(args[0], node.target)(*args[1:], **kwargs)
        return gm.get_submodule(node.target)(*args, **kwargs)


def fold_constants(gm: fx.GraphModule, values: dict) -> int:
    """Replace each tensor computed from parameters/buffers only, where an
    input-dependent node uses it, by one buffer holding its value.

    ``values``: the concrete values of the trace (:class:`ConcreteTracer`).
    Returns the number of folded nodes.  Random or stateful functions are never
    folded (eval mode has none among the operations that reach here).
    """
    dep = input_dependent(gm.graph)
    values = dict(values)
    for node in gm.graph.nodes:  # constants the example did not evaluate (purely symbolic trace)
        if node in dep or node in values or node.op not in ("get_attr", "call_function", "call_method", "call_module"):
            continue
        try:
            values[node] = _evaluate_constant(gm, node, values)
        except Exception:  # noqa: BLE001 - left in the graph, evaluated at run time as before
            pass
    folded = 0
    for node in list(gm.graph.nodes):
        if node in dep or node.op not in ("call_function", "call_method", "call_module"):
            continue
        if not any(u in dep for u in node.users):
            continue
        value = values.get(node, _MISSING)
        if not torch.is_tensor(value) or not (torch.is_floating_point(value) or value.dtype in (torch.int64, torch.bool, torch.int32)):
            continue
        name = f"_boundcheck_const_{folded}"
        gm.register_buffer(name, value.detach().clone(), persistent=False)
        with gm.graph.inserting_before(node):
            new = gm.graph.get_attr(name)
        new.meta = dict(node.meta)
        node.replace_all_uses_with(new)
        folded += 1
    if folded:
        gm.graph.eliminate_dead_code()
        gm.graph.lint()
        gm.recompile()
    return folded
