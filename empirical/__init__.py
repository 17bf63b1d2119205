"""Torch-based experiments: the convergence experiment of Section 6, audits and sanity checks."""
