"""``llm index migrate-chroma`` and ``llm index migrate-pgvector``: copies
of llm collections that other programs query, kept up to date by re-runs."""

from __future__ import annotations

from pathlib import Path

import click

from .cli_options import database_option, open_database
from .cli_output import progress_bar
from .migrate import migrate_to_chroma
from .migrate_pgvector import DEFAULT_BATCH, DEFAULT_SCHEMA, migrate_to_pgvector


@click.command(name="migrate-chroma")
@click.argument("collections", nargs=-1, required=True)
@click.option(
    "--path",
    type=click.Path(file_okay=False, path_type=Path),
    help="A local Chroma directory (PersistentClient)",
)
@click.option("--host", help="A Chroma server's host")
@click.option("--port", type=int, default=8000, show_default=True, help="The server's port")
@click.option("--ssl", is_flag=True, help="Connect to the server over https")
@click.option(
    "headers",
    "--header",
    type=(str, str),
    multiple=True,
    help="HTTP header for the server, e.g. --header Authorization 'Bearer T'",
)
@click.option("--chroma-collection", help="Chroma collection name (default: from the collections)")
@click.option("--batch-size", type=int, help="Records per request (at most the server's limit)")
@click.option(
    "--sync-deletes", is_flag=True, help="Also delete Chroma records whose llm row is gone"
)
@database_option
def index_migrate_chroma(
    collections,
    path,
    host,
    port,
    ssl,
    headers,
    chroma_collection,
    batch_size,
    sync_deletes,
    database,
):
    """
    Copy llm collections into Chroma, or bring an earlier copy up to date

    Ids, vectors, content (as documents) and metadata go over; a re-run sends
    only what changed.

    \b
        llm index migrate-chroma docs --path ./chroma
        llm index migrate-chroma docs notes --host 127.0.0.1 --port 8000 \\
            --chroma-collection all-notes --sync-deletes
    """
    if bool(path) == bool(host):
        raise click.UsageError("Give either --path or --host")
    db = open_database(database)
    with progress_bar("Migrating") as progress:
        report = migrate_to_chroma(
            db,
            list(collections),
            path=path,
            host=host or "",
            port=port,
            ssl=ssl,
            headers=dict(headers),
            chroma_collection=chroma_collection,
            batch_size=batch_size,
            sync_deletes=sync_deletes,
            progress=progress,
        )
    held = (
        f"Held back {report.held_back} rows with NaN, infinite, all-zero or odd-width vectors\n"
        if report.held_back
        else ""
    )
    click.echo(
        f"Migrated to Chroma collection {report.chroma_collection}: {report.sent} sent, "
        f"{report.deleted} deleted, {report.seconds:.2f}s\n{held}"
        f"Verified: {report.llm_rows} rows in llm, {report.chroma_rows} in Chroma, "
        f"{report.sampled} sampled records identical",
        err=True,
    )


@click.command(name="migrate-pgvector")
@click.argument("collections", nargs=-1, required=True)
@click.option(
    "--dsn-env",
    required=True,
    metavar="VAR",
    help="Environment variable holding the Postgres connection string",
)
@click.option("--schema", default=DEFAULT_SCHEMA, show_default=True, help="Postgres schema")
@click.option("--table", help="Table name (default: from the collections)")
@click.option(
    "--batch-size",
    type=int,
    default=DEFAULT_BATCH,
    show_default=True,
    help="Rows per transaction",
)
@click.option("--sync-deletes", is_flag=True, help="Also delete rows whose llm row is gone")
@database_option
def index_migrate_pgvector(collections, dsn_env, schema, table, batch_size, sync_deletes, database):
    """
    Copy llm collections into a Postgres table with pgvector, or bring it up to date

    Ids, vectors, content, metadata (as jsonb) and updated go into a table any
    Postgres client can query with SQL, with an HNSW index. A re-run sends
    only what changed; an interrupted run continues where it stopped. The
    connection string is read from the environment variable you name.

    \b
        export PGVECTOR_DSN=postgresql://me@db.example.com/app
        llm index migrate-pgvector docs --dsn-env PGVECTOR_DSN
        llm index migrate-pgvector docs notes --dsn-env PGVECTOR_DSN \\
            --schema search --table all_notes --sync-deletes
    """
    db = open_database(database)
    with progress_bar("Migrating") as progress:
        report = migrate_to_pgvector(
            db,
            list(collections),
            dsn_env=dsn_env,
            schema=schema,
            table=table,
            batch_size=batch_size,
            sync_deletes=sync_deletes,
            progress=progress,
        )
    lines = [
        f"Migrated to Postgres table {report.table}: {report.sent} sent, {report.deleted} "
        f"deleted, {report.seconds:.2f}s"
        + (f" (HNSW index {report.index_seconds:.2f}s)" if report.index_seconds else "")
    ]
    if report.resumed:
        lines.append(f"Continued an interrupted run of {', '.join(report.resumed)}")
    for reason, count in sorted(report.held_reasons.items()):
        lines.append(f"Held back {count} rows with {reason}")
    lines.append(
        f"Verified: {report.llm_rows} rows in llm, {report.postgres_rows} in Postgres, "
        f"{report.sampled} sampled rows identical"
    )
    click.echo("\n".join(lines), err=True)
