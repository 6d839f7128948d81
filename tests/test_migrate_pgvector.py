"""Migration into a Postgres table with pgvector, on a real server, read back
with a separate psycopg connection."""

import json
import os
import subprocess
import sys

import numpy as np
import psycopg
import pytest
from click.testing import CliRunner

from llm_vector_index.cli import index_group
from llm_vector_index.errors import VectorIndexError
from llm_vector_index.migrate_pgvector import derive_table_name, migrate_to_pgvector
from llm_vector_index.testing import clustered_vectors, write_embeddings

from .conftest import snapshot, write_rich_collection

METADATAS = [
    {"title": "plain", "n": 3, "score": 0.5, "ok": True},
    {"nested": {"a": [1, 2, {"b": None}]}, "tags": ["x", "y"], "empty": [], "none": None},
    None,
    {"big": 2**70, "float": 1e-300, "obj": {}, "ü": "ünïcødé 🦙"},
    [1, "not an object"],
    "just a string",
]


@pytest.fixture
def rich_collection(db):
    "Text, binary and empty content, awkward metadata, unicode ids."
    ids, vectors = write_rich_collection(db, METADATAS)
    db.execute("update embeddings set updated = null where id = 'doc-3'")
    db.conn.commit()
    return ids, vectors


@pytest.fixture
def pg(postgres_server, pgvector_dsn):
    "A psycopg connection of our own, and a clean public schema afterwards."
    with psycopg.connect(postgres_server.dsn, autocommit=True) as connection:
        yield connection
        connection.execute("drop schema public cascade")
        connection.execute("create schema public")
        connection.execute("drop schema if exists search cascade")


def table_rows(pg, table="rich"):
    return {
        (row[0], row[1]): row[2:]
        for row in pg.execute(
            "select collection, id, embedding::text, content, content_blob, metadata, updated "
            f"from {table}"
        )
    }


def llm_rows(db, collection="rich"):
    return {
        (collection, row[0]): row[1:]
        for row in db.execute(
            "select e.id, e.embedding, e.content, e.content_blob, e.metadata, e.updated "
            "from embeddings e join collections c on c.id = e.collection_id where c.name = ?",
            [collection],
        )
    }


def check_faithful(db, pg, collection="rich", table="rich"):
    stored = table_rows(pg, table)
    expected = llm_rows(db, collection)
    assert set(expected) <= set(stored)
    for key, (blob, content, content_blob, metadata, updated) in expected.items():
        vector, got_content, got_blob, got_metadata, got_updated = stored[key]
        # float32 exactly: the same bytes llm stored
        assert np.array(vector[1:-1].split(","), dtype="<f4").tobytes() == blob
        assert got_content == content
        assert (bytes(got_blob) if got_blob is not None else None) == content_blob
        assert got_metadata == (json.loads(metadata) if metadata is not None else None)
        assert got_updated == updated


def migrate(db_path, *args, dsn_env="PGVECTOR_DSN"):
    return CliRunner().invoke(
        index_group,
        ["migrate-pgvector", *args, "--dsn-env", dsn_env, "-d", str(db_path)],
        catch_exceptions=False,
    )


def test_migration_is_faithful_and_queryable_with_plain_sql(db, db_path, rich_collection, pg):
    result = migrate(db_path, "rich")
    assert result.exit_code == 0, result.output
    assert "Migrated to Postgres table public.rich: 300 sent, 0 deleted" in result.stderr
    assert "HNSW index" in result.stderr
    assert "Verified: 300 rows in llm, 300 in Postgres, 20 sampled rows identical" in result.stderr
    check_faithful(db, pg)
    assert pg.execute("select metadata->>'title' from rich where id = 'doc-0'").fetchone() == (
        "plain",
    )
    # The HNSW index answers llm's cosine ranking, queried as any client would.
    _, vectors = rich_collection
    query = "[" + ",".join(map(str, vectors[7].tolist())) + "]"
    pg.execute("set enable_seqscan = off")  # 300 rows: the planner would rather scan
    plan = pg.execute(
        "explain select id from rich order by embedding <=> %s::vector limit 5", [query]
    ).fetchall()
    assert "rich_embedding_idx" in str(plan)
    pg.execute("reset enable_seqscan")
    found = pg.execute(
        "select id, 1 - (embedding <=> %s::vector) from rich order by embedding <=> %s::vector "
        "limit 1",
        [query, query],
    ).fetchone()
    assert found[0] == "doc-7" and found[1] == pytest.approx(1.0, abs=1e-6)
    assert pg.execute(
        "select watermark is not null, resume_after, rows from llm_vector_index_migrations"
    ).fetchall() == [(True, None, 300)]


def test_reruns_send_only_changes_and_sync_deletes(db, db_path, rich_collection, pg):
    assert migrate(db_path, "rich").exit_code == 0
    again = migrate(db_path, "rich")
    assert "0 sent, 0 deleted" in again.stderr and "HNSW index" not in again.stderr
    # Changed metadata (a key dropped), changed vector, a new row, a deleted row.
    db.execute(
        "update embeddings set metadata = '{\"n\": 1}', updated = updated + 100000 "
        "where id = 'doc-0'"
    )
    db.execute(
        "update embeddings set embedding = (select embedding from embeddings where id = "
        "'doc-9'), updated = updated + 100000 where id = 'doc-8'"
    )
    db.execute("delete from embeddings where id = 'doc-4'")
    db.conn.commit()
    write_embeddings(
        db, "rich", ["new-1"], clustered_vectors(1, 24, seed=3), metadatas=[{"x": 1}], updated=None
    )
    result = migrate(db_path, "rich")
    assert "3 sent, 0 deleted" in result.stderr, result.stderr
    stored = table_rows(pg)
    assert stored[("rich", "doc-0")][3] == {"n": 1}  # replaced, not merged
    assert ("rich", "doc-4") in stored  # without --sync-deletes it stays
    result = migrate(db_path, "rich", "--sync-deletes")
    assert "0 sent, 1 deleted" in result.stderr, result.stderr
    assert "Verified: 300 rows in llm, 300 in Postgres" in result.stderr
    check_faithful(db, pg)
    assert ("rich", "doc-4") not in table_rows(pg)


def test_several_collections_share_a_table_keyed_by_collection(db, db_path, pg):
    vectors = clustered_vectors(40, 16, seed=1)
    write_embeddings(db, "a", [f"r{i}" for i in range(20)], vectors[:20])
    write_embeddings(db, "b", [f"r{i}" for i in range(20)], vectors[20:])
    result = migrate(db_path, "a", "b", "--schema", "search", "--table", "both")
    assert result.exit_code == 0, result.output
    assert pg.execute(
        "select collection, count(*) from search.both group by 1 order by 1"
    ).fetchall() == [
        ("a", 20),
        ("b", 20),
    ]
    check_faithful(db, pg, "a", "search.both")
    check_faithful(db, pg, "b", "search.both")
    assert derive_table_name(["a", "b"]) == "a_b"
    assert derive_table_name(["My Docs!", "2024"]) == "my_docs_2024"
    assert derive_table_name(["2024"]) == "llm_2024"
    assert derive_table_name(["日本"]) == "llm"


def test_rows_postgres_cannot_hold_are_held_back_and_counted(db, db_path, pg):
    vectors = clustered_vectors(10, 8, seed=2)
    write_embeddings(db, "odd", [f"r{i}" for i in range(10)], vectors)
    assert migrate(db_path, "odd").exit_code == 0
    zero = np.zeros(8, dtype="<f4").tobytes()
    nan = np.full(8, np.nan, dtype="<f4").tobytes()
    for id, column, value in [
        ("r0", "embedding", nan),
        ("r1", "embedding", zero),
        ("r2", "embedding", b"\x00\x00\x80\x3f"),
        ("r3", "content", "nul \x00 inside"),
        ("r4", "metadata", '{"x": NaN}'),
        ("r5", "metadata", '{"x": "\\u0000"}'),
        ("r6", "metadata", '{"x": "\\ud800"}'),
        ("r7", "metadata", '{"x": "\\ud83d\\ude00"}'),  # a pair: fine
    ]:
        db.execute(
            f"update embeddings set {column} = ?, updated = updated + 100000 where id = ?",
            [value, id],
        )
    db.conn.commit()
    result = migrate(db_path, "odd", "--sync-deletes")
    assert result.exit_code == 0, result.output
    assert "Held back 3 rows with a vector that cannot be ranked" in result.stderr
    assert "Held back 1 rows with metadata with a lone surrogate" in result.stderr
    assert "Held back 1 rows with metadata with a NUL character" in result.stderr
    assert "Verified: 10 rows in llm, 3 in Postgres" in result.stderr
    # The old versions of rows that can no longer be copied do not stay behind.
    assert {id for _, id in table_rows(pg, "odd")} == {"r7", "r8", "r9"}
    assert table_rows(pg, "odd")[("odd", "r7")][3] == {"x": "😀"}


def test_an_interrupted_migration_continues_where_it_stopped(db, db_path, pg, postgres_server):
    write_embeddings(db, "c", [f"r{i:03d}" for i in range(400)], clustered_vectors(400, 16, seed=4))
    env = {**os.environ, "LLM_VECTOR_INDEX_KILL_AT": "migrate-sent"}
    killed = subprocess.run(
        [
            sys.executable,
            "-m",
            "llm",
            "index",
            "migrate-pgvector",
            "c",
            "--dsn-env",
            "PGVECTOR_DSN",
            "--batch-size",
            "150",
            "-d",
            str(db_path),
        ],
        env=env,
        capture_output=True,
        text=True,
    )
    assert killed.returncode == -9, killed.stderr
    assert pg.execute("select count(*) from c").fetchone() == (150,)
    assert pg.execute("select resume_after from llm_vector_index_migrations").fetchone() == (
        "r149",
    )
    result = migrate(db_path, "c", "--batch-size", "150")
    assert "250 sent" in result.stderr and "Continued an interrupted run of c" in result.stderr
    assert "Verified: 400 rows in llm, 400 in Postgres" in result.stderr
    check_faithful(db, pg, "c", "c")


@pytest.mark.parametrize(
    "args, environment, message",
    [
        (["nope"], {}, "Collection 'nope' does not exist"),
        (["rich", "--table", "Bad-Name"], {}, "Invalid table name 'Bad-Name'"),
        (["rich", "--schema", "x;drop"], {}, "Invalid schema name 'x;drop'"),
        (["rich", "--table", "llm_vector_index_migrations"], {}, "the migrations' own registry"),
        (["rich", "--batch-size", "0"], {}, "batch size"),
        (
            ["rich"],
            {"PGVECTOR_DSN": None},
            "Environment variable PGVECTOR_DSN (dsn_env) is not set",
        ),
        (
            ["rich"],
            {"PGVECTOR_DSN": "postgresql://postgres@127.0.0.1:1/postgres"},
            "the Postgres server in $PGVECTOR_DSN failed: connection",
        ),
        (["rich"], {"PGVECTOR_DSN": "bad-password"}, "password authentication failed"),
    ],
)
def test_bad_input_is_one_line_and_changes_nothing(
    db, db_path, rich_collection, pg, postgres_server, monkeypatch, args, environment, message
):
    for name, value in environment.items():
        if value is None:
            monkeypatch.delenv(name)
        elif value == "bad-password":
            monkeypatch.setenv(name, postgres_server.dsn_for("postgres", "wrong"))
        else:
            monkeypatch.setenv(name, value)
    before = snapshot(db_path)
    tables = pg.execute("select tablename from pg_tables where schemaname = 'public'").fetchall()
    result = CliRunner().invoke(
        index_group, ["migrate-pgvector", *args, "--dsn-env", "PGVECTOR_DSN", "-d", str(db_path)]
    )
    assert result.exit_code != 0
    assert message in result.output, result.output
    assert "Traceback" not in result.output and "postgres:llm" not in result.output
    assert snapshot(db_path) == before
    assert (
        pg.execute("select tablename from pg_tables where schemaname = 'public'").fetchall()
        == tables
    )


def test_a_connection_string_in_place_of_a_variable_is_refused(db_path, rich_collection, pg):
    before = snapshot(db_path)
    result = migrate(db_path, "rich", dsn_env="postgresql://postgres:secret@127.0.0.1/x")
    assert result.exit_code == 1
    assert "--dsn-env names the environment variable holding the connection string" in (
        result.output
    )
    assert "secret" not in result.output and snapshot(db_path) == before


def test_a_table_the_plugin_did_not_make_is_never_written(db, db_path, rich_collection, pg):
    pg.execute("create table rich (collection text, id text, note text)")
    pg.execute("insert into rich values ('rich', 'doc-0', 'mine')")
    result = migrate(db_path, "rich", "--sync-deletes")
    assert result.exit_code == 1
    assert "Table public.rich exists and was not made by llm-vector-index" in result.output
    assert pg.execute("select * from rich").fetchall() == [("rich", "doc-0", "mine")]


def test_other_dimensions_and_a_running_migration_are_refused(
    db, db_path, rich_collection, pg, postgres_server
):
    assert migrate(db_path, "rich").exit_code == 0
    write_embeddings(db, "wide", ["w"], clustered_vectors(1, 32, seed=1))
    result = migrate(db_path, "wide", "--table", "rich")
    assert result.exit_code == 1
    assert "Table public.rich holds 24-dimensional vectors; these collections have 32" in (
        result.output
    )
    with psycopg.connect(postgres_server.dsn, autocommit=True) as other:
        other.execute(
            "select pg_advisory_lock(hashtextextended('llm-vector-index migrate public.rich', 0))"
        )
        result = migrate(db_path, "rich")
        assert result.exit_code == 1
        assert "Another migration into public.rich is running" in result.output
    assert pg.execute("select count(*) from rich").fetchone() == (300,)


def test_a_server_that_dies_mid_migration_is_one_line_and_a_rerun_completes(
    db, db_path, tmp_path, monkeypatch
):
    from llm_vector_index import faults
    from llm_vector_index.testing_postgres import postgres_server as run_server

    write_embeddings(db, "c", [f"r{i:03d}" for i in range(300)], clustered_vectors(300, 16, seed=5))
    with run_server(tmp_path / "dying") as server:
        monkeypatch.setenv("DYING_DSN", server.dsn)
        calls = []

        def stop_after_first_batch(name):
            calls.append(name)
            if name == "migrate-sent" and len(calls) == 1:
                server.stop("immediate")

        monkeypatch.setattr(faults, "point", stop_after_first_batch)
        with pytest.raises(VectorIndexError) as failed:
            migrate_to_pgvector(db, ["c"], dsn_env="DYING_DSN", batch_size=100)
        assert str(failed.value).startswith("the Postgres server in $DYING_DSN failed:")
        assert "\n" not in str(failed.value)
        server.start()
        report = migrate_to_pgvector(db, ["c"], dsn_env="DYING_DSN", batch_size=100)
        assert report.resumed == ["c"] and report.sent == 200
        assert report.postgres_rows == 300 and report.sampled == 20


def test_the_examples_in_migrate_md_run_as_written(tmp_path, postgres_server, pg):
    """docs/migrate.md's pgvector section on a fresh llm user directory: its
    shell blocks in order (psql on PATH, as a user has it), then its SQL, as a
    service and as the read-only role it grants."""
    import re

    from llm_vector_index.testing_postgres import _binaries

    from .test_readme import README, code_blocks, new_user, quick_start

    env, work = new_user(tmp_path)
    env["PGVECTOR_DSN"] = postgres_server.dsn
    env["PATH"] = f"{env['PATH']}:{_binaries()}"
    page = (README.parent / "docs" / "migrate.md").read_text()
    section = tmp_path / "section.md"
    section.write_text(page[page.index("(migrate-pgvector)=") :])
    blocks = [code for language, code in code_blocks(section) if language == "bash"]
    assert len(blocks) == 2
    outputs = []
    for code in [quick_start()[0], *blocks]:
        result = subprocess.run(
            ["bash", "-e", "-c", code], env=env, cwd=work, capture_output=True, text=True
        )
        assert result.returncode == 0 and "Traceback" not in result.stderr, (code, result.stderr)
        outputs.append(result.stdout)
    printed = re.findall(r"^ (\S+\.md) +\| +(0\.\d{3})$", outputs[-1], flags=re.M)
    assert len(printed) == 5, outputs[-1]
    found = [id for id, _ in printed]
    query = subprocess.run(
        ["llm", "embed", "-m", "minilm", "-c", "vector search"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    statements = re.search(r"```sql\n(.*?)```", section.read_text(), flags=re.S).group(1)
    grants = re.findall(r"```sql\n(create role.*?)```", section.read_text(), flags=re.S)[0]
    try:
        for statement in grants.split(";")[:-1]:
            pg.execute(statement)
        reader = postgres_server.dsn_for("search_reader", "...")
        with psycopg.connect(reader, autocommit=True) as service:
            results = []
            for statement in statements.split(";")[:-1]:
                cursor = service.execute(statement.replace("$1", f"'{query}'::vector"))
                results.append(cursor.fetchall() if cursor.description else None)
            nearest, filtered = [rows for rows in results if rows is not None]
            assert len(nearest) == 10 and [row[1] for row in nearest[:5]] == found
            assert [f"{row[4]:.3f}" for row in nearest[:5]] == [score for _, score in printed]
            assert filtered == []  # no row of these docs has metadata kind = note
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                service.execute("delete from docs")
    finally:
        pg.execute("drop owned by search_reader")
        pg.execute("drop role search_reader")
