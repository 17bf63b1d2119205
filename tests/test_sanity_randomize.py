"""Cascading randomisation works on a deep copy and changes exactly the scheduled parameters."""

import pytest

torch = pytest.importorskip("torch")

from empirical.sanity.randomize import cascade, randomised_copy  # noqa: E402
from empirical.sanity.schedules import build_schedule  # noqa: E402


@pytest.fixture(scope="module")
def lite0():
    from efficientnet_lite_pytorch import EfficientNet

    torch.manual_seed(0)
    m = EfficientNet.from_name("efficientnet-lite0").eval()
    # make every parameter and buffer distinguishable from its default initialisation
    with torch.no_grad():
        for t in list(m.parameters()) + [b for b in m.buffers() if b.is_floating_point()]:
            t.add_(torch.rand_like(t) + 0.5)
    return m


def _owner(name):
    return name.rsplit(".", 1)[0] if "." in name else ""


def test_cascade_changes_exactly_the_scheduled_modules(lite0):
    before = {k: v.clone() for k, v in lite0.state_dict().items()}
    rng_state = torch.get_rng_state()
    steps = build_schedule(lite0, max_steps=4)
    for step, m in cascade(lite0, steps, seed=3):
        sd = m.state_dict()
        for k, v in sd.items():
            changed = not torch.equal(v, before[k])
            in_step = _owner(k) in step.cumulative
            if k.endswith("num_batches_tracked"):
                continue
            assert changed == in_step, (step.index, k)
    # the user's model and the global RNG are untouched
    for k, v in lite0.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert torch.equal(torch.get_rng_state(), rng_state)


def test_batchnorm_reset_to_defaults_and_reproducible(lite0):
    steps = build_schedule(lite0, max_steps=3)
    a = randomised_copy(lite0, steps[2].cumulative, seed=5)
    bn = dict(a.named_modules())["_bn1"]
    assert torch.equal(bn.weight, torch.ones_like(bn.weight)) and torch.equal(bn.bias, torch.zeros_like(bn.bias))
    assert torch.equal(bn.running_mean, torch.zeros_like(bn.running_mean))
    assert torch.equal(bn.running_var, torch.ones_like(bn.running_var))
    # a module's values depend only on (seed, name): cascade == one-shot copy
    *_, (last, c) = list(cascade(lite0, steps[:3], seed=5))
    for (k, v), (k2, v2) in zip(a.state_dict().items(), c.state_dict().items()):
        assert k == k2 and torch.equal(v, v2), k
    b = randomised_copy(lite0, steps[2].cumulative, seed=6)
    assert not torch.equal(dict(b.named_modules())["_fc"].weight, dict(a.named_modules())["_fc"].weight)


def test_randomization_rows_on_a_toy_model_with_a_gradient_explainer():
    from empirical.sanity.randomize import randomization_rows
    from empirical.sanity.schedules import Step
    from empirical.sanity.similarity import compare

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.ReLU(), torch.nn.Flatten(),
                              torch.nn.Linear(4 * 8 * 8, 3)).double()
    steps = [Step(0, "3", ("3",), frozenset({"3"})), Step(1, "0", ("0",), frozenset({"0", "3"}))]

    def factory(model):
        def explain(x, methods, target):
            xg = x.clone().requires_grad_(True)
            out = model(xg)[torch.arange(len(x)), torch.as_tensor(target)].sum()
            (g,) = torch.autograd.grad(out, xg)
            return {"gradient": g[:, 0].numpy(), "gradient_x_input": (g * x)[:, 0].detach().numpy()}
        return explain

    x = torch.randn(2, 1, 8, 8, dtype=torch.float64)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    rows = randomization_rows(net, x, [0, 2], steps, ["gradient", "gradient_x_input"], factory, seed=1)
    assert len(rows) == 2 and len(rows[0]) == 2 * 2
    # step 1 equals a direct comparison with the twice-randomised copy
    m1 = randomised_copy(net, steps[1].cumulative, seed=1)
    ref = compare(factory(net)(x, None, [0, 2])["gradient"][1], factory(m1)(x, None, [0, 2])["gradient"][1])
    got = next(r for r in rows[1] if r["step"] == 1 and r["method"] == "gradient")
    assert got["mse_second_moment"] == pytest.approx(ref["mse_second_moment"])
    assert got["ssim_max_abs"] == pytest.approx(ref["ssim_max_abs"])
    only_last = randomization_rows(net, x, [0, 2], steps, ["gradient"], factory, seed=1, evaluate={1})
    assert [r["step"] for r in only_last[0]] == [1]
    for k, v in net.state_dict().items():
        assert torch.equal(v, before[k])


def test_swin_attention_module_gets_its_default_initialisation():
    import math

    import torch
    import torchvision

    from empirical.sanity.randomize import randomised_copy
    from empirical.sanity.schedules import build_schedule

    m = torchvision.models.swin_v2_t()
    attn = m.features[7][1].attn
    with torch.no_grad():
        attn.logit_scale.fill_(0.123)  # a "trained" value
        for p in m.features[7][1].parameters():
            p.add_(0.5)
    before = {k: v.clone() for k, v in m.state_dict().items()}
    step1 = build_schedule(m)[1]
    r = randomised_copy(m, step1.cumulative, seed=3)
    ra = r.features[7][1].attn
    assert torch.allclose(ra.logit_scale, torch.full_like(ra.logit_scale, math.log(10.0)))
    assert torch.equal(ra.relative_position_index, attn.relative_position_index)  # geometry, not weights
    assert not torch.equal(ra.qkv.weight, attn.qkv.weight)
    assert not torch.equal(ra.cpb_mlp[0].weight, attn.cpb_mlp[0].weight)
    # the original is untouched and blocks below the step keep their weights
    assert all(torch.equal(v, m.state_dict()[k]) for k, v in before.items())
    assert torch.equal(r.features[5][0].attn.qkv.weight, m.features[5][0].attn.qkv.weight)
