"The shipped contract suite, run for every built-in backend."

from typing import Any, ClassVar

import pytest

from llm_vector_index.backends.chroma import ChromaIndex
from llm_vector_index.backends.exact import ExactIndex
from llm_vector_index.backends.faiss import FaissIndex
from llm_vector_index.backends.hnswlib import HnswlibIndex
from llm_vector_index.backends.pgvector import PgvectorIndex
from llm_vector_index.testing import VectorIndexContract


class TestExact(VectorIndexContract):
    backend_class = ExactIndex


class TestFaissDefault(VectorIndexContract):
    backend_class = FaissIndex


class TestFaissFlat(VectorIndexContract):
    backend_class = FaissIndex
    options: ClassVar[dict[str, Any]] = {"factory": "Flat"}


class TestFaissIVF(VectorIndexContract):
    backend_class = FaissIndex
    options: ClassVar[dict[str, Any]] = {"factory": "IVF16,Flat", "nprobe": 16}


class TestHnswlib(VectorIndexContract):
    backend_class = HnswlibIndex


class TestChromaLocal(VectorIndexContract):
    backend_class = ChromaIndex


class TestChromaServer(VectorIndexContract):
    backend_class = ChromaIndex

    @pytest.fixture(autouse=True)
    def _server(self, chroma_server):
        self.options = dict(chroma_server)


class TestPgvectorHnsw(VectorIndexContract):
    backend_class = PgvectorIndex

    @pytest.fixture(autouse=True)
    def _server(self, pgvector_dsn):
        self.options = {"dsn_env": pgvector_dsn, "ef_search": 100}


class TestPgvectorIvfflat(VectorIndexContract):
    backend_class = PgvectorIndex

    @pytest.fixture(autouse=True)
    def _server(self, pgvector_dsn):
        self.options = {"dsn_env": pgvector_dsn, "kind": "ivfflat", "lists": 8, "probes": 8}
