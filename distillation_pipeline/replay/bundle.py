"""From the top K retrieved records to the structured bundle the prompt is built from.

The split follows the seed: the best 3 accepted records are exemplars (what worked), the best 2
partially accepted ones are warnings (what half-worked, and why), and every line in the top K
that starts with verify / check / assert / ensure / confirm becomes a checklist step, which the
gate later holds the answer to. needs_human_review records (admitted only on opt-in) still
contribute checklist steps but are never shown as an example to copy.

Texts are cut to a bounded size: the embedded model has a 2048-token context, and the bundle
logged with the run must be exactly what the model saw.
"""

import re
from collections.abc import Sequence

from distillation_pipeline.replay.retrieval import Hit
from distillation_pipeline.schemas import ReplayBundle, RetrievedItem

CHECKLIST_VERBS = ("verify", "check", "assert", "ensure", "confirm")
_CHECKLIST_LINE = re.compile(r"^(?:verify|check|assert|ensure|confirm)\b", re.IGNORECASE)
# Bullets and numbering a playbook puts before a step: "- ", "* ", "• ", "1. ", "2) ", "[ ] ".
_LEAD = re.compile(r"^\s*(?:[-*•]\s+|\d{1,3}[.)]\s+|\[[ xX]?\]\s+)*")


def build_bundle(
    task: str,
    hits: Sequence[Hit],
    *,
    max_exemplars: int = 3,
    max_warnings: int = 2,
    max_checklist: int = 8,
    max_item_chars: int = 600,
    max_step_chars: int = 200,
) -> ReplayBundle:
    exemplars = [_item(hit, max_item_chars) for hit in hits if hit.category == "accepted"][:max_exemplars]
    warnings = [_item(hit, max_item_chars) for hit in hits if hit.category == "partially_accepted"][:max_warnings]
    return ReplayBundle(
        task=task,
        exemplars=exemplars,
        warnings=warnings,
        checklist=checklist_steps(hits, limit=max_checklist, max_chars=max_step_chars),
    )


def checklist_steps(hits: Sequence[Hit], *, limit: int = 8, max_chars: int = 200) -> list[str]:
    """Validation steps in rank order, first occurrence wins, case-insensitive duplicates dropped."""
    steps: list[str] = []
    seen: set[str] = set()
    for hit in hits:
        for raw in hit.content.splitlines():
            line = _LEAD.sub("", raw).strip()
            if not _CHECKLIST_LINE.match(line):
                continue
            line = _clip(line, max_chars)
            key = line.lower()
            if key not in seen:
                seen.add(key)
                steps.append(line)
                if len(steps) >= limit:
                    return steps
    return steps


def _item(hit: Hit, max_chars: int) -> RetrievedItem:
    text = f"{hit.title}\n{hit.content}" if hit.title else hit.content
    return RetrievedItem(id=hit.id, score=hit.score, category=hit.category, text=_clip(text.strip(), max_chars))


def _clip(text: str, max_chars: int) -> str:
    return text if len(text) <= max_chars else text[: max_chars - 1].rstrip() + "…"
