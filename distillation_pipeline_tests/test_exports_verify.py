"""verify_*: re-read written datasets and find rows planted behind the exporter's back."""

import hashlib
from pathlib import Path

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from distillation_pipeline.exports import (
    export_preference,
    export_rag,
    export_sft,
    verify_dataset,
)
from distillation_pipeline.exports import verify as verify_module
from distillation_pipeline.exports.verify import verify_sft
from distillation_pipeline.lib.layout import Layout
from distillation_pipeline_tests.export_fixtures import (
    append_json,
    append_lines,
    make_run,
    read_jsonl,
    write_manifest,
    write_runs,
)

GITHUB_TOKEN = "ghp_" + "Zx9vQ2mN" * 5


@pytest.fixture
def layout(tmp_path: Path) -> Layout:
    layout = Layout.at(tmp_path / "root")
    write_manifest(layout)
    write_runs(
        layout,
        [
            make_run("g1", task_id="t1", prompt="Fix routing", response="Edited services/router/provider_adapter.py"),
            make_run("g2", task_id="t1", prompt="Fix routing", response="Also edited README.md"),
            make_run("p1", task_id="t1", category="partially_accepted", response="Half done"),
            make_run("b1", task_id="t1", category="rejected", response="Broke it"),
            make_run("b2", task_id="t1", category="rejected", response="Broke it differently"),
            make_run("r1", task_id="t2", category="needs_human_review", response="Unsure"),
        ],
    )
    export_rag(layout)
    export_sft(layout)
    export_preference(layout)
    return layout


def codes(violations: list[str]) -> set[str]:
    return {line.split(":", 1)[0] for line in violations}


def first_row(path: Path) -> dict:
    return read_jsonl(path)[0]


@pytest.mark.parametrize("dataset", ["rag", "sft", "preference"])
def test_a_clean_export_has_no_violations(layout: Layout, dataset: str) -> None:
    assert read_jsonl(layout.dataset_file(dataset)), "the fixture must export something to verify"
    assert verify_dataset(layout, dataset) == []


def test_rejected_row_appended_to_rag_is_found(layout: Layout) -> None:
    row = first_row(layout.rag_file)
    append_json(layout.rag_file, {**row, "id": "rag-planted", "source_category": "rejected"})
    violations = verify_dataset(layout, "rag")
    assert "forbidden_category" in codes(violations)
    assert any("rejected" in line and "playbooks.jsonl:" in line for line in violations)


def test_review_row_in_rag_is_a_violation_unless_opted_in(layout: Layout) -> None:
    row = first_row(layout.rag_file)
    append_json(
        layout.rag_file,
        {**row, "source_category": "needs_human_review", "id": "rag-x", "content": "other", "title": "t"},
    )
    assert "forbidden_category" in codes(verify_dataset(layout, "rag"))
    assert "forbidden_category" not in codes(verify_dataset(layout, "rag", include_review=True))


@pytest.mark.parametrize("category", ["rejected", "needs_human_review", "partially_accepted"])
def test_forbidden_category_appended_to_sft_is_found(layout: Layout, category: str) -> None:
    row = first_row(layout.sft_file)
    append_json(layout.sft_file, {**row, "quality_score": category})
    violations = verify_dataset(layout, "sft")
    assert {"forbidden_category", "duplicate_id", "variant_mismatch"} <= codes(violations)
    if category == "partially_accepted":
        assert "forbidden_category" not in codes(verify_dataset(layout, "sft", include_partial=True))


def test_self_pair_appended_to_preference_is_found(layout: Layout) -> None:
    row = first_row(layout.preference_file)
    planted = {
        **row,
        "rejected_provenance": row["chosen_provenance"],
        "rejected": "something else",
        "id": "pref-planted",
    }
    append_json(layout.preference_file, planted)
    assert "self_pairing" in codes(verify_dataset(layout, "preference"))


def test_same_text_pair_appended_to_preference_is_found(layout: Layout) -> None:
    row = first_row(layout.preference_file)
    append_json(layout.preference_file, {**row, "rejected": row["chosen"] + "  "})
    assert "invalid_preference_pairing" in codes(verify_dataset(layout, "preference"))


@pytest.mark.parametrize("dataset,field", [("rag", "content"), ("preference", "chosen")])
def test_credential_appended_is_found_and_not_echoed(layout: Layout, dataset: str, field: str) -> None:
    path = layout.dataset_file(dataset)
    row = first_row(path)
    append_json(path, {**row, field: f"token {GITHUB_TOKEN}"})
    violations = verify_dataset(layout, dataset)
    assert "secret_detected" in codes(violations)
    assert not any(GITHUB_TOKEN in line for line in violations)


def test_credential_in_sft_message_and_in_openai_file_are_found(layout: Layout) -> None:
    row = first_row(layout.sft_file)
    leaked = [row["messages"][0], {"role": "assistant", "content": f"export KEY={GITHUB_TOKEN}"}]
    append_json(layout.sft_file, {**row, "messages": leaked})
    append_json(layout.sft_openai_file, {"messages": leaked})
    violations = verify_dataset(layout, "sft")
    assert sum(line.startswith("secret_detected:") for line in violations) == 2
    assert any("openai_chat.jsonl" in line for line in violations if line.startswith("secret_detected"))


def test_credential_only_in_openai_preference_file_is_found(layout: Layout) -> None:
    append_json(
        layout.preference_openai_file,
        {
            "input": {"messages": [{"role": "user", "content": "P"}]},
            "preferred_output": [{"role": "assistant", "content": f"use {GITHUB_TOKEN}"}],
            "non_preferred_output": [{"role": "assistant", "content": "no"}],
        },
    )
    assert {"secret_detected", "variant_mismatch"} <= codes(verify_dataset(layout, "preference"))


def test_duplicate_row_is_found(layout: Layout) -> None:
    append_lines(layout.rag_file, [layout.rag_file.read_bytes().splitlines(keepends=True)[0]])
    assert codes(verify_dataset(layout, "rag")) == {"duplicate_id"}


def test_edited_text_no_longer_matches_its_id(layout: Layout) -> None:
    rows = read_jsonl(layout.sft_file)
    rows[0]["messages"][1]["content"] = "a quietly edited answer"
    layout.sft_file.write_bytes(b"".join(orjson.dumps(row) + b"\n" for row in rows))
    assert "id_mismatch" in codes(verify_dataset(layout, "sft"))


def test_row_without_provenance_is_found(layout: Layout) -> None:
    row = first_row(layout.rag_file)
    append_json(layout.rag_file, {**row, "id": "rag-2", "provenance": {"evidence_id": "x"}})
    assert {"missing_provenance", "missing_source_run_id"} <= codes(verify_dataset(layout, "rag"))


def test_hallucinated_path_planted_is_found(layout: Layout) -> None:
    row = first_row(layout.rag_file)
    append_json(layout.rag_file, {**row, "id": "rag-3", "cited_paths": ["services/ghost.py"]})
    assert "hallucinated_file_path" in codes(verify_dataset(layout, "rag"))


def test_too_many_pairs_for_one_task_is_found(layout: Layout) -> None:
    rows = read_jsonl(layout.preference_file)
    for i in range(6):
        append_json(layout.preference_file, {**rows[0], "id": f"pref-extra-{i}"})
    assert "too_many_pairs" in codes(verify_dataset(layout, "preference", max_pairs_per_task=5))


def test_corrupt_line_is_reported_and_later_rows_still_checked(layout: Layout) -> None:
    row = first_row(layout.rag_file)
    append_lines(layout.rag_file, [b"{not json\n"])
    append_json(layout.rag_file, {**row, "id": "rag-4", "source_category": "rejected"})
    assert {"malformed_row", "forbidden_category"} <= codes(verify_dataset(layout, "rag"))


def test_missing_dataset_file_is_a_violation(tmp_path: Path) -> None:
    assert codes(verify_dataset(Layout.at(tmp_path), "sft")) == {"missing_file"}


def test_violations_beyond_the_limit_are_counted_not_listed(layout: Layout) -> None:
    row = first_row(layout.sft_file)
    for i in range(5):
        append_json(layout.sft_file, {**row, "quality_score": "rejected", "id": f"sft-{i}"})
    violations = verify_sft(layout.sft_file, limit=3)
    assert len(violations) == 4 and violations[-1].startswith("truncated:")


def test_unknown_dataset_is_an_error(layout: Layout) -> None:
    with pytest.raises(ValueError):
        verify_dataset(layout, "nope")


@given(
    lines=st.lists(st.binary(max_size=40).map(lambda b: b.replace(b"\n", b"")) | st.sampled_from([b"", b"  ", b"\t"]), max_size=60),
    chunk=st.integers(1, 64),
    n=st.integers(1, 9),
    max_bytes=st.none() | st.integers(1, 120),
    last_newline=st.booleans(),
)
@settings(max_examples=300, deadline=None)
def test_rows_come_in_batches_of_at_most_n_rows_and_max_bytes_each_exactly_once(
    tmp_path_factory: pytest.TempPathFactory, lines: list[bytes], chunk: int, n: int, max_bytes: int | None, last_newline: bool
) -> None:
    data = b"\n".join(lines) + (b"\n" if last_newline and lines else b"")
    path = tmp_path_factory.mktemp("rows") / "d.jsonl"
    path.write_bytes(data)
    expected, offset = [], 0
    for number, line in enumerate(data.split(b"\n") if data else [], start=1):
        if line.strip():
            expected.append((number, offset, offset + len(line), line))
        offset += len(line) + 1
    hasher = hashlib.sha256()
    rows = verify_module._Rows(path, hasher)  # noqa: SLF001
    got = []
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(verify_module, "_CHUNK_BYTES", chunk)
        while True:
            texts, numbers, starts, ends = rows.take(n, max_bytes)
            if not texts:
                break
            assert len(texts) <= n
            if max_bytes is not None and len(texts) > 1:
                assert ends[-1] - starts[0] <= max_bytes
            got += [(int(a), int(b), int(c), bytes(t)) for a, b, c, t in zip(numbers, starts, ends, texts, strict=True)]
    assert [(a, b, bytes(t)) for a, b, _, t in got] == [(a, b, t) for a, b, _, t in expected]
    assert hasher.digest() == hashlib.sha256(data).digest()


@pytest.mark.parametrize("batch_bytes", [1, 1000, 2500])  # rows here: ~940 bytes, their OpenAI twins ~220
def test_a_check_in_batches_bounded_by_bytes_finds_what_one_in_large_batches_finds(
    layout: Layout, monkeypatch: pytest.MonkeyPatch, batch_bytes: int
) -> None:
    rows = read_jsonl(layout.preference_file)
    for i in range(3):
        append_json(layout.preference_file, {**rows[0], "id": f"pref-extra-{i}"})
    append_json(layout.preference_file, {**rows[0], "id": "pref-leak", "rejected": f"use {GITHUB_TOKEN}"})
    append_lines(layout.preference_file, [layout.preference_file.read_bytes().splitlines(keepends=True)[0]])
    for variant in (layout.sft_openai_file, layout.preference_openai_file):  # one row longer than its main file
        append_lines(variant, [variant.read_bytes().splitlines(keepends=True)[0]])
    whole = {dataset: verify_dataset(layout, dataset, max_pairs_per_task=2) for dataset in ("rag", "sft", "preference")}
    assert {"too_many_pairs", "duplicate_id", "secret_detected", "variant_mismatch"} <= codes(whole["preference"])
    assert "variant_mismatch" in codes(whole["sft"])
    monkeypatch.setattr(verify_module, "_BATCH_BYTES", batch_bytes)
    monkeypatch.setattr(verify_module, "_CHUNK_BYTES", 5)
    assert {dataset: verify_dataset(layout, dataset, max_pairs_per_task=2) for dataset in whole} == whole
