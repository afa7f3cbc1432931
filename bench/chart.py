"""The bench's chart: one panel per headline figure, a bar per system with its min–max range."""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import TYPE_CHECKING

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

if TYPE_CHECKING:
    from .run import Results

#: (variant, metric, panel title, issue 6's absolute target for pluv-widget) — the figures
#: issue 6 sets targets on, plus issue 2's.
PANELS: list[tuple[str, str, str, float | None]] = [
    ("fanout-20", "rate", "storage fan-out 1×20\nedits delivered/s (higher is better)", None),
    ("fanout-50", "rate", "storage fan-out 1×50\nedits delivered/s (higher is better)", None),
    ("presence-5hz", "p99", "presence 60 × 5 Hz\nlatency p99, ms (lower is better)", None),
    ("presence-10hz", "p99", "presence 60 × 10 Hz\nlatency p99, ms (lower is better)", None),
    ("presence-burst", "time", "presence 50 × 50 all-to-all\ntime, s (lower is better)", None),
    ("join", "time", "join a 5 MB document\nms (lower is better)", 200.0),
    ("memory-room", "per", "1,000 connections in one room\nKiB per connection (lower is better)", 20.0),
    ("memory-rooms", "per", "2,000 one-connection rooms\nKiB per room (lower is better)", 30.0),
]

COLORS = {
    "pluv-widget": "#d9480f",
    "@y/websocket-server": "#1c7ed6",
    "pycrdt-websocket": "#5f3dc4",
    "raw relay": "#868e96",
}


def chart(results: Results, path: Path) -> Path:
    panels = [panel for panel in PANELS if any(v.key == panel[0] for v in results.variants)]
    columns = 4
    rows = max(1, -(-len(panels) // columns))
    figure, axes = plt.subplots(rows, columns, figsize=(4.2 * columns, 3.6 * rows), squeeze=False)
    for axis in axes.flat[len(panels) :]:
        axis.set_visible(False)
    for axis, (variant, metric, title, target) in zip(axes.flat, panels, strict=False):
        names, heights, lows, highs, colors, labels = [], [], [], [], [], []
        for system in results.systems:
            values = [v for v in results.values(variant, system, metric) if v != float("inf")]
            lost = len(results.values(variant, system, metric)) - len(values)
            names.append(system.replace("@y/websocket-server", "@y/ws-server").replace("pycrdt-websocket", "pycrdt-ws"))
            colors.append(COLORS.get(system, "#495057"))
            if not values:
                heights.append(0.0)
                lows.append(0.0)
                highs.append(0.0)
                labels.append("lost" if lost else "n/a")
                continue
            middle = statistics.median(values)
            heights.append(middle)
            lows.append(middle - min(values))
            highs.append(max(values) - middle)
            labels.append(f"{middle:,.0f}" if middle >= 100 else f"{middle:.1f}")
        positions = range(len(names))
        axis.bar(positions, heights, color=colors, yerr=[lows, highs], capsize=4)
        for x, height, label in zip(positions, heights, labels, strict=True):
            axis.annotate(
                label, (x, height), ha="center", va="bottom", fontsize=8, xytext=(0, 2), textcoords="offset points"
            )
        if target is not None:
            axis.axhline(target, color="#d9480f", linestyle="--", linewidth=1)
            axis.annotate("target", (len(names) - 0.5, target), ha="right", va="bottom", fontsize=7, color="#d9480f")
        axis.set_xticks(list(positions), names, rotation=20, fontsize=8)
        axis.set_title(title, fontsize=9)
        axis.grid(axis="y", alpha=0.3)
    figure.suptitle("pluv-widget beside its peers (median of repetitions, bars: min–max)", fontsize=11)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path
