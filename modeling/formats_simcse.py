"""The formats a SimCSE model is read from and written to: remote code beside ``modeling_simcse.py`` (imports only
``torch`` and ``transformers``).

* the sentence-transformers files of a saved model (``modules.json``, ``sentence_bert_config.json``, ``1_Pooling``);
* public names: where a saved model came from, without a path of this machine;
* the checks and readers of ``SimCSEModel``'s constructors: finite weights, the tokenizer stored with a model, the
  recipe of an original princeton-nlp release, the pooler of a sentence-transformers model.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
import transformers
from torch import nn

from .configuration_simcse import SimCSEConfig

logger = logging.getLogger(__name__)

ST_TRANSFORMER_MODULE = "sentence_transformers.base.modules.transformer.Transformer"
ST_POOLING_MODULE = "sentence_transformers.sentence_transformer.modules.pooling.Pooling"
# Poolers that sentence-transformers' own Pooling module computes exactly, and its mode for each.
ST_POOLING_MODES = {"cls_before_pooler": "cls", "avg": "mean"}
# Keyword arguments of `from_pretrained` that say where files come from; the tokenizer is loaded with the same ones.
HUB_KWARGS = ("cache_dir", "force_download", "local_files_only", "token", "revision", "subfolder")


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
    local = (os.path.isabs(expanded) or name_or_path.startswith((".", "~")) or "\\" in name_or_path
             or name_or_path.count("/") > 1 or os.path.exists(expanded))
    if not local:
        return name_or_path
    parts = Path(expanded).parts
    for part in reversed(parts):
        if part.startswith("models--") and "--" in part[len("models--"):]:
            return part[len("models--"):].replace("--", "/")
    return Path(os.path.abspath(expanded)).name or name_or_path


def standard_pooling_mode(config: SimCSEConfig) -> str | None:
    """The sentence-transformers ``Pooling`` mode equal to this config's inference embedding, or ``None``."""
    if config.pooler_type == "cls" and config.mlp_only_train:
        return "cls"
    return ST_POOLING_MODES.get(config.pooler_type)


def sentence_transformers_files(config: SimCSEConfig, max_seq_length: int | None = None) -> dict[str, Any]:
    r"""The sentence-transformers files of a saved model, ``{relative path: JSON content}``.

    The first module is sentence-transformers' standard ``Transformer``, which loads this ``SimCSEModel`` through
    ``AutoModel``. ``cls_before_pooler``, ``avg`` and ``cls`` with ``mlp_only_train`` are exactly its standard
    ``Pooling`` (``cls`` / ``mean``) over ``last_hidden_state``, written as the usual ``1_Pooling`` module. ``cls``
    with the MLP at inference, ``avg_top2`` and ``avg_first_last`` are not expressible by ``Pooling``: there the
    ``Transformer`` module reads ``pooler_output`` (its ``modality_config``), which ``forward`` computes with the
    code every other loader runs, so no custom module is needed.

    Args:
        config (`SimCSEConfig`): the model's configuration.
        max_seq_length (`int`, *optional*): the truncation length sentence-transformers uses.
    """
    mode = standard_pooling_mode(config)
    output = "last_hidden_state" if mode else "pooler_output"
    transformer_config: dict[str, Any] = {
        "transformer_task": "feature-extraction",
        "modality_config": {"text": {"method": "forward", "method_output_name": output}},
        "module_output_name": "token_embeddings" if mode else "sentence_embedding",
    }
    if max_seq_length is not None:
        transformer_config["max_seq_length"] = int(max_seq_length)
    modules = [{"idx": 0, "name": "0", "path": "", "type": ST_TRANSFORMER_MODULE}]
    files: dict[str, Any] = {"sentence_bert_config.json": transformer_config}
    if mode is not None:
        modules.append({"idx": 1, "name": "1", "path": "1_Pooling", "type": ST_POOLING_MODULE})
        files["1_Pooling/config.json"] = {"embedding_dimension": config.hidden_size, "pooling_mode": mode,
                                          "include_prompt": True}
    files["modules.json"] = modules
    versions = {"transformers": transformers.__version__, "pytorch": torch.__version__}
    try:
        import sentence_transformers

        versions = {"sentence_transformers": sentence_transformers.__version__, **versions}
    except ImportError:
        pass
    files["config_sentence_transformers.json"] = {"__version__": versions, "model_type": "SentenceTransformer",
                                                  "prompts": {}, "default_prompt_name": None,
                                                  "similarity_fn_name": "cosine"}
    return files


def non_finite_weights(model: nn.Module) -> str | None:
    """``None`` when every floating-point weight of ``model`` is finite, else a sentence naming the first tensor that
    holds NaN or inf and how many of its values do."""
    for name, tensor in model.state_dict().items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            bad = int((~torch.isfinite(tensor)).sum())
            nan = int(torch.isnan(tensor).sum())
            return (f"{name} holds {bad:,} non-finite value(s) of {tensor.numel():,} ({nan:,} NaN, {bad - nan:,} "
                    "inf)")
    return None

def write_loader_files(folder: Path, config: SimCSEConfig, tokenizer: Any, max_seq_length: int | None) -> None:
    """What the loaders besides ``AutoModel`` read, written into ``folder``: the tokenizer and
    :func:`sentence_transformers_files`. ``max_seq_length`` defaults to the tokenizer's ``model_max_length``, at most
    the encoder's position limit and 512. Without a tokenizer a warning says what will not load."""
    if tokenizer is not None:
        tokenizer.save_pretrained(folder)
        if max_seq_length is None:
            max_seq_length = min(limit for limit in (tokenizer.model_max_length, config.max_input_length, 512) if limit)
    else:
        logger.warning("%s was saved without a tokenizer: it loads with AutoModel, but SentenceTransformer and "
                       "simcse_hub.SimCSE need one; pass save_pretrained(..., tokenizer=tokenizer).",
                       public_name(str(folder)))
    for relative, content in sentence_transformers_files(config, max_seq_length).items():
        path = folder / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(content, indent=2) + "\n", encoding="utf-8")


@contextmanager
def public_names(config: SimCSEConfig) -> Iterator[None]:
    """Within the block, the config names its encoder and base model by :func:`public_name` (a Hub id or a folder
    name, never a path of this machine); afterwards, as before."""
    saved = (getattr(config, "base_model_name_or_path", None), config.encoder_config._name_or_path)
    config.encoder_config._name_or_path = public_name(saved[1])
    if saved[0] is not None:
        config.base_model_name_or_path = public_name(saved[0])
    try:
        yield
    finally:
        config.encoder_config._name_or_path = saved[1]
        if saved[0] is not None:
            config.base_model_name_or_path = saved[0]


def load_tokenizer(name_or_path: str | os.PathLike, config: Any, kwargs: dict[str, Any]) -> Any:
    """The tokenizer stored with ``name_or_path``, or ``None`` when it has none. The model's config is passed
    along, so no second configuration (and no remote-code question) is read."""
    # Imported here, as in heads_simcse: transformers' auto classes register SimCSEModel when simcse_hub is installed.
    from transformers import AutoTokenizer
    from transformers.models.auto.tokenization_auto import get_tokenizer_config

    hub_kwargs = {key: kwargs[key] for key in HUB_KWARGS if key in kwargs}
    try:
        if not get_tokenizer_config(str(name_or_path), **hub_kwargs):
            logger.info("%s has no tokenizer_config.json: the model has no tokenizer to save with it.",
                        public_name(str(name_or_path)))
            return None
        return AutoTokenizer.from_pretrained(str(name_or_path), config=config, **hub_kwargs)
    except (OSError, ValueError) as error:
        logger.warning("The tokenizer of %s could not be loaded (%s); pass one to save_pretrained(tokenizer=...).",
                       public_name(str(name_or_path)), error)
        return None

def official_is_supervised(path_or_repo: str | os.PathLike) -> bool:
    """Whether an original SimCSE release followed the supervised recipe, read from its name: ``sup-simcse-...`` is
    supervised, ``unsup-simcse-...`` unsupervised; any other name is a `ValueError` asking for the argument."""
    name = os.path.basename(os.path.normpath(str(path_or_repo))).lower()
    if re.search(r"(^|[-_/])unsup[-_]simcse", name):
        return False
    if re.search(r"(^|[-_/])sup[-_]simcse", name):
        return True
    raise ValueError(
        f"supervised: cannot tell from the name {str(path_or_repo)!r} whether this SimCSE release is "
        "supervised; pass supervised=True (evaluated with 'cls', the MLP applied) or supervised=False "
        "(evaluated with 'cls_before_pooler')."
    )


def sentence_transformer_pooler(modules: list[Any]) -> str:
    """The SimCSE pooler equal to the modules after a sentence-transformers ``Transformer``: ``Pooling`` in ``cls``
    mode (``cls_before_pooler``) or ``mean`` mode (``avg``), optionally then ``Normalize``; `ValueError` naming the
    module otherwise."""
    pooler_type = None
    for module in modules:
        kind = type(module).__name__
        if kind == "Normalize":
            continue
        if kind != "Pooling" or pooler_type is not None:
            raise ValueError(f"from_sentence_transformer: module {kind} has no SimCSE equivalent.")
        settings = module.get_config_dict()
        mode = settings.get("pooling_mode")
        mode = mode[0] if isinstance(mode, (list, tuple)) and len(mode) == 1 else mode
        if mode is None:  # sentence-transformers < 6 stored one flag per mode
            flags = [name for name, on in settings.items() if name.startswith("pooling_mode_") and on]
            mode = {"pooling_mode_cls_token": "cls", "pooling_mode_mean_tokens": "mean"}.get(
                flags[0] if len(flags) == 1 else ""
            )
        pooler_type = {"cls": "cls_before_pooler", "mean": "avg"}.get(mode)
        if pooler_type is None:
            raise ValueError(
                f"from_sentence_transformer: pooling mode {mode!r} has no SimCSE pooler (cls or mean are)."
            )
    if pooler_type is None:
        raise ValueError("from_sentence_transformer: no Pooling module found after the Transformer module.")
    if pooler_type is None:
        raise ValueError("from_sentence_transformer: no Pooling module found after the Transformer module.")
    return pooler_type


__all__ = ["HUB_KWARGS", "load_tokenizer", "non_finite_weights", "official_is_supervised", "public_name",
           "public_names", "sentence_transformer_pooler", "sentence_transformers_files", "standard_pooling_mode",
           "write_loader_files"]
