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

Incremental runs: a task's pairs depend only on its runs (their refs, and the evidence bytes
they point at) and on which pair ids earlier tasks wrote. The export state keeps, per task, its
refs, the partitions they came from, the bytes its pairs took in each output, its counts and
every pair id it tested against earlier tasks with the answer it got (``tasks.jsonl``, beside
the partition records). A task none of whose runs are new, all of whose partitions' prefixes
were reused, and whose pair ids meet the same answers again is copied; any other is paired
again from its kept refs plus its new runs (tested against fresh exports).

Never the same run on both sides (``self_pairing``), never the same text on both sides
(``invalid_preference_pairing``). The prompt is the chosen run's. Hallucinated paths are
checked on the chosen side only: a rejected answer that invents a file is the kind of answer
a preference set should teach a model to avoid.
"""

from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import orjson
from pydantic import ValidationError

from distillation_pipeline.exports import firewall
from distillation_pipeline.exports.candidates import (
    Broken,
    Candidate,
    describe,
    read_line,
    source_files,
    time_json,
)
from distillation_pipeline.exports.card import FileStats
from distillation_pipeline.exports.increments import (
    FileWindow,
    PartitionRecord,
    StateReader,
    StateWriter,
    add_counts,
    counts_delta,
    counts_of,
)
from distillation_pipeline.exports.onepass import HashingSink, Participant, run_exports
from distillation_pipeline.exports.ids import preference_id
from distillation_pipeline.exports.paths import RepoManifest
from distillation_pipeline.exports.quarantine import QuarantineWriter
from distillation_pipeline.exports.result import ExportResult
from distillation_pipeline.exports.run_refs import RunRef, RunRefSpill, decode_ref, micros, stripped_digest
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
TASKS_STATE = "tasks.jsonl"  # side file of the export state: pass 2 per task (module docstring)
# what pass 2 adds to the counts, kept per task
PAIR_COUNTED = ("written", "per_category", "written_streams", "runs_paired", "unpaired", "quarantined", "per_reason")
# how a tested pair id fared against the ids earlier pairs took (the replay must meet the same)
ID_TAKEN, ID_WRITTEN, ID_FREE = 0, 1, 2


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
        super().__init__(result, outputs)
        self.max_pairs_per_task = max_pairs_per_task
        self._runs = RunRefSpill()  # grouped by task on disk: memory stays flat
        self._layout = layout
        self._old_tasks: Path | None = None  # the previous run's pass 2 per task, if usable
        self._previous: StateReader | None = None
        self._tasks_out: IO[bytes] | None = None
        self._reused: set[str] = set()  # partitions whose prefix came from the previous run
        self._sources: dict[str, Any] = {}

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

    def attach_state(self, previous: StateReader | None, writer: StateWriter | None, current: set[str]) -> None:
        self._old_tasks = previous.side_file(TASKS_STATE) if previous is not None else None
        self._previous = previous
        self._tasks_out = writer.side_file(TASKS_STATE) if writer is not None else None

    def finish(self) -> None:
        """Pass 2: pairs per task, in sorted task-id order; a task the previous run paired from
        exactly the same runs is copied when its pair ids meet the same answers again."""
        seen_ids: set[str] = set()
        sinks = [self._rows, self._openai, self._quarantine_sink]
        old = _OldTasks(self._old_tasks) if self._old_tasks is not None else None
        copier = _RangeCopier(self.outputs, sinks, self._previous)  # previous outputs: replaced after the pass
        if old is not None:
            copier.start_at(2, old.quarantine_pass2_start)
        self._record(orjson.dumps({"quarantine_pass2_start": self._quarantine_sink.size}) + b"\n")
        for task_id, kept, new_refs in _merge_tasks(old, self._runs.by_task_encoded()):
            if kept is not None and not new_refs and self._copyable(kept, seen_ids):
                copier.copy(kept.lengths)
                add_counts(self.result, kept.counts)
                self.result.reused_tasks += 1
                self._record(kept.summary_line + kept.refs_line)
                continue
            if kept is not None:
                copier.skip(kept.lengths)
            old_refs = [ref for ref in kept.refs() if ref[0] in self._reused] if kept is not None else []
            refs = sorted(old_refs + new_refs, key=lambda ref: (ref[0], ref[1][4]))  # arrival: partition, position
            if refs:
                copier.flush()
                self._pair_task(task_id, refs, seen_ids)
        copier.flush()
        if old is not None:
            old.close()

    def _copyable(self, kept: "_KeptTask", seen_ids: set[str]) -> bool:
        """Same runs (every partition reused, none new) and the same answers for its pair ids."""
        if not all(relative in self._reused for relative in kept.relatives):
            return False
        taken: set[str] = set()
        for pair_id, outcome in kept.tested:
            if (pair_id in seen_ids or pair_id in taken) != (outcome == ID_TAKEN):
                return False
            if outcome == ID_WRITTEN:
                taken.add(pair_id)
        seen_ids.update(taken)
        return True

    def _pair_task(self, task_id: str, refs: list[tuple[str, list]], seen_ids: set[str]) -> None:
        result = self.result
        before_counts = counts_of(result, PAIR_COUNTED)
        before_sizes = [self._rows.size, self._openai.size, self._quarantine_sink.size]
        runs = [decode_ref(encoded, self._source(relative))[1] for relative, encoded in refs]
        tested: list[list] = []
        for row in _pairs_for_task(task_id, runs, self.max_pairs_per_task, seen_ids, result, self._quarantine, tested):
            self._rows.write(dumps_line(row))
            self._openai.write(dumps_line(openai_preference_row(row["prompt"], row["chosen"], row["rejected"])))
            result.count_written(row["pair_kind"])
            for stream in (row["chosen_provenance"]["stream"], row["rejected_provenance"]["stream"]):
                result.written_streams[stream] = result.written_streams.get(stream, 0) + 1
        sizes = [self._rows.size, self._openai.size, self._quarantine_sink.size]
        summary = [task_id, sorted({relative for relative, _ in refs}),
                   [after - before for after, before in zip(sizes, before_sizes, strict=True)],
                   counts_delta(counts_of(result, PAIR_COUNTED), before_counts), tested]  # fmt: skip
        self._record(orjson.dumps(summary) + b"\n" + orjson.dumps([[relative, *encoded] for relative, encoded in refs]) + b"\n")

    def _record(self, data: bytes) -> None:
        if self._tasks_out is not None:
            self._tasks_out.write(data)

    def _source(self, relative: str) -> Any:
        if relative not in self._sources:
            self._sources[relative] = source_files(self._layout, relative)
        return self._sources[relative]

    # --- incremental runs: pass 1 of a partition prefix is reused; pass 2 per task (finish) ---

    def begin_partition(self) -> None:
        super().begin_partition()
        self._begin_quarantine = self._quarantine_sink.size

    def can_reuse(self, record: PartitionRecord) -> bool:
        # A run's refusal and its ref depend on nothing outside its partition; the refs
        # themselves wait in the previous run's per-task file, so without it nothing is reused.
        return self._old_tasks is not None

    def reuse(self, record: PartitionRecord, previous: StateReader) -> None:
        # The partition's run refusals (quarantine) are copied; its runs' refs are in the
        # per-task file (``finish``). Copied pairs are not marked trusted (no ``copied``).
        (start, end), = record.ranges
        previous.copy(self.outputs[2], start, end, self._quarantine_sink)
        self._reused.add(record.relative)
        add_counts(self.result, record.counts)

    def end_partition(self, relative: str, window: FileWindow) -> PartitionRecord:
        return PartitionRecord(
            relative=relative, **window.__dict__, ranges=[[self._begin_quarantine, self._quarantine_sink.size]],
            counts=self.partition_counts(),
        )  # fmt: skip

    def card_stats(self) -> list[FileStats]:
        result = self.result
        return [
            FileStats(self.outputs[0], rows=result.written, categories=Counter(result.per_category),
                      streams=Counter(result.written_streams)),
            FileStats(self.outputs[1], rows=result.written),
            FileStats(self.outputs[2], rows=result.quarantined, reasons=Counter(result.per_reason)),
        ]  # fmt: skip


class _KeptTask:
    """One task as the previous run paired it: two lines of ``tasks.jsonl``, refs parsed on demand."""

    def __init__(self, summary_line: bytes, refs_line: bytes) -> None:
        self.summary_line, self.refs_line = summary_line, refs_line
        self.task_id, self.relatives, self.lengths, self.counts, self.tested = orjson.loads(summary_line)

    def refs(self) -> list[tuple[str, list]]:
        return [(ref[0], ref[1:]) for ref in orjson.loads(self.refs_line)]


class _OldTasks:
    """The previous run's ``tasks.jsonl``, read in task order (it was written in that order)."""

    def __init__(self, path: Path) -> None:
        self._handle = open(path, "rb")
        self.quarantine_pass2_start = int(orjson.loads(self._handle.readline())["quarantine_pass2_start"])

    def __iter__(self) -> Iterator[_KeptTask]:
        while summary := self._handle.readline():
            yield _KeptTask(summary, self._handle.readline())

    def close(self) -> None:
        self._handle.close()


def _merge_tasks(
    old: _OldTasks | None, new: Iterator[tuple[str, list[tuple[str, list]]]]
) -> Iterator[tuple[str, "_KeptTask | None", list[tuple[str, list]]]]:
    """(task id, the previous run's task or None, this run's new refs) in sorted task-id order."""
    kept_iter = iter(old) if old is not None else iter(())
    kept, fresh = next(kept_iter, None), next(new, None)
    while kept is not None or fresh is not None:
        if fresh is None or (kept is not None and kept.task_id < fresh[0]):
            yield kept.task_id, kept, []  # type: ignore[union-attr]
            kept = next(kept_iter, None)
        elif kept is None or fresh[0] < kept.task_id:
            yield fresh[0], None, fresh[1]
            fresh = next(new, None)
        else:
            yield kept.task_id, kept, fresh[1]
            kept, fresh = next(kept_iter, None), next(new, None)


class _RangeCopier:
    """Copies runs of kept bytes from the previous outputs, adjacent ranges as one copy."""

    def __init__(self, sources: list[Path], sinks: list[HashingSink], previous: StateReader | None) -> None:
        self._sources, self._sinks, self._previous = sources, sinks, previous
        self._cursor = [0] * len(sources)  # where the next kept task's bytes start, per output
        self._pending: list[list[int] | None] = [None] * len(sources)

    def start_at(self, output: int, offset: int) -> None:
        self._cursor[output] = offset

    def copy(self, lengths: list[int]) -> None:
        for output, length in enumerate(lengths):
            start = self._cursor[output]
            pending = self._pending[output]
            if pending is not None and pending[1] == start:
                pending[1] += length
            else:
                self._flush_one(output)
                self._pending[output] = [start, start + length]
            self._cursor[output] += length

    def skip(self, lengths: list[int]) -> None:
        for output, length in enumerate(lengths):
            self._cursor[output] += length

    def flush(self) -> None:
        for output in range(len(self._sources)):
            self._flush_one(output)

    def _flush_one(self, output: int) -> None:
        pending = self._pending[output]
        if pending is not None and pending[1] > pending[0]:
            assert self._previous is not None  # ranges are only kept from a previous run
            self._previous.copy(self._sources[output], pending[0], pending[1], self._sinks[output])
        self._pending[output] = None


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
    tested: list[list],
) -> Iterator[dict]:
    """Each written pair as its JSON row (``_build_pair``). ``tested``: every pair id checked
    against ``seen_ids``, with how it fared (``ID_*``)."""
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
            sample = _build_pair(task_id, good, bad, pair_kind, seen_ids, texts, quarantine, tested)
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
    tested: list[list],
) -> dict | None:
    """The pair as the JSON row written, once it validated as a ``PreferenceSample`` (what the
    sample's ``model_dump(mode="json")`` would be, without dumping it); None if refused."""

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
        tested.append([pair_id, ID_TAKEN])
        refuse("duplicate_id", f"same content as {pair_id} (chosen {good.evidence_id}, rejected {bad.evidence_id})")
        return None
    tested.append(verdict := [pair_id, ID_FREE])
    chosen_evidence, rejected_evidence = _reread(good, texts), _reread(bad, texts)
    if isinstance(chosen_evidence, str) or isinstance(rejected_evidence, str):
        refuse("schema_violation", chosen_evidence if isinstance(chosen_evidence, str) else rejected_evidence)
        return None
    created_at = max(good.recorded_at, bad.recorded_at)
    row = {
        "schema_version": 1,
        "id": pair_id,
        "created_at": created_at,
        "task_id": task_id,
        "prompt": chosen_evidence.prompt,
        "chosen": chosen_evidence.response,
        "rejected": rejected_evidence.response,
        "chosen_category": good.category,
        "rejected_category": bad.category,
        "pair_kind": pair_kind,
        "chosen_provenance": _provenance(chosen_evidence, good),
        "rejected_provenance": _provenance(rejected_evidence, bad),
    }
    try:
        # Each provenance alone first, as building it did: a bad one is refused with its own
        # field's message. Then the pair, given the validated provenances as they are.
        PreferenceSample.model_validate({
            **row,
            "chosen_provenance": ExportProvenance.model_validate(row["chosen_provenance"]),
            "rejected_provenance": ExportProvenance.model_validate(row["rejected_provenance"]),
        })  # fmt: skip
    except ValidationError as exc:
        refuse("schema_violation", describe(exc))
        return None
    seen_ids.add(pair_id)
    verdict[1] = ID_WRITTEN
    row["created_at"] = time_json(created_at)
    return row


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


def _provenance(evidence: EvidenceRecord, run: RunRef) -> dict:
    """A pair side's ``ExportProvenance``, as its JSON; validated with the pair (``_build_pair``)."""
    return {
        "evidence_id": evidence.id,
        "scored_run_id": run.evidence_id,  # candidates are admitted only when the scored id matches
        "stream": evidence.stream,
        "source_file": evidence.provenance.source_file,
        "line_offset": evidence.provenance.line_offset,
        "sig_hash": evidence.provenance.sig_hash,
        "scorer_version": run.scorer_version,
    }
