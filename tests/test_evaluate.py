"`llm index evaluate`: recall against an exact scan, on real backends."

import json

from click.testing import CliRunner

from llm_vector_index import Index
from llm_vector_index.cli import index_group
from llm_vector_index.evaluate import evaluate
from llm_vector_index.testing import clustered_vectors, write_embeddings


def test_exact_index_has_perfect_recall_and_a_weak_graph_does_not(db):
    write_embeddings(db, "c", [f"r{i}" for i in range(3000)], clustered_vectors(3000, 32, clusters=3))
    exact = Index.create("exact", ["c"], db, backend="exact")
    exact.build()
    result = evaluate(exact, queries=30, k=10)
    assert (result.queries, result.k, result.recall) == (30, 10, 1.0)
    assert 0 < result.p50_ms <= result.p95_ms
    weak = Index.create("weak", ["c"], db, backend="hnswlib",
                        options={"M": 2, "ef_construction": 2, "ef": 1})
    weak.build()
    assert evaluate(weak, queries=30, k=10).recall < 0.9


def test_cli_evaluate(db_path, db, vectors_collection):
    runner = CliRunner()
    assert runner.invoke(index_group, ["create", "ix", "vecs", "--build", "-d", str(db_path)]).exit_code == 0
    result = runner.invoke(index_group, ["evaluate", "ix", "--queries", "20", "-n", "5", "-d", str(db_path)])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["queries"] == 20 and report["recall@5"] >= 0.95
    bad = runner.invoke(index_group, ["evaluate", "ix", "-n", "0", "-d", str(db_path)])
    assert bad.exit_code == 1 and "must be positive integers" in bad.stderr
