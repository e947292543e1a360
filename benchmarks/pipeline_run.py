"""One ``distill run-all`` as a child process, and what its receipts say about each stage.

The pipeline runs exactly as a user runs it (the CLI, the persistent Dagster instance under
``<root>/.dagster_home``), in its own process so its peak RSS is its own. Stage seconds and
row counts are read from the stage receipts the run wrote, not timed from outside: a receipt's
``duration_ms`` covers the stage's work, while the process wall time also holds interpreter and
Dagster start-up, receipt hashing, the summary and drift assets.
"""

import os
import sys
from dataclasses import dataclass
from pathlib import Path

import orjson

from benchmarks.measure import ProcessRun, run_measured, tree_bytes
from distillation_pipeline.evidence.streams import NON_STREAM_FILES
from distillation_pipeline.lib.layout import Layout
from distillation_pipeline.lib.timestamps import parse_timestamp
from distillation_pipeline.schemas import STAGES

RECORDED_AT = "2026-11-01T00:00:00Z"
OK_EXIT_CODES = (0, 1)  # 1 = ran but failed validation: expected, the sample has skipped rows


class PipelineFailed(RuntimeError):
    pass


@dataclass
class StageTiming:
    stage: str
    seconds: float
    records_in: int
    records_out: int
    peak_rss_mb: float | None  # highest RSS sampled while the stage ran
    cpu_s: float | None  # CPU seconds sampled over the stage's window

    @property
    def rows_per_s(self) -> float:
        return self.records_in / self.seconds if self.seconds > 0 else 0.0

    def to_dict(self) -> dict:
        return {
            "seconds": round(self.seconds, 3),
            "records_in": self.records_in,
            "records_out": self.records_out,
            "rows_per_s": round(self.rows_per_s),
            "peak_rss_mb": None if self.peak_rss_mb is None else round(self.peak_rss_mb, 1),
            "cpu_s": None if self.cpu_s is None else round(self.cpu_s, 2),
        }


@dataclass
class PipelineRun:
    root: Path
    run_id: str
    process: ProcessRun
    stages: dict[str, StageTiming]
    git_sha: str  # the code that ran, as its receipts name it (others may commit between runs)

    @property
    def stage_seconds(self) -> float:
        return sum(timing.seconds for timing in self.stages.values())

    def to_dict(self) -> dict:
        p = self.process
        return {
            "run_id": self.run_id,
            "git_sha": self.git_sha,
            "exit_code": p.returncode,
            "wall_s": round(p.wall_s, 3),
            "cpu_s": round(p.cpu_s, 3),
            "stage_s": round(self.stage_seconds, 3),
            "outside_stages_s": round(p.wall_s - self.stage_seconds, 3),
            "peak_rss_mb": round(p.peak_rss_mb, 1),  # the whole process tree at once (measure.py)
            "largest_process_rss_mb": round(p.largest_process_rss_kb / 1024, 1),
            "load_before": [round(x, 2) for x in p.load_before],
            "load_after": [round(x, 2) for x in p.load_after],
            "stages": {name: timing.to_dict() for name, timing in self.stages.items()},
        }


def run_all(root: Path, log_file: Path, recorded_at: str = RECORDED_AT) -> PipelineRun:
    """``distill run-all`` on ``root``; raises ``PipelineFailed`` on a usage or crash exit."""
    layout = Layout.at(root)
    before = set(_run_dirs(layout))
    env = dict(os.environ)
    env["DAGSTER_HOME"] = str(layout.root / ".dagster_home")  # the CLI's default, made explicit
    env.pop("DISTILL_DAGSTER_INSTANCE", None)  # measure the persistent instance users get
    command = [
        sys.executable, "-m", "distillation_pipeline.cli", "run-all",
        "--root", str(layout.root), "--recorded-at", recorded_at,
    ]  # fmt: skip
    process = run_measured(command, log_file, env=env)
    if process.returncode not in OK_EXIT_CODES:
        raise PipelineFailed(f"distill run-all exited {process.returncode}; see {log_file}")
    new = sorted(set(_run_dirs(layout)) - before)
    if len(new) != 1:
        raise PipelineFailed(f"expected one new run directory under {layout.runs_dir}, found {new}")
    run_id = new[0]
    return PipelineRun(
        layout.root, run_id, process, read_stage_timings(layout, run_id, process), receipt_git_sha(layout, run_id)
    )


def receipt_git_sha(layout: Layout, run_id: str) -> str:
    collect = layout.run_dir(run_id) / "collect.json"
    return orjson.loads(collect.read_bytes()).get("git_sha", "unknown") if collect.exists() else "unknown"


def _run_dirs(layout: Layout) -> list[str]:
    if not layout.runs_dir.is_dir():
        return []
    return [p.name for p in layout.runs_dir.iterdir() if p.is_dir()]


# The three datasets are exported in one read of the trees (exports/onepass.py): their receipts
# share one time window, reported once as "export" (records in = positions read, records out =
# rows written to all three datasets), so the window is not counted three times.
SHARED_EXPORT = "export"
TIMED_STAGES = ("collect", "score", SHARED_EXPORT)


def read_stage_timings(layout: Layout, run_id: str, process: ProcessRun) -> dict[str, StageTiming]:
    receipts = {}
    for stage in STAGES:
        path = layout.run_dir(run_id) / f"{stage}.json"
        if path.exists():
            receipts[stage] = orjson.loads(path.read_bytes())
    exports = [receipts.pop(stage) for stage in STAGES if stage.startswith("export-") and stage in receipts]
    timings: dict[str, StageTiming] = {}
    for stage, receipt in receipts.items():
        timings[stage] = _timing(stage, receipt, process, receipt["counts"]["records_in"], receipt["counts"]["records_out"])
    if exports:
        records_in = max(r["counts"]["records_in"] for r in exports)
        records_out = sum(r["counts"]["records_out"] for r in exports)
        timings[SHARED_EXPORT] = _timing(SHARED_EXPORT, exports[0], process, records_in, records_out)
    return timings


def _timing(stage: str, receipt: dict, process: ProcessRun, records_in: int, records_out: int) -> StageTiming:
    started = parse_timestamp(receipt["started_at"]).timestamp()
    finished = parse_timestamp(receipt["finished_at"]).timestamp()
    peak = process.peak_rss_between(started, finished)
    return StageTiming(
        stage=stage,
        seconds=receipt["duration_ms"] / 1000,
        records_in=records_in,
        records_out=records_out,
        peak_rss_mb=None if peak is None else peak / 1024,
        cpu_s=process.cpu_between(started, finished),
    )


def source_files(layout: Layout) -> list[Path]:
    """The source streams under ``data/_kb/`` (not the skips file the collector writes there)."""
    return sorted(p for p in layout.kb_dir.glob("*.jsonl") if p.name not in NON_STREAM_FILES)


def output_sizes(root: Path) -> dict[str, int]:
    """Bytes on disk of the sources and of each output tree."""
    layout = Layout.at(root)
    sizes = {
        "sources": sum(p.stat().st_size for p in source_files(layout)),
        "data/evidence": tree_bytes(layout.evidence_dir),
        "data/scored-runs": tree_bytes(layout.scored_dir),
    }
    if layout.exports_dir.is_dir():
        for child in sorted(layout.exports_dir.iterdir()):
            sizes[f"exports/{child.name}"] = tree_bytes(child)
    return sizes
