"""Datasette plugin entry point: the SQL functions of sql.py on every
connection, so ``datasette embeddings.db`` can query vector indexes.
Loaded by Datasette only (``pip install datasette`` alongside the plugin)."""

from datasette import hookimpl


@hookimpl
def prepare_connection(conn):
    from .sql import register

    register(conn)
