"""llm's rows in Postgres's binary COPY format for the migration's table
(``collection, id, embedding, content, content_blob, metadata, updated``),
and which rows Postgres cannot hold as llm has them."""

from __future__ import annotations

import json
import re
import struct

from . import sync

LLM_COLUMNS = "id, embedding, content, content_blob, metadata, updated"

_INT32 = struct.Struct(">i")
_NULL = _INT32.pack(-1)
_UPDATED = struct.Struct(">iq")
# Escapes of what jsonb refuses: NUL, and UTF-16 surrogates (valid only in pairs).
_JSON_NUL = re.compile(r"\\u0000")
_JSON_SURROGATE = re.compile(r"\\u[dD][89a-fA-F][0-9a-fA-F]{2}")


def _field(value: bytes) -> bytes:
    return _INT32.pack(len(value)) + value


def refusal(content, blob, metadata, updated) -> str | None:
    "Why Postgres cannot hold this row as llm has it, or None."
    if content is not None and (not isinstance(content, str) or "\x00" in content):
        return "content that is not text Postgres can store"
    if blob is not None and not isinstance(blob, bytes):
        return "content_blob that is not bytes"
    if updated is not None and not isinstance(updated, int):
        return "updated that is not an integer"
    if metadata is None:
        return None
    if not isinstance(metadata, str):
        return "metadata that is not JSON text"
    try:
        parsed = json.loads(metadata, parse_constant=_no_constant)
        if _JSON_NUL.search(metadata):
            return "metadata with a NUL character"
        if _JSON_SURROGATE.search(metadata):
            json.dumps(parsed, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:  # (a ValueError too)
        return "metadata with a lone surrogate"
    except ValueError:  # not JSON, or NaN/Infinity
        return "metadata that is not JSON Postgres can store"
    return None


def _no_constant(name: str):
    raise ValueError(name)


def encode_rows(collection: str, page: list, dimensions: int) -> tuple[bytes, int, list]:
    """llm rows ``(id, embedding, content, content_blob, metadata, updated)``
    in COPY's binary format for our columns: (payload, rows kept, [(id,
    reason) held back]). Vectors are converted by numpy in one pass."""
    ids = [row[0] for row in page]
    vectors = sync.vectors_from_blobs(ids, [row[1] for row in page], dimensions)
    usable = sync.rankable(vectors).tolist()
    big_endian = vectors.astype(">f4").tobytes()
    width = 4 * dimensions
    vector_head = _INT32.pack(4 + width) + struct.pack(">HH", dimensions, 0)
    head = b"\x00\x07" + _field(collection.encode("utf-8"))
    parts, refused = [], []
    for i, (id, _, content, blob, metadata, updated) in enumerate(page):
        reason = (
            refusal(content, blob, metadata, updated)
            if usable[i]
            else "a vector that cannot be ranked (NaN, infinite, all zeros or another width)"
        )
        if reason is not None:
            refused.append((id, reason))
            continue
        parts.append(
            b"".join(
                (
                    head,
                    _field(id.encode("utf-8")),
                    vector_head,
                    big_endian[i * width : (i + 1) * width],
                    _NULL if content is None else _field(content.encode("utf-8")),
                    _NULL if blob is None else _field(blob),
                    _NULL if metadata is None else _field(b"\x01" + metadata.encode("utf-8")),
                    _NULL if updated is None else _UPDATED.pack(8, updated),
                )
            )
        )
    return b"".join(parts), len(parts), refused
