"""The dataset card: ``exports/README.md``, written beside the datasets after every export run.

Like a Hugging Face Hub (or distilabel) card: YAML front matter whose ``configs`` name the data
files, so ``load_dataset("<root>/exports")`` loads the SFT set and
``load_dataset("<root>/exports", "preference")`` the pairs; then what a reader needs before
training: sizes, category mix, source streams, the filters the run applied, quarantine counts
by reason, the run id and the sha256 of every file.

Sizes, mixes, streams and quarantine counts describe the files on disk, so the card says what
a trainer will actually load, including a dataset that this run did not refresh (its export
stage failed or was not selected); the card says so. They are the counts the exporter kept
while writing a file only while that file still hashes to what the exporter wrote; any other
file is read. Empty files are
listed but left out of ``configs``: ``load_dataset`` cannot load an empty JSONL file.
"""

from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import yaml

from distillation_pipeline.lib.atomic import atomic_write_bytes, atomic_write_text
from distillation_pipeline.lib.digests import file_digests
from distillation_pipeline.lib.hashing import file_sha256
from distillation_pipeline.lib.layout import Layout
from distillation_pipeline.schemas import StageReceipt

Row = dict[str, Any]


@dataclass(frozen=True)
class CardConfig:
    """One loadable config of the card: which file, from which stage, how to read its rows."""

    name: str
    stage: str
    path: Callable[[Layout], Path]
    about: str
    category: Callable[[Row], Iterable[str]] = lambda row: ()
    streams: Callable[[Row], Iterable[str]] = lambda row: ()


def _stream(key: str) -> Callable[[Row], list[str]]:
    return lambda row: [str((row.get(key) or {}).get("stream"))]


CONFIGS = (
    CardConfig(
        "sft",
        "export-sft",
        lambda layout: layout.sft_file,
        "chat `messages` for TRL SFTTrainer",
        category=lambda row: [str(row.get("quality_score"))],
        streams=_stream("provenance"),
    ),
    CardConfig(
        "preference",
        "export-preference",
        lambda layout: layout.preference_file,
        "`prompt`/`chosen`/`rejected` for TRL DPOTrainer",
        category=lambda row: [str(row.get("pair_kind"))],
        streams=lambda row: _stream("chosen_provenance")(row) + _stream("rejected_provenance")(row),
    ),
    CardConfig(
        "rag",
        "export-rag",
        lambda layout: layout.rag_file,
        "playbooks for retrieval (replay's corpus)",
        category=lambda row: [str(row.get("source_category"))],
        streams=_stream("provenance"),
    ),
    CardConfig(
        "openai_chat",
        "export-sft",
        lambda layout: layout.sft_openai_file,
        "the SFT set in OpenAI's chat fine-tuning layout",
    ),
    CardConfig(
        "openai_dpo",
        "export-preference",
        lambda layout: layout.preference_openai_file,
        "the preference set in OpenAI's preference fine-tuning layout",
    ),
)
QUARANTINE_SPLITS = {"rag": "export-rag", "sft": "export-sft", "preference": "export-preference"}
_ADMITS = {
    "rag": "accepted and partially_accepted runs; needs_human_review only with include_review; rejected never",
    "sft": "accepted runs; partially_accepted only with include_partial; rejected and needs_human_review never",
    "preference": "pairs within one task_id: accepted over rejected first, accepted over partially_accepted as "
    "fallback, at most max_pairs_per_task per task; never the same run or the same text on both sides",
}
# Hugging Face Hub's size_categories buckets, by upper bound.
_SIZE_BUCKETS = (
    (1_000, "n<1K"),
    (10_000, "1K<n<10K"),
    (100_000, "10K<n<100K"),
    (1_000_000, "100K<n<1M"),
    (10_000_000, "1M<n<10M"),
    (100_000_000, "10M<n<100M"),
)


@dataclass
class FileStats:
    path: Path
    rows: int = 0
    unreadable: int = 0
    bytes: int = 0
    sha256: str = ""
    categories: Counter = field(default_factory=Counter)
    streams: Counter = field(default_factory=Counter)
    reasons: Counter = field(default_factory=Counter)

    @property
    def exists(self) -> bool:
        return bool(self.sha256)


def read_stats(path: Path, config: CardConfig | None = None, sha256: str | None = None) -> FileStats:
    """Rows, category mix, streams and quarantine reasons of one JSONL file, in one pass."""
    stats = FileStats(path)
    if not path.is_file():
        return stats
    stats.bytes, stats.sha256 = path.stat().st_size, sha256 or file_sha256(path)
    with open(path, "rb") as handle:
        for line in handle:
            if not line.strip():
                continue
            try:
                row = orjson.loads(line)
            except orjson.JSONDecodeError:
                stats.unreadable += 1
                continue
            if not isinstance(row, dict):
                stats.unreadable += 1
                continue
            stats.rows += 1
            if config is not None:
                stats.categories.update(config.category(row))
                stats.streams.update(config.streams(row))
            if "reason" in row:
                stats.reasons[str(row["reason"])] += 1
    return stats


# --- stats the exporters counted while writing --------------------------------------------------
#
# Re-reading every export for the card was ~4 % of a 1M-row run. The exporters count the same
# things as they write and hash the bytes they write, so their counts are stored keyed by the
# file's sha256: the card uses them only for a file whose bytes are still exactly those (its
# current sha256, from the digest cache, matches), and reads any other file. A test holds the
# stored stats equal to ``read_stats`` of the written files.


def remember_stats(layout: Layout, stats: Iterable[FileStats]) -> None:
    path = layout.card_stats_file
    try:
        stored = orjson.loads(path.read_bytes())
    except (OSError, orjson.JSONDecodeError):
        stored = {}
    for s in stats:
        stored[layout.relative(s.path)] = {
            "sha256": s.sha256, "bytes": s.bytes, "rows": s.rows, "unreadable": s.unreadable,
            "categories": dict(s.categories), "streams": dict(s.streams), "reasons": dict(s.reasons),
        }  # fmt: skip
    if layout.state_dir.exists():
        atomic_write_bytes(path, orjson.dumps(stored, option=orjson.OPT_SORT_KEYS))


def file_stats(layout: Layout, path: Path, config: CardConfig | None = None) -> FileStats:
    """``read_stats``, or the exporter's counts when the file still has the bytes it wrote."""
    if not path.is_file():
        return FileStats(path)
    digest = file_digests(layout, [path]).get(path)
    try:
        entry = orjson.loads(layout.card_stats_file.read_bytes()).get(layout.relative(path))
    except (OSError, orjson.JSONDecodeError):
        entry = None
    if isinstance(entry, dict) and digest is not None and entry.get("sha256") == digest:
        return FileStats(
            path, rows=entry["rows"], unreadable=entry["unreadable"], bytes=entry["bytes"], sha256=digest,
            categories=Counter(entry["categories"]), streams=Counter(entry["streams"]), reasons=Counter(entry["reasons"]),
        )  # fmt: skip
    return read_stats(path, config, sha256=digest)


def size_category(rows: int) -> str:
    return next((label for bound, label in _SIZE_BUCKETS if rows < bound), "n>100M")


def _card_relative(layout: Layout, path: Path) -> str:
    """``data_files`` paths are relative to the card's folder (what ``load_dataset`` resolves)."""
    return path.resolve().relative_to(layout.dataset_card().parent).as_posix()


def _front_matter(layout: Layout, stats: dict[str, FileStats], quarantine: dict[str, FileStats]) -> str:
    configs: list[dict[str, Any]] = []
    for config in CONFIGS:
        s = stats[config.name]
        if s.rows:
            entry: dict[str, Any] = {"config_name": config.name}
            if config.name == "sft":
                entry["default"] = True
            entry["data_files"] = [{"split": "train", "path": _card_relative(layout, s.path)}]
            configs.append(entry)
    splits = [{"split": name, "path": _card_relative(layout, s.path)} for name, s in quarantine.items() if s.rows]
    if splits:
        configs.append({"config_name": "quarantine", "data_files": splits})
    largest = max((s.rows for s in stats.values()), default=0)
    front = {
        "pretty_name": "Distilled agent-run datasets (SFT, preference, RAG)",
        "task_categories": ["text-generation"],
        "tags": ["sft", "dpo", "rag", "distillation", "provenance"],
        "size_categories": [size_category(largest)],
        "configs": configs,
    }
    return "---\n" + yaml.safe_dump(front, sort_keys=False, allow_unicode=True, width=1000) + "---\n"


def _table(header: list[str], rows: list[list[Any]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return lines


def _freshness(config_stage: str, s: FileStats, receipts: dict[str, StageReceipt], layout: Layout) -> str:
    receipt = receipts.get(config_stage)
    if receipt is None:
        return "no: an earlier run's file"
    recorded = {d.path: d.sha256 for d in receipt.outputs}
    relative = layout.relative(s.path)
    if relative in recorded and recorded[relative] != s.sha256:
        return "yes, but changed since (sha256 differs from the receipt)"
    return "yes"


def render_card(layout: Layout, run_id: str, receipts: dict[str, StageReceipt]) -> str:
    stats = {config.name: file_stats(layout, config.path(layout), config) for config in CONFIGS}
    quarantine = {name: file_stats(layout, layout.quarantine_file(name)) for name in QUARANTINE_SPLITS}
    git = next((r.git_sha for r in receipts.values()), "unknown")
    out = [_front_matter(layout, stats, quarantine), "# Distilled agent-run datasets", ""]
    out += [
        f"Written by run `{run_id}` of the distillation pipeline (code `{git}`). Every row carries its id, "
        "`created_at` and provenance back to the evidence record and the source log row it came from; "
        "the run's receipts are in `" + layout.relative(layout.run_dir(run_id)) + "/`.",
        "",
        "```python",
        "from datasets import load_dataset",
        'sft = load_dataset("path/to/exports", split="train")                 # chat messages',
        'pairs = load_dataset("path/to/exports", "preference", split="train")  # prompt/chosen/rejected',
        "```",
        "",
        "## Files",
        "",
    ]
    file_rows = []
    for config in CONFIGS:
        s = stats[config.name]
        if not s.exists:
            file_rows.append([config.name, "(missing)", 0, 0, "", "no file", config.about])
            continue
        note = config.about + ("" if s.rows else " (empty: left out of configs)")
        if s.unreadable:
            note += f" ({s.unreadable} unreadable lines)"
        fresh = _freshness(config.stage, s, receipts, layout)
        file_rows.append([config.name, f"`{layout.relative(s.path)}`", s.rows, s.bytes, f"`{s.sha256}`", fresh, note])
    out += _table(["config", "file", "rows", "bytes", "sha256", "refreshed by this run", "what"], file_rows)

    out += ["", "## Category mix", ""]
    mix = [
        [name, category, n]
        for name in ("sft", "preference", "rag")
        for category, n in sorted(stats[name].categories.items())
    ]
    out += _table(["dataset", "category (pair kind for preference)", "rows"], mix) if mix else ["No rows."]

    out += [
        "",
        "## Sources",
        "",
        "Rows by the evidence stream they came from (preference: both sides of each pair).",
        "",
    ]
    streams = sorted({stream for name in ("sft", "preference", "rag") for stream in stats[name].streams})
    out += (
        _table(
            ["stream", "sft", "preference", "rag"],
            [
                [stream, *(stats[name].streams.get(stream, 0) for name in ("sft", "preference", "rag"))]
                for stream in streams
            ],
        )
        if streams
        else ["No rows."]
    )

    out += ["", "## Filters applied", ""]
    for dataset, stage in QUARANTINE_SPLITS.items():
        receipt = receipts.get(stage)
        options = {k: v for k, v in sorted(receipt.options.items()) if k != "dry_run"} if receipt else {}
        shown = ", ".join(f"{k}={v}" for k, v in options.items()) if receipt else "not run in this run"
        out.append(f"- **{dataset}** ({shown}): {_ADMITS[dataset]}.")
        if receipt and receipt.validation.checks_not_run:
            out.append(f"  Checks not run: {', '.join(receipt.validation.checks_not_run)}.")
    for stage, key in (("score", "scorer_version"), ("collect", "recorded_at")):
        if stage in receipts and receipts[stage].options.get(key):
            out.append(f"- {key}: `{receipts[stage].options[key]}`")
    out.append(
        "- Every dataset: rows citing a file not in the repository manifest, rows with a credential, "
        "empty rows and duplicates are quarantined, never exported."
    )

    where = ", ".join(f"`{_card_relative(layout, s.path)}`" for s in quarantine.values())
    out += ["", "## Quarantine", "", f"Refused rows, by reason ({where}).", ""]
    reasons = sorted({reason for s in quarantine.values() for reason in s.reasons})
    out += _table(
        ["reason", *QUARANTINE_SPLITS],
        [[reason, *(quarantine[name].reasons.get(reason, 0) for name in QUARANTINE_SPLITS)] for reason in reasons]
        + [["**total**", *(quarantine[name].rows for name in QUARANTINE_SPLITS)]],
    )

    out += ["", "## Run", "", f"- run id: `{run_id}`", f"- code: `{git}`"]
    for stage in sorted(receipts):
        r = receipts[stage]
        out.append(
            f"- {stage}: input hash `{r.input_hash}`, output hash `{r.output_hash}`, "
            f"validation {'passed' if r.validation.passed else 'failed'}"
        )
    return "\n".join(out) + "\n"


def write_dataset_card(layout: Layout, run_id: str, receipts: dict[str, StageReceipt]) -> Path:
    """Write ``Layout.dataset_card()`` (``exports/README.md``) atomically and return its path."""
    path = layout.dataset_card()
    atomic_write_text(path, render_card(layout, run_id, receipts))
    return path
