"""The replay log (spec 7.6) and loop metrics: whole-line appends, safe under concurrent writers."""

import multiprocessing
from datetime import UTC, datetime

import orjson

from distillation_pipeline.evidence.streams import STREAMS
from distillation_pipeline.lib.layout import Layout
from distillation_pipeline.replay.metrics import loop_metrics
from distillation_pipeline.replay.runlog import append_run, read_runs
from distillation_pipeline.replay.runner import default_task_id, task_hash
from distillation_pipeline.schemas import ModelCall, ReplayBundle, ReplayRun


def make_run(
    run_id: str, *, mode: str = "jaccard", passed: bool = True, escalated: bool = False, output: str = "answer"
) -> ReplayRun:
    task = f"task for {run_id}"
    roles = ["local", "escalation"] if escalated else ["local"]
    calls = [
        ModelCall(role=role, base_url_host=f"127.0.0.1:{n}", model=f"m{n}", latency_ms=1.0, ok=True, output=output,
                  gate_passed=passed)
        for n, role in enumerate(roles, 1)
    ]  # fmt: skip
    return ReplayRun(
        run_id=run_id,
        task_id=default_task_id(task),
        task=task,
        task_hash=task_hash(task),
        retrieval_mode=mode,
        bundle=ReplayBundle(task=task),
        calls=calls,
        models_called=[call.model for call in calls],
        validation_passed=passed,
        escalated=escalated,
        output=output,
        latency_ms=3.0,
        ts=datetime(2026, 11, 1, tzinfo=UTC),
    )


def test_a_logged_run_is_one_line_the_evidence_collector_accepts(tmp_path):
    layout = Layout.at(tmp_path)
    run = make_run("r1", passed=True, escalated=True, output="the answer")
    append_run(layout, run)
    lines = layout.replay_log.read_bytes().splitlines()
    assert len(lines) == 1
    row = orjson.loads(lines[0])
    assert row["record_type"] == "replay_run.v1" and ReplayRun.model_validate(row) == run
    normalised = STREAMS["replay_runs"].normalise(row)
    assert normalised.source_id == "r1" and normalised.task_id == default_task_id("task for r1")
    assert (normalised.prompt, normalised.response) == ("task for r1", "the answer")
    assert normalised.markers["validation_passed"] is True and normalised.markers["escalated"] is True
    assert normalised.event_at == datetime(2026, 11, 1, tzinfo=UTC)


def test_task_id_defaults_to_the_task_hash_prefix():
    assert default_task_id("x") == "replay-" + task_hash("x")[:12]


def _writer(root: str, worker: int, runs: int) -> None:
    layout = Layout.at(root)
    for i in range(runs):
        # Big rows: a torn or interleaved write would show as a line that does not parse.
        append_run(layout, make_run(f"w{worker}-{i}", output=f"{worker}-{i} " + "x" * 100_000))


def test_eight_concurrent_writers_never_tear_or_interleave_a_line(tmp_path):
    context = multiprocessing.get_context("fork")
    workers = [context.Process(target=_writer, args=(str(tmp_path), worker, 5)) for worker in range(8)]
    for process in workers:
        process.start()
    for process in workers:
        process.join(60)
        assert process.exitcode == 0
    lines = Layout.at(tmp_path).replay_log.read_bytes().split(b"\n")
    assert lines[-1] == b""  # the file ends with a newline
    runs = [ReplayRun.model_validate_json(line) for line in lines[:-1]]
    assert len(runs) == 40 and len({run.run_id for run in runs}) == 40
    assert all(run.output.startswith(run.run_id.removeprefix("w") + " ") for run in runs)


def test_reading_the_log_counts_lines_that_are_not_runs(tmp_path):
    layout = Layout.at(tmp_path)
    append_run(layout, make_run("ok"))
    with open(layout.replay_log, "ab") as handle:
        handle.write(b"{broken\n" + b'{"record_type": "other"}\n' + b'{"record_type": "replay_run.v1"}\n')
    log = read_runs(layout)
    assert [run.run_id for run in log.runs] == ["ok"]
    assert log.invalid == {"malformed_json": 1, "not_a_replay_run": 1, "schema_violation": 1}


def test_loop_metrics_split_pass_rates_by_retrieval_and_count_escalations(tmp_path):
    layout = Layout.at(tmp_path)
    for run in [
        make_run("g1", passed=True),
        make_run("g2", passed=False),
        make_run("g3", passed=True, escalated=True),
        make_run("g4", mode="bm25", passed=True),
        make_run("b1", mode="none", passed=False),
        make_run("b2", mode="none", passed=False, escalated=True),
    ]:
        append_run(layout, run)
    metrics = loop_metrics(layout)
    assert metrics == {
        "replay_runs": 6.0,
        "replay_runs_with_retrieval": 4.0,
        "replay_runs_without_retrieval": 2.0,
        "replay_runs_escalated": 2.0,
        "replay_runs_passed": 3.0,
        "replay_log_invalid_lines": 0.0,
        "replay_pass_rate": 0.5,
        "replay_pass_rate_with_retrieval": 0.75,
        "replay_pass_rate_without_retrieval": 0.0,
        "replay_escalation_rate": round(2 / 6, 6),
        "replay_local_pass_rate": round(2 / 6, 6),
    }
    assert all(isinstance(value, float) for value in metrics.values())


def test_loop_metrics_without_runs_report_counts_and_no_rates(tmp_path):
    metrics = loop_metrics(Layout.at(tmp_path))
    assert metrics["replay_runs"] == 0.0 and "replay_pass_rate" not in metrics and "replay_escalation_rate" not in metrics
