"""What ``llm index`` commands print: entries as llm prints them, index
descriptions with secrets masked, build reports, and the progress bar."""

from __future__ import annotations

import json
import sys
import textwrap
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict
from datetime import datetime, timezone

import click
from sqlite_utils import Database

from . import approvals, catalog, metadata_indexes
from .build import BuildReport
from .errors import VectorIndexError
from .evaluate import Evaluation, Sweep
from .paths import indexes_directory, is_valid_name
from .query import IndexEntry
from .registry import get_backend, masked_options


@contextmanager
def progress_bar(label: str) -> Iterator[Callable[[int, int], None]]:
    """A ``progress(done, total)`` callback drawing click's progress bar, as
    llm embed-multi does, on a terminal only; it appears once the total is known."""
    bar = None

    def progress(done: int, total: int) -> None:
        nonlocal bar
        if bar is None and sys.stderr.isatty() and total:
            bar = click.progressbar(length=total, label=label, file=sys.stderr, show_pos=True)
            bar.__enter__()
        if bar is not None:
            bar.update(done)

    try:
        yield progress
    finally:
        if bar is not None:
            bar.__exit__(None, None, None)


def build_line(name: str, report: BuildReport) -> str:
    "One line about a finished build, for stderr."
    kind = "Full build" if report.full else "Build"
    held = (
        f", {report.held_back} held back (NaN, infinite, all-zero or odd-width vectors)"
        if report.held_back
        else ""
    )
    untexted = (
        f", {report.without_text} without stored text (not in the keyword index)"
        if report.without_text
        else ""
    )
    return (
        f"{kind} of {name}: {report.added} indexed, {report.deleted} removed, "
        f"{report.rows} rows{held}{untexted}, {report.seconds:.2f}s"
    )


# IndexEntry fields of keyword and hybrid queries: left out of a vector
# query's output, which is exactly llm's.
HYBRID_FIELDS = ("fused", "vector_rank", "keyword_rank", "keyword_score")


def echo_entries(results: Sequence[IndexEntry], plain: bool) -> None:
    "Results exactly as ``llm similar`` prints them (plus the collection, if several)."
    for result in results:
        output = asdict(result)
        if output["collection"] is None:
            del output["collection"]  # a single collection: exactly llm's output
        hybrid = result.fused is not None or result.keyword_rank is not None
        if not hybrid:
            for key in HYBRID_FIELDS:
                del output[key]
        if plain:
            where = f" [{result.collection}]" if result.collection else ""
            how = f" {_ranks(result)}" if hybrid else ""
            click.echo(f"{result.id} ({result.score}){where}{how}\n")
            if result.content:
                click.echo(textwrap.indent(result.content, "  "))
            if result.metadata:
                click.echo(textwrap.indent(json.dumps(result.metadata), "  "))
            click.echo("")
        else:
            click.echo(json.dumps(output))


def _ranks(entry: IndexEntry) -> str:
    "How a keyword or hybrid result ranked, for --plain."
    parts = [f"fused {entry.fused:.4f}"] if entry.fused is not None else []
    for side, rank in (("vector", entry.vector_rank), ("keyword", entry.keyword_rank)):
        if entry.fused is not None or rank is not None:
            parts.append(f"{side} #{rank}" if rank is not None else f"not found by {side}")
    return "[" + ", ".join(parts) + "]"


def sweep_table(sweep: Sweep) -> str:
    "One index's recall/latency curve, a row a setting."
    lines = [
        f"{sweep.index} ({sweep.backend}), {sweep.queries} queries",
        f"{sweep.option:>10}  recall@{sweep.k}  recall@1  p50 ms  p95 ms",
    ]
    for point in sweep.points:
        lines.append(
            f"{point.value!s:>10}  {point.recall:9.3f}  {point.recall_at_1:8.3f}  "
            f"{point.p50_ms:6.3f}  {point.p95_ms:6.3f}"
        )
    return "\n".join(lines)


def evaluation_table(results: Sequence[Evaluation]) -> str:
    "Evaluations side by side, one row an index, for a terminal."
    k = results[0].k if results else 10
    header = [
        "index",
        "backend",
        "rows",
        f"recall@{k}",
        "recall@1",
        "p50 ms",
        "p95 ms",
        "queries/s",
        "disk MB",
        "open MB",
        "build s",
        "settings",
    ]
    rows = [
        [
            r.index,
            r.backend,
            f"{r.rows:,}",
            f"{r.recall:.3f}",
            f"{r.recall_at_1:.3f}",
            f"{r.p50_ms:.3f}",
            f"{r.p95_ms:.3f}",
            f"{r.queries_per_second:,.0f}",
            f"{r.disk_mb:.1f}",
            "-" if r.open_mb is None else f"{r.open_mb:.1f}",
            "-" if r.build_seconds is None else f"{r.build_seconds:.2f}",
            " ".join(
                f"{key}={value}" for key, value in r.settings.items() if key not in ("reason",)
            ),
        ]
        for r in results
    ]
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *rows)]
    numeric = set(range(2, 11))

    def line(cells):
        return "  ".join(
            str(cell).rjust(width) if n in numeric else str(cell).ljust(width)
            for n, (cell, width) in enumerate(zip(cells, widths))
        ).rstrip()

    queries = results[0].queries if results else 0
    return "\n".join(
        [line(header), *map(line, rows), f"({queries} queries, the same for every index)"]
    )


def iso_time(seconds: float | None) -> str | None:
    "A Unix time as llm prints times: ISO 8601, UTC."
    if not isinstance(seconds, (int, float)):
        return None
    return datetime.fromtimestamp(seconds, timezone.utc).isoformat(timespec="seconds")


def describe_server(index_record: catalog.IndexRecord, db: Database) -> dict | None:
    """The server an index names and whether this machine approved it (None:
    it keeps to its folder, or its backend is not installed to say)."""
    try:
        backend_class = get_backend(index_record.backend).cls
        remote = approvals.remote_of(backend_class, index_record.options, index_record.dimensions)
    except VectorIndexError:
        return None
    if remote is None:
        return None
    return {
        "server": remote.address,
        "secrets": list(remote.secrets),
        "approved": approvals.is_approved(db, index_record.name, remote),
    }


def describe(index_record: catalog.IndexRecord, db: Database) -> dict:
    server = describe_server(index_record, db) or {}
    return {
        "name": index_record.name,
        "backend": index_record.backend,
        "options": masked_options(index_record.backend, index_record.options),
        "collections": index_record.collections,
        "model": index_record.model,
        "dimensions": index_record.dimensions,
        "metric": index_record.metric,
        "refresh": index_record.refresh,
        "default_for": catalog.defaults_of(db, index_record.id),
        "rows": index_record.rows,
        "state": "built" if index_record.built else "not built yet",
        "built": iso_time(index_record.built),
        "build_seconds": index_record.build_seconds,
        "generation": index_record.generation,
        "target_recall": index_record.target_recall,
        "keywords": (
            {**index_record.keywords, "rows": index_record.keyword_rows}
            if index_record.keywords
            else None
        ),
        "metadata_indexes": metadata_indexes.keys_of(db, index_record.id),
        "tuning": (
            {**index_record.tuning, "when": iso_time(index_record.tuning.get("when"))}
            if index_record.tuning
            else None
        ),
        # Shown, never used: a name read from the database may not be a valid one.
        "path": (
            str(indexes_directory(db) / index_record.name)
            if is_valid_name(index_record.name)
            else None
        ),
        **server,
    }


def describe_backend(info) -> dict:
    "A registered backend and the options a user may set (``llm index backends``)."
    return {
        "name": info.name,
        "plugin": info.plugin,
        "exact": info.cls.capabilities.exact,
        "options": [
            {
                "name": option.name,
                "type": option.type.__name__,
                "default": option.default,
                "help": option.help,
                "minimum": option.minimum,
                "maximum": option.maximum,
            }
            for option in info.cls.options
            if not option.internal
        ],
    }


def backends_listing(backends: Sequence[dict]) -> str:
    "Backends as ``describe_backend`` gives them, a line each and a line an option."
    lines = []
    for backend in backends:
        kind = "exact" if backend["exact"] else "approximate"
        lines.append(f"{backend['name']}: {kind} (plugin {backend['plugin']})")
        for option in backend["options"]:
            bounds = "".join(
                f", {word} {option[key]:g}"
                for word, key in (("at least", "minimum"), ("at most", "maximum"))
                if option[key] is not None
            )
            lines.append(
                f"  -o {option['name']} {option['type']} "
                f"(default {option['default']}{bounds}): {option['help']}"
            )
    return "\n".join(lines)
