"""The one registry of the papers' claims: each claim declared once, with its checks and expected verdicts.

A claim (:class:`ClaimSpec`) has a name (used by ``boundcheck prove``,
``boundcheck fuzz``, the report and the JSON), the paper reference, a one-line
statement, the numeric bound function of :mod:`boundcheck` that implements it,
the sympy certificate (``"module:function"`` in :mod:`proofs`, loaded lazily),
whether :mod:`boundcheck.fuzz.claims` fuzzes it, and the expected verdicts:
certificate status (``proved`` / ``disproved`` / ``needs-assumption``) and fuzz
verdict (``HOLDS`` / ``FAILS`` / ``HOLDS_ONLY_UNDER``, at the CI size).

The checks bind to these declarations by name: :mod:`proofs` builds its
certificate table from :data:`CLAIMS`, and :func:`boundcheck.fuzz.claims` refuses
to register a fuzz check whose claim is not declared here with an expected fuzz
verdict (and takes its reference and statement from here); the tests
parametrise over this registry and compare with each declared verdict.

Importing this module imports neither sympy, hypothesis nor torch.

References
----------
[P1] Binder et al. (2025).  [P2] Supplement on sanity checks.
"""

from __future__ import annotations

import importlib
import json
from dataclasses import dataclass
from typing import Callable

from boundcheck.errors import InputError

CERTIFICATE_STATUSES = ("proved", "disproved", "needs-assumption")
FUZZ_VERDICTS = ("HOLDS", "FAILS", "HOLDS_ONLY_UNDER")

PROOF_TESTS = "tests/test_proofs.py"
FUZZ_TESTS = "tests/test_fuzz.py"


@dataclass(frozen=True)
class ClaimSpec:
    """One claim of [P1]/[P2] and where it is checked.

    Attributes
    ----------
    name : str
    reference : str
        Paper and equation numbers, e.g. ``"[P1] Lemma 7, eq. (28)"``.
    statement : str
        One line.
    bound : str or None
        The function of :mod:`boundcheck` implementing the bound (dotted path,
        optionally with the argument that selects the form).
    certificate : str or None
        ``"proofs.module:function"`` returning a :class:`proofs.certificate.Certificate`.
    expected_certificate : str or None
        Expected certificate status (with ``certificate``).
    expected_fuzz : str or None
        Expected fuzz verdict; set iff :mod:`boundcheck.fuzz.claims` fuzzes the claim.
    """

    name: str
    reference: str
    statement: str
    bound: str | None = None
    certificate: str | None = None
    expected_certificate: str | None = None
    expected_fuzz: str | None = None

    @property
    def fuzzed(self) -> bool:
        return self.expected_fuzz is not None

    @property
    def bound_function(self) -> str | None:
        """The dotted path of :attr:`bound` without its argument note."""
        return None if self.bound is None else self.bound.split("(", 1)[0]

    @property
    def tests(self) -> tuple[str, ...]:
        """The test files that check the declared verdicts."""
        return tuple(t for t, on in ((PROOF_TESTS, self.certificate), (FUZZ_TESTS, self.fuzzed)) if on)

    def load_certificate(self) -> Callable:
        """The certificate function (imports its :mod:`proofs` module, hence sympy)."""
        if self.certificate is None:
            raise InputError(f"claim {self.name!r} has no sympy certificate")
        module, func = self.certificate.split(":")
        return getattr(importlib.import_module(module), func)

    def to_dict(self) -> dict:
        return {
            "claim": self.name,
            "reference": self.reference,
            "statement": self.statement,
            "bound": self.bound,
            "certificate": self.certificate,
            "expected_certificate": self.expected_certificate,
            "fuzz": self.name if self.fuzzed else None,
            "expected_fuzz": self.expected_fuzz,
            "tests": list(self.tests),
        }


#: name -> ClaimSpec, in declaration order.
CLAIMS: dict[str, ClaimSpec] = {}


def declare(name: str, reference: str, statement: str, *, bound: str | None = None,
            certificate: str | None = None, expected_certificate: str | None = None,
            expected_fuzz: str | None = None) -> ClaimSpec:
    """Declare one claim (once); see :class:`ClaimSpec`.

    Raises
    ------
    ValueError
        On a duplicate name, an unknown expected verdict, or a certificate without
        an expected status (or the reverse).
    """
    if name in CLAIMS:
        raise ValueError(f"claim {name!r} declared twice")
    if (certificate is None) != (expected_certificate is None):
        raise ValueError(f"claim {name!r}: a certificate needs an expected status and vice versa")
    if expected_certificate is not None and expected_certificate not in CERTIFICATE_STATUSES:
        raise ValueError(f"claim {name!r}: bad certificate status {expected_certificate!r}")
    if expected_fuzz is not None and expected_fuzz not in FUZZ_VERDICTS:
        raise ValueError(f"claim {name!r}: bad fuzz verdict {expected_fuzz!r}")
    spec = ClaimSpec(name, reference, statement, bound, certificate, expected_certificate, expected_fuzz)
    CLAIMS[name] = spec
    return spec


def get(name: str) -> ClaimSpec:
    """The declared claim ``name``; :class:`InputError` naming the known ones otherwise."""
    try:
        return CLAIMS[name]
    except KeyError:
        raise InputError(f"unknown claim {name!r}; known: {', '.join(CLAIMS)}") from None


def certified() -> list[str]:
    """Names of the claims with a sympy certificate, in declaration order."""
    return [c.name for c in CLAIMS.values() if c.certificate is not None]


def fuzzed() -> list[str]:
    """Names of the fuzzed claims, in declaration order."""
    return [c.name for c in CLAIMS.values() if c.fuzzed]


# --------------------------------------------------------------------------- the index


def index_markdown() -> str:
    """The claim index as a Markdown table: claim, paper result, bound function,
    certificate, fuzz claim, expected verdicts, tests."""
    lines = ["| claim | paper result | statement | bound function | certificate (expected) | fuzz (expected) | tests |",
             "|---|---|---|---|---|---|---|"]
    for c in CLAIMS.values():
        cert = f"`{c.certificate}` ({c.expected_certificate})" if c.certificate else "-"
        fz = f"`{c.name}` ({c.expected_fuzz})" if c.fuzzed else "-"
        bound = f"`{c.bound}`" if c.bound else "-"
        tests = ", ".join(f"`{t}`" for t in c.tests)
        stmt = c.statement.replace("|", "\\|")
        lines.append(f"| `{c.name}` | {c.reference} | {stmt} | {bound} | {cert} | {fz} | {tests} |")
    return "\n".join(lines)


def index_text() -> str:
    """The claim index as a plain-text table for the terminal."""
    rows = [("claim", "paper result", "bound function", "certificate", "fuzz", "tests")]
    for c in CLAIMS.values():
        rows.append((c.name, c.reference, c.bound or "-",
                     f"{c.certificate} ({c.expected_certificate})" if c.certificate else "-",
                     f"{c.name} ({c.expected_fuzz})" if c.fuzzed else "-",
                     ", ".join(t.rsplit("/", 1)[-1] for t in c.tests)))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    out = []
    for i, r in enumerate(rows):
        out.append("  ".join(x.ljust(w) for x, w in zip(r, widths)) + "  " + r[-1])
        if i == 0:
            out.append("  ".join("-" * w for w in widths) + "  " + "-" * 5)
    return "\n".join(out)


def index_json() -> str:
    """The claim index as a JSON list of :meth:`ClaimSpec.to_dict`."""
    return json.dumps([c.to_dict() for c in CLAIMS.values()], indent=2)


# --------------------------------------------------------------------------- the claims

_B = "boundcheck.bounds."

declare("thm3", "[P1] Theorem 3, eq. (16)-(17)",
        "For every relevance-conserving S x R matrix M, sqrt(R/S) is a singular value of M attained for the singular vector 1_S/sqrt(S).",
        bound=_B + "thm3_value", certificate="proofs.thm3:certificate", expected_certificate="disproved",
        expected_fuzz="FAILS")
declare("thm3_rayleigh", "[P1] Theorem 3 proof, eq. (17)",
        "1_S^T M M^T 1_S / S = R/S, hence sigma_max(M) >= sqrt(R/S) (conserving matrices and LRP matrices).",
        bound=_B + "thm3_rayleigh_quotient", certificate="proofs.thm3:rayleigh_certificate",
        expected_certificate="proved", expected_fuzz="HOLDS_ONLY_UNDER")
declare("thm4", "[P1] Theorem 4, eq. (49)-(50)",
        "sigma_max(M_beta) <= sqrt(R) sqrt((1+beta)^2+beta^2) <= sqrt(R)(1+sqrt(2) beta) for LRP-beta at any layer.",
        bound=_B + "thm4_singular_value_bound", certificate="proofs.thm4:certificate", expected_certificate="proved",
        expected_fuzz="HOLDS")
declare("cor5", "[P1] Corollary 5 (with Known Result 1, eq. (18))",
        "The singular values of lim_{gamma->oo} M_gamma are <= sqrt(R).",
        bound=_B + "cor5_singular_value_bound", certificate="proofs.cor5:certificate", expected_certificate="proved",
        expected_fuzz="HOLDS")
declare("kr1", "[P1] Known Result 1, eq. (10)",
        "lim_{gamma->oo} Att_gamma(g_a, z_b) = (w_ab z_b)_+ / sum_b' (w_ab' z_b')_+ (the LRP-beta(0) entry, 0/0 := 0).",
        bound="boundcheck.rules.transition_matrix", certificate="proofs.cor5:certificate_kr1",
        expected_certificate="needs-assumption", expected_fuzz="HOLDS_ONLY_UNDER")
declare("lemma7", "[P1] Lemma 7, eq. (28)",
        "LRP-beta: P_t <= 2^(t-1)(1+beta)^t and -N_t >= -2^(t-1) beta (1+beta)^(t-1) at every depth t (beta=0: [0,1]).",
        bound=_B + "lemma7_bounds(bound='paper')", certificate="proofs.lemma7:certificate",
        expected_certificate="proved", expected_fuzz="HOLDS")
declare("lemma7_exact", "[P1] Lemma 7 proof, recursion eq. (86), (101) solved exactly",
        "LRP-beta: P_t <= ((1+2beta)^t+1)/2 and N_t <= ((1+2beta)^t-1)/2 at every depth t.",
        bound=_B + "lemma7_bounds(bound='exact')", certificate="proofs.lemma7:certificate_exact",
        expected_certificate="proved", expected_fuzz="HOLDS")
declare("lemma8", "[P1] Lemma 8, eq. (29)-(30)",
        "LRP-gamma, gamma > 1, networks satisfying condition (29) in every layer: P_t <= 2^(t-1) c+ b^(t-1), -N_t >= -2^(t-1) b^(t-1)/(sqrt(gamma)-1).",
        bound=_B + "lemma8_bounds(bound='paper')", certificate="proofs.lemma8:certificate",
        expected_certificate="proved", expected_fuzz="HOLDS")
declare("lemma8_exact", "[P1] Lemma 8 proof, recursion eq. (181)-(182), (219) solved exactly",
        "LRP-gamma under (29): P_t <= ((1+2c-)^t+1)/2 and N_t <= ((1+2c-)^t-1)/2, c- = sqrt(gamma)/(1+gamma-sqrt(gamma)).",
        bound=_B + "lemma8_bounds(bound='exact')", certificate="proofs.lemma8:certificate_exact",
        expected_certificate="proved", expected_fuzz="HOLDS")
declare("lemma8_no_condition", "[P1] Lemma 8, eq. (30) without condition (29)",
        "The Lemma 8 bounds hold for LRP-gamma on any ReLU network (condition (29) dropped).",
        bound=_B + "lemma8_bounds(bound='paper')", expected_fuzz="FAILS")
declare("eq31", "[P1] eq. (31) (from Lemma 7)",
        "LRP-beta: for inputs x^(i) of one network, every attribution component varies within z_u - z_l = 2^(n-1)(1+2beta)(1+beta)^(n-1) (1 for beta=0).",
        bound=_B + "eq31_value_range(bound='paper')", certificate="proofs.ranges:certificate_eq31",
        expected_certificate="proved", expected_fuzz="HOLDS")
declare("eq31_exact", "[P1] eq. (31) with the exact solution of the Lemma 7 recursion",
        "LRP-beta: every attribution component varies within z_u - z_l <= (1+2beta)^n.",
        bound=_B + "eq31_value_range(bound='exact')", certificate="proofs.ranges:certificate_eq31_exact",
        expected_certificate="proved")
declare("eq33", "[P1] eq. (33) (from Lemma 8)",
        "LRP-gamma under (29): every attribution component varies within 2^(n-1) b^(n-1) (c+ + 1/(sqrt(gamma)-1)).",
        bound=_B + "eq33_value_range(bound='paper')", certificate="proofs.ranges:certificate_eq33",
        expected_certificate="proved", expected_fuzz="HOLDS")
declare("eq33_exact", "[P1] eq. (33) with the exact solution of the Lemma 8 recursion",
        "LRP-gamma under (29): every attribution component varies within ((1+gamma+sqrt(gamma))/(1+gamma-sqrt(gamma)))^n.",
        bound=_B + "eq33_value_range(bound='exact')", certificate="proofs.ranges:certificate_eq33_exact",
        expected_certificate="proved")
declare("hoeffding", "[P1] Known Result 6, eq. (22)-(24)",
        "eq. (23) and (24) are inverses, and P(|mean - E| >= t(delta)) <= delta for the exact binomial tail (d independent components, union bound).",
        bound="boundcheck.hoeffding.hoeffding_samples", certificate="proofs.hoeffding:certificate",
        expected_certificate="proved", expected_fuzz="HOLDS")
declare("kr9", "[P1] Known Result 9",
        "E||W||_2 = sqrt(R) sigma for R iid N(0, sigma^2) entries.",
        bound=_B + "kr9_paper_expected_norm", certificate="proofs.kr9:certificate", expected_certificate="disproved",
        expected_fuzz="FAILS")
declare("kr9_upper", "[P1] Known Result 9 (corrected to an inequality; Jensen)",
        "E||W||_2 = sigma sqrt(2) Gamma((R+1)/2)/Gamma(R/2) <= sqrt(R) sigma.",
        bound=_B + "kr9_exact_expected_norm", certificate="proofs.kr9:certificate_upper",
        expected_certificate="proved", expected_fuzz="HOLDS")
declare("sanity_thm1_ssim", "[P2] Theorem 1, proof B eq. (3)-(7)",
        "Over 0 <= sigma_AB <= sigma_A sigma_B, |SSIM| is minimal at sigma_AB = 0 and that minimum is <= C2/(sigma_A^2+sigma_B^2+C2).",
        certificate="proofs.sanity_ssim:certificate", expected_certificate="proved", expected_fuzz="HOLDS")
declare("sanity_thm2_overtaking", "[P2] Theorem 2, proof E eq. (21)-(36)",
        "With min XL >= K max XS: P(sum w_s x_s / sum w_l x_l >= 1) = 1 - CDF_gamma1(1) <= 1 - CDF_gamma2(K), gamma2 = sqrt(|XS|/|XL|).",
        # the tail bound holds as an inequality; eq. (35)-(36) "=" needs gamma1 = gamma2/K
        certificate="proofs.overtaking:certificate", expected_certificate="needs-assumption", expected_fuzz="HOLDS")
declare("sanity_thm3_spearman", "[P2] Theorem 3, proof C eq. (8)-(10)",
        "Among samples with rank covariance >= 0 the Spearman correlation is >= 0, with minimum 0 exactly at zero rank covariance.",
        certificate="proofs.sanity_spearman:certificate", expected_certificate="proved", expected_fuzz="HOLDS")
declare("sanity_thm3_rank_sign", "[P2] Section C, last paragraph",
        "sigma_R(A)R(B) >= 0 iff sigma_AB >= 0 (rank covariance and Pearson covariance have the same sign).",
        certificate="proofs.sanity_spearman:certificate_rank_sign", expected_certificate="disproved",
        expected_fuzz="FAILS")
declare("sanity_thm4_mse", "[P2] Theorem 4, proof D eq. (12)-(15)",
        "E[(A/E[A^2]^.5 - B/E[B^2]^.5)^2] = 2 - 2(sigma_AB + mu_A mu_B)/(E[A^2]E[B^2])^.5 <= 2 - 2 mu_A mu_B/(..) for sigma_AB >= 0, maximal at sigma_AB = 0.",
        certificate="proofs.sanity_mse:certificate", expected_certificate="proved", expected_fuzz="HOLDS")
declare("adaptive_beta", "[P2] A.2, eq. (1)-(2)",
        "beta = -N/(P+N) solves beta/(1+beta) = -N/P, with P = sum (w x)_+, N = sum (w x)_-.",
        bound="boundcheck.rules.adaptive_beta", certificate="proofs.adaptive_beta:certificate",
        expected_certificate="needs-assumption", expected_fuzz="HOLDS_ONLY_UNDER")
