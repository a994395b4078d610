"""SimCSE: one sentence-encoder model class for any encoder that ``AutoModel`` builds.

This file is *remote code*: it is copied next to the weights of every saved model so that
``AutoModel.from_pretrained(path, trust_remote_code=True)`` works without simcse_hub installed. It imports only
``torch``, ``transformers`` and its siblings, which ``save_pretrained`` copies with it: ``configuration_simcse``
(the config), ``heads_simcse`` (grouped inputs, the poolers, the heads, the InfoNCE loss) and ``formats_simcse`` (the
files other libraries read, official releases, public names). It must never import ``simcse_hub``.

Reference: Gao, Yao & Chen, "SimCSE: Simple Contrastive Learning of Sentence Embeddings", EMNLP 2021
(https://arxiv.org/abs/2104.08821), and the authors' code (princeton-nlp/SimCSE, ``simcse/models.py``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from transformers import AutoModel, AutoModelForMaskedLM, PreTrainedModel
from transformers import initialization as init
from transformers.utils import ModelOutput

from .configuration_simcse import SimCSEConfig
from .formats_simcse import (
    load_tokenizer,
    non_finite_weights,
    official_is_supervised,
    public_name,
    public_names,
    sentence_transformer_pooler,
    write_loader_files,
)
from .heads_simcse import SimCSEMLP, build_lm_head, flatten_groups, info_nce, pool, shared_parameters


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
        self.lm_head = build_lm_head(config) if config.do_mlm else None
        if self.lm_head is not None:  # e.g. BERT's decoder.bias is its predictions.bias: declared, so saving works
            self._tied_weights_keys = shared_parameters(self.lm_head, "lm_head.")
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
            raise ValueError(f"encoder weights of {source} do not fit: missing {missing[:5]}, unexpected "
                             f"{unexpected[:5]}.")

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

        >>> model = SimCSEModel.from_encoder("bert-base-uncased", pooler_type="cls")  # doctest: +SKIP
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
        model.tokenizer = load_tokenizer(encoder_name_or_path, encoder.config, from_pretrained_kwargs)
        return model

    @classmethod
    def from_official(
        cls,
        path_or_repo: str | os.PathLike,
        supervised: bool | None = None,
        **from_pretrained_kwargs,
    ) -> SimCSEModel:
        r"""Import an original SimCSE release (a plain ``BertModel``/``RobertaModel`` checkpoint) with its pooler.

        The releases of princeton-nlp store the trained SimCSE MLP as the encoder's ``pooler``
        (``simcse_to_huggingface.py`` renamed ``mlp`` to ``pooler``). Unsupervised releases were trained with
        ``--mlp_only_train`` and are evaluated with ``cls_before_pooler`` (the first token, no MLP); supervised
        releases are evaluated with ``cls`` (the first token through the MLP, i.e. BERT's ``pooler_output``). Both
        keep the MLP weights here.

        Args:
            path_or_repo (`str` or `os.PathLike`): e.g. ``princeton-nlp/sup-simcse-bert-base-uncased`` or a folder.
            supervised (`bool`, *optional*): which recipe the release followed. When not given it is read from the
                release name: ``sup-simcse-...`` is supervised, ``unsup-simcse-...`` unsupervised; any other name
                raises ``ValueError`` asking for the argument.
            from_pretrained_kwargs: passed to ``AutoModel.from_pretrained``.

        >>> model = SimCSEModel.from_official("princeton-nlp/sup-simcse-bert-base-uncased")  # doctest: +SKIP
        """
        if supervised is None:
            supervised = official_is_supervised(path_or_repo)
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
        model.tokenizer = load_tokenizer(path_or_repo, encoder.config, from_pretrained_kwargs)
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
        pooler_type = sentence_transformer_pooler(modules[1:])
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
        model.tokenizer = load_tokenizer(pretrained_model_name_or_path, model.config, kwargs)
        return model

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
        config with ``auto_map``, this file and the files it imports), then the tokenizer and the
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
        with public_names(self.config):
            super().save_pretrained(save_directory, *args, **kwargs)
        if not is_main_process:
            return
        tokenizer = tokenizer if tokenizer is not None else self.tokenizer
        write_loader_files(Path(save_directory), self.config, tokenizer, max_seq_length)
        if push_to_hub:
            repo_id = push_kwargs.pop("repo_id", Path(save_directory).name)
            self.push_to_hub(repo_id, token=kwargs.get("token"), **push_kwargs)

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
        return pool(self.config.pooler_type, attention_mask, last_hidden_state, hidden_states)

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
        inputs, num_sent = flatten_groups({"input_ids": input_ids, "attention_mask": attention_mask,
                                           "token_type_ids": token_type_ids, "position_ids": position_ids,
                                           "inputs_embeds": inputs_embeds})
        attention_mask = inputs["attention_mask"]
        optional = ("token_type_ids", "position_ids")  # passed only when given: not every encoder takes them
        outputs = self.encoder(
            **{key: value for key, value in inputs.items() if value is not None or key not in optional},
            output_hidden_states=output_hidden_states or self._needs_hidden_states(),
            return_dict=True,
            **({"output_attentions": True} if output_attentions else {}),
        )
        pooled = self.pool(attention_mask, outputs.last_hidden_state, outputs.hidden_states)  # (batch*num_sent, hidden)
        if self._uses_mlp():
            pooled = self.mlp(pooled)

        loss = None
        if num_sent:
            groups = pooled.view(-1, num_sent, pooled.size(-1))  # (batch, num_sent, hidden)
            loss = info_nce(groups[:, 0], groups[:, 1], groups[:, 2] if num_sent == 3 else None,
                            temperature=self.config.temperature, hard_negative_weight=self.config.hard_negative_weight)
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


# `save_pretrained` writes `auto_map` and copies this file and its siblings next to the weights.
SimCSEConfig.register_for_auto_class()
SimCSEModel.register_for_auto_class("AutoModel")

__all__ = ["SimCSEModel", "SimCSEModelOutput"]
