"""``SimCSE``: encode, compare and search sentences with any model that loads one of the three ways.

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

import functools
import logging
import os
import threading
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from simcse_hub.encoding import (
    DEFAULT_MAX_TOKENS_PER_BATCH,
    autocast,
    check_batching,
    encode_in_batches,
    pad,
    quantize_int8,
    resolve_precision,
)
from simcse_hub.loading import load_model, model_file
from simcse_hub.search import add_to_index, as_vectors, import_faiss, make_index, search_index

logger = logging.getLogger(__name__)


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
            (``simcse_hub.encoding.quantize_int8``), whose embeddings differ more from fp32 than bf16's and depend
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
        from simcse_hub.flow import FLOW_FILE, Flow
        from simcse_hub.whitening import WHITENING_FILE, Whitening

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


__all__ = ["SimCSE"]
