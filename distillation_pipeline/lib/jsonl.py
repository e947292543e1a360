"""Reading JSONL the way real logs are: byte offsets, BOMs, CRLF, blank and torn lines.

``iter_raw_lines`` never decodes or parses: it yields each line's byte offset and bytes, so the
caller decides what is malformed and the offset stays exact for provenance round-trips.
"""

import json
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

BOM = b"\xef\xbb\xbf"
_CHUNK = 1 << 22  # 4 MiB reads keep syscalls rare without holding a source in memory


@dataclass(frozen=True, slots=True)
class RawLine:
    offset: int  # byte offset of the line's first byte in the file
    data: bytes  # the line without its terminator (CR stripped, BOM stripped at offset 0)
    terminated: bool  # False only for a last line with no newline after it
    end: int  # byte offset just past the line and its terminator: where the next line starts


def iter_raw_lines(path: Path, start: int = 0, max_line_bytes: int | None = None) -> Iterator[RawLine]:
    """Yield every line from byte ``start`` to EOF.

    A line longer than ``max_line_bytes`` is yielded truncated to that size with its true
    offset, so one giant line is bounded in memory instead of being assembled whole.
    """
    with open(path, "rb") as handle:
        handle.seek(start)
        offset = start
        pending = bytearray()
        pending_offset = start
        oversized = False
        while True:
            chunk = handle.read(_CHUNK)
            if not chunk:
                break
            pos = 0
            while True:
                nl = chunk.find(b"\n", pos)
                if nl < 0:
                    piece = chunk[pos:]
                    if not oversized:
                        pending += piece
                        if max_line_bytes is not None and len(pending) > max_line_bytes:
                            del pending[max_line_bytes + 1 :]
                            oversized = True
                    offset += len(piece)
                    break
                piece = chunk[pos:nl]
                if not oversized:
                    pending += piece
                    if max_line_bytes is not None and len(pending) > max_line_bytes:
                        del pending[max_line_bytes + 1 :]
                offset += len(piece) + 1
                yield RawLine(pending_offset, _clean(bytes(pending), pending_offset), True, offset)
                pending = bytearray()
                pending_offset = offset
                oversized = False
                pos = nl + 1
        if pending or oversized:
            yield RawLine(pending_offset, _clean(bytes(pending), pending_offset), False, offset)


def iter_raw_line_tuples(
    path: Path,
    start: int = 0,
    max_line_bytes: int | None = None,
    chunk_size: int = _CHUNK,
    on_chunk: Callable[[bytes], object] | None = None,
) -> Iterator[tuple[int, bytes, bool, int]]:
    """``iter_raw_lines`` as plain ``(offset, data, terminated, end)`` tuples, for hot loops.

    Same lines, same bytes, same offsets; a line that lies inside one read is sliced out of it
    directly instead of being assembled in a buffer. ``on_chunk`` sees every block of bytes as
    it is read, in order, from ``start`` to the end of the file (to hash them on the way).
    """
    limit = max_line_bytes
    with open(path, "rb") as handle:
        handle.seek(start)
        base = start  # file offset of the current chunk's first byte
        pending: bytearray | None = None  # a line begun in an earlier chunk (at most limit + 1 bytes)
        pending_offset = start
        while True:
            chunk = handle.read(chunk_size)
            if not chunk:
                break
            if on_chunk is not None:
                on_chunk(chunk)
            lines = chunk.split(b"\n")
            last = len(lines) - 1
            pos = base
            for index, data in enumerate(lines):
                if index == last:  # no newline after it in this chunk
                    if pending is None:
                        pending = bytearray()
                        pending_offset = pos
                    if limit is None or len(pending) <= limit:
                        pending += data
                        if limit is not None and len(pending) > limit:
                            del pending[limit + 1 :]
                    break
                end = pos + len(data) + 1
                if pending is not None:
                    if limit is None or len(pending) <= limit:
                        pending += data
                    data = bytes(pending)
                    line_offset = pending_offset
                    pending = None
                else:
                    line_offset = pos
                if limit is not None and len(data) > limit:
                    data = data[: limit + 1]
                if line_offset == 0 and data[:3] == BOM:
                    data = data[3:]
                if data[-1:] == b"\r":
                    data = data[:-1]
                yield line_offset, data, True, end
                pos = end
            base += len(chunk)
        if pending:
            yield pending_offset, _clean(bytes(pending), pending_offset), False, base


def _clean(data: bytes, offset: int) -> bytes:
    if offset == 0 and data.startswith(BOM):
        data = data[len(BOM) :]
    if data.endswith(b"\r"):
        data = data[:-1]
    return data


def read_line_at(path: Path, offset: int, limit: int = 1 << 26) -> bytes:
    """Re-read the line that starts at ``offset`` (for provenance round-trips)."""
    with open(path, "rb") as handle:
        handle.seek(offset)
        buf = bytearray()
        while len(buf) < limit:
            chunk = handle.read(1 << 16)
            if not chunk:
                break
            nl = chunk.find(b"\n")
            if nl >= 0:
                buf += chunk[:nl]
                break
            buf += chunk
    return _clean(bytes(buf), offset)


def pread_line(fd: int, offset: int, block: int = 256) -> bytes:
    """The bytes from ``offset`` to the next newline (or the end) of an open file, without the
    newline: for lines read back by offset, from a file still being written too (no seek, so
    the writer's position is untouched). Each further read is twice as long: a long line costs
    a few reads, not one per ``block``."""
    parts = []
    while data := os.pread(fd, block, offset):
        end = data.find(b"\n")
        if end >= 0:
            parts.append(data[:end])
            break
        parts.append(data)
        offset += len(data)
        block *= 2
    return b"".join(parts)


def iter_json_rows(path: Path) -> Iterator[dict[str, Any]]:
    """Rows of a JSONL file the pipeline itself wrote (trusted: one object per line)."""
    if not path.exists():
        return
    with open(path, "rb") as handle:
        for line in handle:
            line = line.strip()
            if line:
                yield orjson.loads(line)


def dumps_line(obj: Any) -> bytes:
    """One output line: sorted keys so that identical records are identical bytes.

    orjson refuses integers beyond 64 bits, which real logs do contain; those rows take the
    stdlib path with the same key order and separators.
    """
    try:
        return orjson.dumps(obj, option=orjson.OPT_SORT_KEYS | orjson.OPT_APPEND_NEWLINE)
    except TypeError:
        return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8") + b"\n"
