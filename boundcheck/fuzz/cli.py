"""``boundcheck fuzz [--claim NAME ...] [--examples N] [--seed S] [--json]``.

Prints one verdict per claim (HOLDS / FAILS / HOLDS_ONLY_UNDER) as a table and,
below it, every FAILS counterexample as exact small matrices and vectors;
``--json`` prints a list of objects instead (``claim``, ``verdict``,
``examples``, ``counterexample`` when one was found, ...).
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from boundcheck.errors import InputError


def add_arguments(parser: argparse.ArgumentParser, name: str = "fuzz") -> None:
    parser.add_argument("--claim", action="append", metavar="NAME",
                        help="claim to fuzz (repeatable; default: all)")
    parser.add_argument("--examples", type=int, default=None,
                        help="examples per claim (default: each claim's default, 100-300)")
    parser.add_argument("--seed", type=int, default=0, help="hypothesis seed (default 0)")
    parser.add_argument("--adversarial", choices=("default", "small", "none"), default="default",
                        help="budget of the Lemma 7/8 worst-case search (default: default)")
    parser.add_argument("--json", action="store_true", help="print the verdicts as JSON")


def run(args) -> int:
    if args.examples is not None and args.examples < 1:
        raise InputError(f"--examples must be >= 1, got {args.examples}")
    from boundcheck.fuzz.claims import get_claim
    from boundcheck.fuzz.runner import run_claims, verdict_table_text

    names = args.claim
    if names:
        for n in names:
            get_claim(n)  # unknown claim -> InputError before any work
    t0 = time.perf_counter()
    verdicts = run_claims(names, examples=args.examples, seed=args.seed, adversarial=args.adversarial)
    if args.json:
        json.dump([v.to_dict() for v in verdicts], sys.stdout, indent=2, allow_nan=False)
        sys.stdout.write("\n")
    else:
        print(verdict_table_text(verdicts))
        print(f"\n{len(verdicts)} claims, seed {args.seed}, {time.perf_counter() - t0:.1f} s")
    return 0
