"""From the former ``export`` module:

One save that every loader understands: :func:`save_model`, which is ``SimCSEModel.save_pretrained``.

A folder written by ``save_model`` (or ``model.save_pretrained``, or ``model.push_to_hub``) loads three ways with the
same embeddings:

* ``AutoModel.from_pretrained(path, trust_remote_code=True)`` (simcse_hub not needed: the config carries ``auto_map``
  and the remote code of ``modeling/`` is copied beside the safetensors weights);
* ``SentenceTransformer(path, trust_remote_code=True)`` (``modules.json``, ``sentence_bert_config.json``,
  ``config_sentence_transformers.json`` and, where it applies, ``1_Pooling/``; see
  ``simcse_hub.modeling.formats_simcse.sentence_transformers_files``);
* ``simcse_hub.SimCSE(path)``.

From the former ``checkpointing`` module:

The output folder of ``simcse-hub train``: what an existing folder holds, checkpoints that prove they are whole,
the best model, and the training log; written so that a crash at any moment leaves nothing half-written and a
finished run is never lost to a later mistake.

Layout of an output folder during training::

    output_dir/
      training_log.jsonl          one JSON object per log line (loss, learning rate) and per evaluation
      runs/                       TensorBoard (or other Accelerate tracker) logs
      checkpoints/step-0000250/   Accelerate state (model, optimizer, schedule, RNG), TrainState, the exact settings
                                  (train_config.yaml) and, written last, checkpoint.json listing every file
      checkpoints/best-model/     the best model so far by STS-B dev, exported (loads like the final model)

Nothing is written before the run's first update has succeeded (every check, and the first step, come first); with
``overwrite_output_dir`` the earlier run's files are only then moved aside (one rename each) and deleted. A
checkpoint is written to ``checkpoints/.tmp-step-...`` and renamed once complete; one whose ``checkpoint.json`` is
missing, or names a file that is not there, is skipped with a warning. Folders are deleted by renaming them first,
so an interrupted deletion never leaves a folder that looks like a checkpoint.

Resuming loads the Accelerate state, which holds pickled Python objects (the RNG states): only resume runs you made.

From the former ``train_setup`` module:

Everything a training run sets up before its first batch: the Accelerator, the checks that need the launch, the
encoder and its tokenizer, the tokenized data and its loader, the STS-B dev data, the optimizer and the trackers.

Each function raises `ConfigError` (a one-line message naming the setting) when its part cannot be set up; none of
them writes into ``output_dir``.

From the former ``train`` module:

Train a SimCSE model with Hugging Face Accelerate, on one CPU, one GPU or many.

    simcse-hub train --preset quickstart
    accelerate launch -m simcse_hub.train --preset sup-bert-base --mixed-precision bf16
    torchrun --nproc_per_node 2 -m simcse_hub.train --preset unsup-bert-base --train-file wiki.txt

The loop reads top to bottom: configuration and accelerator, every check (settings, output folder, encoder,
tokenizer, data), optimizer and schedule, resume, then for every batch: contrastive loss (negatives from every
process; gradient caching when ``mini_batch_size`` is set), update, and every ``eval_steps`` the STS-B dev Spearman,
alignment and uniformity, the best model kept, a checkpoint written. Nothing is written into ``output_dir`` before
the first update has succeeded; a non-finite loss or weight stops the run and exports nothing. At the end the best
model (by STS-B dev, as in the paper) is exported to ``output_dir`` with its public settings (``train_config.yaml``),
its card data (``simcse_card.json``), its model card (``README.md``) and ``training_log.jsonl``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import shutil
import sys
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import yaml
from accelerate import Accelerator
from transformers import PreTrainedTokenizerBase

from simcse_hub.card import format_memory, hub_id
from simcse_hub.config import RESUMABLE_CHANGES, ConfigError, TrainConfig
from simcse_hub.inference import public_model_name
from simcse_hub.modeling.formats_simcse import (
    non_finite_weights,
    sentence_transformers_files,
    standard_pooling_mode,
)
from simcse_hub.modeling.modeling_simcse import SimCSEModel

if TYPE_CHECKING:
    from simcse_hub.data import Examples
from collections.abc import Callable

from accelerate import DataLoaderConfiguration
from accelerate.state import AcceleratorState, GradientState
from accelerate.utils import broadcast_object_list, set_seed
from safetensors.torch import load_file
from torch.utils.data import ConcatDataset, DataLoader
from tqdm.auto import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm
from transformers import get_linear_schedule_with_warmup

from simcse_hub.card import SimCSEModelCardData, format_before_after
from simcse_hub.data import (
    Examples,
    SourceBatchSampler,
    load_hub_examples,
    read_examples,
    resolve_train_file,
)
from simcse_hub.inference import ModelNotFoundError, encode_sentences, resolve_model
from simcse_hub.losses import SimCSELoss
from simcse_hub.modeling.formats_simcse import public_name
from simcse_hub.speed import (
    SimCSECollator,
    TokenizedDataset,
    TrainingForward,
    cached_backward,
    mask_tokens,
    resolve_precision,
)


def save_model(
    model: SimCSEModel,
    output_dir: str | os.PathLike,
    tokenizer: PreTrainedTokenizerBase | None = None,
    max_seq_length: int | None = None,
) -> Path:
    """Save ``model`` (and its tokenizer) so that every loader understands the folder.

    Args:
        model (`SimCSEModel`): the model; an Accelerate-wrapped model must be unwrapped first.
        output_dir (`str` or `os.PathLike`): the folder, created if needed. Files of the same names are replaced.
        tokenizer (`PreTrainedTokenizerBase`, *optional*, defaults to ``model.tokenizer``): saved beside the weights.
        max_seq_length (`int`, *optional*): the truncation length sentence-transformers uses; defaults to the
            tokenizer's ``model_max_length`` (capped at the encoder's position embeddings and 512).

    Returns:
        `Path`: the folder.

    Raises:
        ValueError: a weight holds NaN or inf (nothing is written).

    >>> save_model(model, "outputs/my-simcse", tokenizer)  # doctest: +SKIP
    """
    if not isinstance(model, SimCSEModel):
        raise TypeError(f"save_model expects a SimCSEModel, got {type(model).__name__} (unwrap it first).")
    model.save_pretrained(output_dir, tokenizer=tokenizer, max_seq_length=max_seq_length)
    return Path(output_dir)

logger = logging.getLogger(__name__)

CHECKPOINT_PREFIX = "step-"
CHECKPOINT_MARKER = "checkpoint.json"
SETTINGS_FILE = "train_config.yaml"
LOG_FILE = "training_log.jsonl"
# What a run writes into its output folder (the exported model, its card and logs): replaced by a fresh run.
RUN_FILES = frozenset({
    "checkpoints", "runs", LOG_FILE, SETTINGS_FILE, "simcse_card.json", "config.json", "model.safetensors",
    "model.safetensors.index.json", "modules.json", "sentence_bert_config.json", "config_sentence_transformers.json",
    "1_Pooling", "modeling_simcse.py", "configuration_simcse.py", "heads_simcse.py", "formats_simcse.py",
    "tokenizer.json", "tokenizer_config.json",
    "special_tokens_map.json", "added_tokens.json", "vocab.txt", "vocab.json", "merges.txt", "spiece.model",
    "sentencepiece.bpe.model", "chat_template.jinja", "simcse_training.json", "eval_results.json",
    "align_uniform.png", "whitening.safetensors", "flow.safetensors", "README.md",
})


@dataclass
class TrainState:
    """Where the run is, saved in every checkpoint (``accelerator.register_for_checkpointing``).

    Args:
        global_step (`int`): updates done.
        epoch (`int`): the current epoch.
        batches_in_epoch (`int`): batches of the current epoch already used (skipped on resume).
        best_step (`int`, *optional*): update of the best STS-B dev Spearman so far.
        best_score (`float`, *optional*): that Spearman (x100).
        runtime (`float`): seconds of training so far, over all sessions.
        before (`dict`, *optional*): the starting encoder's STS-B dev metrics (evaluated before the first update).
        best_metrics (`dict`, *optional*): the metrics of the best evaluation (the exported model's).
    """

    global_step: int = 0
    epoch: int = 0
    batches_in_epoch: int = 0
    best_step: int | None = None
    best_score: float | None = None
    runtime: float = 0.0
    before: dict[str, float] | None = None
    best_metrics: dict[str, float] | None = None

    def state_dict(self) -> dict[str, Any]:
        return asdict(self)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for key, value in state.items():
            setattr(self, key, value)


def remove_tree(path: Path) -> None:
    """Delete the folder ``path`` by renaming it to a hidden name first (one atomic step), then removing that."""
    if not path.exists():
        return
    doomed = path.with_name(f".deleting-{path.name}-{os.getpid()}-{time.monotonic_ns()}")
    os.replace(path, doomed)
    shutil.rmtree(doomed, ignore_errors=True)


def _swap_in(tmp: Path, target: Path) -> None:
    """Put the complete folder ``tmp`` at ``target`` (replacing it) by renames."""
    if target.exists():
        old = target.with_name(f".old-{target.name}")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(target, old)
        os.replace(tmp, target)
        shutil.rmtree(old)
    else:
        os.replace(tmp, target)


def _hand_written_card(path: Path) -> bool:
    """Whether ``path`` is a README.md that simcse_hub did not write (the author's own card: never replaced)."""
    from simcse_hub.card import CARD_MARKER

    return path.name == "README.md" and CARD_MARKER not in path.read_text(encoding="utf-8", errors="replace")


def checkpoint_problem(folder: Path) -> str | None:
    """Why ``folder`` is not a whole checkpoint (no ``checkpoint.json``, or a file it lists is missing), or None."""
    marker = folder / CHECKPOINT_MARKER
    if not marker.is_file():
        return f"{folder.name} has no {CHECKPOINT_MARKER} (it was not completely written)"
    try:
        files = json.loads(marker.read_text(encoding="utf-8"))["files"]
    except (json.JSONDecodeError, KeyError, TypeError, UnicodeDecodeError):
        return f"{marker} is not a valid checkpoint list"
    missing = [name for name in files if not (folder / name).is_file()]
    return f"{folder.name} lacks {', '.join(missing[:3])}" if missing else None


def checkpoints(output_dir: Path, warn: bool = False) -> list[Path]:
    """The whole checkpoints of ``output_dir``, oldest first (incomplete ones skipped, with a warning if ``warn``)."""
    folder = Path(output_dir) / "checkpoints"
    if not folder.is_dir():
        return []
    found = []
    for path in folder.iterdir():
        if not (path.is_dir() and path.name.startswith(CHECKPOINT_PREFIX)
                and path.name[len(CHECKPOINT_PREFIX):].isdigit()):
            continue
        problem = checkpoint_problem(path)
        if problem is None:
            found.append(path)
        elif warn:
            logger.warning("Skipping checkpoint %s: %s.", path, problem)
    return sorted(found, key=lambda path: int(path.name[len(CHECKPOINT_PREFIX):]))


class OutputFolder:
    """The output folder of a run: what it holds now, and the one command that works from there.

    Args:
        path (`Path`): ``output_dir``.
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)

    def run_files(self) -> list[Path]:
        """The files and folders of an earlier run in the folder (the user's other files are not among them)."""
        if not self.path.is_dir():
            return []
        return sorted(p for p in self.path.iterdir() if (p.name in RUN_FILES and not _hand_written_card(p))
                      or p.name.startswith(".deleting-"))

    @property
    def finished(self) -> bool:
        """Whether the folder holds an exported model (a run that finished)."""
        return (self.path / "config.json").is_file()

    def checkpoint_to_resume(self, config: TrainConfig, resume: str | None) -> Path | None:
        """Check that the run may start in this folder as asked, without touching it: the checkpoint to resume from
        (`None` for a fresh start); a `ConfigError` naming the one command that works otherwise."""
        here = str(self.path)
        if resume is None:
            if not self.run_files() or config.overwrite_output_dir:
                return None
            if self.finished:
                raise ConfigError(f"output_dir={here!r} holds a finished model; to train again, replace it with "
                                  "--overwrite-output-dir, or choose another --output-dir.")
            latest = checkpoints(self.path)
            if latest:
                raise ConfigError(f"output_dir={here!r} holds an interrupted run (checkpoint {latest[-1].name}); "
                                  "continue it with --resume, or start afresh with --overwrite-output-dir.")
            raise ConfigError(f"output_dir={here!r} holds an interrupted run with no checkpoint to continue from; "
                              "start afresh with --overwrite-output-dir, or choose another --output-dir.")
        if config.overwrite_output_dir:
            raise ConfigError("--resume continues the run in output_dir and --overwrite-output-dir replaces it; "
                              "pass one of them.")
        if self.finished:
            raise ConfigError(f"--resume: the run in {here!r} finished, so there is nothing to continue; to train "
                              "again, pass --overwrite-output-dir instead of --resume.")
        if resume != "latest":
            checkpoint = Path(resume)
            problem = checkpoint_problem(checkpoint) if checkpoint.is_dir() else "it is not a folder"
            if problem is not None:
                raise ConfigError(f"--resume {resume}: not a whole simcse_hub checkpoint ({problem}); expected a "
                                  f"folder such as {self.path / 'checkpoints' / (CHECKPOINT_PREFIX + '0000125')}.")
        else:
            found = checkpoints(self.path, warn=True)
            if not found:
                raise ConfigError(f"--resume: no whole checkpoint in {self.path / 'checkpoints'} (checkpoints come "
                                  "every save_steps updates); start afresh with --overwrite-output-dir instead of "
                                  "--resume.")
            checkpoint = found[-1]
        check_same_settings(checkpoint / SETTINGS_FILE, config)
        return checkpoint

    def claim(self, accelerator: Accelerator, resuming: bool) -> None:
        """Make the folder this run's (main process; all processes wait): an earlier run's files are moved aside,
        one rename each, and deleted (``overwrite_output_dir``); the folder is created. Called once the first update
        has succeeded, so a run that fails its checks or its first step leaves the folder as it was."""
        if accelerator.is_main_process:
            self.path.mkdir(parents=True, exist_ok=True)
            if not resuming:
                old = self.run_files()
                if old:
                    aside = self.path / f".deleting-replaced-run-{os.getpid()}-{time.monotonic_ns()}"
                    aside.mkdir()
                    for item in old:
                        if not item.name.startswith(".deleting-"):
                            os.replace(item, aside / item.name)
                    logger.info("Replaced the earlier run in %s (--overwrite-output-dir).", self.path)
                    for leftover in self.path.glob(".deleting-*"):
                        shutil.rmtree(leftover, ignore_errors=True)
            for old in (self.path / "checkpoints").glob(".old-*"):  # a crash between the two renames of _swap_in
                target = old.with_name(old.name[len(".old-"):])
                if not target.exists():
                    os.replace(old, target)
        accelerator.wait_for_everyone()


def check_same_settings(saved: Path, config: TrainConfig) -> None:
    """A resumed run must compute what it started to: `ConfigError` listing every changed setting."""
    if not saved.is_file():
        raise ConfigError(f"--resume: {saved} is missing, so the settings the run started with are unknown; start "
                          "afresh with --overwrite-output-dir.")
    before = yaml.safe_load(saved.read_text(encoding="utf-8")) or {}
    now = config.to_dict()
    changed = [f"{key}: {before.get(key)!r} -> {now[key]!r}" for key in now
               if key not in RESUMABLE_CHANGES and before.get(key) != now[key]]
    if changed:
        raise ConfigError("--resume needs the settings the run started with; changed: " + "; ".join(changed))


def save_checkpoint(accelerator: Accelerator, output_dir: Path, step: int, limit: int, config: TrainConfig) -> Path:
    """Save the Accelerate state and the run's settings (all processes call this) as ``checkpoints/step-NNNNNNN``,
    with ``checkpoint.json`` written last; keep the newest ``limit`` checkpoints."""
    folder = Path(output_dir) / "checkpoints" / f"{CHECKPOINT_PREFIX}{step:07d}"
    tmp = folder.with_name(f".tmp-{folder.name}")
    if accelerator.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        config.save_yaml(tmp / SETTINGS_FILE)
        files = sorted(p.relative_to(tmp).as_posix() for p in tmp.rglob("*") if p.is_file())
        (tmp / CHECKPOINT_MARKER).write_text(json.dumps({"step": step, "files": files}, indent=1) + "\n",
                                             encoding="utf-8")
        _swap_in(tmp, folder)
        for old in checkpoints(output_dir)[:-limit]:
            remove_tree(old)
    accelerator.wait_for_everyone()
    return folder


@contextlib.contextmanager
def without_mlm_head(model) -> Iterator:
    """The model as it is exported: the auxiliary MLM head (``do_mlm``) is for training only, as in the paper's
    released models, so it is taken off (and put back on leaving the block)."""
    head, do_mlm = model.lm_head, model.config.do_mlm
    model.lm_head, model.config.do_mlm = None, False
    try:
        yield model
    finally:
        model.lm_head, model.config.do_mlm = head, do_mlm


def save_best_model(model, tokenizer, output_dir: Path, step: int) -> Path:
    """Export ``model`` (unwrapped) as ``checkpoints/best-model`` (main process only), replacing the previous best."""
    target = Path(output_dir) / "checkpoints" / "best-model"
    tmp = target.with_name(".tmp-best-model")
    shutil.rmtree(tmp, ignore_errors=True)
    with without_mlm_head(model):
        save_model(model, tmp, tokenizer)
    (tmp / "best_step.json").write_text(json.dumps({"step": step}) + "\n", encoding="utf-8")
    _swap_in(tmp, target)
    return target


def finite_or_none(value: Any) -> Any:
    """``value`` with every NaN or infinite float replaced by ``None`` (JSON has no NaN)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: finite_or_none(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite_or_none(item) for item in value]
    return value


class TrainingLog:
    """``training_log.jsonl`` (main process) plus the Accelerate trackers; a resumed run drops the lines written
    after its checkpoint, so the log reads as one run. Every line is valid JSON (a non-finite number is ``null``)."""

    def __init__(self, path: Path, accelerator: Accelerator, truncate_after: int = 0) -> None:
        self.path = Path(path)
        self.accelerator = accelerator
        if accelerator.is_main_process and self.path.exists():
            kept = []
            for line in self.path.read_text(encoding="utf-8").splitlines():
                try:
                    record = json.loads(line)
                except json.JSONDecodeError:  # a line torn by the crash
                    continue
                if record.get("step", 0) <= truncate_after:
                    kept.append(line)
            self.path.write_text("".join(line + "\n" for line in kept), encoding="utf-8")

    def write(self, record: dict[str, Any]) -> None:
        if not self.accelerator.is_main_process:
            return
        with self.path.open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(finite_or_none(record), allow_nan=False) + "\n")
        values = {key: value for key, value in record.items()
                  if key != "step" and isinstance(value, (int, float)) and math.isfinite(value)}
        self.accelerator.log(values, step=record["step"])


# ------------------------------------------------------------------------------------------------ what a run records


def training_card_data(config: TrainConfig, sources: list[Examples], accelerator: Accelerator,
                       state: TrainState) -> dict:
    """What the model card records of this run (the training fields of ``simcse_card.json``): public names only."""
    datasets = [{"name": Path(path.removeprefix("package:")).name.removesuffix(".gz").rsplit(".", 1)[0],
                 "hub_id": None} for path in config.train_files()]
    datasets += [{"name": Path(files).name.rsplit(".", 1)[0] if files else name, "hub_id": hub_id(name)}
                 for name, files in config.hub_datasets()]
    for dataset, examples in zip(datasets, sources):
        dataset["examples"] = len(examples.rows)
    kinds = {examples.supervised for examples in sources}
    device = torch.cuda.get_device_name(accelerator.device) if accelerator.device.type == "cuda" else "CPU"
    precision = "fp32" if accelerator.mixed_precision == "no" else accelerator.mixed_precision
    hyperparameters = config.public_dict()
    if config.mixed_precision == "auto":  # what "auto" chose on this machine
        hyperparameters["mixed_precision"] = f"auto ({precision})"
    base_model = public_model_name(config.model_name_or_path)
    return {
        "base_model": hub_id(base_model),
        "base_model_name": base_model,
        "objective": "mixed" if len(kinds) > 1 else "supervised" if kinds == {True} else "unsupervised",
        "datasets": datasets,
        "hyperparameters": hyperparameters,
        "hardware": f"{accelerator.num_processes} x {device} ({precision})",
        "train_runtime_seconds": round(state.runtime, 2),
        "peak_memory": format_memory(**peak_memory(accelerator.device)),
        "global_steps": state.global_step,
        "best_step": state.best_step,
        "best_stsb_dev_spearman": state.best_score,
        "before_after": None if state.before is None or state.best_metrics is None else {
            "pooler": config.pooler_type + (" (MLP in training only)" if config.pooler_type == "cls"
                                            and config.mlp_only_train else ""),
            "before": state.before, "after": state.best_metrics},
        "language": "en",
        "license": config.license,
    }


def peak_memory(device: torch.device) -> dict[str, int | str]:
    """This process's peak memory so far: the accelerator's allocated memory on a GPU, else the resident set size."""
    if device.type == "cuda":
        return {"size": int(torch.cuda.max_memory_allocated(device)), "kind": "GPU memory allocated by torch"}
    import resource

    scale = 1 if sys.platform == "darwin" else 1024  # ru_maxrss: bytes on macOS, KiB on Linux
    return {"size": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale, "kind": "process resident memory"}


def check_setup(config: TrainConfig, accelerator: Accelerator) -> None:
    """Checks that need the launch: processes and devices."""
    if config.batch_size % accelerator.num_processes:
        raise ConfigError(f"batch_size={config.batch_size} must be a multiple of the number of processes "
                          f"({accelerator.num_processes}): each process takes an equal share of the batch.")
    if config.mixed_precision == "auto":
        logger.info("mixed_precision='auto': %s", "bf16 autocast (this CPU computes bfloat16 natively)"
                    if accelerator.mixed_precision == "bf16" else "fp32")


def make_accelerator(config: TrainConfig) -> Accelerator:
    """The Accelerator of a run: the CPU unless an accelerator device exists, the precision ``auto`` resolved for
    this machine, the updates counted by the schedule, a seeded data order."""
    on_cpu = not getattr(torch, "accelerator", torch.cuda).is_available()
    try:  # "auto" resolved for this machine: bf16 on a CPU that computes it natively, else fp32
        precision = resolve_precision(config.mixed_precision, torch.device("cpu" if on_cpu else "cuda"),
                                      "mixed_precision")
    except ValueError as error:
        raise ConfigError(str(error)) from None
    # A run owns Accelerate's per-process state: a second run in the same process (a notebook) may ask for another
    # precision or accumulation, which Accelerate refuses once set. The launch (processes, devices) is kept.
    AcceleratorState._reset_state(reset_partial_state=False)
    GradientState._reset_state()
    accelerator = Accelerator(
        cpu=on_cpu,  # without a GPU, say so: Accelerate then runs `torchrun` processes as one group on the CPU (gloo)
        mixed_precision="no" if precision == "fp32" else precision,
        gradient_accumulation_steps=config.gradient_accumulation_steps,
        log_with=trackers(config.report_to),
        project_dir=str(Path(config.output_dir) / "runs"),
        step_scheduler_with_optimizer=False,  # the schedule counts updates; we step it once per update
        dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True, data_seed=config.seed),
    )
    if not accelerator.is_main_process:  # one process speaks for all (as in the Accelerate examples)
        logging.getLogger("simcse_hub").setLevel(logging.ERROR)
    return accelerator


def load_encoder(config: TrainConfig) -> SimCSEModel:
    """The SimCSE model around ``model_name_or_path`` (a folder, a Hub id, or its installed offline copy), with its
    tokenizer; `ConfigError` when it cannot be loaded or its inputs are shorter than ``max_seq_length``."""
    what = "model_name_or_path"
    try:
        path = resolve_model(config.model_name_or_path, what)
        model = SimCSEModel.from_encoder(path, pooler_type=config.pooler_type, mlp_only_train=config.mlp_only_train,
                                         temperature=config.temperature,
                                         hard_negative_weight=config.hard_negative_weight, do_mlm=config.do_mlm,
                                         mlm_weight=config.mlm_weight)
    except ModelNotFoundError as error:
        raise ConfigError(str(error)) from None
    except (OSError, ValueError) as error:
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ConfigError(f"{what}={config.model_name_or_path!r} is not an encoder AutoModel can load ({first}); "
                          "give a model folder (config.json and weights) or a Hub id.") from None
    if model.tokenizer is None:
        raise ConfigError(f"{what}={config.model_name_or_path!r} has no tokenizer (tokenizer_config.json); training "
                          "needs one beside the encoder's weights.")
    limit = model.config.max_input_length
    if limit is not None and config.max_seq_length > limit:
        raise ConfigError(f"max_seq_length={config.max_seq_length} exceeds what the encoder accepts ({limit} tokens, "
                          f"its position embeddings); use --max-seq-length {limit} or less (the paper uses 32).")
    public = public_model_name(config.model_name_or_path)
    model.config.base_model_name_or_path = model.config.encoder_config._name_or_path = public
    if config.pooler_type != "cls":
        model.mlp.requires_grad_(False)  # the MLP head is used by the cls pooler only
    return model


def load_data(config: TrainConfig, tokenizer, accelerator: Accelerator) -> tuple[list[Examples], DataLoader]:
    """The examples of every source, tokenized once, and their shuffled loader: each process takes
    ``batch_size / num_processes`` examples per batch, in an order of its own seed (the global RNG, which draws
    dropout, is kept out of it). With several sources (or a source weight), every batch comes from one source, as
    :class:`~simcse_hub.data.SourceBatchSampler` draws them."""
    with accelerator.main_process_first():
        sources = load_examples(config)
    datasets = [TokenizedDataset(examples, tokenizer, config.max_seq_length) for examples in sources]
    collator = SimCSECollator(tokenizer.pad_token_id, token_type_ids="token_type_ids" in tokenizer.model_input_names)
    local_batch = config.batch_size // accelerator.num_processes
    if len(datasets) == 1 and config.source_weights is None:
        loader = DataLoader(datasets[0], batch_size=local_batch, shuffle=True, collate_fn=collator,
                            generator=torch.Generator().manual_seed(config.seed))
    else:
        try:
            sampler = SourceBatchSampler([len(dataset) for dataset in datasets], local_batch,
                                         accelerator.num_processes, config.source_weights, config.sampling,
                                         config.seed)
        except ValueError as error:
            raise ConfigError(f"{error} (sources, in order: {', '.join(map(public_name, config.sources()))})") \
                from None
        loader = DataLoader(ConcatDataset(datasets), batch_sampler=sampler, collate_fn=collator,
                            generator=torch.Generator().manual_seed(config.seed))  # the iterator's seed, not dropout's
        logger.info("%d sources, %s sampling: %s batches per epoch", len(datasets), config.sampling,
                    " + ".join(str(count) for count in sampler.batches_per_source()))
    for examples in sources:
        logger.info("%d %s examples from %s (%d skipped: empty sentence)", len(examples.rows),
                    "supervised" if examples.supervised else "unsupervised", public_name(examples.source),
                    examples.skipped)
    return sources, loader


def make_optimizer(model: SimCSEModel, config: TrainConfig, accelerator: Accelerator) -> torch.optim.Optimizer:
    """AdamW without weight decay on biases and LayerNorm weights; fused (one kernel per parameter group)."""
    params = [p for p in model.parameters() if p.requires_grad]
    return torch.optim.AdamW(
        [
            {"params": [p for p in params if p.dim() >= 2], "weight_decay": config.weight_decay},
            {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
        ],
        lr=config.learning_rate,
        fused=accelerator.device.type in ("cpu", "cuda"),
    )


def load_examples(config: TrainConfig) -> list[Examples]:
    """The examples of every source: the train files, then the Hub datasets."""
    sources = [read_examples(resolve_train_file(path), config.columns, config.max_train_samples)
               for path in config.train_files()]
    return sources + [load_hub_examples(name, config.dataset_split, config.dataset_config_name, data_files,
                                        config.columns, config.max_train_samples)
                      for name, data_files in config.hub_datasets()]


def find_eval_data(config: TrainConfig, accelerator: Accelerator) -> tuple[bool, Path | None]:
    """Whether STS-B dev can be read (from ``data_dir``, ``$SIMCSE_DATA_DIR``, ``../shared/data`` or the Hub), and
    the data folder to read it from; the main process decides, and says why when evaluation is skipped."""
    from simcse_hub.evaluation import (
        STSDataError,
        TaskUnavailableError,
        default_data_dir,
        load_sts_task,
    )

    if config.data_dir is not None and not Path(config.data_dir).is_dir():
        raise ConfigError(f"data_dir={config.data_dir!r} is not a folder (expected one holding stsb/dev.tsv.gz); fix "
                          "the path, or set eval_steps=0 to train without evaluation.")
    data_dir = Path(config.data_dir) if config.data_dir is not None else default_data_dir()
    available = None
    if accelerator.is_main_process:
        try:
            load_sts_task("STSBenchmark", data_dir, split="dev")
            available = True
        except TaskUnavailableError as error:
            logger.warning("Skipping evaluation: no STS-B dev set (%s). The last model is exported.", error)
            available = False
        except (STSDataError, OSError) as error:
            raise ConfigError(f"{error} (the STS-B dev set of data_dir; set eval_steps=0 to train without "
                              "evaluation)") from None
    return broadcast_object_list([available])[0], data_dir


def trackers(report_to: str) -> str | list[str] | None:
    """Accelerate's ``log_with`` for ``report_to``: ``auto`` is TensorBoard when it is installed."""
    if report_to == "none":
        return None
    if report_to == "auto":
        import importlib.util

        found = any(importlib.util.find_spec(name) for name in ("tensorboard", "tensorboardX"))
        return "tensorboard" if found else None
    return [name.strip() for name in report_to.split(",")]


def tracker_config(config: TrainConfig) -> dict[str, str | int | float | bool]:
    """The settings as flat scalars (TensorBoard's hparams take no lists or None)."""
    flat = {}
    for key, value in config.to_dict().items():
        flat[key] = ",".join(map(str, value)) if isinstance(value, list) else ("none" if value is None else value)
    return flat


class TrainingDiverged(RuntimeError):
    """The loss or the weights became NaN or infinite; the message names the update and the settings to look at."""


def train(config: TrainConfig, resume: str | None = None,
          on_evaluate: Callable[[int, dict[str, float]], None] | None = None) -> Path:
    """Train a SimCSE model as ``config`` says and export it to ``config.output_dir``; returns that folder, which loads
    with ``AutoModel``, ``SentenceTransformer`` and ``simcse_hub.SimCSE``.

    Every check (settings, output folder, encoder, tokenizer, data, evaluation data) comes before anything is
    written; the output folder is claimed (an earlier run there replaced) only once the first update has succeeded.

    Args:
        config (`TrainConfig`): the settings (validated here).
        resume (`str`, *optional*): ``"latest"`` or a checkpoint folder: continue an interrupted run exactly.
        on_evaluate (`Callable[[int, dict], None]`, *optional*): called with (update, metrics) after each periodic
            evaluation, on every process; raising stops the run (``tune`` prunes so).

    Raises:
        ConfigError: a setting, the output folder, the encoder or the data is not usable (nothing was written).
        TrainingDiverged: the loss or the weights became non-finite (nothing was exported).
    """
    config.validate()
    accelerator = make_accelerator(config)
    check_setup(config, accelerator)
    output = OutputFolder(Path(config.output_dir))
    checkpoint = output.checkpoint_to_resume(config, resume)
    set_seed(config.seed)

    # ---- model, data (tokenized once), optimizer and schedule; what is prepared (DDP wraps it) is a step's forward
    model = load_encoder(config)
    tokenizer = model.tokenizer
    sources, train_dataloader = load_data(config, tokenizer, accelerator)
    evaluating, eval_dir = find_eval_data(config, accelerator) if config.eval_steps else (False, None)
    optimizer = make_optimizer(model, config, accelerator)
    max_steps, num_epochs = schedule_length(config, accelerator, len(train_dataloader))
    lr_scheduler = get_linear_schedule_with_warmup(optimizer, round(config.warmup_ratio * max_steps), max_steps)
    model, optimizer, train_dataloader, lr_scheduler = accelerator.prepare(
        TrainingForward(model, config.length_buckets, config.fast_dropout), optimizer, train_dataloader, lr_scheduler
    )
    state = restore_state(accelerator, checkpoint)
    if evaluating and state.before is None:  # the starting encoder, for the before/after of the model card
        state.before = evaluate(accelerator, model, tokenizer, config, eval_dir)
        logger.info("before training: %s", format_metrics(state.before))

    # ---- the loop
    progress = progress_bar(accelerator, config, state, max_steps, num_epochs, output.path)
    meter, log = Meter(state.runtime, accelerator.device), None  # the log opens once the first update has succeeded
    model.train()
    with logging_redirect_tqdm():
        while state.global_step < max_steps and state.epoch < num_epochs:
            for batch in epoch_batches(accelerator, train_dataloader, state):
                with accelerator.accumulate(model):
                    loss = training_step(accelerator, model, batch, config, tokenizer)
                    if accelerator.sync_gradients and config.max_grad_norm is not None:
                        accelerator.clip_grad_norm_(model.parameters(), config.max_grad_norm)
                    optimizer.step()
                    optimizer.zero_grad()
                state.batches_in_epoch += 1
                meter.add(loss / config.gradient_accumulation_steps)
                if not accelerator.sync_gradients:
                    continue
                lr_scheduler.step()
                state.global_step += 1
                step, done, update_loss = state.global_step, state.global_step >= max_steps, meter.close_update()
                if not math.isfinite(update_loss):
                    raise diverged(f"the loss is {update_loss}", step, config, output.path)
                if log is None:
                    log = open_output(output, accelerator, config, state, resuming=checkpoint is not None)
                progress.update(1)
                if step % config.logging_steps == 0 or done:
                    log_update(log, meter, progress, accelerator, state, len(train_dataloader),
                               lr_scheduler.get_last_lr()[0])
                with meter.paused():  # evaluations and checkpoints are left out of the speed
                    if evaluating and (step % config.eval_steps == 0 or done):
                        evaluate_and_keep_best(accelerator, model, tokenizer, config, eval_dir, state, log, on_evaluate)
                    if step % (config.save_steps or config.eval_steps or max_steps) == 0 and not done:
                        save_progress(accelerator, model, config, state, meter)
                if done:
                    break
            else:
                state.epoch, state.batches_in_epoch = state.epoch + 1, 0
    progress.close()
    finish(accelerator, accelerator.unwrap_model(model).model, tokenizer, config, sources, state, meter)
    return output.path


def schedule_length(config: TrainConfig, accelerator: Accelerator, num_batches: int) -> tuple[int, int]:
    """``(updates, epochs)`` of the run: ``max_steps``, or ``num_train_epochs`` of ``num_batches`` (each process
    takes one batch in ``num_processes``; ``gradient_accumulation_steps`` batches make an update)."""
    updates_per_epoch = math.ceil(math.ceil(num_batches / accelerator.num_processes)
                                  / config.gradient_accumulation_steps)
    max_steps = config.max_steps or config.num_train_epochs * updates_per_epoch
    return max_steps, math.ceil(max_steps / updates_per_epoch)


def progress_bar(accelerator: Accelerator, config: TrainConfig, state: TrainState, max_steps: int, num_epochs: int,
                 output_dir: Path) -> tqdm:
    """Log what the run does and return its progress bar (shown on each machine's main process)."""
    logger.info("Training %d updates (%d epochs) with a global batch of %d on %d process(es) into %s",
                max_steps, num_epochs, config.batch_size, accelerator.num_processes, output_dir)
    return tqdm(total=max_steps, initial=state.global_step, desc="training",
                disable=not accelerator.is_local_main_process)


def restore_state(accelerator: Accelerator, checkpoint: Path | None) -> TrainState:
    """The run's counters, registered for checkpointing; with ``checkpoint``, everything saved in it (weights,
    optimizer, schedule, RNG, where we were in the data) is loaded back."""
    state = TrainState()
    accelerator.register_for_checkpointing(state)
    if checkpoint is not None:
        accelerator.load_state(str(checkpoint))
        logger.info("Resumed from %s at update %d (epoch %d, batch %d)",
                    checkpoint, state.global_step, state.epoch, state.batches_in_epoch)
    return state


def epoch_batches(accelerator: Accelerator, dataloader, state: TrainState):
    """The batches of the current epoch, without those a resumed run already used."""
    dataloader.set_epoch(state.epoch)
    if state.batches_in_epoch:  # resumed in the middle of this epoch
        return accelerator.skip_first_batches(dataloader, state.batches_in_epoch)
    return dataloader


def log_update(log: TrainingLog, meter: Meter, progress: tqdm, accelerator: Accelerator, state: TrainState,
               batches_per_epoch: int, learning_rate: float) -> None:
    """One line of ``training_log.jsonl``: the mean loss (over processes) and the speed since the last line."""
    mean_loss, speed = meter.report(accelerator)
    progress.set_postfix(loss=f"{mean_loss:.4g}")
    log.write({"step": state.global_step, "epoch": round(state.epoch + state.batches_in_epoch / batches_per_epoch, 4),
               "loss": mean_loss, "learning_rate": learning_rate, "updates_per_second": round(speed, 4)})


def save_progress(accelerator: Accelerator, model, config: TrainConfig, state: TrainState, meter: Meter) -> None:
    """A checkpoint to resume from, written only while every weight is finite."""
    check_weights(accelerator.unwrap_model(model).model, state.global_step, config, Path(config.output_dir))
    state.runtime = meter.runtime()
    save_checkpoint(accelerator, Path(config.output_dir), state.global_step, config.save_total_limit, config)


def finish(accelerator: Accelerator, model: SimCSEModel, tokenizer, config: TrainConfig, sources: list[Examples],
           state: TrainState, meter: Meter) -> None:
    """Export the best model (or the last one, without evaluation) with its settings and card, on the main process;
    print what the run changed; close the trackers."""
    state.runtime = meter.runtime()
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        card = export(model, tokenizer, config, sources, accelerator, state)
        if card.before_after:  # what the run changed, in the words of the paper
            accelerator.print(format_before_after(card.before_after))
    accelerator.wait_for_everyone()
    accelerator.end_training()
    accelerator.print(f"Model saved to {Path(config.output_dir).resolve()}")


class Meter:
    """Losses and speed of the updates since the last log line; evaluations and checkpoints are left out of both
    the speed and (with :meth:`paused`) nothing else. ``runtime`` counts every second of the run, over sessions."""

    def __init__(self, runtime_before: float, device: torch.device) -> None:
        self.device = device
        self.session_start, self.runtime_before = time.perf_counter(), runtime_before
        self.window_start, self.pause = time.perf_counter(), 0.0
        self.update_loss = torch.zeros((), device=device)
        self.window: list[torch.Tensor] = []

    def add(self, loss: torch.Tensor) -> None:
        self.update_loss = self.update_loss + loss

    def close_update(self) -> float:
        """End an update; its loss (a Python float: NaN and inf included)."""
        self.window.append(self.update_loss)
        self.update_loss = torch.zeros((), device=self.device)
        return float(self.window[-1])

    def report(self, accelerator: Accelerator) -> tuple[float, float]:
        """``(mean loss over processes, updates per second)`` since the last report."""
        mean_loss = accelerator.reduce(torch.stack(self.window).mean(), reduction="mean").item()
        speed = len(self.window) / (time.perf_counter() - self.window_start - self.pause)
        self.window, self.window_start, self.pause = [], time.perf_counter(), 0.0
        return mean_loss, speed

    @contextlib.contextmanager
    def paused(self):
        start = time.perf_counter()
        try:
            yield
        finally:
            self.pause += time.perf_counter() - start

    def runtime(self) -> float:
        return self.runtime_before + time.perf_counter() - self.session_start


def open_output(output: OutputFolder, accelerator: Accelerator, config: TrainConfig, state: TrainState,
                resuming: bool) -> TrainingLog:
    """Claim the output folder (the first update of this session has succeeded), then open the log (with the
    starting encoder's evaluation as update 0 of a fresh run) and the trackers."""
    output.claim(accelerator, resuming)
    log = TrainingLog(output.path / LOG_FILE, accelerator, truncate_after=state.global_step - 1)
    if state.before is not None and not resuming:
        log.write({"step": 0, **state.before})
    accelerator.init_trackers("simcse", config=tracker_config(config))
    return log


def evaluate_and_keep_best(accelerator: Accelerator, model, tokenizer, config: TrainConfig, eval_dir: Path | None,
                           state: TrainState, log: TrainingLog,
                           on_evaluate: Callable[[int, dict[str, float]], None] | None = None) -> dict[str, float]:
    """STS-B dev, alignment and uniformity now; the model is kept as ``checkpoints/best-model`` when it is the best.
    ``on_evaluate(update, metrics)`` is called last."""
    step = state.global_step
    metrics = evaluate(accelerator, model, tokenizer, config, eval_dir)
    log.write({"step": step, **metrics})
    if state.best_score is None or metrics["stsb_dev_spearman"] > state.best_score:
        state.best_step, state.best_score, state.best_metrics = step, metrics["stsb_dev_spearman"], metrics
        if accelerator.is_main_process:
            check_weights(accelerator.unwrap_model(model).model, step, config, Path(config.output_dir))
            save_best_model(accelerator.unwrap_model(model).model, tokenizer, Path(config.output_dir), step)
    logger.info("update %d: %s (best STS-B dev %.2f at update %d)", step, format_metrics(metrics), state.best_score,
                state.best_step)
    if on_evaluate is not None:
        on_evaluate(step, metrics)
    return metrics


def format_metrics(metrics: dict[str, float]) -> str:
    return (f"STS-B dev Spearman {metrics['stsb_dev_spearman']:.2f}, alignment {metrics['alignment']:.4f}, "
            f"uniformity {metrics['uniformity']:.4f}, mean cosine {metrics['mean_cosine']:.4f}")


def diverged(what: str, step: int, config: TrainConfig, output_dir: Path) -> TrainingDiverged:
    """The error that stops a run whose loss or weights became non-finite, naming the settings to look at."""
    suspects = [f"learning_rate={config.learning_rate:g}"]
    if config.temperature < 0.01:
        suspects.append(f"temperature={config.temperature:g}")
    if abs(config.hard_negative_weight) > 10:
        suspects.append(f"hard_negative_weight={config.hard_negative_weight:g}")
    if config.mixed_precision == "fp16":
        suspects.append("mixed_precision='fp16' (overflow; try bf16 or no)")
    if config.max_grad_norm is None:
        suspects.append("max_grad_norm=null (no clipping)")
    found = checkpoints(output_dir)
    kept = (f"the last good checkpoint, {found[-1]}, is kept (fix the setting, then start afresh with "
            "--overwrite-output-dir)") if found else "no checkpoint was written"
    return TrainingDiverged(f"update {step}: {what}, so the run stopped and exported nothing; {kept}. Look at "
                            + ", ".join(suspects) + ".")


def check_weights(model: SimCSEModel, step: int, config: TrainConfig, output_dir: Path) -> None:
    """Refuse to keep non-finite weights: a checkpoint or best model is only written while every weight is finite."""
    problem = non_finite_weights(model)
    if problem is not None:
        raise diverged(f"the weights became non-finite ({problem})", step, config, output_dir)


def export(model: SimCSEModel, tokenizer, config: TrainConfig, sources: list[Examples], accelerator: Accelerator,
           state: TrainState) -> SimCSEModelCardData:
    """Write the final model (the best one by STS-B dev when evaluating, else the last), its public settings
    (``train_config.yaml``) and its card data and card (``simcse_card.json``, ``README.md``); then remove the
    checkpoints unless ``keep_checkpoints``. Main process only."""
    output_dir = Path(config.output_dir)
    with without_mlm_head(model) as final:
        if state.best_step is not None:
            final.load_state_dict(load_file(output_dir / "checkpoints" / "best-model" / "model.safetensors"))
            logger.info("Exporting the best model: update %d, STS-B dev Spearman %.2f", state.best_step,
                        state.best_score)
        check_weights(final, state.global_step, config, output_dir)
        save_model(final, output_dir, tokenizer)
    config.save_yaml(output_dir / SETTINGS_FILE, public=True)
    card = SimCSEModelCardData.from_folder(output_dir)
    card.update(training_card_data(config, sources, accelerator, state), source="the training run")
    card.save(output_dir)
    if not config.keep_checkpoints:
        remove_tree(output_dir / "checkpoints")
    logger.info("Saved the model and its card (README.md) to %s", output_dir)
    return card


# ---------------------------------------------------------------------------------------------------- one step


def training_step(
    accelerator: Accelerator,
    model: torch.nn.Module,
    batch: dict[str, torch.Tensor],
    config: TrainConfig,
    tokenizer=None,
) -> torch.Tensor:
    """Forward and backward of one contrastive batch (no optimizer step); returns the detached loss.

    ``model`` is the prepared :class:`~simcse_hub.speed.TrainingForward` (embeddings in length buckets, and the
    MLM loss, in one call). The InfoNCE loss scores this process's anchors against the positives (and hard
    negatives) of every process (with ``config.symmetric_loss``, also each positive against every anchor, the two
    directions averaged). With ``config.mini_batch_size`` smaller than the local batch, the gradient is
    computed by gradient caching (:func:`simcse_hub.speed.cached_backward`): the same gradient, with the memory
    of one mini-batch. With ``config.do_mlm`` the MLM loss of masked copies of the inputs is added, weighted by
    ``mlm_weight``.

    >>> with accelerator.accumulate(model):  # doctest: +SKIP
    ...     loss = training_step(accelerator, model, batch, config, tokenizer)
    ...     optimizer.step()
    """

    loss_fn = SimCSELoss.from_config(  # the model's own temperature and hard-negative weight
        accelerator.unwrap_model(model).model.config, gather_across_devices=accelerator.num_processes > 1,
        symmetric=config.symmetric_loss,
    ).compute_loss_from_embeddings  # (batch, num_sent, hidden) float32 -> scalar

    total_masked = None
    if config.do_mlm:
        batch = dict(batch)
        batch["mlm_input_ids"], batch["mlm_labels"] = mask_tokens(
            batch["input_ids"], tokenizer, config.mlm_probability, batch["attention_mask"]
        )
        total_masked = (batch["mlm_labels"] != -100).sum().clamp(min=1)

    def forward(module: torch.nn.Module, part: dict[str, torch.Tensor], with_mlm: bool = True):
        if not with_mlm:
            part = {key: value for key, value in part.items() if not key.startswith("mlm_")}
        embeddings, mlm_sum = module(**part)  # (part, num_sent, hidden), summed MLM loss of the part or None
        # Each part's MLM sum over the batch's masked tokens: the parts (chunks) add up to the batch's mean.
        return embeddings.float(), None if mlm_sum is None else config.mlm_weight * mlm_sum / total_masked

    if config.mini_batch_size is not None and config.mini_batch_size < batch["input_ids"].size(0):
        return cached_backward(accelerator, model, batch, forward, loss_fn, config.mini_batch_size)
    embeddings, mlm = forward(model, batch)
    loss = loss_fn(embeddings)
    if mlm is not None:
        loss = loss + mlm
    accelerator.backward(loss)
    return loss.detach()


# ---------------------------------------------------------------------------------------------------- evaluation


def evaluate(accelerator: Accelerator, model, tokenizer, config: TrainConfig,
             data_dir: Path | None) -> dict[str, float]:
    """STS-B dev Spearman (x100), alignment and uniformity of the model being trained, computed on the main process
    (in eval mode, with the one encoder of ``simcse_hub.inference``) and shared with the others."""
    metrics = None
    if accelerator.is_main_process:
        from simcse_hub.evaluation import evaluate_model

        simcse = accelerator.unwrap_model(model).model
        simcse.eval()
        try:
            results = evaluate_model(
                lambda sentences: encode_sentences(simcse, tokenizer, sentences, batch_size=config.eval_batch_size),
                config.model_name_or_path, tasks=["STSBenchmark"], data_dir=data_dir, split="dev",
            )
        finally:
            simcse.train()
        metrics = {"stsb_dev_spearman": float(results["tasks"]["STSBenchmark"]["spearman"]),
                   **{name: float(results[name]) for name in ("alignment", "uniformity", "mean_cosine")}}
    return broadcast_object_list([metrics])[0]


__all__ = ['OutputFolder', 'TrainState', 'TrainingDiverged', 'TrainingLog', 'check_same_settings', 'checkpoint_problem', 'checkpoints', 'evaluate', 'non_finite_weights', 'remove_tree', 'save_best_model', 'save_checkpoint', 'save_model', 'sentence_transformers_files', 'standard_pooling_mode', 'train', 'training_step', 'without_mlm_head']

if __name__ == "__main__":  # what `accelerate launch -m simcse_hub.train` and `torchrun -m simcse_hub.train` run
    from simcse_hub.cli import main

    sys.exit(main(["train", *sys.argv[1:]]))
