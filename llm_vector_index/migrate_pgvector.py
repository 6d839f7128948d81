"""Migrate llm collections into a Postgres table with pgvector: a faithful,
resumable, verified copy that any Postgres client can query with plain SQL.

The table (``public.<collections>`` unless told otherwise) holds llm's rows
as they are::

    collection text, id text, embedding vector(d), content text,
    content_blob bytea, metadata jsonb, updated bigint,
    primary key (collection, id)

with an HNSW index (``vector_cosine_ops``) created after the first load, as
pgvector's documentation advises. Vectors are llm's float32 values exactly;
metadata is llm's JSON parsed by Postgres into ``jsonb``.

Progress lives beside the table, in ``llm_vector_index_migrations`` in the
same schema, one row per (table, collection): the second the last complete
run started (a re-run reads only rows updated since) and, while a run is under
way, the last id it committed. Each batch commits its rows and that id in one
transaction, so a run that is killed or loses its server continues where it
stopped. That registry is also how a table is known to be ours: a table of
the same name the plugin did not create is refused, never written to.

Rows Postgres cannot hold faithfully (a vector that cannot be ranked, text or
JSON with a NUL character, JSON with NaN or lone surrogates) are held back and
counted, never altered. The connection string comes from the environment
variable the user names on the command line; it is never stored.
"""

from __future__ import annotations

import json
import re
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from sqlite_utils import Database

from . import faults, pg_client, sync
from .errors import DimensionMismatch, InvalidOptions, VectorIndexError, check_count
from .migrate import llm_pages
from .pg_rows import LLM_COLUMNS, encode_rows, refusal

STATE = "llm_vector_index_migrations"
DEFAULT_SCHEMA = "public"
DEFAULT_BATCH = 5000
COLUMNS = "collection, id, embedding, content, content_blob, metadata, updated"


def derive_table_name(collections: list[str]) -> str:
    "A table name from the collections' names: lower case, [a-z0-9_], at most 63."
    name = re.sub(r"[^a-z0-9]+", "_", "_".join(collections).lower()).strip("_")
    if not name or not re.match(r"[a-z_]", name):
        name = f"llm_{name}".rstrip("_")
    return name[:63]


@dataclass
class PgvectorMigrationReport:
    table: str  # schema.table
    target: str  # where, without the connection string
    sent: int = 0  # rows written (added or changed)
    deleted: int = 0
    llm_rows: int = 0
    postgres_rows: int = 0
    held_back: int = 0
    held_reasons: dict[str, int] = field(default_factory=dict)
    resumed: list[str] = field(default_factory=list)  # collections an earlier run had begun
    index_seconds: float = 0.0  # creating the HNSW index, when this run did
    sampled: int = 0
    mismatches: list[str] = field(default_factory=list)
    seconds: float = 0.0


def migrate_to_pgvector(
    db: Database,
    collections: list[str],
    *,
    dsn_env: str,
    schema: str = DEFAULT_SCHEMA,
    table: str | None = None,
    batch_size: int = DEFAULT_BATCH,
    sync_deletes: bool = False,
    progress: Callable[[int, int], None] | None = None,
    sample: int = 20,
) -> PgvectorMigrationReport:
    """Copy (or bring up to date) llm collections in ``schema.table`` on the
    Postgres server whose connection string is in ``$dsn_env``. Everything is
    checked before anything is written; nothing is written to ``db``."""
    started = time.time()
    collections = list(dict.fromkeys(collections))
    rows = sync.check_collections(db, collections)
    check_count(batch_size, "batch size")
    table = table or derive_table_name(collections)
    for kind, name in (("schema", schema), ("table", table)):
        if not pg_client.is_schema_name(name):
            raise InvalidOptions(f"Invalid {kind} name {name!r}: use {pg_client.SCHEMA_RULE}")
    if table == STATE:
        raise InvalidOptions(f"Table name {STATE} is the migrations' own registry: choose another")
    if not pg_client.is_variable_name(dsn_env):
        raise InvalidOptions(
            # (not echoed: it may be a connection string with a password)
            "--dsn-env names the environment variable holding the connection string, "
            "not the string itself: export PGVECTOR_DSN=postgresql://... and give "
            "--dsn-env PGVECTOR_DSN"
        )
    connection = pg_client.connect(dsn_env, read_only=False)
    report = PgvectorMigrationReport(
        table=f"{schema}.{table}", target=f"{pg_client.where(dsn_env)}, table {schema}.{table}"
    )
    try:
        with pg_client.server_errors(dsn_env):
            target = _Target(connection, dsn_env, schema, table)
            target.lock()
            target.prepare(collections, sync.peek_dimensions(db, collections))
            reasons: Counter[str] = Counter()
            for collection in collections:
                migration = _CollectionMigration(
                    db, target, collection, rows[collection]["id"], batch_size, progress
                )
                if migration.resuming:
                    report.resumed.append(collection)
                report.sent += migration.send_changed()
                if sync_deletes:
                    deleted, sent = migration.sync_ids()
                    report.deleted += deleted
                    report.sent += sent
                migration.finish()
                reasons.update(migration.held_back.values())
            report.held_back, report.held_reasons = reasons.total(), dict(reasons)
            report.index_seconds = target.ensure_index()
            _verify(db, target, collections, rows, report, sample, sync_deletes)
    finally:
        connection.close()
    report.seconds = time.time() - started
    return report


class _Target:
    "The table in Postgres and its registry rows, through one connection."

    def __init__(self, connection, variable: str, schema: str, table: str) -> None:
        sql = pg_client.psycopg().sql
        self.connection, self.variable = connection, variable
        self.schema, self.name = schema, table
        self.table = sql.Identifier(schema, table)
        self.state = sql.Identifier(schema, STATE)
        self.sql = sql
        self.dimensions = 0
        self.staging_ready = False

    def execute(self, statement: str, params=None):
        "``{table}`` and ``{state}`` in ``statement`` are our two identifiers."
        composed = self.sql.SQL(statement).format(table=self.table, state=self.state)
        return self.connection.execute(composed, params)

    def lock(self) -> None:
        "One migration into a table at a time (released when the connection closes)."
        key = f"llm-vector-index migrate {self.schema}.{self.name}"
        locked = self.connection.execute(
            "select pg_try_advisory_lock(hashtextextended(%s, 0))", [key]
        ).fetchone()[0]
        self.connection.commit()
        if not locked:
            raise VectorIndexError(
                f"Another migration into {self.schema}.{self.name} is running: try again "
                "when it has finished"
            )

    def prepare(self, collections: list[str], dimensions: int | None) -> None:
        """Check the table is ours and of these dimensions, or create it (without
        its ANN index, built after the first load); register the collections."""
        types = pg_client.ensure_extension(self.connection, self.variable)
        pg_client.register_dumpers(self.connection, types)
        # Each checked first: a role that may only write rows can re-run.
        schema_exists = self.connection.execute(
            "select exists (select 1 from pg_namespace where nspname = %s)", [self.schema]
        ).fetchone()[0]
        if not schema_exists:
            self.connection.execute(
                self.sql.SQL("create schema {}").format(self.sql.Identifier(self.schema))
            )
        if not self._exists(STATE):
            self.execute(
                "create table {state} (table_name text not null, "
                "collection text not null, dimensions integer not null, watermark bigint, "
                "run_started bigint, resume_after text, rows bigint, finished timestamptz, "
                "primary key (table_name, collection))"
            )
        ours = self.execute(
            "select max(dimensions) from {state} where table_name = %s", [self.name]
        ).fetchone()[0]
        exists = self._exists(self.name)
        where = f"{self.schema}.{self.name}"
        if exists and ours is None:
            raise InvalidOptions(
                f"Table {where} exists and was not made by llm-vector-index: choose "
                "another with --table (nothing was written)"
            )
        if ours is not None and not exists:
            self.execute("delete from {state} where table_name = %s", [self.name])
            ours = None  # dropped by someone: start again
        if ours is not None and dimensions and ours != dimensions:
            raise DimensionMismatch(
                f"Table {where} holds {ours}-dimensional vectors; these collections have "
                f"{dimensions}"
            )
        self.dimensions = ours or dimensions or 0
        if not self.dimensions:
            raise InvalidOptions("These collections hold no vectors: nothing to migrate")
        if self.dimensions > pg_client.MAX_HNSW_DIMENSIONS:
            raise DimensionMismatch(
                f"pgvector's HNSW index takes at most {pg_client.MAX_HNSW_DIMENSIONS:,} "
                f"dimensions of vector; these collections have {self.dimensions:,}"
            )
        if not exists:
            self.execute(
                f"create table {{table}} (collection text not null, id text not null, "
                f"embedding vector({int(self.dimensions)}) not null, content text, "
                "content_blob bytea, metadata jsonb, updated bigint, "
                "primary key (collection, id))"
            )
        for collection in collections:
            self.execute(
                "insert into {state} (table_name, collection, dimensions) values (%s, %s, %s) "
                "on conflict do nothing",
                [self.name, collection, self.dimensions],
            )
        self.connection.commit()

    def _exists(self, name: str) -> bool:
        return self.connection.execute(
            "select to_regclass(%s) is not null", [f'"{self.schema}"."{name}"']
        ).fetchone()[0]

    def progress(self, collection: str) -> tuple[int | None, int | None, str | None]:
        "(watermark, run_started, resume_after) of a collection."
        return self.execute(
            "select watermark, run_started, resume_after from {state} "
            "where table_name = %s and collection = %s",
            [self.name, collection],
        ).fetchone()

    def record(self, collection: str, **values) -> None:
        "Set these registry columns (in the open transaction: the caller commits)."
        columns = self.sql.SQL(", ").join(
            self.sql.SQL("{} = %s").format(self.sql.Identifier(name)) for name in values
        )
        self.connection.execute(
            self.sql.SQL("update {} set {} where table_name = %s and collection = %s").format(
                self.state, columns
            ),
            [*values.values(), self.name, collection],
        )

    def copy(self, payload: bytes, *, into_staging: bool) -> None:
        "Rows in COPY's binary format, into the table or the staging table."
        if into_staging and not self.staging_ready:
            self.execute("create temp table llm_staging (like {table}) on commit delete rows")
            self.staging_ready = True
        target = self.sql.Identifier("llm_staging") if into_staging else self.table
        statement = self.sql.SQL("copy {} ({}) from stdin with (format binary)").format(
            target, self.sql.SQL(COLUMNS)
        )
        with self.connection.cursor().copy(statement) as copy:
            copy.write(pg_client.COPY_HEADER)
            copy.write(payload)
            copy.write(pg_client.COPY_TRAILER)

    def upsert_staged(self) -> int:
        "Write staged rows that differ from the table's; how many were written."
        changed = ", ".join(f"{c} = excluded.{c}" for c in COLUMNS.split(", ")[2:])
        mine = ", ".join(f"t.{c}" for c in COLUMNS.split(", ")[2:])
        theirs = ", ".join(f"excluded.{c}" for c in COLUMNS.split(", ")[2:])
        return self.execute(
            f"insert into {{table}} as t ({COLUMNS}) select {COLUMNS} from llm_staging "
            f"on conflict (collection, id) do update set {changed} "
            f"where ({mine}) is distinct from ({theirs})"
        ).rowcount

    def delete(self, collection: str, ids: list[str]) -> int:
        if not ids:
            return 0
        return self.execute(
            "delete from {table} where collection = %s and id = any(%s)", [collection, ids]
        ).rowcount

    def ids(self, collection: str) -> set[str]:
        return {
            row[0]
            for row in self.execute("select id from {table} where collection = %s", [collection])
        }

    def ensure_index(self) -> float:
        "Create the HNSW index if the table has none; the seconds it took."
        has_index = self.connection.execute(
            "select exists (select 1 from pg_index i join pg_class c on c.oid = i.indexrelid "
            "join pg_am a on a.oid = c.relam where i.indrelid = to_regclass(%s) "
            "and a.amname = 'hnsw')",
            [f'"{self.schema}"."{self.name}"'],
        ).fetchone()[0]
        if has_index:
            return 0.0
        started = time.perf_counter()
        count = self.execute("select count(*) from {table}").fetchone()[0]
        pg_client.size_build_memory(self.connection, count, 4 * self.dimensions, m=16)
        self.execute("create index on {table} using hnsw (embedding vector_cosine_ops)")
        self.execute("analyze {table}")
        self.connection.commit()
        return time.perf_counter() - started


class _CollectionMigration:
    def __init__(self, db, target: _Target, collection, collection_id, batch_size, progress):
        self.db, self.target = db, target
        self.collection, self.collection_id = collection, collection_id
        self.batch_size, self.progress = batch_size, progress
        self.watermark, run_started, self.after = target.progress(collection)
        self.resuming = self.after is not None
        self.run_started = run_started if self.resuming else int(time.time())
        # Until a first run completes, no row after the committed id can be in
        # the table: they go in with COPY alone. After that, through staging.
        self.first_load = self.watermark is None
        self.held_back: dict[str, str] = {}  # id: why Postgres cannot hold it

    def _condition(self) -> tuple[str, list]:
        if self.watermark is None:
            return "1", []
        return "updated >= ? or updated is null", [self.watermark]

    def send_changed(self) -> int:
        condition, params = self._condition()
        total = self.db.execute(
            f"select count(*) from embeddings where collection_id = ? and ({condition})"
            + (" and id > ?" if self.after is not None else ""),
            [self.collection_id, *params, *([self.after] if self.after is not None else [])],
        ).fetchone()[0]
        sent = 0
        for page in llm_pages(
            self.db, self.collection_id, condition, params, self.batch_size, after=self.after
        ):
            sent += self._send(page, staged=not self.first_load)
            self.target.record(
                self.collection, run_started=self.run_started, resume_after=page[-1][0]
            )
            self.target.connection.commit()
            faults.point("migrate-sent")
            if self.progress:
                self.progress(len(page), total)
        return sent

    def _send(self, page: list, *, staged: bool) -> int:
        "Write these llm rows (in the open transaction); how many were written."
        payload, kept, refused = encode_rows(self.collection, page, self.target.dimensions)
        self.held_back.update(refused)
        if staged:
            # A row that can no longer be copied must not answer with its old self.
            self.target.delete(self.collection, [id for id, _ in refused])
        if not kept:
            return 0
        self.target.copy(payload, into_staging=staged)
        return self.target.upsert_staged() if staged else kept

    def sync_ids(self) -> tuple[int, int]:
        "Delete rows whose llm row is gone; send rows the table lacks."
        in_table = self.target.ids(self.collection)
        in_llm = [
            row[0]
            for row in self.db.execute(
                "select id from embeddings where collection_id = ?", [self.collection_id]
            )
        ]
        gone = sorted(in_table - set(in_llm))
        deleted = 0
        for start in range(0, len(gone), self.batch_size):
            deleted += self.target.delete(self.collection, gone[start : start + self.batch_size])
        self.target.connection.commit()
        missing = [id for id in in_llm if id not in in_table]
        sent = 0
        for start in range(0, len(missing), self.batch_size):
            chunk = missing[start : start + self.batch_size]
            marks = ",".join("?" * len(chunk))
            page = self.db.execute(
                f"select {LLM_COLUMNS} from embeddings where collection_id = ? "
                f"and id in ({marks})",
                [self.collection_id, *chunk],
            ).fetchall()
            sent += self._send(page, staged=True)
            self.target.connection.commit()
        return deleted, sent

    def finish(self) -> None:
        "The run is complete: the next one reads rows updated since it started."
        self.target.record(
            self.collection,
            watermark=self.run_started,
            run_started=None,
            resume_after=None,
            rows=self.target.execute(
                "select count(*) from {table} where collection = %s", [self.collection]
            ).fetchone()[0],
            finished=time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime()),
        )
        self.target.connection.commit()


def _verify(db, target: _Target, collections, rows, report, sample, counted_all) -> None:
    """Counts on both sides (equal, less what was held back, after a run that
    looked at every id) and a random sample compared field by field."""
    ids = [rows[c]["id"] for c in collections]
    marks = ",".join("?" * len(ids))
    report.llm_rows = db.execute(
        f"select count(*) from embeddings where collection_id in ({marks})", ids
    ).fetchone()[0]
    report.postgres_rows = target.execute(
        "select count(*) from {table} where collection = any(%s)", [collections]
    ).fetchone()[0]
    if counted_all and report.postgres_rows != report.llm_rows - report.held_back:
        report.mismatches.append(
            f"{report.postgres_rows} rows in Postgres, {report.llm_rows} in llm, "
            f"{report.held_back} held back"
        )
    picked = db.execute(
        f"select c.name, e.{', e.'.join(LLM_COLUMNS.split(', '))} from embeddings e "
        f"join collections c on c.id = e.collection_id where e.collection_id in ({marks}) "
        "order by random() limit ?",
        [*ids, sample],
    ).fetchall()
    for collection, id, blob, content, content_blob, metadata, updated in picked:
        if refusal(content, content_blob, metadata, updated) or not (
            blob
            and len(blob) == 4 * target.dimensions
            and sync.rankable(np.frombuffer(blob, dtype="<f4")[None])[0]
        ):
            continue  # held back: never sent
        report.sampled += 1
        stored = target.execute(
            "select embedding::text, content, content_blob, metadata, updated from {table} "
            "where collection = %s and id = %s",
            [collection, id],
        ).fetchone()
        where = f"{collection}/{id}"
        if stored is None:
            report.mismatches.append(f"{where}: missing from Postgres")
            continue
        vector = np.array(stored[0][1:-1].split(","), dtype="<f4")
        if vector.tobytes() != blob:
            report.mismatches.append(f"{where}: vector differs")
        if stored[1] != content or (stored[2] and bytes(stored[2])) != content_blob:
            report.mismatches.append(f"{where}: content differs")
        if stored[3] != (json.loads(metadata) if metadata is not None else None):
            report.mismatches.append(f"{where}: metadata differs")
        if stored[4] != updated:
            report.mismatches.append(f"{where}: updated differs")
    target.connection.commit()
    if report.mismatches:
        raise VectorIndexError(
            f"Verification failed for {len(report.mismatches)} of {report.sampled} sampled "
            f"rows: {report.mismatches[0]}"
        )
