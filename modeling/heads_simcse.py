"""What SimCSE computes around the encoder: grouped inputs flattened, the poolers, the MLP head and the InfoNCE loss.
Remote code beside ``modeling_simcse.py`` (imports only ``torch``).

Reference: Gao, Yao & Chen, "SimCSE: Simple Contrastive Learning of Sentence Embeddings", EMNLP 2021, eq. (1) and
(5); the authors' ``cl_forward`` in ``simcse/models.py``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .configuration_simcse import POOLER_TYPES


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


def flatten_groups(inputs: dict[str, torch.Tensor | None]) -> tuple[dict[str, torch.Tensor], int]:
    """The encoder's inputs for :meth:`SimCSEModel.forward` (those given, and an attention mask of ones for a missing
    one), and the sentences per group (0 for plain inputs).

    Grouped inputs, ``(batch, num_sent, seq_len)`` ids (``(batch, num_sent, seq_len, dim)`` embeddings) with
    ``num_sent`` 2 (anchor, positive) or 3 (and a hard negative), become ``(batch * num_sent, seq_len[, dim])``."""
    inputs = {key: value for key, value in inputs.items() if value is not None}
    reference = inputs.get("input_ids", inputs.get("inputs_embeds"))
    if reference is None:
        raise ValueError("forward needs input_ids or inputs_embeds.")
    num_sent = reference.size(1) if reference.dim() == (3 if "input_ids" in inputs else 4) else 0
    if num_sent:
        if num_sent not in (2, 3):
            raise ValueError(
                f"input_ids of shape {tuple(reference.shape)}: grouped inputs are (batch, num_sent, seq_len) with "
                "num_sent 2 (anchor, positive) or 3 (anchor, positive, hard negative)."
            )
        inputs = {key: value.flatten(0, 1) for key, value in inputs.items()}
    if "attention_mask" not in inputs:
        shape = inputs.get("input_ids", inputs.get("inputs_embeds")).shape[:2]  # (batch[ * num_sent], seq_len)
        inputs["attention_mask"] = torch.ones(shape, dtype=torch.long, device=reference.device)
    return inputs, num_sent


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


def pool(
    pooler_type: str,
    attention_mask: torch.Tensor,
    last_hidden_state: torch.Tensor,
    hidden_states: tuple[torch.Tensor, ...] | None = None,
) -> torch.Tensor:
    """The configured pooler over token states (no MLP): ``(batch, seq_len, hidden) -> (batch, hidden)``."""
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


__all__ = ["SimCSEMLP", "flatten_groups", "info_nce", "masked_mean", "pool"]
