"""The per-image protocol of Section 6 (eq. 38/39), batched over samples and images.

For each image x, each augmentation and each set s in {1, 2}, M = max(m grid)
augmented samples x^(i,s) are drawn (:mod:`empirical.augment`).  The mean map of
set s for sample size m is the mean over the *first m* samples of the set
(nested prefixes): one set of M maps per side serves every m of the grid, so
m = 25 and 50 cost nothing beyond m = 100.  The statistics for different m of
one image are therefore not independent of each other (as in any sequential
estimate); each of them on its own is exactly the paper's statistic with m
samples per disjoint set.

All methods come from ONE ``Explainer.attribute`` call per chunk: the samples of
a *group* of images (all augmentations, both sets) are concatenated and cut
into chunks of ``batch_size`` samples, so memory stays flat whatever M is and
small M still fills a batch (:func:`chunk_plan`); the next chunk's samples are drawn in a
worker thread while the current one is attributed.  Groups are fixed (``group_size`` consecutive
images of a shard) so a resumed run recomputes a partly written group with the
same batch composition: results do not depend on where a run was interrupted.

The explained class (``target``) is the image's label when known, otherwise the
top prediction on the clean (un-augmented) image; it is the same for every
augmented sample of the image.  Maps are the engine's channel-summed (H, W)
maps; norms and statistics are computed over the H*W pixels in float64 (sums on the attribution
device: a GPU run moves per-sample norms and the final mean maps, not every map, to the host).
"""

from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
import torch

from empirical.augment import GAUSSIAN_SIGMA, SampleStream, sample_generator
from empirical.experiment.statistics import s1_statistic, s2_statistic

SETS = (1, 2)


@dataclass(frozen=True)
class Protocol:
    """What is measured (part of the run configuration)."""

    m_grid: tuple
    augmentations: tuple
    methods: tuple
    seed: int = 0
    sigma: float = GAUSSIAN_SIGMA

    @property
    def m_max(self) -> int:
        return max(self.m_grid)

    @property
    def samples_per_image(self) -> int:
        return len(self.augmentations) * len(SETS) * self.m_max


@dataclass
class _Acc:
    """Running sums of one (image, augmentation, set): per method sum, prefix snapshots, norms."""

    m_grid: tuple
    count: int = 0
    sums: dict = field(default_factory=dict)
    snaps: dict = field(default_factory=dict)
    norms: dict = field(default_factory=dict)

    def add(self, method: str, maps: torch.Tensor) -> None:
        # maps: (k, H, W) float64 on the attribution device (sums stay there; a GPU run moves
        # only the per-sample norms and, at the end, the mean maps to the host),
        # samples count .. count+k-1 of this set
        k = maps.shape[0]
        start = self.count
        if method not in self.sums:
            self.sums[method] = torch.zeros(maps.shape[1:], dtype=torch.float64, device=maps.device)
            self.snaps[method], self.norms[method] = {}, []
        for m in self.m_grid:
            if start < m <= start + k:
                self.snaps[method][m] = self.sums[method] + maps[: m - start].sum(0)
        self.sums[method] = self.sums[method] + maps.sum(0)
        self.norms[method].extend(torch.linalg.vector_norm(maps.flatten(1), dim=1).tolist())


def image_statistics(acc1: _Acc, acc2: _Acc, methods, m_grid) -> dict:
    """{method: {"s1": {m: .}, "s2": {m: .}, "mean_norm": {m: [|mean1|, |mean2|]}, "scale": median |A|}}."""
    out = {}
    for meth in methods:
        d = {"s1": {}, "s2": {}, "mean_norm": {}}
        for m in m_grid:
            a, b = acc1.snaps[meth][m] / m, acc2.snaps[meth][m] / m
            d["s1"][str(m)] = s1_statistic(a, b)
            d["s2"][str(m)] = s2_statistic(a, b)
            d["mean_norm"][str(m)] = [float(torch.linalg.vector_norm(a)), float(torch.linalg.vector_norm(b))]
        d["scale"] = float(np.median(acc1.norms[meth] + acc2.norms[meth]))
        out[meth] = d
    return out


def chunk_plan(sizes, batch_size: int) -> list[list[tuple[int, int]]]:
    """Cut tasks of ``sizes`` samples, in order, into chunks of ``batch_size`` samples.

    Returns one list of ``(task index, samples)`` per chunk; every chunk but the
    last holds exactly ``batch_size`` samples, a task may span several chunks and
    a chunk several tasks.  Depends on the sizes only, never on the data.
    """
    if batch_size < 1:
        raise ValueError("batch_size must be >= 1")
    plan, chunk, room = [], [], batch_size
    for ti, n in enumerate(sizes):
        while n > 0:
            k = min(n, room)
            chunk.append((ti, k))
            n -= k
            room -= k
            if room == 0:
                plan.append(chunk)
                chunk, room = [], batch_size
    if chunk:
        plan.append(chunk)
    return plan


def run_group(explainer, normalize, images, protocol: Protocol, batch_size: int,
              device=None, dtype=torch.float32, on_chunk=None) -> list[dict]:
    """Compute the per-image records of one group of images.

    Parameters
    ----------
    explainer : object with ``logits(x)`` and ``attribute(x, methods, target=...)``
        (:class:`empirical.engine.Explainer` or a stand-in with that API)
    normalize : callable, [0, 1] image -> network input
    images : list of (ImageItem, x01) with x01 a (C, H, W) tensor in [0, 1]
    protocol : :class:`Protocol`
    batch_size : samples per ``attribute`` call
    on_chunk : optional callable(k) called after each chunk with its size (progress)

    Returns
    -------
    list of dict, one per image, in the order given (see :mod:`empirical.experiment.runner`
    for the record layout).
    """
    if not images:
        return []
    methods, m_max = tuple(protocol.methods), protocol.m_max
    # Clean predictions (and the target where the label is unknown), one forward for the group.
    clean = torch.stack([normalize(x01) for _, x01 in images]).to(device=device, dtype=dtype)
    with torch.no_grad():
        logits = explainer.logits(clean).detach().to("cpu", torch.float64)
    preds = logits.argmax(1).tolist()
    targets = [item.label if item.label is not None else preds[j] for j, (item, _) in enumerate(images)]

    tasks = []  # (image position, augmentation, set, stream, accumulator)
    for j, (item, x01) in enumerate(images):
        for aug in protocol.augmentations:
            for s in SETS:
                gen = sample_generator(protocol.seed, item.id, aug, s)
                stream = SampleStream(x01, normalize, aug, gen, m_max, protocol.sigma, device=device)
                tasks.append((j, aug, s, stream, _Acc(tuple(protocol.m_grid))))
    plan = chunk_plan([m_max] * len(tasks), batch_size)

    def build(chunk):
        # the samples of one chunk, drawn in plan order (one worker thread: streams advance in order)
        xs = [tasks[ti][3].take(k) for ti, k in chunk]
        return torch.cat(xs).to(device=device, dtype=dtype)

    # the next chunk's samples (random draws on the CPU, augmentation arithmetic) are built in a
    # worker thread while the current chunk is attributed; torch releases the GIL in both
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="boundcheck-samples") as pool:
        pending = pool.submit(build, plan[0]) if plan else None
        for c, chunk in enumerate(plan):
            x = pending.result()
            pending = pool.submit(build, plan[c + 1]) if c + 1 < len(plan) else None
            tg = [targets[tasks[ti][0]] for ti, k in chunk for _ in range(k)]
            target = torch.tensor(tg, dtype=torch.long, device=x.device)
            att = explainer.attribute(x, methods, target=target)
            maps = {meth: att.maps[meth].detach().to(torch.float64) for meth in methods}
            del att, x
            pos = 0
            for ti, k in chunk:
                acc = tasks[ti][4]
                for meth in methods:
                    acc.add(meth, maps[meth][pos:pos + k])
                acc.count += k
                pos += k
            if on_chunk is not None:
                on_chunk(pos)

    records = []
    for j, (item, _) in enumerate(images):
        stats = {}
        for aug in protocol.augmentations:
            accs = {s: acc for (jj, a, s, _, acc) in tasks if jj == j and a == aug}
            stats[aug] = image_statistics(accs[1], accs[2], methods, protocol.m_grid)
        tl = float(logits[j, targets[j]])
        records.append({
            "index": item.index, "id": item.id, "label": item.label, "target": int(targets[j]),
            "pred": int(preds[j]), "target_logit": tl if math.isfinite(tl) else None, "stats": stats,
        })
    return records
