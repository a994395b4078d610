"""``simcse_hub.inference``: batches by token budget, and the opt-in ``int8`` mode of ``SimCSE``."""

from __future__ import annotations

import logging

import pytest
import torch
from conftest import make_model
from torch.ao.nn.quantized.dynamic import Linear as DynamicInt8Linear

from simcse_hub import SimCSE, save_model
from simcse_hub.inference import (
    batch_rows,
    encode_in_batches,
    encode_sentences,
    int8_layers,
    length_order,
    quantize_int8,
    tokenize,
)
from simcse_hub.speed import resolve_precision

MIXED = [
    "A man is playing a guitar.",
    "A cat.",
    "A child is reading a book in the kitchen with his old dog and the young woman sits on the red car.",
    "",
    "Two people are dancing on the stage.",
    "The dog runs on the beach.",
    "a",
    "Mandela's condition has improved.",
    "A woman is slicing an onion with a big knife in the kitchen.",
]


@pytest.fixture(scope="module")
def folder(tmp_path_factory, tokenizer):
    return save_model(make_model("bert", seed=5, pooler_type="cls"), tmp_path_factory.mktemp("modes"), tokenizer)


@pytest.fixture(scope="module")
def tool(folder):
    return SimCSE(folder, device="cpu")


# ---------------------------------------------------------------------------------------------------- token budget


def test_batch_rows_respect_the_budget_and_cover_every_sentence_once(tokenizer):
    features = tokenize(tokenizer, MIXED * 3, max_length=48)
    lengths = [len(feature["input_ids"]) for feature in features]
    order = length_order(features)
    for budget in (1, 7, 40, 100, 10_000):
        batches = batch_rows(order, lengths, batch_size=4, max_tokens_per_batch=budget)
        assert [i for batch in batches for i in batch] == order  # longest first, each once
        for batch in batches:
            padded = len(batch) * max(lengths[i] for i in batch)
            assert padded <= budget or len(batch) == 1  # a sentence longer than the budget goes alone
    assert len(batch_rows(order, lengths, 4, max_tokens_per_batch=10_000)) == 1
    assert len(batch_rows(order, lengths, 4, max_tokens_per_batch=1)) == len(order)
    assert batch_rows(order, lengths, batch_size=4) == [order[i:i + 4] for i in range(0, len(order), 4)]


def test_token_budget_gives_the_same_embeddings_as_fixed_batches(tool, folder, tokenizer):
    sentences = MIXED * 4
    fixed = tool.encode(sentences, batch_size=64)  # (n, dim)
    for budget in (1, 30, 96, 4096):
        budgeted = tool.encode(sentences, max_tokens_per_batch=budget)
        assert torch.allclose(budgeted, fixed, atol=1e-6, rtol=0), budget
    model = make_model("bert", seed=5, pooler_type="cls").eval()
    raw_fixed = encode_sentences(model, tokenizer, sentences, batch_size=5)
    raw_budget = encode_sentences(model, tokenizer, sentences, max_tokens_per_batch=50)
    assert torch.allclose(raw_budget, raw_fixed, atol=1e-6, rtol=0)


def test_token_budget_forms_batches_by_padded_tokens(tokenizer):
    seen: list[tuple[int, int]] = []

    def embed(texts, features):
        seen.append((len(features), max(len(feature["input_ids"]) for feature in features)))
        return torch.zeros(len(texts), 3)

    out = encode_in_batches(MIXED, tokenizer, embed, max_tokens_per_batch=40, max_length=48)
    assert out.shape == (len(MIXED), 3)
    assert sum(count for count, _ in seen) == len(MIXED)
    assert all(count * longest <= 40 or count == 1 for count, longest in seen)
    assert seen[-1][0] > seen[0][0]  # short sentences share a larger batch than long ones


def test_a_model_without_a_text_tokenizer_is_batched_by_characters():
    """A sentence-transformers model whose tokenizer is not callable (e.g. a static embedding) is ordered and
    budgeted by characters, as sentence-transformers orders it."""
    seen: list[list[str]] = []

    def embed(texts, features):
        seen.append(texts)
        return torch.tensor([[float(len(text))] for text in texts])

    out = encode_in_batches(MIXED, None, embed, max_tokens_per_batch=120, max_length=48)
    assert out[:, 0].tolist() == [float(len(text)) for text in MIXED]  # in the order given
    assert seen[0][0] == max(MIXED, key=len) and all(len(batch) * len(batch[0]) <= 120 or len(batch) == 1
                                                     for batch in seen)


def test_token_budget_errors(tool):
    for bad in (0, -5, 2.5, "1024", True):
        with pytest.raises(ValueError, match="max_tokens_per_batch must be a positive integer"):
            tool.encode(["a man"], max_tokens_per_batch=bad)
    with pytest.raises(ValueError, match="batch_size must be a positive integer"):
        tool.encode(["a man"], batch_size=0)


# ---------------------------------------------------------------------------------------------------- int8


def test_int8_is_opt_in_and_never_chosen_by_auto(tool):
    assert tool.precision == "fp32" and "precision='fp32'" in repr(tool)
    assert not any(isinstance(module, DynamicInt8Linear) for module in tool.model.modules())
    for device in ("cpu", "cuda"):
        assert resolve_precision("auto", torch.device(device), inference=True) in ("fp32", "bf16")
    with pytest.raises(ValueError, match="'int8' is for encoding only"):
        resolve_precision("int8", torch.device("cpu"))  # training's vocabulary has no int8


def test_int8_reports_itself_and_is_close_to_fp32(tool, folder, caplog):
    with caplog.at_level(logging.INFO, logger="simcse_hub.inference"):
        int8 = SimCSE(folder, device="cpu", precision="int8")
    assert int8.precision == "int8"
    assert "precision='int8'" in repr(int8)
    assert any("precision='int8'" in record.getMessage() and "int8" in record.getMessage()
               for record in caplog.records)
    quantized = [name for name, module in int8.model.named_modules() if isinstance(module, DynamicInt8Linear)]
    assert sorted(quantized) == sorted(int8_layers(tool.model))
    assert quantized and not any(name.endswith("output.dense") and "attention" not in name for name in quantized)
    sentences = MIXED * 2
    a, b = tool.encode(sentences), int8.encode(sentences)  # (n, dim) each, unit rows
    cosine = (a * b).sum(-1)
    assert cosine.min().item() > 0.99
    assert not torch.equal(a, b)  # it did compute in int8
    assert b.dtype == torch.float32
    # the activations' int8 scale is taken per batch, so other batches give close, not equal, embeddings
    assert (int8.encode(sentences, max_tokens_per_batch=64) * b).sum(-1).min().item() > 0.99


def test_int8_on_a_gpu_device_is_a_clear_error(folder):
    with pytest.raises(ValueError, match=r"precision='int8' \(dynamic int8 quantization of the linear layers\) runs "
                                         r"on a CPU only"):
        SimCSE(folder, device="cuda", precision="int8")
    with pytest.raises(ValueError, match="precision='int4': expected one of"):
        SimCSE(folder, device="cpu", precision="int4")


def test_quantize_int8_leaves_the_model_alone():
    model = torch.nn.Sequential(torch.nn.Linear(8, 32), torch.nn.GELU(), torch.nn.Linear(32, 8))
    quantized, count = quantize_int8(model)
    assert count == 1 and int8_layers(model) == ["0"]
    assert type(model[0]) is torch.nn.Linear and isinstance(quantized[0], DynamicInt8Linear)
    assert type(quantized[2]) is torch.nn.Linear  # the down-projection stays fp32
    x = torch.randn(4, 8)
    assert torch.nn.functional.cosine_similarity(model(x), quantized(x)).min() > 0.99


@pytest.mark.integration
def test_int8_minilm_agrees_with_fp32(minilm_path, sentences):
    fp32 = SimCSE(minilm_path, device="cpu")
    int8 = SimCSE(minilm_path, device="cpu", precision="int8")
    assert int8.kind == "sentence-transformers"
    assert any(isinstance(module, DynamicInt8Linear) for module in int8.sentence_transformer.modules())
    cosine = (fp32.encode(sentences) * int8.encode(sentences)).sum(-1)
    assert cosine.mean().item() > 0.98 and cosine.min().item() > 0.95


def test_encode_defaults_to_the_token_budget_and_a_batch_size_to_fixed_batches(tool, monkeypatch):
    import simcse_hub.inference as tool_module
    from simcse_hub.inference import DEFAULT_MAX_TOKENS_PER_BATCH

    sentences = MIXED * 4
    fixed = tool.encode(sentences, batch_size=64)
    calls = []
    original = tool_module.encode_in_batches

    def recording(*args, **kwargs):
        calls.append((kwargs["batch_size"], kwargs["max_tokens_per_batch"]))
        return original(*args, **kwargs)

    monkeypatch.setattr(tool_module, "encode_in_batches", recording)
    default = tool.encode(sentences)
    tool.encode(sentences, batch_size=3)
    tool.encode(sentences, batch_size=3, max_tokens_per_batch=100)
    assert [budget for _, budget in calls] == [DEFAULT_MAX_TOKENS_PER_BATCH, None, 100]
    assert calls[1][0] == 3
    assert torch.allclose(default, fixed, atol=1e-6, rtol=0)
