"""Backends opened for queries, shared by every ``Index`` in this process.

Opening an index reads its files: seconds for a million rows. llm's own Python
path makes a new ``Index`` for each ``collection.similar()`` call, so a loop of
questions (any RAG app) would pay a full load per question. Instead the
backend opened for queries is kept here, per index folder and index identity,
tagged with the committed generation its files were checked against when
opened, and the options it was opened with; the next ``Index`` of the same
index gets it back, without reading a file, while the catalog records that
generation and those options, and opens the files again once a build has
committed a new generation or a tuning has changed a setting. Only files that
were the catalog's are ever put here (``Index._open`` checks before), so a
generation number names one set of files: a build that saved files and died
before its commit never reaches this cache.

Shared backends are only searched, never changed: a build opens its own copy
(``Holder.for_build`` in holding.py), and after its commit offers it here as the
version it wrote. A superseded backend is dropped, not closed, because
another thread may be searching it; it is freed when its last user lets go.
``release()`` closes them (at exit, on ``llm_vector_index.close_indexes()``,
and for one index when it is dropped).
"""

from __future__ import annotations

import atexit
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .base import VectorIndex

Key = tuple[str, str]  # (index folder, index identity)
# (committed generation, the options as JSON) the backend was opened with.
Version = tuple


@dataclass
class _Slot:
    opening: threading.Lock = field(default_factory=threading.Lock)
    version: Version | None = None
    backend: VectorIndex | None = None


_slots: dict[Key, _Slot] = {}
_slots_lock = threading.Lock()
# Counts release() calls: an Index holding a shared backend from an earlier
# count lets go of it (it may have been closed) and asks again.
releases = 0


def _slot(key: Key) -> _Slot:
    with _slots_lock:
        return _slots.setdefault(key, _Slot())


def peek(key: Key, version: Version) -> VectorIndex | None:
    "The shared backend of ``key`` if it is open as ``version``, else None."
    with _slots_lock:
        slot = _slots.get(key)
    if slot is None:
        return None
    with slot.opening:
        return slot.backend if slot.version == version else None


def get(key: Key, version: Version, open_backend: Callable[[], VectorIndex]) -> VectorIndex:
    """The shared backend of ``key`` saved as ``version``, opened with
    ``open_backend()`` if it is not open (one thread opens, others wait)."""
    slot = _slot(key)
    with slot.opening:
        if slot.backend is None or slot.version != version:
            backend = open_backend()
            slot.backend, slot.version = backend, version
        return slot.backend


def offer(key: Key, version: Version, backend: VectorIndex) -> None:
    "A build's backend, saved and committed as ``version``, for later queries."
    slot = _slot(key)
    with slot.opening:
        slot.backend, slot.version = backend, version


def release(key: Key | None = None) -> None:
    "Close and forget the shared backend of ``key`` (of every index when None)."
    global releases
    with _slots_lock:
        releases += 1
        keys = list(_slots) if key is None else [key]
        slots = [_slots.pop(k) for k in keys if k in _slots]
    for slot in slots:
        with slot.opening:
            if slot.backend is not None:
                slot.backend.close()
                slot.backend = None


def open_count() -> int:
    "How many backends are held open (for tests and diagnostics)."
    with _slots_lock:
        return sum(slot.backend is not None for slot in _slots.values())


atexit.register(release)
