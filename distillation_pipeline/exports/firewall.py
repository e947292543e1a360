"""The exporter layer of the contamination firewall: which categories and streams a dataset admits.

The schema layer (``schemas.SftSample`` / ``RagSample`` validators) refuses a forbidden category
when a row is built; this layer refuses it before any row is built. Each holds alone: the
tests break one and check that the other still refuses. Exporters call these functions
through the module (``firewall.sft_refusal``), which is also how a test disables this layer.
"""

from distillation_pipeline.schemas import QuarantineReason

Refusal = tuple[QuarantineReason, str]

# What a dataset never admits, whatever the options (spec section 5).
SFT_NEVER = frozenset({"rejected", "needs_human_review"})
RAG_NEVER = frozenset({"rejected"})
PREFERENCE_CHOSEN = frozenset({"accepted"})
PREFERENCE_REJECTED = ("rejected", "partially_accepted")  # in pairing priority order

# Spec section 2's "text it contributes": which streams give a prompt and a response, which
# give only content, and which give no text at all.
PROMPT_RESPONSE_STREAMS = frozenset(
    {
        "scrum_reviews",
        "observer_reviews",
        "contract_analyses",
        "audit_discrepancies",
        "replay_runs",
        "auto_apply",
        "mode_experiments",
    }
)
CONTENT_STREAMS = frozenset(
    {
        "audits",
        "outcomes",
        "audit_facts",
        "distilled_facts",
        "distilled_procedures",
        "distilled_config_hints",
        "observer_escalations",
    }
)
NEVER_EXPORTED_STREAMS = frozenset({"model_trust"})  # a ledger: aggregated, never a dataset row


def rag_eligible(stream: str) -> bool:
    return stream not in NEVER_EXPORTED_STREAMS


def sft_eligible(stream: str) -> bool:
    """SFT needs an instruction and a response; content-only streams cannot make a row."""
    return stream in PROMPT_RESPONSE_STREAMS


def preference_eligible(stream: str) -> bool:
    return stream in PROMPT_RESPONSE_STREAMS


def sft_refusal(category: str, include_partial: bool) -> Refusal | None:
    if category in SFT_NEVER:
        return "unsafe_sft_category", f"SFT never admits {category} runs"
    if category == "partially_accepted" and not include_partial:
        return "category_disallowed", "partially_accepted is admitted to SFT only with include_partial"
    if category not in ("accepted", "partially_accepted"):
        return "category_disallowed", f"unknown category {category!r}"
    return None


def rag_refusal(category: str, include_review: bool) -> Refusal | None:
    if category in RAG_NEVER:
        return "unsafe_rag_category", f"RAG never admits {category} runs"
    if category == "needs_human_review" and not include_review:
        return "category_disallowed", "needs_human_review is admitted to RAG only with include_review"
    if category not in ("accepted", "partially_accepted", "needs_human_review"):
        return "category_disallowed", f"unknown category {category!r}"
    return None


def preference_side(category: str) -> str | None:
    """Which side of a pair a run of this category can stand on: "chosen", "rejected" or None."""
    if category in PREFERENCE_CHOSEN:
        return "chosen"
    if category in PREFERENCE_REJECTED:
        return "rejected"
    return None
