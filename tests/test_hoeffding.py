"""Tests of boundcheck.hoeffding: eq. (23)/(24), exact huge m, union bound, l2 bound, inputs."""

from __future__ import annotations

import math
import subprocess
import sys
from decimal import ROUND_CEILING, Context, Decimal

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from boundcheck import bounds
from boundcheck.errors import InputError
from boundcheck.hoeffding import (
    format_log10,
    format_number,
    hoeffding_deviation,
    hoeffding_deviation_log10,
    hoeffding_samples,
    hoeffding_samples_log10,
    int_to_str,
    l2_deviation_bound,
    len_digits,
)

FAST = settings(max_examples=60, deadline=None)


def _reference_m(t, delta, r, components=1, prec=600):
    """Independent eq. (24) at 600 digits (exact inputs as Decimals of the floats)."""
    ctx = Context(prec=prec)
    r, t, delta = Decimal(r), Decimal(t), Decimal(delta)
    ln = ctx.ln(ctx.divide(Decimal(2 * components), delta))
    v = ctx.divide(ctx.multiply(ctx.multiply(r, r), ln), ctx.multiply(2, ctx.multiply(t, t)))
    return int(v.to_integral_value(rounding=ROUND_CEILING))


def test_hand_value_rounded_up():
    # ln(40)/(2 * 0.01) = 184.44 -> 185
    m = hoeffding_samples(0.1, 0.05, 1.0)
    assert m == 185 and isinstance(m, int)
    assert hoeffding_deviation(0.05, 185, 1.0) == pytest.approx(math.sqrt(math.log(40) / 2 / 185))


@FAST
@given(
    t=st.floats(1e-4, 10.0),
    delta=st.floats(1e-6, 0.99),
    r=st.floats(1e-3, 1e6),
    components=st.integers(1, 10**5),
)
def test_eq23_and_eq24_are_inverse_and_m_is_minimal(t, delta, r, components):
    m = hoeffding_samples(t, delta, r, components)
    assert isinstance(m, int) and m >= 1
    # m samples reach t; m - 1 do not (unless m = 1 is already forced by the ceiling)
    assert hoeffding_deviation(delta, m, r, components) <= t * (1 + 1e-12)
    if m > 1 and m < 10**15:
        assert hoeffding_deviation(delta, m - 1, r, components) > t * (1 - 1e-12)
    assert hoeffding_samples_log10(t, delta, r, components) <= math.log10(m) + 1e-12


@FAST
@given(t=st.floats(1e-4, 1.0), delta=st.floats(1e-6, 0.5), log_r=st.floats(5.0, 150.0), components=st.integers(1, 10**5))
def test_huge_m_is_the_exact_ceiling(t, delta, log_r, components):
    r = 10.0**log_r
    m = hoeffding_samples(t, delta, r, components)
    assert m == _reference_m(t, delta, r, components)
    assert hoeffding_samples_log10(t, delta, r, components) == pytest.approx(math.log10(m), abs=1e-9)


def test_fifty_layer_beta_one_paper_range_needs_about_1e64_samples():
    r = bounds.eq31_value_range(1.0, 50)
    m = hoeffding_samples(0.01, 0.05, r)
    assert 10**64 < m < 10**65
    assert m == _reference_m(0.01, 0.05, r)
    assert math.log10(m) == pytest.approx(hoeffding_samples_log10(0.01, 0.05, r), abs=1e-12)
    # exact integer arithmetic check: m - 1 < r^2 ln(40) / (2 t^2) <= m with r = 3 * 2^98 exactly
    assert r == 3 * 2**98
    # log10 route (range given as a log10) agrees to float precision
    m2 = hoeffding_samples(0.01, 0.05, value_range_log10=bounds.eq31_value_range_log10(1.0, 50))
    assert abs(m2 - m) / m < 1e-12


def test_depth_10000_never_overflows():
    lr = bounds.eq31_value_range_log10(1.0, 10_000)
    m = hoeffding_samples(0.01, 0.05, value_range_log10=lr, components=224 * 224)
    log_m = hoeffding_samples_log10(0.01, 0.05, value_range_log10=lr, components=224 * 224)
    assert len_digits(m) == math.floor(log_m) + 1
    # above EXACT_DIGITS: an upper bound, within 1e-25 relative of the real value
    assert int_to_str(m)[:12] == format_log10(log_m, 12).replace(".", "")[:12]
    assert math.isfinite(hoeffding_deviation_log10(0.05, 100, value_range_log10=lr))
    with pytest.raises(InputError, match="log10"):
        hoeffding_deviation(0.05, 100, value_range_log10=lr)


def test_union_bound_equals_delta_over_components():
    for D in (1, 7, 224 * 224):
        assert hoeffding_samples(0.1, 0.05, 3.0, components=D) == _reference_m(0.1, 0.05, 3.0, D)
        assert hoeffding_deviation(0.05, 100, 3.0, components=D) == pytest.approx(3.0 * math.sqrt(math.log(2 * D / 0.05) / 2) / 10)
    assert hoeffding_samples(0.1, 0.05, 1.0, components=224 * 224) > hoeffding_samples(0.1, 0.05, 1.0)


def test_l2_bound_value_and_rate():
    B, delta = 2.0, 0.05
    expected = 2 * B * (1 + math.sqrt(2 * math.log(2 / delta))) / 5
    assert l2_deviation_bound(delta, 25, B) == pytest.approx(expected)
    assert l2_deviation_bound(delta, 100, B) == pytest.approx(expected / 2)


def test_l2_bound_holds_in_simulation():
    # maps with ||A||_2 <= ||A||_1 <= B: random signed vectors normalised to l1 norm B
    rng = np.random.default_rng(7)
    B, m, delta, d = 3.0, 25, 0.05, 40
    bound = l2_deviation_bound(delta, m, B)
    maps = rng.standard_normal((2000, 2, m, d)) * (rng.random((2000, 2, m, 1)) < 0.5)
    norms = np.abs(maps).sum(axis=-1, keepdims=True)
    maps = B * maps / np.where(norms == 0, 1.0, norms)
    s1 = np.linalg.norm(maps[:, 0].mean(axis=1) - maps[:, 1].mean(axis=1), axis=-1)
    assert np.mean(s1 > bound) <= delta


def test_formatting():
    assert format_number(999_999) == "999999"
    assert format_number(10**6) == "1.00e+06"
    assert format_number(16671939568596619104124982064549193623062401159707537689638574516) == "1.67e+64"
    assert format_number(10**5000 * 4) == "4.00e+5000"
    assert format_log10(64.22198612741882) == "1.67e+64"
    assert format_log10(-math.inf) == "0"
    assert format_log10(2.99999999) == "1.00e+03"
    assert int_to_str(10**4500 + 1).endswith("0001") and len(int_to_str(10**4500)) == 4501


@pytest.mark.parametrize(
    "call",
    [
        lambda: hoeffding_samples(0.1, 0.0, 1.0),
        lambda: hoeffding_samples(0.1, 1.0, 1.0),
        lambda: hoeffding_samples(0.1, -0.5, 1.0),
        lambda: hoeffding_samples(0.0, 0.05, 1.0),
        lambda: hoeffding_samples(-1.0, 0.05, 1.0),
        lambda: hoeffding_samples(0.1, 0.05, 0.0),
        lambda: hoeffding_samples(0.1, 0.05, 1.0, components=0),
        lambda: hoeffding_samples(0.1, 0.05),
        lambda: hoeffding_samples(0.1, 0.05, 1.0, value_range_log10=0.0),
        lambda: hoeffding_samples("0.1", 0.05, 1.0),
        lambda: hoeffding_samples(float("nan"), 0.05, 1.0),
        lambda: hoeffding_deviation(0.05, 0, 1.0),
        lambda: hoeffding_deviation(0.05, 2.5, 1.0),
        lambda: hoeffding_deviation(1.5, 10, 1.0),
        lambda: l2_deviation_bound(0.05, 0, 1.0),
        lambda: l2_deviation_bound(0.05, 10, 0.0),
        lambda: l2_deviation_bound(0.0, 10, 1.0),
    ],
)
def test_bad_inputs_raise_input_error(call):
    with pytest.raises(InputError):
        call()


def test_module_imports_only_the_standard_library():
    code = (
        "import sys, boundcheck.hoeffding; "
        "bad = [k for k in ('numpy', 'scipy', 'sympy', 'torch') if k in sys.modules]; "
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=_repo_root(), env=_env())


def _repo_root():
    import pathlib

    return str(pathlib.Path(__file__).resolve().parents[1])


def _env():
    import os

    env = dict(os.environ)
    env["PYTHONPATH"] = _repo_root() + os.pathsep + env.get("PYTHONPATH", "")
    return env
