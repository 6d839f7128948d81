"""Vector indexes for llm embedding collections.

Public API: ``Index`` (open, create, build and query an index), the backend
contract (``VectorIndex``, ``Option``, ``Capabilities``, ``Remote``) and ``hookimpl`` for
plugins that add backends through ``register_vector_index_backends``.
``close_indexes()`` closes the indexes this process holds open for queries
(they stay open between calls, see open_indexes.py; closed at exit anyway).
"""

from . import collection
from .base import Capabilities, Option, Remote, Tunable, VectorIndex
from .errors import (
    BackendUnavailable,
    CannotWrite,
    DamagedCatalog,
    DamagedFiles,
    DimensionMismatch,
    IdNotFound,
    IndexBusy,
    IndexExists,
    InvalidIndexName,
    InvalidOptions,
    ModelMismatch,
    NotApproved,
    NotBuilt,
    UnknownBackend,
    UnknownCollection,
    UnsafePath,
    VectorIndexError,
)
from .hookspecs import hookimpl
from .index import BuildReport, Index, IndexEntry
from .open_indexes import release as close_indexes
from .registry import BackendInfo, add_hookspecs, get_backend, get_backends
from .related import RelatedReport, RelatedRow

add_hookspecs()
collection.install()

__all__ = [
    "BackendInfo",
    "BackendUnavailable",
    "BuildReport",
    "CannotWrite",
    "Capabilities",
    "DamagedCatalog",
    "DamagedFiles",
    "DimensionMismatch",
    "IdNotFound",
    "Index",
    "IndexBusy",
    "IndexEntry",
    "IndexExists",
    "InvalidIndexName",
    "InvalidOptions",
    "ModelMismatch",
    "NotApproved",
    "NotBuilt",
    "Option",
    "RelatedReport",
    "RelatedRow",
    "Remote",
    "Tunable",
    "UnknownBackend",
    "UnknownCollection",
    "UnsafePath",
    "VectorIndex",
    "VectorIndexError",
    "close_indexes",
    "get_backend",
    "get_backends",
    "hookimpl",
]
