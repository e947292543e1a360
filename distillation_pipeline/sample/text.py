"""The words of the sample logs: tasks, reviews, audit evidence, patches, procedures.

Every builder takes the random source and a ``cite`` callable that returns a repository path
(usually real, sometimes invented), so the caller decides and counts hallucinations. The
vocabulary follows the platform the prototype's notes describe: a Rust gateway and router, Python
services, a provider fallback chain, phase audits against a PRD.
"""

import random
from collections.abc import Callable

Cite = Callable[[], str]

SUBJECTS = (
    "provider routing", "circuit breaker", "pr_audit mode", "retry budget", "rate limiter",
    "token accounting", "ProviderAdapter fallback", "V1State migration", "openrouter failover",
    "/v1/chat streaming", "embedding cache", "HNSW index rebuild", "auditor claim checks",
    "scrum retry loop", "lakehouse_answers_v1 schema", "observer escalation policy",
    "auto-apply revert guard", "build cache invalidation", "secret redaction", "playbook retrieval",
    "health probes", "request tracing", "config reload", "snapshot compaction",
)
TASK_TEMPLATES = (
    "Audit phase {phase} {subject}",
    "Verify {subject} wired in {component}",
    "Audit phase {phase} PRD {subject} drift",
    "Fix {subject} regression in {component}",
    "Review {component} {subject} patch",
    "Add tests for {subject} in {component}",
    "Refactor {component} {subject}",
    "Investigate {subject} failures after phase {phase}",
    "Harden {subject} in {component}",
    "Document {subject} for the {component} runbook",
)
SYMBOLS = (
    "ProviderAdapter", "V1State", "CircuitBreaker", "RetryBudget", "RoutingTable", "RateLimiter",
    "HnswIndex", "EmbeddingCache", "AnswerSchemaV1", "PhaseGate", "ClaimChecker", "RevertGuard",
    "TokenLedger", "EscalationPolicy", "CycleDetector", "ChatStream", "HealthProbe",
)
MODELS = (
    "qwen3.5:latest", "qwen3.5:latest", "deepseek-v3.1:671b", "gpt-oss:20b", "llama3.3:70b",
    "mistral-small3.2:24b", "openrouter/anthropic/claude-sonnet-4", "openrouter/google/gemini-2.5-pro",
)
PROBLEMS = (
    "missing error handling on the openrouter 429 path",
    "the breaker never transitions to half-open",
    "the timeout is hard-coded to 30s instead of read from config",
    "the unit tests mock the provider and never exercise the fallback",
    "the retry loop ignores the retry budget",
    "the schema change is not versioned",
    "the index rebuild holds the write lock for the whole rebuild",
    "token accounting double counts streamed chunks",
    "the route is registered but unreachable behind the auth middleware",
    "the patch silences the failing assertion instead of fixing it",
    "the fallback swallows the provider error and returns an empty answer",
    "health probes hit the provider on every request",
)
GOOD_CHANGES = (
    "moves the provider timeout into config and covers the 429 path with a test",
    "adds the half-open state with a single probe request and a cooldown",
    "keeps the old V1State reader behind a feature flag until the migration finishes",
    "charges streamed chunks once, at stream end, with a regression test",
    "bounds retries by the shared retry budget and logs when it is exhausted",
    "versions the answer schema and keeps lakehouse_answers_v1 readable",
    "rebuilds the index into a sibling directory and swaps it atomically",
    "registers the route before the auth middleware and adds an integration test",
)
FABRICATIONS = (
    "the production routing table maps every provider to placeholder codes P99999 and Z99999",
    "the breaker reports a 0.0% failure rate against a 5.0% threshold, so the phase passes",
    "all providers already share one retry budget, no change needed",
    "the index is rebuilt incrementally, so no lock is taken",
)
RESOLUTIONS = (
    "fixed", "fixed in follow-up", "accepted risk", "open", "deferred to phase {next}",
    "wontfix: superseded by phase {next}", "duplicate of an earlier finding",
)
FAILURE_MARKERS = (
    "missing_test", "unbacked_claim", "timeout_not_configurable", "no_breaker_class",
    "schema_unversioned", "silent_fallback", "hedged_answer", "wrong_file_cited",
)
REQUIREMENTS = (
    "fall back to the next provider within 2 seconds of a 5xx",
    "open the breaker after 5 consecutive failures and probe after 30 seconds",
    "never retry a request more than the shared retry budget allows",
    "version every answer schema and keep the previous version readable",
    "redact credentials from every log line before it is written",
    "serve /v1/chat with streaming and report token usage at the end",
    "rebuild the vector index without blocking readers",
)
EVENT_NAMES = ("cargo_build", "cargo_test", "pytest", "lint", "typecheck", "smoke_test", "deploy_canary", "audit_gate")
EXPERIMENT_MODES = ("pr_audit", "rag", "no_retrieval", "lakehouse_answers_v1", "scrum", "observer_check")
ESCALATION_REASONS = (
    "observer rejected the local answer twice",
    "latency budget exceeded on the local model",
    "grounding below threshold after retrieval",
    "conflicting audit verdicts on the same finding",
    "patch reverted by the build check",
    "validation gate failed: answer hedged",
)
CONFIG_KEYS = (
    ("ROUTER_TIMEOUT_MS", "30000", "config/router.toml"),
    ("BREAKER_FAILURE_THRESHOLD", "5", "config/gateway.toml"),
    ("BREAKER_COOLDOWN_S", "30", "config/gateway.toml"),
    ("RETRY_BUDGET_PER_MIN", "120", "config/router.toml"),
    ("OBSERVER_MAX_CYCLES", "3", "config/observer.yaml"),
    ("AUDITOR_PHASE_GATE", "strict", "config/auditor.yaml"),
    ("OPENROUTER_FALLBACK_MODEL", "deepseek-v3.1:671b", "config/providers/openrouter.yaml"),
    ("OLLAMA_KEEP_ALIVE", "10m", "config/providers/ollama.yaml"),
)
NOTE_AUTHORS = ("j.r", "ops-bot", "m.k", "legacy-importer")


def task_text(template: int, subject: int, phase: int, component: str) -> str:
    return TASK_TEMPLATES[template].format(phase=phase, subject=SUBJECTS[subject], component=component)


def span(rng: random.Random) -> str:
    start = rng.randrange(1, 900)
    return f"L{start}-L{start + rng.randrange(3, 80)}"


# --- verdict streams ----------------------------------------------------------------------


def scrum_review(rng: random.Random, cite: Cite, task: str, attempt: int | None) -> str:
    path = cite()
    if attempt == 1:
        return (f"Reviewed {path} for '{task}'. The change {rng.choice(GOOD_CHANGES)}. "
                f"{rng.choice(SYMBOLS)} usage at {path}:{span(rng)} matches {cite()}. Accepted on attempt 1.")
    if attempt is None:
        return (f"Rejected: {rng.choice(PROBLEMS)} in {path}. Asked for a fix {rng.randrange(3, 7)} times; "
                f"each attempt reintroduced it. Never accepted.")
    return (f"Attempt 1 failed: {rng.choice(PROBLEMS)} ({path}:{span(rng)}). "
            f"Attempt {attempt} {rng.choice(GOOD_CHANGES)}. Accepted on attempt {attempt}.")


def observer_output(rng: random.Random, cite: Cite, task: str, verdict: str) -> str:
    if verdict == "reject":
        return f"{task}: {rng.choice(FABRICATIONS)}. Signed off as PASS."
    path, other = cite(), cite()
    steps = procedure_lines(rng, cite, 2)
    answer = (f"{task}: {rng.choice(SYMBOLS)} is defined at {path}:{span(rng)} and called from {other}. "
              f"The implementation {rng.choice(GOOD_CHANGES)}.\n{steps}")
    if verdict == "cycle":
        answer += f"\nOpen question: {rng.choice(PROBLEMS)}."
    return answer


def observer_notes(rng: random.Random, verdict: str) -> str:
    if verdict == "accept":
        return f"grounded in {rng.randrange(3, 6)} of {rng.randrange(6, 8)} citations"
    if verdict == "cycle":
        return f"cycled: asked for the {rng.choice(SYMBOLS)} state machine again"
    return "rejected: claims not backed by code"


def audit_evidence(rng: random.Random, cite: Cite, subject: str, severity: str | None) -> str:
    path = cite()
    symbol = rng.choice(SYMBOLS)
    if severity in ("high", "critical", "fail"):
        return (f"grep -rn '{symbol}' {path.rsplit('/', 1)[0]} returned no matches; docs/PRD.md requires "
                f"{rng.choice(REQUIREMENTS)}. Observed: {rng.choice(PROBLEMS)}.")
    if severity == "medium":
        return f"{symbol} exists at {path}:{span(rng)} but {rng.choice(PROBLEMS)}."
    return f"{symbol} at {path}:{span(rng)} satisfies the {subject} requirement; tests in {cite()} cover it."


def resolution(rng: random.Random, phase: int) -> str:
    return rng.choice(RESOLUTIONS).format(next=phase + rng.randrange(1, 4))


def contract(rng: random.Random, component: str) -> str:
    return f"{component} must {rng.choice(REQUIREMENTS)} (docs/PRD.md)."


def contract_analysis(rng: random.Random, cite: Cite, holds: bool | None) -> str:
    path = cite()
    if holds:
        return f"Holds: {path}:{span(rng)} implements it and {cite()} tests it."
    if holds is None:
        return f"Partly: {path} implements the happy path; no evidence either way for the failure path."
    return f"Violated: {rng.choice(PROBLEMS)} ({path}:{span(rng)})."


def discrepancy(rng: random.Random, cite: Cite) -> tuple[str, str]:
    symbol, path = rng.choice(SYMBOLS), cite()
    claim = f"{symbol} is wired in {path} and covered by tests."
    observed = f"No reference to {symbol} in {path}; the nearest match is {cite()}, and it is dead code."
    return claim, observed


# --- telemetry streams --------------------------------------------------------------------

_CODE_CHANGES = {
    "rs": (("    let timeout = Duration::from_secs(30);", "    let timeout = cfg.provider_timeout();"),
           ("    if failures > 5 { self.open(); }",
            "    if failures >= cfg.failure_threshold { self.open_until(now + cfg.cooldown); }"),
           ("        return Err(e);", "        return self.fallback.next(req).await.map_err(|_| e);")),
    "py": (("    timeout = 30", "    timeout = settings.provider_timeout_s"),
           ("        raise", "        return await self._fallback(request)"),
           ("    retries = 10", "    retries = budget.remaining()")),
    "ts": (("  const timeoutMs = 30000;", "  const timeoutMs = cfg.timeoutMs;"),
           ("  return rows;", "  return rows.filter((r) => r.provenance);")),
}


def patch(rng: random.Random, path: str) -> str:
    ext = path.rsplit(".", 1)[-1]
    old, new = rng.choice(_CODE_CHANGES.get(ext, _CODE_CHANGES["py"]))
    line = rng.randrange(10, 600)
    return (f"--- a/{path}\n+++ b/{path}\n@@ -{line},3 +{line},3 @@\n"
            f" // {rng.choice(SYMBOLS)}\n-{old}\n+{new}\n \n")


def outcome_summary(rng: random.Random, cite: Cite, events: list[dict[str, object]], gap_signals: int) -> str:
    failed = [event["name"] for event in events if not event["ok"]]
    result = f"{', '.join(map(str, failed))} failed" if failed else "all checks passed"
    gaps = f"; {gap_signals} gap signals ({rng.choice(PROBLEMS)})" if gap_signals else ""
    return f"Applied change to {cite()}: {result}{gaps}."


def experiment_prompt(rng: random.Random, cite: Cite, task: str) -> str:
    return f"{task}\n\nContext files: {cite()}, {cite()}\nAnswer with file:line citations."


def experiment_response(rng: random.Random, cite: Cite, grounded: bool) -> str:
    if not grounded:
        return f"It is likely that {rng.choice(FABRICATIONS)}; probably fine."
    return (f"{rng.choice(SYMBOLS)} lives at {cite()}:{span(rng)}; it {rng.choice(GOOD_CHANGES)}.\n"
            f"{procedure_lines(rng, cite, 1)}")


# --- extraction streams -------------------------------------------------------------------

_STEP_TEMPLATES = (
    "verify {path} registers the {symbol} route before the auth middleware",
    "check {path}:{span} handles the provider 429 path",
    "ensure {path} reads the timeout from config, not a literal",
    "confirm {path} has a test for the {symbol} failure path",
    "assert {symbol} in {path} returns the previous schema version unchanged",
    "verify the breaker in {path} moves to half-open after the cooldown",
    "check that {path} charges streamed tokens exactly once",
)


def procedure_lines(rng: random.Random, cite: Cite, count: int) -> str:
    return "\n".join(
        rng.choice(_STEP_TEMPLATES).format(path=cite(), symbol=rng.choice(SYMBOLS), span=span(rng))
        for _ in range(count)
    )


def procedure(rng: random.Random, cite: Cite, subject: str) -> str:
    return f"Procedure for {subject}:\n{procedure_lines(rng, cite, rng.randrange(2, 6))}"


def fact(rng: random.Random, cite: Cite) -> str:
    return f"{rng.choice(SYMBOLS)} is defined in {cite()}:{span(rng)} and used by {cite()}."


def audit_fact(rng: random.Random, cite: Cite, finding_id: str) -> str:
    return f"Finding {finding_id}: {rng.choice(SYMBOLS)} at {cite()}:{span(rng)}; {rng.choice(PROBLEMS)}."


def config_hint(rng: random.Random, cite: Cite) -> str:
    key, value, config = rng.choice(CONFIG_KEYS)
    return f"set {key}={value} in {config}; it is read at startup by {cite()}."


def escalation_context(rng: random.Random, cite: Cite, task_id: str) -> str:
    return (f"task {task_id} cycled {rng.randrange(2, 5)} times on {cite()}; local model {rng.choice(MODELS)} "
            f"grounded_fraction {rng.random() * 0.5:.2f}")


def legacy_note(rng: random.Random, cite: Cite) -> str:
    return f"TODO(migration): {rng.choice(PROBLEMS)}; see {cite()}"


# --- the huge line: a build log pasted whole into one field --------------------------------


def build_log(rng: random.Random, min_bytes: int) -> str:
    """A cargo/pytest log of at least ``min_bytes`` characters, the way agents paste them whole."""
    lines = [f"   Compiling {crate} v0.{rng.randrange(1, 9)}.{rng.randrange(0, 20)} (/src/crates/{crate})"
             for crate in ("gateway", "router", "vectors", "lakehouse-core", "auditor", "telemetry")]
    lines += [f"test {module}::tests::case_{n} ... ok" for module in ("routes", "failover", "hnsw") for n in range(40)]
    block = "\n".join(lines) + "\n"
    return block * (min_bytes // len(block) + 1)


# --- credentials: obviously fake, pattern-valid, for the exporters' secret detection --------

_UPPER_DIGITS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"
_ALNUM = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
SECRET_KINDS = ("aws_access_key", "github_token", "private_key", "url_password", "openai_key")


def fake_secret(rng: random.Random, kind: str) -> str:
    if kind == "aws_access_key":  # AKIA + 16 of [A-Z2-7]; the EXAMPLE tail marks it as fake
        return "AKIA" + "".join(rng.choices(_UPPER_DIGITS, k=9)) + "EXAMPLE"
    if kind == "github_token":  # ghp_ + 36 alphanumerics
        return "ghp_FAKE" + "".join(rng.choices(_ALNUM, k=32))
    if kind == "private_key":
        body = "MIIEpAIBAAKCAQEAfakefakefake" + "".join(rng.choices(_ALNUM, k=36))
        return f"-----BEGIN RSA PRIVATE KEY-----\n{body}\n-----END RSA PRIVATE KEY-----"
    if kind == "url_password":
        return f"postgres://lakehouse_svc:notreal{rng.randrange(10**6):06d}@db.internal.example:5432/lakehouse"
    return "sk-FAKE" + "".join(rng.choices(_ALNUM, k=44))  # sk- + 48 alphanumerics


def with_secret(rng: random.Random, text: str, kind: str) -> str:
    """Append a credential the way they leak in practice: a pasted env dump or connection string."""
    leak = fake_secret(rng, kind)
    framing = {
        "aws_access_key": f"repro env: AWS_ACCESS_KEY_ID={leak}",
        "github_token": f"pushed with GITHUB_TOKEN={leak}",
        "private_key": f"deploy key used by CI:\n{leak}",
        "url_password": f"reproduced against {leak}",
        "openai_key": f"export OPENAI_API_KEY={leak}",
    }[kind]
    return f"{text}\n{framing}"
