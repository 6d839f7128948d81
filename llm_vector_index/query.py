"""Answering a query: the backend (or a scratch scan for small filtered
subsets) proposes rows, SQLite supplies them, and they are scored exactly as
llm scores them: cosine over the stored float32 values, in double precision.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
from llm.embeddings import Entry
from sqlite_utils import Database

from . import reader
from .errors import DamagedFiles, DimensionMismatch, NotBuilt, VectorIndexError, check_count
from .filters import ROW_COLUMNS, Filter, row_of_label
from .holding import Holder
from .records import IndexRecord
from .restriction import Restriction, restriction

if TYPE_CHECKING:
    from .base import VectorIndex


class Queried(Protocol):
    """What a query needs of the index it asks (``Index`` is one): its
    catalog row, its files as the holder keeps them, and brought up to date."""

    db: Database
    record: IndexRecord
    holder: Holder

    @property
    def name(self) -> str: ...
    @property
    def label_hints(self) -> bool: ...
    def backend(self) -> VectorIndex | None: ...
    def ensure_fresh(self) -> None: ...
    def collection_ids(self, only: str | None = None) -> list[int]: ...


# (collection_id, id) pairs to leave out; collection_id None: in any collection.
Skip = frozenset


@dataclass
class IndexEntry(Entry):
    "An llm ``Entry`` that also names the collection the row came from."

    collection: str | None = None
    # Keyword and hybrid queries (hybrid.py): the fused value, each side's
    # rank (from 1; None if that side did not find the row) and BM25 score.
    fused: float | None = None
    vector_rank: int | None = None
    keyword_rank: int | None = None
    keyword_score: float | None = None


def search(
    index: Queried,
    vector: Any,
    number: int,
    *,
    prefix: str | None = None,
    skip: Skip = frozenset(),
    collection: str | None = None,
    where: dict[str, Any] | None = None,
) -> list[IndexEntry]:
    check_count(number, "number")
    query = query_vector(vector)
    collection, show_collection = begin(index, collection)
    return ranked(
        index,
        query,
        number,
        skip,
        show_collection,
        lambda: restriction(index, collection, prefix, where),
    )


def ranked(
    index: Queried,
    query: np.ndarray,
    number: int,
    skip: Skip,
    show_collection: bool,
    restricted: Callable[[], Restriction | None],
) -> list[IndexEntry]:
    """The ``number`` rows nearest ``query`` among ``restricted()`` (None:
    all), once ``begin`` has run."""
    if not check_dimensions(index, query):
        return []  # built, but its collections were empty
    allowed = None
    subset = restricted()
    if subset is not None:
        rowids = subset.rowids(index)
        if rowids is not None:  # few: exact over just those rows
            return rank(Filter.rows(index.db, rowids), query, skip, show_collection, number)
        allowed = subset.labels(index, held_only=not takes_absent_labels(index))
    return backend_search(index, query, number, skip, allowed, show_collection)


def nearest_labels(
    index: Queried, query: np.ndarray, k: int, restricted: Restriction | None
) -> tuple[np.ndarray, np.ndarray]:
    """(cosine scores, labels) of the ``k`` indexed rows nearest ``query``
    among ``restricted`` (None: all), best first, as the backend scores them
    (exactly, over a small restriction), once ``begin`` has run. No row is
    read: a hybrid query fuses labels and reads only its winners."""
    nothing = np.zeros(0, dtype=np.float32), np.zeros(0, dtype=np.int64)
    if not check_dimensions(index, query):
        return nothing
    allowed = None
    if restricted is not None:
        rowids = restricted.rowids(index)
        if rowids is not None:
            return _nearest_among(index, query, k, rowids)
        allowed = restricted.labels(index, held_only=not takes_absent_labels(index))
        if len(allowed) == 0:
            return nothing
    backend = current_backend(index)
    scores, labels = backend.search(query.reshape(1, -1), k, allowed)
    found = labels[0] >= 0
    return scores[0][found], labels[0][found]


def _nearest_among(index, query, k, rowids):
    "nearest_labels over a few rows: their vectors scored as rank() scores them."
    rows = index.db.execute(
        "select l.label, e.embedding from json_each(?) j "
        "cross join embeddings e on e.rowid = j.value "
        "cross join vector_index_labels l on l.index_id = ? "
        "and l.collection_id = e.collection_id and l.id = e.id where l.label >= 0",
        [json.dumps(rowids), index.record.id],
    ).fetchall()
    width = 4 * len(query)
    rows = [row for row in rows if row[1] is not None and len(row[1]) == width]
    if not rows:
        return np.zeros(0, dtype=np.float32), np.zeros(0, dtype=np.int64)
    scores = cosines([row[1] for row in rows], query)
    rankable = np.flatnonzero(np.isfinite(scores))
    order = rankable[np.argsort(-scores[rankable], kind="stable")][:k]
    labels = np.array([row[0] for row in rows], dtype=np.int64)
    return scores[order].astype(np.float32), labels[order]


def check_dimensions(index: Queried, query: np.ndarray) -> bool:
    "False if the index was built over no rows; DimensionMismatch if the query does not fit."
    record = index.record
    if record.dimensions is None:
        return False
    if query.shape != (record.dimensions,):
        raise DimensionMismatch(
            f"Query vector has {query.size} dimensions, index {record.name!r} "
            f"has {record.dimensions}"
        )
    return True


def begin(index: Queried, collection: str | None) -> tuple[str | None, bool]:
    """Checks every query makes first, and the index brought up to date:
    the collection to restrict to (None: all) and whether results name
    their collection."""
    record = index.record
    if collection is not None and collection not in record.collections:
        raise VectorIndexError(f"Index {record.name!r} does not cover collection {collection!r}")
    index.ensure_fresh()
    record = index.record
    if record.built is None:
        raise NotBuilt(
            f"Index {record.name!r} has not been built: run llm index build {record.name}"
        )
    if len(record.collections) == 1:
        collection = None  # restricting to its only collection filters nothing
    return collection, len(record.collections) > 1 and collection is None


def query_vector(vector: Any) -> np.ndarray:
    """The query as float32, refused unless it is numbers, finite and not all
    zero: such a vector has no direction, so every cosine score would be NaN
    or 0 and any ranking of the rows meaningless."""
    if isinstance(vector, (str, bytes)):
        raise DimensionMismatch("Query vector must be a sequence of numbers, not text")
    try:
        given = np.asarray(vector)
    except (TypeError, ValueError):
        given = None
    # Flat and numeric: nested lists must not be flattened into a vector, nor
    # true/false, text or numbers too large for a float read as values.
    if given is None or given.ndim != 1 or given.dtype.kind not in "fiu":
        raise DimensionMismatch("Query vector must be a flat sequence of numbers")
    with np.errstate(over="ignore"):  # too large for float32: inf, refused below
        query = given.astype(np.float32)
    if not np.isfinite(query).all():
        raise DimensionMismatch("Query vector has NaN or infinite values")
    if not query.any():
        raise DimensionMismatch("Query vector is all zeros: it has no direction to search")
    return query


def current_backend(index: Queried) -> VectorIndex:
    "The backend's files as the catalog records them now."
    backend = index.backend()
    if backend is None or not index.holder.matches_catalog(backend):
        # Another process has built since this index was opened (or is
        # between its save and its commit): read what it committed.
        backend = index.holder.reopen()
    if backend is None or not index.holder.matches_catalog(backend):
        raise index.holder.mismatch()
    return backend


def takes_absent_labels(index: Queried) -> bool:
    "May the backend's allow-list name labels it does not hold (a filter's runs' gaps)?"
    return current_backend(index).capabilities.absent_labels  # (backend_class: 17 µs)


def backend_search(index, query, number, skip, allowed, show_collection):
    backend = current_backend(index)
    available = backend.count() if allowed is None else len(allowed)
    k = backend.candidates(number + len(skip))
    while True:
        _, labels = backend.search(query.reshape(1, -1), k, allowed)
        rows = rows_for_labels(index, labels[0])
        check_label_map(index, labels[0], rows)
        entries = rank(rows, query, skip, show_collection, number)
        # Rows deleted since the build drop out here: fetch more until enough.
        if len(entries) >= number or k >= available:
            return entries[:number]
        k = min(available, k * 2)


def rows_for_labels(index: Queried, labels: np.ndarray, columns: str = ROW_COLUMNS) -> list[tuple]:
    "The rows (see ROW_COLUMNS, then the label) under these labels, if still there."
    return _under_labels(index, labels, f"{columns}, l.label")


def _under_labels(index: Queried, labels: np.ndarray, columns: str) -> list[tuple]:
    if len(labels) == 0:
        return []
    return (
        reader.connection(index.db)
        .execute(
            f"""
        select {columns}
        from vector_index_labels l
        join embeddings e on {row_of_label(index.label_hints)}
        join collections c on c.id = l.collection_id
        where l.index_id = ? and l.label in ({','.join('?' * len(labels))})
        """,
            [index.record.id, *labels.tolist()],
        )
        .fetchall()
    )


def check_label_map(index: Queried, labels: np.ndarray, rows: list[tuple]) -> None:
    """Cheap checks that the label map the rows came through is sound (a
    crafted or damaged database): no row of a collection the index does not
    cover, no row twice, and not every label unknown to it (its rows may be
    gone, deleted since the build: then the labels are still there)."""
    covered = index.record.collections
    stray = next((row for row in rows if row[1] not in covered), None)
    problem = None
    if stray is not None:
        problem = f"it maps a label to row {stray[2]!r} of collection {stray[1]!r}"
    elif len({(row[0], row[2]) for row in rows}) != len(rows):
        problem = "it maps two labels to one row"
    elif (
        len(labels)
        and not rows
        and not index.db.execute(
            "select 1 from vector_index_labels where index_id = ? and label in "
            f"({','.join('?' * len(labels))}) limit 1",
            [index.record.id, *labels.tolist()],
        ).fetchone()
    ):
        problem = "none of the labels its backend found are in it"
    if problem:
        raise DamagedFiles(
            f"Index {index.name!r} has a damaged label map ({problem}): "
            f"run llm index build {index.name} to rebuild it"
        )


def rank(
    rows: list[tuple],
    query: np.ndarray,
    skip: Skip,
    show_collection: bool,
    limit: int | None = None,
) -> list[IndexEntry]:
    """The best ``limit`` rows (see filters.ROW_COLUMNS) as entries, scored as
    llm scores them (cosine in double precision), best first, ties as llm
    orders them. Rows that cannot be
    ranked (NaN, infinite or all-zero vectors, another width) are never
    returned. Only the winners' metadata is parsed."""
    width = 4 * len(query)
    rows = [
        row
        for row in rows
        if row[5] is not None
        and len(row[5]) == width
        and not (skip and ((row[0], row[2]) in skip or (None, row[2]) in skip))
    ]
    if not rows:
        return []
    # In rowid order, however they were read: BLAS's last bits depend on the
    # order, and one query alone or in a batch must score its rows alike.
    rows.sort(key=lambda row: row[6])
    scores = cosines([row[5] for row in rows], query)
    candidates = np.flatnonzero(np.isfinite(scores))
    if limit is not None and len(candidates) > limit:
        # Keep the best ``limit`` scores and everything tied with the last.
        cut = np.partition(scores[candidates], len(candidates) - limit)[len(candidates) - limit]
        candidates = candidates[scores[candidates] >= cut]
    score_list = scores.tolist()
    # Ties in the order llm lists them: the order its scan reads the rows,
    # which is rowid order once the plugin's index on embeddings(collection_id)
    # exists (SQLite then scans it, not the primary key). Scores are compared
    # at float32 precision: the BLAS sums of identical vectors in different
    # rows may differ in their last bits where llm's scores are equal.
    rounded = scores.astype(np.float32).tolist()
    order = sorted(candidates.tolist(), key=lambda i: (-rounded[i], rows[i][6]))[:limit]
    return [
        IndexEntry(
            id=rows[i][2],
            score=score_list[i],
            content=rows[i][3],
            metadata=json.loads(rows[i][4]) if rows[i][4] else None,
            collection=rows[i][1] if show_collection else None,
        )
        for i in order
    ]


def cosines(blobs: list[bytes], query: np.ndarray) -> np.ndarray:
    """llm's cosine of each stored float32 vector (blobs of the query's width)
    with ``query``, in double precision; NaN for a vector that cannot be
    ranked (NaN or infinite values, all zeros)."""
    vectors = np.frombuffer(b"".join(blobs), dtype="<f4")
    vectors = vectors.reshape(len(blobs), -1).astype(np.float64)
    query64 = query.astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        # float32 values cannot overflow when squared in float64: a norm is
        # finite exactly when every value is, and zero only for a zero vector.
        norms = np.sqrt(np.einsum("ij,ij->i", vectors, vectors))
        scores = (vectors @ query64) / (norms * float(np.sqrt(query64 @ query64)))
    scores[~(np.isfinite(norms) & (norms > 0))] = np.nan
    return scores
