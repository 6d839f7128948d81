"""``auto``: exact search while it is interactive, a tuned HNSW graph above.

The default for ``llm index create``. A user should not have to know where
exact search stops being fast, nor what efSearch is: ``auto`` keeps an exact
numpy matrix (recall 1.0, builds in a moment) while a query scans at most
``exact_limit`` stored values (rows x dimensions; 12 million is about 31k rows
of 384 dimensions, 4 ms a query on our 2-core machines: docs/backends.md),
and a faiss HNSW32 graph over 8-bit codes above that, its candidates re-scored
exactly, tuned to recall@10 0.95 (tuning.py).

It is not an index of its own: constructing ``AutoIndex`` returns the backend
of the kind its settings name (``kind``), with that kind's options. A build
asks ``settings_for_rows`` first; when the collection has crossed the limit
(upwards, or below half of it downwards, so that a collection near the line
does not flip on every build) the build rebuilds in full with the new kind
and commits the new settings with it: the switch is as atomic as any full
build. ``llm index show`` prints the kind and the reason in the options.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..base import Capabilities, Option, VectorIndex
from ..errors import InvalidOptions
from ..hookspecs import hookimpl

EXACT_LIMIT = 12_000_000
ANN_KIND = "faiss"
# 8-bit scalar codes: a quarter of the float vectors' memory and file, a
# slightly faster build, and with twice the candidates re-scored exactly from
# llm's stored vectors the same recall as float HNSW32 on the real 40k (0.969
# vs 0.968 at efSearch 48; docs/backends.md).
ANN_OPTIONS = {"factory": "HNSW32,SQ8", "rerank": 2}
TARGET_RECALL = 0.95


def _kind_class(kind: str) -> type[VectorIndex]:
    from ..registry import get_backend

    return get_backend(kind).cls


class AutoIndex(VectorIndex):
    name = "auto"
    options = (
        Option("exact_limit", int, EXACT_LIMIT,
               "Exact search up to this many stored values (rows x dimensions)", 0),
        Option("kind", str, "exact", "The backend in use (set by builds)", internal=True),
        Option("reason", str, "exact search while rows x dimensions stay under exact_limit",
               "Why builds chose it", internal=True),
    )
    capabilities = Capabilities(exact=False, filtered_search=True)
    default_target_recall = TARGET_RECALL

    def __new__(cls, path, dimensions, metric="cosine", options=None, *, read_only=False):
        settings = cls.validate_options(options or {}, dimensions)
        kind = _kind_class(settings["kind"])
        own = {option.name for option in cls.options}
        inner = {key: value for key, value in settings.items() if key not in own}
        return kind(path, dimensions, metric, inner, read_only=read_only)

    @classmethod
    def validate_options(cls, values: Mapping[str, Any], dimensions=None) -> dict[str, Any]:
        own = {option.name for option in cls.options}
        settings = super().validate_options(
            {key: value for key, value in values.items() if key in own}, dimensions
        )
        kind = settings["kind"]
        if kind not in ("exact", ANN_KIND):
            raise InvalidOptions(f"Option kind must be exact or {ANN_KIND}, got {kind!r}")
        inner = {key: value for key, value in values.items() if key not in own}
        kind_class = _kind_class(kind)
        # The kind's own options (ef_search once tuned) are kept; others are not auto's.
        unknown = sorted(set(inner) - {option.name for option in kind_class.options})
        if unknown:
            raise InvalidOptions(
                f"Unknown option {unknown[0]!r} for backend auto (options: exact_limit)"
            )
        if kind == ANN_KIND:
            inner = {**ANN_OPTIONS, **inner}
        return {**settings, **kind_class.validate_options(inner, dimensions)}

    @classmethod
    def tunable(cls, settings):
        return _kind_class(settings["kind"]).tunable(settings)

    @classmethod
    def settings_in_use(cls, settings):
        return _kind_class(settings["kind"]).settings_in_use(settings)


    @classmethod
    def settings_for_rows(cls, settings, rows, dimensions):
        values = rows * dimensions
        limit = settings["exact_limit"]
        if settings["kind"] == "exact" and values > limit:
            kind = ANN_KIND
            reason = (f"{rows} rows x {dimensions} dimensions is more than "
                      f"exact_limit {limit}: exact search would be slow")
        elif settings["kind"] != "exact" and values < limit // 2:
            kind = "exact"
            reason = (f"{rows} rows x {dimensions} dimensions is less than half "
                      f"of exact_limit {limit}: exact search is fast enough")
        else:
            return None
        fresh = {"exact_limit": limit, "kind": kind, "reason": reason}
        return cls.validate_options(fresh, dimensions)

    # Never called: construction returns the chosen kind's backend.
    def add(self, labels, vectors):  # pragma: no cover
        raise NotImplementedError

    remove = search = count = save = add


@hookimpl
def register_vector_index_backends(register):
    register(AutoIndex)
