"""Datasets behind the contamination firewall (spec section 5): RAG, SFT, preference, quarantine.

``export_rag`` / ``export_sft`` / ``export_preference`` read the mirrored evidence and
scored-run files and rewrite their dataset, its OpenAI-layout variant and its quarantine
atomically; ``verify_dataset`` re-reads what was written for the blocking checks. No Dagster
here: the assets in ``defs/`` wrap these functions.
"""

from distillation_pipeline.exports.preference import (
    DEFAULT_MAX_PAIRS_PER_TASK,
    export_preference,
)
from distillation_pipeline.exports.rag import export_rag
from distillation_pipeline.exports.result import ExportResult
from distillation_pipeline.exports.sft import export_sft
from distillation_pipeline.exports.verify import (
    verify_dataset,
    verify_preference,
    verify_rag,
    verify_sft,
)

__all__ = [
    "DEFAULT_MAX_PAIRS_PER_TASK",
    "ExportResult",
    "export_preference",
    "export_rag",
    "export_sft",
    "verify_dataset",
    "verify_preference",
    "verify_rag",
    "verify_sft",
]
