"""Progress lines for ``distill``: one line as each step starts and ends, on stderr.

A Dagster logger (so it sees the same events the UI does) that prints only step starts,
successes and failures. On a terminal the lines are styled by rich; piped or in CI they are
plain text, one line per event, so logs stay greppable.
"""

import logging
import time

import dagster as dg
from rich.console import Console

_LABELS = {
    "evidence": "collect",
    "scored_runs": "score",
    "datasets": "export rag, sft, preference (one pass)",
    "run_summary": "receipts, summary, drift",
    "replay_task": "replay",
}


class _ProgressHandler(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.console = Console(stderr=True, highlight=False)
        self.started: dict[str, float] = {}

    def emit(self, record: logging.LogRecord) -> None:
        meta = getattr(record, "dagster_meta", None) or {}
        event = meta.get("dagster_event")
        step = meta.get("step_key")
        if event is None or not step:
            return
        kind = event.event_type_value
        label = _LABELS.get(step) or f"checks {step.replace('_', ' ')}"
        if kind == "STEP_START":
            self.started[step] = time.monotonic()
            self.console.print(f"[dim]…[/dim] {label}")
        elif kind in ("STEP_SUCCESS", "STEP_FAILURE"):
            elapsed = time.monotonic() - self.started.pop(step, time.monotonic())
            mark = "[green]✓[/green]" if kind == "STEP_SUCCESS" else "[red]✗[/red]"
            self.console.print(f"{mark} {label} ({elapsed:.1f} s)")


@dg.logger(description="Step start/finish lines on stderr for the distill command.")
def progress_logger(init_context: dg.InitLoggerContext) -> logging.Logger:
    logger = logging.Logger("distill.progress", level=logging.DEBUG)
    logger.addHandler(_ProgressHandler())
    return logger
