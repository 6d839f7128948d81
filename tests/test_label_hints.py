"""The label map's row hints (catalog m006): a query finds a winner's row in
llm's table by the rowid the build read, checked against (collection_id, id)
on every read. A hint that no longer holds its row (llm's replace, VACUUM, a
crafted database, a label map from before hints) falls back to the key: the
answer never changes, and never names another row."""

import numpy as np
import pytest

from llm_vector_index import Index
from llm_vector_index.testing import clustered_vectors, write_embeddings


@pytest.fixture
def two_collections(db, vectors_collection):
    "vecs (200 rows) and a second collection holding the same ids, other vectors."
    ids, vectors = vectors_collection
    write_embeddings(
        db, "more", ids, clustered_vectors(200, 24, clusters=8, seed=9), model="test-model"
    )
    index = Index.create("both", ["vecs", "more"], db, backend="exact")
    index.build()
    return index, vectors


def answers(index, queries):
    return [
        [(e.collection, e.id, e.score, e.content) for e in index.similar_by_vector(q, 7)]
        for q in queries
    ]


def hints_hold(db):
    "How many labels' hints are their rows' rowids, of how many."
    return db.execute("""
        select count(e.rowid), count(*) from vector_index_labels l
        left join embeddings e on e.rowid = l.hint
            and e.collection_id = l.collection_id and e.id = l.id
        """).fetchone()


def test_builds_keep_each_rows_rowid_and_follow_llms_replace(db, two_collections):
    index, vectors = two_collections
    assert hints_hold(db) == (400, 400)
    # llm's embed writes by insert-or-replace: the row takes a new rowid
    before = db.execute("select rowid from embeddings where id = 'v005'").fetchall()
    write_embeddings(db, "vecs", ["v005"], vectors[6:7] * 2, model="test-model", updated=2000)
    assert db.execute("select rowid from embeddings where id = 'v005'").fetchall() != before
    assert hints_hold(db) == (399, 400)
    index.build()
    assert hints_hold(db) == (400, 400)


@pytest.mark.parametrize(
    "craft",
    [
        "update vector_index_labels set hint = null",
        # every hint points at another row: the same id in the other collection
        "update vector_index_labels set hint = (select e.rowid from embeddings e "
        "where e.id = vector_index_labels.id and e.collection_id != vector_index_labels.collection_id)",
        # or at rows of other ids, and at rowids no row has
        "update vector_index_labels set hint = 401 - hint",
        "update vector_index_labels set hint = hint + 100000",
    ],
)
def test_a_hint_that_no_longer_holds_its_row_changes_no_answer(db, two_collections, craft):
    from llm_vector_index.filters import Filter

    index, vectors = two_collections
    queries = vectors[::25] + 0.01
    expected = answers(index, queries)
    # a metadata filter checks each label's row, found by its hint too
    db.execute("update embeddings set metadata = json_object('odd', rowid % 2)")
    db.conn.commit()
    odd = Filter(index.collection_ids(), where={"odd": 1})
    allowed = odd.allows(db, index.record.id, np.arange(400), hints=True)
    assert 150 < allowed.sum() < 250
    db.execute(craft)
    db.conn.commit()
    assert hints_hold(db)[0] == 0
    assert answers(Index("both", db), queries) == expected
    for hints in (True, False):
        assert odd.allows(db, index.record.id, np.arange(400), hints=hints).tolist() == (
            allowed.tolist()
        )


def test_a_label_map_from_before_hints_answers_and_the_next_build_fills_them(db, two_collections):
    index, vectors = two_collections
    queries = vectors[::25] - 0.01
    expected = answers(index, queries)
    db.execute("alter table vector_index_labels drop column hint")
    db.execute("delete from _sqlite_migrations where name = 'm006_label_hints'")
    db.conn.commit()
    old = Index("both", db)
    assert not old.label_hints
    assert answers(old, queries) == expected  # a query does not upgrade the catalog
    assert "hint" not in db["vector_index_labels"].columns_dict
    old.build()
    assert old.label_hints
    assert hints_hold(db) == (400, 400)
    assert answers(old, queries) == expected
    assert np.isfinite([score for rows in expected for _, _, score, _ in rows]).all()
