"""Run the pipeline job in-process: what ``distill`` does, the job the UI loads."""

import functools
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dagster as dg

from distillation_pipeline.defs.pipeline.checks import DATASET_ASSET
from distillation_pipeline.defs.pipeline.jobs import PIPELINE_JOB_NAME
from distillation_pipeline.defs.progress import progress_logger
from distillation_pipeline.defs.resources import DistillPaths, RunOptions, default_root
from distillation_pipeline.lib.atomic import sweep_temp_files
from distillation_pipeline.lib.layout import Layout
from distillation_pipeline.lib.locks import root_lock
from distillation_pipeline.lib.workers import warm_up
from distillation_pipeline.schemas import StageReceipt

LOCAL_INSTANCE_CONFIG = Path(__file__).resolve().parents[2] / "scripts" / "dagster.local.yaml"

# step key -> stage names in receipts (the three datasets are exported in one step)
STEP_STAGES = {
    "evidence": ("collect",),
    "scored_runs": ("score",),
    "datasets": ("export-rag", "export-sft", "export-preference"),
}


def ensure_dagster_home(root: Path) -> Path:
    """Use $DAGSTER_HOME if set, else ``<root>/.dagster_home``, so CLI runs show up in the UI."""
    home = Path(os.environ.get("DAGSTER_HOME") or (root / ".dagster_home")).resolve()
    home.mkdir(parents=True, exist_ok=True)
    config = home / "dagster.yaml"
    if not config.exists():
        shutil.copyfile(LOCAL_INSTANCE_CONFIG, config)
    os.environ["DAGSTER_HOME"] = str(home)
    return home


@functools.lru_cache(maxsize=1)
def pipeline_definitions() -> dg.Definitions:
    """The pipeline topic and the resources its assets take: ``definitions.defs`` resolves the
    same ``distill_pipeline`` job (a test holds them equal), but loading it would also import
    the replay and alerts topics (httpx, numpy, the replay runtime), which a pipeline run never
    uses: ~0.3 s of every `distill` command's start-up."""
    from distillation_pipeline.defs import pipeline

    return dg.Definitions.merge(pipeline.defs, dg.Definitions(resources=pipeline_resources()))


def pipeline_resources(root: str | None = None) -> dict[str, Any]:
    """The resources the pipeline's assets take (``definitions.build_definitions`` binds these)."""
    return {"paths": DistillPaths(root=root or default_root()), "options": RunOptions()}


def default_instance(root: Path) -> dg.DagsterInstance:
    """The persistent instance the UI shows, or an in-memory one when
    ``DISTILL_DAGSTER_INSTANCE=ephemeral`` (tests: no run history, and several times faster)."""
    if os.environ.get("DISTILL_DAGSTER_INSTANCE") == "ephemeral":
        return dg.DagsterInstance.ephemeral()
    ensure_dagster_home(root)
    return dg.DagsterInstance.get()


@dataclass
class PipelineOutcome:
    run_id: str
    success: bool
    receipts: dict[str, StageReceipt] = field(default_factory=dict)  # stage -> receipt
    failures: list[str] = field(default_factory=list)
    step_failures: dict[str, str] = field(default_factory=dict)  # stage -> error, for steps that crashed
    check_failures: list[str] = field(default_factory=list)  # ERROR severity: validation failed
    check_warnings: list[str] = field(default_factory=list)  # WARN severity: soft signals
    metadata: dict[str, dict[str, Any]] = field(default_factory=dict)  # asset -> metadata values

    @property
    def validation_passed(self) -> bool:
        return self.success and not self.check_failures and all(r.validation.passed for r in self.receipts.values())


def run_pipeline(
    root: Path,
    *,
    assets: list[str] | None = None,
    recorded_at: str | None = None,
    dry_run: bool = False,
    asset_config: dict[str, dict[str, Any]] | None = None,
    instance: dg.DagsterInstance | None = None,
    log_level: str = "WARNING",
    progress: bool = False,
) -> PipelineOutcome:
    root = root.resolve()
    if instance is None:
        instance = default_instance(root)
    run_config: dict[str, Any] = {
        "loggers": {"console": {"config": {"log_level": log_level}}, **({"progress": {}} if progress else {})},
        "resources": {
            "paths": {"config": {"root": str(root)}},
            "options": {"config": {"recorded_at": recorded_at, "dry_run": dry_run}},
        }
    }
    if asset_config:
        run_config["ops"] = {name: {"config": config} for name, config in asset_config.items()}
    job = pipeline_definitions().resolve_job_def(PIPELINE_JOB_NAME)
    if progress:
        job = job.with_logger_defs({**job.loggers, "progress": progress_logger})
    selection = [dg.AssetKey(name) for name in assets] if assets else None
    layout = Layout.at(root)
    with root_lock(layout, wait=False):  # raises RootBusy: one run per root
        # Temp files of writers a previous run's SIGKILL interrupted; the replay log and queue are
        # left alone (replay writers do not take the root lock).
        sweep_temp_files([layout.evidence_dir, layout.scored_dir, layout.exports_dir, layout.reports_dir, layout.state_dir])
        for leftover in layout.kb_dir.glob(".distillation_skips.jsonl.*.tmp"):
            leftover.unlink(missing_ok=True)
        for leftover in layout.kb_dir.glob(".evidence_health.md.*.tmp"):
            leftover.unlink(missing_ok=True)
        if assets is None or sum(name in DATASET_ASSET.values() for name in assets) > 1:
            # score, the export and the checks of two or more datasets use both cores: the workers
            # start (importing their code) while Dagster starts and the first stages run
            warm_up(
                "distillation_pipeline.scoring.stage",
                "distillation_pipeline.exports.parallel_export",
                "distillation_pipeline.exports.parallel_verify",
            )
        result = job.execute_in_process(
            run_config=run_config, instance=instance, asset_selection=selection, raise_on_error=False
        )
    outcome = PipelineOutcome(run_id=result.run_id, success=result.success)
    for event in result.all_events:
        if event.event_type == dg.DagsterEventType.ASSET_MATERIALIZATION:
            materialization = event.event_specific_data.materialization
            metadata = {key: value.value for key, value in materialization.metadata.items()}
            outcome.metadata[materialization.asset_key.to_user_string()] = metadata
            _take_receipt(outcome, metadata)
        elif event.event_type == dg.DagsterEventType.STEP_FAILURE:
            failure = event.step_failure_data
            user = failure.user_failure_data
            if user is not None:
                _take_receipt(outcome, {key: value.value for key, value in user.metadata.items()})
                outcome.failures.append(f"{event.step_key}: {user.description}")
            else:
                message = _root_cause(failure.error)
                outcome.failures.append(f"{event.step_key}: {message}")
                for stage in STEP_STAGES.get(event.step_key or "", ()):
                    outcome.step_failures[stage] = message
        elif event.event_type == dg.DagsterEventType.ASSET_CHECK_EVALUATION:
            evaluation = event.event_specific_data
            if not evaluation.passed:
                line = (
                    f"{evaluation.asset_check_key.asset_key.to_user_string()}:{evaluation.asset_check_key.name}"
                    f" ({evaluation.severity.value}): {evaluation.description or ''}".rstrip(": ")
                )
                if evaluation.severity == dg.AssetCheckSeverity.WARN:
                    outcome.check_warnings.append(line)
                else:
                    outcome.check_failures.append(line)
    return outcome


def _root_cause(error: Any) -> str:
    """The innermost error's message: Dagster wraps user exceptions in its own."""
    if error is None:
        return "failed"
    while error.cause is not None:
        error = error.cause
    return error.message.strip().splitlines()[-1][:500]


def _take_receipt(outcome: PipelineOutcome, metadata: dict[str, Any]) -> None:
    """The receipt(s) a materialization or a failure carries (a failed export step: several)."""
    raw = metadata.get("receipts")
    for item in [metadata.get("receipt"), *(raw if isinstance(raw, list) else [])]:
        if isinstance(item, dict):
            receipt = StageReceipt.model_validate(item)
            outcome.receipts[receipt.stage] = receipt
