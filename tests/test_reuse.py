"""A filter's allowed rows are read once and reused only while nothing in the
database has changed: a write through this connection or a commit through
any other is seen by the very next query."""

import json

import pytest
from sqlite_utils import Database

from llm_vector_index import Index, reuse

from .conftest import statements_sent


@pytest.fixture
def index(db, vectors_collection):
    made = Index.create("r", ["vecs"], db, backend="faiss", refresh="manual")
    made.build()
    return made


def reads_of_the_filter(db, run):
    "How many statements ``run()`` sends that read the filter's rows."
    return sum("e.rowid" in sql and "limit" in sql for sql in statements_sent(db, run))


def ids(entries):
    return [entry.id for entry in entries]


def test_the_same_filter_again_reads_nothing_again(db, index, vectors_collection):
    _, vectors = vectors_collection

    def ask():
        return index.similar_by_vector(vectors[3], 5, prefix="v1")

    first = ask()
    assert reads_of_the_filter(db, ask) == 0
    assert ask() == first
    assert reads_of_the_filter(db, lambda: index.similar_by_vector(vectors[3], 5, prefix="v0")) == 1


def test_a_write_through_this_connection_is_seen_by_the_next_query(db, index, vectors_collection):
    _, vectors = vectors_collection
    before = index.similar_by_vector(vectors[105], 3, prefix="v10")  # 10 rows: scanned exactly
    assert ids(before)[0] == "v105"
    # A copy of v105 under a new id of the prefix, not committed yet: this
    # connection sees it, so the next query must too (the scan reads it).
    db.execute(
        "insert into embeddings (collection_id, id, embedding, content, metadata, updated) "
        "select collection_id, 'v10z', embedding, content, metadata, updated "
        "from embeddings where id = 'v105'"
    )
    after = index.similar_by_vector(vectors[105], 3, prefix="v10")
    assert sorted(ids(after)[:2]) == ["v105", "v10z"]


def test_a_commit_by_another_connection_is_seen_by_the_next_query(
    db, db_path, index, vectors_collection
):
    _, vectors = vectors_collection
    where = {"i": 7}
    assert ids(index.similar_by_vector(vectors[7], 3, where=where)) == ["v007"]
    other = Database(db_path)
    other.execute("update embeddings set metadata = ? where id = 'v009'", [json.dumps({"i": 7})])
    other.conn.commit()
    assert ids(index.similar_by_vector(vectors[7], 3, where=where)) == ["v007", "v009"]


def test_only_the_last_few_filters_are_kept(db):
    reads = []

    def read(n):
        def go():
            reads.append(n)
            return n

        return go

    for n in range(reuse.MOST + 1):
        assert reuse.reuse(db, n, read(n)) == n
    assert reuse.reuse(db, reuse.MOST, read(-1)) == reuse.MOST  # kept
    assert reuse.reuse(db, 0, read(-2)) == -2  # the oldest went
    db.execute("create table t (x)")
    db.execute("insert into t values (1)")
    assert reuse.reuse(db, reuse.MOST, read(-3)) == -3  # a write: read again
