"""Stage collect (spec section 3): provenance, skips, conservation, idempotency, bit-stability."""

import hashlib
from collections import Counter

import orjson
import pytest
from pydantic import ValidationError

from distillation_pipeline.evidence.collect import MAX_LINE_BYTES, collect
from distillation_pipeline.evidence.health import check_health
from distillation_pipeline.lib.hashing import canonical_json
from distillation_pipeline.lib.jsonl import iter_json_rows, read_line_at
from distillation_pipeline.lib.timestamps import parse_timestamp
from distillation_pipeline.schemas import EvidenceRecord, SkipRecord
from distillation_pipeline_tests.conftest import PINNED, Substrate, scrum_row, tree_bytes

PIN = parse_timestamp(PINNED)


def evidence_rows(substrate: Substrate, stream: str = "scrum_reviews") -> list[dict]:
    rows = []
    for path in sorted(substrate.layout.evidence_dir.rglob(f"{stream}.jsonl")):
        rows += list(iter_json_rows(path))
    return rows


def skips(substrate: Substrate) -> list[dict]:
    return list(iter_json_rows(substrate.layout.skips_file))


def skip_reasons(substrate: Substrate) -> Counter:
    return Counter(row["reason"] for row in skips(substrate))


# --- provenance and shape ---------------------------------------------------------------------


def test_every_record_validates_and_carries_provenance(substrate: Substrate) -> None:
    substrate.write_rows("scrum_reviews", [scrum_row("r1"), scrum_row("r2", attempt=3)])
    collect(substrate.layout, recorded_at=PIN)
    rows = evidence_rows(substrate)
    assert len(rows) == 2
    for row in rows:
        record = EvidenceRecord.model_validate(row)
        assert record.provenance.source_file == "data/_kb/scrum_reviews.jsonl"
        assert record.provenance.recorded_at == PIN
        assert record.source_class == "verdict"
    offsets = [row["provenance"]["line_offset"] for row in rows]
    first_line_length = len(orjson.dumps(scrum_row("r1"))) + 1
    assert offsets == [0, first_line_length]


def test_sig_hash_is_canonical_and_round_trips_to_the_source(substrate: Substrate) -> None:
    # Same row twice with different key order and spacing: one canonical hash.
    substrate.write_bytes(
        "scrum_reviews",
        b'{"review_id": "r1", "task_id": "t", "accepted_on_attempt": 1, "created_at": "2026-10-02T00:00:00Z"}\n'
        b'{"created_at":"2026-10-02T00:00:00Z","accepted_on_attempt":1,"task_id":"t","review_id":"r1"}\n',
    )
    result = collect(substrate.layout, recorded_at=PIN)
    assert result.streams["scrum_reviews"].written == 1
    assert result.streams["scrum_reviews"].deduplicated == 1
    record = evidence_rows(substrate)[0]
    source = substrate.root / record["provenance"]["source_file"]
    raw = read_line_at(source, record["provenance"]["line_offset"])
    assert hashlib.sha256(canonical_json(orjson.loads(raw))).hexdigest() == record["provenance"]["sig_hash"]
    assert check_health(substrate.layout).passed


def test_partitioned_by_event_date(substrate: Substrate) -> None:
    substrate.write_rows(
        "scrum_reviews",
        [scrum_row("r1", created_at="2026-10-02T23:30:00-02:00"), scrum_row("r2", created_at="2026-09-30T00:00:00Z")],
    )
    collect(substrate.layout, recorded_at=PIN)
    files = sorted(p.relative_to(substrate.layout.evidence_dir).as_posix() for p in substrate.layout.evidence_dir.rglob("*.jsonl"))
    # 23:30 at -02:00 is 01:30 UTC the next day
    assert files == ["2026/09/30/scrum_reviews.jsonl", "2026/10/03/scrum_reviews.jsonl"]


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2026-10-02T10:00:00Z", "2026-10-02T10:00:00Z"),
        ("2026-10-02T12:00:00+02:00", "2026-10-02T10:00:00Z"),
        (1790935200, "2026-10-02T10:00:00Z"),
        (1790935200000, "2026-10-02T10:00:00Z"),
        ("1790935200", "2026-10-02T10:00:00Z"),
        ("1790935200000", "2026-10-02T10:00:00Z"),
    ],
    ids=["iso-z", "iso-offset", "epoch-s", "epoch-ms", "epoch-s-string", "epoch-ms-string"],
)
def test_each_timestamp_form(substrate: Substrate, value: object, expected: str) -> None:
    substrate.write_rows("scrum_reviews", [scrum_row("r1", created_at=value)])
    collect(substrate.layout, recorded_at=PIN)
    assert evidence_rows(substrate)[0]["event_at"] == expected


def test_ts_streams_and_extracted_at_streams(substrate: Substrate) -> None:
    substrate.write_rows("observer_reviews", [{"review_id": "o1", "task_id": "t", "task": "x", "output": "y", "verdict": "accept", "ts": "2026-10-05T00:00:00Z"}])
    substrate.write_rows("distilled_facts", [{"id": "f1", "task_id": "t", "text": "a fact", "extracted_at": 1790935200}])
    result = collect(substrate.layout, recorded_at=PIN)
    assert result.streams["observer_reviews"].written == 1
    assert result.streams["distilled_facts"].written == 1
    fact = evidence_rows(substrate, "distilled_facts")[0]
    assert fact["content"] == "a fact" and fact["source_class"] == "extraction"


# --- each kind of mess ---------------------------------------------------------------------------


def test_malformed_json_is_skipped_with_reason(substrate: Substrate) -> None:
    substrate.write_bytes("scrum_reviews", b'{"review_id": "r1", oops}\n' + orjson.dumps(scrum_row("r2")) + b"\n")
    result = collect(substrate.layout, recorded_at=PIN)
    assert result.streams["scrum_reviews"].written == 1
    assert skip_reasons(substrate) == {"malformed_json": 1}
    assert skips(substrate)[0]["line_offset"] == 0


def test_utf8_bom_is_stripped(substrate: Substrate) -> None:
    substrate.write_bytes("scrum_reviews", b"\xef\xbb\xbf" + orjson.dumps(scrum_row("r1")) + b"\n")
    result = collect(substrate.layout, recorded_at=PIN)
    assert result.streams["scrum_reviews"].written == 1
    assert check_health(substrate.layout).passed  # the round-trip re-read copes with the BOM too


def test_crlf_line_endings(substrate: Substrate) -> None:
    substrate.write_bytes("scrum_reviews", orjson.dumps(scrum_row("r1")) + b"\r\n" + orjson.dumps(scrum_row("r2")) + b"\r\n")
    result = collect(substrate.layout, recorded_at=PIN)
    assert result.streams["scrum_reviews"].written == 2
    second = evidence_rows(substrate)[1]
    assert second["provenance"]["line_offset"] == len(orjson.dumps(scrum_row("r1"))) + 2
    assert check_health(substrate.layout).passed


def test_non_utf8_bytes_are_skipped(substrate: Substrate) -> None:
    substrate.write_bytes("scrum_reviews", b'{"review_id": "r1", "task": "caf\xe9"}\n' + orjson.dumps(scrum_row("r2")) + b"\n")
    collect(substrate.layout, recorded_at=PIN)
    assert skip_reasons(substrate) == {"invalid_utf8": 1}


def test_truncated_last_line_is_left_pending_then_collected_whole(substrate: Substrate) -> None:
    substrate.write_bytes("scrum_reviews", orjson.dumps(scrum_row("r1")) + b'\n{"review_id": "r2", "task_id": "t", "crea')
    result = collect(substrate.layout, recorded_at=PIN)
    counts = result.streams["scrum_reviews"]
    assert (counts.read, counts.written, counts.skipped) == (1, 1, 0)
    assert counts.pending_tail_bytes == len(b'{"review_id": "r2", "task_id": "t", "crea')
    assert result.conserved
    # The writer finishes its line: the next run takes it whole, not as two broken halves.
    substrate.append_bytes("scrum_reviews", b'ted_at": "2026-10-02T00:00:00Z", "accepted_on_attempt": 1}\n')
    again = collect(substrate.layout, recorded_at=PIN).streams["scrum_reviews"]
    assert (again.read, again.written, again.skipped, again.pending_tail_bytes) == (1, 1, 0, 0)


def test_a_torn_tail_completed_by_an_unrelated_append_is_one_skip(substrate: Substrate) -> None:
    substrate.write_bytes("scrum_reviews", orjson.dumps(scrum_row("r1")) + b'\n{"review_id": "r2", "cr')
    collect(substrate.layout, recorded_at=PIN)
    substrate.append_bytes("scrum_reviews", orjson.dumps(scrum_row("r3")) + b"\n")
    result = collect(substrate.layout, recorded_at=PIN)
    counts = result.streams["scrum_reviews"]
    assert (counts.read, counts.written, counts.skipped) == (1, 0, 1)
    assert skip_reasons(substrate) == {"malformed_json": 1}


def test_deeply_nested_rows_are_skipped_with_a_reason(substrate: Substrate) -> None:
    # 500 levels parse (orjson allows 1024) but exceed our limit; 5000 levels do not parse at all.
    nested_row = orjson.dumps(scrum_row("r1"))[:-1] + b', "meta": ' + b"[" * 500 + b"]" * 500 + b"}"
    too_deep_to_parse = b'{"a": ' + b"[" * 5000 + b"]" * 5000 + b"}"
    substrate.write_bytes(
        "scrum_reviews", nested_row + b"\n" + too_deep_to_parse + b"\n" + orjson.dumps(scrum_row("r2")) + b"\n"
    )
    result = collect(substrate.layout, recorded_at=PIN)
    assert result.streams["scrum_reviews"].written == 1
    assert skip_reasons(substrate) == {"too_deeply_nested": 2}


def test_unterminated_but_complete_last_line_is_kept(substrate: Substrate) -> None:
    substrate.write_bytes("scrum_reviews", orjson.dumps(scrum_row("r1")))
    result = collect(substrate.layout, recorded_at=PIN)
    assert result.streams["scrum_reviews"].written == 1


def test_huge_line_is_bounded_and_skipped(substrate: Substrate) -> None:
    huge = orjson.dumps(scrum_row("big", review="x" * (MAX_LINE_BYTES + 10)))
    substrate.write_bytes("scrum_reviews", huge + b"\n" + orjson.dumps(scrum_row("r2")) + b"\n")
    result = collect(substrate.layout, recorded_at=PIN)
    assert skip_reasons(substrate) == {"line_too_long": 1}
    assert result.streams["scrum_reviews"].written == 1
    assert evidence_rows(substrate)[0]["provenance"]["line_offset"] == len(huge) + 1


def test_wrong_types_are_schema_violations(substrate: Substrate) -> None:
    substrate.write_rows(
        "scrum_reviews",
        [scrum_row("r1", attempt="many"), scrum_row("r2", attempt=0), scrum_row("r3", task={"nested": 1})],
    )
    substrate.write_rows("outcomes", [{"outcome_id": "o1", "task_id": "t", "summary": "s", "events": "all good", "gap_signals": 0, "created_at": PINNED}])
    collect(substrate.layout, recorded_at=PIN)
    assert skip_reasons(substrate) == {"schema_violation": 4}
    assert all(row["detail"] for row in skips(substrate))


def test_numbers_as_strings_are_coerced(substrate: Substrate) -> None:
    substrate.write_rows("scrum_reviews", [scrum_row("r1", attempt="2")])
    collect(substrate.layout, recorded_at=PIN)
    assert evidence_rows(substrate)[0]["markers"]["accepted_on_attempt"] == 2


def test_missing_timestamp_and_missing_fields(substrate: Substrate) -> None:
    no_time = scrum_row("r1")
    del no_time["created_at"]
    no_task = scrum_row("r2")
    del no_task["task_id"]
    substrate.write_rows("scrum_reviews", [no_time, no_task, scrum_row("r3", created_at="yesterday")])
    collect(substrate.layout, recorded_at=PIN)
    assert skip_reasons(substrate) == {"missing_timestamp": 1, "missing_required_field": 1, "bad_timestamp": 1}


def test_exact_duplicates_are_deduplicated_not_skipped(substrate: Substrate) -> None:
    line = orjson.dumps(scrum_row("r1")) + b"\n"
    substrate.write_bytes("scrum_reviews", line * 3)
    result = collect(substrate.layout, recorded_at=PIN)
    counts = result.streams["scrum_reviews"]
    assert (counts.read, counts.written, counts.deduplicated, counts.skipped) == (3, 1, 2, 0)


def test_absent_empty_and_unknown_streams(substrate: Substrate) -> None:
    substrate.write_bytes("audits", b"")
    substrate.write_rows("legacy_notes", [{"note": "x"}, {"note": "y"}])
    result = collect(substrate.layout, recorded_at=PIN)
    assert result.streams["observer_reviews"].source_present is False  # absent: reported, not an error
    assert result.streams["audits"].source_present and result.streams["audits"].read == 0
    unknown = result.streams["legacy_notes"]
    assert not unknown.known and unknown.read == 2 and unknown.skipped == 2
    assert skip_reasons(substrate) == {"unknown_stream": 2}


def test_blank_lines_are_counted_apart(substrate: Substrate) -> None:
    substrate.write_bytes("scrum_reviews", b"\n   \n" + orjson.dumps(scrum_row("r1")) + b"\n\n")
    result = collect(substrate.layout, recorded_at=PIN)
    counts = result.streams["scrum_reviews"]
    assert (counts.read, counts.written, counts.blank_lines) == (1, 1, 3)


def test_skip_records_validate(substrate: Substrate) -> None:
    substrate.write_bytes("scrum_reviews", b"not json\n[1,2]\n")
    collect(substrate.layout, recorded_at=PIN)
    rows = skips(substrate)
    assert [row["reason"] for row in rows] == ["malformed_json", "not_an_object"]
    for row in rows:
        SkipRecord.model_validate(row)


# --- invariants -----------------------------------------------------------------------------------


def messy_substrate(substrate: Substrate) -> None:
    substrate.write_bytes(
        "scrum_reviews",
        b"\xef\xbb\xbf"
        + orjson.dumps(scrum_row("r1"))
        + b"\r\n\n{broken\n"
        + orjson.dumps(scrum_row("r2", attempt=None))
        + b"\n"
        + orjson.dumps(scrum_row("r2", attempt=None))
        + b"\n",
    )
    substrate.write_rows("audits", [{"finding_id": "f1", "task_id": "task-1", "phase": "38", "topic": "routing", "severity": "high", "resolution": "open", "evidence": "no breaker", "ts": 1790935200}])
    substrate.write_rows("audit_facts", [{"fact_id": "af1", "finding_id": "f1", "task_id": "task-1", "fact": "breaker missing", "ts": "2026-10-03T00:00:00Z"}])


def test_counts_are_conserved_per_stream_and_in_total(substrate: Substrate) -> None:
    messy_substrate(substrate)
    result = collect(substrate.layout, recorded_at=PIN)
    for counts in result.streams.values():
        assert counts.read == counts.written + counts.skipped + counts.deduplicated
    scrum = result.streams["scrum_reviews"]
    assert (scrum.read, scrum.written, scrum.skipped, scrum.deduplicated, scrum.blank_lines) == (4, 2, 1, 1, 1)
    totals = tuple(result.total(k) for k in ("read", "written", "skipped", "deduplicated"))
    assert totals == (6, 4, 1, 1)
    assert result.conserved


def test_second_run_writes_nothing_new(substrate: Substrate) -> None:
    messy_substrate(substrate)
    collect(substrate.layout)
    before = tree_bytes(substrate.root / "data")
    again = collect(substrate.layout)
    assert again.total("written") == 0 and again.total("read") == 0
    assert tree_bytes(substrate.root / "data") == before


def test_same_input_and_pinned_time_give_identical_bytes(tmp_path) -> None:
    trees = []
    for name in ("a", "b"):
        substrate = Substrate(tmp_path / name)
        messy_substrate(substrate)
        collect(substrate.layout, recorded_at=PIN)
        trees.append(tree_bytes(substrate.layout.evidence_dir))
    assert trees[0] == trees[1] and trees[0]


def test_appended_rows_are_collected_incrementally_and_match_a_full_rebuild(tmp_path) -> None:
    incremental, full = Substrate(tmp_path / "inc"), Substrate(tmp_path / "full")
    first = [scrum_row(f"r{i}", created_at=f"2026-10-0{1 + i % 3}T00:00:00Z") for i in range(6)]
    more = [scrum_row(f"n{i}", created_at=f"2026-10-0{1 + i % 3}T00:00:00Z") for i in range(4)]
    incremental.write_rows("scrum_reviews", first)
    collect(incremental.layout, recorded_at=PIN)
    incremental.append_bytes("scrum_reviews", b"{torn\n")
    incremental.append_rows("scrum_reviews", more + [first[0]])
    second = collect(incremental.layout, recorded_at=PIN)
    counts = second.streams["scrum_reviews"]
    assert (counts.read, counts.written, counts.skipped, counts.deduplicated) == (6, 4, 1, 1)

    full.write_bytes("scrum_reviews", incremental.layout.source_file("scrum_reviews").read_bytes())
    collect(full.layout, recorded_at=PIN)
    assert tree_bytes(incremental.layout.evidence_dir) == tree_bytes(full.layout.evidence_dir)
    assert incremental.layout.skips_file.read_bytes() == full.layout.skips_file.read_bytes()


def test_rewritten_source_is_recollected_from_scratch(substrate: Substrate) -> None:
    substrate.write_rows("scrum_reviews", [scrum_row("r1"), scrum_row("r2")])
    collect(substrate.layout, recorded_at=PIN)
    substrate.write_rows("scrum_reviews", [scrum_row("x1")])  # shrank and changed
    result = collect(substrate.layout, recorded_at=PIN)
    assert result.streams["scrum_reviews"].rebuilt
    assert [row["source_id"] for row in evidence_rows(substrate)] == ["x1"]


def test_a_killed_run_is_rolled_back_to_the_last_commit(substrate: Substrate) -> None:
    substrate.write_rows("scrum_reviews", [scrum_row("r1")])
    collect(substrate.layout, recorded_at=PIN)
    committed = tree_bytes(substrate.layout.evidence_dir)
    # What a run killed after appending but before committing leaves behind:
    partition = next(substrate.layout.evidence_dir.rglob("scrum_reviews.jsonl"))
    with open(partition, "ab") as handle:
        handle.write(b'{"half a rec')
    stray = substrate.layout.evidence_dir / "2030" / "01" / "01" / "scrum_reviews.jsonl"
    stray.parent.mkdir(parents=True)
    stray.write_bytes(b"{}\n")
    result = collect(substrate.layout, recorded_at=PIN)
    assert result.repaired and result.total("written") == 0
    assert tree_bytes(substrate.layout.evidence_dir) == committed


def test_evidence_deleted_behind_our_back_is_rebuilt(substrate: Substrate) -> None:
    substrate.write_rows("scrum_reviews", [scrum_row("r1"), scrum_row("r2")])
    collect(substrate.layout, recorded_at=PIN)
    before = tree_bytes(substrate.layout.evidence_dir)
    for path in substrate.layout.evidence_dir.rglob("*.jsonl"):
        path.unlink()
    result = collect(substrate.layout, recorded_at=PIN)
    assert result.total("written") == 2
    assert tree_bytes(substrate.layout.evidence_dir) == before


def test_dry_run_writes_nothing(substrate: Substrate) -> None:
    substrate.write_rows("scrum_reviews", [scrum_row("r1")])
    result = collect(substrate.layout, recorded_at=PIN, dry_run=True)
    assert result.streams["scrum_reviews"].written == 1
    assert not substrate.layout.evidence_dir.exists()
    assert not substrate.layout.skips_file.exists()
    assert not substrate.layout.evidence_state_file.exists()


def test_a_source_symlinked_outside_the_root_is_refused(substrate: Substrate, tmp_path) -> None:
    outside = tmp_path / "outside.jsonl"
    outside.write_bytes(orjson.dumps(scrum_row("secret")) + b"\n")
    substrate.layout.source_file("scrum_reviews").symlink_to(outside)
    result = collect(substrate.layout, recorded_at=PIN)
    counts = result.streams["scrum_reviews"]
    assert counts.refused and "source_outside_root" in counts.refused
    assert counts.read == 0 and not substrate.layout.evidence_dir.exists()
    assert result.refused == [counts.refused]


def test_cached_file_digests_are_never_stale(tmp_path) -> None:
    from distillation_pipeline.lib.digests import file_digests
    from distillation_pipeline.lib.hashing import file_sha256
    from distillation_pipeline.lib.layout import Layout

    layout = Layout.at(tmp_path)
    layout.state_dir.mkdir(parents=True)
    path = tmp_path / "f.jsonl"
    path.write_bytes(b"a\n")
    assert file_digests(layout, [path])[path] == file_sha256(path)
    with open(path, "r+b") as handle:  # same size, edited in place
        handle.write(b"b")
    assert file_digests(layout, [path])[path] == file_sha256(path)
    path.write_bytes(b"abc\n")
    assert file_digests(layout, [path])[path] == file_sha256(path)


def test_a_deleted_skips_file_is_rebuilt_from_the_sources(substrate: Substrate) -> None:
    substrate.write_bytes("scrum_reviews", b"{oops\n" + orjson.dumps(scrum_row("r1")) + b"\n")
    collect(substrate.layout, recorded_at=PIN)
    before = substrate.layout.skips_file.read_bytes()
    evidence = tree_bytes(substrate.layout.evidence_dir)
    substrate.layout.skips_file.unlink()
    result = collect(substrate.layout, recorded_at=PIN)
    assert any("re-collecting" in line for line in result.repaired)
    assert substrate.layout.skips_file.read_bytes() == before
    assert tree_bytes(substrate.layout.evidence_dir) == evidence


# --- the fast paths give what the slow ones would ----------------------------------------------


def test_line_tuples_match_iter_raw_lines_at_every_chunk_size(tmp_path) -> None:
    import random

    from distillation_pipeline.lib.jsonl import iter_raw_line_tuples, iter_raw_lines

    rnd = random.Random(7)
    pieces = [b"a", b"\n", b"\r", b"\xef\xbb\xbf", b"{", b" ", b"\r\n", b"\n\n"]
    path = tmp_path / "lines.jsonl"
    for _ in range(300):
        data = b"".join(rnd.choice(pieces) * rnd.choice([1, 2, 5]) for _ in range(rnd.randint(0, 40)))
        path.write_bytes(data)
        for start in {0, min(len(data), rnd.randint(0, 5))}:
            for limit in (None, 0, 1, 3, 8):
                want = [(line.offset, line.data, line.terminated, line.end) for line in iter_raw_lines(path, start, limit)]
                for chunk_size in (1, 2, 3, 5, 64):
                    assert list(iter_raw_line_tuples(path, start, limit, chunk_size=chunk_size)) == want


def test_the_fast_validity_check_is_on_for_this_schema() -> None:
    from distillation_pipeline.evidence.records import FAST_CHECK_ENABLED, SCHEMA_FINGERPRINT, schema_fingerprint

    # If this fails, schemas.py changed EvidenceRecord, ScoringMarkers or Provenance: every record
    # is now validated by pydantic (correct, slower). Re-read proven_valid in evidence/records.py
    # against the new models, adjust it, then update SCHEMA_FINGERPRINT.
    assert schema_fingerprint() == SCHEMA_FINGERPRINT
    assert FAST_CHECK_ENABLED


def test_the_fast_validity_check_never_accepts_what_pydantic_refuses() -> None:
    from datetime import UTC, datetime, timedelta, timezone

    from distillation_pipeline.evidence.records import EvidenceBuilder, _vouched

    builder = EvidenceBuilder("scrum_reviews", "data/_kb/scrum_reviews.jsonl", PIN)
    assert builder.fast
    moment = datetime(2026, 10, 2, 10, 0, tzinfo=UTC)
    good = ("r1", "task-1", moment, "prompt", "response", None, {"model": "qwen", "accepted_on_attempt": 1, "never_accepted": None})
    digest = bytes.fromhex("ab" * 32)

    def fields(**changes: object) -> tuple:
        names = ("source_id", "task_id", "event_at", "prompt", "response", "content")
        values = [changes.pop(name, value) for name, value in zip(names, good)]
        markers = dict(good[6])
        markers.update({key.removeprefix("m_"): value for key, value in changes.items()})
        return (*values, markers)

    def outcome(candidate: tuple, row: object = None, digest: object = digest, line_offset: object = 0) -> tuple[bool, bool]:
        """(did _vouched accept it, does pydantic accept the record made of it)"""
        row = {"review_id": "r1"} if row is None else row
        builder._fields = lambda _row: candidate
        try:
            record = builder.build(row, digest.hex() if isinstance(digest, bytes) else digest, line_offset)
            EvidenceRecord.model_validate(record)
            valid = True
        except ValidationError:
            valid = False
        except Exception:  # noqa: BLE001 - the record cannot even be made; make() must fail too
            valid = False
        return _vouched(candidate, row, digest, line_offset), valid

    vouched_and_valid = [
        fields(),
        fields(content="text", prompt=None, task_id=None),
        fields(m_latency_ms=float("inf"), m_grounded_fraction=float("nan"), m_trust_score=0.5),
        fields(m_gap_signals=2**80, m_model="\ud800", prompt="\x00"),
        fields(m_failure_markers=["a", ""], m_events_ok=[True, False], m_verdict="accept", m_escalated=False),
        fields(m_window_start=moment, m_window_end=datetime(1990, 1, 1, tzinfo=timezone(timedelta(hours=2)))),
        fields(event_at=datetime(1, 1, 1, tzinfo=UTC)),
    ]
    for candidate in vouched_and_valid:
        assert outcome(candidate) == (True, True), candidate
    refused = [
        fields(task_id=5),
        fields(prompt=["x"]),
        fields(event_at="2026-10-02T10:00:00Z"),
        fields(m_accepted_on_attempt=[2]),
        fields(m_never_accepted="maybe"),
        fields(m_failure_markers=["a", 1]),
        fields(m_events_ok=[True, "x"]),
        fields(m_latency_ms="fast"),
        fields(m_window_start="soon"),
        fields(m_unknown=1),
    ]
    for candidate in refused:
        assert outcome(candidate) == (False, False), candidate
    assert outcome(fields(), digest="AB" * 32) == (False, False)
    assert outcome(fields(), digest=digest[:31]) == (False, False)
    assert outcome(fields(), line_offset=-1) == (False, False)
    # Valid, but not in the exact shape _vouched vouches for: pydantic decides, and accepts.
    for candidate in (fields(m_accepted_on_attempt="2"), fields(m_never_accepted="yes"), fields(m_latency_ms=3), fields(m_model=None)):
        assert outcome(candidate)[1], candidate
    # make() = build() + pydantic whenever _vouched says no.
    builder._fields = lambda _row: fields(m_failure_markers=["a", 1])
    with pytest.raises(ValidationError):
        builder.make({"review_id": "r1"}, digest, 0)
    builder._fields = lambda _row: fields(m_accepted_on_attempt="2")
    assert builder.make({"review_id": "r1"}, digest, 0)["markers"]["accepted_on_attempt"] == "2"


def test_a_builder_with_an_unchecked_constant_validates_with_pydantic() -> None:
    from distillation_pipeline.evidence.records import EvidenceBuilder

    # An empty source_file breaks Provenance: the builder must not vouch for any of its records.
    builder = EvidenceBuilder("scrum_reviews", "", PIN)
    assert not builder.fast
    with pytest.raises(ValidationError):
        builder.make(scrum_row("r1"), bytes(32), 0)


def test_the_committed_prefix_hash_is_the_hash_of_the_consumed_bytes(substrate: Substrate) -> None:
    from distillation_pipeline.evidence.state import CollectState

    def committed() -> tuple[int, str]:
        stream_state = CollectState.load(substrate.layout).streams["scrum_reviews"]
        return stream_state.consumed_bytes, stream_state.prefix_sha256

    path = substrate.write_rows("scrum_reviews", [scrum_row("r1"), scrum_row("r2")])
    substrate.append_bytes("scrum_reviews", b'{"review_id": "torn')  # a pending tail: not consumed
    collect(substrate.layout, recorded_at=PIN)
    consumed, digest = committed()
    assert consumed < path.stat().st_size
    assert digest == hashlib.sha256(path.read_bytes()[:consumed]).hexdigest()
    substrate.append_bytes("scrum_reviews", b'", "task_id": "t"}\n' + orjson.dumps(scrum_row("r3")) + b"\n")
    result = collect(substrate.layout, recorded_at=PIN)  # incremental: hashes on from the old prefix
    assert not result.streams["scrum_reviews"].rebuilt
    consumed, digest = committed()
    assert consumed == path.stat().st_size
    assert digest == hashlib.sha256(path.read_bytes()).hexdigest()


def test_an_iso_time_beyond_datetime_range_in_utc_is_a_skip_not_a_crash(substrate: Substrate) -> None:
    substrate.write_rows(
        "scrum_reviews",
        [scrum_row("r1", created_at="0001-01-01T00:00:00+01:00"), scrum_row("r2", created_at="9999-12-31T23:59:59-01:00"), scrum_row("r3")],
    )
    substrate.write_rows(
        "model_trust",
        [{"model": "m", "task_kind": "k", "trust_score": 0.5, "window_start": "0001-01-01T00:30:00+02:00", "ts": PINNED}],
    )
    result = collect(substrate.layout, recorded_at=PIN)
    assert result.streams["scrum_reviews"].written == 1
    assert skip_reasons(substrate) == {"bad_timestamp": 2, "schema_violation": 1}
