"""The alert sensor: reads new run failures and asset check evaluations from the event log.

The cursor is the last event-log storage id handled, so each event is looked at once; alert ids
are derived from the storage id as well, so a sensor tick that dies between delivering and
saving its cursor does not notify twice.
"""

from datetime import UTC, datetime
from pathlib import Path

import dagster as dg

from distillation_pipeline.alerts.notify import deliver
from distillation_pipeline.defs.pipeline.jobs import PIPELINE_JOB_NAME
from distillation_pipeline.defs.resources import DistillPaths
from distillation_pipeline.lib.layout import Layout
from distillation_pipeline.receipts.summary import finalize_run, summary_path
from distillation_pipeline.schemas import AlertRecord

_BATCH = 500


def _run_layout(instance: dg.DagsterInstance, run_id: str, default: Layout) -> Layout:
    """Alerts and summaries go where the run wrote its data (CLI runs may use another --root)."""
    run = instance.get_run_by_id(run_id)
    try:
        root = run.run_config["resources"]["paths"]["config"]["root"]  # type: ignore[index]
        return Layout.at(Path(root))
    except (AttributeError, KeyError, TypeError):
        return default


def _failed_checks(instance: dg.DagsterInstance, run_id: str) -> list[str]:
    failed = []
    for entry in instance.all_logs(run_id, of_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION):
        evaluation = entry.dagster_event.event_specific_data
        if not evaluation.passed:
            key = evaluation.asset_check_key
            failed.append(f"{key.asset_key.to_user_string()}:{key.name} ({evaluation.severity.value})")
    return failed


def _occurred(entry: dg.EventLogEntry) -> datetime:
    return datetime.fromtimestamp(entry.timestamp, tz=UTC)


def run_failure_alert(record: dg.EventLogRecord) -> AlertRecord:
    entry = record.event_log_entry
    return AlertRecord(
        id=f"run_failure:{entry.run_id}",
        kind="run_failure",
        severity="error",
        run_id=entry.run_id,
        job_name=entry.job_name,
        message=(entry.dagster_event.message or "run failed")[:500],
        occurred_at=_occurred(entry),
        webhook="pending",
    )


def check_alerts(instance: dg.DagsterInstance, run_id: str) -> list[AlertRecord]:
    """Failed or warning asset checks of one finished run."""
    alerts = []
    for entry in instance.all_logs(run_id, of_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION):
        evaluation = entry.dagster_event.event_specific_data
        if evaluation.passed:
            continue
        warn = evaluation.severity == dg.AssetCheckSeverity.WARN
        key = evaluation.asset_check_key
        asset = key.asset_key.to_user_string()
        alerts.append(
            AlertRecord(
                id=f"check:{run_id}:{asset}:{key.name}",
                kind="check_warning" if warn else "check_failure",
                severity="warn" if warn else "error",
                run_id=run_id,
                job_name=entry.job_name,
                asset_key=asset,
                check_name=key.name,
                message=(evaluation.description or f"check {key.name} failed")[:500],
                occurred_at=_occurred(entry),
                webhook="pending",
            )
        )
    return alerts


@dg.sensor(
    name="distill_alerts",
    minimum_interval_seconds=30,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description=(
        "Notifies once per event when a run fails or an asset check fails (firewall breach, drift alert) or warns: "
        "appends an alert to reports/alerts.jsonl, logs it, and POSTs a Slack-compatible message when "
        "DISTILL_ALERT_WEBHOOK_URL is set. Also writes the summary of a pipeline run that stopped early."
    ),
)
def distill_alerts(context: dg.SensorEvaluationContext, paths: DistillPaths) -> dg.SkipReason:
    # Walk finished runs (run status changes live in run storage, which every instance can
    # query by storage id, SQLite's run-sharded event logs included), then read each run's
    # check evaluations from its own log.
    cursor = int(context.cursor or 0)
    default_layout = paths.layout()
    finished: list[dg.EventLogRecord] = []
    for event_type in (dg.DagsterEventType.RUN_SUCCESS, dg.DagsterEventType.RUN_FAILURE):
        finished += context.instance.fetch_run_status_changes(
            dg.RunStatusChangeRecordsFilter(event_type=event_type, after_storage_id=cursor),
            limit=_BATCH,
            ascending=True,
        ).records
    finished.sort(key=lambda record: record.storage_id)
    sent = 0
    for record in finished:
        run_id = record.event_log_entry.run_id
        layout = _run_layout(context.instance, run_id, default_layout)
        failed = record.event_log_entry.dagster_event.event_type == dg.DagsterEventType.RUN_FAILURE
        alerts = check_alerts(context.instance, run_id) + ([run_failure_alert(record)] if failed else [])
        sent += sum(deliver(layout, alert) is not None for alert in alerts)
        if failed and record.event_log_entry.job_name == PIPELINE_JOB_NAME:
            if layout.run_dir(run_id).exists() and not summary_path(layout, run_id).exists():
                finalize_run(layout, run_id, failed_checks=_failed_checks(context.instance, run_id))
        cursor = max(cursor, record.storage_id)
    context.update_cursor(str(cursor))
    return dg.SkipReason(f"{sent} alert(s) sent for {len(finished)} finished run(s)")
