"""Asset checks that guard the pipeline. Blocking checks stop everything downstream."""

import dagster as dg

from distillation_pipeline.defs.resources import DistillPaths
from distillation_pipeline.evidence.state import CollectState


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
