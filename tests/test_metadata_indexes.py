"""SQLite indexes on llm's metadata for the keys an index is filtered by
(metadata_indexes.py): filters answer exactly as without them, in every
mode, and read an index range instead of every row's JSON; the plugin drops
only the SQLite indexes it made; bad keys and crafted catalogs change
nothing."""

import json
import sqlite3
from contextlib import closing

import llm
import numpy as np
import pytest
from click.testing import CliRunner
from llm.cli import cli as llm_cli
from sqlite_utils import Database

from llm_vector_index import Index, keyword_filter, metadata_indexes, reader, reuse
from llm_vector_index.cli import index_group
from llm_vector_index.filters import Filter
from llm_vector_index.restriction import restriction
from tests.conftest import WORDS, snapshot

KINDS = ["red", "green", "blue"]


def metadata(i):
    "Every kind of value json_extract compares: text, integers, reals, booleans, nesting."
    if i % 17 == 0:
        return None  # no metadata at all
    values = {"kind": KINDS[i % 3], "n": i % 5, "flag": i % 2 == 0, "in": {"depth": i % 4}}
    if i % 7 == 0:
        values["n"] = float(i % 5)  # 2.0 = 2 in SQLite
    if i % 11 == 0:
        del values["kind"]
    return values


def embed(db, name, start, count):
    llm.Collection(name, db, model_id="hash-16").embed_multi_with_metadata(
        (
            (
                f"r{i:04d}",
                f"{WORDS[i % len(WORDS)]} {WORDS[(i * 5) % len(WORDS)]} row {i}",
                metadata(i),
            )
            for i in range(start, start + count)
        ),
        store=True,
    )


@pytest.fixture
def two(db):
    embed(db, "one", 0, 300)
    embed(db, "two", 300, 200)
    index = Index.create("m", ["one", "two"], db, backend="exact", keywords=True)
    index.build()
    return index


FILTERS = [
    {"where": {"kind": "red"}},
    {"where": {"n": 2}},  # 2 and 2.0
    {"where": {"n": 2.0}},
    {"where": {"flag": True}},  # true is 1 to json_extract
    {"where": {"in.depth": 3}},
    {"where": {"kind": "red", "n": 1}},
    {"where": {"kind": "red", "flag": False}},  # one key indexed, one not (below)
    {"where": {"kind": "red"}, "prefix": "r00"},
    {"where": {"kind": "blue"}, "collection": "two"},
    {"where": {"kind": "nothing"}},
    {"where": {"n": "2"}},  # text, not a number: nothing
]


def answers(index, chosen):
    reuse.forget(index.db)
    found = {}
    for mode in ("keyword", "vector", "hybrid"):
        for words in ("cat dog", "lemon", "row 7"):
            found[mode, words] = [
                (e.id, e.score, e.keyword_score, e.fused)
                for e in index.similar(words, 10, mode=mode, **chosen)
            ]
    return found


@pytest.mark.parametrize("read_limit", [2000, 10], ids=["labels-read", "rows-checked"])
def test_filters_answer_as_without_the_metadata_indexes(two, db, monkeypatch, read_limit):
    # with a low READ_LIMIT, a first keyword query checks its ranked rows
    # against the filter (Filter.allows) rather than reading the labels whole
    monkeypatch.setattr(keyword_filter, "READ_LIMIT", read_limit)
    before = {json.dumps(chosen): answers(two, chosen) for chosen in FILTERS}
    assert two.index_metadata(["kind", "n", "in.depth"]) == ["kind", "n", "in.depth"]
    assert two.metadata_keys == ["in.depth", "kind", "n"]
    for chosen in FILTERS:
        assert answers(two, chosen) == before[json.dumps(chosen)], chosen
        # and asked again (the restriction reused, its labels read whole)
        assert answers(two, chosen) == before[json.dumps(chosen)], chosen
    # as the unfiltered ranking, filtered
    red = [
        e.id
        for e in two.similar("cat dog", 500, mode="keyword")
        if e.metadata and e.metadata.get("kind") == "red"
    ]
    assert [e.id for e in two.similar("cat dog", 10, mode="keyword", where={"kind": "red"})] == red[
        :10
    ]


def test_a_filter_reads_the_metadata_index_not_every_row(two, db):
    two.index_metadata(["kind"])
    reuse.forget(db)
    query_plans = []
    for sql in _filter_statements(two, lambda: two.similar("cat", 10, where={"kind": "red"})):
        query_plans.append(" | ".join(row[3] for row in _explain(db, sql)))
    assert query_plans
    assert all("idx_embeddings_metadata_kind" in plan for plan in query_plans), query_plans


def _filter_statements(index, run):
    "The statements a filtered query sends with the metadata's value in them, as SQLite ran them."
    connection = reader.connection(index.db)
    sent: list[str] = []
    for conn in {id(index.db.conn): index.db.conn, id(connection): connection}.values():
        conn.set_trace_callback(sent.append)
    try:
        run()
    finally:
        index.db.conn.set_trace_callback(None)
        connection.set_trace_callback(None)
    return [sql for sql in sent if "json_extract" in sql]


def _explain(db, sql):
    return db.execute("explain query plan " + sql).fetchall()


def test_create_and_drop_through_the_cli(db, db_path):
    embed(db, "one", 0, 120)
    runner = CliRunner()
    result = runner.invoke(
        index_group,
        [
            "create",
            "a",
            "one",
            "--index-metadata",
            "kind",
            "--index-metadata",
            "n",
            "-d",
            str(db_path),
        ],
    )
    assert result.exit_code == 0, result.output
    result = runner.invoke(index_group, ["create", "b", "one", "-b", "exact", "-d", str(db_path)])
    assert result.exit_code == 0, result.output
    result = runner.invoke(index_group, ["metadata", "b", "kind", "-d", str(db_path)])
    assert result.exit_code == 0, result.output
    assert "b indexes metadata kind" in result.output
    assert "made" not in result.output  # a's is there already
    listed = runner.invoke(index_group, ["metadata", "a", "-d", str(db_path)])
    assert listed.output.split() == ["kind", "n"]
    shown = json.loads(runner.invoke(index_group, ["show", "a", "-d", str(db_path)]).output)
    assert shown["metadata_indexes"] == ["kind", "n"]

    def indexes():
        with closing(Database(db_path)) as fresh:
            return sorted(
                name
                for (name,) in fresh.execute(
                    "select name from sqlite_master where name like 'idx_embeddings_metadata_%'"
                )
            )

    assert indexes() == ["idx_embeddings_metadata_kind", "idx_embeddings_metadata_n"]
    result = runner.invoke(index_group, ["metadata", "a", "n", "--drop", "-d", str(db_path)])
    assert result.exit_code == 0, result.output
    assert "dropped the SQLite index of n" in result.output
    assert indexes() == ["idx_embeddings_metadata_kind"]
    result = runner.invoke(index_group, ["metadata", "b", "--drop", "-d", str(db_path)])
    assert result.output.strip() == "b no longer indexes metadata kind"  # a still asks for it
    assert runner.invoke(index_group, ["metadata", "b", "kind", "-d", str(db_path)]).exit_code == 0
    assert runner.invoke(index_group, ["drop", "a", "-d", str(db_path)]).exit_code == 0
    assert indexes() == ["idx_embeddings_metadata_kind"]  # b still asks for it
    assert runner.invoke(index_group, ["drop", "b", "-d", str(db_path)]).exit_code == 0
    assert indexes() == []
    # and llm's own commands never noticed
    assert (
        runner.invoke(llm_cli, ["similar", "one", "-c", "cat", "-d", str(db_path)]).exit_code == 0
    )


def test_an_index_the_plugin_did_not_make_stays(db):
    embed(db, "one", 0, 60)
    db.execute(metadata_indexes.creation_sql("kind"))  # a user's, exactly as ours
    db.execute("create index mine on embeddings (json_extract(metadata, '$.n'))")
    db.conn.commit()
    index = Index.create("a", ["one"], db, backend="exact", metadata_keys=["kind", "n"])
    assert index.metadata_keys == ["kind", "n"]
    index.drop_metadata()
    names = {name for (name,) in db.execute("select name from sqlite_master where type = 'index'")}
    assert {"idx_embeddings_metadata_kind", "mine"} <= names
    assert "idx_embeddings_metadata_n" not in names  # the plugin made that one


def run_refused(db_path, args):
    before = snapshot(db_path, db_path.parent / f"{db_path.name}.vector-indexes")
    result = CliRunner().invoke(index_group, [*args[1:], "-d", str(db_path)])
    assert result.exit_code == 1, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert "Traceback" not in result.output
    assert snapshot(db_path, db_path.parent / f"{db_path.name}.vector-indexes") == before
    return result.output.strip().splitlines()[-1]


@pytest.mark.parametrize("key", ["a'b", 'a"b', "$.a", "a..b", "a b", ""])
def test_a_key_no_filter_could_name_is_refused(db, db_path, key):
    embed(db, "one", 0, 30)
    Index.create("a", ["one"], db, backend="exact")
    db.conn.close()
    line = run_refused(db_path, ["index", "metadata", "a", key])
    assert line.startswith("Error: Invalid metadata key")
    line = run_refused(db_path, ["index", "create", "b", "one", "--index-metadata", key])
    assert line.startswith("Error: Invalid metadata key")


def test_refusals_change_nothing(db, db_path):
    embed(db, "one", 0, 30)
    Index.create("a", ["one"], db, backend="exact", metadata_keys=["kind"])
    db.execute("create index idx_embeddings_metadata_n on embeddings (id)")  # not ours
    db.conn.commit()
    db.conn.close()
    assert run_refused(db_path, ["index", "metadata", "a", "year", "--drop"]) == (
        "Error: Index 'a' has no metadata index on 'year' (it has: kind)"
    )
    line = run_refused(db_path, ["index", "metadata", "a", "n"])
    assert "An index named idx_embeddings_metadata_n already exists" in line
    line = run_refused(db_path, ["index", "create", "b", "one", "--index-metadata", "n"])
    assert "An index named idx_embeddings_metadata_n already exists" in line
    assert run_refused(db_path, ["index", "metadata", "nope", "kind"]).startswith(
        "Error: Index 'nope' does not exist"
    )


def test_metadata_that_is_not_json_is_refused_and_nothing_stays(db, db_path):
    embed(db, "one", 0, 30)
    db.execute("update embeddings set metadata = '{not json' where id = 'r0003'")
    db.conn.commit()
    db.conn.close()
    line = run_refused(db_path, ["index", "create", "b", "one", "--index-metadata", "kind"])
    assert line == (
        "Error: Cannot index metadata key 'kind': row 'r0003' of collection 1 "
        "has metadata that is not JSON (llm writes JSON)"
    )
    with closing(Database(db_path)) as fresh:
        assert not Index.exists(fresh, "b")


def test_a_crafted_catalog_makes_no_sql(two, db, db_path):
    two.index_metadata(["kind"])
    crafted = 'x"; drop table embeddings; --'
    db.execute(f"insert into {metadata_indexes.KEYS} values (?, ?)", [two.record.id, crafted])
    db.execute(f"insert into {metadata_indexes.MADE} values (?)", [crafted])
    db.execute(f"insert into {metadata_indexes.MADE} values ('n')")  # claims one it did not make
    db.execute("create index idx_embeddings_metadata_n on embeddings (id)")
    db.conn.commit()
    assert two.metadata_keys == ["kind"]
    shown = CliRunner().invoke(index_group, ["show", "m", "-d", str(db_path)])
    assert json.loads(shown.output)["metadata_indexes"] == ["kind"]
    assert two.similar("cat", 3, where={"kind": "red"})
    Index.drop(db, "m")
    names = {name for (name,) in db.execute("select name from sqlite_master")}
    assert "embeddings" in names and "idx_embeddings_metadata_n" in names
    assert "idx_embeddings_metadata_kind" not in names
    assert db.execute(f"select count(*) from {metadata_indexes.KEYS}").fetchone() == (0,)


def test_a_row_is_checked_in_the_index_as_by_its_json(two, db):
    two.index_metadata(["kind", "n"])
    asked = np.array([label for (label,) in db.execute("select label from vector_index_labels")])
    for where in ({"kind": "red"}, {"n": 2}, {"kind": "blue", "n": 4}, {"kind": None}):
        indexed = restriction(two, None, None, where).subset
        assert indexed.where_indexed
        plain = restriction(two, None, "r", where).subset  # (every id starts with r)
        plain.indexed = frozenset()
        assert (
            indexed.allows(db, two.record.id, asked).tolist()
            == plain.allows(db, two.record.id, asked, hints=True).tolist()
        ), where


def test_an_index_dropped_by_hand_falls_back_to_the_rows(two, db):
    before = answers(two, {"where": {"kind": "red"}})
    two.index_metadata(["kind"])
    two.similar("cat", 10, mode="keyword", where={"kind": "red"})  # its restriction kept
    db.execute("drop index idx_embeddings_metadata_kind")  # DDL: no row changes
    assert answers(two, {"where": {"kind": "red"}}) == before
    kept = restriction(two, None, None, {"kind": "red"})
    kept.subset.indexed = frozenset({"kind"})  # as a restriction made before the drop
    labels = two.db.execute("select label from vector_index_labels").fetchall()
    asked = np.array([label for (label,) in labels[:50]], dtype=np.int64)
    plain = restriction(two, None, None, {"kind": "red"}).subset
    plain.indexed = frozenset()
    assert (
        kept.subset.allows(db, two.record.id, asked).tolist()
        == plain.allows(db, two.record.id, asked).tolist()
    )


def test_llm_writes_and_transforms_keep_working(two, db):
    two.index_metadata(["kind"])
    embed(db, "one", 1000, 40)  # llm writes through the index SQLite keeps
    two.build()
    found = two.similar("row 1004", 40, mode="keyword", where={"kind": KINDS[1004 % 3]})
    assert "r1004" in [e.id for e in found]
    db["embeddings"].transform()  # as llm's own migrations reshape its table
    assert metadata_indexes.usable(db, ["kind"]) == {"kind"}
    again = two.similar("row 1004", 40, mode="keyword", where={"kind": KINDS[1004 % 3]})
    assert [e.id for e in again] == [e.id for e in found]
    with pytest.raises(sqlite3.OperationalError):  # what llm never writes, SQLite refuses
        db.execute("update embeddings set metadata = '{bad' where id = 'r0001'")


def test_a_filter_allowing_few_rows_reads_their_labels_at_once(two, db, monkeypatch):
    """Counted in the metadata's index, a filter that allows few rows has its
    labels read whole on its first query; the label map alone (which has no
    metadata) would count them all and check ranked rows one batch at a time."""
    monkeypatch.setattr(keyword_filter, "READ_LIMIT", 100)
    two.index_metadata(["kind", "n"])
    checked = []
    original = Filter.allows
    monkeypatch.setattr(
        Filter, "allows", lambda self, *args, **kw: checked.append(1) or original(self, *args, **kw)
    )
    reuse.forget(db)
    few = two.similar("cat dog", 10, mode="keyword", where={"kind": "red", "n": 1})
    assert few and not checked
    reuse.forget(db)
    many = two.similar("cat dog", 10, mode="keyword", where={"flag": True})  # not indexed
    assert many and checked


@pytest.mark.parametrize(
    "made_otherwise",
    [
        f"create table {metadata_indexes.KEYS} (x)",
        f"create table {metadata_indexes.MADE} (x)",
    ],
)
def test_tables_of_these_names_made_otherwise_break_nothing(two, db, db_path, made_otherwise):
    two.index_metadata(["kind"])
    table = made_otherwise.split()[2]
    db.execute(f"drop table {table}")
    db.execute(made_otherwise)
    db.conn.commit()
    shown = CliRunner().invoke(index_group, ["show", "m", "-d", str(db_path)])
    assert shown.exit_code == 0, shown.output
    assert two.similar("cat", 3, where={"kind": "red"})
    result = CliRunner().invoke(index_group, ["drop", "m", "-d", str(db_path)])
    assert result.exit_code == 0, result.output
    with closing(Database(db_path)) as fresh:
        assert not Index.exists(fresh, "m")


KILLED_CHILD = """
import sys
from sqlite_utils import Database
from llm_vector_index import Index
index = Index("k", Database(sys.argv[1]))
print("ready", flush=True)
index.index_metadata(["kind", "n"])
print("done", flush=True)
"""


def test_a_kill_while_indexing_leaves_all_or_nothing(db, db_path):
    """SIGKILL at points through making the SQLite indexes: each time the
    database is whole, and a key is recorded exactly when its index is
    there (one SQLite transaction makes both)."""
    import random
    import signal
    import subprocess
    import sys
    import time

    from llm_vector_index.testing import clustered_vectors, write_embeddings

    rows = 60_000
    write_embeddings(
        db,
        "big",
        [f"b{i}" for i in range(rows)],
        clustered_vectors(rows, 8, clusters=10),
        metadatas=[{"kind": KINDS[i % 3], "n": i % 50} for i in range(rows)],
    )
    Index.create("k", ["big"], db, backend="exact").build()
    db.conn.close()
    outcomes = []
    for delay in [0.0, 0.02, 0.05, 0.08, 0.12, 0.2, 0.4]:
        child = subprocess.Popen(
            [sys.executable, "-c", KILLED_CHILD, str(db_path)], stdout=subprocess.PIPE, text=True
        )
        assert child.stdout.readline().strip() == "ready"
        time.sleep(delay * random.uniform(0.8, 1.2))
        child.send_signal(signal.SIGKILL)
        child.wait()
        with closing(Database(db_path)) as after:
            assert after.execute("pragma integrity_check").fetchone() == ("ok",)
            again = Index("k", after)
            keys = again.metadata_keys
            assert keys in ([], ["kind", "n"])
            assert metadata_indexes.usable(after, ["kind", "n"]) == set(keys)
            made = {key for (key,) in after.execute(f"select key from {metadata_indexes.MADE}")}
            assert made == set(keys)
            outcomes.append(bool(keys))
            if keys:
                assert [e.id for e in again.similar_by_id("b0", 5, where={"kind": "red"})]
                again.drop_metadata()
    print("killed after the commit:", outcomes)  # (timing decides which: both are fine)
