"""The pgvector backend against a real Postgres (testing_postgres.py, started
by the tests): llm's answers through the CLI and Python, incremental builds
that leave the table holding exactly llm's rows, filters that always fill k,
halfvec re-scored exactly, approvals of the connection, and a server that is
down, refuses the password, lacks the extension, or holds another save:
one line, nothing changed, a re-run completes."""

import json
import shutil

import numpy as np
import pytest
from click.testing import CliRunner
from llm.cli import cli as llm_cli
from sqlite_utils import Database

from llm_vector_index import BackendUnavailable, DamagedFiles, Index, NotApproved, close_indexes
from llm_vector_index.cli import index_group
from llm_vector_index.storage import load_snapshot, save_snapshot
from llm_vector_index.testing import clustered_vectors, write_embeddings

from .conftest import snapshot

ROWS = 400


def run(*args, env=None):
    return CliRunner().invoke(index_group, [str(arg) for arg in args], env=env)


@pytest.fixture
def rows(db):
    vectors = clustered_vectors(ROWS, 24, clusters=8, seed=3)
    write_embeddings(
        db,
        "c",
        [f"r{i:03d}" for i in range(ROWS)],
        vectors,
        contents=[f"row {i}" for i in range(ROWS)],
        metadatas=[{"even": i % 2 == 0} for i in range(ROWS)],
        updated=1000,
    )
    return vectors


def stored_labels(postgres_server, index):
    table = index.backend().describe()["pgvector_table"]
    return sorted(r[0] for r in postgres_server.sql(f"select label from {table}"))


def exact_ids(db, query, number, keep=lambda id: True):
    got = db.execute("select id, embedding from embeddings order by id").fetchall()
    ids = [r[0] for r in got if keep(r[0])]
    vectors = np.stack([np.frombuffer(r[1], "<f4") for r in got if keep(r[0])])
    scores = vectors @ query / np.linalg.norm(vectors, axis=1) / np.linalg.norm(query)
    return [ids[i] for i in np.argsort(-scores, kind="stable")[:number]]


def catalog_state(db):
    return (
        db.execute("select generation, rows, built, options from vector_indexes").fetchall(),
        db.execute("select count(*) from vector_index_labels").fetchone()[0],
    )


def test_the_cli_answers_as_llm_does(db_path, db, rows, pgvector_dsn, user_path):
    db_flag = ["-d", db_path]
    create = ["create", "pg", "c", "--backend", "pgvector", "-o", "dsn_env", pgvector_dsn]
    result = run(*create, *db_flag)
    assert result.exit_code == 0, result.output
    assert run("build", "pg", *db_flag).exit_code == 0
    result = run("similar", "pg", "r005", "-n", "5", *db_flag)
    assert result.exit_code == 0, result.output
    found = [json.loads(line) for line in result.stdout.splitlines()]
    assert [f["id"] for f in found] == exact_ids(db, rows[5], 6)[1:]
    # llm's own command through the default index: the same ids and scores.
    assert run("default", "c", "pg", *db_flag).exit_code == 0
    ours = CliRunner().invoke(llm_cli, ["similar", "c", "r005", "-n", "5", "-d", str(db_path)])
    assert [json.loads(line)["id"] for line in ours.stdout.splitlines()] == [f["id"] for f in found]
    brute = Database(db_path)
    brute.execute("delete from vector_index_defaults")
    brute.conn.commit()
    plain = CliRunner().invoke(llm_cli, ["similar", "c", "r005", "-n", "5", "-d", str(db_path)])
    for a, b in zip(ours.stdout.splitlines(), plain.stdout.splitlines(), strict=True):
        assert json.loads(a)["id"] == json.loads(b)["id"]
        assert json.loads(a)["score"] == pytest.approx(json.loads(b)["score"], abs=1e-6)


@pytest.mark.parametrize(
    "options",
    [{}, {"kind": "ivfflat", "lists": 4}, {"halfvec": True}],
    ids=["hnsw", "ivfflat", "halfvec"],
)
def test_incremental_builds_keep_the_table_exactly_llms_rows(
    db, rows, pgvector_dsn, postgres_server, user_path, options
):
    index = Index.create(
        "ix", ["c"], db, backend="pgvector", options={"dsn_env": pgvector_dsn, **options}
    )
    index.build()
    assert stored_labels(postgres_server, index) == list(range(ROWS))
    fresh = clustered_vectors(6, 24, clusters=2, seed=9)
    write_embeddings(db, "c", ["new0", "new1", "new2"], fresh[:3], updated=2000)
    write_embeddings(db, "c", ["r001", "r002"], fresh[3:5], updated=2000)  # changed
    db.execute("delete from embeddings where id in ('r003', 'r004')")
    db.conn.commit()
    report = index.build()
    assert (report.added, report.deleted, report.rows) == (5, 2, ROWS + 1)
    labels = dict(db.execute("select id, label from vector_index_labels").fetchall())
    assert stored_labels(postgres_server, index) == sorted(labels.values())
    for query, position in ((fresh[3], "r001"), (fresh[0], "new0")):
        found = index.similar_by_vector(query, 5)
        assert found[0].id == position
        assert [e.id for e in found] == exact_ids(db, query, 5)
        # llm's score, not the float16 one, whatever the storage.
        assert found[0].score == pytest.approx(1.0, abs=1e-6)
    assert not {"r003", "r004"} & {e.id for e in index.similar_by_vector(rows[3], 50)}


def test_filters_fill_k_from_the_graph(db, rows, pgvector_dsn, user_path):
    # Small filters are scanned exactly by the plugin; half the rows go to
    # Postgres with an allow-list, which its iterative scan must fill.
    index = Index.create(
        "ix", ["c"], db, backend="pgvector", options={"dsn_env": pgvector_dsn, "ef_search": 16}
    )
    index.build()
    even = lambda id: int(id[1:]) % 2 == 0  # noqa: E731
    for query in clustered_vectors(5, 24, clusters=8, seed=11):
        found = index.similar_by_vector(query, 30, where={"even": True})
        assert len(found) == 30 and all(even(e.id) for e in found)
        truth = exact_ids(db, query, 30, keep=even)
        assert len({e.id for e in found} & set(truth)) >= 27


def test_drop_removes_its_table_and_only_that(db, rows, pgvector_dsn, postgres_server, user_path):
    index = Index.create("ix", ["c"], db, backend="pgvector", options={"dsn_env": pgvector_dsn})
    index.build()
    table = index.backend().describe()["pgvector_table"]
    postgres_server.sql("create table if not exists public.users (id int)")
    index.close()
    Index.drop(db, "ix")
    tables = {
        f"{schema}.{name}"
        for schema, name in postgres_server.sql(
            "select schemaname, tablename from pg_tables where schemaname <> 'pg_catalog'"
        )
    }
    assert table not in tables and "public.users" in tables


def test_a_crafted_table_name_is_never_used(db, rows, pgvector_dsn, postgres_server, user_path):
    index = Index.create("ix", ["c"], db, backend="pgvector", options={"dsn_env": pgvector_dsn})
    index.build()
    postgres_server.sql("create table if not exists public.users (id int)")
    saved = load_snapshot(index.path)
    index.close()
    save_snapshot(index.path, {}, meta={**saved.meta, "table": "users"})
    with pytest.raises(DamagedFiles, match="llm index build ix"):
        Index("ix", db).similar_by_vector(rows[0], 3)
    Index("ix", db).build()  # repairs by a full build; drops no one else's table
    assert postgres_server.sql("select count(*) from public.users") == [(0,)]
    assert Index("ix", db).similar_by_vector(rows[0], 1)[0].id == "r000"


def test_another_save_in_the_table_is_refused_then_repaired(
    db, rows, pgvector_dsn, postgres_server, user_path
):
    "Postgres committed a save our catalog never did (a kill between the two)."
    index = Index.create("ix", ["c"], db, backend="pgvector", options={"dsn_env": pgvector_dsn})
    index.build()
    name = index.backend().describe()["pgvector_table"].split(".")[1]
    index.close()
    close_indexes()  # (the process's open copy would go on answering)
    postgres_server.sql(
        f"update llm_vector_index.llm_vector_index_tables set version = 'x' where name = '{name}'"
    )
    with pytest.raises(DamagedFiles, match="another save"):
        Index("ix", db).similar_by_vector(rows[0], 3)
    Index("ix", db).build()
    assert Index("ix", db).similar_by_vector(rows[0], 1)[0].id == "r000"


@pytest.mark.parametrize(
    "options, message",
    [
        ({}, "needs the name of an environment variable"),
        ({"dsn_env": "NOT_SET_ANYWHERE"}, "NOT_SET_ANYWHERE (dsn_env) is not set"),
        ({"dsn_env": "A B"}, "must name an environment variable"),
        ({"dsn": "postgresql://u:p@h/d"}, "never stored in the database"),
        ({"dsn_env": "PGVECTOR_DSN", "kind": "flat"}, "kind must be one of hnsw, ivfflat"),
        ({"dsn_env": "PGVECTOR_DSN", "schema": "x; drop"}, "schema must be"),
        ({"dsn_env": "PGVECTOR_DSN", "m": 16, "ef_construction": 8}, "at least twice m"),
    ],
)
def test_bad_options_are_one_line_and_change_nothing(
    db_path, db, rows, pgvector_dsn, user_path, options, message
):
    before = snapshot(db_path)
    args = [f for name, value in options.items() for f in ("-o", name, value)]
    result = run("create", "pg", "c", "--backend", "pgvector", *args, "-d", db_path)
    assert result.exit_code == 1
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert snapshot(db_path) == before


def test_a_wrong_password_is_one_line_without_the_password(
    db_path, db, rows, postgres_server, user_path, monkeypatch
):
    monkeypatch.setenv("BAD_DSN", postgres_server.dsn_for("postgres", "wrong-secret"))
    before = snapshot(db_path)
    result = run(
        "create", "pg", "c", "--backend", "pgvector", "-o", "dsn_env", "BAD_DSN", "-d", db_path
    )
    assert result.exit_code == 1
    assert "the Postgres server in $BAD_DSN failed" in result.stderr
    assert "password authentication failed" in result.stderr
    assert "wrong-secret" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert snapshot(db_path) == before


def test_a_database_without_the_extension_is_one_line(
    db_path, db, rows, postgres_server, user_path, monkeypatch
):
    postgres_server.sql("drop role if exists plain")
    postgres_server.sql("create role plain login password 'plainpw'")
    if not postgres_server.sql("select 1 from pg_database where datname = 'noext'"):
        postgres_server.sql("create database noext")
    monkeypatch.setenv("PLAIN_DSN", postgres_server.dsn_for("plain", "plainpw", "noext"))
    before = snapshot(db_path)
    result = run(
        "create", "pg", "c", "--backend", "pgvector", "-o", "dsn_env", "PLAIN_DSN", "-d", db_path
    )
    assert result.exit_code == 1
    assert "has no pgvector extension in this database" in result.stderr
    assert "CREATE EXTENSION vector" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert snapshot(db_path) == before


def test_a_copied_database_is_refused_and_llm_similar_answers_by_brute_force(
    db_path, db, rows, pgvector_dsn, user_path, tmp_path
):
    index = Index.create(
        "ix", ["c"], db, backend="pgvector", default=True, options={"dsn_env": pgvector_dsn}
    )
    index.build()
    index.close()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    copied = elsewhere / "embeddings.db"
    copied.write_bytes(db_path.read_bytes())
    folder = "embeddings.db.vector-indexes"
    shutil.copytree(db_path.parent / folder, elsewhere / folder)
    with pytest.raises(NotApproved, match="pgvector server from \\$PGVECTOR_DSN"):
        Index("ix", Database(copied)).similar_by_vector(rows[0], 3)
    result = CliRunner().invoke(llm_cli, ["similar", "c", "r000", "-n", "2", "-d", str(copied)])
    assert result.exit_code == 0
    assert [json.loads(line)["id"] for line in result.stdout.splitlines()] == exact_ids(
        db, rows[0], 3
    )[1:]
    assert "llm index approve ix" in result.stderr


def test_a_server_that_is_down_then_back(db_path, db, rows, tmp_path, user_path, monkeypatch):
    from llm_vector_index.testing_postgres import postgres_server

    with postgres_server(tmp_path / "own-server") as server:
        monkeypatch.setenv("OWN_DSN", server.dsn)
        index = Index.create("ix", ["c"], db, backend="pgvector", options={"dsn_env": "OWN_DSN"})
        index.build()
        index.close()
        write_embeddings(db, "c", ["late"], rows[:1] * -1, updated=3000)
        server.stop("immediate")
        folder = db_path.parent / "embeddings.db.vector-indexes"
        state, files = catalog_state(db), snapshot(folder)
        for args in (["build", "ix"], ["similar", "ix", "r000"]):
            result = run(*args, "-d", db_path)
            assert result.exit_code == 1
            assert "the Postgres server in $OWN_DSN failed" in result.stderr
            assert len(result.stderr.strip().splitlines()) == 1
            assert catalog_state(db) == state and snapshot(folder) == files
        with pytest.raises(BackendUnavailable):
            Index("ix", db).similar_by_vector(rows[0], 3)
        server.start()
        assert run("build", "ix", "-d", db_path).exit_code == 0
        assert Index("ix", db).similar_by_vector(rows[0] * -1, 1)[0].id == "late"


@pytest.mark.parametrize("full", [True, False])
def test_a_server_that_dies_mid_build(db_path, db, rows, tmp_path, user_path, monkeypatch, full):
    """The server goes away after the rows are sent and before the save
    commits: one line, the catalog and the index's files as they were, the
    previous rows still in Postgres; once it is back, a build completes."""
    from llm_vector_index import faults
    from llm_vector_index.testing_postgres import postgres_server

    with postgres_server(tmp_path / "dying-server") as server:
        monkeypatch.setenv("OWN_DSN", server.dsn)
        Index.create("ix", ["c"], db, backend="pgvector", options={"dsn_env": "OWN_DSN"}).build()
        close_indexes()
        write_embeddings(db, "c", ["late"], rows[:1] * -1, updated=3000)
        folder = db_path.parent / "embeddings.db.vector-indexes"
        state, files = catalog_state(db), snapshot(folder)
        tables = server.sql("select name, version from llm_vector_index.llm_vector_index_tables")

        point = faults.point

        def die(name):
            if name == "scanned":
                server.stop("immediate")

        monkeypatch.setattr(faults, "point", die)
        with pytest.raises(BackendUnavailable) as failed:
            Index("ix", db).build(full=full)
        assert str(failed.value).startswith("the Postgres server in $OWN_DSN failed:")
        assert "\n" not in str(failed.value) and "llm-vector-index-test" not in str(failed.value)
        monkeypatch.setattr(faults, "point", point)
        close_indexes()
        assert catalog_state(db) == state and snapshot(folder) == files
        server.start()
        assert (
            server.sql("select name, version from llm_vector_index.llm_vector_index_tables")
            == tables
        )
        assert Index("ix", db).similar_by_vector(rows[0], 1)[0].id == "r000"  # the old rows
        close_indexes()
        assert Index("ix", db).build().rows == len(rows) + 1
        assert Index("ix", db).similar_by_vector(rows[0] * -1, 1)[0].id == "late"
        close_indexes()


def test_queries_in_the_building_process_hold_no_transaction(
    db, rows, pgvector_dsn, postgres_server
):
    """The process that built an index queries through the backend its
    incremental build saved (a connection that may write): no transaction,
    and so no lock on the table, outlives a query, or a full build's DROP of
    the old table (and VACUUM) would wait for as long as the process lives."""
    with Index.create(
        "ix", ["c"], db, backend="pgvector", options={"dsn_env": pgvector_dsn}, refresh="manual"
    ) as index:
        index.build()
        write_embeddings(db, "c", ["late"], rows[:1] * -1, updated=3000)
        index.build()
        assert index.similar_by_vector(rows[3], 1)[0].id == "r003"
        assert index.similar_by_vector(rows[4], 2, where={"even": True})[0].id == "r004"
        waiting = postgres_server.sql(
            "select count(*) from pg_stat_activity where application_name = "
            "'llm-vector-index' and state like 'idle in transaction%'"
        )
        assert waiting == [(0,)]
        assert index.build(full=True).rows == len(rows) + 1  # its DROP does not wait
        assert index.similar_by_vector(rows[0] * -1, 1)[0].id == "late"
    close_indexes()


@pytest.mark.parametrize("point", ["saved", "swapped", "committing", "committed"])
def test_a_full_build_killed_after_its_save_leaves_no_table_behind(
    db_path, db, rows, pgvector_dsn, postgres_server, point
):
    """Killed after Postgres committed the new table, the build leaves a
    folder (staging or retired) naming a table nothing else names; the next
    full build drops it, so the registry ends with the index's one table."""
    import os
    import subprocess
    import sys

    def tables():  # (the session's server holds other tests' tables too)
        if postgres_server.sql(f"select to_regclass('{registry}')")[0][0] is None:
            return set()
        return {row[0] for row in postgres_server.sql(f"select name from {registry}")}

    registry = "llm_vector_index.llm_vector_index_tables"
    others = tables()
    Index.create("ix", ["c"], db, backend="pgvector", options={"dsn_env": pgvector_dsn}).build()
    close_indexes()
    assert len(tables() - others) == 1
    killed = subprocess.run(
        [sys.executable, "-m", "llm", "index", "build", "ix", "--full", "-d", str(db_path)],
        env={**os.environ, "LLM_VECTOR_INDEX_KILL_AT": point},
        capture_output=True,
        text=True,
    )
    assert killed.returncode == -9, killed.stderr
    assert len(tables() - others) == 2  # the new one, and the old
    with Index("ix", db) as index:
        index.build(full=True)
        current = index.backend().describe()["pgvector_table"].split(".")[1]
    assert tables() - others == {current}
    assert Index("ix", db).similar_by_vector(rows[5], 1)[0].id == "r005"
    close_indexes()


def test_a_streaming_replica_answers_and_follows_the_primarys_builds(
    db_path, db, rows, tmp_path, user_path, monkeypatch
):
    "The read side of outgrowing one machine: queries from a hot standby."
    from llm_vector_index.testing_postgres import postgres_server, streaming_replica

    with (
        postgres_server(tmp_path / "primary") as primary,
        streaming_replica(primary, tmp_path / "replica") as replica,
    ):
        monkeypatch.setenv("PG_DSN", primary.dsn)
        Index.create("ix", ["c"], db, backend="pgvector", options={"dsn_env": "PG_DSN"}).build()
        close_indexes()
        # This machine points the same variable at the replica.
        monkeypatch.setenv("PG_DSN", replica.dsn)
        assert replica.sql("select pg_is_in_recovery()") == [(True,)]
        found = [e.id for e in Index("ix", db).similar_by_vector(rows[5], 5)]
        assert found == exact_ids(db, rows[5], 5)
        # A build on the primary reaches the replica's queries.
        write_embeddings(db, "c", ["late"], -rows[:1], updated=3000)
        monkeypatch.setenv("PG_DSN", primary.dsn)
        close_indexes()
        Index("ix", db).build()
        close_indexes()
        monkeypatch.setenv("PG_DSN", replica.dsn)
        assert Index("ix", db).similar_by_vector(-rows[0], 1)[0].id == "late"
        # A build against the replica is one line and changes nothing.
        db.execute("delete from embeddings where id = 'late'")
        db.conn.commit()
        folder = db_path.parent / "embeddings.db.vector-indexes"
        state, files = catalog_state(db), snapshot(folder)
        result = run("build", "ix", "-d", db_path)
        assert result.exit_code == 1
        assert "read-only transaction" in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1
        assert catalog_state(db) == state and snapshot(folder) == files
