"""Byte-for-byte comparison of the output trees of two roots (incremental run vs full rebuild).

The dataset card (``exports/README.md``) names the run that wrote it (run id, receipt hashes),
so two runs can never write the same card. It is compared apart, as run metadata, with the
lines that differ shown, so a reader can check that nothing but the run's own names changed;
every other file (evidence, scored runs, datasets, their OpenAI variants, quarantine) must be
identical.
"""

import difflib
import filecmp
from pathlib import Path

COMPARED_TREES = ("data/evidence", "data/scored-runs", "exports")
RUN_METADATA = frozenset({"exports/README.md"})
_SHOWN_LINES = 12


def _files(base: Path) -> set[str]:
    if not base.is_dir():
        return set()
    return {p.relative_to(base).as_posix() for p in base.rglob("*") if p.is_file()}


def compare_trees(incremental_root: Path, rebuild_root: Path, trees: tuple[str, ...] = COMPARED_TREES) -> dict:
    """Which data files differ in content or exist on one side only, per tree; run metadata apart."""
    report: dict = {"identical": True, "files_compared": 0, "trees": {}, "run_metadata": {}}
    for tree in trees:
        left, right = incremental_root / tree, rebuild_root / tree
        left_files = {rel for rel in _files(left) if f"{tree}/{rel}" not in RUN_METADATA}
        right_files = {rel for rel in _files(right) if f"{tree}/{rel}" not in RUN_METADATA}
        common = sorted(left_files & right_files)
        differing = [rel for rel in common if not filecmp.cmp(left / rel, right / rel, shallow=False)]
        entry = {
            "files": len(common),
            "differing": [f"{tree}/{rel}" for rel in differing],
            "only_incremental": sorted(f"{tree}/{rel}" for rel in left_files - right_files),
            "only_rebuild": sorted(f"{tree}/{rel}" for rel in right_files - left_files),
        }
        entry["identical"] = not (entry["differing"] or entry["only_incremental"] or entry["only_rebuild"])
        report["trees"][tree] = entry
        report["files_compared"] += len(common)
        report["identical"] = report["identical"] and entry["identical"]
    for rel in sorted(RUN_METADATA):
        report["run_metadata"][rel] = _diff_lines(incremental_root / rel, rebuild_root / rel)
    return report


def _diff_lines(incremental: Path, rebuild: Path) -> dict:
    if not (incremental.is_file() and rebuild.is_file()):
        return {"identical": incremental.is_file() == rebuild.is_file(), "changed_lines": []}
    left = incremental.read_text(errors="replace").splitlines()
    right = rebuild.read_text(errors="replace").splitlines()
    changed = [
        line[:200]
        for line in difflib.unified_diff(left, right, "incremental", "rebuild", n=0, lineterm="")
        if line.startswith(("-", "+")) and not line.startswith(("---", "+++"))
    ]
    return {"identical": not changed, "changed_lines": changed[:_SHOWN_LINES], "changed_total": len(changed)}
