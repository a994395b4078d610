"""How a training step is computed fast, each with the same result as the plain computation.

* **Length buckets** (:func:`length_buckets`, :func:`bucketed`): a contrastive batch keeps its random composition
  (its sentences are each other's negatives) but goes through the encoder in a few groups of similar length, each
  padded only to its own longest; the embeddings, the loss and the gradient are those of the whole batch.
* **One embedding lookup** (:func:`looked_up_once`): the tokens of all groups are looked up in one call, so the dense
  gradient of the embedding matrix is formed once per step, not once per group.
* **Fast CPU dropout** (:class:`FastDropout`, :func:`fast_dropout_attention`): SimCSE's positives *are* dropout. On
  a CPU torch draws one 32-bit random number per activation; here each 64-bit draw gives four 16-bit numbers,
  compared as integers: masks of the same distribution from a quarter of the draws. ``p`` is used rounded to a
  multiple of 1/65536 (0.1 becomes 0.1000061) and the kept activations are scaled by ``1 / (1 - that p)``. Masks come
  from torch's default generator, so ``torch.manual_seed`` makes a run repeatable and gradient caching replays them.
  On other devices and in eval mode, :class:`FastDropout` is ``nn.Dropout``.
* **Gradient caching** (:func:`cached_backward`; Gao et al., 2021, "Scaling Deep Contrastive Learning Batch Size
  under Memory Limited Setup"): embed the batch chunk by chunk without a graph, compute the loss and its gradient
  with respect to each embedding, then run each chunk again with the graph (replaying its dropout masks) and
  backpropagate the cached gradients: the full-batch gradient with the memory of one chunk.
* **Precision**: ``fp32``, ``bf16`` (autocast; master weights stay fp32), ``fp16`` (GPUs) and ``auto``: bf16 on a
  CPU that computes bfloat16 natively (AVX-512 BF16 or AMX), fp32 everywhere else (an emulated bf16 is several
  times slower). Encoding alone also has ``int8`` (``simcse_hub.inference``).

:class:`TrainingForward` is the forward of a training step (buckets, lookup, dropout, and the MLM loss) as one
module, what Accelerate prepares. benchmarks/README.md has the measured speed of each.
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Callable, Iterator, Sequence

import numpy as np
import torch
from accelerate import Accelerator
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

logger = logging.getLogger(__name__)

def length_buckets(lengths: Sequence[int] | np.ndarray, max_buckets: int = 4) -> list[np.ndarray]:
    """Split sequences into at most ``max_buckets`` groups of similar length that together pad the least.

    The sequences are sorted by length and cut into contiguous groups; the cuts are those that minimise the padded
    size ``sum(len(group) * max(lengths[group]))`` (exact, by dynamic programming).

    Args:
        lengths (`Sequence[int]`): the real length of each sequence.
        max_buckets (`int`, *optional*, defaults to 4): at most this many groups (each is one forward pass).

    Returns:
        `list[np.ndarray]`: the indices of each group (every index exactly once), shortest group first.

    >>> [group.tolist() for group in length_buckets([5, 30, 6, 31], max_buckets=2)]
    [[0, 2], [1, 3]]
    """
    if max_buckets < 1:
        raise ValueError(f"max_buckets must be >= 1; got {max_buckets}.")
    lengths = np.asarray(lengths, dtype=np.int64)
    order = np.argsort(lengths, kind="stable")  # shortest first
    sorted_lengths, n = lengths[order], len(order)
    if n == 0:
        return []
    # least[j]: least padded size of the first j sorted sequences in k groups; the group (i, j] pads to L[j - 1].
    least = np.full(n + 1, np.inf)
    least[0] = 0.0
    choices, totals = [], []
    for _ in range(min(max_buckets, n)):
        current, choice = np.full(n + 1, np.inf), np.zeros(n + 1, dtype=np.int64)
        for j in range(1, n + 1):
            costs = least[:j] + (j - np.arange(j)) * sorted_lengths[j - 1]  # (j,): the last group starts at i
            choice[j] = int(np.argmin(costs))
            current[j] = costs[choice[j]]
        choices.append(choice)
        totals.append(current[n])
        least = current
    groups, j = [], n
    for choice in reversed(choices[: int(np.argmin(totals)) + 1]):  # the fewest groups among the best
        groups.append(order[choice[j]:j])
        j = int(choice[j])
    return groups[::-1]


def bucketed(
    forward: Callable[[dict[str, torch.Tensor]], torch.Tensor],
    inputs: dict[str, torch.Tensor],
    max_buckets: int = 4,
    lookup: nn.Module | None = None,
) -> torch.Tensor:
    """``forward(inputs)`` for right-padded ``(n, seq_len)`` inputs, computed in at most ``max_buckets`` groups of
    sequences of similar length (:func:`length_buckets`), each cut to its own longest sequence.

    Each row of the result is what ``forward`` gives that sequence (an encoder treats every sequence alone; only
    dropout masks are drawn differently), in the original order, with the gradient flowing back to each group.

    Args:
        forward (`Callable`): ``forward(inputs) -> (rows, ...)``, e.g. ``lambda x: model(**x).pooler_output``.
        inputs (`dict[str, torch.Tensor]`): ``(n, seq_len)`` tensors including ``attention_mask`` (1 = token).
        max_buckets (`int`, *optional*, defaults to 4): forward passes at most; 1 is one pass, as without this.
        lookup (`nn.Embedding`, *optional*): the token-embedding layer that ``forward`` calls on each group's
            ``input_ids`` (``model.get_input_embeddings()``). Given, the tokens of all groups are looked up in one
            call (:func:`looked_up_once`), so that the gradient of the embedding matrix, a dense
            ``(vocab, hidden)`` tensor, is formed once instead of once per group. The results are the same.

    Returns:
        `torch.Tensor`: ``(n, ...)``.

    >>> pooled = bucketed(lambda x: model(**x).pooler_output, inputs, 4, model.get_input_embeddings())  # doctest: +SKIP
    """
    lengths = inputs["attention_mask"].sum(-1)  # (n,)
    groups = length_buckets(lengths.tolist(), max_buckets)
    if len(groups) <= 1:
        width = int(lengths.max())
        return forward({key: value[:, :width] for key, value in inputs.items()})
    parts = []
    for group in groups:
        rows = torch.as_tensor(group, device=lengths.device)
        width = int(lengths[rows].max())
        parts.append({key: value[rows, :width] for key, value in inputs.items()})  # (len(group), width) each
    with looked_up_once(lookup, [part["input_ids"] for part in parts]):
        outputs = [forward(part) for part in parts]  # (len(group), ...) each
    order = torch.as_tensor(np.concatenate(groups), device=lengths.device)  # row of the output -> input row
    return torch.cat(outputs)[torch.argsort(order)]


@contextlib.contextmanager
def looked_up_once(lookup: nn.Module | None, calls: Sequence[torch.Tensor]) -> Iterator[bool]:
    """Within the block, the calls of ``lookup`` (an ``nn.Embedding``) on the token ids ``calls[0]``, ``calls[1]``,
    ... (in that order) return rows that were all looked up in one call on entry; any other call is a plain lookup.

    Every call returns what it would have returned (the same rows of the same weight): the difference is in the
    backward pass, where the weight's gradient is formed once, from one lookup, instead of once per call: one
    zero-filled ``(vocab, hidden)`` tensor (47 MB for all-MiniLM-L6-v2) and no sums of them, instead of one per length
    bucket (what that buys is measured in ``benchmarks/bench_step.py``). The layer's own lookup
    still runs in each call (a gather of the call's rows) and its result is dropped. Layers whose gradient depends on
    the call (``scale_grad_by_freq``) or that change their weight (``max_norm``) are left alone. Yields whether it
    applies.

    Args:
        lookup (`nn.Module`, *optional*): the token-embedding layer, e.g. ``model.get_input_embeddings()``.
        calls (`Sequence[torch.LongTensor]`): the ids each call will get, in call order (e.g. ``(batch, seq_len)``).

    >>> with looked_up_once(model.get_input_embeddings(), [part["input_ids"] for part in parts]):  # doctest: +SKIP
    ...     outputs = [model(**part).pooler_output for part in parts]
    """
    if (not isinstance(lookup, nn.Embedding) or lookup.max_norm is not None or lookup.scale_grad_by_freq
            or len(calls) < 2):
        yield False
        return
    rows = lookup(torch.cat([ids.reshape(-1) for ids in calls])).split([ids.numel() for ids in calls])  # (n, hidden)
    position = 0

    def hook(module: nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor | None:
        nonlocal position
        if position < len(calls) and args and torch.equal(args[0], calls[position]):
            position += 1
            return rows[position - 1].view(output.shape)  # the same values as ``output``, from the shared lookup
        return None  # not the expected call: its own lookup stands

    handle = lookup.register_forward_hook(hook)
    try:
        yield True
    finally:
        handle.remove()


class TrainingForward(nn.Module):
    """The forward pass of one training step (embeddings in length buckets, and the MLM loss) as one call of one
    module: what the training loop prepares with Accelerate, so that mixed-precision autocast and DDP wrap the
    whole of it, and what gradient caching re-runs chunk by chunk.

    Args:
        model (`SimCSEModel`): the model being trained (``.model`` here; save and evaluate that one).
        length_buckets (`int`, *optional*, defaults to 4): encoder passes per batch, over groups of similar length
            (:func:`bucketed`); 1 is one padded pass. The groups are formed inside each batch, whose composition
            (the in-batch negatives) stays random.
        fast_dropout (`bool`, *optional*, defaults to True): on a CPU, draw the encoder's dropout masks with
            :mod:`simcse_hub.speed` (four to a 64-bit random number): its ``nn.Dropout`` layers become
            ``FastDropout`` (which is ``nn.Dropout`` on other devices and in eval mode), and its attention weights
            are dropped by ``fast_dropout_attention`` during these calls. False: torch's dropout throughout.
        shared_lookup (`bool`, *optional*, defaults to True): look the tokens of all length buckets up in one call
            of the token-embedding layer (:func:`looked_up_once`; the same results, a cheaper backward pass).

    >>> step = TrainingForward(model, length_buckets=4)  # doctest: +SKIP
    >>> embeddings, mlm_sum = step(input_ids=ids, attention_mask=mask)  # (batch, num_sent, seq_len)  # doctest: +SKIP
    """

    def __init__(
        self, model: nn.Module, length_buckets: int = 4, fast_dropout: bool = True, shared_lookup: bool = True
    ) -> None:
        super().__init__()
        if length_buckets < 1:
            raise ValueError(f"length_buckets must be >= 1; got {length_buckets}.")
        self.model = model
        self.length_buckets = length_buckets
        self.fast_dropout = fast_dropout
        self.shared_lookup = shared_lookup
        if fast_dropout:
            use_fast_dropout(model.encoder)

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        token_type_ids: torch.Tensor | None = None,
        mlm_input_ids: torch.Tensor | None = None,
        mlm_labels: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Embeddings of grouped sentences and, given masked copies, the MLM loss summed over the masked tokens.

        Args:
            input_ids, attention_mask, token_type_ids (`torch.LongTensor` of shape `(batch, num_sent, seq_len)`):
                the sentences of each example (anchor, positive[, hard negative]), right-padded.
            mlm_input_ids, mlm_labels (`torch.LongTensor` of shape `(batch, num_sent, seq_len)`, *optional*):
                masked inputs and their labels (-100 where not masked).

        Returns:
            `tuple`: the embeddings ``(batch, num_sent, hidden)``, and the MLM cross-entropy summed over the masked
            tokens (a sum, so that chunks of a batch add up; 0 with its head's gradients present when no token is
            masked), or None without ``mlm_input_ids``.
        """
        batch_size, num_sent, seq_len = input_ids.shape
        inputs = {"input_ids": input_ids, "attention_mask": attention_mask, "token_type_ids": token_type_ids}
        inputs = {key: value.reshape(-1, seq_len) for key, value in inputs.items() if value is not None}
        fast = self.fast_dropout and input_ids.device.type == "cpu"
        with attention_with_fast_dropout(self.model.encoder) if fast else contextlib.nullcontext():
            lookup = self.model.get_input_embeddings() if self.shared_lookup else None
            pooled = bucketed(lambda part: self.model(**part).pooler_output, inputs, self.length_buckets, lookup)
            embeddings = pooled.view(batch_size, num_sent, -1)  # (batch, num_sent, hidden)
            if mlm_input_ids is None:
                return embeddings, None
            masked = (mlm_labels != -100).sum()
            if masked == 0:  # weight 0; one label keeps the mean finite and the head's gradients (zero) present
                mlm_labels = mlm_labels.clone()
                mlm_labels.view(-1)[0] = input_ids.reshape(-1)[0]
            return embeddings, self.model.mlm_loss(mlm_input_ids, mlm_labels, attention_mask) * masked


# ---------------------------------------------------------------------------------------------------- gradient caching


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
    return [{key: value[i:i + chunk_size] for key, value in batch.items()} for i in range(0, size, chunk_size)]


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

PRECISIONS = ("auto", "fp32", "no", "bf16", "fp16")  # training and inference
INFERENCE_PRECISIONS = (*PRECISIONS, "int8")  # int8: dynamic quantization, for encoding only

# ---------------------------------------------------------------------------------------------------- precision


def fast_cpu_bf16() -> bool:
    """Whether this CPU computes bfloat16 natively (AVX-512 BF16 or AMX); elsewhere bf16 is emulated and slow.

    >>> isinstance(fast_cpu_bf16(), bool)
    True
    """
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            flags = next((line for line in handle if line.startswith("flags")), "").split()
    except OSError:  # not Linux: trust oneDNN's own check
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    return "avx512_bf16" in flags or "amx_bf16" in flags


def resolve_precision(precision: str, device: torch.device, setting: str = "precision", *,
                      inference: bool = False) -> str:
    """What ``precision`` means on ``device``: ``"fp32"``, ``"bf16"``, ``"fp16"`` or (``inference=True`` only)
    ``"int8"``. ``ValueError`` naming ``setting`` for an unknown value, fp16 on a CPU or int8 off a CPU; a warning
    when bf16 would be emulated (slow) here. ``auto`` never chooses int8.

    >>> resolve_precision("no", torch.device("cpu")), resolve_precision("auto", torch.device("cuda"))
    ('fp32', 'fp32')
    >>> resolve_precision("int8", torch.device("cpu"), inference=True)
    'int8'
    """
    allowed = INFERENCE_PRECISIONS if inference else PRECISIONS
    if precision not in allowed:
        hint = " ('int8' is for encoding only: SimCSE(..., precision='int8'))" if precision == "int8" else ""
        raise ValueError(f"{setting}={precision!r}: expected one of {list(allowed)}{hint}.")
    if precision == "auto":
        return "bf16" if device.type == "cpu" and fast_cpu_bf16() else "fp32"
    if precision == "fp16" and device.type == "cpu":
        raise ValueError(f"{setting}='fp16' needs a GPU; on a CPU use 'auto' (bf16 where the CPU computes it "
                         "natively: AVX-512 BF16 or AMX), 'bf16' or 'fp32'.")
    if precision == "int8" and device.type != "cpu":
        raise ValueError(f"{setting}='int8' (dynamic int8 quantization of the linear layers) runs on a CPU only; "
                         f"on device {str(device)!r} use 'fp32', 'bf16' or 'fp16', or pass device='cpu'.")
    if precision == "bf16" and device.type == "cpu" and not fast_cpu_bf16():
        logger.warning("%s='bf16': this CPU has no native bfloat16 (AVX-512 BF16 or AMX), so bf16 is emulated and much "
                       "slower than fp32 here; %s='auto' chooses fp32 on this CPU.", setting, setting)
    return "fp32" if precision == "no" else precision


def autocast(precision: str, device: torch.device) -> contextlib.AbstractContextManager:
    """Autocast on ``device`` for a resolved ``precision`` (``bf16`` or ``fp16``); no change for ``fp32`` and
    ``int8`` (a quantized model computes in int8 itself).

    >>> with autocast("fp32", torch.device("cpu")):
    ...     (torch.ones(2, 2) @ torch.ones(2, 2)).dtype
    torch.float32
    """
    if precision in ("bf16", "fp16"):
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16 if precision == "bf16" else torch.float16)
    if precision not in ("fp32", "no", "int8"):
        raise ValueError(f"precision={precision!r}: expected a resolved precision, fp32, bf16, fp16 or int8.")
    return contextlib.nullcontext()


__all__ = ["ATTENTION", "FastDropout", "INFERENCE_PRECISIONS", "PRECISIONS", "RandState", "TrainingForward",
           "attention_with_fast_dropout", "autocast", "bucketed", "cached_backward", "fast_cpu_bf16", "fast_dropout",
           "fast_dropout_attention", "keep_mask", "length_buckets", "looked_up_once", "resolve_precision",
           "split_batch", "use_fast_dropout"]
