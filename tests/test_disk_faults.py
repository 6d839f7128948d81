"""A full disk and a read-only mount, for real: a tmpfs of a few megabytes
filled up, and a read-only bind mount (both need root, which the test
machines give; elsewhere these tests skip). A build that cannot write says
one line and leaves the last build intact; a query whose refresh cannot
write answers from the last build, saying it is behind."""

import json
import os
import subprocess

import pytest
from sqlite_utils import Database

from llm_vector_index import Index
from llm_vector_index.testing import clustered_vectors, write_embeddings

from .conftest import snapshot

BACKENDS = ["exact", "faiss", "hnswlib"]


def mount(*args):
    result = subprocess.run(["mount", *map(str, args)], capture_output=True, text=True)
    if result.returncode != 0:
        pytest.skip(f"cannot mount here: {result.stderr.strip()}")


def unmount(path):
    from llm_vector_index import close_indexes

    close_indexes()  # this process's open files on the mount
    subprocess.run(["umount", "--lazy", str(path)], check=True)


class Result:
    "What a command printed and returned (the shape of subprocess's)."

    def __init__(self, invoked):
        self.returncode, self.stdout, self.stderr = (
            invoked.exit_code,
            invoked.stdout,
            invoked.stderr,
        )


def llm(db_path, *args):
    "llm's own command line, in this process (llm similar, llm index ...)."
    from click.testing import CliRunner
    from llm.cli import cli as llm_cli

    from llm_vector_index import index as index_module
    from llm_vector_index.cli import index_group

    index_module._warned.clear()  # a stale index is said once per process: each command is one
    # (In tests llm loads no plugins, so its command line has no index group.)
    command, args = (index_group, args[1:]) if args[0] == "index" else (llm_cli, args)
    return Result(CliRunner().invoke(command, [*map(str, args), "-d", str(db_path)]))


def setup_index(db_path, backend):
    db = Database(db_path)
    vectors = clustered_vectors(3000, 64, clusters=8, seed=1)
    write_embeddings(db, "vecs", [f"v{i:04d}" for i in range(3000)], vectors)
    Index.create("ix", ["vecs"], db, backend=backend, default=True).build()
    # Rows the next build must add: a query would build first.
    write_embeddings(
        db,
        "vecs",
        [f"m{i:04d}" for i in range(1000)],
        clustered_vectors(1000, 64, clusters=8, seed=2),
    )
    db.conn.close()


def lines(output):
    return [json.loads(line) for line in output.splitlines()]


@pytest.fixture
def small_disk(tmp_path):
    disk = tmp_path / "disk"
    disk.mkdir()
    mount("-t", "tmpfs", "-o", "size=16m", "tmpfs", disk)
    yield disk
    unmount(disk)


def fill(disk, leave=64 * 1024):
    "Fill the disk but for ``leave`` bytes: SQLite still commits, index files do not fit."
    stats = os.statvfs(disk)
    with open(disk / "filler", "wb") as filler:
        filler.write(b"\0" * (stats.f_bavail * stats.f_frsize - leave))


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_full_disk(small_disk, backend):
    db_path = small_disk / "embeddings.db"
    setup_index(db_path, backend)
    folder = small_disk / "embeddings.db.vector-indexes"
    fill(small_disk)
    before = snapshot(folder)
    for command in (["build", "ix"], ["build", "ix", "--full"]):
        result = llm(db_path, "index", *command)
        assert result.returncode == 1, result.stderr
        assert result.stderr.startswith("Error: Cannot build index 'ix': "), result.stderr
        assert len(result.stderr.splitlines()) == 1, result.stderr
        assert snapshot(folder) == before  # the last build, intact
    for command in (["index", "similar", "ix"], ["similar", "vecs"]):
        result = llm(db_path, *command, "v0001", "-n", "3")
        assert result.returncode == 0, result.stderr
        assert result.stderr.startswith(
            "Warning: index 'ix' is behind its collections (1000 rows added or changed, "
            "0 deleted since its last build; bringing it up to date failed: Cannot build "
        )
        assert len(lines(result.stdout)) == 3
        assert all(hit["id"].startswith("v") for hit in lines(result.stdout))  # the last build
    assert snapshot(folder) == before
    (small_disk / "filler").unlink()
    assert llm(db_path, "index", "build", "ix").returncode == 0
    found = llm(db_path, "index", "similar", "ix", "m0001", "-n", "3")
    assert found.returncode == 0 and found.stderr == ""
    assert len(lines(found.stdout)) == 3


@pytest.fixture
def read_only_folder(tmp_path):
    "The index folder on a read-only mount; the database beside it writable."
    db_path = tmp_path / "embeddings.db"
    setup_index(db_path, "faiss")
    folder = tmp_path / "embeddings.db.vector-indexes"
    mount("--bind", folder, folder)
    try:
        mount("-o", "remount,bind,ro", folder)
    except BaseException:
        unmount(folder)
        raise
    yield db_path
    unmount(folder)


def test_a_read_only_mount(read_only_folder):
    db_path = read_only_folder
    folder = db_path.parent / "embeddings.db.vector-indexes"
    before = snapshot(db_path, folder)
    for command in (["build", "ix"], ["build", "ix", "--full"], ["drop", "ix"]):
        result = llm(db_path, "index", *command)
        assert result.returncode == 1, result.stderr
        assert result.stderr.startswith("Error: ") and len(result.stderr.splitlines()) == 1
    for command in (["index", "similar", "ix"], ["similar", "vecs"]):
        result = llm(db_path, *command, "v0001", "-n", "3")
        assert result.returncode == 0, result.stderr
        assert "Read-only file system" in result.stderr
        assert result.stderr.startswith("Warning: index 'ix' is behind its collections")
        assert len(lines(result.stdout)) == 3
    assert snapshot(db_path, folder) == before


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_save_that_fails_keeps_the_files_the_catalog_describes(db_path, db, backend, monkeypatch):
    "Wherever the disk fills during a save: a stand-in that fails fsync with ENOSPC."
    import errno

    from llm_vector_index import storage

    vectors = clustered_vectors(300, 16, clusters=4, seed=1)
    write_embeddings(db, "c", [f"r{i}" for i in range(300)], vectors)
    index = Index.create("ix", ["c"], db, backend=backend)
    index.build()
    write_embeddings(db, "c", ["new"], vectors[:1] + 1)
    before = snapshot(index.path)

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(storage.os, "fsync", full)
    with pytest.raises(Exception, match="Cannot build index 'ix': No space left on device"):
        Index("ix", db).build()
    monkeypatch.undo()
    assert snapshot(index.path) == before
    assert Index("ix", db).build().added == 1
    assert Index("ix", db).similar_by_vector(vectors[0] + 1, 1)[0].id == "new"


def test_a_full_disk_when_only_the_keywords_do_not_fit(small_disk):
    """The new vectors fit and the keyword index's new segment does not (rows
    with long text): the build says one line and the catalog is unchanged.
    The vectors were saved first, so the files are ahead of the catalog: the
    index is refused in one line (llm similar answers by brute force) until a
    build with room puts it right."""
    import random

    db_path = small_disk / "embeddings.db"
    db = Database(db_path)
    words = [f"w{i}" for i in range(5000)]
    rng = random.Random(1)
    vectors = clustered_vectors(310, 16, clusters=4, seed=1)
    write_embeddings(
        db,
        "notes",
        [f"n{i:03d}" for i in range(300)],
        vectors[:300],
        contents=[f"note {i} {rng.choice(words)}" for i in range(300)],
    )
    Index.create("ix", ["notes"], db, backend="exact", keywords=True, default=True).build()
    # Ten rows: 640 bytes of vectors, and 200,000 words never seen before to index.
    long_texts = [" ".join(f"x{rng.getrandbits(40):x}" for _ in range(20_000)) for _ in range(10)]
    write_embeddings(
        db, "notes", [f"long{i}" for i in range(10)], vectors[300:], contents=long_texts
    )
    db.conn.close()
    fill(small_disk, leave=256 * 1024)
    tables = snapshot(db_path)
    result = llm(db_path, "index", "build", "ix")
    assert result.returncode == 1, result.stderr
    assert result.stderr == "Error: Cannot build index 'ix': No space left on device\n"
    after = Database(db_path)
    assert after.execute("select generation, keyword_rows from vector_indexes").fetchone() == (
        1,
        300,
    )
    after.conn.close()
    found = llm(db_path, "index", "similar", "ix", "n001", "-n", "3")
    # Its refresh fails as the build did, said once; then the files are refused.
    warning, error = found.stderr.splitlines()
    assert found.returncode == 1 and "No space left on device" in warning, found.stderr
    assert error == (
        "Error: Index 'ix' files do not match its catalog (an interrupted "
        "build?): run llm index build ix"
    )
    theirs = llm(db_path, "similar", "notes", "n001", "-n", "3")
    assert theirs.returncode == 0 and len(lines(theirs.stdout)) == 3, theirs.stderr
    (small_disk / "filler").unlink()
    assert llm(db_path, "index", "build", "ix").returncode == 0
    found = llm(
        db_path,
        "index",
        "similar",
        "ix",
        "-c",
        long_texts[3].split()[7],
        "--mode",
        "keyword",
        "-n",
        "20",
    )
    assert found.returncode == 0, found.stderr
    assert "long3" in [hit["id"] for hit in lines(found.stdout)]
    assert snapshot(db_path) != tables  # (the build committed)
