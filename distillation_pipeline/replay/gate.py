"""The validation gate: deterministic code that decides whether an answer is good enough to keep.

Never a model. Three checks, each recorded with its measured value and its threshold so a
reader of the run log sees why an answer passed or failed:

- ``length_min`` / ``length_max``: characters of the stripped answer (empty and runaway answers).
- ``no_hedging``: hedging phrases found (a hedge is an answer that commits to nothing).
- ``checklist_overlap``: the share of the checklist's content tokens (the steps' words minus the
  step verbs and stopwords) that the answer uses. With no checklist (``--no-retrieval``, or
  nothing retrieved) there is nothing to hold the answer to: recorded as not applicable, passed.

The gate is structural, not semantic: it catches empty, rambling, hedging and ungrounded
answers, not a plausible wrong one.
"""

import re
from dataclasses import dataclass

from distillation_pipeline.replay.bundle import CHECKLIST_VERBS
from distillation_pipeline.replay.tokens import token_set
from distillation_pipeline.schemas import GateCheck

DEFAULT_HEDGES = (
    "i think",
    "i believe",
    "i'm not sure",
    "i am not sure",
    "not sure",
    "maybe",
    "perhaps",
    "possibly",
    "probably",
    "it seems",
    "might be",
    "hard to say",
    "i don't know",
    "i do not know",
    "i cannot",
    "i can't",
    "as an ai",
)


@dataclass(frozen=True)
class GateConfig:
    min_chars: int = 40
    max_chars: int = 4000
    hedges: tuple[str, ...] = DEFAULT_HEDGES
    min_checklist_overlap: float = 0.2


@dataclass(frozen=True)
class GateResult:
    passed: bool
    checks: list[GateCheck]

    def failed(self) -> list[str]:
        return [check.name for check in self.checks if not check.passed]


def checklist_tokens(checklist: list[str]) -> frozenset[str]:
    words = frozenset().union(*(token_set(step) for step in checklist)) if checklist else frozenset()
    return words - frozenset(CHECKLIST_VERBS)


def checklist_overlap(output: str, checklist: list[str]) -> float | None:
    """Share of checklist content tokens present in the output; None when there is no checklist."""
    wanted = checklist_tokens(checklist)
    if not wanted:
        return None
    return round(len(wanted & token_set(output)) / len(wanted), 6)


def run_gate(output: str, checklist: list[str], config: GateConfig = GateConfig()) -> GateResult:
    text = output.strip()
    length = len(text)
    lowered = " ".join(text.lower().replace("’", "'").split())
    hedges = sorted({h for h in config.hedges if _has_phrase(lowered, h)})
    overlap = checklist_overlap(text, checklist)
    checks = [
        GateCheck(
            name="length_min",
            passed=length >= config.min_chars,
            value=float(length),
            threshold=float(config.min_chars),
            detail="characters in the stripped answer",
        ),
        GateCheck(
            name="length_max",
            passed=length <= config.max_chars,
            value=float(length),
            threshold=float(config.max_chars),
            detail="characters in the stripped answer",
        ),
        GateCheck(
            name="no_hedging",
            passed=not hedges,
            value=float(len(hedges)),
            threshold=0.0,
            detail=("hedges: " + ", ".join(hedges)) if hedges else "no hedging phrase found",
        ),
        GateCheck(
            name="checklist_overlap",
            passed=overlap is None or overlap >= config.min_checklist_overlap,
            value=overlap,
            threshold=config.min_checklist_overlap,
            detail="not applicable: no checklist" if overlap is None else "share of checklist tokens in the answer",
        ),
    ]
    return GateResult(passed=all(check.passed for check in checks), checks=checks)


def _has_phrase(lowered: str, phrase: str) -> bool:
    return re.search(rf"(?<![a-z0-9]){re.escape(phrase)}(?![a-z0-9])", lowered) is not None
