"""Profile a full ``distill run-all`` (and optionally the incremental run after it) with py-spy.

    .venv/bin/python -m benchmarks.profile --rows 1000000 [--incremental] [--native] [--rate 50]
    .venv/bin/python -m benchmarks.profile --retrieval-records 1000000   # the query path, line by line

Generates a fresh substrate (seed 7) in ``<work>/profile-<rows>/``, runs the pipeline under
``py-spy record`` (sampling from outside the process: no instrumentation overhead), and writes
into ``benchmarks/profiles/``: the collapsed stacks, a flame graph SVG, and a markdown summary
of self and inclusive time per asset and function (``flamegraph.py``). ``--retrieval-records``
profiles replay's query path instead (``retrieval_queries.py``), line by line in
``replay/retrieval.py``.
"""

import argparse
import gzip
import os
import shutil
import subprocess
import sys
from pathlib import Path

from benchmarks.flamegraph import read_collapsed, render_lines, render_summary, write_svg
from benchmarks.pipeline_run import RECORDED_AT
from benchmarks.substrate import append_increment, generate

HERE = Path(__file__).resolve().parent


def py_spy() -> str:
    found = shutil.which("py-spy", path=str(Path(sys.executable).parent)) or shutil.which("py-spy")
    if not found:
        raise SystemExit("py-spy is not installed: .venv/bin/pip install py-spy")
    return found


def record(root: Path, out_dir: Path, label: str, rate: int, native: bool) -> Path:
    collapsed = out_dir / f"{label}.collapsed.txt"
    env = dict(os.environ, DAGSTER_HOME=str(root / ".dagster_home"))
    env.pop("DISTILL_DAGSTER_INSTANCE", None)
    command = [
        py_spy(), "record", "--format", "raw", "--function", "--rate", str(rate), "-o", str(collapsed),
        "--subprocesses",  # collect, score, the export and the checks split work over worker processes
        *(["--native"] if native else []),
        "--", sys.executable, "-m", "distillation_pipeline.cli", "run-all",
        "--root", str(root), "--recorded-at", RECORDED_AT,
    ]  # fmt: skip
    log = out_dir / f"{label}.log"
    with open(log, "wb") as handle:
        subprocess.run(command, stdout=handle, stderr=subprocess.STDOUT, check=False)
    if not collapsed.exists():
        raise SystemExit(f"py-spy wrote no profile; see {log}")
    profile = read_collapsed(collapsed)
    title = f"distill run-all, {label}"
    write_svg(profile, out_dir / f"{label}.svg", title)
    (out_dir / f"{label}.md").write_text(render_summary(profile, title))
    compress(collapsed)
    return out_dir / f"{label}.md"


def record_retrieval(records: int, queries: int, work: Path, out_dir: Path, rate: int) -> Path:
    driver = [sys.executable, "-m", "benchmarks.retrieval_queries", "--records", str(records), "--work", str(work)]
    subprocess.run([*driver, "--queries", "0"], check=True)  # build corpus and index cache, unprofiled
    label = f"retrieval_{records}_queries"
    collapsed = out_dir / f"{label}.collapsed.txt"
    command = [
        py_spy(),
        "record",
        "--format",
        "raw",
        "--rate",
        str(rate),
        "-o",
        str(collapsed),
        "--",
        *driver,
        "--queries",
        str(queries),
    ]
    with open(out_dir / f"{label}.log", "wb") as handle:
        subprocess.run(command, stdout=handle, stderr=subprocess.STDOUT, check=True)
    profile = read_collapsed(collapsed)
    write_svg(profile, out_dir / f"{label}.svg", f"retrieval queries, {records:,} records")
    summary = render_lines(
        profile,
        f"Jaccard queries over {records:,} records, by line of replay/retrieval.py",
        "replay/retrieval.py",
        within="CorpusIndex.search",
    )
    (out_dir / f"{label}.md").write_text(summary)
    compress(collapsed)
    return out_dir / f"{label}.md"


def compress(collapsed: Path) -> None:
    """Keep the raw stacks (``flamegraph.read_collapsed`` reads them back), gzipped: ~10x smaller."""
    collapsed.with_name(collapsed.name + ".gz").write_bytes(gzip.compress(collapsed.read_bytes()))
    collapsed.unlink()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.profile", description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--work", type=Path, default=HERE / "_work")
    parser.add_argument("--out", type=Path, default=HERE / "profiles")
    parser.add_argument("--rate", type=int, help="samples per second (default 50; 500 for --retrieval-records)")
    parser.add_argument("--native", action="store_true", help="include native frames (orjson, pydantic-core)")
    parser.add_argument("--incremental", action="store_true", help="also profile a run after appending 1 %% rows")
    parser.add_argument(
        "--retrieval-records", type=int, help="profile retrieval queries over this many records instead"
    )
    parser.add_argument("--queries", type=int, default=2000, help="queries in the retrieval profile")
    args = parser.parse_args(argv)

    args.out.mkdir(parents=True, exist_ok=True)
    if args.retrieval_records:
        print(f"wrote {record_retrieval(args.retrieval_records, args.queries, args.work, args.out, args.rate or 500)}")
        return 0
    rate = args.rate or 50
    root = args.work / f"profile-{args.rows}"
    generate(root, args.rows)
    print(f"wrote {record(root, args.out, f'run-all_{args.rows}_full', rate, args.native)}", flush=True)
    if args.incremental:
        append_increment(root, max(1, args.rows // 100), scratch=args.work / "increment-scratch")
        print(f"wrote {record(root, args.out, f'run-all_{args.rows}_incremental', rate, args.native)}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
