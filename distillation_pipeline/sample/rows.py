"""Well-formed rows for every stream of spec section 2, with the verdict a task's profile asks for.

``RowForge.build(stream, task, category, epoch)`` returns a plain dict with exactly the contract's
field names and vocabularies. Rows are built as dicts and dumped with orjson: constructing a
pydantic model per row would dominate the run time at a million rows. ``replay_runs`` is the
exception: it is a small share, and building it with ``schemas.ReplayRun`` guarantees it is the
shape replay itself writes.
"""

import hashlib
import random
from collections.abc import Callable
from typing import Any

from distillation_pipeline.sample import clock, text
from distillation_pipeline.sample.repo import Repo
from distillation_pipeline.sample.tasks import ACCEPTED, PARTIAL, REJECTED, REVIEW, Task
from distillation_pipeline.schemas import GateCheck, ModelCall, ReplayBundle, ReplayRun, RetrievedItem

Row = dict[str, Any]

# The field that carries each stream's event time, as its writer names it.
TIME_FIELD = {
    "scrum_reviews": "created_at", "observer_reviews": "ts", "audits": "ts", "contract_analyses": "created_at",
    "audit_discrepancies": "ts", "replay_runs": "ts", "auto_apply": "ts", "outcomes": "created_at",
    "mode_experiments": "ts", "audit_facts": "ts", "distilled_facts": "extracted_at",
    "distilled_procedures": "extracted_at", "distilled_config_hints": "extracted_at",
    "observer_escalations": "ts", "model_trust": "ts", "legacy_notes": "when",
}
# The free-text field that carries most of a row's content (where secrets and huge pastes land).
TEXT_FIELD = {
    "scrum_reviews": "review", "observer_reviews": "output", "audits": "evidence", "contract_analyses": "analysis",
    "audit_discrepancies": "claim", "replay_runs": "output", "auto_apply": "patch", "outcomes": "summary",
    "mode_experiments": "response", "audit_facts": "fact", "distilled_facts": "text",
    "distilled_procedures": "text", "distilled_config_hints": "text", "observer_escalations": "context",
    "legacy_notes": "note",
}
HALLUCINATION_RATE = 0.02  # share of cited paths that are not in repo_files.txt
LEGACY_AUDIT_SHARE = 0.08  # audits rows from the old writer: verdict pass/fail instead of severity

TASK_KINDS = ("scrum_review", "observer_check", "audit", "contract_analysis", "code_patch", "pr_audit")
_TRUST_BASE = {model: 0.35 + 0.08 * rank for rank, model in enumerate(sorted(set(text.MODELS)))}
_ID_PREFIX = {
    "scrum_reviews": "rev", "observer_reviews": "obs", "audits": "F", "contract_analyses": "ca",
    "audit_discrepancies": "disc", "replay_runs": "replay", "auto_apply": "apply", "outcomes": "out",
    "mode_experiments": "exp", "audit_facts": "fact", "distilled_facts": "df", "distilled_procedures": "dp",
    "distilled_config_hints": "dch", "observer_escalations": "esc", "legacy_notes": "note",
}


class RowForge:
    def __init__(self, rng: random.Random, repo: Repo) -> None:
        self.rng = rng
        self.repo = repo
        self._sequence: dict[str, int] = {}
        self._task_files: tuple[str, ...] = ()
        self._component_files: tuple[str, ...] = ()
        self.hallucinated_in_row = 0  # read by the caller after each build
        self._builders: dict[str, Callable[[Task, str, float], Row]] = {
            "scrum_reviews": self._scrum_review, "observer_reviews": self._observer_review,
            "audits": self._audit, "contract_analyses": self._contract_analysis,
            "audit_discrepancies": self._audit_discrepancy, "replay_runs": self._replay_run,
            "auto_apply": self._auto_apply, "outcomes": self._outcome, "mode_experiments": self._mode_experiment,
            "distilled_facts": self._distilled_fact, "distilled_procedures": self._distilled_procedure,
            "distilled_config_hints": self._distilled_config_hint, "observer_escalations": self._escalation,
            "model_trust": self._model_trust, "legacy_notes": self._legacy_note,
        }

    def build(self, stream: str, task: Task, category: str, epoch: float) -> Row:
        self._focus(task)
        return self._builders[stream](task, category, epoch)

    def audit_fact(self, task: Task, finding_id: str, epoch: float) -> Row:
        """An extraction row about one audit finding (audit_facts inherit via finding_id)."""
        self._focus(task)
        return {"fact_id": self._id("audit_facts"), "finding_id": finding_id, "task_id": task.task_id,
                "fact": text.audit_fact(self.rng, self.cite, finding_id), "ts": clock.stamp(epoch, self.rng)}

    # --- citations ---------------------------------------------------------------------------

    def _focus(self, task: Task) -> None:
        self._task_files = task.files
        self._component_files = self.repo.by_component[task.component]
        self.hallucinated_in_row = 0

    def cite(self) -> str:
        """A path to cite: mostly the task's own files, sometimes its component, rarely invented."""
        draw = self.rng.random()
        if draw < HALLUCINATION_RATE:
            self.hallucinated_in_row += 1
            return self.rng.choice(self.repo.hallucinated)
        if draw < 0.7:
            return self.rng.choice(self._task_files)
        if draw < 0.9:
            return self.rng.choice(self._component_files)
        return self.rng.choice(self.repo.files)

    def _id(self, stream: str) -> str:
        number = self._sequence.get(stream, 0) + 1
        self._sequence[stream] = number
        # The sequence keeps ids unique; the random tail keeps them from looking like row numbers.
        return f"{_ID_PREFIX[stream]}-{number:07d}-{self.rng.getrandbits(20):05x}"

    # --- verdict streams ---------------------------------------------------------------------

    def _scrum_review(self, task: Task, category: str, epoch: float) -> Row:
        attempt = self._attempt(category)
        return {"review_id": self._id("scrum_reviews"), "task_id": task.task_id, "task": task.text,
                "file": self.cite(), "model": self.rng.choice(text.MODELS), "accepted_on_attempt": attempt,
                "review": text.scrum_review(self.rng, self.cite, task.text, attempt),
                "created_at": clock.stamp(epoch, self.rng)}

    def _attempt(self, category: str) -> int | None:
        if category == ACCEPTED:
            return 1
        if category == REJECTED:
            return None
        # Partial: a retry or two, sometimes a costly 4+ (the scorer's high_cost reason).
        return self.rng.choice((2, 2, 3, 3, 3, 4, 5, 6)) if category == PARTIAL else 2

    def _observer_review(self, task: Task, category: str, epoch: float) -> Row:
        verdict = {ACCEPTED: "accept", REJECTED: "reject"}.get(category, "cycle")
        return {"review_id": self._id("observer_reviews"), "task_id": task.task_id, "task": task.text,
                "output": text.observer_output(self.rng, self.cite, task.text, verdict), "verdict": verdict,
                "notes": text.observer_notes(self.rng, verdict), "model": self.rng.choice(text.MODELS),
                "ts": clock.stamp(epoch, self.rng)}

    def _audit(self, task: Task, category: str, epoch: float) -> Row:
        row: Row = {"finding_id": f"P{task.phase:02d}-{self._id('audits')}", "task_id": task.task_id,
                    "phase": task.phase, "topic": text.SUBJECTS[self.rng.randrange(len(text.SUBJECTS))]}
        legacy = category in (ACCEPTED, REJECTED) and self.rng.random() < LEGACY_AUDIT_SHARE
        if legacy:
            grade = "pass" if category == ACCEPTED else "fail"
            row["verdict"] = grade
        else:
            grade = self.rng.choice({ACCEPTED: ("info", "low", "low"), REJECTED: ("high", "high", "critical")}
                                    .get(category, ("medium",)))
            row["severity"] = grade
        row["resolution"] = text.resolution(self.rng, task.phase)
        row["evidence"] = text.audit_evidence(self.rng, self.cite, row["topic"], grade)
        row["ts"] = clock.stamp(epoch, self.rng)
        return row

    def _contract_analysis(self, task: Task, category: str, epoch: float) -> Row:
        if category == ACCEPTED:
            markers, verdict, holds = [], "accept", True
        elif category == REJECTED:
            markers = self.rng.sample(text.FAILURE_MARKERS, self.rng.randrange(0, 3))
            verdict = "reject" if not markers or self.rng.random() < 0.5 else self.rng.choice(("accept", None))
            holds = False
        else:  # nobody decided: the scorer must send it to a human
            markers, verdict, holds = [], None, None
        return {"analysis_id": self._id("contract_analyses"), "task_id": task.task_id,
                "contract": text.contract(self.rng, task.component.replace("_", " ")),
                "analysis": text.contract_analysis(self.rng, self.cite, holds), "failure_markers": markers,
                "observer_verdict": verdict, "created_at": clock.stamp(epoch, self.rng)}

    def _audit_discrepancy(self, task: Task, category: str, epoch: float) -> Row:
        claim, observed = text.discrepancy(self.rng, self.cite)
        return {"discrepancy_id": self._id("audit_discrepancies"), "task_id": task.task_id, "task": task.text,
                "claim": claim, "observed": observed, "ts": clock.stamp(epoch, self.rng)}

    def _replay_run(self, task: Task, category: str, epoch: float) -> Row:
        return build_replay_run(self.rng, self.cite, self._id("replay_runs"), task, category, epoch)

    # --- telemetry streams -------------------------------------------------------------------

    def _auto_apply(self, task: Task, category: str, epoch: float) -> Row:
        if category == ACCEPTED:
            status = "committed"
        elif category == REJECTED:
            status = self.rng.choice(("reverted", "test_reverted", "build_reverted"))
        else:
            status = "skipped"
        path = self.cite()
        return {"apply_id": self._id("auto_apply"), "task_id": task.task_id, "task": task.text, "file": path,
                "patch": text.patch(self.rng, path), "status": status, "ts": clock.stamp(epoch, self.rng)}

    def _outcome(self, task: Task, category: str, epoch: float) -> Row:
        names = self.rng.sample(text.EVENT_NAMES, self.rng.randrange(2, 6))
        events = [{"name": name, "ok": True} for name in names]
        gap_signals = 0
        if category == REJECTED:
            events[self.rng.randrange(len(events))]["ok"] = False
        elif category in (PARTIAL, REVIEW):
            gap_signals = self.rng.randrange(1, 5)
        return {"outcome_id": self._id("outcomes"), "task_id": task.task_id,
                "summary": text.outcome_summary(self.rng, self.cite, events, gap_signals), "events": events,
                "gap_signals": gap_signals, "created_at": clock.stamp(epoch, self.rng)}

    def _mode_experiment(self, task: Task, category: str, epoch: float) -> Row:
        rng = self.rng
        latency = rng.randrange(800, 60_000)
        grounded = rng.uniform(0.8, 1.0)
        if category == PARTIAL:
            latency = rng.randrange(120_001, 400_000)  # slow: over the 120 s budget
        elif category == REJECTED:
            grounded = rng.uniform(0.05, 0.49)
        elif category == REVIEW:
            grounded = rng.uniform(0.5, 0.79)
        empty = category == REJECTED and rng.random() < 0.15
        response = "" if empty else text.experiment_response(rng, self.cite, grounded >= 0.5)
        return {"experiment_id": self._id("mode_experiments"), "task_id": task.task_id,
                "mode": rng.choice(text.EXPERIMENT_MODES), "model": rng.choice(text.MODELS),
                "prompt": text.experiment_prompt(rng, self.cite, task.text), "response": response,
                "latency_ms": latency,
                "validation_results": {"grounded_fraction": round(grounded, 3),
                                       "citations": rng.randrange(0, 8), "hedges": int(grounded < 0.5)},
                "ts": clock.stamp(epoch, rng)}

    # --- extraction streams ------------------------------------------------------------------

    def _distilled(self, stream: str, task: Task, body: str, epoch: float) -> Row:
        return {"id": self._id(stream), "task_id": task.task_id, "text": body,
                "extracted_at": clock.stamp(epoch, self.rng)}

    def _distilled_fact(self, task: Task, category: str, epoch: float) -> Row:
        return self._distilled("distilled_facts", task, text.fact(self.rng, self.cite), epoch)

    def _distilled_procedure(self, task: Task, category: str, epoch: float) -> Row:
        subject = text.SUBJECTS[self.rng.randrange(len(text.SUBJECTS))]
        return self._distilled("distilled_procedures", task, text.procedure(self.rng, self.cite, subject), epoch)

    def _distilled_config_hint(self, task: Task, category: str, epoch: float) -> Row:
        return self._distilled("distilled_config_hints", task, text.config_hint(self.rng, self.cite), epoch)

    def _escalation(self, task: Task, category: str, epoch: float) -> Row:
        return {"escalation_id": self._id("observer_escalations"), "task_id": task.task_id,
                "reason": self.rng.choice(text.ESCALATION_REASONS),
                "context": text.escalation_context(self.rng, self.cite, task.task_id),
                "ts": clock.stamp(epoch, self.rng)}

    # --- ledger and the unknown stream ---------------------------------------------------------

    def _model_trust(self, task: Task, category: str, epoch: float) -> Row:
        model = self.rng.choice(text.MODELS)
        score = min(1.0, max(0.0, _TRUST_BASE[model] + self.rng.uniform(-0.15, 0.15)))
        window_end = epoch - epoch % 86_400  # daily rollups, closed at midnight UTC
        return {"model": model, "task_kind": self.rng.choice(TASK_KINDS), "trust_score": round(score, 3),
                "window_start": clock.iso_z(window_end - 7 * 86_400), "window_end": clock.iso_z(window_end),
                "ts": clock.stamp(epoch, self.rng)}

    def _legacy_note(self, task: Task, category: str, epoch: float) -> Row:
        return {"note_id": self._id("legacy_notes"), "author": self.rng.choice(text.NOTE_AUTHORS),
                "task_id": task.task_id, "note": text.legacy_note(self.rng, self.cite),
                "when": clock.stamp(epoch, self.rng)}


# --- replay_runs: built with the schema replay itself writes ----------------------------------


def build_replay_run(rng: random.Random, cite: Callable[[], str], run_id: str, task: Task, category: str,
                     epoch: float) -> Row:
    """One ``replay_run.v1`` row: accepted = passed locally, partial = passed after escalation."""
    retrieval_mode = rng.choice(("jaccard", "jaccard", "jaccard", "jaccard_exact", "bm25", "none"))
    bundle = _replay_bundle(rng, cite, task.text, retrieval_mode)
    escalated = category in (PARTIAL, REVIEW) or (category == REJECTED and rng.random() < 0.5)
    passed = category != REJECTED
    local_output = text.observer_output(rng, cite, task.text, "accept" if category == ACCEPTED else "reject")
    calls = [_model_call(rng, "local", "qwen3.5:latest", local_output, passed and not escalated)]
    output = local_output
    if escalated:
        output = text.observer_output(rng, cite, task.text, "accept" if passed else "reject")
        calls.append(_model_call(rng, "escalation", "deepseek-v3.1:671b", output, passed))
    run = ReplayRun(
        run_id=run_id, task_id=task.task_id, task=task.text,
        task_hash=hashlib.sha256(task.text.encode()).hexdigest(), retrieval_mode=retrieval_mode,
        retrieved=[{"id": item.id, "score": item.score} for item in bundle.exemplars + bundle.warnings],
        bundle=bundle, calls=calls, models_called=[call.model for call in calls],
        validation_passed=passed, escalated=escalated, output=output,
        latency_ms=round(sum(call.latency_ms for call in calls), 1),
        flags={"local_only": not escalated and rng.random() < 0.3, "allow_escalation": escalated or rng.random() < 0.5,
               "no_retrieval": retrieval_mode == "none"},
        ts=clock.as_datetime(epoch),
    )
    return run.model_dump(mode="json")


def _replay_bundle(rng: random.Random, cite: Callable[[], str], task: str, retrieval_mode: str) -> ReplayBundle:
    if retrieval_mode == "none":  # the explicit no-retrieval baseline
        return ReplayBundle(task=task)

    def item(category: str) -> RetrievedItem:
        return RetrievedItem(id=f"rag-{rng.getrandbits(40):010x}", score=round(rng.uniform(0.1, 0.9), 4),
                             category=category, text=text.fact(rng, cite))

    return ReplayBundle(task=task, exemplars=[item("accepted") for _ in range(3)],
                        warnings=[item("partially_accepted") for _ in range(rng.randrange(0, 3))],
                        checklist=text.procedure_lines(rng, cite, 3).split("\n"))


def _model_call(rng: random.Random, role: str, model: str, output: str, gate_passed: bool) -> ModelCall:
    host = "127.0.0.1:11434" if role == "local" else "openrouter.ai:443"
    gate = [GateCheck(name="length_bounds", passed=True, value=float(len(output)), threshold="40..4000"),
            GateCheck(name="no_hedging", passed=gate_passed, value=0.0 if gate_passed else 2.0, threshold=0.0),
            GateCheck(name="checklist_overlap", passed=gate_passed, threshold=0.3,
                      value=round(rng.uniform(0.3, 1.0) if gate_passed else rng.uniform(0.0, 0.29), 3))]
    return ModelCall(role=role, base_url_host=host, model=model, latency_ms=round(rng.uniform(400, 90_000), 1),
                     ok=True, output=output, gate=gate, gate_passed=gate_passed)
