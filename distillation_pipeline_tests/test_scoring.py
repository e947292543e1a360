"""Spec section 4, one record at a time: every rule of the table and every JOIN case."""

import builtins
import hashlib
import itertools
import socket
from datetime import UTC, datetime
from typing import Any

import pytest

from distillation_pipeline.schemas import EvidenceRecord, Provenance, ScoredRun
from distillation_pipeline.scoring import SCORER_VERSION, ParentIndex, judge_record, score_record
from distillation_pipeline.scoring.joins import MAX_PARENT_IDS, ParentRefs

_CLASSES = {
    "scrum_reviews": "verdict",
    "observer_reviews": "verdict",
    "audits": "verdict",
    "contract_analyses": "verdict",
    "audit_discrepancies": "verdict",
    "replay_runs": "verdict",
    "auto_apply": "telemetry",
    "outcomes": "telemetry",
    "mode_experiments": "telemetry",
    "audit_facts": "extraction",
    "distilled_facts": "extraction",
    "distilled_procedures": "extraction",
    "distilled_config_hints": "extraction",
    "observer_escalations": "extraction",
    "model_trust": "ledger",
}
_serial = itertools.count()
RECORDED_AT = datetime(2026, 4, 27, 12, 0, tzinfo=UTC)


def make_evidence(
    stream: str,
    markers: dict[str, Any] | None = None,
    *,
    task_id: str | None = "T1",
    response: str | None = "a non-empty answer",
    source_class: str | None = None,
    event_at: datetime = datetime(2026, 4, 27, 3, 0, tzinfo=UTC),
    source_id: str | None = None,
) -> EvidenceRecord:
    sig = hashlib.sha256(f"{stream}|{next(_serial)}".encode()).hexdigest()
    return EvidenceRecord(
        id=f"{stream}:{sig[:20]}",
        stream=stream,
        source_class=source_class or _CLASSES[stream],
        source_id=source_id or sig[:8],
        task_id=task_id,
        event_at=event_at,
        prompt="the task",
        response=response,
        markers=markers or {},
        raw={"stream": stream},
        provenance=Provenance(
            source_file=f"data/_kb/{stream}.jsonl", line_offset=0, sig_hash=sig, recorded_at=RECORDED_AT
        ),
    )


def scored(stream: str, markers: dict[str, Any] | None = None, **kwargs: Any) -> ScoredRun:
    return score_record(make_evidence(stream, markers, **kwargs))


def contract(verdict: str | None, failures: list[str] | None = None, present: bool = True) -> dict[str, Any]:
    """contract_analyses markers as streams.py writes them (None values are left out)."""
    markers: dict[str, Any] = {"observer_verdict_present": present}
    if verdict is not None:
        markers["observer_verdict"] = verdict
    if failures is not None:
        markers["failure_markers"] = failures
    return markers


# ---------------------------------------------------------------------------------------------
# The rule table: (stream, markers, extra kwargs, category, a reason that must appear)
# ---------------------------------------------------------------------------------------------

RULES = [
    # scrum_reviews
    ("scrum_reviews", {"accepted_on_attempt": 1}, {}, "accepted", "accepted_on_attempt=1"),
    ("scrum_reviews", {"accepted_on_attempt": 2}, {}, "partially_accepted", "accepted_on_attempt=2"),
    ("scrum_reviews", {"accepted_on_attempt": 3}, {}, "partially_accepted", "accepted_on_attempt=3"),
    ("scrum_reviews", {"accepted_on_attempt": 4}, {}, "partially_accepted", "accepted_on_attempt=4: high_cost"),
    ("scrum_reviews", {"accepted_on_attempt": 9}, {}, "partially_accepted", "accepted_on_attempt=9: high_cost"),
    ("scrum_reviews", {"never_accepted": True}, {}, "rejected", "accepted_on_attempt=null: never accepted"),
    ("scrum_reviews", {}, {}, "needs_human_review", "missing marker accepted_on_attempt"),
    # observer_reviews
    ("observer_reviews", {"verdict": "accept"}, {}, "accepted", "verdict=accept"),
    ("observer_reviews", {"verdict": "reject"}, {}, "rejected", "verdict=reject"),
    ("observer_reviews", {"verdict": "cycle"}, {}, "partially_accepted", "verdict=cycle"),
    ("observer_reviews", {}, {}, "needs_human_review", "missing marker verdict"),
    # audits
    ("audits", {"severity": "info"}, {}, "accepted", "severity=info"),
    ("audits", {"severity": "low"}, {}, "accepted", "severity=low"),
    ("audits", {"severity": "medium"}, {}, "partially_accepted", "severity=medium"),
    ("audits", {"severity": "high"}, {}, "rejected", "severity=high"),
    ("audits", {"severity": "critical"}, {}, "rejected", "severity=critical"),
    ("audits", {"verdict": "pass"}, {}, "accepted", "legacy verdict=pass"),
    ("audits", {"verdict": "fail"}, {}, "rejected", "legacy verdict=fail"),
    ("audits", {}, {}, "needs_human_review", "missing marker severity (or legacy verdict)"),
    # contract_analyses
    ("contract_analyses", contract("reject"), {}, "rejected", "observer_verdict=reject"),
    ("contract_analyses", contract(None, ["unbounded_loop"], present=False), {}, "rejected", "failure_markers=unbounded_loop"),
    ("contract_analyses", contract("accept", ["x", "y"]), {}, "rejected", "failure_markers=x,y"),
    ("contract_analyses", contract("accept"), {}, "accepted", "observer_verdict=accept: no failure markers"),
    ("contract_analyses", contract("accept", []), {}, "accepted", "observer_verdict=accept"),
    ("contract_analyses", contract(None), {}, "needs_human_review", "observer_verdict=null and no failure markers"),
    ("contract_analyses", contract(None, present=False), {}, "needs_human_review", "missing marker observer_verdict"),
    # audit_discrepancies
    ("audit_discrepancies", {}, {}, "rejected", "audit_discrepancy: the audit contradicted this claim"),
    # replay_runs
    ("replay_runs", {"validation_passed": True, "escalated": False}, {}, "accepted", "passed without escalation"),
    ("replay_runs", {"validation_passed": True, "escalated": True}, {}, "partially_accepted", "passed after escalation"),
    ("replay_runs", {"validation_passed": False, "escalated": False}, {}, "rejected", "validation_passed=false"),
    ("replay_runs", {"validation_passed": False, "escalated": True}, {}, "rejected", "failed after escalation"),
    ("replay_runs", {}, {}, "needs_human_review", "missing marker validation_passed"),
    ("replay_runs", {"validation_passed": True}, {}, "needs_human_review", "missing marker escalated"),
    # auto_apply
    ("auto_apply", {"status": "committed"}, {}, "accepted", "status=committed"),
    ("auto_apply", {"status": "test_reverted"}, {}, "rejected", "status=test_reverted"),
    ("auto_apply", {"status": "build_reverted"}, {}, "rejected", "status=build_reverted"),
    ("auto_apply", {"status": "reverted"}, {}, "rejected", "status=reverted"),
    ("auto_apply", {"status": "skipped"}, {}, "needs_human_review", "status=skipped"),
    ("auto_apply", {}, {}, "needs_human_review", "missing marker status"),
    # outcomes
    ("outcomes", {"events_ok": [True, True], "gap_signals": 0}, {}, "accepted", "all 2 events ok, gap_signals=0"),
    ("outcomes", {"events_ok": [True, True], "gap_signals": 2}, {}, "partially_accepted", "gap_signals=2"),
    ("outcomes", {"events_ok": [True, False, False], "gap_signals": 0}, {}, "rejected", "2/3 events not ok"),
    ("outcomes", {"events_ok": [], "gap_signals": 0}, {}, "needs_human_review", "events=[]: no events recorded"),
    ("outcomes", {"gap_signals": 0}, {}, "needs_human_review", "missing marker events"),
    ("outcomes", {"events_ok": [True]}, {}, "needs_human_review", "missing marker gap_signals"),
    # mode_experiments
    ("mode_experiments", {"grounded_fraction": 0.9}, {"response": ""}, "rejected", "response is empty"),
    ("mode_experiments", {"grounded_fraction": 0.9}, {"response": " \n "}, "rejected", "response is empty"),
    ("mode_experiments", {"grounded_fraction": 0.9}, {"response": None}, "rejected", "response is empty"),
    ("mode_experiments", {"latency_ms": 150_000.0}, {}, "partially_accepted", "latency_ms=150000: over 120000"),
    ("mode_experiments", {"latency_ms": 1_000.0, "grounded_fraction": 0.8}, {}, "accepted", "grounded_fraction=0.8: at least 0.8"),
    ("mode_experiments", {"latency_ms": 1_000.0, "grounded_fraction": 0.49}, {}, "rejected", "grounded_fraction=0.49: below 0.5"),
    ("mode_experiments", {"latency_ms": 1_000.0, "grounded_fraction": 0.5}, {}, "needs_human_review", "between 0.5 and 0.8"),
    ("mode_experiments", {"latency_ms": 1_000.0}, {}, "needs_human_review", "missing marker grounded_fraction"),
    ("mode_experiments", {"latency_ms": 120_000.0}, {}, "needs_human_review", "missing marker grounded_fraction"),
    # model_trust: never a candidate for any dataset
    (
        "model_trust",
        {"model": "m", "task_kind": "audit", "trust_score": 0.7},
        {"task_id": None},
        "needs_human_review",
        "ledger row: aggregated into model ledger, never exported",
    ),
]


@pytest.mark.parametrize(
    ("stream", "markers", "kwargs", "category", "reason"),
    RULES,
    ids=[f"{r[0]}-{r[3]}-{i}" for i, r in enumerate(RULES)],
)
def test_rule_table(stream: str, markers: dict, kwargs: dict, category: str, reason: str) -> None:
    run = scored(stream, markers, **kwargs)
    assert run.category == category
    assert any(reason in text for text in run.reasons), run.reasons


def test_every_non_extraction_stream_has_a_rule_tested() -> None:
    tested = {row[0] for row in RULES}
    assert tested == {s for s, c in _CLASSES.items() if c != "extraction"}


# --- precedence the spec leaves open -----------------------------------------------------------


def test_audit_severity_beats_a_legacy_verdict_on_the_same_row() -> None:
    run = scored("audits", {"severity": "info", "verdict": "fail"})
    assert run.category == "accepted"
    assert run.reasons == ["severity=info", "legacy verdict=fail ignored: severity takes precedence"]


def test_contract_rejected_for_both_reasons_lists_both() -> None:
    run = scored("contract_analyses", contract("reject", ["a"]))
    assert run.category == "rejected"
    assert run.reasons == ["observer_verdict=reject", "failure_markers=a"]


def test_outcome_with_failed_event_and_gap_signals_is_rejected() -> None:
    run = scored("outcomes", {"events_ok": [True, False], "gap_signals": 3})
    assert run.category == "rejected"
    assert run.reasons == [
        "events_ok: 1/2 events not ok",
        "gap_signals=3 also present: a failed event takes precedence",
    ]


def test_mode_experiment_with_high_latency_and_low_grounding_is_rejected() -> None:
    run = scored("mode_experiments", {"latency_ms": 200_000.0, "grounded_fraction": 0.2})
    assert run.category == "rejected"
    assert run.reasons == [
        "grounded_fraction=0.2: below 0.5",
        "latency_ms=200000 also over 120000: low grounding takes precedence",
    ]


@pytest.mark.parametrize("grounded", [0.95, 0.6, None])
def test_mode_experiment_over_120s_is_partial_whatever_else_the_grounding(grounded: float | None) -> None:
    markers = {"latency_ms": 120_001.0} | ({"grounded_fraction": grounded} if grounded is not None else {})
    assert scored("mode_experiments", markers).category == "partially_accepted"


def test_empty_response_beats_good_grounding_and_latency() -> None:
    run = scored("mode_experiments", {"latency_ms": 10.0, "grounded_fraction": 1.0}, response="")
    assert run.category == "rejected"


def test_a_record_claiming_another_class_than_its_stream_needs_review() -> None:
    run = scored("scrum_reviews", {"accepted_on_attempt": 1}, source_class="telemetry")
    assert run.category == "needs_human_review"
    assert run.reasons == ["source_class=telemetry: stream scrum_reviews is verdict class"]


# --- what every scored run carries ------------------------------------------------------------


def test_scored_run_carries_the_evidence_identity_and_the_version() -> None:
    record = make_evidence("audits", {"severity": "low"}, task_id="T9")
    run = score_record(record, scorer_version="9.9.9")
    assert run.id == run.evidence_id == record.id
    assert (run.stream, run.source_class, run.task_id) == ("audits", "verdict", "T9")
    assert run.event_at == record.event_at
    assert run.provenance == record.provenance
    assert run.scorer_version == "9.9.9"
    assert score_record(record).scorer_version == SCORER_VERSION
    assert run.parent_ids == []


def test_score_record_is_pure_no_files_no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    records = [make_evidence(stream, markers) for stream, markers, *_ in RULES]
    records.append(make_evidence("distilled_facts"))
    index = ParentIndex()
    index.add("scrum_reviews:x", "accepted", "T1")

    def forbidden(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("score_record did I/O")

    monkeypatch.setattr(builtins, "open", forbidden)
    monkeypatch.setattr(socket, "socket", forbidden)
    first = [score_record(r, parents=index) for r in records]
    second = [score_record(r, parents=index) for r in records]
    assert first == second


# ---------------------------------------------------------------------------------------------
# JOINs: extraction rows inherit from verdict-bearing parents
# ---------------------------------------------------------------------------------------------


def index_of(*parents: EvidenceRecord) -> ParentIndex:
    """The parent index as the stage builds it, from records rather than files."""
    index = ParentIndex()
    for record in parents:
        if record.source_class != "verdict":
            continue
        finding = (record.markers.finding_id or record.source_id) if record.stream == "audits" else None
        index.add(record.id, judge_record(record).category, record.task_id, finding)
    return index


EXTRACTION_BY_TASK = ["distilled_facts", "distilled_procedures", "distilled_config_hints", "observer_escalations"]


@pytest.mark.parametrize("stream", EXTRACTION_BY_TASK)
def test_extraction_row_inherits_from_agreeing_parents_by_task_id(stream: str) -> None:
    a = make_evidence("scrum_reviews", {"accepted_on_attempt": 1}, task_id="T1")
    b = make_evidence("observer_reviews", {"verdict": "accept"}, task_id="T1")
    other = make_evidence("audit_discrepancies", task_id="T2")
    run = score_record(make_evidence(stream, task_id="T1"), parents=index_of(a, b, other))
    assert run.category == "accepted"
    assert run.parent_ids == sorted([a.id, b.id])
    assert run.reasons == ["inherited accepted from 2 verdict-bearing parent(s) via task_id=T1"]


def test_extraction_row_inherits_partial_and_rejected_too() -> None:
    partial = make_evidence("observer_reviews", {"verdict": "cycle"}, task_id="TP")
    rejected = make_evidence("audit_discrepancies", task_id="TR")
    index = index_of(partial, rejected)
    assert score_record(make_evidence("distilled_facts", task_id="TP"), parents=index).category == "partially_accepted"
    assert score_record(make_evidence("distilled_facts", task_id="TR"), parents=index).category == "rejected"


def test_conflicting_parents_need_review_and_say_which() -> None:
    good = make_evidence("scrum_reviews", {"accepted_on_attempt": 1}, task_id="T1")
    bad = make_evidence("audit_discrepancies", task_id="T1")
    run = score_record(make_evidence("distilled_procedures", task_id="T1"), parents=index_of(good, bad))
    assert run.category == "needs_human_review"
    assert run.reasons == [f"conflicting parents via task_id=T1: accepted x1 ({good.id}); rejected x1 ({bad.id})"]
    assert run.parent_ids == sorted([good.id, bad.id])


def test_accepted_and_partial_parents_also_conflict() -> None:
    one = make_evidence("scrum_reviews", {"accepted_on_attempt": 1}, task_id="T1")
    four = make_evidence("scrum_reviews", {"accepted_on_attempt": 4}, task_id="T1")
    run = score_record(make_evidence("distilled_facts", task_id="T1"), parents=index_of(one, four))
    assert run.category == "needs_human_review"
    assert run.reasons[0].startswith("conflicting parents via task_id=T1: accepted x1")


def test_orphan_without_any_parent_needs_review() -> None:
    parent = make_evidence("scrum_reviews", {"accepted_on_attempt": 1}, task_id="T1")
    run = score_record(make_evidence("distilled_facts", task_id="T404"), parents=index_of(parent))
    assert run.category == "needs_human_review"
    assert run.reasons == ["no parent: no verdict-bearing row with task_id=T404"]
    assert run.parent_ids == []


def test_orphan_without_task_id_needs_review() -> None:
    run = score_record(make_evidence("observer_escalations", task_id=None), parents=ParentIndex())
    assert run.reasons == ["no parent: observer_escalations row has no task_id"]


def test_telemetry_rows_are_not_parents() -> None:
    telemetry = [
        make_evidence("auto_apply", {"status": "committed"}, task_id="T1"),
        make_evidence("mode_experiments", {"grounded_fraction": 0.99, "latency_ms": 5.0}, task_id="T1"),
        make_evidence("outcomes", {"events_ok": [True], "gap_signals": 0}, task_id="T1"),
    ]
    run = score_record(make_evidence("distilled_facts", task_id="T1"), parents=index_of(*telemetry))
    assert run.category == "needs_human_review"
    assert run.reasons == ["no parent: no verdict-bearing row with task_id=T1"]


def test_without_a_parent_index_extraction_rows_need_review() -> None:
    for stream in [*EXTRACTION_BY_TASK, "audit_facts"]:
        run = score_record(make_evidence(stream, {"finding_id": "F1"} if stream == "audit_facts" else None))
        assert run.category == "needs_human_review"
        assert run.reasons == ["no parent index supplied"]


def test_parents_that_all_need_review_pass_that_on() -> None:
    unsure = make_evidence("contract_analyses", {"observer_verdict_present": True}, task_id="T1")
    run = score_record(make_evidence("distilled_facts", task_id="T1"), parents=index_of(unsure))
    assert run.category == "needs_human_review"
    assert run.reasons == [f"parents need human review: 1 ({unsure.id}) via task_id=T1, none with a specific category"]
    assert run.parent_ids == [unsure.id]


def test_a_parent_that_needs_review_abstains_rather_than_conflicts() -> None:
    good = make_evidence("observer_reviews", {"verdict": "accept"}, task_id="T1")
    unsure = make_evidence("observer_reviews", {}, task_id="T1")
    run = score_record(make_evidence("distilled_facts", task_id="T1"), parents=index_of(good, unsure))
    assert run.category == "accepted"
    assert run.parent_ids == [good.id]
    assert run.reasons[1] == "1 needs_human_review parent(s) via task_id=T1 abstained"


# --- audit_facts join by finding_id -------------------------------------------------------------


def test_audit_fact_inherits_from_its_finding_not_from_the_task() -> None:
    finding = make_evidence("audits", {"severity": "critical", "finding_id": "F1"}, task_id="T1", source_id="F1")
    unrelated = make_evidence("scrum_reviews", {"accepted_on_attempt": 1}, task_id="T1")
    fact = make_evidence("audit_facts", {"finding_id": "F1"}, task_id="T1")
    run = score_record(fact, parents=index_of(finding, unrelated))
    assert run.category == "rejected"
    assert run.parent_ids == [finding.id]
    assert run.reasons == ["inherited rejected from 1 verdict-bearing parent(s) via finding_id=F1"]


def test_audit_fact_without_finding_id_is_an_orphan_even_if_its_task_has_parents() -> None:
    parent = make_evidence("scrum_reviews", {"accepted_on_attempt": 1}, task_id="T1")
    run = score_record(make_evidence("audit_facts", {}, task_id="T1"), parents=index_of(parent))
    assert run.category == "needs_human_review"
    assert run.reasons == ["no parent: audit_facts row has no finding_id"]


def test_audit_fact_with_unknown_finding_is_an_orphan() -> None:
    finding = make_evidence("audits", {"severity": "low", "finding_id": "F1"}, source_id="F1")
    run = score_record(make_evidence("audit_facts", {"finding_id": "F2"}), parents=index_of(finding))
    assert run.reasons == ["no parent: no audits row with finding_id=F2"]


def test_audit_fact_whose_finding_rows_disagree_needs_review() -> None:
    low = make_evidence("audits", {"severity": "low", "finding_id": "F1"}, source_id="F1")
    high = make_evidence("audits", {"severity": "high", "finding_id": "F1"}, source_id="F1")
    run = score_record(make_evidence("audit_facts", {"finding_id": "F1"}), parents=index_of(low, high))
    assert run.category == "needs_human_review"
    assert run.reasons[0].startswith("conflicting parents via finding_id=F1: accepted x1")
    assert set(run.parent_ids) == {low.id, high.id}


# --- the compact index ---------------------------------------------------------------------------


def test_parent_refs_keep_an_exact_count_and_the_smallest_ids_in_any_order() -> None:
    ids = [f"scrum_reviews:{i:020d}" for i in range(3 * MAX_PARENT_IDS)]
    forward, backward = ParentRefs(), ParentRefs()
    for evidence_id in ids:
        forward.add(evidence_id)
    for evidence_id in reversed(ids):
        backward.add(evidence_id)
    assert forward.count == backward.count == len(ids)
    assert forward.ids == backward.ids == ids[:MAX_PARENT_IDS]
    assert forward.describe().endswith(f"+{len(ids) - MAX_PARENT_IDS} more)")


def test_an_inherited_row_from_many_parents_reports_the_full_count() -> None:
    index = ParentIndex()
    for i in range(20):
        index.add(f"scrum_reviews:{i:020d}", "accepted", "T1")
    run = score_record(make_evidence("distilled_facts", task_id="T1"), parents=index)
    assert run.category == "accepted"
    assert len(run.parent_ids) == MAX_PARENT_IDS
    assert run.reasons == ["inherited accepted from 20 verdict-bearing parent(s) via task_id=T1"]


# --- the stage's fast line is the validated model's line ------------------------------------------


@pytest.mark.parametrize(
    "when",
    [
        "2026-04-27T03:00:00Z",
        "2026-04-27T03:00:00.645000Z",
        "2026-04-27T03:00:00.000001+00:00",
        "2026-04-27T03:00:00.5+05:30",
        "2026-04-27T03:00:00-00:30",
        "2026-04-27T03:00:00",  # naive: kept naive by the model, and so by the fast line
        "1999-12-31 23:59:59Z",
        1788566657,
    ],
)
@pytest.mark.parametrize("line_offset", [0, 2**63 - 1])
def test_scored_line_is_byte_for_byte_the_dumped_scored_run(when: object, line_offset: int) -> None:
    from distillation_pipeline.lib.jsonl import dumps_line
    from distillation_pipeline.scoring.lines import parse_evidence, scored_line
    from distillation_pipeline.scoring.rules import stamp

    parents = ParentIndex()
    parents.add("scrum_reviews:aaa", "accepted", "T1")
    parents.add("audits:bbb", "rejected", "T1")
    for stream, markers, task_id in [
        ("scrum_reviews", {"accepted_on_attempt": 4}, "T1"),
        ("distilled_facts", {}, "T1"),  # conflicting parents: two parent ids, several reasons
        ("distilled_facts", {}, None),  # orphan, task_id null
        ("mode_experiments", {"latency_ms": 200_000, "grounded_fraction": 0.3}, "T2"),
    ]:
        record = make_evidence(stream, markers, task_id=task_id)
        data = record.model_dump(mode="json")
        data["event_at"] = when
        data["provenance"]["recorded_at"] = when
        data["provenance"]["line_offset"] = line_offset
        line = dumps_line(data).rstrip(b"\n")
        evidence = parse_evidence(line, stream, "x.jsonl", 1)
        judgement = judge_record(evidence, parents)
        expected = dumps_line(stamp(evidence, judgement, SCORER_VERSION).model_dump(mode="json"))
        assert scored_line(evidence, judgement, SCORER_VERSION) == expected
