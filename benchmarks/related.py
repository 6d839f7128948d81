"""``llm index related --save`` (issue 24): every row's five nearest other
rows through the default index, saved into a table; the first save, a save
after a few rows changed, and one after nothing did; recall@5 of the saved
neighbours against an exact scan, and llm's brute force for the same work.

    python benchmarks/related.py                  # 100,000 rows
    python benchmarks/related.py --rows 20000     # a quick look

The rows are real PyPI summaries with their MiniLM vectors (../shared/data:
40k, and past that summaries made by joining two, with the mean of their
vectors; hybrid.speed_corpus). Recall@5 is judged on ``--sample`` stored
rows against numpy's exact scan of every other row (a stored row's own
neighbours are what related items are: no held-out queries here); the
incremental save is judged against a full save of the same rows.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import llm
import numpy as np
from sqlite_utils import Database

sys.path.insert(0, str(Path(__file__).parent))
import hybrid

from llm_vector_index import Index
from llm_vector_index.testing import write_embeddings

NUMBER = 5


def saved(db: Database, table: str) -> dict[str, list[tuple[str, float]]]:
    lists: dict[str, list[tuple[str, float]]] = {}
    for id, other, score in db.execute(
        f"select id, other_id, score from [{table}] order by id, rank"
    ):
        lists.setdefault(id, []).append((other, score))
    return lists


def exact_neighbours(vectors: np.ndarray, rows: np.ndarray) -> np.ndarray:
    "The NUMBER nearest other rows of each of ``rows`` (positions), by cosine."
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    scores = unit[rows] @ unit.T
    scores[np.arange(len(rows)), rows] = -np.inf
    return np.argsort(-scores, axis=1)[:, :NUMBER]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--sample", type=int, default=2000, help="rows judged for recall")
    parser.add_argument("--changed", type=int, default=100, help="rows changed before a re-save")
    args = parser.parse_args()
    texts, vectors, _, _ = hybrid.speed_corpus(args.rows)
    ids = [f"row{i:07d}" for i in range(args.rows)]
    with tempfile.TemporaryDirectory() as folder:
        db = Database(Path(folder) / "bench.db")
        write_embeddings(db, "bench", ids, vectors, model="bench-vectors", contents=texts)
        started = time.perf_counter()
        index = Index.create("bench-idx", ["bench"], db)
        index.build()
        build_s = time.perf_counter() - started

        first = index.save_related("related", NUMBER)
        again = index.save_related("related", NUMBER)

        # recall@5 of what was saved, on a sample of stored rows
        rng = np.random.default_rng(0)
        sample = rng.choice(args.rows, size=min(args.sample, args.rows), replace=False)
        truth = exact_neighbours(vectors, sample)
        lists = saved(db, "related")
        hits = sum(
            len({ids[j] for j in truth[n]} & {other for other, _ in lists.get(ids[i], [])})
            for n, i in enumerate(sample)
        )
        recall = hits / (len(sample) * NUMBER)
        # saved scores against llm's own cosine for the same pairs
        error = max(
            abs(
                score
                - llm.cosine_similarity(vectors[i].tolist(), vectors[ids.index(other)].tolist())
            )
            for i in sample[:50]
            for other, score in lists[ids[i]][:1]
        )

        # change some rows (new vectors: another row's), then save again
        moved = rng.choice(args.rows, size=args.changed, replace=False)
        donors = rng.choice(args.rows, size=args.changed, replace=False)
        write_embeddings(
            db, "bench", [ids[i] for i in moved], vectors[donors], model="bench-vectors",
            contents=[texts[i] for i in donors], updated=int(time.time()) + 5,
        )  # fmt: skip
        index.build()
        incremental = index.save_related("related", NUMBER)
        after = saved(db, "related")
        full = index.save_related("related-full".replace("-", "_"), NUMBER)
        reference = saved(db, "related_full")
        same = sum(
            len({o for o, _ in after.get(id, [])} & {o for o, _ in reference[id]})
            for id in reference
        ) / sum(len(other) for other in reference.values())

        collection = llm.Collection("bench", db, create=False)
        brute = []
        for i in sample[:3]:
            started = time.perf_counter()
            collection.similar_by_id(ids[i], NUMBER, index=False)
            brute.append(time.perf_counter() - started)
        brute_s = statistics.median(brute)

    print(
        f"\n{args.rows:,} real rows, {NUMBER} neighbours each, default index (built in {build_s:.1f} s)\n"
    )
    print("| save | rows searched | seconds | rows/s |")
    print("|---|---|---|---|")
    for label, report in (
        ("first (full)", first),
        ("nothing changed", again),
        (f"{args.changed} rows changed (incremental)", incremental),
        ("the same rows, full", full),
    ):
        rate = report.rows / report.seconds if report.rows else 0
        print(f"| {label} | {report.rows:,} | {report.seconds:.2f} | {rate:,.0f} |")
    print(
        f"| llm's brute force, similar_by_id row by row | {args.rows:,} | "
        f"{brute_s * args.rows:,.0f} (estimated: {brute_s:.2f} s a row) | {1 / brute_s:.2f} |"
    )
    print(
        f"\nrecall@{NUMBER} of the saved neighbours, {len(sample):,} rows against an exact scan: {recall:.3f}"
    )
    print(f"incremental save against a full save of the same rows: {same:.3f} of neighbours alike")
    print(f"largest |saved score - llm.cosine_similarity|: {error:.2e}")
    print(f"why the incremental save searched what it did: {incremental.reason or 'incremental'}")


if __name__ == "__main__":
    main()
