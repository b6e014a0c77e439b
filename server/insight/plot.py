"""The trade-off plot of `compare --plot`: cost (memory or file size) against perplexity loss.

matplotlib is imported here only, on the Agg backend (no display needed), when a plot is drawn.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from server.insight.compare import Comparison

PlotX = Literal["memory", "size"]
_MIB = 2**20


def plot_tradeoff(comparison: Comparison, path: Path, *, x: PlotX = "memory") -> None:
    """Write a PNG: one labelled point per model, the Pareto front joined by a line.

    Raises OSError when the file cannot be written.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = comparison.rows
    xs = [(r.memory if x == "memory" else r.file_size) / _MIB for r in rows]
    ys = [r.delta_pct for r in rows]
    fig, ax = plt.subplots(figsize=(8, 5), dpi=100)
    try:
        ax.scatter(xs, ys, color="tab:blue", zorder=3)
        front = sorted((px, py) for row, px, py in zip(rows, xs, ys, strict=True) if row.pareto)
        if front:
            ax.plot(
                [p[0] for p in front],
                [p[1] for p in front],
                color="tab:red",
                linestyle="--",
                marker="o",
                zorder=2,
                label="Pareto front (nothing both smaller and better)",
            )
            ax.legend(loc="upper right")
        ax.axhline(0, color="grey", linewidth=0.8)
        if x == "memory":
            ax.set_xlabel(
                f"memory at {comparison.context} tokens, KV {comparison.type_k}/"
                f"{comparison.type_v} (MiB)"
            )
        else:
            ax.set_xlabel("file size (MiB)")
        references = sorted({r.reference for r in rows})
        ax.set_ylabel(f"Δ perplexity vs {', '.join(references)} (%)")
        ax.set_title(
            f"{comparison.text.name}: {comparison.chunks} windows of {comparison.window} tokens"
        )
        ax.grid(True, alpha=0.3)
        fig.tight_layout()
        _place_labels(fig, ax, [r.quant for r in rows], xs, ys)
        fig.savefig(path, format="png")
    finally:
        plt.close(fig)


# Offsets (points) tried in turn for a label, until it overlaps no label placed before it.
_OFFSETS = ((5, 5), (5, -12), (5, 16), (-8, 10), (5, -24), (5, 28), (-8, -20), (5, 40))


def _place_labels(fig: Any, ax: Any, labels: list[str], xs: list[float], ys: list[float]) -> None:
    """Label each point, moving a label that would overlap an earlier one."""
    renderer = fig.canvas.get_renderer()
    placed: list[Any] = []
    for label, px, py in sorted(zip(labels, xs, ys, strict=True), key=lambda p: (p[1], p[2])):
        text = None
        for dx, dy in _OFFSETS:
            if text is not None:
                text.remove()
            ha = "right" if dx < 0 else "left"
            text = ax.annotate(
                label, (px, py), textcoords="offset points", xytext=(dx, dy), ha=ha, fontsize=9
            )
            box = text.get_window_extent(renderer)
            if not any(box.overlaps(other) for other in placed):
                break
        assert text is not None
        placed.append(text.get_window_extent(renderer))
