"""Nearest-neighbour search over sentence vectors: the index behind ``SimCSE.build_index`` / ``search`` and the
exact top-k that ``simcse-hub mine`` uses.

An index is the dict of the original SimCSE tool: ``sentences`` (de-duplicated, in first-occurrence order), ``ids``
(sentence -> row), ``index`` (the unit vectors, a float32 tensor searched exactly in torch, or a faiss index) and
``faiss`` (which of the two). Exact search is one matrix product and one ``torch.topk`` per chunk of queries: faster
on a CPU than faiss's exact ``IndexFlatIP`` (benchmarks/README.md); faiss's IVF index is the approximate option.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

logger = logging.getLogger(__name__)

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


__all__ = ["add_to_index", "as_vectors", "exact_search", "import_faiss", "make_index", "search_index"]
