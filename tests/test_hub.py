"""Pushing through the real huggingface_hub client to a local Hub (tests/hub_server.py); no HfApi method is mocked.

The client reads HF_HUB_OFFLINE and HF_HUB_DISABLE_XET into ``huggingface_hub.constants`` at import (and conftest
imports it offline), so in-process tests set those constants for their duration; tests of the command line run it in
a subprocess with HF_ENDPOINT, HF_HUB_OFFLINE=0 and HF_HUB_DISABLE_XET=1 in its environment.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import make_model
from hub_server import FakeHub, free_port
from huggingface_hub import constants
from huggingface_hub.utils import close_session

from simcse_hub.card import render_model_card
from simcse_hub.cli import main
from simcse_hub.hub import (
    ModelFolderError,
    PushError,
    collect_files,
    default_demo_dir,
    plan_push,
    push_model,
    push_space,
    space_readme,
)
from simcse_hub.train import save_model

TOKEN = "hf_" + "TestTokenDoNotLeak" * 2
REPO_ID = "user/tiny-simcse"
JUNK = ("checkpoints/step-100/model.safetensors", "optimizer.pt", "scheduler.pt", "rng_state_0.pth",
        "__pycache__/x.cpython-311.pyc", "training_log.jsonl", "runs/events.out.tfevents.1.host")


def snapshot(folder: Path) -> dict[str, str]:
    """Every file and folder under ``folder``: sha256 of each file's bytes, "dir" for folders."""
    return {p.relative_to(folder).as_posix(): "dir" if p.is_dir() else hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*"))}


def hub_env(hub: FakeHub, home: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGING"))}
    env.update(HF_ENDPOINT=hub.url, HF_HUB_OFFLINE="0", TRANSFORMERS_OFFLINE="0", HF_HUB_DISABLE_XET="1",
               HF_HOME=str(home), HF_HUB_DISABLE_TELEMETRY="1", TOKENIZERS_PARALLELISM="false", **extra)
    return env


def run_cli(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "simcse_hub.cli", *args], capture_output=True, text=True,
                          check=False, env=env, cwd=cwd, timeout=300)


@pytest.fixture
def hub(monkeypatch, tmp_path):
    """A local Hub that wants ``TOKEN``, and this process's huggingface_hub pointed at it (online, no Xet)."""
    server = FakeHub(token=TOKEN).start()
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "HF_HUB_DISABLE_XET", True)
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(tmp_path / "no-login" / "token"))
    monkeypatch.setenv("HF_ENDPOINT", server.url)
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    yield server
    close_session()
    server.stop()


@pytest.fixture
def model_dir(tmp_path, tokenizer) -> Path:
    """A trained-like output folder: the exported model, the card inputs, a plot, and training junk."""
    folder = tmp_path / "tiny-simcse"
    save_model(make_model("bert", seed=5, pooler_type="cls", mlp_only_train=True), folder, tokenizer)
    (folder / "simcse_training.json").write_text(json.dumps({
        "base_model": "bert-base-uncased", "objective": "unsupervised",
        "datasets": [{"name": "wiki1m", "path": None, "hub_id": "princeton-nlp/datasets-for-simcse", "examples": 10}],
        "hyperparameters": {"batch_size": 8, "learning_rate": 3e-5}, "hardware": "2 CPU cores",
        "train_runtime_seconds": 12.5, "global_steps": 4, "best": None, "language": "en", "license": "apache-2.0",
    }), encoding="utf-8")
    (folder / "eval_results.json").write_text(json.dumps({
        "model": str(folder), "setting": "all", "split": "test",
        "tasks": {"STSBenchmark": {"spearman": 12.34, "n_pairs": 1379}}, "average": 12.34,
        "missing": {"SICKRelatedness": "no data"}, "alignment": 0.5, "uniformity": -1.5, "whitening": None,
    }), encoding="utf-8")
    (folder / "align_uniform.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)))
    for relative in JUNK:
        (folder / relative).parent.mkdir(parents=True, exist_ok=True)
        (folder / relative).write_bytes(b"training state " + relative.encode())
    return folder


def uploaded_files(folder: Path, include_logs: bool = False) -> set[str]:
    logs = {"training_log.jsonl", "runs/events.out.tfevents.1.host"} if include_logs else set()
    return {p for p in snapshot(folder) if (folder / p).is_file() and (p not in JUNK or p in logs)} | {"README.md"}


# ------------------------------------------------------------------------------------------- push


def test_push_uploads_the_folder_byte_for_byte(hub, model_dir, caplog):
    before = snapshot(model_dir)
    with caplog.at_level(logging.DEBUG):
        info = push_model(model_dir, REPO_ID)

    assert info.commit_url.startswith(f"{hub.url}/{REPO_ID}/commit/")
    (commit,) = hub.commits
    assert set(commit.files) == uploaded_files(model_dir)
    for path, content in commit.files.items():
        if path != "README.md":
            assert content == (model_dir / path).read_bytes(), path
    assert commit.files["README.md"].decode() == str(render_model_card(model_dir, repo_id=REPO_ID))
    assert not any(path.startswith(("checkpoints/", "runs/")) for path in commit.files)
    # The weights and the plot took the LFS path (batch, basic PUT, verify), the rest went inline.
    weights = (model_dir / "model.safetensors").read_bytes()
    assert hub.lfs_objects[hashlib.sha256(weights).hexdigest()] == weights
    assert {"create_repo", "validate_yaml", "preupload", "lfs_batch", "lfs_upload", "lfs_verify", "commit"} <= set(
        hub.routes_called())
    # The token went to the Hub in the Authorization header, and nowhere else: not to the storage URL, not to the
    # logs, not into the folder, which is exactly as it was.
    hub_calls = [r for r in hub.requests if r.route in ("create_repo", "preupload", "commit")]
    assert all(r.headers.get("authorization") == f"Bearer {TOKEN}" for r in hub_calls)
    assert "simcse_hub" in hub_calls[0].headers.get("user-agent", "")
    assert all(TOKEN not in str(r.headers) for r in hub.requests if r.route == "lfs_upload")
    assert TOKEN not in caplog.text
    assert snapshot(model_dir) == before


def test_pushed_model_loads_back_from_the_hub_three_ways(hub, model_dir, tmp_path, tokenizer):
    push_model(model_dir, REPO_ID)
    script = f"""
import torch, torch.nn.functional as F
from sentence_transformers import SentenceTransformer
from transformers import AutoModel, AutoTokenizer
sentences = ["A man is playing a guitar.", "A cat eats food."]
tokenizer = AutoTokenizer.from_pretrained("{REPO_ID}", trust_remote_code=True)
model = AutoModel.from_pretrained("{REPO_ID}", trust_remote_code=True).eval()
with torch.no_grad():
    a = model(**tokenizer(sentences, padding=True, return_tensors="pt")).pooler_output
b = SentenceTransformer("{REPO_ID}", trust_remote_code=True).encode(sentences, convert_to_tensor=True)
print(a.tolist()); print(b.tolist())
"""
    env = hub_env(hub, tmp_path / "hf_home", HF_TOKEN=TOKEN)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=False, env=env,
                            timeout=300, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    from_automodel, from_st = (json.loads(line) for line in result.stdout.strip().splitlines()[-2:])
    import torch

    local = make_model("bert", seed=5, pooler_type="cls", mlp_only_train=True).eval()
    with torch.no_grad():
        expected = local(**tokenizer(["A man is playing a guitar.", "A cat eats food."], padding=True,
                                     return_tensors="pt")).pooler_output
    assert torch.allclose(torch.tensor(from_automodel), expected, atol=1e-5)
    assert torch.allclose(torch.tensor(from_st), expected, atol=1e-5)


def test_revision_private_and_commit_message(hub, model_dir):
    push_model(model_dir, REPO_ID, private=True, revision="v1", commit_message="First SimCSE")
    repo = hub.repo(REPO_ID)
    assert repo.private is True
    assert set(hub.files(REPO_ID, revision="v1")) == uploaded_files(model_dir) | {".gitattributes"}
    assert set(hub.files(REPO_ID, revision="main")) == {".gitattributes"}
    assert hub.commits[0].summary == "First SimCSE" and hub.commits[0].revision == "v1"
    # A second push to the existing repo is a new commit, not an error.
    push_model(model_dir, REPO_ID, revision="v1")
    assert len(hub.commits) == 2


def test_include_logs_and_hand_written_card(hub, model_dir):
    (model_dir / "README.md").write_text("---\nlicense: mit\n---\n# My own words\n", encoding="utf-8")
    push_model(model_dir, REPO_ID, include_logs=True)
    files = hub.commits[-1].files
    assert set(files) == uploaded_files(model_dir, include_logs=True)
    assert files["README.md"] == (model_dir / "README.md").read_bytes()  # card="auto" keeps a hand-written card
    push_model(model_dir, REPO_ID, card="render")
    assert b"generated by simcse_hub" in hub.commits[-1].files["README.md"]
    assert (model_dir / "README.md").read_text(encoding="utf-8").endswith("# My own words\n")


@pytest.mark.parametrize(
    ("status", "route", "expected"),
    [
        (401, "create_repo", r"while creating the repo:\n  Client error '401 Unauthorized' for url"),
        (403, "create_repo", r"while creating the repo:\n  403 Forbidden: Injected failure"),
        (503, "commit", r"while uploading the files and committing:\n  Server error '503 Service Unavailable'"),
        (None, "create_repo", r"connection to http://127\.0\.0\.1:\d+ failed while creating the repo"),
        (403, "lfs_upload", r"committing:\n  Error while uploading '(model\.safetensors|align_uniform\.png)' to the "
                            r"Hub\.\n  403 Forbidden"),  # the LFS uploads run in parallel: either fails first
        (400, "validate_yaml", r"Invalid metadata in README\.md\.\n  Bad request"),
    ],
)
def test_failing_hub_gives_a_clear_error_and_leaves_the_folder_intact(hub, model_dir, status, route, expected):
    before = snapshot(model_dir)
    hub.fail(status, route=route)
    with pytest.raises(PushError, match=expected) as raised:
        push_model(model_dir, REPO_ID)
    message = str(raised.value)
    assert f"Retry with:\n  simcse-hub push {model_dir} --repo-id {REPO_ID}" in message
    assert "No commit was made" in message and TOKEN not in message
    assert hub.commits == []
    assert snapshot(model_dir) == before


def test_endpoint_down_and_wrong_token(hub, model_dir, monkeypatch):
    before = snapshot(model_dir)
    with pytest.raises(PushError, match=r"ConnectError"):
        push_model(model_dir, REPO_ID, endpoint=f"http://127.0.0.1:{free_port()}")
    wrong = "hf_" + "WrongToken" * 3
    with pytest.raises(PushError, match="Invalid credentials") as raised:
        push_model(model_dir, REPO_ID, token=wrong)
    assert wrong not in str(raised.value)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # what set it (conftest only sets it where it is unset)
    with pytest.raises(PushError, match=r"offline mode \(HF_HUB_OFFLINE is set\); unset HF_HUB_OFFLINE to push"):
        push_model(model_dir, REPO_ID)
    assert snapshot(model_dir) == before and hub.commits == []


def test_offline_through_transformers_offline_names_that_variable(hub, model_dir, tmp_path):
    """huggingface_hub goes offline on TRANSFORMERS_OFFLINE=1 alone: the error names it, not HF_HUB_OFFLINE."""
    env = hub_env(hub, tmp_path / "hf_home", HF_TOKEN=TOKEN)
    del env["HF_HUB_OFFLINE"]
    env["TRANSFORMERS_OFFLINE"] = "1"
    result = run_cli(["push", str(model_dir), "--repo-id", REPO_ID], env, tmp_path)
    assert result.returncode == 1
    assert "offline mode (TRANSFORMERS_OFFLINE is set); unset TRANSFORMERS_OFFLINE to push" in result.stderr
    assert "HF_HUB_OFFLINE" not in result.stderr and hub.requests == []


def test_missing_token_and_bad_folders_fail_before_any_request(hub, model_dir, monkeypatch):
    monkeypatch.delenv("HF_TOKEN")
    with pytest.raises(PushError, match="no Hugging Face token found.*hf auth login.*HF_TOKEN.*--token"):
        push_model(model_dir, REPO_ID)
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    for name in ("tokenizer.json", "vocab.txt", "modules.json", "modeling_simcse.py"):
        (model_dir / name).unlink(missing_ok=True)
    with pytest.raises(ModelFolderError) as raised:
        push_model(model_dir, REPO_ID)
    for missing in ("a tokenizer vocabulary", "modules.json (sentence-transformers)",
                    "modeling_simcse.py (remote code named by auto_map)"):
        assert missing in str(raised.value)
    assert hub.requests == []


def test_a_missing_sibling_of_the_remote_code_is_named_before_any_request(hub, model_dir):
    (model_dir / "heads_simcse.py").unlink()  # modeling_simcse.py imports it: AutoModel could not load the model
    with pytest.raises(ModelFolderError, match=r"heads_simcse\.py \(remote code imported by modeling_simcse\.py\)"):
        push_model(model_dir, REPO_ID)
    assert hub.requests == []


@pytest.mark.parametrize("relative", ["train_config.json", "token", ".env", ".huggingface/token", "weights.bin",
                                      "notes/.git-credentials"])
def test_a_token_in_any_file_is_refused_before_any_upload(hub, model_dir, relative):
    path = model_dir / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    # text and binary alike: the binary file holds the token between arbitrary bytes, without a line break
    path.write_bytes(bytes(range(256)) + TOKEN.encode() + bytes(range(256)) if relative.endswith(".bin")
                     else b"first line\nHF_TOKEN=" + TOKEN.encode() + b"\n")
    with pytest.raises(ModelFolderError, match=rf"{re.escape(relative)}, line \d+: the file holds your Hugging Face "
                                               r"token; nothing was uploaded") as raised:
        push_model(model_dir, REPO_ID)
    assert TOKEN not in str(raised.value) and hub.requests == []


def test_credential_files_are_never_uploaded(hub, model_dir, caplog):
    for relative in (".env", "token", ".huggingface/stored_tokens", "key.pem", ".git-credentials"):
        (model_dir / relative).parent.mkdir(parents=True, exist_ok=True)
        (model_dir / relative).write_text("not the token, but private all the same\n", encoding="utf-8")
    with caplog.at_level(logging.WARNING):
        push_model(model_dir, REPO_ID)
    assert set(hub.commits[-1].files) == uploaded_files(model_dir) - {
        ".env", "token", ".huggingface/stored_tokens", "key.pem", ".git-credentials"}
    assert "credential files never leave the machine" in caplog.text


def test_any_hugging_face_token_and_home_paths_are_refused(hub, model_dir, monkeypatch, tmp_path):
    other = "hf_" + "SomeoneElsesToken" * 2
    (model_dir / "notes.md").write_text(f"# Notes\n\nmy other token is {other}\n", encoding="utf-8")
    with pytest.raises(ModelFolderError, match=r"notes\.md, line 3: the file holds a Hugging Face access token"):
        push_model(model_dir, REPO_ID)
    home = tmp_path / "home" / "alice"
    monkeypatch.setenv("HOME", str(home))
    (model_dir / "notes.md").write_text(f"# Notes\ntrained from {home}/encoders/bert\n", encoding="utf-8")
    with pytest.raises(ModelFolderError, match=rf"notes\.md, line 2: the file holds the path {re.escape(str(home))}"):
        push_model(model_dir, REPO_ID)
    (model_dir / "notes.md").write_text(f"# Notes\n{home}x is another user's folder\n", encoding="utf-8")
    push_model(model_dir, REPO_ID)  # a longer name that only starts like the home folder is not it
    assert hub.requests and hub.commits


def test_non_finite_weights_are_refused(hub, model_dir):
    from safetensors.torch import load_file, save_file

    weights = load_file(model_dir / "model.safetensors")
    name = sorted(weights)[3]
    weights[name].view(-1)[0] = float("nan")
    save_file(weights, model_dir / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(ModelFolderError, match=rf"model\.safetensors: tensor {re.escape(name)} holds 1 NaN or "
                                               r"infinite value"):
        push_model(model_dir, REPO_ID)
    assert hub.requests == []


def test_plan_push_lists_the_upload_and_runs_every_check_without_token_or_network(hub, model_dir, monkeypatch):
    """The dry run of a push (``simcse-hub push --dry-run``): the files and sizes, the repo id and the rendered card,
    every check run, and not one request, with no token and huggingface_hub offline."""
    monkeypatch.delenv("HF_TOKEN")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    before = snapshot(model_dir)
    plan = plan_push(model_dir, REPO_ID)
    card = str(render_model_card(model_dir, repo_id=REPO_ID))
    assert plan.card == card and plan.repo_id == REPO_ID
    expected = {path: (model_dir / path).stat().st_size for path in uploaded_files(model_dir) - {"README.md"}}
    assert dict(plan.sizes) == {**expected, "README.md": len(card.encode())}
    listing = str(plan)
    assert listing.startswith(f"{REPO_ID}: {len(expected) + 1} files, ")
    assert all(path in listing for path in expected) and "README.md (rendered)" in listing
    other = "hf_" + "SomeoneElsesToken" * 2
    (model_dir / "notes.md").write_text(f"token {other}\n", encoding="utf-8")
    with pytest.raises(ModelFolderError, match=r"notes\.md, line 1: the file holds a Hugging Face access token"):
        plan_push(model_dir, REPO_ID)
    (model_dir / "notes.md").unlink()
    from safetensors.torch import load_file, save_file

    weights = load_file(model_dir / "model.safetensors")
    weights[min(weights)].view(-1)[0] = float("inf")
    save_file(weights, model_dir / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(ModelFolderError, match=r"model\.safetensors: tensor .* holds 1 NaN or infinite value"):
        plan_push(model_dir, REPO_ID)
    assert hub.requests == []
    assert {k: v for k, v in snapshot(model_dir).items() if k != "model.safetensors"} == {
        k: v for k, v in before.items() if k != "model.safetensors"}


def test_collect_files_ignores_training_state(model_dir):
    files = set(collect_files(model_dir))
    assert "model.safetensors" in files and "1_Pooling/config.json" in files
    assert not files & {"checkpoints/step-100/model.safetensors", "optimizer.pt", "rng_state_0.pth",
                        "__pycache__/x.cpython-311.pyc"}


# ------------------------------------------------------------------------------------------- command line


def test_cli_push_never_prints_the_token(hub, model_dir, tmp_path):
    before = snapshot(model_dir)
    env = hub_env(hub, tmp_path / "hf_home", HF_TOKEN=TOKEN)
    result = run_cli(["-v", "push", str(model_dir), "--repo-id", REPO_ID, "--revision", "dev"], env, tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"{hub.url}/{REPO_ID}" in result.stdout
    assert TOKEN not in result.stdout + result.stderr
    assert set(hub.files(REPO_ID, revision="dev")) == uploaded_files(model_dir) | {".gitattributes"}
    assert snapshot(model_dir) == before
    for path in [*model_dir.rglob("*"), *(tmp_path / "hf_home").rglob("*")]:
        assert not path.is_file() or TOKEN.encode() not in path.read_bytes(), path


def test_cli_push_dry_run_lists_the_files_and_makes_no_request(hub, model_dir, monkeypatch, capsys):
    monkeypatch.delenv("HF_TOKEN")
    before = snapshot(model_dir)
    assert main(["push", str(model_dir), "--repo-id", REPO_ID, "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"{REPO_ID}: ") and "model.safetensors" in out and "README.md (rendered)" in out
    assert hub.requests == [] and snapshot(model_dir) == before


def test_cli_push_reads_the_login_cache_and_the_token_flag(hub, model_dir, tmp_path, monkeypatch, capsys, caplog):
    login_cache = tmp_path / "login" / "token"
    login_cache.parent.mkdir()
    login_cache.write_text(TOKEN)  # what `hf auth login` stores
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(login_cache))
    monkeypatch.delenv("HF_TOKEN")
    assert main(["push", str(model_dir), "--repo-id", REPO_ID]) == 0
    assert hub.requests[-1].headers["authorization"] == f"Bearer {TOKEN}"

    login_cache.unlink()
    other = "hf_" + "FromTheFlag" * 3
    hub.token = other
    with caplog.at_level(logging.DEBUG):
        assert main(["-v", "push", str(model_dir), "--repo-id", "user/other", "--token", other]) == 0
    output = capsys.readouterr()
    assert f"{hub.url}/user/other" in output.out
    assert other not in output.out + output.err + caplog.text
    assert set(hub.files("user/other")) == uploaded_files(model_dir) | {".gitattributes"}


def test_cli_push_failure_exits_nonzero_with_the_reason(hub, model_dir, capsys):
    before = snapshot(model_dir)
    hub.fail(403, route="create_repo", message="You don't have the rights to create a model under this namespace")
    assert main(["push", str(model_dir), "--repo-id", REPO_ID]) == 1
    err = capsys.readouterr().err
    assert "simcse-hub push: error: push to user/tiny-simcse failed" in err
    assert "403 Forbidden" in err and "You don't have the rights" in err and "Retry with:" in err
    assert "Traceback" not in err and TOKEN not in err
    assert snapshot(model_dir) == before
    (model_dir / "config.json").unlink()
    assert main(["push", str(model_dir), "--repo-id", REPO_ID]) == 2
    assert "config.json (the model configuration)" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------- transformers


def test_transformers_push_to_hub_and_save_pretrained(hub, tmp_path, tokenizer_dir):
    """``SimCSEModel.push_to_hub`` is transformers' own: it uploads the weights, the config with auto_map and the
    remote code, and the model loads back from the Hub with ``trust_remote_code``."""
    script = f"""
import sys, torch
sys.path.insert(0, {str(Path(__file__).parent)!r})
from conftest import make_model
from transformers import AutoModel, BertTokenizer
model = make_model("roberta", seed=1, pooler_type="avg").eval()
model.push_to_hub("user/pushed-by-transformers", commit_message="transformers push")
BertTokenizer.from_pretrained({str(tokenizer_dir)!r}).push_to_hub("user/pushed-by-transformers")
model.save_pretrained({str(tmp_path / "saved")!r})
ids = torch.tensor([[2, 10, 11, 12, 3]])
again = AutoModel.from_pretrained("user/pushed-by-transformers", trust_remote_code=True).eval()
local = AutoModel.from_pretrained({str(tmp_path / "saved")!r}, trust_remote_code=True).eval()
with torch.no_grad():
    assert torch.allclose(again(input_ids=ids).pooler_output, model(input_ids=ids).pooler_output, atol=1e-6)
    assert torch.allclose(local(input_ids=ids).pooler_output, model(input_ids=ids).pooler_output, atol=1e-6)
print("ok")
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=False,
                            timeout=300, env=hub_env(hub, tmp_path / "hf_home", HF_TOKEN=TOKEN), cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    files = hub.files("user/pushed-by-transformers")
    assert {"config.json", "model.safetensors", "modeling_simcse.py", "configuration_simcse.py", "README.md",
            "tokenizer_config.json"} <= set(files)
    assert json.loads(files["config.json"])["auto_map"]["AutoModel"] == "modeling_simcse.SimCSEModel"
    assert files["modeling_simcse.py"] == (tmp_path / "saved" / "modeling_simcse.py").read_bytes()
    assert hub.commits[0].summary == "transformers push"


# ------------------------------------------------------------------------------------------- space


@pytest.fixture
def demo_dir(tmp_path) -> Path:
    folder = tmp_path / "demo"
    (folder / "__pycache__").mkdir(parents=True)
    (folder / "flagged").mkdir()
    (folder / "app.py").write_text("import os\nMODEL = os.environ.get('SIMCSE_MODEL')\n", encoding="utf-8")
    (folder / "requirements.txt").write_text("simcse-hub\ngradio\n", encoding="utf-8")
    (folder / "README.md").write_text(
        "---\ntitle: SimCSE demo\nemoji: 🔎\ncolorFrom: blue\ncolorTo: green\nsdk: gradio\nsdk_version: 5.0.0\n"
        "app_file: app.py\nmodels:\n- sentence-transformers/all-MiniLM-L6-v2\npinned: false\n---\n\n# SimCSE demo\n",
        encoding="utf-8",
    )
    (folder / "__pycache__" / "app.cpython-311.pyc").write_bytes(b"junk")
    (folder / "flagged" / "log.csv").write_text("flag\n")
    return folder


def front_matter(content: bytes) -> dict:
    return yaml.safe_load(re.match(rb"^---\n(.*?)\n---\n", content, re.DOTALL).group(1))


def test_push_space_uploads_the_demo_pointed_at_the_model(hub, demo_dir):
    before = snapshot(demo_dir)
    push_space(REPO_ID, "user/tiny-simcse-demo", demo_dir=demo_dir)
    space = hub.repo("user/tiny-simcse-demo", repo_type="space")
    assert space.sdk == "gradio"
    assert space.variables == {"SIMCSE_MODEL": REPO_ID}
    files = hub.files("user/tiny-simcse-demo", repo_type="space")
    assert set(files) == {".gitattributes", "README.md", "app.py", "requirements.txt"}
    assert files["app.py"] == (demo_dir / "app.py").read_bytes()
    metadata = front_matter(files["README.md"])
    assert metadata["models"] == [REPO_ID]
    assert metadata["sdk"] == "gradio" and metadata["sdk_version"] == "5.0.0" and metadata["app_file"] == "app.py"
    assert metadata["title"] == "SimCSE demo" and metadata["emoji"] == "🔎" and metadata["pinned"] is False
    assert files["README.md"].decode().endswith("# SimCSE demo\n")
    assert snapshot(demo_dir) == before


def test_push_space_of_the_packaged_demo(hub):
    demo = default_demo_dir()  # simcse_hub.demo: demo/ of this checkout
    assert demo.resolve() == (Path(__file__).resolve().parents[1] / "demo").resolve()
    def files_of(folder: Path) -> dict[str, str]:  # other tests may import demo.app meanwhile (__pycache__)
        return {k: v for k, v in snapshot(folder).items() if "__pycache__" not in k}

    before = files_of(demo)
    push_space(REPO_ID, "user/project-demo")
    files = hub.files("user/project-demo", repo_type="space")
    assert {"app.py", "README.md", "requirements.txt"} <= set(files)
    metadata = front_matter(files["README.md"])
    assert metadata["models"] == [REPO_ID] and metadata["sdk"] == "gradio" and metadata["sdk_version"]
    assert (demo / metadata["app_file"]).is_file()
    assert files_of(demo) == before


def test_space_readme_fills_what_is_missing_and_refuses_other_sdks():
    import gradio

    text = space_readme("---\ntitle: Demo\n---\nbody\n", "me/model")
    metadata = yaml.safe_load(text.split("---\n")[1])
    assert metadata == {"title": "Demo", "sdk": "gradio", "sdk_version": gradio.__version__, "app_file": "app.py",
                        "models": ["me/model"]}
    assert text.endswith("---\nbody\n")
    with pytest.raises(ValueError, match="sdk: docker"):
        space_readme("---\nsdk: docker\n---\n", "me/model")
    with pytest.raises(ValueError, match="must be a Hub repo id"):
        push_space("./outputs/my model", "me/space", demo_dir=".")


def test_cli_push_space(hub, demo_dir, capsys):
    assert main(["push-space", "--model", REPO_ID, "--space-id", "user/demo", "--demo-dir", str(demo_dir)]) == 0
    output = capsys.readouterr()
    assert f"{hub.url}/spaces/user/demo" in output.out and TOKEN not in output.out + output.err
    assert front_matter(hub.files("user/demo", repo_type="space")["README.md"])["models"] == [REPO_ID]
    hub.fail(401, route="space_variable")
    assert main(["push-space", "--model", REPO_ID, "--space-id", "user/demo", "--demo-dir", str(demo_dir)]) == 1
    assert "while setting the Space variable SIMCSE_MODEL" in capsys.readouterr().err
