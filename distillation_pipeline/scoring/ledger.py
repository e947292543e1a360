"""model_trust rows aggregate into the model ledger: one entry per (model, task kind).

The ledger is the scored output of the ledger class. It is written beside the scored runs
(``Layout.model_ledger``) and is never a training-data candidate: model_trust rows get no
``ScoredRun`` line at all, so no exporter that reads scored runs can ever meet one.

The trust window of an entry runs from the earliest ``window_start`` to the latest
``window_end`` of its rows; a row that carries no window counts with its event time.
"""

from datetime import datetime

from distillation_pipeline.lib.jsonl import dumps_line
from distillation_pipeline.schemas import ModelLedgerEntry

MEAN_DIGITS = 6  # a trust score is not meaningful past this, and fewer digits read better


class LedgerError(ValueError):
    """A model_trust row without the fields the ledger is keyed on."""


class _Accumulator:
    __slots__ = ("samples", "total", "low", "high", "start", "end", "evidence_ids")

    def __init__(self, start: datetime, end: datetime) -> None:
        self.samples = 0
        self.total = 0.0
        self.low = 1.0
        self.high = 0.0
        self.start = start
        self.end = end
        self.evidence_ids: list[str] = []


class LedgerBuilder:
    def __init__(self) -> None:
        self._entries: dict[tuple[str, str], _Accumulator] = {}
        self.rows = 0

    def add(
        self,
        evidence_id: str,
        model: str | None,
        task_kind: str | None,
        trust_score: float | None,
        event_at: datetime,
        window_start: datetime | None = None,
        window_end: datetime | None = None,
    ) -> None:
        if model is None or task_kind is None or trust_score is None:
            raise LedgerError(f"{evidence_id}: model_trust needs model, task_kind and trust_score")
        start = window_start or event_at
        end = window_end or event_at
        acc = self._entries.get((model, task_kind))
        if acc is None:
            acc = self._entries[(model, task_kind)] = _Accumulator(start, end)
        self.rows += 1
        acc.samples += 1
        acc.total += trust_score
        acc.low = min(acc.low, trust_score)
        acc.high = max(acc.high, trust_score)
        acc.start = min(acc.start, start)
        acc.end = max(acc.end, end)
        acc.evidence_ids.append(evidence_id)

    def entries(self) -> list[ModelLedgerEntry]:
        """Validated entries, sorted by (model, task kind) so the file is bit-stable."""
        out = []
        for (model, task_kind), acc in sorted(self._entries.items()):
            # Rounding may step a hair outside [min, max] when every sample is equal; clamp.
            mean = min(max(round(acc.total / acc.samples, MEAN_DIGITS), acc.low), acc.high)
            out.append(
                ModelLedgerEntry(
                    model=model,
                    task_kind=task_kind,
                    samples=acc.samples,
                    mean_trust=mean,
                    min_trust=acc.low,
                    max_trust=acc.high,
                    window_start=acc.start,
                    window_end=acc.end,
                    evidence_ids=sorted(acc.evidence_ids),
                )
            )
        return out


def ledger_bytes(entries: list[ModelLedgerEntry]) -> bytes:
    return b"".join(dumps_line(entry.model_dump(mode="json")) for entry in entries)
