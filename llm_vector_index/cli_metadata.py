"""``llm index metadata``: SQLite indexes on llm's metadata for the keys an
index is filtered by (``--where KEY VALUE``; metadata_indexes.py)."""

from __future__ import annotations

import click

from .cli_options import database_option, open_database
from .index import Index


@click.command(name="metadata")
@click.argument("name")
@click.argument("keys", nargs=-1)
@click.option("--drop", is_flag=True, help="Stop indexing these keys (all of them, if none given)")
@database_option
def index_metadata(name, keys, drop, database):
    """
    Index metadata keys that queries filter by, or list them

    Without an index, a --where filter reads every row's metadata (about
    100 ms at 100k rows); with one, it reads an index range. Each key gets
    an SQLite index on llm's embeddings table, which SQLite keeps current
    and llm does not see. An index the plugin made is dropped when no index
    asks for its key any more (--drop, or llm index drop).

    \b
        llm index metadata docs-hnsw lang year
        llm index metadata docs-hnsw
        llm index metadata docs-hnsw year --drop
    """
    with Index(name, open_database(database)) as index:
        if drop:
            stopped = list(keys) or index.metadata_keys
            gone = index.drop_metadata(list(keys) or None)
            click.echo(
                f"{name} no longer indexes metadata {_listed(stopped)}"
                + (f" (dropped the SQLite index of {_listed(gone)})" if gone else ""),
                err=True,
            )
        elif keys:
            made = index.index_metadata(keys)
            click.echo(
                f"{name} indexes metadata {_listed(index.metadata_keys)}"
                + (f" (made the SQLite index of {_listed(made)})" if made else ""),
                err=True,
            )
        else:
            for key in index.metadata_keys:
                click.echo(key)


def _listed(keys) -> str:
    return ", ".join(keys) or "none"
