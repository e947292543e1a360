"""Kill -9 harness: SIGKILL ``distill run-all`` at random moments, then check what it left behind.

    python -m distillation_pipeline_tests.kill9 --trials 50 [--jobs 2] [--launcher fork|exec]

1. A sample substrate (``generate_substrate``, 3000 rows, seed 7) is run once uninterrupted: that
   is the *reference* (its bytes, and its receipts' timing, which give every stage's window).
   A second root runs once over a prefix of the same sources (60 % of each file, cut at a line
   end), then gets the full sources: the *previous good run* that half of the trials start from.
2. Each trial copies a root (fresh, or holding the previous good run), starts ``run-all`` with the
   same ``--recorded-at``, waits for the end of the stage before its target (the lock taken, a
   receipt written), then SIGKILLs the process group a seeded fraction into the target stage's
   reference duration; the stages take turns so every one is hit.
3. What the killed run left is checked:
   (a) no torn file: every ``*.jsonl`` under data/, exports/, reports/ (sources apart) is whole
       parseable lines ending in a newline, every ``*.json`` parses. Evidence partitions and
       seen-hash files are append-only with a commit record: only their committed prefix has to
       be whole; what lies beyond it is counted as "cut by recovery" (the next run truncates it);
   (b) every output file, seen as the next run's recovery will see it, is the previous good
       version or the reference's (absent counts as a version: not yet written, or removed);
       receipts the killed run wrote validate and describe the reference's bytes; the previous
       run's receipts are untouched;
   (c) ``run-all`` is run again uninterrupted: the outputs in ``COMPARED`` (evidence, scored
       runs, commit record, seen hashes, skips, health report, exports/) must be byte-identical to
       the reference, and its exit code the reference's. The dataset card (exports/README.md)
       names the run that wrote it: its run id and code sha are masked, and the run it names must
       have receipts on disk.
   Temporary files (``.<name>.*.tmp`` from atomic writes cut short) are counted after the kill
   and after the convergence run, to show whether they are cleaned or accumulate.

Launchers: ``exec`` starts a fresh interpreter per run (``python -m distillation_pipeline.cli``),
exactly what a user runs. ``fork`` (the default, ~2x faster) forks each run from a forkserver that
has already imported the pipeline and Dagster, then calls the same ``cli.main``; the process that
is killed is still a separate OS process doing all the I/O itself. Both kill the whole process
group, so a ``git`` child dies with its parent.
"""

import argparse
import multiprocessing
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path

import orjson

RECORDED_AT = "2026-11-01T00:00:00Z"
DEFAULT_ROWS = 3000
DEFAULT_SEED = 7
PRIOR_FRACTION = 0.6  # share of each source the previous good run had already collected
RUN_TIMEOUT_S = 600.0
SKIPS_FILE = "data/_kb/distillation_skips.jsonl"
HEALTH_FILE = "data/_kb/evidence_health.md"
STATE_FILE = "data/_state/collect.json"
CARD_FILE = "exports/README.md"  # the dataset card names the run that wrote it and the code's sha

# ---------------------------------------------------------------------------------------------
# Launching and killing a run
# ---------------------------------------------------------------------------------------------


def _forked_cli(argv: list[str], log_path: str) -> None:
    """Body of a forkserver child: become a process group, send output to a file, run the CLI."""
    os.setsid()
    fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.environ["DISTILL_DAGSTER_INSTANCE"] = "ephemeral"
    from distillation_pipeline.cli import main

    code = main(argv)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def _noop() -> None:
    pass


class Run:
    """One ``distill`` process: its pid, start time, and a way to wait for or kill it."""

    def __init__(self, pid: int, started: float, waiter: Callable[[float], int | None]) -> None:
        self.pid = pid
        self.started = started
        self._waiter = waiter

    def wait(self, timeout: float = RUN_TIMEOUT_S) -> int:
        code = self._waiter(timeout)
        if code is None:
            self.kill()
            raise TimeoutError(f"distill (pid {self.pid}) still running after {timeout:g}s")
        return code

    def poll(self) -> int | None:
        return self._waiter(0)

    def kill(self) -> None:
        # The child is its own process group (setsid): kill the group, children included. Before
        # the child has called setsid there is no such group yet; then kill the process itself.
        try:
            os.killpg(self.pid, signal.SIGKILL)
        except ProcessLookupError:
            try:
                os.kill(self.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


class Launcher:
    """Starts ``distill`` runs either by fork from a preloaded forkserver or by exec."""

    def __init__(self, mode: str = "fork") -> None:
        if mode not in ("fork", "exec"):
            raise ValueError(f"launcher must be fork or exec, not {mode!r}")
        self.mode = mode
        self._ctx = None
        if mode == "fork":
            self._ctx = multiprocessing.get_context("forkserver")
            self._ctx.set_forkserver_preload(
                ["distillation_pipeline.cli", "distillation_pipeline.definitions", __name__]
            )
            # Start the forkserver (and its imports) now, so that the reference run's startup
            # window measures a fork, not the server's own start.
            warm = self._ctx.Process(target=_noop)
            warm.start()
            warm.join()

    def start(self, argv: list[str], log_path: Path) -> Run:
        if self._ctx is not None:
            process = self._ctx.Process(target=_forked_cli, args=(argv, str(log_path)), daemon=False)
            started = time.time()
            process.start()

            def wait_fork(timeout: float) -> int | None:
                process.join(timeout)
                return process.exitcode

            return Run(process.pid, started, wait_fork)
        env = {**os.environ, "DISTILL_DAGSTER_INSTANCE": "ephemeral"}
        log = open(log_path, "wb")  # noqa: SIM115 (closed when the process is waited for)
        started = time.time()
        popen = subprocess.Popen(
            [sys.executable, "-m", "distillation_pipeline.cli", *argv],
            stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True,
        )

        def wait_exec(timeout: float) -> int | None:
            try:
                code = popen.wait(timeout) if timeout > 0 else popen.poll()
            except subprocess.TimeoutExpired:
                return None
            if code is not None:
                log.close()
            return code

        return Run(popen.pid, started, wait_exec)


def scratch_parent() -> Path | None:
    """Where trial roots go by default: tmpfs when there is one.

    SIGKILL ends a process, not the machine: what it wrote is in the page cache either way, so
    fsync (about half of a run's time on disk here) changes nothing this harness can observe.
    Power loss is another matter and is not what this harness simulates.
    """
    shm = Path("/dev/shm")
    return shm if shm.is_dir() and os.access(shm, os.W_OK) else None


def run_all_argv(root: Path) -> list[str]:
    return ["run-all", "--root", str(root), "--recorded-at", RECORDED_AT]


# ---------------------------------------------------------------------------------------------
# Reading a root: what counts as an output, what recovery will make of it
# ---------------------------------------------------------------------------------------------


def is_temp(rel: str) -> bool:
    name = rel.rsplit("/", 1)[-1]
    return name.startswith(".") and name.endswith(".tmp")


def is_source(rel: str) -> bool:
    """Inputs under data/_kb/: the streams and the repo manifest (outputs there are named)."""
    return rel.startswith("data/_kb/") and rel not in (SKIPS_FILE, HEALTH_FILE)


def temp_files(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob(".*.tmp") if p.is_file())


def card_run_id(data: bytes) -> str | None:
    found = re.search(rb"run id: `([^`]+)`", data)
    return found.group(1).decode() if found else None


def mask_card(data: bytes) -> bytes:
    """The dataset card with the writing run's id and code sha masked: the rest must match."""
    run_id = card_run_id(data)
    if run_id:
        data = data.replace(run_id.encode(), b"<run id>")
    return re.sub(rb"code(:?) `[^`]+`", rb"code\1 `<sha>`", data)


# The outputs compared byte for byte: the datasets and everything collect and score keep.
# Caches (e.g. data/_state/digests.json, keyed by inode and mtime) and the replay queue are not
# compared, only checked for torn files; receipts are per run and checked against their schema.
COMPARED = (
    "data/evidence/", "data/scored-runs/", "data/_state/seen/", STATE_FILE, SKIPS_FILE, HEALTH_FILE, "exports/",
)
RECOVERED = ("data/evidence/", "data/_state/seen/")  # append-only: cut back to the commit record


def is_compared(rel: str) -> bool:
    return any(rel == item or (item.endswith("/") and rel.startswith(item)) for item in COMPARED)


def written_files(root: Path, areas: tuple[str, ...] = ("data", "exports", "reports")) -> dict[str, bytes]:
    """Every file the pipeline wrote under ``areas`` (sources, temp files, lock files apart)."""
    files: dict[str, bytes] = {}
    for area in areas:
        base = root / area
        if not base.is_dir():
            continue
        for path in sorted(base.rglob("*")):
            rel = path.relative_to(root).as_posix()
            if path.is_file() and not is_source(rel) and not is_temp(rel) and not rel.endswith(".lock"):
                files[rel] = path.read_bytes()
    return files


def output_snapshot(root: Path) -> dict[str, bytes]:
    """The compared outputs by relative path (the dataset card with its run id masked)."""
    return {
        rel: mask_card(data) if rel == CARD_FILE else data
        for rel, data in written_files(root, ("data", "exports")).items()
        if is_compared(rel)
    }


def card_problems(root: Path) -> list[str]:
    """The dataset card, if any, names a run whose receipts are on disk."""
    card = root / CARD_FILE
    if not card.exists():
        return []
    run_id = card_run_id(card.read_bytes())
    if run_id is None or run_id not in run_dirs(root):
        return [f"{CARD_FILE}: names run {run_id!r}, which has no receipts under reports/distillation/"]
    return []


def reports_snapshot(root: Path) -> dict[str, bytes]:
    return written_files(root, ("reports",))


def _commit_record(snapshot: dict[str, bytes]) -> dict | None:
    raw = snapshot.get(STATE_FILE)
    return orjson.loads(raw) if raw is not None else None


def recovered_view(snapshot: dict[str, bytes]) -> tuple[dict[str, bytes], list[str]]:
    """The outputs as the next run sees them after its recovery rule (cut evidence back to the commit).

    Returns the view and one note per file recovery changes (an uncommitted tail or file).
    Raises nothing: a committed file shorter than its record is reported as a note starting
    with ``LOST`` (committed bytes gone), which callers treat as a violation.
    """
    record = _commit_record(snapshot) or {"evidence_files": {}, "streams": {}}
    committed: dict[str, int] = record.get("evidence_files", {})
    seen_lengths = {f"data/_state/seen/{name}.bin": s.get("seen_bytes", 0) for name, s in record.get("streams", {}).items()}
    view: dict[str, bytes] = {}
    notes: list[str] = []
    for rel, data in snapshot.items():
        if rel.startswith("data/evidence/") or rel.startswith("data/_state/seen/"):
            limit = committed.get(rel) if rel.startswith("data/evidence/") else seen_lengths.get(rel)
            if limit is None:
                notes.append(f"{rel}: uncommitted file ({len(data)} bytes), removed by recovery")
                continue
            if len(data) < limit:
                notes.append(f"LOST {rel}: {len(data)} bytes, its commit record says {limit}")
            elif len(data) > limit:
                notes.append(f"{rel}: uncommitted tail of {len(data) - limit} bytes, cut by recovery")
            view[rel] = data[:limit]
        else:
            view[rel] = data
    return view, notes


def _whole_jsonl(data: bytes) -> str | None:
    """None if ``data`` is whole JSON lines ending in a newline; else what is wrong."""
    if not data:
        return None
    if not data.endswith(b"\n"):
        return "last line has no newline"
    for number, line in enumerate(data.split(b"\n")[:-1], start=1):
        try:
            orjson.loads(line)
        except orjson.JSONDecodeError:
            return f"line {number} does not parse"
    return None


def torn_files(root: Path) -> list[str]:
    """Files a reader would find half-written (append-only files: within their committed prefix)."""
    view, _ = recovered_view(output_snapshot(root))
    problems = []
    for rel, data in written_files(root).items():
        if rel.startswith(RECOVERED):
            data = view.get(rel, b"")  # what is beyond the commit is not a reader's business
        if rel.endswith(".jsonl"):
            why = _whole_jsonl(data)
            if why:
                problems.append(f"{rel}: {why}")
        elif rel.endswith(".json"):
            try:
                orjson.loads(data)
            except orjson.JSONDecodeError:
                problems.append(f"{rel}: does not parse as JSON")
        elif rel.endswith(".bin") and len(data) % 8:
            problems.append(f"{rel}: {len(data)} bytes, not whole 8-byte hashes")
        elif rel.endswith(".table"):  # exports/id_table.py: a JSON header, then 24 bytes an id
            why = _whole_id_table(data)
            if why:
                problems.append(f"{rel}: {why}")
    return problems


def _whole_id_table(data: bytes) -> str | None:
    head, newline, columns = data.partition(b"\n")
    try:
        count = int(orjson.loads(head)["count"])
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
        return "no readable header"
    if not newline or len(columns) != 24 * count:
        return f"{len(columns)} column bytes for {count} ids"
    return None


def version_violations(view: dict[str, bytes], previous: dict[str, bytes], reference: dict[str, bytes]) -> list[str]:
    """Files that are neither the previous good version nor the reference's (absence is a version)."""
    problems = []
    for rel in sorted(set(view) | set(previous) | set(reference)):
        now = view.get(rel)
        if now == previous.get(rel) or now == reference.get(rel):
            continue
        state = "absent" if now is None else f"{len(now)} bytes"
        known = ", ".join(
            f"{label} {'absent' if data is None else f'{len(data)} bytes'}"
            for label, data in (("previous", previous.get(rel)), ("reference", reference.get(rel)))
        )
        problems.append(f"{rel}: {state}, neither version ({known})")
    return problems


def snapshot_diff(got: dict[str, bytes], want: dict[str, bytes]) -> list[str]:
    diffs = []
    for rel in sorted(set(got) | set(want)):
        if rel not in got:
            diffs.append(f"{rel}: missing")
        elif rel not in want:
            diffs.append(f"{rel}: not in the reference")
        elif got[rel] != want[rel]:
            diffs.append(f"{rel}: bytes differ ({len(got[rel])} vs {len(want[rel])})")
    return diffs


# ---------------------------------------------------------------------------------------------
# Receipts
# ---------------------------------------------------------------------------------------------

_RECEIPT_FIELDS = ("input_hash", "output_hash")
_COUNT_FIELDS = ("records_in", "records_out", "skipped", "quarantined", "deduplicated")


def receipt_fingerprint(data: bytes) -> dict:
    """What a stage receipt says about the bytes, without run id or times (to compare runs)."""
    from distillation_pipeline.schemas import StageReceipt

    receipt = StageReceipt.model_validate_json(data)
    counts = receipt.counts.model_dump()
    return {
        **{name: getattr(receipt, name) for name in _RECEIPT_FIELDS},
        **{name: counts[name] for name in _COUNT_FIELDS},
        "outputs": sorted((d.path, d.sha256) for d in receipt.outputs),
    }


def run_dirs(root: Path) -> set[str]:
    base = root / "reports" / "distillation"
    return {p.name for p in base.iterdir() if p.is_dir()} if base.is_dir() else set()


def check_run_dir(run_dir: Path, reference: "Reference") -> list[str]:
    """A run's receipts validate and describe the reference's bytes (stage by stage)."""
    from distillation_pipeline.schemas import DriftReport, RunSummary

    problems = []
    for path in sorted(run_dir.iterdir()):
        if is_temp(path.name) or not path.is_file():
            continue
        rel = f"{run_dir.name}/{path.name}"
        data = path.read_bytes()
        try:
            if path.name == "summary.json":
                summary = RunSummary.model_validate_json(data)
                if summary.output_hash != reference.summary_output_hash:
                    problems.append(f"{rel}: output_hash differs from the reference run's")
            elif path.name == "drift.json":
                DriftReport.model_validate_json(data)
            elif path.suffix == ".json":
                stage = path.stem
                if receipt_fingerprint(data) != reference.receipts.get(stage):
                    problems.append(f"{rel}: receipt does not describe the reference's bytes")
            elif path.name == "summary.md" and not data.startswith(b"# Distillation run"):
                problems.append(f"{rel}: not a summary")
        except ValueError as exc:
            problems.append(f"{rel}: does not validate ({str(exc).splitlines()[0]})")
    return problems


def _epoch(iso: str) -> float:
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


# ---------------------------------------------------------------------------------------------
# The reference and the previous good run
# ---------------------------------------------------------------------------------------------


@dataclass
class Window:
    stage: str
    start_s: float  # seconds after the process started
    end_s: float


@dataclass
class Reference:
    substrate: Path  # data/_kb/ only: what every trial starts from
    prior_template: Path  # previous good run's outputs, full sources in place
    snapshot: dict[str, bytes]
    prior_snapshot: dict[str, bytes]
    prior_reports: dict[str, bytes]
    receipts: dict[str, dict]  # stage -> fingerprint
    summary_output_hash: str
    exit_code: int
    duration_s: float
    windows: list[Window]
    stage_order: list[str]  # stages by start time in the reference run

    @property
    def buckets(self) -> list[str]:
        return [w.stage for w in self.windows]


def _cut_sources(source_kb: Path, target_kb: Path, fraction: float) -> None:
    """Copy data/_kb/, each stream cut after the first line end past ``fraction`` of its bytes."""
    target_kb.mkdir(parents=True, exist_ok=True)
    for path in sorted(source_kb.iterdir()):
        data = path.read_bytes()
        if path.suffix == ".jsonl" and data:
            cut = data.find(b"\n", int(len(data) * fraction))
            data = data[: cut + 1] if cut >= 0 else data
        (target_kb / path.name).write_bytes(data)


def lock_holder(root: Path, pid: int) -> bool:
    """True once process ``pid`` holds the root lock (it writes its pid into the lock file)."""
    try:
        return f"pid {pid} " in (root / "data" / "_state" / "pipeline.lock").read_text(errors="replace")
    except OSError:
        return False


def _run_watching_lock(run: Run, root: Path) -> tuple[int, float | None]:
    """Wait for a run, noting when it took the root lock (seconds after its start)."""
    locked_at = None
    while (code := run.poll()) is None:
        if locked_at is None and lock_holder(root, run.pid):
            locked_at = time.time() - run.started
        time.sleep(0.005)
    return code, locked_at


def _windows(root: Path, run: Run, finished: float, locked_at: float | None) -> tuple[list[Window], list[str]]:
    (run_dir,) = [root / "reports" / "distillation" / name for name in run_dirs(root)]
    stages = []
    for path in run_dir.glob("*.json"):
        if path.name in ("summary.json", "drift.json"):
            continue
        receipt = orjson.loads(path.read_bytes())
        stages.append((_epoch(receipt["started_at"]) - run.started, _epoch(receipt["finished_at"]) - run.started, receipt["stage"]))
    stages.sort()
    # The three datasets are exported in one pass and their receipts share its window: one stage.
    shared = [stage for stage in stages if stage[2].startswith("export-")]
    if shared and len({(start, end) for start, end, _ in shared}) == 1:
        stages = [stage for stage in stages if stage not in shared] + [(shared[0][0], shared[0][1], SHARED_EXPORT)]
        stages.sort()
    summary_at = (run_dir / "summary.json").stat().st_mtime - run.started
    # Startup ends when the run takes the root lock (or, without a lock, when collect starts).
    previous_end = locked_at if locked_at is not None and locked_at < stages[0][0] else stages[0][0]
    windows = [Window("startup", 0.0, previous_end)]
    for _start, end, stage in stages:
        windows.append(Window(stage, previous_end, end))
        previous_end = end
    windows.append(Window("checks+summary", previous_end, summary_at))
    windows.append(Window("exit", summary_at, finished - run.started))
    return windows, [stage for _, _, stage in stages]


def prepare_reference(workdir: Path, launcher: Launcher, rows: int, seed: int, log: Callable[[str], None]) -> Reference:
    from distillation_pipeline.sample import generate_substrate

    substrate = workdir / "substrate"
    generate_substrate(substrate, rows=rows, seed=seed)
    kb = substrate / "data" / "_kb"

    ref_root = workdir / "reference"
    shutil.copytree(kb, ref_root / "data" / "_kb")
    run = launcher.start(run_all_argv(ref_root), workdir / "reference.log")
    exit_code, locked_at = _run_watching_lock(run, ref_root)
    finished = time.time()
    receipts_written = [p.name for d in run_dirs(ref_root) for p in (ref_root / "reports" / "distillation" / d).glob("*.json")]
    expected = {f"{stage}.json" for stage in ("collect", "score", "export-rag", "export-sft", "export-preference", "summary")}
    if exit_code not in (0, 1) or not expected <= set(receipts_written):
        # Every stage must have run, or there are no windows to aim at (and nothing to compare).
        tail = (workdir / "reference.log").read_text(errors="replace")[-3000:]
        raise RuntimeError(f"the reference run did not complete (exit code {exit_code}, {receipts_written}):\n{tail}")
    windows, order = _windows(ref_root, run, finished, locked_at)
    (run_dir,) = [ref_root / "reports" / "distillation" / name for name in run_dirs(ref_root)]
    receipts = {p.stem: receipt_fingerprint(p.read_bytes()) for p in run_dir.glob("*.json") if p.stem in order or p.stem in EXPORT_RECEIPTS}
    summary = orjson.loads((run_dir / "summary.json").read_bytes())
    log(f"reference run: exit {exit_code}, {finished - run.started:.1f}s; windows: "
        + ", ".join(f"{w.stage} {w.start_s:.2f}-{w.end_s:.2f}" for w in windows))

    prior_root = workdir / "previous-good"
    _cut_sources(kb, prior_root / "data" / "_kb", PRIOR_FRACTION)
    prior_code = launcher.start(run_all_argv(prior_root), workdir / "previous-good.log").wait()
    if prior_code not in (0, 1):
        raise RuntimeError(f"previous good run failed with exit code {prior_code}")
    prior_snapshot = output_snapshot(prior_root)
    prior_reports = reports_snapshot(prior_root)
    for source in kb.iterdir():  # the sources grew since that run (its outputs in _kb/ stay)
        shutil.copyfile(source, prior_root / "data" / "_kb" / source.name)
    return Reference(
        substrate=kb,
        prior_template=prior_root,
        snapshot=output_snapshot(ref_root),
        prior_snapshot=prior_snapshot,
        prior_reports=prior_reports,
        receipts=receipts,
        summary_output_hash=summary["output_hash"],
        exit_code=exit_code,
        duration_s=finished - run.started,
        windows=windows,
        stage_order=order,
    )


# ---------------------------------------------------------------------------------------------
# One trial
# ---------------------------------------------------------------------------------------------


@dataclass
class TrialPlan:
    index: int
    prior: bool  # start from the previous good run's outputs (else a fresh root)
    stage: str  # the window the kill was aimed at
    fraction: float  # where inside that window


@dataclass
class TrialResult:
    index: int
    prior: bool
    planned_stage: str
    kill_at_s: float
    observed_stage: str  # from what the killed run left: its receipts, the lock holder's pid
    killed: bool  # False when the run finished before the kill was due
    torn: list[str] = field(default_factory=list)
    recovery_notes: list[str] = field(default_factory=list)
    violations: list[str] = field(default_factory=list)
    receipt_problems: list[str] = field(default_factory=list)
    temp_after_kill: list[str] = field(default_factory=list)
    temp_after_converge: list[str] = field(default_factory=list)
    converge_exit: int | None = None
    converge_diffs: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def converged(self, reference_exit: int) -> bool:
        return self.converge_exit == reference_exit and not self.converge_diffs

    @property
    def lost(self) -> list[str]:
        return [note for note in self.recovery_notes if note.startswith("LOST")]


def _stage_done(root: Path, dirs_before: set[str], pid: int, stage: str) -> bool:
    """Has the run finished ``stage``: taken the lock (startup), written the stage's receipt or its summary?"""
    if stage == "startup":
        return lock_holder(root, pid)
    new = run_dirs(root) - dirs_before
    if not new:
        return False
    run_dir = root / "reports" / "distillation" / next(iter(new))
    return all((run_dir / f"{name}.json").exists() for name in _receipt_names(stage))


SHARED_EXPORT = "export"
EXPORT_RECEIPTS = ("export-rag", "export-sft", "export-preference")


def _receipt_names(stage: str) -> tuple[str, ...]:
    """The receipts that mark ``stage`` done (the shared export pass writes three)."""
    if stage == "checks+summary":
        return ("summary",)
    return EXPORT_RECEIPTS if stage == SHARED_EXPORT else (stage,)


def _observed_stage(root: Path, new_dirs: set[str], pid: int, order: list[str]) -> str:
    run_dir = root / "reports" / "distillation" / next(iter(new_dirs)) if new_dirs else None
    present = {p.stem for p in run_dir.glob("*.json")} if run_dir else set()
    if "summary" in present:
        return "exit"
    if not present and not lock_holder(root, pid):
        return "startup"  # never took the root lock: still importing or parsing arguments
    for stage in order:
        if not set(_receipt_names(stage)) <= present:
            return stage
    return "checks+summary"


def run_trial(plan: TrialPlan, reference: Reference, launcher: Launcher, workdir: Path, keep: bool = False) -> TrialResult:
    began = time.time()
    root = workdir / f"trial-{plan.index:03d}"
    if plan.prior:
        shutil.copytree(reference.prior_template, root, ignore=shutil.ignore_patterns("*.lock"))
        previous = reference.prior_snapshot
    else:
        shutil.copytree(reference.substrate, root / "data" / "_kb")
        previous = {}
    dirs_before = run_dirs(root)
    buckets = reference.buckets
    k = buckets.index(plan.stage)
    window = reference.windows[k]

    run = launcher.start(run_all_argv(root), root / "killed.log")
    # Wait for the end of the stage before the target (timing alone drifts when the machine is
    # busier than during the reference run), then go a seeded fraction into the target stage.
    while run.poll() is None and k > 0 and not _stage_done(root, dirs_before, run.pid, buckets[k - 1]):
        time.sleep(0.003)
    time.sleep(plan.fraction * (window.end_s - window.start_s))
    killed = run.poll() is None
    kill_at = time.time() - run.started
    run.kill()
    run.wait()
    new_dirs = run_dirs(root) - dirs_before
    result = TrialResult(
        index=plan.index,
        prior=plan.prior,
        planned_stage=plan.stage,
        kill_at_s=round(kill_at, 3),
        observed_stage=_observed_stage(root, new_dirs, run.pid, reference.stage_order) if killed else "completed",
        killed=killed,
    )

    # (a) torn files, (b) previous good or new, receipts
    result.torn = torn_files(root)
    view, result.recovery_notes = recovered_view(output_snapshot(root))
    result.violations = version_violations(view, previous, reference.snapshot) + result.lost
    for name in sorted(new_dirs):
        result.receipt_problems += check_run_dir(root / "reports" / "distillation" / name, reference)
    reports_now = reports_snapshot(root)
    for rel, data in reference.prior_reports.items() if plan.prior else ():
        if reports_now.get(rel) != data:
            result.receipt_problems.append(f"{rel}: the previous run's receipt changed")
    result.receipt_problems += card_problems(root)
    result.temp_after_kill = temp_files(root)

    # (c) the next uninterrupted run converges to the reference's bytes
    dirs_before = run_dirs(root)
    result.converge_exit = launcher.start(run_all_argv(root), root / "converge.log").wait()
    result.converge_diffs = snapshot_diff(output_snapshot(root), reference.snapshot)
    for name in sorted(run_dirs(root) - dirs_before):
        result.receipt_problems += check_run_dir(root / "reports" / "distillation" / name, reference)
    result.receipt_problems += card_problems(root)
    result.temp_after_converge = temp_files(root)
    result.seconds = round(time.time() - began, 2)

    failed = result.torn or result.violations or result.receipt_problems or not result.converged(reference.exit_code)
    if not keep and not failed:
        shutil.rmtree(root)
    return result


# ---------------------------------------------------------------------------------------------
# The harness
# ---------------------------------------------------------------------------------------------


@dataclass
class HarnessReport:
    trials: int
    launcher: str
    rows: int
    seed: int
    jobs: int
    reference_seconds: float
    reference_exit: int
    windows: list[dict]
    wall_seconds: float
    results: list[TrialResult]

    @property
    def killed(self) -> int:
        return sum(r.killed for r in self.results)

    @property
    def kills_per_planned_stage(self) -> dict[str, int]:
        return dict(Counter(r.planned_stage for r in self.results))

    @property
    def kills_per_observed_stage(self) -> dict[str, int]:
        return dict(Counter(r.observed_stage for r in self.results))

    @property
    def torn(self) -> list[str]:
        return [f"trial {r.index}: {t}" for r in self.results for t in r.torn]

    @property
    def violations(self) -> list[str]:
        return [f"trial {r.index}: {v}" for r in self.results for v in r.violations + r.receipt_problems]

    @property
    def converged(self) -> int:
        return sum(r.converged(self.reference_exit) for r in self.results)

    @property
    def not_converged(self) -> list[str]:
        return [
            f"trial {r.index}: exit {r.converge_exit} (reference {self.reference_exit}); " + "; ".join(r.converge_diffs[:3])
            for r in self.results if not r.converged(self.reference_exit)
        ]

    @property
    def cut_by_recovery(self) -> int:
        return sum(1 for r in self.results for note in r.recovery_notes if not note.startswith("LOST"))

    @property
    def temp_left_after_kill(self) -> int:
        return sum(len(r.temp_after_kill) for r in self.results)

    @property
    def temp_left_after_converge(self) -> int:
        return sum(len(r.temp_after_converge) for r in self.results)

    @property
    def passed(self) -> bool:
        return not self.torn and not self.violations and self.converged == self.trials

    def to_dict(self) -> dict:
        return {
            **{k: v for k, v in asdict(self).items() if k != "results"},
            "killed": self.killed,
            "kills_per_planned_stage": self.kills_per_planned_stage,
            "kills_per_observed_stage": self.kills_per_observed_stage,
            "torn_files": self.torn,
            "violations": self.violations,
            "converged": self.converged,
            "cut_by_recovery": self.cut_by_recovery,
            "temp_files_after_kill": self.temp_left_after_kill,
            "temp_files_after_converge": self.temp_left_after_converge,
            "results": [asdict(r) for r in self.results],
        }

    def render(self) -> str:
        order = [w["stage"] for w in self.windows] + ["completed"]
        planned, observed = self.kills_per_planned_stage, self.kills_per_observed_stage
        lines = [
            f"kill -9 harness: {self.trials} trials ({self.launcher} launcher, {self.jobs} at a time), "
            f"{self.rows}-row substrate seed {self.seed}, reference run {self.reference_seconds:.1f}s "
            f"exit {self.reference_exit}, wall {self.wall_seconds:.0f}s",
            f"{'stage':<18} {'window s':>13} {'aimed':>6} {'landed':>7}",
        ]
        for stage in order:
            window = next((w for w in self.windows if w["stage"] == stage), None)
            span = f"{window['start_s']:.2f}-{window['end_s']:.2f}" if window else "-"
            lines.append(f"{stage:<18} {span:>13} {planned.get(stage, 0):>6} {observed.get(stage, 0):>7}")
        lines += [
            f"killed mid-run: {self.killed}/{self.trials} (the rest finished before the kill was due)",
            f"torn files found: {len(self.torn)}",
            f"files neither previous nor new (or bad receipts): {len(self.violations)}",
            f"uncommitted evidence tails/files cut by recovery: {self.cut_by_recovery}",
            f"runs converged to the reference bytes: {self.converged}/{self.trials}",
            f"temp files left: {self.temp_left_after_kill} after the kills, {self.temp_left_after_converge} after the next runs",
        ]
        for problem in (self.torn + self.violations + self.not_converged)[:20]:
            lines.append(f"  ! {problem}")
        return "\n".join(lines)


def plan_trials(trials: int, buckets: list[str], seed: int) -> list[TrialPlan]:
    """Stages take turns (shuffled, seeded); odd trials start from the previous good run."""
    rng = random.Random(seed)
    stages = [buckets[i % len(buckets)] for i in range(trials)]
    rng.shuffle(stages)
    return [TrialPlan(i, prior=i % 2 == 1, stage=stage, fraction=rng.random()) for i, stage in enumerate(stages)]


def run_harness(
    workdir: Path,
    *,
    trials: int = 50,
    rows: int = DEFAULT_ROWS,
    seed: int = DEFAULT_SEED,
    jobs: int = 1,
    launcher: str = "fork",
    keep: bool = False,
    log: Callable[[str], None] = lambda line: None,
) -> HarnessReport:
    began = time.time()
    workdir.mkdir(parents=True, exist_ok=True)
    starter = Launcher(launcher)
    reference = prepare_reference(workdir, starter, rows, seed, log)
    plans = plan_trials(trials, reference.buckets, seed)
    lock = threading.Lock()
    done: list[TrialResult] = []

    def one(plan: TrialPlan) -> TrialResult:
        result = run_trial(plan, reference, starter, workdir, keep)
        with lock:
            done.append(result)
            ok = not (result.torn or result.violations or result.receipt_problems) and result.converged(reference.exit_code)
            log(f"trial {plan.index:3d} {'prior' if plan.prior else 'fresh'} aimed {plan.stage:<17} at {result.kill_at_s:5.2f}s "
                f"landed {result.observed_stage:<17} {'ok' if ok else 'FAILED'} ({len(done)}/{trials}, {result.seconds:.1f}s)")
        return result

    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        results = list(pool.map(one, plans))
    return HarnessReport(
        trials=trials,
        launcher=launcher,
        rows=rows,
        seed=seed,
        jobs=jobs,
        reference_seconds=round(reference.duration_s, 2),
        reference_exit=reference.exit_code,
        windows=[asdict(w) for w in reference.windows],
        wall_seconds=round(time.time() - began, 1),
        results=results,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m distillation_pipeline_tests.kill9", description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=50)
    parser.add_argument("--rows", type=int, default=DEFAULT_ROWS)
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED)
    parser.add_argument("--jobs", type=int, default=2, help="trials at a time (default 2)")
    parser.add_argument("--launcher", choices=("fork", "exec"), default="fork")
    parser.add_argument("--workdir", type=Path, help="work here and keep it (default: a temporary directory on tmpfs if any, removed)")
    parser.add_argument("--keep", action="store_true", help="keep passing trials' roots too")
    parser.add_argument("--json", type=Path, help="write the full report as JSON here")
    args = parser.parse_args(argv)

    def run(workdir: Path) -> HarnessReport:
        return run_harness(
            workdir, trials=args.trials, rows=args.rows, seed=args.seed, jobs=args.jobs,
            launcher=args.launcher, keep=args.keep, log=lambda line: print(line, flush=True),
        )

    if args.workdir:
        report = run(args.workdir)
    else:
        import tempfile

        with tempfile.TemporaryDirectory(prefix="kill9-", dir=scratch_parent()) as tmp:
            report = run(Path(tmp))
    print(report.render())
    if args.json:
        args.json.write_bytes(orjson.dumps(report.to_dict(), option=orjson.OPT_INDENT_2))
    return 0 if report.passed else 1


if __name__ == "__main__":
    sys.exit(main())
