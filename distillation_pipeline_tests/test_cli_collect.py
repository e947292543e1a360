"""`distill build-evidence` and `distill health` through the real Dagster job, with exit codes."""

import orjson
import pytest
from dagster import DagsterInstance

from distillation_pipeline.cli import EXIT_FAILED_VALIDATION, EXIT_OK, EXIT_USAGE, main
from distillation_pipeline.defs.execute import run_pipeline
from distillation_pipeline.receipts.receipt import read_receipt
from distillation_pipeline_tests.conftest import PINNED, Substrate, scrum_row


@pytest.fixture(autouse=True)
def _dagster_home(tmp_path, monkeypatch):
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster_home"))


def test_evidence_asset_runs_through_dagster_and_writes_its_receipt(substrate: Substrate) -> None:
    substrate.write_rows("scrum_reviews", [scrum_row("r1"), scrum_row("r2")])
    outcome = run_pipeline(substrate.root, assets=["evidence"], recorded_at=PINNED, instance=DagsterInstance.ephemeral())
    assert outcome.success and outcome.validation_passed
    receipt = read_receipt(substrate.layout.run_dir(outcome.run_id) / "collect.json")
    assert receipt.counts.records_in == 2 and receipt.counts.records_out == 2
    assert receipt.run_id == outcome.run_id
    assert receipt.outputs and all(len(d.sha256) == 64 for d in receipt.outputs)
    metadata = outcome.metadata["evidence"]
    assert metadata["records_out"] == 2
    assert metadata["stream/scrum_reviews/written"] == 2


def test_exit_code_0_when_nothing_was_skipped(substrate: Substrate, capsys) -> None:
    substrate.write_rows("scrum_reviews", [scrum_row("r1")])
    assert main(["build-evidence", "--root", str(substrate.root), "--recorded-at", PINNED]) == EXIT_OK
    out = capsys.readouterr().out
    assert "read = written + skipped + deduplicated: yes" in out


def test_exit_code_1_when_rows_were_skipped(substrate: Substrate, capsys) -> None:
    substrate.write_bytes("scrum_reviews", b"{oops\n" + orjson.dumps(scrum_row("r1")) + b"\n")
    assert main(["build-evidence", "--root", str(substrate.root)]) == EXIT_FAILED_VALIDATION
    assert "malformed_json=1" in capsys.readouterr().out


def test_exit_code_2_for_bad_usage(tmp_path, capsys) -> None:
    assert main(["build-evidence", "--root", str(tmp_path / "missing")]) == EXIT_USAGE
    assert main(["build-evidence", "--root", str(tmp_path)]) == EXIT_USAGE  # no data/_kb
    assert main(["no-such-command"]) == EXIT_USAGE
    (tmp_path / "data" / "_kb").mkdir(parents=True)
    assert main(["build-evidence", "--root", str(tmp_path), "--recorded-at", "not a time"]) == EXIT_USAGE
    err = capsys.readouterr().err
    assert "no such directory" in err and "--recorded-at" in err


def test_dry_run_writes_no_data_and_no_receipt(substrate: Substrate) -> None:
    substrate.write_rows("scrum_reviews", [scrum_row("r1")])
    assert main(["build-evidence", "--root", str(substrate.root), "--dry-run"]) == EXIT_OK
    assert not substrate.layout.evidence_dir.exists()
    assert not substrate.layout.runs_dir.exists()


def test_health_command_round_trips(substrate: Substrate, capsys) -> None:
    substrate.write_rows("scrum_reviews", [scrum_row("r1"), scrum_row("r2")])
    assert main(["health", "--root", str(substrate.root)]) == EXIT_USAGE  # no evidence yet
    main(["build-evidence", "--root", str(substrate.root)])
    assert main(["health", "--root", str(substrate.root)]) == EXIT_OK
    out = capsys.readouterr().out
    assert "2/2 sampled records" in out
    assert substrate.layout.health_report.exists()


def test_a_second_run_on_a_busy_root_refuses_with_a_clear_message(substrate: Substrate, capsys) -> None:
    from distillation_pipeline.lib.locks import root_lock

    substrate.write_rows("scrum_reviews", [scrum_row("r1")])
    with root_lock(substrate.layout, wait=False):
        # Another process would hold it; in-process, clear the re-entrancy marker to simulate one.
        from distillation_pipeline.lib import locks

        held = set(locks._HELD)
        locks._HELD.clear()
        try:
            assert main(["build-evidence", "--root", str(substrate.root)]) == EXIT_USAGE
        finally:
            locks._HELD.update(held)
    assert "another distill run holds" in capsys.readouterr().err
    assert main(["build-evidence", "--root", str(substrate.root)]) == EXIT_OK  # free again


def test_progress_lines_go_to_stderr_as_plain_text_without_a_tty(substrate: Substrate, capsys) -> None:
    substrate.write_rows("scrum_reviews", [scrum_row("r1")])
    assert main(["build-evidence", "--root", str(substrate.root)]) == EXIT_OK
    captured = capsys.readouterr()
    assert "… collect" in captured.err and "✓ collect (" in captured.err
    assert "\x1b[" not in captured.err  # no terminal escapes when stderr is not a terminal
    assert "✓ collect" not in captured.out  # stdout stays the report
