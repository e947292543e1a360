"""exports/parallel_export: two passes side by side write what one pass writes, or nothing.

The worker half is a real spawned process (``lib/workers``); its failure is provoked through
the file system (a folder it must write into is a file), since a spawned process does not see
this process's monkeypatches.
"""

import shutil
from pathlib import Path

import pytest

from distillation_pipeline.exports import parallel_export
from distillation_pipeline.exports.parallel_export import DatasetExport, export_datasets, halves
from distillation_pipeline.lib.layout import Layout
from distillation_pipeline_tests.conftest import tree_bytes
from distillation_pipeline_tests.export_fixtures import conserved, write_runs
from distillation_pipeline_tests.test_exports_incremental import export_all, runs_for_day, substrate

ALL = [DatasetExport("rag"), DatasetExport("sft"), DatasetExport("preference")]


def _state_and_exports(layout: Layout) -> dict[str, bytes]:
    return {**{f"exports/{k}": v for k, v in tree_bytes(layout.exports_dir).items()},
            **{f"state/{k}": v for k, v in tree_bytes(layout.export_state_dir).items()}}  # fmt: skip


def test_the_groups_put_rag_apart_and_split_any_two() -> None:
    assert [[e.dataset for e in group] for group in halves(ALL)] == [["rag"], ["sft", "preference"]]
    assert [[e.dataset for e in group] for group in halves(ALL[1:])] == [["sft"], ["preference"]]
    assert [[e.dataset for e in group] for group in halves(ALL[:1])] == [["rag"]]


def test_side_by_side_writes_the_bytes_and_counts_of_one_pass_full_then_incremental(tmp_path: Path) -> None:
    one, two = substrate(tmp_path / "one"), substrate(tmp_path / "two")
    for round_ in range(2):
        expected = export_all(one)
        results = export_datasets(two, ALL, dry_run=False, split=True)
        assert list(results) == ["rag", "sft", "preference"]
        for result in results.values():
            conserved(result)
        assert {name: result.__dict__ | {"inputs": [], "outputs": []} for name, result in results.items()} == {
            name: result.__dict__ | {"inputs": [], "outputs": []} for name, result in expected.items()
        }
        assert _state_and_exports(two) == _state_and_exports(one)
        if round_ == 0:  # then rows appended to two partitions and a new one: the reuse path
            assert sum(result.reused_positions for result in results.values()) == 0
            for layout in (one, two):
                write_runs(layout, [run for day in (1, 3, 5) for run in runs_for_day(day, 4, "new")])
        else:
            assert all(result.reused_positions > 0 for result in results.values())


@pytest.mark.parametrize("broken", ["sft", "rag"], ids=["the-worker-half-fails", "this-process-half-fails"])
def test_a_failed_half_leaves_every_previous_output_and_no_temporary(tmp_path: Path, broken: str) -> None:
    layout = substrate(tmp_path / "root")
    export_datasets(layout, ALL, dry_run=False, split=True)
    before = tree_bytes(layout.exports_dir)
    write_runs(layout, [run for day in (1, 3) for run in runs_for_day(day, 4, "new")])
    folder = layout.exports_dir / broken
    shutil.rmtree(folder)
    folder.write_bytes(b"not a folder")  # the half exporting this dataset cannot write its file
    with pytest.raises(OSError):
        export_datasets(layout, ALL, dry_run=False, split=True)
    after = tree_bytes(layout.exports_dir)
    assert after.pop(broken) == b"not a folder"
    assert after == {k: v for k, v in before.items() if not k.startswith(f"{broken}/")}
    assert not [p for p in layout.root.rglob("*.tmp")]


@pytest.mark.parametrize("why", ["one core", "little to read"])
def test_without_a_core_or_work_for_a_second_process_the_datasets_share_one_pass_here(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, why: str
) -> None:
    if why == "one core":
        monkeypatch.setenv("DISTILL_CORES", "1")
        monkeypatch.setattr(parallel_export, "SPLIT_MIN_TREE_BYTES", 0)
    else:
        monkeypatch.setenv("DISTILL_CORES", "2")
    layout = substrate(tmp_path / "root")
    folder = layout.exports_dir / "sft"
    folder.parent.mkdir(parents=True)
    folder.write_bytes(b"not a folder")
    # One pass in this process: the failure is this process's own, raised from the pass that
    # also holds RAG's outputs (side by side, RAG's half would have completed on its own).
    with pytest.raises(OSError) as failure:
        export_datasets(layout, ALL, dry_run=False)  # split left to the rule
    assert "onepass.py" in "".join(str(entry.path) for entry in failure.traceback)
