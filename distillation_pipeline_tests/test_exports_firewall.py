"""The contamination firewall: category rules per dataset, and each layer holding alone."""

from datetime import datetime

import pytest
from pydantic import BaseModel, ConfigDict

from distillation_pipeline.exports import export_rag, export_sft, firewall, rag, sft
from distillation_pipeline.lib.layout import Layout
from distillation_pipeline.schemas import ChatMessage, ExportProvenance
from distillation_pipeline_tests.export_fixtures import (
    conserved,
    make_run,
    read_jsonl,
    reasons,
    write_runs,
)


def one_of_each(layout: Layout) -> None:
    write_runs(
        layout,
        [
            make_run("acc", category="accepted"),
            make_run("part", category="partially_accepted"),
            make_run("rej", category="rejected"),
            make_run("rev", category="needs_human_review"),
        ],
    )


# --- SFT -----------------------------------------------------------------------------------


def test_sft_admits_only_accepted_by_default(layout: Layout) -> None:
    one_of_each(layout)
    result = conserved(export_sft(layout))
    assert [row["quality_score"] for row in read_jsonl(layout.sft_file)] == ["accepted"]
    assert result.per_reason == {"category_disallowed": 1, "unsafe_sft_category": 2}
    quarantined = {row["category"]: row["reason"] for row in read_jsonl(layout.quarantine_file("sft"))}
    assert quarantined == {
        "partially_accepted": "category_disallowed",
        "rejected": "unsafe_sft_category",
        "needs_human_review": "unsafe_sft_category",
    }


def test_sft_include_partial_admits_partial_but_never_rejected_or_review(layout: Layout) -> None:
    one_of_each(layout)
    result = conserved(export_sft(layout, include_partial=True))
    assert sorted(row["quality_score"] for row in read_jsonl(layout.sft_file)) == ["accepted", "partially_accepted"]
    assert result.per_reason == {"unsafe_sft_category": 2}
    assert result.per_category == {"accepted": 1, "partially_accepted": 1}


def test_sft_rows_load_as_chat_messages_and_openai_layout(layout: Layout) -> None:
    write_runs(layout, [make_run("acc", prompt="Fix the router", response="Done: services/router/provider_adapter.py")])
    export_sft(layout)
    (row,) = read_jsonl(layout.sft_file)
    assert row["messages"] == [
        {"role": "user", "content": "Fix the router"},
        {"role": "assistant", "content": "Done: services/router/provider_adapter.py"},
    ]
    assert row["id"].startswith("sft-") and row["created_at"] == "2026-11-01T00:00:00Z"
    assert row["provenance"]["evidence_id"] == row["provenance"]["scored_run_id"]
    assert read_jsonl(layout.sft_openai_file) == [{"messages": row["messages"]}]


def test_content_only_and_ledger_streams_are_ineligible_for_sft_not_quarantined(layout: Layout) -> None:
    write_runs(layout, [make_run("fact", stream="distilled_facts", prompt=None, content="Use retries")])
    write_runs(
        layout,
        [make_run("trust", stream="model_trust", task_id=None, prompt=None, content=None, response="x")],
        scored=False,
    )
    write_runs(layout, [make_run("acc")])
    result = conserved(export_sft(layout))
    assert result.ineligible == {"distilled_facts": 1, "model_trust": 1}
    assert result.written == 1 and result.quarantined == 0


# --- RAG -----------------------------------------------------------------------------------


def test_rag_admits_accepted_and_partial_by_default(layout: Layout) -> None:
    one_of_each(layout)
    result = conserved(export_rag(layout))
    assert sorted(row["source_category"] for row in read_jsonl(layout.rag_file)) == ["accepted", "partially_accepted"]
    assert result.per_reason == {"unsafe_rag_category": 1, "category_disallowed": 1}


def test_rag_include_review_admits_review_but_never_rejected(layout: Layout) -> None:
    one_of_each(layout)
    result = conserved(export_rag(layout, include_review=True))
    categories = sorted(row["source_category"] for row in read_jsonl(layout.rag_file))
    assert categories == ["accepted", "needs_human_review", "partially_accepted"]
    assert reasons(layout.quarantine_file("rag")) == ["unsafe_rag_category"]
    assert result.per_category == {"accepted": 1, "partially_accepted": 1, "needs_human_review": 1}


def test_rag_row_has_title_content_and_cited_paths(layout: Layout) -> None:
    write_runs(
        layout,
        [
            make_run(
                "pr", prompt="\nFix routing\nsecond line", response="Edited services/router/provider_adapter.py:12"
            ),
            make_run("c", stream="audits", prompt=None, content="Routing topic\n\nevidence", task_id="task-9"),
        ],
    )
    export_rag(layout)
    rows = {row["title"]: row for row in read_jsonl(layout.rag_file)}
    assert set(rows) == {"Fix routing", "audits task-9"}
    assert (
        rows["Fix routing"]["content"] == "\nFix routing\nsecond line\n\nEdited services/router/provider_adapter.py:12"
    )
    assert rows["Fix routing"]["cited_paths"] == ["services/router/provider_adapter.py"]
    assert rows["audits task-9"]["content"] == "Routing topic\n\nevidence"
    assert all(row["id"].startswith("rag-") for row in rows.values())


def test_model_trust_is_ineligible_for_rag(layout: Layout) -> None:
    write_runs(layout, [make_run("trust", stream="model_trust", task_id=None, prompt=None, response="x")], scored=False)
    result = conserved(export_rag(layout))
    assert result.ineligible == {"model_trust": 1} and result.written == 0 and result.quarantined == 0


# --- the two layers, each alone --------------------------------------------------------------


class PermissiveSftSample(BaseModel):
    """SftSample without its firewall: any category, as a broken schema would allow."""

    model_config = ConfigDict(frozen=True)
    schema_version: int = 1
    id: str
    created_at: datetime
    task_id: str | None = None
    messages: list[ChatMessage]
    quality_score: str
    provenance: ExportProvenance


class PermissiveRagSample(BaseModel):
    model_config = ConfigDict(frozen=True)
    schema_version: int = 1
    id: str
    created_at: datetime
    task_id: str | None = None
    title: str
    content: str
    source_category: str
    cited_paths: list[str]
    provenance: ExportProvenance


def unsafe_runs(layout: Layout) -> None:
    write_runs(layout, [make_run("rej", category="rejected"), make_run("rev", category="needs_human_review")])


def test_control_with_both_layers_broken_unsafe_rows_leak(layout: Layout, monkeypatch: pytest.MonkeyPatch) -> None:
    """Proves the two tests below would see a leak: break both layers and rows get through."""
    unsafe_runs(layout)
    monkeypatch.setattr(sft, "SftSample", PermissiveSftSample)
    monkeypatch.setattr(firewall, "sft_refusal", lambda category, include_partial: None)
    export_sft(layout)
    assert sorted(row["quality_score"] for row in read_jsonl(layout.sft_file)) == ["needs_human_review", "rejected"]


def test_sft_schema_layer_holds_when_exporter_layer_is_bypassed(
    layout: Layout, monkeypatch: pytest.MonkeyPatch
) -> None:
    unsafe_runs(layout)
    monkeypatch.setattr(firewall, "sft_refusal", lambda category, include_partial: None)
    result = conserved(export_sft(layout, include_partial=True))
    assert read_jsonl(layout.sft_file) == [] and read_jsonl(layout.sft_openai_file) == []
    assert result.per_reason == {"schema_violation": 2}
    details = [row["detail"] for row in read_jsonl(layout.quarantine_file("sft"))]
    assert all("firewall: SFT never admits" in detail for detail in details)


def test_sft_exporter_layer_holds_with_a_permissive_schema(layout: Layout, monkeypatch: pytest.MonkeyPatch) -> None:
    unsafe_runs(layout)
    monkeypatch.setattr(sft, "SftSample", PermissiveSftSample)
    result = conserved(export_sft(layout, include_partial=True))
    assert read_jsonl(layout.sft_file) == []
    assert result.per_reason == {"unsafe_sft_category": 2}


def test_rag_schema_layer_holds_when_exporter_layer_is_bypassed(
    layout: Layout, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_runs(layout, [make_run("rej", category="rejected")])
    monkeypatch.setattr(firewall, "rag_refusal", lambda category, include_review: None)
    result = conserved(export_rag(layout, include_review=True))
    assert read_jsonl(layout.rag_file) == []
    assert result.per_reason == {"schema_violation": 1}


def test_rag_exporter_layer_holds_with_a_permissive_schema(layout: Layout, monkeypatch: pytest.MonkeyPatch) -> None:
    write_runs(layout, [make_run("rej", category="rejected")])
    monkeypatch.setattr(rag, "RagSample", PermissiveRagSample)
    result = conserved(export_rag(layout, include_review=True))
    assert read_jsonl(layout.rag_file) == []
    assert result.per_reason == {"unsafe_rag_category": 1}


def test_rag_control_with_both_layers_broken_rejected_leaks(layout: Layout, monkeypatch: pytest.MonkeyPatch) -> None:
    write_runs(layout, [make_run("rej", category="rejected")])
    monkeypatch.setattr(rag, "RagSample", PermissiveRagSample)
    monkeypatch.setattr(firewall, "rag_refusal", lambda category, include_review: None)
    export_rag(layout)
    assert [row["source_category"] for row in read_jsonl(layout.rag_file)] == ["rejected"]
