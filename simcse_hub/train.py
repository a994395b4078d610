"""Train a SimCSE model with Hugging Face Accelerate, on one CPU, one GPU or many.

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
import logging
import math
import sys
import time
from pathlib import Path

import torch
from accelerate import Accelerator, DataLoaderConfiguration
from accelerate.utils import broadcast_object_list, set_seed
from safetensors.torch import load_file
from torch.utils.data import DataLoader
from tqdm.auto import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm
from transformers import get_linear_schedule_with_warmup

from simcse_hub.batching import TrainingForward
from simcse_hub.encoding import encode_sentences, resolve_precision
from simcse_hub.checkpointing import (
    LOG_FILE,
    SETTINGS_FILE,
    OutputFolder,
    TrainingLog,
    TrainState,
    checkpoints,
    remove_tree,
    save_best_model,
    save_checkpoint,
    without_mlm_head,
)
from simcse_hub.data import (
    Examples,
    SimCSECollator,
    TokenizedDataset,
    load_hub_examples,
    mask_tokens,
    read_examples,
    resolve_train_file,
)
from simcse_hub.export import save_model
from simcse_hub.gradcache import cached_backward
from simcse_hub.loading import ModelNotFoundError, public_model_name, resolve_model
from simcse_hub.losses import SimCSELoss
from simcse_hub.model_card import SimCSEModelCardData, format_before_after, format_memory, hub_id
from simcse_hub.modeling.modeling_simcse import SimCSEModel, non_finite_weights, public_name
from simcse_hub.train_config import ConfigError, TrainConfig

logger = logging.getLogger(__name__)


class TrainingDiverged(RuntimeError):
    """The loss or the weights became NaN or infinite; the message names the update and the settings to look at."""


def train(config: TrainConfig, resume: str | None = None) -> Path:
    """Train a SimCSE model as ``config`` says and export it to ``config.output_dir``.

    Every check (settings, output folder, encoder, tokenizer, data, evaluation data) comes before anything is
    written, and the output folder is only claimed once the first update has succeeded: a run that fails early
    leaves the folder as it was (with ``overwrite_output_dir``, the earlier run is replaced only then).

    Args:
        config (`TrainConfig`): the settings (validated here).
        resume (`str`, *optional*): ``"latest"`` or a checkpoint folder: continue an interrupted run exactly
            (model, optimizer, schedule, data order, RNG).

    Returns:
        `Path`: the output folder, which loads with ``AutoModel``, ``SentenceTransformer`` and ``simcse_hub.SimCSE``.

    Raises:
        ConfigError: a setting, the output folder, the encoder or the data is not usable (nothing was written).
        TrainingDiverged: the loss or the weights became non-finite (nothing was exported).

    >>> train(TrainConfig(train_file="sentences.txt", model_name_or_path="bert-base-uncased"))  # doctest: +SKIP
    """
    config.validate()
    output_dir = Path(config.output_dir)
    accelerator = make_accelerator(config)
    check_setup(config, accelerator)
    output = OutputFolder(output_dir)
    checkpoint = output.checkpoint_to_resume(config, resume)
    set_seed(config.seed)

    # ---- model and data (tokenized once); optimizer and schedule; what is prepared (and under DDP wrapped) is the
    # whole forward of a step
    model = load_encoder(config)
    tokenizer = model.tokenizer
    examples, train_dataloader = load_data(config, tokenizer, accelerator)
    evaluating, eval_dir = find_eval_data(config, accelerator) if config.eval_steps else (False, None)
    optimizer = make_optimizer(model, config, accelerator)
    updates_per_epoch = math.ceil(math.ceil(len(train_dataloader) / accelerator.num_processes)
                                  / config.gradient_accumulation_steps)
    max_steps = config.max_steps or config.num_train_epochs * updates_per_epoch
    num_epochs = math.ceil(max_steps / updates_per_epoch)
    lr_scheduler = get_linear_schedule_with_warmup(optimizer, round(config.warmup_ratio * max_steps), max_steps)
    model, optimizer, train_dataloader, lr_scheduler = accelerator.prepare(
        TrainingForward(model, config.length_buckets, config.fast_dropout), optimizer, train_dataloader, lr_scheduler
    )
    state = TrainState()
    accelerator.register_for_checkpointing(state)
    if checkpoint is not None:  # weights, optimizer, schedule, RNG, and where we were in the data
        accelerator.load_state(str(checkpoint))
        logger.info("Resumed from %s at update %d (epoch %d, batch %d)",
                    checkpoint, state.global_step, state.epoch, state.batches_in_epoch)
    save_steps = config.save_steps or config.eval_steps or max_steps
    if evaluating and state.before is None:  # the starting encoder, for the before/after of the model card
        state.before = evaluate(accelerator, model, tokenizer, config, eval_dir)
        logger.info("before training: %s", format_metrics(state.before))

    # ---- the loop
    logger.info("Training %d updates (%d epochs of %d) with a global batch of %d on %d process(es) into %s",
                max_steps, num_epochs, updates_per_epoch, config.batch_size, accelerator.num_processes, output_dir)
    progress = tqdm(total=max_steps, initial=state.global_step, desc="training",
                    disable=not accelerator.is_local_main_process)
    meter = Meter(state.runtime, accelerator.device)
    log = None  # opened once the first update has succeeded
    model.train()
    with logging_redirect_tqdm():
        for epoch in range(state.epoch, num_epochs):
            train_dataloader.set_epoch(epoch)
            batches = train_dataloader
            if state.batches_in_epoch:  # resumed in the middle of this epoch
                batches = accelerator.skip_first_batches(train_dataloader, state.batches_in_epoch)
            for batch in batches:
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
                step, done = state.global_step, state.global_step >= max_steps
                update_loss = meter.close_update()
                if not math.isfinite(update_loss):
                    raise diverged(f"the loss is {update_loss}", step, config, output_dir)
                if log is None:
                    log = open_output(output, accelerator, config, state, resuming=checkpoint is not None)
                progress.update(1)

                if step % config.logging_steps == 0 or done:
                    mean_loss, speed = meter.report(accelerator)
                    progress.set_postfix(loss=f"{mean_loss:.4g}")
                    log.write({"step": step, "epoch": round(epoch + state.batches_in_epoch / len(train_dataloader), 4),
                               "loss": mean_loss, "learning_rate": lr_scheduler.get_last_lr()[0],
                               "updates_per_second": round(speed, 4)})
                if evaluating and (step % config.eval_steps == 0 or done):
                    with meter.paused():
                        evaluate_and_keep_best(accelerator, model, tokenizer, config, eval_dir, state, log)
                if step % save_steps == 0 and not done:
                    with meter.paused():
                        check_weights(accelerator.unwrap_model(model).model, step, config, output_dir)
                        state.runtime = meter.runtime()
                        save_checkpoint(accelerator, output_dir, step, config.save_total_limit, config)
                if done:
                    break
            else:
                state.epoch, state.batches_in_epoch = epoch + 1, 0
                continue
            break
    progress.close()

    # ---- export the best model (or the last one, without evaluation) with its settings and model card
    state.runtime = meter.runtime()
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        card = export(accelerator.unwrap_model(model).model, tokenizer, config, examples, accelerator, state)
        if card.before_after:  # what the run changed, in the words of the paper
            accelerator.print(format_before_after(card.before_after))
    accelerator.wait_for_everyone()
    accelerator.end_training()
    accelerator.print(f"Model saved to {output_dir.resolve()}")
    return output_dir


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
                           state: TrainState, log: TrainingLog) -> None:
    """STS-B dev, alignment and uniformity now; the model is kept as ``checkpoints/best-model`` when it is the best."""
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


def export(model: SimCSEModel, tokenizer, config: TrainConfig, examples: Examples, accelerator: Accelerator,
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
    card.update(training_card_data(config, examples, accelerator, state), source="the training run")
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

    ``model`` is the prepared :class:`~simcse_hub.batching.TrainingForward` (embeddings in length buckets, and the
    MLM loss, in one call). The InfoNCE loss scores this process's anchors against the positives (and hard
    negatives) of every process. With ``config.mini_batch_size`` smaller than the local batch, the gradient is
    computed by gradient caching (:func:`simcse_hub.gradcache.cached_backward`): the same gradient, with the memory
    of one mini-batch. With ``config.do_mlm`` the MLM loss of masked copies of the inputs is added, weighted by
    ``mlm_weight``.

    >>> with accelerator.accumulate(model):  # doctest: +SKIP
    ...     loss = training_step(accelerator, model, batch, config, tokenizer)
    ...     optimizer.step()
    """

    loss_fn = SimCSELoss.from_config(  # the model's own temperature and hard-negative weight
        accelerator.unwrap_model(model).model.config, gather_across_devices=accelerator.num_processes > 1
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


def evaluate(accelerator: Accelerator, model, tokenizer, config: TrainConfig, data_dir: Path | None) -> dict[str, float]:
    """STS-B dev Spearman (x100), alignment and uniformity of the model being trained, computed on the main process
    (in eval mode, with the one encoder of ``simcse_hub.encoding``) and shared with the others."""
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


def find_eval_data(config: TrainConfig, accelerator: Accelerator) -> tuple[bool, Path | None]:
    """Whether STS-B dev can be read (from ``data_dir``, ``$SIMCSE_DATA_DIR``, ``../shared/data`` or the Hub), and
    the data folder to read it from; the main process decides, and says why when evaluation is skipped."""
    from simcse_hub.sts_data import STSDataError, TaskUnavailableError, default_data_dir, load_sts_task

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


# ---------------------------------------------------------------------------------------------------- setup helpers


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


def load_data(config: TrainConfig, tokenizer, accelerator: Accelerator) -> tuple[Examples, DataLoader]:
    """The examples, tokenized once, and their shuffled loader: each process takes ``batch_size / num_processes``
    examples per batch, in an order of its own seed (the global RNG, which draws dropout, is kept out of it)."""
    with accelerator.main_process_first():
        examples = load_examples(config)
    dataset = TokenizedDataset(examples, tokenizer, config.max_seq_length)
    collator = SimCSECollator(tokenizer.pad_token_id, token_type_ids="token_type_ids" in tokenizer.model_input_names)
    loader = DataLoader(dataset, batch_size=config.batch_size // accelerator.num_processes, shuffle=True,
                        collate_fn=collator, generator=torch.Generator().manual_seed(config.seed))
    logger.info("%d %s examples from %s (%d skipped: empty sentence)", len(dataset),
                "supervised" if examples.supervised else "unsupervised", public_name(examples.source),
                examples.skipped)
    return examples, loader


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


def load_examples(config: TrainConfig) -> Examples:
    if config.train_file is not None:
        return read_examples(resolve_train_file(config.train_file), config.columns, config.max_train_samples)
    return load_hub_examples(config.dataset_name, config.dataset_split, config.dataset_config_name,
                             config.dataset_data_files, config.columns, config.max_train_samples)


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
        flat[key] = ",".join(value) if isinstance(value, list) else ("none" if value is None else value)
    return flat


def training_card_data(config: TrainConfig, examples: Examples, accelerator: Accelerator, state: TrainState) -> dict:
    """What the model card records of this run (the training fields of ``simcse_card.json``): public names only."""
    if config.train_file is not None:
        name = Path(config.train_file.removeprefix("package:")).name.removesuffix(".gz").rsplit(".", 1)[0]
        dataset = {"name": name, "hub_id": None, "examples": len(examples.rows)}
    else:
        files = config.dataset_data_files
        name = Path(files).name.rsplit(".", 1)[0] if files else config.dataset_name
        dataset = {"name": name, "hub_id": hub_id(config.dataset_name), "examples": len(examples.rows)}
    device = torch.cuda.get_device_name(accelerator.device) if accelerator.device.type == "cuda" else "CPU"
    precision = "fp32" if accelerator.mixed_precision == "no" else accelerator.mixed_precision
    hyperparameters = config.public_dict()
    if config.mixed_precision == "auto":  # what "auto" chose on this machine
        hyperparameters["mixed_precision"] = f"auto ({precision})"
    base_model = public_model_name(config.model_name_or_path)
    return {
        "base_model": hub_id(base_model),
        "base_model_name": base_model,
        "objective": "supervised" if examples.supervised else "unsupervised",
        "datasets": [dataset],
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


__all__ = ["TrainState", "TrainingDiverged", "evaluate", "train", "training_step"]

if __name__ == "__main__":  # what `accelerate launch -m simcse_hub.train` and `torchrun -m simcse_hub.train` run
    from simcse_hub.cli import main

    sys.exit(main(["train", *sys.argv[1:]]))
