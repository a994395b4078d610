"""The record of a ``simcse-hub tune`` search, rewritten after every trial: ``trials.csv`` and ``trials.md`` (one row
per trial: state, score, sampled values, runtime) and ``best_config.yaml`` (the base settings with the best trial's
values, for ``simcse-hub train --config``). Every file is written through a temporary file and a rename."""

from __future__ import annotations

import copy
import csv
import io
import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from simcse_hub.train_config import TrainConfig
    from simcse_hub.tuning import Param, TuneOptions


def write_reports(study, base: TrainConfig, options: TuneOptions, space: dict[str, Param]):
    """Write ``trials.csv``, ``trials.md`` and (once a trial has completed) ``best_config.yaml``; returns the best
    trial, or ``None``."""
    output = Path(options.output_dir)
    trials = sorted(study.trials, key=lambda t: t.number)
    complete = [t for t in trials if t.state.name == "COMPLETE"]
    best = max(complete, key=lambda t: t.value) if complete else None
    names = [n for name, param in space.items() for n in _columns(name, param)]
    scores = ["stsb_dev_spearman"] + (["sickr_dev_spearman"] if options.objective != "stsb" else [])
    header = ["trial", "state", "score", *scores, "updates", *names, "runtime_s"]
    rows = [_row(trial, scores, names) for trial in trials]
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerows([header, *rows])
    write_text(output / "trials.csv", buffer.getvalue())
    counts = {state: sum(t.state.name == state for t in trials) for state in ("COMPLETE", "PRUNED", "FAIL")}
    what = "the best STS-B dev Spearman (x100) of the run" + (
        ", averaged with the exported model's SICK-R trial Spearman" if options.objective != "stsb" else "")
    found = f"Best: trial {best.number} ({best.value:.2f}), in best_config.yaml." if best else "No trial completed."
    start = study.user_attrs.get("start")
    baseline = "" if start is None else (
        f"The starting encoder, untrained, scores {start['score']:.2f} ({_scores(start)}); "
        f"{sum(t.value > start['score'] for t in complete)} of {len(complete)} complete trials beat it.")
    lines = [f"# simcse-hub tune: study `{options.study_name}`", "",
             f"Score: {what}. {len(trials)} trials: {counts['COMPLETE']} complete, {counts['PRUNED']} pruned, "
             f"{counts['FAIL']} failed. {found}", *([baseline] if baseline else []), "",
             "| " + " | ".join(header) + " |", "|" + "|".join("---" if i == 1 else "---:" for i in range(len(header)))
             + "|"]
    for trial, row in zip(trials, rows):
        if best is not None and trial.number == best.number:
            row = [f"**{row[0]}**", *row[1:]]
        lines.append("| " + " | ".join(str(cell) for cell in row) + " |")
    write_text(output / "trials.md", "\n".join(lines) + "\n")
    if best is not None:
        write_best_config(best, base, options, output / "best_config.yaml")
    return best


def _scores(start: dict[str, float]) -> str:
    names = {"stsb_dev_spearman": "STS-B dev", "sickr_dev_spearman": "SICK-R trial"}
    return ", ".join(f"{label} {start[key]:.2f}" for key, label in names.items() if key in start)


def _columns(name: str, param: Param) -> tuple[str, ...]:
    """The Optuna parameters of a searched setting, as table columns."""
    if name == "mlm_weight":
        return ("do_mlm", name)
    if name == "source_weights":
        return tuple(f"source_weight_{i}" for i in range(1, param.count + 1))
    return (name,)


def _row(trial, scores: list[str], names: list[str]) -> list:
    """One trial in the table: number, state, score (complete trials only), STS scores, the update it reached, the
    sampled values (blank when not sampled, e.g. mlm_weight without MLM), seconds."""
    return [trial.number, trial.state.name, _format(trial.value if trial.state.name == "COMPLETE" else None),
            *(_format(trial.user_attrs.get(name)) for name in scores), trial.user_attrs.get("updates", ""),
            *(_format(trial.params.get(name)) for name in names),
            "" if trial.duration is None else f"{trial.duration.total_seconds():.0f}"]


def write_best_config(best, base: TrainConfig, options: TuneOptions, path: Path) -> None:
    """``base`` with the best trial's values, ``output_dir`` set to ``options.best_output_dir``, as a YAML file
    that ``simcse-hub train --config`` reads (written by ``TrainConfig.save_yaml``, a comment line on top)."""
    from simcse_hub.tuning import settings_for

    config = copy.deepcopy(base).update(settings_for(dict(best.params), options), f"trial {best.number}")
    config.update({"output_dir": options.best_output_dir, "overwrite_output_dir": False}, "tune").validate()
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(handle)
    try:
        config.save_yaml(temporary)
        settings = Path(temporary).read_text(encoding="utf-8")
    finally:
        Path(temporary).unlink(missing_ok=True)
    write_text(path, f"# simcse-hub tune, study {options.study_name}: trial {best.number}, score {best.value:.2f}. "
                      "Train with: simcse-hub train --config best_config.yaml\n" + settings)


def _format(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.2f}" if abs(value) >= 1 else f"{value:.3g}"
    return str(value)


def write_text(path: Path, text: str) -> None:
    """Write ``text`` through a temporary file in the same folder, renamed over ``path`` once complete."""
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as file:
            file.write(text)
        os.chmod(temporary, 0o644)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


__all__ = ["write_best_config", "write_reports", "write_text"]
