"""SimCSE: one sentence-encoder model class for any encoder that ``AutoModel`` builds.

This file is *remote code*: it is copied next to the weights of every saved model so that
``AutoModel.from_pretrained(path, trust_remote_code=True)`` works without simcse_hub installed. It imports only
``torch``, ``transformers`` and its sibling ``configuration_simcse``; it must never import ``simcse_hub``.

Reference: Gao, Yao & Chen, "SimCSE: Simple Contrastive Learning of Sentence Embeddings", EMNLP 2021
(https://arxiv.org/abs/2104.08821), and the authors' code (princeton-nlp/SimCSE, ``simcse/models.py``).
"""

from __future__ import annotations

import json
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
import transformers
from torch import nn
from transformers import AutoModel, AutoModelForMaskedLM, AutoTokenizer, PreTrainedModel
from transformers import initialization as init
from transformers.utils import ModelOutput

from .configuration_simcse import POOLER_TYPES, SimCSEConfig

logger = logging.getLogger(__name__)


def info_nce(
    anchors: torch.Tensor,
    positives: torch.Tensor,
    hard_negatives: torch.Tensor | None = None,
    temperature: float = 0.05,
    hard_negative_weight: float = 0.0,
    symmetric: bool = False,
    labels: torch.Tensor | None = None,
) -> torch.Tensor:
    r"""The InfoNCE loss of SimCSE on sentence embeddings: the single definition used by the whole package.

    Row ``i`` of the logits holds the cosine similarities of ``anchors[i]`` with every positive (and every hard
    negative, as extra columns), divided by ``temperature``; the target of row ``i`` is the positive ``labels[i]``.
    As in the original code, ``hard_negative_weight`` is added to the logit of each anchor's *own* hard negative
    (column ``len(positives) + labels[i]``), so it is the log of a weight.

    Args:
        anchors (`torch.Tensor` of shape `(n, dim)`): the anchor embeddings.
        positives (`torch.Tensor` of shape `(m, dim)`, m >= n): the candidates; ``positives[labels[i]]`` is the
            positive of ``anchors[i]`` and all other rows are in-batch negatives.
        hard_negatives (`torch.Tensor` of shape `(m, dim)`, *optional*): one hard negative per positive.
        temperature (`float`, *optional*, defaults to 0.05): the softmax temperature.
        hard_negative_weight (`float`, *optional*, defaults to 0.0): logit offset of each anchor's own hard negative.
        symmetric (`bool`, *optional*, defaults to `False`): also score each positive against the anchors
            (positive -> anchor direction) and average the two cross-entropies. Needs ``n == m``.
        labels (`torch.Tensor` of shape `(n,)`, *optional*, defaults to `arange(n)`): index of each anchor's
            positive; set it when ``positives`` was gathered across processes.

    Returns:
        `torch.Tensor`: the scalar mean cross-entropy.

    >>> import torch
    >>> a, p = torch.eye(2), torch.eye(2)
    >>> round(info_nce(a, p, temperature=1.0).item(), 4)  # log(1 + e^-1)
    0.3133
    """
    if anchors.dim() != 2 or positives.dim() != 2 or anchors.size(-1) != positives.size(-1):
        raise ValueError(
            f"anchors and positives must be (batch, dim) matrices of equal dim; got {tuple(anchors.shape)} and "
            f"{tuple(positives.shape)}."
        )
    if labels is None:
        if positives.size(0) < anchors.size(0):
            raise ValueError(f"need at least one positive per anchor; got {positives.size(0)} for {anchors.size(0)}.")
        labels = torch.arange(anchors.size(0), device=anchors.device)
    anchors_n = F.normalize(anchors, dim=-1)
    positives_n = F.normalize(positives, dim=-1)
    logits = anchors_n @ positives_n.T / temperature  # (n, m)
    if hard_negatives is not None:
        hard_logits = anchors_n @ F.normalize(hard_negatives, dim=-1).T / temperature  # (n, m)
        if hard_negative_weight:
            own = F.one_hot(labels, num_classes=hard_logits.size(1)).to(hard_logits.dtype)
            hard_logits = hard_logits + hard_negative_weight * own
        logits = torch.cat([logits, hard_logits], dim=1)  # (n, 2m)
    loss = F.cross_entropy(logits.float(), labels)
    if symmetric:
        if anchors.size(0) != positives.size(0):
            raise ValueError("symmetric=True needs as many anchors as positives (call it per direction otherwise).")
        reverse = positives_n @ anchors_n.T / temperature  # (m, n)
        loss = (loss + F.cross_entropy(reverse.float(), labels)) / 2
    return loss

# ---------------------------------------------------------------------------------------------------- saving helpers

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


@dataclass
class SimCSEModelOutput(ModelOutput):
    r"""Output of [`SimCSEModel`].

    Args:
        last_hidden_state (`torch.Tensor` of shape `(batch, seq_len, hidden)`): the encoder's last layer.
        pooler_output (`torch.Tensor` of shape `(batch, hidden)`): the sentence embedding under the configured pooler.
        loss (`torch.Tensor`, *optional*): the training loss (InfoNCE plus weighted MLM), for grouped inputs.
        hidden_states (`tuple(torch.Tensor)`, *optional*): every layer's output, when asked for.
        attentions (`tuple(torch.Tensor)`, *optional*): attention weights, when asked for.
    """

    last_hidden_state: torch.Tensor | None = None
    pooler_output: torch.Tensor | None = None
    loss: torch.Tensor | None = None
    hidden_states: tuple[torch.Tensor, ...] | None = None
    attentions: tuple[torch.Tensor, ...] | None = None


class SimCSEMLP(nn.Module):
    """The SimCSE head over the ``cls`` representation: Linear + Tanh, as ``MLPLayer`` in the original code."""

    def __init__(self, hidden_size: int) -> None:
        super().__init__()
        self.dense = nn.Linear(hidden_size, hidden_size)
        self.activation = nn.Tanh()

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.activation(self.dense(features))


def masked_mean(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Mean of ``hidden`` (batch, seq_len, dim) over the positions where ``attention_mask`` is 1."""
    mask = attention_mask.unsqueeze(-1).to(hidden.dtype)  # (batch, seq_len, 1)
    return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)


class SimCSEModel(PreTrainedModel):
    r"""A SimCSE sentence encoder: any ``AutoModel`` encoder, the SimCSE pooler and its MLP head.

    ``forward`` on ``(batch, seq_len)`` inputs returns the sentence embedding as ``pooler_output``; on
    ``(batch, num_sent, seq_len)`` inputs (2 sentences: positive pairs or one sentence twice for unsupervised
    SimCSE; 3: with a hard negative) it also returns the InfoNCE loss of the paper (plus the MLM loss when
    ``config.do_mlm``), computed in this process only (the Accelerate trainer of simcse_hub gathers negatives
    across processes with ``simcse_hub.losses``).

    Args:
        config (`SimCSEConfig`): the configuration; the encoder is built with ``AutoModel.from_config``.

    >>> from transformers import BertConfig
    >>> from simcse_hub import SimCSEConfig, SimCSEModel
    >>> tiny = BertConfig(vocab_size=99, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
    ...                   intermediate_size=37)
    >>> model = SimCSEModel(SimCSEConfig(encoder_config=tiny, pooler_type="avg")).eval()
    >>> model(input_ids=torch.tensor([[2, 5, 7, 3]])).pooler_output.shape
    torch.Size([1, 32])
    """

    config_class = SimCSEConfig
    base_model_prefix = "simcse"
    main_input_name = "input_ids"
    supports_gradient_checkpointing = True
    _supports_sdpa = True

    def __init__(self, config: SimCSEConfig) -> None:
        super().__init__(config)
        self.encoder = self._build_encoder(config)
        self.mlp = SimCSEMLP(config.hidden_size)
        self.lm_head = self._build_lm_head(config) if config.do_mlm else None
        if self.lm_head is not None:  # e.g. BERT's decoder.bias is its predictions.bias: declared, so saving works
            self._tied_weights_keys = self._shared_parameters(self.lm_head, "lm_head.")
        # The tokenizer, when the model knows it (`from_encoder`, `from_official`, `from_sentence_transformer` and
        # `from_pretrained` set it): `save_pretrained` writes it beside the weights.
        self.tokenizer = None
        self.post_init()

    # ------------------------------------------------------------------ construction

    @staticmethod
    def _build_encoder(config: SimCSEConfig) -> PreTrainedModel:
        # In the default dtype (float32, or what `from_pretrained(dtype=...)` asks for), not the `dtype` recorded in
        # the encoder's config: an encoder stored in float16 must not give a float16 encoder under a float32 head.
        encoder = AutoModel.from_config(config.encoder_config, dtype=torch.get_default_dtype())
        # SimCSE pools by itself: the encoder's own pooler (BERT's NSP head) would be unused parameters,
        # which break distributed data parallel training. Its weights are read by `from_official` instead.
        if isinstance(getattr(encoder, "pooler", None), nn.Module):
            encoder.pooler = None
        return encoder

    @staticmethod
    def _build_lm_head(config: SimCSEConfig) -> nn.Module:
        mlm_model = AutoModelForMaskedLM.from_config(config.encoder_config, dtype=torch.get_default_dtype())
        for name in ("cls", "lm_head"):
            if isinstance(getattr(mlm_model, name, None), nn.Module):
                return getattr(mlm_model, name)
        raise ValueError(
            f"do_mlm=True needs a masked-LM head named 'cls' or 'lm_head' (BERT, RoBERTa, XLM-R, MPNet, ...); "
            f"{type(mlm_model).__name__} has neither. Set do_mlm=False for this encoder."
        )

    @staticmethod
    def _shared_parameters(module: nn.Module, prefix: str) -> dict[str, str]:
        """``{name: first name}`` for every parameter of ``module`` that is another of its parameters."""
        first: dict[int, str] = {}
        shared = {}
        for name, parameter in module.named_parameters(remove_duplicate=False):
            if id(parameter) in first:
                shared[prefix + name] = first[id(parameter)]
            else:
                first[id(parameter)] = prefix + name
        return shared

    def _init_weights(self, module: nn.Module) -> None:
        """Initialise the SimCSE head as BERT initialises its linear layers (the encoder keeps its own init)."""
        if isinstance(module, nn.Linear):
            std = getattr(self.config.encoder_config, "initializer_range", 0.02)
            init.normal_(module.weight, mean=0.0, std=std)
            if module.bias is not None:
                init.zeros_(module.bias)
        elif isinstance(module, nn.LayerNorm):
            init.ones_(module.weight)
            init.zeros_(module.bias)

    def _copy_encoder_weights(self, encoder: PreTrainedModel, source: str) -> None:
        """Load a pretrained encoder's weights into ``self.encoder`` (its pooler, which SimCSE drops, excepted)."""
        missing, unexpected = self.encoder.load_state_dict(encoder.state_dict(), strict=False)
        unexpected = [key for key in unexpected if not key.startswith("pooler.")]
        if missing or unexpected:
            raise ValueError(f"encoder weights of {source} do not fit: missing {missing[:5]}, unexpected {unexpected[:5]}.")

    def get_input_embeddings(self) -> nn.Module:
        return self.encoder.get_input_embeddings()

    def set_input_embeddings(self, value: nn.Module) -> None:
        self.encoder.set_input_embeddings(value)

    @classmethod
    def from_encoder(
        cls,
        encoder_name_or_path: str | os.PathLike,
        pooler_type: str = "cls",
        mlp_only_train: bool = False,
        temperature: float = 0.05,
        hard_negative_weight: float = 0.0,
        do_mlm: bool = False,
        mlm_weight: float = 0.1,
        **from_pretrained_kwargs,
    ) -> SimCSEModel:
        r"""Build a SimCSE model around a pretrained encoder: encoder weights loaded, MLP head freshly initialised.

        Args:
            encoder_name_or_path (`str` or `os.PathLike`): a Hub id or a local folder that ``AutoModel`` loads
                (for a sentence-transformers folder, its root holds the transformer).
            pooler_type (`str`, *optional*, defaults to `"cls"`): see [`SimCSEConfig`].
            mlp_only_train, temperature, hard_negative_weight, do_mlm, mlm_weight: see [`SimCSEConfig`].
            from_pretrained_kwargs: passed to ``AutoModel.from_pretrained`` (``revision``, ``token``,
                ``local_files_only``, ...).

        >>> model = SimCSEModel.from_encoder("bert-base-uncased", pooler_type="cls", mlp_only_train=True)  # doctest: +SKIP
        """
        encoder = AutoModel.from_pretrained(encoder_name_or_path, **from_pretrained_kwargs)
        encoder.config._name_or_path = public_name(str(encoder_name_or_path))
        config = SimCSEConfig(
            encoder_config=encoder.config,
            pooler_type=pooler_type,
            mlp_only_train=mlp_only_train,
            temperature=temperature,
            hard_negative_weight=hard_negative_weight,
            do_mlm=do_mlm,
            mlm_weight=mlm_weight,
        )
        model = cls(config)
        model._copy_encoder_weights(encoder, source=str(encoder_name_or_path))
        if do_mlm:
            mlm_model = AutoModelForMaskedLM.from_pretrained(encoder_name_or_path, **from_pretrained_kwargs)
            head_name = next(name for name in ("cls", "lm_head") if hasattr(mlm_model, name))
            model.lm_head.load_state_dict(getattr(mlm_model, head_name).state_dict())
        model.config.base_model_name_or_path = public_name(str(encoder_name_or_path))
        model.tokenizer = cls._load_tokenizer(encoder_name_or_path, encoder.config, from_pretrained_kwargs)
        return model

    @classmethod
    def from_official(
        cls,
        path_or_repo: str | os.PathLike,
        supervised: bool | None = None,
        **from_pretrained_kwargs,
    ) -> SimCSEModel:
        r"""Import an original SimCSE release (a plain ``BertModel``/``RobertaModel`` checkpoint) with its pooler.

        The releases of princeton-nlp store the trained SimCSE MLP as the encoder's ``pooler`` (``simcse_to_huggingface.py``
        renamed ``mlp`` to ``pooler``). Unsupervised releases were trained with ``--mlp_only_train`` and are evaluated
        with ``cls_before_pooler`` (the first token, no MLP); supervised releases are evaluated with ``cls`` (the
        first token through the MLP, i.e. BERT's ``pooler_output``). Both keep the MLP weights here.

        Args:
            path_or_repo (`str` or `os.PathLike`): e.g. ``princeton-nlp/sup-simcse-bert-base-uncased`` or a folder.
            supervised (`bool`, *optional*): which recipe the release followed. When not given it is read from the
                release name: ``sup-simcse-...`` is supervised, ``unsup-simcse-...`` unsupervised; any other name
                raises ``ValueError`` asking for the argument.
            from_pretrained_kwargs: passed to ``AutoModel.from_pretrained``.

        >>> model = SimCSEModel.from_official("princeton-nlp/sup-simcse-bert-base-uncased")  # doctest: +SKIP
        """
        if supervised is None:
            name = os.path.basename(os.path.normpath(str(path_or_repo))).lower()
            if re.search(r"(^|[-_/])unsup[-_]simcse", name):
                supervised = False
            elif re.search(r"(^|[-_/])sup[-_]simcse", name):
                supervised = True
            else:
                raise ValueError(
                    f"supervised: cannot tell from the name {str(path_or_repo)!r} whether this SimCSE release is "
                    "supervised; pass supervised=True (evaluated with 'cls', the MLP applied) or supervised=False "
                    "(evaluated with 'cls_before_pooler')."
                )
        encoder = AutoModel.from_pretrained(path_or_repo, **from_pretrained_kwargs)
        encoder.config._name_or_path = public_name(str(path_or_repo))
        pooler = getattr(encoder, "pooler", None)
        if not isinstance(getattr(pooler, "dense", None), nn.Linear):
            raise ValueError(
                f"{str(path_or_repo)!r} has no pooler dense layer (the SimCSE MLP of an official release); "
                "load it with SimCSEModel.from_encoder instead."
            )
        config = SimCSEConfig(
            encoder_config=encoder.config,
            pooler_type="cls" if supervised else "cls_before_pooler",
        )
        model = cls(config)
        model._copy_encoder_weights(encoder, source=str(path_or_repo))
        model.mlp.dense.load_state_dict(pooler.dense.state_dict())
        model.config.base_model_name_or_path = public_name(str(path_or_repo))
        model.tokenizer = cls._load_tokenizer(path_or_repo, encoder.config, from_pretrained_kwargs)
        return model

    @classmethod
    def from_sentence_transformer(cls, st_model_or_path, **st_kwargs) -> SimCSEModel:
        r"""Turn a sentence-transformers model (e.g. one trained with ``simcse_hub.losses.SimCSELoss``) into a SimCSE
        model giving the same embeddings.

        Supported layouts: a ``Transformer`` module followed by ``Pooling`` in ``cls`` mode (-> ``cls_before_pooler``)
        or ``mean`` mode (-> ``avg``), optionally then ``Normalize`` (dropped: cosine similarity ignores it); or a
        folder simcse_hub saved (its ``Transformer`` module already holds a ``SimCSEModel``). Anything else (max
        pooling, ``Dense`` layers, ...) raises ``ValueError`` naming the module.

        Args:
            st_model_or_path (`SentenceTransformer` or `str`): the model, or a path / Hub id to load it from (this
                needs sentence-transformers installed).
            st_kwargs: passed to ``SentenceTransformer(...)`` when a path is given.

        >>> model = SimCSEModel.from_sentence_transformer("outputs/st-simcse")  # doctest: +SKIP
        >>> save_model(model, "outputs/simcse", tokenizer)  # doctest: +SKIP
        """
        st_model = st_model_or_path
        if isinstance(st_model_or_path, (str, os.PathLike)):
            from sentence_transformers import SentenceTransformer  # optional: only this method needs it

            st_model = SentenceTransformer(str(st_model_or_path), **st_kwargs)
        modules = list(st_model.children()) if isinstance(st_model, nn.Module) else list(st_model)
        encoder = getattr(modules[0], "model", None) or getattr(modules[0], "auto_model", None) if modules else None
        if not isinstance(encoder, PreTrainedModel):
            raise ValueError("from_sentence_transformer: the first module must be a Transformer module.")
        if isinstance(encoder, SimCSEModel):
            encoder.tokenizer = encoder.tokenizer or getattr(st_model, "tokenizer", None)
            return encoder
        pooler_type = None
        for module in modules[1:]:
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
        model = cls(SimCSEConfig(encoder_config=encoder.config, pooler_type=pooler_type))
        model._copy_encoder_weights(encoder, source="the sentence-transformers model")
        name = str(st_model_or_path) if isinstance(st_model_or_path, (str, os.PathLike)) else encoder.name_or_path
        model.config.base_model_name_or_path = public_name(name)
        model.config.encoder_config._name_or_path = public_name(encoder.config.name_or_path)
        model.tokenizer = getattr(st_model, "tokenizer", None)
        return model.to(next(encoder.parameters()).device)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | os.PathLike, *model_args, **kwargs) -> SimCSEModel:
        r"""Load a saved SimCSE model (``PreTrainedModel.from_pretrained``) and, when its folder or repo holds one,
        its tokenizer (``model.tokenizer``), so that ``save_pretrained`` and ``push_to_hub`` write a complete folder.

        >>> model = SimCSEModel.from_pretrained("outputs/quickstart")  # doctest: +SKIP
        """
        model = super().from_pretrained(pretrained_model_name_or_path, *model_args, **kwargs)
        model.tokenizer = cls._load_tokenizer(pretrained_model_name_or_path, model.config, kwargs)
        return model

    @staticmethod
    def _load_tokenizer(name_or_path: str | os.PathLike, config: Any, kwargs: dict[str, Any]) -> Any:
        """The tokenizer stored with ``name_or_path``, or ``None`` when it has none. The model's config is passed
        along, so no second configuration (and no remote-code question) is read."""
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

    # ------------------------------------------------------------------ saving

    def save_pretrained(
        self,
        save_directory: str | os.PathLike,
        *args,
        tokenizer: Any = None,
        max_seq_length: int | None = None,
        **kwargs,
    ) -> None:
        r"""Save the model so that every loader understands the folder: ``PreTrainedModel.save_pretrained`` (weights,
        config with ``auto_map``, this file and ``configuration_simcse.py``), then the tokenizer and the
        sentence-transformers files of its pooler, so that ``AutoModel.from_pretrained(folder,
        trust_remote_code=True)``, ``SentenceTransformer(folder, trust_remote_code=True)`` and
        ``simcse_hub.SimCSE(folder)`` give the same embeddings. ``push_to_hub`` saves through this method.

        Weights with NaN or inf are refused (`ValueError` naming the first such tensor) before anything is written.
        No path of this machine is written: the encoder's origin is saved as its Hub id, or its folder name.

        Args:
            save_directory (`str` or `os.PathLike`): the folder, created if needed.
            tokenizer (`PreTrainedTokenizerBase`, *optional*, defaults to ``self.tokenizer``): saved beside the
                weights. Without one the folder loads with ``AutoModel`` but not with ``SentenceTransformer`` (a
                warning says so).
            max_seq_length (`int`, *optional*): the truncation length of sentence-transformers; defaults to the
                tokenizer's ``model_max_length``, at most the encoder's position limit and 512.
            args, kwargs: passed to ``PreTrainedModel.save_pretrained`` (``is_main_process``, ``push_to_hub``, ...).

        >>> model.save_pretrained("outputs/my-simcse")  # doctest: +SKIP
        """
        problem = non_finite_weights(self)
        if problem is not None:
            raise ValueError(f"refusing to save the model to {public_name(str(save_directory))}: {problem}. The "
                             "weights are not finite (did training diverge? lower the learning rate).")
        push_to_hub = kwargs.pop("push_to_hub", False)
        push_kwargs = {key: kwargs.pop(key) for key in ("repo_id", "commit_message", "private", "create_pr")
                       if key in kwargs}
        is_main_process = kwargs.get("is_main_process", args[0] if args else True)
        config = self.config
        saved_names = (config.base_model_name_or_path if hasattr(config, "base_model_name_or_path") else None,
                       config.encoder_config._name_or_path)
        config.encoder_config._name_or_path = public_name(saved_names[1])
        if saved_names[0] is not None:
            config.base_model_name_or_path = public_name(saved_names[0])
        try:
            super().save_pretrained(save_directory, *args, **kwargs)
        finally:
            config.encoder_config._name_or_path = saved_names[1]
            if saved_names[0] is not None:
                config.base_model_name_or_path = saved_names[0]
        if not is_main_process:
            return
        folder = Path(save_directory)
        tokenizer = tokenizer if tokenizer is not None else self.tokenizer
        if tokenizer is not None:
            tokenizer.save_pretrained(folder)
            if max_seq_length is None:
                limits = (tokenizer.model_max_length, config.max_input_length, 512)
                max_seq_length = min(limit for limit in limits if limit)
        else:
            logger.warning("%s was saved without a tokenizer: it loads with AutoModel, but SentenceTransformer and "
                           "simcse_hub.SimCSE need one; pass save_pretrained(..., tokenizer=tokenizer).",
                           public_name(str(folder)))
        for relative, content in sentence_transformers_files(config, max_seq_length).items():
            path = folder / relative
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(content, indent=2) + "\n", encoding="utf-8")
        if push_to_hub:
            self.push_to_hub(push_kwargs.pop("repo_id", folder.name), token=kwargs.get("token"), **push_kwargs)

    def push_to_hub(self, repo_id: str, *args, tags: list[str] | None = None, **kwargs) -> Any:
        r"""``PreTrainedModel.push_to_hub`` through :meth:`save_pretrained` (the complete folder), tagged ``simcse``
        and ``sentence-transformers``; weights with NaN or inf are refused before the repo is created. For the full
        model card (training and evaluation), push with ``simcse-hub push`` instead.

        >>> model.push_to_hub("me/my-simcse")  # doctest: +SKIP
        """
        problem = non_finite_weights(self)
        if problem is not None:
            raise ValueError(f"refusing to push the model to {repo_id}: {problem}.")
        tags = list(dict.fromkeys(["simcse", "sentence-transformers", "sentence-similarity", *(tags or [])]))
        return super().push_to_hub(repo_id, *args, tags=tags, **kwargs)

    # ------------------------------------------------------------------ forward

    def pool(
        self,
        attention_mask: torch.Tensor,
        last_hidden_state: torch.Tensor,
        hidden_states: tuple[torch.Tensor, ...] | None = None,
    ) -> torch.Tensor:
        """The configured pooler over token states (no MLP): ``(batch, seq_len, hidden) -> (batch, hidden)``."""
        pooler_type = self.config.pooler_type
        if pooler_type in ("cls", "cls_before_pooler"):
            return last_hidden_state[:, 0]
        if pooler_type == "avg":
            return masked_mean(last_hidden_state, attention_mask)
        if hidden_states is None:
            raise ValueError(f"pooler_type={pooler_type!r} needs the encoder's hidden_states.")
        if pooler_type == "avg_top2":
            return masked_mean((hidden_states[-1] + hidden_states[-2]) / 2.0, attention_mask)
        if pooler_type == "avg_first_last":
            return masked_mean((hidden_states[1] + hidden_states[-1]) / 2.0, attention_mask)
        raise ValueError(f"pooler_type={pooler_type!r} is not supported; expected one of {list(POOLER_TYPES)}.")

    def _needs_hidden_states(self) -> bool:
        return self.config.pooler_type in ("avg_top2", "avg_first_last")

    def _uses_mlp(self) -> bool:
        return self.config.pooler_type == "cls" and (self.training or not self.config.mlp_only_train)

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        mlm_input_ids: torch.Tensor | None = None,
        mlm_labels: torch.Tensor | None = None,
        output_hidden_states: bool | None = None,
        output_attentions: bool | None = None,
        return_dict: bool | None = None,
        **kwargs,
    ) -> SimCSEModelOutput | tuple:
        r"""Encode sentences, or compute the SimCSE training loss on grouped sentences.

        Args:
            input_ids (`torch.LongTensor` of shape `(batch, seq_len)` or `(batch, num_sent, seq_len)`):
                token ids; with ``num_sent`` (2 or 3) the sentences of a group are anchor, positive and optionally
                hard negative, and the loss is returned.
            attention_mask (`torch.LongTensor`, *optional*, same shape as ``input_ids``): 1 for real tokens.
            token_type_ids (`torch.LongTensor`, *optional*, same shape as ``input_ids``): segment ids, for the
                encoders that use them.
            mlm_input_ids, mlm_labels (`torch.LongTensor` of shape `(batch, num_sent, seq_len)`, *optional*): masked
                inputs and their labels (-100 where not masked) for the auxiliary MLM loss.
            output_hidden_states (`bool`, *optional*): also return every layer's output.

        Returns:
            [`SimCSEModelOutput`]: ``last_hidden_state`` and ``pooler_output`` (flattened to ``(batch * num_sent,
            ...)`` for grouped inputs), plus ``loss`` for grouped inputs.
        """
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        output_hidden_states = (
            output_hidden_states if output_hidden_states is not None else self.config.output_hidden_states
        )
        reference = input_ids if input_ids is not None else inputs_embeds
        if reference is None:
            raise ValueError("forward needs input_ids or inputs_embeds.")
        grouped = reference.dim() == (3 if input_ids is not None else 4)
        batch_size = reference.size(0)
        num_sent = reference.size(1) if grouped else 1
        if grouped and num_sent not in (2, 3):
            raise ValueError(
                f"input_ids of shape {tuple(reference.shape)}: grouped inputs are (batch, num_sent, seq_len) with "
                "num_sent 2 (anchor, positive) or 3 (anchor, positive, hard negative)."
            )

        def flat(tensor: torch.Tensor | None) -> torch.Tensor | None:
            if tensor is None or not grouped:
                return tensor
            return tensor.reshape(batch_size * num_sent, *tensor.shape[2:])  # (batch * num_sent, seq_len[, dim])

        input_ids, attention_mask = flat(input_ids), flat(attention_mask)
        token_type_ids, position_ids, inputs_embeds = flat(token_type_ids), flat(position_ids), flat(inputs_embeds)
        if attention_mask is None:
            attention_mask = torch.ones(
                (input_ids if input_ids is not None else inputs_embeds).shape[:2], dtype=torch.long,
                device=reference.device,
            )
        encoder_kwargs = {"attention_mask": attention_mask}
        if token_type_ids is not None:
            encoder_kwargs["token_type_ids"] = token_type_ids
        if position_ids is not None:
            encoder_kwargs["position_ids"] = position_ids
        if output_attentions:
            encoder_kwargs["output_attentions"] = True
        outputs = self.encoder(
            input_ids=input_ids,
            inputs_embeds=inputs_embeds,
            output_hidden_states=output_hidden_states or self._needs_hidden_states(),
            return_dict=True,
            **encoder_kwargs,
        )
        pooled = self.pool(attention_mask, outputs.last_hidden_state, outputs.hidden_states)  # (batch * num_sent, hidden)
        if self._uses_mlp():
            pooled = self.mlp(pooled)

        loss = None
        if grouped:
            groups = pooled.view(batch_size, num_sent, -1)  # (batch, num_sent, hidden)
            hard_negatives = groups[:, 2] if num_sent == 3 else None
            loss = info_nce(
                groups[:, 0],
                groups[:, 1],
                hard_negatives,
                temperature=self.config.temperature,
                hard_negative_weight=self.config.hard_negative_weight,
            )
            if self.config.do_mlm and mlm_input_ids is not None:
                loss = loss + self.config.mlm_weight * self.mlm_loss(mlm_input_ids, mlm_labels, attention_mask)

        result = SimCSEModelOutput(
            last_hidden_state=outputs.last_hidden_state,
            pooler_output=pooled,
            loss=loss,
            hidden_states=outputs.hidden_states if output_hidden_states else None,
            attentions=getattr(outputs, "attentions", None),
        )
        return result if return_dict else result.to_tuple()

    def mlm_loss(
        self, mlm_input_ids: torch.Tensor, mlm_labels: torch.Tensor, attention_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Masked-LM cross-entropy on ``mlm_input_ids`` (any shape ending in seq_len); -100 labels are ignored."""
        if self.lm_head is None:
            raise ValueError("mlm_loss needs config.do_mlm=True (the masked-LM head is built only then).")
        if mlm_labels is None:
            raise ValueError("mlm_input_ids were given without mlm_labels.")
        seq_len = mlm_input_ids.size(-1)
        mlm_input_ids = mlm_input_ids.reshape(-1, seq_len)  # (batch * num_sent, seq_len)
        if attention_mask is not None:
            attention_mask = attention_mask.reshape(-1, seq_len)
        hidden = self.encoder(input_ids=mlm_input_ids, attention_mask=attention_mask, return_dict=True)
        scores = self.lm_head(hidden.last_hidden_state)  # (batch * num_sent, seq_len, vocab)
        return F.cross_entropy(scores.reshape(-1, scores.size(-1)).float(), mlm_labels.reshape(-1), ignore_index=-100)


# `save_pretrained` writes `auto_map` and copies this file and its sibling next to the weights.
SimCSEConfig.register_for_auto_class()
SimCSEModel.register_for_auto_class("AutoModel")

__all__ = ["SimCSEMLP", "SimCSEModel", "SimCSEModelOutput", "info_nce", "masked_mean", "non_finite_weights",
           "public_name", "sentence_transformers_files", "standard_pooling_mode"]
