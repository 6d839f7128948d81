"""Rows per second migrating an llm collection into Chroma: a local
directory and a real `chroma run` server on 127.0.0.1.

    python benchmarks/migrate_chroma.py --rows 100000
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path

from sqlite_utils import Database

from llm_vector_index.migrate import migrate_to_chroma
from llm_vector_index.testing import chroma_server, clustered_vectors, write_embeddings


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=100_000)
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="llm-vector-index-migrate-"))
    try:
        db = Database(workdir / "embeddings.db")
        write_embeddings(
            db,
            "bench",
            [f"row-{i}" for i in range(args.rows)],
            clustered_vectors(args.rows, 384, clusters=1000),
            contents=[f"text of row {i}" for i in range(args.rows)],
            metadatas=[
                {"n": i, "tags": ["a", "b"], "nested": {"k": i % 7}} for i in range(args.rows)
            ],
        )
        print(f"{args.rows:,} rows, 384-d, with content and nested metadata\n")
        print("target | first run s | rows/s | re-run (nothing changed) s | verified")
        print("--- | --- | --- | --- | ---")
        local = migrate_to_chroma(db, ["bench"], path=workdir / "chroma")
        again = migrate_to_chroma(db, ["bench"], path=workdir / "chroma")
        print(
            f"local directory | {local.seconds:.1f} | {args.rows / local.seconds:,.0f} | "
            f"{again.seconds:.2f} ({again.sent} sent) | {local.chroma_rows:,} rows, "
            f"{local.sampled} sampled"
        )
        with chroma_server(workdir / "server") as server:
            remote = migrate_to_chroma(db, ["bench"], **server)
            again = migrate_to_chroma(db, ["bench"], **server)
        print(
            f"server (127.0.0.1) | {remote.seconds:.1f} | {args.rows / remote.seconds:,.0f} | "
            f"{again.seconds:.2f} ({again.sent} sent) | {remote.chroma_rows:,} rows, "
            f"{remote.sampled} sampled"
        )
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
