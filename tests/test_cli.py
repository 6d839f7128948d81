"`llm index ...` end to end, and every bad input: one line, exit 1, nothing changed."

import json
import re

import numpy as np
import pytest
from click.testing import CliRunner
from llm.cli import cli as llm_cli
from sqlite_utils import Database

from llm_vector_index.cli import index_group
from llm_vector_index.testing import clustered_vectors, write_embeddings

from .conftest import snapshot


def run(*args, input=None):
    return CliRunner().invoke(index_group, [str(arg) for arg in args], input=input)


def lines(output):
    return [json.loads(line) for line in output.splitlines() if line.strip()]


@pytest.fixture
def built_cli(db_path, vectors_collection):
    result = run("create", "ix", "vecs", "-b", "exact", "-d", db_path)
    assert result.exit_code == 0, result.output
    result = run("build", "ix", "-d", db_path)
    assert result.exit_code == 0, result.output
    assert "200 indexed, 0 removed, 200 rows" in result.stderr
    return db_path


@pytest.mark.parametrize(
    "extra", [[], ["-n", "3"], ["--prefix", "v1"], ["-n", "50", "--prefix", "V0"]]
)
def test_similar_output_matches_llm_similar(built_cli, extra):
    ours = run("similar", "ix", "v042", *extra, "-d", built_cli)
    theirs = CliRunner().invoke(llm_cli, ["similar", "vecs", "v042", *extra, "-d", str(built_cli)])
    assert ours.exit_code == theirs.exit_code == 0, ours.output + theirs.output
    ours, theirs = lines(ours.output), lines(theirs.output)
    assert ours and [list(row) for row in ours] == [list(row) for row in theirs]
    for mine, expected in zip(ours, theirs):
        assert mine["score"] == pytest.approx(expected.pop("score"), abs=1e-9)
        mine.pop("score")
        assert mine == expected


def test_similar_by_content_and_plain(db_path, text_collection):
    assert run("create", "t", "docs", "--build", "-d", db_path).exit_code == 0
    ours = run("similar", "t", "-c", "cat dog", "-n", "4", "-d", db_path)
    theirs = CliRunner().invoke(
        llm_cli, ["similar", "docs", "-c", "cat dog", "-n", "4", "-d", str(db_path)]
    )
    assert [row["id"] for row in lines(ours.output)] == [row["id"] for row in lines(theirs.output)]
    plain = run("similar", "t", "-c", "cat dog", "-n", "1", "--plain", "-d", db_path)
    first = lines(ours.output)[0]
    assert plain.output.startswith(f"{first['id']} (")
    assert first["content"] in plain.output
    piped = run("similar", "t", "-i", "-", "-n", "4", "-d", db_path, input="cat dog")
    assert piped.output == ours.output


def test_multi_collection_output_names_the_collection(db_path, db, vectors_collection):
    write_embeddings(db, "more", ["m1"], clustered_vectors(1, 24, clusters=8, seed=4))
    assert run("create", "two", "vecs", "more", "--build", "-d", db_path).exit_code == 0
    rows = lines(run("similar", "two", "v001", "-n", "300", "-d", db_path).output)
    assert {row["collection"] for row in rows} == {"vecs", "more"}
    assert len(rows) == 200


def test_list_show_drop_backends(built_cli):
    listed = run("list", "-d", built_cli)
    assert listed.output.startswith("ix: exact over vecs\n  200 rows, test-model")
    assert json.loads(run("list", "--json", "-d", built_cli).output)[0]["rows"] == 200
    assert run("-d", built_cli).output == listed.output  # list is the default
    shown = json.loads(run("show", "ix", "-d", built_cli).output)
    assert shown["backend"] == "exact" and shown["dimensions"] == 24
    assert shown["path"].endswith("embeddings.db.vector-indexes/ix")
    assert shown["disk_bytes"] > 200 * 24 * 4
    backends = run("backends").output
    assert "exact: exact (plugin llm_vector_index.backends.exact)" in backends
    assert "-o factory str (default HNSW32)" in backends
    dropped = run("drop", "ix", "-d", built_cli)
    assert dropped.exit_code == 0
    assert run("list", "-d", built_cli).output == ""
    assert not (built_cli.parent / "embeddings.db.vector-indexes" / "ix").exists()


def test_database_from_environment(built_cli, monkeypatch):
    monkeypatch.setenv("LLM_EMBEDDINGS_DB", str(built_cli))
    assert run("list").output.startswith("ix:")


@pytest.fixture
def bad_input_setup(db_path, db, vectors_collection):
    write_embeddings(db, "other", ["o1"], clustered_vectors(1, 24), model="other-model")
    assert run("create", "ix", "vecs", "--build", "-d", db_path).exit_code == 0
    return db_path


BAD_INPUT = [
    (["create", "new", "nope"], "Collection 'nope' does not exist"),
    (
        ["create", "new", "vecs", "other"],
        "Collections must share an embedding model: 'vecs' uses test-model, 'other' uses other-model",
    ),
    (
        ["create", "new", "vecs", "-b", "nope"],
        "Unknown backend 'nope'; available: auto, chroma, exact, faiss, hnswlib",
    ),
    (
        ["create", "new", "vecs", "-b", "faiss", "-o", "bogus", "1"],
        "Unknown option 'bogus' for backend faiss",
    ),
    (
        ["create", "new", "vecs", "-b", "faiss", "-o", "ef_search", "many"],
        "Option ef_search must be int, got 'many'",
    ),
    (
        ["create", "new", "vecs", "-b", "faiss", "-o", "ef_search", "0"],
        "Option ef_search must be at least 1",
    ),
    (
        ["create", "new", "vecs", "-b", "faiss", "-o", "factory", "HNSW-banana"],
        "Invalid faiss factory string 'HNSW-banana'",
    ),
    (
        ["create", "new", "vecs", "-o", "bogus", "1"],
        "Unknown option 'bogus' for backend auto (options: exact_limit, max_memory)",
    ),
    (["create", "new", "vecs", "-o", "exact_limit", "-5"], "Option exact_limit must be at least 0"),
    (
        ["create", "new", "vecs", "-o", "kind", "hnswlib"],
        "Option kind of backend auto is set by builds, not by users (options: exact_limit, max_memory)",
    ),
    (
        ["create", "new", "vecs", "-o", "kind", "faiss"],
        "Option kind of backend auto is set by builds, not by users (options: exact_limit, max_memory)",
    ),
    (
        ["create", "new", "vecs", "-o", "reason", "mine"],
        "Option reason of backend auto is set by builds, not by users (options: exact_limit, max_memory)",
    ),
    (
        ["create", "new", "vecs", "-b", "exact", "-o", "factory", "Flat"],
        "Unknown option 'factory' for backend exact",
    ),
    (["create", "new", "vecs", "-b", "hnswlib", "-o", "M", "1"], "Option M must be at least 2"),
    (
        ["create", "new", "vecs", "-b", "hnswlib", "-o", "ef", "lots"],
        "Option ef must be int, got 'lots'",
    ),
    (
        ["create", "new", "vecs", "-b", "hnswlib", "-o", "nprobe", "3"],
        "Unknown option 'nprobe' for backend hnswlib",
    ),
    (
        ["create", "new", "vecs", "-b", "chroma", "-o", "port", "eighty"],
        "Option port must be int, got 'eighty'",
    ),
    (
        ["create", "new", "vecs", "-b", "chroma", "-o", "ssl", "maybe"],
        "Option ssl must be bool, got 'maybe'",
    ),
    (
        ["create", "new", "vecs", "-b", "chroma", "-o", "ef", "9"],
        "Unknown option 'ef' for backend chroma",
    ),
    (
        ["create", "new", "vecs", "-b", "chroma", "-o", "token", "t0k"],
        "Tokens are never stored in the database: put it in an environment variable",
    ),
    (["create", "ix", "vecs"], "Index 'ix' already exists"),
    (["create", "", "vecs"], "Invalid index name ''"),
    (["create", "../x", "vecs"], "Invalid index name '../x'"),
    (["create", "a/b", "vecs"], "Invalid index name 'a/b'"),
    (["create", ".hidden", "vecs"], "Invalid index name '.hidden'"),
    (["create", "abc\n", "vecs"], "Invalid index name 'abc\\n'"),
    (["create", "x" * 101, "vecs"], "Invalid index name"),
    (["build", "nope"], "Index 'nope' does not exist"),
    (["similar", "nope", "v001"], "Index 'nope' does not exist"),
    (["drop", "nope"], "Index 'nope' does not exist"),
    (["show", "nope"], "Index 'nope' does not exist"),
    (["similar", "ix"], "Must provide content or an ID for the comparison"),
    (["similar", "ix", "zzz"], "ID 'zzz' not found in index 'ix'"),
    (["similar", "ix", "o1"], "ID 'o1' not found in index 'ix'"),
    (
        ["similar", "ix", "-c", "hello"],
        "Embedding model 'test-model' of index 'ix' is not installed",
    ),
    (["similar", "ix", "v001", "-n", "0"], "number must be a whole number of at least 1, got 0"),
    (["similar", "ix", "v001", "-n", "-2"], "number must be a whole number of at least 1, got -2"),
]


@pytest.mark.parametrize("args,message", BAD_INPUT)
def test_bad_input_one_line_and_nothing_changed(bad_input_setup, args, message):
    db_path = bad_input_setup
    folder = db_path.parent / "embeddings.db.vector-indexes"
    before = snapshot(db_path, folder)
    result = run(*args, "-d", db_path)
    assert result.exit_code == 1
    assert result.stderr.startswith("Error: ")
    assert message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert "Traceback" not in result.output
    assert snapshot(db_path, folder) == before


@pytest.mark.parametrize(
    "command", [["list"], ["build", "ix"], ["similar", "ix", "1"], ["show", "ix"]]
)
def test_missing_database_is_not_created(tmp_path, command):
    missing = tmp_path / "missing.db"
    result = run(*command, "-d", missing)
    assert result.exit_code == 1
    assert f"Database not found: {missing}" in result.stderr
    assert not missing.exists()


def test_database_without_embeddings_table(tmp_path):
    path = tmp_path / "plain.db"
    Database(path)["things"].insert({"a": 1})
    before = snapshot(path)
    result = run("create", "x", "c", "-d", path)
    assert result.exit_code == 1
    assert "No embeddings table found in database" in result.stderr
    assert snapshot(path) == before


@pytest.mark.parametrize("backend", ["auto", "exact", "faiss", "hnswlib", "chroma"])
def test_show_an_index_never_built(tmp_path, backend):
    "Nothing was interrupted: show says so, as list does (issue 20, item 3)."

    db_path = tmp_path / "fresh.db"
    write_embeddings(Database(db_path), "docs", ["a", "b"], np.eye(2, 8, dtype=np.float32))
    assert (
        CliRunner()
        .invoke(index_group, ["create", "i-new", "docs", "-b", backend, "-d", str(db_path)])
        .exit_code
        == 0
    )
    shown = CliRunner().invoke(index_group, ["show", "i-new", "-d", str(db_path)])
    assert shown.exit_code == 0, shown.output
    details = json.loads(shown.output)
    assert (details["state"], details["built"], details["rows"]) == ("not built yet", None, 0)
    assert details["backend"] == backend and details["collections"] == ["docs"]
    assert CliRunner().invoke(index_group, ["build", "i-new", "-d", str(db_path)]).exit_code == 0
    built = json.loads(
        CliRunner().invoke(index_group, ["show", "i-new", "-d", str(db_path)]).output
    )
    assert built["state"] == "built" and built["rows"] == 2
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+00:00", built["built"])


def test_a_missing_api_key_is_one_line(db_path, tmp_path, monkeypatch):
    "A model that needs a key, as llm's OpenAI models do (issue 20, item 5)."
    import llm
    from llm.plugins import pm

    class KeyedEmbedding(llm.EmbeddingModel):
        model_id = "keyed-8"
        needs_key = "keyed"
        key_env_var = "KEYED_API_KEY"

        def embed_batch(self, texts):
            self.get_key()  # raises NeedsKeyException without one
            for text in texts:
                yield [float(len(text))] + [1.0] * 7

    class Plugin:
        __name__ = "KeyedPlugin"

        @llm.hookimpl
        def register_embedding_models(self, register):
            register(KeyedEmbedding())

    monkeypatch.delenv("KEYED_API_KEY", raising=False)
    write_embeddings(
        Database(db_path), "paid", ["a", "b"], np.eye(2, 8, dtype=np.float32), model="keyed-8"
    )
    pm.register(Plugin(), name="test-keyed")
    try:
        assert (
            CliRunner()
            .invoke(index_group, ["create", "paid-ix", "paid", "--build", "-d", str(db_path)])
            .exit_code
            == 0
        )
        before = snapshot(db_path)
        result = CliRunner().invoke(
            index_group, ["similar", "paid-ix", "-c", "hello", "-d", str(db_path)]
        )
        assert result.exit_code == 1
        assert result.stderr.startswith("Error: Embedding the query with keyed-8 failed: ")
        assert "KEYED_API_KEY" in result.stderr and len(result.stderr.splitlines()) == 1
        assert snapshot(db_path) == before
        monkeypatch.setenv("KEYED_API_KEY", "k")
        assert (
            CliRunner()
            .invoke(index_group, ["similar", "paid-ix", "-c", "hello", "-d", str(db_path)])
            .exit_code
            == 0
        )
    finally:
        pm.unregister(name="test-keyed")


def test_a_bad_faiss_factory_string_says_what_works(db_path, vectors_collection):
    result = CliRunner().invoke(
        index_group,
        ["create", "x", "vecs", "-b", "faiss", "-o", "factory", "Flatt", "-d", str(db_path)],
    )
    assert result.exit_code == 1
    assert result.stderr == (
        "Error: Invalid faiss factory string 'Flatt' (could not parse index "
        "string Flatt): try Flat, HNSW32, HNSW32,SQ8, IVF1024,Flat or "
        "IVF1024,PQ48\n"
    )
