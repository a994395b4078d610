"""BERT-whitening (Su et al., 2021): a linear post-processing of sentence embeddings, fitted on a corpus.

The embeddings of a corpus give a mean ``mu`` and a covariance ``C = U S U^T`` (SVD); ``W = U S^{-1/2}`` maps
``(x - mu) @ W`` to a space whose covariance on that corpus is the identity. Keeping the first ``k`` columns of ``W``
reduces the dimension as well (the "whitening-k" variant). The fitted transform is saved beside a model as
``whitening.safetensors`` (tensors ``mean`` of shape ``(1, dim)`` and ``W`` of shape ``(dim, k)``), and
``simcse_hub.SimCSE`` applies it at encode time when the model folder holds that file: raw embedding ->
``transform`` -> optional normalisation.

Reference: Su, Cao, Liu & Ou, "Whitening Sentence Representations for Better Semantics and Faster Retrieval",
2021 (https://arxiv.org/abs/2103.15316), and the authors' code (bojone/BERT-whitening, ``compute_kernel_bias``).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)

WHITENING_FILE = "whitening.safetensors"


def _to_numpy(embeddings: Any) -> np.ndarray:
    """A float64 ``(n, dim)`` copy of ``embeddings`` (numpy array, torch tensor or nested lists)."""
    if hasattr(embeddings, "detach"):  # torch.Tensor, without importing torch here
        embeddings = embeddings.detach().cpu().double().numpy()
    array = np.asarray(embeddings, dtype=np.float64)
    if array.ndim != 2:
        raise ValueError(f"embeddings must have shape (n, dim); got shape {array.shape}.")
    return array


class Whitening:
    r"""BERT-whitening: ``transform(x) = (x - mean) @ W``, fitted so the fitting corpus has identity covariance.

    Args:
        mean (`np.ndarray` of shape `(1, dim)`, *optional*): the corpus mean; set by [`~Whitening.fit`] or
            [`~Whitening.load`].
        W (`np.ndarray` of shape `(dim, k)`, *optional*): the whitening matrix.
        corpus (`str`, *optional*): a description of the fitting corpus (a file name), kept in the saved file.

    >>> import numpy as np
    >>> x = np.random.default_rng(0).normal(size=(500, 8)) @ np.random.default_rng(1).normal(size=(8, 8))
    >>> whitening = Whitening().fit(x, k=4)
    >>> whitening.transform(x).shape
    (500, 4)
    >>> bool(np.allclose(np.cov(whitening.transform(x).T), np.eye(4)))
    True
    """

    def __init__(self, mean: np.ndarray | None = None, W: np.ndarray | None = None, corpus: str | None = None) -> None:
        if (mean is None) != (W is None):
            raise ValueError("Whitening: give both `mean` and `W`, or neither (then call fit).")
        self.mean = None if mean is None else np.asarray(mean, dtype=np.float64).reshape(1, -1)  # (1, dim)
        self.W = None if W is None else np.asarray(W, dtype=np.float64)  # (dim, k)
        if self.W is not None and (self.W.ndim != 2 or self.W.shape[0] != self.mean.shape[1]):
            raise ValueError(f"Whitening: W must have shape (dim={self.mean.shape[1]}, k); got {self.W.shape}.")
        self.corpus = corpus

    @property
    def is_fitted(self) -> bool:
        return self.W is not None

    @property
    def dim(self) -> int:
        """The input dimension."""
        self._check_fitted()
        return int(self.W.shape[0])

    @property
    def k(self) -> int:
        """The output dimension (``dim`` when no reduction was asked for)."""
        self._check_fitted()
        return int(self.W.shape[1])

    def _check_fitted(self) -> None:
        if self.W is None:
            raise RuntimeError("Whitening is not fitted: call fit(embeddings) or Whitening.load(folder) first.")

    def fit(self, embeddings: Any, k: int | None = None, corpus: str | None = None) -> Whitening:
        r"""Fit ``mean`` and ``W`` on a corpus of embeddings.

        Args:
            embeddings (`np.ndarray` or `torch.Tensor` of shape `(n, dim)`): raw (not normalised) embeddings.
            k (`int`, *optional*, defaults to `None`): keep the first ``k`` columns of ``W`` (the directions of
                largest variance); `None` keeps all ``dim``.
            corpus (`str`, *optional*): a description of the corpus, saved with the transform.

        Returns:
            `Whitening`: ``self``.

        >>> whitening = Whitening().fit(corpus_embeddings, k=256)  # doctest: +SKIP
        """
        x = _to_numpy(embeddings)  # (n, dim)
        n, dim = x.shape
        if n < 2:
            raise ValueError(f"Whitening.fit needs at least 2 embeddings to estimate a covariance; got {n}.")
        if k is not None and not (isinstance(k, (int, np.integer)) and 1 <= k <= dim):
            raise ValueError(f"Whitening.fit: k must be an integer in [1, {dim}] (the embedding size) or None; "
                             f"got {k!r}.")
        mean = x.mean(axis=0, keepdims=True)  # (1, dim)
        covariance = np.cov(x, rowvar=False)  # (dim, dim), unbiased as in the reference code
        u, s, _ = np.linalg.svd(covariance)
        floor = s[0] * 1e-12 if s[0] > 0 else 1e-12
        if n <= dim or s[-1] <= floor:
            logger.warning(
                "Whitening fitted on %d embeddings of size %d: the covariance is (nearly) singular, so the directions "
                "of smallest variance are amplified noise. Fit on more sentences than dimensions, or pass k < %d.",
                n, dim, min(n - 1, dim),
            )
        W = u / np.sqrt(np.maximum(s, floor))  # (dim, dim): column j scaled by 1/sqrt(s_j)
        self.mean, self.W = mean, W[:, : (k or dim)]
        self.corpus = corpus if corpus is not None else self.corpus
        logger.info("Fitted whitening on %d embeddings: %d -> %d dimensions", n, dim, self.k)
        return self

    def transform(self, embeddings: Any) -> Any:
        r"""Whiten embeddings: ``(x - mean) @ W``.

        Args:
            embeddings (`np.ndarray` or `torch.Tensor` of shape `(n, dim)` or `(dim,)`): raw embeddings.

        Returns:
            the same type as ``embeddings``, of shape `(n, k)` (or `(k,)`); a tensor stays on its device and keeps
            its floating dtype, an array keeps a float32 dtype and is float64 otherwise.

        >>> whitening.transform(model_embeddings)  # doctest: +SKIP
        """
        self._check_fitted()
        if hasattr(embeddings, "detach"):  # torch.Tensor
            import torch

            dtype = embeddings.dtype if embeddings.dtype in (torch.float64, torch.float32) else torch.float32
            mean = torch.as_tensor(self.mean, dtype=dtype, device=embeddings.device)  # (1, dim)
            W = torch.as_tensor(self.W, dtype=dtype, device=embeddings.device)  # (dim, k)
            out = (embeddings.to(dtype) - mean) @ W
            return out.to(embeddings.dtype) if embeddings.is_floating_point() else out
        x = np.asarray(embeddings)
        if x.shape[-1] != self.dim:
            raise ValueError(
                f"Whitening.transform: embeddings have size {x.shape[-1]}; the whitening expects {self.dim}."
            )
        out = (x.astype(np.float64) - self.mean[0]) @ self.W  # (n, k)
        return out.astype(np.float32) if x.dtype == np.float32 else out

    __call__ = transform

    def save(self, folder: str | os.PathLike) -> Path:
        r"""Write ``<folder>/whitening.safetensors`` (float32 tensors ``mean`` `(1, dim)` and ``W`` `(dim, k)`) into
        ``folder`` (usually a saved model's, created if needed) and return its path.

        >>> whitening.save("outputs/my-simcse")  # doctest: +SKIP
        """
        from safetensors.numpy import save_file

        self._check_fitted()
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / WHITENING_FILE
        metadata = {"method": "bert-whitening", "dim": str(self.dim), "k": str(self.k)}
        if self.corpus:
            metadata["corpus"] = str(self.corpus)
        tensors = {
            "mean": np.ascontiguousarray(self.mean, dtype=np.float32),  # (1, dim)
            "W": np.ascontiguousarray(self.W, dtype=np.float32),  # (dim, k)
        }
        save_file(tensors, str(path), metadata=metadata)
        logger.info("Saved whitening (%d -> %d) to %s", self.dim, self.k, path)
        return path

    @classmethod
    def load(cls, folder: str | os.PathLike) -> Whitening | None:
        r"""Read ``<folder>/whitening.safetensors``; `None` when the folder has no such file.

        Args:
            folder (`str` or `os.PathLike`): a model folder (or the path of the file itself).

        Returns:
            `Whitening` or `None`.

        >>> whitening = Whitening.load("outputs/my-simcse")  # doctest: +SKIP
        """
        found = read_tensor_file(folder, WHITENING_FILE, "np")
        if found is None:
            return None
        path, tensors, metadata = found
        if set(tensors) != {"mean", "W"}:
            raise ValueError(
                f"{path}: expected exactly the tensors 'mean' (1, dim) and 'W' (dim, k); found {sorted(tensors)}."
            )
        mean, W = tensors["mean"], tensors["W"]
        if mean.ndim != 2 or mean.shape[0] != 1 or W.ndim != 2 or W.shape[0] != mean.shape[1]:
            raise ValueError(f"{path}: 'mean' must be (1, dim) and 'W' (dim, k); got {mean.shape} and {W.shape}.")
        return cls(mean, W, corpus=metadata.get("corpus"))

    def __repr__(self) -> str:
        if not self.is_fitted:
            return "Whitening(not fitted)"
        return f"Whitening(dim={self.dim}, k={self.k}, corpus={self.corpus!r})"


def read_tensor_file(folder: str | os.PathLike, filename: str, framework: str) -> tuple[Path, dict, dict] | None:
    """``(path, tensors, metadata)`` of the safetensors file ``filename`` in ``folder`` (or ``folder`` itself when it
    is that file), ``None`` when it is absent; `ValueError` naming the file when it cannot be read. ``framework`` is
    ``"np"`` or ``"pt"``. Shared by the post-processings saved beside a model (whitening, flow)."""
    from safetensors import SafetensorError, safe_open

    path = Path(folder)
    if path.is_dir() or path.name != filename:
        path = path / filename
    if not path.is_file():
        return None
    try:
        with safe_open(str(path), framework=framework) as handle:
            tensors = {name: handle.get_tensor(name) for name in handle.keys()}  # noqa: SIM118
            metadata = handle.metadata() or {}
    except (SafetensorError, OSError) as error:
        raise ValueError(f"{path}: not a readable safetensors file ({error}).") from error
    return path, tensors, metadata


def read_corpus(path: str | os.PathLike, max_sentences: int | None = None) -> list[str]:
    r"""The distinct sentences of a corpus file to fit a whitening on, in file order.

    Args:
        path (`str` or `os.PathLike`): an STS file (``.tsv`` / ``.tsv.gz`` with the header
            ``sentence1<TAB>sentence2<TAB>score``: both columns are used), or a UTF-8 text file with one sentence
            per line (``.txt``, ``.txt.gz`` or any other name; blank lines skipped).
        max_sentences (`int`, *optional*): keep only the first this many distinct sentences.

    Returns:
        `list[str]`.

    >>> sentences = read_corpus("../shared/data/stsb/train.tsv.gz")  # doctest: +SKIP
    """
    import gzip

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such corpus file (expected one sentence per line, or an STS .tsv[.gz]).")
    if max_sentences is not None and (not isinstance(max_sentences, int) or max_sentences < 2):
        raise ValueError(f"max_sentences must be an integer >= 2 or None; got {max_sentences!r}.")
    if path.name.endswith((".tsv", ".tsv.gz")):
        from simcse_hub.sts_data import read_sts_file

        sentences1, sentences2, _ = read_sts_file(path)
        sentences = list(dict.fromkeys(s for pair in zip(sentences1, sentences2) for s in pair))
    else:
        opener = gzip.open if path.name.endswith(".gz") else open
        sentences = []
        with opener(path, "rb") as handle:
            for number, line in enumerate(handle, start=1):
                try:
                    text = line.decode("utf-8").strip()
                except UnicodeDecodeError as error:
                    raise ValueError(f"{path}, line {number}: not valid UTF-8 ({error.reason}).") from error
                if text:
                    sentences.append(text)
        sentences = list(dict.fromkeys(sentences))
    if len(sentences) < 2:
        raise ValueError(f"{path}: {len(sentences)} sentence(s); fitting a whitening needs at least 2.")
    return sentences[:max_sentences] if max_sentences else sentences


def fit_whitening(
    encode_fn: Any,
    sentences: list[str],
    k: int | None = None,
    corpus: str | None = None,
) -> Whitening:
    r"""Encode ``sentences`` with ``encode_fn`` (raw, not normalised) and fit a [`Whitening`] on them.

    Args:
        encode_fn (`Callable[[list[str]], np.ndarray | torch.Tensor]`): `(n, dim)` embeddings of n sentences.
        sentences (`list[str]`): the fitting corpus (see [`read_corpus`]).
        k (`int`, *optional*): output dimension; `None` keeps all.
        corpus (`str`, *optional*): a description of the corpus, saved with the whitening.

    >>> whitening = fit_whitening(model.encode, read_corpus("corpus.txt"), k=256)  # doctest: +SKIP
    """
    from simcse_hub.evaluation import embed

    return Whitening().fit(embed(encode_fn, sentences), k=k, corpus=corpus)


__all__ = ["WHITENING_FILE", "Whitening", "fit_whitening", "read_corpus", "read_tensor_file"]
