"""How faiss HNSW's efConstruction shapes the graph: recall@10 against
ef_search, and the build time, for each efConstruction given.

    python benchmarks/graph_quality.py                                  # 1M, ~6 minutes
    python benchmarks/graph_quality.py --rows 200000 --factory HNSW32 --clusters 400

The vectors are the benchmark record's (clustered 384-d, ``--clusters``
gaussian clusters, held-out queries drawn from the same clusters), added in
the plugin's batches of 2,000 rows as a build adds them; trained types train
on the first 100,000. Each result is re-scored exactly from the float vectors
and the best 10 kept, as the plugin does with ``rerank 2`` (20 candidates).
This is faiss alone: the plugin's own share of a build and a query is in
scale.py and run.py.
"""

from __future__ import annotations

import argparse
import time

import faiss
import numpy as np

from llm_vector_index.base import normalize
from llm_vector_index.testing import clustered_vectors

BATCH = 2000  # rows a build hands the backend at a time
TRAIN = 100_000  # what the faiss backend trains compressed types on


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--clusters", type=int, default=2000)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--factory", default="HNSW32,SQ8")
    parser.add_argument("--ef-construction", default="40,64,80")
    parser.add_argument("--ef-search", default="64,128,256,512")
    args = parser.parse_args()
    everything = normalize(
        clustered_vectors(args.rows + args.queries, 384, clusters=args.clusters, seed=1)
    )
    vectors, queries = everything[: args.rows], everything[args.rows :]
    exact = faiss.IndexFlatIP(vectors.shape[1])
    exact.add(vectors)
    _, truth = exact.search(queries, 10)
    del exact
    widths = [int(value) for value in args.ef_search.split(",")]
    print(
        f"{args.factory}, {args.rows:,} rows in batches of {BATCH:,}, "
        f"{len(queries)} held-out queries, recall@10 re-scored from 20 candidates"
    )
    print("| efConstruction | build s | " + " | ".join(f"ef_search {w}" for w in widths) + " |")
    print("|---|---|" + "---|" * len(widths))
    for construction in [int(value) for value in args.ef_construction.split(",")]:
        index = faiss.index_factory(vectors.shape[1], args.factory, faiss.METRIC_INNER_PRODUCT)
        faiss.downcast_index(index).hnsw.efConstruction = construction
        started = time.perf_counter()
        if not index.is_trained:
            index.train(vectors[:TRAIN])
        for start in range(0, len(vectors), BATCH):
            index.add(vectors[start : start + BATCH])
        build_s = time.perf_counter() - started
        recalls = []
        for width in widths:
            _, candidates = index.search(
                queries, 20, params=faiss.SearchParametersHNSW(efSearch=width)
            )
            recalls.append(_recall(vectors, queries, candidates, truth))
        print(
            f"| {construction} | {build_s:.0f} | "
            + " | ".join(f"{recall:.3f}" for recall in recalls)
            + " |"
        )


def _recall(vectors, queries, candidates, truth) -> float:
    "Share of the true top 10 among the best 10 candidates by exact score."
    hits = []
    for query, found, expected in zip(queries, candidates, truth):
        found = found[found >= 0]
        best = found[np.argsort(-(vectors[found] @ query))[:10]]
        hits.append(len(set(best.tolist()) & set(expected.tolist())) / 10)
    return float(np.mean(hits))


if __name__ == "__main__":
    main()
