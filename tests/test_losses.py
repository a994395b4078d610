"""The loss: info_nce against a hand-written reference, SimCSELoss against the model's own training forward,
sentence-transformers training with SimCSELoss, and the gather across two real processes."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import make_model

from simcse_hub import SimCSEModel
from simcse_hub.losses import SimCSELoss, contrastive_loss, info_nce, interleave_columns
from simcse_hub.train import save_model

HERE = Path(__file__).resolve().parent


def reference_loss(z1, z2, z3=None, temperature=0.05, weight=0.0, symmetric=False):
    """InfoNCE written row by row with plain Python floats."""
    n = z1.shape[0]

    def cos(a, b):
        return float(torch.dot(a, b) / (a.norm() * b.norm()))

    def row_loss(query, candidates, target, extra_weight_index=None):
        logits = [cos(query, c) / temperature for c in candidates]
        if extra_weight_index is not None:
            logits[extra_weight_index] += weight
        top = max(logits)
        return -(logits[target] - top - math.log(sum(math.exp(x - top) for x in logits)))

    forward = 0.0
    for i in range(n):
        candidates = list(z2) + (list(z3) if z3 is not None else [])
        forward += row_loss(z1[i], candidates, i, n + i if z3 is not None else None)
    loss = forward / n
    if symmetric:
        backward = sum(row_loss(z2[i], list(z1), i) for i in range(n)) / n
        loss = (loss + backward) / 2
    return loss


@pytest.fixture
def embeddings():
    generator = torch.Generator().manual_seed(11)
    return [torch.randn(6, 16, generator=generator) for _ in range(3)]


@pytest.mark.parametrize("temperature", [0.05, 1.0])
@pytest.mark.parametrize("use_hard, weight", [(False, 0.0), (True, 0.0), (True, 2.0), (True, -1.0)])
@pytest.mark.parametrize("symmetric", [False, True])
def test_info_nce_matches_reference(embeddings, temperature, use_hard, weight, symmetric):
    z1, z2, z3 = embeddings
    hard = z3 if use_hard else None
    got = info_nce(z1, z2, hard, temperature=temperature, hard_negative_weight=weight, symmetric=symmetric)
    expected = reference_loss(z1, z2, hard, temperature, weight, symmetric)
    assert got.item() == pytest.approx(expected, rel=1e-5, abs=1e-6)


def test_hard_negative_weight_changes_the_loss(embeddings):
    z1, z2, z3 = embeddings
    base = info_nce(z1, z2, z3).item()
    assert info_nce(z1, z2, z3, hard_negative_weight=1.0).item() > base  # a heavier hard negative costs more
    assert info_nce(z1, z2).item() < base  # and any hard negative column costs something


def test_contrastive_loss_single_process_is_info_nce(embeddings):
    z1, z2, z3 = embeddings
    for symmetric in (False, True):
        a = contrastive_loss(z1, z2, z3, hard_negative_weight=0.5, symmetric=symmetric, gather_across_devices=True)
        b = info_nce(z1, z2, z3, hard_negative_weight=0.5, symmetric=symmetric)
        assert a.item() == pytest.approx(b.item(), rel=1e-6)


def test_interleave_columns_orders_rows_by_group():
    a = {"input_ids": torch.tensor([[1, 2], [3, 4]]), "attention_mask": torch.ones(2, 2, dtype=torch.long)}
    p = {"input_ids": torch.tensor([[5, 6, 7], [8, 9, 10]]), "attention_mask": torch.ones(2, 3, dtype=torch.long)}
    merged = interleave_columns([a, p], 2, pad_token_id=0)
    assert merged["input_ids"].tolist() == [[1, 2, 0], [5, 6, 7], [3, 4, 0], [8, 9, 10]]
    assert merged["attention_mask"].tolist() == [[1, 1, 0], [1, 1, 1], [1, 1, 0], [1, 1, 1]]
    doubled = interleave_columns([a], 2)
    assert doubled["input_ids"].tolist() == [[1, 2], [1, 2], [3, 4], [3, 4]]


# --------------------------------------------------------------------------------- sentence-transformers


def st_model_for(model: SimCSEModel, tokenizer, folder):
    from sentence_transformers import SentenceTransformer

    save_model(model, folder, tokenizer)
    return SentenceTransformer(str(folder), device="cpu")


def columns(st, texts_per_column):
    return [dict(st.preprocess(texts)) for texts in texts_per_column]


@pytest.mark.parametrize("num_columns", [1, 2, 3])
def test_simcse_loss_equals_model_training_forward(num_columns, tokenizer, sentences, tmp_path):
    model = make_model("bert", pooler_type="cls", hard_negative_weight=0.7)
    st = st_model_for(model, tokenizer, tmp_path / "m")
    st.train()
    texts = [sentences[i::num_columns][:2] for i in range(num_columns)] if num_columns > 1 else [sentences[:4]]
    loss_fn = SimCSELoss(st, temperature=0.05, hard_negative_weight=0.7)
    torch.manual_seed(123)
    st_loss = loss_fn(columns(st, texts), None)

    num_sent = 2 if num_columns == 1 else num_columns
    groups = [[t] * 2 for t in texts[0]] if num_columns == 1 else [list(g) for g in zip(*texts)]
    flat = [s for g in groups for s in g]
    enc = tokenizer(flat, padding=True, return_tensors="pt")
    grouped = {k: v.view(len(groups), num_sent, -1) for k, v in enc.items()}
    simcse = st[0].model  # the same SimCSEModel instance that sentence-transformers holds
    simcse.train()
    torch.manual_seed(123)
    model_loss = simcse(**grouped).loss
    assert st_loss.item() == pytest.approx(model_loss.item(), rel=1e-5)
    # Dropout is on: the unsupervised loss is not the trivial one of identical views.
    if num_columns == 1:
        assert st_loss.item() > 1e-3


def test_simcse_loss_rejects_four_columns(tokenizer, sentences, tmp_path):
    st = st_model_for(make_model("bert"), tokenizer, tmp_path / "m")
    with pytest.raises(ValueError, match="1 text column .* got 4 columns"):
        SimCSELoss(st)(columns(st, [sentences[:2]] * 4), None)


def test_simcse_loss_config_and_citation(tokenizer, tmp_path):
    st = st_model_for(make_model("bert"), tokenizer, tmp_path / "m")
    loss = SimCSELoss(st, temperature=0.1, symmetric=True)
    assert loss.get_config_dict() == {
        "temperature": 0.1, "hard_negative_weight": 0.0, "gather_across_devices": False, "symmetric": True,
    }
    assert "gao2021simcse" in loss.citation
    with pytest.raises(ValueError, match="temperature=0 must be greater than 0"):
        SimCSELoss(st, temperature=0)


def fixed_batch_loss(st, loss_fn, texts):
    st.train()
    torch.manual_seed(0)
    with torch.no_grad():
        return loss_fn(columns(st, texts), None).item()


@pytest.mark.parametrize("num_columns", [1, 2, 3])
def test_sentence_transformer_trainer_with_simcse_loss(num_columns, tokenizer, sentences, tmp_path):
    from datasets import Dataset
    from sentence_transformers import SentenceTransformer, SentenceTransformerTrainer
    from sentence_transformers import SentenceTransformerTrainingArguments as Args
    from transformers import AutoModel

    st = st_model_for(make_model("bert", pooler_type="avg", seed=num_columns), tokenizer, tmp_path / "start")
    names = ["anchor", "positive", "negative"][:num_columns]
    rows = [sentences[(i + k) % len(sentences)] for i in range(8) for k in range(num_columns)]
    data = {name: rows[k::num_columns] for k, name in enumerate(names)}
    loss_fn = SimCSELoss(st)
    texts = [data[name] for name in names]
    before = fixed_batch_loss(st, loss_fn, texts)
    args = Args(
        output_dir=str(tmp_path / "run"), per_device_train_batch_size=8, num_train_epochs=15, learning_rate=5e-3,
        report_to="none", save_strategy="no", logging_steps=5, seed=0, use_cpu=True, dataloader_drop_last=False,
    )
    SentenceTransformerTrainer(model=st, args=args, train_dataset=Dataset.from_dict(data), loss=loss_fn).train()
    after = fixed_batch_loss(st, loss_fn, texts)
    assert after < before

    out = tmp_path / "trained"
    st.save(str(out))
    st.eval()
    expected = st.encode(sentences, convert_to_tensor=True)
    again = SentenceTransformer(str(out), device="cpu").encode(sentences, convert_to_tensor=True)
    simcse = AutoModel.from_pretrained(out).eval()
    with torch.no_grad():
        direct = simcse(**tokenizer(sentences, padding=True, return_tensors="pt")).pooler_output
    assert (again - expected).abs().max().item() < 1e-5
    assert (direct - expected).abs().max().item() < 1e-5


# --------------------------------------------------------------------------------- distributed (two processes)


@pytest.mark.distributed
def test_gather_across_two_processes_equals_single_process(tmp_path):
    generator = torch.Generator().manual_seed(5)
    world, local = 2, 4
    z = [torch.randn(world * local, 8, generator=generator) for _ in range(3)]
    torch.save(z, tmp_path / "inputs.pt")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(world),
         str(HERE / "dist_loss_script.py"), str(tmp_path)],
        capture_output=True, text=True, timeout=300, env=env, stdin=subprocess.DEVNULL,
    )
    assert result.returncode == 0, result.stderr[-4000:]

    for symmetric in (False, True):
        # The single-process computation on the concatenated batch.
        leaves = [t.clone().requires_grad_(True) for t in z]
        reference = info_nce(*leaves, hard_negative_weight=0.5, symmetric=symmetric)
        reference.backward()
        losses = []
        for rank in range(world):
            out = torch.load(tmp_path / f"rank{rank}_symmetric{int(symmetric)}.pt")
            losses.append(out["loss"])
            rows = slice(rank * local, (rank + 1) * local)
            for name, leaf in zip(("anchors", "positives", "hard_negatives"), leaves):
                # DDP averages gradients over processes: local gradient / world size is the global gradient.
                torch.testing.assert_close(out[name] / world, leaf.grad[rows], rtol=1e-5, atol=1e-6)
        assert sum(losses) / world == pytest.approx(reference.item(), rel=1e-5)
    assert json.loads((tmp_path / "rank0.json").read_text())["world_size"] == world
