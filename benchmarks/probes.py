"""What tuning measures against what users get: recall@10 of held-out queries,
stored rows and probes, at every value of an index's tunable setting.

    python benchmarks/probes.py --npz ../shared/data/pypi-minilm-40k.npz
    python benchmarks/probes.py --gaussian 6000 --dimensions 32

Held-out queries are new text (the npz's ``query_vectors``, or fresh gaussian
vectors), never stored. Stored rows are excluded from their own truth and
results. Probes are what tuning uses (``heldout.probe_queries``). The three
go through the same index and the same measurement (``evaluate.measure``).
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path

import numpy as np
from sqlite_utils import Database
from threadpoolctl import threadpool_limits

from llm_vector_index import Index, evaluate, heldout
from llm_vector_index.testing import write_embeddings

BACKENDS = {  # what `auto` builds above its exact limit, and the plain graphs
    "faiss HNSW32,SQ8 rerank 2": ("faiss", {"factory": "HNSW32,SQ8", "rerank": 2}),
    "faiss HNSW32": ("faiss", {}),
    "hnswlib M16": ("hnswlib", {}),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--npz", help="real vectors: shared/data/pypi-minilm-40k.npz")
    parser.add_argument("--gaussian", type=int, help="this many unclustered gaussian rows")
    parser.add_argument("--dimensions", type=int, default=32)
    parser.add_argument("--queries", type=int, default=500)
    args = parser.parse_args()
    if args.npz:
        data = np.load(args.npz)
        vectors = data["vectors"].astype("<f4")
        held = data["query_vectors"].astype("<f4")[: args.queries]
    else:
        vectors = (
            np.random.default_rng(1).standard_normal((args.gaussian, args.dimensions)).astype("<f4")
        )
        held = (
            np.random.default_rng(2).standard_normal((args.queries, args.dimensions)).astype("<f4")
        )
    workdir = Path(tempfile.mkdtemp(prefix="llm-vector-index-probes-"))
    try:
        db = Database(workdir / "embeddings.db")
        write_embeddings(db, "rows", [f"r{i}" for i in range(len(vectors))], vectors)
        write_embeddings(db, "held", [f"h{i}" for i in range(len(held))], held)
        for number, (label, (backend, options)) in enumerate(BACKENDS.items()):
            index = Index.create(
                f"ix{number}",
                ["rows"],
                db,
                backend=backend,
                options={**options, **untuned(backend)},
            )
            index.build()
            keys, queries = evaluate._collection_sample(index, "held", args.queries, 0)
            sets = {
                "held-out": heldout.with_truth(index, keys, queries, 10),
                "stored rows": heldout.held_out_queries(index, args.queries, 10),
                "probes": heldout.probe_queries(index, args.queries, 10),
            }
            tunable = index.backend_class.tunable(index.settings)
            backend_instance = index.holder.private()
            print(f"\n{label}, {len(vectors)} rows: recall@10\n")
            print(" | ".join([tunable.option, *sets]))
            print(" | ".join(["---"] * (len(sets) + 1)))
            with threadpool_limits(1):
                for value in tunable.values[:9]:
                    backend_instance.set_search_option(tunable.option, value)
                    recalls = [
                        evaluate.measure(index, backend_instance, held_out).recall
                        for held_out in sets.values()
                    ]
                    print(" | ".join([str(value), *(f"{r:.3f}" for r in recalls)]))
            backend_instance.close()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def untuned(backend: str) -> dict:
    "A value for the tunable option: the first build then leaves it as it is."
    return {"ef": 64} if backend == "hnswlib" else {"ef_search": 64}


if __name__ == "__main__":
    main()
