"""SQLite indexes on llm's metadata, for the keys an index is filtered by.

llm keeps a row's metadata as JSON text beside its vector, with no index on
it, so a ``where`` filter reads the metadata of every row in the index's
collections: about 100 ms at 100k rows, whatever the filter allows. An index
may ask for an expression index on llm's table for each key it is filtered
by, on (collection_id, json_extract(metadata, '$."KEY"')). SQLite keeps it
current on every write, so nothing about it can go stale, and llm never
sees it. A filter then finds its rows as one range of it, and checks a row
by one lookup in it rather than by reading the row's JSON (filters.py).

Which keys an index asked for is kept in ``vector_index_metadata_keys``;
which SQLite indexes the plugin made for them, in
``vector_index_metadata_made``. When no index asks for a key any more, its
SQLite index is dropped only if the plugin made it and it is still exactly
what the plugin made: an index a user made under that name stays.
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Iterable

from sqlite_utils import Database

from .errors import VectorIndexError

KEY_PATTERN = re.compile(r"[A-Za-z0-9_\-]+(\.[A-Za-z0-9_\-]+)*")

KEYS = "vector_index_metadata_keys"
MADE = "vector_index_metadata_made"
PREFIX = "idx_embeddings_metadata_"


def json_path(key: str) -> str:
    '``a.b`` -> ``$."a"."b"``: quoted, so keys with \'-\' work as themselves.'
    if not isinstance(key, str) or not KEY_PATTERN.fullmatch(key):  # "$" lets "a\n" pass
        raise VectorIndexError(
            f"Invalid metadata key {key!r}: use letters, digits, '_' and '-', "
            "with '.' between nested keys"
        )
    return "$" + "".join(f'."{part}"' for part in key.split("."))


def value_of(key: str, row: str | None = None) -> str:
    """SQL: the value of ``key`` in the metadata (of ``row``), as a filter
    compares it and as its index holds it. The path is a literal, as SQLite
    uses an index on an expression only where a query writes that very
    expression; a valid key holds no quote of either kind."""
    column = f"{row}.metadata" if row else "metadata"
    return f"json_extract({column}, '{json_path(key)}')"


def index_name(key: str) -> str:
    "The SQLite index for ``key`` (a valid key: json_path checks it)."
    json_path(key)
    return PREFIX + key


def creation_sql(key: str) -> str:
    "The statement that makes ``key``'s index, as sqlite_master keeps it."
    return f'CREATE INDEX "{index_name(key)}" ON embeddings (collection_id, {value_of(key)})'


def is_valid_key(key: object) -> bool:
    return isinstance(key, str) and KEY_PATTERN.fullmatch(key) is not None


def keys_of(db: Database, index_id: int) -> list[str]:
    """The keys this index asked to be indexed, sorted. A key no filter
    could name (a crafted catalog) is left out: no SQL is made from it."""
    if not db.table(KEYS).exists():
        return []
    try:
        rows = db.execute(
            f"select key from {KEYS} where index_id = ? order by key", [index_id]
        ).fetchall()
    except sqlite3.DatabaseError:  # a table of that name made otherwise: no keys
        return []
    return [key for (key,) in rows if is_valid_key(key)]


def usable(db: Database, keys: Iterable[str]) -> frozenset[str]:
    """Which of these keys have their SQLite index in place, exactly as the
    plugin makes it (a filter names it in ``indexed by``)."""
    keys = [key for key in keys if is_valid_key(key)]
    if not keys:
        return frozenset()
    marks = ",".join("?" * len(keys))
    found = dict(
        db.execute(
            "select name, sql from sqlite_master where type = 'index' "
            f"and tbl_name = 'embeddings' and name in ({marks})",
            [index_name(key) for key in keys],
        ).fetchall()
    )
    return frozenset(key for key in keys if found.get(index_name(key)) == creation_sql(key))


def check_keys(db: Database, keys: Iterable[str]) -> list[str]:
    """The keys, distinct, each valid and free to be indexed: refused (one
    line, before anything is written) if llm's table has an index of its
    name that the plugin would not have made."""
    keys = list(dict.fromkeys(keys))
    for key in keys:
        name = index_name(key)  # raises for a key no filter could name
        row = db.execute(
            "select sql from sqlite_master where type = 'index' and name = ?", [name]
        ).fetchone()
        if row is not None and row[0] != creation_sql(key):
            raise VectorIndexError(
                f"An index named {name} already exists in this database, "
                "and is not the one the plugin makes: rename or drop it first"
            )
    if keys and not usable(db, keys).issuperset(keys):
        # SQLite cannot make the index if a row's metadata is not JSON: said
        # now (reading every row, as making it does), before anything is written
        bad = db.execute(
            "select collection_id, id from embeddings "
            "where metadata is not null and not json_valid(metadata) limit 1"
        ).fetchone()
        if bad is not None:
            raise VectorIndexError(
                f"Cannot index metadata key {keys[0]!r}: row {bad[1]!r} of collection "
                f"{bad[0]} has metadata that is not JSON (llm writes JSON)"
            )
    return keys


def add(db: Database, index_id: int, keys: Iterable[str], checked: bool = False) -> list[str]:
    """Index these keys for this index (checked first, unless the caller
    just did: see check_keys, which reads every row), making each SQLite
    index that is not there yet (about 0.2 s a key at 100k rows). Returns
    the keys whose SQLite index this made."""
    keys = list(keys) if checked else check_keys(db, keys)
    made = []
    with db.atomic():
        for key in keys:
            db.execute(
                f"insert or ignore into {KEYS} (index_id, key) values (?, ?)", [index_id, key]
            )
            if key not in usable(db, [key]):
                try:
                    db.execute(creation_sql(key))
                except sqlite3.OperationalError as error:  # e.g. metadata that is not JSON
                    raise VectorIndexError(
                        f"Cannot index metadata key {key!r}: {error} "
                        "(every row's metadata must be JSON, as llm writes it)"
                    ) from None
                db.execute(f"insert or replace into {MADE} (key) values (?)", [key])
                made.append(key)
    return made


def drop(db: Database, index_id: int, name: str, keys: Iterable[str] | None = None) -> list[str]:
    """This index no longer asks for these keys (None: any of them), each
    checked first; see remove. Returns the keys whose SQLite index went."""
    have = keys_of(db, index_id)
    keys = have if keys is None else list(dict.fromkeys(keys))
    for key in keys:
        if key not in have:
            raise VectorIndexError(
                f"Index {name!r} has no metadata index on {key!r} "
                f"(it has: {', '.join(have) or 'none'})"
            )
    with db.atomic():
        return remove(db, index_id, keys)


def remove(db: Database, index_id: int, keys: Iterable[str] | None = None) -> list[str]:
    """This index no longer asks for these keys (None: any). Each SQLite
    index no index asks for any more is dropped, if the plugin made it.
    Returns the keys whose SQLite index this dropped. Runs inside the
    caller's transaction, if there is one."""
    if not db.table(KEYS).exists():
        return []
    asked = keys_of(db, index_id) if keys is None else list(keys)
    try:
        if keys is None:
            db.execute(f"delete from {KEYS} where index_id = ?", [index_id])
        else:
            for key in asked:
                db.execute(f"delete from {KEYS} where index_id = ? and key = ?", [index_id, key])
    except sqlite3.DatabaseError:  # tables of these names made otherwise: touch no index
        return []
    dropped: list[str] = []
    for key in asked:
        if (
            not is_valid_key(key)
            or db.execute(f"select 1 from {KEYS} where key = ?", [key]).fetchone()
        ):
            continue  # another index still asks for it
        try:
            ours = db.execute(f"select 1 from {MADE} where key = ?", [key]).fetchone()
        except sqlite3.DatabaseError:  # made otherwise: it names no index as the plugin's
            return dropped
        if ours and key in usable(db, [key]):
            db.execute(f'drop index "{index_name(key)}"')
            dropped.append(key)
        db.execute(f"delete from {MADE} where key = ?", [key])
    return dropped
