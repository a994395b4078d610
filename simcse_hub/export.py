"""Formats for serving stacks: a SimCSE model written so that tools which never run simcse_hub's remote code load
it with the same embeddings.

The portable folder (:func:`export_portable`, ``simcse-hub export MODEL --portable OUT``) is the encoder as a
standard transformers checkpoint (its own ``model_type``, e.g. ``bert``, its own weight names, no ``auto_map``), its
tokenizer, and sentence-transformers' own modules for the SimCSE pooler:

==============================================  =================================================================
SimCSE pooler                                   sentence-transformers modules after ``Transformer``
==============================================  =================================================================
``cls`` (the MLP at inference)                  ``Pooling("cls")``, ``Dense`` (Linear + Tanh: the MLP)
``cls`` (``mlp_only_train``), ``cls_before_pooler``  ``Pooling("cls")``
``avg``                                         ``Pooling("mean")``
``avg_top2``, ``avg_first_last``                ``WeightedLayerPooling`` (weight 1 on the two layers averaged),
                                                ``Pooling("mean")``; ``config.json`` sets ``output_hidden_states``
==============================================  =================================================================

A model whitened inside (``config.whitening_dim``) gets one more ``Dense`` module, without activation, holding the
BERT-whitening. A flow (``flow.safetensors``, non-linear) has no standard module: such a model is refused.

Where the encoder's class has a pooler (BERT, RoBERTa, ...), its weights are written too, so a plain
``AutoModel.from_pretrained(OUT)`` loads without a warning: the MLP for ``cls`` with the MLP at inference, so that
``pooler_output`` is the sentence embedding (as the original princeton-nlp ``sup-simcse-*`` releases), and zeros for
every other pooler, so that ``pooler_output`` is a zero vector, never a plausible wrong embedding. The model card
(``simcse_hub.card``, from ``simcse_card.json``, which travels with the folder and records the variant) writes the
pooling out as code for each loader. Before the folder is put in place, sentence-transformers loads it from disk
and its embeddings are compared with the SimCSE model's.
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from sentence_transformers import SentenceTransformer
from sentence_transformers.base.modules import Dense, Transformer
from sentence_transformers.sentence_transformer.modules import Pooling, WeightedLayerPooling
from torch import nn
from transformers import AutoModel

from simcse_hub.card import CARD_DATA_FILE, CARD_FILE, PLOT_FILE, SimCSEModelCardData, read_json, render_model_card
from simcse_hub.inference import CHECK_SENTENCES, model_file, public_model_name, resolve_model, saved_max_seq_length
from simcse_hub.modeling.formats_simcse import default_max_length
from simcse_hub.modeling.modeling_simcse import SimCSEModel
from simcse_hub.postprocess import FLOW_FILE, WHITENING_FILE

logger = logging.getLogger(__name__)

MIN_COSINE = 0.99999  # every loader of the portable folder gives the SimCSE model's embedding to this cosine


def load_simcse(name: str | os.PathLike) -> tuple[SimCSEModel, str, int]:
    """The SimCSE model ``name`` (a folder or Hub id) in eval mode, where its files are, and its truncation length
    (sentence-transformers' ``max_seq_length`` of the folder, as ``simcse_hub.SimCSE`` reads it). `ValueError` /
    `OSError` naming the model for anything but a SimCSE model with a tokenizer and without a post-processing file
    (a flow, or an old whitening file: whitening inside the model is exported)."""
    location = resolve_model(name)
    config_file = model_file(location, "config.json", required=True)
    model_type = read_json(config_file).get("model_type") if config_file else None
    if model_type != "simcse":
        raise ValueError(f"{str(name)!r} is a {model_type!r} model, not a SimCSE model (config.json model_type: "
                         "simcse); export a folder written by `simcse-hub train` or save_model (a portable folder "
                         "is already exported: push it without --portable).")
    for filename, method in ((WHITENING_FILE, "BERT-whitening"), (FLOW_FILE, "BERT-flow")):
        if model_file(location, filename) is not None:
            raise ValueError(f"{str(name)}/{filename}: {method} has no standard sentence-transformers module "
                             "beside a model, so the portable folder cannot give these embeddings; export a copy of "
                             f"the folder without {filename} (the raw embeddings), or serve this one with "
                             "simcse_hub.SimCSE" + (", or whiten inside the model: simcse-hub evaluate MODEL --whiten "
                                                    "CORPUS --save-whitening." if filename == WHITENING_FILE else "."))
    model = SimCSEModel.from_pretrained(location).eval()
    if model.tokenizer is None:
        raise OSError(f"{str(name)!r} has no tokenizer (tokenizer_config.json) beside its weights; save it with "
                      "save_model(model, folder, tokenizer) and export again.")
    return model, location, saved_max_seq_length(location) or default_max_length(model.config, model.tokenizer)


def standard_pooler(model: SimCSEModel) -> str | None:
    """Give ``model.encoder`` the pooler its class is built with, if any: the SimCSE MLP where the embedding is the
    MLP over the first token and that pooler computes exactly this (returns ``"embedding"``), else zeros
    (``"zero"``); ``None`` for a class without a pooler (DistilBERT, ...)."""
    encoder = model.encoder
    with torch.device("meta"):  # the class's own pooler, built without allocating the encoder
        template = getattr(AutoModel.from_config(encoder.config), "pooler", None)
    if not isinstance(template, nn.Module) or not list(template.parameters()):
        return None
    pooler = template.to_empty(device=next(encoder.parameters()).device)
    with torch.no_grad():
        for parameter in pooler.parameters():
            parameter.zero_()
        if model.config.uses_mlp_at_inference and set(pooler.state_dict()) == {"dense.weight", "dense.bias"}:
            pooler.load_state_dict(model.mlp.state_dict())
            probe = torch.randn(2, 3, model.config.hidden_size)  # (batch, seq_len, hidden)
            if torch.allclose(pooler(probe), model.mlp(probe[:, 0]), atol=1e-6):
                encoder.pooler = pooler
                return "embedding"
            for parameter in pooler.parameters():
                parameter.zero_()
    encoder.pooler = pooler
    return "zero"


def pooling_modules(model: SimCSEModel) -> list[nn.Module]:
    """The sentence-transformers modules after ``Transformer`` that compute ``model``'s sentence embedding."""
    config, dim = model.config, model.config.hidden_size
    layers = config.encoder_config.num_hidden_layers
    modules: list[nn.Module] = []
    if config.pooler_type in ("avg_top2", "avg_first_last"):  # hidden_states[0] is the embedding layer's output
        weights = torch.zeros(layers + 1)
        weights[[-2, -1] if config.pooler_type == "avg_top2" else [1, -1]] += 1  # (layers + 1,)
        start = 1 if config.pooler_type == "avg_first_last" else layers - 1
        modules.append(WeightedLayerPooling(dim, num_hidden_layers=layers, layer_start=start,
                                            layer_weights=nn.Parameter(weights[start:].clone())))
    modules.append(Pooling(dim, "cls" if config.pooler_type.startswith("cls") else "mean"))
    for linear, activation in ((model.mlp.dense if config.uses_mlp_at_inference else None, nn.Tanh()),
                               (model.whitening, nn.Identity())):  # the MLP head; BERT-whitening, (x - mean) @ W
        if linear is not None:
            modules.append(Dense(linear.in_features, linear.out_features, activation_function=activation,
                                 init_weight=linear.weight.detach().clone(), init_bias=linear.bias.detach().clone()))
    return modules


def write_portable(model: SimCSEModel, folder: Path, max_seq_length: int) -> dict[str, Any]:
    """Write the portable variant of ``model`` into the empty ``folder``: the standard encoder, the tokenizer and
    the sentence-transformers files (through ``SentenceTransformer.save``). Returns the facts the card needs."""
    layered = model.config.pooler_type in ("avg_top2", "avg_first_last")
    pooler_output = standard_pooler(model)
    encoder = model.encoder
    encoder.config.output_hidden_states = layered  # WeightedLayerPooling reads the layers only when the config asks
    encoder.save_pretrained(folder)
    model.tokenizer.save_pretrained(folder)
    modules = [Transformer(str(folder), max_seq_length=max_seq_length), *pooling_modules(model)]
    SentenceTransformer(modules=modules, device="cpu", similarity_fn_name="cosine").save(
        str(folder), create_model_card=False)
    dense = [f"{i}_Dense" for i, module in enumerate(modules) if isinstance(module, Dense)]
    whitening = dense.pop() if model.whitening is not None else None
    return {"pooler_type": model.config.pooler_type, "mlp_only_train": model.config.mlp_only_train,
            "pooler_output": pooler_output, "dense": dense[0] if dense and pooler_output != "embedding" else None,
            "whitening": whitening}


def check_portable(folder: Path, expected: torch.Tensor, pooler_type: str) -> None:
    """Load ``folder`` with sentence-transformers (no remote code) and compare its embeddings of
    :data:`CHECK_SENTENCES` with ``expected`` (the SimCSE model's); `RuntimeError` below :data:`MIN_COSINE`."""
    loaded = SentenceTransformer(str(folder), device="cpu", local_files_only=True)
    got = loaded.encode(list(CHECK_SENTENCES), convert_to_tensor=True)  # (n, dim)
    worst = float(F.cosine_similarity(got.float().cpu(), expected, dim=-1).min())
    if not worst >= MIN_COSINE:
        raise RuntimeError(f"the portable folder's embeddings differ from the SimCSE model's (pooler {pooler_type}, "
                           f"lowest cosine {worst:.6f} < {MIN_COSINE}); nothing was written. Please report this.")


def export_portable(model_name_or_path: str | os.PathLike, output_dir: str | os.PathLike,
                    repo_id: str | None = None) -> Path:
    r"""Write the portable variant of a SimCSE model: a folder that ``SentenceTransformer(OUT)`` (without
    ``trust_remote_code``), ``AutoModel.from_pretrained(OUT)`` (the encoder's own class, pooled as the card writes)
    and ``simcse_hub.SimCSE(OUT)`` load with the SimCSE model's embeddings (cosine >= 0.99999, checked before the
    folder is put in place), with its model card and ``simcse_card.json`` (the same evaluation results).

    Args:
        model_name_or_path (`str` or `os.PathLike`): a SimCSE model folder (written by ``simcse-hub train`` or
            ``save_model``) or Hub id. The folder is only read.
        output_dir (`str` or `os.PathLike`): the portable folder; it must not exist or be empty. It appears whole
            or not at all.
        repo_id (`str`, *optional*): the Hub repo the card's snippets load (defaults to the folder as given).

    Returns:
        `Path`: ``output_dir``.

    Raises:
        `ValueError`: not a SimCSE model, or one with a post-processing file beside it (BERT-flow, or the
            whitening.safetensors of an earlier simcse_hub: save the whitening inside the model again).
        `OSError`: no such model, no tokenizer, or ``output_dir`` is not empty.

    >>> export_portable("outputs/my-simcse", "outputs/my-simcse-portable")  # doctest: +SKIP
    PosixPath('outputs/my-simcse-portable')
    """
    out = Path(output_dir)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise FileExistsError(f"{output_dir}: already exists and is not an empty folder; give a new folder for the "
                              "portable model.")
    model, location, max_seq_length = load_simcse(model_name_or_path)
    inputs = model.tokenizer(list(CHECK_SENTENCES), padding=True, truncation=True, max_length=max_seq_length,
                             return_tensors="pt")
    with torch.no_grad():
        expected = model(**inputs).pooler_output  # (n, dim)
    card = (SimCSEModelCardData.from_folder(location) if os.path.isdir(location)
            else SimCSEModelCardData.from_simcse_config(model.config, model_file(location, CARD_DATA_FILE)))
    out.parent.mkdir(parents=True, exist_ok=True)
    for leftover in out.parent.glob(f".tmp-{out.name}-*"):  # of an export that was killed
        shutil.rmtree(leftover, ignore_errors=True)
    tmp = out.with_name(f".tmp-{out.name}-{os.getpid()}")  # never uploaded (hub.IGNORE_PATTERNS)
    try:
        facts = write_portable(model, tmp, max_seq_length)
        check_portable(tmp, expected, model.config.pooler_type)
        card.as_portable(public_model_name(model_name_or_path), **facts).save(tmp, card=False)
        if card.plot and model_file(location, PLOT_FILE):  # the card shows the plot of alignment and uniformity
            shutil.copy(model_file(location, PLOT_FILE), tmp / PLOT_FILE)
        shown = repo_id or (out.as_posix() if not out.is_absolute() else out.name)  # no path of this machine
        render_model_card(tmp, repo_id=shown).save(tmp / CARD_FILE)
        if out.exists():
            out.rmdir()
        os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    logger.info("Wrote the portable variant of %s to %s (%s, pooler %s)", model_name_or_path, out,
                type(model.encoder).__name__, model.config.pooler_type)
    return out


__all__ = ["CHECK_SENTENCES", "MIN_COSINE", "export_portable", "load_simcse", "pooling_modules", "standard_pooler",
           "write_portable"]
