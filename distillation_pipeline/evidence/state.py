"""The collect stage's commit record, and crash recovery from it.

Evidence partitions are appended to, not rewritten, so that a nightly run over logs that grew
by 1 % costs about 1 % of a full run. Appends are made crash-safe by a commit record
(``data/_state/collect.json``, replaced atomically as the last step of a run) that holds:

- per stream, how many source bytes were consumed and the sha256 of that prefix, so the next
  run reads only what was appended and notices a source that was rewritten or truncated;
- the committed length of every evidence file and of every stream's seen-hash file.

On start, ``recover`` cuts every file back to its committed length and deletes evidence files
the record does not know: whatever a killed run appended is undone, and the run redoes it.
"""

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from distillation_pipeline.lib.atomic import atomic_write_bytes
from distillation_pipeline.lib.hashing import file_sha256
from distillation_pipeline.lib.layout import Layout

STATE_VERSION = 1


@dataclass
class StreamState:
    consumed_bytes: int = 0
    prefix_sha256: str = ""
    rows_read: int = 0
    written: int = 0
    skipped: int = 0
    deduplicated: int = 0
    blank_lines: int = 0
    score_ready: int = 0
    seen_bytes: int = 0  # committed length of the stream's seen-hash file
    skip_reasons: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {**self.__dict__, "skip_reasons": dict(sorted(self.skip_reasons.items()))}


@dataclass
class CollectState:
    streams: dict[str, StreamState] = field(default_factory=dict)
    evidence_files: dict[str, int] = field(default_factory=dict)  # relative path -> committed bytes
    skips_sha256: str = ""  # of data/_kb/distillation_skips.jsonl as committed ("" = no file)

    @classmethod
    def load(cls, layout: Layout) -> "CollectState":
        path = layout.evidence_state_file
        if not path.exists():
            return cls()
        data = orjson.loads(path.read_bytes())
        if data.get("state_version") != STATE_VERSION:
            return cls()  # unknown layout: start over rather than misread it
        return cls(
            streams={name: StreamState(**values) for name, values in data["streams"].items()},
            evidence_files=dict(data["evidence_files"]),
            skips_sha256=data.get("skips_sha256", ""),
        )

    def save(self, layout: Layout) -> None:
        payload = {
            "state_version": STATE_VERSION,
            "streams": {name: self.streams[name].to_dict() for name in sorted(self.streams)},
            "evidence_files": dict(sorted(self.evidence_files.items())),
            "skips_sha256": self.skips_sha256,
        }
        atomic_write_bytes(layout.evidence_state_file, orjson.dumps(payload, option=orjson.OPT_INDENT_2))


def seen_file(layout: Layout, stream: str) -> Path:
    return layout.evidence_seen_dir / f"{stream}.bin"


def recover(layout: Layout, state: CollectState) -> list[str]:
    """Undo whatever an interrupted run left beyond the last commit. Returns what was repaired.

    Raises ``StateMismatch`` when committed evidence is gone or shorter than recorded; the
    caller then rebuilds from the sources rather than trusting a damaged tree.
    """
    repaired: list[str] = []
    skips = layout.skips_file
    actual = file_sha256(skips) if skips.exists() else ""
    if state.streams and actual != state.skips_sha256:
        raise StateMismatch(f"{layout.relative(skips)} differs from its commit record (edited or deleted)")
    committed = state.evidence_files
    if layout.evidence_dir.exists():
        for path in sorted(layout.evidence_dir.rglob("*.jsonl")):
            rel = layout.relative(path)
            if rel not in committed:
                path.unlink()
                repaired.append(f"removed uncommitted {rel}")
        for path in sorted(layout.evidence_dir.rglob(".*.tmp")):
            path.unlink()
    for rel, length in committed.items():
        repaired += _truncate_to(layout.root / rel, length, rel)
    for name, stream_state in state.streams.items():
        path = seen_file(layout, name)
        repaired += _truncate_to(path, stream_state.seen_bytes, layout.relative(path))
    if layout.evidence_seen_dir.exists():
        for path in layout.evidence_seen_dir.glob("*.bin"):
            if path.stem not in state.streams:
                path.unlink()
    return repaired


class StateMismatch(RuntimeError):
    """Committed files are missing or shorter than recorded: someone edited evidence by hand."""


def _truncate_to(path: Path, length: int, label: str) -> list[str]:
    size = path.stat().st_size if path.exists() else 0
    if size < length:
        raise StateMismatch(f"{label} holds {size} bytes, its commit record says {length}")
    if size > length:
        with open(path, "r+b") as handle:
            handle.truncate(length)
        return [f"truncated {label} from {size} to {length} bytes"]
    return []
