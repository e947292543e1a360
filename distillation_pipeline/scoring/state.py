"""What the score stage keeps between runs (``data/_state/score/state.json``): a cache, never the truth.

One JSON file, replaced atomically as the last step of a run that wrote something, holding:

- ``scorer_version`` and ``code``: the version stamped on every scored run and a hash of the
  scorer's source files. Either differs from this run's -> the state is ignored (full rescore),
  so an edited rule takes effect on every row even if nobody bumped the version;
- per evidence file (relative path): the bytes and lines scored, the sha256 of exactly those
  bytes, the stat fingerprint (inode, size, mtime, ctime) of the evidence file and of its scored
  mirror when they were last seen, the file's category and review-reason counts, and, for
  extraction files, the join keys its rows use;
- the parent index (``joins.ParentIndex.to_state``) over every verdict row scored so far;
- the model ledger's row and entry counts and its stat fingerprint.

Loading never raises: a missing, unreadable, corrupt or foreign file is an empty state, and the
stage then scores everything. ``clear`` removes the file before the stage replaces any scored
file, so a run killed half way leaves no state that describes the old tree.
"""

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from distillation_pipeline.lib.atomic import atomic_write_bytes
from distillation_pipeline.lib.layout import Layout
from distillation_pipeline.scoring.joins import ParentIndex

STATE_VERSION = 1
STATE_NAME = "state.json"

Fingerprint = list[int]  # [inode, size, mtime_ns, ctime_ns]: any write or replace changes it

# The modules whose code decides the bytes the stage writes.
_CODE_MODULES = (
    "distillation_pipeline.scoring.rules",
    "distillation_pipeline.scoring.joins",
    "distillation_pipeline.scoring.judgement",
    "distillation_pipeline.scoring.ledger",
    "distillation_pipeline.scoring.lines",
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
    keys: list[str] = field(default_factory=list)  # extraction files: "<namespace>=<key>" joined on

    def to_dict(self) -> dict[str, Any]:
        return {
            "bytes": self.bytes,
            "lines": self.lines,
            "sha256": self.sha256,
            "evidence": self.evidence,
            "mirror": self.mirror,
            "categories": self.categories,
            "reasons": self.reasons,
            "keys": self.keys,
        }


@dataclass
class LedgerState:
    rows: int = 0
    entries: int = 0
    file: Fingerprint | None = None


@dataclass
class ScoreState:
    files: dict[str, FileState] = field(default_factory=dict)
    parents: ParentIndex | None = None  # None: no usable state, score everything
    ledger: LedgerState | None = None
    why_empty: str = ""  # why no usable state was loaded (for the result)

    @property
    def usable(self) -> bool:
        return self.parents is not None

    @classmethod
    def empty(cls, why: str) -> "ScoreState":
        return cls(why_empty=why)

    @classmethod
    def load(cls, layout: Layout, scorer_version: str, code: str) -> "ScoreState":
        path = layout.score_state_dir / STATE_NAME
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
            files = {rel: FileState(**values) for rel, values in data["files"].items()}
            ledger = LedgerState(**data["ledger"])
            parents = ParentIndex.from_state(data["parents"])
        except (AttributeError, KeyError, TypeError, ValueError, IndexError):
            return cls.empty("score state corrupt")
        return cls(files=files, parents=parents, ledger=ledger)

    @staticmethod
    def clear(layout: Layout) -> None:
        (layout.score_state_dir / STATE_NAME).unlink(missing_ok=True)

    def save(self, layout: Layout, scorer_version: str, code: str) -> None:
        assert self.parents is not None and self.ledger is not None
        payload = {
            "state_version": STATE_VERSION,
            "scorer_version": scorer_version,
            "code": code,
            "files": {rel: self.files[rel].to_dict() for rel in sorted(self.files)},
            "ledger": self.ledger.__dict__,
            "parents": self.parents.to_state(),
        }
        atomic_write_bytes(layout.score_state_dir / STATE_NAME, orjson.dumps(payload))
