"""The platform repository the sample logs talk about: a manifest of real paths, and fakes.

Tasks cite files from the manifest (``repo_files.txt``). A small share of citations point at
plausible paths that are *not* in it, the way a model invents ``router_v2.rs``: that is what
the exporters' hallucination check has to catch.
"""

import random
from dataclasses import dataclass

# Components of the platform. Each task belongs to one, so the files it cites hang together.
RUST_CRATES = {
    "gateway": ["main", "routes", "provider_adapter", "circuit_breaker", "v1_state", "chat", "stream", "auth",
                "errors", "config", "metrics", "pr_audit"],
    "router": ["lib", "routing_table", "openrouter", "failover", "retry_budget", "rate_limiter", "provider", "health",
               "weights"],
    "vectors": ["lib", "hnsw", "index", "search", "embedding_cache", "rebuild", "shard", "quantize"],
    "lakehouse-core": ["lib", "answers_v1", "schema", "catalog", "ingest", "compaction", "snapshot"],
    "auditor": ["main", "claims", "evidence", "findings", "phase_gate", "report", "drift"],
    "telemetry": ["lib", "spans", "exporter", "sampler", "token_accounting"],
    "scheduler": ["lib", "queue", "lease", "cron", "backoff", "worker"],
    "sandbox": ["lib", "jail", "limits", "fs_snapshot", "exec"],
}
PYTHON_SERVICES = {
    "router": ["provider_adapter", "routing_table", "fallback", "budget", "app", "settings"],
    "observer": ["observer", "verdicts", "escalation_policy", "cycle_detector", "app", "settings"],
    "scrum_master": ["pipeline", "retry_loop", "review_prompt", "attempts", "app"],
    "auto_apply": ["apply", "revert_guard", "build_check", "test_runner", "git_ops"],
    "embeddings": ["encoder", "batcher", "cache", "app"],
    "distiller": ["extract_facts", "extract_procedures", "config_hints", "dedupe"],
    "notifier": ["slack", "email", "digest", "templates", "app"],
    "billing": ["usage", "invoices", "token_prices", "exports", "app"],
    "webhooks": ["github", "gitlab", "signatures", "replay_queue", "app"],
}
TS_AREAS = {
    "scripts/distillation": ["replay", "distill", "score_runs", "export_rag", "export_sft", "export_preference",
                             "receipts", "quarantine", "build_evidence_index", "check_evidence_health"],
    "auditor/schemas/distillation": ["stage_receipt", "run_summary", "drift_report", "evidence_record", "scored_run",
                                     "rag_sample", "sft_sample", "preference_sample"],
    "ui/src/components": ["RunTable", "DriftBadge", "ReceiptView", "TaskTimeline", "ModelLedger", "QuarantineList"],
}
DOCS = [
    "docs/PRD.md", "docs/ARCHITECTURE.md", "docs/SECURITY.md", "docs/ROADMAP.md", "docs/GLOSSARY.md",
    "docs/runbooks/provider-outage.md", "docs/runbooks/circuit-breaker.md", "docs/runbooks/index-rebuild.md",
    "docs/runbooks/auto-apply-revert.md", "docs/runbooks/escalation.md",
]
ROOT_FILES = [
    "README.md", "Cargo.toml", "Cargo.lock", "Makefile", "pyproject.toml", "package.json",
    "config/gateway.toml", "config/router.toml", "config/observer.yaml", "config/auditor.yaml",
    "config/providers/openrouter.yaml", "config/providers/ollama.yaml", "config/providers/deepseek.yaml",
    ".github/workflows/ci.yml", ".github/workflows/nightly.yml", ".github/workflows/audit.yml",
]
# Always in the manifest: the paths the prototype's own notes cite.
CORE_FILES = ["crates/gateway/src/main.rs", "services/router/provider_adapter.py", "docs/PRD.md"]


@dataclass(frozen=True)
class Repo:
    files: tuple[str, ...]  # sorted, as written to repo_files.txt
    by_component: dict[str, tuple[str, ...]]  # the files tasks talk about: code and docs, not fixtures
    hallucinated: tuple[str, ...]  # plausible paths guaranteed absent from ``files``

    @property
    def components(self) -> tuple[str, ...]:
        return tuple(self.by_component)


def build_repo(rng: random.Random, size: int) -> Repo:
    """A manifest of about ``size`` paths (a few hundred to a few thousand), grouped by component."""
    candidates = _all_candidate_paths()
    keep = set(CORE_FILES) | set(ROOT_FILES) | set(DOCS)
    optional = sorted(set(candidates) - keep)
    keep |= set(rng.sample(optional, max(0, min(len(optional), size - len(keep)))))
    files = tuple(sorted(keep))
    return Repo(files, _group_by_component(files), _hallucinations(rng, files))


def _all_candidate_paths() -> list[str]:
    paths: list[str] = []
    for crate, modules in RUST_CRATES.items():
        base = f"crates/{crate}"
        paths += [f"{base}/Cargo.toml", f"{base}/README.md"]
        for module in modules:
            paths.append(f"{base}/src/{module}.rs")
            paths.append(f"{base}/tests/{module}_test.rs")
            paths.append(f"{base}/benches/{module}_bench.rs")
            for sub in ("mod", "types", "tests", "error", "builder", "config"):
                paths.append(f"{base}/src/{module}/{sub}.rs")
    for service, modules in PYTHON_SERVICES.items():
        base = f"services/{service}"
        paths += [f"{base}/__init__.py", f"{base}/pyproject.toml", f"{base}/README.md"]
        for module in modules:
            paths.append(f"{base}/{module}.py")
            paths.append(f"{base}/tests/test_{module}.py")
            paths += [f"{base}/tests/fixtures/{module}/case_{case}.json" for case in range(1, 7)]
    for area, modules in TS_AREAS.items():
        for module in modules:
            suffix = ".tsx" if area.startswith("ui/") else ".ts"
            paths.append(f"{area}/{module}{suffix}")
            test_dir = area.replace("scripts/", "tests/").replace("auditor/schemas/", "tests/schemas/")
            paths.append(f"{test_dir}/{module}.test{suffix}")
    paths += [f"docs/phases/phase-{phase:02d}.md" for phase in range(1, 46)]
    paths += [f"docs/adr/{n:04d}-{slug}.md" for n, slug in enumerate(
        ["record-architecture", "jsonl-evidence", "deterministic-scoring", "contamination-firewall",
         "local-first-replay", "openrouter-fallback", "hnsw-retrieval", "receipts-everywhere"], start=1)]
    paths += [f"reports/distillation/phase{phase}-report.md" for phase in range(1, 9)]
    return paths + DOCS + ROOT_FILES


def _component_of(path: str) -> str:
    parts = path.split("/")
    if parts[0] in ("crates", "services") and len(parts) > 2:
        return parts[1]
    if parts[0] in ("scripts", "auditor", "ui", "tests"):
        return "distillation"
    return "platform"  # docs, config, root files: cited by every kind of task


def _group_by_component(files: tuple[str, ...]) -> dict[str, tuple[str, ...]]:
    groups: dict[str, list[str]] = {}
    for path in files:
        if "/fixtures/" not in path and not path.endswith(".lock"):
            groups.setdefault(_component_of(path), []).append(path)
    return {name: tuple(paths) for name, paths in sorted(groups.items())}


def _hallucinations(rng: random.Random, files: tuple[str, ...]) -> tuple[str, ...]:
    """Paths a model plausibly invents: a versioned twin, a wrong extension, a missing crate."""
    real = set(files)
    invented = {
        mutate(path)
        for path in files
        if "/fixtures/" not in path  # models invent source files, not test fixtures
        for mutate in (_versioned, _wrong_extension, _pluralised_dir, _legacy_dir)
    }
    invented |= {"crates/gatewayd/src/main.rs", "services/router/provider_adapters.py", "docs/PRD_v2.md",
                 "crates/router/src/routing_table_v2.rs", "services/observer/verdict_cache.py"}
    pool = sorted(invented - real)
    return tuple(rng.sample(pool, min(len(pool), 200)))


def _versioned(path: str) -> str:
    stem, dot, ext = path.rpartition(".")
    return f"{stem}_v2.{ext}" if dot else f"{path}_v2"


def _wrong_extension(path: str) -> str:
    swaps = {".rs": ".py", ".py": ".rs", ".ts": ".js", ".md": ".rst", ".toml": ".yaml", ".yaml": ".yml"}
    for ext, other in swaps.items():
        if path.endswith(ext):
            return path[: -len(ext)] + other
    return path + ".bak"


def _pluralised_dir(path: str) -> str:
    head, _, name = path.rpartition("/")
    return f"{head}s/{name}" if head and not head.endswith("s") else f"{head}/{name}s"


def _legacy_dir(path: str) -> str:
    head, _, name = path.rpartition("/")
    return f"{head}/legacy/{name}" if head else f"legacy/{name}"
