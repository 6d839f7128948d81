"""SQL functions over vector indexes, for any SQLite connection and so for
Datasette (``datasette_plugin.py`` registers them on every connection).

    vector_index_similar(name, id, k)        -- the k rows nearest stored row id
    vector_index_search(name, embedding, k)  -- nearest an embedding: llm's
                                                float32 blob, or a JSON array
    vector_index_keywords(name, text, k)     -- the k best rows for the words
                                                (an index with keywords)
    vector_index_hybrid(name, text, embedding, k)  -- both fused

Each returns a JSON array of ``{"id", "score", "collection"}``, best first
(keyword and hybrid hits add ``keyword_score``, ``keyword_rank``, ``fused``,
``vector_rank``; a keyword hit's ``score`` is null: nothing is embedded),
to expand with ``json_each`` and join back to llm's tables::

    select hit.value ->> 'score' as score, e.id, e.content
    from json_each(vector_index_similar('docs-idx', 'notes/a.md', 5)) hit
    join collections c on c.name = hit.value ->> 'collection'
    join embeddings e on e.collection_id = c.id and e.id = hit.value ->> 'id'

Python's sqlite3 reports any exception raised in a function as
"user-defined function raised exception", whatever it says, so bad input
(an unknown index, a blob of the wrong length, k out of range) returns one
object, ``{"error": "..."}``, instead of hits: the reason is then visible
wherever the query ran. Indexes open once per connection, are re-opened when
a build has replaced their files, and never build from inside a query (a
stale index answers from its last build and says so on stderr, once).
"""

from __future__ import annotations

import json
import sqlite3
from typing import Any

from sqlite_utils import Database

from . import catalog
from .errors import VectorIndexError, check_count

MAX_K = 1000
HYBRID_FIELDS = ("keyword_score", "keyword_rank", "fused", "vector_rank")


def register(conn: sqlite3.Connection) -> None:
    "Add ``vector_index_similar`` and ``vector_index_search`` to ``conn``."
    functions = _Functions(conn)
    conn.create_function("vector_index_similar", 3, functions.similar)
    conn.create_function("vector_index_search", 3, functions.search)
    conn.create_function("vector_index_keywords", 3, functions.keywords)
    conn.create_function("vector_index_hybrid", 4, functions.hybrid)


class _Functions:
    def __init__(self, conn: sqlite3.Connection) -> None:
        self.db = Database(conn)
        self.indexes: dict[str, Any] = {}  # name -> Index, open for this connection

    def similar(self, name: Any, id: Any, k: Any) -> str:
        def run(index, number):
            if not isinstance(id, str):
                raise VectorIndexError(f"id must be text, got {_kind(id)}")
            return index.similar_by_id(id, number)

        return self._answer(name, k, run)

    def search(self, name: Any, embedding: Any, k: Any) -> str:
        def run(index, number):
            return index.similar_by_vector(_vector(embedding, index.record.dimensions), number)

        return self._answer(name, k, run)

    def keywords(self, name: Any, text: Any, k: Any) -> str:
        def run(index, number):
            return index.similar(_text(text), number, mode="keyword")

        return self._answer(name, k, run)

    def hybrid(self, name: Any, text: Any, embedding: Any, k: Any) -> str:
        def run(index, number):
            from . import hybrid

            vector = _vector(embedding, index.record.dimensions)
            return hybrid.answer(index, _text(text), number, "hybrid", lambda: vector)

        return self._answer(name, k, run)

    def _answer(self, name: Any, k: Any, run) -> str:
        try:
            number = check_count(k, "k", MAX_K)
            index = self._index(name)
            entries = run(index, number)
            return json.dumps(
                [
                    {
                        "id": entry.id,
                        "score": entry.score,
                        "collection": entry.collection or index.collections[0],
                        **{
                            key: getattr(entry, key)
                            for key in HYBRID_FIELDS
                            if entry.keyword_rank is not None or entry.fused is not None
                        },
                    }
                    for entry in entries
                ]
            )
        except VectorIndexError as error:
            return json.dumps({"error": str(error)})

    def _index(self, name: Any):
        from .index import Index

        if not isinstance(name, str):
            raise VectorIndexError(f"Index name must be text, got {_kind(name)}")
        index = self.indexes.get(name)
        if index is None or index.identity != catalog.identity_of(self.db, name):
            # Not yet open here, or dropped and created again since (maybe
            # under the same id: SQLite reuses it).
            if index is not None:
                index.close()
            index = Index(name, self.db)
            index.may_build = False  # a query must not write inside a SELECT
            self.indexes[name] = index
        return index


def _vector(embedding: Any, dimensions: int | None) -> Any:
    "llm's little-endian float32 blob, or a JSON array of numbers."
    import numpy as np

    if isinstance(embedding, bytes):
        if dimensions is not None and len(embedding) != 4 * dimensions:
            raise VectorIndexError(
                f"embedding must be a blob of {dimensions} float32 values "
                f"({4 * dimensions} bytes), got {len(embedding)} bytes"
            )
        if len(embedding) % 4:
            raise VectorIndexError(
                f"embedding blob of {len(embedding)} bytes is not float32 values"
            )
        return np.frombuffer(embedding, dtype="<f4")
    if isinstance(embedding, str):
        try:
            values = json.loads(embedding)
        except ValueError:
            values = None
        if isinstance(values, list) and not any(isinstance(v, bool) for v in values):
            return values  # (query_vector checks the rest: flat, numbers, finite)
    raise VectorIndexError(
        f"embedding must be llm's float32 blob or a JSON array of numbers, got {_kind(embedding)}"
    )


def _text(text: Any) -> str:
    if not isinstance(text, str) or not text.strip():
        raise VectorIndexError(f"text must be non-empty text, got {_kind(text)}")
    return text


def _kind(value: Any) -> str:
    return "NULL" if value is None else type(value).__name__
