"""How good is an index? Recall@k against an exact scan, and query latency.

Queries are stored vectors drawn at random from the index's collections; the
truth is an exact cosine scan of every row, read in batches from SQLite.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from . import sync
from .base import normalize
from .errors import NotBuilt, VectorIndexError

if TYPE_CHECKING:
    from .index import Index


@dataclass
class Evaluation:
    queries: int
    k: int
    recall: float  # mean share of the exact top k that the index returned
    p50_ms: float  # backend search, one query at a time
    p95_ms: float


def evaluate(index: Index, queries: int = 100, k: int = 10) -> Evaluation:
    if queries < 1 or k < 1:
        raise VectorIndexError("queries and k must be positive integers")
    index.ensure_fresh()
    if index.record.built is None:
        raise NotBuilt(f"Index {index.name!r} has not been built: run llm index build {index.name}")
    backend = index.backend()
    collection_ids = index.collection_ids()
    if backend is None or backend.count() == 0:
        raise VectorIndexError(f"Index {index.name!r} is empty: nothing to evaluate")
    marks = ",".join("?" * len(collection_ids))
    picked = index.db.execute(
        f"select id, embedding from embeddings where collection_id in ({marks}) "
        "order by random() limit ?",
        [*collection_ids, queries],
    ).fetchall()
    stored = sync.vectors_from_blobs(
        [row[0] for row in picked], [row[1] for row in picked], index.record.dimensions
    )
    query_vectors = normalize(stored[sync.rankable(stored)])
    truth = _exact_top_k(index, collection_ids, query_vectors, k)
    timings, found = [], []
    for query in query_vectors:
        started = time.perf_counter()
        _, labels = backend.search(query[None], k)
        timings.append(time.perf_counter() - started)
        found.append(labels[0])
    rows = dict(
        ((row[0]), (row[1], row[2]))
        for row in index.db.execute(
            "select label, collection_id, id from vector_index_labels where index_id = ?",
            [index.record.id],
        )
    )
    hits = [
        len(set(expected) & {rows.get(label) for label in labels.tolist()}) / len(expected)
        for expected, labels in zip(truth, found)
        if expected
    ]
    return Evaluation(
        queries=len(query_vectors),
        k=k,
        recall=float(np.mean(hits)) if hits else 1.0,
        p50_ms=float(np.percentile(timings, 50) * 1000),
        p95_ms=float(np.percentile(timings, 95) * 1000),
    )


def _exact_top_k(index, collection_ids, queries, k) -> list[list[tuple[int, str]]]:
    "The true top k (collection_id, id) per query, scanning every row once."
    best_scores = np.full((len(queries), 0), -np.inf)
    best_keys: list[list[tuple[int, str]]] = [[] for _ in queries]
    for collection_id in collection_ids:
        for batch in sync.read_all(index.db, collection_id, index.record.dimensions):
            usable = sync.rankable(batch.vectors)
            scores = np.full((len(queries), len(batch.ids)), -np.inf)
            scores[:, usable] = queries @ normalize(batch.vectors[usable]).T
            keys = [(collection_id, id) for id in batch.ids]
            merged = np.concatenate([best_scores, scores], axis=1)
            order = np.argsort(-merged, axis=1, kind="stable")[:, :k]
            best_keys = [
                [(previous + keys)[i] for i in row]
                for previous, row in zip(best_keys, order.tolist())
            ]
            best_scores = np.take_along_axis(merged, order, axis=1)
    return best_keys
