"""The one error type for bad user input.

Every public function raises :class:`InputError` (a ``ValueError``) with a message
that names the offending argument; the CLI turns it into one line on stderr and
exit status 2.
"""

from __future__ import annotations

import math
import numbers


class InputError(ValueError):
    """Invalid input, reported to the user as one line (CLI exit status 2)."""


def require_real(name: str, value) -> float:
    """Return ``value`` as a finite float or raise :class:`InputError` naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise InputError(f"{name} must be a real number, got {value!r}")
    v = float(value)
    if not math.isfinite(v):
        raise InputError(f"{name} must be finite, got {value!r}")
    return v


def require_int(name: str, value, minimum: int | None = None) -> int:
    """Return ``value`` as an int (>= ``minimum``) or raise :class:`InputError`."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise InputError(f"{name} must be an integer, got {value!r}")
    v = int(value)
    if minimum is not None and v < minimum:
        raise InputError(f"{name} must be >= {minimum}, got {v}")
    return v
