"""The score stage's on-disk parent index (``scoring/parentstore.py``) answers exactly what the
in-memory ``joins.ParentIndex`` answers, however it was built (spilled in runs, stored, updated,
compacted, with colliding digests), and the model ledger's row cache gives the rebuild's bytes."""

import random
from datetime import UTC, datetime
from pathlib import Path

import orjson
import pytest

from distillation_pipeline.schemas import CATEGORIES
from distillation_pipeline.scoring import parentstore, score_evidence_tree
from distillation_pipeline.scoring.joins import FINDING, TASK, IndexStateError, ParentIndex, key_judgement
from distillation_pipeline.scoring.lines import LedgerView
from distillation_pipeline.scoring.parentstore import DiskParentIndex
from distillation_pipeline_tests.test_scoring_stage import (  # noqa: F401 (substrate is a fixture)
    DAY1,
    append_evidence,
    assert_same_as_full_rescore,
    ev,
    substrate,
)

# Keys and ids that take the spill's escaped path: newlines, its separator, a leading "[".
AWKWARD = ["T\nnewline", "T\x1fsep", "[bracket", "T=eq", "é-unicode"]


def _parents(seed: int, rows: int) -> list[tuple[str, str, str | None, str | None]]:
    rng = random.Random(seed)
    tasks = [f"T{n}" for n in range(rows // 4)] + AWKWARD
    out = []
    for n in range(rows):
        evidence_id = rng.choice(["audits:", "scrum_reviews:", "x\x1fy:", "a\nb:"]) + f"{rng.randrange(10**6):06d}"
        if rng.random() < 0.05:
            evidence_id = "audits:000001"  # the same id more than once: counted each time, listed once
        task = rng.choice(tasks) if rng.random() < 0.95 else None
        finding = f"F{rng.randrange(rows // 3)}" if rng.random() < 0.4 else None
        out.append((evidence_id, rng.choice(CATEGORIES), task, finding))
    # one key with many parents in every category (count beyond MAX_PARENT_IDS)
    out += [(f"observer_reviews:{n:04d}", CATEGORIES[n % 4], "T-many", None) for n in range(40)]
    return out


def _all_keys(parents: list[tuple[str, str, str | None, str | None]]) -> list[tuple[str, str]]:
    keys = {(TASK, t) for _, _, t, _ in parents if t is not None} | {(FINDING, f) for _, _, _, f in parents if f is not None}
    return sorted(keys) + [(TASK, "T-absent"), (FINDING, "F-absent")]


def _memory(parents) -> ParentIndex:  # type: ignore[no-untyped-def]
    index = ParentIndex()
    for row in parents:
        index.add(*row)
    return index


def _built(workdir: Path, parents) -> DiskParentIndex:  # type: ignore[no-untyped-def]
    index = DiskParentIndex.building(workdir)
    for row in parents:
        index.add(*row)
    index.finish()
    return index


def _assert_same(disk: DiskParentIndex, memory: ParentIndex, keys: list[tuple[str, str]]) -> None:
    for namespace, key in keys:
        disk._judged.clear()
        memory._judged.clear()
        assert key_judgement(disk, namespace, key) == key_judgement(memory, namespace, key), (namespace, key)
    assert disk.parents == memory.parents


def _built_then_updated(tmp_path: Path, state: Path, first: list, *batches: list) -> object:
    """Build an index of ``first`` into ``state``, then add each batch as a later run would."""
    built = _built(tmp_path / "build", first)
    entry = built.persist(state, None)
    built.close()
    for batch in batches:
        stored = DiskParentIndex.stored(state, entry)
        for row in batch:
            stored.add(*row)
        entry = stored.persist(state, entry)
        stored.close()
    return entry


def _assert_stored_same(state: Path, entry: object, parents: list) -> None:
    final = DiskParentIndex.stored(state, entry)
    try:
        _assert_same(final, _memory(parents), _all_keys(parents))
    finally:
        final.close()


@pytest.fixture(autouse=True)
def small_spill(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(parentstore, "_SPILL_ENTRIES", 64)  # many spill runs, even for a small test


def test_a_built_index_judges_every_key_as_the_memory_index_does(tmp_path: Path) -> None:
    parents = _parents(1, 1500)
    disk = _built(tmp_path / "build", parents)
    try:
        assert disk._runs > 10
        _assert_same(disk, _memory(parents), _all_keys(parents))
    finally:
        disk.close()
    assert not (tmp_path / "build").exists()


def test_a_stored_index_updated_twice_equals_the_memory_index_of_all_rows(tmp_path: Path) -> None:
    parents = _parents(2, 1200)
    state = tmp_path / "state"
    entry = _built_then_updated(tmp_path, state, parents[:700], parents[700:1000], parents[1000:])
    _assert_stored_same(state, entry, parents)


def test_an_unchanged_index_is_not_rewritten(tmp_path: Path) -> None:
    parents = _parents(3, 200)
    built = _built(tmp_path / "build", parents)
    entry = built.persist(tmp_path / "state", None)
    built.close()
    blob = tmp_path / "state" / parentstore.BLOB_NAME
    before = blob.stat()
    stored = DiskParentIndex.stored(tmp_path / "state", entry)
    assert stored.persist(tmp_path / "state", entry) is entry
    stored.close()
    assert (blob.stat().st_ino, blob.stat().st_mtime_ns) == (before.st_ino, before.st_mtime_ns)


def test_a_blob_mostly_garbage_is_compacted_and_still_right(tmp_path: Path) -> None:
    state = tmp_path / "state"
    rows = [(f"audits:{n:04d}", "accepted", "T1", None) for n in range(3)]
    built = _built(tmp_path / "build", rows)
    entry = built.persist(state, None)
    built.close()
    for n in range(3, 12):  # the same key replaced every time: the old records are garbage
        stored = DiskParentIndex.stored(state, entry)
        stored.add(f"audits:{n:04d}", "rejected" if n == 11 else "accepted", "T1")
        rows.append((f"audits:{n:04d}", "rejected" if n == 11 else "accepted", "T1", None))
        entry = stored.persist(state, entry)
        stored.close()
    assert (state / parentstore.BLOB_NAME).stat().st_size < 3 * max(len(r) for r in [orjson.dumps(rows)])
    final = DiskParentIndex.stored(state, entry)
    try:
        _assert_same(final, _memory(rows), [(TASK, "T1")])
    finally:
        final.close()


def test_colliding_digests_are_told_apart_by_the_stored_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(parentstore, "key_digest", lambda text: len(text) % 3)  # almost every key collides
    parents = _parents(4, 600)
    state = tmp_path / "state"
    entry = _built_then_updated(tmp_path, state, parents[:400], parents[400:])
    _assert_stored_same(state, entry, parents)


def test_a_damaged_record_is_a_state_error_not_a_wrong_answer(tmp_path: Path) -> None:
    built = _built(tmp_path / "build", [("audits:1", "accepted", "T1", None)])
    blob = built._blob
    assert blob is not None
    blob.write_bytes(b"{" * blob.stat().st_size)
    with pytest.raises(IndexStateError, match="task_id=T1"):
        key_judgement(built, TASK, "T1")
    built.close()


def test_a_stored_index_whose_files_changed_is_refused(tmp_path: Path) -> None:
    built = _built(tmp_path / "build", _parents(5, 100))
    entry = built.persist(tmp_path / "state", None)
    built.close()
    directory = tmp_path / "state" / parentstore.DIRECTORY_NAME
    data = bytearray(directory.read_bytes())
    data[0] ^= 1
    directory.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="directory changed"):
        DiskParentIndex.stored(tmp_path / "state", entry)


# --- the stage: the ledger's row cache ---------------------------------------------------------


def test_a_new_model_trust_row_does_not_reparse_the_old_ones(substrate, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    layout, _ = substrate
    score_evidence_tree(layout)
    append_evidence(layout, [ev("model_trust", {"model": "qwen", "task_kind": "audit", "trust_score": 0.3}, task_id=None, at=DAY1)])
    calls = []
    real = LedgerView.model_validate_json
    monkeypatch.setattr(LedgerView, "model_validate_json", lambda data: calls.append(1) or real(data))
    result = score_evidence_tree(layout)
    assert result.incremental and result.new_records == 1 and result.ledger_rows == 4
    assert calls == []  # the three old rows came from ledger_rows.jsonl
    monkeypatch.undo()
    assert_same_as_full_rescore(layout, result)


@pytest.mark.parametrize("damage", [b"", b"[]\n", b"not json\n"])
def test_a_damaged_ledger_row_cache_is_not_used(substrate, damage: bytes) -> None:  # type: ignore[no-untyped-def]
    layout, _ = substrate
    score_evidence_tree(layout)
    (layout.score_state_dir / "ledger_rows.jsonl").write_bytes(damage)
    later = datetime(2026, 4, 26, 12, 0, tzinfo=UTC)
    append_evidence(layout, [ev("model_trust", {"model": "deepseek", "task_kind": "review", "trust_score": 0.2}, task_id=None, at=later)])
    result = score_evidence_tree(layout)
    assert result.incremental and result.ledger_rows == 4
    assert_same_as_full_rescore(layout, result)


def test_a_full_run_leaves_no_build_folder_and_a_killed_ones_is_swept(substrate) -> None:  # type: ignore[no-untyped-def]
    layout, _ = substrate
    leftover = layout.score_state_dir / ".build-killed"
    (leftover / "spill-0000").parent.mkdir(parents=True)
    (leftover / "spill-0000").write_bytes(b"x")
    score_evidence_tree(layout)
    assert sorted(p.name for p in layout.score_state_dir.iterdir()) == [
        "filekeys.bin", "ledger_rows.jsonl", "parents.blob", "parents.dir", "state.json",
    ]  # fmt: skip


def test_cached_ledger_rows_keep_fractions_offsets_and_naive_times(substrate) -> None:  # type: ignore[no-untyped-def]
    from datetime import timedelta, timezone

    layout, _ = substrate
    india = timezone(timedelta(hours=5, minutes=30))
    rows = [
        ev("model_trust", {"model": "m-tz", "task_kind": "k", "trust_score": 0.1234567891,
                           "window_start": datetime(2026, 4, 26, 1, 2, 3, 456789, tzinfo=india),
                           "window_end": datetime(2026, 4, 26, 23, 0, 0, 1, tzinfo=india)}, task_id=None, at=DAY1),
        ev("model_trust", {"model": "m-naive", "task_kind": "k", "trust_score": 1e-7,
                           "window_start": datetime(2026, 4, 26, 1, 0, 0, 5), "window_end": datetime(2026, 4, 26, 2)},
           task_id=None, at=DAY1),
    ]  # fmt: skip
    append_evidence(layout, rows)
    score_evidence_tree(layout)
    append_evidence(layout, [ev("model_trust", {"model": "m-tz", "task_kind": "k", "trust_score": 0.7}, task_id=None, at=DAY1)])
    result = score_evidence_tree(layout)
    assert result.incremental and result.new_records == 1
    assert_same_as_full_rescore(layout, result)


def test_lines_read_one_at_a_time_are_the_lines_split_at_once() -> None:
    from distillation_pipeline.scoring import stage
    from distillation_pipeline.scoring.lines import split_lines

    rng = random.Random(7)
    for _ in range(5000):
        data = bytes(rng.choice(b"ab\n") for _ in range(rng.randrange(0, 14)))
        assert [bytes(line) for line in stage._iter_lines(data)] == split_lines(data), data
