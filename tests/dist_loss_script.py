"""Run by test_losses under `torchrun --nproc_per_node 2`: each process takes its slice of a fixed batch, computes
the gathered SimCSE loss, back-propagates, and saves its loss and the gradients of its local embeddings."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
import torch.distributed as dist

from simcse_hub.losses import contrastive_loss


def main(folder: Path) -> None:
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    anchors, positives, hard = torch.load(folder / "inputs.pt")
    local = anchors.size(0) // world
    rows = slice(rank * local, (rank + 1) * local)
    names = ("anchors", "positives", "hard_negatives")
    for symmetric in (False, True):
        leaves = [t[rows].clone().requires_grad_(True) for t in (anchors, positives, hard)]
        loss = contrastive_loss(*leaves, hard_negative_weight=0.5, symmetric=symmetric, gather_across_devices=True)
        loss.backward()
        grads = {n: t.grad for n, t in zip(names, leaves)}
        torch.save({"loss": loss.item(), **grads}, folder / f"rank{rank}_symmetric{int(symmetric)}.pt")
    (folder / f"rank{rank}.json").write_text(json.dumps({"world_size": world}))
    dist.destroy_process_group()


if __name__ == "__main__":
    main(Path(sys.argv[1]))
