"""The nightly schedule. ``DISTILL_NIGHTLY_CRON`` overrides the default 02:00 UTC."""

import os

import dagster as dg

from distillation_pipeline.defs.pipeline.jobs import distill_pipeline

nightly = dg.ScheduleDefinition(
    name="distill_nightly",
    job=distill_pipeline,
    cron_schedule=os.environ.get("DISTILL_NIGHTLY_CRON", "0 2 * * *"),
    execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Runs the whole distillation pipeline every night (02:00 UTC unless DISTILL_NIGHTLY_CRON says otherwise).",
)

SCHEDULES = [nightly]
