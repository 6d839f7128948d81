"Chroma specifics: server errors, collection names, tokens, server-side cleanup."

import json
import re
import socket

import chromadb
import pytest
from chromadb.config import Settings
from click.testing import CliRunner

from llm_vector_index.backends.chroma import collection_name
from llm_vector_index.cli import index_group

from .conftest import snapshot


def run(*args):
    return CliRunner().invoke(index_group, [str(arg) for arg in args])


def server_collections(server):
    client = chromadb.HttpClient(
        host=server["host"], port=server["port"], settings=Settings(anonymized_telemetry=False)
    )
    try:
        return {collection.name for collection in client.list_collections()}
    finally:
        client.close()


def test_unreachable_server_is_one_line_and_writes_nothing(db_path, vectors_collection):
    assert run("create", "ix", "vecs", "-b", "exact", "-d", db_path).exit_code == 0
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    before = snapshot(db_path, db_path.parent / "embeddings.db.vector-indexes")
    result = run(
        "create",
        "remote",
        "vecs",
        "-b",
        "chroma",
        "-o",
        "host",
        "127.0.0.1",
        "-o",
        "port",
        port,
        "-d",
        db_path,
    )
    assert result.exit_code == 1
    assert result.stderr.startswith(f"Error: Cannot reach Chroma server at 127.0.0.1:{port}")
    assert len(result.stderr.strip().splitlines()) == 1
    assert snapshot(db_path, db_path.parent / "embeddings.db.vector-indexes") == before


@pytest.mark.parametrize("name", ["ix", "a..b", "x" * 100, "-_.", "docs.v2"])
def test_collection_names_are_valid_for_chroma(name):
    derived = collection_name(name)
    assert 3 <= len(derived) <= 512
    assert re.fullmatch(r"[a-zA-Z0-9][a-zA-Z0-9._-]*[a-zA-Z0-9]", derived)
    assert ".." not in derived
    assert collection_name(name) != derived  # unique per index


def test_server_index_show_drop_and_full_rebuild(
    db_path, vectors_collection, chroma_server, monkeypatch
):
    server = ["-o", "host", chroma_server["host"], "-o", "port", chroma_server["port"]]
    refused = run(
        "create",
        "remote",
        "vecs",
        "-b",
        "chroma",
        *server,
        "-o",
        "token",
        "s3cret-token",
        "-d",
        db_path,
    )
    assert refused.exit_code == 1
    assert "Tokens are never stored in the database" in refused.stderr
    missing = run(
        "create",
        "remote",
        "vecs",
        "-b",
        "chroma",
        *server,
        "-o",
        "token_env",
        "TEST_CHROMA_TOKEN",
        "-d",
        db_path,
    )
    assert missing.exit_code == 1
    assert "Environment variable TEST_CHROMA_TOKEN (token_env) is not set" in missing.stderr
    monkeypatch.setenv("TEST_CHROMA_TOKEN", "s3cret-token")
    created = run(
        "create",
        "remote",
        "vecs",
        "-b",
        "chroma",
        *server,
        "-o",
        "token_env",
        "TEST_CHROMA_TOKEN",
        "--build",
        "-d",
        db_path,
    )
    assert created.exit_code == 0, created.output
    assert b"s3cret-token" not in db_path.read_bytes()
    folder = db_path.parent / "embeddings.db.vector-indexes"
    assert not any(b"s3cret-token" in p.read_bytes() for p in folder.rglob("*") if p.is_file())
    shown = run("show", "remote", "-d", db_path).output
    assert "s3cret-token" not in shown
    details = json.loads(shown)
    assert details["options"]["token_env"] == "TEST_CHROMA_TOKEN"
    first = details["chroma_collection"]
    assert first.startswith("llm-remote-") and first in server_collections(chroma_server)
    assert details["chroma"] == f"http://127.0.0.1:{chroma_server['port']}"
    assert "s3cret-token" not in run("list", "--json", "-d", db_path).output

    assert run("build", "remote", "--full", "-d", db_path).exit_code == 0
    second = json.loads(run("show", "remote", "-d", db_path).output)["chroma_collection"]
    assert second != first
    assert first not in server_collections(chroma_server)  # the old one was removed
    assert len(
        json.loads(
            run("similar", "remote", "v001", "-n", "300", "-d", db_path).output.splitlines()[0]
        )
    )

    assert run("drop", "remote", "-d", db_path).exit_code == 0
    assert second not in server_collections(chroma_server)


def test_local_chroma_lives_beside_the_database(db_path, vectors_collection):
    assert run("create", "local", "vecs", "-b", "chroma", "--build", "-d", db_path).exit_code == 0
    details = json.loads(run("show", "local", "-d", db_path).output)
    assert details["chroma"].startswith(
        str(db_path.parent / "embeddings.db.vector-indexes" / "local")
    )
    assert details["rows"] == 200


def test_failed_full_rebuild_leaves_no_collection_behind(
    db_path, db, vectors_collection, chroma_server
):
    from llm_vector_index import Index

    server = ["-o", "host", chroma_server["host"], "-o", "port", chroma_server["port"]]
    assert (
        run("create", "flaky", "vecs", "-b", "chroma", *server, "--build", "-d", db_path).exit_code
        == 0
    )
    before = server_collections(chroma_server)

    def fail_after_the_first_batch(done, total):
        raise RuntimeError("the build failed part-way")

    with pytest.raises(RuntimeError, match="part-way"):
        Index("flaky", db).build(full=True, progress=fail_after_the_first_batch)
    assert server_collections(chroma_server) == before  # the half-built one was removed
    similar = run("similar", "flaky", "v001", "-n", "3", "-d", db_path)
    assert similar.exit_code == 0 and len(similar.output.splitlines()) == 3


def test_a_new_ef_search_reaches_searches_in_the_same_process(db):
    """Chroma reads ef_search when it loads a graph: the sweep (and tuning)
    change it on an index this process has already searched, and must see
    recall move; the index held beside it keeps answering, at its own setting."""
    import numpy as np

    from llm_vector_index import Index
    from llm_vector_index.evaluate import sweep
    from llm_vector_index.testing import write_embeddings

    rng = np.random.default_rng(3)
    vectors = rng.normal(size=(4000, 48)).astype(np.float32)  # no clusters: a hard graph
    write_embeddings(db, "c", [f"r{i}" for i in range(4000)], vectors)
    write_embeddings(
        db, "held", [f"q{i}" for i in range(40)], rng.normal(size=(40, 48)).astype(np.float32)
    )
    Index.create("ch", ["c"], db, backend="chroma", options={"ef_search": 10}).build()
    held = Index("ch", db)
    before = [hit.id for hit in held.similar_by_id("r1", number=5)]  # its graph is loaded
    curve = sweep(held, queries=40, queries_from="held")
    recalls = {point.value: point.recall for point in curve.points}
    assert recalls[16] < 0.9 and recalls[1024] > 0.99, recalls
    assert [hit.id for hit in held.similar_by_id("r1", number=5)] == before
    assert Index("ch", db).record.options["ef_search"] == 10  # the sweep put it back
    held.close()
