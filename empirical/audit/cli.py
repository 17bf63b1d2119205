"""``boundcheck audit``: measured per-layer relevance against Lemma 7/8 and condition (29).

Usage::

    boundcheck audit [--model efficientnet-lite0] [--weights FILE] [--pretrained | --random-init]
                     [--images DIR] [--n-images 1] [--rule lrp_beta_0 --rule lrp_beta_1 ...]
                     [--gamma-sweep 1.5,2,4,10,100,1e3,1e4,1e6] [--m-samples 4]
                     [--augmentation gaussian --augmentation photometric] [--seed 0]
                     [--device cpu|cuda] [--dtype float32|float64] --out DIR

Default: EfficientNet-Lite0 with its shipped weights on the first foolbox photo.
Random-initialised torchvision models (``--model resnet50 --random-init``) are
legitimate for the LRP-beta bounds (they claim independence of the weights).

:func:`audit` runs everything and returns the result dictionary;
:func:`run_embedded_default` is the entry point of the main job.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

from boundcheck.errors import InputError
from boundcheck.rules import parse_rule

DEFAULT_RULES: tuple[str, ...] = ("lrp_beta_0", "lrp_beta_1", "lrp_gamma_100", "lrp_gamma_1000")
DEFAULT_GAMMAS: tuple[float, ...] = (1.5, 2.0, 4.0, 10.0, 100.0, 1e3, 1e4, 1e6)
DEFAULT_AUGMENTATIONS: tuple[str, ...] = ("gaussian", "photometric")


def add_arguments(parser, name: str = "audit") -> None:
    parser.add_argument("--model", default="efficientnet-lite0",
                        help="efficientnet-lite0 (default), resnet50, efficientnet_v2_s, swin_v2_t")
    parser.add_argument("--weights", default=None, help="state_dict file (default: shipped / hub cache)")
    g = parser.add_mutually_exclusive_group()
    g.add_argument("--pretrained", dest="pretrained", action="store_true", default=True)
    g.add_argument("--random-init", dest="pretrained", action="store_false")
    parser.add_argument("--images", default=None, help="folder of images (default: foolbox's ImageNet photos)")
    parser.add_argument("--n-images", type=int, default=1)
    parser.add_argument("--rule", action="append", default=None, help=f"LRP rule, repeatable (default {', '.join(DEFAULT_RULES)})")
    parser.add_argument("--gamma-sweep", default=",".join(_g(g) for g in DEFAULT_GAMMAS),
                        help="comma-separated gammas for condition (29)")
    parser.add_argument("--m-samples", type=int, default=4, help="augmented samples per augmentation (0: skip ranges)")
    parser.add_argument("--augmentation", action="append", default=None, choices=list(DEFAULT_AUGMENTATIONS))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--out", required=True, help="output folder")


def _g(g: float) -> str:
    return str(int(g)) if float(g).is_integer() else repr(float(g))


def _parse_gammas(text) -> list[float]:
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
        if not (math.isfinite(v) and v > 1):
            raise InputError(f"--gamma-sweep: every gamma must be finite and > 1 (Lemma 8), got {v}")
    return vals


def run(args) -> int:
    rules = args.rule or list(DEFAULT_RULES)
    res = audit(
        model_name=args.model, weights=args.weights, pretrained=args.pretrained, images=args.images,
        n_images=args.n_images, rules=rules, gammas=_parse_gammas(args.gamma_sweep), m_samples=args.m_samples,
        augmentations=args.augmentation or list(DEFAULT_AUGMENTATIONS), seed=args.seed, device=args.device,
        dtype=args.dtype, threads=args.threads, out_dir=args.out,
    )
    print(res["markdown"])
    print(f"written to {args.out}")
    return 0


def _validate(model_name, rules, n_images, m_samples, device, dtype):
    from empirical.models import MODEL_NAMES

    if model_name not in MODEL_NAMES:
        raise InputError(f"unknown model {model_name!r}; choose one of {', '.join(MODEL_NAMES)}")
    if not rules:
        raise InputError("at least one --rule is needed")
    for r in rules:
        rule = parse_rule(r)
        if rule.adaptive_beta_max is not None or not ({"beta", "gamma"} & set(rule.params)):
            raise InputError(f"--rule {r}: the audit needs an LRP-beta or LRP-gamma rule (Lemma 7/8)")
    if isinstance(n_images, bool) or not isinstance(n_images, int) or n_images < 1:
        raise InputError(f"--n-images must be an integer >= 1, got {n_images!r}")
    if isinstance(m_samples, bool) or not isinstance(m_samples, int) or m_samples < 0 or m_samples == 1:
        raise InputError(f"--m-samples must be 0 (skip) or an integer >= 2, got {m_samples!r}")
    if device not in ("cpu", "cuda"):
        raise InputError(f"--device must be cpu or cuda, got {device!r}")
    if dtype not in ("float32", "float64"):
        raise InputError(f"--dtype must be float32 or float64, got {dtype!r}")


def audit(model_name: str = "efficientnet-lite0", weights=None, pretrained: bool = True, images=None,
          n_images: int = 1, rules=DEFAULT_RULES, gammas=DEFAULT_GAMMAS, m_samples: int = 4,
          augmentations=DEFAULT_AUGMENTATIONS, seed: int = 0, device: str = "cpu", dtype: str = "float32",
          threads: int | None = 2, out_dir=None, model=None) -> dict:
    """Run the audit and (with ``out_dir``) write the report.

    Parameters
    ----------
    model_name, weights, pretrained : see :func:`empirical.models.load_model`
    images : folder, or None for foolbox's photos
    n_images : int >= 1
    rules : LRP-beta / LRP-gamma rule names
    gammas : gammas (> 1) for the condition-(29) sweep
    m_samples : augmented samples per augmentation for the measured ranges (0 skips)
    model : optional :class:`empirical.models.LoadedModel` (skips loading)

    Returns
    -------
    dict with every table, the summary, ``markdown`` and ``paths`` (when written).

    Raises
    ------
    InputError
        On invalid arguments, unknown model, missing weights or images.
    """
    rules = list(dict.fromkeys(rules))
    gammas = _parse_gammas(gammas)
    _validate(model_name, rules, n_images, m_samples, device, dtype)
    if out_dir is not None:
        out_dir = Path(out_dir)
        if out_dir.exists() and not out_dir.is_dir():
            raise InputError(f"--out {out_dir} exists and is not a folder")
    import numpy as np
    import torch

    from boundcheck.networks import NETWORK_DEPTHS
    from empirical.audit import condition29 as c29
    from empirical.audit import ranges as rg
    from empirical.audit import relevance as rv
    from empirical.audit.depth import torch_network_depth
    from empirical.augment import augmented_samples
    from empirical.data import foolbox_photos, load_image, plain_folder
    from empirical.engine import Explainer
    from empirical.models import load_model

    t0 = time.perf_counter()
    if threads:
        torch.set_num_threads(int(threads))
    if device == "cuda" and not torch.cuda.is_available():
        raise InputError("--device cuda requested but CUDA is not available")
    items = plain_folder(images, n_images) if images is not None else foolbox_photos(n_images)
    lm = model if model is not None else load_model(model_name, weights=weights, pretrained=pretrained)
    tdtype = torch.float64 if dtype == "float64" else torch.float32
    ex = Explainer(lm.model, dtype=tdtype, device=device)
    try:
        fx_depth = torch_network_depth(lm.model)
    except InputError as exc:  # pragma: no cover - depends on the model
        fx_depth = None
        fx_err = str(exc)
    gkeys = [_g(g) for g in gammas]

    depth_tables: dict = {r: {} for r in rules}
    layer_tables: dict = {r: {} for r in rules}
    c29_rows: dict = {}
    req_gamma: dict = {}
    hist = None
    measured: dict = {r: {} for r in rules}
    notes: list[str] = []
    n_engine = None
    for item in items:
        img = load_image(item.path)
        x01 = lm.to_unit(img)
        x = lm.normalize(x01).unsqueeze(0).to(device=device, dtype=tdtype)
        att = ex.attribute(x, rules, record=True, reduce="none")
        target = int(att.target[0])
        for r in rules:
            recs = att.records[r]
            n_engine = rv.network_depth(recs)
            depth_tables[r][item.id] = rv.depth_table(recs, r, 0, input_map=att.maps[r][0].double().cpu().numpy())
            layer_tables[r][item.id] = rv.layer_table(recs, r, 0)
        recs0 = att.records[rules[0]]
        c29_rows[item.id] = c29.layer_rows(recs0, 0, gammas)
        req_gamma[item.id] = c29.network_required_gamma(c29_rows[item.id])
        if hist is None:
            hist = c29.all_required_gammas_log10(recs0, 0)
        del att
        if m_samples:
            for aug in augmentations:
                xs = augmented_samples(x01, lm.normalize, aug, seed, item.id, 1, m_samples).to(device=device, dtype=tdtype)
                a2 = ex.attribute(xs, rules, target=torch.full((xs.shape[0],), target, dtype=torch.long), reduce="none")
                for r in rules:
                    m = rg.measured_ranges(a2.maps[r].double().cpu().numpy())
                    prev = measured[r].get(aug)
                    if prev is None or m["range"] > prev["range"]:
                        measured[r][aug] = m
                del a2
    n = n_engine
    range_rows = []
    for r in rules:
        if measured[r]:
            range_rows += rg.range_rows(r, n, measured[r])
    # ---- summary
    first = items[0].id
    summary: dict = {"depth": [], "conservation": {}, "exceedances": []}
    all_cov = {}
    for g in gammas:
        covs = [c29.coverage(c29_rows[i], [g])[_g(g)] for i in c29_rows]
        all_cov[_g(g)] = {
            "gamma": g, "covered": all(c["covered"] for c in covs),
            "violating_layers": max(c["violating_layers"] for c in covs), "layers": covs[0]["layers"],
            "violating_neurons": sum(c["violating_neurons"] for c in covs),
            "violating_fraction": float(np.mean([c["violating_fraction"] for c in covs])),
            "worst_layer": covs[0]["worst_layer"],
        }
    for r in rules:
        rule = parse_rule(r)
        covered = True
        if "gamma" in rule.params:
            gk = _g(rule.params["gamma"])
            covered = all(req_gamma[i] < rule.params["gamma"] for i in req_gamma)
        best = {"paper": (None, None), "exact": (None, None)}
        for i, rows in depth_tables[r].items():
            for bound in ("paper", "exact"):
                v, t = rv.max_ratio(rows, bound)
                if v is not None and (best[bound][0] is None or v > best[bound][0]):
                    best[bound] = (v, t)
                for row in rows:
                    if row.get(f"exceeds_{bound}"):
                        tag = "" if covered else " (Lemma 8 not applicable: (29) violated)"
                        summary["exceedances"].append(
                            f"{r} image {i} t={row['t']} {bound}: P ratio {row[f'ratio_pos_{bound}']:.3g}, "
                            f"N ratio {row[f'ratio_neg_{bound}']:.3g}{tag}")
        last = depth_tables[r][first][-1]
        orders = {}
        for bound in ("paper", "exact"):
            # log10(bound / measured) at t = n (input map), and the smallest over t >= 2
            vals = []
            for row in depth_tables[r][first]:
                lp, mp = row.get(f"{bound}_pos_log10"), max(row["measured_pos"], row.get("input_pos") or 0.0)
                if lp is not None and mp > 0:
                    vals.append((row["t"], lp - math.log10(mp)))
            orders[f"orders_n_{bound}"] = vals[-1][1] if vals else None
            later = [v for t_, v in vals if t_ >= 2]
            orders[f"orders_min_{bound}"] = min(later) if later else None
        summary["depth"].append({**orders,
            "rule": r, "max_ratio_paper": best["paper"][0], "t_paper": best["paper"][1],
            "max_ratio_exact": best["exact"][0], "t_exact": best["exact"][1],
            "input_pos": last.get("input_pos"), "input_neg": last.get("input_neg"),
            "exact_pos_log10_n": last.get("exact_pos_log10"), "exact_neg_log10_n": last.get("exact_neg_log10"),
            "covered": "yes (Lemma 7)" if "beta" in rule.params else ("yes" if covered else "no: (29) violated"),
        })
        summary["conservation"][r] = rv.conservation_summary(layer_tables[r][first])
    # dedupe exceedance lists (keep at most 20 lines)
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
    from boundcheck.networks import NETWORK_DEPTHS as ND

    depth = {
        "n": n, "n_engine": n_engine, "n_fx": fx_depth.n if fx_depth else None,
        "counts": fx_depth.counts if fx_depth else None,
        "conv_linear_only": fx_depth.conv_linear_only if fx_depth else None,
        "network_depths": ND.get(model_name),
    }
    if fx_depth and fx_depth.n != n_engine:
        notes.append(f"torch.fx depth {fx_depth.n} differs from the engine's {n_engine}: the audit uses the engine's.")
    if ND.get(model_name) is not None and ND[model_name] != n:
        notes.append(f"NETWORK_DEPTHS[{model_name!r}] = {ND[model_name]} counts convolutions/linears only; with the "
                     f"engine's rule applied at residual joins and average pools the longest path has n = {n} rule ops "
                     f"(DAG theorem, depth.py); the bounds here use n = {n}.")
    wall = time.perf_counter() - t0
    res = {
        "model": model_name, "pretrained": bool(pretrained), "images": [it.id for it in items], "rules": rules,
        "gammas": gammas, "gammas_shown": [k for k in gkeys if k in ("2", "10", "100", "1000", "10000", "1000000")] or gkeys,
        "dtype": dtype, "device": device, "m_samples": m_samples, "augmentations": list(augmentations), "seed": seed,
        "delta": rg.DELTA, "depth": depth, "depth_tables": depth_tables, "layer_tables": layer_tables,
        "condition29_rows": c29_rows, "required_gamma_log10": hist, "range_rows": range_rows,
        "summary": summary, "notes": notes, "wall_s": wall,
    }
    if out_dir is not None:
        from empirical.audit.report import write_report

        w = write_report(res, out_dir)
        res["paths"], res["markdown"] = w["paths"], w["markdown"]
    else:
        from empirical.audit.report import markdown

        res["markdown"] = markdown(res)
    return res


def run_embedded_default(out_dir, n_images: int = 1, m_samples: int = 4, device: str = "cpu", **kw) -> dict:
    """The embedded default for the main job: EfficientNet-Lite0 (shipped weights),
    the first foolbox photo, the four paper rules, the gamma sweep, K = 4 samples
    per augmentation.  Returns ``{"paths": {...}, "markdown": str, "wall_s": float}``."""
    res = audit(out_dir=out_dir, n_images=n_images, m_samples=m_samples, device=device, **kw)
    return {"paths": res.get("paths", {}), "markdown": res["markdown"], "wall_s": res["wall_s"],
            "summary": res["summary"], "depth": res["depth"]}
