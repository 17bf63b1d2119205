"""Similarity of attribution maps for model-randomisation sanity checks ([P2] C, D).

Every function takes 2-D maps (H, W) as numpy arrays (or anything
``np.asarray`` accepts), never modifies its inputs, and works in float64.

Normalisations
--------------
* ``"second_moment"`` ([P2] eq. 11): ``A / sqrt(mean(A**2))``; afterwards the
  average squared distance of a pixel score from 0 (= "no contribution") is 1.
  This is what Quantus calls ``normalise_by_average_second_moment_estimate``.
* ``"max_abs"`` (Adebayo et al.; [P2] D.1 for why it is worse): ``A / max|A|``.
  Quantus' ``normalise_by_max``.
* An all-zero map is returned unchanged (0/0 policy; Quantus does the same) and
  the row is flagged ``zero_map=True`` by :func:`compare`.

Measures
--------
* SSIM: ``skimage.metrics.structural_similarity`` with a 7x7 uniform window
  (skimage's default ``win_size=7``, ``gaussian_weights=False``), the default
  constants K1 = 0.01, K2 = 0.03, and ``data_range = max(A, B) - min(A, B)``
  taken jointly over both normalised maps -- Quantus' ``similarity_func.ssim``
  convention, so the numbers agree with it.
* Spearman rank correlation: ``scipy.stats.spearmanr`` of the flattened maps
  (average ranks for ties; NaN when a map is constant).
* MSE: ``mean((A - B)**2)``.
* :func:`thm4_bound`: [P2] Thm 4 / eq. (15), ``2 - 2 mu_A mu_B / (E[A^2]^1/2 E[B^2]^1/2)``,
  the largest MSE of second-moment-normalised maps among pairs with
  non-negative covariance; :func:`compare` reports it with the sign of the
  covariance, since the bound only holds when ``cov(A, B) >= 0``.
"""

from __future__ import annotations

import numpy as np

NORMALISATIONS = ("second_moment", "max_abs")
MEASURES = ("ssim", "spearman", "mse")
SSIM_WIN_SIZE = 7


def _as2d(a) -> np.ndarray:
    a = np.asarray(a, dtype=np.float64)
    if a.ndim != 2:
        raise ValueError(f"attribution map must be 2-D (H, W), got shape {a.shape}")
    return a


def normalise_second_moment(a) -> np.ndarray:
    """``A / sqrt(mean(A^2))`` ([P2] eq. 11); an all-zero map is returned as a zero copy."""
    a = _as2d(a)
    m2 = float(np.mean(a * a))
    return a.copy() if m2 == 0.0 else a / np.sqrt(m2)


def normalise_max_abs(a) -> np.ndarray:
    """``A / max|A|``; an all-zero map is returned as a zero copy."""
    a = _as2d(a)
    m = float(np.max(np.abs(a)))
    return a.copy() if m == 0.0 else a / m


def normalise(a, how: str) -> np.ndarray:
    """Apply the normalisation named ``how`` (one of :data:`NORMALISATIONS`, or ``"none"``)."""
    if how == "second_moment":
        return normalise_second_moment(a)
    if how == "max_abs":
        return normalise_max_abs(a)
    if how == "none":
        return _as2d(a).copy()
    raise ValueError(f"unknown normalisation {how!r}; choose one of {NORMALISATIONS + ('none',)}")


def ssim(a, b, win_size: int = SSIM_WIN_SIZE) -> float:
    """SSIM of two maps with the joint data range (Quantus' convention), 7x7 uniform window."""
    from skimage.metrics import structural_similarity

    a, b = _as2d(a), _as2d(b)
    data_range = float(max(a.max(), b.max()) - min(a.min(), b.min()))
    if data_range == 0.0:
        return 1.0  # two identical constant maps
    return float(structural_similarity(a, b, win_size=win_size, data_range=data_range))


def spearman(a, b) -> float:
    """Spearman rank correlation of the flattened maps (``scipy.stats.spearmanr``)."""
    from scipy.stats import spearmanr

    a, b = _as2d(a), _as2d(b)
    if np.all(a == a.flat[0]) or np.all(b == b.flat[0]):
        return float("nan")
    return float(spearmanr(a.ravel(), b.ravel())[0])


def mse(a, b) -> float:
    """Mean squared difference ``mean((A - B)^2)``."""
    a, b = _as2d(a), _as2d(b)
    return float(np.mean((a - b) ** 2))


def thm4_bound(a, b) -> float:
    """[P2] eq. (15): ``2 - 2 mu_A mu_B / (sqrt(E[A^2]) sqrt(E[B^2]))`` (NaN for a zero map).

    The MSE of the second-moment-normalised maps equals
    ``2 - 2 cov(A,B)/(...) - 2 mu_A mu_B/(...)`` exactly (population moments, eq. 14),
    so it is at most this bound whenever ``cov(A, B) >= 0``.
    """
    a, b = _as2d(a), _as2d(b)
    den = np.sqrt(np.mean(a * a)) * np.sqrt(np.mean(b * b))
    if den == 0.0:
        return float("nan")
    return float(2.0 - 2.0 * a.mean() * b.mean() / den)


def compare(a, b, normalisations=NORMALISATIONS) -> dict:
    """All measures of :data:`MEASURES` between maps ``a`` and ``b`` for each normalisation.

    Returns
    -------
    dict with keys ``"<measure>_<normalisation>"`` (e.g. ``"ssim_second_moment"``),
    ``"thm4_bound"``, ``"cov_nonnegative"`` (bool: the bound applies) and
    ``"zero_map"`` (bool: either map is all zero, normalisation skipped).
    """
    a, b = _as2d(a), _as2d(b)
    out: dict = {}
    for how in normalisations:
        an, bn = normalise(a, how), normalise(b, how)
        out[f"ssim_{how}"] = ssim(an, bn)
        out[f"spearman_{how}"] = spearman(an, bn)
        out[f"mse_{how}"] = mse(an, bn)
    out["thm4_bound"] = thm4_bound(a, b)
    cov = float(np.mean((a - a.mean()) * (b - b.mean())))
    out["cov_nonnegative"] = bool(cov >= 0.0)
    out["zero_map"] = bool(not np.any(a) or not np.any(b))
    return out
