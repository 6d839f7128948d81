"""Pictures of measurements, with matplotlib: a benchmark extra, imported
only here and only when a picture is asked for (``llm install
'llm-vector-index[benchmark]'``). Never a dependency of the plugin."""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path

from .errors import VectorIndexError
from .evaluate import Sweep


def _pyplot():
    try:
        import matplotlib
    except ImportError:
        raise VectorIndexError(
            "Plots need matplotlib: llm install 'llm-vector-index[benchmark]'"
        ) from None
    matplotlib.use("Agg")  # files only: no display needed
    import matplotlib.pyplot as pyplot

    return pyplot


def _png(path: str | Path) -> Path:
    path = Path(path)
    if path.suffix.lower() != ".png":
        raise VectorIndexError(f"Plot file must end in .png, got {path.name!r}")
    return path


@contextmanager
def _figure(path: str | Path, *, xlabel: str, ylabel: str, title: str, legend: str) -> Iterator:
    """Axes to draw on; labelled, saved to ``path`` (a PNG) and closed after."""
    path = _png(path)
    pyplot = _pyplot()
    figure, axes = pyplot.subplots(figsize=(7, 4.5), dpi=120)
    try:
        yield axes
        axes.set_xlabel(xlabel)
        axes.set_ylabel(ylabel)
        axes.set_title(title)
        axes.grid(True, which="both", alpha=0.3)
        axes.legend(loc=legend)
        figure.tight_layout()
        try:
            figure.savefig(path, format="png")
        except OSError as error:
            raise VectorIndexError(f"Cannot write {path}: {error.strerror or error}") from None
    finally:
        pyplot.close(figure)


def _plain_log_axis(axis) -> None:
    "Plain numbers on a log axis: 0.2, 0.5, 1, 2 rather than 2x10^-1."
    from matplotlib.ticker import FuncFormatter, NullFormatter

    axis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
    axis.set_minor_formatter(NullFormatter())


def plot_sweeps(
    sweeps: Sequence[Sweep],
    path: str | Path,
    points: Mapping[str, tuple[float, float]] | None = None,
    title: str | None = None,
) -> Path:
    """Recall against p50 latency, one curve an index, each point its setting;
    ``points``: label -> (ms, recall) of things with one setting (exact
    search, llm's brute force)."""
    k = sweeps[0].k if sweeps else 10
    queries = sweeps[0].queries if sweeps else 0
    with _figure(
        path,
        xlabel="query p50, ms (one thread, log scale)",
        ylabel=f"recall@{k}",
        title=title or f"Recall against latency, {queries} queries",
        legend="lower right",
    ) as axes:
        for label, (ms, recall) in (points or {}).items():
            axes.plot([ms], [recall], marker="s", linestyle="none", label=label)
        labelled: list[tuple[float, float]] = []
        for sweep in sweeps:
            latencies = [point.p50_ms for point in sweep.points]
            recalls = [point.recall for point in sweep.points]
            axes.plot(latencies, recalls, marker="o", label=f"{sweep.index} ({sweep.option})")
            for point in sweep.points:
                if _crowded(labelled, point.p50_ms, point.recall):
                    continue
                labelled.append((point.p50_ms, point.recall))
                axes.annotate(
                    str(point.value),
                    (point.p50_ms, point.recall),
                    fontsize=7,
                    textcoords="offset points",
                    xytext=(3, -9),
                )
        axes.set_xscale("log")
        _plain_log_axis(axes.xaxis)
    return Path(path)


def _crowded(labelled: Sequence[tuple[float, float]], ms: float, recall: float) -> bool:
    """Would a label here sit on one already drawn? (Where curves meet near
    recall 1.0, every setting's number would print on top of the others.)"""
    return any(
        abs(math.log10(ms / other_ms)) < 0.08 and abs(recall - other_recall) < 0.005
        for other_ms, other_recall in labelled
    )


def plot_against_rows(
    series: Mapping[str, Sequence[tuple[int, float]]],
    path: str | Path,
    *,
    ylabel: str,
    title: str,
    notes: Mapping[str, str] | None = None,
) -> Path:
    """label -> [(rows, value), ...] on log-log axes, a line each; ``notes``:
    label -> text added to its legend entry (e.g. the recall at each size)."""
    with _figure(path, xlabel="rows", ylabel=ylabel, title=title, legend="upper left") as axes:
        for label, values in series.items():
            values = sorted(values)
            note = (notes or {}).get(label)
            axes.plot(
                [rows for rows, _ in values],
                [value for _, value in values],
                marker="o",
                label=f"{label} ({note})" if note else label,
            )
        axes.set_xscale("log")
        axes.set_yscale("log")
        _plain_log_axis(axes.xaxis)
        _plain_log_axis(axes.yaxis)
    return Path(path)


def plot_fusion_sweep(
    results: Mapping[str, Sequence], path: str | Path, title: str | None = None
) -> Path:
    """nDCG@10 against the vector side's weight in hybrid, one curve per
    index and fusion, with the single modes as flat lines
    (``results``: index name -> relevance.Judgement list with a sweep)."""
    with _figure(
        path,
        xlabel="weight of the vector side (0: keywords only, 1: vectors only)",
        ylabel="nDCG@10",
        title=title or "Hybrid relevance against fusion weight",
        legend="lower center",
    ) as axes:
        for name, judged in results.items():
            for fusion in ("rrf", "convex"):
                points = sorted(
                    (r.settings["weight"], r.scores["ndcg@10"])
                    for r in judged
                    if r.settings.get("fusion") == fusion
                )
                if points:
                    axes.plot(*zip(*points), marker="o", label=f"{name}: {fusion}")
            for single in judged:
                if single.mode in ("vector", "keyword"):
                    axes.axhline(
                        single.scores["ndcg@10"],
                        linestyle="--",
                        linewidth=0.8,
                        label=f"{name}: {single.mode} only",
                    )
    return Path(path)
