"""BERT-flow and BERT-whitening beside SimCSE: the flow saved with a model and applied by ``SimCSE``, the comparison
table of ``simcse-hub evaluate --compare``, and the mean cosine of all pairs (the anisotropy they address)."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from conftest import WORDS, make_model

from simcse_hub import SimCSE
from simcse_hub.cli import main
from simcse_hub.evaluation import mean_cosine
from simcse_hub.postprocess import FLOW_FILE, Flow
from simcse_hub.train import save_model


@pytest.fixture(scope="module")
def world(tmp_path_factory, tokenizer) -> dict[str, Path]:
    """A SimCSE folder, a plain encoder folder, a corpus and an STS data folder over the tiny vocabulary."""
    root = tmp_path_factory.mktemp("baselines")
    rng = random.Random(0)
    sentences = [" ".join(rng.choices(WORDS, k=rng.randint(4, 10))) + " ." for _ in range(120)]
    (root / "corpus.txt").write_text("\n".join(sentences[:80]) + "\n", encoding="utf-8")
    rows = ["sentence1\tsentence2\tscore"] + [f"{a}\t{b}\t{rng.uniform(0, 5):.2f}"
                                             for a, b in zip(sentences[80:100], sentences[100:120])]
    for folder, split in (("stsb", "dev"), ("stsb", "test"), ("sickr", "test")):
        (root / "sts" / folder).mkdir(parents=True, exist_ok=True)
        (root / "sts" / folder / f"{split}.tsv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    save_model(make_model("bert", seed=2, pooler_type="avg"), root / "simcse", tokenizer)
    plain = root / "plain"
    make_model("bert", seed=2).encoder.save_pretrained(plain)
    tokenizer.save_pretrained(plain)
    return {"root": root, "simcse": root / "simcse", "plain": plain, "corpus": root / "corpus.txt",
            "sts": root / "sts", "sentences": sentences}


def test_mean_cosine_is_the_mean_over_all_pairs():
    x = np.random.default_rng(0).normal(size=(30, 8)) + 2.0  # a cone: every pair looks alike
    u = x / np.linalg.norm(x, axis=1, keepdims=True)
    pairs = [float(u[i] @ u[j]) for i in range(30) for j in range(i + 1, 30)]
    assert mean_cosine(x) == pytest.approx(np.mean(pairs), abs=1e-6) and mean_cosine(x) > 0.5
    with pytest.raises(ValueError, match="at least 2 embeddings"):
        mean_cosine(x[:1])


def test_a_saved_flow_is_applied_by_simcse(world, tmp_path, capsys):
    import shutil

    folder = tmp_path / "model"
    shutil.copytree(world["simcse"], folder)
    assert main(["evaluate", str(folder), "--flow", str(world["corpus"]), "--save-flow", "--data-dir",
                 str(world["sts"]), "--tasks", "STSBenchmark", "--device", "cpu"]) == 0
    assert (folder / FLOW_FILE).is_file() and "BERT-flow fitted on `corpus.txt`." in capsys.readouterr().out
    # saved with the model: recorded in the card, as its own kind, beside the raw model's results
    card = json.loads((folder / "simcse_card.json").read_text())
    raw_record, flow_record = card["evaluations"]
    assert raw_record["flow"] is None and flow_record["flow"] == {"corpus": "corpus.txt"} == card["flow"]
    readme = (folder / "README.md").read_text()
    (entry,) = yaml.safe_load(readme.split("---")[1])["model-index"]
    assert entry["results"][0]["metrics"][0]["value"] == raw_record["tasks"]["STSBenchmark"]["spearman"]
    headline, flowed = readme.split("### With the saved flow, through `simcse_hub.SimCSE`")
    for part, record in ((headline, raw_record), (flowed, flow_record)):
        assert f"| STS-B | {record['tasks']['STSBenchmark']['spearman']:.2f} |" in part
    assert "loads three ways with the same embeddings" not in readme
    flow = Flow.load(folder)
    raw = SimCSE(world["simcse"], device="cpu").encode(world["sentences"][:10], normalize_to_unit=False)
    flowed = SimCSE(folder, device="cpu")
    assert flowed.flow is not None and flowed.whitening is None
    expected = torch.nn.functional.normalize(torch.as_tensor(flow.transform(raw.numpy())), dim=-1)
    assert torch.allclose(flowed.encode(world["sentences"][:10]), expected, atol=1e-5)
    (folder / "whitening.safetensors").write_bytes((folder / FLOW_FILE).read_bytes())
    with pytest.raises(ValueError, match="holds both whitening.safetensors and flow.safetensors"):
        SimCSE(folder, device="cpu")


def test_the_comparison_table_has_every_row(world, tmp_path, capsys):
    """One command: the plain encoder as it is, + whitening (all dimensions, and 16 = half of 32), + BERT-flow, then
    the SimCSE model (as it is: no post-processing of a contrastively trained model) on the same pooled output."""
    out = tmp_path / "rows.json"
    assert main(["evaluate", str(world["plain"]), str(world["simcse"]), "--pooler", "avg", "--compare",
                 str(world["corpus"]), "--data-dir", str(world["sts"]), "--device", "cpu", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    rows = json.loads(out.read_text())
    assert [Path(row["model"].partition(" + ")[0]).name for row in rows] == ["plain"] * 4 + ["simcse"]
    assert [row["model"].partition(" + ")[2] for row in rows] == ["", "whitening", "whitening-16", "flow", ""]
    table = printed[printed.index("| Model |"):]
    assert "| Model | STS-B | SICK-R | Alignment | Uniformity | Mean cosine |" in table
    for name in ("| plain |", "| plain + whitening |", "| plain + whitening-16 |", "| plain + flow |", "| simcse |"):
        assert name in table
    assert rows[2]["whitening"] == {"corpus": "corpus.txt", "k": 16} and rows[3]["flow"] == {"corpus": "corpus.txt"}
    assert rows[0]["whitening"] is None and rows[4]["flow"] is None
    # Whitening makes the corpus isotropic: the mean cosine of all pairs falls, as the story says.
    assert rows[1]["mean_cosine"] < rows[0]["mean_cosine"]
    assert all(isinstance(row["tasks"]["STSBenchmark"]["spearman"], float) for row in rows)
