"""One save that every loader understands: :func:`save_model`, which is ``SimCSEModel.save_pretrained``.

A folder written by ``save_model`` (or ``model.save_pretrained``, or ``model.push_to_hub``) loads three ways with the
same embeddings:

* ``AutoModel.from_pretrained(path, trust_remote_code=True)`` (simcse_hub not needed: the config carries ``auto_map``
  and the remote code of ``modeling/`` is copied beside the safetensors weights);
* ``SentenceTransformer(path, trust_remote_code=True)`` (``modules.json``, ``sentence_bert_config.json``,
  ``config_sentence_transformers.json`` and, where it applies, ``1_Pooling/``; see
  ``simcse_hub.modeling.formats_simcse.sentence_transformers_files``);
* ``simcse_hub.SimCSE(path)``.
"""

from __future__ import annotations

import os
from pathlib import Path

from transformers import PreTrainedTokenizerBase

from simcse_hub.modeling.formats_simcse import non_finite_weights, sentence_transformers_files, standard_pooling_mode
from simcse_hub.modeling.modeling_simcse import SimCSEModel


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
        tokenizer (`PreTrainedTokenizerBase`, *optional*, defaults to ``model.tokenizer``): saved beside the weights.
        max_seq_length (`int`, *optional*): the truncation length sentence-transformers uses; defaults to the
            tokenizer's ``model_max_length`` (capped at the encoder's position embeddings and 512).

    Returns:
        `Path`: the folder.

    Raises:
        ValueError: a weight holds NaN or inf (nothing is written).

    >>> save_model(model, "outputs/my-simcse", tokenizer)  # doctest: +SKIP
    """
    if not isinstance(model, SimCSEModel):
        raise TypeError(f"save_model expects a SimCSEModel, got {type(model).__name__} (unwrap it first).")
    model.save_pretrained(output_dir, tokenizer=tokenizer, max_seq_length=max_seq_length)
    return Path(output_dir)


__all__ = ["non_finite_weights", "save_model", "sentence_transformers_files", "standard_pooling_mode"]
