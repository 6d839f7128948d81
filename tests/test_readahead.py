"""readahead.py: an index file about to be mapped is read in order by a
thread beside faiss's open, only where that helps, and never changes what
a query finds."""

import gc
import os
import threading

import pytest

from llm_vector_index import Index, close_indexes, readahead


def open_descriptors() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_a_large_file_is_read_to_its_end_and_let_go(tmp_path):
    path = tmp_path / "big"
    path.write_bytes(os.urandom(1 << 20) * (readahead.SMALLEST // (1 << 20) + 3))
    # (connections earlier tests left for the garbage collector to close
    # must not close in between: collected now, and no collection meanwhile)
    gc.collect()
    gc.disable()
    try:
        before = open_descriptors()
        thread = readahead.read_ahead(path)
        assert thread is not None and thread.daemon
        thread.join(timeout=60)
        assert not thread.is_alive()
        assert open_descriptors() == before
    finally:
        gc.enable()


def test_small_missing_or_too_large_files_are_left_alone(tmp_path, monkeypatch):
    small = tmp_path / "small"
    small.write_bytes(b"x" * 1000)
    assert readahead.read_ahead(small) is None
    assert readahead.read_ahead(tmp_path / "missing") is None
    big = tmp_path / "big"
    big.write_bytes(b"\0" * (readahead.SMALLEST + 1))
    # more than a quarter of what the machine has free: it would push out other pages
    monkeypatch.setattr(readahead, "available_memory", lambda: 2 * readahead.SMALLEST)
    assert readahead.read_ahead(big) is None
    monkeypatch.setattr(readahead, "available_memory", lambda: None)  # not Linux
    assert readahead.read_ahead(big) is None


def test_available_memory_is_read_from_the_machine():
    available = readahead.available_memory()
    assert available is None or available > 1 << 20


@pytest.mark.parametrize("options", [{}, {"factory": "HNSW32,SQ8", "rerank": 2}])
def test_a_query_index_opened_beside_its_read_ahead_answers_as_before(
    db, vectors_collection, monkeypatch, options
):
    _, vectors = vectors_collection
    index = Index.create("ra", ["vecs"], db, backend="faiss", options=options)
    index.build()
    expected = [index.similar_by_vector(v, 5) for v in vectors[:20]]
    close_indexes()
    started = []
    real = readahead.read_ahead

    def counted(path):
        started.append(path.name)
        return real(path)

    monkeypatch.setattr(readahead, "SMALLEST", 0)  # every file, however small
    monkeypatch.setattr("llm_vector_index.backends.faiss.read_ahead", counted)
    reopened = Index("ra", db)
    assert [reopened.similar_by_vector(v, 5) for v in vectors[:20]] == expected
    assert started and all(name.startswith("index") for name in started)
    for thread in threading.enumerate():
        if thread.name.startswith("read-ahead"):
            thread.join(timeout=60)
