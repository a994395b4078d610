"""The SimCSE contrastive loss: the functional core, its distributed form, and a sentence-transformers loss.

* :func:`info_nce` is the one definition of the loss in the package (it lives in the remote code, ``modeling``,
  because ``SimCSEModel.forward`` computes it too; it is re-exported here).
* :func:`contrastive_loss` is what the trainer calls on local embeddings: with ``gather_across_devices`` each process
  scores its own anchors against the positives (and hard negatives) of every process.
* :class:`SimCSELoss` follows the sentence-transformers loss contract, so ``SentenceTransformerTrainer`` trains
  unsupervised and supervised SimCSE with no other code.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from sentence_transformers.util.distributed import all_gather_with_grad, get_rank, get_world_size
from torch import Tensor, nn

from simcse_hub.modeling.heads_simcse import info_nce

CITATION = """@inproceedings{gao2021simcse,
    title = "{S}im{CSE}: Simple Contrastive Learning of Sentence Embeddings",
    author = "Gao, Tianyu and Yao, Xingcheng and Chen, Danqi",
    booktitle = "Proceedings of the 2021 Conference on Empirical Methods in Natural Language Processing",
    year = "2021",
    url = "https://arxiv.org/abs/2104.08821",
}"""


def contrastive_loss(
    anchors: Tensor,
    positives: Tensor,
    hard_negatives: Tensor | None = None,
    *,
    temperature: float = 0.05,
    hard_negative_weight: float = 0.0,
    symmetric: bool = False,
    gather_across_devices: bool = False,
) -> Tensor:
    """SimCSE's InfoNCE on this process's embeddings, optionally with the negatives of every process.

    With ``gather_across_devices`` and several processes, each process scores its local anchors against the
    positives and hard negatives of all processes (gathered with sentence-transformers' ``all_gather_with_grad``; its
    own positive at row ``rank * batch + i``: every process holds a local batch of the same size, as Accelerate's
    even batches and simcse_hub's samplers give). The mean of the per-process losses equals :func:`info_nce` on the
    concatenated batch, and DDP's averaging of parameter gradients gives exactly the gradient of the global loss.

    Args:
        anchors (`torch.Tensor` of shape `(batch, dim)`): local anchor embeddings.
        positives (`torch.Tensor` of shape `(batch, dim)`): local positives, row ``i`` for anchor ``i``.
        hard_negatives (`torch.Tensor` of shape `(batch, dim)`, *optional*): local hard negatives.
        temperature (`float`, *optional*, defaults to 0.05): softmax temperature.
        hard_negative_weight (`float`, *optional*, defaults to 0.0): logit offset of each anchor's own hard negative.
        symmetric (`bool`, *optional*, defaults to `False`): add the positive -> anchor direction and average.
        gather_across_devices (`bool`, *optional*, defaults to `False`): use every process's negatives.

    >>> z = torch.nn.functional.normalize(torch.randn(4, 8), dim=-1)
    >>> contrastive_loss(z, z).item() < contrastive_loss(z, z.flip(0)).item()
    True
    """
    settings = {"temperature": temperature, "hard_negative_weight": hard_negative_weight}
    if not (gather_across_devices and get_world_size() > 1):
        return info_nce(anchors, positives, hard_negatives, symmetric=symmetric, **settings)
    labels = get_rank() * anchors.size(0) + torch.arange(anchors.size(0), device=anchors.device)
    all_hard = all_gather_with_grad(hard_negatives) if hard_negatives is not None else None
    loss = info_nce(anchors, all_gather_with_grad(positives), all_hard, labels=labels, **settings)
    if symmetric:
        reverse = info_nce(positives, all_gather_with_grad(anchors), labels=labels, temperature=temperature)
        loss = (loss + reverse) / 2
    return loss


def interleave_columns(features: list[dict[str, Any]], num_sent: int, pad_token_id: int = 0) -> dict[str, Any]:
    """Merge per-column tokenized batches into one ``(batch * num_sent, seq_len)`` batch, group by group.

    Rows come out as ``a_0, p_0[, h_0], a_1, p_1, ...``, the order of ``SimCSEModel``'s grouped forward, so one
    encoder pass sees the same shapes (and, for the same seed, the same dropout masks). One column with
    ``num_sent=2`` repeats every sentence: unsupervised SimCSE in a single forward pass of the doubled batch.
    Non-tensor entries (sentence-transformers bookkeeping) are taken from the first column.
    """
    columns = features * num_sent if len(features) == 1 else features
    first = columns[0]
    merged: dict[str, Any] = {}
    for key, value in first.items():
        if not (isinstance(value, Tensor) and value.dim() == 2):
            merged[key] = value
            continue
        width = max(column[key].size(1) for column in columns)
        fill = pad_token_id if key == "input_ids" else 0
        padded = [nn.functional.pad(column[key], (0, width - column[key].size(1)), value=fill) for column in columns]
        merged[key] = torch.stack(padded, dim=1).reshape(-1, width)  # (batch * num_sent, seq_len)
    return merged


class SimCSELoss(nn.Module):
    def __init__(
        self,
        model: nn.Module,
        temperature: float = 0.05,
        hard_negative_weight: float = 0.0,
        gather_across_devices: bool = False,
        symmetric: bool = False,
    ) -> None:
        """SimCSE's contrastive loss (InfoNCE with in-batch negatives) for sentence-transformers training.

        Each anchor is pulled towards its positive and pushed away from every other positive in the batch (and from
        every hard negative, its own weighted by ``hard_negative_weight``), with cosine similarity divided by
        ``temperature``. With one text column this is *unsupervised* SimCSE: every sentence is its own positive
        under a second dropout mask, and the doubled batch goes through the model in one forward pass. With two
        columns (anchor, positive) or three (anchor, positive, hard negative) it is *supervised* SimCSE, as trained
        on NLI entailment and contradiction pairs. All columns go through the model in one forward pass.

        Args:
            model (`SentenceTransformer`): the model being trained (for unsupervised SimCSE, dropout must be on).
            temperature (`float`, *optional*, defaults to 0.05): the softmax temperature (scale = 1 / temperature;
                ``MultipleNegativesRankingLoss(scale=20)`` is temperature 0.05 on pairs).
            hard_negative_weight (`float`, *optional*, defaults to 0.0): added to the logit of each anchor's own hard
                negative (the log of its weight), as in the SimCSE code.
            gather_across_devices (`bool`, *optional*, defaults to `False`): with several processes, score local
                anchors against the positives and negatives of every process (gradients flow across the gather).
            symmetric (`bool`, *optional*, defaults to `False`): also score each positive against all anchors and
                average the two directions.

        References:
            * SimCSE: Simple Contrastive Learning of Sentence Embeddings: https://arxiv.org/abs/2104.08821
            * Understanding Contrastive Representation Learning through Alignment and Uniformity on the
              Hypersphere: https://arxiv.org/abs/2005.10242

        Requirements:
            1. Dropout active in the model (it is, in training mode) for the one-column, unsupervised setting.
            2. Batches without duplicates help: a duplicate sentence is a false negative.

        Inputs:
            +---------------------------------------+--------+
            | Texts                                 | Labels |
            +=======================================+========+
            | (sentence)                            | none   |
            +---------------------------------------+--------+
            | (anchor, positive) pairs              | none   |
            +---------------------------------------+--------+
            | (anchor, positive, hard negative)     | none   |
            +---------------------------------------+--------+

        Example:
            ::

                from datasets import Dataset
                from sentence_transformers import SentenceTransformer, SentenceTransformerTrainer
                from simcse_hub.losses import SimCSELoss

                model = SentenceTransformer("sentence-transformers/all-MiniLM-L6-v2")
                train_dataset = Dataset.from_dict({"text": ["A man plays a guitar.", "A dog runs on the beach."]})
                loss = SimCSELoss(model)  # unsupervised: one column
                trainer = SentenceTransformerTrainer(model=model, train_dataset=train_dataset, loss=loss)
                trainer.train()
        """
        super().__init__()
        if not temperature > 0:
            raise ValueError(f"temperature={temperature!r} must be greater than 0 (SimCSE uses 0.05).")
        self.model = model
        self.temperature = float(temperature)
        self.hard_negative_weight = float(hard_negative_weight)
        self.gather_across_devices = bool(gather_across_devices)
        self.symmetric = bool(symmetric)

    @classmethod
    def from_config(cls, config: Any, model: nn.Module | None = None, **kwargs: Any) -> SimCSELoss:
        """The loss a ``SimCSEConfig`` defines (its ``temperature`` and ``hard_negative_weight``): what the training
        loop of simcse_hub computes on its embeddings (``model`` may then be ``None``).

        >>> loss = SimCSELoss.from_config(simcse_model.config, gather_across_devices=True)  # doctest: +SKIP
        """
        return cls(model, temperature=config.temperature, hard_negative_weight=config.hard_negative_weight, **kwargs)

    def embed(self, sentence_features: Iterable[dict[str, Tensor]]) -> Tensor:
        """The embeddings of a batch as ``(batch, num_sent, dim)``, all columns in one forward pass."""
        features = list(sentence_features)
        if len(features) not in (1, 2, 3):
            raise ValueError(
                f"SimCSELoss takes 1 text column (unsupervised), 2 (anchor, positive) or 3 (anchor, positive, "
                f"hard negative); got {len(features)} columns."
            )
        num_sent = 2 if len(features) == 1 else len(features)
        tokenizer = getattr(self.model, "tokenizer", None)
        pad_token_id = getattr(tokenizer, "pad_token_id", None) or 0
        batch = interleave_columns(features, num_sent, pad_token_id)
        embeddings = self.model(batch)["sentence_embedding"]  # (batch * num_sent, dim)
        return embeddings.view(-1, num_sent, embeddings.size(-1))  # (batch, num_sent, dim)

    def forward(self, sentence_features: Iterable[dict[str, Tensor]], labels: Tensor | None = None) -> Tensor:
        groups = self.embed(sentence_features)
        return self.compute_loss_from_embeddings(groups)

    def compute_loss_from_embeddings(self, groups: Tensor) -> Tensor:
        """The loss of ``(batch, num_sent, dim)`` embeddings: anchor, positive[, hard negative] per group."""
        return contrastive_loss(
            groups[:, 0],
            groups[:, 1],
            groups[:, 2] if groups.size(1) == 3 else None,
            temperature=self.temperature,
            hard_negative_weight=self.hard_negative_weight,
            symmetric=self.symmetric,
            gather_across_devices=self.gather_across_devices,
        )

    def get_config_dict(self) -> dict[str, Any]:
        return {
            "temperature": self.temperature,
            "hard_negative_weight": self.hard_negative_weight,
            "gather_across_devices": self.gather_across_devices,
            "symmetric": self.symmetric,
        }

    @property
    def citation(self) -> str:
        return CITATION


__all__ = ['CITATION', 'SimCSELoss', 'all_gather_with_grad', 'contrastive_loss', 'info_nce', 'interleave_columns']
