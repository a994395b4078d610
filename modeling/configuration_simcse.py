"""Configuration of a SimCSE sentence encoder.

This file is *remote code*: it is copied next to the weights of every saved model, so it imports only
``transformers`` and its sibling ``formats_simcse``. It must never import ``simcse_hub``.
"""

from __future__ import annotations

from typing import Any, ClassVar

from transformers import AutoConfig, PreTrainedConfig
from transformers.configuration_utils import SubConfigSpec

from .formats_simcse import public_name

# Pooler types of the SimCSE paper's code (princeton-nlp/SimCSE, ``simcse/models.py`` and ``evaluation.py``).
# Which hidden states each one reads:
#
# * ``cls``: the last layer's hidden state of the first token (``[CLS]`` / ``<s>``), followed by the SimCSE MLP
#   head (Linear + Tanh). The head is always used in training; at inference it is used unless ``mlp_only_train``.
# * ``cls_before_pooler``: the last layer's hidden state of the first token, never followed by the MLP head.
# * ``avg``: the mean over non-padding tokens of the last layer's hidden states.
# * ``avg_top2``: the mean over non-padding tokens of the average of the last two layers' hidden states
#   (``hidden_states[-1]`` and ``hidden_states[-2]``).
# * ``avg_first_last``: the mean over non-padding tokens of the average of the first Transformer layer's output and
#   the last layer's output (``hidden_states[1]`` and ``hidden_states[-1]``), as SimCSE's ``evaluation.py`` and
#   BERT-whitening compute the "first-last avg." baseline. (SimCSE's ``models.py`` read ``hidden_states[0]``, the
#   embedding output, instead; SimCSE fixed ``evaluation.py`` to the first layer.)
POOLER_TYPES: tuple[str, ...] = ("cls", "cls_before_pooler", "avg", "avg_top2", "avg_first_last")
# Encoders whose position ids start after the padding index, so `max_position_embeddings` overstates their limit.
OFFSET_POSITION_MODEL_TYPES = frozenset({"roberta", "xlm-roberta", "xlm-roberta-xl", "camembert", "data2vec-text",
                                         "roberta-prelayernorm"})


class SimCSEConfig(PreTrainedConfig):
    r"""
    Configuration of a [`SimCSEModel`]: an encoder that [`~transformers.AutoModel`] can build, plus the SimCSE pooler,
    MLP head and contrastive-loss settings. Every setting that changes what the model computes lives here and is saved
    with the weights; where the model came from is saved by its public name (a Hub id or a folder name, never a path
    of this machine: see ``formats_simcse.public_name``).

    Args:
        encoder_config (`PreTrainedConfig` or `dict`, *optional*, defaults to a BERT configuration):
            Configuration of the wrapped encoder (BERT, RoBERTa, DistilBERT, MPNet, ModernBERT, ...), as an object or
            as the dictionary ``to_dict()`` gives. A dictionary must carry ``model_type``.
        pooler_type (`str`, *optional*, defaults to `"cls"`):
            How token states become the sentence embedding: one of ``cls``, ``cls_before_pooler``, ``avg``,
            ``avg_top2``, ``avg_first_last`` (see ``POOLER_TYPES`` in this file for the hidden states each reads).
        mlp_only_train (`bool`, *optional*, defaults to `False`):
            With ``pooler_type="cls"``, use the MLP head in training only (the unsupervised SimCSE setting).
        temperature (`float`, *optional*, defaults to 0.05):
            Temperature of the InfoNCE loss; cosine similarities are divided by it. Must be > 0.
        hard_negative_weight (`float`, *optional*, defaults to 0.0):
            Value added to the logit of each anchor's own hard negative (the log of a weight; 0 leaves it unweighted),
            as ``--hard_negative_weight`` in the original code.
        do_mlm (`bool`, *optional*, defaults to `False`):
            Add the auxiliary masked-language-modelling loss in training (needs a masked-LM head for the encoder).
        mlm_weight (`float`, *optional*, defaults to 0.1):
            Weight of the masked-language-modelling loss (``lambda`` in the paper). Must be >= 0.
        whitening_dim (`int`, *optional*, defaults to `None`):
            The output size of the BERT-whitening layer (``SimCSEModel.whitening``, ``y = (x - mean) @ W``) applied
            to the sentence embedding at inference, between 1 and ``hidden_size``; `None`: no whitening.

    >>> from transformers import BertConfig
    >>> from simcse_hub import SimCSEConfig
    >>> config = SimCSEConfig(encoder_config=BertConfig(hidden_size=32, num_hidden_layers=2,
    ...                       num_attention_heads=4, intermediate_size=37), pooler_type="avg")
    >>> config.hidden_size
    32
    """

    model_type = "simcse"
    sub_configs_defaults: ClassVar[dict[str, SubConfigSpec]] = {
        "encoder_config": SubConfigSpec(config_class=AutoConfig, model_type="bert"),
    }

    encoder_config: PreTrainedConfig | dict | None = None
    pooler_type: str = "cls"
    mlp_only_train: bool = False
    temperature: float = 0.05
    hard_negative_weight: float = 0.0
    do_mlm: bool = False
    mlm_weight: float = 0.1
    whitening_dim: int | None = None

    def __post_init__(self, **kwargs: Any) -> None:
        if isinstance(self.encoder_config, dict) and "model_type" not in self.encoder_config:
            raise ValueError(
                "encoder_config: a dictionary encoder configuration must contain 'model_type' "
                "(for example 'bert', 'roberta', 'distilbert'), as `AutoConfig.to_dict()` writes it."
            )
        super().__post_init__(**kwargs)
        self.validate_simcse()

    # ours: transformers' @strict checks only PreTrainedConfig's fields, raising a two-line error that is no ValueError
    def validate_simcse(self) -> None:
        """Raise a `ValueError` naming the first invalid SimCSE field and the values it accepts."""
        if self.pooler_type not in POOLER_TYPES:
            raise ValueError(f"pooler_type={self.pooler_type!r} is not supported; expected one of "
                             f"{list(POOLER_TYPES)}.")
        for name in ("mlp_only_train", "do_mlm"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name}={getattr(self, name)!r} must be a bool (true or false).")
        for name in ("temperature", "hard_negative_weight", "mlm_weight"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ValueError(f"{name}={value!r} must be a number.")
        if not self.temperature > 0:
            raise ValueError(f"temperature={self.temperature!r} must be a number greater than 0 (the paper uses 0.05).")
        if self.mlm_weight < 0:
            raise ValueError(f"mlm_weight={self.mlm_weight!r} must be a number >= 0 (the paper uses 0.1).")
        dim = self.whitening_dim
        if dim is not None and (isinstance(dim, bool) or not isinstance(dim, int) or not 1 <= dim <= self.hidden_size):
            raise ValueError(f"whitening_dim={dim!r} must be an integer from 1 to hidden_size={self.hidden_size}, or "
                             "null (no whitening).")
        if self.encoder_config.is_encoder_decoder:
            raise ValueError(
                f"encoder_config: model_type={self.encoder_config.model_type!r} is an encoder-decoder; "
                "SimCSE wraps an encoder that `AutoModel` builds (BERT, RoBERTa, DistilBERT, MPNet, ModernBERT, ...)."
            )

    def to_dict(self) -> dict[str, Any]:
        """``PreTrainedConfig.to_dict`` (what ``config.json`` holds), naming the encoder and the base model by
        :func:`~formats_simcse.public_name`: no path of this machine is ever written into a model folder."""
        output = super().to_dict()
        output["encoder_config"]["_name_or_path"] = public_name(output["encoder_config"]["_name_or_path"])
        if "base_model_name_or_path" in output:
            output["base_model_name_or_path"] = public_name(output["base_model_name_or_path"])
        return output

    @property
    def hidden_size(self) -> int:
        """`int`: size of the sentence embedding (the encoder's ``hidden_size``; DistilBERT's ``dim`` through its
        ``attribute_map``)."""
        return self.encoder_config.hidden_size

    @property
    def max_input_length(self) -> int | None:
        """`int` or `None`: the longest input in tokens (special tokens included) that the encoder's position
        embeddings allow, or `None` for an encoder without such a limit."""
        limit = getattr(self.encoder_config, "max_position_embeddings", None)
        if limit and self.encoder_config.model_type in OFFSET_POSITION_MODEL_TYPES:
            limit -= (getattr(self.encoder_config, "pad_token_id", None) or 0) + 1
        return limit or None

    @property
    def embedding_dim(self) -> int:
        """`int`: size of the sentence embedding at inference (``whitening_dim`` when whitened, else
        ``hidden_size``)."""
        return self.whitening_dim or self.hidden_size

    @property
    def uses_mlp_at_inference(self) -> bool:
        """`bool`: whether the embedding returned at inference goes through the MLP head."""
        return self.pooler_type == "cls" and not self.mlp_only_train


__all__ = ["POOLER_TYPES", "SimCSEConfig"]
