"""The firewall re-read as it was before ``exports/verified_rows.py`` (commit 2b3f97c), frozen
for the differential tests in ``test_exports_verified_rows.py``: every row parsed and checked in
turn, ids replayed into ``FirstSeen``. The check must give exactly these verdicts, messages,
order and truncation, whatever it remembers. Not used by the pipeline.
"""

import itertools
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson

from distillation_pipeline.exports.ids import preference_id, rag_id, sft_id, text_sha256
from distillation_pipeline.exports.paths import RepoManifest, cited_paths
from distillation_pipeline.exports.preference import (
    DEFAULT_MAX_PAIRS_PER_TASK,
    openai_preference_row,
)
from distillation_pipeline.exports.secrets import find_secret_in
from distillation_pipeline.lib.firstseen import FirstSeen
from distillation_pipeline.lib.layout import Layout

DEFAULT_LIMIT = 1000
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
Row = dict[str, Any]


class _Report:
    """Collects violations, listing at most ``limit`` and counting the rest."""

    def __init__(self, path: Path, limit: int) -> None:
        self.label = f"{path.parent.name}/{path.name}"
        self.limit = limit
        self.lines: list[str] = []
        self.hidden = 0

    def add(self, code: str, line_no: int, detail: str) -> None:
        if len(self.lines) < self.limit:
            self.lines.append(f"{code}: {self.label}:{line_no}: {detail}")
        else:
            self.hidden += 1

    def result(self) -> list[str]:
        if self.hidden:
            return [*self.lines, f"truncated: {self.hidden} more violations in {self.label} not listed"]
        return self.lines


class _Trusted:
    """Byte ranges of a file that are verbatim copies of bytes this check already passed."""

    def __init__(self, ranges: list[tuple[int, int]] | None) -> None:
        self._ranges = sorted(ranges or [])
        self._at = 0

    def covers(self, start: int, end: int) -> bool:
        """Is [start, end) inside one range? Asked with increasing offsets (one pass over the file)."""
        ranges = self._ranges
        while self._at < len(ranges) and ranges[self._at][1] <= start:
            self._at += 1
        return self._at < len(ranges) and ranges[self._at][0] <= start and end <= ranges[self._at][1]


def _rows(path: Path, report: _Report, trusted: _Trusted) -> Iterator[tuple[int, bool, Row | None]]:
    """(line number, trusted, row) per non-blank line; None (reported) for a line that is not an object."""
    offset = 0
    with open(path, "rb") as handle:
        for line_no, line in enumerate(handle, start=1):
            start, offset = offset, offset + len(line)
            if not line.strip():
                continue
            try:
                row = orjson.loads(line)
            except orjson.JSONDecodeError:
                report.add("malformed_row", line_no, "not valid JSON")
                yield line_no, False, None
                continue
            if not isinstance(row, dict):
                report.add("malformed_row", line_no, "not a JSON object")
                yield line_no, False, None
                continue
            yield line_no, trusted.covers(start, offset), row


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _nonempty(value: Any) -> bool:
    return isinstance(value, str) and bool(value.strip())


def _check_provenance(provenance: Any, line_no: int, report: _Report, side: str = "provenance") -> str | None:
    """The evidence id if ``provenance`` leads back to evidence, scored run and source row."""
    if not isinstance(provenance, dict):
        report.add("missing_provenance", line_no, f"{side} is missing")
        return None
    evidence_id = provenance.get("evidence_id")
    # scored_run_id is reported on its own below, as missing_source_run_id.
    gaps = [
        key for key in ("evidence_id", "stream", "source_file", "scorer_version") if not _nonempty(provenance.get(key))
    ]
    offset = provenance.get("line_offset")
    if not isinstance(offset, int) or isinstance(offset, bool) or offset < 0:
        gaps.append("line_offset")
    if not (isinstance(provenance.get("sig_hash"), str) and _SHA256.match(provenance["sig_hash"])):
        gaps.append("sig_hash")
    if gaps:
        report.add("missing_provenance", line_no, f"{side} lacks {', '.join(gaps)}")
    scored_run_id = provenance.get("scored_run_id")
    if not _nonempty(scored_run_id):
        report.add("missing_source_run_id", line_no, f"{side} has no scored_run_id")
    elif _nonempty(evidence_id) and scored_run_id != evidence_id:
        report.add(
            "missing_source_run_id", line_no, f"{side}: scored run {scored_run_id} is not evidence {evidence_id}"
        )
    return evidence_id if _nonempty(evidence_id) else None


def _check_unique(row: Row, line_no: int, report: _Report, seen: FirstSeen) -> None:
    row_id = row.get("id")
    if not _nonempty(row_id):
        report.add("duplicate_id", line_no, "row has no id")
        return
    first = seen.first(row_id, str(line_no))
    if first is not None:
        report.add("duplicate_id", line_no, f"id {row_id} already on line {first}")


def _check_common(row: Row, line_no: int, report: _Report, seen: FirstSeen, expected_id: str | None) -> None:
    _check_unique(row, line_no, report, seen)
    row_id = row.get("id")
    if expected_id is not None and _nonempty(row_id) and row_id != expected_id:
        report.add("id_mismatch", line_no, f"id {row_id} is not the hash of the row's content ({expected_id})")
    if not _nonempty(row.get("created_at")):
        report.add("missing_created_at", line_no, "row has no created_at")


def _check_secret(fields: list[tuple[str, Any]], line_no: int, report: _Report) -> str | None:
    found = find_secret_in((name, _text(value)) for name, value in fields)
    if found is not None:
        report.add("secret_detected", line_no, found)
    return found


def _check_paths(manifest: RepoManifest | None, paths: list[str], line_no: int, report: _Report) -> None:
    if manifest is None:
        return
    missing = manifest.missing(path for path in paths if isinstance(path, str))
    if missing:
        report.add("hallucinated_file_path", line_no, f"cites path(s) not in the repository: {', '.join(missing[:5])}")


# ------------------------------------------------------------------------------------------
# One pass over a dataset file and, in lockstep, its OpenAI-layout file
# ------------------------------------------------------------------------------------------

# Checks one main-file row; returns the row in the OpenAI layout (None if it cannot be built)
# and the credential found in it, so the variant row is compared, not scanned again. A trusted
# row (a verbatim copy of bytes this check passed before, with its variant twin) is held only
# to what spans rows: unique ids and the per-task pair cap.
RowCheck = Callable[[int, Row, _Report, bool], tuple[Row | None, str | None]]
VariantFields = Callable[[Row], list[tuple[str, Any]]]


def _verify_file(
    path: Path,
    limit: int,
    check_row: RowCheck,
    variant_path: Path | None = None,
    variant_fields: VariantFields | None = None,
    trusted: dict[Path, list[tuple[int, int]]] | None = None,
) -> list[str]:
    """Stream both files together: memory stays flat however large the dataset."""
    trusted = trusted or {}
    report = _Report(path, limit)
    if not path.is_file():
        return [f"missing_file: {report.label}: the dataset file does not exist"]
    variant_report = _Report(variant_path, limit) if variant_path is not None else None
    if variant_path is not None and not variant_path.is_file():
        variant_path = None
        assert variant_report is not None
        variant_report.lines.append(f"missing_file: {variant_report.label}: the OpenAI-layout file does not exist")
    main_rows = _rows(path, report, _Trusted(trusted.get(path)))
    variant_rows = (
        _rows(variant_path, variant_report, _Trusted(trusted.get(variant_path)))
        if variant_path is not None and variant_report
        else iter(())
    )
    main_count = variant_count = 0
    for main, variant in itertools.zip_longest(main_rows, variant_rows):
        expected: Row | None = None
        secret: str | None = None
        # Trusted only with its twin: a copied main row beside a rewritten variant row is checked.
        both_trusted = main is not None and main[1] and (variant_path is None or (variant is not None and variant[1]))
        if main is not None:
            main_count += 1
            line_no, _, row = main
            if row is not None:
                expected, secret = check_row(line_no, row, report, both_trusted)
        if variant is not None and variant_report is not None and variant_fields is not None:
            variant_count += 1
            if not both_trusted:
                _check_variant_row((variant[0], variant[2]), main is not None, expected, secret, variant_fields, variant_report)
    problems = report.result()
    if variant_report is not None:
        if variant_path is not None and variant_count != main_count:
            variant_report.add(
                "variant_mismatch", variant_count, f"{variant_count} rows, the main dataset file has {main_count}"
            )
        problems += variant_report.result()
    return problems


def _check_variant_row(
    variant: tuple[int, Row | None],
    has_main: bool,
    expected: Row | None,
    secret: str | None,
    fields: VariantFields,
    report: _Report,
) -> None:
    line_no, row = variant
    if row is None:
        return
    if has_main and expected is not None and row == expected:
        if secret is not None:  # same texts as the main row: same credential
            report.add("secret_detected", line_no, secret)
        return
    report.add("variant_mismatch", line_no, "row differs from the same row of the main dataset file")
    values = fields(row)
    _check_secret(values, line_no, report)
    texts = [_text(value) for _, value in values]
    if len(texts) == 3 and texts[1] is not None and texts[2] is not None and texts[1].strip() == texts[2].strip():
        report.add("invalid_preference_pairing", line_no, "preferred and non-preferred outputs are the same text")


# ------------------------------------------------------------------------------------------
# Per dataset
# ------------------------------------------------------------------------------------------

RAG_ADMITS = ("accepted", "partially_accepted")
SFT_ADMITS = ("accepted",)


def verify_rag(
    path: Path,
    *,
    include_review: bool = False,
    manifest: RepoManifest | None = None,
    limit: int = DEFAULT_LIMIT,
    trusted: dict[Path, list[tuple[int, int]]] | None = None,
) -> list[str]:
    admitted = RAG_ADMITS + (("needs_human_review",) if include_review else ())
    seen = FirstSeen()

    def check(line_no: int, row: Row, report: _Report, is_trusted: bool) -> tuple[Row | None, str | None]:
        if is_trusted:
            _check_unique(row, line_no, report, seen)
            return None, None
        category = row.get("source_category")
        if category not in admitted:
            why = (
                "RAG never admits rejected runs"
                if category == "rejected"
                else f"not admitted (include_review={include_review})"
            )
            report.add("forbidden_category", line_no, f"source_category {category!r}: {why}")
        title, content = _text(row.get("title")), _text(row.get("content"))
        if not _nonempty(content):
            report.add("empty_content", line_no, "content is empty")
        _check_provenance(row.get("provenance"), line_no, report)
        expected = rag_id(title, content) if title is not None and content is not None else None
        _check_common(row, line_no, report, seen, expected)
        secret = _check_secret([("title", title), ("content", content)], line_no, report)
        cited = row.get("cited_paths")
        _check_paths(manifest, cited if isinstance(cited, list) else [], line_no, report)
        return None, secret

    return _verify_file(path, limit, check, trusted=trusted)


def _messages(row: Row, line_no: int, report: _Report) -> list[dict[str, str]] | None:
    messages = row.get("messages")
    if not isinstance(messages, list) or not all(isinstance(m, dict) for m in messages):
        report.add("empty_content", line_no, "messages is not a list of messages")
        return None
    roles = [m.get("role") for m in messages if m.get("role") != "system"]
    if roles[:1] != ["user"] or roles[-1:] != ["assistant"]:
        report.add("empty_content", line_no, "messages must start with a user turn and end with an assistant turn")
    if any(not _nonempty(m.get("content")) for m in messages):
        report.add("empty_content", line_no, "a message has no content")
    if any(not isinstance(m.get("role"), str) or not isinstance(m.get("content"), str) for m in messages):
        return None
    return messages


def _sft_variant_fields(row: Row) -> list[tuple[str, Any]]:
    messages = row.get("messages")
    if not isinstance(messages, list):
        return []
    return [(f"messages[{i}]", m.get("content") if isinstance(m, dict) else None) for i, m in enumerate(messages)]


def verify_sft(
    path: Path,
    *,
    include_partial: bool = False,
    manifest: RepoManifest | None = None,
    openai_path: Path | None = None,
    limit: int = DEFAULT_LIMIT,
    trusted: dict[Path, list[tuple[int, int]]] | None = None,
) -> list[str]:
    admitted = SFT_ADMITS + (("partially_accepted",) if include_partial else ())
    seen = FirstSeen()

    def check(line_no: int, row: Row, report: _Report, is_trusted: bool) -> tuple[Row | None, str | None]:
        if is_trusted:
            _check_unique(row, line_no, report, seen)
            return None, None
        category = row.get("quality_score")
        if category not in admitted:
            never = category in ("rejected", "needs_human_review")
            why = "SFT never admits it" if never else f"not admitted (include_partial={include_partial})"
            report.add("forbidden_category", line_no, f"quality_score {category!r}: {why}")
        messages = _messages(row, line_no, report)
        _check_provenance(row.get("provenance"), line_no, report)
        _check_common(row, line_no, report, seen, sft_id(messages) if messages else None)
        contents = [(f"messages[{i}]", m.get("content")) for i, m in enumerate(messages or [])]
        secret = _check_secret(contents, line_no, report)
        answers = [m["content"] for m in messages or [] if m.get("role") == "assistant"]
        _check_paths(manifest, [p for text in answers for p in cited_paths(text)], line_no, report)
        variant = {"messages": [{"role": m["role"], "content": m["content"]} for m in messages]} if messages else None
        return variant, secret

    return _verify_file(path, limit, check, openai_path, _sft_variant_fields, trusted)


def _preference_variant_fields(row: Row) -> list[tuple[str, Any]]:
    def content(key: str) -> Any:
        try:
            return row[key]["messages"][0]["content"] if key == "input" else row[key][0]["content"]
        except (KeyError, IndexError, TypeError):
            return None

    return [(key, content(key)) for key in ("input", "preferred_output", "non_preferred_output")]


def verify_preference(
    path: Path,
    *,
    max_pairs_per_task: int = DEFAULT_MAX_PAIRS_PER_TASK,
    manifest: RepoManifest | None = None,
    openai_path: Path | None = None,
    limit: int = DEFAULT_LIMIT,
    trusted: dict[Path, list[tuple[int, int]]] | None = None,
) -> list[str]:
    seen = FirstSeen()
    per_task: dict[Any, int] = {}

    def _count_pair(row: Row, line_no: int, report: _Report) -> None:
        task = row.get("task_id")
        per_task[task] = per_task.get(task, 0) + 1
        if per_task[task] == max_pairs_per_task + 1:
            report.add("too_many_pairs", line_no, f"task {task!r} has more than {max_pairs_per_task} pairs")

    def check(line_no: int, row: Row, report: _Report, is_trusted: bool) -> tuple[Row | None, str | None]:
        if is_trusted:
            _check_unique(row, line_no, report, seen)
            _count_pair(row, line_no, report)
            return None, None
        prompt, chosen, rejected = _text(row.get("prompt")), _text(row.get("chosen")), _text(row.get("rejected"))
        if row.get("chosen_category") != "accepted":
            report.add(
                "forbidden_category",
                line_no,
                f"chosen_category {row.get('chosen_category')!r}: only accepted runs are chosen",
            )
        if row.get("rejected_category") not in ("rejected", "partially_accepted"):
            report.add(
                "forbidden_category",
                line_no,
                f"rejected_category {row.get('rejected_category')!r}: not a pairable category",
            )
        for name, value in (("prompt", prompt), ("chosen", chosen), ("rejected", rejected)):
            if not _nonempty(value):
                report.add("empty_content", line_no, f"{name} is empty")
        chosen_id = _check_provenance(row.get("chosen_provenance"), line_no, report, "chosen_provenance")
        rejected_id = _check_provenance(row.get("rejected_provenance"), line_no, report, "rejected_provenance")
        if chosen_id is not None and chosen_id == rejected_id:
            report.add("self_pairing", line_no, f"run {chosen_id} is on both sides")
        if chosen is not None and rejected is not None and chosen.strip() == rejected.strip():
            report.add("invalid_preference_pairing", line_no, "chosen and rejected are the same text")
        texts = (prompt, chosen, rejected)
        expected = preference_id(*(text_sha256(t.strip()) for t in texts)) if None not in texts else None  # type: ignore[union-attr]
        _check_common(row, line_no, report, seen, expected)
        _count_pair(row, line_no, report)
        secret = _check_secret([("prompt", prompt), ("chosen", chosen), ("rejected", rejected)], line_no, report)
        if chosen is not None:
            _check_paths(manifest, cited_paths(chosen), line_no, report)
        variant = openai_preference_row(prompt, chosen, rejected) if None not in texts else None  # type: ignore[arg-type]
        return variant, secret

    return _verify_file(path, limit, check, openai_path, _preference_variant_fields, trusted)


def verify_dataset(
    layout: Layout,
    dataset: str,
    *,
    include_review: bool = False,
    include_partial: bool = False,
    max_pairs_per_task: int = DEFAULT_MAX_PAIRS_PER_TASK,
    limit: int = DEFAULT_LIMIT,
    trusted: dict[Path, list[tuple[int, int]]] | None = None,
) -> list[str]:
    """Violations in a written dataset (and its OpenAI-layout file). Empty means it holds.

    ``trusted``: byte ranges per file that are verbatim copies of bytes this check passed
    before (``increments.trusted_ranges``); rows there are held only to the rules that span
    rows (unique ids, pairs per task). Without it every row is checked.

    Pass the options the export ran with: a needs_human_review RAG row is a violation unless
    ``include_review``, a partially_accepted SFT row unless ``include_partial``. Paths are held
    to the repository manifest when it exists. Memory: one id per row (duplicate detection),
    and the pair count per task for preference.
    """
    manifest = RepoManifest.load(layout.repo_manifest)
    if dataset == "rag":
        return verify_rag(layout.rag_file, include_review=include_review, manifest=manifest, limit=limit, trusted=trusted)
    if dataset == "sft":
        return verify_sft(
            layout.sft_file,
            include_partial=include_partial,
            manifest=manifest,
            openai_path=layout.sft_openai_file,
            limit=limit,
            trusted=trusted,
        )
    if dataset == "preference":
        return verify_preference(
            layout.preference_file, max_pairs_per_task=max_pairs_per_task, manifest=manifest,
            openai_path=layout.preference_openai_file, limit=limit, trusted=trusted,
        )  # fmt: skip
    raise ValueError(f"unknown dataset {dataset!r}")
