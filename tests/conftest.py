import contextlib
import hashlib
import sqlite3
import sys
from pathlib import Path

import llm
import numpy as np
import pytest
from llm.plugins import pm
from sqlite_utils import Database

from llm_vector_index.testing import clustered_vectors, write_embeddings


def pytest_configure(config):
    # Keep installed llm plugins out, as llm's own tests do.
    sys._called_from_test = True


class HashEmbedding(llm.EmbeddingModel):
    "A deterministic 16-d model: character trigram counts hashed into buckets."

    model_id = "hash-16"
    batch_size = 100

    def embed_batch(self, texts):
        for text in texts:
            if isinstance(text, bytes):
                text = text.decode("utf-8", "replace")
            vector = [0.0] * 16
            padded = f"  {text.lower()}  "
            for start in range(len(padded) - 2):
                digest = hashlib.md5(padded[start : start + 3].encode()).digest()
                vector[digest[0] % 16] += 1.0
            yield vector


@pytest.fixture(autouse=True)
def user_path(tmp_path, monkeypatch):
    path = tmp_path / "llm-user"
    path.mkdir()
    monkeypatch.setenv("LLM_USER_PATH", str(path))
    monkeypatch.delenv("LLM_EMBEDDINGS_DB", raising=False)
    return path


@pytest.fixture(autouse=True)
def hash_model():
    class HashModelPlugin:
        __name__ = "HashModelPlugin"

        @llm.hookimpl
        def register_embedding_models(self, register):
            register(HashEmbedding())

    pm.register(HashModelPlugin(), name="test-hash-model")
    try:
        yield
    finally:
        pm.unregister(name="test-hash-model")


@pytest.fixture
def db_path(tmp_path):
    return tmp_path / "embeddings.db"


@pytest.fixture
def db(db_path):
    return Database(db_path)


WORDS = [
    "cat",
    "dog",
    "fish",
    "bird",
    "horse",
    "cow",
    "sheep",
    "goat",
    "lion",
    "tiger",
    "bear",
    "wolf",
    "fox",
    "deer",
    "apple",
    "pear",
    "plum",
    "grape",
    "lemon",
    "lime",
    "melon",
    "berry",
    "cherry",
    "peach",
]


@pytest.fixture
def texts():
    "Stored text rows embedded with the hash model through llm itself."
    return {
        f"doc-{i:03d}": f"{WORDS[i % len(WORDS)]} {WORDS[(i * 7) % len(WORDS)]} {i}"
        for i in range(120)
    }


@pytest.fixture
def text_collection(db, texts):
    collection = llm.Collection("docs", db, model_id="hash-16")
    collection.embed_multi_with_metadata(
        ((id, text, {"n": n}) for n, (id, text) in enumerate(texts.items())), store=True
    )
    return collection


def snapshot(*paths: Path) -> dict:
    "Every file under these paths with its bytes' hash: to prove nothing changed."
    files = {}
    for root in paths:
        candidates = [root] if root.is_file() else sorted(root.rglob("*")) if root.exists() else []
        for path in candidates:
            if path.is_file():
                files[str(path)] = hashlib.sha256(path.read_bytes()).hexdigest()
    return files


def statements_sent(db, run) -> list[str]:
    "The SQL statements ``run()`` sends through ``db``'s connection."
    statements: list[str] = []
    db.conn.set_trace_callback(statements.append)
    try:
        run()
    finally:
        db.conn.set_trace_callback(None)
    return statements


@pytest.fixture
def vectors_collection(db):
    "Two hundred clustered 24-d vectors with known values, model 'test-model'."

    vectors = clustered_vectors(200, 24, clusters=8, seed=4)
    ids = [f"v{i:03d}" for i in range(200)]
    write_embeddings(
        db,
        "vecs",
        ids,
        vectors,
        contents=[f"row {i}" for i in range(200)],
        metadatas=[{"i": i} if i % 2 else None for i in range(200)],
        updated=1000,
    )
    return ids, vectors


def write_rich_collection(db, metadatas) -> tuple[list[str], np.ndarray]:
    """Collection ``rich`` for the migration tests: 300 rows of text, binary
    and empty content, unicode ids, ``metadatas`` in turn."""
    vectors = clustered_vectors(300, 24, clusters=6, seed=8)
    ids = [f"doc-{i}" for i in range(297)] + ["ünïcødé/ид", "emoji-🦙", "space id"]
    write_embeddings(
        db,
        "rich",
        ids,
        vectors,
        contents=[f"text {i}" if i % 3 else None for i in range(300)],
        metadatas=[metadatas[i % len(metadatas)] for i in range(300)],
    )
    db.execute("update embeddings set content_blob = x'00ff' where id in ('doc-1', 'doc-2')")
    db.conn.commit()
    return ids, vectors


@pytest.fixture(scope="session")
def chroma_server(tmp_path_factory):
    "A real Chroma server for the whole session (see testing.chroma_server)."
    from llm_vector_index.testing import chroma_server as run_server

    with run_server(tmp_path_factory.mktemp("chroma-server")) as server:
        yield server


@pytest.fixture(scope="session")
def postgres_server(tmp_path_factory):
    "A real Postgres with pgvector for the whole session (see testing_postgres)."
    from llm_vector_index.testing_postgres import postgres_server as run_server

    with run_server(tmp_path_factory.mktemp("postgres-server")) as server:
        yield server


@pytest.fixture
def pgvector_dsn(postgres_server, monkeypatch):
    "PGVECTOR_DSN set to the session's Postgres: pass -o dsn_env PGVECTOR_DSN."
    monkeypatch.setenv("PGVECTOR_DSN", postgres_server.dsn)
    return "PGVECTOR_DSN"


@pytest.fixture(scope="session")
def forkserver():
    """Child processes forked from a server that has imported the heavy
    libraries and tests/workers.py already: a child starts in milliseconds."""
    import multiprocessing

    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(
        [
            "tests.workers",
            "llm_vector_index.backends.faiss",
            "llm_vector_index.backends.hnswlib",
            "faiss",
            "hnswlib",
            "chromadb",
        ]
    )
    return context


@pytest.fixture(autouse=True)
def close_shared_indexes():
    "Each test starts with no index held open by an earlier one."
    yield
    from llm_vector_index import close_indexes

    close_indexes()


@contextlib.contextmanager
def sql_connection(path):
    "A plain sqlite3 connection to ``path`` with the plugin's SQL functions (sql.register)."
    from llm_vector_index.sql import register

    connection = sqlite3.connect(path)
    register(connection)
    try:
        yield connection
    finally:
        connection.close()
