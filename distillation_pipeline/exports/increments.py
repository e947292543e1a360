"""What an export run keeps so the next one re-reads only what changed.

Collect appends new rows at the end of partition files and the scorer appends their verdicts
at the end of the mirrors, so after a nightly increment most of each partition is a prefix the
previous export already turned into bytes. For every dataset and partition the export records
(``data/_state/exports/<dataset>.parts.jsonl``, one line per partition in path order):

- how many positions it read, and the length and sha256 of both files it read them from;
- where that partition's bytes sit in each output file it wrote (byte ranges);
- its counts.

What spans partitions is kept beside the records, in side files the header names by sha256
(``StateWriter.side_file``): RAG and SFT their ids (``exports/id_table.py``), preference its
pairs per task (``exports/preference.py``).

The next run reuses a partition's prefix only when all of it still holds: the files still
start with exactly those bytes (sha256 of the prefix), the previous outputs are exactly the
bytes that state describes (sha256 in the header, ``<dataset>.json``), the options, the
repository manifest and the export code are the same, and the dataset agrees (for RAG and SFT:
no row read this run took the place of one of the prefix's first copies). Then the prefix's output
bytes are copied from the previous file and only the positions after it are parsed. Anything
else, and any doubt, means the partition is read from its first line: the state is a cache,
never the truth, and the output is byte-identical to a run without it (tested).
"""

import hashlib
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from distillation_pipeline.exports.candidates import SourceFiles
from distillation_pipeline.lib.atomic import StagedFile, atomic_write_bytes, staged_writer
from distillation_pipeline.lib.digests import file_digests, file_entries, prefix_entries, remember_digests
from distillation_pipeline.lib.hashing import HashingSink, code_digest, file_sha256
from distillation_pipeline.lib.layout import Layout

STATE_VERSION = 2  # 2: preference pairs kept per task (side file), not run refs per partition


@dataclass
class PartitionRecord:
    """One dataset's view of one partition, as a run exported it."""

    relative: str
    positions: int
    evidence_bytes: int
    evidence_sha256: str
    scored_bytes: int
    scored_sha256: str
    ranges: list[list[int]]  # per output file of the dataset: [start, end) of this partition's bytes
    counts: dict[str, Any]
    # per output file: the bytes of this partition copied this run from a previous output ([]
    # if none); if the header says those outputs had passed the firewall check
    # (``copied_verified``), the check need not rescan them
    copied: list[list[int]] = field(default_factory=list)

    def to_json(self) -> bytes:
        return orjson.dumps(self.__dict__) + b"\n"


@dataclass(frozen=True)
class FileWindow:
    """The bytes of a partition's two files that a run read: what a later prefix must match."""

    positions: int
    evidence_bytes: int
    evidence_sha256: str
    scored_bytes: int
    scored_sha256: str


def partition_window(
    source: SourceFiles, positions: int, sizes: tuple[int, int], prefixes: "PrefixCheck"
) -> FileWindow | None:
    """The window a run just read, if a later run could reuse it: whole lines in both files.

    ``sizes`` are the evidence and scored sizes the read saw (checked unchanged around it), so
    bytes a writer outside the root lock appends after the read are never counted as read.
    """
    evidence_size, scored_size = sizes
    if not _ends_with_newline(source.evidence, evidence_size) or not _ends_with_newline(source.scored, scored_size):
        return None
    evidence_sha256 = prefixes.sha256(source.evidence, evidence_size)
    scored_sha256 = prefixes.sha256(source.scored, scored_size)
    if evidence_sha256 is None or scored_sha256 is None:
        return None
    return FileWindow(positions, evidence_size, evidence_sha256, scored_size, scored_sha256)


def _ends_with_newline(path: Path, size: int) -> bool:
    if size == 0:
        return True
    try:
        with open(path, "rb") as handle:
            handle.seek(size - 1)
            return handle.read(1) == b"\n"
    except FileNotFoundError:
        return False


class PrefixCheck:
    """Does a partition's file still start with the bytes a record says? Memoised per run.

    ``prefetch`` looks every whole file up in the digest cache in one call (one load of the
    cache, not one per file), and every prefix the score stage recorded as it hashed it
    (``lib.digests.prefix_entries``); either answer is used only while the file's (size, mtime,
    inode, ctime) are still the ones it was taken under. Anything else is hashed from the bytes.
    """

    def __init__(self, layout: Layout) -> None:
        self._layout = layout
        self._known: dict[tuple[Path, int], str | None] = {}
        self._whole: dict[Path, tuple[tuple, str]] = {}
        self._prefix: dict[Path, tuple[tuple, int, str]] = {}

    def prefetch(self, paths: list[Path]) -> None:
        before = {path: _state(path) for path in paths}
        existing = [path for path, state in before.items() if state]
        # file_entries: one realpath per directory, not one per file (~800 partitions, two files each)
        entries = file_entries(self._layout, existing, persist=False)
        for path, (_, _, digest) in entries.items():
            if _state(path) == before[path]:
                self._whole[path] = (before[path], digest)  # type: ignore[assignment]
        self._prefix.update(prefix_entries(self._layout, existing))

    def holds(self, source: SourceFiles, record: PartitionRecord) -> bool:
        return (
            self.sha256(source.evidence, record.evidence_bytes) == record.evidence_sha256
            and self.sha256(source.scored, record.scored_bytes) == record.scored_sha256
        )

    def sha256(self, path: Path, length: int) -> str | None:
        """sha256 of the first ``length`` bytes of ``path``; None if it is shorter."""
        whole = self._whole.get(path)
        if whole is not None and whole[0][0] == length:
            if _state(path) == whole[0]:
                return whole[1]
        key = (path, length)
        if key not in self._known:
            prefix = self._prefix.get(path)
            if prefix is not None and prefix[1] == length and _state(path) == prefix[0]:
                self._known[key] = prefix[2]
            else:
                self._known[key] = _sha256_of_prefix(self._layout, path, length)
        return self._known[key]


def _state(path: Path) -> tuple[int, int, int, int] | None:
    try:
        stat = os.stat(path)
    except FileNotFoundError:
        return None
    return stat.st_size, stat.st_mtime_ns, stat.st_ino, stat.st_ctime_ns


def _sha256_of_prefix(layout: Layout, path: Path, length: int) -> str | None:
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        return None
    if size < length:
        return None
    if size == length:  # the whole file: the digest cache usually has it
        return file_digests(layout, [path], persist=False).get(path)
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        left = length
        while left:
            chunk = handle.read(min(left, 1 << 20))
            if not chunk:
                return None
            digest.update(chunk)
            left -= len(chunk)
    return digest.hexdigest()


# ------------------------------------------------------------------------------------------
# the state files
# ------------------------------------------------------------------------------------------


def _header_path(layout: Layout, dataset: str) -> Path:
    return layout.export_state_dir / f"{dataset}.json"


def _parts_path(layout: Layout, dataset: str) -> Path:
    return layout.export_state_dir / f"{dataset}.parts.jsonl"


def _side_path(layout: Layout, dataset: str, name: str) -> Path:
    return layout.export_state_dir / f"{dataset}.{name}"


def _expected_header(layout: Layout, dataset: str, options: dict[str, Any], code: str) -> dict[str, Any]:
    manifest = file_digests(layout, [layout.repo_manifest]).get(layout.repo_manifest)
    return {"version": STATE_VERSION, "dataset": dataset, "options": options, "manifest": manifest, "code": code}


class StaleOutput(RuntimeError):
    """A previous output's bytes are not the ones the export state names (edited behind the
    exporter's back without changing its size, mtime or ctime): nothing copied can stand."""


class OldOutput:
    """A previous output, read once front to back: copies are served from it in order and its
    sha256 is taken on the way, so what was copied is proven against the bytes, not file
    metadata, without a second read (``StateReader.confirm``)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.used = False
        self._cursor = 0
        self._in_order = True
        self._digest = hashlib.sha256()
        self._handle: Any = None

    def copy(self, start: int, end: int, sink: Any) -> None:
        self.used = True
        if start < self._cursor:  # out of order: copied directly, hashed whole at the end
            self._in_order = False
            copy_range(self.path, start, end, sink)
            return
        self._advance(start, None)
        self._advance(end, sink)

    def _advance(self, until: int | None, sink: Any) -> None:
        if self._handle is None:
            self._handle = open(self.path, "rb")
        fd = self._handle.fileno()
        while until is None or self._cursor < until:
            want = 1 << 22 if until is None else min(until - self._cursor, 1 << 22)
            chunk = os.pread(fd, want, self._cursor)
            if not chunk:
                if until is None:
                    return
                raise StaleOutput(f"{self.path} is shorter than its recorded range")
            self._digest.update(chunk)
            if sink is not None:
                sink.write(chunk)
            self._cursor += len(chunk)

    def sha256(self) -> str:
        """The file's sha256, from its bytes (the rest is read now)."""
        try:
            if not self._in_order:
                return file_sha256(self.path)
            self._advance(None, None)
            return self._digest.hexdigest()
        finally:
            if self._handle is not None:
                self._handle.close()


class StateReader:
    """The previous run's records of one dataset, read in partition order as the pass needs them."""

    def __init__(self, layout: Layout, dataset: str, options: dict[str, Any], outputs: list[Path], code: str) -> None:
        self._records: Iterator[PartitionRecord] = iter(())
        self._next: PartitionRecord | None = None
        self.valid = False
        self._claimed = False
        self._old: dict[Path, OldOutput] = {}
        header = _load_header(layout, dataset)
        # no state, or one recorded under other options, manifest or code: read everything
        if header is None or any(header.get(k) != v for k, v in _expected_header(layout, dataset, options, code).items()):
            return
        parts = _parts_path(layout, dataset)
        recorded_outputs = header.get("outputs", {})
        current = file_digests(layout, [*outputs, parts])
        if current.get(parts) != header.get("parts_sha256") or any(
            current.get(path) != recorded_outputs.get(layout.relative(path)) for path in outputs
        ):
            return  # the previous outputs or the state are not what the header names
        self.valid = True
        self._layout, self._dataset, self._sides = layout, dataset, header.get("side_sha256") or {}
        self._recorded = {path: recorded_outputs.get(layout.relative(path)) for path in outputs}
        self._old = {path: OldOutput(path) for path in outputs}
        # Bytes copied from outputs the firewall check passed may skip its rescan next time:
        # claimed here when the check's marker names the very bytes this state names, proven
        # by ``confirm`` from the bytes the copies read.
        self._claimed = _check_passed(layout, dataset, options, recorded_outputs)
        self._records = _read_records(parts)
        self._next = next(self._records, None)

    def copy(self, path: Path, start: int, end: int, sink: Any) -> None:
        """Copy bytes [start, end) of the previous output ``path`` (in order, per file)."""
        self._old[path].copy(start, end, sink)

    def confirm(self) -> bool:
        """After the pass: every previous output copied from was exactly the bytes the state
        names (else ``StaleOutput``). Returns whether the copies come from files the firewall
        check passed, so the next check may trust them."""
        for path, old in self._old.items():
            if old.used and old.sha256() != self._recorded[path]:
                raise StaleOutput(f"{path} changed behind the exporter's back; its next run reads everything")
        return self._claimed

    def side_file(self, name: str) -> Path | None:
        """A file the dataset kept beside its partition records (``StateWriter.side_file``), if
        it is exactly what the header names; None if the state is invalid or it is not."""
        if not self.valid or name not in self._sides:
            return None
        path = _side_path(self._layout, self._dataset, name)
        return path if file_digests(self._layout, [path]).get(path) == self._sides[name] else None

    def record(self, relative: str) -> PartitionRecord | None:
        """The record of ``relative``; call in sorted order (records are a merge-join, not a dict)."""
        while self._next is not None and self._next.relative < relative:
            self._next = next(self._records, None)
        if self._next is not None and self._next.relative == relative:
            return self._next
        return None


def _load_header(layout: Layout, dataset: str) -> dict[str, Any] | None:
    try:
        header = orjson.loads(_header_path(layout, dataset).read_bytes())
    except (OSError, orjson.JSONDecodeError):
        return None
    return header if isinstance(header, dict) else None


def _read_records(path: Path) -> Iterator[PartitionRecord]:
    with open(path, "rb") as handle:
        for line in handle:
            try:
                yield PartitionRecord(**orjson.loads(line))
            except (orjson.JSONDecodeError, TypeError):
                return  # a damaged line ends the reuse; the rest is read from the files


@dataclass
class StateCommit:
    """A dataset's state, staged (``StateWriter.prepare``) and put in place with its outputs
    (``apply``): the parts file and side files first, then the header that names their sha256
    and the outputs', so a crash in between leaves a state the next run refuses. Plain values,
    so a worker process that exported the dataset can hand it to the process that commits."""

    layout: Layout
    dataset: str
    staged: list[StagedFile]
    digests: dict[Path, str]  # sha256 of each staged file, by its target
    header: bytes

    def apply(self) -> None:
        for staged in self.staged:
            staged.commit()
        remember_digests(self.layout, self.digests)  # after the renames: keyed by the files' stat
        atomic_write_bytes(_header_path(self.layout, self.dataset), self.header)

    def discard(self) -> None:
        """The export failed: drop the staged files and the header (next run: full)."""
        for staged in self.staged:
            staged.discard()
        _header_path(self.layout, self.dataset).unlink(missing_ok=True)


class StateWriter:
    """This run's records of one dataset; committed only after its outputs are in place."""

    def __init__(self, layout: Layout, dataset: str, options: dict[str, Any], code: str) -> None:
        self._layout = layout
        self._dataset = dataset
        self._header = _expected_header(layout, dataset, options, code)
        layout.export_state_dir.mkdir(parents=True, exist_ok=True)
        self._writer = staged_writer(_parts_path(layout, dataset))
        handle, self._staged = self._writer.__enter__()
        self._handle = HashingSink(handle)
        self._sides: dict[str, tuple[Any, StagedFile, HashingSink]] = {}  # name -> (writer, staged, its sink)
        self._prepared: StateCommit | None = None

    def side_file(self, name: str) -> HashingSink:
        """A file of this dataset's own to keep beside the partition records (e.g. preference
        pairs per task). Written to a temporary file; committed with the header, which names
        its sha256, so a crash between the two leaves a state the next run refuses."""
        writer = staged_writer(_side_path(self._layout, self._dataset, name))
        handle, staged = writer.__enter__()
        sink = HashingSink(handle)  # read back while written (id index): mkstemp opens read-write
        self._sides[name] = (writer, staged, sink)
        return sink

    def add(self, record: PartitionRecord) -> None:
        self._handle.write(record.to_json())

    def prepare(self, output_digests: dict[Path, str], copied_verified: bool = False) -> StateCommit:
        """The state for outputs with these sha256, staged and synced, for ``StateCommit.apply``."""
        self._writer.__exit__(None, None, None)
        staged, digests = [self._staged], {self._staged.target: self._handle.hexdigest()}
        sides = {}
        for name, (writer, side, sink) in self._sides.items():
            writer.__exit__(None, None, None)
            sides[name] = digests[side.target] = sink.hexdigest()
            staged.append(side)
        header = {
            **self._header,
            "parts_sha256": self._handle.hexdigest(),
            "side_sha256": sides,
            "outputs": {self._layout.relative(path): digest for path, digest in output_digests.items()},
            "output_order": [self._layout.relative(path) for path in output_digests],
            "copied_verified": copied_verified,  # the ``copied`` ranges come from checked files
        }
        self._prepared = StateCommit(
            self._layout, self._dataset, staged, digests, orjson.dumps(header, option=orjson.OPT_SORT_KEYS)
        )
        return self._prepared

    def abandon(self) -> None:
        """The export failed: drop the temporary parts file and the header (next run: full)."""
        if self._prepared is not None:
            self._prepared.discard()
            return
        exc = RuntimeError("export abandoned")
        self._writer.__exit__(RuntimeError, exc, None)  # the writer removes its temp file
        for writer, _, _ in self._sides.values():
            writer.__exit__(RuntimeError, exc, None)
        _header_path(self._layout, self._dataset).unlink(missing_ok=True)


# ------------------------------------------------------------------------------------------
# the firewall check's verifications
# ------------------------------------------------------------------------------------------


def _verified_path(layout: Layout, dataset: str) -> Path:
    return layout.export_state_dir / f"{dataset}.verified.json"


def files_digest(paths: list[Path]) -> dict[Path, str]:
    """sha256 read from the bytes, never from the (size, mtime, inode, ctime) cache: trust in
    the firewall must not rest on file metadata (review). Taken before a verification,
    ``record_verified`` then vouches only for these bytes."""
    return {path: file_sha256(path) for path in paths if path.is_file()}


def record_verified(
    layout: Layout, dataset: str, options: dict[str, Any], files: list[Path], before: dict[Path, str]
) -> bool:
    """The firewall check found no violation in exactly these files (their sha256 is kept).

    ``before``: the sha256 of exactly the bytes the check read, hashed as it read them. The
    marker vouches for those digests and nothing else: if a writer outside the root lock
    changed a file while the check ran, the file no longer hashes to them, and everything that
    relies on the marker (``_check_passed``, ``trusted_ranges``) compares it with digests taken
    from the bytes. So the files are not read a third time here (~1.2 GB at 1M rows). Returns
    whether a marker was written: not when the check did not read every file.
    """
    digests = {path: before[path] for path in files if path in before}
    if len(digests) != len(files):
        forget_verified(layout, dataset)
        return False
    marker = {**_expected_header(layout, dataset, options, code_digest()),
              "files": {layout.relative(path): digests.get(path) for path in files}}  # fmt: skip
    layout.export_state_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(_verified_path(layout, dataset), orjson.dumps(marker, option=orjson.OPT_SORT_KEYS))
    return True


def forget_verified(layout: Layout, dataset: str) -> None:
    _verified_path(layout, dataset).unlink(missing_ok=True)


def _check_passed(layout: Layout, dataset: str, options: dict[str, Any], outputs: dict[str, str]) -> bool:
    """Did the firewall check pass, under these options and code, on exactly the bytes these
    outputs' sha256 name? (Whether the files still hold them is proven from their bytes.)"""
    try:
        marker = orjson.loads(_verified_path(layout, dataset).read_bytes())
    except (OSError, orjson.JSONDecodeError):
        return False
    if not isinstance(marker, dict) or any(marker.get(k) != v for k, v in _expected_header(layout, dataset, options, code_digest()).items()):
        return False
    files = marker.get("files") or {}
    return bool(files) and all(outputs.get(rel) == digest for rel, digest in files.items())


def trusted_ranges(
    layout: Layout, dataset: str, options: dict[str, Any], known: dict[Path, str] | None = None
) -> dict[Path, list[tuple[int, int]]]:
    """Byte ranges of this dataset's current files that are verbatim copies of verified bytes.

    Only when the export state describes exactly the files on disk now (their sha256), was
    written by this export code, and under the same options and manifest; otherwise nothing.
    ``known``: sha256 the caller just read from the bytes (``files_digest``), not hashed again.
    """
    header = _load_header(layout, dataset)
    # The same code digest also covers verify.py: bytes verified under other rules are not trusted.
    if header is None or any(header.get(k) != v for k, v in _expected_header(layout, dataset, options, code_digest()).items()):
        return {}
    if header.get("copied_verified") is not True:  # copied from files no check had passed
        return {}
    order = [layout.root / rel for rel in header.get("output_order", [])]
    known = known or {}
    current = {**files_digest([p for p in [*order, _parts_path(layout, dataset)] if p not in known]), **known}
    if not order or current.get(_parts_path(layout, dataset)) != header.get("parts_sha256"):
        return {}
    if any(current.get(path) != header["outputs"].get(layout.relative(path)) for path in order):
        return {}
    ranges: dict[Path, list[tuple[int, int]]] = {path: [] for path in order}
    for record in _read_records(_parts_path(layout, dataset)):
        for path, window in zip(order, record.copied, strict=False):
            if window:
                ranges[path].append((window[0], window[1]))
    return {path: found for path, found in ranges.items() if found}


def counts_delta(after: dict[str, Any], before: dict[str, Any]) -> dict[str, Any]:
    """What one partition added to a participant's counts (ints, and dicts of ints)."""
    delta: dict[str, Any] = {}
    for key, value in after.items():
        if isinstance(value, dict):
            old = before.get(key, {})
            delta[key] = {k: v - old.get(k, 0) for k, v in value.items() if v != old.get(k, 0)}
        else:
            delta[key] = value - before.get(key, 0)
    return delta


def counts_of(result: Any, fields: tuple[str, ...]) -> dict[str, Any]:
    """A snapshot of the named count fields of an ``ExportResult`` (dicts copied)."""
    return {name: dict(value) if isinstance(value, dict) else value for name in fields
            for value in [getattr(result, name)]}  # fmt: skip


def add_counts(result: Any, delta: dict[str, Any]) -> None:
    """Add a partition's recorded ``counts_delta`` to the same fields of an ``ExportResult``."""
    for name, value in delta.items():
        if isinstance(value, dict):
            target = getattr(result, name)
            for key, n in value.items():
                target[key] = target.get(key, 0) + n
        else:
            setattr(result, name, getattr(result, name) + value)


def copy_range(source: Path, start: int, end: int, sink: Any) -> None:
    """Copy bytes [start, end) of a previous output into this run's sink."""
    with open(source, "rb") as handle:
        left, offset = end - start, start
        while left:
            chunk = os.pread(handle.fileno(), min(left, 1 << 22), offset)
            if not chunk:
                raise OSError(f"{source} is shorter than its recorded range")
            sink.write(chunk)
            offset += len(chunk)
            left -= len(chunk)
