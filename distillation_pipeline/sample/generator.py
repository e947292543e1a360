"""Write a sample ``data/_kb/`` substrate: every stream of spec section 2, realistic and messy.

``generate_substrate(root, rows, seed)`` writes about ``rows`` source lines in total, spread over
the streams in realistic proportions, plus ``repo_files.txt``. The same rows and seed give
byte-identical files: one ``random.Random(seed)`` drives everything, and time comes from a fixed
window (see ``clock``), never the wall clock.

It streams: rows go to per-stream buffers flushed in 1 MiB writes, and nothing but per-task
bookkeeping (a few bytes per task) is held, so a million rows take the memory a thousand do.
"""

import bisect
import contextlib
import itertools
import random
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import orjson

from distillation_pipeline.lib.atomic import atomic_write_text, atomic_writer
from distillation_pipeline.lib.jsonl import BOM
from distillation_pipeline.lib.layout import Layout
from distillation_pipeline.sample import clock, text
from distillation_pipeline.sample import mess as mess_kinds
from distillation_pipeline.sample.mess import FilePlan, MessSchedule
from distillation_pipeline.sample.repo import build_repo
from distillation_pipeline.sample.rows import TEXT_FIELD, RowForge
from distillation_pipeline.sample.tasks import REJECTED, Task, TaskPool
from distillation_pipeline.schemas import StreamName

# Share of rows per stream, loosely after the prototype's real data: reviews and audits dominate,
# replay is new and small. audit_facts are not drawn: they follow the audits row they are about.
STREAM_WEIGHTS = {
    "scrum_reviews": 0.14, "observer_reviews": 0.08, "audits": 0.13, "contract_analyses": 0.04,
    "audit_discrepancies": 0.03, "replay_runs": 0.01, "auto_apply": 0.07, "outcomes": 0.06,
    "mode_experiments": 0.08, "distilled_facts": 0.07, "distilled_procedures": 0.07,
    "distilled_config_hints": 0.04, "observer_escalations": 0.04, "model_trust": 0.05,
}
STREAMS: tuple[str, ...] = StreamName.__args__  # type: ignore[attr-defined]  # spec section 2, in order
EXTRACTION_STREAMS = frozenset({"audit_facts", "distilled_facts", "distilled_procedures",
                                "distilled_config_hints", "observer_escalations"})
UNKNOWN_STREAM_WEIGHT = 0.002
ORPHAN_SHARE = 0.04  # extraction rows about a task no verdict-bearing stream ever mentions
AUDIT_FACTS_PER_FINDING = ((0, 0.5), (1, 0.85), (2, 1.0))  # (count, cumulative probability)
ROWS_PER_TASK = 12
DISCREPANCY_TASK_TRIES = 4  # a discrepancy needs a rejected run; look at a few active tasks for one
_FLUSH_BYTES = 1 << 20


@dataclass(frozen=True)
class SampleStats:
    seed: int
    rows_requested: int
    total_lines: int
    mess_enabled: bool
    lines: dict[str, int]  # file stem (stream) -> lines written, blank, torn and duplicate included
    mess: dict[str, dict[str, int]]  # stream -> mess kind -> times injected
    planted: dict[str, dict[str, int]]  # stream -> {"secret": n, "hallucinated_path": n}
    tasks: int
    repo_files: int

    @property
    def mess_totals(self) -> dict[str, int]:
        totals: Counter[str] = Counter()
        for kinds in self.mess.values():
            totals.update(kinds)
        return dict(sorted(totals.items()))

    def to_dict(self) -> dict[str, Any]:
        return {
            "seed": self.seed, "rows_requested": self.rows_requested, "total_lines": self.total_lines,
            "mess_enabled": self.mess_enabled, "tasks": self.tasks, "repo_files": self.repo_files,
            "lines": dict(self.lines), "mess_totals": self.mess_totals,
            "mess": {stream: dict(kinds) for stream, kinds in self.mess.items()},
            "planted": {stream: dict(kinds) for stream, kinds in self.planted.items()},
        }


def generate_substrate(root: Path, rows: int, seed: int = 7, mess: bool = True) -> SampleStats:
    """Write ``data/_kb/`` under ``root`` (overwriting the files we own there) and say what went in."""
    if rows < 0:
        raise ValueError(f"rows must be >= 0, got {rows}")
    layout = Layout.at(root)
    rng = random.Random(seed)
    repo = build_repo(rng, manifest_size(rows))
    pool = TaskPool(rng, max(8, rows // ROWS_PER_TASK), repo)
    weights = _stream_weights(mess)
    files = mess_kinds.plan_files(rng, _expected_lines(weights, rows), mess)
    schedule = mess_kinds.build_schedule(rng, rows, mess, mess_kinds.huge_line_count(rows))

    atomic_write_text(layout.repo_manifest, "\n".join(repo.files) + "\n")
    names = STREAMS + ((mess_kinds.UNKNOWN_STREAM,) if mess else ())
    if not mess:  # a clean sample must not keep the unknown stream of an earlier messy one
        layout.source_file(mess_kinds.UNKNOWN_STREAM).unlink(missing_ok=True)
    with contextlib.ExitStack() as stack:
        sinks = {
            name: StreamSink(stack.enter_context(atomic_writer(layout.source_file(name))),
                             bom=name in files.bom_streams,
                             crlf_lines=files.crlf_lines if name == files.crlf_stream else range(0))
            for name in names
        }
        run = _SubstrateRun(rng, rows, pool, RowForge(rng, repo), schedule, files, sinks, weights)
        run.write_all()
        for sink in sinks.values():
            sink.flush()
    return run.stats(seed, mess, repo_files=len(repo.files))


def manifest_size(rows: int) -> int:
    """A few hundred paths for a small sample, growing to every candidate path for a large one."""
    return min(3000, max(400, rows // 40))


def _stream_weights(mess: bool) -> dict[str, float]:
    weights = dict(STREAM_WEIGHTS)
    if mess:
        weights[mess_kinds.EMPTY_STREAM] = 0.0
        weights[mess_kinds.UNKNOWN_STREAM] = UNKNOWN_STREAM_WEIGHT
    return weights


def _expected_lines(weights: dict[str, float], rows: int) -> dict[str, float]:
    drawn = dict(weights)
    drawn["audit_facts"] = weights["audits"] * _mean_audit_facts()
    total = sum(drawn.values())
    return {stream: rows * weight / total for stream, weight in drawn.items()}


def _mean_audit_facts() -> float:
    mean, previous = 0.0, 0.0
    for count, cumulative in AUDIT_FACTS_PER_FINDING:
        mean += count * (cumulative - previous)
        previous = cumulative
    return mean


class StreamSink:
    """One source file: lines buffered and written in large chunks, CRLF over a planned stretch.

    The buffer is a bytearray on purpose: orjson's output objects carry slack capacity, so
    keeping thousands of them in a list until a flush costs several times their length.
    """

    def __init__(self, handle: BinaryIO, bom: bool = False, crlf_lines: range = range(0)) -> None:
        self._handle = handle
        self._buffer = bytearray()
        self._bom_pending = bom  # written with the first line: a file with no lines stays empty
        self._crlf_lines = crlf_lines
        self.lines = 0
        self.crlf_written = 0

    def write(self, line: bytes) -> None:
        self._write_bom_once()
        self._buffer += line
        if self.lines in self._crlf_lines:
            self._buffer += b"\r\n"
            self.crlf_written += 1
        else:
            self._buffer += b"\n"
        self.lines += 1
        if len(self._buffer) >= _FLUSH_BYTES:
            self.flush()

    def write_unterminated(self, line: bytes) -> None:
        """The last line of a file whose writer died mid-append: no newline after it."""
        self._write_bom_once()
        self._buffer += line
        self.lines += 1

    def _write_bom_once(self) -> None:
        if self._bom_pending:
            self._buffer += BOM
            self._bom_pending = False

    def flush(self) -> None:
        self._handle.write(self._buffer)
        self._buffer.clear()


class _SubstrateRun:
    """The generation loop and its counters: one event at a time, each one or a few lines."""

    def __init__(self, rng: random.Random, rows: int, pool: TaskPool, forge: RowForge, schedule: MessSchedule,
                 files: FilePlan, sinks: dict[str, StreamSink], weights: dict[str, float]) -> None:
        self.rng = rng
        self.rows = rows
        self.pool = pool
        self.forge = forge
        self.schedule = schedule
        self.files = files
        self.sinks = sinks
        drawn = {stream: weight for stream, weight in weights.items() if weight > 0}
        self._streams = list(drawn)
        self._cumulative = list(itertools.accumulate(drawn.values()))
        self._weight_total = self._cumulative[-1]
        self.written = 0
        self.events = 0
        self.mess_counts: dict[str, Counter[str]] = {name: Counter() for name in sinks}
        self.planted: dict[str, Counter[str]] = {name: Counter() for name in sinks}

    # --- the loop --------------------------------------------------------------------------------

    def write_all(self) -> None:
        torn_streams = self.files.torn_streams[: self.rows]  # a torn line is still one of the rows
        budget = self.rows - len(torn_streams)
        while self.written < budget:
            self._next_event(budget)
        self._tear_tails(torn_streams)

    def _next_event(self, budget: int) -> None:
        progress = self.written / self.rows
        epoch = clock.moment(progress, self.rng)
        stream = self._streams[bisect.bisect_right(self._cumulative, self.rng.random() * self._weight_total)]
        task, category = self._pick_task(stream, progress)
        if stream == "audit_discrepancies" and category != REJECTED:
            stream = "audits"  # nothing was contradicted: log the audit finding instead
        row = self.forge.build(stream, task, category, epoch)
        self._count_hallucinations(stream)
        finding_id = row.get("finding_id")
        self._emit(stream, row, budget)
        if stream == "audits":
            self._follow_with_audit_facts(task, finding_id, epoch, budget)

    def _pick_task(self, stream: str, progress: float) -> tuple[Task, str]:
        if stream in EXTRACTION_STREAMS and self.rng.random() < ORPHAN_SHARE:
            task = self.pool.orphan(self.rng)
            return task, task.category(self.rng)
        task = self.pool.near(progress, self.rng)
        category = task.category(self.rng)
        tries = DISCREPANCY_TASK_TRIES if stream == "audit_discrepancies" else 0
        while category != REJECTED and tries:
            task = self.pool.near(progress, self.rng)
            category = task.category(self.rng)
            tries -= 1
        return task, category

    def _follow_with_audit_facts(self, task: Task, finding_id: str, epoch: float, budget: int) -> None:
        """Facts extracted from a finding land right after it, each citing its finding_id."""
        draw = self.rng.random()
        count = next(count for count, cumulative in AUDIT_FACTS_PER_FINDING if draw < cumulative)
        for _ in range(min(count, budget - self.written)):
            epoch = min(epoch + self.rng.uniform(1, 600), clock.LAST_EPOCH)
            row = self.forge.audit_fact(task, finding_id, epoch)
            self._count_hallucinations("audit_facts")
            self._emit("audit_facts", row, budget)

    def _tear_tails(self, torn_streams: tuple[str, ...]) -> None:
        for stream in torn_streams:
            task = self.pool.near(1.0, self.rng)
            epoch = clock.moment(1.0, self.rng)
            if stream == "audit_facts":  # the finding it was about never matters: the row cannot parse
                row = self.forge.audit_fact(task, f"P{task.phase:02d}-pending", epoch)
            else:
                row = self.forge.build(stream, task, task.category(self.rng), epoch)
            self.sinks[stream].write_unterminated(mess_kinds.torn(orjson.dumps(row), self.rng))
            self.mess_counts[stream]["truncated_tail"] += 1
            self.written += 1

    # --- one row: mess, serialise, write ----------------------------------------------------------

    def _emit(self, stream: str, row: dict[str, Any], budget: int) -> None:
        kinds = self.schedule.kinds_for(self.events)
        self.events += 1
        line_kinds: list[str] = []
        non_utf8 = False
        huge = "huge_line" in kinds and self._make_huge(stream, row)
        for kind in kinds:
            if kind == "huge_line":
                continue
            if kind in mess_kinds.LINE_KINDS and not huge:
                line_kinds.append(kind)  # applied to the bytes, after serialising
            elif not self._apply_to_row(kind, stream, row, huge):
                self.schedule.defer(kind)
            elif kind == "non_utf8":
                non_utf8 = True
        line = orjson.dumps(row)
        if non_utf8:
            line = mess_kinds.replace_non_utf8_mark(line, self.rng)
        self._write(stream, line, line_kinds, budget)

    def _apply_to_row(self, kind: str, stream: str, row: dict[str, Any], huge: bool) -> bool:
        """Whether the kind fits this row. A huge row stays otherwise clean: one oddity per giant."""
        if kind == "secret":
            return self._plant_secret(stream, row)
        if huge or not mess_kinds.fits(kind, stream):
            return False
        if kind == "non_utf8":
            applied = mess_kinds.mark_non_utf8(stream, row, self.rng, TEXT_FIELD.get(stream))
        else:
            applied = mess_kinds.FIELD_MESS[kind](stream, row, self.rng)
        if applied:
            self.mess_counts[stream][kind] += 1
        return applied

    def _write(self, stream: str, line: bytes, line_kinds: list[str], budget: int) -> None:
        sink = self.sinks[stream]
        counts = self.mess_counts[stream]
        spare = budget - self.written - 1  # lines left for a blank or a duplicate besides this row
        if "malformed_json" in line_kinds:
            line = mess_kinds.malformed(line, self.rng)
            counts["malformed_json"] += 1
        if "blank_line" in line_kinds:
            spare = self._write_extra(sink, self.rng.choice(mess_kinds.BLANK_LINES), "blank_line", counts, spare)
        sink.write(line)
        self.written += 1
        if "duplicate" in line_kinds:  # the same append, retried
            self._write_extra(sink, line, "duplicate", counts, spare)

    def _write_extra(self, sink: StreamSink, line: bytes, kind: str, counts: Counter[str], spare: int) -> int:
        if spare < 1:
            self.schedule.defer(kind)  # the sample's line total is reached: no room for it
            return spare
        sink.write(line)
        self.written += 1
        counts[kind] += 1
        return spare - 1

    def _make_huge(self, stream: str, row: dict[str, Any]) -> bool:
        field = TEXT_FIELD.get(stream)
        if stream in mess_kinds.LINE_ONLY_STREAMS or not field or not isinstance(row.get(field), str):
            self.schedule.defer("huge_line")
            return False
        extra = mess_kinds.HUGE_LINE_BYTES + self.rng.randrange(64 << 10, 512 << 10)
        row[field] = f"{row[field]}\n{text.build_log(self.rng, extra)}"
        self.mess_counts[stream]["huge_line"] += 1
        return True

    def _plant_secret(self, stream: str, row: dict[str, Any]) -> bool:
        field = TEXT_FIELD.get(stream)
        value = row.get(field) if field else None
        if stream in mess_kinds.LINE_ONLY_STREAMS or not isinstance(value, str) or not value:
            return False
        row[field] = text.with_secret(self.rng, value, self.rng.choice(text.SECRET_KINDS))  # type: ignore[index]
        self.planted[stream]["secret"] += 1
        return True

    def _count_hallucinations(self, stream: str) -> None:
        if self.forge.hallucinated_in_row:
            self.planted[stream]["hallucinated_path"] += self.forge.hallucinated_in_row

    # --- the result ------------------------------------------------------------------------------

    def stats(self, seed: int, mess: bool, repo_files: int) -> SampleStats:
        for name, sink in self.sinks.items():
            if sink.crlf_written:
                self.mess_counts[name]["crlf"] = sink.crlf_written
        for name in self.files.bom_streams:
            self.mess_counts[name]["bom"] = 1
        if self.files.empty_stream:
            self.mess_counts[self.files.empty_stream]["empty_stream"] = 1
        if self.files.unknown_stream:
            self.mess_counts[self.files.unknown_stream]["unknown_stream"] = 1
        lines = {name: sink.lines for name, sink in self.sinks.items()}
        return SampleStats(
            seed=seed, rows_requested=self.rows, total_lines=sum(lines.values()), mess_enabled=mess,
            lines=lines, mess={name: dict(sorted(c.items())) for name, c in self.mess_counts.items() if c},
            planted={name: dict(sorted(c.items())) for name, c in self.planted.items() if c},
            tasks=self.pool.size, repo_files=repo_files,
        )
