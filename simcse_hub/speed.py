"""From the former ``dropout`` module:

Dropout with cheaper random numbers on the CPU, for training.

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

From the former ``batching`` module:

How a training step is computed fast: a contrastive batch in groups of similar length, its tokens looked up once.

A contrastive batch must keep its (random) composition, since its sentences are each other's negatives, but it need
not go through the encoder as one padded tensor. :func:`length_buckets` splits its sequences into a few groups of
similar length, each padded only to its own longest; the embeddings, the loss and the gradient are those of the
whole batch. :class:`TrainingForward` is that forward pass (with the MLM loss) as one module, what Accelerate prepares.

The batches themselves: every sentence is tokenized once (:class:`TokenizedDataset`, token ids in one flat
``int32`` array); :class:`SimCSECollator` pads each batch to its longest sentence (an unsupervised sentence's ids are
put twice in the batch, never re-tokenized); :func:`mask_tokens` makes the MLM inputs of a batch.

From the former ``gradcache`` module:

Gradient caching (Gao et al., 2021, "Scaling Deep Contrastive Learning Batch Size under Memory Limited Setup"):
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
import logging
import math
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn
from transformers import AttentionInterface, AttentionMaskInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import sdpa_mask

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

    from simcse_hub.data import Examples

from accelerate import Accelerator

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
    rows = lookup(torch.cat([ids.reshape(-1) for ids in calls])).split([ids.numel() for ids in calls])  # (tokens, hidden)
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
    >>> embeddings, mlm_sum = step(input_ids=ids, attention_mask=mask)  # ids: (batch, num_sent, seq_len)  # doctest: +SKIP
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


# ---------------------------------------------------------------------------------------------------- the batches of a run


class TokenizedDataset(torch.utils.data.Dataset):
    """Examples tokenized once: the ids of every column in one flat ``int32`` array, with offsets.

    Item ``i`` is a tuple of 1-3 ``np.ndarray`` of token ids (special tokens included, truncated to
    ``max_seq_length``).

    Args:
        examples (`Examples`): the text examples.
        tokenizer (`PreTrainedTokenizerBase`): the encoder's tokenizer.
        max_seq_length (`int`, *optional*, defaults to 32): truncation length (SimCSE trains on 32 tokens).
        chunk_size (`int`, *optional*, defaults to 10000): sentences per call of the (fast) tokenizer.

    >>> dataset = TokenizedDataset(read_examples("sentences.txt"), tokenizer, max_seq_length=32)  # doctest: +SKIP
    >>> dataset[0]  # doctest: +SKIP
    (array([ 101, 1037, 2158, 2003, 2652, 1037, 2858, 1012,  102], dtype=int32),)
    """

    def __init__(
        self,
        examples: Examples,
        tokenizer: PreTrainedTokenizerBase,
        max_seq_length: int = 32,
        chunk_size: int = 10_000,
    ) -> None:
        self.examples = examples
        self.num_columns = len(examples.columns)
        self.ids: list[np.ndarray] = []
        self.offsets: list[np.ndarray] = []
        for column in range(self.num_columns):
            pieces, lengths = [], []
            for start in range(0, len(examples.rows), chunk_size):
                texts = [row[column] for row in examples.rows[start : start + chunk_size]]
                encoded = tokenizer(texts, add_special_tokens=True, truncation=True, max_length=max_seq_length)
                for ids in encoded["input_ids"]:
                    pieces.append(np.asarray(ids, dtype=np.int32))
                    lengths.append(len(ids))
            self.ids.append(np.concatenate(pieces) if pieces else np.zeros(0, dtype=np.int32))
            self.offsets.append(np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64))

    def __len__(self) -> int:
        return len(self.examples.rows)

    def __getitem__(self, index: int) -> tuple[np.ndarray, ...]:
        return tuple(ids[offsets[index] : offsets[index + 1]] for ids, offsets in zip(self.ids, self.offsets))


class SimCSECollator:
    """Pad a list of tokenized examples into grouped tensors of shape ``(batch, num_sent, seq_len)``.

    One column (unsupervised) gives ``num_sent=2``: the same ids twice, so the two copies differ only by dropout.
    Two or three columns give anchor, positive[, hard negative]. Padding is dynamic (to the longest sentence of the
    batch) and on the right.

    Args:
        pad_token_id (`int`): the tokenizer's padding id.
        token_type_ids (`bool`, *optional*, defaults to `False`): also return zero ``token_type_ids`` (BERT-style
            encoders that read them).

    >>> collate = SimCSECollator(pad_token_id=0)
    >>> batch = collate([(np.array([101, 7, 102]),), (np.array([101, 102]),)])
    >>> batch["input_ids"].shape
    torch.Size([2, 2, 3])
    """

    def __init__(self, pad_token_id: int, token_type_ids: bool = False) -> None:
        self.pad_token_id = pad_token_id
        self.token_type_ids = token_type_ids

    def __call__(self, features: Sequence[tuple[np.ndarray, ...]]) -> dict[str, torch.Tensor]:
        groups = [feature * 2 if len(feature) == 1 else feature for feature in features]
        batch_size, num_sent = len(groups), len(groups[0])
        seq_len = max(len(ids) for group in groups for ids in group)
        input_ids = torch.full((batch_size, num_sent, seq_len), self.pad_token_id, dtype=torch.long)
        attention_mask = torch.zeros((batch_size, num_sent, seq_len), dtype=torch.long)
        for i, group in enumerate(groups):
            for j, ids in enumerate(group):
                input_ids[i, j, : len(ids)] = torch.from_numpy(ids.astype(np.int64))
                attention_mask[i, j, : len(ids)] = 1
        batch = {"input_ids": input_ids, "attention_mask": attention_mask}  # (batch, num_sent, seq_len)
        if self.token_type_ids:
            batch["token_type_ids"] = torch.zeros_like(input_ids)
        return batch


def mask_tokens(
    input_ids: torch.Tensor,
    tokenizer: PreTrainedTokenizerBase,
    mlm_probability: float = 0.15,
    attention_mask: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """BERT's masking for the auxiliary MLM loss: ``mlm_probability`` of the real tokens are chosen; of those 80%
    become the mask token, 10% a random token, 10% stay. Draws from the global torch RNG (so a resumed run replays
    it exactly).

    Args:
        input_ids (`torch.LongTensor` of any shape ending in seq_len): token ids (not modified).
        tokenizer (`PreTrainedTokenizerBase`): gives the mask token, the special tokens and the vocabulary size.
        mlm_probability (`float`, *optional*, defaults to 0.15): share of tokens chosen.
        attention_mask (`torch.LongTensor`, *optional*): padding positions (0) are never chosen.

    Returns:
        `tuple(torch.LongTensor, torch.LongTensor)`: the masked ids and the labels (-100 where not chosen).

    >>> masked, labels = mask_tokens(batch["input_ids"], tokenizer)  # doctest: +SKIP
    """
    if tokenizer.mask_token_id is None:
        raise ValueError(f"do_mlm=True needs a tokenizer with a mask token; {type(tokenizer).__name__} has none.")
    labels = input_ids.clone()
    special = torch.isin(input_ids, torch.tensor(tokenizer.all_special_ids, device=input_ids.device))
    if attention_mask is not None:
        special |= attention_mask == 0
    chosen = torch.bernoulli(torch.full(input_ids.shape, mlm_probability, device=input_ids.device)).bool() & ~special
    labels[~chosen] = -100
    masked = input_ids.clone()
    replaced = torch.bernoulli(torch.full(input_ids.shape, 0.8, device=input_ids.device)).bool() & chosen
    masked[replaced] = tokenizer.mask_token_id
    randomized = torch.bernoulli(torch.full(input_ids.shape, 0.5, device=input_ids.device)).bool() & chosen & ~replaced
    masked[randomized] = torch.randint(len(tokenizer), input_ids.shape, device=input_ids.device)[randomized]
    return masked, labels


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


__all__ = ['ATTENTION', 'FastDropout', 'INFERENCE_PRECISIONS', 'PRECISIONS', 'RandState', 'SimCSECollator', 'TokenizedDataset', 'TrainingForward', 'attention_with_fast_dropout', 'autocast', 'bucketed', 'cached_backward', 'fast_cpu_bf16', 'fast_dropout', 'fast_dropout_attention', 'keep_mask', 'length_buckets', 'looked_up_once', 'mask_tokens', 'resolve_precision', 'split_batch', 'use_fast_dropout']
