"""One row of the catalog as it is read: every value checked.

A database is a file people share, and a catalog row is read by every
command, by llm's own ``llm similar`` through a default index, and by any
SELECT in a Datasette: one bad value (options that are not JSON, dimensions
of 10^12) must be one line naming the row (``DamagedCatalog``), never an
error deep inside numpy or a library, nor in every command at once.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any

from . import keywords
from .errors import DamagedCatalog, VectorIndexError

# The widest vectors an index takes (the largest embedding models give 4,096
# to 8,192): a value read from a database is bounded before numpy sees it.
MAX_DIMENSIONS = 65_536


@dataclass
class IndexRecord:
    "One row of ``vector_indexes`` plus its collections, in creation order."

    id: int
    name: str
    backend: str
    options: dict[str, Any]
    model: str
    dimensions: int | None
    metric: str
    created: float
    built: float | None
    build_seconds: float | None
    watermark: int | None
    rows: int
    next_label: int
    generation: int
    refresh: str = "auto"
    fingerprint: dict | None = None
    target_recall: float | None = None
    tuning: dict | None = None
    keywords: dict | None = None  # settings of its keyword index, None: it has none
    keyword_rows: int | None = None  # rows in the keyword index, None: not filled yet
    ordered_labels: int | None = None  # labels below it follow the ids (catalog m008)
    collections: list[str] = field(default_factory=list)

    @classmethod
    def from_row(cls, row: dict, collections: list[str]) -> IndexRecord:
        """The row, every value checked: a database is a file people share,
        and one bad value must be one line naming the row (``DamagedCatalog``),
        not an error deep in a library, in every command."""
        values = dict(row)
        try:
            values["options"] = _json_object(values, "options")
            for key in ("fingerprint", "tuning", "keywords"):
                values[key] = _json_object(values, key) if values.get(key) is not None else None
            if values["keywords"] is not None:
                values["keywords"] = _keyword_settings(values["keywords"])
            for key, low, high in _WHOLE_NUMBERS:
                _check_number(values, key, low, high, whole=True)
            for key in ("created", "built", "build_seconds", "target_recall"):
                _check_number(values, key, 0, None, whole=False)
            for key in ("backend", "model"):
                if not isinstance(values.get(key), str) or not values[key]:
                    raise ValueError(f"{key} is not a name")
            if values.get("refresh") not in ("auto", "manual"):
                raise ValueError(f"refresh is {values.get('refresh')!r}, not auto or manual")
            if values.get("created") is None:
                raise ValueError("created is missing")
        except ValueError as problem:
            name = values.get("name")
            raise DamagedCatalog(
                f"Index {name!r} has a damaged catalog row ({problem}): drop it with "
                f"llm index drop {name} and create it again"
            ) from None
        return cls(**values, collections=collections)


# Columns that hold whole numbers, with the range each may take.
_WHOLE_NUMBERS = (
    ("dimensions", 1, MAX_DIMENSIONS),
    ("rows", 0, None),
    ("next_label", 0, None),
    ("generation", 0, None),
    ("watermark", None, None),
    ("keyword_rows", 0, None),
    ("ordered_labels", 0, None),
)


def _keyword_settings(settings: dict) -> dict | None:
    try:
        return keywords.settings(settings)
    except VectorIndexError as error:
        raise ValueError(f"keywords: {error}") from None


def _json_object(values: dict, key: str) -> dict:
    try:
        value = json.loads(values[key])
    except (KeyError, TypeError, ValueError):
        raise ValueError(f"{key} is not JSON") from None
    if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
        raise ValueError(f"{key} is not a JSON object")
    return value


def _check_number(values: dict, key: str, low, high, whole: bool) -> None:
    value = values.get(key)
    if value is None:
        return
    kinds = (int,) if whole else (int, float)
    if isinstance(value, bool) or not isinstance(value, kinds) or math.isnan(value):
        raise ValueError(f"{key} is {value!r}, not a {'whole ' if whole else ''}number")
    if (low is not None and value < low) or (high is not None and value > high):
        bounds = f"from {low} to {high}" if high is not None else f"at least {low}"
        raise ValueError(f"{key} is {value!r}, not {bounds}")


@dataclass
class DamagedRecord:
    "A catalog row that cannot be read (see IndexRecord.from_row): it can be dropped."

    name: Any
    problem: str
