"""The one Definitions object: the webserver, the daemon, the ``distill`` CLI and the tests load it."""

import dagster as dg

from distillation_pipeline.defs import alerts, pipeline, replay
from distillation_pipeline.defs.resources import DistillPaths, RunOptions, default_root


def build_definitions(root: str | None = None) -> dg.Definitions:
    merged = dg.Definitions.merge(pipeline.defs, alerts.defs, replay.defs)
    return dg.Definitions.merge(
        merged,
        dg.Definitions(resources={"paths": DistillPaths(root=root or default_root()), "options": RunOptions()}),
    )


defs = build_definitions()
