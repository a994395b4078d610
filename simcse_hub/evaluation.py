"""STS evaluation of sentence embeddings the way the SimCSE paper reports it, and its reports.

Data, in SentEval's layout: ``<data_dir>/stsb/{train,dev,test}.tsv.gz``, ``<data_dir>/sickr/{train,trial,test}.tsv.gz``
(the SICK dev split is ``trial``) and ``<data_dir>/sts12/<subtask>.tsv.gz`` ... ``sts16/`` with SentEval's sub-task
names. Each file has the header ``sentence1<TAB>sentence2<TAB>score`` and one pair per line, with no CSV quoting (.tsv
or .tsv.gz); a bad file is a [`STSDataError`] naming the file and the line. Parsed files are cached by (path,
modification time, size), so the training loop can evaluate every few steps without reading them again. A task absent
locally is fetched from the Hub (the public MTEB copies, through ``datasets.load_dataset``) when online; offline,
[`load_sts_task`] raises [`TaskUnavailableError`] with the reason, which [`evaluate_sts`] reports under ``missing``.

Scores:

* STS12-STS16, STS-B and SICK-R: Spearman correlation x100 between the cosine similarity of the two embeddings and the
  gold score, without a trained regressor. STS12-16 aggregate their sub-tasks as SentEval does: ``all`` (one
  correlation over the concatenated sub-tasks, the SimCSE paper's setting), ``mean`` (plain average of the sub-task
  correlations) or ``wmean`` (average weighted by sub-task size). For STS-B and SICK-R the three coincide.
* Alignment (alpha=2, over the STS-B pairs scored above 4) and uniformity (t=2, over all distinct STS-B sentences of a
  split) of Wang & Isola (2020) on L2-normalised embeddings, and the mean cosine of all pairs (the anisotropy).

Encoding is injected: every function takes ``encode_fn(list[str]) -> (n, dim)`` embeddings (numpy or torch, not
necessarily normalised), so the training loop passes its in-training model and the CLI passes ``SimCSE.encode``.
Reports: the Markdown table of several models, the console table of one, the JSON file, and the alignment-uniformity
figure.
"""

from __future__ import annotations

import gzip
import json
import logging
import math
import os
import warnings
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from huggingface_hub import constants
from scipy.stats import ConstantInputWarning, spearmanr

logger = logging.getLogger(__name__)

STS_TASKS: dict[str, tuple[str, tuple[str, ...] | None]] = {
    "STS12": ("sts12", ("MSRpar", "MSRvid", "SMTeuroparl", "surprise.OnWN", "surprise.SMTnews")),
    "STS13": ("sts13", ("FNWN", "headlines", "OnWN")),
    "STS14": ("sts14", ("deft-forum", "deft-news", "headlines", "images", "OnWN", "tweet-news")),
    "STS15": ("sts15", ("answers-forums", "answers-students", "belief", "headlines", "images")),
    "STS16": ("sts16", ("answer-answer", "headlines", "plagiarism", "postediting", "question-question")),
    "STSBenchmark": ("stsb", None),
    "SICKRelatedness": ("sickr", None),
}
SPLIT_FILES = {"stsb": {"dev": "dev", "test": "test"}, "sickr": {"dev": "trial", "test": "test"}}
# The gold scores each task's annotators could give (SICK relatedness 1-5, the SemEval STS tasks 0-5).
SCORE_RANGES = {"sickr": (1.0, 5.0)}
DEFAULT_SCORE_RANGE = (0.0, 5.0)
HUB_DATASETS = {
    "STS12": "mteb/sts12-sts", "STS13": "mteb/sts13-sts", "STS14": "mteb/sts14-sts", "STS15": "mteb/sts15-sts",
    "STS16": "mteb/sts16-sts", "STSBenchmark": "mteb/stsbenchmark-sts", "SICKRelatedness": "mteb/sickr-sts",
}
HUB_SPLITS = {"test": "test", "dev": "validation"}
DISPLAY_NAMES = {"STSBenchmark": "STS-B", "SICKRelatedness": "SICK-R"}
_NAMES = {name.lower(): task for task in STS_TASKS for name in (task, DISPLAY_NAMES.get(task, task),
                                                                   DISPLAY_NAMES.get(task, task).replace("-", ""))}
SETTINGS = ("all", "mean", "wmean")
SPLITS = ("test", "dev")
HEADER = ["sentence1", "sentence2", "score"]
EXPECTED = "a header 'sentence1<TAB>sentence2<TAB>score', then one 'sentence1<TAB>sentence2<TAB>score' per line"

EncodeFn = Callable[[list[str]], Any]  # list of n sentences -> (n, dim) numpy array or torch tensor


class STSDataError(ValueError):
    """A malformed STS data file; the message names the file, the line and the expected form."""


class TaskUnavailableError(LookupError):
    """An STS task that is neither on disk nor fetchable; ``str(error)`` is the reason reported under ``missing``.

    ``hub_unreachable`` is `True` when the Hub could not be reached at all (a network error), so that a caller
    loading several tasks need not wait for the same time-out again.
    """

    def __init__(self, reason: str, hub_unreachable: bool = False) -> None:
        super().__init__(reason)
        self.hub_unreachable = hub_unreachable


@dataclass(frozen=True)
class STSPairs:
    """The sentence pairs of one STS file: ``sentences1[i]``, ``sentences2[i]`` and gold ``scores[i]``."""

    sentences1: tuple[str, ...]
    sentences2: tuple[str, ...]
    scores: np.ndarray  # (n,) float64, read-only
    source: str

    def __len__(self) -> int:
        return len(self.scores)


def _pairs(sentences1: Sequence[str], sentences2: Sequence[str], scores: Sequence[float], source: Any) -> STSPairs:
    """The pairs with read-only scores; gold scores that are all equal are warned about here, once per file (the
    pairs are cached), naming it, since no correlation is defined on them."""
    array = np.asarray(scores, dtype=np.float64)  # (n,)
    array.setflags(write=False)
    if (array == array[0]).all():
        logger.warning("%s: every gold score is %g; Spearman is undefined (NaN) for this task.", source, array[0])
    return STSPairs(tuple(sentences1), tuple(sentences2), array, str(source))


def _check_choice(name: str, value: Any, choices: Sequence[str]) -> None:
    if value not in choices:
        raise ValueError(f"{name} must be one of {list(choices)}; got {value!r}.")


# ---------------------------------------------------------------------------------------------------- reading

_FILE_CACHE: dict[tuple[str, int, int], STSPairs] = {}
_HUB_CACHE: dict[tuple[str, str], dict[str, STSPairs]] = {}


def _parse_sts_file(path: Path, score_range: tuple[float, float] | None = None) -> STSPairs:
    # ours: datasets' csv loader pads a short row with None and names neither file nor line of bad UTF-8 (5.2)
    try:
        raw = gzip.decompress(path.read_bytes()) if path.name.endswith(".gz") else path.read_bytes()
        lines = raw.decode("utf-8").split("\n")
    except (gzip.BadGzipFile, EOFError, zlib.error) as error:
        raise STSDataError(f"{path}: not a valid gzip file ({error}); expected a .tsv or .tsv.gz file.") from error
    except UnicodeDecodeError as error:
        line, column = raw.count(b"\n", 0, error.start) + 1, error.start - raw.rfind(b"\n", 0, error.start)
        raise STSDataError(f"{path}, line {line}: byte {raw[error.start:error.start + 1]!r} at column {column} is "
                           "not valid UTF-8; the file must be UTF-8 encoded.") from error
    lines = [line.rstrip("\r") for line in lines[:-1 if lines[-1] == "" else None]]
    if not lines:
        raise STSDataError(f"{path}: the file is empty; expected {EXPECTED}.")
    if [field.strip().lower() for field in lines[0].split("\t")] != HEADER:
        raise STSDataError(f"{path}, line 1: expected the header 'sentence1<TAB>sentence2<TAB>score', got "
                           f"{lines[0][:80]!r}.")
    rows, outside = [], []  # outside: (line, score) of the gold scores outside the task's range
    for number, text in enumerate(lines[1:], start=2):
        fields = text.split("\t")
        if not text.strip():
            continue  # a blank line holds no pair
        if len(fields) != 3:
            raise STSDataError(f"{path}, line {number}: expected 3 tab-separated fields (sentence1, sentence2, "
                               f"score), found {len(fields)}: {text[:80]!r}.")
        try:
            score = float(fields[2])
        except ValueError:
            score = math.nan
        if not math.isfinite(score):
            raise STSDataError(f"{path}, line {number}: the score {fields[2]!r} is not a finite number.")
        if not fields[0].strip() or not fields[1].strip():
            raise STSDataError(f"{path}, line {number}: empty sentence; both sentences of a pair must be non-empty.")
        if score_range is not None and not score_range[0] <= score <= score_range[1]:
            outside.append((number, score))
        rows.append((fields[0], fields[1], score))
    if not rows:
        raise STSDataError(f"{path}: no sentence pairs after the header; expected {EXPECTED}.")
    if outside:
        (first, value), more = outside[0], len(outside) - 1
        logger.warning("%s, line %d: the gold score %g is outside the task's range %g-%g%s; the correlation is "
                       "computed all the same, but check the file.", path, first, value, *score_range,
                       f" (and {more} more line{'s' if more > 1 else ''})" if more else "")
    return _pairs(*zip(*rows), path)


def _load_sts_file(path: str | os.PathLike, score_range: tuple[float, float] | None = None) -> STSPairs:
    """The parsed file, from the cache when the file (path, modification time, size) was read before; gold scores
    outside ``score_range`` are warned about (with the file and line) when it is first read."""
    path = Path(path)
    try:
        stat = path.stat()
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: no such STS data file (expected {EXPECTED}; .tsv or .tsv.gz).") from None
    if not path.is_file():
        raise STSDataError(f"{path}: is a directory, not an STS data file.")
    key = (str(path.resolve()), stat.st_mtime_ns, stat.st_size)
    if key not in _FILE_CACHE:
        _FILE_CACHE[key] = _parse_sts_file(path, score_range)
        logger.debug("Read %d pairs from %s", len(_FILE_CACHE[key]), path)
    return _FILE_CACHE[key]


def read_sts_file(path: str | os.PathLike) -> tuple[list[str], list[str], np.ndarray]:
    r"""Read an STS file: a header ``sentence1<TAB>sentence2<TAB>score``, then one pair per line (.tsv or .tsv.gz).

    Args:
        path (`str` or `os.PathLike`): the file. No CSV quoting: lines are split on tabs only.

    Returns:
        `tuple`: ``(sentences1, sentences2, scores)``, two lists of `str` and a float64 array of shape `(n,)`.

    Raises:
        FileNotFoundError: the file does not exist (the message names it).
        STSDataError: (a ``ValueError``) empty file, wrong header, bad column count, non-numeric score, empty
            sentence or undecodable bytes; the message names the file and the line.

    >>> s1, s2, scores = read_sts_file("../shared/data/stsb/dev.tsv.gz")  # doctest: +SKIP
    >>> len(s1), scores[:2]  # doctest: +SKIP
    (1500, array([5.  , 4.75]))
    """
    pairs = _load_sts_file(path)
    return list(pairs.sentences1), list(pairs.sentences2), pairs.scores.copy()


def default_data_dir() -> Path | None:
    """``$SIMCSE_DATA_DIR`` when set, else the first ``../shared/data`` that exists: from the current directory, then
    beside the source checkout simcse_hub is installed from (``<checkout>/../shared/data``)."""
    if os.environ.get("SIMCSE_DATA_DIR"):
        return Path(os.environ["SIMCSE_DATA_DIR"])
    checkout = Path(__file__).resolve().parent.parent
    for candidate in (Path.cwd().parent / "shared" / "data", checkout.parent / "shared" / "data"):
        if candidate.is_dir():
            return candidate
    return None


def canonical_task(name: str) -> str:
    """SentEval's name for ``name`` (case-insensitive; ``STS-B``/``STSB`` and ``SICK-R``/``SICKR`` accepted)."""
    if str(name).lower() not in _NAMES:
        raise ValueError(f"unknown STS task {name!r}; expected one of {list(STS_TASKS)}.")
    return _NAMES[str(name).lower()]


def _find_file(stem: Path) -> Path | None:
    return next((path for path in (stem.with_name(stem.name + suffix) for suffix in (".tsv.gz", ".tsv"))
                 if path.is_file()), None)


def _hub_offline() -> bool:
    """Whether the Hub is out of reach: offline mode (``HF_HUB_OFFLINE``, ``HF_DATASETS_OFFLINE``) or no connection
    (the quick probe of :func:`simcse_hub.data.hub_reachable`, which spares the client's retries)."""
    from simcse_hub.data import hub_reachable

    datasets_offline = os.environ.get("HF_DATASETS_OFFLINE", "").upper() in constants.ENV_VARS_TRUE_VALUES
    return datasets_offline or not hub_reachable()


def _load_from_hub(task: str, split: str, local_reason: str, hub: bool | str = True) -> dict[str, STSPairs]:
    """The MTEB copy of ``task`` on the Hub through ``datasets.load_dataset`` (cached), or a `TaskUnavailableError`
    saying why not."""
    repo = HUB_DATASETS[task]
    if hub is not True:
        raise TaskUnavailableError(f"{local_reason}; {hub or 'the Hub was not asked'}, so {repo} was not fetched")
    if task == "SICKRelatedness" and split == "dev":
        raise TaskUnavailableError(f"{local_reason}; the Hub copy {repo} has no dev (trial) split")
    if (repo, split) in _HUB_CACHE:  # fetched earlier in this process: no need of the network (and no probe)
        return _HUB_CACHE[(repo, split)]
    if _hub_offline():
        raise TaskUnavailableError(f"{local_reason}; the Hub cannot be reached (offline, or HF_HUB_OFFLINE), so the "
                                   f"Hub copy {repo} was not fetched", hub_unreachable=True)
    import datasets  # a core dependency, imported only when a task is fetched
    from huggingface_hub.errors import HTTPError

    try:
        dataset = datasets.load_dataset(repo, split=HUB_SPLITS[split])
    except (OSError, ValueError, HTTPError, datasets.exceptions.DatasetsError) as error:
        unreachable = isinstance(error, ConnectionError) or type(error).__module__.startswith(("httpx", "requests"))
        raise TaskUnavailableError(
            f"{local_reason}; could not fetch {repo} from the Hub ({type(error).__name__}: {error})", unreachable
        ) from error
    if task == "SICKRelatedness" and len(dataset) != 4927:
        logger.warning("%s '%s' holds %d pairs; SentEval's SICK-R test split has 4,927, so this score is not directly "
                       "comparable with published SentEval figures.", repo, HUB_SPLITS[split], len(dataset))
    names = {name.lower(): name for name in STS_TASKS[task][1] or ()}
    column = next((column for column in ("dataset", "subset", "source") if column in dataset.column_names
                   and {str(value).lower() for value in dataset.unique(column)} <= set(names)), None)
    frame = dataset.to_pandas()  # grouped by sub-task when a column says which row belongs to which
    groups = frame[column].astype(str).str.lower().map(names) if column else np.full(len(frame), task)
    source = f"hf://datasets/{repo}"
    _HUB_CACHE[(repo, split)] = {name: _pairs(rows["sentence1"], rows["sentence2"], rows["score"], source)
                                 for name, rows in frame.groupby(groups, sort=False)}
    return _HUB_CACHE[(repo, split)]


def load_sts_task(task: str, data_dir: str | os.PathLike | None = None, split: str = "test",
                  hub: bool | str = True) -> dict[str, STSPairs]:
    r"""The pairs of one STS task: ``{sub-task name: STSPairs}`` (one entry named after the task for STS-B/SICK-R).

    Args:
        task (`str`): a SentEval task name (``STS12`` ... ``STS16``, ``STSBenchmark``, ``SICKRelatedness``).
        data_dir (`str` or `os.PathLike`, *optional*): the local data folder; `None` means only the Hub.
        split (`str`, *optional*, defaults to `"test"`): ``"test"`` or ``"dev"`` (STS12-16 have only ``"test"``).
        hub (`bool` or `str`, *optional*, defaults to `True`): fetch the MTEB copy from the Hub when the task is not
            on disk (and not offline); `False`, or a string giving the reason, forbids it.

    Raises:
        TaskUnavailableError: the task is not on disk and cannot be fetched (offline, no such split, ...).
        FileNotFoundError: a year's folder exists but lacks one of its sub-task files (the message names it).
        STSDataError: a malformed file.

    >>> load_sts_task("STSBenchmark", "../shared/data", split="dev")["STSBenchmark"].scores.shape  # doctest: +SKIP
    (1500,)
    """
    task = canonical_task(task)
    _check_choice("split", split, SPLITS)
    folder, subtasks = STS_TASKS[task]
    if subtasks and split != "test":
        raise TaskUnavailableError(
            f"{task} has no {split} split (SentEval scores STS12-16 on all their pairs); use split='test'"
        )
    if data_dir is None:
        reason = "no local data directory (pass data_dir / --data-dir or set SIMCSE_DATA_DIR)"
        return _load_from_hub(task, split, reason, hub)
    base, score_range = Path(data_dir) / folder, SCORE_RANGES.get(folder, DEFAULT_SCORE_RANGE)
    if subtasks and base.is_dir():
        paths = {name: _find_file(base / name) for name in subtasks}
        for name, path in paths.items():
            if path is None:
                raise FileNotFoundError(
                    f"{base / name}.tsv.gz: missing sub-task file of {task} (its folder {base} exists; SentEval's "
                    f"{task} has the sub-tasks {list(subtasks)}, each a .tsv or .tsv.gz file)."
                )
        return {name: _load_sts_file(path, score_range) for name, path in paths.items()}
    path = None if subtasks else _find_file(base / SPLIT_FILES[folder][split])
    if path is not None:
        return {task: _load_sts_file(path, score_range)}
    wanted = f"{folder}/<sub-task>.tsv.gz" if subtasks else f"{folder}/{SPLIT_FILES[folder][split]}.tsv.gz"
    return _load_from_hub(task, split, f"{wanted} not found in {data_dir}", hub)


# ---------------------------------------------------------------------------------------------------- measures


def as_matrix(embeddings: Any, name: str, dtype: Any = np.float64) -> np.ndarray:
    """A numpy ``(n, dim)`` copy of ``embeddings`` (array, torch tensor or nested lists) in ``dtype``; a `ValueError`
    naming ``name`` for another shape. The one conversion of evaluation and post-processing."""
    if hasattr(embeddings, "detach"):  # torch.Tensor, without importing torch here
        embeddings = embeddings.detach().cpu()
        embeddings = (embeddings.float() if np.dtype(dtype) == np.float32 else embeddings.double()).numpy()
    array = np.asarray(embeddings, dtype=dtype)
    if array.ndim != 2:
        raise ValueError(f"{name}: embeddings must have shape (n, dim); got shape {array.shape}.")
    return array


def embed(encode_fn: EncodeFn, sentences: Sequence[str]) -> np.ndarray:
    r"""``encode_fn(sentences)`` as a float32 ``(len(sentences), dim)`` array, its shape checked. ``encode_fn`` gets
    every sentence at once and batches them itself (``SimCSE.encode`` does, longest first by tokens).

    >>> embed(lambda batch: np.ones((len(batch), 3)), ["a", "b c"]).shape
    (2, 3)
    """
    if not sentences:
        raise ValueError("embed: no sentences to encode.")
    embeddings = as_matrix(encode_fn(list(sentences)), "encode_fn", np.float32)
    if len(embeddings) != len(sentences):
        raise ValueError(f"encode_fn returned shape {embeddings.shape} for {len(sentences)} sentences; expected "
                         f"({len(sentences)}, dim).")
    return embeddings


def memoized(encode_fn: EncodeFn) -> EncodeFn:
    """``encode_fn`` that encodes each distinct sentence once over all its calls (the STS-B dev sentences serve both
    the Spearman correlation and alignment / uniformity). An ``encode_fn`` that is memoized already is returned as
    it is (one cache, not one per layer that wraps it)."""
    if getattr(encode_fn, "memoized", False):
        return encode_fn
    cache: dict[str, np.ndarray] = {}

    def encode(sentences: list[str]) -> np.ndarray:
        todo = [s for s in dict.fromkeys(sentences) if s not in cache]
        if todo:
            cache.update(zip(todo, embed(encode_fn, todo)))
        return np.stack([cache[s] for s in sentences])

    encode.memoized = True
    return encode


def _unit(x: Any, name: str) -> np.ndarray:
    x = as_matrix(x, name)  # (n, dim) float64
    return x / np.clip(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12, None)


def spearman(predictions: Any, gold: Any) -> float:
    """Spearman's rank correlation x100 (``scipy.stats.spearmanr``, ties averaged); NaN for a constant input.

    >>> spearman([0.1, 0.5, 0.3], [1.0, 4.0, 3.0])
    100.0
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConstantInputWarning)  # constant gold scores are warned about with their file
        result = spearmanr(np.asarray(predictions, dtype=np.float64), np.asarray(gold, dtype=np.float64))
    return float(result.statistic) * 100


def alignment(x: Any, y: Any, alpha: float = 2.0) -> float:
    r"""Wang & Isola's alignment, ``mean_i ||f(x_i) - f(y_i)||^alpha`` on L2-normalised rows (lower is better).

    >>> round(alignment(np.array([[1.0, 0.0]]), np.array([[0.0, 2.0]])), 6)
    2.0
    """
    difference = _unit(x, "alignment") - _unit(y, "alignment")  # (n, dim)
    return float(np.mean(np.linalg.norm(difference, axis=1) ** alpha))


def mean_cosine(x: Any) -> float:
    r"""The mean cosine similarity of all distinct pairs of rows, ``(|sum_i u_i|^2 - n) / (n (n - 1))`` for the unit
    vectors ``u_i``: how anisotropic the embeddings are (near 1 when they crowd in a narrow cone, so that every pair
    looks similar; near 0 when they spread over the sphere).

    >>> round(mean_cosine(np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])), 6)
    0.471405
    """
    u = _unit(x, "mean_cosine")  # (n, dim)
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
    x = _unit(x, "uniformity")  # (n, dim)
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
    per = {name: {"spearman": spearman(similarities[name], pairs.scores), "n_pairs": len(pairs)}
           for name, pairs in subsets.items()}
    if setting == "all":
        value = spearman(np.concatenate(list(similarities.values())),
                         np.concatenate([pairs.scores for pairs in subsets.values()]))
    else:
        value = float(np.average([entry["spearman"] for entry in per.values()],
                                 weights=[entry["n_pairs"] for entry in per.values()] if setting == "wmean" else None))
    return {"spearman": value, "n_pairs": n_pairs, "subtasks": per}


def evaluate_sts(encode_fn: EncodeFn, tasks: Sequence[str] | None = None, data_dir: str | os.PathLike | None = None,
                 setting: str = "all", split: str = "test", model_name: str | None = None) -> dict:
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
        "average", "missing": {task: reason}, "alignment": None, "uniformity": None, "mean_cosine": None,
        "whitening": None, "flow": None}``.

    >>> results = evaluate_sts(model.encode, tasks=["STSBenchmark"], split="dev")  # doctest: +SKIP
    >>> results["tasks"]["STSBenchmark"]["spearman"]  # doctest: +SKIP
    86.2...
    """
    _check_choice("setting", setting, SETTINGS)
    _check_choice("split", split, SPLITS)
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
    scored: dict[str, dict] = {}
    if sentences:
        embeddings = _unit(embed(encode_fn, sentences), "encode_fn")  # (n_sentences, dim)
        row = {sentence: i for i, sentence in enumerate(sentences)}
        for task, subsets in loaded.items():
            similarities = {name: np.einsum("ij,ij->i", embeddings[[row[s] for s in pairs.sentences1]],
                                            embeddings[[row[s] for s in pairs.sentences2]])  # (n_pairs,)
                            for name, pairs in subsets.items()}
            sources = sorted({pairs.source for pairs in subsets.values()})
            scored[task] = _aggregate(task, subsets, similarities, setting)
            scored[task]["source"] = sources[0] if len(sources) == 1 else os.path.dirname(sources[0])
    scores = [entry["spearman"] for entry in scored.values()]
    return {"model": model_name or getattr(encode_fn, "__qualname__", type(encode_fn).__name__), "setting": setting,
            "split": split, "tasks": scored, "average": float(np.mean(scores)) if scores else None, "missing": missing,
            "alignment": None, "uniformity": None, "mean_cosine": None, "whitening": None, "flow": None}


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
        subtasks = STS_TASKS[task][1]
        if task in loaded and subtasks and setting != "all" and set(loaded[task]) != set(subtasks):
            source = next(iter(loaded.pop(task).values())).source
            missing[task] = f"setting {setting!r} needs {task}'s sub-tasks, which {source} does not identify"
        if task in missing:  # the reports say why (missing_notes), once
            logger.debug("%s not evaluated: %s", task, missing[task])
    return loaded, missing


def evaluate_alignment_uniformity(encode_fn: EncodeFn, data_dir: str | os.PathLike | None = None, split: str = "dev",
                                  threshold: float = 4.0) -> dict[str, float]:
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
    {'alignment': 0.21..., 'uniformity': -2.3..., 'mean_cosine': 0.1...}
    """
    data_dir = data_dir if data_dir is not None else default_data_dir()
    pairs = load_sts_task("STSBenchmark", data_dir, split)["STSBenchmark"]
    positive = np.flatnonzero(pairs.scores > threshold)
    if positive.size == 0:
        raise ValueError(f"{pairs.source}: no pair has a gold score above {threshold}, so alignment is undefined.")
    sentences = list(dict.fromkeys(pairs.sentences1 + pairs.sentences2))
    embeddings = embed(encode_fn, sentences)  # (n_sentences, dim)
    row = {sentence: i for i, sentence in enumerate(sentences)}
    x = embeddings[[row[pairs.sentences1[i]] for i in positive]]  # (n_positive, dim)
    y = embeddings[[row[pairs.sentences2[i]] for i in positive]]  # (n_positive, dim)
    return {"alignment": alignment(x, y), "uniformity": uniformity(embeddings), "mean_cosine": mean_cosine(embeddings)}


def evaluate_model(encode_fn: EncodeFn, model_name: str, tasks: Sequence[str] | None = None,
                   data_dir: str | os.PathLike | None = None, setting: str = "all", split: str = "test",
                   alignment_uniformity: bool = True) -> dict:
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


# ---------------------------------------------------------------------------------------------------- reports


def cell(value: float | None, digits: int = 2) -> str:
    """A number as a table shows it: ``digits`` decimals, a dash for a missing or undefined (NaN) value."""
    return "–" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A Markdown table, its first column left-aligned and the others (numbers) right-aligned."""
    # ours: pandas' DataFrame.to_markdown needs tabulate, which is not a dependency
    lines = ["| " + " | ".join(header) + " |", "|:--|" + "--:|" * (len(header) - 1)]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows])


def _notes(run: dict, prefix: str = "") -> list[str]:
    """What a result says beside its STS scores: the space measures and the post-processing."""
    notes = [f"{prefix}alignment {run['alignment']:.4f}, uniformity {run['uniformity']:.4f}"
             + (f", mean cosine {run['mean_cosine']:.4f}" if run.get("mean_cosine") is not None else "")
             + " (STS-B dev, normalised embeddings; lower is better)."] if run.get("alignment") is not None else []
    if run.get("whitening"):
        corpus, k = run["whitening"]["corpus"], run["whitening"]["k"]
        notes.append(f"{prefix}BERT-whitening fitted on `{corpus}` ({f'k={k}' if k else 'all dimensions'}).")
    if run.get("flow"):
        notes.append(f"{prefix}BERT-flow fitted on `{run['flow']['corpus']}`.")
    return notes


def missing_notes(results: dict | Sequence[dict]) -> list[str]:
    """Why tasks were not scored, one line per task and reason over all the results (several models, or a model with
    and without a post-processing, usually miss the same tasks for the same reason: said once)."""
    runs = [results] if isinstance(results, dict) else results
    return list(dict.fromkeys(f"{DISPLAY_NAMES.get(task, task)} not evaluated: {reason}."
                              for run in runs for task, reason in run.get("missing", {}).items()))


def results_to_markdown(results: dict | Sequence[dict], reasons: bool = True) -> str:
    r"""The Markdown table of one or several results of [`evaluate_sts`] (one row per model), as in the SimCSE paper,
    with notes: the setting, alignment and uniformity, the post-processing and (with ``reasons``) why tasks were not
    scored ([`missing_notes`]).

    >>> print(results_to_markdown(results))  # doctest: +SKIP
    | Model | STS-B | SICK-R | Avg. |
    ...
    """
    runs = [results] if isinstance(results, dict) else list(results)
    present = {task for run in runs for task in list(run["tasks"]) + list(run.get("missing", {}))}
    columns = [task for task in STS_TASKS if task in present]
    table = markdown_table(["Model", *(DISPLAY_NAMES.get(task, task) for task in columns), "Avg."],
                           [[str(run["model"]), *(cell(run["tasks"].get(task, {}).get("spearman")) for task in columns),
                             cell(run.get("average"))] for run in runs])
    notes = [(f"Spearman correlation x100 between cosine similarity and gold scores ({runs[0]['split']} split; "
              f"STS12-16 aggregated with SentEval's `{runs[0]['setting']}` setting; no trained regressor). Avg. is "
              "over the tasks scored.")]
    notes += [note for run in runs for note in _notes(run, f"{run['model']}: " if len(runs) > 1 else "")]
    notes += missing_notes(runs) if reasons else []
    return table + "\n\n" + "\n".join(f"* {note}" if len(notes) > 1 else note for note in notes) + "\n"


def format_results_table(results: dict, reasons: bool = True) -> str:
    r"""The console table of one result of [`evaluate_sts`]: a Markdown table of the tasks (sub-tasks indented) and
    their average, then the notes of [`results_to_markdown`] (why tasks were not scored only with ``reasons``).

    >>> print(format_results_table(results))  # doctest: +SKIP
    """
    rows = []
    for task, entry in results["tasks"].items():
        rows.append([DISPLAY_NAMES.get(task, task), cell(entry["spearman"]), f"{entry['n_pairs']:,}"])
        rows += [[f"  {name}", cell(sub["spearman"]), f"{sub['n_pairs']:,}"] for name, sub in
                 entry.get("subtasks", {}).items()]
    scored, missing = len(results["tasks"]), len(results.get("missing", {}))
    rows.append([f"Average ({scored} of {scored + missing} tasks)" if missing else "Average", cell(results["average"]),
                 ""])
    title = f"{results['model']} (split {results['split']}, setting {results['setting']})"
    return "\n".join([title, "", markdown_table(["Task", "Spearman", "Pairs"], rows), "", *_notes(results),
                      *(missing_notes(results) if reasons else [])])


def save_results(results: dict | Sequence[dict], path: str | os.PathLike) -> Path:
    """Write results as JSON (NaN written as ``null``), creating the folder.

    >>> save_results(results, "results.json")  # doctest: +SKIP
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    plain = json.loads(json.dumps(results), parse_constant=lambda name: None)  # NaN and infinities -> None
    path.write_text(json.dumps(plain, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return path


def plot_alignment_uniformity(points: Sequence[dict], out_png: str | os.PathLike, title: str | None = None) -> Path:
    r"""The alignment-uniformity plot of the SimCSE paper (Figure 2): x = uniformity, y = alignment (lower is better
    on both), one labelled point per checkpoint, arrows from each checkpoint to the next in the order given.

    Args:
        points (`Sequence[dict]`): ``{"label": str, "alignment": float, "uniformity": float}`` per checkpoint.
        out_png (`str` or `os.PathLike`): the PNG to write.
        title (`str`, *optional*): the figure title.

    >>> points = [{"label": "step 0", "alignment": 0.3, "uniformity": -1.5}]
    >>> plot_alignment_uniformity(points, "au.png")  # doctest: +SKIP
    """
    from matplotlib.figure import Figure

    if not points:
        raise ValueError("plot_alignment_uniformity needs at least one point.")
    for index, point in enumerate(points):
        if any(point.get(key) is None for key in ("label", "alignment", "uniformity")):
            raise ValueError(f"points[{index}] must have 'label', 'alignment' and 'uniformity' values; got {point!r}.")
    xs, ys = [float(p["uniformity"]) for p in points], [float(p["alignment"]) for p in points]
    figure = Figure(figsize=(5, 4), dpi=150)
    axes = figure.add_subplot()
    axes.scatter(xs, ys, c=range(len(points)), cmap="viridis", s=40, zorder=3)  # colour: checkpoint order
    for i in range(len(points) - 1):
        axes.annotate("", xy=(xs[i + 1], ys[i + 1]), xytext=(xs[i], ys[i]),
                      arrowprops={"arrowstyle": "->", "color": "0.4", "lw": 1.0, "shrinkA": 5, "shrinkB": 5}, zorder=2)
    for x, y, point in zip(xs, ys, points):
        axes.annotate(str(point["label"]), (x, y), textcoords="offset points", xytext=(5, 5), fontsize=8)
    axes.margins(0.15)  # room for the labels
    axes.set(xlabel=r"$\ell_{\mathrm{uniform}}$", ylabel=r"$\ell_{\mathrm{align}}$",
             title=title or "Alignment vs. uniformity (lower is better)")
    axes.grid(True, alpha=0.3)
    figure.tight_layout()
    out_png = Path(out_png)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out_png, format="png")
    return out_png


__all__ = ["DISPLAY_NAMES", "HUB_DATASETS", "SETTINGS", "SPLITS", "STS_TASKS", "STSDataError", "STSPairs",
           "TaskUnavailableError", "alignment", "as_matrix", "canonical_task", "cell", "default_data_dir", "embed",
           "evaluate_alignment_uniformity", "evaluate_model", "evaluate_sts", "format_results_table", "load_sts_task",
           "markdown_table", "mean_cosine", "memoized", "missing_notes", "plot_alignment_uniformity", "read_sts_file",
           "results_to_markdown", "save_results", "spearman", "uniformity"]
