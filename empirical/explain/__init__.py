"""See the maps: averaged attribution maps over augmentations, with what the theory guarantees.

Python API::

    from empirical.data import foolbox_photos
    from empirical.explain import explain
    photo = foolbox_photos(1)[0].path
    res = explain("efficientnet-lite0", photo, methods=("lrp_beta_1",), augmentation="photometric", m=(16,))
    res.save_heatmap("lrp_beta_1_m16.png", "lrp_beta_1", 16)

Modules: :mod:`.average` (nested running averages, streamed in batches),
:mod:`.stats` (eq. (24) sample sizes at the network's depth, l2 bound),
:mod:`.run` (the resumable ``boundcheck explain`` driver and its files, on the shared
store and strict JSON of :mod:`empirical.io`),
:mod:`.cli`, :mod:`.randomization` (per-step maps of the cascading-randomisation
check for its montage).  Figures: :mod:`empirical.plotting`.

:func:`report_section` writes the main job's figure section.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from boundcheck.errors import InputError

__all__ = ["explain", "ExplainResult", "report_section", "REPORT_METHODS"]

#: the methods of the main job's figure section
REPORT_METHODS = ("gradient_x_input", "lrp_beta_0", "lrp_beta_1", "lrp_gamma_100")


@dataclass
class ExplainResult:
    """Averaged maps of one image.

    Attributes
    ----------
    maps : ``{method: {m: (H, W) float64 ndarray}}``, mean of the first m augmented maps
    stats : ``{method: {m: {"s1", "s2", "norm1", "norm2"}}}`` split-half statistics
        ([P1] eq. (38), (39)) of this image (NaN without ``split_half``)
    image : (H, W, 3) float ndarray in [0, 1], the (resized, cropped) input
    methods, m_grid, augmentation, target, pred : what was computed
    """

    maps: dict
    stats: dict
    image: object
    methods: tuple
    m_grid: tuple
    augmentation: str
    target: int
    pred: int

    def _check(self, method: str, m: int) -> None:
        if method not in self.maps:
            raise InputError(f"no maps for method {method!r}; computed: {', '.join(self.maps)}")
        if int(m) not in self.maps[method]:
            raise InputError(f"no map for m={m}; computed: {', '.join(map(str, self.m_grid))}")

    def save_heatmap(self, path, method: str, m: int, title: str | None = None) -> dict:
        """Heatmap PNG of ``maps[method][m]`` (:func:`empirical.plotting.save_heatmap`); returns path and limit."""
        from empirical.plotting import save_heatmap

        self._check(method, m)
        t = title if title is not None else f"{method}, m={m}, {self.augmentation}, target {self.target}"
        return save_heatmap(self.maps[method][int(m)], path, self.image, title=t)

    def save_montage(self, path, title: str = "") -> dict:
        """Montage PNG: rows = methods, columns = the input and each m."""
        from empirical.plotting import montage

        return montage({meth: dict(self.maps[meth]) for meth in self.methods}, self.image, path,
                       column_labels={m: f"m = {m}" for m in self.m_grid},
                       title=title or f"{self.augmentation}, target {self.target}")

    def save_convergence(self, path, title: str = "") -> dict:
        """s1, s2 against m (log axes) with a 1/sqrt(m) reference line."""
        from empirical.plotting import convergence_plot

        st = {meth: {s: {m: self.stats[meth][m][s] for m in self.m_grid} for s in ("s1", "s2")} for meth in self.methods}
        return convergence_plot(st, path, title=title)


def _as_x01(image, to_unit):
    """(C, H, W) float32 tensor in [0, 1] and an id from a path, PIL image, tensor or ndarray."""
    import numpy as np
    import torch

    from empirical.data import UnreadableImage, load_image

    image_id = "image"
    if isinstance(image, (str, os.PathLike)):
        p = Path(image)
        if not p.is_file():
            raise InputError(f"image file not found: {image}")
        try:
            image, image_id = load_image(p), p.name
        except UnreadableImage as exc:
            raise InputError(f"cannot read image {p}: {exc.reason}") from None
    if hasattr(image, "convert"):  # PIL
        if to_unit is not None:
            return to_unit(image), image_id
        from torchvision.transforms.v2 import functional as F

        return F.to_dtype(F.pil_to_tensor(image.convert("RGB")), torch.float32, scale=True), image_id
    if isinstance(image, np.ndarray):
        image = torch.as_tensor(image)
        if image.dim() == 3 and image.shape[-1] == 3 and image.shape[0] != 3:
            image = image.permute(2, 0, 1)
    if not torch.is_tensor(image) or image.dim() != 3 or image.shape[0] != 3:
        raise InputError("image must be a file, a PIL image or an RGB array (3, H, W) / (H, W, 3) in [0, 1]")
    image = image.detach().to("cpu", torch.float32)
    if image.min() < 0 or image.max() > 1:
        raise InputError("an image array must lie in [0, 1] (the un-normalised picture)")
    return image, image_id


def explain(model_or_loaded, image, methods=("lrp_beta_1",), augmentation: str = "gaussian", m=(1, 4, 16),
            seed: int = 0, sigma: float = 1.0, target: int | None = None, batch_size: int = 8, device=None,
            dtype: str = "float32", split_half: bool = True, normalize=None, image_id: str | None = None,
            explainer=None) -> ExplainResult:
    """Average a method's maps over ``m`` augmented samples of one image (nested over the m given).

    Parameters
    ----------
    model_or_loaded : a model name of :data:`empirical.models.MODEL_NAMES`, a
        :class:`empirical.models.LoadedModel` (its preprocessing is used), or a ``torch.nn.Module``
        (then ``image`` is used at its own size and ``normalize`` maps [0, 1] to the network input;
        default identity)
    image : path, PIL image, or RGB array/tensor in [0, 1]
    methods : engine method names (:func:`empirical.engine.parse_method`)
    augmentation : "gaussian" (std ``sigma`` in network-input space, [P1] Sec. 6.1), "photometric" or "none"
    m : sample sizes; the averages are nested (the largest contains the others)
    seed : seeds the samples (:mod:`empirical.augment`), so results are reproducible
    target : class to explain (default: the top prediction on the clean image)
    split_half : also draw a disjoint second set for s1, s2 (eq. (38), (39)); doubles the cost
    explainer : an existing :class:`empirical.engine.Explainer` of the model (saves its set-up)

    Returns
    -------
    :class:`ExplainResult` with ``.maps[method][m]`` (numpy) and ``.save_heatmap(path, method, m)``.

    Raises
    ------
    InputError
        Unknown model, method or augmentation, bad sizes, or an unreadable image.
    """
    import torch

    from empirical.engine import parse_method
    from empirical.explain.average import AUGMENTATIONS, average_maps

    if isinstance(methods, str):
        methods = (methods,)
    methods = tuple(dict.fromkeys(methods))
    if not methods:
        raise InputError("methods must name at least one method")
    for meth in methods:
        parse_method(meth)
    if augmentation not in AUGMENTATIONS:
        raise InputError(f"augmentation must be one of {', '.join(AUGMENTATIONS)}, got {augmentation!r}")
    grid = (m,) if isinstance(m, int) else tuple(m)
    if not grid or any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in grid):
        raise InputError(f"m must be positive integers, got {m!r}")
    if dtype not in ("float32", "float64"):
        raise InputError(f"dtype must be float32 or float64, got {dtype!r}")
    if isinstance(model_or_loaded, str):
        from empirical.models import load_model

        model_or_loaded = load_model(model_or_loaded)
    if hasattr(model_or_loaded, "model") and hasattr(model_or_loaded, "normalize"):
        model, to_unit, norm = model_or_loaded.model, model_or_loaded.to_unit, model_or_loaded.normalize
    else:
        model, to_unit, norm = model_or_loaded, None, (normalize or (lambda x: x))
    x01, default_id = _as_x01(image, to_unit)
    tdtype = torch.float64 if dtype == "float64" else torch.float32
    if explainer is None:
        from empirical.engine import Explainer

        explainer = Explainer(model, dtype=tdtype, device=device)
    dev = getattr(explainer, "device", device)
    res = average_maps(explainer, norm, x01, methods, grid, augmentation, seed, image_id or default_id, target=target,
                       sigma=sigma, batch_size=batch_size, device=dev, dtype=tdtype, split_half=split_half)
    return ExplainResult(maps=res.maps, stats=res.stats, image=x01.permute(1, 2, 0).numpy(), methods=methods,
                         m_grid=tuple(sorted(set(grid))), augmentation=augmentation, target=res.target, pred=res.pred)


def report_section(out_dir, link_base=None, n_photos: int = 2, m=(1, 4), device: str = "cpu",
                   threads: int | None = 1) -> str:
    """The main job's figure section: montages of :data:`REPORT_METHODS` at m = 1 and 4.

    For the first ``n_photos`` shipped photos (EfficientNet-Lite0, shipped weights), Gaussian
    (σ = 1, network-input space) and photometric augmentation, ``boundcheck explain`` runs into
    ``out_dir/<augmentation>`` (resumable) and the Markdown links its montages and convergence
    plots relative to ``link_base`` (default: ``out_dir``'s parent, where the report lives).
    ``threads``: torch CPU threads for the section (restored afterwards).  One thread by default:
    on the shared 2-core machine that builds the report, with other processes running, the
    section took 6.6 s with one thread and 55 s with two (OpenMP threads oversubscribed).

    Returns
    -------
    str, Markdown.
    """
    import time

    from empirical.engine import Explainer
    from empirical.explain.run import ExplainOptions, run_explain
    from empirical.models import load_model

    import torch

    t0 = time.time()
    out_dir = Path(out_dir)
    base = Path(link_base) if link_base is not None else out_dir.parent
    old_threads = torch.get_num_threads()
    if threads:
        torch.set_num_threads(int(threads))
    try:
        lm = load_model("efficientnet-lite0")
        ex = Explainer(lm.model, device=device)
        results = {}
        from empirical.augment import AUGMENTATIONS as SECTION_6

        for aug in SECTION_6:
            opts = ExplainOptions(out=str(out_dir / aug), n_images=n_photos, methods=REPORT_METHODS,
                                  augmentation=aug, m_grid=tuple(m), device=device, batch_size=8, progress=False,
                                  heatmaps=False, split_half=False)
            results[aug] = run_explain(opts, loaded=lm, explainer=ex)
    finally:
        torch.set_num_threads(old_threads)

    def link(aug, rel):
        return Path(os.path.relpath(out_dir / aug / rel, base)).as_posix()

    lines = [f"Averaged maps of {', '.join(REPORT_METHODS)} on EfficientNet-Lite0 (depth n = "
             f"{results['gaussian']['depth']}) for {n_photos} shipped photos, m = {', '.join(map(str, m))} samples "
             "(the m = 4 average contains the m = 1 sample), Gaussian noise (σ = 1 in network-input space) and "
             "photometric augmentation. Each row has its own symmetric colour limit ±q (q = 99.5th percentile of "
             "|A| at the largest m, in the row label); blue < 0 < red over the faint photo. "
             "`boundcheck explain` makes these for any image, method and m, with the split-half s1, s2 measured on "
             "the image and a convergence plot (the convergence section above has them over 20 photos).", ""]
    recs = {aug: results[aug]["records"] for aug in results}
    for i, r in enumerate(recs["gaussian"]):
        rp = recs["photometric"][i]
        lines += [f"**{r['id']}** (class {r['target']}): Gaussian | photometric", "",
                  f"![{r['id']} Gaussian]({link('gaussian', r['montage'])}) "
                  f"![{r['id']} photometric]({link('photometric', rp['montage'])})", ""]
    th = results["gaussian"]["theory"]
    cells = [f"{meth} {th[meth]['exact']['m_text'] if th[meth].get('exact') else 'no finite bound'}"
             for meth in REPORT_METHODS]
    lines += [f"What the theory guarantees instead (eq. 24, per pixel, t = {th[REPORT_METHODS[0]]['t']:g}, "
              f"δ = {th[REPORT_METHODS[0]]['delta']:g}, exact value range at depth n): m = " + ", ".join(cells) + ".",
              "", f"Maps (`.npy`) and tables: `{link('gaussian', 'explain.md')}`, "
              f"`{link('photometric', 'explain.md')}`; {time.time() - t0:.0f} s."]
    return "\n".join(lines)
