"""timm networks: every operation spelling the engine learnt for them, against the LRP-0 oracle.

A fast slice of the timm coverage sweep (``benchmarks/bench_coverage.py --zoo
timm``): timm's own tiny test models (random weights, float64, statistics
randomised) and a small network built from timm's layers for the blockers those
do not reach (a shape-dependent ``forward``, an ECA gate, PoolFormer's
``pool(x) - x``, SwiGLU's two-branch product).  Exactness is the LRP-0
identity of :mod:`empirical.oracle`, which shares no code with the engine.
"""

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from empirical.engine import Explainer, UnsupportedModuleError
from empirical.oracle import compare_with_engine, randomise_batchnorm_stats
from numerics import finite_differences

timm = pytest.importorskip("timm")

pytestmark = pytest.mark.torch

TOL = 1e-8


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _timm_model_sized(name, img_size=None):
    return _timm_model(name, **({} if img_size is None else {"img_size": img_size}))


def _timm_model(name, **kw):
    torch.manual_seed(0)
    model = timm.create_model(name, pretrained=False, **kw)
    randomise_batchnorm_stats(model, generator=torch.Generator().manual_seed(1))
    for mod in model.modules():  # zero-initialised heads would make every map 0 (a trivially exact comparison)
        if isinstance(mod, nn.Linear) and not bool(mod.weight.abs().sum()):
            nn.init.normal_(mod.weight, std=0.05)
    return model


# model -> the blocker of the baseline engine it covers
TIMM_CASES = {
    "test_efficientnet": "functional F.batch_norm (BatchNormAct2d)",
    "test_vit": "fused scaled_dot_product_attention, default forward() arguments",
    "test_vit_relpos": "attention with a relative-position bias folded from its table",
    "test_nfnet": "weight-standardised convolution (weight computed in forward)",
    "test_mambaout": "gated convolution: a product of two input-dependent branches",
    "test_coatnet": "functional batch_norm, relative-position attention, F.linear",
}


@pytest.mark.parametrize("name", sorted(TIMM_CASES))
def test_timm_test_model_lrp0_equals_the_oracle(name):
    r = compare_with_engine(_timm_model(name), torch.randn(1, 3, 160, 160, generator=torch.Generator().manual_seed(2)))
    assert r["lrp0_reference_norm"] > 0
    assert r["lrp0_oracle_rel_error"] <= TOL, (name, TIMM_CASES[name], r)
    assert r["gradient_rel_error"] <= 1e-10, (name, r)


class TimmBlocks(nn.Module):
    """A small network from timm's layers: TF-"same" padding computed from the input
    shape (``Conv2dSame``), ECA's ``x * sigmoid(conv1d(...)).view(...).expand_as(x)``,
    PoolFormer's token mixer ``pool(x) - x``, a SwiGLU MLP and a GRN-style product
    with a held norm."""

    def __init__(self):
        super().__init__()
        from timm.layers import EcaModule, SwiGLU, create_conv2d

        self.conv = create_conv2d(3, 8, 3, stride=2, padding="same")
        self.eca = EcaModule(8)
        self.pool = nn.AvgPool2d(3, 1, 1, count_include_pad=False)
        self.mlp = SwiGLU(8, 16)
        self.head = nn.Linear(8, 5)

    def forward(self, x):
        x = F.gelu(self.conv(x))
        x = self.eca(x)
        x = x + (self.pool(x) - x)
        t = x.flatten(2).transpose(1, 2)
        t = t + self.mlp(t)
        n = torch.norm(t, p=2, dim=1, keepdim=True)
        t = t + t * (n / (n.mean(-1, keepdim=True) + 1e-6))
        return self.head(t.mean(1))


@pytest.mark.parametrize("hw", [17, 24])
def test_timm_blocks_lrp0_equals_the_oracle_at_two_input_sizes(hw):
    torch.manual_seed(0)
    model = TimmBlocks().double()
    r = compare_with_engine(model, torch.randn(2, 3, hw, hw, dtype=torch.float64))
    assert r["lrp0_reference_norm"] > 0
    assert r["lrp0_oracle_rel_error"] <= TOL, r


def test_a_shape_dependent_forward_is_traced_again_for_each_input_shape():
    torch.manual_seed(0)
    ex = Explainer(TimmBlocks(), dtype=torch.float64, input_shape=(3, 17, 17))
    assert ex.gm.specialised_shape == (3, 17, 17)  # Conv2dSame asks Python about the padding
    a = ex.attribute(torch.randn(1, 3, 17, 17), ["lrp_zero"]).maps["lrp_zero"]
    b = ex.attribute(torch.randn(1, 3, 24, 24), ["lrp_zero"]).maps["lrp_zero"]
    assert ex.gm.specialised_shape == (3, 24, 24) and a.shape[-1] == 17 and b.shape[-1] == 24
    assert set(ex._graphs) == {(3, 17, 17), (3, 24, 24)}


def test_the_engine_does_not_modify_the_callers_timm_model():
    model = _timm_model("test_efficientnet")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    Explainer(model, dtype=torch.float64).attribute(torch.randn(1, 3, 64, 64), ["lrp_beta_1", "lrp_zero"])
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert all(type(m) is not nn.Module for m in model.modules())  # nothing lifted into the caller's model


def test_lstm_is_refused_with_its_module_path():
    class Seq(nn.Module):
        def __init__(self):
            super().__init__()
            self.proj = nn.Linear(4, 4)
            self.rnn = nn.LSTM(4, 4, batch_first=True)

        def forward(self, x):
            return self.rnn(self.proj(x))[0][:, -1]

    with pytest.raises(UnsupportedModuleError, match="'rnn' of type LSTM") as exc:
        Explainer(Seq(), input_shape=(3, 4))
    assert "\n" not in str(exc.value)


@pytest.mark.parametrize("build", ["blocks", "test_vit", "test_mambaout"])
def test_fast_path_equals_explicit_path_on_the_new_operations(build):
    """The fast path (one modified gradient pass) follows the same node plan: SDPA, products
    (uniform rule), held statistics, differences, sums, folded constants."""
    from boundcheck.rules import Conventions

    torch.manual_seed(0)
    model = TimmBlocks().double() if build == "blocks" else _timm_model(build)
    x = torch.randn(1, 3, 24 if build == "blocks" else 160, 24 if build == "blocks" else 160, dtype=torch.float64)
    ex = Explainer(model, conventions=Conventions(bias="backward"), dtype=torch.float64, input_shape=tuple(x.shape[1:]))
    from empirical.engine import parse_method

    assert ex.fast_path_reason([parse_method("lrp_epsilon_0.01")[1]]) is None
    for method in ("lrp_zero", "lrp_epsilon_0.01"):
        fast = ex.attribute(x, [method], init="logit", reduce="none", path="fast").maps[method]
        slow = ex.attribute(x, [method], init="logit", reduce="none", path="explicit").maps[method]
        assert float((fast - slow).norm() / slow.norm()) <= 1e-10, (build, method)


def test_a_model_that_mixes_the_samples_of_a_batch_is_refused_at_build():
    class BatchMix(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(4, 3)

        def forward(self, x):
            q = x.flatten(1)
            attn = (q @ q.transpose(-1, -2)).softmax(-1)  # (B, B): attends over the batch
            return self.fc(attn @ q)

    with pytest.raises(UnsupportedModuleError, match="mixes the samples of a batch") as exc:
        Explainer(BatchMix(), input_shape=(4,))
    assert "\n" not in str(exc.value)


def test_talking_heads_attention_mixed_after_the_softmax_equals_the_oracle():
    """CaiT's talking heads: attention weights mixed across heads by a linear map after the
    softmax are held constant with both signs (``ops.HeldMatmulOp``)."""
    from timm.models.cait import TalkingHeadAttn

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = nn.Linear(3, 16)
            self.attn = TalkingHeadAttn(16, num_heads=4)
            self.head = nn.Linear(16, 5)

        def forward(self, x):
            t = self.embed(x.flatten(2).transpose(1, 2))
            return self.head((t + self.attn(t)).mean(1))

    torch.manual_seed(0)
    r = compare_with_engine(Net().double(), torch.randn(2, 3, 4, 4, dtype=torch.float64))
    assert r["lrp0_reference_norm"] > 0 and r["lrp0_oracle_rel_error"] <= TOL, r
    ex = Explainer(Net(), dtype=torch.float64, input_shape=(3, 4, 4))
    assert "attnsum" in {p.kind for p in ex.plan.plans.values()}
    maps = ex.attribute(torch.randn(2, 3, 4, 4), ["lrp_beta_1", "lrp_gamma_100"]).maps
    assert all(bool(torch.isfinite(m).all()) for m in maps.values())


# small versions of the two timm families whose only blockers were a transposed convolution
# (LowFormer's attention upsampling, depthwise) and bicubic resampling (CrossViT's second branch)
LINEAR_MAP_CASES = {
    "crossvit_tiny_240": (dict(img_size=48, img_scale=(1.0, 40 / 48), patch_size=[6, 8], embed_dim=[16, 32],
                               depth=[[1, 1, 0]], num_heads=[2, 2], mlp_ratio=[2, 2, 1], num_classes=10),
                          48, "resample"),
    "lowformer_b0": (dict(width_list=[8, 8, 16, 16, 32], depth_list=[0, 1, 1, 1, 1], head_widths=(32, 32),
                          num_classes=10), 64, "conv"),
}


@pytest.mark.parametrize("name", sorted(LINEAR_MAP_CASES))
def test_transposed_convolution_and_bicubic_models_equal_the_oracle_on_both_paths(name):
    """LRP-0 == the oracle, gradient == autograd, fast path == explicit path (LRP-0, CP-LRP,
    LRP-epsilon; <= 1e-10) on small LowFormer / CrossViT."""
    from boundcheck.rules import Conventions
    from empirical.oracle import relative_error

    kw, side, kind = LINEAR_MAP_CASES[name]
    model = _timm_model(name, **kw)
    x = torch.randn(1, 3, side, side, generator=torch.Generator().manual_seed(2))
    r = compare_with_engine(model, x)
    assert r["lrp0_reference_norm"] > 0
    assert r["lrp0_oracle_rel_error"] <= TOL, (name, r)
    assert r["gradient_rel_error"] <= 1e-10, (name, r)
    ex = Explainer(model, conventions=Conventions(bias="backward"), dtype=torch.float64)
    notes = [p.note for p in ex.plan.plans.values() if p.kind == kind]
    assert any("bicubic" in n or "transposed" in n for n in notes), notes
    methods = ["lrp_zero", "cp_lrp", "lrp_epsilon_0.1"]
    xd = x.double()
    fast = ex.attribute(xd, methods, reduce="none", path="fast", init="logit")
    expl = ex.attribute(xd, methods, reduce="none", path="explicit", init="logit")
    for m in methods:
        assert relative_error(fast.maps[m], expl.maps[m]) <= 1e-10, m


class StemThenTokens(nn.Module):
    """LeViT's / XCiT's / EfficientFormer's stem pattern with a BatchNorm the engine cannot
    fold (its input is a residual sum, a transpose follows): ``bn(h).flatten(2).transpose(1, 2)``
    then a LayerNorm, so autograd sends a channels-last gradient with batch stride ``C`` back
    into the BatchNorm, where torch's CPU backward kernel goes wrong at a batch of one."""

    def __init__(self, C=6, K=5):
        super().__init__()
        self.conv, self.conv2 = nn.Conv2d(3, C, 3, padding=1), nn.Conv2d(C, C, 3, padding=1)
        self.bn, self.ln, self.fc, self.head = nn.BatchNorm2d(C), nn.LayerNorm(C), nn.Linear(C, C), nn.Linear(C, K)

    def forward(self, x):
        h = self.conv(x)
        h = h + self.conv2(torch.relu(h))
        t = self.bn(h).flatten(2).transpose(1, 2)
        return self.head(torch.relu(self.fc(self.ln(t))).mean(1))


@pytest.mark.parametrize("channels_last", [False, True])
def test_gradient_through_an_unfolded_batch_norm_before_a_transpose_equals_finite_differences(channels_last):
    """The canonical copy computes every unfolded eval-mode BatchNorm elementwise
    (``graph._batchnorm_elementwise``); through torch's kernel the NCHW engine's gradient
    was off by a relative 1.2 here.  The oracle agrees (LRP-0 and gradient)."""
    torch.manual_seed(0)
    model = randomise_batchnorm_stats(StemThenTokens().double().eval(), torch.Generator().manual_seed(1))
    x = torch.randn(1, 3, 5, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    t = int(model(x).argmax())
    fd = finite_differences(lambda z: model(z)[0, t], x)
    ex = Explainer(model, dtype=torch.float64, input_shape=(3, 5, 5), channels_last=channels_last)
    assert "diag" in {p.kind for p in ex.plan.plans.values()}  # the BatchNorm is not folded
    g = ex.attribute(x, ["gradient"], target=t, init="q", reduce="none")
    torch.testing.assert_close(g.logits, model(x).detach(), rtol=1e-12, atol=1e-14)
    assert float((g.maps["gradient"] - fd).norm() / fd.norm()) <= 1e-6
    r = compare_with_engine(model, x)
    assert r["lrp0_reference_norm"] > 0 and r["lrp0_oracle_rel_error"] <= TOL, r
    assert r["gradient_rel_error"] <= 1e-10, r


class OptionalMaskTokens(nn.Module):
    """Hiera's and NaFlexViT's ``forward(x, mask=None)``: ``if mask is not None:`` must see
    ``None`` (the default) while tracing, not a proxy; the token grid's size is asked of the
    input's shape (``int(N ** 0.5)``)."""

    def __init__(self):
        super().__init__()
        self.embed = nn.Conv2d(3, 8, 2, stride=2)
        self.head = nn.Linear(8, 5)

    def forward(self, x, mask=None):
        t = self.embed(x).flatten(2).transpose(1, 2)
        if mask is not None:
            t = t * mask.view(t.shape[0], -1, 1)
        side = int(t.shape[1] ** 0.5)
        t = t.reshape(t.shape[0], side, side, -1).mean(2)
        return self.head(F.gelu(t).mean(1))


def test_a_none_default_argument_is_none_while_tracing():
    torch.manual_seed(0)
    r = compare_with_engine(OptionalMaskTokens().double(), torch.randn(2, 3, 8, 8, dtype=torch.float64))
    assert r["lrp0_reference_norm"] > 0 and r["lrp0_oracle_rel_error"] <= TOL, r
    assert r["gradient_rel_error"] <= 1e-10, r


def test_swiftformer_additive_attention_equals_the_oracle():
    """SwiftFormer's efficient additive attention: queries, keys and the token scores are
    ``F.normalize``d (norms held, ``x / ||x||``: the engine's ``diag``, the oracle's replacement),
    the global query ``sum_n a_n q_n`` and ``G * k`` are products of two input-dependent factors
    (half of the relevance to each).  The oracle once kept the derivative of the norm inside
    ``F.normalize`` (1.5e-2 on swiftformer_xs)."""
    from timm.models.swiftformer import EfficientAdditiveAttention

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = nn.Conv2d(3, 8, 1)
            self.attn = EfficientAdditiveAttention(in_dims=8, token_dim=8)
            self.head = nn.Linear(8, 5)

        def forward(self, x):
            t = self.embed(x)
            return self.head((t + self.attn(t)).mean((2, 3)))

    torch.manual_seed(0)
    r = compare_with_engine(Net().double(), torch.randn(2, 3, 4, 4, dtype=torch.float64))
    assert r["lrp0_reference_norm"] > 0 and r["lrp0_oracle_rel_error"] <= TOL, r
    assert r["gradient_rel_error"] <= 1e-10, r


class GridPositions(nn.Module):
    """Gemma4-ViT's position ids: ``torch.arange`` of the patch grid's size, a grid expanded over
    the batch, one-hot rows of a table, and a validity mask ``torch.ones(B, N)``; torch's
    argument parser refuses a proxy among the sizes of a factory function."""

    def __init__(self, p=2, d=8, n=8):
        super().__init__()
        self.p = p
        self.proj = nn.Linear(3 * p * p, d)
        self.table = nn.Parameter(torch.randn(2, n, d))
        self.head = nn.Linear(d, 5)

    def forward(self, x):
        B, C, H, W = x.shape
        t = x.reshape(B, C, H // self.p, self.p, W // self.p, self.p).permute(0, 2, 4, 1, 3, 5)
        t = self.proj(t.reshape(B, (H // self.p) * (W // self.p), -1))
        gy, gx = torch.meshgrid(torch.arange(H // self.p), torch.arange(W // self.p), indexing="ij")
        coord = torch.stack([gy.flatten(), gx.flatten()], -1).unsqueeze(0).expand(B, -1, -1)
        onehot = F.one_hot(coord, self.table.shape[1]).permute(0, 2, 1, 3).to(self.table)
        t = t + (onehot @ self.table).sum(1)
        valid = torch.ones(B, t.shape[1], dtype=torch.bool).unsqueeze(-1)
        t = t * valid.to(t)  # a constant mask: ``.to(t)`` borrows t's dtype only
        return self.head(F.gelu(t).mean(1))


@pytest.mark.parametrize("hw", [8, 12])
def test_factory_functions_with_sizes_from_the_input_shape(hw):
    torch.manual_seed(0)
    r = compare_with_engine(GridPositions().double(), torch.randn(2, 3, hw, hw, dtype=torch.float64))
    assert r["lrp0_reference_norm"] > 0 and r["lrp0_oracle_rel_error"] <= TOL, r
    assert r["gradient_rel_error"] <= 1e-10, r


class InPlaceEmbedding(nn.Module):
    """NaFlexViT adds its position embedding in a helper, in place (``x.add_(pos)``, ``x += pos``):
    the caller's ``x`` must read the sum (torch.fx alone drops the update as dead code)."""

    def __init__(self):
        super().__init__()
        self.embed = nn.Linear(3, 8)
        self.pos = nn.Parameter(torch.randn(16, 8))
        self.scale = nn.Parameter(torch.randn(8))
        self.head = nn.Linear(8, 5)

    def _add_pos(self, t):
        t.add_(self.pos)

    def _scale(self, t):
        t *= self.scale

    def forward(self, x):
        t = self.embed(x.flatten(2).transpose(1, 2))
        self._add_pos(t)
        self._scale(t)
        return self.head(F.gelu(t).mean(1))


def test_in_place_updates_are_recorded_out_of_place():
    torch.manual_seed(0)
    r = compare_with_engine(InPlaceEmbedding().double(), torch.randn(2, 3, 4, 4, dtype=torch.float64))
    assert r["lrp0_reference_norm"] > 0 and r["lrp0_oracle_rel_error"] <= TOL, r
    assert r["logits_rel_error"] <= 1e-12 and r["gradient_rel_error"] <= 1e-10, r


def test_an_in_place_update_through_a_view_is_refused():
    class ViewUpdate(nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = nn.Linear(3, 8)
            self.head = nn.Linear(8, 5)

        def forward(self, x):
            t = self.embed(x.flatten(2).transpose(1, 2))
            t[:, 1:].mul_(2.0)  # seen through t: the graph cannot follow it
            return self.head(t.mean(1))

    with pytest.raises(UnsupportedModuleError, match="does not reproduce the model's output") as exc:
        Explainer(ViewUpdate(), dtype=torch.float64, input_shape=(3, 4, 4))
    assert "\n" not in str(exc.value)


def test_clamp_with_constant_bounds_is_an_activation():
    """Gemma4-ViT's clippable linear layers clamp their input and output between buffers:
    ``clamp(z, lo, hi)`` with constant bounds is a hard-tanh (relevance passes; the oracle's
    secant ``clamp(z)/z``)."""
    from timm.models.gemma4_vit import Gemma4ClippableLinear

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc1 = Gemma4ClippableLinear(3, 16, use_clipped=True)
            self.fc2 = Gemma4ClippableLinear(16, 8, use_clipped=True)
            self.head = nn.Linear(8, 5)
            for m, (lo, hi) in ((self.fc1, (-1.0, 1.5)), (self.fc2, (-0.3, 0.2))):
                m.input_min.fill_(lo)
                m.input_max.fill_(hi)
                m.output_min.fill_(lo / 2)
                m.output_max.fill_(hi / 2)

        def forward(self, x):
            t = self.fc2(self.fc1(x.flatten(2).transpose(1, 2)).clamp(min=-0.5))
            return self.head(torch.clip(t, -0.1, 0.1).mean(1))

    torch.manual_seed(0)
    model = Net().double()
    x = torch.randn(2, 3, 4, 4, dtype=torch.float64)
    with torch.no_grad():
        h = model.fc1.linear(x.flatten(2).transpose(1, 2).clamp(-1.0, 1.5))
    assert bool((h.abs() > 0.75).any())  # the bounds are reached: not an identity
    r = compare_with_engine(model, x)
    assert r["lrp0_reference_norm"] > 0 and r["lrp0_oracle_rel_error"] <= TOL, r
    assert r["gradient_rel_error"] <= 1e-10, r


@pytest.mark.parametrize("name,side", [("levit_128s", 64), ("xcit_nano_12_p8_224", 32)])
def test_timm_stems_with_batch_norm_before_the_tokens_equal_the_oracle(name, side):
    """Before batch norm was written out in the oracle, its references went through torch's
    wrong CPU batch-norm backward (LeViT: gradient 1.3 relative; XCiT: LRP-0 and gradient 1.5)."""
    torch.manual_seed(0)
    model = _timm_model_sized(name, side)
    r = compare_with_engine(model, torch.randn(1, 3, side, side, generator=torch.Generator().manual_seed(2)))
    assert r["lrp0_reference_norm"] > 0
    assert r["lrp0_oracle_rel_error"] <= TOL, (name, r)
    assert r["gradient_rel_error"] <= 1e-10, (name, r)


def test_attention_over_the_batch_axis_is_refused_at_build_with_its_module_path():
    """timm's CSATv2 spatial attention: ``q, k, v = qkv.unbind(-1)`` gives ``(B, N)`` tensors and
    ``q @ k.transpose(-1, -2)`` a ``(B, B)`` attention over the batch.  Its ``LayerNorm(1)``
    makes ``q, k, v`` independent of the input, so the logits do not change with the other
    samples; the shape of the attention does, and the build refuses there (it used to build and
    fail in ``attribute`` with a shape error)."""
    from timm.models.csatv2 import SpatialTransformerBlock

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 1, 3, padding=1)
            self.attn = SpatialTransformerBlock()
            self.head = nn.Linear(49, 5)

        def forward(self, x):
            return self.head((x[:, :1] * self.attn(self.conv(x))).flatten(1))

    torch.manual_seed(0)
    net = Net().double()
    x = torch.randn(1, 3, 7, 7, dtype=torch.float64)
    with torch.no_grad():  # the eager model: a sample's logits do not depend on the batch here
        torch.testing.assert_close(net(torch.cat([x, 2 * x]))[:1], net(x), rtol=1e-12, atol=1e-12)
    with pytest.raises(UnsupportedModuleError, match=r"in module 'attn' .*mixes the samples of a batch") as exc:
        Explainer(net, dtype=torch.float64, input_shape=(3, 7, 7))
    assert "\n" not in str(exc.value) and "(1, 1) for one sample, (2, 2) for two" in str(exc.value)
    with pytest.raises(UnsupportedModuleError):  # no other exception escapes the comparison either
        compare_with_engine(net, x)


def test_a_float32_cast_inside_forward_is_computed_in_float64_like_the_oracle():
    """EfficientViT-MIT's LiteMLA computes its linear attention under ``q.float(), k.float(),
    v.float()`` and divides by ``(q k^T 1) + eps`` (divisor held, eps included).  The float64
    engine computes those values in float64 (``casts_to_dtype``) and the oracle with
    ``casts="dtype"``; the model's own float32 rounding shows only in ``model_logits_rel_error``
    (it was 3.4e-8 LRP-0 and 4.6e-9 logits on efficientvit_b0)."""
    from timm.models.efficientvit_mit import LiteMLA

    from empirical.checkmodel import check_model

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = nn.Conv2d(3, 16, 1)
            self.attn = LiteMLA(16, 16, dim=8, scales=(3,))
            self.head = nn.Linear(16, 5)

        def forward(self, x):
            t = self.embed(x)
            return self.head((t + self.attn(t)).mean((2, 3)))

    torch.manual_seed(0)
    net = randomise_batchnorm_stats(Net(), generator=torch.Generator().manual_seed(1)).double()
    r = compare_with_engine(net, torch.randn(2, 3, 6, 6, dtype=torch.float64))
    assert r["lrp0_reference_norm"] > 0 and r["lrp0_oracle_rel_error"] <= TOL, r
    assert r["gradient_rel_error"] <= 1e-10 and r["logits_rel_error"] <= 1e-12, r
    assert 1e-12 < r["model_logits_rel_error"] < 1e-5, r  # the model's float32 attention, not the engine's
    ex = Explainer(net, dtype=torch.float64, input_shape=(3, 6, 6))
    notes = [p.note for p in ex.plan.plans.values() if p.note.startswith("cast to float32")]
    assert len(notes) == 3, notes  # q, k, v; the cast back to float64 is left as it is
    overridden = check_model(net, input_size=6, oracle=False)["casts_overridden"]
    assert len(overridden) == 3 and all(c.startswith("attn ") and "float32 -> float64" in c for c in overridden)


def test_a_float32_tensor_built_from_the_input_shape_only_is_computed_as_the_model_computes_it():
    """A cast overridden to the engine's dtype is one of the input's VALUES; a positional
    encoding built from the input's shape (XCiT: ``torch.arange(H).to(torch.float32)``, then
    cast back) is a constant of the input and keeps the model's float32 (once it was computed
    in float64: the logits of xcit_nano differed from the model's by 1.3e-8)."""

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.proj = nn.Conv2d(1, 4, 1)
            self.head = nn.Linear(4, 3)

        def forward(self, x):
            H = x.shape[-1]
            ramp = torch.arange(1, H + 1, device=x.device).to(torch.float32) / (H + 1e-6) * 6.283185307179586
            pos = self.proj(torch.sin(ramp).view(1, 1, 1, H).expand(x.shape[0], 1, H, H).to(x.dtype))
            return self.head((x + pos).mean((2, 3)))

    torch.manual_seed(0)
    net = Net().double().eval()
    x = torch.randn(2, 4, 5, 5, dtype=torch.float64)
    ex = Explainer(net, dtype=torch.float64, input_shape=(4, 5, 5))
    assert not [p.note for p in ex.plan.plans.values() if p.note.startswith("cast to")]
    logits = ex.attribute(x, ["gradient"], reduce="none").logits
    with torch.no_grad():
        ref = net(x)
    assert float((logits - ref).norm() / ref.norm()) <= 1e-14


def test_clamp_with_input_dependent_bounds_is_refused():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(4, 4)
            self.head = nn.Linear(4, 3)

        def forward(self, x):
            return self.head(torch.clamp(self.fc(x), min=-x.abs(), max=x.abs()))

    with pytest.raises(UnsupportedModuleError, match="clamp with input-dependent bounds") as exc:
        Explainer(Net(), input_shape=(4,))
    assert "\n" not in str(exc.value)


def test_the_tracer_releases_example_values_no_proxy_can_read():
    """The example's activations are dropped once no proxy stands for them (Gemma4-ViT at
    768x768 held 9.2 GiB of them); the output's value (the graph's check) and shapes stay."""
    from empirical.engine.graph import LEAF_TYPES
    from empirical.engine.tracing import ConcreteTracer

    class Deep(nn.Module):
        def __init__(self):
            super().__init__()
            self.layers = nn.ModuleList(nn.Linear(8, 8) for _ in range(20))

        def forward(self, x):
            t = x.flatten(1)
            for layer in self.layers:
                t = F.gelu(layer(t)) + t
            return t.reshape(t.shape[0], int(t.shape[1] ** 0.5), -1).mean(1)

    tracer = ConcreteTracer(LEAF_TYPES, torch.randn(1, 8))
    graph = tracer.trace(Deep())
    out = next(n for n in graph.nodes if n.op == "output").args[0]
    held = [n for n, v in tracer.values.items() if torch.is_tensor(v) and n.op not in ("placeholder", "get_attr")]
    assert tracer.example_error is None and len(list(graph.nodes)) > 60
    assert out in held and len(held) <= 3, held  # the last few are released when the next node is recorded


def test_attributes_a_module_assigns_while_traced_are_undone():
    """ConViT's GPSA caches ``self.rel_indices = torch.zeros(1, N, N, 3)...`` in forward and
    TinyViT fills a dict ``attention_bias_cache``; while traced those caches hold proxies, and
    the eager run that checks an in-place update (or a later forward) then failed (``expand()
    takes 1 positional argument``; TinyViT's eager run recorded nodes into the graph)."""
    from empirical.engine.tracing import ConcreteTracer

    class Cached(nn.Module):
        def __init__(self):
            super().__init__()
            self.rel = None
            self.cache = {}  # TinyViT's attention_bias_cache: a dict filled in place
            self.proj = nn.Linear(4, 4)
            self.cls = nn.Parameter(torch.randn(1, 1, 4))
            self.head = nn.Linear(4, 3)

        def forward(self, x):
            B, C, H, W = x.shape
            N = H * W
            if self.rel is None or self.rel.shape[-1] != N:
                self.rel = torch.zeros(1, N, N) + torch.arange(N).view(1, 1, N) / N
            t = self.proj(x.flatten(2).transpose(1, 2))
            t = t * self.rel.mean(-1, keepdim=True).to(t.dtype).transpose(1, 2).mean(-1, keepdim=True).exp()
            t += 1.0  # an in-place update: the graph is checked against the eager model
            if "bias" not in self.cache:
                self.cache["bias"] = self.cls * 2.0
            t = torch.cat((self.cls.expand(B, -1, -1), t + self.cache["bias"]), dim=1)
            return self.head(t.mean(1))

    torch.manual_seed(0)
    net = Cached().double().eval()
    x = torch.randn(2, 4, 3, 3, dtype=torch.float64)
    tracer = ConcreteTracer((), x[:1])
    tracer.trace(net)
    assert net.rel is None and net.cache == {} and tracer.in_place
    with torch.no_grad():
        net(x)  # runs eagerly: no proxy left behind
    r = compare_with_engine(net, x)
    assert r["lrp0_reference_norm"] > 0 and r["lrp0_oracle_rel_error"] <= TOL, r
    assert r["gradient_rel_error"] <= 1e-10, r
