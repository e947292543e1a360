"""Turn the results dict into ``results.json``, ``results.md`` and the two log-log plots.

The targets of issue 7 are evaluated here, as findings (met / missed), never as assertions.
Hand-written profile findings in ``benchmarks/profiles/FINDINGS.md`` are appended verbatim to
``results.md`` so a regenerated report keeps them.
"""

import math
from pathlib import Path

import orjson

from benchmarks.pipeline_run import TIMED_STAGES as STAGES

MB = 1024 * 1024
RATIO_TARGET = 3.0
RSS_TARGET_MB = 1024.0
# "Not growing with input": the log-log slope of peak RSS against rows between the two largest
# sizes. 0.1 allows +26 % for 10x the rows (caches, interpreter arenas); 1.0 would be linear.
RSS_FLAT_SLOPE = 0.1
INCREMENTAL_SHARE_TARGET = 0.05
RETRIEVAL_P50_TARGET_MS = 5.0
TARGET_ROWS = 1_000_000


# ---------------------------------------------------------------------------------------------
# targets
# ---------------------------------------------------------------------------------------------


def evaluate_targets(results: dict) -> list[dict]:
    targets: list[dict] = []
    sizes = results["sizes"]
    if sizes:
        largest = sizes[-1]
        at = _at(largest["rows"])
        wall, cpu = largest["ratio_to_floor"], largest["cpu_ratio_to_floor"]
        targets.append(
            _target(
                f"full pipeline within {RATIO_TARGET:g}x the floor {at}",
                f"{wall:.1f}x wall (CPU {cpu:.1f}x)",
                wall <= RATIO_TARGET,
                cpu <= RATIO_TARGET,
            )
        )
        peak = largest["pipeline"]["peak_rss_mb"]
        targets.append(_target(f"peak RSS under 1 GB {at}", f"{peak:.0f} MB", peak < RSS_TARGET_MB))
    if len(sizes) >= 2:
        small, large = sizes[-2], sizes[-1]
        growth = large["pipeline"]["peak_rss_mb"] / small["pipeline"]["peak_rss_mb"]
        scale = large["rows"] / small["rows"]
        slope = math.log(growth) / math.log(scale)
        targets.append(
            _target(
                f"peak RSS not growing with input ({_rows(small['rows'])} -> {_rows(large['rows'])} rows; "
                f"flat = log-log slope at most {RSS_FLAT_SLOPE:g})",
                f"{growth:.2f}x for {scale:g}x the rows (slope {slope:.2f})",
                slope <= RSS_FLAT_SLOPE,
            )
        )
    incremental = results.get("incremental")
    if incremental:
        share, cpu_share = incremental["share_of_full"], incremental["cpu_share_of_full"]
        targets.append(
            _target(
                f"incremental 1 % run at most {INCREMENTAL_SHARE_TARGET:.0%} of the full run "
                f"{_at(incremental['rows'])}",
                f"{share:.1%} wall (CPU {cpu_share:.1%})",
                share <= INCREMENTAL_SHARE_TARGET,
                cpu_share <= INCREMENTAL_SHARE_TARGET,
            )
        )
        comparison = incremental["comparison"]
        identical = comparison["identical"]
        measured = "identical" if identical else "DIFFERENT"
        cards = [rel for rel, diff in comparison.get("run_metadata", {}).items() if not diff["identical"]]
        if cards:
            measured += f" (apart from {', '.join(cards)}, which names its run: see below)"
        targets.append(_target("incremental outputs byte-identical to a full rebuild", measured, identical))
    retrieval = [r for r in results.get("retrieval", []) if "jaccard" in r]
    if retrieval:
        largest = retrieval[-1]
        p50 = largest["jaccard"]["p50_ms"]
        targets.append(
            _target(
                f"retrieval p50 at most {RETRIEVAL_P50_TARGET_MS:g} ms (jaccard) {_at(largest['records'])}",
                f"{p50:.2f} ms",
                p50 <= RETRIEVAL_P50_TARGET_MS,
            )
        )
        exact = largest.get("topk_equals_scan")
        if exact is not None:
            targets.append(
                _target(
                    f"indexed Jaccard top-K equals the exhaustive scan {_at(largest['records'])}",
                    largest["indexed_equals_exact"],
                    exact,
                )
            )
    return targets


def _target(name: str, measured: str, met: bool, met_on_cpu: bool | None = None) -> dict:
    """Judged on wall time, as the issue states the targets; where CPU time would judge otherwise
    (other work competing for the cores stretches wall time, not CPU time) the entry says so."""
    target = {"target": name, "measured": measured, "met": bool(met)}
    if met_on_cpu is not None and bool(met_on_cpu) != bool(met):
        target["measured"] += " — met on CPU time" if met_on_cpu else " — missed on CPU time"
    return target


def _at(rows: int) -> str:
    note = "" if rows >= TARGET_ROWS else f" (target is at {_rows(TARGET_ROWS)}; largest measured)"
    return f"at {_rows(rows)}{note}"


def _rows(n: int) -> str:
    for unit, size in (("M", 1_000_000), ("k", 1_000)):
        if n >= size and n % size == 0:
            return f"{n // size}{unit}"
    return str(n)


# ---------------------------------------------------------------------------------------------
# files
# ---------------------------------------------------------------------------------------------


def write_all(results: dict, out_dir: Path) -> None:
    results["targets"] = evaluate_targets(results)
    (out_dir / "results.json").write_bytes(
        orjson.dumps(results, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS) + b"\n"
    )
    plots = write_plots(results, out_dir)
    (out_dir / "results.md").write_text(render_markdown(results, plots, out_dir))


def write_plots(results: dict, out_dir: Path) -> list[str]:
    sizes = results["sizes"]
    if len(sizes) < 2:
        return []
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [s["rows"] for s in sizes]

    fig, ax = plt.subplots(figsize=(7, 5))
    ax.plot(rows, [s["pipeline"]["wall_s"] for s in sizes], "o-", linewidth=2.5, label="pipeline total (wall)")
    ax.plot(rows, [s["pipeline"]["cpu_s"] for s in sizes], "o:", linewidth=1.5, label="pipeline total (CPU)")
    for stage in STAGES:
        values = [s["pipeline"]["stages"].get(stage, {}).get("seconds") for s in sizes]
        if all(v is not None and v > 0 for v in values):
            ax.plot(rows, values, ".--", label=stage)
    floor = [s["floor"]["seconds"] for s in sizes]
    ax.plot(rows, floor, "s-", color="black", label="floor (parse + sha256 + write)")
    ax.plot(rows, [RATIO_TARGET * f for f in floor], ":", color="black", label=f"target: {RATIO_TARGET:g}x floor")
    _log_log(ax, "seconds", "Time vs source rows")
    fig.savefig(out_dir / "time_vs_size.png", dpi=110, bbox_inches="tight")
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(7, 5))
    ax.plot(rows, [s["pipeline"]["peak_rss_mb"] for s in sizes], "o-", linewidth=2.5, label="pipeline peak RSS")
    for stage in STAGES:
        values = [s["pipeline"]["stages"].get(stage, {}).get("peak_rss_mb") for s in sizes]
        if all(v is not None for v in values):
            ax.plot(rows, values, ".--", label=f"{stage} (sampled)")
    ax.axhline(RSS_TARGET_MB, linestyle=":", color="black", label="target: 1 GB")
    _log_log(ax, "MB", "Peak RSS vs source rows")
    fig.savefig(out_dir / "memory_vs_size.png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return ["time_vs_size.png", "memory_vs_size.png"]


def _log_log(ax, ylabel: str, title: str) -> None:
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("source rows")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)


# ---------------------------------------------------------------------------------------------
# markdown
# ---------------------------------------------------------------------------------------------


def _table(header: list[str], rows: list[list]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---:" if i else "---" for i in range(len(header))) + "|"]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return lines + [""]


def _code(results: dict) -> str:
    """The git sha(s) the receipts name: other engineers may commit while a long run goes on."""
    shas = sorted({s["pipeline"].get("git_sha", "unknown") for s in results["sizes"]})
    text = ", ".join(f"`{sha}`" for sha in shas) or "unknown"
    if any(sha.endswith("-dirty") for sha in shas):
        # run.py writes partial results after each size, so from the second size on the tree
        # differs from its commit by benchmarks/results.* (and by anything else changed meanwhile)
        text += " (`-dirty` from the second size on: this harness rewrites `benchmarks/results.*` after each size)"
    return text


def _opt(value: float | None, spec: str) -> str:
    return "" if value is None else format(value, spec)


def _mb(n: int) -> str:
    return f"{n / MB:,.1f}"


def render_markdown(results: dict, plots: list[str], out_dir: Path) -> str:
    sizes = results["sizes"]
    machine = results["machine"]
    out = [
        "# Benchmark results (issue 7)",
        "",
        f"Generated by `{results['command']}` on {results['generated_at']}: {machine['cpus']} CPUs, "
        f"{machine['platform']}, Python {machine['python']}. Load average at start "
        f"{machine['load_at_start']}; code {_code(results)}. The machine is shared, so wall times carry noise — "
        "the ratio to the floor (measured in the same run, on the same bytes) is the number that compares across "
        "machines.",
        "",
        f"Substrate: `distillation_pipeline.sample.generate_substrate` (seed {results['seed']}, messy). "
        f"Pipeline: `distill run-all --recorded-at {results['recorded_at']}` as a child process with the "
        "persistent Dagster instance. Stage seconds and rows come from the stage receipts (`duration_ms`, "
        "`counts.records_in`); *outside stages* is interpreter and Dagster start-up, receipt hashing, "
        f"summary and drift. Python + Dagster start-up alone (`import distillation_pipeline.definitions`): "
        f"{results['startup_s']:.2f} s.",
        "",
        "## Targets",
        "",
    ]
    out += _table(
        ["target", "measured", "met"],
        [[t["target"], t["measured"], "met" if t["met"] else "**MISSED**"] for t in results["targets"]],
    )

    out += ["## Full pipeline per size", ""]
    out += _table(
        [
            "rows",
            "source lines",
            "sources MB",
            "total wall s",
            "in stages s",
            "outside stages s",
            "CPU s",
            "floor s",
            "ratio to floor",
            "stages / floor",
            "CPU / floor CPU",
            "peak RSS MB (largest process)",
            "load avg before / after",
        ],
        [
            [
                f"{s['rows']:,}",
                f"{s['substrate']['source_lines']:,}",
                _mb(s["output_bytes"]["sources"]),
                f"{s['pipeline']['wall_s']:.1f}",
                f"{s['pipeline']['stage_s']:.1f}",
                f"{s['pipeline']['outside_stages_s']:.1f}",
                f"{s['pipeline']['cpu_s']:.1f}",
                f"{s['floor']['seconds']:.2f}",
                f"{s['ratio_to_floor']:.1f}x",
                f"{s['stage_ratio_to_floor']:.1f}x",
                f"{s['cpu_ratio_to_floor']:.1f}x",
                f"{s['pipeline']['peak_rss_mb']:.0f} ({_opt(s['pipeline'].get('largest_process_rss_mb'), '.0f')})",
                f"{s['pipeline']['load_before'][0]:.1f} / {s['pipeline']['load_after'][0]:.1f}",
            ]
            for s in sizes
        ],
    )
    out += [
        "## Per stage",
        "",
        "Rows/s is the stage's `records_in` over its receipt's duration. Peak RSS and CPU s "
        "are sampled from `/proc` every 0.1 s over the stage's receipt window, over the whole process "
        "tree: the stages' and checks' worker processes (`lib/workers`) are summed with the main one.",
        "",
    ]
    stage_rows = []
    for s in sizes:
        for stage in STAGES:
            t = s["pipeline"]["stages"].get(stage)
            if t:
                stage_rows.append(
                    [
                        f"{s['rows']:,}",
                        stage,
                        f"{t['seconds']:.2f}",
                        _opt(t.get("cpu_s"), ".2f"),
                        f"{t['records_in']:,}",
                        f"{t['rows_per_s']:,}",
                        _opt(t["peak_rss_mb"], ".0f"),
                    ]
                )
    out += _table(["rows", "stage", "seconds", "CPU s", "records in", "rows/s", "peak RSS MB"], stage_rows)

    out += ["## Output sizes (MB)", ""]
    keys = sorted({k for s in sizes for k in s["output_bytes"]}, key=lambda k: (k != "sources", k))
    out += _table(
        ["rows", *keys], [[f"{s['rows']:,}", *(_mb(s["output_bytes"].get(k, 0)) for k in keys)] for s in sizes]
    )

    out += [
        "## Floor",
        "",
        "Every non-blank source line: `orjson.loads`, `sha256(canonical_json(row))`, and the digest "
        "and canonical line written back out (`benchmarks/floor.py`), in the harness process.",
        "",
    ]
    out += _table(
        ["rows", "lines", "unparsable", "seconds", "CPU s", "lines/s"],
        [
            [
                f"{s['rows']:,}",
                f"{s['floor']['lines']:,}",
                f"{s['floor']['unparsable']:,}",
                f"{s['floor']['seconds']:.2f}",
                f"{s['floor']['cpu_s']:.2f}",
                f"{s['floor']['lines_per_s']:,}",
            ]
            for s in sizes
        ],
    )

    incremental = results.get("incremental")
    if incremental:
        out += _incremental_section(incremental)
    if results.get("retrieval"):
        out += _retrieval_section(results["retrieval"])
    if plots:
        out += ["## Plots", ""] + [f"![{name}]({name})" for name in plots] + [""]
    findings = out_dir / "profiles" / "FINDINGS.md"
    if findings.exists():
        out += [findings.read_text().rstrip(), ""]
    return "\n".join(out)


def _incremental_section(inc: dict) -> list[str]:
    out = [
        "## Incremental run",
        "",
        f"After the full run at {inc['rows']:,} rows, {inc['increment']['rows_appended']:,} new well-formed rows "
        f"(a clean substrate at seed {inc['increment']['seed']}, ids prefixed `{inc['increment']['id_prefix']}`) were "
        "appended at the end of the stream files and `run-all` ran again on the same root. Then a fresh root with the "
        "same final sources was built from scratch with the same `--recorded-at`, and the trees were compared byte for "
        "byte.",
        "",
    ]
    torn = inc["increment"].get("torn_tails_cut")
    if torn:
        out += [
            "Before appending, the torn last line of "
            + ", ".join(f"`{stream}` ({n} bytes)" for stream, n in sorted(torn.items()))
            + " was cut with `lib.atomic.repair_torn_tail`, as the project's writers do; the collector re-collects "
            "those streams because already-read bytes changed.",
            "",
        ]
    full, run, rebuild = inc["full"], inc["run"], inc["rebuild"]
    rows = [
        [
            label,
            f"{r['wall_s']:.1f}",
            f"{r['cpu_s']:.1f}",
            f"{r['stage_s']:.1f}",
            f"{r['peak_rss_mb']:.0f}",
            f"{r['load_before'][0]:.1f} / {r['load_after'][0]:.1f}",
        ]
        for label, r in (("full run", full), ("incremental (+1 %)", run), ("full rebuild of final sources", rebuild))
    ]
    out += _table(["run", "wall s", "CPU s", "in stages s", "peak RSS MB", "load avg before / after"], rows)
    out += [
        f"Incremental share of the full run: **{inc['share_of_full']:.1%}** of wall time, "
        f"{inc['cpu_share_of_full']:.1%} of CPU time, {inc['stage_share_of_full']:.1%} of in-stage time.",
        "",
    ]
    stage_rows = []
    for stage in STAGES:
        f, i = full["stages"].get(stage), run["stages"].get(stage)
        if f and i:
            share = i["seconds"] / f["seconds"] if f["seconds"] else 0.0
            stage_rows.append(
                [
                    stage,
                    f"{f['seconds']:.2f}",
                    f"{i['seconds']:.2f}",
                    f"{share:.0%}",
                    _opt(f.get("cpu_s"), ".2f"),
                    _opt(i.get("cpu_s"), ".2f"),
                    f"{i['records_in']:,}",
                ]
            )
    out += _table(
        [
            "stage",
            "full s",
            "incremental s",
            "share",
            "full CPU s",
            "incremental CPU s",
            "incremental records in (receipt)",
        ],
        stage_rows,
    )
    out += [
        "Receipts count what is on record after the run (cumulative), so records in are the whole tree; "
        "what each stage actually read this run is in its asset metadata (collect `new_rows_read`, score "
        "`new_records`, export `reused_positions`).",
        "",
    ]
    comparison = inc["comparison"]
    if comparison["identical"]:
        out += [
            f"Byte identity with the full rebuild: **identical** ({comparison['files_compared']:,} files in "
            + ", ".join(f"`{t}`" for t in comparison["trees"])
            + ").",
            "",
        ]
    else:
        out += ["Byte identity with the full rebuild: **DIFFERENT**.", ""]
        for tree, entry in comparison["trees"].items():
            problems = (
                entry["differing"]
                + [f"{p} (only incremental)" for p in entry["only_incremental"]]
                + [f"{p} (only rebuild)" for p in entry["only_rebuild"]]
            )
            if problems:
                shown = problems[:20]
                out += [f"- `{tree}`: {len(problems)} of {entry['files']} files differ:"] + [
                    f"  - `{p}`" for p in shown
                ]
                if len(problems) > len(shown):
                    out.append(f"  - … and {len(problems) - len(shown)} more (see results.json)")
        out.append("")
    for rel, diff in comparison.get("run_metadata", {}).items():
        if diff["identical"]:
            out += [f"`{rel}` (run metadata): identical.", ""]
            continue
        out += [
            f"`{rel}` is run metadata (the dataset card names the run that wrote it), compared apart: "
            f"{diff.get('changed_total', 0)} changed line(s), `-` incremental, `+` rebuild:",
            "",
            "```diff",
            *diff["changed_lines"],
            "```",
            "",
        ]
    return out


def _retrieval_section(retrieval: list[dict]) -> list[str]:
    out = [
        "## Retrieval (replay)",
        "",
        "`benchmarks/retrieval_bench.py` per size, as a child process: a synthetic "
        "RagSample corpus, index build and on-disk cache save, reload, then the same queries in each mode; "
        "top-K equality is the indexed Jaccard against the exhaustive scan, ids and scores.",
        "",
    ]
    rows = []
    for r in retrieval:
        if "jaccard" not in r:
            rows.append([f"{r['records']:,}", r.get("error", "failed"), "", "", "", "", "", "", "", ""])
            continue
        rows.append(
            [
                f"{r['records']:,}",
                f"{r['build_and_save_s']:.2f}",
                f"{r['reload_from_disk_cache_s']:.2f}",
                f"{r['jaccard']['p50_ms']:.2f}",
                f"{r['jaccard']['p95_ms']:.2f}",
                f"{r['bm25']['p50_ms']:.2f}",
                f"{r['bm25']['p95_ms']:.2f}",
                f"{r['jaccard_exact']['p50_ms']:.1f}" if "jaccard_exact" in r else "",
                r.get("indexed_equals_exact", "not run"),
                f"{r['peak_rss_mb']:.0f}",
            ]
        )
    out += _table(
        [
            "records",
            "build + save s",
            "reload s",
            "jaccard p50 ms",
            "jaccard p95 ms",
            "bm25 p50 ms",
            "bm25 p95 ms",
            "scan p50 ms",
            "top-K = scan",
            "peak RSS MB",
        ],
        rows,
    )
    return out


def main(argv: list[str] | None = None) -> int:
    """Re-render results.md and the plots from results.json (after editing profiles/FINDINGS.md)."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m benchmarks.report", description=main.__doc__)
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent)
    args = parser.parse_args(argv)
    write_all(orjson.loads((args.out / "results.json").read_bytes()), args.out)
    print(f"wrote {args.out / 'results.md'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
