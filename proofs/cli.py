"""``boundcheck prove [NAME ...] [--json] [--list]``: print the sympy certificates.

``--list`` prints the claim index of :mod:`boundcheck.claims_registry` instead
(claim -> paper result, bound function, certificate, fuzz claim, expected
verdicts, test files; with ``--json`` as JSON) without building any certificate.

The table lists claim, status, steps proved/total and source; below it, every step
that is not proved with its note.  ``--json`` prints a JSON list of
:meth:`proofs.certificate.Certificate.to_dict` objects.  Exit status 0 whenever
certificates were produced (a disproved claim is a finding, not an error); an
unknown name raises :class:`boundcheck.errors.InputError` (exit 2).
"""

from __future__ import annotations

import argparse
import json
import sys

from boundcheck.errors import InputError


def add_arguments(parser: argparse.ArgumentParser, name: str = "prove") -> None:
    """Register the ``prove`` arguments on ``parser``."""
    parser.add_argument("names", nargs="*", metavar="NAME",
                        help="claims to certify (default: all registered claims)")
    parser.add_argument("--json", action="store_true", help="print a JSON list of certificates (with --list: of the index)")
    parser.add_argument("--list", action="store_true",
                        help="print the claim index (paper result, bound function, certificate, fuzz claim, tests) and exit")


def format_table(certs) -> str:
    """Plain-text table of certificates plus the non-proved steps with their notes."""
    rows = [("claim", "status", "steps", "source")]
    for c in certs:
        rows.append((c.claim, c.status, f"{c.n_proved}/{len(c.steps)}", c.source))
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    lines = []
    for i, r in enumerate(rows):
        lines.append("  ".join(r[j].ljust(widths[j]) for j in range(3)) + "  " + r[3])
        if i == 0:
            lines.append("  ".join("-" * w for w in widths) + "  " + "-" * 6)
    details = []
    for c in certs:
        for s in c.steps:
            if s.status != "proved":
                details.append(f"[{c.claim}] {s.status}: {s.name}")
                if s.note:
                    details.append(f"    {s.note}")
    if details:
        lines.append("")
        lines.append("steps not proved:")
        lines.extend(details)
    return "\n".join(lines)


def run(args) -> int:
    """Build the requested certificates and print them; returns the exit status."""
    from boundcheck import claims_registry

    names = list(getattr(args, "names", None) or [])
    if getattr(args, "list", False):
        if names:
            raise InputError("--list takes no claim names")
        print(claims_registry.index_json() if getattr(args, "json", False) else claims_registry.index_text())
        return 0
    import proofs

    for n in names:
        if claims_registry.get(n).certificate is None:  # unknown -> InputError naming the known ones
            raise InputError(f"claim {n!r} has no sympy certificate (it is fuzzed only); certified: {', '.join(proofs.REGISTRY)}")
    certs = proofs.certify(names or None)
    if getattr(args, "json", False):
        json.dump([c.to_dict() for c in certs], sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        print(format_table(certs))
    return 0
