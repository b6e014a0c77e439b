"""Terminal output of the measuring commands: progress bars on stderr, results on stdout."""

from __future__ import annotations

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from server.insight.measure import ChunkProgress
from server.insight.results import PerplexityResult


class ScoreView:
    """One bar per pass: windows done, the running perplexity, time spent and left."""

    def __init__(self, console: Console) -> None:
        self._progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("windows  {task.fields[ppl]}"),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            console=console,
        )
        self._tasks: dict[str, TaskID] = {}
        self.last: ChunkProgress | None = None

    def __enter__(self) -> ScoreView:
        self._progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._progress.stop()

    def update(self, event: ChunkProgress) -> None:
        self.last = event
        task = self._tasks.get(event.label)
        if task is None:
            task = self._tasks[event.label] = self._progress.add_task(
                event.label, total=None, ppl="loading"
            )
        ppl = f"ppl {event.ppl:.4f}" if event.ppl is not None else ""
        self._progress.update(
            task,
            completed=event.done,
            total=event.total or None,
            ppl=ppl if event.total else "loading",
        )

    def interrupted(self) -> str:
        """One line saying how far the interrupted pass got."""
        last = self.last
        if last is None or not last.total:
            return "interrupted before scoring started; nothing was cached"
        so_far = f", perplexity so far {last.ppl:.4f}" if last.ppl is not None else ""
        return (
            f"interrupted after {last.done}/{last.total} windows of {last.label}{so_far}; "
            "nothing was cached"
        )


def perplexity_lines(result: PerplexityResult) -> list[str]:
    """A perplexity result as a few aligned lines."""
    lines = [
        f"{result.model} ({result.quant}) on {result.text.name}: {result.chunks} windows of "
        f"{result.n_ctx} tokens, {result.tokens_scored} scored, KV {result.type_k}/{result.type_v}",
        f"  perplexity      {result.ppl:.4f} ± {result.ppl_error:.4f}",
    ]
    kld = result.kld
    if kld is not None:
        lines += [
            f"  vs {kld.reference}   {kld.delta_pct:+.2f}% ± {100 * kld.ppl_ratio_error:.2f}% "
            f"(PPL ratio {kld.ppl_ratio:.4f})",
            f"  KL divergence   mean {kld.mean:.5f} ± {kld.mean_error:.5f}   median "
            f"{kld.median:.5f}   99% {kld.p99:.4f}   max {kld.maximum:.4f}",
            f"  same top token  {kld.same_top_pct:.2f} ± {kld.same_top_error_pct:.2f} %",
        ]
    lines.append(
        "  (from the cache; --refresh measures again)"
        if result.cached
        else f"  measured in {result.seconds:.1f}s"
    )
    return lines
