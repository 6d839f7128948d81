"""Is an index behind its collections? A check cheap enough for every query.

A fingerprint is taken when a build starts: for each covered collection, its
``max(updated)`` and its ``max(rowid)``, each one lookup at the end of an
index range (``embeddings(collection_id, updated)`` and
``embeddings(collection_id)``, whose entries end with the rowid). Every
insert, llm's insert-or-replace included, takes a new rowid above every other,
whatever ``updated`` says, so a row added to a collection moves its
``max(rowid)``; a row written to another collection moves nothing here, so it
costs this index's next query nothing. Counting rows would catch more, but
costs about 30 ms at 1M rows; deleted rows need no check, because a query
never returns a row that is gone.

``read_state`` reads the fingerprint, the index's committed generation and
when it was created (which index holds the id now) in one statement: this is all a query pays to know it may answer from what it
has open.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sqlite_utils import Database

_PER_COLLECTION = (
    "(select max(updated) from embeddings where collection_id = c.id), "
    "(select max(rowid) from embeddings where collection_id = c.id)"
)


@dataclass(frozen=True)
class State:
    generation: int | None  # None: the index's catalog row is gone
    collections: dict[str, list]  # collection id -> [max(updated), max(rowid)]
    # When the row's index was created: SQLite gives a dropped index's id to
    # the next one made, so the id alone does not say it is the same index.
    created: float | None = None

    @property
    def collection_ids(self) -> list[int]:
        return [int(key) for key in self.collections]


def fingerprint(db: Database, collection_ids: list[int]) -> dict:
    "Taken by a build before it scans; saved in the catalog with its commit."
    latest = {}
    for collection_id in collection_ids:
        row = db.execute(
            f"select {_PER_COLLECTION} from (select ? as id) c", [collection_id]
        ).fetchone()
        latest[str(collection_id)] = list(row)
    # The scan's upper bound: rows inserted after this are the next build's.
    rowid = db.execute("select max(rowid) from embeddings").fetchone()[0]
    return {"collections": latest, "rowid": rowid}


def read_state(db: Database, index_id: int, collections: Sequence[str]) -> State:
    "The index's generation and its existing collections' fingerprint, in one statement."
    rows = db.execute(
        f"select v.generation, v.created, c.id, {_PER_COLLECTION} from vector_indexes v "
        f"left join collections c on c.name in ({','.join('?' * len(collections))}) "
        "where v.id = ?",
        [*collections, index_id],
    ).fetchall()
    if not rows:
        return State(None, {})
    return State(
        rows[0][0],
        {str(row[2]): [row[3], row[4]] for row in rows if row[2] is not None},
        rows[0][1],
    )


def is_current(saved: dict | None, state: State) -> bool:
    return saved is not None and saved.get("collections") == state.collections
