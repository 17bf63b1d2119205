"""Machine-checked proof steps (sympy) for the claims of [P1] and [P2].

[P1] Binder, Takmil-Homayouni, Dogan: "Value bounds and Convergence Analysis for
Averages of LRP attributions" (main paper).  [P2] its supplement on sanity checks
(Sections A.2, B-E).

Each module restates one result and checks every algebraic step of the paper's
proof with sympy; :data:`REGISTRY` maps the shared claim names to functions
returning a :class:`proofs.certificate.Certificate`.  Modules are imported only
when their certificate is requested.
"""

from __future__ import annotations

import importlib
from typing import Callable

from proofs.certificate import Certificate, Step  # noqa: F401  (re-export)

#: claim name -> (module, function)
_TARGETS: dict[str, tuple[str, str]] = {
    "thm3": ("proofs.thm3", "certificate"),
    "thm3_rayleigh": ("proofs.thm3", "rayleigh_certificate"),
    "thm4": ("proofs.thm4", "certificate"),
    "cor5": ("proofs.cor5", "certificate"),
    "kr1": ("proofs.cor5", "certificate_kr1"),
    "lemma7": ("proofs.lemma7", "certificate"),
    "lemma7_exact": ("proofs.lemma7", "certificate_exact"),
    "lemma8": ("proofs.lemma8", "certificate"),
    "lemma8_exact": ("proofs.lemma8", "certificate_exact"),
    "hoeffding": ("proofs.hoeffding", "certificate"),
    "eq31": ("proofs.ranges", "certificate_eq31"),
    "eq31_exact": ("proofs.ranges", "certificate_eq31_exact"),
    "eq33": ("proofs.ranges", "certificate_eq33"),
    "eq33_exact": ("proofs.ranges", "certificate_eq33_exact"),
    "kr9": ("proofs.kr9", "certificate"),
    "kr9_upper": ("proofs.kr9", "certificate_upper"),
    "sanity_thm1_ssim": ("proofs.sanity_ssim", "certificate"),
    "sanity_thm3_spearman": ("proofs.sanity_spearman", "certificate"),
    "sanity_thm3_rank_sign": ("proofs.sanity_spearman", "certificate_rank_sign"),
    "sanity_thm4_mse": ("proofs.sanity_mse", "certificate"),
    "sanity_thm2_overtaking": ("proofs.overtaking", "certificate"),
    "adaptive_beta": ("proofs.adaptive_beta", "certificate"),
}


def _loader(module: str, func: str) -> Callable[[], Certificate]:
    def build() -> Certificate:
        return getattr(importlib.import_module(module), func)()

    build.__name__ = f"{module.rsplit('.', 1)[-1]}.{func}"
    build.__doc__ = f"Build the certificate via {module}.{func}()."
    return build


#: claim name -> zero-argument function returning its Certificate
REGISTRY: dict[str, Callable[[], Certificate]] = {name: _loader(*t) for name, t in _TARGETS.items()}


def certify(names=None) -> list[Certificate]:
    """Certificates for ``names`` (all registered claims if None), in the given order.

    Raises
    ------
    KeyError
        For an unknown claim name.
    """
    names = list(REGISTRY) if names is None else list(names)
    unknown = [n for n in names if n not in REGISTRY]
    if unknown:
        raise KeyError(unknown[0])
    return [REGISTRY[n]() for n in names]
