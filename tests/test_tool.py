"""``simcse_hub.SimCSE``: the three ways of loading, encode, similarity, index and search, and odd inputs."""

from __future__ import annotations

import importlib.util
import logging

import numpy as np
import pytest
import torch
from conftest import make_config, make_model

from simcse_hub import SimCSE, save_model

HAS_FAISS = importlib.util.find_spec("faiss") is not None
CORPUS = [
    "A man is playing a guitar.",
    "A man is playing the piano.",
    "A woman is slicing an onion.",
    "A woman is cutting a tomato.",
    "The dog runs on the beach.",
    "A cat eats food.",
    "A man is playing a guitar.",  # a duplicate: indexed once
    "Two people are dancing on the stage.",
]


@pytest.fixture(scope="module")
def saved(tmp_path_factory, tokenizer):
    """Saved SimCSE folders ({pooler: path}) and the plain BERT encoder under them (its own folder)."""
    root = tmp_path_factory.mktemp("tool_models")
    folders = {}
    for pooler in ("avg", "cls", "avg_first_last"):
        folders[pooler] = save_model(make_model("bert", seed=1, pooler_type=pooler), root / pooler, tokenizer)
    plain = root / "plain-bert"
    make_model("bert", seed=1, pooler_type="avg").encoder.save_pretrained(plain)
    tokenizer.save_pretrained(plain)
    folders["plain"] = plain
    return folders


@pytest.fixture(scope="module")
def tool(saved):
    return SimCSE(saved["avg"], device="cpu")


def close(a, b, atol=1e-5) -> bool:
    return np.allclose(np.asarray(a), np.asarray(b), atol=atol)


# ---------------------------------------------------------------------------------------------------- encode


def test_encode_same_vectors_in_any_batch_size_and_order(tool, sentences):
    reference = tool.encode(sentences, batch_size=64)  # (n, dim)
    one_by_one = torch.stack([tool.encode(s) for s in sentences])
    assert reference.shape == (len(sentences), tool.embedding_dim)
    assert close(reference, one_by_one)
    for batch_size in (1, 3):
        assert close(tool.encode(sentences, batch_size=batch_size), reference)
    permutation = [5, 2, 7, 0, 3, 1, 6, 4]
    shuffled = tool.encode([sentences[i] for i in permutation], batch_size=3)
    assert close(shuffled, reference[permutation])
    assert not close(reference[0], reference[1])  # distinct sentences, distinct vectors


def test_encode_shapes_types_and_normalisation(tool, sentences):
    single = tool.encode(sentences[0])
    assert single.shape == (tool.embedding_dim,)
    assert tool.encode(sentences[0], keepdim=True).shape == (1, tool.embedding_dim)
    as_numpy = tool.encode(sentences, return_numpy=True)
    assert isinstance(as_numpy, np.ndarray) and as_numpy.dtype == np.float32
    assert close(np.linalg.norm(as_numpy, axis=1), np.ones(len(sentences)))
    raw = tool.encode(sentences, normalize_to_unit=False)
    assert not close(raw.norm(dim=1), torch.ones(len(sentences)), atol=1e-3)
    assert close(torch.nn.functional.normalize(raw, dim=1), as_numpy)
    assert close(tool.encode(tuple(sentences)), as_numpy)


def test_encode_empty_inputs(tool, tokenizer):
    empty = tool.encode([])
    assert isinstance(empty, torch.Tensor) and empty.shape == (0, tool.embedding_dim)
    assert tool.encode([], return_numpy=True).shape == (0, tool.embedding_dim)
    # The empty string is the empty sentence: [CLS] [SEP] only.
    features = tokenizer([""], return_tensors="pt")
    assert features["input_ids"].tolist() == [[tokenizer.cls_token_id, tokenizer.sep_token_id]]
    with torch.inference_mode():
        expected = tool.model(**features).pooler_output[0]
    assert close(tool.encode(""), torch.nn.functional.normalize(expected, dim=0))


def test_encode_non_strings_raise_type_error_naming_the_index(tool):
    with pytest.raises(TypeError, match=r"sentences\[1\] is a int"):
        tool.encode(["fine", 3, "fine"])
    with pytest.raises(TypeError, match=r"sentences\[0\] is a NoneType"):
        tool.encode([None])
    with pytest.raises(TypeError, match="str or a list of str; got int"):
        tool.encode(42)
    with pytest.raises(TypeError, match="got NoneType"):
        tool.similarity(None, "a")
    assert close(tool.encode(np.array(["fine", "a man"])), tool.encode(["fine", "a man"]))


def test_long_text_is_truncated_to_max_length(tool, tokenizer):
    assert tool.max_length == 48  # the tokenizer's model_max_length, under BERT's 64 position embeddings
    words = ("a man is playing a guitar on the street with his dog and the old woman sits " * 30).split()
    head = " ".join(words[:46])  # 46 word pieces + [CLS] [SEP] = 48 tokens
    long_a = head + " " + " ".join(words[46:])
    long_b = head + " the cat eats rice " * 50
    assert len(tokenizer(long_a)["input_ids"]) > 200
    assert close(tool.encode(long_a), tool.encode(head))
    assert close(tool.encode(long_b), tool.encode(head))
    shorter = tool.encode(long_a, max_length=10)
    assert close(shorter, tool.encode(" ".join(words[:8])))
    for bad in (4096, 1, 2.5, True):
        with pytest.raises(ValueError, match=rf"^max_length={bad!r}: expected an integer in \[2, 48\]"):
            tool.encode("a", max_length=bad)


def test_progress_bar_when_asked(tool, capsys):
    tool.encode(["a man"] * 3, batch_size=1, show_progress_bar=True)
    assert "Encoding" in capsys.readouterr().err
    tool.encode(["a man"] * 3, batch_size=1)
    assert "Encoding" not in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------------- similarity


def test_similarity_agrees_with_a_hand_computation(tool, sentences):
    raw = tool.encode(sentences, normalize_to_unit=False, return_numpy=True).astype(np.float64)  # (n, dim)
    a, b = raw[4], raw[5]
    expected = float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))
    score = tool.similarity(sentences[4], sentences[5])
    assert isinstance(score, float) and score == pytest.approx(expected, abs=1e-5)
    queries, keys = sentences[:3], sentences[3:]
    matrix = tool.similarity(queries, keys)
    hand = np.array([[np.dot(raw[i], raw[j]) / np.linalg.norm(raw[i]) / np.linalg.norm(raw[j])
                      for j in range(3, len(sentences))] for i in range(3)])
    assert isinstance(matrix, np.ndarray) and matrix.shape == (3, len(keys))
    assert close(matrix, hand)
    assert close(tool.similarity(queries[0], keys), hand[0])  # a str query drops its axis: (m,)
    assert close(tool.similarity(queries, keys[0]), hand[:, 0])  # (n,)
    assert close(tool.similarity(queries, raw[3:].astype(np.float32)), hand)  # vectors as keys
    assert tool.similarity(sentences[0], sentences[0]) == pytest.approx(1.0, abs=1e-5)
    torch_keys = torch.from_numpy(raw[3:].astype(np.float32))
    assert close(tool.similarity(queries, torch_keys), hand)  # vectors as a tensor
    assert close(tool.similarity(raw[:3].astype(np.float32), keys), hand)  # vectors as queries
    assert close(tool.similarity(queries, torch_keys[0]), hand[:, 0])
    with pytest.raises(ValueError, match="keys have dimension 3, the queries' 32"):
        tool.similarity(queries, np.ones((2, 3), dtype=np.float32))


def test_similarities_are_clipped_to_one(tool):
    """Rounding made the empty sentence's similarity with itself 1.0000002; cosines are clipped to [-1, 1]."""
    vectors = torch.randn(64, 32, generator=torch.Generator().manual_seed(0))
    unit = torch.nn.functional.normalize(vectors, dim=-1)
    assert (unit @ unit.T).max() > 1.0  # float32 rounding, unclipped
    assert tool.similarity(vectors, vectors).max() <= 1.0 and tool.similarity(-vectors, vectors).min() >= -1.0
    scores = [tool.similarity(text, text) for text in ("", "a", "A man is playing a guitar.", "the " * 40)]
    assert all(score <= 1.0 for score in scores) and scores == pytest.approx([1.0] * 4, abs=1e-5)


# ---------------------------------------------------------------------------------------------------- search


def brute_force(tool, query, corpus, threshold, top_k):
    unique = list(dict.fromkeys(corpus))
    scores = tool.similarity(query, unique)
    order = np.argsort(-scores, kind="stable")[:top_k]
    return [(unique[i], float(scores[i])) for i in order if scores[i] >= threshold]


@pytest.mark.parametrize(
    "use_faiss,faiss_fast",
    [(False, False), pytest.param(True, False, marks=pytest.mark.skipif(not HAS_FAISS, reason="needs faiss")),
     pytest.param(True, True, marks=pytest.mark.skipif(not HAS_FAISS, reason="needs faiss"))],
)
def test_search_returns_expected_neighbours_without_duplicates(tool, use_faiss, faiss_fast):
    tool.build_index(CORPUS, use_faiss=use_faiss, faiss_fast=faiss_fast)
    assert tool.index["faiss"] is use_faiss
    assert len(tool.index["sentences"]) == len(set(CORPUS)) == len(CORPUS) - 1
    results = tool.search(CORPUS[0], threshold=-1.0, top_k=10)
    texts = [text for text, _ in results]
    assert len(texts) == len(set(texts)) == len(set(CORPUS))  # every sentence once, the duplicate never twice
    assert texts[0] == CORPUS[0] and results[0][1] == pytest.approx(1.0, abs=1e-5)
    scores = [score for _, score in results]
    assert scores == sorted(scores, reverse=True)
    for query in ("A man is playing music.", "A woman cuts an onion."):
        expected = brute_force(tool, query, CORPUS, threshold=0.0, top_k=3)
        got = tool.search(query, threshold=0.0, top_k=3)
        assert [t for t, _ in got] == [t for t, _ in expected]
        assert close([s for _, s in got], [s for _, s in expected])
    threshold = results[2][1] - 1e-6
    assert [t for t, _ in tool.search(CORPUS[0], threshold=threshold, top_k=10)] == texts[:3]
    batch = tool.search([CORPUS[0], CORPUS[2]], threshold=-1.0, top_k=2)
    assert [len(r) for r in batch] == [2, 2] and batch[1][0][0] == CORPUS[2]
    tool.add_to_index(["A cat eats food.", "A horse is running in the field."])  # the first is already there
    assert len(tool.index["sentences"]) == len(set(CORPUS)) + 1
    assert tool.search("A horse is running in the field.", threshold=0.99, top_k=3)[0][0].startswith("A horse")


def test_build_index_from_a_file_and_search_errors(tool, tmp_path):
    fresh = SimCSE.__new__(SimCSE)
    fresh.index = None
    with pytest.raises(RuntimeError, match="call build_index"):
        SimCSE.search(fresh, "a")
    corpus_file = tmp_path / "corpus.txt"
    corpus_file.write_text("\n".join(CORPUS[:3]) + "\n\n" + CORPUS[0] + "\n", encoding="utf-8")
    tool.build_index(str(corpus_file), use_faiss=False)
    assert tool.index["sentences"] == CORPUS[:3]
    with pytest.raises(FileNotFoundError, match="one sentence per line"):
        tool.build_index(str(tmp_path / "missing.txt"))
    with pytest.raises(ValueError, match="at least one sentence"):
        tool.build_index([])
    with pytest.raises(ValueError, match="top_k must be a positive integer"):
        tool.search("a", top_k=0)
    assert tool.search([], threshold=0.0) == []


# ---------------------------------------------------------------------------------------------------- loading


def test_three_ways_give_equal_embeddings(saved, sentences, tmp_path):
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.base.modules.transformer import Transformer
    from sentence_transformers.sentence_transformer.modules.pooling import Pooling
    from transformers import AutoModel, AutoTokenizer

    for pooler in ("avg", "cls", "avg_first_last"):
        folder = str(saved[pooler])
        ours = SimCSE(folder, device="cpu")
        assert ours.kind == "simcse" and ours.pooler == pooler
        view = SentenceTransformer(folder, trust_remote_code=True, device="cpu")
        expected = view.encode(sentences, convert_to_tensor=True, normalize_embeddings=True)
        assert close(ours.encode(sentences), expected), pooler
        auto = AutoModel.from_pretrained(folder, trust_remote_code=True).eval()
        features = AutoTokenizer.from_pretrained(folder)(sentences, padding=True, return_tensors="pt")
        with torch.inference_mode():
            pooled = torch.nn.functional.normalize(auto(**features).pooler_output, dim=1)
        assert close(ours.encode(sentences), pooled), pooler

    # (c) the plain encoder with pooler='avg' and (b) a sentence-transformers model over it: the same embeddings.
    plain = SimCSE(saved["plain"], pooler="avg", device="cpu")
    assert plain.kind == "encoder"
    assert close(plain.encode(sentences), SimCSE(saved["avg"]).encode(sentences))
    transformer = Transformer(str(saved["plain"]), max_seq_length=48)
    st_folder = tmp_path / "st-mean"
    SentenceTransformer(modules=[transformer, Pooling(32, "mean")], device="cpu").save(str(st_folder))
    st_tool = SimCSE(st_folder, device="cpu")
    assert st_tool.kind == "sentence-transformers" and st_tool.max_length == 48
    assert close(st_tool.encode(sentences), plain.encode(sentences))
    # An explicit pooler wraps the sentence-transformers model's transformer instead.
    assert SimCSE(st_folder, pooler="cls_before_pooler").pooler == "cls_before_pooler"


def test_pooler_override_and_plain_encoder_rules(saved, sentences, caplog):
    first_token = SimCSE(saved["plain"], pooler="cls_before_pooler").encode(sentences)
    with caplog.at_level(logging.WARNING, logger="simcse_hub.inference"):
        overridden = SimCSE(saved["cls"], pooler="cls_before_pooler")
    assert "overrides the model's own pooler 'cls'" in caplog.text
    assert overridden.pooler == "cls_before_pooler"
    assert close(overridden.encode(sentences), first_token)
    assert not close(SimCSE(saved["cls"]).encode(sentences), first_token)  # its own pooler applies the MLP
    with pytest.raises(ValueError, match=r"pass pooler=, one of \['cls', 'cls_before_pooler', 'avg'"):
        SimCSE(saved["plain"])
    with pytest.raises(ValueError, match="pooler='mean' is not supported"):
        SimCSE(saved["avg"], pooler="mean")
    for bad in (1000, 1, 0, "64"):  # max_length, its value and the range it may take
        with pytest.raises(ValueError, match=rf"^max_length={bad!r}: expected an integer in \[2, 48\] \(tokens"):
            SimCSE(saved["avg"], max_length=bad)
    assert SimCSE(saved["avg"], max_length=2).max_length == 2


def test_official_release_names_and_bert_pooler(tmp_path, tokenizer, sentences):
    """``(un)sup-simcse-*`` folders follow from_official's rule; pooler='cls' on BERT is its pooler_output."""
    from transformers import BertModel

    torch.manual_seed(3)
    bert = BertModel(make_config("bert").encoder_config).eval()  # with its pooler (dense + tanh)
    features = tokenizer(sentences, padding=True, return_tensors="pt")
    with torch.inference_mode():
        out = bert(**features)

    def unit(x):
        return torch.nn.functional.normalize(x, dim=1)

    for name in ("sup-simcse-tiny-bert", "unsup-simcse-tiny-bert", "tiny-bert"):
        bert.save_pretrained(tmp_path / name)
        tokenizer.save_pretrained(tmp_path / name)
    sup = SimCSE(tmp_path / "sup-simcse-tiny-bert")
    assert sup.pooler == "cls" and close(sup.encode(sentences), unit(out.pooler_output))
    unsup = SimCSE(tmp_path / "unsup-simcse-tiny-bert")
    assert unsup.pooler == "cls_before_pooler" and close(unsup.encode(sentences), unit(out.last_hidden_state[:, 0]))
    assert close(SimCSE(tmp_path / "tiny-bert", pooler="cls").encode(sentences), unit(out.pooler_output))


def test_offline_hub_id_not_cached_gives_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    with pytest.raises(OSError, match=r"is not a folder here, and the Hub cannot be reached \(offline"):
        SimCSE("princeton-nlp/sup-simcse-bert-base-uncased")
    with pytest.raises(OSError, match="no such folder"):
        SimCSE(str(tmp_path / "no" / "such" / "folder"))


def test_whitening_file_is_applied_before_normalisation(saved, sentences, tmp_path):
    import shutil

    from simcse_hub.postprocess import Whitening

    folder = tmp_path / "whitened"
    shutil.copytree(saved["avg"], folder)
    plain = SimCSE(folder)
    raw = plain.encode(sentences, normalize_to_unit=False, return_numpy=True).astype(np.float64)  # (n, 32)
    whitening = Whitening().fit(raw, k=6)
    whitening.save(folder)
    whitened = SimCSE(folder)
    assert whitened.whitening is not None and whitened.embedding_dim == 6
    expected = (raw - whitening.mean[0]) @ whitening.W  # (n, 6)
    assert close(whitened.encode(sentences, normalize_to_unit=False), expected, atol=1e-4)
    unit = expected / np.linalg.norm(expected, axis=1, keepdims=True)
    assert close(whitened.encode(sentences), unit, atol=1e-4)
    assert whitened.encode([]).shape == (0, 6)
    assert whitened.similarity(sentences[0], sentences[1]) == pytest.approx(float(unit[0] @ unit[1]), abs=1e-4)


def test_cli_encode_writes_the_tools_embeddings(saved, sentences, tmp_path, capsys):
    import json

    from simcse_hub import cli

    source = tmp_path / "sentences.txt"
    source.write_text("\n".join(sentences[:3]) + "\n\n" + sentences[3] + "\n", encoding="utf-8")
    expected = SimCSE(saved["avg"]).encode(sentences[:4], return_numpy=True)
    out = tmp_path / "emb.npy"
    assert cli.main(["encode", str(saved["avg"]), "--input", str(source), "--output", str(out)]) == 0
    assert np.load(out).shape == (4, 32) and close(np.load(out), expected)
    capsys.readouterr()
    assert cli.main(["encode", str(saved["plain"]), "--pooler", "avg", "--input", str(source),
                     "--batch-size", "2"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [row["sentence"] for row in rows] == sentences[:4]
    assert close([row["embedding"] for row in rows], expected)
    assert cli.main(["encode", str(saved["plain"]), "--input", str(source)]) == 2
    assert "pass pooler=" in capsys.readouterr().err
    assert cli.main(["encode", str(saved["avg"]), "--input", str(source), "--output", str(tmp_path / "e.csv")]) == 2
    assert "expected a file name ending in .npy or .jsonl" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------------- real model


@pytest.mark.integration
def test_minilm_equals_sentence_transformers(minilm_path, sentences):
    from sentence_transformers import SentenceTransformer

    path = str(minilm_path)
    ours = SimCSE(path, device="cpu")
    assert ours.kind == "sentence-transformers" and ours.max_length == 256
    texts = [*sentences, "", "a long text " * 300]
    expected = SentenceTransformer(path, device="cpu").encode(texts, convert_to_numpy=True)
    got = ours.encode(texts, normalize_to_unit=False, return_numpy=True, batch_size=4)
    assert got.shape == expected.shape == (len(texts), 384)
    assert float(np.abs(got - expected).max()) < 1e-5
    improved, worsened, cat = "Mandela's condition has improved.", "Mandela's condition has worsened.", sentences[7]
    assert ours.similarity(improved, worsened) > ours.similarity(improved, cat)
