"""Property-based search (hypothesis) for counterexamples to every claim of [P1] and [P2].

* :mod:`boundcheck.fuzz.strategies` - the shared hypothesis strategies;
* :mod:`boundcheck.fuzz.claims` - the registry :data:`~boundcheck.fuzz.claims.CLAIMS`;
* :mod:`boundcheck.fuzz.runner` - :func:`~boundcheck.fuzz.runner.run_claims` and the verdicts;
* :mod:`boundcheck.fuzz.cli` - ``boundcheck fuzz``.

hypothesis is imported only when this package is used (a ``dev`` extra).
"""
