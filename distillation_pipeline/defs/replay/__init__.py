"""Replay in Dagster: the ``replay`` job, the replay queue sensor and the model endpoints.

``paths`` (DistillPaths) is not provided here: the project definitions provide it once for
every topic (Dagster refuses two different resources under one key when merging). Use
``standalone_defs`` to load replay on its own.
"""

import dagster as dg

from distillation_pipeline.defs.replay.jobs import replay_job
from distillation_pipeline.defs.replay.resources import escalation_endpoint_from_env, local_endpoint_from_env
from distillation_pipeline.defs.replay.sensors import replay_queue_sensor
from distillation_pipeline.defs.resources import DistillPaths, default_root

defs = dg.Definitions(
    jobs=[replay_job],
    sensors=[replay_queue_sensor],
    resources={
        "local_model": local_endpoint_from_env(),
        "escalation_model": escalation_endpoint_from_env(),
    },
)


def standalone_defs(root: str | None = None) -> dg.Definitions:
    """Replay's definitions with their own ``paths`` resource, for use without the project definitions."""
    return dg.Definitions.merge(defs, dg.Definitions(resources={"paths": DistillPaths(root=root or default_root())}))
