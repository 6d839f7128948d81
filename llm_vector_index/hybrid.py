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

import itertools
import json
import math
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import numpy as np

from . import fusion, query
from .errors import DamagedFiles, VectorIndexError, check_count
from .filters import ROW_COLUMNS
from .query import IndexEntry
from .restriction import Restriction, restriction

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
        return search(
            index,
            text,
            number,
            mode,
            embed,
            prefix=prefix,
            collection=collection,
            where=where,
            settings=settings,
        )
    if settings:
        raise VectorIndexError(f"{', '.join(settings)}: fusion settings need --mode hybrid")
    return query.search(index, embed(), number, prefix=prefix, collection=collection, where=where)


def search(
    index: Index,
    text: str | bytes,
    number: int,
    mode: str,
    embed: Callable[[], Any],
    *,
    prefix: str | None = None,
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
    restricted = restriction(index, collection, prefix, where)  # both sides' filter
    if mode == "keyword":
        return _keyword_entries(index, text, number, restricted, show_collection)
    vector = query.query_vector(embed())
    while True:
        # Both sides give labels and their own scores, fused as they are: no
        # row is read until the winners are known.
        vector_side = query.nearest_labels(index, vector, depth, restricted)
        keyword_side = _keyword_labels(index, text, depth, restricted, all_ties=False)
        fused = fusion.fused_order(
            _pairs(*vector_side), _pairs(*keyword_side), chosen["fusion"], chosen["weight"]
        )
        keyword_scores = dict(_pairs(*keyword_side))
        entries = _winners(index, fused, number, vector, keyword_scores, show_collection)
        exhausted = len(vector_side[1]) < depth and len(keyword_side[1]) < depth
        if len(entries) >= number or exhausted or depth >= fusion.MAX_DEPTH:
            return entries
        # Winners deleted since the build (an index behind its collections):
        # look deeper until enough remain.
        depth = min(depth * 2, fusion.MAX_DEPTH)


def _fusion_settings(index: Index) -> dict[str, Any]:
    settings = index.record.keywords or {}
    return {key: settings[key] for key in fusion.DEFAULTS if key in settings}


def _pairs(scores: np.ndarray, labels: np.ndarray) -> list[tuple[int, float]]:
    return list(zip(labels.tolist(), scores.tolist()))


def _keyword_labels(
    index: Index,
    text: str,
    k: int,
    restricted: Restriction | None,
    all_ties: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """(BM25 scores, labels) of the best ``k`` rows among ``restricted``
    (None: all), best first (see KeywordIndex.search for ``all_ties``)."""
    allowed = restricted.allowed(index) if restricted is not None else None
    keyword_index = index.holder.keywords()
    try:
        return keyword_index.search(text, k, allowed, all_ties=all_ties)
    except DamagedFiles as error:
        # Damage its checks could not see (a crafted folder whose checks
        # match): a plain build would build on it, so a full one is named.
        raise DamagedFiles(
            f"Index {index.name!r} cannot be searched, its keyword files are damaged "
            f"({error}): run llm index build {index.name} --full to rebuild them"
        ) from None


# A keyword query's results are read with their text and metadata, not
# their vectors (it has no query vector to score them by).
TEXT_COLUMNS = ROW_COLUMNS.replace("e.embedding", "null")


def _keyword_entries(
    index: Index,
    text: str,
    number: int,
    restricted: Restriction | None,
    show_collection: bool,
) -> list[IndexEntry]:
    available = index.record.keyword_rows  # at most: a filter's rows are not counted
    k = min(number, available) or 1
    while True:
        scores, labels = _keyword_labels(index, text, k, restricted)
        rows = query.rows_for_labels(index, labels, TEXT_COLUMNS)
        query.check_label_map(index, labels, rows)
        by_label = {row[-1]: row for row in rows}
        entries = [
            IndexEntry(
                id=row[2],
                score=None,
                content=row[3],
                metadata=json.loads(row[4]) if row[4] else None,
                collection=row[1] if show_collection else None,
                keyword_rank=rank,
                keyword_score=score,
            )
            for rank, (score, label) in enumerate(zip(scores.tolist(), labels.tolist()), 1)
            if (row := by_label.get(label)) is not None  # (deleted since the build)
        ]
        # Rows deleted since the build drop out: fetch more until enough.
        if len(entries) >= number or k >= available or len(labels) < k:
            return entries[:number]
        k = min(available, k * 2)


def _winners(
    index: Index,
    fused: Iterator[fusion.Fused],
    number: int,
    vector: np.ndarray,
    keyword_scores: Mapping[Any, float],  # by label (fused keys are labels)
    show_collection: bool,
) -> list[IndexEntry]:
    """The first ``number`` fused labels whose rows are still there, read
    whole and scored by llm's cosine (rank()'s arithmetic), in fused order."""
    entries: list[IndexEntry] = []
    while len(entries) < number:
        chunk = list(itertools.islice(fused, number - len(entries)))
        if not chunk:
            break
        labels = np.array([item.key for item in chunk], dtype=np.int64)
        rows = query.rows_for_labels(index, labels)
        query.check_label_map(index, labels, rows)
        width = 4 * len(vector)
        rows = [row for row in rows if row[5] is not None and len(row[5]) == width]
        scores = query.cosines([row[5] for row in rows], vector).tolist() if rows else []
        scored = {row[-1]: (row, score) for row, score in zip(rows, scores)}
        for item in chunk:
            row, score = scored.get(item.key, (None, math.nan))
            if row is None or not math.isfinite(score):
                continue  # deleted since the build, or changed to what cannot be ranked
            entries.append(
                IndexEntry(
                    id=row[2],
                    score=score,
                    content=row[3],
                    metadata=json.loads(row[4]) if row[4] else None,
                    collection=row[1] if show_collection else None,
                    fused=item.value,
                    vector_rank=item.vector_rank,
                    keyword_rank=item.keyword_rank,
                    keyword_score=keyword_scores.get(item.key),
                )
            )
    return entries
