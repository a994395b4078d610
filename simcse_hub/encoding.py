"""Encoding sentences with a SimCSE model: one batched encoder, one precision vocabulary, one length rule.

Every caller embeds through :func:`encode_sentences`: the ``SimCSE`` tool (and with it ``simcse-hub encode``,
``evaluate`` and the demo) and the evaluation inside the training loop. Each sentence is tokenized once, batches are
formed longest first *by token count* (ordering by characters, as sentence-transformers does, leaves about 40% more
padding on STS sentences) and padded on the right, and the vectors come back in the order given.

Batches hold ``batch_size`` sentences, or, with ``max_tokens_per_batch``, as many sentences as fit in that many
padded tokens (short sentences then share larger batches, long ones smaller ones).

Precision (one vocabulary for the tool and training): ``fp32`` (``no``, Accelerate's word, means the same),
``bf16`` (bfloat16 autocast; master weights stay fp32), ``fp16`` (GPUs only), and ``auto``: bf16 on a CPU that
computes bfloat16 natively (AVX-512 BF16 or AMX), fp32 everywhere else (an emulated bf16 is several times slower,
and on GPUs the choice depends on the model and batch, so it is left to you). Inference alone also has ``int8``:
dynamic int8 quantization of the linear layers (:func:`quantize_int8`), on a CPU only, never chosen by ``auto``.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import torch
from tqdm.auto import tqdm

logger = logging.getLogger(__name__)

PRECISIONS = ("auto", "fp32", "no", "bf16", "fp16")  # training and inference
INFERENCE_PRECISIONS = (*PRECISIONS, "int8")  # int8: dynamic quantization, for encoding only
MAX_LENGTH_CAP = 512  # never more tokens than this by default: longer inputs are rare and quadratic in cost
DEFAULT_MAX_TOKENS_PER_BATCH = 2048  # SimCSE.encode's batches when no batch_size is given (benchmarks/README.md)
SORT_WINDOW = 50_000  # sentences tokenized and ordered by length at a time (bounds the memory of huge inputs)
PROGRESS_BAR_MIN_SENTENCES = 1000

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


def int8_layers(module: torch.nn.Module) -> list[str]:
    """Names of the linear layers :func:`quantize_int8` quantizes: every ``nn.Linear`` with no more inputs than
    outputs. The down-projections of the feed-forward blocks (more inputs than outputs) stay fp32: their inputs,
    after GELU, have outliers that one 8-bit scale per tensor cannot hold, and quantizing them costs most of the
    agreement with fp32 (benchmarks/README.md).

    >>> int8_layers(torch.nn.Sequential(torch.nn.Linear(4, 16), torch.nn.GELU(), torch.nn.Linear(16, 4)))
    ['0']
    """
    return [name for name, layer in module.named_modules()
            if isinstance(layer, torch.nn.Linear) and layer.in_features <= layer.out_features]


def quantize_int8(module: torch.nn.Module) -> tuple[torch.nn.Module, int]:
    """A copy of ``module`` whose linear layers (:func:`int8_layers`) compute with int8 weights and int8
    activations quantized on the fly (``torch.ao.quantization.quantize_dynamic``, per-tensor); CPU only.

    ``module`` itself is left unchanged.

    Returns:
        `tuple[torch.nn.Module, int]`: the quantized copy and the number of layers quantized.

    >>> quantized, count = quantize_int8(torch.nn.Sequential(torch.nn.Linear(4, 8)))
    >>> count
    1
    """
    from torch.ao.quantization import default_dynamic_qconfig, quantize_dynamic

    names = int8_layers(module)
    with warnings.catch_warnings():  # torch 2.13 marks these APIs deprecated (for torchao) and runs them
        warnings.filterwarnings("ignore", message=r"torch\.ao\.quantization is deprecated", category=DeprecationWarning)
        warnings.filterwarnings("ignore", message=r"torch\.quantize_per_tensor, torch\.quantize_per_channel",
                                category=UserWarning)
        quantized = quantize_dynamic(module, {name: default_dynamic_qconfig for name in names}, dtype=torch.qint8)
    return quantized, len(names)


# ---------------------------------------------------------------------------------------------------- batches


def default_max_length(config: Any, tokenizer: Any = None) -> int:
    """The truncation length of inference: the encoder's position limit, the tokenizer's ``model_max_length`` and
    512, whichever is smallest (what ``save_pretrained`` writes as sentence-transformers' ``max_seq_length``)."""
    limits = [getattr(config, "max_input_length", None), getattr(tokenizer, "model_max_length", None), MAX_LENGTH_CAP]
    return min(limit for limit in limits if limit)


def tokenize(tokenizer: Any, sentences: Sequence[str], max_length: int) -> list[dict[str, list[int]]]:
    """Each sentence tokenized once, with special tokens, truncated to ``max_length``, unpadded:
    ``{"input_ids": [...][, "token_type_ids": [...]]}``.

    >>> features = tokenize(tokenizer, ["A cat.", "A man plays a guitar."], max_length=32)  # doctest: +SKIP
    >>> [len(f["input_ids"]) for f in features]  # doctest: +SKIP
    [5, 8]
    """
    if not sentences:
        return []
    encoded = tokenizer(list(sentences), truncation=True, max_length=max_length, return_attention_mask=False)
    keys = [key for key in ("input_ids", "token_type_ids") if key in encoded]
    return [{key: encoded[key][i] for key in keys} for i in range(len(sentences))]


def pad(features: Sequence[dict[str, list[int]]], tokenizer: Any) -> dict[str, torch.Tensor]:
    """Pad tokenized sentences on the right to the longest of them, with an attention mask.

    Always on the right, whatever the tokenizer's ``padding_side``: the encoders here have absolute positions
    (left padding would shift them and make an embedding depend on its batch) and pool the first token or the
    masked mean.

    Returns:
        `dict[str, torch.LongTensor]`: ``input_ids``, ``attention_mask`` (and ``token_type_ids`` when the features
        have them), each ``(batch, seq_len)``.

    >>> pad([{"input_ids": [101, 7, 102]}, {"input_ids": [101, 102]}], tokenizer)["attention_mask"]  # doctest: +SKIP
    tensor([[1, 1, 1],
            [1, 1, 0]])
    """
    seq_len = max(len(feature["input_ids"]) for feature in features)
    fill = {"input_ids": getattr(tokenizer, "pad_token_id", None) or 0, "attention_mask": 0,
            "token_type_ids": getattr(tokenizer, "pad_token_type_id", None) or 0}
    batch = {key: torch.full((len(features), seq_len), fill[key], dtype=torch.long)
             for key in (*features[0], "attention_mask")}  # (batch, seq_len) each
    for row, feature in enumerate(features):
        length = len(feature["input_ids"])
        for key, values in feature.items():
            batch[key][row, :length] = torch.as_tensor(values, dtype=torch.long)
        batch["attention_mask"][row, :length] = 1
    return batch


def length_order(features: Sequence[dict[str, list[int]]]) -> list[int]:
    """Indices of ``features``, longest (in tokens) first; ties keep their order.

    >>> length_order([{"input_ids": [1, 2]}, {"input_ids": [1, 2, 3]}, {"input_ids": [4, 5]}])
    [1, 0, 2]
    """
    return sorted(range(len(features)), key=lambda i: -len(features[i]["input_ids"]))


def check_batching(batch_size: Any, max_tokens_per_batch: Any) -> None:
    """``ValueError`` for a ``batch_size`` or ``max_tokens_per_batch`` that is not a positive integer."""
    if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer; got {batch_size!r}.")
    if max_tokens_per_batch is not None and (not isinstance(max_tokens_per_batch, int)
                                             or isinstance(max_tokens_per_batch, bool) or max_tokens_per_batch < 1):
        raise ValueError(f"max_tokens_per_batch must be a positive integer (padded tokens per batch) or None; got "
                         f"{max_tokens_per_batch!r}.")


def batch_rows(
    order: Sequence[int], lengths: Sequence[int], batch_size: int, max_tokens_per_batch: int | None = None
) -> list[list[int]]:
    """Cut ``order`` (indices, longest first) into batches: ``batch_size`` indices each, or, with
    ``max_tokens_per_batch``, as many as fit in that many padded tokens (the batch's longest length times its
    count; at least one sentence per batch, so a sentence longer than the budget forms a batch alone).

    >>> batch_rows([0, 1, 2, 3], [8, 4, 4, 2], batch_size=3)
    [[0, 1, 2], [3]]
    >>> batch_rows([0, 1, 2, 3], [8, 4, 4, 2], batch_size=3, max_tokens_per_batch=12)
    [[0], [1, 2, 3]]
    """
    if max_tokens_per_batch is None:
        return [list(order[start:start + batch_size]) for start in range(0, len(order), batch_size)]
    batches: list[list[int]] = []
    start = 0
    while start < len(order):
        count = max(1, max_tokens_per_batch // max(lengths[order[start]], 1))  # the first is the longest
        batches.append(list(order[start:start + count]))
        start += count
    return batches


# ---------------------------------------------------------------------------------------------------- the encoder


def encode_in_batches(
    sentences: Sequence[str],
    tokenizer: Any,
    embed: Callable[[list[str], list[dict[str, list[int]]]], torch.Tensor],
    *,
    batch_size: int = 64,
    max_tokens_per_batch: int | None = None,
    max_length: int = MAX_LENGTH_CAP,
    show_progress_bar: bool | None = None,
    lock: threading.Lock | None = None,
) -> torch.Tensor | None:
    """``embed(texts, features)`` over batches formed longest first by token count; the rows in the order given.

    Args:
        sentences (`Sequence[str]`): the sentences.
        tokenizer: tokenizes each sentence once (only the lengths are used when ``embed`` reads the texts).
        embed (`Callable`): a batch's texts and tokenized features -> its ``(batch, dim)`` vectors.
        batch_size, max_tokens_per_batch, max_length, show_progress_bar, lock: as in :func:`encode_sentences`.

    Returns:
        `torch.Tensor` of shape `(n, dim)`, float32 on the CPU; `None` for no sentences.
    """
    check_batching(batch_size, max_tokens_per_batch)
    if show_progress_bar is None:
        show_progress_bar = len(sentences) > PROGRESS_BAR_MIN_SENTENCES
    out: torch.Tensor | None = None
    with tqdm(total=len(sentences), desc="Encoding", unit=" sentences", disable=not show_progress_bar) as progress, \
            torch.inference_mode():
        for offset in range(0, len(sentences), SORT_WINDOW):
            window = sentences[offset:offset + SORT_WINDOW]
            with lock or contextlib.nullcontext():
                features = tokenize(tokenizer, window, max_length)
            lengths = [len(feature["input_ids"]) for feature in features]
            for rows in batch_rows(length_order(features), lengths, batch_size, max_tokens_per_batch):
                vectors = embed([window[i] for i in rows], [features[i] for i in rows]).float().cpu()  # (batch, dim)
                if out is None:
                    out = torch.empty(len(sentences), vectors.size(-1))  # (n, dim)
                out[torch.tensor(rows) + offset] = vectors
                progress.update(len(rows))
    return out


def encode_sentences(
    model: torch.nn.Module,
    tokenizer: Any,
    sentences: Sequence[str],
    *,
    batch_size: int = 64,
    max_tokens_per_batch: int | None = None,
    max_length: int | None = None,
    precision: str = "fp32",
    device: torch.device | None = None,
    show_progress_bar: bool | None = None,
    lock: threading.Lock | None = None,
) -> torch.Tensor:
    r"""The raw (not normalised) sentence embeddings of a SimCSE model, ``pooler_output``: ``(n, dim)`` float32 on
    the CPU, in the order of ``sentences``.

    Args:
        model (`SimCSEModel`): the model (its mode is kept: call ``eval()`` first for inference).
        tokenizer (`PreTrainedTokenizerBase`): its tokenizer.
        sentences (`Sequence[str]`): the sentences.
        batch_size (`int`, *optional*, defaults to 64): sentences per forward pass.
        max_tokens_per_batch (`int`, *optional*): instead of ``batch_size``, as many sentences per forward pass as
            fit in this many padded tokens (at least one).
        max_length (`int`, *optional*, defaults to :func:`default_max_length`): truncation length in tokens.
        precision (`str`, *optional*, defaults to `"fp32"`): a resolved precision (:func:`resolve_precision`);
            for ``int8``, pass a model from :func:`quantize_int8`.
        device (`torch.device`, *optional*, defaults to the model's): where the forward passes run.
        show_progress_bar (`bool`, *optional*): defaults to showing one for more than 1000 sentences.
        lock (`threading.Lock`, *optional*): held while tokenizing (a fast tokenizer must not serve two threads).

    >>> vectors = encode_sentences(model.eval(), tokenizer, ["A man plays.", "A cat eats."])  # doctest: +SKIP
    """
    device = device or next(model.parameters()).device

    def embed(texts: list[str], features: list[dict[str, list[int]]]) -> torch.Tensor:
        inputs = {key: value.to(device) for key, value in pad(features, tokenizer).items()}
        with autocast(precision, device):
            return model(**inputs).pooler_output  # (batch, dim)

    out = encode_in_batches(sentences, tokenizer, embed, batch_size=batch_size,
                            max_tokens_per_batch=max_tokens_per_batch,
                            max_length=max_length or default_max_length(model.config, tokenizer),
                            show_progress_bar=show_progress_bar, lock=lock)
    return out if out is not None else torch.empty(0, model.config.hidden_size)  # (0, dim) for no sentences


__all__ = ["DEFAULT_MAX_TOKENS_PER_BATCH", "INFERENCE_PRECISIONS", "MAX_LENGTH_CAP", "PRECISIONS", "autocast",
           "batch_rows", "check_batching", "default_max_length", "encode_in_batches", "encode_sentences",
           "fast_cpu_bf16", "int8_layers", "length_order", "pad", "quantize_int8", "resolve_precision", "tokenize"]
