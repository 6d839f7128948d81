"""Related items (llm #230): every indexed row's nearest other rows, found
through the index's backend a batch of rows at a time and scored exactly
as llm scores them, and saved into a table beside llm's (related_store.py).

A save after the first looks only at rows whose neighbours can have moved:
the rows changed or added since (their vectors are new), the rows whose
saved neighbours include a changed or deleted row, and the rows a changed
row now comes closer to than their last saved neighbour (an exact scan of
the changed vectors against every stored one). When so many rows changed
that this costs more than a full pass, it says so and makes one.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from . import catalog, filters, query, reader, related_store
from .base import VectorIndex
from .batch import ROWS_PER_READ
from .errors import check_count
from .related_store import Key
from .sync import rankable

MAX_NUMBER = 100  # neighbours per row
BATCH_ROWS = 2048  # rows searched at once: the backend spreads them over its threads
SCORE_CHUNK = 256
# A related pass searches this many times wider than the index is tuned to
# (its own open copy): a stored row's nearest others are found less often
# than the recall@10 tuning measures on probes (recall@5 0.954 at the
# tuned width, 0.963 at twice it, 100k real rows; benchmarks/related.py).
WIDENING = 2  # rows re-scored at once (bounds the candidates' float64 copy)
# A save re-finds everything when more than 1/FULL_SHARE of the rows changed,
# or when checking which rows the changed ones reach would score more than
# REVERSE_PAIRS (changed, stored) pairs: either costs about a full pass.
FULL_SHARE = 5
REVERSE_PAIRS = 2_000_000_000
# float32 scores in the reach check, against llm's float64 ones: near misses
# count as reached, so no row whose neighbours changed is left as it was.
MARGIN = 1e-5

Progress = Callable[[int, int], None]


class RelatedRow(NamedTuple):
    "One saved neighbour: ``rank`` 1 is the row nearest ``(collection, id)``."

    collection: str
    id: str
    other_collection: str
    other_id: str
    score: float
    rank: int


@dataclass
class RelatedReport:
    table: str
    rows: int  # rows whose neighbours this save found
    saved: int  # the index's rows in the table now
    full: bool
    reason: str  # why a full pass, or why nothing was found again
    seconds: float


@dataclass
class Stored:
    "A batch of indexed rows as they are now: labels, keys and float32 vectors."

    labels: np.ndarray
    keys: list[Key]
    vectors: np.ndarray


def stored_batches(index: query.Queried, size: int = BATCH_ROWS) -> Iterator[Stored]:
    """Every indexed row with a rankable vector of the index's width, in label
    order, ``size`` at a time (rows deleted since the build are not there)."""
    width = 4 * (index.record.dimensions or 0)
    join = filters.row_of_label(index.label_hints)
    last = -1
    while True:
        rows = (
            reader.connection(index.db)
            .execute(
                f"select l.label, l.collection_id, l.id, e.embedding "
                f"from vector_index_labels l join embeddings e on {join} "
                "where l.index_id = ? and l.label > ? order by l.label limit ?",
                [index.record.id, last, size],
            )
            .fetchall()
        )
        if not rows:
            return
        last = rows[-1][0]
        rows = [row for row in rows if isinstance(row[3], bytes) and len(row[3]) == width]
        if not rows:
            continue
        vectors = np.frombuffer(b"".join(row[3] for row in rows), dtype="<f4")
        vectors = vectors.reshape(len(rows), -1)
        usable = np.flatnonzero(rankable(vectors))
        yield Stored(
            np.array([rows[i][0] for i in usable], dtype=np.int64),
            [(rows[i][1], rows[i][2]) for i in usable],
            vectors[usable],
        )


def find(
    index: query.Queried,
    number: int,
    only: set[Key] | None = None,
    progress: Progress | None = None,
) -> Iterator[tuple[Key, list[tuple[Key, float]]]]:
    """Each indexed row's (or just ``only``'s) ``number`` nearest other rows
    as ``(key, [(other key, llm's cosine)])``, best first, ties in rowid order."""
    backend, private = _widened(index)
    total = index.record.rows if only is None else len(only)
    done = 0
    try:
        for batch in stored_batches(index):
            if only is not None:
                keep = [i for i, key in enumerate(batch.keys) if key in only]
                if not keep:
                    continue
                batch = Stored(
                    batch.labels[keep], [batch.keys[i] for i in keep], batch.vectors[keep]
                )
            yield from zip(batch.keys, _nearest_others(index, backend, batch, number))
            done += len(batch.keys)
            if progress is not None:
                progress(len(batch.keys), max(total, done))
    finally:
        if private:
            backend.close()


def _widened(index: query.Queried) -> tuple[VectorIndex, bool]:
    """The backend a related pass searches, and whether it is a private copy
    (to close): searching WIDENING times wider than tuned where the backend
    has a search width and can widen one instance alone."""
    backend = query.current_backend(index)
    kind = type(backend)
    tunable = kind.tunable(backend.settings)
    if tunable is None or not kind.capabilities.private_search_options:
        return backend, False
    width = backend.settings.get(tunable.option)
    if not isinstance(width, int) or width >= max(tunable.values):
        return backend, False
    wider = next(
        value for value in tunable.values if value >= min(WIDENING * width, max(tunable.values))
    )
    private = index.holder.private()
    if private is None or not index.holder.matches_catalog(private):
        if private is not None:
            private.close()
        return query.current_backend(index), False
    private.set_search_option(tunable.option, wider)
    return private, True


def _nearest_others(index, backend, batch: Stored, number: int) -> list[list[tuple[Key, float]]]:
    k = min(backend.candidates(number + 1), backend.count())
    if k == 0:
        return [[] for _ in batch.keys]
    _, found = backend.search(batch.vectors, k, None)
    candidates = _candidate_rows(index, found, batch.vectors.shape[1])
    known = np.array(sorted(candidates), dtype=np.int64)
    if len(known) == 0:
        return [[] for _ in batch.keys]
    vectors = np.frombuffer(b"".join(candidates[label][0] for label in known), dtype="<f4")
    vectors = vectors.reshape(len(known), -1).astype(np.float64)
    norms = np.sqrt(np.einsum("ij,ij->i", vectors, vectors))
    rowids = np.array([candidates[label][1] for label in known], dtype=np.int64)
    keys = [candidates[label][2] for label in known]
    where = np.searchsorted(known, found).clip(0, len(known) - 1)
    valid = (known[where] == found) & (found != batch.labels[:, None])
    answers = []
    for start in range(0, len(found), SCORE_CHUNK):
        at = where[start : start + SCORE_CHUNK]
        sources = batch.vectors[start : start + SCORE_CHUNK].astype(np.float64)
        with np.errstate(invalid="ignore", divide="ignore"):
            scores = np.einsum("rcd,rd->rc", vectors[at], sources) / (
                norms[at] * np.sqrt(np.einsum("ij,ij->i", sources, sources))[:, None]
            )
        ok = valid[start : start + SCORE_CHUNK] & np.isfinite(scores)
        # Best first at float32 precision, ties in rowid order (query.rank's order).
        first = np.where(ok, -scores.astype(np.float32), np.inf)
        order = np.lexsort((rowids[at], first), axis=1)[:, :number]
        for row, columns in enumerate(order):
            answers.append(
                [(keys[at[row, c]], float(scores[row, c])) for c in columns.tolist() if ok[row, c]]
            )
    return answers


def _candidate_rows(index, found: np.ndarray, dimensions: int) -> dict[int, tuple]:
    "label -> (blob, rowid, key) of every found label whose row is there and fits."
    wanted = np.unique(found[found >= 0])
    width = 4 * dimensions
    rows = {}
    for start in range(0, len(wanted), ROWS_PER_READ):
        for blob, rowid, collection_id, id, label in query.rows_for_labels(
            index,
            wanted[start : start + ROWS_PER_READ],
            "e.embedding, e.rowid, l.collection_id, l.id",
        ):
            if isinstance(blob, bytes) and len(blob) == width:
                rows[label] = (blob, rowid, (collection_id, id))
    return rows


def related(
    index: query.Queried, number: int = 5, progress: Progress | None = None
) -> Iterator[RelatedRow]:
    """Every indexed row's ``number`` nearest other rows, as the rows ``save``
    writes; the number and the index are checked now, not at the first row."""
    check_count(number, "number", MAX_NUMBER)
    query.begin(index, None)
    names = _collection_names(index)
    return (
        row
        for key, others in find(index, number, progress=progress)
        for row in _rows_of(names, key, others)
    )


def _rows_of(names: dict[int, str], key: Key, others: list[tuple[Key, float]]):
    return [
        RelatedRow(names[key[0]], key[1], names[other[0]], other[1], score, rank)
        for rank, (other, score) in enumerate(others, 1)
    ]


def save(
    index: query.Queried,
    table: str,
    number: int = 5,
    *,
    full: bool = False,
    progress: Progress | None = None,
) -> RelatedReport:
    """Write every row's ``number`` nearest other rows to ``table``, replacing
    this index's previous rows in one transaction; only the rows whose
    neighbours can have changed are searched again, unless ``full``."""
    started = time.time()
    check_count(number, "number", MAX_NUMBER)
    related_store.check_table_name(table)
    db = index.db
    query.begin(index, None)  # built and up to date
    catalog.ensure_schema(db)
    exists = related_store.check_writable(db, table)  # before any work
    record = index.record
    registered = related_store.registration(db, record.id, table)
    names = _collection_names(index)
    seen = {
        (collection_id, id): checksum
        for collection_id, id, checksum in db.execute(
            "select collection_id, id, checksum from vector_index_labels "
            "where index_id = ? and label >= 0",
            [record.id],
        )
        if collection_id in names
    }
    reason = _why_full(db, record.name, table, number, full, exists, registered)
    replaced: set[tuple[str, str]] | None = None
    only: set[Key] | None = None
    if not reason:
        previous = related_store.snapshot(db, record.id, table)
        changed = {key for key, checksum in seen.items() if previous.get(key) != checksum}
        if not changed and previous.keys() <= seen.keys():
            return RelatedReport(
                table, 0, registered.rows if registered else 0, False, "up to date",
                time.time() - started,
            )  # fmt: skip
        if len(changed) * FULL_SHARE > len(seen) or len(changed) * len(seen) > REVERSE_PAIRS:
            reason = (
                f"{len(changed):,} of {len(seen):,} rows changed: finding every row's "
                "neighbours again costs less than finding the rows they reach"
            )
        else:
            saved = related_store.saved_lists(db, table, record.name)
            only = _reached(index, names, seen, previous, changed, saved, number)
            replaced = set(saved) - {(names[c], id) for c, id in seen.keys() - only}
    rows: list[related_store.Row] = []
    found = 0
    for key, others in find(index, number, only, progress):
        found += 1
        rows.extend((record.name, *row) for row in _rows_of(names, key, others))
    count = related_store.write(
        db,
        index_id=record.id,
        index_name=record.name,
        table=table,
        number=number,
        replaced=replaced,
        rows=rows,
        seen=seen,
        version=registered.version if registered else None,
    )
    return RelatedReport(table, found, count, bool(reason), reason, time.time() - started)


def _why_full(db, name, table, number, full, exists, registered) -> str:
    "Why this save must find every row's neighbours, or '' if it need not."
    if full:
        return "a full pass was asked for"
    if registered is None:
        return f"the first save of index {name!r} into {table!r}"
    if not exists:
        return f"table {table!r} was dropped since the last save"
    if registered.number != number:
        return f"the last save kept {registered.number} neighbours a row, this one {number}"
    count = db.execute(f"select count(*) from [{table}] where index_name = ?", [name]).fetchone()
    if count[0] != registered.rows:
        return f"rows of index {name!r} in {table!r} were changed since the last save"
    return ""


def _reached(index, names, seen, previous, changed, saved, number) -> set[Key]:
    """The rows whose saved neighbours may no longer be their nearest: the
    changed rows, the rows whose list holds a changed or deleted row (or
    that have no list), and the rows a changed vector is now at least as
    close to as their last neighbour."""
    gone = changed | (previous.keys() - seen.keys())
    gone_named = {(names.get(c), id) for c, id in gone}
    reached = set(changed)
    threshold: dict[Key, float] = {}
    for key in seen.keys() - changed:
        others = saved.get((names[key[0]], key[1]))
        if others is None or any((c, id) in gone_named for c, id, _ in others):
            reached.add(key)
        elif len(others) < number or not isinstance(others[-1][2], float):
            threshold[key] = -np.inf
        else:
            threshold[key] = others[-1][2] - MARGIN
    moved = _vectors_of(index, changed)
    if len(moved) == 0:
        return reached
    moved /= np.linalg.norm(moved, axis=1, keepdims=True)
    for batch in stored_batches(index):
        limits = np.array([threshold.get(key, np.inf) for key in batch.keys], dtype=np.float32)
        if (limits == np.inf).all():
            continue  # every row here is searched again anyway
        unit = batch.vectors / np.linalg.norm(batch.vectors, axis=1, keepdims=True)
        hit = np.zeros(len(unit), dtype=bool)
        for start in range(0, len(moved), 4096):
            hit |= (unit @ moved[start : start + 4096].T >= limits[:, None]).any(axis=1)
        reached.update(key for key, h in zip(batch.keys, hit.tolist()) if h)
    return reached


def _vectors_of(index, keys: set[Key]) -> np.ndarray:
    "The float32 vectors of these indexed rows (those still rankable)."
    dimensions = index.record.dimensions or 0
    vectors = [batch.vectors[[i for i, key in enumerate(batch.keys) if key in keys]]
               for batch in stored_batches(index)]  # fmt: skip
    return np.vstack(vectors) if vectors else np.zeros((0, dimensions), dtype=np.float32)


def _collection_names(index: query.Queried) -> dict[int, str]:
    "collection id -> name, for the covered collections that exist."
    covered = index.record.collections
    return dict(
        index.db.execute(
            f"select id, name from collections where name in ({','.join('?' * len(covered))})",
            covered,
        ).fetchall()
    )
