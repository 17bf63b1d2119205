"""Process-level settings of the empirical commands (explicit, called by entry points only).

:func:`retain_freed_memory` keeps glibc from handing freed buffers back to the
operating system.  PyTorch has no caching allocator on the CPU: every
activation-sized tensor is a fresh ``malloc``, and glibc serves blocks above its
(dynamic) mmap threshold with ``mmap`` and returns them with ``munmap``, so each
LRP layer step pays for page faults on memory it had a moment ago.  On the 2-core
build machine this was 15-25% of an LRP call on ResNet-50 (``BENCHMARKS.md``).
The same effect as ``MALLOC_MMAP_THRESHOLD_=33554432 MALLOC_TRIM_THRESHOLD_=...``
in the environment; the cost is a process that keeps its peak heap.

:func:`return_freed_memory` does the opposite, for ``--low-memory`` runs
(``Explainer(low_memory=True)``): blocks from 1 MiB up are mapped on their own and
unmapped when freed, and the heap is trimmed above 1 MiB of free top, so the resident
set follows the live tensors instead of the heap's high-water mark and its
fragmentation (on ResNet-50 at batch 8, one LRP backward pass per rule left ~250 MiB
of freed heap resident per pass, ``BENCHMARKS.md``); every large allocation then pays
its page faults again.

Nothing in :mod:`empirical.engine` calls them: a library must not change its host
process's allocator.  The CLI's empirical commands and the benchmarks do.
"""

from __future__ import annotations

import ctypes
import ctypes.util

#: glibc ``mallopt`` parameters (malloc.h)
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
#: glibc's upper limit of M_MMAP_THRESHOLD on 64-bit systems (32 MiB)
MMAP_THRESHOLD_MAX = 32 * 1024 * 1024


def retain_freed_memory(mmap_threshold: int = MMAP_THRESHOLD_MAX, trim_threshold: int = 2**31 - 1) -> bool:
    """Set glibc's mmap and trim thresholds; ``True`` when both took effect.

    Returns ``False`` (and changes nothing) where the C library has no ``mallopt``
    (musl, macOS, Windows).

    Raises
    ------
    ValueError
        When a threshold is negative or ``mmap_threshold`` exceeds
        :data:`MMAP_THRESHOLD_MAX` (glibc would ignore it).
    """
    return _mallopt(mmap_threshold, trim_threshold)


#: :func:`return_freed_memory`'s thresholds: blocks from 1 MiB are mapped alone, freed top above 1 MiB trimmed
RETURN_THRESHOLD = 1 << 20


def return_freed_memory() -> bool:
    """Hand freed blocks of 1 MiB and more back to the operating system at once (glibc
    mmap and trim thresholds :data:`RETURN_THRESHOLD`); ``True`` when both took effect,
    ``False`` where the C library has no ``mallopt``."""
    return _mallopt(RETURN_THRESHOLD, RETURN_THRESHOLD)


def _mallopt(mmap_threshold: int, trim_threshold: int) -> bool:
    if mmap_threshold < 0 or trim_threshold < 0:
        raise ValueError("malloc thresholds must be >= 0")
    if mmap_threshold > MMAP_THRESHOLD_MAX:
        raise ValueError(f"mmap_threshold must be <= {MMAP_THRESHOLD_MAX} (glibc's maximum)")
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError, TypeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    ok_mmap = mallopt(_M_MMAP_THRESHOLD, int(mmap_threshold)) == 1
    ok_trim = mallopt(_M_TRIM_THRESHOLD, int(trim_threshold)) == 1
    return ok_mmap and ok_trim


#: packages whose warnings concern their own internals (deprecations inside torch, timm's
#: registry, PIL's decompression notes), not the user's input: kept off the terminal
THIRD_PARTY_WARNING_MODULES = r"^(torch|torchvision|timm|huggingface_hub|PIL|matplotlib|numpy|scipy)(\.|$)"


def quiet_third_party_warnings() -> None:
    """Ignore the warnings raised inside :data:`THIRD_PARTY_WARNING_MODULES` (process-wide; CLI only).

    A user's problem is reported by the command itself as one line; a library's internal
    warning printed before it (e.g. torch's note on pickled checkpoints) is noise.
    """
    import warnings

    warnings.filterwarnings("ignore", module=THIRD_PARTY_WARNING_MODULES)


#: seconds before a progress bar first appears: a run refused in its first moments prints no bar
PROGRESS_DELAY_S = 2.0


class progress_bar:
    """``with progress_bar(enabled, total=..., desc=...) as bar:`` a tqdm bar on stderr, or None.

    The one progress bar of every command: it appears after :data:`PROGRESS_DELAY_S` seconds
    only, and a run that ends in an exception clears it (``leave=False``), so an error line is
    never preceded by a bar.
    """

    def __init__(self, enabled: bool, **kwargs):
        self.enabled, self.kwargs, self.bar = enabled, kwargs, None

    def __enter__(self):
        if self.enabled:
            import sys

            from tqdm import tqdm

            self.bar = tqdm(file=sys.stderr, dynamic_ncols=True, delay=PROGRESS_DELAY_S, **self.kwargs)
        return self.bar

    def __exit__(self, exc_type, exc, tb):
        if self.bar is not None:
            if exc_type is not None:
                self.bar.leave = False
            self.bar.close()
        return False
