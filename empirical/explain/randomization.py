"""Per-step maps of the cascading model randomisation ([P2] A.1) for its montage.

``boundcheck sanity randomize`` keeps only the similarity numbers of each step.
:class:`MapRecorder` wraps its explainer factory and keeps the first image's
maps of the original model and of each explained step while the run computes
them (no extra attribution); :func:`sanity_montage` draws them with
:func:`empirical.plotting.randomization_montage` (rows = methods, columns =
the original model and each explained step).  :func:`cascade_maps` computes
the same maps for any one image from scratch (the cascade is deterministic:
module ``name`` is re-initialised from ``(seed, name)`` only,
:mod:`empirical.sanity.randomize`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np


def _short(marker: str, width: int = 16) -> str:
    """A module path broken at its dots into lines of at most ``width`` characters (column titles)."""
    lines, cur = [], ""
    for bit in str(marker).split("."):
        piece = bit if not cur else f".{bit}"
        if cur and len(cur) + len(piece) > width:
            lines.append(cur)
            cur = bit
        else:
            cur += piece
    lines.append(cur)
    return "\n".join(lines)


def cascade_maps(model, x, target: int, steps, methods, explainer_factory, seed: int = 0, evaluate=None,
                 base_explain=None) -> tuple[dict, dict]:
    """Maps of one image on the original model and after each explained cascade step.

    Parameters
    ----------
    model : the original model (not modified)
    x : (1, C, H, W) network input
    target : the class explained on every model
    steps, seed, evaluate : as in :func:`empirical.sanity.randomize.randomization_rows`
    explainer_factory : ``model -> explain(x, methods, target) -> {method: (B, H, W) array}``
    base_explain : the original model's ``explain`` if already built

    Returns
    -------
    ``({method: {"original": map, step index: map, ...}}, {key: column label})``
    """
    from empirical.sanity.randomize import cascade

    methods = list(methods)
    base = (base_explain or explainer_factory(model))(x, methods, [int(target)])
    maps = {m: {"original": np.asarray(base[m], dtype=np.float64)[0]} for m in methods}
    labels = {"original": "original"}
    for step, mk in cascade(model, steps, seed):
        if evaluate is not None and step.index not in evaluate:
            continue
        got = explainer_factory(mk)(x, methods, [int(target)])
        for m in methods:
            maps[m][step.index] = np.asarray(got[m], dtype=np.float64)[0]
        labels[step.index] = f"step {step.index}\n{_short(step.marker)}"
    return maps, labels


class MapRecorder:
    """An explainer factory that keeps the first image's maps of the first ``n_models`` models explained.

    Wraps the ``model -> explain(x, methods, target)`` factory of ``sanity randomize``
    (:func:`empirical.sanity.run.engine_factory`): the run builds the original model's
    explainer first and then one per explained cascade step, in order, so the first
    ``n_models`` calls are ``"original"`` and the explained steps of the first batch.  Only
    ``x[0]``'s maps are kept (memory: ``n_models x methods`` maps); the run's numbers are unchanged.
    """

    def __init__(self, factory, n_models: int):
        self.factory, self.n_models = factory, int(n_models)
        self.maps: list[dict] = []
        self.x0 = self.target0 = None

    @property
    def full(self) -> bool:
        return len(self.maps) >= self.n_models

    def __call__(self, model):
        explain = self.factory(model)
        seen = []

        def recorded(x, methods, target):
            out = explain(x, methods, target)
            if not seen and not self.full:
                seen.append(True)
                if self.x0 is None:
                    self.x0, self.target0 = x[0].detach().cpu(), int(list(target)[0])
                self.maps.append({m: np.asarray(out[m], dtype=np.float64)[0].copy() for m in methods})
            return out

        recorded.explainer = getattr(explain, "explainer", None)
        return recorded


def sanity_montage(ctx: dict, out) -> str | None:
    """Draw ``randomization_montage.png`` in ``out`` from ``ctx["recorder"]`` (a :class:`MapRecorder`).

    Columns: the original model and the explained steps (``ctx["evaluate"]``, labelled with the
    schedule's module markers); rows: the methods.  Returns the path, or None when the run
    explained no image in this process (a resumed, finished run).
    """
    from empirical.plotting import randomization_montage

    rec = ctx.get("recorder")
    if rec is None or not rec.full:
        return None
    lm, steps = ctx["lm"], ctx["schedule"]
    keys = ["original", *sorted(ctx["evaluate"])]
    labels = {k: "original" if k == "original" else f"step {k}\n{_short(steps[k].marker)}" for k in keys}
    maps = {m: {k: rec.maps[i][m] for i, k in enumerate(keys)} for m in rec.maps[0]}
    import torch

    mean = torch.as_tensor(lm.mean, dtype=torch.float64).view(-1, 1, 1)
    std = torch.as_tensor(lm.std, dtype=torch.float64).view(-1, 1, 1)
    x01 = (rec.x0.double() * std + mean).clamp(0, 1)
    path = Path(out) / "randomization_montage.png"
    randomization_montage(maps, x01, path, step_labels=labels,
                          title=f"{ctx.get('title', '')}: cascading randomisation, first image explained in "
                                f"this run, target {rec.target0}")
    return str(path)

