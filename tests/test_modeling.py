"""SimCSEConfig and SimCSEModel: validation, poolers, the training loss, save/load, remote code, official imports."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F
from conftest import ENCODER_CONFIGS, make_config, make_model, remote_code_embeddings, tiny_vocab
from simcse_hub.modeling.formats_simcse import official_recipe
from transformers import AutoConfig, AutoModel, BertModel

from simcse_hub import POOLER_TYPES, SimCSEConfig, SimCSEModel, info_nce
from simcse_hub.train import save_model

FAMILIES = list(ENCODER_CONFIGS)


def batch(tokenizer, sentences):
    return tokenizer(sentences, padding=True, return_tensors="pt")


# ------------------------------------------------------------------------------------------- config


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("pooler_type", "max", "pooler_type='max' is not supported; expected one of ['cls', 'cls_before_pooler'"),
        ("temperature", 0.0, "temperature=0.0 must be a number greater than 0"),
        ("temperature", -1, "temperature=-1 must be a number greater than 0"),
        ("temperature", "0.05", "temperature='0.05' must be a number"),
        ("mlm_weight", -0.5, "mlm_weight=-0.5 must be a number >= 0"),
        ("mlp_only_train", "yes", "mlp_only_train='yes' must be a bool"),
        ("hard_negative_weight", None, "hard_negative_weight=None must be a number"),
    ],
)
def test_config_rejects_invalid_values_naming_the_field(field, value, message):
    with pytest.raises((ValueError, TypeError)) as info:
        make_config("bert", **{field: value})
    assert field in str(info.value)
    if isinstance(info.value, ValueError) and message:
        assert message in str(info.value)


def test_config_dict_encoder_needs_model_type():
    with pytest.raises(ValueError, match="encoder_config: a dictionary encoder configuration must contain "
                                         "'model_type'"):
        SimCSEConfig(encoder_config={"hidden_size": 32})


@pytest.mark.parametrize("family", FAMILIES)
def test_config_round_trips_through_dict_and_save_pretrained(family, tmp_path):
    config = make_config(family, pooler_type="avg_top2", temperature=0.1, hard_negative_weight=1.5, mlp_only_train=True)
    again = SimCSEConfig.from_dict(config.to_dict())
    assert again.to_dict() == config.to_dict()
    assert again.encoder_config.model_type == family
    config.save_pretrained(tmp_path)
    loaded = AutoConfig.from_pretrained(tmp_path)
    assert isinstance(loaded, SimCSEConfig)
    assert (loaded.pooler_type, loaded.temperature, loaded.hard_negative_weight) == ("avg_top2", 0.1, 1.5)
    assert loaded.encoder_config.to_dict() == config.encoder_config.to_dict()
    assert loaded.hidden_size == 32


def test_config_json_names_the_encoder_without_a_path_of_this_machine(tmp_path):
    """Every writer of config.json (here the config alone) names the encoder and base model by public_name."""
    config = make_config("bert")
    config.encoder_config._name_or_path = str(tmp_path / "hub" / "models--google-bert--bert-base-uncased" / "snapshots"
                                              / "0123abc")
    config.base_model_name_or_path = str(tmp_path / "encoders" / "my-bert")
    config.save_pretrained(tmp_path / "saved")
    text = (tmp_path / "saved" / "config.json").read_text()
    saved = json.loads(text)
    assert saved["encoder_config"]["_name_or_path"] == "google-bert/bert-base-uncased"
    assert saved["base_model_name_or_path"] == "my-bert" and str(tmp_path) not in text
    assert config.base_model_name_or_path == str(tmp_path / "encoders" / "my-bert")  # in memory: as set


# ------------------------------------------------------------------------------------------- poolers


def reference_pooler(model, inputs, pooler_type, use_mlp):
    """What SimCSE's original code computes, written out from the encoder's hidden states."""
    out = model.encoder(**inputs, output_hidden_states=True)
    mask = inputs["attention_mask"].unsqueeze(-1).float()
    hs = out.hidden_states

    def avg(h):
        return (h * mask).sum(1) / mask.sum(1)

    pooled = {
        "cls": hs[-1][:, 0],
        "cls_before_pooler": hs[-1][:, 0],
        "avg": avg(hs[-1]),
        "avg_top2": avg((hs[-1] + hs[-2]) / 2),
        "avg_first_last": avg((hs[1] + hs[-1]) / 2),
    }[pooler_type]
    if use_mlp:
        pooled = torch.tanh(model.mlp.dense(pooled))
    return pooled


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("pooler_type", POOLER_TYPES)
def test_pooler_output_is_the_configured_pooler(family, pooler_type, tokenizer, sentences):
    for mlp_only_train in (False, True):
        model = make_model(family, pooler_type=pooler_type, mlp_only_train=mlp_only_train).eval()
        inputs = batch(tokenizer, sentences[:4])
        if family == "distilbert":
            inputs.pop("token_type_ids")
        with torch.no_grad():
            out = model(**inputs)
            expected = reference_pooler(
                model, inputs, pooler_type, use_mlp=pooler_type == "cls" and not mlp_only_train
            )
        assert out.last_hidden_state.shape == (4, inputs["input_ids"].shape[1], 32)
        torch.testing.assert_close(out.pooler_output, expected, rtol=0, atol=1e-6)
        assert out[0] is out.last_hidden_state  # first field is last_hidden_state


def test_cls_uses_mlp_in_training_even_with_mlp_only_train(tokenizer, sentences):
    model = make_model("bert", pooler_type="cls", mlp_only_train=True)
    model.config.encoder_config.hidden_dropout_prob = 0.0
    inputs = batch(tokenizer, sentences[:3])
    model.train()
    for module in model.modules():  # no dropout, so train and eval are comparable
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
    with torch.no_grad():
        train_out = model(**inputs).pooler_output
        model.eval()
        eval_out = model(**inputs).pooler_output
        cls = model.encoder(**inputs).last_hidden_state[:, 0]
    torch.testing.assert_close(eval_out, cls)
    torch.testing.assert_close(train_out, torch.tanh(model.mlp.dense(cls)))


def test_padding_does_not_change_embeddings(tokenizer):
    model = make_model("bert", pooler_type="avg_first_last").eval()
    with torch.no_grad():
        alone = model(**batch(tokenizer, ["A dog runs."])).pooler_output
        padded = model(**batch(tokenizer, ["A dog runs.", "A man is playing a guitar on the street with a dog."]))
    torch.testing.assert_close(padded.pooler_output[:1], alone, rtol=0, atol=1e-5)


# ------------------------------------------------------------------------------------------- training loss


def hand_info_nce(z1, z2, z3=None, temperature=0.05, weight=0.0):
    """InfoNCE written out term by term, as in the paper: -log(e^{s_ii/T} / sum_j e^{s_ij/T} [+ w e^{s_ij^-/T}])."""
    n = z1.shape[0]
    total = 0.0
    for i in range(n):
        terms = [math.exp(F.cosine_similarity(z1[i], z2[j], dim=0).item() / temperature) for j in range(n)]
        if z3 is not None:
            for j in range(n):
                logit = F.cosine_similarity(z1[i], z3[j], dim=0).item() / temperature + (weight if i == j else 0.0)
                terms.append(math.exp(logit))
        total += -math.log(terms[i] / sum(terms))
    return total / n


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("num_sent, weight", [(2, 0.0), (3, 0.0), (3, 1.0)])
def test_training_forward_loss_equals_hand_computed_info_nce(family, num_sent, weight, tokenizer, sentences):
    model = make_model(family, pooler_type="cls", temperature=0.05, hard_negative_weight=weight)
    model.train()
    groups = [sentences[i : i + num_sent] for i in range(0, 4 * num_sent, num_sent)]
    groups = [g if len(g) == num_sent else (g + sentences)[:num_sent] for g in groups]
    flat = [s for g in groups for s in g]
    enc = batch(tokenizer, flat)
    if family == "distilbert":
        enc.pop("token_type_ids")
    grouped = {k: v.view(len(groups), num_sent, -1) for k, v in enc.items()}
    torch.manual_seed(7)
    out = model(**grouped)
    # The embeddings the loss saw are the returned pooler outputs (same dropout masks).
    z = out.pooler_output.detach().view(len(groups), num_sent, -1)
    expected = hand_info_nce(z[:, 0], z[:, 1], z[:, 2] if num_sent == 3 else None, 0.05, weight)
    assert out.loss.item() == pytest.approx(expected, rel=1e-5)
    out.loss.backward()
    assert model.mlp.dense.weight.grad is not None and model.mlp.dense.weight.grad.abs().sum() > 0


def test_info_nce_known_value():
    # Two orthogonal anchors equal to their positives, T=1: each row is softmax over (1, 0) -> log(1 + e^-1).
    eye = torch.eye(2)
    assert info_nce(eye, eye, temperature=1.0).item() == pytest.approx(math.log(1 + math.exp(-1)), rel=1e-6)


def test_grouped_input_with_wrong_num_sent_is_rejected(tokenizer):
    model = make_model("bert")
    ids = torch.ones(2, 4, 5, dtype=torch.long)
    with pytest.raises(ValueError, match=r"num_sent 2 \(anchor, positive\) or 3"):
        model(input_ids=ids)


def test_mlm_auxiliary_loss_is_added(tokenizer, sentences):
    model = make_model("bert", pooler_type="cls", do_mlm=True, mlm_weight=0.5)
    enc = batch(tokenizer, sentences[:4])
    grouped = {k: torch.stack([v, v], dim=1) for k, v in enc.items()}  # (4, 2, seq_len)
    mlm_ids = grouped["input_ids"].clone()
    labels = torch.full_like(mlm_ids, -100)
    labels[:, :, 1] = mlm_ids[:, :, 1]
    mlm_ids[:, :, 1] = tokenizer.mask_token_id
    model.eval()  # deterministic: no dropout, so the parts can be recomputed
    with torch.no_grad():
        total = model(**grouped, mlm_input_ids=mlm_ids, mlm_labels=labels).loss
        contrastive = model(**grouped).loss
        mlm = model.mlm_loss(mlm_ids, labels, grouped["attention_mask"])
    assert mlm.item() > 0
    assert total.item() == pytest.approx(contrastive.item() + 0.5 * mlm.item(), rel=1e-5)


@pytest.mark.parametrize("family", ["bert", "roberta"])
def test_mlm_head_survives_save_and_load(family, tokenizer, sentences, tmp_path):
    """The masked-LM head's tied bias (``decoder.bias`` is the head's ``bias``) is saved once and tied again on load;
    untied, it came back as zeros."""
    model = make_model(family, do_mlm=True).eval()
    with torch.no_grad():
        for parameter in model.lm_head.parameters():
            parameter.normal_()  # unlike any fresh initialisation, so a reset shows
    model.save_pretrained(tmp_path)
    loaded = SimCSEModel.from_pretrained(tmp_path).eval()
    ids = batch(tokenizer, sentences[:4])["input_ids"]
    with torch.no_grad():
        assert loaded.mlm_loss(ids, ids).item() == pytest.approx(model.mlm_loss(ids, ids).item(), rel=1e-6)


def test_mlm_needs_a_known_head():
    with pytest.raises(ValueError, match="do_mlm=True needs a masked-LM head"):
        make_model("distilbert", do_mlm=True)


# ------------------------------------------------------------------------------------------- save / load


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("pooler_type", POOLER_TYPES)
def test_save_load_round_trip_gives_identical_outputs(family, pooler_type, tokenizer, sentences, tmp_path):
    model = make_model(family, pooler_type=pooler_type).eval()
    save_model(model, tmp_path, tokenizer)
    loaded = AutoModel.from_pretrained(tmp_path).eval()
    assert type(loaded) is SimCSEModel
    inputs = batch(tokenizer, sentences)
    if family == "distilbert":
        inputs.pop("token_type_ids")
    with torch.no_grad():
        torch.testing.assert_close(loaded(**inputs).pooler_output, model(**inputs).pooler_output, rtol=0, atol=0)
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["auto_map"] == {
        "AutoConfig": "configuration_simcse.SimCSEConfig",
        "AutoModel": "modeling_simcse.SimCSEModel",
    }
    assert (tmp_path / "model.safetensors").exists()
    for remote_code in ("modeling_simcse.py", "configuration_simcse.py", "heads_simcse.py", "formats_simcse.py"):
        assert (tmp_path / remote_code).exists(), remote_code


def test_remote_code_without_simcse_hub_gives_same_embeddings(tokenizer, sentences, tmp_path):
    expected, folders = [], []
    for family in FAMILIES:
        model = make_model(family, pooler_type="cls").eval()
        folders.append(save_model(model, tmp_path / family, tokenizer))
        inputs = batch(tokenizer, sentences)
        if family == "distilbert":
            inputs.pop("token_type_ids")
        with torch.no_grad():
            expected.append(model(**inputs).pooler_output)
    for family, remote, local in zip(FAMILIES, remote_code_embeddings(folders, sentences), expected):
        assert (remote - local).abs().max().item() < 1e-6, family


# ------------------------------------------------------------------------------------------- official checkpoints


def official_checkpoint(tmp_path, name):
    """A release shaped like princeton-nlp's: a plain BertModel whose pooler holds the trained SimCSE MLP."""
    torch.manual_seed(3)
    encoder = BertModel(ENCODER_CONFIGS["bert"](len(tiny_vocab()))).eval()
    path = tmp_path / name
    encoder.save_pretrained(path)
    return encoder, path


@pytest.mark.parametrize("name, supervised", [("sup-simcse-bert-tiny", True), ("unsup-simcse-bert-tiny", False)])
def test_from_official_uses_the_release_pooler(name, supervised, tokenizer, sentences, tmp_path):
    encoder, path = official_checkpoint(tmp_path, name)
    model = SimCSEModel.from_official(path).eval()
    inputs = batch(tokenizer, sentences)
    with torch.no_grad():
        original = encoder(**inputs)
        # The original recipe: supervised -> `pooler_output` (BERT pooler = SimCSE MLP); unsupervised -> CLS token.
        expected = original.pooler_output if supervised else original.last_hidden_state[:, 0]
        torch.testing.assert_close(model(**inputs).pooler_output, expected, rtol=0, atol=1e-6)
    assert model.config.pooler_type == ("cls" if supervised else "cls_before_pooler")


@pytest.mark.parametrize("name, recipe", [
    ("princeton-nlp/sup-simcse-bert-base-uncased", "sup"), ("/models/unsup-simcse-roberta-large/", "unsup"),
    ("my_unsup_simcse", "unsup"), ("bert-base-uncased", None), ("supersimcse-bert", None),
])
def test_official_recipe_is_read_from_the_release_name(name, recipe):
    assert official_recipe(name) == recipe


def test_from_official_explicit_argument_and_unknown_name(tokenizer, sentences, tmp_path):
    encoder, path = official_checkpoint(tmp_path, "my-release")
    with pytest.raises(ValueError, match="pass supervised=True"):
        SimCSEModel.from_official(path)
    model = SimCSEModel.from_official(path, supervised=True).eval()
    inputs = batch(tokenizer, sentences[:2])
    with torch.no_grad():
        torch.testing.assert_close(model(**inputs).pooler_output, encoder(**inputs).pooler_output)


def test_from_encoder_loads_weights_and_inits_head(tmp_path, tokenizer, sentences):
    torch.manual_seed(5)
    encoder = BertModel(ENCODER_CONFIGS["bert"](len(tiny_vocab()))).eval()
    encoder.save_pretrained(tmp_path)
    model = SimCSEModel.from_encoder(tmp_path, pooler_type="avg").eval()
    assert model.encoder.pooler is None
    inputs = batch(tokenizer, sentences)
    with torch.no_grad():
        last = encoder(**inputs).last_hidden_state
        mask = inputs["attention_mask"].unsqueeze(-1).float()
        torch.testing.assert_close(model(**inputs).pooler_output, (last * mask).sum(1) / mask.sum(1))
    assert model.mlp.dense.weight.std().item() == pytest.approx(0.02, rel=0.3)
    assert model.config.base_model_name_or_path == tmp_path.name  # a folder is saved by its name, not its path


@pytest.mark.parametrize("do_mlm", [False, True])
def test_an_encoder_stored_in_half_precision_gives_a_float32_model(tmp_path, tokenizer, sentences, do_mlm):
    """Hub encoders are often stored in float16: the model built around one trains in float32 throughout (its
    config's dtype must not make a float16 encoder under a float32 head), and from_pretrained(dtype=...) still
    gives the whole model in the dtype asked for."""
    torch.manual_seed(5)
    encoder = BertModel(ENCODER_CONFIGS["bert"](len(tiny_vocab()))).eval()
    encoder.half().save_pretrained(tmp_path / "encoder")
    model = SimCSEModel.from_encoder(tmp_path / "encoder", pooler_type="cls", do_mlm=do_mlm)
    assert {p.dtype for p in model.parameters()} == {torch.float32}
    inputs = batch(tokenizer, sentences)
    assert model(**inputs).pooler_output.dtype == torch.float32  # the MLP head and the encoder agree
    expected = encoder.float()(**inputs).last_hidden_state[:, 0]  # the stored weights, exactly
    torch.testing.assert_close(model.eval()(**inputs).last_hidden_state[:, 0], expected)
    model.save_pretrained(tmp_path / "simcse")
    half = SimCSEModel.from_pretrained(tmp_path / "simcse", dtype=torch.bfloat16)
    assert {p.dtype for p in half.parameters()} == {torch.bfloat16}
