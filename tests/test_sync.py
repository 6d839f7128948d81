"Incremental builds: each case checks what queries return afterwards."

import contextlib
import fcntl

import numpy as np
import pytest
from click.testing import CliRunner
from llm.cli import cli as llm_cli

from llm_vector_index import (
    DamagedFiles,
    DimensionMismatch,
    Index,
    IndexBusy,
    ModelMismatch,
    catalog,
    close_indexes,
)
from llm_vector_index.testing import clustered_vectors, write_embeddings

from .conftest import snapshot

BACKENDS = ["exact", "faiss"]


def top(index, vector, number=1):
    return [e.id for e in index.similar_by_vector(vector, number)]


def labels(db):
    return db.execute("select count(*) from vector_index_labels").fetchone()[0]


@pytest.fixture(params=BACKENDS)
def built(request, db, vectors_collection):
    index = Index.create("ix", ["vecs"], db, backend=request.param)
    index.build()
    return index


def test_add(db, built):
    fresh = clustered_vectors(5, 24, clusters=2, seed=99) * 3
    write_embeddings(db, "vecs", [f"new{i}" for i in range(5)], fresh)
    report = built.build()
    assert (report.full, report.added, report.deleted, report.rows) == (False, 5, 0, 205)
    for i in range(5):
        assert top(built, fresh[i]) == [f"new{i}"]
    assert labels(db) == 205


def test_change_same_id_new_vector(db, built, vectors_collection):
    _ids, vectors = vectors_collection
    replacement = -vectors[7]
    write_embeddings(db, "vecs", ["v007"], replacement[None])
    report = built.build()
    assert (report.added, report.deleted, report.rows) == (1, 0, 200)
    assert top(built, replacement) == ["v007"]
    assert built.similar_by_vector(replacement, 1)[0].score == pytest.approx(1.0)
    assert "v007" not in top(built, vectors[7], 10)


def test_delete(db, built, vectors_collection):
    _ids, vectors = vectors_collection
    db.execute("delete from embeddings where id in ('v001', 'v002')")
    db.conn.commit()
    report = built.build()
    assert (report.added, report.deleted, report.rows) == (0, 2, 198)
    assert not {"v001", "v002"} & set(top(built, vectors[1], 200))
    assert len(built.similar_by_vector(vectors[1], 500)) == 198
    assert labels(db) == 198


def test_deleted_rows_never_returned_before_rebuild(db, built, vectors_collection):
    _ids, vectors = vectors_collection
    nearest = top(built, vectors[3], 5)
    db.execute("delete from embeddings where id = ?", [nearest[0]])
    db.conn.commit()
    results = top(built, vectors[3], 5)
    assert nearest[0] not in results and len(results) == 5


def test_collection_deleted_with_llm(db_path, db, vectors_collection):
    write_embeddings(db, "other", ["o1", "o2"], clustered_vectors(2, 24, seed=8))
    index = Index.create("ix", ["vecs", "other"], db, backend="faiss")
    assert index.build().rows == 202
    result = CliRunner().invoke(llm_cli, ["collections", "delete", "other", "-d", str(db_path)])
    assert result.exit_code == 0, result.output
    report = index.build()
    assert (report.deleted, report.rows) == (2, 200)
    assert not {"o1", "o2"} & {e.id for e in index.similar_by_vector(np.ones(24), 300)}


def test_rows_written_in_the_second_of_the_build(db, built, vectors_collection):
    _ids, vectors = vectors_collection
    second = built.record.watermark  # whole second in which the build started
    changed = vectors[10] * -1
    write_embeddings(db, "vecs", ["v010"], changed[None], updated=second)
    # a new row carrying an old timestamp, as another tool might write
    write_embeddings(db, "vecs", ["old-stamp"], (vectors[20] * -1)[None], updated=5)
    report = built.build()
    assert report.added == 2
    assert top(built, changed) == ["v010"]
    assert top(built, -vectors[20]) == ["old-stamp"]


def test_row_rewritten_within_the_same_second(db, built, vectors_collection):
    _ids, vectors = vectors_collection
    second = built.record.watermark + 5  # still "now" for the next builds
    write_embeddings(db, "vecs", ["hot"], vectors[:1] * -1, updated=second)
    assert built.build().added == 1
    rewritten = vectors[1] * -1  # same id, same second, another vector
    write_embeddings(db, "vecs", ["hot"], rewritten[None], updated=second)
    assert built.build().added == 1
    assert top(built, rewritten) == ["hot"]
    assert built.build().added == 0  # re-read, compared, unchanged


def test_nothing_to_do(db, built):
    before = snapshot(built.path)
    generation = built.record.generation
    report = built.build()
    assert (report.added, report.deleted, report.rows) == (0, 0, 200)
    assert snapshot(built.path) == before
    assert built.record.generation == generation  # the files did not change


def test_full_rebuild(db, built, vectors_collection):
    _ids, vectors = vectors_collection
    expected = top(built, vectors[0], 10)
    report = built.build(full=True)
    assert (report.full, report.added, report.rows) == (True, 200, 200)
    assert top(built, vectors[0], 10) == expected
    assert labels(db) == 200


def reopen_after_crash(db, late, query):
    """The index as the next process sees it after a build died before its commit."""
    reopened = Index("ix", db)
    reopened.set_refresh("manual")
    # This process still holds the committed index open, and may answer from it.
    with contextlib.suppress(DamagedFiles):
        assert "late" not in [e.id for e in reopened.similar_by_vector(late)]
    close_indexes()  # a new process opens the files, and refuses them
    with pytest.raises(DamagedFiles, match="do not match its catalog"):
        reopened.similar_by_vector(query)
    return reopened


def test_interrupted_build_is_detected_and_repaired(db, built, vectors_collection, monkeypatch):
    _ids, vectors = vectors_collection
    write_embeddings(db, "vecs", ["late"], (vectors[0] * -1)[None])

    def crash(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(catalog, "commit_build", crash)
    with pytest.raises(KeyboardInterrupt):
        built.build()  # backend saved, catalog not committed
    monkeypatch.undo()
    reopened = reopen_after_crash(db, -vectors[0], vectors[0])
    report = reopened.build()
    assert report.full and report.rows == 201
    assert top(reopened, -vectors[0]) == ["late"]


def test_interrupted_build_repaired_by_an_auto_refresh_query(
    db, built, vectors_collection, monkeypatch
):
    _ids, vectors = vectors_collection
    write_embeddings(db, "vecs", ["late"], (vectors[0] * -1)[None])
    monkeypatch.setattr(
        catalog, "commit_build", lambda *a, **k: (_ for _ in ()).throw(KeyboardInterrupt)
    )
    with pytest.raises(KeyboardInterrupt):
        built.build()
    monkeypatch.undo()
    assert top(Index("ix", db), -vectors[0]) == ["late"]  # rebuilt first, then answered


def test_interrupted_full_build_is_detected(db, built, vectors_collection, monkeypatch):
    _ids, vectors = vectors_collection
    db.execute("delete from embeddings where id = 'v000'")  # new labels differ
    db.conn.commit()

    def crash(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(catalog, "commit_build", crash)
    with pytest.raises(KeyboardInterrupt):
        built.build(full=True)  # files swapped in, catalog not committed
    monkeypatch.undo()
    reopened = reopen_after_crash(db, -vectors[0], vectors[1])
    assert reopened.build().full
    assert top(reopened, vectors[1]) == ["v001"]


def test_model_change_is_refused(db, built):
    before = snapshot(built.path)
    db.execute("update collections set model = 'other-model' where name = 'vecs'")
    db.conn.commit()
    with pytest.raises(ModelMismatch, match="now uses other-model"):
        built.build()
    with pytest.raises(ModelMismatch):
        built.build(full=True)
    assert snapshot(built.path) == before


@pytest.mark.parametrize("full", [False, True])
def test_a_row_of_another_width_is_held_back_and_counted(db, built, full):
    "One odd row never blocks the build nor any query, and is never returned."
    write_embeddings(db, "vecs", ["short"], np.ones((1, 8), np.float32))
    report = built.build(full=full)
    assert (report.rows, report.held_back) == (200, 1)
    assert labels(db) == 201  # held back under a label of its own, looked at again
    results = built.similar_by_vector(np.ones(24), 300)
    assert len(results) == 200 and "short" not in {entry.id for entry in results}
    with pytest.raises(DimensionMismatch, match="Query vector has 8 dimensions"):
        built.similar_by_id("short", 3)
    write_embeddings(db, "vecs", ["short"], np.ones((1, 24), np.float32))  # fixed
    again = built.build()
    assert (again.added, again.rows, again.held_back) == (1, 201, 0)
    assert "short" in {entry.id for entry in built.similar_by_vector(np.ones(24), 300)}


def test_the_most_common_width_decides_an_index_s_dimensions(db):
    write_embeddings(db, "mixed", ["odd"], np.ones((1, 8), np.float32))  # stored first
    write_embeddings(db, "mixed", [f"r{i}" for i in range(5)], np.eye(5, 24, dtype=np.float32))
    index = Index.create("mixed-ix", ["mixed"], db, backend="exact")
    report = index.build()
    assert (index.record.dimensions, report.rows, report.held_back) == (24, 5, 1)


def test_one_build_at_a_time(db, built):
    with open(built.lock_path, "a") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        with pytest.raises(IndexBusy, match="being built by another process"):
            built.build()


def test_embed_through_llm_then_build(db, text_collection):
    index = Index.create("t", ["docs"], db, backend="exact")
    index.build()
    text_collection.embed("fresh", "zebra zebra quokka", store=True)
    assert index.build().added == 1
    assert index.similar("zebra zebra quokka", 1)[0].id == "fresh"


def test_row_rewritten_with_an_older_updated_is_seen(db, built, vectors_collection):
    "Imports, restores and stepped-back clocks: llm-style replace, old timestamp."
    _ids, vectors = vectors_collection  # written with updated=1000, built after
    replacement = -vectors[11]
    write_embeddings(db, "vecs", ["v011"], replacement[None], updated=5)
    report = built.build()
    assert (report.added, report.deleted, report.rows) == (1, 0, 200)
    assert top(built, replacement) == ["v011"]
    assert built.build().added == 0  # and only once


def test_a_row_under_a_reused_rowid_with_an_old_timestamp_is_seen(db, built, vectors_collection):
    """Delete the row with the highest rowid, insert another with an old
    timestamp: SQLite gives it the same rowid, so the collection's freshness
    fingerprint (max rowid, max updated) does not move. The build's quick
    check (sync.nothing_changed) still sees it: the label sums differ."""
    _ids, vectors = vectors_collection
    last_id = db.execute("select id from embeddings order by rowid desc limit 1").fetchone()[0]
    rowid = db.execute("select max(rowid) from embeddings").fetchone()[0]
    db.execute("delete from embeddings where id = ?", [last_id])
    db.conn.commit()
    write_embeddings(db, "vecs", ["newcomer"], -vectors[3][None], updated=7)
    assert db.execute("select rowid from embeddings where id = 'newcomer'").fetchone()[0] == rowid
    report = built.build()
    assert (report.added, report.deleted, report.rows) == (1, 1, 200)
    assert top(built, -vectors[3]) == ["newcomer"]
    assert built.build().added == 0


def test_plain_update_in_place_needs_verify(db, built, vectors_collection):
    "A SQL UPDATE keeps rowid and updated: the cheap scan cannot see it, --verify does."
    _ids, vectors = vectors_collection
    replacement = -vectors[12]
    db.execute(
        "update embeddings set embedding = ? where id = 'v012'",
        [replacement.astype("<f4").tobytes()],
    )
    db.conn.commit()
    assert built.build().added == 0  # documented blind spot
    report = built.build(verify=True)
    assert (report.added, report.deleted, report.rows) == (1, 0, 200)
    assert top(built, replacement) == ["v012"]
    assert built.build(verify=True).added == 0


def test_verify_from_the_command_line(db, db_path, built, vectors_collection):
    from llm_vector_index.cli import index_group

    _ids, vectors = vectors_collection
    db.execute(
        "update embeddings set embedding = ? where id in ('v020', 'v021')",
        [(vectors[0] * 2).astype("<f4").tobytes()],
    )
    db.conn.commit()
    result = CliRunner().invoke(index_group, ["build", "ix", "--verify", "-d", str(db_path)])
    assert result.exit_code == 0, result.output
    assert "Build of ix: 2 indexed, 0 removed, 200 rows" in result.stderr


def test_full_build_lets_llm_write_between_batches(db_path, db, monkeypatch):
    "llm's writers must never wait for more than one batch of a full build's scan."
    import sqlite3

    from sqlite_utils import Database

    from llm_vector_index import sync

    monkeypatch.setattr(sync, "BATCH_SIZE", 50)
    vectors = clustered_vectors(520, 24, clusters=4, seed=2)
    write_embeddings(db, "c", [f"r{i:03d}" for i in range(500)], vectors[:500])
    index = Index.create("ix", ["c"], db, backend="exact")
    written = []

    def write_while_building(done, total):
        # A second connection, as `llm embed` in another process, that gives
        # up after 0.2 s: a scan holding SQLite's read lock would block it.
        other = Database(sqlite3.connect(db_path, timeout=0.2))
        n = len(written)
        write_embeddings(
            other, "c", [f"late{n:02d}", f"r{n:03d}"], np.stack([vectors[500 + n], -vectors[n]])
        )
        other.conn.close()
        written.append(n)

    report = index.build(full=True, progress=write_while_building)
    assert len(written) == 10 and report.rows == 500
    # What was written during the scan is picked up by the next build, once.
    report = index.build()
    assert (report.added, report.rows) == (20, 510)
    for n in range(10):
        assert top(index, vectors[500 + n]) == [f"late{n:02d}"]
        assert top(index, -vectors[n]) == [f"r{n:03d}"]
    assert labels(db) == 510


def test_row_deleted_and_written_again_during_a_build(
    db_path, db, built, vectors_collection, monkeypatch
):
    "Listed as changed, deleted before the deletion scan, written again before it is read."
    from llm_vector_index import sync as sync_module

    _ids, vectors = vectors_collection
    write_embeddings(db, "vecs", ["v030"], -vectors[30][None], updated=2000)
    original = sync_module._changed_rows

    def delete_and_rewrite_after_listing(*args, **kwargs):
        changed = original(*args, **kwargs)
        db.execute("delete from embeddings where id = 'v030'")
        db.conn.commit()
        return changed

    monkeypatch.setattr(sync_module, "_changed_rows", delete_and_rewrite_after_listing)
    original_read = sync_module.read_rows

    def write_again_then_read(db_, collection_id, wanted, dimensions, **options):
        if list(wanted) == ["v030"]:  # the build reading what it listed
            write_embeddings(db, "vecs", ["v030"], (vectors[30] * 3)[None], updated=2001)
        return original_read(db_, collection_id, wanted, dimensions, **options)

    monkeypatch.setattr(sync_module, "read_rows", write_again_then_read)
    built.build()
    monkeypatch.undo()
    rows = db.execute("select count(*) from embeddings").fetchone()[0]
    assert built.backend().count() == labels(db) == rows == 200
    assert top(built, vectors[30]) == ["v030"]
