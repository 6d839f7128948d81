"""``pgvector``: a table in Postgres with pgvector's HNSW or IVFFlat index.

The server users already run, and what they pick when a collection outgrows
one machine: managed by every cloud, replicated, sharded. Each index gets a
table of its own, ``(label bigint primary key, embedding vector(d))``, in a
schema (``llm_vector_index`` unless ``-o schema`` says otherwise), named after
the index with 12 random hex digits, so that two indexes, two llm databases
or two machines sharing a server never collide. A registry table in that
schema lists the tables the plugin made, each with the version of its last
save: only a table listed there is ever dropped.

Writes happen in one Postgres transaction that ``save()`` commits, with a
new version in the registry; the index's folder records that version. So a
build killed before it commits leaves the previous rows answering, and one
killed between Postgres's commit and ours is seen (the versions differ) and
refused in one line until ``llm index build`` repairs it. Full builds load
with binary ``COPY`` and create the ANN index after the load, as pgvector's
documentation advises.

The connection string comes from the environment variable named by
``-o dsn_env`` (never stored), and only where this machine approved that
index and variable (approvals.py). ``import psycopg`` happens only in here.
"""

from __future__ import annotations

import math
import time
import uuid
from collections.abc import Mapping
from typing import Any

import numpy as np

from .. import pg_client
from ..base import (
    HNSW_SEARCH_WIDTHS,
    Capabilities,
    Option,
    Remote,
    Tunable,
    VectorIndex,
    no_results,
    normalize,
    unique_last,
)
from ..errors import DamagedFiles, InvalidOptions, VectorIndexError
from ..hookspecs import hookimpl
from ..storage import load_snapshot, save_snapshot
from . import pgvector_registry

KINDS = ("hnsw", "ivfflat")
# pgvector's limits: HNSW and IVFFlat index up to 2,000 dimensions of vector
# and 4,000 of halfvec; hnsw.ef_search at most 1,000.
MAX_DIMENSIONS = {False: pg_client.MAX_HNSW_DIMENSIONS, True: 4000}
MAX_EF_SEARCH = 1000
IVF_PROBES = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512)
# A replica applies the primary's commits a moment later: a query there
# waits this long for the version its folder names before refusing.
REPLICA_WAIT = 3.0


def lists_for(rows: int) -> int:
    "IVFFlat lists as pgvector advises: rows / 1000 up to 1M rows, sqrt(rows) beyond."
    return max(1, rows // 1000 if rows <= 1_000_000 else int(math.sqrt(rows)))


class PgvectorIndex(VectorIndex):
    name = "pgvector"
    options = (
        Option(
            "dsn_env",
            str,
            "",
            "Environment variable holding the Postgres connection string (never stored)",
        ),
        Option("schema", str, "llm_vector_index", "Schema for the index's table"),
        Option("kind", str, "hnsw", "pgvector index: hnsw or ivfflat"),
        Option("m", int, 16, "HNSW links per node", 2, maximum=100),
        Option("ef_construction", int, 64, "HNSW candidates explored at build", 4, maximum=1000),
        Option(
            "ef_search", int, 40, "HNSW candidates explored per query", 1, maximum=MAX_EF_SEARCH
        ),
        Option("lists", int, 0, "IVFFlat lists (0: rows / 1000 at build)", 0, maximum=32768),
        Option("probes", int, 8, "IVFFlat lists searched per query", 1, maximum=32768),
        Option(
            "halfvec",
            bool,
            False,
            "Store float16 (half the size; the plugin re-scores exactly from llm's vectors)",
        ),
    )
    capabilities = Capabilities(
        exact=False, filtered_search=True, atomic_save=True, absent_labels=True
    )

    @classmethod
    def validate_options(cls, values, dimensions=None):
        for secret in ("dsn", "password"):
            if secret in values:
                raise InvalidOptions(
                    "Connection strings and passwords are never stored in the database: "
                    "put it in an environment variable and pass its name, e.g. "
                    "-o dsn_env PGVECTOR_DSN"
                )
        settings = super().validate_options(values, dimensions)
        if settings["dsn_env"]:
            pg_client.check_variable(settings["dsn_env"])
        if not pg_client.is_schema_name(settings["schema"]):
            raise InvalidOptions(f"Option schema must be {pg_client.SCHEMA_RULE}")
        if settings["kind"] not in KINDS:
            raise InvalidOptions(f"Option kind must be one of {', '.join(KINDS)}")
        if settings["ef_construction"] < 2 * settings["m"]:
            raise InvalidOptions("Option ef_construction must be at least twice m (pgvector)")
        most = MAX_DIMENSIONS[settings["halfvec"]]
        if dimensions is not None and dimensions > most:
            kind = "halfvec" if settings["halfvec"] else "vector"
            raise InvalidOptions(
                f"pgvector indexes {kind} of at most {most} dimensions, not {dimensions}"
                + ("" if settings["halfvec"] else ": try -o halfvec 1")
            )
        return settings

    @classmethod
    def remote(cls, settings):
        variable = settings["dsn_env"]
        return Remote("pgvector", f"from ${variable}", (variable,))

    @classmethod
    def check_reachable(cls, settings):
        connection = pg_client.connect(settings["dsn_env"], read_only=False)
        try:
            with pg_client.server_errors(settings["dsn_env"]):
                pg_client.ensure_extension(connection, settings["dsn_env"])
        finally:
            connection.close()

    @classmethod
    def keeps_data_elsewhere(cls, settings: Mapping[str, Any]) -> bool:
        return True

    @classmethod
    def tunable(cls, settings):
        if settings["kind"] == "ivfflat":
            return Tunable("probes", IVF_PROBES)
        return Tunable("ef_search", tuple(w for w in HNSW_SEARCH_WIDTHS if w <= MAX_EF_SEARCH))

    @classmethod
    def settings_in_use(cls, settings):
        if settings["kind"] == "hnsw":
            unused: tuple[str, ...] = ("lists", "probes")
        else:
            unused = ("m", "ef_construction", "ef_search")
        return {k: v for k, v in settings.items() if k not in unused}

    def candidates(self, k: int) -> int:
        # float16 scores can swap near neighbours: propose more, llm's
        # vectors decide (as for faiss's compressed codes).
        return 2 * k if self.settings["halfvec"] else k

    # -- opening -----------------------------------------------------------

    @property
    def _variable(self) -> str:
        return self.settings["dsn_env"]

    def _errors(self):
        return pg_client.server_errors(self._variable)

    def open(self) -> None:
        self._half = self.settings["halfvec"]
        self._schema = self.settings["schema"]
        saved = load_snapshot(self.path)
        self._connection = None
        self._connect()
        try:
            with self._errors():
                if saved is None:
                    self._start_empty()
                else:
                    self._open_saved(saved.meta)
        except BaseException:
            self.close()
            raise

    def _connect(self) -> None:
        connection = pg_client.connect(self._variable, read_only=self.read_only)
        try:
            with self._errors():
                if self.read_only:
                    types = pg_client.vector_types(connection)
                    if len(types) != 2:
                        raise VectorIndexError(
                            f"{pg_client.where(self._variable)} has no pgvector extension "
                            "in this database"
                        )
                else:
                    types = pg_client.ensure_extension(connection, self._variable)
                pg_client.register_dumpers(connection, types)
                self._set_search_settings(connection)
                if not self.read_only:
                    connection.commit()  # the settings outlive any rollback
        except BaseException:
            connection.close()
            raise
        self._connection = connection

    def _set_search_settings(self, connection) -> None:
        # Iterative scans (pgvector 0.8) go on until enough rows pass a filter,
        # so that a filtered query never comes back short for want of width.
        for name, value in (
            ("hnsw.ef_search", self.settings["ef_search"]),
            ("hnsw.iterative_scan", "strict_order"),
            ("ivfflat.probes", self.settings["probes"]),
            ("ivfflat.iterative_scan", "relaxed_order"),
        ):
            connection.execute("select set_config(%s, %s, false)", [name, str(value)])

    def _start_empty(self) -> None:
        self._table: str | None = None
        self._count: int | None = 0
        self._highest = -1
        self._new = True  # its ANN index is made at the first save, after the load
        self._version: str | None = None
        if self.read_only:
            return
        self._ensure_registry()
        self._table = pgvector_registry.table_name(self.path.name)
        column = "halfvec" if self._half else "vector"
        self._execute(
            "create table {table} (label bigint primary key, "
            f"embedding {column}({int(self.dimensions)}) not null)"
        )

    def _ensure_registry(self) -> None:
        assert self._connection is not None
        pgvector_registry.ensure(self._connection, self._schema)

    def _open_saved(self, meta: Mapping[str, Any]) -> None:
        table, version = meta.get("table"), meta.get("version")
        if not pg_client.is_table_name(table) or not isinstance(version, str):
            raise DamagedFiles("its record of the Postgres table is not one this plugin writes")
        if meta.get("schema") != self._schema:
            raise DamagedFiles("its Postgres table is in another schema than its options say")
        self._table = table
        self._new = False
        deadline = time.monotonic() + (REPLICA_WAIT if self.read_only else 0)
        while True:
            row = self._registry_row()
            if row is not None and row[0] == version:
                break
            if time.monotonic() >= deadline:
                where = f"{self._schema}.{table} in {pg_client.where(self._variable)}"
                if row is None:
                    raise DamagedFiles(f"its table {where} is gone")
                raise DamagedFiles(
                    f"its table {where} holds another save than these files record "
                    "(a build interrupted, or one made elsewhere)"
                )
            time.sleep(0.05)
        _, rows, dimensions, half = row
        if dimensions != self.dimensions or half != self._half:
            raise DamagedFiles("its Postgres table holds vectors of another shape")
        self._version = version
        self._count = int(rows)
        self._highest = -1 if self.read_only else self._max_label()

    def _registry_row(self):
        return pgvector_registry.row(self._connection, self._schema, self._table)

    def _max_label(self) -> int:
        value = self._execute("select max(label) from {table}").fetchone()[0]
        return -1 if value is None else int(value)

    def _execute(self, statement: str, params=None):
        "Run a statement naming our table as ``{table}`` (quoted, never formatted in)."
        sql = pg_client.psycopg().sql
        assert self._connection is not None
        query = sql.SQL(statement).format(
            table=sql.Identifier(self._schema, self._table or ""),
            ann=sql.Identifier(f"{self._table}_ann"),
        )
        return self._connection.execute(query, params)

    # -- the contract --------------------------------------------------------

    def add(self, labels: np.ndarray, vectors: np.ndarray) -> None:
        labels, vectors = unique_last(labels, normalize(self.check_vectors(vectors)))
        if not len(labels):
            return
        assert self._connection is not None
        with self._errors():
            if int(labels.min()) <= self._highest:  # some may be stored: replace them
                self._execute("delete from {table} where label = any(%s)", [labels.tolist()])
            sql = pg_client.psycopg().sql
            statement = sql.SQL("copy {} (label, embedding) from stdin with (format binary)")
            with self._connection.cursor() as cursor:
                copy_into = statement.format(sql.Identifier(self._schema, self._table or ""))
                with cursor.copy(copy_into) as copy:
                    copy.write(pg_client.COPY_HEADER)
                    step = 10_000
                    for start in range(0, len(labels), step):
                        copy.write(
                            pg_client.copy_rows(
                                labels[start : start + step],
                                vectors[start : start + step],
                                self._half,
                            )
                        )
                    copy.write(pg_client.COPY_TRAILER)
        self._highest = max(self._highest, int(labels.max()))
        self._count = None

    def remove(self, labels: np.ndarray) -> None:
        labels = np.asarray(labels, dtype=np.int64).reshape(-1)
        if not len(labels) or self._table is None:
            return
        with self._errors():
            self._execute("delete from {table} where label = any(%s)", [labels.tolist()])
        self._count = None

    def count(self) -> int:
        if self._count is None:
            with self._errors():
                self._count = int(self._execute("select count(*) from {table}").fetchone()[0])
        return self._count

    def search(
        self, queries: np.ndarray, k: int, allowed: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        queries = normalize(self.check_vectors(queries))
        stored = self.count()
        if self._table is None or stored == 0 or k <= 0:
            return no_results(len(queries))
        allow = None if allowed is None else np.asarray(allowed, dtype=np.int64).tolist()
        wanted = min(k, stored if allow is None else len(allow))
        if wanted == 0:
            return no_results(len(queries))
        found: list[list] = []
        connection = self._connection
        assert connection is not None
        with self._errors():
            # A connection that may write and has nothing pending (a build's
            # backend, kept for queries, or tuning's) searches in autocommit:
            # a transaction its search opened and held would lock the table
            # against another build's DROP, and VACUUM, for as long as the
            # process lives, and BEGIN and ROLLBACK would be two more round
            # trips a query (a third of tuning's time).
            autocommit = not self.read_only and self._in_no_transaction()
            if autocommit:
                connection.autocommit = True
            try:
                for query in queries:
                    vector = pg_client.parameter(query, self._half)
                    rows = self._nearest(vector, k, allow, exact=False)
                    if len(rows) < wanted:
                        # Short: deleted tuples in the graph, or the iterative
                        # scan's limit. Answer exactly over what is stored.
                        rows = self._nearest(vector, k, allow, exact=True)
                    found.append(rows)
            finally:
                if autocommit and not connection.closed:
                    connection.autocommit = False
        width = min(len(rows) for rows in found)
        labels = np.array([[r[0] for r in rows[:width]] for rows in found], dtype=np.int64)
        scores = np.array([[r[1] for r in rows[:width]] for rows in found], dtype=np.float32)
        return scores.reshape(len(queries), width), labels.reshape(len(queries), width)

    def _in_no_transaction(self) -> bool:
        assert self._connection is not None
        idle = pg_client.psycopg().pq.TransactionStatus.IDLE
        return self._connection.info.transaction_status == idle

    def _nearest(self, vector, k: int, allow: list[int] | None, exact: bool) -> list:
        condition = "" if allow is None else "where label = any(%(allowed)s)"
        if exact:
            # offset 0 keeps the planner from ordering by the ANN index.
            source = f"(select label, embedding from {{table}} {condition} offset 0) as rows"
            condition = ""
        else:
            source = "{table}"
        statement = (
            f"select label, 1 - (embedding <=> %(q)s) from {source} {condition} "
            "order by embedding <=> %(q)s limit %(k)s"
        )
        params: dict[str, Any] = {"q": vector, "k": k}
        if allow is not None:
            params["allowed"] = allow
        rows = self._execute(statement, params).fetchall()
        # relaxed_order (IVFFlat's iterative scan) may return near-sorted rows.
        return sorted(rows, key=lambda row: -row[1])

    def set_search_option(self, name, value):
        super().set_search_option(name, value)
        if name in ("ef_search", "probes") and self._connection is not None:
            with self._errors():
                setting = "hnsw.ef_search" if name == "ef_search" else "ivfflat.probes"
                self._connection.execute(
                    "select set_config(%s, %s, false)", [setting, str(int(value))]
                )

    def save(self) -> None:
        if self.read_only or self._connection is None:
            raise VectorIndexError("A read-only pgvector index cannot be saved")
        version = uuid.uuid4().hex
        with self._errors():
            if self._new:
                self._create_ann_index()
            rows = self.count()
            assert self._table is not None
            pgvector_registry.record_save(
                self._connection,
                self._schema,
                self._table,
                version,
                rows,
                int(self.dimensions),
                self._half,
                self.settings["kind"],
            )
            self._connection.commit()
        self._new = False
        self._version = version
        save_snapshot(
            self.path, {}, meta={"table": self._table, "schema": self._schema, "version": version}
        )

    def _create_ann_index(self) -> None:
        "The ANN index over what was loaded (pgvector builds one far faster than it grows one)."
        ops = "halfvec_cosine_ops" if self._half else "vector_cosine_ops"
        method = "hnsw" if self.settings["kind"] == "hnsw" else "ivfflat"  # never formatted in
        if method == "hnsw":
            m, ef_construction = int(self.settings["m"]), int(self.settings["ef_construction"])
            parameters = f"m = {m}, ef_construction = {ef_construction}"
        else:
            parameters = f"lists = {int(self.settings['lists'] or lists_for(self.count()))}"
        assert self._connection is not None
        pg_client.size_build_memory(
            self._connection,
            self.count(),
            (2 if self._half else 4) * self.dimensions,
            int(self.settings["m"]),
        )
        self._execute(
            f"create index {{ann}} on {{table}} using {method} (embedding {ops}) "
            f"with ({parameters})"
        )

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()  # what was not saved is rolled back
            self._connection = None

    def destroy(self) -> None:
        "Drop our table, if the registry lists it (nothing the plugin did not make)."
        if self._connection is None or self._table is None:
            return
        if self.read_only:
            raise VectorIndexError("A read-only pgvector index cannot be destroyed")
        with self._errors():
            self._connection.rollback()  # unsaved rows, or an unsaved new table
            with self._connection.transaction():
                # A query elsewhere that holds the table: one line, not a hang.
                self._connection.execute("select set_config('lock_timeout', '20s', true)")
                listed = self._registry_row() is not None
                if listed:
                    self._execute("drop table if exists {table}")
                    pgvector_registry.forget(self._connection, self._schema, self._table)

    def describe(self) -> dict[str, Any]:
        return {
            "pgvector_table": f"{self._schema}.{self._table}" if self._table else None,
            "pgvector": pg_client.where(self._variable),
        }


@hookimpl
def register_vector_index_backends(register):
    register(PgvectorIndex)
