"""The engine against LXT 2.1 (Achtibat et al., AttnLRP, ICML 2024), the reference
implementation of LRP for transformers, as a test-only oracle.

LXT runs LRP as gradient x input with patched layers (``lxt/efficient``): linear layers
keep their gradient (LRP-0 with the bias as an input: ``Conventions(bias="backward")``),
LayerNorm holds only ``1/std`` constant (``normalisation="centre"``), element-wise
activations get the identity rule ``sigma(z)/(z + 1e-10)``, and attention either holds
its weights constant (CP-LRP, torchvision's ViT: ``lxt.efficient.models.vit_torch.cp_LRP``)
or divides the gradient at ``q``, ``k`` by 4 and at ``v`` by 2 (AttnLRP's uniform rule on
``q k^T`` and ``A V``, ``lxt.efficient.patches.wrap_attention_forward``).  With LXT's
``1e-10`` set to 0 the maps agree to rounding (<= 1e-10 relative in float64).  The one
remaining difference is that ``1e-10``: it moves CP-LRP maps by about 1e-7 relative
(measured below and in README).

LXT is installed without its dependencies (``make install``: ``pip install --no-deps
lxt==2.1``): its package ``__init__`` imports the patch maps of the language models,
which need ``transformers``.  :func:`lxt_vision` loads only the modules the vision path
uses (``rules``, ``patches``, ``models/vit_torch``) when ``transformers`` is absent.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import math
import sys
import types
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
torchvision = pytest.importorskip("torchvision")
if importlib.util.find_spec("lxt") is None:  # pragma: no cover - test-only dependency
    pytest.skip("lxt is not installed (make install: pip install --no-deps lxt==2.1)", allow_module_level=True)

import torch.nn as nn  # noqa: E402

from boundcheck.rules import Conventions  # noqa: E402
from empirical.engine import Explainer  # noqa: E402
from empirical.oracle import relative_error  # noqa: E402

LXT_CONVENTIONS = Conventions(bias="backward", normalisation="centre")


def lxt_vision():
    """``(rules, patches, vit_torch)`` modules of LXT's vision path."""
    if importlib.util.find_spec("transformers") is None and "lxt.efficient" not in sys.modules:
        import lxt

        root = Path(lxt.__file__).parent / "efficient"
        for name, path in (("lxt.efficient", root), ("lxt.efficient.models", root / "models")):
            pkg = types.ModuleType(name)
            pkg.__path__ = [str(path)]  # a bare package: its __init__ (language models) is not run
            sys.modules[name] = pkg
    return (importlib.import_module("lxt.efficient.rules"), importlib.import_module("lxt.efficient.patches"),
            importlib.import_module("lxt.efficient.models.vit_torch"))


@contextlib.contextmanager
def lxt_epsilon(value):
    """LXT's identity-rule stabiliser (default 1e-10) set to ``value``, restored after."""
    rules, _, _ = lxt_vision()
    fn = rules.identity_rule_implicit_fn.forward
    old = fn.__defaults__
    fn.__defaults__ = (value,)
    try:
        yield
    finally:
        fn.__defaults__ = old


@contextlib.contextmanager
def lxt_patched(patch_map):
    """LXT's ``monkey_patch`` (it replaces methods of torch.nn classes process-wide), undone after."""
    saved = []
    for cls in patch_map:
        saved.append((cls, {k: cls.__dict__[k] for k in ("forward", "original_forward") if k in cls.__dict__}))
    try:
        for cls, patch in patch_map.items():
            assert patch(cls)
        yield
    finally:
        for cls, attrs in saved:
            for k in ("forward", "original_forward"):
                if k in attrs:
                    setattr(cls, k, attrs[k])
                elif k in cls.__dict__:
                    delattr(cls, k)


def lxt_map(model, x, target):
    """LXT's relevance: ``x * d logit_target / dx`` through the patched model (float64)."""
    xg = x.detach().clone().requires_grad_(True)
    out = model(xg)
    out[:, target].sum().backward()
    return (xg * xg.grad).detach(), out.detach()


def randomised_vit(**kwargs):
    """A torchvision VisionTransformer with random head and random LayerNorm affine parameters."""
    g = torch.Generator().manual_seed(0)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        m = torchvision.models.VisionTransformer(**kwargs)
    with torch.no_grad():
        for mod in m.modules():
            if isinstance(mod, nn.LayerNorm):
                mod.weight.copy_(0.5 + torch.rand(mod.weight.shape, generator=g))
                mod.bias.copy_(0.3 * torch.randn(mod.bias.shape, generator=g))
        head = m.heads.head
        head.weight.copy_(torch.randn(head.weight.shape, generator=g) * head.in_features ** -0.5)
        head.bias.copy_(0.1 * torch.randn(head.bias.shape, generator=g))
    return m.eval().double()


def cp_lrp_pair(model, x, conventions=LXT_CONVENTIONS, epsilon=0.0):
    _, _, vit_torch = lxt_vision()
    ex = Explainer(model, conventions=conventions, dtype=torch.float64)
    ours = ex.attribute(x, "cp_lrp", init="logit", reduce="none")
    target = int(ours.target[0])
    with lxt_patched(vit_torch.cp_LRP), lxt_epsilon(epsilon):
        ref, logits = lxt_map(model, x, target)
    assert relative_error(ours.logits, logits) < 1e-12
    assert bool(torch.isfinite(ref).all()) and float(ref.abs().sum()) > 0
    return ours.maps["cp_lrp"], ref


SMALL_VIT = dict(image_size=32, patch_size=8, num_layers=2, num_heads=2, hidden_dim=32, mlp_dim=64, num_classes=10)


def test_cp_lrp_equals_lxt_on_a_small_vit():
    model = randomised_vit(**SMALL_VIT)
    x = torch.randn(1, 3, 32, 32, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    ours, ref = cp_lrp_pair(model, x)
    assert relative_error(ours, ref) <= 1e-10


def test_cp_lrp_equals_lxt_on_vit_b_16_depth_2():
    """vit_b_16's widths (768, 12 heads, 3072) and patch size at depth 2 (the full depth
    is under -m extended)."""
    model = randomised_vit(image_size=224, patch_size=16, num_layers=2, num_heads=12, hidden_dim=768,
                           mlp_dim=3072, num_classes=1000)
    x = torch.randn(1, 3, 224, 224, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    ours, ref = cp_lrp_pair(model, x)
    assert relative_error(ours, ref) <= 1e-10


@pytest.mark.extended
def test_cp_lrp_equals_lxt_on_vit_b_16():
    model = randomised_vit(image_size=224, patch_size=16, num_layers=12, num_heads=12, hidden_dim=768,
                           mlp_dim=3072, num_classes=1000)
    x = torch.randn(1, 3, 224, 224, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    ours, ref = cp_lrp_pair(model, x)
    assert relative_error(ours, ref) <= 1e-10


def test_the_remaining_differences_are_lxts_epsilon_and_the_layernorm_convention():
    """LXT's 1e-10 in the identity rule moves the map by far less than 1e-4 but by more than
    rounding; boundcheck's default LayerNorm convention (mean and std constant) differs by
    percents: the measured sizes are in README."""
    model = randomised_vit(**SMALL_VIT)
    x = torch.randn(1, 3, 32, 32, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    ours, ref = cp_lrp_pair(model, x, epsilon=1e-10)
    assert 1e-12 < relative_error(ours, ref) < 1e-4
    ours, ref = cp_lrp_pair(model, x, conventions=Conventions(bias="backward"))
    assert relative_error(ours, ref) > 1e-3


# ----------------------------------------------------------------------------- AttnLRP

class Block(nn.Module):
    """A pre-norm transformer classifier built from the operations LXT patches: LayerNorm,
    GELU and an eager attention function (``softmax(q k^T * scale) @ v``), which LXT's
    ``wrap_attention_forward`` wraps; ``lxt=True`` runs LXT's patched forwards."""

    def __init__(self, dim=16, heads=2, classes=5, lxt=False):
        super().__init__()
        self.heads, self.lxt = heads, lxt
        self.embed = nn.Linear(3, dim)
        self.ln1, self.ln2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.fc1, self.act, self.fc2 = nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim)
        self.head = nn.Linear(dim, classes)

    @staticmethod
    def eager_attention(module, q, k, v, scale):
        return torch.softmax((q @ k.transpose(-2, -1)) * scale, dim=-1) @ v

    def forward(self, x):
        t = self.embed(x.flatten(2).transpose(1, 2))  # (B, tokens, dim)
        B, L, D = t.shape
        h = self.ln1(t)
        q, k, v = self.qkv(h).reshape(B, L, 3, self.heads, D // self.heads).permute(2, 0, 3, 1, 4).unbind(0)
        attention = self.eager_attention
        if self.lxt:
            _, patches, _ = lxt_vision()
            attention = patches.wrap_attention_forward(self.eager_attention)
        o = attention(self, q, k, v, 1.0 / math.sqrt(D // self.heads))
        t = t + self.proj(o.transpose(1, 2).reshape(B, L, D))
        t = t + self.fc2(self.act(self.fc1(self.ln2(t))))
        return self.head(t.mean(1))


def test_attnlrp_equals_lxt_on_a_transformer_block():
    _, patches, _ = lxt_vision()
    torch.manual_seed(0)
    model = Block().double().eval()
    with torch.no_grad():
        for ln in (model.ln1, model.ln2):
            ln.weight.uniform_(0.5, 1.5)
            ln.bias.normal_(0.0, 0.3)
    x = torch.randn(1, 3, 4, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    ex = Explainer(model, conventions=LXT_CONVENTIONS, dtype=torch.float64)
    ours = ex.attribute(x, ["attnlrp", "cp_lrp"], init="logit", reduce="none")
    target = int(ours.target[0])
    lxt_model = Block(lxt=True).double().eval()
    lxt_model.load_state_dict(model.state_dict())
    import functools

    patch_map = {nn.LayerNorm: functools.partial(patches.patch_method, patches.layer_norm_forward),
                 nn.GELU: functools.partial(patches.patch_method, patches.non_linear_forward, keep_original=True)}
    with lxt_patched(patch_map), lxt_epsilon(0.0):
        ref, logits = lxt_map(lxt_model, x, target)
    assert relative_error(ours.logits, logits) < 1e-12
    assert relative_error(ours.maps["attnlrp"], ref) <= 1e-10
    # AttnLRP and CP-LRP are different methods: relevance through q and k or not
    assert relative_error(ours.maps["cp_lrp"], ref) > 1e-3


def test_attnlrp_equals_lxts_rules_on_torchvisions_vit():
    """LXT ships no AttnLRP patch for torchvision's ViT (only CP-LRP); its AttnLRP attention
    wrapper (``wrap_attention_forward``: ``divide_gradient`` at q, k by 4 and at v by 2) is
    applied here to ``nn.MultiheadAttention``'s packed projections, with LXT's LayerNorm and
    GELU patches."""
    import functools

    import torch.nn.functional as F

    rules, patches, _ = lxt_vision()

    def attnlrp_mha_forward(self, query, key, value, need_weights=False, **kwargs):
        B, L, E = query.shape
        H = self.num_heads
        d = E // H
        wq, wk, wv = self.in_proj_weight.chunk(3)
        bq, bk, bv = self.in_proj_bias.chunk(3)

        def heads(t):
            return t.reshape(B, L, H, d).transpose(1, 2)
        q = rules.divide_gradient(heads(F.linear(query, wq, bq)), 4)
        k = rules.divide_gradient(heads(F.linear(key, wk, bk)), 4)
        v = rules.divide_gradient(heads(F.linear(value, wv, bv)), 2)
        o = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(d), dim=-1) @ v
        return F.linear(o.transpose(1, 2).reshape(B, L, E), self.out_proj.weight, self.out_proj.bias), None

    model = randomised_vit(**SMALL_VIT)
    x = torch.randn(1, 3, 32, 32, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    ours = Explainer(model, conventions=LXT_CONVENTIONS, dtype=torch.float64).attribute(
        x, "attnlrp", init="logit", reduce="none")
    patch_map = {nn.LayerNorm: functools.partial(patches.patch_method, patches.layer_norm_forward),
                 nn.GELU: functools.partial(patches.patch_method, patches.non_linear_forward, keep_original=True),
                 nn.MultiheadAttention: functools.partial(patches.patch_method, attnlrp_mha_forward)}
    with lxt_patched(patch_map), lxt_epsilon(0.0):
        ref, logits = lxt_map(model, x, int(ours.target[0]))
    assert relative_error(ours.logits, logits) < 1e-12
    assert relative_error(ours.maps["attnlrp"], ref) <= 1e-10
