"""The pgvector backend's tables on a server: their names, and the registry
that lists them with the version of each one's last save (only a table
listed there is ever dropped). Every identifier is quoted by psycopg's
``sql`` module, never formatted in."""

from __future__ import annotations

import uuid

from .. import pg_client

REGISTRY = "llm_vector_index_tables"


def table_name(index_folder: str) -> str:
    "A new table's name: the index's name, made an identifier, and 12 random hex digits."
    stem = "".join(c if c.isalnum() else "_" for c in index_folder.lower())
    stem = "".join(c for c in stem if c.isascii())[:40]
    return f"llm_{stem}_{uuid.uuid4().hex[:12]}"


def _registry(schema: str):
    sql = pg_client.psycopg().sql
    return sql.Identifier(schema), sql.Identifier(REGISTRY)


def ensure(connection, schema: str) -> None:
    "The schema and the registry of our tables, made once per server (its own transaction)."
    sql = pg_client.psycopg().sql
    with connection.transaction():
        # Two first builds at once must not both create the schema.
        connection.execute("select pg_advisory_xact_lock(hashtext('llm_vector_index'))")
        connection.execute(sql.SQL("create schema if not exists {}").format(sql.Identifier(schema)))
        connection.execute(
            sql.SQL(
                "create table if not exists {}.{} (name text primary key, "
                "version text not null, rows bigint not null, dimensions int not null, "
                "half boolean not null, kind text not null, "
                "created timestamptz not null default now(), "
                "saved timestamptz not null default now())"
            ).format(*_registry(schema))
        )
    connection.commit()


def row(connection, schema: str, table: str | None):
    "(version, rows, dimensions, half) the registry lists for ``table``, or None."
    sql = pg_client.psycopg().sql
    try:
        return connection.execute(
            sql.SQL("select version, rows, dimensions, half from {}.{} where name = %s").format(
                *_registry(schema)
            ),
            [table],
        ).fetchone()
    except pg_client.psycopg().errors.UndefinedTable:
        return None  # no registry in this schema: nothing of ours is here


def record_save(
    connection,
    schema: str,
    table: str,
    version: str,
    rows: int,
    dimensions: int,
    half: bool,
    kind: str,
) -> None:
    "List ``table`` (or list it again) with the version and row count of this save."
    sql = pg_client.psycopg().sql
    connection.execute(
        sql.SQL(
            "insert into {}.{} (name, version, rows, dimensions, half, kind) "
            "values (%s, %s, %s, %s, %s, %s) on conflict (name) do update set "
            "version = excluded.version, rows = excluded.rows, saved = now()"
        ).format(*_registry(schema)),
        [table, version, rows, dimensions, half, kind],
    )


def forget(connection, schema: str, table: str) -> None:
    "Take ``table`` off the registry (once it is dropped)."
    sql = pg_client.psycopg().sql
    connection.execute(
        sql.SQL("delete from {}.{} where name = %s").format(*_registry(schema)), [table]
    )
