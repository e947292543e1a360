"""Stage score split over two processes (``scoring/stage.py``: a worker scores a share of each
phase) gives the bytes, counts and state of the one-process run, full and incremental, on a
collected sample tree; a worker's error stops the stage and leaves nothing behind."""

import contextlib
import os
from datetime import UTC, datetime
from pathlib import Path

import orjson
import pytest

from distillation_pipeline.evidence.collect import collect
from distillation_pipeline.lib.layout import Layout
from distillation_pipeline.sample import generate_substrate
from distillation_pipeline.scoring import EvidenceError, score_evidence_tree
from distillation_pipeline.scoring import stage as score_stage
from distillation_pipeline_tests.test_scoring_stage import RESULT_COUNTS, append_evidence, ev

RECORDED_AT = datetime(2026, 11, 1, tzinfo=UTC)
RESULT_FIELDS = (*RESULT_COUNTS, "files_written", "files_unchanged", "incremental", "new_records", "files_appended", "files_rescored")


class _CountingPool:
    """The borrowed pool, counting the files handed to the worker."""

    def __init__(self, pool, handed: list[int]) -> None:  # type: ignore[no-untyped-def]
        self._pool = pool
        self._handed = handed

    def submit(self, fn, *args):  # type: ignore[no-untyped-def]
        if args:  # not the import a run starts with
            self._handed.append(len(args[0].jobs))
        return self._pool.submit(fn, *args)


def _score(layout: Layout, *, split: bool, monkeypatch: pytest.MonkeyPatch, handed: list[int] | None = None):  # type: ignore[no-untyped-def]
    """score_evidence_tree with the split forced on every phase, or never."""
    borrowed = score_stage.borrowed

    @contextlib.contextmanager
    def counting(*args, **kwargs):  # type: ignore[no-untyped-def]
        with borrowed(*args, **kwargs) as pool:
            yield _CountingPool(pool, handed if handed is not None else [])

    with monkeypatch.context() as patch:
        patch.setattr(score_stage, "SPLIT_MIN_BYTES", 0 if split else 1 << 62)
        patch.setattr(score_stage, "SPLIT_MIN_PHASE_BYTES", 0)
        patch.setattr(score_stage, "borrowed", counting)
        return score_evidence_tree(layout)


def _outputs(layout: Layout) -> dict[str, bytes]:
    return {p.relative_to(layout.root).as_posix(): p.read_bytes() for p in sorted(layout.scored_dir.rglob("*")) if p.is_file()}


def _state(layout: Layout) -> dict:
    """What ``state.json`` records, less the fingerprints (inodes and times differ between roots)
    and the parent index's blob digest (its record order follows ``hash()``, salted per process)."""
    state = orjson.loads((layout.score_state_dir / "state.json").read_bytes())
    for entry in state["files"].values():
        entry["evidence"] = entry["mirror"] = None
    state["ledger"]["file"] = None
    del state["index"]["blob_sha256"], state["index"]["directory_sha256"]
    return state


def _assert_same(split: Layout, plain: Layout, split_result, plain_result) -> None:  # type: ignore[no-untyped-def]
    assert _outputs(split) == _outputs(plain)
    assert _state(split) == _state(plain)
    for name in RESULT_FIELDS:
        assert getattr(split_result, name) == getattr(plain_result, name), name
    assert [split.relative(p) for p in split_result.outputs] == [plain.relative(p) for p in plain_result.outputs]
    assert not list(split.scored_dir.rglob(".*.tmp"))


@pytest.fixture(scope="module")
def sample_kb(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("kb")
    generate_substrate(root, rows=3000, seed=11)
    return Layout.at(root).kb_dir


def _collected(root: Path, kb: Path) -> Layout:
    layout = Layout.at(root)
    layout.kb_dir.mkdir(parents=True)
    for source in kb.iterdir():
        (layout.kb_dir / source.name).write_bytes(source.read_bytes())
    collect(layout, recorded_at=RECORDED_AT)
    return layout


def _first_record(layout: Layout, stream: str) -> dict:
    path = next(iter(sorted(layout.evidence_dir.glob(f"*/*/*/{stream}.jsonl"))))
    return orjson.loads(path.read_bytes().split(b"\n", 1)[0])


def test_the_split_run_gives_the_one_process_bytes_full_then_incremental(
    tmp_path: Path, sample_kb: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    split, plain = _collected(tmp_path / "split", sample_kb), _collected(tmp_path / "plain", sample_kb)
    handed: list[int] = []
    split_result = _score(split, split=True, monkeypatch=monkeypatch, handed=handed)
    plain_result = _score(plain, split=False, monkeypatch=monkeypatch)
    assert len(handed) == 2 and all(handed), handed  # both phases gave the worker files
    assert not split_result.incremental and split_result.records_in > 2000
    _assert_same(split, plain, split_result, plain_result)

    # New rows in many partitions, and a verdict row that contradicts the parents of a task
    # whose extraction rows were scored already: those files are scored again from line 1.
    child = _first_record(split, "distilled_facts")
    day = datetime.fromisoformat(child["event_at"])
    rows = [
        ev("scrum_reviews", {"accepted_on_attempt": None}, task_id=child["task_id"], at=day),
        ev("observer_reviews", {"verdict": "reject"}, task_id=child["task_id"], at=day),
        ev("distilled_facts", task_id=child["task_id"], at=day),
        ev("auto_apply", {"status": "committed"}, task_id=child["task_id"], at=day),
        ev("model_trust", {"model": "qwen", "task_kind": "audit", "trust_score": 0.4}, task_id=None, at=day),
    ]
    for layout in (split, plain):
        append_evidence(layout, rows)
    handed.clear()
    split_result = _score(split, split=True, monkeypatch=monkeypatch, handed=handed)
    plain_result = _score(plain, split=False, monkeypatch=monkeypatch)
    assert split_result.incremental and split_result.new_records > len(rows) and split_result.files_rescored
    assert handed and all(handed), handed
    _assert_same(split, plain, split_result, plain_result)

    # and unchanged: nothing to read, in either
    assert _score(split, split=True, monkeypatch=monkeypatch).new_records == 0


def test_an_error_in_the_worker_stops_the_stage_and_replaces_nothing(
    tmp_path: Path, sample_kb: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    layout = _collected(tmp_path / "root", sample_kb)
    _score(layout, split=True, monkeypatch=monkeypatch)
    before = _outputs(layout)
    state = (layout.score_state_dir / "state.json").read_bytes()
    corrupt = next(iter(sorted(layout.evidence_dir.glob("*/*/*/audits.jsonl"))))
    with open(corrupt, "ab") as handle:
        handle.write(b'{"not": "evidence"}\n')
    # every file to the worker: the error can only come from there
    monkeypatch.setattr(score_stage, "_halves", lambda jobs, changed_keys, here_already: ([], jobs))
    with pytest.raises(EvidenceError, match=f"{layout.relative(corrupt)}:\\d+: not an EvidenceRecord"):
        _score(layout, split=True, monkeypatch=monkeypatch)
    assert _outputs(layout) == before
    assert (layout.score_state_dir / "state.json").read_bytes() == state
    assert not [p for p in layout.scored_dir.rglob(".*") if p.is_file()]  # the worker's temporaries are gone


def test_a_worker_share_sees_the_same_index_as_this_process(tmp_path: Path, sample_kb: Path) -> None:
    """The reader a worker opens answers what the stage's own index answers, key by key."""
    layout = _collected(tmp_path / "root", sample_kb)
    score_evidence_tree(layout)
    state = score_stage.ScoreState.load(layout, score_stage.SCORER_VERSION, score_stage.code_fingerprint())
    assert state.parents is not None
    state.parents.add("new-parent", "rejected", "task-new", None)  # an overlay key, as an incremental run makes
    reader = score_stage.DiskParentIndex.reader(state.parents.snapshot())
    try:
        tasks = {orjson.loads(line)["task_id"] for path in layout.evidence_dir.glob("*/*/*/distilled_facts.jsonl") for line in path.read_bytes().splitlines()}
        for task in sorted(t for t in tasks if t) + ["task-new", "no-such-task"]:
            assert score_stage.key_judgement(reader, "task_id", task) == score_stage.key_judgement(state.parents, "task_id", task)
    finally:
        reader.close()
        state.parents.close()
    assert os.path.exists(state.parents._blob)  # noqa: SLF001 - closing the reader leaves the stored files
