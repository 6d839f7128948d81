"""``auto -o max_memory``: the best codes that fit the budget (exact, the 8-bit
graph, IVF-PQ), chosen again as the rows grow, with the reason in ``llm
index show``; the files written stay within it; a budget nothing meets is
refused in one line and changes nothing."""

import json

import numpy as np
import pytest
from click.testing import CliRunner

from llm_vector_index import Index
from llm_vector_index.backends import budget
from llm_vector_index.cli import index_group
from llm_vector_index.testing import clustered_vectors, write_embeddings

from .conftest import snapshot

DIMENSIONS = 32
# 3,000 rows x 32 dimensions: exact needs 408 KB, the 8-bit graph 936 KB,
# IVF-PQ (64 lists, 4 bytes a row) 125 KB.


def add_rows(db, start, count, seed=1):
    vectors = clustered_vectors(count, DIMENSIONS, clusters=8, seed=seed)
    write_embeddings(db, "c", [f"r{i:05d}" for i in range(start, start + count)], vectors)
    return vectors


def run(*args):
    return CliRunner().invoke(index_group, [str(arg) for arg in args])


def files_bytes(index):
    return sum(path.stat().st_size for path in index.path.rglob("*") if path.is_file())


def test_the_codes_and_sizes():
    assert budget.exact(3000, 32).bytes == 3000 * (4 * 32 + 8)
    [graph, ivf] = budget.graphs(3000, 32)
    assert graph.options == {"factory": "HNSW32,SQ8", "rerank": 2}
    assert ivf.options == {"factory": "IVF64,PQ4", "rerank": 16}
    assert budget.pq_bytes(384) == 48 and budget.pq_bytes(30) == 3 and budget.pq_bytes(7) is None
    assert budget.parse_size("1.5GB") == 1_500_000_000 and budget.parse_size("2 MiB") == 2**21
    assert budget.parse_size("") is None


@pytest.mark.parametrize(
    "options, kind, factory",
    [
        ({"max_memory": "1MB"}, "exact", None),
        ({"max_memory": "1MB", "exact_limit": 0}, "faiss", "HNSW32,SQ8"),
        ({"max_memory": "300KB"}, "faiss", "IVF64,PQ4"),
    ],
)
def test_a_budget_chooses_the_best_codes_that_fit(db_path, db, options, kind, factory):
    vectors = add_rows(db, 0, 3000)
    args = [f"-o {key} {value}" for key, value in options.items()]
    result = run("create", "ix", "c", "--build", *" ".join(args).split(), "-d", db_path)
    assert result.exit_code == 0, result.output
    shown = json.loads(run("show", "ix", "-d", db_path).output)
    assert shown["options"]["kind"] == kind
    assert shown["options"].get("factory") == factory
    if kind == "faiss":
        assert f"of max_memory {options['max_memory']}" in shown["options"]["reason"]
        assert ("exact_limit" if factory.startswith("HNSW") else "would need") in shown["options"][
            "reason"
        ]
    index = Index("ix", db)
    assert files_bytes(index) <= budget.parse_size(options["max_memory"])
    # The estimate is within 2% of the files the build wrote.
    estimate = budget.current(index.settings, 3000, DIMENSIONS).bytes
    assert abs(files_bytes(index) - estimate) <= 0.02 * estimate
    # And it answers: most of the exact top 10 of held-out queries.
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    queries = clustered_vectors(20, DIMENSIONS, clusters=8, seed=1)[:20] + 0.05
    hits = 0
    for query in queries:
        truth = {f"r{i:05d}" for i in np.argsort(-(unit @ query))[:10]}
        hits += len(truth & {e.id for e in index.similar_by_vector(query, 10)})
    assert hits / 200 >= 0.9


@pytest.mark.parametrize(
    "size, message",
    [
        (
            "50KB",
            "Error: max_memory 50KB is less than any index of 3,000 rows x 32 dimensions "
            "needs: IVF-PQ (64 lists, 4 bytes a row) needs about 125 KB",
        ),
        ("lots", "Error: Option max_memory must be a size such as 300MB or 2GB, got 'lots'"),
        ("0", "Error: Option max_memory must be a size such as 300MB or 2GB, got '0'"),
    ],
)
def test_a_budget_nothing_meets_is_refused_and_changes_nothing(db_path, db, size, message):
    add_rows(db, 0, 3000)
    before = snapshot(db_path, db_path.parent / "embeddings.db.vector-indexes")
    result = run("create", "ix", "c", "-o", "max_memory", size, "--build", "-d", db_path)
    assert result.exit_code == 1
    assert result.output.strip().splitlines() == [message]
    assert snapshot(db_path, db_path.parent / "embeddings.db.vector-indexes") == before


def test_growing_rows_move_to_smaller_codes_then_refuse(db_path, db):
    add_rows(db, 0, 1000)  # exact: 136 KB
    index = Index.create("ix", ["c"], db, options={"max_memory": "300KB"})
    index.build()
    assert index.settings["kind"] == "exact"
    add_rows(db, 1000, 2000, seed=2)  # exact would need 408 KB
    report = index.build()
    assert report.full and index.settings["factory"] == "IVF64,PQ4"
    assert files_bytes(index) <= 300_000
    assert index.build().tuning is None and not index.build().full  # settled
    add_rows(db, 3000, 30000, seed=3)  # IVF-PQ would need about 1 MB
    before = snapshot(db_path, index.path)
    result = run("build", "ix", "-d", db_path)
    assert result.exit_code == 1
    assert result.output.startswith("Error: max_memory 300KB is less than any index of 33,000 rows")
    assert snapshot(index.path) == {k: v for k, v in before.items() if k != str(db_path)}
    assert Index("ix", db).settings["factory"] == "IVF64,PQ4"
