"""A retrieval query workload to profile: one corpus and index, many queries, nothing else.

    .venv/bin/python -m benchmarks.retrieval_queries --records 1000000 [--queries 1000] [--mode jaccard]

The synthetic corpus and the index cache are kept under ``<work>/retrieval-<records>/`` so a
second run (or the profiled one, ``benchmarks.profile --retrieval-records N``) only loads them.
Queries are made the way ``retrieval_bench.py`` makes them: a record's title and two words of
its content.
"""

import argparse
import random
import sys
import time
from pathlib import Path

import orjson

from distillation_pipeline.lib.layout import Layout
from distillation_pipeline.replay import retrieval
from distillation_pipeline.replay.synthetic import make_corpus, write_corpus

HERE = Path(__file__).resolve().parent


def prepare(records: int, work: Path, seed: int = 3) -> tuple[retrieval.CorpusIndex, list[str]]:
    root = work / f"retrieval-{records}"
    layout = Layout.at(root)
    if not layout.rag_file.exists():
        write_corpus(layout.rag_file, make_corpus(records, seed=seed, filler_size=30_000))
    index = retrieval.open_index(layout.rag_file, root / "data" / "_state" / "replay_index")
    return index, queries_from(layout.rag_file, seed)


def queries_from(corpus: Path, seed: int, count: int = 1000) -> list[str]:
    rng = random.Random(seed)
    rows = [orjson.loads(line) for line in corpus.read_bytes().splitlines()[: count * 20]]
    queries = []
    for row in rng.sample(rows, min(count, len(rows))):
        words = row["content"].split()
        queries.append(f"{row['title']} {' '.join(rng.sample(words, 2))}")
    return queries


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.retrieval_queries", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--mode", default="jaccard", choices=retrieval.MODES)
    parser.add_argument("--work", type=Path, default=HERE / "_work")
    args = parser.parse_args(argv)
    index, queries = prepare(args.records, args.work)
    times = []
    for i in range(args.queries):
        started = time.perf_counter()
        index.search(queries[i % len(queries)], k=8, mode=args.mode)
        times.append((time.perf_counter() - started) * 1000)
    if not times:
        print(f"index ready: {index.size:,} records")
        return 0
    times.sort()
    print(
        f"{args.mode}: {len(times)} queries over {index.size:,} records, p50 {times[len(times) // 2]:.2f} ms, "
        f"p95 {times[int(len(times) * 0.95)]:.2f} ms"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
