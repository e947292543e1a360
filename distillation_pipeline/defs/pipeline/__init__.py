"""The nightly distillation graph: evidence -> scored runs -> datasets -> run summary."""

import dagster as dg

from distillation_pipeline.defs.pipeline import assets, checks, jobs, schedules, sensors

defs = dg.Definitions(
    assets=dg.load_assets_from_modules([assets]),
    asset_checks=dg.load_asset_checks_from_modules([checks]),
    jobs=jobs.JOBS,
    schedules=schedules.SCHEDULES,
    sensors=sensors.SENSORS,
)
