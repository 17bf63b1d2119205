"""The LRP-0 exactness oracle (``empirical.oracle``) and the engine against it.

Part 1 validates the oracle without the engine: on tiny hand-built models the
LRP-0 map (bias in the denominators, logit start, [P1] eq. (7) with beta = 0) is
propagated layer by layer in numpy and compared with ``x * modified_gradient``.
Part 2 compares :class:`empirical.engine.Explainer` (float64) with the oracle on
one small model of every torchvision family: LRP-0 relative error <= 1e-8,
gradient relative error <= 1e-10, on every family (no exceptions).
"""

from __future__ import annotations

import copy

import numpy as np
import pytest

torch = pytest.importorskip("torch")
torchvision = pytest.importorskip("torchvision")
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

import torch.nn as nn  # noqa: E402
import torch.nn.functional as F  # noqa: E402

import empirical.oracle as _oracle  # noqa: E402
from numerics import finite_differences  # noqa: E402
from boundcheck.errors import InputError  # noqa: E402
from empirical.oracle import (  # noqa: E402
    OracleMode, compare_with_engine, gradient_reference, lrp0_reference, modified_gradient,
    randomise_batchnorm_stats, relative_error, torchvision_classifier,
)

pytestmark = pytest.mark.torch
torch.set_num_threads(2)
D64 = torch.float64


def _np(t):
    return t.detach().to(D64).numpy()


def _div(r, z):
    """``r / z`` with ``0/0 := 0`` (the zero-denominator convention)."""
    out = np.zeros_like(r)
    np.divide(r, z, out=out, where=z != 0)
    return out


def _linear_lrp(a, w, b, r):
    """LRP-0 through ``z = a w^T + b`` (bias in the denominator): ``a * (r / z) w``."""
    z = a @ w.T + b
    return a * (_div(r, z) @ w)


def _start(logits, target):
    r = np.zeros_like(logits)
    idx = np.arange(len(target))
    r[idx, target] = logits[idx, target]
    return r


def _seeded(seed):
    return torch.Generator().manual_seed(seed)


# ---------------------------------------------------------------------------- part 1: the oracle alone
ACTIVATIONS = [nn.ReLU, nn.ReLU6, nn.GELU, nn.SiLU, nn.Hardswish, nn.Mish, nn.ELU, nn.LeakyReLU, nn.Tanh,
               nn.Softplus, nn.SELU, nn.CELU]


@pytest.mark.parametrize("act", ACTIVATIONS, ids=lambda a: a.__name__)
def test_mlp_matches_hand_lrp0(act):
    torch.manual_seed(0)
    l1, l2 = nn.Linear(6, 8), nn.Linear(8, 4)
    model = nn.Sequential(l1, act(), l2).to(D64)
    x = torch.randn(3, 6, dtype=D64, generator=_seeded(1)) * 2
    target = np.array([0, 2, 3])
    a1 = _np(act()(l1(x)))
    logits = a1 @ _np(l2.weight).T + _np(l2.bias)
    r_a1 = _linear_lrp(a1, _np(l2.weight), _np(l2.bias), _start(logits, target))
    r_x = _linear_lrp(_np(x), _np(l1.weight), _np(l1.bias), r_a1)  # pass-through: R_z1 = R_a1
    np.testing.assert_allclose(_np(modified_gradient(model, x)[1]), logits, rtol=1e-12)
    got = lrp0_reference(model, x, torch.as_tensor(target))
    np.testing.assert_allclose(_np(got), r_x, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("kind", ["layer_norm", "group_norm", "batch_norm_unfolded"])
def test_normalisation_is_affine_with_constant_statistics(kind):
    torch.manual_seed(0)
    l1, l2 = nn.Linear(5, 6), nn.Linear(6, 3)
    norm = {"layer_norm": nn.LayerNorm(6), "group_norm": nn.GroupNorm(2, 6),
            "batch_norm_unfolded": nn.BatchNorm1d(6)}[kind]
    model = randomise_batchnorm_stats(nn.Sequential(l1, nn.ReLU(), norm, l2), _seeded(3)).to(D64).eval()
    l1, norm, l2 = model[0], model[2], model[3]
    x = torch.randn(4, 5, dtype=D64, generator=_seeded(2))
    h = _np(torch.relu(l1(x)))
    w, b = _np(norm.weight), _np(norm.bias)
    if kind == "layer_norm":
        mu, var = h.mean(1, keepdims=True), h.var(1, keepdims=True)
        scale, shift = w / np.sqrt(var + norm.eps), b - w * mu / np.sqrt(var + norm.eps)
    elif kind == "group_norm":
        g = h.reshape(4, 2, 3)
        mu = np.repeat(g.mean(2), 3, axis=1)
        sd = np.sqrt(np.repeat(g.var(2), 3, axis=1) + norm.eps)
        scale, shift = w / sd, b - w * mu / sd
    else:
        sd = np.sqrt(_np(norm.running_var) + norm.eps)
        scale, shift = w / sd, b - w * _np(norm.running_mean) / sd
    y = h * scale + shift
    np.testing.assert_allclose(y, _np(norm(torch.as_tensor(h))), rtol=1e-12, atol=1e-12)
    logits = y @ _np(l2.weight).T + _np(l2.bias)
    target = logits.argmax(1)
    r_y = _linear_lrp(y, _np(l2.weight), _np(l2.bias), _start(logits, target))
    r_h = h * scale * _div(r_y, y)  # LRP-0 of the affine map, the shift as its bias
    r_x = _linear_lrp(_np(x), _np(l1.weight), _np(l1.bias), r_h)  # ReLU passes R through
    got = lrp0_reference(model, x)
    np.testing.assert_allclose(_np(got), r_x, rtol=1e-9, atol=1e-12)


class _Pool(nn.Module):
    """Token mean then a linear head."""

    def __init__(self, d, k):
        super().__init__()
        self.head = nn.Linear(d, k)

    def forward(self, y):
        return self.head(y.mean(1))


class _MHAModel(nn.Module):
    def __init__(self, d=8, h=2, k=3):
        super().__init__()
        self.attn = nn.MultiheadAttention(d, h, batch_first=True)
        self.pool = _Pool(d, k)

    def forward(self, x):
        return self.pool(self.attn(x, x, x, need_weights=False)[0])


class _HandAttention(nn.Module):
    """Single-head attention written with ``Tensor.softmax`` and ``@``."""

    def __init__(self, d=8, k=3):
        super().__init__()
        self.q, self.k, self.v, self.o = nn.Linear(d, d), nn.Linear(d, d), nn.Linear(d, d), nn.Linear(d, d)
        self.pool = _Pool(d, k)

    def forward(self, x):
        a = (self.q(x) @ self.k(x).transpose(1, 2) / np.sqrt(x.shape[-1])).softmax(-1)
        return self.pool(self.o(a @ self.v(x)))


def _attention_lrp(x, wv, bv, wo, bo, heads, a, head_w, head_b, target):
    """Hand LRP-0 through value projection, ``A @ V`` per head, output projection, mean, head."""
    T, D = x.shape
    d = D // heads
    v = x @ wv.T + bv
    o = np.concatenate([a[h] @ v[:, h * d:(h + 1) * d] for h in range(heads)], axis=1)
    y = o @ wo.T + bo
    p = y.mean(0)
    logits = p @ head_w.T + head_b
    r = np.zeros_like(logits)
    r[target] = logits[target]
    r_p = _linear_lrp(p[None], head_w, head_b, r[None])[0]
    r_y = (y / T) * _div(r_p, p)[None]
    r_o = _linear_lrp(o, wo, bo, r_y)
    r_v = np.zeros_like(v)
    for h in range(heads):
        s = slice(h * d, (h + 1) * d)
        r_v[:, s] = v[:, s] * (a[h].T @ _div(r_o[:, s], o[:, s]))
    return _linear_lrp(x, wv, bv, r_v), logits


@pytest.mark.parametrize("kind", ["multihead", "hand"])
def test_attention_only_value_path(kind):
    torch.manual_seed(0)
    model = (_MHAModel() if kind == "multihead" else _HandAttention()).to(D64).eval()
    x = torch.randn(2, 5, 8, dtype=D64, generator=_seeded(4))
    got = lrp0_reference(model, x)
    grad, logits = modified_gradient(model, x)
    for b in range(2):
        xb = x[b]
        if kind == "multihead":
            m = model.attn
            wq, wk, wv = _np(m.in_proj_weight).reshape(3, 8, 8)
            bq, bk, bv = _np(m.in_proj_bias).reshape(3, 8)
            wo, bo, heads = _np(m.out_proj.weight), _np(m.out_proj.bias), 2
        else:
            wq, wk, wv = _np(model.q.weight), _np(model.k.weight), _np(model.v.weight)
            bq, bk, bv = _np(model.q.bias), _np(model.k.bias), _np(model.v.bias)
            wo, bo, heads = _np(model.o.weight), _np(model.o.bias), 1
        xn = _np(xb)
        q, k = xn @ wq.T + bq, xn @ wk.T + bk
        d = 8 // heads
        a = []
        for h in range(heads):
            s = slice(h * d, (h + 1) * d)
            e = q[:, s] @ k[:, s].T / np.sqrt(d)
            e = np.exp(e - e.max(1, keepdims=True))
            a.append(e / e.sum(1, keepdims=True))
        want, want_logits = _attention_lrp(xn, wv, bv, wo, bo, heads, a, _np(model.pool.head.weight),
                                           _np(model.pool.head.bias), int(logits[b].argmax()))
        np.testing.assert_allclose(_np(logits[b]), want_logits, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(_np(got[b]), want, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("gate", ["sigmoid_module", "torch_sigmoid", "hardsigmoid", "squeeze_excitation"])
def test_gate_held_constant(gate):
    torch.manual_seed(0)
    if gate == "squeeze_excitation":
        from torchvision.ops import SqueezeExcitation

        se = SqueezeExcitation(4, 2)
        head = nn.Linear(4, 3)
        model = nn.Sequential(se, nn.AdaptiveAvgPool2d(1), nn.Flatten(), head).to(D64).eval()
        x = torch.randn(2, 4, 3, 3, dtype=D64, generator=_seeded(5))
        y = _np(se(x))
        p = y.mean((2, 3))
        logits = p @ _np(head.weight).T + _np(head.bias)
        r_p = _linear_lrp(p, _np(head.weight), _np(head.bias), _start(logits, logits.argmax(1)))
        want = y / 9 * _div(r_p, p)[:, :, None, None]  # all of the product's relevance to x
    else:
        lg, head = nn.Linear(5, 5), nn.Linear(5, 3)
        fn = {"sigmoid_module": nn.Sigmoid(), "torch_sigmoid": torch.sigmoid, "hardsigmoid": nn.Hardsigmoid()}[gate]

        class Gated(nn.Module):
            def __init__(self):
                super().__init__()
                self.lg, self.head = lg, head

            def forward(self, x):
                return self.head(x * fn(self.lg(x)))

        model = Gated().to(D64).eval()
        x = torch.randn(3, 5, dtype=D64, generator=_seeded(5))
        y = _np(x * fn(lg(x)))
        logits = y @ _np(head.weight).T + _np(head.bias)
        want = _linear_lrp(y, _np(head.weight), _np(head.bias), _start(logits, logits.argmax(1)))
    np.testing.assert_allclose(_np(lrp0_reference(model, x)), want, rtol=1e-9, atol=1e-12)


@settings(max_examples=25, deadline=None)
@given(act=st.sampled_from(ACTIVATIONS), values=st.lists(st.floats(-6, 6, allow_nan=False), min_size=4, max_size=4),
       zero=st.integers(0, 3))
def test_secant_slope(act, values, zero):
    """The modified derivative of an activation is ``sigma(z)/z``, 0 at ``z = 0``."""
    values[zero] = 0.0
    z = torch.tensor([values], dtype=D64)
    head = nn.Linear(4, 1, bias=False).to(D64)
    model = nn.Sequential(act(), head)
    grad, _ = modified_gradient(model, z, target=0)
    s = act()(z)
    want = torch.where(z != 0, s / torch.where(z != 0, z, 1.0), 0.0) * head.weight
    torch.testing.assert_close(grad, want, rtol=1e-12, atol=1e-15)


@settings(max_examples=10, deadline=None)
@given(acts=st.lists(st.sampled_from(ACTIVATIONS), min_size=1, max_size=3), seed=st.integers(0, 2**16),
       attention=st.booleans())
def test_conservation_without_biases(acts, seed, attention):
    """Without biases every LRP-0 step conserves relevance, so the map sums to the target logit
    ([P1] eq. (13) with zero bias terms); with the secant slopes this holds for any activation."""
    g = _seeded(seed)
    layers = []
    for act in acts:
        layers += [nn.Linear(6, 6, bias=False), act()]
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        body = nn.Sequential(*layers, nn.Linear(6, 3, bias=False)).to(D64)
        mha = nn.MultiheadAttention(6, 2, bias=False, batch_first=True).to(D64)

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.body, self.mha = body, mha

        def forward(self, x):
            if attention:
                x = self.mha(x, x, x, need_weights=False)[0]
            return self.body(x.mean(1))

    x = torch.randn(2, 4, 6, dtype=D64, generator=g)
    grad, logits = modified_gradient(Net(), x)
    total = (x * grad).sum((1, 2))
    torch.testing.assert_close(total, logits.max(1).values, rtol=1e-10, atol=1e-12)


def _relu_cnn():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(inplace=True), nn.MaxPool2d(2),
                         nn.Conv2d(4, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 5))


def test_relu_maxpool_network_gets_plain_gradient():
    model = randomise_batchnorm_stats(_relu_cnn(), _seeded(0))
    x = torch.randn(2, 3, 8, 8, generator=_seeded(1))
    grad, logits = modified_gradient(model, x, target=torch.tensor([1, 4]))
    torch.testing.assert_close(grad, gradient_reference(model, x, target=torch.tensor([1, 4])), rtol=1e-12,
                               atol=1e-15)
    torch.testing.assert_close(logits, model.eval().to(D64)(x.to(D64)).detach(), rtol=1e-12, atol=1e-12)


def test_caller_model_untouched():
    model = _relu_cnn().train()
    state = copy.deepcopy(model.state_dict())
    x = torch.randn(1, 3, 8, 8, generator=_seeded(1))
    lrp0_reference(model, x)
    gradient_reference(model, x)
    r = randomise_batchnorm_stats(model, _seeded(0))
    assert model.training and next(model.parameters()).dtype == torch.float32
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())
    assert not torch.equal(r[1].running_var, model[1].running_var)
    assert model[2].inplace


def test_randomise_is_reproducible():
    a = randomise_batchnorm_stats(_relu_cnn(), _seeded(7))
    b = randomise_batchnorm_stats(_relu_cnn(), _seeded(7))
    assert all(torch.equal(a.state_dict()[k], v) for k, v in b.state_dict().items())
    assert float(a[1].running_var.min()) >= 0.5


@pytest.mark.parametrize("case", ["seq_first", "batch_first", "key_padding", "bool_mask", "float_mask", "unbatched",
                                  "kdim", "causal"])
def test_multihead_forward_reproduced(case):
    torch.manual_seed(0)
    kw = {"kdim": 5, "vdim": 3} if case == "kdim" else {}
    mha = nn.MultiheadAttention(8, 2, batch_first=case == "batch_first", **kw).to(D64).eval()
    L, S, N = 4, 6, 2
    q = torch.randn(L, N, 8, dtype=D64)
    k = torch.randn(S, N, kw.get("kdim", 8), dtype=D64)
    v = torch.randn(S, N, kw.get("vdim", 8), dtype=D64)
    args = {}
    if case == "batch_first":
        q, k, v = q.transpose(0, 1), k.transpose(0, 1), v.transpose(0, 1)
    if case == "unbatched":
        q, k, v = q[:, 0], k[:, 0], v[:, 0]
    if case == "key_padding":
        args["key_padding_mask"] = torch.tensor([[False] * 5 + [True], [False] * 6])
    if case == "bool_mask":
        args["attn_mask"] = torch.rand(L, S, generator=_seeded(3)) > 0.7
        args["attn_mask"][:, 0] = False
    if case == "float_mask":
        args["attn_mask"] = torch.randn(N * 2, L, S, dtype=D64)
    if case == "causal":
        q, k, v = q[:, :, :], q.clone(), q.clone()
        args["attn_mask"] = nn.Transformer.generate_square_subsequent_mask(L, dtype=D64)
        args["is_causal"] = True
    want, want_w = mha(q, k, v, **args)
    with OracleMode():
        got, got_w = mha(q, k, v, **args)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(got_w, want_w, rtol=1e-12, atol=1e-12)
    assert want_w.requires_grad and not got_w.requires_grad  # the weights are constants of the backward pass
    assert got.requires_grad  # the value path carries gradient


def test_multihead_fast_path_not_taken():
    """Frozen, eval, no grad: torch would take its fused fast path; the oracle re-implements it."""
    torch.manual_seed(0)
    mha = nn.MultiheadAttention(8, 2, batch_first=True).to(D64).eval().requires_grad_(False)
    x = torch.randn(2, 4, 8, dtype=D64)
    seen = []

    class Spy(OracleMode):
        def __torch_function__(self, func, types, args=(), kwargs=None):
            seen.append(func)
            return super().__torch_function__(func, types, args, kwargs)

    with torch.no_grad():
        want = mha(x, x, x, need_weights=False)[0]
        with Spy():
            got = mha(x, x, x, need_weights=False)[0]
    assert F.multi_head_attention_forward in seen
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("case", ["plain", "causal", "bool", "float", "scale"])
def test_sdpa_reproduced_and_weights_detached(case):
    q, k, v = (torch.randn(2, 2, 4, 3, dtype=D64, generator=_seeded(i), requires_grad=True) for i in range(3))
    kw = {}
    if case == "causal":
        kw["is_causal"] = True
    if case == "bool":
        kw["attn_mask"] = torch.ones(4, 4, dtype=torch.bool).tril()
    if case == "float":
        kw["attn_mask"] = torch.randn(4, 4, dtype=D64)
    if case == "scale":
        kw["scale"] = 0.3
    want = F.scaled_dot_product_attention(q, k, v, **kw)
    with OracleMode():
        got = F.scaled_dot_product_attention(q, k, v, **kw)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    gq, gk = torch.autograd.grad(got.sum(), (q, k), allow_unused=True, materialize_grads=True)
    assert float(gq.abs().max()) == 0.0 and float(gk.abs().max()) == 0.0


@pytest.mark.parametrize("call", ["F.layer_norm", "torch.layer_norm", "F.group_norm", "torch.group_norm",
                                  "F.instance_norm", "torch.instance_norm", "F.batch_norm", "torch.batch_norm",
                                  "F.batch_norm_batch_stats", "F.rms_norm"])
def test_normalisation_forward_reproduced(call):
    """Every spelling (functional and ``torch.*``, which order their arguments differently)."""
    g = _seeded(0)
    x = torch.randn(2, 4, 3, 3, dtype=D64, generator=g)
    w, b = torch.rand(4, dtype=D64, generator=g) + 0.5, torch.randn(4, dtype=D64, generator=g)
    rm, rv = torch.randn(4, dtype=D64, generator=g), torch.rand(4, dtype=D64, generator=g) + 0.5
    w3 = torch.rand(3, 3, dtype=D64, generator=g)
    fn = {
        "F.layer_norm": lambda: F.layer_norm(x, (3, 3), w3, w3, 1e-5),
        "torch.layer_norm": lambda: torch.layer_norm(x, (3, 3), w3, w3, 1e-5, False),
        "F.group_norm": lambda: F.group_norm(x, 2, w, b, 1e-5),
        "torch.group_norm": lambda: torch.group_norm(x, 2, w, b, 1e-5, False),
        "F.instance_norm": lambda: F.instance_norm(x, None, None, w, b, True, 0.1, 1e-5),
        "torch.instance_norm": lambda: torch.instance_norm(x, w, b, None, None, True, 0.1, 1e-5, False),
        "F.batch_norm": lambda: F.batch_norm(x, rm, rv, w, b, False, 0.1, 1e-5),
        "torch.batch_norm": lambda: torch.batch_norm(x, w, b, rm, rv, False, 0.1, 1e-5, False),
        "F.batch_norm_batch_stats": lambda: F.batch_norm(x, None, None, w, b, True, 0.1, 1e-5),
        "F.rms_norm": lambda: F.rms_norm(x, (3, 3), w3, 1e-6),
    }[call]
    want = fn()
    with OracleMode():
        got = fn()
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    with _oracle._PlainMode():  # gradient_reference's formulas for batch and instance norm
        got = fn()
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)


class _StemThenTokens(nn.Module):
    """A convolutional stem's normalisation, then ``flatten(2).transpose(1, 2)`` into tokens
    (LeViT, XCiT, EfficientFormer): autograd sends a channels-last gradient with batch stride
    ``C`` back into the contiguous BatchNorm (or InstanceNorm).  ``tokens="mean"``: the tokens'
    mean goes to the head (a linear network); ``"layer_norm"``: LayerNorm, Linear, ReLU first."""

    def __init__(self, tokens, norm="batch", C=6, K=5):
        super().__init__()
        self.tokens, self.conv = tokens, nn.Conv2d(3, C, 3, padding=1)
        self.norm = nn.BatchNorm2d(C) if norm == "batch" else nn.InstanceNorm2d(C, affine=True)
        self.ln, self.fc, self.head = nn.LayerNorm(C), nn.Linear(C, C), nn.Linear(C, K)

    def forward(self, x):
        t = self.norm(self.conv(x)).flatten(2).transpose(1, 2)
        if self.tokens == "layer_norm":
            t = torch.relu(self.fc(self.ln(t)))
        return self.head(t.mean(1))


@pytest.mark.parametrize("tokens,norm", [("mean", "batch"), ("layer_norm", "batch"), ("layer_norm", "instance")])
def test_batch_norm_gradient_is_right_for_mixed_memory_layouts(tokens, norm):
    """torch's CPU ``native_batch_norm_backward`` is wrong at a batch of one when input and incoming
    gradient differ in memory layout (relative errors 1.2 to 1.8 here before the oracle wrote batch
    and instance norm out): the plain gradient must equal finite differences, and so must the
    modified one where it is the plain one (the linear network with an eval-mode BatchNorm)."""
    torch.manual_seed(0)
    m = randomise_batchnorm_stats(_StemThenTokens(tokens, norm).to(D64).eval(), _seeded(1))
    x = torch.randn(1, 3, 5, 5, dtype=D64, generator=_seeded(2))
    t = int(m(x).argmax())
    fd = finite_differences(lambda z: m(z)[0, t], x)
    assert relative_error(gradient_reference(m, x, t), fd) <= 1e-6
    if tokens == "mean":
        assert relative_error(modified_gradient(m, x, t)[0], fd) <= 1e-6


@pytest.mark.parametrize("p, dim", [(2.0, 1), (2.0, -1), (1.0, 1)])
def test_normalize_holds_the_norm(p, dim):
    """``F.normalize(x) = x / ||x||`` with the norm held: the gradient of ``<w, normalize(x)>`` is
    ``w / ||x||`` (the plain derivative would subtract the radial part), and the value is unchanged."""
    g = _seeded(0)
    x = torch.randn(2, 5, dtype=D64, generator=g, requires_grad=True)
    w = torch.randn(2, 5, dtype=D64, generator=g)
    with OracleMode():
        y = F.normalize(x, p=p, dim=dim)
    torch.testing.assert_close(y, F.normalize(x, p=p, dim=dim), rtol=1e-14, atol=0)
    (grad,) = torch.autograd.grad((y * w).sum(), x)
    want = w / x.detach().norm(p, dim, keepdim=True)
    torch.testing.assert_close(grad, want, rtol=1e-13, atol=0)
    (plain,) = torch.autograd.grad((F.normalize(x, p=p, dim=dim) * w).sum(), x)
    assert float((plain - want).abs().max()) > 1e-3  # the test can tell the two apart


def test_casts_dtype_computes_input_dependent_casts_in_the_oracles_dtype():
    """``casts="dtype"``: ``t.float()``/``t.to(float32)``/``t.half()`` of an input-dependent tensor
    compute in float64; a constant's cast and the default ``casts="model"`` keep the rounding."""

    class M(nn.Module):
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.tensor([1 / 3, 2 / 3], dtype=D64))

        def forward(self, x):
            y = x.float().double() + x.to(torch.float32).to(D64) + x.half().double()
            return torch.stack([y.sum(1), (x * self.w.float()).sum(1)], 1)

    x = torch.randn(2, 2, dtype=D64, generator=_seeded(0)) / 3
    _, exact = modified_gradient(M(), x, casts="dtype")
    torch.testing.assert_close(exact[:, 0], 3 * x.sum(1), rtol=1e-15, atol=0)
    torch.testing.assert_close(exact[:, 1], (x * M().w.float().double()).sum(1), rtol=1e-15, atol=0)
    _, model = modified_gradient(M(), x)
    assert float((model[:, 0] - exact[:, 0]).abs().max()) > 1e-6  # half precision rounding kept
    torch.testing.assert_close(gradient_reference(M(), x, 0, casts="dtype"), torch.full_like(x, 3.0))
    with pytest.raises(InputError, match="casts"):
        modified_gradient(M(), x, casts="float32")


def test_inplace_functional_activation():
    class M(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Linear(3, 4), nn.Linear(4, 2)

        def forward(self, x):
            h = self.a(x)
            F.gelu(h)  # not in place: must not change h
            h.relu_()
            return self.b(F.silu(h, inplace=True))

    torch.manual_seed(0)
    m = M().to(D64)
    x = torch.randn(2, 3, dtype=D64)
    grad, logits = modified_gradient(m, x, target=1)
    z = m.a(x)
    h = torch.relu(z)
    s = F.silu(h)
    torch.testing.assert_close(logits, m.b(s).detach())
    slope = torch.where(h != 0, s / torch.where(h != 0, h, 1.0), 0.0) * (z > 0)
    torch.testing.assert_close(grad, (slope * m.b.weight[1]) @ m.a.weight, rtol=1e-12, atol=1e-14)


def test_bad_input():
    model = _relu_cnn()
    with pytest.raises(InputError, match="x must be a torch.Tensor"):
        lrp0_reference(model, np.zeros((1, 3, 8, 8)))
    with pytest.raises(InputError, match="finite"):
        lrp0_reference(model, torch.full((1, 3, 8, 8), float("nan")))
    with pytest.raises(InputError, match="floating"):
        lrp0_reference(model, torch.zeros((1, 3, 8, 8), dtype=torch.long))
    with pytest.raises(InputError, match="target"):
        lrp0_reference(model, torch.zeros((1, 3, 8, 8)), target=5)
    with pytest.raises(InputError, match="logits"):
        modified_gradient(nn.Conv2d(3, 2, 1), torch.zeros((1, 3, 8, 8)))
    with pytest.raises(InputError, match="dtype"):
        modified_gradient(model, torch.zeros((1, 3, 8, 8)), dtype=torch.float16)
    with pytest.raises(InputError, match="unknown torchvision"):
        torchvision_classifier("resnet_nonexistent")


def test_relative_error_is_finite():
    z = torch.zeros(3)
    assert relative_error(z, z) == 0.0
    assert relative_error(torch.ones(3), z) == pytest.approx(3 ** 0.5)
    assert relative_error(torch.tensor([1.0, float("nan")]), torch.ones(2)) == float("inf")
    assert relative_error(torch.tensor([2.0, 0.0]), torch.tensor([1.0, 0.0])) == pytest.approx(1.0)


# ---------------------------------------------------------------------------- part 2: the engine against the oracle
def _vgg():
    from torchvision.models.vgg import VGG, make_layers

    m = VGG(make_layers([8, "M", 16, "M"], batch_norm=True), num_classes=10)
    m.classifier = nn.Sequential(nn.Linear(16 * 49, 32), nn.ReLU(True), nn.Dropout(), nn.Linear(32, 10))
    return m


def _alexnet():
    m = torchvision.models.AlexNet(num_classes=10)
    m.classifier = nn.Sequential(nn.Dropout(), nn.Linear(256 * 36, 32), nn.ReLU(True), nn.Linear(32, 10))
    return m


def _efficientnet():
    from torchvision.models.efficientnet import EfficientNet, _efficientnet_conf

    setting, last = _efficientnet_conf("efficientnet_b0", width_mult=0.25, depth_mult=0.25)
    return EfficientNet(setting, 0.2, last_channel=last, num_classes=10)


def _efficientnet_v2():
    from torchvision.models.efficientnet import EfficientNet, FusedMBConvConfig, MBConvConfig

    setting = [FusedMBConvConfig(1, 3, 1, 8, 8, 1), FusedMBConvConfig(4, 3, 2, 8, 16, 1),
               MBConvConfig(4, 3, 2, 16, 24, 1, width_mult=1.0, depth_mult=1.0)]
    return EfficientNet(setting, 0.2, last_channel=64, num_classes=10)


def _regnet():
    from torchvision.models.regnet import BlockParams, RegNet

    return RegNet(BlockParams.from_init_params(depth=3, w_0=8, w_a=8.0, w_m=2.0, group_width=8, se_ratio=0.25),
                  num_classes=10, stem_width=8)


def _convnext():
    from torchvision.models.convnext import CNBlockConfig, ConvNeXt

    return ConvNeXt([CNBlockConfig(16, 32, 1), CNBlockConfig(32, None, 1)], num_classes=10)


def _vit():
    from torchvision.models.vision_transformer import VisionTransformer

    m = VisionTransformer(image_size=32, patch_size=8, num_layers=2, num_heads=2, hidden_dim=32, mlp_dim=64,
                          num_classes=10)
    nn.init.normal_(m.heads.head.weight, std=0.2)  # torchvision initialises it to zeros: all maps would be 0
    return m


def _swin(v2):
    from torchvision.models.swin_transformer import (
        PatchMerging, PatchMergingV2, SwinTransformer, SwinTransformerBlock, SwinTransformerBlockV2,
    )

    return SwinTransformer([4, 4], 16, [2, 2], [2, 2], [2, 2], num_classes=10,
                           block=SwinTransformerBlockV2 if v2 else SwinTransformerBlock,
                           downsample_layer=PatchMergingV2 if v2 else PatchMerging)


def _maxvit():
    from torchvision.models.maxvit import MaxVit

    return MaxVit(input_size=(32, 32), stem_channels=8, partition_size=2, block_channels=[8, 16],
                  block_layers=[1, 1], head_dim=4, stochastic_depth_prob=0.0, num_classes=10)


def _tv(fn, **kw):
    return lambda: getattr(torchvision.models, fn)(num_classes=10, **kw)


# family -> (builder, input side, marks)
FAMILIES = {
    "resnet": (lambda: torchvision.models.resnet.ResNet(torchvision.models.resnet.BasicBlock, [1, 1, 1, 1],
                                                        num_classes=10), 32, ()),
    "resnext_bottleneck": (lambda: torchvision.models.resnet.ResNet(torchvision.models.resnet.Bottleneck,
                                                                    [1, 1, 1, 1], groups=2, width_per_group=16,
                                                                    num_classes=10), 32, ()),
    "vgg_bn": (_vgg, 32, ()),
    "alexnet": (_alexnet, 63, ()),
    "densenet": (lambda: torchvision.models.densenet.DenseNet(8, (2, 2), 16, bn_size=2, num_classes=10), 32, ()),
    "mobilenet_v2": (_tv("mobilenet_v2", width_mult=0.25), 32, ()),
    "mobilenet_v3_small": (_tv("mobilenet_v3_small", width_mult=0.5), 32, ()),
    "efficientnet": (_efficientnet, 32, ()),
    "efficientnet_v2": (_efficientnet_v2, 32, ()),
    "googlenet": (_tv("googlenet", aux_logits=False, init_weights=False), 32, ()),
    "shufflenet_v2": (_tv("shufflenet_v2_x0_5"), 32, ()),
    "squeezenet": (_tv("squeezenet1_1"), 32, ()),
    "regnet_y": (_regnet, 32, ()),
    "mnasnet": (_tv("mnasnet0_5"), 32, ()),
    "convnext": (_convnext, 32, ()),
    "vit": (_vit, 32, ()),
    "swin": (lambda: _swin(False), 32, ()),
    "swin_v2": (lambda: _swin(True), 32, ()),
    "maxvit": (_maxvit, 32, ()),
}


@pytest.mark.parametrize("family", [pytest.param(k, marks=v[2]) for k, v in FAMILIES.items()])
def test_engine_matches_oracle(family):
    make, side, _ = FAMILIES[family]
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = make()
    model = randomise_batchnorm_stats(model, _seeded(1))
    x = torch.randn(1, 3, side, side, dtype=D64, generator=_seeded(2))
    r = compare_with_engine(model, x)
    assert r["lrp0_reference_norm"] > 0, r
    assert r["gradient_rel_error"] <= 1e-10, r
    assert r["lrp0_oracle_rel_error"] <= 1e-8, r


class _ToLast(nn.Module):
    def forward(self, x):
        return x.permute(0, 2, 3, 1)


class _ToFirst(nn.Module):
    def forward(self, x):
        return x.permute(0, 3, 1, 2)


def _tail():
    return [nn.Conv2d(4, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 5)]


NORM_CASES = {
    "batch_norm_folded": (lambda: nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), *_tail()), ()),
    "batch_norm_unfolded": (lambda: nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.BatchNorm2d(4), *_tail()), ()),
    "layer_norm": (lambda: nn.Sequential(nn.Conv2d(3, 4, 3), _ToLast(), nn.LayerNorm(4), _ToFirst(), *_tail()), ()),
}


@pytest.mark.parametrize("case", [pytest.param(k, marks=v[1]) for k, v in NORM_CASES.items()])
def test_engine_normalisation_steps(case):
    """The smallest models that isolate the engine's step at a normalisation layer."""
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = randomise_batchnorm_stats(NORM_CASES[case][0](), _seeded(1))
    r = compare_with_engine(model, torch.randn(2, 3, 8, 8, dtype=D64, generator=_seeded(2)))
    assert r["lrp0_reference_norm"] > 0, r
    assert r["gradient_rel_error"] <= 1e-10, r
    assert r["lrp0_oracle_rel_error"] <= 1e-8, r


# ---------------------------------------------------------------------------- part 3: nothing nonlinear slips through
_LINEAR = {
    # linear maps and data movement: gradient may pass
    "linear", "conv1d", "conv2d", "conv3d", "batch_norm", "adaptive_avg_pool2d", "avg_pool2d", "dropout", "pad",
    "add", "add_", "__add__", "__iadd__", "__radd__", "sub", "__sub__", "__rsub__", "neg", "__neg__", "mean", "sum",
    "flatten", "view", "view_as", "reshape", "permute", "transpose", "swapaxes", "unsqueeze", "squeeze", "expand",
    "contiguous", "clone", "chunk", "split", "cat", "stack", "roll", "__getitem__", "__setitem__", "masked_fill",
    "__get__", "fn",  # properties (.T, .shape ...); max_pool2d's boolean dispatch (winner-take-all selection)
    "max_pool2d", "adaptive_max_pool2d", "_assert", "zero_", "new_zeros", "size", "dim", "numel",
    "conv_transpose1d", "conv_transpose2d", "conv_transpose3d", "interpolate",  # (transposed) convolution, resampling
}
_BILINEAR = {"mul", "__mul__", "__rmul__", "mul_", "__imul__", "matmul", "__matmul__", "bmm", "einsum", "div",
             "__truediv__", "div_", "__itruediv__"}


def _tensors(obj):
    if torch.is_tensor(obj):
        yield obj
    elif isinstance(obj, (list, tuple)):
        for o in obj:
            yield from _tensors(o)


class _Probe(torch.autograd.Function):
    @staticmethod
    def forward(ctx, t, log, name):
        ctx.log, ctx.name = log, name
        return t.clone()

    @staticmethod
    def backward(ctx, g):
        ctx.log.append((ctx.name, float(g.abs().max())))
        return g, None, None


class _Audit(OracleMode):
    """The oracle's mode plus a probe on every call outside the linear, bilinear-with-one-constant and
    replaced operations whose inputs carry gradient; the probe logs the gradient that reaches it."""

    def __init__(self):
        super().__init__()
        self.log = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = super().__torch_function__(func, types, args, kwargs)
        name = getattr(func, "__name__", "")
        live = [t for t in _tensors(list(args) + list(kwargs.values())) if t.requires_grad]
        try:
            replaced = any(func in table for table in (_oracle._ACTIVATIONS, _oracle._GATES, _oracle._REPLACED,
                                                       _oracle._ATTENTION_WEIGHTS, _oracle._HELD_STATISTICS))
        except TypeError:
            replaced = False
        if replaced or not live or name in _LINEAR:
            return out
        if name in _BILINEAR:
            if "div" in name:  # x / c is linear, c / x and x / x are not
                nonlinear = len(args) > 1 and torch.is_tensor(args[1]) and args[1].requires_grad
            else:  # a product is linear when at most one factor carries gradient or one is a gate (held)
                nonlinear = len(live) >= 2 and not any(_oracle._is_gate(t) for t in live)
            if not nonlinear:
                return out
        if torch.is_tensor(out) and out.is_floating_point() and out.requires_grad:
            return _Probe.apply(out, self.log, name)
        return out


# the families with more than convolution, BatchNorm, ReLU and pooling (the others cost time only)
AUDITED = ["mobilenet_v3_small", "efficientnet", "efficientnet_v2", "regnet_y", "googlenet", "densenet", "convnext",
           "vit", "swin", "swin_v2", "maxvit"]


@pytest.mark.parametrize("family", AUDITED)
def test_no_gradient_through_unreplaced_nonlinear_ops(family):
    """Every gradient path from the logits to ``x`` runs through linear maps and the oracle's
    replacements only (Swin V2's cosine attention, logit-scale clamp/exp, MaxViT's q-k einsum and
    the like may appear, but only on detached paths)."""
    make, side, _ = FAMILIES[family]
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = randomise_batchnorm_stats(make(), _seeded(1)).eval().to(D64).requires_grad_(False)
    x = torch.randn(1, 3, side, side, dtype=D64, generator=_seeded(2), requires_grad=True)
    audit = _Audit()
    with audit:
        logits = model(x)
    assert audit.log == []
    (grad,) = torch.autograd.grad(logits[0, int(logits.argmax())], x)
    assert bool(torch.isfinite(grad).all()) and float(grad.abs().max()) > 0
    nonzero = [(n, g) for n, g in audit.log if g != 0]
    assert nonzero == [], nonzero


def test_transposed_convolution_and_bicubic_resampling_are_plain_linear_maps_to_the_oracle():
    """The oracle needs nothing for them: autograd's derivative of a linear map is the map,
    and no gradient reaches an unreplaced nonlinear operation (LowFormer's, CrossViT's)."""

    class Up(nn.Module):
        def __init__(self):
            super().__init__()
            self.c = nn.Conv2d(3, 4, 3, padding=1)
            self.up = nn.ConvTranspose2d(4, 4, 4, stride=2, padding=1, groups=4)
            self.fc = nn.Linear(4 * 7 * 7, 5)

        def forward(self, x):
            y = self.up(torch.relu(self.c(x)))
            y = nn.functional.interpolate(y, size=(7, 7), mode="bicubic", align_corners=False)
            return self.fc(nn.functional.gelu(y).flatten(1))

    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = Up().eval().to(D64).requires_grad_(False)
    x = torch.randn(1, 3, 5, 5, dtype=D64, generator=_seeded(2), requires_grad=True)
    audit = _Audit()
    with audit:
        logits = model(x)
    (grad,) = torch.autograd.grad(logits[0, int(logits.argmax())], x)
    assert float(grad.abs().max()) > 0
    assert [(n, g) for n, g in audit.log if g != 0] == []
