"""Pictures of measurements, with matplotlib: a benchmark extra, imported
only here and only when a picture is asked for (``llm install
'llm-vector-index[benchmark]'``). Never a dependency of the plugin."""

from __future__ import annotations

from collections.abc import Sequence
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


def plot_sweeps(sweeps: Sequence[Sweep], path: str | Path) -> Path:
    "Recall against p50 latency, one curve an index, each point its setting."
    path = Path(path)
    if path.suffix.lower() != ".png":
        raise VectorIndexError(f"Plot file must end in .png, got {path.name!r}")
    pyplot = _pyplot()
    figure, axes = pyplot.subplots(figsize=(7, 4.5), dpi=120)
    try:
        for sweep in sweeps:
            latencies = [point.p50_ms for point in sweep.points]
            recalls = [point.recall for point in sweep.points]
            axes.plot(latencies, recalls, marker="o", label=f"{sweep.index} ({sweep.option})")
            for point in sweep.points:
                axes.annotate(str(point.value), (point.p50_ms, point.recall), fontsize=7,
                              textcoords="offset points", xytext=(3, -9))
        k = sweeps[0].k if sweeps else 10
        queries = sweeps[0].queries if sweeps else 0
        axes.set_xscale("log")
        # Plain numbers on a log axis: 0.2, 0.5, 1, 2 rather than 2x10^-1.
        from matplotlib.ticker import FuncFormatter, NullFormatter

        axes.xaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
        axes.xaxis.set_minor_formatter(NullFormatter())
        axes.set_xlabel("query p50, ms (one thread, log scale)")
        axes.set_ylabel(f"recall@{k}")
        axes.set_title(f"Recall against latency, {queries} queries")
        axes.grid(True, which="both", alpha=0.3)
        axes.legend(loc="lower right")
        figure.tight_layout()
        try:
            figure.savefig(path, format="png")
        except OSError as error:
            raise VectorIndexError(f"Cannot write {path}: {error.strerror or error}") from None
    finally:
        pyplot.close(figure)
    return path
