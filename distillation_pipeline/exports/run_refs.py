"""What pairing needs of a run, and how runs wait for pairing without filling memory.

Pairing works per task in sorted task-id order, but runs arrive in partition order, so every
usable run must be kept until all are seen. Kept in memory that was ~450 bytes per run
(~450 MB at a million runs, the pipeline's peak). ``RunRefSpill`` keeps at most
``chunk_runs`` of them: each full chunk is sorted by (task id, arrival) and written to an
unlinked temporary file; ``by_task_encoded`` merges the sorted chunks (``heapq.merge``) and yields
each task's runs in arrival order, exactly what ``dict.setdefault(task, []).append`` then
``sorted(tasks)`` gave. Memory is one chunk plus one buffered line per chunk file.
"""

import hashlib
import heapq
import itertools
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import IO

import orjson

from distillation_pipeline.exports.candidates import SourceFiles, position

DEFAULT_CHUNK_RUNS = 25_000  # ~15 MB of refs in memory; a million runs make 40 chunk files
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def stripped_digest(text: str) -> bytes:
    """What "the same text" means for a pair and for its id: equal after stripping whitespace."""
    return hashlib.sha256(text.strip().encode("utf-8")).digest()


@dataclass(frozen=True, slots=True)
class RunRef:
    """What pairing needs of a run; its texts stay on disk until its pair is written."""

    evidence_id: str
    stream: str
    category: str
    source: SourceFiles  # shared by every run of the file
    index: int
    offset: int
    prompt_digest: bytes | None  # chosen side only: the pair's prompt is the chosen run's
    response_digest: bytes
    recorded_at: datetime
    scorer_version: str

    @property
    def where(self) -> str:
        return position(self.source.relative, self.index)


def micros(moment: datetime) -> int:
    """Exact: a timedelta holds whole microseconds, as a datetime does."""
    return (moment - _EPOCH) // timedelta(microseconds=1)


class RunRefSpill:
    """Runs grouped by task, with at most ``chunk_runs`` of them in memory at a time.

    Runs wait in their encoded form (JSON-ready values, ``decode_ref``: what the export state
    stores too), so a run taken from the previous run's state is never decoded and re-encoded;
    each is decoded once, when its task comes up.
    """

    def __init__(self, chunk_runs: int | None = None) -> None:
        self._chunk_runs = chunk_runs or DEFAULT_CHUNK_RUNS
        self._chunk: list[tuple[str, int, str, list]] = []  # task, arrival, partition, encoded run
        self._files: list[IO[bytes]] = []
        self._sources: dict[str, SourceFiles] = {}  # a file's runs share one SourceFiles
        self._arrivals = 0

    def add_encoded(self, source: SourceFiles, encoded: list) -> None:
        """A run in its encoded form (``decode_ref``; its first value is the task id) from ``source``."""
        self._sources.setdefault(source.relative, source)
        self._chunk.append((encoded[0], self._arrivals, source.relative, encoded))
        self._arrivals += 1
        if len(self._chunk) >= self._chunk_runs:
            self._spill()

    def _spill(self) -> None:
        self._chunk.sort(key=lambda entry: (entry[0], entry[1]))
        handle = tempfile.TemporaryFile()  # unlinked: gone when closed, or when the process dies
        handle.write(b"".join(orjson.dumps([arrival, relative, *encoded]) + b"\n"
                              for _, arrival, relative, encoded in self._chunk))  # fmt: skip
        handle.seek(0)
        self._files.append(handle)
        self._chunk = []

    def by_task_encoded(self) -> Iterator[tuple[str, list[tuple[str, list]]]]:
        """(task id, its runs as (partition, encoded ref) in arrival order), in sorted task-id order."""
        try:
            if not self._files:  # everything fits in one chunk: no file needed
                self._chunk.sort(key=lambda entry: (entry[0], entry[1]))
                entries: Iterator[tuple[str, int, str, list]] = iter(self._chunk)
            else:
                if self._chunk:
                    self._spill()
                entries = heapq.merge(*(self._read(handle) for handle in self._files), key=lambda e: (e[0], e[1]))
            for task_id, group in itertools.groupby(entries, key=lambda entry: entry[0]):
                yield task_id, [(relative, encoded) for _, _, relative, encoded in group]
        finally:
            self.close()

    def close(self) -> None:
        for handle in self._files:
            handle.close()
        self._files, self._chunk = [], []

    def _read(self, handle: IO[bytes]) -> Iterator[tuple[str, int, str, list]]:
        for line in handle:
            arrival, relative, *encoded = orjson.loads(line)
            yield encoded[0], arrival, relative, encoded


def decode_ref(row: list, source: SourceFiles) -> tuple[str, RunRef]:
    task_id, evidence_id, stream, category, index, offset, prompt, response, micros, version = row
    run = RunRef(
        evidence_id=evidence_id,
        stream=sys.intern(stream),
        category=sys.intern(category),
        source=source,
        index=index,
        offset=offset,
        prompt_digest=bytes.fromhex(prompt) if prompt is not None else None,
        response_digest=bytes.fromhex(response),
        recorded_at=_EPOCH + timedelta(microseconds=micros),
        scorer_version=sys.intern(version),
    )
    return task_id, run
