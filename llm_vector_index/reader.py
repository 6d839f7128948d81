"""A query's rows, read through a connection of the plugin's own.

A query reads its candidates' rows from llm's table at random places: at
100k rows the table is 200 MB, far past the 2 MB page cache SQLite gives a
connection, so every row was a read from the operating system (a system
call per page) plus the label map's pages, which did not stay cached
either. A connection that maps the file (``mmap_size``) and keeps the label
map in a larger cache reads them faster: the plugin's share of a query at
100k went 0.385 -> 0.311 ms (auto, 20 candidates), 0.335 -> 0.295 ms
(hnswlib, 10), side by side (docs/scale.md). The user's
connection is theirs: its settings are left alone, so the plugin opens its
own, one per thread, on the same file, only to read.

It sees what the user's connection sees: the last commit, read in
autocommit as theirs is. While the user's connection is inside a
transaction (its writes not yet committed, which another connection cannot
see), or when the database is not a file, rows are read through the user's
connection as before.
"""

from __future__ import annotations

import sqlite3
import threading
from urllib.parse import quote

from sqlite_utils import Database

ATTRIBUTE = "_llm_vector_index_reader"
# SQLite caps this at its build's largest map (2 GB in Python's); the rest of
# a larger file is read as before.
MMAP_BYTES = 1 << 40
# The label map at 100k rows is 5 MB with its index, the table's interior
# pages a few more; pages past that come from the map.
CACHE_KIB = 16_000


class _Readers:
    "The read connections of one ``Database``: one per thread, opened at first use."

    def __init__(self, path: str | None, busy_ms: int) -> None:
        self.path = path
        self.busy_ms = busy_ms
        self.local = threading.local()

    def get(self) -> sqlite3.Connection | None:
        if self.path is None:
            return None
        connection = getattr(self.local, "connection", None)
        if connection is None and not getattr(self.local, "failed", False):
            try:
                connection = _open(self.path, self.busy_ms)
            except sqlite3.Error:
                self.local.failed = True  # read as before, through the user's connection
                return None
            self.local.connection = connection
        return connection


def connection(db: Database) -> sqlite3.Connection:
    "The connection to read a query's rows through now (see the module's docstring)."
    user = db.conn
    if user.in_transaction:
        return user
    readers = getattr(db, ATTRIBUTE, None)
    if readers is None:
        readers = _Readers(_file_of(user), user.execute("pragma busy_timeout").fetchone()[0])
        setattr(db, ATTRIBUTE, readers)
    return readers.get() or user


def _file_of(user: sqlite3.Connection) -> str | None:
    "The main database's file, or None (in memory, a temporary database)."
    for _, schema, path in user.execute("pragma database_list").fetchall():
        if schema == "main":
            return path or None
    return None


def _open(path: str, busy_ms: int) -> sqlite3.Connection:
    # mode=rw: never make a file that is no longer there (read-only files are
    # still opened, for reading); the name quoted, so it is only a name.
    opened = sqlite3.connect(f"file:{quote(path)}?mode=rw", timeout=busy_ms / 1000, uri=True)
    try:
        opened.execute("pragma query_only = 1")  # it only ever reads
        opened.execute(f"pragma mmap_size = {MMAP_BYTES}")
        opened.execute(f"pragma cache_size = -{CACHE_KIB}")
    except sqlite3.Error:
        opened.close()
        raise
    return opened
