"""The pipeline's assets: one per stage, each a thin wrapper around a domain function."""

import dagster as dg

from distillation_pipeline.defs.pipeline.stage import OWNERS, finish_stage, pinned_time
from distillation_pipeline.defs.resources import DistillPaths, RunOptions
from distillation_pipeline.evidence.collect import collect
from distillation_pipeline.evidence.health import write_health_report
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
    result = collect(layout, recorded_at=pinned_time(options.recorded_at), dry_run=options.dry_run)
    for line in result.repaired:
        context.log.warning(f"collect recovery: {line}")
    health = None if options.dry_run else write_health_report(layout)

    per_stream = {
        name: {
            "read": c.read,
            "written": c.written,
            "skipped": c.skipped,
            "deduplicated": c.deduplicated,
            "blank_lines": c.blank_lines,
            "on_record": c.total_on_record,
        }
        for name, c in result.streams.items()
    }
    errors = []
    if result.total("skipped"):
        reasons = ", ".join(f"{k}={v}" for k, v in sorted(result.skip_reasons.items()))
        errors.append(f"rows_skipped: {result.total('skipped')} source rows skipped ({reasons})")
    hard = []
    if not result.conserved:
        hard.append("counts_not_conserved: rows read != written + skipped + deduplicated")
    if health is not None and not health.passed:
        failed = len(health.round_trips) - health.round_trip_ok
        hard.append(f"provenance_round_trip_failed: {failed} sampled records do not hash to their source row")
    counts = RecordCounts(
        records_in=result.total("read"),
        records_out=result.total("written"),
        skipped=result.total("skipped"),
        deduplicated=result.total("deduplicated"),
        per_reason=dict(result.skip_reasons),
        per_stream=per_stream,
    )
    metadata = {
        "per_stream": dg.MetadataValue.md(_markdown_table(per_stream)),
        "evidence_on_record": dg.MetadataValue.int(result.total("total_on_record")),
        "blank_lines": dg.MetadataValue.int(result.total("blank_lines")),
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
        options={"scorer_version": result.scorer_version, "ledger_rows": result.ledger_rows, "dry_run": options.dry_run},
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
    columns = ["read", "written", "skipped", "deduplicated", "blank_lines", "on_record"]
    lines = ["| stream | " + " | ".join(columns) + " |", "|---|" + "---:|" * len(columns)]
    for name in sorted(per_stream):
        lines.append(f"| {name} | " + " | ".join(str(per_stream[name][c]) for c in columns) + " |")
    return "\n".join(lines)
