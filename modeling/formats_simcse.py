"""The formats a SimCSE model is read from and written to: remote code beside ``modeling_simcse.py`` (imports only
``torch`` and ``transformers``).

* public names: where a saved model came from, without a path of this machine (the one rule, :func:`public_name`);
* the files other loaders read: the tokenizer and the sentence-transformers files (``modules.json``,
  ``sentence_bert_config.json``, ``1_Pooling/config.json``, ``config_sentence_transformers.json``);
* the checks and readers of ``SimCSEModel``'s constructors: finite weights, the tokenizer stored with a model, the
  recipe of an original princeton-nlp release, the pooler of a sentence-transformers model.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import torch
import transformers
from transformers import AutoTokenizer
from transformers.models.auto.tokenization_auto import get_tokenizer_config

logger = logging.getLogger(__name__)

ST_TRANSFORMER_MODULE = "sentence_transformers.base.modules.transformer.Transformer"
ST_POOLING_MODULE = "sentence_transformers.sentence_transformer.modules.pooling.Pooling"
# The sentence-transformers ``Pooling`` mode that computes each SimCSE pooler exactly (``cls`` without the MLP).
ST_POOLING_MODES = {"cls": "cls", "cls_before_pooler": "cls", "avg": "mean"}
# Keyword arguments of `from_pretrained` that say where files come from; the tokenizer is loaded with the same ones.
HUB_KWARGS = ("cache_dir", "force_download", "local_files_only", "token", "revision", "subfolder")
MAX_LENGTH_CAP = 512  # never more tokens than this by default: longer inputs are rare and quadratic in cost


def public_name(name_or_path: Any) -> Any:
    """How a saved model names where it came from, without a path of this machine: a Hub id stays as it is; a
    folder of the Hugging Face cache (``.../models--org--name/snapshots/<hash>``) becomes ``org/name``; any other
    local folder becomes its folder name. Anything that is not a string is returned unchanged.

    >>> public_name("/home/me/.cache/huggingface/hub/models--google-bert--bert-base-uncased/snapshots/abc")
    'google-bert/bert-base-uncased'
    >>> public_name("/home/me/encoders/my-bert"), public_name("google-bert/bert-base-uncased")
    ('my-bert', 'google-bert/bert-base-uncased')
    """
    if not isinstance(name_or_path, str) or not name_or_path:
        return name_or_path
    expanded = os.path.expanduser(name_or_path)
    if not (os.path.isabs(expanded) or name_or_path.startswith((".", "~")) or "\\" in name_or_path
            or name_or_path.count("/") > 1 or os.path.exists(expanded)):
        return name_or_path  # a Hub id
    for part in reversed(Path(expanded).parts):
        if part.startswith("models--") and "--" in part[len("models--"):]:
            return part[len("models--"):].replace("--", "/")
    return Path(os.path.abspath(expanded)).name or name_or_path


def standard_pooling_mode(config: Any) -> str | None:
    """The sentence-transformers ``Pooling`` mode equal to this `SimCSEConfig`'s inference embedding, or ``None``
    (the MLP at inference, a pooler ``Pooling`` lacks, or BERT-whitening: then ``pooler_output`` is read)."""
    if config.uses_mlp_at_inference or config.whitening_dim:
        return None
    return ST_POOLING_MODES.get(config.pooler_type)


def sentence_transformers_files(config: Any, max_seq_length: int | None = None) -> dict[str, Any]:
    r"""The sentence-transformers files of a saved model, ``{relative path: JSON content}``.

    The first module is sentence-transformers' standard ``Transformer``, which loads this ``SimCSEModel`` through
    ``AutoModel``. ``cls_before_pooler``, ``avg`` and ``cls`` with ``mlp_only_train`` are exactly its standard
    ``Pooling`` (``cls`` / ``mean``) over ``last_hidden_state``, written as the usual ``1_Pooling`` module. ``cls``
    with the MLP at inference, ``avg_top2``, ``avg_first_last`` and a whitened model are not ``Pooling``: there the
    ``Transformer`` module reads ``pooler_output`` (its ``modality_config``), which ``forward`` computes with the
    code every other loader runs, so no custom module is needed.

    Args:
        config (`SimCSEConfig`): the model's configuration.
        max_seq_length (`int`, *optional*): the truncation length sentence-transformers uses.
    """
    mode = standard_pooling_mode(config)
    transformer_config: dict[str, Any] = {
        "transformer_task": "feature-extraction",
        "modality_config": {"text": {"method": "forward",
                                     "method_output_name": "last_hidden_state" if mode else "pooler_output"}},
        "module_output_name": "token_embeddings" if mode else "sentence_embedding",
    }
    if max_seq_length is not None:
        transformer_config["max_seq_length"] = int(max_seq_length)
    versions = {"transformers": transformers.__version__, "pytorch": torch.__version__}
    with contextlib.suppress(PackageNotFoundError):  # its version, read without importing it
        versions = {"sentence_transformers": version("sentence-transformers"), **versions}
    files: dict[str, Any] = {
        "sentence_bert_config.json": transformer_config,
        "modules.json": [{"idx": 0, "name": "0", "path": "", "type": ST_TRANSFORMER_MODULE}],
        "config_sentence_transformers.json": {"__version__": versions, "model_type": "SentenceTransformer",
                                              "prompts": {}, "default_prompt_name": None,
                                              "similarity_fn_name": "cosine"},
    }
    if mode is not None:
        files["modules.json"].append({"idx": 1, "name": "1", "path": "1_Pooling", "type": ST_POOLING_MODULE})
        files["1_Pooling/config.json"] = {"embedding_dimension": config.hidden_size, "pooling_mode": mode,
                                          "include_prompt": True}
    return files


def default_max_length(config: Any, tokenizer: Any = None) -> int:
    """The truncation length of a model: the encoder's position limit (``SimCSEConfig.max_input_length``), the
    tokenizer's ``model_max_length`` and ``MAX_LENGTH_CAP`` (512), whichever is smallest; what ``save_pretrained``
    writes as sentence-transformers' ``max_seq_length``."""
    limits = (config.max_input_length, getattr(tokenizer, "model_max_length", None), MAX_LENGTH_CAP)
    return min(limit for limit in limits if limit)


def write_loader_files(folder: Path, config: Any, tokenizer: Any, max_seq_length: int | None) -> None:
    """What the loaders besides ``AutoModel`` read, written into ``folder``: the tokenizer and
    :func:`sentence_transformers_files` (``max_seq_length`` defaults to :func:`default_max_length`). Without a
    tokenizer a warning says what will not load."""
    if tokenizer is not None:
        tokenizer.save_pretrained(folder)
        max_seq_length = default_max_length(config, tokenizer) if max_seq_length is None else max_seq_length
    else:
        logger.warning("%s was saved without a tokenizer: it loads with AutoModel, but SentenceTransformer and "
                       "simcse_hub.SimCSE need one; pass save_pretrained(..., tokenizer=tokenizer).",
                       public_name(str(folder)))
    for relative, content in sentence_transformers_files(config, max_seq_length).items():
        path = folder / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(content, indent=2) + "\n", encoding="utf-8")


def non_finite_weights(model: torch.nn.Module) -> str | None:
    """``None`` when every floating-point weight of ``model`` is finite, else a sentence naming the first tensor that
    holds NaN or inf and how many of its values do."""
    for name, tensor in model.state_dict().items():
        if tensor.is_floating_point() and not tensor.isfinite().all():
            bad, nan = int((~tensor.isfinite()).sum()), int(tensor.isnan().sum())
            return f"{name} holds {bad:,} non-finite value(s) of {tensor.numel():,} ({nan:,} NaN, {bad - nan:,} inf)"
    return None


def load_tokenizer(name_or_path: str | os.PathLike, config: Any, kwargs: dict[str, Any]) -> Any:
    """The tokenizer stored with ``name_or_path`` (read with the ``HUB_KWARGS`` among ``kwargs``), or ``None`` when it
    has none (no ``tokenizer_config.json``) or it cannot be loaded (a warning says why). The model's config is passed
    to ``AutoTokenizer``, so no second configuration (and no remote-code question) is read."""
    hub_kwargs = {key: kwargs[key] for key in HUB_KWARGS if key in kwargs}
    try:
        if get_tokenizer_config(str(name_or_path), **hub_kwargs):
            return AutoTokenizer.from_pretrained(str(name_or_path), config=config, **hub_kwargs)
    except (OSError, ValueError) as error:
        logger.warning("The tokenizer of %s could not be loaded (%s); pass one to save_pretrained(tokenizer=...).",
                       public_name(str(name_or_path)), error)
    return None


def official_recipe(path_or_repo: str | os.PathLike) -> str | None:
    """``"sup"`` or ``"unsup"``: the recipe an original SimCSE release followed, read from its name
    (``sup-simcse-...``, ``unsup-simcse-...``); ``None`` for any other name.

    >>> official_recipe("princeton-nlp/unsup-simcse-bert-base-uncased"), official_recipe("bert-base-uncased")
    ('unsup', None)
    """
    name = os.path.basename(os.path.normpath(str(path_or_repo))).lower()
    match = re.search(r"(?:^|[-_/])((?:un)?sup)[-_]simcse", name)
    return match.group(1) if match else None


def official_is_supervised(path_or_repo: str | os.PathLike) -> bool:
    """Whether an original SimCSE release followed the supervised recipe (:func:`official_recipe`); any other name is
    a `ValueError` asking for the argument."""
    recipe = official_recipe(path_or_repo)
    if recipe is None:
        raise ValueError(
            f"supervised: cannot tell from the name {str(path_or_repo)!r} whether this SimCSE release is "
            "supervised; pass supervised=True (evaluated with 'cls', the MLP applied) or supervised=False "
            "(evaluated with 'cls_before_pooler')."
        )
    return recipe == "sup"


def sentence_transformer_pooler(modules: list[Any]) -> str:
    """The SimCSE pooler equal to the modules after a sentence-transformers ``Transformer``: one ``Pooling`` in
    ``cls`` mode (``cls_before_pooler``) or ``mean`` mode (``avg``), optionally with ``Normalize`` (which cosine
    similarity ignores); `ValueError` naming the modules or the mode otherwise."""
    kept = [module for module in modules if type(module).__name__ != "Normalize"]
    if [type(module).__name__ for module in kept] != ["Pooling"]:
        raise ValueError(f"from_sentence_transformer: the modules after the Transformer are "
                         f"{[type(module).__name__ for module in modules]}; SimCSE has an equivalent only for one "
                         "Pooling module (cls or mean), optionally with Normalize.")
    mode = kept[0].pooling_mode  # sentence-transformers >= 6: one name, or a tuple of several
    if mode not in ("cls", "mean"):
        raise ValueError(f"from_sentence_transformer: pooling mode {mode!r} has no SimCSE pooler (cls or mean are).")
    return "cls_before_pooler" if mode == "cls" else "avg"


__all__ = ["HUB_KWARGS", "MAX_LENGTH_CAP", "default_max_length", "load_tokenizer", "non_finite_weights",
           "official_is_supervised", "official_recipe", "public_name", "sentence_transformer_pooler",
           "sentence_transformers_files", "standard_pooling_mode", "write_loader_files"]
