"""Driver of the audit of Lemma 7/8 ([P1] Sec. 5): options, the resumable per-image loop, the summary.

:func:`run_audit` validates :class:`AuditOptions` (before anything is loaded),
loads the model and the image listing, and measures one image at a time
(:func:`audit_image`): per-depth relevance sums and per-layer conservation of
every rule, condition (29) at every neuron, measured value ranges over
augmented samples.  With an output folder each image's record is appended to
``results.jsonl`` through :class:`empirical.io.ResumableStore` as soon as it is
done (``config.json`` checked on resume), so a kill loses at most the image in
progress and a re-run continues; unreadable images are recorded
(``{"id", "index", "skipped"}``) and skipped.  The tables, plots and
``report.md`` are built from the stored records at the end (:func:`summarise`,
:func:`empirical.audit.report.write_report`).
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from boundcheck.errors import InputError
from boundcheck.rules import parse_rule
from empirical.audit.condition29 import DEFAULT_GAMMAS
from empirical.augment import AUGMENTATIONS
from empirical.options import StudyOptions

DEFAULT_RULES: tuple[str, ...] = ("lrp_beta_0", "lrp_beta_1", "lrp_gamma_100", "lrp_gamma_1000")
DEFAULT_AUGMENTATIONS: tuple[str, ...] = AUGMENTATIONS
#: the subsampled per-neuron required gammas of the first readable image (histogram)
HIST_FILE = "required_gamma_log10.npy"


def gamma_key(g: float) -> str:
    """``100.0 -> "100"``, ``1.5 -> "1.5"``: the column name of a gamma."""
    return str(int(g)) if float(g).is_integer() else repr(float(g))


def parse_gammas(text) -> list[float]:
    """Gammas from ``"1.5,2,100"`` or a sequence; each finite and > 1 (Lemma 8)."""
    if isinstance(text, (list, tuple)):
        vals = list(text)
    else:
        vals = []
        for part in str(text).split(","):
            part = part.strip()
            if not part:
                continue
            try:
                vals.append(float(part))
            except ValueError:
                raise InputError(f"--gamma-sweep: {part!r} is not a number") from None
    if not vals:
        raise InputError("--gamma-sweep needs at least one gamma")
    for v in vals:
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not (math.isfinite(v) and v > 1):
            raise InputError(f"--gamma-sweep: every gamma must be finite and > 1 (Lemma 8), got {v}")
    return [float(v) for v in vals]


@dataclass
class AuditOptions(StudyOptions):
    """Options of one audit run (see ``boundcheck audit --help``): the shared
    :class:`empirical.options.StudyOptions` (``n_images`` 1 by default: the audit is
    per-neuron and slow) and the audit's own below.

    ``out``, ``device``, ``threads``, ``progress`` and ``n_images`` are not part of the
    run's configuration: a resume into the same ``out`` must repeat the others (a larger
    ``n_images`` extends a finished run).
    """

    out: str | None = None
    rules: tuple = DEFAULT_RULES
    gammas: tuple = DEFAULT_GAMMAS
    m_samples: int = 4
    augmentations: tuple = DEFAULT_AUGMENTATIONS
    n_images: int | None = field(default=1, kw_only=True)

    def config(self) -> dict:
        """The options that change the numbers (a resume must repeat them); unset overrides are left out."""
        d = asdict(self)
        for k in ("out", "device", "threads", "n_images", "progress", "low_memory"):
            d.pop(k)
        for k in ("num_classes", "input_size", "mean", "std", "image_files", "imagenet_val", "labels"):
            if d[k] is None:
                d.pop(k)
        if not self.allow_tf32:
            d.pop("allow_tf32")
        for k in ("images", "weights", "imagenet_val", "labels"):
            if d.get(k) is not None:
                d[k] = str(Path(d[k]).resolve())
        if d.get("image_files") is not None:
            d["image_files"] = [str(Path(f).resolve()) for f in d["image_files"]]
        d["rules"], d["gammas"], d["augmentations"] = list(self.rules), list(self.gammas), list(self.augmentations)
        d["format"] = 1
        return d


def validate(opts: AuditOptions) -> AuditOptions:
    """Check every option without loading anything; returns a normalised copy.

    Raises
    ------
    InputError
        One line naming the option.
    """
    rules = list(dict.fromkeys(opts.rules or ()))
    gammas = parse_gammas(opts.gammas)
    if not rules:
        raise InputError("at least one --rule is needed")
    for r in rules:
        rule = parse_rule(r)
        if rule.adaptive_beta_max is not None or not ({"beta", "gamma"} & set(rule.params)):
            raise InputError(f"--rule {r}: the audit needs an LRP-beta or LRP-gamma rule (Lemma 7/8)")
    m = opts.m_samples
    if isinstance(m, bool) or not isinstance(m, int) or m < 0 or m == 1:
        raise InputError(f"--m-samples must be 0 (skip) or an integer >= 2, got {m!r}")
    augs = list(dict.fromkeys(opts.augmentations or ()))
    bad = [a for a in augs if a not in DEFAULT_AUGMENTATIONS]
    if bad or not augs:
        raise InputError(f"--augmentation must be from {', '.join(DEFAULT_AUGMENTATIONS)}, got {augs!r}")
    spec = opts.check_shared()
    # what the run really uses: a user model without --weights is randomly initialised by its callable
    opts = replace(opts, random_weights=not spec.trained)
    from empirical.options import resolve_device

    device = resolve_device(opts.device) if opts.device == "auto" else opts.device
    return replace(opts, rules=tuple(rules), gammas=tuple(gammas), augmentations=tuple(augs), device=device)


# ----------------------------------------------------------------------------- one image
def audit_image(ex, lm, item, opts: AuditOptions, device, tdtype, want_hist: bool) -> tuple[dict, object]:
    """Measure one image; returns ``(record, histogram values or None)``.

    Raises :class:`empirical.data.UnreadableImage` when the file cannot be decoded.
    """
    import torch

    from empirical.audit import condition29 as c29
    from empirical.audit import ranges as rg
    from empirical.audit import relevance as rv
    from empirical.augment import augmented_samples
    from empirical.data import load_image

    rules, gammas = list(opts.rules), list(opts.gammas)
    x01 = lm.to_unit(load_image(item.path))
    if hasattr(lm, "model"):
        from empirical.models import check_finite_images

        check_finite_images(lm.model, lm.normalize(x01).unsqueeze(0), [item.id])
    x = lm.normalize(x01).unsqueeze(0).to(device=device, dtype=tdtype)
    att = ex.attribute(x, rules, record=True, reduce="none")
    target = int(att.target[0])
    rec: dict = {"id": item.id, "index": item.index, "target": target, "depth_tables": {}, "layer_tables": {},
                 "measured": {r: {} for r in rules}}
    for r in rules:
        recs = att.records[r]
        rec["n_engine"] = rv.network_depth(recs)
        rec["depth_tables"][r] = rv.depth_table(recs, r, 0, input_map=att.maps[r][0].double().cpu().numpy())
        rec["layer_tables"][r] = rv.layer_table(recs, r, 0)
    recs0 = att.records[rules[0]]
    rec["condition29_rows"] = c29.layer_rows(recs0, 0, gammas)
    rec["required_gamma"] = c29.network_required_gamma(rec["condition29_rows"])
    hist = c29.all_required_gammas_log10(recs0, 0) if want_hist else None
    del att
    if opts.m_samples:
        for aug in opts.augmentations:
            xs = augmented_samples(x01, lm.normalize, aug, opts.seed, item.id, 1, opts.m_samples)
            xs = xs.to(device=device, dtype=tdtype)
            a2 = ex.attribute(xs, rules, target=torch.full((xs.shape[0],), target, dtype=torch.long), reduce="none")
            for r in rules:
                rec["measured"][r][aug] = rg.measured_ranges(a2.maps[r].double().cpu().numpy())
            del a2
    return rec, hist


# ----------------------------------------------------------------------------- driver
def run_audit(opts: AuditOptions, model=None) -> dict:
    """Run (or resume) the audit and, with ``opts.out``, write the report.

    Parameters
    ----------
    opts : AuditOptions
    model : optional :class:`empirical.models.LoadedModel` (skips loading)

    Returns
    -------
    dict with every table, the summary, ``markdown``, ``skipped`` and ``paths`` (when written).

    Raises
    ------
    InputError
        Invalid options, unusable ``--out``, a folder holding another
        configuration, unknown model, missing weights or images, no readable image.
    """
    import numpy as np

    from empirical.audit.depth import torch_network_depth
    from empirical.data import UnreadableImage, list_images
    from empirical.engine import Explainer
    from empirical.io import ResumableStore, atomic_path, check_output_dir

    opts = validate(opts)
    out = check_output_dir(opts.out) if opts.out is not None else None
    t0 = time.perf_counter()
    from empirical.options import model_spec, resolve_device

    opts = replace(opts, device=resolve_device(opts.device))
    items, source = list_images(imagenet_val=opts.imagenet_val, labels=opts.labels, images=opts.images,
                                n=opts.n_images, image_files=list(opts.image_files) if opts.image_files else None)
    opts.apply_threads()
    if model is not None:
        lm = model
    else:
        lm = model_spec(opts).resolve()
    from empirical.data import check_labels

    check_labels(items, len(lm.categories), source)
    store = ResumableStore(out, opts.config()) if out is not None else None
    memory: list[dict] = []
    hist_path = out / HIST_FILE if out is not None else None
    hist = np.load(hist_path) if hist_path is not None and hist_path.is_file() else None
    done = store.done_keys() if store is not None else set()
    todo = [it for it in items if it.id not in done]
    engine = opts.engine_options()
    tdtype = engine["dtype"]
    ex = Explainer(lm.model, device=opts.device, **engine) if todo else None
    from empirical.runtime import progress_bar

    with progress_bar(opts.progress, total=len(todo), unit="img", desc=f"audit {opts.model}") as bar:
        for item in todo:
            try:
                rec, h = audit_image(ex, lm, item, opts, opts.device, tdtype, want_hist=hist is None)
            except UnreadableImage as exc:
                rec, h = {"id": item.id, "index": item.index, "skipped": exc.reason}, None
            if h is not None:
                hist = h
                if hist_path is not None:  # before the record: a stored first record implies its histogram
                    with atomic_path(hist_path) as tmp:
                        with open(tmp, "wb") as fh:
                            np.save(fh, h)
            if store is not None:
                store.append(rec)
            else:
                memory.append(rec)
            if bar is not None:
                bar.update(1)
    wanted = {it.id: it.index for it in items}
    stored = store.records() if store is not None else memory
    by_id = {r["id"]: r for r in stored if r["id"] in wanted}
    ordered = sorted(by_id.values(), key=lambda r: wanted[r["id"]])
    records = [r for r in ordered if "skipped" not in r]
    skipped = [{"id": r["id"], "error": r["skipped"]} for r in ordered if "skipped" in r]
    if not records:
        from empirical.data import no_readable_image

        raise no_readable_image(skipped)
    try:
        fx_depth, fx_err = torch_network_depth(lm.model), None
    except InputError as exc:  # pragma: no cover - depends on the model
        fx_depth, fx_err = None, str(exc)
    res = summarise(records, opts, fx_depth, hist)
    res["skipped"] = skipped
    if skipped:
        res["notes"].append(f"{len(skipped)} unreadable image(s) skipped: "
                            + "; ".join(f"{s['id']} ({s['error']})" for s in skipped[:5]))
    if fx_err:
        res["notes"].append(f"torch.fx depth unavailable: {fx_err}")
    res["wall_s"] = time.perf_counter() - t0
    if out is not None:
        from empirical.audit.report import write_report

        w = write_report(res, out)
        res["paths"], res["markdown"] = w["paths"], w["markdown"]
    else:
        from empirical.audit.report import markdown

        res["markdown"] = markdown(res)
    return res


# ----------------------------------------------------------------------------- summary
def summarise(records: list[dict], opts: AuditOptions, fx_depth, hist) -> dict:
    """The result dictionary (tables keyed by image id, in image order, and the summary) from the records."""
    import numpy as np

    from boundcheck.networks import NETWORK_DEPTHS
    from empirical.audit import condition29 as c29
    from empirical.audit import ranges as rg
    from empirical.audit import relevance as rv

    rules, gammas = list(opts.rules), list(opts.gammas)
    gkeys = [gamma_key(g) for g in gammas]
    depth_tables = {r: {rec["id"]: rec["depth_tables"][r] for rec in records} for r in rules}
    layer_tables = {r: {rec["id"]: rec["layer_tables"][r] for rec in records} for r in rules}
    c29_rows = {rec["id"]: rec["condition29_rows"] for rec in records}
    req_gamma = {rec["id"]: rec["required_gamma"] for rec in records}
    n_engine = records[-1]["n_engine"]
    measured: dict = {r: {} for r in rules}
    for rec in records:  # the largest measured range over the images, per rule and augmentation
        for r in rules:
            for aug, m in rec["measured"].get(r, {}).items():
                prev = measured[r].get(aug)
                if prev is None or m["range"] > prev["range"]:
                    measured[r][aug] = m
    n = n_engine
    range_rows = []
    for r in rules:
        if measured[r]:
            range_rows += rg.range_rows(r, n, measured[r])
    first = records[0]["id"]
    summary: dict = {"depth": [], "conservation": {}, "exceedances": []}
    all_cov = {}
    for g in gammas:
        covs = [c29.coverage(c29_rows[i], [g])[gamma_key(g)] for i in c29_rows]
        all_cov[gamma_key(g)] = {
            "gamma": g, "covered": all(c["covered"] for c in covs),
            "violating_layers": max(c["violating_layers"] for c in covs), "layers": covs[0]["layers"],
            "violating_neurons": sum(c["violating_neurons"] for c in covs),
            "violating_fraction": float(np.mean([c["violating_fraction"] for c in covs])),
            "worst_layer": covs[0]["worst_layer"],
        }
    for r in rules:
        summary["depth"].append(_depth_summary(r, depth_tables[r], first, req_gamma, summary["exceedances"]))
        summary["conservation"][r] = rv.conservation_summary(layer_tables[r][first])
    if len(summary["exceedances"]) > 20:
        k = len(summary["exceedances"])
        summary["exceedances"] = summary["exceedances"][:20] + [f"... {k - 20} more in depth_sums.csv"]
    # zero denominators over all rule ops (first image, pos/neg shared)
    tot = {"frac_no_neg": 0.0, "frac_no_pos": 0.0, "frac_empty": 0.0}
    nn_ = 0
    for row in c29_rows[first]:
        lrow = next(lr for lr in layer_tables[rules[0]][first] if lr["node"] == row["node"])
        for k in tot:
            tot[k] += (lrow[k] or 0.0) * row["neurons"]
        nn_ += row["neurons"]
    summary["zero_denominators"] = {k: v / nn_ for k, v in tot.items()} if nn_ else None
    crow = c29_rows[first]
    arg = max(crow, key=lambda r: r["required_gamma"]) if crow else None
    inp = c29.input_layer_row(crow)
    summary["condition29"] = {
        "required_gamma": req_gamma, "coverage": all_cov,
        "argmax_layer": arg["node"] if arg else None, "argmax_t": arg["t"] if arg else None,
        "input_layer_gamma": inp["required_gamma"] if inp else None,
        "median_layer_gamma": c29.gamma_of_layer_at_quantile(crow, 0.5),
    }
    nd = NETWORK_DEPTHS.get(opts.model)
    depth = {
        "n": n, "n_engine": n_engine, "n_fx": fx_depth.n if fx_depth else None,
        "counts": fx_depth.counts if fx_depth else None,
        "conv_linear_only": fx_depth.conv_linear_only if fx_depth else None,
        "network_depths": nd,
    }
    notes: list[str] = []
    if fx_depth and fx_depth.n != n_engine:
        notes.append(f"torch.fx depth {fx_depth.n} differs from the engine's {n_engine}: the audit uses the engine's.")
    if nd is not None and nd != n:
        notes.append(f"NETWORK_DEPTHS[{opts.model!r}] = {nd} counts convolutions/linears only; with the "
                     f"engine's rule applied at residual joins and average pools the longest path has n = {n} rule ops "
                     f"(DAG theorem, depth.py); the bounds here use n = {n}.")
    return {
        "model": opts.model, "pretrained": bool(opts.pretrained), "images": [rec["id"] for rec in records],
        "rules": rules, "gammas": gammas,
        "gammas_shown": [k for k in gkeys if k in ("2", "10", "100", "1000", "10000", "1000000")] or gkeys,
        "dtype": opts.dtype, "device": opts.device, "m_samples": opts.m_samples,
        "augmentations": list(opts.augmentations), "seed": opts.seed, "delta": rg.DELTA, "depth": depth,
        "depth_tables": depth_tables, "layer_tables": layer_tables, "condition29_rows": c29_rows,
        "required_gamma_log10": hist, "range_rows": range_rows, "summary": summary, "notes": notes,
    }


def _depth_summary(r: str, per_image: dict, first: str, req_gamma: dict, exceedances: list) -> dict:
    from empirical.audit import relevance as rv

    rule = parse_rule(r)
    covered = True
    if "gamma" in rule.params:
        covered = all(req_gamma[i] < rule.params["gamma"] for i in req_gamma)
    best = {"paper": (None, None), "exact": (None, None)}
    for i, rows in per_image.items():
        for bound in ("paper", "exact"):
            v, t = rv.max_ratio(rows, bound)
            if v is not None and (best[bound][0] is None or v > best[bound][0]):
                best[bound] = (v, t)
            for row in rows:
                if row.get(f"exceeds_{bound}"):
                    tag = "" if covered else " (Lemma 8 not applicable: (29) violated)"
                    exceedances.append(
                        f"{r} image {i} t={row['t']} {bound}: P ratio {row[f'ratio_pos_{bound}']:.3g}, "
                        f"N ratio {row[f'ratio_neg_{bound}']:.3g}{tag}")
    last = per_image[first][-1]
    orders = {}
    for bound in ("paper", "exact"):
        # log10(bound / measured) at t = n (input map), and the smallest over t >= 2
        vals = []
        for row in per_image[first]:
            lp, mp = row.get(f"{bound}_pos_log10"), max(row["measured_pos"], row.get("input_pos") or 0.0)
            if lp is not None and mp > 0:
                vals.append((row["t"], lp - math.log10(mp)))
        orders[f"orders_n_{bound}"] = vals[-1][1] if vals else None
        later = [v for t_, v in vals if t_ >= 2]
        orders[f"orders_min_{bound}"] = min(later) if later else None
    return {**orders,
            "rule": r, "max_ratio_paper": best["paper"][0], "t_paper": best["paper"][1],
            "max_ratio_exact": best["exact"][0], "t_exact": best["exact"][1],
            "input_pos": last.get("input_pos"), "input_neg": last.get("input_neg"),
            "exact_pos_log10_n": last.get("exact_pos_log10"), "exact_neg_log10_n": last.get("exact_neg_log10"),
            "covered": "yes (Lemma 7)" if "beta" in rule.params else ("yes" if covered else "no: (29) violated")}
