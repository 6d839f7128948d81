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

``-o max_memory 300MB`` is a budget for the index's files: the best codes
that fit it are chosen (exact, the 8-bit graph, a PQ graph, IVF-PQ: see
budget.py), again at every build as the rows grow, and a budget that nothing
meets is refused in one line.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..base import Capabilities, Option, VectorIndex
from ..errors import InvalidOptions
from ..hookspecs import hookimpl
from . import budget

EXACT_LIMIT = 12_000_000
ANN_KIND = "faiss"
# 8-bit scalar codes: a quarter of the float vectors' memory and file, a
# slightly faster build, and with twice the candidates re-scored exactly from
# llm's stored vectors the same recall as float HNSW32 on the real 40k (0.969
# vs 0.968 at efSearch 48; docs/backends.md).
ANN_OPTIONS = {"factory": "HNSW32,SQ8", "rerank": 2}


def _kind_class(kind: str) -> type[VectorIndex]:
    from ..registry import get_backend

    return get_backend(kind).cls


class AutoIndex(VectorIndex):
    name = "auto"
    options = (
        Option(
            "exact_limit",
            int,
            EXACT_LIMIT,
            "Exact search up to this many stored values (rows x dimensions)",
            0,
        ),
        Option(
            "max_memory",
            str,
            "",
            "Budget for the index's files, e.g. 300MB: the best codes that fit",
        ),
        Option("kind", str, "exact", "The backend in use (set by builds)", internal=True),
        Option(
            "reason",
            str,
            "exact search while rows x dimensions stay under exact_limit",
            "Why builds chose it",
            internal=True,
        ),
    )
    capabilities = Capabilities(exact=False, filtered_search=True, absent_labels=True)

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
        budget.parse_size(settings["max_memory"])
        kind = settings["kind"]
        if kind not in ("exact", ANN_KIND):
            raise InvalidOptions(f"Option kind must be exact or {ANN_KIND}, got {kind!r}")
        inner = {key: value for key, value in values.items() if key not in own}
        kind_class = _kind_class(kind)
        # The kind's own options (ef_search once tuned) are kept; others are not auto's.
        unknown = sorted(set(inner) - {option.name for option in kind_class.options})
        if unknown:
            raise InvalidOptions(
                f"Unknown option {unknown[0]!r} for backend auto (options: "
                + ", ".join(option.name for option in cls.options if not option.internal)
                + ")"
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
        chosen = _choose(settings, rows, dimensions)
        if chosen is None:
            return None
        codes, reason = chosen
        fresh = {
            "exact_limit": settings["exact_limit"],
            "max_memory": settings["max_memory"],
            "kind": codes.kind,
            "reason": reason,
            **codes.options,
        }
        return cls.validate_options(fresh, dimensions)

    # Never called: construction returns the chosen kind's backend.
    def add(self, labels, vectors):  # pragma: no cover
        raise NotImplementedError

    def remove(self, labels):  # pragma: no cover
        raise NotImplementedError

    def search(self, query, k, allowed=None):  # pragma: no cover
        raise NotImplementedError

    def count(self):  # pragma: no cover
        raise NotImplementedError

    def save(self):  # pragma: no cover
        raise NotImplementedError


def _choose(settings, rows: int, dimensions: int) -> tuple[budget.Codes, str] | None:
    """The codes an auto index of ``rows`` rows should have, and why; None to
    keep its own. Exact while under exact_limit (back to exact only below
    half of it, so that a collection near the line does not flip on every
    build) and within the budget; else the best graph codes that fit. Codes
    that still fit are kept until better ones would fit half as many rows
    again."""
    limit, text = settings["exact_limit"], settings["max_memory"]
    most = budget.parse_size(text)
    values = rows * dimensions
    is_exact = settings["kind"] == "exact"
    size = f"{rows:,} rows x {dimensions} dimensions"

    def fits(codes: budget.Codes) -> bool:
        return most is None or codes.bytes <= most

    under_limit = values <= limit if is_exact else values < limit // 2
    exact = budget.exact(rows, dimensions)
    if under_limit and fits(exact):
        if is_exact:
            return None
        return exact, (
            f"{size} is less than half of exact_limit {limit}: exact search " "is fast enough"
        )
    graphs = budget.graphs(rows, dimensions)
    fitting = [codes for codes in graphs if fits(codes)]
    if not fitting:
        raise InvalidOptions(
            f"max_memory {text} is less than any index of {size} needs: "
            f"{graphs[-1].name} needs about {budget.format_size(graphs[-1].bytes)}"
        )
    best = fitting[0]
    if not is_exact:
        now = budget.current(settings, rows, dimensions)
        if now.family == best.family:
            return None
        families = [codes.family for codes in graphs]
        if fits(now) and families.index(best.family) < families.index(now.family):
            grown = budget.graphs(rows * 3 // 2, dimensions)[families.index(best.family)]
            if not fits(grown):
                return None  # better codes fit only just: keep these
    if most is None:
        return best, (f"{size} is more than exact_limit {limit}: exact search would be slow")
    why = f"{size}: {best.name}, about {budget.format_size(best.bytes)} of max_memory {text}"
    # Larger codes never fit where smaller ones are chosen: name the nearest.
    too_big = [codes for codes in (exact, *graphs) if not fits(codes)]
    if too_big:
        nearest = min(too_big, key=lambda codes: codes.bytes)
        why += f"; {nearest.name} would need {budget.format_size(nearest.bytes)}"
    if not under_limit:
        why += f"; exact search: more than exact_limit {limit} values"
    return best, why


@hookimpl
def register_vector_index_backends(register):
    register(AutoIndex)
