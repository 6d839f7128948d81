"""The exact backend saves only what changed: saved segments are never
rewritten, dead rows are marked, and compaction rewrites when they pile up."""

import json

import numpy as np
import pytest

from llm_vector_index import DamagedFiles
from llm_vector_index.backends import exact
from llm_vector_index.backends.exact import ExactIndex
from llm_vector_index.storage import array_writer, save_snapshot

DIMENSIONS = 8


@pytest.fixture
def folder(tmp_path):
    return tmp_path / "index"


def vectors(count, seed):
    return np.random.default_rng(seed).standard_normal((count, DIMENSIONS)).astype(np.float32)


def files(folder):
    "name -> (inode, mtime) of every saved file."
    return {
        p.name: (p.stat().st_ino, p.stat().st_mtime_ns)
        for p in folder.iterdir()
        if p.name != "manifest.json"
    }


def answers_like_a_fresh_scan(index, live):
    "Search results equal an exact scan over ``live`` (label -> vector)."
    labels = np.array(sorted(live), dtype=np.int64)
    matrix = np.stack([live[label] for label in labels.tolist()])
    unit = matrix / np.linalg.norm(matrix, axis=1, keepdims=True)
    queries = vectors(5, seed=99)
    scores, found = index.search(queries, 10)
    for query, row_scores, row_labels in zip(queries, scores, found):
        truth = unit @ (query / np.linalg.norm(query))
        expected = labels[np.argsort(-truth)[:10]]
        assert row_labels.tolist() == expected.tolist()
        assert np.allclose(row_scores, np.sort(truth)[::-1][:10], atol=1e-5)
    assert index.count() == len(live)


def test_an_incremental_save_writes_only_the_new_rows(folder):
    index = ExactIndex(folder, DIMENSIONS)
    first = vectors(1000, seed=1)
    index.add(np.arange(1000), first)
    index.save()
    before = files(folder)
    live = dict(enumerate(first))
    # 10 new rows, 5 replaced, 5 removed: 2% of the rows changed
    index.add(np.arange(1000, 1010), vectors(10, seed=2))
    index.add(np.arange(5), vectors(5, seed=3))
    index.remove(np.arange(5, 10))
    live.update(zip(range(1000, 1010), vectors(10, seed=2)))
    live.update(zip(range(5), vectors(5, seed=3)))
    for label in range(5, 10):
        del live[label]
    index.save()
    after = files(folder)
    saved_matrix = [name for name in before if name.startswith("vectors")]
    assert saved_matrix and all(after.get(name) == before[name] for name in saved_matrix)
    new = [name for name in after if name.startswith("vectors") and name not in before]
    assert len(new) == 1 and np.load(folder / new[0]).shape == (15, DIMENSIONS)
    answers_like_a_fresh_scan(index, live)
    reopened = ExactIndex(folder, DIMENSIONS, read_only=True)
    answers_like_a_fresh_scan(reopened, live)
    # filtered search leaves dead rows out too
    _, found = reopened.search(vectors(1, seed=4), 50, allowed=np.arange(20))
    assert set(found[0].tolist()) == set(range(20)) - set(range(5, 10))


def test_dead_rows_past_a_quarter_are_compacted_away(folder):
    index = ExactIndex(folder, DIMENSIONS)
    index.add(np.arange(1000), vectors(1000, seed=1))
    index.save()
    before = files(folder)
    index.remove(np.arange(300))
    index.save()
    after = files(folder)
    assert not set(before) & set(after)  # rewritten once, the old files removed
    matrices = [name for name in after if name.startswith("vectors")]
    assert len(matrices) == 1 and np.load(folder / matrices[0]).shape == (700, DIMENSIONS)
    reopened = ExactIndex(folder, DIMENSIONS)
    answers_like_a_fresh_scan(reopened, dict(zip(range(300, 1000), vectors(1000, seed=1)[300:])))


def test_segments_are_merged_past_the_limit(folder):
    index = ExactIndex(folder, DIMENSIONS)
    live = {}
    for batch in range(exact.MAX_SEGMENTS + 3):
        added = vectors(20, seed=batch)
        index.add(np.arange(batch * 20, batch * 20 + 20), added)
        live.update(zip(range(batch * 20, batch * 20 + 20), added))
        index.save()
        segments = json.loads((folder / "manifest.json").read_text())["meta"]["segments"]
        assert len(segments) <= exact.MAX_SEGMENTS
        answers_like_a_fresh_scan(ExactIndex(folder, DIMENSIONS), live)
    assert len({p.name for p in folder.iterdir()}) <= 2 * exact.MAX_SEGMENTS + 2


def test_an_index_saved_before_segments_opens_and_grows(folder):
    old = vectors(50, seed=1)
    unit = old / np.linalg.norm(old, axis=1, keepdims=True)
    save_snapshot(folder, {"labels": array_writer(np.arange(50)), "vectors": array_writer(unit)})
    index = ExactIndex(folder, DIMENSIONS)
    live = dict(enumerate(old))
    answers_like_a_fresh_scan(index, live)
    index.add(np.array([50]), vectors(1, seed=2))
    index.save()
    live[50] = vectors(1, seed=2)[0]
    answers_like_a_fresh_scan(ExactIndex(folder, DIMENSIONS), live)


@pytest.mark.parametrize("segments", [[["labels", "nothing"]], "labels", [["labels"]]])
def test_a_manifest_naming_segments_it_has_not_is_damaged(folder, segments):
    save_snapshot(
        folder,
        {"labels": array_writer(np.arange(3)), "vectors": array_writer(vectors(3, seed=1))},
        meta={"segments": segments},
    )
    with pytest.raises(DamagedFiles):
        ExactIndex(folder, DIMENSIONS)


def test_dead_positions_outside_the_rows_are_damage(folder):
    save_snapshot(
        folder,
        {
            "labels": array_writer(np.arange(3)),
            "vectors": array_writer(vectors(3, seed=1)),
            "dead": array_writer(np.array([7])),
        },
    )
    with pytest.raises(DamagedFiles, match="dead positions"):
        ExactIndex(folder, DIMENSIONS)


@pytest.mark.parametrize("columns", [10, 64 * 40, 64 * 40 + 17, 100_003])
@pytest.mark.parametrize("k", [1, 6, 48])
def test_top_k_by_blocks_is_a_full_sort(columns, k):
    "top_k's two passes (blocks' maxima, then their columns) keep the true k best."
    from llm_vector_index.base import top_k

    rng = np.random.default_rng(columns + k)
    scores = rng.standard_normal((7, columns)).astype(np.float32)
    scores[0, : columns // 2] = -np.inf  # dead rows, as the exact backend marks them
    scores[1, -5:] = 10.0  # the best in the last, partial block
    found = top_k(scores, k)
    expected = np.sort(scores, axis=1)[:, ::-1][:, : min(k, columns)]
    assert np.array_equal(np.take_along_axis(scores, found, 1), expected)
    assert all(len(set(row)) == len(row) for row in found.tolist())
