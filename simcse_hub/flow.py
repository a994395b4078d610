"""BERT-flow (Li et al., 2020): a normalizing flow fitted on a corpus of sentence embeddings, used as post-processing.

A flow ``f`` is an invertible map with a tractable Jacobian. Fitted by maximum likelihood so that ``z = f(x)`` follows
a standard Gaussian on the corpus, it turns the anisotropic, non-Gaussian cloud of raw embeddings into an isotropic
one, in which cosine similarity is meant to track meaning better: the non-linear sibling of BERT-whitening
(``simcse_hub.whitening``). The flow here is Glow-style on vectors: the inputs are standardised with the corpus mean
and standard deviation, then ``num_steps`` steps, each ActNorm -> invertible linear map (LU-decomposed) -> affine
coupling, with a standard Gaussian base. The fitted flow is saved beside a model as ``flow.safetensors``.

References: Li, Zhou, He, Wang, Yang & Li, "On the Sentence Embeddings from Pre-trained Language Models", EMNLP 2020
(https://arxiv.org/abs/2011.05864); Kingma & Dhariwal, "Glow: Generative Flow with Invertible 1x1 Convolutions",
2018 (https://arxiv.org/abs/1807.03039); Dinh, Sohl-Dickstein & Bengio, "Density estimation using Real NVP", 2017.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from simcse_hub.flow_model import Batches, FlowModel, mean_nll, standardization

logger = logging.getLogger(__name__)

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
        from simcse_hub.whitening import read_tensor_file

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
        sentences (`list[str]`): the fitting corpus (see `simcse_hub.whitening.read_corpus`).
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


__all__ = ["FLOW_FILE", "Flow", "fit_flow"]
