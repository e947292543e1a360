"""Hostile input: arbitrary bytes and arbitrary JSON into the collector and the scorer.

Properties (hypothesis), on real files in a fresh root per example:

- nothing crashes: collect never raises; the scorer either scores or raises ``EvidenceError``;
- every row is accounted for: per stream, rows read + blank lines = lines in the file, and
  read = written + skipped + deduplicated; evidence lines on disk = written; skip rows = skipped;
  scored lines + ledger rows = evidence lines, and each scored file lines up with its evidence;
- incremental = one shot: collecting a file in two parts (split at a line end) leaves the same
  bytes as collecting it at once;
- huge lines and deep nesting are bounded (a skip with a reason), not fatal;
- sources are confined under the root: a symlink out of it is refused, and odd file names
  cannot make the collector read or write outside it.
"""

import json
import os
import tempfile
import tracemalloc
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import orjson
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from distillation_pipeline.evidence.collect import MAX_LINE_BYTES, collect, discover_streams
from distillation_pipeline.evidence.streams import NON_STREAM_FILES, STREAMS
from distillation_pipeline.lib.layout import Layout
from distillation_pipeline.schemas import EvidenceRecord, SkipRecord
from distillation_pipeline.scoring import EvidenceError, score_evidence_tree
from distillation_pipeline.scoring.stage import evidence_files, is_ledger_stream, scored_path
from distillation_pipeline_tests.kill9 import scratch_parent

PINNED = datetime(2026, 11, 1, tzinfo=UTC)
# Example counts: big enough to reach the odd corners (hypothesis shrinks what it finds), small
# enough that the whole file runs in well under a minute on two cores.
BYTES_EXAMPLES = 1000
LINE_EXAMPLES = 500
JSON_EXAMPLES = 500
EVIDENCE_EXAMPLES = 300
NAME_EXAMPLES = 200
def scratch_dir() -> tempfile.TemporaryDirectory:
    """A root per example, on tmpfs when there is one: fsync on disk would dominate the runtime."""
    return tempfile.TemporaryDirectory(dir=scratch_parent())


def hostile(examples: int) -> settings:
    return settings(max_examples=examples, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

# One valid row per stream: mutations start from something the contract accepts, so they reach
# coercion, markers, joins and the scorer instead of all stopping at "missing field".
TEMPLATES: dict[str, dict] = {
    "scrum_reviews": {"review_id": "sr-1", "task_id": "t1", "task": "Fix the router", "review": "Checked router.py",
                      "model": "qwen", "accepted_on_attempt": 1, "file": "router.py", "created_at": "2026-10-02T10:00:00Z"},
    "observer_reviews": {"review_id": "or-1", "task_id": "t1", "task": "Fix the router", "output": "Looks right",
                         "verdict": "accept", "model": "qwen", "ts": "2026-10-02T11:00:00Z"},
    "audits": {"finding_id": "f-1", "task_id": "t1", "topic": "routing", "evidence": "fallback order",
               "severity": "high", "verdict": "fail", "ts": "2026-10-02T12:00:00Z"},
    "contract_analyses": {"analysis_id": "ca-1", "task_id": "t1", "contract": "never drop a provider",
                          "analysis": "holds", "failure_markers": ["timeout"], "observer_verdict": "accept",
                          "created_at": "2026-10-02T13:00:00Z"},
    "audit_discrepancies": {"discrepancy_id": "ad-1", "task_id": "t1", "task": "Fix the router",
                            "claim": "tests pass", "ts": "2026-10-02T14:00:00Z"},
    "replay_runs": {"run_id": "rr-1", "task_id": "t1", "task": "Fix the router", "output": "patched",
                    "validation_passed": True, "escalated": False, "models_called": ["qwen"], "ts": "2026-10-02T15:00:00Z"},
    "auto_apply": {"apply_id": "aa-1", "task_id": "t1", "task": "Fix the router", "patch": "--- a\n+++ b",
                   "status": "applied", "ts": "2026-10-02T16:00:00Z"},
    "outcomes": {"outcome_id": "oc-1", "task_id": "t1", "summary": "shipped", "gap_signals": 0,
                 "events": [{"name": "deploy", "ok": True}], "created_at": "2026-10-02T17:00:00Z"},
    "mode_experiments": {"experiment_id": "me-1", "task_id": "t1", "prompt": "route?", "response": "yes",
                         "latency_ms": 12.5, "validation_results": {"grounded_fraction": 0.5}, "model": "qwen",
                         "ts": "2026-10-02T18:00:00Z"},
    "audit_facts": {"fact_id": "af-1", "task_id": "t1", "fact": "router retries twice", "finding_id": "f-1",
                    "ts": "2026-10-02T19:00:00Z"},
    "distilled_facts": {"id": "df-1", "task_id": "t1", "text": "retries are capped", "extracted_at": "2026-10-02T20:00:00Z"},
    "distilled_procedures": {"id": "dp-1", "task_id": "t1", "text": "1. read 2. fix", "extracted_at": "2026-10-02T20:00:00Z"},
    "distilled_config_hints": {"id": "dc-1", "task_id": "t1", "text": "ROUTER_RETRIES=2", "extracted_at": "2026-10-02T20:00:00Z"},
    "observer_escalations": {"escalation_id": "oe-1", "task_id": "t1", "reason": "loop", "context": "3 attempts",
                             "ts": "2026-10-02T21:00:00Z"},
    "model_trust": {"model": "qwen", "task_kind": "review", "trust_score": 0.8, "ts": "2026-10-02T22:00:00Z",
                    "window_start": "2026-10-01T00:00:00Z", "window_end": "2026-10-02T00:00:00Z"},
}

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=24),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=16,
)


def mutated_row(stream: str) -> st.SearchStrategy:
    """A stream's template with some keys dropped and some (known or new) set to arbitrary JSON."""
    template = TEMPLATES[stream]
    keys = sorted(template)
    any_key = st.sampled_from(keys) | st.sampled_from(["task_id", "ts", "created_at"]) | st.text(max_size=8)

    def build(dropped: set[str], overrides: dict, task_id: str) -> dict:
        row = {k: v for k, v in template.items() if k not in dropped}
        if "task_id" in template:
            row["task_id"] = task_id  # two tasks, so verdict rows and their extractions can join
        return {**row, **overrides}

    return st.builds(
        build,
        st.sets(st.sampled_from(keys), max_size=3),
        st.dictionaries(any_key, json_values, max_size=3),
        st.sampled_from(["t1", "t2"]),
    )


def any_row(stream: str) -> st.SearchStrategy:
    return st.one_of(mutated_row(stream), st.just(TEMPLATES[stream]), json_values)


def encode_row(row: object) -> bytes:
    """One JSONL line. Integers beyond 64 bits and NaN go through the stdlib (NaN: invalid JSON)."""
    try:
        return orjson.dumps(row) + b"\n"
    except TypeError:
        return json.dumps(row, ensure_ascii=False).encode("utf-8", "surrogatepass") + b"\n"


def stream_names() -> st.SearchStrategy:
    return st.sampled_from(sorted(STREAMS) + ["legacy_notes"])  # and one stream without a contract


# ---------------------------------------------------------------------------------------------
# The accounting every property checks
# ---------------------------------------------------------------------------------------------


def line_count(data: bytes) -> int:
    """Lines as a reader of a log sees them: a last line without newline still counts."""
    if not data:
        return 0
    return data.count(b"\n") + (0 if data.endswith(b"\n") else 1)


def fresh_layout(tmp: str, sources: dict[str, bytes]) -> Layout:
    layout = Layout.at(tmp)
    layout.kb_dir.mkdir(parents=True)
    for stream, data in sources.items():
        layout.source_file(stream).write_bytes(data)
    return layout


def assert_accounted(layout: Layout, sources: dict[str, bytes]):
    """Collect, then score, and check that every row and every evidence line is accounted for."""
    result = collect(layout, recorded_at=PINNED)
    for stream, data in sources.items():
        c = result.streams[stream]
        # an unterminated last line that does not parse is left pending (maybe still being written)
        pending = 1 if c.pending_tail_bytes else 0
        assert c.read + c.blank_lines + pending == line_count(data), (stream, c)
        assert c.read == c.written + c.skipped + c.deduplicated, (stream, c)
    assert result.conserved

    on_disk: Counter = Counter()
    for path in layout.evidence_dir.rglob("*.jsonl") if layout.evidence_dir.exists() else []:
        for line in path.read_bytes().splitlines():
            record = EvidenceRecord.model_validate(orjson.loads(line))  # pydantic's own JSON parser stops at depth ~200
            assert record.stream == path.stem
            on_disk[path.stem] += 1
    skipped: Counter = Counter()
    for line in layout.skips_file.read_bytes().splitlines() if layout.skips_file.exists() else []:
        skipped[SkipRecord.model_validate(orjson.loads(line)).stream] += 1
    for stream in sources:
        assert on_disk[stream] == result.streams[stream].written, stream
        assert skipped[stream] == result.streams[stream].skipped, stream

    score = score_evidence_tree(layout)
    assert score.records_in == sum(on_disk.values())
    assert score.records_out + score.ledger_rows == score.records_in
    for path in evidence_files(layout):
        if is_ledger_stream(path.stem):
            continue
        evidence_ids = [orjson.loads(line)["id"] for line in path.read_bytes().splitlines()]
        scored_ids = [orjson.loads(line)["id"] for line in scored_path(layout, path).read_bytes().splitlines()]
        assert scored_ids == evidence_ids, path  # line i of the scored file is line i of the evidence file
    return result, score


def outputs(layout: Layout) -> dict[str, bytes]:
    found = {}
    for base in (layout.evidence_dir, layout.scored_dir):
        for path in sorted(base.rglob("*")) if base.exists() else []:
            if path.is_file():
                found[layout.relative(path)] = path.read_bytes()
    if layout.skips_file.exists():
        found["skips"] = layout.skips_file.read_bytes()
    return found


def assert_incremental_equals_one_shot(sources: dict[str, bytes], cut_fraction: float) -> None:
    """Collect each source's first part, then the rest: same bytes as collecting it whole."""
    with scratch_dir() as whole_dir, scratch_dir() as parts_dir:
        whole = fresh_layout(whole_dir, sources)
        collect(whole, recorded_at=PINNED)
        firsts = {}
        for stream, data in sources.items():
            cut = data.find(b"\n", int(len(data) * cut_fraction))
            firsts[stream] = data[: cut + 1] if cut >= 0 else b""
        parts = fresh_layout(parts_dir, firsts)
        collect(parts, recorded_at=PINNED)
        for stream, data in sources.items():
            parts.source_file(stream).write_bytes(data)  # the log grew
        collect(parts, recorded_at=PINNED)
        assert outputs(parts) == outputs(whole)
        assert parts.evidence_state_file.read_bytes() == whole.evidence_state_file.read_bytes()


def describe(result, score) -> None:
    """Hypothesis statistics (--hypothesis-show-statistics): how deep the examples reached."""
    event("evidence written" if result.total("written") else "nothing written")
    event("scored" if score.records_out else ("ledger only" if score.ledger_rows else "nothing scored"))
    for reason in result.skip_reasons:
        event(f"skip: {reason}")


# ---------------------------------------------------------------------------------------------
# Properties
# ---------------------------------------------------------------------------------------------


def test_every_template_row_is_accepted_as_evidence(tmp_path) -> None:
    """The mutation strategy starts from valid rows; if it did not, it would test only skips."""
    layout = fresh_layout(str(tmp_path), {stream: encode_row(row) for stream, row in TEMPLATES.items()})
    result, score = assert_accounted(layout, {stream: encode_row(row) for stream, row in TEMPLATES.items()})
    assert {s: c.written for s, c in result.streams.items() if s in TEMPLATES} == dict.fromkeys(TEMPLATES, 1)
    assert score.ledger_rows == 1 and score.records_out == len(TEMPLATES) - 1


@hostile(BYTES_EXAMPLES)
@given(stream=stream_names(), data=st.binary(max_size=2048), cut=st.floats(0, 1))
def test_arbitrary_bytes_as_a_source_stream(stream: str, data: bytes, cut: float) -> None:
    sources = {stream: data}
    with scratch_dir() as tmp:
        result, score = assert_accounted(fresh_layout(tmp, sources), sources)
    describe(result, score)
    assert_incremental_equals_one_shot(sources, cut)


@hostile(LINE_EXAMPLES)
@given(
    stream=stream_names(),
    lines=st.lists(
        st.one_of(
            st.binary(max_size=64),
            st.sampled_from([b"", b"\r", b" \t", b"\xef\xbb\xbf", b"{", b"}", b"[]", b"null", b'"x"', b"1e999", b"-0", b"NaN"]),
            st.builds(lambda s: json.dumps(TEMPLATES[s]).encode(), st.sampled_from(sorted(TEMPLATES))),
        ),
        max_size=20,
    ),
    ending=st.sampled_from([b"\n", b"\r\n"]),
    torn_tail=st.booleans(),
)
def test_line_shaped_garbage_mixed_with_valid_rows(stream: str, lines: list[bytes], ending: bytes, torn_tail: bool) -> None:
    """Arbitrary bytes rarely contain whole lines; this builds line-shaped input: BOMs, CRLF,
    bare JSON scalars, valid rows of the wrong stream, a last line cut off."""
    data = ending.join(lines) + (b"" if torn_tail else ending)
    sources = {stream: data}
    with scratch_dir() as tmp:
        assert_accounted(fresh_layout(tmp, sources), sources)


@hostile(JSON_EXAMPLES)
@given(st.data())
def test_arbitrary_json_rows_in_every_known_stream(data: st.DataObject) -> None:
    streams = data.draw(st.lists(st.sampled_from(sorted(STREAMS)), min_size=1, max_size=4, unique=True))
    sources = {}
    for stream in streams:
        rows = data.draw(st.lists(any_row(stream), max_size=8), label=stream)
        rows += data.draw(st.lists(st.sampled_from(rows), max_size=2), label="repeats") if rows else []
        sources[stream] = b"".join(encode_row(row) for row in rows)
    with scratch_dir() as tmp:
        result, score = assert_accounted(fresh_layout(tmp, sources), sources)
    describe(result, score)
    assert_incremental_equals_one_shot(sources, data.draw(st.floats(0, 1), label="cut"))


# --- the scorer on evidence it did not expect --------------------------------------------------


def _valid_evidence_line() -> bytes:
    with scratch_dir() as tmp:
        layout = fresh_layout(tmp, {"scrum_reviews": encode_row(TEMPLATES["scrum_reviews"])})
        collect(layout, recorded_at=PINNED)
        (path,) = layout.evidence_dir.rglob("*.jsonl")
        return path.read_bytes()


VALID_EVIDENCE = orjson.loads(_valid_evidence_line())


def mutated_evidence() -> st.SearchStrategy:
    keys = sorted(VALID_EVIDENCE)
    return st.tuples(st.sets(st.sampled_from(keys), max_size=2), st.dictionaries(st.sampled_from(keys), json_values, max_size=2)).map(
        lambda t: {**{k: v for k, v in VALID_EVIDENCE.items() if k not in t[0]}, **t[1]}
    )


@hostile(EVIDENCE_EXAMPLES)
@given(
    lines=st.lists(st.one_of(mutated_evidence().map(encode_row), st.binary(max_size=64).map(lambda b: b + b"\n")), min_size=1, max_size=5),
    stream=st.sampled_from(["scrum_reviews", "audits", "model_trust"]),
)
def test_scorer_on_damaged_evidence_scores_or_names_the_line(lines: list[bytes], stream: str) -> None:
    """Evidence is our own output, so damage means a corrupt tree: the scorer must stop with
    ``EvidenceError`` (file and line) or score every line, never crash otherwise."""
    with scratch_dir() as tmp:
        layout = Layout.at(tmp)
        path = layout.evidence_dir / "2026" / "10" / "02" / f"{stream}.jsonl"
        path.parent.mkdir(parents=True)
        path.write_bytes(b"".join(lines))
        try:
            score = score_evidence_tree(layout)
        except EvidenceError as exc:
            assert f"{stream}.jsonl:" in str(exc)
            assert not layout.scored_dir.exists() or not any(layout.scored_dir.rglob(f"{stream}.jsonl"))
            return
        assert score.records_in == len(lines)
        assert score.records_out + score.ledger_rows == score.records_in


# --- huge lines and deep nesting ----------------------------------------------------------------


@hostile(12)
@given(
    extra=st.integers(-2, 3 * 65536),
    filler=st.sampled_from([b"a", b"\xff", b"{", b" "]),
    as_json=st.booleans(),
)
def test_lines_around_the_size_limit_are_bounded(extra: int, filler: bytes, as_json: bool) -> None:
    size = MAX_LINE_BYTES + extra
    if as_json:  # a valid row whose review text makes the line exactly ``size`` bytes
        head = encode_row({k: v for k, v in TEMPLATES["scrum_reviews"].items() if k != "review"})[:-2] + b',"review":"'
        line = head + b"a" * max(0, size - len(head) - 2) + b'"}'
    else:
        line = filler * size
    good = encode_row(TEMPLATES["scrum_reviews"] | {"review_id": "after-the-big-one"})
    sources = {"scrum_reviews": line + b"\n" + good}
    with scratch_dir() as tmp:
        result, _ = assert_accounted(fresh_layout(tmp, sources), sources)
    counts = result.streams["scrum_reviews"]
    assert counts.written >= 1  # the row after the big one is not lost
    if not line.strip():
        assert counts.blank_lines == 1  # however long, whitespace is a blank line, not a row
    elif len(line) > MAX_LINE_BYTES:
        assert counts.skip_reasons["line_too_long"] == 1


def test_a_64_mib_line_is_skipped_in_bounded_memory(tmp_path) -> None:
    layout = fresh_layout(str(tmp_path), {})
    with open(layout.source_file("observer_reviews"), "wb") as handle:
        handle.write(b'{"review_id": "huge", "output": "')
        for _ in range(64):
            handle.write(b"x" * (1 << 20))
        handle.write(b'"}\n' + encode_row(TEMPLATES["observer_reviews"]))
    tracemalloc.start()
    try:
        result = collect(layout, recorded_at=PINNED)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    counts = result.streams["observer_reviews"]
    assert (counts.read, counts.written, dict(counts.skip_reasons)) == (2, 1, {"line_too_long": 1})
    assert peak < 16 << 20, f"peak {peak / (1 << 20):.1f} MiB for a 64 MiB line"


def nested(depth: int, kind: str) -> bytes:
    if kind == "list":
        return b"[" * depth + b"]" * depth
    return b'{"a":' * depth + b"1" + b"}" * depth


DEPTHS = [64, 256, 900, 1000, 1024, 1025, 100_000]  # around every parser limit: 255 (orjson dumps), ~1000 (Python), 1024 (orjson loads)


@pytest.mark.parametrize("kind", ["list", "object"])
@pytest.mark.parametrize("depth", DEPTHS)
def test_deeply_nested_json_inside_a_row_is_bounded_not_fatal(tmp_path, depth: int, kind: str) -> None:
    line = encode_row(TEMPLATES["scrum_reviews"])[:-2] + b',"extra":' + nested(depth, kind) + b"}\n"
    sources = {"scrum_reviews": line + encode_row(TEMPLATES["scrum_reviews"] | {"review_id": "next"})}
    result, _ = assert_accounted(fresh_layout(str(tmp_path), sources), sources)
    counts = result.streams["scrum_reviews"]
    assert counts.read == 2 and counts.written >= 1
    if counts.skipped:
        assert dict(counts.skip_reasons) == {"too_deeply_nested": 1}


def test_a_nested_row_the_collector_admits_is_usable_by_every_stage(tmp_path) -> None:
    """Bounded at the door: a row nested deeper than any later stage can re-read must be
    skipped by collect (too_deeply_nested), not admitted and then refused downstream. Here an
    accepted and a rejected answer to one task make a preference pair, one of them nested 250 deep."""
    import dagster as dg

    from distillation_pipeline.defs.execute import run_pipeline

    accepted = encode_row(TEMPLATES["scrum_reviews"])[:-2] + b',"extra":' + nested(250, "list") + b"}\n"
    rejected = encode_row(TEMPLATES["scrum_reviews"] | {"review_id": "sr-2", "accepted_on_attempt": None, "review": "Wrong fix"})
    layout = fresh_layout(str(tmp_path), {"scrum_reviews": accepted + rejected})
    outcome = run_pipeline(layout.root, recorded_at="2026-11-01T00:00:00Z", instance=dg.DagsterInstance.ephemeral())
    collect_counts = outcome.receipts["collect"].counts
    preference = outcome.receipts["export-preference"].counts
    if collect_counts.skipped:
        assert collect_counts.per_reason == {"too_deeply_nested": 1}
    else:
        assert (preference.records_out, preference.quarantined) == (1, 0), preference.per_reason


@pytest.mark.parametrize("depth", [1025, 100_000])
def test_a_line_that_is_only_nesting_is_skipped_as_too_deeply_nested(tmp_path, depth: int) -> None:
    sources = {"audits": nested(depth, "list") + b"\n"}
    result, _ = assert_accounted(fresh_layout(str(tmp_path), sources), sources)
    assert dict(result.streams["audits"].skip_reasons) == {"too_deeply_nested": 1}


# ---------------------------------------------------------------------------------------------
# Sources are confined under the root
# ---------------------------------------------------------------------------------------------

OUTSIDE_TOKEN = "outside-the-root-7f3a9c"


def every_byte_under(root: Path) -> bytes:
    return b"".join(p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file() and not p.is_symlink())


def test_a_source_symlinked_outside_the_root_is_refused_end_to_end(tmp_path) -> None:
    import dagster as dg

    from distillation_pipeline.defs.execute import run_pipeline

    outside = tmp_path / "elsewhere" / "secrets.jsonl"
    outside.parent.mkdir()
    outside.write_bytes(encode_row(TEMPLATES["scrum_reviews"] | {"review": OUTSIDE_TOKEN}))
    root = tmp_path / "root"
    layout = fresh_layout(str(root), {"audits": encode_row(TEMPLATES["audits"])})
    layout.source_file("scrum_reviews").symlink_to(outside)
    (layout.kb_dir / "stolen.jsonl").symlink_to(Path("..") / ".." / ".." / "elsewhere" / "secrets.jsonl")  # relative, with ..

    outcome = run_pipeline(root, recorded_at="2026-11-01T00:00:00Z", instance=dg.DagsterInstance.ephemeral())
    collect_receipt = outcome.receipts["collect"]
    refused = [e for e in collect_receipt.validation.errors if e.startswith("source_outside_root")]
    assert len(refused) == 2 and not collect_receipt.validation.passed  # counted, and the run says so
    assert collect_receipt.counts.records_out == 1  # the audits row, nothing from outside
    assert OUTSIDE_TOKEN.encode() not in every_byte_under(root)
    assert outcome.receipts["score"].counts.records_in == 1


def test_a_symlink_that_stays_inside_the_root_is_read(tmp_path) -> None:
    root = tmp_path / "root"
    layout = fresh_layout(str(root), {})
    real = root / "logs" / "scrum.jsonl"
    real.parent.mkdir()
    real.write_bytes(encode_row(TEMPLATES["scrum_reviews"]))
    layout.source_file("scrum_reviews").symlink_to(Path("..") / ".." / "logs" / "scrum.jsonl")
    result = collect(layout, recorded_at=PINNED)
    assert result.refused == [] and result.streams["scrum_reviews"].written == 1


odd_names = st.one_of(
    st.sampled_from(["..", "...", ". .", "..\\..", "%2e%2e", "a\nb", "-rf", "~", "$HOME", "nul", "con", "é", " "]),
    st.text(st.characters(blacklist_categories=["Cs"], blacklist_characters="/\x00"), min_size=1, max_size=12),
)


@hostile(NAME_EXAMPLES)
@given(names=st.lists(odd_names, min_size=1, max_size=4, unique=True))
def test_odd_stream_file_names_never_lead_outside_the_root(names: list[str]) -> None:
    """Discovery globs data/_kb/*.jsonl, so a name cannot hold '/'; whatever else it holds
    ('..', newlines, shell syntax), the collector reads and writes only under the root."""
    with scratch_dir() as tmp:
        root = Path(tmp) / "root"
        layout = fresh_layout(str(root), {})
        created = []
        for name in names:
            if f"{name}.jsonl" in NON_STREAM_FILES:
                continue
            path = layout.kb_dir / f"{name}.jsonl"
            try:
                path.write_bytes(encode_row(TEMPLATES["audits"]))
            except OSError:
                continue  # the filesystem refuses the name: nothing to discover
            created.append(path)
        before = sorted(os.listdir(tmp))
        found = discover_streams(layout)
        for stream in found:
            assert layout.source_file(stream).resolve().parent == layout.kb_dir
        result = collect(layout, recorded_at=PINNED)
        assert result.conserved
        assert sorted(os.listdir(tmp)) == before  # nothing written beside the root
        for path in root.rglob("*"):
            assert path.resolve().is_relative_to(root.resolve())
        for path in created:
            assert path.stem in found
