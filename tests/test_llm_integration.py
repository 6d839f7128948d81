"""The plugin inside llm: default indexes, collection.similar(index=...), the
existing `llm similar` command, filtered search, staleness."""

import json
import os
import sqlite3
import subprocess
import sys

import llm
import numpy as np
import pytest
from click.testing import CliRunner
from llm.cli import cli as llm_cli
from llm.embeddings import Entry
from sqlite_utils import Database

from llm_vector_index import Index, filters
from llm_vector_index import collection as integration
from llm_vector_index.cli import index_group
from llm_vector_index.testing import clustered_vectors, write_embeddings

from .conftest import snapshot


def llm_similar(db_path, *args):
    result = CliRunner().invoke(llm_cli, ["similar", *map(str, args), "-d", str(db_path)])
    assert result.exit_code == 0, result.output
    return result


def parsed(output):
    return [json.loads(line) for line in output.splitlines()]


def assert_same_output(ours, theirs):
    ours, theirs = parsed(ours), parsed(theirs)
    assert ours and len(ours) == len(theirs)
    for mine, expected in zip(ours, theirs):
        assert list(mine) == list(expected)  # same keys, same order
        assert mine["score"] == pytest.approx(expected["score"], abs=1e-6)
        assert {**mine, "score": 0} == {**expected, "score": 0}


@pytest.mark.parametrize(
    "args",
    [
        ["v010"],
        ["v010", "-n", "3"],
        ["v010", "--prefix", "v1"],
        ["v010", "--prefix", "V_5"],
        ["v010", "-n", "40", "--prefix", "v%9"],
    ],
)
def test_llm_similar_by_id_same_with_and_without_default(db_path, vectors_collection, args):
    before = llm_similar(db_path, "vecs", *args).output
    assert (
        CliRunner()
        .invoke(
            index_group,
            ["create", "ix", "vecs", "-b", "exact", "--build", "--default", "-d", str(db_path)],
        )
        .exit_code
        == 0
    )
    assert_same_output(llm_similar(db_path, "vecs", *args).output, before)


@pytest.mark.parametrize(
    "args", [["-c", "horse cherry"], ["-c", "cat", "-n", "2"], ["-c", "fish", "--prefix", "doc-01"]]
)
def test_llm_similar_by_content_same_with_and_without_default(db_path, text_collection, args):
    before = llm_similar(db_path, "docs", *args).output
    Index.create("t", ["docs"], Database(db_path), backend="exact", default=True).build()
    assert_same_output(llm_similar(db_path, "docs", *args).output, before)


def test_collection_methods_with_index_argument(db, vectors_collection):
    _ids, vectors = vectors_collection
    collection = llm.Collection("vecs", db, create=False)
    Index.create("ix", ["vecs"], db, backend="exact").build()
    brute = collection.similar_by_vector(vectors[3].tolist(), 5)
    via_index = collection.similar_by_vector(vectors[3].tolist(), 5, index="ix")
    assert [e.id for e in via_index] == [e.id for e in brute]
    assert type(via_index[0]) is Entry
    assert [e.id for e in collection.similar_by_id("v003", 5, index="ix")] == [
        e.id for e in collection.similar_by_id("v003", 5)
    ]
    with pytest.raises(llm.Collection.DoesNotExist):
        collection.similar_by_id("nope", index="ix")
    with pytest.raises(ValueError, match="where= needs an index"):
        collection.similar_by_vector(vectors[0].tolist(), where={"i": 1})


def test_default_index_is_used_and_index_false_forces_brute_force(db, vectors_collection):
    _ids, vectors = vectors_collection
    collection = llm.Collection("vecs", db, create=False)
    index = Index.create("ix", ["vecs"], db, backend="exact", refresh="manual", default=True)
    index.build()
    write_embeddings(db, "vecs", ["late"], vectors[:1] * 2)  # a duplicate direction of v000
    assert "late" not in [e.id for e in collection.similar_by_vector(vectors[0].tolist(), 3)]
    assert "late" in [
        e.id for e in collection.similar_by_vector(vectors[0].tolist(), 3, index=False)
    ]
    Index.clear_default(db, "vecs")
    assert "late" in [e.id for e in collection.similar_by_vector(vectors[0].tolist(), 3)]


def test_multi_collection_default_restricted_to_its_collection(db):
    a = clustered_vectors(300, 16, clusters=3, seed=1)
    b = a + np.random.default_rng(2).normal(scale=0.1, size=a.shape).astype("f4")
    write_embeddings(db, "a", [f"x{i}" for i in range(300)], a)
    write_embeddings(db, "b", [f"x{i}" for i in range(300)], b)
    index = Index.create("both", ["a", "b"], db, backend="faiss", default=True)
    index.build()
    for name in ("a", "b"):
        collection = llm.Collection(name, db, create=False)
        got = collection.similar_by_vector(a[7].tolist(), 25)
        expected = collection.similar_by_vector(a[7].tolist(), 25, index=False)
        assert len(got) == 25
        assert [e.id for e in got] == [e.id for e in expected]
        assert [e.id for e in collection.similar_by_id("x7", 25)] == [
            e.id for e in collection.similar_by_id("x7", 25, index=False)
        ]


@pytest.fixture
def metadata_index(db):
    vectors = clustered_vectors(400, 16, clusters=4, seed=3)
    metadatas = [
        (
            {"kind": ["note", "doc"][i % 2], "n": i, "flag": i % 5 == 0, "nested": {"level": i % 3}}
            if i % 7
            else None
        )
        for i in range(400)
    ]
    write_embeddings(db, "meta", [f"m{i}" for i in range(400)], vectors, metadatas=metadatas)
    index = Index.create("mx", ["meta"], db, backend="hnswlib")
    index.build()
    return index, vectors, metadatas


def expected_ids(vectors, metadatas, query, keep, number):
    scores = [
        (float(np.dot(v, query) / np.linalg.norm(v) / np.linalg.norm(query)), f"m{i}")
        for i, (v, m) in enumerate(zip(vectors, metadatas))
        if m and keep(m)
    ]
    return [id for _, id in sorted(scores, reverse=True)[:number]]


@pytest.mark.parametrize("scratch_limit", [filters.SCRATCH_LIMIT, 5])
def test_where_filters(metadata_index, monkeypatch, scratch_limit):
    monkeypatch.setattr(filters, "SCRATCH_LIMIT", scratch_limit)  # both strategies
    index, vectors, metadatas = metadata_index
    query = vectors[11]
    cases = [
        ({"kind": "note"}, lambda m: m["kind"] == "note"),
        ({"kind": "doc", "flag": True}, lambda m: m["kind"] == "doc" and m["flag"]),
        ({"nested.level": 2}, lambda m: m["nested"]["level"] == 2),
        ({"n": 10}, lambda m: m["n"] == 10),
        ({"absent": "x"}, lambda m: False),
    ]
    for where, keep in cases:
        got = [e.id for e in index.similar_by_vector(query, 15, where=where)]
        assert got == expected_ids(vectors, metadatas, query, keep, 15), where


def test_a_filter_asked_label_by_label_allows_what_it_reads(metadata_index):
    "Filter.allows (a keyword query's check of ranked rows) against matching_labels."
    from llm_vector_index.filters import Filter

    index, _vectors, _metadatas = metadata_index
    (collection_id,) = index.collection_ids()
    every = np.arange(-3, 420)  # negative: held back; past the end: no such label
    for subset in (
        Filter([collection_id], where={"kind": "note"}),
        Filter([collection_id], prefix="m1", where={"nested.level": 2}),
        Filter([collection_id], where={"absent": "x"}),
        Filter([collection_id], prefix="M3"),
        Filter([]),
    ):
        expected = sorted(subset.matching_labels(index.db, index.record.id).tolist())
        allowed = subset.allows(index.db, index.record.id, every)
        assert sorted(every[allowed].tolist()) == expected, subset
        assert bool(expected) == bool(subset.collection_ids and "absent" not in subset.where)
        assert subset.allows(index.db, index.record.id + 1, every).sum() == 0  # not its index


def test_where_on_the_command_line(db_path, metadata_index):
    _index, _vectors, metadatas = metadata_index
    result = CliRunner().invoke(
        index_group,
        [
            "similar",
            "mx",
            "m11",
            "-n",
            "100",
            "--where",
            "kind",
            "doc",
            "-w",
            "nested.level",
            "1",
            "-d",
            str(db_path),
        ],
    )
    assert result.exit_code == 0, result.output
    rows = parsed(result.output)
    assert rows and all(
        r["metadata"]["kind"] == "doc" and r["metadata"]["nested"]["level"] == 1 for r in rows
    )
    assert len(rows) == sum(
        1
        for i, m in enumerate(metadatas)
        if m and m["kind"] == "doc" and m["nested"]["level"] == 1 and i != 11
    )
    bad = CliRunner().invoke(
        index_group, ["similar", "mx", "m11", "--where", "a'b", "1", "-d", str(db_path)]
    )
    assert bad.exit_code == 1 and "Invalid metadata key" in bad.stderr
    newline = CliRunner().invoke(
        index_group, ["similar", "mx", "m11", "--where", "kind\n", "doc", "-d", str(db_path)]
    )
    assert newline.exit_code == 1 and newline.stderr.startswith(
        "Error: Invalid metadata key 'kind\\n'"
    )
    huge = CliRunner().invoke(
        index_group, ["similar", "mx", "m11", "--where", "n", "1" + "0" * 30, "-d", str(db_path)]
    )
    assert huge.exit_code == 0 and huge.output == ""  # beyond 64 bits: compared as a REAL
    twice = CliRunner().invoke(
        index_group,
        [
            "similar",
            "mx",
            "m11",
            "--where",
            "kind",
            "doc",
            "--where",
            "kind",
            "note",
            "-d",
            str(db_path),
        ],
    )
    assert twice.exit_code == 1
    assert twice.stderr == "Error: --where kind is given twice: a row has one value for each key\n"
    too_huge = CliRunner().invoke(
        index_group, ["similar", "mx", "m11", "--where", "n", "1" + "0" * 400, "-d", str(db_path)]
    )
    assert too_huge.exit_code == 1
    assert too_huge.stderr == f"Error: Metadata filter value 1{'0' * 400} is too large\n"


def test_prefix_wildcards_and_case_like_llm(db, vectors_collection):
    collection = llm.Collection("vecs", db, create=False)
    Index.create("ix", ["vecs"], db, backend="faiss", default=True).build()
    for prefix in ("v0", "V1", "v_2", "v%3", "%", "_", "zz"):
        got = [e.id for e in collection.similar_by_id("v100", 30, prefix=prefix)]
        expected = [e.id for e in collection.similar_by_id("v100", 30, prefix=prefix, index=False)]
        assert got == expected, prefix


# Ids where an index range could go wrong: case, letters past the third,
# wildcards, non-ASCII (LIKE folds ASCII only), a prefix's last character
# multi-byte, and the highest code point right after a prefix.
TRICKY_IDS = [
    "Doc1",
    "doc2",
    "DOC3",
    "dOc4",
    "docs/2024/a",
    "DOCS/2024/b",
    "docx",
    "do",
    "d",
    "Ärger",
    "ärger",
    "ärgerlich",
    "日本語",
    "日本",
    "日本x",
    "a_b",
    "aXb",
    "a%b",
    "ab",
    "doc\U0010ffffz",
    "doc\U0010ffff",
    "Doc",
    "",
    "z",
]


@pytest.mark.parametrize(
    "prefix",
    [
        "d",
        "D",
        "doc",
        "DOC",
        "docs/",
        "DOCS/2024",
        "dOcS/2024/A",
        "ä",
        "Ä",
        "日本",
        "日",
        "a_",
        "a%",
        "%",
        "_",
        "a_b",
        "doc\U0010ffff",
        "nothing",
        "dó",
    ],
)
def test_a_prefix_reads_only_its_range_and_matches_as_like(db, prefix):
    from llm_vector_index.filters import Filter

    collection = llm.Collection("tricky", db, model_id="hash-16")
    collection.embed_multi([(i, f"text {n}") for n, i in enumerate(TRICKY_IDS)])
    collection_id = collection.id
    like = {
        row[0]
        for row in db.execute(
            "select rowid from embeddings where collection_id = ? and id like ? || '%'",
            [collection_id, prefix],
        ).fetchall()
    }
    assert set(Filter([collection_id], prefix=prefix).rowids(db)) == like
    assert len(Filter([collection_id], prefix=prefix).rowids(db)) == len(like)  # none twice
    index = Index.create("t", ["tricky"], db, backend="exact")
    index.build()
    subset = Filter([collection_id], prefix=prefix)
    labels = subset.matching_labels(db, index.record.id)
    assert sorted(labels.tolist()) == sorted(
        Filter.labels(db, index.record.id, sorted(like)).tolist()
    )
    # The keyword side's first query: labels asked about one by one, and a
    # count that may count too many but never too few.
    every = np.arange(-1, len(TRICKY_IDS) + 1)
    allowed = subset.allows(db, index.record.id, every)
    assert sorted(every[allowed].tolist()) == sorted(labels.tolist())
    for limit in range(len(like)):
        assert subset.more_than(db, index.record.id, limit)
    wildcard_first = prefix[0] in "%_"
    assert subset.more_than(db, index.record.id, len(TRICKY_IDS)) == wildcard_first


def test_auto_refresh_returns_new_rows(db, vectors_collection):
    _ids, vectors = vectors_collection
    index = Index.create("ix", ["vecs"], db, backend="faiss")
    index.build()
    write_embeddings(db, "vecs", ["fresh"], (vectors[5] * -3)[None], updated=5)  # an old stamp
    assert index.similar_by_vector(-vectors[5], 1)[0].id == "fresh"
    assert index.record.rows == 201  # it was built first


def test_a_query_skips_the_freshness_check_only_while_nothing_changed(
    db_path, db, vectors_collection
):
    "The check is skipped while the database is as it was; any write or commit ends that."
    _ids, vectors = vectors_collection
    index = Index.create("ix", ["vecs"], db, backend="faiss")
    index.build()
    index.similar_by_vector(vectors[0], 1)  # found current
    statements = []
    db.conn.set_trace_callback(statements.append)
    index.similar_by_vector(vectors[0], 1)
    assert not [s for s in statements if "max(updated)" in s]
    # another connection's commit: the next query sees the row (and builds)
    write_embeddings(Database(db_path), "vecs", ["other"], (vectors[5] * -3)[None], updated=5)
    assert index.similar_by_vector(-vectors[5], 1)[0].id == "other"
    assert [s for s in statements if "max(updated)" in s]
    index.similar_by_vector(vectors[0], 1)
    # a write through this very connection: the same
    write_embeddings(db, "vecs", ["mine"], (vectors[9] * -3)[None], updated=5)
    assert index.similar_by_vector(-vectors[9], 1)[0].id == "mine"
    assert index.record.rows == 202
    db.conn.set_trace_callback(None)


def test_manual_refresh_warns_once_and_answers(db, vectors_collection, capsys):
    _ids, vectors = vectors_collection
    index = Index.create("ix", ["vecs"], db, backend="faiss", refresh="manual")
    index.build()
    write_embeddings(db, "vecs", ["fresh1", "fresh2"], -vectors[5:7])
    assert index.similar_by_vector(-vectors[5], 1)[0].id != "fresh1"
    index.similar_by_vector(-vectors[5], 1)
    warning = capsys.readouterr().err
    assert warning.count("Warning: index 'ix' is behind its collections") == 1
    assert "(2 rows added or changed, 0 deleted since its last build)" in warning
    index.build()
    assert index.similar_by_vector(-vectors[5], 1)[0].id == "fresh1"
    write_embeddings(db, "vecs", ["fresh3"], -vectors[7:8])
    index.similar_by_vector(-vectors[5], 1)
    assert "(1 row added or changed, 0 deleted since its last build)" in capsys.readouterr().err


def test_read_only_database_answers_from_last_build(db_path, db, vectors_collection, capsys):
    _ids, vectors = vectors_collection
    Index.create("ix", ["vecs"], db, backend="exact").build()
    write_embeddings(db, "vecs", ["fresh"], -vectors[:1])
    before = snapshot(db_path, db_path.parent / "embeddings.db.vector-indexes")
    read_only = Database(sqlite3.connect(f"file:{db_path}?mode=ro", uri=True))
    results = Index("ix", read_only).similar_by_vector(-vectors[0], 3)
    assert "fresh" not in [e.id for e in results] and len(results) == 3
    assert "is behind its collections" in capsys.readouterr().err
    assert snapshot(db_path, db_path.parent / "embeddings.db.vector-indexes") == before


def test_default_command(db_path, db, vectors_collection):
    write_embeddings(db, "other", ["o"], clustered_vectors(1, 24))

    def run(*args):
        return CliRunner().invoke(index_group, [*map(str, args), "-d", str(db_path)])

    assert run("create", "ix", "vecs", "-b", "exact", "--build").exit_code == 0
    assert run("default", "vecs").output == "Collection vecs has no default index\n"
    assert run("default", "vecs", "ix").exit_code == 0
    assert run("default", "vecs").output == "ix\n"
    assert "default for vecs" in run("list").output
    assert json.loads(run("show", "ix").output)["default_for"] == ["vecs"]
    before = snapshot(db_path)
    for args, message in [
        (("default", "other", "ix"), "Index 'ix' does not cover collection 'other'"),
        (("default", "nope", "ix"), "Collection 'nope' does not exist"),
        (("default", "vecs", "nope"), "Index 'nope' does not exist"),
    ]:
        result = run(*args)
        assert result.exit_code == 1 and message in result.stderr, result.output
        assert snapshot(db_path) == before
    assert run("default", "vecs", "--clear").exit_code == 0
    assert run("default", "vecs").output == "Collection vecs has no default index\n"
    assert run("default", "vecs", "ix").exit_code == 0
    assert run("drop", "ix").exit_code == 0  # dropping the index clears the default
    assert run("default", "vecs").output == "Collection vecs has no default index\n"


def run_real_llm(tmp_path, *args, env=None):
    environment = {**os.environ, "LLM_USER_PATH": str(tmp_path / "llm-user"), **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "llm", *args], env=environment, capture_output=True, text=True
    )


def test_real_llm_similar_uses_the_default_index(tmp_path, db_path, db, vectors_collection):
    _ids, vectors = vectors_collection
    Index.create("ix", ["vecs"], db, backend="exact", refresh="manual", default=True).build()
    write_embeddings(db, "vecs", ["late"], vectors[1:2] * 2)  # v001's direction exactly
    with_index = run_real_llm(tmp_path, "similar", "vecs", "v001", "-n", "3", "-d", str(db_path))
    assert with_index.returncode == 0, with_index.stderr
    assert "late" not in with_index.stdout  # answered from the last build...
    assert "index 'ix' is behind its collections" in with_index.stderr  # ...and said so
    # Without the plugin loaded, llm's own command works on the same database.
    plain = run_real_llm(
        tmp_path,
        "similar",
        "vecs",
        "v001",
        "-n",
        "3",
        "-d",
        str(db_path),
        env={"LLM_LOAD_PLUGINS": ""},
    )
    assert plain.returncode == 0, plain.stderr
    assert json.loads(plain.stdout.splitlines()[0])["id"] == "late"


def test_uninstalled_integration_leaves_llm_working(db_path, db, vectors_collection):
    Index.create("ix", ["vecs"], db, backend="exact", default=True).build()
    with_plugin = llm_similar(db_path, "vecs", "v002").output
    integration.uninstall()
    try:
        assert llm.Collection.similar_by_id is integration.ORIGINALS["similar_by_id"]
        assert_same_output(llm_similar(db_path, "vecs", "v002").output, with_plugin)
        collections = CliRunner().invoke(llm_cli, ["collections", "list", "-d", str(db_path)])
        assert collections.exit_code == 0 and "vecs" in collections.output
    finally:
        integration.install()
