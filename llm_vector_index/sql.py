"""SQL functions over vector indexes, for any SQLite connection and so for
Datasette (``datasette_plugin.py`` registers them on every connection).

    vector_index_similar(name, id, k)        -- the k rows nearest stored row id
    vector_index_search(name, embedding, k)  -- nearest an embedding: llm's
                                                float32 blob, or a JSON array
    vector_index_query(name, text, k)        -- nearest the text, embedded with
                                                the index's model (a search box)
    vector_index_keywords(name, text, k)     -- the k best rows for the words
                                                (an index with keywords)
    vector_index_hybrid(name, text, embedding, k)  -- both fused
    vector_index_agg(id, embedding, compare_embedding, k)  -- an aggregate:
                                                exact, over the rows a query
                                                selects, no index (sql_aggregate.py)
    vector_index_encode(json), vector_index_decode(blob)  -- llm's float32 blobs

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

from . import catalog, sql_aggregate, sql_values
from .errors import VectorIndexError, check_count

MAX_K = 1000
HYBRID_FIELDS = ("keyword_score", "keyword_rank", "fused", "vector_rank")


def register(conn: sqlite3.Connection) -> None:
    "Add the plugin's SQL functions (this module's docstring lists them) to ``conn``."
    functions = _Functions(conn)
    conn.create_function("vector_index_similar", 3, functions.similar)
    conn.create_function("vector_index_search", 3, functions.search)
    conn.create_function("vector_index_query", 3, functions.query)
    conn.create_function("vector_index_keywords", 3, functions.keywords)
    conn.create_function("vector_index_hybrid", 4, functions.hybrid)
    # (typeshed's protocol for an aggregate knows only one argument.)
    aggregates: Any = {
        "vector_index_agg": sql_aggregate.Nearest,
        "vector_index_agg_report": sql_aggregate.NearestReport,
    }
    for name, aggregate in aggregates.items():
        conn.create_aggregate(name, 4, aggregate)
    conn.create_function("vector_index_encode", 1, sql_values.encode, deterministic=True)
    conn.create_function("vector_index_decode", 1, sql_values.decode, deterministic=True)


class _Functions:
    def __init__(self, conn: sqlite3.Connection) -> None:
        self.db = Database(conn)
        self.indexes: dict[str, Any] = {}  # name -> Index, open for this connection

    def similar(self, name: Any, id: Any, k: Any) -> str:
        def run(index, number):
            if not isinstance(id, str):
                raise VectorIndexError(f"id must be text, got {sql_values.kind(id)}")
            return index.similar_by_id(id, number)

        return self._answer(name, k, run)

    def search(self, name: Any, embedding: Any, k: Any) -> str:
        def run(index, number):
            return index.similar_by_vector(
                sql_values.vector(embedding, index.record.dimensions), number
            )

        return self._answer(name, k, run)

    def query(self, name: Any, text: Any, k: Any) -> str:
        def run(index, number):
            # Embedded with the index's model; hybrid where the index has keywords.
            return index.similar(sql_values.query_text(text), number)

        return self._answer(name, k, run)

    def keywords(self, name: Any, text: Any, k: Any) -> str:
        def run(index, number):
            return index.similar(sql_values.text(text), number, mode="keyword")

        return self._answer(name, k, run)

    def hybrid(self, name: Any, text: Any, embedding: Any, k: Any) -> str:
        def run(index, number):
            from . import hybrid

            vector = sql_values.vector(embedding, index.record.dimensions)
            return hybrid.answer(index, sql_values.text(text), number, "hybrid", lambda: vector)

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
            raise VectorIndexError(f"Index name must be text, got {sql_values.kind(name)}")
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
