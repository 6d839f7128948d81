"The Python API: results, scores and semantics match llm's brute force."

import llm
import numpy as np
import pytest

from llm_vector_index import (
    DimensionMismatch,
    IdNotFound,
    Index,
    NotBuilt,
    VectorIndexError,
)
from llm_vector_index.testing import clustered_vectors, write_embeddings

BACKENDS = [("exact", {}), ("faiss", {}), ("faiss", {"factory": "Flat"})]


def assert_same(got, expected):
    "Same ids in the same order, scores equal to llm's within float error."
    assert [e.id for e in got] == [e.id for e in expected]
    assert [e.score for e in got] == pytest.approx([e.score for e in expected], abs=1e-9)


@pytest.mark.parametrize("backend,options", BACKENDS)
def test_by_vector_matches_llm_brute_force(db, vectors_collection, backend, options):
    ids, vectors = vectors_collection
    index = Index.create("ix", ["vecs"], db, backend=backend, options=options)
    index.build()
    collection = llm.Collection("vecs", db, create=False)
    for query in clustered_vectors(5, 24, clusters=8, seed=11):
        expected = collection.similar_by_vector(query.tolist(), number=10)
        got = index.similar_by_vector(query, number=10)
        assert [e.id for e in got] == [e.id for e in expected]
        for mine, theirs in zip(got, expected):
            assert mine.score == pytest.approx(theirs.score, abs=1e-9)
            assert mine.score == pytest.approx(
                llm.cosine_similarity(
                    llm.decode(np.asarray(query, "<f4").tobytes()),
                    vectors[ids.index(mine.id)].tolist(),
                ),
                abs=1e-5,
            )
            assert (mine.content, mine.metadata) == (theirs.content, theirs.metadata)


def test_exact_by_id_and_prefix_match_llm(db, vectors_collection):
    index = Index.create("ix", ["vecs"], db, backend="exact")
    index.build()
    collection = llm.Collection("vecs", db, create=False)
    for id in ("v000", "v013", "v199"):
        assert_same(index.similar_by_id(id, 7), collection.similar_by_id(id, 7))
    for prefix in ("v1", "V1", "v_9", "v%5", "x"):
        got = index.similar_by_id("v050", 5, prefix=prefix)
        expected = collection.similar_by_id("v050", 5, prefix=prefix)
        assert [e.id for e in got] == [e.id for e in expected], prefix
    # the queried row itself is skipped, as in llm
    assert "v050" not in [e.id for e in index.similar_by_id("v050", 200)]
    assert len(index.similar_by_id("v050", 500)) == 199


def test_similar_embeds_with_the_collection_model(db, text_collection):
    index = Index.create("text", ["docs"], db, backend="exact")
    index.build()
    got = index.similar("horse cherry 12", number=5)
    expected = text_collection.similar("horse cherry 12", number=5)
    assert_same(got, expected)
    assert got[0].content == expected[0].content
    assert got[0].metadata == expected[0].metadata


def test_faiss_recall_on_clustered_vectors(db):
    vectors = clustered_vectors(3000, 48, clusters=30, seed=5)
    write_embeddings(db, "big", [str(i) for i in range(3000)], vectors)
    exact = Index.create("exact", ["big"], db, backend="exact")
    approximate = Index.create("approx", ["big"], db)
    exact.build(), approximate.build()
    hits = 0
    for query in clustered_vectors(40, 48, clusters=30, seed=5):
        truth = {e.id for e in exact.similar_by_vector(query, 10)}
        hits += len(truth & {e.id for e in approximate.similar_by_vector(query, 10)})
    assert hits / 400 >= 0.95


def test_multi_collection_index_merges_by_score(db):
    a = clustered_vectors(50, 16, clusters=4, seed=1)
    b = a + np.random.default_rng(2).normal(scale=0.3, size=a.shape).astype("f4")
    write_embeddings(db, "a", [f"x{i}" for i in range(50)], a)
    write_embeddings(db, "b", [f"x{i}" for i in range(50)], b)  # same ids!
    index = Index.create("both", ["a", "b"], db, backend="exact")
    index.build()
    results = index.similar_by_vector(a[0], number=20)
    assert {e.collection for e in results} == {"a", "b"}
    scores = [e.score for e in results]
    assert scores == sorted(scores, reverse=True)
    combined = [
        (e.id, e.score, "a")
        for e in llm.Collection("a", db, create=False).similar_by_vector(a[0].tolist(), 20)
    ] + [
        (e.id, e.score, "b")
        for e in llm.Collection("b", db, create=False).similar_by_vector(a[0].tolist(), 20)
    ]
    combined.sort(key=lambda row: -row[1])
    assert [(e.id, e.collection) for e in results] == [(i, c) for i, _, c in combined[:20]]
    # by id: x0 of the first collection holding it is skipped, b's x0 is not
    by_id = index.similar_by_id("x0", number=100)
    assert ("x0", "a") not in [(e.id, e.collection) for e in by_id]
    assert ("x0", "b") in [(e.id, e.collection) for e in by_id]


def test_empty_collection_builds_and_returns_nothing(db):
    llm.Collection("empty", db, model_id="hash-16")
    index = Index.create("e", ["empty"], db)
    report = index.build()
    assert report.rows == 0
    assert index.similar("anything") == []


def test_query_errors(db, vectors_collection):
    index = Index.create("ix", ["vecs"], db)
    with pytest.raises(NotBuilt):
        index.similar_by_id("v001")
    index.build()
    with pytest.raises(DimensionMismatch, match="has 3 dimensions, index 'ix' has 24"):
        index.similar_by_vector([1.0, 2.0, 3.0])
    with pytest.raises(IdNotFound, match="ID 'nope' not found in index 'ix'"):
        index.similar_by_id("nope")
    for number in (0, -1):
        with pytest.raises(VectorIndexError, match="number must be a whole number of at least 1"):
            index.similar_by_id("v001", number=number)
    with pytest.raises(Index.DoesNotExist):
        Index("other", db)


def test_index_api(db, vectors_collection):
    assert not Index.exists(db, "ix")
    index = Index.create("ix", ["vecs"], db, backend="exact")
    assert Index.exists(db, "ix")
    index.build()
    assert index.count() == 200
    assert index.path.parent.name == "embeddings.db.vector-indexes"
    assert index.path.is_dir()
    index.delete()
    assert not Index.exists(db, "ix")
    assert not index.path.exists()
    assert db.execute("select count(*) from vector_index_labels").fetchone()[0] == 0


@pytest.mark.parametrize("backend", ["exact", "faiss"])
def test_ties_between_identical_vectors_come_in_llm_s_order(db, backend):
    "llm's SQL sort lists equal scores in id order; the BLAS sums may differ in the last bits."
    import llm as llm_module

    from llm_vector_index import collection as integration

    rng = np.random.default_rng(3)
    same = rng.normal(size=(1, 384)).astype(np.float32)
    ids = [f"t{i:03d}" for i in rng.permutation(60)]
    vectors = np.concatenate(
        [np.repeat(same, 60, axis=0), rng.normal(size=(200, 384)).astype(np.float32)]
    )
    write_embeddings(db, "ties", ids + [f"r{i:03d}" for i in range(200)], vectors)
    Index.create("ix", ["ties"], db, backend=backend).build()
    query = same[0] + rng.normal(scale=0.01, size=384).astype(np.float32)
    ours = [e.id for e in Index("ix", db).similar_by_vector(query, 60)]
    theirs = [
        e.id
        for e in integration.ORIGINALS["similar_by_vector"](
            llm_module.Collection("ties", db), query.tolist(), 60
        )
    ]
    assert ours == theirs
