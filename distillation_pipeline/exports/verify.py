"""Re-read a written dataset and report every row that breaks the firewall.

The third line of defence, behind the exporter and the schema, for the blocking asset checks:
it reads what is on disk, so a row appended behind the exporter's back (a rejected run, a
self-pair, a credential, a hand-edited text) is found. Rows are parsed leniently (plain JSON,
``dict.get``), never through the strict schema models, which would refuse to load the very
rows this has to report.

Every violation is one human-readable line that starts with a code:
``forbidden_category``, ``missing_provenance``, ``missing_source_run_id``, ``empty_content``,
``secret_detected``, ``hallucinated_file_path``, ``duplicate_id``, ``id_mismatch``,
``self_pairing``, ``invalid_preference_pairing``, ``too_many_pairs``, ``malformed_row``,
``missing_created_at``, ``variant_mismatch``, ``missing_file``, and ``truncated`` when more
violations were found than listed.
"""

import hashlib
import heapq
import itertools
import math
import re
from array import array
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from distillation_pipeline.exports.ids import preference_id, rag_id, sft_id, text_sha256
from distillation_pipeline.exports.paths import RepoManifest, cited_paths
from distillation_pipeline.exports.preference import (
    DEFAULT_MAX_PAIRS_PER_TASK,
    openai_preference_row,
)
from distillation_pipeline.exports.secrets import find_secret_in
from distillation_pipeline.exports.verified_rows import (
    TableBuilder,
    VerifiedRows,
    id_text,
    id_words,
    prefix_of,
    split_key,
)
from distillation_pipeline.lib.firstseen import FirstSeen
from distillation_pipeline.lib.layout import Layout

DEFAULT_LIMIT = 1000
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
Row = dict[str, Any]


class _Report:
    """Collects violations in the order found, listing at most ``limit`` and counting the rest."""

    def __init__(self, path: Path, limit: int) -> None:
        self.label = f"{path.parent.name}/{path.name}"
        self.limit = limit
        self.lines: list[str] = []
        self.hidden = 0

    def add(self, code: str, line_no: int, detail: str) -> None:
        if len(self.lines) < self.limit:
            self.lines.append(f"{code}: {self.label}:{line_no}: {detail}")
        else:
            self.hidden += 1

    def result(self) -> list[str]:
        if self.hidden:
            return [*self.lines, f"truncated: {self.hidden} more violations in {self.label} not listed"]
        return self.lines


class _PlacedReport:
    """The main file's violations in file order: by line, then in the order of the row's checks.

    Most are found in that order. The rules that span rows (unique ids, pairs per task) are
    settled after the last row (``_CrossRows.finish``), each in the place its row reserved,
    so the list and its truncation read exactly as if every row were checked in turn. Keeps
    only the ``limit`` first places (a heap), so memory stays bounded however many there are.
    """

    def __init__(self, path: Path, limit: int) -> None:
        self.label = f"{path.parent.name}/{path.name}"
        self.limit = limit
        self._kept: list[tuple[int, int, str]] = []  # (-line, -order, text): max-heap of places
        self.total = 0
        self._line = -1
        self._order = 0

    def reserve(self, line_no: int) -> int:
        """The next place within ``line_no`` (a row's checks run together, in order)."""
        if line_no != self._line:
            self._line, self._order = line_no, 0
        order = self._order
        self._order += 1
        return order

    def add(self, code: str, line_no: int, detail: str) -> None:
        self.put(line_no, self.reserve(line_no), code, detail)

    def put(self, line_no: int, order: int, code: str, detail: str) -> None:
        self.total += 1
        item = (-line_no, -order, "")
        if len(self._kept) < self.limit:
            heapq.heappush(self._kept, (-line_no, -order, f"{code}: {self.label}:{line_no}: {detail}"))
        elif self._kept and item[:2] > self._kept[0][:2]:
            heapq.heapreplace(self._kept, (-line_no, -order, f"{code}: {self.label}:{line_no}: {detail}"))

    def result(self) -> list[str]:
        lines = [text for _, _, text in sorted(self._kept, reverse=True)]
        hidden = self.total - len(lines)
        if hidden:
            return [*lines, f"truncated: {hidden} more violations in {self.label} not listed"]
        return lines


class _Trusted:
    """Byte ranges of a file that are verbatim copies of bytes this check already passed."""

    def __init__(self, ranges: list[tuple[int, int]] | None) -> None:
        self._ranges = sorted(ranges or [])
        self._at = 0

    def covers(self, start: int, end: int) -> bool:
        """Is [start, end) inside one range? Asked with increasing offsets (one pass over the file)."""
        ranges = self._ranges
        while self._at < len(ranges) and ranges[self._at][1] <= start:
            self._at += 1
        return self._at < len(ranges) and ranges[self._at][0] <= start and end <= ranges[self._at][1]


Line = tuple[int, int, int, bytes | memoryview]  # line number, start, end offset, bytes without the newline
_NEWLINE = 10
_CHUNK_BYTES = 1 << 20  # read at a time; a batch of rows keeps the chunks it lies in
_WHITESPACE = np.frombuffer(b" \t\r\x0b\x0c", dtype=np.uint8)  # and the newline: bytes.isspace


class _Rows:
    """The non-blank lines of a file, taken in batches; ``hasher`` sees every byte read, so the
    file's sha256 is of exactly the bytes the check judged. Per line, only C-level work: the
    line ends of a chunk are found, and its lines screened for blanks, in bulk, and
    each line is a view of the chunk, not a copy."""

    def __init__(self, path: Path, hasher: Any) -> None:
        self._handle = open(path, "rb")  # noqa: SIM115 (closed at the end of the file or by close())
        self._hasher = hasher
        self._line_no = 0  # lines before the buffered ones
        self._offset = 0  # bytes before the buffered ones
        self._tail = b""
        self._texts: list[memoryview] = []
        self._numbers = self._starts = self._ends = np.zeros(0, dtype=np.int64)
        self._at = 0

    def close(self) -> None:
        self._handle.close()

    def _fill(self) -> bool:
        if self._handle.closed:
            return False
        chunk = self._handle.read(_CHUNK_BYTES)
        if chunk:
            self._hasher.update(chunk)
            buffer = self._tail + chunk if self._tail else chunk
            data = np.frombuffer(buffer, dtype=np.uint8)
            cuts = np.flatnonzero(data == _NEWLINE)
            if not len(cuts):  # no line ends in it yet
                self._tail = buffer
                return True
            starts = np.concatenate([np.zeros(1, np.int64), cuts[:-1] + 1])
            ends = cuts
            self._tail = buffer[int(cuts[-1]) + 1 :]
            newline, consumed = 1, int(cuts[-1]) + 1
        elif self._tail:  # a last line without its newline
            buffer, self._tail = self._tail, b""
            data = np.frombuffer(buffer, dtype=np.uint8)
            starts, ends = np.zeros(1, np.int64), np.full(1, len(buffer), np.int64)
            newline, consumed = 0, len(buffer)
        else:
            self.close()
            return False
        lengths = ends - starts
        # blank: empty or whitespace only (as bytes.strip sees it); only lines that start with
        # whitespace are looked at one by one
        blank = lengths == 0
        for i in np.flatnonzero(~blank & np.isin(data[np.minimum(starts, len(data) - 1)], _WHITESPACE)).tolist():
            blank[i] = buffer[int(starts[i]) : int(ends[i])].isspace()
        numbers = np.arange(self._line_no + 1, self._line_no + 1 + len(starts), dtype=np.int64)
        self._line_no += len(starts)
        if blank.any():
            keep = np.flatnonzero(~blank)
            starts, ends, numbers = starts[keep], ends[keep], numbers[keep]
        view = memoryview(buffer)  # the lines are views of the chunk: not copied
        parts = list(map(view.__getitem__, map(slice, starts.tolist(), ends.tolist())))
        absolute = self._offset
        self._offset += consumed
        self._texts = self._texts[self._at :] + parts
        self._numbers = np.concatenate([self._numbers[self._at :], numbers])
        self._starts = np.concatenate([self._starts[self._at :], absolute + starts])
        self._ends = np.concatenate([self._ends[self._at :], absolute + ends + newline])
        self._at = 0
        return True

    def _buffered_bytes(self) -> int:
        return int(self._ends[-1] - self._starts[self._at]) if self._at < len(self._texts) else 0

    def take(self, n: int, max_bytes: int | None = None) -> tuple[list[memoryview], np.ndarray, np.ndarray, np.ndarray]:
        """The next ``n`` rows, or as many (at least one) as fit in ``max_bytes``: fewer only at
        the end or by that bound. Texts, line numbers, starts, ends."""
        bound = max_bytes if max_bytes is not None else math.inf
        while len(self._texts) - self._at < n and self._buffered_bytes() < bound and self._fill():
            pass
        at, end = self._at, min(self._at + n, len(self._texts))
        if max_bytes is not None and end > at:  # the rows whose ends lie within the bound
            end = at + max(1, int(np.searchsorted(self._ends[at:end], self._starts[at] + max_bytes, side="right")))
        self._at = end
        return self._texts[at:end], self._numbers[at:end], self._starts[at:end], self._ends[at:end]


def _parse(line: Line, report: "_Report | _PlacedReport") -> Row | None:
    """The line's object; None (reported) for a line that is not an object."""
    try:
        row = orjson.loads(line[3])
    except orjson.JSONDecodeError:
        report.add("malformed_row", line[0], "not valid JSON")
        return None
    if not isinstance(row, dict):
        report.add("malformed_row", line[0], "not a JSON object")
        return None
    return row


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _nonempty(value: Any) -> bool:
    return isinstance(value, str) and bool(value.strip())


def _check_provenance(provenance: Any, line_no: int, report: "_Report | _PlacedReport", side: str = "provenance") -> str | None:
    """The evidence id if ``provenance`` leads back to evidence, scored run and source row."""
    if not isinstance(provenance, dict):
        report.add("missing_provenance", line_no, f"{side} is missing")
        return None
    evidence_id = provenance.get("evidence_id")
    # scored_run_id is reported on its own below, as missing_source_run_id.
    gaps = [
        key for key in ("evidence_id", "stream", "source_file", "scorer_version") if not _nonempty(provenance.get(key))
    ]
    offset = provenance.get("line_offset")
    if not isinstance(offset, int) or isinstance(offset, bool) or offset < 0:
        gaps.append("line_offset")
    if not (isinstance(provenance.get("sig_hash"), str) and _SHA256.match(provenance["sig_hash"])):
        gaps.append("sig_hash")
    if gaps:
        report.add("missing_provenance", line_no, f"{side} lacks {', '.join(gaps)}")
    scored_run_id = provenance.get("scored_run_id")
    if not _nonempty(scored_run_id):
        report.add("missing_source_run_id", line_no, f"{side} has no scored_run_id")
    elif _nonempty(evidence_id) and scored_run_id != evidence_id:
        report.add(
            "missing_source_run_id", line_no, f"{side}: scored run {scored_run_id} is not evidence {evidence_id}"
        )
    return evidence_id if _nonempty(evidence_id) else None


def _check_common(row: Row, line_no: int, report: _PlacedReport, cross: "_CrossRows", expected_id: str | None) -> None:
    cross.unique(row.get("id"), line_no, report)
    row_id = row.get("id")
    if expected_id is not None and _nonempty(row_id) and row_id != expected_id:
        report.add("id_mismatch", line_no, f"id {row_id} is not the hash of the row's content ({expected_id})")
    if not _nonempty(row.get("created_at")):
        report.add("missing_created_at", line_no, "row has no created_at")


def _check_secret(fields: list[tuple[str, Any]], line_no: int, report: "_Report | _PlacedReport") -> str | None:
    found = find_secret_in((name, _text(value)) for name, value in fields)
    if found is not None:
        report.add("secret_detected", line_no, found)
    return found


def _check_paths(manifest: RepoManifest | None, paths: list[str], line_no: int, report: "_Report | _PlacedReport") -> None:
    if manifest is None:
        return
    missing = manifest.missing(path for path in paths if isinstance(path, str))
    if missing:
        report.add("hallucinated_file_path", line_no, f"cites path(s) not in the repository: {', '.join(missing[:5])}")


# ------------------------------------------------------------------------------------------
# The rules that span rows: unique ids, pairs per task
# ------------------------------------------------------------------------------------------


class _CrossRows:
    """Unique ids (and pairs per task) over every row, settled once the last row is read.

    A row the check passed before (``verified_rows``) is not parsed: its id and task come from
    the table. So ids are kept as compact arrays, not replayed into a table of strings: an id in
    the dataset's own form (``rag-`` + 24 hex digits, what every passing row has) as 12 bytes,
    with its line and its place among the row's violations; any other id (only rows checked
    whole have one) goes through ``FirstSeen`` as it is met, in file order. ``finish`` sorts the
    arrays and puts each duplicate (and each task's first pair over the cap) in its place, with
    exactly the message a row-by-row check would have given.
    """

    def __init__(self, dataset: str, max_pairs: int | None = None) -> None:
        self.prefix = prefix_of(dataset)
        self.max_pairs = max_pairs
        self._other = FirstSeen()  # ids not in the dataset's form
        self._high, self._low, self._line, self._order = array("Q"), array("I"), array("I"), array("I")
        self._task_number, self._task_line, self._task_order = array("I"), array("I"), array("I")
        self._task_index: dict[Any, int] = {}  # per task, as the row-by-row check's dict was
        self._task_values: list[Any] = []
        self._task_repr: dict[int, str] = {}  # line -> repr of a task equal to, not the same as, the first
        self._bulk: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray | None]] = []
        self._from_table: np.ndarray | None = None  # table task number -> ours (-1: not met yet)
        self.last_words: tuple[int, int] | None = None  # the id of the row ``unique`` saw last

    def unique(self, row_id: Any, line_no: int, report: _PlacedReport) -> None:
        self.last_words = None
        if not _nonempty(row_id):
            report.add("duplicate_id", line_no, "row has no id")
            return
        words = self.last_words = id_words(row_id, self.prefix)
        if words is None:
            first = self._other.first(row_id, str(line_no))
            if first is not None:
                report.add("duplicate_id", line_no, f"id {row_id} already on line {first}")
            return
        self._high.append(words[0])
        self._low.append(words[1])
        self._line.append(line_no)
        self._order.append(report.reserve(line_no))

    def pair(self, task: Any, line_no: int, report: _PlacedReport) -> None:
        number = self._number(task)
        if type(task) is not str and repr(task) != repr(self._task_values[number]):
            self._task_repr[line_no] = repr(task)
        self._task_number.append(number)
        self._task_line.append(line_no)
        self._task_order.append(report.reserve(line_no))

    def _number(self, task: Any) -> int:
        number = self._task_index.get(task)  # an unhashable task raises, as it always did
        if number is None:
            number = self._task_index[task] = len(self._task_values)
            self._task_values.append(task)
        return number

    def trusted(self, table: VerifiedRows, indexes: np.ndarray, lines: np.ndarray) -> np.ndarray | None:
        """Rows found in the table: their ids (and tasks) join the arrays. Returns our task
        numbers of those rows (preference), for the table the check writes next."""
        numbers = None
        if self.max_pairs is not None:
            if self._from_table is None:
                self._from_table = np.full(len(table.tasks), -1, dtype=np.int64)
            table_tasks = table.task[indexes]
            for old in np.unique(table_tasks[self._from_table[table_tasks] < 0]).tolist():
                self._from_table[old] = self._number(table.tasks[old])
            numbers = self._from_table[table_tasks].astype(np.uint32)
        self._bulk.append((table.id_high[indexes], table.id_low[indexes], lines, numbers))
        return numbers

    def finish(self, report: _PlacedReport) -> None:
        self._other.close()
        bulk_lines = [b[2] for b in self._bulk]
        high = np.concatenate([_np(self._high, np.uint64), *(b[0] for b in self._bulk)])
        low = np.concatenate([_np(self._low, np.uint32), *(b[1] for b in self._bulk)])
        line = np.concatenate([_np(self._line, np.uint32), *bulk_lines])
        # a row from the table has no other violation: its id takes place 0, its pair place 1
        order = np.concatenate([_np(self._order, np.uint32), *(np.zeros(len(x), np.uint32) for x in bulk_lines)])
        for i, first in _repeats((line, low, high), line):
            report.put(int(line[i]), int(order[i]), "duplicate_id",
                       f"id {id_text(self.prefix, int(high[i]), int(low[i]))} already on line {first}")  # fmt: skip
        if self.max_pairs is None:
            return
        number = np.concatenate([_np(self._task_number, np.uint32), *(b[3] for b in self._bulk)])
        line = np.concatenate([_np(self._task_line, np.uint32), *bulk_lines])
        order = np.concatenate([_np(self._task_order, np.uint32), *(np.ones(len(x), np.uint32) for x in bulk_lines)])
        sorted_at = np.lexsort((line, number))
        ranked = number[sorted_at]
        starts = np.r_[True, ranked[1:] != ranked[:-1]] if len(ranked) else np.zeros(0, bool)
        positions = np.arange(len(ranked))
        rank = positions - np.maximum.accumulate(np.where(starts, positions, 0)) if len(ranked) else positions
        for i in sorted_at[rank == self.max_pairs].tolist():
            at = int(line[i])
            task = self._task_repr.get(at) or repr(self._task_values[int(number[i])])
            report.put(at, int(order[i]), "too_many_pairs", f"task {task} has more than {self.max_pairs} pairs")


def _np(values: array, dtype: Any) -> np.ndarray:
    return np.frombuffer(values, dtype=dtype) if len(values) else np.zeros(0, dtype=dtype)


def _repeats(keys: tuple[np.ndarray, ...], line: np.ndarray) -> Iterator[tuple[int, int]]:
    """(index, first line of its key) of every row whose key (all but ``keys[0]``) an earlier
    line already had; ``keys[0]`` is the line, which orders each group, ``keys[-1]`` the most
    telling part of the key: one sort by it finds the few rows that can repeat."""
    if not len(line):
        return
    order = np.argsort(keys[-1], kind="stable")
    ties = np.flatnonzero(keys[-1][order][1:] == keys[-1][order][:-1])
    if not len(ties):
        return
    rows = order[np.unique(np.concatenate([ties, ties + 1]))]  # only rows that share it
    sorted_at = rows[np.lexsort(tuple(key[rows] for key in keys))]
    same = np.ones(len(sorted_at) - 1, dtype=bool)
    for key in keys[1:]:
        ordered = key[sorted_at]
        same &= ordered[1:] == ordered[:-1]
    positions = np.arange(len(sorted_at))
    group_start = np.maximum.accumulate(np.where(np.r_[True, ~same], positions, 0))
    first_line = line[sorted_at][group_start]
    for at in (np.nonzero(same)[0] + 1).tolist():
        yield int(sorted_at[at]), int(first_line[at])


# ------------------------------------------------------------------------------------------
# One pass over a dataset file and, in lockstep, its OpenAI-layout file
# ------------------------------------------------------------------------------------------

# Checks one main-file row; returns the row in the OpenAI layout (None if it cannot be built)
# and the credential found in it, so the variant row is compared, not scanned again. A trusted
# row (a verbatim copy of bytes this check passed before, with its variant twin) is held only
# to what spans rows: unique ids and the per-task pair cap.
RowCheck = Callable[[int, Row, _PlacedReport, bool], tuple[Row | None, str | None]]
VariantFields = Callable[[Row], list[tuple[str, Any]]]
# Rows per batch, and the bytes they may span: every chunk a batch's lines lie in stays in
# memory until the batch is checked. 4096 rows alone kept 7 chunks of 4 MiB (28 MB) for the
# 1M-row preference file (~1.5 KB a row) and its twin.
_BATCH = 4096
_BATCH_BYTES = 1 << 21


@dataclass
class Remembered:
    """What the check passed before (``table``), and what this check keeps for the next.

    ``builder`` collects an entry per row for the table the caller writes if the dataset
    passes; ``digests`` gets the sha256 of every file read, of exactly the bytes read.
    """

    table: VerifiedRows | None = None
    builder: TableBuilder | None = None
    digests: dict[Path, str] = field(default_factory=dict)
    rows_known: int = 0  # rows found in the table: held only to the rules that span rows


def _verify_file(
    path: Path,
    limit: int,
    check_row: RowCheck,
    cross: _CrossRows,
    variant_path: Path | None = None,
    variant_fields: VariantFields | None = None,
    trusted: dict[Path, list[tuple[int, int]]] | None = None,
    remembered: Remembered | None = None,
) -> list[str]:
    """Stream both files together: memory stays flat however large the dataset.

    A row whose bytes (with its twin's) are in ``remembered.table`` is not parsed; a row inside
    the caller's ``trusted`` ranges (with its twin) is parsed for its id but not checked again.
    Both are held to the rules that span rows. Every other row gets every rule.
    """
    trusted = trusted or {}
    remembered = remembered or Remembered()
    table, builder = remembered.table, remembered.builder
    report = _PlacedReport(path, limit)
    if not path.is_file():
        return [f"missing_file: {report.label}: the dataset file does not exist"]
    variant_report = _Report(variant_path, limit) if variant_path is not None else None
    if variant_path is not None and not variant_path.is_file():
        variant_path = None
        assert variant_report is not None
        variant_report.lines.append(f"missing_file: {variant_report.label}: the OpenAI-layout file does not exist")
    hashers = {path: hashlib.sha256()}
    main_rows = _Rows(path, hashers[path])
    variant_rows = None
    if variant_path is not None:
        hashers[variant_path] = hashlib.sha256()
        variant_rows = _Rows(variant_path, hashers[variant_path])
    main_trusted, variant_trusted = _Trusted(trusted.get(path)), _Trusted(trusted.get(variant_path))  # type: ignore[arg-type]
    checks_variant = variant_report is not None and variant_fields is not None
    counts = [0, 0]  # main rows, variant rows
    no_key = bytes(32)  # never a sha256: a position without both lines is never found

    def check_position(main: Line | None, variant: Line | None, key: bytes) -> None:
        row = variant_row = None
        expected: Row | None = None
        secret: str | None = None
        if main is not None:
            row = _parse(main, report)
        if variant is not None and variant_report is not None:
            variant_row = _parse(variant, variant_report)
        both_trusted = (
            row is not None and main_trusted.covers(main[1], main[2])  # type: ignore[index]
            and (variant_path is None or (variant_row is not None and variant_trusted.covers(variant[1], variant[2])))  # type: ignore[index]
        )  # fmt: skip
        if row is not None:
            expected, secret = check_row(main[0], row, report, both_trusted)  # type: ignore[index]
            if builder is not None and not both_trusted and key != no_key:
                builder.add_row(key, cross.last_words, row.get("task_id"), cross.max_pairs is not None)
        if variant is not None and checks_variant and not both_trusted:
            _check_variant_row((variant[0], variant_row), main is not None, expected, secret, variant_fields,  # type: ignore[arg-type]
                               variant_report)  # type: ignore[arg-type]  # fmt: skip

    try:
        while True:
            texts, numbers, starts, ends = main_rows.take(_BATCH, _BATCH_BYTES)
            twins, twin_numbers, twin_starts, twin_ends = (
                variant_rows.take(len(texts) or _BATCH, None if texts else _BATCH_BYTES)  # the same positions
                if variant_rows is not None
                else ([], numbers[:0], starts[:0], ends[:0])
            )
            if not texts and not twins:
                break
            counts[0] += len(texts)
            counts[1] += len(twins) if checks_variant else 0
            # a position's key: sha256 of its line, or of its line, "\n" and its twin's line
            paired = min(len(texts), len(twins)) if variant_rows is not None else len(texts)
            lines = map(b"\n".join, zip(texts, twins)) if variant_rows is not None else iter(texts)
            keys = b"".join([digest.digest() for digest in map(hashlib.sha256, itertools.islice(lines, paired))])
            keys += no_key * (max(len(texts), len(twins)) - paired)
            found = table.lookup(*split_key(keys)) if table is not None else np.full(len(keys) // 32, -1)
            hits = found >= 0
            if hits.any():
                assert table is not None
                indexes = found[hits]
                numbers_of = cross.trusted(table, indexes, numbers[hits[: len(numbers)]].astype(np.uint32))
                if builder is not None:
                    builder.carry(table, indexes, numbers_of)
                remembered.rows_known += len(indexes)
            for i in np.nonzero(~hits)[0].tolist():  # the rest, in file order: every rule
                main = (int(numbers[i]), int(starts[i]), int(ends[i]), texts[i]) if i < len(texts) else None
                variant = (
                    (int(twin_numbers[i]), int(twin_starts[i]), int(twin_ends[i]), twins[i]) if i < len(twins) else None
                )
                check_position(main, variant, keys[32 * i : 32 * i + 32])
    finally:
        main_rows.close()
        if variant_rows is not None:
            variant_rows.close()
    cross.finish(report)
    remembered.digests.update({file: hasher.hexdigest() for file, hasher in hashers.items()})
    problems = report.result()
    if variant_report is not None:
        main_count, variant_count = counts
        if variant_path is not None and variant_count != main_count:
            variant_report.add(
                "variant_mismatch", variant_count, f"{variant_count} rows, the main dataset file has {main_count}"
            )
        problems += variant_report.result()
    return problems


def _check_variant_row(
    variant: tuple[int, Row | None],
    has_main: bool,
    expected: Row | None,
    secret: str | None,
    fields: VariantFields,
    report: _Report,
) -> None:
    line_no, row = variant
    if row is None:
        return
    if has_main and expected is not None and row == expected:
        if secret is not None:  # same texts as the main row: same credential
            report.add("secret_detected", line_no, secret)
        return
    report.add("variant_mismatch", line_no, "row differs from the same row of the main dataset file")
    values = fields(row)
    _check_secret(values, line_no, report)
    texts = [_text(value) for _, value in values]
    if len(texts) == 3 and texts[1] is not None and texts[2] is not None and texts[1].strip() == texts[2].strip():
        report.add("invalid_preference_pairing", line_no, "preferred and non-preferred outputs are the same text")


# ------------------------------------------------------------------------------------------
# Per dataset
# ------------------------------------------------------------------------------------------

RAG_ADMITS = ("accepted", "partially_accepted")
SFT_ADMITS = ("accepted",)


def verify_rag(
    path: Path,
    *,
    include_review: bool = False,
    manifest: RepoManifest | None = None,
    limit: int = DEFAULT_LIMIT,
    trusted: dict[Path, list[tuple[int, int]]] | None = None,
    remembered: Remembered | None = None,
) -> list[str]:
    admitted = RAG_ADMITS + (("needs_human_review",) if include_review else ())
    cross = _CrossRows("rag")

    def check(line_no: int, row: Row, report: _PlacedReport, is_trusted: bool) -> tuple[Row | None, str | None]:
        if is_trusted:
            cross.unique(row.get("id"), line_no, report)
            return None, None
        category = row.get("source_category")
        if category not in admitted:
            why = (
                "RAG never admits rejected runs"
                if category == "rejected"
                else f"not admitted (include_review={include_review})"
            )
            report.add("forbidden_category", line_no, f"source_category {category!r}: {why}")
        title, content = _text(row.get("title")), _text(row.get("content"))
        if not _nonempty(content):
            report.add("empty_content", line_no, "content is empty")
        _check_provenance(row.get("provenance"), line_no, report)
        expected = rag_id(title, content) if title is not None and content is not None else None
        _check_common(row, line_no, report, cross, expected)
        secret = _check_secret([("title", title), ("content", content)], line_no, report)
        cited = row.get("cited_paths")
        _check_paths(manifest, cited if isinstance(cited, list) else [], line_no, report)
        return None, secret

    return _verify_file(path, limit, check, cross, trusted=trusted, remembered=remembered)


def _messages(row: Row, line_no: int, report: "_Report | _PlacedReport") -> list[dict[str, str]] | None:
    messages = row.get("messages")
    if not isinstance(messages, list) or not all(isinstance(m, dict) for m in messages):
        report.add("empty_content", line_no, "messages is not a list of messages")
        return None
    roles = [m.get("role") for m in messages if m.get("role") != "system"]
    if roles[:1] != ["user"] or roles[-1:] != ["assistant"]:
        report.add("empty_content", line_no, "messages must start with a user turn and end with an assistant turn")
    if any(not _nonempty(m.get("content")) for m in messages):
        report.add("empty_content", line_no, "a message has no content")
    if any(not isinstance(m.get("role"), str) or not isinstance(m.get("content"), str) for m in messages):
        return None
    return messages


def _sft_variant_fields(row: Row) -> list[tuple[str, Any]]:
    messages = row.get("messages")
    if not isinstance(messages, list):
        return []
    return [(f"messages[{i}]", m.get("content") if isinstance(m, dict) else None) for i, m in enumerate(messages)]


def verify_sft(
    path: Path,
    *,
    include_partial: bool = False,
    manifest: RepoManifest | None = None,
    openai_path: Path | None = None,
    limit: int = DEFAULT_LIMIT,
    trusted: dict[Path, list[tuple[int, int]]] | None = None,
    remembered: Remembered | None = None,
) -> list[str]:
    admitted = SFT_ADMITS + (("partially_accepted",) if include_partial else ())
    cross = _CrossRows("sft")

    def check(line_no: int, row: Row, report: _PlacedReport, is_trusted: bool) -> tuple[Row | None, str | None]:
        if is_trusted:
            cross.unique(row.get("id"), line_no, report)
            return None, None
        category = row.get("quality_score")
        if category not in admitted:
            never = category in ("rejected", "needs_human_review")
            why = "SFT never admits it" if never else f"not admitted (include_partial={include_partial})"
            report.add("forbidden_category", line_no, f"quality_score {category!r}: {why}")
        messages = _messages(row, line_no, report)
        _check_provenance(row.get("provenance"), line_no, report)
        _check_common(row, line_no, report, cross, sft_id(messages) if messages else None)
        contents = [(f"messages[{i}]", m.get("content")) for i, m in enumerate(messages or [])]
        secret = _check_secret(contents, line_no, report)
        answers = [m["content"] for m in messages or [] if m.get("role") == "assistant"]
        _check_paths(manifest, [p for text in answers for p in cited_paths(text)], line_no, report)
        variant = {"messages": [{"role": m["role"], "content": m["content"]} for m in messages]} if messages else None
        return variant, secret

    return _verify_file(path, limit, check, cross, openai_path, _sft_variant_fields, trusted, remembered)


def _preference_variant_fields(row: Row) -> list[tuple[str, Any]]:
    def content(key: str) -> Any:
        try:
            return row[key]["messages"][0]["content"] if key == "input" else row[key][0]["content"]
        except (KeyError, IndexError, TypeError):
            return None

    return [(key, content(key)) for key in ("input", "preferred_output", "non_preferred_output")]


def verify_preference(
    path: Path,
    *,
    max_pairs_per_task: int = DEFAULT_MAX_PAIRS_PER_TASK,
    manifest: RepoManifest | None = None,
    openai_path: Path | None = None,
    limit: int = DEFAULT_LIMIT,
    trusted: dict[Path, list[tuple[int, int]]] | None = None,
    remembered: Remembered | None = None,
) -> list[str]:
    cross = _CrossRows("preference", max_pairs_per_task)

    def check(line_no: int, row: Row, report: _PlacedReport, is_trusted: bool) -> tuple[Row | None, str | None]:
        if is_trusted:
            cross.unique(row.get("id"), line_no, report)
            cross.pair(row.get("task_id"), line_no, report)
            return None, None
        prompt, chosen, rejected = _text(row.get("prompt")), _text(row.get("chosen")), _text(row.get("rejected"))
        if row.get("chosen_category") != "accepted":
            report.add(
                "forbidden_category",
                line_no,
                f"chosen_category {row.get('chosen_category')!r}: only accepted runs are chosen",
            )
        if row.get("rejected_category") not in ("rejected", "partially_accepted"):
            report.add(
                "forbidden_category",
                line_no,
                f"rejected_category {row.get('rejected_category')!r}: not a pairable category",
            )
        for name, value in (("prompt", prompt), ("chosen", chosen), ("rejected", rejected)):
            if not _nonempty(value):
                report.add("empty_content", line_no, f"{name} is empty")
        chosen_id = _check_provenance(row.get("chosen_provenance"), line_no, report, "chosen_provenance")
        rejected_id = _check_provenance(row.get("rejected_provenance"), line_no, report, "rejected_provenance")
        if chosen_id is not None and chosen_id == rejected_id:
            report.add("self_pairing", line_no, f"run {chosen_id} is on both sides")
        if chosen is not None and rejected is not None and chosen.strip() == rejected.strip():
            report.add("invalid_preference_pairing", line_no, "chosen and rejected are the same text")
        texts = (prompt, chosen, rejected)
        expected = preference_id(*(text_sha256(t.strip()) for t in texts)) if None not in texts else None  # type: ignore[union-attr]
        _check_common(row, line_no, report, cross, expected)
        cross.pair(row.get("task_id"), line_no, report)
        secret = _check_secret([("prompt", prompt), ("chosen", chosen), ("rejected", rejected)], line_no, report)
        if chosen is not None:
            _check_paths(manifest, cited_paths(chosen), line_no, report)
        variant = openai_preference_row(prompt, chosen, rejected) if None not in texts else None  # type: ignore[arg-type]
        return variant, secret

    return _verify_file(path, limit, check, cross, openai_path, _preference_variant_fields, trusted, remembered)


def verify_dataset(
    layout: Layout,
    dataset: str,
    *,
    include_review: bool = False,
    include_partial: bool = False,
    max_pairs_per_task: int = DEFAULT_MAX_PAIRS_PER_TASK,
    limit: int = DEFAULT_LIMIT,
    trusted: dict[Path, list[tuple[int, int]]] | None = None,
    remembered: Remembered | None = None,
) -> list[str]:
    """Violations in a written dataset (and its OpenAI-layout file). Empty means it holds.

    ``trusted``: byte ranges per file that are verbatim copies of bytes this check passed
    before (``increments.trusted_ranges``); rows there are held only to the rules that span
    rows (unique ids, pairs per task). ``remembered``: the rows a previous check passed, by
    their bytes (``verified_rows``): those too, without being parsed. Without either every
    row is checked.

    Pass the options the export ran with: a needs_human_review RAG row is a violation unless
    ``include_review``, a partially_accepted SFT row unless ``include_partial``. Paths are held
    to the repository manifest when it exists. Memory: ~20 bytes a row for the ids (the pair
    count per task for preference), and ``remembered``'s table.
    """
    manifest = RepoManifest.load(layout.repo_manifest)
    if dataset == "rag":
        return verify_rag(
            layout.rag_file, include_review=include_review, manifest=manifest, limit=limit, trusted=trusted,
            remembered=remembered,
        )  # fmt: skip
    if dataset == "sft":
        return verify_sft(
            layout.sft_file,
            include_partial=include_partial,
            manifest=manifest,
            openai_path=layout.sft_openai_file,
            limit=limit,
            trusted=trusted,
            remembered=remembered,
        )
    if dataset == "preference":
        return verify_preference(
            layout.preference_file, max_pairs_per_task=max_pairs_per_task, manifest=manifest,
            openai_path=layout.preference_openai_file, limit=limit, trusted=trusted, remembered=remembered,
        )  # fmt: skip
    raise ValueError(f"unknown dataset {dataset!r}")
