"""Every backend through the CLI: create, build, incremental builds after add,
change and delete, similar; results agree with the exact backend."""

import json

import pytest
from click.testing import CliRunner

from llm_vector_index import Index
from llm_vector_index.cli import index_group
from llm_vector_index.testing import clustered_vectors, write_embeddings

BACKENDS = [
    ("faiss", []),
    ("faiss", ["-o", "factory", "IVF32,Flat", "-o", "nprobe", "8"]),
    ("hnswlib", []),
    ("chroma", []),
]


def run(*args):
    result = CliRunner().invoke(index_group, [str(arg) for arg in args])
    assert result.exit_code == 0, result.output
    return result


def ids(output):
    return [json.loads(line)["id"] for line in output.splitlines()]


@pytest.mark.parametrize("backend,options", BACKENDS)
def test_backend_end_to_end(db_path, db, backend, options):
    check_backend(db_path, db, backend, options)


def test_chroma_server_end_to_end(db_path, db, chroma_server):
    options = ["-o", "host", chroma_server["host"], "-o", "port", chroma_server["port"]]
    check_backend(db_path, db, "chroma", options)


def check_backend(db_path, db, backend, options):
    vectors = clustered_vectors(3000, 32, clusters=30, seed=2)
    write_embeddings(db, "c", [f"r{i}" for i in range(3000)], vectors)
    run("create", "exact", "c", "-b", "exact", "--build", "-d", db_path)
    run("create", "ix", "c", "-b", backend, *options, "--build", "-d", db_path)

    def recall():
        hits = 0
        for query_id in ("r1", "r500", "r1000", "r2000", "r2999"):
            truth = ids(run("similar", "exact", query_id, "-d", db_path).output)
            hits += len(set(truth) & set(ids(run("similar", "ix", query_id, "-d", db_path).output)))
        return hits / 50

    assert recall() >= 0.95
    # add, change and delete, then build incrementally
    fresh = clustered_vectors(20, 32, clusters=3, seed=9) * -1
    write_embeddings(db, "c", [f"new{i}" for i in range(20)], fresh)
    write_embeddings(db, "c", ["r7"], fresh[:1] * 1.01)
    db.execute("delete from embeddings where id in ('r8', 'r9')")
    db.conn.commit()
    build = run("build", "ix", "-d", db_path)
    assert "21 indexed, 2 removed, 3018 rows" in build.stderr
    run("build", "exact", "-d", db_path)
    nearest = ids(run("similar", "ix", "new0", "-n", "3", "-d", db_path).output)
    assert "r7" in nearest
    everything = ids(run("similar", "ix", "r1", "-n", "5000", "-d", db_path).output)
    assert len(everything) == 3017 and not {"r8", "r9"} & set(everything)
    assert recall() >= 0.95
    assert Index("ix", db).backend().count() == 3018
