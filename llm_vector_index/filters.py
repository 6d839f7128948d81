"""Filtered queries: which rows a query may return, and how to search them.

A filter is any mix of a collection (within a multi-collection index), an id
prefix (SQL ``LIKE prefix || '%'``, exactly as llm: ASCII case-insensitive,
``%`` and ``_`` are wildcards) and metadata equalities
(``json_extract(metadata, '$.KEY') = value``; a dotted KEY reaches into
nested objects). Small matching subsets are searched exactly from their rows
in SQLite (the "scratch index"); larger ones go to the backend as an
allow-list of labels. ``SCRATCH_LIMIT`` comes from benchmarks/filtered_search.py.

A metadata filter reads every row's JSON, unless its keys have an index on
llm's table (metadata_indexes.py): then it reads one range of it, and
checks a row by a lookup in it.

A prefix reads only its ranges of the index on (collection_id, id), and an
allow-list without a metadata filter comes from the label map alone: at 100k
rows a filter allowing 10% of them took a vector query from 37 to 12 ms p50,
and one allowing 0.1% from 14 to 0.6 ms (the whole index scanned for LIKE
before, then every row joined to the label map).
"""

from __future__ import annotations

import json
import re
import sqlite3
from dataclasses import dataclass, field
from typing import Any

from sqlite_utils import Database

from . import reader
from .errors import VectorIndexError
from .keyword_filter import sorted_distinct
from .metadata_indexes import index_name, value_of

# Up to this many matching rows they are read from SQLite and scanned
# exactly, where hnswlib's allow-list is slowest (its graph walks far to
# find sparse allowed rows); faiss's would gain from a lower limit. Measured
# at 100k rows, 384-d, one thread (benchmarks/filtered_search.py, id-prefix
# filter, median ms): 1,000 rows: scratch 6.0 vs faiss 1.8 / hnswlib 18.9;
# 5,000: 17.6 vs 5.6 / 3.9.
SCRATCH_LIMIT = 2_000

# Columns every row query selects, in this order (see Index._rank).
ROW_COLUMNS = "e.collection_id, c.name, e.id, e.content, e.metadata, e.embedding, e.rowid"


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


# Case variants of an id prefix's first ASCII letters given their own index
# range: 2 ** PREFIX_LETTERS ranges at most, the rest of the prefix checked
# by LIKE on the rows those ranges hold.
PREFIX_LETTERS = 3


def prefix_ranges(prefix: str, most_letters: int = PREFIX_LETTERS) -> list[tuple[str, bytes]]:
    """Index ranges ``[low, high)`` (``high`` as UTF-8 bytes, compared as
    text) that hold every id ``LIKE prefix || '%'`` matches: the prefix up
    to its first wildcard, cut before its ASCII letter past ``most_letters``,
    in each mix of upper and lower case. None ([]) when a wildcard comes first."""
    literal = re.split(r"[%_]", prefix, maxsplit=1)[0]
    letters = [i for i, char in enumerate(literal) if char.isascii() and char.isalpha()]
    if len(letters) > most_letters:
        literal = literal[: letters[most_letters]]
        letters = letters[:most_letters]
    if not literal:
        return []
    variants = [""]
    for i, char in enumerate(literal):
        forms = (char.lower(), char.upper()) if i in letters else (char,)
        variants = [variant + form for variant in variants for form in forms]
    ranges = []
    for low in variants:
        encoded = low.encode()  # UTF-8 never holds 0xff: the last byte can go up
        ranges.append((low, encoded[:-1] + bytes([encoded[-1] + 1])))
    return ranges


def in_range(row: str) -> str:
    "SQL: ``row``'s id in one of prefix_ranges' ranges (bound as low, high)."
    return f"{row}.id >= ? and {row}.id < cast(? as text)"


# A filter reads its rows' labels from the ends of their runs (ordered_labels)
# only while the labels handed out since the last full build, which it reads
# one by one, are at most LATER_LIMIT, the runs at most MAX_ORDERED labels in
# all (the catalog's numbers come from a file people share), and its prefix
# has at most EXACT_LETTERS ASCII letters (a range for each way of writing
# them: "docs/" is 16).
LATER_LIMIT = 2_000
MAX_ORDERED = 1 << 26
EXACT_LETTERS = 5


def exact_ranges(prefix: str) -> list[tuple[str, bytes]] | None:
    """prefix_ranges that hold exactly the ids the prefix matches (no
    wildcard, every ASCII letter in its own variants), else None."""
    if "%" in prefix or "_" in prefix:
        return None
    if sum(char.isascii() and char.isalpha() for char in prefix) > EXACT_LETTERS:
        return None
    return prefix_ranges(prefix, most_letters=EXACT_LETTERS)


# The rowid of label l's row: its hint where the hint still holds that row
# (one lookup by rowid), else by the key (llm's replace and VACUUM move
# rowids; the hint is NULL in label maps from before hints). Two rows can
# never come back for one label: the key is unique in llm's table.
ROW_BY_KEY = "e.collection_id = l.collection_id and e.id = l.id"
ROWID_BY_KEY = (
    "(select x.rowid from embeddings x where x.collection_id = l.collection_id and x.id = l.id)"
)
ROWID_OF_LABEL = f"""coalesce(
            (select x.rowid from embeddings x
             where x.rowid = l.hint and x.collection_id = l.collection_id and x.id = l.id),
            {ROWID_BY_KEY})"""
ROW_OF_LABEL = f"e.rowid = {ROWID_OF_LABEL}"


def row_of_label(hints: bool) -> str:
    "How to join label l's row of llm's table, e: by its hint, if the label map has them."
    return ROW_OF_LABEL if hints else ROW_BY_KEY


@dataclass
class Filter:
    collection_ids: list[int]
    prefix: str | None = None
    where: dict[str, Any] = field(default_factory=dict)
    # keys of ``where`` with their SQLite index on llm's table (metadata_indexes.py)
    indexed: frozenset[str] = frozenset()

    @property
    def where_indexed(self) -> bool:
        "Has every key of the metadata filter its index on llm's table?"
        return bool(self.where) and self.indexed.issuperset(self.where)

    def _clauses(self, row: str = "e", where: bool = True) -> tuple[str, list[Any]]:
        marks = ",".join("?" * len(self.collection_ids)) or "null"
        clauses = [f"{row}.collection_id in ({marks})"]
        params: list[Any] = list(self.collection_ids)
        if self.prefix:
            clauses.append(f"{row}.id like ? || '%'")
            params.append(self.prefix)
        for key, value in self.where.items() if where else ():
            clauses.append(f"{value_of(key, 'e')} = ?")
            params.append(sql_value(value))
        return " and ".join(clauses), params

    def _select(
        self,
        columns: str,
        joins: str = "",
        extra: str = "",
        extra_params: tuple = (),
        table: str = "embeddings e",
        row: str = "e",
    ) -> tuple[str, list[Any]]:
        """SQL for ``columns`` of the matching rows (``e``: embeddings), with
        ``extra`` conditions. An id prefix reads only its part of the index on
        (collection_id, id): one range for each way of writing its first
        letters, as LIKE ignores ASCII case, which keeps SQLite from using the
        index for the LIKE itself."""
        clauses, params = self._clauses(row)
        if extra:
            clauses, params = f"{clauses} and {extra}", [*params, *extra_params]
        ranges = prefix_ranges(self.prefix) if self.prefix else []
        if not ranges:
            return f"select {columns} from {table} {joins} where {clauses}", params
        selects, all_params = [], []
        for low, high in ranges:  # disjoint: no row comes twice
            selects.append(
                f"select {columns} from {table} {joins} where {clauses} " f"and {in_range(row)}"
            )
            all_params += [*params, low, high]
        return " union all ".join(selects), all_params

    def rowids(self, db: Database, limit: int | None = None) -> list[int]:
        "The matching rows' rowids (the first ``limit`` found, if given)."
        sql, params = self._select("e.rowid")
        if limit is not None:
            sql, params = f"select * from ({sql}) limit ?", [*params, limit]
        return [row[0] for row in self._query(db, sql, params)]

    def matching_labels(self, db: Database, index_id: int):
        """The index's labels for the matching rows, in one statement: the
        backend's allow-list. Without a metadata filter, from the label map
        alone (it holds each row's collection and id; a row deleted since the
        build is then allowed, and drops out when the winners are read)."""

        held = "l.index_id = ? and l.label >= 0"  # negative: held back, not in the backend
        if self.where:
            sql, params = self._select(
                "l.label",
                "cross join vector_index_labels l on l.collection_id = e.collection_id "
                "and l.id = e.id",
                held,
                (index_id,),
            )
        else:
            sql, params = self._select(
                "l.label",
                extra=held,
                extra_params=(index_id,),
                table="vector_index_labels l",
                row="l",
            )
        return self._label_array(db, sql, params)

    def ordered_labels(self, db: Database, record: Any):
        """The index's labels for the matching rows as matching_labels finds
        them, read from their runs' ends, or None where that cannot be done.
        The last full build handed out labels in id order within each
        collection (``record.ordered_labels``), so the rows under an id range
        are one run below it: its first and last label are two lookups in
        the label map's index on (index_id, collection_id, id), and only the
        labels handed out since (the rows added later) are read one by one.
        A run's labels whose rows have left the label map are allowed too:
        they are in neither the backend nor the keyword index (10% of 100k
        rows: 0.05 ms, against 2.5 ms for reading their labels). Not with a
        metadata filter, nor a prefix whose ranges hold more than it
        matches."""
        import numpy as np

        ordered = min(record.ordered_labels or 0, record.next_label)
        if self.where or not ordered or record.next_label - ordered > LATER_LIMIT:
            return None
        if ordered > min(MAX_ORDERED, 2 * record.rows + LATER_LIMIT):
            return None  # mostly rows deleted since: read them instead
        ranges: list[tuple[str, Any]] = [("", "")]
        if self.prefix:
            exact = exact_ranges(self.prefix)
            if not exact:
                return None
            ranges = list(exact)
        bounds = f"and {in_range('vector_index_labels')}" if self.prefix else ""
        ends, params = [], []
        for collection_id in self.collection_ids:
            for low, high in ranges:
                for direction in ("asc", "desc"):
                    # +label: SQLite must walk the index by id, not the labels
                    ends.append(
                        "(select label from vector_index_labels where index_id = ? "
                        f"and collection_id = ? {bounds} and +label >= 0 and +label < ? "
                        f"order by id {direction} limit 1)"
                    )
                    params += [record.id, collection_id]
                    params += [low, high] if self.prefix else []
                    params.append(ordered)
        clauses, clause_params = self._clauses(row="l")
        since = (  # the labels handed out since the full build
            "select json_group_array(label) from vector_index_labels l "
            f"where l.index_id = ? and l.label >= ? and {clauses}"
        )
        row = self._query(
            reader.connection(db),
            f"select json_array({', '.join(ends) or 'null'}), ({since})",
            [*params, record.id, ordered, *clause_params],
        )[0]
        found = json.loads(row[0])
        runs = [(first, last) for first, last in zip(found[::2], found[1::2]) if first is not None]
        if any(not isinstance(end, int) for run in runs for end in run):
            return None  # (a crafted label map)
        if sum(last - first + 1 for first, last in runs) > ordered or any(
            first > last for first, last in runs
        ):
            return None
        parts = [np.arange(first, last + 1, dtype=np.int64) for first, last in sorted(runs)]
        later = np.array(json.loads(row[1]), dtype=np.int64)  # above every run's
        return sorted_distinct(np.concatenate([*parts, later]))

    def more_than(self, db: Database, index_id: int, limit: int) -> bool:
        """Whether more than ``limit`` of the index's labels may match, told
        cheaply: the label map's index on (index_id, collection_id, id) is
        counted over the prefix's ranges, up to one past ``limit`` (0.1 ms
        for 2,001 at 100k rows), without the LIKE that refines them or the
        metadata filter, so rows they leave out may be counted. A prefix
        that starts with a wildcard has no ranges: many, then. A metadata
        filter whose keys are indexed counts its rows in llm's table
        instead, in that index's range (2,001 in 0.25 ms): few of them can
        then be told from many."""
        if self.where_indexed:  # the rows themselves, counted in the metadata's index
            sql, params = self._select("1")
            count = self._query(db, f"select count(*) from ({sql} limit ?)", [*params, limit + 1])
            return count[0][0] > limit
        ranges: list[tuple[str, Any]] = prefix_ranges(self.prefix) if self.prefix else [("", "")]
        if not ranges:
            return True
        marks = ",".join("?" * len(self.collection_ids)) or "null"
        bounds = f"and {in_range('l')}" if self.prefix else ""
        selects, params = [], []
        for low, high in ranges:
            selects.append(
                "select 1 from vector_index_labels l "
                f"where l.index_id = ? and l.collection_id in ({marks}) {bounds}"
            )
            params += [index_id, *self.collection_ids, *([low, high] if self.prefix else [])]
        sql = f"select count(*) from ({' union all '.join(selects)} limit ?)"
        return self._query(db, sql, [*params, limit + 1])[0][0] > limit

    def allows(self, db: Database, index_id: int, labels, hints: bool = False) -> Any:
        """Which of these labels (the index's, >= 0) the filter allows,
        exactly as matching_labels finds them, as bools: each looked up in
        the label map (and its row in llm's table for a metadata filter),
        through the plugin's reader, whose cache holds the label map (the
        labels are anywhere in it: 232 of them took 0.6 ms through a
        connection with SQLite's default cache)."""
        if self.where_indexed:
            try:
                return self._allows(db, index_id, labels, *self._indexed_checks())
            except VectorIndexError:  # its index dropped since? read the rows, then
                pass
        clauses, params = self._clauses(row="l")
        # (the row by its hint: 128 rows' metadata in 0.45 ms, 0.60 by the key)
        rows = f"cross join embeddings e on {row_of_label(hints)}" if self.where else ""
        return self._allows(db, index_id, labels, clauses, params, rows)

    def _indexed_checks(self) -> tuple[str, list[Any]]:
        """allows()'s conditions for a metadata filter whose keys are all
        indexed: the label's row found in the primary key's index, then
        looked up in each key's index by (collection_id, value, rowid), so
        that no page of llm's table is read."""
        clauses, params = self._clauses(row="l", where=False)
        for key, value in self.where.items():
            clauses += (
                f' and exists (select 1 from embeddings m indexed by "{index_name(key)}" '
                f"where m.collection_id = l.collection_id and {value_of(key, 'm')} = ? "
                f"and m.rowid = {ROWID_BY_KEY})"
            )
            params.append(sql_value(value))
        return clauses, params

    def _allows(self, db, index_id: int, labels, clauses: str, params: list, rows: str = ""):
        import numpy as np

        found = self._query(
            reader.connection(db),
            "select l.label from json_each(?) j cross join vector_index_labels l "
            f"on l.index_id = ? and l.label = j.value {rows} "
            f"where l.label >= 0 and {clauses}",  # negative: held back, as matching_labels
            [json.dumps(np.asarray(labels).tolist()), index_id, *params],
        )
        return np.isin(labels, np.array([row[0] for row in found], dtype=np.int64))

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

        return cls._label_array(
            db,
            "select l.label from json_each(?) j "
            "cross join embeddings e on e.rowid = j.value "
            "cross join vector_index_labels l on l.index_id = ? "
            "and l.collection_id = e.collection_id and l.id = e.id "
            "where l.label >= 0",  # negative: held back, not in the backend
            [json.dumps(rowids), index_id],
        )

    @classmethod
    def _label_array(cls, db: Database, sql: str, params: list[Any]):
        """The labels ``sql`` selects, as one JSON array made by SQLite: 10,000
        of them in 2.5 ms at 100k rows, where a Python tuple each took 4-8 ms."""
        import numpy as np

        (array,) = cls._query(db, f"select json_group_array(label) from ({sql})", params)[0]
        return np.array(json.loads(array), dtype=np.int64)

    @staticmethod
    def _query(db: Database | sqlite3.Connection, sql: str, params: list[Any]) -> list[tuple]:
        try:
            return db.execute(sql, params).fetchall()
        except sqlite3.OperationalError as error:  # e.g. metadata that is not JSON
            raise VectorIndexError(f"Filter failed: {error}") from None
