"""Every quarantine reason of the taxonomy, each produced by the case that should produce it."""


import orjson
import pytest
from pydantic import ValidationError

from distillation_pipeline.exports import export_preference, export_rag, export_sft
from distillation_pipeline.exports.candidates import describe
from distillation_pipeline.lib.layout import Layout
from distillation_pipeline.schemas import QUARANTINE_REASONS, QuarantineRecord, ScoredRun
from distillation_pipeline_tests.export_fixtures import (
    conserved,
    append_json,
    append_lines,
    make_run,
    read_jsonl,
    relative_file,
    write_manifest,
    write_runs,
)

AWS_KEY = "AKIA" + "IOSFODNN7EXAMPL1"  # split so this file itself holds no key-shaped literal


def quarantined(layout: Layout, dataset: str) -> list[dict]:
    rows = read_jsonl(layout.quarantine_file(dataset))
    for row in rows:
        QuarantineRecord.model_validate(row)  # every row is a valid record with one known reason
    return rows


# --- broken positions: provenance, scored run, schema ---------------------------------------


def test_evidence_without_provenance_is_missing_provenance(layout: Layout) -> None:
    run = make_run("a")
    rel = write_runs(layout, [run], scored=False)[0]
    evidence = run.evidence.model_dump(mode="json")
    del evidence["provenance"]
    append_lines(layout.evidence_dir / rel, [orjson.dumps(evidence) + b"\n"])
    append_lines(layout.scored_dir / rel, [orjson.dumps(run.scored.model_dump(mode="json")) + b"\n"] * 2)
    # line 0: the intact record, line 1: the one without provenance
    conserved(export_sft(layout))
    (row,) = quarantined(layout, "sft")
    assert row["reason"] == "missing_provenance" and row["evidence_id"] == run.id


def test_scored_run_with_no_evidence_line_is_missing_provenance(layout: Layout) -> None:
    first, extra = make_run("a"), make_run("b")
    rel = write_runs(layout, [first])[0]
    append_lines(layout.scored_dir / rel, [orjson.dumps(extra.scored.model_dump(mode="json")) + b"\n"])
    result = conserved(export_rag(layout))
    assert result.written == 1
    (row,) = quarantined(layout, "rag")
    assert row["reason"] == "missing_provenance" and row["evidence_id"] == extra.id


def test_evidence_with_no_scored_run_is_missing_source_run_id(layout: Layout) -> None:
    write_runs(layout, [make_run("a")], scored=False)
    conserved(export_sft(layout))
    assert [row["reason"] for row in quarantined(layout, "sft")] == ["missing_source_run_id"]


def test_scored_run_of_another_record_is_missing_source_run_id(layout: Layout) -> None:
    """The mirrored files out of step (scored lines swapped): zipping must not mislabel a run."""
    first, second = make_run("a"), make_run("b", category="rejected")
    rel = write_runs(layout, [first, second], scored=False)[0]
    scored = [orjson.dumps(run.scored.model_dump(mode="json")) + b"\n" for run in (second, first)]
    append_lines(layout.scored_dir / rel, scored)
    result = conserved(export_sft(layout))
    assert result.written == 0
    rows = quarantined(layout, "sft")
    assert [row["reason"] for row in rows] == ["missing_source_run_id"] * 2
    assert rows[0]["evidence_id"] == first.id and second.id in rows[0]["detail"]


def test_unparseable_evidence_line_is_schema_violation(layout: Layout) -> None:
    run = make_run("a")
    rel = relative_file(run)
    append_lines(layout.evidence_dir / rel, [b'{"id": "cut off mid-wri\n'])
    append_lines(layout.scored_dir / rel, [orjson.dumps(run.scored.model_dump(mode="json")) + b"\n"])
    conserved(export_rag(layout))
    assert [row["reason"] for row in quarantined(layout, "rag")] == ["schema_violation"]


def test_evidence_in_another_streams_file_is_schema_violation(layout: Layout) -> None:
    run = make_run("a")
    rel = relative_file(run).replace("scrum_reviews", "observer_reviews")
    line = orjson.dumps(run.evidence.model_dump(mode="json")) + b"\n"
    append_lines(layout.evidence_dir / rel, [line])
    append_lines(layout.scored_dir / rel, [orjson.dumps(run.scored.model_dump(mode="json")) + b"\n"])
    conserved(export_sft(layout))
    (row,) = quarantined(layout, "sft")
    assert row["reason"] == "schema_violation" and "partition" in row["detail"]


@pytest.mark.parametrize(
    "evidence_change,scored_change",
    [
        ({}, {}),  # the scorer's copy of the evidence's provenance
        ({}, {"line_offset": 0.0}),  # == the evidence's 0, yet another JSON value: validated again
        ({}, {"sig_hash": "f" * 63}),
        ({}, {"recorded_at": "not a time"}),
        ({}, {"extra": 1}),
        ({"recorded_at": 1}, {"recorded_at": 1}),
        ({"recorded_at": 1}, {"recorded_at": True}),  # True == 1, but no datetime: refused
    ],
)
def test_scored_provenance_gets_the_verdict_of_its_own_validation(
    layout: Layout, evidence_change: dict, scored_change: dict
) -> None:
    """The export may take the evidence line's validated provenance for the scored line's when
    the two are the same JSON; the verdict and its detail must be what validating it gives."""
    run = make_run("a")
    rel = relative_file(run)
    evidence = run.evidence.model_dump(mode="json")
    evidence["provenance"] |= evidence_change
    scored = run.scored.model_dump(mode="json")
    scored["provenance"] = {**evidence["provenance"], **scored_change}
    append_json(layout.evidence_dir / rel, evidence)
    append_json(layout.scored_dir / rel, scored)
    try:
        ScoredRun.model_validate(scored)
        expected = []
    except ValidationError as exc:
        expected = [("schema_violation", f"scored run: {describe(exc)}")]
    result = conserved(export_rag(layout))
    assert [(row["reason"], row["detail"]) for row in quarantined(layout, "rag")] == expected
    assert result.written == (0 if expected else 1)


# --- content ---------------------------------------------------------------------------------


@pytest.mark.parametrize("prompt,response", [("Fix it", "   "), ("", "Done"), ("Fix it", None)])
def test_sft_needs_prompt_and_response_text(layout: Layout, prompt: str, response: str | None) -> None:
    run = make_run("a", prompt=prompt, response=response, content="only content" if response is None else None)
    write_runs(layout, [run])
    conserved(export_sft(layout))
    assert [row["reason"] for row in quarantined(layout, "sft")] == ["empty_content"]


def test_rag_with_no_text_is_empty_content(layout: Layout) -> None:
    write_runs(layout, [make_run("a", stream="distilled_facts", prompt=None, response=None, content=" \n ")])
    conserved(export_rag(layout))
    assert [row["reason"] for row in quarantined(layout, "rag")] == ["empty_content"]


@pytest.mark.parametrize("export", [export_rag, export_sft])
def test_exact_duplicate_content_is_duplicate_id_and_first_is_kept(layout: Layout, export) -> None:
    same = {"prompt": "Fix routing", "response": "Edited services/router/provider_adapter.py"}
    first = make_run("first", **same)
    second = make_run("second", category="partially_accepted", **same)
    write_runs(layout, [first, second])
    result = conserved(export(layout, **({"include_partial": True} if export is export_sft else {})))
    dataset = result.dataset
    (row,) = read_jsonl(layout.dataset_file(dataset))
    assert row["provenance"]["evidence_id"] == first.id
    (refused,) = quarantined(layout, dataset)
    assert refused["reason"] == "duplicate_id" and refused["evidence_id"] == second.id
    assert f"same content as {row['id']}" in refused["detail"] and first.id in refused["detail"]


@pytest.mark.parametrize("export", [export_rag, export_sft])
def test_credential_in_text_is_secret_detected_and_not_echoed(layout: Layout, export) -> None:
    write_runs(layout, [make_run("a", response=f"Set AWS_ACCESS_KEY_ID={AWS_KEY} then retry")])
    result = conserved(export(layout))
    assert result.written == 0
    (row,) = quarantined(layout, result.dataset)
    assert row["reason"] == "secret_detected" and "aws_access_key_id" in row["detail"]
    assert AWS_KEY not in layout.quarantine_file(result.dataset).read_text()


@pytest.mark.parametrize("export", [export_rag, export_sft])
def test_cited_path_missing_from_manifest_is_hallucinated(layout: Layout, export) -> None:
    write_manifest(layout)
    write_runs(
        layout,
        [
            make_run("real", response="Edited services/router/provider_adapter.py"),
            make_run("suffix", response="Edited router/provider_adapter.py"),  # a trailing part of a real path
            make_run("ghost", response="Edited services/router/ghost_adapter.py and README.md"),
        ],
    )
    result = conserved(export(layout))
    assert result.written == 2 and result.checks_not_run == []
    (row,) = quarantined(layout, result.dataset)
    assert row["reason"] == "hallucinated_file_path" and "services/router/ghost_adapter.py" in row["detail"]
    assert layout.repo_manifest in result.inputs


@pytest.mark.parametrize("export", [export_rag, export_sft, export_preference])
def test_without_manifest_paths_are_not_refused_and_check_reported_not_run(layout: Layout, export) -> None:
    write_runs(layout, [make_run("ghost", response="Edited services/router/ghost_adapter.py")])
    result = conserved(export(layout))
    assert result.checks_not_run == ["hallucinated_file_path"]
    assert "hallucinated_file_path" not in result.per_reason


def test_quarantine_row_time_is_the_evidence_recorded_at(layout: Layout) -> None:
    write_runs(layout, [make_run("a", category="rejected")])
    export_sft(layout)
    (row,) = quarantined(layout, "sft")
    assert row["created_at"] == "2026-11-01T00:00:00Z"


# --- the whole taxonomy ----------------------------------------------------------------------


def test_every_reason_in_the_taxonomy_is_reachable(layout: Layout) -> None:
    """One substrate, three exports: the union of reasons is exactly the spec's twelve."""
    write_manifest(layout)
    dup = {"prompt": "Dup task", "response": "Same answer twice"}
    runs = [
        make_run("acc"),
        make_run("part", category="partially_accepted"),
        make_run("rej", category="rejected", response="Wrong answer"),
        make_run("rev", category="needs_human_review", response="Unsure"),
        make_run("dup1", **dup),
        make_run("dup2", **dup),
        make_run("empty", response=" "),
        make_run("secret", response=f"key {AWS_KEY}"),
        make_run("ghost", response="see services/ghost.py"),
        # preference: same text on both sides, and one run id on both sides
        make_run("same-a", task_id="t-same", response="Identical"),
        make_run("same-r", task_id="t-same", category="rejected", response="Identical"),
        make_run("self-a", task_id="t-self", response="Good", evidence_id="scrum_reviews:selfselfselfselfself"),
        make_run(
            "self-r",
            task_id="t-self",
            category="rejected",
            response="Bad",
            evidence_id="scrum_reviews:selfselfselfselfself",
        ),
    ]
    rel = write_runs(layout, runs)[0]
    broken = make_run("broken")
    no_provenance = broken.evidence.model_dump(mode="json")
    del no_provenance["provenance"]
    # three broken positions: no provenance, not JSON (schema_violation), no scored run
    unscored = orjson.dumps(make_run("unscored").evidence.model_dump(mode="json")) + b"\n"
    append_lines(layout.evidence_dir / rel, [orjson.dumps(no_provenance) + b"\n", b"not json\n", unscored])
    append_lines(layout.scored_dir / rel, [orjson.dumps(broken.scored.model_dump(mode="json")) + b"\n"] * 2)
    seen: set[str] = set()
    for result in (conserved(export_rag(layout)), conserved(export_sft(layout)), conserved(export_preference(layout))):
        seen |= set(result.per_reason)
    assert seen == set(QUARANTINE_REASONS), set(QUARANTINE_REASONS) - seen


def test_nan_in_evidence_or_scored_line_is_refused_not_exported(layout: Layout) -> None:
    """pydantic's JSON parser would take NaN; the exporter must refuse it as orjson does."""
    from distillation_pipeline.exports import export_rag
    from distillation_pipeline_tests.export_fixtures import make_run, write_manifest, write_runs

    write_manifest(layout)
    write_runs(layout, [make_run("ok"), make_run("nan-ev"), make_run("nan-sc")])
    (evidence,) = layout.evidence_dir.rglob("*.jsonl")
    scored = layout.scored_dir / evidence.relative_to(layout.evidence_dir)
    ev_lines, sc_lines = evidence.read_bytes().splitlines(), scored.read_bytes().splitlines()
    ev_lines[1] = ev_lines[1].replace(b'"key":"nan-ev"', b'"key":NaN')
    sc_lines[2] = sc_lines[2].replace(b'"reasons":["fixture"]', b'"reasons":["fixture"],"x":Infinity')
    evidence.write_bytes(b"\n".join(ev_lines) + b"\n")
    scored.write_bytes(b"\n".join(sc_lines) + b"\n")
    result = conserved(export_rag(layout))
    assert result.written == 1 and result.per_reason == {"schema_violation": 1, "missing_source_run_id": 1}
