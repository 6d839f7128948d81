"""What the child processes of the kill and concurrency tests run. Kept light
(no pytest) and preloaded in the forkserver (conftest.forkserver), so a child
starts in milliseconds with every heavy library already imported."""

import json
import os
import random
import sqlite3
import sys
import time
from pathlib import Path

from sqlite_utils import Database

from llm_vector_index import Index, IndexBusy, faults
from llm_vector_index.registry import get_backends
from llm_vector_index.testing import clustered_vectors, write_embeddings

DIMENSIONS = 16

# As in the tests themselves (conftest.py): llm loads no installed plugins.
sys._called_from_test = True
# Loaded once in the forkserver, not in every child: llm's default plugins
# import the OpenAI client, about 1 s of every child's build otherwise.
get_backends()


# Variables a test sets for its children (a server's DSN): the forkserver's
# environment is the one it started with.
ENVIRONMENT_FILE = "test-environment.json"


def _environment(user_path, kill_at=None):
    os.environ["LLM_USER_PATH"] = str(user_path)
    extra = Path(user_path) / ENVIRONMENT_FILE
    if extra.exists():
        os.environ.update(json.loads(extra.read_text()))
    if kill_at:
        os.environ[faults.VARIABLE] = kill_at


def build(db_path, name, full, user_path, kill_at, ready):
    "One build, killed at the fault point ``kill_at`` if given."
    _environment(user_path, kill_at)
    ready.set()  # the parent's random delay starts now, not at the fork
    with Index(name, Database(db_path)) as index:
        index.build(full=full)


def migrate(db_path, target, user_path, kill_at, ready):
    _environment(user_path, kill_at)
    from llm_vector_index.migrate import migrate_to_chroma

    ready.set()
    migrate_to_chroma(Database(db_path), ["c"], path=target, batch_size=40)


def migrate_pgvector(db_path, user_path, kill_at, ready):
    _environment(user_path, kill_at)
    from llm_vector_index.migrate_pgvector import migrate_to_pgvector

    ready.set()
    migrate_to_pgvector(Database(db_path), ["c"], dsn_env="PGVECTOR_DSN", batch_size=40)


def related(db_path, user_path, kill_at, ready):
    "One save of related rows (an incremental one once a save exists)."
    _environment(user_path, kill_at)
    ready.set()
    with Index("ix", Database(db_path)) as index:
        index.save_related("related", 5)


def connect(db_path):
    return Database(sqlite3.connect(db_path, timeout=30))


def writer(db_path, user_path, seed, deadline, results):
    "Adds, replaces and deletes rows the way llm and other tools write them."
    _environment(user_path)
    rng = random.Random(seed)
    db, ops = connect(db_path), 0
    while time.time() < deadline:
        ops += 1
        vector = clustered_vectors(1, DIMENSIONS, clusters=4, seed=rng.randrange(10**6))
        kind = rng.random()
        if kind < 0.5:
            write_embeddings(db, "c", [f"w{seed}-{ops}"], vector)
        elif kind < 0.8:
            write_embeddings(db, "c", [f"r{rng.randrange(300):03d}"], vector)
        else:
            db.execute("delete from embeddings where id = ?", [f"r{rng.randrange(300):03d}"])
            db.conn.commit()
    results.put(("writer", ops, 0))


def builder(db_path, user_path, seed, deadline, results):
    _environment(user_path)
    db, builds, busy = connect(db_path), 0, 0
    while time.time() < deadline:
        try:
            with Index("ix", db) as index:
                index.build(full=random.Random(seed + builds).random() < 0.2)
            builds += 1
        except IndexBusy:
            busy += 1
            time.sleep(0.01)
    results.put(("builder", builds, busy))


def querier(db_path, user_path, seed, deadline, results):
    _environment(user_path)
    db, queries = connect(db_path), 0
    vectors = clustered_vectors(20, DIMENSIONS, clusters=4, seed=seed)
    with Index("ix", db) as index:  # held open, as an application would
        while time.time() < deadline:
            found = index.similar_by_vector(vectors[queries % 20], 5)
            assert len(found) == 5
            queries += 1
    results.put(("querier", queries, 0))
