"""Seeded, reproducible augmentations of Section 6.1 (the x^(i) of eq. 21).

Two augmentations, each drawn for two *disjoint* sample sets (set 1 and set 2
of eq. 38/39) of one image:

``gaussian``
    SmoothGrad-type additive noise, standard normal with variance sigma^2 = 1
    ("standard normal noise with a variance of 1"), added in the *network input
    space*, i.e. after the model's preprocessing and normalisation.  For
    ImageNet mean/std normalisation this is a large perturbation (about 4-4.5
    units of the [0, 1] pixel scale); that is what the paper states, so it is
    what is done.  ``sigma`` is a parameter.
``photometric``
    Brightness factor in [0.875, 1.125], contrast in [0.5, 1.5], saturation in
    [0.8, 1.2], hue shift in [-0.1, 0.1], each drawn uniformly and *always*
    applied (p = 1), in this fixed order, to the [0, 1] image *before*
    normalisation.  This departs deliberately from
    ``torchvision.transforms.v2.RandomPhotometricDistort`` (which applies each
    adjustment with p = 0.5, draws whether contrast comes before or after the
    saturation/hue step, and permutes channels with p = 0.5): the paper says the
    parameters "are drawn uniformly from the ranges", and a random subset of
    operations plus channel permutation would mix a different distribution
    into Q.  The operations are vectorised over the samples and equal
    ``torchvision.transforms.v2.functional.adjust_brightness / adjust_contrast /
    adjust_saturation / adjust_hue`` applied per sample (tested).

Reproducibility: every (global seed, image id, augmentation, set index) gets
its own ``torch.Generator`` (CPU; seed from SHA-256, so independent of Python's
hash randomisation).  Sample k of a set is the k-th draw of its generator, so
the samples do not depend on how the runner chunks them, on which rank or
device an image runs, or on resuming; sets 1 and 2 use different generators
(disjoint, independent draws).  Samples are generated on the CPU and moved.
"""

from __future__ import annotations

import hashlib

import torch

AUGMENTATIONS: tuple[str, ...] = ("gaussian", "photometric")

#: Section 6.1 ranges, in the order they are applied.
PHOTOMETRIC_RANGES: dict[str, tuple[float, float]] = {
    "brightness": (0.875, 1.125),
    "contrast": (0.5, 1.5),
    "saturation": (0.8, 1.2),
    "hue": (-0.1, 0.1),
}
GAUSSIAN_SIGMA = 1.0


def derive_seed(seed: int, image_id: str, augmentation: str, set_index: int) -> int:
    """63-bit seed from (global seed, image id, augmentation, set index)."""
    if set_index not in (1, 2):
        raise ValueError(f"set_index must be 1 or 2, got {set_index}")
    key = f"{int(seed)}\x00{image_id}\x00{augmentation}\x00{set_index}".encode()
    return int.from_bytes(hashlib.sha256(key).digest()[:8], "little") & ((1 << 63) - 1)


def sample_generator(seed: int, image_id: str, augmentation: str, set_index: int) -> torch.Generator:
    """A CPU generator seeded by :func:`derive_seed`."""
    g = torch.Generator(device="cpu")
    g.manual_seed(derive_seed(seed, image_id, augmentation, set_index))
    return g


# ----------------------------------------------------------------------------- photometric
def photometric_params(m: int, gen: torch.Generator) -> torch.Tensor:
    """(m, 4) float64 parameters (brightness, contrast, saturation, hue), uniform in their ranges."""
    u = torch.rand((m, 4), generator=gen, dtype=torch.float64)
    lo = torch.tensor([r[0] for r in PHOTOMETRIC_RANGES.values()], dtype=torch.float64)
    hi = torch.tensor([r[1] for r in PHOTOMETRIC_RANGES.values()], dtype=torch.float64)
    return lo + u * (hi - lo)


def _gray(x: torch.Tensor) -> torch.Tensor:
    r, g, b = x.unbind(dim=-3)
    return (0.2989 * r + 0.587 * g + 0.114 * b).unsqueeze(-3)


def _blend(a: torch.Tensor, b: torch.Tensor, ratio: torch.Tensor) -> torch.Tensor:
    return (a * ratio + b * (1.0 - ratio)).clamp(0.0, 1.0)


def apply_photometric(x01: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
    """Apply (k, 4) parameters to a [0, 1] RGB image (C, H, W) -> (k, C, H, W), vectorised.

    Fixed order: brightness, contrast, saturation, hue (torchvision's formulas:
    blend with black, with the mean grey level, with the grey image; hue shift in
    HSV).  The input is not modified.
    """
    from torchvision.transforms.v2.functional._color import _hsv_to_rgb, _rgb_to_hsv

    if x01.dim() != 3 or x01.shape[0] != 3:
        raise ValueError(f"expected an RGB image (3, H, W), got {tuple(x01.shape)}")
    x = x01.to(torch.float32).unsqueeze(0).expand(params.shape[0], -1, -1, -1)
    p = params.to(torch.float32).view(-1, 4, 1, 1, 1)
    x = _blend(x, torch.zeros_like(x), p[:, 0])                                    # brightness
    x = _blend(x, _gray(x).mean(dim=(-3, -2, -1), keepdim=True), p[:, 1])          # contrast
    x = _blend(x, _gray(x), p[:, 2])                                                # saturation
    hsv = _rgb_to_hsv(x)  # batched over the samples
    h, s, v = hsv.unbind(dim=-3)
    h = (h + p[:, 3, 0]).remainder(1.0)                                             # hue
    return _hsv_to_rgb(torch.stack((h, s, v), dim=-3))


def apply_photometric_reference(x01: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
    """Per-sample loop over the public torchvision functionals (the test oracle)."""
    from torchvision.transforms.v2 import functional as F

    out = []
    for b, c, s, h in params.tolist():
        y = F.adjust_brightness(x01, b)
        y = F.adjust_contrast(y, c)
        y = F.adjust_saturation(y, s)
        out.append(F.adjust_hue(y, h))
    return torch.stack(out)


# ----------------------------------------------------------------------------- streams
class SampleStream:
    """The network inputs of one (image, augmentation, set), produced in order, in blocks.

    Parameters
    ----------
    x01 : (C, H, W) tensor in [0, 1], the preprocessed (resized, cropped) image
    normalize : callable mapping (..., C, H, W) [0, 1] tensors to network input
    augmentation : one of :data:`AUGMENTATIONS`
    gen : the set's generator (:func:`sample_generator`)
    m_total : number of samples of the set
    sigma : standard deviation of the Gaussian noise (network-input space)
    device : where the samples are built (default: x01's device); the draws are on the CPU
    """

    def __init__(self, x01, normalize, augmentation: str, gen: torch.Generator, m_total: int,
                 sigma: float = GAUSSIAN_SIGMA, device=None):
        if augmentation not in AUGMENTATIONS:
            raise ValueError(f"unknown augmentation {augmentation!r}; choose from {AUGMENTATIONS}")
        self.device = torch.device(device) if device is not None else x01.device
        self.x01, self.normalize, self.augmentation = x01.to(self.device), normalize, augmentation
        self.gen, self.m_total, self.sigma, self.pos = gen, int(m_total), float(sigma), 0
        self.params = photometric_params(self.m_total, gen) if augmentation == "photometric" else None
        self._xn = normalize(self.x01) if augmentation == "gaussian" else None

    @property
    def remaining(self) -> int:
        return self.m_total - self.pos

    def take(self, k: int) -> torch.Tensor:
        """The next ``k`` samples, (k, C, H, W) float32 on the stream's device.

        Random draws always come from the CPU generator (identical on every
        device); the arithmetic runs on ``device`` (the CPU unless given).
        """
        k = min(int(k), self.remaining)
        if self.augmentation == "gaussian":
            # One draw per sample: sample i is the i-th draw whatever the block sizes.
            noise = torch.stack([torch.randn(self._xn.shape, generator=self.gen, dtype=torch.float32)
                                 for _ in range(k)])
            out = self._xn.unsqueeze(0) + self.sigma * noise.to(self.device, non_blocking=True)
        else:
            out = self.normalize(apply_photometric(self.x01, self.params[self.pos:self.pos + k].to(self.device)))
        self.pos += k
        return out


def augmented_samples(x01, normalize, augmentation, seed, image_id, set_index, m, sigma=GAUSSIAN_SIGMA):
    """All ``m`` samples of one set at once (convenience for tests and notebooks)."""
    gen = sample_generator(seed, image_id, augmentation, set_index)
    return SampleStream(x01, normalize, augmentation, gen, m, sigma).take(m)
