"""``boundcheck check-model MODEL``: is a network supported, and is the engine exact on it?

For any model the resolver accepts (:func:`empirical.models.resolve_model`:
torchvision names, ``efficientnet-lite0``, ``FILE.py:build``,
``package.module:build``):

1. the operation table of the traced, canonicalised network, one row per node
   that carries data: module path, type, treatment (affine / pass / gate / route /
   attention / none / unsupported, from :data:`empirical.engine.kinds.KINDS`), the
   rule-op depth ``t`` of an affine node (relevance at its input is bounded by the
   depth-``t`` bounds, :mod:`empirical.audit.depth`) and a note; ``casts_overridden``
   lists the casts of input-dependent values to another floating dtype inside
   ``forward`` that the engine computes in its own dtype instead
   (:func:`empirical.engine.graph.casts_to_dtype`);
2. when every node is supported, on one random input (float64, seeded):
   the LRP-0 oracle error (:func:`empirical.oracle.compare_with_engine`: LRP-0
   with the bias in the denominators and a logit start against x times the
   modified gradient, computed by plain autograd independently of the engine),
   the gradient error against autograd on the unmodified model, and conservation
   per rule: at every rule op of LRP-beta_1 and LRP-gamma_100 (bias
   ``forward_only``) the relevance defect ``sum R_in - sum R_out`` is zero up to
   rounding except where an output has a zero denominator (the ``0/0 := 0``
   cases the audit counts).

Exit status 0 when the model is supported, 2 (with the list) when it is not.
"""

from __future__ import annotations

import json
import math

from boundcheck.errors import InputError

CONSERVATION_RULES = ("lrp_beta_1", "lrp_gamma_100")
#: relative conservation defect below which a rule op counts as conserving (float64)
CONSERVATION_TOL = 1e-9


def add_arguments(parser, name: str = "check-model") -> None:
    from empirical.cliargs import add_deprecated_alias, add_model_args, positive_int

    parser.add_argument("model_spec", metavar="MODEL", nargs="?", default=None,
                        help="the model (same forms as --model; default efficientnet-lite0)")
    add_model_args(parser, default=None)
    parser.add_argument("--seed", type=int, default=0, help="seed of the random input (default 0)")
    parser.add_argument("--batch-size", dest="batch", type=positive_int, default=1, metavar="B",
                        help="random inputs in the batch (default 1)")
    add_deprecated_alias(parser, "--batch", "--batch-size", dest="batch", type=positive_int)
    parser.add_argument("--no-oracle", dest="oracle", action="store_false", default=True,
                        help="only the operation table (no forward/backward pass)")
    parser.add_argument("--normalisation", choices=("affine", "centre", "pass"), default="affine",
                        help="treatment of unfoldable normalisations (Conventions.normalisation; default affine)")
    parser.add_argument("--low-memory", dest="low_memory", action="store_true", default=False,
                        help="the engine's low-memory mode for the float64 checks (Explainer(low_memory=True): "
                             "slower, within 3x the weights plus one gradient pass's activations)")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")


def model_spec_of(args) -> str:
    """The one model of ``check-model MODEL`` / ``--model SPEC``; both naming different models is refused."""
    from empirical.options import DEFAULT_MODEL

    if args.model_spec is not None and args.model is not None and args.model_spec != args.model:
        raise InputError(f"check-model: MODEL {args.model_spec!r} and --model {args.model!r} name different "
                         "models; give one")
    return args.model_spec or args.model or DEFAULT_MODEL


def run(args) -> int:
    import argparse

    from empirical.cliargs import model_from_args

    lm = model_from_args(argparse.Namespace(**{**vars(args), "model": model_spec_of(args)}))
    result = check_model(lm.model, name=lm.name, input_size=lm.input_size, seed=args.seed, batch=args.batch,
                         oracle=args.oracle, normalisation=args.normalisation, low_memory=args.low_memory)
    result["weights"] = lm.weights_file
    result["weights_kind"] = lm.weights_label
    if args.json:
        print(json.dumps(result, indent=2, allow_nan=False))
    else:
        print(to_text(result))
    if not result["supported"]:
        import sys

        first = result["unsupported"][0] if result["unsupported"] else "unsupported"
        why = result.get("error") or f"{len(result['unsupported'])} unsupported node(s); first: {first}"
        print(f"boundcheck: error: {lm.name}: {why}", file=sys.stderr)
        return 2
    return 0


def operation_table(gm, plan) -> list[dict]:
    """One row per data-carrying node of a planned graph (see the module docstring)."""
    from empirical.engine.kinds import KINDS

    mods = dict(gm.named_modules())
    rows = []
    for node in plan.nodes:
        p = plan.plans[node]
        if p.kind in ("input", "output", "meta", "const"):
            continue
        if node.op == "call_module":
            typ = type(mods[node.target]).__name__
        else:
            t = node.target
            typ = t if isinstance(t, str) else getattr(t, "__name__", str(t))
        k = KINDS[p.kind]
        rows.append({
            "node": node.name, "module": p.path, "type": typ, "kind": p.kind, "treatment": k.treatment,
            "depth": (plan.depth.get(node, 0) + k.depth) if k.depth else None, "note": p.note,
        })
    return rows


def _finite(v):
    return v if isinstance(v, (int, float)) and math.isfinite(v) else None


def conservation(explainer, x, rules=CONSERVATION_RULES) -> dict:
    """Per rule: rule ops, those conserving to :data:`CONSERVATION_TOL`, those with a
    0/0 case, and those that lose or create relevance WITHOUT one (must be 0)."""
    import torch

    from boundcheck.rules import parse_rule

    a = explainer.attribute(x, list(rules), record=True)
    out = {}
    for name in rules:
        rule = parse_rule(name)
        ops = conserving = with_zero = unexplained = 0
        worst = 0.0
        for rec in a.records[name]:
            if rec.pos_sum is None:
                continue  # attention modules (three steps inside): not checked here
            ops += 1
            r_out = float(rec.relevance_out_pos.sum() + rec.relevance_out_neg.sum())
            r_in = float(rec.relevance_in_pos.sum() + rec.relevance_in_neg.sum())
            scale = float(rec.relevance_out_pos.sum() - rec.relevance_out_neg.sum()) or 1.0
            defect = abs(r_in - r_out) / scale
            P, N = rec.pos_sum, rec.neg_sum
            zero = torch.zeros_like(P, dtype=torch.bool)
            for term, c in zip(rule.terms, rule.coefficients(None, None) if rule.adaptive_beta_max is None
                               else rule.coefficients(P, N)):
                if not torch.is_tensor(c) and c == 0.0:
                    continue
                D = term.parts[0] * P + term.parts[1] * N
                zero |= D == 0
            has_zero = bool(zero.any())
            with_zero += has_zero
            if defect <= CONSERVATION_TOL:
                conserving += 1
            elif not has_zero:
                unexplained += 1
                worst = max(worst, defect)
        out[name] = {"rule_ops": ops, "conserving": conserving, "with_zero_denominator": with_zero,
                     "unexplained_defects": unexplained, "worst_unexplained_rel_defect": _finite(worst)}
    return out


def check_model(model, name: str = "model", input_size: int = 224, seed: int = 0, batch: int = 1,
                oracle: bool = True, normalisation: str = "affine", low_memory: bool = False) -> dict:
    """The result of ``boundcheck check-model`` as a dict (JSON-safe; see the module docstring);
    ``low_memory``: the engine's low-memory mode in the float64 checks (the same results to rounding)."""
    import torch

    from boundcheck.rules import Conventions
    from empirical.engine.graph import canonicalise
    from empirical.engine.kinds import UnsupportedModuleError, plan_graph
    from empirical.engine.tracing import CAST_OVERRIDDEN

    conv = Conventions(normalisation=normalisation)
    result = {"model": name, "supported": False, "unsupported": [], "depth": None, "operations": [],
              "casts_overridden": [], "lrp0_oracle_rel_error": None, "gradient_rel_error": None, "conservation": None,
              "normalisation": normalisation, "input_shape": [batch, 3, input_size, input_size]}
    try:
        gm = canonicalise(model, torch.float64, torch.device("cpu"), (3, input_size, input_size))
        plan = plan_graph(gm, conv, collect=True)
    except UnsupportedModuleError as exc:
        result["unsupported"] = [str(exc)]
        result["oracle_reason"] = "not run: the model has unsupported nodes"
        return result
    result["operations"] = operation_table(gm, plan)
    result["casts_overridden"] = [f"{plan.plans[n].path} (node {n.name}): {n.meta[CAST_OVERRIDDEN]} -> float64"
                                  for n in plan.nodes if CAST_OVERRIDDEN in n.meta]
    result["unsupported"] = list(plan.unsupported)
    result["supported"] = not plan.unsupported
    result["depth"] = int(plan.depth[plan.nodes[0]])
    del gm, plan  # a float64 copy of the model: not held through the checks below (each builds its own)
    counts: dict = {}
    for row in result["operations"]:
        counts[row["treatment"]] = counts.get(row["treatment"], 0) + 1
    result["treatments"] = counts
    if not result["supported"]:
        result["oracle_reason"] = "not run: the model has unsupported nodes"
        return result
    if not oracle:
        result["oracle_reason"] = "not run (--no-oracle)"
        return result
    from empirical.engine import Explainer
    from empirical.oracle import compare_with_engine

    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, 3, input_size, input_size, generator=g, dtype=torch.float64)
    try:
        cmp = compare_with_engine(model, x, normalisation=normalisation, low_memory=low_memory)
    except InputError as exc:
        raise InputError(f"{name}: {exc}") from None
    result["lrp0_oracle_rel_error"] = _finite(cmp["lrp0_oracle_rel_error"])
    result["gradient_rel_error"] = _finite(cmp["gradient_rel_error"])
    if result["lrp0_oracle_rel_error"] is None or result["gradient_rel_error"] is None:
        # a supported model whose errors are not finite numbers is not a pass: say so, never "yes" and null
        from empirical.models import first_nonfinite_layer

        layer = first_nonfinite_layer(model, x)
        where = (f"non-finite values in the forward pass on the check's random input: first at {layer}"
                 if layer else "non-finite values in the backward pass")
        result["supported"] = False
        result["error"] = result["oracle_reason"] = (f"the oracle comparison is not finite (LRP-0 error "
                                 f"{cmp['lrp0_oracle_rel_error']}, gradient error {cmp['gradient_rel_error']}): "
                                                     f"{where}")
        return result
    result["target"] = cmp.get("target")
    ex = Explainer(model, conventions=conv, dtype=torch.float64, input_shape=tuple(x.shape[1:]),
                   low_memory=low_memory)
    result["conservation"] = conservation(ex, x)
    return result


def _fmt(v) -> str:
    return "n/a" if v is None else f"{v:.2e}"


def to_text(result: dict) -> str:
    """A readable report: the operation table and the checks."""
    lines = [f"model: {result['model']}  (input {tuple(result['input_shape'])}, normalisation={result['normalisation']})"]
    rows = result["operations"]
    if rows:
        w_mod = min(48, max(len(r["module"]) for r in rows))
        w_typ = min(28, max(len(r["type"]) for r in rows))
        lines.append(f"{'module':<{w_mod}}  {'type':<{w_typ}}  {'treatment':<11}  {'depth':>5}  note")
        for r in rows:
            d = "" if r["depth"] is None else str(r["depth"])
            lines.append(f"{r['module'][:w_mod]:<{w_mod}}  {r['type'][:w_typ]:<{w_typ}}  {r['treatment']:<11}  "
                         f"{d:>5}  {r['note']}")
    lines.append("")
    lines.append(f"supported: {'yes' if result['supported'] else 'NO'}")
    for u in result["unsupported"]:
        lines.append(f"  unsupported: {u}")
    if result.get("treatments"):
        lines.append("treatments: " + ", ".join(f"{k} {v}" for k, v in sorted(result["treatments"].items())))
    lines.append(f"depth n (rule ops on the longest relevance path): {result['depth']}")
    if result.get("casts_overridden"):
        lines.append(f"casts in forward() computed in float64 instead: {len(result['casts_overridden'])} "
                     f"({'; '.join(result['casts_overridden'][:4])}{' ...' if len(result['casts_overridden']) > 4 else ''})")
    if result.get("weights_kind"):
        lines.append(f"weights: {result['weights_kind']} ({result.get('weights')})")
    if result["lrp0_oracle_rel_error"] is not None or result["gradient_rel_error"] is not None:
        lines.append(f"LRP-0 oracle relative error (float64): {_fmt(result['lrp0_oracle_rel_error'])}")
        lines.append(f"gradient relative error vs autograd:   {_fmt(result['gradient_rel_error'])}")
    elif result.get("oracle_reason"):
        lines.append(f"LRP-0 oracle and gradient check: {result['oracle_reason']}")
    for rule, c in (result.get("conservation") or {}).items():
        lines.append(f"conservation {rule}: {c['conserving']}/{c['rule_ops']} rule ops conserve; "
                     f"{c['with_zero_denominator']} have 0/0 outputs; unexplained defects: {c['unexplained_defects']}")
    return "\n".join(lines)
