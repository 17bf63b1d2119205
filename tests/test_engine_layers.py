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
