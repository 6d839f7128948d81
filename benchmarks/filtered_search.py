"""Where scanning a filtered subset exactly stops beating the backend.

    python benchmarks/filtered_search.py --rows 100000

Rows of group N (N rows each) have ids "gN-..." and metadata {"g": "gN"};
each query filters on one group, by id prefix (a scan of the id index only)
or by metadata (json_extract over every row: that scan dominates), and by
metadata again once the key is indexed ("metadata, indexed": llm index
metadata). "scratch" reads the group's rows from SQLite and scans them with
numpy; "allow-list" asks the backend with the group's labels. Medians in ms, one thread, each
query reading its filter's rows afresh (as the first query with a filter
does: later ones reuse what it read while the database is unchanged).
filters.SCRATCH_LIMIT is chosen from this table.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from sqlite_utils import Database
from threadpoolctl import threadpool_limits

from llm_vector_index import Index, filters, reuse
from llm_vector_index.testing import clustered_vectors, write_embeddings

SIZES = (100, 1_000, 5_000, 10_000, 20_000, 40_000)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=20)
    parser.add_argument("--backends", default="faiss,hnswlib")
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="llm-vector-index-filter-"))
    try:
        db = Database(workdir / "embeddings.db")
        vectors = clustered_vectors(args.rows + args.queries, 384, clusters=1000)
        groups, start = [], 0
        for size in SIZES:
            groups += [f"g{size}"] * size
            start += size
        groups += ["rest"] * (args.rows - start)
        write_embeddings(
            db,
            "bench",
            [f"{group}-{i}" for i, group in enumerate(groups[: args.rows])],
            vectors[: args.rows],
            metadatas=[{"g": group} for group in groups[: args.rows]],
        )
        queries = vectors[args.rows :]
        indexes = []
        for backend in args.backends.split(","):
            index = Index.create(backend, ["bench"], db, backend=backend)
            index.build()
            indexes.append(index)

        def median_ms(index, size, limit, kind):
            filters.SCRATCH_LIMIT = limit
            where = {"g": f"g{size}"} if kind.startswith("metadata") else None
            prefix = f"g{size}-" if kind == "prefix" else None
            timings = []
            for query in queries:
                # each query reads its filter's rows, as the first with a
                # filter does (later ones reuse them: reuse.py)
                vars(index.db).pop(reuse.ATTRIBUTE, None)
                started = time.perf_counter()
                index.similar_by_vector(query, 10, where=where, prefix=prefix)
                timings.append(time.perf_counter() - started)
            return statistics.median(timings) * 1000

        header = ["filter", "rows matching", "scratch ms"] + [
            f"allow-list {i.name} ms" for i in indexes
        ]
        print(" | ".join(header))
        print(" | ".join("---" for _ in header))
        with threadpool_limits(1):
            for kind in ("prefix", "metadata", "metadata, indexed"):
                if kind == "metadata, indexed":  # an SQLite index on the key (llm index metadata)
                    indexes[0].index_metadata(["g"])
                for size in SIZES:
                    if size > args.rows:
                        break
                    scratch = median_ms(indexes[0], size, 10**9, kind)
                    allow = [median_ms(index, size, 0, kind) for index in indexes]
                    print(
                        " | ".join(
                            [kind, f"{size:,}", f"{scratch:.2f}"] + [f"{a:.2f}" for a in allow]
                        )
                    )
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
