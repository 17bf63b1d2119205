"""boundcheck: value bounds and convergence of averaged LRP attribution maps.

The core (this package) depends only on numpy, scipy and sympy, and the
sample-size calculator imports neither torch nor sympy.

References
----------
[P1] Binder, Takmil-Homayouni, Dogan (2025), "Value bounds and Convergence
     Analysis for Averages of LRP attributions" (``shared/papers/000_...``).
[P2] Supplement on model-randomisation sanity checks (``shared/papers/002_...``).
"""

__version__ = "0.1.0"
