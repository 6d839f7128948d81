"""`llm similar` as a user runs it (a whole process), with and without a
default index on the collection.

    python benchmarks/llm_similar.py --rows 100000
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from sqlite_utils import Database

from llm_vector_index import Index
from llm_vector_index.testing import clustered_vectors, write_embeddings


def timed(command, env) -> float:
    started = time.perf_counter()
    subprocess.run(command, env=env, check=True, capture_output=True)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--backend", default="faiss")
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="llm-vector-index-similar-"))
    try:
        db_path = workdir / "embeddings.db"
        db = Database(db_path)
        write_embeddings(
            db,
            "bench",
            [f"r{i}" for i in range(args.rows)],
            clustered_vectors(args.rows, 384, clusters=1000),
        )
        env = {**os.environ, "LLM_USER_PATH": str(workdir / "user")}
        command = [sys.executable, "-m", "llm", "similar", "bench", "r42", "-d", str(db_path)]
        baseline = [
            timed([sys.executable, "-m", "llm", "--version"], env) for _ in range(args.runs)
        ]
        brute = [timed(command, env) for _ in range(max(3, args.runs // 2))]
        index = Index.create("bench-default", ["bench"], db, backend=args.backend, default=True)
        index.build()
        indexed = [timed(command, env) for _ in range(args.runs)]
        print(f"{args.rows:,} rows, 384-d, median of runs, whole process (s)\n")
        print("llm --version | llm similar (brute force) | llm similar (default index) | ratio")
        print("--- | --- | --- | ---")
        b, i = statistics.median(brute), statistics.median(indexed)
        print(f"{statistics.median(baseline):.2f} | {b:.2f} | {i:.2f} | {b / i:.1f}x")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
