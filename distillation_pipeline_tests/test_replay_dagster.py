"""Replay in Dagster: job, config, pool, sensor over the request queue; and the CLI's usage errors."""

import dagster as dg
import pytest

from distillation_pipeline.cli_replay import main as replay_cli
from distillation_pipeline.defs.replay import defs, standalone_defs
from distillation_pipeline.defs.replay.jobs import LLM_POOL, replay_job
from distillation_pipeline.defs.replay.resources import ModelEndpoint
from distillation_pipeline.defs.replay.sensors import REQUEST_TAG, replay_queue_sensor
from distillation_pipeline.defs.resources import DistillPaths
from distillation_pipeline.lib.layout import Layout
from distillation_pipeline.replay.queue import QueueRequest, RejectedRequest, parse_request, read_queue, submit_request


def test_replay_definitions_load_with_descriptions():
    loaded = standalone_defs("/tmp/replay-root")
    dg.Definitions.validate_loadable(loaded)
    job = loaded.resolve_job_def("replay")
    assert job.description and replay_queue_sensor.description
    assert set(defs.resources) == {"local_model", "escalation_model"}  # "paths" comes from the project


def test_the_replay_op_runs_in_the_llm_pool():
    (node,) = replay_job.graph.node_defs
    assert node.pool == LLM_POOL and node.description


def test_launchpad_config_needs_only_a_task():
    schema = replay_job.graph.node_defs[0].config_schema.as_field().config_type
    fields = schema.fields
    assert fields["task"].is_required
    assert not any(field.is_required for name, field in fields.items() if name != "task")
    assert {"local_only", "allow_escalation", "no_retrieval"} <= set(fields)


def test_an_endpoint_without_base_url_gives_no_client():
    assert ModelEndpoint().client() is None
    client = ModelEndpoint(base_url="http://127.0.0.1:9/v1", model="m", api_key_env="X").client()
    assert client.host == "127.0.0.1:9" and client.api_key_env == "X"


def test_queue_requests_parse_flags_and_refuse_bad_files():
    good = parse_request("a.json", b'{"task": "Fix it", "allow_escalation": true, "task_id": "t-1"}')
    assert isinstance(good, QueueRequest) and good.allow_escalation and good.task_id == "t-1"
    assert good.key.startswith("a.json:")
    for data, reason in [
        (b"{oops", "malformed JSON"),
        (b"[]", "not a JSON object"),
        (b'{"task": "  "}', "missing or empty task"),
        (b'{"task": "x", "local_only": "yes"}', "local_only must be true or false"),
        (b'{"task": "x", "local_only": true, "allow_escalation": true}', "local_only forbids allow_escalation"),
    ]:
        refused = parse_request("b.json", data)
        assert isinstance(refused, RejectedRequest) and refused.reason == reason


def test_the_key_changes_with_the_content_not_only_the_name(tmp_path):
    first = submit_request(tmp_path, "task one", name="req")
    key_one = read_queue(tmp_path)[0].key
    submit_request(tmp_path, "task two", name="req")
    assert read_queue(tmp_path)[0].key != key_one and first.name == "req.json"
    (tmp_path / ".hidden.json").write_text('{"task": "half written"}')
    (tmp_path / "notes.txt").write_text("not a request")
    assert [item.name for item in read_queue(tmp_path)] == ["req.json"]


def test_the_sensor_requests_one_run_per_new_request_and_skips_launched_ones(tmp_path):
    layout = Layout.at(tmp_path)
    instance = dg.DagsterInstance.ephemeral()
    paths = DistillPaths(root=str(tmp_path))

    def tick():
        with dg.build_sensor_context(instance=instance, resources={"paths": paths}) as context:
            return replay_queue_sensor(context)

    assert isinstance(tick(), dg.SkipReason)  # no queue folder yet
    submit_request(layout.replay_queue_dir, "Fix the gateway retry", name="001", no_retrieval=True)
    submit_request(layout.replay_queue_dir, "Add a breaker", name="002", local_only=True)
    (layout.replay_queue_dir / "003.json").write_text("{not json")
    result = tick()
    requests = result.run_requests
    assert [r.run_config["ops"]["replay_task"]["config"]["task"] for r in requests] == ["Fix the gateway retry", "Add a breaker"]
    assert requests[0].run_config["ops"]["replay_task"]["config"]["no_retrieval"] is True
    assert all(r.run_key == r.tags[REQUEST_TAG] for r in requests)
    # Record the first as launched, as the daemon would: it is never requested again.
    instance.create_run_for_job(replay_job, run_config=requests[0].run_config, tags=requests[0].tags)
    assert [r.run_key for r in tick().run_requests] == [requests[1].run_key]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["replay", "--task", "   "], "--task is empty"),
        (["replay", "--task", "x", "--local-only", "--allow-escalation"], "--local-only forbids escalation"),
        (["replay", "--task", "x", "--top-k", "0"], "--top-k must be at least 1"),
    ],
)
def test_bad_usage_exits_2_with_one_line(tmp_path, capsys, argv, message):
    assert replay_cli([*argv, "--root", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1


def test_an_unreachable_model_exits_2_with_one_line_and_logs_nothing(tmp_path, capsys):
    code = replay_cli(["replay", "--task", "x", "--no-retrieval", "--root", str(tmp_path), "--model-url", "http://127.0.0.1:9"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1
    assert "127.0.0.1:9" in err and "unreachable" in err
    assert not Layout.at(tmp_path).replay_log.exists()


def test_retrieval_without_a_corpus_exits_2(tmp_path, capsys):
    code = replay_cli(["replay", "--task", "x", "--root", str(tmp_path), "--model-url", "http://127.0.0.1:9"])
    assert code == 2 and "no RAG corpus" in capsys.readouterr().err


def test_escalation_without_an_endpoint_exits_2(tmp_path, capsys, monkeypatch):
    code = replay_cli(["replay", "--task", "x", "--no-retrieval", "--allow-escalation", "--root", str(tmp_path)])
    assert code == 2 and "no escalation endpoint" in capsys.readouterr().err
