"""The rows a filter allows (a collection, an id prefix, ``where``), as a
query's two sides need them: each part read from SQLite only when a side
asks for it, and then kept, as the restriction is reused while the
database is unchanged (reuse.py).

- the vector side: their rowids when few (a scratch scan reads just those
  rows), else their labels (the backend's allow-list);
- the keyword side (keyword_filter.Allowed): whether more than a few are
  allowed (counted cheaply), whether each of the rows it ranks is allowed
  (looked up in the label map, for a filter's first query, so that 10,000
  allowed labels need not be read for it), or their labels.

An id prefix or a collection since a full build gives its labels at once
from the ends of their runs (Filter.ordered_labels: 10% of 100k rows in
0.05 ms), so both sides take them whole from the first query.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
from sqlite_utils import Database

from . import filters, metadata_indexes
from .filters import Filter
from .keyword_filter import LabelSet
from .records import IndexRecord
from .reuse import reuse


class Restricted(Protocol):
    "What a restriction reads through: an index's database, catalog row and collections."

    db: Database
    record: IndexRecord

    @property
    def label_hints(self) -> bool: ...
    def collection_ids(self, only: str | None = None) -> list[int]: ...


def restriction(
    index: Restricted, collection: str | None, prefix: str | None, where: dict[str, Any] | None
) -> Restriction | None:
    "The rows a filter allows, or None when there is no filter."
    if not (prefix or collection or where):
        return None
    restricted = index.collection_ids(only=collection)
    if not restricted:
        return Restriction(None)
    subset = Filter(restricted, prefix=prefix or None, where=dict(where or {}))

    def read() -> Restriction:  # which of its keys are indexed, once with the rest
        if subset.where:
            subset.indexed = metadata_indexes.usable(index.db, subset.where)
        return Restriction(subset)

    try:
        key = (
            index.record.id,
            index.record.generation,
            tuple(restricted),
            subset.prefix,
            json.dumps(subset.where, sort_keys=True),
            filters.SCRATCH_LIMIT,
        )
    except (TypeError, ValueError):  # a value JSON cannot hold: read it afresh
        return read()
    return reuse(index.db, key, read)


_UNREAD: Any = object()


@dataclass
class Restriction:
    """The rows a filter allows, each part read only if a side needs it and
    then kept (the restriction is reused while the database is unchanged):
    their rowids when there are few (a scratch scan reads just those rows),
    their labels (the backend's allow-list), or, for the keyword side,
    whether some labels are allowed (``allowed``)."""

    subset: Filter | None  # None: no rows at all
    _rowids: list[int] | None = field(default=_UNREAD, repr=False)
    _labels: np.ndarray | None = field(default=None, repr=False)
    _more_than: dict[int, bool] = field(default_factory=dict, repr=False)
    _label_set: LabelSet | None = field(default=None, repr=False)
    _uses: int = field(default=0, repr=False)  # keyword queries that asked about it
    _tried_runs: bool = field(default=False, repr=False)  # cheap_labels
    _from_runs: bool = field(default=False, repr=False)  # _labels came from their runs
    _held: np.ndarray | None = field(default=None, repr=False)  # labels(held_only=True)
    # by label: -1 not asked yet, else whether the filter allows it (AllowedRows.allows)
    _answers: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int8), repr=False)

    def rowids(self, index: Restricted) -> list[int] | None:
        "The rowids of the rows allowed, or None: more than filters.SCRATCH_LIMIT."
        if self._rowids is _UNREAD:
            labels = self.cheap_labels(index)
            if self.subset is None:
                self._rowids = []
            elif labels is not None and len(labels) > filters.SCRATCH_LIMIT:
                self._rowids = None  # many (a few may be rows deleted since the build)
            else:  # whether there are few is learnt by reading one more than few can be
                rowids = self.subset.rowids(index.db, limit=filters.SCRATCH_LIMIT + 1)
                self._rowids = rowids if len(rowids) <= filters.SCRATCH_LIMIT else None
        return self._rowids

    def labels(self, index: Restricted, held_only: bool = False) -> np.ndarray:
        """Their labels; with gaps (labels no row has now) where they come
        from their runs, unless ``held_only`` (for a backend that takes no
        label it does not hold: Capabilities.absent_labels)."""
        cheap = self.cheap_labels(index)
        if cheap is not None and not (held_only and self._from_runs):
            return cheap
        if self._held is not None:
            return self._held
        labels = self._read_labels(index)
        if cheap is not None:  # the runs gave them, gaps and all: keep both
            self._held = labels
        else:
            self._labels = labels
        return labels

    def _read_labels(self, index: Restricted) -> np.ndarray:
        subset = self.subset
        if subset is None:
            labels = np.zeros(0, dtype=np.int64)
        elif self._rowids is not _UNREAD and self._rowids is not None and subset.where:
            # the rows are known: cheaper than reading every row's metadata again
            labels = Filter.labels(index.db, index.record.id, self._rowids)
        else:
            labels = subset.matching_labels(index.db, index.record.id)
        return labels

    def cheap_labels(self, index: Restricted) -> np.ndarray | None:
        """The labels if they are read already, or now if their runs give
        them (Filter.ordered_labels: an id prefix or a collection since a
        full build, tried once), else None."""
        if self._labels is None and not self._tried_runs and self.subset is not None:
            self._tried_runs = True
            self._labels = self.subset.ordered_labels(index.db, index.record)
            self._from_runs = self._labels is not None
        return self._labels

    def allowed(self, index: Restricted) -> AllowedRows:
        """These rows as the keyword side asks about them (keywords.Allowed).
        A filter asked about again (reused: the database has not changed) is
        likely asked many times more, as by an app or a search page: its
        labels are then read whole, once (10,000: 2.5 ms at 100k rows), so that
        each later query checks its ranked rows in memory rather than in the
        label map, or as one range in the query (10% of 100k rows: 0.8
        against 1.8 ms p50)."""
        self._uses += 1
        if self._uses > 1:
            self.labels(index)
        return AllowedRows(self, index)


@dataclass
class AllowedRows:
    "A restriction of ``index``'s rows, as keywords.Allowed."

    restriction: Restriction
    index: Restricted

    def known(self) -> LabelSet | None:
        known = self.restriction.cheap_labels(self.index) is not None
        return self.label_set() if known else None

    def label_set(self) -> LabelSet:
        restriction = self.restriction
        if restriction._label_set is None:
            restriction._label_set = LabelSet(restriction.labels(self.index))
        return restriction._label_set

    def more_than(self, limit: int) -> bool:
        restriction = self.restriction
        if restriction._labels is not None:
            return len(restriction._labels) > limit
        if restriction.subset is None:
            return False
        if limit not in restriction._more_than:
            restriction._more_than[limit] = restriction.subset.more_than(
                self.index.db, self.index.record.id, limit
            )
        return restriction._more_than[limit]

    def allows(self, labels: np.ndarray) -> np.ndarray:
        "Asked of the label map once for each label while the restriction is reused."
        restriction = self.restriction
        if restriction._labels is not None:
            return self.label_set().allows(labels)
        if restriction.subset is None or not len(labels):
            return np.zeros(len(labels), dtype=bool)
        answers = restriction._answers
        if len(answers) <= labels.max():
            grown = np.full(int(labels.max()) + 1, -1, dtype=np.int8)
            grown[: len(answers)] = answers
            restriction._answers = answers = grown
        unknown = np.unique(labels[answers[labels] < 0])
        if len(unknown):
            answers[unknown] = restriction.subset.allows(
                self.index.db, self.index.record.id, unknown, self.index.label_hints
            )
        return answers[labels] == 1
