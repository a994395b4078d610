"""The configuration of ``simcse-hub train``: one dataclass, presets, YAML files and command-line overrides.

Layers, each overriding the one before: the defaults of :class:`TrainConfig`, a preset (``--preset``, a YAML file
shipped in ``simcse_hub/presets/``), a YAML file of your own (``--config``), ``--set key=value`` pairs, and plain
flags (``--learning-rate 3e-5``; every setting has one). Setting ``train_file`` in a layer replaces the preset's
``dataset_name`` (and the reverse), so ``--preset unsup-bert-base --train-file my.txt`` does what it says.

Values are checked once all layers are applied; an error names the setting, the layer it came from and the expected
form. The final configuration is saved as ``train_config.yaml`` in the output folder. The command line that reads
the layers is :func:`simcse_hub.cli_common.config_from_args`.
"""

from __future__ import annotations

import difflib
import math
import os
import typing
from dataclasses import asdict, dataclass, field, fields
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from simcse_hub.data import SAMPLING
from simcse_hub.modeling.configuration_simcse import POOLER_TYPES
from simcse_hub.speed import PRECISIONS

# Settings that may change when a run is resumed (they do not change what is computed).
RESUMABLE_CHANGES = frozenset({"output_dir", "overwrite_output_dir", "report_to", "logging_steps", "data_dir",
                               "eval_batch_size", "keep_checkpoints"})


class ConfigError(ValueError):
    """An invalid training setting; the message names it, where it came from and the expected form."""


def _help(text: str) -> dict[str, str]:
    return {"help": text}


@dataclass
class TrainConfig:
    """Every setting of a SimCSE training run (see ``simcse-hub train --help`` for one line on each).

    ``batch_size`` is the *global* contrastive batch: the number of examples whose embeddings meet in one InfoNCE
    loss, summed over processes (the paper's 64 or 512). Each process gets ``batch_size / num_processes`` and the
    negatives of every process. ``mini_batch_size`` (gradient caching) bounds the memory of one forward pass without
    changing the loss; ``gradient_accumulation_steps`` sums the gradients of several contrastive batches per update
    (it does not add negatives).

    >>> config = TrainConfig(train_file="sentences.txt", batch_size=64, learning_rate=3e-5)
    >>> config.validate().batch_size
    64
    """

    # model
    model_name_or_path: str = field(default="google-bert/bert-base-uncased", metadata=_help(
        "encoder to start from: a Hub id or a local folder that AutoModel loads"))
    pooler_type: str = field(default="cls", metadata=_help(f"sentence embedding: one of {', '.join(POOLER_TYPES)}"))
    mlp_only_train: bool = field(default=False, metadata=_help(
        "with pooler_type=cls: use the MLP head in training only (unsupervised SimCSE)"))
    temperature: float = field(default=0.05, metadata=_help("InfoNCE temperature"))
    hard_negative_weight: float = field(default=0.0, metadata=_help(
        "logit offset of each anchor's own hard negative (log of its weight)"))
    symmetric_loss: bool = field(default=False, metadata=_help(
        "also score each positive against every anchor (positive -> anchor) and average the two directions, as "
        "sentence-transformers' MultipleNegativesSymmetricRankingLoss"))
    do_mlm: bool = field(default=False, metadata=_help("add the auxiliary masked-language-modelling loss"))
    mlm_weight: float = field(default=0.1, metadata=_help("weight of the MLM loss"))
    mlm_probability: float = field(default=0.15, metadata=_help("share of tokens masked for the MLM loss"))
    # data
    train_file: str | None = field(default=None, metadata=_help(
        "local .txt (one sentence per line) or .csv/.tsv/.jsonl (2-3 columns), optionally .gz; several: "
        "comma-separated (a YAML list), each batch drawn from one of them"))
    dataset_name: str | None = field(default=None, metadata=_help(
        "Hub dataset, e.g. princeton-nlp/datasets-for-simcse (several: comma-separated; with train_file, both are "
        "sources)"))
    dataset_config_name: str | None = field(default=None, metadata=_help("configuration of dataset_name"))
    dataset_data_files: str | None = field(default=None, metadata=_help(
        "file inside dataset_name, e.g. wiki1m_for_simcse.txt or nli_for_simcse.csv (several datasets: one file "
        "each, comma-separated)"))
    dataset_split: str = field(default="train", metadata=_help("split of dataset_name"))
    columns: list[str] | None = field(default=None, metadata=_help(
        "1-3 column names: sentence, or anchor,positive[,hard_negative] (default: all columns, when 1-3)"))
    source_weights: list[float] | None = field(default=None, metadata=_help(
        "with several sources: a weight per source (train files first, then Hub datasets) scaling its examples per "
        "epoch, e.g. 1,0.5 (default: 1 each)"))
    sampling: str = field(default="proportional", metadata=_help(
        "with several sources: proportional (every batch of every source once per epoch, in a random order) or "
        "round_robin (one batch of each source in turn, until the source with the fewest batches is used up)"))
    max_seq_length: int = field(default=32, metadata=_help("truncation length in tokens"))
    max_train_samples: int | None = field(default=None, metadata=_help(
        "use only the first N training examples (of each source)"))
    # optimisation
    num_train_epochs: int = field(default=1, metadata=_help("passes over the training data"))
    max_steps: int | None = field(default=None, metadata=_help("stop after this many updates (overrides epochs)"))
    batch_size: int = field(default=64, metadata=_help(
        "global contrastive batch (examples per loss, all processes together)"))
    mini_batch_size: int | None = field(default=None, metadata=_help(
        "gradient caching: forward at most this many examples at once per process (same loss, less memory)"))
    length_buckets: int = field(default=4, metadata=_help(
        "encoder passes per batch over groups of similar length (less padding; the batch itself stays random); "
        "1: one padded pass"))
    fast_dropout: bool = field(default=True, metadata=_help(
        "on a CPU, draw dropout masks four to a 64-bit random number (p rounded to 1/65536): masks of the same "
        "distribution, a faster step; false: torch's dropout"))
    gradient_accumulation_steps: int = field(default=1, metadata=_help("contrastive batches per update"))
    learning_rate: float = field(default=3e-5, metadata=_help("peak learning rate of AdamW"))
    weight_decay: float = field(default=0.0, metadata=_help("AdamW weight decay (not on biases and LayerNorm)"))
    warmup_ratio: float = field(default=0.0, metadata=_help(
        "share of the updates with a linear warm-up (then linear decay to 0)"))
    max_grad_norm: float | None = field(default=1.0, metadata=_help("gradient clipping norm (null: none)"))
    mixed_precision: str = field(default="auto", metadata=_help(
        "auto (bf16 on a CPU that computes bfloat16 natively, i.e. AVX-512 BF16 or AMX; else fp32), fp32 (or no), "
        "bf16, or fp16 (GPU)"))
    seed: int = field(default=42, metadata=_help("seed of the model head, data order and dropout"))
    # evaluation, checkpoints, output
    output_dir: str = field(default="outputs/simcse", metadata=_help("where the model and logs go"))
    overwrite_output_dir: bool = field(default=False, metadata=_help(
        "start afresh in an output_dir that holds an earlier run"))
    data_dir: str | None = field(default=None, metadata=_help(
        "folder with stsb/dev.tsv.gz for evaluation (default: $SIMCSE_DATA_DIR, else ../shared/data)"))
    eval_steps: int = field(default=125, metadata=_help("evaluate on STS-B dev every N updates (0: never)"))
    eval_batch_size: int = field(default=128, metadata=_help("sentences per forward pass in evaluation"))
    save_steps: int | None = field(default=None, metadata=_help(
        "write a resumable checkpoint every N updates (default: eval_steps)"))
    save_total_limit: int = field(default=1, metadata=_help("resumable checkpoints kept (the newest)"))
    keep_checkpoints: bool = field(default=False, metadata=_help("keep checkpoints/ once the run has finished"))
    logging_steps: int = field(default=10, metadata=_help("log loss and learning rate every N updates"))
    report_to: str = field(default="auto", metadata=_help(
        "Accelerate trackers: auto (TensorBoard when installed), none, tensorboard, wandb, ..."))
    license: str | None = field(default=None, metadata=_help("licence of the trained model, for its card"))

    # ------------------------------------------------------------------------------------------------ checks

    def validate(self) -> TrainConfig:
        """Check every value; raise :class:`ConfigError` naming the first bad one. Returns ``self``.

        Paths given as ``pathlib.Path`` (``train_file=Path("data.txt")``) are kept as strings, as YAML saves them.
        """
        for item in fields(self):
            if isinstance(getattr(self, item.name), os.PathLike):
                setattr(self, item.name, os.fspath(getattr(self, item.name)))
        self._validate_sources()
        hints = typing.get_type_hints(type(self))
        for item in fields(self):  # NaN passes every comparison below and inf most: refuse both first
            value = getattr(self, item.name)
            if float in typing.get_args(hints[item.name]) + (hints[item.name],) and isinstance(value, float) \
                    and not math.isfinite(value):
                raise ConfigError(f"{item.name}={value!r}: expected a finite number.")
        if self.pooler_type not in POOLER_TYPES:
            raise ConfigError(f"pooler_type={self.pooler_type!r}: expected one of {list(POOLER_TYPES)}.")
        if self.mixed_precision not in PRECISIONS:
            raise ConfigError(f"mixed_precision={self.mixed_precision!r}: expected one of {list(PRECISIONS)}.")
        for name in ("batch_size", "max_seq_length", "num_train_epochs", "gradient_accumulation_steps",
                     "eval_batch_size", "logging_steps", "save_total_limit", "length_buckets"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name}={getattr(self, name)!r}: expected an integer >= 1.")
        for name in ("max_steps", "max_train_samples", "mini_batch_size", "save_steps"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ConfigError(f"{name}={getattr(self, name)!r}: expected an integer >= 1, or null for none.")
        if self.batch_size < 2:
            raise ConfigError(f"batch_size={self.batch_size}: a contrastive batch needs at least 2 examples (each "
                              "example's negatives are the other examples of its batch); the paper uses 64 or 512.")
        if self.eval_steps < 0:
            raise ConfigError(f"eval_steps={self.eval_steps!r}: expected an integer >= 0 (0 turns evaluation off).")
        if not self.learning_rate > 0 or not self.temperature > 0:
            name = "learning_rate" if not self.learning_rate > 0 else "temperature"
            raise ConfigError(f"{name}={getattr(self, name)!r}: expected a number > 0.")
        for name in ("weight_decay", "mlm_weight"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name}={getattr(self, name)!r}: expected a number >= 0.")
        if not 0 <= self.warmup_ratio < 1:
            raise ConfigError(f"warmup_ratio={self.warmup_ratio!r}: expected a number in [0, 1), e.g. 0.1.")
        if not 0 < self.mlm_probability < 1:
            raise ConfigError(f"mlm_probability={self.mlm_probability!r}: expected a number in (0, 1), e.g. 0.15.")
        if self.max_grad_norm is not None and not self.max_grad_norm > 0:
            raise ConfigError(f"max_grad_norm={self.max_grad_norm!r}: expected a number > 0, or null for no clipping.")
        if self.columns is not None and not 1 <= len(self.columns) <= 3:
            raise ConfigError(
                f"columns={self.columns!r}: expected 1 to 3 names (sentence, or anchor,positive[,hard_negative])."
            )
        return self

    def _validate_sources(self) -> None:
        if self.train_file is None and self.dataset_name is None:
            raise ConfigError("set a data source: train_file=PATH (a local file; several: comma-separated) or "
                              "dataset_name=HUB_ID (a Hub dataset).")
        for name in ("train_file", "dataset_name", "dataset_data_files"):
            value = getattr(self, name)
            if value is not None and not all(item.strip() for item in value.split(",")):
                raise ConfigError(f"{name}={value!r}: an empty name in the comma-separated list.")
        datasets = _split(self.dataset_name)
        files = _split(self.dataset_data_files)
        if len(datasets) > 1 and files and len(files) != len(datasets):
            raise ConfigError(f"dataset_data_files={self.dataset_data_files!r}: {len(files)} files for "
                              f"{len(datasets)} datasets; give one file per dataset (comma-separated), or none.")
        count = len(self.sources())
        if self.source_weights is not None:
            if len(self.source_weights) != count:
                raise ConfigError(f"source_weights={self.source_weights}: {len(self.source_weights)} weights for "
                                  f"{count} source(s) ({', '.join(self.sources())}); give one weight per source.")
            if not all(math.isfinite(weight) and weight > 0 for weight in self.source_weights):
                raise ConfigError(f"source_weights={self.source_weights}: every weight must be a number > 0.")
        if self.sampling not in SAMPLING:
            raise ConfigError(f"sampling={self.sampling!r}: expected one of {list(SAMPLING)}.")

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
        if len(files) == len(datasets):
            return list(zip(datasets, files))
        return [(name, self.dataset_data_files) for name in datasets]

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
        for name in ("output_dir", "data_dir"):
            if values[name] is not None:
                values[name] = _public_file(values[name])
        if values["train_file"] is not None:
            values["train_file"] = ",".join(_public_file(item) for item in _split(values["train_file"]))
        return values

    def save_yaml(self, path: str | os.PathLike, public: bool = False) -> None:
        """Write the configuration as YAML (``train_config.yaml``), loadable with :meth:`from_yaml`; ``public`` writes
        :meth:`public_dict` (what a model folder shows) instead of the exact settings."""
        values = self.public_dict() if public else self.to_dict()
        Path(path).write_text(yaml.safe_dump(values, sort_keys=False), encoding="utf-8")

    @classmethod
    def from_yaml(cls, path: str | os.PathLike) -> TrainConfig:
        """Load a YAML file of settings over the defaults (values are checked)."""
        return cls().update(read_yaml(path), source=str(path)).validate()

    def update(self, values: dict[str, Any], source: str) -> TrainConfig:
        """Set ``values`` (names and raw values, e.g. strings from the command line) coerced to each field's type.

        A layer that sets one kind of data source (``train_file`` or ``dataset_name``) and not the other clears the
        other (``--preset X --train-file my.txt`` replaces the preset's data, with its Hub files and configuration,
        which would otherwise still show in the saved settings and the card); set both in one layer to mix them.
        """
        hints = typing.get_type_hints(type(self))
        known = [f.name for f in fields(self)]
        for name, raw in values.items():
            if name not in known:
                close = difflib.get_close_matches(name, known, n=1)
                hint = f"; did you mean {close[0]!r}?" if close else "; see `simcse-hub train --help`."
                raise ConfigError(f"{source}: unknown setting {name!r}{hint}")
            if name in ("train_file", "dataset_name", "dataset_data_files") and isinstance(raw, (list, tuple)):
                raw = ",".join(str(item) for item in raw)  # a YAML list of sources
            setattr(self, name, coerce(name, raw, hints[name], source))
        for given, other in (("train_file", "dataset_name"), ("dataset_name", "train_file")):
            if values.get(given) is not None and other not in values:
                for name in SOURCE_SETTINGS[other]:
                    if name not in values:
                        setattr(self, name, None)
        return self


SOURCE_SETTINGS = {"train_file": ("train_file",),  # the settings of each kind of data source, cleared together
                   "dataset_name": ("dataset_name", "dataset_data_files", "dataset_config_name")}


def _split(value: str | None) -> list[str]:
    return [item.strip() for item in value.split(",")] if value else []


def _public_file(value: str) -> str:
    """A file or folder setting as a model folder shows it: its name (``package:`` files as they are)."""
    return value if value.startswith("package:") else Path(os.path.abspath(os.path.expanduser(value))).name


def coerce(name: str, value: Any, kind: Any, source: str = "") -> Any:
    """``value`` (from YAML or the command line) as the type ``kind`` of setting ``name``; `ConfigError` if it is not."""
    where = f"{source}: " if source else ""
    args = typing.get_args(kind)
    optional = type(None) in args
    base = next((arg for arg in args if arg is not type(None)), kind) if optional else kind
    if value is None or (optional and isinstance(value, str) and value.strip().lower() in ("null", "none", "~")):
        if optional:
            return None
        raise ConfigError(f"{where}{name} cannot be null; expected {_describe(base)}.")
    if base is bool:
        if isinstance(value, bool):
            return value
        words = {"true": True, "yes": True, "1": True, "on": True, "false": False, "no": False, "0": False, "off": False}
        if str(value).strip().lower() in words:
            return words[str(value).strip().lower()]
    elif base is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        try:
            number = float(str(value).strip())
            if number.is_integer():
                return int(number)
        except ValueError:
            pass
    elif base is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        try:
            return float(str(value).strip())
        except ValueError:
            pass
    elif typing.get_origin(base) is list:
        items = value.split(",") if isinstance(value, str) else value
        if isinstance(items, (list, tuple)) and all(isinstance(item, (str, int, float)) for item in items):
            items = [str(item).strip() for item in items if str(item).strip()]
            if typing.get_args(base) != (float,):
                return items
            try:
                return [float(item) for item in items]
            except ValueError:
                pass
    elif base is str and isinstance(value, (str, int, float)) and not isinstance(value, bool):
        return str(value)
    raise ConfigError(f"{where}{name}={value!r}: expected {_describe(base)}.")


def _describe(kind: Any) -> str:
    if kind is bool:
        return "true or false"
    if kind is int:
        return "an integer (e.g. 64)"
    if kind is float:
        return "a number (e.g. 3e-5)"
    if typing.get_origin(kind) is list and typing.get_args(kind) == (float,):
        return "a list of numbers (YAML list, or comma-separated: 1,0.5)"
    if typing.get_origin(kind) is list:
        return "a list of names (YAML list, or comma-separated: sent0,sent1,hard_neg)"
    return "a string"


def read_yaml(path: str | os.PathLike) -> dict[str, Any]:
    """The mapping in a YAML settings file; `ConfigError` naming the file when it is missing or not a mapping."""
    path = Path(path)
    try:
        content = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such configuration file.") from None
    except yaml.YAMLError as error:
        raise ConfigError(f"{path}: not valid YAML ({error}).") from None
    if content is None:
        return {}
    if not isinstance(content, dict):
        raise ConfigError(f"{path}: expected a mapping of settings (key: value lines), got {type(content).__name__}.")
    return content


# ---------------------------------------------------------------------------------------------------- presets


def _preset_folder():
    return resources.files("simcse_hub") / "presets"


def list_presets() -> dict[str, str]:
    """``{name: description}`` of the presets shipped with simcse_hub (the description is the file's first comment)."""
    presets = {}
    for entry in sorted(_preset_folder().iterdir(), key=lambda item: item.name):
        if entry.name.endswith(".yaml"):
            first = entry.read_text(encoding="utf-8").splitlines()[0]
            presets[entry.name[: -len(".yaml")]] = first.lstrip("# ").strip()
    return presets


def preset_path(name: str) -> Path:
    """The YAML file of preset ``name``; `ConfigError` listing the presets when there is none of that name."""
    entry = _preset_folder() / f"{name}.yaml"
    if not entry.is_file():
        raise ConfigError(f"--preset {name!r}: no such preset; expected one of {sorted(list_presets())}.")
    return Path(str(entry))


__all__ = ['ConfigError', 'TrainConfig', 'coerce', 'list_presets', 'preset_path', 'read_yaml']
