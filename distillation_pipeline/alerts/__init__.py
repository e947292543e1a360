"""Alerts: a failed run or asset check becomes one line in reports/alerts.jsonl, and a webhook post."""
