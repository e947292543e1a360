"""What the CLI prints after a pipeline run: per-stage tables from the receipts."""

from pathlib import Path

from distillation_pipeline.defs.execute import PipelineOutcome
from distillation_pipeline.lib.layout import Layout
from distillation_pipeline.schemas import STAGES, StageReceipt


def render_collect(receipt: StageReceipt) -> str:
    """Evidence on record per stream (all runs), with what this run added in the last column."""
    per_stream = receipt.counts.per_stream
    header = f"{'stream':<24} {'read':>9} {'written':>9} {'skipped':>8} {'dedup':>8} {'blank':>6} {'new this run':>13}"
    lines = [header, "-" * len(header)]
    for name in sorted(per_stream):
        row = per_stream[name]
        lines.append(
            f"{name:<24} {row['read']:>9} {row['written']:>9} {row['skipped']:>8} {row['deduplicated']:>8} "
            f"{row['blank_lines']:>6} {row['new_written']:>13}"
        )
    counts = receipt.counts
    lines.append("-" * len(header))
    total_blank = sum(row["blank_lines"] for row in per_stream.values())
    total_new = sum(row["new_written"] for row in per_stream.values())
    lines.append(
        f"{'TOTAL':<24} {counts.records_in:>9} {counts.records_out:>9} {counts.skipped:>8} {counts.deduplicated:>8} "
        f"{total_blank:>6} {total_new:>13}"
    )
    conserved = counts.records_in == counts.records_out + counts.skipped + counts.deduplicated
    lines.append(f"read = written + skipped + deduplicated: {'yes' if conserved else 'NO'}")
    lines.append(f"new rows written this run: {total_new}")
    if counts.per_reason:
        lines.append("skipped by reason: " + ", ".join(f"{k}={v}" for k, v in sorted(counts.per_reason.items())))
    pending = {name: row.get("pending_tail_bytes", 0) for name, row in per_stream.items() if row.get("pending_tail_bytes")}
    if pending:
        lines.append(
            "pending tails (an unterminated last line, maybe still being written; read next run): "
            + ", ".join(f"{name} ({n} bytes)" for name, n in sorted(pending.items()))
        )
    return "\n".join(lines)


def render_generic(receipt: StageReceipt) -> str:
    c = receipt.counts
    parts = [f"in={c.records_in}", f"out={c.records_out}"]
    if c.quarantined:
        parts.append(f"quarantined={c.quarantined}")
    if c.skipped:
        parts.append(f"skipped={c.skipped}")
    line = "  ".join(parts)
    if c.per_category:
        line += "\n  by category: " + ", ".join(f"{k}={v}" for k, v in sorted(c.per_category.items()))
    if c.per_reason:
        line += "\n  by reason:   " + ", ".join(f"{k}={v}" for k, v in sorted(c.per_reason.items()))
    return line


def render_score(receipt: StageReceipt) -> str:
    from distillation_pipeline.scoring import render_matrix

    options = receipt.options
    return render_matrix(
        receipt.counts.per_stream,
        str(options.get("scorer_version", "?")),
        int(options.get("ledger_rows", 0) or 0),
        int(options.get("ledger_entries", 0) or 0),
    ).rstrip()


RENDERERS = {"collect": render_collect, "score": render_score}


def print_outcome(outcome: PipelineOutcome, root: Path) -> None:
    for stage in STAGES:
        receipt = outcome.receipts.get(stage)
        if receipt is None:
            continue
        status = "passed" if receipt.validation.passed else "FAILED validation"
        print(f"== {stage}: {status} ({receipt.duration_ms} ms)")
        print(RENDERERS.get(stage, render_generic)(receipt))
        for error in receipt.validation.errors:
            print(f"  ! {error}")
        for check in receipt.validation.checks_not_run:
            print(f"  ? check not run: {check}")
    for failure in outcome.failures:
        print(f"FAILED {failure}")
    for failure in outcome.check_failures:
        print(f"CHECK FAILED {failure}")
    for warning in outcome.check_warnings:
        print(f"check warning {warning}")
    print(f"run {outcome.run_id}: receipts in {Layout.at(root).run_dir(outcome.run_id)}")
