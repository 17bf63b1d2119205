"""Command-line entry point: ``boundcheck <command> ...``.

Each sub-command lives in its own module and is imported only when it runs, so
that the sample-size calculator starts as fast as Python does (no torch, no
sympy).  A module named here provides ``add_arguments(parser)`` and
``run(args) -> int``.

Bad input (an :class:`boundcheck.errors.InputError`, an argparse error, a missing
file) is reported as one line on stderr with exit status 2, never a traceback,
and a refused torch command leaves its ``--out`` as it found it
(:func:`restore_out`).

This package is the command layer: it sits above the theory (``boundcheck``) and
the studies (``empirical``); nothing below it imports it (tests/test_layers.py).
"""

from __future__ import annotations

import argparse
import importlib
import sys

from boundcheck.errors import InputError

#: command -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "samples": ("boundcheck.cli.hoeffding", "required number of samples m for deviation t and confidence 1-delta (eq. 24)"),
    "deviation": ("boundcheck.cli.hoeffding", "deviation t reached with m samples at confidence 1-delta (eq. 23)"),
    "range": ("boundcheck.cli.hoeffding", "per-depth value-range bounds, paper and exact (Lemma 7/8, eq. 31-33)"),
    "report": ("boundcheck.cli.report", "Markdown report of the bounds for the paper's settings"),
    "prove": ("proofs.cli", "sympy certificates of the proofs' steps"),
    "fuzz": ("boundcheck.fuzz.cli", "hypothesis search for counterexamples to every claim"),
    "empirical": ("empirical.experiment.cli", "the convergence experiment of Section 6 (torch)"),
    "audit": ("empirical.audit.cli", "measured per-layer relevance against Lemma 7/8 and condition (29) (torch)"),
    "sanity": ("empirical.sanity.cli", "model randomisation, faithfulness and overtaking checks of the supplement (torch)"),
    "explain": ("empirical.explain.cli", "averaged attribution maps over augmentations: heatmaps, montages, s1/s2 vs the theory's m (torch)"),
    "check-model": ("empirical.checkmodel", "is a network supported, and is the engine exact on it (torch)"),
    "main": ("boundcheck.cli.mainjob", "the main job: report, verdicts and the embedded empirical default"),
}


#: commands that run torch on activation-sized tensors: glibc keeps their freed buffers
#: (``empirical.runtime.retain_freed_memory``; 15-25% of an LRP call on the CPU otherwise)
ALLOCATION_HEAVY = frozenset({"empirical", "audit", "sanity", "explain", "check-model", "main"})


class _OneLineParser(argparse.ArgumentParser):
    """argparse parser whose errors are a single line and exit status 2."""

    def error(self, message: str):  # noqa: D401 - argparse API
        raise InputError(f"{self.prog}: {message}")


def build_parser(argv_command: str | None = None) -> argparse.ArgumentParser:
    parser = _OneLineParser(prog="boundcheck", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_OneLineParser)
    for name, (module, help_) in COMMANDS.items():
        p = sub.add_parser(name, help=help_, description=help_)
        # Only the selected command's module is imported (keeps start-up light).
        if name == argv_command:
            importlib.import_module(module).add_arguments(p, name)
    return parser


def _out_entries(out) -> set | None:
    """Every path under ``--out`` (relative), or None when it does not exist: the state a refusal restores."""
    import os
    from pathlib import Path

    if out is None:
        return None
    root = Path(out)
    if not root.is_dir():
        return None
    found = set()
    for dirpath, dirnames, filenames in os.walk(root):
        rel = Path(dirpath).relative_to(root)
        found.update(str(rel / n) for n in dirnames + filenames)
    return found


#: files a run writes before its first unit of work (configuration, empty result files): removing them on
#: a refusal loses nothing computed
_SETUP_FILES = frozenset({"config.json"})


def _nothing_computed(path) -> bool:
    """A file a run writes before any result: configuration, empty, or JSON lines that only record
    skipped (unreadable) images."""
    import json

    if path.name in _SETUP_FILES or path.stat().st_size == 0:
        return True
    if path.suffix != ".jsonl":
        return False
    if path.name == "skipped.jsonl":
        return True
    try:
        records = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    except (ValueError, UnicodeDecodeError):
        return False
    return all(isinstance(r, dict) and "skipped" in r for r in records)


def restore_out(out, before: set | None) -> None:
    """Put ``--out`` back as a refused run found it: remove what the run created, when that is only set-up.

    Files a refused run created are removed only when none holds a result (each is a configuration file
    (:data:`_SETUP_FILES`), empty, or records of skipped images only), so results already computed are
    never lost; folders it created are removed when empty.
    """
    import shutil
    from pathlib import Path

    if out is None:
        return
    root = Path(out)
    if not root.is_dir():
        return
    after = _out_entries(root) or set()
    new = sorted(after - (before or set()), key=lambda r: -r.count("/"))
    new_files = [root / r for r in new if (root / r).is_file()]
    if any(not _nothing_computed(p) for p in new_files):
        return  # work was done: keep it (a resume continues from it)
    for p in new_files:
        p.unlink()
    for r in new:
        d = root / r
        if d.is_dir() and not any(d.iterdir()):
            d.rmdir()
    if before is None and not any(root.iterdir()):
        shutil.rmtree(root, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command = next((a for a in argv if not a.startswith("-")), None)
    if command not in COMMANDS:
        command = None
    try:
        parser = build_parser(command)
        args = parser.parse_args(argv)
        if args.command is None:
            parser.print_help()
            return 2
        module = importlib.import_module(COMMANDS[args.command][0])
        if args.command in ALLOCATION_HEAVY:
            from empirical.runtime import quiet_third_party_warnings, retain_freed_memory, return_freed_memory

            return_freed_memory() if getattr(args, "low_memory", False) else retain_freed_memory()
            quiet_third_party_warnings()
        out = getattr(args, "out", None) if args.command in ALLOCATION_HEAVY else None
        before = _out_entries(out)
        try:
            return int(module.run(args) or 0)
        except (InputError, FileNotFoundError, NotADirectoryError, PermissionError):
            restore_out(out, before)  # a refused run leaves --out as it found it
            raise
    except InputError as exc:
        print(f"boundcheck: error: {exc}", file=sys.stderr)
        return 2
    except (FileNotFoundError, NotADirectoryError, PermissionError) as exc:
        print(f"boundcheck: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("boundcheck: interrupted; results written so far are kept", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
