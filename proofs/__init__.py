"""Machine-checked proof steps (sympy) for the claims of [P1] and [P2].

[P1] Binder, Takmil-Homayouni, Dogan: "Value bounds and Convergence Analysis for
Averages of LRP attributions" (main paper).  [P2] its supplement on sanity checks
(Sections A.2, B-E).

Each module restates one result and checks every algebraic step of the paper's
proof with sympy; :data:`REGISTRY` maps the shared claim names to functions
returning a :class:`proofs.certificate.Certificate`.  Which claim has which
certificate is declared once, in :mod:`boundcheck.claims_registry`; modules are
imported only when their certificate is requested.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Callable

from boundcheck import claims_registry

if TYPE_CHECKING:  # pragma: no cover
    from proofs.certificate import Certificate


def __getattr__(name: str):
    # ``proofs.Certificate`` / ``proofs.Step`` without importing sympy with the package
    # (``boundcheck prove --list`` reads only the claim registry).
    if name in ("Certificate", "Step"):
        from proofs import certificate

        return getattr(certificate, name)
    raise AttributeError(f"module 'proofs' has no attribute {name!r}")


def _loader(module: str, func: str) -> Callable[[], Certificate]:
    def build() -> Certificate:
        return getattr(importlib.import_module(module), func)()

    build.__name__ = f"{module.rsplit('.', 1)[-1]}.{func}"
    build.__doc__ = f"Build the certificate via {module}.{func}()."
    return build


#: claim name -> zero-argument function returning its Certificate
REGISTRY: dict[str, Callable[[], Certificate]] = {
    name: _loader(*claims_registry.CLAIMS[name].certificate.split(":")) for name in claims_registry.certified()
}


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
