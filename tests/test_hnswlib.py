"hnswlib specifics beyond the shared contract: churn, filters, persistence."

import numpy as np

from llm_vector_index.backends.hnswlib import EXACT_FILTER_LIMIT, HnswlibIndex
from llm_vector_index.testing import clustered_vectors


def test_churn_reuses_deleted_slots(tmp_path):
    index = HnswlibIndex(tmp_path, 16)
    index.add(np.arange(1000), clustered_vectors(1000, 16))
    index.save()
    size = sum(p.stat().st_size for p in tmp_path.iterdir())
    for round in range(5):
        old = np.arange(round * 200, round * 200 + 200)
        index.remove(old)
        index.add(old + 10_000, clustered_vectors(200, 16, seed=round + 1))
    index.save()
    assert index.count() == 1000
    assert index._graph.get_current_count() <= 1024
    assert sum(p.stat().st_size for p in tmp_path.iterdir()) <= size * 1.1
    assert len(list(tmp_path.glob("graph.*"))) == 1  # old generations removed


def test_removed_label_can_come_back(tmp_path):
    index = HnswlibIndex(tmp_path, 16)
    vectors = clustered_vectors(100, 16)
    index.add(np.arange(100), vectors)
    index.remove(np.array([5]))
    index.add(np.array([5]), -vectors[5][None])
    assert index.count() == 100
    assert index.search(-vectors[5][None], 1)[1][0, 0] == 5


def test_large_filter_uses_the_graph_and_fills_k(tmp_path):
    index = HnswlibIndex(tmp_path, 16)
    vectors = clustered_vectors(12_000, 16, clusters=20)
    index.add(np.arange(12_000), vectors)
    allowed = np.arange(0, 12_000, 2)  # 6,000: more than the exact-scan limit
    assert len(allowed) > EXACT_FILTER_LIMIT
    scores, labels = index.search(vectors[:3], 10, allowed=allowed)
    assert labels.shape == (3, 10)
    assert set(labels.ravel().tolist()) <= set(allowed.tolist())
    assert (np.diff(scores, axis=1) <= 1e-6).all()


def test_reopened_index_searches_the_same(tmp_path):
    options = {"M": 8, "ef_construction": 50, "ef": 20}
    index = HnswlibIndex(tmp_path, 16, options=options)
    vectors = clustered_vectors(3000, 16, clusters=30)
    index.add(np.arange(3000), vectors)
    index.save()
    queries = clustered_vectors(20, 16, clusters=30, seed=5)
    before = index.search(queries, 10)
    reopened = HnswlibIndex(tmp_path, 16, options=options)
    after = reopened.search(queries, 10)
    np.testing.assert_array_equal(before[1], after[1])
    assert reopened._graph.ef == 20
