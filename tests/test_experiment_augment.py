"""Augmentations of Section 6.1: reproducible per (seed, image, set), disjoint sets, ranges, torchvision equality."""

import pytest

torch = pytest.importorskip("torch")

from empirical.augment import (  # noqa: E402
    PHOTOMETRIC_RANGES,
    SampleStream,
    apply_photometric,
    apply_photometric_reference,
    augmented_samples,
    derive_seed,
    photometric_params,
    sample_generator,
)


def _img(seed=0, h=24, w=20):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(3, h, w, generator=g)


def _norm(x):
    return (x - 0.5) / 0.5


@pytest.mark.parametrize("aug", ["gaussian", "photometric"])
def test_same_seed_gives_identical_samples(aug):
    x = _img()
    a = augmented_samples(x, _norm, aug, seed=7, image_id="img_3.jpg", set_index=1, m=6)
    b = augmented_samples(x, _norm, aug, seed=7, image_id="img_3.jpg", set_index=1, m=6)
    assert torch.equal(a, b)


@pytest.mark.parametrize("aug", ["gaussian", "photometric"])
def test_sets_images_and_seeds_are_different_draws(aug):
    x = _img()
    s1 = augmented_samples(x, _norm, aug, 7, "a", 1, 4)
    s2 = augmented_samples(x, _norm, aug, 7, "a", 2, 4)
    other_img = augmented_samples(x, _norm, aug, 7, "b", 1, 4)
    other_seed = augmented_samples(x, _norm, aug, 8, "a", 1, 4)
    for other in (s2, other_img, other_seed):
        for i in range(4):
            for k in range(4):
                assert not torch.equal(s1[i], other[k])


@pytest.mark.parametrize("aug", ["gaussian", "photometric"])
def test_samples_do_not_depend_on_chunking(aug):
    x = _img()
    whole = augmented_samples(x, _norm, aug, 1, "a", 1, 7)
    st = SampleStream(x, _norm, aug, sample_generator(1, "a", aug, 1), 7)
    parts = torch.cat([st.take(2), st.take(1), st.take(10)])
    assert st.remaining == 0 and torch.equal(whole, parts)


def test_prefixes_are_nested():
    x = _img()
    assert torch.equal(augmented_samples(x, _norm, "gaussian", 1, "a", 1, 3),
                       augmented_samples(x, _norm, "gaussian", 1, "a", 1, 9)[:3])


def test_derive_seed_is_stable_and_checks_set_index():
    assert derive_seed(0, "x", "gaussian", 1) == derive_seed(0, "x", "gaussian", 1)
    assert derive_seed(0, "x", "gaussian", 1) != derive_seed(0, "x", "gaussian", 2)
    assert 0 <= derive_seed(123, "x", "photometric", 2) < 2**63
    with pytest.raises(ValueError):
        derive_seed(0, "x", "gaussian", 3)


def test_photometric_parameters_within_paper_ranges():
    p = photometric_params(2000, sample_generator(0, "a", "photometric", 1))
    for j, (lo, hi) in enumerate(PHOTOMETRIC_RANGES.values()):
        assert float(p[:, j].min()) >= lo and float(p[:, j].max()) <= hi
        # uniform: the draws fill the range
        assert float(p[:, j].min()) < lo + 0.02 * (hi - lo) and float(p[:, j].max()) > hi - 0.02 * (hi - lo)


def test_photometric_vectorised_equals_torchvision_functionals():
    x = _img(3, 16, 18)
    p = photometric_params(9, sample_generator(0, "a", "photometric", 1))
    got = apply_photometric(x, p)
    ref = apply_photometric_reference(x, p)
    assert got.shape == (9, 3, 16, 18)
    assert torch.allclose(got, ref, atol=1e-5)
    assert float(got.min()) >= 0.0 and float(got.max()) <= 1.0
    assert torch.equal(x, _img(3, 16, 18))  # input untouched


def test_gaussian_noise_has_unit_variance_in_network_space():
    x = _img(0, 64, 64)
    s = augmented_samples(x, _norm, "gaussian", 0, "a", 1, 16)
    noise = s - _norm(x)
    assert float(noise.std()) == pytest.approx(1.0, abs=0.02)
    assert float(noise.mean()) == pytest.approx(0.0, abs=0.02)
    s3 = SampleStream(x, _norm, "gaussian", sample_generator(0, "a", "gaussian", 1), 16, sigma=3.0).take(16)
    assert torch.allclose(s3 - _norm(x), 3.0 * noise, atol=1e-5)
