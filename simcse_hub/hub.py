"""Publishing: a saved model folder to a Hub model repo (:func:`push_model`), the demo to a Gradio Space
(:func:`push_space`), and the one check of what may leave this machine.

:func:`plan_push` is a push without the network: it lists the files of a model folder that a push uploads (with
the rendered model card) and runs every check, refusing (a :class:`ModelFolderError` naming the file, and line) a
folder that lacks a file a pushed model needs (:func:`validate_model_folder`), a file that holds a token or a path of
this machine (:func:`check_files_are_public`) and weights that hold NaN or inf. It needs no token and sends nothing.
With ``portable=True`` the upload is the portable variant of the folder (``simcse_hub.export``), written to a
temporary folder first and checked the same way.

Both pushes go through ``huggingface_hub.HfApi`` (``create_repo``, ``create_branch``, ``create_commit``), so the
client's own upload protocols apply (Xet where ``hf_xet`` is installed, LFS otherwise), and build one commit from the
files on disk plus what is rendered in memory (the model card, the Space's README front matter): **nothing is ever
written into the local folder**. The commit is atomic on the Hub: a failed push leaves the repo as it was (at most
newly created and empty) and raises a :class:`PushError` with the client's own account of what failed and the
command that retries.

The token comes from ``token=`` (``--token``), else ``HF_TOKEN``, else the login cache (``hf auth login``); it is
sent only in the ``Authorization`` header and never logged, printed or written to a file.
"""

from __future__ import annotations

import fnmatch
import logging
import mmap
import os
import re
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path

from huggingface_hub import CommitInfo, CommitOperationAdd, HfApi, SpaceCard, constants, get_token
from huggingface_hub.errors import HfHubHTTPError, HFValidationError
from huggingface_hub.utils import validate_repo_id

from simcse_hub import __version__
from simcse_hub.card import CARD_FILE, is_hand_written_card, portable_record, read_json, render_model_card
from simcse_hub.postprocess import FLOW_FILE, WHITENING_FILE

try:  # the client's network errors (refused, dropped, timed out): httpx2 under huggingface_hub 2.x, httpx under 1.x
    from httpx2 import TransportError
except ImportError:
    from httpx import TransportError
NETWORK_ERRORS = (TransportError, ConnectionError, TimeoutError)

logger = logging.getLogger(__name__)

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
# Uploaded only with include_logs=True: training logs and TensorBoard event files.
LOG_PATTERNS = ("*.log", "*.jsonl", "runs/*", "logs/*", "*events.out.tfevents*")
SPACE_IGNORE_PATTERNS = (*IGNORE_PATTERNS, ".gradio/*", "flagged/*", "*.log")
HF_TOKEN_PATTERN = re.compile(rb"hf_[A-Za-z0-9]{30,}")  # what a Hugging Face access token looks like (anyone's)
TOKENIZER_VOCABULARIES = ("tokenizer.json", "vocab.txt", "vocab.json", "spiece.model", "sentencepiece.bpe.model")
SENTENCE_TRANSFORMERS_FILES = ("modules.json", "sentence_bert_config.json", "config_sentence_transformers.json")
MODULES_WITH_WEIGHTS = ("Dense", "WeightedLayerPooling")  # sentence-transformers modules that save model.safetensors
SPACE_MODEL_VARIABLE = "SIMCSE_MODEL"


class ModelFolderError(ValueError):
    """The folder cannot be pushed as it is; the message names the file (and line), or lists everything missing."""


class PushError(RuntimeError):
    """The Hub could not be reached or refused the push; the message says what failed and how to retry."""


# ---------------------------------------------------------------------------------------------------- the files


def _matches(relative: str, patterns: tuple[str, ...]) -> bool:
    # ours: huggingface_hub's filter_repo_objects matches the whole path only; a `.env` in a subfolder must match too
    return any(fnmatch.fnmatch(relative, p) or fnmatch.fnmatch(Path(relative).name, p) for p in patterns)


def collect_files(folder: str | os.PathLike, ignore: tuple[str, ...] = IGNORE_PATTERNS) -> dict[str, Path]:
    """The files under ``folder`` to upload, ``{path in repo: local path}``, sorted, ``ignore`` patterns left out.

    >>> sorted(collect_files("outputs/my-simcse"))[:2]  # doctest: +SKIP
    ['1_Pooling/config.json', 'config.json']
    """
    folder = Path(folder)
    return {path.relative_to(folder).as_posix(): path for path in sorted(folder.rglob("*"))
            if path.is_file() and not _matches(path.relative_to(folder).as_posix(), ignore)}


def is_portable_folder(folder: str | os.PathLike) -> bool:
    """Whether ``folder`` is the portable variant of a SimCSE model (``simcse_hub.export``): its ``simcse_card.json``
    holds the ``portable`` record."""
    return bool(portable_record(folder)[1])


def validate_model_folder(folder: str | os.PathLike) -> None:
    """Raise :class:`ModelFolderError` listing every file a pushed model needs that ``folder`` lacks: the config, the
    safetensors weights, the tokenizer and the sentence-transformers files (each module's config, and the weights of
    those that have some); for a SimCSE folder the remote code named by ``auto_map`` too (and the siblings it imports,
    which transformers downloads with it), while a portable folder (:func:`is_portable_folder`) must name none."""
    from transformers.dynamic_module_utils import get_relative_imports  # the rule transformers downloads by

    folder = Path(folder)
    if not folder.is_dir():
        raise ModelFolderError(f"{folder} is not a folder; pass the output folder of `simcse-hub train` or save_model.")
    config = read_json(folder / "config.json") if (folder / "config.json").is_file() else {}
    portable = is_portable_folder(folder)
    if config and config.get("model_type") != "simcse" and not portable:
        raise ModelFolderError(f"{folder / 'config.json'}: model_type is {config.get('model_type')!r}, not 'simcse'. "
                               "Wrap the encoder with SimCSEModel.from_encoder(...) and save it with "
                               "simcse_hub.save_model(model, folder, tokenizer) before pushing.")
    auto_map = config.get("auto_map") or {}
    if portable and auto_map:
        raise ModelFolderError(f"{folder / 'config.json'}: auto_map names remote code, but a portable folder runs "
                               "none; write it again with `simcse-hub export MODEL --portable OUT`.")
    code = sorted({str(reference).split("--")[-1].rsplit(".", 1)[0] + ".py" for reference in auto_map.values()})
    index = folder / "model.safetensors.index.json"
    shards = sorted(set(read_json(index).get("weight_map", {}).values())) if index.is_file() else []
    modules = [m for m in (read_json(folder / "modules.json") if (folder / "modules.json").is_file() else [])
               if isinstance(m, dict) and m.get("path")]
    needed = {  # file -> what it is
        "config.json": "the model configuration",
        **{module: "remote code named by auto_map" for module in code},
        **{f"{name}.py": f"remote code imported by {module}" for module in code if (folder / module).is_file()
           for name in get_relative_imports(folder / module)},
        **({shard: f"a weight shard named by {index.name}" for shard in shards}
           or {"model.safetensors": "the weights"}),
        "tokenizer_config.json": "the tokenizer",
        **dict.fromkeys(SENTENCE_TRANSFORMERS_FILES, "sentence-transformers"),
        **{f"{m['path']}/config.json": f"sentence-transformers module {m.get('name')}" for m in modules},
        **{f"{m['path']}/model.safetensors": f"the weights of sentence-transformers module {m.get('name')}"
           for m in modules if str(m.get("type", "")).rsplit(".", 1)[-1] in MODULES_WITH_WEIGHTS},
    }
    missing = [f"{name} ({what})" for name, what in needed.items() if not (folder / name).is_file()]
    if config and not portable and "AutoModel" not in auto_map:
        missing.append("auto_map.AutoModel in config.json (AutoModel cannot load the model from the Hub)")
    if not any((folder / name).is_file() for name in TOKENIZER_VOCABULARIES) and not list(folder.glob("*.model")):
        missing.append(f"a tokenizer vocabulary (one of {', '.join(TOKENIZER_VOCABULARIES)})")
    if missing:
        listing = "\n".join(f"  - {item}" for item in missing)
        raise ModelFolderError(f"{folder} is not ready to push; missing:\n{listing}\nWrite the folder with "
                               "simcse_hub.save_model(model, folder, tokenizer) (as `simcse-hub train` does), then "
                               "push again.")


# ---------------------------------------------------------------------------------------------------- the checks


@contextmanager
def _bytes_of(source: Path | bytes) -> Iterator[bytes | mmap.mmap]:
    """The content of a file (memory-mapped: weights are never read into memory) or of rendered text."""
    if isinstance(source, bytes) or source.stat().st_size == 0:
        yield source if isinstance(source, bytes) else b""
        return
    with open(source, "rb") as handle, mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as content:
        yield content


def check_files_are_public(files: dict[str, Path | bytes], token: str | None,
                           scanned_only: dict[str, Path] | None = None) -> None:
    """Refuse (`ModelFolderError` naming the file and line) to upload a folder where a file holds the token (any
    file, whatever its suffix, uploaded or not), a Hugging Face token, or an absolute path under the user's home.

    Args:
        files (`dict[str, Path | bytes]`): what would be uploaded (path in repo -> local file or content).
        token (`str`, *optional*): the token of this push.
        scanned_only (`dict[str, Path]`, *optional*): files that are not uploaded but are searched for the token all
            the same (credential files: a token there means the folder is not fit to share).
    """
    homes = sorted((h for h in {str(Path.home()), os.path.realpath(Path.home())} if len(h.strip("/")) >= 2), key=len,
                   reverse=True)  # as set and with links resolved, longest first; never "/" alone
    home = homes and re.compile(b"|".join(re.escape(h.encode()) for h in homes) + rb"(?![\w.-])")
    rules = [  # (pattern, searched in files not uploaded too, what the file holds, what to do)
        (token and re.compile(re.escape(token.encode())), True, "your Hugging Face token",
         "Remove the token from the folder (never keep it in a model folder)"),
        (HF_TOKEN_PATTERN, False, "a Hugging Face access token (hf_...)", "Remove it from the file"),
        (home, False, "the path {}... of this machine (under your home folder)",
         "Remove the path from the file (save the model again with simcse_hub, which writes none)"),
    ]
    for relative, source in {**(scanned_only or {}), **files}.items():
        with _bytes_of(source) as content:
            for pattern, everywhere, what, fix in rules:
                found = pattern and (everywhere or relative in files) and pattern.search(content)
                if found:
                    line = content[:found.start()].count(b"\n") + 1
                    shown = what.format(found.group(0).decode(errors="replace"))
                    raise ModelFolderError(f"{relative}, line {line}: the file holds {shown}; nothing was uploaded. "
                                           f"{fix} and push again.")


def check_weights_are_finite(folder: Path) -> None:
    """Refuse (`ModelFolderError`) weights that hold NaN or inf, naming the file and the first such tensor."""
    import torch
    from safetensors import safe_open

    for path in sorted(folder.glob("*.safetensors")):
        if path.name in (WHITENING_FILE, FLOW_FILE) or path.stat().st_size == 0:
            continue
        with safe_open(str(path), framework="pt") as handle:
            for name in handle.keys():  # noqa: SIM118 (safe_open has no __iter__)
                tensor = handle.get_tensor(name)
                if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
                    bad = int((~torch.isfinite(tensor)).sum())
                    raise ModelFolderError(f"{path.name}: tensor {name} holds {bad:,} NaN or infinite value(s); "
                                           "nothing was uploaded. Such weights give no usable embeddings: train "
                                           "again (a lower learning rate) and push the new folder.")


@dataclass
class PushPlan:
    """What a push of a model folder uploads, every check passed: ``files`` maps each path in the repo to its local
    file or, for a rendered card, its content; ``card`` is the rendered README.md (``None``: the folder's own).
    ``source`` is the folder the user named; ``folder`` the one uploaded: the same, or the portable variant written
    into ``workdir`` (a temporary folder, removed when the plan is garbage-collected or ``workdir.cleanup()``)."""

    folder: Path
    repo_id: str
    files: dict[str, Path | bytes]
    card: str | None
    source: Path | None = None
    workdir: tempfile.TemporaryDirectory | None = field(default=None, repr=False)

    @property
    def sizes(self) -> list[tuple[str, int]]:
        """``(path in repo, size in bytes)`` of each file, in upload order."""
        return [(path, len(src) if isinstance(src, bytes) else src.stat().st_size) for path, src in self.files.items()]

    def __str__(self) -> str:
        total = sum(size for _, size in self.sizes)
        rows = [f"{size:>14,}  {path}{' (rendered)' if path == CARD_FILE and self.card else ''}"
                for path, size in self.sizes]
        origin = f"{self.source or self.folder}{' (its portable variant)' if self.workdir else ''}"
        return "\n".join([f"{self.repo_id}: {len(rows)} files, {total:,} bytes, from {origin}", *rows])


def plan_push(folder: str | os.PathLike, repo_id: str, *, card: str = "auto", include_logs: bool = False,
              token: str | None = None, portable: bool = False) -> PushPlan:
    """What :func:`push_model` would upload, with every check it runs, and no request: the way to see a push before
    making it (``simcse-hub push --dry-run``). Arguments as in :func:`push_model`; ``token`` (defaults to
    ``HF_TOKEN``, then the login cache, else none) is only searched for in the files. With ``portable``, the
    portable variant is written to a temporary folder (``PushPlan.workdir``) and planned from there.

    Raises:
        `ModelFolderError`: a file a pushed model needs is missing (all are listed), or a file holds a token or a path
            of this machine, or the weights hold NaN or inf.

    >>> print(plan_push("outputs/my-simcse", "me/my-simcse"))  # doctest: +SKIP
    me/my-simcse: 14 files, 91,577,163 bytes, from outputs/my-simcse
    """
    if card not in ("auto", "render", "keep"):
        raise ValueError(f"card={card!r}: expected 'auto', 'render' or 'keep'.")
    source = folder = Path(folder)
    workdir = None
    if portable:
        from simcse_hub.export import export_portable  # only this push needs sentence-transformers' modules

        workdir = tempfile.TemporaryDirectory(prefix="simcse-hub-portable-")
        folder = export_portable(source, Path(workdir.name) / source.name, repo_id=repo_id)
    validate_model_folder(folder)
    ignore = IGNORE_PATTERNS + (() if include_logs else LOG_PATTERNS)
    every = collect_files(folder, ())  # one walk of the folder: what is uploaded, and what is only scanned
    files: dict[str, Path | bytes] = {path: file for path, file in every.items() if not _matches(path, ignore)}
    readme = folder / CARD_FILE
    if card == "keep" and not readme.is_file():
        raise ModelFolderError(f"card='keep' but {readme} does not exist; render one with card='render'.")
    rendered = None
    if card == "render" or (card == "auto" and not is_hand_written_card(readme)):
        rendered = str(render_model_card(folder, repo_id=repo_id))
        files[CARD_FILE] = rendered.encode("utf-8")
    elif card == "auto":
        logger.info("Keeping the hand-written %s (pass card='render' / --card render to replace it).", readme)
    check_weights_are_finite(folder)
    credentials = {path: file for path, file in every.items() if _matches(path, CREDENTIAL_PATTERNS)}
    check_files_are_public(files, token or get_token(), scanned_only=credentials)
    if credentials:
        logger.warning("Not uploading %s: credential files never leave the machine.", ", ".join(sorted(credentials)))
    return PushPlan(folder, repo_id, files, rendered, source, workdir)


# ---------------------------------------------------------------------------------------------------- pushing


def resolve_endpoint(endpoint: str | None = None) -> str:
    """``endpoint``, else ``HF_ENDPOINT`` read now (not at import, as ``huggingface_hub.constants`` does), else the
    client's default."""
    return (endpoint or os.environ.get("HF_ENDPOINT") or constants.ENDPOINT).rstrip("/")


def _cannot_send(token: str | None) -> str | None:
    """Why a push cannot send anything (no token, or huggingface_hub offline, naming the variable that is set)."""
    if not token:
        return ("no Hugging Face token found. Create a write token at https://huggingface.co/settings/tokens, then "
                "run `hf auth login`, or set HF_TOKEN, or pass --token.")
    if constants.HF_HUB_OFFLINE:  # read at import from HF_HUB_OFFLINE, else TRANSFORMERS_OFFLINE
        name = next((name for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
                     if os.environ.get(name, "").upper() in constants.ENV_VARS_TRUE_VALUES), "HF_HUB_OFFLINE")
        return f"huggingface_hub is in offline mode ({name} is set); unset {name} to push."
    return None


@contextmanager
def _hub_call(state: dict[str, str], endpoint: str, repo_id: str, token: str | None, retry: str,
              untouched: Path) -> Iterator[None]:
    """Run the Hub calls of a push in the block, or raise one `PushError`: before any request when nothing can be
    sent (:func:`_cannot_send`), else on a Hub answer or a network failure (in the client's own words) while
    ``state["action"]``; it says that nothing was committed or changed and gives the command that retries. Other
    errors (bugs) pass through unchanged."""
    failure = _cannot_send(token)
    try:
        if failure is None:
            yield
    except Exception as error:
        cause = error  # the Hub's answer may come wrapped (an upload's RuntimeError, the README check's ValueError)
        while cause is not None and not isinstance(cause, (HfHubHTTPError, *NETWORK_ERRORS)):
            cause = cause.__cause__ or cause.__context__
        if cause is None:
            raise
        logger.debug("Hub call failed while %s", state["action"], exc_info=error)
        if isinstance(cause, HfHubHTTPError):
            said = dict.fromkeys(line.strip() for text in (str(error), str(cause)) for line in text.splitlines())
            failure = "\n  ".join([f"the Hub answered with an error while {state['action']}:", *filter(None, said)])
        else:
            failure = (f"the connection to {endpoint} failed while {state['action']} ({type(cause).__name__}: "
                       f"{cause}). Check the network connection (and HF_ENDPOINT if you set it).")
    if failure is not None:
        message = (f"push to {repo_id} failed: {failure}\nNo commit was made and nothing in {untouched} was changed. "
                   f"Retry with:\n  {retry}")
        raise PushError(message.replace(token, "***") if token else message) from None


def push_model(folder: str | os.PathLike, repo_id: str, *, private: bool | None = None, revision: str | None = None,
               commit_message: str | None = None, commit_description: str | None = None, create_pr: bool = False,
               token: str | None = None, endpoint: str | None = None, card: str = "auto",
               include_logs: bool = False, portable: bool = False) -> CommitInfo:
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
            holds a hand-written README.md (``simcse_hub.card.is_hand_written_card``).
        include_logs (`bool`, *optional*, defaults to `False`): also upload training logs (``*.jsonl``, ``*.log``,
            TensorBoard ``runs/``). Checkpoints and optimizer states are never uploaded.
        portable (`bool`, *optional*, defaults to `False`): upload the portable variant of the folder instead
            (``simcse_hub.export.export_portable``: a standard encoder checkpoint with sentence-transformers' own
            pooling modules, no remote code), written to a temporary folder that is removed afterwards.

    Returns:
        `huggingface_hub.CommitInfo`: ``commit_url``, ``oid`` and ``repo_url`` of the commit.

    Raises:
        `ModelFolderError`: a check of :func:`plan_push` failed; nothing was sent.
        `PushError`: no token, offline, or the Hub refused or could not be reached; the folder is untouched.

    >>> push_model("outputs/my-simcse", "me/my-simcse", private=True)  # doctest: +SKIP
    CommitInfo(commit_url='https://huggingface.co/me/my-simcse/commit/...', ...)
    """
    token = token or get_token()
    plan = plan_push(folder, repo_id, card=card, include_logs=include_logs, token=token, portable=portable)
    endpoint = resolve_endpoint(endpoint)
    api = HfApi(endpoint=endpoint, token=token, library_name="simcse_hub", library_version=__version__)
    retry = " ".join(part for part in ("simcse-hub push", str(plan.source), "--repo-id", repo_id,
                                       "--private" if private else None, revision and f"--revision {revision}",
                                       "--create-pr" if create_pr else None,
                                       "--portable" if plan.workdir else None) if part)
    state = {"action": "creating the repo"}
    with plan.workdir or nullcontext(), _hub_call(state, endpoint, repo_id, token, retry, plan.source):
        repo_url = api.create_repo(repo_id, private=private, exist_ok=True)
        if repo_url.repo_id != repo_id and plan.card:  # a bare name: the card must load the full id
            plan.files[CARD_FILE] = str(render_model_card(plan.folder, repo_id=repo_url.repo_id)).encode("utf-8")
        if revision and not create_pr:
            state["action"] = f"creating the branch {revision}"
            api.create_branch(repo_url.repo_id, branch=revision, exist_ok=True)
        state["action"] = "uploading the files and committing"
        info = api.create_commit(
            repo_url.repo_id, operations=_operations(plan.files), revision=revision, create_pr=create_pr,
            commit_message=commit_message or f"Upload SimCSE model with simcse_hub {__version__}",
            commit_description=commit_description,
        )
    logger.info("Pushed %d files to %s (%s)", len(plan.files), repo_url, info.commit_url)
    return info


def _operations(files: dict[str, Path | bytes]) -> list[CommitOperationAdd]:
    return [CommitOperationAdd(path_in_repo=path, path_or_fileobj=src if isinstance(src, bytes) else str(src))
            for path, src in files.items()]


# ---------------------------------------------------------------------------------------------------- space


def default_demo_dir() -> Path:
    """The demo that ships with simcse_hub: the ``simcse_hub.demo`` package (``demo/`` of a source checkout)."""
    import importlib.util

    spec = importlib.util.find_spec("simcse_hub.demo")  # the package's folder, without importing Gradio
    if spec is None or spec.origin is None or not (Path(spec.origin).parent / "app.py").is_file():
        raise FileNotFoundError("simcse_hub.demo (the packaged demo/) is not installed; pass demo_dir (--demo-dir).")
    return Path(spec.origin).parent


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
    if not data.sdk_version and sdk_version is None:
        try:
            import gradio
        except ImportError as error:
            raise ValueError("the Space README has no sdk_version and Gradio is not installed to supply one; add "
                             "`sdk_version:` to the README front matter.") from error
        sdk_version = gradio.__version__
    data.sdk, data.sdk_version, data.app_file = "gradio", data.sdk_version or sdk_version, data.app_file or "app.py"
    data.models = [model_id]
    return str(space_card)


def push_space(model_id: str, space_id: str, *, demo_dir: str | os.PathLike | None = None, private: bool | None = None,
               commit_message: str | None = None, token: str | None = None,
               endpoint: str | None = None) -> CommitInfo:
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
    token = token or get_token()
    check_files_are_public(files, token)
    endpoint = resolve_endpoint(endpoint)
    api = HfApi(endpoint=endpoint, token=token, library_name="simcse_hub", library_version=__version__)
    retry = (f"simcse-hub push-space --model {model_id} --space-id {space_id} --demo-dir {demo_dir}"
             + (" --private" if private else ""))
    variable = {"key": SPACE_MODEL_VARIABLE, "value": model_id, "description": "the model the demo serves"}
    state = {"action": "creating the Space"}
    with _hub_call(state, endpoint, space_id, token, retry, demo_dir):
        space_id = api.create_repo(space_id, repo_type="space", space_sdk="gradio", private=private, exist_ok=True,
                                   space_variables=[variable]).repo_id
        state["action"] = f"setting the Space variable {SPACE_MODEL_VARIABLE}"
        api.add_space_variable(space_id, variable["key"], variable["value"], description=variable["description"])
        state["action"] = "uploading the demo and committing"
        info = api.create_commit(space_id, operations=_operations(files), repo_type="space",
                                 commit_message=commit_message or f"Demo of {model_id} (simcse_hub {__version__})")
    logger.info("Pushed the demo of %s to %s", model_id, info.repo_url)
    return info


__all__ = ["CREDENTIAL_PATTERNS", "IGNORE_PATTERNS", "LOG_PATTERNS", "ModelFolderError", "PushError", "PushPlan",
           "check_files_are_public", "collect_files", "default_demo_dir", "is_portable_folder", "plan_push",
           "push_model", "push_space", "resolve_endpoint", "space_readme", "validate_model_folder"]
