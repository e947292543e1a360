"""``cited_paths`` answers exactly as it did before it scanned only the tokens that hold a "/".

The oracle below is the function as it was (frozen here): URLs and diff prefixes removed, then
the candidate pattern tried at every position of the whole text, each candidate normalised and
checked. It reads the module's patterns and name rules, which this change left alone, so the two
differ only in where the candidate pattern runs and in the remembered verdict per candidate.
"""

import re
import sys

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from distillation_pipeline.exports import paths
from distillation_pipeline.exports.paths import cited_paths
from distillation_pipeline_tests.text_strategies import joined_texts


def old_cited_paths(text: str | None) -> list[str]:
    """The frozen oracle: ``cited_paths`` before the token scan."""
    if not text or "/" not in text:
        return []
    if "://" in text:
        text = paths._URL.sub(" ", text)
    if "--- a/" in text or "+++ b/" in text or "diff --git" in text:
        text = paths._DIFF_PREFIX.sub(lambda m: f"{m.group(1)} " if m.group(1) else "", text)
    found: set[str] = set()
    for match in paths._CANDIDATE.finditer(text):
        path = paths._normalise(match.group(1))
        components = path.split("/")
        if len(components) < 2 or any(not part or part in (".", "..") for part in components):
            continue
        if paths._is_file_name(components[-1]):
            found.add(path)
    return sorted(found)


def assert_same(text: str) -> None:
    expected = old_cited_paths(text)
    assert cited_paths(text) == expected
    if text and "/" in text:
        assert list(paths._cited_paths.__wrapped__(text)) == expected  # past the per-text cache


WHITESPACE = [chr(c) for c in range(sys.maxunicode + 1) if chr(c).isspace()]


def test_no_whitespace_can_be_inside_or_just_before_a_candidate() -> None:
    """What the token scan rests on: ``str.split`` cuts at characters that the candidate pattern
    never holds and that its lookbehind admits, like the start of a token."""
    inside = re.compile(r"[\w.\-@+/]")
    lookbehind_refuses = re.compile(r"[\w/.\-~$@]")
    for char in WHITESPACE:
        assert not inside.match(char) and not lookbehind_refuses.match(char), repr(char)
        assert "a" + char + "b" != "".join(("a" + char + "b").split())  # split cuts there


# Pieces of agents' text around paths: paths in every shape the pattern takes or refuses, URLs,
# diff headers, punctuation that may glue to a path, unicode letters, digits and whitespace.
FRAGMENTS = [
    "crates/gateway/src/main.rs", "a/b.py", "a/b.py:12", "a/b.py:12:3", "tests/test_router.py::test_fallback",
    "./x/y.rs", "../lib/util.ts", "./../a/b.md", ".../a/b.py", "docker/Dockerfile", "x/Makefile", "src/.env",
    "a/.gitignore", "a/b.PY", "a/b.tar.gz", "a//b.py", "a/./b.py", "a/../b.py", "a/b.py/", "a/b.",
    "/etc/hosts.conf", "~/notes/todo.md", "$HOME/x/y.py", "@scope/pkg/index.js", "a+b/c.md", "node_modules/@x/y.ts",
    "and/or", "2024/05/01", "application/vnd.api+json", "e.g./i.e.", "main.py", "config.yaml",
    "https://github.com/org/repo/blob/main/src/x.py", "http://x.io/a/b.py", "git+ssh://host/a/b.py",
    "file:///a/b.py", "://", "s3://bucket/k/v.json", "https://x.io/view?file=", "?q=", "&", ",",
    "--- a/src/x.py", "+++ b/src/x.py", "diff --git a/src/x.py b/src/x.py", "diff --git ", "b/x.py", "a/", "b/",
    "--- ", "+++ ", "---", "+++",
    "(", ")", "`", "'", '"', ",", ";", ":", "::", ".", "..", "]", "}", ">", "<", "[", "{", "~", "$", "@", "+",
    "-", "_", "/", "//", "./", "../", "#", "=", "*", "|", "\\",
    "é/ü.py", "日本/語.md", "٣/x.py", "x/٣.rs", "ß/ẞ.txt", "Ω/ω.go", "a\u0301/b.py",
    " ", "  ", "\n", "\r\n", "\t", "\u00a0", "\u2003", "\u3000", "\u2028", "\u2029", "\x85", "\x0b", "\x0c",
    "\x1c", "\x1d", "\x1e", "\x1f",
]
SEPARATORS = ["", "", "", " ", "\n", "\t", "/", ".", ":", "\u00a0", "\x1f", "\u3000"]

def texts() -> st.SearchStrategy[str]:
    return joined_texts(FRAGMENTS, "ab./-_:@+~$ \n\t\u00a0pyrsmdx", SEPARATORS, max_parts=14)


SETTINGS = settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@SETTINGS
@given(texts())
@example("Edited crates/gateway/src/main.rs:42 and ./src/app.py.")
@example("x\u00a0a/b.py y\x1fc/d.rs")
@example("diff --git a/src/x.py b/src/x.py\n--- a/src/x.py\n+++ b/src/x.py\n")
@example("see https://x.io/a/b.py, then a/b.py")
@example("https://x.io/view?file=src/a.py#L3 and x/y.md")  # a path inside a URL is not cited
def test_same_paths_on_mixed_text(text: str) -> None:
    assert_same(text)


@settings(max_examples=1000, deadline=None)
@given(st.text(alphabet="ab./-_:@+~$ \n\u00a0\x1cpyrsmd", max_size=40))
def test_same_paths_on_path_alphabet_text(text: str) -> None:
    assert_same(text)


@settings(max_examples=1000, deadline=None)
@given(st.text(max_size=60))
def test_same_paths_on_any_text(text: str) -> None:
    assert_same(text)


def test_the_remembered_verdict_per_candidate_does_not_change_answers() -> None:
    texts_ = ["see a/b.py and ./a/b.py:3", "(a/b.py)", "a/b.py, x/../y.md", "a/b.py"]
    warm = [cited_paths(text) for text in texts_]
    paths._file_path.cache_clear()
    paths._cited_paths.cache_clear()
    assert [cited_paths(text) for text in reversed(texts_)] == list(reversed(warm))
    assert warm == [old_cited_paths(text) for text in texts_]
