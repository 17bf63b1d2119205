"""LRP handler for torchvision's (shifted) window attention, Swin V1 and V2.

The module is a leaf of the traced graph (torchvision wraps
``shifted_window_attention`` with ``torch.fx.wrap``).  Its forward pass is
re-computed here step by step, following
``torchvision.models.swin_transformer.shifted_window_attention``:

1. pad, cyclic shift, window partition                     -> routing
2. value projection (v-rows of the qkv Linear, with bias)  -> affine, the rule
3. ``A @ V``, A = softmax attention (constant)             -> affine, weights A >= 0
4. head merge                                              -> routing
5. output projection (proj Linear)                         -> affine, the rule
6. window reverse, reverse shift, unpad                    -> routing

The attention weights ``A`` (queries, keys, cosine attention, logit scale,
relative position bias from the cpb MLP, shift mask) are constants of the
backward pass: no relevance flows through them.

Step 3 is evaluated in float64 whatever the engine's dtype: the shift mask's
-100 logits give attention weights of about e^-100, below float32's normal
range, and with them the ratios ``R/D`` of the rule overflow float32 (NaN in
LRP-beta maps).  Its output is cast back, so the forward pass agrees with the
module to float32 rounding.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from empirical.engine.ops import LinearOp, MatmulConstOp, linear_vjp, lrp_step, sign_part_outputs


class SwinAttentionHandler:
    def __init__(self, module):
        self.m = module
        C = module.qkv.in_features
        self.C = C
        self.heads = module.num_heads
        self.window = list(module.window_size)
        self.shift = list(module.shift_size)
        self.v2 = getattr(module, "logit_scale", None) is not None
        W = module.qkv.weight.detach()
        b = None if module.qkv.bias is None else module.qkv.bias.detach().clone()
        if b is not None and self.v2:
            b[C : 2 * C] = 0.0  # as torchvision: the key bias is zeroed in V2
        self.qkv_w, self.qkv_b = W, b
        self.v_op = LinearOp(W[2 * C :], None if b is None else b[2 * C :])
        self.proj_op = LinearOp(module.proj.weight, module.proj.bias)

    # ------------------------------------------------------------------ routing pieces
    def _geometry(self, x):
        _, H, W, _ = x.shape
        ws = self.window
        pad_r = (ws[1] - W % ws[1]) % ws[1]
        pad_b = (ws[0] - H % ws[0]) % ws[0]
        pH, pW = H + pad_b, W + pad_r
        shift = list(self.shift)
        if ws[0] >= pH:
            shift[0] = 0
        if ws[1] >= pW:
            shift[1] = 0
        return H, W, pad_r, pad_b, pH, pW, shift

    def _partition(self, x, geo):
        H, W, pad_r, pad_b, pH, pW, shift = geo
        ws = self.window
        B, C = x.shape[0], x.shape[-1]
        x = F.pad(x, (0, 0, 0, pad_r, 0, pad_b))
        if sum(shift) > 0:
            x = torch.roll(x, shifts=(-shift[0], -shift[1]), dims=(1, 2))
        nW = (pH // ws[0]) * (pW // ws[1])
        x = x.view(B, pH // ws[0], ws[0], pW // ws[1], ws[1], C)
        return x.permute(0, 1, 3, 2, 4, 5).reshape(B * nW, ws[0] * ws[1], C)

    def _reverse(self, x, geo, B):
        H, W, pad_r, pad_b, pH, pW, shift = geo
        ws = self.window
        C = x.shape[-1]
        x = x.view(B, pH // ws[0], pW // ws[1], ws[0], ws[1], C)
        x = x.permute(0, 1, 3, 2, 4, 5).reshape(B, pH, pW, C)
        if sum(shift) > 0:
            x = torch.roll(x, shifts=(shift[0], shift[1]), dims=(1, 2))
        return x[:, :H, :W, :].contiguous()

    def _split_heads(self, v):
        n, N, C = v.shape
        return v.reshape(n, N, self.heads, C // self.heads).permute(0, 2, 1, 3)

    @staticmethod
    def _merge_heads(o):
        n, h, N, d = o.shape
        return o.transpose(1, 2).reshape(n, N, h * d)

    # ------------------------------------------------------------------ attention weights
    def _attention(self, xw, geo):
        m = self.m
        H, W, pad_r, pad_b, pH, pW, shift = geo
        ws = self.window
        C = self.C
        nW = (pH // ws[0]) * (pW // ws[1])
        qkv = F.linear(xw, self.qkv_w, self.qkv_b)
        qkv = qkv.reshape(xw.size(0), xw.size(1), 3, self.heads, C // self.heads).permute(2, 0, 3, 1, 4)
        q, k = qkv[0], qkv[1]
        if self.v2:
            attn = F.normalize(q, dim=-1) @ F.normalize(k, dim=-1).transpose(-2, -1)
            scale = torch.clamp(m.logit_scale, max=math.log(100.0)).exp()
            attn = attn * scale
        else:
            q = q * (C // self.heads) ** -0.5
            attn = q.matmul(k.transpose(-2, -1))
        attn = attn + m.get_relative_position_bias()
        if sum(shift) > 0:
            attn_mask = xw.new_zeros((pH, pW))
            h_slices = ((0, -ws[0]), (-ws[0], -shift[0]), (-shift[0], None))
            w_slices = ((0, -ws[1]), (-ws[1], -shift[1]), (-shift[1], None))
            count = 0
            for h in h_slices:
                for w in w_slices:
                    attn_mask[h[0] : h[1], w[0] : w[1]] = count
                    count += 1
            attn_mask = attn_mask.view(pH // ws[0], ws[0], pW // ws[1], ws[1])
            attn_mask = attn_mask.permute(0, 2, 1, 3).reshape(nW, ws[0] * ws[1])
            attn_mask = attn_mask.unsqueeze(1) - attn_mask.unsqueeze(2)
            attn_mask = attn_mask.masked_fill(attn_mask != 0, float(-100.0)).masked_fill(attn_mask == 0, float(0.0))
            attn = attn.view(xw.size(0) // nW, nW, self.heads, xw.size(1), xw.size(1))
            attn = attn + attn_mask.unsqueeze(1).unsqueeze(0)
            attn = attn.view(-1, self.heads, xw.size(1), xw.size(1))
        return F.softmax(attn.to(torch.float64), dim=-1)

    # ------------------------------------------------------------------ LRP interface
    def forward(self, x):
        """Output of the module and the state its backward step needs."""
        geo = self._geometry(x)
        B = x.shape[0]
        xw = self._partition(x, geo)
        A = self._attention(xw, geo)
        st = {"geo": geo, "B": B, "x_shape": x.shape}
        O, zp, zn, v = sign_part_outputs(self.v_op, xw)
        if self.v_op.bias is not None:
            v = v + self.v_op.bias
        st["v"] = (O, zp, zn, xw.shape)
        vh = self._split_heads(v).to(torch.float64)
        av = MatmulConstOp(A)
        O2, zp2, zn2, o = sign_part_outputs(av, vh)
        st["av"] = (av, O2, zp2, zn2, vh.shape)
        o = self._merge_heads(o).to(x.dtype)
        O3, zp3, zn3, y = sign_part_outputs(self.proj_op, o)
        st["proj"] = (O3, zp3, zn3, o.shape)
        if self.proj_op.bias is not None:
            y = y + self.proj_op.bias
        return self._reverse(y, geo, B), st

    def backward(self, st, R, rules, conventions):
        K = len(rules)
        geo = st["geo"]
        KB = R.shape[0]
        # 6. reverse routing: relevance at the projection output (windows)
        O3, zp3, zn3, o_shape = st["proj"]
        y_shape = (K * o_shape[0],) + tuple(o_shape[1:])
        R = linear_vjp(lambda t: self._reverse(t, geo, KB), y_shape, R)
        # 5. output projection
        R = lrp_step(self.proj_op, O3, zp3, zn3, R, rules, conventions, o_shape, bias=self.proj_op.bias)
        # 4. head merge (a permutation)
        av, O2, zp2, zn2, vh_shape = st["av"]
        O, zp, zn, xw_shape = st["v"]
        R = linear_vjp(self._merge_heads, (K * vh_shape[0],) + tuple(vh_shape[1:]), R)
        # 3. A @ V
        R = lrp_step(av, O2, zp2, zn2, R.to(torch.float64), rules, conventions, vh_shape).to(O["pp"].dtype)
        # split heads (permutation)
        R = linear_vjp(self._split_heads, (K * xw_shape[0],) + tuple(xw_shape[1:]), R)
        # 2. value projection
        R = lrp_step(self.v_op, O, zp, zn, R, rules, conventions, xw_shape, bias=self.v_op.bias)
        # 1. window partition
        return linear_vjp(lambda t: self._partition(t, geo), (KB,) + tuple(st["x_shape"][1:]), R)
