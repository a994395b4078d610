"""Gradient caching (Gao et al., 2021, "Scaling Deep Contrastive Learning Batch Size under Memory Limited Setup"):
the gradient of a contrastive loss over a large batch, with the memory of one small chunk.

The loss of a batch couples all its embeddings, but the encoder treats each sentence alone. So:

1. embed the whole batch chunk by chunk **without** an autograd graph, remembering the RNG state before each chunk;
2. compute the loss on the full batch of (detached) embeddings and its gradient with respect to each embedding;
3. run each chunk again **with** the graph, replaying its RNG state so that dropout draws the same masks, and
   backpropagate the cached embedding gradients: ``backward(sum(embedding * cached_gradient))``.

The parameter gradient equals that of one backward pass through the full batch, at the cost of one extra forward
pass. Under DDP, only the last chunk's backward synchronises gradients.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import torch
from accelerate import Accelerator
from torch import nn


class RandState:
    """The RNG state dropout draws from: the CPU generator and, on a CUDA device, that device's generator.

    >>> state = RandState(torch.device("cpu"))
    >>> a = torch.rand(2)
    >>> with state.replay():
    ...     b = torch.rand(2)
    >>> torch.equal(a, b)
    True
    """

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.cpu = torch.get_rng_state()
        self.cuda = torch.cuda.get_rng_state(device) if device.type == "cuda" else None

    @contextlib.contextmanager
    def replay(self) -> Iterator[None]:
        """Run the block from this state; the RNG states outside the block are left as they were."""
        devices = [self.device] if self.cuda is not None else []
        with torch.random.fork_rng(devices=devices):
            torch.set_rng_state(self.cpu)
            if self.cuda is not None:
                torch.cuda.set_rng_state(self.cuda, self.device)
            yield


def split_batch(batch: dict[str, torch.Tensor], chunk_size: int) -> list[dict[str, torch.Tensor]]:
    """Cut every tensor of ``batch`` along its first (example) dimension into chunks of ``chunk_size``."""
    size = next(iter(batch.values())).size(0)
    return [{key: value[start : start + chunk_size] for key, value in batch.items()} for start in range(0, size, chunk_size)]


def cached_backward(
    accelerator: Accelerator,
    model: nn.Module,
    batch: dict[str, torch.Tensor],
    forward: Callable[[nn.Module, dict[str, torch.Tensor], bool], tuple[torch.Tensor, torch.Tensor | None]],
    loss_fn: Callable[[torch.Tensor], torch.Tensor],
    chunk_size: int,
) -> torch.Tensor:
    """Backpropagate ``loss_fn(embeddings) + sum of the chunks' extra losses`` through ``model`` in chunks of
    ``chunk_size`` examples.

    Args:
        accelerator (`Accelerator`): backward (loss scaling, accumulation) and DDP ``no_sync``.
        model (`nn.Module`): the prepared model.
        batch (`dict[str, torch.Tensor]`): tensors whose first dimension is the example, e.g. ``(batch, num_sent,
            seq_len)``.
        forward (`Callable`): ``forward(model, chunk, extra) -> (embeddings, extra_loss)``: the chunk's embeddings
            ``(chunk_batch, ...)``, a function of the chunk alone (and of the RNG, which is replayed), and with
            ``extra=True`` an extra loss that adds up over chunks (e.g. the MLM loss weighted by the chunk's share of
            the masked tokens) or None. Called once per chunk without a graph (``extra=False``), then again with one.
        loss_fn (`Callable`): the loss of the full batch of embeddings, ``(batch, ...) -> scalar``.
        chunk_size (`int`): examples per forward pass.

    Returns:
        `torch.Tensor`: the (detached) loss of the batch.

    >>> loss = cached_backward(accelerator, model, batch, forward, loss_fn, chunk_size=32)  # doctest: +SKIP
    """
    chunks = split_batch(batch, chunk_size)
    # 1. Embeddings of the whole batch without a graph; the RNG state before each chunk is kept for the replay.
    states, pieces = [], []
    with torch.no_grad():
        for chunk in chunks:
            states.append(RandState(accelerator.device))
            pieces.append(forward(model, chunk, False)[0].float())
    embeddings = torch.cat(pieces).requires_grad_()  # (batch, ...)
    # 2. The loss on the full batch, and its gradient with respect to every embedding.
    loss = loss_fn(embeddings)
    (cached,) = torch.autograd.grad(loss, embeddings)
    cached = cached.split([len(piece) for piece in pieces])
    # 3. Each chunk again, with the same dropout masks (the embeddings are drawn first, as in step 1),
    #    backpropagating its cached gradient; gradients are synchronised across processes once, on the last chunk.
    extra = torch.zeros((), device=loss.device)
    for index, (chunk, state, gradient) in enumerate(zip(chunks, states, cached)):
        last = index == len(chunks) - 1
        with state.replay(), contextlib.nullcontext() if last else accelerator.no_sync(model):
            chunk_embeddings, chunk_extra = forward(model, chunk, True)
            surrogate = (chunk_embeddings.float() * gradient).sum()
            if chunk_extra is not None:
                surrogate = surrogate + chunk_extra
                extra = extra + chunk_extra.detach()
            accelerator.backward(surrogate)
    return loss.detach() + extra


__all__ = ["RandState", "cached_backward", "split_batch"]
