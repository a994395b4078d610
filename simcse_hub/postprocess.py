"""From the former ``whitening`` module:

BERT-whitening (Su et al., 2021): a linear post-processing of sentence embeddings, fitted on a corpus.

The embeddings of a corpus give a mean ``mu`` and a covariance ``C = U S U^T`` (SVD); ``W = U S^{-1/2}`` maps
``(x - mu) @ W`` to a space whose covariance on that corpus is the identity. Keeping the first ``k`` columns of ``W``
reduces the dimension as well (the "whitening-k" variant). The fitted transform is saved beside a model as
``whitening.safetensors`` (tensors ``mean`` of shape ``(1, dim)`` and ``W`` of shape ``(dim, k)``), and
``simcse_hub.SimCSE`` applies it at encode time when the model folder holds that file: raw embedding ->
``transform`` -> optional normalisation.

Reference: Su, Cao, Liu & Ou, "Whitening Sentence Representations for Better Semantics and Faster Retrieval",
2021 (https://arxiv.org/abs/2103.15316), and the authors' code (bojone/BERT-whitening, ``compute_kernel_bias``).

From the former ``flow_model`` module:

The network of BERT-flow (:mod:`simcse_hub.flow`): a Glow-style normalizing flow on vectors.

Each step is ActNorm -> invertible linear map (LU-decomposed) -> affine coupling; the base distribution is a standard
Gaussian. Every layer returns its output and the log-determinant of its Jacobian, and has an exact inverse.

References: Kingma & Dhariwal, "Glow: Generative Flow with Invertible 1x1 Convolutions", 2018
(https://arxiv.org/abs/1807.03039); Dinh, Sohl-Dickstein & Bengio, "Density estimation using Real NVP", 2017.

From the former ``flow`` module:

BERT-flow (Li et al., 2020): a normalizing flow fitted on a corpus of sentence embeddings, used as post-processing.

A flow ``f`` is an invertible map with a tractable Jacobian. Fitted by maximum likelihood so that ``z = f(x)`` follows
a standard Gaussian on the corpus, it turns the anisotropic, non-Gaussian cloud of raw embeddings into an isotropic
one, in which cosine similarity is meant to track meaning better: the non-linear sibling of BERT-whitening
(``simcse_hub.whitening``). The flow here is Glow-style on vectors: the inputs are standardised with the corpus mean
and standard deviation, then ``num_steps`` steps, each ActNorm -> invertible linear map (LU-decomposed) -> affine
coupling, with a standard Gaussian base. The fitted flow is saved beside a model as ``flow.safetensors``.

References: Li, Zhou, He, Wang, Yang & Li, "On the Sentence Embeddings from Pre-trained Language Models", EMNLP 2020
(https://arxiv.org/abs/2011.05864); Kingma & Dhariwal, "Glow: Generative Flow with Invertible 1x1 Convolutions",
2018 (https://arxiv.org/abs/1807.03039); Dinh, Sohl-Dickstein & Bengio, "Density estimation using Real NVP", 2017.

From the former ``baselines`` module:

Why contrastive learning works, on your own model: the post-hoc fixes of anisotropy beside SimCSE, in one table.

Raw encoder vectors are anisotropic: they crowd in a narrow cone, so every pair of sentences looks similar (a high
mean cosine of random pairs). Two earlier fixes reshape that distribution after the fact, fitted on an unlabelled
corpus: BERT-whitening (``simcse_hub.whitening``, linear: it decorrelates and rescales, optionally keeping the k
directions of largest variance) and BERT-flow (``simcse_hub.flow``, a normalizing flow to a Gaussian). Contrastive
learning instead trains the encoder so that paraphrases are close (alignment) and everything is spread over the sphere
(uniformity). :func:`compare_postprocessing` scores a model as it is and with each fix, on the same pooled output, each
with STS Spearman, alignment, uniformity and the mean cosine of all pairs; :func:`comparison_table` lays the rows side
by side (a SimCSE model evaluated as it is makes the last row).
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from simcse_hub.evaluation import (
    DISPLAY_NAMES,
    EncodeFn,
    embed,
    evaluate_model,
    memoized,
)
from simcse_hub.modeling.formats_simcse import public_name as public_model_name

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
        from simcse_hub.evaluation import read_sts_file

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

_LOG_2PI = math.log(2 * math.pi)


# --------------------------------------------------------------------------------------------------- the network


class ActNorm(nn.Module):
    r"""Per-dimension affine map ``y = x * exp(log_scale) + bias`` (Glow's ActNorm), initialised from a batch.

    The shift comes after the scale (Glow shifts first), so that an optimiser step on ``bias`` moves the output by
    that much and no more even where the scale is large; and the initialisation never scales a dimension by more
    than ``1 / min_std``. Without both, a nearly constant dimension (all-MiniLM-L6-v2 has three) gets a scale of
    ~1e6 and the first Adam step sends the loss to 1e5.
    """

    min_std = 1e-2

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.log_scale = nn.Parameter(torch.zeros(dim))  # (dim,)
        self.bias = nn.Parameter(torch.zeros(dim))  # (dim,)

    @torch.no_grad()
    def initialize(self, x: torch.Tensor) -> None:
        """Data-dependent initialisation: the output of ``x`` `(n, dim)` has mean 0 and variance 1 per dimension."""
        self.log_scale.copy_(-torch.log(x.std(dim=0, unbiased=False).clamp_min(self.min_std)))
        self.bias.copy_(-x.mean(dim=0) * torch.exp(self.log_scale))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return x * torch.exp(self.log_scale) + self.bias, self.log_scale.sum()

    def inverse(self, y: torch.Tensor) -> torch.Tensor:
        return (y - self.bias) * torch.exp(-self.log_scale)


class InvertibleLinear(nn.Module):
    r"""Invertible linear map ``y = W x`` with ``W = P L (U + diag(sign_s * exp(log_s)))`` (Glow's LU form).

    ``P`` (a permutation matrix) and ``sign_s`` are fixed buffers; ``L`` (unit lower triangular), ``U`` (strictly upper
    triangular) and ``log_s`` are trained, so ``log|det W| = sum(log_s)``. Initialised from the LU decomposition of a
    random rotation (drawn from torch's global RNG), so the map starts volume-preserving.
    """

    def __init__(self, dim: int) -> None:
        super().__init__()
        rotation, _ = torch.linalg.qr(torch.randn(dim, dim, dtype=torch.float64))  # (dim, dim)
        P, L, U = torch.linalg.lu(rotation)
        s = torch.diagonal(U)  # (dim,)
        self.register_buffer("P", P.float())  # (dim, dim)
        self.register_buffer("sign_s", torch.sign(s).float())  # (dim,)
        self.L = nn.Parameter(torch.tril(L, -1).float())  # (dim, dim), only the strictly lower part is used
        self.U = nn.Parameter(torch.triu(U, 1).float())  # (dim, dim), only the strictly upper part is used
        self.log_s = nn.Parameter(torch.log(torch.abs(s)).float())  # (dim,)
        self.register_buffer("lower_mask", torch.tril(torch.ones(dim, dim), -1), persistent=False)
        self.register_buffer("eye", torch.eye(dim), persistent=False)

    def _factors(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        L = self.L * self.lower_mask + self.eye  # (dim, dim)
        U = self.U * self.lower_mask.T + torch.diag(self.sign_s * torch.exp(self.log_s))  # (dim, dim)
        return L, U, self.P.argmax(dim=1)  # row j of P has its 1 in column permutation[j]

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        L, U, permutation = self._factors()
        y = (x @ U.T) @ L.T  # (n, dim): rows (L U x)^T; two (n, dim) x (dim, dim) products, no (dim, dim) one
        return y[:, permutation], self.log_s.sum()  # P applied as a gather

    def inverse(self, y: torch.Tensor) -> torch.Tensor:
        L, U, permutation = self._factors()
        h = torch.empty_like(y)
        h[:, permutation] = y  # P^T y
        h = torch.linalg.solve_triangular(L.T, h, upper=True, left=False, unitriangular=True)  # h L^-T
        return torch.linalg.solve_triangular(U.T, h, upper=False, left=False)  # (n, dim)


class AffineCoupling(nn.Module):
    r"""Affine coupling (RealNVP, Glow): the first half ``a`` of ``x`` passes unchanged and sets a scale and shift of
    the second half ``b``: ``b' = b * exp(log_s(a)) + t(a)``, with ``log_s = bound * tanh(raw / bound)`` in
    ``[-bound, bound]`` for stability. The MLP's last layer starts at zero, so the coupling starts as the identity.
    """

    def __init__(self, dim: int, hidden_size: int, log_scale_bound: float) -> None:
        super().__init__()
        self.split, self.bound = dim // 2, float(log_scale_bound)
        self.net = nn.Sequential(
            nn.Linear(self.split, hidden_size), nn.ReLU(),
            nn.Linear(hidden_size, hidden_size), nn.ReLU(),
            nn.Linear(hidden_size, 2 * (dim - self.split)),
        )
        nn.init.zeros_(self.net[-1].weight)
        nn.init.zeros_(self.net[-1].bias)

    def _scale_shift(self, a: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        raw_scale, shift = self.net(a).chunk(2, dim=1)  # (n, dim - split) each
        return self.bound * torch.tanh(raw_scale / self.bound), shift

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        a, b = x[:, : self.split], x[:, self.split:]
        log_scale, shift = self._scale_shift(a)
        return torch.cat([a, b * torch.exp(log_scale) + shift], dim=1), log_scale.sum(dim=1)

    def inverse(self, y: torch.Tensor) -> torch.Tensor:
        a, b = y[:, : self.split], y[:, self.split:]
        log_scale, shift = self._scale_shift(a)
        return torch.cat([a, (b - shift) * torch.exp(-log_scale)], dim=1)


class FlowStep(nn.Module):
    """One Glow step: ActNorm -> invertible linear map -> affine coupling."""

    def __init__(self, dim: int, hidden_size: int, log_scale_bound: float) -> None:
        super().__init__()
        self.actnorm = ActNorm(dim)
        self.linear = InvertibleLinear(dim)
        self.coupling = AffineCoupling(dim, hidden_size, log_scale_bound)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x, logdet_actnorm = self.actnorm(x)
        x, logdet_linear = self.linear(x)
        x, logdet_coupling = self.coupling(x)
        return x, logdet_actnorm + logdet_linear + logdet_coupling  # (n,)

    def inverse(self, z: torch.Tensor) -> torch.Tensor:
        return self.actnorm.inverse(self.linear.inverse(self.coupling.inverse(z)))


class FlowModel(nn.Module):
    r"""The flow network: standardisation by fixed buffers ``input_mean`` / ``input_std``, then [`FlowStep`]s.

    Args:
        dim (`int`): the embedding size (at least 2: a coupling splits the vector in two).
        num_steps (`int`, *optional*, defaults to 2): the number of flow steps.
        hidden_size (`int`, *optional*, defaults to 128): the width of each coupling's MLP (two hidden layers).
        log_scale_bound (`float`, *optional*, defaults to 2.0): each coupling's log-scale lies in ``[-b, b]``.

    The parameters are drawn from torch's global RNG: seed it (or use `torch.random.fork_rng`) for a fixed network.

    >>> model, x = FlowModel(8, num_steps=2, hidden_size=16), torch.randn(5, 8)
    >>> z, logdet = model(x)  # z: (5, 8), logdet: (5,)
    >>> bool(torch.allclose(model.inverse(z), x, atol=1e-5))
    True
    """

    def __init__(self, dim: int, num_steps: int = 2, hidden_size: int = 128, log_scale_bound: float = 2.0) -> None:
        super().__init__()
        self.dim, self.num_steps, self.hidden_size = dim, num_steps, hidden_size
        self.log_scale_bound = float(log_scale_bound)
        self.register_buffer("input_mean", torch.zeros(dim))  # (dim,)
        self.register_buffer("input_std", torch.ones(dim))  # (dim,)
        self.steps = nn.ModuleList(FlowStep(dim, hidden_size, log_scale_bound) for _ in range(num_steps))

    @torch.no_grad()
    def initialize(self, x: torch.Tensor) -> None:
        """Data-dependent initialisation of every ActNorm, in order, on the batch ``x`` `(n, dim)`."""
        h = (x - self.input_mean) / self.input_std
        for step in self.steps:
            step.actnorm.initialize(h)
            h, _ = step(h)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``z = f(x)`` `(n, dim)` and ``log|det df/dx|`` `(n,)`."""
        z = (x - self.input_mean) / self.input_std
        logdet = -torch.log(self.input_std).sum().expand(x.shape[0])  # (n,)
        for step in self.steps:
            z, step_logdet = step(z)
            logdet = logdet + step_logdet
        return z, logdet

    def inverse(self, z: torch.Tensor) -> torch.Tensor:
        """``x = f^-1(z)`` `(n, dim)`."""
        for step in reversed(self.steps):
            z = step.inverse(z)
        return z * self.input_std + self.input_mean

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """``log p(x) = log N(f(x); 0, I) + log|det df/dx|`` in nats, `(n,)`."""
        z, logdet = self(x)
        return -0.5 * (z.pow(2).sum(dim=1) + self.dim * _LOG_2PI) + logdet


# --------------------------------------------------------------------------------------------------- fitting


class Batches:
    """Endless mini-batches of ``data`` `(n, dim)`: a fresh random permutation each epoch, the last epoch's tail
    first, so every batch is full."""

    def __init__(self, data: torch.Tensor, batch_size: int, generator: torch.Generator) -> None:
        self.data, self.batch_size, self.generator = data, batch_size, generator
        self.order, self.position = torch.randperm(len(data), generator=generator), 0

    def __call__(self) -> torch.Tensor:
        if self.position + self.batch_size > len(self.data):  # a new epoch
            fresh = torch.randperm(len(self.data), generator=self.generator)
            self.order, self.position = torch.cat([self.order[self.position:], fresh]), 0
        self.position += self.batch_size
        return self.data[self.order[self.position - self.batch_size:self.position].to(self.data.device)]


@torch.no_grad()
def mean_nll(model: FlowModel, data: torch.Tensor, rows: int) -> float:
    """The mean negative log-likelihood of ``data`` `(n, dim)` in nats per dimension, in eval mode, ``rows`` rows
    per forward pass."""
    model.eval()
    total = sum(float(model.log_prob(chunk).sum()) for chunk in data.split(rows))
    model.train()
    return -total / data.numel()


def standardization(x: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """The per-dimension mean and spread of the training embeddings `(n_train, dim)`; a (nearly) constant dimension
    is centred, not scaled (its spread is 1), with a warning; all constant is a `ValueError`."""
    mean, std = x.mean(axis=0), x.std(axis=0)  # (dim,) each
    constant = std <= 1e-6 * max(float(std.max()), 1e-300)  # float32 rounding noise at best
    if constant.all():
        raise ValueError(f"Flow.fit: all {n} embeddings are the same vector; there is no distribution to fit.")
    if constant.any():
        logger.warning("Flow.fit: %d of %d dimensions are (nearly) constant on the corpus (first: %d); they are "
                       "centred, not scaled, and carry no information.", constant.sum(), x.shape[1],
                       np.flatnonzero(constant)[0])
        std = np.where(constant, 1.0, std)
    return mean, std

FLOW_FILE = "flow.safetensors"
METHOD = "bert-flow"
_CHUNK = 8192  # rows per forward pass in transform / inverse / log_prob


def _check_embeddings(embeddings: Any, name: str) -> np.ndarray:
    """A float64 ``(n, dim)`` copy of ``embeddings`` (array, tensor or nested lists), every value finite."""
    if isinstance(embeddings, torch.Tensor):
        embeddings = embeddings.detach().cpu().double().numpy()
    x = np.asarray(embeddings, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"{name}: embeddings must have shape (n, dim); got shape {x.shape}.")
    finite = np.isfinite(x).all(axis=1)  # (n,)
    if not finite.all():
        bad = np.flatnonzero(~finite)
        raise ValueError(f"{name}: embeddings row {bad[0]} (0-based) has a NaN or infinite value ({len(bad)} such "
                         "row(s) in all); remove or re-encode those sentences.")
    return x


def _positive_int(value: Any, name: str, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}; got {value!r}.")
    return int(value)


class Flow:
    r"""BERT-flow: ``transform(x) = f(x)``, an invertible network fitted so that ``f(x)`` of the fitting corpus follows
    a standard Gaussian.

    The inputs are standardised with the corpus mean and standard deviation (buffers ``input_mean`` and
    ``input_std``) rather than left to the first ActNorm: the statistics come from the whole corpus instead of one
    mini-batch, and the network, its bounded coupling scales and the learning rate then see inputs of unit scale
    whatever the encoder (raw embeddings often have a few dimensions far larger than the rest). Each ActNorm is still
    initialised on the first mini-batch, as in Glow. Dimensions that are constant on the corpus are centred only.

    Args:
        num_steps (`int`, *optional*, defaults to 2): flow steps (ActNorm -> LU linear -> affine coupling each).
        hidden_size (`int`, *optional*, defaults to 128): the width of each coupling's two-hidden-layer MLP.
        corpus (`str`, *optional*): a description of the fitting corpus (a file name), kept in the saved file.

    >>> rng = np.random.default_rng(0)
    >>> x = np.tanh(rng.normal(size=(500, 8)) @ rng.normal(size=(8, 8)))
    >>> flow = Flow(num_steps=2, hidden_size=32).fit(x, steps=200)
    >>> flow.transform(x).shape
    (500, 8)
    >>> bool(np.abs(flow.inverse(flow.transform(x)) - x).max() < 1e-4)
    True
    """

    def __init__(self, num_steps: int = 2, hidden_size: int = 128, corpus: str | None = None) -> None:
        self.num_steps = _positive_int(num_steps, "Flow: num_steps")
        self.hidden_size = _positive_int(hidden_size, "Flow: hidden_size")
        self.log_scale_bound = 2.0
        self.corpus = corpus
        self.model: FlowModel | None = None
        self.log_history: list[dict[str, float]] = []  # {"step", "nll", "val_nll"}: NLLs in nats per dimension
        self.best_step = 0  # the step whose parameters fit kept

    @property
    def is_fitted(self) -> bool:
        return self.model is not None

    @property
    def dim(self) -> int:
        """The embedding size (input and output)."""
        self._check_fitted()
        return self.model.dim

    def _check_fitted(self) -> None:
        if self.model is None:
            raise RuntimeError("Flow is not fitted: call fit(embeddings) or Flow.load(folder) first.")

    def fit(
        self,
        embeddings: Any,
        steps: int = 1000,
        batch_size: int = 256,
        learning_rate: float = 1e-3,
        seed: int = 0,
        validation_fraction: float = 0.1,
        patience: int | None = 5,
        log_every: int | None = None,
        max_grad_norm: float | None = 10.0,
        device: str | torch.device | None = None,
        corpus: str | None = None,
        show_progress_bar: bool | None = None,
    ) -> Flow:
        r"""Fit the flow by maximum likelihood: Adam on mini-batches, float32, loss = mean NLL in nats per dimension.

        A random ``validation_fraction`` of the corpus is held out: its NLL is measured every ``log_every`` steps,
        the parameters with the lowest one are kept (the initialised flow counts as step 0), and training stops after
        ``patience`` measurements without improvement: a flow can overfit a few thousand embeddings within a few
        hundred steps. The network is rebuilt from ``seed`` on every call.

        Args:
            embeddings (`np.ndarray` or `torch.Tensor` of shape `(n, dim)`): raw (not normalised) embeddings, n >= 2,
                dim >= 2, all finite.
            steps (`int`, *optional*, defaults to 1000): the most optimiser steps; `0` gives the initialised flow
                (standardisation and ActNorms set from data, couplings the identity).
            batch_size (`int`, *optional*, defaults to 256): embeddings per step (at most the training part); the
                batches follow a fresh random permutation each epoch.
            learning_rate (`float`, *optional*, defaults to 1e-3): Adam's (constant) learning rate.
            seed (`int`, *optional*, defaults to 0): seeds the network, the held-out split and the batch order; the
                fit is deterministic for a fixed seed, data and device.
            validation_fraction (`float`, *optional*, defaults to 0.1): the share held out (at least one embedding;
                two always stay for training); `0` trains on everything and keeps the last step.
            patience (`int`, *optional*, defaults to 5): stop after this many held-out measurements without
                improvement; `None` runs all ``steps`` (the best parameters are still kept).
            log_every (`int`, *optional*): measure and record every this many steps; defaults to
                ``max(1, steps // 20)``.
            max_grad_norm (`float`, *optional*, defaults to 10.0): clip the gradient norm; `None` does not clip.
            device (`str` or `torch.device`, *optional*, defaults to `"cpu"`): where to train; the fitted network
                then moves to the CPU.
            corpus (`str`, *optional*): a description of the corpus, saved with the flow.
            show_progress_bar (`bool`, *optional*): defaults to showing one when this module logs at INFO level.

        Returns:
            `Flow`: ``self``, with ``log_history`` (one ``{"step", "nll", "val_nll"}`` per measurement; ``nll`` the
            mean training NLL since the last) and ``best_step`` (the step whose parameters were kept).

        >>> flow = Flow().fit(corpus_embeddings, corpus="wiki.txt")  # doctest: +SKIP
        """
        x = _check_embeddings(embeddings, "Flow.fit")  # (n, dim) float64
        n, dim = x.shape
        if n < 2:
            raise ValueError(f"Flow.fit needs at least 2 embeddings to estimate a mean and a spread; got {n}.")
        if dim < 2:
            raise ValueError(f"Flow.fit: embeddings of size {dim}; a coupling flow needs dim >= 2.")
        steps, log_every, patience = _check_fit_settings(steps, log_every, patience, learning_rate, max_grad_norm,
                                                         validation_fraction)
        device = torch.device(device or "cpu")
        generator = torch.Generator().manual_seed(seed)
        n_val = min(max(1, round(n * validation_fraction)), n - 2) if validation_fraction > 0 else 0
        shuffled = torch.randperm(n, generator=generator).numpy()
        x, x_val = x[shuffled[n_val:]], x[shuffled[:n_val]]  # (n_train, dim), (n_val, dim)
        model = self._new_network(x, n, seed).to(device)
        batch_size = min(_positive_int(batch_size, "Flow.fit: batch_size"), n - n_val)
        next_batch = Batches(torch.from_numpy(x).float().to(device), batch_size, generator)
        start = time.perf_counter()
        model.initialize(next_batch())
        show = logger.getEffectiveLevel() <= logging.INFO if show_progress_bar is None else show_progress_bar
        best_nll = self._optimize(model, next_batch, torch.from_numpy(x_val).float().to(device), steps, log_every,
                                  patience, learning_rate, max_grad_norm, show)
        self.model = model.eval().to("cpu").requires_grad_(False)
        self.corpus = corpus if corpus is not None else self.corpus
        if n_val and steps and self.best_step == 0:
            logger.warning("Flow.fit: no step improved the held-out NLL of the initialised flow, which is kept. Try a "
                           "lower learning_rate or a larger corpus.")
        logger.info("Fitted flow (%d steps, hidden %d) on %d embeddings of size %d (%d held out) in %.1f s; kept "
                    "step %d%s", self.num_steps, self.hidden_size, n - n_val, dim, n_val, time.perf_counter() - start,
                    self.best_step, f" (held-out NLL {best_nll:.4f} nats/dim)" if n_val else "")
        return self

    def _new_network(self, x: np.ndarray, n: int, seed: int) -> FlowModel:
        """A network initialised from ``seed`` (the global random state untouched), standardising as ``x`` (the
        training part, `(n_train, dim)`, of ``n`` embeddings) says."""
        mean, std = standardization(x, n)  # (dim,) each
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = FlowModel(x.shape[1], self.num_steps, self.hidden_size, self.log_scale_bound)
        model.input_mean.copy_(torch.from_numpy(mean))
        model.input_std.copy_(torch.from_numpy(std))
        return model

    def _optimize(self, model: FlowModel, next_batch: Batches, data_val: torch.Tensor, steps: int, log_every: int,
                  patience: int | None, learning_rate: float, max_grad_norm: float | None, show: bool) -> float:
        """The optimisation loop of :meth:`fit`: Adam on the mean NLL per dimension, a record every ``log_every``
        steps into ``log_history``, early stopping on the held-out NLL (``data_val``, `(n_val, dim)`, may be
        empty). Leaves ``model`` with the kept parameters and returns their held-out NLL (``inf`` without one)."""
        from tqdm.auto import tqdm

        def snapshot() -> dict[str, torch.Tensor]:
            return {key: value.detach().clone() for key, value in model.state_dict().items()}

        optimizer = torch.optim.Adam(model.parameters(), lr=learning_rate)
        self.log_history, self.best_step, stale, window = [], 0, 0, []
        held_out = len(data_val) > 0
        best_nll, best_state = (mean_nll(model, data_val, _CHUNK), snapshot()) if held_out else (math.inf, None)
        model.train()
        progress = tqdm(range(1, steps + 1), desc="Fitting flow", unit="step", disable=not show)
        for step in progress:
            loss = -model.log_prob(next_batch()).mean() / model.dim  # nats per dimension
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if max_grad_norm is not None:
                torch.nn.utils.clip_grad_norm_(model.parameters(), max_grad_norm)
            optimizer.step()
            window.append(loss.detach())
            if step % log_every and step != steps:
                continue
            record = {"step": step, "nll": float(torch.stack(window).mean())}
            window = []
            if held_out:
                record["val_nll"] = mean_nll(model, data_val, _CHUNK)
            if not all(math.isfinite(value) for value in record.values()):
                raise RuntimeError(f"Flow.fit diverged at step {step} ({record}); lower learning_rate (now "
                                   f"{learning_rate}) or max_grad_norm, or fit on more embeddings.")
            self.log_history.append(record)
            progress.set_postfix({key: f"{value:.4f}" for key, value in record.items() if key != "step"})
            if not held_out:
                self.best_step = step
            elif record["val_nll"] < best_nll:
                best_nll, best_state, self.best_step, stale = record["val_nll"], snapshot(), step, 0
            else:
                stale += 1
                if patience is not None and stale >= patience:
                    logger.info("Flow.fit: stopping at step %d, %d measurements after the best held-out NLL",
                                step, stale)
                    break
        progress.close()
        if best_state is not None:
            model.load_state_dict(best_state)
        return best_nll

    def _run(self, embeddings: Any, function: Callable[[torch.Tensor], torch.Tensor], name: str) -> Any:
        """Apply ``function`` `(n, dim) -> (n, ...)` in chunks to embeddings of shape `(n, dim)` or `(dim,)`."""
        self._check_fitted()
        is_tensor = isinstance(embeddings, torch.Tensor)
        x = embeddings.detach() if is_tensor else torch.from_numpy(np.ascontiguousarray(embeddings))
        if x.ndim not in (1, 2) or x.shape[-1] != self.dim:
            raise ValueError(f"Flow.{name}: expected shape (n, {self.dim}) or ({self.dim},); got {tuple(x.shape)}.")
        if self.model.input_mean.device != x.device:
            self.model.to(x.device)
        rows = x.reshape(-1, self.dim).to(torch.float32)  # (n, dim)
        with torch.no_grad():
            out = torch.cat([function(rows[i:i + _CHUNK]) for i in range(0, rows.shape[0], _CHUNK)])
        out = out.reshape(x.shape[:-1] + out.shape[1:])
        if is_tensor:
            return out.to(embeddings.dtype) if embeddings.is_floating_point() else out
        return out.numpy() if x.dtype == torch.float32 else out.numpy().astype(np.float64)

    def transform(self, embeddings: Any) -> Any:
        r"""Map embeddings to the flow's Gaussian space: ``z = f(x)``.

        Args:
            embeddings (`np.ndarray` or `torch.Tensor` of shape `(n, dim)` or `(dim,)`): raw embeddings.

        Returns:
            the same type and shape as ``embeddings``, computed in float32 (the parameters' precision): a tensor stays
            on its device and keeps its floating dtype, an array keeps a float32 dtype and is float64 otherwise.

        >>> z = flow.transform(model_embeddings)  # doctest: +SKIP
        """
        return self._run(embeddings, lambda rows: self.model(rows)[0], "transform")

    __call__ = transform

    def inverse(self, z: Any) -> Any:
        r"""Map points of the Gaussian space back to embeddings, ``x = f^-1(z)``; types as in [`~Flow.transform`].

        Args:
            z (`np.ndarray` or `torch.Tensor` of shape `(n, dim)` or `(dim,)`): outputs of [`~Flow.transform`].

        >>> x_again = flow.inverse(flow.transform(x))  # doctest: +SKIP
        """
        return self._run(z, lambda rows: self.model.inverse(rows), "inverse")

    def log_prob(self, embeddings: Any) -> Any:
        r"""The flow's log-density of each embedding, ``log N(f(x); 0, I) + log|det df/dx|``, in nats.

        Args:
            embeddings (`np.ndarray` or `torch.Tensor` of shape `(n, dim)` or `(dim,)`): raw embeddings.

        Returns:
            the same type as ``embeddings``, of shape `(n,)` (or `()`); ``-log_prob(x).mean() / dim`` is the NLL in
            nats per dimension that ``log_history`` records.

        >>> flow.log_prob(held_out_embeddings).mean()  # doctest: +SKIP
        """
        return self._run(embeddings, lambda rows: self.model.log_prob(rows), "log_prob")

    def save(self, folder: str | os.PathLike) -> Path:
        r"""Write ``<folder>/flow.safetensors``: every parameter and buffer as float32, the architecture in metadata.

        Args:
            folder (`str` or `os.PathLike`): usually a saved model's folder; created if needed.

        Returns:
            `Path`: the file written.

        >>> flow.save("outputs/my-simcse")  # doctest: +SKIP
        """
        from safetensors.torch import save_file

        self._check_fitted()
        path = Path(folder) / FLOW_FILE
        path.parent.mkdir(parents=True, exist_ok=True)
        metadata = {
            "method": METHOD, "dim": str(self.dim), "num_steps": str(self.num_steps),
            "hidden_size": str(self.hidden_size), "log_scale_bound": repr(self.log_scale_bound),
            "best_step": str(self.best_step), "log_history": json.dumps(self.log_history),
        }
        if self.corpus:
            metadata["corpus"] = str(self.corpus)
        tensors = {key: value.detach().to("cpu", torch.float32).contiguous()
                   for key, value in self.model.state_dict().items()}
        save_file(tensors, str(path), metadata=metadata)
        logger.info("Saved %r to %s", self, path)
        return path

    @classmethod
    def load(cls, folder: str | os.PathLike) -> Flow | None:
        r"""Read ``<folder>/flow.safetensors``; `None` when there is no such file.

        Args:
            folder (`str` or `os.PathLike`): a model folder (or the path of the file itself).

        Returns:
            `Flow` or `None`; its outputs are bitwise those of the flow that was saved.

        Raises:
            `ValueError`: the file is not safetensors, its metadata is not a BERT-flow's, or its tensors do not match
            the architecture the metadata describes; the message names the file and the problem.

        >>> flow = Flow.load("outputs/my-simcse")  # doctest: +SKIP
        """

        found = read_tensor_file(folder, FLOW_FILE, "pt")
        if found is None:
            return None
        path, tensors, metadata = found
        if metadata.get("method") != METHOD:
            raise ValueError(f"{path}: metadata 'method' is {metadata.get('method')!r}, not {METHOD!r}; this is not a "
                             "file written by Flow.save.")
        try:
            sizes = {key: int(metadata[key]) for key in ("dim", "num_steps", "hidden_size", "best_step")}
            bound, log_history = float(metadata["log_scale_bound"]), json.loads(metadata["log_history"])
        except (KeyError, ValueError) as error:
            raise ValueError(f"{path}: missing or malformed metadata ({type(error).__name__}: {error}); Flow.save "
                             "writes integers dim, num_steps, hidden_size, best_step, a number log_scale_bound and "
                             "JSON log_history.") from error
        if sizes["dim"] < 2 or sizes["num_steps"] < 1 or sizes["hidden_size"] < 1 or not 0 < bound < math.inf:
            raise ValueError(f"{path}: metadata out of range: {sizes}, log_scale_bound={bound} (need dim >= 2, "
                             "num_steps >= 1, hidden_size >= 1, log_scale_bound > 0).")
        with torch.random.fork_rng(devices=[]):
            model = FlowModel(sizes["dim"], sizes["num_steps"], sizes["hidden_size"], bound)
        expected = model.state_dict()
        described = f"dim={sizes['dim']}, num_steps={sizes['num_steps']}, hidden_size={sizes['hidden_size']}"
        missing, unexpected = sorted(set(expected) - set(tensors)), sorted(set(tensors) - set(expected))
        if missing or unexpected:
            raise ValueError(f"{path}: the tensors do not match the flow its metadata describes ({described}): "
                             f"missing {missing[:4]}{' ...' if len(missing) > 4 else ''}, unexpected "
                             f"{unexpected[:4]}{' ...' if len(unexpected) > 4 else ''}.")
        for key, tensor in tensors.items():
            if tensor.shape != expected[key].shape:
                raise ValueError(f"{path}: tensor {key!r} has shape {tuple(tensor.shape)}; the metadata ({described}) "
                                 f"needs {tuple(expected[key].shape)}.")
            if tensor.dtype != torch.float32 or not torch.isfinite(tensor).all():
                raise ValueError(f"{path}: tensor {key!r} must be finite float32 (as Flow.save writes); got "
                                 f"{tensor.dtype}{'' if torch.isfinite(tensor).all() else ' with NaN or inf'}.")
        for key, t in tensors.items():
            if key.endswith(".P") and not (((t == 0) | (t == 1)).all() and (t.sum(0) == 1).all()
                                           and (t.sum(1) == 1).all()):
                raise ValueError(f"{path}: tensor {key!r} is not a permutation matrix.")
            if key.endswith(".sign_s") and not (t.abs() == 1).all():
                raise ValueError(f"{path}: tensor {key!r} must hold only +1 and -1.")
        if tensors["input_std"].min() <= 0:
            raise ValueError(f"{path}: tensor 'input_std' must be positive.")
        model.load_state_dict(tensors)
        flow = cls(sizes["num_steps"], sizes["hidden_size"], corpus=metadata.get("corpus"))
        flow.log_scale_bound, flow.log_history, flow.best_step = bound, log_history, sizes["best_step"]
        flow.model = model.eval().requires_grad_(False)
        return flow

    def __repr__(self) -> str:
        size = f"dim={self.dim}" if self.is_fitted else "not fitted"
        return f"Flow({size}, num_steps={self.num_steps}, hidden_size={self.hidden_size}, corpus={self.corpus!r})"



def _check_fit_settings(steps: Any, log_every: Any, patience: Any, learning_rate: Any, max_grad_norm: Any,
                        validation_fraction: Any) -> tuple[int, int, int | None]:
    """``(steps, log_every, patience)`` of :meth:`Flow.fit`, checked; a `ValueError` naming the argument otherwise."""
    steps = _positive_int(steps, "Flow.fit: steps", minimum=0)
    log_every = max(1, steps // 20) if log_every is None else _positive_int(log_every, "Flow.fit: log_every")
    patience = None if patience is None else _positive_int(patience, "Flow.fit: patience")
    if not (isinstance(learning_rate, (int, float)) and math.isfinite(learning_rate) and learning_rate > 0):
        raise ValueError(f"Flow.fit: learning_rate must be a positive number; got {learning_rate!r}.")
    if max_grad_norm is not None and not max_grad_norm > 0:
        raise ValueError(f"Flow.fit: max_grad_norm must be positive or None; got {max_grad_norm!r}.")
    if not (isinstance(validation_fraction, (int, float)) and 0 <= validation_fraction < 1):
        raise ValueError(f"Flow.fit: validation_fraction must be in [0, 1); got {validation_fraction!r}.")
    return steps, log_every, patience


def fit_flow(
    encode_fn: Any,
    sentences: list[str],
    corpus: str | None = None,
    num_steps: int = 2,
    hidden_size: int = 128,
    **fit_kwargs: Any,
) -> Flow:
    r"""Encode ``sentences`` with ``encode_fn`` (raw, not normalised) and fit a [`Flow`] on them.

    Args:
        encode_fn (`Callable[[list[str]], np.ndarray | torch.Tensor]`): `(n, dim)` embeddings of n sentences.
        sentences (`list[str]`): the fitting corpus (see `simcse_hub.postprocess.read_corpus`).
        corpus (`str`, *optional*): a description of the corpus, saved with the flow.
        num_steps (`int`, *optional*, defaults to 2): flow steps, as in [`Flow`].
        hidden_size (`int`, *optional*, defaults to 128): coupling width, as in [`Flow`].
        fit_kwargs: passed on to [`~Flow.fit`] (``steps``, ``batch_size``, ``learning_rate``, ``seed``, ...).

    Returns:
        `Flow`: fitted.

    >>> flow = fit_flow(model.encode, read_corpus("corpus.txt"), corpus="corpus.txt")  # doctest: +SKIP
    """
    from simcse_hub.evaluation import embed

    return Flow(num_steps, hidden_size).fit(embed(encode_fn, sentences), corpus=corpus, **fit_kwargs)

REDUCED_K = 256  # BERT-whitening's reduced dimension for 768-dim encoders (half the dimension for smaller ones)


def reduced_k(dim: int, k: int | None = None) -> int:
    """The reduced whitening dimension: ``k`` when given, else 256, or half the dimension when that is smaller."""
    return k if k is not None else min(REDUCED_K, dim // 2)


def compare_postprocessing(
    encode_fn: EncodeFn,
    model_name: str,
    corpus: Sequence[str],
    corpus_name: str,
    whiten_k: int | None = None,
    flow_kwargs: dict[str, Any] | None = None,
    **evaluate_kwargs: Any,
) -> list[dict]:
    r"""The model as it is, + BERT-whitening (all dimensions), + BERT-whitening (reduced), + BERT-flow: one result of
    [`~simcse_hub.evaluation.evaluate_model`] each, the fixes fitted on the raw embeddings of ``corpus``.

    Every sentence (of the corpus and of the tasks) is encoded once, for all four rows.

    Args:
        encode_fn (`Callable[[list[str]], np.ndarray]`): raw (not normalised) embeddings of the model.
        model_name (`str`): names the rows.
        corpus (`Sequence[str]`): the unlabelled fitting corpus (``simcse_hub.postprocess.read_corpus``).
        corpus_name (`str`): how the rows name the corpus (a file name).
        whiten_k (`int`, *optional*): the reduced whitening dimension (default :func:`reduced_k`).
        flow_kwargs (`dict`, *optional*): passed to ``Flow.fit`` (``steps``, ``seed``, ...).
        evaluate_kwargs: passed to ``evaluate_model`` (``tasks``, ``data_dir``, ``setting``, ``split``).

    >>> rows = compare_postprocessing(raw_encode, "all-MiniLM-L6-v2 [CLS]", corpus, "train.tsv.gz",
    ...                               tasks=["STSBenchmark"])  # doctest: +SKIP
    """

    encode_fn = memoized(encode_fn)
    raw = embed(encode_fn, list(corpus))  # (n, dim)
    k = reduced_k(raw.shape[1], whiten_k)
    transforms: list[tuple[str, dict[str, Any], Callable]] = [
        ("whitening", {"corpus": corpus_name, "k": None}, Whitening().fit(raw, corpus=corpus_name).transform),
        (f"whitening-{k}", {"corpus": corpus_name, "k": k}, Whitening().fit(raw, k=k, corpus=corpus_name).transform),
    ]
    flow = Flow().fit(raw, corpus=corpus_name, **(flow_kwargs or {}))
    transforms.append(("flow", {"corpus": corpus_name}, flow.transform))
    rows = [evaluate_model(encode_fn, model_name, **evaluate_kwargs)]
    for label, description, transform in transforms:

        def fixed(sentences: list[str], transform: Callable = transform):
            return transform(encode_fn(sentences))

        result = evaluate_model(fixed, f"{model_name} + {label}", **evaluate_kwargs)
        result["flow" if label == "flow" else "whitening"] = description
        rows.append(result)
    return rows


def comparison_table(rows: Sequence[dict]) -> str:
    r"""A Markdown table of results (one row each): the STS tasks scored, alignment, uniformity, mean cosine.

    >>> print(comparison_table(rows))  # doctest: +SKIP
    | Model | STS-B | SICK-R | Alignment | Uniformity | Mean cosine |
    ...
    """
    tasks = list(dict.fromkeys(task for row in rows for task in row["tasks"]))

    def cell(value: Any, digits: int) -> str:
        return "–" if value is None else f"{value:.{digits}f}"

    lines = ["| Model | " + " | ".join(DISPLAY_NAMES.get(t, t) for t in tasks) + " | Alignment | Uniformity | "
             "Mean cosine |", "|:--|" + "--:|" * (len(tasks) + 3)]
    for row in rows:
        scores = [cell(row["tasks"].get(task, {}).get("spearman"), 2) for task in tasks]
        model, _, fix = str(row["model"]).partition(" + ")
        name = public_model_name(model) + (f" + {fix}" if fix else "")
        lines.append(f"| {name} | " + " | ".join(scores) + f" | {cell(row.get('alignment'), 4)} | "
                     f"{cell(row.get('uniformity'), 4)} | {cell(row.get('mean_cosine'), 4)} |")
    first = rows[0] if rows else {"split": "test"}
    return "\n".join(lines) + (f"\n\nSpearman x100 on the {first['split']} split; alignment, uniformity and the mean "
                               "cosine of all pairs on STS-B dev (lower is better for those three).\n")


__all__ = ['ActNorm', 'AffineCoupling', 'Batches', 'FLOW_FILE', 'Flow', 'FlowModel', 'FlowStep', 'InvertibleLinear', 'WHITENING_FILE', 'Whitening', 'compare_postprocessing', 'comparison_table', 'fit_flow', 'fit_whitening', 'mean_nll', 'read_corpus', 'read_tensor_file', 'reduced_k', 'standardization']
