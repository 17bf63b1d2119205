"""Canonicalisation and tracing: a deep copy of the model as a torch.fx graph.

See the package docstring (``empirical/engine/__init__.py``) for every choice.
"""

from __future__ import annotations

import copy
import operator

import torch
import torch.fx as fx
import torch.nn as nn
import torch.nn.functional as F

from boundcheck.errors import InputError


class UnsupportedModuleError(InputError):
    """The model contains a module or operation the engine has no backward rule for."""


# --------------------------------------------------------------------------- optional classes

def _optional(path, name):
    try:
        mod = __import__(path, fromlist=[name])
        return getattr(mod, name)
    except Exception:  # pragma: no cover - optional dependency
        return None


SqueezeExcitation = _optional("torchvision.ops.misc", "SqueezeExcitation")
StochasticDepth = _optional("torchvision.ops.stochastic_depth", "StochasticDepth")
ShiftedWindowAttentionV2 = _optional("torchvision.models.swin_transformer", "ShiftedWindowAttentionV2")
ShiftedWindowAttention = _optional("torchvision.models.swin_transformer", "ShiftedWindowAttention")
_patch_merging_pad = _optional("torchvision.models.swin_transformer", "_patch_merging_pad")
_get_relative_position_bias = _optional("torchvision.models.swin_transformer", "_get_relative_position_bias")

LEAF_TYPES = tuple(t for t in (SqueezeExcitation, StochasticDepth, ShiftedWindowAttention) if t is not None)

PASS_MODULES = (
    nn.ReLU, nn.ReLU6, nn.SiLU, nn.GELU, nn.Hardswish, nn.LeakyReLU, nn.ELU, nn.Mish, nn.Tanh,
    nn.Dropout, nn.Dropout2d, nn.Identity, nn.LayerNorm, nn.BatchNorm1d, nn.BatchNorm2d,
) + tuple(t for t in (StochasticDepth,) if t is not None)
PASS_FUNCTIONS = {
    F.relu, F.relu6, F.silu, F.gelu, F.hardswish, F.leaky_relu, F.elu, torch.relu, torch.tanh, F.dropout,
    F.layer_norm, torch.nn.functional.batch_norm,
}
PASS_METHODS = {"relu", "relu_", "contiguous", "clone", "detach", "to", "float", "double", "type_as"}

ROUTE_MODULES = (nn.Flatten, nn.Unflatten, nn.ZeroPad2d, nn.ConstantPad2d, nn.MaxPool2d, nn.AdaptiveMaxPool2d)
ROUTE_FUNCTIONS = {
    torch.flatten, torch.reshape, torch.permute, torch.transpose, torch.cat, torch.concat, torch.roll, F.pad,
    operator.getitem, torch.chunk, torch.split, torch.squeeze, torch.unsqueeze, F.max_pool2d, torch.stack,
    torch.narrow,
} | ({_patch_merging_pad} if _patch_merging_pad is not None else set())
ROUTE_METHODS = {
    "view", "reshape", "flatten", "permute", "transpose", "chunk", "split", "squeeze", "unsqueeze", "roll",
    "narrow", "unflatten", "expand_as",
}
META_FUNCTIONS = {getattr, len}
META_METHODS = {"size", "dim"}
ADD_FUNCTIONS = {operator.add, operator.iadd, torch.add}
POOL_MODULES = (nn.AvgPool2d, nn.AdaptiveAvgPool2d)
POOL_FUNCTIONS = {F.avg_pool2d, F.adaptive_avg_pool2d, torch.mean}


class _Tracer(fx.Tracer):
    def is_leaf_module(self, m, qualname):
        if isinstance(m, LEAF_TYPES):
            return True
        return super().is_leaf_module(m, qualname)


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
    """Fold every eval-mode BatchNorm whose input is a Conv2d/Linear used only by it."""
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
        with torch.no_grad():
            scale = bn.running_var.add(bn.eps).rsqrt()
            if bn.weight is not None:
                scale = scale * bn.weight
            shift = -bn.running_mean * scale
            if bn.bias is not None:
                shift = shift + bn.bias
            shape = (-1,) + (1,) * (lin.weight.dim() - 1)
            lin.weight.mul_(scale.reshape(shape))
            b = lin.bias if lin.bias is not None else torch.zeros_like(scale)
            new_b = b * scale + shift
            lin.bias = nn.Parameter(new_b, requires_grad=False)
        node.replace_all_uses_with(prev)
        gm.graph.erase_node(node)
    gm.graph.lint()
    gm.recompile()


def canonicalise(model: nn.Module, dtype, device) -> fx.GraphModule:
    """Deep copy -> eval -> dtype/device -> same-padding convs made explicit -> fx trace -> BN folded.

    The user's ``model`` is never modified.
    """
    m = copy.deepcopy(model)
    m.eval()
    m.to(dtype=dtype)
    if device is not None:
        m.to(device)
    for p in m.parameters():
        p.requires_grad_(False)
    _static_same_padding_to_plain(m)
    try:
        graph = _Tracer().trace(m)
    except Exception as exc:  # noqa: BLE001
        raise UnsupportedModuleError(f"the model cannot be traced by torch.fx: {exc}") from exc
    gm = fx.GraphModule(m, graph)
    _fold_bn(gm)
    gm.eval()
    return gm


# ---------------------------------------------------------------- static sign analysis
#: outputs >= 0 whatever the input
NONNEG_MODULES = (nn.ReLU, nn.ReLU6)
NONNEG_FUNCTIONS = {F.relu, F.relu6, torch.relu}
NONNEG_METHODS = {"relu", "relu_"}
#: outputs >= 0 when every tensor input is (data movement, max/average pooling, dropout in eval)
SIGN_KEEPING_MODULES = (
    nn.Dropout, nn.Dropout2d, nn.Identity, nn.Flatten, nn.Unflatten, nn.ZeroPad2d, nn.MaxPool2d,
    nn.AdaptiveMaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d,
) + tuple(t for t in (StochasticDepth,) if t is not None)
SIGN_KEEPING_FUNCTIONS = {
    F.dropout, torch.flatten, torch.reshape, torch.permute, torch.transpose, torch.cat, torch.concat, torch.roll,
    operator.getitem, torch.chunk, torch.split, torch.squeeze, torch.unsqueeze, F.max_pool2d, torch.stack,
    torch.narrow, F.avg_pool2d, F.adaptive_avg_pool2d, torch.mean,
}
SIGN_KEEPING_METHODS = {
    "view", "reshape", "flatten", "permute", "transpose", "chunk", "split", "squeeze", "unsqueeze", "roll",
    "narrow", "unflatten", "contiguous", "clone", "detach", "to", "float", "double", "mean",
}


def nonnegative_outputs(gm: fx.GraphModule) -> set:
    """Nodes whose output is >= 0 for EVERY input (a sound, conservative static analysis).

    A node qualifies when it is a ReLU/ReLU6, or when it only moves, pools or
    drops values and all its tensor inputs qualify.  The LRP engine then skips
    the run-time sign check of those tensors (one pass over the tensor and, on a
    GPU, one host-device synchronisation per affine layer).
    """
    mods = dict(gm.named_modules())
    out = set()
    for node in gm.graph.nodes:
        if node.op == "call_module":
            mod = mods[node.target]
            if type(mod) in NONNEG_MODULES:
                out.add(node)
                continue
            keeping = isinstance(mod, SIGN_KEEPING_MODULES)
        elif node.op == "call_function":
            if node.target in NONNEG_FUNCTIONS:
                out.add(node)
                continue
            keeping = node.target in SIGN_KEEPING_FUNCTIONS
        elif node.op == "call_method":
            if node.target in NONNEG_METHODS:
                out.add(node)
                continue
            keeping = node.target in SIGN_KEEPING_METHODS
        else:
            keeping = False
        ins = node.all_input_nodes
        if keeping and ins and all(a in out for a in ins):
            out.add(node)
    return out
