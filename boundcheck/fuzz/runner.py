"""Run the claim registry under hypothesis and turn the outcome into verdicts.

For each claim (:mod:`boundcheck.fuzz.claims`):

1. *Phase 1* runs ``@given(claim.strategy())`` for ``examples`` examples with
   ``@seed(seed)``, ``settings(derandomize=False, database=None, deadline=None)``.
   The test fails on an example where the checker fails **and** the claim's
   condition (if any) holds.  A failure is shrunk by hypothesis; the last call
   of the test function is the shrunk (minimal) example, captured as the
   counterexample -> ``FAILS``.
2. If phase 1 passes but some examples failed the unconditional claim (all of
   them violating the condition, every condition-satisfying example holding),
   *phase 2* reruns with the same seed failing on any checker failure, to get a
   shrunk counterexample of the unconditional statement ->
   ``HOLDS_ONLY_UNDER`` with the condition text.
3. Otherwise -> ``HOLDS``.

``hypothesis.target`` steers generation towards large ``observed / bound``
ratios.  The same seed reproduces the same verdict and counterexample (the
checkers are deterministic; their Monte-Carlo parts are seeded by the example).
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from typing import Iterable

from hypothesis import HealthCheck, Verbosity, given, settings, target
from hypothesis import seed as hseed

from boundcheck.errors import InputError, require_int
from boundcheck.fuzz.claims import CLAIMS, Check, Claim, get_claim

@dataclass
class Verdict:
    """The outcome of fuzzing one claim (:meth:`to_dict` is JSON-ready).

    Attributes
    ----------
    claim, source, statement : str
        From the registry.
    verdict : {"HOLDS", "FAILS", "HOLDS_ONLY_UNDER"}
    examples : int
        Examples generated in phase 1 (for ``FAILS``: up to and including the
        first failing one; shrinking calls are not counted).
    seed : int
        The hypothesis seed; rerunning with it reproduces this verdict.
    max_ratio, max_ratio_by_depth
        Largest ``observed / bound`` (overall and per depth ``t``) over the
        examples in scope: those that hold (and satisfy the condition) for
        ``HOLDS``/``HOLDS_ONLY_UNDER``, all generated ones for ``FAILS``.
    condition : str or None
        The condition of a ``HOLDS_ONLY_UNDER`` verdict.
    counterexample, counterexample_details : dict or None
        The shrunk failing example as exact lists of floats (``repr``-exact) and
        the checker's diagnostics on it.  For ``HOLDS_ONLY_UNDER`` it refutes the
        unconditional statement and violates the condition.
    failures_seen : int
        Generated examples that failed the unconditional statement.
    adversarial : dict or None
        Lemma 7/8: the scipy worst-case search beside the paper and exact bounds.
    seconds : float
        Wall time of this claim.
    """

    claim: str
    verdict: str
    examples: int
    seed: int
    source: str = ""
    statement: str = ""
    max_ratio: float | None = None
    max_ratio_by_depth: dict[int, float] = field(default_factory=dict)
    condition: str | None = None
    counterexample: dict | None = None
    counterexample_details: dict | None = None
    failures_seen: int = 0
    adversarial: dict | None = None
    seconds: float = 0.0

    def to_dict(self) -> dict:
        d = {
            "claim": self.claim,
            "verdict": self.verdict,
            "examples": self.examples,
            "seed": self.seed,
            "source": self.source,
            "statement": self.statement,
            "max_ratio": _json_float(self.max_ratio),
            "max_ratio_by_depth": {str(k): _json_float(v) for k, v in sorted(self.max_ratio_by_depth.items())},
            "failures_seen": self.failures_seen,
            "seconds": round(self.seconds, 3),
        }
        if self.condition is not None:
            d["condition"] = self.condition
        if self.counterexample is not None:
            d["counterexample"] = _jsonable(self.counterexample)
            d["counterexample_details"] = _jsonable(self.counterexample_details)
        if self.adversarial is not None:
            d["adversarial"] = _jsonable(self.adversarial)
        return d


def _json_float(x):
    if x is None:
        return None
    x = float(x)
    return x if math.isfinite(x) else str(x)


def _jsonable(obj):
    """Replace non-finite floats by strings ("inf", "nan") so the output is strict JSON."""
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, float):
        return _json_float(obj)
    if hasattr(obj, "item") and not isinstance(obj, (str, bytes)):
        return _jsonable(obj.item())
    return obj


class _Violation(AssertionError):
    """Raised inside the hypothesis test when an example refutes the (conditional) claim."""


@dataclass
class _Phase:
    records: list = field(default_factory=list)  # (Check, condition satisfied) per generated example
    counterexample: object = None
    check: Check | None = None


def _run_phase(claim: Claim, examples: int, seed: int, conditional: bool, small: bool = False) -> _Phase:
    phase = _Phase()
    calls: list = []
    state = {"failed": False}

    def accepted(res: Check, cond: bool) -> bool:
        return res.ok or (conditional and not cond)

    @settings(max_examples=examples, derandomize=False, database=None, deadline=None,
              suppress_health_check=list(HealthCheck), report_multiple_bugs=False,
              verbosity=Verbosity.quiet, print_blob=False)
    @hseed(seed)
    @given((claim.small_strategy if small else claim.strategy)())
    def test(ex):
        res = claim.check(ex)
        cond = claim.condition.predicate(ex) if claim.condition is not None else True
        if not state["failed"] and not small:
            phase.records.append((res, cond))
            if res.ratio is not None and math.isfinite(res.ratio):
                target(float(res.ratio), label="observed/bound")
        if not accepted(res, cond):
            state["failed"] = True
            calls.append((ex, res))
            raise _Violation(claim.name)

    try:
        test()
    except _Violation:
        ex, res = calls[-1]  # hypothesis replays the shrunk example last
        phase.counterexample, phase.check = ex, res
    return phase


def _smaller(claim: Claim, found: _Phase, examples: int, seed: int, conditional: bool) -> _Phase:
    """After a failure, search the claim's small explicit strategy (if any) for a
    smaller exact counterexample; keep ``found`` when there is none."""
    if claim.small_strategy is None or found.counterexample is None:
        return found
    small = _run_phase(claim, examples, seed, conditional, small=True)
    return small if small.counterexample is not None else found


def run_claim(claim: Claim, examples: int | None = None, seed: int = 0, adversarial: str = "default") -> Verdict:
    """Fuzz one claim; ``adversarial`` in {"default", "small", "none"} sets the
    budget of the scipy worst-case search (Lemma 7/8 only)."""
    t0 = time.perf_counter()
    n = claim.default_examples if examples is None else examples
    p1 = _run_phase(claim, n, seed, conditional=True)
    v = Verdict(claim=claim.name, verdict="HOLDS", examples=len(p1.records), seed=seed,
                source=claim.source, statement=claim.statement)
    fails = [(r, c) for r, c in p1.records if not r.ok]
    v.failures_seen = len(fails)
    if p1.counterexample is not None:
        v.verdict = "FAILS"
        small = _smaller(claim, p1, n, seed, conditional=True)
        v.counterexample = claim.to_json(small.counterexample)
        v.counterexample_details = small.check.details
        scope = p1.records
    elif fails and claim.condition is not None:
        p2 = _smaller(claim, _run_phase(claim, n, seed, conditional=False), n, seed, conditional=False)
        v.verdict = "HOLDS_ONLY_UNDER"
        v.condition = claim.condition.text
        if p2.counterexample is not None:
            v.counterexample = claim.to_json(p2.counterexample)
            v.counterexample_details = dict(p2.check.details, satisfies_condition=bool(
                claim.condition.predicate(p2.counterexample)))
        scope = [(r, c) for r, c in p1.records if r.ok and c]
    else:
        scope = [(r, c) for r, c in p1.records if r.ok]
    ratios = [r.ratio for r, _ in scope if r.ratio is not None]
    v.max_ratio = max(ratios) if ratios else None
    by_depth: dict[int, float] = {}
    for r, _ in scope:
        for t, x in (r.ratio_by_depth or {}).items():
            by_depth[t] = max(by_depth.get(t, -math.inf), x)
    v.max_ratio_by_depth = by_depth
    if claim.adversarial is not None and adversarial != "none":
        v.adversarial = claim.adversarial(budget=adversarial, seed=seed)
    v.seconds = time.perf_counter() - t0
    return v


def run_claims(names: Iterable[str] | None = None, examples: int | None = None, seed: int = 0,
               adversarial: str = "default") -> list[Verdict]:
    """Fuzz the named claims (all when ``None``) and return one :class:`Verdict` each.

    Parameters
    ----------
    names : iterable of str, optional
        Claim names from :data:`boundcheck.fuzz.claims.CLAIMS`.
    examples : int >= 1, optional
        Examples per claim; default: each claim's ``default_examples``.
    seed : int
        Hypothesis seed; the same seed gives the same verdicts and counterexamples.
    adversarial : {"default", "small", "none"}
        Budget of the adversarial worst-case search of Lemma 7/8.

    Raises
    ------
    InputError
        For an unknown claim name or ``examples < 1``.
    """
    claims = [get_claim(n) for n in (list(CLAIMS) if names is None else list(names))]
    if examples is not None:
        examples = require_int("examples", examples, minimum=1)
    seed = require_int("seed", seed)
    if adversarial not in ("default", "small", "none"):
        raise InputError(f"adversarial must be 'default', 'small' or 'none', got {adversarial!r}")
    return [run_claim(c, examples, seed, adversarial) for c in claims]


# --------------------------------------------------------------------------- rendering


def _fmt_ratio(x) -> str:
    if x is None:
        return "-"
    if not math.isfinite(x):
        return str(x)
    return f"{x:.6g}"


def _short(obj, width: int = 70) -> str:
    s = json.dumps(_jsonable(obj), separators=(",", ":"))
    return s if len(s) <= width else s[: width - 3] + "..."


def _note(v: Verdict, width: int = 70) -> str:
    if v.verdict == "HOLDS_ONLY_UNDER":
        return f"only if {v.condition}"
    if v.verdict == "FAILS":
        return "counterexample " + _short(v.counterexample, width)
    if v.adversarial is not None:
        return (f"adversarial worst/paper {v.adversarial['max_worst_over_paper']:.3g}, "
                f"worst/exact {v.adversarial['max_worst_over_exact']:.3g}")
    return ""


def verdict_table_markdown(verdicts: list[Verdict]) -> str:
    """A Markdown table of the verdicts (claim, verdict, examples, max ratio,
    condition / counterexample), followed by the FAILS counterexamples and the
    adversarial worst cases."""
    lines = ["| claim | source | verdict | examples | max ratio | condition / counterexample |",
             "|---|---|---|---:|---:|---|"]
    for v in verdicts:
        note = _note(v, 90).replace("|", "\\|")
        lines.append(f"| `{v.claim}` | {v.source} | **{v.verdict}** | {v.examples} | {_fmt_ratio(v.max_ratio)} | {note} |")
    lines.append("")
    lines.append("Ratios are observed/bound (tightness); `<=` comparisons use a relative tolerance of 1e-9.")
    for v in verdicts:
        if v.counterexample is not None:
            lines += ["", f"**{v.claim}** ({v.verdict}) shrunk counterexample, seed {v.seed}:", "", "```",
                      format_exact(v.counterexample), "```"]
    adv = [v for v in verdicts if v.adversarial is not None]
    if adv:
        lines += ["", "| claim | rule | depth | width | worst P_t | paper bound | exact bound | worst/paper | worst/exact |",
                  "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
        for v in adv:
            for s in v.adversarial["searches"]:
                lines.append(f"| `{v.claim}` | {v.adversarial['rule']} | {s['depth']} | {s['width']} | "
                             f"{s['worst_positive_sum']:.6g} | {s['paper_bound']:.6g} | {s['exact_bound']:.6g} | "
                             f"{s['worst_over_paper']:.4f} | {s['worst_over_exact']:.4f} |")
    return "\n".join(lines)


def format_exact(obj, indent: str = "") -> str:
    """Counterexample as ``key = value`` lines; floats are printed with ``repr`` (exact)."""
    out = []
    if isinstance(obj, dict):
        for k, val in obj.items():
            if isinstance(val, list) and val and isinstance(val[0], dict):
                for i, item in enumerate(val):
                    out.append(f"{indent}{k}[{i}]:")
                    out.append(format_exact(item, indent + "  "))
            else:
                out.append(f"{indent}{k} = {val!r}")
    else:
        out.append(f"{indent}{obj!r}")
    return "\n".join(out)


def verdict_table_text(verdicts: list[Verdict]) -> str:
    """Plain-text table for the terminal, with each FAILS counterexample below it."""
    rows = [("claim", "verdict", "examples", "max ratio", "seconds", "condition / counterexample")]
    for v in verdicts:
        rows.append((v.claim, v.verdict, str(v.examples), _fmt_ratio(v.max_ratio), f"{v.seconds:.1f}", _note(v)))
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    lines = []
    for i, r in enumerate(rows):
        lines.append("  ".join(c.ljust(w) for c, w in zip(r[:5], widths)) + "  " + r[5])
        if i == 0:
            lines.append("-" * (sum(widths) + 2 * 5 + 26))
    lines.append("(ratio = observed/bound; '<=' checked with relative tolerance 1e-9)")
    for v in verdicts:
        if v.verdict == "FAILS":
            lines += ["", f"{v.claim}: FAILS, shrunk counterexample (seed {v.seed}):", format_exact(v.counterexample, "  ")]
    for v in verdicts:
        if v.max_ratio_by_depth:
            per = ", ".join(f"t={t}: {_fmt_ratio(x)}" for t, x in sorted(v.max_ratio_by_depth.items()))
            lines += ["", f"{v.claim}: max observed/bound by depth: {per}"]
    for v in verdicts:
        if v.adversarial is not None:
            lines += ["", f"{v.claim}: adversarial worst case ({v.adversarial['rule']}, {v.adversarial['method']}):"]
            for s in v.adversarial["searches"]:
                lines.append(f"  depth {s['depth']} width {s['width']}: worst P_t {s['worst_positive_sum']:.6g}"
                             f"  paper {s['paper_bound']:.6g} (ratio {s['worst_over_paper']:.4f})"
                             f"  exact {s['exact_bound']:.6g} (ratio {s['worst_over_exact']:.4f})"
                             f"  witness(width {s['witness_width']}) {s['witness_positive_sum']:.6g}")
    return "\n".join(lines)
