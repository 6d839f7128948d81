"""The example embedding plugin the demo uses (examples/llm-minilm-onnx): a
real model, run offline. Skipped where its packages are not installed
(`make test` installs them)."""

from pathlib import Path

import llm
import numpy as np
import pytest
from llm.plugins import pm

llm_minilm_onnx = pytest.importorskip("llm_minilm_onnx")
if not llm_minilm_onnx.available():
    pytest.skip("the example model's packages are not installed", allow_module_level=True)

SHARED_DATA = Path(__file__).parents[2] / "shared" / "data" / "pypi-minilm-40k.npz"


@pytest.fixture(scope="module")
def model():
    return llm_minilm_onnx.MiniLM()


def embed(model, texts):
    return np.array(list(model.embed_multi(texts)), dtype=np.float64)


def test_unit_length_384_dimensions_deterministic(model):
    texts = ["Parse a URL into its parts.", "", "x" * 5000, "naïve café ☕"]
    first = embed(model, texts)
    assert first.shape == (4, 384)
    assert np.allclose(np.linalg.norm(first, axis=1), 1.0, atol=1e-5)
    assert np.array_equal(first, embed(llm_minilm_onnx.MiniLM(), texts))


def test_batch_order_and_padding_do_not_change_a_vector(model):
    texts = [f"{'word ' * (i * 7 % 40)}sentence number {i}" for i in range(40)]
    together = embed(model, texts)  # sorted by length and padded inside
    alone = np.array([embed(model, [text])[0] for text in texts])
    assert np.allclose(together, alone, atol=1e-5)
    reversed_ = embed(model, texts[::-1])[::-1]
    assert np.allclose(together, reversed_, atol=1e-5)


def test_a_paraphrase_scores_higher_than_an_unrelated_sentence(model):
    query, paraphrase, unrelated = embed(
        model,
        [
            "How do I split a web address into its components?",
            "Parse a URL into scheme, host, path and query.",
            "A recipe for chocolate cake with cherries.",
        ],
    )
    assert query @ paraphrase > query @ unrelated + 0.15  # measured: 0.34 and 0.12


def test_long_texts_are_truncated_at_256_tokens(model):
    base = "tokens " * 300
    a, b = embed(model, [base, base + "and something completely different " * 20])
    assert np.allclose(a, b, atol=1e-6)  # what differs lies past token 256


@pytest.mark.skipif(not SHARED_DATA.exists(), reason="shared data not beside the checkout")
def test_same_vectors_as_the_shared_real_data(model):
    data = np.load(SHARED_DATA)
    mine = embed(model, [str(text) for text in data["texts"][:50]])
    theirs = data["vectors"][:50].astype(np.float64)
    cosines = (mine * theirs).sum(axis=1) / np.linalg.norm(theirs, axis=1)
    assert cosines.min() > 0.999


def test_registered_with_llm_only_when_it_can_run(monkeypatch):
    pm.register(llm_minilm_onnx, name="test-minilm")
    try:
        assert llm.get_embedding_model("minilm").model_id == "minilm-l6-v2-int8"
        monkeypatch.setattr(llm_minilm_onnx, "model_files", lambda: None)
        with pytest.raises(llm.UnknownModelError):
            llm.get_embedding_model("minilm")
    finally:
        pm.unregister(name="test-minilm")
