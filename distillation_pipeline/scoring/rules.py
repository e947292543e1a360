"""The deterministic scorer of spec section 4: one category per evidence record, zero model calls.

``judge`` is the whole rule table. It reads only the stream name, the normalised markers
(a mapping, as ``evidence/streams.py`` produces them) and the response text, so a faster path
that never builds an ``EvidenceRecord`` can call it on a parsed row directly. ``score_record``
wraps it into a validated ``ScoredRun``.

Every reason starts with the marker and value it was decided on (``accepted_on_attempt=4:
high_cost``) so a reader of a scored run never has to re-open the evidence to see why.
Where the spec leaves a precedence open, the choice is written next to the rule and tested.
"""

from collections.abc import Callable, Mapping
from typing import Any

from distillation_pipeline.evidence.streams import STREAMS
from distillation_pipeline.schemas import EvidenceRecord, ScoredRun
from distillation_pipeline.scoring.joins import ParentIndex, inherit
from distillation_pipeline.scoring.judgement import ACCEPTED, PARTIAL, REJECTED, REVIEW, Judgement, judged

SCORER_VERSION = "1.0.0"

# mode_experiments thresholds (spec section 4)
SLOW_LATENCY_MS = 120_000.0
GROUNDED_ACCEPT = 0.8
GROUNDED_REJECT = 0.5

LEDGER_REASON = "ledger row: aggregated into model ledger, never exported"

Markers = Mapping[str, Any]


def _missing(marker: str) -> Judgement:
    return judged(REVIEW, "missing_marker", f"missing marker {marker}")


# ---------------------------------------------------------------------------------------------
# verdict class: direct mapping
# ---------------------------------------------------------------------------------------------


def _scrum_reviews(markers: Markers, response: str | None) -> Judgement:
    attempt = markers.get("accepted_on_attempt")
    if attempt is None:
        # never_accepted is set only when the row carried accepted_on_attempt: null; a row with
        # no such key at all says nothing about acceptance.
        if markers.get("never_accepted"):
            return judged(REJECTED, "never_accepted", "accepted_on_attempt=null: never accepted")
        return _missing("accepted_on_attempt")
    if attempt < 1:
        return judged(REVIEW, "invalid_marker", f"accepted_on_attempt={attempt}: not a valid attempt number")
    if attempt == 1:
        return judged(ACCEPTED, "first_attempt", "accepted_on_attempt=1: accepted first time")
    if attempt <= 3:
        return judged(PARTIAL, "retried", f"accepted_on_attempt={attempt}: accepted after retries")
    return judged(PARTIAL, "high_cost", f"accepted_on_attempt={attempt}: high_cost")


_OBSERVER = {"accept": ACCEPTED, "reject": REJECTED, "cycle": PARTIAL}


def _observer_reviews(markers: Markers, response: str | None) -> Judgement:
    verdict = markers.get("verdict")
    if verdict is None:
        return _missing("verdict")
    category = _OBSERVER.get(verdict)
    if category is None:
        return judged(REVIEW, "unknown_value", f"verdict={verdict}: not one of accept, reject, cycle")
    return judged(category, f"verdict_{verdict}", f"verdict={verdict}")


_SEVERITY = {"info": ACCEPTED, "low": ACCEPTED, "medium": PARTIAL, "high": REJECTED, "critical": REJECTED}
_LEGACY_AUDIT = {"pass": ACCEPTED, "fail": REJECTED}


def _audits(markers: Markers, response: str | None) -> Judgement:
    severity = markers.get("severity")
    legacy = markers.get("verdict")
    if severity is not None:
        category = _SEVERITY.get(severity)
        if category is None:
            return judged(REVIEW, "unknown_value", f"severity={severity}: not a known severity")
        reasons = [f"severity={severity}"]
        # Precedence: severity is the current schema and is graded; a legacy pass/fail on the
        # same row is kept only as a note, never allowed to override it.
        if legacy is not None:
            reasons.append(f"legacy verdict={legacy} ignored: severity takes precedence")
        return judged(category, f"severity_{severity}", *reasons)
    if legacy is not None:
        category = _LEGACY_AUDIT.get(legacy)
        if category is None:
            return judged(REVIEW, "unknown_value", f"verdict={legacy}: not pass or fail")
        return judged(category, f"legacy_{legacy}", f"legacy verdict={legacy}")
    return _missing("severity (or legacy verdict)")


def _contract_analyses(markers: Markers, response: str | None) -> Judgement:
    verdict = markers.get("observer_verdict")
    failures = markers.get("failure_markers") or []
    if verdict == "reject" or failures:
        # Both reasons are listed when both hold: a reader sees every ground for rejection.
        reasons = []
        if verdict == "reject":
            reasons.append("observer_verdict=reject")
        if failures:
            reasons.append(f"failure_markers={','.join(failures)}")
        return judged(REJECTED, "contract_rejected", *reasons)
    if verdict == "accept":
        return judged(ACCEPTED, "contract_accepted", "observer_verdict=accept: no failure markers")
    if markers.get("observer_verdict_present"):
        return judged(REVIEW, "no_verdict", "observer_verdict=null and no failure markers")
    return judged(REVIEW, "missing_marker", "missing marker observer_verdict and no failure markers")


def _audit_discrepancies(markers: Markers, response: str | None) -> Judgement:
    return judged(REJECTED, "audit_contradicted", "audit_discrepancy: the audit contradicted this claim")


def _replay_runs(markers: Markers, response: str | None) -> Judgement:
    passed = markers.get("validation_passed")
    escalated = markers.get("escalated")
    if passed is None:
        return _missing("validation_passed")
    if passed is False:
        suffix = " after escalation" if escalated else ""
        return judged(REJECTED, "validation_failed", f"validation_passed=false: failed{suffix}")
    if escalated is None:
        # Passed, but we cannot tell whether the local model or the escalation model earned it,
        # and that is exactly the difference between accepted and partially_accepted.
        return _missing("escalated")
    if escalated:
        return judged(
            PARTIAL, "passed_after_escalation", "validation_passed=true, escalated=true: passed after escalation"
        )
    return judged(ACCEPTED, "passed_locally", "validation_passed=true, escalated=false: passed without escalation")


# ---------------------------------------------------------------------------------------------
# telemetry class: markers where present
# ---------------------------------------------------------------------------------------------


def _auto_apply(markers: Markers, response: str | None) -> Judgement:
    status = markers.get("status")
    if status is None:
        return _missing("status")
    if status == "committed":
        return judged(ACCEPTED, "committed", "status=committed")
    # The spec says "ending in _reverted"; its own status list also has plain "reverted", which
    # is the same outcome (the patch was undone), so it is rejected too.
    if status == "reverted" or status.endswith("_reverted"):
        return judged(REJECTED, "reverted", f"status={status}: patch was reverted")
    return judged(REVIEW, "status_undecided", f"status={status}: neither committed nor reverted")


def _outcomes(markers: Markers, response: str | None) -> Judgement:
    events = markers.get("events_ok")
    gaps = markers.get("gap_signals")
    # Precedence: a failed event rejects even when gap signals are also present. The worse
    # signal wins, because partially_accepted rows reach RAG and a failed event must not.
    if events is not None and not all(events):
        failed = sum(1 for ok in events if not ok)
        reasons = [f"events_ok: {failed}/{len(events)} events not ok"]
        if gaps:
            reasons.append(f"gap_signals={gaps} also present: a failed event takes precedence")
        return judged(REJECTED, "event_failed", *reasons)
    if events is None:
        return _missing("events")
    if not events:
        # "all events ok" is vacuously true of an empty list; an outcome that recorded no event
        # is not evidence that anything worked.
        return judged(REVIEW, "no_events", "events=[]: no events recorded")
    if gaps is None:
        return _missing("gap_signals")
    if gaps > 0:
        return judged(PARTIAL, "gap_signals", f"gap_signals={gaps}: all {len(events)} events ok but gaps reported")
    return judged(ACCEPTED, "all_events_ok", f"events_ok: all {len(events)} events ok, gap_signals=0")


def _mode_experiments(markers: Markers, response: str | None) -> Judgement:
    if response is None or not response.strip():
        return judged(REJECTED, "empty_response", "response is empty")
    latency = markers.get("latency_ms")
    grounded = markers.get("grounded_fraction")
    slow = latency is not None and latency > SLOW_LATENCY_MS
    # Precedence: low grounding beats high latency. An ungrounded answer is a quality failure,
    # latency only a cost; a slow answer must not reach RAG as partial when it is ungrounded.
    if grounded is not None and grounded < GROUNDED_REJECT:
        reasons = [f"grounded_fraction={grounded:g}: below {GROUNDED_REJECT:g}"]
        if slow:
            reasons.append(f"latency_ms={latency:g} also over {SLOW_LATENCY_MS:g}: low grounding takes precedence")
        return judged(REJECTED, "ungrounded", *reasons)
    # Otherwise the spec's order holds: over 120 s is partially_accepted whatever the grounding.
    if slow:
        detail = f", grounded_fraction={grounded:g}" if grounded is not None else ""
        return judged(PARTIAL, "slow", f"latency_ms={latency:g}: over {SLOW_LATENCY_MS:g}{detail}")
    if grounded is None:
        return _missing("grounded_fraction")
    if grounded >= GROUNDED_ACCEPT:
        return judged(ACCEPTED, "grounded", f"grounded_fraction={grounded:g}: at least {GROUNDED_ACCEPT:g}")
    return judged(
        REVIEW,
        "grounding_undecided",
        f"grounded_fraction={grounded:g}: between {GROUNDED_REJECT:g} and {GROUNDED_ACCEPT:g}",
    )


# ---------------------------------------------------------------------------------------------
# the table
# ---------------------------------------------------------------------------------------------

DirectRule = Callable[[Markers, str | None], Judgement]

DIRECT_RULES: dict[str, DirectRule] = {
    "scrum_reviews": _scrum_reviews,
    "observer_reviews": _observer_reviews,
    "audits": _audits,
    "contract_analyses": _contract_analyses,
    "audit_discrepancies": _audit_discrepancies,
    "replay_runs": _replay_runs,
    "auto_apply": _auto_apply,
    "outcomes": _outcomes,
    "mode_experiments": _mode_experiments,
}


def stream_class(stream: str) -> str | None:
    spec = STREAMS.get(stream)
    return spec.source_class if spec else None


def judge(
    stream: str,
    markers: Markers,
    response: str | None = None,
    task_id: str | None = None,
    parents: ParentIndex | None = None,
) -> Judgement:
    """The rule table. Reads only what is passed; no I/O, no clock, no model."""
    rule = DIRECT_RULES.get(stream)
    if rule is not None:
        return rule(markers, response)
    source_class = stream_class(stream)
    if source_class == "extraction":
        return inherit(stream, task_id, markers.get("finding_id"), parents)
    if source_class == "ledger":
        return judged(REVIEW, "ledger_row", LEDGER_REASON)
    return judged(REVIEW, "unknown_stream", f"stream={stream}: no scoring rule")


def score_record(
    evidence: EvidenceRecord,
    scorer_version: str = SCORER_VERSION,
    parents: ParentIndex | None = None,
) -> ScoredRun:
    """One evidence record in, its validated scored run out. Pure.

    Extraction rows need ``parents`` (built by ``joins.build_parent_index`` over the whole
    evidence tree); without it they are needs_human_review "no parent index supplied".
    """
    return stamp(evidence, judge_record(evidence, parents), scorer_version)


def judge_record(evidence: EvidenceRecord, parents: ParentIndex | None = None) -> Judgement:
    """``judge`` on an evidence record; the parent index is built with this same function."""
    expected_class = stream_class(evidence.stream)
    if expected_class != evidence.source_class:
        # The class decides which rules apply and whether the row can be a parent; a record that
        # claims another class than its stream's is corrupt, and guessing which is right is not ours.
        return judged(
            REVIEW,
            "class_mismatch",
            f"source_class={evidence.source_class}: stream {evidence.stream} is {expected_class} class",
        )
    # The model's own field dict: the same mapping dict(markers) would copy, without the copy
    # (rules only read it).
    return judge(evidence.stream, evidence.markers.__dict__, evidence.response, evidence.task_id, parents)


def stamp(evidence: EvidenceRecord, judgement: Judgement, scorer_version: str) -> ScoredRun:
    return ScoredRun(
        id=evidence.id,
        evidence_id=evidence.id,
        stream=evidence.stream,
        source_class=evidence.source_class,
        task_id=evidence.task_id,
        category=judgement.category,
        reasons=list(judgement.reasons),
        scorer_version=scorer_version,
        parent_ids=list(judgement.parent_ids),
        event_at=evidence.event_at,
        provenance=evidence.provenance,
    )
