"""The rows the firewall check passed, by content: what lets the next check skip them.

A row's per-row verdict (category, provenance, content, credentials, cited paths, its id
recomputed, its OpenAI-layout twin) depends only on its bytes, its twin's bytes, the export
options, the repository manifest and the code. So after a dataset passes, the check keeps one
entry per row, ``data/_state/exports/<dataset>.verified_rows.npz``:

- ``key``: sha256 of the row's line (RAG), or of the line, ``\\n`` and its twin's line (SFT,
  preference), without their newlines: the key is the bytes, never a position or metadata;
- the row's id (``<prefix>`` + 24 hex digits, kept as 12 bytes) and, for preference, its task,
  which the rules that span rows (unique ids, pairs per task) still need.

The next check hashes every line (it reads the files anyway, to hash them whole) and looks the
keys up: a hit is a row it already passed under the same ``binding`` (options, manifest sha256,
code digest, Python), so only the rules that span rows apply to it, with the id and task taken
from here instead of parsing the row. A miss (a new row, an edited byte, another twin) is
checked whole. A table recorded under another binding, or unreadable, is ignored. Memory: ~32
bytes a row (sorted arrays), no Python object per row.
"""

import os
import re
import sys
from array import array
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from distillation_pipeline.exports.ids import ID_PREFIX
from distillation_pipeline.exports.increments import code_digest
from distillation_pipeline.lib.hashing import file_sha256
from distillation_pipeline.lib.layout import Layout

TABLE_VERSION = 1
ID_HEX = 24  # hex digits after the dataset prefix (exports/ids.py)


def table_path(layout: Layout, dataset: str) -> Path:
    return layout.export_state_dir / f"{dataset}.verified_rows.npz"


def binding(layout: Layout, dataset: str, options: dict[str, Any]) -> dict[str, Any]:
    """Everything besides a row's bytes that its per-row verdict depends on."""
    manifest = layout.repo_manifest
    return {
        "version": TABLE_VERSION,
        "dataset": dataset,
        "options": options,
        "manifest": file_sha256(manifest) if manifest.is_file() else None,  # from the bytes
        "code": code_digest(),
        "python": sys.version,
    }


def split_key(digests: bytes | bytearray) -> tuple[np.ndarray, np.ndarray]:
    """(first 8 bytes, next 8 bytes) of each 32-byte sha256 in ``digests``, as uint64 columns."""
    words = np.frombuffer(bytes(digests), dtype=">u8").reshape(-1, 4)
    return words[:, 0].astype(np.uint64), words[:, 1].astype(np.uint64)


def id_words(row_id: str, prefix: str) -> tuple[int, int] | None:
    """A canonical id (``prefix`` + 24 lowercase hex digits) as (uint64, uint32); None otherwise."""
    pattern = _CANONICAL.get(prefix)
    if pattern is None:
        pattern = _CANONICAL[prefix] = re.compile(re.escape(prefix) + "[0-9a-f]{%d}" % ID_HEX)
    if pattern.fullmatch(row_id) is None:
        return None
    at = len(prefix)
    return int(row_id[at : at + 16], 16), int(row_id[at + 16 :], 16)


_CANONICAL: dict[str, re.Pattern[str]] = {}


def id_text(prefix: str, high: int, low: int) -> str:
    return f"{prefix}{high:016x}{low:08x}"


class VerifiedRows:
    """A loaded table: look keys up in bulk; ids and tasks of the hits."""

    def __init__(self, arrays: dict[str, np.ndarray], tasks: list[str]) -> None:
        self.key_high = arrays["key_high"]
        self.key_low = arrays["key_low"]
        self.id_high = arrays["id_high"]
        self.id_low = arrays["id_low"]
        self.task = arrays["task"]
        self.tasks = tasks

    def __len__(self) -> int:
        return len(self.key_high)

    @classmethod
    def load(cls, path: Path, expected: dict[str, Any]) -> "VerifiedRows | None":
        """The table at ``path`` if it was recorded under exactly ``expected``; else None."""
        try:
            with np.load(path, allow_pickle=False) as data:
                header = orjson.loads(data["header"].tobytes())
                if header.get("binding") != expected:
                    return None
                arrays = {name: data[name] for name in ("key_high", "key_low", "id_high", "id_low", "task")}
                tasks = orjson.loads(data["tasks"].tobytes())
        except Exception:  # noqa: BLE001 (missing, damaged, not ours: any doubt means no table)
            return None
        n = len(arrays["key_high"])
        dtypes = {"key_high": np.uint64, "key_low": np.uint64, "id_high": np.uint64, "id_low": np.uint32,
                  "task": np.uint32}  # fmt: skip
        if any(a.shape != (n,) or a.dtype != dtypes[name] for name, a in arrays.items()):
            return None
        if not isinstance(tasks, list) or not all(isinstance(t, str) for t in tasks):
            return None
        if n and (arrays["task"].max() >= max(len(tasks), 1) or np.any(np.diff(arrays["key_high"]) < 0)):
            return None  # tasks out of range, or not sorted by key: not a table this module wrote
        return cls(arrays, tasks)

    def lookup(self, high: np.ndarray, low: np.ndarray) -> np.ndarray:
        """Index of each (high, low) key in the table, -1 where it is not there."""
        found = np.full(len(high), -1, dtype=np.int64)
        size = len(self.key_high)
        if not size or not len(high):
            return found
        order = np.argsort(high)  # sorted needles: each search starts where the last ended
        left = np.empty(len(high), dtype=np.int64)
        left[order] = np.searchsorted(self.key_high, high[order], side="left")
        at = np.minimum(left, size - 1)
        same_high = self.key_high[at] == high
        hit = same_high & (self.key_low[at] == low)
        found[hit] = at[hit]
        for i in np.flatnonzero(same_high & ~hit).tolist():  # a shared first half: the next ones
            j = int(left[i]) + 1
            while j < size and self.key_high[j] == high[i]:
                if self.key_low[j] == low[i]:
                    found[i] = j
                    break
                j += 1
        return found


class TableBuilder:
    """Entries for the table the check writes if the dataset passes: one per row."""

    def __init__(self) -> None:
        self._keys = bytearray()  # 32-byte sha256 per row checked whole
        self._id_high = array("Q")
        self._id_low = array("I")
        self._task = array("I")
        self._task_index: dict[str, int] = {}
        self.tasks: list[str] = []
        self._carried: list[tuple[np.ndarray, ...]] = []  # entries found again in the old table
        self._remap: np.ndarray | None = None  # old table's task number -> ours (-1: not yet)

    def __len__(self) -> int:
        return len(self._id_low) + sum(len(c[0]) for c in self._carried)

    def _task_number(self, task: str) -> int:
        number = self._task_index.get(task)
        if number is None:
            number = self._task_index[task] = len(self.tasks)
            self.tasks.append(task)
        return number

    def add_row(self, key: bytes | bytearray, words: tuple[int, int] | None, task: Any, with_task: bool) -> None:
        """A row the check just read whole, with its id as ``id_words`` gives it. Kept only in
        the shape every passing row has (an id in the dataset's form; for preference a string
        task); the file's verdict decides whether the table is written at all."""
        if words is None or (with_task and not isinstance(task, str)):
            return
        self._keys += key
        self._id_high.append(words[0])
        self._id_low.append(words[1])
        self._task.append(self._task_number(task) if with_task else 0)

    def carry(self, table: VerifiedRows, indexes: np.ndarray, numbers: np.ndarray | None) -> None:
        """Entries of the old table found again; ``numbers``: the checker's task numbers of them."""
        if numbers is not None:
            # the old table's task numbers, renumbered here (names are what carry over)
            if self._remap is None or len(self._remap) != len(table.tasks):
                self._remap = np.full(len(table.tasks), -1, dtype=np.int64)
            old = table.task[indexes]
            for number in np.unique(old[self._remap[old] < 0]).tolist():
                self._remap[number] = self._task_number(table.tasks[number])
            tasks = self._remap[old].astype(np.uint32)
        else:
            tasks = np.zeros(len(indexes), dtype=np.uint32)
        self._carried.append((table.key_high[indexes], table.key_low[indexes], table.id_high[indexes],
                              table.id_low[indexes], tasks))  # fmt: skip

    def write(self, path: Path, bound: dict[str, Any]) -> None:
        key_high, key_low = split_key(self._keys) if self._keys else (np.zeros(0, np.uint64), np.zeros(0, np.uint64))
        columns = [key_high, key_low, _array(self._id_high, np.uint64), _array(self._id_low, np.uint32),
                   _array(self._task, np.uint32)]  # fmt: skip
        if self._carried:
            columns = [np.concatenate([column, *parts]) for column, parts in zip(columns, zip(*self._carried), strict=True)]
        key_high, key_low, id_high, id_low, task = columns
        order = np.lexsort((key_low, key_high))
        header = orjson.dumps({"binding": bound, "rows": int(len(order))})
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "wb") as handle:
            np.savez(
                handle,
                header=np.frombuffer(header, dtype=np.uint8),
                key_high=key_high[order], key_low=key_low[order], id_high=id_high[order], id_low=id_low[order],
                task=task[order], tasks=np.frombuffer(orjson.dumps(self.tasks), dtype=np.uint8),
            )  # fmt: skip
            handle.flush()
            os.fsync(handle.fileno())


def _array(values: array, dtype: Any) -> np.ndarray:
    return np.frombuffer(values, dtype=dtype) if len(values) else np.zeros(0, dtype=dtype)


def commit_table(layout: Layout, dataset: str, written: str | None) -> None:
    """Put the table a passing check wrote in place (atomically); without one, drop the old."""
    if written is None:
        forget_table(layout, dataset)
        return
    os.replace(written, table_path(layout, dataset))


def forget_table(layout: Layout, dataset: str, written: str | None = None) -> None:
    table_path(layout, dataset).unlink(missing_ok=True)
    if written is not None:
        Path(written).unlink(missing_ok=True)


def prefix_of(dataset: str) -> str:
    return ID_PREFIX[dataset]
