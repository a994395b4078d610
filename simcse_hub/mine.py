"""Hard negatives for (anchor, positive) pairs, mined with the model itself: ``simcse-hub mine``.

    simcse-hub mine sentence-transformers/all-MiniLM-L6-v2 --input pairs.tsv.gz --output triplets.tsv.gz

The mining is sentence-transformers' :func:`~sentence_transformers.util.mine_hard_negatives` on the embeddings of
:class:`simcse_hub.SimCSE` (its own pooler, and the whitening or flow saved beside a model; each distinct sentence
embedded once). The candidates are the distinct positives (and, with ``include_anchors``, the anchors), never the
anchor itself nor any positive of that anchor. Of the ``range_max`` candidates most similar to an anchor, those whose
cosine is above ``p - margin`` or above ``p - |p| * relative_margin`` are dropped, ``p`` the anchor's lowest positive
cosine (so a paraphrase of a positive is not taken as a negative); then the ``range_min`` most similar of the rest
are skipped. The most similar left (``sampling="top"``) or a random one (``"random"``, drawn with ``seed``) is the
hard negative of every pair of that anchor; an anchor left without one is skipped. The triplets are written with the
columns the trainer reads, ``sent0 sent1 hard_neg``, grouped by anchor (in the order of each anchor's first pair), a
repeated pair once.
"""

from __future__ import annotations

import gzip
import json
import logging
import math
import os
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from datasets import Dataset
from sentence_transformers.util import dot_score, pairwise_dot_score
from sentence_transformers.util import mine_hard_negatives as st_mine_hard_negatives

from simcse_hub.data import read_examples, write_atomic
from simcse_hub.inference import SEARCH_SCORES_PER_CHUNK, SimCSE

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
        pairs (`int`): distinct pairs read.
        mined (`int`): pairs written as triplets (a hard negative was found).
        skipped (`int`): pairs left without a candidate (not written).
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


class _Embedder:
    """The part of a ``SentenceTransformer`` that ST's miner calls, served by ``SimCSE.encode``."""

    # ours: ST's miner takes only a SentenceTransformer (no plain encoder under a pooler, no saved whitening or flow)
    device = "cpu"  # SimCSE.encode returns CPU vectors
    similarity, similarity_pairwise = staticmethod(dot_score), staticmethod(pairwise_dot_score)  # unit vectors

    def __init__(self, model: Any, batch_size: int | None) -> None:
        self.model, self.batch_size, self.cache = model, batch_size, {}

    def encode_document(self, sentences: list[str], **kwargs: Any) -> np.ndarray:
        """Unit vectors ``(len(sentences), dim)``; a sentence seen before (an anchor among the candidates) is not
        embedded again."""
        new = [sentence for sentence in dict.fromkeys(sentences) if sentence not in self.cache]
        if new:
            vectors = self.model.encode(new, batch_size=self.batch_size, normalize_to_unit=True, return_numpy=True)
            self.cache.update(zip(new, np.asarray(vectors, dtype=np.float32)))
        return np.stack([self.cache[sentence] for sentence in sentences])

    encode_query = encode_document


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


def check_options(margin: float | None = 0.05, relative_margin: float | None = None, range_min: int = 0,
                  range_max: int = 50, sampling: str = "top") -> None:
    """Check the mining settings (those of :func:`mine_hard_negatives`) before a model is loaded."""
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


def mine_hard_negatives(
    pairs: str | os.PathLike | Sequence[tuple[str, str]], model: Any, output_file: str | os.PathLike,
    margin: float | None = 0.05, relative_margin: float | None = None, range_min: int = 0, range_max: int = 50,
    include_anchors: bool = False, sampling: str = "top", seed: int = 0, batch_size: int | None = None,
    overwrite: bool = False,
) -> MiningResult:
    """Add a hard negative, mined with ``model``, to each (anchor, positive) pair and write the triplets.

    Args:
        pairs (`str`, `os.PathLike` or `Sequence[tuple[str, str]]`): a pair file (see :func:`read_pairs`) or pairs.
        model (`SimCSE` or `str`): a :class:`simcse_hub.SimCSE`, or a name to load with it.
        output_file (`str` or `os.PathLike`): ``.tsv`` or ``.jsonl``, optionally ``.gz``; written atomically.
        margin (`float`, *optional*, defaults to 0.05): ST's ``absolute_margin``: a candidate is kept only when its
            cosine to the anchor is at most the anchor's lowest positive cosine minus this (`None`: no such rule).
        relative_margin (`float`, *optional*): ST's ``relative_margin``: also at most that cosine minus this share
            of its magnitude.
        range_min (`int`, *optional*, defaults to 0): skip the ``range_min`` most similar candidates that the
            margins keep.
        range_max (`int`, *optional*, defaults to 50): consider only the ``range_max`` most similar candidates.
        include_anchors (`bool`, *optional*, defaults to `False`): the anchors are candidates too (never their own).
        sampling (`str`, *optional*, defaults to `"top"`): ``"top"`` (the most similar candidate kept) or
            ``"random"`` (any kept candidate).
        seed (`int`, *optional*, defaults to 0): the seed of ``"random"`` sampling (the global ``random`` state is
            left as it was).
        batch_size (`int`, *optional*): sentences per forward pass (default: ``SimCSE.encode``'s token budget).
        overwrite (`bool`, *optional*, defaults to `False`): replace an existing ``output_file``.

    Returns:
        [`MiningResult`]

    >>> mine_hard_negatives("pairs.tsv", SimCSE("outputs/quickstart"), "triplets.tsv").mined  # doctest: +SKIP
    6012
    """
    output = check_output(output_file, overwrite)
    check_options(margin, relative_margin, range_min, range_max, sampling)
    rows = read_pairs(pairs) if isinstance(pairs, (str, os.PathLike)) else [tuple(pair) for pair in pairs]
    check_pairs(rows, output)
    rows = list(dict.fromkeys(rows))
    model = SimCSE(model) if isinstance(model, (str, os.PathLike)) else model
    start = time.perf_counter()
    anchors, positives = [anchor for anchor, _ in rows], [positive for _, positive in rows]
    corpus = [*positives, *anchors] if include_anchors else None
    state = random.getstate()
    random.seed(seed)
    try:
        mined = st_mine_hard_negatives(
            Dataset.from_dict({"sent0": anchors, "sent1": positives}), _Embedder(model, batch_size), corpus=corpus,
            range_min=range_min, range_max=range_max, absolute_margin=margin, relative_margin=relative_margin,
            num_negatives=1, sampling_strategy=sampling, output_scores=True, verbose=False,
            faiss_batch_size=max(1, SEARCH_SCORES_PER_CHUNK // len(set(corpus or positives))))
    finally:
        random.setstate(state)
    scores = np.array(mined["scores"], dtype=np.float64).reshape(-1, 2)  # (mined, 2): positive, negative
    _write_triplets(zip(mined["sent0"], mined["sent1"], mined["negative"]), output)
    result = MiningResult(output=output, pairs=len(rows), mined=len(mined), skipped=len(rows) - len(mined),
                          mean_positive=float(scores[:, 0].mean()) if len(mined) else math.nan,
                          mean_negative=float(scores[:, 1].mean()) if len(mined) else math.nan,
                          seconds=time.perf_counter() - start)
    logger.info("Mined %d hard negatives for %d pairs (%d skipped) into %s", result.mined, result.pairs,
                result.skipped, output)
    return result


def _write_triplets(triplets: Any, output: Path) -> None:
    """Write ``sent0 sent1 hard_neg`` rows as TSV or JSON lines (gzip'd for ``.gz``) through a temporary file in
    the same folder, renamed over ``output`` once complete."""
    # ours: Dataset.to_csv CSV-quotes a sentence holding '"' (our .tsv is split on tabs only); neither is atomic
    if output.name.lower().removesuffix(".gz").endswith(".tsv"):
        lines = ["\t".join(TRIPLET_COLUMNS)] + ["\t".join(row) for row in triplets]
    else:
        lines = [json.dumps(dict(zip(TRIPLET_COLUMNS, row)), ensure_ascii=False) for row in triplets]
    data = "".join(line + "\n" for line in lines).encode("utf-8")
    if output.name.lower().endswith(".gz"):
        data = gzip.compress(data, mtime=0)
    write_atomic(output, data)


__all__ = ["MiningError", "MiningResult", "check_options", "check_output", "check_pairs", "mine_hard_negatives",
           "read_pairs"]
