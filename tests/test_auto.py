"""``auto``, the default backend: exact while the collection is small, a tuned
faiss HNSW graph above ``exact_limit`` stored values, switching inside a
build, atomically, and back below half the limit."""

import contextlib
import json

import numpy as np
import pytest
from click.testing import CliRunner
from sqlite_utils import Database

from llm_vector_index import DamagedFiles, Index, close_indexes
from llm_vector_index.backends.exact import ExactIndex
from llm_vector_index.backends.faiss import FaissIndex
from llm_vector_index.cli import index_group
from llm_vector_index.testing import clustered_vectors, write_embeddings

from . import workers

DIMENSIONS = 16
LIMIT = 4000  # stored values: 250 rows of 16 dimensions


def add_rows(db, start, count, seed):
    vectors = clustered_vectors(count, DIMENSIONS, clusters=6, seed=seed)
    write_embeddings(db, "c", [f"r{i:05d}" for i in range(start, start + count)], vectors)


def exact_ids(db, query, number):
    return exact_ids_of(db, query, number, upto=None)


def exact_ids_of(db, query, number, upto):
    "The exact top ``number`` of llm's rows (only the first ``upto`` if given)."
    rows = db.execute("select id, embedding from embeddings order by id").fetchall()[:upto]
    vectors = np.stack([np.frombuffer(row[1], "<f4") for row in rows])
    scores = vectors @ query / np.linalg.norm(vectors, axis=1) / np.linalg.norm(query)
    return [rows[i][0] for i in np.argsort(-scores, kind="stable")[:number]]


def answers_exactly(db, index, seed=11):
    for query in clustered_vectors(5, DIMENSIONS, clusters=6, seed=seed):
        assert [e.id for e in index.similar_by_vector(query, 5)] == exact_ids(db, query, 5)


def test_auto_is_the_default_and_small_collections_are_exact(db_path, db):
    add_rows(db, 0, 200, seed=1)
    runner = CliRunner()
    result = runner.invoke(index_group, ["create", "ix", "c", "--build", "-d", str(db_path)])
    assert result.exit_code == 0, result.output
    shown = json.loads(runner.invoke(index_group, ["show", "ix", "-d", str(db_path)]).output)
    assert shown["backend"] == "auto" and shown["options"]["kind"] == "exact"
    assert shown["target_recall"] == 0.95 and shown["tuning"] is None  # nothing to tune
    assert isinstance(Index("ix", db).backend(), ExactIndex)
    answers_exactly(db, Index("ix", db))
    listed = runner.invoke(index_group, ["backends"]).output
    assert "auto: approximate (plugin llm_vector_index.backends.auto)" in listed


def test_auto_switches_kinds_up_and_down(db):
    add_rows(db, 0, 200, seed=1)
    index = Index.create("ix", ["c"], db, options={"exact_limit": LIMIT})
    index.build()
    assert index.record.options["kind"] == "exact"
    add_rows(db, 200, 100, seed=2)  # 300 rows x 16 = 4800 > 4000
    report = index.build()
    options = index.record.options
    assert report.full and options["kind"] == "faiss" and options["factory"] == "HNSW32,SQ8"
    assert options["rerank"] == 2
    assert "4800" not in options["reason"] and "300 rows x 16 dimensions" in options["reason"]
    # 300 rows: under tuning.TUNED_FROM_ROWS, the graph keeps its default width
    # (test_tuning tunes auto's graph on 6,000 rows).
    assert report.tuning is None and options["ef_search"] == 64
    assert isinstance(Index("ix", db).backend(), FaissIndex)
    assert Index("ix", db).backend().count() == 300
    # Between half the limit and the limit: it stays what it is.
    db.execute("delete from embeddings where id >= 'r00180'")
    db.conn.commit()
    report = index.build()
    assert not report.full and index.record.options["kind"] == "faiss"
    db.execute("delete from embeddings where id >= 'r00100'")  # 100 x 16 < 2000
    db.conn.commit()
    report = index.build()
    assert report.full and index.record.options == {
        "exact_limit": LIMIT,
        "max_memory": "",
        "kind": "exact",
        "reason": "100 rows x 16 dimensions is less than half of exact_limit 4000: "
        "exact search is fast enough",
    }
    assert isinstance(Index("ix", db).backend(), ExactIndex)
    answers_exactly(db, Index("ix", db))


def test_a_switch_killed_part_way_leaves_the_old_kind_answering(db_path, db, user_path, forkserver):
    add_rows(db, 0, 200, seed=1)
    Index.create("ix", ["c"], db, options={"exact_limit": LIMIT}, refresh="manual").build()
    add_rows(db, 200, 100, seed=2)
    for point in ["scanned", "saved", "swapped", "committing"]:
        ready = forkserver.Event()
        child = forkserver.Process(
            target=workers.build, args=(str(db_path), "ix", False, str(user_path), point, ready)
        )
        child.start()
        child.join(60)
        assert child.exitcode == -9, point  # killed at that point
        index = Index("ix", Database(db_path))
        assert index.record.options["kind"] == "exact", point  # not committed
        query = clustered_vectors(1, DIMENSIONS, clusters=6, seed=5)[0]
        committed = exact_ids_of(db, query, 5, upto=200)
        if point in ("scanned", "saved"):  # the new kind is still in staging
            assert [e.id for e in index.similar_by_vector(query, 5)] == committed
        else:
            # Swapped in, not committed: the committed index, if this process
            # still has it open, answers; opening the files is refused in one
            # line: they are never misread.
            with contextlib.suppress(DamagedFiles):
                assert [e.id for e in index.similar_by_vector(query, 5)] == committed
            close_indexes()
            with pytest.raises(DamagedFiles, match="run llm index build ix"):
                Index("ix", Database(db_path)).similar_by_vector(query, 5)
    index = Index("ix", db)
    report = index.build()
    assert report.full and index.record.options["kind"] == "faiss" and report.rows == 300
    assert isinstance(Index("ix", db).backend(), FaissIndex)
