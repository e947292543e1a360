"""An export that reuses the previous run's partition prefixes writes what a fresh export writes.

Each test exports once (state recorded), changes the trees the way a later run could find
them, exports again on the same root, and compares every export file byte for byte with a
fresh export of the same trees in another root that has no state.
"""

import shutil
from datetime import timedelta
from pathlib import Path

import orjson

from distillation_pipeline.exports.onepass import run_exports
from distillation_pipeline.exports.preference import preference_export
from distillation_pipeline.exports.rag import rag_export
from distillation_pipeline.exports.result import ExportResult
from distillation_pipeline.exports.sft import sft_export
from distillation_pipeline.lib.layout import Layout
from distillation_pipeline_tests.conftest import tree_bytes
from distillation_pipeline_tests.export_fixtures import (
    EVENT_AT,
    Run,
    conserved,
    later,
    make_run,
    write_manifest,
    write_runs,
)

CATEGORIES = ["accepted", "rejected", "accepted", "partially_accepted", "needs_human_review", "accepted"]


def export_all(layout: Layout, *, include_partial: bool = False) -> dict[str, ExportResult]:
    participants = [rag_export(layout), sft_export(layout, include_partial=include_partial), preference_export(layout)]
    results = run_exports(layout, participants, dry_run=False)
    for result in results.values():
        conserved(result)
    return results


def runs_for_day(day: int, count: int, tag: str) -> list[Run]:
    return [
        make_run(
            f"{tag}-{day}-{i}",
            task_id=f"task-{day}-{i % 3}",
            category=CATEGORIES[i % len(CATEGORIES)],
            response=f"answer {tag} {day}/{i} in README.md",
            event_at=EVENT_AT + timedelta(days=day),
            recorded_at=later(i),
        )
        for i in range(count)
    ]


def substrate(root: Path) -> Layout:
    layout = Layout.at(root)
    write_manifest(layout)
    write_runs(layout, [run for day in range(4) for run in runs_for_day(day, 12, "base")])
    return layout


def fresh_export(layout: Layout, scratch: Path, **options: bool) -> dict[Path, bytes]:
    """What an export with no previous state writes for the same trees."""
    other = Layout.at(scratch)
    shutil.copytree(layout.root / "data" / "evidence", other.evidence_dir)
    shutil.copytree(layout.root / "data" / "scored-runs", other.scored_dir)
    write_manifest(other)
    results = export_all(other, **options)
    assert all(result.reused_positions == 0 for result in results.values())
    return tree_bytes(other.exports_dir)


def test_appended_rows_reuse_the_prefixes_and_match_a_fresh_export(tmp_path: Path) -> None:
    layout = substrate(tmp_path / "root")
    export_all(layout)
    write_runs(layout, [run for day in (1, 3, 5) for run in runs_for_day(day, 4, "new")])  # 2 grown, 1 new
    results = export_all(layout)
    assert tree_bytes(layout.exports_dir) == fresh_export(layout, tmp_path / "fresh")
    assert results["rag"].reused_positions == 48  # every old position of every partition
    assert results["preference"].reused_positions == 48


def test_unchanged_trees_are_copied_whole(tmp_path: Path) -> None:
    layout = substrate(tmp_path / "root")
    export_all(layout)
    before = tree_bytes(layout.exports_dir)
    results = export_all(layout)
    assert tree_bytes(layout.exports_dir) == before
    assert all(result.reused_positions == 48 for result in results.values())


def test_a_new_copy_earlier_in_the_order_makes_a_later_row_a_duplicate(tmp_path: Path) -> None:
    """Appending to day 0 a text that day 2 already exported turns day 2's row into a duplicate."""
    layout = substrate(tmp_path / "root")
    export_all(layout)
    day2 = runs_for_day(2, 1, "base")[0]
    copy = make_run("copy", task_id="task-x", response=day2.evidence.response, event_at=EVENT_AT)
    write_runs(layout, [copy])
    results = export_all(layout)
    assert tree_bytes(layout.exports_dir) == fresh_export(layout, tmp_path / "fresh")
    assert results["rag"].per_reason["duplicate_id"] >= 1
    assert results["rag"].reused_positions < 48  # day 2 was read again


def test_a_rescored_line_in_the_middle_is_read_again(tmp_path: Path) -> None:
    """The scorer may rewrite old verdicts (a parent changed): that prefix no longer holds."""
    layout = substrate(tmp_path / "root")
    export_all(layout)
    scored = sorted(layout.scored_dir.rglob("*.jsonl"))[1]
    lines = scored.read_bytes().splitlines(keepends=True)
    row = orjson.loads(lines[0])
    row["category"] = "rejected" if row["category"] != "rejected" else "accepted"
    lines[0] = orjson.dumps(row) + b"\n"
    scored.write_bytes(b"".join(lines))
    results = export_all(layout)
    assert tree_bytes(layout.exports_dir) == fresh_export(layout, tmp_path / "fresh")
    assert results["rag"].reused_positions == 36


def test_other_options_a_deleted_partition_an_edited_output_or_a_broken_state_reuse_nothing_wrong(
    tmp_path: Path,
) -> None:
    layout = substrate(tmp_path / "root")
    export_all(layout)
    results = export_all(layout, include_partial=True)  # SFT's options changed
    assert results["sft"].reused_positions == 0 and results["rag"].reused_positions == 48
    assert tree_bytes(layout.exports_dir) == fresh_export(layout, tmp_path / "fresh1", include_partial=True)

    victim = sorted(layout.evidence_dir.rglob("*.jsonl"))[0]
    victim.unlink()
    (layout.scored_dir / victim.relative_to(layout.evidence_dir)).unlink()
    export_all(layout)
    assert tree_bytes(layout.exports_dir) == _fresh_with_its_manifest(layout, tmp_path / "fresh2")

    with open(layout.rag_file, "ab") as handle:  # an output changed behind the exporter's back
        handle.write(b"{}\n")
    state = layout.export_state_dir / "preference.parts.jsonl"
    state.write_bytes(state.read_bytes()[:-40])  # a damaged state file
    results = export_all(layout)
    assert results["rag"].reused_positions == 0 and results["preference"].reused_positions == 0
    assert tree_bytes(layout.exports_dir) == fresh_export(layout, tmp_path / "fresh3")


def test_a_dry_run_neither_reads_nor_writes_state(tmp_path: Path) -> None:
    layout = substrate(tmp_path / "root")
    export_all(layout)
    state = tree_bytes(layout.export_state_dir)
    results = run_exports(layout, [rag_export(layout, dry_run=True)], dry_run=True)
    assert results["rag"].reused_positions == 0
    assert tree_bytes(layout.export_state_dir) == state


# --- the firewall check skips only bytes it already passed ----------------------------------------


def check_like_the_asset(layout: Layout, dataset: str = "rag") -> list[str]:
    """What ``defs/pipeline/checks.py`` does: verify with trusted ranges, remember a pass."""
    from distillation_pipeline.exports import verify_dataset
    from distillation_pipeline.exports.increments import files_digest, forget_verified, record_verified, trusted_ranges

    options = {"include_review": False}
    before = files_digest([layout.rag_file])
    violations = verify_dataset(layout, dataset, trusted=trusted_ranges(layout, dataset, options))
    if violations:
        forget_verified(layout, dataset)
    else:
        record_verified(layout, dataset, options, [layout.rag_file], before)
    return violations


def test_copied_bytes_of_a_verified_file_are_trusted_and_a_tampered_file_is_not(tmp_path: Path) -> None:
    from distillation_pipeline.exports.increments import trusted_ranges

    layout = substrate(tmp_path / "root")
    export_all(layout)
    assert trusted_ranges(layout, "rag", {"include_review": False}) == {}  # nothing was copied yet
    assert check_like_the_asset(layout) == []
    write_runs(layout, runs_for_day(2, 3, "new"))
    export_all(layout)
    trusted = trusted_ranges(layout, "rag", {"include_review": False})
    size = layout.rag_file.stat().st_size
    covered = sum(end - start for start, end in trusted[layout.rag_file])
    assert 0 < covered < size  # the old rows, not the three new ones
    assert check_like_the_asset(layout) == []
    assert trusted_ranges(layout, "rag", {"include_review": True}) == {}  # other options: nothing

    # A credential planted in a copied row: the file no longer has the bytes the state describes.
    text = layout.rag_file.read_text()
    layout.rag_file.write_text(text.replace("answer base 0/0", "answer base 0/0 ghp_" + "a1B2" * 9, 1))
    assert trusted_ranges(layout, "rag", {"include_review": False}) == {}
    assert any(line.startswith("secret_detected") for line in check_like_the_asset(layout))


def test_trusted_rows_still_count_for_unique_ids(tmp_path: Path) -> None:
    """A row outside the trusted ranges that repeats a trusted row's id is still a duplicate."""
    from distillation_pipeline.exports import verify_dataset

    layout = substrate(tmp_path / "root")
    export_all(layout)
    lines = layout.rag_file.read_bytes().splitlines(keepends=True)
    layout.rag_file.write_bytes(b"".join(lines) + lines[0])  # the first row again, at the end
    trusted = {layout.rag_file: [(0, len(b"".join(lines)))]}
    found = verify_dataset(layout, "rag", trusted=trusted)
    assert [line.split(":")[0] for line in found] == ["duplicate_id"]
    # And a violation inside a trusted range is, by design, not looked for again.
    bad = orjson.loads(lines[1])
    bad["source_category"] = "rejected"
    layout.rag_file.write_bytes(lines[0] + orjson.dumps(bad) + b"\n" + b"".join(lines[2:]))
    whole = {layout.rag_file: [(0, layout.rag_file.stat().st_size)]}
    assert verify_dataset(layout, "rag", trusted=whole) == []
    assert any(line.startswith("forbidden_category") for line in verify_dataset(layout, "rag"))


def test_a_position_without_its_scored_line_is_not_kept_for_later(tmp_path: Path) -> None:
    """Evidence ahead of its scores (a scorer that has not run yet) must be read again next time."""
    layout = substrate(tmp_path / "root")
    late = runs_for_day(9, 2, "late")
    write_runs(layout, late[:1])
    write_runs(layout, late[1:], scored=False)  # evidence line without its verdict: quarantined now
    first = export_all(layout)
    assert first["rag"].per_reason.get("missing_source_run_id") == 1
    scored = layout.scored_dir / sorted(p.relative_to(layout.evidence_dir) for p in layout.evidence_dir.rglob("*.jsonl"))[-1]
    with open(scored, "ab") as handle:  # the scorer catches up
        handle.write(orjson.dumps(late[1].scored.model_dump(mode="json")) + b"\n")
    export_all(layout)
    assert tree_bytes(layout.exports_dir) == fresh_export(layout, tmp_path / "fresh")


# --- holes a review proved in the first version (each test failed against it) ------------------


def test_the_code_digest_covers_every_module_of_the_package(tmp_path: Path) -> None:
    """A change to lib/jsonl.py (how every line is written) must invalidate recorded prefixes."""
    import subprocess
    import sys

    import distillation_pipeline

    package = Path(distillation_pipeline.__file__).parent
    copy = tmp_path / "src"
    shutil.copytree(package, copy / "distillation_pipeline", ignore=shutil.ignore_patterns("__pycache__"))
    probe = "from distillation_pipeline.exports.increments import code_digest; print(code_digest())"

    def digest() -> str:
        return subprocess.run([sys.executable, "-c", probe], cwd=copy, capture_output=True, text=True, check=True).stdout

    before = digest()
    with open(copy / "distillation_pipeline" / "lib" / "jsonl.py", "a") as handle:
        handle.write("\n# a deploy\n")
    assert digest() != before


def test_state_recorded_under_other_code_is_neither_reused_nor_trusted(tmp_path: Path) -> None:
    from distillation_pipeline.exports.increments import trusted_ranges

    layout = substrate(tmp_path / "root")
    export_all(layout)
    assert check_like_the_asset(layout) == []
    write_runs(layout, runs_for_day(1, 2, "new"))
    export_all(layout)
    assert trusted_ranges(layout, "rag", {"include_review": False})
    header = layout.export_state_dir / "rag.json"
    stored = orjson.loads(header.read_bytes())
    header.write_bytes(orjson.dumps({**stored, "code": "0" * 64}))  # as if verify.py (or any module) changed
    assert trusted_ranges(layout, "rag", {"include_review": False}) == {}
    results = export_all(layout)
    assert results["rag"].reused_positions == 0
    assert tree_bytes(layout.exports_dir) == fresh_export(layout, tmp_path / "fresh")


def test_rows_appended_while_a_partition_is_read_are_read_next_time(tmp_path: Path, monkeypatch) -> None:
    """A writer outside the root lock appends during the read, or right after it: the rows
    appended must not be counted as read (the next run reads them)."""
    from distillation_pipeline.exports import onepass

    for hook in ("read_position", "partition_window"):
        layout = substrate(tmp_path / hook)
        export_all(layout)
        target = sorted(layout.evidence_dir.rglob("*.jsonl"))[0]
        write_runs(layout, runs_for_day(0, 1, "tail"))  # a tail to read in the hooked run
        original = getattr(onepass, hook)
        done = []

        def appending(*args, original=original, target=target, layout=layout, done=done):  # type: ignore[no-untyped-def]
            source = next(arg for arg in args if hasattr(arg, "evidence"))
            if source.evidence == target and not done:
                done.append(True)
                write_runs(layout, runs_for_day(0, 1, "late"))
            return original(*args)

        monkeypatch.setattr(onepass, hook, appending)
        export_all(layout)
        monkeypatch.setattr(onepass, hook, original)
        assert done
        export_all(layout)
        assert tree_bytes(layout.exports_dir) == fresh_export(layout, tmp_path / f"fresh-{hook}"), hook


def test_a_same_size_edit_with_the_mtime_put_back_is_seen(tmp_path: Path) -> None:
    """cp -p / rsync -t --inplace / os.utime keep size and mtime; the ctime still moves."""
    import os

    from distillation_pipeline.exports.increments import trusted_ranges

    layout = substrate(tmp_path / "root")
    export_all(layout)
    assert check_like_the_asset(layout) == []
    scored = sorted(layout.scored_dir.rglob("*.jsonl"))[0]
    stat = os.stat(scored)
    data = scored.read_bytes()
    flipped = data.replace(b'"category":"accepted"', b'"category":"rejected"', 1)
    assert flipped != data and len(flipped) == len(data)
    scored.write_bytes(flipped)
    os.utime(scored, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    export_all(layout)
    assert tree_bytes(layout.exports_dir) == fresh_export(layout, tmp_path / "fresh")

    # The check: a copied row edited in place, same size, mtime restored, is not trusted.
    assert check_like_the_asset(layout) == []
    write_runs(layout, runs_for_day(3, 2, "new"))
    export_all(layout)
    assert trusted_ranges(layout, "rag", {"include_review": False})
    stat = os.stat(layout.rag_file)
    text = layout.rag_file.read_bytes()
    edited = text.replace(b'"source_category":"accepted"', b'"source_category":"rejected"', 1)
    assert len(edited) == len(text) and edited != text
    layout.rag_file.write_bytes(edited)
    os.utime(layout.rag_file, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert trusted_ranges(layout, "rag", {"include_review": False}) == {}
    assert any(line.startswith("forbidden_category") for line in check_like_the_asset(layout))


def test_a_pass_vouches_for_the_bytes_the_check_read_not_for_the_file_now(tmp_path: Path) -> None:
    from distillation_pipeline.exports.increments import _check_passed, files_digest, record_verified

    layout = substrate(tmp_path / "root")
    export_all(layout)
    before = files_digest([layout.rag_file])
    with open(layout.rag_file, "ab") as handle:  # written while the check was reading
        handle.write(b"{}\n")
    now = files_digest([layout.rag_file])
    rel, options = layout.relative(layout.rag_file), {"include_review": False}
    named = {rel: now[layout.rag_file]}
    # the marker vouches for the bytes the check read, never for what the file holds now
    assert record_verified(layout, "rag", options, [layout.rag_file], before)
    assert not _check_passed(layout, "rag", options, named)
    assert _check_passed(layout, "rag", options, {rel: before[layout.rag_file]})
    assert record_verified(layout, "rag", options, [layout.rag_file], now)
    assert _check_passed(layout, "rag", options, named)
    assert not _check_passed(layout, "rag", options, {rel: "0" * 64})
    # a file the check did not read is vouched for by nothing
    assert record_verified(layout, "rag", options, [layout.rag_file], {}) is False
    assert not _check_passed(layout, "rag", options, named)


def test_copies_from_an_output_whose_bytes_are_not_the_recorded_ones_fail_the_export(tmp_path: Path) -> None:
    """Trust in copied bytes rests on the bytes: even with a digest cache that vouches for an
    edited output (forged here), the copy is proven against its sha256 and refused."""
    import pytest

    from distillation_pipeline.exports.increments import StaleOutput
    from distillation_pipeline.lib.digests import remember_digests
    from distillation_pipeline.lib.hashing import file_sha256

    layout = substrate(tmp_path / "root")
    export_all(layout)
    recorded = file_sha256(layout.rag_file)
    text = layout.rag_file.read_bytes()
    edited = text.replace(b'"source_category":"accepted"', b'"source_category":"rejected"', 1)
    assert len(edited) == len(text) and edited != text
    layout.rag_file.write_bytes(edited)
    remember_digests(layout, {layout.rag_file: recorded})  # the cache now lies about the bytes
    write_runs(layout, runs_for_day(3, 2, "new"))
    with pytest.raises(StaleOutput):
        export_all(layout)
    assert layout.rag_file.read_bytes() == edited  # the previous outputs stay as they were
    export_all(layout)  # the state was dropped: everything is read again
    assert tree_bytes(layout.exports_dir) == fresh_export(layout, tmp_path / "fresh")


def counts(result: ExportResult) -> dict:
    """What a run counted, without what says how it ran (reuse) or which files it touched."""
    skip = {"inputs", "outputs", "reused_positions", "reused_tasks"}
    return {key: value for key, value in result.__dict__.items() if key not in skip}


def fresh_results(layout: Layout, scratch: Path) -> dict[str, ExportResult]:
    other = Layout.at(scratch)
    shutil.copytree(layout.root / "data" / "evidence", other.evidence_dir)
    shutil.copytree(layout.root / "data" / "scored-runs", other.scored_dir)
    write_manifest(other)
    return export_all(other)


def test_preference_tasks_without_new_runs_are_copied_and_the_rest_paired_again(tmp_path: Path) -> None:
    layout = substrate(tmp_path / "root")
    first = export_all(layout)
    tasks = len({run.evidence.task_id for day in range(4) for run in runs_for_day(day, 12, "base")})
    assert first["preference"].reused_tasks == 0
    joined = make_run("joins-old-task", task_id="task-1-0", category="rejected", response="a late rejected answer",
                      event_at=EVENT_AT + timedelta(days=5))  # fmt: skip
    write_runs(layout, [*runs_for_day(5, 6, "new"), joined])
    results = export_all(layout)
    fresh = fresh_results(layout, tmp_path / "fresh")
    assert tree_bytes(layout.exports_dir) == tree_bytes(Layout.at(tmp_path / "fresh").exports_dir)
    assert {name: counts(result) for name, result in results.items()} == {
        name: counts(result) for name, result in fresh.items()
    }
    assert results["preference"].reused_tasks == tasks - 1  # all but the task that got a run
    again = export_all(layout)  # nothing new: every task is copied, the bytes stay
    assert again["preference"].reused_tasks == tasks + 3  # with the three new tasks of day 5
    assert counts(again["preference"]) == counts(fresh["preference"])


def test_an_earlier_task_taking_a_pair_id_makes_a_copied_task_pair_again(tmp_path: Path) -> None:
    """A new task that sorts first writes the same pair (same prompt and answers) as an old
    task: in a fresh export the old task's pair is the duplicate, so it cannot be copied."""
    layout = substrate(tmp_path / "root")
    export_all(layout)
    old = [run for run in runs_for_day(2, 12, "base") if run.evidence.task_id == "task-2-0"]
    chosen, partial = old[0], old[1]  # accepted (i=0) and partially_accepted (i=3)
    assert (chosen.scored.category, partial.scored.category) == ("accepted", "partially_accepted")
    at = EVENT_AT + timedelta(days=6)
    thief = [
        make_run("thief-a", task_id="task-0-thief", category="accepted", response=chosen.evidence.response, event_at=at),
        make_run("thief-b", task_id="task-0-thief", category="partially_accepted", response=partial.evidence.response,
                 event_at=at),
    ]  # fmt: skip
    write_runs(layout, thief)
    results = export_all(layout)
    fresh = fresh_results(layout, tmp_path / "fresh")
    assert tree_bytes(layout.exports_dir) == tree_bytes(Layout.at(tmp_path / "fresh").exports_dir)
    assert counts(results["preference"]) == counts(fresh["preference"])
    assert results["preference"].per_reason.get("duplicate_id", 0) >= 1
    tasks = len({run.evidence.task_id for day in range(4) for run in runs_for_day(day, 12, "base")})
    assert results["preference"].reused_tasks == tasks - 1  # task-2-0 was paired again


def test_a_damaged_task_file_reuses_no_preference_partition(tmp_path: Path) -> None:
    layout = substrate(tmp_path / "root")
    export_all(layout)
    tasks = layout.export_state_dir / "preference.tasks.jsonl"
    tasks.write_bytes(tasks.read_bytes().replace(b"task-1-0", b"task-1-9", 1))
    write_runs(layout, runs_for_day(5, 6, "new"))
    results = export_all(layout)
    assert results["preference"].reused_positions == 0 and results["preference"].reused_tasks == 0
    assert results["rag"].reused_positions == 48
    assert tree_bytes(layout.exports_dir) == fresh_export(layout, tmp_path / "fresh")


def twin(key: str, day: int, response: str = "the shared answer, see README.md") -> Run:
    """Runs with the same task, stream and answer: one RAG row (and one SFT row) of content."""
    return make_run(key, task_id="task-twin", response=response, event_at=EVENT_AT + timedelta(days=day))


def test_a_new_first_copy_rereads_the_partitions_refusing_its_duplicates(tmp_path: Path) -> None:
    """Day 2 wrote the first copy, day 3 refused a duplicate naming it; a copy appended to day 0
    becomes the first, so day 2 and day 3 both change (day 3's refusal names another evidence)."""
    layout = substrate(tmp_path / "root")
    write_runs(layout, [twin("twin-a", 2), twin("twin-b", 3)])
    export_all(layout)
    write_runs(layout, [twin("twin-c", 0)])
    results = export_all(layout)
    assert tree_bytes(layout.exports_dir) == fresh_export(layout, tmp_path / "fresh")
    assert results["rag"].reused_positions == 12 + 12  # days 0 and 1; days 2 and 3 read again


def test_a_first_copy_that_is_gone_moves_to_its_next_duplicate(tmp_path: Path) -> None:
    """Day 1's first copy is rescored out of RAG, or its partition is deleted: day 3's duplicate
    is then the first copy, as a fresh export says."""
    for case in ("rescored", "deleted"):
        layout = substrate(tmp_path / case)
        write_runs(layout, [twin("twin-a", 1), twin("twin-b", 3)])
        export_all(layout)
        day1 = next(path for path in sorted(layout.scored_dir.rglob("*.jsonl")) if b"task-twin" in path.read_bytes())
        if case == "rescored":
            lines = day1.read_bytes().splitlines(keepends=True)
            for i, line in enumerate(lines):
                row = orjson.loads(line)
                if row.get("task_id") == "task-twin":
                    row["category"] = "rejected"
                    lines[i] = orjson.dumps(row) + b"\n"
            day1.write_bytes(b"".join(lines))
        else:
            (layout.evidence_dir / day1.relative_to(layout.scored_dir)).unlink()
            day1.unlink()
        export_all(layout)
        assert tree_bytes(layout.exports_dir) == fresh_export(layout, tmp_path / f"fresh-{case}")


def test_id_table_answers_are_exact_when_every_fingerprint_collides(tmp_path: Path, monkeypatch) -> None:
    """Fingerprints only steer the lookup: each match is confirmed against the id's own line."""
    monkeypatch.setattr("distillation_pipeline.exports.streaming.fingerprint", lambda key: len(key) % 3)
    layout = substrate(tmp_path / "root")
    write_runs(layout, [twin("twin-a", 2), twin("twin-b", 3)])
    export_all(layout)
    write_runs(layout, [twin("twin-c", 0), *[run for day in (1, 3, 5) for run in runs_for_day(day, 4, "new")]])
    results = export_all(layout)
    assert results["rag"].reused_positions > 0
    assert tree_bytes(layout.exports_dir) == fresh_export(layout, tmp_path / "fresh")


def _collected_scored_exported(root: Path, rows: int, seed: int) -> Layout:
    from distillation_pipeline.evidence.collect import collect
    from distillation_pipeline.sample import generate_substrate
    from distillation_pipeline.scoring import score_evidence_tree

    generate_substrate(root, rows=rows, seed=seed)
    layout = Layout.at(root)
    collect(layout, recorded_at=later(0))
    score_evidence_tree(layout)
    export_all(layout)
    return layout


def _append_sources(layout: Layout, scratch: Path, tag: str) -> None:
    """About 120 new rows at the end of every source file, dated over the same window."""
    from distillation_pipeline.sample import generate_substrate

    generate_substrate(scratch, rows=120, seed=11, mess=False)
    for new in sorted(Layout.at(scratch).kb_dir.glob("*.jsonl")):
        rows = [orjson.loads(line) for line in new.read_bytes().splitlines() if line.strip()]
        renamed = [
            {k: f"{tag}{v}" if (k == "id" or k.endswith("_id")) and isinstance(v, str) else v for k, v in row.items()}
            for row in rows
        ]
        with open(layout.kb_dir / new.name, "ab") as handle:
            handle.write(b"".join(orjson.dumps(row) + b"\n" for row in renamed))


def _fresh_with_its_manifest(layout: Layout, scratch: Path) -> dict[Path, bytes]:
    other = Layout.at(scratch)
    shutil.copytree(layout.evidence_dir, other.evidence_dir)
    shutil.copytree(layout.scored_dir, other.scored_dir)
    other.repo_manifest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(layout.repo_manifest, other.repo_manifest)
    assert all(result.reused_positions == 0 for result in export_all(other).values())
    return tree_bytes(other.exports_dir)


def test_score_and_export_take_the_prefixes_already_proven_and_rehash_a_changed_file(
    tmp_path: Path, monkeypatch
) -> None:
    """Collect's receipt hashes each grown evidence file (proving its old prefix on the way), and
    score writes each grown scored file over its old bytes; score and export reuse those digests
    instead of reading the prefixes again, but only while the file is the one they were taken
    from."""
    from distillation_pipeline.evidence.collect import collect
    from distillation_pipeline.exports import increments
    from distillation_pipeline.scoring import score_evidence_tree

    from distillation_pipeline.lib.digests import file_entries
    from distillation_pipeline.scoring import stage

    layout = _collected_scored_exported(tmp_path / "root", rows=600, seed=5)
    file_entries(layout, sorted(layout.evidence_dir.rglob("*.jsonl")))  # as the receipts of that run
    _append_sources(layout, tmp_path / "more", "late-")
    collect(layout, recorded_at=later(1))
    # collect's receipt hashes each grown evidence file whole, and on the way proves its old prefix
    file_entries(layout, sorted(layout.evidence_dir.rglob("*.jsonl")))
    read_by_score: list[Path] = []
    real_prefix_hasher = stage._prefix_hasher
    monkeypatch.setattr(stage, "_prefix_hasher", lambda path, length: read_by_score.append(path) or real_prefix_hasher(path, length))
    score_evidence_tree(layout)
    assert read_by_score == []
    hashed: list[Path] = []
    real = increments._sha256_of_prefix
    monkeypatch.setattr(increments, "_sha256_of_prefix", lambda lay, path, length: hashed.append(path) or real(lay, path, length))
    results = export_all(layout)
    assert results["rag"].reused_positions > 0
    assert hashed == []  # every grown partition's prefixes came from the score stage
    assert tree_bytes(layout.exports_dir) == _fresh_with_its_manifest(layout, tmp_path / "fresh")

    # A grown partition whose evidence prefix is edited in place after scoring (same size, mtime
    # put back): the recorded prefix no longer matches the file's stat, so it is hashed again.
    import os

    _append_sources(layout, tmp_path / "more2", "later-")
    collect(layout, recorded_at=later(2))
    score_evidence_tree(layout)
    grown = [path for path in sorted(layout.evidence_dir.rglob("*.jsonl")) if b'"later-' in path.read_bytes()]
    edited = grown[0]
    stat = os.stat(edited)
    data = edited.read_bytes()
    at = data.index(b"a", 200)  # an ASCII letter early in the prefix, so the size stays the same
    edited.write_bytes(data[:at] + b"b" + data[at + 1 :])
    os.utime(edited, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    hashed.clear()
    export_all(layout)
    assert edited in hashed
    assert tree_bytes(layout.exports_dir) == _fresh_with_its_manifest(layout, tmp_path / "fresh2")
