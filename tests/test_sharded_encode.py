"""``simcse-hub encode`` across processes: ``--num-processes 2`` and ``accelerate launch --num_processes 2`` (gloo on
the CPU) write one output, in input order, equal to the one-process run."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from conftest import make_model

from simcse_hub import save_model

WORDS = "a man woman dog cat is playing eating runs on the beach guitar food piano with big small red".split()


@pytest.fixture(scope="module")
def corpus(tmp_path_factory, tokenizer):
    """A SimCSE folder and a file of 301 sentences of varied length (an odd count: the shares differ by one)."""
    root = tmp_path_factory.mktemp("sharded")
    folder = save_model(make_model("bert", seed=2, pooler_type="avg"), root / "model", tokenizer)
    rng = np.random.default_rng(0)
    lines = [" ".join(rng.choice(WORDS, size=int(rng.integers(1, 30)))) + "." for _ in range(301)]
    (root / "input.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return folder, root / "input.txt", lines


def encode(*argv: str, launcher: list[str] | None = None, stdin: str | None = None) -> subprocess.CompletedProcess:
    command = [*(launcher or [sys.executable, "-m"]), "simcse_hub.cli", "encode", *argv]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=600, input=stdin,
                          stdin=None if stdin is not None else subprocess.DEVNULL)


@pytest.mark.distributed
def test_two_processes_write_the_one_process_embeddings_in_input_order(corpus, tmp_path):
    folder, source, lines = corpus
    one = encode(str(folder), "--input", str(source), "--output", str(tmp_path / "one.npy"))
    assert one.returncode == 0, one.stderr[-3000:]
    two = encode(str(folder), "--input", str(source), "--output", str(tmp_path / "two.npy"), "--num-processes", "2")
    assert two.returncode == 0, two.stderr[-3000:]
    assert "Encoding 301 sentences in 2 processes" in two.stderr and "Encoding 301" not in one.stderr
    expected = np.load(tmp_path / "one.npy")
    assert expected.shape == (301, 32)
    assert np.allclose(np.load(tmp_path / "two.npy"), expected, atol=1e-5)
    # On a machine without GPUs, accelerate launch starts several processes only with --multi_gpu (torchrun's way)
    accelerate = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
                  "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port",
                  "0", "-m"]
    rows_run = encode(str(folder), "--input", str(source), launcher=accelerate)  # JSON lines on standard output
    assert rows_run.returncode == 0, rows_run.stderr[-3000:]
    rows = [json.loads(line) for line in rows_run.stdout.splitlines() if line.startswith("{")]
    assert [row["sentence"] for row in rows] == lines  # written once, by the first process, in order
    assert "Encoding 301 sentences in 2 processes" in rows_run.stderr
    assert np.allclose([row["embedding"] for row in rows], expected, atol=1e-5)


@pytest.mark.distributed
def test_standard_input_and_errors_across_processes(corpus, tmp_path):
    folder, source, lines = corpus
    piped = encode(str(folder), "--output", str(tmp_path / "piped.npy"), "--num-processes", "2",
                   stdin=source.read_text(encoding="utf-8"))
    assert piped.returncode == 0, piped.stderr[-3000:]
    assert np.load(tmp_path / "piped.npy").shape == (301, 32)
    missing = encode(str(tmp_path / "no-such-model"), "--input", str(source), "--num-processes", "2")
    assert missing.returncode == 2
    errors = [line for line in missing.stderr.splitlines() if "error:" in line]
    assert len(errors) == 1 and "no-such-model" in errors[0] and "no such folder" in errors[0], missing.stderr
