"""``faiss``: any FAISS index_factory string over normalised vectors.

Vectors live in FAISS under sequential "slots"; ``slot_labels`` maps each slot
to our label. Replacing or removing a label tombstones its slot (many FAISS
types, HNSW among them, cannot remove), tombstones are filtered inside the
search with an ``IDSelectorBitmap``, and the index is compacted when they pile
up. ``import faiss`` happens only in here, and only when an index is opened.
"""

from __future__ import annotations

import contextlib
import re
from pathlib import Path

import numpy as np

from ..base import (
    HNSW_SEARCH_WIDTHS,
    MAX_LINKS,
    MAX_WIDTH,
    Capabilities,
    Option,
    Tunable,
    VectorIndex,
    exact_search,
    no_results,
    normalize,
    unique_last,
)
from ..errors import InvalidOptions, VectorIndexError
from ..hookspecs import hookimpl
from ..readahead import read_ahead
from ..storage import array_writer, load_snapshot, save_snapshot

# Compact when tombstones exceed this share of the slots (and at least 1,000).
COMPACT_RATIO = 0.25
# Filters this small are searched exactly over reconstructed vectors: a graph
# search with a selector this restrictive wanders and may return fewer than k.
EXACT_FILTER_LIMIT = 4096
# IVF lists visited per query: the values tuning tries, cheapest first.
PROBES = (1, 2, 4, 8, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512, 1024)
# Types that must be trained (IVF, PQ, SQ) learn from the first this many
# vectors a build adds (a seeded sample of them when a save finds more
# pending): k-means over all of a million rows would take longer than the
# build, faiss samples far fewer for each centroid anyway, and holding every
# vector of a full build until the end doubled its peak memory.
TRAINING_SAMPLE = 100_000
# Up to this many queries run on one OpenMP thread: thread start-up made single
# Flat queries up to 50x slower with 2 threads on our 2-core machines.
SINGLE_THREAD_QUERIES = 8


# At most this many IVF lists: faiss allocates every list when the string is
# parsed (IVF10000000 took 1.9 GB and 6 s before a single row was added), and
# 65,536 serve a billion rows.
MAX_LISTS = 65_536


def _faiss():
    import faiss

    return faiss


def _check_factory(factory: str) -> None:
    """Refuse, before faiss parses it, a factory string this backend cannot
    build or one that asks for memory out of all proportion (a string may
    come from a database someone else wrote)."""
    if re.search(r"IDMap", factory, re.IGNORECASE):
        raise InvalidOptions(
            f"Invalid faiss factory string {factory!r}: the plugin maps labels itself, "
            "leave IDMap out"
        )
    if re.search(r"(^|[,_])NSG", factory, re.IGNORECASE):
        raise InvalidOptions(
            f"Invalid faiss factory string {factory!r}: NSG cannot add rows once it is "
            "built, and builds add the rows that change: use HNSW"
        )
    for kind, bound in (("IVF", MAX_LISTS), ("HNSW", MAX_LINKS)):
        for number in re.findall(rf"{kind}(\d+)", factory, re.IGNORECASE):
            if int(number) > bound:
                raise InvalidOptions(
                    f"Invalid faiss factory string {factory!r}: {kind}{number} is more "
                    f"than {bound:,}"
                )


@contextlib.contextmanager
def _omp_threads(count: int):
    faiss = _faiss()
    before = faiss.omp_get_max_threads()
    if before == count:
        yield
        return
    faiss.omp_set_num_threads(count)
    try:
        yield
    finally:
        faiss.omp_set_num_threads(before)


class FaissIndex(VectorIndex):
    name = "faiss"
    # HNSW32 with efSearch 64 reached recall@10 0.976 on the 40k real sentence
    # embeddings in shared/data (0.963 on a 100k mix): see docs/backends.md.
    options = (
        Option(
            "factory",
            str,
            "HNSW32",
            "FAISS index_factory string, e.g. " "Flat, HNSW32, IVF1024,Flat, IVF1024,PQ48",
        ),
        Option("ef_search", int, 64, "HNSW: candidates explored per query", 1, maximum=MAX_WIDTH),
        # faiss's own default, 40, left tightly clustered rows poorly linked:
        # at 1M synthetic rows (HNSW32,SQ8) recall@10 reached only 0.91 even
        # at ef_search 512; 80 gave 0.968 at ef_search 128 for a build 22%
        # longer. On the real 40k it makes no difference (docs/backends.md).
        Option(
            "ef_construction", int, 80, "HNSW: candidates explored per insert", 1, maximum=MAX_WIDTH
        ),
        Option("nprobe", int, 128, "IVF: inverted lists visited per query", 1, maximum=MAX_LISTS),
        Option(
            "rerank",
            int,
            1,
            "Candidates fetched per result and re-scored exactly "
            "from llm's stored vectors: above 1 for compressed codes (SQ8, PQ)",
            1,
            maximum=64,
        ),
    )
    capabilities = Capabilities(exact=False, filtered_search=True, absent_labels=True)

    @classmethod
    def validate_options(cls, values, dimensions=None):
        settings = super().validate_options(values, dimensions)
        _check_factory(settings["factory"])
        # Only faiss itself knows which strings it accepts: try the string on the
        # real dimensions (or a divisible stand-in when they are not known yet).
        try:
            _faiss().index_factory(
                dimensions or 384, settings["factory"], _faiss().METRIC_INNER_PRODUCT
            )
        except RuntimeError as error:
            # faiss says where in its C++ it failed: keep only what it says.
            detail = str(error).strip().splitlines()[-1] if str(error).strip() else ""
            detail = re.sub(r"^Error in .*? at \S+:\d+: (Error: )?", "", detail)
            raise InvalidOptions(
                f"Invalid faiss factory string {settings['factory']!r} ({detail}): "
                "try Flat, HNSW32, HNSW32,SQ8, IVF1024,Flat or IVF1024,PQ48"
            ) from None
        return settings

    @classmethod
    def settings_in_use(cls, settings):
        factory = settings["factory"].upper()
        unused = set()
        if "HNSW" not in factory:
            unused |= {"ef_search", "ef_construction"}
        if "IVF" not in factory:
            unused.add("nprobe")
        return {key: value for key, value in settings.items() if key not in unused}

    @classmethod
    def tunable(cls, settings):
        factory = settings["factory"].upper()
        if "HNSW" in factory:
            return Tunable("ef_search", HNSW_SEARCH_WIDTHS)
        if "IVF" in factory:
            return Tunable("nprobe", PROBES)
        return None  # Flat and other exhaustive types: nothing to trade

    def candidates(self, k):
        return k * self.settings["rerank"]

    def set_search_option(self, name, value):
        super().set_search_option(name, value)
        self._plain_parameters = None  # made again with the new value

    def open(self) -> None:
        faiss = _faiss()
        saved = load_snapshot(self.path)
        if saved is None:
            self._index = faiss.index_factory(
                self.dimensions, self.settings["factory"], faiss.METRIC_INNER_PRODUCT
            )
            self._slot_labels = np.empty(0, dtype=np.int64)
            hnsw = self._hnsw()
            if hnsw is not None:
                hnsw.efConstruction = self.settings["ef_construction"]
            ivf = self._ivf()
            if ivf is not None:
                ivf.make_direct_map()  # lets compaction reconstruct vectors
        else:
            self._index = self._read(saved.files["index"])
            self._slot_labels = saved.array("slot_labels")
        self._slots: dict[int, int] | None = None  # label -> live slot, lazily
        self._live_mask: np.ndarray | None = None
        self._all_live = True
        self._live_count = 0
        # What kind of index it is decides the search parameters: found once.
        self._hnsw_params = self._hnsw() is not None
        self._ivf_params = not self._hnsw_params and self._ivf() is not None
        self._plain_parameters = None
        # Vectors waiting until there are enough to train on (IVF, PQ).
        self._pending: list[np.ndarray] = []
        if saved is not None and "pending" in saved.files:
            self._pending.append(np.array(saved.array("pending")))

    def _read(self, path):
        """Read a saved index. Opened for queries only, the vectors (or codes)
        are memory-mapped rather than read: opening costs what the first
        queries touch, not the whole file (faiss >= 1.11)."""
        faiss = _faiss()
        if self.read_only:
            # From a cold page cache, faiss's own reads through the mapping
            # are page by page: readahead.py reads the file in order beside it.
            read_ahead(Path(path))
            for flags in ("IO_FLAG_MMAP_IFC", "IO_FLAG_MMAP"):
                if hasattr(faiss, flags):
                    try:
                        return faiss.read_index(
                            str(path), getattr(faiss, flags) | faiss.IO_FLAG_READ_ONLY
                        )
                    except RuntimeError:
                        continue  # a type this kind of mapping does not cover
        return faiss.read_index(str(path))

    # -- faiss index types --------------------------------------------------

    def _hnsw(self):
        index = _faiss().downcast_index(self._index)
        return getattr(index, "hnsw", None)

    def _ivf(self):
        try:
            return _faiss().extract_index_ivf(self._index)
        except RuntimeError:
            return None

    def _search_parameters(self, selector):
        if selector is None:  # the common case: made once, only read by faiss
            if self._plain_parameters is None:
                self._plain_parameters = self._make_parameters(None)
            return self._plain_parameters
        return self._make_parameters(selector)

    def _make_parameters(self, selector):
        faiss = _faiss()
        if self._hnsw_params:
            return faiss.SearchParametersHNSW(efSearch=self.settings["ef_search"], sel=selector)
        if self._ivf_params:
            return faiss.SearchParametersIVF(nprobe=self.settings["nprobe"], sel=selector)
        return faiss.SearchParameters(sel=selector)

    # -- bookkeeping ----------------------------------------------------------

    def _slot_map(self) -> dict[int, int]:
        if self._slots is None:
            live = np.flatnonzero(self._slot_labels >= 0)
            self._slots = dict(zip(self._slot_labels[live].tolist(), live.tolist()))
        return self._slots

    def _live(self) -> np.ndarray:
        "Which slots hold a live vector (cached: queries must not pay O(n))."
        if self._live_mask is None:
            self._live_mask = self._slot_labels >= 0
            self._live_count = int(self._live_mask.sum())
            self._all_live = self._live_count == len(self._live_mask)
        return self._live_mask

    def _changed(self) -> None:
        self._live_mask = None

    def _dead_count(self) -> int:
        return len(self._slot_labels) - self.count()

    def _flush(self) -> None:
        """Train on and add vectors held back because the index was untrained.

        Types that must be trained (IVF, PQ) wait until there are enough
        vectors to train on; until then the few vectors they hold are searched
        exactly, which is also the right answer for so few."""
        if not self._pending:
            return
        vectors = np.concatenate(self._pending)
        self._pending = [vectors]
        if not self._index.is_trained:
            sample = vectors
            if len(vectors) > TRAINING_SAMPLE:
                chosen = np.random.default_rng(0).choice(
                    len(vectors), TRAINING_SAMPLE, replace=False
                )
                sample = vectors[np.sort(chosen)]
            try:
                self._index.train(sample)
            except RuntimeError as error:
                if "training points" in str(error):
                    return  # too few yet: stay pending
                raise VectorIndexError(
                    f"faiss {self.settings['factory']} could not train: "
                    f"{str(error).strip().splitlines()[-1]}"
                ) from None
        self._index.add(vectors)
        self._pending = []

    def _vectors(self, slots: np.ndarray) -> np.ndarray:
        if self._pending:  # untrained: every slot is pending
            if len(self._pending) > 1:
                self._pending = [np.concatenate(self._pending)]
            return self._pending[0][slots]
        return self._index.reconstruct_batch(slots)

    # -- the contract -------------------------------------------------------------

    def add(self, labels: np.ndarray, vectors: np.ndarray) -> None:
        labels, vectors = unique_last(labels, normalize(self.check_vectors(vectors)))
        if len(labels) == 0:
            return
        self.remove(labels)  # an upsert tombstones the old slot
        slots = self._slot_map()
        start = len(self._slot_labels)
        self._slot_labels = np.concatenate([self._slot_labels, labels])
        slots.update(zip(labels.tolist(), range(start, start + len(labels))))
        self._changed()
        if self._index.is_trained and not self._pending:
            self._index.add(vectors)
            return
        self._pending.append(vectors)
        # Enough to train on: train and add now, and the rest as it comes,
        # rather than hold every vector of a full build twice in memory.
        if sum(len(pending) for pending in self._pending) >= TRAINING_SAMPLE:
            self._flush()

    def remove(self, labels: np.ndarray) -> None:
        slots = self._slot_map()
        for label in np.asarray(labels, dtype=np.int64).tolist():
            slot = slots.pop(label, None)
            if slot is not None:
                self._slot_labels[slot] = -1
                self._changed()

    def search(
        self, queries: np.ndarray, k: int, allowed: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        faiss = _faiss()
        queries = normalize(self.check_vectors(queries))
        live = self._live()
        all_live, live_count = self._all_live, self._live_count  # cached: not O(n) a query
        if allowed is not None:
            live = live & np.isin(self._slot_labels, np.asarray(allowed, dtype=np.int64))
            all_live, live_count = False, int(live.sum())
        wanted = min(k, live_count)
        if wanted == 0:
            return no_results(len(queries))
        few_allowed = allowed is not None and live_count <= EXACT_FILTER_LIMIT
        if self._pending or few_allowed:
            # Untrained, or few allowed: scanning them beats a filtered walk.
            return self._exact_search(queries, k, np.flatnonzero(live))
        selector = None
        if not all_live:
            bitmap = np.packbits(live, bitorder="little")
            selector = faiss.IDSelectorBitmap(len(live), faiss.swig_ptr(bitmap))
        threads = 1 if len(queries) <= SINGLE_THREAD_QUERIES else faiss.omp_get_max_threads()
        with _omp_threads(threads):
            try:
                scores, slots = self._index.search(
                    queries, wanted, params=self._search_parameters(selector)
                )
            except RuntimeError:  # a composite type that takes no parameters
                return self._exact_search(queries, k, np.flatnonzero(live))
        if (slots < 0).any():  # the graph ran dry under the filter: be exact
            return self._exact_search(queries, k, np.flatnonzero(live))
        return scores, self._slot_labels[slots]

    def _exact_search(self, queries, k, slots):
        return exact_search(queries, self._vectors(slots), self._slot_labels[slots], k)

    def count(self) -> int:
        self._live()
        return self._live_count

    def save(self) -> None:
        self._flush()
        dead = self._dead_count()
        compactable = not self._pending and dead >= 1000
        if compactable and dead > COMPACT_RATIO * len(self._slot_labels):
            self._compact()
        files = {
            # written by faiss itself: no copy of the index through Python
            "index": lambda path: _faiss().write_index(self._index, str(path)),
            "slot_labels": array_writer(self._slot_labels),
        }
        if self._pending:
            files["pending"] = array_writer(self._pending[0])
        save_snapshot(self.path, files)

    def _compact(self) -> None:
        "Rebuild from the live vectors so tombstones stop costing time and space."
        live = np.flatnonzero(self._slot_labels >= 0)
        vectors = self._index.reconstruct_batch(live)
        self._index.reset()
        ivf = self._ivf()
        if ivf is not None:
            ivf.make_direct_map()
        self._index.add(vectors)
        self._slot_labels = self._slot_labels[live]
        self._slots = None
        self._changed()


@hookimpl
def register_vector_index_backends(register):
    register(FaissIndex)
