"""The command layer's contract: one spelling per shared option (every one passes through torchrun), old
spellings as deprecated aliases, a refused run leaves --out as it found it, nothing silent about the
weights, and JSON any reader can load."""

from __future__ import annotations

import argparse
import json
import re
import shlex
from pathlib import Path

import pytest

from boundcheck.cli import build_parser, main, restore_out, _out_entries

TORCH_COMMANDS = ("empirical", "audit", "sanity", "explain", "check-model")
README = Path(__file__).resolve().parents[1] / "README.md"


def _command_parsers(cmd: str) -> list[argparse.ArgumentParser]:
    p = build_parser(cmd)
    sub = next(a for a in p._actions if isinstance(a, argparse._SubParsersAction)).choices[cmd]
    out = [sub]
    for a in sub._actions:
        if isinstance(a, argparse._SubParsersAction):
            out += list(a.choices.values())
    return out


def _public_options(cmd: str) -> set[str]:
    """Every option string of a command that is documented (deprecated aliases are hidden), -h excluded."""
    found = set()
    for q in _command_parsers(cmd):
        for a in q._actions:
            if a.help == argparse.SUPPRESS or isinstance(a, argparse._HelpAction):
                continue
            found.update(o for o in a.option_strings if o.startswith("--"))
    return found


@pytest.fixture(scope="module")
def torchrun_options():
    pytest.importorskip("torch")
    from torch.distributed.run import get_args_parser

    return get_args_parser(), [o for a in get_args_parser()._actions for o in a.option_strings]


@pytest.mark.torch
@pytest.mark.parametrize("cmd", TORCH_COMMANDS)
def test_no_option_is_a_torchrun_abbreviation(cmd, torchrun_options):
    _, topts = torchrun_options
    clashes = {o: [t for t in topts if t.startswith(o)] for o in _public_options(cmd)}
    assert not {o: t for o, t in clashes.items() if t}, "torchrun would take these for its own options"


@pytest.mark.torch
@pytest.mark.parametrize("cmd", TORCH_COMMANDS)
def test_every_option_passes_through_torchrun(cmd, torchrun_options):
    parser, _ = torchrun_options
    opts = sorted(_public_options(cmd))
    argv = ["--nproc_per_node", "2", "-m", "boundcheck", cmd]
    for o in opts:
        argv += [o, "1"]
    ns = parser.parse_args(argv)
    assert ns.training_script == "boundcheck" and ns.training_script_args == argv[4:]


def _readme_torchrun_examples() -> list[str]:
    text = README.read_text(encoding="utf-8")
    return [m.group(1) for m in re.finditer(r"`(torchrun [^`]*--m-grid[^`]*)`", text)]


@pytest.mark.torch
def test_readme_torchrun_example_with_the_m_grid_parses_in_both_parsers(torchrun_options):
    examples = _readme_torchrun_examples()
    assert examples, "the README shows the torchrun command with --m-grid"
    parser, _ = torchrun_options
    for ex in examples:
        argv = shlex.split(ex.replace("K", "2"))[1:]
        ns = parser.parse_args(argv)
        assert ns.module and ns.training_script == "boundcheck"
        args = build_parser(ns.training_script_args[0]).parse_args(ns.training_script_args)
        assert args.m == (25, 50, 100) and args.command == "empirical"


@pytest.mark.torch
@pytest.mark.parametrize("cmd, old, new, value, dest, expect", [
    ("empirical", "--m", "--m-grid", "1,4", "m", (1, 4)),
    ("explain", "--m", "--m-grid", "1,4", "m", (1, 4)),
    ("explain", "--t", "--deviation", "0.5", "t", 0.5),
    ("empirical", "--augmentations", "--augmentation", "gaussian", "augmentations", ("gaussian",)),
    ("check-model", "--batch", "--batch-size", "3", "batch", 3),
    ("audit", "--rule", "--methods", "lrp_beta_1", "methods", ("lrp_beta_1",)),
])
def test_old_spellings_are_aliases_with_one_notice(cmd, old, new, value, dest, expect, capsys):
    pytest.importorskip("torch")
    base = [cmd] + (["--out", "x"] if cmd != "check-model" else [])
    a = build_parser(cmd).parse_args([*base, old, value])
    err = capsys.readouterr().err.splitlines()
    b = build_parser(cmd).parse_args([*base, new, value])
    assert getattr(a, dest) == getattr(b, dest) == expect
    assert err == [f"{old} is deprecated; use {new}"]
    assert capsys.readouterr().err == ""


# ------------------------------------------------------------------------------------ --out as found
def test_restore_out_removes_only_set_up_files(tmp_path):
    out = tmp_path / "run"
    before = _out_entries(out)
    out.mkdir()
    (out / "config.json").write_text("{}")
    (out / "records.jsonl").write_text("")
    (out / "img").mkdir()
    restore_out(out, before)
    assert not out.exists()
    out.mkdir()
    (out / "mine.txt").write_text("kept")
    before = _out_entries(out)
    (out / "config.json").write_text("{}")
    restore_out(out, before)
    assert sorted(p.name for p in out.iterdir()) == ["mine.txt"]


def test_restore_out_never_loses_computed_results(tmp_path):
    out = tmp_path / "run"
    before = _out_entries(out)
    out.mkdir()
    (out / "config.json").write_text("{}")
    (out / "results.jsonl").write_text('{"id": "a"}\n')
    restore_out(out, before)
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "results.jsonl"]


TEN_CLASS_NET = """
import torch
def build(num_classes=10):
    return torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1),
                               torch.nn.Flatten(), torch.nn.Linear(4, num_classes))
"""


@pytest.mark.torch
def test_refused_after_the_model_loads_leaves_out_as_found_and_the_corrected_run_works(tmp_path, capsys):
    """The shipped photos' labels (243, ...) do not fit a 10-class model: one line saying where the
    label came from; --out is not left holding a config that refuses the corrected re-run."""
    pytest.importorskip("torch")
    net = tmp_path / "net.py"
    net.write_text(TEN_CLASS_NET)
    out = tmp_path / "out"
    argv = ["explain", "--out", str(out), "--model", f"{net}:build", "--methods", "gradient_x_input",
            "--m-grid", "1", "--no-split-half", "--no-heatmaps", "--no-progress", "--threads", "1",
            "--input-size", "32"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "label 243" in err[0] and "file name" in err[0] and "--images" in err[0], err
    assert not out.exists()
    imgs = tmp_path / "imgs"
    imgs.mkdir()
    from empirical.data import foolbox_photos

    src = foolbox_photos(1)[0].path
    (imgs / "a.jpg").write_bytes(Path(src).read_bytes())
    assert main([*argv, "--images", str(imgs)]) == 0, capsys.readouterr().err
    assert (out / "config.json").is_file()


# ------------------------------------------------------------------------------------ nothing silent
@pytest.mark.torch
def test_audit_of_an_untrained_user_model_says_random_weights(tmp_path):
    pytest.importorskip("torch")
    from empirical.audit.run import AuditOptions, validate

    net = tmp_path / "net.py"
    net.write_text(TEN_CLASS_NET)
    opts = validate(AuditOptions(out=None, model=f"{net}:build"))
    assert opts.pretrained is False and opts.config()["random_weights"] is True
    assert validate(AuditOptions(out=None, model="resnet18")).pretrained is True


@pytest.mark.torch
def test_first_non_finite_layer_is_named(tmp_path):
    torch = pytest.importorskip("torch")
    from boundcheck.errors import InputError
    from empirical.models import resolve_model

    net = tmp_path / "sqrtnet.py"
    net.write_text("""
import torch
class Root(torch.nn.Module):
    def forward(self, x):
        return torch.sqrt(x - 1)
def build():
    return torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), Root(), torch.nn.AdaptiveAvgPool2d(1),
                               torch.nn.Flatten(), torch.nn.Linear(4, 3))
""")
    with pytest.raises(InputError, match=r"non-finite values on a zero input: first at 1 \(Root\)"):
        resolve_model(f"{net}:build")
    assert torch.get_num_threads() >= 1


@pytest.mark.torch
def test_memory_estimate_refuses_before_allocating():
    torch = pytest.importorskip("torch")
    from boundcheck.errors import InputError
    from empirical.models import check_input_memory

    model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU())
    est = check_input_memory(model, 64, "tiny", available=10**12)
    assert est > 0
    with pytest.raises(InputError, match=r"needs about .* GiB .* available; use a smaller --input-size"):
        check_input_memory(model, 100_000, "tiny", available=2**30)


# ------------------------------------------------------------------------------------ JSON and bars
def test_huge_integers_are_exact_strings_any_reader_loads():
    from empirical.io import JSON_INT_MAX_DIGITS, dumps_strict

    big = 7 * 10**5000 + 3
    doc = json.loads(dumps_strict({"m": big, "small": 10**20, "log10_n": 1.0, "n": -big}))
    assert doc["m"] == "7" + "0" * 4999 + "3" and doc["small"] == 10**20
    assert doc["m_log10"] == pytest.approx(5000.845, abs=1e-3)
    assert "n_log10" not in doc and doc["n"].startswith("-7")
    ok = 10**(JSON_INT_MAX_DIGITS - 1)  # 4300 digits: still a number
    assert json.loads(dumps_strict({"m": ok}))["m"] == ok


def test_progress_bar_is_cleared_on_an_error(capsys):
    pytest.importorskip("tqdm")
    from empirical.runtime import progress_bar

    with pytest.raises(RuntimeError):
        with progress_bar(True, total=10) as bar:
            bar.update(1)
            raise RuntimeError("boom")
    err = capsys.readouterr().err
    assert "%" not in err and "10" not in err


@pytest.mark.torch
@pytest.mark.extended
def test_readme_torchrun_example_runs_with_two_ranks(tmp_path):
    """The README's torchrun command, with the m grid, on a small user model and 4 photos: 2 CPU ranks,
    then the merged tables hold every image."""
    import os
    import subprocess
    import sys

    pytest.importorskip("torch")
    from empirical.data import foolbox_photos

    net = tmp_path / "net.py"
    net.write_text(TEN_CLASS_NET.replace("num_classes=10", "num_classes=1000"))
    imgs = tmp_path / "imgs"
    imgs.mkdir()
    for it in foolbox_photos(4):
        (imgs / Path(it.path).name).write_bytes(Path(it.path).read_bytes())
    out = tmp_path / "run"
    ex = _readme_torchrun_examples()[0]
    argv = shlex.split(ex.replace("K", "2"))
    # the README's folders are placeholders: this machine's small model, images and output folder
    keep = [a for a in argv[argv.index("run") + 1:]]
    script = ["--m-grid", keep[keep.index("--m-grid") + 1]]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "-m", "boundcheck", "empirical",
           "run", "--out", str(out), "--model", f"{net}:build", "--images", str(imgs), "--input-size", "32",
           "--methods", "gradient_x_input,lrp_beta_0", "--augmentation", "gaussian", "--device", "cpu",
           "--no-progress", *script]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(README.parent) + os.pathsep
               + os.environ.get("PYTHONPATH", ""))
    res = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    assert res.returncode == 0, res.stderr[-2000:]
    assert main(["empirical", "merge", "--out", str(out), "--no-plots"]) == 0
    ids = {json.loads(line)["id"] for f in out.glob("results*.jsonl") for line in f.read_text().splitlines()}
    assert len(ids) == 4 and script[1] == "25,50,100"


def test_third_party_warnings_do_not_reach_the_terminal():
    import warnings

    from empirical.runtime import quiet_third_party_warnings

    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        quiet_third_party_warnings()
        warnings.warn_explicit("internal note", FutureWarning, "serialization.py", 1, module="torch.serialization")
        warnings.warn_explicit("internal note", UserWarning, "_builder.py", 1, module="timm.models._builder")
        warnings.warn_explicit("the user's own", UserWarning, "net.py", 1, module="net")
    assert [str(w.message) for w in seen] == ["the user's own"]


def test_an_unreadable_image_is_named_once(tmp_path):
    pytest.importorskip("PIL")
    from empirical.data import UnreadableImage, load_image, no_readable_image

    bad = tmp_path / "b.png"
    bad.write_text("not an image")
    with pytest.raises(UnreadableImage) as e:
        load_image(bad)
    assert str(e.value).count("b.png") == 1 and "b.png" not in e.value.reason
    line = str(no_readable_image([{"path": str(bad), "error": e.value.reason}]))
    assert line.count("b.png") == 1 and line.startswith("no readable image (1 skipped; first: ")
