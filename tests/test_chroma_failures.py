"""A real Chroma server that is down, or dies mid-build or mid-migration:
one clear line, the catalog unchanged, and a re-run after the server is back
completes. Migration into a directory that cannot be used, and of rows whose
vectors cannot be ranked."""

from contextlib import ExitStack

import numpy as np
import pytest
from click.testing import CliRunner
from llm.cli import cli as llm_cli

from llm_vector_index import BackendUnavailable, Index, sync
from llm_vector_index.cli import index_group
from llm_vector_index.migrate import migrate_to_chroma
from llm_vector_index.testing import chroma_server, clustered_vectors, write_embeddings

from .conftest import snapshot


def run(*args):
    return CliRunner().invoke(index_group, [str(arg) for arg in args])


class Server:
    "A Chroma server this test can stop and start again on the same port and data."

    def __init__(self, directory):
        self.directory, self.port, self.stack = directory, None, None

    def start(self):
        self.stack = ExitStack()
        info = self.stack.enter_context(chroma_server(self.directory, port=self.port))
        self.port = info["port"]
        return self

    def stop(self):
        self.stack.close()


@pytest.fixture
def server(tmp_path):
    server = Server(tmp_path / "chroma-server").start()
    yield server
    server.stop()


@pytest.fixture
def rows(db):
    vectors = clustered_vectors(300, 16, clusters=5, seed=6)
    write_embeddings(db, "c", [f"r{i:03d}" for i in range(300)], vectors, updated=1000)
    return vectors


def catalog_state(db):
    return (
        db.execute("select generation, rows, built from vector_indexes").fetchall(),
        db.execute("select count(*) from vector_index_labels").fetchone()[0],
    )


def test_drop_while_the_server_is_down(db_path, db, rows, server):
    Index.create(
        "ix",
        ["c"],
        db,
        backend="chroma",
        default=True,
        options={"host": "127.0.0.1", "port": server.port},
    ).build()
    server.stop()
    folder = db_path.parent / "embeddings.db.vector-indexes"
    before = snapshot(db_path, folder)
    result = run("drop", "ix", "-d", db_path)
    assert result.exit_code == 1
    assert f"Cannot reach Chroma server at 127.0.0.1:{server.port}" in result.stderr
    assert "index ix was not dropped" in result.stderr and "--keep-remote" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert snapshot(db_path, folder) == before
    # llm's own command answers by brute force, saying why.
    similar = CliRunner().invoke(llm_cli, ["similar", "c", "r001", "-n", "3", "-d", str(db_path)])
    assert similar.exit_code == 0 and len(similar.stdout.splitlines()) == 3
    assert "Cannot reach Chroma server" in similar.stderr
    result = run("drop", "ix", "--keep-remote", "-d", db_path)
    assert result.exit_code == 0
    assert "its data on the server was left there" in result.stderr
    assert not (folder / "ix").exists()


def test_server_dies_mid_build_then_comes_back(db_path, db, rows, server, monkeypatch):
    monkeypatch.setattr(sync, "BATCH_SIZE", 50)
    index = Index.create(
        "ix", ["c"], db, backend="chroma", options={"host": "127.0.0.1", "port": server.port}
    )
    index.build()
    write_embeddings(db, "c", [f"new{i}" for i in range(120)], -rows[:120])
    before = catalog_state(db)

    def kill_after_first_batch(done, total):
        if server.stack is not None:
            server.stop()
            server.stack = None

    with pytest.raises(BackendUnavailable, match=f"Chroma server at 127.0.0.1:{server.port}"):
        index.build(progress=kill_after_first_batch)
    assert catalog_state(db) == before
    result = run("build", "ix", "-d", db_path)  # still down: one line
    assert result.exit_code == 1 and len(result.stderr.strip().splitlines()) == 1
    assert catalog_state(db) == before
    server.start()
    report = Index("ix", db).build()
    assert report.rows == 420
    assert Index("ix", db).similar_by_vector(-rows[5], 1)[0].id == "new5"
    # A full rebuild that dies part-way also leaves the index as it was.
    server.stop()
    server.stack = None
    result = run("build", "ix", "--full", "-d", db_path)
    assert result.exit_code == 1 and "Cannot reach Chroma server" in result.stderr
    server.start()
    assert Index("ix", db).similar_by_vector(-rows[5], 1)[0].id == "new5"


def test_server_dies_mid_migration_then_comes_back(db, rows, server):
    killed = []

    def kill_once(done, total):
        if not killed:
            server.stop()
            killed.append(done)

    with pytest.raises(BackendUnavailable, match=r"failed|Cannot reach"):
        migrate_to_chroma(
            db, ["c"], host="127.0.0.1", port=server.port, batch_size=50, progress=kill_once
        )
    assert (
        not db["vector_index_migrations"].exists()
        or db.execute("select count(*) from vector_index_migrations").fetchone()[0] == 0
    )
    server.start()
    report = migrate_to_chroma(db, ["c"], host="127.0.0.1", port=server.port, batch_size=50)
    assert (report.llm_rows, report.chroma_rows, report.mismatches) == (300, 300, [])


def test_migrate_to_a_directory_that_cannot_be_used(db_path, rows, tmp_path):
    before = snapshot(db_path)
    for path in ("/proc/llm-vector-index-test", f"{db_path}/below-a-file"):
        result = run("migrate-chroma", "c", "--path", path, "-d", db_path)
        assert result.exit_code == 1, result.output
        assert result.stderr.startswith(f"Error: Cannot use {path} as a Chroma directory")
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert snapshot(db_path) == before


def test_migrate_holds_back_unrankable_rows(db_path, db, rows, tmp_path):
    bad = np.ones((2, 16), dtype=np.float32)
    bad[0, 3] = np.nan
    bad[1] = 0
    write_embeddings(db, "c", ["nan", "zeros"], bad)
    result = run("migrate-chroma", "c", "--path", tmp_path / "chroma", "-d", db_path)
    assert result.exit_code == 0, result.output
    assert "300 sent" in result.stderr
    assert "Held back 2 rows with NaN, infinite, all-zero or odd-width vectors" in result.stderr
    assert "302 rows in llm, 300 in Chroma" in result.stderr
