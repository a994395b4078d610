"""Dropout with cheaper random numbers on the CPU, for training.

SimCSE's positives *are* dropout: every layer of the encoder draws a mask for every activation of both copies of a
sentence, and one for its attention weights. On a CPU, torch's dropout draws one 32-bit random number (from its
Mersenne Twister) per activation and turns it into a float before comparing, a noticeable share of a training step.
Here each 64-bit draw of the same generator gives four 16-bit numbers, compared as integers: Bernoulli masks of the
same distribution from a quarter of the draws (benchmarks/README.md has the measured speed).

* :func:`use_fast_dropout` replaces the encoder's ``nn.Dropout`` layers (embeddings, attention output, feed-forward
  output) by :class:`FastDropout`;
* :func:`fast_dropout_attention` (the transformers attention function ``"simcse_fast_dropout"``, switched on for
  the training forward by :func:`attention_with_fast_dropout`) drops attention weights the same way; ``sdpa``, which
  it replaces there, draws its own masks with torch's dropout.

The one difference: ``p`` is used rounded to a multiple of 1/65536 (0.1 becomes 0.1000061), and the kept activations
are scaled by ``1 / (1 - that p)``, so the expected activation is unchanged. Masks come from torch's default
generator, so ``torch.manual_seed`` makes a run repeatable and gradient caching replays them. On other devices (GPU
dropout is already one fused kernel) and in eval mode, :class:`FastDropout` is ``nn.Dropout``.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator

import torch
from torch import nn
from transformers import AttentionInterface, AttentionMaskInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import sdpa_mask

ATTENTION = "simcse_fast_dropout"
LEVELS = 1 << 16  # p is rounded to a multiple of 1 / LEVELS


def _levels(p: float) -> int:
    """``p`` in units of 1 / LEVELS: the number of the 65536 values of a 16-bit lane that drop."""
    return round(p * LEVELS)


def keep_mask(shape: torch.Size | tuple[int, ...], p: float, device: torch.device | str = "cpu") -> torch.Tensor:
    """A boolean mask of ``shape``, each entry True (kept) with probability ``1 - p`` (``p`` to 1/65536).

    >>> torch.manual_seed(0) and None
    >>> round(keep_mask((1000, 1000), 0.1).float().mean().item(), 2)
    0.9
    """
    count = math.prod(shape)
    words = torch.empty((count + 3) // 4, dtype=torch.int64, device=device).random_(-(2**63), None)  # all 64 bits
    lanes = words.view(torch.int16)[:count].view(shape)  # four independent uniform 16-bit integers per draw
    return lanes >= _levels(p) - LEVELS // 2  # P(lane < t - 32768) = t / 65536 = p


class _Dropout(torch.autograd.Function):
    @staticmethod
    def forward(ctx, inputs: torch.Tensor, p: float) -> torch.Tensor:
        keep = keep_mask(inputs.shape, p, inputs.device)
        ctx.scale = LEVELS / (LEVELS - _levels(p))
        ctx.save_for_backward(keep)
        return inputs.mul(keep).mul_(ctx.scale)

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor) -> tuple[torch.Tensor, None]:
        (keep,) = ctx.saved_tensors
        return grad_output.mul(keep).mul_(ctx.scale), None


def fast_dropout(inputs: torch.Tensor, p: float = 0.5, training: bool = True) -> torch.Tensor:
    """``torch.nn.functional.dropout`` with masks drawn four to a 64-bit random number on the CPU (see the module).

    >>> x = torch.ones(4, 8)
    >>> torch.equal(fast_dropout(x, 0.1, training=False), x)
    True
    """
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"dropout probability has to be between 0 and 1, but got {p}")
    if not training or p == 0.0:
        return inputs
    if inputs.device.type != "cpu" or _levels(p) in (0, LEVELS):
        return nn.functional.dropout(inputs, p, training)
    return _Dropout.apply(inputs, p)


class FastDropout(nn.Dropout):
    """``nn.Dropout`` whose CPU masks come from :func:`fast_dropout`; ``nn.Dropout`` elsewhere and in eval mode."""

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        if self.inplace:
            return super().forward(inputs)
        return fast_dropout(inputs, self.p, self.training)


def use_fast_dropout(module: nn.Module) -> int:
    """Replace every ``nn.Dropout`` inside ``module`` (in place) by a :class:`FastDropout` of the same ``p``.

    Dropout layers hold no weights, so the state dict, saving and loading do not change. Returns how many were
    replaced.

    >>> encoder = nn.Sequential(nn.Linear(4, 4), nn.Dropout(0.1))
    >>> use_fast_dropout(encoder), type(encoder[1]).__name__, encoder[1].p
    (1, 'FastDropout', 0.1)
    """
    replaced = 0
    for name, child in module.named_children():
        if type(child) is nn.Dropout:
            setattr(module, name, FastDropout(child.p, child.inplace).train(child.training))
            replaced += 1
        else:
            replaced += use_fast_dropout(child)
    return replaced


def fast_dropout_attention(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    **kwargs,
) -> tuple[torch.Tensor, None]:
    """transformers attention function ``"simcse_fast_dropout"``: ``sdpa``, except when it would drop attention
    weights on a CPU (training, ``dropout > 0``), where it computes them and drops them with :func:`fast_dropout`.

    Args:
        query, key, value (`torch.Tensor` of shape `(batch, heads, seq_len, head_dim)`): as transformers passes them.
        attention_mask (`torch.Tensor`, *optional*): ``sdpa``'s mask: boolean (True = attend) or additive,
            broadcastable to `(batch, heads, seq_len, seq_len)`.

    Returns:
        `tuple`: the attention output ``(batch, seq_len, heads, head_dim)`` and None (no weights returned).
    """
    plain = (not module.training or dropout == 0.0 or query.device.type != "cpu" or key.size(1) != query.size(1)
             or getattr(module, "is_causal", False))
    if plain:
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                      **kwargs)
    scaling = query.size(-1) ** -0.5 if scaling is None else scaling
    scores = torch.matmul(query, key.transpose(-1, -2)) * scaling  # (batch, heads, seq_len, seq_len)
    if attention_mask is not None:
        if attention_mask.dtype == torch.bool:
            scores = scores.masked_fill(~attention_mask, float("-inf"))
        else:
            scores = scores + attention_mask
    weights = fast_dropout(torch.softmax(scores, dim=-1), dropout)
    return torch.matmul(weights, value).transpose(1, 2).contiguous(), None  # (batch, seq_len, heads, head_dim)


AttentionInterface.register(ATTENTION, fast_dropout_attention)
AttentionMaskInterface.register(ATTENTION, sdpa_mask)  # the masks it receives are sdpa's


@contextlib.contextmanager
def attention_with_fast_dropout(encoder: nn.Module) -> Iterator[bool]:
    """Within the block, ``encoder`` (a transformers model) attends with :func:`fast_dropout_attention` if it used
    ``sdpa`` or ``eager`` (the CPU implementations, which compute the same); other implementations stay. Yields
    whether it switched.

    >>> with attention_with_fast_dropout(model.encoder):  # doctest: +SKIP
    ...     embeddings = model(**inputs).pooler_output
    """
    config = getattr(encoder, "config", None)
    before = getattr(config, "_attn_implementation", None)
    if before not in ("sdpa", "eager"):
        yield False
        return
    config._attn_implementation = ATTENTION
    try:
        yield True
    finally:
        config._attn_implementation = before


__all__ = ["ATTENTION", "FastDropout", "attention_with_fast_dropout", "fast_dropout", "fast_dropout_attention",
           "keep_mask", "use_fast_dropout"]
