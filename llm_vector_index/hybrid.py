"""Keyword and hybrid queries: the keyword index (keywords.py) alone, or
fused with the vector side (fusion.py).

Filters (a collection, an id prefix, ``where``) restrict both sides before
fusion, so ``number`` results come back whenever that many rows match. Each
result's ``score`` stays llm's cosine for the query (None in keyword mode,
which embeds nothing: it works where the model is not installed or has no
key); the fused value, each side's rank and the BM25 score are fields of
their own.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from . import fusion, query
from .errors import VectorIndexError, check_count
from .filters import Filter
from .query import IndexEntry, Skip

# ``index`` below is an ``index.Index``: not imported, not even for a type,
# as no module below the facade imports it (DESIGN.md).
Index = Any


def mode_for(index: Index, mode: str | None) -> str:
    "The mode a query runs in: hybrid by default for an index with keywords."
    if mode is None:
        return "hybrid" if index.record.keywords else "vector"
    if mode not in fusion.MODES:
        raise VectorIndexError(f"mode must be one of {', '.join(fusion.MODES)}, not {mode!r}")
    if mode != "vector" and not index.record.keywords:
        raise VectorIndexError(
            f"Index {index.name!r} has no keyword index for --mode {mode}: add one "
            f"with llm index keywords {index.name}"
        )
    return mode


def answer(
    index: Index,
    text: str | bytes,
    number: int,
    mode: str | None,
    embed: Callable[[], Any],
    *,
    prefix: str | None = None,
    collection: str | None = None,
    where: dict[str, Any] | None = None,
    settings: dict[str, Any] | None = None,
) -> list[IndexEntry]:
    """A query by text in the mode asked for (None: the index's default):
    the vector side alone, or ``search`` below. ``embed()`` gives the
    text's vector, called only when the mode needs it. Binary content has
    no words: unless a mode is asked for, it is a vector query."""
    if mode is None and not isinstance(text, str):
        mode = "vector"
    mode = mode_for(index, mode)
    if mode != "vector":
        return search(index, text, number, mode, embed, prefix=prefix, collection=collection,
                      where=where, settings=settings)
    if settings:
        raise VectorIndexError(f"{', '.join(settings)}: fusion settings need --mode hybrid")
    return query.search(index, embed(), number, prefix=prefix, collection=collection,
                        where=where)


def search(
    index: Index,
    text: str,
    number: int,
    mode: str,
    embed: Callable[[], Any],
    *,
    prefix: str | None = None,
    skip: Skip = frozenset(),
    collection: str | None = None,
    where: dict[str, Any] | None = None,
    settings: dict[str, Any] | None = None,
) -> list[IndexEntry]:
    """``number`` rows for ``text`` in ``mode`` (keyword or hybrid);
    ``embed()`` gives the query's vector (hybrid only), ``settings`` any of
    fusion, weight, depth for this query (the index's own otherwise)."""
    check_count(number, "number")
    if not isinstance(text, str):
        raise VectorIndexError("Keyword and hybrid queries need text, not binary content")
    chosen = fusion.check({**_fusion_settings(index), **(settings or {})})
    depth = max(fusion.depth_for(number, chosen["depth"]), number)
    collection, show_collection = query.begin(index, collection)
    if index.record.keyword_rows is None:
        raise VectorIndexError(
            f"Index {index.name!r} has keywords that no build has filled yet: "
            f"run llm index build {index.name}"
        )
    rowids = query.restriction(index, collection, prefix, where)  # both sides' filter
    if mode == "keyword":
        hits = _keyword_hits(index, text, number, skip, rowids)
        entries = _entries(index, hits, None, show_collection)
        return [replace(entries[hit.key], keyword_rank=hit.rank, keyword_score=hit.score)
                for hit in hits if hit.key in entries]
    vector = query.query_vector(embed())
    vector_side = query.ranked(index, vector, depth, skip, show_collection, lambda: rowids)
    hits = _keyword_hits(index, text, depth, skip, rowids)
    # Entries name no collection when the query is in one: key them by it.
    only = collection or index.collections[0]
    return _fused(index, vector, vector_side, hits, number, chosen, show_collection, only)


def _fusion_settings(index: Index) -> dict[str, Any]:
    settings = index.record.keywords or {}
    return {key: settings[key] for key in fusion.DEFAULTS if key in settings}


@dataclass(frozen=True)
class _Hit:
    "A row the keyword side found: its key, label, rank (from 1) and BM25 score."

    key: tuple[str, str]  # (collection name, id)
    label: int
    rank: int
    score: float


def _keyword_hits(
    index: Index, text: str, number: int, skip: Skip, rowids: list[int] | None,
) -> list[_Hit]:
    """The best ``number`` rows by BM25 among ``rowids`` (None: all), best
    first. Only their keys are read from SQLite (no vectors, no text): most
    of them are fused away, and the winners are read whole afterwards."""
    record = index.record
    allowed = None
    if rowids is not None:
        allowed = Filter.labels(index.db, record.id, rowids)
        if len(allowed) == 0:
            return []
    keyword_index = index.holder.keywords()
    available = record.keyword_rows if allowed is None else len(allowed)
    k = min(number + len(skip), available) or 1
    while True:
        scores, labels = keyword_index.search(text, k, allowed)
        rows = query.keys_for_labels(index, labels)
        query.check_label_map(index, labels, rows)
        by_label = {row[3]: row for row in rows}
        hits = []
        for rank, (score, label) in enumerate(zip(scores.tolist(), labels.tolist()), 1):
            row = by_label.get(label)
            if row is None or (skip and ((row[0], row[2]) in skip or (None, row[2]) in skip)):
                continue  # deleted since the build, or the row queried by
            hits.append(_Hit((row[1], row[2]), label, rank, score))
        # Rows deleted since the build drop out: fetch more until enough.
        if len(hits) >= number or k >= available or len(labels) < k:
            return hits[:number]
        k = min(available, k * 2)


def _entries(
    index: Index, hits: list[_Hit], vector: np.ndarray | None, show_collection: bool
) -> dict[tuple[str, str], IndexEntry]:
    """These hits' rows as entries, scored by llm's cosine against ``vector``
    (rank()'s arithmetic; None without a vector), by key."""
    rows = query.rows_for_labels(index, np.array([hit.label for hit in hits], dtype=np.int64))
    cosines = {}
    if vector is not None:
        cosines = {(e.collection, e.id): e.score
                   for e in query.rank(rows, vector, frozenset(), True)}
    return {
        (row[1], row[2]): IndexEntry(
            id=row[2], score=cosines.get((row[1], row[2])), content=row[3],
            metadata=json.loads(row[4]) if row[4] else None,
            collection=row[1] if show_collection else None,
        )
        for row in rows
    }


def _fused(
    index: Index, vector: np.ndarray, vector_side: list[IndexEntry], hits: list[_Hit],
    number: int, settings: dict[str, Any], show_collection: bool, only: str,
) -> list[IndexEntry]:
    """The best ``number`` of both sides. Fusion needs each side's own
    scores only, so rows found by the keyword side alone are read (and their
    cosine computed) only if they win."""
    def key(entry: IndexEntry) -> tuple[str, str]:
        return (entry.collection or only, entry.id)

    by_key = {key(entry): entry for entry in vector_side}
    hit_of = {hit.key: hit for hit in hits}
    fused = fusion.fuse(
        [(key(entry), entry.score) for entry in vector_side],
        [(hit.key, hit.score) for hit in hits],
        settings["fusion"], settings["weight"],
    )[:number]
    missing = [hit_of[item.key] for item in fused if item.key not in by_key]
    if missing:
        by_key.update(_entries(index, missing, vector, show_collection))
    return [
        replace(
            by_key[item.key], fused=item.value, vector_rank=item.vector_rank,
            keyword_rank=item.keyword_rank,
            keyword_score=hit_of[item.key].score if item.key in hit_of else None,
        )
        for item in fused if item.key in by_key  # (a row deleted since: gone)
    ]
