"""Benchmark the pipeline from 10k to 1M rows (issue 7): the one command.

    .venv/bin/python -m benchmarks.run [--sizes 10000,100000,1000000] [--work DIR]
                                       [--skip-incremental] [--skip-retrieval] [--out DIR]

For each size: generate a substrate (seed 7) into ``<work>/<size>/``, measure the floor on its
bytes, run ``distill run-all`` as a child process (wall, CPU, peak RSS; per-stage seconds and
rows from the receipts) and size the outputs. Then, at the largest size, append 1 % new rows,
run again, rebuild the final sources from scratch and compare the trees byte for byte. Then
the retrieval case at 10k, 100k and 1M RAG records. Writes ``results.json``, ``results.md``,
``time_vs_size.png`` and ``memory_vs_size.png`` into ``--out`` (default ``benchmarks/``).
Targets are reported as met or missed; nothing here asserts on time.
"""

import argparse
import os
import platform
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from benchmarks.compare import compare_trees
from benchmarks.floor import measure_floor
from benchmarks.pipeline_run import RECORDED_AT, PipelineRun, output_sizes, run_all, source_files
from benchmarks.report import write_all
from benchmarks.retrieval_case import measure_retrieval
from benchmarks.substrate import SEED, append_increment, copy_sources, generate
from distillation_pipeline.lib.layout import Layout

HERE = Path(__file__).resolve().parent
DEFAULT_SIZES = "10000,100000,1000000"
INCREMENT_SHARE = 0.01


def _sizes(text: str) -> list[int]:
    try:
        sizes = sorted({int(part.replace("_", "")) for part in text.split(",") if part.strip()})
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated row counts, got {text!r}") from None
    if not sizes or sizes[0] < 1:
        raise argparse.ArgumentTypeError("sizes must be positive row counts")
    return sizes


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--sizes", type=_sizes, default=_sizes(DEFAULT_SIZES), help=f"source rows (default {DEFAULT_SIZES})"
    )
    parser.add_argument(
        "--work", type=Path, default=HERE / "_work", help="scratch roots (default benchmarks/_work, git-ignored)"
    )
    parser.add_argument("--out", type=Path, default=HERE, help="where results.* and the plots go (default benchmarks/)")
    parser.add_argument("--skip-incremental", action="store_true")
    parser.add_argument("--skip-retrieval", action="store_true")
    parser.add_argument("--retrieval-sizes", type=_sizes, default=_sizes(DEFAULT_SIZES), help="RAG records")
    parser.add_argument("--retrieval-queries", type=int, default=200)
    return parser


def log(message: str) -> None:
    print(f"[{datetime.now().strftime('%H:%M:%S')}] {message}", flush=True)


def machine_info() -> dict:
    memory_mb = None
    try:
        with open("/proc/meminfo") as handle:
            memory_mb = int(handle.readline().split()[1]) // 1024  # MemTotal, kB
    except (OSError, ValueError, IndexError):
        pass
    return {
        "cpus": os.cpu_count(),
        "memory_mb": memory_mb,
        "platform": platform.platform(terse=True),
        "python": platform.python_version(),
        "load_at_start": [round(x, 2) for x in os.getloadavg()],
    }


def measure_startup() -> float:
    """Interpreter plus Dagster definitions import: the fixed cost every ``distill`` call pays."""
    best = float("inf")
    for _ in range(2):  # the first may pay for a cold page cache
        started = time.perf_counter()
        subprocess.run([sys.executable, "-c", "import distillation_pipeline.definitions"], check=True)
        best = min(best, time.perf_counter() - started)
    return round(best, 3)


def bench_size(rows: int, work: Path) -> tuple[dict, PipelineRun]:
    root = work / str(rows)
    log(f"{rows:,} rows: generating substrate in {root}")
    substrate = generate(root, rows)
    log(
        f"{rows:,} rows: {substrate['source_lines']:,} source lines in {substrate['generate_s']} s; measuring the floor"
    )
    floor = measure_floor(source_files(Layout.at(root)), work / f"{rows}-floor")
    log(f"{rows:,} rows: floor {floor.seconds:.2f} s; running distill run-all")
    run = run_all(root, work / "logs" / f"run-all_{rows}_full.log")
    wall, peak = run.process.wall_s, run.process.peak_rss_mb
    log(f"{rows:,} rows: run-all {wall:.1f} s (stages {run.stage_seconds:.1f} s), peak RSS {peak:.0f} MB")
    entry = {
        "rows": rows,
        "substrate": substrate,
        "floor": floor.to_dict(),
        "pipeline": run.to_dict(),
        "ratio_to_floor": round(wall / floor.seconds, 2),
        "stage_ratio_to_floor": round(run.stage_seconds / floor.seconds, 2),
        "cpu_ratio_to_floor": round(run.process.cpu_s / floor.cpu_s, 2),
        "output_bytes": output_sizes(root),
    }
    return entry, run


def bench_incremental(rows: int, full: PipelineRun, work: Path) -> dict:
    root = work / str(rows)
    new_rows = max(1, int(rows * INCREMENT_SHARE))
    log(f"incremental: appending ~{new_rows:,} rows to {root}")
    increment = append_increment(root, new_rows, scratch=work / "increment-scratch")
    run = run_all(root, work / "logs" / f"run-all_{rows}_incremental.log")
    log(f"incremental: run-all {run.process.wall_s:.1f} s; full rebuild of the final sources")
    rebuild_root = work / f"{rows}-rebuild"
    copy_sources(root, rebuild_root)
    rebuild = run_all(rebuild_root, work / "logs" / f"run-all_{rows}_rebuild.log")
    comparison = compare_trees(root, rebuild_root)
    verdict = "identical" if comparison["identical"] else "DIFFER"
    log(f"incremental: rebuild {rebuild.process.wall_s:.1f} s; outputs {verdict}")
    return {
        "rows": rows,
        "increment": increment,
        "full": full.to_dict(),
        "run": run.to_dict(),
        "rebuild": rebuild.to_dict(),
        "share_of_full": round(run.process.wall_s / full.process.wall_s, 4),
        "stage_share_of_full": round(run.stage_seconds / full.stage_seconds, 4),
        "cpu_share_of_full": round(run.process.cpu_s / full.process.cpu_s, 4),
        "comparison": comparison,
    }


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser().parse_args(argv)
    args.work.mkdir(parents=True, exist_ok=True)
    args.out.mkdir(parents=True, exist_ok=True)
    results: dict = {
        "command": " ".join([".venv/bin/python -m benchmarks.run", *argv]),
        "generated_at": datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
        "machine": machine_info(),
        "seed": SEED,
        "recorded_at": RECORDED_AT,
        "startup_s": measure_startup(),
        "sizes": [],
        "incremental": None,
        "retrieval": [],
    }
    full_runs: dict[int, PipelineRun] = {}
    for rows in args.sizes:
        entry, full_runs[rows] = bench_size(rows, args.work)
        results["sizes"].append(entry)
        write_all(results, args.out)  # a long run leaves readable partial results behind

    if not args.skip_incremental:
        largest = args.sizes[-1]
        results["incremental"] = bench_incremental(largest, full_runs[largest], args.work)
        write_all(results, args.out)

    if not args.skip_retrieval:
        for records in args.retrieval_sizes:
            log(f"retrieval: {records:,} RAG records")
            results["retrieval"].append(measure_retrieval(records, args.retrieval_queries, args.work / "logs"))
            write_all(results, args.out)

    write_all(results, args.out)
    log(f"wrote {args.out / 'results.md'}")
    for target in results["targets"]:
        log(f"{'met    ' if target['met'] else 'MISSED '} {target['target']}: {target['measured']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
