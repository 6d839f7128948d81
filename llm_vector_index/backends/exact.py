"""``exact``: a normalised numpy matrix searched with one BLAS product.

The reference backend: exact results, and the fastest choice for small
collections (below about 50k vectors a full scan costs well under 10 ms).
"""

from __future__ import annotations


import numpy as np

from ..base import Capabilities, VectorIndex, normalize, top_k, unique_last
from ..hookspecs import hookimpl
from ..storage import array_writer, load_snapshot, save_snapshot


class ExactIndex(VectorIndex):
    name = "exact"
    capabilities = Capabilities(exact=True, filtered_search=True)

    def open(self) -> None:
        saved = load_snapshot(self.path)
        if saved is None:
            self._labels = np.empty(0, dtype=np.int64)
            self._vectors = np.empty((0, self.dimensions), dtype=np.float32)
        else:
            self._labels = saved.array("labels")
            self._vectors = saved.array("vectors")
        self._size = len(self._labels)
        self._positions: dict[int, int] | None = None  # built on first write

    # Rows live in [0, _size) of buffers that grow by doubling, so a build that
    # adds in batches does not copy the whole matrix for every batch.
    def _reserve(self, extra: int) -> None:
        needed = self._size + extra
        if needed <= len(self._labels):
            return
        capacity = max(needed, 2 * len(self._labels), 1024)
        labels = np.empty(capacity, dtype=np.int64)
        vectors = np.empty((capacity, self.dimensions), dtype=np.float32)
        labels[: self._size] = self._labels[: self._size]
        vectors[: self._size] = self._vectors[: self._size]
        self._labels, self._vectors = labels, vectors

    def _position_map(self) -> dict[int, int]:
        if self._positions is None:
            live = self._labels[: self._size].tolist()
            self._positions = dict(zip(live, range(self._size)))
        return self._positions

    def add(self, labels: np.ndarray, vectors: np.ndarray) -> None:
        labels, vectors = unique_last(labels, normalize(self.check_vectors(vectors)))
        positions = self._position_map()
        found = np.fromiter(
            (positions.get(label, -1) for label in labels.tolist()),
            dtype=np.int64,
            count=len(labels),
        )
        existing = found >= 0
        self._vectors[found[existing]] = vectors[existing]
        new_labels, new_vectors = labels[~existing], vectors[~existing]
        self._reserve(len(new_labels))
        start, end = self._size, self._size + len(new_labels)
        self._labels[start:end] = new_labels
        self._vectors[start:end] = new_vectors
        positions.update(zip(new_labels.tolist(), range(start, end)))
        self._size = end

    def remove(self, labels: np.ndarray) -> None:
        positions = self._position_map()
        for label in np.asarray(labels, dtype=np.int64).tolist():
            position = positions.pop(label, None)
            if position is None:
                continue
            last = self._size - 1
            if position != last:  # move the last row into the hole
                moved = int(self._labels[last])
                self._labels[position] = moved
                self._vectors[position] = self._vectors[last]
                positions[moved] = position
            self._size = last

    def search(
        self, queries: np.ndarray, k: int, allowed: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        queries = normalize(self.check_vectors(queries))
        labels = self._labels[: self._size]
        vectors = self._vectors[: self._size]
        if allowed is not None:
            mask = np.isin(labels, np.asarray(allowed, dtype=np.int64))
            labels, vectors = labels[mask], vectors[mask]
        scores = queries @ vectors.T
        best = top_k(scores, k)
        return np.take_along_axis(scores, best, axis=1), labels[best]

    def count(self) -> int:
        return self._size

    def save(self) -> None:
        save_snapshot(
            self.path,
            {
                "labels": array_writer(self._labels[: self._size]),
                "vectors": array_writer(self._vectors[: self._size]),
            },
        )


@hookimpl
def register_vector_index_backends(register):
    register(ExactIndex)
