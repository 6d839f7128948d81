"""``exact``: a normalised numpy matrix searched with one BLAS product.

The reference backend: exact results, and the fastest choice for small
collections (below about 50k vectors a full scan costs well under 10 ms).

Saved rows are never rewritten. The matrix is a list of segments, files
written once and memory-mapped on open, plus the rows added since the last
save; a replaced or removed row is only marked dead. A save writes the new
rows as one more segment and the (small) list of dead positions, so a build
that changed 1% of a million rows writes 1% of the matrix, not all of it.
When dead rows pass ``COMPACT_RATIO`` of the matrix, or segments pass
``MAX_SEGMENTS``, the save writes the live rows again as one segment.
"""

from __future__ import annotations

import numpy as np

from ..base import Capabilities, VectorIndex, normalize, top_k, unique_last
from ..errors import DamagedFiles
from ..hookspecs import hookimpl
from ..storage import array_writer, load_snapshot, save_snapshot

COMPACT_RATIO = 0.25
MAX_SEGMENTS = 8
# How snapshots saved before segments named their single segment.
FIRST_SEGMENT = ["labels", "vectors"]


class ExactIndex(VectorIndex):
    name = "exact"
    capabilities = Capabilities(exact=True, filtered_search=True, absent_labels=True)

    def open(self) -> None:
        saved = load_snapshot(self.path)
        # Saved segments: (labels, vectors) read-only maps, and their file keys.
        self._segments: list[tuple[np.ndarray, np.ndarray]] = []
        self._segment_keys: list[list[str]] = []
        dead = np.empty(0, dtype=np.int64)
        if saved is not None:
            keys = saved.meta.get("segments", [FIRST_SEGMENT])
            if not isinstance(keys, list):
                raise DamagedFiles(f"manifest lists segments as {type(keys).__name__}")
            for pair in keys:
                if not (
                    isinstance(pair, list)
                    and len(pair) == 2
                    and all(key in saved.files for key in pair)
                ):
                    raise DamagedFiles(f"manifest names a segment it has no files for: {pair!r}")
                labels, vectors = saved.array(pair[0]), saved.array(pair[1])
                if labels.ndim != 1 or vectors.shape != (len(labels), self.dimensions):
                    raise DamagedFiles(f"segment {pair[1]} has shape {vectors.shape}")
                self._segments.append((labels, vectors))
                self._segment_keys.append(pair)
            if "dead" in saved.files:
                dead = saved.array("dead")
        self._saved_rows = sum(len(labels) for labels, _ in self._segments)
        self._dead = set(dead.tolist())
        if any(not 0 <= position < self._saved_rows for position in self._dead):
            raise DamagedFiles("dead positions outside the saved rows")
        # Rows added since the last save, in buffers that grow by doubling.
        self._new_labels = np.empty(0, dtype=np.int64)
        self._new_vectors = np.empty((0, self.dimensions), dtype=np.float32)
        self._new_size = 0
        self._positions: dict[int, int] | None = None  # live label -> position
        self._search_view: tuple[np.ndarray, np.ndarray] | None = None  # see search()

    # -- rows -----------------------------------------------------------------

    def _size(self) -> int:
        return self._saved_rows + self._new_size

    def _all_labels(self) -> np.ndarray:
        parts = [labels for labels, _ in self._segments]
        parts.append(self._new_labels[: self._new_size])
        return parts[0] if len(parts) == 1 else np.concatenate(parts)

    def _position_map(self) -> dict[int, int]:
        if self._positions is None:
            labels = self._all_labels().tolist()
            self._positions = {
                label: position
                for position, label in enumerate(labels)
                if position not in self._dead
            }
        return self._positions

    def _reserve(self, extra: int) -> None:
        needed = self._new_size + extra
        if needed <= len(self._new_labels):
            return
        capacity = max(needed, 2 * len(self._new_labels), 1024)
        labels = np.empty(capacity, dtype=np.int64)
        vectors = np.empty((capacity, self.dimensions), dtype=np.float32)
        labels[: self._new_size] = self._new_labels[: self._new_size]
        vectors[: self._new_size] = self._new_vectors[: self._new_size]
        self._new_labels, self._new_vectors = labels, vectors

    def _changed(self) -> None:
        self._search_view = None

    # -- the contract ---------------------------------------------------------------

    def add(self, labels: np.ndarray, vectors: np.ndarray) -> None:
        labels, vectors = unique_last(labels, normalize(self.check_vectors(vectors)))
        if len(labels) == 0:
            return
        self.remove(labels)  # an upsert marks the old row dead
        self._reserve(len(labels))
        start = self._new_size
        self._new_labels[start : start + len(labels)] = labels
        self._new_vectors[start : start + len(labels)] = vectors
        self._new_size += len(labels)
        first = self._saved_rows + start
        self._position_map().update(zip(labels.tolist(), range(first, first + len(labels))))
        self._changed()

    def remove(self, labels: np.ndarray) -> None:
        positions = self._position_map()
        for label in np.asarray(labels, dtype=np.int64).tolist():
            position = positions.pop(label, None)
            if position is not None:
                self._dead.add(position)
                self._changed()

    def _all_segments(self) -> list[tuple[np.ndarray, np.ndarray]]:
        segments = list(self._segments)
        if self._new_size or not segments:
            segments.append(
                (self._new_labels[: self._new_size], self._new_vectors[: self._new_size])
            )
        return segments

    def _labels_and_dead(self) -> tuple[np.ndarray, np.ndarray]:
        "Every row's label, and the dead rows' positions (kept until a change)."
        if self._search_view is None:
            dead = np.fromiter(self._dead, dtype=np.int64, count=len(self._dead))
            self._search_view = (self._all_labels(), np.sort(dead))
        return self._search_view

    def search(
        self, queries: np.ndarray, k: int, allowed: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        queries = normalize(self.check_vectors(queries))
        segments = self._all_segments()
        labels, dead = self._labels_and_dead()
        if allowed is not None:
            keep = np.isin(labels, np.asarray(allowed, dtype=np.int64))
            keep[dead] = False
            positions = np.flatnonzero(keep)
            scores = queries @ self._gather(segments, positions).T
            labels = labels[positions]
        else:
            # Dead rows are scored with the rest (no copy of the matrix per
            # query) and then can never win; k is at most the live rows.
            scores = np.concatenate([queries @ vectors.T for _, vectors in segments], axis=1)
            if len(dead):
                scores[:, dead] = -np.inf
                k = min(k, len(labels) - len(dead))
        best = top_k(scores, k)
        return np.take_along_axis(scores, best, axis=1), labels[best]

    def _gather(self, segments, positions: np.ndarray) -> np.ndarray:
        "The vectors at these (sorted) positions across segments."
        parts, start = [], 0
        for _, vectors in segments:
            end = start + len(vectors)
            chosen = positions[(positions >= start) & (positions < end)] - start
            parts.append(vectors[chosen])
            start = end
        return np.concatenate(parts) if parts else np.empty((0, self.dimensions), np.float32)

    def count(self) -> int:
        return self._size() - len(self._dead)

    def save(self) -> None:
        size = self._size()
        if len(self._dead) > COMPACT_RATIO * size or len(self._segments) >= MAX_SEGMENTS:
            self._save_compacted()
            return
        keep = [key for pair in self._segment_keys for key in pair]
        files = {}
        if self._new_size:
            in_use = {key for pair in self._segment_keys for key in pair}
            number = len(self._segment_keys)
            while {f"labels-{number}", f"vectors-{number}"} & in_use:
                number += 1
            pair = [f"labels-{number}", f"vectors-{number}"]
            files[pair[0]] = array_writer(self._new_labels[: self._new_size])
            files[pair[1]] = array_writer(self._new_vectors[: self._new_size])
        else:
            pair = None
        segments = self._segment_keys + ([pair] if pair else [])
        files["dead"] = array_writer(np.array(sorted(self._dead), dtype=np.int64))
        save_snapshot(self.path, files, meta={"segments": segments}, keep=keep)
        if pair:
            # The new rows, mapped from their file instead of held in the
            # buffer; every row keeps its position.
            self._reopen(keep_positions=True)

    def _save_compacted(self) -> None:
        "Write the live rows again as a single segment: dead rows stop costing."
        segments = self._all_segments()
        live = np.ones(self._size(), dtype=bool)
        live[self._labels_and_dead()[1]] = False
        positions = np.flatnonzero(live)
        save_snapshot(
            self.path,
            {
                "labels-0": array_writer(self._all_labels()[positions]),
                "vectors-0": array_writer(self._gather(segments, positions)),
                "dead": array_writer(np.empty(0, dtype=np.int64)),
            },
            meta={"segments": [["labels-0", "vectors-0"]]},
        )
        self._reopen(keep_positions=False)

    def _reopen(self, keep_positions: bool) -> None:
        positions = self._positions
        self.open()
        if keep_positions:
            self._positions = positions


@hookimpl
def register_vector_index_backends(register):
    register(ExactIndex)
