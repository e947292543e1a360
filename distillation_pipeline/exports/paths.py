"""File paths a text cites, and whether the platform's repository has them.

A dataset row that cites a file that does not exist teaches a model to invent files, so the
exporters refuse it (``hallucinated_file_path``). A "cited path" is a repo-relative path with
at least one ``/`` whose last component has a known source/config/doc extension (or is a
well-known extension-less file such as ``Makefile``). The extension allowlist is what keeps
prose out: ``and/or``, dates, MIME types (``application/vnd.api``) and ratios are not paths.
URLs are removed first, absolute paths are ignored (they are not repo-relative), and a
``:line[:col]`` suffix is dropped.

A cited path matches the manifest (``data/_kb/repo_files.txt``) when it is one of its paths or
a trailing part of one on a component boundary: ``src/main.rs`` names
``crates/gateway/src/main.rs``; ``gateway/main.rs`` names nothing. Memory: one set entry per
path suffix, i.e. about (paths x mean depth) strings; 100k paths of depth 5 are ~60 MB.
"""

import functools
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

_EXTENSIONS = frozenset(
    """
    py pyi pyx ipynb rs go java kt kts scala c h cc cpp cxx hpp hh cs fs swift m mm rb php pl pm lua
    r jl dart ex exs erl hrl clj hs ml mli elm zig nim v sol
    js mjs cjs jsx ts tsx vue svelte astro html htm css scss sass less
    json jsonl ndjson yaml yml toml ini cfg conf env properties xml plist lock sum mod gradle
    md mdx rst txt adoc csv tsv sql proto graphql gql tf tfvars hcl nix bzl bazel cmake mk
    sh bash zsh fish ps1 bat cmd dockerfile gitignore dockerignore editorconfig
    """.split()
)
_EXTENSIONLESS = frozenset(
    {
        "Makefile",
        "Dockerfile",
        "Containerfile",
        "Rakefile",
        "Gemfile",
        "Procfile",
        "Justfile",
        "LICENSE",
        "README",
        "BUILD",
        "WORKSPACE",
        "CODEOWNERS",
    }
)

_URL = re.compile(r"\b[A-Za-z][A-Za-z0-9+.\-]*://\S+")
# git's unified diff names files "a/<path>" and "b/<path>": those prefixes are not directories.
_DIFF_PREFIX = re.compile(r"^(---|\+\+\+) [ab]/|(?<=^diff --git )a/|(?<= )b/(?=\S+$)", re.MULTILINE)
# Start not inside another token or after "/" (absolute paths are not repo-relative); ":" is
# not a path character, so "a/b.py:12" and "a/b.py::test" match as "a/b.py".
_CANDIDATE = re.compile(r"(?<![\w/.\-~$@])((?:\.{1,2}/)*(?:[\w.\-@+]+/)+[\w.\-@+]+)")


def _is_file_name(name: str) -> bool:
    if name in _EXTENSIONLESS:
        return True
    stem, dot, extension = name.rpartition(".")
    return bool(dot) and (bool(stem) or name.startswith(".")) and extension.lower() in _EXTENSIONS


def _normalise(path: str) -> str:
    """Repo-relative form: no leading ``./`` or ``../``, no trailing punctuation."""
    path = path.rstrip(".,;:)]}>'\"`")
    while path.startswith(("./", "../")):
        path = path.split("/", 1)[1]
    return path


def cited_paths(text: str | None) -> list[str]:
    """Sorted, distinct repo-relative file paths cited in ``text``."""
    if not text or "/" not in text:
        return []
    return list(_cited_paths(text))


# Remembered for a few recent texts: the datasets of one export pass scan the same response
# object one after another (see ``exports/onepass.py``).
@functools.lru_cache(maxsize=64)
def _cited_paths(text: str) -> tuple[str, ...]:
    if "://" in text:
        text = _URL.sub(" ", text)
    if "--- a/" in text or "+++ b/" in text or "diff --git" in text:
        text = _DIFF_PREFIX.sub(lambda m: f"{m.group(1)} " if m.group(1) else "", text)
    # A candidate holds a "/" and no whitespace, so it lies inside one whitespace-free token that
    # has a "/": only those are scanned, not every word start of the text. Same matches: a token
    # starts after whitespace, which the lookbehind admits as it does the start of the token, and
    # inside a token the lookbehind sees the same characters as in the whole text.
    found: set[str] = set()
    for token in text.split():
        if "/" in token:
            for candidate in _CANDIDATE.findall(token):
                path = _file_path(candidate)
                if path is not None:
                    found.add(path)
    return tuple(sorted(found))


# Texts cite the same files again and again (the repository's), so a candidate's verdict is
# remembered: a hit costs a hash, several times less than normalising and checking the name.
@functools.lru_cache(maxsize=4096)
def _file_path(candidate: str) -> str | None:
    """The repo-relative file path a candidate names, or None when it names no file."""
    path = _normalise(candidate)  # a ":line" suffix is already outside the candidate
    components = path.split("/")
    if len(components) < 2 or "" in components or "." in components or ".." in components:
        return None
    return path if _is_file_name(components[-1]) else None


@dataclass(frozen=True)
class RepoManifest:
    """The files that exist in the platform's repository, indexed by every trailing suffix."""

    suffixes: frozenset[str]
    size: int

    @classmethod
    def from_lines(cls, lines: Iterable[str]) -> "RepoManifest":
        suffixes: set[str] = set()
        size = 0
        for line in lines:
            path = _normalise(line.strip().lstrip("/"))
            if not path or path.startswith("#"):
                continue
            size += 1
            components = path.split("/")
            for start in range(len(components)):
                suffixes.add("/".join(components[start:]))
        return cls(frozenset(suffixes), size)

    @classmethod
    def load(cls, path: Path) -> "RepoManifest | None":
        """The manifest at ``path``, or None when there is none (the check then does not run)."""
        if not path.is_file():
            return None
        with open(path, encoding="utf-8", errors="replace") as handle:
            return cls.from_lines(handle)

    def missing(self, paths: Iterable[str]) -> list[str]:
        """The cited paths the repository does not have."""
        return [path for path in paths if path not in self.suffixes]
