"""A/B: the real local model with and without retrieval, on tasks drawn from a RAG corpus.

    .venv/bin/python benchmarks/replay_ab.py [--tasks 20] [--corpus-size 400] [--base-url URL]

Without ``--base-url`` it starts the embedded server (SmolLM2-135M-Instruct on llama.cpp) on a free
loopback port. The corpus is synthetic (``replay.synthetic``) in a temporary root until the
pipeline's own ``exports/rag/playbooks.jsonl`` is used (``--root`` points at a real one: tasks are
then drawn from its accepted records). The task records are held out of the corpus, so retrieval
finds related playbooks, not the answer itself.

Per arm: gate pass rate, and mean checklist overlap. The no-retrieval arm has no checklist of its
own (its gate marks the overlap check not applicable), so both arms' answers are scored against
the checklist the retrieval arm retrieved for the same task: the same yardstick for both.
Every run is a real ``run_replay`` and lands in the temporary root's replay log.
"""

import argparse
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

import orjson

from distillation_pipeline.lib.layout import Layout
from distillation_pipeline.replay.client import ChatClient
from distillation_pipeline.replay.gate import checklist_overlap
from distillation_pipeline.replay.model_server import MODEL_ALIAS, start_server
from distillation_pipeline.replay.runner import run_replay
from distillation_pipeline.replay.synthetic import make_corpus, write_corpus
from distillation_pipeline.schemas import RagSample


def draw_tasks(records: list[RagSample], count: int, seed: int) -> tuple[list[RagSample], list[RagSample]]:
    """``count`` accepted records as tasks (held out), and the corpus without them."""
    accepted = [record for record in records if record.source_category == "accepted"]
    chosen = random.Random(seed).sample(accepted, count)
    held = {record.id for record in chosen}
    return chosen, [record for record in records if record.id not in held]


def run_ab(base_url: str, root: Path, tasks: list[RagSample], max_tokens: int) -> dict:
    layout = Layout.at(root)
    client = ChatClient(base_url, MODEL_ALIAS, timeout_s=120)
    rows = []
    for number, record in enumerate(tasks, 1):
        task = record.title
        grounded = run_replay(task, layout, client, local_only=True, max_tokens=max_tokens, task_id=record.task_id)
        baseline = run_replay(
            task, layout, client, local_only=True, no_retrieval=True, max_tokens=max_tokens, task_id=record.task_id
        )
        reference = grounded.bundle.checklist
        rows.append(
            {
                "task": task,
                "checklist_steps": len(reference),
                "with_passed": grounded.validation_passed,
                "without_passed": baseline.validation_passed,
                "with_overlap": checklist_overlap(grounded.output, reference) or 0.0,
                "without_overlap": checklist_overlap(baseline.output, reference) or 0.0,
                "with_failed": [c.name for c in grounded.calls[-1].gate if not c.passed],
                "without_failed": [c.name for c in baseline.calls[-1].gate if not c.passed],
                "with_latency_ms": grounded.latency_ms,
                "without_latency_ms": baseline.latency_ms,
            }
        )
        print(
            f"[{number:2d}/{len(tasks)}] with: {'pass' if grounded.validation_passed else 'FAIL'} "
            f"overlap {rows[-1]['with_overlap']:.2f} | without: {'pass' if baseline.validation_passed else 'FAIL'} "
            f"overlap {rows[-1]['without_overlap']:.2f} | {task}",
            file=sys.stderr,
        )
    n = len(rows)
    return {
        "tasks": n,
        "with_retrieval": {
            "gate_pass_rate": sum(r["with_passed"] for r in rows) / n,
            "mean_checklist_overlap": round(statistics.fmean(r["with_overlap"] for r in rows), 4),
            "median_latency_ms": round(statistics.median(r["with_latency_ms"] for r in rows), 1),
        },
        "without_retrieval": {
            "gate_pass_rate": sum(r["without_passed"] for r in rows) / n,
            "mean_checklist_overlap": round(statistics.fmean(r["without_overlap"] for r in rows), 4),
            "median_latency_ms": round(statistics.median(r["without_latency_ms"] for r in rows), 1),
        },
        "rows": rows,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=20)
    parser.add_argument("--corpus-size", type=int, default=400)
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--max-tokens", type=int, default=160)
    parser.add_argument("--base-url", default=None, help="an already running OpenAI-compatible server")
    parser.add_argument("--root", default=None, help="a root whose exports/rag/playbooks.jsonl to use")
    parser.add_argument("--out", default=None, help="write the full result as JSON here")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="replay-ab-") as tmp:
        root = Path(tmp)
        if args.root:
            source = Layout.at(args.root).rag_file
            records = [RagSample.model_validate_json(line) for line in source.read_bytes().splitlines() if line.strip()]
        else:
            records = make_corpus(args.corpus_size, seed=args.seed)
        tasks, corpus = draw_tasks(records, args.tasks, args.seed)
        write_corpus(Layout.at(root).rag_file, corpus)
        started = time.perf_counter()
        if args.base_url:
            result = run_ab(args.base_url, root, tasks, args.max_tokens)
        else:
            with start_server() as server:
                result = run_ab(server.base_url, root, tasks, args.max_tokens)
        result["corpus_records"] = len(corpus)
        result["wall_s"] = round(time.perf_counter() - started, 1)
    summary = {key: value for key, value in result.items() if key != "rows"}
    print(orjson.dumps(summary, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS).decode())
    if args.out:
        Path(args.out).write_bytes(orjson.dumps(result, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS))
    return 0


if __name__ == "__main__":
    sys.exit(main())
