"""How good is an index? Recall@k against an exact scan, and query latency.

Queries are stored rows drawn from the index (a seeded sample of its labels),
each excluded from its own truth and results, as ``llm similar ID`` excludes
the row it was asked about: a stored row that finds itself would flatter
recall. The truth is an exact cosine scan of every row of llm's tables, read
in batches from SQLite. tuning.py measures its curves with the same parts.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from . import sync
from .base import VectorIndex, normalize
from .errors import NotBuilt, VectorIndexError

if TYPE_CHECKING:
    from .index import Index

Key = tuple[int, str]  # (collection_id, id): one llm row


@dataclass
class Evaluation:
    queries: int
    k: int
    recall: float  # mean share of the exact top k that the index returned
    p50_ms: float  # backend search, one query at a time
    p95_ms: float


@dataclass
class HeldOut:
    "Stored rows used as queries, with their exact neighbours (themselves excluded)."

    keys: list[Key]
    vectors: np.ndarray  # unit length, float32
    truth: list[list[Key]]
    floors: list[float]  # each query's k-th best exact score: ties count as hits
    k: int


def evaluate(index: Index, queries: int = 100, k: int = 10, seed: int = 0) -> Evaluation:
    if queries < 1 or k < 1:
        raise VectorIndexError("queries and k must be positive integers")
    index.ensure_fresh()
    backend = _built_backend(index)
    held_out = held_out_queries(index, queries, k, seed)
    recall, timings = measure(index, backend, held_out)
    return Evaluation(
        queries=len(held_out.keys),
        k=k,
        recall=recall,
        p50_ms=float(np.percentile(timings, 50) * 1000) if timings else 0.0,
        p95_ms=float(np.percentile(timings, 95) * 1000) if timings else 0.0,
    )


def _built_backend(index: Index) -> VectorIndex:
    if index.record.built is None:
        raise NotBuilt(f"Index {index.name!r} has not been built: run llm index build {index.name}")
    backend = index.backend()
    if backend is None or backend.count() == 0:
        raise VectorIndexError(f"Index {index.name!r} is empty: nothing to evaluate")
    return backend


def held_out_queries(index: Index, count: int, k: int, seed: int = 0) -> HeldOut:
    """Up to ``count`` stored rows of the index, chosen with ``seed`` (labels
    drawn at random, so no scan of the label map), and their exact top ``k``."""
    db, record = index.db, index.record
    rng = np.random.default_rng(seed)
    wanted = rng.permutation(max(record.next_label, 1))[: 2 * count + 20].tolist()
    rows = []
    for start in range(0, len(wanted), 500):
        chunk = wanted[start : start + 500]
        rows += db.execute(
            "select l.label, l.collection_id, l.id, e.embedding from vector_index_labels l "
            "join embeddings e on e.collection_id = l.collection_id and e.id = l.id "
            f"where l.index_id = ? and l.label in ({','.join('?' * len(chunk))})",
            [record.id, *chunk],
        ).fetchall()
    order = {label: position for position, label in enumerate(wanted)}
    rows.sort(key=lambda row: order[row[0]])
    width = 4 * (record.dimensions or 0)
    rows = [row for row in rows if row[3] is not None and len(row[3]) == width]
    keys = [(row[1], row[2]) for row in rows]
    vectors = sync.vectors_from_blobs([row[2] for row in rows], [row[3] for row in rows],
                                      record.dimensions) if rows else np.empty((0, 0), "<f4")
    usable = sync.rankable(vectors) if rows else np.zeros(0, bool)
    keys = [key for key, ok in zip(keys, usable.tolist()) if ok][:count]
    vectors = normalize(vectors[usable][:count]) if rows else vectors
    truth, floors = exact_neighbours(index, keys, vectors, k)
    return HeldOut(keys, vectors, truth, floors, k)


def exact_neighbours(
    index: Index, keys: list[Key], queries: np.ndarray, k: int
) -> tuple[list[list[Key]], list[float]]:
    """The true top ``k`` rows per query, each query's own row excluded, and
    each query's k-th best score; every row of the covered collections is
    scanned once."""
    if not keys:
        return [], []
    own = {key: position for position, key in enumerate(keys)}
    seen: list[Key] = []  # every row scanned; the best are kept as positions in it
    best_scores = np.full((len(keys), 0), -np.inf)
    best_rows = np.empty((len(keys), 0), dtype=np.int64)
    for collection_id in index.collection_ids():
        for batch in sync.read_all(index.db, collection_id, index.record.dimensions):
            scores = np.full((len(keys), len(batch.ids)), -np.inf)
            usable = sync.rankable(batch.vectors)
            scores[:, usable] = queries @ normalize(batch.vectors[usable]).T
            for column, id in enumerate(batch.ids):
                if (collection_id, id) in own:  # never its own neighbour
                    scores[own[(collection_id, id)], column] = -np.inf
            rows = np.arange(len(seen), len(seen) + len(batch.ids))
            seen += [(collection_id, id) for id in batch.ids]
            scores = np.concatenate([best_scores, scores], axis=1)
            candidates = np.concatenate(
                [best_rows, np.broadcast_to(rows, (len(keys), len(rows)))], axis=1
            )
            keep = min(k, scores.shape[1])
            top = np.argpartition(-scores, keep - 1, axis=1)[:, :keep]
            best_scores = np.take_along_axis(scores, top, axis=1)
            best_rows = np.take_along_axis(candidates, top, axis=1)
    truth = [
        [seen[row] for score, row in zip(row_scores, rows) if score > -np.inf]
        for row_scores, rows in zip(best_scores.tolist(), best_rows.tolist())
    ]
    floors = [min([s for s in row if s > -np.inf], default=-np.inf) for row in best_scores.tolist()]
    return truth, floors


def measure(index: Index, backend: VectorIndex, held_out: HeldOut) -> tuple[float, list[float]]:
    """Recall@k of ``backend`` on the held-out queries (each query's own row
    dropped from its results) and the seconds each single query took. A row
    returned counts when its exact score reaches the k-th true score: among
    rows with identical vectors (duplicate texts) any will do."""
    k = held_out.k
    found, timings = [], []
    for vector in held_out.vectors:
        started = time.perf_counter()
        _, labels = backend.search(vector[None], backend.candidates(k + 1))
        timings.append(time.perf_counter() - started)
        found.append(labels[0].tolist())
    rows = _rows_of(index, {label for labels in found for label in labels})
    hits = []
    for query, own, expected, floor, labels in zip(
        held_out.vectors, held_out.keys, held_out.truth, held_out.floors, found
    ):
        if not expected:
            continue
        returned = [rows[label] for label in labels if label in rows and rows[label][0] != own]
        # Re-scored exactly and the best k kept, as queries do (query.rank).
        scores = sorted((float(vector @ query) for _, vector in returned), reverse=True)[:k]
        good = sum(score >= floor - 1e-6 for score in scores)
        hits.append(min(good, len(expected)) / len(expected))
    return (float(np.mean(hits)) if hits else 1.0), timings


def _rows_of(index: Index, labels: set[int]) -> dict[int, tuple[Key, np.ndarray]]:
    "Label -> (row, unit vector as stored in llm's table now)."
    labels = sorted(labels)
    rows = {}
    for start in range(0, len(labels), 500):
        chunk = labels[start : start + 500]
        for label, collection_id, id, blob in index.db.execute(
            "select l.label, l.collection_id, l.id, e.embedding from vector_index_labels l "
            "join embeddings e on e.collection_id = l.collection_id and e.id = l.id "
            f"where l.index_id = ? and l.label in ({','.join('?' * len(chunk))})",
            [index.record.id, *chunk],
        ):
            vector = np.frombuffer(blob, dtype="<f4").astype(np.float32)
            norm = float(np.linalg.norm(vector))
            rows[label] = ((collection_id, id), vector / norm if norm else vector)
    return rows
