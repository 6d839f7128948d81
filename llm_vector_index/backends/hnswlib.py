"""``hnswlib``: an HNSW graph from the hnswlib library, in cosine space.

hnswlib keys vectors by our labels directly. Removal marks them deleted and
later inserts take over deleted slots (``allow_replace_deleted``), so churn
does not grow the file. ``import hnswlib`` happens only when an index opens.
"""

from __future__ import annotations

import contextlib

import numpy as np

from ..base import (
    HNSW_SEARCH_WIDTHS,
    MAX_LINKS,
    MAX_WIDTH,
    Capabilities,
    Option,
    Tunable,
    VectorIndex,
    exact_search,
    no_results,
    normalize,
    require,
    unique_last,
)
from ..hookspecs import hookimpl
from ..storage import array_writer, load_snapshot, save_snapshot

EXACT_FILTER_LIMIT = 4096  # allow-lists this small are scanned exactly
SINGLE_THREAD_QUERIES = 8


class HnswlibIndex(VectorIndex):
    name = "hnswlib"
    # M 16, ef_construction 100, ef 64: recall@10 0.968 at 0.28 ms on the 40k
    # real sentence embeddings in shared/data (docs/backends.md has the table).
    options = (
        Option("M", int, 16, "Links per node (memory and recall)", 2, maximum=MAX_LINKS),
        Option("ef_construction", int, 100, "Candidates explored per insert", 1, maximum=MAX_WIDTH),
        Option(
            "ef", int, 64, "Candidates explored per query (recall vs speed)", 1, maximum=MAX_WIDTH
        ),
    )
    capabilities = Capabilities(exact=False, filtered_search=True, absent_labels=True)

    @classmethod
    def validate_options(cls, values, dimensions=None):
        require("hnswlib", "hnswlib")
        return super().validate_options(values, dimensions)

    @classmethod
    def tunable(cls, settings):
        return Tunable("ef", HNSW_SEARCH_WIDTHS)

    def set_search_option(self, name, value):
        super().set_search_option(name, value)
        if name == "ef":
            self._graph.set_ef(value)

    def open(self) -> None:
        hnswlib = require("hnswlib", "hnswlib")
        self._graph = hnswlib.Index(space="cosine", dim=self.dimensions)
        saved = load_snapshot(self.path)
        if saved is None:
            self._graph.init_index(
                max_elements=1024,
                M=self.settings["M"],
                ef_construction=self.settings["ef_construction"],
                allow_replace_deleted=True,
            )
            self._live: set[int] = set()
            self._marked: set[int] = set()  # marked deleted, slot maybe reused
        else:
            self._graph.load_index(str(saved.files["graph"]), allow_replace_deleted=True)
            self._live = set(saved.array("live").tolist())
            self._marked = set(saved.array("marked").tolist())
        # ef is not in hnswlib's file: it comes from our options every time.
        self._graph.set_ef(self.settings["ef"])

    def add(self, labels: np.ndarray, vectors: np.ndarray) -> None:
        labels, vectors = unique_last(labels, normalize(self.check_vectors(vectors)))
        if len(labels) == 0:
            return
        for label in labels.tolist():
            if label in self._marked:  # revive it, so add_items updates in place
                self._marked.discard(label)
                with contextlib.suppress(RuntimeError):  # its slot went to another label:
                    self._graph.unmark_deleted(label)  # it is simply new
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
            return no_results(len(queries))
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
        self._marked &= set(self._graph.get_ids_list())  # slots reused since
        save_snapshot(
            self.path,
            {
                "graph": lambda path: self._graph.save_index(str(path)),
                "live": array_writer(np.fromiter(self._live, np.int64, len(self._live))),
                "marked": array_writer(np.fromiter(self._marked, np.int64, len(self._marked))),
            },
            # hnswlib's file lacks ef; recorded here, though the index's
            # options (which set it on every open) are the source of truth.
            meta={"ef": self.settings["ef"]},
        )


@hookimpl
def register_vector_index_backends(register):
    register(HnswlibIndex)
