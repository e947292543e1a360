"""Roll a run's stage receipts up into ``summary.json``, ``summary.md`` and ``drift.json``.

Called by the ``run_summary`` asset when the graph completes, and by the CLI or the failure
sensor when it did not (a stage failed hard, or a blocking check stopped the graph), so a
failed run is summarised too, with what did not run and why.

The rule for a hard failure: Dagster does not run anything downstream of a stage that failed
validation hard or of a blocking check that failed, so no dataset is exported from inputs that
did not pass. The files in ``exports/`` then still hold the previous good run's datasets; the
summary says which stages did not run, why, and that the datasets on disk were not refreshed.
"""

import os
import re
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import orjson

from distillation_pipeline.exports.card import write_dataset_card
from distillation_pipeline.lib.atomic import atomic_write_bytes, atomic_write_text
from distillation_pipeline.lib.hashing import aggregate_hash, file_sha256, sha256_hex
from distillation_pipeline.lib.layout import Layout
from distillation_pipeline.lib.timestamps import iso_utc, now_utc
from distillation_pipeline.receipts.drift import compute_drift
from distillation_pipeline.receipts.receipt import git_sha, read_receipt, receipt_path
from distillation_pipeline.schemas import STAGES, DriftReport, RunSummary, StageReceipt

UPSTREAM = {
    "collect": None,
    "score": "collect",
    "export-rag": "score",
    "export-sft": "score",
    "export-preference": "score",
}
DATASET_STAGES = {"rag": "export-rag", "sft": "export-sft", "preference": "export-preference"}


def summary_path(layout: Layout, run_id: str) -> Path:
    return layout.run_dir(run_id) / "summary.json"


def load_receipts(layout: Layout, run_id: str) -> dict[str, StageReceipt]:
    receipts = {}
    for stage in STAGES:
        path = receipt_path(layout, run_id, stage)
        if path.exists():
            receipts[stage] = read_receipt(path)
    return receipts


def load_summary(layout: Layout, run_id: str) -> RunSummary:
    return RunSummary.model_validate_json(summary_path(layout, run_id).read_bytes())


def previous_summary(layout: Layout, run_id: str) -> RunSummary | None:
    """The most recent other run with a summary: drift's baseline, found without being told.

    The most recent valid summary by (finished_at, run_id), the first found among equals; a
    damaged summary is not a baseline (`distill read` reports it). Summaries are ordered by
    their first lines (``_summary_header``) and only the best is validated whole, so the cost
    does not grow with the size of every past run's summary; whatever does not read the way
    this module writes it is validated whole, as before.
    """
    if not layout.runs_dir.exists():
        return None
    ranked: list[tuple[tuple[datetime, str], int, Path, RunSummary | None]] = []
    for index, path in enumerate(layout.runs_dir.glob("*/summary.json")):
        if path.parent.name == run_id:
            continue
        header = _summary_header(path)
        if header is not None:
            ranked.append((header, index, path, None))
            continue
        candidate = _valid_summary(path)
        if candidate is not None:
            ranked.append(((candidate.finished_at, candidate.run_id), index, path, candidate))
    # best first; among equal keys the first found (the scan kept the first it saw)
    ranked.sort(key=lambda item: (item[0], -item[1]), reverse=True)
    for key, _, path, candidate in ranked:
        candidate = candidate or _valid_summary(path)
        if candidate is None:
            continue  # a damaged summary is not a baseline; `distill read` reports it
        if (candidate.finished_at, candidate.run_id) != key:
            return _previous_summary_scan(layout, run_id)  # the header said otherwise: no shortcut
        return candidate
    return None


def _previous_summary_scan(layout: Layout, run_id: str) -> RunSummary | None:
    """Every other summary validated whole: the plain rule ``previous_summary`` shortcuts."""
    best: RunSummary | None = None
    for path in layout.runs_dir.glob("*/summary.json"):
        if path.parent.name == run_id:
            continue
        candidate = _valid_summary(path)
        if candidate is None:
            continue
        if best is None or (candidate.finished_at, candidate.run_id) > (best.finished_at, best.run_id):
            best = candidate
    return best


# The top of a summary.json as ``finalize_run`` writes it (pydantic, indent=2): the two fields
# that order runs, in a form ``datetime.fromisoformat`` reads exactly as pydantic does.
_HEADER = re.compile(
    rb'\A\{\n  "schema_version": 1,\n  "run_id": ("(?:[^"\\\n]|\\.)*"),\n'
    rb'  "started_at": "[^"\n]*",\n'
    rb'  "finished_at": "(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d{1,6})?(?:Z|[+-]\d\d:\d\d))",\n'
)
_HEADER_BYTES = 4096


def _summary_header(path: Path) -> tuple[datetime, str] | None:
    """(finished_at, run_id) from the first lines of a summary, or None if they do not read
    the way this module writes them (the caller then validates the file whole)."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(_HEADER_BYTES)
        match = _HEADER.match(head)
        if match is None:
            return None
        run_id = orjson.loads(match.group(1))
        finished_at = datetime.fromisoformat(match.group(2).decode().replace("Z", "+00:00"))
    except (OSError, ValueError):
        return None
    if not isinstance(run_id, str) or finished_at.tzinfo is None:
        return None
    return finished_at, run_id


# Validated summaries by path and stat (size, mtime, inode, ctime): the run_summary asset and
# each soft check ask for the same baseline in one process. Summaries are replaced, not edited
# (a new inode), and an in-place edit moves the ctime, so a changed file is validated again.
_VALIDATED: dict[str, tuple[tuple[int, int, int, int], RunSummary | None]] = {}


def _valid_summary(path: Path) -> RunSummary | None:
    try:
        stat = os.stat(path)
        key = (stat.st_size, stat.st_mtime_ns, stat.st_ino, stat.st_ctime_ns)
        known = _VALIDATED.get(str(path))
        if known is not None and known[0] == key:
            return known[1]
        data = path.read_bytes()
    except OSError:
        return None
    try:
        summary: RunSummary | None = RunSummary.model_validate_json(data)
    except ValueError:
        summary = None  # a damaged summary is not a baseline; `distill read` reports it
    if len(data) == key[0]:
        _VALIDATED[str(path)] = (key, summary)
    return summary


def latest_run_id(layout: Layout) -> str | None:
    latest = previous_summary(layout, run_id="")
    return latest.run_id if latest else None


def _why_not_run(
    stage: str, receipts: dict[str, StageReceipt], failed_checks: list[str], step_failures: dict[str, str]
) -> str:
    if stage in step_failures:
        return f"failed before writing a receipt: {step_failures[stage]}"
    upstream = UPSTREAM[stage]
    while upstream is not None:
        receipt = receipts.get(upstream)
        if receipt is None:
            if upstream in step_failures:
                return f"upstream {upstream} failed: {step_failures[upstream]}"
            upstream = UPSTREAM[upstream]
            continue
        if receipt.validation.hard_failure:
            return f"upstream {upstream} failed validation hard ({'; '.join(receipt.validation.errors[:2])})"
        break
    if failed_checks:
        return "a blocking asset check failed upstream: " + "; ".join(failed_checks[:3])
    return "not selected in this run, or failed before writing a receipt"


@dataclass
class FinalizedRun:
    summary: RunSummary
    drift: DriftReport
    paths: list[Path]


def finalize_run(
    layout: Layout,
    run_id: str,
    *,
    started_at: datetime | None = None,
    failed_checks: list[str] | None = None,
    step_failures: dict[str, str] | None = None,
    replay_metrics: dict[str, float] | None = None,
    threshold_pct: float | None = None,
) -> FinalizedRun:
    failed_checks = list(failed_checks or [])
    receipts = load_receipts(layout, run_id)
    step_failures = step_failures or {}
    not_run = {
        stage: _why_not_run(stage, receipts, failed_checks, step_failures) for stage in STAGES if stage not in receipts
    }
    dataset_sizes = {
        dataset: receipts[stage].counts.records_out for dataset, stage in DATASET_STAGES.items() if stage in receipts
    }
    quarantined = {
        dataset: receipts[stage].counts.quarantined for dataset, stage in DATASET_STAGES.items() if stage in receipts
    }
    input_hash = receipts["collect"].input_hash if "collect" in receipts else aggregate_hash([])
    output_hash = aggregate_hash((d.path, d.sha256) for r in receipts.values() for d in r.outputs)
    finished_at = now_utc()
    first_start = min((r.started_at for r in receipts.values()), default=finished_at)
    overall_passed = (
        not not_run and not failed_checks and all(r.validation.passed for r in receipts.values())
    )
    drift = compute_drift(run_id, receipts, dataset_sizes, previous_summary(layout, run_id), threshold_pct)
    summary = RunSummary(
        run_id=run_id,
        started_at=started_at or first_start,
        finished_at=finished_at,
        git_sha=git_sha(),
        stages=receipts,
        stages_not_run=not_run,
        failed_checks=failed_checks,
        dataset_sizes=dataset_sizes,
        quarantined=quarantined,
        overall_passed=overall_passed and drift.severity != "alert",
        input_hash=input_hash,
        output_hash=output_hash,
        run_hash=sha256_hex(f"{input_hash}:{output_hash}".encode()),
        drift_severity=drift.severity,
        replay=replay_metrics or {},
    )
    run_dir = layout.run_dir(run_id)
    paths = [run_dir / "drift.json", run_dir / "summary.md", run_dir / "summary.json"]
    # Validate what goes to disk against the schema it claims, then write; summary.json last,
    # because its presence is what marks a run as complete for the next run's drift baseline.
    drift_bytes = drift.model_dump_json(indent=2).encode() + b"\n"
    DriftReport.model_validate_json(drift_bytes)
    summary_bytes = summary.model_dump_json(indent=2).encode() + b"\n"
    RunSummary.model_validate_json(summary_bytes)
    atomic_write_bytes(paths[0], drift_bytes)
    atomic_write_text(paths[1], render_summary_md(summary, drift))
    atomic_write_bytes(paths[2], summary_bytes)
    if any(stage.startswith("export-") for stage in receipts):
        paths.append(write_dataset_card(layout, run_id, receipts))
    return FinalizedRun(summary, drift, paths)


# ---------------------------------------------------------------------------------------------
# Verification: do the files on disk still match what the run wrote?
# ---------------------------------------------------------------------------------------------


@dataclass
class Mismatch:
    stage: str
    path: str
    problem: str


def verify_outputs(layout: Layout, summary: RunSummary) -> list[Mismatch]:
    mismatches = []
    for stage, receipt in summary.stages.items():
        for digest in receipt.outputs:
            path = layout.root / digest.path
            if not path.exists():
                mismatches.append(Mismatch(stage, digest.path, "missing"))
            elif file_sha256(path) != digest.sha256:
                mismatches.append(Mismatch(stage, digest.path, "sha256 differs from the receipt"))
    return mismatches


# ---------------------------------------------------------------------------------------------
# summary.md
# ---------------------------------------------------------------------------------------------


def render_summary_md(summary: RunSummary, drift: DriftReport) -> str:
    verdict = "PASSED" if summary.overall_passed else "FAILED"
    out = [
        f"# Distillation run {summary.run_id}",
        "",
        f"**{verdict}** · drift **{drift.severity}** · {iso_utc(summary.started_at)} → {iso_utc(summary.finished_at)} · code `{summary.git_sha[:12]}`",
        "",
        "| stage | in | out | skipped | quarantined | dedup | passed | ms |",
        "|---|---:|---:|---:|---:|---:|:---:|---:|",
    ]
    for stage in STAGES:
        receipt = summary.stages.get(stage)
        if receipt is None:
            out.append(f"| {stage} | – | – | – | – | – | not run | – |")
            continue
        c = receipt.counts
        mark = "yes" if receipt.validation.passed else "**no**"
        out.append(f"| {stage} | {c.records_in} | {c.records_out} | {c.skipped} | {c.quarantined} | {c.deduplicated} | {mark} | {receipt.duration_ms} |")
    notes = []
    if score_receipt := summary.stages.get("score"):
        ledger_rows = int(score_receipt.options.get("ledger_rows", 0) or 0)
        if ledger_rows:
            notes.append(f"score: {ledger_rows} model_trust rows went to the model ledger, not to scored runs")
    if collect_receipt := summary.stages.get("collect"):
        pending = sum(row.get("pending_tail_bytes", 0) for row in collect_receipt.counts.per_stream.values())
        if pending:
            notes.append(f"collect: {pending} bytes of unterminated last lines left pending for the next run")
    if notes:
        out += [""] + [f"_{note}_  " for note in notes]
    out += ["", "## Datasets", ""]
    if summary.dataset_sizes:
        out += ["| dataset | rows | quarantined |", "|---|---:|---:|"]
        out += [f"| {d} | {n} | {summary.quarantined.get(d, 0)} |" for d, n in sorted(summary.dataset_sizes.items())]
    else:
        out.append("No dataset was exported in this run.")
    score = summary.stages.get("score")
    if score and score.counts.per_category:
        out += ["", "## Scored categories", ""]
        out.append(", ".join(f"{k} {v}" for k, v in sorted(score.counts.per_category.items())))
    problems = []
    for stage, receipt in summary.stages.items():
        problems += [f"- {stage}: {error}" for error in receipt.validation.errors]
        problems += [f"- {stage}: check not run: {check}" for check in receipt.validation.checks_not_run]
    problems += [f"- check failed: {check}" for check in summary.failed_checks]
    problems += [f"- {stage} did not run: {why}" for stage, why in summary.stages_not_run.items()]
    if summary.stages_not_run:
        problems.append("- datasets in exports/ were not refreshed by this run: they are a previous run's output")
    out += ["", "## What failed", ""] + (problems or ["Nothing."])
    out += ["", "## Drift", ""]
    if drift.previous_run_id is None:
        out.append("No previous run to compare with.")
    else:
        out.append(f"Against run {drift.previous_run_id}, threshold {drift.threshold_pct:g}%: **{drift.severity}**.")
        out += [f"- {finding.message}" for finding in drift.findings[:30]]
        if len(drift.findings) > 30:
            out.append(f"- … and {len(drift.findings) - 30} more in drift.json")
        out += [f"- new error class: {cls}" for cls in drift.new_error_classes]
    if summary.replay:
        out += ["", "## Replay loop", ""]
        out += [f"- {key}: {value:g}" for key, value in sorted(summary.replay.items())]
    out += [
        "",
        "## Hashes",
        "",
        f"- input `{summary.input_hash}`",
        f"- output `{summary.output_hash}`",
        f"- run `{summary.run_hash}`",
        "",
    ]
    return "\n".join(out)
