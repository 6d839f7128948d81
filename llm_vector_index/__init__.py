"""Vector indexes for llm embedding collections.

Public API: ``Index`` (open, create, build and query an index), the backend
contract (``VectorIndex``, ``Option``, ``Capabilities``) and ``hookimpl`` for
plugins that add backends through ``register_vector_index_backends``.
"""

from . import collection
from .base import Capabilities, Option, VectorIndex
from .errors import (
    BackendUnavailable,
    DamagedFiles,
    DimensionMismatch,
    IdNotFound,
    IndexBusy,
    IndexExists,
    InvalidIndexName,
    InvalidOptions,
    ModelMismatch,
    NotBuilt,
    UnknownBackend,
    UnknownCollection,
    UnsafePath,
    VectorIndexError,
)
from .hookspecs import hookimpl
from .index import BuildReport, Index, IndexEntry
from .registry import BackendInfo, add_hookspecs, get_backend, get_backends

add_hookspecs()
collection.install()

__all__ = [
    "BackendInfo",
    "BackendUnavailable",
    "BuildReport",
    "Capabilities",
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
    "NotBuilt",
    "Option",
    "UnknownBackend",
    "UnknownCollection",
    "UnsafePath",
    "VectorIndex",
    "VectorIndexError",
    "get_backend",
    "get_backends",
    "hookimpl",
]
