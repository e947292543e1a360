"""Canonical JSON and the hashes built on it.

``sig_hash`` must be the same for a row however its keys were ordered or spaced when written,
so it hashes the canonical form: keys sorted at every depth, no insignificant whitespace.
orjson's OPT_SORT_KEYS sorts recursively; the stdlib fallback covers what orjson refuses
(integers beyond 64 bits), with the same separators.
"""

import functools
import hashlib
import importlib.metadata
import json
from collections.abc import Iterable
from pathlib import Path
from typing import IO, Any

import orjson

_CANON = orjson.OPT_SORT_KEYS
# Libraries whose behaviour shapes output bytes and verdicts (serialisation, validation).
_CODE_LIBRARIES = ("orjson", "pydantic", "pydantic_core")


def canonical_json(obj: Any) -> bytes:
    try:
        return orjson.dumps(obj, option=_CANON)
    except TypeError:
        return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def canonical_sha256(obj: Any) -> bytes:
    """sha256 digest (raw bytes) of ``canonical_json(obj)``: ``sig_hash`` is its hex form."""
    try:
        canonical = orjson.dumps(obj, option=_CANON)
    except TypeError:
        canonical = canonical_json(obj)
    return hashlib.sha256(canonical).digest()


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sig_hash(row: Any) -> str:
    return sha256_hex(canonical_json(row))


def file_sha256(path: Path, chunk_size: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(chunk_size):
            digest.update(chunk)
    return digest.hexdigest()


def file_sha256_with_prefix(path: Path, prefix_length: int, chunk_size: int = 1 << 20) -> tuple[str | None, str]:
    """(sha256 of the first ``prefix_length`` bytes, or None if the file is shorter; sha256 of
    the whole file), in one read."""
    digest = hashlib.sha256()
    prefix = None
    left = prefix_length
    with open(path, "rb") as handle:
        while left > 0 and (chunk := handle.read(min(chunk_size, left))):
            digest.update(chunk)
            left -= len(chunk)
        if left == 0:
            prefix = digest.hexdigest()
        while chunk := handle.read(chunk_size):
            digest.update(chunk)
    return prefix, digest.hexdigest()


def aggregate_hash(entries: Iterable[tuple[str, str]]) -> str:
    """Order-independent hash over (relative path, sha256) pairs.

    Sorting first makes it independent of listing order; including the path makes two trees
    with the same contents under different names hash differently.
    """
    digest = hashlib.sha256()
    for path, file_hash in sorted(entries):
        digest.update(path.encode("utf-8"))
        digest.update(b"\0")
        digest.update(file_hash.encode("ascii"))
        digest.update(b"\n")
    return digest.hexdigest()


@functools.lru_cache(maxsize=1)
def code_digest() -> str:
    """The code that decides output bytes and verdicts: every module of the package and the
    versions of the libraries that serialise and validate. The caches kept under
    ``data/_state/`` are bound to it: any change means doing the work again (a deploy rebuilds
    once, then resumes). Hashing only some modules missed, e.g., a change in ``lib/jsonl.py``."""
    digest = hashlib.sha256()
    package = Path(__file__).resolve().parents[1]
    for path in sorted(package.rglob("*.py")):
        digest.update(path.relative_to(package).as_posix().encode() + b"\0" + path.read_bytes())
    for name in _CODE_LIBRARIES:
        try:
            digest.update(f"{name}=={importlib.metadata.version(name)}".encode())
        except importlib.metadata.PackageNotFoundError:
            digest.update(f"{name}==?".encode())
    return digest.hexdigest()


class HashingSink:
    """Passes writes through to a file and hashes them: its sha256 and size without reading it
    back. ``flush``/``fileno`` let a writer read back what it wrote (the exports' id index)."""

    __slots__ = ("_inner", "_digest", "size")

    def __init__(self, inner: IO[bytes]) -> None:
        self._inner = inner
        self._digest = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> int:
        self._digest.update(data)
        self.size += len(data)
        return self._inner.write(data)

    def flush(self) -> None:
        self._inner.flush()

    def fileno(self) -> int:
        return self._inner.fileno()

    def hexdigest(self) -> str:
        return self._digest.hexdigest()
