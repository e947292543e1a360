"""Crash safety and concurrency: SIGKILL at random points, two runs on one root, killed writers.

The kill -9 harness itself lives in ``kill9.py`` (also runnable on its own); here it runs with
its defaults, and its checks are first shown to catch what they claim to catch, so a green
harness means something. Concurrency uses the real ``distill`` executable in subprocesses.
"""

import os
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path

import orjson
import pytest

from distillation_pipeline.lib.atomic import append_lines_locked, atomic_writer
from distillation_pipeline.lib.layout import Layout
from distillation_pipeline.sample import generate_substrate
from distillation_pipeline_tests import kill9
from distillation_pipeline_tests.kill9 import (
    Launcher,
    lock_holder,
    output_snapshot,
    recovered_view,
    run_all_argv,
    run_harness,
    scratch_parent,
    snapshot_diff,
    temp_files,
    torn_files,
    version_violations,
    written_files,
)

STAGES_THAT_WRITE = ("collect", "score", "export", "checks+summary")  # export: one pass, three datasets


def _write(root: Path, rel: str, data: bytes) -> None:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


# ---------------------------------------------------------------------------------------------
# The harness's own checks catch what they claim to
# ---------------------------------------------------------------------------------------------


def test_torn_check_flags_a_missing_newline_a_broken_line_and_broken_json(tmp_path) -> None:
    _write(tmp_path, "exports/rag/playbooks.jsonl", b'{"id": 1}\n{"id": 2')
    _write(tmp_path, "exports/quarantine/rag.jsonl", b'{"id": 1}\n{"id"\n')
    _write(tmp_path, "reports/distillation/r1/collect.json", b'{"stage": "coll')
    _write(tmp_path, "exports/sft/instruction_response.jsonl", b'{"id": 1}\n')
    _write(tmp_path, "data/_kb/scrum_reviews.jsonl", b'{"a source may end torn"')  # sources are not ours
    problems = torn_files(tmp_path)
    assert problems == [
        "exports/quarantine/rag.jsonl: line 2 does not parse",
        "exports/rag/playbooks.jsonl: last line has no newline",
        "reports/distillation/r1/collect.json: does not parse as JSON",
    ]


def test_evidence_beyond_its_commit_is_recovery_work_not_a_torn_file(tmp_path) -> None:
    committed = b'{"id": "a"}\n'
    record = {"state_version": 1, "streams": {}, "evidence_files": {"data/evidence/2026/10/02/audits.jsonl": len(committed)}}
    _write(tmp_path, "data/_state/collect.json", orjson.dumps(record))
    _write(tmp_path, "data/evidence/2026/10/02/audits.jsonl", committed + b'{"id": "b", "half')
    _write(tmp_path, "data/evidence/2026/10/03/audits.jsonl", b'{"id": "c"}\n')  # never committed
    assert torn_files(tmp_path) == []
    view, notes = recovered_view(output_snapshot(tmp_path))
    assert view["data/evidence/2026/10/02/audits.jsonl"] == committed
    assert "data/evidence/2026/10/03/audits.jsonl" not in view
    assert len(notes) == 2 and not any(note.startswith("LOST") for note in notes)


def test_committed_evidence_that_went_missing_is_reported_as_lost(tmp_path) -> None:
    record = {"state_version": 1, "streams": {}, "evidence_files": {"data/evidence/2026/10/02/audits.jsonl": 100}}
    _write(tmp_path, "data/_state/collect.json", orjson.dumps(record))
    _write(tmp_path, "data/evidence/2026/10/02/audits.jsonl", b'{"id": "a"}\n')
    _, notes = recovered_view(output_snapshot(tmp_path))
    assert notes == ["LOST data/evidence/2026/10/02/audits.jsonl: 12 bytes, its commit record says 100"]


def test_version_check_accepts_previous_or_new_and_nothing_else() -> None:
    previous = {"a": b"old", "gone": b"old"}
    reference = {"a": b"new", "b": b"new"}
    assert version_violations({"a": b"old", "gone": b"old"}, previous, reference) == []
    assert version_violations({"a": b"new", "b": b"new"}, previous, reference) == []
    assert version_violations({}, {}, reference) == []  # nothing written yet
    mixed = version_violations({"a": b"ne", "b": b"new"}, previous, reference)
    assert mixed == ["a: 2 bytes, neither version (previous 3 bytes, reference 3 bytes)"]
    lost = version_violations({"b": b"new"}, {"a": b"old"}, {"a": b"new", "b": b"new"})
    assert lost == ["a: absent, neither version (previous 3 bytes, reference 3 bytes)"]


def test_stages_take_turns_and_the_plan_is_reproducible() -> None:
    buckets = ["startup", "collect", "score", "exit"]
    plans = kill9.plan_trials(10, buckets, seed=7)
    assert plans == kill9.plan_trials(10, buckets, seed=7)
    assert sorted(p.stage for p in plans) == sorted(buckets * 2 + buckets[:2])
    assert [p.prior for p in plans] == [False, True] * 5


# ---------------------------------------------------------------------------------------------
# Killed writers, one mechanism at a time (a child process SIGKILLs itself mid-write)
# ---------------------------------------------------------------------------------------------


def _die_mid_atomic_write(path_str: str) -> None:
    path = Path(path_str)
    with atomic_writer(path) as handle:
        handle.write(b'{"row": 1}\n{"row": 2, "half')
        handle.flush()
        os.kill(os.getpid(), signal.SIGKILL)


def _die_mid_append(path_str: str) -> None:
    with open(path_str, "ab") as handle:  # a writer that dies halfway through its line
        handle.write(b'{"id": "torn", "message": "cut sh')
        handle.flush()
    os.kill(os.getpid(), signal.SIGKILL)


def _in_child(target, *args) -> int:
    import multiprocessing

    process = multiprocessing.get_context("fork").Process(target=target, args=args)
    process.start()
    process.join(30)
    return process.exitcode


def test_a_writer_killed_mid_file_leaves_the_previous_file_whole(tmp_path) -> None:
    target = tmp_path / "exports" / "rag" / "playbooks.jsonl"
    target.parent.mkdir(parents=True)
    target.write_bytes(b'{"row": 0}\n')
    assert _in_child(_die_mid_atomic_write, str(target)) == -signal.SIGKILL
    assert target.read_bytes() == b'{"row": 0}\n'
    (leftover,) = temp_files(tmp_path)  # what SIGKILL leaves: a temp file nobody reads
    assert leftover.startswith("exports/rag/.playbooks.jsonl.") and leftover.endswith(".tmp")
    assert torn_files(tmp_path) == []


def test_a_line_torn_by_a_killed_appender_is_cut_before_the_next_append(tmp_path) -> None:
    log = tmp_path / "reports" / "alerts.jsonl"
    log.parent.mkdir(parents=True)
    log.write_bytes(b'{"id": "before"}\n')
    assert _in_child(_die_mid_append, str(log)) == -signal.SIGKILL
    append_lines_locked(log, [b'{"id": "after"}'])
    assert [orjson.loads(line)["id"] for line in log.read_bytes().splitlines()] == ["before", "after"]


def test_a_lost_skips_file_is_rebuilt_like_lost_evidence(tmp_path) -> None:
    """Evidence that goes missing is re-collected from the sources (its commit record notices).
    The skips file is the other half of the count (read = written + skipped + deduplicated): if
    it goes missing, its rows must come back too, not stay missing while the receipt counts them."""
    from datetime import UTC, datetime

    from distillation_pipeline.evidence.collect import collect

    layout = Layout.at(tmp_path)
    layout.kb_dir.mkdir(parents=True)
    row = {"finding_id": "f-1", "task_id": "t1", "ts": "2026-10-02T10:00:00Z", "topic": "routing"}
    layout.source_file("audits").write_bytes(b'{"torn\n' + orjson.dumps(row) + b"\n")
    pinned = datetime(2026, 11, 1, tzinfo=UTC)
    collect(layout, recorded_at=pinned)
    skips = layout.skips_file.read_bytes()
    assert skips.count(b"\n") == 1
    layout.skips_file.unlink()
    result = collect(layout, recorded_at=pinned)
    assert result.streams["audits"].totals.skipped == 1
    assert layout.skips_file.read_bytes() == skips


def test_a_row_still_being_appended_when_collect_reads_is_not_lost(tmp_path) -> None:
    """Agents (and replay, through its locked appends) write their logs while the pipeline runs:
    collect can find the last row half written. That row must become evidence once its writer
    finishes it, not two skips (a torn tail now, a headless fragment next run)."""
    from datetime import UTC, datetime

    from distillation_pipeline.evidence.collect import collect

    layout = Layout.at(tmp_path)
    layout.kb_dir.mkdir(parents=True)
    first = orjson.dumps({"finding_id": "f-1", "task_id": "t1", "ts": "2026-10-02T10:00:00Z", "topic": "a"}) + b"\n"
    second = orjson.dumps({"finding_id": "f-2", "task_id": "t1", "ts": "2026-10-02T11:00:00Z", "topic": "b"}) + b"\n"
    half = len(second) // 2
    layout.source_file("audits").write_bytes(first + second[:half])  # the writer is mid-row
    pinned = datetime(2026, 11, 1, tzinfo=UTC)
    collect(layout, recorded_at=pinned)
    with open(layout.source_file("audits"), "ab") as handle:
        handle.write(second[half:])  # ... and finishes it
    result = collect(layout, recorded_at=pinned)
    totals = result.streams["audits"].totals
    assert (totals.written, totals.skipped) == (2, 0), dict(totals.skip_reasons)


# ---------------------------------------------------------------------------------------------
# Pipeline runs in subprocesses: a small substrate and its uninterrupted reference
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def scratch():
    with tempfile.TemporaryDirectory(prefix="crash-safety-", dir=scratch_parent()) as tmp:
        yield Path(tmp)


@pytest.fixture(scope="module")
def reference(scratch):
    """Sources (600 rows, seed 7) and the outputs of one uninterrupted ``run-all`` over them."""
    sources = scratch / "substrate"
    generate_substrate(sources, rows=600, seed=7)
    root = scratch / "reference"
    shutil.copytree(sources / "data" / "_kb", root / "data" / "_kb")
    code = Launcher("exec").start(run_all_argv(root), scratch / "reference.log").wait()
    assert code in (0, 1), (scratch / "reference.log").read_text()
    return sources / "data" / "_kb", output_snapshot(root), code


def _fresh_root(scratch: Path, kb: Path, name: str) -> Path:
    root = scratch / name
    shutil.copytree(kb, root / "data" / "_kb")
    return root


def _wait_for(predicate, run, timeout: float = 120.0) -> None:
    deadline = time.time() + timeout
    while not predicate():
        assert run.poll() is None, "the run ended before the awaited moment"
        assert time.time() < deadline, "timed out"
        time.sleep(0.005)


@pytest.mark.slow
def test_temp_files_left_by_a_killed_run_are_ignored_and_removed_by_the_next(scratch, reference) -> None:
    """A killed atomic write leaves ``.<name>.*.tmp``: the next run must not read it as an
    output, and must not let such files pile up (each can be as large as a dataset)."""
    kb, expected, code = reference
    root = _fresh_root(scratch, kb, "stale-temp")
    layout = Layout.at(root)
    stale = [
        layout.rag_file.parent / ".playbooks.jsonl.k1ll3d.tmp",
        layout.scored_dir / "2026" / "09" / "30" / ".audits.jsonl.k1ll3d.tmp",
        layout.runs_dir / "killed-run" / ".score.json.k1ll3d.tmp",
        layout.kb_dir / ".distillation_skips.jsonl.k1ll3d.tmp",
    ]
    for path in stale:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b'{"half a row')
    assert Launcher("exec").start(run_all_argv(root), scratch / "stale-temp.log").wait() == code
    assert snapshot_diff(output_snapshot(root), expected) == []  # ignored: outputs are the reference's
    assert [p for p in stale if p.exists()] == []  # and cleaned up


@pytest.mark.slow
def test_a_second_run_all_on_a_busy_root_refuses_and_leaves_the_first_intact(scratch, reference) -> None:
    """Run A takes the root lock and is frozen (SIGSTOP) while run B starts: B must refuse with
    exit 2 and one clear line, write nothing, and A, resumed, must produce the reference bytes."""
    kb, expected, code = reference
    root = _fresh_root(scratch, kb, "busy")
    launcher = Launcher("exec")
    first = launcher.start(run_all_argv(root), scratch / "busy-first.log")
    try:
        _wait_for(lambda: lock_holder(root, first.pid), first)
        os.killpg(first.pid, signal.SIGSTOP)
        before = written_files(root)
        second = launcher.start(run_all_argv(root), scratch / "busy-second.log")
        assert second.wait() == 2
        output = (scratch / "busy-second.log").read_text()
        lock = Layout.at(root).state_dir / "pipeline.lock"
        errors = [line for line in output.splitlines() if line.startswith("distill: error:")]
        assert len(errors) == 1 and f"another distill run holds {lock}" in errors[0], output
        assert "Traceback" not in output
        assert written_files(root) == before  # B wrote nothing, not even a receipt
    finally:
        os.killpg(first.pid, signal.SIGCONT)
    assert first.wait() == code
    assert snapshot_diff(output_snapshot(root), expected) == []


@pytest.mark.slow
def test_a_killed_lock_holder_does_not_block_the_next_run(scratch, reference) -> None:
    kb, expected, code = reference
    root = _fresh_root(scratch, kb, "dead-holder")
    launcher = Launcher("exec")
    run = launcher.start(run_all_argv(root), scratch / "dead-holder.log")
    _wait_for(lambda: lock_holder(root, run.pid), run)
    run.kill()
    assert run.wait() == -signal.SIGKILL
    assert launcher.start(run_all_argv(root), scratch / "dead-holder-next.log").wait() == code
    assert snapshot_diff(output_snapshot(root), expected) == []


CONCURRENT_ROUNDS = int(os.environ.get("DISTILL_CONCURRENT_ROUNDS", "3"))


@pytest.mark.slow
def test_two_run_all_started_together_serialise_or_refuse_never_corrupt(scratch, reference) -> None:
    """Both started at the same instant, several rounds: each round one refuses (exit 2, the
    lock message) or both complete one after the other; either way the outputs are the
    reference's bytes afterwards."""
    kb, expected, code = reference
    launcher = Launcher("exec")
    tally = {"refused": 0, "both_completed": 0}
    for round_ in range(CONCURRENT_ROUNDS):
        root = _fresh_root(scratch, kb, f"together-{round_}")
        logs = [scratch / f"together-{round_}-{i}.log" for i in (0, 1)]
        runs = [launcher.start(run_all_argv(root), log) for log in logs]
        codes = [run.wait() for run in runs]
        refused = [i for i, c in enumerate(codes) if c == 2]
        if refused:
            assert len(refused) == 1, codes
            (i,) = refused
            assert "another distill run holds" in logs[i].read_text()
            assert codes[1 - i] == code
            tally["refused"] += 1
        else:
            assert codes == [code, code]
            tally["both_completed"] += 1
        assert snapshot_diff(output_snapshot(root), expected) == [], f"round {round_}: {codes}"
        assert torn_files(root) == []
    print(f"\ntwo run-all at once, {CONCURRENT_ROUNDS} rounds: {tally}")


# ---------------------------------------------------------------------------------------------
# The kill -9 harness
# ---------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_kill9_harness_no_torn_file_previous_or_new_and_convergence(tmp_path) -> None:
    """SIGKILL ``distill run-all`` at seeded random points across every stage (50 trials by
    default; DISTILL_KILL9_TRIALS to change), with the checks described in ``kill9.py``."""
    trials = int(os.environ.get("DISTILL_KILL9_TRIALS", "50"))
    parent = scratch_parent()
    with tempfile.TemporaryDirectory(prefix="kill9-", dir=parent or tmp_path) as workdir:
        report = run_harness(Path(workdir), trials=trials, jobs=2, launcher="fork", log=lambda line: print(line, file=sys.stderr))
    print("\n" + report.render())
    assert report.trials == trials
    assert report.torn == []
    assert report.violations == []
    assert report.converged == trials, report.not_converged
    if trials >= 40:
        landed = report.kills_per_observed_stage
        assert all(landed.get(stage, 0) > 0 for stage in STAGES_THAT_WRITE), landed
