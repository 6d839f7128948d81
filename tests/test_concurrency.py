"""Several processes at once on one database: writers as llm embeds, two
builders of the same index, queriers. For a bounded time nobody may fail
(a second builder gets IndexBusy, a query during a build answers from the
last saved state, staleness is said, never an error); afterwards one more
build makes the index equal an exact scan of llm's rows."""

import time

import numpy as np
import pytest

from llm_vector_index import Index
from llm_vector_index.testing import clustered_vectors, write_embeddings

from . import workers as workers_module

SECONDS = 6
DIMENSIONS = 16


@pytest.mark.parametrize("backend", ["exact", "hnswlib"])
def test_writers_builders_and_queriers_at_once(db_path, db, backend, user_path, forkserver):
    write_embeddings(
        db,
        "c",
        [f"r{i:03d}" for i in range(300)],
        clustered_vectors(300, DIMENSIONS, clusters=4, seed=1),
    )
    Index.create("ix", ["c"], db, backend=backend, refresh="manual").build()
    context = forkserver
    results = context.Queue()
    deadline = time.time() + SECONDS
    workers = [
        context.Process(target=target, args=(str(db_path), str(user_path), seed, deadline, results))
        for seed, target in enumerate(
            [
                workers_module.writer,
                workers_module.writer,
                workers_module.builder,
                workers_module.builder,
                workers_module.querier,
                workers_module.querier,
            ]
        )
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(SECONDS + 120)
    assert [worker.exitcode for worker in workers] == [0] * len(workers)
    done = [results.get(timeout=5) for _ in workers]
    totals = {
        kind: sum(r[1] for r in done if r[0] == kind) for kind in ("writer", "builder", "querier")
    }
    assert all(totals.values()), totals
    print(
        f"{backend}: {SECONDS}s, {totals['writer']} writes, {totals['builder']} builds "
        f"({sum(r[2] for r in done)} refused as busy), {totals['querier']} queries"
    )
    # Then one build brings the index to exactly llm's rows.
    with Index("ix", db) as index:
        report = index.build()
        rows = db.execute("select id, embedding from embeddings order by id").fetchall()
        assert report.rows == len(rows) == index.backend().count()
        ids = [row[0] for row in rows]
        vectors = np.stack([np.frombuffer(row[1], "<f4") for row in rows])
        unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
        hits = 0
        for query in clustered_vectors(10, DIMENSIONS, clusters=4, seed=77):
            expected = [ids[i] for i in np.argsort(-(unit @ query))[:10]]
            found = [e.id for e in index.similar_by_vector(query, 10)]
            assert found == expected or backend != "exact"
            hits += len(set(found) & set(expected))
        # hnswlib after thousands of replaced and deleted slots: approximate,
        # but every row's current vector is in the graph and finds itself.
        assert hits >= 80
        # (Writers draw vectors from a million seeds: a few rows share a vector,
        # and a tie may list the other id first, with the same vector.)
        vector_of = dict(zip(ids, vectors))
        for position in np.random.default_rng(3).choice(len(ids), 20, replace=False):
            found = index.similar_by_vector(vectors[position], 1)[0].id
            assert np.array_equal(vector_of[found], vectors[position])
    labels = db.execute("select count(*) from vector_index_labels").fetchone()[0]
    assert labels == len(rows)
