"""Driver of the sanity checks of [P2]: options, validation, the resumable per-image loop, tables.

:class:`SanityOptions` holds one run's options (the CLI fills it; the main job
builds it directly) and :func:`run_check` runs it: validation (before any model
is loaded), the model and the image listing, then one record per image appended
to ``results.jsonl`` through :class:`empirical.io.ResumableStore` (``config.json``
checked on resume), and at the end tables, figures and ``summary.md`` built from
the stored records (:func:`finalise`).
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np

from boundcheck.errors import InputError
from empirical.io import atomic_write_text
from empirical.options import StudyOptions

SUBCOMMANDS = ("randomize", "faithfulness", "overtaking")
DEFAULT_METHODS = ("gradient", "gradient_x_input", "integrated_gradients", "lrp_beta_0", "lrp_beta_1",
                   "adaptive_beta", "lrp_gamma_100")


@dataclass
class SanityOptions(StudyOptions):
    """Options of one sanity run: the shared :class:`empirical.options.StudyOptions`
    (``n_images`` 4 by default) and the checks' own below.

    The options except ``out``, ``device``, ``threads``, ``batch_size``, ``progress`` and
    ``n_images`` form the run's configuration: a restart into the same ``--out``
    must repeat them (results do not depend on the others; a larger
    ``--n-images`` extends a finished run).
    """

    command: str
    out: str
    methods: tuple = DEFAULT_METHODS
    region_size: int = 15
    n_regions: int = 30
    blur_kernel: int = 15
    steps: int | None = None
    stride: int = 1
    batch_size: int = 8
    n_images: int | None = field(default=4, kw_only=True)

    def config(self) -> dict:
        d = asdict(self)
        for k in ("out", "device", "threads", "batch_size", "progress", "n_images", "low_memory"):
            d.pop(k)
        # options at their defaults stay out (a run made before they existed resumes)
        for k, default in (("random_weights", False), ("num_classes", None), ("input_size", None), ("mean", None),
                           ("std", None), ("image_files", None), ("dtype", "float32"), ("allow_tf32", False)):
            if d[k] == default:
                d.pop(k)
        if d.get("image_files") is not None:
            d["image_files"] = [str(Path(f).resolve()) for f in d["image_files"]]
        d["methods"] = list(self.methods)
        if self.command == "overtaking":
            for k in ("methods", "region_size", "n_regions", "blur_kernel", "steps", "stride", "seed"):
                d.pop(k)
        elif self.command == "faithfulness":
            for k in ("steps", "stride"):
                d.pop(k)
        else:
            for k in ("region_size", "n_regions", "blur_kernel"):
                d.pop(k)
        return d


# --------------------------------------------------------------------------- validation and loading
def validate(opts: SanityOptions) -> None:
    if opts.command not in SUBCOMMANDS:
        raise InputError(f"unknown sanity check {opts.command!r}; choose one of {', '.join(SUBCOMMANDS)}")
    from empirical.options import check_count

    for name, v in (("--batch-size", opts.batch_size), ("--n-regions", opts.n_regions), ("--stride", opts.stride)):
        check_count(name, v)
    check_count("--steps", opts.steps, allow_none=True)
    if opts.region_size not in (8, 15):
        raise InputError(f"--region-size must be 8 or 15, got {opts.region_size!r}")
    from empirical.options import resolve_device

    opts.check_shared()
    if str(opts.device).startswith("cuda"):
        resolve_device(opts.device)
    if opts.command != "overtaking":
        if not opts.methods:
            raise InputError("--methods must name at least one method")
        from empirical.engine import parse_method

        for m in opts.methods:
            parse_method(m)
        if "random" in opts.methods:
            raise InputError("'random' is the built-in reference order of faithfulness, not a method")


def load_inputs(opts: SanityOptions):
    """(LoadedModel, list of ImageItem, source description)."""
    from empirical.data import list_images
    from empirical.options import model_spec

    lm = model_spec(opts).resolve()
    items, src = list_images(imagenet_val=opts.imagenet_val, labels=opts.labels, images=opts.images,
                             image_files=list(opts.image_files) if opts.image_files else None,
                             n=opts.n_images)
    from empirical.data import check_labels

    check_labels(items, len(lm.categories), src)
    return lm, items, src


def load_batch(lm, items):
    """Stack the preprocessed images that can be read; returns (x, kept items, skipped [(item, reason)])."""
    import torch

    from empirical.data import UnreadableImage, load_image

    xs, kept, skipped = [], [], []
    for it in items:
        try:
            xs.append(lm.preprocess(load_image(it.path)))
            kept.append(it)
        except UnreadableImage as exc:
            skipped.append((it, exc.reason))
    x = torch.stack(xs) if xs else None
    return x, kept, skipped


def engine_factory(device: str, **engine):
    """``model -> explain(x, methods, target) -> {method: ndarray (B, H, W)}`` using the engine; ``engine``:
    :meth:`empirical.options.StudyOptions.engine_options` (dtype, allow_tf32, low_memory)."""
    import torch

    from empirical.engine import Explainer

    def factory(model):
        ex = Explainer(model, device=device, **engine)

        def explain(x, methods, target):
            att = ex.attribute(x.to(ex.device), list(methods), target=torch.as_tensor(target, device=ex.device))
            return {m: att.maps[m].detach().double().cpu().numpy() for m in methods}

        explain.explainer = ex
        return explain

    return factory


# --------------------------------------------------------------------------- drivers
def run_check(opts: SanityOptions) -> dict:
    """Run one check (resumably) and write its tables, figures and summary; returns paths + summary.

    Raises
    ------
    InputError
        Bad options (before anything is loaded), an unusable ``--out``, a folder
        holding another configuration, or no readable image at all.
    """
    import torch

    from empirical.io import ResumableStore, check_output_dir

    validate(opts)
    from empirical.options import resolve_device

    opts = replace(opts, device=resolve_device(opts.device))
    check_output_dir(opts.out)
    opts.apply_threads()
    t0 = time.time()
    lm, items, src = load_inputs(opts)
    _validate_against_model(opts, lm)
    config = opts.config()
    config["source"] = src
    config["weights_file"] = lm.weights_file
    store = ResumableStore(opts.out, config)
    done = store.done_keys()
    todo = [it for it in items if it.id not in done]
    device = torch.device(opts.device)
    ctx = _prepare(opts, lm, device)
    from empirical.runtime import progress_bar

    with progress_bar(opts.progress, total=len(todo), unit="img", desc=f"sanity {opts.command}") as bar:
        for i in range(0, len(todo), opts.batch_size):
            chunk = todo[i:i + opts.batch_size]
            x, kept, skipped = load_batch(lm, chunk)
            for it, why in skipped:
                store.append({"id": it.id, "skipped": why})
            if x is not None:
                from empirical.models import check_finite_images

                if hasattr(lm, "model"):  # tests' stand-ins have no model
                    check_finite_images(lm.model, x, [it.id for it in kept])
                for rec in _process(opts, ctx, x, kept, device):
                    store.append(rec)
            if bar is not None:
                bar.update(len(chunk))
    stored = store.records()
    records = [r for r in stored if "skipped" not in r]
    bad = [r for r in stored if "skipped" in r]
    if not records:
        from empirical.data import no_readable_image

        raise no_readable_image([{"id": r["id"], "error": r["skipped"]} for r in bad])
    result = finalise(opts, ctx, records, Path(opts.out))
    result["seconds"] = time.time() - t0
    result["n_images"] = len(records)
    result["n_skipped"] = len(bad)
    if bad:  # the count in the summary, as every command shows it (the records are in results.jsonl)
        from empirical.io import atomic_write_text

        result["summary"] += (f"\n{len(bad)} unreadable image(s) skipped (first: {bad[0]['id']}: "
                              f"{bad[0]['skipped']}; all in results.jsonl).\n")
        atomic_write_text(Path(opts.out) / "summary.md", result["summary"])
    return result


def _validate_against_model(opts: SanityOptions, lm) -> None:
    """Checks that need the model's input size (after loading it, before any image is processed)."""
    if opts.command == "faithfulness":
        from empirical.sanity.faithfulness import region_grid

        size = int(getattr(lm, "input_size", 0) or 0)
        if size:
            cells = len(region_grid(size, size, opts.region_size))
            if opts.n_regions > cells:
                raise InputError(f"--n-regions {opts.n_regions} exceeds the {cells} cells of {opts.region_size}x"
                                 f"{opts.region_size} in a {size}x{size} input (the maximum is {cells})")


def _prepare(opts, lm, device) -> dict:
    ctx = {"lm": lm, "title": opts.model}
    if opts.command == "randomize":
        from empirical.sanity.schedules import build_schedule, detect_architecture

        arch = detect_architecture(lm.model)
        steps = build_schedule(lm.model, arch, max_steps=opts.steps)
        evaluate = set(range(0, len(steps), opts.stride)) | {len(steps) - 1}
        ctx.update(arch=arch, schedule=steps, evaluate=evaluate, factory=engine_factory(opts.device, **opts.engine_options()))
        from empirical.explain.randomization import MapRecorder  # keeps the first image's maps per step

        ctx["factory"] = ctx["recorder"] = MapRecorder(ctx["factory"], len(evaluate) + 1)
    elif opts.command == "faithfulness":
        ctx["factory"] = engine_factory(opts.device, **opts.engine_options())
        ctx["explain0"] = ctx["factory"](lm.model)
    else:
        import torch

        ctx["model"] = copy.deepcopy(lm.model).to(device=device, dtype=getattr(torch, opts.dtype)).eval()
    return ctx


def _targets(logits, kept) -> tuple[list[int], list[int]]:
    pred = logits.argmax(1).cpu().tolist()
    return [it.label if it.label is not None else p for it, p in zip(kept, pred)], pred


def _process(opts, ctx, x, kept, device) -> list[dict]:
    if opts.command == "randomize":
        from empirical.sanity.randomize import randomization_rows

        explain0 = ctx["factory"](ctx["lm"].model)
        target, pred = _targets(explain0.explainer.logits(x), kept)
        steps = [s for s in ctx["schedule"]]
        rows = randomization_rows(ctx["lm"].model, x, target, steps, list(opts.methods), ctx["factory"],
                                  seed=opts.seed, evaluate=ctx["evaluate"], base_explain=explain0)
        return [{"id": it.id, "label": it.label, "target": t, "pred": p, "rows": r}
                for it, t, p, r in zip(kept, target, pred, rows)]
    if opts.command == "faithfulness":
        from empirical.sanity.faithfulness import faithfulness_rows

        explain0 = ctx["explain0"]
        ex = explain0.explainer
        target, pred = _targets(ex.logits(x), kept)
        maps = explain0(x, list(opts.methods), target)
        recs = faithfulness_rows(ex.logits, x.to(ex.device, ex.dtype), target, maps, opts.region_size,
                                 opts.n_regions, opts.blur_kernel, random_seed=opts.seed,
                                 image_keys=[it.index for it in kept])
        return [{"id": it.id, "label": it.label, "target": t, "pred": p, **r}
                for it, t, p, r in zip(kept, target, pred, recs)]
    import torch

    from empirical.sanity.overtaking import activation_statistics

    labels, V, nonpos = activation_statistics(ctx["model"], x.to(device=device, dtype=getattr(torch, opts.dtype)))
    return [{"id": it.id, "label": it.label, "layers": labels, "V": V[b].tolist(), "nonpos": nonpos[b].tolist()}
            for b, it in enumerate(kept)]


def finalise(opts, ctx, records: list[dict], out: Path) -> dict:
    """Tables, figures and the Markdown summary from all records of the run."""
    from empirical.sanity import report

    title = ctx["title"]
    res: dict = {"paths": {}}
    if not records:
        res["summary"] = f"**{opts.command}**: no readable images.\n"
        return res
    if opts.command == "randomize":
        from empirical.sanity.schedules import schedule_table

        report.write_tables(schedule_table(ctx["schedule"]), out / "schedule")
        summ = report.randomization_summary(records)
        res["paths"]["tables"] = report.write_tables(summ, out / "randomize")
        res["paths"]["figures"] = report.plot_randomization(summ, out, title)
        from empirical.explain.randomization import sanity_montage  # rows = methods, columns = steps

        res["paths"]["montage"] = sanity_montage(ctx, out)
        res["table"] = summ
        res["summary"] = randomize_markdown(summ, ctx, len(records), title)
    elif opts.command == "faithfulness":
        table, curves = report.faithfulness_summary(records)
        res["paths"]["tables"] = report.write_tables(table, out / "faithfulness_auc")
        report.write_tables([{"method": m, **{f"k{k}": v for k, v in enumerate(c)}} for m, c in curves.items()],
                            out / "faithfulness_curves")
        res["paths"]["figures"] = [report.plot_faithfulness(
            curves, out / "faithfulness.png",
            f"{title}: region perturbation, {opts.region_size}x{opts.region_size} cells, blur {opts.blur_kernel}")]
        res["table"] = table
        res["summary"] = faithfulness_markdown(table, opts, len(records), title)
    else:
        from empirical.sanity.overtaking import QUANTILES, overtaking_table

        labels = records[0]["layers"]
        V = np.mean([r["V"] for r in records], axis=0)
        nonpos = np.mean([r["nonpos"] for r in records], axis=0)
        rows = [_with_reasons(r) for r in overtaking_table(labels, V)]
        res["paths"]["tables"] = report.write_tables(rows, out / "overtaking")
        layer_rows = []
        for li, lab in enumerate(labels):
            ps = [r["P"] for r in rows if r["layer"] == li and r["P"] is not None]
            row = {"level": li, "layer": lab, "nonpositive_fraction": float(nonpos[li]),
                   "V_0.95": float(V[li, 0]), "V_0.5": float(V[li, QUANTILES.index(0.5)]),
                   "P_max": float(max(ps)) if ps else None, "P_median": float(np.median(ps)) if ps else None}
            if not ps:
                row["P_reason"] = "V(q_high) = V(q_low) = 0 for every quantile pair: no overtaking probability"
            layer_rows.append(row)
        res["paths"]["layer_tables"] = report.write_tables(layer_rows, out / "activation_layers")
        res["paths"]["figures"] = [
            report.plot_overtaking(rows, labels, out / "overtaking.png", title),
            report.plot_nonpositive(labels, nonpos, out / "nonpositive.png",
                                    f"{title}: fraction of non-positive activations"),
        ]
        res["table"] = layer_rows
        res["summary"] = overtaking_markdown(layer_rows, len(records), title)
    atomic_write_text(out / "summary.md", res["summary"])
    res["paths"]["summary"] = str(out / "summary.md")
    return res


def _with_reasons(row: dict) -> dict:
    """An overtaking row whose undefined K/P (both quantiles 0) are None with the reason beside them."""
    row = dict(row)
    if isinstance(row["K"], float) and math.isnan(row["K"]):
        row["K"], row["P"] = None, None
        row["K_reason"] = row["P_reason"] = "V(q_high) = V(q_low) = 0: K undefined, no overtaking probability"
    return row


# --------------------------------------------------------------------------- Markdown
def randomize_markdown(summ, ctx, n, title) -> str:
    from empirical.sanity.report import markdown_table

    steps = ctx["schedule"]
    last = max(r["step"] for r in summ)
    rows = []
    for r in summ:
        if r["step"] == last:
            rows.append({"method": r["method"], "SSIM (2nd moment)": r["ssim_second_moment"],
                         "Spearman (2nd moment)": r["spearman_second_moment"],
                         "MSE (2nd moment)": r["mse_second_moment"], "Thm 4 bound": r["thm4_bound"],
                         "SSIM (max abs)": r["ssim_max_abs"], "MSE (max abs)": r["mse_max_abs"]})
    head = (f"**Top-down randomisation**, {title}, {n} image(s), schedule `{ctx['arch']}` with {len(steps)} steps "
            f"(explained at steps {sorted(ctx['evaluate'])}); similarity of the original and the randomised "
            f"model's maps after step {last} (marker `{steps[last].marker}`), mean over images. SSIM/Spearman: "
            f"lower = more sensitive to randomisation; MSE: higher; the Thm 4 bound holds where cov >= 0.\n\n")
    return head + markdown_table(rows)


def faithfulness_markdown(table, opts, n, title) -> str:
    from empirical.sanity.report import markdown_table

    head = (f"**Region perturbation**, {title}, {n} image(s), {opts.n_regions} cells of {opts.region_size}x"
            f"{opts.region_size} replaced by a {opts.blur_kernel}x{opts.blur_kernel} box-blurred copy, most "
            f"relevant first; normalised area under the softmax curve (lower is better; `random` = random order).\n\n")
    return head + markdown_table(table, ["method", "auc_mean", "auc_sem", "score_start", "score_end"])


def overtaking_markdown(layer_rows, n, title) -> str:
    from empirical.sanity.report import markdown_table

    ps = [r["P_max"] for r in layer_rows if r["P_max"] is not None]
    npf = [r["nonpositive_fraction"] for r in layer_rows]
    head = (f"**Overtaking (Thm 2, Sec. I/J)**, {title}, {n} image(s), {len(layer_rows)} activation layers: "
            f"largest overtaking probability over all layers and (q_h, q_l) pairs {max(ps) if ps else float('nan'):.3g}, "
            f"median of the per-layer maxima {float(np.median(ps)) if ps else float('nan'):.3g}; "
            f"non-positive activations per layer: mean {np.mean(npf):.2f}, min {np.min(npf):.2f}, "
            f"max {np.max(npf):.2f}.\n\n")
    return head + markdown_table(layer_rows, ["level", "layer", "nonpositive_fraction", "V_0.95", "V_0.5",
                                              "P_max", "P_median"])
