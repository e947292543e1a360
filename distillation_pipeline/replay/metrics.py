"""Loop metrics from the replay log: is retrieval helping, and is escalation getting rarer?

All values are floats so they go straight into ``RunSummary.replay`` and Dagster numeric
metadata. A rate whose denominator is zero is left out rather than reported as 0.0, which
would read as "every run failed".
"""

from distillation_pipeline.lib.layout import Layout
from distillation_pipeline.replay.runlog import read_runs


def loop_metrics(layout: Layout) -> dict[str, float]:
    log = read_runs(layout)
    runs = log.runs
    grounded = [run for run in runs if run.retrieval_mode != "none"]
    baseline = [run for run in runs if run.retrieval_mode == "none"]
    escalated = [run for run in runs if run.escalated]
    metrics: dict[str, float] = {
        "replay_runs": float(len(runs)),
        "replay_runs_with_retrieval": float(len(grounded)),
        "replay_runs_without_retrieval": float(len(baseline)),
        "replay_runs_escalated": float(len(escalated)),
        "replay_runs_passed": float(sum(run.validation_passed for run in runs)),
        "replay_log_invalid_lines": float(sum(log.invalid.values())),
    }
    _rate(metrics, "replay_pass_rate", runs)
    _rate(metrics, "replay_pass_rate_with_retrieval", grounded)
    _rate(metrics, "replay_pass_rate_without_retrieval", baseline)
    if runs:
        metrics["replay_escalation_rate"] = round(len(escalated) / len(runs), 6)
        # Passed on the local model alone: the number the loop is meant to push up.
        local_passes = sum(run.validation_passed and not run.escalated for run in runs)
        metrics["replay_local_pass_rate"] = round(local_passes / len(runs), 6)
    return metrics


def _rate(metrics: dict[str, float], key: str, runs: list) -> None:
    if runs:
        metrics[key] = round(sum(run.validation_passed for run in runs) / len(runs), 6)
