"""sha256 of files, remembered across stages and runs by (size, mtime, inode, ctime).

Every stage receipt hashes its inputs and outputs, and the same evidence tree is an output of
collect and an input of four later stages: without a cache a million-row run hashed several
gigabytes over and over. A cached digest is reused only while the file's size, mtime (in
nanoseconds), inode and ctime are unchanged: our writers replace files (new inode) or append
(new size), and an in-place edit changes the mtime and the ctime (which, unlike the mtime, no
call can put back), so a stale digest is not served.

The cache files are written by merging under their lock: a stage may run in two processes at
once (``lib/workers``), and each keeps what it hashed without dropping the other's.
"""

import os
import stat as stat_module
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import orjson

from distillation_pipeline.lib.atomic import atomic_write_bytes, locked
from distillation_pipeline.lib.hashing import file_sha256, file_sha256_with_prefix
from distillation_pipeline.lib.layout import Layout
from distillation_pipeline.lib.workers import usable_cores

_MEMORY: dict[tuple[str, int, int, int, int], str] = {}
# Prefix digests, by the file's key: see the section at the end.
_PREFIX_MEMORY: dict[tuple[str, int, int, int, int], tuple[int, str]] = {}
# The parsed cache file, by path, with the stat it was read at: a stage that asks for digests
# of hundreds of files one at a time must not re-parse (or re-write) the file each time.
_LOADED: dict[Path, tuple[tuple[int, int, int], dict[str, list]]] = {}


def _key(rel: str, stat: os.stat_result) -> tuple[str, int, int, int, int]:
    # ctime too: an in-place edit that keeps the size and puts the mtime back (``cp -p``,
    # ``rsync -t --inplace``, ``os.utime``) still moves the ctime, which no call can set.
    return rel, stat.st_size, stat.st_mtime_ns, stat.st_ino, stat.st_ctime_ns


def _cache_file(layout: Layout) -> Path:
    return layout.state_dir / "digests.json"


def _stat_key(path: Path) -> tuple[int, int, int] | None:
    try:
        stat = os.stat(path)
    except FileNotFoundError:
        return None
    return stat.st_mtime_ns, stat.st_size, stat.st_ino


def _loaded(layout: Layout) -> dict[str, list]:
    """The parsed cache file, shared: read it, never change it (``_load`` gives a copy)."""
    path = _cache_file(layout)
    key = _stat_key(path)
    loaded = _LOADED.get(path)
    if key is not None and loaded is not None and loaded[0] == key:
        return loaded[1]
    stored = _read_json_object(path)
    if key is not None and stored:
        _LOADED[path] = (key, stored)
    return stored


def _load(layout: Layout) -> dict[str, list]:
    return dict(_loaded(layout))


def _write_live(layout: Layout, path: Path, stored: dict[str, list]) -> dict[str, list]:
    """Write ``stored`` to ``path`` less the entries whose file is gone; returns what it wrote."""
    live = {rel: entry for rel, entry in stored.items() if os.path.exists(os.path.join(layout.root, rel))}
    atomic_write_bytes(path, orjson.dumps(live, option=orjson.OPT_SORT_KEYS))
    return live


def _read_json_object(path: Path) -> dict[str, list]:
    try:
        stored = orjson.loads(path.read_bytes())
    except (OSError, orjson.JSONDecodeError):
        return {}
    return stored if isinstance(stored, dict) else {}


def _merge_into(layout: Layout, path: Path, updates: dict[str, list]) -> dict[str, list] | None:
    """Write the file at ``path`` as it is on disk now plus ``updates``, under its lock; returns
    what it wrote (None without a state directory: nothing is kept)."""
    if not updates or not layout.state_dir.exists():
        return None
    with locked(path):
        return _write_live(layout, path, {**_read_json_object(path), **updates})


def _store(layout: Layout, updates: dict[str, list]) -> None:
    path = _cache_file(layout)
    live = _merge_into(layout, path, updates)
    key = _stat_key(path)
    if live is not None and key is not None:
        _LOADED[path] = (key, live)


def _holds(entry: list | None, key: tuple[str, int, int, int, int]) -> bool:
    """Is the stored ``entry`` (size, mtime, inode, ctime, sha256) the digest of the file at ``key``?"""
    return bool(entry) and len(entry) == len(key) and tuple(entry[:-1]) == key[1:]  # type: ignore[arg-type]


def _from_cache(key: tuple[str, int, int, int, int], entry: list | None) -> str | None:
    """The digest this process or the on-disk cache holds for the file at ``key``, if any."""
    digest = _MEMORY.get(key)
    if digest is None and _holds(entry, key):
        digest = entry[-1]  # type: ignore[index]
    return digest


def _hash_file(path: Path, size: int, entry: list | None) -> tuple[str, tuple[int, str] | None]:
    """The file's sha256 from its bytes, and (length, sha256) of its old prefix if it grew since
    ``entry`` was taken and those bytes are unchanged."""
    if entry and len(entry) == 5 and isinstance(entry[0], int) and 0 < entry[0] < size:
        # The file grew since its digest was taken (an appended log, an evidence partition):
        # hash it whole, and on the way check that its old bytes are still its prefix. If
        # they are, that prefix digest is recorded for whoever proves it next (the score
        # stage, then the export), so the file is read once instead of three times.
        prefix, digest = file_sha256_with_prefix(path, entry[0])
        return digest, ((entry[0], prefix) if prefix == entry[-1] else None)
    return file_sha256(path), None


# Files to hash from their bytes are hashed two at a time when there is this much to read and a
# second core: hashlib and file reads release the GIL, so two threads use both cores. Collect's
# receipt hashes every grown evidence partition (~1.1 GB at 1M rows, ~0.9 s on one core).
THREADED_HASH_MIN_BYTES = 64 << 20


def _hash_files(jobs: list[tuple[Path, int, list | None]]) -> list[tuple[str, tuple[int, str] | None]]:
    """``_hash_file`` for each job, in order."""
    # the cores are asked last: most calls find every digest cached, or one file to hash
    if len(jobs) < 2 or sum(size for _, size, _ in jobs) < THREADED_HASH_MIN_BYTES or usable_cores() < 2:
        return [_hash_file(*job) for job in jobs]
    with ThreadPoolExecutor(max_workers=2) as pool:
        return list(pool.map(lambda job: _hash_file(*job), jobs))


def _digests_of(
    files: list[tuple[Path, str, os.stat_result]], stored: dict[str, list], prefixes: dict[Path, tuple[os.stat_result, int, str]]
) -> tuple[list[str], list[str]]:
    """Each file's sha256, in order: from this process's memory or the on-disk cache while its
    (size, mtime, inode, ctime) still match, else from its bytes (``_hash_files``). Returns the
    digests and the relative paths whose entry in ``stored`` changed. A grown file's proven old
    prefix goes into ``prefixes``."""
    keys = [_key(rel, stat) for _, rel, stat in files]
    digests = [_from_cache(key, stored.get(key[0])) for key in keys]
    missing = [i for i, digest in enumerate(digests) if digest is None]
    hashed = _hash_files([(files[i][0], keys[i][1], stored.get(keys[i][0])) for i in missing])
    for i, (digest, prefix) in zip(missing, hashed, strict=True):
        digests[i] = digest
        if prefix is not None:
            _PREFIX_MEMORY[keys[i]] = prefix
            prefixes[files[i][0]] = (files[i][2], *prefix)
    updated = []
    for key, digest in zip(keys, digests, strict=True):
        _MEMORY[key] = digest  # type: ignore[assignment]
        entry = [*key[1:], digest]
        if stored.get(key[0]) != entry:
            stored[key[0]] = entry
            updated.append(key[0])
    return digests, updated  # type: ignore[return-value]


def cached_sha256(layout: Layout, path: Path, stat: os.stat_result) -> str | None:
    """The sha256 this cache holds for ``path`` as it was at ``stat``; None (never hashed here)
    if it holds none."""
    key = _key(layout.relative(path), stat)
    digest = _MEMORY.get(key) or _from_cache(key, _loaded(layout).get(key[0]))  # no copy of the cache per file
    if digest is not None:
        _MEMORY[key] = digest
    return digest


def file_digests(layout: Layout, paths: list[Path], *, persist: bool = True) -> dict[Path, str]:
    """sha256 for each existing file in ``paths``; the on-disk cache is updated if it changed.

    ``persist=False`` keeps new digests in this process only (the next persisting call, e.g. a
    receipt's, writes them): for callers that ask file by file in a loop.
    """
    stored = _load(layout)
    files: list[tuple[Path, str, os.stat_result]] = []
    for path in paths:
        try:
            stat = os.stat(path)
        except FileNotFoundError:
            continue
        files.append((path, layout.relative(path), stat))
    prefixes: dict[Path, tuple[os.stat_result, int, str]] = {}
    digests, updated = _digests_of(files, stored, prefixes)
    if updated and persist:
        _store(layout, {rel: stored[rel] for rel in updated})
        remember_prefixes(layout, prefixes)
    return {path: digest for (path, _, _), digest in zip(files, digests, strict=True)}


def _relative_and_stat(
    layout: Layout, path: Path, real_dirs: dict[str, str], root_prefix: str
) -> tuple[str, os.stat_result] | None:
    """``(layout.relative(path), os.stat(path))`` for a regular file, None if there is none.

    ``layout.relative`` resolves the whole path (a realpath: one lstat per component) for every
    file; here a file that is not itself a symlink is its directory's realpath plus its name,
    and ``real_dirs`` remembers each directory's realpath for the caller's one batch of files.
    Anything unusual (a symlink, a relative path, a path outside the root) takes
    ``layout.relative``, so the result is the same string.
    """
    text = os.fspath(path)
    try:
        stat = os.lstat(text)
    except (FileNotFoundError, NotADirectoryError):
        return None
    head, name = os.path.split(text)
    if stat_module.S_ISLNK(stat.st_mode) or not os.path.isabs(text) or name in ("", ".", ".."):
        try:
            stat = os.stat(text)
        except (FileNotFoundError, NotADirectoryError):
            return None
        return (layout.relative(path), stat) if stat_module.S_ISREG(stat.st_mode) else None
    if not stat_module.S_ISREG(stat.st_mode):
        return None
    real_head = real_dirs.get(head)
    if real_head is None:
        real_head = real_dirs[head] = os.path.realpath(head)
    full = f"{real_head.rstrip('/')}/{name}"
    if full.startswith(root_prefix):
        return full[len(root_prefix) :], stat
    return layout.relative(path), stat


def file_entries(layout: Layout, paths: list[Path], *, persist: bool = True) -> dict[Path, tuple[str, int, str]]:
    """``(relative path, size, sha256)`` for each regular file in ``paths`` (missing ones and
    anything that is not a regular file are left out), in the order given: what a receipt
    lists. One stat per file; the sha256 comes from the same cache as ``file_digests`` (keyed
    by that stat), else from the bytes."""
    stored = _load(layout)
    files: list[tuple[Path, str, os.stat_result]] = []
    real_dirs: dict[str, str] = {}
    root_prefix = f"{str(layout.root).rstrip('/')}/"
    for path in paths:
        found = _relative_and_stat(layout, path, real_dirs, root_prefix)
        if found is not None:
            files.append((path, *found))
    prefixes: dict[Path, tuple[os.stat_result, int, str]] = {}
    digests, updated = _digests_of(files, stored, prefixes)
    if updated and persist:
        _store(layout, {rel: stored[rel] for rel in updated})
        remember_prefixes(layout, prefixes)
    return {path: (rel, stat.st_size, digest) for (path, rel, stat), digest in zip(files, digests, strict=True)}


def remember_digests(layout: Layout, digests: dict[Path, str]) -> None:
    """Record the sha256 of files a writer hashed while writing them (now on disk, replaced)."""
    updates: dict[str, list] = {}
    for path, digest in digests.items():
        try:
            stat = os.stat(path)
        except FileNotFoundError:
            continue
        key = _key(layout.relative(path), stat)
        _MEMORY[key] = digest
        updates[key[0]] = [*key[1:], digest]
    _store(layout, updates)


# ---------------------------------------------------------------------------------------------
# prefix digests
# ---------------------------------------------------------------------------------------------
# A run proves that a file it read before still starts with the bytes it read, by the sha256 of
# that prefix: the score stage for each grown evidence partition, the export for each grown
# evidence and scored partition. Those prefixes are hashed anyway by whoever reads the file
# first: collect's receipt hashes each grown evidence file whole (``_hash_file`` checks the
# old bytes on the way), and the score stage writes each grown scored file as its old bytes
# plus new lines. So they are recorded here, and at 1M rows the score stage and the export do not
# read ~1.1 GB of evidence and ~0.5 GB of scored lines again. One prefix per file, served under
# the same rule as whole-file digests: only while the file's (size, mtime, inode, ctime) are the
# ones it was recorded with.


def _prefix_cache_file(layout: Layout) -> Path:
    return layout.state_dir / "prefix_digests.json"


def _load_prefixes(layout: Layout) -> dict[str, list]:
    return _read_json_object(_prefix_cache_file(layout))


def remember_prefixes(layout: Layout, prefixes: dict[Path, tuple[os.stat_result, int, str]]) -> None:
    """Record ``path -> (stat, length, sha256 of the first length bytes)``; ``stat`` is the file's
    stat the digest holds for (taken by the caller around its hashing, or after its rename)."""
    if not prefixes:
        return
    updates: dict[str, list] = {}
    for path, (stat, length, digest) in prefixes.items():
        key = _key(layout.relative(path), stat)
        _PREFIX_MEMORY[key] = (length, digest)
        updates[key[0]] = [*key[1:], length, digest]
    _merge_into(layout, _prefix_cache_file(layout), updates)


def prefix_entries(layout: Layout, paths: list[Path]) -> dict[Path, tuple[tuple[int, int, int, int], int, str]]:
    """For each file in ``paths`` with a recorded prefix: ``((size, mtime, inode, ctime), length,
    sha256)`` as recorded. The caller serves it only while the file's stat is still that one."""
    stored: dict[str, list] | None = None
    result: dict[Path, tuple[tuple[int, int, int, int], int, str]] = {}
    real_dirs: dict[str, str] = {}
    root_prefix = f"{str(layout.root).rstrip('/')}/"
    for path in paths:
        found = _relative_and_stat(layout, path, real_dirs, root_prefix)
        if found is None:
            continue
        rel, stat = found
        key = _key(rel, stat)
        hit = _PREFIX_MEMORY.get(key)
        if hit is None:
            if stored is None:
                stored = _load_prefixes(layout)
            entry = stored.get(rel)
            if entry and len(entry) == 6 and tuple(entry[:4]) == key[1:]:
                hit = (entry[4], entry[5])
        if hit is not None:
            result[path] = (key[1:], hit[0], hit[1])  # type: ignore[assignment]
    return result
