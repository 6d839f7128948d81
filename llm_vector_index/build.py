"""One build of one index: the incremental scan applied to its backend, the
backend saved, then the catalog committed, with the locks and the
generation marker of generations.py keeping files and catalog in step.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from . import catalog, faults, freshness, paths, sync
from .base import VectorIndex
from .errors import CannotWrite, DamagedFiles, ModelMismatch, VectorIndexError, first_line
from .generations import (
    build_lock,
    commit_lock,
    read_generation,
    remove_if_empty,
    remove_retired,
    saving_ahead,
    swap_directories,
    unswap,
    write_generation,
)
from .holding import HeldIndex, Holder
from .storage import MANIFEST, load_snapshot
from .texts import BuildTexts


class Built(HeldIndex, Protocol):
    """What a build needs of the index it builds (``Index`` is one): what
    holding its files needs, the holder itself, and its settings."""

    holder: Holder

    @property
    def settings(self) -> dict[str, Any]: ...
    def backend(self) -> VectorIndex | None: ...


@dataclass
class BuildReport:
    full: bool
    added: int  # rows (re)indexed
    deleted: int
    rows: int  # rows in the index afterwards
    seconds: float
    held_back: int = 0  # rows read whose vector cannot be ranked (see sync.rankable)
    tuning: Any = None  # a tuning.Tuning when this build tuned the index
    without_text: int | None = None  # rows read with no text for keywords (None: no keywords)


NEW = np.iinfo(np.int64).min  # "no label yet" in _labels_for's answer


class Labels:
    """Hands out labels. A rankable row gets a label >= 0, the backend's key.
    A row held back (NaN, infinite, all-zero or odd-width vector) gets a negative label:
    it stays in the label map, so it is not "new" at every build and it is
    looked at again when it changes, but it is never sent to the backend."""

    def __init__(self, next_label: int, lowest: int | None) -> None:
        self.next_label = next_label
        self.next_held = min(lowest or 0, 0) - 1

    def assign(self, existing: np.ndarray, usable: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Labels for a batch (rows keep a label of the right sign) and the
        labels that must leave the backend (rows that became unrankable)."""
        labels = existing.copy()
        needs_label = usable & (existing < 0)
        labels[needs_label] = np.arange(self.next_label, self.next_label + needs_label.sum())
        self.next_label += int(needs_label.sum())
        needs_held = ~usable & ((existing >= 0) | (existing == NEW))
        count = int(needs_held.sum())
        labels[needs_held] = np.arange(self.next_held, self.next_held - count, -1)
        self.next_held -= count
        return labels, existing[~usable & (existing >= 0)]


class Build:
    def __init__(
        self,
        index: Built,
        progress: Callable[[int, int], None] | None = None,
        verify: bool = False,
    ) -> None:
        self.index = index
        self.db = index.db
        self.progress = progress
        self.verify = verify
        self.started = time.time()
        self.new_options: dict | None = None  # settings this build commits (auto)

    def run(self, full: bool) -> BuildReport:
        """The build; a write that fails (a full disk, a read-only mount or
        database) is ``CannotWrite``, one line, with the last build intact."""
        name = self.index.name
        try:
            return self._run(full)
        except sqlite3.Error as error:
            raise CannotWrite(f"Cannot build index {name!r}: {error}") from None
        except OSError as error:
            where = f": {error.filename}" if error.filename else ""
            # numpy reports a short write without an errno: a disk that filled up.
            reason = error.strerror or f"{first_line(error)} (is the disk full?)"
            raise CannotWrite(f"Cannot build index {name!r}: {reason}{where}") from None

    def _run(self, full: bool) -> BuildReport:
        index = self.index
        paths.check_ours_or_absent(index.path)  # before the lock file is made
        if reason := catalog.write_error(self.db, index.record.id):
            raise CannotWrite(f"Cannot build index {index.name!r}: {reason}")
        with build_lock(index.db, index.name):
            index.reload()
            record = index.record
            collection_ids = self._collection_ids()
            # Before the scan: a row written during the build changes it again.
            self.fingerprint = freshness.fingerprint(self.db, collection_ids)
            dimensions = record.dimensions or sync.peek_dimensions(
                self.db, index.record.collections
            )
            if dimensions is not None:
                self._discard_leftovers(self._leftovers(), dimensions)
            remove_retired(index.path)
            catalog.ensure_schema(self.db)
            if dimensions is None:  # nothing to index yet
                self._commit(True, [], [], dimensions=None, rows=0)
                return BuildReport(full, 0, 0, 0, time.time() - self.started)
            if self._resettle(collection_ids, dimensions):
                full = True  # new settings (auto's kind): only a full build applies them
            try:
                # Open the files as saved now: what this process held open may be
                # older than another process's last build. A full rebuild never
                # needs the old files: it reads llm's rows.
                index.holder.close()
                if not full:
                    report = self._incremental(collection_ids, dimensions)
                    if report is not None:
                        return report
                # First builds, damaged files and --full stream every row.
                return self._full(collection_ids, dimensions)
            except BaseException:
                if self.new_options is not None:
                    index.reload()  # the settings were not committed
                raise

    def _resettle(self, collection_ids: list[int], dimensions: int) -> bool:
        """Ask the backend whether the index's size calls for other settings
        (see VectorIndex.settings_for_rows). If so they are used for this
        build and committed with it; until then the catalog keeps the old."""
        index = self.index
        backend_class = index.backend_class
        if not _overrides(backend_class, "settings_for_rows"):
            return False  # no need to count the rows
        rows = sync.row_count(self.db, collection_ids)
        settings = backend_class.settings_for_rows(index.settings, rows, dimensions)
        if settings is None or settings == index.record.options:
            return False
        index.record.options = settings
        self.new_options = settings
        return True

    def _collection_ids(self) -> list[int]:
        record = self.index.record
        ids = []
        for collection in record.collections:
            row = sync.collection_row(self.db, collection)
            if row is None:
                continue  # deleted from llm: its labels are dropped
            if row["model"] != record.model:
                raise ModelMismatch(
                    f"Collection {collection!r} now uses {row['model']} but index "
                    f"{record.name!r} was built with {record.model}: drop and "
                    "re-create the index"
                )
            ids.append(row["id"])
        return ids

    def _full(self, collection_ids: list[int], dimensions: int) -> BuildReport:
        index = self.index
        # The old files are opened only to delete what the backend keeps
        # elsewhere (a Chroma collection): a full rebuild reads llm's rows.
        retired = (
            index.holder.private()
            if index.backend_class.keeps_data_elsewhere(index.settings)
            else None
        )
        index.holder.close()
        # Same folder name one level down: backends may name things after it.
        staging = paths.staging_path(self.db, index.name)
        paths.remove_tree(staging)  # left by a build that was killed
        paths.check_ours_or_absent(staging)
        label_rows: list[tuple] = []
        backend = None
        text = BuildTexts(index.record.keywords)
        # Held from the folder swap to the catalog commit (see commit_lock).
        with ExitStack() as committing:
            try:
                paths.mark(staging)
                backend = index.new_backend(staging, dimensions)
                text.create(staging)
                total = sum(
                    self.db.execute(
                        "select count(*) from embeddings where collection_id = ?", [cid]
                    ).fetchone()[0]
                    for cid in collection_ids
                )
                allocator = Labels(0, None)
                for collection_id in collection_ids:
                    scan = sync.read_all(
                        self.db,
                        collection_id,
                        dimensions,
                        self.fingerprint["rowid"],
                        with_content=text.wanted,
                    )
                    for batch in scan:
                        usable = sync.rankable(batch.vectors)
                        labels, _ = allocator.assign(np.full(len(batch.ids), NEW), usable)
                        backend.add(labels[usable], batch.vectors[usable])
                        text.add(batch, labels, usable, replace=False)
                        label_rows += batch.label_rows(labels)
                        if self.progress:
                            self.progress(len(batch.ids), total)
                faults.point("scanned")
                text.commit()
                write_generation(staging, index.record.generation + 1, index.identity)
                backend.save()
                faults.point("saved")
                backend.close()
                backend = None
                committing.enter_context(commit_lock(index.db, index.name))
                swap_directories(staging, index.path)
                faults.point("swapped")
            except BaseException:
                text.close()
                if backend is not None:  # built part-way: what it wrote elsewhere goes too
                    backend.destroy()
                    backend.close()
                if retired is not None:
                    retired.close()
                raise
            finally:
                paths.remove_tree(staging)
                remove_if_empty(staging.parent)
            rows = allocator.next_label
            try:
                self._commit(
                    True,
                    [],
                    label_rows,
                    dimensions=dimensions,
                    rows=rows,
                    next_label=rows,
                    ordered_labels=rows,  # handed out in id order (catalog m008)
                    **text.values(),
                )
            except (sqlite3.Error, OSError):  # e.g. the disk is full: nothing committed
                unswap(index.path)
                raise
        if retired is None:  # files that were not the catalog's: what do they name?
            self._discard_leftovers(self._leftovers(), dimensions)
        remove_retired(index.path)
        if retired is not None:
            retired.destroy()  # e.g. the old collection on a Chroma server
            retired.close()
        held_back = len(label_rows) - rows
        return BuildReport(
            True,
            rows,
            0,
            rows,
            index.record.build_seconds or 0.0,
            held_back,
            without_text=text.without_text,
        )

    def _leftovers(self) -> list[Path]:
        "Folders of this index that no catalog generation will open again."
        index = self.index
        return [
            paths.staging_path(self.db, index.name),
            *index.path.parent.glob(f".{index.path.name}.retired-*"),
        ]

    def _discard_leftovers(self, folders: list[Path], dimensions: int) -> None:
        """What ``folders`` keep elsewhere (a table on a Postgres server, a
        collection on a Chroma server), dropped before the folders go. A
        build killed after its backend saved and before the catalog
        committed leaves such a folder (staging, or the files a swap set
        aside), or files the catalog never committed, which the next full
        build swaps aside: nothing would name what they hold again. A folder
        that cannot be opened (damaged, its server down) goes without:
        never more than a folder names is dropped."""
        index = self.index
        if not index.backend_class.keeps_data_elsewhere(index.settings):
            return
        for folder in folders:
            if not (folder / paths.MARKER).is_file() or not (folder / MANIFEST).is_file():
                continue  # not a folder of ours, or its backend never saved
            try:
                backend = index.new_backend(folder, dimensions)
            except (VectorIndexError, OSError):
                continue
            try:
                backend.destroy()
            except VectorIndexError:
                pass  # e.g. the server went away: the folder goes, the rest stays
            finally:
                backend.close()

    def _incremental(self, collection_ids: list[int], dimensions: int) -> BuildReport | None:
        """Apply what changed since the last build; None when the saved files
        cannot be built on (none, damaged, or not the catalog's generation)."""
        index = self.index
        record = index.record
        if not self._saved_files_are_current():
            return None
        # Closed (what was not committed forgotten) whichever way this ends.
        with BuildTexts(record.keywords) as text:
            if not text.open_current(index.path, record.keyword_rows):
                return None
            labels = sync.label_count(self.db, record.id)
            if not sync.label_map_is_sound(self.db, record.id, record.rows, labels):
                return None
            if not self.verify and sync.nothing_changed(
                self.db,
                record.id,
                collection_ids,
                self.fingerprint,
                record.fingerprint,
                labels,
            ):
                changes = sync.Changes()
            else:
                changes = sync.find_changes(
                    self.db,
                    record.id,
                    collection_ids,
                    record.watermark,
                    (record.fingerprint or {}).get("rowid"),
                    verify=self.verify,
                )
            if not changes:
                self._commit(
                    False,
                    [],
                    [],
                    new_generation=False,
                    dimensions=dimensions,
                    rows=record.rows,
                    next_label=record.next_label,
                )
                return BuildReport(
                    False,
                    0,
                    0,
                    record.rows,
                    index.record.build_seconds or 0.0,
                    0,
                    without_text=text.without_text,
                )
            backend = index.holder.for_build()
            if backend is None:
                return None
            with ExitStack() as committing:
                if not backend.capabilities.atomic_save:
                    # Its writes land at once: mark the files as ahead of the catalog
                    # before the first one, so a failure part-way is detected.
                    committing.enter_context(commit_lock(index.db, index.name))
                    write_generation(index.path, record.generation + 1, index.identity)
                try:
                    return self._apply(backend, text, changes, dimensions, committing)
                except BaseException:
                    backend.close()
                    raise

    def _saved_files_are_current(self) -> bool:
        """Are the saved files the catalog's last build, undamaged? Without
        loading them where their snapshot says so (a million-row hnswlib
        graph takes seconds to read): a build that finds nothing to do must
        cost next to nothing. Otherwise opened for queries (shared, and
        memory-mapped where the backend can), which checks everything."""
        index = self.index
        if not index.record.built:
            return False
        if read_generation(index.path, index.identity) == index.record.generation:
            try:
                snapshot = load_snapshot(index.path)  # sizes and identities checked
                if snapshot is not None and snapshot.files:  # data kept elsewhere: open
                    return True
            except DamagedFiles:
                return False
        try:
            saved = index.backend()
        except DamagedFiles:
            return False
        return saved is not None and index.holder.matches_catalog(saved)

    def _apply(self, backend, text, changes, dimensions, committing: ExitStack) -> BuildReport:
        "The incremental build's writes, its save and its commit."
        index = self.index
        record = index.record
        allocator = Labels(record.next_label, self._lowest_label())
        label_rows: list[tuple] = []
        evicted: list[int] = []
        held_back = 0
        # Deletions first: a row deleted after the scan listed it as changed and
        # written again before it is read is both deleted and re-added here,
        # under its one label, which must end up in the backend.
        gone = [label for label in changes.deleted_labels if label >= 0]
        if gone:
            backend.remove(np.array(gone, dtype=np.int64))
            text.remove(gone)
        for collection_id, ids in changes.upserts.items():
            batches = sync.read_rows(
                self.db, collection_id, ids, dimensions, with_content=text.wanted
            )
            for batch in batches:
                usable = sync.rankable(batch.vectors)
                labels, unrankable = allocator.assign(
                    self._labels_for(collection_id, batch.ids), usable
                )
                backend.add(labels[usable], batch.vectors[usable])
                text.add(batch, labels, usable, replace=True)
                evicted += unrankable.tolist()
                held_back += int((~usable).sum())
                label_rows += batch.label_rows(labels)
                if self.progress:
                    self.progress(len(batch.ids), changes.upsert_count)
        if evicted:  # rows whose new vector cannot be ranked
            backend.remove(np.array(evicted, dtype=np.int64))
            text.remove(evicted)
        faults.point("scanned")
        if backend.capabilities.atomic_save:
            committing.enter_context(commit_lock(index.db, index.name))
        with saving_ahead(
            index.path, record.generation + 1, index.identity, undo=backend.capabilities.atomic_save
        ) as ahead:
            backend.save()
            if text.wanted:
                # The vectors are saved: if the keywords cannot be, the files
                # are ahead of the catalog and the next build rebuilds them.
                ahead.keep()
                text.commit()
        faults.point("saved")
        rows = backend.count()
        self._commit(
            False,
            changes.deleted_labels,
            label_rows,
            dimensions=dimensions,
            rows=rows,
            next_label=allocator.next_label,
            **text.values(),
        )
        index.holder.adopt(backend)  # saved and committed: queries may use it now
        return BuildReport(
            False,
            len(label_rows) - held_back,
            len(changes.deleted_labels),
            rows,
            index.record.build_seconds or 0.0,
            held_back,
            without_text=text.without_text,
        )

    def _lowest_label(self) -> int | None:
        return self.db.execute(
            "select min(label) from vector_index_labels where index_id = ?",
            [self.index.record.id],
        ).fetchone()[0]

    def _labels_for(self, collection_id: int, ids: list[str]) -> np.ndarray:
        "Existing labels for these ids (a changed row keeps its label), NEW if none."
        known = dict(
            self.db.execute(
                "select id, label from vector_index_labels where index_id = ? "
                f"and collection_id = ? and id in ({','.join('?' * len(ids))})",
                [self.index.record.id, collection_id, *ids],
            ).fetchall()
        )
        return np.array([known.get(id, NEW) for id in ids], dtype=np.int64)

    def _commit(self, replace_all, deleted, label_rows, new_generation=True, **values) -> None:
        finished = time.time()
        catalog.commit_build(
            self.db,
            self.index.record.id,
            replace_all=replace_all,
            deleted_labels=deleted,
            label_rows=label_rows,
            new_generation=new_generation,
            values={
                **values,
                # Whole seconds, taken before the scan: rows written during the
                # build carry updated >= this and are looked at next time.
                "watermark": int(self.started),
                "built": finished,
                "build_seconds": finished - self.started,
                "fingerprint": json.dumps(self.fingerprint),
                **(
                    {"options": json.dumps(self.new_options, sort_keys=True)}
                    if self.new_options is not None
                    else {}
                ),
            },
        )
        faults.point("committed")
        self.index.reload()


def _overrides(backend_class: type[VectorIndex], method: str) -> bool:
    return getattr(backend_class, method).__func__ is not getattr(VectorIndex, method).__func__
