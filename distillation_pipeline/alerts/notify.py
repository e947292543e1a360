"""Deliver an alert once: append it to ``reports/alerts.jsonl``, and POST it to a webhook if set.

The webhook URL comes from ``DISTILL_ALERT_WEBHOOK_URL`` and is never logged, stored or put in
an error message (Slack webhook URLs are credentials). A delivery that fails after its retries
is recorded on the alert line as ``failed: <why>``; it never fails the sensor that sent it.
"""

import logging
import os
import time

import httpx
import orjson

from distillation_pipeline.lib.atomic import append_lines_locked
from distillation_pipeline.lib.jsonl import dumps_line
from distillation_pipeline.lib.layout import Layout
from distillation_pipeline.schemas import AlertRecord

WEBHOOK_ENV = "DISTILL_ALERT_WEBHOOK_URL"
log = logging.getLogger(__name__)
# httpx logs every request with its full URL at INFO; a Slack webhook URL is a credential.
logging.getLogger("httpx").setLevel(logging.WARNING)

_ICON = {"error": ":red_circle:", "warn": ":large_yellow_circle:"}


def slack_payload(alert: AlertRecord) -> dict:
    """A Slack incoming-webhook message (``text`` for notifications, ``blocks`` for the body)."""
    where = alert.asset_key + (f" / {alert.check_name}" if alert.check_name else "") if alert.asset_key else alert.job_name
    title = f"{_ICON[alert.severity]} distill {alert.kind.replace('_', ' ')}: {where}"
    return {
        "text": f"{title}\n{alert.message}",
        "blocks": [
            {"type": "section", "text": {"type": "mrkdwn", "text": f"*{title}*\n{alert.message}"}},
            {"type": "context", "elements": [{"type": "mrkdwn", "text": f"run `{alert.run_id}` · {alert.occurred_at.isoformat()}"}]},
        ],
    }


def post_webhook(url: str, payload: dict, *, timeout_s: float = 5.0, attempts: int = 3, backoff_s: float = 0.5) -> str:
    """POST with a timeout and retries; returns ``delivered`` or ``failed: <why>`` (never the URL)."""
    why = "no attempt made"
    for attempt in range(1, attempts + 1):
        try:
            response = httpx.post(url, json=payload, timeout=timeout_s)
            if response.status_code < 300:
                return "delivered"
            why = f"HTTP {response.status_code}"
            if response.status_code < 500 and response.status_code != 429:
                break  # a 4xx other than rate limiting will not get better by retrying
        except httpx.TimeoutException:
            why = f"timed out after {timeout_s:g}s"
        except httpx.HTTPError as exc:
            why = type(exc).__name__  # the exception text can contain the URL
        except Exception as exc:  # noqa: BLE001 - a malformed URL (InvalidURL, UnicodeError...) will not get better
            return f"failed: {type(exc).__name__} (malformed webhook URL?)"
        if attempt < attempts:
            time.sleep(backoff_s * 2 ** (attempt - 1))
    return f"failed: {why} after {attempt} attempt(s)"


def already_alerted(layout: Layout, alert_id: str) -> bool:
    if not layout.alerts_file.exists():
        return False
    needle = b'"id":' + orjson.dumps(alert_id)
    with open(layout.alerts_file, "rb") as handle:
        return any(needle in line for line in handle)


def deliver(layout: Layout, alert: AlertRecord, *, webhook_url: str | None = None) -> AlertRecord | None:
    """Record and send an alert; ``None`` when this event was already alerted."""
    if already_alerted(layout, alert.id):
        return None
    url = webhook_url if webhook_url is not None else os.environ.get(WEBHOOK_ENV)
    status = post_webhook(url, slack_payload(alert)) if url else "not_configured"
    recorded = alert.model_copy(update={"webhook": status})
    AlertRecord.model_validate(recorded.model_dump())
    append_lines_locked(layout.alerts_file, [dumps_line(recorded.model_dump(mode="json"))])
    log.warning("alert %s [%s] %s (webhook: %s)", recorded.kind, recorded.severity, recorded.message, status)
    return recorded
