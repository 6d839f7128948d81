"""Filtered queries: which rows a query may return, and how to search them.

A filter is any mix of a collection (within a multi-collection index), an id
prefix (SQL ``LIKE prefix || '%'``, exactly as llm: ASCII case-insensitive,
``%`` and ``_`` are wildcards) and metadata equalities
(``json_extract(metadata, '$.KEY') = value``; a dotted KEY reaches into
nested objects). Small matching subsets are searched exactly from their rows
in SQLite (the "scratch index"); larger ones go to the backend as an
allow-list of labels. ``SCRATCH_LIMIT`` comes from benchmarks/filtered_search.py.
"""

from __future__ import annotations

import json
import re
import sqlite3
from dataclasses import dataclass, field
from typing import Any

from sqlite_utils import Database

from .errors import VectorIndexError

# Up to this many matching rows, reading them from SQLite and scanning them
# exactly beats a filtered backend search. Measured at 100k rows, 384-d, one
# thread (benchmarks/filtered_search.py, id-prefix filter, median ms):
# 1,000 rows: scratch 13 vs faiss 19 / hnswlib 44; 5,000: 32 vs 20 / 24.
SCRATCH_LIMIT = 2_000

KEY_PATTERN = re.compile(r"[A-Za-z0-9_\-]+(\.[A-Za-z0-9_\-]+)*")

# Columns every row query selects, in this order (see Index._rank).
ROW_COLUMNS = "e.collection_id, c.name, e.id, e.content, e.metadata, e.embedding, e.rowid"


def json_path(key: str) -> str:
    "``a.b`` -> ``$.\"a\".\"b\"``: quoted, so keys with '-' work as themselves."
    if not isinstance(key, str) or not KEY_PATTERN.fullmatch(key):  # "$" lets "a\n" pass
        raise VectorIndexError(
            f"Invalid metadata key {key!r}: use letters, digits, '_' and '-', "
            "with '.' between nested keys"
        )
    return "$" + "".join(f'."{part}"' for part in key.split("."))


def sql_value(value: Any) -> Any:
    "How ``json_extract`` returns a JSON value: true/false as 1/0."
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int) and not -(2**63) <= value < 2**63:
        # Beyond SQLite's integers: json_extract gives such a number as a REAL.
        try:
            return float(value)
        except OverflowError:
            raise VectorIndexError(f"Metadata filter value {value} is too large") from None
    if value is None or isinstance(value, (int, float, str)):
        return value
    raise VectorIndexError(f"Metadata filter values must be scalars, got {value!r}")


def where_option(pairs: list[tuple[str, str]]) -> dict[str, Any]:
    """``--where KEY VALUE`` pairs as a filter. A key given twice is refused:
    a row's metadata has one value per key, so both could never hold, and
    keeping only the last would silently drop the first."""
    where: dict[str, Any] = {}
    for key, text in pairs:
        if key in where:
            raise VectorIndexError(
                f"--where {key} is given twice: a row has one value for each key"
            )
        where[key] = parse_cli_value(text)
    return where


def parse_cli_value(text: str) -> Any:
    "A --where value from the command line: JSON scalars as such, else the text."
    try:
        value = json.loads(text)
    except ValueError:
        return text
    return value if not isinstance(value, (list, dict)) else text


@dataclass
class Filter:
    collection_ids: list[int]
    prefix: str | None = None
    where: dict[str, Any] = field(default_factory=dict)

    def _clauses(self) -> tuple[str, list[Any]]:
        marks = ",".join("?" * len(self.collection_ids)) or "null"
        clauses = [f"e.collection_id in ({marks})"]
        params: list[Any] = list(self.collection_ids)
        if self.prefix:
            clauses.append("e.id like ? || '%'")
            params.append(self.prefix)
        for key, value in self.where.items():
            clauses.append("json_extract(e.metadata, ?) = ?")
            params += [json_path(key), sql_value(value)]
        return " and ".join(clauses), params

    def rowids(self, db: Database) -> list[int]:
        """The matching rows' rowids. An id-prefix filter scans only the index
        on (collection_id, id); a metadata filter has to read every row."""
        clauses, params = self._clauses()
        rows = self._query(db, f"select e.rowid from embeddings e where {clauses}", params)
        return [row[0] for row in rows]

    @classmethod
    def rows(cls, db: Database, rowids: list[int]) -> list[tuple]:
        "These rows with their vectors (see ROW_COLUMNS), for a scratch scan."
        return cls._query(
            db,
            f"select {ROW_COLUMNS} from json_each(?) j "
            "cross join embeddings e on e.rowid = j.value "
            "join collections c on c.id = e.collection_id",
            [json.dumps(rowids)],
        )

    @classmethod
    def labels(cls, db: Database, index_id: int, rowids: list[int]):
        "The index's labels for these rows: the backend's allow-list."
        import numpy as np

        rows = cls._query(
            db,
            "select l.label from json_each(?) j "
            "cross join embeddings e on e.rowid = j.value "
            "cross join vector_index_labels l on l.index_id = ? "
            "and l.collection_id = e.collection_id and l.id = e.id "
            "where l.label >= 0",  # negative: held back, not in the backend
            [json.dumps(rowids), index_id],
        )
        return np.fromiter((row[0] for row in rows), dtype=np.int64, count=len(rows))

    @staticmethod
    def _query(db: Database, sql: str, params: list[Any]) -> list[tuple]:
        try:
            return db.execute(sql, params).fetchall()
        except sqlite3.OperationalError as error:  # e.g. metadata that is not JSON
            raise VectorIndexError(f"Filter failed: {error}") from None
