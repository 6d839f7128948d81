"""Many queries at once (``Index.similar_by_vectors``): one backend search
for the whole matrix (the libraries spread a batch over their threads), one
read of every winner's row, then each query ranked as query.py ranks one.
The answers are exactly the single queries' answers: a query that comes up
short (rows deleted since the build) is asked again on its own, through the
single query's refill loop."""

from __future__ import annotations

from typing import Any

import numpy as np

from . import query
from .errors import DimensionMismatch, VectorIndexError, check_count
from .filters import Filter
from .restriction import restriction

# Rows read in one statement (under SQLite's 32,766 parameters).
ROWS_PER_READ = 5_000


def search_many(
    index: query.Queried,
    vectors: Any,
    number: int,
    *,
    prefix: str | None = None,
    collection: str | None = None,
    where: dict[str, Any] | None = None,
) -> list[list[query.IndexEntry]]:
    "The ``number`` rows nearest each of ``vectors``, as ``query.search`` finds them."
    check_count(number, "number")
    matrix = query_matrix(vectors)
    collection, show_collection = query.begin(index, collection)
    if len(matrix) == 0 or not query.check_dimensions(index, matrix[0]):
        return [[] for _ in matrix]
    skip: frozenset = frozenset()
    subset = restriction(index, collection, prefix, where)
    rowids = subset.rowids(index) if subset is not None else None
    if rowids is not None:
        # few rows allowed: read them once, rank them for every query
        rows = Filter.rows(index.db, rowids)
        return [query.rank(rows, q, skip, show_collection, number) for q in matrix]
    held_only = not query.takes_absent_labels(index)
    allowed = subset.labels(index, held_only) if subset is not None else None
    if allowed is not None and len(allowed) == 0:
        return [[] for _ in matrix]
    backend = query.current_backend(index)
    _, labels = backend.search(matrix, backend.candidates(number), allowed)
    by_label = _rows_by_label(index, labels)
    answers = []
    for q, found in zip(matrix, labels):
        rows = [by_label[label] for label in found.tolist() if label in by_label]
        query.check_label_map(index, found, rows)
        entries = query.rank(rows, q, skip, show_collection, number)
        if len(entries) < number:  # deleted since the build, or too few rows: as one query
            entries = query.backend_search(index, q, number, skip, allowed, show_collection)
        answers.append(entries)
    return answers


def query_matrix(vectors: Any) -> np.ndarray:
    """The queries as a float32 (n, dimensions) matrix, each checked as a
    single query is (query.query_vector); a bad one is refused by position."""
    if isinstance(vectors, (str, bytes)):
        raise DimensionMismatch("Query vectors must be a sequence of vectors, not text")
    try:
        rows = list(vectors)
    except TypeError:
        raise DimensionMismatch("Query vectors must be a sequence of vectors") from None
    checked = []
    for position, vector in enumerate(rows):
        try:
            checked.append(query.query_vector(vector))
        except VectorIndexError as error:
            raise type(error)(f"Query {position}: {error}") from None
        if len(checked[-1]) != len(checked[0]):
            raise DimensionMismatch(
                f"Query {position} has {len(checked[-1])} dimensions, "
                f"query 0 has {len(checked[0])}"
            )
    if not checked:
        return np.zeros((0, 0), dtype=np.float32)
    return np.vstack(checked)


def _rows_by_label(index: query.Queried, labels: np.ndarray) -> dict[int, tuple]:
    "Every found label's row (query.rows_for_labels), read a few thousand at a time."
    wanted = np.unique(labels[labels >= 0])
    rows: dict[int, tuple] = {}
    for start in range(0, len(wanted), ROWS_PER_READ):
        for row in query.rows_for_labels(index, wanted[start : start + ROWS_PER_READ]):
            rows[row[-1]] = row
    return rows
