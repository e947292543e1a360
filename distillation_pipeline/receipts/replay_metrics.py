"""The replay loop metrics of the run summary, reading only what was appended to the replay log.

``replay.metrics.loop_metrics`` validates every row of ``data/_kb/replay_runs.jsonl`` on every
run (a source stream: at 1M source rows, ~30 MB and most of the summary's time). The metrics
are counts over the log's lines, so this keeps the counts of the log's terminated lines in
``data/_state/replay_metrics.json`` with the sha256 of those bytes, and on the next run counts
only the lines after them. The state is a cache, never the truth: it is used only while the
bytes it counted still hash the same and the code is the code that counted them (every module
of the package, and the versions of the libraries that parse and validate); anything else
means counting the whole log again. An unterminated last line is counted every run (it may
still be being written) and never kept.

The result is ``loop_metrics(layout)``, key for key and in the same order (a test holds it).
"""

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path

import orjson
from pydantic import ValidationError

from distillation_pipeline.lib.atomic import atomic_write_bytes
from distillation_pipeline.lib.digests import file_digests
from distillation_pipeline.lib.hashing import code_digest
from distillation_pipeline.lib.jsonl import iter_raw_line_tuples
from distillation_pipeline.lib.layout import Layout
from distillation_pipeline.schemas import ReplayRun

STATE_VERSION = 1


def state_path(layout: Layout) -> Path:
    return layout.state_dir / "replay_metrics.json"


@dataclass
class Counts:
    """What ``loop_metrics`` derives its numbers from, for a run of lines of the log."""

    runs: int = 0
    grounded: int = 0  # retrieval_mode != "none"
    grounded_passed: int = 0
    baseline: int = 0  # retrieval_mode == "none"
    baseline_passed: int = 0
    escalated: int = 0
    passed: int = 0
    local_passes: int = 0  # passed and not escalated
    invalid: dict[str, int] = field(default_factory=dict)  # reason -> lines

    def add_line(self, data: bytes, terminated: bool) -> None:
        """One line, judged as ``replay.runlog.read_runs`` judges it."""
        if not data.strip():
            return
        reason = None
        try:
            row = orjson.loads(data)
            if not isinstance(row, dict) or row.get("record_type") != "replay_run.v1":
                reason = "not_a_replay_run"
            else:
                self._add_run(ReplayRun.model_validate(row))
        except orjson.JSONDecodeError:
            reason = "torn_line" if not terminated else "malformed_json"
        except ValidationError:
            reason = "schema_violation"
        if reason:
            self.invalid[reason] = self.invalid.get(reason, 0) + 1

    def _add_run(self, run: ReplayRun) -> None:
        self.runs += 1
        if run.retrieval_mode != "none":
            self.grounded += 1
            self.grounded_passed += run.validation_passed
        else:
            self.baseline += 1
            self.baseline_passed += run.validation_passed
        self.escalated += run.escalated
        self.passed += run.validation_passed
        self.local_passes += run.validation_passed and not run.escalated

    def plus(self, other: "Counts") -> "Counts":
        invalid = dict(self.invalid)
        for reason, n in other.invalid.items():
            invalid[reason] = invalid.get(reason, 0) + n
        return Counts(
            runs=self.runs + other.runs,
            grounded=self.grounded + other.grounded,
            grounded_passed=self.grounded_passed + other.grounded_passed,
            baseline=self.baseline + other.baseline,
            baseline_passed=self.baseline_passed + other.baseline_passed,
            escalated=self.escalated + other.escalated,
            passed=self.passed + other.passed,
            local_passes=self.local_passes + other.local_passes,
            invalid=invalid,
        )

    def to_json(self) -> dict:
        return {**{k: v for k, v in self.__dict__.items() if k != "invalid"}, "invalid": dict(self.invalid)}

    @classmethod
    def from_json(cls, data: object) -> "Counts | None":
        if not isinstance(data, dict):
            return None
        names = [name for name in cls.__dataclass_fields__ if name != "invalid"]
        invalid = data.get("invalid")
        if set(data) != {*names, "invalid"} or not isinstance(invalid, dict):
            return None
        values = [data[name] for name in names]
        if not all(type(v) is int and v >= 0 for v in [*values, *invalid.values()]):
            return None
        if not all(isinstance(reason, str) for reason in invalid):
            return None
        return cls(**dict(zip(names, values)), invalid=dict(invalid))

    def metrics(self) -> dict[str, float]:
        """``loop_metrics``'s dict: same keys, same order, same values."""
        metrics: dict[str, float] = {
            "replay_runs": float(self.runs),
            "replay_runs_with_retrieval": float(self.grounded),
            "replay_runs_without_retrieval": float(self.baseline),
            "replay_runs_escalated": float(self.escalated),
            "replay_runs_passed": float(self.passed),
            "replay_log_invalid_lines": float(sum(self.invalid.values())),
        }
        for key, passed, total in (
            ("replay_pass_rate", self.passed, self.runs),
            ("replay_pass_rate_with_retrieval", self.grounded_passed, self.grounded),
            ("replay_pass_rate_without_retrieval", self.baseline_passed, self.baseline),
        ):
            if total:
                metrics[key] = round(passed / total, 6)
        if self.runs:
            metrics["replay_escalation_rate"] = round(self.escalated / self.runs, 6)
            metrics["replay_local_pass_rate"] = round(self.local_passes / self.runs, 6)
        return metrics


def _load_state(layout: Layout) -> tuple[int, str, Counts] | None:
    try:
        state = orjson.loads(state_path(layout).read_bytes())
    except (OSError, orjson.JSONDecodeError):
        return None
    if not isinstance(state, dict) or state.get("version") != STATE_VERSION or state.get("code") != code_digest():
        return None
    end, sha, counts = state.get("prefix_end"), state.get("prefix_sha256"), Counts.from_json(state.get("counts"))
    if type(end) is not int or end < 0 or not isinstance(sha, str) or counts is None:
        return None
    return end, sha, counts


def _hash_prefix(log: Path, end: int) -> "hashlib._Hash | None":
    """A sha256 fed with the log's first ``end`` bytes (None if the log is shorter now)."""
    hasher = hashlib.sha256()
    with open(log, "rb") as handle:
        left = end
        while left:
            chunk = handle.read(min(left, 1 << 22))
            if not chunk:
                return None
            hasher.update(chunk)
            left -= len(chunk)
    return hasher


def replay_loop_metrics(layout: Layout, *, persist: bool = True) -> dict[str, float]:
    """``replay.metrics.loop_metrics(layout)``, counting only lines the state has not counted."""
    log = layout.replay_log
    try:
        size = os.stat(log).st_size
    except FileNotFoundError:
        return Counts().metrics()
    state = _load_state(layout)
    start, counted, hasher = 0, Counts(), hashlib.sha256()
    if state is not None and state[0] <= size:
        end, sha, kept = state
        if end == size and file_digests(layout, [log], persist=False).get(log) == sha:
            # Nothing after the counted lines, and the log's sha256 is known from its stat (the
            # collect receipt hashed it as a source): nothing to read.
            return kept.metrics()
        prefix = _hash_prefix(log, end)
        if prefix is not None and prefix.hexdigest() == sha:
            start, counted, hasher = end, kept, prefix

    # Count what follows, hashing exactly the bytes read up to the last newline: the new prefix.
    tail = Counts()
    pending = Counts()  # an unterminated last line: counted in this run's metrics, never kept
    committed_end = start
    carry = bytearray()  # bytes after the last newline seen so far (at most one line)
    offset = start

    def on_chunk(chunk: bytes) -> None:
        nonlocal committed_end, offset
        newline = chunk.rfind(b"\n")
        if newline < 0:
            carry.extend(chunk)
        else:
            hasher.update(carry)
            hasher.update(memoryview(chunk)[: newline + 1])
            carry.clear()
            carry.extend(memoryview(chunk)[newline + 1 :])
            committed_end = offset + newline + 1
        offset += len(chunk)

    for _, data, terminated, _ in iter_raw_line_tuples(log, start=start, on_chunk=on_chunk):
        (tail if terminated else pending).add_line(data, terminated)
    kept = counted.plus(tail)
    if persist and layout.state_dir.is_dir() and (state is None or committed_end != state[0] or start != state[0]):
        payload = {
            "version": STATE_VERSION,
            "code": code_digest(),
            "prefix_end": committed_end,
            "prefix_sha256": hasher.hexdigest(),
            "counts": kept.to_json(),
        }
        atomic_write_bytes(state_path(layout), orjson.dumps(payload, option=orjson.OPT_SORT_KEYS))
    return kept.plus(pending).metrics()
