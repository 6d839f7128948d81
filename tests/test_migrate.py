"""Migration into Chroma, read back with a separate chromadb client."""

import json

import chromadb
import llm
import numpy as np
import pytest
from chromadb.config import Settings
from click.testing import CliRunner

from llm_vector_index import migrate
from llm_vector_index.cli import index_group
from llm_vector_index.migrate import from_chroma_metadata, migrate_to_chroma, to_chroma_metadata
from llm_vector_index.testing import clustered_vectors, write_embeddings

from .conftest import snapshot, write_rich_collection


def quiet():
    # A new Settings each time: chromadb's clients write into the one they get.
    return Settings(anonymized_telemetry=False)


METADATAS = [
    {"title": "plain", "n": 3, "score": 0.5, "ok": True},
    {"nested": {"a": [1, 2, {"b": None}]}, "tags": ["x", "y"], "empty": [], "none": None},
    None,
    {"only_none": None},
    {"big": 2**70, "obj": {}},
]


@pytest.fixture
def rich_collection(db):
    "Text, binary and empty content, awkward metadata, unicode ids."
    ids, vectors = write_rich_collection(db, METADATAS)
    return ids, vectors


def read_back(client, name):
    got = client.get_collection(name).get(include=["embeddings", "documents", "metadatas"])
    return {
        id: (np.asarray(vector), document, metadata)
        for id, vector, document, metadata in zip(
            got["ids"], got["embeddings"], got["documents"], got["metadatas"]
        )
    }


def expected_rows(db, collection):
    return {
        row[0]: row[1:]
        for row in db.execute(
            "select e.id, e.embedding, e.content, e.metadata, e.content_blob is not null "
            "from embeddings e join collections c on c.id = e.collection_id where c.name = ?",
            [collection],
        )
    }


def check_faithful(db, client, name, collection="rich", prefix=""):
    stored = read_back(client, name)
    rows = expected_rows(db, collection)
    assert len(stored) >= len(rows)
    for id, (blob, content, metadata, is_blob) in rows.items():
        vector, document, flat = stored[prefix + id]
        original = np.frombuffer(blob, "<f4").astype(np.float64)
        assert np.abs(vector - original).max() <= 1e-6 * np.linalg.norm(original)
        assert migrate.same_vector(vector, original)
        assert document == content
        back_collection, back_id, back_metadata = from_chroma_metadata(flat)
        assert (back_collection, back_id) == (collection, id)
        assert back_metadata == migrate.llm_metadata_without_none(metadata)
        assert flat.get("llm_content_blob", False) == bool(is_blob)
        assert isinstance(flat["llm_updated"], int)


def test_metadata_round_trip_is_reversible():
    for metadata in [*METADATAS, {"a": {"b": {"c": 1}}}, [1, 2], "text"]:
        flat = to_chroma_metadata(json.dumps(metadata), "c", "i", 5, False)
        assert flat and all(isinstance(v, (str, int, float, bool)) for v in flat.values())
        assert from_chroma_metadata(flat) == (
            "c",
            "i",
            migrate.llm_metadata_without_none(json.dumps(metadata)),
        )


def test_migrate_to_a_directory(db, rich_collection, tmp_path):
    _ids, vectors = rich_collection
    target = tmp_path / "chroma"
    report = migrate_to_chroma(db, ["rich"], path=target)
    assert (report.sent, report.llm_rows, report.chroma_rows) == (300, 300, 300)
    assert report.sampled == 20 and not report.mismatches
    client = chromadb.PersistentClient(path=str(target), settings=quiet())
    try:
        check_faithful(db, client, "rich")
        chroma = client.get_collection("rich")
        assert chroma.configuration_json["hnsw"]["space"] == "cosine"
        # Chroma's own nearest neighbours match llm's brute force
        result = chroma.query(query_embeddings=vectors[5:6], n_results=10, include=[])
        brute = llm.Collection("rich", db, create=False).similar_by_vector(
            vectors[5].tolist(), 10, index=False
        )
        assert result["ids"][0] == [e.id for e in brute]
    finally:
        client.close()


def test_migrate_to_a_server_with_two_collections(db, rich_collection, chroma_server):
    write_embeddings(
        db, "more", ["doc-1", "m2"], clustered_vectors(2, 24, seed=3), contents=["more 1", "more 2"]
    )
    report = migrate_to_chroma(
        db,
        ["rich", "more"],
        host=chroma_server["host"],
        port=chroma_server["port"],
        chroma_collection="two.collections",
    )
    assert (report.sent, report.chroma_rows) == (302, 302)
    client = chromadb.HttpClient(
        host=chroma_server["host"], port=chroma_server["port"], settings=quiet()
    )
    try:
        check_faithful(db, client, "two.collections", "rich", prefix="rich/")
        check_faithful(db, client, "two.collections", "more", prefix="more/")
    finally:
        client.close()


def test_rerun_sends_only_changes_and_syncs_deletes(db, rich_collection, tmp_path):
    _ids, vectors = rich_collection
    target = tmp_path / "chroma"
    assert migrate_to_chroma(db, ["rich"], path=target).sent == 300
    assert migrate_to_chroma(db, ["rich"], path=target).sent == 0  # nothing changed
    write_embeddings(db, "rich", ["doc-5", "new-1"], -vectors[:2], contents=["changed", "new"])
    db.execute("delete from embeddings where id in ('doc-7', 'doc-8')")
    db.conn.commit()
    report = migrate_to_chroma(db, ["rich"], path=target)
    assert (report.sent, report.deleted) == (2, 0)
    assert report.chroma_rows == 301  # deletions not synced yet
    report = migrate_to_chroma(db, ["rich"], path=target, sync_deletes=True)
    assert (report.sent, report.deleted, report.chroma_rows) == (0, 2, 299)
    write_embeddings(db, "rich", ["old-stamp"], vectors[:1], updated=3)  # another tool's write
    assert migrate_to_chroma(db, ["rich"], path=target, sync_deletes=True).sent == 1
    client = chromadb.PersistentClient(path=str(target), settings=quiet())
    try:
        check_faithful(db, client, "rich")
        assert read_back(client, "rich")["doc-5"][1] == "changed"
        assert "title" not in read_back(client, "rich")["doc-5"][2]  # old keys gone
    finally:
        client.close()


def test_interrupted_migration_resumes_without_duplicates(db, rich_collection, tmp_path):
    target = tmp_path / "chroma"
    batches = []

    def interrupt(done, total):
        batches.append(done)
        raise KeyboardInterrupt  # after the first batch has been written

    with pytest.raises(KeyboardInterrupt):
        migrate_to_chroma(db, ["rich"], path=target, batch_size=100, progress=interrupt)
    assert batches == [100]
    assert (
        not db.execute(
            "select count(*) from sqlite_master where name = 'vector_index_migrations'"
        ).fetchone()[0]
        or not db.execute("select count(*) from vector_index_migrations").fetchone()[0]
    )
    report = migrate_to_chroma(db, ["rich"], path=target, batch_size=100)
    assert report.chroma_rows == 300 and not report.mismatches


def run(*args):
    return CliRunner().invoke(index_group, [str(a) for a in args])


def test_cli_migrate(db_path, rich_collection, tmp_path):
    result = run("migrate-chroma", "rich", "--path", tmp_path / "c", "-d", db_path)
    assert result.exit_code == 0, result.output
    assert "Migrated to Chroma collection rich: 300 sent, 0 deleted" in result.stderr
    assert "Verified: 300 rows in llm, 300 in Chroma, 20 sampled records identical" in result.stderr


@pytest.fixture
def bad_setup(db_path, db, rich_collection, tmp_path):
    write_embeddings(db, "other", ["o"], clustered_vectors(1, 24), model="other-model")
    write_embeddings(db, "wide", ["w"], clustered_vectors(1, 48))
    client = chromadb.PersistentClient(path=str(tmp_path / "existing"), settings=quiet())
    client.create_collection(
        "l2-space", configuration={"hnsw": {"space": "l2"}}, embedding_function=None
    )
    migrate_to_chroma(db, ["rich"], path=tmp_path / "existing", chroma_collection="narrow")
    client.close()
    return db_path, tmp_path


def test_bad_input(bad_setup):
    import socket

    db_path, tmp_path = bad_setup
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    existing = tmp_path / "existing"
    cases = [
        (["nope", "--path", existing], "Collection 'nope' does not exist"),
        (
            ["rich", "other", "--path", existing],
            "Collections must share an embedding model: 'rich' uses test-model, 'other' uses other-model",
        ),
        (
            ["rich", "--host", "127.0.0.1", "--port", port],
            f"Cannot reach Chroma server at 127.0.0.1:{port}",
        ),
        (
            ["rich", "--path", existing, "--chroma-collection", "l2-space"],
            "Chroma collection 'l2-space' exists with distance space 'l2'",
        ),
        (
            ["wide", "--path", existing, "--chroma-collection", "narrow"],
            "Chroma collection 'narrow' holds 24-dimensional vectors; these collections have 48",
        ),
        (
            ["rich", "--path", existing, "--batch-size", "0"],
            "batch size must be a whole number of at least 1, got 0",
        ),
        (
            ["rich", "--path", existing, "--batch-size", "-5"],
            "batch size must be a whole number of at least 1, got -5",
        ),
        (
            ["rich", "--path", existing, "--chroma-collection", "a"],
            "Invalid Chroma collection name 'a'",
        ),
        (
            ["rich", "--path", existing, "--chroma-collection", "bad..name"],
            "Invalid Chroma collection name",
        ),
    ]
    for args, message in cases:
        before = snapshot(db_path)
        result = run("migrate-chroma", *args, "-d", db_path)
        assert result.exit_code == 1, (args, result.output)
        assert message in result.stderr, (args, result.stderr)
        assert len(result.stderr.strip().splitlines()) == 1
        assert snapshot(db_path) == before
