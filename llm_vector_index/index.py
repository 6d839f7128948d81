"""``Index``: one named vector index over llm collections.

It ties the catalog (what the index covers and holds), a backend (the vectors)
and the incremental scan together, and answers queries with llm ``Entry``
objects scored exactly as llm scores them.
"""

from __future__ import annotations

import json
import re
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import llm
from llm.embeddings import Entry
import numpy as np
from sqlite_utils import Database

from . import catalog, sync
from .base import VectorIndex
from .errors import (
    DimensionMismatch,
    IdNotFound,
    IndexExists,
    InvalidIndexName,
    ModelMismatch,
    NotBuilt,
    UnknownCollection,
    VectorIndexError,
)
from .build import Build, BuildReport, read_generation
from .registry import get_backend

DEFAULT_BACKEND = "faiss"
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")


@dataclass
class IndexEntry(Entry):
    "An llm ``Entry`` that also names the collection the row came from."

    collection: str | None = None


def indexes_directory(db: Database) -> Path:
    "Where the backends' files live: a folder beside the database file."
    path = catalog.database_path(db)
    if path is None:
        raise VectorIndexError("Vector indexes need a database file, not :memory:")
    return path.parent / f"{path.name}.vector-indexes"


class Index:
    """A vector index over one or more llm collections sharing a model.

    ``Index(name, db)`` opens an existing index; ``Index.create(...)`` makes one.
    """

    class DoesNotExist(VectorIndexError):
        pass

    def __init__(self, name: str, db: Database) -> None:
        self.db = db
        record = catalog.get_record(db, name)
        if record is None:
            raise self.DoesNotExist(f"Index {name!r} does not exist")
        self.record = record
        self._backend: VectorIndex | None = None

    # -- creating, finding, deleting ------------------------------------------

    @classmethod
    def exists(cls, db: Database, name: str) -> bool:
        return catalog.get_record(db, name) is not None

    @classmethod
    def create(
        cls,
        name: str,
        collections: Sequence[str],
        db: Database,
        *,
        backend: str = DEFAULT_BACKEND,
        options: dict[str, Any] | None = None,
    ) -> Index:
        """Define an index (nothing is read until ``build()``). Everything is
        checked before anything is written."""
        if not NAME_PATTERN.match(name or ""):
            raise InvalidIndexName(
                f"Invalid index name {name!r}: use letters, digits, '.', '_' or '-', "
                "starting with a letter or digit"
            )
        collections = list(dict.fromkeys(collections))
        if not collections:
            raise UnknownCollection("An index needs at least one collection")
        models = {}
        for collection in collections:
            row = sync.collection_row(db, collection)
            if row is None:
                raise UnknownCollection(f"Collection {collection!r} does not exist")
            models[collection] = row["model"]
        first = collections[0]
        for collection in collections[1:]:
            if models[collection] != models[first]:
                raise ModelMismatch(
                    f"Collections must share an embedding model: {first!r} uses "
                    f"{models[first]}, {collection!r} uses {models[collection]}"
                )
        backend_class = get_backend(backend).cls
        dimensions = sync.peek_dimensions(db, collections)
        settings = backend_class.validate_options(options or {}, dimensions)
        if cls.exists(db, name):
            raise IndexExists(f"Index {name!r} already exists")
        directory = indexes_directory(db)
        catalog.ensure_schema(db)
        catalog.insert_record(
            db,
            name=name,
            backend=backend,
            options=settings,
            model=models[first],
            dimensions=dimensions,
            collections=collections,
            created=time.time(),
        )
        # A folder left by an index of this name that was dropped by hand.
        shutil.rmtree(directory / name, ignore_errors=True)
        return cls(name, db)

    def delete(self) -> None:
        "Drop the index: its catalog rows, its files, and data kept elsewhere."
        retired = self.open_saved_backend()
        catalog.delete_record(self.db, self.record.id)
        if retired is not None:
            retired.destroy()
        self.close()
        shutil.rmtree(self.path, ignore_errors=True)
        self.lock_path.unlink(missing_ok=True)

    def close(self) -> None:
        if self._backend is not None:
            self._backend.close()
            self._backend = None

    # -- properties -------------------------------------------------------------

    @property
    def name(self) -> str:
        return self.record.name

    @property
    def collections(self) -> list[str]:
        return self.record.collections

    @property
    def path(self) -> Path:
        "The folder holding this index's backend files."
        return indexes_directory(self.db) / self.name

    @property
    def lock_path(self) -> Path:
        "Held while a build runs: one build at a time per index."
        return indexes_directory(self.db) / f".{self.name}.lock"

    def count(self) -> int:
        "Rows in the index as of its last build."
        return self.record.rows

    def reload(self) -> None:
        "Read the catalog row again (after a build, or another process's)."
        record = catalog.get_record(self.db, self.name)
        if record is None:
            raise self.DoesNotExist(f"Index {self.name!r} does not exist")
        self.record = record

    def new_backend(self, path: Path, dimensions: int) -> VectorIndex:
        "A backend of this index's kind and options, opening what is in ``path``."
        backend_class = get_backend(self.record.backend).cls
        return backend_class(path, dimensions, self.record.metric, self.record.options)

    def backend(self) -> VectorIndex | None:
        "The backend as last saved (None before the first build with rows)."
        if self._backend is None and self.record.dimensions:
            self._backend = self.new_backend(self.path, self.record.dimensions)
        return self._backend

    # -- building -------------------------------------------------------------

    def build(
        self, full: bool = False, progress: Callable[[int, int], None] | None = None
    ) -> BuildReport:
        """Bring the index up to date with the rows now in its collections.

        Incremental unless ``full`` (or the saved files disagree with the
        catalog, e.g. after a crash mid-build). ``progress(rows, total)`` is
        called as each batch of rows is indexed. The backend is saved before
        the catalog commits, so an interrupted build leaves the previous state
        usable or visibly stale.
        """
        return Build(self, progress).run(full)

    def open_saved_backend(self) -> VectorIndex | None:
        "The backend as saved, or None if there is none or it cannot be opened."
        if not self.record.built:
            return None
        try:
            return self.backend()
        except Exception:  # damaged files are what a full rebuild replaces
            return None

    def files_match_catalog(self, backend: VectorIndex) -> bool:
        "False after a build that saved files but did not commit the catalog."
        return (
            read_generation(self.path) == self.record.generation
            and backend.count() == self.record.rows
        )

    # -- queries --------------------------------------------------------------

    def similar(
        self, value: str | bytes, number: int = 10, prefix: str | None = None
    ) -> list[IndexEntry]:
        "Embed ``value`` with the index's model and return the nearest rows."
        try:
            model = llm.get_embedding_model(self.record.model)
        except llm.UnknownModelError:
            raise VectorIndexError(
                f"Embedding model {self.record.model!r} of index {self.name!r} is not "
                "installed: query by ID or vector, or install its plugin"
            ) from None
        vector = model.embed(value)
        return self.similar_by_vector(vector, number, prefix=prefix)

    def similar_by_id(
        self, id: str, number: int = 10, prefix: str | None = None
    ) -> list[IndexEntry]:
        """Rows nearest to the stored row ``id`` (itself excluded). In an index
        over several collections, the first collection holding ``id`` is used."""
        for collection in self.collections:
            row = self.db.execute(
                "select c.id, e.embedding from embeddings e "
                "join collections c on c.id = e.collection_id "
                "where c.name = ? and e.id = ?",
                [collection, id],
            ).fetchone()
            if row is not None:
                vector = np.frombuffer(row[1], dtype="<f4")
                return self._search(vector, number, prefix, skip={(row[0], id)})
        raise IdNotFound(f"ID {id!r} not found in index {self.name!r}")

    def similar_by_vector(
        self,
        vector: Sequence[float] | np.ndarray,
        number: int = 10,
        skip_id: str | None = None,
        prefix: str | None = None,
    ) -> list[IndexEntry]:
        "Rows nearest to ``vector``; ``skip_id`` excludes that id (as in llm)."
        skip = {(None, skip_id)} if skip_id is not None else set()
        return self._search(vector, number, prefix, skip)

    def _search(self, vector, number, prefix, skip) -> list[IndexEntry]:
        if not isinstance(number, int) or number < 1:
            raise VectorIndexError(f"number must be a positive integer, got {number!r}")
        query = np.asarray(vector, dtype=np.float32).reshape(-1)
        dimensions = self.record.dimensions
        if self.record.built is None:
            raise NotBuilt(
                f"Index {self.name!r} has not been built: run llm index build {self.name}"
            )
        if dimensions is None:
            return []  # built, but its collections were empty
        if query.shape != (dimensions,):
            raise DimensionMismatch(
                f"Query vector has {query.size} dimensions, index {self.name!r} "
                f"has {dimensions}"
            )
        backend = self.backend()
        if not self.files_match_catalog(backend):
            raise VectorIndexError(
                f"Index {self.name!r} files do not match its catalog (an interrupted "
                f"build?): run llm index build {self.name}"
            )
        allowed = self._prefix_labels(prefix) if prefix else None
        if allowed is not None and len(allowed) == 0:
            return []
        available = backend.count() if allowed is None else len(allowed)
        k = number + len(skip)
        while True:
            _, labels = backend.search(query.reshape(1, -1), k, allowed)
            entries = self._entries(labels[0], query, skip)
            # Rows deleted since the build are dropped: fetch more until enough.
            if len(entries) >= number or k >= available:
                return entries[:number]
            k = min(available, k * 2)

    def _prefix_labels(self, prefix: str) -> np.ndarray:
        # The same LIKE as llm, so the same ASCII case-insensitivity and wildcards.
        rows = self.db.execute(
            "select label from vector_index_labels where index_id = ? "
            "and id like ? || '%'",
            [self.record.id, prefix],
        ).fetchall()
        return np.array([row[0] for row in rows], dtype=np.int64)

    def _entries(self, labels: np.ndarray, query: np.ndarray, skip) -> list[IndexEntry]:
        """Rows for these labels, re-scored exactly as llm scores them (cosine
        over the stored float32 values, in double precision), best first."""
        if len(labels) == 0:
            return []
        rows = self.db.execute(
            f"""
            select l.label, l.collection_id, c.name, e.id, e.content, e.metadata,
                   e.embedding
            from vector_index_labels l
            join embeddings e on e.collection_id = l.collection_id and e.id = l.id
            join collections c on c.id = l.collection_id
            where l.index_id = ? and l.label in ({','.join('?' * len(labels))})
            """,
            [self.record.id, *labels.tolist()],
        ).fetchall()
        rows = [
            row for row in rows
            if (row[1], row[3]) not in skip and (None, row[3]) not in skip
            and row[6] is not None and len(row[6]) == 4 * len(query)
        ]
        if not rows:
            return []
        vectors = np.frombuffer(b"".join(row[6] for row in rows), dtype="<f4")
        vectors = vectors.reshape(len(rows), len(query)).astype(np.float64)
        query64 = query.astype(np.float64)
        norms = np.linalg.norm(vectors, axis=1) * np.linalg.norm(query64)
        scores = np.divide(
            vectors @ query64, norms, out=np.zeros(len(rows)), where=norms > 0
        )
        show_collection = len(self.collections) > 1
        entries = [
            IndexEntry(
                id=row[3],
                score=float(score),
                content=row[4],
                metadata=json.loads(row[5]) if row[5] else None,
                collection=row[2] if show_collection else None,
            )
            for row, score in zip(rows, scores)
        ]
        entries.sort(key=lambda entry: entry.score, reverse=True)
        return entries
