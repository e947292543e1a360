"""What a rule decides about one record, before it is stamped into a ``ScoredRun``.

Kept apart from ``rules`` and ``joins`` so both can return it without importing each other.
``code`` is a short stable tag (for counting why rows need a human, e.g. in receipts);
``reasons`` are the sentences a human reads in the scored run.
"""

from dataclasses import dataclass

ACCEPTED = "accepted"
PARTIAL = "partially_accepted"
REJECTED = "rejected"
REVIEW = "needs_human_review"


@dataclass(frozen=True, slots=True)
class Judgement:
    category: str
    reasons: tuple[str, ...]
    code: str
    parent_ids: tuple[str, ...] = ()

    @property
    def is_specific(self) -> bool:
        return self.category != REVIEW


def judged(category: str, code: str, *reasons: str, parent_ids: tuple[str, ...] = ()) -> Judgement:
    return Judgement(category, tuple(reasons) or (code,), code, parent_ids)
