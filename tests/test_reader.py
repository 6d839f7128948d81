"""A query reads its rows through a connection of the plugin's own
(reader.py), and sees exactly what the user's connection sees."""

import sqlite3
import threading

import llm
import pytest
from sqlite_utils import Database

from llm_vector_index import Index

from .conftest import statements_sent


@pytest.fixture
def index(db, vectors_collection):
    made = Index.create("r", ["vecs"], db, backend="hnswlib", refresh="manual")
    made.build()
    return made


def row_reads(db, run):
    "How many of ``run()``'s statements through the user's connection read rows by label."
    return sum("join embeddings e on" in sql for sql in statements_sent(db, run))


def test_rows_come_through_the_plugins_connection_and_the_users_keeps_its_settings(
    db, index, vectors_collection
):
    _, vectors = vectors_collection
    settings = [db.execute(f"pragma {name}").fetchone()[0] for name in ("mmap_size", "cache_size")]
    found = []
    assert row_reads(db, lambda: found.extend(index.similar_by_vector(vectors[7], 5))) == 0
    llms = llm.Collection("vecs", db).similar_by_vector(vectors[7].tolist(), 5)
    assert [(e.id, e.content) for e in found] == [(e.id, e.content) for e in llms]
    assert [e.score for e in found] == pytest.approx([e.score for e in llms], abs=1e-12)
    assert [db.execute(f"pragma {name}").fetchone()[0] for name in ("mmap_size", "cache_size")] == (
        settings
    )


def test_inside_the_users_transaction_rows_come_through_their_connection(
    db, index, vectors_collection
):
    _, vectors = vectors_collection
    winner = index.similar_by_vector(vectors[7], 1)[0]
    # Not committed: only the user's connection sees it, and so must the query.
    db.execute("begin")
    db.execute("update embeddings set content = 'changed' where id = ?", [winner.id])
    assert db.conn.in_transaction
    assert index.similar_by_vector(vectors[7], 1)[0].content == "changed"
    db.conn.rollback()
    assert index.similar_by_vector(vectors[7], 1)[0].content == winner.content


def test_a_commit_through_the_users_connection_is_read_at_once(db, index, vectors_collection):
    _, vectors = vectors_collection
    winner = index.similar_by_vector(vectors[7], 1)[0]
    with db.conn:
        db.execute("update embeddings set content = 'committed' where id = ?", [winner.id])
    assert index.similar_by_vector(vectors[7], 1)[0].content == "committed"


def test_a_database_file_removed_is_not_made_again(db_path, vectors_collection):
    _, vectors = vectors_collection
    built = Index.create("r", ["vecs"], Database(db_path), backend="hnswlib", refresh="manual")
    built.build()
    expected = [e.id for e in built.similar_by_vector(vectors[7], 5)]
    db = Database(db_path)
    index = Index("r", db)
    db_path.unlink()  # the user's connection still reads the file it opened
    assert [e.id for e in index.similar_by_vector(vectors[7], 5)] == expected
    assert not db_path.exists()


def test_each_thread_reads_through_a_connection_of_its_own(db_path, vectors_collection):
    _, vectors = vectors_collection
    db = Database(sqlite3.connect(db_path, check_same_thread=False))
    index = Index.create("r", ["vecs"], db, backend="hnswlib", refresh="manual")
    index.build()
    here = [e.id for e in index.similar_by_vector(vectors[7], 5)]
    there: list = []

    def ask():
        try:
            there.append([e.id for e in index.similar_by_vector(vectors[7], 5)])
        except Exception as error:  # noqa: BLE001 - the thread's failure is the test's
            there.append(error)

    thread = threading.Thread(target=ask)
    thread.start()
    thread.join()
    assert there == [here]
