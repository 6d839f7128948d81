"""llm's brute force vs each backend: build, incremental build, query, recall.

    python benchmarks/build_and_query.py --rows 100000
    python benchmarks/build_and_query.py --npz ../shared/data/pypi-minilm-40k.npz
    python benchmarks/build_and_query.py --db embeddings.db --collection docs

Prints one table. Every index is created with default options, so an
approximate backend is tuned by its first build to the default target
(recall@10 0.95 on probes): "tuned" is what tuning chose, "tune s" what it
took, and recall@10 / recall@1 are measured on the held-out queries against
the exact index. Query latencies are in-process with one thread: "search" is
the backend alone, "query" is ``Index.similar_by_vector`` end to end (backend,
SQLite rows, exact re-scoring), the number to compare with llm's
``Collection.similar_by_vector``. Medians throughout: the machine is shared.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import llm
import numpy as np
from sqlite_utils import Database
from threadpoolctl import threadpool_limits

from llm_vector_index import Index
from llm_vector_index.testing import clustered_vectors, write_embeddings


def percentile(values, q):
    return float(np.percentile(values, q)) if values else float("nan")


def load_data(args, db: Database) -> tuple[str, np.ndarray]:
    "Fill (or open) the collection; return its name and the query vectors."
    if args.db:
        collection = args.collection
        rows = db.execute(
            "select embedding from embeddings e join collections c on c.id = e.collection_id "
            "where c.name = ? order by random() limit ?",
            [collection, args.queries],
        ).fetchall()
        queries = np.frombuffer(b"".join(r[0] for r in rows), "<f4").reshape(len(rows), -1)
        return collection, queries
    if args.npz:
        data = np.load(args.npz)
        vectors = data["vectors"].astype("<f4")[: args.rows]
        queries = data["query_vectors"].astype("<f4")[: args.queries]
        ids = [str(i) for i in data["ids"][: len(vectors)]]
        contents = [str(t) for t in data["texts"][: len(vectors)]]
    else:
        everything = clustered_vectors(
            args.rows + args.queries, args.dimensions, clusters=args.clusters
        )
        vectors, queries = everything[: args.rows], everything[args.rows :]
        ids = [f"row{i:07d}" for i in range(args.rows)]
        contents = None
    write_embeddings(db, "bench", ids, vectors, model="bench-vectors", contents=contents, updated=1)
    return "bench", queries


def change_one_percent(db: Database, collection: str, seed: int) -> int:
    "Replace the vectors of 1% of the rows (new values, new `updated`)."
    rows = db.execute(
        "select e.id, length(e.embedding) / 4 from embeddings e join collections c on "
        "c.id = e.collection_id where c.name = ? order by random() limit "
        "(select count(*) / 100 from embeddings e2 join collections c2 on "
        "c2.id = e2.collection_id where c2.name = ?)",
        [collection, collection],
    ).fetchall()
    model = db.execute("select model from collections where name = ?", [collection]).fetchone()[0]
    vectors = clustered_vectors(len(rows), rows[0][1], seed=seed)
    write_embeddings(db, collection, [r[0] for r in rows], vectors, model=model)
    return len(rows)


def time_queries(function, queries) -> list[float]:
    timings = []
    for query in queries:
        start = time.perf_counter()
        function(query)
        timings.append(time.perf_counter() - start)
    return timings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--dimensions", type=int, default=384)
    parser.add_argument("--clusters", type=int, default=1000)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument(
        "--llm-queries", type=int, default=3, help="llm brute-force queries (each takes seconds)"
    )
    parser.add_argument("--backends", default="exact,auto,faiss,hnswlib,chroma")
    parser.add_argument(
        "-o",
        "--option",
        nargs=3,
        action="append",
        default=[],
        metavar=("BACKEND", "KEY", "VALUE"),
        help="e.g. -o faiss ef_search 96",
    )
    parser.add_argument("--npz", help="real vectors: shared/data/pypi-minilm-40k.npz")
    parser.add_argument("--db", help="an existing llm embeddings database (copied)")
    parser.add_argument("--collection", help="collection in --db")
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="llm-vector-index-bench-"))
    try:
        db_path = workdir / "embeddings.db"
        if args.db:
            shutil.copy(args.db, db_path)
        db = Database(db_path)
        start = time.perf_counter()
        collection, queries = load_data(args, db)
        rows = db.execute(
            "select count(*) from embeddings e join collections c on c.id = e.collection_id "
            "where c.name = ?",
            [collection],
        ).fetchone()[0]
        print(
            f"{rows} rows in {collection!r} ({time.perf_counter() - start:.1f}s to prepare), "
            f"{len(queries)} queries"
        )

        brute = llm.Collection(collection, db, create=False)
        with threadpool_limits(1):
            llm_times = time_queries(
                lambda q: brute.similar_by_vector(q.tolist(), 10), queries[: args.llm_queries]
            )
        llm_p50 = statistics.median(llm_times)

        options: dict[str, dict] = {}
        for backend, key, value in args.option:
            options.setdefault(backend, {})[key] = value
        results = {}
        exact_ids = None
        names = args.backends.split(",")
        if "exact" in names:  # the ground truth is needed first
            names.remove("exact")
            names.insert(0, "exact")
        for backend in names:
            index = Index.create(
                f"bench-{backend}", [collection], db, backend=backend, options=options.get(backend)
            )
            full = index.build()
            with threadpool_limits(1):
                search_times = time_queries(
                    lambda q, index=index: index.backend().search(q[None], 10), queries
                )
                query_times = time_queries(
                    lambda q, index=index: index.similar_by_vector(q, 10), queries
                )
                ids = [[e.id for e in index.similar_by_vector(q, 10)] for q in queries]
            if backend == "exact":
                exact_ids = ids
            recall = (
                np.mean([len(set(a) & set(b)) / 10 for a, b in zip(ids, exact_ids)])
                if exact_ids
                else float("nan")
            )
            first = (
                np.mean([a[:1] == b[:1] for a, b in zip(ids, exact_ids)])
                if exact_ids
                else float("nan")
            )
            tunable = index.backend_class.tunable(index.settings)
            results[backend] = {
                "build": full.seconds,
                "rate": full.rows / full.seconds,
                "search50": percentile(search_times, 50) * 1000,
                "search95": percentile(search_times, 95) * 1000,
                "query50": percentile(query_times, 50) * 1000,
                "query95": percentile(query_times, 95) * 1000,
                "recall": recall,
                "first": first,
                "tuned": f"{tunable.option} {index.settings[tunable.option]}" if tunable else "-",
                "tune": full.tuning.seconds if full.tuning else 0.0,
                "disk": sum(p.stat().st_size for p in index.path.rglob("*") if p.is_file()) / 1e6,
                "index": index,
            }
        # incremental: the same 1% change applied once, then every index catches up
        changed = change_one_percent(db, collection, seed=7)
        for result in results.values():
            report = result["index"].build()
            assert report.added == changed and not report.full, report
            result["incremental"] = report.seconds

        print(
            f"\nllm brute force: {llm_p50 * 1000:.0f} ms per query (median of {len(llm_times)})\n"
        )
        header = (
            "backend",
            "tuned",
            "build s",
            "tune s",
            "vec/s",
            "incr 1% s",
            "incr/full",
            "search p50 ms",
            "search p95 ms",
            "query p50 ms",
            "query p95 ms",
            "recall@10",
            "recall@1",
            "disk MB",
            "x faster than llm",
        )
        print(" | ".join(header))
        print(" | ".join("---" for _ in header))
        for backend, r in results.items():
            print(
                " | ".join(
                    [
                        backend,
                        r["tuned"],
                        f"{r['build']:.2f}",
                        f"{r['tune']:.1f}",
                        f"{r['rate']:,.0f}",
                        f"{r['incremental']:.2f}",
                        f"{r['incremental'] / r['build']:.0%}",
                        f"{r['search50']:.3f}",
                        f"{r['search95']:.3f}",
                        f"{r['query50']:.3f}",
                        f"{r['query95']:.3f}",
                        f"{r['recall']:.3f}",
                        f"{r['first']:.3f}",
                        f"{r['disk']:.0f}",
                        f"{llm_p50 * 1000 / r['query50']:,.0f}x",
                    ]
                )
            )
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
