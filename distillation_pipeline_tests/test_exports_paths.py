"""Cited paths: what counts as a file path in text, and how it is matched to the manifest."""

from pathlib import Path

import pytest

from distillation_pipeline.exports.paths import RepoManifest, cited_paths


@pytest.mark.parametrize(
    "text,expected",
    [
        ("Edited crates/gateway/src/main.rs:42 and ./src/app.py.", ["crates/gateway/src/main.rs", "src/app.py"]),
        ("see `docker/Dockerfile` and ../lib/util.ts", ["docker/Dockerfile", "lib/util.ts"]),
        ("pytest tests/test_router.py::test_fallback", ["tests/test_router.py"]),
        ("(in pkg/mod.go)", ["pkg/mod.go"]),
        ("a/b.py a/b.py", ["a/b.py"]),
        # not paths: prose, dates, MIME types, URLs, absolute paths, bare names
        ("and/or 2024/05/01 application/vnd.api+json e.g./i.e.", []),
        ("https://github.com/org/repo/blob/main/src/x.py", []),
        ("/etc/hosts.conf and ~/notes/todo.md", []),
        ("main.py", []),
    ],
)
def test_cited_paths(text: str, expected: list[str]) -> None:
    assert cited_paths(text) == expected


def test_manifest_matches_whole_paths_and_trailing_parts() -> None:
    manifest = RepoManifest.from_lines(["crates/gateway/src/main.rs\n", "./README.md\n", "\n"])
    assert manifest.size == 2
    assert manifest.missing(["crates/gateway/src/main.rs", "src/main.rs", "README.md"]) == []
    assert manifest.missing(["gateway/main.rs", "crates/gateway/src/lib.rs"]) == [
        "gateway/main.rs",
        "crates/gateway/src/lib.rs",
    ]


def test_absent_manifest_loads_as_none(tmp_path: Path) -> None:
    assert RepoManifest.load(tmp_path / "repo_files.txt") is None
