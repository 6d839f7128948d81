"""Which backend instance an ``Index`` holds, and how it is opened.

An index's files are opened in one of three ways:

- **shared**, for queries: read-only, and handed to every ``Index`` of the
  same index in the process (open_indexes.py) until a build moves its
  generation; never closed by one ``Index``;
- **private**, for one caller alone: a build that changes it, tuning and
  sweeps that try settings on it, a drop that destroys what it keeps
  elsewhere;
- **adopted**: the instance a build in this process has just saved and
  committed, offered to the rest of the process for queries.

Whatever is opened is first checked against the catalog: files of another
generation are never handed to a loader (they may even be of another kind),
and a loader's error on bad bytes becomes ``DamagedFiles`` naming the fix.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Protocol

from sqlite_utils import Database

from . import keywords, open_indexes
from .base import VectorIndex
from .errors import DamagedFiles, VectorIndexError, first_line
from .generations import read_generation, reading_lock
from .records import IndexRecord


class HeldIndex(Protocol):
    """What a Holder needs of the index it holds files for (``Index`` is one):
    where its files are and whose they are, its catalog row read again, and
    a backend of its kind constructed."""

    db: Database
    record: IndexRecord

    @property
    def name(self) -> str: ...
    @property
    def path(self) -> Path: ...
    @property
    def identity(self) -> str: ...
    @property
    def backend_class(self) -> type[VectorIndex]: ...
    def reload(self) -> None: ...
    def new_backend(
        self, path: Path, dimensions: int, *, read_only: bool = False
    ) -> VectorIndex: ...


class FilesMismatch(DamagedFiles):
    "Raised before any loader sees the files: they may be of another kind."


class Holder:
    "The backend one ``Index`` holds open, if any."

    def __init__(self, index: HeldIndex) -> None:
        self.index = index
        self._backend: VectorIndex | None = None
        self._shared = False  # from open_indexes: never closed here
        self._releases = 0  # open_indexes.releases when it was handed over
        self._opened_generation: int | None = None  # of the files _backend holds
        # The keyword index (keywords.py) open for queries, and its generation.
        self._keywords: keywords.KeywordIndex | None = None
        self._keywords_generation: int | None = None

    @property
    def is_open(self) -> bool:
        return self._backend is not None

    def backend(self) -> VectorIndex | None:
        """The backend as last saved, for queries (None before the first
        build with rows: an index never built has no files to open, even
        where its dimensions are known from create), shared when the
        backend allows it."""
        if self._shared and self._releases != open_indexes.releases:
            self._backend, self._shared = None, False  # maybe closed since
        record = self.index.record
        if self._backend is None and record.built and record.dimensions:
            shareable = self._is_shareable()
            self._backend = self._open(shared=shareable)
            self._shared = shareable
            self._releases = open_indexes.releases
        return self._backend

    def private(self) -> VectorIndex | None:
        """The backend as saved, opened for this caller alone (to change or to
        destroy), or None if there is none or it cannot be opened."""
        if not self.index.record.built:
            return None
        if self._backend is not None and not self._shared:
            return self.detach()
        self.close()
        try:
            return self._open(shared=False)
        except DamagedFiles:
            return None

    def for_build(self) -> VectorIndex | None:
        """The backend as saved, for a build to change: never the shared one
        that queries may be searching. None if it cannot be opened (what a
        full rebuild replaces) or its files are not the catalog's."""
        backend = self.private()
        if backend is None or self.matches_catalog(backend):
            return backend
        backend.close()
        return None

    def adopt(self, backend: VectorIndex) -> None:
        """Hold ``backend``, which a build in this process has just saved and
        committed (and still holds the commit lock), and offer it to the rest
        of the process for queries."""
        self.close()
        self._backend, self._opened_generation = backend, self.index.record.generation
        self._shared = self._is_shareable()
        self._releases = open_indexes.releases
        if self._shared:
            open_indexes.offer(self._shared_key(), self._shared_version(), backend)

    def detach(self) -> VectorIndex | None:
        "Hand over the open backend (the caller closes it); the next use reopens."
        if self._shared:
            raise VectorIndexError("a shared backend cannot be handed over")
        backend, self._backend = self._backend, None
        return backend

    def close(self) -> None:
        "Let go of the backend; a shared one stays open for the rest of the process."
        backend, self._backend = self._backend, None
        if backend is not None and not self._shared:
            backend.close()
        self._shared = False
        if self._keywords is not None:
            self._keywords.close()
            self._keywords = None

    def keywords(self) -> keywords.KeywordIndex:
        """The keyword index as the last build saved it, for queries, checked
        against the catalog as the backend's files are (its generation, its
        count of rows); the caller has checked that it was built."""
        index = self.index
        if self._keywords is not None and self._keywords_generation == index.record.generation:
            return self._keywords
        if self._keywords is not None:
            self._keywords.close()
            self._keywords = None
        with reading_lock(index.db, index.name):
            generation = read_generation(index.path, index.identity)
            if generation != index.record.generation:
                index.reload()
            record = index.record
            if (
                generation != record.generation
                or record.keyword_rows is None
                or record.keywords is None
            ):
                raise self.mismatch()
            try:
                opened = keywords.KeywordIndex.open(
                    index.path / keywords.FOLDER, record.keywords["tokenizer"]
                )
            except DamagedFiles as error:
                raise self._damaged(str(error)) from None
            if opened.count() != record.keyword_rows:
                opened.close()
                raise self.mismatch()
        self._keywords, self._keywords_generation = opened, generation
        return opened

    def release_shared(self) -> None:
        "Close the process's shared instance too (the index is going away)."
        open_indexes.release(self._shared_key())

    def reopen(self) -> VectorIndex | None:
        """Read the catalog again and reopen the files, both as one build left
        them (waiting out another process's save-to-commit window)."""
        with reading_lock(self.index.db, self.index.name):
            self.close()
            self.index.reload()
            return self.backend()

    def matches_catalog(self, backend: VectorIndex) -> bool:
        """Were the open files saved by the build the catalog records? False
        after a build that saved files but did not commit the catalog. The
        generation is the one read when the files were opened: a later build
        by another process replaces files, not what this process has open."""
        return (
            self._opened_generation == self.index.record.generation
            and backend.count() == self.index.record.rows
        )

    def mismatch(self) -> DamagedFiles:
        "The files are not the ones the catalog records (a build was interrupted)."
        name = self.index.name
        return FilesMismatch(
            f"Index {name!r} files do not match its catalog (an interrupted "
            f"build?): run llm index build {name}"
        )

    def _shared_key(self) -> open_indexes.Key:
        return (str(self.index.path), self.index.identity)

    def _shared_version(self) -> tuple:
        """What a shared backend must match: the committed generation its files
        were checked against when opened, and the options it opened with."""
        record = self.index.record
        return (record.generation, json.dumps(record.options, sort_keys=True))

    def _is_shareable(self) -> bool:
        return self.index.backend_class.capabilities.shareable

    def _open(self, shared: bool) -> VectorIndex:
        index = self.index
        if shared:
            # Opened before by this process, from files that were the ones the
            # catalog then recorded as this generation: no file need be read.
            backend = open_indexes.peek(self._shared_key(), self._shared_version())
            if backend is not None:
                self._opened_generation = index.record.generation
                return backend
        path = index.path
        dimensions = index.record.dimensions
        if dimensions is None:  # built over no rows: no files to open
            raise self.mismatch()
        try:
            with reading_lock(index.db, index.name):  # not in the middle of another build's commit
                generation = read_generation(path, index.identity)
                if generation != index.record.generation:
                    index.reload()  # another process may have committed since
                if generation != index.record.generation:
                    raise self.mismatch()
                if shared:
                    backend = open_indexes.get(
                        self._shared_key(),
                        self._shared_version(),
                        lambda: index.new_backend(path, dimensions, read_only=True),
                    )
                else:
                    backend = index.new_backend(path, dimensions)
                self._opened_generation = generation
                return backend
        except FilesMismatch:
            raise
        except VectorIndexError as error:
            if not isinstance(error, DamagedFiles):
                raise  # e.g. a Chroma server that is down: not damage
            raise self._damaged(str(error)) from None
        except (KeyboardInterrupt, SystemExit):
            raise
        except BaseException as error:  # noqa: BLE001 (a loader's error on bad bytes:
            # Rust panics surface as BaseException subclasses)
            raise self._damaged(f"{type(error).__name__}: {first_line(error)}") from None

    def _damaged(self, reason: str) -> DamagedFiles:
        name = self.index.name
        return DamagedFiles(
            f"Index {name!r} cannot be opened, its files are damaged ({reason}): "
            f"run llm index build {name} to rebuild it from the collections"
        )
