"""Preference pairs in TRL's DPO layout: same task, accepted over rejected (spec section 5).

Two passes, so a million runs never sit in memory as text:

1. Stream every candidate once. Refuse what cannot stand in any pair (broken, empty, a
   credential, a chosen-side answer citing a file that does not exist) and keep, per task, a
   small ``RunRef``: evidence id, category, where its line is (file + byte offset), the
   sha256 of its stripped prompt (chosen side only) and response, recorded_at, scorer version.
   The refs wait in sorted chunks on disk (``run_refs.RunRefSpill``), not in memory; memory
   is one chunk, plus ~100 bytes per written pair for duplicate detection.
2. Per task, in sorted task-id order: enumerate accepted x rejected first, then accepted x
   partially_accepted as fallback, diagonally (each chosen run meets a different rejected run
   before any meets a second one, so one hot run does not take every slot), and write pairs
   until ``max_pairs_per_task``. Only the runs of written pairs are re-read, by offset.

Never the same run on both sides (``self_pairing``), never the same text on both sides
(``invalid_preference_pairing``). The prompt is the chosen run's. Hallucinated paths are
checked on the chosen side only: a rejected answer that invents a file is the kind of answer
a preference set should teach a model to avoid.
"""

from collections import Counter
from collections.abc import Iterator
from pathlib import Path

from pydantic import ValidationError

from distillation_pipeline.exports import firewall
from distillation_pipeline.exports.candidates import (
    Broken,
    Candidate,
    describe,
    read_line,
    source_files,
)
from distillation_pipeline.exports.card import FileStats
from distillation_pipeline.exports.increments import (
    FileWindow,
    PartitionRecord,
    add_counts,
    copy_range,
)
from distillation_pipeline.exports.onepass import HashingSink, Participant, run_exports
from distillation_pipeline.exports.ids import preference_id
from distillation_pipeline.exports.paths import RepoManifest
from distillation_pipeline.exports.quarantine import QuarantineWriter
from distillation_pipeline.exports.result import ExportResult
from distillation_pipeline.exports.run_refs import RunRef, RunRefSpill, micros, stripped_digest
from distillation_pipeline.exports.streaming import prompt_response_refusal
from distillation_pipeline.lib.jsonl import dumps_line
from distillation_pipeline.lib.layout import Layout
from distillation_pipeline.schemas import (
    EvidenceRecord,
    ExportProvenance,
    PreferenceSample,
    QuarantineReason,
)

DEFAULT_MAX_PAIRS_PER_TASK = 5
PAIR_KINDS = (("rejected", "accepted_over_rejected"), ("partially_accepted", "accepted_over_partial"))


def preference_export(
    layout: Layout, *, max_pairs_per_task: int = DEFAULT_MAX_PAIRS_PER_TASK, dry_run: bool = False
) -> "PreferenceExport":
    """The preference dataset as one participant of the shared export pass."""
    if max_pairs_per_task < 1:
        raise ValueError("max_pairs_per_task must be at least 1")
    result = ExportResult("preference", dry_run=dry_run, options={"max_pairs_per_task": max_pairs_per_task})
    return PreferenceExport(result, layout, max_pairs_per_task)


def export_preference(
    layout: Layout, *, max_pairs_per_task: int = DEFAULT_MAX_PAIRS_PER_TASK, dry_run: bool = False
) -> ExportResult:
    """Export the preference dataset alone (``onepass.run_exports`` runs it with the others)."""
    participant = preference_export(layout, max_pairs_per_task=max_pairs_per_task, dry_run=dry_run)
    return run_exports(layout, [participant], dry_run=dry_run)["preference"]


def openai_preference_row(prompt: str, chosen: str, rejected: str) -> dict:
    """OpenAI preference fine-tuning layout."""
    return {
        "input": {"messages": [{"role": "user", "content": prompt}]},
        "preferred_output": [{"role": "assistant", "content": chosen}],
        "non_preferred_output": [{"role": "assistant", "content": rejected}],
    }


# ------------------------------------------------------------------------------------------
# Pass 1: one small reference per usable run, grouped by task
# ------------------------------------------------------------------------------------------


def _unpaired(result: ExportResult, why: str) -> None:
    result.unpaired[why] = result.unpaired.get(why, 0) + 1


class PreferenceExport(Participant):
    """Pass 1 as candidates are offered (one ``RunRef`` per usable run), pass 2 in ``finish``."""

    eligible = staticmethod(firewall.preference_eligible)

    # pass 1 only: pairs (written, per pair kind, streams) are rebuilt every run
    COUNTED = ("records_in", "quarantined", "runs_quarantined", "per_reason", "unpaired")

    def __init__(self, result: ExportResult, layout: Layout, max_pairs_per_task: int) -> None:
        outputs = [layout.preference_file, layout.preference_openai_file, layout.quarantine_file("preference")]
        super().__init__(result, outputs)  # events: this partition's run refs, for the next run
        self.max_pairs_per_task = max_pairs_per_task
        self._runs = RunRefSpill()  # grouped by task on disk: memory stays flat
        self._layout = layout

    def open(self, sinks: list[HashingSink]) -> None:
        self._rows, self._openai, self._quarantine_sink = sinks
        self._quarantine = QuarantineWriter("preference", sinks[2], self.result)  # type: ignore[arg-type]

    def offer(self, item: Candidate | Broken) -> None:
        result = self.result
        result.records_in += 1
        if isinstance(item, Broken):
            result.runs_quarantined += 1
            self._quarantine.refuse_broken(item)
            return
        side = firewall.preference_side(item.category)
        if side is None:
            _unpaired(result, f"category_{item.category}")
            return
        if item.evidence.task_id is None:
            _unpaired(result, "no_task_id")
            return
        refusal = _run_refusal(item, side, self.manifest)
        if refusal is not None:
            result.runs_quarantined += 1
            self._quarantine.refuse_candidate(item, *refusal)
            return
        prompt, response = item.evidence.prompt or "", item.evidence.response or ""
        # What pass 2 needs of the run, in the form the spill and the export state keep it.
        encoded = [
            item.evidence.task_id, item.evidence.id, item.stream, item.category, item.index, item.evidence_offset,
            stripped_digest(prompt).hex() if side == "chosen" else None, stripped_digest(response).hex(),
            micros(item.created_at), item.scored.scorer_version,
        ]  # fmt: skip
        self._runs.add_encoded(item.source, encoded)
        self._events.append(encoded)

    def finish(self) -> None:
        """Pass 2: pairs per task, in sorted task-id order."""
        seen_ids: set[str] = set()
        for task_id, runs in self._runs.by_task():
            pairs = _pairs_for_task(task_id, runs, self.max_pairs_per_task, seen_ids, self.result, self._quarantine)
            for sample in pairs:
                self._rows.write(dumps_line(sample.model_dump(mode="json")))
                self._openai.write(dumps_line(openai_preference_row(sample.prompt, sample.chosen, sample.rejected)))
                self.result.count_written(sample.pair_kind)
                for stream in (sample.chosen_provenance.stream, sample.rejected_provenance.stream):
                    self.result.written_streams[stream] = self.result.written_streams.get(stream, 0) + 1

    # --- incremental runs: pass 1 of a partition prefix is reused; pairing always runs ---------

    def begin_partition(self) -> None:
        super().begin_partition()
        self._begin_quarantine = self._quarantine_sink.size

    def can_reuse(self, record: PartitionRecord) -> bool:
        return True  # a run's refusal and its reference depend on nothing outside its partition

    def reuse(self, record: PartitionRecord, previous_outputs: list[Path], verified: bool) -> None:
        # Only the partition's run refusals (quarantine) are copied; pairs are rebuilt every run,
        # so no byte of the pair files is a copy and nothing is marked trusted (``verified``).
        (start, end), = record.ranges
        copy_range(previous_outputs[2], start, end, self._quarantine_sink)
        source = source_files(self._layout, record.relative)
        for event in record.events:
            self._runs.add_encoded(source, event)
        self._events = list(record.events)
        add_counts(self.result, record.counts)

    def end_partition(self, relative: str, window: FileWindow) -> PartitionRecord:
        return PartitionRecord(
            relative=relative, **window.__dict__, ranges=[[self._begin_quarantine, self._quarantine_sink.size]],
            counts=self.partition_counts(), events=self._events,
        )  # fmt: skip

    def card_stats(self) -> list[FileStats]:
        result = self.result
        return [
            FileStats(self.outputs[0], rows=result.written, categories=Counter(result.per_category),
                      streams=Counter(result.written_streams)),
            FileStats(self.outputs[1], rows=result.written),
            FileStats(self.outputs[2], rows=result.quarantined, reasons=Counter(result.per_reason)),
        ]  # fmt: skip


def _run_refusal(candidate: Candidate, side: str, manifest: RepoManifest | None) -> tuple[QuarantineReason, str] | None:
    return prompt_response_refusal(candidate, manifest, check_paths=side == "chosen")


# ------------------------------------------------------------------------------------------
# Pass 2: pairs per task
# ------------------------------------------------------------------------------------------


def _diagonal(chosen: list[RunRef], other: list[RunRef]) -> Iterator[tuple[RunRef, RunRef]]:
    """Every (chosen, other) pair once, spreading each round over distinct runs."""
    for shift in range(len(other)):
        for index, run in enumerate(chosen):
            yield run, other[(index + shift) % len(other)]


def _pairs_for_task(
    task_id: str,
    runs: list[RunRef],
    max_pairs: int,
    seen_ids: set[str],
    result: ExportResult,
    quarantine: QuarantineWriter,
) -> Iterator[PreferenceSample]:
    chosen = [run for run in runs if run.category == "accepted"]
    written = 0
    considered: set[int] = set()
    paired: set[int] = set()
    texts: dict[int, EvidenceRecord] = {}
    for other_category, pair_kind in PAIR_KINDS:
        others = [run for run in runs if run.category == other_category]
        if not chosen or not others:
            continue
        for good, bad in _diagonal(chosen, others):
            if written >= max_pairs:
                break
            considered.update((id(good), id(bad)))
            sample = _build_pair(task_id, good, bad, pair_kind, seen_ids, texts, quarantine)
            if sample is not None:
                written += 1
                paired.update((id(good), id(bad)))
                yield sample
    has_pair = bool(chosen) and any(run.category != "accepted" for run in runs)
    for run in runs:
        if id(run) in paired:
            result.runs_paired += 1
        elif not has_pair:
            _unpaired(result, "no_counterpart")
        elif id(run) in considered:
            _unpaired(result, "pairs_refused")
        else:
            _unpaired(result, "over_pair_cap")


def _build_pair(
    task_id: str,
    good: RunRef,
    bad: RunRef,
    pair_kind: str,
    seen_ids: set[str],
    texts: dict[int, EvidenceRecord],
    quarantine: QuarantineWriter,
) -> PreferenceSample | None:

    def refuse(reason: QuarantineReason, detail: str) -> None:
        quarantine.refuse(
            reason, detail, where=f"{good.where} vs {bad.where}", evidence_id=good.evidence_id, stream=good.stream,
            task_id=task_id, category=f"{good.category}/{bad.category}", created_at=max(good.recorded_at, bad.recorded_at),
        )  # fmt: skip

    if good.evidence_id == bad.evidence_id:
        refuse("self_pairing", f"run {good.evidence_id} would be on both sides")
        return None
    if good.response_digest == bad.response_digest:
        refuse("invalid_preference_pairing", f"{good.evidence_id} and {bad.evidence_id} have the same text")
        return None
    assert good.prompt_digest is not None
    pair_id = preference_id(good.prompt_digest.hex(), good.response_digest.hex(), bad.response_digest.hex())
    if pair_id in seen_ids:
        refuse("duplicate_id", f"same content as {pair_id} (chosen {good.evidence_id}, rejected {bad.evidence_id})")
        return None
    chosen_evidence, rejected_evidence = _reread(good, texts), _reread(bad, texts)
    if isinstance(chosen_evidence, str) or isinstance(rejected_evidence, str):
        refuse("schema_violation", chosen_evidence if isinstance(chosen_evidence, str) else rejected_evidence)
        return None
    try:
        sample = PreferenceSample(
            id=pair_id,
            created_at=max(good.recorded_at, bad.recorded_at),
            task_id=task_id,
            prompt=chosen_evidence.prompt,  # type: ignore[arg-type]
            chosen=chosen_evidence.response,  # type: ignore[arg-type]
            rejected=rejected_evidence.response,  # type: ignore[arg-type]
            chosen_category=good.category,  # type: ignore[arg-type]
            rejected_category=bad.category,  # type: ignore[arg-type]
            pair_kind=pair_kind,  # type: ignore[arg-type]
            chosen_provenance=_provenance(chosen_evidence, good),
            rejected_provenance=_provenance(rejected_evidence, bad),
        )
    except ValidationError as exc:
        refuse("schema_violation", describe(exc))
        return None
    seen_ids.add(pair_id)
    return sample


def _reread(run: RunRef, cache: dict[int, EvidenceRecord]) -> EvidenceRecord | str:
    """The run's evidence, re-read by offset; a message if it changed since pass 1."""
    if id(run) in cache:
        return cache[id(run)]
    try:
        evidence = EvidenceRecord.model_validate_json(read_line(run.source.evidence, run.offset))
    except (OSError, ValidationError) as exc:
        return f"evidence {run.evidence_id} could not be re-read: {type(exc).__name__}"
    changed = evidence.id != run.evidence_id or stripped_digest(evidence.response or "") != run.response_digest
    if run.prompt_digest is not None and stripped_digest(evidence.prompt or "") != run.prompt_digest:
        changed = True
    if changed:
        return f"evidence {run.evidence_id} changed while the export ran"
    cache[id(run)] = evidence
    return evidence


def _provenance(evidence: EvidenceRecord, run: RunRef) -> ExportProvenance:
    return ExportProvenance(
        evidence_id=evidence.id,
        scored_run_id=run.evidence_id,  # candidates are admitted only when the scored id matches
        stream=evidence.stream,
        source_file=evidence.provenance.source_file,
        line_offset=evidence.provenance.line_offset,
        sig_hash=evidence.provenance.sig_hash,
        scorer_version=run.scorer_version,
    )
