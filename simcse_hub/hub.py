"""From the former ``public_files`` module:

What may leave this machine: the files of a model folder that a push uploads (:func:`collect_files`), the files
a pushed model needs (:func:`validate_model_folder`), and the checks that refuse, before any request, a folder whose
files hold a token, a path of this machine or non-finite weights (:func:`check_files_are_public`,
:func:`check_weights_are_finite`). Every refusal is a :class:`ModelFolderError` naming the file (and line).

From the former ``hub`` module:

Publishing: a saved model folder to a Hub model repo (:func:`push_model`), the demo to a Gradio Space
(:func:`push_space`).

Both go through ``huggingface_hub.HfApi`` (``create_repo``, ``create_branch``, ``create_commit``), so the client's
own upload protocols apply (Xet where ``hf_xet`` is installed, LFS otherwise). Both build one commit from the files
on disk plus what is rendered in memory (the model card, the Space's README front matter): **nothing is ever written
into the local folder**, whether the push succeeds or fails. The commit is atomic on the Hub: a failed push leaves
the repo as it was (at most newly created and empty).

The token comes from ``token=`` (``--token``), else ``HF_TOKEN``, else the login cache (``hf auth login``); it is
sent only in the ``Authorization`` header and never logged, printed or written to a file.
"""

from __future__ import annotations

import contextlib
import fnmatch
import logging
import mmap
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from huggingface_hub import (
    CommitInfo,
    CommitOperationAdd,
    HfApi,
    SpaceCard,
    constants,
    get_token,
)
from huggingface_hub.errors import (
    HfHubHTTPError,
    HFValidationError,
    OfflineModeIsEnabled,
)
from huggingface_hub.utils import validate_repo_id

from simcse_hub import __version__
from simcse_hub.card import CARD_FILE, CARD_MARKER, read_json, render_model_card

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
    from transformers.dynamic_module_utils import (
        get_relative_imports,  # the rule transformers downloads by
    )

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

logger = logging.getLogger(__name__)

SPACE_IGNORE_PATTERNS = IGNORE_PATTERNS + (".gradio/*", "flagged/*", "*.log")
SPACE_MODEL_VARIABLE = "SIMCSE_MODEL"


class PushError(RuntimeError):
    """The Hub could not be reached or refused the push; the message says what failed and how to retry."""


# ---------------------------------------------------------------------------------------------------- helpers


def resolve_endpoint(endpoint: str | None = None) -> str:
    """``endpoint``, else ``HF_ENDPOINT`` read now (not at import, as ``huggingface_hub.constants`` does), else the
    client's default."""
    return (endpoint or os.environ.get("HF_ENDPOINT") or constants.ENDPOINT).rstrip("/")


def _resolve_token(token: str | None) -> str:
    token = token or get_token()
    if not token:
        raise PushError(
            "no Hugging Face token found. Create a write token at https://huggingface.co/settings/tokens, then "
            "run `hf auth login`, or set HF_TOKEN, or pass --token."
        )
    return token


def _http_cause(error: BaseException) -> BaseException:
    """The innermost HTTP or network error behind ``error`` (upload helpers wrap them in ``RuntimeError``)."""
    seen = error
    while seen is not None:
        if isinstance(seen, (HfHubHTTPError, OfflineModeIsEnabled)) or _is_network_error(seen):
            return seen
        seen = seen.__cause__ or seen.__context__
    return error


def _transport_errors() -> tuple[type[BaseException], ...]:
    """The HTTP client's network errors (refused connection, dropped connection, timeout): ``TransportError`` of
    ``httpx2`` (huggingface_hub >= 1.x) and of ``httpx``, whichever is installed."""
    import importlib

    found: list[type[BaseException]] = [ConnectionError, TimeoutError]
    for name in ("httpx2", "httpx"):
        try:
            found.append(importlib.import_module(name).TransportError)
        except (ImportError, AttributeError):
            continue
    return tuple(found)


NETWORK_ERRORS = _transport_errors()


def _is_network_error(error: BaseException) -> bool:
    return isinstance(error, NETWORK_ERRORS) and not isinstance(error, (HfHubHTTPError, OfflineModeIsEnabled))


def describe_failure(error: BaseException, action: str, endpoint: str, repo_id: str) -> str:
    """One plain sentence on what went wrong while ``action`` (``"creating the repo"``, ...)."""
    if isinstance(error, ValueError) and "Invalid metadata" in str(error):  # the Hub's README check (400)
        return f"the Hub rejected the README front matter while {action}: {error}"
    cause = _http_cause(error)
    if isinstance(cause, OfflineModeIsEnabled):
        return f"huggingface_hub is in offline mode (HF_HUB_OFFLINE is set) while {action}; unset it to push."
    if isinstance(cause, HfHubHTTPError) and cause.response is not None:
        status = cause.response.status_code
        server = (cause.server_message or "").strip().splitlines()
        detail = f" (the Hub said: {server[0]})" if server else ""
        if status == 401:
            return (f"the Hub rejected the token (401 Unauthorized) while {action}{detail}. Check the token: "
                    "`hf auth login`, HF_TOKEN or --token must hold a valid token with write access.")
        if status == 403:
            return (f"the token may not write to {repo_id} (403 Forbidden) while {action}{detail}. Use a token "
                    "with write access to that namespace (a fine-grained token needs write permission on it).")
        if status == 404:
            return f"{repo_id} or the revision was not found (404) while {action}{detail}."
        if status == 429 or status >= 500:
            return (f"the Hub at {endpoint} is unavailable or overloaded ({status}) while {action}{detail}; "
                    "wait a few minutes.")
        return f"the Hub answered {status} while {action}{detail}."
    if _is_network_error(cause):
        return (f"the connection to {endpoint} failed while {action} ({type(cause).__name__}: {cause}). Check the "
                "network connection (and HF_ENDPOINT if you set it).")
    return f"{type(cause).__name__} while {action}: {cause}"


@contextmanager
def _hub_call(state: dict[str, str], endpoint: str, repo_id: str, token: str, retry: str,
              untouched: Path) -> Iterator[None]:
    """Turn a Hub or network failure inside the block into a `PushError` that says what failed while
    ``state["action"]`` and how to retry; other errors (bugs) pass through unchanged."""
    try:
        yield
    except (HfHubHTTPError, OfflineModeIsEnabled, RuntimeError, ValueError, *NETWORK_ERRORS) as error:
        cause = _http_cause(error)
        rejected_card = isinstance(error, ValueError) and "Invalid metadata" in str(error)
        if cause is error and not (isinstance(error, (HfHubHTTPError, OfflineModeIsEnabled)) or rejected_card
                                   or _is_network_error(error)):
            raise
        logger.debug("Hub call failed while %s", state["action"], exc_info=error)
        message = describe_failure(error, state["action"], endpoint, repo_id)
        message = (f"push to {repo_id} failed: {message}\nNo commit was made and nothing in {untouched} was "
                   f"changed. Retry with:\n  {retry}").replace(token, "***")
        raise PushError(message) from None


def _operations(files: dict[str, Path | bytes]) -> list[CommitOperationAdd]:
    return [CommitOperationAdd(path_in_repo=path, path_or_fileobj=src if isinstance(src, bytes) else str(src))
            for path, src in files.items()]


def _retry_command(*parts: str | None) -> str:
    return " ".join(part for part in parts if part)


# ---------------------------------------------------------------------------------------------------- model


def push_model(
    folder: str | os.PathLike,
    repo_id: str,
    *,
    private: bool | None = None,
    revision: str | None = None,
    commit_message: str | None = None,
    commit_description: str | None = None,
    create_pr: bool = False,
    token: str | None = None,
    endpoint: str | None = None,
    card: str = "auto",
    include_logs: bool = False,
) -> CommitInfo:
    """Upload a saved SimCSE model folder, with its rendered model card, to a Hub model repo in one commit.

    Args:
        folder (`str` or `os.PathLike`): a folder written by ``simcse_hub.save_model`` / ``simcse-hub train``.
        repo_id (`str`): ``user/name`` or ``org/name`` (a bare ``name`` goes to the token's account).
        private (`bool`, *optional*): visibility of a repo created now; an existing repo keeps its visibility.
        revision (`str`, *optional*): a branch to commit to, created from ``main`` when it does not exist.
        commit_message (`str`, *optional*), commit_description (`str`, *optional*): the commit's text.
        create_pr (`bool`, *optional*, defaults to `False`): open a pull request instead of committing.
        token (`str`, *optional*): defaults to ``HF_TOKEN``, then the login cache. Never logged.
        endpoint (`str`, *optional*): the Hub URL; defaults to ``HF_ENDPOINT`` (read at call time), then the Hub.
        card (`str`, *optional*, defaults to `"auto"`): ``"render"`` the card from the folder's config, training
            and evaluation files; ``"keep"`` the folder's README.md as it is; ``"auto"`` renders unless the folder
            holds a README.md that simcse_hub did not generate (a hand-written card is never replaced).
        include_logs (`bool`, *optional*, defaults to `False`): also upload training logs (``*.jsonl``, ``*.log``,
            TensorBoard ``runs/``). Checkpoints and optimizer states are never uploaded.

    Returns:
        `huggingface_hub.CommitInfo`: ``commit_url``, ``oid`` and ``repo_url`` of the commit.

    Raises:
        `ModelFolderError`: the folder lacks a file a pushed model needs (all are listed).
        `PushError`: no token, or the Hub refused or could not be reached; the folder is untouched.

    >>> push_model("outputs/my-simcse", "me/my-simcse", private=True)  # doctest: +SKIP
    CommitInfo(commit_url='https://huggingface.co/me/my-simcse/commit/...', ...)
    """
    folder = Path(folder)
    files, render = _model_files(folder, repo_id, card, include_logs)
    token = _resolve_token(token)
    check_weights_are_finite(folder)
    credentials = credential_files(folder)
    check_files_are_public(files, token, scanned_only=credentials)
    if credentials:
        logger.warning("Not uploading %s: credential files never leave the machine.", ", ".join(sorted(credentials)))
    endpoint = resolve_endpoint(endpoint)
    api = HfApi(endpoint=endpoint, token=token, library_name="simcse_hub", library_version=__version__)
    retry = _retry_command("simcse-hub push", str(folder), "--repo-id", repo_id, "--private" if private else None,
                           f"--revision {revision}" if revision else None, "--create-pr" if create_pr else None)
    state = {"action": "creating the repo"}
    with _hub_call(state, endpoint, repo_id, token, retry, folder):
        repo_url = api.create_repo(repo_id, private=private, exist_ok=True)
        if repo_url.repo_id != repo_id:  # a bare name: the card must show the full id
            repo_id = repo_url.repo_id
            if render:
                files[CARD_FILE] = str(render_model_card(folder, repo_id=repo_id)).encode("utf-8")
        if revision and not create_pr:
            state["action"] = f"creating the branch {revision}"
            api.create_branch(repo_id, branch=revision, exist_ok=True)
        state["action"] = "uploading the files and committing"
        operations = _operations(files)
        info = api.create_commit(
            repo_id,
            operations=operations,
            commit_message=commit_message or f"Upload SimCSE model with simcse_hub {__version__}",
            commit_description=commit_description,
            revision=revision,
            create_pr=create_pr,
        )
    logger.info("Pushed %d files to %s (%s)", len(files), repo_url, info.commit_url)
    return info


def _model_files(folder: Path, repo_id: str, card: str, include_logs: bool) -> tuple[dict[str, Path | bytes], bool]:
    """``({path in the repo: file or content}, whether the card is rendered)`` of a model push: the checked folder's
    files (logs only with ``include_logs``) and, unless ``card`` keeps the folder's README.md, the rendered card."""
    if card not in ("auto", "render", "keep"):
        raise ValueError(f"card={card!r}: expected 'auto', 'render' or 'keep'.")
    validate_model_folder(folder)
    ignore = IGNORE_PATTERNS + (() if include_logs else LOG_PATTERNS)
    files: dict[str, Path | bytes] = dict(collect_files(folder, ignore))
    readme = folder / CARD_FILE
    if card == "keep" and not readme.is_file():
        raise ModelFolderError(f"card='keep' but {readme} does not exist; render one with card='render'.")
    hand_written = readme.is_file() and CARD_MARKER not in readme.read_text(encoding="utf-8", errors="replace")
    render = card == "render" or (card == "auto" and not hand_written)
    if render:
        files[CARD_FILE] = str(render_model_card(folder, repo_id=repo_id)).encode("utf-8")
    elif card == "auto":
        logger.info("Keeping the hand-written %s (pass card='render' / --card render to replace it).", readme)
    return files, render


# ---------------------------------------------------------------------------------------------------- space


def default_demo_dir() -> Path:
    """The demo that ships with simcse_hub: the ``simcse_hub.demo`` package (``demo/`` of a source checkout)."""
    import importlib.util

    spec = importlib.util.find_spec("simcse_hub.demo")  # the package's folder, without importing Gradio
    for location in (spec.submodule_search_locations or []) if spec else []:
        if (Path(location) / "app.py").is_file():
            return Path(location)
    raise FileNotFoundError("simcse_hub.demo (the packaged demo/) is not installed; pass demo_dir (--demo-dir).")


def space_readme(text: str, model_id: str, sdk_version: str | None = None) -> str:
    """The Space README ``text`` with its front matter pointed at ``model_id``: ``sdk: gradio``, ``app_file``
    (``app.py`` unless set), ``sdk_version`` (kept, else the installed Gradio's), ``models: [model_id]``; every
    other key and the body are kept.

    >>> print(space_readme("---\\ntitle: SimCSE\\nsdk: gradio\\n---\\n# Demo\\n", "me/m", "5.0.0"))
    ---
    title: SimCSE
    sdk: gradio
    sdk_version: 5.0.0
    app_file: app.py
    models:
    - me/m
    ---
    # Demo
    <BLANKLINE>
    """
    space_card = SpaceCard(text)
    data = space_card.data
    if data.sdk not in (None, "gradio"):
        raise ValueError(f"the Space README says sdk: {data.sdk}; the demo is a Gradio app (sdk: gradio).")
    data.sdk = "gradio"
    if not data.sdk_version:
        if sdk_version is None:
            try:
                import gradio

                sdk_version = gradio.__version__
            except ImportError as error:
                raise ValueError("the Space README has no sdk_version and Gradio is not installed to "
                                 "supply one; add `sdk_version:` to the README front matter.") from error
        data.sdk_version = sdk_version
    data.app_file = data.app_file or "app.py"
    data.models = [model_id]
    return str(space_card)


def push_space(
    model_id: str,
    space_id: str,
    *,
    demo_dir: str | os.PathLike | None = None,
    private: bool | None = None,
    commit_message: str | None = None,
    token: str | None = None,
    endpoint: str | None = None,
) -> CommitInfo:
    """Upload the Gradio demo as a Space that serves ``model_id``.

    The Space is created with ``sdk: gradio`` if needed; its README front matter is rewritten in the upload (not on
    disk) by :func:`space_readme`, and the Space variable ``SIMCSE_MODEL`` (which ``demo/app.py`` reads) is set to
    ``model_id`` before the commit, so the first build already serves it.

    Args:
        model_id (`str`): the model's Hub id (``user/name``), as pushed by :func:`push_model`.
        space_id (`str`): the Space (``user/name``).
        demo_dir (`str` or `os.PathLike`, *optional*): the folder with ``app.py``, ``README.md`` and
            ``requirements.txt``; defaults to the packaged demo (:func:`default_demo_dir`).
        private, commit_message, token, endpoint: as in :func:`push_model`.

    >>> push_space("me/my-simcse", "me/my-simcse-demo")  # doctest: +SKIP
    """
    try:
        validate_repo_id(model_id)
    except HFValidationError as error:
        raise ValueError(f"model {model_id!r} must be a Hub repo id (user/name): push the model first.") from error
    demo_dir = Path(demo_dir) if demo_dir is not None else default_demo_dir()
    missing = [name for name in ("app.py", "README.md", "requirements.txt") if not (demo_dir / name).is_file()]
    if missing:
        raise ModelFolderError(f"{demo_dir} is not a Space folder; missing: {', '.join(missing)}.")
    files: dict[str, Path | bytes] = dict(collect_files(demo_dir, SPACE_IGNORE_PATTERNS))
    files["README.md"] = space_readme((demo_dir / "README.md").read_text(encoding="utf-8"), model_id).encode()

    token = _resolve_token(token)
    check_files_are_public(files, token, scanned_only={})
    endpoint = resolve_endpoint(endpoint)
    api = HfApi(endpoint=endpoint, token=token, library_name="simcse_hub", library_version=__version__)
    retry = _retry_command("simcse-hub push-space --model", model_id, "--space-id", space_id,
                           f"--demo-dir {demo_dir}", "--private" if private else None)
    variable = {"key": SPACE_MODEL_VARIABLE, "value": model_id, "description": "the model the demo serves"}
    state = {"action": "creating the Space"}
    with _hub_call(state, endpoint, space_id, token, retry, demo_dir):
        repo_url = api.create_repo(space_id, repo_type="space", space_sdk="gradio", private=private, exist_ok=True,
                                   space_variables=[variable])
        space_id = repo_url.repo_id
        state["action"] = f"setting the Space variable {SPACE_MODEL_VARIABLE}"
        api.add_space_variable(space_id, variable["key"], variable["value"], description=variable["description"])
        state["action"] = "uploading the demo and committing"
        operations = _operations(files)
        info = api.create_commit(space_id, operations=operations, repo_type="space",
                                 commit_message=commit_message or f"Demo of {model_id} (simcse_hub {__version__})")
    logger.info("Pushed the demo of %s to %s", model_id, repo_url)
    return info


__all__ = ['CREDENTIAL_PATTERNS', 'HF_TOKEN_PATTERN', 'IGNORE_PATTERNS', 'LOG_PATTERNS', 'ModelFolderError', 'PushError', 'check_files_are_public', 'check_weights_are_finite', 'collect_files', 'credential_files', 'describe_failure', 'push_model', 'push_space', 'resolve_endpoint', 'space_readme', 'validate_model_folder']
