"""The values SQL hands the plugin's functions: vectors (llm's float32 blob
or a JSON array), text, and llm's blobs encoded and decoded, each refused
with a one-line reason (sql.py turns it into ``{"error": ...}``)."""

from __future__ import annotations

import json
from typing import Any

from .errors import VectorIndexError

MAX_DIMENSIONS = 65536  # far above any embedding model's width


def encode(values: Any) -> bytes | str:
    "A JSON array of numbers as llm stores a vector: little-endian float32, or an error."
    import numpy as np

    try:
        parsed = json.loads(values) if isinstance(values, str) else None
    except ValueError:
        parsed = None
    if (
        isinstance(parsed, list)
        and 0 < len(parsed) <= MAX_DIMENSIONS
        and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in parsed)
    ):
        with np.errstate(over="ignore"):
            vector = np.array(parsed, dtype="<f4")
        if np.isfinite(vector).all():
            return vector.tobytes()
    return json.dumps(
        {
            "error": "vector_index_encode takes a JSON array of up to "
            f"{MAX_DIMENSIONS} finite numbers, got {kind(values)}"
        }
    )


def decode(blob: Any) -> str:
    "llm's float32 blob as a JSON array of numbers (the floats llm.decode gives), or an error."
    import numpy as np

    if not isinstance(blob, bytes) or not blob or len(blob) % 4:
        size = f" of {len(blob)} bytes" if isinstance(blob, bytes) else ""
        return json.dumps(
            {"error": f"vector_index_decode takes llm's float32 blob, got {kind(blob)}{size}"}
        )
    # NaN and infinities are not JSON: they come back as null.
    values = np.frombuffer(blob, dtype="<f4").astype(np.float64)
    return json.dumps([v if np.isfinite(v) else None for v in values.tolist()])


def vector(embedding: Any, dimensions: int | None) -> Any:
    "llm's little-endian float32 blob, or a JSON array of numbers."
    import numpy as np

    if isinstance(embedding, bytes):
        if dimensions is not None and len(embedding) != 4 * dimensions:
            raise VectorIndexError(
                f"embedding must be a blob of {dimensions} float32 values "
                f"({4 * dimensions} bytes), got {len(embedding)} bytes"
            )
        if len(embedding) % 4:
            raise VectorIndexError(
                f"embedding blob of {len(embedding)} bytes is not float32 values"
            )
        return np.frombuffer(embedding, dtype="<f4")
    if isinstance(embedding, str):
        try:
            values = json.loads(embedding)
        except ValueError:
            values = None
        if isinstance(values, list) and not any(isinstance(v, bool) for v in values):
            return values  # (query_vector checks the rest: flat, numbers, finite)
    raise VectorIndexError(
        f"embedding must be llm's float32 blob or a JSON array of numbers, got {kind(embedding)}"
    )


def text(value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise VectorIndexError(f"text must be non-empty text, got {kind(value)}")
    return value


# A search box's question, not a document: longer text is refused before
# anything is sent to a model (which may be a paid API).
MAX_QUERY_CHARS = 2000


def query_text(value: Any) -> str:
    "Text to embed as a query: non-empty, at most ``MAX_QUERY_CHARS`` characters."
    value = text(value)
    if len(value) > MAX_QUERY_CHARS:
        raise VectorIndexError(
            f"text to embed must be at most {MAX_QUERY_CHARS} characters, got {len(value)}"
        )
    return value


def kind(value: Any) -> str:
    return "NULL" if value is None else type(value).__name__
