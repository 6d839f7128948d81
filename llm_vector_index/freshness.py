"""Is an index behind its collections? A check cheap enough for every query.

A fingerprint is taken when a build starts: each covered collection's id and
``max(updated)`` (one lookup in the index on ``embeddings(collection_id,
updated)``) and the table's ``max(rowid)`` (one lookup: every insert, including
llm's insert-or-replace, takes a new, higher rowid, whatever ``updated`` says).
Counting rows would catch more, but costs about 30 ms at 1M rows; deleted
rows need no check, because a query never returns a row that is gone.
"""

from __future__ import annotations

from sqlite_utils import Database


def fingerprint(db: Database, collection_ids: list[int]) -> dict:
    latest = {
        str(collection_id): db.execute(
            "select max(updated) from embeddings where collection_id = ?",
            [collection_id],
        ).fetchone()[0]
        for collection_id in collection_ids
    }
    rowid = db.execute("select max(rowid) from embeddings").fetchone()[0]
    return {"updated": latest, "rowid": rowid}


def is_current(db: Database, saved: dict | None, collection_ids: list[int]) -> bool:
    return saved is not None and fingerprint(db, collection_ids) == saved
