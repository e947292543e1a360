"""Exact "have I seen this id before, and with what?" in a few dozen bytes per id.

An export refuses a row whose content id it already wrote and names the evidence the first
copy came from. A ``dict[str, str]`` of every id does that in ~200 bytes per row, so memory
grew with the input (~130 MB for the 670k RAG rows of a 1M-row run). Here each id costs one
16-byte slot of two arrays (at most half full, so ~32 bytes): a 64-bit fingerprint and
the byte offset of a JSON line ``[id, value]`` in an unlinked temporary file. A fingerprint
match is confirmed against that line, so the answer is exact; the rare id whose fingerprint
collides with another id's lives in a small dict.
"""

from array import array
import tempfile
from pathlib import Path

import orjson

from distillation_pipeline.lib.jsonl import pread_line

_START_SLOTS = 1 << 16
_MASK64 = (1 << 64) - 1


class FirstSeen:
    """``first(id, value)``: None the first time an id is offered, then that first value."""

    def __init__(self, spill_dir: Path | None = None) -> None:
        self._spill = tempfile.TemporaryFile(dir=spill_dir)  # unlinked: nothing to clean up
        self._written = 0  # bytes appended to the spill file
        # array.array, not numpy: indexing one slot from Python is ~3x cheaper
        self._fingerprints = _zeros(_START_SLOTS)  # 0 = empty slot
        self._offsets = _zeros(_START_SLOTS)
        self._used = 0
        self._collided: dict[str, str] = {}
        self._pending = bytearray()  # spill lines not yet written (one write per batch)

    def __len__(self) -> int:
        return self._used + len(self._collided)

    def close(self) -> None:
        self._spill.close()

    def get(self, key: str) -> str | None:
        """The first value of ``key``, or None if it was never offered (nothing is remembered)."""
        if key in self._collided:
            return self._collided[key]
        fingerprint = (hash(key) & _MASK64) | 1
        mask = len(self._fingerprints) - 1
        slot = fingerprint & mask
        while (found := self._fingerprints[slot]) != 0:
            if found == fingerprint:
                stored_key, stored_value = self._read(self._offsets[slot])
                return stored_value if stored_key == key else None
            slot = (slot + 1) & mask
        return None

    def first(self, key: str, value: str) -> str | None:
        # str hashes are cached on the object and only steer memory layout: the answer never
        # depends on them (every match is confirmed), so per-process hash seeds do not matter.
        fingerprint = (hash(key) & _MASK64) | 1
        mask = len(self._fingerprints) - 1
        slot = fingerprint & mask
        fingerprints = self._fingerprints
        while True:
            found = fingerprints[slot]
            if found == 0:
                break
            if found == fingerprint:
                stored_key, stored_value = self._read(self._offsets[slot])
                if stored_key == key:
                    return stored_value
                # Another id with the same fingerprint holds the slot (each fingerprint is in
                # the table once): this id is looked up, or remembered, in the small dict.
                if key in self._collided:
                    return self._collided[key]
                self._collided[key] = value
                return None
            slot = (slot + 1) & mask
        fingerprints[slot] = fingerprint
        self._offsets[slot] = self._append(key, value)
        self._used += 1
        if 2 * self._used > len(fingerprints):
            self._grow()
        return None

    def _append(self, key: str, value: str) -> int:
        offset = self._written
        line = orjson.dumps([key, value]) + b"\n"  # JSON-escaped: any id or value round-trips
        self._pending += line
        self._written += len(line)
        if len(self._pending) >= 1 << 20:
            self._flush()
        return offset

    def _flush(self) -> None:
        if self._pending:
            self._spill.write(self._pending)
            self._spill.flush()
            self._pending.clear()

    def _read(self, offset: int) -> tuple[str, str]:
        self._flush()
        key, value = orjson.loads(pread_line(self._spill.fileno(), offset, block=4096))
        return key, value

    def _grow(self) -> None:
        old_fingerprints, old_offsets = self._fingerprints, self._offsets
        size = 2 * len(old_fingerprints)
        fingerprints, offsets = _zeros(size), _zeros(size)
        mask = size - 1
        for fingerprint, offset in zip(old_fingerprints, old_offsets, strict=True):
            if fingerprint == 0:
                continue
            slot = fingerprint & mask
            while fingerprints[slot] != 0:
                slot = (slot + 1) & mask
            fingerprints[slot] = fingerprint
            offsets[slot] = offset
        self._fingerprints, self._offsets = fingerprints, offsets


def _zeros(slots: int) -> array:
    return array("Q", bytes(8 * slots))
