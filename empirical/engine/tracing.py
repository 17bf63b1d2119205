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

Three more places where plain torch.fx records a program other than the one
eager mode runs are corrected while tracing:

* every ``forward`` argument after the first that has a default is given to
  Python as that default (``if mask is not None:`` sees ``None``;
  :meth:`ConcreteTracer.create_args_for_root`);
* ``torch.ones(B, H * W)``, ``torch.arange(H // p)``, ``grid.expand(B, -1)``
  with a proxy among the sizes are recorded as nodes (torch's argument parser
  raises a TypeError on them; :data:`_SIZE_FUNCTIONS`, :data:`_SIZE_METHODS`);
* in-place updates ``x.add_(y)``, ``x += y`` of a tensor are recorded out of
  place and the proxy stands for the result (:meth:`_ConcreteProxy._in_place`).

After tracing, :func:`fold_constants` replaces every node that depends on
parameters and buffers only (a weight computed in ``forward``: weight
standardisation, re-parametrised convolutions, a concatenated q/k/v bias, a
relative-position bias gathered from its table) by one constant buffer, so
that the layer using it is recognised as the affine map it is.
"""

from __future__ import annotations

import contextlib
import functools
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
        if _out_of_place(k) is not None:
            return functools.partial(self._in_place, k)
        # device/dtype/rank are fixed for the explainer's copy: Python gets them as values
        # (``torch.autocast(device_type=x.device.type)``, ``if x.dtype == ...``)
        if k in _METADATA and self.tracer.example is not None:
            v = self.tracer.values.get(self.node, _MISSING)
            if torch.is_tensor(v):
                self.tracer.specialised = self.tracer.specialised or k == "ndim"
                return getattr(v, k)
        return super().__getattr__(k)

    def _rebind(self, node):
        self.tracer._acquire(node)
        old, self.node = self.node, node
        self.tracer._release(old)

    def __del__(self):
        # the last proxy of a node is gone: no later operation can read its example value
        try:
            self.tracer._release(self.node)
        except Exception:  # noqa: BLE001 - interpreter shutdown
            pass

    def _in_place(self, name, *args, **kwargs):
        """``x.add_(y)`` is recorded as ``x.add(y)``, and this proxy then stands for the result.

        torch.fx records ``x.add_(y)`` as a node nobody uses (removed as dead code,
        and the later uses of ``x`` read the node before the addition): timm's
        NaFlexViT adds its position embedding by ``x.add_(pos_embed)``.  Every later
        use of the Python object ``x`` now reads the sum, as in eager mode.  A
        mutation seen through another alias (a view of ``x``, a caller's variable
        bound to another proxy of the same tensor) is not followed; the graph is
        checked against the model's eager output on the example when this happened
        (:attr:`ConcreteTracer.in_place`, :func:`empirical.engine.graph.canonicalise`).
        """
        result = self.tracer.create_proxy("call_method", _out_of_place(name), (self,) + args, kwargs)
        self.tracer.in_place.append(self.node.name)
        self._rebind(result.node)
        return self

    def _in_place_operator(self, op, other):
        """``x += y`` on a tensor: ``x`` is mutated in eager mode (seen by the caller that
        passed ``x``), so the proxy object stands for the result, as in :meth:`_in_place`.
        On a Python number (a proxy of a shape) ``+=`` rebinds the name only, as before."""
        result = self.tracer.create_proxy("call_function", op, (self, other), {})
        if torch.is_tensor(self.tracer.values.get(self.node)):
            self.tracer.in_place.append(self.node.name)
            self._rebind(result.node)
            return self
        return result

    def __iadd__(self, other):
        return self._in_place_operator(operator.add, other)

    def __isub__(self, other):
        return self._in_place_operator(operator.sub, other)

    def __imul__(self, other):
        return self._in_place_operator(operator.mul, other)

    def __itruediv__(self, other):
        return self._in_place_operator(operator.truediv, other)

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
        self.in_place = []  # nodes whose in-place updates were recorded out of place (ConcreteProxy._in_place)
        self._placeholders = 0
        self._live = {}  # node -> number of live proxies standing for it (see _release)
        self._unused = []

    # ------------------------------------------------------------------ torch.fx hooks
    def is_leaf_module(self, m, qualname):
        if isinstance(m, self.leaf_types):
            return True
        return super().is_leaf_module(m, qualname)

    def proxy(self, node):
        self._acquire(node)
        return _ConcreteProxy(node, self)

    def _acquire(self, node):
        self._live[node] = self._live.get(node, 0) + 1

    def _release(self, node):
        """Drop the example's tensor at ``node`` once no proxy stands for it (an
        operation recorded later can only read nodes through their proxies), so
        the example's activations are not all held at once (Gemma4-ViT at
        768x768: 9.2 GiB in float32 when every one was kept).  Kept: values
        that are not tensors (shapes), attributes, and the nodes torch.fx reads
        without a proxy of ours (``getattr``)."""
        n = self._live.get(node, 0) - 1
        if n > 0:
            self._live[node] = n
            return
        self._live.pop(node, None)
        if node.op == "call_function" and node.target is getattr or node.op in ("get_attr", "placeholder"):
            return
        self._unused.append(node)  # dropped when the next node is recorded (the output's value stays)

    def _drop_unused(self):
        for node in self._unused:
            if node not in self._live and torch.is_tensor(self.values.get(node)):
                del self.values[node]
        self._unused.clear()

    def trace(self, root, concrete_args=None):
        """Trace ``root``; attributes its modules assign while being traced (caches such
        as ConViT's ``rel_indices`` or LeViT's attention-bias cache, which would then
        hold proxies) are undone afterwards, so the model runs eagerly as before."""
        saved = _module_attributes(root) if isinstance(root, nn.Module) else []
        graph = None
        try:
            with _sizes_from_proxies():
                graph = super().trace(root, concrete_args)
            return graph
        finally:
            _restore_module_attributes(saved, root, graph)

    def create_args_for_root(self, root_fn, is_module, concrete_args=None):
        """The first ``forward`` argument is the traced input; every later argument
        with a default is given to Python *as that default*.

        The engine explains a model as a function of its first argument, the
        others taking their defaults (:func:`inline_default_arguments`).  Plain
        torch.fx passes a proxy for ``mask=None`` too, so ``if mask is not None:``
        takes the masked branch on a value that is really ``None`` (timm's Hiera,
        NaFlexViT and Gemma4-ViT: ``mask.view(...)``, ``patch_coord.flip(...)``).
        The placeholder nodes stay in the graph, unused, until
        :func:`inline_default_arguments` removes them.
        """
        root_fn, args = super().create_args_for_root(root_fn, is_module, concrete_args)
        first = 1 if is_module else 0
        for i in range(first + 1, len(args)):
            a = args[i]
            if isinstance(a, fx.Proxy) and a.node.op == "placeholder" and a.node.args and not (
                    concrete_args and a.node.target in concrete_args):
                args[i] = a.node.args[0]
        return root_fn, args

    def create_node(self, kind, target, args, kwargs, name=None, type_expr=None):
        if kind != "output":
            self._drop_unused()
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


def _out_of_place(name: str):
    """``add_`` -> ``add``: the out-of-place tensor method of an in-place one, else None."""
    if not name.endswith("_") or name.startswith("_") or name.endswith("__"):
        return None
    base = name[:-1]
    return base if callable(getattr(torch.Tensor, base, None)) and callable(getattr(torch.Tensor, name, None)) else None


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


#: torch functions whose sizes/numbers are Python ints to torch's argument parser: with a proxy among
#: them (``torch.ones(B, H * W)``, ``torch.arange(H // p)``) the parser raises a TypeError instead of
#: dispatching to the proxy, so while tracing they are recorded as graph nodes
_SIZE_FUNCTIONS = ("ones", "zeros", "empty", "full", "arange", "linspace", "logspace", "eye", "rand", "randn",
                   "randint", "tensor", "as_tensor", "scalar_tensor")
#: the same for tensor methods called on a tensor that is not traced (a constant) with proxy sizes
#: (``grid.expand(B, -1, -1)``, ``table.view(H, W, -1)``)
_SIZE_METHODS = ("expand", "view", "reshape", "repeat", "tile", "unflatten", "new_ones", "new_zeros", "new_empty",
                 "new_full", "new_tensor")


def _has_proxy(args, kwargs) -> fx.Proxy | None:
    found = []
    map_aggregate((args, kwargs), lambda a: found.append(a) if isinstance(a, fx.Proxy) else None)
    return found[0] if found else None


_MODULE_DICTS = ("_parameters", "_buffers", "_modules")


def _module_attributes(root: nn.Module) -> list:
    """A snapshot of every submodule's attributes and of the contents of its dict and list
    attributes (parameter, buffer and submodule dictionaries; caches such as TinyViT's
    ``attention_bias_cache = {}``, filled in place while traced)."""
    return [(m, dict(m.__dict__), {k: (dict(v) if isinstance(v, dict) else list(v))
                                   for k, v in m.__dict__.items() if type(v) in (dict, list)}
             | {k: dict(m.__dict__[k]) for k in _MODULE_DICTS if k in m.__dict__})
            for m in root.modules()]


def _restore_module_attributes(saved: list, root=None, graph=None) -> None:
    """Undo the attribute assignments made while tracing, except the attributes the graph
    reads (``get_attr``: torch.fx's ``_tensor_constant*``, a buffer registered in forward)."""
    kept = []
    if graph is not None:
        for node in graph.nodes:
            if node.op == "get_attr":
                owner, _, name = node.target.rpartition(".")
                try:
                    mod = root.get_submodule(owner)
                    kept.append((mod, name, getattr(mod, name)))
                except AttributeError:
                    pass
    for m, attrs, contents in saved:
        for k, c in contents.items():
            attrs[k].clear()
            (attrs[k].update if isinstance(c, dict) else attrs[k].extend)(c)
        m.__dict__.clear()
        m.__dict__.update(attrs)
    for mod, name, value in kept:
        if not hasattr(mod, name):
            setattr(mod, name, value)


@contextlib.contextmanager
def _sizes_from_proxies():
    """While tracing, ``torch.<factory>(..)`` and ``constant.<method>(..)`` with a proxy
    among their size arguments record a node (:data:`_SIZE_FUNCTIONS`,
    :data:`_SIZE_METHODS`); without a proxy they run as they are."""
    saved = []

    def traced_function(fn):
        def call(*args, **kwargs):
            p = _has_proxy(args, kwargs)
            if p is None:
                return fn(*args, **kwargs)
            return p.tracer.create_proxy("call_function", fn, args, kwargs)
        return call

    def traced_method(name, method):
        def call(self, *args, **kwargs):
            p = _has_proxy(args, kwargs)
            if p is None:
                return method(self, *args, **kwargs)
            return p.tracer.create_proxy("call_method", name, (self,) + args, kwargs)
        return call

    try:
        for name in _SIZE_FUNCTIONS:
            saved.append((torch, name, torch.__dict__[name]))
            setattr(torch, name, traced_function(torch.__dict__[name]))
        for name in _SIZE_METHODS:
            saved.append((torch.Tensor, name, torch.Tensor.__dict__.get(name, _MISSING)))
            setattr(torch.Tensor, name, traced_method(name, getattr(torch.Tensor, name)))
        yield
    finally:
        for owner, name, original in reversed(saved):
            if original is _MISSING:
                delattr(owner, name)
            else:
                setattr(owner, name, original)


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
