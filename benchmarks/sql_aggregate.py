"""``vector_index_agg`` (an exact scan of the rows a query selects, in SQL)
against llm's brute force and the plugin's own filtered search, same rows,
same queries, one run.

    python benchmarks/sql_aggregate.py                 # 100,000 rows
    python benchmarks/sql_aggregate.py --rows 20000    # a quick look

Rows carry metadata ``{"tag": "a" | "b" | "c"}`` (a third each). Measured,
medians in ms over ``--queries`` held-out vectors, k = 10, one thread:
the aggregate over the whole collection and over one tag
(``json_extract(metadata, '$.tag') = 'a'``), llm's
``Collection.similar_by_vector`` (the whole collection: llm has no filter),
and the plugin's ``Index.similar_by_vector(q, 10, where={"tag": "a"})`` on
the default index. The aggregate's peak memory (tracemalloc, every Python
and numpy allocation while the query runs) is printed beside the size of
the vectors it scanned, and its answers are checked against an exact scan.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sqlite3
import statistics
import tempfile
import time
import tracemalloc
from pathlib import Path

import llm
import numpy as np
from sqlite_utils import Database
from threadpoolctl import threadpool_limits

from llm_vector_index import Index
from llm_vector_index.sql import register
from llm_vector_index.testing import clustered_vectors, write_embeddings

WHOLE = "select vector_index_agg(id, embedding, :q, 10) from embeddings"
TAGGED = WHOLE + " where json_extract(metadata, '$.tag') = 'a'"


def median_ms(call, queries) -> float:
    times = []
    for query in queries:
        started = time.perf_counter()
        call(query)
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=20)
    parser.add_argument("--llm-queries", type=int, default=3)
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="llm-vector-index-agg-"))
    try:
        db = Database(workdir / "embeddings.db")
        vectors = clustered_vectors(args.rows + args.queries, 384, clusters=1000, seed=3)
        tags = ["abc"[i % 3] for i in range(args.rows)]
        write_embeddings(
            db,
            "bench",
            [f"r{i}" for i in range(args.rows)],
            vectors[: args.rows],
            metadatas=[{"tag": tag} for tag in tags],
        )
        queries = vectors[args.rows :]
        index = Index.create("bench-idx", ["bench"], db)
        index.build()
        conn = sqlite3.connect(workdir / "embeddings.db")
        register(conn)

        def aggregate(sql):
            return lambda q: json.loads(conn.execute(sql, {"q": q.tobytes()}).fetchone()[0])

        unit = vectors[: args.rows] / np.linalg.norm(vectors[: args.rows], axis=1, keepdims=True)
        tagged = np.array([tag == "a" for tag in tags])
        agreed = 0
        for query in queries:
            scores = unit @ (query / np.linalg.norm(query))
            truth = {f"r{i}" for i in np.argsort(-np.where(tagged, scores, -np.inf))[:10]}
            agreed += len(truth & {hit["id"] for hit in aggregate(TAGGED)(query)})
        collection = llm.Collection("bench", db, create=False)
        with threadpool_limits(1):
            whole_ms = median_ms(aggregate(WHOLE), queries)
            tagged_ms = median_ms(aggregate(TAGGED), queries)
            plugin_ms = median_ms(
                lambda q: index.similar_by_vector(q, 10, where={"tag": "a"}), queries
            )
            llm_ms = median_ms(
                lambda q: collection.similar_by_vector(q.tolist(), 10),
                queries[: args.llm_queries],
            )
        tracemalloc.start()
        aggregate(WHOLE)(queries[0])
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        print(
            f"{args.rows:,} rows x 384, {args.queries} held-out queries, k = 10; "
            f"the tagged third's top 10 agree with an exact scan: "
            f"{agreed / (10 * len(queries)):.3f}"
        )
        print("| query | p50 ms | x faster than llm's brute force |")
        print("|---|---|---|")
        for label, ms in (
            ("llm's brute force (`Collection.similar_by_vector`, whole collection)", llm_ms),
            ("`vector_index_agg`, whole collection", whole_ms),
            ("`vector_index_agg`, `where json_extract(metadata, '$.tag') = 'a'`", tagged_ms),
            ("plugin's index, `where={'tag': 'a'}`", plugin_ms),
        ):
            print(f"| {label} | {ms:,.1f} | {llm_ms / ms:,.1f}x |")
        print(
            f"\naggregate's peak memory over the whole collection: {peak / 1e6:.1f} MB "
            f"(the vectors it scanned: {args.rows * 384 * 4 / 1e6:.0f} MB)"
        )
        index.close()
        conn.close()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
