"""Will a trainer take the exports as they are? Shape checks for every row of every layout.

``verify.py`` asks whether a row may be in a dataset (the firewall); this asks whether the
trainer the layout is written for accepts it unchanged:

- ``sft``: ``exports/sft/instruction_response.jsonl`` in TRL's conversational format: a
  ``messages`` list of ``{role, content}`` turns, optional system first, then user and assistant
  alternating, ending on the assistant (what SFTTrainer and most chat templates require).
- ``preference``: ``exports/preference/chosen_rejected.jsonl`` in TRL's explicit-prompt
  preference format (DPOTrainer): ``prompt``, ``chosen``, ``rejected``, all three plain strings
  or all three message lists.
- ``openai_chat``: ``exports/sft/openai_chat.jsonl``, OpenAI chat fine-tuning: ``{"messages"}``
  and nothing the API does not know, at least one assistant turn, ``weight`` 0 or 1.
- ``openai_dpo``: ``exports/preference/openai_dpo.jsonl``, OpenAI preference fine-tuning:
  ``input.messages`` ending on a user turn, one assistant message on each side, different texts.

A row check returns its problems as ``"code: detail"`` strings; none means the row fits. Files
are read line by line, so a million-row export is checked in constant memory.
"""

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from distillation_pipeline.lib.layout import Layout

Row = dict[str, Any]
RowCheck = Callable[[Any], list[str]]

# TRL picks a dataset's format from its column names; an SFT row that also carries one of
# these would be read as another format (prompt-completion, preference, plain text).
_TRL_FORMAT_COLUMNS = ("prompt", "completion", "text", "chosen", "rejected")
_OPENAI_MESSAGE_KEYS = frozenset({"role", "content", "name", "weight"})
_OPENAI_CHAT_KEYS = frozenset({"messages", "tools", "parallel_tool_calls"})
_OPENAI_DPO_KEYS = frozenset({"input", "preferred_output", "non_preferred_output"})
_OPENAI_INPUT_KEYS = frozenset({"messages", "tools", "parallel_tool_calls"})


def _text(value: Any) -> bool:
    return isinstance(value, str) and bool(value.strip())


def _message_problems(messages: Any, where: str, *, allowed_keys: frozenset[str]) -> list[str]:
    """Each turn is an object with a known role and non-empty text, and no unknown keys."""
    if not isinstance(messages, list):
        return [f"messages_not_a_list: {where} is {type(messages).__name__}"]
    if not messages:
        return [f"empty_messages: {where} has no turns"]
    problems = []
    for index, message in enumerate(messages):
        at = f"{where}[{index}]"
        if not isinstance(message, dict):
            problems.append(f"message_not_an_object: {at} is {type(message).__name__}")
            continue
        unknown = sorted(set(message) - allowed_keys)
        if unknown:
            problems.append(f"message_unknown_key: {at} has {', '.join(unknown)}")
        role = message.get("role")
        if role not in ("system", "user", "assistant"):
            problems.append(f"unknown_role: {at}.role is {role!r}")
        elif role == "system" and index != 0:
            problems.append(f"misplaced_system: {at} is a system turn after the first turn")
        if not _text(message.get("content")):
            problems.append(f"empty_content: {at}.content is not a non-empty string")
    return problems


def _roles(messages: list) -> list[Any]:
    return [m.get("role") for m in messages if isinstance(m, dict) and m.get("role") != "system"]


def sft_row_problems(row: Any) -> list[str]:
    """TRL conversational language modelling: ``messages`` alternating user/assistant."""
    if not isinstance(row, dict):
        return [f"not_an_object: row is {type(row).__name__}"]
    if "messages" not in row:
        return ["missing_field: no messages"]
    problems = _message_problems(row["messages"], "messages", allowed_keys=frozenset({"role", "content"}))
    if isinstance(row["messages"], list) and row["messages"]:
        roles = _roles(row["messages"])
        expected = ["user", "assistant"] * (len(roles) // 2 + 1)
        if roles[:1] != ["user"] or roles[-1:] != ["assistant"] or roles != expected[: len(roles)]:
            problems.append(f"bad_turn_order: roles {roles} must alternate user/assistant, user first, assistant last")
    ambiguous = [name for name in _TRL_FORMAT_COLUMNS if name in row]
    if ambiguous:
        problems.append(f"ambiguous_columns: {', '.join(ambiguous)} beside messages make TRL guess the format")
    return problems


def preference_row_problems(row: Any) -> list[str]:
    """TRL preference, explicit prompt: ``prompt``/``chosen``/``rejected``, strings or turn lists."""
    if not isinstance(row, dict):
        return [f"not_an_object: row is {type(row).__name__}"]
    missing = [name for name in ("prompt", "chosen", "rejected") if name not in row]
    if missing:
        return [f"missing_field: no {', '.join(missing)}"]
    prompt, chosen, rejected = row["prompt"], row["chosen"], row["rejected"]
    kinds = {type(value).__name__ for value in (prompt, chosen, rejected)}
    if kinds == {"str"}:
        problems = [
            f"empty_content: {name} is blank" for name in ("prompt", "chosen", "rejected") if not _text(row[name])
        ]
        if not problems and chosen.strip() == rejected.strip():
            problems.append("same_text_both_sides: chosen and rejected are the same text")
        return problems
    if kinds == {"list"}:
        keys = frozenset({"role", "content"})
        problems = _message_problems(prompt, "prompt", allowed_keys=keys)
        problems += _message_problems(chosen, "chosen", allowed_keys=keys)
        problems += _message_problems(rejected, "rejected", allowed_keys=keys)
        if prompt and _roles(prompt)[-1:] != ["user"]:
            problems.append("bad_turn_order: the prompt must end on a user turn")
        for name, side in (("chosen", chosen), ("rejected", rejected)):
            if side and set(_roles(side)) != {"assistant"}:
                problems.append(f"bad_turn_order: {name} must hold assistant turns only")
        if not problems and chosen == rejected:
            problems.append("same_text_both_sides: chosen and rejected are the same turns")
        return problems
    return [f"mixed_formats: prompt/chosen/rejected are {', '.join(sorted(kinds))}; all strings or all turn lists"]


def _openai_messages_problems(messages: Any, where: str) -> list[str]:
    problems = _message_problems(messages, where, allowed_keys=_OPENAI_MESSAGE_KEYS)
    for index, message in enumerate(messages if isinstance(messages, list) else []):
        if not isinstance(message, dict) or "weight" not in message:
            continue
        if message.get("role") != "assistant":
            problems.append(f"misplaced_weight: {where}[{index}] has a weight but is not an assistant turn")
        elif message["weight"] not in (0, 1) or isinstance(message["weight"], bool):
            problems.append(f"bad_weight: {where}[{index}].weight is {message['weight']!r}, not 0 or 1")
    return problems


def openai_chat_row_problems(row: Any) -> list[str]:
    """OpenAI chat fine-tuning: ``{"messages": [...]}`` with at least one assistant turn."""
    if not isinstance(row, dict):
        return [f"not_an_object: row is {type(row).__name__}"]
    if "messages" not in row:
        return ["missing_field: no messages"]
    problems = []
    unknown = sorted(set(row) - _OPENAI_CHAT_KEYS)
    if unknown:
        problems.append(f"unknown_key: {', '.join(unknown)} (OpenAI takes messages, tools, parallel_tool_calls)")
    problems += _openai_messages_problems(row["messages"], "messages")
    if isinstance(row["messages"], list) and "assistant" not in _roles(row["messages"]):
        problems.append("no_assistant_turn: nothing to train on")
    return problems


def openai_dpo_row_problems(row: Any) -> list[str]:
    """OpenAI preference fine-tuning: one-turn ``input`` and one assistant message per side."""
    if not isinstance(row, dict):
        return [f"not_an_object: row is {type(row).__name__}"]
    missing = sorted(_OPENAI_DPO_KEYS - set(row))
    if missing:
        return [f"missing_field: no {', '.join(missing)}"]
    problems = []
    unknown = sorted(set(row) - _OPENAI_DPO_KEYS)
    if unknown:
        problems.append(f"unknown_key: {', '.join(unknown)}")
    source = row["input"]
    if not isinstance(source, dict) or "messages" not in source:
        problems.append("bad_input: input must be an object with messages")
    else:
        extra = sorted(set(source) - _OPENAI_INPUT_KEYS)
        if extra:
            problems.append(f"unknown_key: input.{', input.'.join(extra)}")
        problems += _openai_messages_problems(source["messages"], "input.messages")
        if isinstance(source["messages"], list) and source["messages"] and _roles(source["messages"])[-1:] != ["user"]:
            problems.append("bad_turn_order: input.messages must end on a user turn")
    sides = []
    for name in ("preferred_output", "non_preferred_output"):
        side = row[name]
        side_problems = _openai_messages_problems(side, name)
        if not side_problems and (len(side) != 1 or side[0].get("role") != "assistant"):
            side_problems.append(f"bad_output: {name} must be exactly one assistant message")
        problems += side_problems
        sides.append(side[0].get("content") if not side_problems else None)
    if sides[0] is not None and sides[0].strip() == (sides[1] or "").strip():
        problems.append("same_text_both_sides: preferred and non-preferred outputs are the same text")
    return problems


@dataclass(frozen=True)
class TrainerFormat:
    name: str
    trainer: str
    path: Callable[[Layout], Path]
    check_row: RowCheck


TRAINER_FORMATS: dict[str, TrainerFormat] = {
    f.name: f
    for f in (
        TrainerFormat("sft", "TRL SFTTrainer (messages)", lambda layout: layout.sft_file, sft_row_problems),
        TrainerFormat(
            "preference",
            "TRL DPOTrainer (prompt/chosen/rejected)",
            lambda layout: layout.preference_file,
            preference_row_problems,
        ),
        TrainerFormat(
            "openai_chat",
            "OpenAI supervised fine-tuning",
            lambda layout: layout.sft_openai_file,
            openai_chat_row_problems,
        ),
        TrainerFormat(
            "openai_dpo",
            "OpenAI preference fine-tuning",
            lambda layout: layout.preference_openai_file,
            openai_dpo_row_problems,
        ),
    )
}


@dataclass
class FormatReport:
    """How one file fared: rows read, and the problems found (at most ``limit`` listed)."""

    name: str
    path: Path
    rows: int = 0
    problems: list[str] = field(default_factory=list)
    unlisted: int = 0

    @property
    def ok(self) -> bool:
        return not self.problems and not self.unlisted

    def add(self, line_no: int, problem: str, limit: int) -> None:
        if len(self.problems) < limit:
            code, _, detail = problem.partition(": ")
            self.problems.append(
                f"{code}: {self.path.name}:{line_no}: {detail}" if detail else f"{code}: {self.path.name}:{line_no}"
            )
        else:
            self.unlisted += 1


def check_file(path: Path, check_row: RowCheck, *, name: str = "", limit: int = 100) -> FormatReport:
    """Check every line of a JSONL file; a missing file is a problem, an empty one is not."""
    report = FormatReport(name or path.name, path)
    if not path.is_file():
        report.problems.append(f"missing_file: {path.name} does not exist")
        return report
    with open(path, "rb") as handle:
        for line_no, line in enumerate(handle, start=1):
            if not line.strip():
                report.add(line_no, "blank_line: trainers read one example per line", limit)
                continue
            report.rows += 1
            try:
                row = orjson.loads(line)
            except orjson.JSONDecodeError as exc:
                report.add(line_no, f"malformed_json: {exc}", limit)
                continue
            for problem in check_row(row):
                report.add(line_no, problem, limit)
    return report


def check_exports(layout: Layout, *, limit: int = 100) -> dict[str, FormatReport]:
    """Every trainer-facing export under ``layout``, checked row by row."""
    return {
        name: check_file(f.path(layout), f.check_row, name=name, limit=limit) for name, f in TRAINER_FORMATS.items()
    }
