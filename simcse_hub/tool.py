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

Whitening: when the model folder holds ``whitening.safetensors`` (``simcse_hub.whitening.Whitening.save``), the
raw embeddings go through its ``transform`` before normalisation, in ``encode``, ``similarity`` and ``search`` alike.

Defined behaviour for odd inputs: an empty list gives a ``(0, dim)`` result; an empty string is encoded as the empty
sentence (special tokens only), as sentence-transformers does; a non-string raises ``TypeError`` naming its index and
type; text longer than ``max_length`` tokens is truncated to ``max_length`` tokens.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import threading
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

import simcse_hub
from simcse_hub.batching import autocast, check_precision, length_order, pad, tokenize
from simcse_hub.loading import resolve_model
from simcse_hub.modeling.configuration_simcse import POOLER_TYPES

logger = logging.getLogger(__name__)

PROGRESS_BAR_MIN_SENTENCES = 1000
SORT_WINDOW = 50_000  # sentences tokenized and ordered by length at a time (bounds the memory of huge inputs)
MAX_LENGTH_CAP = 512
OFFICIAL_RELEASE = re.compile(r"(^|[-_/])(un)?sup[-_]simcse")
def _resolve_file(model: str, filename: str, required: bool = False) -> Path | None:
    """The local path of ``filename`` in the folder or Hub repository ``model``, or ``None`` when it has none."""
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
        raise OSError(
            f"{model!r} is neither an existing folder nor a valid Hugging Face Hub id (expected 'owner/name')."
        ) from error
    except RepositoryNotFoundError as error:
        raise OSError(f"{model!r} is not a local folder and no such model exists on the Hugging Face Hub.") from error
    except RemoteEntryNotFoundError:
        return None
    except LocalEntryNotFoundError as error:
        if not required:
            return None
        offline = os.environ.get("HF_HUB_OFFLINE", "").upper() in ("1", "ON", "YES", "TRUE")
        raise OSError(
            f"{model!r} is not a local folder and its {filename} is not in the Hugging Face cache"
            + (" (HF_HUB_OFFLINE=1 forbids downloading it)" if offline else " and the Hub cannot be reached")
            + ". Download the model once while online, or pass the path of a local folder."
        ) from error


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
        precision (`str`, *optional*, defaults to ``"fp32"``): ``"fp32"``, or ``"bf16"``: an opt-in reduced-precision
            mode (bfloat16 autocast) whose embeddings differ slightly from fp32 (all-MiniLM-L6-v2 on 10,000 STS
            sentences: cosine 0.99999 on average, 0.99995 at least). It is faster on GPUs and on CPUs with native
            bfloat16 (AVX-512 BF16 or AMX: 1.9x on 2 cores); on other CPUs it is several times *slower* than fp32,
            and a warning says so.

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
        if pooler is not None and pooler not in POOLER_TYPES:
            raise ValueError(f"pooler={pooler!r} is not supported; expected one of {list(POOLER_TYPES)} or None.")
        self.model_name_or_path = str(model_name_or_path)
        self.device = torch.device(device if device is not None else ("cuda" if torch.cuda.is_available() else "cpu"))
        self.precision = check_precision(precision, self.device)
        self.num_cells, self.num_cells_in_search = num_cells, num_cells_in_search
        self.index: dict[str, Any] | None = None
        self.model: torch.nn.Module | None = None  # a SimCSEModel (kinds a and c)
        self.sentence_transformer: Any = None  # a SentenceTransformer (kind b)
        self.tokenizer: Any = None
        self._lock = threading.Lock()  # fast tokenizers must not be used by two threads at once
        self._dim: int | None = None

        name = resolve_model(self.model_name_or_path)  # a folder, a Hub id, or the installed offline copy of one
        modules_file = _resolve_file(name, "modules.json")
        config_file = _resolve_file(name, "config.json", required=modules_file is None)
        if config_file is None and modules_file is None:
            raise OSError(f"{self.model_name_or_path!r} has neither config.json nor modules.json: it is not a model "
                          "folder (expected the output of `simcse-hub train`, a sentence-transformers model, or a "
                          "transformers encoder).")
        model_type = json.loads(config_file.read_text(encoding="utf-8")).get("model_type") if config_file else None

        if model_type == "simcse":
            self.kind = "simcse"
            self._load_simcse(name, pooler)
        elif modules_file is not None and pooler is None:
            self.kind = "sentence-transformers"
            self._load_sentence_transformer(name)
        else:
            self.kind = "encoder"
            self._load_encoder(name, pooler, from_sentence_transformers=modules_file is not None)

        model_limit = self._model_max_length(name)
        if max_length is not None and (not isinstance(max_length, int) or max_length < 2):
            raise ValueError(f"max_length must be an integer >= 2 (tokens); got {max_length!r}.")
        if max_length is not None and model_limit is not None and max_length > model_limit:
            raise ValueError(f"max_length={max_length} exceeds what {name!r} accepts ({model_limit} tokens).")
        self.max_length = max_length or model_limit or MAX_LENGTH_CAP
        self.whitening = self._load_whitening(name)
        logger.info("Loaded %s (%s, pooler %s, max_length %d) on %s", self.model_name_or_path, self.kind, self.pooler,
                    self.max_length, self.device)

    # ------------------------------------------------------------------ loading

    def _load_simcse(self, name: str, pooler: str | None) -> None:
        from transformers import AutoModel

        simcse_hub.register_auto_classes()
        self.model = AutoModel.from_pretrained(name)  # SimCSEModel.from_pretrained: with the folder's tokenizer
        self.tokenizer = self.model.tokenizer
        if self.tokenizer is None:
            raise OSError(f"{self.model_name_or_path!r} holds a SimCSE model without a tokenizer "
                          "(tokenizer_config.json); save it with save_model(model, folder, tokenizer).")
        self._override_pooler(pooler)

    def _load_sentence_transformer(self, name: str) -> None:
        from sentence_transformers import SentenceTransformer

        self.sentence_transformer = SentenceTransformer(name, device=str(self.device))
        self.sentence_transformer.eval()
        self.pooler = "sentence-transformers"

    def _load_encoder(self, name: str, pooler: str | None, from_sentence_transformers: bool) -> None:
        from simcse_hub.modeling.modeling_simcse import SimCSEModel

        official = OFFICIAL_RELEASE.search(os.path.basename(os.path.normpath(name)).lower()) is not None
        if official:
            self.model = SimCSEModel.from_official(name)
            self._override_pooler(pooler)
        elif pooler is None:
            raise ValueError(
                f"{name!r} is a plain transformers encoder, which has no sentence pooling of its own: pass "
                f"pooler=, one of {list(POOLER_TYPES)} (for example SimCSE({name!r}, pooler='cls_before_pooler'))."
            )
        else:
            if from_sentence_transformers:
                logger.warning("pooler=%r given: wrapping the transformer of sentence-transformers model %s instead "
                               "of using its own pooling modules.", pooler, name)
            if pooler == "cls":
                # 'cls' is the first token through a trained dense + tanh head: the encoder's own pooler (BERT's
                # pooler_output, as the original tool used), which from_official copies into the MLP.
                try:
                    self.model = SimCSEModel.from_official(name, supervised=True)
                except ValueError as error:
                    raise ValueError(
                        f"pooler='cls' applies a trained MLP head to the first token, and {name!r} has none (no "
                        "pooler.dense weights); use pooler='cls_before_pooler' or 'avg'."
                    ) from error
            else:
                self.model = SimCSEModel.from_encoder(name, pooler_type=pooler)
        self.model.to(self.device).eval()
        self.pooler = self.model.config.pooler_type
        self.tokenizer = self.model.tokenizer
        if self.tokenizer is None:
            raise OSError(f"{self.model_name_or_path!r} has no tokenizer (tokenizer_config.json) beside its weights.")

    def _override_pooler(self, pooler: str | None) -> None:
        config = self.model.config
        if pooler is not None and pooler != config.pooler_type:
            logger.warning("pooler=%r overrides the model's own pooler %r.", pooler, config.pooler_type)
            config.pooler_type = pooler
            if pooler == "cls":  # 'cls' means the first token through the MLP head
                config.mlp_only_train = False
        self.pooler = config.pooler_type
        self.model.to(self.device).eval()

    def _model_max_length(self, name: str) -> int | None:
        if self.sentence_transformer is not None:
            return self.sentence_transformer.max_seq_length
        st_config = _resolve_file(name, "sentence_bert_config.json") if self.kind == "simcse" else None
        if st_config is not None:  # what the folder's sentence-transformers view truncates at
            saved = json.loads(st_config.read_text(encoding="utf-8")).get("max_seq_length")
            if saved:
                return int(saved)
        limits = [self.model.config.max_input_length, MAX_LENGTH_CAP]
        limits.append(getattr(self.tokenizer, "model_max_length", None))
        return min(limit for limit in limits if limit)

    def _load_whitening(self, name: str) -> Any:
        """The folder's BERT-whitening (``whitening.safetensors``, see ``simcse_hub.whitening``), or ``None``."""
        from simcse_hub.whitening import (  # also simcse_hub.evaluation.Whitening
            WHITENING_FILE,
            Whitening,
        )

        path = _resolve_file(name, WHITENING_FILE)
        if path is None:
            return None
        whitening = Whitening.load(path)
        logger.info("Applying %r from %s before normalisation", whitening, path)
        return whitening

    # ------------------------------------------------------------------ encoding

    @property
    def embedding_dim(self) -> int:
        """Dimension of the vectors ``encode`` returns (after whitening, when the model has one)."""
        if self._dim is None:
            self._dim = int(self._encode_batch([""], self.max_length).shape[-1])
        return self._dim

    def _tokenize(self, sentences: list[str], max_length: int) -> list[dict[str, list[int]]]:
        """Each sentence tokenized once, unpadded. For a sentence-transformers model only the lengths are used (to
        order the batches): it tokenizes again itself, so its embeddings stay exactly those of its own ``encode``."""
        tokenizer = self.tokenizer if self.tokenizer is not None else getattr(self.sentence_transformer, "tokenizer",
                                                                              None)
        if not callable(tokenizer):  # not a text tokenizer: order by characters, as sentence-transformers does
            return [{"input_ids": [0] * len(sentence)} for sentence in sentences]
        with self._lock:
            return tokenize(tokenizer, sentences, max_length)

    def _finish(self, embeddings: torch.Tensor) -> torch.Tensor:
        """float32, whitened when the model has a whitening, on the CPU: ``(batch, dim)``."""
        embeddings = embeddings.float()
        if self.whitening is not None:
            embeddings = torch.as_tensor(self.whitening.transform(embeddings), dtype=torch.float32)
        return embeddings.cpu()

    @torch.inference_mode()
    def _encode_features(self, features: dict[str, torch.Tensor]) -> torch.Tensor:
        """Raw (not normalised) embeddings of padded inputs (kinds a and c): ``(batch, dim)`` on the CPU."""
        features = {key: value.to(self.device) for key, value in features.items()}
        with autocast(self.precision, self.device):
            embeddings = self.model(**features).pooler_output  # (batch, hidden)
        return self._finish(embeddings)

    @torch.inference_mode()
    def _encode_batch(self, batch: list[str], max_length: int) -> torch.Tensor:
        """Raw (not normalised) embeddings of one batch of sentences on the CPU: ``(len(batch), dim)``."""
        if self.sentence_transformer is None:
            return self._encode_features(pad(self._tokenize(batch, max_length), self.tokenizer))
        with self._lock, autocast(self.precision, self.device):
            embeddings = self.sentence_transformer.encode(
                batch, batch_size=len(batch), convert_to_tensor=True, show_progress_bar=False,
                processing_kwargs={"text": {"max_length": max_length, "truncation": True}},
            )  # (batch, dim)
        return self._finish(embeddings)

    def encode(
        self,
        sentences: str | Sequence[str],
        batch_size: int = 64,
        normalize_to_unit: bool = True,
        return_numpy: bool = False,
        max_length: int | None = None,
        show_progress_bar: bool | None = None,
        keepdim: bool = False,
    ) -> torch.Tensor | np.ndarray:
        r"""Embed one sentence or a list of sentences.

        Every sentence is tokenized once; batches are formed longest first *by token count* (so a batch pads
        little: ordering by characters, as sentence-transformers does, pads 40% more on STS sentences), and the
        vectors are returned in the order given.

        Args:
            sentences (`str` or `list[str]`): a sentence gives a ``(dim,)`` vector, a list an ``(n, dim)`` matrix;
                an empty list gives ``(0, dim)``. An empty string is the empty sentence (special tokens only).
            batch_size (`int`, *optional*, defaults to 64): sentences per forward pass.
            normalize_to_unit (`bool`, *optional*, defaults to `True`): scale every vector to unit length.
            return_numpy (`bool`, *optional*, defaults to `False`): a float32 ``numpy.ndarray`` instead of a CPU
                ``torch.Tensor``.
            max_length (`int`, *optional*, defaults to ``self.max_length``): longer texts are truncated to this many
                tokens (special tokens included).
            show_progress_bar (`bool`, *optional*): defaults to showing one for more than 1000 sentences.
            keepdim (`bool`, *optional*, defaults to `False`): return ``(1, dim)`` for a single sentence.

        Raises:
            TypeError: ``sentences`` is not a str or a list of str (the message names the first bad index).

        >>> model.encode(["A man is playing a guitar.", "A cat eats food."]).shape  # doctest: +SKIP
        torch.Size([2, 384])
        """
        items, single = _check_sentences(sentences)
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer; got {batch_size!r}.")
        max_length = self.max_length if max_length is None else max_length
        if not isinstance(max_length, int) or not 2 <= max_length <= max(self.max_length, 2):
            raise ValueError(f"max_length must be an integer in [2, {self.max_length}]; got {max_length!r}.")
        if not items:
            embeddings = torch.empty(0, self.embedding_dim)  # (0, dim)
        else:
            if show_progress_bar is None:
                show_progress_bar = len(items) > PROGRESS_BAR_MIN_SENTENCES
            windows = range(0, len(items), SORT_WINDOW)
            total = sum(math.ceil(min(SORT_WINDOW, len(items) - start) / batch_size) for start in windows)
            embeddings = None
            with tqdm(total=total, desc="Encoding", disable=not show_progress_bar) as progress:
                for offset in windows:
                    window = items[offset:offset + SORT_WINDOW]
                    features = self._tokenize(window, max_length)
                    order = length_order(features)
                    for start in range(0, len(order), batch_size):
                        rows = order[start:start + batch_size]
                        if self.sentence_transformer is not None:
                            chunk = self._encode_batch([window[i] for i in rows], max_length)  # (batch, dim)
                        else:
                            chunk = self._encode_features(pad([features[i] for i in rows], self.tokenizer))  # (batch, dim)
                        if embeddings is None:
                            embeddings = torch.empty(len(items), chunk.size(-1))  # (n, dim)
                        embeddings[torch.tensor(rows) + offset] = chunk
                        progress.update(1)
            self._dim = embeddings.size(-1)
        if normalize_to_unit:
            embeddings = F.normalize(embeddings, dim=-1)
        if single and not keepdim:
            embeddings = embeddings[0]  # (dim,)
        return embeddings.numpy() if return_numpy else embeddings

    def similarity(
        self, queries: str | Sequence[str], keys: str | Sequence[str] | np.ndarray, batch_size: int = 64
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
        batch_size: int = 64,
    ) -> None:
        r"""Index sentences for ``search`` (replacing any previous index). Repeated sentences are indexed once.

        Args:
            sentences_or_file_path (`list[str]`, or `str` / `os.PathLike`): the sentences, or the path of a UTF-8
                text file with one sentence per line (blank lines skipped), as in the original tool.
            use_faiss (`bool`, *optional*): ``None`` uses faiss (inner product on unit vectors) when it is installed
                and exact numpy search otherwise; ``True`` requires faiss; ``False`` always uses numpy.
            faiss_fast (`bool`, *optional*, defaults to `False`): an approximate IVF index (``num_cells`` cells,
                ``num_cells_in_search`` visited per query) instead of the exact ``IndexFlatIP``.
            batch_size (`int`, *optional*, defaults to 64): encoding batch size.

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
        sentences = list(dict.fromkeys(sentences))  # de-duplicated, first occurrence order
        if not sentences:
            raise ValueError("build_index needs at least one sentence.")
        if use_faiss is None or use_faiss:
            try:
                import faiss
            except ImportError as error:
                if use_faiss:
                    raise ImportError("use_faiss=True needs faiss: pip install faiss-cpu") from error
                faiss = None
        else:
            faiss = None
        if faiss_fast and faiss is None:
            logger.warning("faiss_fast=True ignored: faiss is not used; searching exactly with numpy.")
        vectors = self.encode(sentences, batch_size=batch_size, return_numpy=True).astype(np.float32)  # (n, dim)
        if faiss is None:
            index: Any = vectors
        elif faiss_fast:
            cells = min(self.num_cells, len(sentences))
            index = faiss.IndexIVFFlat(faiss.IndexFlatIP(vectors.shape[1]), vectors.shape[1], cells,
                                       faiss.METRIC_INNER_PRODUCT)
            index.train(vectors)
            index.nprobe = min(self.num_cells_in_search, cells)
            index.add(vectors)
        else:
            index = faiss.IndexFlatIP(vectors.shape[1])
            index.add(vectors)
        self.index = {"sentences": sentences, "ids": {s: i for i, s in enumerate(sentences)}, "index": index,
                      "faiss": faiss is not None}
        logger.info("Indexed %d sentences (%s)", len(sentences),
                    "numpy" if faiss is None else ("faiss IVF" if faiss_fast else "faiss flat"))

    def add_to_index(self, sentences: Sequence[str], batch_size: int = 64) -> None:
        """Add sentences to the index ``build_index`` made; sentences already in it are skipped."""
        if self.index is None:
            raise RuntimeError("add_to_index needs an index: call build_index(sentences) first.")
        new, _ = _check_sentences(sentences)
        new = [s for s in dict.fromkeys(new) if s not in self.index["ids"]]
        if not new:
            return
        vectors = self.encode(new, batch_size=batch_size, return_numpy=True).astype(np.float32)  # (k, dim)
        if self.index["faiss"]:
            self.index["index"].add(vectors)
        else:
            self.index["index"] = np.concatenate([self.index["index"], vectors])  # (n + k, dim)
        for sentence in new:
            self.index["ids"][sentence] = len(self.index["sentences"])
            self.index["sentences"].append(sentence)

    def search(
        self, queries: str | Sequence[str], threshold: float = 0.6, top_k: int = 5
    ) -> list[tuple[str, float]] | list[list[tuple[str, float]]]:
        r"""The indexed sentences most similar (cosine) to each query.

        Args:
            queries (`str` or `list[str]`).
            threshold (`float`, *optional*, defaults to 0.6): only results with a score at least this.
            top_k (`int`, *optional*, defaults to 5): at most this many results per query.

        Returns:
            for a str, a list of ``(sentence, score)`` sorted by decreasing score; for a list, one such list per
            query.

        >>> model.search("A man eats.", threshold=0.3, top_k=2)  # doctest: +SKIP
        [('A man is eating food.', 0.8...)]
        """
        if self.index is None:
            raise RuntimeError("search needs an index: call build_index(sentences) first.")
        if not isinstance(top_k, int) or top_k < 1:
            raise ValueError(f"top_k must be a positive integer; got {top_k!r}.")
        items, single = _check_sentences(queries)
        if not items:
            return []
        query_vecs = self.encode(items, return_numpy=True, keepdim=True).astype(np.float32)  # (q, dim)
        sentences = self.index["sentences"]
        k = min(top_k, len(sentences))
        if self.index["faiss"]:
            scores, ids = self.index["index"].search(query_vecs, k)  # (q, k) each
        else:
            all_scores = query_vecs @ self.index["index"].T  # (q, n)
            ids = np.argsort(-all_scores, axis=1, kind="stable")[:, :k]  # (q, k)
            scores = np.take_along_axis(all_scores, ids, axis=1)  # (q, k)
        results = [
            [(sentences[i], float(s)) for i, s in zip(row_ids, row_scores) if i >= 0 and s >= threshold]
            for row_ids, row_scores in zip(ids.tolist(), scores.tolist())
        ]
        return results[0] if single else results

    def __repr__(self) -> str:
        return (f"SimCSE({self.model_name_or_path!r}, kind={self.kind!r}, pooler={self.pooler!r}, "
                f"max_length={self.max_length}, device={str(self.device)!r})")


__all__ = ["SimCSE"]
