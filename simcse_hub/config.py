"""The settings of ``simcse-hub train``: one dataclass, validated when it is built, read by transformers'
``HfArgumentParser``; presets; YAML files.

Layers, each overriding the one before: the defaults of :class:`TrainConfig`, a preset (``--preset``, a YAML file
shipped in ``simcse_hub/presets/``), a YAML file of your own (``--config``), ``--set key=value`` pairs, and the flags
``HfArgumentParser`` makes of every field (``--learning-rate 3e-5`` or ``--learning_rate 3e-5``). Every layer's values
go through the same argparse types, so ``5e-5`` from YAML, ``--set`` or a flag is the same number. Setting
``train_file`` in a layer replaces the preset's ``dataset_name`` (and the reverse), so ``--preset unsup-bert-base
--train-file my.txt`` does what it says. An error names the setting, the layer it came from and the expected form.
The final configuration is saved as ``train_config.yaml`` in the output folder.
"""

from __future__ import annotations

import argparse
import difflib
import functools
import math
import os
import re
import typing
from dataclasses import asdict, dataclass, fields
from importlib import resources
from pathlib import Path
from typing import Any

import yaml
from transformers import HfArgumentParser
from transformers.hf_argparser import HfArg

from simcse_hub.data import SAMPLING
from simcse_hub.modeling.configuration_simcse import POOLER_TYPES
from simcse_hub.modeling.formats_simcse import public_name
from simcse_hub.speed import PRECISIONS

# Settings that may change when a run is resumed (they do not change what is computed).
RESUMABLE_CHANGES = frozenset({"output_dir", "overwrite_output_dir", "report_to", "logging_steps", "data_dir",
                               "eval_batch_size", "keep_checkpoints"})
# The settings of each kind of data source: a layer that sets one kind and not the other clears the other's.
SOURCE_SETTINGS = {"train_file": ("train_file",),
                   "dataset_name": ("dataset_name", "dataset_data_files", "dataset_config_name")}
NULL = ("null", "none", "~")


class ConfigError(ValueError):
    """An invalid training setting; the message names it, where it came from and the expected form."""


@dataclass
class TrainConfig:
    """Every setting of a SimCSE training run (``simcse-hub train --help`` has one line on each), checked when built.

    ``batch_size`` is the *global* contrastive batch: the number of examples whose embeddings meet in one InfoNCE
    loss, summed over processes (the paper's 64 or 512). Each process gets ``batch_size / num_processes`` and the
    negatives of every process. ``mini_batch_size`` (gradient caching) bounds the memory of one forward pass without
    changing the loss; ``gradient_accumulation_steps`` sums the gradients of several contrastive batches per update
    (it does not add negatives).

    >>> TrainConfig(train_file="sentences.txt", batch_size=64, learning_rate=3e-5).batch_size
    64
    """

    # model
    model_name_or_path: str = HfArg(default="google-bert/bert-base-uncased", help="encoder: a Hub id or a folder")
    pooler_type: str = HfArg(default="cls", help=f"sentence embedding: one of {', '.join(POOLER_TYPES)}")
    mlp_only_train: bool = HfArg(default=False, help="cls pooler: the MLP head in training only (unsupervised)")
    temperature: float = HfArg(default=0.05, help="InfoNCE temperature")
    hard_negative_weight: float = HfArg(default=0.0, help="logit offset of an anchor's own hard negative (a log)")
    symmetric_loss: bool = HfArg(default=False, help="also score positives against anchors; average both directions")
    do_mlm: bool = HfArg(default=False, help="add the auxiliary masked-language-modelling loss")
    mlm_weight: float = HfArg(default=0.1, help="weight of the MLM loss")
    mlm_probability: float = HfArg(default=0.15, help="share of tokens masked for the MLM loss")
    # data
    train_file: str | None = HfArg(default=None, help="local .txt (a sentence per line) or .csv/.tsv/.jsonl (2-3 "
                                   "columns), optionally .gz; several: comma-separated, each batch from one of them")
    dataset_name: str | None = HfArg(default=None, help="Hub dataset(s), comma-separated; sources with train_file")
    dataset_config_name: str | None = HfArg(default=None, help="configuration of dataset_name")
    dataset_data_files: str | None = HfArg(default=None, help="file(s) in dataset_name, e.g. nli_for_simcse.csv")
    dataset_split: str = HfArg(default="train", help="split of dataset_name")
    columns: list[str] | None = HfArg(default=None, help="1-3 columns: sentence, or anchor,positive[,hard_negative]")
    source_weights: list[float] | None = HfArg(default=None, help="a weight per source scaling its examples per "
                                               "epoch, e.g. 1,0.5 (default: 1 each)")
    sampling: str = HfArg(default="proportional", help="several sources: proportional or round_robin batches")
    max_seq_length: int = HfArg(default=32, help="truncation length in tokens")
    max_train_samples: int | None = HfArg(default=None, help="use only the first N examples (of each source)")
    # optimisation
    num_train_epochs: int = HfArg(default=1, help="passes over the training data")
    max_steps: int | None = HfArg(default=None, help="stop after this many updates (overrides epochs)")
    batch_size: int = HfArg(default=64, help="global contrastive batch (examples per loss, all processes together)")
    mini_batch_size: int | None = HfArg(default=None, help="gradient caching: examples per forward pass (same loss)")
    length_buckets: int = HfArg(default=4, help="encoder passes per batch over groups of similar length (1: one)")
    fast_dropout: bool = HfArg(default=True, help="CPU dropout masks four to a 64-bit random number (p to 1/65536)")
    gradient_accumulation_steps: int = HfArg(default=1, help="contrastive batches per update")
    learning_rate: float = HfArg(default=3e-5, help="peak learning rate of AdamW")
    weight_decay: float = HfArg(default=0.0, help="AdamW weight decay (not on biases and LayerNorm)")
    warmup_ratio: float = HfArg(default=0.0, help="share of the updates with a linear warm-up (then linear decay)")
    max_grad_norm: float | None = HfArg(default=1.0, help="gradient clipping norm (null: none)")
    mixed_precision: str = HfArg(default="auto", help="auto (bf16 on a CPU with AVX-512 BF16 or AMX, else fp32), "
                                 "fp32 (or no), bf16, or fp16 (GPU)")
    seed: int = HfArg(default=42, help="seed of the model head, data order and dropout")
    # evaluation, checkpoints, output
    output_dir: str = HfArg(default="outputs/simcse", help="where the model and logs go")
    overwrite_output_dir: bool = HfArg(default=False, help="replace the earlier run (once this one has finished)")
    data_dir: str | None = HfArg(default=None, help="folder with stsb/dev.tsv.gz (default: $SIMCSE_DATA_DIR, else "
                                 "../shared/data)")
    eval_steps: int = HfArg(default=125, help="evaluate on STS-B dev every N updates (0: never)")
    eval_batch_size: int = HfArg(default=128, help="sentences per forward pass in evaluation")
    save_steps: int | None = HfArg(default=None, help="a resumable checkpoint every N updates (default: eval_steps)")
    save_total_limit: int = HfArg(default=1, help="resumable checkpoints kept (the newest)")
    keep_checkpoints: bool = HfArg(default=False, help="keep checkpoints/ once the run has finished")
    logging_steps: int = HfArg(default=10, help="log loss and learning rate every N updates")
    report_to: str = HfArg(default="auto", help="Accelerate trackers: auto (TensorBoard if installed), none, ...")
    license: str | None = HfArg(default=None, help="licence of the trained model, for its card")

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> TrainConfig:
        """Check every value; raise :class:`ConfigError` naming the first bad one. Returns ``self``.

        Paths given as ``pathlib.Path`` (``train_file=Path("data.txt")``) are kept as strings, as YAML saves them.
        """
        for item in fields(self):
            value = getattr(self, item.name)
            if isinstance(value, os.PathLike):
                setattr(self, item.name, os.fspath(value))
            elif isinstance(value, float) and not math.isfinite(value):  # NaN passes every comparison below
                raise ConfigError(f"{item.name}={value!r}: expected a finite number.")
        self._validate_sources()
        for name, allowed in (("pooler_type", POOLER_TYPES), ("mixed_precision", PRECISIONS),
                              ("sampling", SAMPLING)):
            if getattr(self, name) not in allowed:
                raise ConfigError(f"{name}={getattr(self, name)!r}: expected one of {list(allowed)}.")
        for name in ("batch_size", "max_seq_length", "num_train_epochs", "gradient_accumulation_steps",
                     "eval_batch_size", "logging_steps", "save_total_limit", "length_buckets", "max_steps",
                     "max_train_samples", "mini_batch_size", "save_steps"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ConfigError(f"{name}={getattr(self, name)!r}: expected an integer >= 1"
                                  + (", or null for none." if name.startswith(("max_", "mini", "save_s")) else "."))
        checks = [
            ("batch_size", self.batch_size >= 2, "a contrastive batch needs at least 2 examples (each example's "
             "negatives are the other examples of its batch); the paper uses 64 or 512"),
            ("eval_steps", self.eval_steps >= 0, "expected an integer >= 0 (0 turns evaluation off)"),
            # ranges outside which a run cannot learn (a loss at ln(batch), weights that never move, or overflow)
            ("learning_rate", 1e-8 <= self.learning_rate <= 1, "expected a number in [1e-8, 1] (AdamW fine-tuning "
             "uses 1e-5 to 1e-4)"),
            ("temperature", 1e-3 <= self.temperature <= 10, "expected a number in [0.001, 10] (the paper uses 0.05; "
             "far below, the logits overflow; far above, every pair scores alike and nothing is learned)"),
            ("hard_negative_weight", -20 <= self.hard_negative_weight <= 20, "expected a number in [-20, 20] (the log "
             "of a weight: 0 leaves hard negatives unweighted)"),
            ("weight_decay", 0 <= self.weight_decay <= 1, "expected a number in [0, 1] (e.g. 0.01)"),
            ("mlm_weight", self.mlm_weight >= 0, "expected a number >= 0"),
            ("warmup_ratio", 0 <= self.warmup_ratio < 1, "expected a number in [0, 1), e.g. 0.1"),
            ("mlm_probability", 0 < self.mlm_probability < 1, "expected a number in (0, 1), e.g. 0.15"),
            ("max_grad_norm", self.max_grad_norm is None or self.max_grad_norm > 0,
             "expected a number > 0, or null for no clipping"),
            ("columns", self.columns is None or 1 <= len(self.columns) <= 3,
             "expected 1 to 3 names (sentence, or anchor,positive[,hard_negative])"),
        ]
        for name, ok, expected in checks:
            if not ok:
                raise ConfigError(f"{name}={getattr(self, name)!r}: {expected}.")
        return self

    def _validate_sources(self) -> None:
        if self.train_file is None and self.dataset_name is None:
            raise ConfigError("set a data source: train_file=PATH (a local file; several: comma-separated) or "
                              "dataset_name=HUB_ID (a Hub dataset).")
        for name in ("train_file", "dataset_name", "dataset_data_files"):
            value = getattr(self, name)
            if value is not None and not all(item.strip() for item in value.split(",")):
                raise ConfigError(f"{name}={value!r}: an empty name in the comma-separated list.")
        datasets, files = _split(self.dataset_name), _split(self.dataset_data_files)
        if len(datasets) > 1 and files and len(files) != len(datasets):
            raise ConfigError(f"dataset_data_files={self.dataset_data_files!r}: {len(files)} files for "
                              f"{len(datasets)} datasets; give one file per dataset (comma-separated), or none.")
        if self.source_weights is not None:
            count = len(self.sources())
            if len(self.source_weights) != count:
                raise ConfigError(f"source_weights={self.source_weights}: {len(self.source_weights)} weights for "
                                  f"{count} source(s) ({', '.join(self.sources())}); give one weight per source.")
            if not all(math.isfinite(weight) and weight > 0 for weight in self.source_weights):
                raise ConfigError(f"source_weights={self.source_weights}: every weight must be a number > 0.")

    def sources(self) -> list[str]:
        """The training sources in order: the train files, then the Hub datasets.

        >>> TrainConfig(train_file="nli.tsv,wiki.txt", dataset_name="me/domain").sources()
        ['nli.tsv', 'wiki.txt', 'me/domain']
        """
        return _split(self.train_file) + _split(self.dataset_name)

    def train_files(self) -> list[str]:
        """The local training files, in order."""
        return _split(self.train_file)

    def hub_datasets(self) -> list[tuple[str, str | None]]:
        """``(dataset name, data file or None)`` for each Hub dataset source."""
        datasets, files = _split(self.dataset_name), _split(self.dataset_data_files)
        return list(zip(datasets, files)) if len(files) == len(datasets) else [
            (name, self.dataset_data_files) for name in datasets]

    # ------------------------------------------------------------------------------------------------ I/O

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def public_dict(self) -> dict[str, Any]:
        """The settings as a model folder shows them, which becomes public once pushed: the encoder by its Hub id
        (or folder name), data files by file name, folders by name; never a path of this machine.

        >>> TrainConfig(train_file="/home/me/data/wiki.txt", output_dir="/home/me/out").public_dict()["train_file"]
        'wiki.txt'
        """
        from simcse_hub.inference import public_model_name

        values = self.to_dict()
        values["model_name_or_path"] = public_model_name(self.model_name_or_path)
        for name in ("output_dir", "data_dir", "train_file"):
            if values[name] is not None:
                values[name] = ",".join(item if item.startswith("package:") else Path(public_name(item)).name
                                        for item in _split(values[name]))
        return values

    def save_yaml(self, path: str | os.PathLike, public: bool = False) -> None:
        """Write the configuration as YAML (``train_config.yaml``), loadable with :meth:`from_yaml`; ``public`` writes
        :meth:`public_dict` (what a model folder shows) instead of the exact settings."""
        values = self.public_dict() if public else self.to_dict()
        Path(path).write_text(yaml.safe_dump(values, sort_keys=False), encoding="utf-8")

    @classmethod
    def from_yaml(cls, path: str | os.PathLike) -> TrainConfig:
        """Load a YAML file of settings over the defaults (values are checked)."""
        return layered_config(config=str(path))

    def update(self, values: dict[str, Any], source: str) -> TrainConfig:
        """Set ``values`` (raw values, e.g. strings from the command line, converted as the flags are) as a layer
        over these settings, with the data-source rule of the module docstring. Call :meth:`validate` after."""
        for name, value in merge_layer(self.to_dict(), settings_of(values, source)).items():
            setattr(self, name, value)
        return self


def _split(value: str | None) -> list[str]:
    return [item.strip() for item in value.split(",")] if value else []


# ---------------------------------------------------------------------------------------------------- parsing


class _Unset:
    """The default of a flag that was not given (so that a layer below it stands); shows the real default in help."""

    def __init__(self, default: Any) -> None:
        self.default = default

    def __str__(self) -> str:
        return str(self.default)


class SettingsParser(HfArgumentParser):
    """``HfArgumentParser`` of :class:`TrainConfig` (a flag per field, e.g. ``--learning-rate``): its errors are a
    :class:`ConfigError` (one line naming the setting) instead of a usage message and ``SystemExit``, a list setting
    also takes the comma-separated form (``--source-weights 1,0.5``), and :meth:`given` returns only the settings
    that were given, converted by the flags' types."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(TrainConfig, **kwargs)
        hints = typing.get_type_hints(TrainConfig)
        for action in self._actions:
            if action.dest not in hints:
                continue
            action.default = _Unset(action.default)
            kind = next((a for a in typing.get_args(hints[action.dest]) if typing.get_origin(a) is list), None)
            if kind is not None:  # ours: HfArgumentParser's list flags take only space-separated items
                action.type = lambda text, item=typing.get_args(kind)[0]: [item(x) for x in text.split(",") if x]
            if type(None) in typing.get_args(hints[action.dest]) and action.type is not None:  # --max-grad-norm null
                action.type = functools.wraps(action.type)(
                    lambda text, convert=action.type: None if text.strip().lower() in NULL else convert(text))

    def error(self, message: str) -> typing.NoReturn:
        found = re.match(r"argument --(\w+)\S*: (?:invalid (float|int|<lambda>) value: (.*)|Truthy value expected: "
                         r"got (.*) but .*|(.*))", message)
        if found:
            name, flag = found[1], "--" + found[1].replace("_", "-")
            expected = {"float": "a number (e.g. 3e-5)", "int": "an integer (e.g. 64)"}.get(
                found[2], "a list of numbers (comma-separated, e.g. 1,0.5)")
            message = (f"{flag}: {name}={found[3]}: expected {expected}." if found[2] else
                       f"{flag}: {name}={found[4]!r}: expected true or false." if found[4] else f"{flag}: {found[5]}")
        elif message.startswith("unrecognized arguments: --"):
            close = difflib.get_close_matches(message.split()[2], self._option_string_actions, n=1)
            message += f"; did you mean {close[0]}?" if close else "; see --help."
        raise ConfigError(message)

    def given(self, argv: list[str]) -> tuple[dict[str, Any], argparse.Namespace]:
        """``({setting: converted value}`` of the settings ``argv`` gives, ``the namespace of every option)``."""
        namespace = self.parse_args(argv)
        names = {item.name for item in fields(TrainConfig)}
        values = {name: value for name, value in vars(namespace).items()
                  if name in names and not isinstance(value, _Unset)}
        for name, value in values.items():  # a list flag: one list (or None, for null) per item given
            if isinstance(value, list):
                parts = [part for item in value for part in (item if isinstance(item, list) else [item])]
                values[name] = None if None in parts else parts
        return values, namespace


def settings_of(layer: dict[str, Any], source: str) -> dict[str, Any]:
    """The settings of one layer (YAML values, or ``--set`` strings), converted by the flags' types; a
    :class:`ConfigError` naming ``source`` for an unknown setting or a value of the wrong type."""
    known = [item.name for item in fields(TrainConfig)]
    argv = []
    for name, value in layer.items():
        if name not in known:
            close = difflib.get_close_matches(name, known, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else "; see `simcse-hub train --help`."
            raise ConfigError(f"{source}: unknown setting {name!r}{hint}")
        value = ",".join(map(str, value)) if isinstance(value, (list, tuple)) else value  # a YAML list
        argv.append(f"--{name}={str(value).lower() if isinstance(value, bool) else value}")
    try:
        return SettingsParser().given(argv)[0]
    except ConfigError as error:  # "--name: message" of the flag each value became
        raise ConfigError(f"{source}: {str(error).split(': ', 1)[-1]}") from None


def merge_layer(values: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """``values`` with the converted settings ``new`` over them: a layer that sets one kind of data source
    (``train_file`` or ``dataset_name``) and not the other clears the other, with its Hub files and configuration."""
    merged = {**values, **new}
    for given, other in (("train_file", "dataset_name"), ("dataset_name", "train_file")):
        if new.get(given) is not None and other not in new:
            merged.update({name: None for name in SOURCE_SETTINGS[other] if name not in new})
    return merged


def key_values(items: list[str], option: str, example: str) -> dict[str, str]:
    """``KEY=VALUE`` items of ``option`` as a mapping; `ConfigError` naming the item that is not one."""
    values = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"{option} {item!r}: expected KEY=VALUE, e.g. {option} {example}.")
        values[key.strip()] = value
    return values


def layered_config(preset: str | None = None, config: str | None = None, overrides: list[str] = (),
                   flags: dict[str, Any] | None = None) -> TrainConfig:
    """The settings of a run: the defaults, then ``preset``, the YAML file ``config``, ``--set`` ``overrides``
    (``KEY=VALUE``) and the converted ``flags`` (:meth:`SettingsParser.given`), later ones winning; validated."""
    values = {item.name: item.default for item in fields(TrainConfig)}
    layers = [(read_yaml(preset_path(preset)), f"preset {preset!r}")] if preset else []
    layers += [(read_yaml(config), config)] if config else []
    layers += [(key_values(list(overrides), "--set", "learning_rate=3e-5"), "--set")]
    for layer, source in layers:
        values = merge_layer(values, settings_of(layer, source))
    return TrainConfig(**merge_layer(values, flags or {}))


def train_parser(prog: str = "simcse-hub train") -> SettingsParser:
    """The parser of ``simcse-hub train`` (and ``python -m simcse_hub.train``): a flag per setting, and the layers."""
    parser = SettingsParser(prog=prog, description="Train a SimCSE model. Settings: a --preset, a --config YAML file, "
                            "--set key=value, or the flags below (later ones win).")
    parser.add_argument("--preset", help="start from a preset (see --list-presets), e.g. quickstart, unsup-bert-base")
    parser.add_argument("--config", metavar="FILE", help="YAML file of settings (over the preset)")
    parser.add_argument("--set", metavar="KEY=VALUE", nargs="+", action="extend", default=[], dest="overrides",
                        help="override settings, e.g. --set learning_rate=1e-5 batch_size=128")
    parser.add_argument("--resume", nargs="?", const="latest", metavar="CHECKPOINT",
                        help="continue an interrupted run from its latest whole checkpoint in output_dir (or the one "
                        "given), with the settings it started with. A checkpoint holds Accelerate's state, which is "
                        "pickled: resume only runs you made yourself")
    parser.add_argument("--list-presets", action="store_true", help="print the presets and exit")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages and show tracebacks")
    return parser



def parse_train_args(argv: list[str]) -> tuple[TrainConfig | None, argparse.Namespace]:
    """The settings and the other options of ``simcse-hub train ARGV`` (no settings with ``--list-presets``)."""
    flags, options = train_parser().given(argv)
    if options.list_presets:
        return None, options
    return layered_config(options.preset, options.config, options.overrides, flags), options


# ---------------------------------------------------------------------------------------------------- files


def read_yaml(path: str | os.PathLike) -> dict[str, Any]:
    """The mapping in a YAML settings file; `ConfigError` naming the file when it is missing or not a mapping."""
    path = Path(path)
    try:
        content = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such configuration file.") from None
    except yaml.YAMLError as error:
        raise ConfigError(f"{path}: not valid YAML ({' '.join(str(error).split())}).") from None
    if content is not None and not isinstance(content, dict):
        raise ConfigError(f"{path}: expected a mapping of settings (key: value lines), got {type(content).__name__}.")
    return content or {}


def list_presets() -> dict[str, str]:
    """``{name: description}`` of the presets shipped with simcse_hub (the description is the file's first comment)."""
    folder = resources.files("simcse_hub") / "presets"
    return {entry.name[:-5]: entry.read_text(encoding="utf-8").splitlines()[0].lstrip("# ").strip()
            for entry in sorted(folder.iterdir(), key=lambda item: item.name) if entry.name.endswith(".yaml")}


def preset_path(name: str) -> Path:
    """The YAML file of preset ``name``; `ConfigError` listing the presets when there is none of that name."""
    entry = resources.files("simcse_hub") / "presets" / f"{name}.yaml"
    if not entry.is_file():
        raise ConfigError(f"--preset {name!r}: no such preset; expected one of {sorted(list_presets())}.")
    return Path(str(entry))


__all__ = ["ConfigError", "RESUMABLE_CHANGES", "SettingsParser", "TrainConfig", "key_values", "layered_config",
           "list_presets", "parse_train_args", "preset_path", "read_yaml", "settings_of", "train_parser"]
