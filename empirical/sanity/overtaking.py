"""Overtaking probabilities from activation quantiles ([P2] Thm 2, Sections E, I, J).

Per layer (every call of an activation module -- ReLU, ReLU6, SiLU, GELU, ... --
in execution order; a module applied twice in one block, as Lite0's ``_swish``
or ResNet's ``relu``, gives one layer per call, labelled ``name#k``), the
activations of one image are pooled over the spatial and channel dimensions and
summarised by the quantiles ``V(q)``, q = 0.95, 0.90, ..., 0.10 (18 values,
linear interpolation between order statistics, numpy's default ``"linear"``
method: the activations are sorted in their own dtype, the interpolation is
done in float64), then averaged over the images ([P2] I).

For a high quantile q_h in {0.95, 0.90, 0.85} and a low one q_l in
{0.50, 0.45, ..., 0.10}:

* ``gamma = sqrt(q_l / (1 - q_h))`` = ``sqrt(|X_S| / |X_L|)`` (eq. 36): bottom
  fraction over top fraction.
* ``K`` = ratio of the larger to the smaller magnitude of ``V(q_h)`` and
  ``V(q_l)``.  With positive statistics this is ``V(q_h) / V(q_l)`` (Section I);
  with negative statistics (EfficientNet's lower layers) it is the inverse
  ``V(q_l) / V(q_h)``, as Section I prescribes: the absolutely larger negative
  values are to be overtaken.  Policies: ``V(q_l) = 0 < |V(q_h)|`` (or the
  reverse) gives ``K = inf`` and ``P = 0`` (zeros cannot overtake anything: the
  sparsity of Section J); ``V(q_h) = V(q_l) = 0`` gives ``K = NaN`` and
  ``P = NaN`` (no non-zero activations in that range; left out of plots).
  ``gamma`` is kept as ``sqrt(q_l/(1-q_h))`` in every case, as in [P2].
* ``P = 1 - CDF_gamma(K) = P_gamma(Z >= K)`` for a Cauchy variable of scale
  ``gamma`` (eq. 23, 35): ``scipy.stats.cauchy(scale=gamma).sf(K)``
  = ``0.5 - arctan(K / gamma) / pi``.

Section J: the fraction of non-positive activations (``<= 0``) per layer,
averaged over the images.
"""

from __future__ import annotations

import math

import numpy as np

QUANTILES = tuple(round(0.95 - 0.05 * i, 2) for i in range(18))  # 0.95 .. 0.10
Q_HIGH = (0.95, 0.9, 0.85)
Q_LOW = tuple(round(0.5 - 0.05 * i, 2) for i in range(9))  # 0.50 .. 0.10

ACTIVATIONS = ("ReLU", "ReLU6", "SiLU", "GELU", "Hardswish", "LeakyReLU", "ELU", "Mish",
               "Swish", "MemoryEfficientSwish", "PReLU", "SELU", "CELU")


def activation_statistics(model, x, quantiles=QUANTILES, activation_types=ACTIVATIONS):
    """Per-image quantiles and non-positive fractions of every activation call.

    Parameters
    ----------
    model : torch.nn.Module (run in eval mode under ``no_grad``; not modified
        except for temporary forward hooks, removed afterwards)
    x : tensor (B, C, H, W)

    Returns
    -------
    labels : list[str], ``module_name#call`` in execution order
    V : array (B, L, Q), the quantiles per image and layer
    nonpos : array (B, L), fraction of activations ``<= 0``
    """
    import torch

    qs = np.asarray(quantiles, dtype=np.float64)
    labels: list[str] = []
    vals: list[np.ndarray] = []
    fracs: list[np.ndarray] = []
    calls: dict[str, int] = {}

    def hook_for(name):
        def hook(module, inputs, output):
            k = calls.get(name, 0)
            calls[name] = k + 1
            t = output.detach().reshape(output.shape[0], -1)
            labels.append(f"{name}#{k}")
            vals.append(_quantiles(t, qs))
            fracs.append((t <= 0).double().mean(dim=1).cpu().numpy())

        return hook

    handles = [m.register_forward_hook(hook_for(n)) for n, m in model.named_modules()
               if type(m).__name__ in activation_types]
    try:
        with torch.no_grad():
            model(x)
    finally:
        for h in handles:
            h.remove()
    if not labels:
        raise ValueError("no activation modules found in the model")
    return labels, np.stack(vals, axis=1), np.stack(fracs, axis=1)


def _quantiles(t, qs: np.ndarray) -> np.ndarray:
    """Row-wise quantiles of a (B, N) tensor, numpy's "linear" method; (B, len(qs)) float64."""
    import torch

    srt = torch.sort(t, dim=1).values.cpu().double().numpy()
    n = srt.shape[1]
    pos = qs * (n - 1)
    lo = np.floor(pos).astype(np.int64)
    hi = np.minimum(lo + 1, n - 1)
    frac = pos - lo
    return srt[:, lo] + (srt[:, hi] - srt[:, lo]) * frac


def overtaking_K(v_high: float, v_low: float) -> float:
    """K of Section I: larger over smaller magnitude (inf when the smaller is 0, NaN when both are)."""
    a, b = abs(float(v_high)), abs(float(v_low))
    big, small = max(a, b), min(a, b)
    if big == 0.0:
        return float("nan")
    if small == 0.0:
        return float("inf")
    return big / small


def overtaking_gamma(q_high: float, q_low: float) -> float:
    """``gamma = sqrt(q_low / (1 - q_high))`` (eq. 36 with |X_S| ~ q_low, |X_L| ~ 1 - q_high)."""
    if not (0.0 < q_low < q_high < 1.0):
        raise ValueError(f"need 0 < q_low < q_high < 1, got q_low={q_low}, q_high={q_high}")
    return math.sqrt(q_low / (1.0 - q_high))


def overtaking_probability(K: float, gamma: float) -> float:
    """``P_gamma(Z >= K) = 1 - CDF_gamma(K)`` for a Cauchy(0, gamma) variable (eq. 23, 35)."""
    from scipy.stats import cauchy

    if math.isnan(K):
        return float("nan")
    if math.isinf(K):
        return 0.0
    return float(cauchy(scale=gamma).sf(K))


def overtaking_table(labels, V_mean, quantiles=QUANTILES, q_high=Q_HIGH, q_low=Q_LOW) -> list[dict]:
    """Rows ``{layer, label, q_high, q_low, V_high, V_low, K, gamma, P}`` from mean quantiles (L, Q)."""
    qidx = {round(q, 2): i for i, q in enumerate(quantiles)}
    rows = []
    for li, label in enumerate(labels):
        for qh in q_high:
            for ql in q_low:
                vh, vl = float(V_mean[li, qidx[round(qh, 2)]]), float(V_mean[li, qidx[round(ql, 2)]])
                K = overtaking_K(vh, vl)
                g = overtaking_gamma(qh, ql)
                rows.append({"layer": li, "label": label, "q_high": qh, "q_low": ql, "V_high": vh, "V_low": vl,
                             "K": K, "gamma": g, "P": overtaking_probability(K, g)})
    return rows
