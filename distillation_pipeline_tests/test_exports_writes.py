"""Exports are deterministic, rewritten atomically per run, and a dry run writes nothing."""

import shutil
from pathlib import Path

import orjson
import pytest

from distillation_pipeline.exports import export_preference, export_rag, export_sft
from distillation_pipeline.lib.jsonl import dumps_line
from distillation_pipeline.lib.layout import Layout
from distillation_pipeline.schemas import PreferenceSample, RagSample, SftSample
from distillation_pipeline_tests.conftest import tree_bytes
from distillation_pipeline_tests.export_fixtures import (
    later,
    make_run,
    read_jsonl,
    write_manifest,
    write_runs,
)

EXPORTS = (export_rag, export_sft, export_preference)


def substrate(root: Path) -> Layout:
    layout = Layout.at(root)
    write_manifest(layout)
    runs = []
    for task in range(4):
        for i, category in enumerate(
            ["accepted", "accepted", "rejected", "partially_accepted", "needs_human_review", "rejected"]
        ):
            runs.append(
                make_run(
                    f"{task}-{i}",
                    task_id=f"t{task}",
                    category=category,
                    response=f"answer {task}/{i} in README.md",
                    recorded_at=later(i),
                )
            )
    runs.append(make_run("dup", task_id="t0", response="answer 0/0 in README.md"))  # duplicate content
    runs.append(make_run("fact", stream="distilled_facts", prompt=None, content="Retry with backoff"))
    write_runs(layout, runs)
    return layout


def export_all(layout: Layout) -> None:
    for export in EXPORTS:
        export(layout)


def test_same_input_gives_byte_identical_exports(tmp_path: Path) -> None:
    first = substrate(tmp_path / "a")
    export_all(first)
    once = tree_bytes(first.exports_dir)
    export_all(first)  # again over the same root
    assert tree_bytes(first.exports_dir) == once
    second = Layout.at(tmp_path / "b")
    shutil.copytree(first.root / "data", second.root / "data")  # same input, another root
    export_all(second)
    assert tree_bytes(second.exports_dir) == once
    assert all(
        once[name]
        for name in ("rag/playbooks.jsonl", "sft/instruction_response.jsonl", "preference/chosen_rejected.jsonl")
    )


def test_exported_time_is_recorded_at_not_wall_clock(tmp_path: Path) -> None:
    layout = Layout.at(tmp_path)
    write_runs(layout, [make_run("a", recorded_at=later(7))])
    export_sft(layout)
    assert [row["created_at"] for row in read_jsonl(layout.sft_file)] == ["2026-11-01T07:00:00Z"]


def test_every_row_is_what_its_validated_sample_dumps(tmp_path: Path) -> None:
    """Rows are validated as dicts and those dicts written, not the models dumped: the bytes must
    be the same, so a field the schema adds (a default) or changes on validation shows up here."""
    layout = substrate(tmp_path)
    export_all(layout)
    for model, path in [(RagSample, layout.rag_file), (SftSample, layout.sft_file),
                        (PreferenceSample, layout.preference_file)]:  # fmt: skip
        lines = path.read_bytes().splitlines(keepends=True)
        assert lines, path
        for line in lines:
            assert dumps_line(model.model_validate_json(line).model_dump(mode="json")) == line


@pytest.mark.parametrize("export", EXPORTS)
def test_dry_run_counts_but_writes_nothing(tmp_path: Path, export) -> None:
    layout = substrate(tmp_path)
    dry = export(layout, dry_run=True)
    assert not layout.exports_dir.exists() and dry.outputs == [] and dry.dry_run
    real = export(layout)
    assert (dry.records_in, dry.written, dry.quarantined, dry.per_reason) == (
        real.records_in,
        real.written,
        real.quarantined,
        real.per_reason,
    )
    assert all(path.is_file() for path in real.outputs)


@pytest.mark.parametrize("export", EXPORTS)
def test_each_run_rewrites_dataset_and_quarantine_whole(tmp_path: Path, export) -> None:
    layout = substrate(tmp_path)
    result = export(layout)
    assert result.written > 0 and result.quarantined > 0
    shutil.rmtree(layout.evidence_dir)
    shutil.rmtree(layout.scored_dir)
    write_runs(layout, [make_run("only", response="The only answer")])
    again = export(layout)
    for path in again.outputs:  # nothing stale left from the first run
        lines = read_jsonl(path)
        assert len(lines) <= 1
    assert not list(layout.exports_dir.rglob("*.tmp"))


def test_inputs_list_what_was_read(tmp_path: Path) -> None:
    layout = substrate(tmp_path)
    result = export_rag(layout)
    relative = sorted(layout.relative(path) for path in result.inputs)
    assert relative == [
        "data/_kb/repo_files.txt",
        "data/evidence/2026/10/02/distilled_facts.jsonl",
        "data/evidence/2026/10/02/scrum_reviews.jsonl",
        "data/scored-runs/2026/10/02/distilled_facts.jsonl",
        "data/scored-runs/2026/10/02/scrum_reviews.jsonl",
    ]


def test_one_shared_pass_writes_what_each_export_writes_alone(tmp_path: Path) -> None:
    """The datasets share one read of the trees; none may see or write anything different for it."""
    from distillation_pipeline.exports.onepass import run_exports
    from distillation_pipeline.exports.preference import preference_export
    from distillation_pipeline.exports.rag import rag_export
    from distillation_pipeline.exports.sft import sft_export

    alone = substrate(tmp_path / "alone")
    broken = alone.evidence_dir.rglob("*.jsonl").__next__()
    with open(broken, "ab") as handle:  # a position every dataset that reads the file must refuse
        handle.write(b'{"not": "evidence"}\n')
    results_alone = {export.__name__: export(alone) for export in EXPORTS}
    together = Layout.at(tmp_path / "together")
    shutil.copytree(alone.root / "data", together.root / "data")
    shared = run_exports(
        together, [rag_export(together), sft_export(together), preference_export(together)], dry_run=False
    )
    assert tree_bytes(together.exports_dir) == tree_bytes(alone.exports_dir)
    for name, result in shared.items():
        by_itself = results_alone[f"export_{name}"]
        assert (result.records_in, result.written, result.quarantined) == (
            by_itself.records_in, by_itself.written, by_itself.quarantined,
        )  # fmt: skip
        assert result.ineligible == by_itself.ineligible and result.per_reason == by_itself.per_reason
        assert result.balance()[0]
    assert shared["rag"].per_reason.get("missing_provenance") == 1


def test_counts_kept_while_writing_equal_a_read_of_the_written_files(tmp_path: Path) -> None:
    """The card trusts the exporter's counts only as a stand-in for reading the file: they must agree."""
    from distillation_pipeline.exports.card import CONFIGS, QUARANTINE_SPLITS, file_stats, read_stats
    from distillation_pipeline.lib.digests import file_digests
    from distillation_pipeline.lib.hashing import file_sha256

    layout = substrate(tmp_path)
    layout.state_dir.mkdir(parents=True, exist_ok=True)
    export_all(layout)
    files = [(c.path(layout), c) for c in CONFIGS] + [(layout.quarantine_file(name), None) for name in QUARANTINE_SPLITS]
    assert all(path.stat().st_size for path, _ in files)
    stored = orjson.loads(layout.card_stats_file.read_bytes())
    for path, config in files:
        assert stored[layout.relative(path)]["sha256"] == file_sha256(path)  # hashed while written
        assert file_stats(layout, path, config) == read_stats(path, config)
    assert file_digests(layout, [path for path, _ in files]) == {path: file_sha256(path) for path, _ in files}
    # A file edited behind the exporter's back is read, not described from the stored counts.
    with open(layout.rag_file, "ab") as handle:
        handle.write(b'{"source_category": "rejected", "provenance": {"stream": "audits"}}\n')
    edited = file_stats(layout, layout.rag_file, CONFIGS[2])
    assert edited == read_stats(layout.rag_file, CONFIGS[2]) and edited.categories["rejected"] == 1
