"""The saved folder loads three ways with the same embeddings, for every pooler; sentence-transformers models
convert back into SimCSE checkpoints."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import make_model, remote_code_embeddings
from simcse_hub.modeling.formats_simcse import standard_pooling_mode

from simcse_hub import POOLER_TYPES, SimCSEModel
from simcse_hub.train import save_model

VARIANTS = [(p, m) for p in POOLER_TYPES for m in (False, True)]


def reference(model, tokenizer, sentences):
    with torch.no_grad():
        return model.eval()(**tokenizer(sentences, padding=True, return_tensors="pt")).pooler_output


def test_every_pooler_loads_three_ways_with_equal_embeddings(tokenizer, sentences, tmp_path):
    from sentence_transformers import SentenceTransformer

    folders, expected = [], []
    for pooler_type, mlp_only_train in VARIANTS:
        model = make_model("roberta", pooler_type=pooler_type, mlp_only_train=mlp_only_train)
        folder = save_model(model, tmp_path / f"{pooler_type}-{mlp_only_train}", tokenizer)
        folders.append(folder)
        expected.append(reference(model, tokenizer, sentences))
        st = SentenceTransformer(str(folder), device="cpu")
        got = st.encode(sentences, convert_to_tensor=True)
        assert (got - expected[-1]).abs().max().item() < 1e-5, (pooler_type, mlp_only_train)
        uses_pooling = standard_pooling_mode(model.config) is not None
        assert [type(m).__name__ for m in st] == (["Transformer", "Pooling"] if uses_pooling else ["Transformer"])
        assert st.similarity_fn_name == "cosine"
    for (pooler_type, mlp), remote, local in zip(VARIANTS, remote_code_embeddings(folders, sentences), expected):
        assert (remote - local).abs().max().item() < 1e-6, (pooler_type, mlp)


def test_saved_folder_layout(tokenizer, tmp_path):
    save_model(make_model("bert", pooler_type="cls"), tmp_path, tokenizer)
    modules = json.loads((tmp_path / "modules.json").read_text())
    assert modules == [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.base.modules.transformer.Transformer"}
    ]
    st_config = json.loads((tmp_path / "sentence_bert_config.json").read_text())
    assert st_config["modality_config"]["text"]["method_output_name"] == "pooler_output"
    assert json.loads((tmp_path / "config_sentence_transformers.json").read_text())["similarity_fn_name"] == "cosine"
    for name in ("model.safetensors", "config.json", "tokenizer_config.json", "modeling_simcse.py"):
        assert (tmp_path / name).exists(), name


def test_save_model_rejects_other_models(tmp_path):
    with pytest.raises(TypeError, match="save_model expects a SimCSEModel, got Linear"):
        save_model(torch.nn.Linear(2, 2), tmp_path)


@pytest.mark.parametrize("mode, pooler_type", [("mean", "avg"), ("cls", "cls_before_pooler")])
def test_from_sentence_transformer_gives_the_same_embeddings(mode, pooler_type, tokenizer, sentences, tmp_path):
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.base.modules.transformer import Transformer
    from sentence_transformers.sentence_transformer.modules import Normalize, Pooling

    encoder_dir = tmp_path / "encoder"
    make_model("bert").encoder.save_pretrained(encoder_dir)
    tokenizer.save_pretrained(encoder_dir)
    transformer = Transformer(str(encoder_dir))
    st = SentenceTransformer(modules=[transformer, Pooling(32, pooling_mode=mode), Normalize()], device="cpu")
    st.save(str(tmp_path / "st"))
    for source in (st, str(tmp_path / "st")):
        model = SimCSEModel.from_sentence_transformer(source)
        assert model.config.pooler_type == pooler_type
        got = torch.nn.functional.normalize(reference(model, tokenizer, sentences), dim=-1)
        assert (got - st.encode(sentences, convert_to_tensor=True)).abs().max().item() < 1e-5


def test_from_sentence_transformer_rejects_max_pooling(tokenizer, tmp_path):
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.base.modules.transformer import Transformer
    from sentence_transformers.sentence_transformer.modules import Pooling

    make_model("bert").encoder.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    st = SentenceTransformer(modules=[Transformer(str(tmp_path)), Pooling(32, pooling_mode="max")], device="cpu")
    with pytest.raises(ValueError, match="pooling mode 'max' has no SimCSE pooler"):
        SimCSEModel.from_sentence_transformer(st)


def test_every_file_of_a_saved_folder_has_the_usual_mode(tokenizer, tmp_path):
    """safetensors writes its file 0600; the weights of a saved folder get the mode of its other files (0666 less the
    umask), so a folder shared or served from this machine is readable like any other."""
    import os
    import stat

    umask = os.umask(0o022)
    try:
        folder = save_model(make_model("bert", pooler_type="avg"), tmp_path / "model", tokenizer)
    finally:
        os.umask(umask)
    modes = {path.name: stat.S_IMODE(path.stat().st_mode) for path in folder.iterdir() if path.is_file()}
    assert modes["model.safetensors"] == modes["config.json"] == 0o644, modes
