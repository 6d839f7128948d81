"""Teach ``llm.Collection`` to use vector indexes, without subclassing it.

Importing ``llm_vector_index`` (which llm does when it loads plugins) wraps
``Collection.similar``, ``similar_by_id`` and ``similar_by_vector`` so they
accept ``index=``:

- ``index=None`` (the default): the collection's default index if it has one,
  else llm's own brute force, unchanged (same results, same SQL);
- ``index="name"``: that index, which must cover the collection;
- ``index=False``: llm's brute force, even with a default index.

``where={...}`` filters on metadata and needs an index. With an index over
several collections, results come from this collection only. Everything here
is in this one module so that it is easy to remove if llm grows its own hook.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click
from llm.embeddings import Collection, Entry

from .errors import (
    BackendUnavailable, DamagedFiles, IdNotFound, InvalidIndexName, NotApproved, UnsafePath,
)

ORIGINALS = {
    name: getattr(Collection, name)
    for name in ("similar", "similar_by_id", "similar_by_vector")
}


def _chosen_index(collection: Collection, index: str | bool | None, where):
    from .index import Index

    if index is False:
        chosen = None
    elif index is None:
        chosen = Index.default_for(collection.db, collection.name)
    else:
        chosen = Index(index, collection.db)
    if chosen is None and where:
        raise ValueError("where= needs an index: pass index='name' or set a default")
    return chosen


def _through_index(
    collection: Collection,
    index: str | bool | None,
    chosen,
    query: Callable,
    brute_force: Callable,
):
    """Run ``query`` on the chosen index. A default index that cannot be used
    safely (a catalog row that would lead outside its folder, damaged files,
    a Chroma server that is down or that this machine never approved) is not used: llm's own brute force answers instead, with a warning, as if
    the collection had no default. An index named by the caller raises."""
    try:
        with chosen:  # closed after the call: nothing held open between calls
            return query()
    except (InvalidIndexName, UnsafePath, DamagedFiles, BackendUnavailable, NotApproved) as error:
        if index is not None:
            raise
        click.echo(
            f"Warning: default index of {collection.name!r} not used ({error}); "
            "answering with llm's brute-force scan",
            err=True,
        )
        return brute_force()


def _plain(entries) -> list[Entry]:
    "Exactly llm's Entry objects, so callers cannot tell the difference."
    return [Entry(e.id, e.score, e.content, e.metadata) for e in entries]


def similar_by_vector(
    self: Collection,
    vector,
    number: int = 10,
    skip_id: str | None = None,
    prefix: str | None = None,
    *,
    index: str | bool | None = None,
    where: dict[str, Any] | None = None,
) -> list[Entry]:
    "llm's similar_by_vector, through an index when there is one (see module)."
    chosen = _chosen_index(self, index, where)

    def brute_force():
        return ORIGINALS["similar_by_vector"](self, vector, number, skip_id=skip_id, prefix=prefix)

    if chosen is None:
        return brute_force()
    return _through_index(self, index, chosen, lambda: _plain(
        chosen.similar_by_vector(
            vector, number, skip_id=skip_id, prefix=prefix, collection=self.name, where=where
        )
    ), brute_force)


def similar_by_id(
    self: Collection,
    id: str,
    number: int = 10,
    prefix: str | None = None,
    *,
    index: str | bool | None = None,
    where: dict[str, Any] | None = None,
) -> list[Entry]:
    "llm's similar_by_id, through an index when there is one (see module)."
    chosen = _chosen_index(self, index, where)

    def brute_force():
        return ORIGINALS["similar_by_id"](self, id, number, prefix=prefix)

    if chosen is None:
        return brute_force()

    def through_index():
        try:
            entries = chosen.similar_by_id(
                id, number, prefix=prefix, collection=self.name, where=where
            )
        except IdNotFound:
            raise self.DoesNotExist("ID not found") from None  # what llm raises
        return _plain(entries)

    return _through_index(self, index, chosen, through_index, brute_force)


def similar(
    self: Collection,
    value: str | bytes,
    number: int = 10,
    prefix: str | None = None,
    *,
    index: str | bool | None = None,
    where: dict[str, Any] | None = None,
) -> list[Entry]:
    "llm's similar: embed, then similar_by_vector (which picks the index)."
    vector = self.model().embed(value)
    return similar_by_vector(self, vector, number, prefix=prefix, index=index, where=where)


def install() -> None:
    "Route Collection queries through indexes (idempotent)."
    Collection.similar = similar
    Collection.similar_by_id = similar_by_id
    Collection.similar_by_vector = similar_by_vector


def uninstall() -> None:
    "Put llm's own methods back."
    for name, method in ORIGINALS.items():
        setattr(Collection, name, method)
