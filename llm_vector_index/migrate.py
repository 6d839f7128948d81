"""Migrate llm collections into a Chroma collection, faithfully and resumably.

Each llm row becomes one Chroma record:

- id: the llm id; when several llm collections share one Chroma collection,
  ``COLLECTION/ID`` (the original id is in metadata either way);
- embedding: the stored float32 vector (Chroma's cosine space gives it back
  within a float32 rounding step of its norm: it normalises and scales back);
- document: ``content``; rows with binary ``content_blob`` have no document and
  ``llm_content_blob: true`` in their metadata (the bytes stay in llm);
- metadata: llm's metadata made flat for Chroma, plus ``llm_collection``,
  ``llm_id`` and ``llm_updated``. Scalars stay scalars; nested objects and
  arrays become JSON text under the same key, those keys listed (as JSON) in
  ``llm_json_keys``; None values are dropped (Chroma cannot store them). See
  ``to_chroma_metadata`` / ``from_chroma_metadata``.

Writes are ``upsert`` batches no larger than ``client.get_max_batch_size()``,
so an interrupted run can simply run again. A re-run sends only rows whose
``updated`` is at or after the second the last complete run started (those of
that very second are compared with Chroma first), remembered per target in
``vector_index_migrations``; ``sync_deletes`` also removes Chroma records whose
llm row is gone and sends any row Chroma lacks whatever its timestamp.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from sqlite_utils import Database

from . import catalog, faults, sync
from .chroma_client import (
    NAME_RULE,
    connect,
    cosine_collection,
    derive_name,
    is_valid_name,
    server_errors,
)
from .errors import DimensionMismatch, InvalidOptions, VectorIndexError, check_count

# What a Chroma record is made of: whether there is a blob, not its bytes.
CHROMA_COLUMNS = "id, embedding, content, content_blob is not null, metadata, updated"
RESERVED = ("llm_collection", "llm_id", "llm_updated", "llm_content_blob", "llm_json_keys")
INT64 = (-(2**63), 2**63 - 1)


def to_chroma_metadata(
    metadata_json: str | None, collection: str, id: str, updated: int | None, blob: bool
) -> dict[str, Any]:
    "llm metadata (JSON text) as a flat Chroma metadata dict; never empty."
    metadata = json.loads(metadata_json) if metadata_json else {}
    if not isinstance(metadata, dict):  # llm accepts any JSON
        metadata = {"llm_metadata": metadata}
    flat: dict[str, Any] = {}
    as_json = []
    for key, value in metadata.items():
        if value is None:
            continue
        scalar = isinstance(value, (str, bool, float)) or (
            isinstance(value, int) and INT64[0] <= value <= INT64[1]
        )
        if scalar:
            flat[key] = value
        else:
            flat[key] = json.dumps(value)
            as_json.append(key)
    if as_json:
        flat["llm_json_keys"] = json.dumps(as_json)
    flat["llm_collection"] = collection
    flat["llm_id"] = id
    if updated is not None:
        flat["llm_updated"] = updated
    if blob:
        flat["llm_content_blob"] = True
    return flat


def from_chroma_metadata(flat: dict[str, Any]) -> tuple[str, str, dict[str, Any] | None]:
    "Back again: (llm collection, llm id, llm metadata with None values dropped)."
    flat = dict(flat)
    collection, id = flat.pop("llm_collection"), flat.pop("llm_id")
    for key in json.loads(flat.pop("llm_json_keys", "[]")):
        flat[key] = json.loads(flat[key])
    for key in ("llm_updated", "llm_content_blob"):
        flat.pop(key, None)
    if set(flat) == {"llm_metadata"}:
        return collection, id, flat["llm_metadata"]
    return collection, id, flat or None


def llm_metadata_without_none(metadata_json: str | None) -> Any:
    "What a faithful migration preserves of llm's metadata."
    metadata = json.loads(metadata_json) if metadata_json else None
    if isinstance(metadata, dict):
        metadata = {k: v for k, v in metadata.items() if v is not None} or None
    return metadata


@dataclass
class MigrationReport:
    chroma_collection: str
    target: str
    sent: int = 0
    deleted: int = 0
    llm_rows: int = 0
    chroma_rows: int = 0
    held_back: int = 0  # rows read with NaN, infinite, all-zero or odd-width vectors: not sent
    sampled: int = 0
    mismatches: list[str] = field(default_factory=list)
    seconds: float = 0.0


def migrate_to_chroma(
    db: Database,
    collections: list[str],
    *,
    path: Path | str | None = None,
    host: str = "",
    port: int = 8000,
    ssl: bool = False,
    headers: dict[str, str] | None = None,
    chroma_collection: str | None = None,
    batch_size: int | None = None,
    sync_deletes: bool = False,
    progress: Callable[[int, int], None] | None = None,
    sample: int = 20,
) -> MigrationReport:
    """Copy (or bring up to date) llm collections in a Chroma collection at a
    local ``path`` or on a server at ``host``:``port``. Everything is checked
    before anything is written; the catalog records a run only once it is done."""
    started = time.time()
    collections = list(dict.fromkeys(collections))
    rows = sync.check_collections(db, collections)
    if batch_size is not None:
        check_count(batch_size, "batch size")
    if not path and not host:
        raise InvalidOptions("Give a Chroma directory (path) or a server (host and port)")
    name = chroma_collection or derive_name("-".join(collections))
    if not is_valid_name(name):
        raise InvalidOptions(f"Invalid Chroma collection name {name!r}: use {NAME_RULE}")
    client = connect(
        path=Path(path) if path else None, host=host, port=port, ssl=ssl, headers=headers
    )
    target = (
        f"{'https' if ssl else 'http'}://{host}:{port}"
        if host
        else str(Path(path or ".").resolve())
    )
    try:
        with server_errors(host, port):  # a server that dies mid-way: one line
            dimensions = sync.peek_dimensions(db, collections)
            _check_existing(client, name, dimensions)
            chroma = cosine_collection(client, name)
            batch_size = min(batch_size or client.get_max_batch_size(), client.get_max_batch_size())
            report = MigrationReport(chroma_collection=name, target=f"{target}#{name}")
            prefixed = len(collections) > 1
            for collection in collections:
                collection_id = rows[collection]["id"]
                migration = _CollectionMigration(
                    db, chroma, collection, collection_id, prefixed, batch_size, progress
                )
                run_started = int(time.time())
                watermark = catalog.migration_watermark(db, report.target, collection_id)
                report.sent += migration.send_changed(watermark)
                if sync_deletes:
                    deleted, sent = migration.sync_ids()
                    report.deleted += deleted
                    report.sent += sent
                report.held_back += len(migration.held_back)
                catalog.ensure_schema(db)
                total = db.execute(
                    "select count(*) from embeddings where collection_id = ?", [collection_id]
                ).fetchone()[0]
                catalog.record_migration(
                    db, report.target, collection_id, run_started, total, time.time()
                )
            _verify(db, chroma, collections, rows, prefixed, report, sample)
    finally:
        client.close()
    report.seconds = time.time() - started
    return report


def _check_existing(client, name: str, dimensions: int | None) -> None:
    "Refuse an existing Chroma collection in another space or of another width."
    from chromadb.errors import NotFoundError

    try:
        existing = client.get_collection(name, embedding_function=None)
    except (NotFoundError, ValueError):
        return
    cosine_collection(client, name)  # raises for another distance space
    stored = existing.get(limit=1, include=["embeddings"])["embeddings"]
    if dimensions and stored is not None and len(stored) and len(stored[0]) != dimensions:
        raise DimensionMismatch(
            f"Chroma collection {name!r} holds {len(stored[0])}-dimensional vectors; "
            f"these collections have {dimensions}"
        )


class _CollectionMigration:
    def __init__(self, db, chroma, collection, collection_id, prefixed, batch_size, progress):
        self.db, self.chroma = db, chroma
        self.collection, self.collection_id = collection, collection_id
        self.prefixed, self.batch_size, self.progress = prefixed, batch_size, progress
        self.replace = True
        self.held_back: set[str] = set()  # ids of rows whose vector cannot be ranked

    def chroma_id(self, id: str) -> str:
        return f"{self.collection}/{id}" if self.prefixed else id

    def _select(self, condition: str, params: list) -> Any:
        return self.db.execute(
            f"select {CHROMA_COLUMNS} from embeddings where collection_id = ? and ({condition})",
            [self.collection_id, *params],
        )

    def send_changed(self, watermark: int | None) -> int:
        # A first run into an empty collection cannot meet stale records.
        self.replace = watermark is not None or self.chroma.count() > 0
        condition, params = (
            ("1", []) if watermark is None else ("updated >= ? or updated is null", [watermark])
        )
        total = self.db.execute(
            f"select count(*) from embeddings where collection_id = ? and ({condition})",
            [self.collection_id, *params],
        ).fetchone()[0]
        sent = 0
        for batch in llm_pages(
            self.db, self.collection_id, condition, params, self.batch_size, columns=CHROMA_COLUMNS
        ):
            read = len(batch)
            if watermark is not None:
                batch = self._drop_unchanged(batch, watermark)
            sent += self._send(batch)
            faults.point("migrate-sent")
            if self.progress:
                self.progress(read, total)
        return sent

    def _records(self, batch) -> tuple[list[str], np.ndarray, list, list]:
        ids = [self.chroma_id(row[0]) for row in batch]
        vectors = sync.vectors_from_blobs([row[0] for row in batch], [row[1] for row in batch])
        documents = [row[2] for row in batch]
        metadatas = [
            to_chroma_metadata(row[4], self.collection, row[0], row[5], bool(row[3]))
            for row in batch
        ]
        return ids, vectors, documents, metadatas

    def _send(self, batch) -> int:
        "Send these rows; returns how many were sent (unrankable ones are not)."
        if not batch:
            return 0
        ids, vectors, documents, metadatas = self._records(batch)
        if self.replace:
            # Chroma merges metadata on upsert: a key llm no longer has would
            # survive. Records that may exist are deleted first; if we die in
            # between, the watermark has not moved and the re-run sends them.
            self.chroma.delete(ids=ids)
        usable = sync.rankable(vectors)
        if not usable.all():  # NaN, infinite or all zeros: Chroma cannot rank them
            self.held_back.update(row[0] for row, ok in zip(batch, usable.tolist()) if not ok)
            keep = usable.tolist()
            ids, documents, metadatas = (
                [value for value, ok in zip(values, keep) if ok]
                for values in (ids, documents, metadatas)
            )
            vectors = vectors[usable]
            if not ids:
                return 0
        self.chroma.upsert(ids=ids, embeddings=vectors, documents=documents, metadatas=metadatas)
        return len(ids)

    def _drop_unchanged(self, batch, watermark: int) -> list:
        "Rows of the last run's own second may have been sent already: compare."
        hot = [row for row in batch if row[5] == watermark]
        if not hot:
            return batch
        ids, vectors, documents, metadatas = self._records(hot)
        stored = self.chroma.get(ids=ids, include=["embeddings", "documents", "metadatas"])
        by_id = {
            id: (vector, document, metadata)
            for id, vector, document, metadata in zip(
                stored["ids"], stored["embeddings"], stored["documents"], stored["metadatas"]
            )
        }
        unchanged = {
            row[0]
            for row, id, vector, document, metadata in zip(hot, ids, vectors, documents, metadatas)
            if id in by_id
            and same_vector(by_id[id][0], vector)
            and by_id[id][1] == document
            and by_id[id][2] == metadata
        }
        return [row for row in batch if row[0] not in unchanged]

    def sync_ids(self) -> tuple[int, int]:
        "Delete Chroma records whose llm row is gone; send rows Chroma lacks."
        in_chroma = set()
        offset = 0
        while True:
            page = self.chroma.get(
                where={"llm_collection": self.collection},
                include=[],
                limit=self.batch_size,
                offset=offset,
            )["ids"]
            in_chroma.update(page)
            if len(page) < self.batch_size:
                break
            offset += len(page)
        in_llm = {
            self.chroma_id(row[0])
            for row in self.db.execute(
                "select id from embeddings where collection_id = ?", [self.collection_id]
            )
        }
        gone = sorted(in_chroma - in_llm)
        for start in range(0, len(gone), self.batch_size):
            self.chroma.delete(ids=gone[start : start + self.batch_size])
        missing = [
            row[0]
            for row in self.db.execute(
                "select id from embeddings where collection_id = ?", [self.collection_id]
            )
            if self.chroma_id(row[0]) not in in_chroma
        ]
        sent = 0
        for start in range(0, len(missing), self.batch_size):
            chunk = missing[start : start + self.batch_size]
            marks = ",".join("?" * len(chunk))
            sent += self._send(self._select(f"id in ({marks})", chunk).fetchall())
        return len(gone), sent


def llm_pages(
    db: Database,
    collection_id: int,
    condition: str,
    params: list,
    batch_size: int,
    *,
    columns: str = "id, embedding, content, content_blob, metadata, updated",
    after: str | None = None,
):
    """A collection's rows matching ``condition``, a page at a time in id
    order (after the id ``after``), each page its own short statement: llm's
    writers wait for one page at most, not for the whole migration (a held
    cursor keeps SQLite's read lock)."""
    last = after
    while True:
        page = db.execute(
            f"select {columns} from embeddings where collection_id = ? and ({condition}) "
            + ("and id > ? " if last is not None else "")
            + "order by id limit ?",
            [collection_id, *params, *([last] if last is not None else []), batch_size],
        ).fetchall()
        if not page:
            return
        last = page[-1][0]
        yield page


def same_vector(stored, vector: np.ndarray) -> bool:
    """Equal up to Chroma's rounding: its cosine space normalises vectors and
    scales them back, so each value may move by a float32 step of the norm."""
    stored = np.asarray(stored, dtype=np.float64)
    vector = np.asarray(vector, dtype=np.float64)
    if stored.shape != vector.shape:
        return False
    return float(np.abs(stored - vector).max(initial=0)) <= 1e-6 * float(np.linalg.norm(vector))


def _verify(db, chroma, collections, rows, prefixed, report, sample) -> None:
    "Counts on both sides, and a random sample compared field by field."
    ids = [rows[c]["id"] for c in collections]
    marks = ",".join("?" * len(ids))
    report.llm_rows = db.execute(
        f"select count(*) from embeddings where collection_id in ({marks})", ids
    ).fetchone()[0]
    report.chroma_rows = chroma.count()
    picked = db.execute(
        "select c.name, e.id, e.embedding, e.content, e.metadata from embeddings e "
        f"join collections c on c.id = e.collection_id where e.collection_id in ({marks}) "
        "order by random() limit ?",
        [*ids, sample],
    ).fetchall()
    if not picked:
        return
    wanted = [f"{row[0]}/{row[1]}" if prefixed else row[1] for row in picked]
    stored = chroma.get(ids=wanted, include=["embeddings", "documents", "metadatas"])
    found = {
        id: (vector, document, metadata)
        for id, vector, document, metadata in zip(
            stored["ids"], stored["embeddings"], stored["documents"], stored["metadatas"]
        )
    }
    for chroma_id, (collection, id, blob, content, metadata) in zip(wanted, picked):
        if not sync.rankable(np.frombuffer(blob, dtype="<f4")[None])[0]:
            continue  # held back: never sent
        report.sampled += 1
        if chroma_id not in found:
            report.mismatches.append(f"{chroma_id}: missing from Chroma")
            continue
        vector, document, flat = found[chroma_id]
        if not same_vector(vector, np.frombuffer(blob, dtype="<f4")):
            report.mismatches.append(f"{chroma_id}: vector differs")
        if document != content:
            report.mismatches.append(f"{chroma_id}: document differs")
        if from_chroma_metadata(flat) != (collection, id, llm_metadata_without_none(metadata)):
            report.mismatches.append(f"{chroma_id}: metadata differs")
    if report.mismatches:
        raise VectorIndexError(
            f"Verification failed for {len(report.mismatches)} of {report.sampled} sampled "
            f"records: {report.mismatches[0]}"
        )
