"""empirical.runtime: the allocator setting of the empirical commands (explicit, validated)."""

import ctypes.util
import subprocess
import sys

import pytest

from empirical.runtime import MMAP_THRESHOLD_MAX, retain_freed_memory


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
    offenders = [p for p in root.rglob("*.py") if p.name != "runtime.py" and "retain_freed_memory" in p.read_text()]
    assert offenders == []
