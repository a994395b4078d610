"""What may leave this machine: the files of a model folder that a push uploads (:func:`collect_files`), the files
a pushed model needs (:func:`validate_model_folder`), and the checks that refuse, before any request, a folder whose
files hold a token, a path of this machine or non-finite weights (:func:`check_files_are_public`,
:func:`check_weights_are_finite`). Every refusal is a :class:`ModelFolderError` naming the file (and line).
"""

from __future__ import annotations

import contextlib
import fnmatch
import mmap
import os
import re
from pathlib import Path
from typing import Any

from simcse_hub.card_values import read_json

# Never uploaded, and searched for the token all the same: files that hold credentials.
CREDENTIAL_PATTERNS = (".env", ".env.*", "*.env", "token", ".git-credentials", ".huggingface/*", "*/.huggingface/*",
                       "*.pem", "*.key", ".netrc", "id_rsa*", "id_ed25519*")
# Never uploaded: training state (checkpoints, optimizer, scheduler, RNG), caches, editor and VCS files, credentials.
IGNORE_PATTERNS = (
    "checkpoints/*", "checkpoint-*/*", "*/checkpoint-*/*", "optimizer.*", "scheduler.*", "scaler.pt",
    "rng_state*", "random_states_*", "training_args.bin", "trainer_state.json", ".git/*", ".cache/*",
    "*/__pycache__/*", "__pycache__/*", "*.pyc", ".ipynb_checkpoints/*", ".DS_Store", "*.tmp", "*.lock", ".gitignore",
    ".deleting-*", ".tmp-*", *CREDENTIAL_PATTERNS,
)
# What a Hugging Face access token looks like (any token, not only the one pushing).
HF_TOKEN_PATTERN = re.compile(rb"hf_[A-Za-z0-9]{30,}")
# Uploaded only with include_logs=True: training logs and TensorBoard event files.
LOG_PATTERNS = ("*.log", "*.jsonl", "runs/*", "logs/*", "*events.out.tfevents*")
TOKENIZER_VOCABULARIES = ("tokenizer.json", "vocab.txt", "vocab.json", "spiece.model", "sentencepiece.bpe.model")


class ModelFolderError(ValueError):
    """The folder cannot be pushed as it is; the message lists everything missing."""


def _matches(relative: str, patterns: tuple[str, ...]) -> bool:
    return any(fnmatch.fnmatch(relative, pattern) or fnmatch.fnmatch(Path(relative).name, pattern)
               for pattern in patterns)


def collect_files(folder: str | os.PathLike, ignore: tuple[str, ...] = IGNORE_PATTERNS) -> dict[str, Path]:
    """The files under ``folder`` to upload, ``{path in repo: local path}``, sorted, ``ignore`` patterns left out.

    >>> sorted(collect_files("outputs/my-simcse"))[:2]  # doctest: +SKIP
    ['1_Pooling/config.json', 'config.json']
    """
    folder = Path(folder)
    files = {}
    for path in sorted(folder.rglob("*")):
        relative = path.relative_to(folder).as_posix()
        if path.is_file() and not _matches(relative, ignore):
            files[relative] = path
    return files


def credential_files(folder: str | os.PathLike) -> dict[str, Path]:
    """The files under ``folder`` that hold credentials (``CREDENTIAL_PATTERNS``): never uploaded, always searched
    for the token."""
    return {relative: path for relative, path in collect_files(folder, ()).items()
            if _matches(relative, CREDENTIAL_PATTERNS)}


def missing_remote_code(folder: Path, module: str, why: str) -> list[str]:
    """The remote-code files ``module`` needs that ``folder`` lacks: itself, else the siblings it imports
    relatively (``from .heads_simcse import ...``), which transformers downloads with it."""
    from transformers.dynamic_module_utils import get_relative_imports  # the rule transformers downloads by

    if not (folder / module).is_file():
        return [f"{module} ({why})"]
    return [f"{name}.py (remote code imported by {module})" for name in get_relative_imports(folder / module)
            if not (folder / f"{name}.py").is_file()]


def validate_model_folder(folder: str | os.PathLike) -> None:
    """Raise :class:`ModelFolderError` listing every file a pushed model needs that ``folder`` lacks: the SimCSE
    config (with ``auto_map``), the safetensors weights, the remote code, the tokenizer and the sentence-transformers
    files."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ModelFolderError(f"{folder} is not a folder; pass the output folder of `simcse-hub train` or save_model.")
    missing = []
    config: dict[str, Any] = {}
    if not (folder / "config.json").is_file():
        missing.append("config.json (the model configuration)")
    else:
        config = read_json(folder / "config.json")
        if config.get("model_type") != "simcse":
            raise ModelFolderError(
                f"{folder / 'config.json'}: model_type is {config.get('model_type')!r}, not 'simcse'. Wrap the "
                "encoder with SimCSEModel.from_encoder(...) and save it with simcse_hub.save_model(model, folder, "
                "tokenizer) before pushing."
            )
        auto_map = config.get("auto_map") or {}
        if "AutoModel" not in auto_map:
            missing.append("auto_map.AutoModel in config.json (AutoModel cannot load the model from the Hub)")
        for reference in sorted(set(auto_map.values())):
            module = str(reference).split("--")[-1].rsplit(".", 1)[0] + ".py"
            missing += missing_remote_code(folder, module, "remote code named by auto_map")
    weights = folder / "model.safetensors"
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        shards = sorted(set(read_json(index).get("weight_map", {}).values()))
        missing += [f"{shard} (a weight shard named by {index.name})" for shard in shards
                    if not (folder / shard).is_file()]
    elif not weights.is_file():
        missing.append("model.safetensors (the weights)")
    if not (folder / "tokenizer_config.json").is_file():
        missing.append("tokenizer_config.json (the tokenizer)")
    if not any((folder / name).is_file() for name in TOKENIZER_VOCABULARIES) and not list(folder.glob("*.model")):
        missing.append(f"a tokenizer vocabulary (one of {', '.join(TOKENIZER_VOCABULARIES)})")
    for name in ("modules.json", "sentence_bert_config.json", "config_sentence_transformers.json"):
        if not (folder / name).is_file():
            missing.append(f"{name} (sentence-transformers)")
    if (folder / "modules.json").is_file():
        for module in read_json(folder / "modules.json"):
            path = module.get("path") if isinstance(module, dict) else None
            if path and not (folder / path / "config.json").is_file():
                missing.append(f"{path}/config.json (sentence-transformers module {module.get('name')})")
    if missing:
        listing = "\n".join(f"  - {item}" for item in missing)
        raise ModelFolderError(
            f"{folder} is not ready to push; missing:\n{listing}\nWrite the folder with "
            "simcse_hub.save_model(model, folder, tokenizer) (as `simcse-hub train` does), then push again."
        )


def _line_of(content: bytes | mmap.mmap, position: int) -> int:
    return content[:position].count(b"\n") + 1


def _home_paths() -> list[bytes]:
    """This user's home folder as it may appear in a file (as set, and with symbolic links resolved)."""
    homes = {str(Path.home()), os.path.realpath(Path.home())}
    return sorted((home.encode() for home in homes if len(home.strip("/")) >= 2), key=len, reverse=True)


def check_files_are_public(files: dict[str, Path | bytes], token: str | None, scanned_only: dict[str, Path]) -> None:
    """Refuse (`ModelFolderError` naming the file and line) to upload a folder where a file holds the token (any
    file, whatever its suffix, uploaded or not), a Hugging Face token, or an absolute path under the user's home.

    Args:
        files (`dict[str, Path | bytes]`): what would be uploaded (path in repo -> local file or content).
        token (`str`, *optional*): the token of this push.
        scanned_only (`dict[str, Path]`): files that are not uploaded but are searched for the token all the same
            (credential files: a token there means the folder is not fit to share).
    """
    homes = [re.compile(re.escape(home) + rb"(?![\w.-])") for home in _home_paths()]
    for relative, source in {**scanned_only, **files}.items():
        uploaded = relative in files
        with contextlib.ExitStack() as stack:
            if isinstance(source, bytes):
                content: bytes | mmap.mmap = source
            else:
                handle = stack.enter_context(open(source, "rb"))
                if os.fstat(handle.fileno()).st_size == 0:
                    continue
                content = stack.enter_context(mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ))
            position = content.find(token.encode()) if token else -1
            if position >= 0:
                raise ModelFolderError(
                    f"{relative}, line {_line_of(content, position)}: the file holds your Hugging Face token; "
                    "nothing was uploaded. Remove the token from the folder (never keep it in a model folder) and "
                    "push again.")
            if not uploaded:
                continue
            found = HF_TOKEN_PATTERN.search(content)
            if found is not None:
                raise ModelFolderError(
                    f"{relative}, line {_line_of(content, found.start())}: the file holds a Hugging Face access token "
                    "(hf_...); nothing was uploaded. Remove it from the file and push again.")
            for home in homes:
                found = home.search(content)
                if found is not None:
                    raise ModelFolderError(
                        f"{relative}, line {_line_of(content, found.start())}: the file holds the path "
                        f"{found.group(0).decode(errors='replace')}... of this machine (under your home folder); "
                        "nothing was uploaded. Remove the path from the file (save the model again with simcse_hub, "
                        "which writes none) and push again.")


def check_weights_are_finite(folder: Path) -> None:
    """Refuse (`ModelFolderError`) weights that hold NaN or inf, naming the file and the first such tensor."""
    import torch
    from safetensors import safe_open

    for path in sorted(folder.glob("*.safetensors")):
        if path.name in ("whitening.safetensors", "flow.safetensors") or path.stat().st_size == 0:
            continue
        with safe_open(str(path), framework="pt") as handle:
            for name in handle.keys():  # noqa: SIM118 (safe_open has no __iter__)
                tensor = handle.get_tensor(name)
                if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
                    bad = int((~torch.isfinite(tensor)).sum())
                    raise ModelFolderError(f"{path.name}: tensor {name} holds {bad:,} NaN or infinite value(s); "
                                           "nothing was uploaded. Such weights give no usable embeddings: train "
                                           "again (a lower learning rate) and push the new folder.")


__all__ = [
    "CREDENTIAL_PATTERNS",
    "HF_TOKEN_PATTERN",
    "IGNORE_PATTERNS",
    "LOG_PATTERNS",
    "ModelFolderError",
    "check_files_are_public",
    "check_weights_are_finite",
    "collect_files",
    "credential_files",
    "validate_model_folder",
]
