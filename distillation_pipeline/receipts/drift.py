"""Drift: how far this run moved from the previous one.

- any count or category that moved more than the threshold (default 20 %,
  ``DISTILL_DRIFT_THRESHOLD`` overrides, in percent) warns;
- an error class (skip reason, quarantine reason, validation error code) not seen in the previous
  run warns;
- a stage whose input hash equals the previous run's while its output hash differs is a
  ``deterministic_violation``: the same input produced different output. That alerts.
"""

import os
from collections.abc import Mapping

from distillation_pipeline.lib.timestamps import now_utc
from distillation_pipeline.schemas import DriftFinding, DriftReport, RunSummary, StageReceipt

DEFAULT_THRESHOLD_PCT = 20.0


def drift_threshold() -> float:
    raw = os.environ.get("DISTILL_DRIFT_THRESHOLD")
    if not raw:
        return DEFAULT_THRESHOLD_PCT
    try:
        value = float(raw.rstrip("%"))
    except ValueError:
        raise ValueError(f"DISTILL_DRIFT_THRESHOLD={raw!r} is not a number (percent, e.g. 20)") from None
    if value <= 0:
        raise ValueError(f"DISTILL_DRIFT_THRESHOLD must be positive, got {raw!r}")
    return value


def tracked_counts(stages: Mapping[str, StageReceipt], dataset_sizes: Mapping[str, int]) -> dict[str, float]:
    """The numbers drift compares, flattened to ``stage.count`` keys."""
    values: dict[str, float] = {}
    for stage, receipt in stages.items():
        counts = receipt.counts
        for name in ("records_in", "records_out", "skipped", "quarantined", "deduplicated"):
            values[f"{stage}.{name}"] = getattr(counts, name)
        for category, value in counts.per_category.items():
            values[f"{stage}.category.{category}"] = value
        for reason, value in counts.per_reason.items():
            values[f"{stage}.reason.{reason}"] = value
    for dataset, size in dataset_sizes.items():
        values[f"dataset.{dataset}"] = size
    return values


def error_classes(stages: Mapping[str, StageReceipt]) -> set[str]:
    classes = set()
    for stage, receipt in stages.items():
        # score's reasons explain needs_human_review verdicts; they are outcomes, not errors
        if stage != "score":
            classes.update(f"{stage}:{reason}" for reason, n in receipt.counts.per_reason.items() if n)
        for error in receipt.validation.errors:
            # validation errors are written "code: message"; the code is the class
            classes.add(f"{stage}:{error.split(':', 1)[0].strip()}")
    return classes


def compute_drift(
    run_id: str,
    stages: Mapping[str, StageReceipt],
    dataset_sizes: Mapping[str, int],
    previous: RunSummary | None,
    threshold_pct: float | None = None,
) -> DriftReport:
    threshold = drift_threshold() if threshold_pct is None else threshold_pct
    if previous is None:
        return DriftReport(run_id=run_id, previous_run_id=None, severity="ok", threshold_pct=threshold, generated_at=now_utc())

    findings: list[DriftFinding] = []
    current_values = tracked_counts(stages, dataset_sizes)
    previous_values = tracked_counts(previous.stages, previous.dataset_sizes)
    for key in sorted(set(current_values) | set(previous_values)):
        before, now = previous_values.get(key, 0.0), current_values.get(key, 0.0)
        if before == now:
            continue
        if before == 0:
            findings.append(DriftFinding(key=key, previous=before, current=now, pct_change=None, severity="warn", message=f"{key} appeared ({now:g})"))
            continue
        pct = (now - before) / before * 100.0
        if abs(pct) > threshold:
            findings.append(
                DriftFinding(key=key, previous=before, current=now, pct_change=round(pct, 2), severity="warn",
                             message=f"{key} moved {pct:+.1f}% ({before:g} -> {now:g})")
            )

    violation = False
    for stage, receipt in stages.items():
        earlier = previous.stages.get(stage)
        if earlier and earlier.input_hash == receipt.input_hash and earlier.output_hash != receipt.output_hash:
            violation = True
            findings.append(
                DriftFinding(key=f"{stage}.output_hash", previous=0, current=0, pct_change=None, severity="alert",
                             message=f"deterministic_violation: {stage} read the same input as run {previous.run_id} but wrote different output")
            )

    new_errors = sorted(error_classes(stages) - error_classes(previous.stages))
    severity = "alert" if violation else ("warn" if findings or new_errors else "ok")
    return DriftReport(
        run_id=run_id,
        previous_run_id=previous.run_id,
        severity=severity,
        threshold_pct=threshold,
        deterministic_violation=violation,
        findings=findings,
        new_error_classes=new_errors,
        generated_at=now_utc(),
    )
