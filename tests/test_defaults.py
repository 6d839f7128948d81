"""A collection's default index never breaks llm's own `llm similar` or
`collection.similar()`: whatever state the index is in, llm's brute force
answers, with one warning line. The same state through `llm index similar`,
which names the index, is one line of error, exit 1."""

import json

import llm
import numpy as np
import pytest
from click.testing import CliRunner
from llm.cli import cli as llm_cli
from sqlite_utils import Database

from llm_vector_index import Index
from llm_vector_index import collection as integration
from llm_vector_index.cli import index_group
from llm_vector_index.testing import write_embeddings

from .conftest import snapshot


def run(*args):
    return CliRunner().invoke(index_group, [str(arg) for arg in args])


def folder_of(db_path):
    return db_path.parent / "embeddings.db.vector-indexes"


def edit(db_path, sql, *args):
    db = Database(db_path)
    db.execute(sql, list(args))
    db.conn.commit()


def unbuilt(db_path):
    "llm index create NAME COLLECTION --default, without --build."
    edit(db_path, "delete from vector_index_defaults")
    assert run("create", "fresh", "vecs", "--default", "-d", db_path).exit_code == 0
    return "fresh"


def backend_uninstalled(db_path):
    edit(db_path, "update vector_indexes set backend = 'gone-plugin'")


def not_covering(db_path):
    "A default that names an index over another collection."
    write_embeddings(Database(db_path), "other", ["o1"], np.ones((1, 24), np.float32))
    assert (
        run("create", "elsewhere", "other", "-b", "exact", "--build", "-d", db_path).exit_code == 0
    )
    edit(
        db_path,
        "update vector_index_defaults set index_id = "
        "(select id from vector_indexes where name = 'elsewhere')",
    )
    return "elsewhere"


def options_of_the_wrong_type(db_path):
    edit(db_path, """update vector_indexes set options = '{"factory": 5}'""")


def options_unknown(db_path):
    edit(db_path, """update vector_indexes set options = '{"no_such": 1}'""")


def dimensions_absurd(db_path):
    edit(db_path, "update vector_indexes set dimensions = 1000000000000")


def dimensions_negative(db_path):
    edit(db_path, "update vector_indexes set dimensions = -5")


def symlink_loop(db_path):
    folder = folder_of(db_path) / "ix"
    folder.rename(folder_of(db_path) / "moved")
    folder.symlink_to(folder)


STATES = [
    unbuilt,
    backend_uninstalled,
    not_covering,
    options_of_the_wrong_type,
    options_unknown,
    dimensions_absurd,
    dimensions_negative,
    symlink_loop,
]
# (Damaged and missing files: tests/test_corruption.py.)


@pytest.fixture
def with_default(db_path, db, vectors_collection):
    Index.create("ix", ["vecs"], db, backend="faiss", default=True).build()
    # Stale, so that a query would first build: the path that writes.
    db["embeddings"].update((1, "v010"), {"updated": 2000})
    db.conn.commit()
    return db_path


def brute_force_lines(db_path, id, number):
    entries = integration.ORIGINALS["similar_by_id"](
        llm.Collection("vecs", Database(db_path)), id, number
    )
    return [
        {"id": e.id, "score": e.score, "content": e.content, "metadata": e.metadata}
        for e in entries
    ]


@pytest.mark.parametrize("state", STATES, ids=[s.__name__ for s in STATES])
def test_llm_similar_answers_by_brute_force_whatever_the_default_s_state(with_default, state):
    named = state(with_default) or "ix"
    result = CliRunner().invoke(
        llm_cli, ["similar", "vecs", "v003", "-n", "4", "-d", str(with_default)]
    )
    assert result.exit_code == 0, result.output
    assert [json.loads(line) for line in result.stdout.splitlines()] == brute_force_lines(
        with_default, "v003", 4
    )
    warning = result.stderr.splitlines()
    assert len(warning) == 1 and warning[0].startswith(
        "Warning: default index of 'vecs' not used ("
    )
    assert warning[0].endswith("); answering with llm's brute-force scan")
    assert "Traceback" not in result.stderr
    # Python callers of llm's API get the same.
    entries = llm.Collection("vecs", Database(with_default)).similar_by_id("v003", 4)
    assert [e.id for e in entries] == [
        line["id"] for line in brute_force_lines(with_default, "v003", 4)
    ]

    # Named, the index's state is the caller's business: one line.
    before = snapshot(with_default, folder_of(with_default))
    named_result = run("similar", named, "v003", "-n", "4", "-d", with_default)
    assert named_result.exit_code == 1, named_result.output
    assert named_result.stderr.startswith("Error: ") and len(named_result.stderr.splitlines()) == 1
    assert snapshot(with_default, folder_of(with_default)) == before


def test_a_number_llm_accepts_and_the_index_does_not(with_default):
    result = CliRunner().invoke(
        llm_cli, ["similar", "vecs", "v003", "-n", "0", "-d", str(with_default)]
    )
    assert result.exit_code == 0, result.output
    assert result.stdout == ""
    assert "number must be a whole number of at least 1, got 0" in result.stderr


def test_an_id_that_is_not_there_is_llm_s_own_error(with_default):
    result = CliRunner().invoke(llm_cli, ["similar", "vecs", "nope", "-d", str(with_default)])
    assert result.exit_code == 1
    assert result.output == "Error: ID not found in collection\n"


def test_where_cannot_fall_back_so_it_raises(with_default):
    backend_uninstalled(with_default)
    collection = llm.Collection("vecs", Database(with_default))
    with pytest.raises(Exception, match="Unknown backend 'gone-plugin'"):
        collection.similar_by_id("v003", 4, where={"i": 3})


def test_an_unbuilt_default_in_a_fresh_database(db_path, db, vectors_collection):
    assert run("create", "d-def", "vecs", "--default", "-d", db_path).exit_code == 0
    result = CliRunner().invoke(llm_cli, ["similar", "vecs", "v003", "-n", "2", "-d", str(db_path)])
    assert result.exit_code == 0, result.output
    assert result.stderr == (
        "Warning: default index of 'vecs' not used (Index 'd-def' has not "
        "been built: run llm index build d-def); answering with llm's "
        "brute-force scan\n"
    )
    assert [json.loads(line) for line in result.stdout.splitlines()] == brute_force_lines(
        db_path, "v003", 2
    )
