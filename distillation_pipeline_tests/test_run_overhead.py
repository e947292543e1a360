"""The shortcuts outside the stages give what the plain computations give, and never a stale answer.

Receipts list files with one stat each (``lib.digests.file_entries``), the drift baseline is
found from the summaries' first lines (``receipts.summary.previous_summary``), and the replay
loop metrics count only lines appended to the log (``receipts.replay_metrics``). Each is held
here to the plain computation it replaces, including after edits a cache could miss.
"""

import os
import shutil
from datetime import UTC, datetime, timedelta

import orjson
import pytest

from distillation_pipeline.lib.digests import file_entries
from distillation_pipeline.lib.hashing import file_sha256
from distillation_pipeline.lib.layout import Layout
from distillation_pipeline.receipts import summary as summary_module
from distillation_pipeline.receipts.receipt import digest_files
from distillation_pipeline.receipts.replay_metrics import replay_loop_metrics, state_path
from distillation_pipeline.receipts.summary import _previous_summary_scan, previous_summary
from distillation_pipeline.replay.metrics import loop_metrics
from distillation_pipeline.replay.runlog import append_run
from distillation_pipeline.schemas import RecordCounts, RunSummary, StageReceipt, Validation
from distillation_pipeline_tests.test_replay_runlog import make_run

# --- receipts: one stat per file ----------------------------------------------------------------


def _plain_digests(layout: Layout, paths) -> list[tuple[str, str, int]]:
    """What a receipt listed before file_entries: is_file, resolve, sha256 of the bytes."""
    files = [path for path in sorted(set(paths)) if path.is_file()]
    return [(layout.relative(path), file_sha256(path), path.stat().st_size) for path in files]


def test_receipt_file_list_matches_resolving_and_hashing_every_path(tmp_path):
    root, outside = tmp_path / "root", tmp_path / "outside"
    layout = Layout.at(root)
    layout.state_dir.mkdir(parents=True)
    (root / "data" / "evidence" / "2026").mkdir(parents=True)
    (outside / "dir").mkdir(parents=True)
    plain = root / "data" / "evidence" / "2026" / "a.jsonl"
    plain.write_bytes(b'{"a": 1}\n')
    (outside / "x.jsonl").write_bytes(b"outside\n")
    (outside / "dir" / "y.jsonl").write_bytes(b"linked dir\n")
    link_in = root / "data" / "link-in.jsonl"  # a symlink to a file inside the root
    link_in.symlink_to(plain)
    link_out = root / "data" / "link-out.jsonl"  # a symlink to a file outside it
    link_out.symlink_to(outside / "x.jsonl")
    (root / "data" / "linked").symlink_to(outside / "dir")  # a symlinked directory
    dangling = root / "data" / "dangling.jsonl"
    dangling.symlink_to(root / "nowhere")
    paths = [
        plain, link_in, link_out, root / "data" / "linked" / "y.jsonl", dangling,
        root / "data" / "missing.jsonl", root / "data" / "evidence",  # missing, a directory
        plain.parent / ".." / "2026" / "a.jsonl",  # not normalised
        outside / "x.jsonl",  # outside the root
        root / "data" / "missing-dir" / "z.jsonl", plain / "under-a-file",
    ]  # fmt: skip
    expected = _plain_digests(layout, paths)
    assert [(d.path, d.sha256, d.bytes) for d in digest_files(layout, paths)] == expected
    assert [(d.path, d.sha256, d.bytes) for d in digest_files(layout, paths)] == expected  # from the cache
    # outside the root after resolving: the path as given (layout.relative)
    assert {rel for rel, _, _ in expected} >= {"data/evidence/2026/a.jsonl", str(outside / "x.jsonl"),
                                                str(root / "data" / "linked" / "y.jsonl")}  # fmt: skip


def test_receipt_rehashes_a_file_edited_in_place_with_its_size_and_mtime_put_back(tmp_path):
    layout = Layout.at(tmp_path)
    layout.state_dir.mkdir(parents=True)
    path = tmp_path / "data" / "out.jsonl"
    path.write_bytes(b'{"row": 1}\n')
    first = file_entries(layout, [path])[path]
    stat = os.stat(path)
    with open(path, "r+b") as handle:  # same inode, same size
        handle.write(b'{"row": 2}\n')
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # mtime put back; the ctime moves
    second = file_entries(layout, [path])[path]
    assert first[2] != second[2]
    assert second == ("data/out.jsonl", path.stat().st_size, file_sha256(path))


# --- the drift baseline from the summaries' first lines -------------------------------------------


def _summary(run_id: str, finished_at: datetime) -> RunSummary:
    receipt = StageReceipt(
        run_id=run_id, stage="collect", started_at=finished_at, finished_at=finished_at, duration_ms=0,
        git_sha="x", inputs=[], outputs=[], input_hash="i", output_hash="o",
        counts=RecordCounts(records_in=1, records_out=1), validation=Validation(passed=True),
    )  # fmt: skip
    return RunSummary(
        run_id=run_id, started_at=finished_at, finished_at=finished_at, git_sha="x", stages={"collect": receipt},
        dataset_sizes={"rag": 1}, quarantined={}, overall_passed=True, input_hash="i", output_hash="o", run_hash="r",
    )  # fmt: skip


def _write_summary(layout: Layout, summary: RunSummary, *, indent: bool = True) -> None:
    path = layout.run_dir(summary.run_id) / "summary.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    data = summary.model_dump_json(indent=2) if indent else summary.model_dump_json()
    path.write_bytes(data.encode() + b"\n")


def _assert_same_baseline(layout: Layout, run_id: str, expected_id: str | None) -> None:
    summary_module._VALIDATED.clear()
    found, plain = previous_summary(layout, run_id), _previous_summary_scan(layout, run_id)
    assert found == plain
    assert (found.run_id if found else None) == expected_id


def test_drift_baseline_matches_validating_every_summary(tmp_path):
    layout = Layout.at(tmp_path)
    t0 = datetime(2026, 11, 1, tzinfo=UTC)
    _assert_same_baseline(layout, "now", None)  # no reports yet
    _write_summary(layout, _summary("r1", t0))
    _write_summary(layout, _summary("r2", t0 + timedelta(hours=1)))
    _write_summary(layout, _summary("now", t0 + timedelta(hours=5)))  # the asking run is never its baseline
    _assert_same_baseline(layout, "now", "r2")
    # written without indentation: its first lines do not read as expected, so it is validated whole
    _write_summary(layout, _summary("r3", t0 + timedelta(hours=2)), indent=False)
    _assert_same_baseline(layout, "now", "r3")
    # the newest by its header, but damaged further down: not a baseline
    _write_summary(layout, _summary("r4", t0 + timedelta(hours=3)))
    damaged = layout.run_dir("r4") / "summary.json"
    damaged.write_bytes(damaged.read_bytes().replace(b'"dataset_sizes"', b'"dataset_sizez"'))
    _assert_same_baseline(layout, "now", "r3")
    # same finished_at: the larger run id wins, as in the plain comparison
    _write_summary(layout, _summary("r5", t0 + timedelta(hours=2)))
    _assert_same_baseline(layout, "now", "r5")
    # a timezone offset that is not Z orders by the instant
    later = _summary("r6", t0 + timedelta(hours=4)).model_copy(
        update={"finished_at": (t0 + timedelta(hours=4)).astimezone(datetime.now().astimezone().tzinfo)}
    )
    _write_summary(layout, later)
    _assert_same_baseline(layout, "now", "r6")


def test_drift_baseline_is_revalidated_after_an_edit(tmp_path):
    layout = Layout.at(tmp_path)
    t0 = datetime(2026, 11, 1, tzinfo=UTC)
    _write_summary(layout, _summary("r1", t0))
    _write_summary(layout, _summary("r2", t0 + timedelta(hours=1)))
    assert previous_summary(layout, "now").run_id == "r2"  # remembered in this process
    path = layout.run_dir("r2") / "summary.json"
    path.write_bytes(path.read_bytes().replace(b'"rag": 1', b'"rag": 7'))  # same size, edited in place
    assert previous_summary(layout, "now").dataset_sizes == {"rag": 7}
    path.write_bytes(path.read_bytes().replace(b'"overall_passed": true', b'"overall_passed": "nope"'))
    assert previous_summary(layout, "now").run_id == "r1"  # now damaged: not a baseline


# --- replay loop metrics from the appended lines --------------------------------------------------


def _runs(prefix: str, n: int):
    modes = ["jaccard", "none", "bm25"]
    return [make_run(f"{prefix}{i}", mode=modes[i % 3], passed=i % 4 != 1, escalated=i % 5 == 2) for i in range(n)]


def _append(layout: Layout, data: bytes) -> None:
    with open(layout.replay_log, "ab") as handle:
        handle.write(data)


def _same(layout: Layout) -> dict:
    expected = loop_metrics(layout)
    got = replay_loop_metrics(layout)
    assert got == expected and list(got) == list(expected)
    return orjson.loads(state_path(layout).read_bytes())


def test_replay_metrics_match_reading_the_whole_log_through_appends_and_edits(tmp_path):
    layout = Layout.at(tmp_path)
    layout.state_dir.mkdir(parents=True)
    assert replay_loop_metrics(layout) == loop_metrics(layout)  # no log yet
    for run in _runs("a", 7):
        append_run(layout, run)
    state = _same(layout)
    assert state["prefix_end"] == layout.replay_log.stat().st_size
    assert replay_loop_metrics(layout) == loop_metrics(layout)  # nothing new: from the state

    for run in _runs("b", 5):
        append_run(layout, run)
    _append(layout, b"{broken\n" + b'{"record_type": "other"}\n\n' + b'{"record_type": "replay_run.v1"}\r\n')
    state = _same(layout)
    assert state["prefix_end"] == layout.replay_log.stat().st_size and state["counts"]["runs"] == 12

    # a torn last line: counted as torn now, kept out of the state, counted again once completed
    line = orjson.dumps(make_run("c0").model_dump(mode="json")) + b"\n"
    _append(layout, line[:40])
    state = _same(layout)
    assert state["prefix_end"] == layout.replay_log.stat().st_size - 40
    _append(layout, line[40:])
    assert _same(layout)["counts"]["runs"] == 13
    # an unterminated last line that is a whole run counts as a run, as in read_runs
    _append(layout, line[:-1])
    assert _same(layout)["prefix_end"] == layout.replay_log.stat().st_size - len(line) + 1

    # counted lines edited in place (same size, mtime put back): recounted, not served from the state
    data = layout.replay_log.read_bytes()
    stat = layout.replay_log.stat()
    flipped = data.replace(b'"validation_passed":true', b'"validation_passed":fals', 1)
    assert flipped != data
    with open(layout.replay_log, "r+b") as handle:
        handle.write(flipped)
    os.utime(layout.replay_log, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    _same(layout)
    # rewritten shorter than what was counted, then a fresh log with a BOM
    layout.replay_log.write_bytes(data[: len(data) // 3])
    _same(layout)
    layout.replay_log.write_bytes(b"\xef\xbb\xbf" + line + line)
    assert _same(layout)["counts"]["runs"] == 2


def test_replay_metrics_state_of_other_code_or_a_damaged_state_is_not_used(tmp_path):
    layout = Layout.at(tmp_path)
    layout.state_dir.mkdir(parents=True)
    for run in _runs("a", 6):
        append_run(layout, run)
    state = _same(layout)
    lying = {**state, "counts": {**state["counts"], "passed": 0}}
    state_path(layout).write_bytes(orjson.dumps({**lying, "code": "other code"}))
    _same(layout)
    state_path(layout).write_bytes(orjson.dumps({**lying, "counts": {**lying["counts"], "runs": -1}}))
    _same(layout)
    state_path(layout).write_bytes(b"{not json")
    _same(layout)
    # a lying state for the same bytes and code is trusted: this is what makes the shortcut a
    # shortcut, and why the state sits under data/_state/ (delete it to recount)
    state_path(layout).write_bytes(orjson.dumps(lying))
    assert replay_loop_metrics(layout)["replay_runs_passed"] == 0.0
    state_path(layout).unlink()
    _same(layout)


def test_replay_metrics_in_a_dry_run_or_without_a_state_dir_write_nothing(tmp_path):
    layout = Layout.at(tmp_path)
    for run in _runs("a", 3):
        append_run(layout, run)
    assert replay_loop_metrics(layout) == loop_metrics(layout)
    assert not state_path(layout).exists()
    layout.state_dir.mkdir(parents=True)
    assert replay_loop_metrics(layout, persist=False) == loop_metrics(layout)
    assert not state_path(layout).exists()


# --- start-up: the command loads only the pipeline topic ------------------------------------------


def test_distill_runs_the_pipeline_job_the_ui_loads():
    from distillation_pipeline.definitions import defs
    from distillation_pipeline.defs.execute import pipeline_definitions
    from distillation_pipeline.defs.pipeline.jobs import PIPELINE_JOB_NAME

    ui, cli = defs.resolve_job_def(PIPELINE_JOB_NAME), pipeline_definitions().resolve_job_def(PIPELINE_JOB_NAME)
    ui_snap, cli_snap = ui.get_job_snapshot(), cli.get_job_snapshot()
    assert cli_snap.dep_structure_snapshot == ui_snap.dep_structure_snapshot
    assert cli_snap.node_defs_snapshot == ui_snap.node_defs_snapshot
    assert cli_snap.tags == ui_snap.tags
    assert cli.asset_layer.executable_asset_keys == ui.asset_layer.executable_asset_keys
    assert cli.asset_layer.asset_graph.asset_check_keys == ui.asset_layer.asset_graph.asset_check_keys
    # the same resources for what the job runs; the UI's job also carries replay's model
    # endpoints, which no pipeline step takes
    assert set(cli.resource_defs) == {"paths", "options", "io_manager"}
    assert {key: type(cli.resource_defs[key]) for key in ("paths", "options")} == {
        key: type(ui.resource_defs[key]) for key in ("paths", "options")
    }
    assert set(ui.resource_defs) - set(cli.resource_defs) == {"local_model", "escalation_model"}


def test_replay_command_defaults_are_the_replay_runtimes():
    from distillation_pipeline import cli_replay
    from distillation_pipeline.replay import retrieval, runner

    assert cli_replay.MODES == retrieval.MODES
    assert (cli_replay.DEFAULT_TOP_K, cli_replay.DEFAULT_MAX_TOKENS) == (runner.DEFAULT_TOP_K, runner.DEFAULT_MAX_TOKENS)


def test_only_the_process_own_command_freezes_the_garbage_collector(tmp_path, monkeypatch):
    import gc

    from distillation_pipeline.cli import EXIT_USAGE, main

    from distillation_pipeline.lib.layout import Layout

    Layout.at(tmp_path).kb_dir.mkdir(parents=True)
    threshold = gc.get_threshold()
    gc.unfreeze()
    # called, as tests and other code call it: the collector is left alone
    assert main(["run-all", "--root", str(tmp_path / "missing")]) == EXIT_USAGE
    assert main(["read", "--root", str(tmp_path), "--run-id", "nope"]) == EXIT_USAGE
    assert gc.get_freeze_count() == 0 and gc.get_threshold() == threshold
    try:
        # the process's own command line (it ends after this): a read freezes only on the way out
        monkeypatch.setattr("sys.argv", ["distill", "read", "--root", str(tmp_path), "--run-id", "nope"])
        assert main() == EXIT_USAGE
        assert gc.get_freeze_count() > 0 and gc.get_threshold() == threshold
        gc.unfreeze()
        # a pipeline command also freezes after loading the definitions, and collects less often
        monkeypatch.setattr("sys.argv", ["distill", "run-all", "--root", str(tmp_path / "missing")])
        assert main() == EXIT_USAGE
        assert gc.get_freeze_count() > 0 and gc.get_threshold()[0] > threshold[0]
    finally:
        gc.unfreeze()
        gc.set_threshold(*threshold)
