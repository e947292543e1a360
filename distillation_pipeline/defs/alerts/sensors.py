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


def alert_for(record: dg.EventLogRecord) -> AlertRecord | None:
    entry = record.event_log_entry
    event = entry.dagster_event
    occurred_at = datetime.fromtimestamp(entry.timestamp, tz=UTC)
    if event.event_type == dg.DagsterEventType.RUN_FAILURE:
        return AlertRecord(
            id=f"run_failure:{record.storage_id}",
            kind="run_failure",
            severity="error",
            run_id=entry.run_id,
            job_name=entry.job_name,
            message=(event.message or "run failed")[:500],
            occurred_at=occurred_at,
            webhook="pending",
        )
    evaluation = event.event_specific_data
    if evaluation.passed:
        return None
    warn = evaluation.severity == dg.AssetCheckSeverity.WARN
    key = evaluation.asset_check_key
    return AlertRecord(
        id=f"check:{record.storage_id}",
        kind="check_warning" if warn else "check_failure",
        severity="warn" if warn else "error",
        run_id=entry.run_id,
        job_name=entry.job_name,
        asset_key=key.asset_key.to_user_string(),
        check_name=key.name,
        message=(evaluation.description or f"check {key.name} failed")[:500],
        occurred_at=occurred_at,
        webhook="pending",
    )


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
    cursor = int(context.cursor or 0)
    default_layout = paths.layout()
    records: list[dg.EventLogRecord] = list(
        context.instance.fetch_run_status_changes(
            dg.RunStatusChangeRecordsFilter(event_type=dg.DagsterEventType.RUN_FAILURE, after_storage_id=cursor),
            limit=_BATCH,
            ascending=True,
        ).records
    )
    records += context.instance.get_event_records(
        dg.EventRecordsFilter(event_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION, after_cursor=cursor),
        limit=_BATCH,
        ascending=True,
    )
    records.sort(key=lambda record: record.storage_id)
    sent = 0
    for record in records:
        layout = _run_layout(context.instance, record.run_id, default_layout)
        alert = alert_for(record)
        if alert is not None and deliver(layout, alert) is not None:
            sent += 1
        is_pipeline_failure = (
            record.event_log_entry.dagster_event.event_type == dg.DagsterEventType.RUN_FAILURE
            and record.event_log_entry.job_name == PIPELINE_JOB_NAME
        )
        if is_pipeline_failure and layout.run_dir(record.run_id).exists() and not summary_path(layout, record.run_id).exists():
            finalize_run(layout, record.run_id, failed_checks=_failed_checks(context.instance, record.run_id))
        cursor = max(cursor, record.storage_id)
    context.update_cursor(str(cursor))
    return dg.SkipReason(f"{sent} alert(s) sent, {len(records)} event(s) read")
