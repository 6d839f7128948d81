"""Retrieval for models: the ``VectorIndex`` toolbox and the ``index:``
fragment loader.

    llm -T 'VectorIndex("docs-idx")' "what do my notes say about X?"
    llm -f 'index:docs-idx:how do I reset a password' "answer using these"

Both embed the text with the index's own model and answer from the index,
brought up to date first as any query is. Both open llm's embeddings
database as ``llm index`` does (``LLM_EMBEDDINGS_DB``, else ``embeddings.db``
in llm's user directory; the toolbox also takes a path). What a model sees
stays small and predictable: a fixed set of keys, content trimmed to a set
number of characters, and errors it caused (an unknown index, a bad filter)
as one line, which llm hands back to the model as the tool's answer.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

import click
import llm

from .errors import VectorIndexError, check_count
from .fusion import MODES

if TYPE_CHECKING:
    from .index import Index, IndexEntry

DEFAULT_NUMBER = 5
MAX_NUMBER = 50
DEFAULT_MAX_CHARS = 1000
# index:NAME:N:QUERY asks for N hits; the query itself may contain colons.
_COUNTED = re.compile(r"(\d+):(.*)", re.DOTALL)


class UnusableToolbox(VectorIndexError, click.ClickException):
    """``VectorIndex("nope")``: a ClickException too, so that llm's command
    line says it in one line when ``-T`` is parsed."""

    def __init__(self, message: str) -> None:
        click.ClickException.__init__(self, message)

    def __str__(self) -> str:
        return self.message


def open_index(name: str, database: str | None = None) -> Index:
    from .database import open_embeddings
    from .index import Index

    if not isinstance(name, str) or not name:
        raise VectorIndexError('An index name is needed, e.g. VectorIndex("docs-idx")')
    return Index(name, open_embeddings(database))


def _source(entry: IndexEntry) -> str:
    "The hit's id, with its collection where the index spans several."
    return f"{entry.collection}/{entry.id}" if entry.collection else entry.id


class VectorIndex(llm.Toolbox):
    """Search an llm embeddings index by meaning: the stored entries most
    similar to a text, and any one entry in full."""

    def __init__(self, name: str, database: str | None = None, max_chars: int = DEFAULT_MAX_CHARS):
        self.index_name = name
        self.database = database
        self.max_chars = max_chars
        self._index: Index | None = None
        try:  # said to the user now (llm -T), not to the model at its first call
            self._opened()
        except VectorIndexError as error:
            raise UnusableToolbox(str(error)) from None

    def _opened(self) -> Index:
        if self._index is None:
            check_count(self.max_chars, "max_chars")
            self._index = open_index(self.index_name, self.database)
        return self._index

    def search(
        self,
        query: str,
        number: int = DEFAULT_NUMBER,
        where: dict | None = None,
        mode: str | None = None,
    ) -> list[dict]:
        """Find the stored entries closest in meaning to the query text. Returns
        up to `number` hits (1-50), best first, each with its id, score (cosine
        similarity), content (trimmed; `truncated` says so) and metadata.
        `where` keeps only entries whose metadata has these values, e.g.
        {"tag": "howto"}; dotted keys reach into nested metadata. `mode`, for
        an index that keeps keywords: "keyword" matches the exact words
        (names, identifiers, rare terms; score is then null), "vector" the
        meaning alone; the default, "hybrid", fuses both."""
        if not isinstance(query, str) or not query.strip():
            raise VectorIndexError("query must be a non-empty text")
        if where is not None and not isinstance(where, dict):
            raise VectorIndexError('where must be an object, e.g. {"tag": "howto"}')
        if mode is not None and not isinstance(mode, str):
            raise VectorIndexError('mode must be "vector", "keyword" or "hybrid"')
        index = self._opened()
        hits = index.similar(
            query, check_count(number, "number", MAX_NUMBER), where=where, mode=mode
        )
        return [self._hit(index, entry) for entry in hits]

    def get(self, id: str) -> dict:
        """The stored entry with this id: its content in full, and its metadata."""
        index = self._opened()
        if not isinstance(id, str) or not id:
            raise VectorIndexError("id must be the id of an entry, as search returns it")
        entry = index.get(id)
        found = {"id": entry.id, "content": entry.content, "metadata": entry.metadata}
        if entry.collection:
            found["collection"] = entry.collection
        return found

    def _hit(self, index: Index, entry: IndexEntry) -> dict:
        content = entry.content
        truncated = content is not None and len(content) > self.max_chars
        hit = {
            "id": entry.id,
            "score": round(entry.score, 4) if entry.score is not None else None,
            "content": content[: self.max_chars] if content is not None and truncated else content,
            "truncated": truncated,
            "metadata": entry.metadata,
        }
        if entry.collection:  # the index spans several collections
            hit["collection"] = entry.collection
        return hit


def load_fragments(argument: str) -> list[llm.Fragment]:
    """
    The top hits of an index as fragments, each with its id as the source.
    index:NAME:QUERY (5 hits) or index:NAME:N:QUERY (N hits, 1-50), and
    index:NAME:MODE:QUERY or index:NAME:MODE:N:QUERY with MODE vector,
    keyword or hybrid (an index with keywords); the index is in
    LLM_EMBEDDINGS_DB, else llm's embeddings.db. Embed with --store so that
    content is kept.
    """
    name, colon, rest = argument.partition(":")
    if not colon or not name:
        raise VectorIndexError(
            "Use index:NAME:QUERY or index:NAME:N:QUERY, e.g. index:docs-idx:5:reset a password"
        )
    number, mode = DEFAULT_NUMBER, None
    first, colon, after = rest.partition(":")
    if colon and first in MODES:
        mode, rest = first, after
    counted = _COUNTED.fullmatch(rest)
    if counted:
        number, rest = int(counted.group(1)), counted.group(2)
    if not rest.strip():
        raise VectorIndexError(f"No query text after index:{argument}")
    index = open_index(name)
    hits = index.similar(rest, check_count(number, "number", MAX_NUMBER), mode=mode)
    fragments = [llm.Fragment(entry.content, _source(entry)) for entry in hits if entry.content]
    if hits and not fragments:
        raise VectorIndexError(
            f"Index {name!r} found {len(hits)} entries but none has stored content: "
            "embed with --store to keep it"
        )
    return fragments
