"""What a filter allows, read once and reused while nothing in the database
changes.

A filtered query first reads the rows its filter allows (their rowids, when
few, or the index's labels for them: 10,000 labels cost about 2.5 ms at 100k
rows, several times the search). An app or a Datasette page asks with the
same filter again and again, so the answer is kept on the ``Database``
object, keyed by the filter, and dropped as soon as anything in the
database may have changed: a write through this connection (SQLite's
``total_changes``) or a commit by any other (``pragma data_version``). So a
reused answer is exactly the one a new read would give.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Any, TypeVar

from sqlite_utils import Database

T = TypeVar("T")

ATTRIBUTE = "_llm_vector_index_reuse"
# Filters remembered per connection: each holds up to one label per row.
MOST = 4


class _Remembered:
    def __init__(self, state: tuple[int, int]) -> None:
        self.state = state
        self.answers: OrderedDict[Hashable, Any] = OrderedDict()


def state(db: Database) -> tuple[int, int]:
    "Changes by this connection, and the version others' commits move."
    return db.conn.total_changes, db.execute("pragma data_version").fetchone()[0]


def reuse(db: Database, key: Hashable, read: Callable[[], T]) -> T:
    "``read()``, or what it gave for ``key`` while the database has not changed since."
    now = state(db)
    remembered = getattr(db, ATTRIBUTE, None)
    if remembered is None or remembered.state != now:
        remembered = _Remembered(now)
        setattr(db, ATTRIBUTE, remembered)
    if key in remembered.answers:
        remembered.answers.move_to_end(key)
        return remembered.answers[key]
    answer = read()
    remembered.answers[key] = answer
    while len(remembered.answers) > MOST:
        remembered.answers.popitem(last=False)
    return answer


def forget(db: Database) -> None:
    "Drop everything remembered for ``db`` (benchmarks time a filter's first query)."
    if hasattr(db, ATTRIBUTE):
        delattr(db, ATTRIBUTE)
