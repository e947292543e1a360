"""Stage ``score``: the evidence tree in, ``data/scored-runs/`` and the model ledger out.

Every evidence line of ``data/evidence/YYYY/MM/DD/<stream>.jsonl`` gets exactly one scored line
in the mirror file ``data/scored-runs/YYYY/MM/DD/<stream>.jsonl``, in the same order, so
consumers can zip the two files. model_trust files are the exception: their rows go to the
model ledger and get no scored file (see ``ledger.py``); they are counted as ``ledger_rows``, so
``records_in == records_out + ledger_rows``.

One read of each file, in two phases: verdict-stream and telemetry files first (their rows are
judged alone; the verdict rows build the parent index), then the extraction files, which inherit
from the finished index (``joins.py``), while the model ledger is rebuilt. Each line is validated
once (``lines.parse_evidence``), one line at a time.

Both cores. In each phase the files are independent of each other, so a worker process
(``lib/workers.borrowed``) scores a share of them (largest first, to the share with fewer bytes
to read or copy) while this process scores the rest; the index and the ledger stay here. A
worker stages its scored files itself and hands the temporaries to this process's batch
(``BatchedReplace.hand_over``, ``adopt``), and sends its verdict rows back for the index. Nothing depends on the order
files are scored in: counts add up, the state is keyed by file, outputs are sorted, and the
index keeps per key the count and the smallest ids however its rows arrive. At 300k rows the
stage's CPU splits ~1.7 s + ~1.7 s (phase 1), then ~1.1 s + ~1.1 s (phase 2), and its wall
went from 6.0 s to 3.6 s (warm workers, load ~2); the worker adds ~0.4 s of import, the index
build between the phases (~0.25 s) and the commit stay sequential. A run that costs less than
``SPLIT_MIN_BYTES`` (at 300k rows, +1 %) stays in one process.

Memory does not grow with the number of tasks: the parent index lives on disk
(``parentstore.py``: built from spilled buckets, looked up by one ``pread`` per key, a few
thousand judgements cached), and a file's lines are views into its bytes, not copies.

Incremental runs. ``state.py`` keeps, per evidence file, how many bytes and lines were scored
and the sha256 of those bytes, plus the parent index, each extraction file's join keys (8-byte
digests) and the model ledger's fields of every model_trust row. The
evidence collect writes only grows by whole lines appended at the end, or is rewritten whole
when a stream is re-collected. So, per file:

- stat fingerprint unchanged, mirror unchanged -> nothing to read;
- otherwise the first ``bytes`` of the file are hashed: equal -> only the appended lines are
  scored, and the mirror becomes its old bytes plus theirs; different (rewritten, shrunk) ->
  the file is scored from its first line;
- a scored file that is not the one we wrote (fingerprint) is rewritten from line 1.

New verdict rows update the stored index. A join key whose inherited judgement they change
(``joins.key_judgement`` before vs after) sends every extraction file using that key back to
line 1, so the result equals a full rebuild. A verdict file that was rewritten or removed would
take rows out of the index, which the stored counts cannot undo exactly: that, a
``scorer_version`` or scorer code change, and a missing or unreadable state all mean a full
rescore (the state is a cache, never the truth). The model ledger is rebuilt whenever a
model_trust file changed: from the state's copy of the rows of every verified prefix, and the
new lines. Counts in the result always describe the whole tree.

Writes: scored files and the ledger are replaced only when their bytes change (mtimes of
unchanged files stay), all through one ``BatchedReplace`` (temporary siblings, one sync, renames,
one sync; a worker's temporaries included), so a run that fails on corrupt evidence, in either
process, replaces nothing, and a kill leaves each file old or new. The state file is removed
before the first rename and written after the last.
Scored files whose evidence file is gone are removed. ``dry_run`` computes everything and
touches nothing.

Evidence is our own validated output. A line that is not a valid ``EvidenceRecord`` (or sits in
another stream's file) means the tree is corrupt, and a scored file that no longer lines up
with its evidence would be worse than none: the stage stops with ``EvidenceError`` naming the
file and line, instead of skipping it.
"""

import contextlib
import gc
import hashlib
import os
from array import array
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path

import orjson

from distillation_pipeline.lib.atomic import BatchedReplace
from distillation_pipeline.lib.digests import cached_sha256, prefix_entries, remember_digests, remember_prefixes
from distillation_pipeline.lib.heap import releasing_heap
from distillation_pipeline.lib.layout import Layout
from distillation_pipeline.lib.workers import borrowed, can_split
from distillation_pipeline.schemas import CATEGORIES, EvidenceRecord
from distillation_pipeline.scoring.joins import (
    FINDING,
    FINDING_JOINED_STREAMS,
    TASK,
    IndexStateError,
    ParentIndex,
    is_parent_stream,
    join_key,
    key_judgement,
)
from distillation_pipeline.scoring.judgement import REVIEW, Judgement
from distillation_pipeline.scoring.ledger import LedgerBuilder, LedgerError, ledger_bytes
from distillation_pipeline.scoring.lines import EvidenceError, LedgerView, parse_evidence, scored_line, split_lines
from distillation_pipeline.scoring.parentstore import DiskParentIndex, IndexSnapshot, new_workdir, sweep_workdirs
from distillation_pipeline.scoring.report import render_matrix
from distillation_pipeline.scoring.rules import SCORER_VERSION, judge_record, stream_class
from distillation_pipeline.scoring.state import (
    FileState, Fingerprint, LedgerState, ScoreState, code_fingerprint, fingerprint, fingerprint_of,
)  # fmt: skip

PARTITION_GLOB = "*/*/*/*.jsonl"  # YYYY/MM/DD/<stream>.jsonl
_READ_CHUNK = 1 << 22

__all__ = ["EvidenceError", "ScoreResult", "build_parent_index", "evidence_files", "score_evidence_tree", "scored_path"]


@dataclass(frozen=True)
class ScoreResult:
    scorer_version: str
    dry_run: bool
    records_in: int  # evidence lines read, every stream
    records_out: int  # scored runs written (or that would be, in a dry run)
    ledger_rows: int  # model_trust lines aggregated into the ledger instead of scored
    ledger_entries: int
    matrix: dict[str, dict[str, int]]  # stream -> category -> count, all four categories present
    per_category: dict[str, int]
    review_reasons: dict[str, int]  # needs_human_review rows by rule code (orphan, conflicting_parents, ...)
    inputs: list[Path]  # evidence files read
    outputs: list[Path]  # scored files and the ledger
    files_written: int  # replaced because their bytes changed (would be, in a dry run)
    files_unchanged: int
    removed: list[Path] = field(default_factory=list)  # stale scored files (would be, in a dry run)
    # What this run did, as opposed to what the tree holds (the fields above):
    incremental: bool = False  # False: everything was scored from line 1
    full_reason: str = ""  # why not incremental ("no score state", "scorer_version changed", ...)
    new_records: int = 0  # evidence lines parsed and judged by this run
    files_appended: int = 0  # scored files that got only the appended lines
    files_rescored: int = 0  # already-scored files scored again from line 1

    @property
    def files_removed(self) -> int:
        return len(self.removed)

    @property
    def specific(self) -> int:
        return self.records_out - self.per_category.get(REVIEW, 0)

    @property
    def specific_share(self) -> float:
        """Share of scored runs with a specific category (not needs_human_review)."""
        return self.specific / self.records_out if self.records_out else 0.0

    @property
    def review_share(self) -> float:
        return self.per_category.get(REVIEW, 0) / self.records_out if self.records_out else 0.0

    def render_table(self) -> str:
        return render_matrix(self.matrix, self.scorer_version, self.ledger_rows, self.ledger_entries)


# ---------------------------------------------------------------------------------------------
# the evidence tree
# ---------------------------------------------------------------------------------------------


def evidence_files(layout: Layout) -> list[Path]:
    """Partition files, sorted by relative path, so every pass reads them in the same order."""
    if not layout.evidence_dir.is_dir():
        return []
    found = (p for p in layout.evidence_dir.glob(PARTITION_GLOB) if p.is_file() and not p.name.startswith("."))
    return sorted(found, key=lambda p: p.relative_to(layout.evidence_dir).as_posix())


def _rel(layout: Layout, path: Path) -> str:
    """``layout.relative`` for paths the stage listed under the root itself (no resolve needed)."""
    text, root = str(path), str(layout.root)
    if text.startswith(root) and text[len(root) : len(root) + 1] == "/":  # the stage's own paths: no parsing
        return text[len(root) + 1 :]
    return path.relative_to(layout.root).as_posix()


def scored_path(layout: Layout, evidence_file: Path) -> Path:
    text, evidence = str(evidence_file), str(layout.evidence_dir)
    if text.startswith(evidence) and text[len(evidence) : len(evidence) + 1] == "/":
        return Path(f"{layout.scored_dir}{text[len(evidence) :]}")
    return layout.scored_dir / evidence_file.relative_to(layout.evidence_dir)


def _stem(rel: str) -> str:
    """``Path(rel).stem`` of a relative path string."""
    name = rel.rpartition("/")[2]
    dot = name.rfind(".")
    return name[:dot] if dot > 0 else name


def is_ledger_stream(stream: str) -> bool:
    return stream_class(stream) == "ledger"


def is_extraction_stream(stream: str) -> bool:
    return stream_class(stream) == "extraction"


def iter_evidence(layout: Layout, path: Path) -> Iterator[EvidenceRecord]:
    """Every line of one evidence file as a validated record, or ``EvidenceError``."""
    where = layout.relative(path)
    for number, line in enumerate(split_lines(path.read_bytes()), start=1):
        yield parse_evidence(line, path.stem, where, number)


def audit_finding(record: EvidenceRecord) -> str | None:
    """The finding an audits row is a parent for (its finding_id, else its own id)."""
    return (record.markers.finding_id or record.source_id) if record.stream == "audits" else None


def build_parent_index(layout: Layout, files: list[Path]) -> ParentIndex:
    """Every verdict row's category, by task_id and (audits) by finding_id."""
    index = ParentIndex()
    for path in files:
        if is_parent_stream(path.stem):
            for record in iter_evidence(layout, path):
                index.add(record.id, judge_record(record).category, record.task_id, audit_finding(record))
    return index


# ---------------------------------------------------------------------------------------------
# what is already scored
# ---------------------------------------------------------------------------------------------


@dataclass
class Known:
    """How much of an evidence file the state vouches for."""

    prefix_ok: bool = False  # the state's bytes are still the first bytes of the file
    unchanged: bool = False  # and nothing was appended (or the fingerprint says so)
    mirror_ok: bool = False  # the scored file is the one we wrote
    hasher: "hashlib._Hash | None" = None  # sha256 over the state's bytes, when we read them
    seen: Fingerprint | None = None  # the file's fingerprint before ``hasher`` read it
    by_record: bool = False  # the prefix was proven by a recorded digest, not read here
    prefix_hashed: bool = False  # the prefix was proven by reading it (``hasher``)


def _prefix_hasher(path: Path, length: int) -> tuple["hashlib._Hash", bytes]:
    """sha256 over the first ``length`` bytes of ``path``, and its last byte."""
    digest = hashlib.sha256()
    last = b""
    remaining = length
    with open(path, "rb") as handle:
        while remaining > 0:
            chunk = handle.read(min(remaining, _READ_CHUNK))
            if not chunk:
                break
            digest.update(chunk)
            last = chunk[-1:]
            remaining -= len(chunk)
    return digest, last if not remaining else b""


def _last_byte(path: Path, length: int) -> bytes:
    with open(path, "rb") as handle:
        return os.pread(handle.fileno(), 1, length - 1) if length else b""


def check_known(
    path: Path, mirror: Path | None, prev: FileState | None, recorded: tuple[tuple, int, str] | None = None
) -> Known:
    """``recorded``: the prefix digest ``lib.digests`` holds for this file, ((size, mtime,
    inode, ctime) it was taken at, length, sha256), if any."""
    if prev is None:
        return Known()
    mirror_ok = mirror is None or fingerprint_of(mirror) == prev.mirror
    current = fingerprint_of(path)
    if current == prev.evidence:
        return Known(prefix_ok=True, unchanged=True, mirror_ok=mirror_ok)
    if current is None or current[1] < prev.bytes:
        return Known(mirror_ok=mirror_ok)
    if (
        recorded is not None
        and recorded[0] == (current[1], current[2], current[0], current[3])
        and recorded[1:] == (prev.bytes, prev.sha256)
    ):
        # collect's receipt proved this prefix as it hashed the grown file whole (lib/digests)
        ends_whole = prev.bytes == 0 or _last_byte(path, prev.bytes) == b"\n"
        return Known(ends_whole, ends_whole and current[1] == prev.bytes, mirror_ok, None, current, by_record=ends_whole)
    hasher, last = _prefix_hasher(path, prev.bytes)
    # Appending to a file whose scored part did not end with a newline would change its last line.
    ends_whole = prev.bytes == 0 or last == b"\n"
    prefix_ok = ends_whole and hasher.hexdigest() == prev.sha256
    return Known(
        prefix_ok, prefix_ok and current[1] == prev.bytes, mirror_ok, hasher if prefix_ok else None, current,
        prefix_hashed=prefix_ok,
    )  # fmt: skip


# ---------------------------------------------------------------------------------------------
# the stage
# ---------------------------------------------------------------------------------------------


class _Full(Exception):
    """The state cannot be used for this tree: score everything."""


@dataclass
class _Counts:
    categories: dict[str, int] = field(default_factory=dict)
    reasons: dict[str, int] = field(default_factory=dict)

    def add(self, judgement: Judgement) -> None:
        self.categories[judgement.category] = self.categories.get(judgement.category, 0) + 1
        if not judgement.is_specific:
            self.reasons[judgement.code] = self.reasons.get(judgement.code, 0) + 1


def _merged(base: dict[str, int], extra: dict[str, int]) -> dict[str, int]:
    out = dict(base)
    for key, count in extra.items():
        out[key] = out.get(key, 0) + count
    return out


@dataclass
class _Job:
    """One non-ledger evidence file to score, as plain values: a worker process can take it.

    ``known`` travels without its ``hasher`` (a hash object does not pickle): a worker hashes the
    prefix again when ``known.prefix_hashed`` says the stage's process proved it by hashing."""

    path: str
    prev: FileState | None
    known: Known
    size: int  # the evidence file's bytes when the stage listed it

    def cost(self, changed_keys: set[int]) -> int:
        """What scoring this file costs, in evidence bytes scored (``_cost``): the shares are
        balanced by it."""
        if not _keeps(self.prev, self.known, changed_keys, is_extraction_stream(Path(self.path).stem)):
            return self.size
        return 0 if self.known.unchanged else _cost(self.size, self.prev)

    def shipped(self) -> "_Job":
        return replace(self, known=replace(self.known, hasher=None))


@dataclass
class _Outcome:
    """What scoring one file did, for ``_Run.apply`` in the stage's process."""

    path: str
    rel: str
    target: str
    file_state: FileState | None = None
    new_records: int = 0
    written: int = 0
    unchanged: int = 0
    appended: int = 0
    rescored: int = 0
    restat: bool = False  # the scored file's fingerprint is recorded after the commit
    proven_prefix: tuple[os.stat_result, int, str] | None = None
    staged_digest: tuple[int, str | None, str] | None = None  # (kept prefix length, its sha256, whole sha256)
    parent_rows: bytes = b""  # a worker's verdict rows for the index: orjson [[id, category, task_id, finding], ...]


# Copying (and hashing) a scored prefix costs ~1/4 of the CPU of scoring as many evidence bytes:
# 300k rows +1 %, one process: ~270 MB/s of prefix copied vs ~63 MB/s of evidence scored.
_COPY_SHARE = 4


def _cost(size: int, prev: FileState | None) -> int:
    """Scoring an evidence file of ``size`` bytes whose first ``prev.bytes`` are scored already:
    the new bytes, plus the scored prefix copied, in evidence bytes scored. Before its prefix is
    proven (``_estimated_cost``) a grown file is assumed to keep it."""
    if prev is None or size < prev.bytes:
        return size
    return size - prev.bytes + (prev.mirror[1] if prev.mirror else 0) // _COPY_SHARE


def _keeps(prev: FileState | None, known: Known, changed_keys: set[int], extraction: bool) -> bool:
    """Whether a file's scored prefix stays (only its appended lines are scored)."""
    uses_changed_key = extraction and prev is not None and bool(changed_keys) and not changed_keys.isdisjoint(prev.keys)
    return prev is not None and known.prefix_ok and known.mirror_ok and not uses_changed_key


def _differs(target: Path, data: bytes) -> bool:
    try:
        if target.stat().st_size != len(data):
            return True
    except OSError:
        return True
    return target.read_bytes() != data


class _FileScorer:
    """Scores non-ledger evidence files one at a time, in the stage's process (with the run's
    batch and parent index, adding verdict rows to it as they come) or in a worker (with its own
    batch and a reader of the finished index; verdict rows go back in the outcome)."""

    def __init__(
        self, layout: Layout, scorer_version: str, dry_run: bool, incremental: bool,
        parents: DiskParentIndex | None, batch: BatchedReplace, add_parent: Callable[[str, str, str | None, str | None], None] | None,
    ) -> None:  # fmt: skip
        self.layout = layout
        self.scorer_version = scorer_version
        self.dry_run = dry_run
        self.incremental = incremental
        self.parents = parents  # None in a worker scoring verdict and telemetry files: they look nothing up
        self.batch = batch
        self.add_parent = add_parent  # None: collect the verdict rows in the outcome

    def score(self, job: _Job, changed_keys: set[int]) -> _Outcome:
        """Score what is new in one file and stage its scored file if it changed."""
        path, prev, known = Path(job.path), job.prev, job.known
        rel = _rel(self.layout, path)
        target = scored_path(self.layout, path)
        outcome = _Outcome(path=job.path, rel=rel, target=str(target))
        stream = path.stem
        extraction = is_extraction_stream(stream)
        keep = _keeps(prev, known, changed_keys, extraction)
        if keep and known.unchanged:
            outcome.file_state = prev
            outcome.unchanged = 1
            return outcome
        start = prev.bytes if keep else 0  # type: ignore[union-attr]
        first_line = prev.lines if keep else 0  # type: ignore[union-attr]
        # Rows before ``index_from`` are in the stored index already (their bytes are verified).
        index_from = prev.lines if (self.incremental and prev is not None and known.prefix_ok) else 0
        hasher = known.hasher
        if keep and hasher is None and known.prefix_hashed:  # proven in the stage's process, hashed again here
            hasher, _ = _prefix_hasher(path, start)
        data, stat, hasher = _read(path, start, hasher if keep else None)
        sha256 = hasher.hexdigest()
        if keep and known.by_record:
            if fingerprint(stat) != known.seen:
                raise _Full(f"{rel} changed while it was scored")
            # only the new bytes went through ``hasher``: the whole file's digest is the one
            # collect's receipt took for exactly this stat (else the prefix is read after all)
            whole = cached_sha256(self.layout, path, stat)
            if whole is None:
                prefix_hasher, _ = _prefix_hasher(path, start)
                prefix_hasher.update(data)
                whole = prefix_hasher.hexdigest()
            sha256 = whole
        if keep and (known.prefix_hashed or known.by_record) and fingerprint(stat) == known.seen:
            # the prefix just proven, for the export (which proves the same prefix next)
            outcome.proven_prefix = (stat, prev.bytes, prev.sha256)  # type: ignore[union-attr]
        counts = _Counts()
        keys: set[str] = set()
        chunks, rows = self._score_lines(path, _iter_lines(data), first_line, index_from, counts, keys)
        if extraction:
            assert self.parents is not None
            digest = self.parents.digest
            digests = {digest(text) for text in keys}
            if keep:
                digests.update(prev.keys)  # type: ignore[union-attr]
            file_keys = array("Q", sorted(digests))
        else:
            file_keys = array("Q")
        if self.parents is not None:
            self.parents.trim_cache()
        outcome.new_records = len(chunks)
        outcome.parent_rows = orjson.dumps(rows) if rows else b""
        size = len(data)
        del data  # the file's bytes are hashed and scored: only the scored bytes are still needed
        outcome.file_state = FileState(
            bytes=start + size,
            lines=first_line + len(chunks),
            sha256=sha256,
            evidence=fingerprint(stat),
            mirror=None,
            categories=_merged(prev.categories, counts.categories) if keep else counts.categories,  # type: ignore[union-attr]
            reasons=_merged(prev.reasons, counts.reasons) if keep else counts.reasons,  # type: ignore[union-attr]
            keys=file_keys,
        )
        any_new = bool(chunks)
        payload = b"".join(chunks)
        del chunks
        if keep:
            if any_new:
                outcome.appended = 1
                self._stage(outcome, target, payload, prefix_of=target, prefix_length=prev.mirror[1])  # type: ignore[index,union-attr]
            else:
                outcome.unchanged = 1
        else:
            if prev is not None:
                outcome.rescored = 1
            if _differs(target, payload):
                self._stage(outcome, target, payload)
            else:
                outcome.unchanged = 1
        outcome.restat = True
        return outcome

    def _stage(self, outcome: _Outcome, target: Path, data: bytes, prefix_of: Path | None = None, prefix_length: int = 0) -> None:
        outcome.written += 1
        if not self.dry_run:
            prefix_sha256, sha256 = self.batch.stage(target, data, prefix_of, prefix_length)
            outcome.staged_digest = (prefix_length, prefix_sha256, sha256)

    def _score_lines(
        self, path: Path, lines: Iterator[memoryview], first_line: int, index_from: int, counts: _Counts, keys: set[str]
    ) -> tuple[list[bytes], list[tuple[str, str, str | None, str | None]]]:
        """The scored lines, and the verdict rows for the index that ``add_parent`` did not take."""
        stream = path.stem
        where = _rel(self.layout, path)
        parents = self.parents
        version = self.scorer_version
        parent_stream = is_parent_stream(stream)
        extraction = is_extraction_stream(stream)
        finding_joined = stream in FINDING_JOINED_STREAMS
        add_parent = self.add_parent
        chunks = []
        rows = []
        for number, line in enumerate(lines, start=first_line + 1):
            record = parse_evidence(line, stream, where, number)
            judgement = judge_record(record, parents)
            chunks.append(scored_line(record, judgement, version))
            counts.add(judgement)
            if parent_stream and number > index_from:
                row = (record.id, judgement.category, record.task_id, audit_finding(record))
                if add_parent is not None:
                    add_parent(*row)
                else:
                    rows.append(row)
            elif extraction:
                joined = join_key(stream, record.task_id, record.markers.finding_id if finding_joined else None)
                if joined is not None:
                    keys.add(f"{joined[0]}={joined[1]}")
        return chunks, rows


def _read(path: Path, start: int, hasher: "hashlib._Hash | None") -> tuple[bytes, os.stat_result, "hashlib._Hash"]:
    with open(path, "rb") as handle:
        stat = os.fstat(handle.fileno())
        handle.seek(start)
        data = handle.read(stat.st_size - start)
    if hasher is None:
        hasher = hashlib.sha256()
    hasher.update(data)
    return data, stat, hasher


# ---------------------------------------------------------------------------------------------
# the other core
# ---------------------------------------------------------------------------------------------

# A run that costs (``_cost``) less than this is scored in one process: a worker imports this
# module first (~0.4 s CPU; ~0.5 s more to start one where none is running), and one process
# scores ~63 MB of evidence a second. At 300k rows a full run costs ~340 MB and +1 % ~45 MB
# (3 MB new, 160 MB of prefixes copied): split, a share took ~0.2 s CPU, not worth the import.
SPLIT_MIN_BYTES = 64 << 20
# A phase that costs less than this keeps all its files here: handing files over costs a few ms.
SPLIT_MIN_PHASE_BYTES = 4 << 20


@dataclass(frozen=True)
class _WorkerTask:
    root: str
    scorer_version: str
    dry_run: bool
    incremental: bool
    jobs: list[_Job]
    changed_keys: frozenset[int]
    index: IndexSnapshot | None  # extraction files look their parents up in it


@dataclass(frozen=True)
class _WorkerResult:
    outcomes: list[_Outcome]
    staged: list[tuple[str, str]]  # (temporary, target), for the stage's batch to commit
    created: list[str]  # folders staging created, for the stage's batch to remove on discard


def _score_in_worker(task: _WorkerTask) -> _WorkerResult:
    """A worker's share of one phase. On any error it removes what it staged, then raises."""
    layout = Layout.at(task.root)
    batch = BatchedReplace(stop_at=layout.scored_dir)
    parents = DiskParentIndex.reader(task.index) if task.index is not None else None
    scorer = _FileScorer(layout, task.scorer_version, task.dry_run, task.incremental, parents, batch, add_parent=None)
    changed = set(task.changed_keys)
    try:
        with _gc_paused():
            outcomes = [scorer.score(job, changed) for job in task.jobs]
    except BaseException:
        batch.discard()
        raise
    finally:
        if parents is not None:
            parents.close()
    return _WorkerResult(outcomes, *batch.hand_over())


def _halves(jobs: list[_Job], changed_keys: set[int], here_already: int) -> tuple[list[_Job], list[_Job]]:
    """(here, worker): largest first, each to the share with less to do; ``here_already``: what
    this process does in the phase besides (the ledger)."""
    here: list[_Job] = []
    there: list[_Job] = []
    loads = [here_already, 0]
    for job in sorted(jobs, key=lambda job: job.cost(changed_keys), reverse=True):
        side = 0 if loads[0] <= loads[1] else 1
        (here, there)[side].append(job)
        loads[side] += job.cost(changed_keys)
    return here, there


class _Run:
    def __init__(self, layout: Layout, scorer_version: str, dry_run: bool, state: ScoreState, batch: BatchedReplace) -> None:
        self.layout = layout
        self.scorer_version = scorer_version
        self.dry_run = dry_run
        self.state = state
        self.incremental = state.usable
        self.parents: DiskParentIndex = (
            state.parents if state.parents is not None else DiskParentIndex.building(new_workdir(layout.score_state_dir, dry_run))
        )
        self.files: dict[str, FileState] = {}  # the new state's files
        self.batch = batch
        self.scorer = _FileScorer(layout, scorer_version, dry_run, self.incremental, self.parents, batch, self._add_parent)
        self.new_ledger = LedgerState()
        self.ledger_rebuilt = False
        self.ledger_rows: dict[str, bytes] | None = None  # rebuilt: each model_trust file's cached rows
        self.touched: dict[tuple[str, str], Judgement] = {}  # join key -> its judgement before this run
        self.restat: list[tuple[str, Path]] = []  # scored files whose fingerprint to record after commit
        # sha256 of what this run proved or wrote, for the receipts and the export (lib/digests):
        # evidence path -> (stat, prefix length, prefix sha256); staged scored file -> (kept
        # prefix length, its sha256 or None, sha256 of the whole new file)
        self.proven_prefixes: dict[Path, tuple[os.stat_result, int, str]] = {}
        self.staged_digests: dict[Path, tuple[int, str | None, str]] = {}
        self.written = self.unchanged = self.new_records = self.appended = self.rescored = 0
        self.outputs: list[Path] = []

    # --- per file ----------------------------------------------------------------------------

    def score_files(
        self, pool: ProcessPoolExecutor | None, jobs: list[_Job], changed_keys: set[int],
        here_first: Callable[[], object] | None = None, here_first_cost: int = 0,
    ) -> None:  # fmt: skip
        """Score ``jobs``: with a ``pool``, a share in a worker while this process runs
        ``here_first`` and scores the rest. What the worker did is applied after this
        process's share; the result does not depend on the order (``apply``)."""
        if pool is not None and sum(job.cost(changed_keys) for job in jobs) >= SPLIT_MIN_PHASE_BYTES:
            here, there = _halves(jobs, changed_keys, here_first_cost)
        else:
            here, there = jobs, []
        future = None
        if there:
            index = self.parents.snapshot() if any(is_extraction_stream(Path(job.path).stem) for job in there) else None
            task = _WorkerTask(
                str(self.layout.root), self.scorer_version, self.dry_run, self.incremental,
                [job.shipped() for job in there], frozenset(changed_keys), index,
            )  # fmt: skip
            future = pool.submit(_score_in_worker, task)  # type: ignore[union-attr]
        try:
            if here_first is not None:
                here_first()
            for job in here:
                self.apply(self.scorer.score(job, changed_keys))
        except BaseException:
            if future is not None:
                with contextlib.suppress(BaseException):  # this process's error is the one raised
                    self._adopt(future.result())  # so that the caller's discard removes its temporaries
            raise
        if future is not None:
            result = future.result()  # a worker's error (EvidenceError, _Full, ...) is raised here
            self._adopt(result)
            for outcome in result.outcomes:
                self.apply(outcome)

    def _adopt(self, result: _WorkerResult) -> None:
        self.batch.adopt(result.staged, result.created)

    def apply(self, outcome: _Outcome) -> None:
        """Take one file's outcome into the run. Order-free: counts add up, the state and the
        digests are keyed by file, outputs are sorted later, and the index keeps per key the
        count and the smallest ids however its parents arrive (``joins.ParentRefs``)."""
        target = Path(outcome.target)
        self.outputs.append(target)
        assert outcome.file_state is not None
        self.files[outcome.rel] = outcome.file_state
        self.new_records += outcome.new_records
        self.written += outcome.written
        self.unchanged += outcome.unchanged
        self.appended += outcome.appended
        self.rescored += outcome.rescored
        if outcome.restat:
            self.restat.append((outcome.rel, target))
        if outcome.proven_prefix is not None:
            self.proven_prefixes[Path(outcome.path)] = outcome.proven_prefix
        if outcome.staged_digest is not None:
            self.staged_digests[target] = outcome.staged_digest
        if outcome.parent_rows:
            for evidence_id, category, task_id, finding in orjson.loads(outcome.parent_rows):
                self._add_parent(evidence_id, category, task_id, finding)

    def _add_parent(self, evidence_id: str, category: str, task_id: str | None, finding: str | None) -> None:
        if self.incremental:
            # Remember what rows joining here inherited before, to tell later whether it changed.
            for joined in ((TASK, task_id), (FINDING, finding)):
                if joined[1] is not None and joined not in self.touched:
                    self.touched[joined] = key_judgement(self.parents, *joined)  # type: ignore[arg-type]
        self.parents.add(evidence_id, category, task_id, finding)

    def changed_keys(self) -> set[int]:
        """Digests (``parentstore.key_digest``) of the join keys whose inherited judgement changed."""
        return {
            self.parents.digest(f"{namespace}={key}")
            for (namespace, key), before in self.touched.items()
            if key_judgement(self.parents, namespace, key) != before
        }

    # --- the ledger --------------------------------------------------------------------------

    def ledger(self, paths: list[Path], knowns: dict[Path, Known]) -> tuple[int, int]:
        """(ledger rows, entries): rebuilt from every model_trust file if any of them changed."""
        target = self.layout.model_ledger
        previous = self.state.ledger
        rels = [_rel(self.layout, p) for p in paths]
        stored = {rel for rel in self.state.files if _stem(rel) == "model_trust"}
        if (
            self.incremental
            and previous is not None
            and stored == set(rels)
            and all(knowns[p].unchanged for p in paths)
            and fingerprint_of(target) == previous.file
        ):
            for rel in rels:
                self.files[rel] = self.state.files[rel]
            self.unchanged += 1
            self.new_ledger = previous
            return previous.rows, previous.entries
        self.ledger_rebuilt = True
        builder = LedgerBuilder()
        self.ledger_rows = {}
        cache = self.state.ledger_rows(self.layout) if self.incremental else None
        for path, rel in zip(paths, rels, strict=True):
            prev = self.state.files.get(rel)
            known = knowns[path]
            verified = self.incremental and prev is not None and known.prefix_ok
            rows = _cached_ledger_rows(cache, prev) if verified else None
            if rows is not None:  # the verified prefix's rows come from the cache, in line order
                assert prev is not None
                _add_cached_ledger_rows(builder, rel, rows)
                start, first, validated = prev.bytes, prev.lines, 0
                if known.unchanged:
                    data, stat, hasher = b"", None, None
                else:
                    data, stat, hasher = _read(path, start, known.hasher)
            else:
                rows, start, first = [], 0, 0
                validated = prev.lines if verified else 0  # type: ignore[union-attr]
                data, stat, hasher = _read(path, 0, None)
            count = first
            for count, line in enumerate(_iter_lines(data), start=first + 1):
                if count <= validated:
                    record = LedgerView.model_validate_json(bytes(line))
                else:
                    record = parse_evidence(line, path.stem, rel, count)
                    self.new_records += 1
                markers = record.markers
                row = [
                    record.id, markers.model, markers.task_kind, markers.trust_score,
                    record.event_at, markers.window_start, markers.window_end,
                ]  # fmt: skip
                _add_ledger_row(builder, rel, *row)
                rows.append(row)  # orjson writes the datetimes as RFC 3339, which fromisoformat reads back
            self.ledger_rows[rel] = orjson.dumps(rows) + b"\n"
            if hasher is None:  # nothing read: the file is exactly as the state describes it
                self.files[rel] = prev  # type: ignore[assignment]
            else:
                self.files[rel] = FileState(bytes=start + len(data), lines=count, sha256=hasher.hexdigest(), evidence=fingerprint(stat))
        entries = builder.entries()
        payload = ledger_bytes(entries)
        if _differs(target, payload):
            self.written += 1
            if not self.dry_run:
                self.staged_digests[target] = (0, *self.batch.stage(target, payload))
        else:
            self.unchanged += 1
        self.new_ledger = LedgerState(rows=builder.rows, entries=len(entries))
        return builder.rows, len(entries)

    # --- after the commit --------------------------------------------------------------------

    def remember_digests(self) -> None:
        """After the commit: what this run hashed, so the receipts and the export need not."""
        written: dict[Path, str] = {}
        prefixes = dict(self.proven_prefixes)
        for target, (prefix_length, prefix_sha256, sha256) in self.staged_digests.items():
            written[target] = sha256
            if prefix_sha256 is not None:
                prefixes[target] = (os.stat(target), prefix_length, prefix_sha256)
        remember_digests(self.layout, written)
        remember_prefixes(self.layout, prefixes)


def _add_ledger_row(builder: LedgerBuilder, where: str, *row: object) -> None:
    try:
        builder.add(*row)  # type: ignore[arg-type]
    except LedgerError as exc:
        raise EvidenceError(f"{where}: {exc}") from None


def _add_cached_ledger_rows(builder: LedgerBuilder, where: str, rows: list[list]) -> None:
    add, from_iso = builder.add, datetime.fromisoformat
    try:
        for evidence_id, model, task_kind, trust_score, event_at, window_start, window_end in rows:
            add(
                evidence_id, model, task_kind, trust_score, from_iso(event_at),
                None if window_start is None else from_iso(window_start),
                None if window_end is None else from_iso(window_end),
            )  # fmt: skip
    except LedgerError as exc:
        raise EvidenceError(f"{where}: {exc}") from None


def _cached_ledger_rows(cache: bytes | None, prev: FileState | None) -> list[list] | None:
    """The ledger rows of ``prev``'s scored lines, from ``ledger_rows.jsonl``; None if not there."""
    if cache is None or prev is None or prev.ledger_rows is None:
        return None
    try:
        offset, length = prev.ledger_rows
        rows = orjson.loads(cache[offset : offset + length])
    except (orjson.JSONDecodeError, TypeError, ValueError):
        return None
    if not isinstance(rows, list) or len(rows) != prev.lines or not all(isinstance(row, list) and len(row) == 7 for row in rows):
        return None
    return rows


def _iter_lines(data: bytes) -> Iterator[memoryview]:
    """``lines.split_lines(data)`` one line at a time, as views: no list of copies of the file."""
    view = memoryview(data)
    find = data.find
    start, size = 0, len(data)
    while start < size:
        end = find(b"\n", start)
        if end < 0:
            end = size
        yield view[start:end]
        start = end + 1


def _stale_scored_files(layout: Layout, expected: set[Path]) -> list[Path]:
    if not layout.scored_dir.is_dir():
        return []
    present = (p for p in layout.scored_dir.glob(PARTITION_GLOB) if p.is_file() and not p.name.startswith("."))
    return sorted((p for p in present if p not in expected), key=lambda p: p.as_posix())


def _remove(layout: Layout, paths: list[Path]) -> None:
    for path in paths:
        path.unlink(missing_ok=True)
        parent = path.parent
        # Drop the day/month/year folders the removal emptied, never the scored-runs root.
        while parent != layout.scored_dir and parent.is_dir() and not any(parent.iterdir()):
            parent.rmdir()
            parent = parent.parent


def _kind(path: Path) -> int:
    """Processing order: verdict files build the index, extraction files need it finished."""
    if is_parent_stream(path.stem):
        return 0
    if is_extraction_stream(path.stem):
        return 2
    return 1


def _verify_parent_files(layout: Layout, state: ScoreState, paths: list[Path], knowns: dict[Path, Known]) -> None:
    """Raise ``_Full`` unless every verdict row the stored index counts is still there, unchanged."""
    present = {_rel(layout, p) for p in paths}
    for rel in state.files:
        if is_parent_stream(_stem(rel)) and rel not in present:
            raise _Full(f"verdict evidence removed: {rel}")
    for path in paths:
        if is_parent_stream(path.stem) and _rel(layout, path) in state.files and not knowns[path].prefix_ok:
            raise _Full(f"verdict evidence rewritten: {_rel(layout, path)}")


def _run(
    layout: Layout, files: list[Path], scorer_version: str, dry_run: bool, state: ScoreState, batch: BatchedReplace,
    runs: list[_Run],
) -> tuple[_Run, int, int]:
    """Score what needs scoring into ``batch``; ``_Full`` if the state cannot be used."""
    sizes = {path: os.stat(path).st_size for path in files}
    # From the sizes alone (its prefixes are proven below), so that the workers start early.
    estimated_cost = sum(_cost(size, state.files.get(_rel(layout, path))) for path, size in sizes.items())
    # A new worker imports this module now, while the state is checked, not when its first
    # share arrives (~0.4 s CPU, which the other process would wait for).
    splits = can_split() and estimated_cost >= SPLIT_MIN_BYTES
    with borrowed(imports=(__name__,)) if splits else contextlib.nullcontext() as pool:
        recorded = prefix_entries(layout, files) if state.usable else {}
        knowns = {
            path: check_known(
                path, None if is_ledger_stream(path.stem) else scored_path(layout, path), state.files.get(_rel(layout, path)),
                recorded.get(path),
            )  # fmt: skip
            for path in files
        }
        if state.usable:
            _verify_parent_files(layout, state, files, knowns)
        run = _Run(layout, scorer_version, dry_run, state, batch)
        runs.append(run)
        jobs = {
            kind: [
                _Job(str(p), state.files.get(_rel(layout, p)), knowns[p], sizes[p])
                for p in files if not is_ledger_stream(p.stem) and _kind(p) == kind
            ]
            for kind in (0, 1, 2)
        }  # fmt: skip
        ledger_files = [p for p in files if is_ledger_stream(p.stem)]
        ledger_cost = sum(sizes[p] for p in ledger_files if not knowns[p].unchanged)
        ledger_counts: list[int] = []
        # Verdict and telemetry files judge each row alone; the verdict rows build the index.
        run.score_files(pool, jobs[0] + jobs[1], set())
        run.parents.finish()  # a full build: every verdict row is in, the extraction rows may look up
        changed = run.changed_keys()
        # Extraction files look their parents up in the finished index; the ledger, here meanwhile.
        run.score_files(
            pool, jobs[2], changed,
            here_first=lambda: ledger_counts.extend(run.ledger(ledger_files, knowns)), here_first_cost=ledger_cost,
        )  # fmt: skip
    # Outputs arrive in processing order; receipts list the scored files in path order, then the ledger.
    run.outputs.sort(key=lambda p: p.relative_to(layout.scored_dir).as_posix())
    run.outputs.append(layout.model_ledger)
    ledger_rows, ledger_entries = ledger_counts
    return run, ledger_rows, ledger_entries


@contextlib.contextmanager
def _gc_paused() -> Iterator[None]:
    """No cyclic GC while scoring: the parent index holds ~1M containers at 1M rows, and every
    full collection walks them all (~8 % of a full run) to find no cycles: the stage makes none."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


@releasing_heap
def score_evidence_tree(layout: Layout, scorer_version: str = SCORER_VERSION, dry_run: bool = False) -> ScoreResult:
    with _gc_paused():
        return _score_evidence_tree(layout, scorer_version, dry_run)


def _score_evidence_tree(layout: Layout, scorer_version: str, dry_run: bool) -> ScoreResult:
    if not scorer_version:
        raise ValueError("scorer_version must not be empty")
    files = evidence_files(layout)
    code = code_fingerprint()
    if not dry_run:
        sweep_workdirs(layout.score_state_dir)
    state = ScoreState.load(layout, scorer_version, code)
    batch = BatchedReplace(stop_at=layout.scored_dir)
    runs: list[_Run] = []
    try:
        try:
            try:
                run, ledger_rows, ledger_entries = _run(layout, files, scorer_version, dry_run, state, batch, runs)
            except (_Full, IndexStateError) as why:
                batch.discard()
                if state.parents is not None:
                    state.parents.close()
                state = ScoreState.empty(str(why) if isinstance(why, _Full) else f"score state corrupt ({why})")
                run, ledger_rows, ledger_entries = _run(layout, files, scorer_version, dry_run, state, batch, runs)
            stale = _stale_scored_files(layout, set(run.outputs))
            if not dry_run:
                if len(batch) or stale:
                    ScoreState.clear(layout)  # from here until the new state is saved, no state describes the tree
                batch.commit()
                _remove(layout, stale)
                run.remember_digests()
        except BaseException:
            batch.discard()  # a corrupt line (or a kill signal) replaces nothing
            raise
        changed = run.new_records or run.restat or run.written or stale or run.ledger_rebuilt or set(run.files) != set(state.files)
        if not dry_run and (changed or not state.usable):
            _save_state(layout, run, state, scorer_version, code)
    finally:
        for each in runs:
            each.parents.close()  # the build folder (or the stored blob's descriptor)
        if state.parents is not None:
            state.parents.close()
    return _result(layout, files, run, state, stale, ledger_rows, ledger_entries)


def _save_state(layout: Layout, run: _Run, state: ScoreState, scorer_version: str, code: str) -> None:
    for rel, target in run.restat:
        run.files[rel].mirror = fingerprint_of(target)
    ledger = run.new_ledger
    ledger.file = fingerprint_of(layout.model_ledger)
    previous_index = state.index if state.usable else None
    kept = ScoreState(files=run.files, parents=run.parents, ledger=ledger, ledger_rows_sha256=state.ledger_rows_sha256)
    kept.save(layout, scorer_version, code, previous_index, run.ledger_rows)


def _result(
    layout: Layout, files: list[Path], run: _Run, state: ScoreState, stale: list[Path], ledger_rows: int, ledger_entries: int
) -> ScoreResult:
    matrix: dict[str, dict[str, int]] = {}
    review_reasons: dict[str, int] = {}
    records_in = records_out = 0
    for path in files:
        file_state = run.files[_rel(layout, path)]
        records_in += file_state.lines
        if is_ledger_stream(path.stem):
            continue
        records_out += file_state.lines
        if file_state.lines:
            row = matrix.setdefault(path.stem, dict.fromkeys(CATEGORIES, 0))
            for category, count in file_state.categories.items():
                row[category] += count
            for code, count in file_state.reasons.items():
                review_reasons[code] = review_reasons.get(code, 0) + count
    per_category = dict.fromkeys(CATEGORIES, 0)
    for row in matrix.values():
        for category, count in row.items():
            per_category[category] += count
    return ScoreResult(
        scorer_version=run.scorer_version,
        dry_run=run.dry_run,
        records_in=records_in,
        records_out=records_out,
        ledger_rows=ledger_rows,
        ledger_entries=ledger_entries,
        matrix=matrix,
        per_category=per_category,
        review_reasons=dict(sorted(review_reasons.items())),
        inputs=files,
        outputs=run.outputs,
        files_written=run.written,
        files_unchanged=run.unchanged,
        removed=stale,
        incremental=state.usable,
        full_reason=state.why_empty,
        new_records=run.new_records,
        files_appended=run.appended,
        files_rescored=run.rescored,
    )
