"""Postgres connections for the pgvector backend: where the connection
string comes from, one-line errors, and pgvector's binary formats.
``import psycopg`` happens only in here, when a pgvector index is used.

The connection string is read from an environment variable the user names
(``-o dsn_env VAR``), never stored: a database is a file people share, and
approvals.py decides whether a catalog row may name that variable at all.
"""

from __future__ import annotations

import math
import os
import re
import struct
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np

from .base import require
from .errors import BackendUnavailable, InvalidOptions, VectorIndexError, first_line

# Names we create or accept for a schema: unquoted Postgres identifiers, so
# that what a catalog row names is never more than a name.
SCHEMA_RULE = "1-63 characters of [a-z0-9_], starting with a letter or _"
_SCHEMA = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
# The tables this plugin creates: a name made from the index's and 12 random
# hex digits (tables.new_table_name); a name read back from an index's files
# must have this shape before it is used.
_TABLE = re.compile(r"^llm_[a-z0-9_]{0,40}_[0-9a-f]{12}$")
# An environment variable's name: what a catalog row may name, never more.
_VARIABLE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")


# pgvector's HNSW and IVFFlat index up to 2,000 dimensions of vector (4,000 of halfvec).
MAX_HNSW_DIMENSIONS = 2000


def psycopg():
    return require("psycopg", "pgvector")


def is_schema_name(name: str) -> bool:
    return bool(_SCHEMA.match(name))


def is_table_name(name: object) -> bool:
    return isinstance(name, str) and bool(_TABLE.match(name))


def is_variable_name(variable: str) -> bool:
    return bool(_VARIABLE.match(variable))


def check_variable(variable: str) -> None:
    if not is_variable_name(variable):
        raise InvalidOptions(
            f"dsn_env must name an environment variable, got {variable!r}: put the "
            "connection string in one, e.g. -o dsn_env PGVECTOR_DSN"
        )


def dsn_from(variable: str) -> str:
    """The connection string in the environment variable an index names (a
    postgresql:// URL or libpq key=value pairs; the password may come from
    ~/.pgpass or PGPASSWORD, as for psql)."""
    if not variable:
        raise InvalidOptions(
            "The pgvector backend needs the name of an environment variable holding "
            "the Postgres connection string: -o dsn_env PGVECTOR_DSN"
        )
    check_variable(variable)
    dsn = os.environ.get(variable)
    if not dsn:
        raise InvalidOptions(
            f"Environment variable {variable} (dsn_env) is not set: export the Postgres "
            "connection string in it, e.g. postgresql://user@host:5432/dbname"
        )
    return dsn


def where(variable: str) -> str:
    "How errors name a server without printing its connection string (it may hold a password)."
    return f"the Postgres server in ${variable}"


@contextmanager
def server_errors(variable: str) -> Iterator[None]:
    """Anything psycopg raises (refused, bad password, the server died, a
    statement failed) as one ``BackendUnavailable`` line naming the variable,
    never the connection string."""
    try:
        yield
    except VectorIndexError:
        raise
    except Exception as error:  # psycopg's many errors: one line, no traceback
        module = psycopg()
        if not isinstance(error, module.Error):
            raise
        raise BackendUnavailable(f"{where(variable)} failed: {_message(error)}") from None


def _message(error: BaseException) -> str:
    text = first_line(error)
    # libpq's text runs over lines ("connection to server at ..., port N
    # failed: FATAL:  password authentication failed ..."): kept whole, where
    # and why, in one line with its runs of spaces closed up.
    return re.sub(r"\s+", " ", text).strip()


def connect(variable: str, *, read_only: bool):
    """A connection to the server in ``$variable``: autocommit and read-only
    for queries, one open transaction at a time for builds."""
    module = psycopg()
    dsn = dsn_from(variable)
    with server_errors(variable):
        connection = module.connect(
            dsn,
            autocommit=read_only,
            prepare_threshold=0,  # the same few statements all the time: prepare at once
            connect_timeout=10,
            application_name="llm-vector-index",
        )
        if read_only:
            connection.execute("set default_transaction_read_only = on")
        return connection


def size_build_memory(connection, rows: int, vector_bytes: int, m: int) -> None:
    """Give this transaction's index build the memory its graph needs (up to
    2 GB): a graph built in memory is built many times faster, and the
    server's default (64 MB) holds about 30k rows of 384 dimensions."""
    width = vector_bytes + 16 * m + 64
    wanted = min(2048, max(64, math.ceil(rows * width * 1.3 / 2**20)))
    connection.execute("select set_config('maintenance_work_mem', %s, true)", [f"{wanted}MB"])


def vector_types(connection) -> dict[str, int]:
    "The oids of pgvector's vector and halfvec types in this database."
    rows = connection.execute(
        "select typname, oid from pg_type where typname in ('vector', 'halfvec') "
        "and typnamespace = (select extnamespace from pg_extension where extname = 'vector')"
    ).fetchall()
    return dict(rows)


def ensure_extension(connection, variable: str) -> dict[str, int]:
    """pgvector's types, creating the extension where it is installed on the
    server but not yet enabled in this database (if the role may)."""
    types = vector_types(connection)
    if len(types) == 2:
        return types
    module = psycopg()
    try:
        with connection.transaction():
            connection.execute("create extension if not exists vector")
    except module.Error as error:
        raise BackendUnavailable(
            f"{where(variable)} has no pgvector extension in this database and it could "
            f"not be enabled ({_message(error)}): run CREATE EXTENSION vector; as a "
            "role that may"
        ) from None
    types = vector_types(connection)
    if len(types) != 2:
        raise BackendUnavailable(f"{where(variable)} has a pgvector without halfvec: need 0.7+")
    return types


# -- pgvector's binary formats ---------------------------------------------
#
# vector: int16 dimensions, int16 unused, then float32 big-endian values;
# halfvec: the same header, then float16. Sent as bytes with the type's oid,
# so that neither side formats or parses text.


def encode(vector: np.ndarray, half: bool) -> bytes:
    values = np.asarray(vector, dtype=">f2" if half else ">f4").reshape(-1)
    return struct.pack(">HH", len(values), 0) + values.tobytes()


class Vector(bytes):
    "A vector in pgvector's binary format, sent as a ``vector`` parameter."


class Halfvec(bytes):
    "A vector in pgvector's binary halfvec format, sent as a ``halfvec`` parameter."


def register_dumpers(connection, types: dict[str, int]) -> None:
    "Let ``Vector`` and ``Halfvec`` values be sent as binary parameters on this connection."
    module = psycopg()
    for value_class, type_name in ((Vector, "vector"), (Halfvec, "halfvec")):
        dumper = type(
            f"{type_name.title()}Dumper",
            (module.adapt.Dumper,),
            {
                "format": module.pq.Format.BINARY,
                "oid": types[type_name],
                "dump": lambda self, obj: bytes(obj),
            },
        )
        connection.adapters.register_dumper(value_class, dumper)


def parameter(vector: np.ndarray, half: bool) -> bytes:
    "One query vector as a parameter of the column's type."
    return (Halfvec if half else Vector)(encode(vector, half))


COPY_HEADER = b"PGCOPY\n\xff\r\n\x00" + struct.pack(">ii", 0, 0)
COPY_TRAILER = struct.pack(">h", -1)


def copy_rows(labels: np.ndarray, vectors: np.ndarray, half: bool) -> bytes:
    """Rows ``(label bigint, embedding vector|halfvec)`` in COPY's binary
    format, made by numpy in one pass (no per-row Python)."""
    count, dimensions = vectors.shape
    width = 2 if half else 4
    layout = np.dtype(
        [
            ("fields", ">i2"),
            ("label_size", ">i4"),
            ("label", ">i8"),
            ("vector_size", ">i4"),
            ("dimensions", ">i2"),
            ("unused", ">i2"),
            ("values", (">f2" if half else ">f4", (dimensions,))),
        ]
    )
    rows = np.empty(count, dtype=layout)
    rows["fields"] = 2
    rows["label_size"] = 8
    rows["label"] = labels
    rows["vector_size"] = 4 + width * dimensions
    rows["dimensions"] = dimensions
    rows["unused"] = 0
    rows["values"] = vectors
    return rows.tobytes()
