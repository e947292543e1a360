"""Substrates for the benchmark: a generated ``data/_kb/``, and new rows appended to one.

The increment is a separately generated *clean* substrate (another seed, no mess: appended rows
must be well-formed) whose identifiers are rewritten so they are new to the first substrate:
every top-level ``id`` / ``*_id`` string gets a prefix, consistently, so joins inside the
increment (task_id, finding_id) still hold. Its rows keep their event times, so they land in
the existing 60-day window's partitions, the way a late-flushing writer's rows would. The first
substrate's ``repo_files.txt`` is kept: from ~43k rows up it lists every path the generator can
cite, so the increment's citations are checked against the same repository.

The messy substrate ends a few files with a torn last line (a writer that died mid-append).
Before appending, that tail is cut with ``lib.atomic.repair_torn_tail``, as the project's own
writers do; the collector then sees that already-read bytes changed and re-collects those
streams, which is what makes the result match a rebuild (gluing new rows onto the torn
fragment would lose them in a rebuild, and terminating the fragment would turn its skip from
``truncated_line`` into ``malformed_json``).
"""

import shutil
import time
from pathlib import Path

import orjson

from benchmarks.pipeline_run import source_files
from distillation_pipeline.lib.atomic import repair_torn_tail
from distillation_pipeline.lib.layout import Layout
from distillation_pipeline.sample import generate_substrate

SEED = 7
INCREMENT_SEED = 8


def generate(root: Path, rows: int, seed: int = SEED) -> dict:
    """A fresh root with only ``data/_kb/`` in it (anything left from an earlier run is removed)."""
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    started = time.perf_counter()
    stats = generate_substrate(root, rows=rows, seed=seed)
    return {
        "rows_requested": rows,
        "seed": seed,
        "source_lines": stats.total_lines,
        "generate_s": round(time.perf_counter() - started, 2),
    }


def copy_sources(source_root: Path, target_root: Path) -> None:
    """A fresh root holding a copy of another root's ``data/_kb/`` (sources and repo manifest)."""
    shutil.rmtree(target_root, ignore_errors=True)
    target_kb = Layout.at(target_root).kb_dir
    target_kb.mkdir(parents=True)
    source = Layout.at(source_root)
    for path in [*source_files(source), source.repo_manifest]:
        shutil.copy2(path, target_kb / path.name)


def renamed_ids(row: dict, prefix: str) -> dict:
    return {
        key: (f"{prefix}{value}" if (key == "id" or key.endswith("_id")) and isinstance(value, str) else value)
        for key, value in row.items()
    }


def append_increment(root: Path, rows: int, scratch: Path, seed: int = INCREMENT_SEED) -> dict:
    """Append about ``rows`` new, well-formed rows at the end of each stream file under ``root``."""
    shutil.rmtree(scratch, ignore_errors=True)
    generate_substrate(scratch, rows=rows, seed=seed, mess=False)
    prefix = f"inc{seed}-"
    kb = Layout.at(root).kb_dir
    appended: dict[str, int] = {}
    repaired: dict[str, int] = {}  # stream -> bytes of torn tail cut before appending
    for new_source in source_files(Layout.at(scratch)):
        rows_in_file = (orjson.loads(line) for line in new_source.read_bytes().splitlines() if line.strip())
        lines = [orjson.dumps(renamed_ids(row, prefix)) for row in rows_in_file]
        if not lines:
            continue
        target = kb / new_source.name
        # Appended the way the project's writers append (lib/atomic.py): a torn last line left
        # by a writer that died is cut first, so new rows start on a line of their own.
        repaired_bytes = repair_torn_tail(target)
        if repaired_bytes:
            repaired[new_source.stem] = repaired_bytes
        with open(target, "ab") as handle:
            handle.write(b"\n".join(lines) + b"\n")
        appended[new_source.stem] = len(lines)
    shutil.rmtree(scratch, ignore_errors=True)
    return {
        "seed": seed,
        "id_prefix": prefix,
        "rows_appended": sum(appended.values()),
        "per_stream": appended,
        "torn_tails_cut": repaired,
    }
