"""How good is an index? Recall@k (and recall@1) against an exact scan, and
query latency.

Queries are probes by default (``heldout.probe_queries``): new points, each
as far from a stored row as that row is from its nearest other row, as new
text is. A stored row, even excluded from its own truth and results as
``llm similar ID`` excludes the row it was asked about, flatters a graph
index: it is a node linked to its neighbours (``heldout.held_out_queries``
makes such queries, for comparison). Or the vectors of another collection,
or texts. The truth is an exact cosine scan of every row of llm's tables
(heldout.py). tuning.py measures its curves with the same parts.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol, cast

import numpy as np

from . import heldout, sync
from .base import VectorIndex, normalize
from .errors import NotBuilt, VectorIndexError, check_count
from .heldout import HeldOut, Key
from .query import Queried
from .registry import masked_options


class Evaluated(Queried, Protocol):
    """What measuring needs of an index (``Index`` is one): what a query
    needs, and its folder, settings and backend class."""

    @property
    def path(self) -> Path: ...
    @property
    def settings(self) -> dict[str, Any]: ...
    @property
    def backend_class(self) -> type[VectorIndex]: ...


WARM_UP = 20  # queries run untimed before measuring
MEASURED_TOGETHER = 50  # queries searched between two scorings (and checks of stop_below)


@dataclass
class Evaluation:
    "One index measured on the queries every index of a comparison shares."

    index: str
    backend: str
    settings: dict
    rows: int
    queries: int
    k: int
    recall: float  # mean share of the exact top k that the index returned
    recall_at_1: float  # share of queries whose exact best row came first
    p50_ms: float  # backend search, one query at a time, one thread
    p95_ms: float
    queries_per_second: float
    disk_mb: float  # the index's files
    build_seconds: float | None  # its last build
    # Resident memory that opening it added (memory-mapped files count only
    # the pages read; 0 when another part of the process had it open); None
    # when the Index object evaluated already held it.
    open_mb: float | None = None

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class Measurement:
    "What one backend did on one set of queries."

    recall: float  # recall@k
    recall_at_1: float
    timings: list[float]  # seconds, one query at a time: one for each query measured


def evaluate(
    indexes: Evaluated | Sequence[Evaluated],
    queries: int = 100,
    k: int = 10,
    seed: int = 0,
    *,
    queries_from: str | None = None,
    query_texts: Sequence[str] | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> Evaluation | list[Evaluation]:
    """Recall@k against an exact scan, and latency, of one index or of several
    side by side on the same queries: by default probes made from stored
    rows of the first index (``probe_queries``), or the vectors of
    another collection of the same model (``queries_from``), or texts
    embedded with the indexes' model (``query_texts``). One index in, one
    ``Evaluation`` out; a list in, a list out. ``progress(done, total)`` is
    called as each index is measured."""
    single = not isinstance(indexes, (list, tuple))
    chosen: list[Evaluated] = (
        [cast("Evaluated", indexes)] if single else list(cast("Sequence[Evaluated]", indexes))
    )
    if not chosen:
        raise VectorIndexError("Name at least one index to evaluate")
    check_count(queries, "queries")
    check_count(k, "k")
    first = chosen[0]
    for other in chosen[1:]:
        if other.record.model != first.record.model:
            raise VectorIndexError(
                f"Indexes {first.name!r} and {other.name!r} use different embedding models "
                f"({first.record.model}, {other.record.model}): compare indexes of one model"
            )
    opened_mb = {}
    for index in chosen:
        index.ensure_fresh()
        already_open = index.holder.is_open
        # Validating options imports the backend's library: its import is not
        # what opening this index costs.
        index.backend_class.validate_options(index.record.options, index.record.dimensions)
        before = _resident_mb()
        _built_backend(index)
        opened_mb[index.name] = None if already_open else max(0.0, _resident_mb() - before)
    keys, vectors = _query_set(first, queries, seed, queries_from, query_texts)
    results = []
    for index in chosen:
        held_out = heldout.with_truth(index, keys, vectors, k)
        result = _evaluation(index, held_out, measure(index, _built_backend(index), held_out))
        result.open_mb = opened_mb[index.name]
        results.append(result)
        if progress:
            progress(1, len(chosen))
    return results[0] if single else results


def _query_set(
    index: Evaluated,
    count: int,
    seed: int,
    queries_from: str | None,
    query_texts: Sequence[str] | None,
) -> tuple[list[Key], np.ndarray]:
    "The queries every index of an evaluation answers (see ``evaluate``)."
    if queries_from is not None and query_texts is not None:
        raise VectorIndexError("Use probes, another collection or texts as queries, not two")
    if query_texts is not None:
        return _embedded(index, query_texts)
    if queries_from is not None:
        return _collection_sample(index, queries_from, count, seed)
    probes = heldout.probe_queries(index, count, 1, seed)  # each index's own truth comes later
    return probes.keys, probes.vectors


@dataclass
class SweepPoint:
    value: Any
    recall: float
    recall_at_1: float
    p50_ms: float
    p95_ms: float


@dataclass
class Sweep:
    "Recall and latency of one index at each value of its tunable option."

    index: str
    backend: str
    option: str
    queries: int
    k: int
    points: list[SweepPoint]

    def to_dict(self) -> dict:
        return asdict(self)


def sweep(
    index: Evaluated,
    queries: int = 100,
    k: int = 10,
    seed: int = 0,
    *,
    queries_from: str | None = None,
    query_texts: Sequence[str] | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> Sweep:
    """The recall/latency curve over every value of the backend's tunable
    option (``VectorIndex.tunable``), on a private instance: what queries use
    is untouched, and the setting is put back where it persists (Chroma)."""
    check_count(queries, "queries")
    check_count(k, "k")
    record = index.record
    tunable = index.backend_class.tunable(index.settings)
    if tunable is None:
        kind = record.options.get("kind", record.backend)
        raise VectorIndexError(
            f"Index {index.name!r} ({kind}) has no setting that trades speed for "
            "recall: nothing to sweep"
        )
    index.ensure_fresh()
    _built_backend(index)
    keys, vectors = _query_set(index, queries, seed, queries_from, query_texts)
    held_out = heldout.with_truth(index, keys, vectors, k)
    backend = index.holder.private()
    if backend is None:
        raise VectorIndexError(f"Index {index.name!r} cannot be opened: run llm index build")
    points = []
    original = backend.settings[tunable.option]
    try:
        for value, measured in curve(index, backend, held_out, tunable.option, tunable.values):
            points.append(
                SweepPoint(
                    value,
                    measured.recall,
                    measured.recall_at_1,
                    _ms(measured.timings, 50),
                    _ms(measured.timings, 95),
                )
            )
            if progress:
                progress(1, len(tunable.values))
    finally:
        try:
            backend.set_search_option(tunable.option, original)
        finally:
            backend.close()
    return Sweep(index.name, record.backend, tunable.option, len(keys), k, points)


def curve(
    index: Evaluated,
    backend: VectorIndex,
    held_out: HeldOut,
    option: str,
    values: Sequence[Any],
    *,
    stop_below: float | None = None,
) -> Iterator[tuple[Any, Measurement]]:
    "(value, what the backend did) for each value of ``option``, in order (``measure``)."
    for value in values:
        backend.set_search_option(option, value)
        yield value, measure(index, backend, held_out, stop_below=stop_below)


def _resident_mb() -> float:
    "This process's resident memory (Linux /proc; 0 elsewhere)."
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
    except (OSError, ValueError, IndexError):
        return 0.0
    return pages * os.sysconf("SC_PAGE_SIZE") / 1e6


def _ms(timings: list[float], percentile: int) -> float:
    return float(np.percentile(timings, percentile) * 1000) if timings else 0.0


def _evaluation(index: Evaluated, held_out: HeldOut, measured: Measurement) -> Evaluation:
    record = index.record
    timings = measured.timings
    mean = float(np.mean(timings)) if timings else 0.0
    disk = (
        sum(path.stat().st_size for path in index.path.rglob("*") if path.is_file())
        if index.path.exists()
        else 0
    )
    return Evaluation(
        index=index.name,
        backend=record.backend,
        settings=masked_options(
            record.backend, index.backend_class.settings_in_use(index.settings)
        ),
        rows=record.rows or 0,
        queries=len(held_out.keys),
        k=held_out.k,
        recall=measured.recall,
        recall_at_1=measured.recall_at_1,
        p50_ms=_ms(timings, 50),
        p95_ms=_ms(timings, 95),
        queries_per_second=1 / mean if mean else 0.0,
        disk_mb=disk / 1e6,
        build_seconds=record.build_seconds,
    )


def _embedded(index: Evaluated, texts: Sequence[str]) -> tuple[list[Key], np.ndarray]:
    "Texts embedded with the index's model: new text, stored nowhere."
    import llm

    texts = [text for text in texts if text.strip()]
    if not texts:
        raise VectorIndexError("No query texts: give one text per line")
    try:
        model = llm.get_embedding_model(index.record.model)
    except llm.UnknownModelError:
        raise VectorIndexError(
            f"Embedding model {index.record.model!r} of index {index.name!r} is not installed"
        ) from None
    vectors = np.array(list(model.embed_multi(texts)), dtype=np.float32)
    return heldout.usable_queries([(-1, f"query {n}") for n in range(len(texts))], vectors)


def _collection_sample(
    index: Evaluated, collection: str, count: int, seed: int
) -> tuple[list[Key], np.ndarray]:
    "Up to ``count`` rows of another collection of the index's model, seeded."
    row = sync.collection_row(index.db, collection)
    if row is None:
        raise VectorIndexError(f"Collection {collection!r} does not exist")
    if row["model"] != index.record.model:
        raise VectorIndexError(
            f"Collection {collection!r} uses {row['model']}, index {index.name!r} "
            f"uses {index.record.model}: queries must come from the same model"
        )
    ids = [
        r[0]
        for r in index.db.execute(
            "select id from embeddings where collection_id = ? order by id", [row["id"]]
        )
    ]
    chosen = sorted(np.random.default_rng(seed).permutation(len(ids))[: 2 * count + 20].tolist())
    rows = []
    for start in range(0, len(chosen), 500):
        chunk = [ids[position] for position in chosen[start : start + 500]]
        rows += index.db.execute(
            "select id, embedding from embeddings where collection_id = ? "
            f"and id in ({','.join('?' * len(chunk))})",
            [row["id"], *chunk],
        ).fetchall()
    width = 4 * (index.record.dimensions or 0)
    rows = [r for r in rows if r[1] is not None and len(r[1]) == width]
    if not rows:
        raise VectorIndexError(
            f"Collection {collection!r} has no vectors of {index.record.dimensions} dimensions"
        )
    vectors = sync.vectors_from_blobs(
        [r[0] for r in rows], [r[1] for r in rows], index.record.dimensions
    )
    keys, vectors = heldout.usable_queries([(row["id"], r[0]) for r in rows], vectors)
    return keys[:count], vectors[:count]


def _built_backend(index: Evaluated) -> VectorIndex:
    if index.record.built is None:
        raise NotBuilt(f"Index {index.name!r} has not been built: run llm index build {index.name}")
    backend = index.backend()
    if backend is None or backend.count() == 0:
        raise VectorIndexError(f"Index {index.name!r} is empty: nothing to evaluate")
    return backend


def measure(
    index: Evaluated,
    backend: VectorIndex,
    held_out: HeldOut,
    *,
    stop_below: float | None = None,
) -> Measurement:
    """Recall@k and recall@1 of ``backend`` on the held-out queries (each
    query's own row dropped from its results) and the seconds each single
    query took. A row returned counts when its exact score reaches the k-th
    true score (the best, for recall@1): among rows with identical vectors
    (duplicate texts) any will do.

    With ``stop_below``, measuring stops as soon as recall@k can no longer
    reach it even if every query left found all of its true top k: tuning's
    answer is the same, and a setting far below the target costs a fraction
    of its queries (the recall then reported, of the queries measured, is
    below ``stop_below`` too)."""
    k = held_out.k
    # A stored row asks for one more, which is dropped: itself. Anything else
    # gets what a query gets, or the extra candidate would flatter it.
    covered = set(index.collection_ids())
    wanted = [
        backend.candidates(k + 1 if collection_id in covered else k)
        for collection_id, _ in held_out.keys
    ]
    # Untimed first: a freshly opened index faults its mapped pages in on the
    # first queries, which would otherwise set p95.
    for vector, count in zip(held_out.vectors[:WARM_UP], wanted):
        backend.search(vector[None], count)
    countable = sum(bool(expected) for expected in held_out.truth)
    hits: list[float] = []
    firsts: list[bool] = []
    timings: list[float] = []
    for start in range(0, len(held_out.vectors), MEASURED_TOGETHER):
        chunk = range(start, min(start + MEASURED_TOGETHER, len(held_out.vectors)))
        found = []
        for position in chunk:
            started = time.perf_counter()
            _, labels = backend.search(held_out.vectors[position][None], wanted[position])
            timings.append(time.perf_counter() - started)
            found.append(labels[0].tolist())
        _score(index, held_out, chunk, found, hits, firsts)
        if stop_below is not None and sum(hits) + countable - len(hits) < stop_below * countable:
            break
    if not hits:
        return Measurement(1.0, 1.0, timings)
    return Measurement(float(np.mean(hits)), float(np.mean(firsts)), timings)


def _score(
    index: Evaluated,
    held_out: HeldOut,
    positions: range,
    found: list[list[int]],
    hits: list[float],
    firsts: list[bool],
) -> None:
    "Append each query's share of its true top k found, and whether its best came first."
    k = held_out.k
    rows = _rows_of(index, {label for labels in found for label in labels})
    for position, labels in zip(positions, found):
        expected = held_out.truth[position]
        if not expected:
            continue
        query, own = held_out.vectors[position], held_out.keys[position]
        returned = [rows[label] for label in labels if label in rows and rows[label][0] != own]
        # Re-scored exactly and the best k kept, as queries do (query.rank).
        scores = sorted((float(vector @ query) for _, vector in returned), reverse=True)[:k]
        good = sum(score >= held_out.floors[position] - 1e-6 for score in scores)
        hits.append(min(good, len(expected)) / len(expected))
        firsts.append(bool(scores) and scores[0] >= held_out.tops[position] - 1e-6)


def _rows_of(index: Evaluated, labels: set[int]) -> dict[int, tuple[Key, np.ndarray]]:
    "Label -> (row, unit vector as stored in llm's table now)."
    width = 4 * (index.record.dimensions or 0)
    rows = [
        row
        for row in heldout.labelled_rows(index, sorted(labels))
        if row[3] is not None and len(row[3]) == width
    ]
    if not rows:
        return {}
    vectors = normalize(
        sync.vectors_from_blobs(
            [row[2] for row in rows], [row[3] for row in rows], index.record.dimensions
        )
    )
    return {
        label: ((collection_id, id), vector)
        for (label, collection_id, id, _), vector in zip(rows, vectors)
    }
