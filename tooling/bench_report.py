"""Benchmark reports (tooling.bench --json) as one markdown table and one plot.

    python -m tooling.bench_report out/bench/*.json --plot docs/benchmarks.png

Prints a markdown table with a row per video; the plot shows, for each video, the
decode-only, pipeline and naive frame rates, and the model's faces/s by batch size for
each execution provider and model file. matplotlib comes with the `train` extra.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Sequence

COLUMNS = (
    "video", "size", "frames", "detect every", "decode fps", "pipeline fps", "naive fps", "pipeline / naive",
    "pipeline / decode", "pipeline CPU ms/frame", "detect p50/p99 ms", "infer p50/p99 ms",
    "peak RSS MB", "tracks (true)", "ID switches", "recall", "load avg",
)


def load(paths: Sequence[Path]) -> list[dict[str, Any]]:
    return [json.loads(Path(p).read_text()) for p in paths]


def _num(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _latency(report: dict[str, Any], stage: str) -> str:
    s = report["pipeline_stages"].get(stage)
    return f"{s['p50_ms']:.1f} / {s['p99_ms']:.1f}" if s else "-"


def row(report: dict[str, Any]) -> list[str]:
    src, ratios, tracking = report["source"], report["ratios"], report.get("tracking") or {}
    true_people = tracking.get("true_people")
    return [
        Path(src["path"]).name,
        f"{src['width']}x{src['height']}",
        str(src["frames_measured"]),
        str((report["settings"].get("detect_every") or [1])[0]),
        _num(report["decode_fps"]),
        _num(report["pipeline_fps"]),
        _num(report["naive_fps"]),
        _num(ratios["pipeline_vs_naive"], 2) + "x",
        _num(ratios["pipeline_vs_decode"], 2) + "x",
        _num(report["pipeline"]["cpu_ms_per_frame"]),
        _latency(report, "detect"),
        _latency(report, "infer"),
        _num(report["peak_rss_mb"], 0),
        f"{tracking['tracks']} ({true_people})" if tracking else "-",
        str(tracking["id_switches"]) if tracking else "-",
        _num(tracking.get("recall"), 3) if tracking else "-",
        _num((report["load_average"]["before"] or [None])[0]),
    ]


def markdown_table(reports: Sequence[dict[str, Any]]) -> str:
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(row(r)) + " |" for r in reports]
    return "\n".join(lines)


def intervals_table(reports: Sequence[dict[str, Any]]) -> str:
    """Each video's pipeline at every detector interval it was measured with, side by side."""
    lines = ["| video | detect every | pipeline fps | pipeline / naive | pipeline / decode | people | ID switches | recall |", "|---|---|---|---|---|---|---|---|"]
    for report in reports:
        for r in report.get("detect_every", []):
            tracking = r.get("tracking") or {}
            lines.append(
                f"| {Path(report['source']['path']).name} | {r['detect_every']} | {_num(r['fps'])} | {_num(r['vs_naive'], 2)}x | "
                f"{_num(r['vs_decode'], 2)}x | {r['people']} | {tracking.get('id_switches', '-')} | {_num(tracking.get('recall'), 3) if tracking else '-'} |"
            )
    return "\n".join(lines)


def throughput_table(report: dict[str, Any]) -> str:
    batches = report["settings"]["batches"]
    lines = ["| model | provider | " + " | ".join(f"batch {b}" for b in batches) + " |", "|---|---|" + "---|" * len(batches)]
    rows: dict[tuple[str, str], dict[int, str]] = {}
    for r in report["model_throughput"]:
        key = (Path(r["model"]).name, r.get("provider", r["device"]))
        rows.setdefault(key, {})[r.get("batch", 0)] = _num(r["faces_per_s"]) if "faces_per_s" in r else "error"
    for (name, provider), cells in rows.items():
        lines.append(f"| {name} | {provider} | " + " | ".join(cells.get(b, "-") for b in batches) + " |")
    return "\n".join(lines)


def plot(reports: Sequence[dict[str, Any]], out: Path, before: Sequence[dict[str, Any]] = ()) -> None:
    """The figure; `before`: reports of an earlier version, matched by video, drawn beside the pipeline."""
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt
    import numpy as np

    fig, (bars, curve) = plt.subplots(1, 2, figsize=(13, 4.8), gridspec_kw={"width_ratios": [1.5, 1]})
    names = [f"{Path(r['source']['path']).stem}\n{r['source']['width']}x{r['source']['height']}" for r in reports]
    earlier = {Path(r["source"]["path"]).name: r for r in before}
    series = [
        ("decode only", [r["decode_fps"] for r in reports]),
        ("pipeline", [r["pipeline_fps"] for r in reports]),
        ("naive", [r["naive_fps"] or 0.0 for r in reports]),
    ]
    if earlier:
        old = [earlier.get(Path(r["source"]["path"]).name, {}).get("pipeline_fps") or 0.0 for r in reports]
        series.insert(1, ("pipeline before", old))
    x, width = np.arange(len(reports)), 0.8 / len(series)
    for i, (label, values) in enumerate(series):
        drawn = bars.bar(x + (i - (len(series) - 1) / 2) * width, values, width, label=label)
        bars.bar_label(drawn, fmt="%.0f", fontsize=7, padding=1)
    bars.set_yscale("log")
    bars.set_xticks(x, names, fontsize=8)
    bars.set_ylabel("frames per second (log scale)")
    bars.axhline(25, color="grey", linewidth=0.8, linestyle=":")
    bars.set_title("whole video: decode only, pipeline, naive")
    bars.legend(fontsize=8)

    seen: set[tuple[str, str]] = set()
    for report in reports[:1]:  # the model rows are the same measurement in every report
        for r in report["model_throughput"]:
            key = (Path(r["model"]).name, r.get("provider", r["device"]))
            if key in seen or "faces_per_s" not in r:
                continue
            seen.add(key)
            points = sorted((q["batch"], q["faces_per_s"]) for q in report["model_throughput"]
                            if (Path(q["model"]).name, q.get("provider", q["device"])) == key and "faces_per_s" in q)
            curve.plot(*zip(*points), marker="o", label=f"{key[0]} on {key[1].removesuffix('ExecutionProvider')}")
    curve.set_xscale("log", base=2)
    batches = reports[0]["settings"]["batches"]
    curve.set_xticks(batches, [str(b) for b in batches])
    curve.set_xlabel("batch size")
    curve.set_ylabel("faces per second")
    curve.set_ylim(bottom=0)
    curve.set_title("model throughput by batch size")
    curve.legend(fontsize=8)
    machine = reports[0]["machine"]
    fig.suptitle(f"{machine['cpu_model']}, {machine['logical_cores']} cores, no GPU; see docs/benchmarks.md", fontsize=9)
    fig.tight_layout()
    fig.savefig(out, dpi=120)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tooling.bench_report", description=__doc__.split("\n\n")[0])
    parser.add_argument("reports", nargs="+", type=Path, help="JSON files written by tooling.bench --json")
    parser.add_argument("--plot", type=Path, help="write the plot here (.png)")
    parser.add_argument("--before", nargs="*", type=Path, default=[], help="reports of an earlier version, to draw beside")
    args = parser.parse_args(argv)
    try:
        reports, before = load(args.reports), load(args.before)
    except (OSError, ValueError, KeyError) as exc:
        print(f"error: cannot read the reports: {exc}", file=sys.stderr)
        return 2
    print(markdown_table(reports))
    print()
    print(intervals_table(reports))
    print()
    print(throughput_table(reports[0]))
    if args.plot is not None:
        plot(reports, args.plot, before)
        print(f"\nplot written to {args.plot}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
