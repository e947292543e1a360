"""Stage collect split over two processes: the same bytes as one process, full and incremental.

``collect(split=True)`` collects some streams in a spawned worker (``lib/workers.borrowed``);
``split=False`` collects every stream in the test's process. Both must write the same evidence
partitions, skips, seen-hash files, commit record and health report, on a generated substrate
with its mess (skips, duplicates, a pending tail), after appended rows, and after a stream's
already-collected prefix changed. A worker left behind by a killed stage writes nothing.
"""

import dataclasses
import shutil
from pathlib import Path

import pytest

from distillation_pipeline.evidence.collect import (
    CollectResult,
    CollectWorkerError,
    StageProcessGone,
    _collect_one,
    _StreamTask,
    collect,
)
from distillation_pipeline.evidence.health import write_health_report
from distillation_pipeline.lib.layout import Layout
from distillation_pipeline.lib.timestamps import parse_timestamp
from distillation_pipeline.sample.generator import generate_substrate
from distillation_pipeline_tests.conftest import PINNED, tree_bytes

PIN = parse_timestamp(PINNED)
ROWS = 3000


def _collected(layout: Layout) -> dict[str, bytes]:
    """Every file collect writes, by path relative to the root."""
    write_health_report(layout)
    files = {f"evidence/{rel}": data for rel, data in tree_bytes(layout.evidence_dir).items()}
    files |= {f"seen/{rel}": data for rel, data in tree_bytes(layout.evidence_seen_dir).items()}
    for path in (layout.skips_file, layout.evidence_state_file, layout.health_report):
        files[layout.relative(path)] = path.read_bytes()
    return files


def _counts(result: CollectResult) -> dict[str, dict]:
    return {name: dataclasses.asdict(counts) for name, counts in result.streams.items()}


def _both_ways(unsplit: Layout, split: Layout) -> CollectResult:
    one_process = collect(unsplit, recorded_at=PIN, split=False)
    two_processes = collect(split, recorded_at=PIN, split=True)
    assert one_process.collected_in_worker == []
    assert two_processes.collected_in_worker, "the split run collected nothing in the worker"
    assert set(two_processes.collected_in_worker) < set(two_processes.streams), "the caller collected nothing"
    assert _counts(two_processes) == _counts(one_process)
    assert two_processes.conserved
    assert _collected(split) == _collected(unsplit)
    return two_processes


def _append_sources(layout: Layout, increment: Layout) -> None:
    for new_source in sorted(increment.kb_dir.glob("*.jsonl")):
        with open(layout.kb_dir / new_source.name, "ab") as handle:
            handle.write(new_source.read_bytes())


@pytest.fixture
def roots(tmp_path: Path) -> tuple[Layout, Layout, Layout]:
    """Two copies of one generated substrate, and an increment generated apart."""
    generate_substrate(tmp_path / "unsplit", rows=ROWS)
    shutil.copytree(tmp_path / "unsplit", tmp_path / "split")
    generate_substrate(tmp_path / "increment", rows=ROWS // 10, seed=8, mess=False)
    return Layout.at(tmp_path / "unsplit"), Layout.at(tmp_path / "split"), Layout.at(tmp_path / "increment")


def test_split_collect_writes_the_same_bytes_full_incremental_and_rebuilt(roots) -> None:
    unsplit, split, increment = roots
    full = _both_ways(unsplit, split)
    assert full.total("skipped") and full.total("deduplicated")  # the mess is there to be split

    for layout in (unsplit, split):
        _append_sources(layout, increment)
    appended = _both_ways(unsplit, split)
    assert 0 < appended.total("read") < full.total("read")  # only the appended rows were read

    for layout in (unsplit, split):  # an edited prefix: the stream is collected again whole
        source = layout.source_file("scrum_reviews")
        source.write_bytes(b"\n" + source.read_bytes())
    rebuilt = _both_ways(unsplit, split)
    assert rebuilt.streams["scrum_reviews"].rebuilt


def test_a_stream_that_fails_in_the_worker_fails_the_stage_and_commits_nothing(tmp_path: Path) -> None:
    layout = Layout.at(tmp_path / "root")
    layout.kb_dir.mkdir(parents=True)
    # The largest stream goes to the worker first; this one cannot be opened as a file.
    layout.source_file("audits").mkdir()
    with pytest.raises(CollectWorkerError, match="stream audits failed in the worker process") as failure:
        collect(layout, recorded_at=PIN, split=True)
    assert isinstance(failure.value.__cause__, IsADirectoryError)
    assert not layout.evidence_state_file.exists()


def test_a_worker_whose_stage_process_is_gone_writes_nothing(tmp_path: Path) -> None:
    generate_substrate(tmp_path / "root", rows=300)
    layout = Layout.at(tmp_path / "root")
    orphaned = _StreamTask(str(layout.root), "scrum_reviews", None, {}, PIN, dry_run=False, stage_pid=-1)
    with pytest.raises(StageProcessGone):
        _collect_one(orphaned)
    assert not layout.evidence_dir.exists() and not layout.evidence_seen_dir.exists()
