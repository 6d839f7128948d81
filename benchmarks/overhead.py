"""The plugin's own cost of a query (issue 23): p50 and p95 of
``Index.similar_by_vector(q, 10)`` through a held index against the wrapped
library's own search on the same index for the same number of candidates
(scale.raw_search), query by query interleaved, one thread, and llm's brute
force in the same run; then all the queries as one batch
(``Index.similar_by_vectors``) against the library's own batch search, both
on every core; and queries a second from one thread and from two.

    python benchmarks/overhead.py                         # 100k real, every backend
    python benchmarks/overhead.py --rows 40000 --backends auto,hnswlib

The data are real PyPI summaries with their MiniLM vectors (../shared/data:
40k, and past that summaries made by joining two, with the mean of their
vectors; hybrid.speed_corpus), content stored; the queries are the 500
held-out summaries, never stored rows. *ours* is plugin p50 minus raw p50:
what the plugin adds to the library's search (the label map, the rows
read from SQLite, the exact re-score, the entries).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
from sqlite_utils import Database
from threadpoolctl import threadpool_limits

sys.path.insert(0, str(Path(__file__).parent))
import hybrid
import scale

from llm_vector_index import Index


def raw_batch(backend):
    "The wrapped library's own batch search on the same index (its threads), or None."
    name = type(backend).__name__
    if name == "FaissIndex":
        params = backend._search_parameters(None)
        wanted = backend.candidates(10)
        return lambda m: backend._index.search(
            m / np.linalg.norm(m, axis=1, keepdims=True), wanted, params=params
        )
    if name == "HnswlibIndex":
        return lambda m: backend._graph.knn_query(m, 10, num_threads=-1)
    return None


def batch_ms(function, matrix, runs: int = 5) -> float:
    "Median ms a query of one call for the whole matrix, after a warm-up call."
    function(matrix)
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        function(matrix)
        times.append((time.perf_counter() - started) * 1000 / len(matrix))
    return float(np.median(times))


def queries_per_second(db_path, name: str, queries: np.ndarray, threads: int) -> float:
    """Queries a second with ``threads`` threads each asking every query in
    turn, each thread with its own connection and ``Index`` (the open index is
    shared, as in a web app), one library thread each."""
    ready = threading.Barrier(threads + 1)

    def work():
        index = Index(name, Database(db_path))
        index.similar_by_vector(queries[0], 10)  # opened before the clock starts
        ready.wait()
        for q in queries:
            index.similar_by_vector(q, 10)

    with threadpool_limits(1):
        pool = [threading.Thread(target=work) for _ in range(threads)]
        for thread in pool:
            thread.start()
        ready.wait()
        started = time.perf_counter()
        for thread in pool:
            thread.join()
    return threads * len(queries) / (time.perf_counter() - started)


def measure(db, db_path, backend: str, queries: np.ndarray, rounds: int) -> dict:
    index = Index.create(f"overhead-{backend}", ["bench"], db, backend=backend)
    started = time.perf_counter()
    index.build()
    build_s = time.perf_counter() - started
    raw = scale.raw_search(index.backend())
    runs = {"plugin": lambda q: index.similar_by_vector(q, 10)}
    if raw is not None:
        runs["raw"] = raw
    with threadpool_limits(1):
        result = hybrid.timed(runs, [(q,) for q in queries], rounds=rounds)
    result["build_s"] = build_s
    raw_many = raw_batch(index.backend())
    result["batch"] = batch_ms(lambda m: index.similar_by_vectors(m, 10), queries)
    result["raw_batch"] = batch_ms(raw_many, queries) if raw_many else float("nan")
    result["qps"] = [
        statistics.median(queries_per_second(db_path, index.name, queries, n) for _ in range(3))
        for n in (1, 2)
    ]
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--backends", default="auto,faiss,hnswlib,exact")
    args = parser.parse_args()
    texts, vectors, _, query_vectors = hybrid.speed_corpus(args.rows)
    queries = query_vectors[: args.queries]
    with tempfile.TemporaryDirectory() as folder:
        db_path = Path(folder) / "bench.db"
        db, _, _ = scale.prepare(db_path, vectors, queries, texts)
        brute_ms = scale.brute_force_ms(db, queries, 5)
        print(f"\n{args.rows:,} real rows, {len(queries)} held-out queries x {args.rounds}")
        print(f"llm's brute force: {brute_ms:.1f} ms p50\n")
        print(
            "| backend | plugin p50 / p95 ms | raw p50 / p95 ms | ours (p50) | x raw "
            "| batch ms a query | raw batch | raw / batch | queries/s, 1 / 2 threads |"
        )
        print("|---|---|---|---|---|---|---|---|---|")
        for backend in args.backends.split(","):
            r = measure(db, db_path, backend, queries, args.rounds)
            plugin, raw = r["plugin"], r.get("raw", (float("nan"),) * 2)
            print(
                f"| {backend} | {plugin[0]:.3f} / {plugin[1]:.3f} | {raw[0]:.3f} / {raw[1]:.3f} "
                f"| {plugin[0] - raw[0]:.3f} ms | {plugin[0] / raw[0]:.1f}x "
                f"| {r['batch']:.3f} | {r['raw_batch']:.3f} | {r['raw_batch'] / r['batch']:.2f}x "
                f"| {r['qps'][0]:,.0f} / {r['qps'][1]:,.0f} ({r['qps'][1] / r['qps'][0]:.2f}x) |",
                flush=True,
            )


if __name__ == "__main__":
    main()
