"""The whole graph through the real Dagster job: firewall, blocking checks, receipts, drift."""

import json
import shutil
from pathlib import Path

import dagster as dg
import orjson
import pytest

from distillation_pipeline.cli import EXIT_FAILED_VALIDATION, EXIT_OK, main
from distillation_pipeline.definitions import defs
from distillation_pipeline.defs.execute import run_pipeline
from distillation_pipeline.defs.pipeline.jobs import PIPELINE_JOB_NAME
from distillation_pipeline.lib.jsonl import iter_json_rows
from distillation_pipeline.lib.layout import Layout
from distillation_pipeline.receipts.summary import load_summary
from distillation_pipeline.schemas import DriftReport
from distillation_pipeline_tests.conftest import PINNED, Substrate, scrum_row, tree_bytes

REAL_FILE = "services/router/provider_adapter.py"
GHOST_FILE = "services/ghost/phantom_router.py"
GITHUB_TOKEN = "ghp_" + "a1B2c3D4e5F6g7H8i9J0k1L2m3N4o5P6q7R8"


def planted_rows() -> list[dict]:
    """Task A has a good, a partial and a rejected run; B carries a credential; C a ghost file."""
    good = "Checked services/router/provider_adapter.py: fallback order is correct.\nverify the retry path with a 503."
    return [
        scrum_row("ok-1", "task-A", 1, review=good),
        scrum_row("partial-1", "task-A", 2, review="Second attempt fixed services/router/provider_adapter.py timeouts."),
        scrum_row("rejected-1", "task-A", None, review="Rewrote routing; never accepted by the reviewer."),
        scrum_row("cred-1", "task-B", 1, review=f"Deployed with token {GITHUB_TOKEN} for services/router/provider_adapter.py."),
        scrum_row("ghost-1", "task-C", 1, review=f"Patched {GHOST_FILE} to add a circuit breaker."),
    ]


def planted_substrate(root: Path) -> Substrate:
    substrate = Substrate(root)
    substrate.write_rows("scrum_reviews", planted_rows())
    substrate.layout.repo_manifest.write_text(f"{REAL_FILE}\ndocs/PRD.md\n")
    return substrate


def evidence_id_of(substrate: Substrate, source_id: str) -> str:
    for path in substrate.layout.evidence_dir.rglob("*.jsonl"):
        for row in iter_json_rows(path):
            if row["source_id"] == source_id:
                return row["id"]
    raise AssertionError(f"no evidence for {source_id}")


def quarantine_reasons(layout: Layout, dataset: str) -> dict[str, str]:
    return {row["evidence_id"]: row["reason"] for row in iter_json_rows(layout.quarantine_file(dataset))}


def dataset_evidence_ids(layout: Layout, dataset: str) -> set[str]:
    ids = set()
    for row in iter_json_rows(layout.dataset_file(dataset)):
        if dataset == "preference":
            ids |= {row["chosen_provenance"]["evidence_id"], row["rejected_provenance"]["evidence_id"]}
        else:
            ids.add(row["provenance"]["evidence_id"])
    return ids


@pytest.fixture(scope="module")
def first_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("pipeline") / "root"
    substrate = planted_substrate(root)
    outcome = run_pipeline(root, recorded_at=PINNED, instance=dg.DagsterInstance.ephemeral())
    return substrate, outcome


def test_planted_rows_are_quarantined_with_the_right_reason_and_never_exported(first_run) -> None:
    substrate, outcome = first_run
    assert outcome.success, outcome.failures
    layout = substrate.layout
    ids = {name: evidence_id_of(substrate, name) for name in ("ok-1", "partial-1", "rejected-1", "cred-1", "ghost-1")}

    rag = quarantine_reasons(layout, "rag")
    assert rag[ids["rejected-1"]] == "unsafe_rag_category"
    assert rag[ids["cred-1"]] == "secret_detected"
    assert rag[ids["ghost-1"]] == "hallucinated_file_path"
    assert dataset_evidence_ids(layout, "rag") == {ids["ok-1"], ids["partial-1"]}

    sft = quarantine_reasons(layout, "sft")
    assert sft[ids["rejected-1"]] == "unsafe_sft_category"
    assert sft[ids["partial-1"]] == "category_disallowed"
    assert sft[ids["cred-1"]] == "secret_detected"
    assert sft[ids["ghost-1"]] == "hallucinated_file_path"
    assert dataset_evidence_ids(layout, "sft") == {ids["ok-1"]}

    pairs = list(iter_json_rows(layout.preference_file))
    assert pairs and all(pair["chosen_provenance"]["evidence_id"] == ids["ok-1"] for pair in pairs)
    assert pairs[0]["pair_kind"] == "accepted_over_rejected"
    assert pairs[0]["rejected_provenance"]["evidence_id"] == ids["rejected-1"]
    everything = "".join(layout.dataset_file(d).read_text() for d in ("rag", "sft", "preference"))
    assert GITHUB_TOKEN not in everything and GHOST_FILE not in everything


def test_every_stage_wrote_a_receipt_and_the_run_a_summary(first_run) -> None:
    substrate, outcome = first_run
    run_dir = substrate.layout.run_dir(outcome.run_id)
    names = sorted(p.name for p in run_dir.iterdir())
    assert names == [
        "collect.json", "drift.json", "export-preference.json", "export-rag.json", "export-sft.json",
        "score.json", "summary.json", "summary.md",
    ]
    summary = load_summary(substrate.layout, outcome.run_id)
    assert summary.overall_passed and summary.drift_severity == "ok"
    assert summary.dataset_sizes["sft"] == 1
    assert set(summary.stages) == {"collect", "score", "export-rag", "export-sft", "export-preference"}
    for receipt in summary.stages.values():
        assert receipt.git_sha and len(receipt.output_hash) == 64
        assert all(len(d.sha256) == 64 for d in receipt.inputs + receipt.outputs)


def test_firewall_checks_passed_in_the_run(first_run) -> None:
    _, outcome = first_run
    assert outcome.check_failures == []
    # 3 of 5 runs refused: the soft quarantine-rate signal warns, without failing anything
    assert any("quarantine_rate (WARN)" in w for w in outcome.check_warnings)


# --- a dataset corrupted behind the exporter's back -------------------------------------------------


def corrupt(layout: Layout) -> None:
    sft_row = json.loads(layout.sft_file.read_text().splitlines()[0])
    sft_row["quality_score"] = "rejected"
    with open(layout.sft_file, "a") as handle:
        handle.write(json.dumps(sft_row) + "\n")
    pair = json.loads(layout.preference_file.read_text().splitlines()[0])
    pair["rejected_provenance"] = pair["chosen_provenance"]
    with open(layout.preference_file, "a") as handle:
        handle.write(json.dumps(pair) + "\n")
    rag_row = json.loads(layout.rag_file.read_text().splitlines()[0])
    rag_row["content"] += f"\nexport GITHUB_TOKEN={GITHUB_TOKEN}"
    with open(layout.rag_file, "a") as handle:
        handle.write(json.dumps(rag_row) + "\n")


def test_blocking_checks_fail_on_a_corrupted_dataset_and_nothing_downstream_materialises(first_run, tmp_path) -> None:
    substrate, _ = first_run
    root = tmp_path / "copy"
    shutil.copytree(substrate.root, root)
    layout = Layout.at(root)
    corrupt(layout)

    # Run the checks of the three datasets and what lies downstream of them, without
    # re-exporting (which would overwrite the corruption).
    job = defs.resolve_job_def(PIPELINE_JOB_NAME)
    graph = defs.resolve_asset_graph()
    checks = {
        key for key in graph.asset_check_keys
        if key.asset_key.to_user_string() in ("rag_playbooks", "sft_dataset", "preference_dataset", "run_summary")
    }
    subset = job.get_subset(asset_selection={dg.AssetKey("run_summary")}, asset_check_selection=checks)
    result = subset.execute_in_process(
        instance=dg.DagsterInstance.ephemeral(),
        raise_on_error=False,
        run_config={
            "loggers": {"console": {"config": {"log_level": "CRITICAL"}}},
            "resources": {"paths": {"config": {"root": str(root)}}},
        },
    )
    assert not result.success
    failed = {
        (e.event_specific_data.asset_check_key.asset_key.to_user_string(), e.event_specific_data.asset_check_key.name)
        for e in result.all_events
        if e.event_type == dg.DagsterEventType.ASSET_CHECK_EVALUATION and not e.event_specific_data.passed
    }
    assert ("sft_dataset", "no_forbidden_category") in failed
    assert ("preference_dataset", "valid_pairs") in failed
    assert ("rag_playbooks", "no_credentials") in failed
    materialised = [e for e in result.all_events if e.event_type == dg.DagsterEventType.ASSET_MATERIALIZATION]
    assert materialised == []  # run_summary never ran
    assert not (layout.run_dir(result.run_id) / "summary.json").exists()


# --- drift, determinism, verification, stale inputs --------------------------------------------------


def test_two_runs_on_the_same_input_have_ok_drift_and_identical_hashes(tmp_path, capsys) -> None:
    substrate = planted_substrate(tmp_path / "root")
    assert main(["run-all", "--root", str(substrate.root)]) == EXIT_OK
    assert main(["run-all", "--root", str(substrate.root)]) == EXIT_OK
    runs = sorted(substrate.layout.runs_dir.glob("*/summary.json"), key=lambda p: p.stat().st_mtime)
    first, second = (load_summary(substrate.layout, p.parent.name) for p in runs)
    assert second.drift_severity == "ok"
    assert first.output_hash == second.output_hash and first.run_hash == second.run_hash
    drift = DriftReport.model_validate_json((runs[1].parent / "drift.json").read_bytes())
    assert drift.previous_run_id == first.run_id and not drift.findings
    assert "**PASSED** · drift **ok**" in capsys.readouterr().out


def test_a_category_moving_30_percent_warns(tmp_path) -> None:
    substrate = Substrate(tmp_path / "root")
    substrate.layout.repo_manifest.write_text(f"{REAL_FILE}\n")
    rows = [scrum_row(f"a{i}", f"t{i}", 1) for i in range(10)] + [scrum_row(f"r{i}", f"t{i}", None, review=f"no {i}") for i in range(10)]
    substrate.write_rows("scrum_reviews", rows)
    instance = dg.DagsterInstance.ephemeral()
    run_pipeline(substrate.root, recorded_at=PINNED, instance=instance)
    substrate.append_rows("scrum_reviews", [scrum_row(f"r{i}", f"t{i}", None, review=f"no {i}") for i in range(10, 13)])
    outcome = run_pipeline(substrate.root, recorded_at=PINNED, instance=instance)
    drift = DriftReport.model_validate_json((substrate.layout.run_dir(outcome.run_id) / "drift.json").read_bytes())
    assert drift.severity == "warn" and not drift.deterministic_violation
    finding = next(f for f in drift.findings if f.key == "score.category.rejected")
    assert finding.pct_change == 30.0 and finding.severity == "warn"
    warned = [c for c in outcome.check_warnings if "run_summary:drift" in c]
    assert warned and "WARN" in warned[0]
    assert outcome.success  # a WARN does not stop the run


def test_same_input_different_output_alerts_and_the_blocking_check_fails(tmp_path) -> None:
    substrate = planted_substrate(tmp_path / "root")
    instance = dg.DagsterInstance.ephemeral()
    run_pipeline(substrate.root, recorded_at=PINNED, instance=instance)
    # Evidence rebuilt from the same sources with another recorded_at: same input, new output.
    shutil.rmtree(substrate.layout.evidence_dir)
    shutil.rmtree(substrate.layout.state_dir)
    outcome = run_pipeline(substrate.root, recorded_at="2026-11-02T00:00:00Z", instance=instance)
    drift = DriftReport.model_validate_json((substrate.layout.run_dir(outcome.run_id) / "drift.json").read_bytes())
    assert drift.severity == "alert" and drift.deterministic_violation
    assert any("deterministic_violation: collect" in f.message for f in drift.findings)
    assert any("run_summary:drift (ERROR)" in c for c in outcome.check_failures)
    assert not outcome.success  # blocking ERROR fails the run
    assert not load_summary(substrate.layout, outcome.run_id).overall_passed


def test_read_reports_an_output_edited_or_deleted_after_the_run(tmp_path, capsys) -> None:
    substrate = planted_substrate(tmp_path / "root")
    main(["run-all", "--root", str(substrate.root)])
    run_id = next(substrate.layout.runs_dir.iterdir()).name
    assert main(["read", "--root", str(substrate.root), "--run-id", run_id]) == EXIT_OK
    assert "every output file matches" in capsys.readouterr().out
    with open(substrate.layout.sft_file, "a") as handle:
        handle.write("{}\n")
    next(substrate.layout.scored_dir.rglob("scrum_reviews.jsonl")).unlink()
    assert main(["read", "--root", str(substrate.root), "--run-id", run_id]) == EXIT_FAILED_VALIDATION
    out = capsys.readouterr().out
    assert "exports/sft/instruction_response.jsonl: sha256 differs" in out
    assert "scrum_reviews.jsonl: missing" in out


def test_a_hard_failure_upstream_stops_the_exports_and_the_summary_says_so(tmp_path, capsys) -> None:
    substrate = planted_substrate(tmp_path / "root")
    main(["run-all", "--root", str(substrate.root), "--recorded-at", PINNED])
    before = substrate.layout.sft_file.read_bytes()
    # Damage evidence in place (same length, so collect's commit record does not notice it):
    # the provenance round-trip finds a damaged record, which fails collect hard.
    partition = next(substrate.layout.evidence_dir.rglob("scrum_reviews.jsonl"))
    data = partition.read_bytes()
    partition.write_bytes(b"#" * data.index(b"\n") + data[data.index(b"\n"):])
    substrate.append_rows("scrum_reviews", [scrum_row("ok-2", "task-D", 1, review="verify services/router/provider_adapter.py")])

    assert main(["run-all", "--root", str(substrate.root), "--recorded-at", PINNED]) == EXIT_FAILED_VALIDATION
    out = capsys.readouterr().out
    run_id = sorted(substrate.layout.runs_dir.glob("*/summary.json"), key=lambda p: p.stat().st_mtime)[-1].parent.name
    summary = load_summary(substrate.layout, run_id)
    assert not summary.overall_passed
    assert summary.stages["collect"].validation.hard_failure
    assert any("provenance_round_trip_failed" in e for e in summary.stages["collect"].validation.errors)
    assert set(summary.stages_not_run) == {"score", "export-rag", "export-sft", "export-preference"}
    assert all("upstream collect failed validation hard" in why for why in summary.stages_not_run.values())
    assert "were not refreshed by this run" in out
    assert substrate.layout.sft_file.read_bytes() == before  # nothing exported from bad inputs


def test_nightly_schedule_and_alert_sensor_are_defined() -> None:
    schedule = defs.get_schedule_def("distill_nightly")
    assert schedule.cron_schedule == "0 2 * * *" and schedule.execution_timezone == "UTC"
    assert schedule.job_name == PIPELINE_JOB_NAME
    assert "distill_alerts" in {s.name for s in defs.get_repository_def().sensor_defs}


def test_assets_carry_numeric_metadata_for_trends(first_run) -> None:
    _, outcome = first_run
    score = outcome.metadata["scored_runs"]
    assert isinstance(score["category/accepted"], int) and score["records_out"] == 5
    assert isinstance(outcome.metadata["sft_dataset"]["quarantined"], int)
    assert outcome.metadata["run_summary"]["drift_severity"] == "ok"
    assert orjson.loads(orjson.dumps(outcome.metadata["evidence"]["receipt"]))["stage"] == "collect"


def test_the_datasets_asset_exported_side_by_side_writes_the_bytes_of_one_pass(tmp_path, monkeypatch) -> None:
    from distillation_pipeline.exports import parallel_export

    one, two = planted_substrate(tmp_path / "one"), planted_substrate(tmp_path / "two")
    assert run_pipeline(one.root, recorded_at=PINNED, instance=dg.DagsterInstance.ephemeral()).success
    monkeypatch.setenv("DISTILL_CORES", "2")
    monkeypatch.setattr(parallel_export, "SPLIT_MIN_TREE_BYTES", 0)  # a worker even for a few rows
    split = run_pipeline(two.root, recorded_at=PINNED, instance=dg.DagsterInstance.ephemeral())
    assert split.success and not split.check_failures
    written, expected = tree_bytes(two.layout.exports_dir), tree_bytes(one.layout.exports_dir)
    assert written.pop("README.md") != expected.pop("README.md")  # the dataset card names its run
    assert written == expected and len(written) >= 8
