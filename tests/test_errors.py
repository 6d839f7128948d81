"""Bad input and hostile conditions: one clear line (or one VectorIndexError
in Python), never a traceback, and nothing changed."""

import os
import sqlite3
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlite_utils import Database

from llm_vector_index import DimensionMismatch, Index, VectorIndexError
from llm_vector_index.cli import index_group
from llm_vector_index.testing import clustered_vectors, write_embeddings

from .conftest import snapshot


def run(*args):
    return CliRunner().invoke(index_group, [str(arg) for arg in args])


@pytest.fixture
def built(db_path, db, vectors_collection):
    Index.create("ix", ["vecs"], db, backend="exact").build()
    return db_path


def folder_of(db_path):
    return db_path.parent / "embeddings.db.vector-indexes"


@pytest.mark.parametrize(
    "vector,message",
    [
        ("a string", "must be a sequence of numbers, not text"),
        (b"bytes", "must be a sequence of numbers, not text"),
        ([[1, 2], [3]], "must be a flat sequence of numbers"),
        ({"a": 1}, "must be a flat sequence of numbers"),
        ([[1.0] * 12, [1.0] * 12], "must be a flat sequence of numbers"),  # nested: not flattened
        ([True] * 24, "must be a flat sequence of numbers"),
        ([10**400] + [1.0] * 23, "must be a flat sequence of numbers"),
        (["1.0"] * 24, "must be a flat sequence of numbers"),
        ([float("nan")] * 24, "NaN or infinite"),
        ([1.0] * 23 + [float("inf")], "NaN or infinite"),
        ([1e39] * 24, "NaN or infinite"),  # overflows float32
        ([0.0] * 24, "all zeros"),
        ([1.0] * 5, "5 dimensions"),
    ],
)
def test_bad_query_vectors_are_refused(built, db, vector, message):
    index = Index("ix", db)
    with pytest.raises(DimensionMismatch, match=message):
        index.similar_by_vector(vector)
    assert isinstance(DimensionMismatch("x"), VectorIndexError)


def test_collection_not_covered_is_an_error_not_the_index_rows(built, db):
    write_embeddings(db, "other", ["o1"], clustered_vectors(1, 24))
    index = Index("ix", db)
    vector = clustered_vectors(1, 24)[0]
    with pytest.raises(VectorIndexError, match="Index 'ix' does not cover collection 'other'"):
        index.similar_by_vector(vector, collection="other")
    import llm

    with pytest.raises(VectorIndexError, match="does not cover collection 'other'"):
        llm.Collection("other", db).similar_by_vector(vector, index="ix")
    assert [e.id for e in index.similar_by_vector(vector, 3, collection="vecs")]


def test_not_a_sqlite_file(tmp_path):
    path = tmp_path / "random.db"
    path.write_bytes(os.urandom(4096))
    before = snapshot(path)
    for command in (
        ["list"],
        ["create", "x", "c"],
        ["build", "x"],
        ["drop", "x"],
        ["default", "c"],
        ["similar", "x", "1"],
    ):
        result = run(*command, "-d", path)
        assert result.exit_code == 1
        assert result.stderr.startswith(f"Error: Cannot read {path} as a SQLite database")
        assert len(result.stderr.strip().splitlines()) == 1
    assert snapshot(path) == before


def test_read_only_connection_refuses_to_build_and_changes_nothing(built, vectors_collection):
    _ids, vectors = vectors_collection
    write_embeddings(Database(built), "vecs", ["new"], vectors[:1])
    before = snapshot(built, folder_of(built))
    connection = sqlite3.connect(f"file:{built}?mode=ro", uri=True)
    index = Index("ix", Database(connection))
    with pytest.raises(
        VectorIndexError, match="Cannot build index 'ix': attempt to write a readonly"
    ):
        index.build()
    assert snapshot(built, folder_of(built)) == before


def test_files_follow_the_umask(db_path, db, vectors_collection):
    old = os.umask(0o002)
    try:
        Index.create("ix", ["vecs"], db, backend="faiss").build()
    finally:
        os.umask(old)
    modes = {
        path.name: stat.S_IMODE(path.stat().st_mode)
        for path in (folder_of(db_path) / "ix").iterdir()
    }
    assert modes["manifest.json"] == modes["generation"] == 0o664, modes
    assert set(modes.values()) == {0o664}, modes


# -- as a user who may not write: a real read-only file, not a mock ------------


def other_user_prefix() -> list[str] | None:
    "Run as nobody when we are root (root writes read-only files); None if impossible."
    if os.geteuid() != 0:
        return []
    probe = subprocess.run(
        [
            "setpriv",
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            sys.executable,
            "-c",
            "import llm_vector_index",
        ],
        capture_output=True,
    )
    return (
        ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
        if probe.returncode == 0
        else None
    )


@pytest.fixture
def shared_place():
    "A folder every user can reach (pytest's tmp is private to root)."
    place = Path(tempfile.mkdtemp(prefix="llm-vi-ro-"))
    place.chmod(0o777)
    yield place
    subprocess.run(["chmod", "-R", "u+w", str(place)])
    subprocess.run(["rm", "-rf", str(place)])


def run_as_reader(place, *args):
    prefix = other_user_prefix()
    if prefix is None:
        pytest.skip("cannot run a command as another user here")
    environment = {**os.environ, "LLM_USER_PATH": str(place / "user")}
    return subprocess.run(
        [*prefix, sys.executable, "-m", "llm", "index", *map(str, args)],
        capture_output=True,
        text=True,
        env=environment,
    )


@pytest.mark.parametrize("readonly", ["database", "folder"])
@pytest.mark.parametrize(
    "command",
    [
        ["build", "ix"],
        ["build", "ix", "--full"],
        ["create", "new", "vecs"],
        ["drop", "ix"],
        ["default", "vecs", "ix"],
    ],
)
def test_read_only_database_or_folder(built, vectors_collection, shared_place, readonly, command):
    _ids, vectors = vectors_collection
    write_embeddings(Database(built), "vecs", ["new"], vectors[:1])  # so build has work
    (shared_place / "user").mkdir(mode=0o777)
    database = shared_place / "embeddings.db"
    database.write_bytes(built.read_bytes())
    folder = shared_place / "embeddings.db.vector-indexes"
    subprocess.run(["cp", "-r", str(folder_of(built)), str(folder)], check=True)
    subprocess.run(["chmod", "-R", "a+rX", str(shared_place)], check=True)
    if readonly == "database":
        database.chmod(0o444)
        folder.chmod(0o777)
        (folder / "ix").chmod(0o777)
    else:
        database.chmod(0o666)
        subprocess.run(["chmod", "-R", "a-w", str(folder)], check=True)
    before = snapshot(database, folder)
    result = run_as_reader(shared_place, *command, "-d", database)
    if readonly == "folder" and command[0] in ("create", "default"):
        assert result.returncode == 0, result.stderr  # they write only the database
        return
    assert result.returncode == 1, result.stderr
    assert result.stderr.startswith("Error: "), result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert snapshot(database, folder) == before
