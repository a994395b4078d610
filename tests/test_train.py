"""The training loop (simcse_hub.train), its configuration and checkpoints, on tiny encoders saved to a folder.

Each run takes seconds: a 2-layer BERT of width 32 over the vocabulary of conftest, 100-200 examples.
"""

from __future__ import annotations

import contextlib
import copy
import gzip
import json
import logging
import math
import os
import random
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from conftest import REPO_ROOT, WORDS, make_model, save_encoder
from safetensors.torch import load_file
from transformers import AutoModel, DataCollatorForLanguageModeling

import simcse_hub.train as train_module
from simcse_hub.cli import main as cli_main
from simcse_hub.config import ConfigError, TrainConfig, list_presets, parse_train_args
from simcse_hub.losses import contrastive_loss
from simcse_hub.speed import RandState, TrainingForward, attention_with_fast_dropout, use_fast_dropout
from simcse_hub.train import train, training_step

CARD_KEYS = {"base_model", "base_model_name", "objective", "datasets", "hyperparameters", "hardware",
             "train_runtime_seconds", "global_steps", "best_step", "best_stsb_dev_spearman", "language", "license",
             "peak_memory", "evaluations", "before_after", "portable", "whitening", "flow"}  # the last three: None


def card_data(folder: Path) -> dict:
    return json.loads((Path(folder) / "simcse_card.json").read_text())


pytestmark = pytest.mark.usefixtures("fresh_accelerate_state")


@pytest.fixture(scope="session")
def encoder_without_dropout(tmp_path_factory, tokenizer_dir) -> Path:
    return save_encoder(tmp_path_factory.mktemp("encoder_no_dropout"), tokenizer_dir, dropout=0.0)


def sentence(rng: random.Random) -> str:
    return " ".join(rng.choices(WORDS, k=rng.randint(4, 12))) + " ."


@pytest.fixture(scope="session")
def unsup_file(tmp_path_factory) -> Path:
    rng = random.Random(0)
    path = tmp_path_factory.mktemp("data") / "sentences.txt"
    path.write_text("".join(sentence(rng) + "\n" for _ in range(200)), encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def sup_file(tmp_path_factory) -> Path:
    """Triplets: the positive is a shortened copy of the anchor, the hard negative an unrelated sentence; quotes are
    literal (tab-separated, gzip'd, as ../shared/data/nli)."""
    rng = random.Random(1)
    lines = ["sent0\tsent1\thard_neg"]
    for _ in range(96):
        words = rng.choices(WORDS, k=10)
        lines.append(f'"{" ".join(words)}\t{" ".join(words[:7])}\t{sentence(rng)}')
    path = tmp_path_factory.mktemp("data") / "triplets.tsv.gz"
    path.write_bytes(gzip.compress(("\n".join(lines) + "\n").encode("utf-8"), mtime=0))
    return path


def make_config(tmp_path: Path, encoder: Path, train_file: Path, **overrides) -> TrainConfig:
    settings = {
        "model_name_or_path": str(encoder), "train_file": str(train_file), "output_dir": str(tmp_path / "out"),
        "pooler_type": "avg", "batch_size": 16, "learning_rate": 1e-3, "num_train_epochs": 2, "eval_steps": 0,
        "logging_steps": 1, "report_to": "none", "max_seq_length": 16, "seed": 0,
        "mixed_precision": "no",  # fp32 whatever the CPU (the default "auto" is bf16 on CPUs with native bf16)
    }
    return TrainConfig(**(settings | overrides))


def read_log(folder: Path) -> list[dict]:
    """The training log of a finished run, or of the run in progress (kept in checkpoints/ until it finishes)."""
    path = Path(folder) / "training_log.jsonl"
    path = path if path.exists() else Path(folder) / "checkpoints" / "training_log.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()]


def losses(folder: Path) -> list[float]:
    return [record["loss"] for record in read_log(folder) if "loss" in record]


def weights(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(Path(folder) / "model.safetensors")


# ---------------------------------------------------------------------------------------------------- runs


def test_unsupervised_run_lowers_the_loss_and_writes_a_folder_that_loads_three_ways(
    tmp_path, encoder_dir, unsup_file, sentences
):
    config = make_config(tmp_path, encoder_dir, unsup_file)
    out = train(config)
    curve = losses(out)
    assert len(curve) == 26  # 2 epochs of ceil(200 / 16) updates
    assert sum(curve[-3:]) < 0.5 * sum(curve[:3]), curve

    names = {path.name for path in out.iterdir()}
    assert {"model.safetensors", "config.json", "tokenizer.json", "modules.json", "train_config.yaml",
            "training_log.jsonl", "simcse_card.json", "README.md"} <= names
    assert "checkpoints" not in names  # removed once the run is complete
    # The settings as the folder shows them: files and folders by name, never a path of this machine.
    assert yaml.safe_load((out / "train_config.yaml").read_text()) == config.public_dict()
    assert config.public_dict()["train_file"] == "sentences.txt"

    summary = card_data(out)
    assert set(summary) == CARD_KEYS
    assert summary["objective"] == "unsupervised" and summary["global_steps"] == 26 and summary["best_step"] is None
    assert summary["peak_memory"].endswith("GB (process resident memory)") and summary["evaluations"] == []
    assert summary["datasets"] == [{"name": "sentences", "hub_id": None, "examples": 200}]
    assert summary["hyperparameters"] == config.public_dict() and summary["hardware"] == "1 x CPU (fp32)"
    assert summary["base_model"] is None and summary["base_model_name"] == encoder_dir.name
    assert summary["language"] == "en"
    assert (out / "README.md").read_text().startswith("---\n")

    from sentence_transformers import SentenceTransformer

    from simcse_hub import SimCSE

    model = AutoModel.from_pretrained(out).eval()
    assert model.config.pooler_type == "avg"
    reference = SimCSE(out).encode(sentences, normalize_to_unit=False, return_numpy=True)
    st = SentenceTransformer(str(out), trust_remote_code=True).encode(sentences)
    assert torch.allclose(torch.from_numpy(st), torch.from_numpy(reference), atol=1e-5)
    inputs = SimCSE(out).tokenizer(sentences, padding=True, return_tensors="pt")
    with torch.no_grad():
        direct = model(**inputs).pooler_output
    assert torch.allclose(direct, torch.from_numpy(reference), atol=1e-5)


def test_supervised_triplet_run_lowers_the_loss(tmp_path, encoder_dir, sup_file):
    config = make_config(tmp_path, encoder_dir, sup_file, hard_negative_weight=0.5, num_train_epochs=3)
    out = train(config)
    curve = losses(out)
    assert len(curve) == 18 and sum(curve[-3:]) < 0.5 * sum(curve[:3]), curve
    summary = card_data(out)
    assert summary["objective"] == "supervised"
    dataset = summary["datasets"][0]
    assert (dataset["name"], dataset["hub_id"], dataset["examples"]) == ("triplets", None, 96)
    assert AutoModel.from_pretrained(out).config.hard_negative_weight == 0.5


def test_bf16_mixed_precision_trains(tmp_path, encoder_dir, unsup_file):
    out = train(make_config(tmp_path, encoder_dir, unsup_file, mixed_precision="bf16"))
    curve = losses(out)
    assert all(map(torch.isfinite, torch.tensor(curve))) and sum(curve[-3:]) < 0.5 * sum(curve[:3])
    assert {tensor.dtype for tensor in weights(out).values()} == {torch.float32}  # master weights stay fp32
    assert card_data(out)["hardware"] == "1 x CPU (bf16)"


def test_a_second_run_in_the_same_process_may_change_precision_and_accumulation(tmp_path, encoder_dir, unsup_file):
    """Accelerate refuses to change the precision of its per-process state once set; a second ``train`` in the same
    process (a notebook) starts its own (this failed with mixed_precision="auto" on a bf16 CPU
    after an fp32 run)."""
    first = train(make_config(tmp_path / "a", encoder_dir, unsup_file, max_steps=2))
    second = train(make_config(tmp_path / "b", encoder_dir, unsup_file, max_steps=2, mixed_precision="bf16",
                               gradient_accumulation_steps=2))
    assert card_data(first)["hardware"] == "1 x CPU (fp32)" and card_data(second)["hardware"] == "1 x CPU (bf16)"
    assert [record["step"] for record in read_log(second)] == [1, 2]


@pytest.mark.parametrize("native_bf16", [True, False])
def test_auto_precision_is_bf16_only_on_a_cpu_that_computes_it_natively(tmp_path, encoder_dir, unsup_file,
                                                                         monkeypatch, native_bf16, caplog):
    from simcse_hub import speed as encoding

    monkeypatch.setattr(encoding, "fast_cpu_bf16", lambda: native_bf16)
    assert TrainConfig.mixed_precision == "auto"
    with caplog.at_level(logging.INFO, logger="simcse_hub.train"):
        out = train(make_config(tmp_path, encoder_dir, unsup_file, mixed_precision="auto", max_steps=2))
    expected = "bf16" if native_bf16 else "fp32"
    assert card_data(out)["hardware"] == f"1 x CPU ({expected})"
    assert f"mixed_precision='auto': {expected}" in caplog.text
    assert yaml.safe_load((out / "train_config.yaml").read_text())["mixed_precision"] == "auto"
    summary = card_data(out)
    assert summary["hyperparameters"]["mixed_precision"] == f"auto ({expected})"  # the model card shows the choice
    assert encoding.resolve_precision("bf16", torch.device("cpu")) == "bf16"
    assert encoding.resolve_precision("auto", torch.device("cuda")) == "fp32"  # GPUs: fp32 unless asked


def test_gradient_accumulation_counts_updates(tmp_path, encoder_dir, unsup_file):
    out = train(make_config(tmp_path, encoder_dir, unsup_file, batch_size=20, gradient_accumulation_steps=3,
                            num_train_epochs=1))
    # 10 contrastive batches of 20; updates after batches 3, 6, 9 and the last one (end of the data).
    assert [record["step"] for record in read_log(out)] == [1, 2, 3, 4]


# ---------------------------------------------------------------------------------------------------- gradient caching


def gradients(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}


def assert_same_update(cached: torch.nn.Module, full: torch.nn.Module, tolerance: float = 1e-5) -> None:
    g1, g2 = gradients(cached), gradients(full)
    assert g1.keys() == g2.keys() and len(g1) > 10
    scale = max(g.abs().max() for g in g2.values())
    for name in g1:
        assert (g1[name] - g2[name]).abs().max() <= tolerance * scale, name
    # The update of plain gradient descent. (Adam's first step is lr * sign(gradient) wherever the gradient is not
    # tiny next to eps, so float noise in a gradient of ~1e-9, which a different summation order gives, flips it.)
    for model in (cached, full):
        torch.optim.SGD(model.parameters(), lr=1.0 / scale).step()
    for (name, p1), p2 in zip(cached.named_parameters(), full.parameters()):
        assert torch.allclose(p1, p2, atol=tolerance), name


def triplet_batch(size: int = 12, seq_len: int = 10) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    input_ids = torch.randint(5, 100, (size, 3, seq_len), generator=generator)  # (batch, num_sent, seq_len)
    lengths = torch.randint(3, seq_len + 1, (size, 3, 1), generator=generator)  # every sentence its own length
    attention_mask = (torch.arange(seq_len) < lengths).long()  # (batch, num_sent, seq_len), right padding
    return {"input_ids": input_ids, "attention_mask": attention_mask}


def full_batch_backward(model: torch.nn.Module, batch: dict, chunk: int, config: TrainConfig,
                        fast_dropout: bool = False) -> torch.Tensor:
    """The reference: one loss over the full batch, one backward through its whole graph. Its forward runs in the
    same pieces as the cached run, of the same width, so that dropout draws the same masks (drawn per forward call);
    with ``fast_dropout``, with the masks of ``simcse_hub.speed``."""
    if fast_dropout:
        use_fast_dropout(model.encoder)

    def embed(part: dict) -> torch.Tensor:  # (part, 3, seq_len) -> (part, 3, hidden), one plain forward
        size, num_sent, seq_len = part["input_ids"].shape
        width = int(part["attention_mask"].sum(-1).max())  # cut to the longest sentence, as the training step does
        flat = {key: value.reshape(size * num_sent, seq_len)[:, :width] for key, value in part.items()}
        with attention_with_fast_dropout(model.encoder) if fast_dropout else contextlib.nullcontext():
            return model(**flat).pooler_output.view(size, num_sent, -1)

    pieces = [embed({k: v[i : i + chunk] for k, v in batch.items()}) for i in range(0, 12, chunk)]
    embeddings = torch.cat(pieces).float()  # (batch, 3, hidden)
    loss = contrastive_loss(embeddings[:, 0], embeddings[:, 1], embeddings[:, 2], temperature=config.temperature,
                            hard_negative_weight=config.hard_negative_weight)
    loss.backward()
    return loss.detach()


@pytest.mark.parametrize("fast_dropout", [False, True], ids=["torch-dropout", "fast-dropout"])
def test_gradient_cache_gives_the_full_batch_update_with_dropout(fast_dropout):
    from accelerate import Accelerator

    accelerator = Accelerator()
    config = TrainConfig(train_file="unused", mini_batch_size=5, hard_negative_weight=0.3)
    cached = make_model("bert", pooler_type="cls", hard_negative_weight=0.3).train()  # dropout: 0.1 in every layer
    full = copy.deepcopy(cached)
    batch = triplet_batch()
    settings = {"length_buckets": 1, "fast_dropout": fast_dropout}

    torch.manual_seed(123)
    loss_cached = training_step(accelerator, TrainingForward(cached, **settings), batch, config)
    torch.manual_seed(123)
    loss_full = full_batch_backward(full, batch, chunk=5, config=config, fast_dropout=fast_dropout)
    assert torch.allclose(loss_cached, loss_full, atol=1e-6)
    assert_same_update(cached, full)

    # The test can fail: without replaying each chunk's RNG state, dropout masks differ and so do the gradients.
    broken = make_model("bert", pooler_type="cls", hard_negative_weight=0.3).train()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(RandState, "replay", lambda self: contextlib.nullcontext())
        torch.manual_seed(123)
        training_step(accelerator, TrainingForward(broken, **settings), batch, config)
    difference = max((a - b).abs().max() for a, b in zip(gradients(broken).values(), gradients(full).values()))
    assert difference > 1e-3


@pytest.mark.parametrize("do_mlm", [False, True])
def test_gradient_cache_and_length_buckets_equal_one_padded_pass(do_mlm, tokenizer):
    """Without dropout (eval mode) the cached step in length buckets equals the plain step, which forwards the whole
    batch at once as one padded tensor; with the MLM loss too, whose chunks are weighted by their share of the masked
    tokens."""
    from accelerate import Accelerator

    accelerator = Accelerator()
    base = {"train_file": "unused", "do_mlm": do_mlm, "mlm_weight": 0.5, "mlm_probability": 0.3}
    cached = make_model("bert", pooler_type="avg", do_mlm=do_mlm).eval()
    plain = copy.deepcopy(cached)
    batch = triplet_batch()
    masker = DataCollatorForLanguageModeling(tokenizer, mlm_probability=0.3) if do_mlm else None
    torch.manual_seed(7)
    loss_cached = training_step(accelerator, TrainingForward(cached, length_buckets=3), batch,
                                TrainConfig(mini_batch_size=4, **base), masker)
    torch.manual_seed(7)
    loss_plain = training_step(accelerator, TrainingForward(plain, length_buckets=1), batch, TrainConfig(**base),
                               masker)
    assert torch.allclose(loss_cached, loss_plain, atol=1e-5)
    assert_same_update(cached, plain)
    if do_mlm:
        assert cached.lm_head.predictions.decoder.weight.grad.abs().sum() > 0  # the MLM loss reached its head


def test_symmetric_loss_averages_both_directions_over_the_same_embeddings():
    """``symmetric_loss``: the step's loss is the mean of anchor -> positive (with hard negatives) and positive ->
    anchor, on the embeddings of one forward (eval mode: no dropout), and differs from the one-way loss."""
    from accelerate import Accelerator

    model = make_model("bert", pooler_type="avg", hard_negative_weight=0.3).eval()
    batch = triplet_batch()
    size, num_sent, seq_len = batch["input_ids"].shape
    with torch.no_grad():
        flat = {key: value.reshape(size * num_sent, seq_len) for key, value in batch.items()}
        groups = model(**flat).pooler_output.view(size, num_sent, -1).float()  # (batch, 3, hidden)
    settings = {"temperature": model.config.temperature, "hard_negative_weight": 0.3}
    one_way = contrastive_loss(groups[:, 0], groups[:, 1], groups[:, 2], **settings)
    both = contrastive_loss(groups[:, 0], groups[:, 1], groups[:, 2], symmetric=True, **settings)
    config = TrainConfig(train_file="unused", symmetric_loss=True)
    loss = training_step(Accelerator(), TrainingForward(model, length_buckets=1), batch, config)
    assert torch.allclose(loss, both, atol=1e-5)
    assert abs(both.item() - one_way.item()) > 1e-3


# ---------------------------------------------------------------------------------------------------- resume


def test_resume_after_sigkill_ends_like_an_uninterrupted_run(tmp_path, encoder_dir, unsup_file):
    """Dropout, MLM masking and gradient caching draw random numbers; gradient accumulation spans batches; the kill
    comes mid-epoch, three updates after the last checkpoint."""
    settings = {"pooler_type": "cls", "mlp_only_train": True, "do_mlm": True, "mini_batch_size": 6,
                "gradient_accumulation_steps": 2, "save_steps": 3, "learning_rate": 3e-4}
    uninterrupted = train(make_config(tmp_path / "a", encoder_dir, unsup_file, **settings))

    config = make_config(tmp_path / "b", encoder_dir, unsup_file, **settings)
    config_file = tmp_path / "b.yaml"
    config.save_yaml(config_file)
    script = str(REPO_ROOT / "tests" / "train_subprocess.py")
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "OMP_NUM_THREADS": "1"}
    killed = subprocess.run([sys.executable, script, str(config_file), "--kill-at-call", "19"], check=False, env=env,
                            capture_output=True, text=True, timeout=600)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    out = Path(config.output_dir)
    assert [p.name for p in (out / "checkpoints").glob("step-*")] == ["step-0000009"]  # the newest, complete checkpoint
    assert not (out / "model.safetensors").exists()
    assert max(record["step"] for record in read_log(out)) == 9
    with (out / "checkpoints" / "training_log.jsonl").open("a") as log:  # as if the kill had torn a line in half
        log.write('{"step": 10, "epoch": 1.07, "lo')

    train(config, resume="latest")
    assert losses(out) == pytest.approx(losses(uninterrupted), abs=1e-6)
    expected = weights(uninterrupted)
    resumed = weights(out)
    assert expected.keys() == resumed.keys()
    for name in expected:
        assert torch.allclose(resumed[name], expected[name], atol=1e-6), name


def interrupt_at_update(monkeypatch, update: int) -> None:
    """Make the next run stop with an exception at its ``update``-th training step, as a crash or Ctrl-C would."""
    calls = iter(range(1, 10**6))
    real_step = train_module.training_step

    def step(*args, **kwargs):
        if next(calls) == update:
            raise KeyboardInterrupt(f"interrupted at update {update}")
        return real_step(*args, **kwargs)

    monkeypatch.setattr(train_module, "training_step", step)

def test_two_sources_draw_each_batch_from_one_source_in_proportion_and_resume_exactly(
        tmp_path, encoder_dir, unsup_file, sup_file, monkeypatch):
    """200 sentences and 96 triplets with weight 2: 13 batches of sentences (the sentence twice: num_sent 2) and 12
    of triplets (num_sent 3, two passes), never mixed in one batch; interrupted mid-epoch, the run resumes to the
    same weights; the card lists both sources."""
    both = f"{unsup_file},{sup_file}"
    settings = {"source_weights": [1.0, 2.0], "num_train_epochs": 1, "save_steps": 4}
    shapes, real_step = [], train_module.training_step

    def recording(accelerator, model, batch, config, tokenizer=None):
        shapes.append(tuple(batch["input_ids"].shape[:2]))
        return real_step(accelerator, model, batch, config, tokenizer)

    monkeypatch.setattr(train_module, "training_step", recording)
    uninterrupted = train(make_config(tmp_path / "a", encoder_dir, both, **settings))
    monkeypatch.undo()
    assert sorted(shapes) == sorted([(16, 2)] * 12 + [(8, 2)] + [(16, 3)] * 12)
    assert len({num_sent for _, num_sent in shapes[:8]}) == 2  # proportional: the sources interleave
    card = card_data(uninterrupted)
    assert card["objective"] == "mixed"
    assert [(d["name"], d["examples"]) for d in card["datasets"]] == [("sentences", 200), ("triplets", 96)]
    assert card["hyperparameters"]["train_file"] == "sentences.txt,triplets.tsv.gz"

    config = make_config(tmp_path / "b", encoder_dir, both, **settings)
    interrupt_at_update(monkeypatch, 11)
    with pytest.raises(KeyboardInterrupt):
        train(config)
    monkeypatch.undo()
    train(config, resume="latest")
    assert losses(config.output_dir) == pytest.approx(losses(uninterrupted), abs=1e-6)
    expected, resumed = weights(uninterrupted), weights(config.output_dir)
    for name in expected:
        assert torch.allclose(resumed[name], expected[name], atol=1e-6), name


def test_round_robin_alternates_the_sources(tmp_path, encoder_dir, unsup_file, sup_file, monkeypatch):
    shapes, real_step = [], train_module.training_step

    def recording(accelerator, model, batch, config, tokenizer=None):
        shapes.append(batch["input_ids"].shape[1])
        return real_step(accelerator, model, batch, config, tokenizer)

    monkeypatch.setattr(train_module, "training_step", recording)
    train(make_config(tmp_path, encoder_dir, f"{sup_file},{unsup_file}", sampling="round_robin", num_train_epochs=1))
    assert shapes == [3, 2] * 6  # 6 batches of triplets, the fewest: then the epoch ends


@pytest.mark.parametrize(("settings", "message"), [
    ({"source_weights": [1.0]}, r"source_weights=\[1\.0\]: 1 weights for 2 source\(s\)"),
    ({"source_weights": [1.0, -1.0]}, r"every weight must be a number > 0"),
    ({"sampling": "shuffled"}, r"sampling='shuffled': expected one of \['proportional', 'round_robin'\]"),
    ({"source_weights": [1.0, 0.005]}, r"source 2 gives no batch of 16 examples"),
])
def test_bad_source_settings_fail_before_anything_is_written(tmp_path, encoder_dir, unsup_file, sup_file, settings,
                                                             message):
    with pytest.raises(ConfigError, match=message):  # refused when the settings are built
        train(make_config(tmp_path, encoder_dir, f"{unsup_file},{sup_file}", **({"num_train_epochs": 1} | settings)))
    assert not (tmp_path / "out").exists()


def test_resume_refuses_changed_settings_and_missing_checkpoints(tmp_path, encoder_dir, unsup_file, monkeypatch):
    config = make_config(tmp_path, encoder_dir, unsup_file, max_steps=4, save_steps=2)
    with pytest.raises(ConfigError, match=r"--resume: no whole checkpoint in .*checkpoints.*--overwrite-output-dir"):
        train(config, resume="latest")
    interrupt_at_update(monkeypatch, 4)
    with pytest.raises(KeyboardInterrupt):
        train(config)
    monkeypatch.undo()
    with pytest.raises(ConfigError, match=r"holds an interrupted run \(checkpoint step-0000002\); continue it with "
                                          r"--resume, or start afresh with --overwrite-output-dir"):
        train(config)
    changed = make_config(tmp_path, encoder_dir, unsup_file, max_steps=4, save_steps=2, learning_rate=5e-4)
    with pytest.raises(ConfigError, match=r"changed: learning_rate: 0\.001 -> 0\.0005"):
        train(changed, resume="latest")
    train(config, resume="latest")
    with pytest.raises(ConfigError, match=r"holds a finished model; to train again, replace it with "
                                          r"--overwrite-output-dir"):
        train(config)
    with pytest.raises(ConfigError, match=r"--resume: the run in .* finished, so there is nothing to continue"):
        train(config, resume="latest")
    out = train(make_config(tmp_path, encoder_dir, unsup_file, max_steps=3, overwrite_output_dir=True))
    assert [record["step"] for record in read_log(out)] == [1, 2, 3]


def test_resume_skips_a_checkpoint_that_is_not_whole(tmp_path, encoder_dir, unsup_file, monkeypatch, caplog):
    """A checkpoint folder appears by one rename once whole; a step folder that is not one (left by a crash of an
    older version, or by hand) is skipped with a warning; the run resumes from the newest whole one and ends exactly
    like an uninterrupted run."""
    settings = {"max_steps": 6, "save_steps": 1, "save_total_limit": 2, "learning_rate": 3e-4}
    uninterrupted = train(make_config(tmp_path / "a", encoder_dir, unsup_file, **settings))
    config = make_config(tmp_path / "b", encoder_dir, unsup_file, **settings)
    interrupt_at_update(monkeypatch, 5)
    with pytest.raises(KeyboardInterrupt):
        train(config)
    monkeypatch.undo()
    out = Path(config.output_dir)
    assert sorted(p.name for p in (out / "checkpoints").glob("step-*")) == ["step-0000003", "step-0000004"]
    (out / "checkpoints" / "step-0000009").mkdir()  # not a whole checkpoint: no train_config.yaml
    with caplog.at_level(logging.WARNING):
        train(config, resume="latest")
    assert "Skipping checkpoint" in caplog.text and "step-0000009: it has no train_config.yaml" in caplog.text
    assert losses(out) == pytest.approx(losses(uninterrupted), abs=1e-6)
    for name, tensor in weights(uninterrupted).items():
        assert torch.allclose(weights(out)[name], tensor, atol=1e-6), name


def test_a_kill_during_the_final_clean_up_leaves_a_finished_run(tmp_path, encoder_dir, unsup_file, monkeypatch):
    """The checkpoints are deleted by renaming them away first: a kill during the deletion leaves no folder that
    looks like a checkpoint, and the run reads as finished (the old code left a step folder without weights, which
    --resume chose and crashed on)."""
    from simcse_hub import train as checkpointing

    config = make_config(tmp_path, encoder_dir, unsup_file, max_steps=3, save_steps=1)

    real_rmtree = shutil.rmtree

    def killed_rmtree(path, *args, **kwargs):  # the kill comes after the rename, before the files are gone
        if Path(path).name.startswith(".deleting-checkpoints"):
            raise KeyboardInterrupt("killed during the clean-up")
        return real_rmtree(path, *args, **kwargs)

    monkeypatch.setattr(checkpointing.shutil, "rmtree", killed_rmtree)
    with pytest.raises(KeyboardInterrupt):
        train(config)
    monkeypatch.undo()
    out = Path(config.output_dir)
    assert not (out / "checkpoints").exists() and list(out.glob(".deleting-checkpoints-*"))
    with pytest.raises(ConfigError, match=r"finished, so there is nothing to continue"):
        train(config, resume="latest")
    # A fresh run into the folder (--overwrite-output-dir) clears the leftovers too.
    train(make_config(tmp_path, encoder_dir, unsup_file, max_steps=2, overwrite_output_dir=True))
    assert not list(out.glob(".deleting-*")) and [r["step"] for r in read_log(out)] == [1, 2]


def test_a_non_finite_loss_stops_the_run_keeps_the_last_checkpoint_and_exports_nothing(
    tmp_path, encoder_dir, unsup_file, monkeypatch, capsys
):
    calls = iter(range(1, 10**6))
    real_step = train_module.training_step

    def diverging(*args, **kwargs):
        loss = real_step(*args, **kwargs)
        return loss * float("nan") if next(calls) >= 5 else loss

    monkeypatch.setattr(train_module, "training_step", diverging)
    out = tmp_path / "out"
    argv = ["train", "--model-name-or-path", str(encoder_dir), "--train-file", str(unsup_file), "--output-dir",
            str(out), "--batch-size", "16", "--max-steps", "8", "--save-steps", "2", "--eval-steps", "0",
            "--learning-rate", "1e-3", "--max-seq-length", "16", "--report-to", "none", "--mixed-precision", "no",
            "--logging-steps", "1"]
    assert cli_main(argv) == 2
    err = capsys.readouterr().err
    (line,) = [line for line in err.splitlines() if line.startswith("simcse-hub")]
    assert "update 5: the loss is nan, so the run stopped and exported nothing" in line
    assert "step-0000004" in line and "learning_rate=0.001" in line and "Traceback" not in err
    assert [p.name for p in (out / "checkpoints").glob("step-*")] == ["step-0000004"]
    assert not (out / "config.json").exists() and not (out / "model.safetensors").exists()
    assert [record["step"] for record in read_log(out)] == [1, 2, 3, 4]  # valid JSON, up to the last good update


def test_non_finite_weights_are_never_checkpointed(tmp_path, encoder_dir, unsup_file, monkeypatch):
    calls = iter(range(1, 10**6))
    real_step = train_module.training_step

    def poisoning(accelerator, model, *args, **kwargs):
        loss = real_step(accelerator, model, *args, **kwargs)
        if next(calls) == 4:  # the loss of this update is finite; the weights after it are not
            with torch.no_grad():
                next(accelerator.unwrap_model(model).parameters()).view(-1)[0] = float("inf")
        return loss

    monkeypatch.setattr(train_module, "training_step", poisoning)
    config = make_config(tmp_path, encoder_dir, unsup_file, max_steps=8, save_steps=2, learning_rate=1e-3)
    with pytest.raises(train_module.TrainingDiverged, match=r"update 4: the weights became non-finite"):
        train(config)
    out = Path(config.output_dir)
    assert [p.name for p in (out / "checkpoints").glob("step-*")] == ["step-0000002"]
    assert not (out / "config.json").exists()


def test_overwrite_replaces_the_old_run_only_after_the_first_update(tmp_path, encoder_dir, unsup_file,
                                                                   monkeypatch):
    config = make_config(tmp_path, encoder_dir, unsup_file, max_steps=2)
    out = train(config)
    (out / "my-notes.txt").write_text("the user's own file\n")
    (out / "whitening.safetensors").write_bytes(b"an old post-processing")  # of the old model: must not survive
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    interrupt_at_update(monkeypatch, 1)  # the first step of the new run fails: nothing changes
    with pytest.raises(KeyboardInterrupt):
        train(make_config(tmp_path, encoder_dir, unsup_file, max_steps=2, overwrite_output_dir=True))
    monkeypatch.undo()
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == before
    train(make_config(tmp_path, encoder_dir, unsup_file, max_steps=3, overwrite_output_dir=True))
    assert not (out / "whitening.safetensors").exists() and (out / "my-notes.txt").read_text() == "the user's own file\n"
    assert [r["step"] for r in read_log(out)] == [1, 2, 3]


def snapshot(folder: Path, leave_out: str = "checkpoints") -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and not p.relative_to(folder).as_posix().startswith(leave_out)}


def test_a_diverging_overwrite_keeps_the_old_model_byte_identical(tmp_path, encoder_dir, unsup_file, monkeypatch,
                                                                   capsys):
    out = train(make_config(tmp_path, encoder_dir, unsup_file, max_steps=2))
    before = snapshot(out)
    calls = iter(range(1, 10**6))
    real_step = train_module.training_step
    monkeypatch.setattr(train_module, "training_step", lambda *a, **k: real_step(*a, **k) * (
        float("nan") if next(calls) >= 3 else 1.0))
    argv = ["train", "--model-name-or-path", str(encoder_dir), "--train-file", str(unsup_file), "--output-dir",
            str(out), "--overwrite-output-dir", "--batch-size", "8", "--max-steps", "4", "--save-steps", "1",
            "--eval-steps", "0", "--max-seq-length", "16", "--report-to", "none", "--mixed-precision", "no"]
    assert cli_main(argv) == 2
    (line,) = [line for line in capsys.readouterr().err.splitlines() if line.startswith("simcse-hub")]
    assert "update 3: the loss is nan" in line and "the earlier model in output_dir is untouched" in line
    assert snapshot(out) == before  # the finished model, byte for byte; the failed run lives in checkpoints/ only
    with pytest.raises(ConfigError, match=r"holds an interrupted run \(checkpoint step-0000002\)"):
        train(make_config(tmp_path, encoder_dir, unsup_file, max_steps=2))


def test_an_export_killed_at_any_file_resumes_to_the_same_weights(tmp_path, encoder_dir, unsup_file, monkeypatch):
    """The export is written aside and renamed once whole; the earlier run's files are moved aside and the new ones
    in, each step repeatable. A kill (here an exception raised by os.replace or by the save itself) at any of those
    steps leaves a folder that --resume finishes with the weights of an uninterrupted run, and the earlier model
    untouched until the new one is whole."""
    settings = {"max_steps": 4, "save_steps": 2, "learning_rate": 3e-4}
    expected = weights(train(make_config(tmp_path / "a", encoder_dir, unsup_file, **settings)))
    real_replace, calls = os.replace, []

    def recording(src, dst):
        calls.append((Path(src).name, Path(dst).parent.name))
        return real_replace(src, dst)

    old = make_config(tmp_path / "rec", encoder_dir, unsup_file, max_steps=2)
    train(old)
    monkeypatch.setattr(train_module.os, "replace", recording)
    train(make_config(tmp_path / "rec", encoder_dir, unsup_file, overwrite_output_dir=True, **settings))
    monkeypatch.undo()
    first = [name for name, _ in calls].index(".export-tmp")  # the export is renamed once whole; then the moves
    kills = sorted({first, *range(first + 1, len(calls), 4), len(calls) - 1})  # files moved aside and in, clean-up
    kills = [("save", None)] + [("replace", k) for k in kills]
    for number, (kind, at) in enumerate(kills):
        folder = tmp_path / f"b{number}"
        out = train(make_config(folder, encoder_dir, unsup_file, max_steps=2))
        earlier = snapshot(out)
        counter = iter(range(10**6))

        def killing_replace(src, dst, at=at):
            if next(counter) == at:
                raise KeyboardInterrupt(f"killed at os.replace {at}: {src}")
            return real_replace(src, dst)

        def killing_save(model, target, *args, **kwargs):
            if Path(target).name == ".export-tmp":
                (Path(target) / "config.json").parent.mkdir(parents=True, exist_ok=True)
                (Path(target) / "config.json").write_text("")  # half written
                raise KeyboardInterrupt("killed while the export is written")
            return real_save(model, target, *args, **kwargs)

        real_save = train_module.save_model
        with monkeypatch.context() as patch:
            if kind == "save":
                patch.setattr(train_module, "save_model", killing_save)
            else:
                patch.setattr(train_module.os, "replace", killing_replace)
            with pytest.raises(KeyboardInterrupt):
                train(make_config(folder, encoder_dir, unsup_file, overwrite_output_dir=True, **settings))
        if kind == "save" or at == first:
            assert snapshot(out) == earlier, (kind, at)  # the earlier model is untouched until the export is whole
        train(make_config(folder, encoder_dir, unsup_file, **settings), resume="latest")
        resumed = weights(out)
        assert all(torch.equal(resumed[name], tensor) for name, tensor in expected.items()), (kind, at, calls[at or 0])
        assert sorted(p.name for p in out.iterdir() if p.name.startswith(".") or p.name == "checkpoints") == []


def test_a_run_that_cannot_learn_exits_with_status_2(tmp_path, encoder_dir, unsup_file, monkeypatch, capsys):
    real_step = train_module.training_step
    argv = ["train", "--model-name-or-path", str(encoder_dir), "--train-file", str(unsup_file), "--batch-size", "8",
            "--max-steps", "3", "--eval-steps", "0", "--max-seq-length", "16", "--report-to", "none",
            "--mixed-precision", "no"]

    def no_backward(accelerator, model, batch, config, masker=None):  # the loss, but no gradient reaches a weight
        with torch.no_grad():
            embeddings, _ = model(**batch)
            return contrastive_loss(embeddings[:, 0].float(), embeddings[:, 1].float())

    monkeypatch.setattr(train_module, "training_step", no_backward)
    assert cli_main([*argv, "--output-dir", str(tmp_path / "frozen")]) == 2
    assert "the weights did not move, so the run learned nothing" in capsys.readouterr().err
    monkeypatch.setattr(train_module, "training_step", lambda *a, **k: real_step(*a, **k) * 0 + 2.5)
    assert cli_main([*argv, "--output-dir", str(tmp_path / "flat")]) == 2
    assert "the loss stayed at 2.5 for all 3 updates" in capsys.readouterr().err
    assert not (tmp_path / "frozen" / "config.json").exists() and not (tmp_path / "flat" / "config.json").exists()


# ---------------------------------------------------------------------------------------------------- evaluation


@pytest.fixture
def tiny_sts_dir(tmp_path) -> Path:
    """A data folder in the layout of ../shared/data with a small STS-B dev set over the tiny vocabulary."""
    rng = random.Random(3)
    rows = ["sentence1\tsentence2\tscore"]
    for _ in range(40):
        words = rng.choices(WORDS, k=8)
        score = rng.uniform(0, 5)
        second = words[: max(1, round(8 * score / 5))] + rng.choices(WORDS, k=8 - round(8 * score / 5))
        rows.append(f"{' '.join(words)} .\t{' '.join(second)} .\t{score:.2f}")
    (tmp_path / "sts" / "stsb").mkdir(parents=True)
    (tmp_path / "sts" / "stsb" / "dev.tsv.gz").write_bytes(gzip.compress(("\n".join(rows) + "\n").encode()))
    return tmp_path / "sts"


def test_evaluation_during_training_keeps_and_exports_the_best_model(tmp_path, encoder_dir, unsup_file,
                                                                     tiny_sts_dir, monkeypatch):
    real_evaluate = train_module.evaluate
    scores = iter([40.0, 50.0, 70.0, 60.0])  # before the first update, then at updates 2, 4 and 6
    seen = []

    def scripted(*args, **kwargs):  # the real evaluation, with the Spearman replaced by a known sequence
        metrics = real_evaluate(*args, **kwargs)
        seen.append(metrics)
        return {**metrics, "stsb_dev_spearman": next(scores)}

    monkeypatch.setattr(train_module, "evaluate", scripted)
    settings = {"data_dir": str(tiny_sts_dir), "eval_steps": 2, "max_steps": 6, "keep_checkpoints": True}
    out = train(make_config(tmp_path / "eval", encoder_dir, unsup_file, **settings))
    assert len(seen) == 4
    assert all(-1 <= m["stsb_dev_spearman"] / 100 <= 1 and m["alignment"] >= 0 and m["uniformity"] <= 0
               and -1 <= m["mean_cosine"] <= 1 for m in seen)
    evaluations = [record for record in read_log(out) if "stsb_dev_spearman" in record]
    assert [(r["step"], r["stsb_dev_spearman"]) for r in evaluations] == [(0, 40.0), (2, 50.0), (4, 70.0), (6, 60.0)]
    summary = card_data(out)
    assert (summary["best_step"], summary["best_stsb_dev_spearman"]) == (4, 70.0)
    # What training changed: the starting encoder (update 0) against the exported model (the best, update 4).
    before_after = summary["before_after"]
    assert before_after["pooler"] == "avg"
    assert before_after["before"] == {**seen[0], "stsb_dev_spearman": 40.0}
    assert before_after["after"] == {**seen[2], "stsb_dev_spearman": 70.0}
    readme = (out / "README.md").read_text()
    assert "## What training changed" in readme and "| Starting encoder | 40.00 |" in readme
    assert "| Trained model | 70.00 |" in readme
    best = out / "checkpoints" / "best-model"
    exported = weights(out)
    assert all(torch.equal(exported[name], tensor) for name, tensor in weights(best).items())

    # The same run without evaluation exports its last model, which differs from the best one.
    last = train(make_config(tmp_path / "last", encoder_dir, unsup_file, max_steps=6))
    assert not all(torch.equal(exported[name], tensor) for name, tensor in weights(last).items())


def test_on_evaluate_sees_every_periodic_evaluation_and_can_stop_the_run(tmp_path, encoder_dir, unsup_file,
                                                                         tiny_sts_dir):
    """What ``simcse-hub tune`` prunes with: a callback after each evaluation, whose exception stops the run."""
    seen = []

    class Pruned(Exception):
        pass

    def callback(step: int, metrics: dict) -> None:
        seen.append((step, sorted(metrics)))
        if step == 4:
            raise Pruned

    config = make_config(tmp_path, encoder_dir, unsup_file, data_dir=str(tiny_sts_dir), eval_steps=2, max_steps=8)
    with pytest.raises(Pruned):
        train(config, on_evaluate=callback)
    keys = ["alignment", "mean_cosine", "stsb_dev_spearman", "uniformity"]
    assert seen == [(2, keys), (4, keys)]  # the starting encoder's evaluation (update 0) is not a training step
    assert not (tmp_path / "out" / "model.safetensors").exists()  # stopped: nothing exported

def test_evaluation_is_skipped_with_a_message_when_there_is_no_sts_b(tmp_path, encoder_dir, unsup_file, caplog,
                                                                   monkeypatch):
    monkeypatch.delenv("SIMCSE_DATA_DIR", raising=False)
    monkeypatch.chdir(tmp_path)  # no ../shared/data from here
    empty = tmp_path / "empty"
    empty.mkdir()
    with caplog.at_level("WARNING"):
        out = train(make_config(tmp_path, encoder_dir, unsup_file, eval_steps=2, max_steps=2, data_dir=str(empty)))
    assert "Skipping evaluation: no STS-B dev set" in caplog.text
    assert card_data(out)["best_step"] is None


# ---------------------------------------------------------------------------------------------------- two processes


@pytest.mark.distributed
def test_two_processes_train_like_one_on_the_same_global_batch(tmp_path, encoder_without_dropout, sup_file):
    """torchrun --nproc_per_node 2 (gloo on CPU), each process 8 of the 16 triplets of a batch, negatives gathered
    across processes and gradient caching in chunks of 3, against one process with the whole batch. Dropout would
    draw different masks in the two layouts, so this encoder has none (supervised pairs need none). Length buckets
    are off: buckets of 8 sequences and of 16 sum in different orders, and Adam turns that float noise in near-zero
    gradients into steps of up to a learning rate (the next test runs buckets under DDP)."""
    settings = {"pooler_type": "cls", "hard_negative_weight": 0.5, "num_train_epochs": 2, "learning_rate": 5e-4,
                "length_buckets": 1}
    single = train(make_config(tmp_path / "one", encoder_without_dropout, sup_file, **settings))

    two = tmp_path / "two" / "out"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               "-m", "simcse_hub.train", "--model-name-or-path", str(encoder_without_dropout),
               "--train-file", str(sup_file), "--output-dir", str(two), "--mini-batch-size", "3"]
    for key, value in {**make_config(tmp_path, encoder_without_dropout, sup_file, **settings).to_dict()}.items():
        if key not in ("model_name_or_path", "train_file", "output_dir") and value is not None:
            command += ["--set", f"{key}={','.join(value) if isinstance(value, list) else value}"]
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, check=False, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-4000:]
    assert "Model saved to" in result.stdout

    assert card_data(two)["hardware"] == "2 x CPU (fp32)"
    assert len(losses(two)) == 12
    assert losses(two) == pytest.approx(losses(single), rel=1e-5, abs=1e-5)
    # Adam divides each update by the gradient's running RMS, so float noise in a near-zero gradient (the two layouts
    # sum in different orders, and the CPU's kernels decide that order: AVX2 and AVX-512 differ) can move a weight by
    # up to a learning rate per step. Nearly every weight agrees to 1e-4; none is more than one step (5e-4) apart.
    expected, far, total = weights(single), 0, 0
    for name, tensor in weights(two).items():
        difference = (tensor - expected[name]).abs()
        assert difference.max() <= settings["learning_rate"], name
        far, total = far + int((difference > 1e-4).sum()), total + difference.numel()
    assert far <= total / 1000, f"{far} of {total} weights differ by more than 1e-4"


@pytest.mark.distributed
def test_two_processes_train_with_the_mlm_loss_and_length_buckets(tmp_path, encoder_dir, unsup_file):
    """Under DDP a step makes several encoder calls (length buckets, the MLM loss, gradient-cache chunks with
    no_sync): two processes train through all of them together."""
    out = tmp_path / "out"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               "-m", "simcse_hub.train", "--model-name-or-path", str(encoder_dir), "--train-file", str(unsup_file),
               "--output-dir", str(out), "--do-mlm", "--set", "mlm_probability=0.3", "--set", "length_buckets=3",
               "--batch-size", "16", "--max-steps", "4", "--eval-steps", "0", "--report-to", "none",
               "--mini-batch-size", "4", "--logging-steps", "1"]
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, check=False, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-4000:]
    curve = losses(out)
    assert len(curve) == 4 and all(map(math.isfinite, curve))



@pytest.mark.distributed
def test_two_processes_draw_each_step_from_one_source(tmp_path, encoder_dir, unsup_file, sup_file):
    """Sentences (the sentence twice per example) and triplets have different shapes; negatives are gathered across
    processes, so at every step both processes must hold batches of the same source: 12 + 6 global batches of 16."""
    out = tmp_path / "out"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               "-m", "simcse_hub.train", "--model-name-or-path", str(encoder_dir),
               "--train-file", f"{unsup_file},{sup_file}", "--output-dir", str(out), "--batch-size", "16",
               "--num-train-epochs", "1", "--eval-steps", "0", "--report-to", "none", "--logging-steps", "1",
               "--max-seq-length", "16", "--mixed-precision", "no"]
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, check=False, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-4000:]
    curve = losses(out)
    assert len(curve) == 18 and all(map(math.isfinite, curve))
    assert [d["examples"] for d in card_data(out)["datasets"]] == [200, 96]

# ---------------------------------------------------------------------------------------------------- configuration


def parse(*argv: str) -> TrainConfig:
    return parse_train_args(list(argv))[0]


def test_presets_hold_the_paper_settings():
    paper = {  # SimCSE, Appendix A: batch size, learning rate; 1 epoch unsupervised, 3 supervised
        "unsup-bert-base": (64, 3e-5), "unsup-bert-large": (64, 1e-5),
        "unsup-roberta-base": (512, 1e-5), "unsup-roberta-large": (512, 3e-5),
        "sup-bert-base": (512, 5e-5), "sup-bert-large": (512, 1e-5),
        "sup-roberta-base": (512, 1e-5), "sup-roberta-large": (512, 1e-5),
    }
    assert set(list_presets()) == set(paper) | {"quickstart", "minilm-sup", "minilm-mixed"}
    for name, (batch_size, learning_rate) in paper.items():
        config = parse("--preset", name)
        supervised = name.startswith("sup")
        assert (config.batch_size, config.learning_rate) == (batch_size, learning_rate), name
        assert config.num_train_epochs == (3 if supervised else 1) and config.max_seq_length == 32
        assert config.temperature == 0.05 and config.eval_steps == 125 and config.pooler_type == "cls"
        assert config.mlp_only_train is not supervised
        assert config.dataset_data_files == ("nli_for_simcse.csv" if supervised else "wiki1m_for_simcse.txt")
    quickstart = parse("--preset", "quickstart")
    assert quickstart.model_name_or_path == "sentence-transformers/all-MiniLM-L6-v2"
    assert quickstart.train_file == "package:data/quickstart_sentences.txt" and quickstart.dataset_name is None


def test_minilm_presets_hold_the_peers_setting_and_take_local_files():
    """minilm-sup is sentence-transformers' usual setting (README: "Against sentence-transformers"); minilm-mixed adds
    a second source of sentences at weight 0.5, both capped at the size it was measured at. Local files replace both
    Hub sources, with their Hub files; one file for two weights is refused by name."""
    for name in ("minilm-sup", "minilm-mixed"):
        config = parse("--preset", name)
        assert config.model_name_or_path == "sentence-transformers/all-MiniLM-L6-v2" and config.pooler_type == "avg"
        assert (config.batch_size, config.learning_rate, config.max_seq_length, config.num_train_epochs) == \
            (64, 5e-5, 32, 1), name
        assert (config.temperature, config.warmup_ratio, config.weight_decay, config.max_grad_norm) == \
            (0.05, 0.0, 0.0, 1.0), name
        assert config.eval_steps == 1000 and config.mlp_only_train is False and config.hard_negative_weight == 0.0
    sup, mixed = parse("--preset", "minilm-sup"), parse("--preset", "minilm-mixed")
    assert sup.sources() == ["princeton-nlp/datasets-for-simcse"] and sup.max_train_samples is None
    assert mixed.hub_datasets() == [("princeton-nlp/datasets-for-simcse", "nli_for_simcse.csv"),
                                    ("princeton-nlp/datasets-for-simcse", "wiki1m_for_simcse.txt")]
    assert (mixed.source_weights, mixed.max_train_samples) == ([1.0, 0.5], 6339)
    local = parse("--preset", "minilm-mixed", "--train-file", "triplets.tsv.gz,sentences.txt.gz")
    assert local.sources() == ["triplets.tsv.gz", "sentences.txt.gz"] and local.source_weights == [1.0, 0.5]
    assert local.dataset_name is None and local.dataset_data_files is None  # nothing of the Hub data is left
    with pytest.raises(ConfigError, match=r"source_weights=\[1\.0, 0\.5\]: 2 weights for 1 source\(s\) \(t\.tsv\)"):
        parse("--preset", "minilm-mixed", "--train-file", "t.tsv")


def test_layers_override_in_order(tmp_path):
    config_file = tmp_path / "mine.yaml"
    config_file.write_text("learning_rate: 2e-5\nbatch_size: 128\nseed: 7\n")
    config = parse("--preset", "unsup-bert-base", "--config", str(config_file), "--set", "batch_size=256",
                   "seed=8", "--seed", "9", "--train-file", "wiki.txt.gz", "--columns", "text", "--do-mlm")
    assert (config.learning_rate, config.batch_size, config.seed) == (2e-5, 256, 9)
    assert config.train_file == "wiki.txt.gz" and config.dataset_name is None  # the local file replaces the preset's
    assert config.columns == ["text"] and config.do_mlm is True and config.mlp_only_train is True


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--set", "batch_size=abc"], r"--set: batch_size='abc': expected an integer"),
        (["--learning-rate", "fast"], r"--learning-rate: learning_rate='fast': expected a number"),
        (["--set", "learnin_rate=1e-5"], r"unknown setting 'learnin_rate'; did you mean 'learning_rate'\?"),
        (["--set", "oops"], r"--set 'oops': expected KEY=VALUE"),
        (["--mlp-only-train", "maybe"], r"mlp_only_train='maybe': expected true or false"),
        (["--mixed-precision", "fp8"], r"mixed_precision='fp8': expected one of \['auto', 'fp32', 'no', 'bf16', 'fp16'\]"),
        (["--pooler-type", "max"], r"pooler_type='max': expected one of"),
        (["--columns", "a,b,c,d"], r"columns=\['a', 'b', 'c', 'd'\]: expected 1 to 3 names"),
        (["--batch-size", "0"], r"batch_size=0: expected an integer >= 1"),
        (["--warmup-ratio", "1.5"], r"warmup_ratio=1\.5: expected a number in \[0, 1\)"),
        (["--set", "dataset_name=null"], r"set a data source"),
        (["--source-weights", "1,x"], r"source_weights='1,x': expected a list of numbers"),
        (["--preset", "unsup-bert-huge"], r"--preset 'unsup-bert-huge': no such preset; expected one of"),
        (["--config", "missing.yaml"], r"missing\.yaml: no such configuration file"),
    ],
)
def test_bad_settings_name_the_setting_and_the_expected_form(argv, message):
    with pytest.raises(ConfigError, match=message):
        parse("--preset", "unsup-bert-base", *argv)


def test_yaml_errors_name_the_file(tmp_path):
    both = tmp_path / "both.yaml"
    both.write_text("train_file: [a.txt, b.tsv]\ndataset_name: b/c\nsource_weights: [1, 0.5, 2]\n")
    assert TrainConfig.from_yaml(both).sources() == ["a.txt", "b.tsv", "b/c"]  # three sources, mixed
    both.write_text("train_file: [a.txt, b.tsv]\nsource_weights: [1, 0.5, 2]\n")
    with pytest.raises(ConfigError, match=r"3 weights for 2 source\(s\) \(a\.txt, b\.tsv\)"):
        TrainConfig.from_yaml(both)
    listing = tmp_path / "list.yaml"
    listing.write_text("- batch_size\n")
    with pytest.raises(ConfigError, match=r"list\.yaml: expected a mapping of settings"):
        TrainConfig.from_yaml(listing)


def test_paths_given_as_path_objects_are_saved_as_strings(tmp_path):
    config = TrainConfig(train_file=tmp_path / "sentences.txt", output_dir=tmp_path / "out").validate()
    assert config.train_file == str(tmp_path / "sentences.txt") and config.output_dir == str(tmp_path / "out")
    config.save_yaml(tmp_path / "saved.yaml")  # a Path left in the config made yaml.safe_dump fail
    assert TrainConfig.from_yaml(tmp_path / "saved.yaml") == config


def test_launch_checks(tmp_path, encoder_dir, unsup_file, monkeypatch):
    class ThreeProcesses(train_module.Accelerator):
        num_processes = 3

    with monkeypatch.context() as patch:
        patch.setattr(train_module, "Accelerator", ThreeProcesses)
        with pytest.raises(ConfigError, match=r"batch_size=16 must be a multiple of the number of processes \(3\)"):
            train_module.make_accelerator(TrainConfig(train_file="x", batch_size=16, mixed_precision="no"))
    with pytest.raises(ConfigError, match=r"mixed_precision='fp16' needs a GPU; on a CPU use 'auto' \(bf16 where"):
        train(make_config(tmp_path, encoder_dir, unsup_file, mixed_precision="fp16"))


def test_bad_training_file_fails_before_training_with_its_line(tmp_path, encoder_dir, capsys):
    bad = tmp_path / "pairs.tsv"
    bad.write_text("sent0\tsent1\na man\ta woman\nthe dog\n")
    code = cli_main(["train", "--model-name-or-path", str(encoder_dir), "--train-file", str(bad),
                     "--output-dir", str(tmp_path / "out"), "--report-to", "none"])
    assert code == 2
    assert f"simcse-hub train: error: {bad}, line 3: 1 field(s) separated by tabs" in capsys.readouterr().err
    assert not (tmp_path / "out" / "model.safetensors").exists()


def test_cli_train_prints_where_the_model_went(tmp_path, encoder_dir, unsup_file, capsys):
    out = tmp_path / "cli-out"
    code = cli_main(["train", "--model-name-or-path", str(encoder_dir), "--train-file", str(unsup_file),
                     "--output-dir", str(out), "--max-steps", "2", "--report-to", "none", "--pooler-type", "avg",
                     "--set", "batch_size=8", "eval_steps=0"])
    assert code == 0
    assert f"Model saved to {out.resolve()}" in capsys.readouterr().out
    assert yaml.safe_load((out / "train_config.yaml").read_text())["batch_size"] == 8
    assert cli_main(["train", "--list-presets"]) == 0
    assert "quickstart" in capsys.readouterr().out
