"""Asset checks that guard the pipeline. Blocking checks stop everything downstream."""

import os
from collections.abc import Iterator

import dagster as dg

from distillation_pipeline.defs.resources import DistillPaths
from distillation_pipeline.evidence.state import CollectState
from distillation_pipeline.exports import DEFAULT_MAX_PAIRS_PER_TASK
from distillation_pipeline.exports.increments import trusted_ranges
from distillation_pipeline.exports.parallel_verify import VerifyJob, keep_outcome, verify_side_by_side
from distillation_pipeline.lib.layout import Layout
from distillation_pipeline.receipts.receipt import read_receipt
from distillation_pipeline.receipts.summary import previous_summary


@dg.asset_check(
    asset="evidence",
    blocking=True,
    description="Counts are conserved for every stream over all runs: rows read = evidence + skipped + deduplicated.",
)
def evidence_counts_conserved(paths: DistillPaths) -> dg.AssetCheckResult:
    state = CollectState.load(paths.layout())
    broken = {
        name: s
        for name, s in state.streams.items()
        if s.rows_read != s.written + s.skipped + s.deduplicated
    }
    return dg.AssetCheckResult(
        passed=not broken,
        description="conserved" if not broken else "not conserved: " + ", ".join(sorted(broken)),
        metadata={"streams": len(state.streams), "not_conserved": len(broken)},
    )


# --- the firewall, re-read from disk --------------------------------------------------------------
#
# Each dataset's file is re-read after it was written (not trusted from the exporter's memory)
# and every violation is sorted into a named check, so the UI says which rule broke. All of
# these are blocking: a failed one stops run_summary and anything else downstream.

FIREWALL_CHECKS: dict[str, tuple[str, ...]] = {
    "no_forbidden_category": ("forbidden_category",),
    "provenance_on_every_row": ("missing_provenance", "missing_source_run_id", "missing_created_at"),
    "no_credentials": ("secret_detected",),
    "unique_ids": ("duplicate_id", "id_mismatch"),
    "well_formed_rows": ("malformed_row", "empty_content", "variant_mismatch", "hallucinated_file_path", "truncated"),
}
PAIRING_CHECK = {"valid_pairs": ("self_pairing", "invalid_preference_pairing", "too_many_pairs")}
DATASET_ASSET = {"rag": "rag_playbooks", "sft": "sft_dataset", "preference": "preference_dataset"}
DATASET_STAGE = {"rag": "export-rag", "sft": "export-sft", "preference": "export-preference"}
VARIANT_FILES = {
    "rag": lambda layout: [],
    "sft": lambda layout: [layout.sft_openai_file],
    "preference": lambda layout: [layout.preference_openai_file],
}
_CHECK_DESCRIPTIONS = {
    "no_forbidden_category": "No row of a category this dataset never admits (rejected in RAG; rejected or needs_human_review in SFT; opt-ins respected).",
    "provenance_on_every_row": "Every row carries id, created_at and provenance back to its evidence and source row.",
    "no_credentials": "No row contains a credential: API keys, tokens, private keys, passwords in URLs.",
    "unique_ids": "No duplicate ids; ids match their content.",
    "well_formed_rows": "Every row parses, has content, cites only files in the repository manifest, and matches its OpenAI-layout twin.",
    "valid_pairs": "No pair with the same run or the same text on both sides; at most max_pairs_per_task pairs per task.",
}


def _check_groups(dataset: str) -> dict[str, tuple[str, ...]]:
    return {**FIREWALL_CHECKS, **(PAIRING_CHECK if dataset == "preference" else {})}


def _export_options(layout: Layout, run_id: str, dataset: str) -> dict:
    """The options this dataset was exported with: this run's receipt, else the latest one."""
    stage = DATASET_STAGE[dataset]
    own = layout.run_dir(run_id) / f"{stage}.json"
    candidates = [own] if own.exists() else sorted(layout.runs_dir.glob(f"*/{stage}.json"), key=lambda p: p.stat().st_mtime)
    if not candidates:
        return {}
    return read_receipt(candidates[-1]).options


def _firewall_specs() -> list[dg.AssetCheckSpec]:
    return [
        dg.AssetCheckSpec(name, asset=DATASET_ASSET[dataset], blocking=True, description=_CHECK_DESCRIPTIONS[name])
        for dataset in DATASET_ASSET
        for name in _check_groups(dataset)
    ]


@dg.multi_asset_check(
    name="dataset_firewalls",
    specs=_firewall_specs(),
    can_subset=True,
    description="Re-read each written dataset and enforce the contamination firewall (the selected datasets "
    "are verified side by side, one process each, on up to two cores).",
)
def dataset_firewalls(context: dg.AssetCheckExecutionContext, paths: DistillPaths) -> Iterator[dg.AssetCheckResult]:
    layout = paths.layout()
    selected = context.selected_asset_check_keys
    datasets = [d for d in DATASET_ASSET if any(key.asset_key == dg.AssetKey(DATASET_ASSET[d]) for key in selected)]
    files = {dataset: [layout.dataset_file(dataset), *VARIANT_FILES[dataset](layout)] for dataset in datasets}
    jobs = {}
    for dataset in datasets:
        options = _export_options(layout, context.run.run_id, dataset)
        export_options = {key: value for key, value in options.items() if key != "dry_run"}
        # Rows the check passed before, found again by the sha256 of their bytes (with their
        # twin's), are held only to the rules that span rows, without being parsed; every
        # other row gets every rule (exports/verified_rows.py).
        jobs[dataset] = VerifyJob(
            root=str(layout.root),
            dataset=dataset,
            include_review=bool(options.get("include_review", False)),
            include_partial=bool(options.get("include_partial", False)),
            max_pairs_per_task=int(options.get("max_pairs_per_task", DEFAULT_MAX_PAIRS_PER_TASK)),
            export_options=export_options,
            dry_run=bool(options.get("dry_run")),
        )
    outcomes = verify_side_by_side(list(jobs.values()))
    for dataset in datasets:
        job, outcome = jobs[dataset], outcomes[dataset]
        found = outcome.violations
        # sha256 of exactly the bytes the check read (hashed as it read them): the bytes the
        # export copied from files this check passed are judged on it (metadata, as before),
        # and a pass is recorded for those digests, never for whatever the files hold later
        read = {path: outcome.digests[str(path)] for path in files[dataset] if str(path) in outcome.digests}
        trusted = trusted_ranges(layout, dataset, job.export_options, known=read)
        trusted_bytes = sum(end - start for ranges in trusted.values() for start, end in ranges)
        keep_outcome(layout, job, outcome, files[dataset])
        for result in _results(dataset, found, trusted_bytes):
            if dg.AssetCheckKey(result.asset_key, result.check_name) in selected:  # type: ignore[arg-type]
                yield result


def _results(dataset: str, violations: list[str], trusted_bytes: int) -> Iterator[dg.AssetCheckResult]:
    """One result per named check: each violation line goes to the check that owns its code."""
    asset, groups = DATASET_ASSET[dataset], _check_groups(dataset)
    by_code: dict[str, list[str]] = {}
    for line in violations:
        by_code.setdefault(line.split(":", 1)[0], []).append(line)
    claimed = {code for codes in groups.values() for code in codes}
    unclaimed = [line for code, lines in by_code.items() if code not in claimed for line in lines]
    for name, codes in groups.items():
        found = [line for code in codes for line in by_code.get(code, [])]
        if name == "well_formed_rows":
            found += unclaimed  # e.g. missing_file: nothing may slip through unchecked
        yield dg.AssetCheckResult(
            asset_key=asset,
            check_name=name,
            passed=not found,
            description="holds" if not found else f"{len(found)} violation(s): {found[0]}",
            metadata={
                "violations": len(found),
                "trusted_bytes": trusted_bytes,
                "examples": dg.MetadataValue.md("\n".join(f"- `{line}`" for line in found[:20]) or "none"),
            },
        )


# --- soft signals (WARN, not blocking) -----------------------------------------------------------


def _float_env(name: str, default: float) -> float:
    try:
        return float(os.environ.get(name, default))
    except ValueError:
        return default


def _soft_check(dataset: str) -> dg.AssetChecksDefinition:
    asset = DATASET_ASSET[dataset]

    @dg.multi_asset_check(
        name=f"{dataset}_soft_signals",
        specs=[
            dg.AssetCheckSpec("did_not_shrink_sharply", asset=asset, blocking=False,
                              description="WARN when the dataset shrank by more than DISTILL_SHRINK_WARN_PCT (default 30) % against the previous run."),
            dg.AssetCheckSpec("quarantine_rate", asset=asset, blocking=False,
                              description="WARN when more than DISTILL_QUARANTINE_WARN_PCT (default 50) % of the rows read were quarantined."),
        ],
        description=f"Soft signals on the {dataset} dataset: warnings, never blocking.",
    )
    def soft(context: dg.AssetCheckExecutionContext, paths: DistillPaths) -> Iterator[dg.AssetCheckResult]:
        layout = paths.layout()
        receipt_file = layout.run_dir(context.run.run_id) / f"{DATASET_STAGE[dataset]}.json"
        if not receipt_file.exists():
            for name in ("did_not_shrink_sharply", "quarantine_rate"):
                yield dg.AssetCheckResult(
                    asset_key=asset, check_name=name, passed=True, severity=dg.AssetCheckSeverity.WARN,
                    description=f"{dataset} was not exported in this run: nothing to compare",
                )
            return
        receipt = read_receipt(receipt_file)
        previous = previous_summary(layout, context.run.run_id)
        size = receipt.counts.records_out
        before = previous.dataset_sizes.get(dataset) if previous else None
        shrink_limit = _float_env("DISTILL_SHRINK_WARN_PCT", 30.0)
        shrink_pct = 100.0 * (before - size) / before if size is not None and before else 0.0
        yield dg.AssetCheckResult(
            asset_key=asset,
            check_name="did_not_shrink_sharply",
            passed=shrink_pct <= shrink_limit,
            severity=dg.AssetCheckSeverity.WARN,
            description=f"{before} -> {size} rows ({-shrink_pct:+.1f}%)" if before is not None else "no previous run",
            metadata={"shrink_pct": round(shrink_pct, 2), "rows": size},
        )
        rate_limit = _float_env("DISTILL_QUARANTINE_WARN_PCT", 50.0)
        rate = 100.0 * receipt.counts.quarantined / receipt.counts.records_in if receipt.counts.records_in else 0.0
        yield dg.AssetCheckResult(
            asset_key=asset,
            check_name="quarantine_rate",
            passed=rate <= rate_limit,
            severity=dg.AssetCheckSeverity.WARN,
            description=f"{rate:.1f}% of rows read were quarantined (warn above {rate_limit:g}%)",
            metadata={"quarantine_rate_pct": round(rate, 2)},
        )

    return soft


dataset_soft_signals = [_soft_check(dataset) for dataset in DATASET_ASSET]
