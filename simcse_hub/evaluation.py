"""Evaluation of sentence embeddings the way the SimCSE paper reports it.

* STS12-STS16, STS-B and SICK-R (SentEval's task names): Spearman correlation x100 between the cosine similarity of
  the two embeddings and the gold score, without a trained regressor. STS12-16 aggregate their sub-tasks as
  SentEval does: ``all`` (one correlation over the concatenated sub-tasks, the SimCSE paper's setting), ``mean``
  (plain average of the sub-task correlations) or ``wmean`` (average weighted by sub-task size). For the single-file
  tasks STS-B and SICK-R the three settings coincide.
* Alignment and uniformity (Wang & Isola, 2020) on L2-normalised embeddings, as SimCSE reports them: alignment
  (alpha=2) over the STS-B pairs scored above 4, uniformity (t=2) over all (distinct) STS-B sentences of a split.

Encoding is injected: every function takes ``encode_fn(list[str]) -> (n, dim)`` embeddings (numpy or torch, not
necessarily normalised), so the training loop passes its in-training model and the CLI passes ``SimCSE.encode``.

Data: ``<data_dir>/stsb/{train,dev,test}.tsv.gz``, ``<data_dir>/sickr/{train,trial,test}.tsv.gz`` (the SICK dev split
is ``trial``) and ``<data_dir>/sts12/<subtask>.tsv.gz`` ... ``sts16/`` (SentEval's sub-task names), each file
``sentence1<TAB>sentence2<TAB>score`` with a header. A task absent locally is fetched from the Hub (the public MTEB
copies) when online; offline it is reported under ``"missing"`` with the reason. Parsed files are cached (see
:mod:`simcse_hub.sts_data`).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from scipy.stats import spearmanr

from simcse_hub.sts_data import (
    SETTINGS,
    SPLITS,
    STS_TASKS,
    STSDataError,
    STSPairs,
    TaskUnavailableError,
    canonical_task,
    default_data_dir,
    load_sts_task,
    read_sts_file,
)

logger = logging.getLogger(__name__)

EncodeFn = Callable[[list[str]], Any]  # list of n sentences -> (n, dim) numpy array or torch tensor

# ---------------------------------------------------------------------------------------------------- encoding


def _as_numpy(embeddings: Any) -> np.ndarray:
    if hasattr(embeddings, "detach"):  # torch.Tensor
        embeddings = embeddings.detach().float().cpu().numpy()
    return np.asarray(embeddings, dtype=np.float32)


def embed(encode_fn: EncodeFn, sentences: Sequence[str]) -> np.ndarray:
    r"""``encode_fn(sentences)`` as a float32 ``(len(sentences), dim)`` array, its shape checked. ``encode_fn`` gets
    every sentence at once and batches them itself (``SimCSE.encode`` does, longest first by tokens).

    >>> embed(lambda batch: np.ones((len(batch), 3)), ["a", "b c"]).shape
    (2, 3)
    """
    if not sentences:
        raise ValueError("embed: no sentences to encode.")
    embeddings = _as_numpy(encode_fn(list(sentences)))
    if embeddings.ndim != 2 or embeddings.shape[0] != len(sentences):
        raise ValueError(f"encode_fn returned shape {embeddings.shape} for {len(sentences)} sentences; expected "
                         f"({len(sentences)}, dim).")
    return embeddings


def memoized(encode_fn: EncodeFn) -> EncodeFn:
    """``encode_fn`` that encodes each distinct sentence once over all its calls (the STS-B dev sentences serve both
    the Spearman correlation and alignment / uniformity)."""
    cache: dict[str, np.ndarray] = {}

    def encode(sentences: list[str]) -> np.ndarray:
        todo = [s for s in dict.fromkeys(sentences) if s not in cache]
        if todo:
            cache.update(zip(todo, embed(encode_fn, todo)))
        return np.stack([cache[s] for s in sentences])

    return encode


def _unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    return x / np.clip(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12, None)


def spearman(predictions: Any, gold: Any) -> float:
    """Spearman's rank correlation x100 (``scipy.stats.spearmanr``, ties averaged); NaN for a constant input.

    >>> spearman([0.1, 0.5, 0.3], [1.0, 4.0, 3.0])
    100.0
    """
    result = spearmanr(np.asarray(predictions, dtype=np.float64), np.asarray(gold, dtype=np.float64))
    return float(result.statistic) * 100


def alignment(x: Any, y: Any, alpha: float = 2.0) -> float:
    r"""Wang & Isola's alignment, ``mean_i ||f(x_i) - f(y_i)||^alpha`` on L2-normalised rows (lower is better).

    >>> round(alignment(np.array([[1.0, 0.0]]), np.array([[0.0, 2.0]])), 6)
    2.0
    """
    difference = _unit(_as_numpy(x)) - _unit(_as_numpy(y))  # (n, dim)
    return float(np.mean(np.linalg.norm(difference, axis=1) ** alpha))


def mean_cosine(x: Any) -> float:
    r"""The mean cosine similarity of all distinct pairs of rows, ``(|sum_i u_i|^2 - n) / (n (n - 1))`` for the unit
    vectors ``u_i``: how anisotropic the embeddings are (near 1 when they crowd in a narrow cone, so that every pair
    looks similar; near 0 when they spread over the sphere).

    >>> round(mean_cosine(np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])), 6)
    0.471405
    """
    u = _unit(_as_numpy(x))  # (n, dim)
    n = u.shape[0]
    if n < 2:
        raise ValueError(f"mean_cosine needs at least 2 embeddings; got {n}.")
    return float((np.square(u.sum(axis=0)).sum() - n) / (n * (n - 1)))


def uniformity(x: Any, t: float = 2.0, chunk_size: int = 2048) -> float:
    r"""Wang & Isola's uniformity, ``log mean_{i<j} exp(-t ||f(x_i) - f(x_j)||^2)`` on L2-normalised rows (lower is
    better), over all distinct pairs, computed in row chunks so large sets fit in memory.

    >>> round(uniformity(np.array([[1.0, 0.0], [-1.0, 0.0]])), 6)
    -8.0
    """
    x = _unit(_as_numpy(x))  # (n, dim)
    n = x.shape[0]
    if n < 2:
        raise ValueError(f"uniformity needs at least 2 embeddings; got {n}.")
    total = 0.0
    for start in range(0, n, chunk_size):
        squared = np.clip(2.0 - 2.0 * (x[start:start + chunk_size] @ x.T), 0.0, None)  # (chunk, n)
        total += float(np.triu(np.exp(-t * squared), k=start + 1).sum())  # pairs (i, j) with j > i
    return float(np.log(total / (n * (n - 1) / 2)))


# ---------------------------------------------------------------------------------------------------- evaluation


def _aggregate(task: str, subsets: dict[str, STSPairs], similarities: dict[str, np.ndarray], setting: str) -> dict:
    n_pairs = sum(len(pairs) for pairs in subsets.values())
    if STS_TASKS[task][1] is None:
        return {"spearman": spearman(similarities[task], subsets[task].scores), "n_pairs": n_pairs}
    per = {
        name: {"spearman": spearman(similarities[name], pairs.scores), "n_pairs": len(pairs)}
        for name, pairs in subsets.items()
    }
    if setting == "all":
        value = spearman(np.concatenate([similarities[name] for name in subsets]),
                         np.concatenate([pairs.scores for pairs in subsets.values()]))
    elif setting == "mean":
        value = float(np.mean([entry["spearman"] for entry in per.values()]))
    else:
        weights = [entry["n_pairs"] for entry in per.values()]
        value = float(np.average([entry["spearman"] for entry in per.values()], weights=weights))
    return {"spearman": value, "n_pairs": n_pairs, "subtasks": per}


def evaluate_sts(
    encode_fn: EncodeFn,
    tasks: Sequence[str] | None = None,
    data_dir: str | os.PathLike | None = None,
    setting: str = "all",
    split: str = "test",
    model_name: str | None = None,
) -> dict:
    r"""Score ``encode_fn`` on STS tasks: Spearman x100 of cosine similarity against the gold scores, as SentEval.

    Every distinct sentence of the requested tasks is encoded once. Tasks neither on disk nor fetchable are listed
    under ``"missing"`` with the reason and left out of ``"average"``.

    Args:
        encode_fn (`Callable[[list[str]], np.ndarray | torch.Tensor]`): `(n, dim)` embeddings of n sentences.
        tasks (`Sequence[str]`, *optional*, defaults to all seven): SentEval task names.
        data_dir (`str` or `os.PathLike`, *optional*, defaults to [`default_data_dir`]): the local data folder.
        setting (`str`, *optional*, defaults to `"all"`): ``"all"``, ``"mean"`` or ``"wmean"`` (STS12-16).
        split (`str`, *optional*, defaults to `"test"`): ``"test"`` or ``"dev"`` (STS-B and SICK-R only).
        model_name (`str`, *optional*): recorded as ``"model"`` (defaults to the name of ``encode_fn``).

    Returns:
        `dict`: ``{"model", "setting", "split", "tasks": {task: {"spearman", "n_pairs"[, "subtasks"], "source"}},
        "average", "missing": {task: reason}, "alignment": None, "uniformity": None, "whitening": None}``.

    >>> results = evaluate_sts(model.encode, tasks=["STSBenchmark"], split="dev")  # doctest: +SKIP
    >>> results["tasks"]["STSBenchmark"]["spearman"]  # doctest: +SKIP
    86.2...
    """
    if setting not in SETTINGS:
        raise ValueError(f"setting must be one of {list(SETTINGS)}; got {setting!r}.")
    if split not in SPLITS:
        raise ValueError(f"split must be one of {list(SPLITS)}; got {split!r}.")
    tasks = [canonical_task(task) for task in (tasks or STS_TASKS)]
    if data_dir is None:
        data_dir = default_data_dir()
    elif not Path(data_dir).is_dir():
        raise FileNotFoundError(
            f"data_dir {str(data_dir)!r} is not a directory (expected the layout stsb/, sickr/, sts12/ ...)."
        )
    loaded, missing = _load_tasks(tasks, data_dir, split, setting)
    sentences = list(dict.fromkeys(s for subsets in loaded.values() for pairs in subsets.values()
                                   for s in pairs.sentences1 + pairs.sentences2))
    results_tasks: dict[str, dict] = {}
    if sentences:
        embeddings = _unit(embed(encode_fn, sentences))
        row = {sentence: i for i, sentence in enumerate(sentences)}
        for task, subsets in loaded.items():
            similarities = {
                name: np.einsum("ij,ij->i", embeddings[[row[s] for s in pairs.sentences1]],
                                embeddings[[row[s] for s in pairs.sentences2]])  # (n_pairs,)
                for name, pairs in subsets.items()
            }
            results_tasks[task] = _aggregate(task, subsets, similarities, setting)
            sources = sorted({pairs.source for pairs in subsets.values()})
            results_tasks[task]["source"] = sources[0] if len(sources) == 1 else os.path.dirname(sources[0])
    scores = [entry["spearman"] for entry in results_tasks.values()]
    return {
        "model": model_name or getattr(encode_fn, "__qualname__", type(encode_fn).__name__),
        "setting": setting,
        "split": split,
        "tasks": results_tasks,
        "average": float(np.mean(scores)) if scores else None,
        "missing": missing,
        "alignment": None,
        "uniformity": None,
        "mean_cosine": None,
        "whitening": None,
        "flow": None,
    }


def _load_tasks(tasks: list[str], data_dir: str | os.PathLike, split: str,
                setting: str) -> tuple[dict[str, dict[str, STSPairs]], dict[str, str]]:
    """``({task: {subtask: pairs}}, {task: why it is missing})``: the Hub is asked at most until it is found
    unreachable, and a task whose sub-tasks ``setting`` needs but its file does not identify is missing."""
    loaded: dict[str, dict[str, STSPairs]] = {}
    missing: dict[str, str] = {}
    hub: bool | str = True
    for task in dict.fromkeys(tasks):
        try:
            loaded[task] = load_sts_task(task, data_dir, split, hub=hub)
        except TaskUnavailableError as error:
            missing[task] = str(error)
            if error.hub_unreachable:
                hub = f"the Hub was unreachable when fetching {task}"
            logger.info("%s not evaluated: %s", task, error)
            continue
        subtasks = STS_TASKS[task][1]
        if subtasks and setting != "all" and set(loaded[task]) != set(subtasks):
            source = next(iter(loaded.pop(task).values())).source
            missing[task] = f"setting {setting!r} needs {task}'s sub-tasks, which {source} does not identify"
            logger.info("%s not evaluated: %s", task, missing[task])
    return loaded, missing


def evaluate_alignment_uniformity(
    encode_fn: EncodeFn,
    data_dir: str | os.PathLike | None = None,
    split: str = "dev",
    threshold: float = 4.0,
) -> dict[str, float]:
    r"""Alignment (alpha=2, STS-B pairs with gold score above ``threshold``) and uniformity (t=2, all distinct STS-B
    sentences of ``split``) on L2-normalised embeddings, as in the SimCSE paper (Figure 2).

    Args:
        encode_fn (`Callable[[list[str]], np.ndarray | torch.Tensor]`): `(n, dim)` embeddings of n sentences.
        data_dir (`str` or `os.PathLike`, *optional*, defaults to [`default_data_dir`]): the local data folder.
        split (`str`, *optional*, defaults to `"dev"`): the STS-B split.
        threshold (`float`, *optional*, defaults to 4.0): positive pairs are those scored strictly above it (0-5).

    Returns:
        `dict`: ``{"alignment": float, "uniformity": float, "mean_cosine": float}`` (lower is better for all three;
        ``mean_cosine`` is the mean cosine of all pairs of sentences, see [`mean_cosine`]).

    Raises:
        TaskUnavailableError: STS-B of that split is neither on disk nor fetchable.

    >>> evaluate_alignment_uniformity(model.encode, "../shared/data")  # doctest: +SKIP
    {'alignment': 0.21..., 'uniformity': -2.3...}
    """
    data_dir = data_dir if data_dir is not None else default_data_dir()
    pairs = load_sts_task("STSBenchmark", data_dir, split)["STSBenchmark"]
    positive = np.flatnonzero(pairs.scores > threshold)
    if positive.size == 0:
        raise ValueError(f"{pairs.source}: no pair has a gold score above {threshold}, so alignment is undefined.")
    sentences = list(dict.fromkeys(pairs.sentences1 + pairs.sentences2))
    embeddings = embed(encode_fn, sentences)
    row = {sentence: i for i, sentence in enumerate(sentences)}
    x = embeddings[[row[pairs.sentences1[i]] for i in positive]]  # (n_pos, dim)
    y = embeddings[[row[pairs.sentences2[i]] for i in positive]]  # (n_pos, dim)
    return {"alignment": alignment(x, y), "uniformity": uniformity(embeddings), "mean_cosine": mean_cosine(embeddings)}


def evaluate_model(
    encode_fn: EncodeFn,
    model_name: str,
    tasks: Sequence[str] | None = None,
    data_dir: str | os.PathLike | None = None,
    setting: str = "all",
    split: str = "test",
    alignment_uniformity: bool = True,
) -> dict:
    r"""[`evaluate_sts`] and, unless turned off, [`evaluate_alignment_uniformity`] on STS-B dev, in one result, each
    distinct sentence encoded once.

    When STS-B dev is not available, alignment and uniformity stay ``None`` and the reason is logged once.

    >>> results = evaluate_model(model.encode, "outputs/quickstart", tasks=["STSBenchmark"])  # doctest: +SKIP
    """
    encode_fn = memoized(encode_fn)
    results = evaluate_sts(encode_fn, tasks=tasks, data_dir=data_dir, setting=setting, split=split,
                           model_name=model_name)
    if alignment_uniformity:
        try:
            results.update(evaluate_alignment_uniformity(encode_fn, data_dir, split="dev"))
        except TaskUnavailableError as error:
            logger.warning("Alignment and uniformity not computed: %s", error)
    return results


__all__ = [
    "STS_TASKS",
    "STSDataError",
    "STSPairs",
    "TaskUnavailableError",
    "alignment",
    "canonical_task",
    "default_data_dir",
    "embed",
    "evaluate_alignment_uniformity",
    "evaluate_model",
    "evaluate_sts",
    "memoized",
    "load_sts_task",
    "mean_cosine",
    "read_sts_file",
    "spearman",
    "uniformity",
]
