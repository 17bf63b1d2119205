"""Tables (CSV + JSON), plots (PNG, matplotlib Agg) and ``report.md`` of an audit.

:func:`write_report` takes the result dictionary of :func:`empirical.audit.run.run_audit`
and writes into ``out_dir``:

* ``depth_sums.csv`` -- per image, rule and depth: measured ``P_t``/``N_t`` and the
  Lemma 7/8 bounds (paper, exact), ratios;
* ``layers.csv`` -- per image, rule and node: relevance in/out, defect, zero-denominator fractions;
* ``conservation.csv`` -- defect per kind;
* ``condition29.csv`` -- per image and rule op: neurons, applicable, required gamma, violation fractions;
* ``ranges.csv`` -- value ranges and required ``m``, theory versus measured;
* ``audit.json`` -- everything above plus the summary;
* ``depth_sums_<rule>.png``, ``condition29_violations.png``, ``required_gamma_hist.png``;
* ``report.md`` -- the Markdown summary (also returned).
"""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path

import numpy as np

from empirical.io import atomic_path, atomic_write_json, atomic_write_text
from empirical.models import weights_label


def _write_csv(path: Path, rows: list[dict]) -> None:
    if not rows:
        atomic_write_text(path, "")
        return
    keys: list[str] = []
    for r in rows:
        for k in r:
            if k not in keys:
                keys.append(k)
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=keys, lineterminator="\r\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: r.get(k) for k in keys})
    atomic_write_text(path, buf.getvalue())


def _savefig(fig, path: Path) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")


def _fmt(x, digits: int = 3) -> str:
    if x is None:
        return "-"
    if isinstance(x, bool):
        return "yes" if x else "no"
    if isinstance(x, (int, np.integer)):
        return str(int(x))
    x = float(x)
    if not math.isfinite(x):
        return str(x)
    if x == 0:
        return "0"
    if abs(x) >= 1e4 or abs(x) < 1e-3:
        return f"{x:.{digits - 1}e}"
    return f"{x:.{digits}g}"


def _e(log10_value) -> str:
    """``10^x`` formatted from a log10 value."""
    if log10_value is None:
        return "-"
    if not math.isfinite(log10_value):
        return "0" if log10_value < 0 else "inf"
    if abs(log10_value) < 4:
        return _fmt(10 ** log10_value)
    e = math.floor(log10_value)
    return f"{10 ** (log10_value - e):.2f}e{e:+d}"


# --------------------------------------------------------------------------- plots


def _plots(res: dict, out: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    files = []
    for rule, per_img in res["depth_tables"].items():
        fig, ax = plt.subplots(figsize=(7, 4.2))
        first = True
        for img_id, rows in per_img.items():
            t = [r["t"] for r in rows]
            P = [r["measured_pos"] if r["measured_pos"] > 0 else np.nan for r in rows]
            N = [r["measured_neg"] if r["measured_neg"] > 0 else np.nan for r in rows]
            ax.semilogy(t, P, "o-", ms=2, lw=0.8, color="tab:blue", alpha=0.7, label="measured P_t" if first else None)
            ax.semilogy(t, N, "o-", ms=2, lw=0.8, color="tab:red", alpha=0.7, label="measured N_t" if first else None)
            first = False
        rows = next(iter(per_img.values()))
        t = [r["t"] for r in rows]
        for bound, ls in (("paper", "--"), ("exact", ":")):
            lp = [r[f"{bound}_pos_log10"] for r in rows]
            ln = [r[f"{bound}_neg_log10"] for r in rows]
            if lp[0] is None:
                continue
            ax.semilogy(t, [10 ** v for v in lp], ls, color="tab:blue", lw=1.2, label=f"{bound} bound P")
            if any(v is not None and math.isfinite(v) for v in ln):
                ax.semilogy(t, [10 ** v if v is not None and math.isfinite(v) else np.nan for v in ln], ls,
                            color="tab:red", lw=1.2, label=f"{bound} bound N")
        ax.set_xlabel("depth t (rule ops from the output, longest path)")
        ax.set_ylabel("sum of relevance (log)")
        ax.set_title(f"{res['model']}: {rule}")
        ax.legend(fontsize=7)
        fig.tight_layout()
        f = out / f"depth_sums_{rule}.png"
        _savefig(fig, f)
        plt.close(fig)
        files.append(f.name)
    # condition (29) violation rate per layer
    c29 = res["condition29_rows"]
    if c29:
        img_id = next(iter(c29))
        rows = sorted(c29[img_id], key=lambda r: -r["t"])
        fig, ax = plt.subplots(figsize=(8, 4.2))
        x = np.arange(len(rows))
        for g in res["gammas_shown"]:
            key = f"viol_frac_{g}"
            ax.plot(x, [r[key] for r in rows], ".-", lw=0.8, ms=3, label=f"gamma={g}")
        ax.set_xticks(x[:: max(1, len(x) // 20)])
        ax.set_xticklabels([rows[i]["t"] for i in x[:: max(1, len(x) // 20)]], fontsize=7)
        ax.set_xlabel("layer (depth t, input on the left)")
        ax.set_ylabel("fraction of applicable neurons violating (29)")
        ax.set_title(f"{res['model']}: condition (29), image {img_id}")
        ax.legend(fontsize=7)
        fig.tight_layout()
        f = out / "condition29_violations.png"
        _savefig(fig, f)
        plt.close(fig)
        files.append(f.name)
    hist = res.get("required_gamma_log10")
    if hist is not None and len(hist):
        v = np.asarray(hist)
        v = v[np.isfinite(v)]
        fig, ax = plt.subplots(figsize=(7, 4))
        ax.hist(v, bins=100, color="gray")
        ax.set_yscale("log")
        for g, c in ((100, "tab:orange"), (1000, "tab:red")):
            ax.axvline(math.log10(g), color=c, ls="--", label=f"gamma={g}")
        ax.set_xlabel("log10 of the required gamma (|N_a|/P_a)^2 per neuron")
        ax.set_ylabel("neurons")
        ax.set_title(f"{res['model']}: required gamma per neuron (all layers)")
        ax.legend(fontsize=7)
        fig.tight_layout()
        f = out / "required_gamma_hist.png"
        _savefig(fig, f)
        plt.close(fig)
        files.append(f.name)
    return files


# --------------------------------------------------------------------------- markdown


def markdown(res: dict) -> str:
    L = []
    L.append(f"# Audit of Lemma 7/8 on {res['model']} ({weights_label(bool(res['pretrained']))})\n")
    L.append(f"Images: {', '.join(res['images'])}; rules: {', '.join(res['rules'])}; "
             f"conventions: bias-free backward, 0/0 := 0, no stabiliser; dtype {res['dtype']}.\n")
    d = res["depth"]
    L.append("## Depth\n")
    L.append(f"Longest relevance path (rule ops: conv, linear, residual join, average pool, attention sum; "
             f"DAG theorem of `empirical/audit/depth.py`): **n = {d['n']}** (engine records: {d['n_engine']}; "
             f"torch.fx: {d['n_fx']}; on the path: {d['counts']}). Counting convolutions/linears only: "
             f"{d['conv_linear_only']}; `NETWORK_DEPTHS`: {d['network_depths']}.\n")
    L.append("## Per-depth relevance sums versus Lemma 7/8\n")
    L.append("Measured `P_t` (`N_t`) = sum of positive (|negative|) input relevance over the rule ops at depth t; "
             "ratio = measured/bound, maximum over depths (and images). A ratio > 1 is a violation.\n")
    L.append("| rule | max ratio paper (t) | max ratio exact (t) | P_n / N_n measured (input map) | exact bound P_n / N_n | orders log10(bound/measured P) at t=n paper / exact | smallest orders over t>=2 paper / exact | covered by lemma |")
    L.append("|---|---|---|---|---|---|---|---|")
    for s in res["summary"]["depth"]:
        L.append(f"| {s['rule']} | {_fmt(s['max_ratio_paper'])} ({s['t_paper']}) | {_fmt(s['max_ratio_exact'])} ({s['t_exact']}) | "
                 f"{_fmt(s['input_pos'])} / {_fmt(s['input_neg'])} | {_e(s['exact_pos_log10_n'])} / {_e(s['exact_neg_log10_n'])} | "
                 f"{_fmt(s.get('orders_n_paper'))} / {_fmt(s.get('orders_n_exact'))} | {_fmt(s.get('orders_min_paper'))} / {_fmt(s.get('orders_min_exact'))} | {s['covered']} |")
    L.append("")
    ex = res["summary"].get("exceedances", [])
    if ex:
        L.append("**Exceedances (measured > bound):** " + "; ".join(ex) + "\n")
    else:
        L.append("No measured per-depth sum exceeds a bound that applies (Lemma 7 for LRP-beta; Lemma 8 only where (29) holds).\n")
    L.append("## Relevance conservation per layer\n")
    L.append("Defect = sum(R_in) - sum(R_out) per node (> 0 created, < 0 lost), summed per kind; first image.\n")
    L.append("| rule | kind | nodes | non-conserving | created | lost | max |rel. defect| |")
    L.append("|---|---|---|---|---|---|---|")
    for rule, rows in res["summary"]["conservation"].items():
        for r in rows:
            L.append(f"| {rule} | {r['kind']} | {r['nodes']} | {r['nonconserving']} | {_fmt(r['created'])} | {_fmt(r['lost'])} | {_fmt(r['max_abs_rel_defect'])} |")
    L.append("")
    zd = res["summary"].get("zero_denominators")
    if zd:
        L.append(f"Zero denominators (0/0 := 0), fraction of output neurons over all rule ops, first image: "
                 f"no negative part {_fmt(zd['frac_no_neg'])} (LRP-beta column sums to 1+beta: relevance created), "
                 f"no positive part {_fmt(zd['frac_no_pos'])} (column sums to -beta), "
                 f"neither {_fmt(zd['frac_empty'])} (relevance dropped).\n")
    L.append("## Condition (29)\n")
    c = res["summary"]["condition29"]
    L.append("Required gamma per image (max over all neurons of all rule ops of (|N_a|/P_a)^2, and > 1): "
             + ", ".join(f"{k}: {_fmt(v)}" for k, v in c["required_gamma"].items()) + ".\n")
    L.append(f"Layer that sets it (first image): {c['argmax_layer']} (t = {c['argmax_t']}); input layer requires "
             f"{_fmt(c['input_layer_gamma'])}; median layer requires {_fmt(c['median_layer_gamma'])}.\n")
    L.append("| gamma | covered (all images) | violating layers | violating neurons (fraction of applicable) | worst layer |")
    L.append("|---|---|---|---|---|")
    for g, v in c["coverage"].items():
        L.append(f"| {g} | {v['covered']} | {v['violating_layers']}/{v['layers']} | {v['violating_neurons']} ({_fmt(v['violating_fraction'])}) | {v['worst_layer']} |")
    L.append("")
    paper = [g for g in ("100", "1000") if g in c["coverage"]]
    cov = [g for g in paper if c["coverage"][g]["covered"]]
    L.append(f"Paper settings covered by Lemma 8 on these images: {', '.join(cov) if cov else 'none'}.\n")
    L.append("## Hoeffding value range and sample size\n")
    L.append(f"delta = {res['delta']}; t absolute = 0.01 and relative = 1% of the map range; measured range = max over "
             f"components of (max - min over K = {res['m_samples']} augmented samples); `log10 m` from eq. (24).\n")
    L.append("| rule | aug | range paper | range exact | measured | orders (exact/measured) | log10 m paper / exact / measured (t=0.01) | log10 m (t=1% map range) paper / exact / measured |")
    L.append("|---|---|---|---|---|---|---|---|")
    for r in res["range_rows"]:
        L.append(f"| {r['rule']} | {r['augmentation']} | {_e(r['paper_range_log10'])} | {_e(r['exact_range_log10'])} | {_fmt(r['measured_range'])} | "
                 f"{_fmt(r['orders_exact'])} | {_fmt(r['m_abs_log10_paper'])} / {_fmt(r['m_abs_log10_exact'])} / {_fmt(r['m_abs_log10_measured'])} | "
                 f"{_fmt(r['m_rel_log10_paper'])} / {_fmt(r['m_rel_log10_exact'])} / {_fmt(r['m_rel_log10_measured'])} |")
    L.append("")
    if res.get("notes"):
        L.append("## Notes\n")
        for n in res["notes"]:
            L.append(f"* {n}")
        L.append("")
    L.append(f"Wall time: {res['wall_s']:.1f} s. Files: {', '.join(res.get('files', []))}.\n")
    return "\n".join(L)


def write_report(res: dict, out_dir) -> dict:
    """Write every table, plot and ``report.md``; return ``{"paths": {...}, "markdown": str}``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {}
    depth_rows = [dict(r, image=i) for rule, per in res["depth_tables"].items() for i, rows in per.items() for r in rows]
    layer_rows = [dict(r, image=i) for rule, per in res["layer_tables"].items() for i, rows in per.items() for r in rows]
    cons_rows = [dict(r, rule=rule) for rule, rows in res["summary"]["conservation"].items() for r in rows]
    c29_rows = [dict(r, image=i) for i, rows in res["condition29_rows"].items() for r in rows]
    for name, rows in (("depth_sums.csv", depth_rows), ("layers.csv", layer_rows), ("conservation.csv", cons_rows),
                       ("condition29.csv", c29_rows), ("ranges.csv", res["range_rows"])):
        _write_csv(out / name, rows)
        paths[name] = str(out / name)
    files = _plots(res, out)
    for f in files:
        paths[f] = str(out / f)
    res = dict(res, files=sorted(paths))
    md = markdown(res)
    atomic_write_text(out / "report.md", md)
    paths["report.md"] = str(out / "report.md")
    slim = {k: v for k, v in res.items() if k not in ("required_gamma_log10",)}
    atomic_write_json(out / "audit.json", slim, indent=1, sort_keys=False)
    paths["audit.json"] = str(out / "audit.json")
    return {"paths": paths, "markdown": md}
