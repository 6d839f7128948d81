"""The table ``llm index related --save`` writes, and what the plugin keeps
about it: which tables it made, and each row's vector as the last save saw
it (its checksum), so that the next save can tell what changed.

A table is the plugin's only if a registration in ``vector_index_related``
names it and its columns are exactly ours: a name given by a user or read
from a shared database never reaches another table. Several indexes may
save into one table; each owns the rows carrying its name.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterable
from dataclasses import dataclass

from sqlite_utils import Database

from . import faults
from .errors import VectorIndexError

# (name, SQLite type) in order: what `llm index related --save` writes.
COLUMNS = (
    ("index_name", "TEXT"),
    ("collection", "TEXT"),
    ("id", "TEXT"),
    ("other_collection", "TEXT"),
    ("other_id", "TEXT"),
    ("score", "FLOAT"),
    ("rank", "INTEGER"),
)
# A row's neighbours are read by (collection, id): llm's key leads.
PRIMARY_KEY = ("collection", "id", "index_name", "rank")
TABLE_PATTERN = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")
# llm's tables, SQLite's, the FTS shadow tables sqlite-utils makes, and ours.
RESERVED = re.compile(r"(embeddings|collections|_llm_migrations|sqlite_.*|vector_index.*)", re.I)

Row = tuple[str, str, str, str, str, float, int]  # as COLUMNS
Key = tuple[int, str]  # (collection_id, id): a row of llm's table


@dataclass(frozen=True)
class Registration:
    "The last save of an index into a table."

    number: int  # neighbours kept per row
    rows: int  # rows of the table carrying the index's name after it
    version: int  # +1 on every save: a save that read an older one is refused


def check_table_name(table: object) -> str:
    "A name for a table of related rows: a plain identifier that is not llm's or ours."
    if not isinstance(table, str) or not TABLE_PATTERN.fullmatch(table):
        raise VectorIndexError(
            f"Table name {table!r} is not valid: use letters, digits and underscores "
            "(at most 64, not starting with a digit)"
        )
    if RESERVED.fullmatch(table):
        raise VectorIndexError(f"Table name {table!r} is taken by llm, SQLite or this plugin")
    return table


def registration(db: Database, index_id: int, table: str) -> Registration | None:
    row = db.execute(
        "select number, rows, version from vector_index_related "
        "where index_id = ? and table_name = ?",
        [index_id, table],
    ).fetchone()
    if row is None or not all(isinstance(value, int) for value in row):
        return None  # none, or a hand-edited one: a first save
    return Registration(*row)


def is_registered(db: Database, table: str) -> bool:
    return (
        db.execute(
            "select 1 from vector_index_related where table_name = ? collate nocase", [table]
        ).fetchone()
        is not None
    )


def check_writable(db: Database, table: str) -> bool:
    """May this table be written: True if it exists and is ours, False if it
    does not exist yet; an error for a table the plugin did not make, or
    whose columns were changed since."""
    check_table_name(table)
    kind = db.execute(
        "select type from sqlite_master where name = ? collate nocase", [table]
    ).fetchone()
    if kind is None:
        return False
    if kind[0] != "table":
        raise VectorIndexError(f"{table!r} is a {kind[0]}, not a table: choose another name")
    if not is_registered(db, table):
        raise VectorIndexError(
            f"Table {table!r} exists and was not made by llm index related: choose another name"
        )
    if not has_our_columns(db, table):
        raise VectorIndexError(
            f"Table {table!r} was changed since llm index related made it "
            "(its columns are not index_name, collection, id, other_collection, other_id, "
            "score, rank): drop it or choose another name"
        )
    return True


def has_our_columns(db: Database, table: str) -> bool:
    "Is it a table (not a view) with exactly our columns and key?"
    kind = db.execute("select type from sqlite_master where name = ?", [table]).fetchone()
    if kind is None or kind[0] != "table":
        return False
    info = db.execute(f"pragma table_info([{table}])").fetchall()
    columns = tuple((row[1], row[2].upper()) for row in info)
    key = tuple(row[1] for row in sorted(info, key=lambda row: row[5]) if row[5])
    return columns == COLUMNS and key == PRIMARY_KEY


def saved_lists(db: Database, table: str, index_name: str) -> dict[tuple[str, str], list]:
    """Each row's saved neighbours, best first: ``(collection, id) ->
    [(other_collection, other_id, score)]``."""
    lists: dict[tuple[str, str], list] = {}
    for collection, id, other_collection, other_id, score in db.execute(
        f"select collection, id, other_collection, other_id, score from [{table}] "
        "where index_name = ? order by collection, id, rank",
        [index_name],
    ):
        lists.setdefault((collection, id), []).append((other_collection, other_id, score))
    return lists


def snapshot(db: Database, index_id: int, table: str) -> dict[Key, int]:
    "Each row's vector checksum as the last save saw it."
    return {
        (collection_id, id): checksum
        for collection_id, id, checksum in db.execute(
            "select collection_id, id, checksum from vector_index_related_rows "
            "where index_id = ? and table_name = ?",
            [index_id, table],
        )
    }


def write(
    db: Database,
    *,
    index_id: int,
    index_name: str,
    table: str,
    number: int,
    replaced: Iterable[tuple[str, str]] | None,
    rows: list[Row],
    seen: dict[Key, int],
    version: int | None,
) -> int:
    """One save in one transaction: the index's rows for ``replaced`` keys
    (None: all of them) give way to ``rows``, and ``seen`` becomes the
    snapshot. Refused if another save committed since ``version`` was read.
    Returns the index's row count in the table now."""
    with db.atomic():
        exists = check_writable(db, table)
        now = registration(db, index_id, table)
        if (now.version if now else None) != version:
            raise VectorIndexError(
                f"Another save of index {index_name!r} into {table!r} finished meanwhile: "
                "run this one again"
            )
        if not exists:
            create_table(db, table)
        if replaced is None:
            db.execute(f"delete from [{table}] where index_name = ?", [index_name])
        else:
            db.conn.executemany(
                f"delete from [{table}] where collection = ? and id = ? and index_name = ?",
                ((collection, id, index_name) for collection, id in replaced),
            )
        db.conn.executemany(f"insert into [{table}] values (?, ?, ?, ?, ?, ?, ?)", rows)
        faults.point("related-writing")  # inside the open transaction
        db.execute(
            "delete from vector_index_related_rows where index_id = ? and table_name = ?",
            [index_id, table],
        )
        db.conn.executemany(
            "insert into vector_index_related_rows values (?, ?, ?, ?, ?)",
            ((index_id, table, *key, checksum) for key, checksum in seen.items()),
        )
        count = db.execute(
            f"select count(*) from [{table}] where index_name = ?", [index_name]
        ).fetchone()[0]
        db.execute(
            "insert or replace into vector_index_related "
            "(index_id, table_name, number, rows, version, saved) values (?, ?, ?, ?, ?, ?)",
            [index_id, table, number, count, (version or 0) + 1, time.time()],
        )
    return count


def create_table(db: Database, table: str) -> None:
    columns = ", ".join(f"[{name}] {kind}" for name, kind in COLUMNS)
    key = ", ".join(f"[{name}]" for name in PRIMARY_KEY)
    db.execute(f"create table [{table}] ({columns}, primary key ({key}))")


def forget(db: Database, index_id: int, index_name: str | None) -> None:
    """A dropped index's saved rows and registrations (inside the caller's
    transaction). Rows go only from a table that is still ours; the table
    itself stays (a view may read it)."""
    tables = [
        row[0]
        for row in db.execute(
            "select distinct table_name from vector_index_related where index_id = ?", [index_id]
        )
    ]
    for table in tables:
        if (
            isinstance(table, str)
            and TABLE_PATTERN.fullmatch(table)
            and not RESERVED.fullmatch(table)
            and has_our_columns(db, table)
        ):
            db.execute(f"delete from [{table}] where index_name = ?", [index_name])
    for ours in ("vector_index_related", "vector_index_related_rows"):
        db.execute(f"delete from {ours} where index_id = ?", [index_id])
