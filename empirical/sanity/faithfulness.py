"""Region perturbation with a blurred copy ([P2] A.1, "perturbation-based testing").

For one image ``x`` (network input, C x H x W) and one attribution map ``A``
(H x W):

1. ``x_blur`` = ``x`` filtered with a constant (box) kernel of size 15
   (:func:`box_blur`).  We blur in the *network input space*; since the
   preprocessing normalisation is a per-channel affine map and the box filter
   averages with weights summing to one (at the border: over the in-image
   pixels of the window, ``count_include_pad=False``), this is exactly the
   normalised version of the blurred [0, 1] pixel image -- both spaces give the
   same input.
2. The image is tiled into non-overlapping square cells of side ``r``
   (``--region-size``, 8 or 15).  When ``r`` does not divide H (W), the grid is
   laid out as Quantus does: the image is thought padded by
   ``floor(p/2)`` before and ``ceil(p/2)`` after (``p = r - H mod r``), and the
   border cells are clipped to the image.
3. Cells are ranked by the *mean* attribution over their in-image pixels
   (descending, stable sort: ties keep raster order).  For full cells this is
   the same order as Quantus' sum over the padded cell.
4. ``x_k`` = ``x`` with its ``k`` top cells replaced by the same cells of
   ``x_blur`` (k = 0 .. n_regions, default 30); all ``n_regions + 1`` inputs go
   through the model in one batch; the curve is the softmax probability of the
   explained class, ``curve[0]`` is the unperturbed score.
5. Area under the curve: ``trapz(curve, dx=1) / n_regions`` (the mean height,
   in [0, 1]); lower is better (the most relevant regions destroy the evidence
   fastest).

A ``"random"`` pseudo-method (cells in a seeded random order) is the reference
every real method should beat.
"""

from __future__ import annotations

import numpy as np

BLUR_KERNEL = 15
N_REGIONS = 30


def box_blur(x, kernel_size: int = BLUR_KERNEL):
    """Box-filtered copy of ``x`` (B, C, H, W) or (C, H, W): mean over the in-image pixels of each window."""
    import torch.nn.functional as F

    squeeze = x.dim() == 3
    xb = x[None] if squeeze else x
    k = int(kernel_size)
    if k < 1 or k % 2 == 0:
        raise ValueError(f"blur kernel size must be odd and >= 1, got {k}")
    out = F.avg_pool2d(xb, k, stride=1, padding=k // 2, count_include_pad=False)
    return out[0] if squeeze else out


def _offsets(n: int, r: int) -> int:
    p = (r - n % r) % r
    return p // 2


def region_grid(h: int, w: int, r: int) -> list[tuple[int, int, int, int]]:
    """Cells ``(y0, y1, x0, x1)`` (clipped to the image) in raster order; Quantus' padding layout."""
    oy, ox = _offsets(h, r), _offsets(w, r)
    ny = (h + (r - h % r) % r) // r
    nx = (w + (r - w % r) % r) // r
    cells = []
    for i in range(ny):
        for j in range(nx):
            y0, x0 = i * r - oy, j * r - ox
            cells.append((max(y0, 0), min(y0 + r, h), max(x0, 0), min(x0 + r, w)))
    return cells


def region_order(attribution, r: int, rng: np.random.Generator | None = None) -> tuple[list, np.ndarray]:
    """Cells sorted by mean attribution (descending, stable), or randomly when ``rng`` is given.

    Returns ``(cells, scores)``; ``scores[i]`` is the mean attribution of ``cells[i]``.
    """
    a = np.asarray(attribution, dtype=np.float64)
    cells = region_grid(a.shape[0], a.shape[1], r)
    scores = np.array([a[y0:y1, x0:x1].mean() for y0, y1, x0, x1 in cells])
    if rng is not None:
        order = rng.permutation(len(cells))
    else:
        order = np.argsort(-scores, kind="stable")
    return [cells[i] for i in order], scores[order]


def perturbation_batch(x, x_blur, cells: list, n_regions: int = N_REGIONS):
    """``(n_regions + 1, C, H, W)``: ``x`` with the first k cells taken from ``x_blur``, k = 0..n."""
    import torch

    n = min(int(n_regions), len(cells))
    mask = torch.zeros((n + 1, 1) + tuple(x.shape[-2:]), dtype=x.dtype, device=x.device)
    for k, (y0, y1, x0, x1) in enumerate(cells[:n]):
        mask[k + 1:, :, y0:y1, x0:x1] = 1.0
    return x[None] * (1 - mask) + x_blur[None] * mask


def softmax_curve(predict, x, x_blur, attribution, target: int, r: int, n_regions: int = N_REGIONS,
                  rng: np.random.Generator | None = None) -> np.ndarray:
    """Softmax probability of ``target`` after each of the ``n_regions`` replacements (length n+1).

    ``predict`` maps a (N, C, H, W) batch to logits (N, classes); it is called once.
    """
    import torch

    cells, _ = region_order(attribution, r, rng=rng)
    batch = perturbation_batch(x, x_blur, cells, n_regions)
    with torch.no_grad():
        p = torch.softmax(predict(batch).double(), dim=1)[:, int(target)]
    return p.cpu().numpy()


def auc(curve) -> float:
    """Normalised area under the curve: ``trapz(curve, dx=1) / (len(curve) - 1)``."""
    c = np.asarray(curve, dtype=np.float64)
    area = float(np.sum((c[1:] + c[:-1]) / 2.0))  # composite trapezoidal rule, dx = 1
    return area / max(len(c) - 1, 1)


def faithfulness_rows(predict, x, target, maps: dict, r: int, n_regions: int = N_REGIONS,
                      blur_kernel: int = BLUR_KERNEL, random_seed: int | None = 0,
                      image_keys: list[int] | None = None) -> list[dict]:
    """One record per image: ``{"curves": {method: [...]}, "auc": {method: float}}``.

    Parameters
    ----------
    predict : callable, batch -> logits (e.g. the model under ``torch.no_grad``)
    x : tensor (B, C, H, W) network inputs
    target : sequence of B class indices
    maps : {method: array (B, H, W)}
    r : region size; n_regions : how many cells to replace; blur_kernel : box size
    random_seed : seed of the ``"random"`` reference order (None: leave it out)
    image_keys : integers identifying the images (default: batch positions); the
        random order of image ``i`` is drawn from ``default_rng([random_seed, image_keys[i]])``
    """
    xb = box_blur(x, blur_kernel)
    out = []
    for b in range(int(x.shape[0])):
        curves = {}
        for method, m in maps.items():
            curves[method] = softmax_curve(predict, x[b], xb[b], np.asarray(m[b]), target[b], r, n_regions).tolist()
        if random_seed is not None:
            key = b if image_keys is None else int(image_keys[b])
            rng = np.random.default_rng([int(random_seed), key])
            curves["random"] = softmax_curve(predict, x[b], xb[b], np.zeros(x.shape[-2:]), target[b], r,
                                             n_regions, rng=rng).tolist()
        out.append({"curves": curves, "auc": {k: auc(v) for k, v in curves.items()}})
    return out
