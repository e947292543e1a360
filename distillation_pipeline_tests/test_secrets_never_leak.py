"""Secrets never leak: the alert webhook URL and model API keys appear in no output, log or message.

The pipeline and alert side (the replay log has its own test): every secret the environment can
hold is set to a recognisable token, the real ``distill run-all`` runs twice in subprocesses on a
persistent Dagster instance (the second run fails, so there is a run failure to alert on, and a
soft check is made to warn), the alert sensor then delivers to a real local HTTP server, and
every byte under the root (data/, exports/, reports/, .dagster_home/ with its SQLite event log),
every captured stdout/stderr and every log record is searched for the tokens: zero hits.
"""

import logging
import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import dagster as dg
import pytest

from distillation_pipeline.alerts.notify import WEBHOOK_ENV, deliver
from distillation_pipeline.defs.alerts.sensors import distill_alerts
from distillation_pipeline.defs.resources import DistillPaths
from distillation_pipeline.lib.jsonl import iter_json_rows
from distillation_pipeline.lib.layout import Layout
from distillation_pipeline.sample import generate_substrate
from distillation_pipeline.schemas import AlertRecord
from distillation_pipeline_tests.http_server import serve

PINNED = "2026-11-01T00:00:00Z"
WEBHOOK_TOKEN = "hookSECRETa91f0c7e3b"  # the part of a Slack webhook URL that is the credential
LOCAL_KEY = "sk-localSECRET5d2e8f14c0"
ESCALATION_KEY = "sk-escSECRET0b7c3a9e61"
OPENAI_KEY = "sk-proj-openaiSECRET77c1d"
URL_PASSWORD = "pwSECRET3e9d0a"
SECRETS = (WEBHOOK_TOKEN, LOCAL_KEY, ESCALATION_KEY, OPENAI_KEY, URL_PASSWORD)


def secret_env(server_url: str) -> dict[str, str]:
    """Every place the project reads a credential from (names of key variables, keys, URLs)."""
    host = server_url.removeprefix("http://")
    return {
        WEBHOOK_ENV: f"{server_url}/services/T0000/B0000/{WEBHOOK_TOKEN}",
        "DISTILL_LOCAL_MODEL_URL": server_url,
        "DISTILL_LOCAL_API_KEY_ENV": "DISTILL_TEST_LOCAL_KEY",
        "DISTILL_TEST_LOCAL_KEY": LOCAL_KEY,
        "DISTILL_ESCALATION_MODEL_URL": f"http://user:{URL_PASSWORD}@{host}/v1",
        "DISTILL_ESCALATION_MODEL": "big-model",
        "DISTILL_ESCALATION_API_KEY_ENV": "DISTILL_TEST_ESCALATION_KEY",
        "DISTILL_TEST_ESCALATION_KEY": ESCALATION_KEY,
        "OPENAI_API_KEY": OPENAI_KEY,
    }


def hits(haystack: bytes, where: str) -> list[str]:
    return [f"{secret} in {where}" for secret in SECRETS if secret.encode() in haystack]


def hits_under(root: Path) -> list[str]:
    found = []
    for path in sorted(root.rglob("*")):
        if path.is_file() and not path.is_symlink():
            found += hits(path.read_bytes(), str(path.relative_to(root)))
    return found


def distill(root: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    """The real command, on the persistent instance under <root>/.dagster_home (the sensor reads it)."""
    clean = {k: v for k, v in os.environ.items() if k not in ("DISTILL_DAGSTER_INSTANCE", "DAGSTER_HOME")}
    return subprocess.run(
        [sys.executable, "-m", "distillation_pipeline.cli", *args, "run-all", "--root", str(root), "--recorded-at", PINNED],
        env={**clean, **env}, capture_output=True, timeout=600,
    )


def damage_evidence(layout: Layout) -> None:
    """Same length, so the commit record does not notice; the provenance round-trip does (hard failure)."""
    firsts: dict[str, Path] = {}
    for path in sorted(layout.evidence_dir.rglob("*.jsonl")):
        firsts.setdefault(path.stem, path)
    for path in firsts.values():
        data = path.read_bytes()
        end = data.index(b"\n")
        path.write_bytes(b"#" * end + data[end:])


@pytest.fixture(scope="module")
def failing_runs(tmp_path_factory):
    """Two real ``distill run-all`` with every secret set: the first passes with a soft warning
    (any quarantined row warns), the second fails hard on damaged evidence (run failure).
    The webhook server stays up for the sensor; its first delivery fails with an error body
    that echoes the URL (servers do that), so the retry path runs too."""
    root = tmp_path_factory.mktemp("secrets") / "root"
    generate_substrate(root, rows=400, seed=7)
    calls: list[str] = []

    def flaky_echoing_hook(path: str, body: dict) -> tuple[int, bytes]:
        calls.append(path)
        return (500, f"no such hook {path}".encode()) if len(calls) == 1 else (200, b"ok")

    with serve(flaky_echoing_hook) as server:
        env = {**secret_env(server.url), "DISTILL_QUARANTINE_WARN_PCT": "0"}
        first = distill(root, env)
        damage_evidence(Layout.at(root))
        second = distill(root, env, "-v")  # verbose: Dagster's own log lines and tracebacks too
        yield root, env, server, calls, [first, second]


@pytest.mark.slow
def test_no_secret_in_any_file_or_output_of_the_pipeline_runs(failing_runs) -> None:
    root, _, _, _, (first, second) = failing_runs
    assert first.returncode in (0, 1), first.stderr.decode()[-2000:]
    assert second.returncode == 1, second.stderr.decode()[-2000:]
    assert b"Traceback" in second.stderr or b"FAILED" in second.stdout  # the failure's details were captured
    assert any((root / ".dagster_home").rglob("*.db"))  # the event log is on disk, and searched
    found = hits_under(root)
    found += hits(first.stdout + first.stderr, "first run's output")
    found += hits(second.stdout + second.stderr, "second run's output")
    assert found == []


@pytest.mark.slow
def test_alerts_for_those_runs_reach_the_webhook_and_leak_nothing(failing_runs, monkeypatch, caplog) -> None:
    """The sensor, over the persistent instance the CLI and the UI share (SQLite, run-sharded)."""
    root, env, server, calls, _ = failing_runs
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    caplog.set_level(logging.DEBUG)
    instance = dg.DagsterInstance.from_config(str(root / ".dagster_home"))
    try:
        context = dg.build_sensor_context(instance=instance, resources={"paths": DistillPaths(root=str(root))})
        distill_alerts(context)
    finally:
        instance.dispose()

    alerts = list(iter_json_rows(Layout.at(root).alerts_file))
    kinds = {row["kind"] for row in alerts}
    assert "run_failure" in kinds and "check_warning" in kinds, kinds
    assert all(WEBHOOK_TOKEN in path for path in calls) and len(calls) == len(alerts) + 1  # one retry
    assert {row["webhook"] for row in alerts} == {"delivered"}
    found = hits_under(root) + hits(caplog.text.encode(), "log records")
    found += hits(repr([r["json"] for r in server.requests]).encode(), "webhook payloads")
    assert found == []


def _alert() -> AlertRecord:
    return AlertRecord(
        id="check:7", kind="check_failure", severity="error", run_id="run-1", job_name="distill_pipeline",
        asset_key="sft_dataset", check_name="no_credentials", message="1 violation(s)",
        occurred_at=datetime(2026, 11, 1, tzinfo=UTC), webhook="pending",
    )


@pytest.mark.parametrize(
    "url",
    [
        f"http://127.0.0.1:9/services/{WEBHOOK_TOKEN}",  # nothing listening
        f"ftp://127.0.0.1/{WEBHOOK_TOKEN}",  # unsupported scheme
        f"http://127.0.0.1:{WEBHOOK_TOKEN}/hook",  # a URL httpx refuses to parse: "Invalid port: '<token>'"
        f"http://[{WEBHOOK_TOKEN}]/hook",
    ],
    ids=["refused", "bad-scheme", "bad-port", "bad-ipv6"],
)
def test_an_undeliverable_webhook_is_recorded_without_its_url(tmp_path, caplog, url: str) -> None:
    """However the URL fails, the alert is recorded as failed and the URL appears nowhere."""
    caplog.set_level(logging.DEBUG)
    layout = Layout.at(tmp_path)
    sent = deliver(layout, _alert(), webhook_url=url)
    assert sent is not None and sent.webhook.startswith("failed: ")
    assert hits_under(tmp_path) == [] and hits(caplog.text.encode(), "log records") == []
