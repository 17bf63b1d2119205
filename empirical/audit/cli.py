"""``boundcheck audit``: measured per-layer relevance against Lemma 7/8 and condition (29).

Usage::

    boundcheck audit [--model SPEC] [--weights FILE | --random-weights] [--input-size N --mean R,G,B --std R,G,B]
                     [--images DIR | --image FILE ... | --imagenet-val DIR [--labels FILE]] [--n-images 1]
                     [--rule lrp_beta_0 --rule lrp_beta_1 ...] [--gamma-sweep 1.5,2,4,10,100,1e3,1e4,1e6]
                     [--m-samples 4] [--augmentation gaussian --augmentation photometric] [--seed 0]
                     [--device auto|cpu|cuda] [--dtype float32|float64] [--allow-tf32] [--threads 2] --out DIR

Default: EfficientNet-Lite0 with its shipped weights on the first foolbox photo.
Random-initialised torchvision models (``--model resnet50 --random-weights``) are
legitimate for the LRP-beta bounds (they claim independence of the weights).

:func:`empirical.audit.run.run_audit` does the work (resumable: one record per
image in ``--out/results.jsonl``; a re-run continues); :func:`audit` is its
keyword-argument form and :func:`run_embedded_default` the entry point of the
main job.
"""

from __future__ import annotations

import argparse

from empirical.audit.run import (DEFAULT_AUGMENTATIONS, DEFAULT_GAMMAS, DEFAULT_RULES, AuditOptions, gamma_key,
                                 parse_gammas, run_audit)
from empirical.io import check_output_dir

__all__ = ["add_arguments", "run", "audit", "run_embedded_default", "DEFAULT_RULES", "DEFAULT_GAMMAS",
           "DEFAULT_AUGMENTATIONS"]


class _AppendCsv(argparse.Action):
    """``--augmentation a,b`` or ``--augmentation a --augmentation b``: the values, in order, without repeats."""

    def __call__(self, parser, namespace, values, option_string=None):
        old = tuple(getattr(namespace, self.dest, None) or ())
        new = tuple(t.strip() for t in str(values).split(",") if t.strip())
        if not new:
            parser.error(f"argument {option_string}: empty list")
        setattr(namespace, self.dest, tuple(dict.fromkeys((*old, *new))))


def add_arguments(parser, name: str = "audit") -> None:
    from empirical.cliargs import (add_deprecated_alias, add_device_args, add_image_args, add_methods_arg,
                                   add_model_args, add_out_arg, add_progress_arg, add_threads_arg)

    add_out_arg(parser)
    add_model_args(parser)
    parser.add_argument("--pretrained", dest="random_weights", action="store_false",
                        help="trained weights (the default; kept for older command lines)")
    add_image_args(parser, n_images_default=1)
    add_device_args(parser)
    add_threads_arg(parser, default=2)
    add_methods_arg(parser, default=DEFAULT_RULES)
    parser._option_string_actions["--methods"].help = (f"LRP-beta / LRP-gamma rules, comma-separated "
                                                       f"(default {','.join(DEFAULT_RULES)})")
    add_deprecated_alias(parser, "--rule", "--methods", dest="methods", append=True)
    parser.add_argument("--gamma-sweep", default=",".join(gamma_key(g) for g in DEFAULT_GAMMAS),
                        help="comma-separated gammas for condition (29)")
    parser.add_argument("--m-samples", type=int, default=4, help="augmented samples per augmentation (0: skip ranges)")
    parser.add_argument("--augmentation", dest="augmentation", action=_AppendCsv, default=None, metavar="A,B",
                        help=f"augmentations, comma-separated or repeated (default {','.join(DEFAULT_AUGMENTATIONS)})")
    parser.add_argument("--seed", type=int, default=0)
    add_progress_arg(parser)


def options_from_args(args) -> AuditOptions:
    from empirical.options import shared_kwargs

    return AuditOptions(
        out=args.out, rules=tuple(args.methods or DEFAULT_RULES), gammas=tuple(parse_gammas(args.gamma_sweep)),
        m_samples=args.m_samples, augmentations=tuple(args.augmentation or DEFAULT_AUGMENTATIONS),
        **shared_kwargs(args),
    )


def run(args) -> int:
    check_output_dir(args.out)
    res = run_audit(options_from_args(args))
    print(res["markdown"])
    print(f"written to {args.out}")
    return 0


def audit(model_name: str = "efficientnet-lite0", weights=None, pretrained: bool = True, images=None,
          n_images: int = 1, rules=DEFAULT_RULES, gammas=DEFAULT_GAMMAS, m_samples: int = 4,
          augmentations=DEFAULT_AUGMENTATIONS, seed: int = 0, device: str = "cpu", dtype: str = "float32",
          threads: int | None = 2, out_dir=None, model=None, progress: bool = False) -> dict:
    """Keyword form of :func:`empirical.audit.run.run_audit` (see :class:`~empirical.audit.run.AuditOptions`;
    ``pretrained=False`` is ``random_weights=True`` there)."""
    opts = AuditOptions(out=None if out_dir is None else str(out_dir), model=model_name, weights=weights,
                        random_weights=not pretrained, images=images, n_images=n_images, rules=tuple(rules),
                        gammas=tuple(gammas) if isinstance(gammas, (list, tuple)) else gammas, m_samples=m_samples,
                        augmentations=tuple(augmentations), seed=seed, device=device, dtype=dtype, threads=threads,
                        progress=progress)
    return run_audit(opts, model=model)


def run_embedded_default(out_dir, n_images: int = 1, m_samples: int = 4, device: str = "cpu", **kw) -> dict:
    """The embedded default for the main job: EfficientNet-Lite0 (shipped weights),
    the first foolbox photo, the four paper rules, the gamma sweep, K = 4 samples
    per augmentation.  Returns ``{"paths": {...}, "markdown": str, "wall_s": float}``."""
    res = audit(out_dir=out_dir, n_images=n_images, m_samples=m_samples, device=device, **kw)
    return {"paths": res.get("paths", {}), "markdown": res["markdown"], "wall_s": res["wall_s"],
            "summary": res["summary"], "depth": res["depth"]}
