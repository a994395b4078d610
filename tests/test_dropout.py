"""``simcse_hub.speed``: CPU dropout masks drawn four to a 64-bit random number."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import make_model
from torch import nn

from simcse_hub.speed import (
    ATTENTION,
    FastDropout,
    attention_with_fast_dropout,
    fast_dropout,
    fast_dropout_attention,
    keep_mask,
    use_fast_dropout,
)


@pytest.mark.parametrize("p", [0.1, 0.3, 0.5])
def test_masks_keep_each_value_with_probability_one_minus_p_in_every_lane(p):
    torch.manual_seed(0)
    n = 400_000
    keep = keep_mask((n,), p).float()
    rounded = round(p * 65536) / 65536
    sigma = math.sqrt(rounded * (1 - rounded) / (n / 4))
    for lane in range(4):  # the four 16-bit pieces of each 64-bit draw are each uniform (none carries a sign bias)
        assert abs(keep[lane::4].mean().item() - (1 - rounded)) < 5 * sigma, lane
    pairs = keep[0::4] * keep[1::4]  # neighbouring lanes of one draw are independent
    assert abs(pairs.mean().item() - (1 - rounded) ** 2) < 5 * sigma


def test_expected_value_and_gradient_are_those_of_dropout():
    torch.manual_seed(1)
    x = torch.full((1000, 100), 2.0, requires_grad=True)
    y = fast_dropout(x, 0.1)
    kept = y != 0
    scale = 1 / (1 - round(0.1 * 65536) / 65536)
    assert torch.allclose(y[kept], torch.tensor(2.0 * scale))  # kept values scaled by 1 / (1 - p)
    assert abs(y.mean().item() - 2.0) < 0.01  # the expected activation is unchanged
    y.sum().backward()
    assert torch.equal(x.grad, kept.float() * scale)  # the gradient flows through the same mask


def test_masks_follow_torch_manual_seed():
    x = torch.ones(64, 64)
    torch.manual_seed(5)
    first = fast_dropout(x, 0.2)
    torch.manual_seed(5)
    assert torch.equal(fast_dropout(x, 0.2), first)
    assert not torch.equal(fast_dropout(x, 0.2), first)


def test_eval_mode_zero_and_bad_probabilities():
    x = torch.randn(8, 8)
    assert fast_dropout(x, 0.1, training=False) is x and fast_dropout(x, 0.0) is x
    assert torch.equal(fast_dropout(x, 1.0), torch.zeros_like(x))
    with pytest.raises(ValueError, match="between 0 and 1, but got 1.5"):
        fast_dropout(x, 1.5)


def test_use_fast_dropout_replaces_every_dropout_layer_and_keeps_the_model():
    model = make_model("bert", pooler_type="cls").eval()
    before = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    count = sum(type(module) is nn.Dropout for module in model.encoder.modules())
    inputs = {"input_ids": torch.tensor([[2, 10, 11, 3, 0], [2, 12, 3, 0, 0]]),
              "attention_mask": torch.tensor([[1, 1, 1, 1, 0], [1, 1, 1, 0, 0]])}
    expected = model(**inputs).pooler_output
    assert count > 0 and use_fast_dropout(model.encoder) == count
    layers = [module for module in model.encoder.modules() if isinstance(module, nn.Dropout)]
    assert len(layers) == count and all(type(module) is FastDropout for module in layers)
    assert all(not module.training for module in layers)  # an eval-mode model stays in eval mode
    assert torch.equal(model(**inputs).pooler_output, expected)
    assert model.state_dict().keys() == before.keys()
    model.train()
    torch.manual_seed(0)
    assert not torch.equal(model(**inputs).pooler_output, model(**inputs).pooler_output)  # dropout on in training


def test_attention_drops_its_weights_with_fast_dropout_masks_in_training_only():
    torch.manual_seed(0)
    query, key, value = (torch.randn(2, 4, 6, 8) for _ in range(3))  # (batch, heads, seq_len, head_dim)
    mask = torch.ones(2, 1, 6, 6, dtype=torch.bool)
    mask[1, ..., 4:] = False  # the second sentence has 4 tokens
    layer = nn.Module()
    layer.is_causal = False  # an encoder's self-attention (sdpa would read a missing flag as causal)
    weights = torch.softmax((query @ key.transpose(-1, -2) / 8**0.5).masked_fill(~mask, float("-inf")), dim=-1)

    output, _ = fast_dropout_attention(layer.eval(), query, key, value, mask, dropout=0.0)  # eval: as BERT calls it
    assert torch.allclose(output, (weights @ value).transpose(1, 2), atol=1e-5)  # plain attention (sdpa)

    torch.manual_seed(3)
    output, _ = fast_dropout_attention(layer.train(), query, key, value, mask, dropout=0.1)
    torch.manual_seed(3)
    dropped = fast_dropout(weights, 0.1)
    assert torch.allclose(output, (dropped @ value).transpose(1, 2), atol=1e-5)
    assert not torch.allclose(output, (weights @ value).transpose(1, 2), atol=1e-3)


def test_the_attention_implementation_is_switched_inside_the_block_only():
    model = make_model("bert", pooler_type="avg").eval()
    before = model.encoder.config._attn_implementation
    inputs = {"input_ids": torch.tensor([[2, 10, 11, 3], [2, 12, 3, 0]]),
              "attention_mask": torch.tensor([[1, 1, 1, 1], [1, 1, 1, 0]])}
    expected = model(**inputs).pooler_output
    with attention_with_fast_dropout(model.encoder) as switched:
        assert switched and model.encoder.config._attn_implementation == ATTENTION
        assert torch.allclose(model(**inputs).pooler_output, expected, atol=1e-6)
    assert model.encoder.config._attn_implementation == before
    with pytest.raises(KeyError), attention_with_fast_dropout(model.encoder):
        raise KeyError("a failing step")
    assert model.encoder.config._attn_implementation == before  # restored after an error too
    model.encoder.config._attn_implementation = "flex_attention"  # a GPU implementation is left as it is
    with attention_with_fast_dropout(model.encoder) as switched:
        assert not switched and model.encoder.config._attn_implementation == "flex_attention"
