"""Relevance of the three query modes on real labelled text, through the
plugin: nDCG@10, MRR@10, recall@10/100 and p50 latency of vector, keyword
and hybrid queries, and hybrid at every fusion weight for RRF and convex
fusion (benchmarks/relevance_sets.py builds the sets: the standard library's
docstrings, section 3 of the manual, and the docstrings asked for by name).

    python benchmarks/hybrid.py                 # every set, the sweep, the choice
    python benchmarks/hybrid.py --sets stdlib --no-speed
    python benchmarks/hybrid.py --speed-only --rows 100000

Each set is embedded once with the real offline MiniLM model
(examples/llm-minilm-onnx) into bench-data/relevance/SET.db and reused. The
dense side is an exact index (so the numbers are the model's and the
fusion's, not an approximate index's). The default fusion is the setting
with the best nDCG@10 averaged over the sets, and is printed last with each
set's gain over its better single mode.

Then the cost, at ``--rows`` (100k) real PyPI summaries with their MiniLM
vectors (../shared/data: 40k, plus summaries made by joining two, with the
mean of their vectors): a build with and without keywords (default index,
auto), the keyword index's disk against the text it holds, and p50/p95 of
vector, keyword and hybrid queries through the plugin (each query's vector
given, so no model runs in the timing; the three interleaved, query by
query, three rounds), then keyword queries on their own, without and with a
filter, one thread, medians.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import llm
import numpy as np
from sqlite_utils import Database

sys.path.insert(0, str(Path(__file__).parent))
import scale
from relevance_sets import CACHE, sets

from llm_vector_index import Index, close_indexes, hybrid, query, reuse
from llm_vector_index.relevance import Judged, judge, judgement_table
from llm_vector_index.testing import write_embeddings

SHARED = Path(__file__).parents[2] / "shared" / "data" / "pypi-minilm-40k.npz"

MODEL = "minilm"


def embedded(labelled) -> Database:
    """The set's documents as an llm collection (named as the set, or the set
    whose documents it shares), embedded once and reused."""
    CACHE.mkdir(parents=True, exist_ok=True)
    name = labelled.corpus or labelled.name
    db = Database(CACHE / f"{name}.db")
    collection = llm.Collection(name, db, model_id=MODEL)
    if collection.count() != len(labelled.documents):
        print(
            f"{name}: embedding {len(labelled.documents):,} documents " f"with {MODEL}...",
            file=sys.stderr,
            flush=True,
        )
        collection.embed_multi(
            ((d["id"], d["content"]) for d in labelled.documents), store=True, batch_size=64
        )
    return db


def measure(labelled, sweep: bool):
    db = embedded(labelled)
    os.environ["LLM_EMBEDDINGS_DB"] = str(db.conn.execute("pragma database_list").fetchone()[2])
    if Index.exists(db, "relevance"):
        Index.drop(db, "relevance")
    index = Index.create(
        "relevance", [labelled.corpus or labelled.name], db, backend="exact", keywords=True
    )
    index.build()
    judged = [Judged(q["query"], dict.fromkeys(q["relevant"], 1.0)) for q in labelled.queries]
    with index:
        return judge(index, judged, sweep=sweep)


def speed_corpus(rows: int):
    "(texts, vectors, query texts, query vectors): real summaries, joined past 40k."
    data = np.load(SHARED)
    texts = [str(text) for text in data["texts"]]
    vectors = data["vectors"].astype(np.float32)
    rng = np.random.default_rng(0)
    extra = rows - len(texts)
    if extra > 0:
        pairs = rng.integers(len(texts), size=(extra, 2))
        texts += [f"{texts[a]} {texts[b]}" for a, b in pairs]
        joined = vectors[pairs[:, 0]] + vectors[pairs[:, 1]]
        vectors = np.vstack([vectors, joined / np.linalg.norm(joined, axis=1, keepdims=True)])
    return (
        texts[:rows],
        vectors[:rows],
        [str(t) for t in data["query_texts"]],
        data["query_vectors"].astype(np.float32),
    )


def raw_tantivy(index, texts):
    """tantivy's own search, as the plugin asks it (the query's terms OR-ed,
    the 10 best and 32 more for ties), on the index's keyword files: the
    plugin's share of a keyword query is the difference. The terms are
    found beforehand: only the search is timed."""
    import tantivy

    keyword_index = index.holder.keywords()
    opened = tantivy.Index.open(str(keyword_index.folder))
    searcher, schema = opened.searcher(), opened.schema
    queries = {
        text: tantivy.Query.boolean_query(
            [
                (tantivy.Occur.Should, tantivy.Query.term_query(schema, field, term))
                for field, terms in keyword_index.terms(text).items()
                for term in terms
            ]
        )
        for text in texts
    }
    return lambda text, _: searcher.search(queries[text], 42, count=False).hits


def speed(rows: int) -> None:
    texts, vectors, query_texts, query_vectors = speed_corpus(rows)
    with tempfile.TemporaryDirectory() as work:
        db = Database(Path(work) / "speed.db")
        ids = [f"p{i:06d}" for i in range(rows)]
        write_embeddings(
            db,
            "pypi",
            ids,
            vectors,
            contents=texts,
            updated=1000,
            # for --where: g holds 10% of the rows (p00...), h 1% (p000...)
            metadatas=[{"g": id[:3], "h": id[:4]} for id in ids],
        )
        builds = {}
        for name, keywords in (("plain", False), ("keywords", True)):
            index = Index.create(name, ["pypi"], db, keywords=keywords)
            started = time.perf_counter()
            report = index.build()
            builds[name] = (time.perf_counter() - started, report)
        text_bytes = sum(len(text.encode()) for text in texts)
        keyword_folder = Path(work) / "speed.db.vector-indexes" / "keywords" / "keywords"
        keyword_bytes = sum(p.stat().st_size for p in keyword_folder.rglob("*") if p.is_file())
        print(f"\n### Cost at {rows:,} rows (auto, {builds['keywords'][1].rows:,} rows)\n")
        plain_s, keywords_s = builds["plain"][0], builds["keywords"][0]
        print(
            f"build without keywords {plain_s:.1f} s, with keywords {keywords_s:.1f} s "
            f"({keywords_s / plain_s:.2f}x; both tuned); keyword index {keyword_bytes / 1e6:.1f} MB "
            f"for {text_bytes / 1e6:.1f} MB of text ({keyword_bytes / text_bytes:.2f}x)\n"
        )
        index = Index("keywords", db)
        pairs = list(zip(query_texts, query_vectors))
        for text, vector in pairs[:20]:  # warm: files opened, pages read
            hybrid.answer(index, text, 10, "hybrid", lambda vector=vector: vector)
        print("| query (10 results) | p50 ms | p95 ms |")
        print("|---|---|---|")
        measured = scale.interleaved_timings(
            {
                "vector": lambda t, v: query.search(index, v, 10),
                "keyword": lambda t, v: hybrid.answer(index, t, 10, "keyword", lambda: v),
                "hybrid": lambda t, v: hybrid.answer(index, t, 10, "hybrid", lambda: v),
            },
            pairs,
        )
        for label, (p50, p95) in measured.items():
            print(f"| {label} | {p50:.2f} | {p95:.2f} |", flush=True)
        print(
            f"\nhybrid p50 against vector + keyword p50: "
            f"{measured['hybrid'][0] - measured['vector'][0] - measured['keyword'][0]:+.2f} ms"
        )
        # Keyword queries on their own, as a keyword-only service runs them,
        # beside tantivy's own search of the same terms (interleaved: the
        # difference is the plugin's share), then filtered (ids are
        # p000000...: a prefix of p00 allows 10% of rows, p000 1%).
        print("\n| keyword query on its own (10 results) | p50 ms | p95 ms |")
        print("|---|---|---|")
        engine = raw_tantivy(index, query_texts)
        alone = scale.interleaved_timings(
            {
                "no filter": lambda t, v: hybrid.answer(index, t, 10, "keyword", None),
                "tantivy's own search of the same terms (no rows read)": engine,
            },
            pairs,
        )
        for label, prefix in (
            ("--prefix p00 (10% of rows)", "p00"),
            ("--prefix p000 (1%)", "p000"),
        ):
            # asked again and again (what it allows is reused), and each
            # query as the first with its filter
            alone.update(
                scale.interleaved_timings(
                    {
                        label: lambda t, v, prefix=prefix: hybrid.answer(
                            index, t, 10, "keyword", None, prefix=prefix
                        )
                    },
                    pairs,
                )
            )
            alone.update(
                scale.interleaved_timings(
                    {
                        f"{label}, first query with it": lambda t, v, prefix=prefix: (
                            reuse.forget(db),
                            hybrid.answer(index, t, 10, "keyword", None, prefix=prefix),
                        )
                    },
                    pairs,
                )
            )
        for label, (p50, p95) in alone.items():
            print(f"| {label} | {p50:.2f} | {p95:.2f} |", flush=True)
        # The other modes under the same filter, asked again and each query
        # the first with it (where the filter's labels are read).
        print("\n| query under `--prefix p00` (10% of rows, 10 results) | p50 ms | p95 ms |")
        print("|---|---|---|")
        for mode in ("vector", "hybrid"):

            def ask(t, v, mode=mode):
                if mode == "vector":
                    return query.search(index, v, 10, prefix="p00")
                return hybrid.answer(index, t, 10, mode, lambda: v, prefix="p00")

            filtered = scale.interleaved_timings({f"{mode}, asked again": ask}, pairs)
            filtered.update(
                scale.interleaved_timings(
                    {
                        f"{mode}, first query with it": lambda t, v, ask=ask: (
                            reuse.forget(db),
                            ask(t, v),
                        )
                    },
                    pairs,
                )
            )
            for label, (p50, p95) in filtered.items():
                print(f"| {label} | {p50:.2f} | {p95:.2f} |", flush=True)
        where_speed(index, db, pairs)
        share = (
            alone["no filter"][0]
            - alone["tantivy's own search of the same terms (no rows read)"][0]
        )
        print(f"\nthe plugin's share of a keyword query: {share:.2f} ms p50")
        index.close()
        close_indexes()


def where_speed(index, db, pairs) -> None:
    """Queries under a metadata filter, each mode asked again and as the
    first query with its filter, without an index on the key (every row's
    JSON is read: fewer queries, once each) and with one (llm index metadata)."""
    print("\n| query under `--where` (10 results) | p50 ms | p95 ms |")
    print("|---|---|---|")
    for indexed in (False, True):
        if indexed:
            started = time.perf_counter()
            index.index_metadata(["g", "h"])
            print(f"| (indexing both keys: {time.perf_counter() - started:.2f} s) | | |")
        chosen, rounds = (pairs, 3) if indexed else (pairs[:60], 1)
        for label, where in (("g p00 (10%)", {"g": "p00"}), ("h p000 (1%)", {"h": "p000"})):
            for mode in ("keyword", "vector", "hybrid"):

                def ask(t, v, mode=mode, where=where):
                    if mode == "vector":
                        return query.search(index, v, 10, where=where)
                    return hybrid.answer(index, t, 10, mode, lambda: v, where=where)

                def first(t, v, ask=ask):
                    reuse.forget(db)
                    return ask(t, v)

                # apart: a first query between two others would make them first too
                for run, timed in ((f"{mode}, asked again", ask), (f"{mode}, first query", first)):
                    ((p50, p95),) = scale.interleaved_timings({run: timed}, chosen, rounds).values()
                    state = "indexed" if indexed else "not indexed"
                    print(f"| {label}, {state}: {run} | {p50:.2f} | {p95:.2f} |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sets", default="stdlib,man3,identifiers")
    parser.add_argument("--no-sweep", action="store_true")
    parser.add_argument("--no-speed", action="store_true")
    parser.add_argument("--speed-only", action="store_true")
    parser.add_argument("--rows", type=int, default=100_000)
    args = parser.parse_args()
    if args.speed_only:
        speed(args.rows)
        return
    chosen = [s for s in sets() if s.name in args.sets.split(",")]
    by_set = {}
    for labelled in chosen:
        results = measure(labelled, sweep=not args.no_sweep)
        by_set[labelled.name] = results
        print(
            f"\n### {labelled.name}: {len(labelled.documents):,} documents, "
            f"{len(labelled.queries):,} queries\n"
        )
        print(judgement_table(results), flush=True)
    labels = [r.label for r in next(iter(by_set.values())) if r.mode == "hybrid"]

    def mean_ndcg(label):
        return sum(
            next(r for r in rs if r.label == label).scores["ndcg@10"] for rs in by_set.values()
        ) / len(by_set)

    best = max(labels, key=mean_ndcg)
    print(f"\nBest hybrid setting across sets: {best} (mean nDCG@10 {mean_ndcg(best):.3f})")
    for name, results in by_set.items():
        single = max(r.scores["ndcg@10"] for r in results if r.mode != "hybrid")
        fused = next(r for r in results if r.label == best).scores["ndcg@10"]
        print(
            f"  {name}: {fused:.3f} against the better single mode's {single:.3f} "
            f"({fused - single:+.3f})"
        )
    if not args.no_speed:
        speed(args.rows)


if __name__ == "__main__":
    main()
