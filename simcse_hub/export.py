"""One save that every loader understands.

A folder written by :func:`save_model` loads three ways with the same embeddings:

* ``AutoModel.from_pretrained(path, trust_remote_code=True)`` (simcse_hub not needed: the config carries ``auto_map``
  and the two files of ``modeling/`` are copied beside the safetensors weights);
* ``SentenceTransformer(path, trust_remote_code=True)`` (``modules.json``, ``sentence_bert_config.json``,
  ``config_sentence_transformers.json`` and, where it applies, ``1_Pooling/``);
* ``simcse_hub.SimCSE(path)``.

How sentence-transformers reproduces each pooler. Its first module is always the standard ``Transformer`` module,
which loads our ``SimCSEModel`` through ``AutoModel`` (remote code). Then:

* ``cls_before_pooler``, ``avg`` and ``cls`` with ``mlp_only_train`` are exactly sentence-transformers' standard
  ``Pooling`` (``cls`` / ``mean``) over ``last_hidden_state``: we write the usual ``1_Pooling`` module, so tools that
  read it see the pooling they expect.
* ``cls`` with the MLP at inference, ``avg_top2`` and ``avg_first_last`` cannot be expressed by ``Pooling`` (an MLP
  head, or an average over two layers). Rather than ship a second, custom sentence-transformers module that would
  re-implement the pooler, the ``Transformer`` module reads ``pooler_output`` (its ``modality_config``), which
  ``SimCSEModel.forward`` computes with the very code every other loader runs. No custom module is needed.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

from transformers import PreTrainedTokenizerBase

from simcse_hub.modeling.configuration_simcse import SimCSEConfig
from simcse_hub.modeling.modeling_simcse import SimCSEModel

logger = logging.getLogger(__name__)

TRANSFORMER_MODULE = "sentence_transformers.base.modules.transformer.Transformer"
POOLING_MODULE = "sentence_transformers.sentence_transformer.modules.pooling.Pooling"
# Poolers that sentence-transformers' own Pooling module computes exactly, and its mode for each.
STANDARD_POOLING_MODES = {"cls_before_pooler": "cls", "avg": "mean"}


def standard_pooling_mode(config: SimCSEConfig) -> str | None:
    """The sentence-transformers ``Pooling`` mode equal to this config's inference embedding, or ``None``."""
    if config.pooler_type == "cls" and config.mlp_only_train:
        return "cls"
    return STANDARD_POOLING_MODES.get(config.pooler_type)


def sentence_transformers_files(config: SimCSEConfig, max_seq_length: int | None = None) -> dict[str, Any]:
    """The sentence-transformers files for ``config``: ``{relative path: JSON content}``."""
    import sentence_transformers
    import torch
    import transformers

    mode = standard_pooling_mode(config)
    transformer_config: dict[str, Any] = {"transformer_task": "feature-extraction"}
    if mode is None:
        transformer_config["modality_config"] = {"text": {"method": "forward", "method_output_name": "pooler_output"}}
        transformer_config["module_output_name"] = "sentence_embedding"
    else:
        transformer_config["modality_config"] = {
            "text": {"method": "forward", "method_output_name": "last_hidden_state"}
        }
        transformer_config["module_output_name"] = "token_embeddings"
    if max_seq_length is not None:
        transformer_config["max_seq_length"] = int(max_seq_length)
    modules = [{"idx": 0, "name": "0", "path": "", "type": TRANSFORMER_MODULE}]
    files: dict[str, Any] = {"sentence_bert_config.json": transformer_config}
    if mode is not None:
        modules.append({"idx": 1, "name": "1", "path": "1_Pooling", "type": POOLING_MODULE})
        files["1_Pooling/config.json"] = {
            "embedding_dimension": config.hidden_size,
            "pooling_mode": mode,
            "include_prompt": True,
        }
    files["modules.json"] = modules
    files["config_sentence_transformers.json"] = {
        "__version__": {
            "sentence_transformers": sentence_transformers.__version__,
            "transformers": transformers.__version__,
            "pytorch": torch.__version__,
        },
        "model_type": "SentenceTransformer",
        "prompts": {},
        "default_prompt_name": None,
        "similarity_fn_name": "cosine",
    }
    return files


def save_model(
    model: SimCSEModel,
    output_dir: str | os.PathLike,
    tokenizer: PreTrainedTokenizerBase | None = None,
    max_seq_length: int | None = None,
) -> Path:
    """Save ``model`` (and its tokenizer) so that every loader understands the folder.

    Args:
        model (`SimCSEModel`): the model; an Accelerate-wrapped model must be unwrapped first.
        output_dir (`str` or `os.PathLike`): the folder, created if needed. Files of the same names are replaced.
        tokenizer (`PreTrainedTokenizerBase`, *optional*): saved beside the weights; without one the folder loads
            as a transformers model but not as a sentence-transformers model or with ``SimCSE``.
        max_seq_length (`int`, *optional*): the truncation length sentence-transformers uses; defaults to the
            tokenizer's ``model_max_length`` (capped at the encoder's position embeddings).

    Returns:
        `Path`: the folder.

    >>> save_model(model, "outputs/my-simcse", tokenizer)  # doctest: +SKIP
    """
    if not isinstance(model, SimCSEModel):
        raise TypeError(f"save_model expects a SimCSEModel, got {type(model).__name__} (unwrap it first).")
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(output_dir, safe_serialization=True)
    if tokenizer is not None:
        tokenizer.save_pretrained(output_dir)
        if max_seq_length is None:
            limit = getattr(model.config.encoder_config, "max_position_embeddings", None)
            max_seq_length = min(x for x in (tokenizer.model_max_length, limit, 512) if x)
    for relative, content in sentence_transformers_files(model.config, max_seq_length).items():
        path = output_dir / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(content, indent=2) + "\n", encoding="utf-8")
    logger.info("Saved SimCSE model (%s pooler) to %s", model.config.pooler_type, output_dir)
    return output_dir


__all__ = ["save_model", "sentence_transformers_files", "standard_pooling_mode"]
