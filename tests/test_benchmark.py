"""The benchmark record runs end to end at a tiny size and writes its
Markdown and plots (the real record is a 1M run: make benchmark), pgvector
on a Postgres it starts itself."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

PNG = b"\x89PNG\r\n\x1a\n"
RUN = Path(__file__).parents[1] / "benchmarks" / "run.py"


def test_the_record_is_written(tmp_path):
    out = tmp_path / "docs"
    result = subprocess.run(
        [
            sys.executable,
            str(RUN),
            "--rows",
            "2000,3000",
            "--backends",
            "auto,faiss,pgvector",
            "--queries",
            "20",
            "--llm-queries",
            "1",
            "--npz",
            "",
            "--out",
            str(out),
            "--no-cold",  # it would drop the machine's page cache (as root)
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    record = (out / "benchmarks.md").read_text()
    assert "### synthetic 2,000: 2,000 rows" in record and "### synthetic 3,000" in record
    assert "llm's brute force:" in record and "Measured " in record and "faiss-cpu" in record
    rows = [
        line
        for line in record.splitlines()
        if line.startswith(("| auto |", "| faiss |", "| pgvector |"))
    ]
    assert len(rows) == 6
    assert all(line.count("|") == 19 for line in rows)  # 18 columns, each filled
    auto_row = [cell.strip() for cell in rows[0].split("|")]
    assert auto_row[2] == "exact" and auto_row[12] == "1.000"
    # our share beside the raw library's search, the batch and the threads
    assert float(auto_row[11]) == pytest.approx(
        float(auto_row[7].split("/")[0]) - float(auto_row[9]), abs=0.0015
    )
    assert auto_row[14] == "-"  # no cold-cache runs asked for
    faiss_row = [cell.strip() for cell in rows[1].split("|")]
    assert faiss_row[15].endswith("x)") and float(faiss_row[15].split()[0]) > 0
    assert re.fullmatch(r"[\d,]+ / [\d,]+ \(\d+\.\d\dx\)", faiss_row[16])
    # pgvector on the Postgres the run started: raw SQL beside it, its table's size.
    pgvector_row = [cell.strip() for cell in rows[2].split("|")]
    assert pgvector_row[2].startswith("hnsw ef_search=")
    assert float(pgvector_row[9]) > 0 and float(pgvector_row[17]) > 1.0
    for name in ("bench-recall-latency.png", "bench-latency-rows.png", "bench-build-rows.png"):
        assert (out / name).read_bytes()[:8] == PNG and f"]({name})" in record


def test_the_graph_study_prints_a_row_per_ef_construction():
    "graph_quality.py (the efConstruction table in docs/backends.md) at a tiny size."
    result = subprocess.run(
        [
            sys.executable,
            str(RUN.parent / "graph_quality.py"),
            "--rows",
            "3000",
            "--clusters",
            "30",
            "--queries",
            "20",
            "--factory",
            "HNSW32",
            "--ef-construction",
            "16,80",
            "--ef-search",
            "16,256",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    rows = [
        line.split("|")
        for line in result.stdout.splitlines()
        if line.startswith(("| 16 |", "| 80 |"))
    ]
    assert len(rows) == 2
    recalls = [[float(cell) for cell in row[3:5]] for row in rows]
    assert all(0.0 <= recall <= 1.0 for row in recalls for recall in row)
    assert recalls[1][1] >= 0.95  # a wide search of a well-built graph finds nearly all


def test_the_identifier_set_asks_for_each_name_only_one_document_has(tmp_path):
    "relevance_sets.identifiers_set over a two-module 'standard library'."
    sys.path.insert(0, str(RUN.parent))
    from relevance_sets import identifiers_set, stdlib_set

    rest = "Some more words, so that the rest of this docstring is long enough to be a document."
    for module, names in {
        "alpha": ["check_output", "run", "read_all"],
        "beta": ["read_all", "get_terminal_size"],
    }.items():
        (tmp_path / f"{module}.py").write_text(
            "".join(
                f'def {name}():\n    """Do what {name} does, once and well.\n\n    {rest}"""\n\n\n'
                for name in names
            )
        )
    stdlib = stdlib_set(tmp_path)
    identifiers = identifiers_set(stdlib)
    assert identifiers.documents == stdlib.documents and identifiers.corpus == "stdlib"
    # read_all is in both modules, run is no snake_case name: neither is asked for.
    assert sorted((q["query"], q["relevant"]) for q in identifiers.queries) == [
        ("check_output", ["alpha.check_output"]),
        ("get_terminal_size", ["beta.get_terminal_size"]),
    ]


def test_the_aggregate_benchmark_agrees_with_an_exact_scan():
    "sql_aggregate.py (vector_index_agg against llm and the index) at a tiny size."
    result = subprocess.run(
        [
            *(sys.executable, str(RUN.parent / "sql_aggregate.py")),
            *("--rows", "3000", "--queries", "5", "--llm-queries", "1"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "agree with an exact scan: 1.000" in result.stdout
    assert "| `vector_index_agg`, whole collection |" in result.stdout
