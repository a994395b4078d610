"""ONNX export (``simcse_hub.inference.export_onnx``): every pooler and the MLP head give the PyTorch embeddings
through onnxruntime, int8 keeps the down-projections in fp32 and stays close, the settings travel in the folder,
and the loaders answer misuse in one clear line; the installed all-MiniLM-L6-v2 copy in the Hugging Face cache."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from conftest import make_model

from simcse_hub import SimCSE, save_model
from simcse_hub.inference import ONNX_FILE, ONNX_SETTINGS, export_onnx

pytest.importorskip("onnxruntime", reason="needs the onnx extra: pip install 'simcse-hub[onnx]'")
onnx = pytest.importorskip("onnx", reason="needs the onnx extra: pip install 'simcse-hub[onnx]'")

# (family, pooler_type, mlp_only_train): the five poolers, and 'cls' with the MLP at inference (the head)
VARIANTS = [("bert", "cls", False), ("bert", "cls", True), ("bert", "cls_before_pooler", False),
            ("bert", "avg", False), ("bert", "avg_top2", False), ("bert", "avg_first_last", False),
            ("roberta", "avg", False), ("roberta", "cls", False)]


def cosines(a, b) -> np.ndarray:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return np.sum(a * b, axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


@pytest.fixture(scope="module")
def exported(tmp_path_factory, tokenizer):
    """{variant: (SimCSE folder, its fp32 ONNX export)}, exported once for the module."""
    root = tmp_path_factory.mktemp("onnx_models")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny models: one thread is faster, and the same numerics
    folders = {}
    for family, pooler, mlp_only_train in VARIANTS:
        name = f"{family}-{pooler}-{'mlp_only_train' if mlp_only_train else 'mlp'}"
        model = make_model(family, seed=3, pooler_type=pooler, mlp_only_train=mlp_only_train)
        folder = save_model(model, root / name, tokenizer)
        export_onnx(folder, root / f"{name}-onnx")
        folders[(family, pooler, mlp_only_train)] = folder, root / f"{name}-onnx"
    yield folders
    torch.set_num_threads(threads)


@pytest.mark.parametrize("variant", VARIANTS, ids=lambda v: f"{v[0]}-{v[1]}{'-mlp_only_train' * v[2]}")
def test_every_pooler_gives_the_pytorch_embeddings_through_onnxruntime(exported, variant, sentences):
    folder, out = exported[variant]
    reference, onnx_tool = SimCSE(folder, device="cpu"), SimCSE(out, device="cpu")
    assert onnx_tool.kind == "onnx" and onnx_tool.session is not None and onnx_tool.model is None
    assert (onnx_tool.pooler, onnx_tool.precision, onnx_tool.max_length) == (variant[1], "fp32", reference.max_length)
    texts = [*sentences, "", "a " * 80]  # the empty sentence, and one truncated at max_length
    expected = reference.encode(texts, normalize_to_unit=False, return_numpy=True)  # (n, 32)
    assert cosines(onnx_tool.encode(texts, normalize_to_unit=False, return_numpy=True), expected).min() >= 0.99999
    assert np.allclose(onnx_tool.encode(texts, batch_size=3), onnx_tool.encode(texts), atol=1e-6)  # batching
    assert onnx_tool.encode([]).shape == (0, 32)


def test_the_folder_holds_a_standard_config_the_tokenizer_and_a_dynamic_graph(exported):
    folder, out = exported[("bert", "avg", False)]
    config = json.loads((out / "config.json").read_text())
    assert config["model_type"] == "bert" and "auto_map" not in config  # the encoder's own: no remote code
    assert config[ONNX_SETTINGS] == {"file": ONNX_FILE, "pooler_type": "avg", "precision": "fp32",
                                     "max_length": SimCSE(folder).max_length, "fp32_matmuls": []}
    assert (out / "tokenizer_config.json").is_file() and not list(out.glob("*.safetensors"))
    graph = onnx.load(str(out / ONNX_FILE)).graph
    assert [item.name for item in graph.output] == ["last_hidden_state", "pooler_output"]
    for item in graph.input:  # input_ids, token_type_ids, attention_mask: (batch, sequence), both dynamic
        assert [dim.dim_param for dim in item.type.tensor_type.shape.dim] == ["batch", "sequence"]
    assert json.loads((out / "modules.json").read_text())[1]["type"].endswith("Pooling")


def test_int8_keeps_the_down_projections_fp32_and_stays_close(exported, tmp_path, sentences):
    folder, _ = exported[("bert", "avg", False)]
    out = tmp_path / "int8"
    export_onnx(folder, out, quantize="int8")
    graph = onnx.load(str(out / ONNX_FILE)).graph
    settings = json.loads((out / "config.json").read_text())[ONNX_SETTINGS]
    kept = settings["fp32_matmuls"]
    assert settings["precision"] == "int8" and len(kept) == 2  # one down-projection per layer
    operations = {node.name: node.op_type for node in graph.node}
    assert all(operations[name] == "MatMul" for name in kept)
    assert sum(op == "MatMulInteger" for op in operations.values()) == 2 * 5  # Q, K, V, attention output, up
    int8 = SimCSE(out, device="cpu")
    assert int8.precision == "int8"
    agreement = cosines(int8.encode(sentences), SimCSE(folder, device="cpu").encode(sentences))
    assert agreement.mean() >= 0.98, agreement


def test_misuse_is_answered_in_one_clear_line(exported, tmp_path):
    folder, out = exported[("bert", "cls", False)]
    with pytest.raises(ValueError, match=r"pooler='avg': the pooler of an ONNX export is part of its graph \('cls'\)"):
        SimCSE(out, pooler="avg")
    with pytest.raises(ValueError, match="precision='bf16': an ONNX export computes in the precision it was"):
        SimCSE(out, precision="bf16")
    with pytest.raises(OSError, match="is an ONNX export, without PyTorch weights: load it with backend='onnx'"):
        SimCSE(out, backend="torch")
    with pytest.raises(OSError, match="is not an ONNX export .*simcse-hub export MODEL --onnx OUT"):
        SimCSE(folder, backend="onnx")
    with pytest.raises(ValueError, match="backend='tensorrt': expected 'torch', 'onnx' or None"):
        SimCSE(folder, backend="tensorrt")
    with pytest.raises(FileExistsError, match="holds a model: the ONNX export needs a folder of its own"):
        export_onnx(folder, folder)
    with pytest.raises(ValueError, match="quantize='int4': expected None"):
        export_onnx(folder, tmp_path / "x", quantize="int4")
    with pytest.raises(ValueError, match="is an ONNX export already; export the PyTorch model it came from"):
        export_onnx(out, tmp_path / "again")
    with pytest.raises(ValueError, match="loaded in int8; export it in fp32"):
        export_onnx(SimCSE(folder, precision="int8"), tmp_path / "again")
    (out / ONNX_FILE).rename(out / "moved.onnx")
    try:
        with pytest.raises(OSError, match="onnx/model.onnx is missing: the ONNX export is incomplete"):
            SimCSE(out)
    finally:
        (out / "moved.onnx").rename(out / ONNX_FILE)


def test_whitening_travels_with_the_export(exported, tmp_path, sentences):
    import shutil

    from simcse_hub.postprocess import Whitening

    folder = tmp_path / "whitened"
    shutil.copytree(exported[("bert", "avg", False)][0], folder)
    raw = SimCSE(folder).encode(sentences, normalize_to_unit=False, return_numpy=True).astype(np.float64)
    Whitening().fit(raw, k=6).save(folder)
    export_onnx(folder, tmp_path / "whitened-onnx")
    onnx_tool = SimCSE(tmp_path / "whitened-onnx")
    assert onnx_tool.whitening is not None and onnx_tool.embedding_dim == 6
    assert np.allclose(onnx_tool.encode(sentences), SimCSE(folder).encode(sentences), atol=1e-5)


def test_cli_export_writes_an_onnx_folder_that_encode_reads(exported, tmp_path, sentences, capsys):
    from simcse_hub import cli

    folder, _ = exported[("bert", "avg_top2", False)]
    out = tmp_path / "cli-int8"
    assert cli.main(["export", str(folder), "--onnx", str(out), "--quantize", "int8"]) == 0
    assert f"Wrote the ONNX export (int8) of {folder}" in capsys.readouterr().out
    assert SimCSE(out).precision == "int8"
    source = tmp_path / "sentences.txt"
    source.write_text("\n".join(sentences) + "\n", encoding="utf-8")
    assert cli.main(["encode", str(out), "--input", str(source), "--output", str(tmp_path / "e.npy")]) == 0
    assert cosines(np.load(tmp_path / "e.npy"), SimCSE(folder).encode(sentences)).mean() >= 0.98
    assert cli.main(["export", str(folder), "--quantize", "int8"]) == 2
    assert "--quantize int8 applies to the ONNX export: give --onnx OUT too." in capsys.readouterr().err
    assert cli.main(["export", str(folder), "--onnx", str(folder)]) == 2
    assert "holds a model: the ONNX export needs a folder of its own" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------------- real model


@pytest.mark.integration
def test_minilm_exports_with_the_sentence_transformers_embeddings(minilm_path, tmp_path, sentences):
    from sentence_transformers import SentenceTransformer

    expected = SentenceTransformer(str(minilm_path), device="cpu").encode(sentences)  # (n, 384)
    export_onnx(minilm_path, tmp_path / "fp32")
    export_onnx(minilm_path, tmp_path / "int8", quantize="int8")
    assert cosines(SimCSE(tmp_path / "fp32").encode(sentences), expected).min() >= 0.99999
    assert cosines(SimCSE(tmp_path / "int8").encode(sentences), expected).mean() >= 0.98


OFFLINE_LOADERS = """
import logging, sys
logging.basicConfig(level=logging.INFO)
from simcse_hub.inference import cache_offline_copy
snapshot = cache_offline_copy()
assert cache_offline_copy() == snapshot  # a second call changes nothing
from sentence_transformers import SentenceTransformer
from transformers import AutoModel, AutoTokenizer
name = "sentence-transformers/all-MiniLM-L6-v2"
vector = SentenceTransformer(name, device="cpu").encode(["A man is playing a guitar."])[0]
reference = SentenceTransformer(sys.argv[1], device="cpu").encode(["A man is playing a guitar."])[0]
assert abs(vector - reference).max() < 1e-6
AutoTokenizer.from_pretrained(name)
print(type(AutoModel.from_pretrained(name)).__name__, snapshot)
"""


@pytest.mark.integration
def test_the_offline_copy_placed_in_the_cache_loads_in_sentence_transformers_and_transformers(minilm_path, tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(tmp_path / "hub"), "HF_HOME": str(tmp_path)}
    before = subprocess.run([sys.executable, "-c", "from sentence_transformers import SentenceTransformer; "
                             "SentenceTransformer('sentence-transformers/all-MiniLM-L6-v2')"],
                            capture_output=True, text=True, env=env, timeout=300)
    assert before.returncode != 0  # offline with an empty cache: sentence-transformers alone cannot load it
    result = subprocess.run([sys.executable, "-c", OFFLINE_LOADERS, str(minilm_path)], capture_output=True,
                            text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    model_class, snapshot = result.stdout.split()
    assert model_class == "BertModel" and snapshot.startswith(str(tmp_path / "hub"))
    assert "Placed the installed offline copy of sentence-transformers/all-MiniLM-L6-v2" in result.stderr
