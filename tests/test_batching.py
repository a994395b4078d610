"""``simcse_hub.speed``: token-length ordering, padding, length buckets, and the ``bf16`` precision mode of
``SimCSE``."""

from __future__ import annotations

import itertools
import logging

import numpy as np
import pytest
import torch
from conftest import make_model

from simcse_hub import SimCSE, save_model
from simcse_hub.inference import length_order, pad, tokenize
from simcse_hub.speed import autocast, length_buckets, resolve_precision


@pytest.fixture(scope="module")
def folder(tmp_path_factory, tokenizer):
    return save_model(make_model("bert", seed=3, pooler_type="avg"), tmp_path_factory.mktemp("batching"), tokenizer)


def padded_size(lengths, groups) -> int:
    return sum(len(group) * max(lengths[i] for i in group) for group in groups)


def test_length_buckets_cover_every_index_once_and_pad_least():
    rng = np.random.RandomState(0)
    for n, max_buckets in [(1, 4), (7, 3), (9, 4), (40, 1), (130, 4)]:
        lengths = rng.randint(2, 33, size=n)
        groups = length_buckets(lengths, max_buckets)
        assert sorted(np.concatenate(groups).tolist()) == list(range(n))
        assert 1 <= len(groups) <= max_buckets and all(len(group) for group in groups)
        assert padded_size(lengths, groups) <= n * lengths.max()
        if n <= 9:  # brute force over every way of cutting the sorted lengths into at most max_buckets groups
            order = np.argsort(lengths, kind="stable")
            best = min(
                padded_size(lengths, [order[i:j] for i, j in zip((0, *cuts), (*cuts, n))])
                for k in range(max_buckets)
                for cuts in itertools.combinations(range(1, n), k)
            )
            assert padded_size(lengths, groups) == best
    assert [group.tolist() for group in length_buckets([5, 30, 6, 31], 2)] == [[0, 2], [1, 3]]
    assert length_buckets([], 4) == []
    with pytest.raises(ValueError, match="max_buckets must be >= 1"):
        length_buckets([3], 0)


def test_tokenize_once_order_and_pad_match_the_tokenizer(tokenizer, sentences):
    features = tokenize(tokenizer, sentences, max_length=8)
    lengths = [len(feature["input_ids"]) for feature in features]
    assert max(lengths) <= 8
    order = length_order(features)
    assert [lengths[i] for i in order] == sorted(lengths, reverse=True)
    batch = pad([features[i] for i in order], tokenizer)
    expected = tokenizer([sentences[i] for i in order], padding=True, truncation=True, max_length=8,
                         return_tensors="pt")
    for key in expected:
        assert torch.equal(batch[key], expected[key]), key


def test_batches_pad_on_the_right_whatever_the_tokenizer_says(tokenizer, sentences, tmp_path):
    tool = SimCSE(save_model(make_model("bert", seed=3, pooler_type="avg"), tmp_path / "left", tokenizer),
                  device="cpu")
    tool.tokenizer.padding_side = "left"  # e.g. a tokenizer saved for a decoder
    batched = tool.encode(sentences, batch_size=4)  # sentences of different lengths share a batch
    one_by_one = torch.stack([tool.encode(sentence) for sentence in sentences])
    assert torch.allclose(batched, one_by_one, atol=1e-5)


def test_encode_tokenizes_each_sentence_once(folder, sentences, monkeypatch):
    tool = SimCSE(folder, device="cpu")
    tool.embedding_dim  # noqa: B018  (computed once, before counting)
    seen = []
    original = type(tool.tokenizer).__call__

    def counting(self, text, *args, **kwargs):
        seen.extend([text] if isinstance(text, str) else text)
        return original(self, text, *args, **kwargs)

    monkeypatch.setattr(type(tool.tokenizer), "__call__", counting)
    reference = tool.encode(sentences, batch_size=3)
    assert sorted(seen) == sorted(sentences)
    monkeypatch.undo()
    one_by_one = torch.stack([tool.encode(sentence) for sentence in sentences])
    assert torch.allclose(reference, one_by_one, atol=1e-5)


def test_bf16_mode_is_close_to_fp32(folder, sentences, caplog):
    fp32 = SimCSE(folder, device="cpu")
    with caplog.at_level(logging.WARNING, logger="simcse_hub.speed"):
        bf16 = SimCSE(folder, device="cpu", precision="bf16")
    assert bf16.precision == "bf16" and fp32.precision == "fp32"
    a, b = fp32.encode(sentences), bf16.encode(sentences)  # (n, dim) each, unit rows
    cosine = (a * b).sum(-1)
    assert cosine.min().item() > 0.99
    assert not torch.equal(a, b)  # it did compute in bfloat16
    assert b.dtype == torch.float32
    assert abs(fp32.similarity(sentences[0], sentences[1]) - bf16.similarity(sentences[0], sentences[1])) < 0.02


def test_precision_errors_and_autocast():
    with pytest.raises(ValueError, match="precision='fp16' needs a GPU"):
        resolve_precision("fp16", torch.device("cpu"))
    with pytest.raises(ValueError, match="precision='fp8': expected one of"):
        resolve_precision("fp8", torch.device("cpu"))
    assert resolve_precision("no", torch.device("cpu")) == "fp32"  # Accelerate's word for fp32
    with autocast("bf16", torch.device("cpu")):
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.bfloat16
    with autocast("fp32", torch.device("cpu")):
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.float32


def test_simcse_rejects_an_unknown_precision(folder):
    with pytest.raises(ValueError, match="precision=.int4.: expected one of"):
        SimCSE(folder, device="cpu", precision="int4")


def test_bucketed_forward_equals_one_forward_with_gradients(sentences, tokenizer):
    from simcse_hub.speed import bucketed

    model = make_model("bert", seed=4, pooler_type="avg").eval()  # no dropout: the two ways must agree exactly
    texts = [*sentences, "a", "A man is playing a guitar on the stage of a very large and crowded concert hall."]
    inputs = dict(tokenizer(texts, padding=True, truncation=True, max_length=32, return_tensors="pt"))

    def forward(features):
        return model(**features).pooler_output  # (rows, hidden)

    whole = forward(inputs)  # (n, hidden)
    (whole_grad,) = torch.autograd.grad(whole.square().sum(), model.encoder.embeddings.word_embeddings.weight)
    calls = []
    grouped = bucketed(lambda features: calls.append(features["input_ids"].shape) or forward(features), inputs, 3)
    assert len(calls) == 3 and sum(shape[0] for shape in calls) == len(texts)
    assert sum(shape[0] * shape[1] for shape in calls) < inputs["input_ids"].numel()  # less padding
    assert torch.allclose(grouped, whole, atol=1e-5)
    (grouped_grad,) = torch.autograd.grad(grouped.square().sum(), model.encoder.embeddings.word_embeddings.weight)
    assert torch.allclose(grouped_grad, whole_grad, atol=1e-5)
    single = bucketed(forward, inputs, max_buckets=1)
    assert torch.allclose(single, whole, atol=1e-6)


def embedding_backward_nodes(output: torch.Tensor, weight: torch.Tensor) -> int:
    """How many lookups of ``weight`` the autograd graph of ``output`` holds (each forms its own weight gradient)."""
    seen, todo, count = set(), [output.grad_fn], 0
    while todo:
        node = todo.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        count += type(node).__name__.startswith("EmbeddingBackward") and any(
            getattr(next_node, "variable", None) is weight for next_node, _ in node.next_functions)
        todo.extend(next_node for next_node, _ in node.next_functions)
    return count


@pytest.mark.parametrize("family", ["bert", "roberta", "distilbert"])
def test_one_token_lookup_for_all_buckets_gives_the_same_outputs_and_gradients(family, sentences, tokenizer):
    from simcse_hub.speed import bucketed

    model = make_model(family, seed=4, pooler_type="avg").eval()
    texts = [*sentences, "a", "A man is playing a guitar on the stage of a very large and crowded concert hall."]
    inputs = dict(tokenizer(texts, padding=True, truncation=True, max_length=32, return_tensors="pt"))
    if family == "distilbert":
        inputs.pop("token_type_ids")
    lookup = model.get_input_embeddings()
    weight = lookup.weight

    def forward(features):
        return model(**features).pooler_output  # (rows, hidden)

    per_bucket = bucketed(forward, inputs, 3)
    (per_bucket_grad,) = torch.autograd.grad(per_bucket.square().sum(), weight)
    shared = bucketed(forward, inputs, 3, lookup=lookup)
    assert embedding_backward_nodes(per_bucket, weight) == 3 and embedding_backward_nodes(shared, weight) == 1
    assert torch.equal(shared, per_bucket)
    (shared_grad,) = torch.autograd.grad(shared.square().sum(), weight)
    assert torch.allclose(shared_grad, per_bucket_grad, atol=1e-6)
    assert not lookup._forward_hooks  # the stand-in is gone after the call


def test_shared_lookup_leaves_unexpected_calls_and_unsuitable_layers_alone():
    from simcse_hub.speed import looked_up_once

    lookup = torch.nn.Embedding(10, 4)
    first, second, other = torch.tensor([[1, 2]]), torch.tensor([[3, 4, 5]]), torch.tensor([[6]])
    with looked_up_once(lookup, [first, second]) as applied:
        assert applied
        unexpected = lookup(other)  # not the next expected call: a lookup of its own
        rows = [lookup(first), lookup(second)]
        again = lookup(first)  # the expected calls are used up
    weight = lookup.weight
    assert embedding_backward_nodes(unexpected, weight) == 1 and embedding_backward_nodes(again, weight) == 1
    assert torch.equal(rows[0], lookup.weight[first]) and torch.equal(rows[1], lookup.weight[second])
    assert embedding_backward_nodes(rows[0].sum() + rows[1].sum(), weight) == 1  # one lookup for both
    for layer in (torch.nn.Embedding(10, 4, scale_grad_by_freq=True), torch.nn.Embedding(10, 4, max_norm=1.0),
                  torch.nn.Linear(4, 4)):
        with looked_up_once(layer, [first, second]) as applied:
            assert not applied
    with looked_up_once(lookup, [first]) as applied:  # one call: nothing to share
        assert not applied
