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
from collections.abc import Callable
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.utils import broadcast_object_list, set_seed
from safetensors.torch import load_file
from tqdm.auto import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm
from transformers import get_linear_schedule_with_warmup

from simcse_hub.batching import TrainingForward, mask_tokens
from simcse_hub.card_values import format_before_after
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
    training_card_data,
    without_mlm_head,
)
from simcse_hub.data import (
    Examples,
)
from simcse_hub.encoding import encode_sentences
from simcse_hub.export import save_model
from simcse_hub.gradcache import cached_backward
from simcse_hub.losses import SimCSELoss
from simcse_hub.model_card import SimCSEModelCardData
from simcse_hub.modeling.formats_simcse import non_finite_weights
from simcse_hub.modeling.modeling_simcse import SimCSEModel
from simcse_hub.train_config import TrainConfig
from simcse_hub.train_setup import (
    check_setup,
    find_eval_data,
    load_data,
    load_encoder,
    make_accelerator,
    make_optimizer,
    tracker_config,
)

logger = logging.getLogger(__name__)


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

    ``model`` is the prepared :class:`~simcse_hub.batching.TrainingForward` (embeddings in length buckets, and the
    MLM loss, in one call). The InfoNCE loss scores this process's anchors against the positives (and hard
    negatives) of every process (with ``config.symmetric_loss``, also each positive against every anchor, the two
    directions averaged). With ``config.mini_batch_size`` smaller than the local batch, the gradient is
    computed by gradient caching (:func:`simcse_hub.gradcache.cached_backward`): the same gradient, with the memory
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


__all__ = ["TrainState", "TrainingDiverged", "evaluate", "train", "training_step"]

if __name__ == "__main__":  # what `accelerate launch -m simcse_hub.train` and `torchrun -m simcse_hub.train` run
    from simcse_hub.cli import main

    sys.exit(main(["train", *sys.argv[1:]]))
