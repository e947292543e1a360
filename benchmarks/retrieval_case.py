"""The retrieval case: index build, query latency and indexed-vs-scan equality, per corpus size.

The measurement itself is ``benchmarks/retrieval_bench.py`` (owned with the replay package): it
synthesises a RAG corpus (``replay.synthetic``, RagSample rows with a Zipf tail of rare
tokens), builds and caches the index, and times the same queries in each mode against the
exhaustive Jaccard scan. Here it runs as a child process per size, so its peak RSS is measured
the same way as the pipeline's and a 1M-record corpus never lives in this process.
"""

import sys
from pathlib import Path

import orjson

from benchmarks.measure import run_measured

BENCH_MODULE = "benchmarks.retrieval_bench"


def measure_retrieval(records: int, queries: int, log_dir: Path) -> dict:
    log = log_dir / f"retrieval_{records}.log"
    command = [sys.executable, "-m", BENCH_MODULE, "--size", str(records), "--queries", str(queries)]
    process = run_measured(command, log)
    result: dict = {
        "records": records,
        "exit_code": process.returncode,
        "wall_s": round(process.wall_s, 2),
        "peak_rss_mb": round(process.peak_rss_mb, 1),
    }
    try:
        result.update(orjson.loads(log.read_bytes()))
    except orjson.JSONDecodeError:
        result["error"] = f"no JSON report from {BENCH_MODULE}; see {log} and {log}.stderr"
        return result
    # retrieval_bench exits 1 when some indexed top K differs from the scan's: that is a finding
    # to report (``indexed_equals_exact``), not a harness failure.
    result["topk_equals_scan"] = _all_equal(result.get("indexed_equals_exact"))
    return result


def _all_equal(ratio: str | None) -> bool | None:
    if not ratio or "/" not in ratio:
        return None
    matched, total = ratio.split("/")
    return matched == total
