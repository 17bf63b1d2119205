"""One spelling per operation: functional calls with constant parameters become their modules.

``F.conv2d(x, w, b, ...)``, ``torch.conv2d``, ``F.conv_transpose2d(x, w, b, ...)``, ``F.linear(x, w, b)``,
``F.batch_norm(x, running_mean, running_var, w, b, training=False, ...)`` and
``torch.batch_norm`` compute exactly what ``nn.Conv2d``, ``nn.ConvTranspose2d``, ``nn.Linear`` and
``nn.BatchNorm2d`` compute when their parameters are constants of the input
(parameters, buffers, or tensors computed from them only: :func:`
empirical.engine.tracing.fold_constants` has turned those into buffers).
:func:`lift_functional` rewrites each such call into a call of the module
(sharing the tensors, no copy), so that everything downstream — BatchNorm
folding ([P1] Sec. 3.1.2), the node-kind table, the depth — sees one spelling
and gives it one treatment.

:data:`LIFTS` is the table: callable -> (argument names in the callable's own
order, the module builder).  A call whose weight depends on the input (a
hypernetwork) is left alone and refused by the node-kind table.
"""

from __future__ import annotations

import operator

import torch
import torch.fx as fx
import torch.nn as nn
import torch.nn.functional as F

from empirical.engine.kinds import module_path
from empirical.engine.tracing import SHAPE

_CONV_ARGS = ("input", "weight", "bias", "stride", "padding", "dilation", "groups")
_CONV_DEFAULTS = {"bias": None, "stride": 1, "padding": 0, "dilation": 1, "groups": 1}
_CONV_T_ARGS = ("input", "weight", "bias", "stride", "padding", "output_padding", "groups", "dilation")
_CONV_T_DEFAULTS = {"bias": None, "stride": 1, "padding": 0, "output_padding": 0, "groups": 1, "dilation": 1}
_LINEAR_ARGS = ("input", "weight", "bias")
_F_BN_ARGS = ("input", "running_mean", "running_var", "weight", "bias", "training", "momentum", "eps")
_TORCH_BN_ARGS = ("input", "weight", "bias", "running_mean", "running_var", "training", "momentum", "eps",
                  "cudnn_enabled")
_BN_DEFAULTS = {"weight": None, "bias": None, "training": False, "momentum": 0.1, "eps": 1e-5}


def _bind(node, names, defaults):
    a = dict(defaults)
    a.update(zip(names, node.args))
    a.update(node.kwargs)
    return a


def _const_tensor(gm, v):
    """The tensor of a ``get_attr`` node (None for None); ``False`` when ``v`` is not constant."""
    if v is None:
        return None
    if isinstance(v, fx.Node) and v.op == "get_attr":
        obj = gm
        for part in v.target.split("."):
            obj = getattr(obj, part)
        return obj if torch.is_tensor(obj) else False
    return False


def _param(t):
    return nn.Parameter(t, requires_grad=False)


def _convolution(classes, keys, channels, gm, a):
    """The ``nn`` convolution module a functional call with a constant weight computes:
    ``classes`` by spatial rank, ``keys`` its hyper-parameters (each a Python value),
    ``channels(W, groups) -> (in_channels, out_channels)``."""
    W = _const_tensor(gm, a["weight"])
    b = _const_tensor(gm, a["bias"])
    if W is False or W is None or b is False:
        return None
    if any(isinstance(a[k], fx.Node) for k in keys):
        return None
    cls = classes.get(W.dim() - 2)
    if cls is None:
        return None
    cin, cout = channels(W, a["groups"])
    m = cls(cin, cout, tuple(W.shape[2:]), bias=b is not None, device="meta", **{k: a[k] for k in keys})
    m.weight = _param(W)
    if b is not None:
        m.bias = _param(b)
    return m


def _conv_module(gm, node, a):
    """``F.conv{1,2,3}d`` with a constant weight: ``nn.Conv{1,2,3}d`` (weight ``(Cout, Cin/groups, *k)``)."""
    return _convolution({1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}, ("stride", "padding", "dilation", "groups"),
                        lambda W, g: (W.shape[1] * g, W.shape[0]), gm, a)


def _conv_transpose_module(gm, node, a):
    """``F.conv_transpose{1,2,3}d`` with a constant weight: ``nn.ConvTranspose{1,2,3}d``
    (weight ``(Cin, Cout/groups, *k)``)."""
    return _convolution({1: nn.ConvTranspose1d, 2: nn.ConvTranspose2d, 3: nn.ConvTranspose3d},
                        ("stride", "padding", "output_padding", "dilation", "groups"),
                        lambda W, g: (W.shape[0], W.shape[1] * g), gm, a)


def _linear_module(gm, node, a):
    W = _const_tensor(gm, a["weight"])
    b = _const_tensor(gm, a["bias"])
    if W is False or W is None or W.dim() != 2 or b is False:
        return None
    m = nn.Linear(W.shape[1], W.shape[0], bias=b is not None, device="meta")
    m.weight = _param(W)
    if b is not None:
        m.bias = _param(b)
    return m


def _bn_module(gm, node, a):
    mean, var = _const_tensor(gm, a["running_mean"]), _const_tensor(gm, a["running_var"])
    w, b = _const_tensor(gm, a["weight"]), _const_tensor(gm, a["bias"])
    if a["training"] is not False or any(t is None or t is False for t in (mean, var)) or w is False or b is False:
        return None
    if isinstance(a["eps"], fx.Node):
        return None
    shape = a["input"].meta.get(SHAPE) if isinstance(a["input"], fx.Node) else None
    cls = {2: nn.BatchNorm1d, 3: nn.BatchNorm1d, 4: nn.BatchNorm2d, 5: nn.BatchNorm3d}.get(len(shape) if shape else 4)
    m = cls(mean.shape[0], eps=float(a["eps"]), affine=False, device="meta")
    m.running_mean, m.running_var = mean, var
    m.num_batches_tracked = None
    if w is not None or b is not None:
        m.affine = True
        m.weight = _param(w if w is not None else torch.ones_like(mean))
        m.bias = _param(b if b is not None else torch.zeros_like(mean))
    return m


#: callable -> (its argument names, defaults, module builder)
LIFTS = {
    F.conv1d: (_CONV_ARGS, _CONV_DEFAULTS, _conv_module),
    F.conv2d: (_CONV_ARGS, _CONV_DEFAULTS, _conv_module),
    F.conv3d: (_CONV_ARGS, _CONV_DEFAULTS, _conv_module),
    torch.conv1d: (_CONV_ARGS, _CONV_DEFAULTS, _conv_module),
    torch.conv2d: (_CONV_ARGS, _CONV_DEFAULTS, _conv_module),
    torch.conv3d: (_CONV_ARGS, _CONV_DEFAULTS, _conv_module),
    F.conv_transpose1d: (_CONV_T_ARGS, _CONV_T_DEFAULTS, _conv_transpose_module),
    F.conv_transpose2d: (_CONV_T_ARGS, _CONV_T_DEFAULTS, _conv_transpose_module),
    F.conv_transpose3d: (_CONV_T_ARGS, _CONV_T_DEFAULTS, _conv_transpose_module),
    torch.conv_transpose1d: (_CONV_T_ARGS, _CONV_T_DEFAULTS, _conv_transpose_module),
    torch.conv_transpose2d: (_CONV_T_ARGS, _CONV_T_DEFAULTS, _conv_transpose_module),
    torch.conv_transpose3d: (_CONV_T_ARGS, _CONV_T_DEFAULTS, _conv_transpose_module),
    F.linear: (_LINEAR_ARGS, {"bias": None}, _linear_module),
    F.batch_norm: (_F_BN_ARGS, _BN_DEFAULTS, _bn_module),
    torch.batch_norm: (_TORCH_BN_ARGS, _BN_DEFAULTS, _bn_module),
}


def _free_name(gm, path, what):
    """``<module path>.<function>`` (the user's module path stays in every message), made unique."""
    base = what if path in ("", "<root>") else f"{path}.{what}"
    name, i = base, 1
    while _exists(gm, name):
        name, i = f"{base}_{i}", i + 1
    return name


def _exists(gm, dotted):
    obj = gm
    for part in dotted.split("."):
        if not hasattr(obj, part):
            return False
        obj = getattr(obj, part)
    return True


def lift_functional(gm: fx.GraphModule) -> int:
    """Rewrite the calls of :data:`LIFTS` with constant parameters into module calls.

    Returns the number of rewritten nodes.
    """
    lifted = 0
    for node in list(gm.graph.nodes):
        if node.op != "call_function":
            continue
        try:
            entry = LIFTS.get(node.target)
        except TypeError:  # unhashable target
            entry = None
        if entry is None:
            continue
        names, defaults, build = entry
        a = _bind(node, names, defaults)
        if not isinstance(a.get("input"), fx.Node):
            continue
        mod = build(gm, node, a)
        if mod is None:
            continue
        name = _free_name(gm, module_path(node), node.target.__name__)
        gm.add_submodule(name, mod)
        with gm.graph.inserting_before(node):
            new = gm.graph.call_module(name, (a["input"],))
        new.meta = dict(node.meta)
        new.meta.setdefault("nn_module_stack", node.meta.get("nn_module_stack"))
        node.replace_all_uses_with(new)
        gm.graph.erase_node(node)
        lifted += 1
    if lifted:
        gm.graph.eliminate_dead_code()
        gm.graph.lint()
        gm.recompile()
    return lifted


def _sum_dims(node):
    """The reduced axes of a ``sum``/``mean`` call (method or function) without keepdim/dtype, else None."""
    if (node.op == "call_method" and node.target in ("sum", "mean")) or (
            node.op == "call_function" and node.target in (torch.sum, torch.mean)):
        dims = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim")
        keep = node.args[2] if len(node.args) > 2 else node.kwargs.get("keepdim", False)
    else:
        return None
    if keep or "dtype" in node.kwargs:
        return None
    return (dims,) if isinstance(dims, int) else tuple(dims) if isinstance(dims, (list, tuple)) else None


def sums_of_stacks_to_adds(gm: fx.GraphModule) -> int:
    """``torch.stack([a, b, ...]).sum(0)`` is ``a + b + ...`` and ``.mean(0)`` is
    ``(a + b + ...) / n`` (timm's multi-head classifiers: LeViT's distillation head,
    CrossViT's per-branch heads): rewritten into the residual sums (and the constant
    scaling) they compute, so the stacking axis is never mistaken for the batch axis.
    Returns the number of rewrites."""
    done = 0
    for node in list(gm.graph.nodes):
        dims = _sum_dims(node)
        src = node.args[0] if node.args else None
        if dims != (0,) or not isinstance(src, fx.Node) or src.op != "call_function" or src.target is not torch.stack:
            continue
        if (src.args[1] if len(src.args) > 1 else src.kwargs.get("dim", 0)) != 0 or len(src.users) != 1:
            continue
        items = src.args[0]
        if not isinstance(items, (list, tuple)) or not items:
            continue
        mean = node.target in ("mean", torch.mean)
        with gm.graph.inserting_before(node):
            acc = items[0]
            for item in items[1:]:
                acc = gm.graph.call_function(operator.add, (acc, item))
                acc.meta = dict(node.meta)
            if mean and len(items) > 1:
                acc = gm.graph.call_function(operator.truediv, (acc, float(len(items))))
                acc.meta = dict(node.meta)
        node.replace_all_uses_with(acc)
        gm.graph.erase_node(node)
        gm.graph.erase_node(src)
        done += 1
    if done:
        gm.graph.lint()
        gm.recompile()
    return done
