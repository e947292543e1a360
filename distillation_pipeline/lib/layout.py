"""Every path the pipeline touches, derived from one root.

Nothing else in the code base joins path strings: a stage asks the layout. That is what lets the
same code run against a temporary directory in tests, another root on a server, or (behind the
Dagster ``DistillPaths`` resource) a mounted object store.
"""

from dataclasses import dataclass
from pathlib import Path

DATASETS = ("rag", "sft", "preference")


@dataclass(frozen=True)
class Layout:
    root: Path

    @classmethod
    def at(cls, root: str | Path) -> "Layout":
        return cls(Path(root).resolve())

    # --- sources: data/_kb/ -------------------------------------------------------------
    @property
    def kb_dir(self) -> Path:
        return self.root / "data" / "_kb"

    def source_file(self, stream: str) -> Path:
        return self.kb_dir / f"{stream}.jsonl"

    @property
    def repo_manifest(self) -> Path:
        return self.kb_dir / "repo_files.txt"

    @property
    def skips_file(self) -> Path:
        return self.kb_dir / "distillation_skips.jsonl"

    @property
    def health_report(self) -> Path:
        return self.kb_dir / "evidence_health.md"

    @property
    def replay_log(self) -> Path:
        return self.source_file("replay_runs")

    @property
    def replay_queue_dir(self) -> Path:
        return self.root / "data" / "replay_queue"

    # --- evidence and scored runs -------------------------------------------------------
    @property
    def evidence_dir(self) -> Path:
        return self.root / "data" / "evidence"

    def evidence_partition(self, event_date: str, stream: str) -> Path:
        """A stream's evidence for one event date ("YYYY-MM-DD", or an ISO time starting with one)."""
        return self.evidence_dir / event_date[0:4] / event_date[5:7] / event_date[8:10] / f"{stream}.jsonl"

    @property
    def evidence_state_file(self) -> Path:
        """Commit record of the collect stage (checkpoints and committed file lengths)."""
        return self.root / "data" / "_state" / "collect.json"

    @property
    def evidence_seen_dir(self) -> Path:
        return self.root / "data" / "_state" / "seen"

    @property
    def state_dir(self) -> Path:
        return self.root / "data" / "_state"

    @property
    def score_state_dir(self) -> Path:
        """What the score stage keeps between runs to re-score only what changed."""
        return self.state_dir / "score"

    @property
    def card_stats_file(self) -> Path:
        """Row counts and mixes of the files the exporters wrote, keyed by their sha256."""
        return self.state_dir / "card_stats.json"

    @property
    def export_state_dir(self) -> Path:
        """What the export stage keeps between runs to rebuild only changed partitions."""
        return self.state_dir / "exports"

    @property
    def scored_dir(self) -> Path:
        return self.root / "data" / "scored-runs"

    @property
    def model_ledger(self) -> Path:
        return self.scored_dir / "model_ledger.jsonl"

    # --- datasets -------------------------------------------------------------------------
    @property
    def exports_dir(self) -> Path:
        return self.root / "exports"

    @property
    def rag_file(self) -> Path:
        return self.exports_dir / "rag" / "playbooks.jsonl"

    @property
    def sft_file(self) -> Path:
        return self.exports_dir / "sft" / "instruction_response.jsonl"

    @property
    def sft_openai_file(self) -> Path:
        return self.exports_dir / "sft" / "openai_chat.jsonl"

    @property
    def preference_file(self) -> Path:
        return self.exports_dir / "preference" / "chosen_rejected.jsonl"

    @property
    def preference_openai_file(self) -> Path:
        return self.exports_dir / "preference" / "openai_dpo.jsonl"

    def dataset_file(self, dataset: str) -> Path:
        return {"rag": self.rag_file, "sft": self.sft_file, "preference": self.preference_file}[dataset]

    def quarantine_file(self, dataset: str) -> Path:
        return self.exports_dir / "quarantine" / f"{dataset}.jsonl"

    def dataset_card(self) -> Path:
        return self.exports_dir / "README.md"

    # --- receipts -------------------------------------------------------------------------
    @property
    def reports_dir(self) -> Path:
        return self.root / "reports"

    @property
    def runs_dir(self) -> Path:
        return self.reports_dir / "distillation"

    def run_dir(self, run_id: str) -> Path:
        return self.runs_dir / run_id

    @property
    def alerts_file(self) -> Path:
        return self.reports_dir / "alerts.jsonl"

    def relative(self, path: Path) -> str:
        """A path as stored in provenance and receipts: relative to the root, POSIX separators."""
        try:
            return path.resolve().relative_to(self.root).as_posix()
        except ValueError:
            return path.as_posix()
