"`llm index evaluate`: recall against an exact scan, on real backends."

import json

import pytest
from click.testing import CliRunner

from llm_vector_index import Index
from llm_vector_index.cli import index_group
from llm_vector_index.cli_output import evaluation_table
from llm_vector_index.evaluate import evaluate
from llm_vector_index.testing import clustered_vectors, write_embeddings

from .conftest import snapshot


def test_exact_index_has_perfect_recall_and_a_weak_graph_does_not(db):
    write_embeddings(
        db, "c", [f"r{i}" for i in range(3000)], clustered_vectors(3000, 32, clusters=3)
    )
    exact = Index.create("exact", ["c"], db, backend="exact")
    exact.build()
    result = evaluate(exact, queries=30, k=10)
    assert (result.queries, result.k, result.recall) == (30, 10, 1.0)
    assert 0 < result.p50_ms <= result.p95_ms
    weak = Index.create(
        "weak", ["c"], db, backend="hnswlib", options={"M": 2, "ef_construction": 2, "ef": 1}
    )
    weak.build()
    assert evaluate(weak, queries=30, k=10).recall < 0.9


def test_cli_evaluate(db_path, db, vectors_collection):
    runner = CliRunner()
    assert (
        runner.invoke(
            index_group, ["create", "ix", "vecs", "--build", "-d", str(db_path)]
        ).exit_code
        == 0
    )
    result = runner.invoke(
        index_group, ["evaluate", "ix", "--queries", "20", "-n", "5", "--json", "-d", str(db_path)]
    )
    assert result.exit_code == 0, result.output
    [report] = json.loads(result.output)
    assert report["index"] == "ix" and report["queries"] == 20 and report["k"] == 5
    assert report["recall"] == 1.0 and report["rows"] == 200  # auto: exact at this size
    assert report["recall_at_1"] == 1.0
    assert report["open_mb"] >= 0
    table = runner.invoke(index_group, ["evaluate", "ix", "--queries", "20", "-d", str(db_path)])
    assert table.exit_code == 0 and table.output.splitlines()[0].split()[:5] == [
        "index",
        "backend",
        "rows",
        "recall@10",
        "recall@1",
    ]
    assert "(20 queries, the same for every index)" in table.output
    bad = runner.invoke(index_group, ["evaluate", "ix", "-n", "0", "-d", str(db_path)])
    assert bad.exit_code == 1 and "k must be a whole number of at least 1, got 0" in bad.stderr


@pytest.fixture
def three(db):
    "One collection indexed three ways, and held-out copies of 40 of its rows."
    vectors = clustered_vectors(3000, 32, clusters=3)
    write_embeddings(
        db, "c", [f"r{i}" for i in range(3000)], vectors, contents=[f"row {i}" for i in range(3000)]
    )
    write_embeddings(db, "held", [f"h{i}" for i in range(40)], vectors[:40])
    write_embeddings(db, "other-model", ["x"], vectors[:1], model="another")
    indexes = [
        Index.create("exact", ["c"], db, backend="exact"),
        Index.create(
            "weak", ["c"], db, backend="hnswlib", options={"M": 2, "ef_construction": 2, "ef": 1}
        ),
        Index.create("faiss", ["c"], db, backend="faiss"),
    ]
    for index in indexes:
        index.build()
    return indexes


def test_indexes_side_by_side_on_the_same_queries(three):
    results = evaluate(three, queries=30, k=10)
    assert [r.index for r in results] == ["exact", "weak", "faiss"]
    assert {r.queries for r in results} == {30} and {r.rows for r in results} == {3000}
    exact, weak, faiss = results
    assert exact.recall == 1.0 and weak.recall < 0.9 <= faiss.recall
    assert weak.settings == {"M": 2, "ef_construction": 2, "ef": 1}
    assert all(r.disk_mb > 0 and r.queries_per_second > 0 and r.build_seconds for r in results)
    from llm_vector_index import close_indexes

    close_indexes()
    fresh = evaluate([Index(r.index, three[0].db) for r in results], queries=5)
    assert all(r.open_mb is not None and r.open_mb >= 0 for r in fresh)
    # The table prints the numbers the dataclasses (and so --json) carry.
    table = evaluation_table(results)
    for result in results:
        row = next(line for line in table.splitlines() if line.startswith(result.index + " "))
        assert f"{result.recall:.3f}" in row and f"{result.p50_ms:.3f}" in row
        assert f"{result.disk_mb:.1f}" in row
    assert three[0].evaluate(queries=5).recall == 1.0  # Index.evaluate


def test_stored_rows_and_another_collection_agree_where_the_answer_is_known(three):
    exact = three[0]
    # Stored rows: each query's own row is left out of its truth and of the
    # results. Were it left in the results only, an exact index would return
    # it first at k=1 and score 0; left in both, it would flatter any index.
    assert evaluate(exact, queries=40, k=1).recall == 1.0
    # Held-out copies of the same rows in another collection: each one's
    # twin is its true nearest neighbour, and counts.
    held = evaluate(three, queries=40, k=1, queries_from="held")
    assert [r.queries for r in held] == [40, 40, 40]
    assert held[0].recall == 1.0 and held[2].recall >= 0.9


def test_text_queries_are_embedded_with_the_model(db, db_path, text_collection, texts, tmp_path):
    Index.create("docs-idx", ["docs"], db, backend="exact").build()
    questions = tmp_path / "questions.txt"
    questions.write_text("cat dog\n\nlemon lime\nfox 3\n")
    result = CliRunner().invoke(
        index_group,
        ["evaluate", "docs-idx", "--queries-file", str(questions), "--json", "-d", str(db_path)],
    )
    assert result.exit_code == 0, result.output
    [report] = json.loads(result.output)
    assert report["queries"] == 3 and report["recall"] == 1.0  # blank lines skipped


@pytest.mark.parametrize(
    "args, message",
    [
        (
            ["exact", "--queries-from", "held", "--queries-file", "-"],
            "Use probes, another collection or texts as queries, not two",
        ),
        (["exact", "--queries-from", "nope"], "Collection 'nope' does not exist"),
        (
            ["exact", "--queries-from", "other-model"],
            "Collection 'other-model' uses another, index 'exact' uses test-model",
        ),
        (["exact", "missing"], "Index 'missing' does not exist"),
        (["exact", "--queries", "0"], "queries must be a whole number of at least 1, got 0"),
    ],
)
def test_bad_evaluations_are_one_line_and_change_nothing(three, db_path, args, message):
    before = snapshot(db_path, *(index.path for index in three))
    result = CliRunner().invoke(index_group, ["evaluate", *args, "-d", str(db_path)], input="q\n")
    assert result.exit_code == 1 and len(result.stderr.strip().splitlines()) == 1
    assert message in result.stderr and "Traceback" not in result.output
    assert snapshot(db_path, *(index.path for index in three)) == before


def test_a_sweep_is_monotone_in_the_setting_on_a_known_set(db, db_path):
    "A budget-limited exact scan: each larger budget finds more, exactly."
    from llm.plugins import pm

    from .test_tuning import BudgetPlugin

    vectors = clustered_vectors(3000, 32, clusters=3, seed=2)
    write_embeddings(db, "c", [f"r{i}" for i in range(3000)], vectors)
    pm.register(BudgetPlugin(), name="llm-budget")
    try:
        Index.create("budget", ["c"], db, backend="budget-exact").build()
        result = CliRunner().invoke(
            index_group,
            ["evaluate", "budget", "--sweep", "--queries", "30", "--json", "-d", str(db_path)],
        )
    finally:
        pm.unregister(name="llm-budget")
    assert result.exit_code == 0, result.output
    [curve] = json.loads(result.output)
    assert curve["option"] == "budget" and curve["queries"] == 30
    values = [point["value"] for point in curve["points"]]
    recalls = [point["recall"] for point in curve["points"]]
    assert values == [10, 100, 1000, 10000]
    assert recalls == sorted(recalls) and recalls[0] < 0.5 and recalls[-1] == 1.0


def test_sweeps_side_by_side_in_a_table_and_a_png(three, db_path, tmp_path):
    picture = tmp_path / "curve.png"
    result = CliRunner().invoke(
        index_group,
        [
            "evaluate",
            "weak",
            "faiss",
            "--sweep",
            "--queries",
            "20",
            "--plot",
            str(picture),
            "-d",
            str(db_path),
        ],
    )
    assert result.exit_code == 0, result.output
    assert "weak (hnswlib), 20 queries" in result.output
    assert "faiss (faiss), 20 queries" in result.output
    from llm_vector_index.base import HNSW_SEARCH_WIDTHS

    blocks = result.output.strip().split("\n\n")
    assert [len(block.splitlines()) for block in blocks] == [2 + len(HNSW_SEARCH_WIDTHS)] * 2
    data = picture.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000
    # the setting in use is untouched
    assert Index("weak", three[0].db).record.options["ef"] == 1


@pytest.mark.parametrize(
    "args, message",
    [
        (["exact", "--sweep"], "Index 'exact' (exact) has no setting that trades speed for recall"),
        (["faiss", "--plot", "x.png"], "--plot draws a sweep: add --sweep"),
        (["faiss", "--sweep", "--plot", "x.jpg"], "Plot file must end in .png, got 'x.jpg'"),
    ],
)
def test_bad_sweeps_are_one_line_and_change_nothing(
    three, db_path, args, message, tmp_path, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    before = snapshot(db_path, *(index.path for index in three))
    result = CliRunner().invoke(index_group, ["evaluate", *args, "-d", str(db_path)])
    assert result.exit_code == 1 and message in result.stderr, result.output
    assert len(result.stderr.strip().splitlines()) == 1
    assert snapshot(db_path, *(index.path for index in three)) == before
    assert not list(tmp_path.glob("x.*"))


def test_long_evaluations_report_progress(three):
    seen = []
    evaluate(three, queries=5, progress=lambda done, total: seen.append((done, total)))
    assert seen == [(1, 3)] * 3
    seen.clear()
    from llm_vector_index.base import HNSW_SEARCH_WIDTHS
    from llm_vector_index.evaluate import sweep

    sweep(three[1], queries=5, progress=lambda done, total: seen.append((done, total)))
    assert seen == [(1, len(HNSW_SEARCH_WIDTHS))] * len(HNSW_SEARCH_WIDTHS)


def test_settings_that_do_not_apply_are_not_listed(db, vectors_collection):
    "No nprobe on an HNSW graph, no ef_search on IVF (issue 20, item 7)."
    Index.create("hnsw", ["vecs"], db, backend="faiss").build()
    Index.create("ivf", ["vecs"], db, backend="faiss", options={"factory": "IVF4,Flat"}).build()
    hnsw, ivf = evaluate([Index("hnsw", db), Index("ivf", db)], queries=5)
    assert set(hnsw.settings) == {"factory", "ef_search", "ef_construction", "rerank"}
    assert set(ivf.settings) == {"factory", "nprobe", "rerank"}


def test_recall_at_1_counts_a_missed_top_hit(db):
    "A weak graph that finds most of the top 10 can still miss the best row."
    vectors = clustered_vectors(3000, 32, clusters=3)
    write_embeddings(db, "c", [f"r{i}" for i in range(3000)], vectors)
    weak = Index.create(
        "weak", ["c"], db, backend="hnswlib", options={"M": 2, "ef_construction": 2, "ef": 1}
    )
    weak.build()
    result = evaluate(weak, queries=100, k=10)
    assert 0 < result.recall_at_1 < 1
    exact = Index.create("exact", ["c"], db, backend="exact")
    exact.build()
    assert evaluate(exact, queries=100, k=10).recall_at_1 == 1.0
