"""Signatures for files whose loader can run code.

Chroma's local store keeps an ``index_metadata.pickle`` that Chroma unpickles
when it opens the store: a crafted one runs code. An index folder travels
with a shared database, so a Chroma store is opened only if it carries a
signature made with a key that never leaves this user's llm directory
(``llm.user_dir() / "vector-index.key"``): a store written by someone else,
or elsewhere, is rebuilt from llm's rows instead of being opened.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
from pathlib import Path
from typing import Any

KEY_FILE = "vector-index.key"


def _key() -> bytes:
    import llm

    path = Path(llm.user_dir()) / KEY_FILE
    try:
        return bytes.fromhex(path.read_text().strip())
    except (FileNotFoundError, ValueError):
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    key = secrets.token_bytes(32)
    temp = path.with_name(f".{KEY_FILE}.{secrets.token_hex(4)}")
    with os.fdopen(os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as f:
        f.write(key.hex())
    try:
        os.link(temp, path)  # first writer wins; a racing process reads its key
    except FileExistsError:
        pass
    finally:
        temp.unlink()
    return bytes.fromhex(path.read_text().strip())


def sign(payload: Any) -> str:
    "An HMAC-SHA256 of ``payload`` (JSON-serialisable) under this user's key."
    message = json.dumps(payload, sort_keys=True).encode()
    return hmac.new(_key(), message, hashlib.sha256).hexdigest()


def is_signed(payload: Any, signature: object) -> bool:
    return isinstance(signature, str) and hmac.compare_digest(sign(payload), signature)
