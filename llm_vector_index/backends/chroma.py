"""``chroma``: a Chroma collection, in a local directory or on a Chroma server.

Local mode (the default) keeps a ``PersistentClient`` directory inside the
index's folder. Server mode (``-o host H -o port P``) talks to ``chroma run``
through ``HttpClient``: the way to grow past one machine. Vectors are stored
under our labels as ids, in a collection created with cosine space and no
embedding function (llm embeds; Chroma's default function would download a
model). ``import chromadb`` (about a second) happens only in here.
"""

from __future__ import annotations

import fcntl
import functools
import os
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from ..base import (
    Capabilities,
    Option,
    VectorIndex,
    exact_search,
    no_results,
    normalize,
    unique_last,
)
from ..chroma_client import (
    connect,
    cosine_collection,
    derive_name,
    server_errors,
    token_headers,
)
from ..hookspecs import hookimpl
from .. import signing
from ..errors import DamagedFiles, InvalidOptions
from ..storage import file_check, load_snapshot, save_snapshot, verify_file


def collection_name(index_name: str) -> str:
    "A valid Chroma collection name for an index, unique through a random suffix."
    return derive_name(f"llm-{index_name}", suffix=f"-{uuid.uuid4().hex[:8]}")


def _connect(settings: Mapping[str, Any], path: Path):
    return connect(
        path=path, host=settings["host"], port=settings["port"], ssl=settings["ssl"],
        headers=token_headers(_token(settings), settings["token_header"]),
    )


def _token(settings: Mapping[str, Any]) -> str:
    """The server's auth token, read from the environment variable the index
    names: a database is a file people share, so no secret is stored in it."""
    variable = settings["token_env"]
    if not variable:
        return ""
    token = os.environ.get(variable)
    if not token:
        raise InvalidOptions(
            f"Environment variable {variable} (token_env) is not set: export the "
            "Chroma server's token in it"
        )
    return token


def _server_call(method):
    "Run a method that talks to Chroma, with a dying server as one clear error."

    @functools.wraps(method)
    def call(self, *args, **kwargs):
        with server_errors(self.settings["host"], self.settings["port"]):
            return method(self, *args, **kwargs)

    return call


class ChromaIndex(VectorIndex):
    name = "chroma"
    options = (
        Option("host", str, "", "Chroma server host (default: a local directory)"),
        Option("port", int, 8000, "Chroma server port", 1),
        Option("ssl", bool, False, "Connect to the server over https"),
        Option("token_env", str, "",
               "Environment variable holding the server's auth token (never stored)"),
        Option("token_header", str, "Authorization",
               "Header for the token: Authorization (Bearer) or X-Chroma-Token"),
        Option("ef_search", int, 100, "HNSW candidates explored per query", 1),
    )
    capabilities = Capabilities(exact=False, filtered_search=True, atomic_save=False)

    @classmethod
    def validate_options(cls, values, dimensions=None):
        if "token" in values:
            raise InvalidOptions(
                "Tokens are never stored in the database: put it in an environment "
                "variable and pass its name, e.g. -o token_env CHROMA_TOKEN"
            )
        settings = super().validate_options(values, dimensions)
        if settings["host"]:
            _connect(settings, Path()).close()  # unreachable: refuse before creating
        return settings

    def open(self) -> None:
        saved = load_snapshot(self.path)
        if saved is not None and not self.settings["host"]:
            _verify_store(self.path / "chroma", saved.meta)  # before Chroma reads it
        self._client = _connect(self.settings, self.path / "chroma")
        if saved is not None:
            self._name = saved.meta["collection"]
        else:
            self._name = collection_name(self.path.name)
        self._collection = cosine_collection(
            self._client, self._name, ef_search=self.settings["ef_search"]
        )
        self._batch = self._client.get_max_batch_size()
        # Chroma counts by scanning (about 10 ms at 100k rows): once per change.
        self._count: int | None = None

    @contextmanager
    def _write_lock(self):
        "A local Chroma directory must not be written by two processes at once."
        if self.settings["host"]:
            yield
            return
        with open(self.path / "chroma.lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    @_server_call
    def add(self, labels: np.ndarray, vectors: np.ndarray) -> None:
        labels, vectors = unique_last(labels, normalize(self.check_vectors(vectors)))
        self._count = None
        with self._write_lock():
            for start in range(0, len(labels), self._batch):  # upsert: add ignores existing ids
                end = start + self._batch
                self._collection.upsert(
                    ids=[str(label) for label in labels[start:end].tolist()],
                    embeddings=vectors[start:end],
                )

    @_server_call
    def remove(self, labels: np.ndarray) -> None:
        ids = [str(label) for label in np.asarray(labels, dtype=np.int64).tolist()]
        self._count = None
        with self._write_lock():
            for start in range(0, len(ids), self._batch):
                self._collection.delete(ids=ids[start : start + self._batch])

    @_server_call
    def search(
        self, queries: np.ndarray, k: int, allowed: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        queries = normalize(self.check_vectors(queries))
        ids = None
        if allowed is not None:
            ids = [str(label) for label in np.asarray(allowed, dtype=np.int64).tolist()]
        wanted = min(k, self.count() if ids is None else len(ids))
        if wanted == 0:
            return no_results(len(queries))
        result = self._collection.query(
            query_embeddings=queries, n_results=wanted, ids=ids, include=["distances"]
        )
        if all(len(row) == wanted for row in result["ids"]):
            labels = np.array(result["ids"], dtype=np.int64).reshape(len(queries), wanted)
            distances = np.array(result["distances"], dtype=np.float32).reshape(labels.shape)
            return 1.0 - distances, labels  # Chroma's cosine distance is 1 - cos
        # Short: the graph missed some (deletions), or some allowed labels are
        # not stored. Answer exactly over what is stored.
        stored = self._collection.get(ids=ids, include=["embeddings"])
        if not stored["ids"]:
            return no_results(len(queries))
        labels = np.array(stored["ids"], dtype=np.int64)
        return exact_search(queries, np.asarray(stored["embeddings"], np.float32), labels, k)

    @_server_call
    def count(self) -> int:
        if self._count is None:
            self._count = self._collection.count()
        return self._count

    def save(self) -> None:
        # Chroma persists every write itself; we record which collection is
        # ours and, for a local store, what its files must be when reopened.
        meta: dict[str, Any] = {"collection": self._name}
        if not self.settings["host"]:
            meta["store"] = _store_checks(self.path / "chroma")
            meta["signature"] = signing.sign(_signed_part(meta))
        save_snapshot(self.path, {}, meta=meta)

    def close(self) -> None:
        self._client.close()

    def destroy(self) -> None:
        try:
            self._client.delete_collection(self._name)
        except Exception:  # already gone
            pass

    def describe(self) -> dict[str, Any]:
        where = (
            f"{'https' if self.settings['ssl'] else 'http'}://{self.settings['host']}:{self.settings['port']}"
            if self.settings["host"] else str(self.path / "chroma")
        )
        return {"chroma_collection": self._name, "chroma": where}


# chroma.sqlite3 (and its journal) change whenever Chroma opens the store,
# and SQLite detects its own damage; the HNSW segment files are read by C++
# code that trusts them, so they are what is checked.
UNCHECKED = ("chroma.sqlite3",)


def _store_checks(store: Path) -> dict[str, dict]:
    return {
        str(path.relative_to(store)): file_check(path)
        for path in sorted(store.rglob("*"))
        if path.is_file() and not path.name.startswith(UNCHECKED)
    }


def _signed_part(meta: Mapping[str, Any]) -> dict:
    "What the signature covers: the collection and each file's content check."
    return {
        "collection": meta["collection"],
        "files": {name: [c["size"], c["crc32"]] for name, c in meta["store"].items()},
    }


def _verify_store(store: Path, meta: Mapping[str, Any]) -> None:
    """Refuse a local store whose segment files are not what our last save
    left (truncated, zeroed, overwritten: Chroma's loader can crash on them),
    or that this user did not write (its pickle would be unpickled)."""
    if "store" not in meta:
        return  # saved before stores were checked
    try:
        signed = signing.is_signed(_signed_part(meta), meta.get("signature"))
    except (KeyError, TypeError, AttributeError):
        signed = False
    if not signed:
        raise DamagedFiles(
            "its Chroma store was not written by this user here (Chroma's files "
            "include a pickle, so only stores written here are opened)"
        )
    for name, check in meta["store"].items():
        verify_file(store, name, check)


@hookimpl
def register_vector_index_backends(register):
    register(ChromaIndex)
