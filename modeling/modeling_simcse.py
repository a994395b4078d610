"""SimCSE: one sentence-encoder model class for any encoder that ``AutoModel`` builds.

This file is *remote code*: it is copied next to the weights of every saved model so that
``AutoModel.from_pretrained(path, trust_remote_code=True)`` works without simcse_hub installed. It imports only
``torch``, ``transformers`` and its siblings, which ``save_pretrained`` copies with it: ``configuration_simcse``
(the config), ``heads_simcse`` (grouped inputs, the poolers, the MLP head, the InfoNCE loss) and ``formats_simcse`` (the
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
from transformers.modeling_outputs import BaseModelOutputWithPooling
from transformers.utils import can_return_tuple

from .configuration_simcse import SimCSEConfig
from .formats_simcse import (
    load_tokenizer,
    non_finite_weights,
    official_is_supervised,
    public_name,
    sentence_transformer_pooler,
    write_loader_files,
)
from .heads_simcse import SimCSEMLP, flatten_groups, info_nce, pool


@dataclass
class SimCSEModelOutput(BaseModelOutputWithPooling):
    r"""Output of [`SimCSEModel`]: transformers' ``BaseModelOutputWithPooling``, and the training loss.

    Args:
        last_hidden_state (`torch.Tensor` of shape `(batch, seq_len, hidden)`): the encoder's last layer.
        pooler_output (`torch.Tensor` of shape `(batch, hidden)`): the sentence embedding under the configured pooler
            (of shape `(batch, whitening_dim)` when the model is whitened).
        hidden_states (`tuple(torch.Tensor)`, *optional*): every layer's output, when asked for.
        attentions (`tuple(torch.Tensor)`, *optional*): attention weights, when asked for.
        loss (`torch.Tensor`, *optional*): the training loss (InfoNCE plus weighted MLM), for grouped inputs.
    """

    loss: torch.Tensor | None = None


def masked_lm_head(mlm_model: PreTrainedModel) -> tuple[str, nn.Module]:
    """The masked-LM head of a ``*ForMaskedLM`` model (``config.do_mlm``): ``(name, module)``, its ``cls`` or
    ``lm_head``."""
    for name in ("cls", "lm_head"):
        if isinstance(getattr(mlm_model, name, None), nn.Module):
            return name, getattr(mlm_model, name)
    raise ValueError(
        f"do_mlm=True needs a masked-LM head named 'cls' or 'lm_head' (BERT, RoBERTa, XLM-R, MPNet, ...); "
        f"{type(mlm_model).__name__} has neither. Set do_mlm=False for this encoder."
    )


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
    base_model_prefix = "encoder"  # so `base_model`, `get_input_embeddings` and `set_input_embeddings` reach it
    supports_gradient_checkpointing = True
    _supports_sdpa = True

    def __init__(self, config: SimCSEConfig) -> None:
        super().__init__(config)
        # In the default dtype (float32, or what `from_pretrained(dtype=...)` asks for), not the `dtype` recorded in
        # the encoder's config: an encoder stored in float16 must not give a float16 encoder under a float32 head.
        self.encoder = AutoModel.from_config(config.encoder_config, dtype=torch.get_default_dtype())
        # SimCSE pools by itself: the encoder's own pooler (BERT's NSP head) would be unused parameters, which break
        # distributed data parallel training. `from_official` reads its weights from the release instead.
        if isinstance(getattr(self.encoder, "pooler", None), nn.Module):
            self.encoder.pooler = None
        self.mlp = SimCSEMLP(config.hidden_size)
        # BERT-whitening fitted after training (simcse_hub.postprocess.Whitening.apply_to): weight W^T, bias -mean @ W
        self.whitening = nn.Linear(config.hidden_size, config.whitening_dim) if config.whitening_dim else None
        self.lm_head = None
        if config.do_mlm:
            mlm_model = AutoModelForMaskedLM.from_config(config.encoder_config, dtype=torch.get_default_dtype())
            name, self.lm_head = masked_lm_head(mlm_model)
            # The ties within the head (BERT's decoder.bias is its predictions.bias), as its class declares them.
            self._tied_weights_keys = {f"lm_head{key[len(name):]}": f"lm_head{value[len(name):]}" for key, value
                                       in (mlm_model._tied_weights_keys or {}).items()
                                       if key.startswith(f"{name}.") and value.startswith(f"{name}.")}
        # The tokenizer, when the model knows it (the constructors and `from_pretrained` set it): `save_pretrained`
        # writes it beside the weights.
        self.tokenizer = None
        self.add_model_tags(["simcse", "sentence-transformers", "sentence-similarity"])  # what push_to_hub tags
        self.post_init()
        if self.lm_head is not None:  # ours: post_init keeps ties only if config.tie_word_embeddings, which we lack
            self.all_tied_weights_keys.update(self._tied_weights_keys)

    def _init_weights(self, module: nn.Module) -> None:
        """Initialise the SimCSE MLP as the encoder's family initialises linear layers (the encoder and the masked-LM
        head come initialised by their own classes)."""
        if isinstance(module, nn.Linear):
            init.normal_(module.weight, mean=0.0, std=getattr(self.config.encoder_config, "initializer_range", 0.02))
            init.zeros_(module.bias)

    # ------------------------------------------------------------------ construction

    @classmethod
    def _around(cls, encoder: PreTrainedModel, source: str | os.PathLike, tokenizer: Any, **settings) -> SimCSEModel:
        """A new model holding ``encoder``'s weights (its pooler, which SimCSE drops, excepted), built with
        ``settings``; ``source`` (where the encoder came from) is kept as ``config.base_model_name_or_path``."""
        model = cls(SimCSEConfig(encoder_config=encoder.config, **settings))
        state = {key: value for key, value in encoder.state_dict().items() if not key.startswith("pooler.")}
        model.encoder.load_state_dict(state)  # strict: the same class and configuration on both sides
        model.config.base_model_name_or_path = public_name(str(source))
        model.tokenizer = tokenizer
        return model

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
        model = cls._around(
            encoder, encoder_name_or_path, load_tokenizer(encoder_name_or_path, encoder.config, from_pretrained_kwargs),
            pooler_type=pooler_type, mlp_only_train=mlp_only_train, temperature=temperature,
            hard_negative_weight=hard_negative_weight, do_mlm=do_mlm, mlm_weight=mlm_weight,
        )
        if do_mlm:
            mlm_model = AutoModelForMaskedLM.from_pretrained(encoder_name_or_path, **from_pretrained_kwargs)
            model.lm_head.load_state_dict(masked_lm_head(mlm_model)[1].state_dict())
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
                release name (``formats_simcse.official_recipe``): ``sup-simcse-...`` is supervised,
                ``unsup-simcse-...`` unsupervised; any other name raises ``ValueError`` asking for the argument.
            from_pretrained_kwargs: passed to ``AutoModel.from_pretrained``.

        >>> model = SimCSEModel.from_official("princeton-nlp/sup-simcse-bert-base-uncased")  # doctest: +SKIP
        """
        if supervised is None:
            supervised = official_is_supervised(path_or_repo)
        encoder = AutoModel.from_pretrained(path_or_repo, **from_pretrained_kwargs)
        pooler = getattr(encoder, "pooler", None)
        if not isinstance(getattr(pooler, "dense", None), nn.Linear):
            raise ValueError(
                f"{str(path_or_repo)!r} has no pooler dense layer (the SimCSE MLP of an official release); "
                "load it with SimCSEModel.from_encoder instead."
            )
        model = cls._around(encoder, path_or_repo, load_tokenizer(path_or_repo, encoder.config, from_pretrained_kwargs),
                            pooler_type="cls" if supervised else "cls_before_pooler")
        model.mlp.dense.load_state_dict(pooler.dense.state_dict())
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
        >>> model.save_pretrained("outputs/simcse")  # doctest: +SKIP
        """
        st_model = st_model_or_path
        if isinstance(st_model_or_path, (str, os.PathLike)):
            from sentence_transformers import SentenceTransformer  # optional: only this method needs it

            st_model = SentenceTransformer(str(st_model_or_path), **st_kwargs)
        encoder = getattr(st_model[0], "model", None)
        if not isinstance(encoder, PreTrainedModel):
            raise ValueError("from_sentence_transformer: the first module must be a Transformer module.")
        if isinstance(encoder, SimCSEModel):
            encoder.tokenizer = encoder.tokenizer or st_model.tokenizer
            return encoder
        source = st_model_or_path if isinstance(st_model_or_path, (str, os.PathLike)) else encoder.name_or_path
        pooler_type = sentence_transformer_pooler(list(st_model)[1:])
        return cls._around(encoder, source, st_model.tokenizer, pooler_type=pooler_type).to(encoder.device)

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

    def _refuse_non_finite(self, action: str) -> None:
        problem = non_finite_weights(self)
        if problem is not None:
            raise ValueError(f"refusing to {action}: {problem}. The weights are not finite (did training diverge? "
                             "lower the learning rate).")

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
        No path of this machine is written: the encoder's origin is saved as its Hub id, or its folder name
        (``SimCSEConfig.to_dict``).

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
        self._refuse_non_finite(f"save the model to {public_name(str(save_directory))}")
        push_to_hub = kwargs.pop("push_to_hub", False)  # after the files below: transformers' push would miss them
        super().save_pretrained(save_directory, *args, **kwargs)
        if not kwargs.get("is_main_process", args[0] if args else True):
            return
        write_loader_files(Path(save_directory), self.config, self.tokenizer if tokenizer is None else tokenizer,
                           max_seq_length)
        mode = (Path(save_directory) / "config.json").stat().st_mode & 0o777  # what this umask gives a plain file
        for weights in Path(save_directory).glob("model*.safetensors"):  # transformers writes them 0600 (mkstemp)
            weights.chmod(mode)
        if push_to_hub:
            hub_kwargs = {key: kwargs[key] for key in ("commit_message", "private", "create_pr", "token")
                          if key in kwargs}
            self.push_to_hub(kwargs.get("repo_id", Path(save_directory).name), **hub_kwargs)

    def push_to_hub(self, repo_id: str, *args, **kwargs) -> Any:
        r"""``PreTrainedModel.push_to_hub`` through :meth:`save_pretrained` (the complete folder), tagged ``simcse``
        and ``sentence-transformers`` (``model_tags``); weights with NaN or inf are refused before the repo is
        created. For the full model card (training and evaluation), push with ``simcse-hub push`` instead.

        >>> model.push_to_hub("me/my-simcse")  # doctest: +SKIP
        """
        self._refuse_non_finite(f"push the model to {repo_id}")
        return super().push_to_hub(repo_id, *args, **kwargs)

    # ------------------------------------------------------------------ forward

    def pool(
        self,
        attention_mask: torch.Tensor,
        last_hidden_state: torch.Tensor,
        hidden_states: tuple[torch.Tensor, ...] | None = None,
    ) -> torch.Tensor:
        """The configured pooler over token states (no MLP): ``(batch, seq_len, hidden) -> (batch, hidden)``."""
        return pool(self.config.pooler_type, attention_mask, last_hidden_state, hidden_states)

    @can_return_tuple
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
        **kwargs,
    ) -> SimCSEModelOutput:
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
            return_dict (`bool`, *optional*): ``False`` for a tuple (transformers' ``can_return_tuple``).

        Returns:
            [`SimCSEModelOutput`]: ``last_hidden_state`` and ``pooler_output`` (flattened to ``(batch * num_sent,
            ...)`` for grouped inputs), plus ``loss`` for grouped inputs.
        """
        inputs, num_sent = flatten_groups({"input_ids": input_ids, "attention_mask": attention_mask,
                                           "token_type_ids": token_type_ids, "position_ids": position_ids,
                                           "inputs_embeds": inputs_embeds})
        if output_hidden_states is None:
            output_hidden_states = self.config.output_hidden_states
        needs_layers = self.config.pooler_type in ("avg_top2", "avg_first_last")
        outputs = self.encoder(**inputs, output_hidden_states=output_hidden_states or needs_layers,
                               output_attentions=output_attentions, return_dict=True)
        pooled = self.pool(inputs["attention_mask"], outputs.last_hidden_state, outputs.hidden_states)
        if self.config.pooler_type == "cls" and (self.training or self.config.uses_mlp_at_inference):
            pooled = self.mlp(pooled)  # (batch * num_sent, hidden)
        if self.whitening is not None and not (self.training or num_sent):  # inference only, never in the loss
            pooled = self.whitening(pooled)  # (batch, whitening_dim)
        loss = None
        if num_sent:
            groups = pooled.view(-1, num_sent, pooled.size(-1))  # (batch, num_sent, hidden)
            loss = info_nce(groups[:, 0], groups[:, 1], groups[:, 2] if num_sent == 3 else None,
                            temperature=self.config.temperature, hard_negative_weight=self.config.hard_negative_weight)
            if self.config.do_mlm and mlm_input_ids is not None:
                mlm = self.mlm_loss(mlm_input_ids, mlm_labels, inputs["attention_mask"])
                loss = loss + self.config.mlm_weight * mlm
        return SimCSEModelOutput(
            last_hidden_state=outputs.last_hidden_state,
            pooler_output=pooled,
            hidden_states=outputs.hidden_states if output_hidden_states else None,
            attentions=getattr(outputs, "attentions", None),
            loss=loss,
        )

    def mlm_loss(
        self, mlm_input_ids: torch.Tensor, mlm_labels: torch.Tensor, attention_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Masked-LM cross-entropy on ``mlm_input_ids`` (any shape ending in seq_len); -100 labels are ignored."""
        if self.lm_head is None:
            raise ValueError("mlm_loss needs config.do_mlm=True (the masked-LM head is built only then).")
        if mlm_labels is None:
            raise ValueError("mlm_input_ids were given without mlm_labels.")
        seq_len = mlm_input_ids.size(-1)
        if attention_mask is not None:
            attention_mask = attention_mask.reshape(-1, seq_len)  # (batch * num_sent, seq_len)
        hidden = self.encoder(input_ids=mlm_input_ids.reshape(-1, seq_len), attention_mask=attention_mask,
                              return_dict=True).last_hidden_state
        scores = self.lm_head(hidden)  # (batch * num_sent, seq_len, vocab)
        return F.cross_entropy(scores.reshape(-1, scores.size(-1)).float(), mlm_labels.reshape(-1))


# `save_pretrained` writes `auto_map` and copies this file and its siblings next to the weights.
SimCSEConfig.register_for_auto_class()
SimCSEModel.register_for_auto_class("AutoModel")

__all__ = ["SimCSEModel", "SimCSEModelOutput", "masked_lm_head"]
