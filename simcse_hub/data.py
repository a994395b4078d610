"""From the former ``sources`` module:

Several training sources in one run, every batch drawn from one of them.

In-batch negatives are only comparable within a source: a batch of NLI triplets and a batch of Wikipedia sentences
ask different questions of the encoder, and mixing them in one batch lets the model tell negatives apart by their
source instead of their meaning. :class:`SourceBatchSampler` therefore forms each batch from one source, and decides
which source comes next by a sampling rule, as sentence-transformers' multi-dataset batch samplers do:

* ``proportional``: every batch of every source once per epoch, in a random order, so each source is seen in
  proportion to its (weighted) size;
* ``round_robin``: one batch of each source in turn, until the source with the fewest batches is used up.

A source's weight scales its number of examples per epoch (2.0: each example twice, in two different batches; 0.5:
a random half). Under several processes, each global batch is split into one local batch per process, so at every
step all processes hold batches of the same source and the negatives gathered across them stay comparable.

From the former ``data`` module:

Training data for SimCSE: the readers of files and Hub datasets (tokenizing and batching live in
:mod:`simcse_hub.batching`).

Sources (``read_examples`` / ``load_hub_examples``):

* ``.txt``: one sentence per line, unsupervised SimCSE (each sentence is its own positive under a second dropout mask).
* ``.csv`` (standard CSV quoting, as the original ``nli_for_simcse.csv``), ``.tsv`` (split on tabs only: quotes are
  literal, as in ``../shared/data``) and ``.jsonl`` (one JSON object per line), with a header / keys naming 1, 2 or 3
  columns: one sentence, (anchor, positive) pairs, or (anchor, positive, hard negative) triplets.
* Any of these gzip'd (``.gz``).
* A Hub dataset (``datasets.load_dataset(name, split=...)``), e.g. ``princeton-nlp/datasets-for-simcse`` with
  ``data_files="nli_for_simcse.csv"``, when the Hub is reachable.

Bad input raises :class:`DataError` naming the file and line: a missing or empty file, undecodable bytes, a row
with the wrong number of columns, invalid JSON. An example with an empty sentence is skipped and counted (one
warning gives the count and the first line): a blank line in a large corpus should not stop a run.
"""

from __future__ import annotations

import csv
import gzip
import json
import logging
import os
import socket
import urllib.parse
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

SAMPLING = ("proportional", "round_robin")


class SourceBatchSampler(torch.utils.data.Sampler):
    """Batches of indices into the concatenation of several sources (``torch.utils.data.ConcatDataset`` order), each
    batch from one source; the same batches for the same seed and epoch, so an interrupted run resumes exactly.

    Args:
        sizes (`Sequence[int]`): the number of examples of each source.
        batch_size (`int`): examples per local batch (per process).
        num_processes (`int`, *optional*, defaults to 1): consecutive runs of this many local batches come from the
            same global batch (Accelerate gives process ``k`` the ``k``-th of each run).
        weights (`Sequence[float]`, *optional*): a positive weight per source (default: 1 each).
        sampling (`str`, *optional*, defaults to ``"proportional"``): ``"proportional"`` or ``"round_robin"``.
        seed (`int`, *optional*, defaults to 0): seeds the batches and their order, with the epoch.

    >>> sampler = SourceBatchSampler([6, 4], batch_size=2, seed=0)
    >>> len(sampler), [sampler.source_of(batch) for batch in sampler].count(1)
    (5, 2)
    """

    def __init__(self, sizes: Sequence[int], batch_size: int, num_processes: int = 1,
                 weights: Sequence[float] | None = None, sampling: str = "proportional", seed: int = 0) -> None:
        weights = [1.0] * len(sizes) if weights is None else [float(weight) for weight in weights]
        if len(weights) != len(sizes):
            raise ValueError(f"{len(weights)} source weights for {len(sizes)} sources; give one weight per source.")
        if not all(np.isfinite(weight) and weight > 0 for weight in weights):
            raise ValueError(f"source weights must be positive numbers; got {weights}.")
        if sampling not in SAMPLING:
            raise ValueError(f"sampling={sampling!r}: expected one of {list(SAMPLING)}.")
        if batch_size < 1 or num_processes < 1:
            raise ValueError(f"batch_size ({batch_size}) and num_processes ({num_processes}) must be >= 1.")
        self.sizes, self.weights, self.sampling = [int(size) for size in sizes], weights, sampling
        self.batch_size, self.num_processes, self.seed, self.epoch = batch_size, num_processes, seed, 0
        self.sampler = self  # Accelerate's set_epoch reaches a batch sampler's ``sampler`` under every wrapper
        self.offsets = np.concatenate([[0], np.cumsum(self.sizes)])[:-1]  # (num_sources,)
        empty = [index for index, count in enumerate(self.batches_per_source()) if count == 0]
        if empty:
            raise ValueError(f"source {empty[0] + 1} gives no batch of {batch_size * num_processes} examples (it has "
                             f"{self.sizes[empty[0]]} examples, weight {self.weights[empty[0]]:g}); give it more "
                             "examples or a larger weight, or leave it out.")

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _passes(self, source: int) -> list[int]:
        """The examples of each pass over ``source`` in an epoch: a weight of 2.5 is two whole passes and half a
        pass, each in a fresh order (batches never straddle two passes, so no batch holds an example twice)."""
        whole, fraction = divmod(self.weights[source], 1.0)
        passes = [self.sizes[source]] * int(whole)
        return passes + ([round(self.sizes[source] * fraction)] if round(self.sizes[source] * fraction) else [])

    def _batches_in(self, examples: int) -> int:
        """Global batches (``batch_size * num_processes`` examples) in a pass of ``examples``; the last partial one is
        kept only on one process and when it holds at least 2 examples (one example has no negative)."""
        full = self.batch_size * self.num_processes
        return examples // full + int(self.num_processes == 1 and examples % full >= 2)

    def batches_per_source(self) -> list[int]:
        """The global batches of each source per epoch."""
        return [sum(self._batches_in(examples) for examples in self._passes(source))
                for source in range(len(self.sizes))]

    def _global_batches(self, source: int, generator: torch.Generator) -> list[np.ndarray]:
        """This epoch's global batches of ``source``, as indices into the concatenation."""
        full, batches = self.batch_size * self.num_processes, []
        for examples in self._passes(source):
            order = torch.randperm(self.sizes[source], generator=generator)[:examples].numpy() + self.offsets[source]
            batches += [order[start:start + full] for start in range(0, self._batches_in(examples) * full, full)]
        return batches

    def __iter__(self) -> Iterator[list[int]]:
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        batches = [self._global_batches(source, generator) for source in range(len(self.sizes))]
        if self.sampling == "round_robin":
            rounds = min(len(source_batches) for source_batches in batches)
            order = [(source, index) for index in range(rounds) for source in range(len(batches))]
        else:
            order = [(source, index) for source, source_batches in enumerate(batches)
                     for index in range(len(source_batches))]
            order = [order[i] for i in torch.randperm(len(order), generator=generator).tolist()]
        for source, index in order:
            batch = batches[source][index]
            for start in range(0, len(batch), self.batch_size):  # one local batch per process
                yield batch[start:start + self.batch_size].tolist()

    def __len__(self) -> int:
        counts = self.batches_per_source()
        rounds = min(counts) * len(counts) if self.sampling == "round_robin" else sum(counts)
        return rounds * self.num_processes

    def source_of(self, batch: Sequence[int]) -> int:
        """The source that ``batch`` (global indices) comes from."""
        return int(np.searchsorted(self.offsets, batch[0], side="right") - 1)

logger = logging.getLogger(__name__)

FORMATS = {".txt": "txt", ".csv": "csv", ".tsv": "tsv", ".jsonl": "jsonl", ".json": "jsonl"}


class DataError(ValueError):
    """Training data that cannot be read; the message names the file, the line and what was expected."""


@dataclass
class Examples:
    """Text examples read from one source.

    Args:
        rows (`list[tuple[str, ...]]`): one tuple per example: ``(sentence,)``, ``(anchor, positive)`` or
            ``(anchor, positive, hard_negative)``.
        columns (`list[str]`): the column names (``["text"]`` for a text file).
        source (`str`): the file path or Hub dataset id.
        skipped (`int`): examples skipped because a sentence was empty.
    """

    rows: list[tuple[str, ...]]
    columns: list[str]
    source: str
    skipped: int = 0

    @property
    def supervised(self) -> bool:
        """`bool`: whether the examples carry their own positives (2 or 3 columns)."""
        return len(self.columns) > 1


def data_format(path: str | os.PathLike) -> str:
    """The reader for ``path`` from its suffix (``.gz`` removed): ``txt``, ``csv``, ``tsv`` or ``jsonl``."""
    suffix = Path(Path(path).name.lower().removesuffix(".gz")).suffix
    if suffix not in FORMATS:
        raise DataError(
            f"{path}: unknown training file type {suffix or '(no suffix)'!r}; expected one of "
            f"{sorted(FORMATS)} (optionally gzip'd, ending in .gz)."
        )
    return FORMATS[suffix]


def resolve_train_file(train_file: str) -> Path:
    """The path of ``train_file``; ``package:data/NAME`` names a file shipped in simcse_hub (used by presets).

    >>> resolve_train_file("package:data/quickstart_sentences.txt").name
    'quickstart_sentences.txt'
    """
    if train_file.startswith("package:"):
        from importlib import resources

        return Path(str(resources.files("simcse_hub").joinpath(train_file[len("package:"):])))
    return Path(train_file)


def _lines(path: Path) -> Iterator[tuple[int, str]]:
    """Yield ``(line number, text)`` for each line of a UTF-8 file (gzip'd when it ends in ``.gz``)."""
    if not path.exists():
        raise DataError(f"{path}: no such file (check train_file).")
    if path.is_dir():
        raise DataError(f"{path}: is a directory; train_file must be a .txt/.csv/.tsv/.jsonl file.")
    number = 0
    with gzip.open(path, "rb") if path.name.lower().endswith(".gz") else path.open("rb") as raw:
        try:
            for number, line in enumerate(raw, start=1):
                try:
                    text = line.decode("utf-8")
                except UnicodeDecodeError as error:
                    raise DataError(
                        f"{path}, line {number}: invalid UTF-8 (byte 0x{line[error.start]:02x} at byte "
                        f"{error.start + 1} of the line); save the file as UTF-8."
                    ) from None
                yield number, text.rstrip("\r\n")
        except (gzip.BadGzipFile, EOFError) as error:
            raise DataError(
                f"{path}, line {number + 1}: not a complete gzip file ({error}); gzip it again, or drop the .gz suffix."
            ) from None


def _select(header: Sequence[str], columns: Sequence[str] | None, where: str) -> list[int]:
    """Indices of ``columns`` in ``header`` (all of the header when ``columns`` is None)."""
    if columns is None:
        if not 1 <= len(header) <= 3:
            raise DataError(
                f"{where}: {len(header)} columns {list(header)}; SimCSE takes 1 (sentence), 2 (anchor, positive) or 3 "
                "(anchor, positive, hard negative). Set columns=[...] to choose them."
            )
        return list(range(len(header)))
    missing = [name for name in columns if name not in header]
    if missing:
        raise DataError(f"{where}: no column named {missing} (the header has {list(header)}); fix columns=[...].")
    return [list(header).index(name) for name in columns]


def read_examples(
    path: str | os.PathLike,
    columns: Sequence[str] | None = None,
    max_examples: int | None = None,
) -> Examples:
    """Read training examples from a local file.

    Args:
        path (`str` or `os.PathLike`): a ``.txt``, ``.csv``, ``.tsv`` or ``.jsonl`` file, optionally ``.gz``.
        columns (`Sequence[str]`, *optional*): 1-3 column names (header of a CSV/TSV, keys of a JSONL object) to
            read, in the order sentence / anchor, positive, hard negative. Defaults to every column, when there are
            1 to 3. Ignored for ``.txt``.
        max_examples (`int`, *optional*): stop after this many examples (the first ones of the file).

    Returns:
        [`Examples`]

    >>> examples = read_examples("nli_for_simcse.csv")  # doctest: +SKIP
    >>> examples.columns, examples.rows[0]  # doctest: +SKIP
    (['sent0', 'sent1', 'hard_neg'], ('A man ...', 'A person ...', 'Nobody ...'))
    """
    path = Path(path)
    kind = data_format(path)
    lines = _lines(path)
    rows: list[tuple[str, ...]] = []
    skipped: list[int] = []  # line numbers of examples with an empty sentence
    if kind == "txt":
        names = ["text"]
        records = ((number, [text]) for number, text in lines)
    elif kind == "jsonl":
        names, records = _jsonl_records(path, lines, columns)
    else:
        names, records = _delimited_records(path, lines, kind, columns)
    for number, fields in records:
        fields = [field.strip() for field in fields]
        if not all(fields):
            skipped.append(number)
            continue
        rows.append(tuple(fields))
        if max_examples is not None and len(rows) >= max_examples:
            break
    if skipped:
        logger.warning(
            "%s: skipped %d example(s) with an empty sentence (first on line %d).", path, len(skipped), skipped[0]
        )
    if not rows:
        what = f"all {len(skipped)} examples have an empty sentence" if skipped else "the file is empty"
        raise DataError(f"{path}: {what}; expected {_expectation(kind)}.")
    return Examples(rows=rows, columns=list(names), source=str(path), skipped=len(skipped))


def _expectation(kind: str) -> str:
    return {
        "txt": "one sentence per line",
        "jsonl": "one JSON object per line, with 1-3 text fields",
        "csv": "a header line, then rows of 1-3 comma-separated (CSV-quoted) sentences",
        "tsv": "a header line, then rows of 1-3 tab-separated sentences",
    }[kind]


def _delimited_records(path: Path, lines: Iterator[tuple[int, str]], kind: str, columns: Sequence[str] | None):
    """The header names and an iterator of ``(line number, selected fields)`` of a CSV or TSV file."""
    if kind == "tsv":
        numbered = ((number, text.split("\t")) for number, text in lines if text.strip())
    else:
        numbered = _csv_rows(lines)
    try:
        header_line, header = next(numbered)
    except StopIteration:
        raise DataError(f"{path}: the file is empty; expected {_expectation(kind)}.") from None
    header = [name.strip() for name in header]
    indices = _select(header, columns, f"{path}, line {header_line} (header)")
    names = [header[i] for i in indices]

    def records() -> Iterator[tuple[int, list[str]]]:
        for number, fields in numbered:
            if len(fields) != len(header):
                separator = "tabs" if kind == "tsv" else "commas"
                raise DataError(
                    f"{path}, line {number}: {len(fields)} field(s) separated by {separator}, but the header "
                    f"(line {header_line}) has {len(header)}: {header}."
                )
            yield number, [fields[i] for i in indices]

    return names, records()


def _csv_rows(lines: Iterator[tuple[int, str]]) -> Iterator[tuple[int, list[str]]]:
    """CSV records (a quoted field may span lines) with the line each starts on; blank lines are passed over."""
    numbers: list[int] = []

    def texts() -> Iterator[str]:
        for number, text in lines:
            numbers.append(number)
            yield text + "\n"

    consumed = 0
    for fields in csv.reader(texts()):
        start, consumed = numbers[consumed], len(numbers)
        if any(field.strip() for field in fields):
            yield start, fields


def _jsonl_records(path: Path, lines: Iterator[tuple[int, str]], columns: Sequence[str] | None):
    """The key names and an iterator of ``(line number, selected fields)`` of a JSON-lines file."""
    names: list[str] | None = list(columns) if columns is not None else None

    def parse(number: int, text: str) -> dict:
        try:
            record = json.loads(text)
        except json.JSONDecodeError as error:
            raise DataError(f"{path}, line {number}: invalid JSON ({error.msg} at column {error.colno}).") from None
        if not isinstance(record, dict):
            raise DataError(
                f"{path}, line {number}: expected a JSON object such as "
                '{"sent0": "...", "sent1": "...", "hard_neg": "..."}; got ' + type(record).__name__ + "."
            )
        return record

    numbered = ((number, parse(number, text)) for number, text in lines if text.strip())
    try:
        first_number, first = next(numbered)
    except StopIteration:
        raise DataError(f"{path}: the file is empty; expected {_expectation('jsonl')}.") from None
    if names is None:
        names = [list(first)[i] for i in _select(list(first), None, f"{path}, line {first_number}")]

    def _fields(number: int, record: dict) -> list[str]:
        missing = [name for name in names if name not in record]
        if missing:
            raise DataError(f"{path}, line {number}: no key {missing} (keys: {list(record)}); fix columns=[...].")
        values = [record[name] for name in names]
        if not all(isinstance(value, str) for value in values):
            raise DataError(f"{path}, line {number}: the values of {names} must be strings; got {values!r:.200}.")
        return values

    def records() -> Iterator[tuple[int, list[str]]]:
        yield first_number, _fields(first_number, first)
        for number, record in numbered:
            yield number, _fields(number, record)

    return names, records()


def load_hub_examples(
    name: str,
    split: str = "train",
    config_name: str | None = None,
    data_files: str | Sequence[str] | None = None,
    columns: Sequence[str] | None = None,
    max_examples: int | None = None,
) -> Examples:
    """Read training examples from a Hugging Face dataset (Hub id, or a local dataset folder).

    Args:
        name (`str`): the dataset, e.g. ``princeton-nlp/datasets-for-simcse``.
        split (`str`, *optional*, defaults to `"train"`): the split.
        config_name (`str`, *optional*): the dataset configuration.
        data_files (`str` or `Sequence[str]`, *optional*): files inside the dataset repository, e.g.
            ``"nli_for_simcse.csv"`` or ``"wiki1m_for_simcse.txt"``.
        columns (`Sequence[str]`, *optional*): 1-3 column names; defaults to every column when there are 1 to 3.
        max_examples (`int`, *optional*): keep only the first examples.

    Returns:
        [`Examples`]

    >>> load_hub_examples("princeton-nlp/datasets-for-simcse", data_files="nli_for_simcse.csv")  # doctest: +SKIP
    """

    local = Path(name).exists()
    if not local and not hub_reachable():
        raise DataError(
            f"dataset_name={name!r}: the Hugging Face Hub cannot be reached here (HF_HUB_OFFLINE=1 or no network); "
            "download the data file and pass train_file=PATH instead."
        )
    try:
        import datasets
    except ImportError:
        raise DataError(f"dataset_name={name!r} needs the `datasets` library: pip install 'simcse-hub[datasets]'.") from None
    try:
        dataset = datasets.load_dataset(name, config_name, data_files=data_files, split=split)
    except (OSError, ValueError, datasets.exceptions.DatasetsError) as error:
        raise DataError(f"dataset_name={name!r} (split {split!r}, data_files {data_files!r}): {error}") from error
    if max_examples is not None:
        dataset = dataset.select(range(min(max_examples, len(dataset))))
    header = list(dataset.column_names)
    indices = _select(header, columns, f"dataset {name!r}")
    names = [header[i] for i in indices]
    rows, skipped = [], 0
    for record in dataset.select_columns(names):
        fields = tuple(str(record[column] or "").strip() for column in names)
        if all(fields):
            rows.append(fields)
        else:
            skipped += 1
    if skipped:
        logger.warning("dataset %s: skipped %d example(s) with an empty sentence.", name, skipped)
    if not rows:
        raise DataError(f"dataset {name!r} (split {split!r}) has no example with non-empty sentences.")
    return Examples(rows=rows, columns=names, source=name, skipped=skipped)


def hub_reachable(timeout: float = 3.0) -> bool:
    """Whether the Hub endpoint (``HF_ENDPOINT``) accepts a connection within ``timeout`` seconds and offline mode
    is off. A plain connection probe: the Hub client itself retries for tens of seconds before it gives up."""
    from huggingface_hub import constants

    if constants.is_offline_mode():
        return False
    url = urllib.parse.urlparse(os.environ.get("HF_ENDPOINT") or constants.ENDPOINT)
    try:
        socket.create_connection((url.hostname, url.port or (443 if url.scheme == "https" else 80)), timeout).close()
    except OSError:
        return False
    return True


__all__ = ['DataError', 'Examples', 'SAMPLING', 'SourceBatchSampler', 'data_format', 'hub_reachable', 'load_hub_examples', 'read_examples', 'resolve_train_file']
