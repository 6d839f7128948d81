"""``llm index related``: each row's nearest other rows (llm #230), printed
or saved into a table of the same database."""

from __future__ import annotations

import json

import click

from .cli_options import database_option, open_database
from .cli_output import progress_bar
from .index import Index
from .related import MAX_NUMBER


@click.command(name="related")
@click.argument("name")
@click.option(
    "-n",
    "--number",
    type=click.IntRange(1, MAX_NUMBER),
    default=5,
    show_default=True,
    help="Nearest other rows to find for each row",
)
@click.option("--save", "table", help="Write them to this table, replacing the index's rows there")
@click.option("--full", is_flag=True, help="With --save: search every row again")
@database_option
def index_related(name, number, table, full, database):
    """
    Find each stored row's nearest other rows through an index

    Without --save, prints one JSON object a neighbour. With --save, writes
    (index_name, collection, id, other_collection, other_id, score, rank) rows
    to that table in the same database, replacing this index's rows there in
    one transaction: a later save searches only the rows whose neighbours
    can have changed since (it says why when it searches them all).

    \b
        llm index related docs-idx -n 5 --save related
        llm index related docs-idx -n 3 | head
    """
    if full and table is None:
        raise click.UsageError("--full needs --save")
    with Index(name, open_database(database)) as index:
        if table is None:
            for row in index.related(number):
                click.echo(json.dumps(row._asdict()))
            return
        with progress_bar(f"Relating {index.name}") as progress:
            report = index.save_related(table, number, full=full, progress=progress)
    if report.reason == "up to date":
        searched = "nothing changed since the last save"
    else:
        searched = f"{report.rows:,} rows searched" + (
            f" ({report.reason})" if report.full else ", the rest unchanged"
        )
    click.echo(f"Saved {report.saved:,} related rows to {table}: {searched}", err=True)
