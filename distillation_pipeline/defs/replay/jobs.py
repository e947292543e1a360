"""The ``replay`` job: one replay run (spec section 7), from the launchpad, the sensor or the CLI.

The op runs in the ``llm`` concurrency pool, so however many replay runs are launched at once,
only as many call the model server as the pool allows (set the limit on the instance, e.g.
``dagster instance concurrency set llm 1``, or ``concurrency: pools: default_limit: 1`` in
dagster.yaml): a llama.cpp server answers one request at a time, and a queue of runs waiting
their turn is better than a pile of requests timing out.

A gate failure is a result, not an error: the run succeeds and its metadata says failed. The
run fails only when there is no answer to judge (bad request, missing corpus, model unreachable).
"""

import dagster as dg
from pydantic import Field

from distillation_pipeline.defs.replay.resources import ModelEndpoint
from distillation_pipeline.defs.resources import DistillPaths
from distillation_pipeline.replay.client import ModelError
from distillation_pipeline.replay.gate import GateConfig
from distillation_pipeline.replay.retrieval import RetrievalError
from distillation_pipeline.replay.runner import DEFAULT_MAX_TOKENS, DEFAULT_TOP_K, ReplayUsageError, run_replay

LLM_POOL = "llm"
_GATE = GateConfig()


class ReplayConfig(dg.Config):
    """What to replay and how. Only ``task`` is required."""

    task: str = Field(description="the task to answer")
    task_id: str = Field(default="", description="task id for the run log; empty: replay-<first 12 hex of task_hash>")
    local_only: bool = Field(default=False, description="never escalate, even when the gate fails")
    allow_escalation: bool = Field(default=False, description="on a failed gate, ask the escalation model")
    no_retrieval: bool = Field(default=False, description="the explicit baseline: no RAG grounding")
    top_k: int = Field(default=DEFAULT_TOP_K, description="records to retrieve before the split")
    retrieval_mode: str = Field(default="jaccard", description="jaccard (indexed), jaccard_exact (scan) or bm25")
    max_tokens: int = Field(default=DEFAULT_MAX_TOKENS, description="completion budget per model call")
    gate_min_chars: int = Field(default=_GATE.min_chars, description="gate: shortest acceptable answer")
    gate_max_chars: int = Field(default=_GATE.max_chars, description="gate: longest acceptable answer")
    gate_min_checklist_overlap: float = Field(
        default=_GATE.min_checklist_overlap, description="gate: share of checklist tokens the answer must use"
    )
    request_file: str = Field(default="", description="queue request file this run came from (set by the sensor)")


@dg.op(
    pool=LLM_POOL,
    description="Retrieve from the RAG corpus, ask the local model, gate the answer, escalate if allowed, "
    "and append one replay_run.v1 row to data/_kb/replay_runs.jsonl.",
    tags={"distill/topic": "replay"},
)
def replay_task(
    context: dg.OpExecutionContext,
    config: ReplayConfig,
    paths: DistillPaths,
    local_model: ModelEndpoint,
    escalation_model: ModelEndpoint,
) -> dg.Output[dict]:
    layout = paths.layout()
    local_client = local_model.client()
    if local_client is None:
        raise dg.Failure(description="replay: the local model endpoint has no base_url")
    gate = GateConfig(
        min_chars=config.gate_min_chars,
        max_chars=config.gate_max_chars,
        min_checklist_overlap=config.gate_min_checklist_overlap,
    )
    try:
        run = run_replay(
            config.task,
            layout,
            local_client,
            escalation_model.client(),
            local_only=config.local_only,
            allow_escalation=config.allow_escalation,
            no_retrieval=config.no_retrieval,
            task_id=config.task_id or None,
            run_id=context.run_id,
            top_k=config.top_k,
            retrieval_mode=config.retrieval_mode,
            gate=gate,
            max_tokens=config.max_tokens,
        )
    except (ReplayUsageError, RetrievalError, ModelError) as exc:
        kind = getattr(exc, "kind", "usage" if isinstance(exc, ReplayUsageError) else "retrieval")
        raise dg.Failure(description=f"replay: {exc}", metadata={"error_kind": kind}) from None
    final_gate = next((call.gate for call in reversed(run.calls) if call.ok), [])
    metadata: dict = {
        "validation_passed": run.validation_passed,
        "escalated": run.escalated,
        "retrieval_mode": run.retrieval_mode,
        "retrieved": len(run.retrieved),
        "exemplars": len(run.bundle.exemplars),
        "warnings": len(run.bundle.warnings),
        "checklist_steps": len(run.bundle.checklist),
        "models_called": ", ".join(run.models_called),
        "latency_ms": dg.MetadataValue.float(run.latency_ms),
        "task_id": run.task_id,
        "replay_log": dg.MetadataValue.path(str(layout.replay_log)),
        "output": dg.MetadataValue.md(f"```\n{run.output}\n```"),
    }
    for check in final_gate:
        if isinstance(check.value, (int, float)):
            metadata[f"gate/{check.name}"] = dg.MetadataValue.float(float(check.value))
        metadata[f"gate/{check.name}/passed"] = check.passed
    if config.request_file:
        metadata["request_file"] = config.request_file
    context.log.info(
        f"replay {'passed' if run.validation_passed else 'failed'} the gate"
        f"{' after escalation' if run.escalated else ''}; logged to {layout.replay_log}"
    )
    return dg.Output(run.model_dump(mode="json"), metadata=metadata)


@dg.job(
    name="replay",
    description="One replay run (spec section 7): retrieval-grounded local model answer, deterministic gate, "
    "escalation only when allowed, logged back into data/_kb/ as evidence for the next pipeline run.",
    tags={"distill/topic": "replay"},
)
def replay_job() -> None:
    replay_task()
