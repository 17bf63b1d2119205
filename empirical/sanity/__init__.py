"""Sanity checks of [P2] (supplement A.1, D, E, H-J): model randomisation,
region-perturbation faithfulness and overtaking probabilities.

Modules: :mod:`.schedules` (top-down cascading randomisation schedules),
:mod:`.randomize` (re-initialising a deep copy), :mod:`.similarity` (SSIM,
Spearman, MSE, second-moment normalisation, Thm 4 bound), :mod:`.faithfulness`
(region perturbation with a blurred copy), :mod:`.overtaking` (Thm 2 / Sec. I
probabilities, Sec. J non-positive fractions), :mod:`.report` (resumable result
files, tables, figures), :mod:`.cli` (``boundcheck sanity ...``).

:func:`run_embedded_default` runs all three at a small size on
EfficientNet-Lite0 (shipped weights) and the foolbox photos, for the main job.
"""

from __future__ import annotations

import time
from pathlib import Path

#: the embedded default (small enough for the CPU): per check, the options
EMBEDDED = {
    "randomize": {"n_images": 1, "stride": 8},
    "faithfulness": {"n_images": 2, "region_size": 15},
    "overtaking": {"n_images": 4},
}


def run_embedded_default(out_dir, device: str = "cpu", progress: bool = False, **overrides) -> dict:
    """Run randomize, faithfulness and overtaking on EfficientNet-Lite0 at a small size.

    Parameters
    ----------
    out_dir : folder; each check writes into ``out_dir/<check>`` (resumable)
    device : "cpu" or "cuda"
    overrides : per-check option dicts, e.g. ``randomize={"n_images": 2}``

    Returns
    -------
    dict with ``"paths"`` ({check: paths}), ``"seconds"`` ({check: s, "total": s}),
    ``"results"`` ({check: summary table rows}) and ``"summary"`` (Markdown).
    """
    import torch

    from empirical.io import atomic_write_text, check_output_dir
    from empirical.sanity.run import SanityOptions, run_check

    check_output_dir(out_dir)

    if device == "cpu":
        torch.set_num_threads(min(torch.get_num_threads(), 2))
    out_dir = Path(out_dir)
    t0 = time.time()
    paths, seconds, results, parts = {}, {}, {}, []
    for check, kw in EMBEDDED.items():
        kw = {**kw, **overrides.get(check, {})}
        opts = SanityOptions(command=check, out=str(out_dir / check), device=device, progress=progress, **kw)
        res = run_check(opts)
        paths[check] = res["paths"]
        seconds[check] = res["seconds"]
        results[check] = res.get("table", [])
        parts.append(res["summary"])
    seconds["total"] = time.time() - t0
    summary = (
        "Embedded default of the [P2] sanity checks: EfficientNet-Lite0 (shipped ImageNet weights), foolbox photos "
        f"(first N), CPU; {seconds['total']:.0f} s in all. Full settings (ResNet-50 etc., `--imagenet-val`, "
        "`--n-images 1000`, `--device cuda`): `boundcheck sanity {randomize,faithfulness,overtaking} --help`.\n\n"
        + "\n".join(parts)
    )
    atomic_write_text(out_dir / "summary.md", summary)
    return {"paths": paths, "seconds": seconds, "results": results, "summary": summary}
