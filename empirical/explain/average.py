"""Running averages of augmented attribution maps of one image, nested in m, streamed in batches.

For one image ``x`` and one augmentation, the samples ``x^(1), x^(2), ...`` of
set 1 and, for the split-half statistics, of a disjoint set 2 (its own seed
stream) come from :mod:`empirical.augment` (the draws of [P1] Sec. 6.1: sample
``i`` of a set is the ``i``-th draw of that set's generator, whatever the batch
size).  The averaged map at sample size ``m`` is

    Abar_m = (1/m) sum_{i <= m} A(x^(i))                       ([P1] eq. (21))

over the *first* ``m`` samples of set 1, so the averages of an m grid are
nested (``Abar_16`` contains the 4 samples of ``Abar_4``) and one pass serves the
whole grid.  Only running sums and one snapshot per grid point and method are
kept (memory independent of m); samples are attributed ``batch_size`` at a time
(both sets share a batch).  With ``target_s2`` the pass continues past the grid,
doubling m (1, 2, 4, ..., ``max_m``), until the split-half s2 (eq. (39)) of
every method is at most ``target_s2`` or ``max_m`` is reached.

``augmentation="none"``: every sample is the clean image, so every average is
the single map (computed once) and s1 = s2 = 0.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from empirical.augment import AUGMENTATIONS as _SECTION_6_AUGMENTATIONS

#: the augmentations of Section 6.1 (:data:`empirical.augment.AUGMENTATIONS`) and "none" (the plain map)
AUGMENTATIONS = (*_SECTION_6_AUGMENTATIONS, "none")


def doubling_points(max_m: int) -> tuple[int, ...]:
    """``1, 2, 4, ...`` up to ``max_m``, and ``max_m`` itself."""
    pts, m = [], 1
    while m < max_m:
        pts.append(m)
        m *= 2
    pts.append(int(max_m))
    return tuple(pts)


@dataclass
class MapAverages:
    """Result of :func:`average_maps` for one image.

    Attributes
    ----------
    maps : ``{method: {m: (H, W) float64 ndarray}}``, the set-1 average of the first m samples
    maps2 : the same for set 2 (``None`` without split half)
    stats : ``{method: {m: {"s1", "s2", "norm1", "norm2"}}}`` (eq. (38), (39); s2 is NaN when a
        mean map is exactly 0)
    doubling : ``{method: {"s2": {m: s2}, "m_reached": m or None}}`` with ``target_s2``, else None
    samples_per_set : samples drawn per set
    target, pred : the explained class and the clean prediction
    target_logit : logit of the target on the clean image
    """

    maps: dict
    maps2: dict | None
    stats: dict
    doubling: dict | None
    samples_per_set: int
    target: int
    pred: int
    target_logit: float


def average_maps(explainer, normalize, x01, methods, m_grid, augmentation: str = "gaussian", seed: int = 0,
                 image_id: str = "image", target: int | None = None, sigma: float = 1.0, batch_size: int = 8,
                 device=None, dtype=None, split_half: bool = True, target_s2: float | None = None,
                 max_m: int | None = None, on_samples=None) -> MapAverages:
    """Nested running averages of one image's augmented maps (see the module docstring).

    Parameters
    ----------
    explainer : object with ``logits(x)`` and ``attribute(x, methods, target=...)`` returning
        ``.maps[method]`` of shape (B, H, W) (:class:`empirical.engine.Explainer`)
    normalize : callable, [0, 1] image -> network input
    x01 : (C, H, W) tensor in [0, 1] (already resized / cropped)
    methods : engine method names
    m_grid : sample sizes (positive ints)
    augmentation : "gaussian" (noise of std ``sigma`` in network-input space), "photometric" or "none"
    seed, image_id : seed the sample streams (:func:`empirical.augment.sample_generator`)
    target : class to explain (default: the top prediction on the clean image)
    batch_size : samples per ``attribute`` call (both sets together)
    split_half : also draw set 2 and compute s1, s2
    target_s2, max_m : keep doubling m up to ``max_m`` until every method's s2 <= ``target_s2``
    on_samples : optional callable(k) after each batch of k samples (progress)

    Returns
    -------
    :class:`MapAverages`
    """
    import torch

    from empirical.augment import SampleStream, sample_generator
    from empirical.experiment.statistics import s1_statistic, s2_statistic

    if augmentation not in AUGMENTATIONS:
        raise ValueError(f"augmentation must be one of {AUGMENTATIONS}, got {augmentation!r}")
    methods = tuple(dict.fromkeys(methods))
    grid = tuple(sorted({int(m) for m in m_grid}))
    if not grid or grid[0] < 1 or batch_size < 1:
        raise ValueError("m_grid needs positive sizes and batch_size >= 1")
    if target_s2 is not None:
        split_half = True
        max_m = int(max_m if max_m is not None else max(grid))
    checkpoints = doubling_points(max_m) if target_s2 is not None else ()
    m_total = max(grid[-1], max(checkpoints, default=0))
    dtype = dtype if dtype is not None else torch.float32
    sets = (1, 2) if split_half else (1,)

    clean = normalize(x01).unsqueeze(0).to(device=device, dtype=dtype)
    with torch.no_grad():
        logits = explainer.logits(clean).detach().to("cpu", torch.float64)[0]
    pred = int(logits.argmax())
    target = pred if target is None else int(target)

    constant = augmentation == "none"
    streams = {} if constant else {
        s: SampleStream(x01, normalize, augmentation, sample_generator(seed, image_id, augmentation, s), m_total,
                        sigma, device=device) for s in sets}
    sums = {s: {} for s in sets}
    snaps = {s: {meth: {} for meth in methods} for s in sets}  # grid points only
    doubling = {meth: {"s2": {}, "m_reached": None} for meth in methods} if target_s2 is not None else None
    single = None  # the clean map (augmentation "none")
    per_set = max(1, batch_size // len(sets))
    count = 0

    def done() -> bool:
        if count < grid[-1]:
            return False
        if doubling is None:
            return True
        return count >= max_m or all(d["m_reached"] is not None for d in doubling.values())

    while not done():
        k = min(per_set, m_total - count)
        if constant:
            if single is None:
                att = explainer.attribute(clean, methods, target=torch.tensor([target], device=clean.device))
                single = {meth: att.maps[meth].detach().to(torch.float64)[0] for meth in methods}
            blocks = {s: {meth: single[meth].expand(k, *single[meth].shape) for meth in methods} for s in sets}
        else:
            x = torch.cat([streams[s].take(k) for s in sets]).to(device=device, dtype=dtype)
            tg = torch.full((x.shape[0],), target, dtype=torch.long, device=x.device)
            att = explainer.attribute(x, methods, target=tg)
            blocks = {s: {meth: att.maps[meth].detach()[i * k:(i + 1) * k].to(torch.float64) for meth in methods}
                      for i, s in enumerate(sets)}
            del att, x
        crossed = {}
        for s in sets:
            for meth in methods:
                blk = blocks[s][meth]
                base = sums[s].get(meth)
                if base is None:
                    base = torch.zeros(blk.shape[1:], dtype=torch.float64, device=blk.device)
                for p in sorted(set(grid) | set(checkpoints)):
                    if count < p <= count + k:
                        snap = base + blk[:p - count].sum(0)
                        if p in grid:
                            snaps[s][meth][p] = snap
                        crossed.setdefault(p, {}).setdefault(meth, {})[s] = snap
                sums[s][meth] = base + blk.sum(0)
        count += k
        if on_samples is not None:
            on_samples(k * len(sets))
        if doubling is not None:
            for p in sorted(crossed):
                if p not in checkpoints:
                    continue
                for meth, d in doubling.items():
                    if d["m_reached"] is not None:
                        continue
                    v = s2_statistic(crossed[p][meth][1] / p, crossed[p][meth][2] / p)
                    d["s2"][p] = v
                    if not math.isnan(v) and v <= target_s2:
                        d["m_reached"] = p

    def to_np(t, m):
        return (t / m).detach().cpu().numpy()

    maps = {meth: {m: to_np(snaps[1][meth][m], m) for m in grid} for meth in methods}
    maps2 = {meth: {m: to_np(snaps[2][meth][m], m) for m in grid} for meth in methods} if split_half else None
    stats = {}
    for meth in methods:
        stats[meth] = {}
        for m in grid:
            a = maps[meth][m]
            if maps2 is None:
                stats[meth][m] = {"s1": math.nan, "s2": math.nan, "norm1": float(np.linalg.norm(a)), "norm2": math.nan}
                continue
            b = maps2[meth][m]
            stats[meth][m] = {"s1": s1_statistic(a, b), "s2": s2_statistic(a, b),
                              "norm1": float(np.linalg.norm(a)), "norm2": float(np.linalg.norm(b))}
    tl = float(logits[target]) if 0 <= target < logits.numel() else math.nan
    return MapAverages(maps=maps, maps2=maps2, stats=stats, doubling=doubling, samples_per_set=count,
                       target=target, pred=pred, target_logit=tl)
