"""Open a local Chroma store in a separate process and check that it answers.

Chroma's C++ HNSW loader trusts its files: a truncated or overwritten
segment can crash the process that opens it, and half a graph answers
wrongly without an error. Whenever a store's files are not the ones our last
save or close left, the chroma backend first runs this check in a child
process (``python -m llm_vector_index.backends.chroma_probe DIR COLLECTION``):
the store must open, and stored vectors must find themselves first. A crash,
a wrong answer or a timeout means the store is damaged.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

SAMPLE = 8
TIMEOUT = 120


def probe(store: Path, collection: str) -> str | None:
    "None if the store answers correctly, else why not."
    try:
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "llm_vector_index.backends.chroma_probe",
                str(store),
                collection,
            ],
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
        )
    except subprocess.TimeoutExpired:
        return f"opening it took over {TIMEOUT}s"
    if result.returncode == 0:
        return None
    if result.returncode < 0:
        return f"opening it crashed a test process (signal {-result.returncode})"
    lines = (result.stdout + result.stderr).strip().splitlines()
    return lines[-1] if lines else f"check failed (exit {result.returncode})"


def main(store: str, name: str) -> int:
    import numpy as np

    from llm_vector_index.chroma_client import connect

    client = connect(path=Path(store))
    collection = client.get_collection(name, embedding_function=None)
    stored = collection.get(limit=SAMPLE, include=["embeddings"])
    if not stored["ids"]:
        return 0
    vectors = np.asarray(stored["embeddings"], dtype=np.float32)
    found = collection.query(query_embeddings=vectors, n_results=1, include=["distances"])
    for id, row in zip(stored["ids"], found["ids"]):
        if not row or row[0] != id:
            print(f"stored vector {id} does not find itself")
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:3]))
