"""What every ``simcse-hub`` sub-command shares: the one-line error, the model options and loading through
``simcse_hub.SimCSE``, the check of an output file before any work, and the training settings as options
(``train`` and ``tune``: preset, ``--config``, ``--set``, one flag per setting)."""

from __future__ import annotations

import argparse
import typing
from dataclasses import fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # imported where used: the train settings need torch, which other commands may not
    from simcse_hub.train_config import TrainConfig

POOLERS = "cls, cls_before_pooler, avg, avg_top2, avg_first_last"


class CLIError(Exception):
    """An error the user can fix; printed on one line without a traceback, exit status 2."""


def one_line(error: BaseException) -> str:
    return " ".join(str(error).split()) or type(error).__name__


def model_options(parser: argparse.ArgumentParser, what: str = "model") -> None:
    """The options of every command that encodes with ``simcse_hub.SimCSE``."""
    parser.add_argument("--pooler", help=f"pooler of a plain encoder, or an override of the {what}'s: {POOLERS}")
    parser.add_argument("--max-length", type=int, help="truncate sentences to this many tokens (default: the "
                        "model's maximum)")
    parser.add_argument("--batch-size", type=int, default=None, help="sentences per forward pass (default: as many "
                        "as fit in 2,048 padded tokens, the same embeddings as fixed batches, faster)")
    parser.add_argument("--device", help="cpu, cuda, cuda:1, ... (default: cuda when available)")


def load_tool(name: str, args: argparse.Namespace) -> Any:
    """``SimCSE(name)`` with the command's options; `CLIError` naming the model when it cannot be loaded."""
    from simcse_hub.loading import ModelNotFoundError, resolve_model

    if args.batch_size is not None and args.batch_size < 1:
        raise CLIError(f"--batch-size {args.batch_size}: expected an integer >= 1.")
    try:
        resolve_model(name)  # a typo of a path is answered at once, before torch is imported
    except ModelNotFoundError as error:
        raise CLIError(one_line(error)) from None
    from simcse_hub.tool import SimCSE

    try:
        return SimCSE(name, device=args.device, pooler=args.pooler, max_length=args.max_length)
    except (OSError, ValueError, RuntimeError) as error:
        raise CLIError(f"cannot load {name!r}: {one_line(error)}") from None


def writable_file(path: str | None, option: str, suffixes: tuple[str, ...] | None = None) -> None:
    """Check an output file before any work: its suffix, and a folder that exists to hold it."""
    if path is None:
        return
    if suffixes is not None and Path(path).suffix not in suffixes:
        raise CLIError(f"{option} {path!r}: expected a file name ending in {' or '.join(suffixes)}.")
    parent = Path(path).expanduser().parent
    if not parent.is_dir():
        raise CLIError(f"{option} {path!r}: the folder {str(parent)!r} does not exist; create it first.")
    if Path(path).is_dir():
        raise CLIError(f"{option} {path!r} is a folder; expected a file name.")


def add_train_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Declare the arguments of ``simcse-hub train`` (and ``python -m simcse_hub.train``) on ``parser``."""
    from simcse_hub.train_config import TrainConfig

    parser.add_argument("--preset", help="start from a preset (see --list-presets), e.g. quickstart, unsup-bert-base")
    parser.add_argument("--config", metavar="FILE", help="YAML file of settings (over the preset)")
    parser.add_argument("--set", metavar="KEY=VALUE", nargs="+", action="extend", default=[], dest="overrides",
                        help="override settings, e.g. --set learning_rate=1e-5 batch_size=128")
    parser.add_argument("--resume", nargs="?", const="latest", metavar="CHECKPOINT",
                        help="continue an interrupted run from its latest whole checkpoint in output_dir (or the one "
                        "given), with the settings it started with. A checkpoint holds Accelerate's state, which is "
                        "pickled: resume only runs you made yourself")
    parser.add_argument("--list-presets", action="store_true", help="print the presets and exit")
    group = parser.add_argument_group("settings (each also accepted as --set name=value)")
    hints = typing.get_type_hints(TrainConfig)
    for spec in fields(TrainConfig):
        flag = "--" + spec.name.replace("_", "-")
        kind = hints[spec.name]
        base = next((arg for arg in typing.get_args(kind) if arg is not type(None)), kind)
        metavar = {bool: "BOOL", int: "N", float: "X"}.get(base, "STR")
        if typing.get_origin(base) is list:
            metavar = "X,Y" if typing.get_args(base) == (float,) else "NAMES"
        extra = {"nargs": "?", "const": "true"} if base is bool else {}
        text = spec.metadata["help"]
        if "(default" not in text:  # each default said once: the help text's own words, else the value
            text += f" (default: {'none' if spec.default is None else spec.default})"
        group.add_argument(flag, dest=f"setting_{spec.name}", default=argparse.SUPPRESS, metavar=metavar, help=text,
                           **extra)
    return parser


def key_values(items: list[str], option: str, example: str) -> dict[str, str]:
    """``KEY=VALUE`` items of ``option`` as a mapping; `ConfigError` naming the item that is not one."""
    from simcse_hub.train_config import ConfigError

    values = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"{option} {item!r}: expected KEY=VALUE, e.g. {option} {example}.")
        values[key.strip()] = value
    return values


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """Build and validate the configuration from parsed arguments: preset, ``--config``, ``--set``, flags."""
    from simcse_hub.train_config import TrainConfig, coerce, preset_path, read_yaml

    config = TrainConfig()
    if args.preset:
        config.update(read_yaml(preset_path(args.preset)), source=f"preset {args.preset!r}")
    if args.config:
        config.update(read_yaml(args.config), source=args.config)
    config.update(key_values(args.overrides, "--set", "learning_rate=3e-5"), source="--set")
    hints = typing.get_type_hints(TrainConfig)
    flags = {
        key[len("setting_"):]: coerce(key[len("setting_"):], value, hints[key[len("setting_"):]],
                                      source="--" + key[len("setting_"):].replace("_", "-"))
        for key, value in vars(args).items()
        if key.startswith("setting_")
    }
    config.update(flags, source="command line")
    return config.validate()
