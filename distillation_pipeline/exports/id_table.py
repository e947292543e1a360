"""Which row ids a RAG or SFT export wrote, and where each was first written.

A row whose content id an earlier position already wrote is refused (``duplicate_id``, naming
the first copy's evidence), so deciding an appended row needs every earlier id. Replaying the
previous run's ids into a fresh table cost more than anything else in an incremental export;
instead the export state keeps this table beside its partition records, and an incremental
run looks up only the rows it reads:

- ``ids.table``: a JSON header line (the partitions, by ordinal; which ids have duplicates and
  where), then four little-endian columns sorted by fingerprint: fingerprint (u64), partition
  ordinal (u32), position (u32), offset of the id's line in ``ids.details.jsonl`` (u64);
- ``ids.details.jsonl``: ``[id, evidence id of its first copy]`` per line. A fingerprint match
  is confirmed against that line, so answers are exact whatever the fingerprints do.

What a looked-up id means depends on where its first copy sits against the row at hand
(partition path, then position: the export's visiting order): earlier, the row is a duplicate;
the same place, it is that first copy read again; later, this row becomes the first, so the
partition of the old first copy and every partition holding its duplicates (their refusal
names the first copy) must be read again. A partition whose bytes changed or that vanished has
its first copies struck out, and the partitions holding their duplicates are read again too.
"""

import hashlib
from array import array
from pathlib import Path
from typing import IO

import numpy as np
import orjson

from distillation_pipeline.exports.increments import copy_range
from distillation_pipeline.lib.jsonl import pread_line

TABLE_FILE = "ids.table"
DETAILS_FILE = "ids.details.jsonl"
_MASK64 = (1 << 64) - 1
_START_SLOTS = 1 << 12
Position = tuple[str, int]  # (partition path, position in it): the export's visiting order


def fingerprint(key: str) -> int:
    """64 stable bits of an id (ids end in hex digits; anything else is hashed)."""
    try:
        return int(key[-16:], 16) & _MASK64
    except ValueError:
        return int.from_bytes(hashlib.blake2b(key.encode("utf-8"), digest_size=8).digest(), "little")


class IdTable:
    """The previous run's table, read-only, with the partitions struck out this run."""

    def __init__(self, table: Path, details: Path) -> None:
        data = table.read_bytes()
        head_end = data.index(b"\n") + 1
        header = orjson.loads(data[:head_end])
        n = int(header["count"])
        self.relatives: list[str] = header["relatives"]
        self.details_bytes: int = int(header["details_bytes"])
        # fingerprint -> partitions holding a duplicate of that id (few: duplicates are rare)
        self.holders: dict[int, list[str]] = {int(fp): rels for fp, rels in header["holders"].items()}
        view = memoryview(data)[head_end:]
        sizes = [8 * n, 4 * n, 4 * n, 8 * n]
        if len(view) != sum(sizes):
            raise ValueError("id table is not the length its header says")
        columns, start = [], 0
        for size, dtype in zip(sizes, ("<u8", "<u4", "<u4", "<u8"), strict=True):
            # copied out: after a header of any length the bytes are unaligned, and numpy then
            # buffers the whole column on every searchsorted (~135 us a lookup at 670k ids)
            columns.append(np.frombuffer(view[start : start + size], dtype=dtype).copy())
            start += size
        view.release()
        self.fingerprints, self.partitions, self.positions, self.offsets = columns
        self._ordinal = {relative: i for i, relative in enumerate(self.relatives)}
        self._struck = np.zeros(len(self.relatives), dtype=bool)
        self._details_path = details
        self._details = open(details, "rb")

    def __len__(self) -> int:
        return len(self.fingerprints)

    def close(self) -> None:
        self._details.close()

    def strike(self, relative: str) -> set[str]:
        """Forget the first copies recorded in ``relative`` (its bytes changed or it is gone).

        Returns the partitions holding duplicates of them: their refusals named those copies.
        """
        ordinal = self._ordinal.get(relative)
        if ordinal is None or self._struck[ordinal]:
            return set()
        self._struck[ordinal] = True
        affected: set[str] = set()
        for fp in self.fingerprints[self.partitions == ordinal].tolist():
            affected.update(self.holders.get(fp, ()))
        return affected

    def first(self, key: str, fp: int) -> tuple[Position, str, int] | None:
        """Where ``key`` was first written, from which evidence, and its slot in the table;
        None if it never was (or only in a struck-out partition)."""
        fingerprints = self.fingerprints
        # np.uint64, not a Python int: numpy casts the whole column for an int below 2**63
        # (~360 us a lookup at 670k ids, against ~0.7 us)
        slot = int(fingerprints.searchsorted(np.uint64(fp)))
        while slot < len(fingerprints) and int(fingerprints[slot]) == fp:
            ordinal = int(self.partitions[slot])
            if not self._struck[ordinal]:
                stored_key, evidence = self._read(int(self.offsets[slot]))
                if stored_key == key:
                    return (self.relatives[ordinal], int(self.positions[slot])), evidence, slot
            slot += 1
        return None

    def _read(self, offset: int) -> tuple[str, str]:
        key, evidence = orjson.loads(pread_line(self._details.fileno(), offset))
        return key, evidence

    def copy_details(self, sink: IO[bytes]) -> None:
        """The previous details, verbatim, so their offsets hold in the new table."""
        copy_range(self._details_path, 0, self.details_bytes, sink)

    def kept(self, replaced: list[int]) -> np.ndarray:
        """Rows of the old table the new one keeps: not struck out, not replaced this run."""
        keep = ~self._struck[self.partitions]
        keep[replaced] = False
        return keep


class IdIndex:
    """The ids written this run: exact "was it written already, from which evidence?" and the
    table the next run looks up (``finish``).

    Per id: its columns (fingerprint, partition, position, details offset: 24 bytes) and one
    8-byte hash slot holding 32 fingerprint bits and the id's row in the columns (table at most
    half full). The id and its evidence live in the details file, where a slot match is
    confirmed, so answers are exact. A full run keeps every id here (~40 bytes each; the
    first-seen table it replaces took ~64, and the columns came on top); an incremental run
    only the ids it read.
    """

    def __init__(self, table_sink: IO[bytes] | None, details: IO[bytes], previous: IdTable | None) -> None:
        self._table_sink, self._details = table_sink, details
        self._previous = previous
        self._written = 0
        if previous is not None:
            previous.copy_details(details)
            self._written = previous.details_bytes
        self._fingerprints, self._positions, self._offsets = array("Q"), array("I"), array("Q")
        self._partitions = array("I")
        self._slots = array("Q", bytes(8 * _START_SLOTS))  # (fp >> 32) << 32 | row + 1; 0 = empty
        self._relatives: list[str] = list(previous.relatives) if previous is not None else []
        self._ordinal = {relative: i for i, relative in enumerate(self._relatives)}
        self._holders: dict[int, set[str]] = (
            {fp: set(rels) for fp, rels in previous.holders.items()} if previous is not None else {}
        )
        self._pending = bytearray()
        self._replaced: list[int] = []  # slots of the previous table whose id moved

    def __len__(self) -> int:
        return len(self._fingerprints)

    def lookup(self, key: str, fp: int) -> str | None:
        """The evidence id ``key`` was first written from this run, or None."""
        slots, mask, tag = self._slots, len(self._slots) - 1, fp >> 32
        slot = fp & mask
        while (found := slots[slot]) != 0:
            if found >> 32 == tag:
                stored_key, evidence = self._read(self._offsets[(found & 0xFFFFFFFF) - 1])
                if stored_key == key:
                    return evidence
            slot = (slot + 1) & mask
        return None

    def add(self, key: str, fp: int, where: Position, evidence_id: str, replaces: int | None = None) -> None:
        """``key`` is first written at ``where`` (this run), from ``evidence_id``; ``replaces``:
        the previous table's slot of the same id, when a new row took its place as first."""
        if replaces is not None:
            self._replaced.append(replaces)
        relative, index = where
        ordinal = self._ordinal.get(relative)
        if ordinal is None:
            ordinal = self._ordinal[relative] = len(self._relatives)
            self._relatives.append(relative)
        row = len(self._fingerprints)
        self._fingerprints.append(fp)
        self._partitions.append(ordinal)
        self._positions.append(index)
        self._offsets.append(self._written)
        line = orjson.dumps([key, evidence_id]) + b"\n"
        self._pending += line
        self._written += len(line)
        if len(self._pending) >= 1 << 20:
            self._flush()
        self._place(self._slots, fp, row)
        if 2 * (row + 1) > len(self._slots):
            self._grow()

    def duplicate(self, fp: int, relative: str) -> None:
        """A duplicate of the id with fingerprint ``fp`` was refused in ``relative``."""
        self._holders.setdefault(fp, set()).add(relative)

    @staticmethod
    def _place(slots: array, fp: int, row: int) -> None:
        mask = len(slots) - 1
        slot = fp & mask
        while slots[slot] != 0:
            slot = (slot + 1) & mask
        slots[slot] = (fp >> 32) << 32 | (row + 1)

    def _grow(self) -> None:
        self._slots = array("Q", bytes(16 * len(self._slots)))  # the old slots go first
        for row, fp in enumerate(self._fingerprints):
            self._place(self._slots, fp, row)

    def _flush(self) -> None:
        self._details.write(self._pending)
        self._pending.clear()

    def _read(self, offset: int) -> tuple[str, str]:
        self._flush()
        self._details.flush()
        key, evidence = orjson.loads(pread_line(self._details.fileno(), offset))
        return key, evidence

    def finish(self) -> None:
        self._flush()
        self._slots = array("Q")  # not needed to write the table: memory back before sorting
        if self._table_sink is None:
            return
        new = [np.frombuffer(column, dtype=dtype) if len(column) else np.zeros(0, dtype=dtype)
               for column, dtype in ((self._fingerprints, "<u8"), (self._partitions, "<u4"),
                                     (self._positions, "<u4"), (self._offsets, "<u8"))]  # fmt: skip
        previous = self._previous
        if previous is not None:
            keep = previous.kept(self._replaced)
            old = [previous.fingerprints[keep], previous.partitions[keep], previous.positions[keep],
                   previous.offsets[keep]]  # fmt: skip
            columns = [np.concatenate([o, n]) for o, n in zip(old, new, strict=True)]
        else:
            columns = new
        # ties (two ids, one fingerprint) in a fixed order: lookups confirm each against its line
        order = np.lexsort((columns[3], columns[0]))
        header = {
            "count": len(order),
            "relatives": self._relatives,
            "details_bytes": self._written,
            "holders": {str(fp): sorted(rels) for fp, rels in sorted(self._holders.items())},
        }
        self._table_sink.write(orjson.dumps(header) + b"\n")
        for column in columns:
            self._table_sink.write(np.ascontiguousarray(column[order]).tobytes())
