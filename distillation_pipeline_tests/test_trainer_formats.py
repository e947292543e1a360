"""The exports load as they are in the trainers people use, and the dataset card describes them.

One real pipeline run over a sample substrate; every export is then loaded with Hugging Face
``datasets`` (offline: nothing here may reach the network), every row is checked against its
trainer's shape, and the card written beside the datasets is read back and loaded through.
"""

import hashlib
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml
from dagster import DagsterInstance

from distillation_pipeline.defs.execute import PipelineOutcome, run_pipeline
from distillation_pipeline.exports.card import write_dataset_card
from distillation_pipeline.exports.trainer_formats import (
    TRAINER_FORMATS,
    check_exports,
    check_file,
    openai_chat_row_problems,
    openai_dpo_row_problems,
    preference_row_problems,
    sft_row_problems,
)
from distillation_pipeline.lib.layout import Layout
from distillation_pipeline.sample import generate_substrate
from distillation_pipeline_tests.conftest import PINNED


def offline_datasets() -> Any:
    """Hugging Face ``datasets``, unable to reach the network: it reads these once, on import."""
    os.environ["HF_DATASETS_OFFLINE"] = "1"
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"
    import datasets

    datasets.disable_progress_bars()
    datasets.logging.set_verbosity_error()
    return datasets


datasets = offline_datasets()


@dataclass(frozen=True)
class Exported:
    layout: Layout
    outcome: PipelineOutcome
    cache_dir: Path


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> Exported:
    root = tmp_path_factory.mktemp("trainer_root")
    generate_substrate(root, 3000, seed=7)
    outcome = run_pipeline(root, recorded_at=PINNED, instance=DagsterInstance.ephemeral())
    assert outcome.success, outcome.failures
    return Exported(Layout.at(root), outcome, tmp_path_factory.mktemp("hf_cache"))


def load(exported: Exported, path: Path | str, name: str | None = None, **kwargs: Any) -> Any:
    return datasets.load_dataset(str(path), name, cache_dir=str(exported.cache_dir), **kwargs)


def load_json(exported: Exported, path: Path) -> datasets.Dataset:
    return load(exported, "json", data_files=str(path), split="train")


def shape(feature: Any) -> Any:
    """A feature as plain data: "string", "int64", "timestamp", [item], {field: ...}."""
    if isinstance(feature, dict):
        return {key: shape(value) for key, value in feature.items()}
    if isinstance(feature, (datasets.List, datasets.LargeList)):
        return [shape(feature.feature)]
    if isinstance(feature, datasets.Sequence):
        return [shape(feature.feature)]
    dtype = feature.dtype
    return "timestamp" if dtype.startswith("timestamp") else dtype


def line_count(path: Path) -> int:
    with open(path, "rb") as handle:
        return sum(1 for line in handle if line.strip())


MESSAGES = [{"role": "string", "content": "string"}]
PROVENANCE = {
    key: "string" for key in ("evidence_id", "scored_run_id", "stream", "source_file", "sig_hash", "scorer_version")
} | {"line_offset": "int64"}
EXPECTED_COLUMNS = {
    "sft": {
        "id": "string",
        "created_at": "timestamp",
        "task_id": "string",
        "messages": MESSAGES,
        "quality_score": "string",
        "provenance": PROVENANCE,
        "schema_version": "int64",
    },
    "preference": {
        "id": "string",
        "created_at": "timestamp",
        "task_id": "string",
        "prompt": "string",
        "chosen": "string",
        "rejected": "string",
        "chosen_category": "string",
        "rejected_category": "string",
        "pair_kind": "string",
        "chosen_provenance": PROVENANCE,
        "rejected_provenance": PROVENANCE,
        "schema_version": "int64",
    },
    "openai_chat": {"messages": MESSAGES},
    "openai_dpo": {"input": {"messages": MESSAGES}, "preferred_output": MESSAGES, "non_preferred_output": MESSAGES},
    "rag": {
        "id": "string",
        "created_at": "timestamp",
        "task_id": "string",
        "title": "string",
        "content": "string",
        "source_category": "string",
        "cited_paths": ["string"],
        "provenance": PROVENANCE,
        "schema_version": "int64",
    },
}
EXPORT_STAGE = {
    "sft": "export-sft",
    "openai_chat": "export-sft",
    "preference": "export-preference",
    "openai_dpo": "export-preference",
    "rag": "export-rag",
}


def export_path(layout: Layout, name: str) -> Path:
    return layout.rag_file if name == "rag" else TRAINER_FORMATS[name].path(layout)


# --- Hugging Face datasets ------------------------------------------------------------------------


def test_hf_datasets_is_offline() -> None:
    """Imported before this module set the flags (by another module), it could reach the Hub."""
    assert datasets.config.HF_HUB_OFFLINE and datasets.config.HF_DATASETS_OFFLINE


@pytest.mark.parametrize("name", sorted(EXPECTED_COLUMNS))
def test_export_loads_with_hf_datasets_with_the_expected_columns_and_types(exported: Exported, name: str) -> None:
    dataset = load_json(exported, export_path(exported.layout, name))
    assert shape(dict(dataset.features)) == EXPECTED_COLUMNS[name]
    receipt = exported.outcome.receipts[EXPORT_STAGE[name]]
    assert dataset.num_rows == receipt.counts.records_out > 0


def test_sft_rows_are_user_then_assistant_turns_as_loaded(exported: Exported) -> None:
    dataset = load_json(exported, exported.layout.sft_file)
    roles = {tuple(m["role"] for m in messages) for messages in dataset["messages"]}
    assert roles == {("user", "assistant")}


def test_preference_sides_differ_as_loaded(exported: Exported) -> None:
    dataset = load_json(exported, exported.layout.preference_file)
    assert all(c.strip() != r.strip() for c, r in zip(dataset["chosen"], dataset["rejected"], strict=True))


# --- trainer shapes, every row --------------------------------------------------------------------


def test_every_row_of_every_export_fits_its_trainer(exported: Exported) -> None:
    reports = check_exports(exported.layout)
    assert set(reports) == {"sft", "preference", "openai_chat", "openai_dpo"}
    for name, report in reports.items():
        assert report.ok, (name, report.problems[:5])
        assert (
            report.rows == line_count(report.path) == exported.outcome.receipts[EXPORT_STAGE[name]].counts.records_out
        )


def test_a_broken_row_appended_to_a_real_export_is_caught_on_its_line(exported: Exported, tmp_path: Path) -> None:
    copy = tmp_path / "instruction_response.jsonl"
    shutil.copyfile(exported.layout.sft_file, copy)
    rows = line_count(copy)
    with open(copy, "ab") as handle:
        handle.write(orjson.dumps({"messages": [{"role": "assistant", "content": "no question asked"}]}) + b"\n")
    report = check_file(copy, sft_row_problems)
    assert report.rows == rows + 1
    assert report.problems == [
        (
            f"bad_turn_order: instruction_response.jsonl:{rows + 1}: roles ['assistant'] must alternate"
            " user/assistant, user first, assistant last"
        )
    ]


def msgs(*turns: tuple[str, str]) -> list[dict[str, str]]:
    return [{"role": role, "content": content} for role, content in turns]


GOOD_ROWS = [
    (sft_row_problems, {"messages": msgs(("user", "q"), ("assistant", "a"))}),
    (
        sft_row_problems,
        {"messages": msgs(("system", "s"), ("user", "q"), ("assistant", "a"), ("user", "q2"), ("assistant", "a2"))},
    ),
    (sft_row_problems, {"id": "sft-1", "messages": msgs(("user", "q"), ("assistant", "a")), "provenance": {}}),
    (preference_row_problems, {"prompt": "p", "chosen": "good", "rejected": "bad"}),
    (
        preference_row_problems,
        {"prompt": msgs(("user", "p")), "chosen": msgs(("assistant", "good")), "rejected": msgs(("assistant", "bad"))},
    ),
    (openai_chat_row_problems, {"messages": msgs(("system", "s"), ("user", "q"), ("assistant", "a"))}),
    (
        openai_chat_row_problems,
        {
            "messages": [
                {"role": "user", "content": "q"},
                {"role": "assistant", "content": "a", "weight": 0},
                {"role": "user", "content": "q2"},
                {"role": "assistant", "content": "a2", "weight": 1},
            ]
        },
    ),
    (
        openai_dpo_row_problems,
        {
            "input": {"messages": msgs(("user", "p"))},
            "preferred_output": msgs(("assistant", "good")),
            "non_preferred_output": msgs(("assistant", "bad")),
        },
    ),
]


@pytest.mark.parametrize(("check", "row"), GOOD_ROWS)
def test_well_formed_rows_pass(check: Any, row: dict) -> None:
    assert check(row) == []


DPO_OK = {
    "input": {"messages": msgs(("user", "p"))},
    "preferred_output": msgs(("assistant", "good")),
    "non_preferred_output": msgs(("assistant", "bad")),
}
BROKEN_ROWS = [
    (sft_row_problems, ["not", "a", "row"], "not_an_object"),
    (sft_row_problems, {"prompt": "q", "completion": "a"}, "missing_field"),
    (sft_row_problems, {"messages": "user: q"}, "messages_not_a_list"),
    (sft_row_problems, {"messages": []}, "empty_messages"),
    (sft_row_problems, {"messages": ["q", "a"]}, "message_not_an_object"),
    (sft_row_problems, {"messages": msgs(("assistant", "a"), ("user", "q"))}, "bad_turn_order"),
    (sft_row_problems, {"messages": msgs(("user", "q"), ("user", "q again"), ("assistant", "a"))}, "bad_turn_order"),
    (sft_row_problems, {"messages": msgs(("user", "q"))}, "bad_turn_order"),
    (sft_row_problems, {"messages": msgs(("user", "q"), ("assistant", "  "))}, "empty_content"),
    (
        sft_row_problems,
        {"messages": [{"role": "user", "content": 3}, {"role": "assistant", "content": "a"}]},
        "empty_content",
    ),
    (sft_row_problems, {"messages": msgs(("user", "q"), ("tool", "x"), ("assistant", "a"))}, "unknown_role"),
    (sft_row_problems, {"messages": msgs(("user", "q"), ("system", "s"), ("assistant", "a"))}, "misplaced_system"),
    (
        sft_row_problems,
        {"messages": [{"role": "user", "content": "q", "name": "x"}, {"role": "assistant", "content": "a"}]},
        "message_unknown_key",
    ),
    (sft_row_problems, {"messages": msgs(("user", "q"), ("assistant", "a")), "prompt": "q"}, "ambiguous_columns"),
    (preference_row_problems, {"prompt": "p", "chosen": "good"}, "missing_field"),
    (preference_row_problems, {"prompt": "p", "chosen": " ", "rejected": "bad"}, "empty_content"),
    (preference_row_problems, {"prompt": "p", "chosen": "same ", "rejected": " same"}, "same_text_both_sides"),
    (
        preference_row_problems,
        {"prompt": "p", "chosen": msgs(("assistant", "good")), "rejected": "bad"},
        "mixed_formats",
    ),
    (preference_row_problems, {"prompt": None, "chosen": "good", "rejected": "bad"}, "mixed_formats"),
    (
        preference_row_problems,
        {
            "prompt": msgs(("user", "p"), ("assistant", "x")),
            "chosen": msgs(("assistant", "g")),
            "rejected": msgs(("assistant", "b")),
        },
        "bad_turn_order",
    ),
    (
        preference_row_problems,
        {"prompt": msgs(("user", "p")), "chosen": msgs(("user", "g")), "rejected": msgs(("assistant", "b"))},
        "bad_turn_order",
    ),
    (openai_chat_row_problems, {"id": "sft-1", "messages": msgs(("user", "q"), ("assistant", "a"))}, "unknown_key"),
    (openai_chat_row_problems, {"messages": msgs(("system", "s"), ("user", "q"))}, "no_assistant_turn"),
    (
        openai_chat_row_problems,
        {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a", "weight": 2}]},
        "bad_weight",
    ),
    (
        openai_chat_row_problems,
        {"messages": [{"role": "user", "content": "q", "weight": 1}, {"role": "assistant", "content": "a"}]},
        "misplaced_weight",
    ),
    (
        openai_chat_row_problems,
        {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a", "tool_calls": []}]},
        "message_unknown_key",
    ),
    (openai_dpo_row_problems, {"preferred_output": [], "non_preferred_output": []}, "missing_field"),
    (openai_dpo_row_problems, {**DPO_OK, "id": "pref-1"}, "unknown_key"),
    (openai_dpo_row_problems, {**DPO_OK, "input": msgs(("user", "p"))}, "bad_input"),
    (
        openai_dpo_row_problems,
        {**DPO_OK, "input": {"messages": msgs(("user", "p"), ("assistant", "x"))}},
        "bad_turn_order",
    ),
    (
        openai_dpo_row_problems,
        {**DPO_OK, "preferred_output": msgs(("assistant", "a"), ("assistant", "b"))},
        "bad_output",
    ),
    (openai_dpo_row_problems, {**DPO_OK, "non_preferred_output": msgs(("user", "bad"))}, "bad_output"),
    (openai_dpo_row_problems, {**DPO_OK, "non_preferred_output": msgs(("assistant", "good"))}, "same_text_both_sides"),
    (openai_dpo_row_problems, {**DPO_OK, "preferred_output": msgs(("assistant", ""))}, "empty_content"),
]


@pytest.mark.parametrize(("check", "row", "code"), BROKEN_ROWS)
def test_broken_rows_are_caught_with_their_code(check: Any, row: Any, code: str) -> None:
    problems = check(row)
    assert code in {problem.split(":", 1)[0] for problem in problems}, problems


def test_check_file_reports_blank_malformed_and_bad_lines_by_number(tmp_path: Path) -> None:
    path = tmp_path / "openai_chat.jsonl"
    good = orjson.dumps({"messages": msgs(("user", "q"), ("assistant", "a"))})
    path.write_bytes(good + b"\n\n{not json\n" + orjson.dumps({"messages": msgs(("user", "q"))}) + b"\n")
    report = check_file(path, openai_chat_row_problems)
    assert report.rows == 3
    assert [problem.split(": ")[:2] for problem in report.problems] == [
        ["blank_line", "openai_chat.jsonl:2"],
        ["malformed_json", "openai_chat.jsonl:3"],
        ["no_assistant_turn", "openai_chat.jsonl:4"],
    ]
    assert not report.ok


def test_check_file_lists_at_most_limit_problems_and_counts_the_rest(tmp_path: Path) -> None:
    path = tmp_path / "sft.jsonl"
    path.write_bytes(b"[]\n" * 7)
    report = check_file(path, sft_row_problems, limit=3)
    assert (len(report.problems), report.unlisted, report.ok) == (3, 4, False)


def test_a_missing_export_is_a_problem_not_an_empty_pass(tmp_path: Path) -> None:
    reports = check_exports(Layout.at(tmp_path))
    assert all(not r.ok and r.problems[0].startswith("missing_file:") for r in reports.values())


# --- the dataset card -----------------------------------------------------------------------------


def front_matter(card: Path) -> dict:
    text = card.read_text()
    assert text.startswith("---\n")
    return yaml.safe_load(text.split("---\n", 2)[1])


@pytest.fixture(scope="module")
def card(exported: Exported) -> Path:
    path = write_dataset_card(exported.layout, exported.outcome.run_id, exported.outcome.receipts)
    assert path == exported.layout.dataset_card()
    return path


def test_card_configs_make_load_dataset_of_the_folder_pick_the_right_files(exported: Exported, card: Path) -> None:
    folder = card.parent
    assert datasets.get_dataset_config_names(str(folder)) == [
        "sft",
        "preference",
        "rag",
        "openai_chat",
        "openai_dpo",
        "quarantine",
    ]
    receipts = exported.outcome.receipts
    default = load(exported, folder, split="train")  # no config name: the card's default, SFT
    assert "messages" in default.column_names
    assert default.num_rows == receipts["export-sft"].counts.records_out
    pairs = load(exported, folder, "preference", split="train")
    assert {"prompt", "chosen", "rejected"} <= set(pairs.column_names)
    assert pairs.num_rows == receipts["export-preference"].counts.records_out
    assert load(exported, folder, "openai_dpo", split="train").column_names == [
        "input",
        "non_preferred_output",
        "preferred_output",
    ]
    quarantine = load(exported, folder, "quarantine")
    for dataset in ("rag", "sft", "preference"):
        assert quarantine[dataset].num_rows == receipts[f"export-{dataset}"].counts.quarantined


def test_card_states_sizes_hashes_mix_sources_filters_quarantine_and_run(exported: Exported, card: Path) -> None:
    text = card.read_text()
    layout, receipts = exported.layout, exported.outcome.receipts
    assert f"run id: `{exported.outcome.run_id}`" in text
    for name in ("sft", "preference", "rag", "openai_chat", "openai_dpo"):
        path = export_path(layout, name)
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        expected = (
            f"| {name} | `{layout.relative(path)}` | {line_count(path)} | {path.stat().st_size} | `{digest}` | yes |"
        )
        assert expected in text, expected
    for stage, dataset in (("export-sft", "sft"), ("export-rag", "rag"), ("export-preference", "preference")):
        for category, n in receipts[stage].counts.per_category.items():
            assert f"| {dataset} | {category} | {n} |" in text
    scrum_in_sft = sum(
        1
        for line in layout.sft_file.read_bytes().splitlines()
        if orjson.loads(line)["provenance"]["stream"] == "scrum_reviews"
    )
    assert f"| scrum_reviews | {scrum_in_sft} |" in text
    assert "(include_partial=False)" in text and "(include_review=False)" in text and "(max_pairs_per_task=5)" in text
    assert "recorded_at: `2026-11-01T00:00:00Z`" in text
    reasons = {
        r for stage in ("export-rag", "export-sft", "export-preference") for r in receipts[stage].counts.per_reason
    }
    for reason in reasons:
        row = [
            receipts[stage].counts.per_reason.get(reason, 0)
            for stage in ("export-rag", "export-sft", "export-preference")
        ]
        assert f"| {reason} | {row[0]} | {row[1]} | {row[2]} |" in text


def test_card_is_the_same_bytes_when_written_twice_and_leaves_no_temp_files(exported: Exported, card: Path) -> None:
    before = card.read_bytes()
    write_dataset_card(exported.layout, exported.outcome.run_id, exported.outcome.receipts)
    assert card.read_bytes() == before
    assert not [p.name for p in card.parent.iterdir() if p.name.endswith(".tmp")]


def copy_exports(exported: Exported, root: Path) -> Layout:
    layout = Layout.at(root)
    shutil.copytree(exported.layout.exports_dir, layout.exports_dir)
    return layout


def test_card_leaves_empty_files_out_of_configs_and_says_what_this_run_did_not_refresh(
    exported: Exported, tmp_path: Path
) -> None:
    layout = copy_exports(exported, tmp_path / "root")
    layout.preference_file.write_bytes(b"")
    layout.preference_openai_file.write_bytes(b"")
    receipts = {k: v for k, v in exported.outcome.receipts.items() if k != "export-preference"}
    card = write_dataset_card(layout, "run-without-preference", receipts)
    names = [config["config_name"] for config in front_matter(card)["configs"]]
    assert names == ["sft", "rag", "openai_chat", "quarantine"]
    text = card.read_text()
    assert "| preference | `exports/preference/chosen_rejected.jsonl` | 0 | 0 |" in text
    assert "no: an earlier run's file" in text
    assert "- **preference** (not run in this run)" in text
    assert load(exported, card.parent, split="train").num_rows == line_count(layout.sft_file)


def test_card_flags_a_dataset_changed_since_its_receipt(exported: Exported, tmp_path: Path) -> None:
    layout = copy_exports(exported, tmp_path / "root")
    with open(layout.sft_file, "ab") as handle:
        handle.write(orjson.dumps({"messages": msgs(("user", "q"), ("assistant", "a"))}) + b"\n")
    text = write_dataset_card(layout, exported.outcome.run_id, exported.outcome.receipts).read_text()
    sft_line = next(line for line in text.splitlines() if line.startswith("| sft |"))
    assert "changed since" in sft_line
