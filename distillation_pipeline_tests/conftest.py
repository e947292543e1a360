"""Fixtures that build small substrates in a temporary directory."""

import os
from pathlib import Path

import orjson
import pytest

from distillation_pipeline.lib.layout import Layout

PINNED = "2026-11-01T00:00:00Z"

# The export tests' fixtures (``layout``) live beside their builders.
pytest_plugins = ["distillation_pipeline_tests.export_fixtures"]

# CLI runs in tests use an in-memory Dagster instance unless a test asks for a persistent one.
os.environ.setdefault("DISTILL_DAGSTER_INSTANCE", "ephemeral")


def scrum_row(review_id: str, task_id: str = "task-1", attempt: object = 1, **extra: object) -> dict:
    row = {
        "review_id": review_id,
        "task_id": task_id,
        "task": f"Audit provider routing for {task_id}",
        "file": "services/router/provider_adapter.py",
        "model": "qwen3.5",
        "accepted_on_attempt": attempt,
        "review": "Checked services/router/provider_adapter.py; fallback order is correct.",
        "created_at": "2026-10-02T10:00:00Z",
    }
    row.update(extra)
    return row


class Substrate:
    """Writes source streams byte-for-byte, so tests control every kind of mess."""

    def __init__(self, root: Path) -> None:
        self.layout = Layout.at(root)
        self.layout.kb_dir.mkdir(parents=True, exist_ok=True)

    @property
    def root(self) -> Path:
        return self.layout.root

    def write_bytes(self, stream: str, data: bytes) -> Path:
        path = self.layout.source_file(stream)
        path.write_bytes(data)
        return path

    def append_bytes(self, stream: str, data: bytes) -> None:
        with open(self.layout.source_file(stream), "ab") as handle:
            handle.write(data)

    def write_rows(self, stream: str, rows: list[dict]) -> Path:
        return self.write_bytes(stream, b"".join(orjson.dumps(row) + b"\n" for row in rows))

    def append_rows(self, stream: str, rows: list[dict]) -> None:
        self.append_bytes(stream, b"".join(orjson.dumps(row) + b"\n" for row in rows))


@pytest.fixture
def substrate(tmp_path: Path) -> Substrate:
    return Substrate(tmp_path / "root")


def tree_bytes(directory: Path) -> dict[str, bytes]:
    """Every file under a directory, by relative path: for byte-identity comparisons."""
    return {p.relative_to(directory).as_posix(): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}
