"""Fusing two rankings of the same rows, the vector side's (cosine) and the
keyword side's (BM25), into one.

- ``rrf``: reciprocal rank fusion (Cormack et al., SIGIR 2009), a row's
  ``w / (60 + rank)`` from the vector side plus ``(1 - w) / (60 + rank)``
  from the keyword side (ranks from 1; a side that did not find the row adds
  nothing). Needs no scores, so it fuses any two rankings.
- ``convex``: ``w * cosine' + (1 - w) * bm25'``, each side's scores min-max
  normalised over the candidates that side found (Bruch et al., TOIS 2023),
  0 for a row a side did not find.

``w`` is ``weight``, the vector side's share (0.5: both alike; the default
0.4 leans to the keywords). ``depth`` is
how many candidates each side proposes (None: max(4 * number, 50)). The
default is the one the benchmark record shows best across real labelled
sets (docs/hybrid.md), not tuned per set.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from .errors import VectorIndexError

RRF_K = 60
FUSIONS = ("rrf", "convex")
MODES = ("vector", "keyword", "hybrid")
MAX_DEPTH = 10_000
DEFAULTS = {"fusion": "convex", "weight": 0.4, "depth": None}


@dataclass(frozen=True)
class Fused:
    key: Hashable
    value: float  # the fused score: higher is better
    vector_rank: int | None  # 1-based, None if that side did not find it
    keyword_rank: int | None


def depth_for(number: int, depth: int | None) -> int:
    return depth if depth is not None else max(4 * number, 50)


def check(settings: dict[str, Any]) -> dict[str, Any]:
    """Fusion settings (any of fusion, weight, depth) checked, defaults
    filled in; one line naming the bad value otherwise."""
    unknown = sorted(set(settings) - set(DEFAULTS))
    if unknown:
        raise VectorIndexError(
            f"Unknown fusion setting {unknown[0]!r} (settings: {', '.join(DEFAULTS)})"
        )
    values = {**DEFAULTS, **{k: v for k, v in settings.items() if v is not None}}
    if values["fusion"] not in FUSIONS:
        raise VectorIndexError(
            f"fusion must be one of {', '.join(FUSIONS)}, not {values['fusion']!r}"
        )
    weight = values["weight"]
    if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not 0 <= weight <= 1:
        raise VectorIndexError(f"weight must be a number from 0 to 1, not {weight!r}")
    depth = values["depth"]
    if depth is not None and (
        isinstance(depth, bool) or not isinstance(depth, int) or not 1 <= depth <= MAX_DEPTH
    ):
        raise VectorIndexError(f"depth must be a whole number from 1 to {MAX_DEPTH}, not {depth!r}")
    values["weight"] = float(weight)
    return values


def fuse(
    vector: Sequence[tuple[Hashable, float]],
    keyword: Sequence[tuple[Hashable, float]],
    fusion: str,
    weight: float,
) -> list[Fused]:
    """Both sides' (key, score) lists, best first, as one list, best first.
    Ties keep the vector side's order, then the keyword side's."""
    return list(fused_order(vector, keyword, fusion, weight))


def fused_order(
    vector: Sequence[tuple[Hashable, float]],
    keyword: Sequence[tuple[Hashable, float]],
    fusion: str,
    weight: float,
) -> Iterator[Fused]:
    """``fuse``, one item at a time: a query that needs its first few items
    makes only those."""
    vector_rank = {key: rank for rank, (key, _) in enumerate(vector, 1)}
    keyword_rank = {key: rank for rank, (key, _) in enumerate(keyword, 1)}
    keys = list(dict.fromkeys([key for key, _ in vector] + [key for key, _ in keyword]))
    if fusion == "rrf":
        values = {
            key: (weight / (RRF_K + vector_rank[key]) if key in vector_rank else 0.0)
            + ((1 - weight) / (RRF_K + keyword_rank[key]) if key in keyword_rank else 0.0)
            for key in keys
        }
    else:
        vector_norm, keyword_norm = _min_max(vector), _min_max(keyword)
        values = {
            key: weight * vector_norm.get(key, 0.0) + (1 - weight) * keyword_norm.get(key, 0.0)
            for key in keys
        }
    order = sorted(range(len(keys)), key=lambda i: -values[keys[i]])
    for i in order:
        key = keys[i]
        yield Fused(key, values[key], vector_rank.get(key), keyword_rank.get(key))


def _min_max(ranked: Sequence[tuple[Hashable, float]]) -> dict[Hashable, float]:
    if not ranked:
        return {}
    scores = [score for _, score in ranked]
    low, high = min(scores), max(scores)
    if high == low:
        return {key: 1.0 for key, _ in ranked}
    return {key: (score - low) / (high - low) for key, score in ranked}
