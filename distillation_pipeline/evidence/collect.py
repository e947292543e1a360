"""Stage ``collect``: every source row becomes one EvidenceRecord, a skip, or a duplicate.

Counts are conserved per stream and in total: rows read = written + skipped + deduplicated.
Blank lines are not rows; they are counted apart so nothing disappears from the tally.

Runs are incremental: only bytes appended to a source since the last commit are read (see
``state.py``). A source whose already-read prefix changed is re-collected from scratch.

Streams are independent: each has its own source, its own partition files
(``data/evidence/YYYY/MM/DD/<stream>.jsonl``), its own seen-hash file and its own entry in the
commit record, and skips are keyed by stream. So a large run collects streams on both cores:
the calling process and one worker (``lib/workers.borrowed``) each take the largest stream left
until none is (``_collect_streams``). Each stream is collected by the same ``_collect_one``
wherever it runs, and the parent merges the outcomes in stream order and alone writes what is
shared: the skips file, the committed lengths, the commit record (still last). A worker that
dies or raises fails the stage before anything is committed; the next run's ``recover`` cuts
what it appended, as for any killed run. A worker whose stage process was killed writes nothing
more (``_PartitionWriter.ensure_stage_alive``): the next run, which may start at once, must not
find a dead run's worker still appending behind its ``recover``.
"""

import array
import contextlib
import hashlib
import os
import threading
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson
from pydantic import ValidationError

from distillation_pipeline.evidence.records import EvidenceBuilder, score_ready_check
from distillation_pipeline.evidence.state import CollectState, StateMismatch, StreamState, recover, seen_file
from distillation_pipeline.evidence.streams import NON_STREAM_FILES, STREAMS, RowError
from distillation_pipeline.lib.atomic import atomic_write_bytes, locked
from distillation_pipeline.lib.hashing import canonical_sha256, file_sha256
from distillation_pipeline.lib.heap import releasing_heap
from distillation_pipeline.lib.jsonl import dumps_line, iter_json_rows, iter_raw_line_tuples
from distillation_pipeline.lib.layout import Layout
from distillation_pipeline.lib.timestamps import iso_utc, now_utc
from distillation_pipeline.lib.workers import borrowed, caller_alive, can_split

MAX_LINE_BYTES = 1 << 20  # a 1 MiB log line is a dump, not a review: skip it, bounded in memory
# Our canonical hash, pydantic's JSON parser (about 200) and the stdlib encoder (about 1000) all
# have depth limits; no real log row nests anywhere near this.
MAX_NESTING = 128
_FLUSH_BYTES = 16 << 20  # buffered evidence before appending to partition files
# Below this much work (``_work_bytes``) a run is collected in the calling process alone. At 300k
# rows a full run (128 MB of sources) takes ~4.3 s on one core, ~33 ns a source byte. A warm worker
# (the ``distill`` command's) answers a task in ~1 ms; a cold one costs ~0.6 s wall and ~0.3 s CPU
# to start and import. 32 MB (~1 s on one core) is where even a cold worker pays for itself. A 1 %
# nightly increment (~0.1 s of stream work at 300k rows; the sync and the commit are most of it)
# stays in one process.
SPLIT_MIN_WORK_BYTES = 32 << 20
# Hashing a consumed prefix again (to prove it unchanged) costs ~1/60 of parsing the same bytes
# (sha256 at ~1.7 GB/s here vs ~30 MB/s collected).
_PREFIX_HASH_COST_DIVISOR = 60
UNKNOWN_STREAM = "unknown_stream"


@dataclass
class StreamCounts:
    stream: str
    source_present: bool
    known: bool = True
    read: int = 0
    written: int = 0
    skipped: int = 0
    deduplicated: int = 0
    blank_lines: int = 0
    score_ready: int = 0
    skip_reasons: Counter = field(default_factory=Counter)
    rebuilt: str | None = None  # why the stream was re-collected from scratch, if it was
    refused: str | None = None  # why the source was not read at all (e.g. it resolves outside the root)
    pending_tail_bytes: int = 0  # an unterminated, unparseable last line left for the next run
    totals: StreamState = field(default_factory=StreamState)  # everything collected so far, this run included

    @property
    def total_on_record(self) -> int:
        return self.totals.written

    @property
    def conserved(self) -> bool:
        return self.read == self.written + self.skipped + self.deduplicated


@dataclass
class CollectResult:
    recorded_at: datetime
    dry_run: bool
    streams: dict[str, StreamCounts]
    inputs: list[Path]
    outputs: list[Path]
    repaired: list[str]
    collected_in_worker: list[str] = field(default_factory=list)  # streams the worker process took

    def total(self, attribute: str) -> int:
        return sum(getattr(counts, attribute) for counts in self.streams.values())

    @property
    def conserved(self) -> bool:
        return all(counts.conserved for counts in self.streams.values())

    @property
    def refused(self) -> list[str]:
        return [c.refused for c in self.streams.values() if c.refused]

    @property
    def skip_reasons(self) -> Counter:
        reasons: Counter = Counter()
        for counts in self.streams.values():
            reasons.update(counts.skip_reasons)
        return reasons

    def render_table(self) -> str:
        header = f"{'stream':<24} {'read':>9} {'written':>9} {'skipped':>8} {'dedup':>8} {'blank':>6} {'on record':>10}  note"
        lines = [header, "-" * len(header)]
        for name in sorted(self.streams):
            c = self.streams[name]
            note = "absent" if not c.source_present else ("unknown stream: not collected" if not c.known else "")
            if c.refused:
                note = f"refused: {c.refused}"
            if c.rebuilt:
                note = f"rebuilt: {c.rebuilt}"
            if c.pending_tail_bytes:
                note += f" pending tail: {c.pending_tail_bytes} bytes (a line still being written?)"
            lines.append(
                f"{name:<24} {c.read:>9} {c.written:>9} {c.skipped:>8} {c.deduplicated:>8} {c.blank_lines:>6} {c.total_on_record:>10}  {note}"
            )
        lines.append("-" * len(header))
        lines.append(
            f"{'TOTAL':<24} {self.total('read'):>9} {self.total('written'):>9} {self.total('skipped'):>8} "
            f"{self.total('deduplicated'):>8} {self.total('blank_lines'):>6} {self.total('total_on_record'):>10}"
        )
        verdict = "conserved" if self.conserved else "NOT CONSERVED"
        lines.append(f"read = written + skipped + deduplicated: {verdict}")
        if self.skip_reasons:
            lines.append("skips by reason: " + ", ".join(f"{k}={v}" for k, v in sorted(self.skip_reasons.items())))
        return "\n".join(lines)


# ---------------------------------------------------------------------------------------------


def discover_streams(layout: Layout) -> list[str]:
    """Known streams always (absent files are reported), plus unknown ``*.jsonl`` files in _kb."""
    names = set(STREAMS)
    if layout.kb_dir.exists():
        for path in layout.kb_dir.glob("*.jsonl"):
            if path.name not in NON_STREAM_FILES:
                names.add(path.stem)
    return sorted(names)


@releasing_heap
def collect(
    layout: Layout, recorded_at: datetime | None = None, dry_run: bool = False, split: bool | None = None
) -> CollectResult:
    """Collect every stream; ``split`` forces (True) or forbids (False) the worker process,
    else it is used from ``SPLIT_MIN_WORK_BYTES`` of work on."""
    recorded_at = recorded_at or now_utc()
    state = CollectState.load(layout)
    repaired: list[str] = []
    if not dry_run:
        try:
            repaired = recover(layout, state)
        except StateMismatch as exc:
            repaired = [f"evidence did not match its commit record ({exc}); re-collecting every stream"]
            _wipe(layout)
            state = CollectState()

    tasks = [_stream_task(layout, stream, state, recorded_at, dry_run) for stream in discover_streams(layout)]
    work = {task.stream: _work_bytes(layout, task) for task in tasks}
    if split is None:
        split = can_split() and sum(work.values()) >= SPLIT_MIN_WORK_BYTES
    outcomes, in_worker = _collect_streams(tasks, work, split)

    # Merged in stream order, as when one process collected them one after another.
    results: dict[str, StreamCounts] = {}
    new_skips: list[dict[str, Any]] = []
    rebuilt_streams: set[str] = set()
    appended: set[str] = set()
    for task in tasks:
        outcome = outcomes[task.stream]
        results[task.stream] = outcome.counts
        new_skips += outcome.skips
        if outcome.rebuilt:
            rebuilt_streams.add(task.stream)
        appended.update(outcome.appended)
        if not dry_run:
            for rel in _stream_files(state.evidence_files, task.stream):
                del state.evidence_files[rel]
            state.evidence_files.update(outcome.evidence_files)
            if outcome.stream_state is not None:
                state.streams[task.stream] = outcome.stream_state

    if not dry_run:
        _write_skips(layout, new_skips, rebuilt_streams)
        state.skips_sha256 = file_sha256(layout.skips_file) if layout.skips_file.exists() else ""
        _commit_lengths(layout, state, appended)
        state.save(layout)  # the commit point: everything before it is undone if we die first

    outputs = sorted(layout.root / rel for rel in state.evidence_files)
    inputs = sorted(layout.source_file(name) for name, c in results.items() if c.source_present)
    return CollectResult(recorded_at, dry_run, results, inputs, outputs, repaired, in_worker)


@dataclass
class _StreamTask:
    """What collecting one stream needs, as plain values (it may be sent to a worker)."""

    root: str
    stream: str
    previous: StreamState | None  # the stream's last commit, if any
    evidence_files: dict[str, int]  # the stream's committed partition files -> lengths
    recorded_at: datetime
    dry_run: bool
    stage_pid: int  # the process that runs the stage and commits: a worker writes only while it lives


@dataclass
class _StreamOutcome:
    counts: StreamCounts
    skips: list[dict[str, Any]]
    rebuilt: bool
    stream_state: StreamState | None  # to commit for the stream (None: it has none)
    evidence_files: dict[str, int]  # the stream's committed partition files still valid (a rebuilt stream's are gone)
    appended: list[str]  # partition files appended to (relative paths)


def _stream_files(rels: Iterable[str], stream: str) -> list[str]:
    """The partition files of ``stream`` among ``rels`` (relative paths)."""
    suffix = f"/{stream}.jsonl"  # partitions are data/evidence/YYYY/MM/DD/<stream>.jsonl
    return [rel for rel in rels if rel.endswith(suffix)]


def _stream_task(layout: Layout, stream: str, state: CollectState, recorded_at: datetime, dry_run: bool) -> _StreamTask:
    files = {rel: state.evidence_files[rel] for rel in _stream_files(state.evidence_files, stream)}
    return _StreamTask(str(layout.root), stream, state.streams.get(stream), files, recorded_at, dry_run, os.getpid())


def _work_bytes(layout: Layout, task: _StreamTask) -> int:
    """About how much collecting the stream costs, in source bytes parsed: the bytes to read,
    plus the consumed prefix to hash again (see ``_PREFIX_HASH_COST_DIVISOR``)."""
    try:
        size = layout.source_file(task.stream).stat().st_size
    except OSError:
        return 0
    consumed = task.previous.consumed_bytes if task.previous is not None else 0
    if size < consumed:  # shrank: re-collected whole
        return size
    return size - consumed + consumed // _PREFIX_HASH_COST_DIVISOR


@releasing_heap
def _collect_one(task: _StreamTask) -> _StreamOutcome:
    """Collect one stream, in whichever process runs it: its partition files and seen-hash file
    are written here; what is shared is returned for the parent to merge."""
    layout = Layout.at(task.root)
    state = CollectState(
        streams={} if task.previous is None else {task.stream: task.previous}, evidence_files=dict(task.evidence_files)
    )
    writer = _PartitionWriter(layout, state, task.dry_run, task.stage_pid)
    counts, skips, rebuilt = _collect_stream(layout, task.stream, state, writer, task.recorded_at, task.dry_run)
    writer.flush()
    return _StreamOutcome(
        counts, skips, rebuilt, state.streams.get(task.stream), state.evidence_files, sorted(writer.touched)
    )


class CollectWorkerError(RuntimeError):
    """A stream collected in the worker process failed: nothing of this run is committed."""


class StageProcessGone(RuntimeError):
    """A worker found the stage's process gone (killed): it must not write any more."""


def _collect_streams(
    tasks: list[_StreamTask], work: dict[str, int], split: bool
) -> tuple[dict[str, _StreamOutcome], list[str]]:
    """Each stream's outcome, and the streams collected in the worker.

    Split, the caller and one worker each take the largest stream left until none is: the last
    ones taken are the smallest, so both sides finish close together however the sizes fall, and
    a worker still starting up (a cold one, or warm ones importing while ``distill`` starts)
    simply takes fewer. One task is in the worker at a time, so the two sides use two cores.
    """
    if not split:
        return {task.stream: _collect_one(task) for task in tasks}, []
    left = sorted(tasks, key=lambda task: work[task.stream], reverse=True)
    lock = threading.Lock()

    def take() -> _StreamTask | None:
        with lock:
            return left.pop(0) if left else None

    outcomes: dict[str, _StreamOutcome] = {}
    in_worker: list[str] = []
    failure: list[tuple[str, BaseException]] = []
    with borrowed() as pool:
        first = take()  # the worker's, whatever the timing: a split run always uses it

        def feed_worker() -> None:
            task = first
            while task is not None:
                try:
                    outcome = pool.submit(_collect_one, task).result()
                except BaseException as exc:  # noqa: BLE001 (re-raised by the caller below)
                    failure.append((task.stream, exc))
                    with lock:
                        left.clear()  # the caller stops after its current stream
                    return
                outcomes[task.stream] = outcome
                in_worker.append(task.stream)
                task = take()

        feeder = threading.Thread(target=feed_worker, name="collect-worker-feeder", daemon=True)
        feeder.start()
        try:
            while (task := take()) is not None:
                outcomes[task.stream] = _collect_one(task)
        finally:
            with lock:
                left.clear()  # on an error here, the worker stops after its current stream
            feeder.join()
        if failure:
            stream, exc = failure[0]
            raise CollectWorkerError(f"collect: stream {stream} failed in the worker process: {exc!r}") from exc
    return outcomes, in_worker


def _wipe(layout: Layout) -> None:
    for path in sorted(layout.evidence_dir.rglob("*.jsonl")) if layout.evidence_dir.exists() else []:
        path.unlink()
    for path in layout.evidence_seen_dir.glob("*.bin") if layout.evidence_seen_dir.exists() else []:
        path.unlink()
    layout.evidence_state_file.unlink(missing_ok=True)
    layout.skips_file.unlink(missing_ok=True)


def _prefix_sha256(path: Path, length: int, digest: "hashlib._Hash | None" = None) -> str:
    """sha256 of the first ``length`` bytes of ``path``; ``digest``, if given, is left fed with them."""
    digest = hashlib.sha256() if digest is None else digest
    remaining = length
    with open(path, "rb") as handle:
        while remaining > 0:
            chunk = handle.read(min(remaining, 1 << 22))
            if not chunk:
                break
            digest.update(chunk)
            remaining -= len(chunk)
    return digest.hexdigest()


def _collect_stream(
    layout: Layout,
    stream: str,
    state: CollectState,
    writer: "_PartitionWriter",
    recorded_at: datetime,
    dry_run: bool,
) -> tuple[StreamCounts, list[dict[str, Any]], bool]:
    source = layout.source_file(stream)
    known = stream in STREAMS
    counts = StreamCounts(stream=stream, source_present=source.exists(), known=known)
    if not counts.source_present:
        counts.totals = state.streams.get(stream, StreamState())
        return counts, [], False
    if not source.resolve().is_relative_to(layout.root):
        # A symlink out of the root would let a log directory read arbitrary files into datasets.
        counts.refused = f"source_outside_root: {layout.relative(source)} resolves to {source.resolve()}"
        counts.totals = state.streams.get(stream, StreamState())
        return counts, [], False

    previous = state.streams.get(stream)
    size = source.stat().st_size
    rebuilt = False
    # The hash of the source's consumed prefix: of the bytes before ``start`` (checked against
    # the last commit), then of every block read after them, so the source is read only once.
    prefix = hashlib.sha256()
    if previous is not None and previous.consumed_bytes:
        if size < previous.consumed_bytes:
            counts.rebuilt = f"source shrank from {previous.consumed_bytes} to {size} bytes"
        elif _prefix_sha256(source, previous.consumed_bytes, prefix) != previous.prefix_sha256:
            counts.rebuilt = "already-collected bytes of the source changed"
        if counts.rebuilt:
            rebuilt = True
            writer.drop_stream(stream)
            previous = None
            prefix = hashlib.sha256()
    stream_state = StreamState() if previous is None else previous
    if rebuilt and not dry_run:
        writer.ensure_stage_alive()
        seen_file(layout, stream).unlink(missing_ok=True)
    seen = _load_seen(layout, stream, stream_state) if not rebuilt else set()
    new_seen = array.array("Q")
    start = stream_state.consumed_bytes
    source_rel = layout.relative(source)
    skips: list[dict[str, Any]] = []
    recorded_iso = iso_utc(recorded_at)

    def skip(offset: int, reason: str, detail: str = "") -> None:
        counts.skipped += 1
        counts.skip_reasons[reason] += 1
        skips.append(
            {
                "schema_version": 1,
                "stream": stream,
                "source_file": source_rel,
                "line_offset": offset,
                "reason": reason,
                "detail": detail[:300],
                "recorded_at": recorded_iso,
            }
        )

    consumed = start
    builder = EvidenceBuilder(stream, source_rel, recorded_iso) if known else None
    ready = score_ready_check(stream)
    add = writer.stream_adder(stream)
    seen_add, new_seen_append = seen.add, new_seen.append
    written = deduplicated = blank_lines = read = score_ready = 0
    # A log that writers append to under a lock (the replay log) is read under the same lock, so
    # a row being written is never taken for a truncated one.
    writer_lock = locked(source) if source.with_name(source.name + ".lock").exists() else contextlib.nullcontext()
    hashed_to = start  # the prefix hash covers [0, hashed_to)

    def hash_chunk(chunk: bytes) -> None:
        nonlocal hashed_to
        prefix.update(chunk)
        hashed_to += len(chunk)

    with writer_lock:
        lines = iter_raw_line_tuples(source, start=start, max_line_bytes=MAX_LINE_BYTES, on_chunk=None if dry_run else hash_chunk)
        for offset, data, terminated, end in lines:
            if not terminated and not _parses(data):
                # An unterminated last line that does not parse is most likely still being
                # written: leave it unread (reported as a pending tail) and take it whole next
                # run. A writer that died leaves it pending until the next append completes it
                # into one malformed line, which is then skipped with a reason.
                counts.pending_tail_bytes = end - offset
                break
            consumed = end
            if not data or data.isspace():  # = not data.strip(), without copying the line
                blank_lines += 1
                continue
            read += 1
            if len(data) > MAX_LINE_BYTES:
                skip(offset, "line_too_long", f"line exceeds {MAX_LINE_BYTES} bytes")
                continue
            if builder is None:
                skip(offset, UNKNOWN_STREAM, f"no stream contract for {source.name}")
                continue
            try:
                row = orjson.loads(data)
            except orjson.JSONDecodeError as exc:
                skip(offset, *_parse_failure(data, exc))
                continue
            if type(row) is not dict:
                skip(offset, "not_an_object", f"top-level JSON {type(row).__name__}")
                continue
            # Each container of the row has its own opening bracket in the line, so a line with
            # few brackets cannot nest deeply: only the others are walked.
            if data.count(b"{") + data.count(b"[") > MAX_NESTING and _nesting_depth(row) > MAX_NESTING:
                skip(offset, "too_deeply_nested", f"nested deeper than {MAX_NESTING} levels")
                continue
            digest = canonical_sha256(row)
            key = int.from_bytes(digest[:8], "big")
            if key in seen:
                deduplicated += 1
                continue
            try:
                record = builder.make(row, digest, offset)
            except RowError as exc:
                skip(offset, exc.reason, exc.detail)
                continue
            except ValidationError as exc:
                skip(offset, "schema_violation", _first_error(exc))
                continue
            seen_add(key)
            new_seen_append(key)
            written += 1
            if ready(record):
                score_ready += 1
            add(record["event_at"], dumps_line(record))

        if not dry_run:
            # Read to the end; only a pending tail (not consumed) needs the prefix hashed anew.
            stream_state.prefix_sha256 = prefix.hexdigest() if hashed_to == consumed else _prefix_sha256(source, consumed)
    counts.read += read
    counts.written += written
    counts.deduplicated += deduplicated
    counts.blank_lines += blank_lines
    counts.score_ready += score_ready
    stream_state.consumed_bytes = consumed
    if not dry_run:
        writer.ensure_stage_alive()
        stream_state.seen_bytes = _append_seen(layout, stream, new_seen)
    stream_state.rows_read += counts.read
    for attribute in ("written", "skipped", "deduplicated", "blank_lines", "score_ready"):
        setattr(stream_state, attribute, getattr(stream_state, attribute) + getattr(counts, attribute))
    for reason, n in counts.skip_reasons.items():
        stream_state.skip_reasons[reason] = stream_state.skip_reasons.get(reason, 0) + n
    counts.totals = stream_state
    if not dry_run:
        state.streams[stream] = stream_state
    return counts, skips, rebuilt


def _parses(data: bytes) -> bool:
    if not data.strip():
        return True
    try:
        orjson.loads(data)
    except orjson.JSONDecodeError:
        return False
    return True


def _nesting_depth(value: object) -> int:
    """Depth of nested containers, iteratively: a hostile row must not exhaust the stack."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        deepest = max(deepest, depth)
        if deepest > MAX_NESTING:
            return deepest
        stack.extend((child, depth + 1) for child in children if isinstance(child, (dict, list)))
    return deepest


def _parse_failure(data: bytes, exc: Exception) -> tuple[str, str]:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as decode_error:
        return "invalid_utf8", f"byte {decode_error.start}: {decode_error.reason}"
    message = str(exc)
    if "recursion" in message.lower() or "depth limit" in message.lower():
        return "too_deeply_nested", message[:200]
    return "malformed_json", message[:200]


def _first_error(exc: ValidationError) -> str:
    error = exc.errors()[0]
    location = ".".join(str(part) for part in error["loc"])
    return f"{location}: {error['msg']}"


def _load_seen(layout: Layout, stream: str, stream_state: StreamState) -> set[int]:
    path = seen_file(layout, stream)
    if not path.exists() or not stream_state.seen_bytes:
        return set()
    values = array.array("Q")
    with open(path, "rb") as handle:
        values.frombytes(handle.read(stream_state.seen_bytes))
    return set(values)


def _append_seen(layout: Layout, stream: str, new_seen: array.array) -> int:
    path = seen_file(layout, stream)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "ab") as handle:
        handle.write(new_seen.tobytes())
    return path.stat().st_size


class _PartitionWriter:
    """Buffers one stream's evidence lines per partition file and appends them in large writes.

    Each partition's lines are copied into one ``bytearray``, not kept as a list of the lines:
    ``orjson.dumps`` returns its bytes without shrinking its buffer, so a ~1.1 KB evidence line
    held ~4 KB, and 16 MiB of buffered lines held ~60 MB (tracemalloc, 1M rows)."""

    def __init__(self, layout: Layout, state: CollectState, dry_run: bool, stage_pid: int) -> None:
        self.layout = layout
        self.state = state
        self.dry_run = dry_run
        self.stage_pid = stage_pid
        self.buffers: dict[str, bytearray] = {}
        self.partitions: dict[tuple[str, str], str] = {}  # (date, stream) -> relative path
        self.buffered = 0
        self.touched: set[str] = set()
        self._adder_caches: list[dict[str, bytearray]] = []

    def stream_adder(self, stream: str) -> Callable[[str, bytes], None]:
        """``add`` for one stream's lines: ``adder(event_at_iso, line)``, with lookups hoisted."""
        by_date: dict[str, bytearray] = {}  # date -> the buffer of that partition file
        self._adder_caches.append(by_date)  # emptied whenever the buffers are

        def adder(event_at_iso: str, line: bytes) -> None:
            # event_at is "YYYY-MM-DDT..." in UTC: the partition is its date.
            buffer = by_date.get(event_at_iso[:10])
            if buffer is None:
                buffer = by_date[event_at_iso[:10]] = self.buffers.setdefault(self._rel(event_at_iso, stream), bytearray())
            buffer += line
            self.buffered += len(line)
            if self.buffered >= _FLUSH_BYTES:
                self.flush()

        return adder

    def _rel(self, event_at_iso: str, stream: str) -> str:
        key = (event_at_iso[:10], stream)
        rel = self.partitions.get(key)
        if rel is None:
            rel = self.partitions[key] = self.layout.relative(self.layout.evidence_partition(event_at_iso, stream))
        return rel

    def ensure_stage_alive(self) -> None:
        """Raise ``StageProcessGone`` in a worker whose stage process died (it was reparented).

        Called before every write: a killed stage's worker would otherwise finish its stream,
        appending behind the next run's ``recover`` into files that run then commits."""
        if not caller_alive(self.stage_pid):
            raise StageProcessGone(f"the collect stage's process {self.stage_pid} is gone; not writing")

    def drop_stream(self, stream: str) -> None:
        if not self.dry_run:
            self.ensure_stage_alive()
        for rel in _stream_files(self.state.evidence_files, stream):
            if not self.dry_run:
                (self.layout.root / rel).unlink(missing_ok=True)
                del self.state.evidence_files[rel]
        for rel in _stream_files(self.buffers, stream):
            del self.buffers[rel]
        self._clear_adder_caches()

    def _clear_adder_caches(self) -> None:
        for cache in self._adder_caches:
            cache.clear()

    def flush(self) -> None:
        if not self.dry_run:
            self.ensure_stage_alive()
            for rel, buffer in self.buffers.items():
                path = self.layout.root / rel
                path.parent.mkdir(parents=True, exist_ok=True)
                with open(path, "ab") as handle:
                    handle.write(buffer)
                self.touched.add(rel)
        self.buffers.clear()
        self._clear_adder_caches()
        self.buffered = 0


def _commit_lengths(layout: Layout, state: CollectState, appended: Iterable[str]) -> None:
    # One sync for every appended partition (whichever process wrote it) before the commit record
    # names their lengths: a date-partitioned tree has hundreds of files, and fsyncing each costs
    # seconds.
    appended = sorted(appended)
    if appended:
        os.sync()
    for rel in appended:
        state.evidence_files[rel] = (layout.root / rel).stat().st_size


def _write_skips(layout: Layout, new_skips: list[dict[str, Any]], rebuilt_streams: Iterable[str]) -> None:
    """Keep one sorted skips file: old skips (minus re-collected streams) plus this run's.

    Sorting by source position makes the file the same whether the rows arrived in one run or
    in several incremental ones; re-processing after a crash finds the same keys and adds none.
    """
    rebuilt = set(rebuilt_streams)
    merged: dict[tuple[str, str, int], dict[str, Any]] = {}
    for row in iter_json_rows(layout.skips_file):
        if row.get("stream") not in rebuilt:
            merged[(row["stream"], row["source_file"], row["line_offset"])] = row
    changed = False
    for row in new_skips:
        key = (row["stream"], row["source_file"], row["line_offset"])
        if key not in merged:
            merged[key] = row
            changed = True
    if not changed and not rebuilt and layout.skips_file.exists():
        return
    payload = b"".join(dumps_line(merged[key]) for key in sorted(merged))
    atomic_write_bytes(layout.skips_file, payload)
