"""Audit of the assumptions of Lemma 7/8 on real networks ([P1] Sec. 5).

* :mod:`.depth` -- how a DAG (residual joins) maps onto the chain of eq. (14);
  the theorem used and the network depths ``n``.
* :mod:`.relevance` -- measured per-depth positive/negative relevance sums and
  per-layer conservation against Lemma 7/8 (paper and exact bounds).
* :mod:`.condition29` -- condition (29) at every neuron on real activations and
  the smallest gamma for which Lemma 8 applies.
* :mod:`.ranges` -- Hoeffding value ranges (eq. 31/33) and sample sizes (eq. 24)
  next to measured value ranges over augmented samples.
* :mod:`.report`, :mod:`.cli` -- tables, plots, ``report.md`` and ``boundcheck audit``.
"""
