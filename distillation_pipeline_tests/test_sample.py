"""The sample substrate generator: a realistic, messy data/_kb/ that obeys spec section 2.

Assertions read the files the generator wrote, not only the stats it reports: the point of the
sample is what a reader of data/_kb/ will meet.
"""

import re
from collections import Counter, defaultdict
from datetime import UTC, datetime
from pathlib import Path

import orjson
import pytest

from distillation_pipeline.lib.layout import Layout
from distillation_pipeline.lib.timestamps import parse_timestamp
from distillation_pipeline.sample import SampleStats, generate_substrate
from distillation_pipeline.schemas import ReplayRun

ROWS = 3000
MIB = 1 << 20
BOM = b"\xef\xbb\xbf"

# Spec section 2, written out again here so the test does not trust the generator's own tables.
REQUIRED = {
    "scrum_reviews": {"review_id", "task_id", "task", "file", "model", "accepted_on_attempt", "review", "created_at"},
    "observer_reviews": {"review_id", "task_id", "task", "output", "verdict", "notes", "model", "ts"},
    "audits": {"finding_id", "task_id", "phase", "topic", "resolution", "evidence", "ts"},
    "contract_analyses": {"analysis_id", "task_id", "contract", "analysis", "failure_markers", "observer_verdict",
                          "created_at"},
    "audit_discrepancies": {"discrepancy_id", "task_id", "task", "claim", "observed", "ts"},
    "replay_runs": {"run_id", "task_id", "task", "task_hash", "output", "validation_passed", "escalated", "ts"},
    "auto_apply": {"apply_id", "task_id", "task", "file", "patch", "status", "ts"},
    "outcomes": {"outcome_id", "task_id", "summary", "events", "gap_signals", "created_at"},
    "mode_experiments": {"experiment_id", "task_id", "mode", "model", "prompt", "response", "latency_ms",
                         "validation_results", "ts"},
    "audit_facts": {"fact_id", "finding_id", "task_id", "fact", "ts"},
    "distilled_facts": {"id", "task_id", "text", "extracted_at"},
    "distilled_procedures": {"id", "task_id", "text", "extracted_at"},
    "distilled_config_hints": {"id", "task_id", "text", "extracted_at"},
    "observer_escalations": {"escalation_id", "task_id", "reason", "context", "ts"},
    "model_trust": {"model", "task_kind", "trust_score", "window_start", "window_end", "ts"},
}
STREAMS = tuple(REQUIRED)
VERDICT_STREAMS = ("scrum_reviews", "observer_reviews", "audits", "contract_analyses", "audit_discrepancies",
                   "replay_runs")
EXTRACTION_STREAMS = ("audit_facts", "distilled_facts", "distilled_procedures", "distilled_config_hints",
                      "observer_escalations")
TIME_FIELDS = ("created_at", "ts", "extracted_at")

CREDENTIAL = re.compile(
    r"AKIA[0-9A-Z]{16}|ghp_[A-Za-z0-9]{36}|-----BEGIN RSA PRIVATE KEY-----|://[^/\s:@]+:[^/\s@]+@|sk-[A-Za-z0-9]{48}"
)
CITED_PATH = re.compile(
    r"\b(?:crates|services|docs|scripts|auditor|ui|tests|config)/[\w./-]+?"
    r"\.(?:rs|py|tsx|ts|md|toml|yaml|yml|json|js|rst|bak)\b"
)


# --- fixtures: one messy and one clean sample, generated once --------------------------------


@pytest.fixture(scope="module")
def messy(tmp_path_factory: pytest.TempPathFactory) -> tuple[Layout, SampleStats]:
    root = tmp_path_factory.mktemp("messy")
    return Layout.at(root), generate_substrate(root, ROWS, seed=7)


@pytest.fixture(scope="module")
def clean(tmp_path_factory: pytest.TempPathFactory) -> tuple[Layout, SampleStats]:
    root = tmp_path_factory.mktemp("clean")
    return Layout.at(root), generate_substrate(root, ROWS, seed=7, mess=False)


def raw_lines(path: Path) -> list[bytes]:
    """Physical lines, terminators stripped; a final line without a newline is kept."""
    data = path.read_bytes()
    lines = data.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    return [line[:-1] if line.endswith(b"\r") else line for line in lines]


def parsed_rows(path: Path) -> list[dict]:
    rows = []
    for line in raw_lines(path):
        line = line.removeprefix(BOM)
        try:
            row = orjson.loads(line)
        except orjson.JSONDecodeError:
            continue
        if isinstance(row, dict):
            rows.append(row)
    return rows


def all_rows(layout: Layout) -> dict[str, list[dict]]:
    return {stream: parsed_rows(layout.source_file(stream)) for stream in STREAMS}


def category(stream: str, row: dict) -> str | None:
    """The scorer's direct mapping (spec section 4) for the verdict streams."""
    if stream == "scrum_reviews":
        attempt = row["accepted_on_attempt"]
        return "rejected" if attempt is None else "accepted" if attempt == 1 else "partially_accepted"
    if stream == "observer_reviews":
        return {"accept": "accepted", "reject": "rejected", "cycle": "partially_accepted"}[row["verdict"]]
    if stream == "audits":
        grade = row.get("severity") or row.get("verdict")
        return {"info": "accepted", "low": "accepted", "pass": "accepted", "medium": "partially_accepted",
                "high": "rejected", "critical": "rejected", "fail": "rejected"}[grade]
    if stream == "audit_discrepancies":
        return "rejected"
    return None


# --- determinism --------------------------------------------------------------------------------


def snapshot(root: Path) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in sorted(Layout.at(root).kb_dir.iterdir())}


def test_same_seed_gives_identical_bytes(tmp_path: Path) -> None:
    generate_substrate(tmp_path / "a", ROWS, seed=11)
    generate_substrate(tmp_path / "b", ROWS, seed=11)
    assert snapshot(tmp_path / "a") == snapshot(tmp_path / "b")


def test_different_seed_gives_different_bytes(tmp_path: Path) -> None:
    generate_substrate(tmp_path / "a", ROWS, seed=11)
    generate_substrate(tmp_path / "b", ROWS, seed=12)
    first, second = snapshot(tmp_path / "a"), snapshot(tmp_path / "b")
    assert first.keys() == second.keys()
    assert first["scrum_reviews.jsonl"] != second["scrum_reviews.jsonl"]


# --- files and counts -------------------------------------------------------------------------


def test_every_stream_file_and_the_manifest_exist(messy: tuple[Layout, SampleStats]) -> None:
    layout, _ = messy
    for stream in STREAMS:
        assert layout.source_file(stream).is_file(), stream
    manifest = layout.repo_manifest.read_text().splitlines()
    assert 300 <= len(manifest) <= 5000
    assert len(set(manifest)) == len(manifest)
    assert "crates/gateway/src/main.rs" in manifest


def test_reported_line_counts_match_the_files(messy: tuple[Layout, SampleStats]) -> None:
    layout, stats = messy
    on_disk = {path.stem: len(raw_lines(path)) for path in layout.kb_dir.glob("*.jsonl")}
    assert on_disk == stats.lines
    assert stats.total_lines == sum(on_disk.values()) == ROWS
    assert stats.seed == 7
    assert orjson.loads(orjson.dumps(stats.to_dict()))["total_lines"] == ROWS


def test_rows_are_spread_over_the_streams(clean: tuple[Layout, SampleStats]) -> None:
    _, stats = clean
    for stream in STREAMS:
        assert stats.lines[stream] > 0, stream
    assert stats.lines["replay_runs"] < 0.05 * ROWS  # replay is a small share
    assert max(stats.lines.values()) < 0.3 * ROWS


def test_zero_rows_writes_empty_streams(tmp_path: Path) -> None:
    stats = generate_substrate(tmp_path, 0, seed=1)
    assert stats.total_lines == 0
    assert all(not raw_lines(Layout.at(tmp_path).source_file(stream)) for stream in STREAMS)


# --- well-formed rows ---------------------------------------------------------------------------


def test_clean_mode_writes_only_parseable_complete_rows(clean: tuple[Layout, SampleStats]) -> None:
    layout, stats = clean
    assert stats.mess_totals == {}
    assert not layout.source_file("legacy_notes").exists()
    for stream in STREAMS:
        data = layout.source_file(stream).read_bytes()
        assert not data.startswith(BOM) and b"\r" not in data and data.endswith(b"\n"), stream
        for line in data.splitlines():
            row = orjson.loads(line)
            assert REQUIRED[stream] <= row.keys(), (stream, REQUIRED[stream] - row.keys())


def test_clean_rows_use_the_spec_vocabularies(clean: tuple[Layout, SampleStats]) -> None:
    rows = all_rows(clean[0])
    assert {row["verdict"] for row in rows["observer_reviews"]} == {"accept", "reject", "cycle"}
    audits = rows["audits"]
    assert {row["severity"] for row in audits if "severity" in row} == {"info", "low", "medium", "high", "critical"}
    legacy = [row for row in audits if "severity" not in row]
    assert legacy and {row["verdict"] for row in legacy} == {"pass", "fail"}
    attempts = {row["accepted_on_attempt"] for row in rows["scrum_reviews"]}
    assert None in attempts and 1 in attempts and all(a is None or (isinstance(a, int) and a >= 1) for a in attempts)
    assert {row["observer_verdict"] for row in rows["contract_analyses"]} == {"accept", "reject", None}
    assert all(isinstance(row["failure_markers"], list) for row in rows["contract_analyses"])
    statuses = {row["status"] for row in rows["auto_apply"]}
    assert statuses == {"committed", "reverted", "test_reverted", "build_reverted", "skipped"}
    for row in rows["outcomes"]:
        assert isinstance(row["gap_signals"], int) and row["events"]
        assert all(set(event) == {"name", "ok"} and isinstance(event["ok"], bool) for event in row["events"])
    for row in rows["mode_experiments"]:
        assert 0.0 <= row["validation_results"]["grounded_fraction"] <= 1.0
        assert isinstance(row["latency_ms"], int)
    assert all(0.0 <= row["trust_score"] <= 1.0 for row in rows["model_trust"])


Sample = tuple[Layout, SampleStats]


def test_replay_runs_validate_against_the_schema(clean: Sample, messy: Sample) -> None:
    outcomes = set()
    for layout, _ in (clean, messy):
        runs = parsed_rows(layout.source_file("replay_runs"))
        assert runs
        for row in runs:
            run = ReplayRun.model_validate(row)
            outcomes.add((run.validation_passed, run.escalated))
    assert {(True, False), (True, True)} <= outcomes and any(not passed for passed, _ in outcomes)


def test_timestamps_use_every_format_within_the_window(messy: tuple[Layout, SampleStats]) -> None:
    styles: Counter[str] = Counter()
    start, end = datetime(2026, 9, 1, tzinfo=UTC), datetime(2026, 11, 1, tzinfo=UTC)
    for rows in all_rows(messy[0]).values():
        for row in rows:
            value = next((row[key] for key in TIME_FIELDS if key in row), None)
            if value is None:
                continue
            if isinstance(value, int):
                styles["epoch_ms" if value > 10**11 else "epoch_s"] += 1
            elif value.isdigit():
                styles["epoch_string"] += 1
            else:
                styles["iso_z" if value.endswith("Z") else "iso_offset"] += 1
            assert start <= parse_timestamp(value) <= end, value
    assert set(styles) == {"epoch_ms", "epoch_s", "epoch_string", "iso_z", "iso_offset"}
    assert styles["iso_z"] > sum(styles.values()) / 2


# --- joins, pairs, parents ---------------------------------------------------------------------


def test_task_ids_join_verdict_and_extraction_streams(clean: tuple[Layout, SampleStats]) -> None:
    rows = all_rows(clean[0])
    verdict_tasks = {row["task_id"] for stream in VERDICT_STREAMS for row in rows[stream]}
    extraction_tasks = {row["task_id"] for stream in EXTRACTION_STREAMS for row in rows[stream]}
    with_parent = extraction_tasks & verdict_tasks
    orphans = extraction_tasks - verdict_tasks
    assert len(with_parent) > 0.8 * len(extraction_tasks)
    # Deliberate orphans, beyond the few tasks that by chance only got extraction rows.
    assert len(orphans) >= 0.03 * len(extraction_tasks), "some extraction rows must have no verdict-bearing parent"
    rows_per_task = Counter(row["task_id"] for stream_rows in rows.values() for row in stream_rows if "task_id" in row)
    assert sum(1 for count in rows_per_task.values() if count >= 5) > len(rows_per_task) / 2


def test_categories_are_plausible_and_some_parents_disagree(clean: tuple[Layout, SampleStats]) -> None:
    rows = all_rows(clean[0])
    per_task: dict[str, set[str]] = defaultdict(set)
    totals: Counter[str] = Counter()
    for stream in VERDICT_STREAMS:
        for row in rows[stream]:
            verdict = category(stream, row)
            if verdict:
                per_task[row["task_id"]].add(verdict)
                totals[verdict] += 1
    share = {name: count / sum(totals.values()) for name, count in totals.items()}
    assert 0.4 <= share["accepted"] <= 0.75
    assert 0.08 <= share["rejected"] <= 0.25
    disagreeing = [task for task, verdicts in per_task.items() if {"accepted", "rejected"} <= verdicts]
    agreeing = [task for task, verdicts in per_task.items() if len(verdicts) == 1]
    assert disagreeing, "preference pairs need tasks with an accepted and a rejected run"
    assert len(agreeing) > len(disagreeing)


def test_audit_facts_cite_existing_findings(clean: Sample, messy: Sample) -> None:
    for (layout, _), least_share in ((clean, 1.0), (messy, 0.95)):
        findings = {row["finding_id"] for row in parsed_rows(layout.source_file("audits"))}
        facts = [row for row in parsed_rows(layout.source_file("audit_facts")) if "finding_id" in row]
        assert facts
        resolved = sum(row["finding_id"] in findings for row in facts)
        assert resolved >= least_share * len(facts)


# --- what the exporters must catch ---------------------------------------------------------------


def test_a_small_share_of_cited_paths_are_hallucinated(clean: tuple[Layout, SampleStats]) -> None:
    layout, stats = clean
    manifest = set(layout.repo_manifest.read_text().splitlines())
    cited = [path for stream in STREAMS for path in CITED_PATH.findall(layout.source_file(stream).read_text())]
    invented = [path for path in cited if path not in manifest]
    assert len(cited) > ROWS
    assert 0.005 <= len(invented) / len(cited) <= 0.06
    assert sum(kinds.get("hallucinated_path", 0) for kinds in stats.planted.values()) > 0


def test_a_few_texts_carry_a_credential(clean: tuple[Layout, SampleStats]) -> None:
    layout, stats = clean
    leaking = [line for stream in STREAMS for line in layout.source_file(stream).read_text().splitlines()
               if CREDENTIAL.search(line)]
    assert 0.001 * ROWS <= len(leaking) <= 0.01 * ROWS
    assert sum(kinds.get("secret", 0) for kinds in stats.planted.values()) == len(leaking)


# --- mess: every kind, found in the bytes --------------------------------------------------------


def lines_by_file(layout: Layout) -> dict[str, list[bytes]]:
    return {path.stem: raw_lines(path) for path in layout.kb_dir.glob("*.jsonl")}


def parses(line: bytes) -> bool:
    try:
        orjson.loads(line.removeprefix(BOM))
    except orjson.JSONDecodeError:
        return False
    return True


def test_file_level_mess_is_present(messy: tuple[Layout, SampleStats]) -> None:
    layout, stats = messy
    files = {path.stem: path.read_bytes() for path in layout.kb_dir.glob("*.jsonl")}
    assert 1 <= sum(data.startswith(BOM) for data in files.values()) <= 2
    assert [stream for stream, data in files.items() if b"\r\n" in data]
    torn = [stream for stream, data in files.items() if data and not data.endswith(b"\n")]
    assert 1 <= len(torn) <= 2
    assert all(not parses(raw_lines(layout.source_file(stream))[-1]) for stream in torn)
    assert [stream for stream, data in files.items() if stream in STREAMS and not data]
    assert "legacy_notes" in files and parsed_rows(layout.source_file("legacy_notes"))
    for kind in ("bom", "crlf", "truncated_tail", "empty_stream", "unknown_stream"):
        assert stats.mess_totals.get(kind, 0) >= 1, kind


def test_line_level_mess_is_present(messy: tuple[Layout, SampleStats]) -> None:
    layout, stats = messy
    lines = [line for file_lines in lines_by_file(layout).values() for line in file_lines]
    assert any(not line.strip() for line in lines), "blank line"
    assert any(len(line) > MIB for line in lines), "huge line"
    assert sum(len(line) > MIB for line in lines) <= 3
    non_utf8 = [line for line in lines if not _decodes(line)]
    assert non_utf8, "non-UTF-8 bytes"
    # Mid-file, so a torn last line (tested on its own) does not count as malformed JSON here.
    inner = [line for file_lines in lines_by_file(layout).values() for line in file_lines[:-1]]
    malformed = [line for line in inner if line.strip() and _decodes(line) and not parses(line)]
    assert malformed, "malformed JSON"
    duplicates = [a for file_lines in lines_by_file(layout).values() for a, b in zip(file_lines, file_lines[1:])
                  if a == b and a.strip()]
    assert duplicates, "exact duplicate rows"
    assert len(malformed) + len(non_utf8) < 0.03 * len(lines)  # mess stays rare
    for kind in ("blank_line", "huge_line", "non_utf8", "malformed_json", "duplicate"):
        assert stats.mess_totals.get(kind, 0) >= 1, kind


def _decodes(line: bytes) -> bool:
    try:
        line.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


NUMBER = (int, float)
EXPECTED_TYPES: dict[str, dict[str, type | tuple[type, ...]]] = {
    "scrum_reviews": {"accepted_on_attempt": (int, type(None)), "review": str},
    "observer_reviews": {"verdict": str, "output": str},
    "audits": {"severity": str, "verdict": str, "phase": int},
    "contract_analyses": {"failure_markers": list},
    "audit_discrepancies": {"claim": str},
    "auto_apply": {"status": str},
    "outcomes": {"events": list, "gap_signals": int},
    "mode_experiments": {"validation_results": dict, "latency_ms": NUMBER},
    "audit_facts": {"fact": str},
    "distilled_facts": {"text": str},
    "distilled_procedures": {"text": str},
    "distilled_config_hints": {"text": str},
    "observer_escalations": {"reason": str},
    "model_trust": {"trust_score": NUMBER},
}


def _is_number_text(value: object) -> bool:
    try:
        float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return False
    return isinstance(value, str)


def test_field_level_mess_is_present(messy: tuple[Layout, SampleStats]) -> None:
    rows = all_rows(messy[0])
    numbers_as_strings, wrong_types = [], []
    for stream, fields in EXPECTED_TYPES.items():
        for row in rows[stream]:
            for key, expected in fields.items():
                value = row.get(key)
                if key not in row or isinstance(value, expected) and not isinstance(value, bool):
                    continue
                numeric = expected is NUMBER or (isinstance(expected, tuple) and int in expected) or expected is int
                (numbers_as_strings if numeric and _is_number_text(value) else wrong_types).append((stream, key, value))
    epoch_strings = [row for stream in STREAMS for row in rows[stream]
                     if any(isinstance(row.get(key), str) and row[key].isdigit() for key in TIME_FIELDS)]
    missing_task = [row for stream in STREAMS if stream != "model_trust"
                    for row in rows[stream] if "task_id" not in row]
    missing_time = [row for stream in STREAMS for row in rows[stream] if not any(key in row for key in TIME_FIELDS)]
    assert numbers_as_strings and epoch_strings and wrong_types
    assert missing_task and missing_time
    assert len(wrong_types) + len(missing_task) + len(missing_time) < 0.03 * ROWS  # mess stays rare
    for kind in ("number_as_string", "epoch_as_string", "missing_required", "wrong_type"):
        assert messy[1].mess_totals.get(kind, 0) >= 1, kind


def test_each_mess_kind_present_for_any_seed_at_2000_rows(tmp_path: Path) -> None:
    for seed in (1, 2, 3):
        stats = generate_substrate(tmp_path / str(seed), 2000, seed=seed)
        missing = {"bom", "crlf", "truncated_tail", "huge_line", "unknown_stream", "empty_stream", "blank_line",
                   "malformed_json", "non_utf8", "duplicate", "number_as_string", "epoch_as_string",
                   "missing_required", "wrong_type"} - stats.mess_totals.keys()
        assert not missing, (seed, missing)
        assert any(kinds.get("secret") for kinds in stats.planted.values()), seed


def test_regenerating_overwrites_an_existing_root(tmp_path: Path) -> None:
    generate_substrate(tmp_path, ROWS, seed=5)
    stats = generate_substrate(tmp_path, 500, seed=5, mess=False)
    layout = Layout.at(tmp_path)
    assert not layout.source_file("legacy_notes").exists()
    assert sum(len(raw_lines(layout.source_file(stream))) for stream in STREAMS) == stats.total_lines == 500
