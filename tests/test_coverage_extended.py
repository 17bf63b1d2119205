"""Every torchvision classifier against the LRP-0 exactness oracle (extended suite).

For each name in ``torchvision.models.list_models(module=torchvision.models)``: random
weights, random norm-layer statistics, one float64 image at the smallest square input
the model takes (:func:`empirical.oracle.torchvision_classifier`); the engine's LRP-0
map (bias in the denominators, logit start) must match ``x * modified gradient`` to a
relative 1e-8 and its gradient the plain gradient to 1e-10, every family; a model whose
float64 copies would not fit in the available memory is skipped.

Run with ``pytest -m extended tests/test_coverage_extended.py``.
"""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
torchvision = pytest.importorskip("torchvision")

from empirical.oracle import compare_with_engine, randomise_batchnorm_stats, torchvision_classifier  # noqa: E402

pytestmark = [pytest.mark.torch, pytest.mark.extended]

# float64 copies held at once (oracle/gradient copy, engine copy with W+ and W-, the inputs' model): bytes/param
BYTES_PER_PARAMETER = 48


def _params():
    out = []
    for name in torchvision.models.list_models(module=torchvision.models):
        out.append(pytest.param(name))
    return out


def _available_bytes():
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


@pytest.mark.parametrize("name", _params())
def test_torchvision_classifier_matches_oracle(name):
    model, side = torchvision_classifier(name)
    n = sum(p.numel() for p in model.parameters())
    avail = _available_bytes()
    if avail is not None and n * BYTES_PER_PARAMETER > avail:
        pytest.skip(f"{name}: {n / 1e6:.0f}M parameters need about {n * BYTES_PER_PARAMETER / 2**30:.1f} GiB")
    model = randomise_batchnorm_stats(model, torch.Generator().manual_seed(1))
    x = torch.randn(1, 3, side, side, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    r = compare_with_engine(model, x)
    assert r["lrp0_reference_norm"] > 0, r
    assert r["gradient_rel_error"] <= 1e-10, r
    assert r["lrp0_oracle_rel_error"] <= 1e-8, r
