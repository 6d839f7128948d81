"""The contract every vector index backend implements.

A backend stores float32 vectors under int64 labels and answers k-nearest-
neighbour queries by cosine similarity. It knows nothing of llm, SQLite, ids or
freshness: numpy in, numpy out.
"""

from __future__ import annotations

import abc
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from .errors import InvalidOptions


@dataclass(frozen=True)
class Option:
    "An option a backend accepts: ``llm index create ... -o name value``."

    name: str
    type: type  # int, float, str or bool
    default: Any
    help: str
    minimum: float | None = None  # for numbers: the smallest value allowed
    secret: bool = False  # never printed (tokens)
    # For numbers: the largest value allowed. Options may come from a
    # database someone else wrote: a bound keeps one from asking for memory
    # or time out of all proportion (hnswlib -o M 1000000).
    maximum: float | None = None
    # Set by builds, never by users (auto's chosen kind and why): refused at
    # create and left out of what ``llm index backends`` lists.
    internal: bool = False

    def parse(self, value: Any) -> Any:
        "Convert a value (a string from the CLI, or a Python value) to this type."
        if self.type is bool:
            if isinstance(value, bool):
                return value
            text = str(value).strip().lower()
            if text in ("1", "true", "yes", "on"):
                return True
            if text in ("0", "false", "no", "off"):
                return False
        elif self.type is int:
            if isinstance(value, int) and not isinstance(value, bool):
                return value
            if isinstance(value, str):
                try:
                    return int(value.strip())
                except ValueError:
                    pass
        elif self.type is float:
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                return float(value)
            if isinstance(value, str):
                try:
                    return float(value.strip())
                except ValueError:
                    pass
        elif isinstance(value, self.type):
            return value
        raise InvalidOptions(f"Option {self.name} must be {self.type.__name__}, got {value!r}")


@dataclass(frozen=True)
class Capabilities:
    "What a backend can do, declared as data so callers can plan around it."

    exact: bool = False  # results are the true k nearest, not approximate
    filtered_search: bool = True  # search(allowed=...) is answered natively
    persistent: bool = True  # save() writes files that a new instance reopens
    # False where every write lands at once (a Chroma server): changes made
    # since save() may already be persisted.
    atomic_save: bool = True
    # One instance opened read_only may serve queries from many threads and
    # many Index objects of the process (see open_indexes.py). False where the
    # library keeps its own per-process state (Chroma's clients).
    shareable: bool = True
    # set_search_option changes only the open instance it is called on.
    # False where it changes a setting every reader sees (Chroma's
    # collection configuration): then nothing widens a search for itself.
    private_search_options: bool = True
    # search(allowed=...) may name labels it does not hold, and skips them:
    # then a filter's labels may come from their runs, gaps and all
    # (filters.Filter.ordered_labels). False: every allowed label is held.
    absent_labels: bool = False


@dataclass(frozen=True)
class Remote:
    """Where an index with given settings sends data, and which secrets it
    reads: what this machine must have approved before the backend is opened
    from a catalog row (approvals.py). Names only, never a secret's value."""

    backend: str
    address: str  # e.g. "http://db.example:8000": scheme, host and port
    secrets: tuple[str, ...] = ()  # environment variables it reads

    def describe(self) -> str:
        # (A secret the address already names, e.g. "from $DSN", is not repeated.)
        reads = ", ".join(f"${name}" for name in self.secrets if f"${name}" not in self.address)
        return f"{self.backend} server {self.address}" + (
            f" with the secret in {reads}" if reads else ""
        )


# Bounds on graph options (links per node, candidates explored), far above
# any useful value: hnswlib and faiss allocate by them for every row.
MAX_LINKS = 256
MAX_WIDTH = 8192

# The recall@10 against an exact scan that every index is tuned to at build,
# unless the user names another target or sets the tunable option itself.
DEFAULT_TARGET_RECALL = 0.95

# HNSW candidates explored per query: the values tuning tries, cheapest first.
HNSW_SEARCH_WIDTHS = (16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512, 768, 1024)


@dataclass(frozen=True)
class Tunable:
    """A search-time option that trades speed for recall (a larger value finds
    more of the true neighbours, slower), with the values worth trying,
    cheapest first. Tuning (tuning.py) keeps the cheapest that meets a recall
    target, so a backend that declares one takes part in ``--target-recall``
    and ``auto``."""

    option: str
    values: tuple[int, ...]


class VectorIndex(abc.ABC):
    """A k-NN index over float32 vectors keyed by int64 labels.

    Subclasses set ``name``, ``options`` and ``capabilities``, implement the
    abstract methods, and ``open()`` what ``save()`` last wrote in ``path`` (a
    directory owned by this index), or start empty.

    Contract (checked by ``llm_vector_index.testing.VectorIndexContract``):

    - ``add`` is an upsert: adding a label again replaces its vector.
    - ``remove`` ignores labels it does not hold.
    - ``search`` returns ``(scores, labels)``, each of shape ``(len(queries),
      m)`` with ``m = min(k, live vectors)`` (fewer only where ``allowed``
      leaves fewer), best first; scores are cosine similarity whatever the
      backend measures internally; never a placeholder label such as -1.
    - ``save`` persists atomically: a crash leaves the previous save intact.
    - Opened with ``read_only=True``, an instance is only searched (by many
      threads at once, if ``capabilities.shareable``): it may map its files
      instead of reading them, and need not support ``add``/``remove``/``save``.
    """

    name: ClassVar[str]
    options: ClassVar[tuple[Option, ...]] = ()
    capabilities: ClassVar[Capabilities] = Capabilities()
    # An index created with this backend is tuned to this recall (tuning.py),
    # if the backend declares a tunable option; None: never unasked.
    default_target_recall: ClassVar[float | None] = DEFAULT_TARGET_RECALL

    def __init__(
        self,
        path: Path,
        dimensions: int,
        metric: str = "cosine",
        options: Mapping[str, Any] | None = None,
        *,
        read_only: bool = False,
    ) -> None:
        if metric != "cosine":
            raise InvalidOptions(f"Unsupported metric {metric!r}: only cosine")
        self.path = Path(path)
        self.dimensions = dimensions
        self.metric = metric
        self.read_only = read_only
        self.settings = self.validate_options(options or {}, dimensions)
        self.open()

    def open(self) -> None:
        """Load what ``save()`` last wrote in ``self.path``, or start empty.

        Called by the constructor once ``path``, ``dimensions``, ``metric`` and
        the validated ``settings`` are set: override this, not ``__init__``."""

    # -- options ---------------------------------------------------------

    @classmethod
    def check_user_options(cls, values: Mapping[str, Any]) -> None:
        "Refuse options a user may not set (``Option.internal``: builds set them)."
        for option in cls.options:
            if option.internal and option.name in values:
                settable = ", ".join(o.name for o in cls.options if not o.internal) or "none"
                raise InvalidOptions(
                    f"Option {option.name} of backend {cls.name} is set by builds, not by "
                    f"users (options: {settable})"
                )

    @classmethod
    def validate_options(
        cls, values: Mapping[str, Any], dimensions: int | None = None
    ) -> dict[str, Any]:
        """Return every declared option, parsed, with defaults filled in.

        Raise ``InvalidOptions`` for an unknown or ill-typed option. Subclasses
        extend this to check values (``dimensions`` is None when not yet known).
        """
        declared = {option.name: option for option in cls.options}
        unknown = sorted(set(values) - set(declared))
        if unknown:
            known = ", ".join(declared) or "none"
            raise InvalidOptions(
                f"Unknown option {unknown[0]!r} for backend {cls.name} " f"(options: {known})"
            )
        settings = {
            name: option.parse(values[name]) if name in values else option.default
            for name, option in declared.items()
        }
        for name, option in declared.items():
            if option.minimum is not None and settings[name] < option.minimum:
                raise InvalidOptions(f"Option {name} must be at least {option.minimum:g}")
            if option.maximum is not None and settings[name] > option.maximum:
                raise InvalidOptions(f"Option {name} must be at most {option.maximum:g}")
        return settings

    # -- the contract ----------------------------------------------------

    @abc.abstractmethod
    def add(self, labels: np.ndarray, vectors: np.ndarray) -> None:
        "Insert or replace vectors (n, dimensions) under int64 labels (n,)."

    @abc.abstractmethod
    def remove(self, labels: np.ndarray) -> None:
        "Remove these labels; labels not held are ignored."

    @abc.abstractmethod
    def search(
        self, queries: np.ndarray, k: int, allowed: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        "Return (cosine scores, labels) of the k best per query, best first."

    @abc.abstractmethod
    def count(self) -> int:
        "Number of live vectors."

    @abc.abstractmethod
    def save(self) -> None:
        "Persist to ``self.path`` atomically."

    def close(self) -> None:
        "Release resources (connections, file handles). Optional."

    def destroy(self) -> None:
        "Delete what this index keeps outside ``path`` (e.g. on a server). Optional."

    @classmethod
    def keeps_data_elsewhere(cls, settings: Mapping[str, Any]) -> bool:
        """Does an index with these settings keep data outside its folder (so
        that dropping or rebuilding it must open it to ``destroy()`` that)?"""
        return cls.destroy is not VectorIndex.destroy

    @classmethod
    def settings_in_use(cls, settings: Mapping[str, Any]) -> dict[str, Any]:
        """The settings that apply to an index with these settings, for
        reports (faiss: no nprobe on HNSW). Optional: all of them."""
        return dict(settings)

    @classmethod
    def remote(cls, settings: Mapping[str, Any]) -> Remote | None:
        """The server an index with these settings contacts and the secrets it
        reads, or None if it keeps to its folder. A backend that contacts a
        host or reads a secret must declare it here: the plugin then opens it
        from a catalog row only where this machine approved exactly that
        (a database is a file people share). Must not connect."""
        return None

    @classmethod
    def check_reachable(cls, settings: Mapping[str, Any]) -> None:
        """Refuse settings naming a server that cannot be reached; called when
        an index is created, before anything is written. Optional."""

    def describe(self) -> dict[str, Any]:
        "Facts worth showing in ``llm index show`` (never secrets). Optional."
        return {}

    # -- tuning (optional) ------------------------------------------------

    @classmethod
    def tunable(cls, settings: Mapping[str, Any]) -> Tunable | None:
        "The option tuning may set for an index with these settings; None: none."
        return None

    @classmethod
    def settings_for_rows(
        cls, settings: Mapping[str, Any], rows: int, dimensions: int
    ) -> dict[str, Any] | None:
        """Settings to rebuild with now that the index covers ``rows`` rows,
        or None to keep these. A build that gets new settings rebuilds in full
        and commits them with its files (``auto`` switches kinds this way)."""
        return None

    def candidates(self, k: int) -> int:
        """How many labels to ask ``search`` for when ``k`` results are wanted.
        The plugin re-scores every candidate exactly from llm's stored vectors
        and keeps the best ``k``, so a backend whose scores are approximate
        (compressed codes) returns more than ``k`` and only has to propose
        the true neighbours among them."""
        return k

    def set_search_option(self, name: str, value: Any) -> None:
        """Change a search-time option of this open instance (tuning tries
        several on one private instance). Override to pass it to the library."""
        self.settings = {**self.settings, name: value}

    # -- helpers for implementations --------------------------------------

    def check_vectors(self, vectors: np.ndarray) -> np.ndarray:
        "Return vectors as a C-contiguous float32 (n, dimensions) array."
        array = np.ascontiguousarray(vectors, dtype=np.float32)
        if array.ndim == 1:
            array = array.reshape(1, -1)
        if array.ndim != 2 or array.shape[1] != self.dimensions:
            from .errors import DimensionMismatch

            raise DimensionMismatch(
                f"Expected vectors of {self.dimensions} dimensions, " f"got shape {array.shape}"
            )
        return array


def require(module: str, extra: str):
    "Import an optional library, or say in one line how to install it."
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        from .errors import VectorIndexError

        raise VectorIndexError(
            f"This backend needs {module}: llm install 'llm-vector-index[{extra}]'"
        ) from None


def normalize(vectors: np.ndarray) -> np.ndarray:
    "Unit-length copies of float32 rows; zero rows stay zero (cosine 0)."
    vectors = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    norms[norms == 0] = 1.0
    return (vectors / norms).astype(np.float32, copy=False)


def unique_last(labels: np.ndarray, vectors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    "Drop repeated labels in one batch, keeping the last vector (upsert order)."
    labels = np.asarray(labels, dtype=np.int64).reshape(-1)
    if len(labels) != len(vectors):
        raise ValueError(f"{len(labels)} labels for {len(vectors)} vectors")
    _, first_from_end = np.unique(labels[::-1], return_index=True)
    if len(first_from_end) == len(labels):
        return labels, vectors
    keep = np.sort(len(labels) - 1 - first_from_end)
    return labels[keep], vectors[keep]


# Columns per block in top_k's first pass: the k best blocks by their
# maximum hold the k best scores (a block holding one of them has a maximum
# at least that score, and fewer than k blocks can beat it).
TOP_K_BLOCK = 64


def top_k(scores: np.ndarray, k: int) -> np.ndarray:
    """Column indices of the k highest scores per row, best first. Over
    many columns it partitions the blocks' maxima first, then only the k
    best blocks' columns: a tenth of partitioning every score when k is small."""
    k = min(k, scores.shape[1])
    if k == 0:
        return np.empty((scores.shape[0], 0), dtype=np.int64)
    rows, columns = scores.shape
    blocks = columns // TOP_K_BLOCK
    if 4 * k < blocks:
        maxima = scores[:, : blocks * TOP_K_BLOCK].reshape(rows, blocks, TOP_K_BLOCK).max(axis=2)
        best_blocks = np.argpartition(-maxima, k - 1, axis=1)[:, :k]
        wanted = (best_blocks[:, :, None] * TOP_K_BLOCK + np.arange(TOP_K_BLOCK)).reshape(rows, -1)
        if blocks * TOP_K_BLOCK < columns:  # the last, partial block: always looked at
            tail = np.arange(blocks * TOP_K_BLOCK, columns)
            wanted = np.concatenate([wanted, np.broadcast_to(tail, (rows, len(tail)))], axis=1)
        return np.take_along_axis(wanted, top_k(np.take_along_axis(scores, wanted, 1), k), 1)
    if k < columns:
        part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    else:
        part = np.broadcast_to(np.arange(columns), scores.shape)
    order = np.argsort(-np.take_along_axis(scores, part, axis=1), axis=1, kind="stable")
    return np.take_along_axis(part, order, axis=1)


def no_results(queries: int) -> tuple[np.ndarray, np.ndarray]:
    "What search() returns when nothing can match: (queries, 0) arrays."
    return np.empty((queries, 0), np.float32), np.empty((queries, 0), np.int64)


def exact_search(
    queries: np.ndarray, vectors: np.ndarray, labels: np.ndarray, k: int
) -> tuple[np.ndarray, np.ndarray]:
    "Cosine top-k of normalised queries over any vectors: (scores, labels)."
    scores = queries @ normalize(vectors).T
    best = top_k(scores, k)
    return np.take_along_axis(scores, best, axis=1), labels[best]
