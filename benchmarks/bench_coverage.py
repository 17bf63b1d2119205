"""Coverage of the engine over torchvision's classifiers and timm's model modules, checked against the LRP-0 oracle.

For each model (default: every name in ``torchvision.models.list_models(module=
torchvision.models)``; ``--models`` for a subset), in its OWN subprocess so that
memory peaks do not mix, with random weights and random norm-layer statistics at
the smallest square input the model takes
(:func:`empirical.oracle.torchvision_classifier`), one image:

* ``supported``: the engine builds and runs (else the one-line error);
* ``seconds_lrp_beta_1``: median (and ``_best``: fastest) seconds of
  ``Explainer(model).attribute(x, "lrp_beta_1")`` (float32, default conventions)
  over ``--reps`` calls after ``--warmup`` untimed ones (the first calls of a fresh
  process were up to 20x slower: MobileNetV3-Small 5.2, 3.3, 2.6, then 0.28 s), and ``peak_rss_mib``: the subprocess' resident-set high-water mark
  (``resource.getrusage``) after building the model, the float32 Explainer and
  these calls (measured before the float64 checks below; ``baseline_rss_mib``:
  the same mark after the imports, before the model is built);
* ``lrp0_oracle_rel_error`` and ``gradient_rel_error`` from
  :func:`empirical.oracle.compare_with_engine` (float64, ``Conventions(bias=
  "backward")``): LRP-0 with a logit start against ``x * modified gradient``, and
  the engine's gradient against plain autograd;
* ``parameters``: number of parameters.

The worker first calls ``empirical.runtime.retain_freed_memory()`` (glibc keeps
freed buffers, as in ``bench_engine.py``).  Writes a JSON file (no NaN/Infinity: a value that could not be measured is
``null`` with a ``*_reason``) and a Markdown table.

Usage::

    python benchmarks/bench_coverage.py --models squeezenet1_1,mnasnet0_5 --out coverage.json --md coverage.md
    python benchmarks/bench_coverage.py --out coverage.json --md coverage.md --timeout 1800   # all 80

``--zoo timm``: one model per model module of ``timm.models`` (:func:`timm_zoo`: the
smallest by parameter count, counted on the ``meta`` device, at its default
``pretrained_cfg['input_size']``), random weights (seed 0), norm-layer statistics and
affine parameters randomised (:func:`empirical.oracle.randomise_batchnorm_stats`),
degenerate initialisations redrawn (:func:`redraw_degenerate`: zero heads, ``1e-5``
layer-scale gammas), float64, one image; per model (:func:`timm_worker`): ``status``
(``exact`` / ``inexact`` / ``refused`` with the engine's one line / ``traceback`` with
its last line and frame / ``timeout`` / ``memory`` / ``crashed``), the LRP-0 and gradient
errors of :func:`empirical.oracle.compare_with_engine`, seconds and peak resident memory.
Each model runs in its own process, killed past ``--timeout`` (300 s) or ``--max-rss-gib``
(8); rows are appended to ``--jsonl`` as they finish and models already there are
skipped, so a sweep resumes; ``--report`` turns a JSONL file into the table and the
blocker histogram (refusals grouped by the operation or module type they name)::

    python benchmarks/bench_coverage.py --zoo timm --zoo-cache zoo.json --list
    python benchmarks/bench_coverage.py --zoo timm --zoo-cache zoo.json --threads 1 --jsonl sweep.jsonl
    python benchmarks/bench_coverage.py --zoo timm --models resnet10t,levit_128s --jsonl some.jsonl
    python benchmarks/bench_coverage.py --zoo timm --zoo-cache zoo.json --not-exact-in sweep.jsonl --jsonl rerun.jsonl
    python benchmarks/bench_coverage.py --zoo timm --report sweep.jsonl --md sweep.md
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import re
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from boundcheck.errors import InputError  # noqa: E402

TOLERANCE = {"lrp0_oracle_rel_error": 1e-8, "gradient_rel_error": 1e-10}


def _one_line(exc):
    text = f"{type(exc).__name__}: {exc}".strip().splitlines()
    return text[0][:300] if text else type(exc).__name__


def _finite(value, key, row):
    """Store ``value`` under ``key``, or ``None`` plus ``key_reason`` when it is not finite."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        row[key] = None
        row[key + "_reason"] = "not finite (the engine's map has NaN/Inf entries)"
    else:
        row[key] = value


def worker(name, reps, threads, warmup):
    """Measure one model (runs in its own process); returns the row as a dict."""
    import torch

    from empirical.runtime import retain_freed_memory

    from empirical.engine import Explainer
    from empirical.oracle import compare_with_engine, randomise_batchnorm_stats, torchvision_classifier

    retain_freed_memory()
    torch.set_num_threads(threads)
    row = {"model": name, "baseline_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    model, side = torchvision_classifier(name)
    row["input"] = [1, 3, side, side]
    row["parameters"] = sum(p.numel() for p in model.parameters())
    model = randomise_batchnorm_stats(model, torch.Generator().manual_seed(1))
    x = torch.randn(1, 3, side, side, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    try:
        ex = Explainer(model)
        x32 = x.float()
        for _ in range(warmup):
            ex.attribute(x32, "lrp_beta_1")
        times = []
        for _ in range(reps):
            t0 = time.perf_counter()
            ex.attribute(x32, "lrp_beta_1")
            times.append(time.perf_counter() - t0)
        row["seconds_lrp_beta_1"] = statistics.median(times)
        row["seconds_lrp_beta_1_best"] = min(times)
        del ex
    except Exception as exc:  # noqa: BLE001 - the one-line error is the measurement
        row.update(supported=False, error=_one_line(exc), seconds_lrp_beta_1=None)
    row["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    if row.get("supported") is False:
        row["lrp0_oracle_rel_error"] = row["gradient_rel_error"] = None
        return row
    try:
        r = compare_with_engine(model, x)
    except Exception as exc:  # noqa: BLE001
        row.update(supported=False, error=_one_line(exc), lrp0_oracle_rel_error=None, gradient_rel_error=None)
        return row
    row.update(supported=True, error=None)
    for key in TOLERANCE:
        _finite(r[key], key, row)
    row["exact"] = all(row[k] is not None and row[k] <= tol for k, tol in TOLERANCE.items())
    return row


def run_isolated(name, reps, threads, warmup, timeout):
    """Run :func:`worker` for ``name`` in a fresh interpreter; a crash or timeout becomes the row's error."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", name, "--reps", str(reps),
           "--threads", str(threads), "--warmup", str(warmup)]
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"model": name, "supported": None, "error": f"timed out after {timeout} s"}
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        return {"model": name, "supported": None, "error": f"worker exited {proc.returncode}: {tail[:300]}"}
    row = json.loads(lines[-1])
    row["wall_seconds"] = time.perf_counter() - t0
    return row


def _fmt(v, spec):
    return "–" if v is None else format(v, spec)


def markdown(rows):
    head = ("| model | params (M) | input | supported | LRP-0 vs oracle | gradient vs autograd | "
            "s / LRP-β1 call, fp32: median (best) | peak RSS (MiB) | error |\n"
            "|---|---:|---|---|---:|---:|---:|---:|---|\n")
    body = []
    for r in rows:
        sup = {True: "yes", False: "no", None: "?"}[r.get("supported")]
        if r.get("supported") and not r.get("exact", False):
            sup = "runs, not exact"
        size = "×".join(str(s) for s in r["input"][2:]) if r.get("input") else "–"
        params = r.get("parameters")
        err = (r.get("error") or "").replace("|", "\\|")
        body.append(f"| {r['model']} | {_fmt(params / 1e6 if params else None, '.1f')} | {size} | {sup} | "
                    f"{_fmt(r.get('lrp0_oracle_rel_error'), '.1e')} | {_fmt(r.get('gradient_rel_error'), '.1e')} | "
                    f"{_fmt(r.get('seconds_lrp_beta_1'), '.3f')} ({_fmt(r.get('seconds_lrp_beta_1_best'), '.3f')}) | {_fmt(r.get('peak_rss_mib'), '.0f')} | {err} |")
    return head + "\n".join(body) + "\n"


# ---------------------------------------------------------------------------- timm zoo
#: seconds per model and resident-memory ceiling of one timm worker (``--timeout``, ``--max-rss-gib``)
TIMM_TIMEOUT = 300
TIMM_MAX_RSS_GIB = 8.0
#: a parameter whose entries are all smaller than this in magnitude is redrawn (:func:`redraw_degenerate`)
DEGENERATE_ABS = 1e-3


def timm_zoo(modules=None, progress=None):
    """One representative per model module of ``timm.models``: the smallest by parameter count.

    Every name of ``timm.list_models()`` is mapped to its module through timm's
    registry (``timm.models._registry._model_to_module``) and built on the ``meta``
    device (no memory, no weights) to count its parameters; a model that fails to
    build there is recorded with its one-line reason and left out of the choice.
    Ties are broken by name.  The input size is the model's default
    ``pretrained_cfg['input_size']``.  ``modules``: only these module names (default all).

    Returns
    -------
    dict
        ``timm_version``, ``models`` (number listed), ``modules`` (number found),
        ``representatives``: one row per (requested) module, sorted by module name (``module``,
        ``model``, ``parameters``, ``input_size``, ``candidates``: models in the module,
        ``meta_failures``: those that would not build on ``meta``), and
        ``meta_failures``: ``[{model, module, reason}]`` over all modules.
    """
    import warnings

    import timm
    import torch
    from timm.models import _registry

    names = timm.list_models()
    by_module: dict = {}
    for name in names:
        by_module.setdefault(_registry._model_to_module[name], []).append(name)
    found = len(by_module)
    if modules is not None:
        unknown = sorted(set(modules) - set(by_module))
        if unknown:
            raise InputError(f"unknown timm model module(s) {unknown}")
        by_module = {m: by_module[m] for m in modules}
    reps, failures = [], []
    for i, module in enumerate(sorted(by_module)):
        best, failed = None, 0
        for name in sorted(by_module[module]):
            try:
                with warnings.catch_warnings(), torch.device("meta"):
                    warnings.simplefilter("ignore")
                    model = timm.create_model(name, pretrained=False)
                n = sum(p.numel() for p in model.parameters())
            except Exception as exc:  # noqa: BLE001 - the reason is the record
                failures.append({"model": name, "module": module, "reason": _one_line(exc)})
                failed += 1
                continue
            if best is None or n < best[0]:
                best = (n, name)
        if progress:
            progress(f"[{i + 1}/{len(by_module)}] {module}: {best[1] if best else 'none'}")
        row = {"module": module, "model": None, "parameters": None, "input_size": None,
               "candidates": len(by_module[module]), "meta_failures": failed}
        if best is not None:
            row.update(model=best[1], parameters=best[0],
                       input_size=list(_registry.get_pretrained_cfg_value(best[1], "input_size")))
        reps.append(row)
    return {"timm_version": timm.__version__, "models": len(names), "modules": found,
            "representatives": reps, "meta_failures": failures}


def load_zoo(cache):
    """:func:`timm_zoo`, read from the JSON file ``cache`` when it exists, else computed and written there."""
    if cache and Path(cache).exists():
        return json.loads(Path(cache).read_text())
    zoo = timm_zoo(progress=lambda s: print(s, file=sys.stderr, flush=True))
    if cache:
        Path(cache).write_text(json.dumps(zoo, indent=1, allow_nan=False))
    return zoo


def redraw_degenerate(model, generator=None):
    """Redraw, in place, every parameter whose entries are all below :data:`DEGENERATE_ABS` in magnitude.

    timm initialises classification heads to zero (``head_init_scale``, ``zero_init``),
    layer-scale gammas to ``1e-5``/``1e-6`` and class tokens to ``N(0, 1e-6)``; with such
    parameters every map is 0 (or its branch vanishes) and a comparison is trivially
    exact.  A 0- or 1-D parameter (a scale: gamma, gain) gets ``U(0.5, 1.5)`` entries, a
    larger one ``N(0, 1/fan_in)`` with ``fan_in = numel / shape[0]``.  Parameters named
    ``bias`` are left alone (a zero bias is an ordinary model).  Complements
    :func:`empirical.oracle.randomise_batchnorm_stats` (norm layers) and
    ``empirical.oracle._redraw_zero_linears`` (zero ``nn.Linear`` weights only).

    Returns the sorted names of the redrawn parameters.
    """
    import torch

    redrawn = []
    with torch.no_grad():
        for name, p in model.named_parameters():
            if not p.is_floating_point() or p.numel() == 0 or name.rsplit(".", 1)[-1] == "bias":
                continue
            if float(p.detach().abs().max()) >= DEGENERATE_ABS:
                continue
            if p.dim() <= 1:
                v = 0.5 + torch.rand(p.shape, generator=generator, dtype=torch.float64)
            else:
                fan_in = p.numel() // p.shape[0]
                v = torch.randn(p.shape, generator=generator, dtype=torch.float64) * fan_in ** -0.5
            p.copy_(v.to(p.dtype))
            redrawn.append(name)
    return sorted(redrawn)


def _frame(f, root):
    path = f.filename
    for marker in ("site-packages/", root):
        if marker in path:
            path = path.split(marker, 1)[1]
    return f"{path}:{f.lineno} in {f.name}"


def _where(exc):
    """``(innermost frame of exc's traceback inside this project (empirical/, boundcheck/), innermost frame)``,
    each ``file:line in function`` relative to the project or site-packages (``None`` when absent)."""
    import traceback

    frames = traceback.extract_tb(exc.__traceback__)
    root = str(Path(__file__).resolve().parents[1]) + "/"
    ours = [f for f in frames if f.filename.startswith(root) and "site-packages" not in f.filename
            and "/benchmarks/" not in f.filename]
    return (_frame(ours[-1], root) if ours else None), (_frame(frames[-1], root) if frames else None)


def timm_worker(name, threads):
    """Measure one timm model (runs in its own process); returns the row as a dict.

    ``status``: ``exact`` (both errors within :data:`TOLERANCE` and a non-zero
    reference map), ``inexact``, ``refused`` (an :class:`~boundcheck.errors.InputError`,
    which the engine's ``UnsupportedModuleError`` is: the one line the CLI prints), or
    ``traceback`` (any other exception: its last line, ``where``: the innermost frame in this
    project, ``raised_at``: the innermost frame); ``stage``
    says where it ended (``model``: timm's constructor, ``build``: the engine's
    ``Explainer``, ``compare``: :func:`empirical.oracle.compare_with_engine`).
    """
    import inspect
    import warnings

    import timm
    import torch

    from boundcheck.rules import Conventions
    from empirical.engine import Explainer
    from empirical.oracle import compare_with_engine, randomise_batchnorm_stats

    warnings.simplefilter("ignore")
    torch.set_num_threads(threads)
    row = {"model": name, "zoo": "timm", "baseline_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    t_all = time.perf_counter()
    stage = "model"
    try:
        from timm.models import _registry

        row["module"] = _registry._model_to_module.get(name)
        with torch.random.fork_rng():
            torch.manual_seed(0)
            model = timm.create_model(name, pretrained=False).eval()
        row["input"] = [1] + list(model.pretrained_cfg["input_size"])
        row["parameters"] = sum(p.numel() for p in model.parameters())
        model = randomise_batchnorm_stats(model, torch.Generator().manual_seed(1))
        row["redrawn"] = redraw_degenerate(model, torch.Generator().manual_seed(3))
        x = torch.randn(*row["input"], dtype=torch.float64, generator=torch.Generator().manual_seed(2))
        stage = "build"
        t0 = time.perf_counter()
        kwargs = {}
        if "input_shape" in inspect.signature(Explainer).parameters:  # an engine that traces on an example
            kwargs["input_shape"] = tuple(row["input"][1:])
        ex = Explainer(model, conventions=Conventions(bias="backward"), dtype=torch.float64, **kwargs)
        row["seconds_build"] = time.perf_counter() - t0
        del ex
        row["supported"] = True
        stage = "compare"
        t0 = time.perf_counter()
        r = compare_with_engine(model, x)
        row["seconds_compare"] = time.perf_counter() - t0
    except InputError as exc:
        row.update(status="refused", stage=stage, error=_one_line(exc))
        row.setdefault("supported", False)
        if stage == "build":
            every = every_unsupported(model, row["input"][-1])
            if every is not None:  # {blocker: [unsupported nodes, one example message]}
                row["blockers"] = {}
                for msg in every:
                    entry = row["blockers"].setdefault(blocker_of(msg), [0, msg[:300]])
                    entry[0] += 1
    except Exception as exc:  # noqa: BLE001 - a traceback is the measurement
        where, raised_at = _where(exc)
        row.update(status="traceback", stage=stage, error=_one_line(exc), where=where, raised_at=raised_at)
        row.setdefault("supported", False)
    else:
        row.update(stage="done", error=None)
        for key in TOLERANCE:
            _finite(r[key], key, row)
        _finite(r["logits_rel_error"], "logits_rel_error", row)
        if "model_logits_rel_error" in r:  # the model's own casts (e.g. float32 attention) honoured
            _finite(r["model_logits_rel_error"], "model_logits_rel_error", row)
        _finite(r["lrp0_reference_norm"], "lrp0_reference_norm", row)
        exact = all(row[k] is not None and row[k] <= tol for k, tol in TOLERANCE.items())
        row["status"] = "exact" if exact and (row["lrp0_reference_norm"] or 0) > 0 else "inexact"
    row["seconds"] = time.perf_counter() - t_all
    row["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return row


#: models above this many parameters get no full blocker list (check-model's float64 copy would add 8 bytes each)
EVERY_BLOCKER_MAX_PARAMETERS = 100_000_000


def every_unsupported(model, side):
    """Every unsupported node of ``model`` (``boundcheck check-model --no-oracle``'s list), not only the
    first one the engine's build stops at; ``None`` when that check itself fails or the model has more
    than :data:`EVERY_BLOCKER_MAX_PARAMETERS` parameters (its memory must not cost the row)."""
    from empirical.checkmodel import check_model

    if sum(p.numel() for p in model.parameters()) > EVERY_BLOCKER_MAX_PARAMETERS:
        return None
    try:
        return check_model(model, input_size=side, oracle=False)["unsupported"]
    except Exception:  # noqa: BLE001 - the first refusal is already recorded
        return None


def _rss_bytes(pid):
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def _start_forked(name, threads, path):
    """Fork a child that runs :func:`timm_worker` and writes its row to ``path``; returns the child's pid."""
    pid = os.fork()
    if pid == 0:  # the child: measure, write the row, leave without the parent's clean-up
        code = 0
        try:
            Path(path).write_text(json.dumps(timm_worker(name, threads), allow_nan=False))
        except BaseException as exc:  # noqa: BLE001 - reported through the exit status and stderr
            code = 1
            sys.stderr.write(_one_line(exc) + "\n")
        finally:
            os._exit(code)
    return pid


def preload_timm_worker():
    """Import what :func:`timm_worker` needs, so that forked workers start at once (no torch operation runs)."""
    import importlib

    for module in ("timm", "timm.models._registry", "boundcheck.rules", "empirical.engine", "empirical.oracle"):
        importlib.import_module(module)


def run_timm_isolated(name, threads, timeout, max_rss_gib, fork=False):
    """Run :func:`timm_worker` in its own process, killed past ``timeout`` s or ``max_rss_gib`` resident.

    ``fork=False``: a fresh interpreter (``--worker``); ``fork=True``: a fork of this
    process, which must have called :func:`preload_timm_worker` and must not run other
    threads (saves the 5-15 s of imports per model; the child's ``baseline_rss_mib``
    is then its resident size at the fork, and ``peak_rss_mib - baseline_rss_mib``, the
    memory the model itself took, is comparable between the two).  A timeout, a kill
    for memory or a crash without a result (segfault, OOM killer) becomes the row's
    ``status`` (``timeout`` / ``memory`` / ``crashed``), so one model never takes the
    sweep down.
    """
    import signal
    import tempfile

    t0 = time.perf_counter()
    limit = int(max_rss_gib * 2**30)
    peak = 0
    killed = None
    with tempfile.TemporaryDirectory() as tmp:
        out, err = Path(tmp, "out"), Path(tmp, "err")
        if fork:
            pid = _start_forked(name, threads, out)
            proc = None
        else:
            cmd = [sys.executable, str(Path(__file__).resolve()), "--zoo", "timm", "--worker", name,
                   "--threads", str(threads)]
            with open(out, "w") as fo, open(err, "w") as fe:
                proc = subprocess.Popen(cmd, stdout=fo, stderr=fe, text=True)
            pid = proc.pid
        while True:
            if proc is not None:
                returncode = proc.poll()
            else:
                done, status = os.waitpid(pid, os.WNOHANG)
                returncode = os.waitstatus_to_exitcode(status) if done else None
            if returncode is not None:
                break
            rss = _rss_bytes(pid)
            peak = max(peak, rss)
            if rss > limit:
                killed = ("memory", f"killed: resident memory {rss / 2**30:.1f} GiB over the {max_rss_gib:g} GiB limit")
            elif time.perf_counter() - t0 > timeout:
                killed = ("timeout", f"timed out after {timeout:g} s")
            if killed:
                os.kill(pid, signal.SIGKILL)
                if proc is not None:
                    proc.wait()
                else:
                    os.waitpid(pid, 0)
                break
            time.sleep(0.2)
        stdout = out.read_text() if out.exists() else ""
        stderr = err.read_text() if err.exists() else ""
    wall = time.perf_counter() - t0
    base = {"model": name, "zoo": "timm", "supported": None, "wall_seconds": wall,
            "polled_peak_rss_mib": peak / 2**20, "process": "fork" if fork else "spawn"}
    if killed:
        return {**base, "status": killed[0], "stage": None, "error": killed[1]}
    lines = [ln for ln in stdout.splitlines() if ln.startswith("{")]
    if returncode != 0 or not lines:
        tail = (stderr.strip().splitlines() or ["no output"])[-1]
        return {**base, "status": "crashed", "stage": None, "error": f"worker exited {returncode}: {tail[:300]}"}
    row = json.loads(lines[-1])
    row.update(wall_seconds=wall, process=base["process"])
    return row


def read_jsonl(path):
    """Rows of a sweep's JSONL file (the last row per model wins); ``[]`` when it does not exist."""
    rows = {}
    if Path(path).exists():
        for line in Path(path).read_text().splitlines():
            if line.strip():
                r = json.loads(line)
                rows[r["model"]] = r
    return list(rows.values())


_BLOCKER_PATTERNS = (
    (re.compile(r"unsupported operation '([^']+)'"), "{}"),
    (re.compile(r"unsupported module '[^']*' of type (\w+)"), "{}"),
    (re.compile(r"cannot be traced by torch\.fx \((\w+)"), "fx trace ({})"),
)


def blocker_of(message):
    """The operation or module type an unsupported-node message names (``sub``, ``LSTM``,
    ``fx trace (TraceError)`` ...); else the message's first 60 characters."""
    for pattern, fmt in _BLOCKER_PATTERNS:
        m = pattern.search(message)
        if m:
            return fmt.format(*m.groups())
    return message[:60]


def blocker(row):
    """:func:`blocker_of` a refusal's message; the exception type of a traceback."""
    err = row.get("error") or ""
    if row.get("status") == "traceback":
        return err.split(":", 1)[0]
    return blocker_of(err)


def _model_rss(row):
    """MiB the model itself took: the worker's peak resident size minus its size after the imports."""
    if row.get("peak_rss_mib") is not None and row.get("baseline_rss_mib") is not None:
        return row["peak_rss_mib"] - row["baseline_rss_mib"]
    return None


STATUS_ORDER = ("exact", "inexact", "refused", "traceback", "timeout", "memory", "crashed")


def timm_markdown(rows, zoo=None):
    """Status counts, the blocker histogram, the inexact models and the per-model table of a timm sweep (Markdown).

    The histogram groups the refusals by :func:`blocker` (and the tracebacks by exception
    type), largest group first, with the models each one affects and one example message.
    """
    order = {s: i for i, s in enumerate(STATUS_ORDER)}
    rows = sorted(rows, key=lambda r: (r.get("module") or "", r["model"]))
    counts: dict = {}
    for r in rows:
        counts[r.get("status")] = counts.get(r.get("status"), 0) + 1
    builds = sum(1 for r in rows if r.get("supported"))
    lines = ["**" + ", ".join(f"{counts[s]} {s}" for s in sorted(counts, key=lambda s: order.get(s, 9)))
             + f"** of {len(rows)} models" + (f" ({zoo['modules']} modules in timm {zoo['timm_version']})" if zoo else "")
             + f"; the engine builds on {builds}.", ""]
    hist: dict = {}
    for r in rows:
        if r.get("status") in ("refused", "traceback", "timeout", "memory", "crashed"):
            key = (blocker(r) if r["status"] in ("refused", "traceback") else r["status"], r["status"])
            hist.setdefault(key, []).append(r)
    if hist:
        lines += ["| blocker | status | models | which | example |", "|---|---|---:|---|---|"]
        for (key, status), group in sorted(hist.items(), key=lambda kv: (-len(kv[1]), kv[0])):
            ex = group[0]
            msg = (ex.get("error") or "").replace("UnsupportedModuleError: ", "").replace("|", "\\|")[:200]
            if ex.get("where"):
                msg += f" (at {ex['where']})"
            lines.append(f"| `{key}` | {status} | {len(group)} | {', '.join(sorted(r['model'] for r in group))} | "
                         f"{ex['model']}: {msg} |")
        lines.append("")
    every: dict = {}
    for r in rows:
        for key in r.get("blockers") or {}:
            every.setdefault(key, []).append(r)
    if every:
        lines += [("Every blocker of every refused model (the build stops at the first; `boundcheck check-model "
                   "--no-oracle` lists all): models having it, models it is the ONLY blocker of, unsupported nodes."),
                  "", "| blocker | models | only blocker of | nodes | which |", "|---|---:|---|---:|---|"]
        for key, group in sorted(every.items(), key=lambda kv: (-len(kv[1]), kv[0])):
            only = sorted(r["model"] for r in group if len(r["blockers"]) == 1)
            nodes = sum(r["blockers"][key][0] for r in group)
            lines.append(f"| `{key}` | {len(group)} | {len(only)}: {', '.join(only) or '–'} | {nodes} | "
                         f"{', '.join(sorted(r['model'] for r in group))} |")
        lines.append("")
    inexact = [r for r in rows if r.get("status") == "inexact"]
    if inexact:
        lines += ["Runs but not exact (LRP-0 vs oracle, gradient vs autograd, logits vs the model's in float64):", ""]
        for r in sorted(inexact, key=lambda r: -(r.get("lrp0_oracle_rel_error") or math.inf)):
            lines.append(f"- {r['model']} ({r.get('module')}): LRP-0 {_fmt(r.get('lrp0_oracle_rel_error'), '.1e')}, "
                         f"gradient {_fmt(r.get('gradient_rel_error'), '.1e')}, logits {_fmt(r.get('logits_rel_error'), '.1e')}"
                         + (f", reference norm {r['lrp0_reference_norm']:.1e}" if r.get("lrp0_reference_norm") is not None else ""))
        lines.append("")
    lines += [("| module | model | params (M) | input | status | LRP-0 vs oracle | gradient vs autograd | s | "
               "peak RSS above imports (MiB) | refusal / error |"), "|---|---|---:|---|---|---:|---:|---:|---:|---|"]
    for r in rows:
        size = "×".join(str(s) for s in r["input"][2:]) if r.get("input") else "–"
        params = r.get("parameters")
        err = (r.get("error") or "").replace("UnsupportedModuleError: ", "").replace("|", "\\|")
        if r.get("status") == "traceback" and (r.get("where") or r.get("raised_at")):
            err += f" (at {r.get('where') or r.get('raised_at')})"
        lines.append(f"| {r.get('module') or '–'} | {r['model']} | {_fmt(params / 1e6 if params else None, '.2f')} | "
                     f"{size} | {r.get('status')} | {_fmt(r.get('lrp0_oracle_rel_error'), '.1e')} | "
                     f"{_fmt(r.get('gradient_rel_error'), '.1e')} | {_fmt(r.get('seconds', r.get('wall_seconds')), '.1f')} | "
                     f"{_fmt(_model_rss(r), '.0f')} | {err} |")
    return "\n".join(lines) + "\n"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--zoo", choices=("torchvision", "timm"), default="torchvision",
                   help="which models: torchvision's classifiers (default) or one per timm model module")
    p.add_argument("--models", help="comma-separated model names (default: the whole zoo)")
    p.add_argument("--reps", type=int, default=3, help="timed LRP-beta_1 calls after one warm-up (default 3)")
    p.add_argument("--warmup", type=int, default=3, help="untimed LRP-beta_1 calls first (default 3; the first "
                   "calls of a fresh process were 10-20x slower)")
    p.add_argument("--threads", type=int, default=2, help="torch threads per model (default 2)")
    p.add_argument("--timeout", type=float, default=None, help="seconds per model before it is recorded as timed "
                   f"out (default 900; timm: {TIMM_TIMEOUT})")
    p.add_argument("--out", default="bench_coverage.json", help="JSON output path (torchvision zoo)")
    p.add_argument("--md", help="Markdown table output path (default: printed only)")
    g = p.add_argument_group("timm zoo")
    g.add_argument("--jsonl", help="timm: results, one JSON line per model, appended as each finishes; models "
                   "already in the file are skipped (resume)")
    g.add_argument("--zoo-cache", help="timm: JSON file of the representatives (read if it exists, else written)")
    g.add_argument("--list", action="store_true", help="timm: print the representatives and exit")
    g.add_argument("--not-exact-in", metavar="JSONL", help="timm: only the models whose status is not 'exact' in "
                   "this earlier sweep")
    g.add_argument("--jobs", type=int, default=1, help="timm: models measured at once (default 1)")
    g.add_argument("--spawn", action="store_true", help="timm: a fresh interpreter per model (default with "
                   "--jobs 1: a fork of the sweep process, which has imported timm and the engine once)")
    g.add_argument("--max-rss-gib", type=float, default=TIMM_MAX_RSS_GIB,
                   help=f"timm: a worker resident above this many GiB is killed (default {TIMM_MAX_RSS_GIB:g})")
    g.add_argument("--report", metavar="JSONL[,JSONL...]", help="timm: print (and with --md write) the table and "
                   "blocker histogram of a sweep's JSONL file(s), measuring nothing; with several files, a later "
                   "file's row for a model replaces an earlier one's (a re-run of the models not yet exact)")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    try:
        if a.reps < 1 or a.threads < 1 or a.warmup < 0 or a.jobs < 1 or not (a.timeout is None or a.timeout > 0) \
                or not a.max_rss_gib > 0:
            raise InputError("--reps, --threads and --jobs must be >= 1, --warmup >= 0, --timeout and "
                             "--max-rss-gib > 0")
        if a.zoo == "timm":
            return main_timm(a)
        if a.worker:
            print(json.dumps(worker(a.worker, a.reps, a.threads, a.warmup)), flush=True)
            return 0
        import torchvision

        known = torchvision.models.list_models(module=torchvision.models)
        names = known if not a.models else [m.strip() for m in a.models.split(",") if m.strip()]
        bad = [m for m in names if m not in known]
        if bad or not names:
            raise InputError(f"--models: unknown torchvision classifier(s) {bad or a.models!r}")
    except InputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    timeout = 900 if a.timeout is None else a.timeout
    rows = []
    for name in names:
        rows.append(run_isolated(name, a.reps, a.threads, a.warmup, timeout))
        r = rows[-1]
        print(f"{name}: supported={r.get('supported')} lrp0={r.get('lrp0_oracle_rel_error')} "
              f"grad={r.get('gradient_rel_error')} error={r.get('error')}", file=sys.stderr, flush=True)
        result = {"platform": platform.platform(), "python": platform.python_version(), "threads": a.threads,
                  "reps": a.reps, "warmup": a.warmup, "tolerance": TOLERANCE, "models": rows}
        Path(a.out).write_text(json.dumps(result, indent=1, allow_nan=False))  # after every model: nothing lost
    table = markdown(rows)
    if a.md:
        Path(a.md).write_text(table)
    print(table)
    return 0


def main_timm(a):
    """``--zoo timm``: list, sweep (resumable JSONL) or report; raises InputError on bad input."""
    if a.worker:
        print(json.dumps(timm_worker(a.worker, a.threads), allow_nan=False), flush=True)
        return 0
    if a.report:
        paths = [q for q in a.report.split(",") if q]
        missing = [q for q in paths if not Path(q).is_file()]
        if missing or not paths:
            raise InputError(f"--report: no such file(s) {missing or a.report!r}")
        rows: dict = {}
        for q in paths:  # a later file's row for a model replaces an earlier one's
            rows.update({r["model"]: r for r in read_jsonl(q)})
        table = timm_markdown(list(rows.values()), load_zoo(a.zoo_cache) if a.zoo_cache else None)
        if a.md:
            Path(a.md).write_text(table)
        print(table)
        return 0
    import importlib.util

    if importlib.util.find_spec("timm") is None:
        raise InputError("--zoo timm needs timm (pip install .[timm])") from None
    # --models needs no enumeration (several minutes) unless a cached one is at hand
    zoo = load_zoo(a.zoo_cache) if a.list or not a.models or (a.zoo_cache and Path(a.zoo_cache).exists()) else None
    if a.list:
        print(f"timm {zoo['timm_version']}: {zoo['models']} models in {zoo['modules']} modules; "
              f"{len(zoo['meta_failures'])} would not build on the meta device")
        for r in zoo["representatives"]:
            size = "x".join(map(str, r["input_size"][1:])) if r["input_size"] else "-"
            params = f"{r['parameters'] / 1e6:.2f}M" if r["parameters"] is not None else "-"
            print(f"{r['module']:<24} {r['model']!s:<40} {params:>9} {size:>9}  ({r['candidates']} models"
                  + (f", {r['meta_failures']} not on meta)" if r["meta_failures"] else ")"))
        return 0
    if not a.jsonl:
        raise InputError("--zoo timm needs --jsonl PATH (results are appended as each model finishes)")
    # cheapest first (parameters x input pixels), so that a partial sweep covers the most modules
    if zoo:
        reps = [r for r in zoo["representatives"] if r["model"]]
        names = [r["model"] for r in sorted(reps, key=lambda r: (r["parameters"] * math.prod(r["input_size"]),
                                                                  r["model"]))]
    if a.models:
        import timm

        names = [m.strip() for m in a.models.split(",") if m.strip()]
        bad = [m for m in names if m not in timm.list_models()]
        if bad or not names:
            raise InputError(f"--models: unknown timm model(s) {bad or a.models!r}")
    if a.not_exact_in:
        if not Path(a.not_exact_in).is_file():
            raise InputError(f"--not-exact-in: no such file {a.not_exact_in!r}")
        earlier = {r["model"]: r.get("status") for r in read_jsonl(a.not_exact_in)}
        names = [n for n in names if earlier.get(n) != "exact"]
    done = {r["model"] for r in read_jsonl(a.jsonl)}
    todo = [n for n in names if n not in done]
    print(f"{len(names)} models, {len(names) - len(todo)} already in {a.jsonl}, {len(todo)} to run",
          file=sys.stderr, flush=True)
    timeout = TIMM_TIMEOUT if a.timeout is None else a.timeout

    fork = a.jobs == 1 and not a.spawn  # forking from a thread pool is not safe
    if fork:
        preload_timm_worker()

    def one(name):
        return run_timm_isolated(name, a.threads, timeout, a.max_rss_gib, fork=fork)

    from concurrent.futures import ThreadPoolExecutor

    pool = ThreadPoolExecutor(max_workers=a.jobs) if a.jobs > 1 else None
    results = pool.map(one, todo) if pool else (one(n) for n in todo)
    with open(a.jsonl, "a") as fh:
        for row in results:
            fh.write(json.dumps(row, allow_nan=False) + "\n")  # after every model: a sweep resumes
            fh.flush()
            print(f"{row['model']}: {row.get('status')} lrp0={row.get('lrp0_oracle_rel_error')} "
                  f"grad={row.get('gradient_rel_error')} {row.get('wall_seconds', 0):.0f}s "
                  f"{(row.get('error') or '')[:160]}", file=sys.stderr, flush=True)
    if pool:
        pool.shutdown()
    table = timm_markdown(read_jsonl(a.jsonl), zoo)
    if a.md:
        Path(a.md).write_text(table)
    print(table)
    return 0

if __name__ == "__main__":
    sys.exit(main())
