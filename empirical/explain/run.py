"""Resumable driver of ``boundcheck explain``: averaged maps, heatmaps, montages, statistics.

Output folder layout
--------------------
``config.json``
    The run's configuration; a run into a folder holding a different one is
    refused (one line, exit 2).
``records.jsonl``
    One JSON line per finished image (written after its files, fsync'ed): the
    unit of resumability.  A restart skips the images it lists.  Written
    through the shared store :class:`empirical.io.ResumableStore`.
``skipped.jsonl``
    One line per image that cannot be decoded (id, path, reason): skipped and
    recorded, as by every command; the summary states the count.
``<image>/<method>_m<m>.npy``
    The averaged map (H, W) float32 of the first m samples (set 1).
``<image>/<method>_m<m>.png``
    Its heatmap (diverging colormap centred at 0, limits ``+-q``, ``q`` the
    99.5th percentile of ``|A|``, over the faint image; :mod:`empirical.plotting`).
``<image>/montage.png``, ``<image>/convergence.png``
    Rows = methods, columns = the input and each m; s1, s2 against m.
``explain.json``, ``explain.md``
    Every image's statistics beside the m the theory guarantees (rebuilt from
    ``records.jsonl`` at the end of every run).
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import re
import time
from dataclasses import dataclass
from pathlib import Path

from boundcheck.errors import InputError
from boundcheck.paper import DELTA
from empirical.explain.average import AUGMENTATIONS
from empirical.options import StudyOptions

DEFAULT_METHODS = ("gradient_x_input", "lrp_beta_0", "lrp_beta_1", "lrp_gamma_100")
DEFAULT_M = (1, 4, 16, 64)
DEFAULT_T, DEFAULT_DELTA = 0.01, DELTA
DEFAULT_MAX_M = 1024
#: images explained when neither --images nor --image is given (the shipped photos)
DEFAULT_N_SHIPPED = 1
RECORDS_FILE = "records.jsonl"
#: configuration keys a resume must repeat
_CONFIG_KEYS = ("model", "weights", "random_weights", "num_classes", "input_size", "mean", "std", "image_ids_sha256",
                "methods", "augmentation", "sigma", "m_grid", "seed", "dtype", "allow_tf32", "batch_size", "t",
                "delta", "target_s2", "max_m", "split_half", "code")
UNGUARANTEED = "measured on this image, not a guarantee"


@dataclass
class ExplainOptions(StudyOptions):
    """Everything ``boundcheck explain`` needs (the CLI fills it): the shared
    :class:`empirical.options.StudyOptions` (``n_images`` None: every image of the source, or the
    first :data:`DEFAULT_N_SHIPPED` shipped photos without one) and explain's own below."""

    out: str
    methods: tuple = DEFAULT_METHODS
    augmentation: str = "gaussian"
    sigma: float = 1.0
    m_grid: tuple = DEFAULT_M
    batch_size: int = 8
    t: float = DEFAULT_T
    delta: float = DEFAULT_DELTA
    target_s2: float | None = None
    max_m: int = DEFAULT_MAX_M
    split_half: bool = True  # a second, disjoint set of samples for s1, s2 (doubles the cost)
    heatmaps: bool = True  # one PNG per (method, m); the montage and .npy files are always written
    stop_after: int | None = None  # stop after this many images (a simulated kill; tests)


# ----------------------------------------------------------------------------- validation
def _real(name: str, v, lo: float | None = None, hi: float | None = None, open_hi: bool = True) -> float:
    try:
        x = float(v)
    except (TypeError, ValueError):
        raise InputError(f"{name} must be a number, got {v!r}") from None
    if not math.isfinite(x) or (lo is not None and not x > lo) or (hi is not None and not (x < hi if open_hi else x <= hi)):
        rng = f"> {lo}" if hi is None else f"in ({lo}, {hi})"
        raise InputError(f"{name} must be {rng}, got {v!r}")
    return x


def list_items(opts: ExplainOptions):
    """The images to explain (``ImageItem`` list) and a description of the source
    (:func:`empirical.data.list_images`; without a source the first :data:`DEFAULT_N_SHIPPED` shipped photos)."""
    from empirical.data import list_images

    files = tuple(opts.image_files or ()) or None
    n = opts.n_images
    if n is None and files is None and opts.images is None and opts.imagenet_val is None:
        n = DEFAULT_N_SHIPPED
    return list_images(imagenet_val=opts.imagenet_val, labels=opts.labels, images=opts.images, n=n,
                       image_files=files)


def validate(opts: ExplainOptions):
    """Check every option and image (decoding each) before any model is loaded.

    Returns
    -------
    ``(options, items, source)``: a normalised copy of ``opts`` (sorted m grid, methods without
    repeats, floats), the readable images and a description of their source (``source["skipped"]``:
    the images that cannot be decoded, each with its reason); ``opts`` is not modified.

    Raises
    ------
    InputError
        One line naming the first problem found.
    """
    from empirical.data import UnreadableImage, load_image, no_readable_image
    from empirical.engine import parse_method

    opts = dataclasses.replace(opts)
    grid = tuple(opts.m_grid)
    if not grid or any(isinstance(m, bool) or not isinstance(m, int) or m < 1 for m in grid):
        raise InputError(f"--m-grid must be positive integers, got {','.join(map(str, grid)) or '(none)'}")
    opts.m_grid = tuple(sorted(set(grid)))
    if not opts.methods:
        raise InputError("--methods must name at least one method")
    for m in opts.methods:
        parse_method(m)
    opts.methods = tuple(dict.fromkeys(opts.methods))
    if opts.augmentation not in AUGMENTATIONS:
        raise InputError(f"--augmentation must be one of {', '.join(AUGMENTATIONS)}, got {opts.augmentation!r}")
    opts.sigma = _real("--sigma", opts.sigma, lo=0.0)
    opts.t = _real("--deviation", opts.t, lo=0.0)
    opts.delta = _real("--delta", opts.delta, lo=0.0, hi=1.0)
    if opts.target_s2 is not None:
        opts.target_s2 = _real("--target-s2", opts.target_s2, lo=0.0)
        if not opts.split_half:
            raise InputError("--target-s2 measures the split-half s2: it needs the second sample set (drop --no-split-half)")
    from empirical.options import check_count

    check_count("--max-m", opts.max_m)
    check_count("--batch-size", opts.batch_size)
    opts.check_shared()
    from empirical.models import LITE0, resolve_model, torchvision_classifiers

    if opts.model != LITE0 and ":" not in opts.model and opts.model not in torchvision_classifiers():
        resolve_model(opts.model)  # an unknown name: one line with the closest names, nothing loaded
    out = Path(opts.out)
    if out.exists() and not out.is_dir():
        raise InputError(f"--out {out} exists and is not a folder")
    items, source = list_items(opts)
    readable, skipped = [], []
    for it in items:
        try:
            load_image(it.path)
            readable.append(it)
        except UnreadableImage as exc:
            skipped.append({"index": it.index, "id": it.id, "path": it.path, "error": exc.reason})
    if not readable:
        raise no_readable_image(skipped)
    if skipped:
        source = {**source, "skipped": skipped}
    return opts, readable, source


def image_stem(image_id: str) -> str:
    """A file-system-safe folder name for an image id."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", image_id).strip("._") or "image"


# ----------------------------------------------------------------------------- configuration
def code_hash() -> str:
    """SHA-256 of the code that computes the maps (the engine's fingerprint and ``average.py``): a
    resume after it changed is refused, since the stored maps would no longer be reproducible."""
    from empirical.experiment.runner import code_fingerprint

    own = Path(__file__).with_name("average.py").read_bytes()
    return hashlib.sha256(code_fingerprint().encode() + own).hexdigest()


def build_config(opts: ExplainOptions, items, source: dict, weights: str) -> dict:
    """The run's configuration; ``weights`` is the --weights file, "random" or "default" (the shipped
    Lite0 weights / the torch hub cache file of :func:`empirical.models.load_model`)."""
    ids = "\n".join(it.id for it in items).encode()
    return {"format": 1, "model": opts.model, "weights": weights, "random_weights": bool(opts.random_weights),
            "num_classes": opts.num_classes, "input_size": opts.input_size,
            "mean": list(opts.mean) if opts.mean else None, "std": list(opts.std) if opts.std else None,
            "allow_tf32": bool(opts.allow_tf32),
            "source": source, "image_ids_sha256": hashlib.sha256(ids).hexdigest(), "n_images": len(items),
            "methods": list(opts.methods), "augmentation": opts.augmentation, "sigma": float(opts.sigma),
            "m_grid": list(opts.m_grid), "seed": int(opts.seed), "dtype": opts.dtype,
            "batch_size": int(opts.batch_size), "t": float(opts.t), "delta": float(opts.delta),
            "target_s2": opts.target_s2, "max_m": int(opts.max_m), "split_half": bool(opts.split_half),
            "code": code_hash(),
            "items": [it.to_dict() for it in items]}


#: explains a refused resume when the code that computes the maps changed
_HINTS = {"code": "the code that computes the maps changed since that run"}


# ----------------------------------------------------------------------------- per image
def first_nonfinite_map(res) -> str | None:
    """``"the <method> map at m=<m> holds k NaN/inf of n values"`` for the first averaged map (either
    sample set) that is not finite everywhere, or the clean target logit; None when all are finite."""
    import numpy as np

    if not math.isfinite(res.target_logit):
        return f"the target logit on the clean image is {res.target_logit}"
    for maps in (res.maps, res.maps2 or {}):
        for method, by_m in maps.items():
            for m in sorted(by_m):
                bad = int((~np.isfinite(by_m[m])).sum())
                if bad:
                    return f"the {method} map at m={m} holds {bad} NaN/inf of {by_m[m].size} values"
    return None


def theory_block(methods, n: int, t: float, delta: float, m_values) -> dict:
    """``{method: required_m(...) + "l2_bound_log10": {form: {m: .}}}`` (image-independent)."""
    from empirical.explain.stats import l2_bound_curve_log10, required_m

    return {meth: {**required_m(meth, n, t, delta), "l2_bound_log10": l2_bound_curve_log10(meth, n, delta, m_values)}
            for meth in methods}


def write_image_outputs(folder: Path, image01, res, methods, grid, title: str, theory: dict | None = None,
                        heatmaps: bool = True) -> dict:
    """``.npy`` + heatmap per (method, m), the montage and the convergence plot of one image.

    Returns ``{"files": {method: {m: {"npy", "png", "limit"}}}, "montage", "convergence"}``
    (paths relative to ``folder.parent``).
    """
    import numpy as np

    from empirical import plotting

    folder.mkdir(parents=True, exist_ok=True)
    rel = folder.name
    files = {}
    for meth in methods:
        files[meth] = {}
        for m in grid:
            a = res.maps[meth][m]
            np.save(folder / f"{meth}_m{m}.npy", a.astype(np.float32))
            entry = {"npy": f"{rel}/{meth}_m{m}.npy", "limit": plotting.symmetric_limit(a)}
            if heatmaps:
                plotting.save_heatmap(a, folder / f"{meth}_m{m}.png", image01, title=f"{meth}, m={m}, {title}")
                entry["png"] = f"{rel}/{meth}_m{m}.png"
            files[meth][m] = entry
    plotting.montage({meth: {m: res.maps[meth][m] for m in grid} for meth in methods}, image01,
                     folder / "montage.png", column_labels={m: f"m = {m}" for m in grid}, title=title)
    out = {"files": files, "montage": f"{rel}/montage.png"}
    if res.maps2 is not None:
        stats = {meth: {"s1": {m: res.stats[meth][m]["s1"] for m in grid},
                        "s2": {m: res.stats[meth][m]["s2"] for m in grid}} for meth in methods}
        if res.doubling is not None:
            for meth in methods:
                for m, v in res.doubling[meth]["s2"].items():
                    stats[meth]["s2"].setdefault(m, v)
        bounds = {}
        for meth in methods:
            for form, curve in ((theory or {}).get(meth, {}).get("l2_bound_log10") or {}).items():
                bounds[(meth, form)] = curve
        plotting.convergence_plot(stats, folder / "convergence.png", bounds, title=f"split-half s1, s2: {title}")
        out["convergence"] = f"{rel}/convergence.png"
    return out


def image_record(item, res, methods, grid, outputs: dict, target_s2) -> dict:
    """The JSON line of one image (no NaN: a None comes with a reason)."""
    from empirical.explain.stats import finite_or_none

    rec = {"index": item.index, "id": item.id, "path": item.path, "label": item.label, "target": res.target,
           "pred": res.pred, "target_logit": res.target_logit, "samples_per_set": res.samples_per_set,
           "montage": outputs["montage"], "convergence": outputs.get("convergence"), "methods": {}}
    for meth in methods:
        per_m = {}
        for m in grid:
            st, reasons = res.stats[meth][m], {}
            row = {"s1": finite_or_none(st["s1"], "no split half", reasons, "s1"),
                   "s2": finite_or_none(st["s2"], "a mean map is exactly 0 (direction undefined)", reasons, "s2"),
                   "norm1": st["norm1"], "norm2": finite_or_none(st["norm2"], "no split half", reasons, "norm2"),
                   **outputs["files"][meth][m]}
            if reasons:
                row["null_reasons"] = reasons
            per_m[str(m)] = row
        entry = {"m": per_m}
        if res.doubling is not None:
            d = res.doubling[meth]
            entry["target_s2"] = {"target": target_s2, "m_reached": d["m_reached"],
                                  "s2": {str(k): (v if math.isfinite(v) else None) for k, v in d["s2"].items()},
                                  "note": UNGUARANTEED if d["m_reached"] is not None
                                  else f"not reached up to --max-m; {UNGUARANTEED}"}
        rec["methods"][meth] = entry
    return rec


# ----------------------------------------------------------------------------- run
def run_explain(opts: ExplainOptions, loaded=None, explainer=None) -> dict:
    """Run (or resume) ``boundcheck explain``; returns paths, records and the Markdown summary.

    ``loaded`` (with ``model``, ``to_unit`` and ``normalize``) and ``explainer``
    may be given (tests, notebooks); otherwise :func:`empirical.models.resolve_model` and
    :class:`empirical.engine.Explainer` are used.
    """
    from empirical.data import load_image
    from empirical.experiment.runner import SKIPPED_FILE
    from empirical.options import model_spec, resolve_device
    from empirical.explain.average import average_maps
    from empirical.io import ResumableStore, append_jsonl, check_output_dir, read_jsonl

    opts, items, source = validate(opts)
    device = resolve_device(opts.device)
    out = check_output_dir(opts.out)
    opts.apply_threads()
    # the configuration is checked before the model is loaded (a refused resume costs nothing)
    spec = model_spec(opts)
    wdesc = str(Path(opts.weights).resolve()) if opts.weights else ("default" if spec.trained else "random")
    config = build_config(opts, items, source, wdesc)
    ResumableStore.check(out, config, compare=_CONFIG_KEYS, hints=_HINTS)
    if loaded is None:
        loaded = model_spec(opts).resolve()
    from empirical.data import check_labels

    if hasattr(loaded, "categories"):
        check_labels(items, len(loaded.categories), source)
    from empirical.options import check_run_memory

    check_run_memory(loaded, opts.batch_size, device, opts.dtype)
    # written once the model has loaded and the labels fit it
    store = ResumableStore(out, config, compare=_CONFIG_KEYS, results=RECORDS_FILE, hints=_HINTS, sort_keys=True)
    for rec in source.get("skipped", ()):
        if rec["id"] not in {r["id"] for r in read_jsonl(out / SKIPPED_FILE)}:
            append_jsonl(out / SKIPPED_FILE, rec)
    engine = opts.engine_options()
    dtype = engine["dtype"]
    if explainer is None:
        from empirical.engine import Explainer

        explainer = Explainer(loaded.model, device=device, **engine)
    from empirical.audit.depth import torch_network_depth

    depth = torch_network_depth(loaded.model).n
    grid = tuple(opts.m_grid)
    theory = theory_block(opts.methods, depth, opts.t, opts.delta, grid)

    done = store.done_keys()
    todo = [it for it in items if it.id not in done]
    per_image = (2 if opts.split_half else 1) * max(grid)
    from empirical.runtime import progress_bar

    t0, written, status = time.time(), 0, "complete"
    aug_title = opts.augmentation + (f" σ={opts.sigma:g}" if opts.augmentation == "gaussian" else "")
    with progress_bar(opts.progress, total=len(todo) * per_image, unit="sample", desc=f"explain {opts.model}") as bar:
        for it in todo:
            x01 = loaded.to_unit(load_image(it.path))
            if hasattr(loaded, "model"):  # tests' stand-ins have no model
                from empirical.models import check_finite_images

                check_finite_images(loaded.model, loaded.normalize(x01).unsqueeze(0), [it.id])

            def tick(k, _bar=bar):
                if _bar is not None:
                    if _bar.n + k > _bar.total:
                        _bar.total = _bar.n + k
                    _bar.update(k)

            res = average_maps(explainer, loaded.normalize, x01, opts.methods, grid, opts.augmentation, opts.seed,
                               it.id, target=it.label, sigma=opts.sigma, batch_size=opts.batch_size, device=device,
                               dtype=dtype, split_half=opts.split_half, target_s2=opts.target_s2, max_m=opts.max_m,
                               on_samples=tick)
            bad = first_nonfinite_map(res)
            if bad:  # never a map of NaN written as a result, nor statistics with wrong reasons for nulls
                raise InputError(f"image {it.id}: {bad}; stopped before writing it (images already written "
                                 "are kept)")
            title = f"{it.id}, {opts.model}, {aug_title}, target {res.target}"
            outputs = write_image_outputs(out / image_stem(it.id), x01, res, opts.methods, grid, title, theory,
                                          heatmaps=opts.heatmaps)
            store.append(image_record(it, res, opts.methods, grid, outputs, opts.target_s2))
            written += 1
            if opts.stop_after is not None and written >= opts.stop_after and written < len(todo):
                status = "stopped"
                break
    records = sorted(store.records(), key=lambda r: r["index"])
    skipped = read_jsonl(out / SKIPPED_FILE)
    summary = write_summary(out, config, records, theory, depth, skipped=skipped)
    return {"status": status, "written": written, "seconds": time.time() - t0, "records": records,
            "skipped": skipped, "theory": theory, "depth": depth, "summary": summary, "out": str(out)}


# ----------------------------------------------------------------------------- summary
def _fmt(v, digits: int = 3) -> str:
    if v is None:
        return "–"
    return f"{v:.{digits}g}" if isinstance(v, float) else str(v)


def _theory_cell(th: dict, form: str) -> str:
    f = th.get(form)
    return f["m_text"] if f else "no finite bound"


def write_summary(out: Path, config: dict, records: list, theory: dict, depth: int, skipped=()) -> str:
    """``explain.json`` and ``explain.md`` from all records; returns the Markdown."""
    from empirical.io import atomic_write_json, atomic_write_text
    from empirical.models import weights_label

    meta = {k: config[k] for k in ("model", "weights", "methods", "augmentation", "sigma", "m_grid", "seed", "dtype",
                                   "t", "delta", "target_s2", "max_m")}
    meta["depth_n"] = depth
    doc = {"config": meta, "theory": theory, "images": records, "skipped": list(skipped),
           "notes": {"theory": "eq. (24): m for per-pixel deviation t with probability >= 1-delta, the rule's value "
                               "range (eq. (31)/(33)) at depth n, paper form and exact solution of the recursion",
                     "measured": "s1 (eq. 38), s2 (eq. 39) of two disjoint sets of m samples of this image; "
                                 + UNGUARANTEED}}
    atomic_write_json(out / "explain.json", doc, indent=1, sort_keys=True)
    t, d = config["t"], config["delta"]
    trained = config["weights"] != "random"
    lines = [f"**Averaged attribution maps**, {config['model']} ({weights_label(trained)}, depth n = {depth}), "
             "augmentation "
             f"`{config['augmentation']}`" + (f" σ = {config['sigma']:g}" if config["augmentation"] == "gaussian" else "")
             + f", seed {config['seed']}, m = {', '.join(map(str, config['m_grid']))}; {len(records)} image(s)"
             + (f", {len(skipped)} unreadable image(s) skipped (skipped.jsonl)." if skipped else "."),
             "",
             f"What the theory guarantees (eq. (24), per pixel, t = {t:g}, δ = {d:g}, value range at depth n = {depth}) "
             "next to what one image shows (split-half s1, s2, eq. (38)/(39): " + UNGUARANTEED + ").",
             "",
             "| method | m for t (exact recursion) | m for t (paper) | note |", "|---|---|---|---|"]
    for meth, th in theory.items():
        lines.append(f"| {meth} | {_theory_cell(th, 'exact')} | {_theory_cell(th, 'paper')} | {th.get('note', '')} |")
    lines += ["", f"t is an absolute per-pixel deviation: compare it with each map's colour limit q below (a robust "
              f"max |A|); where q < t = {t:g} the guaranteed accuracy is coarser than the map itself."]
    for r in records:
        lines += ["", f"### {r['id']} (target {r['target']}, prediction {r['pred']})", "",
                  f"![montage]({r['montage']})" + (f" ![convergence]({r['convergence']})" if r.get("convergence") else ""),
                  "", "| method | m | s1 | s2 | ‖mean‖₂ | colour limit q | theory m (exact) | theory m (paper) |",
                  "|---|---|---|---|---|---|---|---|"]
        for meth, e in r["methods"].items():
            for m, row in sorted(e["m"].items(), key=lambda kv: int(kv[0])):  # JSON keys are text: 1, 2, 4, 16
                lines.append(f"| {meth} | {m} | {_fmt(row['s1'])} | {_fmt(row['s2'])} | {_fmt(row['norm1'])} | "
                             f"{_fmt(row['limit'])} | {_theory_cell(theory[meth], 'exact')} | "
                             f"{_theory_cell(theory[meth], 'paper')} |")
        if any("target_s2" in e for e in r["methods"].values()):
            lines += ["", f"Doubling m until s2 ≤ {config['target_s2']:g} (up to {config['max_m']}), "
                      + UNGUARANTEED + ":", "", "| method | m reached | s2 at doubling points |", "|---|---|---|"]
            for meth, e in r["methods"].items():
                ts = e["target_s2"]
                seq = ", ".join(f"{k}: {_fmt(v)}" for k, v in ts["s2"].items())
                lines.append(f"| {meth} | {ts['m_reached'] if ts['m_reached'] is not None else 'not reached'} | {seq} |")
    text = "\n".join(lines) + "\n"
    atomic_write_text(out / "explain.md", text)
    return text
