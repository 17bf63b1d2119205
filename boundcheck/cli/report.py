"""``boundcheck report``: Markdown report of the bounds for the paper's settings.

:func:`bounds_report_markdown` is pure (no I/O, no randomness) and is called by
the main job; the command writes it to ``--out`` (default stdout).

Settings ([P1] Section 6): LRP-beta with ``beta in {0, 1}``, LRP-gamma with
``gamma in {100, 1000}``, the depths ``n`` of :data:`boundcheck.networks.NETWORK_DEPTHS`,
deviations ``t in {0.01, 0.1}`` at ``delta = 0.05`` per component and with the
union bound over ``224 * 224`` pixels, and the l2 bound on ``s1`` (eq. (38)) for
``m in {25, 50, 100}``.
"""

from __future__ import annotations

import argparse
import sys

from boundcheck import bounds
from boundcheck.hoeffding import format_log10, format_number, hoeffding_samples, l2_deviation_bound_log10
from boundcheck.networks import INPUT_PIXELS, NETWORK_DEPTHS
from boundcheck.rule_bounds import value_range_log10
from boundcheck.paper import DELTA
from boundcheck.rules import Rule, lrp_beta, lrp_gamma

#: The rules of [P1] Section 6 (:class:`boundcheck.rules.Rule`; their bounds via :mod:`boundcheck.rule_bounds`).
SETTINGS: tuple[Rule, ...] = (lrp_beta(0.0), lrp_beta(1.0), lrp_gamma(100.0), lrp_gamma(1000.0))
DEVIATIONS: tuple[float, ...] = (0.01, 0.1)
SAMPLE_SIZES: tuple[int, ...] = (25, 50, 100)


def _name(rule: Rule) -> str:
    if "beta" in rule.params:
        return f"LRP-beta, beta = {rule.params['beta']:g}"
    return f"LRP-gamma, gamma = {rule.params['gamma']:g}"


def _m_cell(t: float, log_r: float, components: int) -> str:
    # the integer m of eq. (24), rounded up (exact for these ranges), in scientific notation
    m = hoeffding_samples(t, DELTA, value_range_log10=log_r, components=components)
    return format_number(m) if m >= 10**6 else f"{float(m):.2e}"


def bounds_report_markdown() -> str:
    """The Markdown report of the value ranges, sample sizes and l2 bounds (paper versus exact).

    Returns
    -------
    str
        Markdown; every number in scientific notation, computed in ``log10``
        space (no overflow).
    """
    nets = sorted(NETWORK_DEPTHS.items(), key=lambda kv: (kv[1], kv[0]))
    out: list[str] = []
    w = out.append
    w("# Value-range bounds and sample sizes for the paper's settings")
    w("")
    w("Value range `z_u - z_l = P_n + N_n` of one attribution entry over `n` affine layers:")
    w("*paper* = the closed forms eq. (31) (LRP-beta) and eq. (33) (LRP-gamma);")
    w("*exact* = the exact solution of the recursion the proofs of Lemma 7/8 establish,")
    w("`(1+2 beta)^n` and `(1+2 c_minus)^n` with `c_minus = sqrt(gamma)/(1+gamma-sqrt(gamma))`")
    w("(attained / approached by explicit ReLU networks, `lemma7_witness`, `lemma8_witness`).")
    w("LRP-gamma bounds hold only where condition (29) holds in every layer.")
    w("")
    w("Depths `n` (affine layers on the longest relevance path, `boundcheck.networks`): "
      + ", ".join(f"{k} = {v}" for k, v in nets) + ".")
    w("")
    w("## Value ranges (eq. 31 / eq. 33)")
    w("")
    w("| rule | network | n | range paper | range exact | looseness paper/exact |")
    w("|---|---|---:|---:|---:|---:|")
    for rule in SETTINGS:
        for net, n in nets:
            lp, le = value_range_log10(rule, n, "paper"), value_range_log10(rule, n, "exact")
            w(f"| {_name(rule)} | {net} | {n} | {format_log10(lp)} | {format_log10(le)} | {format_log10(lp - le)} |")
    w("")
    w(f"## Required samples m (eq. 24), delta = {DELTA:g}")
    w("")
    w(f"`m = (z_u - z_l)^2 ln(2 D/delta) / (2 t^2)` (rounded up to an integer); per component `D = 1`, "
      f"and with the union bound over all `D = 224 * 224 = {INPUT_PIXELS}` pixels.")
    w("")
    head = ["rule", "network", "n"]
    for t in DEVIATIONS:
        for D in ("1", "224^2"):
            for b in ("paper", "exact"):
                head.append(f"t={t:g}, D={D}, {b}")
    w("| " + " | ".join(head) + " |")
    w("|" + "---|" * 3 + "---:|" * (len(head) - 3))
    for rule in SETTINGS:
        for net, n in nets:
            cells = [_name(rule), net, str(n)]
            for t in DEVIATIONS:
                for D in (1, INPUT_PIXELS):
                    for b in ("paper", "exact"):
                        cells.append(_m_cell(t, value_range_log10(rule, n, b), D))
            w("| " + " | ".join(cells) + " |")
    w("")
    w(f"## l2 bound on s1 (eq. 38), delta = {DELTA:g}")
    w("")
    w("With probability `>= 1 - delta`, `s1 <= 2 B (1 + sqrt(2 ln(2/delta))) / sqrt(m)` where "
      "`B = P_n + N_n >= ||A||_1 >= ||A||_2` (triangle inequality eq. (36), Jensen, McDiarmid; "
      "`boundcheck.hoeffding.l2_deviation_bound`).")
    w("")
    head = ["rule", "network", "n"] + [f"m={m}, {b}" for m in SAMPLE_SIZES for b in ("paper", "exact")]
    w("| " + " | ".join(head) + " |")
    w("|" + "---|" * 3 + "---:|" * (len(head) - 3))
    for rule in SETTINGS:
        for net, n in nets:
            cells = [_name(rule), net, str(n)]
            for m in SAMPLE_SIZES:
                for b in ("paper", "exact"):
                    cells.append(format_log10(l2_deviation_bound_log10(DELTA, m, value_range_log10(rule, n, b))))
            w("| " + " | ".join(cells) + " |")
    w("")
    w("## Notes")
    w("")
    w("* LRP-beta with beta = 0: the map is non-negative and sums to at most 1, so the range is 1 at every depth "
      "(paper and exact agree).")
    c_plus, c_minus = bounds.lemma8_coefficients(100.0)
    w(f"* LRP-gamma: per layer the exact bound grows by `1 + 2 c_minus` "
      f"(gamma = 100: {1 + 2 * c_minus:.4f}; gamma = 1000: {1 + 2 * bounds.lemma8_coefficients(1000.0)[1]:.4f}), "
      f"the paper's by `2 b(gamma)` (gamma = 100: {2 * bounds.lemma8_b(100.0):.4f}); the factor 2 per layer "
      "of the paper's closed forms is the main source of looseness.")
    w("* The looseness factor of eq. (31) is `(2 (1+beta)/(1+2 beta))^(n-1)`, geometric in n: for beta = 1 it is "
      f"`(4/3)^(n-1)` = {format_log10(bounds.eq31_value_range_log10(1.0, 50) - bounds.eq31_value_range_log10(1.0, 50, 'exact'))} "
      "at n = 50, i.e. the paper's sample sizes are too large by its square.")
    w("")
    return "\n".join(out)


def _expectation_line(verdicts) -> str:
    """Which verdicts differ from those declared in :mod:`boundcheck.claims_registry`."""
    from boundcheck.claims_registry import CLAIMS

    off = [f"`{v.claim}` ({v.verdict}, declared {CLAIMS[v.claim].expected_fuzz})"
           for v in verdicts if v.verdict != CLAIMS[v.claim].expected_fuzz]
    return ("Verdicts differing from the declared expectation (`boundcheck prove --list`): "
            + (", ".join(off) if off else "none") + ".")


def add_arguments(parser: argparse.ArgumentParser, name: str) -> None:
    """``--out FILE`` (default stdout), ``--verdicts`` (append the fuzz verdict table)."""
    parser.add_argument("--out", default=None, help="write the Markdown report to FILE (default stdout)")
    parser.add_argument("--verdicts", action="store_true",
                        help="append the fuzz verdict table of every claim (boundcheck fuzz, about a minute)")
    parser.add_argument("--seed", type=int, default=0, help="fuzz seed for --verdicts (default 0)")


def run(args) -> int:
    """Write :func:`bounds_report_markdown` (and with ``--verdicts`` the fuzz verdicts)
    to ``--out`` or stdout."""
    if args.out is not None:
        from empirical.io import check_output_file

        check_output_file(args.out)  # before any work: a folder, a missing or read-only folder
    text = bounds_report_markdown()
    if args.verdicts:
        from boundcheck.fuzz.runner import run_claims, verdict_table_markdown

        verdicts = run_claims(seed=args.seed)
        text += "\n\n## Fuzz verdicts (hypothesis)\n\n" + verdict_table_markdown(verdicts)
        text += "\n\n" + _expectation_line(verdicts)
    if args.out is None:
        sys.stdout.write(text + "\n")
    else:
        with open(args.out, "w", encoding="utf-8") as fh:
            fh.write(text + "\n")
    return 0
