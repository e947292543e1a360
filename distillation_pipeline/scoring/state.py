"""What the score stage keeps between runs (``data/_state/score/``): a cache, never the truth.

``state.json``, replaced atomically as the last step of a run that wrote something, holding:

- ``scorer_version`` and ``code``: the version stamped on every scored run and a hash of the
  scorer's source files. Either differs from this run's -> the state is ignored (full rescore),
  so an edited rule takes effect on every row even if nobody bumped the version;
- per evidence file (relative path): the bytes and lines scored, the sha256 of exactly those
  bytes, the stat fingerprint (inode, size, mtime, ctime) of the evidence file and of its scored
  mirror when they were last seen, the file's category and review-reason counts, and, for
  extraction files, where in ``filekeys.bin`` the digests of the join keys its rows use are
  (``[offset, count]``: sorted unique u64 ``parentstore.key_digest`` values, 8 bytes each);
- the parent index over every verdict row scored so far: ``parents.blob`` and ``parents.dir``
  (``parentstore.py``), named here by their sha256, like ``filekeys.bin``;
- the model ledger's row and entry counts and its stat fingerprint, and, per model_trust file,
  where in ``ledger_rows.jsonl`` the ledger fields of its scored lines are (``[offset, length]``
  of one JSON line: ``[id, model, task_kind, trust_score, event_at, window_start, window_end]``
  per row, datetimes as orjson writes them), so a changed model_trust file does not make the ledger
  re-read every other one.

The side files are written (synced, renamed) before ``state.json``, and checked against the
sha256 it names when loaded: a state whose files do not match is corrupt.

Loading never raises: a missing, unreadable, corrupt or foreign file is an empty state, and the
stage then scores everything. ``clear`` removes the file before the stage replaces any scored
file, so a run killed half way leaves no state that describes the old tree.
"""

import hashlib
import os
from array import array
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from distillation_pipeline.lib.atomic import atomic_write_bytes
from distillation_pipeline.lib.layout import Layout
from distillation_pipeline.scoring.parentstore import DiskParentIndex

STATE_VERSION = 2  # 2: parent index and join keys in side files
STATE_NAME = "state.json"
KEYS_NAME = "filekeys.bin"
LEDGER_ROWS_NAME = "ledger_rows.jsonl"

Fingerprint = list[int]  # [inode, size, mtime_ns, ctime_ns]: any write or replace changes it

# The modules whose code decides the bytes the stage writes.
_CODE_MODULES = (
    "distillation_pipeline.scoring.rules",
    "distillation_pipeline.scoring.joins",
    "distillation_pipeline.scoring.judgement",
    "distillation_pipeline.scoring.ledger",
    "distillation_pipeline.scoring.lines",
    "distillation_pipeline.scoring.parentstore",
    "distillation_pipeline.scoring.stage",
    "distillation_pipeline.scoring.state",
    "distillation_pipeline.schemas",
    "distillation_pipeline.evidence.streams",
    "distillation_pipeline.lib.jsonl",
)


def fingerprint(stat: os.stat_result) -> Fingerprint:
    return [stat.st_ino, stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns]


def fingerprint_of(path: Path) -> Fingerprint | None:
    try:
        return fingerprint(path.stat())
    except OSError:
        return None


def code_fingerprint() -> str:
    """sha256 over the source of the modules that decide the output; '' if any cannot be read."""
    import importlib

    digest = hashlib.sha256()
    for name in _CODE_MODULES:
        source = getattr(importlib.import_module(name), "__file__", None)
        try:
            digest.update(Path(source).read_bytes())  # type: ignore[arg-type]
        except (OSError, TypeError):
            return ""  # unknown code: never matches, so the stage always rescores in full
    return digest.hexdigest()


@dataclass
class FileState:
    """One evidence file as last scored."""

    bytes: int = 0  # evidence bytes scored (always whole lines)
    lines: int = 0
    sha256: str = ""  # of those bytes
    evidence: Fingerprint | None = None
    mirror: Fingerprint | None = None  # None for model_trust files (they have no scored file)
    categories: dict[str, int] = field(default_factory=dict)
    reasons: dict[str, int] = field(default_factory=dict)  # needs_human_review rows by rule code
    keys: array = field(default_factory=lambda: array("Q"))  # extraction files: digests joined on, sorted
    ledger_rows: list[int] | None = None  # model_trust files: [offset, length] in ledger_rows.jsonl

    def to_dict(self, keys_at: list[int]) -> dict[str, Any]:
        return {
            "bytes": self.bytes,
            "lines": self.lines,
            "sha256": self.sha256,
            "evidence": self.evidence,
            "mirror": self.mirror,
            "categories": self.categories,
            "reasons": self.reasons,
            "keys": keys_at,
            "ledger_rows": self.ledger_rows,
        }


@dataclass
class LedgerState:
    rows: int = 0
    entries: int = 0
    file: Fingerprint | None = None


@dataclass
class ScoreState:
    files: dict[str, FileState] = field(default_factory=dict)
    parents: DiskParentIndex | None = None  # None: no usable state, score everything
    ledger: LedgerState | None = None
    why_empty: str = ""  # why no usable state was loaded (for the result)
    index: dict | None = None  # the stored index's entry in state.json (reused if unchanged)
    ledger_rows_sha256: str = ""  # of ledger_rows.jsonl as this state describes it

    def ledger_rows(self, layout: Layout) -> bytes | None:
        """``ledger_rows.jsonl`` if it is the one this state names, else None (then not used)."""
        try:
            data = (layout.score_state_dir / LEDGER_ROWS_NAME).read_bytes()
        except OSError:
            return None
        return data if self.ledger_rows_sha256 and hashlib.sha256(data).hexdigest() == self.ledger_rows_sha256 else None

    @property
    def usable(self) -> bool:
        return self.parents is not None

    @classmethod
    def empty(cls, why: str) -> "ScoreState":
        return cls(why_empty=why)

    @classmethod
    def load(cls, layout: Layout, scorer_version: str, code: str) -> "ScoreState":
        folder = layout.score_state_dir
        path = folder / STATE_NAME
        try:
            data = orjson.loads(path.read_bytes())
        except FileNotFoundError:
            return cls.empty("no score state")
        except (OSError, orjson.JSONDecodeError):
            return cls.empty("score state unreadable")
        try:
            if data.get("state_version") != STATE_VERSION:
                return cls.empty("score state from another state version")
            if data.get("scorer_version") != scorer_version:
                return cls.empty("scorer_version changed")
            if not code or data.get("code") != code:
                return cls.empty("scorer code changed")
            index = data["index"]
            keys = _checked(folder / KEYS_NAME, data["filekeys_sha256"])
            all_keys = array("Q")
            all_keys.frombytes(keys)
            del keys
            files = {}
            for rel, values in data["files"].items():
                offset, count = values.pop("keys")
                if offset < 0 or count < 0 or offset + count > len(all_keys):
                    raise ValueError("join keys out of range")
                files[rel] = FileState(**values, keys=all_keys[offset : offset + count])
            ledger = LedgerState(**data["ledger"])
            parents = DiskParentIndex.stored(folder, index)
        except (AttributeError, KeyError, TypeError, ValueError, IndexError, OSError):
            return cls.empty("score state corrupt")
        return cls(files=files, parents=parents, ledger=ledger, index=index, ledger_rows_sha256=data["ledger_rows_sha256"])

    @staticmethod
    def clear(layout: Layout) -> None:
        (layout.score_state_dir / STATE_NAME).unlink(missing_ok=True)

    def save(
        self, layout: Layout, scorer_version: str, code: str, previous_index: dict | None, ledger_rows: dict[str, bytes] | None
    ) -> None:
        """``ledger_rows``: each model_trust file's line for ``ledger_rows.jsonl``; None: the file
        this state's ``ledger_rows_sha256`` names is still right (the ledger was not rebuilt)."""
        assert self.parents is not None and self.ledger is not None
        folder = layout.score_state_dir
        index = self.parents.persist(folder, previous_index)
        if ledger_rows is not None:
            position = 0
            for rel in sorted(ledger_rows):
                self.files[rel].ledger_rows = [position, len(ledger_rows[rel])]
                position += len(ledger_rows[rel])
            rows = b"".join(ledger_rows[rel] for rel in sorted(ledger_rows))
            atomic_write_bytes(folder / LEDGER_ROWS_NAME, rows)
            self.ledger_rows_sha256 = hashlib.sha256(rows).hexdigest()
        all_keys = array("Q")
        files = {}
        for rel in sorted(self.files):
            state = self.files[rel]
            files[rel] = state.to_dict([len(all_keys), len(state.keys)])
            all_keys.extend(state.keys)
        keys = all_keys.tobytes()
        atomic_write_bytes(folder / KEYS_NAME, keys)
        payload = {
            "state_version": STATE_VERSION,
            "scorer_version": scorer_version,
            "code": code,
            "files": files,
            "ledger": self.ledger.__dict__,
            "index": index,
            "filekeys_sha256": hashlib.sha256(keys).hexdigest(),
            "ledger_rows_sha256": self.ledger_rows_sha256,
        }
        atomic_write_bytes(folder / STATE_NAME, orjson.dumps(payload))


def _checked(path: Path, sha256: str) -> bytes:
    data = path.read_bytes()
    if hashlib.sha256(data).hexdigest() != sha256:
        raise ValueError(f"{path.name} changed")
    return data
