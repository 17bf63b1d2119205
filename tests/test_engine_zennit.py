"""Peer check: the torch engine against zennit 0.5.1 (test-only dependency), float64.

Configuration (both sides the same conventions):

* BatchNorm merged on both sides (zennit: ``ResNetCanonizer`` = ``SequentialMergeBatchNorm`` +
  the residual ``out + identity`` replaced by ``torch.stack`` + a ``Sum`` module).
* Conv2d/Linear: zennit ``AlphaBeta(alpha=1+beta, beta, zero_params='bias')`` resp.
  ``Gamma(gamma, zero_params='bias')`` with stabilizer 1e-30; ours: default
  ``Conventions()`` (bias only in the forward pass, 0/0 := 0, no stabiliser).  The
  1e-30 stabiliser is exact here in float64: it changes a denominator only where it is
  0, and there every numerator is 0 as well.
* Residual ``Sum`` and average pooling: zennit's default composites give them the z-rule
  (``Norm``); the engine applies the SAME rule as at every other affine layer (the sum has
  weights 1, the pooling non-negative weights).  These conventions differ, so the zennit
  side gets a small ``BasicHook`` (``_NonNegRule`` below) that evaluates the
  ``boundcheck.rules`` terms of the rule on an operator with non-negative weights using
  zennit's own hook machinery (input modifiers z+/z-, gradient mapper, reducer).
* BatchNorm ``eps`` is set to 0 in the test models: zennit's ``MergeBatchNorm`` folds the
  BN into the conv and then sets the BN to mean 0, var 1, weight 1, bias 0 but keeps its
  ``eps``, so the "identity" BN left in zennit's model divides by ``sqrt(1 + eps)``
  (relative 5e-6 per BN with the default eps 1e-5, about 1e-4 .. 1e-3 accumulated over
  resnet50's BNs, measured); the engine's folding removes the BN exactly.
* ReLU / max pooling: zennit uses the gradient, the engine passes relevance through
  ReLU unchanged; they coincide because the relevance arriving at a unit with output 0
  is 0 for every rule here (the numerator carries the factor z_b = 0).

Remaining difference (measured, reported in the assertion messages):

* LRP-beta (beta 0 and 1) on resnet50: none beyond rounding, max |diff| / max |R| = 1e-14.
* zennit's Gamma is the *generalised* gamma rule: where a layer's output (pre-activation
  incl. bias) is negative it uses ``W + gamma W-`` (gamma on the negative parts), and it
  drops relevance where the output is exactly 0; [P1] eq. (9) (and the engine) always
  weights the positive parts.  In resnet50 the last conv of each bottleneck has negative
  outputs that receive relevance through the residual sum, so the maps differ there
  (measured on the calibrated random-init resnet50 at 1x3x64x64, float64: max|diff|/max|R|
  = 3.6e-5 for gamma=100 and 3.5e-6 for gamma=1000 -- the two branches differ by O(1/gamma);
  see ``test_resnet50_gamma_difference_is_the_negative_branch``).  On a plain CNN, where
  every unit that receives relevance has a positive pre-activation, they coincide to
  rounding (``test_plain_cnn_gamma_matches_zennit``).
"""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
zennit = pytest.importorskip("zennit")
import torch.nn as nn  # noqa: E402
import torchvision  # noqa: E402
from zennit.attribution import Gradient  # noqa: E402
from zennit.canonizers import SequentialMergeBatchNorm  # noqa: E402
from zennit.composites import LayerMapComposite  # noqa: E402
from zennit.core import BasicHook, Stabilizer  # noqa: E402
from zennit.layer import Sum  # noqa: E402
from zennit.rules import AlphaBeta, Gamma  # noqa: E402
from zennit.torchvision import ResNetCanonizer  # noqa: E402

from boundcheck.rules import parse_rule  # noqa: E402
from empirical.engine import Explainer  # noqa: E402

pytestmark = pytest.mark.torch
torch.set_num_threads(2)
EPS = 1e-30


class _NonNegRule(BasicHook):
    """A boundcheck rule on an operator with non-negative weights (Sum, average pooling):
    only the pp (z+) and pn (z-) parts exist."""

    def __init__(self, rule_name):
        rule = parse_rule(rule_name)
        stab = Stabilizer.ensure(EPS)

        def mapper(out_grad, outputs):
            g = [torch.zeros_like(out_grad), torch.zeros_like(out_grad)]
            for term in rule.terms:
                a_pp, a_pn = term.parts[0], term.parts[1]
                if a_pp == 0 and a_pn == 0:
                    continue
                ratio = term.coefficient * out_grad / stab(a_pp * outputs[0] + a_pn * outputs[1])
                g[0] = g[0] + a_pp * ratio
                g[1] = g[1] + a_pn * ratio
            return g

        super().__init__(
            input_modifiers=[lambda x: x.clamp(min=0), lambda x: x.clamp(max=0)],
            param_modifiers=[lambda p, name: p, lambda p, name: p],
            output_modifiers=[lambda o: o] * 2,
            gradient_mapper=mapper,
            reducer=lambda inputs, gradients: inputs[0] * gradients[0] + inputs[1] * gradients[1],
        )


def _zennit_map(model, x, rule_name, target, canonizer):
    kind, value = rule_name.rsplit("_", 1)
    value = float(value)
    if kind == "lrp_beta":
        lin = AlphaBeta(alpha=1.0 + value, beta=value, stabilizer=EPS, zero_params="bias")
    else:
        lin = Gamma(gamma=value, stabilizer=EPS, zero_params="bias")
    layer_map = [(nn.Conv2d, lin), (nn.Linear, lin), (Sum, _NonNegRule(rule_name)),
                 (nn.AdaptiveAvgPool2d, _NonNegRule(rule_name)), (nn.AvgPool2d, _NonNegRule(rule_name))]
    composite = LayerMapComposite(layer_map=layer_map, canonizers=[canonizer])
    with Gradient(model=model, composite=composite) as attributor:
        out, rel = attributor(x, torch.eye(out_dim(model, x), dtype=x.dtype)[[target]])
    return rel


def out_dim(model, x):
    with torch.no_grad():
        return model(x).shape[1]


def _calibrated(model, shape, seed):
    """Random init, then BN statistics re-estimated on random data and random affine BN
    parameters, so activations are not degenerate and biases are non-zero."""
    torch.manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            with torch.no_grad():
                m.weight.uniform_(0.5, 1.5)
                m.bias.normal_(0.0, 0.2)
            m.reset_running_stats()
            m.momentum = None
    model.train()
    with torch.no_grad():
        for _ in range(2):
            model(torch.randn(4, *shape))
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.eps = 0.0  # see the module docstring: zennit's merged BN is x / sqrt(1 + eps)
    return model.eval().double()


@pytest.fixture(scope="module")
def resnet():
    return _calibrated(torchvision.models.resnet50(), (3, 64, 64), 0)


def _compare(model, x, rule, canonizer):
    e = Explainer(model, dtype=torch.float64)
    att = e.attribute(x, rule, reduce="none")
    target = int(att.target[0])
    ref = _zennit_map(model, x, rule, target, canonizer)
    ours = att.maps[rule]
    diff = (ours - ref).abs().max().item() / ref.abs().max().item()
    rel_l2 = ((ours - ref).norm() / ref.norm()).item()
    return diff, rel_l2, ours, ref


@pytest.mark.parametrize("rule", ["lrp_beta_0", "lrp_beta_1"])
def test_resnet50_beta_matches_zennit(resnet, rule):
    x = torch.randn(1, 3, 64, 64, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    diff, rel_l2, _, _ = _compare(resnet, x, rule, ResNetCanonizer())
    assert diff < 1e-9, f"{rule}: max |diff| / max |R| = {diff:.3e}, rel L2 = {rel_l2:.3e}"


@pytest.mark.parametrize("rule", ["lrp_gamma_100", pytest.param("lrp_gamma_1000", marks=pytest.mark.extended)])
def test_resnet50_gamma_difference_is_the_negative_branch(resnet, rule):
    """zennit's generalised Gamma differs where negative outputs receive relevance (see module
    docstring): O(1/gamma), measured 3.6e-5 (gamma=100), 3.5e-6 (gamma=1000)."""
    x = torch.randn(1, 3, 64, 64, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    diff, rel_l2, ours, ref = _compare(resnet, x, rule, ResNetCanonizer())
    gamma = float(rule.rsplit("_", 1)[1])
    assert diff < 1e-2 / gamma, f"{rule}: max |diff| / max |R| = {diff:.3e}, rel L2 = {rel_l2:.3e}"


def _plain_cnn():
    torch.manual_seed(3)
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(8, 12, 3, stride=2, padding=1), nn.BatchNorm2d(12), nn.ReLU(),
        nn.Conv2d(12, 12, 3, padding=1, groups=3), nn.BatchNorm2d(12), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(12, 5),
    )
    return _calibrated(model, (3, 16, 16), 3)


@pytest.mark.parametrize("rule", ["lrp_gamma_100", "lrp_gamma_0.25", "lrp_beta_1"])
def test_plain_cnn_gamma_matches_zennit(rule):
    model = _plain_cnn()
    x = torch.randn(1, 3, 16, 16, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        assert model(x)[0].max() > 0  # the target logit takes zennit's positive branch
    diff, rel_l2, _, _ = _compare(model, x, rule, SequentialMergeBatchNorm())
    assert diff < 1e-9, f"{rule}: max |diff| / max |R| = {diff:.3e}, rel L2 = {rel_l2:.3e}"
