"""The one Definitions object: the webserver, the daemon and the tests load it.

``distill`` resolves the same pipeline job from the pipeline topic alone
(``defs.execute.pipeline_definitions``), so a command does not import the replay and alerts
topics it never runs; a test holds the two jobs equal.
"""

import dagster as dg

from distillation_pipeline.defs import alerts, pipeline, replay
from distillation_pipeline.defs.execute import pipeline_resources


def build_definitions(root: str | None = None) -> dg.Definitions:
    merged = dg.Definitions.merge(pipeline.defs, alerts.defs, replay.defs)
    return dg.Definitions.merge(merged, dg.Definitions(resources=pipeline_resources(root)))


defs = build_definitions()
