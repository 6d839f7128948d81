"""Indexes stay open for the process (open_indexes.py): llm's own Python path
(``collection.similar*``) must not load the index files per call, must see
what another process builds, must be safe across threads, and must close."""

import threading

import llm
import numpy as np
import pytest
from sqlite_utils import Database

from llm_vector_index import Index, close_indexes, open_indexes
from llm_vector_index.testing import clustered_vectors, write_embeddings

from . import workers

DIMENSIONS = 16
BACKENDS = ["exact", "faiss", "hnswlib"]


def fill(db, rows=400, seed=1, collection="c", prefix="r"):
    vectors = clustered_vectors(rows, DIMENSIONS, clusters=8, seed=seed)
    write_embeddings(db, collection, [f"{prefix}{i:04d}" for i in range(rows)], vectors)
    return vectors


def exact_top(db, query, number, collection="c"):
    rows = db.execute(
        "select e.id, e.embedding from embeddings e join collections c "
        "on c.id = e.collection_id where c.name = ?",
        [collection],
    ).fetchall()
    vectors = np.stack([np.frombuffer(row[1], "<f4") for row in rows])
    scores = vectors @ query / np.linalg.norm(vectors, axis=1) / np.linalg.norm(query)
    return [rows[i][0] for i in np.argsort(-scores, kind="stable")[:number]]


@pytest.mark.parametrize("backend", BACKENDS)
def test_collection_queries_open_the_index_once(db, backend):
    fill(db)
    Index.create("ix", ["c"], db, backend=backend, default=True).build()
    collection = llm.Collection("c", db)
    queries = clustered_vectors(5, DIMENSIONS, clusters=8, seed=2)
    opened = []
    for query in queries:
        collection.similar_by_vector(query, 3, index="ix")
        collection.similar_by_vector(query, 3)  # through the default index
        with Index("ix", db) as index:
            opened.append(index.backend())
    assert all(backend is opened[0] for backend in opened)
    assert open_indexes.open_count() == 1
    close_indexes()
    assert open_indexes.open_count() == 0
    # Closed is not broken: the next query opens the files again.
    assert collection.similar_by_vector(queries[0], 1, index="ix")


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_build_by_another_process_is_seen(db, db_path, user_path, backend, forkserver):
    fill(db)
    Index.create("ix", ["c"], db, backend=backend, refresh="manual").build()
    collection = llm.Collection("c", db)
    query = clustered_vectors(1, DIMENSIONS, clusters=8, seed=3)[0]
    collection.similar_by_vector(query, 3, index="ix")
    before = Index("ix", db).backend()
    # A new row exactly at the query, added and indexed by another process.
    write_embeddings(db, "c", ["new"], query.reshape(1, -1))
    ready = forkserver.Event()
    child = forkserver.Process(
        target=workers.build, args=(str(db_path), "ix", False, str(user_path), None, ready)
    )
    child.start()
    child.join(60)
    assert child.exitcode == 0
    assert collection.similar_by_vector(query, 1, index="ix")[0].id == "new"
    after = Index("ix", db).backend()
    assert after is not before and after.count() == 401


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_build_in_this_process_is_offered_to_queries(db, backend):
    fill(db)
    index = Index.create("ix", ["c"], db, backend=backend, refresh="manual")
    index.build()
    query = clustered_vectors(1, DIMENSIONS, clusters=8, seed=4)[0]
    shared = Index("ix", db).backend()
    write_embeddings(db, "c", ["new"], query.reshape(1, -1))
    index.build()
    built = index.backend()
    assert built is not shared  # the build changed its own copy, not the shared one
    assert shared.count() == 400 and built.count() == 401
    assert Index("ix", db).backend() is built
    assert llm.Collection("c", db).similar_by_vector(query, 1, index="ix")[0].id == "new"


def test_threads_share_one_open_index(db_path, db):
    fill(db, rows=2000)
    Index.create("ix", ["c"], db, backend="hnswlib", default=True).build()
    queries = clustered_vectors(40, DIMENSIONS, clusters=8, seed=5)
    expected = [[e.id for e in llm.Collection("c", db).similar_by_vector(q, 5)] for q in queries]
    close_indexes()
    results, errors = {}, []

    def run(worker):
        try:
            own = Database(db_path)  # sqlite3 connections stay in their thread
            collection = llm.Collection("c", own)
            for round in range(5):
                for position, query in enumerate(queries):
                    found = [e.id for e in collection.similar_by_vector(query, 5)]
                    results[(worker, round, position)] = found
        except Exception as error:  # noqa: BLE001  # pragma: no cover - reported below
            errors.append(error)

    threads = [threading.Thread(target=run, args=(worker,)) for worker in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert all(found == expected[key[2]] for key, found in results.items())
    assert len(results) == 4 * 5 * 40
    assert open_indexes.open_count() == 1


def test_a_write_to_another_collection_costs_no_build(db):
    fill(db)
    fill(db, rows=50, seed=9, collection="other", prefix="o")
    index = Index.create("ix", ["c"], db, backend="exact")
    index.build()
    built = index.record.built
    write_embeddings(db, "other", ["o-new"], clustered_vectors(1, DIMENSIONS, seed=10))
    query = clustered_vectors(1, DIMENSIONS, clusters=8, seed=6)[0]
    found = [e.id for e in Index("ix", db).similar_by_vector(query, 5)]
    assert found == exact_top(db, query, 5)
    assert Index("ix", db).record.built == built  # no build ran
    # A write to its own collection is seen (and, refresh "auto", indexed).
    write_embeddings(db, "c", ["c-new"], query.reshape(1, -1))
    assert Index("ix", db).similar_by_vector(query, 1)[0].id == "c-new"
    assert Index("ix", db).record.built > built


@pytest.mark.parametrize("factory", ["HNSW16", "Flat", "IVF8,Flat", "IVF8,PQ4", "HNSW16,SQ8"])
def test_memory_mapped_faiss_answers_as_the_loaded_one(db, factory):
    fill(db, rows=3000)
    index = Index.create("ix", ["c"], db, backend="faiss", options={"factory": factory})
    index.build()
    mapped = index.new_backend(index.path, DIMENSIONS, read_only=True)
    loaded = index.new_backend(index.path, DIMENSIONS)
    queries = clustered_vectors(30, DIMENSIONS, clusters=8, seed=7)
    for allowed in [None, np.arange(0, 3000, 3)]:
        mapped_scores, mapped_labels = mapped.search(queries, 10, allowed)
        loaded_scores, loaded_labels = loaded.search(queries, 10, allowed)
        assert np.array_equal(mapped_labels, loaded_labels)
        assert np.allclose(mapped_scores, loaded_scores)
    assert mapped.count() == loaded.count() == 3000


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_held_index_sees_a_drop_and_a_new_index_of_its_name(db_path, db, backend):
    "SQLite gives the new index the dropped one's id, and both are at generation 1."
    import json
    import sqlite3

    from llm_vector_index import sql

    fill(db, collection="pypi", prefix="p")
    npm = fill(db, seed=2, collection="npm", prefix="n")
    Index.create("zz", ["pypi"], db, backend=backend).build()
    held = Index("zz", db)
    conn = sqlite3.connect(db_path)
    sql.register(conn)
    query = npm[7] + 0.01
    blob = np.asarray(query, "<f4").tobytes()
    search = "select vector_index_search('zz', ?, 5)"
    assert [e.id[0] for e in held.similar_by_vector(query, 5)] == ["p"] * 5
    assert [hit["id"][0] for hit in json.loads(conn.execute(search, [blob]).fetchone()[0])] == [
        "p"
    ] * 5
    old = (held.record.id, held.record.generation)

    Index("zz", Database(db_path)).delete()
    Index.create("zz", ["npm"], Database(db_path), backend=backend).build()
    again = Index("zz", db)
    assert (again.record.id, again.record.generation) == old  # the same id, the same generation

    truth = exact_top(db, query, 5, collection="npm")
    assert [e.id for e in held.similar_by_vector(query, 5)] == truth
    assert [hit["id"] for hit in json.loads(conn.execute(search, [blob]).fetchone()[0])] == truth

    Index("zz", Database(db_path)).delete()
    with pytest.raises(Index.DoesNotExist, match="Index 'zz' does not exist"):
        held.similar_by_vector(query, 5)
    assert json.loads(conn.execute(search, [blob]).fetchone()[0]) == {
        "error": "Index 'zz' does not exist (llm index list shows the indexes)"
    }
    conn.close()
