"""Layer level exactness: one backward step of the torch engine equals
``boundcheck.rules.transition_matrix(W, z, rule, conventions, b) @ R_out`` (float64).

Convolutions are unfolded to their explicit ``(Cout*Ho*Wo, Cin*H*W)`` matrix.  All
rules of one case run in ONE ``attribute`` call, so the batched (stacked) backward
pass of several rules is checked at the same time.
"""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
import torch.nn as nn  # noqa: E402

from boundcheck.rules import Conventions, parse_rule, transition_matrix  # noqa: E402
from empirical.engine import Explainer  # noqa: E402

pytestmark = pytest.mark.torch
torch.set_num_threads(2)

RULES = ["lrp_beta_0", "lrp_beta_1", "lrp_beta_0.5", "lrp_gamma_0.25", "lrp_gamma_100", "lrp_zero",
         "lrp_epsilon_0.01", "adaptive_beta"]
CONVENTIONS = {
    "default": Conventions(),
    "bias_backward": Conventions(bias="backward"),
    "stabiliser": Conventions(stabiliser=1e-3),
    "nan": Conventions(zero_denominator="nan"),
    "bias_stab": Conventions(bias="backward", stabiliser=1e-2),
}


def _conv_matrix(conv: nn.Conv2d, in_shape):
    n = int(np.prod(in_shape))
    eye = torch.eye(n, dtype=torch.float64).reshape(n, *in_shape)
    with torch.no_grad():
        out = nn.functional.conv2d(eye, conv.weight, None, conv.stride, conv.padding, conv.dilation, conv.groups)
    return out.reshape(n, -1).T.numpy()  # (R, S)


def _random_q(R, seed, B=1):
    g = np.random.default_rng(seed)
    q = g.random((B, R)) + 0.05
    return q / q.sum(1, keepdims=True)


def _check(model, x, W, b, conv_name, seed):
    conventions = CONVENTIONS[conv_name]
    e = Explainer(model, conventions=conventions, dtype=torch.float64)
    with torch.no_grad():
        R = model(x).reshape(x.shape[0], -1).shape[1]
    q = _random_q(R, seed, x.shape[0])
    att = e.attribute(x, RULES, q=torch.tensor(q), reduce="none")
    for name in RULES:
        rule = parse_rule(name)
        for i in range(x.shape[0]):
            M = transition_matrix(W, x[i].reshape(-1).numpy(), rule, conventions, b)
            want = M @ q[i]
            got = att.maps[name][i].reshape(-1).numpy()
            if conventions.zero_denominator == "nan" and np.isnan(want).any():
                # the dense oracle puts NaN into a whole column of M (also at inputs outside a
                # convolution's receptive field, w_ab = 0), so M @ R is NaN almost everywhere;
                # the engine spreads the NaN only inside the field.
                assert np.isnan(got).any(), name
                assert not np.any(np.isnan(got) & ~np.isnan(want)), name
                ok = ~np.isnan(want)
                np.testing.assert_allclose(got[ok], want[ok], rtol=1e-9, atol=1e-11, err_msg=f"{name} {conv_name}")
                continue
            np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-11, err_msg=f"{name} {conv_name}")


@pytest.mark.parametrize("conv_name", sorted(CONVENTIONS))
@pytest.mark.parametrize("signs", ["both", "nonneg"])
def test_linear_step_equals_transition_matrix(conv_name, signs):
    torch.manual_seed(1)
    lin = nn.Linear(7, 5).double()
    x = torch.randn(2, 7, dtype=torch.float64)
    if signs == "nonneg":
        x = x.abs() + 0.01
    _check(nn.Sequential(lin), x, lin.weight.detach().numpy(), lin.bias.detach().numpy(), conv_name, 3)


CONV_CASES = {
    "plain": dict(cin=2, cout=3, k=3, stride=1, padding=1, groups=1),
    "strided": dict(cin=2, cout=4, k=3, stride=2, padding=1, groups=1),
    "grouped": dict(cin=4, cout=4, k=2, stride=1, padding=0, groups=2),
    "depthwise": dict(cin=3, cout=3, k=3, stride=2, padding=1, groups=3),
}


@pytest.mark.parametrize("conv_name", sorted(CONVENTIONS))
@pytest.mark.parametrize("case", sorted(CONV_CASES))
@pytest.mark.parametrize("signs", ["both", "nonneg"])
def test_conv_step_equals_transition_matrix(conv_name, case, signs):
    c = CONV_CASES[case]
    torch.manual_seed(2)
    conv = nn.Conv2d(c["cin"], c["cout"], c["k"], c["stride"], c["padding"], groups=c["groups"]).double()
    x = torch.randn(1, c["cin"], 5, 5, dtype=torch.float64)
    if signs == "nonneg":
        x = x.abs() + 0.01
    W = _conv_matrix(conv, x.shape[1:])
    b = conv.bias.detach().numpy().repeat(W.shape[0] // c["cout"])
    _check(nn.Sequential(conv, nn.Flatten()), x, W, b, conv_name, 4)


def test_zero_denominator_policies():
    """A row of zero weights: 0/0.  'zero' gives 0, 'nan' NaN, 'raise' ZeroDivisionError (as the oracle)."""
    lin = nn.Linear(3, 2, bias=False).double()
    with torch.no_grad():
        lin.weight[0].zero_()
    x = torch.tensor([[1.0, -2.0, 0.5]], dtype=torch.float64)
    q = torch.tensor([[0.5, 0.5]], dtype=torch.float64)
    W = lin.weight.detach().numpy()
    for policy in ("zero", "nan"):
        conv = Conventions(zero_denominator=policy)
        got = Explainer(nn.Sequential(lin), conventions=conv, dtype=torch.float64).attribute(
            x, "lrp_zero", q=q, reduce="none").maps["lrp_zero"][0].numpy()
        want = transition_matrix(W, x[0].numpy(), parse_rule("lrp_zero"), conv) @ q[0].numpy()
        np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
        np.testing.assert_allclose(got[~np.isnan(got)], want[~np.isnan(want)], rtol=1e-12)
    e = Explainer(nn.Sequential(lin), conventions=Conventions(zero_denominator="raise"), dtype=torch.float64)
    with pytest.raises(ZeroDivisionError):
        e.attribute(x, "lrp_zero", q=q)


# --------------------------------------------------------------------------- transposed convolution, resampling

def _dense(fn, in_shape):
    """The explicit ``(prod(out), prod(in))`` matrix of a linear map ``fn`` (one sample)."""
    n = int(np.prod(in_shape))
    eye = torch.eye(n, dtype=torch.float64).reshape(n, *in_shape)
    with torch.no_grad():
        out = fn(eye)
    return out.reshape(n, -1).T.numpy()


CONV_T_CASES = {  # nd, cin, cout, k, stride, padding, output_padding, groups, dilation, side
    "plain": (2, 2, 3, 3, 1, 1, 0, 1, 1, 4),
    "strided": (2, 2, 3, 4, 2, 1, 0, 1, 1, 3),
    "output_padding": (2, 2, 2, 3, 2, 1, 1, 1, 1, 3),
    "grouped_dilated": (2, 4, 2, 2, 2, 0, 1, 2, 2, 3),  # outputs no input reaches (odd positions)
    "depthwise": (2, 3, 3, 4, 2, 1, 0, 3, 1, 3),  # LowFormer's upsampling
    "1d": (1, 2, 3, 3, 2, 1, 1, 1, 1, 5),
    "3d": (3, 2, 2, 2, 2, 0, 0, 1, 1, 2),
}


def _conv_t(case):
    nd, cin, cout, k, s, p, op, g, d, side = CONV_T_CASES[case]
    cls = {1: nn.ConvTranspose1d, 2: nn.ConvTranspose2d, 3: nn.ConvTranspose3d}[nd]
    torch.manual_seed(5)
    m = cls(cin, cout, k, s, p, op, groups=g, dilation=d).double()
    return m, (cin,) + (side,) * nd


def _without_dead_nan(cases, dead):
    """``(conventions, case, signs)``; under ``zero_denominator="nan"`` without the cases in
    ``dead`` (``(case, signs)``; signs None: both): there a denominator is 0 for a term
    whose weights are all 0 at that output (an output no input reaches, or the W- part of
    a map with weights >= 0), which the dense oracle turns into a NaN column of M while the
    engine never reads that ratio (see :func:`_check`)."""
    out = []
    for conv_name in sorted(CONVENTIONS):
        for case in sorted(cases):
            for signs in ("both", "nonneg"):
                if conv_name == "nan" and ((case, None) in dead or (case, signs) in dead):
                    continue
                out.append((conv_name, case, signs))
    return out


@pytest.mark.parametrize("conv_name,case,signs", _without_dead_nan(CONV_T_CASES, {("grouped_dilated", None)}))
def test_conv_transpose_step_equals_transition_matrix(conv_name, case, signs):
    """A transposed convolution is a linear layer: its LRP step (every rule, weights W+ and
    W- of the weight tensor) is ``transition_matrix`` of its explicit matrix."""
    m, in_shape = _conv_t(case)
    x = torch.randn(2, *in_shape, dtype=torch.float64, generator=torch.Generator().manual_seed(6))
    if signs == "nonneg":
        x = x.abs() + 0.01
    W = _dense(lambda t: m(t) - m.bias.reshape((1, -1) + (1,) * (t.dim() - 2)), in_shape)  # without the bias
    b = m.bias.detach().numpy().repeat(W.shape[0] // m.out_channels)
    _check(nn.Sequential(m, nn.Flatten()), x, W, b, conv_name, 7)


def test_conv_transpose_with_an_output_size_and_the_functional_form():
    """``module(x, output_size)`` (the output padding of the call) and ``F.conv_transpose2d``
    with a constant weight (lifted to the module) are the same linear layer."""

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.up = nn.ConvTranspose2d(2, 3, 3, stride=2, padding=1)
            self.w = nn.Parameter(torch.randn(3, 2, 2, 2, generator=torch.Generator().manual_seed(8)))

        def forward(self, x):
            y = self.up(x, output_size=(8, 7))
            return nn.functional.conv_transpose2d(y, self.w, None, stride=1, padding=1).flatten(1)

    m = Net().double()
    x = torch.randn(1, 2, 4, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(9))
    e = Explainer(m, dtype=torch.float64)
    kinds = [p.kind for p in e._plans.values()]
    assert kinds.count("conv") == 2, kinds
    b0 = m(torch.zeros(1, 2, 4, 4, dtype=torch.float64))
    W = _dense(lambda t: m(t) - b0, (2, 4, 4))
    # two linear layers, the biases in the denominators: LRP-0 is x * W^T (R / y) with the composed map W
    conv = Conventions(bias="backward")
    q = torch.tensor(_random_q(W.shape[0], 10))
    att = Explainer(m, conventions=conv, dtype=torch.float64).attribute(x, ["lrp_zero"], q=q, reduce="none")
    ref = x[0].reshape(-1).numpy() * (W.T @ (q[0].numpy() / m(x).detach().numpy()[0]))
    np.testing.assert_allclose(att.maps["lrp_zero"][0].reshape(-1).numpy(), ref, rtol=1e-9, atol=1e-12)


RESAMPLE_CASES = {  # mode, F.interpolate keywords, input side
    "bicubic_up": ("bicubic", dict(size=(7, 9), align_corners=False), (5, 6)),
    "bicubic_down": ("bicubic", dict(size=(4, 3), align_corners=False), (6, 5)),  # CrossViT's 240 -> 224 kind
    "bicubic_corners": ("bicubic", dict(scale_factor=1.5, align_corners=True), (4, 5)),
    "bicubic_antialias": ("bicubic", dict(size=(3, 4), antialias=True), (7, 6)),
    "bicubic_scale": ("bicubic", dict(scale_factor=(1.7, 0.6), recompute_scale_factor=False), (5, 6)),
    "bilinear": ("bilinear", dict(size=(7, 4), align_corners=False), (5, 6)),
    "bilinear_antialias": ("bilinear", dict(size=(3, 2), antialias=True), (6, 5)),
    "area": ("area", dict(size=(3, 4)), (7, 6)),
    "linear": ("linear", dict(scale_factor=1.5), (5,)),
    "trilinear": ("trilinear", dict(size=(3, 2, 3), align_corners=True), (2, 3, 2)),
}


class _Resample(nn.Module):
    def __init__(self, mode, kw):
        super().__init__()
        self.mode, self.kw = mode, kw

    def forward(self, x):
        return nn.functional.interpolate(x, mode=self.mode, **self.kw).flatten(1)


@pytest.mark.parametrize("case", sorted(RESAMPLE_CASES))
def test_resample_axis_matrices_reproduce_interpolate(case):
    """``out = A X B^T`` per channel with torch's own per-axis weights equals the call."""
    from empirical.engine.ops import ResampleOp, resample_axis_matrices

    mode, kw, side = RESAMPLE_CASES[case]
    x = torch.randn((2, 3) + side, dtype=torch.float64, generator=torch.Generator().manual_seed(11))
    op = ResampleOp(resample_axis_matrices(side, mode=mode, **kw))
    want = nn.functional.interpolate(x, mode=mode, **kw)
    got = op.parts(x)[2]
    assert float((got - want).abs().max()) <= 1e-13 * float(want.abs().max())
    assert op.nonneg == (mode != "bicubic")
    W = _dense(lambda t: nn.functional.interpolate(t, mode=mode, **kw), (1,) + side)
    assert (W.min() < 0) == (mode == "bicubic")


def test_resample_check_refuses_a_map_that_is_not_the_call():
    from empirical.engine.ops import ResampleOp, check_resample, resample_axis_matrices

    op = ResampleOp(resample_axis_matrices((5, 6), size=(7, 9), mode="bilinear"))
    check_resample(op, lambda t: nn.functional.interpolate(t, size=(7, 9), mode="bilinear"), (1, 1, 5, 6))
    with pytest.raises(ValueError, match="separable"):
        check_resample(op, lambda t: nn.functional.interpolate(t, size=(7, 9), mode="bicubic"), (1, 1, 5, 6))


@pytest.mark.parametrize("conv_name,case,signs", _without_dead_nan(
    RESAMPLE_CASES, {(c, "nonneg") for c, (mode, _, _) in RESAMPLE_CASES.items() if mode != "bicubic"}))
def test_resample_step_equals_transition_matrix(conv_name, case, signs):
    """Bicubic (weights of both signs: ``W+ = A+ (x) B+ + A- (x) B-``), bilinear, area, linear
    and trilinear resampling: the LRP step of every rule is ``transition_matrix`` of the
    dense matrix of the call (never built by the engine)."""
    mode, kw, side = RESAMPLE_CASES[case]
    x = torch.randn((2, 2) + side, dtype=torch.float64, generator=torch.Generator().manual_seed(12))
    if signs == "nonneg":
        x = x.abs() + 0.01
    W = _dense(lambda t: nn.functional.interpolate(t, mode=mode, **kw), (2,) + side)
    _check(_Resample(mode, kw), x, W, None, conv_name, 13)


def test_upsample_module_is_the_same_map():
    m = nn.Sequential(nn.Upsample(scale_factor=1.5, mode="bicubic", align_corners=False), nn.Flatten()).double()
    e = Explainer(m, dtype=torch.float64)
    assert [p.kind for p in e._plans.values()].count("resample") == 1
    x = torch.randn(1, 2, 4, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(14))
    W = _dense(lambda t: nn.functional.interpolate(t, scale_factor=1.5, mode="bicubic"), (2, 4, 5))
    q = _random_q(W.shape[0], 15)
    att = e.attribute(x, ["lrp_beta_1"], q=torch.tensor(q), reduce="none")
    want = transition_matrix(W, x[0].reshape(-1).numpy(), parse_rule("lrp_beta_1"), Conventions()) @ q[0]
    np.testing.assert_allclose(att.maps["lrp_beta_1"][0].reshape(-1).numpy(), want, rtol=1e-9, atol=1e-11)


class _UpNet(nn.Module):
    """A small network with a depthwise and a dense transposed convolution, bicubic
    down- and upsampling (CrossViT's, LowFormer's), bilinear, a residual sum, GELU."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 4, 3, padding=1)
        self.down = nn.Conv2d(4, 4, 2, stride=2)
        self.up = nn.ConvTranspose2d(4, 4, 4, stride=2, padding=1, groups=4)
        self.mix = nn.ConvTranspose2d(4, 6, 3, stride=1, padding=1)
        self.head = nn.Linear(6 * 5 * 5, 7)

    def forward(self, x):
        x = nn.functional.gelu(self.stem(x))
        x = x + self.up(nn.functional.relu(self.down(x)))
        x = nn.functional.interpolate(x, size=(7, 7), mode="bicubic", align_corners=False)
        x = nn.functional.gelu(self.mix(x))
        x = nn.functional.interpolate(x, size=(5, 5), mode="bilinear", align_corners=False)
        return self.head(x.flatten(1))


def test_network_with_transposed_convolutions_and_bicubic_resampling():
    """LRP-0 == the oracle (<= 1e-10), fast path == explicit path (<= 1e-10: LRP-0 and
    LRP-epsilon with the bias in the denominators, LRP-epsilon without), the gradient ==
    autograd's, and LRP-beta/gamma run (their steps are checked above)."""
    from empirical.oracle import gradient_reference, lrp0_reference, relative_error

    torch.manual_seed(16)
    m = _UpNet().double().eval()
    x = torch.randn(2, 3, 8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(17))
    ex = Explainer(m, conventions=Conventions(bias="backward"), dtype=torch.float64)
    kinds = [p.kind for p in ex._plans.values()]
    assert kinds.count("conv") == 4 and kinds.count("resample") == 2
    methods = ["lrp_zero", "lrp_epsilon_0.1", "cp_lrp"]
    fast = ex.attribute(x, methods, reduce="none", path="fast", init="logit")
    expl = ex.attribute(x, methods + ["lrp_beta_1", "lrp_gamma_0.25"], reduce="none", path="explicit",
                        init="logit")
    assert torch.equal(fast.target, expl.target)
    for name in methods:
        assert relative_error(fast.maps[name], expl.maps[name]) <= 1e-10, name
    ref = lrp0_reference(m, x, target=fast.target)
    assert relative_error(expl.maps["lrp_zero"], ref) <= 1e-10
    assert relative_error(fast.maps["lrp_zero"], ref) <= 1e-10
    grad = gradient_reference(m, x, target=fast.target)
    got = ex.attribute(x, ["gradient"], target=fast.target, init="q", reduce="none").maps["gradient"]
    assert relative_error(got, grad) <= 1e-10
    for name in ("lrp_beta_1", "lrp_gamma_0.25"):
        assert bool(torch.isfinite(expl.maps[name]).all()) and float(expl.maps[name].abs().max()) > 0
    ex = Explainer(m, dtype=torch.float64)  # bias outside the denominators (the default)
    fast = ex.attribute(x, ["lrp_epsilon_0.1"], reduce="none", path="fast")
    expl = ex.attribute(x, ["lrp_epsilon_0.1"], reduce="none", path="explicit")
    assert relative_error(fast.maps["lrp_epsilon_0.1"], expl.maps["lrp_epsilon_0.1"]) <= 1e-10


def test_conv_transpose_weight_budget_does_not_change_the_maps():
    """Beyond the weight budget (``weight_cache_bytes=0``) a transposed convolution builds
    ``[W+; W-]`` per call and folds the terms into the ratios: the same maps."""
    torch.manual_seed(18)
    net = nn.Sequential(nn.ConvTranspose2d(3, 5, 3, stride=2, padding=1), nn.GELU(),
                        nn.ConvTranspose2d(5, 5, 2, stride=2, groups=5), nn.Flatten(), nn.Linear(5 * 10 * 10, 3))
    x = torch.randn(2, 3, 3, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(19))
    rules = ["lrp_beta_0", "lrp_beta_1", "lrp_gamma_100", "lrp_epsilon_0.01", "adaptive_beta", "lrp_zero"]
    full = Explainer(net, dtype=torch.float64, weight_cache_bytes=None).attribute(x, rules)
    none = Explainer(net, dtype=torch.float64, weight_cache_bytes=0).attribute(x, rules)
    for m in rules:
        assert torch.allclose(full.maps[m], none.maps[m], rtol=1e-10, atol=1e-13), m
