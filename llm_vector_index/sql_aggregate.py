"""``vector_index_agg``: an exact search over whatever rows a query selects
(datasette-faiss's ``faiss_agg``, the "scratch index" of llm #216), with no
index at all::

    select vector_index_agg(id, embedding, :q, 10) from embeddings
    where collection_id = 2 and json_extract(metadata, '$.tag') = 'howto'

It returns the same JSON array as the other functions, ``[{"id", "score"},
...]`` best first, scored as llm scores (cosine in double precision), ties in
the order the rows arrived (llm's own scan lists them so). Rows whose vector
cannot be ranked (not float32 of the query's width, NaN, infinite, all
zeros) are skipped, as llm's scan cannot score them either;
``vector_index_agg_report`` takes the same arguments and says how many,
beside the hits: ``{"hits": [...], "rows": n, "skipped": {...}}``.

Over no rows at all it is NULL, as SQL's own aggregates are (``coalesce(...,
'[]')`` makes that an empty array). Bad arguments (k not in 1..1000, a
compare_embedding that is no vector, or one that changes between rows of a
group) give ``{"error": "..."}``, as the other functions do.

Memory stays bounded however many rows stream in: they are scored a chunk
at a time and only the best ``k`` are kept between chunks.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np

from . import sql_values
from .errors import VectorIndexError, check_count
from .query import cosines

MAX_K = 1000
CHUNK = 2048  # rows scored together: numpy's speed, a few MB at most
WRONG_WIDTH = "not float32 values of the query's width"
UNRANKABLE = "NaN, infinite or all zeros"


class Nearest:
    "The aggregate's state for one group: the query, the best rows so far, the counts."

    report = False

    def __init__(self) -> None:
        self.query: np.ndarray | None = None
        self.compare: Any = None  # the argument as given, to see it never changes
        self.k = 0
        self.error: str | None = None
        self.rows = 0
        self.skipped = {WRONG_WIDTH: 0, UNRANKABLE: 0}
        self.ids: list[Any] = []  # the chunk waiting to be scored
        self.blobs: list[bytes] = []
        self.arrivals: list[int] = []  # each row's place among all the rows given
        self.best_ids: list[Any] = []
        self.best_scores = np.zeros(0)
        self.best_arrivals = np.zeros(0, dtype=np.int64)

    def step(self, id: Any, embedding: Any, compare: Any, k: Any) -> None:
        if self.error is not None:
            return
        try:
            if self.query is None:
                self._start(compare, k)
            elif compare != self.compare or k != self.k:
                raise VectorIndexError(
                    "compare_embedding and k must be the same for every row of a group"
                )
            self.rows += 1
            query = self.query
            assert query is not None
            if not isinstance(embedding, bytes) or len(embedding) != 4 * len(query):
                self.skipped[WRONG_WIDTH] += 1
                return
            self.ids.append(id)
            self.blobs.append(embedding)
            self.arrivals.append(self.rows)
            if len(self.blobs) >= CHUNK:
                self._score_chunk()
        except VectorIndexError as error:
            self.error = str(error)

    def _start(self, compare: Any, k: Any) -> None:
        self.k = check_count(k, "k", MAX_K)
        try:
            values = sql_values.vector(compare, None)
        except VectorIndexError as error:
            raise VectorIndexError(f"compare_{error}") from None
        try:
            query = np.asarray(values, dtype=np.float64)
        except (TypeError, ValueError):
            query = np.zeros(0)
        if query.ndim != 1 or not len(query) or not np.isfinite(query).all() or not query.any():
            raise VectorIndexError("compare_embedding must be a non-zero vector of finite numbers")
        self.query = query
        self.compare = compare

    def _score_chunk(self) -> None:
        if not self.blobs:
            return
        assert self.query is not None
        scores = cosines(self.blobs, self.query)
        arrivals = np.array(self.arrivals, dtype=np.int64)
        usable = np.isfinite(scores)
        self.skipped[UNRANKABLE] += int((~usable).sum())
        ids = self.best_ids + [id for id, ok in zip(self.ids, usable.tolist()) if ok]
        scores = np.concatenate([self.best_scores, scores[usable]])
        arrivals = np.concatenate([self.best_arrivals, arrivals[usable]])
        # Best first; ties (at float32 precision, as query.rank compares) in
        # the order the rows arrived.
        order = np.lexsort((arrivals, -scores.astype(np.float32)))[: self.k]
        self.best_ids = [ids[i] for i in order.tolist()]
        self.best_scores = scores[order]
        self.best_arrivals = arrivals[order]
        self.ids, self.blobs, self.arrivals = [], [], []

    def finalize(self) -> str:
        if self.error is None:
            self._score_chunk()
        if self.error is not None:
            return json.dumps({"error": self.error})
        hits = [
            {"id": id, "score": score}
            for id, score in zip(self.best_ids, self.best_scores.tolist())
        ]
        if not self.report:
            return json.dumps(hits)
        return json.dumps({"hits": hits, "rows": self.rows, "skipped": self.skipped})


class NearestReport(Nearest):
    report = True
