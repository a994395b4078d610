"""The portable folder (``simcse-hub export --portable``, ``push --portable``): the encoder as a standard checkpoint
with sentence-transformers' own pooling modules. Every loader gives the SimCSE model's embeddings without remote
code, for each pooler, on BERT and RoBERTa (and DistilBERT, a family without a pooler); the card's snippets run; a
push uploads what loads; the SimCSE folder is untouched and still loads three ways."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
import test_hub
import torch
import torch.nn.functional as F
from conftest import make_model, remote_code_embeddings
from huggingface_hub import ModelCard
from test_hub import REPO_ID, TOKEN, hub_env, snapshot
from test_model_card import FLOAT, RUNNER, python_blocks
from transformers import AutoModel, BertTokenizer

from simcse_hub import SimCSE, SimCSEModel
from simcse_hub.card import SimCSEModelCardData, render_model_card
from simcse_hub.cli import main
from simcse_hub.export import CHECK_SENTENCES, MIN_COSINE, export_portable
from simcse_hub.hub import ModelFolderError, plan_push, push_model
from simcse_hub.postprocess import Whitening
from simcse_hub.train import save_model

VARIANTS = [("cls", False), ("cls", True), ("cls_before_pooler", False), ("avg", False), ("avg_top2", False),
            ("avg_first_last", False)]
CASES = [(family, *variant) for family in ("bert", "roberta") for variant in VARIANTS] + [("distilbert", "cls", False)]
WHITENED = [("bert", "cls", False, True), ("roberta", "avg", False, True)]  # BERT-whitening inside the model
ENCODER_CLASSES = {"bert": "BertModel", "roberta": "RobertaModel", "distilbert": "DistilBertModel"}
SENTENCES = list(CHECK_SENTENCES)
hub = test_hub.hub  # the local Hub (a fixture) of test_hub.py


@pytest.fixture(scope="module")
def folders(tmp_path_factory, tokenizer_dir):
    """``build(family, pooler_type, mlp_only_train, whitened)`` -> (SimCSE folder, its portable variant), each built
    once."""
    cache: dict[tuple, tuple[Path, Path]] = {}

    def build(family: str, pooler_type: str, mlp_only_train: bool = False, whitened: bool = False) -> tuple[Path, Path]:
        key = (family, pooler_type, mlp_only_train, whitened)
        if key not in cache:
            root = tmp_path_factory.mktemp("-".join(map(str, key)))
            names = {"model_input_names": ["input_ids", "attention_mask"]} if family == "distilbert" else {}
            tokenizer = BertTokenizer.from_pretrained(tokenizer_dir, **names)  # DistilBERT takes no token types
            model = make_model(family, seed=1, pooler_type=pooler_type, mlp_only_train=mlp_only_train)
            if whitened:
                rng = np.random.default_rng(0)
                Whitening().fit(rng.normal(size=(200, 32)) @ rng.normal(size=(32, 32)), k=12).apply_to(model)
            simcse = save_model(model, root / "simcse", tokenizer)
            cache[key] = simcse, export_portable(simcse, root / "portable")
        return cache[key]

    return build


def assert_same_embeddings(got, expected: torch.Tensor, what: str) -> None:
    cosine = F.cosine_similarity(torch.as_tensor(got).float(), expected.float(), dim=-1)
    assert cosine.min().item() >= MIN_COSINE, (what, cosine.tolist())


@pytest.mark.parametrize(("family", "pooler_type", "mlp_only_train"), CASES)
def test_every_loader_gives_the_simcse_embeddings_without_remote_code(folders, family, pooler_type, mlp_only_train,
                                                                     capfd):
    from sentence_transformers import SentenceTransformer

    simcse, portable = folders(family, pooler_type, mlp_only_train)
    expected = SimCSE(str(simcse), device="cpu").encode(SENTENCES)  # (n, dim), unit rows
    capfd.readouterr()

    st = SentenceTransformer(str(portable), device="cpu")  # no trust_remote_code
    assert_same_embeddings(st.encode(SENTENCES, convert_to_tensor=True), expected, "SentenceTransformer")
    tool = SimCSE(str(portable), device="cpu")
    assert tool.kind == "sentence-transformers"
    assert_same_embeddings(tool.encode(SENTENCES), expected, "SimCSE")

    model = AutoModel.from_pretrained(portable).eval()
    assert type(model).__name__ == ENCODER_CLASSES[family] and type(model).__module__.startswith("transformers.")
    batch = st.tokenizer(SENTENCES, padding=True, truncation=True, return_tensors="pt")
    with torch.no_grad():
        pooler_output = model(**batch).pooler_output if family != "distilbert" else None
    if pooler_type == "cls" and not mlp_only_train and family != "distilbert":  # the MLP stored as the pooler
        assert_same_embeddings(pooler_output, expected, "pooler_output")
    elif pooler_output is not None:  # never a plausible wrong embedding
        assert not pooler_output.any()
    assert "LOAD REPORT" not in capfd.readouterr().err  # every weight of the encoder's class is in the checkpoint

    config = json.loads((portable / "config.json").read_text())
    assert config["model_type"] == family and "auto_map" not in config and not list(portable.rglob("*.py"))
    for path in portable.rglob("*"):
        assert not path.is_file() or str(portable.parent).encode() not in path.read_bytes(), path


def test_the_cards_loader_snippets_run_without_simcse_hub(folders, tmp_path):
    """Every snippet of every portable card, run in a fresh interpreter (transformers and sentence-transformers with
    simcse_hub unimportable), prints the SimCSE model's cosine similarities of the card's sentences."""
    jobs, expected = [], {}
    for case in CASES + WHITENED:
        simcse, portable = folders(*case)
        card = str(render_model_card(portable, repo_id=REPO_ID))
        assert "trust_remote_code" not in card.split("## Usage")[1].split("### simcse_hub")[0]
        sentences = list(SimCSEModelCardData.from_folder(portable).example_sentences)
        vectors = SimCSE(str(simcse), device="cpu").encode(sentences)
        for loader, block in zip(("SentenceTransformer", "AutoModel", "SimCSE"), python_blocks(card)):
            assert f"{loader}(" in block or f"{loader}." in block, (loader, block)
            name = f"{case} {loader}"
            jobs.append((name, block.replace(REPO_ID, portable.as_posix()), loader != "SimCSE"))
            expected[name] = (vectors @ vectors.T).flatten().tolist()  # (9,)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf_home"), "TOKENIZERS_PARALLELISM": "false"}
    result = subprocess.run([sys.executable, "-c", RUNNER, json.dumps(jobs)], capture_output=True, text=True,
                            check=False, timeout=600, cwd=tmp_path, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    runs = json.loads(result.stdout.strip().splitlines()[-1])
    for name, run in runs.items():
        assert run["error"] is None, (name, run["error"])
        printed = [float(x) for x in FLOAT.findall(run["stdout"])]
        assert printed == pytest.approx(expected[name], abs=2e-4), name


QUIET_TOKENIZER = """
import builtins, sys
def refuse(*args, **kwargs):
    raise SystemExit(f"input() was called: {args}")
builtins.input = refuse
from transformers import AutoTokenizer
print(type(AutoTokenizer.from_pretrained(sys.argv[1])).__name__)
"""


def test_auto_tokenizer_loads_quietly_without_a_prompt(folders):
    _, portable = folders("roberta", "avg")
    result = subprocess.run([sys.executable, "-c", QUIET_TOKENIZER, str(portable)], capture_output=True, text=True,
                            check=False, timeout=300, stdin=subprocess.DEVNULL,
                            env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert result.returncode == 0, result.stderr[-2000:]
    assert (result.stdout.strip(), result.stderr) == ("BertTokenizer", "")  # no warning, nothing else


@pytest.mark.parametrize("case", WHITENED)
def test_a_whitened_model_exports_its_whitening_as_a_dense_module(folders, case):
    """BERT-whitening inside the model travels as a sentence-transformers Dense module without activation (after the
    MLP's Dense, for cls): the portable folder gives the whitened embedding without remote code."""
    from sentence_transformers import SentenceTransformer

    simcse, portable = folders(*case)
    expected = SimCSE(str(simcse), device="cpu").encode(SENTENCES)  # (n, 12), unit rows
    assert expected.shape == (len(SENTENCES), 12)
    st = SentenceTransformer(str(portable), device="cpu")  # no trust_remote_code
    assert_same_embeddings(st.encode(SENTENCES, convert_to_tensor=True), expected, "SentenceTransformer")
    assert [type(module).__name__ for module in st][-1] == "Dense" and st[-1].linear.out_features == 12
    assert type(st[-1].activation_function).__name__ == "Identity"
    data = SimCSEModelCardData.from_folder(portable)
    assert data.portable["whitening"] == f"{len(st) - 1}_Dense" and data.embedding_dim == 12
    assert data.portable["dense"] is None  # BERT's cls: the MLP is stored as the encoder's pooler


def test_the_simcse_folder_is_untouched_and_still_loads_three_ways(tmp_path, tokenizer):
    from sentence_transformers import SentenceTransformer

    simcse = save_model(make_model("bert", seed=2, pooler_type="cls"), tmp_path / "simcse", tokenizer)
    before = snapshot(simcse)
    export_portable(simcse, tmp_path / "portable")
    assert snapshot(simcse) == before
    expected = SimCSE(str(simcse), device="cpu").encode(SENTENCES)
    st = SentenceTransformer(str(simcse), device="cpu", trust_remote_code=True)
    assert_same_embeddings(st.encode(SENTENCES, convert_to_tensor=True), expected, "SentenceTransformer")
    (remote,) = remote_code_embeddings([simcse], SENTENCES)
    assert_same_embeddings(remote, expected, "AutoModel with remote code")


def test_the_card_carries_the_simcse_cards_results_and_says_whose_variant_it_is(tmp_path, tokenizer):
    simcse = save_model(make_model("bert", seed=2, pooler_type="avg"), tmp_path / "my-simcse", tokenizer)
    evaluation = {"split": "test", "setting": "all", "tasks": {"STSBenchmark": {"spearman": 80.5, "n_pairs": 1379}}}
    whitened = {**evaluation, "split": "dev", "tasks": {"STSBenchmark": {"spearman": 85.5}}, "whitening": {"k": 8}}
    (simcse / "simcse_card.json").write_text(json.dumps({"objective": "unsupervised", "license": "mit",
                                                         "evaluations": [evaluation, whitened]}), encoding="utf-8")
    portable = export_portable(simcse, tmp_path / "out" / "my-simcse-portable")
    data = SimCSEModelCardData.from_folder(portable)
    assert data.portable == {"of": "my-simcse", "pooler_type": "avg", "mlp_only_train": False, "temperature": 0.05,
                             "pooler_output": "zero", "dense": None, "whitening": None, "embedding_dim": 32}
    assert (data.encoder_type, data.embedding_dim, data.num_layers, data.max_seq_length) == ("bert", 32, 2, 48)
    assert [r["tasks"] for r in data.evaluations] == [evaluation["tasks"]]  # the whitened one is not these embeddings
    cards = [ModelCard(str(render_model_card(folder, repo_id=f"me/{folder.name}"))) for folder in (simcse, portable)]
    assert cards[0].data.to_dict()["model-index"][0]["results"] == cards[1].data.to_dict()["model-index"][0]["results"]
    assert "**portable variant** of `my-simcse`" in cards[1].text
    assert "| STS-B | 80.50 | 1,379 |" in cards[1].text
    assert "`pooler_output` is **not** the sentence embedding" in cards[1].text
    written = (portable / "README.md").read_text(encoding="utf-8")  # rendered for the folder as given: its name
    assert 'SentenceTransformer("my-simcse-portable")' in written and str(tmp_path) not in written


def test_what_cannot_be_exported_is_refused_with_one_clear_line(folders, tmp_path, capsys):
    simcse, portable = folders("bert", "avg")
    with pytest.raises(ValueError, match=r"is a 'bert' model, not a SimCSE model"):
        export_portable(portable, tmp_path / "again")
    copy = tmp_path / "whitened"
    save_model(make_model("bert", pooler_type="avg"), copy, BertTokenizer.from_pretrained(simcse))
    (copy / "whitening.safetensors").write_bytes(b"")
    with pytest.raises(ValueError, match=r"whitened/whitening.safetensors: BERT-whitening has no standard"):
        export_portable(copy, tmp_path / "out")
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "keep.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="busy: already exists and is not an empty folder"):
        export_portable(simcse, busy)
    assert [p.name for p in busy.iterdir()] == ["keep.txt"] and not (tmp_path / "out").exists()

    assert main(["export", str(simcse)]) == 2
    assert "give a format, --portable OUT" in capsys.readouterr().err
    assert main(["export", str(tmp_path / "nowhere"), "--portable", str(tmp_path / "x")]) == 2
    assert "no such folder" in capsys.readouterr().err
    assert main(["export", str(simcse), "--portable", str(tmp_path / "cli")]) == 0
    assert f"Wrote the portable variant of {simcse} to {tmp_path / 'cli'}" in capsys.readouterr().out
    assert (tmp_path / "cli" / "modules.json").is_file()


def test_push_portable_uploads_what_loads(hub, folders, tmp_path, monkeypatch):
    simcse, _ = folders("bert", "cls")
    workdirs = tmp_path / "tmp"
    workdirs.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(workdirs))
    before = snapshot(simcse)
    push_model(simcse, REPO_ID, portable=True)
    assert snapshot(simcse) == before and list(workdirs.iterdir()) == []  # the temporary variant is gone
    (commit,) = hub.commits
    files = set(commit.files)
    assert {"config.json", "model.safetensors", "modules.json", "1_Pooling/config.json", "2_Dense/config.json",
            "2_Dense/model.safetensors", "tokenizer_config.json", "simcse_card.json", "README.md"} <= files
    assert not [f for f in files if f.endswith(".py") or f.startswith(".tmp")]
    assert json.loads(commit.files["config.json"])["model_type"] == "bert"
    assert f'SentenceTransformer("{REPO_ID}")' in commit.files["README.md"].decode()

    script = f"""
import torch
from sentence_transformers import SentenceTransformer
from transformers import AutoModel, AutoTokenizer
sentences = {SENTENCES!r}
tokenizer, model = AutoTokenizer.from_pretrained("{REPO_ID}"), AutoModel.from_pretrained("{REPO_ID}").eval()
with torch.no_grad():
    print(model(**tokenizer(sentences, padding=True, truncation=True, return_tensors="pt")).pooler_output.tolist())
print(SentenceTransformer("{REPO_ID}").encode(sentences, convert_to_tensor=True).tolist())
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=False, timeout=300,
                            env=hub_env(hub, tmp_path / "hf_home", HF_TOKEN=TOKEN), cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    expected = SimCSE(str(simcse), device="cpu").encode(SENTENCES)
    for line, what in zip(result.stdout.strip().splitlines()[-2:], ("AutoModel", "SentenceTransformer")):
        assert_same_embeddings(json.loads(line), expected, what)


def test_push_portable_dry_run_and_the_checks_of_a_portable_folder(hub, folders, monkeypatch, capsys):
    simcse, portable = folders("bert", "cls")
    monkeypatch.delenv("HF_TOKEN")
    assert main(["push", str(simcse), "--repo-id", REPO_ID, "--dry-run", "--portable"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"{REPO_ID}: ") and f"from {simcse} (its portable variant)" in out
    assert "2_Dense/model.safetensors" in out and "README.md (rendered)" in out and "modeling_simcse.py" not in out
    assert hub.requests == []

    assert str(plan_push(portable, REPO_ID)).startswith(f"{REPO_ID}: ")  # an exported folder pushes as it is
    (portable / "2_Dense" / "model.safetensors").rename(portable / "dense.bak")
    try:
        with pytest.raises(ModelFolderError, match=r"2_Dense/model.safetensors \(the weights of sentence-transformers"):
            plan_push(portable, REPO_ID)
    finally:
        (portable / "dense.bak").rename(portable / "2_Dense" / "model.safetensors")


@pytest.mark.integration
@pytest.mark.parametrize("pooler_type", ["avg", "cls"])
def test_real_minilm_portable_gives_the_same_sts_b_dev_spearman(minilm_path, shared_data, tmp_path, pooler_type):
    import gzip

    from scipy.stats import spearmanr
    from sentence_transformers import SentenceTransformer

    with gzip.open(shared_data / "stsb" / "dev.tsv.gz", "rt", encoding="utf-8") as handle:
        rows = [line.rstrip("\n").split("\t") for line in handle][1:501]  # 500 pairs: a minute on 2 cores
    first, second, gold = ([row[i] for row in rows] for i in range(3))
    simcse = save_model(SimCSEModel.from_encoder(minilm_path, pooler_type=pooler_type), tmp_path / "minilm-simcse")
    portable = export_portable(simcse, tmp_path / "minilm-portable")
    scores = {}
    for name, encode in (("SimCSE", SimCSE(str(simcse), device="cpu").encode),
                         ("SentenceTransformer", SentenceTransformer(str(portable), device="cpu").encode)):
        a, b = (torch.as_tensor(encode(side)) for side in (first, second))  # (n, dim) each
        scores[name] = (a, b, spearmanr(F.cosine_similarity(a, b, dim=-1), [float(g) for g in gold])[0])
    for side in (0, 1):
        assert_same_embeddings(scores["SentenceTransformer"][side], scores["SimCSE"][side], f"STS-B dev side {side}")
    assert scores["SentenceTransformer"][2] == pytest.approx(scores["SimCSE"][2], abs=1e-4)
