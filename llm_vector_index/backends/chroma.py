"""``chroma``: a Chroma collection, in a local directory or on a Chroma server.

Local mode (the default) keeps a ``PersistentClient`` directory inside the
index's folder. Server mode (``-o host H -o port P``) talks to ``chroma run``
through ``HttpClient``: the way to grow past one machine. Vectors are stored
under our labels as ids, in a collection created with cosine space and no
embedding function (llm embeds; Chroma's default function would download a
model). ``import chromadb`` (about a second) happens only in here.
"""

from __future__ import annotations

import contextlib
import functools
import os
import time
import uuid
import warnings
from collections.abc import Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from ..base import (
    HNSW_SEARCH_WIDTHS,
    MAX_WIDTH,
    Capabilities,
    Option,
    Remote,
    Tunable,
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
    forget_local_system,
    server_errors,
    token_headers,
)
from ..errors import DamagedFiles, InvalidOptions
from ..hookspecs import hookimpl
from ..storage import exclusive_lock, file_identity, load_snapshot, save_snapshot
from .chroma_probe import probe

# Chroma reads ef_search only when it loads a collection's graph into a
# process, once: a value changed later (collection.modify) is stored but not
# searched with. A local store is therefore reloaded after a change, which
# stops Chroma's one System for that directory in this process; the count of
# reloads per directory tells every other open instance on it that its client
# is dead and it must reconnect. (A server keeps the graph it loaded: a new
# ef_search reaches its searches when it next loads the collection.)
_reloads: dict[str, int] = {}


def collection_name(index_name: str) -> str:
    "A valid Chroma collection name for an index, unique through a random suffix."
    return derive_name(f"llm-{index_name}", suffix=f"-{uuid.uuid4().hex[:8]}")


def _connect(settings: Mapping[str, Any], path: Path):
    return connect(
        path=path,
        host=settings["host"],
        port=settings["port"],
        ssl=settings["ssl"],
        headers=token_headers(_token(settings), settings["token_header"]),
    )


def _address(settings: Mapping[str, Any]) -> str:
    scheme = "https" if settings["ssl"] else "http"
    return f"{scheme}://{settings['host']}:{settings['port']}"


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


@contextmanager
def _no_legacy_config_warning():
    "Chroma warns about its own stored configuration when it is read: not ours to fix."
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        yield


def _server_call(method):
    "Run a method that talks to Chroma, with a dying server as one clear error."

    @functools.wraps(method)
    def call(self, *args, **kwargs):
        with server_errors(self.settings["host"], self.settings["port"]):
            return method(self, *args, **kwargs)

    return call


LOCKED_RETRIES = 4  # "database is locked" from Chroma's SQLite: tried again, 0.1 to 0.8 s apart


class ChromaIndex(VectorIndex):
    name = "chroma"
    options = (
        Option("host", str, "", "Chroma server host (default: a local directory)"),
        Option("port", int, 8000, "Chroma server port", 1, maximum=65535),
        Option("ssl", bool, False, "Connect to the server over https"),
        Option(
            "token_env",
            str,
            "",
            "Environment variable holding the server's auth token (never stored)",
        ),
        Option(
            "token_header",
            str,
            "Authorization",
            "Header for the token: Authorization (Bearer) or X-Chroma-Token",
        ),
        Option("ef_search", int, 100, "HNSW candidates explored per query", 1, maximum=MAX_WIDTH),
    )
    capabilities = Capabilities(
        exact=False,
        filtered_search=True,
        atomic_save=False,
        shareable=False,
        private_search_options=False,
    )

    @classmethod
    def validate_options(cls, values, dimensions=None):
        if "token" in values:
            raise InvalidOptions(
                "Tokens are never stored in the database: put it in an environment "
                "variable and pass its name, e.g. -o token_env CHROMA_TOKEN"
            )
        return super().validate_options(values, dimensions)

    @classmethod
    def remote(cls, settings):
        if not settings["host"]:
            return None
        secrets = (settings["token_env"],) if settings["token_env"] else ()
        return Remote("chroma", _address(settings), secrets)

    @classmethod
    def check_reachable(cls, settings):
        if settings["host"]:
            _connect(settings, Path()).close()

    def open(self) -> None:
        saved = load_snapshot(self.path)
        self._opened_files = None
        if saved is not None and not self.settings["host"]:
            _verify_store(self.path / "chroma", saved.meta)  # before Chroma reads it
            self._opened_files = saved.meta.get("store")
        if saved is not None:
            self._name = saved.meta["collection"]
        else:
            self._name = collection_name(self.path.name)
        self._attach()
        # A collection that exists keeps the ef_search it was made with: a
        # tuned value is applied here.
        with _no_legacy_config_warning():
            hnsw = (self._collection.configuration or {}).get("hnsw") or {}
        if hnsw.get("ef_search", self.settings["ef_search"]) != self.settings["ef_search"]:
            self._apply_ef_search(self.settings["ef_search"])
        self._batch = self._client.get_max_batch_size()
        # Chroma counts by scanning (about 10 ms at 100k rows): once per change.
        self._count: int | None = None

    @classmethod
    def tunable(cls, settings):
        return Tunable("ef_search", HNSW_SEARCH_WIDTHS)

    def set_search_option(self, name, value):
        super().set_search_option(name, value)
        if name == "ef_search":
            self._apply_ef_search(value)

    @_server_call
    def _apply_ef_search(self, value: int) -> None:
        from chromadb.errors import InternalError

        with self._write_lock(), _no_legacy_config_warning():
            for attempt in range(LOCKED_RETRIES + 1):
                try:
                    self._collection.modify(configuration={"hnsw": {"ef_search": value}})
                    break
                except InternalError as error:
                    # Chroma's own SQLite, busy with its own writes (seen once
                    # in a loaded test run, tuning's quick changes of setting):
                    # SQLite refuses at once where waiting could deadlock.
                    if attempt == LOCKED_RETRIES or "database is locked" not in str(error):
                        raise
                    time.sleep(0.1 * 2**attempt)
        if not self.settings["host"]:
            self._reload_store()

    def _attach(self) -> None:
        "Connect, and get (or create) our collection."
        self._client = _connect(self.settings, self.path / "chroma")
        self._handle = cosine_collection(
            self._client, self._name, ef_search=self.settings["ef_search"]
        )
        self._reloads_seen = _reloads.get(self._store_key, 0)

    @property
    def _store_key(self) -> str:
        return str(self.path / "chroma")  # Chroma's own key for a local System

    def _client_is_stale(self) -> bool:
        "Another instance reloaded our local store: our client is dead."
        return not self.settings["host"] and (
            _reloads.get(self._store_key, 0) != self._reloads_seen
        )

    def _reload_store(self) -> None:
        "Load the store afresh in this process, so that Chroma reads its ef_search again."
        _reloads[self._store_key] = _reloads.get(self._store_key, 0) + 1
        forget_local_system(self._store_key)
        self._attach()

    @property
    def _collection(self):
        if self._client_is_stale():
            self._attach()
        return self._handle

    @contextmanager
    def _write_lock(self):
        "A local Chroma directory must not be written by two processes at once."
        if self.settings["host"]:
            yield
            return
        with exclusive_lock(self.path / "chroma.lock"):
            yield

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
            meta["store"] = _store_files(self.path / "chroma")
        save_snapshot(self.path, {}, meta=meta)

    def close(self) -> None:
        if not self._client_is_stale():  # a dead client's close would release the new System
            self._client.close()
        if not self.settings["host"] and self._opened_files is not None:
            # Chroma may have rewritten its files while open: record them as
            # they are now, so the next open need not probe (if we may
            # write), unless the folder now holds another store (a rebuild
            # swapped in while this one was open).
            try:
                saved = load_snapshot(self.path)
                if (
                    saved is not None
                    and saved.meta.get("collection") == self._name
                    and _store_files(self.path / "chroma") != saved.meta.get("store")
                ):
                    self.save()
            except (OSError, DamagedFiles):
                pass

    @classmethod
    def keeps_data_elsewhere(cls, settings: Mapping[str, Any]) -> bool:
        return bool(settings["host"])  # a local store lives in the index folder

    def destroy(self) -> None:
        if self._client_is_stale():
            self._attach()
        # Already gone: chromadb has raised ValueError, NotFoundError and
        # InvalidCollectionException for it across versions.
        with contextlib.suppress(Exception):
            self._client.delete_collection(self._name)

    def describe(self) -> dict[str, Any]:
        where = _address(self.settings) if self.settings["host"] else str(self.path / "chroma")
        return {"chroma_collection": self._name, "chroma": where}


# chroma.sqlite3 changes whenever Chroma opens the store, and SQLite detects
# its own damage; the HNSW segment files are read by C++ code that trusts them.
UNCHECKED = ("chroma.sqlite3",)


def _store_files(store: Path) -> dict[str, list[int]]:
    "Each segment file's identity (see storage.file_identity)."
    return {
        str(path.relative_to(store)): list(file_identity(path).values())
        for path in sorted(store.rglob("*"))
        if path.is_file() and not path.name.startswith(UNCHECKED)
    }


def _verify_store(store: Path, meta: Mapping[str, Any]) -> None:
    """Chroma rewrites a local store's segment files when it opens it, so
    their content cannot be pinned. What this process or the last one that
    opened the store left is recorded; if the files are anything else
    (damaged, copied, or rewritten by a reader that could not record), the
    store is first opened in a child process, which must survive and answer
    right (see chroma_probe.py)."""
    if "store" not in meta or _store_files(store) == meta["store"]:
        return
    problem = probe(store, meta["collection"])
    if problem:
        raise DamagedFiles(f"its Chroma store fails its check: {problem}")


@hookimpl
def register_vector_index_backends(register):
    register(ChromaIndex)
