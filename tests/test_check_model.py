"""``boundcheck check-model``: the operation table, the oracle and gradient errors,
conservation explained by the 0/0 cases, and the exit status."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from boundcheck.cli import main  # noqa: E402
from empirical.checkmodel import check_model  # noqa: E402

pytestmark = pytest.mark.torch
FIXTURES = Path(__file__).parent / "fixtures"


def _run(argv, capsys):
    rc = main(argv)
    cap = capsys.readouterr()
    return rc, cap.out, cap.err


def test_user_model_file_end_to_end_json(capsys):
    spec = f"{FIXTURES / 'user_lenet.py'}:build"
    rc, out, err = _run(["check-model", spec, "--input-size", "32", "--json"], capsys)
    assert rc == 0, err
    res = json.loads(out, parse_constant=lambda c: pytest.fail(f"non-finite {c} in JSON"))
    for key in ("model", "supported", "unsupported", "lrp0_oracle_rel_error", "gradient_rel_error", "depth"):
        assert key in res
    assert res["supported"] is True and res["unsupported"] == []
    assert res["lrp0_oracle_rel_error"] < 1e-10 and res["gradient_rel_error"] < 1e-12
    assert res["depth"] == 5  # conv, conv, fc1, fc2, fc3 (max pooling routes)
    treatments = {r["module"]: r["treatment"] for r in res["operations"]}
    assert treatments["conv1"] == "affine" and treatments["fc3"] == "affine"
    for rule, c in res["conservation"].items():
        assert c["unexplained_defects"] == 0, rule


def test_unsupported_user_model_exits_2_with_the_list(capsys):
    spec = f"{FIXTURES / 'user_unsupported.py'}:build"
    rc, out, err = _run(["check-model", spec, "--input-size", "8", "--json"], capsys)
    assert rc == 2
    res = json.loads(out)
    assert res["supported"] is False
    assert any("'rnn' of type LSTM" in u for u in res["unsupported"])
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_text_report_names_the_treatments(capsys):
    spec = f"{FIXTURES / 'user_lenet.py'}:build"
    rc, out, _ = _run(["check-model", spec, "--input-size", "32"], capsys)
    assert rc == 0
    assert "supported: yes" in out and "LRP-0 oracle relative error" in out and "max_pool2d" in out


@pytest.mark.parametrize("name,size", [
    ("resnet18", 32),
    pytest.param("densenet121", 32, marks=pytest.mark.extended),
    pytest.param("mobilenet_v3_small", 32, marks=pytest.mark.extended),
])
def test_conservation_defects_are_exactly_the_zero_denominator_cases(name, size):
    """Every rule op of LRP-beta_1 / LRP-gamma_100 conserves relevance to 1e-9 unless one
    of its outputs has a zero denominator (0/0 := 0); the LRP-0 identity and the
    gradient hold on the same input."""
    import torchvision

    from empirical.oracle import randomise_batchnorm_stats

    torch.manual_seed(0)
    model = randomise_batchnorm_stats(torchvision.models.get_model(name, weights=None).eval())
    res = check_model(model, name=name, input_size=size)
    assert res["supported"]
    assert res["lrp0_oracle_rel_error"] < 1e-8 and res["gradient_rel_error"] < 1e-10
    for rule, c in res["conservation"].items():
        assert c["rule_ops"] > 0
        assert c["unexplained_defects"] == 0, (rule, c)
        assert c["conserving"] + c["with_zero_denominator"] >= c["rule_ops"]


def test_low_memory_checks_give_the_same_verdicts():
    import torchvision

    torch.manual_seed(0)
    model = torchvision.models.resnet18(weights=None, num_classes=10).eval()
    a = check_model(model, input_size=32)
    b = check_model(model, input_size=32, low_memory=True)
    assert a["supported"] and b["supported"]
    assert a["lrp0_oracle_rel_error"] < 1e-10 and b["lrp0_oracle_rel_error"] < 1e-10
    for rule, c in a["conservation"].items():
        d = b["conservation"][rule]
        assert (c["rule_ops"], c["unexplained_defects"]) == (d["rule_ops"], d["unexplained_defects"]) and \
            d["unexplained_defects"] == 0, rule
