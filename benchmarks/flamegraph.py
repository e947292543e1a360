"""Read py-spy's collapsed stacks (``--format raw``): where the time goes, as tables and an SVG.

py-spy writes one format per recording; we record the collapsed stacks once and derive both the
function-by-function tables (self and inclusive time per pipeline asset) and a flame graph from
them, so the tables and the picture come from the same samples.

Each sample is attributed to the first frame on its stack from a module under
``distillation_pipeline/defs/`` other than ``execute.py`` (which wraps the whole job): the asset
or check that was running (``evidence`` = collect, ``scored_runs`` = score, ...), or
``<module>`` while the definitions are imported. A worker process's stack (``lib/workers``)
holds no asset frame: its share of a split stage is attributed by the task it runs
(``WORKER_TASKS``). Samples with neither are Dagster's own work and the CLI around the job.
"""

import gzip
import html
import zlib
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

OUTSIDE = "(outside assets: Dagster, CLI)"
IMPORT = "(import of the definitions)"
# A worker's task -> the asset or check whose work it is: (function, file) as py-spy names them
WORKER_TASKS = {
    ("_collect_one", "distillation_pipeline/evidence/collect.py"): "evidence",
    ("_score_in_worker", "distillation_pipeline/scoring/stage.py"): "scored_runs",
    ("_prepare", "distillation_pipeline/exports/parallel_export.py"): "datasets",
    ("run_job", "distillation_pipeline/exports/parallel_verify.py"): "dataset_firewalls",
    ("_ready", "distillation_pipeline/lib/workers.py"): "(workers starting: imports)",
}


@dataclass
class Profile:
    stacks: list[tuple[tuple[str, ...], int]]  # (frames root first, samples)

    @property
    def total(self) -> int:
        return sum(count for _, count in self.stacks)


@dataclass
class Bucket:
    samples: int = 0
    self_time: Counter = field(default_factory=Counter)  # leaf frame -> samples
    inclusive: Counter = field(default_factory=Counter)  # frame anywhere on the stack -> samples


def read_collapsed(path: Path) -> Profile:
    """py-spy's raw output, plain or gzipped (the committed copies are gzipped)."""
    data = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    stacks = []
    for line in data.decode("utf-8", errors="replace").splitlines():
        frames, _, count = line.rpartition(" ")
        if frames and count.isdigit():
            stacks.append((tuple(frames.split(";")), int(count)))
    return Profile(stacks)


def asset_of(frames: tuple[str, ...]) -> str:
    for frame in frames:
        name = frame.split(" (", 1)[0]
        if "distillation_pipeline/defs/" in frame and "defs/execute.py" not in frame:
            return IMPORT if name == "<module>" else name
        for (task, file), asset in WORKER_TASKS.items():
            if name == task and file in frame:
                return asset
    return OUTSIDE


def by_asset(profile: Profile) -> dict[str, Bucket]:
    buckets: dict[str, Bucket] = defaultdict(Bucket)
    for frames, count in profile.stacks:
        bucket = buckets[asset_of(frames)]
        bucket.samples += count
        bucket.self_time[frames[-1]] += count
        for frame in set(frames):
            bucket.inclusive[frame] += count
    return dict(sorted(buckets.items(), key=lambda item: -item[1].samples))


def render_summary(profile: Profile, title: str, top: int = 25, min_share: float = 0.01) -> str:
    """Markdown: per asset, its share of all samples and its top functions by self and inclusive time."""
    total = profile.total or 1
    lines = [f"# {title}", "", f"{total:,} samples.", "", "| asset / check | samples | share |", "|---|---:|---:|"]
    buckets = by_asset(profile)
    lines += [f"| {name} | {b.samples:,} | {b.samples / total:.1%} |" for name, b in buckets.items()]
    for name, bucket in buckets.items():
        if bucket.samples / total < min_share:
            continue
        lines += ["", f"## {name}: {bucket.samples / total:.1%} of the run", ""]
        lines += [
            "Self time (the function's own code, and the C code it calls — orjson, pydantic-core, hashlib — "
            "unless recorded with --native):",
            "",
        ]
        lines += _frame_table(bucket.self_time, bucket.samples, top)
        lines += ["", "Inclusive time (the function and everything it calls):", ""]
        # Wrappers every sample passes through (main, cmd_run_all, the asset itself) say nothing.
        inclusive = Counter(
            {
                f: n
                for f, n in bucket.inclusive.items()
                if ("distillation_pipeline/" in f or "site-packages" in f) and n < bucket.samples
            }
        )
        lines += _frame_table(inclusive, bucket.samples, top)
    return "\n".join(lines) + "\n"


def _frame_table(counter: Counter, bucket_total: int, top: int) -> list[str]:
    rows = ["| function | samples | share of asset |", "|---|---:|---:|"]
    for frame, count in counter.most_common(top):
        rows.append(f"| `{_short(frame)}` | {count:,} | {count / bucket_total:.1%} |")
    return rows


def _short(frame: str) -> str:
    head, _, tail = frame.partition("(")
    for marker in ("site-packages/", "lib/python3.11/"):
        if marker in tail:  # not in a root frame py-spy adds per process ('process N:"<command>"')
            return f"{head}({tail.split(marker, 1)[1]}"
    return frame


# ---------------------------------------------------------------------------------------------
# flame graph
# ---------------------------------------------------------------------------------------------

_WIDTH, _ROW, _FONT_PX = 1600, 16, 11


@dataclass
class _Node:
    name: str
    samples: int = 0
    children: dict[str, "_Node"] = field(default_factory=dict)


def _tree(profile: Profile) -> _Node:
    root = _Node("all")
    for frames, count in profile.stacks:
        root.samples += count
        node = root
        for frame in frames:
            node = node.children.setdefault(frame, _Node(frame))
            node.samples += count
    return root


def _depth(node: _Node) -> int:
    return 1 + max((_depth(child) for child in node.children.values()), default=0)


def _colour(name: str) -> str:
    ours = "distillation_pipeline/" in name
    shade = zlib.crc32(name.split(" (", 1)[0].encode()) % 60
    return f"rgb({200 + shade // 2},{90 + shade},{40})" if ours else f"rgb({90 + shade},{130 + shade},{190})"


def write_svg(profile: Profile, path: Path, title: str) -> None:
    """A flame graph (root at the bottom); ours in warm colours, libraries in cool ones."""
    root = _tree(profile)
    depth = _depth(root)
    height = (depth + 2) * _ROW
    scale = _WIDTH / max(root.samples, 1)
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{_WIDTH}" height="{height}" font-family="monospace" '
        f'font-size="{_FONT_PX}">',
        f'<rect width="100%" height="100%" fill="#fafafa"/><text x="4" y="{_ROW - 4}">{html.escape(title)} '
        f"({root.samples:,} samples; hover for names)</text>",
    ]

    def draw(node: _Node, x: float, level: int) -> None:
        width = node.samples * scale
        if width < 0.3:
            return
        y = height - (level + 1) * _ROW
        label = f"{node.name} ({node.samples:,} samples, {node.samples / root.samples:.1%})"
        parts.append(
            f'<g><title>{html.escape(label)}</title><rect x="{x:.1f}" y="{y}" width="{width:.1f}" '
            f'height="{_ROW - 1}" fill="{_colour(node.name)}"/>'
        )
        chars = int(width / (_FONT_PX * 0.62))
        if chars >= 4:
            text = node.name if len(node.name) <= chars else node.name[: chars - 2] + ".."
            parts.append(f'<text x="{x + 2:.1f}" y="{y + _ROW - 4}">{html.escape(text)}</text>')
        parts.append("</g>")
        child_x = x
        for child in sorted(node.children.values(), key=lambda c: c.name):
            draw(child, child_x, level + 1)
            child_x += child.samples * scale

    draw(root, 0.0, 0)
    parts.append("</svg>")
    path.write_text("\n".join(parts))


# ---------------------------------------------------------------------------------------------
# line by line (recorded without --function, so every frame carries its current line)
# ---------------------------------------------------------------------------------------------


def render_lines(profile: Profile, title: str, file_marker: str, within: str, top: int = 20) -> str:
    """Markdown: samples per line of ``file_marker`` (the deepest such frame on each stack), over
    the stacks that pass through a frame containing ``within``; with the callee each line spends in."""
    lines_hit: Counter = Counter()
    callees: dict[str, Counter] = defaultdict(Counter)
    total = 0
    for frames, count in profile.stacks:
        if not any(within in frame for frame in frames):
            continue
        total += count
        deepest = max((i for i, frame in enumerate(frames) if file_marker in frame), default=None)
        if deepest is None:
            continue
        lines_hit[frames[deepest]] += count
        callee = frames[deepest + 1] if deepest + 1 < len(frames) else "(the line itself)"
        callees[frames[deepest]][_short(callee)] += count
    out = [
        f"# {title}",
        "",
        f"{total:,} samples inside `{within}`.",
        "",
        "| line | samples | share | mostly in |",
        "|---|---:|---:|---|",
    ]
    for frame, count in lines_hit.most_common(top):
        callee, _ = callees[frame].most_common(1)[0]
        out.append(f"| `{_short(frame)}` | {count:,} | {count / (total or 1):.1%} | `{callee}` |")
    return "\n".join(out) + "\n"
