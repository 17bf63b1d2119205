"""empirical.runtime: the allocator setting of the empirical commands (explicit, validated)."""

import ctypes.util
import subprocess
import sys

import pytest

from empirical.runtime import MMAP_THRESHOLD_MAX, retain_freed_memory

GLIBC = "libc.so" in (ctypes.util.find_library("c") or "")


def test_thresholds_are_validated():
    with pytest.raises(ValueError, match="glibc's maximum"):
        retain_freed_memory(mmap_threshold=MMAP_THRESHOLD_MAX + 1)
    with pytest.raises(ValueError, match=">= 0"):
        retain_freed_memory(trim_threshold=-1)


def test_takes_effect_on_glibc_in_a_fresh_process():
    # a subprocess: the setting is process-wide and must not leak into the test session
    code = "from empirical.runtime import retain_freed_memory as r; print(r())"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    libc = ctypes.util.find_library("c") or ""
    if "libc.so" in libc:  # glibc: mallopt exists and accepts both parameters
        assert out == "True"
    else:
        assert out in ("True", "False")


def test_the_library_never_calls_it():
    # only entry points (CLI commands, benchmarks) may change the host process's allocator
    from pathlib import Path

    root = Path(__file__).resolve().parents[1] / "empirical"
    import re

    call = re.compile(r"\b(retain|return)_freed_memory\s*\(|import[^\n]*\b(retain|return)_freed_memory")
    offenders = [p for p in root.rglob("*.py") if p.name != "runtime.py" and call.search(p.read_text())]
    assert offenders == []


_RESIDENT_AFTER_FREE = """
from pathlib import Path
from empirical.runtime import {fn} as setting
assert setting()
import torch
def rss():
    line = next(s for s in Path("/proc/self/status").read_text().splitlines() if s.startswith("VmRSS:"))
    return int(line.split()[1]) / 1024
base = rss()
blocks = [torch.ones(1 << 21) for _ in range(32)]  # 32 blocks of 8 MiB, below glibc's mmap ceiling
del blocks
print(rss() - base)
"""


@pytest.mark.skipif(not GLIBC, reason="mallopt is glibc's")
def test_retained_blocks_stay_resident_and_returned_ones_do_not():
    def resident_after_free(fn):
        out = subprocess.run([sys.executable, "-c", _RESIDENT_AFTER_FREE.format(fn=fn)], capture_output=True,
                             text=True, check=True).stdout
        return float(out.strip().splitlines()[-1])
    assert resident_after_free("retain_freed_memory") > 200  # MiB of the 256 freed
    assert resident_after_free("return_freed_memory") < 16
