"""Training data for SimCSE: the readers of files and Hub datasets (tokenizing and batching live in
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
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

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
    from simcse_hub.loading import hub_reachable

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


__all__ = [
    "DataError",
    "Examples",
    "data_format",
    "load_hub_examples",
    "read_examples",
    "resolve_train_file",
]
