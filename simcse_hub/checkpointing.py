"""The output folder of ``simcse-hub train``: what an existing folder holds, checkpoints that prove they are whole,
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

from simcse_hub.card_values import format_memory, hub_id
from simcse_hub.export import save_model
from simcse_hub.loading import public_model_name
from simcse_hub.train_config import RESUMABLE_CHANGES, ConfigError, TrainConfig

if TYPE_CHECKING:
    from simcse_hub.data import Examples

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
    from simcse_hub.model_card import CARD_MARKER

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


__all__ = [
    "OutputFolder",
    "TrainState",
    "TrainingLog",
    "check_same_settings",
    "checkpoint_problem",
    "checkpoints",
    "remove_tree",
    "save_best_model",
    "save_checkpoint",
    "without_mlm_head",
]


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
