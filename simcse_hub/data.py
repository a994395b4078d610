"""Training data: files and Hub datasets read into ``datasets`` (Arrow, memory-mapped, cached), the batches of a run.

Sources (:func:`read_examples` / :func:`load_hub_examples`):

* ``.txt``: one sentence per line, unsupervised SimCSE (each sentence is its own positive under a second dropout mask).
* ``.csv`` (standard CSV quoting, as the original ``nli_for_simcse.csv``), ``.tsv`` (split on tabs only: quotes are
  literal, as in ``../shared/data``) and ``.jsonl`` (one JSON object per line), with a header / keys naming 1, 2 or 3
  columns: one sentence, (anchor, positive) pairs, or (anchor, positive, hard negative) triplets. Any of them gzip'd.
* A Hub dataset (``datasets.load_dataset``), e.g. ``princeton-nlp/datasets-for-simcse`` with
  ``data_files="nli_for_simcse.csv"``, when the Hub is reachable.

A file is parsed once into an Arrow table (``datasets.Dataset.from_generator``, cached by path, size and
modification time), so a corpus of millions of sentences is memory-mapped rather than held as Python strings. Bad
input raises :class:`DataError` naming the file and line: a missing or empty file, undecodable bytes, a row with the
wrong number of columns, invalid JSON. An example with an empty sentence is skipped and counted (one warning gives
the count and the first line): a blank line in a large corpus should not stop a run.

Batches: :class:`SimCSECollator` tokenizes a batch and pads it to ``(batch, num_sent, seq_len)``. With several
sources, :class:`SourceBatchSampler` draws every batch from one of them: in-batch negatives are only comparable
within a source (a batch of NLI triplets and a batch of Wikipedia sentences ask different questions of the encoder).
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
from functools import reduce
from importlib import resources
from itertools import chain
from pathlib import Path
from typing import Any

import datasets
import numpy as np
import pyarrow.compute as pc
import torch

logger = logging.getLogger(__name__)

SAMPLING = ("proportional", "round_robin")
FORMATS = {".txt": "txt", ".csv": "csv", ".tsv": "tsv", ".jsonl": "jsonl", ".json": "jsonl"}
EXPECTED = {"txt": "one sentence per line", "jsonl": "one JSON object per line, with 1-3 text fields",
            "csv": "a header line, then rows of 1-3 comma-separated (CSV-quoted) sentences",
            "tsv": "a header line, then rows of 1-3 tab-separated sentences"}
LINE = "__line__"  # the column of each example's line number in its file


class DataError(ValueError):
    """Training data that cannot be read; the message names the file, the line and what was expected."""


@dataclass
class Examples:
    """The examples of one source.

    Args:
        dataset (`datasets.Dataset`): one string column per sentence of an example, named ``columns``.
        columns (`list[str]`): ``["text"]`` for a text file; else 1-3 names: sentence, or anchor, positive[, hard
            negative].
        source (`str`): the file path or Hub dataset id.
        skipped (`int`): examples skipped because a sentence was empty.
    """

    dataset: datasets.Dataset
    columns: list[str]
    source: str
    skipped: int = 0

    @property
    def supervised(self) -> bool:
        """`bool`: whether the examples carry their own positives (2 or 3 columns)."""
        return len(self.columns) > 1

    @property
    def rows(self) -> list[tuple[str, ...]]:
        """Every example as a tuple of stripped sentences (materialised: for small sources)."""
        return [tuple(text.strip() for text in row) for row in zip(*(self.dataset[name] for name in self.columns))]

    def __len__(self) -> int:
        return len(self.dataset)


def data_format(path: str | os.PathLike) -> str:
    """The reader for ``path`` from its suffix (``.gz`` removed): ``txt``, ``csv``, ``tsv`` or ``jsonl``."""
    suffix = Path(Path(path).name.lower().removesuffix(".gz")).suffix
    if suffix not in FORMATS:
        raise DataError(f"{path}: unknown training file type {suffix or '(no suffix)'!r}; expected one of "
                        f"{sorted(FORMATS)} (optionally gzip'd, ending in .gz).")
    return FORMATS[suffix]


def resolve_train_file(train_file: str) -> Path:
    """The path of ``train_file``; ``package:data/NAME`` names a file shipped in simcse_hub (used by presets).

    >>> resolve_train_file("package:data/quickstart_sentences.txt").name
    'quickstart_sentences.txt'
    """
    if train_file.startswith("package:"):
        return Path(str(resources.files("simcse_hub").joinpath(train_file[len("package:"):])))
    return Path(train_file)


# ---------------------------------------------------------------------------------------------------- files
# ours: datasets' csv/json/text builders pad a short row with nulls and name neither the line of a short row nor of
# bad UTF-8 (measured on datasets 5.2), so the parsing is ours and datasets stores what it yields.


def _lines(path: Path) -> Iterator[tuple[int, str]]:
    """``(line number, text)`` for each line of a UTF-8 file (gzip'd when it ends in ``.gz``)."""
    number = 0
    with gzip.open(path, "rb") if path.name.lower().endswith(".gz") else path.open("rb") as raw:
        try:
            for number, line in enumerate(raw, start=1):
                try:
                    yield number, line.decode("utf-8").rstrip("\r\n")
                except UnicodeDecodeError as error:
                    raise DataError(f"{path}, line {number}: invalid UTF-8 (byte 0x{line[error.start]:02x} at byte "
                                    f"{error.start + 1} of the line); save the file as UTF-8.") from None
        except (gzip.BadGzipFile, EOFError) as error:
            raise DataError(f"{path}, line {number + 1}: not a complete gzip file ({error}); gzip it again, or drop "
                            "the .gz suffix.") from None


def _select(header: Sequence[str], columns: Sequence[str] | None, where: str) -> list[int]:
    """Indices of ``columns`` in ``header`` (all of the header when ``columns`` is None)."""
    if columns is None:
        if not 1 <= len(header) <= 3:
            raise DataError(f"{where}: {len(header)} columns {list(header)}; SimCSE takes 1 (sentence), 2 (anchor, "
                            "positive) or 3 (anchor, positive, hard negative). Set columns=[...] to choose them.")
        return list(range(len(header)))
    missing = [name for name in columns if name not in header]
    if missing:
        raise DataError(f"{where}: no column named {missing} (the header has {list(header)}); fix columns=[...].")
    return [list(header).index(name) for name in columns]


def _records(path: Path, kind: str, columns: Sequence[str] | None) -> tuple[list[str], Iterator[tuple[int, list]]]:
    """The column names and an iterator of ``(line number, selected fields)`` of a file."""
    lines = _lines(path)
    if kind == "txt":
        return ["text"], ((number, [text]) for number, text in lines)
    if kind == "jsonl":
        numbered = ((number, _json(path, number, text)) for number, text in lines if text.strip())
    elif kind == "tsv":
        numbered = ((number, text.split("\t")) for number, text in lines if text.strip())
    else:
        numbered = _csv_rows(lines)
    try:
        first_line, first = next(numbered)
    except StopIteration:
        raise DataError(f"{path}: the file is empty; expected {EXPECTED[kind]}.") from None
    if kind == "jsonl":
        names = list(columns) if columns else [list(first)[i] for i in _select(list(first), None, f"{path}, line 1")]
        return names, ((n, _json_fields(path, n, record, names)) for n, record in chain([(first_line, first)],
                                                                                          numbered))
    header = [name.strip() for name in first]
    indices = _select(header, columns, f"{path}, line {first_line} (header)")

    def rows() -> Iterator[tuple[int, list]]:
        for number, fields in numbered:
            if len(fields) != len(header):
                separator = "tabs" if kind == "tsv" else "commas"
                raise DataError(f"{path}, line {number}: {len(fields)} field(s) separated by {separator}, but the "
                                f"header (line {first_line}) has {len(header)}: {header}.")
            yield number, [fields[i] for i in indices]

    return [header[i] for i in indices], rows()


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


def _json(path: Path, number: int, text: str) -> dict:
    try:
        record = json.loads(text)
    except json.JSONDecodeError as error:
        raise DataError(f"{path}, line {number}: invalid JSON ({error.msg} at column {error.colno}).") from None
    if not isinstance(record, dict):
        raise DataError(f'{path}, line {number}: expected a JSON object such as {{"sent0": "...", "sent1": "..."}}; '
                        f"got {type(record).__name__}.")
    return record


def _json_fields(path: Path, number: int, record: dict, names: list[str]) -> list[str]:
    missing = [name for name in names if name not in record]
    if missing:
        raise DataError(f"{path}, line {number}: no key {missing} (keys: {list(record)}); fix columns=[...].")
    values = [record[name] for name in names]
    if not all(isinstance(value, str) for value in values):
        raise DataError(f"{path}, line {number}: the values of {names} must be strings; got {values!r:.200}.")
    return values


def _generate(path: str, kind: str, columns: tuple[str, ...] | None, max_examples: int | None,
              stamp: tuple) -> Iterator:
    """The examples of a file for ``Dataset.from_generator`` (``stamp``, the file's size and modification time, is
    part of the cache key); empty examples too, so the count of skipped ones survives the cache."""
    names, records = _records(Path(path), kind, columns)
    kept = 0
    for number, fields in records:
        fields = [field.strip() for field in fields]
        yield {LINE: number, **dict(zip(names, fields))}
        kept += all(fields)
        if max_examples is not None and kept >= max_examples:
            return


def _checked_columns(path: Path, kind: str, columns: Sequence[str] | None) -> list[str]:
    """The column names of a file that exists and holds an example (:func:`_records`), else `DataError` saying
    which."""
    if not path.exists():
        raise DataError(f"{path}: no such file (check train_file).")
    if path.is_dir():
        raise DataError(f"{path}: is a directory; train_file must be a .txt/.csv/.tsv/.jsonl file.")
    names, records = _records(path, kind, columns)
    if next(records, None) is None:
        raise DataError(f"{path}: the file is empty; expected {EXPECTED[kind]}.")
    return names


def columns_of(path: str | os.PathLike) -> list[str]:
    """The columns :func:`read_examples` reads from a training file by default, from its header or first record
    only (nothing is stored)."""
    path = Path(path)
    return _checked_columns(path, data_format(path), None)


def read_examples(path: str | os.PathLike, columns: Sequence[str] | None = None,
                  max_examples: int | None = None) -> Examples:
    """Read training examples from a local file into a memory-mapped ``datasets.Dataset``.

    Args:
        path (`str` or `os.PathLike`): a ``.txt``, ``.csv``, ``.tsv`` or ``.jsonl`` file, optionally ``.gz``.
        columns (`Sequence[str]`, *optional*): 1-3 column names (header of a CSV/TSV, keys of a JSONL object) to
            read, in the order sentence / anchor, positive, hard negative. Defaults to every column, when there are
            1 to 3. Ignored for ``.txt``.
        max_examples (`int`, *optional*): stop after this many examples (the first ones of the file).

    >>> examples = read_examples("nli_for_simcse.csv")  # doctest: +SKIP
    >>> examples.columns, examples.rows[0]  # doctest: +SKIP
    (['sent0', 'sent1', 'hard_neg'], ('A man ...', 'A person ...', 'Nobody ...'))
    """
    path = Path(path)
    kind = data_format(path)
    columns = None if kind == "txt" or columns is None else tuple(columns)  # a list would be split into shards
    names = _checked_columns(path, kind, columns)  # the header and a first example, before anything is stored
    features = datasets.Features({LINE: datasets.Value("int64"), **{name: datasets.Value("string") for name in names}})
    stat = path.stat()
    try:
        dataset = datasets.Dataset.from_generator(
            _generate, features=features, gen_kwargs={"path": str(path.resolve()), "kind": kind, "columns": columns,
                                                      "max_examples": max_examples,
                                                      "stamp": (stat.st_size, stat.st_mtime_ns)})
    except datasets.exceptions.DatasetGenerationError as error:
        cause = error.__cause__
        raise (cause if isinstance(cause, DataError) else DataError(f"{path}: {cause or error}")) from None
    return _without_empty(dataset, names, str(path), f"expected {EXPECTED[kind]}")


def _without_empty(dataset: datasets.Dataset, names: list[str], source: str, expected: str) -> Examples:
    """The examples whose sentences are all non-empty (counted, with a warning naming the first skipped line)."""
    table = dataset.data.table
    empty = reduce(pc.or_, [pc.equal(pc.utf8_length(pc.utf8_trim_whitespace(pc.fill_null(table[name], ""))), 0)
                            for name in names])
    skipped = int(pc.sum(empty).as_py() or 0)
    where = ""
    if LINE in table.column_names and skipped:
        where = f" (first on line {pc.min(pc.filter(table[LINE], empty)).as_py()})"
    if skipped:
        logger.warning("%s: skipped %d example(s) with an empty sentence%s.", source, skipped, where)
    if skipped == len(dataset):
        what = f"all {skipped} examples have an empty sentence" if skipped else "the file is empty"
        raise DataError(f"{source}: {what}; {expected}.")
    if skipped:
        dataset = dataset.select(pc.indices_nonzero(pc.invert(empty)).to_numpy())
    return Examples(dataset.select_columns(names), list(names), source, skipped)


def load_hub_examples(name: str, split: str = "train", config_name: str | None = None,
                      data_files: str | Sequence[str] | None = None, columns: Sequence[str] | None = None,
                      max_examples: int | None = None) -> Examples:
    """Read training examples from a Hugging Face dataset (Hub id, or a local dataset folder).

    Args:
        name (`str`): the dataset, e.g. ``princeton-nlp/datasets-for-simcse``.
        split (`str`, *optional*, defaults to `"train"`): the split.
        config_name (`str`, *optional*): the dataset configuration.
        data_files (`str` or `Sequence[str]`, *optional*): files inside the dataset repository, e.g.
            ``"nli_for_simcse.csv"`` or ``"wiki1m_for_simcse.txt"``.
        columns (`Sequence[str]`, *optional*): 1-3 column names; defaults to every column when there are 1 to 3.
        max_examples (`int`, *optional*): keep only the first examples.

    >>> load_hub_examples("princeton-nlp/datasets-for-simcse", data_files="nli_for_simcse.csv")  # doctest: +SKIP
    """
    if not Path(name).exists() and not hub_reachable():
        raise DataError(f"dataset_name={name!r}: the Hugging Face Hub cannot be reached here (HF_HUB_OFFLINE=1 or no "
                        "network); download the data file and pass train_file=PATH instead.")
    try:
        dataset = datasets.load_dataset(name, config_name, data_files=data_files, split=split)
    except (OSError, ValueError, datasets.exceptions.DatasetsError) as error:
        raise DataError(f"dataset_name={name!r} (split {split!r}, data_files {data_files!r}): {error}") from error
    if max_examples is not None:
        dataset = dataset.select(range(min(max_examples, len(dataset))))
    names = [dataset.column_names[i] for i in _select(dataset.column_names, columns, f"dataset {name!r}")]
    return _without_empty(dataset.select_columns(names), names, f"dataset {name}",
                          f"split {split!r} has no example with non-empty sentences")


def write_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` through a temporary file in the same folder, renamed over ``path`` once complete."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        temporary.write_bytes(data)
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


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


# ---------------------------------------------------------------------------------------------------- batches


class SimCSECollator:
    """Tokenize a list of examples (dicts of sentences, as a ``datasets.Dataset`` gives them) into grouped tensors
    ``(batch, num_sent, seq_len)``, padded on the right to the longest sentence of the batch.

    One column (unsupervised) gives ``num_sent=2``: each sentence tokenized once and put twice, so the two copies
    differ only by dropout. Two or three columns give anchor, positive[, hard negative].

    Args:
        tokenizer (`PreTrainedTokenizerBase`): the encoder's tokenizer.
        max_seq_length (`int`, *optional*, defaults to 32): truncation length (SimCSE trains on 32 tokens).

    >>> batch = SimCSECollator(tokenizer)([{"text": "A man plays."}, {"text": "A dog."}])  # doctest: +SKIP
    >>> batch["input_ids"].shape  # doctest: +SKIP
    torch.Size([2, 2, 5])
    """

    def __init__(self, tokenizer: Any, max_seq_length: int = 32) -> None:
        self.tokenizer, self.max_seq_length = tokenizer, max_seq_length

    def __call__(self, examples: Sequence[dict[str, str]]) -> dict[str, torch.Tensor]:
        groups = [[text.strip() for text in example.values()] for example in examples]
        num_sent = len(groups[0])
        encoded = self.tokenizer([text for group in groups for text in group], truncation=True, padding=True,
                                 max_length=self.max_seq_length, padding_side="right", return_tensors="pt")
        batch = {key: value.view(len(groups), num_sent, -1) for key, value in encoded.items()}
        if num_sent == 1:  # unsupervised: the same ids twice
            batch = {key: value.expand(-1, 2, -1).contiguous() for key, value in batch.items()}
        return batch  # (batch, num_sent, seq_len) each


class SourceBatchSampler(torch.utils.data.Sampler):
    """Batches of indices into the concatenation of several sources (``torch.utils.data.ConcatDataset`` order), each
    batch from one source; the same batches for the same seed and epoch, so an interrupted run resumes exactly.

    ``proportional``: every batch of every source once per epoch, in a random order; ``round_robin``: one batch of
    each source in turn, until the source with the fewest batches is used up (as sentence-transformers'
    ``ProportionalBatchSampler`` / ``RoundRobinBatchSampler``). A source's weight scales its examples per epoch (2.0:
    each example twice, in two different batches; 0.5: a random half). Under several processes each global batch is
    split into one local batch per process, so all processes hold batches of the same source at every step.

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

    # ours: ST's multi-dataset samplers have no source weights, and under Accelerate's split of a batch sampler
    # across processes they give the processes batches of different sources at one step.
    def __init__(self, sizes: Sequence[int], batch_size: int, num_processes: int = 1,
                 weights: Sequence[float] | None = None, sampling: str = "proportional", seed: int = 0) -> None:
        weights = [1.0] * len(sizes) if weights is None else [float(weight) for weight in weights]
        if len(weights) != len(sizes) or not all(np.isfinite(w) and w > 0 for w in weights):
            raise ValueError(f"source weights {weights}: expected one positive number per source ({len(sizes)}).")
        if sampling not in SAMPLING:
            raise ValueError(f"sampling={sampling!r}: expected one of {list(SAMPLING)}.")
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
        part = round(self.sizes[source] * fraction)
        return [self.sizes[source]] * int(whole) + ([part] if part else [])

    def _batches_in(self, examples: int) -> int:
        """Global batches (``batch_size * num_processes`` examples) in a pass of ``examples``; the last partial one is
        kept only on one process and when it holds at least 2 examples (one example has no negative)."""
        full = self.batch_size * self.num_processes
        return examples // full + int(self.num_processes == 1 and examples % full >= 2)

    def batches_per_source(self) -> list[int]:
        """The global batches of each source per epoch."""
        return [sum(map(self._batches_in, self._passes(source))) for source in range(len(self.sizes))]

    def __iter__(self) -> Iterator[list[int]]:
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        full, batches = self.batch_size * self.num_processes, []
        for source in range(len(self.sizes)):  # this epoch's global batches of each source
            batches.append([])
            for examples in self._passes(source):
                order = torch.randperm(self.sizes[source], generator=generator)[:examples].numpy() + self.offsets[
                    source]
                batches[-1] += [order[start:start + full] for start in range(0, self._batches_in(examples) * full,
                                                                               full)]
        if self.sampling == "round_robin":
            order = [(s, i) for i in range(min(map(len, batches))) for s in range(len(batches))]
        else:
            order = [(s, i) for s, source_batches in enumerate(batches) for i in range(len(source_batches))]
            order = [order[i] for i in torch.randperm(len(order), generator=generator).tolist()]
        for source, index in order:
            batch = batches[source][index]
            for start in range(0, len(batch), self.batch_size):  # one local batch per process
                yield batch[start:start + self.batch_size].tolist()

    def __len__(self) -> int:
        counts = self.batches_per_source()
        return (min(counts) * len(counts) if self.sampling == "round_robin" else sum(counts)) * self.num_processes

    def source_of(self, batch: Sequence[int]) -> int:
        """The source that ``batch`` (global indices) comes from."""
        return int(np.searchsorted(self.offsets, batch[0], side="right") - 1)


__all__ = ["DataError", "Examples", "SAMPLING", "SimCSECollator", "SourceBatchSampler", "columns_of", "data_format",
           "hub_reachable", "load_hub_examples", "read_examples", "resolve_train_file", "write_atomic"]
