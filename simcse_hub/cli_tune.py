"""``simcse-hub tune``: the command line of :mod:`simcse_hub.tuning` (Optuna search of the training settings)."""

from __future__ import annotations

import argparse
import importlib.util
import logging
from collections.abc import Sequence
from typing import Any

from simcse_hub.cli_common import CLIError


def tune_arguments(parser: argparse.ArgumentParser) -> None:
    """Declare the arguments of ``simcse-hub tune`` on ``parser``."""
    from simcse_hub.tuning import DEFAULT_SEARCH, OBJECTIVES, PRUNERS, SPACE

    parser.add_argument("--preset", help="base settings: a preset of `simcse-hub train --list-presets`")
    parser.add_argument("--config", metavar="FILE", help="base settings: a YAML file (over the preset)")
    parser.add_argument("--set", metavar="KEY=VALUE", nargs="+", action="extend", default=[], dest="overrides",
                        help="base settings, e.g. --set model_name_or_path=... train_file=... (also in best_config)")
    parser.add_argument("--trial-set", metavar="KEY=VALUE", nargs="+", action="extend", default=[],
                        help="settings for the trials only, not written into best_config.yaml, e.g. "
                        "max_train_samples=1920 eval_steps=10")
    parser.add_argument("--output-dir", default="outputs/tune", help="where the trials and the record go (default: "
                        "outputs/tune)")
    parser.add_argument("--search", help=f"comma-separated settings to search, from {', '.join(SPACE)}; 'all' for "
                        "every one. mlm_weight also samples do_mlm; source_weights samples a weight for each source "
                        f"after the first (default: {','.join(DEFAULT_SEARCH)}; hard_negative_weight only for triplet "
                        "data, source_weights only with several sources)")
    parser.add_argument("--range", metavar="NAME=LOW:HIGH|A,B", nargs="+", action="extend", default=[],
                        dest="ranges", help="a searched setting's range or choices, e.g. learning_rate=1e-5:5e-5 "
                        "batch_size=32,64 (defaults: " + "; ".join(f"{n} {p.describe()}" for n, p in SPACE.items())
                        + ")")
    parser.add_argument("--trials", type=int, default=12, help="finished trials to reach (default: 12)")
    parser.add_argument("--timeout", type=float, metavar="SECONDS", help="start no trial after this long")
    parser.add_argument("--objective", choices=OBJECTIVES, default="stsb", help="score: the best STS-B dev Spearman "
                        "of the run (stsb, the default), or its mean with SICK-R trial (stsb+sickr)")
    parser.add_argument("--pruner", choices=PRUNERS, default="median", help="stop a trial below the median of the "
                        "earlier ones at the same evaluation (median, the default), or never (none)")
    parser.add_argument("--startup-trials", type=int, default=3, help="trials that are never pruned (default: 3)")
    parser.add_argument("--mini-batch-size", type=int, default=128, help="a sampled batch larger than this is "
                        "computed by gradient caching in mini-batches of this size (default: 128)")
    parser.add_argument("--seed", type=int, default=0, help="seed of Optuna's sampler (training keeps its own seed)")
    parser.add_argument("--study-name", help="the Optuna study (default: the name of --output-dir)")
    parser.add_argument("--storage", help="a database to keep the study in, e.g. sqlite:///tune.db: the same "
                        "command then resumes an interrupted search")
    parser.add_argument("--best-output-dir", default="outputs/tuned", help="output_dir written into "
                        "best_config.yaml (default: outputs/tuned)")
    parser.add_argument("--keep-trials", action="store_true", help="keep each trial's model folder (default: "
                        "deleted once scored)")
    parser.add_argument("--overwrite", action="store_true", help="replace an earlier search in --output-dir")


def options_from_args(args: argparse.Namespace) -> tuple[Any, Any]:
    """The base settings (as ``simcse-hub train`` builds them) and the search options of parsed arguments."""
    from simcse_hub.cli_common import config_from_args, key_values
    from simcse_hub.tuning import SPACE, TuneOptions

    base = config_from_args(args)
    trial_settings = key_values(args.trial_set, "--trial-set", "max_train_samples=1920")
    search = None
    if args.search is not None:
        search = list(SPACE) if args.search.strip() == "all" else [n.strip() for n in args.search.split(",") if n]
    options = TuneOptions(
        output_dir=args.output_dir, search=search, ranges=parse_ranges(args.ranges), trial_settings=trial_settings,
        trials=args.trials, timeout=args.timeout, seed=args.seed,
        study_name=args.study_name, storage=args.storage,
        objective=args.objective, pruner=args.pruner, startup_trials=args.startup_trials,
        mini_batch_size=args.mini_batch_size, keep_trials=args.keep_trials, overwrite=args.overwrite,
        best_output_dir=args.best_output_dir)
    return base, options


def parse_ranges(items: Sequence[str]) -> dict[str, Any]:
    """``NAME=LOW:HIGH`` (a range, log-uniform where the default is) or ``NAME=A,B,...`` (choices, of the setting's
    type) for each item."""
    import typing

    from simcse_hub.train_config import ConfigError, TrainConfig, coerce
    from simcse_hub.tuning import SPACE, Param

    hints = typing.get_type_hints(TrainConfig)
    ranges = {}
    for item in items:
        name, _, spec = (part.strip() for part in item.partition("="))
        if name not in SPACE or not spec:
            raise CLIError(f"--range {item!r}: expected NAME=LOW:HIGH or NAME=A,B with NAME one of {list(SPACE)}.")
        default, kind = SPACE[name], float if name == "source_weights" else hints[name]
        if name == "source_weights" and ":" not in spec:
            raise CLIError(f"--range {item!r}: expected source_weights=LOW:HIGH, e.g. source_weights=0.25:4.")
        try:
            if ":" in spec and not default.choices:
                low, high = (coerce(name, part, kind, "--range") for part in spec.split(":", 1))
                ranges[name] = Param(low, high, log=default.log, integer=default.integer)
            else:
                choices = tuple(coerce(name, part, kind, "--range") for part in spec.split(",") if part.strip())
                ranges[name] = Param(choices=choices)
        except ConfigError as error:
            raise CLIError(str(error)) from None
    return ranges



def run_tune(args: argparse.Namespace) -> int:
    if importlib.util.find_spec("optuna") is None:
        raise CLIError("simcse-hub tune needs Optuna: pip install 'simcse-hub[tune]'")
    if not args.verbose:  # Accelerate logs every file of every checkpoint at INFO
        logging.getLogger("accelerate").setLevel(logging.WARNING)
    from simcse_hub.tuning import tune

    base, options = options_from_args(args)
    result = tune(base, options)
    counts = result.counts
    print(f"{sum(counts.values())} trials in study {options.study_name!r}: {counts['COMPLETE']} complete, "
          f"{counts['PRUNED']} pruned, {counts['FAIL']} failed. Table: {result.output_dir / 'trials.md'}")
    if result.best_trial is None:
        print("No trial completed, so there is no best_config.yaml; widen the ranges (--range) or raise "
              "--startup-trials.")
        return 1
    baseline = "" if result.start_score is None else f" (the untrained encoder: {result.start_score:.2f})"
    print(f"Best: trial {result.best_trial}, score {result.best_score:.2f}{baseline}. Train it with: simcse-hub "
          f"train --config {result.best_config}")
    return 0


__all__ = ["options_from_args", "parse_ranges", "run_tune", "tune_arguments"]
