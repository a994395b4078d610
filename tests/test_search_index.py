"""``SimCSE.build_index`` / ``search``: exact search in torch against brute force, search by vectors, an index
built from given embeddings."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import torch
from conftest import make_model

import simcse_hub.inference as search_module
from simcse_hub import SimCSE, save_model
from simcse_hub.inference import exact_search

HAS_FAISS = importlib.util.find_spec("faiss") is not None
CORPUS = [
    "A man is playing a guitar.",
    "A man is playing the piano.",
    "A woman is slicing an onion.",
    "A woman is cutting a tomato.",
    "The dog runs on the beach.",
    "A cat eats food.",
    "Two people are dancing on the stage.",
    "A child is reading a book.",
]


@pytest.fixture(scope="module")
def tool(tmp_path_factory, tokenizer):
    return SimCSE(save_model(make_model("bert", seed=2, pooler_type="avg"), tmp_path_factory.mktemp("search"),
                             tokenizer), device="cpu")


def unit(rng: np.random.RandomState, n: int, dim: int) -> np.ndarray:
    vectors = rng.randn(n, dim).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def brute_force(queries: np.ndarray, corpus: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    scores = queries.astype(np.float64) @ corpus.astype(np.float64).T  # (q, n)
    ids = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(scores, ids, axis=1), ids


@pytest.mark.parametrize("chunk", [None, 1, 700])
def test_exact_search_equals_brute_force(monkeypatch, chunk):
    if chunk is not None:  # scores computed a few queries at a time
        monkeypatch.setattr(search_module, "SEARCH_SCORES_PER_CHUNK", chunk)
    rng = np.random.RandomState(0)
    corpus, queries = unit(rng, 300, 16), unit(rng, 37, 16)
    for k in (1, 10, 300):
        scores, ids = exact_search(torch.from_numpy(queries), torch.from_numpy(corpus), k)
        expected_scores, expected_ids = brute_force(queries, corpus, k)
        assert scores.shape == ids.shape == (37, k) and ids.dtype == torch.long
        assert np.array_equal(ids.numpy(), expected_ids)
        assert np.allclose(scores.numpy(), expected_scores, atol=1e-5)
    scores, ids = exact_search(torch.empty(0, 16), torch.from_numpy(corpus), 5)
    assert scores.shape == ids.shape == (0, 5)


def test_search_by_vectors_equals_search_by_text_and_brute_force(tool):
    tool.build_index(CORPUS, use_faiss=False)
    assert isinstance(tool.index["index"], torch.Tensor) and tool.index["index"].dtype == torch.float32
    queries = ["A man plays music.", "A woman cuts vegetables.", "A cat is eating."]
    by_text = tool.search(queries, threshold=-1.0, top_k=4)
    vectors = tool.encode(queries)  # (3, dim), unit rows
    for given in (vectors, vectors.numpy() * 3.0):  # any length: scaled to unit length
        by_vector = tool.search(given, threshold=-1.0, top_k=4)
        assert [[text for text, _ in row] for row in by_vector] == [[text for text, _ in row] for row in by_text]
        assert np.allclose([[s for _, s in row] for row in by_vector], [[s for _, s in row] for row in by_text],
                           atol=1e-6)
    one = tool.search(vectors[1], threshold=-1.0, top_k=4)  # a (dim,) vector: one query
    assert [text for text, _ in one] == [text for text, _ in by_text[1]]
    corpus_vectors = tool.encode(CORPUS).numpy()
    expected_scores, expected_ids = brute_force(vectors.numpy(), corpus_vectors, 4)
    for row, results in enumerate(by_text):
        assert [text for text, _ in results] == [CORPUS[i] for i in expected_ids[row]]
        assert np.allclose([score for _, score in results], expected_scores[row], atol=1e-5)
    with pytest.raises(ValueError, match="query vectors have dimension 3"):
        tool.search(np.ones((2, 3), dtype=np.float32))


@pytest.mark.parametrize(
    "use_faiss,faiss_fast",
    [(False, False), pytest.param(True, False, marks=pytest.mark.skipif(not HAS_FAISS, reason="needs faiss")),
     pytest.param(True, True, marks=pytest.mark.skipif(not HAS_FAISS, reason="needs faiss"))],
)
def test_index_from_given_embeddings_equals_the_encoded_index(tool, use_faiss, faiss_fast):
    sentences = CORPUS + [CORPUS[2]]  # a repeat: indexed once, its first row kept
    embeddings = tool.encode(sentences).numpy()
    embeddings[-1] = -embeddings[-1]  # the repeat's row must be ignored
    query = "A woman is slicing a tomato."
    tool.build_index(CORPUS, use_faiss=use_faiss, faiss_fast=faiss_fast)
    expected = tool.search(query, threshold=-1.0, top_k=len(CORPUS))
    tool.build_index(sentences, use_faiss=use_faiss, faiss_fast=faiss_fast, embeddings=embeddings * 2.0)
    assert tool.index["sentences"] == CORPUS
    got = tool.search(query, threshold=-1.0, top_k=len(CORPUS))
    assert [text for text, _ in got] == [text for text, _ in expected]
    assert np.allclose([s for _, s in got], [s for _, s in expected], atol=1e-5)
    tool.add_to_index(["A horse is running in the field."])
    assert tool.search("A horse is running in the field.", threshold=0.99, top_k=1)[0][0].startswith("A horse")
    with pytest.raises(ValueError, match=r"embeddings must be a float array of shape \(9, dim\)"):
        tool.build_index(sentences, use_faiss=use_faiss, embeddings=embeddings[:3])
    with pytest.raises(ValueError, match="embeddings must be a float array"):
        tool.build_index(sentences, use_faiss=use_faiss, embeddings=embeddings[0])


def test_exact_index_grows_with_add_to_index(tool):
    tool.build_index(CORPUS[:3], use_faiss=False)
    tool.add_to_index(CORPUS[3:] + CORPUS[:1])
    assert tool.index["index"].shape == (len(CORPUS), tool.embedding_dim)
    assert tool.search(CORPUS[5], threshold=0.0, top_k=1) == [(CORPUS[5], pytest.approx(1.0, abs=1e-5))]
