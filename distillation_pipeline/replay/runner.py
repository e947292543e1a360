"""One replay run, end to end: retrieve, assemble, call the local model, gate, maybe escalate, log.

Escalation happens only when the local answer fails the gate (or the local call fails) and the
caller passed ``allow_escalation``; ``local_only`` forbids it, and asking for both is a usage
error rather than a silent choice. ``no_retrieval`` is the explicit baseline: a missing corpus
with retrieval on is an error, never a quiet fall-back to the baseline.

A run whose model call could not complete at all (unreachable, timeout, HTTP error, malformed
answer) raises ``ModelError`` and is not logged: it says nothing about the answer quality the
log is evidence of. Every run that produced an answer is logged, passed or not.
"""

import hashlib
import time
import uuid
from datetime import datetime
from typing import Protocol

from distillation_pipeline.lib.layout import Layout
from distillation_pipeline.lib.timestamps import now_utc
from distillation_pipeline.replay.bundle import build_bundle
from distillation_pipeline.replay.client import Completion, ModelError
from distillation_pipeline.replay.gate import GateConfig, run_gate
from distillation_pipeline.replay.prompt import render_messages
from distillation_pipeline.replay.retrieval import MODES, open_index
from distillation_pipeline.replay.runlog import append_run
from distillation_pipeline.schemas import ModelCall, ReplayBundle, ReplayRun

DEFAULT_TOP_K = 8
DEFAULT_MAX_TOKENS = 160


class ReplayUsageError(ValueError):
    """The request itself is wrong (empty task, contradictory flags, no escalation endpoint)."""


class ChatModel(Protocol):
    host: str
    model: str

    def complete(self, messages: list[dict[str, str]], *, max_tokens: int = ...) -> Completion: ...


def task_hash(task: str) -> str:
    return hashlib.sha256(task.encode("utf-8")).hexdigest()


def default_task_id(task: str) -> str:
    return f"replay-{task_hash(task)[:12]}"


def index_cache_dir(layout: Layout):
    return layout.state_dir / "replay_index"


def run_replay(
    task: str,
    layout: Layout,
    local_client: ChatModel,
    escalation_client: ChatModel | None = None,
    *,
    local_only: bool = False,
    allow_escalation: bool = False,
    no_retrieval: bool = False,
    task_id: str | None = None,
    run_id: str | None = None,
    top_k: int = DEFAULT_TOP_K,
    retrieval_mode: str = "jaccard",
    gate: GateConfig = GateConfig(),
    max_tokens: int = DEFAULT_MAX_TOKENS,
    now: datetime | None = None,
) -> ReplayRun:
    if not task or not task.strip():
        raise ReplayUsageError("the task is empty")
    if local_only and allow_escalation:
        raise ReplayUsageError("--local-only forbids escalation; drop one of --local-only and --allow-escalation")
    if allow_escalation and escalation_client is None:
        raise ReplayUsageError("escalation was allowed but no escalation endpoint is configured")
    if top_k < 1:
        raise ReplayUsageError(f"top_k must be at least 1, got {top_k}")
    if retrieval_mode not in MODES:
        raise ReplayUsageError(f"unknown retrieval mode {retrieval_mode!r}; expected one of {MODES}")

    started = time.perf_counter()
    if no_retrieval:
        mode, hits = "none", []
        bundle = ReplayBundle(task=task)
    else:
        mode = retrieval_mode
        hits = open_index(layout.rag_file, index_cache_dir(layout)).search(task, k=top_k, mode=mode)
        bundle = build_bundle(task, hits)
    messages = render_messages(bundle)

    calls: list[ModelCall] = []
    errors: list[ModelError] = []
    local = _call("local", local_client, messages, bundle, gate, max_tokens, calls, errors)
    final = local
    escalated = False
    if not (local and local.gate_passed) and allow_escalation and not local_only:
        escalated = True
        final = _call("escalation", escalation_client, messages, bundle, gate, max_tokens, calls, errors)
    if final is None:
        raise errors[-1]  # the typed error of the call the answer was waiting for

    run = ReplayRun(
        run_id=run_id or str(uuid.uuid4()),
        task_id=task_id or default_task_id(task),
        task=task,
        task_hash=task_hash(task),
        retrieval_mode=mode,
        retrieved=[{"id": hit.id, "score": hit.score, "category": hit.category} for hit in hits],
        bundle=bundle,
        calls=calls,
        models_called=[call.model for call in calls],
        validation_passed=bool(final.gate_passed),
        escalated=escalated,
        output=final.output or "",
        latency_ms=round((time.perf_counter() - started) * 1000, 3),
        flags={"local_only": local_only, "allow_escalation": allow_escalation, "no_retrieval": no_retrieval},
        ts=now or now_utc(),
    )
    append_run(layout, run)
    return run


def _call(
    role: str,
    client: ChatModel,
    messages: list[dict[str, str]],
    bundle: ReplayBundle,
    gate: GateConfig,
    max_tokens: int,
    calls: list[ModelCall],
    errors: list[ModelError],
) -> ModelCall | None:
    """Call one model and gate its answer. Returns None (and records the error) if the call failed."""
    started = time.perf_counter()
    try:
        completion = client.complete(messages, max_tokens=max_tokens)
    except ModelError as exc:
        calls.append(
            ModelCall(
                role=role,
                base_url_host=client.host,
                model=client.model,
                latency_ms=round((time.perf_counter() - started) * 1000, 3),
                ok=False,
                error=f"{exc.kind}: {exc}",
            )
        )
        errors.append(exc)
        return None
    result = run_gate(completion.text, bundle.checklist, gate)
    call = ModelCall(
        role=role,
        base_url_host=client.host,
        model=client.model,
        latency_ms=completion.latency_ms,
        ok=True,
        output=completion.text,
        gate=result.checks,
        gate_passed=result.passed,
    )
    calls.append(call)
    return call
