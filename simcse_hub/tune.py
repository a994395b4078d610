"""Search the settings of SimCSE training with Optuna: ``simcse-hub tune`` (``pip install 'simcse-hub[tune]'``).

Each trial is a normal training run (:func:`simcse_hub.train.train`) into ``OUTPUT_DIR/trials/trial-NNN``: the base
settings (``--preset``, ``--config``, ``--set``, as ``simcse-hub train`` reads them), then the settings for trials
only (``--trial-set``, e.g. a smaller ``max_train_samples``), then the values Optuna samples. After each periodic
STS-B dev evaluation the trial reports the Spearman to Optuna, whose pruner stops a weak trial there (``median``:
below the median of the earlier trials at the same update). A trial's score is the best STS-B dev Spearman of its
run (the model it exports), or with ``objective="stsb+sickr"`` the mean of that and the exported model's Spearman
on SICK-R trial (SICK's dev split). A trial whose loss diverges is recorded as FAIL and the search goes on. Before
the first trial the untouched encoder is scored the same way: the baseline the trials should beat.

Written into ``OUTPUT_DIR`` after every trial (each file through a temporary file and a rename), so an interrupted
search keeps what it found: ``best_config.yaml`` (the base settings with the best trial's values and ``output_dir:
outputs/tuned``, without the ``--trial-set`` settings: ``simcse-hub train --config best_config.yaml``), ``trials.csv``
(Optuna's ``trials_dataframe``: state, score, sampled values, runtime) and ``trials.md`` (the same table with the
baseline), and ``tune.json`` (what was searched). A trial's model folder is deleted once it is scored unless
``keep_trials``. With ``storage`` (e.g. ``sqlite:///tune.db``) the same command resumes an interrupted search until
it holds ``trials`` finished trials.

A search that fits in about an hour on 2 CPU cores (all-MiniLM-L6-v2 on the 6,339 NLI triplets of ../shared/data):
each trial trains on the first 1,920 triplets (30 updates at batch 64) and is evaluated on STS-B dev before training
and at updates 15 and 30, a few minutes a trial, a pruned one about half that; no trial starts after 55 minutes. The
best settings are then trained on all the triplets::

    simcse-hub tune --set model_name_or_path=sentence-transformers/all-MiniLM-L6-v2 pooler_type=avg \
        train_file=../shared/data/nli/snli_devtest_triplets.tsv.gz max_seq_length=32 batch_size=64 \
        --trial-set max_train_samples=1920 eval_steps=15 --trials 12 --timeout 3300 \
        --storage sqlite:///outputs/tune-minilm.db --output-dir outputs/tune-minilm
    simcse-hub train --config outputs/tune-minilm/best_config.yaml
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import json
import logging
import math
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from simcse_hub.card import CARD_DATA_FILE
from simcse_hub.config import TrainConfig
from simcse_hub.data import columns_of, resolve_train_file, write_atomic
from simcse_hub.evaluation import (
    STSDataError,
    TaskUnavailableError,
    default_data_dir,
    evaluate_model,
    load_sts_task,
    markdown_table,
)
from simcse_hub.inference import SimCSE, encode_sentences
from simcse_hub.train import TrainingDiverged, load_encoder, train

try:
    import optuna
except ImportError:  # the tune extra
    optuna = None

logger = logging.getLogger(__name__)

INSTALL_HINT = "simcse-hub tune needs Optuna: pip install 'simcse-hub[tune]'"
OBJECTIVES = ("stsb", "stsb+sickr")
PRUNERS = ("median", "none")
TUNE_FILES = ("tune.json", "best_config.yaml", "trials.md", "trials.csv", "trials")
DEV_TASKS = {"STSBenchmark": ("stsb_dev_spearman", "STS-B dev"), "SICKRelatedness": ("sickr_dev_spearman",
                                                                                     "SICK-R trial")}
STATES = ("COMPLETE", "PRUNED", "FAIL")


class TuneError(ValueError):
    """A search that cannot run as asked; the message names the option or file and what to do."""


@dataclass(frozen=True)
class Param:
    """The range of one searched setting: ``low`` to ``high`` (log-uniform with ``log``, whole numbers with
    ``integer``) or one of ``choices``; ``count`` values of it (``source_weights``: one per source after the
    first)."""

    low: float | None = None
    high: float | None = None
    log: bool = False
    integer: bool = False
    choices: tuple = ()
    count: int = 1

    def describe(self) -> str:
        if self.choices:
            return "{" + ", ".join(str(choice) for choice in self.choices) + "}"
        return f"{self.low:g} to {self.high:g}" + (" (log)" if self.log else "")


# What a search can sample. mlm_weight samples do_mlm first, and mlm_weight only when it is true; source_weights (the
# mix of several sources) samples the weight of each source after the first, relative to the first's 1.
SPACE = {
    "learning_rate": Param(1e-5, 1e-4, log=True),
    "temperature": Param(0.02, 0.1, log=True),
    "hard_negative_weight": Param(-1.0, 1.0),  # only for triplet data
    "batch_size": Param(choices=(32, 64, 128)),
    "pooler_type": Param(choices=("cls", "avg")),
    "symmetric_loss": Param(choices=(False, True)),
    "mlm_weight": Param(0.02, 0.3, log=True),
    "num_train_epochs": Param(1, 3, integer=True),
    "source_weights": Param(0.25, 4.0, log=True),  # only with several sources
}
DEFAULT_SEARCH = ("learning_rate", "temperature", "hard_negative_weight", "batch_size", "source_weights")


@dataclass
class TuneOptions:
    """How :func:`tune` searches (``simcse-hub tune --help`` has one line on each)."""

    output_dir: str = "outputs/tune"
    search: Sequence[str] | None = None  # None: DEFAULT_SEARCH, each where it applies
    ranges: dict[str, Param] = field(default_factory=dict)
    trial_settings: dict[str, Any] = field(default_factory=dict)
    trials: int = 12
    timeout: float | None = None
    seed: int = 0
    study_name: str | None = None  # None: the name of output_dir
    storage: str | None = None
    objective: str = "stsb"
    pruner: Any = "median"  # "median", "none", or an optuna pruner
    startup_trials: int = 3
    mini_batch_size: int = 128
    keep_trials: bool = False
    overwrite: bool = False
    best_output_dir: str = "outputs/tuned"

    def __post_init__(self) -> None:
        if self.study_name is None:
            self.study_name = Path(self.output_dir).resolve().name


@dataclass
class TuneResult:
    """The outcome of :func:`tune`: the best trial (``None`` when none completed) and the count of each state."""

    output_dir: Path
    best_trial: int | None
    best_score: float | None
    best_config: Path | None
    counts: dict[str, int]
    start_score: float | None = None  # the untouched encoder's score: the baseline


# ---------------------------------------------------------------------------------------------------- the search


def tune(base: TrainConfig, options: TuneOptions) -> TuneResult:
    """Search the training settings of ``base`` with Optuna as ``options`` say; every check comes first.

    Args:
        base (`TrainConfig`): the settings every trial starts from (validated; ``eval_steps`` > 0).
        options (`TuneOptions`): what to search, how many trials, where to write.

    Returns:
        [`TuneResult`]

    >>> tune(TrainConfig.from_yaml("base.yaml"), TuneOptions(trials=12, output_dir="outputs/tune"))  # doctest: +SKIP
    """
    if optuna is None:
        raise TuneError(INSTALL_HINT)
    space, data_dir = check_search(base, options)
    output, resuming = Path(options.output_dir), _study_exists(options)
    # the baseline loads the encoder: before anything is written (a resumed study has its own)
    start = None if resuming and not options.overwrite else starting_scores(base, options, data_dir)
    _prepare_output(output, options, resuming)
    if options.overwrite and resuming:
        optuna.delete_study(study_name=options.study_name, storage=options.storage)
    study = optuna.create_study(
        study_name=options.study_name, storage=options.storage, direction="maximize", load_if_exists=True,
        sampler=optuna.samplers.TPESampler(seed=options.seed, n_startup_trials=max(3, options.trials // 3)),
        pruner=make_pruner(options))
    write_text(output / "tune.json", json.dumps({
        "study_name": options.study_name, "storage": options.storage, "objective": options.objective,
        "search": {name: dataclasses.asdict(param) for name, param in space.items()},
        "trial_settings": options.trial_settings, "base": base.to_dict()}, indent=2, default=str) + "\n")
    if "start" not in study.user_attrs:  # once per study: a resumed search keeps its baseline
        study.set_user_attr("start", start or starting_scores(base, options, data_dir))
        logger.info("The starting encoder, untrained, scores %.2f: the baseline the trials should beat.",
                    study.user_attrs["start"]["score"])
    remaining = max(0, options.trials - sum(trial.state.is_finished() for trial in study.trials))
    logger.info("Tuning %s: %d trial(s) to run (%d finished before), searching %s", options.study_name, remaining,
                options.trials - remaining, ", ".join(f"{n} {p.describe()}" for n, p in space.items()))
    try:
        if remaining:
            study.optimize(lambda trial: run_trial(trial, base, options, space, data_dir), n_trials=remaining,
                           timeout=options.timeout, catch=(TrainingDiverged,),
                           callbacks=[lambda study, trial: write_reports(study, base, options, space)])
    finally:
        best = write_reports(study, base, options, space)
    return TuneResult(output_dir=output, best_trial=best and best.number, best_score=best and best.value,
                      best_config=best and output / "best_config.yaml", counts=_counts(study),
                      start_score=study.user_attrs.get("start", {}).get("score"))


def make_pruner(options: TuneOptions):
    """The Optuna pruner of ``options.pruner``: ``median`` (after ``startup_trials`` trials), ``none``, or the
    pruner object itself."""
    if options.pruner == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=options.startup_trials)
    return optuna.pruners.NopPruner() if options.pruner == "none" else options.pruner


def run_trial(trial, base: TrainConfig, options: TuneOptions, space: dict[str, Param], data_dir: Path | None) -> float:
    """One trial: sample, train with pruning on the periodic STS-B dev evaluations, score the exported model."""
    config = trial_config(base, options, sample(trial, space),
                          Path(options.output_dir) / "trials" / f"trial-{trial.number:03d}")
    best = -math.inf

    def on_evaluate(step: int, metrics: dict[str, float]) -> None:
        nonlocal best
        best = max(best, metrics["stsb_dev_spearman"])
        trial.set_user_attr("stsb_dev_spearman", best)
        trial.set_user_attr("updates", step)
        trial.report(metrics["stsb_dev_spearman"], step)
        if trial.should_prune():
            raise optuna.TrialPruned(f"STS-B dev Spearman {metrics['stsb_dev_spearman']:.2f} at update {step}")

    try:
        folder = train(config, on_evaluate=on_evaluate)
        score = json.loads((folder / CARD_DATA_FILE).read_text(encoding="utf-8")).get("best_stsb_dev_spearman")
        if score is None:
            raise TuneError(f"{folder}: the run has no STS-B dev evaluation to score (eval_steps={config.eval_steps}).")
        trial.set_user_attr("stsb_dev_spearman", score)
        if options.objective == "stsb+sickr":
            encode = functools.partial(SimCSE(folder).encode, batch_size=config.eval_batch_size, return_numpy=True)
            sickr = dev_scores(encode, str(folder), ["SICKRelatedness"], data_dir)["sickr_dev_spearman"]
            trial.set_user_attr("sickr_dev_spearman", sickr)
            score = (score + sickr) / 2
        return float(score)
    finally:
        if not options.keep_trials:
            shutil.rmtree(config.output_dir, ignore_errors=True)


def sample(trial, space: dict[str, Param]) -> dict[str, Any]:
    """The values of one trial, drawn by Optuna from ``space`` (``do_mlm`` first when ``mlm_weight`` is searched)."""
    values: dict[str, Any] = {}
    for name, param in space.items():
        if name == "mlm_weight":
            values["do_mlm"] = trial.suggest_categorical("do_mlm", [False, True])
            if not values["do_mlm"]:
                continue
        if name == "source_weights":
            values[name] = [1.0] + [trial.suggest_float(f"source_weight_{i}", float(param.low), float(param.high),
                                                        log=param.log) for i in range(1, param.count + 1)]
        elif param.choices:
            values[name] = trial.suggest_categorical(name, list(param.choices))
        elif param.integer:
            values[name] = trial.suggest_int(name, int(param.low), int(param.high), log=param.log)
        else:
            values[name] = trial.suggest_float(name, float(param.low), float(param.high), log=param.log)
    return values


def settings_for(values: dict[str, Any], options: TuneOptions) -> dict[str, Any]:
    """The training settings of sampled ``values`` (or of a trial's Optuna parameters): the weights of the sources
    after the first as ``source_weights``; a batch larger than ``mini_batch_size`` computed by gradient caching in
    mini-batches of that size (the same loss, less memory)."""
    settings = {name: value for name, value in values.items() if not name.startswith("source_weight_")}
    extra = sorted((int(name.rsplit("_", 1)[1]), value) for name, value in values.items()
                   if name.startswith("source_weight_"))
    if extra:
        settings["source_weights"] = [1.0] + [value for _, value in extra]
    if settings.get("batch_size", 0) > options.mini_batch_size:
        settings["mini_batch_size"] = options.mini_batch_size
    return settings


def trial_config(base: TrainConfig, options: TuneOptions, values: dict[str, Any], output_dir: Path) -> TrainConfig:
    """The settings of one trial: ``base``, then the trial-only settings, then the sampled values, into a fresh
    ``output_dir`` without trackers."""
    config = copy.deepcopy(base).update(options.trial_settings, source="--trial-set")
    config.update(settings_for(values, options), source="the sampled values")
    config.update({"output_dir": str(output_dir), "overwrite_output_dir": True, "report_to": "none"}, source="tune")
    return config.validate()


def starting_scores(base: TrainConfig, options: TuneOptions, data_dir: Path | None) -> dict[str, float]:
    """The untouched encoder's dev scores, as a trial's are computed (the encoder under the base settings' pooler,
    STS-B dev as the training loop evaluates it, and SICK-R trial with ``objective="stsb+sickr"``): the baseline a
    search should beat. ``score`` is the objective."""
    with torch.random.fork_rng(devices=[]):  # the global random state untouched
        torch.manual_seed(base.seed)  # the MLP head of a cls pooler starts as a trial's does
        model = load_encoder(base).eval()
    tasks = ["STSBenchmark"] + (["SICKRelatedness"] if options.objective == "stsb+sickr" else [])
    encode = functools.partial(encode_sentences, model, model.tokenizer, batch_size=base.eval_batch_size)
    scores = dev_scores(encode, base.model_name_or_path, tasks, data_dir)
    return {**scores, "score": sum(scores.values()) / len(scores)}


def dev_scores(encode: Any, name: str, tasks: list[str], data_dir: Path | None) -> dict[str, float]:
    """Spearman x100 of ``encode`` on the ``dev`` split of each of ``tasks``, keyed as ``trials.csv`` names them."""
    results = evaluate_model(encode, name, tasks=tasks, data_dir=data_dir, split="dev", alignment_uniformity=False)
    for task in tasks:
        if task not in results["tasks"]:
            raise TuneError(f"{DEV_TASKS[task][1]} could not be read: {results['missing'].get(task)}")
    return {DEV_TASKS[task][0]: float(results["tasks"][task]["spearman"]) for task in tasks}


# ---------------------------------------------------------------------------------------------------- the record


def _counts(study) -> dict[str, int]:
    return {state: sum(trial.state.name == state for trial in study.trials) for state in STATES}


def trials_frame(study, options: TuneOptions, space: dict[str, Param]) -> pd.DataFrame:
    """Optuna's ``trials_dataframe`` as ``trials.csv`` holds it: one row per trial with its number, state, score
    (complete trials only), STS scores, the update it reached, the sampled values (blank when not sampled, e.g.
    mlm_weight without MLM) and seconds."""
    names = []  # the Optuna parameters of the searched settings
    for name, param in space.items():
        names += {"mlm_weight": ["do_mlm", name], "source_weights": [
            f"source_weight_{i}" for i in range(1, param.count + 1)]}.get(name, [name])
    scores = [key for task, (key, _) in DEV_TASKS.items() if task == "STSBenchmark" or options.objective != "stsb"]
    frame = study.trials_dataframe(attrs=("number", "state", "value", "duration", "params", "user_attrs"))
    frame.columns = [name.removeprefix("params_").removeprefix("user_attrs_") for name in frame.columns]
    if "duration" in frame:
        frame["runtime_s"] = frame["duration"].dt.total_seconds().round()
    frame = frame.rename(columns={"number": "trial", "value": "score"})
    frame = frame.reindex(columns=["trial", "state", "score", *scores, "updates", *names, "runtime_s"])
    frame.loc[frame["state"] != "COMPLETE", "score"] = None  # a pruned trial's value is its last report
    return frame.astype({"updates": "Int64", "runtime_s": "Int64"})


def write_reports(study, base: TrainConfig, options: TuneOptions, space: dict[str, Param]):
    """Write ``trials.csv``, ``trials.md`` (the same table, the best trial in bold, with the baseline) and (once a
    trial has completed) ``best_config.yaml``; returns the best trial, or ``None``."""
    output, counts, frame = Path(options.output_dir), _counts(study), trials_frame(study, options, space)
    write_text(output / "trials.csv", frame.to_csv(index=False))
    best = study.best_trial if counts["COMPLETE"] else None
    what = "the best STS-B dev Spearman (x100) of the run" + (
        ", averaged with the exported model's SICK-R trial Spearman" if options.objective != "stsb" else "")
    found = f"Best: trial {best.number} ({best.value:.2f}), in best_config.yaml." if best else "No trial completed."
    summary = (f"Score: {what}. {len(frame)} trials: {counts['COMPLETE']} complete, {counts['PRUNED']} pruned, "
               f"{counts['FAIL']} failed. {found}")
    lines = [f"# simcse-hub tune: study `{options.study_name}`", "", summary]
    start, complete = study.user_attrs.get("start"), frame["score"].dropna()
    if start is not None:
        lines.append(f"The starting encoder, untrained, scores {start['score']:.2f} ("
                     + ", ".join(f"{label} {start[key]:.2f}" for key, label in DEV_TASKS.values() if key in start)
                     + f"); {int((complete > start['score']).sum())} of {len(complete)} complete trials beat it.")
    rows = [[f"**{row[0]}**" if best and row[0] == str(best.number) else row[0], *row[1:]]
            for row in frame.map(_cell).values.tolist()]
    write_text(output / "trials.md", "\n".join([*lines, "", markdown_table(list(frame.columns), rows)]) + "\n")
    if best is not None:
        write_best_config(best, base, options, output / "best_config.yaml")
    return best


def _cell(value: Any) -> str:
    """A value as ``trials.md`` shows it: blank when missing, a float to 2 decimals (3 digits below 1)."""
    if pd.isna(value):
        return ""
    if isinstance(value, float):
        return f"{value:.2f}" if abs(value) >= 1 else f"{value:.3g}"
    return str(value)


def write_best_config(best, base: TrainConfig, options: TuneOptions, path: Path) -> None:
    """``base`` with the best trial's values, ``output_dir`` set to ``options.best_output_dir``, as a YAML file
    that ``simcse-hub train --config`` reads (written by ``TrainConfig.save_yaml``, a comment line on top)."""
    config = copy.deepcopy(base).update(settings_for(dict(best.params), options), f"trial {best.number}")
    config.update({"output_dir": options.best_output_dir, "overwrite_output_dir": False}, "tune").validate()
    with tempfile.TemporaryDirectory(dir=path.parent) as folder:
        config.save_yaml(Path(folder) / path.name)
        settings = (Path(folder) / path.name).read_text(encoding="utf-8")
    write_text(path, f"# simcse-hub tune, study {options.study_name}: trial {best.number}, score {best.value:.2f}. "
                     "Train with: simcse-hub train --config best_config.yaml\n" + settings)


def write_text(path: Path, text: str) -> None:
    """Write ``text`` (UTF-8) atomically (:func:`simcse_hub.data.write_atomic`)."""
    write_atomic(path, text.encode("utf-8"))


# ---------------------------------------------------------------------------------------------------- checks


def check_search(base: TrainConfig, options: TuneOptions) -> tuple[dict[str, Param], Path | None]:
    """Check everything before the first trial: the options, the base and trial settings (`ConfigError`), every
    searched range (each end must be a valid setting), the data, STS-B dev (and SICK-R trial). Returns the search
    space and the evaluation data folder."""
    if options.trials < 1 or (options.timeout is not None and not options.timeout > 0):
        raise TuneError(f"--trials {options.trials} / --timeout {options.timeout}: expected >= 1 and > 0 seconds.")
    if options.objective not in OBJECTIVES:
        raise TuneError(f"--objective {options.objective!r}: expected one of {list(OBJECTIVES)}.")
    if isinstance(options.pruner, str) and options.pruner not in PRUNERS:
        raise TuneError(f"--pruner {options.pruner!r}: expected one of {list(PRUNERS)}.")
    if options.startup_trials < 0 or options.mini_batch_size < 1:
        raise TuneError(f"--startup-trials {options.startup_trials} / --mini-batch-size {options.mini_batch_size}: "
                        "expected an integer >= 0 and one >= 1.")
    names = list(options.search if options.search is not None else DEFAULT_SEARCH)
    for name in [name for name in names if name not in SPACE]:
        raise TuneError(f"--search {name!r}: not a setting tune searches; expected names from {list(SPACE)}.")
    for name in [name for name in options.ranges if name not in names]:
        raise TuneError(f"--range {name}: {name} is not searched (the search is {names}); add it to --search.")
    trial_base = copy.deepcopy(base.validate()).update(options.trial_settings, "--trial-set").validate()
    if trial_base.eval_steps == 0:
        raise TuneError("eval_steps=0: every trial is scored and pruned on its periodic STS-B dev evaluations; set "
                        "eval_steps, e.g. --trial-set eval_steps=10.")
    sources = len(trial_base.sources())
    for name, applies, why in (
            ("hard_negative_weight", _triplets(trial_base), ("the training data has no hard-negative column (3 "
                                                              "columns: sent0, sent1, hard_neg); mine one with "
                                                              "`simcse-hub mine`")),
            ("source_weights", sources > 1, "there is one training source; give several (train_file=A,B)")):
        if name in names and not applies:
            if options.search is not None:
                raise TuneError(f"--search {name}: {why}, or leave it out of --search.")
            names.remove(name)
    space = {name: options.ranges.get(name, SPACE[name]) for name in names}
    if "source_weights" in space:
        space["source_weights"] = dataclasses.replace(space["source_weights"], count=sources - 1)
    for name, param in space.items():
        _check_param(trial_base, options, name, param)
    return space, _check_eval_data(trial_base, options.objective)


def _check_param(config: TrainConfig, options: TuneOptions, name: str, param: Param) -> None:
    """A range is ``low < high`` (``low > 0`` when log-uniform) or some choices, and each end is a valid setting."""
    if not param.choices and not (param.low is not None and param.high is not None and param.low < param.high
                                  and (param.low > 0 or not param.log)):
        raise TuneError(f"--range {name}={param.low}:{param.high}: expected LOW:HIGH with LOW < HIGH"
                        + (" and LOW > 0 (log-uniform)." if param.log else "."))
    for value in param.choices or (param.low, param.high):
        values = {name: value, **({"do_mlm": True} if name == "mlm_weight" else {})}
        if name == "source_weights":
            values = {name: [1.0] + [value] * param.count}
        copy.deepcopy(config).update(settings_for(values, options), f"--range {name}").validate()


def _triplets(config: TrainConfig) -> bool:
    """Whether a training file has a hard-negative column (3 columns), read from its first example (the columns of
    a Hub dataset are known once it is downloaded)."""
    if config.columns is not None:
        return len(config.columns) == 3
    return any(len(columns_of(resolve_train_file(name))) == 3 for name in config.train_files())


def _check_eval_data(config: TrainConfig, objective: str) -> Path | None:
    """The data folder holding STS-B dev (and SICK-R trial for ``stsb+sickr``); `TuneError` when one is missing."""
    data_dir = Path(config.data_dir) if config.data_dir is not None else default_data_dir()
    for task in ["STSBenchmark"] + (["SICKRelatedness"] if objective != "stsb" else []):
        try:
            load_sts_task(task, data_dir, split="dev")
        except (TaskUnavailableError, STSDataError, OSError) as error:
            raise TuneError(f"{DEV_TASKS[task][1]} scores the trials but cannot be read ({error}); set data_dir (--set "
                            "data_dir=FOLDER) or $SIMCSE_DATA_DIR to the folder holding stsb/ and sickr/.") from None
    return data_dir


def _study_exists(options: TuneOptions) -> bool:
    """Whether ``options.storage`` already holds the study (a search to resume)."""
    if options.storage is None:
        return False
    if "://" not in options.storage:
        raise TuneError(f"--storage {options.storage!r}: expected a database URL such as sqlite:///tune.db.")
    try:
        return options.study_name in optuna.study.get_all_study_names(storage=options.storage)
    except Exception as error:  # the database driver's own errors: name the option, then stop
        raise TuneError(f"--storage {options.storage!r}: cannot open it ({error}).") from error


def _prepare_output(output: Path, options: TuneOptions, resuming: bool) -> None:
    """Refuse a file, a folder of something else, or an earlier search (unless resuming its study, or with
    ``overwrite``, which removes that search's files); then create the folder."""
    if output.exists() and not output.is_dir():
        raise TuneError(f"--output-dir {str(output)!r} is a file; expected a folder.")
    if output.is_dir() and any(output.iterdir()):
        if not (output / "tune.json").is_file():
            raise TuneError(f"--output-dir {str(output)!r} is not empty and holds no earlier search (tune.json); "
                            "choose a new folder.")
        recorded = json.loads((output / "tune.json").read_text(encoding="utf-8")).get("study_name")
        if options.overwrite:
            for name in TUNE_FILES:
                shutil.rmtree(output / name) if (output / name).is_dir() else (output / name).unlink(missing_ok=True)
        elif not resuming or recorded != options.study_name:
            raise TuneError(f"--output-dir {str(output)!r} holds an earlier search (study {recorded!r}); pass "
                            "--overwrite to start afresh, or --storage with that study to resume it.")
    output.mkdir(parents=True, exist_ok=True)


__all__ = ["DEFAULT_SEARCH", "OBJECTIVES", "PRUNERS", "SPACE", "Param", "TuneError", "TuneOptions", "TuneResult",
           "check_search", "make_pruner", "run_trial", "sample", "settings_for", "trial_config", "trials_frame", "tune",
           "write_best_config", "write_reports", "write_text"]
