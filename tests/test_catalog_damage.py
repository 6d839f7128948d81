"""One bad value in a catalog row (a crafted or damaged database) is one
line naming the row and what is wrong, in every command that reads it;
`list` shows it flagged, `drop` removes it, the SQL functions answer
`{"error": ...}`, and `llm similar` answers by brute force."""

import json
import sqlite3

import numpy as np
import pytest
from click.testing import CliRunner
from llm.cli import cli as llm_cli
from sqlite_utils import Database

from llm_vector_index import Index, catalog, sql
from llm_vector_index.cli import index_group

from .conftest import snapshot

DAMAGE = [
    ("options", "{bad", "options is not JSON"),
    ("options", "[1,2]", "options is not a JSON object"),
    ("options", '"HNSW32"', "options is not a JSON object"),
    ("fingerprint", "{bad", "fingerprint is not JSON"),
    ("tuning", "[]", "tuning is not a JSON object"),
    ("dimensions", 24.5, "dimensions is 24.5, not a whole number"),
    ("dimensions", 10**12, "dimensions is 1000000000000, not from 1 to 65536"),
    ("dimensions", -5, "dimensions is -5, not from 1 to 65536"),
    ("dimensions", "abc", "dimensions is 'abc', not a whole number"),
    ("rows", -1, "rows is -1, not at least 0"),
    ("ordered_labels", -3, "ordered_labels is -3, not at least 0"),
    ("generation", "x", "generation is 'x', not a whole number"),
    ("refresh", "sometimes", "refresh is 'sometimes', not auto or manual"),
    ("backend", "", "backend is not a name"),
    ("created", "yesterday", "created is 'yesterday', not a number"),
]


def run(*args):
    return CliRunner().invoke(index_group, [str(arg) for arg in args])


def folder_of(db_path):
    return db_path.parent / "embeddings.db.vector-indexes"


@pytest.fixture
def damaged(request, db_path, db, vectors_collection):
    column, value, _ = request.param
    Index.create("ix", ["vecs"], db, backend="faiss", default=True).build()
    Index.create("fine", ["vecs"], db, backend="exact").build()
    db.execute(f"update vector_indexes set {column} = ? where name = 'ix'", [value])
    db.conn.commit()
    return db_path


def message(problem):
    return (
        f"Index 'ix' has a damaged catalog row ({problem}): drop it with "
        "llm index drop ix and create it again"
    )


@pytest.mark.parametrize("damaged", DAMAGE, indirect=True, ids=[f"{c}={v!r}" for c, v, _ in DAMAGE])
def test_one_bad_value_is_one_line_everywhere(damaged, request):
    problem = request.node.callspec.params["damaged"][2]
    before = snapshot(damaged, folder_of(damaged))
    for command in (
        ["similar", "ix", "v001"],
        ["build", "ix"],
        ["build", "ix", "--full"],
        ["show", "ix"],
        ["evaluate", "ix"],
        ["default", "vecs", "ix"],
    ):
        result = run(*command, "-d", damaged)
        assert result.exit_code == 1, (command, result.output)
        assert result.stderr == f"Error: {message(problem)}\n", command
    assert snapshot(damaged, folder_of(damaged)) == before

    listed = run("list", "-d", damaged)
    assert listed.exit_code == 0, listed.output
    assert f"ix: DAMAGED: {message(problem)}\n" in listed.output
    assert "fine: exact over vecs\n" in listed.output
    as_json = json.loads(run("list", "--json", "-d", damaged).output)
    assert as_json[1] == {"name": "ix", "damaged": message(problem)}
    assert as_json[0]["name"] == "fine" and as_json[0]["rows"] == 200

    conn = sqlite3.connect(damaged)
    sql.register(conn)
    answer = conn.execute("select vector_index_similar('ix', 'v001', 3)").fetchone()[0]
    assert json.loads(answer) == {"error": message(problem)}
    conn.close()

    llm_similar = CliRunner().invoke(
        llm_cli, ["similar", "vecs", "v001", "-n", "2", "-d", str(damaged)]
    )
    assert llm_similar.exit_code == 0 and len(llm_similar.stdout.splitlines()) == 2
    assert f"not used ({message(problem)})" in llm_similar.stderr
    assert snapshot(damaged, folder_of(damaged)) == before

    dropped = run("drop", "ix", "-d", damaged)
    assert dropped.exit_code == 0, dropped.output
    assert dropped.stderr == (
        "Dropped index ix (its data on the server, if any, remains: its "
        "catalog row was damaged, so no server it may name was contacted)\n"
    )
    db = Database(damaged)
    assert [row[0] for row in db.execute("select name from vector_indexes")] == ["fine"]
    assert db.execute("select count(*) from vector_index_defaults").fetchone()[0] == 0
    assert sorted(p.name for p in folder_of(damaged).iterdir()) == [
        ".fine.commit",
        ".fine.lock",
        ".llm-vector-index",
        "fine",
    ]
    assert run("similar", "fine", "v001", "-n", "2", "-d", damaged).exit_code == 0


def test_an_index_whose_backend_plugin_is_gone_can_be_dropped(db_path, db, vectors_collection):
    Index.create("ix", ["vecs"], db, backend="exact").build()
    db.execute("update vector_indexes set backend = 'gone-plugin'")
    db.conn.commit()
    result = run("similar", "ix", "v001", "-d", db_path)
    assert result.exit_code == 1
    assert result.stderr.startswith("Error: Unknown backend 'gone-plugin'; available: ")
    dropped = run("drop", "ix", "-d", db_path)
    assert dropped.exit_code == 0, dropped.output
    assert dropped.stderr == (
        "Dropped index ix (its data on the server, if any, remains: its "
        "backend 'gone-plugin' is not installed to remove it)\n"
    )
    assert not Index.exists(db, "ix") and not (folder_of(db_path) / "ix").exists()


@pytest.mark.parametrize(
    "backend, options, problem",
    [
        ("faiss", {"factory": 5}, "Option factory must be str, got 5"),
        ("chroma", {"host": "h", "port": "x"}, "Option port must be int, got 'x'"),
    ],
)
def test_an_index_with_options_that_are_not_valid_can_be_dropped(
    db_path, db, vectors_collection, backend, options, problem
):
    Index.create("ix", ["vecs"], db, backend="exact").build()
    db.execute("update vector_indexes set backend = ?, options = ?", [backend, json.dumps(options)])
    db.conn.commit()
    assert run("similar", "ix", "v001", "-d", db_path).stderr == f"Error: {problem}\n"
    dropped = run("drop", "ix", "-d", db_path)
    assert dropped.exit_code == 0, dropped.output
    assert dropped.stderr == (
        f"Dropped index ix (its data on the server, if any, remains: its "
        f"options are not valid ({problem}), so no server was contacted)\n"
    )
    assert not Index.exists(db, "ix") and not (folder_of(db_path) / "ix").exists()


def test_dropping_an_index_that_does_not_exist(db_path, db, vectors_collection):
    result = run("drop", "nope", "-d", db_path)
    assert result.exit_code == 1
    assert (
        result.stderr == "Error: Index 'nope' does not exist (llm index list shows the indexes)\n"
    )


def test_a_row_deleted_by_hand_leaves_nothing_to_the_next_index(db_path, db, vectors_collection):
    "SQLite gives its id to the next index: its memberships and default must not come too."
    Index.create("old", ["vecs"], db, backend="exact", default=True).build()
    db.execute("delete from vector_indexes where name = 'old'")
    db.conn.commit()
    created = run("create", "new", "vecs", "-b", "exact", "--build", "-d", db_path)
    assert created.exit_code == 0, created.output
    assert Index("new", db).collections == ["vecs"]
    assert Index.default_for(db, "vecs") is None  # the old one's default did not pass to it
    assert db.execute("select count(*) from vector_index_labels").fetchone()[0] == 200


# -- the label map ------------------------------------------------------------


def exact_ids(db, query, number, collection="pypi"):
    rows = db.execute(
        "select e.id, e.embedding from embeddings e join collections c on "
        "c.id = e.collection_id where c.name = ?",
        [collection],
    ).fetchall()
    vectors = np.stack([np.frombuffer(row[1], "<f4") for row in rows])
    scores = vectors @ query / np.linalg.norm(vectors, axis=1) / np.linalg.norm(query)
    return [rows[i][0] for i in np.argsort(-scores, kind="stable")[:number]]


def label_of(db, id):
    return db.execute("select label from vector_index_labels where id = ?", [id]).fetchone()[0]


def point_elsewhere(db):
    "p0007's label now names a row of npm, which the index does not cover."
    db.execute(
        "update vector_index_labels set collection_id = "
        "(select id from collections where name = 'npm'), id = 'n0003' where id = 'p0007'"
    )
    return "it maps a label to row 'n0003' of collection 'npm'"


def empty(db):
    db.execute("delete from vector_index_labels")
    return "none of the labels its backend found are in it"


def twice(db):
    "p0008's label re-pointed at p0007: one row under two labels."
    db.execute("drop index idx_vector_index_labels_index_id_collection_id_id")
    db.execute("update vector_index_labels set id = 'p0007' where id = 'p0008'")
    return "it maps two labels to one row"


@pytest.mark.parametrize("backend", ["exact", "faiss", "hnswlib"])
@pytest.mark.parametrize("damage", [point_elsewhere, empty, twice], ids=lambda f: f.__name__)
def test_a_damaged_label_map_is_said_and_a_plain_build_repairs_it(db_path, db, backend, damage):
    from llm_vector_index.testing import clustered_vectors, write_embeddings

    pypi = clustered_vectors(300, 16, clusters=6, seed=1)
    pypi[8] = pypi[7] + 0.001  # p0007 and p0008: each the other's nearest
    write_embeddings(db, "pypi", [f"p{i:04d}" for i in range(300)], pypi)
    write_embeddings(
        db, "npm", [f"n{i:04d}" for i in range(50)], clustered_vectors(50, 16, clusters=2, seed=2)
    )
    Index.create("ix", ["pypi"], db, backend=backend).build()
    query = pypi[7] - 0.0005  # nearest p0007, then p0008
    blob = np.asarray(query, "<f4").tobytes()
    problem = damage(db)
    db.conn.commit()
    conn = sqlite3.connect(db_path)
    sql.register(conn)
    expected = (
        f"Index 'ix' has a damaged label map ({problem}): run llm index build ix " "to rebuild it"
    )
    with pytest.raises(Exception) as raised:
        Index("ix", db).similar_by_vector(query, 5)
    assert str(raised.value) == expected
    assert json.loads(
        conn.execute("select vector_index_search('ix', ?, 5)", [blob]).fetchone()[0]
    ) == {"error": expected}
    report = run("build", "ix", "-d", db_path)
    assert report.exit_code == 0, report.output
    assert [e.id for e in Index("ix", db).similar_by_vector(query, 5)] == exact_ids(db, query, 5)
    assert catalog.labels_are_unique(db)  # put back by the full build where it was dropped
    conn.close()


# -- options that would ask for too much --------------------------------------


@pytest.mark.parametrize(
    "backend, options, message",
    [
        (
            "faiss",
            ["-o", "factory", "IVF10000000,Flat"],
            "Invalid faiss factory string 'IVF10000000,Flat': IVF10000000 is more than 65,536",
        ),
        (
            "faiss",
            ["-o", "factory", "HNSW100000,Flat"],
            "Invalid faiss factory string 'HNSW100000,Flat': HNSW100000 is more than 256",
        ),
        (
            "faiss",
            ["-o", "factory", "NSG32,Flat"],
            "Invalid faiss factory string 'NSG32,Flat': NSG cannot add rows once it is built, "
            "and builds add the rows that change: use HNSW",
        ),
        (
            "faiss",
            ["-o", "factory", "IDMap2,Flat"],
            "Invalid faiss factory string 'IDMap2,Flat': the plugin maps labels itself, leave IDMap out",
        ),
        ("faiss", ["-o", "ef_search", "100000"], "Option ef_search must be at most 8192"),
        ("faiss", ["-o", "rerank", "1000"], "Option rerank must be at most 64"),
        ("hnswlib", ["-o", "M", "1000000"], "Option M must be at most 256"),
        (
            "hnswlib",
            ["-o", "ef_construction", "100000"],
            "Option ef_construction must be at most 8192",
        ),
    ],
)
def test_options_that_ask_too_much_or_cannot_build_are_refused_at_create(
    db_path, db, vectors_collection, backend, options, message
):
    before = snapshot(db_path)
    result = run("create", "big", "vecs", "-b", backend, *options, "-d", db_path)
    assert result.exit_code == 1
    assert result.stderr == f"Error: {message}\n"
    assert snapshot(db_path) == before


def test_a_crafted_ivf_default_costs_llm_similar_nothing(db_path, db, vectors_collection):
    "IVF10000000,Flat written into the catalog: 1.9 GB and 6 s of llm similar before."
    import resource
    import subprocess
    import sys

    Index.create("ix", ["vecs"], db, backend="faiss", default=True).build()
    db.execute("""update vector_indexes set options = json_set(options, '$.factory',
                  'IVF10000000,Flat')""")
    db.conn.commit()
    result = subprocess.run(
        [sys.executable, "-m", "llm", "similar", "vecs", "v001", "-n", "2", "-d", str(db_path)],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    assert "IVF10000000 is more than 65,536" in result.stderr
    assert len(result.stdout.splitlines()) == 2
    peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    assert peak_mb < 600, peak_mb  # the libraries' own imports; not a 10M-list index
