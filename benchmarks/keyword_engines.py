"""Which keyword engine, and which tokenizer: SQLite FTS5 against tantivy,
judged together by relevance on real labelled text (benchmarks/relevance_sets.py:
nDCG@10, MRR@10) and by speed at 100k documents (p50/p95 ms of a query of
every word of the query OR-ed, the way a keyword index is asked).

    python benchmarks/keyword_engines.py            # every set, then speed at 100k
    python benchmarks/keyword_engines.py --no-speed # the sets alone
    python benchmarks/keyword_engines.py --rows 20000

The 100k speed corpus is the 40k real PyPI summaries of ../shared/data plus
60k made by joining two of them; its queries are the 500 held-out summaries.
The engines here are used directly (no plugin): the plugin's own cost is
measured in benchmarks/hybrid.py.
"""

from __future__ import annotations

import argparse
import re
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from relevance_sets import sets

from llm_vector_index import keywords
from llm_vector_index.relevance import Judged, mean_scores

SHARED = Path(__file__).parents[2] / "shared" / "data" / "pypi-minilm-40k.npz"
DEPTH = 100


class Fts5:
    "SQLite FTS5, BM25, the query's words each quoted (no syntax) and OR-ed."

    def __init__(self, tokenize: str, texts: list[str]) -> None:
        self.label = f"FTS5 {tokenize}"
        self.db = sqlite3.connect(":memory:")
        self.db.execute(f"create virtual table docs using fts5(content, tokenize={tokenize!r})")
        self.db.executemany("insert into docs(rowid, content) values (?, ?)", enumerate(texts))
        self.db.commit()

    def search(self, text: str, k: int) -> list[int]:
        words = re.findall(r"\w+", text)
        if not words:
            return []
        match = " OR ".join('"' + word.replace('"', '""') + '"' for word in words)
        return [
            row[0]
            for row in self.db.execute(
                "select rowid from docs where docs match ? order by rank limit ?", [match, k]
            )
        ]


class Tantivy:
    "The plugin's keyword index (llm_vector_index.keywords) with one tokenizer."

    def __init__(self, tokenizer: str, texts: list[str], folder: Path) -> None:
        self.label = f"tantivy {tokenizer}"
        self.index = keywords.KeywordIndex.create(folder, tokenizer)
        self.index.add(np.arange(len(texts)), texts)
        self.index.commit()

    def search(self, text: str, k: int) -> list[int]:
        return self.index.search(text, k)[1].tolist()


ENGINES = [
    ("fts5", "porter unicode61"),
    ("fts5", "porter unicode61 tokenchars '_'"),
    *[("tantivy", name) for name in keywords.TOKENIZERS],
]


def engines(texts: list[str], folder: Path):
    for kind, setting in ENGINES:
        started = time.perf_counter()
        if kind == "fts5":
            engine = Fts5(setting, texts)
        else:
            folder.mkdir(parents=True, exist_ok=True)
            engine = Tantivy(setting, texts, folder / f"{setting}-{len(texts)}")
        yield engine, time.perf_counter() - started


def quality() -> None:
    print("| engine | set | nDCG@10 | MRR@10 | recall@100 |")
    print("|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as work:
        for labelled in sets():
            ids = [document["id"] for document in labelled.documents]
            texts = [document["content"] for document in labelled.documents]
            judged = [
                Judged(q["query"], dict.fromkeys(q["relevant"], 1.0)) for q in labelled.queries
            ]
            for engine, _ in engines(texts, Path(work) / labelled.name):
                rankings = [[ids[i] for i in engine.search(q.query, DEPTH)] for q in judged]
                score = mean_scores(rankings, judged)
                print(
                    f"| {engine.label} | {labelled.name} | {score['ndcg@10']:.3f} | "
                    f"{score['mrr@10']:.3f} | {score['recall@100']:.3f} |",
                    flush=True,
                )


def speed(rows: int) -> None:
    data = np.load(SHARED)
    base = [str(text) for text in data["texts"]]
    rng = np.random.default_rng(0)
    texts = base[:rows]
    while len(texts) < rows:
        first, second = rng.integers(len(base), size=2)
        texts.append(f"{base[first]} {base[second]}")
    queries = [str(text) for text in data["query_texts"]]
    print(f"\n{rows:,} documents, {len(queries)} queries, top 50, one thread:\n")
    print("| engine | build s | p50 ms | p95 ms |")
    print("|---|---|---|---|")
    with tempfile.TemporaryDirectory() as work:
        for engine, built in engines(texts, Path(work)):
            timings = []
            for query in queries:
                started = time.perf_counter()
                engine.search(query, 50)
                timings.append((time.perf_counter() - started) * 1000)
            timings.sort()
            print(
                f"| {engine.label} | {built:.1f} | {statistics.median(timings):.2f} | "
                f"{timings[int(len(timings) * 0.95)]:.2f} |",
                flush=True,
            )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--no-quality", action="store_true")
    parser.add_argument("--no-speed", action="store_true")
    args = parser.parse_args()
    if not args.no_quality:
        quality()
    if not args.no_speed:
        speed(args.rows)
