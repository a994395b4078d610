"""Post-processing of sentence embeddings, fitted on an unlabelled corpus and saved beside a model: BERT-whitening and
BERT-flow, and their comparison with contrastive learning.

Raw encoder vectors are anisotropic: they crowd in a narrow cone, so every pair of sentences looks similar (a high
mean cosine). Two earlier fixes reshape that distribution after the fact:

* BERT-whitening (Su et al., 2021), linear: the corpus mean ``mu`` and covariance ``C = U S U^T`` (SVD) give
  ``W = U S^{-1/2}``, and ``(x - mu) @ W`` has identity covariance on the corpus; keeping the first ``k`` columns
  (the directions of largest variance) reduces the dimension too. Put inside a SimCSE model
  ([`Whitening.apply_to`]: a Linear layer every loader applies); for other models saved as ``whitening.safetensors``
  (tensors ``mean`` `(1, dim)` and ``W`` `(dim, k)`), which [`simcse_hub.inference.SimCSE`] applies.
* BERT-flow (Li et al., 2020): a Glow-style normalizing flow on vectors, fitted by maximum likelihood so that
  ``z = f(x)`` follows a standard Gaussian on the corpus: the inputs standardised with the corpus mean and spread,
  then ``num_steps`` steps of ActNorm -> invertible linear map (LU-decomposed) -> affine coupling. Saved as
  ``flow.safetensors``.

[`simcse_hub.inference.SimCSE`] applies the one a model folder holds at encode time: raw embedding -> ``transform``
-> optional normalisation. Contrastive learning instead trains the encoder so that paraphrases are close (alignment)
and everything spreads over the sphere (uniformity): [`compare_postprocessing`] scores a model as it is and with each
fix, each with STS Spearman, alignment, uniformity and the mean cosine of all pairs, and [`comparison_table`] lays the
rows side by side (a SimCSE model evaluated as it is makes the last row).

References: Su, Cao, Liu & Ou, "Whitening Sentence Representations for Better Semantics and Faster Retrieval", 2021
(https://arxiv.org/abs/2103.15316), and the authors' code (bojone/BERT-whitening, ``compute_kernel_bias``); Li, Zhou,
He, Wang, Yang & Li, "On the Sentence Embeddings from Pre-trained Language Models", EMNLP 2020
(https://arxiv.org/abs/2011.05864); Kingma & Dhariwal, "Glow: Generative Flow with Invertible 1x1 Convolutions",
2018 (https://arxiv.org/abs/1807.03039); Dinh, Sohl-Dickstein & Bengio, "Density estimation using Real NVP", 2017.
"""

from __future__ import annotations

import copy
import gzip
import json
import logging
import math
import os
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import nn
from tqdm.auto import tqdm

from simcse_hub.evaluation import (
    DISPLAY_NAMES,
    EncodeFn,
    as_matrix,
    cell,
    embed,
    evaluate_model,
    markdown_table,
    memoized,
    read_sts_file,
)
from simcse_hub.modeling.formats_simcse import public_name as public_model_name

logger = logging.getLogger(__name__)

WHITENING_FILE = "whitening.safetensors"
FLOW_FILE = "flow.safetensors"
REDUCED_K = 256  # BERT-whitening's reduced dimension for 768-dim encoders (half the dimension for smaller ones)
_CHUNK = 8192  # rows per pass when a post-processing is applied (and for the flow's held-out NLL)
_LOG_2PI = math.log(2 * math.pi)


def _corpus_matrix(embeddings: Any, name: str) -> np.ndarray:
    """A float64 ``(n, dim)`` copy of the embeddings of a fitting corpus: at least 2, every value finite; a
    `ValueError` naming ``name`` and the first bad row otherwise."""
    x = as_matrix(embeddings, name)
    if len(x) < 2:
        raise ValueError(f"{name} needs at least 2 embeddings to estimate their distribution; got {len(x)}.")
    bad = np.flatnonzero(~np.isfinite(x).all(axis=1))
    if bad.size:
        raise ValueError(f"{name}: embeddings row {bad[0]} (0-based) has a NaN or infinite value ({bad.size} such "
                         "row(s) in all); remove or re-encode those sentences.")
    return x


class _PostProcessing:
    """What BERT-whitening and BERT-flow share: applied alike to arrays and tensors, saved beside a model as one
    safetensors file (``FILE``: float32 tensors, ``method`` and the fitting corpus in its metadata), read back with
    errors naming the file."""

    FILE = METHOD = ""
    corpus: str | None = None

    def _fitted(self, state: Any) -> Any:
        if state is None:
            name = type(self).__name__
            raise RuntimeError(f"{name} is not fitted: call fit(embeddings) or {name}.load(folder) first.")
        return state

    def _apply(self, embeddings: Any, function: Callable[[torch.Tensor], torch.Tensor], name: str, dim: int,
               float64: bool = False) -> Any:
        """``function`` `(n, dim) -> (n, ...)` applied in chunks to embeddings of shape `(n, dim)` or `(dim,)`, in
        float32 (or, with ``float64``, in float64 unless they are a tensor of another dtype). A tensor stays on its
        device and keeps its floating dtype; an array keeps a float32 dtype and is float64 otherwise."""
        is_tensor = isinstance(embeddings, torch.Tensor)
        x = embeddings.detach() if is_tensor else torch.from_numpy(np.ascontiguousarray(embeddings))
        if x.ndim not in (1, 2) or x.shape[-1] != dim:
            raise ValueError(f"{name}: expected shape (n, {dim}) or ({dim},); got {tuple(x.shape)}.")
        precise = float64 and (not is_tensor or x.dtype == torch.float64)
        with torch.no_grad():
            rows = x.reshape(-1, dim).to(torch.float64 if precise else torch.float32)  # (n, dim)
            out = torch.cat([function(chunk) for chunk in rows.split(_CHUNK)])
        out = out.reshape(x.shape[:-1] + out.shape[1:])
        if is_tensor:
            return out.to(embeddings.dtype) if embeddings.is_floating_point() else out
        return out.numpy().astype(np.float32 if x.dtype == torch.float32 else np.float64, copy=False)

    def __call__(self, embeddings: Any) -> Any:
        return self.transform(embeddings)

    def _save(self, folder: str | os.PathLike, tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> Path:
        path = Path(folder) / self.FILE
        path.parent.mkdir(parents=True, exist_ok=True)
        metadata = {"method": self.METHOD, **metadata} | ({"corpus": str(self.corpus)} if self.corpus else {})
        save_file({key: value.detach().to("cpu", torch.float32).contiguous() for key, value in tensors.items()},
                  str(path), metadata=metadata)
        logger.info("Saved %r to %s", self, path)
        return path

    @classmethod
    def _read(cls, folder: str | os.PathLike) -> tuple[Path, dict[str, torch.Tensor], dict[str, str]] | None:
        """``(path, tensors, metadata)`` of ``<folder>/FILE`` (or of ``folder``, that file), ``None`` when absent."""
        path = Path(folder)
        path = path / cls.FILE if path.is_dir() or path.name != cls.FILE else path
        if not path.is_file():
            return None
        try:
            with safe_open(str(path), framework="pt") as handle:
                metadata = handle.metadata() or {}
                tensors = {key: handle.get_tensor(key) for key in handle.keys()}  # noqa: SIM118
        except (SafetensorError, OSError) as error:
            raise ValueError(f"{path}: not a readable safetensors file ({error}).") from error
        if metadata.get("method", cls.METHOD) != cls.METHOD:
            raise ValueError(f"{path}: metadata 'method' is {metadata['method']!r}, not {cls.METHOD!r}; this is not a "
                             f"file written by {cls.__name__}.save.")
        return path, tensors, metadata


# ---------------------------------------------------------------------------------------------------- whitening


class Whitening(_PostProcessing):
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

    FILE, METHOD = WHITENING_FILE, "bert-whitening"

    def __init__(self, mean: np.ndarray | None = None, W: np.ndarray | None = None, corpus: str | None = None) -> None:
        if (mean is None) != (W is None):
            raise ValueError("Whitening: give both `mean` and `W`, or neither (then call fit).")
        self.mean = None if mean is None else np.asarray(mean, dtype=np.float64).reshape(1, -1)  # (1, dim)
        self.W = None if W is None else np.asarray(W, dtype=np.float64)  # (dim, k)
        if self.W is not None and (self.W.ndim != 2 or self.W.shape[0] != self.mean.shape[1]):
            raise ValueError(f"Whitening: W must have shape (dim={self.mean.shape[1]}, k); got {self.W.shape}.")
        self.corpus = corpus

    @property
    def dim(self) -> int:
        """The input dimension."""
        return int(self._fitted(self.W).shape[0])

    @property
    def k(self) -> int:
        """The output dimension (``dim`` when no reduction was asked for)."""
        return int(self._fitted(self.W).shape[1])

    def fit(self, embeddings: Any, k: int | None = None, corpus: str | None = None) -> Whitening:
        r"""Fit ``mean`` and ``W`` on a corpus of embeddings.

        A covariance of lower numerical rank than the dimension is logged with the measured rank, condition number and
        sentence count: as a warning when the corpus has no more sentences than dimensions (the directions it does not
        span would amplify noise on other sentences), at INFO level when the encoder's output is constant along them
        (all-MiniLM-L6-v2's [CLS] vector has three constant dimensions; they stay near 0).

        Args:
            embeddings (`np.ndarray` or `torch.Tensor` of shape `(n, dim)`): raw (not normalised) embeddings.
            k (`int`, *optional*, defaults to `None`): keep the first ``k`` columns of ``W`` (the directions of
                largest variance); `None` keeps all ``dim``.
            corpus (`str`, *optional*): a description of the corpus, saved with the transform.

        Returns:
            `Whitening`: ``self``.

        >>> whitening = Whitening().fit(corpus_embeddings, k=256)  # doctest: +SKIP
        """
        x = _corpus_matrix(embeddings, "Whitening.fit")  # (n, dim)
        n, dim = x.shape
        if k is not None and not (isinstance(k, (int, np.integer)) and 1 <= k <= dim):
            raise ValueError(f"Whitening.fit: k must be an integer in [1, {dim}] (the embedding size) or None; "
                             f"got {k!r}.")
        u, s, _ = np.linalg.svd(np.cov(x, rowvar=False))  # (dim, dim), (dim,): unbiased, as the reference code
        rank = int((s > s[0] * dim * np.finfo(np.float64).eps).sum())  # numpy.linalg.matrix_rank's tolerance
        if rank < dim:  # directions of no variance: noise on other sentences when the corpus was too small for dim
            (logger.warning if n <= dim else logger.info)(
                "Whitening fitted on %d embeddings of size %d: the covariance has rank %d (condition number %.1e), so "
                "%d directions have no variance on the corpus; %s", n, dim, rank, s[0] / s[-1] if s[-1] else math.inf,
                dim - rank, f"they amplify noise on other sentences: fit on more sentences than dimensions, or pass "
                f"k <= {rank}." if n <= dim else "the encoder's output is constant along them, so they stay near 0.")
        floor = s[0] * 1e-12 if s[0] > 0 else 1e-12
        self.mean, self.W = x.mean(axis=0, keepdims=True), (u / np.sqrt(np.maximum(s, floor)))[:, : (k or dim)]
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
        def whiten(rows: torch.Tensor) -> torch.Tensor:
            mean, W = (torch.as_tensor(a, dtype=rows.dtype, device=rows.device) for a in (self.mean, self.W))
            return (rows - mean) @ W  # (n, k)

        return self._apply(embeddings, whiten, "Whitening.transform", self.dim, float64=True)

    def save(self, folder: str | os.PathLike) -> Path:
        r"""Write ``<folder>/whitening.safetensors`` (float32 tensors ``mean`` `(1, dim)` and ``W`` `(dim, k)`) into
        ``folder`` (usually a saved model's, created if needed) and return its path.

        >>> whitening.save("outputs/my-simcse")  # doctest: +SKIP
        """
        tensors = {"mean": torch.from_numpy(self._fitted(self.mean)), "W": torch.from_numpy(self.W)}
        return self._save(folder, tensors, {"dim": str(self.dim), "k": str(self.k)})

    def apply_to(self, model: nn.Module) -> nn.Module:
        r"""Put this whitening inside a ``SimCSEModel`` (``config.whitening_dim = k``, ``model.whitening`` a Linear
        layer with weight ``W^T`` and bias ``-mean @ W``), replacing any it had: saved with the model, it is applied
        by every loader (``AutoModel`` with remote code, ``SentenceTransformer``, ``SimCSE``). Returns ``model``.

        >>> whitening.apply_to(model).save_pretrained("outputs/my-simcse")  # doctest: +SKIP
        """
        if model.config.hidden_size != self.dim:
            raise ValueError(f"Whitening.apply_to: fitted on embeddings of size {self.dim}; the model's are of size "
                             f"{model.config.hidden_size}.")
        model.config.whitening_dim = self.k
        model.whitening = nn.Linear(self.dim, self.k).to(next(model.parameters()).device)
        with torch.no_grad():
            model.whitening.weight.copy_(torch.from_numpy(self.W.T))
            model.whitening.bias.copy_(torch.from_numpy(-self.mean[0] @ self.W))
        return model

    @classmethod
    def load(cls, folder: str | os.PathLike) -> Whitening | None:
        r"""Read ``<folder>/whitening.safetensors`` (or the file itself); `None` when the folder has no such file.

        >>> whitening = Whitening.load("outputs/my-simcse")  # doctest: +SKIP
        """
        found = cls._read(folder)
        if found is None:
            return None
        path, tensors, metadata = found
        mean, W = tensors.get("mean"), tensors.get("W")
        if set(tensors) != {"mean", "W"} or mean.ndim != 2 or mean.shape[0] != 1 or W.ndim != 2 \
                or W.shape[0] != mean.shape[1]:
            raise ValueError(f"{path}: expected exactly the tensors 'mean' (1, dim) and 'W' (dim, k); found "
                             f"{ {name: tensor.shape for name, tensor in tensors.items()} }.")
        return cls(mean.numpy(), W.numpy(), corpus=metadata.get("corpus"))

    def __repr__(self) -> str:
        fitted = "not fitted" if self.W is None else f"dim={self.dim}, k={self.k}, corpus={self.corpus!r}"
        return f"Whitening({fitted})"


def read_corpus(path: str | os.PathLike, max_sentences: int | None = None) -> list[str]:
    r"""The distinct sentences of a corpus file to fit a post-processing on, in file order.

    Args:
        path (`str` or `os.PathLike`): an STS file (``.tsv`` / ``.tsv.gz`` with the header
            ``sentence1<TAB>sentence2<TAB>score``: both columns are used), or a UTF-8 text file with one sentence
            per line (``.txt``, ``.txt.gz`` or any other name; blank lines skipped).
        max_sentences (`int`, *optional*): keep only the first this many distinct sentences.

    Returns:
        `list[str]`.

    >>> sentences = read_corpus("../shared/data/stsb/train.tsv.gz")  # doctest: +SKIP
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such corpus file (expected one sentence per line, or an STS .tsv[.gz]).")
    if max_sentences is not None:
        _positive_int(max_sentences, "max_sentences (or None)", minimum=2)
    if path.name.endswith((".tsv", ".tsv.gz")):
        sentences = [s for pair in zip(*read_sts_file(path)[:2]) for s in pair]
    else:  # ours: datasets' text loader names neither file nor line of bad UTF-8 (datasets 5.2)
        sentences = []
        with (gzip.open if path.name.endswith(".gz") else open)(path, "rb") as handle:
            for number, line in enumerate(handle, start=1):
                try:
                    sentences.append(line.decode("utf-8").strip())
                except UnicodeDecodeError as error:
                    raise ValueError(f"{path}, line {number}: not valid UTF-8 ({error.reason}).") from error
    sentences = [sentence for sentence in dict.fromkeys(sentences) if sentence]
    if len(sentences) < 2:
        raise ValueError(f"{path}: {len(sentences)} sentence(s); fitting a post-processing needs at least 2.")
    return sentences[:max_sentences]


def fit_whitening(encode_fn: EncodeFn, sentences: list[str], k: int | None = None,
                  corpus: str | None = None) -> Whitening:
    r"""Encode ``sentences`` with ``encode_fn`` (raw, not normalised) and fit a [`Whitening`] on them.

    Args:
        encode_fn (`Callable[[list[str]], np.ndarray | torch.Tensor]`): `(n, dim)` embeddings of n sentences.
        sentences (`list[str]`): the fitting corpus (see [`read_corpus`]).
        k (`int`, *optional*): output dimension; `None` keeps all.
        corpus (`str`, *optional*): a description of the corpus, saved with the whitening.

    >>> whitening = fit_whitening(model.encode, read_corpus("corpus.txt"), k=256)  # doctest: +SKIP
    """
    return Whitening().fit(embed(encode_fn, sentences), k=k, corpus=corpus)


# ---------------------------------------------------------------------------------------------------- the flow
# ours: normflows 1.7.3 can't reload a saved flow bitwise (LU map on rows, 1e-6 off; no bounded coupling scale)


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
        P, L, U = torch.linalg.lu(torch.linalg.qr(torch.randn(dim, dim, dtype=torch.float64))[0])  # (dim, dim) each
        s = torch.diagonal(U)  # (dim,)
        self.register_buffer("P", P.float())
        self.register_buffer("sign_s", torch.sign(s).float())
        self.L = nn.Parameter(torch.tril(L, -1).float())  # only the strictly lower part is used
        self.U = nn.Parameter(torch.triu(U, 1).float())  # only the strictly upper part is used
        self.log_s = nn.Parameter(torch.log(torch.abs(s)).float())  # (dim,)

    def _factors(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        L = torch.tril(self.L, -1) + torch.eye(len(self.L), device=self.L.device)  # (dim, dim)
        U = torch.triu(self.U, 1) + torch.diag(self.sign_s * torch.exp(self.log_s))  # (dim, dim)
        return L, U, self.P.argmax(dim=1)  # row j of P has its 1 in column permutation[j]

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        L, U, permutation = self._factors()
        y = (x @ U.T) @ L.T  # (n, dim): rows (L U x)^T; two (n, dim) x (dim, dim) products, no (dim, dim) one
        return y[:, permutation], self.log_s.sum()  # P applied as a gather

    def inverse(self, y: torch.Tensor) -> torch.Tensor:
        L, U, permutation = self._factors()
        h = y[:, torch.argsort(permutation)]  # P^T y
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
        self.net = nn.Sequential(nn.Linear(self.split, hidden_size), nn.ReLU(), nn.Linear(hidden_size, hidden_size),
                                 nn.ReLU(), nn.Linear(hidden_size, 2 * (dim - self.split)))
        nn.init.zeros_(self.net[-1].weight)
        nn.init.zeros_(self.net[-1].bias)

    def _halves(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """``a``, ``b`` and the log-scale and shift that ``a`` sets for ``b`` `(n, dim - split)`."""
        a, b = x[:, : self.split], x[:, self.split:]
        raw_scale, shift = self.net(a).chunk(2, dim=1)  # (n, dim - split) each
        return a, b, self.bound * torch.tanh(raw_scale / self.bound), shift

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        a, b, log_scale, shift = self._halves(x)
        return torch.cat([a, b * torch.exp(log_scale) + shift], dim=1), log_scale.sum(dim=1)

    def inverse(self, y: torch.Tensor) -> torch.Tensor:
        a, b, log_scale, shift = self._halves(y)
        return torch.cat([a, (b - shift) * torch.exp(-log_scale)], dim=1)


class FlowModel(nn.Module):
    r"""The flow network: standardisation by fixed buffers ``input_mean`` / ``input_std``, then ``num_steps`` steps,
    each ActNorm -> invertible linear map -> affine coupling, with a standard Gaussian base.

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
        self.dim = dim
        self.register_buffer("input_mean", torch.zeros(dim))  # (dim,)
        self.register_buffer("input_std", torch.ones(dim))  # (dim,)
        self.steps = nn.ModuleList(
            nn.ModuleDict({"actnorm": ActNorm(dim), "linear": InvertibleLinear(dim),
                           "coupling": AffineCoupling(dim, hidden_size, log_scale_bound)}) for _ in range(num_steps))

    def forward(self, x: torch.Tensor, initialize: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """``z = f(x)`` `(n, dim)` and ``log|det df/dx|`` `(n,)`; with ``initialize``, each ActNorm is first set from
        what reaches it of the batch ``x`` (Glow's data-dependent initialisation; call under `torch.no_grad`)."""
        z = (x - self.input_mean) / self.input_std
        logdet = -torch.log(self.input_std).sum().expand(x.shape[0])  # (n,)
        for step in self.steps:
            if initialize:
                step.actnorm.initialize(z)
            z, logdet_actnorm = step.actnorm(z)
            z, logdet_linear = step.linear(z)
            z, logdet_coupling = step.coupling(z)
            logdet = logdet + (logdet_actnorm + logdet_linear + logdet_coupling)
        return z, logdet

    def inverse(self, z: torch.Tensor) -> torch.Tensor:
        """``x = f^-1(z)`` `(n, dim)`."""
        for step in reversed(self.steps):
            z = step.actnorm.inverse(step.linear.inverse(step.coupling.inverse(z)))
        return z * self.input_std + self.input_mean

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """``log p(x) = log N(f(x); 0, I) + log|det df/dx|`` in nats, `(n,)`."""
        z, logdet = self(x)
        return -0.5 * (z.pow(2).sum(dim=1) + self.dim * _LOG_2PI) + logdet


def _batches(data: torch.Tensor, batch_size: int, generator: torch.Generator) -> Iterator[torch.Tensor]:
    """Endless full mini-batches of ``data`` `(n, dim)`: a fresh random order each epoch, the last one's tail first."""
    order = torch.empty(0, dtype=torch.long)
    while True:
        if len(order) < batch_size:
            order = torch.cat([order, torch.randperm(len(data), generator=generator)])
        yield data[order[:batch_size].to(data.device)]
        order = order[batch_size:]


@torch.no_grad()
def _mean_nll(model: FlowModel, data: torch.Tensor) -> float:
    """The mean negative log-likelihood of ``data`` `(n, dim)` in nats per dimension (no layer depends on the mode)."""
    return -sum(float(model.log_prob(chunk).sum()) for chunk in data.split(_CHUNK)) / data.numel()


def _positive_int(value: Any, name: str, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}; got {value!r}.")
    return int(value)


_TENSOR_RULES: tuple[tuple[str, str, Callable[[torch.Tensor], Any]], ...] = (  # what Flow.load takes, by key suffix
    ("", "must be finite float32 (as Flow.save writes)", lambda t: t.dtype == torch.float32 and t.isfinite().all()),
    ("input_std", "must be positive", lambda t: (t > 0).all()),
    (".sign_s", "must hold only +1 and -1", lambda t: (t.abs() == 1).all()),
    (".P", "must be a permutation matrix",
     lambda t: t.ndim == 2 and ((t == 0) | (t == 1)).all() and (t.sum(0) == 1).all() and (t.sum(1) == 1).all()),
)


class Flow(_PostProcessing):
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

    FILE, METHOD = FLOW_FILE, "bert-flow"

    def __init__(self, num_steps: int = 2, hidden_size: int = 128, corpus: str | None = None) -> None:
        self.num_steps = _positive_int(num_steps, "Flow: num_steps")
        self.hidden_size = _positive_int(hidden_size, "Flow: hidden_size")
        self.log_scale_bound, self.corpus, self.model = 2.0, corpus, None
        # log_history: {"step", "nll", "val_nll"} per measurement (NLLs in nats per dimension); best_step: kept by fit
        self.log_history, self.best_step = [], 0

    @property
    def dim(self) -> int:
        """The embedding size (input and output)."""
        return self._fitted(self.model).dim

    def fit(self, embeddings: Any, steps: int = 1000, batch_size: int = 256, learning_rate: float = 1e-3, seed: int = 0,
            validation_fraction: float = 0.1, patience: int | None = 5, log_every: int | None = None,
            max_grad_norm: float | None = 10.0, device: str | torch.device | None = None, corpus: str | None = None,
            show_progress_bar: bool | None = None) -> Flow:
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
        x = _corpus_matrix(embeddings, "Flow.fit")  # (n, dim) float64
        n, dim = x.shape
        if dim < 2:
            raise ValueError(f"Flow.fit: embeddings of size {dim}; a coupling flow needs dim >= 2.")
        if (x == x[0]).all():
            raise ValueError(f"Flow.fit: all {n} embeddings are the same vector; there is no distribution to fit.")
        steps = _positive_int(steps, "Flow.fit: steps", minimum=0)
        log_every = max(1, steps // 20) if log_every is None else _positive_int(log_every, "Flow.fit: log_every")
        patience = None if patience is None else _positive_int(patience, "Flow.fit: patience")
        if not (isinstance(learning_rate, (int, float)) and math.isfinite(learning_rate) and learning_rate > 0):
            raise ValueError(f"Flow.fit: learning_rate must be a positive number; got {learning_rate!r}.")
        if max_grad_norm is not None and not max_grad_norm > 0:
            raise ValueError(f"Flow.fit: max_grad_norm must be positive or None; got {max_grad_norm!r}.")
        if not (isinstance(validation_fraction, (int, float)) and 0 <= validation_fraction < 1):
            raise ValueError(f"Flow.fit: validation_fraction must be in [0, 1); got {validation_fraction!r}.")
        batch_size = _positive_int(batch_size, "Flow.fit: batch_size")
        device, generator = torch.device(device or "cpu"), torch.Generator().manual_seed(seed)
        n_val = min(max(1, round(n * validation_fraction)), n - 2) if validation_fraction > 0 else 0
        shuffled = torch.randperm(n, generator=generator).numpy()
        train, held_out = x[shuffled[n_val:]], torch.from_numpy(x[shuffled[:n_val]]).float().to(device)
        model = self._new_network(train, seed).to(device)
        batches = _batches(torch.from_numpy(train).float().to(device), min(batch_size, n - n_val), generator)
        model(next(batches), initialize=True)  # ActNorm.initialize runs without gradients
        show = logger.getEffectiveLevel() <= logging.INFO if show_progress_bar is None else show_progress_bar
        best_nll = self._optimize(model, batches, held_out, steps, log_every, patience, learning_rate, max_grad_norm,
                                  show)
        self.model = model.eval().to("cpu").requires_grad_(False)
        self.corpus = corpus if corpus is not None else self.corpus
        if n_val and steps and self.best_step == 0:
            logger.warning("Flow.fit: no step improved the held-out NLL of the initialised flow, which is kept. Try a "
                           "lower learning_rate or a larger corpus.")
        logger.info("Fitted flow (%d steps, hidden %d) on %d embeddings of size %d (%d held out); kept step %d%s",
                    self.num_steps, self.hidden_size, n - n_val, dim, n_val, self.best_step,
                    f" (held-out NLL {best_nll:.4f} nats/dim)" if n_val else "")
        return self

    def _new_network(self, x: np.ndarray, seed: int) -> FlowModel:
        """A network initialised from ``seed`` (the global random state untouched) that standardises with the mean and
        spread of the training part ``x`` `(n_train, dim)`; a (nearly) constant dimension is centred, not scaled."""
        mean, std = x.mean(axis=0), x.std(axis=0)  # (dim,) each
        constant = std <= 1e-6 * max(float(std.max()), 1e-300)  # float32 rounding noise at best
        if constant.any():
            logger.info("Flow.fit: %d of %d dimensions are (nearly) constant on the corpus (first: %d): centred, not "
                        "scaled, no information.", constant.sum(), x.shape[1], np.flatnonzero(constant)[0])
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = FlowModel(x.shape[1], self.num_steps, self.hidden_size, self.log_scale_bound)
        model.input_mean.copy_(torch.from_numpy(mean))
        model.input_std.copy_(torch.from_numpy(np.where(constant, 1.0, std)))
        return model

    def _optimize(self, model: FlowModel, batches: Iterator[torch.Tensor], held_out: torch.Tensor, steps: int,
                  log_every: int, patience: int | None, learning_rate: float, max_grad_norm: float | None,
                  show: bool) -> float:
        """The loop of :meth:`fit`: Adam on the mean NLL per dimension, a record every ``log_every`` steps into
        ``log_history``, early stopping on the NLL of ``held_out`` `(n_val, dim)` (may be empty). Leaves ``model``
        with the kept parameters and returns their held-out NLL (``inf`` without one)."""

        optimizer = torch.optim.Adam(model.parameters(), lr=learning_rate)
        self.log_history, self.best_step, stale, window = [], 0, 0, []
        best_nll = _mean_nll(model, held_out) if len(held_out) else math.inf
        best_state = copy.deepcopy(model.state_dict()) if len(held_out) else None
        with tqdm(range(1, steps + 1), desc="Fitting flow", unit="step", disable=not show) as progress:
            for step in progress:
                loss = -model.log_prob(next(batches)).mean() / model.dim  # nats per dimension
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                nn.utils.clip_grad_norm_(model.parameters(), max_grad_norm or math.inf)  # an infinite norm: unclipped
                optimizer.step()
                window.append(loss.detach())
                if step % log_every and step != steps:
                    continue
                record = {"step": step, "nll": float(torch.stack(window).mean()),
                          **({"val_nll": _mean_nll(model, held_out)} if len(held_out) else {})}
                window = []
                if not all(math.isfinite(value) for value in record.values()):
                    raise RuntimeError(f"Flow.fit diverged at step {step} ({record}); lower learning_rate (now "
                                       f"{learning_rate}) or max_grad_norm, or fit on more embeddings.")
                self.log_history.append(record)
                progress.set_postfix({key: f"{value:.4f}" for key, value in record.items() if key != "step"})
                if not len(held_out):
                    self.best_step = step
                elif record["val_nll"] < best_nll:
                    best_nll, self.best_step, stale = record["val_nll"], step, 0
                    best_state = copy.deepcopy(model.state_dict())
                elif patience is not None and (stale := stale + 1) >= patience:
                    logger.info("Flow.fit: stopping at step %d, %d measurements after the best held-out NLL", step,
                                stale)
                    break
        if best_state is not None:
            model.load_state_dict(best_state)
        return best_nll

    def transform(self, embeddings: Any) -> Any:
        r"""Map embeddings to the flow's Gaussian space: ``z = f(x)``.

        Args:
            embeddings (`np.ndarray` or `torch.Tensor` of shape `(n, dim)` or `(dim,)`): raw embeddings.

        Returns:
            the same type and shape as ``embeddings``, computed in float32 (the parameters' precision): a tensor stays
            on its device and keeps its floating dtype, an array keeps a float32 dtype and is float64 otherwise.

        >>> z = flow.transform(model_embeddings)  # doctest: +SKIP
        """
        return self._apply(embeddings, lambda rows: self.model.to(rows.device)(rows)[0], "Flow.transform", self.dim)

    def inverse(self, z: Any) -> Any:
        r"""Map points of the Gaussian space back to embeddings, ``x = f^-1(z)``; types as in [`~Flow.transform`].

        >>> x_again = flow.inverse(flow.transform(x))  # doctest: +SKIP
        """
        return self._apply(z, lambda rows: self.model.to(rows.device).inverse(rows), "Flow.inverse", self.dim)

    def log_prob(self, embeddings: Any) -> Any:
        r"""The flow's log-density of each embedding, ``log N(f(x); 0, I) + log|det df/dx|``, in nats: shape `(n,)`
        (or `()`), the type of ``embeddings``; ``-log_prob(x).mean() / dim`` is the NLL that ``log_history`` records.

        >>> flow.log_prob(held_out_embeddings).mean()  # doctest: +SKIP
        """
        return self._apply(embeddings, lambda rows: self.model.to(rows.device).log_prob(rows), "Flow.log_prob",
                           self.dim)

    def save(self, folder: str | os.PathLike) -> Path:
        r"""Write ``<folder>/flow.safetensors`` (``folder`` created if needed, usually a saved model's): every
        parameter and buffer as float32, the architecture and the fit's record in metadata; returns its path.

        >>> flow.save("outputs/my-simcse")  # doctest: +SKIP
        """
        return self._save(folder, self._fitted(self.model).state_dict(), {
            **{name: str(getattr(self, name)) for name in ("dim", "num_steps", "hidden_size", "best_step")},
            "log_scale_bound": repr(self.log_scale_bound), "log_history": json.dumps(self.log_history)})

    @classmethod
    def load(cls, folder: str | os.PathLike) -> Flow | None:
        r"""Read ``<folder>/flow.safetensors`` (or the file itself); `None` when there is no such file. Its outputs
        are bitwise those of the flow that was saved.

        Raises:
            `ValueError`: the file is not safetensors, its metadata is not a BERT-flow's, or its tensors do not match
            the architecture the metadata describes; the message names the file and the problem.

        >>> flow = Flow.load("outputs/my-simcse")  # doctest: +SKIP
        """
        if (found := cls._read(folder)) is None:
            return None
        path, tensors, metadata = found
        try:
            dim, bound = int(metadata["dim"]), float(metadata["log_scale_bound"])
            flow = cls(int(metadata["num_steps"]), int(metadata["hidden_size"]), corpus=metadata.get("corpus"))
            flow.best_step, flow.log_history = int(metadata["best_step"]), json.loads(metadata["log_history"])
            if dim < 2 or not 0 < bound < math.inf:
                raise ValueError(f"dim={dim}, log_scale_bound={bound}")
        except (KeyError, ValueError) as error:
            raise ValueError(f"{path}: missing or malformed metadata ({type(error).__name__}: {error}); Flow.save "
                             "writes integers dim >= 2, num_steps >= 1, hidden_size >= 1 and best_step, a number "
                             "log_scale_bound > 0 and JSON log_history.") from error
        for key, tensor in tensors.items():
            for suffix, form, valid in _TENSOR_RULES:
                if key.endswith(suffix) and not valid(tensor):
                    raise ValueError(f"{path}: tensor {key!r} {form}; got {tensor.dtype} {tuple(tensor.shape)}"
                                     f"{'' if tensor.isfinite().all() else ' with NaN or inf'}.")
        flow.log_scale_bound = bound
        with torch.random.fork_rng(devices=[]):
            flow.model = FlowModel(dim, flow.num_steps, flow.hidden_size, bound)
        try:
            flow.model.load_state_dict(tensors)
        except RuntimeError as error:
            raise ValueError(f"{path}: the tensors do not match the flow its metadata describes (dim={dim}, num_steps="
                             f"{flow.num_steps}, hidden_size={flow.hidden_size}): {' '.join(str(error).split())}"
                             ) from None
        flow.model.eval().requires_grad_(False)
        return flow

    def __repr__(self) -> str:
        return (f"Flow({'not fitted' if self.model is None else f'dim={self.dim}'}, num_steps={self.num_steps}, "
                f"hidden_size={self.hidden_size}, corpus={self.corpus!r})")


def fit_flow(encode_fn: EncodeFn, sentences: list[str], corpus: str | None = None, num_steps: int = 2,
             hidden_size: int = 128, **fit_kwargs: Any) -> Flow:
    r"""Encode ``sentences`` with ``encode_fn`` (raw, not normalised) and fit a [`Flow`] on them.

    Args:
        encode_fn (`Callable[[list[str]], np.ndarray | torch.Tensor]`): `(n, dim)` embeddings of n sentences.
        sentences (`list[str]`): the fitting corpus (see [`read_corpus`]).
        corpus (`str`, *optional*): a description of the corpus, saved with the flow.
        num_steps (`int`, *optional*, defaults to 2): flow steps, as in [`Flow`].
        hidden_size (`int`, *optional*, defaults to 128): coupling width, as in [`Flow`].
        fit_kwargs: passed on to [`~Flow.fit`] (``steps``, ``batch_size``, ``learning_rate``, ``seed``, ...).

    >>> flow = fit_flow(model.encode, read_corpus("corpus.txt"), corpus="corpus.txt")  # doctest: +SKIP
    """
    return Flow(num_steps, hidden_size).fit(embed(encode_fn, sentences), corpus=corpus, **fit_kwargs)


# ---------------------------------------------------------------------------------------------------- comparison


def reduced_k(dim: int, k: int | None = None) -> int:
    """The reduced whitening dimension: ``k`` when given, else 256, or half the dimension when that is smaller."""
    return k if k is not None else min(REDUCED_K, dim // 2)


def compare_postprocessing(encode_fn: EncodeFn, model_name: str, corpus: Sequence[str], corpus_name: str,
                           whiten_k: int | None = None, flow_kwargs: dict[str, Any] | None = None,
                           **evaluate_kwargs: Any) -> list[dict]:
    r"""The model as it is, + BERT-whitening (all dimensions), + BERT-whitening (reduced), + BERT-flow: one result of
    [`~simcse_hub.evaluation.evaluate_model`] each, the fixes fitted on the raw embeddings of ``corpus``.

    Every sentence (of the corpus and of the tasks) is encoded once, for all four rows.

    Args:
        encode_fn (`Callable[[list[str]], np.ndarray]`): raw (not normalised) embeddings of the model.
        model_name (`str`): names the rows.
        corpus (`Sequence[str]`): the unlabelled fitting corpus ([`read_corpus`]).
        corpus_name (`str`): how the rows name the corpus (a file name).
        whiten_k (`int`, *optional*): the reduced whitening dimension (default [`reduced_k`]).
        flow_kwargs (`dict`, *optional*): passed to [`~Flow.fit`] (``steps``, ``seed``, ...).
        evaluate_kwargs: passed to ``evaluate_model`` (``tasks``, ``data_dir``, ``setting``, ``split``).

    >>> rows = compare_postprocessing(raw_encode, "all-MiniLM-L6-v2 [CLS]", corpus, "train.tsv.gz",
    ...                               tasks=["STSBenchmark"])  # doctest: +SKIP
    """
    encode_fn = memoized(encode_fn)
    raw = embed(encode_fn, list(corpus))  # (n, dim)
    k = reduced_k(raw.shape[1], whiten_k)
    fixes = [("whitening", {"corpus": corpus_name, "k": None}, Whitening().fit(raw, corpus=corpus_name)),
             (f"whitening-{k}", {"corpus": corpus_name, "k": k}, Whitening().fit(raw, k=k, corpus=corpus_name)),
             ("flow", {"corpus": corpus_name}, Flow().fit(raw, corpus=corpus_name, **(flow_kwargs or {})))]
    rows = [evaluate_model(encode_fn, model_name, **evaluate_kwargs)]
    for label, description, fix in fixes:
        rows.append(evaluate_model(lambda sentences, fix=fix: fix.transform(encode_fn(sentences)),
                                   f"{model_name} + {label}", **evaluate_kwargs))
        rows[-1]["flow" if label == "flow" else "whitening"] = description
    return rows


def comparison_table(rows: Sequence[dict]) -> str:
    r"""A Markdown table of results (one row each): the STS tasks scored, alignment, uniformity, mean cosine.

    >>> print(comparison_table(rows))  # doctest: +SKIP
    | Model | STS-B | SICK-R | Alignment | Uniformity | Mean cosine |
    ...
    """
    tasks = list(dict.fromkeys(task for row in rows for task in row["tasks"]))
    lines = []
    for row in rows:
        model, _, fix = str(row["model"]).partition(" + ")
        lines.append([public_model_name(model) + (f" + {fix}" if fix else ""),
                      *(cell(row["tasks"].get(task, {}).get("spearman")) for task in tasks),
                      *(cell(row.get(key), 4) for key in ("alignment", "uniformity", "mean_cosine"))])
    header = ["Model", *(DISPLAY_NAMES.get(task, task) for task in tasks), "Alignment", "Uniformity", "Mean cosine"]
    note = (f"Spearman x100 on the {rows[0]['split'] if rows else 'test'} split; alignment, uniformity and the mean "
            "cosine of all pairs on STS-B dev (lower is better for those three).")
    return markdown_table(header, lines) + f"\n\n{note}\n"


__all__ = ["FLOW_FILE", "WHITENING_FILE", "ActNorm", "AffineCoupling", "Flow", "FlowModel", "InvertibleLinear",
           "Whitening", "compare_postprocessing", "comparison_table", "fit_flow", "fit_whitening", "read_corpus",
           "reduced_k"]
