"""``data/_kb/evidence_health.md``: is the evidence real, traceable and ready to score?

Three questions a skeptic asks before trusting anything downstream:
1. How many records per stream, and how many rows were skipped or deduplicated to get there?
2. Provenance round-trip: for a sample of records, re-read the source at ``line_offset``,
   re-hash the row canonically, and compare with ``sig_hash``.
3. Score-readiness: what share of each stream carries the markers the scorer needs?
"""

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import orjson

from distillation_pipeline.evidence.state import CollectState
from distillation_pipeline.evidence.streams import STREAMS
from distillation_pipeline.lib.atomic import atomic_write_text
from distillation_pipeline.lib.hashing import canonical_json
from distillation_pipeline.lib.jsonl import read_line_at
from distillation_pipeline.lib.layout import Layout

DEFAULT_SAMPLE = 30


@dataclass
class RoundTrip:
    evidence_id: str
    source_file: str
    line_offset: int
    ok: bool
    detail: str = ""


@dataclass
class HealthReport:
    rows: dict[str, dict[str, int]]
    round_trips: list[RoundTrip] = field(default_factory=list)

    @property
    def round_trip_ok(self) -> int:
        return sum(1 for trip in self.round_trips if trip.ok)

    @property
    def passed(self) -> bool:
        return all(trip.ok for trip in self.round_trips)

    def render(self) -> str:
        out = ["# Evidence health", ""]
        out.append("## Records per stream")
        out.append("")
        out.append("| stream | class | rows read | evidence | skipped | deduplicated | blank lines | score-ready |")
        out.append("|---|---|---:|---:|---:|---:|---:|---:|")
        totals = {key: 0 for key in ("rows_read", "written", "skipped", "deduplicated", "blank_lines", "score_ready")}
        for stream in sorted(self.rows):
            row = self.rows[stream]
            for key in totals:
                totals[key] += row[key]
            source_class = STREAMS[stream].source_class if stream in STREAMS else "unknown"
            ready = _share(row["score_ready"], row["written"])
            out.append(
                f"| {stream} | {source_class} | {row['rows_read']} | {row['written']} | {row['skipped']} | "
                f"{row['deduplicated']} | {row['blank_lines']} | {ready} |"
            )
        out.append(
            f"| **total** | | {totals['rows_read']} | {totals['written']} | {totals['skipped']} | "
            f"{totals['deduplicated']} | {totals['blank_lines']} | {_share(totals['score_ready'], totals['written'])} |"
        )
        out += ["", "Score-ready: the record carries the markers its scoring rule reads (for extraction rows, the key", "they join on). Ledger rows are aggregated, never scored.", ""]
        out.append("## Provenance round-trip")
        out.append("")
        out.append(
            f"{self.round_trip_ok}/{len(self.round_trips)} sampled records re-read from their source at "
            "`line_offset` hash to their `sig_hash`."
        )
        failed = [trip for trip in self.round_trips if not trip.ok]
        if failed:
            out += ["", "| evidence | source | offset | problem |", "|---|---|---:|---|"]
            out += [f"| {t.evidence_id} | {t.source_file} | {t.line_offset} | {t.detail} |" for t in failed]
        return "\n".join(out) + "\n"


def _share(part: int, whole: int) -> str:
    return f"{part}/{whole} ({100 * part / whole:.0f}%)" if whole else "0/0"


def check_health(layout: Layout, sample: int = DEFAULT_SAMPLE) -> HealthReport:
    state = CollectState.load(layout)
    rows = {
        name: {
            "rows_read": s.rows_read,
            "written": s.written,
            "skipped": s.skipped,
            "deduplicated": s.deduplicated,
            "blank_lines": s.blank_lines,
            "score_ready": s.score_ready,
        }
        for name, s in state.streams.items()
    }
    report = HealthReport(rows=rows)
    for path in _sample_files(layout, state):
        report.round_trips += _round_trip_file(layout, path, per_file=max(1, sample // 10))
        if len(report.round_trips) >= sample:
            break
    report.round_trips = report.round_trips[:sample]
    return report


def _sample_files(layout: Layout, state: CollectState) -> list[Path]:
    """Spread the sample over streams: one file per stream first, in a fixed order."""
    by_stream: dict[str, list[str]] = {}
    for rel in sorted(state.evidence_files):
        by_stream.setdefault(Path(rel).stem, []).append(rel)
    ordered: list[Path] = []
    depth = 0
    while any(depth < len(files) for files in by_stream.values()):
        for stream in sorted(by_stream):
            if depth < len(by_stream[stream]):
                ordered.append(layout.root / by_stream[stream][depth])
        depth += 1
    return ordered


def _round_trip_file(layout: Layout, path: Path, per_file: int) -> list[RoundTrip]:
    trips = []
    with open(path, "rb") as handle:
        for index, line in enumerate(handle):
            if index >= per_file:
                break
            try:
                record = orjson.loads(line)
                prov = record["provenance"]
                prov["source_file"], prov["line_offset"], prov["sig_hash"]  # noqa: B018 (shape check)
            except (orjson.JSONDecodeError, KeyError, TypeError):
                trips.append(RoundTrip(f"{path.name}:{index + 1}", str(path), 0, ok=False, detail="evidence line is damaged (not a record)"))
                continue
            source = layout.root / prov["source_file"]
            trip = RoundTrip(record["id"], prov["source_file"], prov["line_offset"], ok=False)
            if not source.exists():
                trip.detail = "source file is gone"
            else:
                raw = read_line_at(source, prov["line_offset"])
                try:
                    digest = hashlib.sha256(canonical_json(orjson.loads(raw))).hexdigest()
                except orjson.JSONDecodeError:
                    digest = ""
                trip.ok = digest == prov["sig_hash"]
                trip.detail = "" if trip.ok else "re-hashed source row differs from sig_hash"
            trips.append(trip)
    return trips


def write_health_report(layout: Layout, sample: int = DEFAULT_SAMPLE) -> HealthReport:
    report = check_health(layout, sample)
    atomic_write_text(layout.health_report, report.render())
    return report
