"""The shared option groups of the torch commands: parsing, defaults, aliases and every bad value."""

import argparse
import os
import sys

import pytest

torch = pytest.importorskip("torch")

from boundcheck.errors import InputError  # noqa: E402
from empirical import cliargs  # noqa: E402
from empirical.engine import PAPER_METHODS  # noqa: E402

LENET = os.path.join(os.path.dirname(__file__), "fixtures", "user_lenet.py")


class _Parser(argparse.ArgumentParser):
    """Like the CLI's parser: an argparse error is one InputError line."""

    def error(self, message):
        raise InputError(f"{self.prog}: {message}")


def _parser():
    p = _Parser(prog="cmd")
    cliargs.add_model_args(p)
    cliargs.add_image_args(p)
    cliargs.add_device_args(p)
    cliargs.add_methods_arg(p)
    cliargs.add_out_arg(p)
    cliargs.add_threads_arg(p)
    return p


def _parse(tmp_path, *argv):
    return _parser().parse_args(["--out", str(tmp_path / "out"), *argv])


def _bad(tmp_path, *argv, match=None):
    with pytest.raises(InputError, match=match) as ei:
        _parse(tmp_path, *argv)
    assert "\n" not in str(ei.value)
    return str(ei.value)


def test_defaults(tmp_path):
    a = _parse(tmp_path)
    assert (a.model, a.weights, a.random_weights, a.num_classes, a.input_size, a.mean, a.std) == (
        "efficientnet-lite0", None, False, None, None, None, None)
    assert (a.images, a.image, a.imagenet_val, a.labels, a.n_images) == (None, None, None, None, None)
    assert (a.device, a.dtype, a.allow_tf32, a.low_memory) == ("auto", "float32", False, False)
    assert a.methods == tuple(PAPER_METHODS) and a.threads is None and a.out == str(tmp_path / "out")
    assert not (tmp_path / "out").exists()  # checked, not created
    assert cliargs.device_from_args(a).type == ("cuda" if torch.cuda.is_available() else "cpu")
    assert cliargs.dtype_from_args(a) is torch.float32


def test_every_option_parses(tmp_path):
    a = _parse(tmp_path, "--model", f"{LENET}:build", "--weights", "w.pth", "--num-classes", "10",
               "--input-size", "32", "--mean", "0.5,0.5,0.5", "--std", "0.25, 0.5, 1", "--image", "a.png",
               "--image", "b.png", "--n-images", "2", "--device", "cpu", "--dtype", "float64", "--allow-tf32",
               "--low-memory", "--methods", "gradient,lrp_epsilon_1", "--threads", "3")
    assert a.model.endswith("user_lenet.py:build") and a.weights == "w.pth" and a.num_classes == 10
    assert a.input_size == 32 and a.mean == (0.5, 0.5, 0.5) and a.std == (0.25, 0.5, 1.0)
    assert a.image == ["a.png", "b.png"] and a.n_images == 2 and a.threads == 3
    assert cliargs.device_from_args(a) == torch.device("cpu") and cliargs.dtype_from_args(a) is torch.float64
    assert a.allow_tf32 and a.low_memory and a.methods == ("gradient", "lrp_epsilon_1")


def test_methods_comma_list_and_older_space_spelling(tmp_path):
    assert _parse(tmp_path, "--methods", "gradient", "squared_gradient").methods == ("gradient", "squared_gradient")
    assert _parse(tmp_path, "--methods", "gradient,", "lrp_gamma_100").methods == ("gradient", "lrp_gamma_100")
    assert _parse(tmp_path, "--methods", "gradient,gradient").methods == ("gradient",)
    p = _Parser(prog="cmd")
    cliargs.add_methods_arg(p, default=("gradient",))
    assert p.parse_args([]).methods == ("gradient",)
    assert "unknown method 'nope'" in _bad(tmp_path, "--methods", "gradient,nope")
    _bad(tmp_path, "--methods", ",", match="empty method list")


def test_random_init_is_a_deprecated_alias(tmp_path, capsys):
    assert _parse(tmp_path, "--random-weights").random_weights is True
    assert capsys.readouterr().err == ""
    assert _parse(tmp_path, "--random-init").random_weights is True
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "deprecated" in err and "--random-weights" in err
    _bad(tmp_path, "--random-weights", "--weights", "w.pth", match="not allowed with")
    _bad(tmp_path, "--weights", "w.pth", "--random-init", match="not allowed with")


@pytest.mark.parametrize("argv, match", [
    (("--threads", "0"), "positive integer"), (("--threads", "-2"), "positive integer"),
    (("--threads", "two"), "positive integer"), (("--n-images", "0"), "positive integer"),
    (("--num-classes", "-1"), "positive integer"), (("--input-size", "1.5"), "positive integer"),
    (("--mean", "0.5,0.5"), "three"), (("--mean", "a,b,c"), "three"), (("--std", "0.2,0,0.2"), "positive"),
    (("--mean", "nan,0,0"), "finite"), (("--device", "tpu"), "must be auto, cpu, cuda or cuda:N"), (("--dtype", "float16"), "invalid"),
])
def test_bad_values_are_one_line(tmp_path, argv, match):
    _bad(tmp_path, *argv, match=match)


def test_cuda_requested_without_cuda(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    a = _parse(tmp_path, "--device", "cuda")
    with pytest.raises(InputError, match="no CUDA device"):
        cliargs.device_from_args(a)
    assert cliargs.device_from_args(_parse(tmp_path)) == torch.device("cpu")  # auto


def test_out_folder_checked_before_any_work(tmp_path):
    (tmp_path / "file").write_text("x")
    _bad(tmp_path, "--out", str(tmp_path / "file"), match="existing file")
    _bad(tmp_path, "--out", str(tmp_path / "file" / "sub"), match="is a file")  # parent is a file
    assert cliargs.check_output_dir(tmp_path / "new" / "deeper") == tmp_path / "new" / "deeper"
    assert cliargs.check_output_dir(tmp_path) == tmp_path
    with pytest.raises(InputError, match="needs a folder"):
        cliargs.check_output_dir("")
    with pytest.raises(InputError):
        _parser().parse_args([])  # --out is required


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc is Linux")
def test_out_under_a_folder_where_nothing_can_be_created():
    with pytest.raises(InputError, match="not writable") as ei:  # even root cannot create files in /proc
        cliargs.check_output_dir("/proc/boundcheck-out")
    assert "\n" not in str(ei.value)


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root writes into read-only folders")
def test_out_read_only_folder(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        with pytest.raises(InputError, match="not writable"):
            cliargs.check_output_dir(ro / "out")
        with pytest.raises(InputError, match="not writable"):
            cliargs.check_output_dir(ro)
    finally:
        ro.chmod(0o755)


def test_model_and_images_from_args(tmp_path):
    from PIL import Image

    Image.new("RGB", (40, 40), (10, 200, 30)).save(tmp_path / "a.png")
    a = _parse(tmp_path, "--model", f"{LENET}:build", "--input-size", "32", "--num-classes", "4",
               "--image", str(tmp_path / "a.png"), "--std", "0.5,0.5,0.5")
    lm = cliargs.model_from_args(a)
    assert lm.input_size == 32 and len(lm.categories) == 4 and lm.std == (0.5, 0.5, 0.5)
    items, src = cliargs.images_from_args(a)
    assert [it.id for it in items] == ["a.png"] and src["kind"] == "files"
    a = _parse(tmp_path, "--model", "resnet18", "--random-init", "--images", str(tmp_path), "--n-images", "1")
    assert cliargs.model_from_args(a).weights_file == "random"
    assert len(cliargs.images_from_args(a)[0]) == 1
    with pytest.raises(InputError, match="closest: resnet18"):
        cliargs.model_from_args(_parse(tmp_path, "--model", "resnet-18"))


def test_help_lists_every_group(tmp_path, capsys):
    with pytest.raises(SystemExit):
        _parser().parse_args(["--help"])
    out = capsys.readouterr().out
    for opt in ("--model", "--weights", "--random-weights", "--num-classes", "--input-size", "--mean", "--std",
                "--images", "--image", "--imagenet-val", "--labels", "--n-images", "--device", "--dtype",
                "--allow-tf32", "--low-memory", "--methods", "--out", "--threads"):
        assert opt in out
    assert "--random-init" not in out  # deprecated alias: accepted, not advertised
