"""The replay queue sensor: one ``replay`` run per new request file in ``data/replay_queue/``.

Each request's key (file name + content hash) is its run key and is also stamped on the run as
the ``distill/replay_request`` tag. The sensor skips keys already on a run in this instance, on
top of Dagster's own run-key dedupe, so a request is never run twice, even across sensor resets.
Request files that are not valid are reported in the tick and never launched.
"""

import dagster as dg

from distillation_pipeline.defs.replay.jobs import replay_job
from distillation_pipeline.defs.resources import DistillPaths
from distillation_pipeline.replay.queue import QueueRequest, RejectedRequest, read_queue

REQUEST_TAG = "distill/replay_request"


def launched_request_keys(instance: dg.DagsterInstance) -> set[str]:
    for key, values in instance.get_run_tags(tag_keys=[REQUEST_TAG]):
        if key == REQUEST_TAG:
            return set(values)
    return set()


def run_request_for(request: QueueRequest) -> dg.RunRequest:
    config = {
        "task": request.task,
        "local_only": request.local_only,
        "allow_escalation": request.allow_escalation,
        "no_retrieval": request.no_retrieval,
        "request_file": request.name,
    }
    if request.task_id:
        config["task_id"] = request.task_id
    return dg.RunRequest(
        run_key=request.key,
        run_config={"ops": {"replay_task": {"config": config}}},
        tags={REQUEST_TAG: request.key},
    )


@dg.sensor(
    job=replay_job,
    minimum_interval_seconds=15,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Launches one replay run per new request file in data/replay_queue/ (JSON: task and flags); "
    "never the same request twice.",
)
def replay_queue_sensor(context: dg.SensorEvaluationContext, paths: DistillPaths):
    queue_dir = paths.layout().replay_queue_dir
    already = launched_request_keys(context.instance)
    requests, rejected = [], []
    for item in read_queue(queue_dir):
        if item.key in already:
            continue
        if isinstance(item, RejectedRequest):
            rejected.append(item)
            context.log.warning(f"replay queue: {item.name} refused: {item.reason}")
        else:
            requests.append(run_request_for(item))
    if not requests:
        why = f"; refused: {', '.join(f'{r.name} ({r.reason})' for r in rejected)}" if rejected else ""
        return dg.SkipReason(f"no new replay request in {queue_dir}{why}")
    return dg.SensorResult(run_requests=requests)
