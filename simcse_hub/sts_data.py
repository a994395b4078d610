"""STS data: the SentEval task layout on disk, a strict reader of ``sentence1<TAB>sentence2<TAB>score`` files (cached),
and the Hub fallback (the public MTEB copies) for tasks absent locally.

Layout: ``<data_dir>/stsb/{train,dev,test}.tsv.gz``, ``<data_dir>/sickr/{train,trial,test}.tsv.gz`` (the SICK dev
split is ``trial``) and ``<data_dir>/sts12/<subtask>.tsv.gz`` ... ``sts16/`` with SentEval's sub-task names. Each
file has the header ``sentence1<TAB>sentence2<TAB>score`` and one pair per line, with no CSV quoting (.tsv or
.tsv.gz). A task absent locally is fetched from the Hub when online; offline, [`load_sts_task`] raises
[`TaskUnavailableError`] with the reason, which [`simcse_hub.evaluation.evaluate_sts`] reports under ``missing``.
Parsed files are cached by (path, modification time, size), so the training loop can evaluate every few steps
without re-reading them.
"""

from __future__ import annotations

import gzip
import logging
import math
import os
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

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
_ALIASES = {"STSB": "STSBenchmark", "STS-B": "STSBenchmark", "SICKR": "SICKRelatedness", "SICK-R": "SICKRelatedness"}
SETTINGS = ("all", "mean", "wmean")
SPLITS = ("test", "dev")
HEADER = ["sentence1", "sentence2", "score"]


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


# ---------------------------------------------------------------------------------------------------- reading

_FILE_CACHE: dict[tuple[str, int, int], STSPairs] = {}
_HUB_CACHE: dict[tuple[str, str], dict[str, STSPairs]] = {}


def _parse_sts_file(path: Path, score_range: tuple[float, float] | None = None) -> STSPairs:
    expected = "a header 'sentence1<TAB>sentence2<TAB>score', then one 'sentence1<TAB>sentence2<TAB>score' per line"
    try:
        raw = gzip.decompress(path.read_bytes()) if path.name.endswith(".gz") else path.read_bytes()
    except (gzip.BadGzipFile, EOFError, zlib.error) as error:
        raise STSDataError(f"{path}: not a valid gzip file ({error}); expected a .tsv or .tsv.gz file.") from error
    lines = raw.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    if not lines:
        raise STSDataError(f"{path}: the file is empty; expected {expected}.")
    sentences1, sentences2, scores = [], [], []
    outside: list[tuple[int, float]] = []  # (line, score) of gold scores outside the task's range
    for number, line in enumerate(lines, start=1):
        try:
            text = line.decode("utf-8").rstrip("\r")
        except UnicodeDecodeError as error:
            raise STSDataError(
                f"{path}, line {number}: byte {line[error.start:error.start + 1]!r} at column {error.start + 1} is not "
                "valid UTF-8; the file must be UTF-8 encoded."
            ) from error
        fields = text.split("\t")
        if number == 1:
            if [field.strip().lower() for field in fields] != HEADER:
                raise STSDataError(
                    f"{path}, line 1: expected the header 'sentence1<TAB>sentence2<TAB>score', got {text[:80]!r}."
                )
            continue
        if not text.strip():
            continue  # a blank line holds no pair
        if len(fields) != 3:
            raise STSDataError(
                f"{path}, line {number}: expected 3 tab-separated fields (sentence1, sentence2, score), found "
                f"{len(fields)}: {text[:80]!r}."
            )
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
        sentences1.append(fields[0])
        sentences2.append(fields[1])
        scores.append(score)
    if outside:
        (first, value), more = outside[0], len(outside) - 1
        logger.warning("%s, line %d: the gold score %g is outside the task's range %g-%g%s; the correlation is "
                       "computed all the same, but check the file.", path, first, value, *score_range,
                       f" (and {more} more line{'s' if more > 1 else ''})" if more else "")
    if not scores:
        raise STSDataError(f"{path}: no sentence pairs after the header; expected {expected}.")
    array = np.asarray(scores, dtype=np.float64)
    array.setflags(write=False)
    return STSPairs(tuple(sentences1), tuple(sentences2), array, str(path))


def _load_sts_file(path: str | os.PathLike, score_range: tuple[float, float] | None = None) -> STSPairs:
    """The parsed file, from the cache when the file (path, modification time, size) was read before; gold scores
    outside ``score_range`` are warned about (with the file and line) when it is first read."""
    path = Path(path)
    try:
        stat = path.stat()
    except FileNotFoundError:
        raise FileNotFoundError(
            f"{path}: no such STS data file (expected a sentence1<TAB>sentence2<TAB>score file with a header, "
            ".tsv or .tsv.gz)."
        ) from None
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
    lookup = {task.lower(): task for task in STS_TASKS} | {alias.lower(): task for alias, task in _ALIASES.items()}
    if str(name).lower() not in lookup:
        raise ValueError(f"unknown STS task {name!r}; expected one of {list(STS_TASKS)}.")
    return lookup[str(name).lower()]


def _find_file(stem: Path) -> Path | None:
    for suffix in (".tsv.gz", ".tsv"):
        if stem.with_name(stem.name + suffix).is_file():
            return stem.with_name(stem.name + suffix)
    return None


def _hub_offline() -> bool:
    """Whether the Hub is out of reach: offline mode (``HF_HUB_OFFLINE``, ``HF_DATASETS_OFFLINE``) or no connection
    (the quick probe of :func:`simcse_hub.loading.hub_reachable`, which spares the client's retries)."""
    from simcse_hub.loading import hub_reachable

    datasets_offline = os.environ.get("HF_DATASETS_OFFLINE", "").upper() in ("1", "ON", "YES", "TRUE")
    return datasets_offline or not hub_reachable()


def _load_from_hub(task: str, split: str, local_reason: str, hub: bool | str = True) -> dict[str, STSPairs]:
    """The MTEB copy of ``task`` on the Hub, grouped by sub-task when the copy says which row belongs to which."""
    repo = HUB_DATASETS[task]
    if hub is not True:
        raise TaskUnavailableError(f"{local_reason}; {hub or 'the Hub was not asked'}, so {repo} was not fetched")
    if _hub_offline():
        raise TaskUnavailableError(f"{local_reason}; the Hub cannot be reached (offline, or HF_HUB_OFFLINE), so the "
                                   f"Hub copy {repo} was not fetched", hub_unreachable=True)
    if task == "SICKRelatedness" and split == "dev":
        raise TaskUnavailableError(f"{local_reason}; the Hub copy {repo} has no dev (trial) split")
    if (repo, split) in _HUB_CACHE:
        return _HUB_CACHE[(repo, split)]
    try:
        import datasets
    except ImportError:
        raise TaskUnavailableError(f"{local_reason}; fetching {repo} needs `datasets` (pip install datasets)") from None
    errors: tuple[type[BaseException], ...] = (OSError, ValueError, datasets.exceptions.DatasetsError)
    try:
        import httpx

        errors += (httpx.HTTPError,)
    except ImportError:
        pass
    try:
        dataset = datasets.load_dataset(repo, split=HUB_SPLITS[split])
    except errors as error:
        unreachable = isinstance(error, ConnectionError) or type(error).__module__.startswith(("httpx", "requests"))
        raise TaskUnavailableError(
            f"{local_reason}; could not fetch {repo} from the Hub ({type(error).__name__}: {error})", unreachable
        ) from error
    subtasks = STS_TASKS[task][1] or ()
    names = {name.lower(): name for name in subtasks}
    group_column = next((column for column in ("dataset", "subset", "source") if column in dataset.column_names
                         and {str(v).lower() for v in dataset.unique(column)} <= set(names)), None)
    groups: dict[str, list[int]] = {}
    for index, value in enumerate(dataset[group_column] if group_column else [task] * len(dataset)):
        groups.setdefault(names.get(str(value).lower(), task), []).append(index)
    rows = dataset.to_dict()
    loaded = {}
    for name, indices in groups.items():
        scores = np.asarray([float(rows["score"][i]) for i in indices], dtype=np.float64)
        scores.setflags(write=False)
        loaded[name] = STSPairs(tuple(rows["sentence1"][i] for i in indices),
                                tuple(rows["sentence2"][i] for i in indices), scores, f"hf://datasets/{repo}")
    if task == "SICKRelatedness" and len(dataset) != 4927:
        logger.warning("%s '%s' holds %d pairs; SentEval's SICK-R test split has 4,927, so this score is not directly "
                       "comparable with published SentEval figures.", repo, HUB_SPLITS[split], len(dataset))
    _HUB_CACHE[(repo, split)] = loaded
    return loaded


def load_sts_task(
    task: str, data_dir: str | os.PathLike | None = None, split: str = "test", hub: bool | str = True
) -> dict[str, STSPairs]:
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
    if split not in SPLITS:
        raise ValueError(f"split must be one of {list(SPLITS)}; got {split!r}.")
    folder, subtasks = STS_TASKS[task]
    if subtasks and split != "test":
        raise TaskUnavailableError(
            f"{task} has no {split} split (SentEval scores STS12-16 on all their pairs); use split='test'"
        )
    if data_dir is None:
        local_reason = "no local data directory (pass data_dir / --data-dir or set SIMCSE_DATA_DIR)"
    else:
        base = Path(data_dir) / folder
        if subtasks and base.is_dir():
            loaded = {}
            for name in subtasks:
                path = _find_file(base / name)
                if path is None:
                    raise FileNotFoundError(
                        f"{base / name}.tsv.gz: missing sub-task file of {task} (its folder {base} exists; SentEval's "
                        f"{task} has the sub-tasks {list(subtasks)}, each a .tsv or .tsv.gz file)."
                    )
                loaded[name] = _load_sts_file(path, SCORE_RANGES.get(folder, DEFAULT_SCORE_RANGE))
            return loaded
        if not subtasks:
            path = _find_file(base / SPLIT_FILES[folder][split])
            if path is not None:
                return {task: _load_sts_file(path, SCORE_RANGES.get(folder, DEFAULT_SCORE_RANGE))}
        wanted = f"{folder}/<sub-task>.tsv.gz" if subtasks else f"{folder}/{SPLIT_FILES[folder][split]}.tsv.gz"
        local_reason = f"{wanted} not found in {data_dir}"
    return _load_from_hub(task, split, local_reason, hub)


__all__ = [
    "DISPLAY_NAMES",
    "HUB_DATASETS",
    "SETTINGS",
    "SPLITS",
    "STS_TASKS",
    "STSDataError",
    "STSPairs",
    "TaskUnavailableError",
    "canonical_task",
    "default_data_dir",
    "load_sts_task",
    "read_sts_file",
]
