"""The ``distill`` command. Data commands run the Dagster job in-process (the graph the UI runs).

Exit codes (spec section 9): 0 the run passed validation; 1 it ran but failed validation;
2 bad usage or input that stops the run, with one clear line saying why.
"""

import argparse
import gc
import logging
import os
import sys
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

EXIT_OK, EXIT_FAILED_VALIDATION, EXIT_USAGE = 0, 1, 2


class UsageError(Exception):
    """Bad usage or input that stops the run: printed as one line, exit code 2."""


# ---------------------------------------------------------------------------------------------
# Argument parsing
# ---------------------------------------------------------------------------------------------


def _data_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--root", default=".", help="where data/, exports/ and reports/ live (default: .)")
    parser.add_argument("--recorded-at", help="pin provenance time (ISO-8601) for byte-identical output")
    parser.add_argument("--dry-run", action="store_true", help="compute and report, write nothing")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="distill",
        description="Turn agent JSONL logs into trustworthy datasets, with receipts and drift checks.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="show Dagster's own log lines")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    sample = sub.add_parser("sample", help="generate a sample data/_kb/ substrate")
    sample.add_argument("--root", default=".")
    sample.add_argument("--rows", type=int, default=20_000)
    sample.add_argument("--seed", type=int, default=7)
    sample.add_argument("--clean", action="store_true", help="no malformed rows")
    sample.add_argument("--if-empty", action="store_true", help="do nothing when data/_kb/ already has sources")
    sample.set_defaults(handler=cmd_sample)

    build = sub.add_parser("build-evidence", help="stage collect: sources -> evidence")
    _data_options(build)
    build.set_defaults(handler=cmd_stage, assets=["evidence"])

    score = sub.add_parser("score", help="stage score: evidence -> scored runs (deterministic, no model calls)")
    _data_options(score)
    score.add_argument("--scorer-version", help="stamp this scorer_version instead of the built-in one")
    score.set_defaults(
        handler=cmd_stage,
        assets=["scored_runs"],
        asset_config=lambda a: {"scored_runs": {"scorer_version": a.scorer_version}} if a.scorer_version else None,
    )

    rag = sub.add_parser("export-rag", help="RAG playbooks behind the firewall")
    _data_options(rag)
    rag.add_argument("--include-review", action="store_true", help="admit needs_human_review rows")
    rag.set_defaults(handler=cmd_stage, assets=["rag_playbooks"], asset_config=_export_config)

    sft = sub.add_parser("export-sft", help="SFT chat dataset behind the firewall")
    _data_options(sft)
    sft.add_argument("--include-partial", action="store_true", help="admit partially_accepted rows")
    sft.set_defaults(handler=cmd_stage, assets=["sft_dataset"], asset_config=_export_config)

    pref = sub.add_parser("export-preference", help="preference pairs (TRL DPO layout) behind the firewall")
    _data_options(pref)
    pref.add_argument("--max-pairs-per-task", type=int, default=5)
    pref.set_defaults(handler=cmd_stage, assets=["preference_dataset"], asset_config=_export_config)

    export_all = sub.add_parser("export-all", help="all three datasets")
    _data_options(export_all)
    export_all.add_argument("--include-review", action="store_true")
    export_all.add_argument("--include-partial", action="store_true")
    export_all.add_argument("--max-pairs-per-task", type=int, default=5)
    export_all.set_defaults(
        handler=cmd_stage, assets=["rag_playbooks", "sft_dataset", "preference_dataset"], asset_config=_export_config
    )

    run_all = sub.add_parser("run-all", help="the whole graph: collect, score, export, receipts, summary, drift")
    _data_options(run_all)
    run_all.set_defaults(handler=cmd_run_all)

    read = sub.add_parser("read", help="print a past run's summary and verify its output hashes")
    read.add_argument("--root", default=".")
    read.add_argument("--run-id", required=True, help="a run id, or 'latest'")
    read.set_defaults(handler=cmd_read)

    health = sub.add_parser("health", help="write and print data/_kb/evidence_health.md")
    health.add_argument("--root", default=".")
    health.add_argument("--sample", type=int, default=30, help="records to round-trip to their source")
    health.set_defaults(handler=cmd_health)

    from distillation_pipeline.cli_replay import add_replay_commands

    add_replay_commands(sub)
    return parser


# ---------------------------------------------------------------------------------------------
# Commands
# ---------------------------------------------------------------------------------------------


def _root(args: argparse.Namespace, must_have_sources: bool = True) -> Path:
    from distillation_pipeline.lib.layout import Layout

    root = Path(args.root).resolve()
    if not root.is_dir():
        raise UsageError(f"--root {args.root}: no such directory")
    if must_have_sources and not Layout.at(root).kb_dir.is_dir():
        raise UsageError(
            f"no sources: {Layout.at(root).kb_dir} does not exist (run `distill sample --root {args.root}` for a sample)"
        )
    return root


def _validate_time(value: str | None) -> None:
    if value is None:
        return
    from distillation_pipeline.lib.timestamps import TimestampError, parse_timestamp

    try:
        parse_timestamp(value)
    except TimestampError as exc:
        raise UsageError(f"--recorded-at {value!r}: {exc}") from None


def _export_config(args: argparse.Namespace) -> dict:
    """Run config of the ``datasets`` step (the three exports share one step and one config)."""
    config: dict = {}
    if getattr(args, "include_review", False):
        config["include_review"] = True
    if getattr(args, "include_partial", False):
        config["include_partial"] = True
    pairs = getattr(args, "max_pairs_per_task", None)
    if pairs is not None:
        if pairs < 1:
            raise UsageError("--max-pairs-per-task must be at least 1")
        config["max_pairs_per_task"] = pairs
    return {"datasets": config} if config else {}


def cmd_sample(args: argparse.Namespace) -> int:
    from distillation_pipeline.lib.layout import Layout
    from distillation_pipeline.sample import generate_substrate

    root = Path(args.root).resolve()
    root.mkdir(parents=True, exist_ok=True)
    layout = Layout.at(root)
    if args.if_empty and layout.kb_dir.is_dir() and any(layout.kb_dir.glob("*.jsonl")):
        print(f"sample: {layout.kb_dir} already has sources; left as they are")
        return EXIT_OK
    if args.rows < 1:
        raise UsageError("--rows must be at least 1")
    stats = generate_substrate(root, rows=args.rows, seed=args.seed, mess=not args.clean)
    print(f"sample: wrote {stats.to_dict().get('total_lines', args.rows)} lines to {layout.kb_dir} (seed {args.seed})")
    return EXIT_OK


def cmd_stage(args: argparse.Namespace) -> int:
    from distillation_pipeline.defs.execute import run_pipeline
    from distillation_pipeline.reporting import print_outcome

    root = _root(args)
    _validate_time(args.recorded_at)
    outcome = run_pipeline(
        root,
        assets=args.assets,
        recorded_at=args.recorded_at,
        dry_run=args.dry_run,
        asset_config=getattr(args, "asset_config", lambda a: None)(args),
        log_level="DEBUG" if args.verbose else "WARNING",
        progress=not args.verbose,
    )
    print_outcome(outcome, root)
    return EXIT_OK if outcome.validation_passed else EXIT_FAILED_VALIDATION


def cmd_run_all(args: argparse.Namespace) -> int:
    from distillation_pipeline.defs.execute import run_pipeline
    from distillation_pipeline.lib.layout import Layout
    from distillation_pipeline.receipts.summary import finalize_run, render_summary_md, summary_path
    from distillation_pipeline.reporting import print_outcome

    root = _root(args)
    _validate_time(args.recorded_at)
    layout = Layout.at(root)
    outcome = run_pipeline(
        root,
        recorded_at=args.recorded_at,
        dry_run=args.dry_run,
        log_level="DEBUG" if args.verbose else "WARNING",
        progress=not args.verbose,
    )
    if args.dry_run:
        print_outcome(outcome, root)
        print("dry run: nothing written, no summary")
        return EXIT_OK if outcome.validation_passed else EXIT_FAILED_VALIDATION
    if not summary_path(layout, outcome.run_id).exists():
        # The graph stopped before its summary asset (a hard failure or a blocking check):
        # summarise what did run, and why the rest did not.
        finalize_run(
            layout, outcome.run_id, failed_checks=outcome.check_failures, step_failures=outcome.step_failures
        )
    finalized = _load_finalized(layout, outcome.run_id)
    print(render_summary_md(*finalized), end="")
    for failure in outcome.failures:
        print(f"FAILED {failure}")
    print(f"\nreceipts: {layout.relative(layout.run_dir(outcome.run_id))}/  (distill read --run-id {outcome.run_id})")
    return EXIT_OK if finalized[0].overall_passed else EXIT_FAILED_VALIDATION


def _load_finalized(layout, run_id: str):
    from distillation_pipeline.receipts.summary import load_summary
    from distillation_pipeline.schemas import DriftReport

    summary = load_summary(layout, run_id)
    drift = DriftReport.model_validate_json((layout.run_dir(run_id) / "drift.json").read_bytes())
    return summary, drift


def cmd_read(args: argparse.Namespace) -> int:
    from distillation_pipeline.lib.layout import Layout
    from distillation_pipeline.receipts.summary import latest_run_id, render_summary_md, summary_path, verify_outputs

    layout = Layout.at(_root(args, must_have_sources=False))
    run_id = latest_run_id(layout) if args.run_id == "latest" else args.run_id
    if run_id is None or not summary_path(layout, run_id).exists():
        raise UsageError(f"no summary for run {args.run_id!r} under {layout.runs_dir}")
    try:
        summary, drift = _load_finalized(layout, run_id)
    except ValueError as exc:
        print(f"run {run_id}: summary or drift report does not validate: {str(exc).splitlines()[0]}")
        return EXIT_FAILED_VALIDATION
    print(render_summary_md(summary, drift), end="")
    mismatches = verify_outputs(layout, summary)
    if mismatches:
        print(f"\nVERIFY: {len(mismatches)} output file(s) no longer match this run's receipts:")
        for m in mismatches:
            print(f"  {m.stage}: {m.path}: {m.problem}")
    else:
        print("\nVERIFY: every output file matches its receipt's sha256")
    return EXIT_OK if summary.overall_passed and not mismatches else EXIT_FAILED_VALIDATION


def cmd_health(args: argparse.Namespace) -> int:
    from distillation_pipeline.evidence.health import write_health_report
    from distillation_pipeline.lib.layout import Layout

    layout = Layout.at(_root(args))
    if not layout.evidence_state_file.exists():
        raise UsageError("no evidence yet: run `distill build-evidence` first")
    report = write_health_report(layout, sample=args.sample)
    print(report.render())
    print(f"written to {layout.relative(layout.health_report)}")
    return EXIT_OK if report.passed else EXIT_FAILED_VALIDATION


# ---------------------------------------------------------------------------------------------


# Young-generation threshold for a run (CPython's default is 700 allocations).
_GC_YOUNG_THRESHOLD = 20_000


def _load_pipeline() -> None:
    """Import Dagster and the pipeline definitions now, then move every object that exists
    (modules, classes, the definitions: ~200k objects) out of the garbage collector's sight:
    they live as long as the process, and each full collection during the run re-scanned them
    (~0.13 s each). And collect less often: a run allocates millions of short-lived containers
    that reference counting frees, and at the default threshold the collector ran ~700 young,
    ~60 middle and ~5 full passes over what was alive at 100k rows, ~18 full ones at 1M (each
    scanning every long-lived object the stages hold). Cycles are still collected, a few MB of
    allocations later."""
    from distillation_pipeline.defs.execute import PIPELINE_JOB_NAME, pipeline_definitions

    pipeline_definitions().resolve_job_def(PIPELINE_JOB_NAME)
    gc.freeze()
    gc.set_threshold(_GC_YOUNG_THRESHOLD, *gc.get_threshold()[1:])


def main(argv: Sequence[str] | None = None) -> int:
    # ``argv`` None: this is the process's own command (``distill``, ``python -m``), which ends
    # when this returns. Only then may it tune the process's garbage collector.
    program = argv is None
    try:
        return _main(argv, program)
    finally:
        if program:
            # At exit the interpreter runs several full collections while it tears modules
            # down (~0.8 s of CPU after a run, for objects that are freed by reference counts
            # anyway): frozen objects are not scanned. Nothing is left to collect that matters:
            # every output was written, committed and closed before this point.
            gc.freeze()


def _main(argv: Sequence[str] | None, program: bool) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse already printed one line of usage error
        return EXIT_USAGE if exc.code not in (0, None) else EXIT_OK
    if not args.verbose:
        # Dagster's beta/preview notices are for the code's authors, not for a user's terminal.
        warnings.filterwarnings("ignore", message=r".*is currently in (beta|preview)")
        # Dagster logs every event at INFO; the command prints its own summary instead.
        os.environ.setdefault("DAGSTER_CLI_LOG_LEVEL", "WARNING")
        logging.getLogger("dagster").setLevel(logging.WARNING)
    handler: Callable[[argparse.Namespace], int] = args.handler
    from distillation_pipeline.lib.locks import RootBusy

    try:
        if program and handler in (cmd_stage, cmd_run_all):
            _load_pipeline()
        return handler(args)
    except (UsageError, RootBusy) as exc:
        print(f"distill: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("distill: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # a bug or an environment problem: one line, details on request
        if args.verbose:
            raise
        print(f"distill: error: {type(exc).__name__}: {exc} (run with -v for the traceback)", file=sys.stderr)
        return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
