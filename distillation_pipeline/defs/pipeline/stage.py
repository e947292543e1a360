"""Shared shape of a pipeline asset: time it, write its receipt, report it as metadata."""

import contextlib
from dataclasses import dataclass
from collections.abc import Iterable, Iterator, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

import dagster as dg

from distillation_pipeline.lib.layout import Layout
from distillation_pipeline.lib.locks import root_lock
from distillation_pipeline.lib.timestamps import now_utc, parse_timestamp
from distillation_pipeline.receipts.receipt import build_receipt, write_receipt
from distillation_pipeline.schemas import RecordCounts, StageReceipt, Validation

OWNERS = ["team:ml-platform"]


@contextlib.contextmanager
def stage_lock(layout: Layout) -> Iterator[None]:
    """Hold the root lock while a stage writes (a no-op inside ``distill``, which holds it)."""
    with root_lock(layout, wait=True):
        yield


def pinned_time(recorded_at: str | None) -> datetime | None:
    return parse_timestamp(recorded_at) if recorded_at else None


@dataclass(frozen=True)
class StageOutcome:
    """A stage's receipt, written, and what to report: metadata, or why it failed hard."""

    metadata: dict[str, Any]
    failure: str | None  # the step must fail: a hard validation failure
    receipt_json: dict[str, Any]


def record_stage(
    context: dg.AssetExecutionContext,
    layout: Layout,
    *,
    stage: str,
    started_at: datetime,
    inputs: Iterable[Path],
    outputs: Iterable[Path],
    counts: RecordCounts,
    validation: Validation,
    options: Mapping[str, Any],
    dry_run: bool,
    metadata: Mapping[str, Any],
    finished_at: datetime | None = None,
) -> StageOutcome:
    """Write the stage receipt (unless dry-run) and say whether the step must fail.

    Receipts are written before failing so a failed run still says what it read and wrote.
    """
    receipt = build_receipt(
        layout,
        run_id=context.run_id,
        stage=stage,
        started_at=started_at,
        finished_at=finished_at or now_utc(),
        inputs=inputs,
        outputs=outputs,
        counts=counts,
        validation=validation,
        options=dict(options),
    )
    if not dry_run:
        path = write_receipt(layout, receipt)
        context.log.info(f"{stage}: receipt at {layout.relative(path)}")
    failure = None
    if validation.hard_failure:
        failure = f"{stage} failed validation hard: " + "; ".join(validation.errors[:5])
    return StageOutcome({**stage_metadata(receipt), **metadata}, failure, receipt.model_dump(mode="json"))


def finish_stage(context: dg.AssetExecutionContext, layout: Layout, **stage: Any) -> dg.MaterializeResult:
    """``record_stage`` (same keywords) for a single-asset stage: fail the step on a hard
    validation failure. Failing the step is what stops Dagster from running anything
    downstream on bad inputs."""
    outcome = record_stage(context, layout, **stage)
    if outcome.failure is not None:
        raise dg.Failure(
            description=outcome.failure, metadata={"receipt": dg.MetadataValue.json(outcome.receipt_json)}
        )
    return dg.MaterializeResult(metadata=outcome.metadata)


def stage_metadata(receipt: StageReceipt) -> dict[str, Any]:
    counts = receipt.counts
    meta: dict[str, Any] = {
        "records_in": dg.MetadataValue.int(counts.records_in),
        "records_out": dg.MetadataValue.int(counts.records_out),
        "skipped": dg.MetadataValue.int(counts.skipped),
        "quarantined": dg.MetadataValue.int(counts.quarantined),
        "deduplicated": dg.MetadataValue.int(counts.deduplicated),
        "validation_passed": dg.MetadataValue.bool(receipt.validation.passed),
        "output_hash": dg.MetadataValue.text(receipt.output_hash),
        "duration_ms": dg.MetadataValue.int(receipt.duration_ms),
        "receipt": dg.MetadataValue.json(receipt.model_dump(mode="json")),
    }
    for category, value in sorted(counts.per_category.items()):
        meta[f"category/{category}"] = dg.MetadataValue.int(value)
    for reason, value in sorted(counts.per_reason.items()):
        meta[f"reason/{reason}"] = dg.MetadataValue.int(value)
    if receipt.validation.errors:
        meta["validation_errors"] = dg.MetadataValue.md("\n".join(f"- {e}" for e in receipt.validation.errors))
    return meta
