"""Extraction rows inherit their category from a verdict-bearing parent (spec section 4).

``audit_facts`` join their audit finding by ``finding_id``; every other extraction stream joins
by ``task_id``. The index is built in a first pass over the verdict streams and holds, per join
key and category, a count and a few parent ids, never whole rows, so it stays small when the
evidence tree has a million rows.

Decisions:
- Only verdict-class rows are parents. Telemetry markers (latency, grounding, apply status)
  are proxies, and letting them vote would let a fast, well-grounded mode experiment make a
  distilled fact "accepted" for SFT although no reviewer ever judged the task. An extraction
  row whose task has telemetry but no verdict is an orphan and goes to a human.
- audit_facts join by finding_id only, never fall back to task_id: a fact extracted from one
  finding says nothing about the other findings of the same task.
- A parent that is itself needs_human_review abstains: it neither agrees nor disagrees. If all
  parents abstain, the child needs review too ("parents need human review").
- Any two distinct specific categories disagree, accepted vs partially_accepted included: the
  spec sends disagreement to a human, and we do not grade how far apart the parents are.

What an extraction row inherits depends only on its join key's groups (``key_judgement``), so
the score stage can keep the index on disk (``parentstore.DiskParentIndex``, which answers the
same ``_groups`` / ``_judged`` questions) and, when new verdict rows arrive, re-score only the
rows whose key's judgement changed. ``ParentIndex`` is the in-memory form, for single records.
"""

from bisect import insort
from collections.abc import Mapping

from distillation_pipeline.evidence.streams import STREAMS
from distillation_pipeline.schemas import CATEGORIES
from distillation_pipeline.scoring.judgement import REVIEW, Judgement, judged

# Parent ids kept per (join key, category). The count stays exact; the ids kept are the
# lexicographically smallest, so the choice does not depend on the order files were read in.
MAX_PARENT_IDS = 8

FINDING_JOINED_STREAMS = frozenset({"audit_facts"})

# The two join namespaces, spelled as in the reasons ("via task_id=T1").
TASK = "task_id"
FINDING = "finding_id"


class IndexStateError(ValueError):
    """A stored parent index entry that does not decode: the score state is corrupt."""


def is_parent_stream(stream: str) -> bool:
    spec = STREAMS.get(stream)
    return spec is not None and spec.source_class == "verdict"


class ParentRefs:
    """How many parents of one category a join key has, and the first few of their ids."""

    __slots__ = ("count", "ids")

    def __init__(self) -> None:
        self.count = 0
        self.ids: list[str] = []

    def add(self, evidence_id: str) -> None:
        self.count += 1
        if evidence_id in self.ids:
            return
        if len(self.ids) < MAX_PARENT_IDS:
            insort(self.ids, evidence_id)
        elif evidence_id < self.ids[-1]:
            insort(self.ids, evidence_id)
            self.ids.pop()

    def to_state(self) -> list:
        return [self.count, self.ids]

    def describe(self) -> str:
        more = f", +{self.count - len(self.ids)} more" if self.count > len(self.ids) else ""
        return f"{self.count} ({', '.join(self.ids)}{more})"


ParentGroups = Mapping[str, ParentRefs]  # category -> refs


class ParentIndex:
    """task_id -> category -> refs, and finding_id -> category -> refs, over verdict rows."""

    __slots__ = ("by_task", "by_finding", "parents", "_judged")

    def __init__(self) -> None:
        self.by_task: dict[str, dict[str, ParentRefs]] = {}
        self.by_finding: dict[str, dict[str, ParentRefs]] = {}
        self.parents = 0
        # (namespace, key) -> what a row joining there inherits; many rows share a key, and the
        # reasons are built from the groups, so it is worth computing once per key.
        self._judged: dict[tuple[str, str], Judgement] = {}

    def add(self, evidence_id: str, category: str, task_id: str | None, finding_id: str | None = None) -> None:
        """Record one verdict-bearing row. ``finding_id`` only for audits rows."""
        if self._judged:
            self._judged.clear()
        self.parents += 1
        if task_id is not None:
            self._groups(TASK, task_id, create=True).setdefault(category, ParentRefs()).add(evidence_id)  # type: ignore[union-attr]
        if finding_id is not None:
            self._groups(FINDING, finding_id, create=True).setdefault(category, ParentRefs()).add(evidence_id)  # type: ignore[union-attr]

    def groups(self, namespace: str) -> dict[str, dict[str, ParentRefs]]:
        return self.by_task if namespace == TASK else self.by_finding

    def _groups(self, namespace: str, key: str, create: bool = False) -> dict[str, ParentRefs] | None:
        unpacked = self.groups(namespace)
        found = unpacked.get(key)
        if found is None and create:
            found = unpacked[key] = {}
        return found


def join_key(stream: str, task_id: str | None, finding_id: str | None) -> tuple[str, str] | None:
    """(namespace, key) an extraction row of ``stream`` joins on, or None if it has none."""
    if stream in FINDING_JOINED_STREAMS:
        return (FINDING, finding_id) if finding_id is not None else None
    return (TASK, task_id) if task_id is not None else None


def key_judgement(parents: ParentIndex, namespace: str, key: str) -> Judgement:
    """What every extraction row joining on ``key`` inherits (it does not depend on the stream)."""
    cached = parents._judged.get((namespace, key))
    if cached is not None:
        return cached
    groups = parents._groups(namespace, key)
    text = f"{namespace}={key}"
    if not groups:
        if namespace == FINDING:
            judgement = judged(REVIEW, "orphan", f"no parent: no audits row with {text}")
        else:
            judgement = judged(REVIEW, "orphan", f"no parent: no verdict-bearing row with {text}")
    else:
        judgement = _agree(groups, text)
    parents._judged[(namespace, key)] = judgement
    return judgement


def inherit(stream: str, task_id: str | None, finding_id: str | None, parents: ParentIndex | None) -> Judgement:
    """The category an extraction row inherits, or needs_human_review saying why not."""
    if parents is None:
        return judged(REVIEW, "no_parent_index", "no parent index supplied")
    joined = join_key(stream, task_id, finding_id)
    if joined is None:
        missing = FINDING if stream in FINDING_JOINED_STREAMS else TASK
        return judged(REVIEW, "orphan", f"no parent: {stream} row has no {missing}")
    return key_judgement(parents, *joined)


def _agree(groups: ParentGroups, key: str) -> Judgement:
    specific = [(category, groups[category]) for category in CATEGORIES if category != REVIEW and category in groups]
    abstaining = groups.get(REVIEW)
    if not specific:
        assert abstaining is not None
        return judged(
            REVIEW,
            "parents_need_review",
            f"parents need human review: {abstaining.describe()} via {key}, none with a specific category",
            parent_ids=tuple(abstaining.ids),
        )
    if len(specific) > 1:
        described = "; ".join(f"{category} x{refs.describe()}" for category, refs in specific)
        all_ids = tuple(sorted(i for _, refs in specific for i in refs.ids))
        return judged(REVIEW, "conflicting_parents", f"conflicting parents via {key}: {described}", parent_ids=all_ids)
    category, refs = specific[0]
    reasons = [f"inherited {category} from {refs.count} verdict-bearing parent(s) via {key}"]
    if abstaining is not None:
        reasons.append(f"{abstaining.count} needs_human_review parent(s) via {key} abstained")
    return judged(category, "inherited", *reasons, parent_ids=tuple(refs.ids))
