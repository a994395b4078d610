"""Hard negatives for (anchor, positive) pairs, mined with the model itself: ``simcse-hub mine``.

    simcse-hub mine sentence-transformers/all-MiniLM-L6-v2 --input pairs.tsv.gz --output triplets.tsv.gz

Every sentence is embedded once with :class:`simcse_hub.SimCSE` (its own pooler, and the whitening or flow saved
beside a model). The candidates are all the distinct positives of the file (and, with ``include_anchors``, the
anchors). For each anchor they are ranked by exact cosine similarity, never counting the anchor itself nor any
positive of that anchor (string equality after strip); ranks ``range_min`` to ``range_max`` are kept, and of those
the candidates within the margin: similarity to the anchor below ``sim(anchor, positive) - margin -
|sim(anchor, positive)| * relative_margin``, as sentence-transformers' ``absolute_margin`` / ``relative_margin``,
so that a paraphrase of the positive is not taken as its negative. The most similar of them (``sampling="top"``)
or a random one (``"random"``, drawn with ``seed``) becomes the hard negative; a pair left without a candidate is
skipped and counted. The triplets are written with the columns the trainer reads, ``sent0 sent1 hard_neg``.

Why not sentence-transformers' ``util.mine_hard_negatives``: it takes only a ``SentenceTransformer`` (no plain
encoder under ``--pooler``, no whitening or flow of a model folder), needs the optional ``datasets`` and pandas,
never excludes the anchor itself, merges and reorders rows by anchor, and samples with the global ``random`` state.
"""

from __future__ import annotations

import gzip
import json
import logging
import math
import os
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)

TRIPLET_COLUMNS = ("sent0", "sent1", "hard_neg")
OUTPUT_SUFFIXES = (".tsv", ".jsonl", ".tsv.gz", ".jsonl.gz")
SAMPLING = ("top", "random")


class MiningError(ValueError):
    """Input, output or settings of mining that cannot be used; the message names it and what to do."""


@dataclass
class MiningResult:
    """What :func:`mine_hard_negatives` did.

    Args:
        output (`Path`): the triplet file written.
        pairs (`int`): pairs read.
        mined (`int`): pairs written as triplets (a hard negative was found).
        skipped (`int`): pairs left without a candidate within the margin (not written).
        mean_positive (`float`): mean cosine of anchor and positive over the mined pairs.
        mean_negative (`float`): mean cosine of anchor and hard negative over the mined pairs.
        seconds (`float`): wall time, model loading excluded.
    """

    output: Path
    pairs: int
    mined: int
    skipped: int
    mean_positive: float
    mean_negative: float
    seconds: float


def check_output(path: str | os.PathLike, overwrite: bool = False) -> Path:
    """Check the triplet file before any work: its suffix, a folder that exists, no file there unless ``overwrite``."""
    path = Path(path).expanduser()
    if not path.name.lower().endswith(OUTPUT_SUFFIXES):
        raise MiningError(f"--output {str(path)!r}: expected a file name ending in {', '.join(OUTPUT_SUFFIXES)}.")
    if path.is_dir():
        raise MiningError(f"--output {str(path)!r} is a folder; expected a file name.")
    if not path.parent.is_dir():
        raise MiningError(f"--output {str(path)!r}: the folder {str(path.parent)!r} does not exist; create it first.")
    if path.exists() and not overwrite:
        raise MiningError(f"--output {str(path)!r} exists; pass --overwrite to replace it, or choose another name.")
    return path


def check_options(margin: float = 0.05, relative_margin: float | None = None, range_min: int = 0,
                  range_max: int = 50, sampling: str = "top") -> None:
    """Check the mining settings (the same rules as :func:`mine_hard_negatives`) before a model is loaded."""
    for name, value in (("margin", margin), ("relative_margin", relative_margin)):
        if value is not None and not math.isfinite(value):
            raise MiningError(f"--{name.replace('_', '-')} {value!r}: expected a finite number, e.g. 0.05.")
    if relative_margin is not None and not 0 <= relative_margin < 1:
        raise MiningError(f"--relative-margin {relative_margin!r}: expected a number in [0, 1), e.g. 0.05.")
    if range_min < 0 or range_max <= range_min:
        raise MiningError(f"--range-min {range_min} / --range-max {range_max}: expected 0 <= range-min < range-max.")
    if sampling not in SAMPLING:
        raise MiningError(f"--sampling {sampling!r}: expected one of {list(SAMPLING)}.")


def read_pairs(path: str | os.PathLike, columns: Sequence[str] | None = None,
               max_pairs: int | None = None) -> list[tuple[str, str]]:
    """The (anchor, positive) pairs of a ``.tsv``, ``.csv`` or ``.jsonl`` file (optionally ``.gz``), read with
    :func:`simcse_hub.data.read_examples`; `MiningError` naming the file unless it has exactly 2 columns (or
    ``columns`` names 2)."""
    from simcse_hub.data import read_examples

    path = Path(path)
    if not path.is_file():
        raise MiningError(f"--input {str(path)!r}: no such file; expected a .tsv/.csv/.jsonl (optionally .gz) file "
                          "of (anchor, positive) pairs with a header line.")
    if columns is not None and len(columns) != 2:
        raise MiningError(f"--columns {','.join(columns)}: expected 2 names, the anchor and the positive.")
    if Path(path.name.lower().removesuffix(".gz")).suffix == ".txt":
        raise MiningError(f"{path}: a .txt file holds single sentences; mining needs (anchor, positive) pairs in a "
                          ".tsv/.csv/.jsonl file with a header line.")
    examples = read_examples(path, columns, max_pairs)
    if len(examples.columns) != 2:
        raise MiningError(f"{path}: {len(examples.columns)} column(s) {examples.columns}; mining needs exactly 2, the "
                          "anchor and its positive (pass --columns ANCHOR,POSITIVE to choose them).")
    return [(anchor, positive) for anchor, positive in examples.rows]


def mine_hard_negatives(
    pairs: str | os.PathLike | Sequence[tuple[str, str]],
    model: Any,
    output_file: str | os.PathLike,
    margin: float = 0.05,
    relative_margin: float | None = None,
    range_min: int = 0,
    range_max: int = 50,
    include_anchors: bool = False,
    sampling: str = "top",
    seed: int = 0,
    batch_size: int | None = None,
    overwrite: bool = False,
) -> MiningResult:
    """Add a hard negative, mined with ``model``, to each (anchor, positive) pair and write the triplets.

    Args:
        pairs (`str`, `os.PathLike` or `Sequence[tuple[str, str]]`): a pair file (see :func:`read_pairs`) or pairs.
        model (`SimCSE` or `str`): a :class:`simcse_hub.SimCSE`, or a name to load with it.
        output_file (`str` or `os.PathLike`): ``.tsv`` or ``.jsonl``, optionally ``.gz``; written atomically.
        margin (`float`, *optional*, defaults to 0.05): a candidate is kept only when its cosine to the anchor is
            below the positive's by more than this.
        relative_margin (`float`, *optional*): also subtract this share of ``|sim(anchor, positive)|``.
        range_min (`int`, *optional*, defaults to 0): skip the ``range_min`` candidates most similar to the anchor.
        range_max (`int`, *optional*, defaults to 50): consider only the ``range_max`` most similar candidates.
        include_anchors (`bool`, *optional*, defaults to `False`): the anchors are candidates too (never their own).
        sampling (`str`, *optional*, defaults to `"top"`): ``"top"`` (the most similar candidate kept) or
            ``"random"`` (any kept candidate).
        seed (`int`, *optional*, defaults to 0): the seed of ``"random"`` sampling.
        batch_size (`int`, *optional*): sentences per forward pass (default: ``SimCSE.encode``'s token budget).
        overwrite (`bool`, *optional*, defaults to `False`): replace an existing ``output_file``.

    Returns:
        [`MiningResult`]

    >>> mine_hard_negatives("pairs.tsv", SimCSE("outputs/quickstart"), "triplets.tsv").mined  # doctest: +SKIP
    6012
    """
    output = check_output(output_file, overwrite)
    check_options(margin, relative_margin, range_min, range_max, sampling)
    rows = read_pairs(pairs) if isinstance(pairs, (str, os.PathLike)) else [tuple(p) for p in pairs]
    check_pairs(rows, output)
    if isinstance(model, (str, os.PathLike)):
        from simcse_hub.inference import SimCSE

        model = SimCSE(model)
    start = time.perf_counter()
    anchors = list(dict.fromkeys(anchor for anchor, _ in rows))
    corpus = list(dict.fromkeys([positive for _, positive in rows] + (anchors if include_anchors else [])))
    sentences = list(dict.fromkeys(anchors + corpus))
    row_of = {sentence: i for i, sentence in enumerate(sentences)}
    embeddings = np.asarray(model.encode(sentences, batch_size=batch_size, normalize_to_unit=True,
                                         return_numpy=True), dtype=np.float32)  # (n_sentences, dim)
    scores, indices = _nearest(embeddings, [row_of[a] for a in anchors], [row_of[c] for c in corpus],
                               _excluded(rows, anchors, corpus), range_max)
    anchor_of = {anchor: i for i, anchor in enumerate(anchors)}
    a = np.array([row_of[anchor] for anchor, _ in rows])
    p = np.array([row_of[positive] for _, positive in rows])
    positive_sims = np.einsum("ij,ij->i", embeddings[a], embeddings[p])  # (n_rows,)
    thresholds = positive_sims - margin - np.abs(positive_sims) * (relative_margin or 0.0)
    per_row = np.array([anchor_of[anchor] for anchor, _ in rows])
    window_scores, window = scores[per_row, range_min:], indices[per_row, range_min:]  # (n_rows, window)
    kept = np.isfinite(window_scores) & (window_scores < thresholds[:, None])
    chosen = _choose(kept, sampling, seed)
    triplets, negative_sims = [], []
    for i, column in enumerate(chosen):
        if column >= 0:
            triplets.append((*rows[i], corpus[window[i, column]]))
            negative_sims.append(window_scores[i, column])
    _write_triplets(triplets, output)
    mined = [i for i, column in enumerate(chosen) if column >= 0]
    result = MiningResult(
        output=output, pairs=len(rows), mined=len(triplets), skipped=len(rows) - len(triplets),
        mean_positive=float(positive_sims[mined].mean()) if mined else float("nan"),
        mean_negative=float(np.mean(negative_sims)) if mined else float("nan"),
        seconds=time.perf_counter() - start)
    logger.info("Mined %d hard negatives for %d pairs (%d skipped) into %s", result.mined, result.pairs,
                result.skipped, output)
    return result


def check_pairs(rows: list[tuple[str, ...]], output: Path) -> None:
    """Check the pairs before a model is loaded: there are some, and a ``.tsv`` output can hold them (no tab or line
    break inside a sentence; JSON lines can hold any)."""
    if not rows:
        raise MiningError("no pairs to mine: the input is empty.")
    if ".tsv" not in output.name.lower():
        return
    for number, row in enumerate(rows, start=1):
        if any(("\t" in text or "\n" in text or "\r" in text) for text in row):
            raise MiningError(f"pair {number} holds a tab or a line break, which a .tsv file cannot hold; write "
                              f"--output {output.name.split('.')[0]}.jsonl instead.")


def _excluded(rows: list[tuple[str, str]], anchors: list[str], corpus: list[str]) -> list[list[int]]:
    """For each anchor, the corpus positions it may never take: itself and every positive it has in the file."""
    positions: dict[str, list[int]] = {}
    for i, text in enumerate(corpus):
        positions.setdefault(text.strip(), []).append(i)
    excluded: dict[str, set[int]] = {anchor: set() for anchor in anchors}
    for anchor, positive in rows:
        for text in (anchor, positive):
            excluded[anchor].update(positions.get(text.strip(), ()))
    return [sorted(excluded[anchor]) for anchor in anchors]


def _nearest(embeddings: np.ndarray, anchor_rows: list[int], corpus_rows: list[int], excluded: list[list[int]],
             k: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact cosine search (:func:`simcse_hub.inference.exact_search`): the ``k`` corpus positions most similar to each
    anchor and their similarities, the excluded positions never among them (``-inf`` pads a row when the corpus is
    smaller)."""
    import torch

    from simcse_hub.inference import exact_search

    scores, indices = exact_search(torch.from_numpy(embeddings[anchor_rows]), torch.from_numpy(embeddings[corpus_rows]),
                                   min(k, len(corpus_rows)), excluded)
    return scores.numpy(), indices.numpy()


def _choose(kept: np.ndarray, sampling: str, seed: int) -> np.ndarray:
    """Per row, the column of the chosen candidate among the kept ones (the first, or a seeded random one); -1 when
    none is kept."""
    has_one = kept.any(axis=1)
    if sampling == "top":
        return np.where(has_one, kept.argmax(axis=1), -1)
    rng = np.random.default_rng(seed)
    chosen = np.full(len(kept), -1)
    for i in np.flatnonzero(has_one):
        chosen[i] = rng.choice(np.flatnonzero(kept[i]))
    return chosen


def _write_triplets(triplets: list[tuple[str, str, str]], output: Path) -> None:
    """Write ``sent0 sent1 hard_neg`` rows as TSV or JSON lines (gzip'd for ``.gz``) through a temporary file in
    the same folder, renamed over ``output`` once complete."""
    if output.name.lower().removesuffix(".gz").endswith(".tsv"):
        lines = ["\t".join(TRIPLET_COLUMNS)] + ["\t".join(row) for row in triplets]
    else:
        lines = [json.dumps(dict(zip(TRIPLET_COLUMNS, row)), ensure_ascii=False) for row in triplets]
    data = "".join(line + "\n" for line in lines).encode("utf-8")
    if output.name.lower().endswith(".gz"):
        data = gzip.compress(data, mtime=0)
    handle, temporary = tempfile.mkstemp(dir=output.parent, prefix=f".{output.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as file:
            file.write(data)
        os.chmod(temporary, 0o644)  # mkstemp's 0600 would make the data file private
        os.replace(temporary, output)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


__all__ = ['MiningError', 'MiningResult', 'check_options', 'check_output', 'check_pairs', 'mine_hard_negatives', 'read_pairs']
