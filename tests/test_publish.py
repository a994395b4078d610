"""A published model is what its author meant to publish, on every path a user takes: ``save_pretrained`` and
``push_to_hub`` (transformers' calls), ``save_model`` and training (ours), loaded by ``AutoModel``,
``SentenceTransformer`` and ``SimCSE`` alike; no path of the machine, no token, no non-finite weight on the way."""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import ENCODER_CONFIGS, WORDS, make_model, tiny_vocab
from hub_server import FakeHub
from transformers import BertModel

from simcse_hub import POOLER_TYPES, SimCSEModel
from simcse_hub.train import save_model

pytestmark = pytest.mark.usefixtures("fresh_accelerate_state")

BACKBONES = ("bert", "roberta", "distilbert")
TOKEN = "hf_" + "PublishTestToken" * 2


def pooled(model: SimCSEModel, tokenizer, sentences: list[str]) -> torch.Tensor:
    inputs = tokenizer(sentences, padding=True, return_tensors="pt")
    if model.config.encoder_config.model_type == "distilbert":
        inputs.pop("token_type_ids", None)
    with torch.no_grad():
        return model.eval()(**inputs).pooler_output


def all_files(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


# ---------------------------------------------------------------------------------------------------- one save


@pytest.fixture(scope="module")
def saved_with_transformers(tmp_path_factory, tokenizer, sentences):
    """Every pooler on every backbone, saved with the plain transformers call ``model.save_pretrained(folder)``."""
    root = tmp_path_factory.mktemp("save_pretrained")
    folders, expected = {}, {}
    for backbone in BACKBONES:
        for pooler in POOLER_TYPES:
            model = make_model(backbone, pooler_type=pooler)
            model.tokenizer = tokenizer  # what from_encoder / from_pretrained set
            folders[backbone, pooler] = root / f"{backbone}-{pooler}"
            model.save_pretrained(folders[backbone, pooler])
            expected[backbone, pooler] = pooled(model, tokenizer, sentences)
    return folders, expected


def test_save_pretrained_writes_the_complete_folder_every_loader_reads(saved_with_transformers, sentences):
    from sentence_transformers import SentenceTransformer

    folders, expected = saved_with_transformers
    for key, folder in folders.items():
        names = set(all_files(folder))
        assert {"config.json", "model.safetensors", "modeling_simcse.py", "configuration_simcse.py", "modules.json",
                "sentence_bert_config.json", "config_sentence_transformers.json", "tokenizer_config.json"} <= names
        got = SentenceTransformer(str(folder), device="cpu", trust_remote_code=True).encode(
            sentences, convert_to_tensor=True)
        gap = (1 - torch.nn.functional.cosine_similarity(got, expected[key])).abs().max().item()
        assert gap < 1e-5, (key, gap)
        modes = {path.name: path.stat().st_mode & 0o777 for path in folder.iterdir() if path.is_file()}
        assert modes["model.safetensors"] == modes["config.json"], modes  # not 0600 while the rest follows the umask


REMOTE_LOAD = r"""
import io, json, logging, sys, warnings
sys.modules["simcse_hub"] = None  # the people who load a published model do not have simcse_hub
warnings.simplefilter("always")
captured = io.StringIO()
handler = logging.StreamHandler(captured)
handler.setLevel(logging.WARNING)
logging.getLogger().addHandler(handler)
import torch
import transformers
from transformers import AutoModel, AutoTokenizer
transformers.logging.get_logger().addHandler(handler)  # transformers logs through its own root logger
from sentence_transformers import SentenceTransformer
folders, sentences = json.loads(sys.argv[1]), json.loads(sys.argv[2])
out = []
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    for folder in folders:
        tokenizer = AutoTokenizer.from_pretrained(folder, trust_remote_code=True)
        model = AutoModel.from_pretrained(folder, trust_remote_code=True).eval()
        inputs = tokenizer(sentences, padding=True, return_tensors="pt")
        if model.config.encoder_config.model_type == "distilbert":
            inputs.pop("token_type_ids", None)
        with torch.no_grad():
            direct = model(**inputs).pooler_output
        st = SentenceTransformer(folder, trust_remote_code=True, device="cpu").encode(sentences, convert_to_tensor=True)
        out.append({"direct": direct.tolist(), "st": st.tolist(), "module": type(model).__module__})
print(json.dumps({"runs": out, "warnings": [str(w.message) for w in caught], "log": captured.getvalue()}))
"""


def test_without_simcse_hub_the_remote_code_loads_quietly_with_the_same_embeddings(saved_with_transformers,
                                                                                   sentences, tmp_path):
    folders, expected = saved_with_transformers
    keys = [(backbone, pooler) for backbone in BACKBONES for pooler in ("cls", "avg_first_last")]
    result = subprocess.run(
        [sys.executable, "-c", REMOTE_LOAD, json.dumps([str(folders[k]) for k in keys]), json.dumps(sentences)],
        capture_output=True, text=True, timeout=600, stdin=subprocess.DEVNULL, cwd=tmp_path,
        env={**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf"), "TOKENIZERS_PARALLELISM": "false"},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["warnings"] == [] and report["log"] == "", report  # no prompt, no warning, nothing logged
    assert "custom code" not in result.stdout + result.stderr
    for key, run in zip(keys, report["runs"]):
        assert run["module"].startswith("transformers_modules"), run["module"]
        for name in ("direct", "st"):
            gap = (1 - torch.nn.functional.cosine_similarity(torch.tensor(run[name]), expected[key])).abs().max()
            assert gap.item() < 1e-5, (key, name)


def test_from_pretrained_keeps_the_tokenizer_so_a_second_save_is_complete(saved_with_transformers, tmp_path,
                                                                          sentences, caplog):
    from sentence_transformers import SentenceTransformer

    folders, expected = saved_with_transformers
    model = SimCSEModel.from_pretrained(folders["bert", "avg_top2"])
    assert model.tokenizer is not None
    model.save_pretrained(tmp_path / "again")
    got = SentenceTransformer(str(tmp_path / "again"), device="cpu").encode(sentences, convert_to_tensor=True)
    assert torch.allclose(got, expected["bert", "avg_top2"], atol=1e-5)
    # Without a tokenizer the folder still loads with AutoModel, and the log says what is missing.
    bare = make_model("bert", pooler_type="avg")
    with caplog.at_level("WARNING"):
        bare.save_pretrained(tmp_path / "bare")
    assert "saved without a tokenizer" in caplog.text and "SentenceTransformer and simcse_hub.SimCSE need one" in (
        caplog.text)
    assert (tmp_path / "bare" / "modules.json").is_file() and not (tmp_path / "bare" / "tokenizer_config.json").exists()


def test_non_finite_weights_are_refused_before_anything_is_written(tokenizer, tmp_path):
    model = make_model("roberta", pooler_type="cls")
    with torch.no_grad():
        model.encoder.encoder.layer[1].output.dense.weight[0, 0] = float("inf")
        model.mlp.dense.bias[3] = float("nan")
    for save in (lambda: save_model(model, tmp_path / "a", tokenizer), lambda: model.save_pretrained(tmp_path / "b")):
        with pytest.raises(ValueError, match=r"refusing to save the model to (a|b): encoder\.encoder\.layer\.1\."
                                             r"output\.dense\.weight holds 1 non-finite value\(s\) of 1,184 "
                                             r"\(0 NaN, 1 inf\)"):
            save()
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
    with pytest.raises(ValueError, match=r"refusing to push the model to me/x: .* non-finite"):
        model.push_to_hub("me/x")


PUSH_TO_HUB = r"""
import json, sys
sys.path.insert(0, sys.argv[3])
from conftest import make_model
from transformers import BertTokenizer
from simcse_hub import SimCSEModel
model = make_model("bert", pooler_type=sys.argv[2])
model.tokenizer = BertTokenizer.from_pretrained(sys.argv[4])
print(model.push_to_hub(sys.argv[1], commit_message="transformers push"))
"""


@pytest.mark.parametrize("pooler", ["cls"])  # the MLP pooler: what the old push_to_hub got wrong
def test_push_to_hub_publishes_the_same_complete_folder(pooler, tmp_path, tokenizer_dir, tokenizer, sentences):
    """transformers' ``model.push_to_hub`` (through the real client, to a local Hub) uploads what save_model writes,
    and the model loads back from the Hub with sentence-transformers with the right pooling."""
    hub = FakeHub(token=TOKEN).start()
    try:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGING"))}
        env.update(HF_ENDPOINT=hub.url, HF_HUB_OFFLINE="0", HF_HUB_DISABLE_XET="1", HF_TOKEN=TOKEN,
                   HF_HOME=str(tmp_path / "hf"), TOKENIZERS_PARALLELISM="false")
        repo_id = f"user/pushed-{pooler}"
        result = subprocess.run([sys.executable, "-c", PUSH_TO_HUB, repo_id, pooler, str(Path(__file__).parent),
                                 str(tokenizer_dir)], capture_output=True, text=True, env=env, timeout=300,
                                cwd=tmp_path)
        assert result.returncode == 0, result.stderr[-3000:]
        (commit,) = hub.commits
        local = save_model(make_model("bert", pooler_type=pooler), tmp_path / "local", tokenizer)
        expected_files = set(all_files(local))
        assert expected_files <= set(commit.files) | {"README.md"}
        assert {"modules.json", "sentence_bert_config.json", "tokenizer_config.json", "modeling_simcse.py"} <= set(
            commit.files)
        assert {"simcse", "sentence-transformers"} <= set(commit.files["README.md"].decode().split("---")[1].split())
        script = ("import json, sys\nfrom sentence_transformers import SentenceTransformer\n"
                  f"st = SentenceTransformer({repo_id!r}, trust_remote_code=True, device='cpu')\n"
                  f"print(json.dumps(st.encode({sentences!r}).tolist()))")
        loaded = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300,
                                cwd=tmp_path)
        assert loaded.returncode == 0, loaded.stderr[-3000:]
        got = torch.tensor(json.loads(loaded.stdout.strip().splitlines()[-1]))
        expected = pooled(make_model("bert", pooler_type=pooler), tokenizer, sentences)
        assert (1 - torch.nn.functional.cosine_similarity(got, expected)).abs().max().item() < 1e-5
    finally:
        hub.stop()


# ---------------------------------------------------------------------------------------------------- private


@pytest.fixture
def home(tmp_path, monkeypatch, tokenizer_dir) -> Path:
    """A temporary home folder holding the encoder, the training data and an STS-B dev set, and HOME pointing at
    it: what a user's machine looks like."""
    home = tmp_path / "home" / "alice"
    encoder = home / "models" / "my-bert"
    torch.manual_seed(0)
    BertModel(ENCODER_CONFIGS["bert"](len(tiny_vocab()))).save_pretrained(encoder)
    for item in tokenizer_dir.iterdir():
        shutil.copy(item, encoder / item.name)
    rng = random.Random(0)
    sentences = [" ".join(rng.choices(WORDS, k=8)) + " ." for _ in range(64)]
    (home / "data").mkdir()
    (home / "data" / "sentences.txt").write_text("\n".join(sentences) + "\n", encoding="utf-8")
    rows = ["sentence1\tsentence2\tscore"] + [f"{a}\t{b}\t{rng.uniform(0, 5):.2f}"
                                             for a, b in zip(sentences[:40], sentences[1:41])]
    (home / "data" / "sts" / "stsb").mkdir(parents=True)
    for split in ("dev", "test"):
        (home / "data" / "sts" / "stsb" / f"{split}.tsv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    monkeypatch.setenv("HOME", str(home))
    return home


def assert_no_home_path(folder: Path, home: Path) -> None:
    for relative, content in all_files(folder).items():
        assert str(home).encode() not in content, f"{relative} holds the home path"
        assert os.path.realpath(home).encode() not in content, f"{relative} holds the home path"


def test_a_trained_folder_holds_no_path_of_the_machine_and_pushes_clean(home, monkeypatch):
    from huggingface_hub import constants
    from huggingface_hub.utils import close_session

    from simcse_hub.cli import main
    from simcse_hub.hub import push_model

    out = home / "outputs" / "run"
    argv = ["train", "--model-name-or-path", str(home / "models" / "my-bert"), "--train-file",
            str(home / "data" / "sentences.txt"), "--output-dir", str(out), "--data-dir", str(home / "data" / "sts"),
            "--batch-size", "16", "--max-steps", "4", "--eval-steps", "2", "--pooler-type", "avg",
            "--max-seq-length", "16", "--report-to", "none", "--mixed-precision", "no", "--license", "apache-2.0"]
    assert main(argv) == 0
    assert_no_home_path(out, home)
    card = json.loads((out / "simcse_card.json").read_text())
    assert card["base_model"] is None and card["base_model_name"] == "my-bert"
    assert card["datasets"] == [{"name": "sentences", "hub_id": None, "examples": 64}]
    config = json.loads((out / "config.json").read_text())
    assert config["base_model_name_or_path"] == config["encoder_config"]["_name_or_path"] == "my-bert"

    assert main(["evaluate", str(out), "--data-dir", str(home / "data" / "sts"), "--tasks", "STSBenchmark",
                 "--device", "cpu"]) == 0
    assert_no_home_path(out, home)
    assert json.loads((out / "simcse_card.json").read_text())["evaluations"][0]["tasks"]["STSBenchmark"]
    (out / ".env").write_text("WANDB_API_KEY=not-a-token\n", encoding="utf-8")

    hub = FakeHub(token=TOKEN).start()
    try:
        monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
        monkeypatch.setattr(constants, "HF_HUB_DISABLE_XET", True)
        monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(home / "no-login" / "token"))
        push_model(out, "user/clean", token=TOKEN, endpoint=hub.url)
        (commit,) = hub.commits
        assert ".env" not in commit.files and "training_log.jsonl" not in commit.files
        for relative, content in commit.files.items():
            assert str(home).encode() not in content, relative
        assert b"base_model" not in commit.files["README.md"].split(b"---")[1]  # a local encoder: not linked
    finally:
        close_session()
        hub.stop()
