"""Alerting: failed runs and failed or warning asset checks, notified once per event."""

import dagster as dg

from distillation_pipeline.defs.alerts.sensors import distill_alerts

defs = dg.Definitions(sensors=[distill_alerts])
