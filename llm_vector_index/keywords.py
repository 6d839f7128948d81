"""The keyword index kept beside a vector index: BM25 over the text llm
stored for each row (``--store``), in tantivy (why tantivy and not SQLite
FTS5: docs/backends.md#keyword-search, measured by benchmarks/keyword_engines.py).

It lives in the index's folder (``keywords/``), so copying the database and
its folder copies it, and full builds make it in the staging folder that is
swapped in whole. Documents are keyed by the row's label, as the backend's
vectors are: an upsert deletes the label's document and adds the new one.
tantivy commits atomically (segments first, then ``meta.json``), so a build
killed part-way leaves the last commit, which the generation marker of the
folder then shows to be behind or ahead of the catalog.

tantivy trusts its files (a damaged one can panic, or answer wrongly without
a word), so each commit records every file's size and CRC-32 in
``checks.json`` as storage.py does for the backends' files, and opening the
index checks them: sizes always, the CRC only of a file whose identity
changed (a copied or touched folder).

A query's text is never parsed as query syntax: it is split into terms by
the index's own tokenizer and the terms are OR-ed, so quotes, ``*``, ``-``,
``NEAR``, field names or unbalanced parentheses from a user or a model are
words like any other, never operators.
"""

from __future__ import annotations

import errno
import json
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from . import fusion, paths, storage
from .errors import DamagedFiles, VectorIndexError, first_line
from .keyword_filter import (
    MAX_TIED,
    TIE_MARGIN,
    UNION_LIMIT,
    Allowed,
    InQuery,
    LabelSet,
    from_ranking,
)

FOLDER = "keywords"
LABEL = "label"
# Tokenizers (recorded per index: a new default never changes an old index):
# - words: runs of letters and digits, "check_output" and "os.path" split
#   into their parts;
# - names: as words, and each snake_case name ("check_output", also inside
#   "subprocess.check_output") kept whole as well, in a second field, so a
#   query for the name matches it exactly and one for its parts still
#   matches the parts.
TOKENIZERS = ("words", "names")
DEFAULT_TOKENIZER = "names"
MAX_QUERY_TERMS = 256  # distinct terms read from one query's text
MAX_QUERY_CHARS = 100_000
CHECKS = "checks.json"
# Files in the folder that are not tantivy's data: never checked.
_NOT_DATA = {CHECKS, paths.MARKER, ".tantivy-meta.lock", ".tantivy-writer.lock"}
_WRITER_HEAP = 64_000_000
# tantivy indexes in its own threads while the build goes on: one was the
# build's bottleneck (100k summaries: 3.7 s; two threads: 2.0 s, and queries
# over the two segments as fast). Each thread needs 15 MB of the heap.
_WRITER_THREADS = max(1, min(4, os.cpu_count() or 1))


def tantivy_module():
    """tantivy, imported only when a keyword index is used; missing, one line
    naming the extra that installs it."""
    try:
        import tantivy
    except ImportError:
        raise VectorIndexError(
            "Keyword indexes need tantivy: llm install 'llm-vector-index[keywords]'"
        ) from None
    return tantivy


def _analyzer(pattern: str, stem: bool):
    tantivy = tantivy_module()
    builder = tantivy.TextAnalyzerBuilder(tantivy.Tokenizer.regex(pattern))
    builder = builder.filter(tantivy.Filter.remove_long(64))
    builder = builder.filter(tantivy.Filter.lowercase()).filter(tantivy.Filter.ascii_fold())
    if stem:
        builder = builder.filter(tantivy.Filter.stemmer("english"))
    return builder.build()


# field -> (tokenizer name in the schema, regex, stemmed)
_FIELDS = {
    "text": ("lvi_words", r"[^\W_]+", True),
    "names": ("lvi_names", r"[^\W_]+(?:_[^\W_]+)+", False),
}


def check_tokenizer(tokenizer: Any) -> str:
    if tokenizer not in TOKENIZERS:
        raise VectorIndexError(
            f"Unknown keyword tokenizer {tokenizer!r} (one of {', '.join(TOKENIZERS)})"
        )
    return tokenizer


def settings(value: bool | dict | None) -> dict | None:
    """An index's keyword settings from what a user (or the catalog) gives:
    None or False for none, True for the defaults, or a dict of tokenizer,
    fusion, weight, depth, checked, the rest filled in."""
    if value is None or value is False:
        return None
    if value is True:
        value = {}
    if not isinstance(value, dict):
        raise VectorIndexError(f"keywords must be true, false or settings, not {value!r}")
    tokenizer = check_tokenizer(value.get("tokenizer", DEFAULT_TOKENIZER))
    rest = {key: item for key, item in value.items() if key != "tokenizer"}
    return {"tokenizer": tokenizer, **fusion.check(rest)}


def _fields(tokenizer: str) -> list[str]:
    return ["text"] if check_tokenizer(tokenizer) == "words" else ["text", "names"]


class KeywordIndex:
    "One index's keyword documents: open for reading, or for one build to change."

    def __init__(self, index: Any, folder: Path, tokenizer: str) -> None:
        self._index = index
        self.folder = folder
        self.tokenizer = tokenizer
        self._fields = _fields(tokenizer)
        self._analyzers = {}
        for field in self._fields:
            name, pattern, stem = _FIELDS[field]
            self._analyzers[field] = analyzer = _analyzer(pattern, stem)
            index.register_tokenizer(name, analyzer)
        self._writer = None
        self._schema = index.schema
        self._searcher = None

    @classmethod
    def create(cls, folder: Path, tokenizer: str = DEFAULT_TOKENIZER) -> KeywordIndex:
        "A new, empty keyword index in ``folder`` (which must not exist)."
        tantivy = tantivy_module()

        fields = _fields(tokenizer)
        builder = tantivy.SchemaBuilder()
        builder.add_integer_field(LABEL, indexed=True, fast=True)
        for field in fields:
            builder.add_text_field(
                field,
                tokenizer_name=_FIELDS[field][0],
                index_option="freq" if field == "text" else "basic",
            )
        paths.mark(folder)  # the plugin's: removable by paths.remove_tree
        with _writes():
            index = tantivy.Index(builder.build(), path=str(folder), reuse=False)
        return cls(index, folder, tokenizer)

    @classmethod
    def open(cls, folder: Path, tokenizer: str) -> KeywordIndex:
        "The keyword index saved in ``folder``; DamagedFiles if it is missing or damaged."
        tantivy = tantivy_module()

        _fields(tokenizer)
        if not (folder / "meta.json").is_file():
            raise DamagedFiles(f"the keyword index is missing ({folder.name}/meta.json)")
        _verify(folder)
        try:
            keyword_index = cls(tantivy.Index.open(str(folder)), folder, tokenizer)
            keyword_index.count()  # reads meta.json and every segment's header
        except (KeyboardInterrupt, SystemExit):
            raise
        except BaseException as error:  # noqa: BLE001 (tantivy's errors, panics included)
            raise DamagedFiles(f"the keyword index: {first_line(error)}") from None
        return keyword_index

    # -- writing (one build) --------------------------------------------------

    def _writing(self):
        if self._writer is None:
            with _writes():
                self._writer = self._index.writer(_WRITER_HEAP, _WRITER_THREADS)
        return self._writer

    def add(
        self, labels: Sequence[int] | np.ndarray, texts: Sequence[str | None], replace: bool = True
    ) -> int:
        """Index each text under its label (replacing what the label had,
        unless ``replace`` is False: a new index). Labels whose text is None
        or empty only lose what they had. Returns how many texts were added."""
        tantivy = tantivy_module()

        writer = self._writing()
        added = 0
        with _writes():  # a full heap writes a segment
            for label, text in zip(np.asarray(labels).tolist(), texts):
                if replace:
                    writer.delete_documents_by_term(LABEL, label)
                if text:
                    document = tantivy.Document()
                    document.add_integer(LABEL, label)
                    for field in self._fields:
                        document.add_text(field, text)
                    writer.add_document(document)
                    added += 1
        return added

    def remove(self, labels: Sequence[int] | np.ndarray) -> None:
        writer = self._writing()
        for label in np.asarray(labels).tolist():
            writer.delete_documents_by_term(LABEL, label)

    def commit(self) -> None:
        """Publish the changes atomically and wait for tantivy's merges, so
        that nothing writes into the folder once this returns."""
        if self._writer is not None:
            writer, self._writer = self._writer, None
            with _writes():
                writer.commit()
                writer.wait_merging_threads()
        _record_checks(self.folder)  # (a new index that was given nothing too)
        self._index.reload()
        self._searcher = None

    def rollback(self) -> None:
        "Forget the changes not committed (a build that failed)."
        if self._writer is not None:
            writer, self._writer = self._writer, None
            writer.rollback()
            writer.wait_merging_threads()

    # -- reading --------------------------------------------------------------

    def _current(self):
        if self._searcher is None:
            self._searcher = self._index.searcher()
        return self._searcher

    def count(self) -> int:
        return self._current().num_docs

    def terms(self, text: str) -> dict[str, list[str]]:
        """The distinct terms of ``text`` per field, as the index tokenizes
        documents (at most MAX_QUERY_TERMS in all)."""
        if not isinstance(text, str):
            raise VectorIndexError("A keyword query must be text")
        text = text[:MAX_QUERY_CHARS]
        found, total = {}, 0
        for field in self._fields:
            terms = list(dict.fromkeys(self._analyzers[field].analyze(text)))
            terms = terms[: MAX_QUERY_TERMS - total]
            total += len(terms)
            if terms:
                found[field] = terms
        return found

    def search(
        self,
        text: str,
        k: int,
        allowed: Allowed | np.ndarray | Sequence[int] | None = None,
        *,
        all_ties: bool = True,
    ) -> tuple[np.ndarray, np.ndarray]:
        """The ``k`` best rows for ``text`` by BM25 as (scores, labels), best
        first, ties by label; with ``allowed`` (labels, or an Allowed), only
        among those rows. Without ``all_ties``, a tie at the k-th place is settled among the rows
        tantivy returned (a second search saved where the cut-off barely
        matters: a hybrid query's candidates)."""
        terms = self.terms(text)
        if not terms or k <= 0:
            return np.zeros(0, dtype=np.float32), np.zeros(0, dtype=np.int64)
        among = LabelSet(allowed) if isinstance(allowed, (np.ndarray, Sequence)) else allowed
        query = self._query(terms)
        searcher = self._current()
        try:
            if among is None:
                scores, labels = self._top(searcher, query, k, all_ties)
            else:
                scores, labels = self._top_allowed(searcher, query, k, among, all_ties)
        except (KeyboardInterrupt, SystemExit):
            raise
        except BaseException as error:  # noqa: BLE001 (damage the checks missed: a panic)
            raise DamagedFiles(f"the keyword index: {first_line(error)}") from None
        if not len(scores):
            return np.zeros(0, dtype=np.float32), np.zeros(0, dtype=np.int64)
        order = np.lexsort((labels, -scores))[:k]  # best first, ties by label
        return scores[order].astype(np.float32), labels[order]

    def _query(self, terms: dict[str, list[str]]):
        "The terms OR-ed, each in its own field."
        tantivy = tantivy_module()
        return tantivy.Query.boolean_query(
            [
                (tantivy.Occur.Should, tantivy.Query.term_query(self._schema, field, term))
                for field, field_terms in terms.items()
                for term in field_terms
            ]
        )

    def _top(self, searcher, query, k: int, all_ties: bool) -> tuple[np.ndarray, np.ndarray]:
        """(scores, labels) of the best ``k`` and every row tied with the k-th
        (``all_ties``), in tantivy's order."""
        # Past the k-th, to see whether a tie runs on: tantivy-py scores
        # every matching row whatever the limit (its collector has no
        # block-max WAND), so a margin costs next to nothing and saves a
        # second search for most ties (runs of up to 30 rows).
        fetched = k + TIE_MARGIN if all_ties else k
        hits = searcher.search(query, fetched, count=False).hits
        # Equal scores come in the order the documents sit in the segments,
        # which a build's indexing threads do not fix: fetch every row tied
        # with the k-th, and order ties by label, so that the same rows
        # always give the same answer (up to a bound: a word in every row,
        # each as long, ties them all).
        while (
            all_ties
            and len(hits) == fetched
            and hits[-1][0] == hits[k - 1][0]
            and fetched < min(searcher.num_docs, MAX_TIED)
        ):
            fetched *= 2
            hits = searcher.search(query, fetched, count=False).hits
        return self._scored_labels(searcher, hits)

    def _top_allowed(
        self, searcher, query, k: int, allowed: Allowed, all_ties: bool
    ) -> tuple[np.ndarray, np.ndarray]:
        """As _top, among the ``allowed`` rows, by the way that costs least
        (keyword_filter.py): read from the unfiltered ranking, or their
        labels matched in the query, as runs of consecutive labels. tantivy's
        own filter for many scattered labels (a term set) comes last: 8 ms for
        1,000 labels at 100k rows, 14 ms for 10,000, where reading 2,000
        ranked rows costs 1.5 ms."""

        def read(depth: int) -> tuple[np.ndarray, np.ndarray]:
            return self._scored_labels(searcher, searcher.search(query, depth, count=False).hits)

        found = from_ranking(read, searcher.num_docs, k, allowed, all_ties)
        if not isinstance(found, InQuery):
            return found
        labels = found.labels
        if not len(labels):
            return np.zeros(0, dtype=np.float64), np.zeros(0, dtype=np.int64)
        tantivy = tantivy_module()
        firsts, lasts = labels.runs()
        if len(firsts) <= UNION_LIMIT:
            only = tantivy.Query.boolean_query(
                [
                    (
                        tantivy.Occur.Should,
                        (
                            tantivy.Query.term_query(self._schema, LABEL, first)
                            if first == last and not found.scan
                            else tantivy.Query.range_query(
                                self._schema,
                                LABEL,
                                tantivy.FieldType.Integer,
                                first,
                                last,
                                include_lower=True,
                                include_upper=True,
                                use_inverted_index=not found.scan,
                            )
                        ),
                    )
                    for first, last in zip(firsts.tolist(), lasts.tolist())
                ]
            )
        else:
            only = tantivy.Query.term_set_query(self._schema, LABEL, labels.labels.tolist())
        restricted = tantivy.Query.boolean_query(
            [
                (tantivy.Occur.Must, query),
                (tantivy.Occur.Must, tantivy.Query.const_score_query(only, 0.0)),
            ]
        )
        return self._top(searcher, restricted, k, all_ties)

    @staticmethod
    def _scored_labels(searcher, hits) -> tuple[np.ndarray, np.ndarray]:
        if not hits:
            return np.zeros(0, dtype=np.float64), np.zeros(0, dtype=np.int64)
        labels = searcher.fast_field_values(LABEL, [address for _, address in hits])
        return (
            np.array([score for score, _ in hits], dtype=np.float64),
            np.array(labels, dtype=np.int64),
        )

    def close(self) -> None:
        self.rollback()
        self._searcher = None
        self._index = None


@contextmanager
def _writes() -> Iterator[None]:
    """tantivy's failures to write (a full disk, a read-only folder) as the
    OSError a build reports in one line, as it does the backends'."""
    try:
        yield
    except (KeyboardInterrupt, SystemExit, OSError):
        raise
    except BaseException as error:  # noqa: BLE001 (tantivy's ValueError, or a panic)
        text = first_line(error)
        for code in (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES):
            if os.strerror(code) in text:
                raise OSError(code, os.strerror(code)) from None
        raise OSError(errno.EIO, f"the keyword index could not be written ({text})") from None


def _data_files(folder: Path) -> list[Path]:
    return sorted(
        path
        for path in folder.iterdir()
        if path.name not in _NOT_DATA and not path.name.startswith(f".{CHECKS}.")
    )


def _record_checks(folder: Path) -> None:
    """Record what every file of the committed index is (see the module's
    docstring). A file kept from the last commit, untouched, is not read
    again: an incremental build reads only the segments it wrote."""
    try:
        previous = json.loads((folder / CHECKS).read_text())
    except (OSError, ValueError):
        previous = {}
    checks = {}
    for path in _data_files(folder):
        old = previous.get(path.name) if isinstance(previous, dict) else None
        identity = storage.file_identity(path)
        if isinstance(old, dict) and all(old.get(key) == value for key, value in identity.items()):
            checks[path.name] = old
        else:
            checks[path.name] = storage.file_check(path)
    storage.atomic_write(folder / CHECKS, lambda f: f.write(json.dumps(checks).encode()))


def _verify(folder: Path) -> None:
    "DamagedFiles unless every file the last commit recorded is as it was."
    try:
        checks = json.loads((folder / CHECKS).read_text())
    except FileNotFoundError:
        raise DamagedFiles(f"the keyword index's {CHECKS} is missing") from None
    except (OSError, ValueError) as error:
        raise DamagedFiles(f"the keyword index's {CHECKS}: {first_line(error)}") from None
    if not isinstance(checks, dict) or not all(isinstance(c, dict) for c in checks.values()):
        raise DamagedFiles(f"the keyword index's {CHECKS} is damaged")
    for name, check in checks.items():
        if "/" in name or name in (".", "..") or name in _NOT_DATA:
            raise DamagedFiles(f"the keyword index's {CHECKS} names {name!r}")
        try:
            storage.verify_file(folder, name, check)
        except DamagedFiles as error:
            raise DamagedFiles(f"the keyword index: {error}") from None
