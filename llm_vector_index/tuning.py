"""Tuning to a recall target: the cheapest search-time setting that meets it.

A fixed setting is never right for every corpus: HNSW32 with efSearch 64
found 97% of the true top 10 on 100k real sentence embeddings but 76% on a
million synthetic ones. So every index whose backend declares a tunable
option is tuned to a target at build (0.95 unless the user names another:
``llm index build NAME --target-recall 0.99``, ``Index.tune(0.99)``; a value
the user set for the option itself is kept, untuned), and the index
measures it: every value of the option is tried cheapest first, on probes
(``heldout.probe_queries``: new points as far from the data as new text
is, never a stored row that flatters a graph), until recall@10 reaches the
target. The choice goes into the index's options (every later open uses it)
and the curve into the catalog, for ``llm index show``. An index whose row
count has moved by more than ``RETUNE_SHARE`` since is tuned again by its
next build.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Any, Protocol

import numpy as np

from . import catalog, evaluate, heldout
from .base import DEFAULT_TARGET_RECALL
from .errors import VectorIndexError


class Tuned(evaluate.Evaluated, Protocol):
    "What tuning needs of an index: what measuring needs, and its row read again."

    def reload(self) -> None: ...


DEFAULT_TARGET = DEFAULT_TARGET_RECALL
QUERIES = 500
K = 10
RETUNE_SHARE = 0.2  # re-tune when the row count has moved by more than this share
# Below this many rows an index is tuned only when a build names a target: its
# backend's default width already finds nearly all of the true top 10 (0.997
# for faiss HNSW32 ef_search 64 and hnswlib M16 ef 64 on 1,000 rows of the
# real 40k, 0.999 for hnswlib on 1,000 gaussian rows), and every small build
# would pay for the measurement.
TUNED_FROM_ROWS = 1000


@dataclass
class Tuning:
    target: float
    option: str | None  # None: the backend has nothing to trade (exact)
    chosen: Any
    met: bool
    recall: float  # recall@k of the probes, at the chosen value
    recall_at_1: float
    rows: int  # in the index when tuned
    queries: int
    k: int
    # [value, recall@k, recall@1, p50 ms, probes measured] for every value
    # tried; a value that could no longer reach the target was stopped early.
    curve: list[list]
    seconds: float
    when: float

    def to_dict(self) -> dict:
        return asdict(self)

    def summary(self) -> str:
        "One line for build output."
        setting = f"{self.option} {self.chosen}" if self.option else "nothing to tune"
        verdict = "meets" if self.met else "below"
        return (
            f"{setting}: recall@{self.k} {self.recall:.3f} (recall@1 {self.recall_at_1:.3f}) "
            f"on {self.queries} probes, {verdict} target {self.target:g} "
            f"({len(self.curve)} settings tried in {self.seconds:.1f}s)"
        )


def check_target(target: Any) -> float:
    if isinstance(target, bool) or not isinstance(target, (int, float)) or not 0 < target <= 1:
        raise VectorIndexError(f"Target recall must be a number in (0, 1], got {target!r}")
    return float(target)


def tune(
    index: Tuned,
    target: float = DEFAULT_TARGET,
    *,
    queries: int = QUERIES,
    k: int = K,
    seed: int = 0,
) -> Tuning:
    """Measure recall@k of probes for each value of the backend's tunable
    option, cheapest first; keep the first that reaches ``target`` (or, if
    none does, the value with the best recall, reported as not met)."""
    target = check_target(target)
    record = index.record
    if not record.built or not record.rows:
        raise VectorIndexError(
            f"Index {record.name!r} has no rows to tune on: run llm index build {record.name}"
        )
    if reason := catalog.write_error(index.db, record.id):
        raise VectorIndexError(f"Cannot tune index {record.name!r}: {reason}")
    catalog.ensure_schema(index.db)
    started = time.perf_counter()
    tunable = index.backend_class.tunable(index.settings)
    probes = heldout.probe_queries(index, queries, k, seed)
    # A private instance: trying settings must not change what queries use.
    backend = index.holder.private()
    if backend is None:
        raise VectorIndexError(
            f"Index {record.name!r} cannot be opened: run llm index build {record.name}"
        )
    curve: list[list] = []
    try:
        if tunable:
            # A value that can no longer reach the target stops early: the
            # same value is chosen, at a fraction of the cheap values' queries.
            points = evaluate.curve(
                index, backend, probes, tunable.option, tunable.values, stop_below=target
            )
        else:  # nothing to trade: one measurement as it is
            points = iter([(None, evaluate.measure(index, backend, probes))])
        for value, measured in points:
            curve.append(_point(value, measured))
            if measured.recall >= target:
                break
        best = next((point for point in curve if point[1] >= target), None)
        if best is None:  # not met: the best recall measured, cheapest among equals
            best = max(curve, key=lambda point: (point[1], -curve.index(point)))
            if tunable and best[4] < len(probes.keys):  # stopped early: measure it all
                backend.set_search_option(tunable.option, best[0])
                curve[curve.index(best)] = best = _point(
                    best[0], evaluate.measure(index, backend, probes)
                )
        if tunable:
            backend.set_search_option(tunable.option, best[0])  # Chroma: persists it
    finally:
        backend.close()
    tuning = Tuning(
        target=target,
        option=tunable.option if tunable else None,
        chosen=best[0],
        met=best[1] >= target,
        recall=best[1],
        recall_at_1=best[2],
        rows=record.rows,
        queries=len(probes.keys),
        k=k,
        curve=curve,
        seconds=round(time.perf_counter() - started, 2),
        when=time.time(),
    )
    options = dict(record.options)
    if tunable:
        options[tunable.option] = best[0]
    catalog.save_tuning(index.db, record.id, options, target, tuning.to_dict())
    index.reload()
    return tuning


def _point(value: Any, measured: evaluate.Measurement) -> list:
    "A point of the curve: [value, recall@k, recall@1, p50 ms, queries measured]."
    return [
        value,
        round(measured.recall, 4),
        round(measured.recall_at_1, 4),
        round(float(np.median(measured.timings)) * 1000, 3),
        len(measured.timings),
    ]


def needs_tuning(index: Tuned) -> bool:
    """Has the index a target it was not tuned for, at about its present size,
    with the setting its backend trades now (``auto`` may have switched)?"""
    record = index.record
    if record.target_recall is None or (record.rows or 0) < TUNED_FROM_ROWS:
        return False
    tunable = index.backend_class.tunable(index.settings)
    if tunable is None:
        return False  # nothing to trade: exact search
    last = record.tuning
    if (
        not last
        or last.get("target") != record.target_recall
        or last.get("option") != tunable.option
        or not last.get("rows")
    ):
        return True
    return abs(record.rows - last["rows"]) > RETUNE_SHARE * last["rows"]
