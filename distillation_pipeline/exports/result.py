"""What one export did, in counts that add up."""

from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class ExportResult:
    """Counts of one export run.

    RAG and SFT: every record read ends in exactly one of written, quarantined or ineligible,
    so ``records_in == written + quarantined + sum(ineligible.values())``.

    Preference writes pairs, not records, so its balance is over runs: every run read is in a
    written pair (``runs_paired``), refused on its own (``runs_quarantined``), ineligible by
    stream, or left out of every pair (``unpaired``, by why: no counterpart, category that
    cannot be on either side, no task id, over the per-task cap, or its pairs were refused).
    ``quarantined`` there counts quarantine rows: refused runs plus refused pairs.
    """

    dataset: str
    records_in: int = 0
    written: int = 0
    quarantined: int = 0
    per_reason: dict[str, int] = field(default_factory=dict)
    per_category: dict[str, int] = field(default_factory=dict)
    ineligible: dict[str, int] = field(default_factory=dict)
    inputs: list[Path] = field(default_factory=list)
    outputs: list[Path] = field(default_factory=list)
    checks_not_run: list[str] = field(default_factory=list)
    dry_run: bool = False
    options: dict[str, object] = field(default_factory=dict)
    reused_positions: int = 0  # positions whose output was copied from the previous run (increments.py)
    reused_tasks: int = 0  # preference: tasks whose pairs were copied from the previous run
    # for the dataset card: written rows by evidence stream (preference: both sides of a pair),
    # and rows written to the second (OpenAI) layout
    written_streams: dict[str, int] = field(default_factory=dict)
    variants_written: int = 0
    # preference only
    runs_paired: int = 0
    runs_quarantined: int = 0
    unpaired: dict[str, int] = field(default_factory=dict)

    @property
    def ineligible_total(self) -> int:
        return sum(self.ineligible.values())

    def balance(self) -> tuple[bool, str]:
        """Whether the counts are conserved, and the equation that says so (for receipts)."""
        if self.dataset == "preference":
            unpaired = sum(self.unpaired.values())
            total = self.runs_paired + self.runs_quarantined + self.ineligible_total + unpaired
            equation = (
                f"runs in {self.records_in} = paired {self.runs_paired} + quarantined {self.runs_quarantined}"
                f" + ineligible {self.ineligible_total} + unpaired {unpaired}"
            )
        else:
            total = self.written + self.quarantined + self.ineligible_total
            equation = (
                f"records in {self.records_in} = written {self.written} + quarantined {self.quarantined}"
                f" + ineligible {self.ineligible_total}"
            )
        return total == self.records_in, equation

    def count_ineligible(self, stream: str, n: int = 1) -> None:
        self.ineligible[stream] = self.ineligible.get(stream, 0) + n

    def count_written(self, category: str) -> None:
        self.written += 1
        self.per_category[category] = self.per_category.get(category, 0) + 1
