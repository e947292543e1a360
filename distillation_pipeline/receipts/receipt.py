"""One StageReceipt per stage per run, under ``reports/distillation/<run_id>/<stage>.json``."""

import functools
import subprocess
from collections.abc import Iterable
from datetime import datetime
from pathlib import Path
from typing import Any

from distillation_pipeline.lib.atomic import atomic_write_bytes
from distillation_pipeline.lib.digests import file_entries
from distillation_pipeline.lib.hashing import aggregate_hash
from distillation_pipeline.lib.layout import Layout
from distillation_pipeline.schemas import FileDigest, RecordCounts, StageReceipt, Validation

_PACKAGE_DIR = Path(__file__).resolve().parents[2]


@functools.lru_cache(maxsize=1)
def git_sha() -> str:
    """The commit of the code that ran, with ``-dirty`` when the tree had uncommitted changes."""
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=_PACKAGE_DIR, capture_output=True, text=True, timeout=5, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=_PACKAGE_DIR, capture_output=True, text=True, timeout=5, check=True,
        ).stdout.strip()
        return f"{sha}-dirty" if dirty else sha
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def digest_files(layout: Layout, paths: Iterable[Path]) -> list[FileDigest]:
    """The regular files among ``paths``, sorted, with their sha256 and size (one stat each;
    digests of files unchanged since they were last hashed come from ``lib/digests.py``)."""
    entries = file_entries(layout, sorted(set(paths)))
    return [FileDigest(path=rel, sha256=digest, bytes=size) for rel, size, digest in entries.values()]


def build_receipt(
    layout: Layout,
    *,
    run_id: str,
    stage: str,
    started_at: datetime,
    finished_at: datetime,
    inputs: Iterable[Path],
    outputs: Iterable[Path],
    counts: RecordCounts,
    validation: Validation,
    options: dict[str, Any] | None = None,
) -> StageReceipt:
    input_digests = digest_files(layout, inputs)
    output_digests = digest_files(layout, outputs)
    return StageReceipt(
        run_id=run_id,
        stage=stage,
        started_at=started_at,
        finished_at=finished_at,
        duration_ms=max(0, int((finished_at - started_at).total_seconds() * 1000)),
        git_sha=git_sha(),
        inputs=input_digests,
        outputs=output_digests,
        input_hash=aggregate_hash((d.path, d.sha256) for d in input_digests),
        output_hash=aggregate_hash((d.path, d.sha256) for d in output_digests),
        counts=counts,
        validation=validation,
        options=options or {},
    )


def receipt_path(layout: Layout, run_id: str, stage: str) -> Path:
    return layout.run_dir(run_id) / f"{stage}.json"


def write_receipt(layout: Layout, receipt: StageReceipt) -> Path:
    # Re-validate the dumped form: what lands on disk must load back as a receipt.
    payload = receipt.model_dump_json(indent=2).encode("utf-8") + b"\n"
    StageReceipt.model_validate_json(payload)
    path = receipt_path(layout, receipt.run_id, receipt.stage)
    atomic_write_bytes(path, payload)
    return path


def read_receipt(path: Path) -> StageReceipt:
    return StageReceipt.model_validate_json(path.read_bytes())
