"""Writes that a crash cannot tear.

Whole files go through a temporary sibling, fsync, then ``os.replace``: a reader (or the next
run) sees the old file or the new one, never half of one. Append-only logs that several
processes share (the replay log, alerts) append whole lines under an exclusive ``flock``,
and ``repair_torn_tail`` cuts a tail left without its newline by a writer that died.
"""

import contextlib
import fcntl
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_writer(path: Path) -> Iterator[BinaryIO]:
    """Stream into a temporary file beside ``path``; it replaces ``path`` only on success."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.fchmod(fd, 0o644)  # mkstemp makes 0600; outputs are meant to be read by the UI and other users
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb", buffering=1 << 20) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: Path, data: bytes) -> None:
    with atomic_writer(path) as handle:
        handle.write(data)


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def repair_torn_tail(path: Path) -> int:
    """Cut an unterminated last line (a writer died mid-append). Returns bytes removed."""
    if not path.exists():
        return 0
    size = path.stat().st_size
    if size == 0:
        return 0
    with open(path, "r+b") as handle:
        handle.seek(size - 1)
        if handle.read(1) == b"\n":
            return 0
        # Walk back to the previous newline in blocks.
        block = 1 << 16
        pos = size
        while pos > 0:
            start = max(0, pos - block)
            handle.seek(start)
            chunk = handle.read(pos - start)
            idx = chunk.rfind(b"\n")
            if idx >= 0:
                keep = start + idx + 1
                handle.truncate(keep)
                return size - keep
            pos = start
        handle.truncate(0)
        return size


@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    """Exclusive advisory lock on ``path`` + '.lock' (created if needed)."""
    lock_path = path.with_name(path.name + ".lock")
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "a+b") as lock:
        fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock.fileno(), fcntl.LOCK_UN)


def append_lines_locked(path: Path, lines: list[bytes]) -> None:
    """Append whole lines so that concurrent writers never interleave or tear each other.

    Under the lock, a torn tail left by a writer that died is repaired first, then the lines go
    out in one ``write`` on an O_APPEND descriptor and are fsynced before the lock is released.
    """
    payload = b"".join(line if line.endswith(b"\n") else line + b"\n" for line in lines)
    path.parent.mkdir(parents=True, exist_ok=True)
    with locked(path):
        repair_torn_tail(path)
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            view = memoryview(payload)
            while view:
                written = os.write(fd, view)
                view = view[written:]
            os.fsync(fd)
        finally:
            os.close(fd)


def sweep_temp_files(directories: list[Path]) -> list[Path]:
    """Remove ``.<name>.*.tmp`` files that writers killed mid-write left behind.

    Call only while holding the lock of every writer of these directories (the root lock):
    a temp file then belongs to nobody alive.
    """
    removed = []
    for directory in directories:
        if directory.is_dir():
            for path in directory.rglob(".*.tmp"):
                path.unlink(missing_ok=True)
                removed.append(path)
    return removed
