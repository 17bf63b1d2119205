"""Settings of [P1] Section 6 that several modules share, each defined once.

The experiment's plots, the audit's Hoeffding ranges, the bounds report and ``explain`` all state
their sample sizes for the paper's failure probability; they import it from here.
"""

#: failure probability delta of the Hoeffding bounds in [P1] Section 6 (eq. (24)): confidence 1 - delta
DELTA: float = 0.05
