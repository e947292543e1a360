"""Alerts: once per event, to reports/alerts.jsonl, and to a webhook on a real local HTTP server."""

from datetime import UTC, datetime

import dagster as dg
import pytest

from distillation_pipeline.alerts.notify import WEBHOOK_ENV, deliver
from distillation_pipeline.defs.alerts.sensors import distill_alerts
from distillation_pipeline.defs.resources import DistillPaths
from distillation_pipeline.lib.jsonl import iter_json_rows
from distillation_pipeline.lib.layout import Layout
from distillation_pipeline.schemas import AlertRecord
from distillation_pipeline_tests.http_server import serve

SECRET_HOOK_PATH = "/services/T000/B000/very-secret-token"


def alert(alert_id: str = "check:1") -> AlertRecord:
    return AlertRecord(
        id=alert_id, kind="check_failure", severity="error", run_id="run-1", job_name="distill_pipeline",
        asset_key="sft_dataset", check_name="sft_firewall", message="rejected row in SFT",
        occurred_at=datetime(2026, 11, 1, tzinfo=UTC), webhook="pending",
    )


def test_alert_is_recorded_and_posted_as_slack_json(tmp_path) -> None:
    layout = Layout.at(tmp_path)
    with serve(lambda path, body: (200, b"ok")) as server:
        sent = deliver(layout, alert(), webhook_url=server.url + SECRET_HOOK_PATH)
    assert sent is not None and sent.webhook == "delivered"
    assert server.requests[0]["path"] == SECRET_HOOK_PATH
    body = server.requests[0]["json"]
    assert "sft_firewall" in body["text"] and body["blocks"][0]["type"] == "section"
    rows = list(iter_json_rows(layout.alerts_file))
    assert [row["id"] for row in rows] == ["check:1"]
    assert "very-secret-token" not in layout.alerts_file.read_text()


def test_same_event_is_notified_once(tmp_path) -> None:
    layout = Layout.at(tmp_path)
    with serve(lambda path, body: (200, b"ok")) as server:
        assert deliver(layout, alert(), webhook_url=server.url) is not None
        assert deliver(layout, alert(), webhook_url=server.url) is None
    assert len(server.requests) == 1
    assert len(list(iter_json_rows(layout.alerts_file))) == 1


def test_failed_delivery_is_recorded_not_fatal(tmp_path) -> None:
    layout = Layout.at(tmp_path)
    with serve(lambda path, body: (503, b"busy")) as server:
        sent = deliver(layout, alert(), webhook_url=server.url + SECRET_HOOK_PATH)
    assert sent is not None and sent.webhook.startswith("failed: HTTP 503 after 3 attempt")
    assert len(server.requests) == 3  # retried
    text = layout.alerts_file.read_text()
    assert "failed: HTTP 503" in text and "very-secret-token" not in text


def test_unreachable_webhook_is_recorded(tmp_path) -> None:
    layout = Layout.at(tmp_path)
    sent = deliver(layout, alert(), webhook_url="http://127.0.0.1:9/hook")  # port 9: discard, refused
    assert sent is not None and sent.webhook.startswith("failed: ConnectError")


def test_without_a_webhook_alerts_still_land_in_the_file(tmp_path, monkeypatch) -> None:
    monkeypatch.delenv(WEBHOOK_ENV, raising=False)
    layout = Layout.at(tmp_path)
    assert deliver(layout, alert()).webhook == "not_configured"


# --- the sensor, over a real instance's event log -------------------------------------------------


@dg.asset(check_specs=[dg.AssetCheckSpec("always_warns", asset="toy"), dg.AssetCheckSpec("always_fails", asset="toy")])
def toy() -> dg.MaterializeResult:
    return dg.MaterializeResult(
        check_results=[
            dg.AssetCheckResult(check_name="always_warns", passed=False, severity=dg.AssetCheckSeverity.WARN, description="soft signal"),
            dg.AssetCheckResult(check_name="always_fails", passed=False, description="firewall breach"),
        ]
    )


@dg.asset
def broken() -> None:
    raise RuntimeError("boom")


def test_sensor_notices_failed_runs_and_checks_once(tmp_path, monkeypatch) -> None:
    instance = dg.DagsterInstance.ephemeral()
    with serve(lambda path, body: (200, b"ok")) as server:
        monkeypatch.setenv(WEBHOOK_ENV, server.url + SECRET_HOOK_PATH)
        dg.materialize([toy], instance=instance)
        dg.materialize([broken], instance=instance, raise_on_error=False)
        paths = DistillPaths(root=str(tmp_path))
        context = dg.build_sensor_context(instance=instance, resources={"paths": paths})
        distill_alerts(context)
        cursor = context.cursor
        again = dg.build_sensor_context(instance=instance, cursor=cursor, resources={"paths": paths})
        distill_alerts(again)
    rows = list(iter_json_rows(Layout.at(tmp_path).alerts_file))
    kinds = sorted(row["kind"] for row in rows)
    assert kinds == ["check_failure", "check_warning", "run_failure"]
    assert len(server.requests) == 3  # the second tick found nothing new
    assert all(row["webhook"] == "delivered" for row in rows)
    assert "very-secret-token" not in Layout.at(tmp_path).alerts_file.read_text()
