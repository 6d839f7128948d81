"""``Index``: one named vector index over llm collections.

It ties the catalog (what the index covers and holds), a backend (the vectors,
held open as holding.py says) and the incremental scan together, and answers
queries with llm ``Entry`` objects scored exactly as llm scores them.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import click
import llm
import numpy as np
from sqlite_utils import Database

from . import (
    approvals,
    batch,
    catalog,
    freshness,
    hybrid,
    metadata_indexes,
    paths,
    query,
    related,
    reuse,
    sync,
    tuning,
)
from . import evaluate as evaluation
from . import keywords as keyword_index
from .base import Remote, VectorIndex
from .build import Build, BuildReport
from .errors import (
    CannotWrite,
    DamagedCatalog,
    IdNotFound,
    IndexBusy,
    IndexExists,
    InvalidOptions,
    UnknownBackend,
    VectorIndexError,
    first_line,
)
from .filters import ROW_COLUMNS
from .generations import build_lock
from .holding import Holder
from .query import IndexEntry
from .registry import get_backend
from .related import RelatedReport, RelatedRow

DEFAULT_BACKEND = "auto"


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
            raise self.DoesNotExist(
                f"Index {name!r} does not exist (llm index list shows the indexes)"
            )
        self.record = record
        self.holder = Holder(self)  # the backend it holds open (holding.py)
        # False: a stale index answers from its last build (with a warning)
        # instead of building first, whatever its refresh mode (SQL functions
        # run inside a SELECT, where a build must not write).
        self.may_build = True
        self._label_hints: bool | None = None
        # The database's state (reuse.state) when a query last found this
        # index current, with the generation it had: while neither moves, it
        # still is, and a query skips freshness's statement (30 us at 100k).
        self._current_at: tuple | None = None

    @property
    def label_hints(self) -> bool:
        "Does the label map keep row hints (read once, and after each reload)?"
        if self._label_hints is None:
            self._label_hints = catalog.has_label_hints(self.db)
        return self._label_hints

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
        refresh: str = "auto",
        default: bool = False,
        keywords: bool | dict[str, Any] = False,
        metadata_keys: Sequence[str] = (),
    ) -> Index:
        """Define an index (nothing is read until ``build()``). Everything is
        checked before anything is written. ``keywords``: keep a keyword index
        beside the vectors (True, or settings: see ``set_keywords``);
        ``metadata_keys``: index these metadata keys (see ``index_metadata``)."""
        paths.check_name(name)
        metadata_keys = metadata_indexes.check_keys(db, metadata_keys)
        _check_refresh(refresh)
        keyword_settings = keyword_index.settings(keywords)
        if keyword_settings:
            keyword_index.tantivy_module()  # installed: said now, not at the first build
        collections = list(dict.fromkeys(collections))
        rows = sync.check_collections(db, collections)
        model = rows[collections[0]]["model"]
        backend_class = get_backend(backend).cls
        dimensions = sync.peek_dimensions(db, collections)
        backend_class.check_user_options(options or {})
        settings = backend_class.validate_options(options or {}, dimensions)
        if cls.exists(db, name):
            raise IndexExists(f"Index {name!r} already exists")
        folder = paths.index_path(db, name)
        paths.check_ours_or_absent(folder)
        backend_class.check_reachable(settings)
        if dimensions:  # the first build applies it; a size nothing fits is refused now
            row_ids = [row["id"] for row in rows.values()]
            backend_class.settings_for_rows(settings, sync.row_count(db, row_ids), dimensions)
        tunable = backend_class.tunable(settings)
        # A value the user chose for the tunable option is kept, untuned.
        chosen_by_user = tunable is not None and tunable.option in (options or {})
        remote = backend_class.remote(settings)
        if remote is not None:  # the user named this server here: approved
            approvals.approve(db, name, remote)
        catalog.ensure_schema(db)
        catalog.insert_record(
            db,
            name=name,
            backend=backend,
            options=settings,
            model=model,
            dimensions=dimensions,
            collections=collections,
            created=time.time(),
            refresh=refresh,
            target_recall=None if chosen_by_user else backend_class.default_target_recall,
            keywords=keyword_settings,
        )
        # A folder left by an index of this name whose catalog row was deleted.
        paths.remove_tree(folder)
        index = cls(name, db)
        if metadata_keys:
            try:
                index.index_metadata(metadata_keys)
            except VectorIndexError:  # (rows whose metadata is not JSON): nothing stays
                catalog.delete_record(db, index.record.id)
                approvals.withdraw(db, name)
                raise
        if default:
            for collection in collections:
                index.set_default(collection)
        return index

    def delete(self, keep_remote: bool = False) -> str | None:
        """Drop the index: its catalog rows, its files, and data kept elsewhere
        (a collection on a Chroma server, which must be reachable, unless
        ``keep_remote``: then that data is left where it is). Returns why data
        on a server was left there unasked, or None.

        A catalog row whose name is not a valid name (a crafted database) owns
        no files: only the row goes. Files are deleted only from a folder the
        plugin made, inside the index folder. A server this machine never
        approved is not contacted.
        """
        if not paths.is_valid_name(self.record.name):
            catalog.delete_record(self.db, self.record.id)
            return None
        path = self.path  # checked before anything changes
        if paths.is_ours(path):
            paths.check_removable(path)
        left = None  # why data kept elsewhere stays there, if it does
        try:
            remote, elsewhere = self.remote(), self.keeps_data_elsewhere()
        except UnknownBackend:
            remote, elsewhere = None, False
            left = f"its backend {self.record.backend!r} is not installed to remove it"
        except InvalidOptions as error:  # hand-edited: they cannot name a server to trust
            remote, elsewhere = None, False
            left = f"its options are not valid ({error}), so no server was contacted"
        if not keep_remote and remote and not approvals.is_approved(self.db, self.name, remote):
            left = f"this machine never approved its {remote.describe()}, so it was not contacted"
        opening = not keep_remote and left is None and elsewhere
        retired = self.holder.private() if opening else None
        catalog.delete_record(self.db, self.record.id)
        approvals.withdraw(self.db, self.name)
        if retired is not None:
            retired.destroy()
            retired.close()
        self.close()
        self.holder.release_shared()
        paths.remove_index_files(self.db, self.name)
        return left

    @classmethod
    def drop(cls, db: Database, name: str, keep_remote: bool = False) -> str | None:
        """Drop the index of this name (see ``delete``), even one whose catalog
        row cannot be read: then its rows and files go, and data it may keep
        on a server stays (its row cannot say where). Returns why data kept
        elsewhere was left there, or None."""
        try:
            index = cls(name, db)
        except DamagedCatalog:
            catalog.delete_named(db, name)
            if paths.is_valid_name(name):
                approvals.withdraw(db, name)
                paths.remove_index_files(db, name)
            return "its catalog row was damaged, so no server it may name was contacted"
        return index.delete(keep_remote=keep_remote)

    def approve(self) -> Remote:
        """Let this index contact the server its catalog row names, with the
        secret variable it names (see approvals.py): for a database that
        arrived from elsewhere. Returns what was approved."""
        remote = self.remote()
        if remote is None:
            raise VectorIndexError(
                f"Index {self.name!r} ({self.record.backend}) contacts no server: "
                "there is nothing to approve"
            )
        approvals.approve(self.db, self.name, remote)
        return remote

    def withdraw_approval(self) -> bool:
        "Forget this machine's approval of the index's server; True if it had one."
        return approvals.withdraw(self.db, self.name)

    def remote(self) -> Remote | None:
        "The server the catalog row names (a host to contact, secrets to read), if any."
        return approvals.remote_of(self.backend_class, self.record.options, self.record.dimensions)

    def close(self) -> None:
        """Let go of the open backend; the next use opens it again. A backend
        shared with the rest of the process (see open_indexes.py) stays open
        for the next ``Index`` of this index: ``close_indexes()`` closes those."""
        self.holder.close()

    def __enter__(self) -> Index:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    # -- properties -------------------------------------------------------------

    @property
    def name(self) -> str:
        return self.record.name

    @property
    def collections(self) -> list[str]:
        return self.record.collections

    @property
    def path(self) -> Path:
        """The folder holding this index's backend files. The name comes from
        the database, so it is checked here, where every file access starts."""
        return paths.index_path(self.db, self.name)

    @property
    def lock_path(self) -> Path:
        "Held while a build runs: one build at a time per index."
        return paths.lock_path(self.db, self.name)

    @property
    def identity(self) -> str:
        """Names this index among all others (written beside its files), and
        no index made later under its name: SQLite reuses a dropped row's id."""
        return catalog.identity(self.record.id, self.record.created)

    def count(self) -> int:
        "Rows in the index as of its last build."
        return self.record.rows

    def reload(self) -> None:
        "Read the catalog row again (after a build, or another process's)."
        record = catalog.get_record(self.db, self.name)
        if record is None:
            raise self.DoesNotExist(
                f"Index {self.name!r} does not exist (llm index list shows the indexes)"
            )
        self.record = record
        self._label_hints = None  # a build may have upgraded the catalog

    @property
    def backend_class(self) -> type[VectorIndex]:
        "The registered class of this index's backend (``UnknownBackend`` if gone)."
        return get_backend(self.record.backend).cls

    @property
    def settings(self) -> dict[str, Any]:
        """The index's options as its backend validates them: read from the
        database, they are checked as strictly as options typed here."""
        return self.backend_class.validate_options(self.record.options, self.record.dimensions)

    def new_backend(self, path: Path, dimensions: int, *, read_only: bool = False) -> VectorIndex:
        """A backend of this index's kind and options, opening what is in
        ``path``; refused before it is constructed if the options name a
        server this machine has not approved for this index (approvals.py)."""
        approvals.require(self.db, self.name, self.remote())
        return self.backend_class(
            path, dimensions, self.record.metric, self.record.options, read_only=read_only
        )

    def backend(self) -> VectorIndex | None:
        """The backend as last saved, for queries (None before the first build
        with rows): opened read-only and shared with every ``Index`` of this
        index in the process until a build moves its generation. Files that
        cannot be opened raise ``DamagedFiles`` naming the fix."""
        return self.holder.backend()

    # -- building -------------------------------------------------------------

    def build(
        self,
        full: bool = False,
        progress: Callable[[int, int], None] | None = None,
        *,
        verify: bool = False,
        target_recall: float | None = None,
    ) -> BuildReport:
        """Bring the index up to date with the rows now in its collections.

        Incremental unless ``full`` (or the saved files disagree with the
        catalog, e.g. after a crash mid-build). ``verify`` compares every
        row's vector with what was indexed (reads every vector, embeds
        nothing): it also finds rows changed in place by a plain SQL UPDATE,
        which the incremental scan cannot see. ``progress(rows, total)`` is
        called as each batch of rows is indexed. The backend is saved before
        the catalog commits, so an interrupted build leaves the previous state
        usable or visibly stale.

        ``target_recall`` (e.g. 0.95) tunes the index to that recall@10 after
        building (see tuning.py) and keeps it: later builds tune again once
        the row count has moved by a fifth.
        """
        if target_recall is not None:
            target_recall = tuning.check_target(target_recall)
        report = Build(self, progress, verify=verify).run(full)
        target = target_recall if target_recall is not None else self.record.target_recall
        # needs_tuning is only true for an index that has a target
        if (
            self.record.rows
            and target is not None
            and (target_recall is not None or tuning.needs_tuning(self))
        ):
            report.tuning = self.tune(target)
        return report

    def tune(self, target: float = tuning.DEFAULT_TARGET, **settings) -> tuning.Tuning:
        """Keep the cheapest search-time setting whose recall@10 on held-out
        queries meets ``target`` (see tuning.py); returns what was measured."""
        return tuning.tune(self, target, **settings)

    def evaluate(self, **settings) -> evaluation.Evaluation:
        """Recall@k against an exact scan, and latency (see evaluate.evaluate:
        ``queries``, ``k``, ``seed``, ``queries_from``, ``query_texts``)."""
        result = evaluation.evaluate(self, **settings)
        assert isinstance(result, evaluation.Evaluation)  # one index in, one out
        return result

    def keeps_data_elsewhere(self) -> bool:
        "Does the backend keep data outside the index folder (``destroy()``)?"
        return self.backend_class.keeps_data_elsewhere(self.settings)

    # -- freshness ----------------------------------------------------------------

    def collection_ids(self, only: str | None = None) -> list[int]:
        "Ids of the covered collections that exist now (or just ``only``)."
        if only is not None and only not in self.collections:
            raise VectorIndexError(f"Index {self.name!r} does not cover collection {only!r}")
        names = [only] if only is not None else self.collections
        try:
            ids = dict(
                self.db.execute(
                    f"select name, id from collections where name in ({','.join('?' * len(names))})",
                    names,
                ).fetchall()
            )
        except sqlite3.OperationalError as error:
            if "no such table" not in str(error):
                raise
            return []  # no collection was ever made in this database
        return [ids[name] for name in names if name in ids]

    def is_current(self) -> bool:
        "Has nothing been added to or changed in its collections since its last build?"
        state = freshness.read_state(self.db, self.record.id, self.collections)
        return freshness.is_current(self.record.fingerprint, state)

    def ensure_fresh(self) -> None:
        """Make sure a query will not miss rows added since the last build.

        Cheap when nothing changed (see freshness.py). With refresh "auto" a
        stale index is first brought up to date; with "manual", or when the
        database cannot be written, the query answers from the last build and
        says so on stderr, once per index and process.
        """
        database_state = reuse.state(self.db)
        if self._current_at == (database_state, self.record.generation, self.record.created):
            return  # nothing was written or committed since it was current
        state = freshness.read_state(self.db, self.record.id, self.collections)
        if (state.generation, state.created) != (self.record.generation, self.record.created):
            # Another process built since, or dropped the index and made
            # another of its name (which may get the same id and generation):
            # use what the catalog holds now, never these files with its labels.
            self.holder.reopen()
            state = freshness.read_state(self.db, self.record.id, self.collections)
        if self.record.built is None:
            return
        if freshness.is_current(self.record.fingerprint, state):
            self._current_at = (database_state, self.record.generation, self.record.created)
            return
        failed = ""
        if (
            self.may_build
            and self.record.refresh == "auto"
            and catalog.is_writable(self.db, self.record.id)
        ):
            try:
                self.build()
                return
            except IndexBusy:
                pass  # another process is building: answer from what is saved
            except CannotWrite as error:  # a full disk, a read-only mount: the same
                failed = f"; bringing it up to date failed: {error}"
        key = (str(self.path), self.record.generation)
        if key not in _warned:
            _warned.add(key)
            changes = sync.find_changes(
                self.db,
                self.record.id,
                state.collection_ids,
                self.record.watermark,
                (self.record.fingerprint or {}).get("rowid"),
            )
            click.echo(
                f"Warning: index {self.name!r} is behind its collections "
                f"({_rows(changes.upsert_count)} added or changed, "
                f"{len(changes.deleted_labels)} deleted since its last build{failed}); "
                f"run llm index build {self.name}",
                err=True,
            )

    def set_keywords(self, keywords: bool | dict[str, Any] = True) -> None:
        """Keep a keyword index beside the vectors (True: the defaults; or
        settings: tokenizer, fusion, weight, depth), or none (False: its files
        go). The next build fills it (a full build) unless only the fusion
        settings changed."""
        settings = keyword_index.settings(keywords)
        if settings:
            keyword_index.tantivy_module()
        with build_lock(self.db, self.name):
            self.reload()
            old = self.record.keywords
            same_text = (
                old is not None
                and settings is not None
                and old["tokenizer"] == settings["tokenizer"]
            )
            catalog.set_keywords(self.db, self.record.id, settings, keep_rows=same_text)
            if settings is None:
                paths.remove_tree(self.path / keyword_index.FOLDER)
            self.reload()

    def set_refresh(self, mode: str) -> None:
        "``auto``: queries bring a stale index up to date first; ``manual``: they warn."
        _check_refresh(mode)
        self.db.execute(
            "update vector_indexes set refresh = ? where id = ?", [mode, self.record.id]
        )
        self.db.conn.commit()
        self.reload()

    # -- metadata indexes ---------------------------------------------------

    @property
    def metadata_keys(self) -> list[str]:
        "The metadata keys indexed on llm's table for this index's filters."
        return metadata_indexes.keys_of(self.db, self.record.id)

    def index_metadata(self, keys: Sequence[str]) -> list[str]:
        """Index these metadata keys on llm's table (an SQLite index on each),
        so that a filter on them (``where={KEY: value}``) finds its rows in
        that index rather than by reading every row's JSON. Returns the keys
        whose SQLite index this made (the rest were there already)."""
        keys = metadata_indexes.check_keys(self.db, keys)  # before the schema is written
        catalog.ensure_schema(self.db)
        return metadata_indexes.add(self.db, self.record.id, keys, checked=True)

    def drop_metadata(self, keys: Sequence[str] | None = None) -> list[str]:
        """Stop indexing these metadata keys (None: all this index's). An
        SQLite index the plugin made goes once no index asks for its key.
        Returns the keys whose SQLite index went."""
        return metadata_indexes.drop(self.db, self.record.id, self.name, keys)

    # -- default index ----------------------------------------------------------

    def set_default(self, collection: str | None = None) -> None:
        """Make this the default index of ``collection`` (optional for an index
        over one collection): ``collection.similar()`` and ``llm similar`` use it."""
        if collection is None:
            if len(self.collections) > 1:
                raise VectorIndexError(f"Index {self.name!r} covers several collections: name one")
            collection = self.collections[0]
        if collection not in self.collections:
            raise VectorIndexError(f"Index {self.name!r} does not cover collection {collection!r}")
        catalog.set_default(self.db, collection, self.record.id)

    def defaults(self) -> list[str]:
        "The collections whose default index this is."
        return catalog.defaults_of(self.db, self.record.id)

    @classmethod
    def default_for(cls, db: Database, collection: str) -> Index | None:
        "The collection's default index, or None."
        name = catalog.default_index_name(db, collection)
        return cls(name, db) if name else None

    @staticmethod
    def clear_default(db: Database, collection: str) -> None:
        catalog.clear_default(db, collection)

    # -- queries --------------------------------------------------------------

    def similar(
        self,
        value: str | bytes,
        number: int = 10,
        prefix: str | None = None,
        *,
        collection: str | None = None,
        where: dict[str, Any] | None = None,
        mode: str | None = None,
        **fusion_settings: Any,
    ) -> list[IndexEntry]:
        """Embed ``value`` with the index's model and return the nearest rows.
        ``mode``: vector, keyword (embeds nothing) or hybrid, the default for
        an index with keywords; ``fusion``, ``weight``, ``depth`` override
        the index's fusion settings for this query (see fusion.py)."""
        return hybrid.answer(
            self,
            value,
            number,
            mode,
            lambda: self._embed(value),
            prefix=prefix,
            collection=collection,
            where=where,
            settings=fusion_settings,
        )

    def _embed(self, value: str | bytes) -> Any:
        "``value`` embedded with the index's model; its failures in one line."
        try:
            model = llm.get_embedding_model(self.record.model)
        except llm.UnknownModelError:
            raise VectorIndexError(
                f"Embedding model {self.record.model!r} of index {self.name!r} is not "
                "installed: query by ID or vector, or install its plugin"
            ) from None
        try:
            return model.embed(value)
        except Exception as error:  # noqa: BLE001 (no key, the provider's error: one line)
            raise VectorIndexError(
                f"Embedding the query with {self.record.model} failed: {first_line(error)}"
            ) from None

    def similar_by_id(
        self,
        id: str,
        number: int = 10,
        prefix: str | None = None,
        *,
        collection: str | None = None,
        where: dict[str, Any] | None = None,
    ) -> list[IndexEntry]:
        """Rows nearest to the stored row ``id`` (itself excluded). In an index
        over several collections, the first collection holding ``id`` is used,
        unless ``collection`` names one (and restricts the results to it)."""
        row = self._stored_row(id, collection)
        return query.search(
            self,
            np.frombuffer(row[5], dtype="<f4"),
            number,
            prefix=prefix,
            skip=frozenset({(row[0], id)}),
            collection=collection,
            where=where,
        )

    def get(self, id: str, collection: str | None = None) -> IndexEntry:
        """The stored row ``id`` as an entry (no score), from the first covered
        collection holding it, or from ``collection``."""
        row = self._stored_row(id, collection)
        return IndexEntry(
            id=id,
            score=None,
            content=row[3],
            metadata=json.loads(row[4]) if row[4] else None,
            collection=row[1] if len(self.collections) > 1 else None,
        )

    def _stored_row(self, id: str, collection: str | None) -> tuple:
        "(see filters.ROW_COLUMNS) of row ``id``, or IdNotFound."
        if collection is not None and collection not in self.collections:
            raise VectorIndexError(f"Index {self.name!r} does not cover collection {collection!r}")
        for name in [collection] if collection else self.collections:
            row = self.db.execute(
                f"select {ROW_COLUMNS} from embeddings e "
                "join collections c on c.id = e.collection_id "
                "where c.name = ? and e.id = ?",
                [name, id],
            ).fetchone()
            if row is not None:
                return row
        raise IdNotFound(f"ID {id!r} not found in index {self.name!r}")

    def similar_by_vector(
        self,
        vector: Sequence[float] | np.ndarray,
        number: int = 10,
        skip_id: str | None = None,
        prefix: str | None = None,
        *,
        collection: str | None = None,
        where: dict[str, Any] | None = None,
    ) -> list[IndexEntry]:
        """Rows nearest to ``vector``; ``skip_id`` excludes that id (as in llm),
        ``collection`` restricts to one covered collection, ``where`` to rows
        whose metadata has these values (``{"a.b": 1}`` reaches into nested)."""
        skip = frozenset({(None, skip_id)}) if skip_id is not None else frozenset()
        return query.search(
            self,
            vector,
            number,
            prefix=prefix,
            skip=skip,
            collection=collection,
            where=where,
        )

    def similar_by_vectors(
        self,
        vectors: Sequence[Sequence[float]] | np.ndarray,
        number: int = 10,
        prefix: str | None = None,
        *,
        collection: str | None = None,
        where: dict[str, Any] | None = None,
    ) -> list[list[IndexEntry]]:
        """``similar_by_vector`` for many queries at once (a matrix, one row a
        query): one backend search for them all and one read of their rows,
        the same answers in the same order."""
        return batch.search_many(
            self, vectors, number, prefix=prefix, collection=collection, where=where
        )

    # -- related items ------------------------------------------------------

    def related(
        self, number: int = 5, progress: Callable[[int, int], None] | None = None
    ) -> Iterator[RelatedRow]:
        """Each indexed row's ``number`` nearest other rows (rank 1 the
        nearest), found through the backend a batch of rows at a time and
        scored as llm scores them."""
        return related.related(self, number, progress)

    def save_related(
        self,
        table: str,
        number: int = 5,
        *,
        full: bool = False,
        progress: Callable[[int, int], None] | None = None,
    ) -> RelatedReport:
        """``related`` written to ``table`` in this database (made if absent),
        replacing this index's rows there in one transaction. After the
        first save only rows whose neighbours can have changed are searched
        again (the report says why when every row is)."""
        return related.save(self, table, number, full=full, progress=progress)


# (index folder, generation) already warned about: say it once per process.
_warned: set[tuple[str, int]] = set()


def _rows(count: int) -> str:
    return f"{count} row" if count == 1 else f"{count} rows"


def _check_refresh(mode: str) -> None:
    if mode not in ("auto", "manual"):
        raise VectorIndexError(f"refresh must be 'auto' or 'manual', got {mode!r}")
