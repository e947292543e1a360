"""The pipeline's assets: one per stage, each a thin wrapper around a domain function."""

from collections.abc import Iterator
from datetime import datetime

import dagster as dg

from distillation_pipeline.defs.pipeline.stage import (
    OWNERS,
    StageOutcome,
    finish_stage,
    pinned_time,
    record_stage,
    stage_lock,
)
from distillation_pipeline.defs.resources import DistillPaths, RunOptions
from distillation_pipeline.evidence.collect import collect
from distillation_pipeline.evidence.health import write_health_report
from distillation_pipeline.exports import DEFAULT_MAX_PAIRS_PER_TASK, ExportResult
from distillation_pipeline.exports.parallel_export import DatasetExport, export_datasets
from distillation_pipeline.lib.layout import DATASETS, Layout
from distillation_pipeline.lib.timestamps import iso_utc, now_utc
from distillation_pipeline.schemas import RecordCounts, Validation
from distillation_pipeline.scoring import SCORER_VERSION, EvidenceError, render_matrix, score_evidence_tree

GROUP = "distillation"


@dg.asset(
    group_name=GROUP,
    owners=OWNERS,
    kinds={"python", "jsonl"},
    tags={"stage": "collect"},
    description=(
        "Stage collect: every row of data/_kb/<stream>.jsonl becomes one EvidenceRecord with provenance "
        "(source_file, byte line_offset, canonical sig_hash, recorded_at) under "
        "data/evidence/YYYY/MM/DD/<stream>.jsonl, or a skip with a reason in data/_kb/distillation_skips.jsonl. "
        "Incremental: only bytes appended since the last run are read. Also writes data/_kb/evidence_health.md."
    ),
)
def evidence(context: dg.AssetExecutionContext, paths: DistillPaths, options: RunOptions) -> dg.MaterializeResult:
    layout = paths.layout()
    started_at = now_utc()
    with stage_lock(layout):
        result = collect(layout, recorded_at=pinned_time(options.recorded_at), dry_run=options.dry_run)
        health = None if options.dry_run else write_health_report(layout)
    for line in result.repaired:
        context.log.warning(f"collect recovery: {line}")

    # Receipt counts describe the evidence on record (every row of the current sources), not
    # this run's increment: the same sources give the same receipt, however many runs it took.
    # The increment is reported beside it as new_* so a nightly run shows what it added.
    totals = {name: c.totals for name, c in result.streams.items()}
    per_stream = {
        name: {
            "read": t.rows_read,
            "written": t.written,
            "skipped": t.skipped,
            "deduplicated": t.deduplicated,
            "blank_lines": t.blank_lines,
            "score_ready": t.score_ready,
            "new_read": result.streams[name].read,
            "new_written": result.streams[name].written,
            "pending_tail_bytes": result.streams[name].pending_tail_bytes,
        }
        for name, t in totals.items()
    }
    skip_reasons: dict[str, int] = {}
    for t in totals.values():
        for reason, n in t.skip_reasons.items():
            skip_reasons[reason] = skip_reasons.get(reason, 0) + n
    total = {key: sum(row[key] for row in per_stream.values()) for key in ("read", "written", "skipped", "deduplicated")}
    errors = []
    if total["skipped"]:
        reasons = ", ".join(f"{k}={v}" for k, v in sorted(skip_reasons.items()))
        errors.append(f"rows_skipped: {total['skipped']} source rows skipped ({reasons})")
    errors += list(result.refused)
    hard = []
    if total["read"] != total["written"] + total["skipped"] + total["deduplicated"] or not result.conserved:
        hard.append("counts_not_conserved: rows read != written + skipped + deduplicated")
    if health is not None and not health.passed:
        failed = len(health.round_trips) - health.round_trip_ok
        hard.append(f"provenance_round_trip_failed: {failed} sampled records do not hash to their source row")
    counts = RecordCounts(
        records_in=total["read"],
        records_out=total["written"],
        skipped=total["skipped"],
        deduplicated=total["deduplicated"],
        per_reason=skip_reasons,
        per_stream=per_stream,
    )
    metadata = {
        "per_stream": dg.MetadataValue.md(_markdown_table(per_stream)),
        "new_rows_read": dg.MetadataValue.int(result.total("read")),
        "new_rows_written": dg.MetadataValue.int(result.total("written")),
        "blank_lines": dg.MetadataValue.int(sum(t.blank_lines for t in totals.values())),
        "recorded_at": dg.MetadataValue.text(iso_utc(result.recorded_at)),
        "table": dg.MetadataValue.md(f"```\n{result.render_table()}\n```"),
    }
    if health is not None:
        metadata["provenance_round_trip"] = dg.MetadataValue.text(f"{health.round_trip_ok}/{len(health.round_trips)}")
    for name, row in per_stream.items():
        metadata[f"stream/{name}/written"] = dg.MetadataValue.int(row["written"])
    return finish_stage(
        context,
        layout,
        stage="collect",
        started_at=started_at,
        inputs=result.inputs,
        outputs=[*result.outputs, layout.skips_file],
        counts=counts,
        validation=Validation(passed=not errors and not hard, errors=hard + errors, hard_failure=bool(hard)),
        options={"recorded_at": options.recorded_at, "dry_run": options.dry_run},
        dry_run=options.dry_run,
        metadata=metadata,
    )


class ScoreConfig(dg.Config):
    scorer_version: str = SCORER_VERSION


@dg.asset(
    group_name=GROUP,
    owners=OWNERS,
    kinds={"python", "jsonl"},
    tags={"stage": "score"},
    deps=[evidence],
    description=(
        "Stage score: one deterministic verdict per evidence record (accepted, partially_accepted, rejected, "
        "needs_human_review) with human-readable reasons and scorer_version; zero model calls. Extraction rows "
        "inherit from their verdict-bearing parents. Writes data/scored-runs/ (mirrors the evidence layout line "
        "for line) and the model ledger data/scored-runs/model_ledger.jsonl."
    ),
)
def scored_runs(
    context: dg.AssetExecutionContext, config: ScoreConfig, paths: DistillPaths, options: RunOptions
) -> dg.MaterializeResult:
    layout = paths.layout()
    started_at = now_utc()
    try:
        with stage_lock(layout):
            result = score_evidence_tree(layout, scorer_version=config.scorer_version, dry_run=options.dry_run)
    except EvidenceError as exc:
        return finish_stage(
            context, layout, stage="score", started_at=started_at, inputs=[], outputs=[],
            counts=RecordCounts(records_in=0, records_out=0),
            validation=Validation(passed=False, errors=[f"evidence_corrupt: {exc}"], hard_failure=True),
            options={"scorer_version": config.scorer_version}, dry_run=options.dry_run, metadata={},
        )
    counts = RecordCounts(
        records_in=result.records_in,
        records_out=result.records_out,
        per_category=dict(result.per_category),
        per_reason=dict(result.review_reasons),
        per_stream={stream: dict(row) for stream, row in result.matrix.items()},
    )
    conserved = result.records_in == result.records_out + result.ledger_rows
    table = render_matrix(result.matrix, result.scorer_version, result.ledger_rows, result.ledger_entries)
    metadata = {
        "matrix": dg.MetadataValue.md(_matrix_markdown(result.matrix)),
        "table": dg.MetadataValue.md(f"```\n{table}```"),
        "specific_share_pct": dg.MetadataValue.float(round(100 * result.specific_share, 2)),
        "needs_human_review_share_pct": dg.MetadataValue.float(round(100 * result.review_share, 2)),
        "ledger_rows": dg.MetadataValue.int(result.ledger_rows),
        "ledger_entries": dg.MetadataValue.int(result.ledger_entries),
        "files_written": dg.MetadataValue.int(result.files_written),
        "files_unchanged": dg.MetadataValue.int(result.files_unchanged),
        "scorer_version": dg.MetadataValue.text(result.scorer_version),
        # what this run actually read: the rest was kept from the previous run (scoring/state.py)
        "incremental": dg.MetadataValue.bool(result.incremental),
        "full_rescore_reason": dg.MetadataValue.text(result.full_reason or "none"),
        "new_records": dg.MetadataValue.int(result.new_records),
        "files_appended": dg.MetadataValue.int(result.files_appended),
        "files_rescored": dg.MetadataValue.int(result.files_rescored),
    }
    errors = [] if conserved else ["counts_not_conserved: evidence in != scored out + ledger rows"]
    return finish_stage(
        context,
        layout,
        stage="score",
        started_at=started_at,
        inputs=result.inputs,
        outputs=result.outputs,
        counts=counts,
        validation=Validation(passed=conserved, errors=errors, hard_failure=not conserved),
        options={
            "scorer_version": result.scorer_version,
            "ledger_rows": result.ledger_rows,
            "ledger_entries": result.ledger_entries,
            "dry_run": options.dry_run,
        },
        dry_run=options.dry_run,
        metadata=metadata,
    )


def _matrix_markdown(matrix: dict[str, dict[str, int]]) -> str:
    categories = ["accepted", "partially_accepted", "rejected", "needs_human_review"]
    lines = ["| stream | " + " | ".join(categories) + " | total |", "|---|" + "---:|" * (len(categories) + 1)]
    for stream in sorted(matrix):
        row = matrix[stream]
        lines.append(f"| {stream} | " + " | ".join(str(row.get(c, 0)) for c in categories) + f" | {sum(row.values())} |")
    return "\n".join(lines)


def _markdown_table(per_stream: dict[str, dict[str, int]]) -> str:
    columns = ["read", "written", "skipped", "deduplicated", "blank_lines", "new_written"]
    lines = ["| stream | " + " | ".join(columns) + " |", "|---|" + "---:|" * len(columns)]
    for name in sorted(per_stream):
        lines.append(f"| {name} | " + " | ".join(str(per_stream[name][c]) for c in columns) + " |")
    return "\n".join(lines)


# --- datasets behind the firewall ---------------------------------------------------------------


class ExportConfig(dg.Config):
    include_review: bool = False  # RAG: admit needs_human_review rows (never rejected)
    include_partial: bool = False  # SFT: admit partially_accepted rows (never rejected or needs_human_review)
    max_pairs_per_task: int = DEFAULT_MAX_PAIRS_PER_TASK  # preference


def _export_stage(
    context: dg.AssetExecutionContext,
    layout: Layout,
    stage: str,
    result: ExportResult,
    options: RunOptions,
    started_at: datetime,
    finished_at: datetime,
) -> StageOutcome:
    balanced, equation = result.balance()
    per_stream: dict[str, dict[str, int]] = {"ineligible": dict(result.ineligible)}
    if result.unpaired:
        per_stream["unpaired"] = dict(result.unpaired)
    errors = [] if balanced else [f"counts_not_conserved: {equation}"]
    metadata = {
        "balance": dg.MetadataValue.text(equation),
        "ineligible": dg.MetadataValue.int(result.ineligible_total),
        "quarantine_rate_pct": dg.MetadataValue.float(
            round(100 * result.quarantined / result.records_in, 2) if result.records_in else 0.0
        ),
        "checks_not_run": dg.MetadataValue.text(", ".join(result.checks_not_run) or "none"),
        # positions whose rows were copied from the previous run's output (unchanged partition
        # prefixes, exports/increments.py): the rest were read and exported this run
        "reused_positions": dg.MetadataValue.int(result.reused_positions),
    }
    return record_stage(
        context,
        layout,
        stage=stage,
        started_at=started_at,
        finished_at=finished_at,
        inputs=result.inputs,
        outputs=result.outputs,
        counts=RecordCounts(
            records_in=result.records_in,
            records_out=result.written,
            quarantined=result.quarantined,
            per_category=dict(result.per_category),
            per_reason=dict(result.per_reason),
            per_stream=per_stream,
        ),
        validation=Validation(
            passed=balanced, errors=errors, hard_failure=not balanced, checks_not_run=list(result.checks_not_run)
        ),
        options={**result.options, "dry_run": options.dry_run},
        dry_run=options.dry_run,
        metadata=metadata,
    )


_EXPORT_DESCRIPTION = (
    " Behind the contamination firewall: every refused row goes to exports/quarantine/{dataset}.jsonl with one "
    "reason (unsafe category, hallucinated file path, credential, empty content, duplicate, bad pairing, missing "
    "provenance). Rows carry id, created_at and provenance back to evidence and the source row."
)

# asset key -> (dataset, stage name in receipts)
DATASET_KEYS = {"rag_playbooks": ("rag", "export-rag"), "sft_dataset": ("sft", "export-sft"),
                "preference_dataset": ("preference", "export-preference")}  # fmt: skip


def _dataset_spec(key: str, description: str) -> dg.AssetSpec:
    dataset, stage = DATASET_KEYS[key]
    return dg.AssetSpec(
        key,
        deps=[scored_runs],
        owners=OWNERS,
        kinds={"python", "jsonl"},
        tags={"stage": stage, "dataset": dataset},
        skippable=True,
        description=description + _EXPORT_DESCRIPTION.format(dataset=dataset),
    )


@dg.multi_asset(
    name="datasets",
    group_name=GROUP,
    can_subset=True,
    specs=[
        _dataset_spec(
            "rag_playbooks",
            description="RAG playbooks: exports/rag/playbooks.jsonl from accepted and partially_accepted runs "
            "(needs_human_review only with include_review; rejected never).",
        ),
        _dataset_spec(
            "sft_dataset",
            description="SFT set: exports/sft/instruction_response.jsonl (chat messages, TRL-ready) and "
            "exports/sft/openai_chat.jsonl, from accepted runs (partially_accepted only with include_partial; "
            "rejected and needs_human_review never, whatever the options).",
        ),
        _dataset_spec(
            "preference_dataset",
            description="Preference pairs: exports/preference/chosen_rejected.jsonl (prompt/chosen/rejected as "
            "TRL's DPO trainer expects) and exports/preference/openai_dpo.jsonl. Same task_id; accepted over "
            "rejected first, accepted over partially_accepted as fallback; at most max_pairs_per_task pairs per "
            "task; never the same run or the same text on both sides.",
        ),
    ],
)
def datasets(
    context: dg.AssetExecutionContext, config: ExportConfig, paths: DistillPaths, options: RunOptions
) -> Iterator[dg.MaterializeResult]:
    """The selected datasets in one read of the evidence and scored trees (``exports/onepass.py``),
    or two reads side by side, one per core (``exports/parallel_export.py``).

    Each dataset keeps its own receipt, counts and checks; a dataset whose counts do not balance
    fails the step after every receipt is written (the others are still reported).
    """
    layout = paths.layout()
    selected = [key.to_user_string() for key in context.selected_asset_keys]
    wanted = {DATASET_KEYS[name][0] for name in selected}
    started_at = now_utc()
    exports = [
        DatasetExport(dataset, include_review=config.include_review, include_partial=config.include_partial,
                      max_pairs_per_task=config.max_pairs_per_task)
        for dataset in DATASETS if dataset in wanted
    ]  # fmt: skip
    with stage_lock(layout):
        # two passes side by side when two or more datasets are selected (exports/parallel_export.py)
        results = export_datasets(layout, exports, dry_run=options.dry_run)
    finished_at = now_utc()
    outcomes = {
        name: _export_stage(context, layout, DATASET_KEYS[name][1], results[DATASET_KEYS[name][0]], options,
                            started_at, finished_at)
        for name in sorted(selected, key=list(DATASET_KEYS).index)
    }  # fmt: skip
    failed = {name: outcome for name, outcome in outcomes.items() if outcome.failure is not None}
    for name, outcome in outcomes.items():
        if name not in failed:
            yield dg.MaterializeResult(asset_key=name, metadata=outcome.metadata)
    if failed:
        raise dg.Failure(
            description="; ".join(outcome.failure for outcome in failed.values()),  # type: ignore[misc]
            metadata={"receipts": dg.MetadataValue.json([outcome.receipt_json for outcome in failed.values()])},
        )


DATASET_ASSETS = [datasets]


@dg.asset(
    group_name=GROUP,
    owners=OWNERS,
    kinds={"python", "json"},
    tags={"stage": "receipts"},
    deps=[evidence, scored_runs, *DATASET_KEYS],
    description=(
        "Receipts roll-up: reports/distillation/<run_id>/summary.json, summary.md and drift.json. Compares this "
        "run with the previous one (counts or categories moving more than DISTILL_DRIFT_THRESHOLD %, default 20, "
        "warn; a new error class warns; the same input giving different output alerts) and carries the replay "
        "loop metrics (pass rate with and without retrieval, escalation rate)."
    ),
    check_specs=[
        dg.AssetCheckSpec(
            "drift",
            asset="run_summary",
            blocking=True,
            description="ok passes; warn (a count moved past the threshold, a new error class) is a WARN; "
            "a deterministic_violation (same input hash, different output hash) is an ERROR.",
        )
    ],
)
def run_summary(context: dg.AssetExecutionContext, paths: DistillPaths, options: RunOptions) -> dg.MaterializeResult:
    from distillation_pipeline.receipts.replay_metrics import replay_loop_metrics
    from distillation_pipeline.receipts.summary import finalize_run

    layout = paths.layout()
    if options.dry_run:
        return dg.MaterializeResult(
            metadata={"dry_run": True},
            check_results=[dg.AssetCheckResult(check_name="drift", passed=True, description="dry run: no drift computed")],
        )
    with stage_lock(layout):
        # replay.metrics.loop_metrics, reading only lines appended to the replay log since the
        # last run (its state is under data/_state/, written under the root lock)
        replay = replay_loop_metrics(layout)
        finalized = finalize_run(layout, context.run_id, replay_metrics=replay)
    summary, drift = finalized.summary, finalized.drift
    severity = {"ok": None, "warn": dg.AssetCheckSeverity.WARN, "alert": dg.AssetCheckSeverity.ERROR}[drift.severity]
    check = dg.AssetCheckResult(
        check_name="drift",
        passed=severity is None,
        severity=severity or dg.AssetCheckSeverity.ERROR,
        description=f"drift {drift.severity} against run {drift.previous_run_id}" if drift.previous_run_id else "first run: nothing to compare",
        metadata={
            "severity": drift.severity,
            "findings": len(drift.findings),
            "deterministic_violation": drift.deterministic_violation,
            "new_error_classes": ", ".join(drift.new_error_classes) or "none",
            "max_abs_pct_change": max((abs(f.pct_change) for f in drift.findings if f.pct_change is not None), default=0.0),
        },
    )
    metadata: dict = {
        "overall_passed": dg.MetadataValue.bool(summary.overall_passed),
        "drift_severity": dg.MetadataValue.text(drift.severity),
        "drift_findings": dg.MetadataValue.int(len(drift.findings)),
        "run_hash": dg.MetadataValue.text(summary.run_hash),
        "output_hash": dg.MetadataValue.text(summary.output_hash),
        "summary": dg.MetadataValue.md((layout.run_dir(context.run_id) / "summary.md").read_text()),
        "summary_path": dg.MetadataValue.path(str(layout.run_dir(context.run_id) / "summary.json")),
    }
    for dataset, size in summary.dataset_sizes.items():
        metadata[f"dataset/{dataset}"] = dg.MetadataValue.int(size)
    for key, value in replay.items():
        metadata[key] = dg.MetadataValue.float(float(value))
    return dg.MaterializeResult(metadata=metadata, check_results=[check])
