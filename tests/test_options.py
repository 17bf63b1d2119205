"""One run-options base (:class:`empirical.options.StudyOptions`): the four studies' option classes share
its fields and defaults, keep only their own, and are validated in one wording."""

from __future__ import annotations

import argparse
import dataclasses

import pytest

from boundcheck.errors import InputError
from empirical.options import DEFAULT_MODEL, SHARED_FIELDS, StudyOptions, shared_kwargs

pytestmark = pytest.mark.torch


def _studies():
    pytest.importorskip("torch")
    from empirical.audit.run import AuditOptions
    from empirical.audit.run import validate as audit_validate
    from empirical.experiment.runner import RunOptions, _validate
    from empirical.explain.run import ExplainOptions
    from empirical.explain.run import validate as explain_validate
    from empirical.sanity.run import SanityOptions
    from empirical.sanity.run import validate as sanity_validate

    return {
        "audit": (lambda **kw: AuditOptions(out=None, **kw), audit_validate, AuditOptions),
        "experiment": (lambda **kw: RunOptions(out="unused", **kw), _validate, RunOptions),
        "explain": (lambda **kw: ExplainOptions(out="unused", **kw), explain_validate, ExplainOptions),
        "sanity": (lambda **kw: SanityOptions(command="overtaking", out="unused", **kw), sanity_validate,
                   SanityOptions),
    }


#: a study may give a shared field its own default, documented in its class: these, and no others
OWN_DEFAULTS = {"AuditOptions": {"n_images": 1}, "SanityOptions": {"n_images": 4}}


def test_every_study_builds_on_the_base_and_declares_only_its_own_fields():
    for make, _, cls in _studies().values():
        assert issubclass(cls, StudyOptions)
        own = set(cls.__dict__.get("__annotations__", {}))
        assert own & set(SHARED_FIELDS) == set(OWN_DEFAULTS.get(cls.__name__, {})), cls.__name__
        opts = make()
        for f in dataclasses.fields(StudyOptions):
            expected = OWN_DEFAULTS.get(cls.__name__, {}).get(f.name, f.default)
            assert getattr(opts, f.name) == expected, (cls.__name__, f.name)


def test_shared_defaults():
    o = StudyOptions()
    assert (o.model, o.device, o.dtype, o.random_weights, o.pretrained, o.image_files, o.n_images, o.threads,
            o.progress) == (DEFAULT_MODEL, "auto", "float32", False, True, None, None, None, True)
    assert StudyOptions(random_weights=True).pretrained is False


@pytest.mark.parametrize("field, value, message", [
    ("device", "tpu", "--device must be auto, cpu, cuda or cuda:N, got 'tpu'"),
    ("dtype", "float16", "--dtype must be float32 or float64, got 'float16'"),
    ("threads", 0, "--threads must be an integer >= 1, got 0"),
    ("n_images", 0, "--n-images must be an integer >= 1, got 0"),
    ("seed", -1, "--seed must be an integer >= 0, got -1"),
    ("model", "", "--model must be a name or FILE.py:CALLABLE, got ''"),
])
def test_each_study_refuses_a_shared_option_in_the_same_words(field, value, message):
    for name, (make, validate, _) in _studies().items():
        with pytest.raises(InputError) as exc:
            validate(make(**{field: value}))
        assert str(exc.value) == message, name


def test_cuda_n_is_accepted_by_every_study_when_parsed():
    for make, _, _ in _studies().values():
        make(device="cuda:1").check_shared()


def test_weights_and_random_weights_exclude_each_other_in_every_study(tmp_path):
    w = tmp_path / "w.pth"
    w.write_bytes(b"")
    for name, (make, validate, _) in _studies().items():
        with pytest.raises(InputError, match="--random-weights and --weights exclude each other"):
            validate(make(weights=str(w), random_weights=True))


def test_shared_kwargs_reads_the_parsed_command_line():
    ns = argparse.Namespace(model="resnet18", weights=None, random_weights=True, image=["a.jpg"],
                            no_progress=True, device="cpu", threads=3, unrelated=1)
    assert shared_kwargs(ns) == {"model": "resnet18", "weights": None, "random_weights": True,
                                 "image_files": ("a.jpg",), "progress": False, "device": "cpu", "threads": 3}
    assert shared_kwargs(argparse.Namespace(image=None))["image_files"] is None
