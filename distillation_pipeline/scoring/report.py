"""The stream-by-category table of a scoring run, as text a person reads (the seed's Phase 3 report)."""

from collections.abc import Mapping

from distillation_pipeline.evidence.streams import STREAMS
from distillation_pipeline.schemas import CATEGORIES

_SHORT = {
    "accepted": "accepted",
    "partially_accepted": "partial",
    "rejected": "rejected",
    "needs_human_review": "review",
}


def _pct(part: int, whole: int) -> str:
    return f"{100.0 * part / whole:.1f}%" if whole else "n/a"


def render_matrix(
    matrix: Mapping[str, Mapping[str, int]],
    scorer_version: str,
    ledger_rows: int = 0,
    ledger_entries: int = 0,
) -> str:
    known = [stream for stream in STREAMS if stream in matrix]
    streams = known + sorted(stream for stream in matrix if stream not in STREAMS)
    name_width = max([len("stream"), len("total"), *(len(s) for s in streams)])
    header = ["stream".ljust(name_width), *(f"{_SHORT[c]:>9}" for c in CATEGORIES), f"{'total':>9}"]
    lines = [f"Scored runs (scorer_version {scorer_version})", "  ".join(header)]
    totals = dict.fromkeys(CATEGORIES, 0)
    for stream in streams:
        row = matrix[stream]
        counts = [row.get(category, 0) for category in CATEGORIES]
        for category, count in zip(CATEGORIES, counts, strict=True):
            totals[category] += count
        lines.append("  ".join([stream.ljust(name_width), *(f"{n:>9}" for n in counts), f"{sum(counts):>9}"]))
    grand = sum(totals.values())
    lines.append("  ".join(["total".ljust(name_width), *(f"{totals[c]:>9}" for c in CATEGORIES), f"{grand:>9}"]))
    review = totals["needs_human_review"]
    lines.append(
        f"specific category: {grand - review}/{grand} ({_pct(grand - review, grand)}); "
        f"needs_human_review: {review}/{grand} ({_pct(review, grand)})"
    )
    if ledger_rows:
        lines.append(
            f"model_trust: {ledger_rows} row(s) aggregated into {ledger_entries} model ledger entr"
            f"{'y' if ledger_entries == 1 else 'ies'} (not scored, never exported)"
        )
    return "\n".join(lines) + "\n"
