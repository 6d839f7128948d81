"""The keyword side of one build (build.py): what a build does with the
index's keyword index (keywords.py), if the index has one, and nothing at
all otherwise. Kept apart so that build.py reads as the vectors' build."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from . import keywords, sync
from .errors import DamagedFiles


class BuildTexts:
    """What a build does with the keyword index (keywords.py), if the index
    has one: nothing at all otherwise."""

    def __init__(self, settings: dict | None) -> None:
        self.tokenizer: str | None = settings["tokenizer"] if settings is not None else None
        self.wanted = settings is not None
        self.keyword_index: keywords.KeywordIndex | None = None
        # rows indexed that had no text to keep (None: the index has no keywords)
        self.without_text: int | None = 0 if self.wanted else None
        self.rows: int | None = None  # in the keyword index once committed

    def create(self, folder: Path) -> None:
        if self.tokenizer is not None:
            self.keyword_index = keywords.KeywordIndex.create(
                folder / keywords.FOLDER, self.tokenizer
            )

    def open_current(self, folder: Path, rows: int | None) -> bool:
        """Open the saved keyword index to change it; False if it cannot be
        built on (never filled, missing, damaged, or not the catalog's)."""
        if self.tokenizer is None:
            return True
        if rows is None:
            return False  # keywords added since the last build: fill them
        try:
            self.keyword_index = keywords.KeywordIndex.open(
                folder / keywords.FOLDER, self.tokenizer
            )
        except DamagedFiles:
            return False
        if self.keyword_index.count() != rows:
            self.close()
            return False
        self.rows = rows
        return True

    def add(self, batch: sync.Batch, labels: np.ndarray, usable: np.ndarray, replace: bool) -> None:
        """Index the text of the batch's rankable rows (a row whose vector
        cannot be ranked is never returned, so it is not indexed either)."""
        if self.keyword_index is None or batch.contents is None:
            return
        positions = np.flatnonzero(usable)
        texts = [batch.contents[i] for i in positions]
        added = self.keyword_index.add(labels[positions], texts, replace=replace)
        self.without_text = (self.without_text or 0) + len(texts) - added

    def remove(self, labels) -> None:
        if self.keyword_index is not None:
            self.keyword_index.remove(labels)

    def commit(self) -> None:
        "Save the keyword index and let go of it: a build commits it once."
        if self.keyword_index is not None:
            self.keyword_index.commit()
            self.rows = self.keyword_index.count()
            self.close()

    def values(self) -> dict[str, Any]:
        "The catalog's keyword_rows for this build (nothing without keywords)."
        return {"keyword_rows": self.rows} if self.wanted else {}

    def close(self) -> None:
        "Let go of the keyword index, forgetting what was not committed."
        if self.keyword_index is not None:
            self.keyword_index.close()
            self.keyword_index = None

    def __enter__(self) -> BuildTexts:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()
