"""A synthetic RAG corpus of playbook records, for tests and benchmarks.

Until the pipeline's own exports are the replay corpus everywhere, retrieval and the A/B need
a corpus shaped like ``exports/rag/playbooks.jsonl``: ``RagSample`` rows about engineering tasks
on a platform's components, with approach, changed file, validation steps (``Verify ...``,
``Check ...``) and outcome. Seeded, so the same arguments give the same bytes.

``filler_vocabulary`` adds Zipf-distributed rare tokens, so a 100k-record corpus has the long
tail of identifiers a real one has (posting lists of every length), not 300 words repeated.
"""

import random
from datetime import UTC, datetime
from pathlib import Path

from distillation_pipeline.lib.atomic import atomic_writer
from distillation_pipeline.lib.hashing import sha256_hex
from distillation_pipeline.lib.jsonl import dumps_line
from distillation_pipeline.schemas import ExportProvenance, RagSample

COMPONENTS = {
    "gateway": ("crates/gateway/src/main.rs", ["routing", "upstream", "headers", "tls"]),
    "provider router": ("crates/router/src/providers.rs", ["provider", "fallback", "openrouter", "adapter"]),
    "auth service": ("services/auth/tokens.py", ["token", "session", "expiry", "refresh"]),
    "billing worker": ("services/billing/worker.py", ["invoice", "ledger", "currency", "idempotency"]),
    "scheduler": ("services/scheduler/cron.py", ["cron", "lease", "backlog", "jitter"]),
    "vector index": ("crates/vectors/src/hnsw.rs", ["embedding", "hnsw", "recall", "shard"]),
    "ingest pipeline": ("services/ingest/reader.py", ["batch", "offset", "schema", "backpressure"]),
    "cache layer": ("services/cache/store.py", ["eviction", "ttl", "stampede", "warmup"]),
    "webhook relay": ("services/webhooks/relay.py", ["signature", "delivery", "retry", "dead_letter"]),
    "audit log": ("services/audit/log.py", ["append", "retention", "tamper", "export"]),
    "rate limiter": ("crates/limits/src/bucket.rs", ["bucket", "burst", "quota", "window"]),
    "config loader": ("services/config/loader.py", ["yaml", "override", "defaults", "secrets"]),
    "migration runner": ("services/db/migrate.py", ["migration", "rollback", "lock", "version"]),
    "search api": ("services/search/api.py", ["query", "pagination", "ranking", "filter"]),
    "notification queue": ("services/notify/queue.py", ["queue", "fanout", "ack", "redelivery"]),
    "circuit breaker": ("crates/gateway/src/breaker.rs", ["breaker", "threshold", "half_open", "failure_rate"]),
}
ACTIONS = (
    "fix flaky retry in",
    "add a circuit breaker to",
    "audit timeout handling in",
    "migrate the configuration of",
    "add metrics to",
    "harden input validation in",
    "remove dead code from",
    "document the error codes of",
    "speed up startup of",
    "add pagination to",
)
CHECK_VERBS = ("Verify", "Check", "Ensure", "Confirm", "Assert")
CHECK_TEMPLATES = (
    "{verb} the {a} path returns an error instead of hanging when {b} fails",
    "{verb} {file} has a unit test for the {a} case",
    "{verb} the {b} metric is exported and non-zero after a run",
    "{verb} the {a} and {b} settings are read from config, not hard-coded",
    "{verb} no request to {component} is retried more than 3 times",
)
PARTIAL_NOTES = (
    "Accepted on attempt {n}: the first patch skipped the {a} case and broke {b}.",
    "Merged after review asked for a test of {a}; the {b} change was reverted.",
)


def filler_vocabulary(size: int, seed: int = 7) -> list[str]:
    rng = random.Random(seed)
    letters = "bcdfghjklmnpqrstvwxz"
    vowels = "aeiou"
    words: set[str] = set()
    while len(words) < size:
        length = rng.randint(2, 4)
        words.add("".join(rng.choice(letters) + rng.choice(vowels) for _ in range(length)))
    return sorted(words)


def make_record(index: int, rng: random.Random, filler: list[str] | None = None) -> RagSample:
    component = rng.choice(sorted(COMPONENTS))
    file, words = COMPONENTS[component]
    a, b = rng.sample(words, 2)
    action = rng.choice(ACTIONS)
    category = "accepted" if rng.random() < 0.7 else "partially_accepted"
    checks = [
        template.format(verb=rng.choice(CHECK_VERBS), a=a, b=b, file=file, component=component)
        for template in rng.sample(CHECK_TEMPLATES, 2)
    ]
    lines = [
        f"Task: {action} {component}.",
        f"Approach: changed how {component} handles {a} and {b}, keeping the {rng.choice(words)} behaviour.",
        f"Changed {file}.",
        *checks,
    ]
    if category == "partially_accepted":
        lines.append(rng.choice(PARTIAL_NOTES).format(n=rng.randint(2, 3), a=a, b=b))
    else:
        lines.append(f"Outcome: accepted on the first attempt; {a} and {b} covered by tests.")
    if filler:
        # Skewed towards low ranks (density ~ rank^-3/4): a few common words, a long tail of rare ones.
        picks = {filler[int(len(filler) * rng.random() ** 4)] for _ in range(8)}
        lines.append("Notes: " + " ".join(sorted(picks)))
    content = "\n".join(lines)
    record_id = f"rag:{index:07d}"
    sig = sha256_hex(record_id.encode())
    return RagSample(
        id=record_id,
        created_at=datetime(2026, 1, 1, tzinfo=UTC),
        task_id=f"task-{index:07d}",
        title=f"{action} {component}".capitalize(),
        content=content,
        source_category=category,
        cited_paths=[file],
        provenance=ExportProvenance(
            evidence_id=f"scrum_reviews:{sig[:20]}",
            scored_run_id=f"scrum_reviews:{sig[:20]}",
            stream="scrum_reviews",
            source_file="data/_kb/scrum_reviews.jsonl",
            line_offset=index,
            sig_hash=sig,
            scorer_version="synthetic",
        ),
    )


def make_corpus(size: int, seed: int = 1, filler_size: int = 0) -> list[RagSample]:
    rng = random.Random(seed)
    filler = filler_vocabulary(filler_size, seed) if filler_size else None
    return [make_record(i, rng, filler) for i in range(size)]


def write_corpus(path: Path, records: list[RagSample]) -> None:
    with atomic_writer(path) as handle:
        for record in records:
            handle.write(dumps_line(record.model_dump(mode="json")))
