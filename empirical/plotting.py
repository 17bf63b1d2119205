"""The one plotting helper for attribution maps: heatmaps, montages and convergence plots.

Every map is drawn with a diverging colormap (``"bwr"``: blue negative, white 0,
red positive) centred at 0 with *symmetric* limits ``+-q``, where ``q`` is a
robust quantile of ``|A|`` (:data:`QUANTILE`, the 99.5th percentile, so a few
extreme pixels do not wash out the rest; pixels beyond ``q`` saturate).  The
limit is stated in every caption.  The input image is shown faintly (grey,
low alpha) underneath, so the map can be read against the picture.

Functions
---------
:func:`symmetric_limit`      the colour limit ``q`` of one or several maps
:func:`save_heatmap`         one map, one PNG (with colour bar and caption)
:func:`montage`              rows = methods, columns = the input + one column per setting
                             (e.g. the sample size m of an averaged map), one limit per row
:func:`randomization_montage` the same layout with columns = cascading-randomisation steps ([P2] A.1)
:func:`convergence_plot`     split-half s1, s2 ([P1] eq. (38), (39)) against m on log axes, a
                             ``1/sqrt(m)`` reference line and, where it is on the plot's scale,
                             the l2 bound on s1

matplotlib runs with the Agg backend (no display needed); files are written
atomically (temporary file, then rename).
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np

#: robust colour limit: this percentile of |A| (a fraction in (0, 1])
QUANTILE = 0.995
CMAP = "bwr"
#: opacity of the grey image under the map, and of the map over it
IMAGE_ALPHA = 1.0
MAP_ALPHA = 0.72
#: a bound more than this many decades above the plotted data is stated in text, not drawn
BOUND_DECADES_DRAWN = 6.0


def _plt():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp.png")
    fig.savefig(tmp, dpi=110, bbox_inches="tight")
    os.replace(tmp, path)
    return path


def symmetric_limit(*maps, quantile: float = QUANTILE) -> float:
    """Colour limit ``q``: the ``quantile`` of ``|A|`` over all pixels of ``maps``.

    Falls back to ``max |A|`` when that quantile is 0 (sparse maps) and to 1.0 for
    an all-zero map, so the limits ``(-q, q)`` are always a valid, symmetric range.
    Non-finite pixels are ignored.

    Raises
    ------
    ValueError
        When ``quantile`` is not in (0, 1] or no map is given.
    """
    if not 0 < quantile <= 1:
        raise ValueError(f"quantile must be in (0, 1], got {quantile}")
    if not maps:
        raise ValueError("symmetric_limit needs at least one map")
    a = np.abs(np.concatenate([np.asarray(m, dtype=np.float64).ravel() for m in maps]))
    a = a[np.isfinite(a)]
    if a.size == 0:
        return 1.0
    q = float(np.quantile(a, quantile))
    if q <= 0:
        q = float(a.max())
    return q if q > 0 else 1.0


def _gray(image) -> np.ndarray | None:
    """(H, W) grey image in [0, 1] from (H, W, 3) / (3, H, W) / (H, W) arrays or tensors, or None."""
    if image is None:
        return None
    if hasattr(image, "detach"):
        image = image.detach().cpu().numpy()
    im = np.asarray(image, dtype=np.float64)
    if im.ndim == 3 and im.shape[0] in (1, 3) and im.shape[-1] not in (1, 3):
        im = np.moveaxis(im, 0, -1)
    if im.ndim == 3:
        im = im @ np.array([0.2989, 0.587, 0.114]) if im.shape[-1] == 3 else im[..., 0]
    return np.clip(im, 0.0, 1.0)


def _rgb(image) -> np.ndarray:
    if hasattr(image, "detach"):
        image = image.detach().cpu().numpy()
    im = np.asarray(image, dtype=np.float64)
    if im.ndim == 3 and im.shape[0] in (1, 3) and im.shape[-1] not in (1, 3):
        im = np.moveaxis(im, 0, -1)
    return np.clip(im, 0.0, 1.0)


def _faint(gray: np.ndarray) -> np.ndarray:
    """Compress a grey image into [0.4, 1]: visible under the map, never black."""
    return 0.4 + 0.6 * gray


def draw_map(ax, amap, limit: float, image=None):
    """Draw one map on ``ax`` with limits ``(-limit, limit)`` over the faint image; returns the artist."""
    a = np.asarray(amap, dtype=np.float64)
    g = _gray(image)
    if g is not None:
        if g.shape != a.shape:
            raise ValueError(f"image {g.shape} and map {a.shape} differ in size")
        ax.imshow(_faint(g), cmap="gray", vmin=0.0, vmax=1.0, alpha=IMAGE_ALPHA, interpolation="nearest")
    art = ax.imshow(a, cmap=CMAP, vmin=-limit, vmax=limit, alpha=MAP_ALPHA if g is not None else 1.0,
                    interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])
    return art


def save_heatmap(amap, path, image=None, title: str = "", quantile: float = QUANTILE) -> dict:
    """One map as a PNG: diverging colormap centred at 0, limits ``+-q`` stated in the caption.

    Parameters
    ----------
    amap : (H, W) array
    path : output PNG
    image : optional (H, W, 3) or (3, H, W) image in [0, 1], drawn faintly underneath
    title : first caption line (e.g. method, m, augmentation)
    quantile : ``q`` is this quantile of ``|A|`` (:func:`symmetric_limit`)

    Returns
    -------
    dict with ``path`` and ``limit`` (the ``q`` used).
    """
    plt = _plt()
    q = symmetric_limit(amap, quantile=quantile)
    fig, ax = plt.subplots(figsize=(4.2, 4.0))
    art = draw_map(ax, amap, q, image)
    fig.colorbar(art, ax=ax, fraction=0.046, pad=0.03, format="%.3g")
    cap = f"colour limits ±{q:.3g} = {100 * quantile:g}th pct of |A|; blue < 0 < red"
    ax.set_title(f"{title}\n{cap}" if title else cap, fontsize=8)
    p = _save(fig, path)
    plt.close(fig)
    return {"path": str(p), "limit": q}


def montage(maps_by_row: dict, image, path, column_labels=None, title: str = "",
            quantile: float = QUANTILE, limit_from: str = "last") -> dict:
    """Grid of maps: rows = methods, first column the input image, then one column per key.

    Parameters
    ----------
    maps_by_row : ``{row label: {column key: (H, W) map}}``, every row with the same keys in the
        order to draw
    image : the input (H, W, 3) / (3, H, W) in [0, 1], first column and faint background
    path : output PNG
    column_labels : ``{column key: label}`` (default ``str(key)``)
    title : figure title (the colour-limit rule is appended)
    limit_from : ``"last"``: each row's limit ``q`` from its last column (e.g. the largest m,
        so the smaller-m columns show how much noisier they are, saturating where they exceed
        it); ``"row"``: from all of the row's maps; ``"each"``: every map its own ``q``, written
        under it (structure rather than scale is compared)

    Returns
    -------
    dict with ``path`` and ``limits`` ({row: q}, or {row: {column: q}} for ``"each"``).
    """
    if not maps_by_row:
        raise ValueError("montage needs at least one row")
    if limit_from not in ("last", "row", "each"):
        raise ValueError(f"limit_from must be 'last', 'row' or 'each', got {limit_from!r}")
    plt = _plt()
    rows = list(maps_by_row)
    cols = list(maps_by_row[rows[0]])
    for r in rows:
        if list(maps_by_row[r]) != cols:
            raise ValueError(f"row {r!r} has columns {list(maps_by_row[r])}, expected {cols}")
    labels = {c: str(c) for c in cols}
    labels.update(column_labels or {})
    nr, nc = len(rows), len(cols) + 1
    height = 2.0 * nr + 1.1  # the title (two lines) above the column titles (up to three lines)
    fig, axes = plt.subplots(nr, nc, figsize=(2.0 * nc + 0.6, height), squeeze=False)
    fig.subplots_adjust(top=1.0 - 0.95 / height, bottom=0.3 / height, hspace=0.25)
    limits = {}
    for i, r in enumerate(rows):
        ms = [maps_by_row[r][c] for c in cols]
        each = limit_from == "each"
        q = symmetric_limit(*(ms[-1:] if limit_from == "last" else ms), quantile=quantile)
        limits[r] = {c: symmetric_limit(a, quantile=quantile) for c, a in zip(cols, ms)} if each else q
        ax = axes[i][0]
        ax.imshow(_rgb(image), interpolation="nearest")
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_ylabel(r if each else f"{r}\n±{q:.3g}", fontsize=8)
        if i == 0:
            ax.set_title("input", fontsize=9)
        art = None
        for j, (c, a) in enumerate(zip(cols, ms), start=1):
            qc = limits[r][c] if each else q
            art = draw_map(axes[i][j], a, qc, image)
            if each:
                axes[i][j].set_xlabel(f"±{qc:.3g}", fontsize=7, labelpad=1)
            if i == 0:
                axes[i][j].set_title(labels[c], fontsize=9)
        if not each:
            fig.colorbar(art, ax=list(axes[i]), fraction=0.02, pad=0.01, ticks=[-q, 0, q],
                         format="%.3g").ax.tick_params(labelsize=6)
    rule = (f"bwr, 0 = white; limits ±q, q = {100 * quantile:g}th pct of |A| "
            + {"last": "of the row's last column (left label)", "row": "over the row (left label)",
               "each": "of each map (under it)"}[limit_from])
    fig.suptitle(f"{title}\n{rule}" if title else rule, fontsize=9, y=1.0 - 0.05 / height, va="top")
    p = _save(fig, path)
    plt.close(fig)
    return {"path": str(p), "limits": limits}


def randomization_montage(maps_by_method_step: dict, image, path, step_labels=None, title: str = "",
                          quantile: float = QUANTILE) -> dict:
    """Cascading-randomisation montage ([P2] A.1): rows = methods, columns = randomisation steps.

    Parameters
    ----------
    maps_by_method_step : ``{method: {step: (H, W) map}}`` in drawing order; by convention the
        first step is the original model (e.g. key ``"original"``), the others the cumulative
        randomisation steps
    image : the input image in [0, 1] ((H, W, 3) or (3, H, W))
    path : output PNG
    step_labels : ``{step: label}`` (e.g. the schedule's module marker)
    title : figure title

    Randomised maps have very different scales from the original's (a shared limit leaves
    most of them blank), and the check asks whether the *structure* survives, so every map
    gets its own limit ``q``, written under it (``limit_from="each"``).

    Returns
    -------
    dict with ``path`` and ``limits``.
    """
    return montage(maps_by_method_step, image, path, column_labels=step_labels,
                   title=title or "cascading model randomisation", quantile=quantile, limit_from="each")


def _finite_pos(v) -> float | None:
    return float(v) if v is not None and math.isfinite(float(v)) and float(v) > 0 else None


def convergence_plot(stats: dict, path, bounds_log10: dict | None = None, title: str = "") -> dict:
    """Split-half s1 and s2 against m (log-log), per method, for one image.

    Parameters
    ----------
    stats : ``{method: {"s1": {m: value}, "s2": {m: value}}}`` (None / NaN / 0 values are skipped:
        a log axis cannot show them)
    path : output PNG
    bounds_log10 : ``{(method, form): {m: log10 of the l2 bound on s1}}`` (form "paper"/"exact");
        a curve is drawn on the s1 panel when it lies within :data:`BOUND_DECADES_DRAWN`
        decades of the data, otherwise its value at the smallest m is stated in the panel
    title : figure title

    A grey dashed ``c / sqrt(m)`` reference line (the rate of eq. (23)) passes through the
    geometric mean of the methods' values at the smallest m.

    Returns
    -------
    dict with ``path``, ``drawn`` (bound curves drawn) and ``not_drawn`` (bound curves stated).
    """
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(10.5, 4.2))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    methods = list(stats)
    drawn, not_drawn = [], []
    for ax, stat in zip(axes, ("s1", "s2")):
        data_max, firsts, mmin, mmax = -math.inf, [], math.inf, 0
        for k, meth in enumerate(methods):
            pts = sorted((int(m), _finite_pos(v)) for m, v in stats[meth][stat].items())
            pts = [(m, v) for m, v in pts if v is not None]
            if not pts:
                continue
            ms, vs = zip(*pts)
            ax.plot(ms, vs, "o-", color=colors[k % len(colors)], lw=1.4, ms=4, label=meth)
            data_max = max(data_max, math.log10(max(vs)))
            mmin, mmax = min(mmin, ms[0]), max(mmax, ms[-1])
            firsts.append((ms[0], vs[0]))
        if firsts and mmax >= mmin:
            m0 = min(m for m, _ in firsts)
            at0 = [v for m, v in firsts if m == m0]
            c = math.exp(np.mean(np.log(at0))) * math.sqrt(m0)
            grid = np.geomspace(mmin, max(mmax, mmin * 1.0001), 50)
            ax.plot(grid, c / np.sqrt(grid), "--", color="0.5", lw=1, label="∝ 1/√m")
        if stat == "s1" and bounds_log10:
            notes = []
            for k, meth in enumerate(methods):
                for form, ls in (("exact", ":"), ("paper", "-.")):
                    b = bounds_log10.get((meth, form))
                    if not b:
                        continue
                    bm = sorted((int(m), float(v)) for m, v in b.items() if v is not None and math.isfinite(float(v)))
                    if not bm:
                        continue
                    if math.isfinite(data_max) and max(v for _, v in bm) - data_max <= BOUND_DECADES_DRAWN:
                        ax.plot([m for m, _ in bm], [10.0 ** v for _, v in bm], ls, color=colors[k % len(colors)],
                                lw=1, label=f"{meth} l2 bound ({form})")
                        drawn.append((meth, form))
                    else:
                        notes.append(f"{meth} ({form}): 10^{bm[0][1]:.1f} at m={bm[0][0]}")
                        not_drawn.append((meth, form))
            if notes:  # stated above the panel, where it hides no data
                ax.set_title("l2 bound on s1 (eq. 38), far above this scale: " + "; ".join(notes), fontsize=6.5,
                             wrap=True)
        ax.set_xscale("log")
        ax.set_yscale("log")
        if mmax >= mmin:
            ticks = sorted({int(m) for meth in methods for m in stats[meth][stat]})
            ax.set_xticks(ticks)
            ax.set_xticklabels([str(t) for t in ticks])
            ax.minorticks_off()
        ax.set_xlabel("m (samples per set)")
        ax.set_ylabel({"s1": "s1 = ||mean1 - mean2||₂ (eq. 38)", "s2": "s2, l2-normalised means (eq. 39)"}[stat])
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=6.5, loc="best")
    fig.suptitle(title or "split-half convergence on one image", fontsize=9)
    fig.tight_layout()
    p = _save(fig, path)
    plt.close(fig)
    return {"path": str(p), "drawn": drawn, "not_drawn": not_drawn}
