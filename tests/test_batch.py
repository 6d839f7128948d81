"""Index.similar_by_vectors: many queries in one backend search, the same
answers as one query at a time, in every backend and under every filter."""

import numpy as np
import pytest

from llm_vector_index import Index
from llm_vector_index.errors import DimensionMismatch, VectorIndexError
from llm_vector_index.testing import clustered_vectors, write_embeddings

from .conftest import snapshot

BACKENDS = [
    ("exact", {}),
    ("faiss", {}),
    ("faiss", {"factory": "IVF8,Flat", "nprobe": 2}),
    ("hnswlib", {}),
    ("auto", {"exact_limit": 1000}),  # past it: the 8-bit graph, re-scored
    ("chroma", {}),
]

FILTERS = [
    {},
    {"prefix": "v1"},  # 100 rows: the backend's allow-list
    {"prefix": "v00"},  # 20 rows: scanned exactly
    {"where": {"i": 3}},
    {"collection": "more"},
    {"prefix": "nothing"},
]


@pytest.fixture
def index(db, vectors_collection):
    write_embeddings(
        db,
        "more",
        [f"m{i:03d}" for i in range(200)],
        clustered_vectors(200, 24, clusters=8, seed=9),
        model="test-model",
        contents=[f"more {i}" for i in range(200)],
    )

    def make(backend, options, refresh="auto"):
        made = Index.create(
            f"b-{backend}", ["vecs", "more"], db, backend=backend, options=options, refresh=refresh
        )
        made.build()
        return made

    return make


def queries(n=30, seed=0):
    "New vectors, never stored rows: clustered like the rows, then moved off them."
    return clustered_vectors(n, 24, clusters=8, seed=seed) + 0.05


@pytest.mark.parametrize("backend,options", BACKENDS, ids=lambda b: str(b))
def test_a_batch_answers_as_its_queries_do_one_at_a_time(index, backend, options):
    made = index(backend, options)
    matrix = queries()
    for settings in FILTERS:
        one_by_one = [made.similar_by_vector(q, 7, **settings) for q in matrix]
        assert made.similar_by_vectors(matrix, 7, **settings) == one_by_one, settings
        assert made.similar_by_vectors(list(map(list, matrix)), 7, **settings) == one_by_one
    assert any(made.similar_by_vectors(matrix, 7))


def test_rows_deleted_since_the_build_are_refilled_as_one_query_refills(db, index):
    made = index("hnswlib", {}, refresh="manual")  # answers from the last build
    matrix = queries(40, seed=3)
    first = made.similar_by_vectors(matrix, 5)
    gone = sorted({entry.id for entries in first for entry in entries[:2]})
    db.execute(f"delete from embeddings where id in ({','.join('?' * len(gone))})", gone)
    db.conn.commit()
    answers = made.similar_by_vectors(matrix, 5)
    assert answers == [made.similar_by_vector(q, 5) for q in matrix]
    assert all(len(entries) == 5 for entries in answers)
    assert not {entry.id for entries in answers for entry in entries} & set(gone)


def test_a_batch_of_none_and_more_than_there_are(index):
    made = index("exact", {})
    assert made.similar_by_vectors([], 3) == []
    assert made.similar_by_vectors(np.zeros((0, 24)), 3) == []
    everything = made.similar_by_vectors(queries(2), 1000)
    assert [len(entries) for entries in everything] == [400, 400]


@pytest.mark.parametrize(
    "vectors,error,message",
    [
        ("some text", DimensionMismatch, "not text"),
        (5, DimensionMismatch, "a sequence of vectors"),
        ([[1.0] * 24, [1.0] * 23], DimensionMismatch, "Query 1 has 23 dimensions, query 0 has 24"),
        ([[1.0] * 24, [float("nan")] * 24], DimensionMismatch, "Query 1: Query vector has NaN"),
        ([[0.0] * 24], DimensionMismatch, "Query 0: Query vector is all zeros"),
        ([[1.0] * 23, [1.0] * 23], DimensionMismatch, "has 23 dimensions, index"),
        ([["a"] * 24], DimensionMismatch, "Query 0: Query vector must be a flat sequence"),
    ],
)
def test_a_bad_query_in_a_batch_is_one_line_and_changes_nothing(
    db, db_path, index, vectors, error, message
):
    made = index("faiss", {})
    before = snapshot(db_path, made.path)
    with pytest.raises(error, match=message):
        made.similar_by_vectors(vectors, 3)
    with pytest.raises(VectorIndexError, match="number must be a whole number"):
        made.similar_by_vectors(queries(2), 0)
    assert snapshot(db_path, made.path) == before
