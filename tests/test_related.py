"""Related items (related.py, related_store.py, ``llm index related``): each
row's nearest other rows, saved into a table of llm's database, kept up to
date by later saves that search only the rows whose neighbours can have
moved; and every bad input refused with nothing changed."""

import json

import llm
import numpy as np
import pytest
from click.testing import CliRunner
from sqlite_utils import Database

from llm_vector_index import Index, VectorIndexError, related, related_store
from llm_vector_index.cli import index_group
from llm_vector_index.testing import clustered_vectors, write_embeddings

from .conftest import snapshot


def run(*args):
    return CliRunner().invoke(index_group, [str(arg) for arg in args])


def table_rows(db, table, index="ix"):
    return db.execute(
        f"select collection, id, other_collection, other_id, score, rank from [{table}] "
        "where index_name = ? order by collection, id, rank",
        [index],
    ).fetchall()


def lists_of(db, table, index="ix"):
    lists = {}
    for _collection, id, _, other, score, _rank in table_rows(db, table, index):
        lists.setdefault(id, []).append((other, score))
    return lists


def llms_related(db, collection, number):
    "llm's own answer: similar_by_id for every row, by its brute-force scan."
    llm_collection = llm.Collection(collection, db, create=False)
    ids = [row[0] for row in db.execute("select id from embeddings order by rowid")]
    return {
        id: [(e.id, e.score) for e in llm_collection.similar_by_id(id, number, index=False)]
        for id in ids
    }


@pytest.fixture
def exact(db, vectors_collection):
    index = Index.create("ix", ["vecs"], db, backend="exact")
    index.build()
    return index


def test_saved_rows_are_llms_similar_by_id_for_every_row(db, exact):
    report = exact.save_related("related", 5)
    assert (report.rows, report.saved, report.full) == (200, 1000, True)
    assert report.reason == "the first save of index 'ix' into 'related'"
    expected = llms_related(db, "vecs", 5)
    saved = lists_of(db, "related")
    assert {id: [o for o, _ in others] for id, others in saved.items()} == {
        id: [o for o, _ in others] for id, others in expected.items()
    }
    for id, others in saved.items():
        assert [s for _, s in others] == pytest.approx([s for _, s in expected[id]], abs=1e-12)
    rows = table_rows(db, "related")
    assert {row[0] for row in rows} == {"vecs"} and {row[2] for row in rows} == {"vecs"}
    assert [row[5] for row in rows[:5]] == [1, 2, 3, 4, 5]
    # the Python iterator yields the same rows
    assert [tuple(row) for row in exact.related(5)] == sorted(rows, key=lambda r: (r[1], r[5]))


@pytest.mark.parametrize("backend", ["faiss", "hnswlib", "chroma", "auto"])
def test_approximate_backends_find_llms_neighbours(db, vectors_collection, backend):
    index = Index.create("ix", ["vecs"], db, backend=backend)
    index.build()
    index.save_related("related", 5)
    expected = llms_related(db, "vecs", 5)
    saved = lists_of(db, "related")
    found = sum(len({o for o, _ in saved[id]} & {o for o, _ in expected[id]}) for id in expected)
    assert found / 1000 >= 0.95
    scores = {(id, o): s for id, others in expected.items() for o, s in others}
    for id, others in saved.items():
        assert id not in {o for o, _ in others}  # never a row's own neighbour
        for other, score in others:
            if (id, other) in scores:
                assert score == pytest.approx(scores[id, other], abs=1e-12)


def test_an_index_over_two_collections_names_each_neighbours_collection(db):
    vectors = clustered_vectors(60, 8, clusters=3, seed=1)
    write_embeddings(db, "a", [f"r{i}" for i in range(30)], vectors[:30])
    write_embeddings(db, "b", [f"r{i}" for i in range(30)], vectors[30:])  # the same ids
    index = Index.create("ix", ["a", "b"], db, backend="exact")
    index.build()
    index.save_related("related", 3)
    rows = table_rows(db, "related")
    assert len(rows) == 180 and {row[0] for row in rows} == {"a", "b"}
    assert {row[2] for row in rows} == {"a", "b"}
    assert all((row[0], row[1]) != (row[2], row[3]) for row in rows)


def change_rows(db, rng, vectors, ids, updated):
    "Three rows get new vectors, two are added, two deleted."
    changed = [ids[i] for i in 2 + rng.choice(len(ids) - 2, 3, replace=False)]
    write_embeddings(
        db, "vecs", changed, rng.standard_normal((3, vectors.shape[1])).astype("<f4"),
        updated=updated,
    )  # fmt: skip
    write_embeddings(
        db, "vecs", ["new-1", "new-2"], vectors[:2] + 0.01, updated=updated
    )  # near v000, v001: they enter those rows' neighbours
    gone = [id for id in ids[2:] if id not in changed][-2:]
    db.execute(f"delete from embeddings where id in ({','.join('?' * len(gone))})", gone)
    db.conn.commit()
    return changed, gone


def test_a_later_save_searches_only_rows_whose_neighbours_moved(db, exact, vectors_collection):
    ids, vectors = vectors_collection
    exact.save_related("related", 5)
    unchanged = exact.save_related("related", 5)
    assert (unchanged.rows, unchanged.reason, unchanged.full) == (0, "up to date", False)
    rng = np.random.default_rng(3)
    _changed, gone = change_rows(db, rng, vectors, ids, updated=5000)
    report = exact.save_related("related", 5)  # brings the index up to date first
    assert not report.full and report.reason == ""
    assert 5 <= report.rows < 200
    assert report.saved == 1000  # 200 - 2 + 2 rows, 5 each
    # exactly what a full pass finds, row for row
    exact.save_related("again", 5, full=True)
    assert lists_of(db, "related") == lists_of(db, "again")
    saved = lists_of(db, "related")
    assert not set(gone) & set(saved) and not any(
        other in gone for others in saved.values() for other, _ in others
    )
    assert "new-1" in saved and "new-1" in {o for o, _ in saved["v000"]}


@pytest.mark.parametrize(
    "meddle,reason",
    [
        (lambda db, index: index.save_related("related", 3), None),  # -n changed
        (
            lambda db, index: db.execute("delete from related where rank = 5"),
            "rows of index 'ix' in 'related' were changed since the last save",
        ),
        (
            lambda db, index: db.execute("drop table related"),
            "table 'related' was dropped since the last save",
        ),
    ],
)
def test_a_save_that_cannot_trust_the_last_one_says_why_and_searches_every_row(
    db, exact, meddle, reason
):
    exact.save_related("related", 5)
    meddle(db, exact)
    db.conn.commit()
    report = exact.save_related("related", 5)
    assert report.full and report.rows == 200 and report.saved == 1000
    assert report.reason == (reason or "the last save kept 3 neighbours a row, this one 5")
    exact.save_related("again", 5)
    assert lists_of(db, "related") == lists_of(db, "again")


def test_many_changed_rows_make_a_full_pass_and_say_so(db, exact, vectors_collection):
    ids, vectors = vectors_collection
    exact.save_related("related", 5)
    write_embeddings(db, "vecs", ids[:60], vectors[60:120], updated=5000)
    report = exact.save_related("related", 5)
    assert report.full and report.rows == 200
    assert report.reason == (
        "60 of 200 rows changed: finding every row's neighbours again costs less "
        "than finding the rows they reach"
    )


def test_rows_that_cannot_be_ranked_are_never_related(db, vectors_collection):
    db.execute("update embeddings set embedding = ? where id = 'v003'", [bytes(4 * 24)])
    db.conn.commit()
    index = Index.create("ix", ["vecs"], db, backend="exact")
    index.build()
    index.save_related("related", 5)
    rows = table_rows(db, "related")
    assert "v003" not in {row[1] for row in rows} | {row[3] for row in rows}
    assert len(rows) == 199 * 5


def test_indexes_share_a_table_and_a_drop_takes_only_its_rows(db_path, db, exact):
    other = Index.create("other", ["vecs"], db, backend="faiss")
    other.build()
    exact.save_related("related", 5)
    other.save_related("related", 2)
    assert len(table_rows(db, "related", "other")) == 400
    ours = table_rows(db, "related")
    other.close()
    assert run("drop", "other", "-d", db_path).exit_code == 0
    db = Database(db_path)
    assert db.table("related").exists()  # the table stays: a view may read it
    assert table_rows(db, "related", "other") == [] and table_rows(db, "related") == ours
    assert db.execute("select count(*) from vector_index_related").fetchone()[0] == 1


def test_cli_saves_and_reports(db_path, exact):
    result = run("related", "ix", "-n", "4", "--save", "related", "-d", db_path)
    assert result.exit_code == 0, result.output
    assert result.stderr == (
        "Saved 800 related rows to related: 200 rows searched "
        "(the first save of index 'ix' into 'related')\n"
    )
    result = run("related", "ix", "-n", "4", "--save", "related", "-d", db_path)
    assert (
        result.stderr == "Saved 800 related rows to related: nothing changed since the last save\n"
    )
    printed = run("related", "ix", "-n", "2", "-d", db_path)
    assert printed.exit_code == 0
    first = json.loads(printed.stdout.splitlines()[0])
    assert set(first) == {"collection", "id", "other_collection", "other_id", "score", "rank"}
    assert len(printed.stdout.splitlines()) == 400


@pytest.mark.parametrize(
    "args,message",
    [
        (
            ["--save", "embeddings"],
            "Table name 'embeddings' is taken by llm, SQLite or this plugin",
        ),
        (["--save", "vector_indexes"], "Table name 'vector_indexes' is taken by llm"),
        (["--save", "sqlite_master"], "Table name 'sqlite_master' is taken by llm"),
        (
            ["--save", "notes"],
            "Table 'notes' exists and was not made by llm index related: choose another name",
        ),
        (["--save", "a view"], "Table name 'a view' is not valid"),
        (["--save", "x]; drop table embeddings; --"], "is not valid"),
        (["--save", "notes_view"], "'notes_view' is a view, not a table: choose another name"),
        (["-n", "0", "--save", "r"], "Invalid value for '-n' / '--number'"),
        (["-n", "101", "--save", "r"], "Invalid value for '-n' / '--number'"),
        (["--full"], "--full needs --save"),
    ],
)
def test_bad_input_is_one_line_and_changes_nothing(db_path, db, exact, args, message):
    db.execute("create table notes (id text, body text)")
    db.execute("insert into notes values ('a', 'keep me')")
    db.execute("create view notes_view as select * from notes")
    db.conn.commit()
    before = snapshot(db_path, db_path.parent / "embeddings.db.vector-indexes")
    result = run("related", "ix", *args, "-d", db_path)
    assert result.exit_code != 0 and message in result.output
    assert "Traceback" not in result.output
    # one line for an error (exit 1); click's usage block for misuse (exit 2)
    assert result.output.strip().splitlines()[-1].startswith("Error: ")
    assert len(result.output.strip().splitlines()) == (1 if result.exit_code == 1 else 4)
    assert snapshot(db_path, db_path.parent / "embeddings.db.vector-indexes") == before


def test_a_table_changed_since_it_was_made_is_refused(db_path, db, exact):
    exact.save_related("related", 5)
    db.execute("alter table related add column note text")
    db.conn.commit()
    before = snapshot(db_path)
    result = run("related", "ix", "--save", "related", "-d", db_path)
    assert result.exit_code == 1
    assert result.output.startswith(
        "Error: Table 'related' was changed since llm index related made it"
    )
    assert snapshot(db_path) == before


def test_unbuilt_and_unknown_indexes_are_refused(db_path, db, vectors_collection):
    Index.create("ix", ["vecs"], db, backend="exact")
    result = run("related", "ix", "--save", "related", "-d", db_path)
    assert result.exit_code == 1 and "has not been built: run llm index build ix" in result.output
    assert not db.table("related").exists()
    result = run("related", "nope", "--save", "related", "-d", db_path)
    assert result.exit_code == 1 and result.output.count("\n") == 1


def test_a_save_that_read_an_older_one_is_refused(db, exact):
    exact.save_related("related", 5)
    registered = related_store.registration(db, exact.record.id, "related")
    exact.save_related("related", 4)  # another save commits meanwhile
    with pytest.raises(VectorIndexError, match="finished meanwhile: run this one again"):
        related_store.write(
            db, index_id=exact.record.id, index_name="ix", table="related", number=5,
            replaced=None, rows=[], seen={}, version=registered.version,
        )  # fmt: skip
    assert len(table_rows(db, "related")) == 800


def test_a_crafted_registration_never_reaches_llms_tables(db, exact):
    exact.save_related("related", 5)
    for table in ("embeddings", "collections"):
        db.execute(
            "insert into vector_index_related values (?, ?, 5, 1000, 1, 0)",
            [exact.record.id, table],
        )
    db.conn.commit()
    rows = db.execute("select count(*) from embeddings").fetchone()[0]
    exact.delete()
    assert db.execute("select count(*) from embeddings").fetchone()[0] == rows
    assert db.execute("select count(*) from related").fetchone()[0] == 0


def test_numbers_are_checked_in_python(exact):
    for number in (0, 101, True, 2.5):
        with pytest.raises(VectorIndexError, match="number must be a whole number from 1 to 100"):
            exact.save_related("related", number)
    with pytest.raises(VectorIndexError, match="is not valid"):
        exact.save_related("1st", 5)
    assert related.MAX_NUMBER == 100


def test_related_checks_before_the_first_row(db, vectors_collection, exact):
    with pytest.raises(VectorIndexError, match="number must be a whole number"):
        exact.related(0)  # not only once iterated
    unbuilt = Index.create("unbuilt", ["vecs"], db, backend="exact")
    with pytest.raises(VectorIndexError, match="has not been built"):
        unbuilt.related(5)
