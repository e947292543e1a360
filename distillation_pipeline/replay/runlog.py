"""The replay log: one ``replay_run.v1`` row per run, appended to ``data/_kb/replay_runs.jsonl``.

The log is a source stream (``replay_runs``) the next pipeline run collects as evidence, so it
is append-only and written whole lines at a time under a lock: runs launched side by side by
the sensor, the UI and the command line never interleave or tear each other's rows.
"""

from collections.abc import Iterator
from dataclasses import dataclass, field

import orjson
from pydantic import ValidationError

from distillation_pipeline.lib.atomic import append_lines_locked
from distillation_pipeline.lib.jsonl import dumps_line, iter_raw_lines
from distillation_pipeline.lib.layout import Layout
from distillation_pipeline.schemas import ReplayRun


def append_run(layout: Layout, run: ReplayRun) -> None:
    # Validate the dump, not only the model: what lands in the log must read back as a ReplayRun.
    line = dumps_line(run.model_dump(mode="json"))
    ReplayRun.model_validate_json(line)
    append_lines_locked(layout.replay_log, [line])


@dataclass
class LogRead:
    runs: list[ReplayRun] = field(default_factory=list)
    invalid: dict[str, int] = field(default_factory=dict)  # reason -> lines


def read_runs(layout: Layout) -> LogRead:
    """Every valid run in the log; lines that are not one are counted by reason, never dropped silently."""
    result = LogRead()
    if not layout.replay_log.exists():
        return result
    for line in iter_raw_lines(layout.replay_log):
        if not line.data.strip():
            continue
        reason = None
        try:
            row = orjson.loads(line.data)
            if not isinstance(row, dict) or row.get("record_type") != "replay_run.v1":
                reason = "not_a_replay_run"
            else:
                result.runs.append(ReplayRun.model_validate(row))
        except orjson.JSONDecodeError:
            reason = "torn_line" if not line.terminated else "malformed_json"
        except ValidationError:
            reason = "schema_violation"
        if reason:
            result.invalid[reason] = result.invalid.get(reason, 0) + 1
    return result


def iter_runs(layout: Layout) -> Iterator[ReplayRun]:
    yield from read_runs(layout).runs
