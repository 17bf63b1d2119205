"""The normalisation conventions ``Conventions(normalisation="affine" | "centre" | "pass")``.

Layer level: one backward step through a LayerNorm / LayerNorm2d / GroupNorm /
RMSNorm with its statistics held as the convention says equals
``boundcheck.rules.transition_matrix(W, z, rule, conventions, b) @ R_out`` with the
explicit matrix ``W`` of that convention (float64):

* ``"affine"``: ``W = diag(s)``, ``s = w / sigma``, bias ``b - mu s``;
* ``"centre"``: ``W = diag(s) (I - 1 1^T / n)`` per normalised group (the centring
  is part of the map), bias ``b``;
* RMSNorm: ``W = diag(w / rms)`` under both, no bias.

Network level: the LRP-0 identity (``empirical.oracle``, under the same
convention) on small ViT-, Swin-V2- and ConvNeXt-like networks and an RMSNorm
network, and on torchvision's ``vit_b_16`` / ``swin_v2_t``.
"""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
import torch.nn as nn  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from boundcheck.errors import InputError  # noqa: E402
from boundcheck.rules import NORMALISATIONS, Conventions, parse_rule, transition_matrix  # noqa: E402
from empirical.engine import Explainer  # noqa: E402
from empirical.oracle import (  # noqa: E402
    _redraw_zero_linears,
    compare_with_engine,
    lrp0_reference,
    randomise_batchnorm_stats,
    torchvision_classifier,
)

pytestmark = pytest.mark.torch

RULES = ["lrp_beta_0", "lrp_beta_1", "lrp_beta_0.5", "lrp_gamma_0.25", "lrp_gamma_100", "lrp_zero",
         "lrp_epsilon_0.01", "adaptive_beta"]
CONVENTIONS = {
    "default": {},
    "bias_backward": {"bias": "backward"},
    "stabiliser": {"stabiliser": 1e-3},
    "bias_stab": {"bias": "backward", "stabiliser": 1e-2},
}


# ----------------------------------------------------------------------------- explicit matrices
def _centre_matrix(s, group):
    """``W_ij = s_i (delta_ij - [g_i = g_j] / n_g)`` for flattened entries with group ids ``group``."""
    s, group = np.asarray(s, dtype=np.float64), np.asarray(group)
    same = group[:, None] == group[None, :]
    n = same.sum(1, keepdims=True)
    return s[:, None] * (np.eye(len(s)) - same / n)


def _stats(v, axes):
    mu = v.mean(axes, keepdims=True)
    return mu, v.var(axes, keepdims=True)


def _check(model, x, conv_name, how, matrix_of, seed):
    """Every rule of RULES at once against ``transition_matrix(W, z, rule, conventions, b) @ q``;
    ``matrix_of(x_i) -> (W, b)``."""
    conventions = Conventions(normalisation=how, **CONVENTIONS[conv_name])
    e = Explainer(model, conventions=conventions, dtype=torch.float64)
    with torch.no_grad():
        R = model(x).reshape(x.shape[0], -1).shape[1]
    g = np.random.default_rng(seed)
    q = g.random((x.shape[0], R)) + 0.05
    q /= q.sum(1, keepdims=True)
    att = e.attribute(x, RULES, q=torch.tensor(q), reduce="none")
    for i in range(x.shape[0]):
        W, b = matrix_of(x[i].numpy())
        for name in RULES:
            want = transition_matrix(W, x[i].reshape(-1).numpy(), parse_rule(name), conventions, b) @ q[i]
            got = att.maps[name][i].reshape(-1).numpy()
            np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-11, err_msg=f"{name} {conv_name} {how}")


def _random_affine(mod, seed):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        mod.weight.copy_(torch.randn(mod.weight.shape, generator=g, dtype=torch.float64))  # both signs
        if getattr(mod, "bias", None) is not None:
            mod.bias.copy_(torch.randn(mod.bias.shape, generator=g, dtype=torch.float64))
    return mod


def _input(shape, signs, seed):
    x = torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    return x.abs() + 0.01 if signs == "nonneg" else x


@pytest.mark.parametrize("how", ["affine", "centre"])
@pytest.mark.parametrize("conv_name", sorted(CONVENTIONS))
@pytest.mark.parametrize("signs", ["both", "nonneg"])
def test_layernorm_step_equals_transition_matrix(how, conv_name, signs):
    L, n = 3, 5
    ln = _random_affine(nn.LayerNorm(n).double(), 1)
    w, b = ln.weight.detach().numpy(), ln.bias.detach().numpy()

    def matrix_of(xi):
        mu, var = _stats(xi, -1)
        s = (w / np.sqrt(var + ln.eps)).reshape(-1)
        if how == "centre":
            return _centre_matrix(s, np.repeat(np.arange(L), n)), np.tile(b, L)
        return np.diag(s), (b - mu * w / np.sqrt(var + ln.eps)).reshape(-1)

    _check(nn.Sequential(ln, nn.Flatten()), _input((2, L, n), signs, 2), conv_name, how, matrix_of, 3)


@pytest.mark.parametrize("how", ["affine", "centre"])
@pytest.mark.parametrize("conv_name", ["default", "bias_backward"])
def test_groupnorm_step_equals_transition_matrix(how, conv_name):
    C, G, H, Wd = 4, 2, 2, 3
    gn = _random_affine(nn.GroupNorm(G, C).double(), 4)
    w, b = gn.weight.detach().numpy(), gn.bias.detach().numpy()

    def matrix_of(xi):
        xg = xi.reshape(G, -1)
        mu, var = _stats(xg, -1)
        inv = np.repeat(1 / np.sqrt(var + gn.eps), C // G * H * Wd)  # per entry (C-major order)
        s = inv * np.repeat(w, H * Wd)
        if how == "centre":
            return _centre_matrix(s, np.repeat(np.arange(G), C // G * H * Wd)), np.repeat(b, H * Wd)
        return np.diag(s), np.repeat(b, H * Wd) - np.repeat(mu.reshape(-1), C // G * H * Wd) * s

    _check(nn.Sequential(gn, nn.Flatten()), _input((2, C, H, Wd), "both", 5), conv_name, how, matrix_of, 6)


@pytest.mark.parametrize("conv_name", ["default", "bias_backward"])
def test_convnext_layernorm2d_centre_step_equals_transition_matrix(conv_name):
    """torchvision ConvNeXt's LayerNorm2d: permute, layer_norm over the channels, permute back."""
    from torchvision.models.convnext import LayerNorm2d

    C, H, Wd = 3, 2, 2
    ln = _random_affine(LayerNorm2d(C, eps=1e-6).double(), 7)
    w, b = ln.weight.detach().numpy(), ln.bias.detach().numpy()

    def matrix_of(xi):
        mu, var = _stats(xi, 0)  # per pixel over the channels
        s = (w[:, None, None] / np.sqrt(var + ln.eps)).reshape(-1)
        pixel = np.tile(np.arange(H * Wd), C)
        return _centre_matrix(s, pixel), np.repeat(b, H * Wd)

    _check(nn.Sequential(ln, nn.Flatten()), _input((1, C, H, Wd), "both", 8), conv_name, "centre", matrix_of, 9)


class _FunctionalRMS(nn.Module):
    def __init__(self, n):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(n, dtype=torch.float64))

    def forward(self, x):
        return F.rms_norm(x, (x.shape[-1],), self.weight, 1e-6)


@pytest.mark.parametrize("how", ["affine", "centre"])
@pytest.mark.parametrize("form", ["module", "functional"])
def test_rmsnorm_step_is_the_scale_only(how, form):
    n = 5
    torch.manual_seed(10)
    mod = _random_affine(nn.RMSNorm(n, eps=1e-6).double(), 11) if form == "module" else _FunctionalRMS(n)
    w = mod.weight.detach().numpy()

    def matrix_of(xi):
        rms = np.sqrt((xi * xi).mean(-1, keepdims=True) + 1e-6)
        return np.diag((w / rms).reshape(-1)), None

    model = nn.Sequential(mod, nn.Flatten())
    ex = Explainer(model, conventions=Conventions(normalisation=how), dtype=torch.float64)
    assert "diag" in set(ex._kinds.values())
    _check(model, _input((2, 2, n), "both", 12), "default", how, matrix_of, 13)


def test_conventions_name_the_node_kind():
    model = nn.Sequential(nn.Linear(4, 6), nn.LayerNorm(6), nn.GELU(), nn.Linear(6, 3))
    kinds = {how: set(Explainer(model, conventions=Conventions(normalisation=how))._kinds.values())
             for how in NORMALISATIONS}
    assert "diag" in kinds["affine"] and "centre" not in kinds["affine"]
    assert "centre" in kinds["centre"] and "diag" not in kinds["centre"]
    assert not {"diag", "centre"} & kinds["pass"]
    with pytest.raises(InputError, match="'affine', 'centre' or 'pass'"):
        Conventions(normalisation="center")
    with pytest.raises(InputError, match="normalisation"):
        lrp0_reference(model, torch.randn(1, 4), normalisation="center")


# ----------------------------------------------------------------------------- the LRP-0 identity
def _small_vit():
    from torchvision.models.vision_transformer import VisionTransformer

    return VisionTransformer(image_size=32, patch_size=8, num_layers=2, num_heads=2, hidden_dim=16, mlp_dim=32,
                             num_classes=10)


def _small_swin_v2():
    from torchvision.models.swin_transformer import PatchMergingV2, SwinTransformer, SwinTransformerBlockV2

    return SwinTransformer(patch_size=[4, 4], embed_dim=8, depths=[2, 2], num_heads=[2, 2], window_size=[4, 4],
                           stochastic_depth_prob=0.0, num_classes=10, block=SwinTransformerBlockV2,
                           downsample_layer=PatchMergingV2)


def _small_convnext():
    from torchvision.models.convnext import CNBlockConfig, ConvNeXt

    return ConvNeXt([CNBlockConfig(8, 16, 1), CNBlockConfig(16, None, 1)], num_classes=10)


class _RMSNet(nn.Module):
    """RMSNorm as a module and as ``F.rms_norm``, a GroupNorm on a 3-d tensor."""

    def __init__(self):
        super().__init__()
        self.a, self.n, self.g, self.b = nn.Linear(6, 8), nn.RMSNorm(8), nn.GroupNorm(2, 8), nn.Linear(8, 4)

    def forward(self, x):
        h = F.gelu(self.n(self.a(x)))
        h = self.g(h.unsqueeze(-1)).squeeze(-1)
        return self.b(F.rms_norm(h, (8,)))


SMALL = {"vit": (_small_vit, (1, 3, 32, 32)), "swin_v2": (_small_swin_v2, (1, 3, 32, 32)),
         "convnext": (_small_convnext, (1, 3, 32, 32)), "rmsnorm": (_RMSNet, (2, 6))}


@pytest.mark.parametrize("how", NORMALISATIONS)
@pytest.mark.parametrize("net", sorted(SMALL))
def test_lrp0_identity_holds_under_every_convention(net, how):
    """LRP-0 (bias backward, logit start) = x * modified gradient of the same convention (float64).

    ``"pass"`` holds only where no normalisation input is exactly 0 (relevance copied onto a zero
    input cannot be x * anything): these networks have GELU, not ReLU, before their norms."""
    build, shape = SMALL[net]
    torch.manual_seed(0)
    model = build().eval()
    _redraw_zero_linears(model)
    model = randomise_batchnorm_stats(model, torch.Generator().manual_seed(1))
    x = torch.randn(*shape, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    r = compare_with_engine(model, x, normalisation=how)
    assert r["lrp0_reference_norm"] > 0
    assert r["lrp0_oracle_rel_error"] <= 1e-10, r
    assert r["gradient_rel_error"] <= 1e-10, r


def test_the_conventions_give_different_maps():
    """The identity test above could not tell the conventions apart if they agreed: they do not."""
    torch.manual_seed(0)
    model = randomise_batchnorm_stats(_small_vit().eval(), torch.Generator().manual_seed(1))
    _redraw_zero_linears(model)
    x = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    maps = {how: lrp0_reference(model, x, normalisation=how) for how in NORMALISATIONS}
    for a, b in (("affine", "centre"), ("affine", "pass"), ("centre", "pass")):
        assert float((maps[a] - maps[b]).norm() / maps[b].norm()) > 1e-3, (a, b)


@pytest.mark.parametrize("name", [pytest.param("vit_b_16", marks=pytest.mark.extended), "swin_v2_t"])
def test_lrp0_identity_centre_on_torchvision_transformers(name):
    """torchvision ``vit_b_16`` / ``swin_v2_t``, random weights and norm-layer parameters, one image at the
    smallest input each takes (``torchvision_classifier``), float64, ``normalisation="centre"``
    (vit_b_16: 35 s on the 2-core machine, extended; swin_v2_t: 18 s)."""
    model, side = torchvision_classifier(name)
    model = randomise_batchnorm_stats(model, torch.Generator().manual_seed(1))
    x = torch.randn(1, 3, side, side, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    r = compare_with_engine(model, x, normalisation="centre")
    assert r["lrp0_reference_norm"] > 0
    assert r["lrp0_oracle_rel_error"] <= 1e-10, r
