"""Test helpers shipped with the package.

``VectorIndexContract`` is the conformance suite every backend runs, ours and
third-party ones::

    from llm_vector_index.testing import VectorIndexContract

    class TestMyIndex(VectorIndexContract):
        backend_class = MyIndex
        options = {"m": 16}

It needs pytest. ``write_embeddings`` and ``clustered_vectors`` fill an llm
embeddings database with known vectors, for tests, benchmarks and demos.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from sqlite_utils import Database

from .base import VectorIndex


def clustered_vectors(
    count: int,
    dimensions: int = 384,
    clusters: int = 50,
    seed: int = 0,
    spread: float = 0.35,
) -> np.ndarray:
    "Gaussian clusters around random centres: float32 (count, dimensions)."
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(clusters, dimensions)).astype(np.float32)
    assignment = rng.integers(0, clusters, size=count)
    noise = rng.normal(scale=spread, size=(count, dimensions)).astype(np.float32)
    return centres[assignment] + noise


def write_embeddings(
    db: Database,
    collection: str,
    ids: Sequence[str],
    vectors: np.ndarray,
    *,
    model: str = "test-model",
    contents: Sequence[str | None] | None = None,
    metadatas: Sequence[dict[str, Any] | None] | None = None,
    updated: int | None = None,
) -> int:
    """Upsert rows into an llm collection exactly as llm stores them (creating
    the collection and llm's tables if needed). Returns the collection id."""
    from llm.embeddings_migrations import embeddings_migrations

    embeddings_migrations.apply(db)
    row = db.execute("select id from collections where name = ?", [collection]).fetchone()
    if row is None:
        collection_id = db.table("collections").insert({"name": collection, "model": model}).last_pk
        assert isinstance(collection_id, int)
    else:
        collection_id = row[0]
    vectors = np.asarray(vectors, dtype="<f4")
    stamp = int(time.time()) if updated is None else updated
    with db.atomic():
        db.conn.executemany(
            "insert or replace into embeddings (collection_id, id, embedding, content,"
            " content_hash, metadata, updated) values (?, ?, ?, ?, ?, ?, ?)",
            (
                (
                    collection_id,
                    id,
                    vector.tobytes(),
                    contents[position] if contents else None,
                    None,
                    json.dumps(metadatas[position]) if metadatas and metadatas[position] else None,
                    stamp,
                )
                for position, (id, vector) in enumerate(zip(ids, vectors))
            ),
        )
    return collection_id


@contextlib.contextmanager
def chroma_server(directory: Path, timeout: float = 60, port: int | None = None):
    """Run a real Chroma server (``chroma run`` from the installed chromadb) on
    a free port of 127.0.0.1 (or ``port``: to restart one where it was),
    storing in ``directory``; yields ``{"host", "port"}`` once its heartbeat
    answers, and stops it by its process id."""
    import os
    import signal
    import socket
    import subprocess
    import sys
    import urllib.request

    if port is None:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    log_path = directory / "server.log"
    chroma = Path(sys.executable).parent / "chroma"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [
                str(chroma),
                "run",
                "--path",
                str(directory / "db"),
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            deadline = time.monotonic() + timeout
            heartbeat = f"http://127.0.0.1:{port}/api/v2/heartbeat"
            while True:
                try:
                    with urllib.request.urlopen(heartbeat, timeout=1):
                        break
                except OSError:
                    if process.poll() is not None or time.monotonic() > deadline:
                        raise RuntimeError(
                            "Chroma server did not start:\n" + log_path.read_text()[-2000:]
                        ) from None
                    time.sleep(0.2)
            yield {"host": "127.0.0.1", "port": port}
        finally:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()


def _cosine(queries: np.ndarray, vectors: np.ndarray) -> np.ndarray:
    queries = queries / np.linalg.norm(queries, axis=1, keepdims=True)
    vectors = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    return queries @ vectors.T


class VectorIndexContract:
    """Conformance cases for a ``VectorIndex`` backend.

    Set ``backend_class`` (and ``options``) in a subclass; the methods use
    pytest's ``tmp_path`` fixture.
    """

    backend_class: ClassVar[type[VectorIndex]]
    options: ClassVar[dict[str, Any]] = {}
    dimensions: ClassVar[int] = 32
    min_recall: ClassVar[float] = 0.95

    def make(self, path: Path) -> VectorIndex:
        return self.backend_class(path, self.dimensions, "cosine", self.options)

    def data(self, count=500, seed=1):
        return clustered_vectors(count, self.dimensions, clusters=10, seed=seed)

    def test_empty_index_returns_nothing(self, tmp_path):
        index = self.make(tmp_path)
        scores, labels = index.search(self.data(1), 5)
        assert index.count() == 0
        assert scores.shape == labels.shape == (1, 0)

    def test_scores_are_cosine_best_first(self, tmp_path):
        index = self.make(tmp_path)
        vectors = self.data()
        labels = np.arange(len(vectors), dtype=np.int64) * 7 + 3
        index.add(labels, vectors * 5)  # scale must not matter
        queries = self.data(5, seed=2)
        scores, found = index.search(queries, 10)
        assert scores.shape == found.shape == (5, 10)
        expected = _cosine(queries, vectors)
        positions = (found - 3) // 7
        np.testing.assert_allclose(
            scores, np.take_along_axis(expected, positions, axis=1), atol=1e-5
        )
        assert (np.diff(scores, axis=1) <= 1e-6).all()

    def test_finds_each_stored_vector_first(self, tmp_path):
        index = self.make(tmp_path)
        vectors = self.data()
        index.add(np.arange(len(vectors)), vectors)
        scores, labels = index.search(vectors[:20], 1)
        assert labels[:, 0].tolist() == list(range(20))
        np.testing.assert_allclose(scores[:, 0], 1.0, atol=1e-5)

    def test_recall_against_exact(self, tmp_path):
        index = self.make(tmp_path)
        vectors = clustered_vectors(3000, self.dimensions, clusters=30, seed=3)
        index.add(np.arange(len(vectors)), vectors)
        queries = clustered_vectors(50, self.dimensions, clusters=30, seed=3)
        truth = np.argsort(-_cosine(queries, vectors), axis=1)[:, :10]
        _, labels = index.search(queries, 10)
        recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(labels, truth)])
        assert recall >= self.min_recall

    def test_k_larger_than_count_returns_what_exists(self, tmp_path):
        index = self.make(tmp_path)
        vectors = self.data(3)
        index.add(np.array([10, 20, 30]), vectors)
        _scores, labels = index.search(vectors[:1], 10)
        assert sorted(labels[0].tolist()) == [10, 20, 30]
        assert (labels >= 0).all()

    def test_add_is_an_upsert(self, tmp_path):
        index = self.make(tmp_path)
        vectors = self.data(50)
        index.add(np.arange(50), vectors)
        replacement = -vectors[0]
        index.add(np.array([0]), replacement[None])
        assert index.count() == 50
        _, labels = index.search(replacement[None], 1)
        assert labels[0, 0] == 0
        _, labels = index.search(vectors[:1], 50)
        assert labels[0, -1] == 0  # now the opposite of its old self

    def test_remove(self, tmp_path):
        index = self.make(tmp_path)
        vectors = self.data(100)
        index.add(np.arange(100), vectors)
        index.remove(np.array([0, 1, 2, 9999]))  # 9999 was never added
        assert index.count() == 97
        _, labels = index.search(vectors[:3], 100)
        assert labels.shape == (3, 97)
        assert not set(labels.ravel().tolist()) & {0, 1, 2}

    def test_remove_most_then_search(self, tmp_path):
        index = self.make(tmp_path)
        vectors = self.data(2000)
        index.add(np.arange(2000), vectors)
        index.remove(np.arange(1990))
        index.save()
        index = self.make(tmp_path)
        _, labels = index.search(vectors[:2], 5)
        assert labels.shape == (2, 5)
        assert set(labels.ravel().tolist()) <= set(range(1990, 2000))

    def test_allowed_filters_and_fills_k(self, tmp_path):
        index = self.make(tmp_path)
        vectors = self.data(400)
        index.add(np.arange(400), vectors)
        allowed = np.arange(0, 400, 40)  # 10 labels
        _scores, labels = index.search(vectors[1:2], 5, allowed=allowed)
        assert labels.shape == (1, 5)
        assert set(labels[0].tolist()) <= set(allowed.tolist())
        expected = _cosine(vectors[1:2], vectors[allowed])[0]
        assert sorted(labels[0].tolist()) == sorted(allowed[np.argsort(-expected)[:5]].tolist())
        _, labels = index.search(vectors[1:2], 50, allowed=allowed)
        assert sorted(labels[0].tolist()) == allowed.tolist()

    def test_allowed_labels_it_does_not_hold_are_skipped(self, tmp_path):
        "Only where the backend says so (Capabilities.absent_labels)."
        if not self.backend_class.capabilities.absent_labels:
            return  # every allowed label must be held
        index = self.make(tmp_path)
        vectors = self.data(400)
        index.add(np.arange(400), vectors)
        index.remove(np.arange(0, 400, 3))
        held = np.array([label for label in range(0, 400, 8) if label % 3])
        with_gaps = np.concatenate([np.arange(0, 400, 8), [400, 401, 10_000]])
        for k in (5, len(held), len(with_gaps)):
            _, expected = index.search(vectors[1:2], k, allowed=held)
            _, found = index.search(vectors[1:2], k, allowed=with_gaps)
            assert found[0][found[0] >= 0].tolist() == expected[0][expected[0] >= 0].tolist()

    def test_save_and_reopen_restores_exactly(self, tmp_path):
        index = self.make(tmp_path)
        vectors = self.data(300)
        labels = np.arange(300, dtype=np.int64) + 2**40  # large int64 labels
        index.add(labels, vectors)
        index.remove(labels[:10])
        queries = self.data(5, seed=9)
        before = index.search(queries, 10)
        index.save()
        reopened = self.make(tmp_path)
        assert reopened.count() == 290
        after = reopened.search(queries, 10)
        np.testing.assert_array_equal(before[1], after[1])
        np.testing.assert_allclose(before[0], after[0], atol=1e-6)

    def test_save_leaves_no_temporary_files(self, tmp_path):
        index = self.make(tmp_path)
        index.add(np.arange(10), self.data(10))
        index.save()
        index.save()
        assert not [path for path in tmp_path.rglob(".*") if path.is_file()]

    def test_unsaved_changes_are_not_persisted(self, tmp_path):
        if not self.backend_class.capabilities.atomic_save:
            return  # declared: its writes land at once
        index = self.make(tmp_path)
        index.add(np.arange(10), self.data(10))
        index.save()
        index.add(np.arange(10, 20), self.data(10, seed=5))
        assert self.make(tmp_path).count() == 10

    def test_wrong_dimensions_are_refused(self, tmp_path):
        from .errors import DimensionMismatch

        index = self.make(tmp_path)
        try:
            index.add(np.arange(2), np.ones((2, self.dimensions + 1), np.float32))
        except DimensionMismatch:
            pass
        else:
            raise AssertionError("add accepted vectors of the wrong dimension")

    def test_unknown_option_is_refused(self, tmp_path):
        from .errors import InvalidOptions

        try:
            self.backend_class.validate_options({"no_such_option": "1"}, self.dimensions)
        except InvalidOptions as error:
            assert "no_such_option" in str(error)
        else:
            raise AssertionError("an unknown option was accepted")

    def test_declared_options_parse_their_defaults(self, tmp_path):
        settings = self.backend_class.validate_options({}, self.dimensions)
        assert set(settings) == {option.name for option in self.backend_class.options}
        for option in self.backend_class.options:
            assert option.parse(str(option.default)) == option.default
