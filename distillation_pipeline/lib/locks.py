"""One pipeline run per data root at a time.

``distill`` takes the root lock for the whole run and refuses, with a clear message, when
another run holds it. Each stage also takes it (waiting) around its writes, which covers runs
launched from the UI whose steps execute in separate processes; inside a process that already
holds the lock, taking it again is a no-op.
"""

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

from distillation_pipeline.lib.layout import Layout
from distillation_pipeline.lib.timestamps import iso_utc, now_utc

_HELD: set[Path] = set()


class RootBusy(RuntimeError):
    """Another pipeline run holds this data root."""


def lock_path(layout: Layout) -> Path:
    return layout.state_dir / "pipeline.lock"


@contextlib.contextmanager
def root_lock(layout: Layout, *, wait: bool) -> Iterator[None]:
    path = lock_path(layout)
    if path in _HELD:
        yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as handle:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "unknown holder"
            raise RootBusy(f"another distill run holds {path} ({holder}); wait for it or stop it") from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()} since {iso_utc(now_utc())}\n")
        handle.flush()
        _HELD.add(path)
        try:
            yield
        finally:
            _HELD.discard(path)
            handle.seek(0)
            handle.truncate()
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
