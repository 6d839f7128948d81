"""Our tables in the embeddings database, beside llm's own.

``vector_indexes`` describes each index; ``vector_index_collections`` says which
llm collections it covers; ``vector_index_labels`` maps each backend label to
the llm row it holds (and that row's ``updated`` as indexed);
``vector_index_defaults`` names a collection's default index. Rows are read
through ``records.IndexRecord``, which checks every value.
"""

from __future__ import annotations

import json
import sqlite3
from typing import Any

from sqlite_utils import Database, Migrations

from . import faults, metadata_indexes, related_store
from .errors import DamagedCatalog
from .records import DamagedRecord, IndexRecord

migrations = Migrations("llm_vector_index")


@migrations()
def m001_create_tables(db: Database) -> None:
    db.table("vector_indexes").create(
        {
            "id": int,
            "name": str,
            "backend": str,
            "options": str,  # JSON: the validated options, defaults filled in
            "model": str,
            "dimensions": int,  # NULL until the first build that sees a row
            "metric": str,
            "created": float,
            "built": float,  # time the last build committed, NULL if never
            "build_seconds": float,
            "watermark": int,  # rows with updated >= this are looked at again
            "rows": int,
            "next_label": int,
            "generation": int,  # +1 on every committed build
        },
        pk="id",
        not_null={"name", "backend", "options", "model", "metric", "created"},
        defaults={"rows": 0, "next_label": 0, "generation": 0},
    )
    db.table("vector_indexes").create_index(["name"], unique=True)
    db.table("vector_index_collections").create(
        {"index_id": int, "collection": str, "position": int},
        pk=("index_id", "collection"),
        foreign_keys=[("index_id", "vector_indexes", "id")],
    )
    db.table("vector_index_labels").create(
        {
            "index_id": int,
            "label": int,
            "collection_id": int,
            "id": str,
            "updated": int,
            "checksum": int,  # of the vector as indexed: see sync.checksums()
        },
        pk=("index_id", "label"),
        foreign_keys=[("index_id", "vector_indexes", "id")],
    )
    db.table("vector_index_labels").create_index(["index_id", "collection_id", "id"], unique=True)
    db.table("vector_index_defaults").create(
        {"collection": str, "index_id": int},
        pk="collection",
        foreign_keys=[("index_id", "vector_indexes", "id")],
    )


@migrations()
def m002_refresh_and_fingerprint(db: Database) -> None:
    # refresh: "auto" (a query first brings a stale index up to date) or
    # "manual" (a query answers from the last build and says it is behind).
    db.table("vector_indexes").add_column("refresh", str, not_null_default="auto")
    # What the collections looked like when the last build started: see
    # freshness.py. JSON, NULL before the first build.
    db.table("vector_indexes").add_column("fingerprint", str)


@migrations()
def m003_chroma_migrations(db: Database) -> None:
    # Where each llm collection was migrated to (a Chroma directory or server
    # and collection), and the second the last complete run started.
    db.table("vector_index_migrations").create(
        {"target": str, "collection_id": int, "watermark": int, "last_run": float, "rows": int},
        pk=("target", "collection_id"),
    )


@migrations()
def m004_tuning(db: Database) -> None:
    # The recall@10 the index is kept tuned to (NULL: never tuned), and the
    # last tuning: what it measured and chose (JSON, see tuning.Tuning).
    db.table("vector_indexes").add_column("target_recall", float)
    db.table("vector_indexes").add_column("tuning", str)


@migrations()
def m005_keywords(db: Database) -> None:
    # The keyword index beside the vector index (NULL: none): its settings
    # as JSON (tokenizer, fusion, weight, depth; see keywords.py, fusion.py),
    # and how many rows the last build put in it (NULL: not filled yet).
    db.table("vector_indexes").add_column("keywords", str)
    db.table("vector_indexes").add_column("keyword_rows", int)


@migrations()
def m006_label_hints(db: Database) -> None:
    # llm's rowid of each indexed row as the build read it: a query finds a
    # winner's row by it (one b-tree lookup, not two), checked against
    # (collection_id, id) on every read, because llm's replace and VACUUM
    # move rowids (a stale or NULL hint falls back to the key).
    db.table("vector_index_labels").add_column("hint", int)
    if db.table("embeddings").exists():
        db.execute(
            "update vector_index_labels set hint = (select e.rowid from embeddings e "
            "where e.collection_id = vector_index_labels.collection_id "
            "and e.id = vector_index_labels.id)"
        )


@migrations()
def m007_related(db: Database) -> None:
    # `llm index related --save TABLE` (related.py, related_store.py): the
    # tables each index saved into (neighbours per row, the index's rows in
    # the table, +1 per save), and each row's vector checksum as that save
    # read it, from which the next save learns what changed.
    db.table("vector_index_related").create(
        {
            "index_id": int,
            "table_name": str,
            "number": int,
            "rows": int,
            "version": int,
            "saved": float,
        },
        pk=("index_id", "table_name"),
    )
    db.table("vector_index_related_rows").create(
        {"index_id": int, "table_name": str, "collection_id": int, "id": str, "checksum": int},
        pk=("index_id", "table_name", "collection_id", "id"),
    )


@migrations()
def m008_ordered_labels(db: Database) -> None:
    # Labels below this were handed out by the last full build in the order
    # of the rows' ids within each collection (later builds give new rows
    # labels from next_label on, and a row keeps its label): the rows under
    # an id prefix are then one run of labels plus a few later ones, which a
    # filter reads from the run's two ends (filters.Filter.ordered_labels).
    # NULL: no full build since this column was added.
    db.table("vector_indexes").add_column("ordered_labels", int)


@migrations()
def m009_metadata_indexes(db: Database) -> None:
    # The metadata keys each index asked to have indexed on llm's table, and
    # which of those SQLite indexes the plugin made (metadata_indexes.py).
    db.table("vector_index_metadata_keys").create(
        {"index_id": int, "key": str}, pk=("index_id", "key")
    )
    db.table("vector_index_metadata_made").create({"key": str}, pk="key")


def has_label_hints(db: Database) -> bool:
    "Has the label map its hint column (m006)? A database no build has upgraded has not."
    return any(row[1] == "hint" for row in db.execute("pragma table_info(vector_index_labels)"))


def ensure_schema(db: Database) -> None:
    "Create or upgrade our tables, and the one index we add to llm's table."
    migrations.apply(db)
    # Lets the incremental scan find rows by `updated` without reading every
    # row's page (and so every vector). An extra index is invisible to llm.
    db.execute(
        "create index if not exists idx_embeddings_collection_updated "
        "on embeddings (collection_id, updated)"
    )
    # Its entries end with the rowid: a collection's max(rowid), which the
    # freshness check reads on every query, is one lookup, not a range scan.
    db.execute(
        "create index if not exists idx_embeddings_collection " "on embeddings (collection_id)"
    )


def has_catalog(db: Database) -> bool:
    return (
        db.execute(
            "select 1 from sqlite_master where type = 'table' and name = 'vector_indexes'"
        ).fetchone()
        is not None
    )


def get_record(db: Database, name: str) -> IndexRecord | None:
    if not has_catalog(db):
        return None
    cursor = db.execute("select * from vector_indexes where name = ?", [name])
    row = cursor.fetchone()
    if row is None:
        return None
    row = dict(zip((column[0] for column in cursor.description), row))
    collections = [
        collection
        for (collection,) in db.execute(
            "select collection from vector_index_collections "
            "where index_id = ? order by position",
            [row["id"]],
        )
    ]
    return IndexRecord.from_row(row, collections)


def identity(index_id: int, created: float) -> str:
    """Names one index among all others: its id and when it was created, as
    SQLite gives a dropped index's id to the next one made."""
    return f"{index_id}:{created!r}"


def identity_of(db: Database, name: str) -> str | None:
    "The identity of the index of this name now, if there is one."
    if not has_catalog(db):
        return None
    row = db.execute("select id, created from vector_indexes where name = ?", [name]).fetchone()
    return identity(*row) if row else None


def generation(db: Database, index_id: int) -> int | None:
    "The index's committed generation (one indexed lookup: cheap on every query)."
    row = db.execute("select generation from vector_indexes where id = ?", [index_id]).fetchone()
    return row[0] if row else None


def list_records(db: Database) -> list[IndexRecord | DamagedRecord]:
    if not has_catalog(db):
        return []
    names = [row["name"] for row in db.query("select name from vector_indexes order by name")]
    records: list[IndexRecord | DamagedRecord] = []
    for name in names:
        try:
            record = get_record(db, name)
        except DamagedCatalog as error:
            records.append(DamagedRecord(name, str(error)))
        else:
            if record is not None:
                records.append(record)
    return records


def delete_named(db: Database, name: str) -> bool:
    "Delete the rows of the index of this name, whatever its row holds; True if there was one."
    row = db.execute("select id from vector_indexes where name = ?", [name]).fetchone()
    if row is None:
        return False
    delete_record(db, row[0])
    return True


def insert_record(
    db: Database,
    *,
    name: str,
    backend: str,
    options: dict[str, Any],
    model: str,
    dimensions: int | None,
    collections: list[str],
    created: float,
    refresh: str = "auto",
    target_recall: float | None = None,
    keywords: dict[str, Any] | None = None,
) -> int:
    with db.atomic():
        index_id = (
            db.table("vector_indexes")
            .insert(
                {
                    "name": name,
                    "backend": backend,
                    "options": json.dumps(options, sort_keys=True),
                    "model": model,
                    "dimensions": dimensions,
                    "metric": "cosine",
                    "created": created,
                    "refresh": refresh,
                    "target_recall": target_recall,
                    "keywords": json.dumps(keywords, sort_keys=True) if keywords else None,
                }
            )
            .last_pk
        )
        assert isinstance(index_id, int)  # a rowid: SQLite assigns one
        # Rows left by an index of this id whose row was deleted by hand
        # (SQLite gives the id out again): they are not the new index's.
        for table in ("vector_index_labels", "vector_index_collections", "vector_index_defaults"):
            db.execute(f"delete from {table} where index_id = ?", [index_id])
        db.table("vector_index_collections").insert_all(
            {"index_id": index_id, "collection": collection, "position": position}
            for position, collection in enumerate(collections)
        )
    return index_id


def set_keywords(
    db: Database, index_id: int, settings: dict[str, Any] | None, keep_rows: bool
) -> None:
    "An index's keyword settings; unless ``keep_rows``, its keyword index is to be filled."
    ensure_schema(db)
    with db.atomic():
        db.execute(
            "update vector_indexes set keywords = ?"
            f"{'' if keep_rows else ', keyword_rows = null'} where id = ?",
            [json.dumps(settings, sort_keys=True) if settings else None, index_id],
        )


def set_default(db: Database, collection: str, index_id: int) -> None:
    db.table("vector_index_defaults").upsert(
        {"collection": collection, "index_id": index_id}, pk="collection"
    )


def clear_default(db: Database, collection: str) -> None:
    if has_catalog(db):
        db.execute("delete from vector_index_defaults where collection = ?", [collection])
        db.conn.commit()


def default_index_name(db: Database, collection: str) -> str | None:
    "The name of the collection's default index, or None (the usual case)."
    if not has_catalog(db):
        return None
    row = db.execute(
        "select i.name from vector_index_defaults d "
        "join vector_indexes i on i.id = d.index_id where d.collection = ?",
        [collection],
    ).fetchone()
    return row[0] if row else None


def defaults_of(db: Database, index_id: int) -> list[str]:
    "Collections whose default index this is."
    return [
        row[0]
        for row in db.execute(
            "select collection from vector_index_defaults where index_id = ? "
            "order by collection",
            [index_id],
        )
    ]


def is_writable(db: Database, index_id: int) -> bool:
    "Can this connection write the catalog? (False for a read-only database.)"
    return write_error(db, index_id) is None


def write_error(db: Database, index_id: int) -> str | None:
    "Why this connection cannot write the catalog (read-only, locked), or None."
    try:
        db.execute("savepoint vector_index_probe")
        try:
            db.execute(
                "update vector_indexes set generation = generation where id = ?",
                [index_id],
            )
        finally:
            db.execute("rollback to vector_index_probe")
            db.execute("release vector_index_probe")
        return None
    except sqlite3.OperationalError as error:
        return str(error)


def migration_watermark(db: Database, target: str, collection_id: int) -> int | None:
    if not db["vector_index_migrations"].exists():
        return None
    row = db.execute(
        "select watermark from vector_index_migrations where target = ? and collection_id = ?",
        [target, collection_id],
    ).fetchone()
    return row[0] if row else None


def record_migration(
    db: Database, target: str, collection_id: int, watermark: int, rows: int, when: float
) -> None:
    db.table("vector_index_migrations").upsert(
        {
            "target": target,
            "collection_id": collection_id,
            "watermark": watermark,
            "last_run": when,
            "rows": rows,
        },
        pk=("target", "collection_id"),
    )


def save_tuning(
    db: Database, index_id: int, options: dict[str, Any], target: float, tuning: dict
) -> None:
    "A tuning's choice (in the options every open uses) and what it measured."
    db.execute(
        "update vector_indexes set options = ?, target_recall = ?, tuning = ? where id = ?",
        [json.dumps(options, sort_keys=True), target, json.dumps(tuning), index_id],
    )
    db.conn.commit()


def delete_record(db: Database, index_id: int) -> None:
    with db.atomic():
        if db.table("vector_index_related").exists():
            name = db.execute("select name from vector_indexes where id = ?", [index_id]).fetchone()
            related_store.forget(db, index_id, name[0] if name else None)
        if db.table(metadata_indexes.KEYS).exists():
            metadata_indexes.remove(db, index_id)
        for table in (
            "vector_index_labels",
            "vector_index_collections",
            "vector_index_defaults",
        ):
            db.execute(f"delete from {table} where index_id = ?", [index_id])
        db.execute("delete from vector_indexes where id = ?", [index_id])


LABELS_UNIQUE = "idx_vector_index_labels_index_id_collection_id_id"


def labels_are_unique(db: Database) -> bool:
    "Is the label map's unique index on (index_id, collection_id, id) in place?"
    for _, name, unique, _, partial in db.execute("pragma index_list(vector_index_labels)"):
        if name == LABELS_UNIQUE:
            columns = [row[2] for row in db.execute(f"pragma index_info([{name}])")]
            return bool(unique) and not partial and columns == ["index_id", "collection_id", "id"]
    return False


def commit_build(
    db: Database,
    index_id: int,
    *,
    replace_all: bool,
    deleted_labels: list[int],
    label_rows: list[tuple[int, int, str, int | None, int, int | None]],
    values: dict[str, Any],
    new_generation: bool = True,
) -> None:
    """Record a build in one transaction: the label map changes (rows of
    ``(label, collection_id, id, updated, checksum, hint)``), then the index row, and the
    generation + 1 when the files changed."""
    with db.atomic():
        if replace_all:
            db.execute("delete from vector_index_labels where index_id = ?", [index_id])
            if not labels_are_unique(db):  # a crafted database dropped it: put it back
                db.execute(f"drop index if exists [{LABELS_UNIQUE}]")
                db.execute(
                    f"create unique index [{LABELS_UNIQUE}] "
                    "on vector_index_labels (index_id, collection_id, id)"
                )
        for start in range(0, len(deleted_labels), 500):
            chunk = deleted_labels[start : start + 500]
            db.execute(
                "delete from vector_index_labels where index_id = ? "
                f"and label in ({','.join('?' * len(chunk))})",
                [index_id, *chunk],
            )
        db.conn.executemany(
            "insert or replace into vector_index_labels (index_id, label, "
            "collection_id, id, updated, checksum, hint) values (?, ?, ?, ?, ?, ?, ?)",
            ((index_id, *row) for row in label_rows),
        )
        faults.point("committing")  # inside the open transaction
        assignments = ", ".join(f"[{key}] = :{key}" for key in values)
        step = 1 if new_generation else 0
        db.execute(
            f"update vector_indexes set {assignments}, generation = generation + {step} "
            "where id = :index_id",
            {**values, "index_id": index_id},
        )
