"""File conventions of every command that writes results: atomic files, JSON lines, strict JSON.

* **Atomic files** (:func:`atomic_write_text`, :func:`atomic_write_json`,
  :func:`atomic_path`): written to a temporary file in the same folder
  (``.NAME.PID.RANDOM.tmp``), flushed, fsync'ed and renamed over the target with
  :func:`os.replace`, so a reader (or a run killed half-way) sees the old file or
  the new one, never a part.  :func:`clean_stale_temps` removes the temporary
  files a killed process left behind (their process id is no longer running).
* **JSON lines** (:func:`append_jsonl`, :func:`read_jsonl`): one record per
  line, flushed and fsync'ed: the unit of resumability.  A kill in the middle of
  a write leaves a torn last line; it is ignored on reading and cut off by
  ``repair=True`` before the next append.  A damaged line that is not the last
  is an :class:`InputError` (data would be lost silently otherwise).
* **Strict JSON** (:func:`dumps_strict`): ``allow_nan=False``.  A non-finite
  float that is a legitimate result (``inf`` when a ratio's denominator is 0,
  ``nan`` when a quantity is undefined) is written as ``null`` and the key
  ``<key>_nonfinite`` beside it says which (``"nan"``, ``"inf"``, ``"-inf"``);
  :func:`restore_nonfinite` reverses it when the records are read back.  Numpy
  scalars and arrays become plain numbers and lists.
* **Integers any reader can load**: Python's ``json.loads`` refuses integers of
  more than 4,300 digits by default (``sys.get_int_max_str_digits``).  Such an
  integer is written as its exact decimal string, and inside a dict the key
  ``<key>_log10`` beside it holds its base-10 logarithm as a float (unless the
  record already has ``log10_<key>``).
* **Resumable store** (:class:`ResumableStore`): ``config.json`` (written on the
  first run) and ``results.jsonl``; a resume with a different configuration is
  refused with one line that names the differing keys.
* **Versioned configurations**: every store writes ``config_version``
  (:data:`CONFIG_VERSION`) into ``config.json``; a folder written by an older
  version is read through :func:`migrate_config`, which translates its keys
  (version 1 -> 2: ``pretrained: X`` becomes ``random_weights: not X``; a user
  model's ``weights: "default"`` becomes ``"random"``, what it ran on), so
  runs written before still resume.  A newer version is refused with one line.
* :func:`check_output_dir` / :func:`check_output_file`: is ``--out`` usable,
  checked before any work (:mod:`empirical.cliargs` uses them; this module
  imports nothing above it).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import secrets
from pathlib import Path

from boundcheck.errors import InputError

__all__ = ["atomic_path", "atomic_write_bytes", "atomic_write_text", "atomic_write_json", "clean_stale_temps",
           "json_safe", "dumps_strict", "restore_nonfinite", "append_jsonl", "read_jsonl", "ResumableStore",
           "config_differences", "check_output_dir", "check_output_file"]

CONFIG_FILE = "config.json"
RESULTS_FILE = "results.jsonl"
NONFINITE_SUFFIX = "_nonfinite"
#: the most digits of an integer written as a JSON number (Python's default ``int_max_str_digits``)
JSON_INT_MAX_DIGITS = 4300
_TMP_RX = re.compile(r"^\..+\.(\d+)\.[0-9a-f]{8}\.tmp$")


# ----------------------------------------------------------------------------- output paths
def _nearest_existing(path: Path) -> Path:
    p = path
    while not p.exists() and p != p.parent:
        p = p.parent
    return p


def check_output_dir(path) -> Path:
    """Refuse, before any work, an output folder that cannot be written.

    Refused (one line, :class:`InputError`): an existing file, a folder in which
    no file can be created (tested by creating and removing a temporary file),
    and a path whose nearest existing ancestor is a file or not writable.  The
    folder itself is not created here.

    Returns
    -------
    Path : the path, user-expanded
    """
    import tempfile

    if path is None or not str(path).strip():
        raise InputError("--out needs a folder path")
    p = Path(os.path.expanduser(str(path)))
    if p.exists() and not p.is_dir():
        raise InputError(f"--out {p} is an existing file, not a folder")
    probe = _nearest_existing(p.absolute())
    if not probe.is_dir():
        raise InputError(f"--out {p} cannot be created: {probe} is a file")
    try:
        fd, tmp = tempfile.mkstemp(prefix=".write-test-", dir=probe)
        os.close(fd)
        os.unlink(tmp)
    except OSError as exc:
        where = "folder" if probe == p.absolute() else "parent folder"
        raise InputError(f"--out {p}: {where} {probe} is not writable ({exc.strerror or exc})") from None
    return p


def check_output_file(path, option: str = "--out") -> Path:
    """Check, before any work, that the file ``path`` can be written (its folder exists and is writable)."""
    p = Path(path)
    if p.is_dir():
        raise InputError(f"{option} {p} is a folder, expected a file name")
    parent = p.absolute().parent
    if not parent.exists():
        anc = _nearest_existing(parent)
        what = "is a file" if not anc.is_dir() else "does not exist"
        raise InputError(f"{option} {p}: folder {parent if anc.is_dir() else anc} {what}")
    if not parent.is_dir():
        raise InputError(f"{option} {p}: {parent} is a file")
    if p.exists() and not os.access(p, os.W_OK):
        raise InputError(f"{option} file {p} is not writable")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise InputError(f"{option} {p}: folder {parent} is not writable")
    return p


# ----------------------------------------------------------------------------- atomic files
def _tmp_name(path: Path) -> Path:
    return path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_path(path):
    """Yield a temporary path beside ``path``; on success it is fsync'ed and renamed onto ``path``.

    For writers that want a file name (``matplotlib.savefig``, ``csv`` through
    ``open``).  On an exception the temporary file is removed and ``path`` is untouched.
    """
    path = Path(path)
    tmp = _tmp_name(path)
    try:
        yield tmp
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    finally:
        if tmp.exists():
            tmp.unlink()


def atomic_write_bytes(path, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (temporary file, fsync, rename)."""
    path = Path(path)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
    return path


def atomic_write_text(path, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path, obj, indent: int | None = 1, sort_keys: bool = True) -> Path:
    """Strict JSON (:func:`dumps_strict`) written atomically, with a final newline."""
    return atomic_write_text(path, dumps_strict(obj, indent=indent, sort_keys=sort_keys) + "\n")


def clean_stale_temps(folder) -> list[Path]:
    """Remove the temporary files of :func:`atomic_path` whose writing process is gone.

    Returns the removed paths.  Files of a live process (another shard writing
    now) are kept.
    """
    folder = Path(folder)
    removed = []
    if not folder.is_dir():
        return removed
    for p in folder.iterdir():
        mt = _TMP_RX.match(p.name)
        if not mt or not p.is_file():
            continue
        pid = int(mt.group(1))
        if pid == os.getpid() or _alive(pid):
            continue
        with contextlib.suppress(FileNotFoundError):
            p.unlink()
            removed.append(p)
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# ----------------------------------------------------------------------------- strict JSON
def _nonfinite_tag(x: float) -> str:
    return "nan" if math.isnan(x) else ("inf" if x > 0 else "-inf")


def json_safe(obj):
    """A copy of ``obj`` that :func:`json.dumps` accepts with ``allow_nan=False``.

    Non-finite floats become ``None``; inside a dict the key ``<key>_nonfinite``
    records which value it was (unless the caller already gave a reason
    ``<key>_reason``).  An integer beyond :data:`JSON_INT_MAX_DIGITS` digits
    becomes its exact decimal string, with ``<key>_log10`` beside it in a dict
    (unless ``log10_<key>`` is there).  Numpy scalars/arrays become Python numbers/lists, tuples
    lists, keys strings.
    """
    try:
        import numpy as np
    except ImportError:  # pragma: no cover - numpy is a core dependency
        np = None
    if isinstance(obj, dict):
        out = {}
        for k, v in obj.items():
            k = str(k)
            v = _scalar(v, np)
            if isinstance(v, float) and not math.isfinite(v):
                out[k] = None
                if f"{k}_reason" not in obj:
                    out[f"{k}{NONFINITE_SUFFIX}"] = _nonfinite_tag(v)
            elif _huge_int(v):
                out[k] = json_safe(v)
                if f"log10_{k}" not in obj:
                    out[f"{k}_log10"] = math.log10(abs(v)) if v else 0.0
            else:
                out[k] = json_safe(v)
        return out
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    if np is not None and isinstance(obj, np.ndarray):
        return json_safe(obj.tolist())
    obj = _scalar(obj, np)
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if _huge_int(obj):
        from boundcheck.hoeffding import int_to_str

        return int_to_str(obj)
    return obj


def _huge_int(v) -> bool:
    """An int with more than :data:`JSON_INT_MAX_DIGITS` decimal digits."""
    if not isinstance(v, int) or isinstance(v, bool) or abs(v) < 10**JSON_INT_MAX_DIGITS:
        return False
    from boundcheck.hoeffding import len_digits

    return len_digits(v) > JSON_INT_MAX_DIGITS


def _scalar(v, np):
    if np is not None:
        if isinstance(v, np.bool_):
            return bool(v)
        if isinstance(v, np.integer):
            return int(v)
        if isinstance(v, np.floating):
            return float(v)
        if isinstance(v, np.ndarray):
            return v.tolist()
    if isinstance(v, Path):
        return str(v)
    return v


def dumps_strict(obj, **kwargs) -> str:
    """``json.dumps(json_safe(obj), allow_nan=False)``: never writes NaN or Infinity."""
    return json.dumps(json_safe(obj), allow_nan=False, **kwargs)


def restore_nonfinite(obj):
    """Reverse :func:`json_safe`'s ``<key>_nonfinite`` markers (in place and returned)."""
    if isinstance(obj, dict):
        for k in [k for k in obj if k.endswith(NONFINITE_SUFFIX)]:
            base = k[: -len(NONFINITE_SUFFIX)]
            if base in obj and obj[base] is None:
                obj[base] = float(obj.pop(k))
        for v in obj.values():
            restore_nonfinite(v)
    elif isinstance(obj, list):
        for v in obj:
            restore_nonfinite(v)
    return obj


# ----------------------------------------------------------------------------- JSON lines
def append_jsonl(path, record: dict, sort_keys: bool = True) -> None:
    """Append one complete strict-JSON line, flush and fsync."""
    line = dumps_strict(record, sort_keys=sort_keys) + "\n"
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(line)
        fh.flush()
        os.fsync(fh.fileno())


def read_jsonl(path, repair: bool = False) -> list[dict]:
    """Complete JSON lines of ``path`` (``[]`` when missing).

    A torn last line (a kill during the write) is ignored, and cut off when
    ``repair``; an unreadable line before the last raises :class:`InputError`.
    """
    path = Path(path)
    if not path.exists():
        return []
    data = path.read_bytes()
    out, good_end, pos = [], 0, 0
    while pos < len(data):
        nl = data.find(b"\n", pos)
        if nl < 0:
            break  # no newline: an interrupted write
        chunk = data[pos:nl]
        if chunk.strip():
            try:
                out.append(json.loads(chunk))
            except (json.JSONDecodeError, UnicodeDecodeError):
                if data.find(b"\n", nl + 1) >= 0:  # damage that is not the last line
                    raise InputError(f"{path}: unreadable line at byte {pos}; remove it to resume") from None
                break
        pos = nl + 1
        good_end = pos
    if repair and good_end < len(data):
        with open(path, "r+b") as fh:
            fh.truncate(good_end)
            fh.flush()
            os.fsync(fh.fileno())
    return out


# ----------------------------------------------------------------------------- resumable store
#: the version of ``config.json`` this code writes; older ones are translated by :func:`migrate_config`
CONFIG_VERSION = 2
CONFIG_VERSION_KEY = "config_version"


def migrate_config(config: dict) -> dict:
    """A copy of ``config`` in the current version's keys (see the module docstring).

    Version 1 (no ``config_version`` key, written before 2026-12): ``pretrained`` (the option
    given) becomes ``random_weights`` (its negation), the spelling every command shares.

    Raises
    ------
    InputError
        A version newer than :data:`CONFIG_VERSION` (written by a newer boundcheck).
    """
    c = dict(config)
    version = c.get(CONFIG_VERSION_KEY, 1)
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise InputError(f"config.json has an invalid {CONFIG_VERSION_KEY} {version!r}")
    if version > CONFIG_VERSION:
        raise InputError(f"config.json was written by a newer boundcheck (version {version}, this one reads up to "
                         f"{CONFIG_VERSION}); update boundcheck or use another --out")
    if version < 2 and "pretrained" in c:
        pretrained = c.pop("pretrained")
        c.setdefault("random_weights", None if pretrained is None else not pretrained)
    model = str(c.get("model", ""))
    if version < 2 and c.get("weights") == "default" and ":" in model and not model.startswith("timm:"):
        # version 1 of explain wrote "default" for a user model without --weights: it ran on random weights
        c["weights"] = "random"
    c[CONFIG_VERSION_KEY] = CONFIG_VERSION
    return c


def _normalised(config: dict) -> dict:
    return migrate_config(json.loads(dumps_strict(config, sort_keys=True)))


def config_differences(old: dict, new: dict, keys=None) -> list[str]:
    """Keys (all, or those of ``keys``) whose values differ between two configurations."""
    keys = sorted(set(old) | set(new)) if keys is None else list(keys)
    return [k for k in keys if old.get(k) != new.get(k)]


class ResumableStore:
    """``config.json`` + append-only ``results.jsonl`` in ``out_dir``.

    Parameters
    ----------
    out_dir : folder (created)
    config : the run's configuration (JSON-able); written on the first run
    compare : the keys a resume must match (default: all of ``config``)
    results : name of the results file (e.g. a shard's ``results.rank1.jsonl``)
    key : the record field that identifies a unit of work (default ``"id"``)
    hints : ``{config key: explanation}`` added to the refusal when that key differs
    sort_keys : write the records' keys sorted (default: in the record's order)

    Raises
    ------
    InputError
        ``out_dir`` holds a run with a different configuration (the message names
        the differing keys), or an unreadable ``config.json``.
    """

    def __init__(self, out_dir, config: dict, compare=None, results: str = RESULTS_FILE, key: str = "id",
                 hints: dict | None = None, sort_keys: bool = False):
        self.dir = check_output_dir(out_dir)
        self.config = _normalised(config)
        self.key = key
        self.sort_keys = sort_keys
        exists = self.check(self.dir, self.config, compare, hints)
        self.dir.mkdir(parents=True, exist_ok=True)
        clean_stale_temps(self.dir)
        if not exists:
            atomic_write_json(self.dir / CONFIG_FILE, self.config, indent=1)
        self.path = self.dir / results
        read_jsonl(self.path, repair=True)  # cut a torn last line before appending

    @staticmethod
    def check(out_dir, config: dict, compare=None, hints: dict | None = None) -> bool:
        """Refuse (one line) a folder holding a run with another configuration, writing nothing.

        Returns True when ``out_dir`` holds a run with this configuration (a resume), False when it
        holds none.  Called by the constructor, and on its own before an expensive load.
        """
        cfg = Path(out_dir) / CONFIG_FILE
        if not cfg.exists():
            return False
        try:
            old = json.loads(cfg.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise InputError(f"{cfg} is unreadable; remove it (and the results) or use another --out") from None
        if not isinstance(old, dict):
            raise InputError(f"{cfg} does not hold a configuration; remove it (and the results) or use another --out")
        old = migrate_config(old)
        new = _normalised(config)
        diff = config_differences(old, new, compare)
        if diff:
            what = ", ".join(f"{k}: {_short(old.get(k))} -> {_short(new.get(k))}" for k in diff[:4])
            more = f" and {len(diff) - 4} more" if len(diff) > 4 else ""
            hint = "".join(f" ({(hints or {})[k]})" for k in diff if k in (hints or {}))
            raise InputError(f"{Path(out_dir)} holds a run with a different configuration (differs in: {what}{more})"
                             f"{hint}; use another --out or the same options")
        return True

    def records(self) -> list[dict]:
        """All complete records, non-finite values restored (a torn last line is ignored)."""
        return [restore_nonfinite(r) for r in read_jsonl(self.path)]

    def done_keys(self) -> set:
        """The ``key`` field of every stored record."""
        return {r[self.key] for r in read_jsonl(self.path) if self.key in r}

    def append(self, record: dict) -> None:
        """Append one record (strict JSON, one fsync'ed line)."""
        append_jsonl(self.path, record, sort_keys=self.sort_keys)


def _short(v, limit: int = 60) -> str:
    s = json.dumps(v, sort_keys=True) if not isinstance(v, str) else repr(v)
    return s if len(s) <= limit else s[: limit - 3] + "..."
