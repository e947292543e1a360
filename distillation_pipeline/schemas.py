"""Every record the pipeline reads or writes, as versioned pydantic v2 models, in one place.

Writers build a model and dump it; readers of our own outputs validate against it. Models
are frozen and forbid unknown fields, so a typo in a writer is an error, not a silent column.

The contamination firewall's first layer lives here: ``SftSample`` and ``RagSample`` cannot be
constructed with a category their dataset never admits, whatever the exporter did.
"""

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

# --------------------------------------------------------------------------------------------
# Vocabulary
# --------------------------------------------------------------------------------------------

Category = Literal["accepted", "partially_accepted", "rejected", "needs_human_review"]
CATEGORIES: tuple[str, ...] = ("accepted", "partially_accepted", "rejected", "needs_human_review")

SourceClass = Literal["verdict", "telemetry", "extraction", "ledger"]

StreamName = Literal[
    "scrum_reviews",
    "observer_reviews",
    "audits",
    "contract_analyses",
    "audit_discrepancies",
    "replay_runs",
    "auto_apply",
    "outcomes",
    "mode_experiments",
    "audit_facts",
    "distilled_facts",
    "distilled_procedures",
    "distilled_config_hints",
    "observer_escalations",
    "model_trust",
]

QuarantineReason = Literal[
    "missing_provenance",
    "missing_source_run_id",
    "empty_content",
    "schema_violation",
    "unsafe_sft_category",
    "unsafe_rag_category",
    "invalid_preference_pairing",
    "hallucinated_file_path",
    "duplicate_id",
    "self_pairing",
    "category_disallowed",
    "secret_detected",
]
QUARANTINE_REASONS: tuple[str, ...] = QuarantineReason.__args__  # type: ignore[attr-defined]

Dataset = Literal["rag", "sft", "preference"]
StageName = Literal["collect", "score", "export-rag", "export-sft", "export-preference"]
STAGES: tuple[str, ...] = StageName.__args__  # type: ignore[attr-defined]
DriftSeverity = Literal["ok", "warn", "alert"]


class Record(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", str_strip_whitespace=False)


# --------------------------------------------------------------------------------------------
# Evidence (stage collect)
# --------------------------------------------------------------------------------------------


class Provenance(Record):
    """Where a record came from, precisely enough to re-read and re-hash the source row."""

    source_file: str = Field(min_length=1, description="path relative to the root")
    line_offset: int = Field(ge=0, description="byte offset of the row in source_file")
    sig_hash: str = Field(pattern=r"^[0-9a-f]{64}$", description="sha256 of the row's canonical JSON")
    recorded_at: datetime


class ScoringMarkers(Record):
    """The normalised fields the scorer reads. Absent means the row did not carry it."""

    accepted_on_attempt: int | None = None
    never_accepted: bool | None = None  # scrum_reviews: accepted_on_attempt present and null
    verdict: str | None = None  # observer_reviews accept/reject/cycle; audits legacy pass/fail
    severity: str | None = None
    failure_markers: list[str] | None = None
    observer_verdict: str | None = None
    observer_verdict_present: bool | None = None
    status: str | None = None
    events_ok: list[bool] | None = None
    gap_signals: int | None = None
    latency_ms: float | None = None
    grounded_fraction: float | None = None
    validation_passed: bool | None = None
    escalated: bool | None = None
    finding_id: str | None = None
    model: str | None = None
    task_kind: str | None = None
    trust_score: float | None = None
    window_start: datetime | None = None
    window_end: datetime | None = None


class EvidenceRecord(Record):
    schema_version: Literal[1] = 1
    id: str = Field(min_length=1)
    stream: StreamName
    source_class: SourceClass
    source_id: str | None = Field(default=None, description="the row's own id (review_id, finding_id, ...)")
    task_id: str | None = None
    event_at: datetime
    prompt: str | None = None
    response: str | None = None
    content: str | None = None
    markers: ScoringMarkers = ScoringMarkers()
    raw: dict[str, Any]
    provenance: Provenance


class SkipRecord(Record):
    """A source row that could not become evidence, and why."""

    schema_version: Literal[1] = 1
    stream: str
    source_file: str
    line_offset: int = Field(ge=0)
    reason: str
    detail: str = ""
    recorded_at: datetime


# --------------------------------------------------------------------------------------------
# Scoring (stage score)
# --------------------------------------------------------------------------------------------


class ScoredRun(Record):
    schema_version: Literal[1] = 1
    id: str = Field(min_length=1, description="same as the evidence id: one verdict per evidence record")
    evidence_id: str = Field(min_length=1)
    stream: StreamName
    source_class: SourceClass
    task_id: str | None = None
    category: Category
    reasons: list[str] = Field(min_length=1)
    scorer_version: str = Field(min_length=1)
    parent_ids: list[str] = Field(default_factory=list, description="verdict-bearing parents an extraction row inherited from")
    event_at: datetime
    provenance: Provenance


class ModelLedgerEntry(Record):
    schema_version: Literal[1] = 1
    model: str
    task_kind: str
    samples: int = Field(ge=1)
    mean_trust: float = Field(ge=0, le=1)
    min_trust: float = Field(ge=0, le=1)
    max_trust: float = Field(ge=0, le=1)
    window_start: datetime
    window_end: datetime
    evidence_ids: list[str]


# --------------------------------------------------------------------------------------------
# Datasets (stages export-*)
# --------------------------------------------------------------------------------------------


class ExportProvenance(Record):
    """From an exported row back to the scored run, the evidence and the source row."""

    evidence_id: str = Field(min_length=1)
    scored_run_id: str = Field(min_length=1)
    stream: StreamName
    source_file: str = Field(min_length=1)
    line_offset: int = Field(ge=0)
    sig_hash: str = Field(pattern=r"^[0-9a-f]{64}$")
    scorer_version: str = Field(min_length=1)


class RagSample(Record):
    schema_version: Literal[1] = 1
    id: str = Field(min_length=1)
    created_at: datetime
    task_id: str | None = None
    title: str
    content: str = Field(min_length=1)
    source_category: Literal["accepted", "partially_accepted", "needs_human_review"]
    cited_paths: list[str] = Field(default_factory=list)
    provenance: ExportProvenance

    @field_validator("source_category", mode="before")
    @classmethod
    def _never_rejected(cls, value: object) -> object:
        if value == "rejected":
            raise ValueError("firewall: RAG never admits rejected runs")
        return value


class ChatMessage(Record):
    role: Literal["system", "user", "assistant"]
    content: str = Field(min_length=1)


class SftSample(Record):
    """One chat example: ``messages`` loads as-is in TRL's SFTTrainer and HF chat templates."""

    schema_version: Literal[1] = 1
    id: str = Field(min_length=1)
    created_at: datetime
    task_id: str | None = None
    messages: list[ChatMessage] = Field(min_length=2)
    quality_score: Literal["accepted", "partially_accepted"]
    provenance: ExportProvenance

    @field_validator("quality_score", mode="before")
    @classmethod
    def _never_unsafe(cls, value: object) -> object:
        if value in ("rejected", "needs_human_review"):
            raise ValueError(f"firewall: SFT never admits {value} runs")
        return value

    @model_validator(mode="after")
    def _user_then_assistant(self) -> "SftSample":
        roles = [message.role for message in self.messages if message.role != "system"]
        if roles[:1] != ["user"] or roles[-1:] != ["assistant"]:
            raise ValueError("messages must start with a user turn and end with an assistant turn")
        return self


class PreferenceSample(Record):
    """One pair in TRL's DPO layout: ``prompt``, ``chosen``, ``rejected`` (plain strings)."""

    schema_version: Literal[1] = 1
    id: str = Field(min_length=1)
    created_at: datetime
    task_id: str = Field(min_length=1)
    prompt: str = Field(min_length=1)
    chosen: str = Field(min_length=1)
    rejected: str = Field(min_length=1)
    chosen_category: Literal["accepted"]
    rejected_category: Literal["rejected", "partially_accepted"]
    pair_kind: Literal["accepted_over_rejected", "accepted_over_partial"]
    chosen_provenance: ExportProvenance
    rejected_provenance: ExportProvenance

    @model_validator(mode="after")
    def _distinct_sides(self) -> "PreferenceSample":
        if self.chosen_provenance.evidence_id == self.rejected_provenance.evidence_id:
            raise ValueError("firewall: the same run on both sides of a pair")
        if self.chosen.strip() == self.rejected.strip():
            raise ValueError("firewall: the same text on both sides of a pair")
        return self


class QuarantineRecord(Record):
    schema_version: Literal[1] = 1
    id: str = Field(min_length=1)
    dataset: Dataset
    reason: QuarantineReason
    detail: str = ""
    evidence_id: str | None = Field(default=None, description="the evidence it refused (None only if it had none)")
    stream: str | None = None
    task_id: str | None = None
    category: str | None = None
    created_at: datetime


# --------------------------------------------------------------------------------------------
# Receipts, summary, drift (every run)
# --------------------------------------------------------------------------------------------


class FileDigest(Record):
    path: str
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    bytes: int = Field(ge=0)


class RecordCounts(Record):
    records_in: int = Field(ge=0)
    records_out: int = Field(ge=0)
    skipped: int = Field(ge=0, default=0)
    quarantined: int = Field(ge=0, default=0)
    deduplicated: int = Field(ge=0, default=0)
    per_category: dict[str, int] = Field(default_factory=dict)
    per_reason: dict[str, int] = Field(default_factory=dict)
    per_stream: dict[str, dict[str, int]] = Field(default_factory=dict)


class Validation(Record):
    passed: bool
    errors: list[str] = Field(default_factory=list)
    hard_failure: bool = Field(default=False, description="downstream stages must not run on these outputs")
    checks_not_run: list[str] = Field(default_factory=list)


class StageReceipt(Record):
    schema_version: Literal[1] = 1
    run_id: str = Field(min_length=1)
    stage: StageName
    started_at: datetime
    finished_at: datetime
    duration_ms: int = Field(ge=0)
    git_sha: str
    inputs: list[FileDigest]
    outputs: list[FileDigest]
    input_hash: str
    output_hash: str
    counts: RecordCounts
    validation: Validation
    options: dict[str, Any] = Field(default_factory=dict)


class DriftFinding(Record):
    key: str
    previous: float
    current: float
    pct_change: float | None
    severity: DriftSeverity
    message: str


class DriftReport(Record):
    schema_version: Literal[1] = 1
    run_id: str
    previous_run_id: str | None
    severity: DriftSeverity
    threshold_pct: float = Field(gt=0)
    deterministic_violation: bool = False
    findings: list[DriftFinding] = Field(default_factory=list)
    new_error_classes: list[str] = Field(default_factory=list)
    generated_at: datetime


class RunSummary(Record):
    schema_version: Literal[1] = 1
    run_id: str
    started_at: datetime
    finished_at: datetime
    git_sha: str
    stages: dict[str, StageReceipt]
    stages_not_run: dict[str, str] = Field(default_factory=dict, description="stage -> why it did not run")
    failed_checks: list[str] = Field(default_factory=list, description="asset checks that failed in this run")
    dataset_sizes: dict[str, int]
    quarantined: dict[str, int]
    overall_passed: bool
    input_hash: str
    output_hash: str
    run_hash: str
    drift_severity: DriftSeverity | None = None
    replay: dict[str, float] = Field(default_factory=dict, description="loop metrics: pass rates, escalation rate")


class AlertRecord(Record):
    """One line of ``reports/alerts.jsonl``: a failed run or a failed/warning asset check."""

    schema_version: Literal[1] = 1
    id: str = Field(min_length=1, description="stable per event, so an event is notified once")
    kind: Literal["run_failure", "check_failure", "check_warning"]
    severity: Literal["warn", "error"]
    run_id: str
    job_name: str | None = None
    asset_key: str | None = None
    check_name: str | None = None
    message: str
    occurred_at: datetime
    webhook: str = Field(description="not_configured, delivered, or failed: <why> (never the URL)")


# --------------------------------------------------------------------------------------------
# Replay (section 7)
# --------------------------------------------------------------------------------------------


class RetrievedItem(Record):
    id: str
    score: float
    category: str
    text: str


class ReplayBundle(Record):
    task: str
    exemplars: list[RetrievedItem] = Field(default_factory=list)
    warnings: list[RetrievedItem] = Field(default_factory=list)
    checklist: list[str] = Field(default_factory=list)


class GateCheck(Record):
    name: str
    passed: bool
    value: float | str | None = None
    threshold: float | str | None = None
    detail: str = ""


class ModelCall(Record):
    role: Literal["local", "escalation"]
    base_url_host: str = Field(description="host:port only; never a key or a full URL with credentials")
    model: str
    latency_ms: float = Field(ge=0)
    ok: bool
    error: str | None = None
    output: str | None = None
    gate: list[GateCheck] = Field(default_factory=list)
    gate_passed: bool | None = None


class ReplayRun(Record):
    """One ``replay_run.v1`` row in ``data/_kb/replay_runs.jsonl``."""

    record_type: Literal["replay_run.v1"] = "replay_run.v1"
    schema_version: Literal[1] = 1
    run_id: str
    task_id: str
    task: str = Field(min_length=1)
    task_hash: str
    retrieval_mode: Literal["jaccard", "jaccard_exact", "bm25", "none"]
    retrieved: list[dict[str, Any]] = Field(default_factory=list, description="[{id, score}] in rank order")
    bundle: ReplayBundle
    calls: list[ModelCall]
    models_called: list[str]
    validation_passed: bool
    escalated: bool
    output: str
    latency_ms: float = Field(ge=0)
    flags: dict[str, bool] = Field(default_factory=dict)
    ts: datetime
