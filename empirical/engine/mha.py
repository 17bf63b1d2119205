"""LRP handler for ``torch.nn.MultiheadAttention`` (ViT's self-attention).

The module is a leaf of the traced graph.  Its forward pass is re-computed here
following ``torch.nn.functional.multi_head_attention_forward`` (packed in-projection,
no masks, no added key/value bias, dropout off in eval mode):

1. value projection (v-rows of ``in_proj_weight``, with bias)   -> affine, the rule
2. ``A @ V`` with ``A = softmax(Q K^T / sqrt(d))`` (constant)   -> affine, weights A >= 0
3. head merge                                                   -> routing
4. output projection (``out_proj``)                            -> affine, the rule

Queries and keys get no relevance (attention weights held constant), so the
relevance goes to the ``value`` argument only.  The module returns
``(output, None)`` like ``need_weights=False``.
"""

from __future__ import annotations

import math

import torch
import torch.fx as fx
import torch.nn.functional as F

from empirical.engine.ops import LinearOp, MatmulConstOp, linear_vjp, lrp_step, sign_part_outputs


def _arg(node, i, name):
    if len(node.args) > i:
        return node.args[i]
    return node.kwargs.get(name)


class MultiheadAttentionHandler:
    """Forward/backward of one ``nn.MultiheadAttention`` call (see the module docstring).

    Raises ValueError (reported as unsupported) for separate q/k/v projection
    weights, ``add_bias_kv``, ``add_zero_attn`` or a mask argument.
    """

    def __init__(self, module, node: fx.Node):
        if not module.batch_first:
            raise ValueError("batch_first=False (the engine keeps samples on the first axis)")
        if not module._qkv_same_embed_dim:
            raise ValueError("separate query/key/value projection weights (kdim/vdim != embed_dim)")
        if module.bias_k is not None or module.add_zero_attn:
            raise ValueError("add_bias_kv / add_zero_attn")
        for i, name in ((3, "key_padding_mask"), (5, "attn_mask")):
            if _arg(node, i, name) is not None:
                raise ValueError(f"the {name} argument")
        if _arg(node, 7, "is_causal"):
            raise ValueError("is_causal=True")
        self.query_node, self.key_node, self.value_node = (_arg(node, i, n) for i, n in enumerate(("query", "key", "value")))
        E, H = module.embed_dim, module.num_heads
        self.E, self.H, self.d = E, H, E // H
        self.batch_first = module.batch_first
        W = module.in_proj_weight.detach()
        b = None if module.in_proj_bias is None else module.in_proj_bias.detach()
        self.Wq, self.Wk = W[:E], W[E : 2 * E]
        self.bq = None if b is None else b[:E]
        self.bk = None if b is None else b[E : 2 * E]
        self.v_op = LinearOp(W[2 * E :], None if b is None else b[2 * E :])
        self.out_op = LinearOp(module.out_proj.weight, module.out_proj.bias)

    def _bf(self, t):
        return t if self.batch_first else t.transpose(0, 1)

    def _split(self, t):
        n, L, _ = t.shape
        return t.reshape(n, L, self.H, self.d).transpose(1, 2)

    @staticmethod
    def _merge(t):
        n, H, L, d = t.shape
        return t.transpose(1, 2).reshape(n, L, H * d)

    def forward(self, query, key, value, *_, **__):
        q, k, v = self._bf(query), self._bf(key), self._bf(value)
        qh = self._split(F.linear(q, self.Wq, self.bq))
        kh = self._split(F.linear(k, self.Wk, self.bk))
        A = torch.softmax((qh / math.sqrt(self.d)) @ kh.transpose(-2, -1), dim=-1)
        O, zp, zn, vv = sign_part_outputs(self.v_op, v)
        if self.v_op.bias is not None:
            vv = vv + self.v_op.bias
        vh = self._split(vv)
        av = MatmulConstOp(A)
        O2, zp2, zn2, o = sign_part_outputs(av, vh)
        o = self._merge(o)
        O3, zp3, zn3, y = sign_part_outputs(self.out_op, o)
        if self.out_op.bias is not None:
            y = y + self.out_op.bias
        st = {"v": (O, zp, zn, v.shape), "av": (av, O2, zp2, zn2, vh.shape), "out": (O3, zp3, zn3, o.shape)}
        return (self._bf(y), None), st

    def backward(self, st, R, rules, conventions):
        """Relevance at the ``value`` input, ``R`` at the module's first output."""
        R = self._bf(R)
        O3, zp3, zn3, o_shape = st["out"]
        R = lrp_step(self.out_op, O3, zp3, zn3, R, rules, conventions, o_shape, bias=self.out_op.bias)
        av, O2, zp2, zn2, vh_shape = st["av"]
        R = linear_vjp(self._merge, (R.shape[0],) + tuple(vh_shape[1:]), R)
        R = lrp_step(av, O2, zp2, zn2, R, rules, conventions, vh_shape)
        O, zp, zn, v_shape = st["v"]
        R = linear_vjp(self._split, (R.shape[0],) + tuple(v_shape[1:]), R)
        R = lrp_step(self.v_op, O, zp, zn, R, rules, conventions, v_shape, bias=self.v_op.bias)
        return self._bf(R)
