"""A filter's labels read from the ends of their runs (catalog m008,
filters.Filter.ordered_labels): the last full build hands out labels in id
order within each collection, so an id prefix or a collection is a few runs
of labels plus the labels handed out since. Every query answers as reading
the labels from the label map does, on real SQLite and real tantivy, after
later rows, deletions and rows that became unrankable."""

import time

import llm
import numpy as np
import pytest
from sqlite_utils import Database

from llm_vector_index import Index, filters
from llm_vector_index.errors import VectorIndexError
from llm_vector_index.filters import Filter

WORDS = ["apple", "pear", "plum", "fig", "kiwi", "lime", "date", "sloe"]


def text(i):
    return f"row {i} {WORDS[i % 8]} {WORDS[(i * 3) % 8]} {'pear ' * (i % 3)}"


def ids(count, start=0):
    # mixed case under one prefix: LIKE ignores ASCII case, so "a" is two
    # ranges of the label map's index ("a...", "A..."), each its own run
    return [f"{'aA'[i % 5 == 0] if i % 3 else 'b'}{i:04d}" for i in range(start, start + count)]


@pytest.fixture
def changed(db):
    return changed_index(db, "exact")


def changed_index(db, backend):
    """An index over two collections, fully built, then changed: rows added
    (some under each prefix), deleted and made unrankable, and built again."""
    for name, offset in (("one", 0), ("two", 5000)):
        collection = llm.Collection(name, db, model_id="hash-16")
        collection.embed_multi(
            [(id, text(offset + i)) for i, id in enumerate(ids(600))], store=True
        )
    index = Index.create("o", ["one", "two"], db, backend=backend, keywords=True)
    index.build()
    assert index.record.ordered_labels == index.record.next_label == 1200
    llm.Collection("one", db).embed_multi(
        [(id, text(i)) for i, id in enumerate(ids(40, start=600))], store=True
    )
    db.execute("delete from embeddings where id in ('a0001', 'A0010', 'b0300', 'a0599')")
    zeros = np.zeros(16, dtype="<f4").tobytes()
    db.execute(
        "update embeddings set embedding = ?, updated = ? where id in ('a0002', 'a0004')",
        [zeros, int(time.time()) + 10],
    )
    db.conn.commit()
    report = index.build()
    assert not report.full
    assert index.record.ordered_labels == 1200 and index.record.next_label == 1240
    return index


def unordered(db_path):
    "The same index through its own connection, its labels read from the label map."
    index = Index("o", Database(db_path))
    index.record.ordered_labels = None
    return index


FILTERS = [
    {"prefix": "a"},
    {"prefix": "A0"},
    {"prefix": "a00"},
    {"prefix": "b"},
    {"prefix": "a06"},  # rows added since the full build only
    {"prefix": "zz"},  # nothing
    {"prefix": "a", "collection": "two"},
    {"collection": "one"},
    {"prefix": "a%1"},  # a wildcard: from the label map
    {"prefix": "a_0"},
    {"prefix": "a", "where": {}},
]


@pytest.mark.parametrize("chosen", FILTERS, ids=lambda f: repr(f))
def test_every_mode_answers_as_reading_the_label_map_does(changed, db, db_path, chosen):
    reference = unordered(db_path)
    for mode in ("keyword", "vector", "hybrid"):
        # (not "row" in hybrid: in every row, it ties them all, and a hybrid
        # query's keyword side settles a tie at its depth among the rows it read)
        for words in ("pear plum", "kiwi", "row 7")[: 2 if mode == "hybrid" else 3]:
            found = changed.similar(words, 10, mode=mode, **chosen)
            expected = reference.similar(words, 10, mode=mode, **chosen)
            assert [(e.id, e.score, e.keyword_score, e.fused) for e in found] == [
                (e.id, e.score, e.keyword_score, e.fused) for e in expected
            ], (mode, words)
    # and as the unfiltered ranking, filtered (keyword and vector)
    prefix = chosen.get("prefix", "")
    if "%" in prefix or "_" in prefix:
        return  # (LIKE's wildcards: compared with the reference above)
    for mode in ("keyword", "vector"):
        wanted = [
            e.id
            for e in changed.similar("pear plum", 2000, mode=mode)
            if e.id.lower().startswith(prefix.lower())
            and chosen.get("collection") in (None, e.collection)
        ]
        found = changed.similar("pear plum", 10, mode=mode, **chosen)
        assert [e.id for e in found] == wanted[:10], mode


@pytest.mark.parametrize("backend", ["faiss", "hnswlib", "chroma"])
def test_each_backend_takes_the_runs_labels_with_their_gaps(db, db_path, backend, monkeypatch):
    """The backends get labels whose rows have gone (the runs' gaps) and
    answer as with the label map's own; with a low scratch limit, so that
    the small filters go to them too."""
    monkeypatch.setattr(filters, "SCRATCH_LIMIT", 10)
    index = changed_index(db, backend)
    reference = unordered(db_path)
    for chosen in ({"prefix": "a"}, {"prefix": "a00"}, {"collection": "two"}, {"prefix": "a06"}):
        found = index.similar("pear plum", 10, mode="vector", **chosen)
        expected = reference.similar("pear plum", 10, mode="vector", **chosen)
        assert [(e.id, e.score) for e in found] == [(e.id, e.score) for e in expected], chosen
        assert len(found) == 10


def test_the_runs_hold_every_matching_label_and_nothing_the_label_map_holds_else(changed, db):
    label_map = dict(
        db.execute("select label, id from vector_index_labels where label >= 0").fetchall()
    )
    for chosen in FILTERS:
        subset = Filter(changed.collection_ids(chosen.get("collection")), chosen.get("prefix"))
        ordered = subset.ordered_labels(db, changed.record)
        prefix = chosen.get("prefix") or ""
        if "%" in prefix or "_" in prefix:
            assert ordered is None
            continue
        matching = subset.matching_labels(db, changed.record.id)
        assert ordered is not None and (np.diff(ordered) > 0).all()
        assert set(matching.tolist()) <= set(ordered.tolist())
        # the rest are labels whose rows left the label map (deleted, unrankable)
        assert not set(ordered.tolist()) - set(matching.tolist()) & set(label_map)
    held = np.array(db.execute("select label from vector_index_labels").fetchall()).ravel()
    assert (held < 0).sum() == 4  # the unrankable rows (two in each collection), held back


def test_a_filter_with_many_rows_reads_no_rowids_and_few_are_scanned_exactly(
    changed, db, monkeypatch
):
    read = []
    rowids = Filter.rowids
    monkeypatch.setattr(
        Filter, "rowids", lambda self, *a, **k: read.append(1) or rowids(self, *a, **k)
    )
    monkeypatch.setattr(filters, "SCRATCH_LIMIT", 50)
    changed.similar("pear", 5, mode="vector", prefix="b")  # about 400 rows
    assert read == []
    changed.similar("pear", 5, mode="vector", prefix="a06")  # 24 rows: scanned exactly
    assert read == [1]


def test_a_full_build_orders_again_and_other_filters_read_the_label_map(changed, db, monkeypatch):
    record = changed.record
    subset = Filter(changed.collection_ids(), "a")
    assert Filter(changed.collection_ids(), "a", where={"x": 1}).ordered_labels(db, record) is None
    assert Filter(changed.collection_ids(), "abcdef").ordered_labels(db, record) is None
    monkeypatch.setattr(filters, "LATER_LIMIT", 39)  # 40 labels handed out since
    assert subset.ordered_labels(db, record) is None
    monkeypatch.undo()
    assert subset.ordered_labels(db, record) is not None
    changed.build(full=True)
    assert changed.record.ordered_labels == changed.record.next_label == 1228


def test_a_prefix_of_several_letters_is_a_range_for_each_way_of_writing_them(db, db_path):
    names = ["Docs", "docs", "DOCS", "dOcS", "doc", "docsx", "Dots", "dock"]
    rows = [(f"{name}/{i}", text(i)) for i in range(30) for name in names]
    llm.Collection("d", db, model_id="hash-16").embed_multi(rows, store=True)
    index = Index.create("o", ["d"], db, backend="exact", keywords=True)
    index.build()
    reference = unordered(db_path)
    for prefix in ("docs/", "DOCS", "doCK", "dOc", "docsx/1"):
        subset = Filter(index.collection_ids(), prefix)
        ordered = subset.ordered_labels(db, index.record)
        assert ordered.tolist() == sorted(subset.matching_labels(db, index.record.id).tolist())
        for mode in ("keyword", "vector"):
            found = index.similar("pear plum", 10, prefix, mode=mode)
            assert [e.id for e in found] == [
                e.id for e in reference.similar("pear plum", 10, prefix, mode=mode)
            ]
            assert all(e.id.lower().startswith(prefix.lower()) for e in found)


@pytest.mark.parametrize(
    "damage",
    [
        "update vector_indexes set ordered_labels = 1000000",  # beyond next_label
        "update vector_indexes set ordered_labels = 0",
        "update vector_index_labels set label = 'x' where id = 'a0003'",
        "update vector_index_labels set id = 'a9999' where id = 'b0600'",
    ],
)
def test_a_crafted_catalog_or_label_map_never_raises(changed, db, db_path, damage):
    db.execute(damage)
    db.conn.commit()
    index = Index("o", Database(db_path))
    try:
        found = index.similar("pear", 10, mode="keyword", prefix="a")
    except VectorIndexError:
        return  # said in one line (e.g. a damaged label map)
    assert len(found) <= 10
