"""Checkpoints, the best model and the training log of ``simcse-hub train``, all written so that a crash at any
moment leaves nothing half-written.

Layout of an output folder during training::

    output_dir/
      train_config.yaml           the settings of the run
      training_log.jsonl          one JSON object per log line (loss, learning rate) and per evaluation
      runs/                       TensorBoard (or other Accelerate tracker) logs
      checkpoints/step-0000250/   Accelerate state: model, optimizer, schedule, RNG, TrainState (resumable)
      checkpoints/best-model/     the best model so far by STS-B dev, exported (loads like the final model)

A checkpoint is written to ``checkpoints/.tmp-step-...`` and renamed once complete (a rename is atomic), so
``--resume`` only ever sees complete checkpoints. At the end the final model is exported to ``output_dir`` itself and
``checkpoints/`` is removed (unless ``keep_checkpoints``).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import yaml
from accelerate import Accelerator

from simcse_hub.export import save_model
from simcse_hub.train_config import RESUMABLE_CHANGES, ConfigError, TrainConfig

CHECKPOINT_PREFIX = "step-"


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
    """

    global_step: int = 0
    epoch: int = 0
    batches_in_epoch: int = 0
    best_step: int | None = None
    best_score: float | None = None
    runtime: float = 0.0

    def state_dict(self) -> dict[str, Any]:
        return asdict(self)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for key, value in state.items():
            setattr(self, key, value)


def checkpoints(output_dir: Path) -> list[Path]:
    """The complete checkpoints of ``output_dir``, oldest first."""
    folder = Path(output_dir) / "checkpoints"
    if not folder.is_dir():
        return []
    found = [path for path in folder.iterdir() if path.name.startswith(CHECKPOINT_PREFIX) and path.is_dir()]
    return sorted(found, key=lambda path: int(path.name[len(CHECKPOINT_PREFIX):]))


def find_checkpoint(output_dir: Path, resume: str) -> Path:
    """The checkpoint to resume from: the newest in ``output_dir`` for ``"latest"``, else the folder ``resume``."""
    if resume == "latest":
        found = checkpoints(output_dir)
        if not found:
            raise ConfigError(f"--resume: no checkpoint in {Path(output_dir) / 'checkpoints'}; the run wrote none yet "
                              "(checkpoints come every save_steps updates). Start without --resume.")
        return found[-1]
    path = Path(resume)
    if not (path / "custom_checkpoint_0.pkl").is_file():
        raise ConfigError(f"--resume {resume}: not a simcse_hub checkpoint folder (expected "
                          f"{Path(output_dir) / 'checkpoints' / (CHECKPOINT_PREFIX + '0000125')} or similar).")
    return path


def prepare_output_dir(output_dir: Path, config: TrainConfig, checkpoint: Path | None, write: bool) -> None:
    """Check that ``output_dir`` fits the run (a fresh run must not mix with an earlier one; a resumed run must have
    the settings it was started with); with ``write``, clear it as asked and save ``train_config.yaml``."""
    earlier = (output_dir / "checkpoints").exists() or (output_dir / "training_log.jsonl").exists()
    saved = output_dir / "train_config.yaml"
    if checkpoint is None and earlier and not config.overwrite_output_dir:
        raise ConfigError(f"output_dir={str(output_dir)!r} holds an earlier run: pass --resume to continue it, "
                          "--overwrite-output-dir to start afresh, or choose another output_dir.")
    if checkpoint is not None and saved.is_file():
        before = yaml.safe_load(saved.read_text(encoding="utf-8")) or {}
        now = config.to_dict()
        changed = [f"{key}: {before.get(key)!r} -> {now[key]!r}" for key in now
                   if key not in RESUMABLE_CHANGES and before.get(key) != now[key]]
        if changed:
            raise ConfigError("--resume needs the settings the run started with; changed: " + "; ".join(changed))
    if not write:
        return
    output_dir.mkdir(parents=True, exist_ok=True)
    for old in (output_dir / "checkpoints").glob(".old-*"):  # a crash between the two renames of _swap_in
        target = old.with_name(old.name[len(".old-"):])
        if not target.exists():
            os.replace(old, target)
    if checkpoint is None and earlier:
        shutil.rmtree(output_dir / "checkpoints", ignore_errors=True)
        shutil.rmtree(output_dir / "runs", ignore_errors=True)
        (output_dir / "training_log.jsonl").unlink(missing_ok=True)
    config.save_yaml(output_dir / "train_config.yaml")


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


def save_checkpoint(accelerator: Accelerator, output_dir: Path, step: int, limit: int) -> Path:
    """Save the Accelerate state (all processes call this) as ``checkpoints/step-NNNNNNN``; keep the newest ``limit``."""
    folder = Path(output_dir) / "checkpoints" / f"{CHECKPOINT_PREFIX}{step:07d}"
    tmp = folder.with_name(f".tmp-{folder.name}")
    if accelerator.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        _swap_in(tmp, folder)
        for old in checkpoints(output_dir)[:-limit]:
            shutil.rmtree(old)
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


class TrainingLog:
    """``training_log.jsonl`` (main process) plus the Accelerate trackers; a resumed run drops the lines written
    after its checkpoint, so the log reads as one run."""

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
            handle.write(json.dumps(record) + "\n")
        values = {key: value for key, value in record.items() if key != "step" and isinstance(value, (int, float))}
        self.accelerator.log(values, step=record["step"])


__all__ = [
    "TrainState",
    "TrainingLog",
    "checkpoints",
    "find_checkpoint",
    "prepare_output_dir",
    "save_best_model",
    "save_checkpoint",
    "without_mlm_head",
]
