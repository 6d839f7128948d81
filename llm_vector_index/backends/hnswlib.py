"""``hnswlib``: an HNSW graph from the hnswlib library, in cosine space.

hnswlib keys vectors by our labels directly. Removal marks them deleted and
later inserts take over deleted slots (``allow_replace_deleted``), so churn
does not grow the file. ``import hnswlib`` happens only when an index opens.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from ..base import (
    Capabilities,
    Option,
    VectorIndex,
    load_arrays,
    normalize,
    require,
    exact_search,
    save_arrays,
    unique_last,
)
from ..hookspecs import hookimpl

STATE_FILE = "hnswlib.npz"  # our metadata; names the graph file it belongs to
EXACT_FILTER_LIMIT = 4096  # allow-lists this small are scanned exactly
SINGLE_THREAD_QUERIES = 8


class HnswlibIndex(VectorIndex):
    name = "hnswlib"
    # M 16, ef_construction 100, ef 64: recall@10 0.968 at 0.28 ms on the 40k
    # real sentence embeddings in shared/data (docs/backends.md has the table).
    options = (
        Option("M", int, 16, "Links per node (memory and recall)", 2),
        Option("ef_construction", int, 100, "Candidates explored per insert", 1),
        Option("ef", int, 64, "Candidates explored per query (recall vs speed)", 1),
    )
    capabilities = Capabilities(exact=False, filtered_search=True)

    @classmethod
    def validate_options(cls, values, dimensions=None):
        require("hnswlib", "hnswlib")
        return super().validate_options(values, dimensions)

    def __init__(
        self,
        path: Path,
        dimensions: int,
        metric: str = "cosine",
        options: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(path, dimensions, metric, options)
        hnswlib = require("hnswlib", "hnswlib")
        self._graph = hnswlib.Index(space="cosine", dim=dimensions)
        saved = load_arrays(self.path / STATE_FILE)
        if saved is None:
            self._graph.init_index(
                max_elements=1024,
                M=self.settings["M"],
                ef_construction=self.settings["ef_construction"],
                allow_replace_deleted=True,
            )
            self._live: set[int] = set()
            self._marked: set[int] = set()  # marked deleted, slot maybe reused
            self._graph_file: str | None = None
        else:
            self._graph_file = str(saved["graph_file"])
            self._graph.load_index(
                str(self.path / self._graph_file), allow_replace_deleted=True
            )
            self._live = set(saved["live"].tolist())
            self._marked = set(saved["marked"].tolist())
        # ef is not in hnswlib's file: it comes from our options every time.
        self._graph.set_ef(self.settings["ef"])

    def add(self, labels: np.ndarray, vectors: np.ndarray) -> None:
        labels, vectors = unique_last(labels, normalize(self.check_vectors(vectors)))
        if len(labels) == 0:
            return
        for label in labels.tolist():
            if label in self._marked:  # revive it, so add_items updates in place
                self._marked.discard(label)
                try:
                    self._graph.unmark_deleted(label)
                except RuntimeError:
                    pass  # its slot went to another label: it is simply new
        needed = self._graph.get_current_count() + len(labels)
        capacity = self._graph.get_max_elements()
        if needed > capacity:
            self._graph.resize_index(max(needed, 2 * capacity))
        self._graph.add_items(vectors, labels, replace_deleted=True)
        self._live.update(labels.tolist())

    def remove(self, labels: np.ndarray) -> None:
        for label in np.asarray(labels, dtype=np.int64).tolist():
            if label in self._live:
                self._graph.mark_deleted(label)
                self._live.discard(label)
                self._marked.add(label)

    def search(
        self, queries: np.ndarray, k: int, allowed: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        queries = normalize(self.check_vectors(queries))
        candidates = None
        if allowed is not None:
            candidates = self._live.intersection(np.asarray(allowed).tolist())
        wanted = min(k, len(self._live) if candidates is None else len(candidates))
        if wanted == 0:
            return (
                np.empty((len(queries), 0), np.float32),
                np.empty((len(queries), 0), np.int64),
            )
        if candidates is not None and len(candidates) <= EXACT_FILTER_LIMIT:
            return self._exact_search(queries, k, candidates)
        threads = 1 if len(queries) <= SINGLE_THREAD_QUERIES else -1
        accept = None if candidates is None else candidates.__contains__
        try:
            labels, distances = self._graph.knn_query(
                queries, k=wanted, num_threads=threads, filter=accept
            )
        except RuntimeError:
            # "Cannot return the results in a contiguous 2D array": the graph
            # found fewer than k (deletions, a filter). Answer exactly instead.
            return self._exact_search(queries, k, candidates or self._live)
        return (1.0 - distances).astype(np.float32), labels.astype(np.int64)

    def _exact_search(self, queries, k, labels):
        labels = np.fromiter(labels, dtype=np.int64, count=len(labels))
        vectors = np.asarray(self._graph.get_items(labels), dtype=np.float32)
        return exact_search(queries, vectors, labels, k)

    def count(self) -> int:
        return len(self._live)

    def save(self) -> None:
        # Write the graph under a new name, then point our metadata at it in one
        # atomic rename: a crash leaves the previous pair intact.
        self.path.mkdir(parents=True, exist_ok=True)
        previous = self._graph_file
        generation = 0 if previous is None else int(previous.split("-")[1].split(".")[0]) + 1
        graph_file = f"graph-{generation}.bin"
        self._graph.save_index(str(self.path / graph_file))
        with open(self.path / graph_file, "rb") as written:
            os.fsync(written.fileno())
        present = set(self._graph.get_ids_list())
        self._marked &= present  # forget deleted labels whose slots were reused
        save_arrays(
            self.path / STATE_FILE,
            graph_file=np.array(graph_file),
            live=np.fromiter(self._live, dtype=np.int64, count=len(self._live)),
            marked=np.fromiter(self._marked, dtype=np.int64, count=len(self._marked)),
            ef=np.array(self.settings["ef"]),
        )
        self._graph_file = graph_file
        if previous and previous != graph_file:
            (self.path / previous).unlink(missing_ok=True)


@hookimpl
def register_vector_index_backends(register):
    register(HnswlibIndex)
