"""The firewall check remembers the rows it passed by their bytes, and never trusts one wrongly.

Each test checks the way ``defs/pipeline/checks.py`` does (``run_job`` then ``keep_outcome``),
changes the files, or the table, or what the table is bound to, and checks again: what the
check reports must be exactly what the previous row-by-row check (``verify_reference``) reports
on the same files, and a row whose bytes the table does not hold must be checked whole.
"""

import random
from pathlib import Path

import numpy as np
import orjson
import pytest

from distillation_pipeline.exports import verified_rows
from distillation_pipeline.exports.parallel_verify import (
    VIOLATION_LIMIT,
    VerifyJob,
    VerifyOutcome,
    keep_outcome,
    run_job,
)
from distillation_pipeline.exports.verified_rows import VerifiedRows, table_path
from distillation_pipeline.exports.verify import Remembered, verify_dataset
from distillation_pipeline.lib.layout import Layout
from distillation_pipeline_tests import verify_reference
from distillation_pipeline_tests.export_fixtures import write_manifest, write_runs
from distillation_pipeline_tests.test_exports_incremental import export_all, runs_for_day, substrate

DATASETS = ("rag", "sft", "preference")
EXPORT_OPTIONS = {"rag": {"include_review": False}, "sft": {"include_partial": False},
                  "preference": {"max_pairs_per_task": 5}}  # fmt: skip


def files(layout: Layout, dataset: str) -> list[Path]:
    variant = {"rag": [], "sft": [layout.sft_openai_file], "preference": [layout.preference_openai_file]}
    return [layout.dataset_file(dataset), *variant[dataset]]


def check(layout: Layout, dataset: str, *, dry_run: bool = False, include_review: bool = False) -> VerifyOutcome:
    """What the blocking check does for one dataset: verify, then record the pass or forget it."""
    job = VerifyJob(
        root=str(layout.root), dataset=dataset, include_review=include_review,
        export_options=EXPORT_OPTIONS[dataset], dry_run=dry_run,
    )  # fmt: skip
    outcome = run_job(job)
    keep_outcome(layout, job, outcome, files(layout, dataset))
    return outcome


def reference(layout: Layout, dataset: str, limit: int = VIOLATION_LIMIT) -> list[str]:
    return verify_reference.verify_dataset(layout, dataset, limit=limit)


def rows(path: Path) -> int:
    return sum(1 for line in path.read_bytes().splitlines() if line.strip())


def passed(tmp_path: Path) -> Layout:
    """Exported and checked once: every dataset holds and has a table."""
    layout = substrate(tmp_path / "root")
    export_all(layout)
    for dataset in DATASETS:
        outcome = check(layout, dataset)
        assert outcome.violations == [] and outcome.rows_known == 0
        assert table_path(layout, dataset).is_file()
    return layout


def edit_line(path: Path, index: int, change) -> None:
    lines = path.read_bytes().splitlines(keepends=True)
    row = orjson.loads(lines[index])
    change(row)
    lines[index] = orjson.dumps(row) + b"\n"
    path.write_bytes(b"".join(lines))


# --- what is remembered is used -------------------------------------------------------------------


def test_rows_passed_before_are_not_checked_again_and_new_rows_are(tmp_path: Path) -> None:
    layout = passed(tmp_path)
    for dataset in DATASETS:  # same files: every row is known
        outcome = check(layout, dataset)
        assert outcome.violations == []
        assert outcome.rows_known == rows(layout.dataset_file(dataset)) > 0
    write_runs(layout, runs_for_day(5, 12, "new"))
    export_all(layout)
    for dataset in DATASETS:
        before = rows(layout.dataset_file(dataset))
        outcome = check(layout, dataset)
        assert outcome.violations == reference(layout, dataset) == []
        assert 0 < outcome.rows_known < before  # the old rows, not the new ones
    # the preference pairs too, though the export marks none of their bytes as copied


# --- and never trusted wrongly --------------------------------------------------------------------


def test_a_row_edited_inside_passed_bytes_is_checked_whole(tmp_path: Path) -> None:
    layout = passed(tmp_path)
    text = layout.rag_file.read_text()
    layout.rag_file.write_text(text.replace("answer base 0/0", "answer base 0/0 ghp_" + "a1B2" * 9, 1))
    outcome = check(layout, "rag")
    assert any(line.startswith("secret_detected") for line in outcome.violations)
    assert outcome.violations == reference(layout, "rag")
    assert outcome.rows_known == rows(layout.rag_file) - 1
    assert not table_path(layout, "rag").exists()  # a failed check forgets what it passed
    assert check(layout, "rag").rows_known == 0  # and the next check reads everything


def test_an_edited_twin_is_checked_with_its_row(tmp_path: Path) -> None:
    layout = passed(tmp_path)
    edit_line(layout.sft_openai_file, 1, lambda row: row["messages"][-1].update(content="something else"))
    outcome = check(layout, "sft")
    assert [line.split(":")[0] for line in outcome.violations] == ["variant_mismatch"]
    assert outcome.violations == reference(layout, "sft")


def test_twins_are_known_only_together(tmp_path: Path) -> None:
    """Two passed rows whose OpenAI twins were swapped: each line was passed, not each pair."""
    layout = passed(tmp_path)
    lines = layout.preference_openai_file.read_bytes().splitlines(keepends=True)
    assert len(lines) >= 2 and lines[0] != lines[1]
    lines[0], lines[1] = lines[1], lines[0]
    layout.preference_openai_file.write_bytes(b"".join(lines))
    outcome = check(layout, "preference")
    assert [line.split(":")[0] for line in outcome.violations] == ["variant_mismatch", "variant_mismatch"]
    assert outcome.violations == reference(layout, "preference")
    assert outcome.rows_known == rows(layout.preference_file) - 2


def test_a_stale_table_vouches_only_for_the_bytes_it_holds(tmp_path: Path) -> None:
    layout = passed(tmp_path)
    stale = tmp_path / "stale.npz"
    stale.write_bytes(table_path(layout, "rag").read_bytes())
    write_runs(layout, runs_for_day(5, 12, "new"))
    export_all(layout)
    assert check(layout, "rag").violations == []
    # the older table back, and an old row made a rejected one (its id still matches its text)
    table_path(layout, "rag").write_bytes(stale.read_bytes())
    edit_line(layout.rag_file, 0, lambda row: row.update(source_category="rejected"))
    outcome = check(layout, "rag")
    assert [line.split(":")[0] for line in outcome.violations] == ["forbidden_category"]
    assert outcome.violations == reference(layout, "rag")


@pytest.mark.parametrize("change", ["code", "options", "manifest", "python"])
def test_a_table_bound_to_anything_else_is_ignored(tmp_path: Path, monkeypatch, change: str) -> None:
    layout = passed(tmp_path)
    edit_line(layout.rag_file, 0, lambda row: row.update(source_category="needs_human_review"))
    if change == "code":
        monkeypatch.setattr(verified_rows, "code_digest", lambda: "another build")
    elif change == "manifest":
        write_manifest(layout, ["README.md"])
    elif change == "python":
        monkeypatch.setattr(verified_rows.sys, "version", "3.99")
    outcome = check(layout, "rag", include_review=change == "options")
    assert outcome.rows_known == 0
    assert outcome.violations == verify_reference.verify_dataset(
        layout, "rag", include_review=change == "options", limit=VIOLATION_LIMIT
    )


def test_a_damaged_table_is_ignored(tmp_path: Path) -> None:
    layout = passed(tmp_path)
    path = table_path(layout, "sft")
    path.write_bytes(path.read_bytes()[:-100])
    outcome = check(layout, "sft")
    assert outcome.violations == [] and outcome.rows_known == 0
    assert check(layout, "sft").rows_known == rows(layout.sft_file)  # rewritten by that pass


def test_a_failed_or_dry_check_keeps_no_table(tmp_path: Path) -> None:
    layout = passed(tmp_path)
    outcome = check(layout, "sft", dry_run=True)
    assert outcome.violations == [] and outcome.table is None
    assert not table_path(layout, "sft").exists()
    assert not list(layout.export_state_dir.glob(".*verified_rows*"))  # no temporary left behind
    orphan = layout.export_state_dir / ".sft.verified_rows.12345.npz"  # from a check that died
    orphan.write_bytes(b"")
    assert check(layout, "sft").violations == [] and table_path(layout, "sft").is_file()
    assert not orphan.exists()


# --- the rules that span rows still see every row -------------------------------------------------


def test_a_passed_row_repeated_is_a_duplicate_wherever_it_lands(tmp_path: Path) -> None:
    layout = passed(tmp_path)
    lines = layout.rag_file.read_bytes().splitlines(keepends=True)
    for changed in (lines + [lines[0]], [lines[-1]] + lines, lines[:3] + [lines[7]] + lines[3:]):
        layout.rag_file.write_bytes(b"".join(changed))
        found = check(layout, "rag").violations
        assert [line.split(":")[0] for line in found] == ["duplicate_id"]
        assert found == reference(layout, "rag")


def test_a_new_row_with_the_id_of_a_later_passed_row_makes_that_row_the_duplicate(tmp_path: Path) -> None:
    layout = passed(tmp_path)
    lines = layout.rag_file.read_bytes().splitlines(keepends=True)
    twin = orjson.loads(lines[5])
    twin["provenance"]["stream"] = "another_stream"  # other bytes, same content id
    layout.rag_file.write_bytes(orjson.dumps(twin) + b"\n" + b"".join(lines))
    outcome = check(layout, "rag")
    assert outcome.violations == [f"duplicate_id: rag/playbooks.jsonl:7: id {twin['id']} already on line 1"]
    assert outcome.violations == reference(layout, "rag")
    assert outcome.rows_known == len(lines)


def test_passed_pairs_still_count_against_the_cap_per_task(tmp_path: Path) -> None:
    layout = passed(tmp_path)
    main = layout.preference_file.read_bytes().splitlines(keepends=True)
    twins = layout.preference_openai_file.read_bytes().splitlines(keepends=True)
    # every pair four times over: duplicates, and tasks over five pairs
    layout.preference_file.write_bytes(b"".join(main * 4))
    layout.preference_openai_file.write_bytes(b"".join(twins * 4))
    outcome = check(layout, "preference")
    codes = {line.split(":")[0] for line in outcome.violations}
    assert codes == {"duplicate_id", "too_many_pairs"}
    assert outcome.violations == reference(layout, "preference")
    assert outcome.rows_known == 4 * len(main)
    assert VerifiedRows.load(table_path(layout, "preference"), _binding(layout, "preference")) is None  # forgotten
    # a row with a task that is not a string is checked whole and still counted
    edit_line(layout.preference_file, 0, lambda row: row.update(task_id=None))
    assert check(layout, "preference").violations == reference(layout, "preference")


def _binding(layout: Layout, dataset: str) -> dict:
    return verified_rows.binding(layout, dataset, VerifyJob(root=str(layout.root), dataset=dataset).check_options())


# --- the same verdicts as a row-by-row check, on many broken copies -------------------------------


def _object(line: bytes) -> dict | None:
    try:
        row = orjson.loads(line)
    except orjson.JSONDecodeError:
        return None
    return row if isinstance(row, dict) else None


def _mutate(rng: random.Random, files_lines: list[list[bytes]]) -> None:
    for _ in range(rng.randint(1, 5)):
        lines = files_lines[rng.randrange(len(files_lines))]
        i, j = rng.randrange(len(lines)), rng.randrange(len(lines))
        kind = rng.choice(["dup", "edit", "blank", "malformed", "delete", "swap", "crlf", "upper", "task", "noeol"])
        if kind == "dup":
            lines.insert(j, lines[i])
        elif kind == "edit" and (row := _object(lines[i])):
            row[rng.choice(sorted(row))] = rng.choice([None, "", "x", 5])
            lines[i] = orjson.dumps(row) + b"\n"
        elif kind == "blank":
            lines.insert(j, rng.choice([b"\n", b"  \n", b"\r\n"]))
        elif kind == "malformed":
            lines.insert(j, rng.choice([b"{oops\n", b"[1]\n"]))
        elif kind == "delete" and len(lines) > 1:
            del lines[i]
        elif kind == "swap":
            lines[i], lines[j] = lines[j], lines[i]
        elif kind == "crlf":
            lines[i] = lines[i].rstrip(b"\n") + b"\r\n"
        elif kind in ("upper", "task"):
            row = _object(lines[i])
            if isinstance(row, dict) and kind == "upper" and isinstance(row.get("id"), str):
                row["id"] = row["id"].upper()
            elif isinstance(row, dict) and kind == "task" and "task_id" in row:
                row["task_id"] = rng.choice([1, True, None, "task-0-0"])
            if isinstance(row, dict):
                lines[i] = orjson.dumps(row) + b"\n"
        elif kind == "noeol":
            lines[-1] = lines[-1].rstrip(b"\n")
    for lines in files_lines:  # only a last line may lack its newline
        for k in range(len(lines) - 1):
            if not lines[k].endswith(b"\n"):
                lines[k] += b"\n"


@pytest.mark.parametrize("dataset", DATASETS)
def test_verdicts_are_the_row_by_row_checks_on_broken_copies(tmp_path: Path, dataset: str) -> None:
    layout = passed(tmp_path)
    paths = files(layout, dataset)
    original = [path.read_bytes().splitlines(keepends=True) for path in paths]
    table = VerifiedRows.load(table_path(layout, dataset), _binding(layout, dataset))
    assert table is not None and len(table) == len(original[0])
    rng = random.Random(7)
    for _ in range(40):
        changed = [list(lines) for lines in original]
        _mutate(rng, changed)
        for path, lines in zip(paths, changed, strict=True):
            path.write_bytes(b"".join(lines))
        limit = rng.choice([2, 5, 1000])
        want = reference(layout, dataset, limit)
        assert verify_dataset(layout, dataset, limit=limit, remembered=Remembered(table=table)) == want
        assert verify_dataset(layout, dataset, limit=limit) == want


def test_lines_longer_than_a_read_and_odd_line_ends_are_read_as_before(tmp_path: Path) -> None:
    """The check reads 4 MiB at a time: a line across reads, blank and whitespace-only lines,
    a last line without its newline, all numbered and judged as the row-by-row check did."""
    layout = passed(tmp_path)
    lines = layout.rag_file.read_bytes().splitlines(keepends=True)
    long = orjson.loads(lines[2])
    long["content"] = "x " * (3 << 20)  # ~6 MiB: its id no longer matches, and it spans reads
    layout.rag_file.write_bytes(
        lines[0] + b"\n  \n\r\n" + orjson.dumps(long) + b"\n" + b" " + lines[1] + b"".join(lines[3:]).rstrip(b"\n")
    )
    outcome = check(layout, "rag")
    assert [line.split(":")[0] for line in outcome.violations] == ["id_mismatch"]
    assert outcome.violations == reference(layout, "rag")
    # neither the long row nor the one behind a space; the last, without its newline, is the same row
    assert outcome.rows_known == len(lines) - 2


def test_keys_that_share_their_first_half_are_told_apart() -> None:
    high = np.array([1, 5, 5, 5, 9], dtype=np.uint64)
    low = np.array([0, 3, 4, 7, 0], dtype=np.uint64)
    zeros = np.zeros(5, dtype=np.uint64)
    table = VerifiedRows({"key_high": high, "key_low": low, "id_high": zeros, "id_low": zeros.astype(np.uint32),
                          "task": zeros.astype(np.uint32)}, [])  # fmt: skip
    asked_high = np.array([5, 5, 5, 5, 9, 0, 10], dtype=np.uint64)
    asked_low = np.array([7, 3, 4, 8, 0, 0, 0], dtype=np.uint64)
    assert table.lookup(asked_high, asked_low).tolist() == [3, 1, 2, -1, 4, -1, -1]
