"""Numerical references shared by the tests (not a test module)."""

from __future__ import annotations

import torch


def finite_differences(f, x, h=1e-6):
    """Central differences of the scalar function ``f`` at every entry of ``x`` (float64)."""
    g = torch.zeros(x.shape, dtype=x.dtype)
    with torch.no_grad():
        for i in range(x.numel()):
            e = torch.zeros(x.numel(), dtype=x.dtype)
            e[i] = h
            e = e.view_as(x)
            g.view(-1)[i] = (f(x + e) - f(x - e)) / (2 * h)
    return g
