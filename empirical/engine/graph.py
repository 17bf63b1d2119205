"""Canonicalisation and tracing: a copy of the model (sharing its unchanged weights) as a torch.fx graph.

See the package docstring (``empirical/engine/__init__.py``) for every choice.
"""

from __future__ import annotations

import copy

import torch
import torch.fx as fx
import torch.nn as nn



from empirical.engine.kinds import LEAF_TYPES, UnsupportedModuleError  # noqa: F401 (re-exported)
from empirical.engine.spellings import lift_functional, sums_of_stacks_to_adds
from empirical.engine.tracing import (
    CAST_OVERRIDDEN, ConcreteTracer, fold_constants, inline_default_arguments, value_dependent,
)

#: the example input's (C, H, W) when the caller gives none (a model that asks
#: Python about shapes is traced again for every other input shape)
DEFAULT_INPUT_SHAPE = (3, 224, 224)


def _static_same_padding_to_plain(model: nn.Module) -> None:
    """efficientnet_lite's ``Conv2dStaticSamePadding`` -> ``Sequential(pad, Conv2d)`` in place (on the copy)."""
    for name, child in list(model.named_children()):
        if isinstance(child, nn.Conv2d) and type(child) is not nn.Conv2d and hasattr(child, "static_padding"):
            conv = nn.Conv2d(
                child.in_channels, child.out_channels, child.kernel_size, child.stride, child.padding,
                child.dilation, child.groups, child.bias is not None, child.padding_mode,
            ).to(dtype=child.weight.dtype, device=child.weight.device)
            with torch.no_grad():
                conv.weight.copy_(child.weight)
                if child.bias is not None:
                    conv.bias.copy_(child.bias)
            pad = child.static_padding
            if not isinstance(pad, (nn.ZeroPad2d, nn.Identity)):
                pad = nn.Identity()  # efficientnet_lite's own Identity class
            setattr(model, name, nn.Sequential(pad, conv))
        else:
            _static_same_padding_to_plain(child)


def _fold_bn(gm: fx.GraphModule) -> None:
    """Fold every eval-mode BatchNorm whose input is a Conv2d/Linear used only by it,
    then the remaining ones into the layer after them where exact (:func:`_fold_bn_into_next`)."""
    modules = dict(gm.named_modules())
    calls = {}
    for node in gm.graph.nodes:
        if node.op == "call_module":
            calls[node.target] = calls.get(node.target, 0) + 1
    for node in list(gm.graph.nodes):
        if node.op != "call_module":
            continue
        bn = modules[node.target]
        if not isinstance(bn, (nn.BatchNorm1d, nn.BatchNorm2d)) or bn.running_mean is None:
            continue
        prev = node.args[0]
        if not (isinstance(prev, fx.Node) and prev.op == "call_module" and len(prev.users) == 1):
            continue
        lin = modules[prev.target]
        if not isinstance(lin, (nn.Conv2d, nn.Linear)) or calls[prev.target] != 1 or calls[node.target] != 1:
            continue
        if isinstance(bn, nn.BatchNorm1d) and isinstance(lin, nn.Conv2d):
            continue
        with torch.no_grad():  # new tensors: the copy's parameters may share the caller's storage
            scale, shift = _bn_affine(bn)
            shape = (-1,) + (1,) * (lin.weight.dim() - 1)
            lin.weight = nn.Parameter(lin.weight * scale.reshape(shape), requires_grad=False)
            b = lin.bias if lin.bias is not None else torch.zeros_like(scale)
            new_b = b * scale + shift
            lin.bias = nn.Parameter(new_b, requires_grad=False)
        node.replace_all_uses_with(prev)
        gm.graph.erase_node(node)
    _fold_bn_into_next(gm, modules, calls)
    gm.graph.lint()
    gm.recompile()


def _bn_affine(bn):
    scale = bn.running_var.add(bn.eps).rsqrt()
    if bn.weight is not None:
        scale = scale * bn.weight
    shift = -bn.running_mean * scale
    if bn.bias is not None:
        shift = shift + bn.bias
    return scale, shift


def _fold_bn_into_next(gm: fx.GraphModule, modules, calls) -> None:
    """Fold a remaining BatchNorm into the layer after it when that is exact: its only
    user is an ungrouped Conv2d without padding (or a Linear after a BatchNorm1d),
    used once (``conv(s*z + c) = conv_{W s}(z) + conv_W(c)``; with zero padding the
    padded border would see ``c``, so padded convolutions are left alone)."""
    for node in list(gm.graph.nodes):
        if node.op != "call_module":
            continue
        bn = modules[node.target]
        if not isinstance(bn, (nn.BatchNorm1d, nn.BatchNorm2d)) or bn.running_mean is None or calls[node.target] != 1:
            continue
        if len(node.users) != 1:
            continue
        nxt = next(iter(node.users))
        if nxt.op != "call_module" or calls[nxt.target] != 1 or nxt.args[0] is not node or len(nxt.args) != 1:
            continue
        lin = modules[nxt.target]
        if type(lin) is nn.Conv2d:
            pad = lin.padding
            if isinstance(bn, nn.BatchNorm1d) or lin.groups != 1 or lin.padding_mode != "zeros" or not (
                pad == "valid" or (not isinstance(pad, str) and all(p == 0 for p in pad))
            ):
                continue
        elif type(lin) is nn.Linear:
            if not isinstance(bn, nn.BatchNorm1d):
                continue
        else:
            continue
        with torch.no_grad():
            scale, shift = _bn_affine(bn)
            W = lin.weight
            shape = (1, -1) + (1,) * (W.dim() - 2)
            extra = (W.sum(dim=tuple(range(2, W.dim()))) if W.dim() > 2 else W) @ shift
            lin.weight = nn.Parameter(W * scale.reshape(shape), requires_grad=False)
            b = lin.bias if lin.bias is not None else torch.zeros(W.shape[0], dtype=W.dtype, device=W.device)
            lin.bias = nn.Parameter(b + extra, requires_grad=False)
        node.replace_all_uses_with(node.args[0])
        gm.graph.erase_node(node)


def _elementwise_forward(self, z):
    """``z * s + c`` (:func:`_bn_affine`, channel axis 1) in elementwise operations."""
    scale, shift = _bn_affine(self)
    shape = (1, -1) + (1,) * (z.dim() - 2)
    return z * scale.reshape(shape) + shift.reshape(shape)


class ElementwiseBatchNorm1d(nn.BatchNorm1d):
    """An eval-mode ``nn.BatchNorm1d`` of the canonical copy computing ``z * s + c`` elementwise
    (:func:`_batchnorm_elementwise`)."""

    forward = _elementwise_forward


class ElementwiseBatchNorm2d(nn.BatchNorm2d):
    """An eval-mode ``nn.BatchNorm2d`` of the canonical copy computing ``z * s + c`` elementwise
    (:func:`_batchnorm_elementwise`)."""

    forward = _elementwise_forward


_ELEMENTWISE_BN = {nn.BatchNorm1d: ElementwiseBatchNorm1d, nn.BatchNorm2d: ElementwiseBatchNorm2d}


def _batchnorm_elementwise(gm: fx.GraphModule) -> None:
    """Every eval-mode BatchNorm left after folding computes its affine map ``z * s + c``
    in elementwise operations (its module object, the copy's, becomes the
    ``Elementwise`` subclass: same parameters and buffers, same node kind).

    The gradient methods differentiate the canonical copy with autograd, and torch's CPU
    ``native_batch_norm_backward`` returns wrong input gradients at a batch of one when
    the input and the incoming gradient have different memory layouts (a contiguous
    input, a channels-last gradient from ``bn(z).flatten(2).transpose(1, 2)`` and a
    LayerNorm; ``tests/test_engine_timm.py``); an elementwise product's derivative is
    right for every layout.  The values agree with the kernel's up to rounding (the
    same formula, ``s = w / sqrt(var + eps)``, ``c = b - mean * s``).
    """
    modules = dict(gm.named_modules())
    for node in gm.graph.nodes:
        if node.op != "call_module":
            continue
        bn = modules[node.target]
        if type(bn) in _ELEMENTWISE_BN and not bn.training and bn.running_mean is not None:
            bn.__class__ = _ELEMENTWISE_BN[type(bn)]


def copy_model(model: nn.Module) -> nn.Module:
    """A deep copy of ``model`` whose parameters and buffers share the caller's storage.

    Every module, parameter and buffer object is new (so ``requires_grad_``,
    ``.to(...)`` and attribute assignments on the copy never reach the caller's
    model), but a parameter or buffer that is not converted (same dtype and
    device) keeps pointing at the caller's memory: the copy costs no weight
    memory.  Canonicalisation never writes into a tensor in place (BatchNorm
    folding assigns new parameters, constants are folded into new buffers), so
    the caller's values are never changed.  Tensors an earlier forward pass
    cached with autograd history outside the parameters (timm LeViT's
    attention-bias cache) are copied detached (``deepcopy`` refuses them).
    """
    memo = {}
    for t in list(model.parameters()) + list(model.buffers()):
        if id(t) in memo:
            continue
        if isinstance(t, nn.Parameter):
            memo[id(t)] = nn.Parameter(t.detach(), requires_grad=False)
        else:
            memo[id(t)] = t.detach()
    for mod in model.modules():
        for value in vars(mod).values():
            for t in value.values() if isinstance(value, dict) else value if isinstance(value, (list, tuple)) else (value,):
                if torch.is_tensor(t) and t.grad_fn is not None and id(t) not in memo:
                    memo[id(t)] = t.detach().clone()
    return copy.deepcopy(model, memo)


def canonicalise(model: nn.Module, dtype, device, input_shape=None) -> fx.GraphModule:
    """Copy sharing the weights' storage (:func:`copy_model`) -> eval -> dtype/device
    -> same-padding convs made explicit -> traced (:class:`empirical.engine.tracing.ConcreteTracer`
    on an example of ``input_shape``) -> constants folded -> functional layers lifted
    to their modules -> BN folded, the remaining ones elementwise (:func:`_batchnorm_elementwise`)
    -> ``contiguous()`` before every ``view``.

    ``input_shape``: ``(C, H, W)`` of the example input (default
    :data:`DEFAULT_INPUT_SHAPE`).  The returned graph's ``specialised_shape`` is
    that shape when its ``forward`` asked Python about a value (then the graph
    holds for inputs of that shape only), else ``None``.  The user's ``model``
    is never modified; its parameters and buffers are shared (not copied) where
    neither the dtype/device conversion nor BatchNorm folding changes them, so an
    explainer must be rebuilt after the caller changes the model's weights.
    """
    m = copy_model(model)
    m.eval()
    m.to(dtype=dtype)
    if device is not None:
        m.to(device)
    for p in m.parameters():
        p.requires_grad_(False)
    _static_same_padding_to_plain(m)
    shape = tuple(input_shape) if input_shape is not None else DEFAULT_INPUT_SHAPE
    example = torch.zeros((1,) + shape, dtype=dtype, device=device)
    example.normal_(generator=torch.Generator(device=example.device).manual_seed(0))
    tracer = ConcreteTracer(LEAF_TYPES, example)
    try:
        graph = tracer.trace(m)
    except UnsupportedModuleError:
        raise
    except Exception as exc:  # noqa: BLE001
        first = (str(exc).strip().splitlines() or [""])[0]
        why = f"({type(exc).__name__}: {first})"
        if tracer.example_error is not None:
            why += (f"; the example input of shape {(1,) + shape} could not be evaluated ({tracer.example_error}): "
                    "give the model's input shape (input_shape / --input-size)")
        else:
            why += "; data-dependent Python control flow in forward() is the usual cause"
        raise UnsupportedModuleError(f"the model cannot be traced by torch.fx {why}") from None
    gm = fx.GraphModule(m, graph)
    try:
        inline_default_arguments(gm)
    except ValueError as exc:
        raise UnsupportedModuleError(f"the model cannot be explained: {exc}") from None
    casts_to_dtype(gm, dtype)
    out_node = next(n for n in gm.graph.nodes if n.op == "output")
    reference = tracer.values.get(out_node.args[0]) if isinstance(out_node.args[0], fx.Node) else None
    if tracer.in_place and torch.is_tensor(reference):
        # in-place updates were recorded out of place: the graph is checked against the eager model,
        # which alone sees a mutation through an alias (a view) of the updated tensor
        with torch.no_grad():
            reference = m(example)
    fold_constants(gm, tracer.values)
    tracer.values.clear()
    if torch.is_tensor(reference):
        _check_samples_independent(gm, example, reference)
    lift_functional(gm)
    sums_of_stacks_to_adds(gm)
    _fold_bn(gm)
    _batchnorm_elementwise(gm)
    _contiguous_before_views(gm)
    gm.eval()
    gm.specialised_shape = shape if tracer.specialised else None
    return gm


_CAST_METHODS = {"float": torch.float32, "double": torch.float64, "half": torch.float16, "bfloat16": torch.bfloat16}


def casts_to_dtype(gm: fx.GraphModule, dtype) -> list:
    """Casts of input-dependent tensors to another floating dtype compute in ``dtype`` instead.

    The convention (the oracle's ``casts="dtype"`` models it): the engine computes every
    input-dependent value in the dtype it was asked for.  ``t.float()``, ``t.double()``,
    ``t.half()``, ``t.bfloat16()``, ``t.to(..., <floating dtype>, ...)`` and
    ``t.type(<floating dtype>)`` inside the model's ``forward`` become ``t.to(dtype)``
    (timm's EfficientViT-MIT computes its linear attention under ``.float()``; in a float64
    engine those values would otherwise be rounded to float32, about 1e-8 of the logits,
    and the LRP sums over sign parts would be formed in float32).  A cast to an integer
    or boolean dtype, a cast to ``other.dtype`` (``type_as``/``to(other)``) and a constant
    (computed from parameters and buffers only: folded with the value the model computes)
    are left as they are, and so is a tensor computed from the input's shape only (XCiT's Fourier
    positional encoding, `torch.arange(H).to(torch.float32)`: a constant of the input's values, computed
    as the model computes it).  Each overridden node gets ``node.meta[CAST_OVERRIDDEN]`` = the
    dtype it asked for (``boundcheck check-model`` lists them).

    Returns the overridden nodes.
    """
    dep = value_dependent(gm.graph)  # a tensor built from the input's shape only is a constant
    changed = []
    for node in gm.graph.nodes:
        if node.op != "call_method" or node not in dep:
            continue
        if node.target in _CAST_METHODS and len(node.args) == 1:
            asked = _CAST_METHODS[node.target]
            if asked != dtype:
                node.target, node.args = "to", (node.args[0], dtype)
        elif node.target in ("to", "type"):
            asked = next((a for a in list(node.args[1:]) + [node.kwargs.get("dtype")] if isinstance(a, torch.dtype)),
                         None)
            if asked is not None and asked.is_floating_point and asked != dtype:
                node.args = tuple(dtype if a is asked else a for a in node.args)
                node.kwargs = {k: (dtype if v is asked else v) for k, v in node.kwargs.items()}
        else:
            continue
        if asked is not None and asked.is_floating_point and asked != dtype:
            node.meta[CAST_OVERRIDDEN] = str(asked).replace("torch.", "")
            changed.append(node)
    if changed:
        gm.recompile()
    return changed


def _check_samples_independent(gm, example, reference) -> None:
    """The engine stacks rules and sign halves along the batch axis, so a model must
    treat the samples of a batch independently.  Its graph is run node by node on the
    example (one sample) and, in lock-step, on the example beside a second sample:

    * every input-dependent tensor must have a batch axis: its shape for two samples
      equals its shape for one except in one axis, which doubles (the batch axis,
      possibly merged with others, e.g. windows ``(B * nW, N, C)``).  A tensor whose
      shape changes in two axes, or in one by another factor, has the batch axis
      contracted or made a second axis: timm's CSATv2 computes
      ``(q @ k.transpose(-1, -2)).softmax(-1)`` on ``(B, N)`` tensors, a ``(B, B)``
      attention over the batch (its values happen not to depend on the input there,
      so the logits alone do not show it);
    * the graph's batch-of-one output must equal ``reference`` (the traced value, or the
      eager model's output where in-place updates were recorded out of place; within
      float32 rounding where casts were overridden), else the graph differs from the
      model and is refused as such (an in-place update through an alias);
    * the example's row of the batch-of-two output must equal its batch-of-one output;
      when it does not, the first node whose leading-axis row changed is named.

    Raises UnsupportedModuleError (one line, naming the module path where known)."""
    from empirical.engine.kinds import module_path

    other = torch.empty_like(example).normal_(generator=torch.Generator(device=example.device).manual_seed(1))
    tol = 1e-9 if example.dtype == torch.float64 else 1e-3
    last_use = {}
    for node in gm.graph.nodes:
        for a in node.all_input_nodes:
            last_use[a] = node
    runs = (fx.Interpreter(gm, garbage_collect_values=False), fx.Interpreter(gm, garbage_collect_values=False))
    for it, x in zip(runs, (example, torch.cat([example, other]))):
        it.env = {}
        it.args_iter = iter([x])
    dep, first_changed, out, out1 = set(), None, None, None
    with torch.no_grad():
        for node in gm.graph.nodes:
            try:
                one, two = (it.run_node(node) for it in runs)
            except Exception as exc:  # noqa: BLE001
                first = (str(exc).strip().splitlines() or [""])[0]
                raise UnsupportedModuleError(
                    f"the model fails on a batch of two samples in module '{module_path(node)}' (node {node.name}: "
                    f"{type(exc).__name__}: {first}); an operation that mixes the samples of a batch is not "
                    "supported") from None
            if node.op == "output":
                out1, out = one, two
                break
            for it, v in zip(runs, (one, two)):
                it.env[node] = v
            if node.op == "placeholder" or any(a in dep for a in node.all_input_nodes):
                dep.add(node)
            if node in dep and torch.is_tensor(one) and torch.is_tensor(two) and one.dim() == two.dim():
                axes = [i for i, (a, b) in enumerate(zip(one.shape, two.shape)) if a != b]
                if len(axes) > 1 or (axes and two.shape[axes[0]] != 2 * one.shape[axes[0]]):
                    raise UnsupportedModuleError(
                        f"unsupported operation '{_name(node)}' in module '{module_path(node)}' (node {node.name}): "
                        f"it mixes the samples of a batch (shape {tuple(one.shape)} for one sample, "
                        f"{tuple(two.shape)} for two: the batch axis is contracted or made a second axis); the "
                        "engine explains each sample on its own")
                if first_changed is None and axes == [0] and torch.is_floating_point(one) and one.numel():
                    scale = float(one.abs().max()) or 1.0
                    if float((two[: one.shape[0]] - one).abs().max()) > tol * scale:
                        first_changed = node
            for a in node.all_input_nodes:
                if last_use.get(a) is node:
                    for it in runs:
                        it.env.pop(a, None)
    if not torch.is_tensor(out) or out.shape[0] != 2 or out.shape[1:] != reference.shape[1:]:
        raise UnsupportedModuleError(
            f"the model's output does not keep the batch axis (batch 1 -> {tuple(reference.shape)}, batch 2 -> "
            f"{tuple(out.shape) if torch.is_tensor(out) else type(out).__name__})")
    scale = float(out1.abs().max()) or 1.0  # the graph's own batch-of-one output (casts overridden)
    cast = any(CAST_OVERRIDDEN in n.meta for n in gm.graph.nodes)
    if float((out1 - reference).abs().max()) > (1e-5 if cast else tol) * scale:
        raise UnsupportedModuleError(
            "the traced graph does not reproduce the model's output on the example input (an in-place "
            "update seen through a view or another alias of a tensor is the usual cause)")
    if float((out[:1] - out1).abs().max()) > tol * scale:
        where = (f" (first in module '{module_path(first_changed)}', node {first_changed.name})"
                 if first_changed is not None else "")
        raise UnsupportedModuleError(
            f"the model mixes the samples of a batch{where}: a sample's logits change with the other samples in "
            "the batch; the engine explains each sample on its own")


def _name(node) -> str:
    t = node.target
    return t if isinstance(t, str) else getattr(t, "__name__", str(t))


#: ``node.meta`` key of the nodes canonicalisation adds (not the user's operations: no LayerRecord)
INSERTED = "boundcheck_inserted"


def _contiguous_before_views(gm: fx.GraphModule) -> None:
    """``t.view(...)`` -> ``t.contiguous().view(...)``.

    ``view`` is the one operation whose success depends on the memory layout: with
    the canonical copy in channels-last (``Explainer(channels_last=True)``) a
    user's ``x.view(x.size(0), -1)`` on a 4-d tensor would fail.  On a tensor that
    is already contiguous the inserted call returns it unchanged, so the values
    the user's code computes are never changed.
    """
    changed = False
    for node in list(gm.graph.nodes):
        if node.op == "call_method" and node.target in ("view", "view_as") and isinstance(node.args[0], fx.Node):
            src = node.args[0]
            if src.op == "call_method" and src.target == "contiguous":
                continue
            with gm.graph.inserting_before(node):
                c = gm.graph.call_method("contiguous", (src,))
            c.meta = dict(src.meta)
            c.meta[INSERTED] = True
            node.replace_input_with(src, c)
            changed = True
    if changed:
        gm.graph.lint()
        gm.recompile()


def nonnegative_outputs(gm: fx.GraphModule) -> set:
    """Nodes whose output is >= 0 for EVERY input (a sound, conservative static analysis).

    A node qualifies when it is a ReLU/ReLU6, or when it only moves, pools or
    drops values and all its tensor inputs qualify (the ``sign`` entries of
    :mod:`empirical.engine.kinds`).  The LRP engine then skips the run-time sign
    check of those tensors.
    """
    from boundcheck.rules import DEFAULT_CONVENTIONS
    from empirical.engine.kinds import plan_graph

    return plan_graph(gm, DEFAULT_CONVENTIONS).nonneg
