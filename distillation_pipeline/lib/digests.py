"""sha256 of files, remembered across stages and runs by (size, mtime, inode).

Every stage receipt hashes its inputs and outputs, and the same evidence tree is an output of
collect and an input of four later stages: without a cache a million-row run hashed several
gigabytes over and over. A cached digest is reused only while the file's size, mtime (in
nanoseconds) and inode are unchanged: our writers replace files (new inode) or append (new
size), and an in-place edit changes the mtime, so a stale digest is not served.
"""

import os
from pathlib import Path

import orjson

from distillation_pipeline.lib.atomic import atomic_write_bytes
from distillation_pipeline.lib.hashing import file_sha256
from distillation_pipeline.lib.layout import Layout

_MEMORY: dict[tuple[str, int, int, int], str] = {}


def _cache_file(layout: Layout) -> Path:
    return layout.state_dir / "digests.json"


def _load(layout: Layout) -> dict[str, list]:
    path = _cache_file(layout)
    try:
        return orjson.loads(path.read_bytes())
    except (OSError, orjson.JSONDecodeError):
        return {}


def file_digests(layout: Layout, paths: list[Path]) -> dict[Path, str]:
    """sha256 for each existing file in ``paths``; the on-disk cache is updated if it changed."""
    stored = _load(layout)
    changed = False
    result: dict[Path, str] = {}
    for path in paths:
        try:
            stat = os.stat(path)
        except FileNotFoundError:
            continue
        rel = layout.relative(path)
        key = (rel, stat.st_size, stat.st_mtime_ns, stat.st_ino)
        digest = _MEMORY.get(key)
        if digest is None:
            entry = stored.get(rel)
            if entry and tuple(entry[:3]) == key[1:]:
                digest = entry[3]
            else:
                digest = file_sha256(path)
        _MEMORY[key] = digest
        if stored.get(rel) != [*key[1:], digest]:
            stored[rel] = [*key[1:], digest]
            changed = True
        result[path] = digest
    if changed and layout.state_dir.exists():
        live = {rel: entry for rel, entry in stored.items() if (layout.root / rel).exists()}
        atomic_write_bytes(_cache_file(layout), orjson.dumps(live, option=orjson.OPT_SORT_KEYS))
    return result


def remember_digests(layout: Layout, digests: dict[Path, str]) -> None:
    """Record the sha256 of files a writer hashed while writing them (now on disk, replaced)."""
    stored = _load(layout)
    for path, digest in digests.items():
        try:
            stat = os.stat(path)
        except FileNotFoundError:
            continue
        key = (layout.relative(path), stat.st_size, stat.st_mtime_ns, stat.st_ino)
        _MEMORY[key] = digest
        stored[key[0]] = [*key[1:], digest]
    if layout.state_dir.exists():
        live = {rel: entry for rel, entry in stored.items() if (layout.root / rel).exists()}
        atomic_write_bytes(_cache_file(layout), orjson.dumps(live, option=orjson.OPT_SORT_KEYS))
