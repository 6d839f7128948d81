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
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_limits

sys.path.insert(0, str(Path(__file__).parent))
import hybrid
import scale

from llm_vector_index import Index


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
        result = scale.interleaved_timings(runs, [(q,) for q in queries], rounds=rounds)
    result["build_s"] = build_s
    result.update(scale.throughput(index, db_path, queries))
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
