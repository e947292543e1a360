"""The parent index on disk, so the score stage's memory does not grow with the number of tasks.

``joins.ParentIndex`` keeps every join key's groups (category -> count and up to
``MAX_PARENT_IDS`` ids) in dicts: at a million evidence rows that is ~230k keys and ~440k ids,
a few hundred MB of Python objects. ``DiskParentIndex`` answers the same two questions
``joins.key_judgement`` asks (``_groups`` and the ``_judged`` cache) from files instead:

- ``parents.blob``: one record per join key, ``orjson.dumps(["<namespace>=<key>", {category:
  [count, ids]}])``, in no particular order;
- ``parents.dir``: the directory, sorted by an 8-byte digest of the key text (``key_digest``):
  all digests (u64), then every record's offset (u64) and length (u32), little-endian. It is the
  only part held in memory (20 bytes a key); a lookup is a bisection and one ``pread``. Two keys
  whose digests collide both stay in the directory: a record is used only when its stored key
  text is the one looked up.

Built two ways. A full run spills every parent (``add``) to 256 bucket files by key, unsorted,
and ``finish`` groups one bucket at a time (memory: one bucket's parents) into the blob, then
sorts the directory. An incremental run loads a stored index and keeps the keys its new verdict
rows touch in an overlay (decoded groups, in memory: they are the run's new rows); ``persist``
then writes a new blob (the old bytes copied in the kernel, the overlay's records appended) and
a new directory. Records the overlay replaced stay in the blob as garbage until it is over half
of it, when the blob is rewritten with live records only.

A worker process that scores extraction files looks parents up in the same files: ``snapshot``
gives the directory and the overlay as plain values, ``reader`` opens them there (read only).

What a row inherits depends only on its key's groups, and the groups hold the same count and
the same smallest ids however the parents were read (``ParentRefs``), so the judgements are the
ones the in-memory index gives (``test_scoring_parentstore.py`` holds the two to each other).
The stored files are named, with their sha256, by ``state.json`` (``state.py``), which checks
them on load: the index is part of a cache, and any doubt means a full rescore.
"""

import bisect
import hashlib
import os
import shutil
import tempfile
import zlib
from array import array
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import orjson

from distillation_pipeline.scoring.joins import FINDING, MAX_PARENT_IDS, TASK, IndexStateError, ParentRefs

BLOB_NAME = "parents.blob"
DIRECTORY_NAME = "parents.dir"

_BUCKETS = 256
_SPILL_ENTRIES = 1 << 14  # parents buffered (all buckets together) before they are written out
_CACHE_KEYS = 1 << 12  # judgements (and key digests) kept between lookups; cleared when full
_SEP = "\x1f"
_new_refs = object.__new__


def key_digest(text: str) -> int:
    """A stable 64-bit digest of ``"<namespace>=<key>"``: CRC-32 and Adler-32 side by side.

    Not cryptographic, and it need not be: the directory never trusts a digest alone (a record
    is used only when its stored key text matches), and two keys of one extraction file that
    collide can only make an incremental run re-score that file when it need not. It is a
    quarter of the cost of an 8-byte blake2b, and computed for every key of every run."""
    data = text.encode("utf-8", "surrogatepass")
    return zlib.crc32(data) << 32 | zlib.adler32(data)


def _write_directory(path: Path, digests: array, offsets: array, lengths: array) -> str:
    """The directory file (synced, renamed into place); its sha256."""
    hasher = hashlib.sha256()
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as out:
            for values in (digests, offsets, lengths):
                out.write(values)
                hasher.update(values)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    return hasher.hexdigest()


def _sorted_by_digest(digests: array, offsets: array, lengths: array) -> tuple[array, array, array]:
    d = np.frombuffer(digests, dtype="<u8")
    order = np.argsort(d, kind="stable")
    out = []
    for values, dtype, code in ((digests, "<u8", "Q"), (offsets, "<u8", "Q"), (lengths, "<u4", "I")):
        arranged = array(code)
        arranged.frombytes(np.frombuffer(values, dtype=dtype)[order].tobytes())
        out.append(arranged)
    return out[0], out[1], out[2]


def _decode_groups(text: str, record: bytes) -> dict[str, ParentRefs] | None:
    """The groups of ``record`` if it is ``text``'s record, None if it is another key's."""
    try:
        stored_text, packed = orjson.loads(record)
        if stored_text != text:
            return None
        return _unpacked(packed)
    except (orjson.JSONDecodeError, AttributeError, TypeError, IndexError, ValueError) as exc:
        raise IndexStateError(f"parent index entry {text}: {exc}") from None


def _unpacked(packed: dict) -> dict[str, ParentRefs]:
    """``{category: [count, ids]}`` (a record's groups) as ``ParentRefs``."""
    groups = {}
    for category, (count, ids) in packed.items():
        refs = groups[category] = _new_refs(ParentRefs)
        refs.count, refs.ids = count, ids  # ids: a fresh list from orjson, sorted when written
        if not isinstance(count, int) or not isinstance(ids, list):
            raise TypeError("count and ids expected")
    return groups


def _record(text: str, groups: dict[str, ParentRefs]) -> bytes:
    return orjson.dumps([text, {category: refs.to_state() for category, refs in groups.items()}])


@dataclass(frozen=True)
class IndexSnapshot:
    """A finished index as plain values, for a worker process to look parents up in
    (``DiskParentIndex.reader``): its blob's path, its directory, and its overlay's groups."""

    blob: str
    parents: int
    digests: bytes
    offsets: bytes
    lengths: bytes
    overlay: bytes  # orjson of {"<namespace>=<key>": {category: [count, ids]}}


class DiskParentIndex:
    """The lookup side of ``joins.ParentIndex`` (``add``, ``_groups``, ``_judged``, ``parents``)."""

    def __init__(self, workdir: Path | None, parents: int = 0) -> None:
        self.parents = parents
        self._judged: dict[tuple[str, str], object] = {}  # joins.key_judgement's cache
        self._digest_memo: dict[str, int] = {}
        self._workdir = workdir  # building: spill buckets and the blob live here until persisted
        self._digests = array("Q")
        self._offsets = array("Q")
        self._lengths = array("I")
        self._blob: Path | None = None
        self._fd: int | None = None
        self._spill: list[list[str]] | None = None  # building: parents not written out yet, by bucket
        self._spilled = 0
        self._segments: list[list[tuple[int, int, int]]] = [[] for _ in range(_BUCKETS)]  # (run, offset, length)
        self._runs = 0  # spill files written
        self._overlay: dict[str, dict[str, ParentRefs]] = {}  # incremental: keys new rows touched
        self._overlay_at: dict[str, int] = {}  # their directory position (-1: a new key)
        self.built = False  # the blob and directory in ``workdir`` are this run's (a full build)

    # --- opening -----------------------------------------------------------------------------

    @classmethod
    def building(cls, workdir: Path) -> "DiskParentIndex":
        """An empty index that takes every parent of the tree, then ``finish``."""
        workdir.mkdir(parents=True, exist_ok=True)
        index = cls(workdir)
        index._spill = [[] for _ in range(_BUCKETS)]
        return index

    @classmethod
    def stored(cls, folder: Path, entry: dict) -> "DiskParentIndex":
        """The index an earlier run persisted in ``folder``, as ``state.json`` names it (``entry``).

        ``ValueError`` (or ``OSError``) unless both files are exactly the ones named."""
        index = cls(None, entry["parents"])
        count = entry["keys"]
        hasher = hashlib.sha256()
        with open(folder / DIRECTORY_NAME, "rb") as handle:
            if os.fstat(handle.fileno()).st_size != 20 * count:
                raise ValueError("parent index directory: wrong size")
            for values in (index._digests, index._offsets, index._lengths):
                values.fromfile(handle, count)
                hasher.update(values)
        if hasher.hexdigest() != entry["directory_sha256"]:
            raise ValueError("parent index directory changed")
        index._blob = folder / BLOB_NAME
        if _file_sha256(index._blob) != entry["blob_sha256"]:
            raise ValueError("parent index blob changed")
        return index

    @classmethod
    def reader(cls, snapshot: IndexSnapshot) -> "DiskParentIndex":
        """The index ``snapshot`` was taken of, for lookups only (in another process); ``close``
        leaves its files alone."""
        index = cls(None, snapshot.parents)
        index._digests.frombytes(snapshot.digests)
        index._offsets.frombytes(snapshot.offsets)
        index._lengths.frombytes(snapshot.lengths)
        index._blob = Path(snapshot.blob)
        index._overlay = {text: _unpacked(packed) for text, packed in orjson.loads(snapshot.overlay).items()}
        return index

    def snapshot(self) -> IndexSnapshot:
        """This finished index as plain values (``reader``): ~20 bytes a key, plus the overlay."""
        if self._spill is not None or self._blob is None:
            raise RuntimeError("parent index is still being built")
        overlay = {text: {category: refs.to_state() for category, refs in groups.items()} for text, groups in self._overlay.items()}
        return IndexSnapshot(
            blob=str(self._blob),
            parents=self.parents,
            digests=self._digests.tobytes(),
            offsets=self._offsets.tobytes(),
            lengths=self._lengths.tobytes(),
            overlay=orjson.dumps(overlay),
        )

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        if self._workdir is not None:
            shutil.rmtree(self._workdir, ignore_errors=True)

    def __len__(self) -> int:
        return len(self._digests)

    # --- adding parents ----------------------------------------------------------------------

    def add(self, evidence_id: str, category: str, task_id: str | None, finding_id: str | None = None) -> None:
        """Record one verdict-bearing row. ``finding_id`` only for audits rows."""
        if self._judged:
            self._judged.clear()
        self.parents += 1
        for namespace, key in ((TASK, task_id), (FINDING, finding_id)):
            if key is None:
                continue
            text = f"{namespace}={key}"
            if self._spill is not None:
                self._spill_parent(text, category, evidence_id)
            else:
                self._groups_for_update(text).setdefault(category, ParentRefs()).add(evidence_id)

    def _spill_parent(self, text: str, category: str, evidence_id: str) -> None:
        if "\n" in text or "\n" in evidence_id or _SEP in evidence_id or _SEP in category or category.startswith("["):
            line = orjson.dumps([category, evidence_id, text]).decode()
        else:
            line = f"{category}{_SEP}{evidence_id}{_SEP}{text}"
        self._spill[hash(text) % _BUCKETS].append(line)  # type: ignore[index]
        self._spilled += 1
        if self._spilled >= _SPILL_ENTRIES:
            self._flush_spill()

    def _flush_spill(self) -> None:
        """One spill file ("run") per flush, its buckets one after another (creating files is slow)."""
        assert self._spill is not None and self._workdir is not None
        if not self._spilled:
            return
        run = self._runs
        self._runs += 1
        offset = 0
        with open(self._workdir / f"spill-{run:04d}", "wb", buffering=1 << 20) as handle:
            for bucket, lines in enumerate(self._spill):
                if lines:
                    data = ("\n".join(lines) + "\n").encode("utf-8", "surrogatepass")
                    handle.write(data)
                    self._segments[bucket].append((run, offset, len(data)))
                    offset += len(data)
                    lines.clear()
        self._spilled = 0

    def finish(self) -> None:
        """Building: every parent is in; group them into the blob and sort the directory."""
        if self._spill is None:
            return
        self._flush_spill()
        self._spill = None
        assert self._workdir is not None
        blob = self._workdir / BLOB_NAME
        digests, offsets, lengths = array("Q"), array("Q"), array("I")
        runs = [os.open(self._workdir / f"spill-{run:04d}", os.O_RDONLY) for run in range(self._runs)]
        try:
            with open(blob, "wb", buffering=1 << 20) as out:
                self._write_buckets(runs, out, digests, offsets, lengths)
                out.flush()
                os.fsync(out.fileno())
        finally:
            for fd in runs:
                os.close(fd)
        for run in range(self._runs):
            (self._workdir / f"spill-{run:04d}").unlink()
        self._digests, self._offsets, self._lengths = _sorted_by_digest(digests, offsets, lengths)
        self._blob = blob
        self.built = True

    def _write_buckets(self, runs: list[int], out, digests: array, offsets: array, lengths: array) -> None:  # type: ignore[no-untyped-def]
        """Each bucket's parents grouped by key, one record per key; memory: one bucket at a time."""
        position = 0
        for segments in self._segments:
            if not segments:
                continue
            data = b"".join(os.pread(runs[run], length, offset) for run, offset, length in segments)
            # key -> category -> every id added: what ParentRefs.add would keep is the count (all
            # of them) and the MAX_PARENT_IDS smallest distinct ids, taken once per group below.
            groups: dict[str, dict[str, list[str]]] = {}
            for line in data.decode("utf-8", "surrogatepass").split("\n")[:-1]:
                if line.startswith("["):
                    category, evidence_id, text = orjson.loads(line)
                else:
                    category, evidence_id, text = line.split(_SEP, 2)
                found = groups.get(text)
                if found is None:
                    found = groups[text] = {}
                ids = found.get(category)
                if ids is None:
                    found[category] = [evidence_id]
                else:
                    ids.append(evidence_id)
            del data
            for text, found in groups.items():
                packed = {category: [len(ids), sorted(set(ids))[:MAX_PARENT_IDS]] for category, ids in found.items()}
                record = orjson.dumps([text, packed])
                out.write(record)
                digests.append(key_digest(text))
                offsets.append(position)
                lengths.append(len(record))
                position += len(record)
            del groups

    # --- lookups (joins.key_judgement) -------------------------------------------------------

    def _groups(self, namespace: str, key: str, create: bool = False) -> dict[str, ParentRefs] | None:
        text = f"{namespace}={key}"
        if create:
            return self._groups_for_update(text)
        found = self._overlay.get(text)
        if found is None:
            found = self._stored(text)[0]
        return found

    def _groups_for_update(self, text: str) -> dict[str, ParentRefs]:
        found = self._overlay.get(text)
        if found is None:
            if self._spill is not None:
                raise RuntimeError("parent index is still being built")
            found, position = self._stored(text)
            self._overlay[text] = found if found is not None else {}
            self._overlay_at[text] = position
            found = self._overlay[text]
        return found

    def digest(self, text: str) -> int:
        found = self._digest_memo.get(text)
        return found if found is not None else key_digest(text)

    def trim_cache(self) -> None:
        """Between files: forget cached judgements once there are many (memory stays flat)."""
        if len(self._judged) > _CACHE_KEYS or len(self._digest_memo) > _CACHE_KEYS:
            self._judged.clear()
            self._digest_memo.clear()

    def _stored(self, text: str) -> tuple[dict[str, ParentRefs] | None, int]:
        """``text``'s groups from the blob (None if it has none) and its directory position (-1)."""
        if self._spill is not None:
            raise RuntimeError("parent index is still being built")
        digest = key_digest(text)
        self._digest_memo[text] = digest
        digests = self._digests
        position = bisect.bisect_left(digests, digest)
        while position < len(digests) and digests[position] == digest:
            if self._fd is None:
                self._fd = os.open(self._blob, os.O_RDONLY)  # type: ignore[arg-type]
            length = self._lengths[position]
            record = os.pread(self._fd, length, self._offsets[position])
            if len(record) != length:
                raise IndexStateError(f"parent index entry {text}: record cut short")
            found = _decode_groups(text, record)
            if found is not None:
                return found, position
            position += 1
        return None, -1

    # --- persisting --------------------------------------------------------------------------

    def persist(self, state_dir: Path, previous: dict | None) -> dict:
        """Write this index under ``state_dir`` (unless it is unchanged); what ``state.json`` keeps."""
        state_dir.mkdir(parents=True, exist_ok=True)
        blob_target = state_dir / BLOB_NAME
        if self.built:
            os.replace(self._blob, blob_target)  # type: ignore[arg-type]
            self._blob = blob_target
        elif self._overlay:
            self._write_overlay(blob_target)
        elif previous is not None:
            return previous
        return {
            "parents": self.parents,
            "keys": len(self._digests),
            "blob_sha256": _file_sha256(blob_target),
            "directory_sha256": _write_directory(state_dir / DIRECTORY_NAME, self._digests, self._offsets, self._lengths),
        }

    def _write_overlay(self, target: Path) -> None:
        """A new blob: the old bytes (or only its live records, if most are garbage), then the overlay's."""
        live = sum(self._lengths)
        size = os.stat(self._blob).st_size  # type: ignore[arg-type]
        garbage = size - live
        digests, offsets, lengths = self._digests, self._offsets, self._lengths
        fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
        tmp = Path(tmp_name)
        try:
            with os.fdopen(fd, "wb", buffering=1 << 20) as out:
                if garbage * 2 > size:
                    position = self._copy_live(out)
                else:
                    position = _copy_whole(self._blob, out, size)  # type: ignore[arg-type]
                new_digests, new_offsets, new_lengths = array("Q"), array("Q"), array("I")
                for text in sorted(self._overlay):
                    record = _record(text, self._overlay[text])
                    out.write(record)
                    at = self._overlay_at[text]
                    if at >= 0:
                        offsets[at], lengths[at] = position, len(record)
                    else:
                        new_digests.append(self.digest(text))
                        new_offsets.append(position)
                        new_lengths.append(len(record))
                    position += len(record)
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp, target)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        if new_digests:
            self._digests, self._offsets, self._lengths = _sorted_by_digest(
                digests + new_digests, offsets + new_offsets, lengths + new_lengths
            )
        self._overlay.clear()
        self._overlay_at.clear()
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        self._blob = target

    def _copy_live(self, out) -> int:  # type: ignore[no-untyped-def]
        """Only the records the directory points at, in blob order; their offsets updated."""
        order = np.argsort(np.frombuffer(self._offsets, dtype="<u8"), kind="stable")
        if self._fd is None:
            self._fd = os.open(self._blob, os.O_RDONLY)  # type: ignore[arg-type]
        position = 0
        for at in order.tolist():
            length = self._lengths[at]
            record = os.pread(self._fd, length, self._offsets[at])
            out.write(record)
            self._offsets[at] = position
            position += length
        return position


def _copy_whole(source: Path, out, size: int) -> int:  # type: ignore[no-untyped-def]
    out.flush()
    with open(source, "rb") as handle:
        remaining = size
        try:
            while remaining > 0:
                copied = os.copy_file_range(handle.fileno(), out.fileno(), remaining)
                if copied == 0:
                    break
                remaining -= copied
        except OSError:
            handle.seek(size - remaining)
            shutil.copyfileobj(handle, out, 1 << 20)
            remaining = 0
    if remaining:
        raise IndexStateError("parent index blob shorter than its stat")
    out.seek(size)
    return size


def _file_sha256(path: Path) -> str:
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def new_workdir(state_dir: Path, dry_run: bool) -> Path:
    """Where a run builds its index: beside the state (renamed into it), or in /tmp for a dry run."""
    if dry_run:
        return Path(tempfile.mkdtemp(prefix="score-index-"))
    state_dir.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=".build-", dir=state_dir))


def sweep_workdirs(state_dir: Path) -> None:
    """Build folders a killed run left (one run per root at a time: none is in use)."""
    if state_dir.is_dir():
        for path in state_dir.glob(".build-*"):
            shutil.rmtree(path, ignore_errors=True)
