"""auto under a memory budget (``-o max_memory``): what it chose, the files it
wrote against its estimate, and recall on held-out queries, beside llm's
brute force.

    python benchmarks/memory_budget.py --npz ../shared/data/pypi-minilm-40k.npz
    python benchmarks/memory_budget.py --rows 100000 --budgets ,60MB,20MB,8MB

Each index is built (and so tuned to recall@10 0.95) with the budget; recall
is measured through ``Index.similar_by_vector`` on the held-out queries
against an exact index of the same rows. Medians, one query thread.
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
from build_and_query import time_queries
from sqlite_utils import Database
from threadpoolctl import threadpool_limits

from llm_vector_index import Index, VectorIndexError
from llm_vector_index.backends import budget
from llm_vector_index.testing import clustered_vectors, write_embeddings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--npz", help="real vectors: shared/data/pypi-minilm-40k.npz")
    parser.add_argument("--rows", type=int, default=100_000, help="synthetic rows without --npz")
    parser.add_argument(
        "--budgets",
        default=",30MB,15MB,4MB,1MB",
        help="comma-separated max_memory values; empty: no budget",
    )
    parser.add_argument("--queries", type=int, default=200)
    args = parser.parse_args()
    if args.npz:
        data = np.load(args.npz)
        vectors = data["vectors"].astype("<f4")
        queries = data["query_vectors"].astype("<f4")[: args.queries]
    else:
        everything = clustered_vectors(args.rows + args.queries, 384, clusters=1000)
        vectors, queries = everything[: args.rows], everything[args.rows :]
    workdir = Path(tempfile.mkdtemp(prefix="llm-vector-index-budget-"))
    try:
        db = Database(workdir / "embeddings.db")
        write_embeddings(db, "rows", [f"r{i}" for i in range(len(vectors))], vectors)
        brute = llm.Collection("rows", db, create=False)
        with threadpool_limits(1):
            llm_ms = (
                statistics.median(
                    time_queries(lambda q: brute.similar_by_vector(q.tolist(), 10), queries[:3])
                )
                * 1000
            )
        exact = Index.create("exact", ["rows"], db, backend="exact")
        exact.build()
        truth = [[e.id for e in exact.similar_by_vector(q, 10)] for q in queries]
        print(
            f"{len(vectors):,} rows x {vectors.shape[1]}, {len(queries)} held-out queries; "
            f"llm brute force {llm_ms:.0f} ms a query\n"
        )
        header = (
            "max_memory",
            "chose",
            "estimate MB",
            "files MB",
            "build s",
            "tuned",
            "recall@10",
            "recall@1",
            "query p50 ms",
            "x faster than llm",
        )
        print(" | ".join(header))
        print(" | ".join("---" for _ in header))
        for number, text in enumerate(args.budgets.split(",")):
            options = {"max_memory": text} if text else {}
            try:
                index = Index.create(f"ix{number}", ["rows"], db, options=options)
            except VectorIndexError as error:
                print(" | ".join([text, f"refused: {error}", *["-"] * (len(header) - 2)]))
                continue
            started = time.perf_counter()
            report = index.build()
            seconds = time.perf_counter() - started
            settings = index.settings
            codes = budget.current(settings, len(vectors), vectors.shape[1])
            with threadpool_limits(1):
                times = time_queries(lambda q, index=index: index.similar_by_vector(q, 10), queries)
            found = [[e.id for e in index.similar_by_vector(q, 10)] for q in queries]
            recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(found, truth)])
            first = np.mean([a[:1] == b[:1] for a, b in zip(found, truth)])
            files = sum(p.stat().st_size for p in index.path.rglob("*") if p.is_file()) / 1e6
            tunable = index.backend_class.tunable(settings)
            p50 = statistics.median(times) * 1000
            print(
                " | ".join(
                    [
                        text or "(none)",
                        codes.name,
                        f"{codes.bytes / 1e6:.1f}",
                        f"{files:.1f}",
                        f"{seconds:.1f}",
                        f"{tunable.option} {settings[tunable.option]}" if tunable else "-",
                        f"{recall:.3f}",
                        f"{first:.3f}",
                        f"{p50:.3f}",
                        f"{llm_ms / p50:,.0f}x",
                    ]
                )
            )
            assert report.rows == len(vectors)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
