"""The main job (``make run``): one ``report/`` directory with everything offline.

Sections, each written to ``report.md`` as soon as it is finished (a failure in a
later section never loses an earlier one):

1. the bounds for the paper's settings (:mod:`boundcheck.cli.report`);
2. the sympy proof certificates (:mod:`proofs`);
3. the fuzz verdicts (:mod:`boundcheck.fuzz`);
4. the convergence experiment of [P1] Sec. 6 on EfficientNet-Lite0 with the 20
   ImageNet photos shipped with foolbox (:mod:`empirical.experiment`);
5. the audit of the bounds on the same network (:mod:`empirical.audit`);
6. the sanity checks of [P2] (:mod:`empirical.sanity`);
7. figures of averaged maps at m = 1 and 4 (:mod:`empirical.explain`).

Sections 4-7 need the ``[empirical]`` extra (torch); without it they are
reported as skipped with the reason.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import time
import traceback
from pathlib import Path
from typing import Callable

from boundcheck.errors import InputError

SECTIONS = ("bounds", "proofs", "fuzz", "empirical", "audit", "sanity", "explain")
_TORCH_SECTIONS = {"empirical", "audit", "sanity", "explain"}


def add_arguments(parser: argparse.ArgumentParser, name: str) -> None:
    parser.add_argument("--out", default="report", help="output directory (default: report)")
    parser.add_argument(
        "--skip",
        default="",
        help=f"comma-separated sections to skip, from {','.join(SECTIONS)}",
    )
    parser.add_argument("--fuzz-examples", type=int, default=None, help="examples per fuzz claim (default: the fuzz default)")
    parser.add_argument("--seed", type=int, default=0, help="seed for fuzzing and augmentations (default 0)")


def _section_bounds(out: Path, args) -> str:
    from boundcheck.cli.report import bounds_report_markdown

    text = bounds_report_markdown()
    _io().atomic_write_text(out / "bounds.md", text)
    return text


def _section_proofs(out: Path, args) -> str:
    from proofs import certify

    certs = certify()
    _io().atomic_write_json(out / "proofs.json", [c.to_dict() for c in certs], indent=2, sort_keys=False)
    rows = ["| claim | status | steps proved | source |", "|---|---|---|---|"]
    notes = []
    for c in certs:
        proved = sum(s.status == "proved" for s in c.steps)
        rows.append(f"| `{c.claim}` | **{c.status}** | {proved}/{len(c.steps)} | {c.source} |")
        for s in c.steps:
            if s.status != "proved":
                notes.append(f"- `{c.claim}` — {s.name}: **{s.status}**. {s.note}")
    text = "\n".join(rows)
    if notes:
        text += "\n\nSteps that do not follow as written:\n\n" + "\n".join(notes)
    return text


def _section_fuzz(out: Path, args) -> str:
    from boundcheck.fuzz.runner import run_claims, verdict_table_markdown

    kwargs = {"seed": args.seed}
    if args.fuzz_examples is not None:
        kwargs["examples"] = args.fuzz_examples
    verdicts = run_claims(**kwargs)
    _io().atomic_write_json(out / "fuzz.json", [v.to_dict() for v in verdicts], indent=2, sort_keys=False)
    return verdict_table_markdown(verdicts)


def _section_empirical(out: Path, args) -> str:
    from empirical.experiment import run_embedded_default

    res = run_embedded_default(out / "empirical", seed=args.seed)
    return res["summary"]


def _section_audit(out: Path, args) -> str:
    from empirical.audit.cli import run_embedded_default

    return run_embedded_default(out / "audit")["markdown"]


def _section_sanity(out: Path, args) -> str:
    from empirical.sanity import run_embedded_default

    return run_embedded_default(out / "sanity")["summary"]


def _section_explain(out: Path, args) -> str:
    from empirical.explain import report_section

    return report_section(out / "explain", link_base=out)


_TITLES = {
    "bounds": "Bounds for the paper's settings",
    "proofs": "Proof certificates (sympy)",
    "fuzz": "Fuzz verdicts (hypothesis)",
    "empirical": "Convergence experiment (Sec. 6) on EfficientNet-Lite0, 20 shipped ImageNet photos",
    "audit": "Audit: the bounds on a real network",
    "sanity": "Sanity checks of the supplement",
    "explain": "Averaged maps: gradient x input and LRP at m = 1 and 4",
}
_RUNNERS: dict[str, Callable] = {
    "bounds": _section_bounds,
    "proofs": _section_proofs,
    "fuzz": _section_fuzz,
    "empirical": _section_empirical,
    "audit": _section_audit,
    "sanity": _section_sanity,
    "explain": _section_explain,
}


def _demote(text: str) -> str:
    """Nest a section's own Markdown headings under its ``##`` title (outside code blocks)."""
    lines, fenced = [], False
    for line in text.splitlines():
        if line.startswith("```"):
            fenced = not fenced
        if not fenced and line.startswith("#"):
            line = "##" + line
        lines.append(line)
    return "\n".join(lines)


def _io():
    """:mod:`empirical.io` (atomic files, strict JSON); it needs no torch."""
    import empirical.io

    return empirical.io


def _write_report(out: Path, parts: list[str]) -> None:
    _io().atomic_write_text(out / "report.md", "\n\n".join(parts) + "\n")


def run(args) -> int:
    skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    unknown = skip - set(SECTIONS)
    if unknown:
        raise InputError(f"--skip: unknown section(s) {sorted(unknown)}; known: {','.join(SECTIONS)}")
    if args.fuzz_examples is not None and args.fuzz_examples < 1:
        raise InputError(f"--fuzz-examples must be >= 1, got {args.fuzz_examples}")
    out = _io().check_output_dir(args.out)
    out.mkdir(parents=True, exist_ok=True)
    _io().clean_stale_temps(out)
    has_torch = importlib.util.find_spec("torch") is not None
    parts = [
        "# boundcheck report",
        "Value bounds and convergence of averaged LRP attribution maps: the bounds, "
        "their verification, and measurements on a real ImageNet network. "
        "Generated by `boundcheck main` (`make run`).",
    ]
    failed = []
    for name in SECTIONS:
        title = f"## {_TITLES[name]}"
        if name in skip:
            parts.append(f"{title}\n\n_skipped (--skip)._")
            continue
        if name in _TORCH_SECTIONS and not has_torch:
            parts.append(f"{title}\n\n_skipped: torch is not installed (install the [empirical] extra)._")
            continue
        print(f"[boundcheck main] {name} ...", file=sys.stderr, flush=True)
        t0 = time.perf_counter()
        try:
            body = _RUNNERS[name](out, args)
        except InputError:
            raise
        except Exception as exc:  # a broken section must not lose the others
            failed.append(name)
            _io().atomic_write_text(out / f"{name}.error.txt", traceback.format_exc())
            body = f"**This section failed:** `{type(exc).__name__}: {exc}` (traceback in `{name}.error.txt`)."
        dt = time.perf_counter() - t0
        parts.append(f"{title}\n\n{_demote(body)}\n\n_{dt:.0f} s_")
        _write_report(out, parts)
        print(f"[boundcheck main] {name} done in {dt:.0f} s", file=sys.stderr, flush=True)
    _write_report(out, parts)
    print(f"report written to {out / 'report.md'}")
    if failed:
        print(f"boundcheck: error: section(s) failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0
