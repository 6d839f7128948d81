"""The million-row run (issue 9): each target as a row, side by side in one run.

    python benchmarks/scale.py --rows 1000000
    python benchmarks/scale.py --npz ../shared/data/pypi-minilm-40k.npz
    python benchmarks/scale.py --rows 20000 --backends auto,hnswlib   # a quick look

For each backend: builds as whole processes (`llm index build`: full, after 1%
of the rows changed, with nothing changed) with their peak RSS; the files'
size; the CLI as a whole process (`llm index similar NAME ID`, warm cache,
against `llm --version`); in-process query latency (one thread) through the
raw library on the same index, through a held ``Index``, and through llm's
own ``collection.similar_by_vector(index=...)``; the cost of the first query
after a write to another collection; recall@10 against an exact scan on
held-out vectors that are not stored. llm's brute force is sampled
(``--llm-queries``, a minute each at 1M). Medians throughout: the machine is
shared and noisy.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import llm
import numpy as np
from sqlite_utils import Database
from threadpoolctl import threadpool_limits

from llm_vector_index import Index, close_indexes
from llm_vector_index.testing import clustered_vectors, write_embeddings

LLM = str(Path(sys.executable).with_name("llm"))


def whole_process(*args: str) -> tuple[float, float]:
    "Seconds and peak RSS (MB) of one command, run as its own process."
    script = (
        "import resource, subprocess, sys, time\n"
        "t = time.perf_counter()\n"
        "done = subprocess.run(sys.argv[1:], capture_output=True, text=True)\n"
        "if done.returncode:\n"
        "    sys.exit(done.stderr[-2000:])\n"
        "print(time.perf_counter() - t, "
        "resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024)\n"
    )
    done = subprocess.run([sys.executable, "-c", script, *args], capture_output=True, text=True)
    if done.returncode:  # say what the command said, not only that it failed
        raise SystemExit(f"{' '.join(args)} failed:\n{done.stderr}")
    output = done.stdout.split()
    return float(output[0]), float(output[1])


def median_of(runs: int, *args: str) -> float:
    return statistics.median(whole_process(*args)[0] for _ in range(runs))


def cold_cache(*args: str) -> float | None:
    """Seconds of one command right after the page cache was dropped (needs
    root; None otherwise): what the first query after a reboot costs."""
    try:
        os.sync()
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
    except OSError:
        return None
    return whole_process(*args)[0]


def timings(function, queries) -> tuple[float, float]:
    "p50 and p95 in ms, one query at a time, after one warm-up pass."
    for query in queries[:20]:
        function(query)
    times = []
    for query in queries:
        start = time.perf_counter()
        function(query)
        times.append((time.perf_counter() - start) * 1000)
    return float(np.percentile(times, 50)), float(np.percentile(times, 95))


def interleaved_timings(runs: dict, queries, rounds: int = 3) -> dict[str, tuple[float, float]]:
    """p50 and p95 ms of each run over the queries, interleaved (each query
    through every run in turn, ``rounds`` times) so that the machine's drift
    falls on all of them alike. The runs take turns going first: the second
    to search for a query finds the first one's pages and graph nodes in the
    CPU's caches (measured at 100k: our share of a query read 0.48 ms with the
    plugin always first, 0.25 ms with it always second, 0.33 ms taking turns)."""
    timings = {label: [] for label in runs}
    order = list(runs.items())
    for _ in range(rounds):
        for turn, query_args in enumerate(queries):
            first = turn % len(order)
            for label, run in order[first:] + order[:first]:
                started = time.perf_counter()
                run(*query_args)
                timings[label].append((time.perf_counter() - started) * 1000)
    result = {}
    for label, values in timings.items():
        values.sort()
        result[label] = (statistics.median(values), values[int(len(values) * 0.95)])
    return result


def raw_batch(backend):
    "The wrapped library's own batch search on the same index (its threads), or None."
    name = type(backend).__name__
    if name == "FaissIndex":
        params = backend._search_parameters(None)
        wanted = backend.candidates(10)
        return lambda m: backend._index.search(
            m / np.linalg.norm(m, axis=1, keepdims=True), wanted, params=params
        )
    if name == "HnswlibIndex":
        return lambda m: backend._graph.knn_query(m, 10, num_threads=-1)
    return None


def batch_ms(function, matrix, runs: int = 5) -> float:
    "Median ms a query of one call for the whole matrix, after a warm-up call."
    function(matrix)
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        function(matrix)
        times.append((time.perf_counter() - started) * 1000 / len(matrix))
    return float(np.median(times))


def queries_per_second(db_path, name: str, queries: np.ndarray, threads: int) -> float:
    """Queries a second with ``threads`` threads each asking every query in
    turn, each thread with its own connection and ``Index`` (the open index is
    shared, as in a web app), one library thread each."""
    ready = threading.Barrier(threads + 1)

    def work():
        index = Index(name, Database(db_path))
        index.similar_by_vector(queries[0], 10)  # opened before the clock starts
        ready.wait()
        for q in queries:
            index.similar_by_vector(q, 10)

    with threadpool_limits(1):
        pool = [threading.Thread(target=work) for _ in range(threads)]
        for thread in pool:
            thread.start()
        ready.wait()
        started = time.perf_counter()
        for thread in pool:
            thread.join()
    return threads * len(queries) / (time.perf_counter() - started)


def throughput(index, db_path, queries: np.ndarray) -> dict:
    """The batch (ms a query, all ``queries`` in one call, every core) of the
    plugin and of the library itself, and queries a second from 1 and 2
    threads (medians of 3)."""
    raw_many = raw_batch(index.backend())
    return {
        "batch": batch_ms(lambda m: index.similar_by_vectors(m, 10), queries),
        "raw_batch": batch_ms(raw_many, queries) if raw_many else float("nan"),
        "qps": [
            statistics.median(queries_per_second(db_path, index.name, queries, n) for _ in range(3))
            for n in (1, 2)
        ],
    }


def raw_search(backend):
    "The wrapped library's own search on the same index, or None."
    name = type(backend).__name__
    if name == "FaissIndex":
        params = backend._search_parameters(None)
        normalised = lambda q: q / np.linalg.norm(q)  # noqa: E731
        # as many as the plugin asks for (rerank): the library's share of a query
        wanted = backend.candidates(10)
        return lambda q: backend._index.search(normalised(q)[None], wanted, params=params)
    if name == "HnswlibIndex":
        return lambda q: backend._graph.knn_query(q[None], 10, num_threads=1)
    if name == "PgvectorIndex":
        dsn = os.environ[backend.settings["dsn_env"]]
        table = backend.describe()["pgvector_table"]
        return raw_pgvector_search(dsn, table, backend.settings["ef_search"])
    if name == "ExactIndex":
        segments = [vectors for _, vectors in backend._all_segments()]
        return lambda q: np.argpartition(-np.concatenate([v @ q for v in segments]), 10)[:10]
    return None


def raw_pgvector_search(dsn: str, table: str, ef_search: int):
    "The plugin's query as raw SQL, through psycopg directly (autocommit, prepared)."
    import psycopg

    from llm_vector_index import pg_client

    connection = psycopg.connect(dsn, autocommit=True, prepare_threshold=0)
    pg_client.register_dumpers(connection, pg_client.vector_types(connection))
    connection.execute("select set_config('hnsw.ef_search', %s, false)", [str(ef_search)])
    statement = (
        f"select label, 1 - (embedding <=> %(q)s) from {table} "
        "order by embedding <=> %(q)s limit 10"
    )

    def search(query):
        vector = pg_client.parameter(query / np.linalg.norm(query), False)
        return connection.execute(statement, {"q": vector}).fetchall()

    return search


def server_bytes(backend) -> int:
    "What an index keeps on a Postgres server: its table and the table's indexes."
    if type(backend).__name__ != "PgvectorIndex":
        return 0
    import psycopg

    with psycopg.connect(os.environ[backend.settings["dsn_env"]]) as connection:
        table = backend.describe()["pgvector_table"]
        return connection.execute("select pg_total_relation_size(%s)", [table]).fetchone()[0]


# What ``llm index create`` needs besides the backend, and the server it
# names (started by ``servers_for``).
CREATE_OPTIONS = {"pgvector": ("-o", "dsn_env", "PGVECTOR_DSN")}


@contextlib.contextmanager
def servers_for(backends: list[str], workdir: Path):
    """A Postgres on 127.0.0.1 in $PGVECTOR_DSN while pgvector is measured,
    with an llm user directory of the run's own (where ``llm index create``
    records its approval of that variable)."""
    if "pgvector" not in backends:
        yield
        return
    from llm_vector_index.testing_postgres import postgres_server

    saved = {name: os.environ.get(name) for name in ("PGVECTOR_DSN", "LLM_USER_PATH")}
    with postgres_server(workdir / "postgres") as server:
        os.environ["PGVECTOR_DSN"] = server.dsn
        os.environ["LLM_USER_PATH"] = str(workdir / "llm-user")
        try:
            yield
        finally:
            for name, value in saved.items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value


def exact_truth(vectors: np.ndarray, queries: np.ndarray, k: int = 10) -> np.ndarray:
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    q = queries / np.linalg.norm(queries, axis=1, keepdims=True)
    best = np.full((len(q), 0), -np.inf), np.empty((len(q), 0), dtype=np.int64)
    for start in range(0, len(unit), 100_000):
        scores = q @ unit[start : start + 100_000].T
        merged = np.concatenate([best[0], scores], axis=1)
        rows = np.concatenate(
            [best[1], np.broadcast_to(np.arange(start, start + scores.shape[1]), scores.shape)],
            axis=1,
        )
        top = np.argpartition(-merged, k, axis=1)[:, :k]
        best = np.take_along_axis(merged, top, axis=1), np.take_along_axis(rows, top, axis=1)
    return best[1]


def data_arguments(parser, npz: Path, rows: int = 40_000) -> None:
    "The data options of the benchmarks that run on the real 40k or on synthetic vectors."
    parser.add_argument("--npz", default=str(npz), help="real vectors ('' for synthetic)")
    parser.add_argument("--rows", type=int, default=rows)
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--dimensions", type=int, default=384)
    parser.add_argument("--clusters", type=int, default=100)


def load(args) -> tuple[np.ndarray, np.ndarray, list[str]]:
    if args.npz:
        data = np.load(args.npz)
        vectors = data["vectors"].astype("<f4")[: args.rows]
        return (
            vectors,
            data["query_vectors"].astype("<f4")[: args.queries],
            [str(text) for text in data["texts"][: len(vectors)]],
        )
    everything = clustered_vectors(
        args.rows + args.queries, args.dimensions, clusters=args.clusters, seed=1
    )
    return everything[: args.rows], everything[args.rows :], None


def prepare(
    db_path: Path, vectors: np.ndarray, queries: np.ndarray, texts: list[str] | None
) -> tuple[Database, list[str], np.ndarray]:
    "llm's tables filled as llm fills them; ids, and the exact top 10 of each query."
    ids = [f"row{i:07d}" for i in range(len(vectors))]
    db = Database(db_path)
    write_embeddings(db, "bench", ids, vectors, model="bench-vectors", contents=texts, updated=1)
    write_embeddings(db, "other", ["o0"], vectors[:1], model="bench-vectors", updated=1)
    write_embeddings(
        db,
        "held",
        [f"q{i}" for i in range(len(queries))],
        queries,
        model="bench-vectors",
        updated=1,
    )
    return db, ids, exact_truth(vectors, queries)


def brute_force_ms(db: Database, queries: np.ndarray, count: int) -> float:
    "llm's own scan, median ms of ``count`` queries, one thread."
    collection = llm.Collection("bench", db, create=False)
    brute = []
    with threadpool_limits(1):
        for query in queries[:count]:
            start = time.perf_counter()
            collection.similar_by_vector(query.tolist(), 10, index=False)
            brute.append((time.perf_counter() - start) * 1000)
    return statistics.median(brute)


def cold_start(name: str, row_id: str) -> tuple[float | None, float | None]:
    """``llm index similar NAME ROW_ID`` and ``llm --version`` each right
    after the page cache was dropped (None, None unless root). Last: it
    slows every figure after it."""
    return (
        cold_cache(LLM, "index", "similar", name, row_id, "-n", "10"),
        cold_cache(LLM, "--version"),
    )


def measure_backend(
    db: Database,
    backend: str,
    ids: list[str],
    vectors: np.ndarray,
    queries: np.ndarray,
    truth: np.ndarray,
    texts: list[str] | None = None,
    *,
    cold: bool = True,
) -> dict:
    "Every figure of one backend on the prepared database (see the module's doc)."
    name = f"scale-{backend}"
    collection = llm.Collection("bench", db, create=False)
    subprocess.run(
        [LLM, "index", "create", name, "bench", "-b", backend, *CREATE_OPTIONS.get(backend, ())],
        check=True,
        capture_output=True,
    )
    full_s, full_rss = whole_process(LLM, "index", "build", name)
    noop_s, _ = whole_process(LLM, "index", "build", name)
    index = Index(name, db)
    disk = (
        sum(p.stat().st_size for p in index.path.rglob("*") if p.is_file())
        + server_bytes(index.backend())
    ) / 1e6
    cli_s = median_of(3, LLM, "index", "similar", name, ids[7], "-n", "10")
    raw = raw_search(index.backend())
    runs = {"held": lambda q: index.similar_by_vector(q, 10)}
    if raw is not None:
        runs["raw"] = raw
    with threadpool_limits(1):
        for query in queries[:20]:  # warm-up
            for run in runs.values():
                run(query)
        # interleaved: our share (held - raw) is measured side by side
        timed = interleaved_timings(runs, [(q,) for q in queries], rounds=1)
        held_ms, raw_ms = timed["held"], timed.get("raw", (float("nan"),) * 2)
        coll_ms = timings(lambda q: collection.similar_by_vector(q, 10, index=name), queries[:50])
        found = [[int(e.id[3:]) for e in index.similar_by_vector(q, 10)] for q in queries]
    recall = float(np.mean([len(set(f) & set(t.tolist())) / 10 for f, t in zip(found, truth)]))
    rates = throughput(index, db.execute("pragma database_list").fetchone()[2], queries)
    write_embeddings(db, "other", ["o1"], vectors[1:2], model="bench-vectors")
    start = time.perf_counter()
    index.similar_by_vector(queries[0], 10)
    other_write_ms = (time.perf_counter() - start) * 1000
    changed = ids[::100]
    write_embeddings(
        db,
        "bench",
        changed,
        clustered_vectors(len(changed), vectors.shape[1], seed=9),
        model="bench-vectors",
    )
    incr_s, _ = whole_process(LLM, "index", "build", name)
    # Put the changed rows back: the next backend's recall is measured
    # against the truth computed from the original rows.
    positions = list(range(0, len(ids), 100))
    contents = [texts[i] for i in positions] if texts else None
    write_embeddings(
        db, "bench", changed, vectors[positions], model="bench-vectors", contents=contents
    )
    # Last: dropping the page cache would slow every figure after it.
    cli_cold_s, version_cold_s = cold_start(name, ids[7]) if cold else (None, None)
    index.close()
    close_indexes()
    index = Index(name, db)
    return {
        "name": name,
        "kind": index.record.options.get("kind", backend),
        "setting": {
            k: v
            for k, v in index.record.options.items()
            if k in ("ef_search", "ef", "nprobe", "factory", "M", "rerank")
        },
        "full_s": full_s,
        "full_rss": full_rss,
        "noop_s": noop_s,
        "incr_s": incr_s,
        "disk": disk,
        "cli_s": cli_s,
        "cli_cold_s": cli_cold_s,
        "version_cold_s": version_cold_s,
        "raw": raw_ms,
        "held": held_ms,
        "coll": coll_ms,
        "recall": recall,
        "other_write_ms": other_write_ms,
        **rates,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--dimensions", type=int, default=384)
    parser.add_argument("--clusters", type=int, default=2000)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--llm-queries", type=int, default=3)
    parser.add_argument("--backends", default="auto,hnswlib")
    parser.add_argument("--npz", help="real vectors: shared/data/pypi-minilm-40k.npz")
    parser.add_argument("--keep", help="keep the database in this folder")
    args = parser.parse_args()
    workdir = Path(args.keep or tempfile.mkdtemp(prefix="llm-vector-index-scale-"))
    workdir.mkdir(parents=True, exist_ok=True)
    db_path = workdir / "embeddings.db"
    os.environ["LLM_EMBEDDINGS_DB"] = str(db_path)
    try:
        start = time.perf_counter()
        vectors, queries, texts = load(args)
        db, ids, truth = prepare(db_path, vectors, queries, texts)
        print(
            f"{len(vectors):,} rows x {vectors.shape[1]} ({'real' if args.npz else 'synthetic'}"
            f"), {len(queries)} held-out queries; prepared in {time.perf_counter() - start:.0f}s"
        )
        llm_ms = brute_force_ms(db, queries, args.llm_queries)
        version_s = median_of(3, LLM, "--version")
        with servers_for(args.backends.split(","), workdir):
            rows = {
                backend: measure_backend(db, backend, ids, vectors, queries, truth, texts)
                for backend in args.backends.split(",")
            }
        print(
            f"\nllm --version: {version_s:.2f} s; llm brute force: {llm_ms:,.0f} ms a "
            f"query (median of {args.llm_queries})\n"
        )
        header = ["", *rows]
        lines = [
            ("kind, settings", lambda r: f"{r['kind']} {r['setting']}"),
            ("full build s (whole process)", lambda r: f"{r['full_s']:.1f}"),
            ("full build peak RSS MB", lambda r: f"{r['full_rss']:,.0f}"),
            ("index files MB", lambda r: f"{r['disk']:,.0f}"),
            ("build, nothing changed s", lambda r: f"{r['noop_s']:.2f}"),
            (
                "build after 1% changed s",
                lambda r: f"{r['incr_s']:.1f} ({r['incr_s'] / r['full_s']:.0%} of full)",
            ),
            ("raw library p50 / p95 ms", lambda r: f"{r['raw'][0]:.3f} / {r['raw'][1]:.3f}"),
            (
                "held Index p50 / p95 ms",
                lambda r: f"{r['held'][0]:.3f} / {r['held'][1]:.3f} ({r['held'][0] / r['raw'][0]:.1f}x raw)",
            ),
            (
                "collection.similar_by_vector p50 ms",
                lambda r: f"{r['coll'][0]:.3f} ({llm_ms / r['coll'][0]:,.0f}x faster than llm)",
            ),
            ("first query after a write elsewhere ms", lambda r: f"{r['other_write_ms']:.1f}"),
            (
                "llm index similar NAME ID, whole process s",
                lambda r: f"{r['cli_s']:.2f} (llm --version + {r['cli_s'] - version_s:.2f})",
            ),
            (
                "the same, cold page cache s",
                lambda r: (
                    "n/a (not root)"
                    if r["cli_cold_s"] is None
                    else f"{r['cli_cold_s']:.2f} (llm --version cold: {r['version_cold_s']:.2f})"
                ),
            ),
            ("recall@10, held-out vectors", lambda r: f"{r['recall']:.3f}"),
        ]
        print(" | ".join(header))
        print(" | ".join("---" for _ in header))
        for label, cell in lines:
            print(" | ".join([label, *(cell(r) for r in rows.values())]))
    finally:
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
