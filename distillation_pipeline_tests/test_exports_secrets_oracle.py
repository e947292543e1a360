"""``find_secret`` answers exactly as it did before its gates were reorganised.

The gates only decide which detectors' patterns run; they must never change an answer. The
oracle below is the function as it was (frozen here): every detector's substring gates tested
on the text or its lower-cased copy, then the triggered detectors in index order, the first
accepted match winning. It reads the patterns and accept rules from the module, so the two
differ only in the gating. A second oracle runs every detector with no gate at all: a gate that
is not implied by its pattern would miss credentials, and shows up there.
"""

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from distillation_pipeline.exports import secrets
from distillation_pipeline.exports.secrets import DETECTOR_KINDS, find_secret
from distillation_pipeline_tests.test_exports_secrets import CASES
from distillation_pipeline_tests.text_strategies import joined_texts

# The substring gates before they were reorganised, per detector kind.
OLD_GATES: dict[str, tuple[str, ...]] = {
    "aws_access_key_id": ("AKIA", "ASIA", "ABIA", "ACCA", "A3T"),
    "github_token": ("ghp_", "gho_", "ghu_", "ghs_", "ghr_", "github_pat_"),
    "slack_token": ("xox",),
    "slack_webhook": ("hooks.slack.com",),
    "anthropic_api_key": ("sk-ant-",),
    "openai_api_key": ("sk-",),
    "stripe_secret_key": ("k_live_",),
    "google_api_key": ("AIza",),
    "private_key_block": ("-----BEGIN",),
    "json_web_token": ("eyJ",),
    "password_in_url": ("://",),
    "bearer_token": ("bearer",),
    "password_assignment": ("pass", "pwd"),
    "generic_api_key_assignment": ("key", "secret", "token"),
}
OLD_GATE_LIST: tuple[tuple[bool, str, int], ...] = tuple(
    (detector.lowered, gate, index)
    for index, detector in enumerate(secrets._DETECTORS)
    for gate in OLD_GATES[detector.kind]
)


def old_find_secret(text: str | None) -> str | None:
    """The frozen oracle: ``find_secret`` before its gates were reorganised."""
    if not text:
        return None
    lowered = text.lower()
    triggered: set[int] = set()
    for on_lowered, gate, index in OLD_GATE_LIST:
        if gate in (lowered if on_lowered else text):
            triggered.add(index)
    if not triggered:
        return None
    for index in sorted(triggered):
        detector = secrets._DETECTORS[index]
        for match in detector.pattern.finditer(lowered if detector.lowered else text):
            if detector.accept is None or detector.accept(match):
                return detector.kind
    return None


def ungated_find_secret(text: str | None) -> str | None:
    """Every detector in order, no gate: what any set of correct gates must answer."""
    if not text:
        return None
    lowered = text.lower()
    for detector in secrets._DETECTORS:
        for match in detector.pattern.finditer(lowered if detector.lowered else text):
            if detector.accept is None or detector.accept(match):
                return detector.kind
    return None


def assert_same(text: str) -> None:
    expected = old_find_secret(text)
    assert find_secret(text) == expected
    assert find_secret.__wrapped__(text) == expected  # past the per-text cache
    assert ungated_find_secret(text) == expected


def test_the_oracle_knows_every_detector() -> None:
    assert set(OLD_GATES) == set(DETECTOR_KINDS)


# A positive for every alternative of every pattern, built from parts like CASES.
_BODY = "a1B2c3D4e5" * 4
VARIANTS = [
    *(prefix + "Q3EXAMPLE7TESTKE" for prefix in ("AKIA", "ASIA", "ABIA", "ACCA", "A3TX", "A3T9")),
    *(f"gh{kind}_" + _BODY for kind in "pousr"),
    "github_pat_" + _BODY,
    *(f"xox{kind}-" + "1234567890-abcdef" for kind in "abposr"),
    *("sk-" + infix + _BODY for infix in ("", "proj-", "svcacct-", "admin-")),
    "sk-ant-api03-" + "Ab3dEf6h" * 5,
    *(kind + "k_live_" + "4eC39HqLyjWDarjtT1zdp7dc" for kind in "sr"),
    *(f"-----BEGIN {kind}PRIVATE KEY{block}-----" for kind in ("", "RSA ", "PGP ") for block in ("", " BLOCK")),
    *(f"{name}{op}hunter22" for name in ("password", "passwd", "pwd", "db_pass", "DB_PASS") for op in (":", "=", "=>")),
    *(f"{name}='Zx9vQ2mN8pL4kR7tY6wB'" for name in ("api_key", "client_secret", "auth_token", "cache_key")),
    *(f"{scheme}://app:s3cr3tPassw0rd@db" for scheme in ("postgres", "redis", "https", "git+ssh")),
]

# Pieces agents' logs are made of, around the gates: the detectors' own positives, look-alikes,
# assignment shapes, case variants (with the letters whose lower case is special: Kelvin sign,
# dotted I, long s), placeholders, URLs and unicode whitespace.
FRAGMENTS = [
    *CASES.values(),
    *VARIANTS,
    *(value.upper() for value in CASES.values()),
    *(value.lower() for value in CASES.values()),
    *(value[: len(value) // 2] for value in CASES.values()),
    *(value[len(value) // 2 :] for value in CASES.values()),
    "key", "KEY", "Key", "\u212aey", "api_key", "cache_key", "primary_key", "secret", "SECRET_KEY", "ſecret",
    "token", "Token", "TOKEN", "tokens", "access_token", "pass", "Pass", "password", "PASSWORD", "passwd",
    "db_pass", "pwd", "PWD", "bearer", "Bearer", "BEARER", "Authorization:", "İ", "ß", "ẞ",
    "=", "=>", ":", ": ", " = ", '"', "'", "`", "${DB_PASSWORD}", "<redacted>", "xxxxxxxx", "********",
    "hunter22", "get_password()", "os.environ['API_KEY']", "settings.SECRET_KEY_V2",
    "Zx9vQ2mN8pL4kR7tY6wB", "abcDEF1234567890ghiJKL", "a1B2c3D4e5a1B2c3D4e5a1B2c3D4e5a1B2c3",
    "sk-", "sk-ant-", "sk-proj-", "rk_live_", "sk_live_", "ghp_", "github_pat_", "gho_", "xoxb-", "xoxp-",
    "AKIA", "ASIA", "A3T", "A3TX", "AIza", "eyJ", "eyJhbGciOiJIUzI1NiJ9", "-----BEGIN", "-----BEGIN RSA " + "PRIVATE",
    "://", "postgres://", "https://", "user:", "@db.internal", "hooks.slack.com/services/", "T0000/B0000/",
    "services/router/provider_adapter.py", "the fix router provider cache key token retry handler tests pass build",
    "\u00a0", "\u2003", "\u3000", "\u2028", "\x85", "\t", "\n", "\r\n",
]
SEPARATORS = ["", "", " ", "\n", "\t", "=", ":", '"', "'", "_", "-", ".", "/", "\u00a0"]

def texts() -> st.SearchStrategy[str]:
    return joined_texts(FRAGMENTS, "akeystorcpwdbAKEYST3_-=: '\"\n", SEPARATORS, max_parts=12)


@st.composite
def mutated_cases(draw: st.DrawFn) -> str:
    """A positive with a character inserted, deleted, replaced or its case flipped."""
    text = draw(st.sampled_from(sorted(CASES.values()) + VARIANTS))
    for _ in range(draw(st.integers(1, 3))):
        at = draw(st.integers(0, len(text)))
        change = draw(st.sampled_from(["insert", "delete", "replace", "swapcase"]))
        char = draw(st.sampled_from(["", " ", "\n", ":", "=", "-", "_", "'", "x", "0", "K", "\u212a", "é"]))
        if change == "insert":
            text = text[:at] + char + text[at:]
        elif change == "delete":
            text = text[:at] + text[at + 1 :]
        elif change == "replace":
            text = text[:at] + char + text[at + 1 :]
        else:
            text = text[:at] + text[at:].swapcase()
    return text


SETTINGS = settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@SETTINGS
@given(texts())
@example("the token expires weekly; pass --key to the cli")
@example("api_key: " + "Zx9vQ2mN8pL4kR7tY6wB")
@example("PASSWORD = 'hunter22'")
@example("\u212aey = 'Zx9vQ2mN8pL4kR7tY6wB'")  # Kelvin sign: lower() makes it "key"
@example("api_ſecret = 'Zx9vQ2mN8pL4kR7tY6wB'")  # long s: casefold() would make it "secret", lower() does not
@example("PAßWORD: hunter22")
def test_same_answer_on_mixed_text(text: str) -> None:
    assert_same(text)


@SETTINGS
@given(mutated_cases())
def test_same_answer_on_mutated_credentials(text: str) -> None:
    assert_same(text)


@settings(max_examples=1000, deadline=None)
@given(st.text(max_size=80))
def test_same_answer_on_any_text(text: str) -> None:
    assert_same(text)


def test_variants_are_credentials() -> None:
    """So the tests below reach every alternative of every pattern (a cache key is not one)."""
    for variant in VARIANTS:
        assert (old_find_secret(variant) is None) == variant.startswith("cache_key"), variant


@pytest.mark.parametrize("separator", [" ", "\n", "", ": ", "="])
def test_first_detector_wins_for_every_pair_of_credentials(separator: str) -> None:
    for first in [*CASES.values(), *VARIANTS]:
        for second in [*CASES.values(), *VARIANTS]:
            assert_same(first + separator + second)


def test_assignment_gates_are_implied_by_their_patterns() -> None:
    """Every assignment the patterns take opens a gate: all names, quotes, spaces and operators."""
    names = ["password", "passwd", "pwd", "db_pass", "api_key", "secret", "token", "client_secret", "auth_token"]
    for name in names:
        for quote in ["", '"', "'"]:
            for space in ["", " ", "\t", "\u00a0 "]:
                for operator in ["=", "=>", ":"]:
                    for value in ["hunter22x", "Zx9vQ2mN8pL4kR7tY6wB", "'Zx9vQ2mN8pL4kR7tY6wB'"]:
                        assert_same(f"{name}{quote}{space}{operator}{space}{value}")
                        assert_same(f"{name.upper()}{quote}{space}{operator} {value}")
                    assert find_secret(f"{name}{quote}{space}{operator}{space}Zx9vQ2mN8pL4kR7tY6wB") is not None

