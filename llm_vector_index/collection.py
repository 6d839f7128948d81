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
from typing import Any, Literal

import click
import llm
from llm.embeddings import Collection, Entry

from .errors import IdNotFound, VectorIndexError, first_line

ORIGINALS = {
    name: getattr(Collection, name) for name in ("similar", "similar_by_id", "similar_by_vector")
}


def _through_index(
    collection: Collection,
    index: str | Literal[False] | None,
    where: dict[str, Any] | None,
    query: Callable,
    brute_force: Callable,
):
    """Run ``query(chosen_index)`` on the index the caller named, or on the
    collection's default index; without either, llm's brute force.

    A default index is the plugin's business, not the caller's: whatever
    keeps it from answering (a crafted catalog row, damaged files, a server
    that is down or never approved, an unbuilt index, a row of another
    width, a full disk, its backend's plugin uninstalled, a number llm
    accepts and the index does not) is one warning line, and llm's own
    brute force answers, as if the collection had no default. Only where
    brute force cannot answer (``where=``, which it cannot filter by) does
    the error reach the caller. An index named by the caller raises."""
    from .index import Index

    if index is not None and index is not False:
        with Index(index, collection.db) as named:
            return query(named)
    try:
        default = Index.default_for(collection.db, collection.name) if index is None else None
        if default is not None:
            with default:  # closed after the call: nothing held open between calls
                return query(default)
    except Collection.DoesNotExist:
        raise  # the ID is not in the collection: llm's own answer
    except Exception as error:
        if where:
            raise
        reason = (
            str(error)
            if isinstance(error, VectorIndexError)
            else (f"{type(error).__name__}: {first_line(error)}")
        )
        click.echo(
            f"Warning: default index of {collection.name!r} not used ({reason}); "
            "answering with llm's brute-force scan",
            err=True,
        )
        return brute_force()
    if where:
        raise ValueError("where= needs an index: pass index='name' or set a default")
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
    index: str | Literal[False] | None = None,
    where: dict[str, Any] | None = None,
) -> list[Entry]:
    "llm's similar_by_vector, through an index when there is one (see module)."
    return _through_index(
        self,
        index,
        where,
        lambda chosen: _plain(
            chosen.similar_by_vector(
                vector, number, skip_id=skip_id, prefix=prefix, collection=self.name, where=where
            )
        ),
        lambda: ORIGINALS["similar_by_vector"](
            self, vector, number, skip_id=skip_id, prefix=prefix
        ),
    )


def similar_by_id(
    self: Collection,
    id: str,
    number: int = 10,
    prefix: str | None = None,
    *,
    index: str | Literal[False] | None = None,
    where: dict[str, Any] | None = None,
) -> list[Entry]:
    "llm's similar_by_id, through an index when there is one (see module)."

    def through_index(chosen):
        try:
            entries = chosen.similar_by_id(
                id, number, prefix=prefix, collection=self.name, where=where
            )
        except IdNotFound:
            raise self.DoesNotExist("ID not found") from None  # what llm raises
        return _plain(entries)

    def brute_force():
        # llm's own similar_by_id, but calling llm's similar_by_vector: its
        # own call would come back here, to the default index, and warn twice.
        row = self.db.execute(
            "select embedding from embeddings where collection_id = ? and id = ?",
            [self.id, id],
        ).fetchone()
        if row is None:
            raise self.DoesNotExist("ID not found")
        return ORIGINALS["similar_by_vector"](
            self, llm.decode(row[0]), number, skip_id=id, prefix=prefix
        )

    return _through_index(self, index, where, through_index, brute_force)


def similar(
    self: Collection,
    value: str | bytes,
    number: int = 10,
    prefix: str | None = None,
    *,
    index: str | Literal[False] | None = None,
    where: dict[str, Any] | None = None,
    mode: str | None = None,
    **fusion_settings: Any,
) -> list[Entry]:
    """llm's similar: embed, then search the index (in its default mode, or
    ``mode``: vector, keyword, hybrid; and ``fusion``, ``weight``, ``depth``)
    or brute force. The text is embedded first, as llm does, unless the
    query is by keywords alone."""
    from . import hybrid

    vector = None if mode == "keyword" else self.model().embed(value)

    def brute_force():
        if mode not in (None, "vector") or fusion_settings:
            raise ValueError(f"mode={mode!r} needs an index with keywords: pass index='name'")
        return ORIGINALS["similar_by_vector"](self, vector, number, prefix=prefix)

    return _through_index(
        self,
        index,
        where,
        lambda chosen: _plain(
            hybrid.answer(
                chosen,
                value,
                number,
                mode,
                lambda: vector,
                prefix=prefix,
                collection=self.name,
                where=where,
                settings=fusion_settings,
            )
        ),
        brute_force,
    )


def install() -> None:
    "Route Collection queries through indexes (idempotent)."
    # Monkeypatching is the point here (llm has no hook for it).
    Collection.similar = similar  # type: ignore[method-assign]
    Collection.similar_by_id = similar_by_id  # type: ignore[method-assign]
    Collection.similar_by_vector = similar_by_vector  # type: ignore[method-assign]


def uninstall() -> None:
    "Put llm's own methods back."
    for name, method in ORIGINALS.items():
        setattr(Collection, name, method)
