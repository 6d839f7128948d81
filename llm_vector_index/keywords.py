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
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from . import fusion, paths, storage
from .errors import DamagedFiles, VectorIndexError, first_line

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
MAX_TIED = 10_000  # rows read to put ties in a fixed order
TIE_MARGIN = 32  # rows read past the k-th at first, for ties
# A filtered search chooses between matching the allowed labels in the
# query (a term for a lone label, a range for a run of consecutive ones:
# after a full build labels follow the rows' ids, so an id prefix is one run
# for each way of writing its letters) and reading the unfiltered ranking
# deep enough to hold k allowed rows, by what each costs. Measured at 100k
# rows, µs (one thread, benchmarks/hybrid.py's queries): in the query, about
# 3 a run (up to UNION_LIMIT runs) and 0.2 an allowed label (a range over
# 1,000: 0.27 ms the whole search; 10,000: 2.2 ms); the ranking, about
# 0.005 a document to score them all and 0.43 a row read (42 rows: 0.59
# ms, 2,032: 1.44 ms).
UNION_LIMIT = 256
RUN_COST = 3.0
LABEL_COST = 0.2
DOCUMENT_COST = 0.005
HIT_COST = 0.43
# Rows of the unfiltered ranking read, at most, for each allowed label
# before the filter is put in the query instead (their costs meet about there).
DEEP_PER_ALLOWED = 16
# A filter whose labels are not known yet (its first query): up to this many
# rows are read whole, more are checked among the ranking's rows instead, as
# long as no more than VERIFIED_DEPTH of those are needed (reading 10,000
# allowed labels from SQLite took 4 ms, checking 232 ranked rows 0.14 ms).
READ_LIMIT = 2_000
VERIFIED_DEPTH = 1_000
ASSUMED_SHARE = 10  # a first check reads deep enough for one row in this many allowed
CHECKED_FIRST = 64  # ranked rows asked about at once at first, twice as many each time after
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


class LabelSet:
    """Allowed labels, sorted and distinct, with what a filtered search
    derives from them, each made once: a filter's labels are reused while
    the database is unchanged (sorting 10,000 took 1.3 ms a query)."""

    def __init__(self, labels: np.ndarray | Sequence[int]) -> None:
        self.labels = np.unique(np.asarray(labels, dtype=np.int64))
        self._runs: tuple[np.ndarray, np.ndarray] | None = None
        self._member: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.labels)

    def runs(self) -> tuple[np.ndarray, np.ndarray]:
        "Runs of consecutive labels: each one's first and last."
        if self._runs is None:
            labels = self.labels
            breaks = np.flatnonzero(np.diff(labels) != 1) + 1
            self._runs = labels[np.r_[0, breaks]], labels[np.r_[breaks - 1, len(labels) - 1]]
        return self._runs

    def allows(self, labels: np.ndarray) -> np.ndarray:
        "Which of these labels are in the set (bools)."
        if self._member is None:
            self._member = np.zeros(int(self.labels[-1]) + 1 if len(self) else 0, dtype=bool)
            self._member[self.labels] = True
        member = self._member
        inside = (labels >= 0) & (labels < len(member))
        found = np.zeros(len(labels), dtype=bool)
        found[inside] = member[labels[inside]]
        return found

    # as Allowed
    def known(self) -> LabelSet:
        return self

    def more_than(self, limit: int) -> bool:
        return len(self) > limit

    def label_set(self) -> LabelSet:
        return self


class Allowed(Protocol):
    "The rows a filtered search may return, as its caller can tell them."

    def known(self) -> LabelSet | None:
        "Every allowed label, if they have been read already (else None)."

    def more_than(self, limit: int) -> bool:
        "Whether more than ``limit`` rows may be allowed (counting some that are not is fine)."

    def label_set(self) -> LabelSet:
        "Every allowed label, read now if need be."

    def allows(self, labels: np.ndarray) -> np.ndarray:
        "Which of these labels are allowed, exactly (bools); asked again as a search reads deeper."


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
        (see UNION_LIMIT): their labels matched in the query (as runs of
        consecutive labels), or the unfiltered ranking read deep enough to
        hold ``k`` of them. tantivy's own filter for many scattered labels (a
        term set) comes last: 8 ms for 1,000 labels at 100k rows, 14 ms for
        10,000, where reading 2,000 ranked rows costs 1.5 ms."""
        total = searcher.num_docs
        labels = allowed.known()
        first_check = 2 * k * ASSUMED_SHARE + TIE_MARGIN
        if labels is None and first_check <= VERIFIED_DEPTH and allowed.more_than(READ_LIMIT):
            # Many, not read yet: check the ranking's rows rather than read them all.
            top = self._deep(
                searcher, query, k, allowed.allows, first_check, VERIFIED_DEPTH, all_ties
            )
            if top is not None:
                return top
        if labels is None:
            labels = allowed.label_set()
        if not len(labels):
            return np.zeros(0, dtype=np.float64), np.zeros(0, dtype=np.int64)
        firsts, lasts = labels.runs()
        deep_enough = 2 * k * total // len(labels) + TIE_MARGIN  # rows read to hold k allowed
        in_query = RUN_COST * len(firsts) + LABEL_COST * len(labels)
        ranking = DOCUMENT_COST * total + HIT_COST * deep_enough
        most = DEEP_PER_ALLOWED * len(labels)
        if not (len(firsts) <= UNION_LIMIT and in_query <= ranking) and deep_enough <= most:
            top = self._deep(searcher, query, k, labels.allows, deep_enough, most, all_ties)
            if top is not None:
                return top  # else the allowed rows rank low: the filter in the query costs less
        tantivy = tantivy_module()
        if len(firsts) <= UNION_LIMIT:
            only = tantivy.Query.boolean_query(
                [
                    (
                        tantivy.Occur.Should,
                        (
                            tantivy.Query.term_query(self._schema, LABEL, first)
                            if first == last
                            else tantivy.Query.range_query(
                                self._schema,
                                LABEL,
                                tantivy.FieldType.Integer,
                                first,
                                last,
                                include_lower=True,
                                include_upper=True,
                                use_inverted_index=True,
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

    def _deep(
        self,
        searcher,
        query,
        k: int,
        allows: Callable[[np.ndarray], np.ndarray],
        fetched: int,
        most: int,
        all_ties: bool,
    ) -> tuple[np.ndarray, np.ndarray] | None:
        """The best ``k`` rows that ``allows`` lets through (and every row
        tied with the k-th, ``all_ties``), from the unfiltered ranking read
        ``fetched`` deep and deeper: None once more than ``most`` rows of it
        would be needed. The rows are asked about from the top, a few at a
        time, until the k-th allowed is known and a lower score follows."""
        while True:
            hits = searcher.search(query, fetched, count=False).hits
            scores, labels = self._scored_labels(searcher, hits)
            keep = np.zeros(len(labels), dtype=bool)
            asked, step = 0, CHECKED_FIRST
            while asked < len(labels):
                keep[asked : asked + step] = allows(labels[asked : asked + step])
                asked, step = min(len(labels), asked + step), step * 2
                kept = scores[:asked][keep[:asked]]
                if len(kept) >= k and scores[asked - 1] < kept[k - 1]:
                    # every row past here scores below the k-th: no tie runs on
                    return kept, labels[:asked][keep[:asked]]
            kept = scores[keep]
            if len(hits) < fetched:  # every matching row read
                return kept, labels[keep]
            if len(kept) >= k and (not all_ties or fetched >= MAX_TIED):
                return kept, labels[keep]
            # deep enough for k at the share of allowed rows seen so far
            deeper = max(fetched * 2, 2 * k * fetched // max(len(kept), 1) + TIE_MARGIN)
            if deeper > most:
                return None
            fetched = deeper

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
