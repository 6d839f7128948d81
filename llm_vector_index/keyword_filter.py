"""A keyword search among the rows a filter allows: which way costs least,
and reading tantivy's unfiltered ranking deep enough for them (keywords.py
builds the tantivy queries).

Either way answers exactly the unfiltered ranking, filtered, with every row
tied with the k-th read, so that ties can be ordered by label:

- the allowed labels matched in the query: a term for a lone label, a range
  for a run of consecutive ones (after a full build labels follow the rows'
  ids, so an id prefix is one run for each way of writing its letters);
- the unfiltered ranking read deep enough to hold k allowed rows, each
  ranked row checked against the allowed ones: in memory when their labels
  are known, else asked of the caller (the label map) a few at a time.

The costs that choose between them, measured at 100k rows (µs, one thread,
benchmarks/hybrid.py's queries):

- in the query through the label field's terms, about 3 a run (up to
  UNION_LIMIT runs) and 0.2 an allowed label (a range over 1,000: 0.27 ms
  the whole search; 10,000: 2.2 ms);
- in the query through the label's fast field (its column, scanned once for
  each range), about 0.0027 a document for each run and 0.02 an allowed label
  (one range over 1,000: 0.37 ms; 10,000: 0.56 ms; 30,000: 0.95 ms; each
  more range about 0.27 ms more);
- the ranking, about 0.005 a document to score them all and 0.43 a row read
  (42 rows: 0.59 ms, 232: 0.72 ms, 2,032: 1.44 ms).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

MAX_TIED = 10_000  # rows read to put ties in a fixed order
TIE_MARGIN = 32  # rows read past the k-th at first, for ties
UNION_LIMIT = 256
RUN_COST = 3.0
LABEL_COST = 0.2
SCAN_COST = 0.0027
SCANNED_LABEL_COST = 0.02
SCAN_LIMIT = 4  # ranges over the fast field at most
DOCUMENT_COST = 0.005
HIT_COST = 0.43
# Rows of the unfiltered ranking read, at most, for each allowed label
# before the filter is put in the query instead (their costs meet about there).
DEEP_PER_ALLOWED = 16
# A filter whose labels are not known yet (its first query): up to this many
# rows are read whole, more are checked among the ranking's rows instead, as
# long as no more than VERIFIED_DEPTH of those are needed (reading 10,000
# allowed labels from SQLite took 2.5 ms, checking the 90 or so ranked rows
# a 10% filter needs about 0.3 ms).
READ_LIMIT = 2_000
VERIFIED_DEPTH = 1_000
ASSUMED_SHARE = 10  # a first check reads deep enough for one row in this many allowed
CHECKED_FIRST = 64  # ranked rows asked about at once at first
CHECK_MARGIN = 1.5  # then as many as the share of allowed rows seen calls for, times this

# (scores, labels) of the unfiltered ranking's first n rows, in tantivy's order
Read = Callable[[int], tuple[np.ndarray, np.ndarray]]


def sorted_distinct(labels: np.ndarray | Sequence[int]) -> np.ndarray:
    """The labels sorted and distinct (int64). Most come sorted already (the
    label map gives them in id order, which a full build's labels follow):
    checked first, as np.unique took 1 ms for 10,000 here."""
    labels = np.asarray(labels, dtype=np.int64)
    if len(labels) > 1 and not (labels[1:] > labels[:-1]).all():
        labels = np.unique(labels)
    return labels


class LabelSet:
    """Allowed labels, sorted and distinct, with what a filtered search
    derives from them, each made once: a filter's labels are reused while
    the database is unchanged (sorting 10,000 took 1.3 ms a query)."""

    def __init__(self, labels: np.ndarray | Sequence[int]) -> None:
        self.labels = sorted_distinct(labels)
        self._runs: tuple[np.ndarray, np.ndarray] | None = None
        self._member: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.labels)

    def runs(self) -> tuple[np.ndarray, np.ndarray]:
        "Runs of consecutive labels: each one's first and last."
        if self._runs is None:
            labels = self.labels
            breaks = np.flatnonzero(np.diff(labels) != 1) + 1
            self._runs = labels[np.r_[0, breaks]], labels[np.r_[breaks - 1, len(labels) - 1]]
        return self._runs

    def allows(self, labels: np.ndarray) -> np.ndarray:
        "Which of these labels are in the set (bools)."
        if self._member is None:
            self._member = np.zeros(int(self.labels[-1]) + 1 if len(self) else 0, dtype=bool)
            self._member[self.labels] = True
        member = self._member
        inside = (labels >= 0) & (labels < len(member))
        found = np.zeros(len(labels), dtype=bool)
        found[inside] = member[labels[inside]]
        return found

    # as Allowed
    def known(self) -> LabelSet:
        return self

    def more_than(self, limit: int) -> bool:
        return len(self) > limit

    def label_set(self) -> LabelSet:
        return self


class Allowed(Protocol):
    "The rows a filtered search may return, as its caller can tell them."

    def known(self) -> LabelSet | None:
        "Every allowed label, if they have been read already (else None)."

    def more_than(self, limit: int) -> bool:
        "Whether more than ``limit`` rows may be allowed (counting some that are not is fine)."

    def label_set(self) -> LabelSet:
        "Every allowed label, read now if need be."

    def allows(self, labels: np.ndarray) -> np.ndarray:
        "Which of these labels are allowed, exactly (bools); asked again as a search reads deeper."


@dataclass
class InQuery:
    "The allowed labels, to be matched in the query: through the fast field (``scan``) or terms."

    labels: LabelSet
    scan: bool


def from_ranking(
    read: Read, total: int, k: int, allowed: Allowed, all_ties: bool
) -> tuple[np.ndarray, np.ndarray] | InQuery:
    """The best ``k`` allowed rows (and every row tied with the k-th,
    ``all_ties``) from the unfiltered ranking of ``total`` rows, where
    reading it costs least; else how to match the allowed labels in the
    query (see the module's docstring)."""
    labels = allowed.known()
    first_check = 2 * k * ASSUMED_SHARE + TIE_MARGIN
    if labels is None and first_check <= VERIFIED_DEPTH and allowed.more_than(READ_LIMIT):
        # Many, not read yet: check the ranking's rows rather than read them all.
        top = deep(read, k, allowed.allows, first_check, VERIFIED_DEPTH, all_ties)
        if top is not None:
            return top
    if labels is None:
        labels = allowed.label_set()
    if not len(labels):
        return InQuery(labels, scan=False)
    deep_enough = 2 * k * total // len(labels) + TIE_MARGIN  # rows read to hold k allowed
    runs = len(labels.runs()[0])
    terms = RUN_COST * runs + LABEL_COST * len(labels) if runs <= UNION_LIMIT else math.inf
    scan = (
        SCAN_COST * total * runs + SCANNED_LABEL_COST * len(labels)
        if runs <= SCAN_LIMIT
        else math.inf
    )
    ranking = DOCUMENT_COST * total + HIT_COST * deep_enough
    most = DEEP_PER_ALLOWED * len(labels)
    if ranking < min(terms, scan) and deep_enough <= most:
        top = deep(read, k, labels.allows, deep_enough, most, all_ties)
        if top is not None:
            return top
    # the allowed rows rank low or are few: the filter in the query costs less
    return InQuery(labels, scan=scan < terms)


def deep(
    read: Read,
    k: int,
    allows: Callable[[np.ndarray], np.ndarray],
    fetched: int,
    most: int,
    all_ties: bool,
) -> tuple[np.ndarray, np.ndarray] | None:
    """The best ``k`` rows that ``allows`` lets through (and every row tied
    with the k-th, ``all_ties``), from the unfiltered ranking read
    ``fetched`` deep and deeper: None once more than ``most`` rows of it
    would be needed. The rows are asked about from the top, a few at a
    time, until the k-th allowed is known and a lower score follows."""
    while True:
        scores, labels = read(fetched)
        keep = np.zeros(len(labels), dtype=bool)
        asked, step = 0, CHECKED_FIRST
        while asked < len(labels):
            keep[asked : asked + step] = allows(labels[asked : asked + step])
            asked = min(len(labels), asked + step)
            kept = scores[:asked][keep[:asked]]
            if len(kept) >= k and scores[asked - 1] < kept[k - 1]:
                # every row past here scores below the k-th: no tie runs on
                return kept, labels[:asked][keep[:asked]]
            # as many more as the allowed rows still missing need at the
            # share seen so far, with a margin (each row costs about 5 µs
            # to check), at most twice as many as the last time
            wanted = CHECK_MARGIN * max(k - len(kept), 1) * asked / max(len(kept), 1)
            step = min(step * 2, max(CHECKED_FIRST // 4, math.ceil(wanted)))
        kept = scores[keep]
        if len(labels) < fetched:  # every matching row read
            return kept, labels[keep]
        if len(kept) >= k and (not all_ties or fetched >= MAX_TIED):
            return kept, labels[keep]
        # deep enough for k at the share of allowed rows seen so far
        deeper = max(fetched * 2, 2 * k * fetched // max(len(kept), 1) + TIE_MARGIN)
        if deeper > most:
            return None
        fetched = deeper
