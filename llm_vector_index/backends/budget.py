"""What fits a memory budget: the codes ``auto`` may build under ``-o
max_memory 300MB``, best first, with the bytes each needs.

autofaiss picks an index under ``max_index_memory_usage``; so does ``auto``.
The estimates are the sizes of faiss's own files (which a search maps or
reads whole) and the plugin's slot-to-label map (8 bytes a row), measured
with faiss 1.x: an HNSW32 row's links take 272 bytes whatever its codes (664
bytes a row with 384 8-bit codes); an IVF-PQ row is its codes, its id and its
entry in the direct map that removals use (72 bytes with 48-byte codes), plus
the centroids and the PQ codebook once. Re-scoring reads llm's own
stored vectors, so it costs no index memory: it is what lets small codes
keep their recall. On the real 40k (500 held-out queries), IVF-PQ with d/8
bytes a row and 16 candidates a result re-scored exactly gave recall@10
0.958 at nprobe 128 of 1024 lists (0.984 of 256); with d/16 bytes it stopped
at 0.885 however many lists it read, and PQ codes inside an HNSW32 graph
topped out at 0.944 (ef_search 256) while saving only half of the 8-bit
graph's bytes, so neither is offered.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any

from ..errors import InvalidOptions

GRAPH_LINKS = 272  # bytes a row of HNSW32 links (and its level) take
IVF_ROW = 16  # an IVF list's int64 id a row, and the direct map's entry
SLOT_LABEL = 8  # the faiss backend's slot -> label map
EXACT_ROW_ID = 8  # the exact backend keeps an int64 label a row
RERANK_PQ = 16  # candidates a result, re-scored exactly, for PQ codes
SIZE = re.compile(r"(\d+(?:\.\d+)?)\s*([kmgt]i?)?b?", re.IGNORECASE)
UNITS = {
    "": 1,
    "k": 10**3,
    "m": 10**6,
    "g": 10**9,
    "t": 10**12,
    "ki": 2**10,
    "mi": 2**20,
    "gi": 2**30,
    "ti": 2**40,
}


@dataclass(frozen=True)
class Codes:
    "One way to store the rows: a kind of auto, its options, the bytes it needs."

    name: str
    kind: str  # "exact" or "faiss"
    options: dict[str, Any] = field(default_factory=dict)
    bytes: int = 0

    @property
    def family(self) -> str:
        "What a change of codes means: the same family is the same codes."
        return self.name.split(" (")[0]


def parse_size(text: str) -> int | None:
    "``300MB``, ``1.5GB``, ``512MiB``, ``2000000`` -> bytes; '' -> None (no budget)."
    if not str(text).strip():
        return None
    match = SIZE.fullmatch(str(text).strip())
    if not match or float(match.group(1)) <= 0:
        raise InvalidOptions(f"Option max_memory must be a size such as 300MB or 2GB, got {text!r}")
    return int(float(match.group(1)) * UNITS[(match.group(2) or "").lower()])


def format_size(size: float) -> str:
    for unit, scale in (("GB", 10**9), ("MB", 10**6), ("KB", 10**3)):
        if size >= scale:
            return f"{size / scale:.3g} {unit}"
    return f"{int(size)} B"


def exact(rows: int, dimensions: int) -> Codes:
    return Codes("exact float32 matrix", "exact", {}, rows * (4 * dimensions + EXACT_ROW_ID))


def graphs(rows: int, dimensions: int) -> list[Codes]:
    "The approximate codes, best first."
    pq = pq_bytes(dimensions)
    lists = ivf_lists(rows)
    choices = [
        Codes(
            "8-bit HNSW32 graph",
            "faiss",
            {"factory": "HNSW32,SQ8", "rerank": 2},
            rows * (dimensions + GRAPH_LINKS + SLOT_LABEL) + 8 * dimensions,
        ),
    ]
    if pq:
        choices.append(
            Codes(
                f"IVF-PQ ({lists} lists, {pq} bytes a row)",
                "faiss",
                {"factory": f"IVF{lists},PQ{pq}", "rerank": RERANK_PQ},
                rows * (pq + IVF_ROW + SLOT_LABEL) + lists * dimensions * 4 + 256 * dimensions * 4,
            ),
        )
    return choices


def pq_bytes(dimensions: int) -> int | None:
    "PQ sub-quantizers (one byte each): the largest divisor of d up to d/8."
    for m in range(dimensions // 8, 0, -1):
        if dimensions % m == 0:
            return m
    return None


def ivf_lists(rows: int) -> int:
    """The power of two at or below 4 sqrt(rows), with at least 39 training
    rows a list (faiss's own floor for k-means), between 16 and 65,536."""
    wanted = 2 ** int(math.log2(max(4 * math.sqrt(max(rows, 1)), 1)))
    return max(16, min(wanted, 65_536, 2 ** int(math.log2(max(rows // 39, 16)))))


def current(settings: dict[str, Any], rows: int, dimensions: int) -> Codes:
    "The codes an auto index's settings name, with their bytes at ``rows``."
    if settings["kind"] == "exact":
        return exact(rows, dimensions)
    factory = str(settings.get("factory", "")).upper()
    for codes in graphs(rows, dimensions):
        prefix = codes.options["factory"].split(",")
        if factory.split(",")[1:] == prefix[1:] and (
            factory.startswith("IVF") == prefix[0].startswith("IVF")
        ):
            return codes
    return graphs(rows, dimensions)[0]
