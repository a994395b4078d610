"""Train a SimCSE model with Hugging Face Accelerate, on one CPU, one GPU or many.

    simcse-hub train --preset quickstart
    accelerate launch -m simcse_hub.train --preset sup-bert-base --mixed-precision bf16
    torchrun --nproc_per_node 2 -m simcse_hub.train --preset unsup-bert-base --train-file wiki.txt

The loop reads top to bottom: configuration and accelerator, every check (settings, output folder, encoder,
tokenizer, data), optimizer and schedule, resume, then for every batch: contrastive loss (negatives from every
process; gradient caching when ``mini_batch_size`` is set), update, and every ``eval_steps`` the STS-B dev Spearman,
alignment and uniformity, the best model kept, a checkpoint written (Accelerate's ``save_state`` / ``load_state``).
At the end the best model (by STS-B dev, as in the paper) is exported with its public settings
(``train_config.yaml``), card data (``simcse_card.json``), model card (``README.md``) and ``training_log.jsonl``.

The output folder changes in one step. While a run is in progress everything it writes is under
``output_dir/checkpoints/`` (``step-NNNNNNN/`` checkpoints, ``best-model/``, the log, the tracker logs), beside an
earlier finished model, which stays untouched until the new model is complete. The export is written to
``checkpoints/.export-tmp`` and renamed ``checkpoints/export`` once whole; only then are the earlier run's files
moved aside and the new ones moved in (``config.json`` last), and ``checkpoints/`` removed. A kill at any moment
leaves either a finished model, a run that ``--resume`` continues from its newest whole checkpoint, or a whole export
that the next run in the folder moves in. Resuming loads Accelerate's state, which holds pickled Python objects (the
RNG states): only resume runs you made.
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
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator, DataLoaderConfiguration
from accelerate.state import AcceleratorState, GradientState
from accelerate.utils import broadcast_object_list, is_tensorboard_available, set_seed
from safetensors.torch import load_file
from torch.utils.data import ConcatDataset, DataLoader
from tqdm.auto import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm
from transformers import DataCollatorForLanguageModeling, get_linear_schedule_with_warmup

from simcse_hub.card import SimCSEModelCardData, format_before_after, format_memory, hub_id, is_hand_written_card
from simcse_hub.config import RESUMABLE_CHANGES, ConfigError, TrainConfig, read_yaml
from simcse_hub.data import (
    Examples,
    SimCSECollator,
    SourceBatchSampler,
    load_hub_examples,
    read_examples,
    resolve_train_file,
)
from simcse_hub.evaluation import TaskUnavailableError, default_data_dir, evaluate_model, load_sts_task
from simcse_hub.inference import (
    ModelNotFoundError,
    encode_sentences,
    public_model_name,
    resolve_model,
    saved_max_seq_length,
)
from simcse_hub.losses import SimCSELoss
from simcse_hub.modeling.formats_simcse import non_finite_weights, public_name
from simcse_hub.modeling.modeling_simcse import SimCSEModel
from simcse_hub.postprocess import FLOW_FILE, WHITENING_FILE, Whitening
from simcse_hub.speed import TrainingForward, cached_backward, resolve_precision

logger = logging.getLogger(__name__)

SETTINGS_FILE, LOG_FILE, STEP = "train_config.yaml", "training_log.jsonl", "step-"
# What the run and `simcse-hub evaluate` write beside the model (kept when resave_model replaces the model).
RUN_RECORDS = frozenset({SETTINGS_FILE, LOG_FILE, "runs", "simcse_card.json", "README.md", "align_uniform.png",
                         "simcse_training.json", "eval_results.json"})
# What a finished run holds (the files save_pretrained writes for any encoder family, and the records): moved aside
# when the next run's model replaces it; the user's other files stay.
RUN_FILES = RUN_RECORDS | {
    "config.json", "model.safetensors", "model.safetensors.index.json", "modules.json", "sentence_bert_config.json",
    "config_sentence_transformers.json", "1_Pooling", "modeling_simcse.py", "configuration_simcse.py",
    "heads_simcse.py", "formats_simcse.py", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
    "added_tokens.json", "vocab.txt", "vocab.json", "merges.txt", "spiece.model", "sentencepiece.bpe.model",
    "chat_template.jinja", WHITENING_FILE, FLOW_FILE}


class TrainingDiverged(RuntimeError):
    """The run cannot end in a useful model: its loss or weights became NaN or infinite, or it did not learn (the
    loss never changed, or the weights did not move); the message names the update and the settings to look at."""


def save_model(model: SimCSEModel, output_dir: str | os.PathLike, tokenizer: Any = None,
               max_seq_length: int | None = None) -> Path:
    """Save ``model`` (and its tokenizer) so that every loader understands the folder: ``model.save_pretrained``
    (``AutoModel`` with remote code, ``SentenceTransformer`` and ``simcse_hub.SimCSE`` give the same embeddings).

    Args:
        model (`SimCSEModel`): the model; an Accelerate-wrapped model must be unwrapped first.
        output_dir (`str` or `os.PathLike`): the folder, created if needed. Files of the same names are replaced.
        tokenizer (`PreTrainedTokenizerBase`, *optional*, defaults to ``model.tokenizer``): saved beside the weights.
        max_seq_length (`int`, *optional*): the truncation length sentence-transformers uses.

    Raises:
        ValueError: a weight holds NaN or inf (nothing is written).

    >>> save_model(model, "outputs/my-simcse", tokenizer)  # doctest: +SKIP
    """
    if not isinstance(model, SimCSEModel):
        raise TypeError(f"save_model expects a SimCSEModel, got {type(model).__name__} (unwrap it first).")
    model.save_pretrained(output_dir, tokenizer=tokenizer, max_seq_length=max_seq_length)
    return Path(output_dir)


def resave_model(folder: str | os.PathLike, whitening: Whitening | None = None) -> Path:
    """Replace the model of the SimCSE folder ``folder`` by the same model with ``whitening`` inside (or none), in
    the steps of a run's export (:meth:`OutputFolder.commit`: written aside, ``config.json`` last, each step
    repeatable after a kill); the folder's other files stay, but ``whitening.safetensors`` and ``flow.safetensors``
    (fitted on the raw embeddings) go.

    >>> resave_model("outputs/my-simcse", Whitening().fit(corpus_embeddings, k=256))  # doctest: +SKIP
    """
    output = OutputFolder(folder)
    model = SimCSEModel.from_pretrained(output.path)
    model.whitening, model.config.whitening_dim = None, None
    if whitening is not None:
        whitening.apply_to(model)
    max_seq_length = saved_max_seq_length(str(output.path))
    kept_work, export = output.work.exists(), output.work / "export"
    remove_tree(export)
    save_model(model, export, max_seq_length=max_seq_length)
    for item in output.path.iterdir():  # what the run and evaluation wrote beside the model travels with it
        if item.name in RUN_RECORDS:
            (shutil.copytree if item.is_dir() else shutil.copy2)(item, export / item.name)
    output.commit(keep_checkpoints=kept_work)
    return output.path


# ---------------------------------------------------------------------------------------------------- the output folder


@dataclass
class TrainState:
    """Where the run is, saved in every checkpoint (``accelerator.register_for_checkpointing``): updates done, the
    epoch and the batches of it already used, the best STS-B dev Spearman so far and its update, the seconds of
    training over all sessions, the starting encoder's metrics (``before``) and the best evaluation's."""

    global_step: int = 0
    epoch: int = 0
    batches_in_epoch: int = 0
    best_step: int | None = None
    best_score: float | None = None
    runtime: float = 0.0
    before: dict[str, float] | None = None
    best_metrics: dict[str, float] | None = None
    start_weights: tuple[float, float] | None = None  # sum and sum of squares of the trained weights at update 0
    loss_range: tuple[float, float] | None = None  # the lowest and highest update loss so far

    def state_dict(self) -> dict[str, Any]:
        return asdict(self)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)


def remove_tree(path: Path) -> None:
    """Delete the folder ``path`` by renaming it to a hidden name first (one atomic step), then removing that; a
    kill during the removal leaves a ``.deleting-*`` folder that the next run removes."""
    if path.exists():
        doomed = path.with_name(f".deleting-{path.name}-{os.getpid()}-{time.monotonic_ns()}")
        os.replace(path, doomed)
        shutil.rmtree(doomed, ignore_errors=True)


def _swap_in(tmp: Path, target: Path) -> None:
    """Put the complete folder ``tmp`` at ``target``, replacing it (``OutputFolder.recover`` undoes a kill between
    the two renames)."""
    if target.exists():
        old = target.with_name(f".old-{target.name}")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(target, old)
    os.replace(tmp, target)
    shutil.rmtree(target.with_name(f".old-{target.name}"), ignore_errors=True)


class OutputFolder:
    """The output folder of a run: what it holds, the one command that works from there, and its changes, each in
    one step (see the module docstring). Every method that writes runs on the main process only."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self.work = self.path / "checkpoints"

    @property
    def finished(self) -> bool:
        """Whether the folder holds an exported model (a run that finished)."""
        return (self.path / "config.json").is_file()

    def checkpoints(self, warn: bool = False) -> list[Path]:
        """The whole checkpoints of the run in progress, oldest first (a checkpoint folder appears by one rename
        once complete; one without its settings file is not one, and is skipped with a warning if ``warn``)."""
        found = [p for p in self.work.glob(f"{STEP}*") if p.is_dir() and p.name[len(STEP):].isdigit()]
        for path in found:
            if warn and not (path / SETTINGS_FILE).is_file():
                logger.warning("Skipping checkpoint %s: it has no %s (it was not completely written).", path,
                               SETTINGS_FILE)
        return sorted((p for p in found if (p / SETTINGS_FILE).is_file()), key=lambda p: int(p.name[len(STEP):]))

    def recover(self) -> bool:
        """Finish what a kill interrupted: move in a whole export, undo a half swap of a folder, remove leftovers of
        a clean-up. Returns whether a finished run was moved in."""
        for old in self.work.glob(".old-*"):  # killed between the two renames of _swap_in
            if not old.with_name(old.name[len(".old-"):]).exists():
                os.replace(old, old.with_name(old.name[len(".old-"):]))
        moved = (self.work / "export").is_dir()
        if moved:
            self.commit(keep_checkpoints=False)
        for leftover in [*self.path.glob(".deleting-*"), *self.work.glob(".deleting-*")]:
            shutil.rmtree(leftover, ignore_errors=True)
        return moved

    def checkpoint_to_resume(self, config: TrainConfig, resume: str | None) -> Path | None:
        """Check that the run may start here as asked: the checkpoint to resume from (`None` for a fresh start), or a
        `ConfigError` naming the one command that works."""
        here, found = str(self.path), self.checkpoints(warn=resume == "latest")
        if resume is None:
            if config.overwrite_output_dir or not (self.finished or self.work.exists()):
                return None
            if found:
                raise ConfigError(f"output_dir={here!r} holds an interrupted run (checkpoint {found[-1].name}); "
                                  "continue it with --resume, or start afresh with --overwrite-output-dir.")
            if self.finished:
                raise ConfigError(f"output_dir={here!r} holds a finished model; to train again, replace it with "
                                  "--overwrite-output-dir, or choose another --output-dir.")
            raise ConfigError(f"output_dir={here!r} holds an interrupted run with no checkpoint to continue from; "
                              "start afresh with --overwrite-output-dir, or choose another --output-dir.")
        if config.overwrite_output_dir:
            raise ConfigError("--resume continues the run in output_dir and --overwrite-output-dir replaces it; "
                              "pass one of them.")
        if resume != "latest":
            checkpoint = Path(resume)
            if not (checkpoint / SETTINGS_FILE).is_file():
                raise ConfigError(f"--resume {resume}: not a whole simcse_hub checkpoint (no {SETTINGS_FILE}); "
                                  f"expected a folder such as {self.work / (STEP + '0000125')}.")
        elif found:
            checkpoint = found[-1]
        elif self.finished and not self.work.exists():
            raise ConfigError(f"--resume: the run in {here!r} finished, so there is nothing to continue; to train "
                              "again, pass --overwrite-output-dir instead of --resume.")
        else:
            raise ConfigError(f"--resume: no whole checkpoint in {self.work} (checkpoints come every save_steps "
                              "updates); start afresh with --overwrite-output-dir instead of --resume.")
        before = read_yaml(checkpoint / SETTINGS_FILE)
        changed = [f"{key}: {before.get(key)!r} -> {value!r}" for key, value in config.to_dict().items()
                   if key not in RESUMABLE_CHANGES and before.get(key) != value]
        if changed:
            raise ConfigError("--resume needs the settings the run started with; changed: " + "; ".join(changed))
        return checkpoint

    def start(self, resuming: bool) -> None:
        """Make ``checkpoints/`` this run's (called once the first update has succeeded, so a run that fails its
        checks or its first step leaves the folder as it was): a fresh run removes an earlier run's checkpoints."""
        if not resuming:
            remove_tree(self.work)
        self.work.mkdir(parents=True, exist_ok=True)

    def save_checkpoint(self, accelerator: Accelerator, config: TrainConfig, step: int) -> None:
        """Accelerate's state and the run's settings as ``checkpoints/step-NNNNNNN``, written aside and renamed once
        whole; the newest ``save_total_limit`` are kept. All processes call this."""
        # ours: Accelerate's automatic checkpoint naming deletes the oldest checkpoint before writing the new one in
        # place, so a kill during save_state with total_limit=1 leaves no whole checkpoint.
        tmp = self.work / f".tmp-{STEP}{step:07d}"
        if accelerator.is_main_process:
            shutil.rmtree(tmp, ignore_errors=True)
        accelerator.wait_for_everyone()
        accelerator.save_state(str(tmp))
        accelerator.wait_for_everyone()
        if accelerator.is_main_process:
            config.save_yaml(tmp / SETTINGS_FILE)
            _swap_in(tmp, self.work / f"{STEP}{step:07d}")
            for old in self.checkpoints()[:-config.save_total_limit]:
                remove_tree(old)
        accelerator.wait_for_everyone()

    def commit(self, keep_checkpoints: bool) -> None:
        """Replace the earlier run's files by the whole export in ``checkpoints/export`` (each step repeatable after
        a kill: the earlier files go to ``checkpoints/.replacing``, renamed ``.replaced`` once all are there; the new
        ones follow, ``config.json`` last); then remove ``checkpoints/`` unless ``keep_checkpoints``."""
        export, replaced = self.work / "export", self.work / ".replaced"
        keep_readme = is_hand_written_card(self.path / "README.md")
        if not replaced.exists():
            replacing = self.work / ".replacing"
            replacing.mkdir(exist_ok=True)
            for item in sorted(self.path.iterdir(), key=lambda p: p.name != "config.json"):
                if item.name in RUN_FILES and not (item.name == "README.md" and keep_readme):
                    os.replace(item, replacing / item.name)
            os.replace(replacing, replaced)
        for item in sorted(export.iterdir(), key=lambda p: p.name == "config.json"):
            if item.name == "README.md" and keep_readme:
                logger.info("Kept the hand-written %s (render the card with `simcse-hub card`).", item.name)
                continue
            os.replace(item, self.path / item.name)
        for item in (export, replaced, *([] if keep_checkpoints else [self.work])):
            remove_tree(item)


class TrainingLog:
    """``checkpoints/training_log.jsonl`` (main process) plus the Accelerate trackers; a resumed run drops the lines
    written after its checkpoint, so the log reads as one run. Every line is valid JSON (non-finite numbers are
    ``null``)."""

    def __init__(self, path: Path, accelerator: Accelerator, truncate_after: int = 0) -> None:
        self.path, self.accelerator = Path(path), accelerator
        if accelerator.is_main_process and self.path.exists():
            kept = []
            for line in self.path.read_text(encoding="utf-8").splitlines():
                with contextlib.suppress(json.JSONDecodeError):  # a line torn by the crash
                    if json.loads(line).get("step", 0) <= truncate_after:
                        kept.append(line)
            self.path.write_text("".join(line + "\n" for line in kept), encoding="utf-8")

    def write(self, record: dict[str, Any]) -> None:
        if self.accelerator.is_main_process:
            finite = {key: value if not isinstance(value, float) or math.isfinite(value) else None
                      for key, value in record.items()}
            with self.path.open("a", encoding="utf-8") as handle:
                handle.write(json.dumps(finite, allow_nan=False) + "\n")
            self.accelerator.log({key: value for key, value in finite.items()
                                  if key != "step" and isinstance(value, (int, float))}, step=record["step"])


# ---------------------------------------------------------------------------------------------------- set-up


def make_accelerator(config: TrainConfig) -> Accelerator:
    """The Accelerator of a run: the CPU unless an accelerator device exists, the precision ``auto`` resolved for
    this machine, the updates counted by the schedule, a seeded data order; then the checks that need the launch."""
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
        project_dir=str(Path(config.output_dir) / "checkpoints" / "runs"),
        step_scheduler_with_optimizer=False,  # the schedule counts updates; we step it once per update
        dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True, data_seed=config.seed),
    )
    if not accelerator.is_main_process:  # one process speaks for all (as in the Accelerate examples)
        logging.getLogger("simcse_hub").setLevel(logging.ERROR)
    if config.batch_size % accelerator.num_processes:
        raise ConfigError(f"batch_size={config.batch_size} must be a multiple of the number of processes "
                          f"({accelerator.num_processes}): each process takes an equal share of the batch.")
    if config.mixed_precision == "auto":
        logger.info("mixed_precision='auto': %s", "bf16 autocast (this CPU computes bfloat16 natively)"
                    if accelerator.mixed_precision == "bf16" else "fp32")
    return accelerator


def trackers(report_to: str) -> str | list[str] | None:
    """Accelerate's ``log_with`` for ``report_to``: ``auto`` is TensorBoard when it is installed."""
    if report_to == "auto":
        return "tensorboard" if is_tensorboard_available() else None
    return None if report_to == "none" else [name.strip() for name in report_to.split(",")]


def load_encoder(config: TrainConfig) -> SimCSEModel:
    """The SimCSE model around ``model_name_or_path`` (a folder, a Hub id, or its installed offline copy), with its
    tokenizer; `ConfigError` when it cannot be loaded or its inputs are shorter than ``max_seq_length``."""
    what = "model_name_or_path"
    try:
        model = SimCSEModel.from_encoder(resolve_model(config.model_name_or_path, what),
                                         pooler_type=config.pooler_type, mlp_only_train=config.mlp_only_train,
                                         temperature=config.temperature,
                                         hard_negative_weight=config.hard_negative_weight, do_mlm=config.do_mlm,
                                         mlm_weight=config.mlm_weight)
    except ModelNotFoundError as error:
        raise ConfigError(str(error)) from None
    except (OSError, ValueError) as error:
        first = (str(error).strip().splitlines() or [type(error).__name__])[0]
        raise ConfigError(f"{what}={config.model_name_or_path!r} is not an encoder AutoModel can load ({first}); "
                          "give a model folder (config.json and weights) or a Hub id.") from None
    if model.tokenizer is None:
        raise ConfigError(f"{what}={config.model_name_or_path!r} has no tokenizer (tokenizer_config.json); training "
                          "needs one beside the encoder's weights.")
    limit = model.config.max_input_length
    if limit is not None and config.max_seq_length > limit:
        raise ConfigError(f"max_seq_length={config.max_seq_length} exceeds what the encoder accepts ({limit} tokens, "
                          f"its position embeddings); use --max-seq-length {limit} or less (the paper uses 32).")
    model.config.base_model_name_or_path = model.config.encoder_config._name_or_path = public_model_name(
        config.model_name_or_path)
    if config.pooler_type != "cls":
        model.mlp.requires_grad_(False)  # the MLP head is used by the cls pooler only
    return model


def read_sources(config: TrainConfig, accelerator: Accelerator) -> list[Examples]:
    """The examples of every source: the train files, then the Hub datasets (read before the encoder loads, so a
    wrong file is named at once)."""
    with accelerator.main_process_first():  # the main process writes the Arrow cache, the others read it
        sources = [read_examples(resolve_train_file(path), config.columns, config.max_train_samples)
                   for path in config.train_files()]
        return sources + [load_hub_examples(name, config.dataset_split, config.dataset_config_name, files,
                                            config.columns, config.max_train_samples)
                          for name, files in config.hub_datasets()]


def make_loader(config: TrainConfig, sources: list[Examples], tokenizer: Any, accelerator: Accelerator) -> DataLoader:
    """The shuffled loader of the sources: each process takes ``batch_size / num_processes`` examples per batch, in an
    order of its own seed (the global RNG, which draws dropout, is kept out of it). With several sources (or a source
    weight), every batch comes from one source."""
    collator = SimCSECollator(tokenizer, config.max_seq_length)
    local_batch = config.batch_size // accelerator.num_processes
    generator = torch.Generator().manual_seed(config.seed)
    if len(sources) == 1 and config.source_weights is None:
        loader = DataLoader(sources[0].dataset, batch_size=local_batch, shuffle=True, collate_fn=collator,
                            generator=generator)
    else:
        try:
            sampler = SourceBatchSampler([len(examples) for examples in sources], local_batch,
                                         accelerator.num_processes, config.source_weights, config.sampling, config.seed)
        except ValueError as error:
            raise ConfigError(f"{error} (sources, in order: {', '.join(map(public_name, config.sources()))})") \
                from None
        loader = DataLoader(ConcatDataset([examples.dataset for examples in sources]), batch_sampler=sampler,
                            collate_fn=collator, generator=generator)
        logger.info("%d sources, %s sampling: %s batches per epoch", len(sources), config.sampling,
                    " + ".join(map(str, sampler.batches_per_source())))
    for examples in sources:
        logger.info("%d %s examples from %s (%d skipped: empty sentence)", len(examples),
                    "supervised" if examples.supervised else "unsupervised", public_name(examples.source),
                    examples.skipped)
    return loader


def find_eval_data(config: TrainConfig, accelerator: Accelerator) -> Path | None | bool:
    """The data folder to read STS-B dev from (``data_dir``, ``$SIMCSE_DATA_DIR``, ``../shared/data``, or `None`:
    the Hub), or `False` when it cannot be read; the main process decides, and says why evaluation is skipped."""
    if config.data_dir is not None and not Path(config.data_dir).is_dir():
        raise ConfigError(f"data_dir={config.data_dir!r} is not a folder (expected one holding stsb/dev.tsv.gz); fix "
                          "the path, or set eval_steps=0 to train without evaluation.")
    data_dir = Path(config.data_dir) if config.data_dir is not None else default_data_dir()
    available = None
    if accelerator.is_main_process:
        try:
            available = bool(load_sts_task("STSBenchmark", data_dir, split="dev"))
        except TaskUnavailableError as error:
            logger.warning("Skipping evaluation: no STS-B dev set (%s). The last model is exported.", error)
            available = False
        except (ValueError, OSError) as error:
            raise ConfigError(f"{error} (the STS-B dev set of data_dir; set eval_steps=0 to train without "
                              "evaluation)") from None
    return data_dir if broadcast_object_list([available])[0] else False


# ---------------------------------------------------------------------------------------------------- the loop


def train(config: TrainConfig, resume: str | None = None,
          on_evaluate: Callable[[int, dict[str, float]], None] | None = None) -> Path:
    """Train a SimCSE model as ``config`` says and export it to ``config.output_dir``; returns that folder, which loads
    with ``AutoModel``, ``SentenceTransformer`` and ``simcse_hub.SimCSE``.

    Every check (settings, output folder, encoder, tokenizer, data, evaluation data) comes before anything is
    written, and an earlier model in ``output_dir`` is replaced only by a complete new one.

    Args:
        config (`TrainConfig`): the settings (validated here).
        resume (`str`, *optional*): ``"latest"`` or a checkpoint folder: continue an interrupted run exactly.
        on_evaluate (`Callable[[int, dict], None]`, *optional*): called with (update, metrics) after each periodic
            evaluation, on every process; raising stops the run (``tune`` prunes so).

    Raises:
        ConfigError: a setting, the output folder, the encoder or the data is not usable (nothing was written).
        TrainingDiverged: the loss or the weights became non-finite, or the run did not learn (nothing exported).
    """
    config.validate()
    accelerator = make_accelerator(config)
    output = OutputFolder(config.output_dir)
    if broadcast_object_list([accelerator.is_main_process and output.recover()])[0] and resume:
        logger.info("The interrupted run's export was whole: moved it into %s.", output.path)
        return output.path
    checkpoint = output.checkpoint_to_resume(config, resume)
    set_seed(config.seed)
    run = setup(config, accelerator, checkpoint, output, on_evaluate)
    state, model = run.state, run.model
    logger.info("Training %d updates (%d epochs) with a global batch of %d on %d process(es) into %s", run.max_steps,
                run.epochs, config.batch_size, accelerator.num_processes, output.path)
    run.progress = tqdm(total=run.max_steps, initial=state.global_step, desc="training",
                        disable=not accelerator.is_local_main_process)
    model.train()
    with logging_redirect_tqdm():
        while state.global_step < run.max_steps and state.epoch < run.epochs:
            run.loader.set_epoch(state.epoch)
            batches = accelerator.skip_first_batches(run.loader, state.batches_in_epoch) \
                if state.batches_in_epoch else run.loader  # resumed in the middle of this epoch
            for batch in batches:
                with accelerator.accumulate(model):
                    loss = training_step(accelerator, model, batch, config, run.masker)
                    if accelerator.sync_gradients and config.max_grad_norm is not None:
                        accelerator.clip_grad_norm_(model.parameters(), config.max_grad_norm)
                    run.optimizer.step()
                    run.optimizer.zero_grad()
                state.batches_in_epoch += 1
                run.meter.add(loss / config.gradient_accumulation_steps)
                if accelerator.sync_gradients and after_update(run, config):
                    break
            else:
                state.epoch, state.batches_in_epoch = state.epoch + 1, 0
    run.progress.close()
    check_learned(accelerator.unwrap_model(model).model, state, config, output)
    finish(run, config)
    return output.path


@dataclass
class Run:
    """What a training run holds between its updates."""

    accelerator: Accelerator
    model: Any  # the prepared TrainingForward
    tokenizer: Any
    optimizer: torch.optim.Optimizer
    scheduler: Any
    loader: DataLoader
    sources: list[Examples]
    state: TrainState
    output: OutputFolder
    max_steps: int
    epochs: int
    eval_dir: Path | None | bool
    masker: DataCollatorForLanguageModeling | None
    on_evaluate: Callable[[int, dict[str, float]], None] | None
    resuming: bool
    meter: Meter | None = None
    log: TrainingLog | None = None  # opens once the first update has succeeded
    progress: Any = None


def setup(config: TrainConfig, accelerator: Accelerator, checkpoint: Path | None, output: OutputFolder,
          on_evaluate: Callable | None) -> Run:
    """Model, data, optimizer and schedule (what is prepared, and DDP wraps, is a step's forward), the run's state
    (loaded from ``checkpoint``: weights, optimizer, schedule, RNG, where we were in the data), the STS-B dev data
    and the starting encoder's evaluation."""
    sources = read_sources(config, accelerator)
    model = load_encoder(config)
    tokenizer = model.tokenizer
    loader = make_loader(config, sources, tokenizer, accelerator)
    eval_dir = find_eval_data(config, accelerator) if config.eval_steps else False
    try:  # BERT's 80/10/10 masking of the MLM inputs, by transformers
        masker = DataCollatorForLanguageModeling(tokenizer, mlm_probability=config.mlm_probability) \
            if config.do_mlm else None
    except ValueError as error:
        raise ConfigError(f"do_mlm=True needs a tokenizer with a mask token ({error})") from None
    optimizer = make_optimizer(model, config, accelerator)
    per_epoch = math.ceil(math.ceil(len(loader) / accelerator.num_processes) / config.gradient_accumulation_steps)
    max_steps = config.max_steps or config.num_train_epochs * per_epoch
    scheduler = get_linear_schedule_with_warmup(optimizer, round(config.warmup_ratio * max_steps), max_steps)
    prepared = accelerator.prepare(TrainingForward(model, config.length_buckets, config.fast_dropout), optimizer,
                                   loader, scheduler)
    state = TrainState()
    accelerator.register_for_checkpointing(state)
    if checkpoint is not None:
        accelerator.load_state(str(checkpoint))
        logger.info("Resumed from %s at update %d (epoch %d, batch %d)", checkpoint, state.global_step, state.epoch,
                    state.batches_in_epoch)
    run = Run(accelerator, prepared[0], tokenizer, prepared[1], prepared[3], prepared[2], sources, state, output,
              max_steps, math.ceil(max_steps / per_epoch), eval_dir, masker, on_evaluate, checkpoint is not None)
    state.start_weights = state.start_weights or weight_sums(model)
    if eval_dir is not False and state.before is None:  # the starting encoder, for the card's before/after
        state.before = evaluate(accelerator, run.model, tokenizer, config, eval_dir)
        logger.info("before training: %s", format_metrics(state.before))
    run.meter = Meter(state.runtime, accelerator.device)
    return run


def after_update(run: Run, config: TrainConfig) -> bool:
    """What follows an update: the schedule, the loss checked, logged, and when due an evaluation (the best model
    kept) and a checkpoint. Returns whether the run is done."""
    accelerator, state = run.accelerator, run.state
    run.scheduler.step()
    state.global_step += 1
    step, done, loss = state.global_step, state.global_step >= run.max_steps, run.meter.close_update()
    if not math.isfinite(loss):
        raise diverged(f"the loss is {loss}", step, config, run.output)
    state.loss_range = (min(loss, *state.loss_range[:1]), max(loss, *state.loss_range[1:])) if state.loss_range \
        else (loss, loss)
    if run.log is None:
        run.log = open_log(run.output, accelerator, config, state, run.resuming)
    run.progress.update(1)
    if step % config.logging_steps == 0 or done:
        mean_loss, speed = run.meter.report(accelerator)
        run.progress.set_postfix(loss=f"{mean_loss:.4g}")
        run.log.write({"step": step, "epoch": round(state.epoch + state.batches_in_epoch / len(run.loader), 4),
                       "loss": mean_loss, "learning_rate": run.scheduler.get_last_lr()[0],
                       "updates_per_second": round(speed, 4)})
    with run.meter.paused():  # evaluations and checkpoints are left out of the speed
        if run.eval_dir is not False and (step % config.eval_steps == 0 or done):
            evaluate_and_keep_best(run, config)
        if step % (config.save_steps or config.eval_steps or run.max_steps) == 0 and not done:
            check_weights(accelerator.unwrap_model(run.model).model, step, config, run.output)
            state.runtime = run.meter.runtime()
            run.output.save_checkpoint(accelerator, config, step)
    return done


def make_optimizer(model: SimCSEModel, config: TrainConfig, accelerator: Accelerator) -> torch.optim.Optimizer:
    """AdamW without weight decay on biases and LayerNorm weights; fused (one kernel per parameter group)."""
    params = [p for p in model.parameters() if p.requires_grad]
    return torch.optim.AdamW([{"params": [p for p in params if p.dim() >= 2], "weight_decay": config.weight_decay},
                              {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}],
                             lr=config.learning_rate, fused=accelerator.device.type in ("cpu", "cuda"))


class Meter:
    """Losses and speed of the updates since the last log line, evaluations and checkpoints left out of the speed
    (:meth:`paused`); ``runtime`` counts every second of the run, over sessions."""

    def __init__(self, runtime_before: float, device: torch.device) -> None:
        self.device, self.session_start, self.runtime_before = device, time.perf_counter(), runtime_before
        self.window_start, self.pause, self.window = time.perf_counter(), 0.0, []
        self.update_loss = torch.zeros((), device=device)

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


def open_log(output: OutputFolder, accelerator: Accelerator, config: TrainConfig, state: TrainState,
             resuming: bool) -> TrainingLog:
    """Make ``checkpoints/`` this run's (the first update of this session has succeeded), then open the log (with the
    starting encoder's evaluation as update 0 of a fresh run) and the trackers."""
    if accelerator.is_main_process:
        output.start(resuming)
    accelerator.wait_for_everyone()
    log = TrainingLog(output.work / LOG_FILE, accelerator, truncate_after=state.global_step - 1)
    if state.before is not None and not resuming:
        log.write({"step": 0, **state.before})
    flat = {key: ",".join(map(str, value)) if isinstance(value, list) else "none" if value is None else value
            for key, value in config.to_dict().items()}  # TensorBoard's hparams take no lists or None
    accelerator.init_trackers("simcse", config=flat)
    return log


def evaluate_and_keep_best(run: Run, config: TrainConfig) -> dict[str, float]:
    """STS-B dev, alignment and uniformity now; the model is kept as ``checkpoints/best-model`` when it is the best
    (written aside and swapped in). ``on_evaluate(update, metrics)`` is called last."""
    accelerator, state, step = run.accelerator, run.state, run.state.global_step
    metrics = evaluate(accelerator, run.model, run.tokenizer, config, run.eval_dir)
    run.log.write({"step": step, **metrics})
    if state.best_score is None or metrics["stsb_dev_spearman"] > state.best_score:
        state.best_step, state.best_score, state.best_metrics = step, metrics["stsb_dev_spearman"], metrics
        if accelerator.is_main_process:
            simcse = accelerator.unwrap_model(run.model).model
            check_weights(simcse, step, config, run.output)
            tmp = run.output.work / ".tmp-best-model"
            shutil.rmtree(tmp, ignore_errors=True)
            with without_mlm_head(simcse):
                save_model(simcse, tmp, run.tokenizer)
            _swap_in(tmp, run.output.work / "best-model")
    logger.info("update %d: %s (best STS-B dev %.2f at update %d)", step, format_metrics(metrics), state.best_score,
                state.best_step)
    if run.on_evaluate is not None:
        run.on_evaluate(step, metrics)
    return metrics


def format_metrics(metrics: dict[str, float]) -> str:
    return (f"STS-B dev Spearman {metrics['stsb_dev_spearman']:.2f}, alignment {metrics['alignment']:.4f}, "
            f"uniformity {metrics['uniformity']:.4f}, mean cosine {metrics['mean_cosine']:.4f}")


def diverged(what: str, step: int, config: TrainConfig, output: OutputFolder) -> TrainingDiverged:
    """The error that stops a run whose loss or weights became non-finite, naming the settings to look at."""
    suspects = [f"learning_rate={config.learning_rate:g}"]
    suspects += [f"temperature={config.temperature:g}"] if config.temperature < 0.01 else []
    suspects += [f"hard_negative_weight={config.hard_negative_weight:g}"] if abs(config.hard_negative_weight) > 10 \
        else []
    suspects += ["mixed_precision='fp16' (overflow; try bf16 or no)"] if config.mixed_precision == "fp16" else []
    suspects += ["max_grad_norm=null (no clipping)"] if config.max_grad_norm is None else []
    found = output.checkpoints()
    kept = (f"the last good checkpoint, {found[-1]}, is kept (fix the setting, then start afresh with "
            "--overwrite-output-dir)") if found else "no checkpoint was written"
    earlier = "; the earlier model in output_dir is untouched" if output.finished else ""
    what = what if "exported nothing" in what else f"{what}, so the run stopped and exported nothing"
    return TrainingDiverged(f"update {step}: {what}; {kept}{earlier}. Look at {', '.join(suspects)}.")


def check_weights(model: SimCSEModel, step: int, config: TrainConfig, output: OutputFolder) -> None:
    """Refuse to keep non-finite weights: a checkpoint or best model is only written while every weight is finite."""
    problem = non_finite_weights(model)
    if problem is not None:
        raise diverged(f"the weights became non-finite ({problem})", step, config, output)


def weight_sums(model: SimCSEModel) -> tuple[float, float]:
    """The sum and the sum of squares (float64) of the weights being trained: two numbers that any update moves."""
    weights = [p.detach().double() for p in model.parameters() if p.requires_grad]
    return float(sum(w.sum() for w in weights)), float(sum(w.square().sum() for w in weights))


def check_learned(model: SimCSEModel, state: TrainState, config: TrainConfig, output: OutputFolder) -> None:
    """Refuse to export a run that did not learn: the loss of every update the same, or the weights where they
    started (to float64 precision of their sums)."""
    low, high = state.loss_range or (0.0, 0.0)
    if state.global_step >= 2 and high - low <= 1e-7 * max(abs(high), 1.0):
        raise diverged(f"the loss stayed at {high:.6g} for all {state.global_step} updates, so the run learned nothing "
                       "and exported nothing", state.global_step, config, output)
    if state.start_weights is not None and weight_sums(model) == state.start_weights:
        raise diverged("the weights did not move, so the run learned nothing and exported nothing", state.global_step,
                       config, output)


@contextlib.contextmanager
def without_mlm_head(model: SimCSEModel):
    """The model as it is exported: the auxiliary MLM head (``do_mlm``) is for training only, as in the paper's
    released models, so it is taken off (and put back on leaving the block)."""
    head, do_mlm = model.lm_head, model.config.do_mlm
    model.lm_head, model.config.do_mlm = None, False
    try:
        yield model
    finally:
        model.lm_head, model.config.do_mlm = head, do_mlm


def finish(run: Run, config: TrainConfig) -> None:
    """On the main process, close the trackers, export the best model (or the last one, without evaluation) with its
    settings, log and card into ``checkpoints/export`` (written aside, renamed once whole) and move it in; print
    what the run changed."""
    accelerator, output, state = run.accelerator, run.output, run.state
    state.runtime = run.meter.runtime()
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        for tracker in accelerator.trackers:  # their files are complete before they move into the export
            tracker.finish()
        tmp = output.work / ".export-tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        with without_mlm_head(accelerator.unwrap_model(run.model).model) as final:
            if state.best_step is not None:
                final.load_state_dict(load_file(output.work / "best-model" / "model.safetensors"))
                logger.info("Exporting the best model: update %d, STS-B dev Spearman %.2f", state.best_step,
                            state.best_score)
            check_weights(final, state.global_step, config, output)
            save_model(final, tmp, run.tokenizer)
        config.save_yaml(tmp / SETTINGS_FILE, public=True)
        for name in (LOG_FILE, "runs"):
            if (output.work / name).exists():
                shutil.move(output.work / name, tmp / name)
        card = SimCSEModelCardData.from_folder(tmp)
        card.update(training_card_data(config, run.sources, accelerator, state), source="the training run")
        card.save(tmp)
        os.replace(tmp, output.work / "export")  # the export is whole
        output.commit(config.keep_checkpoints)
        logger.info("Saved the model and its card (README.md) to %s", output.path)
        if card.before_after:  # what the run changed, in the words of the paper
            accelerator.print(format_before_after(card.before_after))
    accelerator.wait_for_everyone()
    accelerator.end_training()
    accelerator.print(f"Model saved to {output.path.resolve()}")


def training_card_data(config: TrainConfig, sources: list[Examples], accelerator: Accelerator,
                       state: TrainState) -> dict:
    """What the model card records of this run (the training fields of ``simcse_card.json``): public names only."""
    datasets = [{"name": Path(path.removeprefix("package:")).name.removesuffix(".gz").rsplit(".", 1)[0],
                 "hub_id": None} for path in config.train_files()]
    datasets += [{"name": Path(files).name.rsplit(".", 1)[0] if files else name, "hub_id": hub_id(name)}
                 for name, files in config.hub_datasets()]
    for dataset, examples in zip(datasets, sources):
        dataset["examples"] = len(examples)
    kinds = {examples.supervised for examples in sources}
    device = torch.cuda.get_device_name(accelerator.device) if accelerator.device.type == "cuda" else "CPU"
    precision = "fp32" if accelerator.mixed_precision == "no" else accelerator.mixed_precision
    hyperparameters = config.public_dict()
    if config.mixed_precision == "auto":  # what "auto" chose on this machine
        hyperparameters["mixed_precision"] = f"auto ({precision})"
    if device == "CPU":
        import resource  # ru_maxrss: bytes on macOS, KiB on Linux

        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * (1024 if sys.platform != "darwin" else 1)
        memory = {"size": peak, "kind": "process resident memory"}
    else:
        memory = {"size": int(torch.cuda.max_memory_allocated(accelerator.device)),
                  "kind": "GPU memory allocated by torch"}
    base_model = public_model_name(config.model_name_or_path)
    pooler = config.pooler_type + (" (MLP in training only)" if config.pooler_type == "cls" and config.mlp_only_train
                                   else "")
    return {
        "base_model": hub_id(base_model), "base_model_name": base_model,
        "objective": "mixed" if len(kinds) > 1 else "supervised" if kinds == {True} else "unsupervised",
        "datasets": datasets, "hyperparameters": hyperparameters,
        "hardware": f"{accelerator.num_processes} x {device} ({precision})",
        "train_runtime_seconds": round(state.runtime, 2), "peak_memory": format_memory(**memory),
        "global_steps": state.global_step, "best_step": state.best_step,
        "best_stsb_dev_spearman": state.best_score, "language": "en", "license": config.license,
        "before_after": None if state.before is None or state.best_metrics is None else {
            "pooler": pooler, "before": state.before, "after": state.best_metrics},
    }


# ---------------------------------------------------------------------------------------------------- one step


def training_step(accelerator: Accelerator, model: torch.nn.Module, batch: dict[str, torch.Tensor],
                  config: TrainConfig, masker: DataCollatorForLanguageModeling | None = None) -> torch.Tensor:
    """Forward and backward of one contrastive batch (no optimizer step); returns the detached loss.

    ``model`` is the prepared :class:`~simcse_hub.speed.TrainingForward` (embeddings in length buckets, and the
    MLM loss, in one call). The InfoNCE loss scores this process's anchors against the positives (and hard
    negatives) of every process (with ``config.symmetric_loss``, also each positive against every anchor, the two
    directions averaged). With ``config.mini_batch_size`` smaller than the local batch, the gradient is computed by
    gradient caching (:func:`simcse_hub.speed.cached_backward`): the same gradient, with the memory of one
    mini-batch. With ``masker`` (transformers' ``DataCollatorForLanguageModeling``: BERT's 80/10/10 masking of
    ``mlm_probability`` of the real tokens, drawn from the global RNG so a resumed run replays it) the MLM loss of
    masked copies of the inputs is added, weighted by ``mlm_weight``.

    >>> with accelerator.accumulate(model):  # doctest: +SKIP
    ...     loss = training_step(accelerator, model, batch, config)
    ...     optimizer.step()
    """
    loss_fn = SimCSELoss.from_config(  # the model's own temperature and hard-negative weight
        accelerator.unwrap_model(model).model.config, gather_across_devices=accelerator.num_processes > 1,
        symmetric=config.symmetric_loss).compute_loss_from_embeddings  # (batch, num_sent, hidden) float32 -> scalar
    total_masked = None
    if masker is not None:
        ids = batch["input_ids"]
        special = torch.isin(ids, torch.tensor(masker.tokenizer.all_special_ids, device=ids.device))
        masked, labels = masker.torch_mask_tokens(ids.cpu().clone(), (special | (batch["attention_mask"] == 0)).cpu())
        batch = {**batch, "mlm_input_ids": masked.to(ids.device), "mlm_labels": labels.to(ids.device)}
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
    loss = loss_fn(embeddings) + (mlm if mlm is not None else 0)
    accelerator.backward(loss)
    return loss.detach()


def evaluate(accelerator: Accelerator, model, tokenizer: Any, config: TrainConfig,
             data_dir: Path | None) -> dict[str, float]:
    """STS-B dev Spearman (x100), alignment and uniformity of the model being trained, computed on the main process
    (in eval mode, with the one encoder of ``simcse_hub.inference``) and shared with the others."""
    metrics = None
    if accelerator.is_main_process:
        simcse = accelerator.unwrap_model(model).model
        simcse.eval()
        try:
            results = evaluate_model(
                lambda sentences: encode_sentences(simcse, tokenizer, sentences, batch_size=config.eval_batch_size),
                config.model_name_or_path, tasks=["STSBenchmark"], data_dir=data_dir, split="dev")
        finally:
            simcse.train()
        metrics = {"stsb_dev_spearman": float(results["tasks"]["STSBenchmark"]["spearman"]),
                   **{name: float(results[name]) for name in ("alignment", "uniformity", "mean_cosine")}}
    return broadcast_object_list([metrics])[0]


__all__ = ["OutputFolder", "TrainState", "TrainingDiverged", "TrainingLog", "evaluate", "load_encoder", "resave_model",
           "save_model", "train", "training_step"]

if __name__ == "__main__":  # what `accelerate launch -m simcse_hub.train` and `torchrun -m simcse_hub.train` run
    from simcse_hub.cli import main

    sys.exit(main(["train", *sys.argv[1:]]))
