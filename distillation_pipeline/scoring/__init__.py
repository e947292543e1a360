"""Stage ``score`` (spec section 4): one deterministic category per evidence record, no model calls.

``rules.score_record`` is the pure per-record scorer; ``joins`` lets extraction rows inherit
from their verdict-bearing parents; ``ledger`` aggregates model_trust rows; ``stage`` runs the
whole evidence tree into ``data/scored-runs/``, one line at a time through ``lines``, and
re-scores only what changed since the last run using ``state`` (``data/_state/score/``).
"""

from distillation_pipeline.scoring.joins import ParentIndex
from distillation_pipeline.scoring.judgement import Judgement
from distillation_pipeline.scoring.ledger import LedgerBuilder
from distillation_pipeline.scoring.report import render_matrix
from distillation_pipeline.scoring.rules import SCORER_VERSION, judge, judge_record, score_record
from distillation_pipeline.scoring.stage import (
    EvidenceError,
    ScoreResult,
    build_parent_index,
    evidence_files,
    score_evidence_tree,
    scored_path,
)

__all__ = [
    "SCORER_VERSION",
    "EvidenceError",
    "Judgement",
    "LedgerBuilder",
    "ParentIndex",
    "ScoreResult",
    "build_parent_index",
    "evidence_files",
    "judge",
    "judge_record",
    "render_matrix",
    "score_evidence_tree",
    "score_record",
    "scored_path",
]
