"""One policy for vectors that cannot be ranked by cosine (a NaN or infinite
value, or all zeros), on every backend: held back at build with a count in
the report, never sent to the backend, never returned, looked at again when
the row changes."""

import numpy as np
import pytest

from llm_vector_index import Index
from llm_vector_index.testing import clustered_vectors, write_embeddings

BACKENDS = [
    ("exact", {}),
    ("faiss", {}),
    ("faiss", {"factory": "IVF8,Flat", "nprobe": 8}),
    ("hnswlib", {}),
    ("chroma", {}),
]
BAD = {"nan": np.nan, "inf": np.inf, "ninf": -np.inf, "zeros": 0.0}


def bad_vector(kind, dimensions=24):
    if kind == "zeros":
        return np.zeros(dimensions, dtype=np.float32)
    vector = np.ones(dimensions, dtype=np.float32)
    vector[3] = BAD[kind]
    return vector


def exact_top(vectors, ids, query, k, skip):
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    scores = unit @ (query / np.linalg.norm(query))
    return [ids[i] for i in np.argsort(-scores) if ids[i] != skip][:k]


@pytest.mark.parametrize("backend,options", BACKENDS)
def test_unrankable_rows_held_back_on_every_backend(db, backend, options):
    vectors = clustered_vectors(300, 24, clusters=6, seed=3)
    ids = [f"r{i:03d}" for i in range(300)]
    write_embeddings(db, "c", ids, vectors, updated=1000)
    write_embeddings(db, "c", list(BAD), np.stack([bad_vector(k) for k in BAD]), updated=1000)
    index = Index.create("ix", ["c"], db, backend=backend, options=options)
    report = index.build()
    assert (report.added, report.rows, report.held_back) == (300, 300, 4)
    assert index.backend().count() == 300

    def check_answers():
        for query_id in ("r000", "r100", "r250"):
            found = [e.id for e in index.similar_by_id(query_id, 10)]
            assert not set(BAD) & set(found)
            truth = exact_top(vectors, ids, vectors[ids.index(query_id)], 10, query_id)
            assert len(set(found) & set(truth)) >= 9  # the NaN row misrouted hnswlib
        everything = [e.id for e in index.similar_by_id("r000", 1000)]
        assert len(everything) == 299 and not set(BAD) & set(everything)
        assert all(np.isfinite(e.score) for e in index.similar_by_id("r000", 1000))
        # a small filtered subset is ranked from SQLite rows: held back there too
        assert not set(BAD) & {e.id for e in index.similar_by_id("r000", 50, prefix="")}
        assert [e.id for e in index.similar_by_vector(np.ones(24), 5, prefix="n")] == []

    check_answers()
    # Nothing changed: nothing is re-read, the held-back rows are known.
    again = index.build()
    assert (again.added, again.deleted, again.held_back, again.rows) == (0, 0, 0, 300)

    # Fixed in llm: indexed. Broken: taken out of the backend. Deleted: forgotten.
    write_embeddings(db, "c", ["nan"], vectors[:1] * -1)
    write_embeddings(db, "c", ["r001"], [bad_vector("nan")])
    db.execute("delete from embeddings where id = 'zeros'")
    db.conn.commit()
    report = index.build()
    assert (report.added, report.deleted, report.held_back, report.rows) == (1, 1, 1, 300)
    assert index.backend().count() == 300
    assert index.similar_by_vector(vectors[0] * -1, 1)[0].id == "nan"
    assert "r001" not in {e.id for e in index.similar_by_id("r002", 1000)}
    # And a full rebuild agrees with the incremental one.
    full = index.build(full=True)
    assert (full.rows, full.held_back) == (300, 3)  # inf, ninf and r001; zeros is gone
    held = db.execute("select id from vector_index_labels where label < 0 order by id").fetchall()
    assert [row[0] for row in held] == ["inf", "ninf", "r001"]
    check_answers_after = [e.id for e in index.similar_by_id("r002", 1000)]
    assert len(check_answers_after) == 299 and "r001" not in check_answers_after


def test_evaluate_ignores_unrankable_rows(db):
    from llm_vector_index.evaluate import evaluate

    vectors = clustered_vectors(200, 24, clusters=4, seed=1)
    write_embeddings(db, "c", [f"r{i}" for i in range(200)], vectors)
    write_embeddings(db, "c", list(BAD), np.stack([bad_vector(k) for k in BAD]))
    index = Index.create("ix", ["c"], db, backend="exact")
    index.build()
    result = evaluate(index, queries=500, k=10)
    assert result.queries == 200 and result.recall == 1.0
