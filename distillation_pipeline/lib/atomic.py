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
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from distillation_pipeline.lib.hashing import HashingSink


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _temp_sibling(target: Path) -> tuple[int, Path]:
    """A new temporary file beside ``target`` (``.<name>.<random>.tmp``, which
    ``sweep_temp_files`` removes if we are killed), open for writing, readable by all."""
    fd, name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.fchmod(fd, 0o644)  # mkstemp makes 0600; outputs are meant to be read by the UI and other users
    return fd, Path(name)


@dataclass(frozen=True)
class StagedFile:
    """A complete, synced temporary file waiting to replace ``target`` (``staged_writer``).
    Plain values, so a worker process can hand it to the process that commits."""

    temporary: Path
    target: Path

    def commit(self) -> None:
        os.replace(self.temporary, self.target)
        _fsync_dir(self.target.parent)

    def discard(self) -> None:
        self.temporary.unlink(missing_ok=True)


@contextlib.contextmanager
def staged_writer(path: Path) -> Iterator[tuple[BinaryIO, StagedFile]]:
    """The first half of ``atomic_writer``: stream into a temporary sibling of ``path``, synced
    when the block succeeds and removed if it fails. Putting it in place is the caller's
    ``StagedFile.commit``, once every file that must change with it is staged too."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temporary = _temp_sibling(path)
    staged = StagedFile(temporary, path)
    try:
        with os.fdopen(fd, "wb", buffering=1 << 20) as handle:
            yield handle, staged
            handle.flush()
            os.fsync(handle.fileno())
    except BaseException:
        staged.discard()
        raise


@contextlib.contextmanager
def atomic_writer(path: Path) -> Iterator[BinaryIO]:
    """Stream into a temporary file beside ``path``; it replaces ``path`` only on success."""
    with staged_writer(path) as (handle, staged):
        yield handle
    try:
        staged.commit()
    except BaseException:
        staged.discard()
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


def _copy_prefix(source: Path, sink: HashingSink, length: int) -> None:
    """The first ``length`` bytes of ``source`` into ``sink``, through user space so they are
    hashed on the way (cheaper than a kernel copy plus reading the new file back for its digest)."""
    with open(source, "rb") as handle:
        remaining = length
        while remaining > 0:
            chunk = handle.read(min(remaining, 1 << 22))
            if not chunk:
                raise OSError(f"{source} is shorter than the {length} bytes to copy")
            sink.write(chunk)
            remaining -= len(chunk)


class BatchedReplace:
    """Many whole-file replacements with two ``os.sync()`` calls instead of two fsyncs per file.

    ``stage`` writes (and hashes) each new content to a temporary sibling of its target (``.<name>.*.tmp``,
    which ``sweep_temp_files`` removes if we are killed); ``commit`` syncs once, renames each
    temporary over its target, then syncs once more so the renames are durable. Each target is,
    at any moment of a crash, its old or its new content, never torn. ``discard`` removes the
    temporaries and the folders that staging created, leaving the tree as it was.
    """

    def __init__(self, stop_at: Path) -> None:
        self._stop_at = stop_at  # the outermost folder staging may create (and discard remove)
        self._staged: list[tuple[Path, Path]] = []
        self._created: list[Path] = []

    def __len__(self) -> int:
        return len(self._staged)

    def _open_temp(self, target: Path) -> tuple[int, Path]:
        missing = []
        folder = target.parent
        while not folder.exists():
            missing.append(folder)
            if folder == self._stop_at or folder.parent == folder:
                break
            folder = folder.parent
        target.parent.mkdir(parents=True, exist_ok=True)
        self._created += reversed(missing)
        return _temp_sibling(target)

    def stage(
        self, target: Path, data: bytes, keep_prefix_of: Path | None = None, prefix_length: int = 0
    ) -> tuple[str | None, str]:
        """Stage ``target``'s new content: ``prefix_length`` bytes of ``keep_prefix_of``, then
        ``data``. Returns the sha256 of the kept prefix (None if none) and of the whole content."""
        fd, tmp = self._open_temp(target)
        self._staged.append((tmp, target))
        prefix_sha256 = None
        with open(fd, "wb") as handle:
            sink = HashingSink(handle)
            if keep_prefix_of is not None and prefix_length:
                _copy_prefix(keep_prefix_of, sink, prefix_length)
                prefix_sha256 = sink.hexdigest()
            sink.write(data)
        return prefix_sha256, sink.hexdigest()

    def commit(self) -> None:
        if not self._staged:
            return
        os.sync()  # every temporary is on disk before any target points at it
        for tmp, target in self._staged:
            os.replace(tmp, target)
        os.sync()  # and the renames are durable before the caller records them anywhere
        self._staged.clear()
        self._created.clear()

    def hand_over(self) -> tuple[list[tuple[str, str]], list[str]]:
        """Give up what is staged, as plain values, for another process's batch to ``adopt``:
        a worker stages its share of a stage, and the stage's batch commits (or discards) it
        with its own, in the same two syncs."""
        staged = [(str(tmp), str(target)) for tmp, target in self._staged]
        created = [str(folder) for folder in self._created]
        self._staged.clear()
        self._created.clear()
        return staged, created

    def adopt(self, staged: list[tuple[str, str]], created: list[str]) -> None:
        """Take over what another batch handed over (``hand_over``)."""
        self._staged.extend((Path(tmp), Path(target)) for tmp, target in staged)
        self._created.extend(Path(folder) for folder in created)

    def discard(self) -> None:
        for tmp, _ in self._staged:
            tmp.unlink(missing_ok=True)
        self._staged.clear()
        for folder in reversed(self._created):
            with contextlib.suppress(OSError):
                folder.rmdir()  # only if empty: something else may have been put there since
        self._created.clear()
