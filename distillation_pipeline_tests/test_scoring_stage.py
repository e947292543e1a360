"""Stage score over a real evidence tree in tmp_path: mirroring, JOINs across partitions, the
model ledger, conservation, idempotence, bit-stability and the text report."""

import hashlib
import itertools
import os
import shutil
from collections import defaultdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest

from distillation_pipeline.lib.hashing import aggregate_hash, file_sha256
from distillation_pipeline.lib.jsonl import dumps_line
from distillation_pipeline.lib.layout import Layout
from distillation_pipeline.schemas import EvidenceRecord, ModelLedgerEntry, Provenance, ScoredRun
from distillation_pipeline.scoring import EvidenceError, LedgerBuilder, score_evidence_tree

_CLASSES = {
    "scrum_reviews": "verdict",
    "observer_reviews": "verdict",
    "audits": "verdict",
    "audit_discrepancies": "verdict",
    "auto_apply": "telemetry",
    "mode_experiments": "telemetry",
    "audit_facts": "extraction",
    "distilled_facts": "extraction",
    "model_trust": "ledger",
}
_serial = itertools.count()
DAY1 = datetime(2026, 4, 26, 9, 0, tzinfo=UTC)
DAY2 = datetime(2026, 4, 27, 9, 0, tzinfo=UTC)


def ev(
    stream: str,
    markers: dict[str, Any] | None = None,
    *,
    task_id: str | None = "T1",
    at: datetime = DAY2,
    response: str = "answer",
) -> EvidenceRecord:
    sig = hashlib.sha256(f"{stream}|{next(_serial)}".encode()).hexdigest()
    return EvidenceRecord(
        id=f"{stream}:{sig[:20]}",
        stream=stream,
        source_class=_CLASSES[stream],
        source_id=(markers or {}).get("finding_id") or sig[:8],
        task_id=task_id,
        event_at=at,
        response=response,
        markers=markers or {},
        raw={"n": 1},
        provenance=Provenance(source_file=f"data/_kb/{stream}.jsonl", line_offset=0, sig_hash=sig, recorded_at=DAY2),
    )


def write_evidence(layout: Layout, records: list[EvidenceRecord]) -> dict[Path, list[str]]:
    """Write records the way collect does (partitioned by event date), return file -> ids in order."""
    files: dict[Path, list[EvidenceRecord]] = defaultdict(list)
    for record in records:
        day = record.event_at
        files[layout.evidence_dir / f"{day:%Y}" / f"{day:%m}" / f"{day:%d}" / f"{record.stream}.jsonl"].append(record)
    for path, rows in files.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"".join(dumps_line(r.model_dump(mode="json")) for r in rows))
    return {path: [r.id for r in rows] for path, rows in files.items()}


def read_scored(path: Path) -> list[ScoredRun]:
    return [ScoredRun.model_validate(orjson.loads(line)) for line in path.read_bytes().splitlines()]


def tree_hash(paths: list[Path], layout: Layout) -> str:
    return aggregate_hash((layout.relative(p), file_sha256(p)) for p in paths)


@pytest.fixture
def substrate(tmp_path: Path) -> tuple[Layout, dict[str, EvidenceRecord]]:
    layout = Layout.at(tmp_path)
    named = {
        "scrum_ok": ev("scrum_reviews", {"accepted_on_attempt": 1}, task_id="T1", at=DAY1),
        "scrum_costly": ev("scrum_reviews", {"accepted_on_attempt": 5}, task_id="T3", at=DAY1),
        "observer_ok": ev("observer_reviews", {"verdict": "accept"}, task_id="T1"),
        "discrepancy": ev("audit_discrepancies", task_id="T2"),
        "observer_T2": ev("observer_reviews", {"verdict": "accept"}, task_id="T2"),
        "audit_high": ev("audits", {"severity": "high", "finding_id": "F1"}, task_id="T1"),
        "apply": ev("auto_apply", {"status": "committed"}, task_id="T4"),
        "mode_slow_ungrounded": ev("mode_experiments", {"latency_ms": 300_000.0, "grounded_fraction": 0.1}, task_id="T4"),
        # extraction rows: day 2 children of day 1 parents, a conflict, an orphan, a telemetry-only task
        "fact_T1": ev("distilled_facts", task_id="T1"),
        "fact_T2": ev("distilled_facts", task_id="T2"),
        "fact_T3": ev("distilled_facts", task_id="T3", at=DAY1),
        "fact_orphan": ev("distilled_facts", task_id="T404"),
        "fact_T4": ev("distilled_facts", task_id="T4"),
        "audit_fact": ev("audit_facts", {"finding_id": "F1"}, task_id="T1", at=DAY1),
        "trust_a1": ev(
            "model_trust",
            {"model": "qwen", "task_kind": "audit", "trust_score": 0.5, "window_start": DAY1, "window_end": DAY1},
            task_id=None,
            at=DAY1,
        ),
        "trust_a2": ev("model_trust", {"model": "qwen", "task_kind": "audit", "trust_score": 0.9}, task_id=None, at=DAY2),
        "trust_b": ev("model_trust", {"model": "deepseek", "task_kind": "review", "trust_score": 0.8}, task_id=None, at=DAY2),
    }
    write_evidence(layout, list(named.values()))
    return layout, named


def by_id(layout: Layout) -> dict[str, ScoredRun]:
    runs = {}
    for path in sorted(layout.scored_dir.glob("*/*/*/*.jsonl")):
        for run in read_scored(path):
            runs[run.id] = run
    return runs


# ---------------------------------------------------------------------------------------------


def test_scored_files_mirror_evidence_line_for_line(substrate: tuple[Layout, dict]) -> None:
    layout, _ = substrate
    score_evidence_tree(layout)
    for evidence_file in sorted(layout.evidence_dir.glob("*/*/*/*.jsonl")):
        relative = evidence_file.relative_to(layout.evidence_dir)
        target = layout.scored_dir / relative
        if evidence_file.stem == "model_trust":
            assert not target.exists(), "model_trust rows go to the ledger, never to scored runs"
            continue
        evidence_ids = [orjson.loads(line)["id"] for line in evidence_file.read_bytes().splitlines()]
        assert [run.evidence_id for run in read_scored(target)] == evidence_ids


def test_every_category_and_join_case_on_the_tree(substrate: tuple[Layout, dict]) -> None:
    layout, named = substrate
    score_evidence_tree(layout)
    runs = by_id(layout)
    category = {name: runs[record.id].category for name, record in named.items() if record.stream != "model_trust"}
    assert category == {
        "scrum_ok": "accepted",
        "scrum_costly": "partially_accepted",
        "observer_ok": "accepted",
        "discrepancy": "rejected",
        "observer_T2": "accepted",
        "audit_high": "rejected",
        "apply": "accepted",
        "mode_slow_ungrounded": "rejected",
        "fact_T1": "needs_human_review",  # T1: two accepted parents and a rejected audit: conflict
        "fact_T2": "needs_human_review",  # accepted observer vs rejected discrepancy: conflict
        "fact_T3": "partially_accepted",
        "fact_orphan": "needs_human_review",
        "fact_T4": "needs_human_review",  # only telemetry on T4: not a parent
        "audit_fact": "rejected",  # joins its finding, across partitions
    }
    assert runs[named["scrum_costly"].id].reasons == ["accepted_on_attempt=5: high_cost"]
    assert runs[named["fact_T3"].id].parent_ids == [named["scrum_costly"].id]
    assert runs[named["audit_fact"].id].parent_ids == [named["audit_high"].id]
    assert runs[named["fact_T1"].id].reasons[0].startswith("conflicting parents via task_id=T1: accepted x2")
    assert runs[named["fact_orphan"].id].reasons == ["no parent: no verdict-bearing row with task_id=T404"]
    assert runs[named["fact_T4"].id].reasons == ["no parent: no verdict-bearing row with task_id=T4"]
    assert all(run.scorer_version == "1.0.0" for run in runs.values())


def test_counts_are_conserved_and_the_matrix_adds_up(substrate: tuple[Layout, dict]) -> None:
    layout, named = substrate
    result = score_evidence_tree(layout)
    assert result.records_in == len(named) == 17
    assert result.ledger_rows == 3
    assert result.records_in == result.records_out + result.ledger_rows
    assert sum(sum(row.values()) for row in result.matrix.values()) == result.records_out
    assert sum(result.per_category.values()) == result.records_out
    assert result.per_category == {"accepted": 4, "partially_accepted": 2, "rejected": 4, "needs_human_review": 4}
    assert result.matrix["distilled_facts"] == {"accepted": 0, "partially_accepted": 1, "rejected": 0, "needs_human_review": 4}
    assert "model_trust" not in result.matrix
    assert result.review_reasons == {"conflicting_parents": 2, "orphan": 2}
    assert result.specific == 10 and result.specific_share == pytest.approx(10 / 14)
    assert result.review_share == pytest.approx(4 / 14)


def test_model_ledger_aggregates_trust_per_model_and_task_kind(substrate: tuple[Layout, dict]) -> None:
    layout, named = substrate
    result = score_evidence_tree(layout)
    entries = [ModelLedgerEntry.model_validate(orjson.loads(line)) for line in layout.model_ledger.read_bytes().splitlines()]
    assert result.ledger_entries == len(entries) == 2
    assert [(e.model, e.task_kind) for e in entries] == [("deepseek", "review"), ("qwen", "audit")]
    qwen = entries[1]
    assert (qwen.samples, qwen.mean_trust, qwen.min_trust, qwen.max_trust) == (2, 0.7, 0.5, 0.9)
    assert (qwen.window_start, qwen.window_end) == (DAY1, DAY2)  # the second row has no window: its event time counts
    assert qwen.evidence_ids == sorted([named["trust_a1"].id, named["trust_a2"].id])
    assert layout.model_ledger in result.outputs


def test_inputs_and_outputs_are_listed_in_order(substrate: tuple[Layout, dict]) -> None:
    layout, _ = substrate
    result = score_evidence_tree(layout)
    assert result.inputs == sorted(layout.evidence_dir.glob("*/*/*/*.jsonl"), key=lambda p: p.as_posix())
    scored = sorted(layout.scored_dir.glob("*/*/*/*.jsonl"), key=lambda p: p.as_posix())
    assert result.outputs == [*scored, layout.model_ledger]
    assert all(path.exists() for path in result.outputs)


def test_rescoring_with_the_same_version_rewrites_nothing(substrate: tuple[Layout, dict]) -> None:
    layout, _ = substrate
    first = score_evidence_tree(layout)
    assert first.files_written == len(first.outputs)
    past = 1_000_000_000
    for path in first.outputs:
        os.utime(path, (past, past))
    before = {path: path.read_bytes() for path in first.outputs}
    second = score_evidence_tree(layout)
    assert (second.files_written, second.files_unchanged) == (0, len(first.outputs))
    for path in second.outputs:
        assert path.read_bytes() == before[path]
        assert path.stat().st_mtime == past, f"{path} was rewritten"


def test_changing_scorer_version_changes_the_output_hash(substrate: tuple[Layout, dict]) -> None:
    layout, _ = substrate
    first = score_evidence_tree(layout)
    hash_v1 = tree_hash(first.outputs, layout)
    second = score_evidence_tree(layout, scorer_version="1.1.0")
    assert tree_hash(second.outputs, layout) != hash_v1
    assert second.files_written == len(second.outputs) - 1  # every scored file; the ledger has no version
    assert {run.scorer_version for run in by_id(layout).values()} == {"1.1.0"}
    score_evidence_tree(layout)
    assert tree_hash(first.outputs, layout) == hash_v1


def test_identical_evidence_gives_identical_bytes_under_another_root(tmp_path: Path, substrate: tuple[Layout, dict]) -> None:
    layout, _ = substrate
    other = Layout.at(tmp_path / "elsewhere")
    for path in layout.evidence_dir.rglob("*.jsonl"):
        target = other.evidence_dir / path.relative_to(layout.evidence_dir)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(path.read_bytes())
    a, b = score_evidence_tree(layout), score_evidence_tree(other)
    assert tree_hash(a.outputs, layout) == tree_hash(b.outputs, other)


def test_scored_files_whose_evidence_is_gone_are_removed(substrate: tuple[Layout, dict]) -> None:
    layout, _ = substrate
    score_evidence_tree(layout)
    day1 = layout.evidence_dir / "2026" / "04" / "26"
    for path in day1.iterdir():
        path.unlink()
    stray = layout.scored_dir / "2026" / "04" / "27" / "model_trust.jsonl"
    stray.write_bytes(b"{}\n")  # a scored file for the ledger stream must not exist either
    result = score_evidence_tree(layout)
    assert not (layout.scored_dir / "2026" / "04" / "26").exists()
    assert not stray.exists()
    assert result.files_removed == 4  # day 1: scrum_reviews, distilled_facts, audit_facts; plus the stray
    assert layout.model_ledger.exists()


def test_dry_run_computes_everything_and_writes_nothing(substrate: tuple[Layout, dict]) -> None:
    layout, _ = substrate
    dry = score_evidence_tree(layout, dry_run=True)
    assert not layout.scored_dir.exists()
    real = score_evidence_tree(layout)
    assert dry.dry_run and not real.dry_run
    assert (dry.matrix, dry.records_out, dry.ledger_entries, dry.outputs) == (real.matrix, real.records_out, real.ledger_entries, real.outputs)
    assert dry.files_written == real.files_written == len(real.outputs)


def test_dry_run_does_not_remove_stale_files(substrate: tuple[Layout, dict]) -> None:
    layout, _ = substrate
    score_evidence_tree(layout)
    stale = layout.scored_dir / "2020" / "01" / "01" / "audits.jsonl"
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"")
    result = score_evidence_tree(layout, dry_run=True)
    assert result.removed == [stale] and stale.exists()


def test_an_empty_evidence_file_gives_an_empty_scored_file(tmp_path: Path) -> None:
    layout = Layout.at(tmp_path)
    empty = layout.evidence_dir / "2026" / "04" / "27" / "audits.jsonl"
    empty.parent.mkdir(parents=True)
    empty.write_bytes(b"")
    result = score_evidence_tree(layout)
    assert (layout.scored_dir / "2026" / "04" / "27" / "audits.jsonl").read_bytes() == b""
    assert layout.model_ledger.read_bytes() == b""
    assert (result.records_in, result.records_out, result.ledger_rows) == (0, 0, 0)


def test_no_evidence_tree_is_an_empty_run_not_a_crash(tmp_path: Path) -> None:
    result = score_evidence_tree(Layout.at(tmp_path))
    assert (result.records_in, result.inputs, result.matrix) == (0, [], {})
    assert result.specific_share == 0.0


@pytest.mark.parametrize(
    ("line", "message"),
    [
        (b"{not json\n", "2026/04/27/audits.jsonl:2: not JSON"),
        (b"\n", "2026/04/27/audits.jsonl:2: not JSON"),
        (b'{"id": "x"}\n', "2026/04/27/audits.jsonl:2: not an EvidenceRecord"),
    ],
)
def test_corrupt_evidence_stops_the_stage_naming_file_and_line(tmp_path: Path, line: bytes, message: str) -> None:
    layout = Layout.at(tmp_path)
    write_evidence(layout, [ev("audits", {"severity": "low"})])
    path = layout.evidence_dir / "2026" / "04" / "27" / "audits.jsonl"
    path.write_bytes(path.read_bytes() + line)
    with pytest.raises(EvidenceError, match=message):
        score_evidence_tree(layout)
    assert not layout.scored_dir.exists(), "pass 1 reads verdict files first, so nothing was written"


def test_a_record_in_another_streams_file_is_corruption(tmp_path: Path) -> None:
    layout = Layout.at(tmp_path)
    write_evidence(layout, [ev("distilled_facts")])
    wrong = layout.evidence_dir / "2026" / "04" / "27" / "distilled_facts.jsonl"
    wrong.rename(wrong.with_name("observer_escalations.jsonl"))
    with pytest.raises(EvidenceError, match="a distilled_facts record in the observer_escalations file"):
        score_evidence_tree(layout)


def test_render_table_shows_the_matrix_and_the_specific_share(substrate: tuple[Layout, dict]) -> None:
    layout, _ = substrate
    table = score_evidence_tree(layout).render_table()
    lines = table.splitlines()
    assert lines[0] == "Scored runs (scorer_version 1.0.0)"
    assert lines[1].split() == ["stream", "accepted", "partial", "rejected", "review", "total"]
    rows = {line.split()[0]: line.split()[1:] for line in lines[2:] if line.split()[0] in _CLASSES or line.startswith("total")}
    assert rows["scrum_reviews"] == ["1", "1", "0", "0", "2"]
    assert rows["distilled_facts"] == ["0", "1", "0", "4", "5"]
    assert rows["total"] == ["4", "2", "4", "4", "14"]
    assert list(rows)[:3] == ["scrum_reviews", "observer_reviews", "audits"]  # spec order
    assert "specific category: 10/14 (71.4%); needs_human_review: 4/14 (28.6%)" in table
    assert "model_trust: 3 row(s) aggregated into 2 model ledger entries (not scored, never exported)" in table


# ---------------------------------------------------------------------------------------------
# incremental runs: the same bytes and counts as a full rescore of the same evidence
# ---------------------------------------------------------------------------------------------

RESULT_COUNTS = ("records_in", "records_out", "ledger_rows", "ledger_entries", "matrix", "per_category", "review_reasons")


def append_evidence(layout: Layout, records: list[EvidenceRecord]) -> None:
    """Append records at the end of their partition files, the way collect does on a later run."""
    for record in records:
        day = record.event_at
        path = layout.evidence_dir / f"{day:%Y}" / f"{day:%m}" / f"{day:%d}" / f"{record.stream}.jsonl"
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "ab") as handle:
            handle.write(dumps_line(record.model_dump(mode="json")))


def scored_tree(layout: Layout) -> dict[str, bytes]:
    return {p.relative_to(layout.scored_dir).as_posix(): p.read_bytes() for p in sorted(layout.scored_dir.rglob("*.jsonl"))}


def assert_same_as_full_rescore(layout: Layout, result: Any, scorer_version: str = "1.0.0") -> None:
    """Score a copy of the evidence from scratch (no state, no scored files) and compare."""
    fresh = Layout.at(layout.root.parent / f"{layout.root.name}-rebuild-{next(_serial)}")
    shutil.copytree(layout.evidence_dir, fresh.evidence_dir)
    full = score_evidence_tree(fresh, scorer_version=scorer_version)
    assert not full.incremental
    assert scored_tree(layout) == scored_tree(fresh)
    for name in RESULT_COUNTS:
        assert getattr(result, name) == getattr(full, name), name
    assert [layout.relative(p) for p in result.outputs] == [fresh.relative(p) for p in full.outputs]


def relative_names(layout: Layout, paths: list[Path]) -> list[str]:
    return [p.relative_to(layout.scored_dir).as_posix() for p in paths]


def test_a_second_run_over_unchanged_evidence_reads_nothing(substrate: tuple[Layout, dict]) -> None:
    layout, _ = substrate
    first = score_evidence_tree(layout)
    assert not first.incremental and first.full_reason == "no score state"
    assert first.new_records == first.records_in == 17
    second = score_evidence_tree(layout)
    assert second.incremental and second.new_records == 0
    assert_same_as_full_rescore(layout, second)


def test_appended_rows_are_scored_alone_and_give_the_full_rescore_bytes(substrate: tuple[Layout, dict]) -> None:
    layout, named = substrate
    score_evidence_tree(layout)
    day3 = datetime(2026, 4, 28, 9, 0, tzinfo=UTC)
    append_evidence(
        layout,
        [
            ev("scrum_reviews", {"accepted_on_attempt": 2}, task_id="T9", at=DAY2),  # a new parent in a new file
            ev("distilled_facts", task_id="T9", at=DAY1),  # its child, appended to an old file
            ev("distilled_facts", task_id="T9", at=day3),  # and one in a new partition
            ev("auto_apply", {"status": "reverted"}, task_id="T9"),
            ev("model_trust", {"model": "qwen", "task_kind": "audit", "trust_score": 0.1}, task_id=None),
        ],
    )
    result = score_evidence_tree(layout)
    assert result.incremental and result.full_reason == ""
    assert result.new_records == 5  # the ledger takes the old model_trust rows from the state, it does not parse them again
    assert result.files_appended == 2 and result.files_rescored == 0  # day 1 distilled_facts, day 2 auto_apply
    assert result.ledger_rows == 4
    assert_same_as_full_rescore(layout, result)
    assert by_id(layout)[named["fact_T3"].id].category == "partially_accepted"  # untouched rows keep their verdict


def test_a_new_verdict_row_flips_old_extraction_rows_in_files_that_did_not_change(substrate: tuple[Layout, dict]) -> None:
    layout, named = substrate
    score_evidence_tree(layout)
    day1_facts = layout.scored_dir / "2026" / "04" / "26" / "distilled_facts.jsonl"
    before = day1_facts.read_bytes()
    append_evidence(
        layout,
        [
            ev("observer_reviews", {"verdict": "reject"}, task_id="T3"),  # T3 had one partial parent: now a conflict
            ev("scrum_reviews", {"accepted_on_attempt": 1}, task_id="T404", at=DAY1),  # the orphan gets a parent
            ev("audits", {"severity": "info", "finding_id": "F1"}, task_id="T7"),  # F1's audit fact: rejected vs accepted
        ],
    )
    result = score_evidence_tree(layout)
    assert result.incremental
    runs = by_id(layout)
    assert runs[named["fact_T3"].id].category == "needs_human_review"
    assert runs[named["fact_T3"].id].reasons[0].startswith("conflicting parents via task_id=T3")
    assert runs[named["fact_orphan"].id].category == "accepted"
    assert runs[named["audit_fact"].id].category == "needs_human_review"
    assert day1_facts.read_bytes() != before  # its evidence file did not change, its verdicts did
    assert result.files_rescored >= 2  # day 1 distilled_facts and audit_facts, from line 1
    assert_same_as_full_rescore(layout, result)


def test_a_verdict_row_that_changes_no_inherited_judgement_rescores_nothing(substrate: tuple[Layout, dict]) -> None:
    layout, named = substrate
    score_evidence_tree(layout)
    # T1 already conflicts (accepted x2 vs rejected); a parent needing review abstains and is not
    # named in a conflict's reasons, so no T1 child changes.
    append_evidence(layout, [ev("observer_reviews", {"verdict": "maybe"}, task_id="T1")])
    result = score_evidence_tree(layout)
    assert result.incremental and result.files_rescored == 0 and result.new_records == 1 + 0
    assert_same_as_full_rescore(layout, result)


def _rewrite_middle_line(path: Path, old: bytes, new: bytes) -> None:
    """Change one line in the middle of a file, keeping its length (what a window check would miss)."""
    assert len(old) == len(new)
    data = path.read_bytes()
    lines = data.splitlines(keepends=True)
    middle = len(lines) // 2
    assert 0 < middle < len(lines) - 1 and old in lines[middle]
    lines[middle] = lines[middle].replace(old, new)
    path.write_bytes(b"".join(lines))
    assert path.stat().st_size == len(data)


def test_a_rewritten_non_verdict_file_is_rescored_from_line_one(tmp_path: Path) -> None:
    layout = Layout.at(tmp_path / "root")
    statuses = ["committed", "committed", "committed", "committed", "committed"]
    write_evidence(layout, [ev("auto_apply", {"status": s}, task_id=f"T{i}") for i, s in enumerate(statuses)])
    score_evidence_tree(layout)
    path = layout.evidence_dir / "2026" / "04" / "27" / "auto_apply.jsonl"
    _rewrite_middle_line(path, b'"status":"committed"', b'"status":"abandoned"')
    result = score_evidence_tree(layout)
    assert result.incremental and result.files_rescored == 1
    assert result.per_category["needs_human_review"] == 1
    assert_same_as_full_rescore(layout, result)


def test_a_rewritten_verdict_file_means_a_full_rescore(substrate: tuple[Layout, dict]) -> None:
    layout, named = substrate
    extra = [ev("audits", {"severity": "high", "finding_id": f"F{i}"}, task_id="T8") for i in range(2, 5)]
    append_evidence(layout, extra)
    score_evidence_tree(layout)
    path = layout.evidence_dir / "2026" / "04" / "27" / "audits.jsonl"
    _rewrite_middle_line(path, b'"severity":"high"', b'"severity":"info"')  # a rejected parent is now accepted
    result = score_evidence_tree(layout)
    assert not result.incremental and result.full_reason == "verdict evidence rewritten: data/evidence/2026/04/27/audits.jsonl"
    assert_same_as_full_rescore(layout, result)


def test_a_stream_collect_rewrote_with_more_rows_is_rescored(substrate: tuple[Layout, dict]) -> None:
    layout, _ = substrate
    score_evidence_tree(layout)
    path = layout.evidence_dir / "2026" / "04" / "27" / "distilled_facts.jsonl"
    rewritten = [ev("distilled_facts", task_id=t) for t in ("T2", "T1", "T3", "T404", "T4", "T3")]
    path.unlink()  # collect drops a re-collected stream's files and writes them anew
    append_evidence(layout, rewritten)
    result = score_evidence_tree(layout)
    assert result.incremental and result.files_rescored == 1
    assert_same_as_full_rescore(layout, result)


@pytest.mark.parametrize("stream", ["scrum_reviews", "distilled_facts", "model_trust"])
def test_a_deleted_partition_gives_the_full_rescore_result(substrate: tuple[Layout, dict], stream: str) -> None:
    layout, _ = substrate
    score_evidence_tree(layout)
    (layout.evidence_dir / "2026" / "04" / "26" / f"{stream}.jsonl").unlink()
    result = score_evidence_tree(layout)
    assert result.incremental == (stream != "scrum_reviews")  # a verdict file gone takes rows out of the index
    assert_same_as_full_rescore(layout, result)


def test_a_hand_edited_scored_file_is_restored(substrate: tuple[Layout, dict]) -> None:
    layout, _ = substrate
    score_evidence_tree(layout)
    target = layout.scored_dir / "2026" / "04" / "27" / "auto_apply.jsonl"
    target.write_bytes(target.read_bytes().replace(b"accepted", b"rejected"))
    append_evidence(layout, [ev("auto_apply", {"status": "committed"}, task_id="T5")])  # and the evidence grew
    result = score_evidence_tree(layout)
    assert result.incremental and result.files_rescored == 1
    assert_same_as_full_rescore(layout, result)


def test_a_copied_root_keeps_its_state_but_vouches_for_no_scored_file(tmp_path: Path, substrate: tuple[Layout, dict]) -> None:
    """Evidence is verified by content (sha256), scored files only by fingerprint: in a copy
    every scored file is another inode, so every file is scored again, and none rewritten."""
    layout, _ = substrate
    score_evidence_tree(layout)
    copy = Layout.at(tmp_path / "copied")
    shutil.copytree(layout.root / "data", copy.root / "data")
    result = score_evidence_tree(copy)
    assert result.incremental and result.files_written == 0
    assert result.new_records == result.records_out and result.files_rescored == 9
    assert_same_as_full_rescore(copy, result)
    assert score_evidence_tree(copy).new_records == 0


def _state_file(layout: Layout) -> Path:
    return layout.score_state_dir / "state.json"


def _index_file(layout: Layout, name: str) -> Path:
    return layout.score_state_dir / name


def _corrupt_index_entry(layout: Layout) -> None:
    """T3's record in the blob no longer decodes, and the state names the damaged blob's sha256:
    only the record itself can tell (IndexStateError when the run looks T3 up)."""
    blob = _index_file(layout, "parents.blob")
    data = blob.read_bytes()
    start = data.index(b'["task_id=T3",')
    end = data.index(b"]]}]", start) + 4
    blob.write_bytes(data[:start] + b"{" * (end - start) + data[end:])
    state = orjson.loads(_state_file(layout).read_bytes())
    state["index"]["blob_sha256"] = hashlib.sha256(blob.read_bytes()).hexdigest()
    _state_file(layout).write_bytes(orjson.dumps(state))


def _flip_last_byte(layout: Layout, name: str) -> None:
    path = _index_file(layout, name)
    data = bytearray(path.read_bytes())
    data[-1] ^= 1
    path.write_bytes(bytes(data))


@pytest.mark.parametrize(
    ("damage", "reason"),
    [
        (lambda data: None, "no score state"),
        (lambda data: b"\x00garbage", "score state unreadable"),
        (lambda data: data[: len(data) // 2], "score state unreadable"),
        (lambda data: b'{"state_version": 2, "files": []}', "scorer_version changed"),
        (lambda data: data.replace(b'"state_version":2', b'"state_version":99'), "score state from another state version"),
        (lambda data: data.replace(b'"files":{', b'"files":{"x":{"bogus":1},'), "score state corrupt"),
        (lambda data: data.replace(b'"keys":[0,', b'"keys":[999999,'), "score state corrupt"),
        ("parents.blob", "score state corrupt"),
        ("parents.dir", "score state corrupt"),
        ("filekeys.bin", "score state corrupt"),
        (_corrupt_index_entry, "score state corrupt (parent index entry task_id=T3"),
    ],
)
def test_a_missing_corrupt_or_foreign_state_means_a_full_rescore(substrate: tuple[Layout, dict], damage: Any, reason: str) -> None:
    layout, named = substrate
    score_evidence_tree(layout)
    if isinstance(damage, str):  # a side file of the state, one byte changed
        _flip_last_byte(layout, damage)
    elif damage is _corrupt_index_entry:
        damage(layout)
    else:
        damaged = damage(_state_file(layout).read_bytes())
        if damaged is None:
            _state_file(layout).unlink()
        else:
            _state_file(layout).write_bytes(damaged)
    append_evidence(layout, [ev("observer_reviews", {"verdict": "reject"}, task_id="T3")])  # uses the T3 entry
    result = score_evidence_tree(layout)
    assert not result.incremental and result.full_reason.startswith(reason)
    assert by_id(layout)[named["fact_T3"].id].category == "needs_human_review"
    assert_same_as_full_rescore(layout, result)
    assert score_evidence_tree(layout).incremental  # and the state is good again


def test_a_scorer_version_change_rescores_every_row(substrate: tuple[Layout, dict]) -> None:
    layout, _ = substrate
    score_evidence_tree(layout)
    append_evidence(layout, [ev("auto_apply", {"status": "committed"}, task_id="T5")])
    result = score_evidence_tree(layout, scorer_version="1.1.0")
    assert not result.incremental and result.full_reason == "scorer_version changed"
    assert {run.scorer_version for run in by_id(layout).values()} == {"1.1.0"}
    assert_same_as_full_rescore(layout, result, scorer_version="1.1.0")


def test_a_run_that_dies_while_replacing_files_leaves_no_state_and_the_next_run_repairs(
    substrate: tuple[Layout, dict], monkeypatch: pytest.MonkeyPatch
) -> None:
    layout, _ = substrate
    score_evidence_tree(layout)
    append_evidence(layout, [ev("observer_reviews", {"verdict": "reject"}, task_id="T3"), ev("distilled_facts", task_id="T3")])
    real_replace = os.replace
    calls = itertools.count()

    def dying_replace(src: Any, dst: Any) -> None:
        if next(calls) == 1:
            raise KeyboardInterrupt("killed between two renames")
        real_replace(src, dst)

    monkeypatch.setattr("distillation_pipeline.lib.atomic.os.replace", dying_replace)
    with pytest.raises(KeyboardInterrupt):
        score_evidence_tree(layout)
    monkeypatch.undo()
    assert not _state_file(layout).exists(), "a half-replaced tree must not be described by the old state"
    assert not list(layout.scored_dir.rglob("*.tmp"))
    result = score_evidence_tree(layout)
    assert not result.incremental
    assert_same_as_full_rescore(layout, result)


def test_corrupt_appended_evidence_replaces_nothing_and_keeps_the_state(substrate: tuple[Layout, dict]) -> None:
    layout, _ = substrate
    score_evidence_tree(layout)
    before = scored_tree(layout)
    state = _state_file(layout).read_bytes()
    append_evidence(layout, [ev("auto_apply", {"status": "committed"}, task_id="T5")])
    path = layout.evidence_dir / "2026" / "04" / "27" / "distilled_facts.jsonl"
    path.write_bytes(path.read_bytes() + b"{torn\n")
    with pytest.raises(EvidenceError, match="distilled_facts.jsonl:5: not JSON"):
        score_evidence_tree(layout)
    assert scored_tree(layout) == before and _state_file(layout).read_bytes() == state
    assert not list(layout.scored_dir.rglob("*.tmp"))


def test_an_incremental_dry_run_counts_what_the_real_run_writes_and_touches_nothing(substrate: tuple[Layout, dict]) -> None:
    layout, _ = substrate
    score_evidence_tree(layout)
    append_evidence(layout, [ev("observer_reviews", {"verdict": "reject"}, task_id="T3"), ev("distilled_facts", task_id="T3")])
    before, state = scored_tree(layout), _state_file(layout).read_bytes()
    dry = score_evidence_tree(layout, dry_run=True)
    assert scored_tree(layout) == before and _state_file(layout).read_bytes() == state
    real = score_evidence_tree(layout)
    assert dry.incremental and real.incremental
    for name in (*RESULT_COUNTS, "files_written", "files_unchanged", "new_records", "files_appended", "files_rescored"):
        assert getattr(dry, name) == getattr(real, name), name
    assert_same_as_full_rescore(layout, real)


def test_a_touched_ledger_is_rebuilt_once_not_on_every_run(substrate: tuple[Layout, dict]) -> None:
    layout, _ = substrate
    score_evidence_tree(layout)
    os.utime(layout.model_ledger)  # its fingerprint no longer matches the state: rebuilt, same bytes
    first = score_evidence_tree(layout)
    assert first.incremental and first.files_written == 0
    calls = []
    real_entries = LedgerBuilder.entries
    LedgerBuilder.entries = lambda self: calls.append(1) or real_entries(self)  # type: ignore[method-assign]
    try:
        score_evidence_tree(layout)
    finally:
        LedgerBuilder.entries = real_entries  # type: ignore[method-assign]
    assert calls == []
