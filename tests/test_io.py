"""empirical.io: atomic files, JSON lines with a torn last line, strict JSON, the resumable store,
stale temporary files and the output-path checks."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from boundcheck.errors import InputError
from empirical import io as eio

# ------------------------------------------------------------------ strict JSON
floats = st.floats(allow_nan=True, allow_infinity=True)
leaves = st.one_of(st.none(), st.booleans(), st.integers(-10**6, 10**6), floats, st.text(alphabet="abN", max_size=5))
keys = st.text(alphabet="abcxyz", min_size=1, max_size=4)  # never *_nonfinite nor *_reason
trees = st.recursive(leaves, lambda ch: st.one_of(st.lists(ch, max_size=4), st.dictionaries(keys, ch, max_size=4)),
                     max_leaves=20)


def _same(a, b) -> bool:
    if isinstance(a, float) and isinstance(b, float):
        return (math.isnan(a) and math.isnan(b)) or a == b
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return a == b


def _nonfinite_in_lists_to_none(o):
    if isinstance(o, dict):
        return {k: _nonfinite_in_lists_to_none(v) for k, v in o.items()}
    if isinstance(o, list):
        return [None if isinstance(v, float) and not math.isfinite(v) else _nonfinite_in_lists_to_none(v) for v in o]
    return o


@settings(max_examples=150, deadline=None)
@given(trees)
def test_strict_json_never_writes_nan_and_dict_values_round_trip(obj):
    text = eio.dumps_strict({"root": obj})

    def refuse(token):
        raise AssertionError(f"{token} written")

    json.loads(text, parse_constant=refuse)
    back = eio.restore_nonfinite(json.loads(text))["root"]
    # non-finite values inside dicts come back exactly; inside lists they are null
    assert _same(back, _nonfinite_in_lists_to_none(obj))


def test_numpy_values_and_reasons():
    obj = {"a": np.float32(1.5), "b": np.int64(3), "c": np.array([1.0, np.inf]), "d": float("nan"),
           "e": float("inf"), "e_reason": "one image", "f": np.bool_(True)}
    back = json.loads(eio.dumps_strict(obj))
    assert back == {"a": 1.5, "b": 3, "c": [1.0, None], "d": None, "d_nonfinite": "nan", "e": None,
                    "e_reason": "one image", "f": True}


# ------------------------------------------------------------------ atomic files
def test_atomic_write_keeps_the_old_file_when_the_writer_fails(tmp_path):
    p = tmp_path / "t.txt"
    eio.atomic_write_text(p, "old")
    with pytest.raises(RuntimeError):
        with eio.atomic_path(p) as tmp:
            tmp.write_text("half of the new")
            raise RuntimeError("killed")
    assert p.read_text() == "old"
    assert sorted(x.name for x in tmp_path.iterdir()) == ["t.txt"]


def test_stale_temp_files_of_dead_processes_are_removed(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    pid = int(dead.stdout)
    stale = tmp_path / f".tables.md.{pid}.0123abcd.tmp"
    mine = tmp_path / f".tables.csv.{os.getpid()}.0123abcd.tmp"
    other = tmp_path / ".hidden.tmp"
    for p in (stale, mine, other):
        p.write_text("x")
    assert eio.clean_stale_temps(tmp_path) == [stale]
    assert not stale.exists() and mine.exists() and other.exists()


# ------------------------------------------------------------------ JSON lines
def test_torn_last_line_is_ignored_and_repaired(tmp_path):
    p = tmp_path / "r.jsonl"
    for i in range(3):
        eio.append_jsonl(p, {"id": i, "v": float("inf") if i == 1 else i})
    data = p.read_bytes()
    p.write_bytes(data[:-5])
    assert [r["id"] for r in eio.read_jsonl(p)] == [0, 1]
    assert p.read_bytes() == data[:-5]  # reading alone changes nothing
    eio.read_jsonl(p, repair=True)
    assert p.read_bytes().endswith(b"\n") and len(p.read_bytes().splitlines()) == 2
    eio.append_jsonl(p, {"id": 2})
    assert [r["id"] for r in eio.read_jsonl(p)] == [0, 1, 2]


def test_damaged_line_before_the_last_is_an_error(tmp_path):
    p = tmp_path / "r.jsonl"
    p.write_text('{"id": 0}\n{"id": \n{"id": 2}\n')
    with pytest.raises(InputError, match="unreadable line"):
        eio.read_jsonl(p)


# ------------------------------------------------------------------ resumable store
def test_store_writes_config_resumes_and_refuses_naming_the_keys(tmp_path):
    s = eio.ResumableStore(tmp_path / "o", {"seed": 0, "m": [1, 2], "model": "x"})
    s.append({"id": "a", "s": float("nan")})
    s.append({"id": "b", "s": 1.0})
    again = eio.ResumableStore(tmp_path / "o", {"model": "x", "m": [1, 2], "seed": 0})
    assert again.done_keys() == {"a", "b"}
    assert math.isnan(again.records()[0]["s"])
    assert "NaN" not in (tmp_path / "o" / "results.jsonl").read_text()
    with pytest.raises(InputError) as ei:
        eio.ResumableStore(tmp_path / "o", {"seed": 1, "m": [1, 3], "model": "x"})
    msg = str(ei.value)
    assert "\n" not in msg and "seed" in msg and "m:" in msg and "model" not in msg
    # only the compared keys matter
    eio.ResumableStore(tmp_path / "o", {"seed": 0, "m": [1, 2], "model": "y"}, compare=("seed", "m"))


def test_store_refuses_an_unreadable_config(tmp_path):
    (tmp_path / "config.json").write_text("{")
    with pytest.raises(InputError, match="unreadable"):
        eio.ResumableStore(tmp_path, {"a": 1})


# ------------------------------------------------------------------ output paths
def test_check_output_dir(tmp_path):
    f = tmp_path / "f"
    f.write_text("")
    assert eio.check_output_dir(tmp_path / "new" / "deeper") == tmp_path / "new" / "deeper"
    assert not (tmp_path / "new").exists()  # nothing is created
    eio.check_output_dir(tmp_path)
    with pytest.raises(InputError, match="not a folder"):
        eio.check_output_dir(f)
    with pytest.raises(InputError, match="is a file"):
        eio.check_output_dir(f / "sub" / "x")
    with pytest.raises(InputError):
        eio.check_output_dir("")


def test_check_output_dir_not_writable(tmp_path, monkeypatch):
    # tests run as root (permissions are not enforced): simulate a read-only file system
    import tempfile

    def refuse(*a, **kw):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(tempfile, "mkstemp", refuse)
    with pytest.raises(InputError, match="not writable"):
        eio.check_output_dir(tmp_path)
    with pytest.raises(InputError, match="not writable"):
        eio.check_output_dir(tmp_path / "new")


def test_check_output_file(tmp_path):
    f = tmp_path / "f"
    f.write_text("")
    assert eio.check_output_file(tmp_path / "r.md") == tmp_path / "r.md"
    with pytest.raises(InputError, match="is a folder"):
        eio.check_output_file(tmp_path)
    with pytest.raises(InputError, match="is a file"):
        eio.check_output_file(f / "r.md")
    with pytest.raises(InputError, match="does not exist"):
        eio.check_output_file(tmp_path / "missing" / "r.md")
