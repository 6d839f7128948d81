"""``llm index ...``: thin commands over ``llm_vector_index.Index``.

Commands parse arguments and print; the library does the work. Every
``VectorIndexError`` becomes one line on stderr and exit code 1.
"""

from __future__ import annotations

import json
import sys

import click
from llm.embeddings import Collection

from . import catalog
from .cli_evaluate import index_evaluate
from .cli_metadata import index_metadata
from .cli_migrate import index_migrate_chroma, index_migrate_pgvector
from .cli_options import IndexGroup, database_option, fusion_options, open_database
from .cli_output import (
    backends_listing,
    build_line,
    describe,
    describe_backend,
    describe_server,
    echo_entries,
    progress_bar,
)
from .cli_related import index_related
from .errors import BackendUnavailable
from .filters import where_option
from .index import DEFAULT_BACKEND, Index
from .keywords import DEFAULT_TOKENIZER, TOKENIZERS
from .registry import get_backends


@click.group(cls=IndexGroup, default="list", default_if_no_args=True)
def index_group():
    "Manage vector indexes for embedding collections"


@index_group.command(name="create")
@click.argument("name")
@click.argument("collections", nargs=-1, required=True)
@click.option(
    "-b",
    "--backend",
    default=DEFAULT_BACKEND,
    show_default=True,
    help="Backend to use: see 'llm index backends'",
)
@click.option(
    "options",
    "-o",
    "--option",
    type=(str, str),
    multiple=True,
    help="Backend option, e.g. -o factory HNSW32",
)
@click.option("--build", "build_now", is_flag=True, help="Build the index right away")
@click.option(
    "--default",
    "make_default",
    is_flag=True,
    help="Make it the default index of its collections (used by llm similar)",
)
@click.option(
    "--refresh",
    type=click.Choice(["auto", "manual"]),
    default="auto",
    show_default=True,
    help="auto: a query first brings a stale index up to date; manual: it warns",
)
@click.option(
    "--keywords",
    "with_keywords",
    is_flag=True,
    help="Keep a keyword index of the stored text too: queries then fuse both (hybrid)",
)
@click.option(
    "metadata_keys",
    "--index-metadata",
    multiple=True,
    metavar="KEY",
    help="Index this metadata key for --where filters (see llm index metadata)",
)
@database_option
def index_create(
    name,
    collections,
    backend,
    options,
    build_now,
    make_default,
    refresh,
    with_keywords,
    metadata_keys,
    database,
):
    """
    Create a vector index over one or more collections

    The collections must share an embedding model.

    \b
        llm index create docs-hnsw docs
        llm index create all-notes notes-2024 notes-2025 -b exact
        llm index create docs-ivf docs -b faiss -o factory IVF1024,Flat -o nprobe 64
        llm index create docs-hybrid docs --keywords
    """
    db = open_database(database)
    index = Index.create(
        name,
        collections,
        db,
        backend=backend,
        options=dict(options),
        refresh=refresh,
        default=make_default,
        keywords=with_keywords,
        metadata_keys=metadata_keys,
    )
    click.echo(
        f"Created index {name} ({backend}) over {', '.join(index.collections)}",
        err=True,
    )
    if build_now:
        _build(index, full=False)


@index_group.command(name="build")
@click.argument("name")
@click.option("--full", is_flag=True, help="Rebuild from scratch")
@click.option(
    "--verify",
    is_flag=True,
    help="Also compare every stored vector with what was indexed (finds rows "
    "changed by a plain SQL UPDATE; reads every vector, embeds nothing)",
)
@click.option(
    "--target-recall",
    type=float,
    help="Tune the search setting to the cheapest that gives this recall@10 "
    "(default 0.95; measured on probes like new text); kept and re-tuned as the "
    "index grows",
)
@database_option
def index_build(name, full, verify, target_recall, database):
    """
    Bring an index up to date with its collections

    Only rows added or changed since the last build are read; deleted rows
    are removed. --verify also finds rows whose vector was changed in place
    by a plain SQL UPDATE, which keeps their timestamp and rowid. An
    approximate index is tuned to recall@10 0.95 unless its search setting
    was given at create; --target-recall names another target (see llm index
    show for what tuning chose).

    \b
        llm index build docs-hnsw
        llm index build docs-hnsw --verify
        llm index build docs-hnsw --full
        llm index build docs-hnsw --target-recall 0.95
    """
    with Index(name, open_database(database)) as index:
        _build(index, full, verify, target_recall)


def _build(
    index: Index, full: bool, verify: bool = False, target_recall: float | None = None
) -> None:
    with progress_bar(f"Indexing {index.name}") as progress:
        report = index.build(
            full=full, progress=progress, verify=verify, target_recall=target_recall
        )
    click.echo(build_line(index.name, report), err=True)
    if report.tuning is not None:
        click.echo(f"Tuned {index.name}: {report.tuning.summary()}", err=True)


@index_group.command(name="similar")
@click.argument("name")
@click.argument("id", required=False)
@click.option(
    "-i",
    "--input",
    type=click.Path(exists=True, readable=True, allow_dash=True),
    help="File to embed for comparison",
)
@click.option("-c", "--content", help="Content to embed for comparison")
@click.option("--binary", is_flag=True, help="Treat input as binary data")
@click.option("-n", "--number", type=int, default=10, help="Number of results to return")
@click.option("-p", "--plain", is_flag=True, help="Output in plain text format")
@click.option("--prefix", default="", help="Just IDs with this prefix")
@click.option(
    "wheres",
    "-w",
    "--where",
    type=(str, str),
    multiple=True,
    help="Just rows whose metadata KEY equals VALUE (a.b for nested keys)",
)
@fusion_options
@database_option
def index_similar(
    name,
    id,
    input,
    content,
    binary,
    number,
    plain,
    prefix,
    wheres,
    mode,
    fusion,
    weight,
    depth,
    database,
):
    """
    Return the top N most similar rows, like 'llm similar', from an index

    An index with keywords (create --keywords) answers -c in hybrid mode:
    both rankings fused. --mode keyword embeds nothing.

    \b
        llm index similar docs-hnsw -c "I like cats"
        llm index similar docs-hnsw 1234 -n 5 --plain
        llm index similar docs-hybrid -c check_output --mode keyword
    """
    if not id and not content and not input:
        raise click.ClickException("Must provide content or an ID for the comparison")
    where = where_option(wheres)
    settings = {
        key: value
        for key, value in [("fusion", fusion), ("weight", weight), ("depth", depth)]
        if value is not None
    }
    with Index(name, open_database(database)) as index:
        if id:
            if mode not in (None, "vector") or settings:
                raise click.ClickException(
                    "A query by ID is a vector query: --mode and fusion settings need -c or -i"
                )
            results = index.similar_by_id(id, number, prefix=prefix, where=where)
        else:
            if not content:
                if not input or input == "-":
                    content = (sys.stdin.buffer if binary else sys.stdin).read()
                else:
                    with open(input, "rb" if binary else "r") as f:
                        content = f.read()
            if not content:
                raise click.ClickException("No content provided")
            results = index.similar(
                content, number, prefix=prefix, where=where, mode=mode, **settings
            )
    echo_entries(results, plain)


@index_group.command(name="list")
@click.option("json_", "--json", is_flag=True, help="Output as JSON")
@database_option
def index_list(json_, database):
    "List vector indexes"
    db = open_database(database)
    records = catalog.list_records(db)
    if json_:
        click.echo(
            json.dumps(
                [
                    (
                        {"name": record.name, "damaged": record.problem}
                        if isinstance(record, catalog.DamagedRecord)
                        else describe(record, db)
                    )
                    for record in records
                ],
                indent=2,
            )
        )
        return
    for record in records:
        if isinstance(record, catalog.DamagedRecord):
            click.echo(f"{record.name}: DAMAGED: {record.problem}")
            continue
        state = f"{record.rows} rows" if record.built else "not built"
        keywords = " + keywords" if record.keywords else ""
        click.echo(
            f"{record.name}: {record.backend}{keywords} over " f"{', '.join(record.collections)}"
        )
        defaults = catalog.defaults_of(db, record.id)
        default = f", default for {', '.join(defaults)}" if defaults else ""
        click.echo(f"  {state}, {record.model}{default}")
        server = describe_server(record, db)
        if server:
            approved = (
                "approved"
                if server["approved"]
                else (f"NOT approved here: see llm index approve {record.name}")
            )
            click.echo(f"  server {server['server']}, {approved}")


@index_group.command(name="show")
@click.argument("name")
@database_option
def index_show(name, database):
    "Show an index's settings, size and where its files are"
    db = open_database(database)
    with Index(name, db) as index:
        details = describe(index.record, db)
        backend = index.backend() if details.get("approved", True) else None
        if backend is not None:
            details.update(backend.describe())
        details["disk_bytes"] = (
            sum(path.stat().st_size for path in index.path.rglob("*") if path.is_file())
            if index.path.exists()
            else 0
        )
    click.echo(json.dumps(details, indent=2))


@index_group.command(name="drop")
@click.argument("name")
@click.option(
    "--keep-remote",
    is_flag=True,
    help="Do not contact the backend's server: leave its data there (e.g. when it is down)",
)
@database_option
def index_drop(name, keep_remote, database):
    "Drop an index and its files (the collections are untouched)"
    db = open_database(database)
    try:
        left = Index.drop(db, name, keep_remote=keep_remote)
    except BackendUnavailable as error:
        raise click.ClickException(
            f"{error}: index {name} was not dropped (run again when the server is "
            "up, or add --keep-remote to leave its data on the server)"
        ) from None
    note = ""
    if keep_remote:
        note = " (its data on the server was left there)"
    elif left:
        note = f" (its data on the server, if any, remains: {left})"
    click.echo(f"Dropped index {name}{note}", err=True)


@index_group.command(name="approve")
@click.argument("name")
@click.option("--withdraw", is_flag=True, help="Withdraw this machine's approval instead")
@database_option
def index_approve(name, withdraw, database):
    """
    Let an index from another machine's database contact the server it names

    An index on a server (Chroma's host and port, and the environment
    variable holding its token) is contacted from this machine only once
    approved here: creating it here approves it; a database copied from
    elsewhere needs this command. An approval names the database file, the
    index, the server's address and the variable: a row edited later to name
    another is not approved. Approvals live in llm's user directory.

    \b
        llm index show shared-notes     # read which server it names
        llm index approve shared-notes
        llm index approve shared-notes --withdraw
    """
    index = Index(name, open_database(database))
    if withdraw:
        had = index.withdraw_approval()
        click.echo(
            (
                f"Withdrew the approval of index {name}"
                if had
                else f"Index {name} was not approved here"
            ),
            err=True,
        )
        return
    remote = index.approve()
    click.echo(f"Approved index {name}: it may contact the {remote.describe()}", err=True)


@index_group.command(name="keywords")
@click.argument("name")
@click.option("--drop", is_flag=True, help="Remove the keyword index (its files go)")
@click.option(
    "--tokenizer",
    type=click.Choice(TOKENIZERS),
    help=f"How text is split into terms (default {DEFAULT_TOKENIZER})",
)
@fusion_options
@database_option
def index_keywords(name, drop, tokenizer, mode, fusion, weight, depth, database):
    """
    Add a keyword index to an index, change its settings, or drop it

    The keyword index holds the text llm stored (embed --store) and is kept
    by the same builds; the next build fills it (a full build, unless only
    fusion settings changed). Queries then fuse both rankings (hybrid).

    \b
        llm index keywords docs-hnsw
        llm index keywords docs-hnsw --fusion rrf --weight 0.6
        llm index keywords docs-hnsw --drop
    """
    if mode is not None:
        raise click.UsageError("--mode is for queries: see llm index similar")
    with Index(name, open_database(database)) as index:
        if drop:
            index.set_keywords(False)
            click.echo(f"Dropped the keyword index of {name}", err=True)
            return
        settings = {
            **(index.record.keywords or {}),
            **{
                key: value
                for key, value in [
                    ("tokenizer", tokenizer),
                    ("fusion", fusion),
                    ("weight", weight),
                    ("depth", depth),
                ]
                if value is not None
            },
        }
        index.set_keywords(settings)
        state = (
            "fill it: run llm index build " + name
            if index.record.keyword_rows is None
            else "it is built"
        )
        described = ", ".join(
            f"{k} {'max(4 x N, 50)' if v is None else v}"
            for k, v in (index.record.keywords or {}).items()
        )
        click.echo(f"Keywords of {name}: {described} ({state})", err=True)


@index_group.command(name="default")
@click.argument("collection")
@click.argument("name", required=False)
@click.option("--clear", is_flag=True, help="Remove the collection's default index")
@database_option
def index_default(collection, name, clear, database):
    """
    Show, set or clear a collection's default index

    With a default index, 'llm similar COLLECTION' and collection.similar()
    in Python use the index instead of a brute-force scan.

    \b
        llm index default docs              # show it
        llm index default docs docs-hnsw    # set it
        llm index default docs --clear      # back to brute force
    """
    db = open_database(database)
    if not Collection.exists(db, collection):
        raise click.ClickException(f"Collection {collection!r} does not exist")
    if clear and name:
        raise click.UsageError("Give an index name or --clear, not both")
    if clear:
        Index.clear_default(db, collection)
        click.echo(f"Collection {collection} has no default index", err=True)
    elif name:
        Index(name, db).set_default(collection)
        click.echo(f"Default index of {collection}: {name}", err=True)
    else:
        current = catalog.default_index_name(db, collection)
        click.echo(current if current else f"Collection {collection} has no default index")


# In modules of their own (one concern each), listed here in their place.
index_group.add_command(index_migrate_chroma)
index_group.add_command(index_migrate_pgvector)
index_group.add_command(index_evaluate)
index_group.add_command(index_related)
index_group.add_command(index_metadata)


@index_group.command(name="backends")
@click.option("json_", "--json", is_flag=True, help="Output as JSON")
def index_backends(json_):
    "List available backends and their options"
    backends = [describe_backend(info) for info in get_backends().values()]
    if json_:
        click.echo(json.dumps(backends, indent=2))
        return
    click.echo(backends_listing(backends))
