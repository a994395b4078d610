"""From the former ``card_values`` module:

The values of a model card: read and checked (types, finite numbers, known splits and settings; a
`CardDataError` names the file and the field), and written as public text (no local path, no secret).

From the former ``model_card`` module:

The model card: one card-data object, filled by training and evaluation, saved beside the model, rendered from
the ``model_card.md`` template.

:class:`SimCSEModelCardData` is a :class:`huggingface_hub.CardData` (the pattern of setfit and
sentence-transformers): its fields are what the card says, its :meth:`~SimCSEModelCardData.to_dict` is the front
matter the Hub reads (``library_name: sentence-transformers`` for the widget, ``pipeline_tag``, tags, ``base_model``,
``datasets``, ``license``, ``language`` and a ``model-index`` of the STS results). The facts of the architecture
are read from the folder's ``config.json`` and sentence-transformers files each time; what training and evaluation
learn is kept in one file, ``simcse_card.json`` (:data:`CARD_DATA_FILE`). Evaluations are kept per split, setting
and task set, so a dev-split check never replaces the test results; the card shows one of them and says which.

Everything in the card data is public once the folder is pushed: no local path, no secret, only finite numbers
(:meth:`~SimCSEModelCardData.save` refuses anything else).
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from huggingface_hub import CardData, EvalResult, ModelCard, ModelCardData

from simcse_hub.evaluation import (
    DISPLAY_NAMES,
    HUB_DATASETS,
    SETTINGS,
    SPLITS,
    STS_TASKS,
)

# Settings that describe the machine or the run's bookkeeping rather than the recipe, or could hold a secret.
PRIVATE_KEY = re.compile(r"token|secret|password|credential|api_key|(^|_)(dir|path|file|files)$|^resume",
                         re.IGNORECASE)
LOCAL_PATH = re.compile(r"(?<![\w.:/])(?:~|[A-Za-z]:)?/[^\s;,'\"()]+")  # an absolute path inside a sentence


class CardDataError(ValueError):
    """A card-data file that cannot be read or written; the message names the file and the field."""


def read_json(path: str | os.PathLike) -> Any:
    """Read a JSON file, with an error naming the file, line and column when it does not parse."""
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise CardDataError(f"{path}: line {error.lineno}, column {error.colno}: invalid JSON ({error.msg}).") from None
    except UnicodeDecodeError as error:
        raise CardDataError(f"{path}: not UTF-8 text ({error.reason}).") from None


def hub_id(value: Any) -> str | None:
    """``value`` if it is a Hub repo id of the form ``namespace/name`` that is not a local path, else ``None``. (A
    bare ``name`` cannot be told from a folder name, so it is never taken for a Hub id.)

    >>> hub_id("sentence-transformers/all-MiniLM-L6-v2"), hub_id("my-bert"), hub_id("/opt/models/minilm")
    ('sentence-transformers/all-MiniLM-L6-v2', None, None)
    """
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    if (not isinstance(value, str) or value.count("/") != 1 or value.startswith((".", "/", "~")) or "\\" in value
            or Path(value).expanduser().exists()):
        return None
    try:
        validate_repo_id(value)
    except HFValidationError:
        return None
    return value


def scrub_paths(text: str) -> str:
    """``text`` with every absolute path replaced by ``a local folder`` (reasons and sources written into a card).

    >>> scrub_paths("stsb/dev.tsv.gz not found in /home/me/data")
    'stsb/dev.tsv.gz not found in a local folder'
    """
    return LOCAL_PATH.sub("a local folder", str(text))


def format_duration(seconds: float) -> str:
    """``4321.0`` -> ``"1 h 12 min 01 s"``."""
    seconds = float(seconds)
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min {secs:02d} s" if hours else f"{minutes} min {secs:02d} s"


def markdown_text(text: Any) -> str:
    """``text`` safe inside Markdown prose and tables: ``<sub-task>`` stays visible, ``|`` does not split a cell."""
    return str(text).replace("<", "&lt;").replace(">", "&gt;").replace("|", "\\|")


def format_value(value: Any) -> str:
    if isinstance(value, (bool, dict)):
        return json.dumps(value, sort_keys=True)  # true / false / {"a": 1}
    if isinstance(value, (list, tuple)):
        return ", ".join(format_value(v) for v in value)
    return f"{value:g}" if isinstance(value, float) else str(value)


def _is_path_like(value: Any) -> bool:
    return isinstance(value, str) and (os.path.isabs(value) or value.startswith(("./", "../", "~")))


def public_items(values: dict[str, Any]) -> list[tuple[str, str]]:
    """The ``(name, formatted value)`` pairs fit for a public card: no unknowns, local paths or secrets."""
    return [(name, format_value(value)) for name, value in values.items()
            if value not in (None, [], {}) and not PRIVATE_KEY.search(name) and not _is_path_like(value)]


# ---------------------------------------------------------------------------------------------------- checking


def expect(value: Any, types: type | tuple[type, ...], where: str, source: str, optional: bool = False) -> Any:
    """``value`` if it is of ``types`` (a bool is not a number, numbers are finite), else a `CardDataError`."""
    if value is None and optional:
        return None
    types = types if isinstance(types, tuple) else (types,)
    bad_bool = isinstance(value, bool) and bool not in types
    if not isinstance(value, types) or bad_bool or (isinstance(value, float) and not math.isfinite(value)):
        names = " or ".join(t.__name__ for t in types) + (" or null" if optional else "")
        shown = repr(value) if len(repr(value)) <= 60 else repr(value)[:57] + "..."
        raise CardDataError(f"{source}: {where} must be a finite {names}, got {shown}.")
    return value


NUMBER = (int, float)


def check_evaluation(record: Any, where: str, source: str) -> dict[str, Any]:
    """One evaluation record (what ``simcse-hub evaluate`` keeps), checked; a `CardDataError` names the field."""
    expect(record, dict, where, source)
    split, setting = record.get("split", "test"), record.get("setting", "all")
    if split not in SPLITS:
        raise CardDataError(f"{source}: {where}.split must be one of {list(SPLITS)}, got {split!r}.")
    if setting not in SETTINGS:
        raise CardDataError(f"{source}: {where}.setting must be one of {list(SETTINGS)}, got {setting!r}.")
    tasks = {}
    for task, entry in expect(record.get("tasks") or {}, dict, f"{where}.tasks", source).items():
        expect(entry, dict, f"{where}.tasks.{task}", source)
        tasks[str(task)] = {
            "spearman": expect(entry.get("spearman"), NUMBER, f"{where}.tasks.{task}.spearman", source, True),
            "n_pairs": expect(entry.get("n_pairs"), int, f"{where}.tasks.{task}.n_pairs", source, True),
        }
    missing = expect(record.get("missing") or {}, dict, f"{where}.missing", source)
    post = {}
    for name in ("whitening", "flow"):
        value = expect(record.get(name), dict, f"{where}.{name}", source, True)
        if value:
            post[name] = {k: v for k, v in public_items(value)}
    return {
        "split": split,
        "setting": setting,
        "tasks": tasks,
        "average": expect(record.get("average"), NUMBER, f"{where}.average", source, True),
        "missing": {str(task): scrub_paths(reason or "") for task, reason in missing.items()},
        "alignment": expect(record.get("alignment"), NUMBER, f"{where}.alignment", source, True),
        "uniformity": expect(record.get("uniformity"), NUMBER, f"{where}.uniformity", source, True),
        "mean_cosine": expect(record.get("mean_cosine"), NUMBER, f"{where}.mean_cosine", source, True),
        **{name: post.get(name) for name in ("whitening", "flow")},
    }


def evaluation_key(record: dict[str, Any]) -> tuple:
    """Evaluations with the same split, setting and task set replace each other; others are kept side by side."""
    return record["split"], record["setting"], tuple(sorted({*record["tasks"], *record["missing"]}))


BEFORE_AFTER = ("stsb_dev_spearman", "alignment", "uniformity", "mean_cosine")


def evaluation_tables(shown: dict[str, Any] | None, evaluations: list[dict[str, Any]]) -> dict[str, Any]:
    """The evaluation part of a card as the template reads it: the rows (task, Spearman, pairs) of the ``shown``
    evaluation in the order of the STS tasks, the tasks it misses and why, their average, the other evaluations
    recorded, the post-processing applied, and whether alignment and uniformity are known."""
    rows, missing, others = [], [], []
    if shown is not None:
        for task in [*STS_TASKS, *(t for t in shown["tasks"] if t not in STS_TASKS)]:
            entry = shown["tasks"].get(task)
            if entry is not None:
                score = "–" if entry["spearman"] is None else f"{entry['spearman']:.2f}"
                pairs = "" if entry["n_pairs"] is None else f"{entry['n_pairs']:,}"
                rows.append((DISPLAY_NAMES.get(task, task), score, pairs))
            else:
                missing.append((DISPLAY_NAMES.get(task, task), markdown_text(shown["missing"].get(task, ""))))
        others = [f"{r['split']} split ({', '.join(DISPLAY_NAMES.get(t, t) for t in r['tasks'])})"
                  for r in evaluations if r is not shown and r["tasks"]]
    scored = [entry["spearman"] for entry in (shown or {"tasks": {}})["tasks"].values()
              if entry["spearman"] is not None]
    post = [f"{name.replace('whitening', 'BERT-whitening').replace('flow', 'BERT-flow')} ("
            + markdown_text(", ".join(f"{k} = {v}" for k, v in values.items())) + ")"
            for name, values in ((n, (shown or {}).get(n)) for n in ("whitening", "flow")) if values]
    return {
        "eval_rows": rows,
        "eval_missing": missing,
        "eval_average": f"{sum(scored) / len(scored):.2f}" if scored else None,
        "eval_average_over": f"{len(scored)} task{'s' if len(scored) != 1 else ''}",
        "eval_others": others,
        "postprocessing": post,
        "has_alignment": shown is not None and shown["alignment"] is not None and shown["uniformity"] is not None,
    }


def before_after_rows(record: dict[str, Any] | None) -> list[tuple[str, str]]:
    """The rows of the before/after table: ``("Starting encoder" | "Trained model", "87.03 | 0.2630 | ...")``."""
    if not record:
        return []
    rows = []
    for name, key in (("Starting encoder", "before"), ("Trained model", "after")):
        values = record.get(key) or {}
        cells = [f"{values[m]:.2f}" if m == "stsb_dev_spearman" else f"{values[m]:.4f}" for m in BEFORE_AFTER
                 if isinstance(values.get(m), NUMBER) and math.isfinite(values[m])]
        if len(cells) == len(BEFORE_AFTER):
            rows.append((name, " | ".join(cells)))
    return rows if len(rows) == 2 else []


def format_before_after(record: dict[str, Any]) -> str:
    """The before/after table for the console."""
    lines = [f"What training changed ({record['pooler']} pooler, on STS-B dev; lower is better but for Spearman):",
             f"{'':18}{'Spearman':>10}{'Alignment':>11}{'Uniformity':>12}{'Mean cosine':>13}"]
    for name, row in before_after_rows(record):
        cells = row.split(" | ")
        lines.append(f"{name:18}" + "".join(f"{cell:>{width}}" for cell, width in zip(cells, (10, 11, 12, 13))))
    return "\n".join(lines)


def format_memory(size: Any, kind: Any = None) -> str:
    """``951677440, "GPU memory allocated by torch"`` -> ``"0.95 GB (GPU memory allocated by torch)"``."""
    return f"{int(size) / 1e9:.2f} GB ({kind or 'peak'})"

logger = logging.getLogger(__name__)

CARD_DATA_FILE = "simcse_card.json"
CARD_FILE = "README.md"
PLOT_FILE = "align_uniform.png"
TEMPLATE_NAME = "model_card.md"
LEGACY_FILES = ("simcse_training.json", "eval_results.json")  # the two files of simcse_hub 0.1 (read, not written)
# The comment every rendered card carries; a README.md without it is the author's own and is never replaced.
CARD_MARKER = "generated by simcse_hub"

TAGS = ["simcse", "sentence-transformers", "feature-extraction", "sentence-similarity"]
SETTING_TEXT = {
    "all": "one correlation over the concatenation of a year's sub-tasks, the SimCSE paper's setting",
    "mean": "the plain mean of the sub-tasks' correlations",
    "wmean": "the mean of the sub-tasks' correlations weighted by their numbers of pairs",
}
SPLIT_TEXT = {"test": ("test", None), "dev": ("validation", "STS-B dev and SICK-R trial; STS12-16 have no dev split")}
POOLERS = {
    "cls": "the first token's last hidden state through the SimCSE MLP head (Linear + Tanh)",
    "cls_mlp_only_train": "the first token's last hidden state (the MLP head was used in training only)",
    "cls_before_pooler": "the first token's last hidden state, without the MLP head",
    "avg": "the mean of the last layer's token states",
    "avg_top2": "the mean of the average of the last two layers' token states",
    "avg_first_last": "the mean of the average of the first and the last layers' token states",
}
OBJECTIVES = {
    "unsupervised": (
        "Unsupervised SimCSE: each sentence is its own positive under a second dropout mask, and the other sentences "
        "of the batch are its negatives"
    ),
    "supervised": (
        "Supervised SimCSE: each premise is pulled towards its entailment hypothesis and pushed away from the other "
        "sentences of the batch (and from its contradiction hypothesis, as a hard negative, where the data has one)"
    ),
    "mixed": (
        "SimCSE on several sources, each batch drawn from one of them: unlabelled sentences are their own positives "
        "under a second dropout mask, pairs and triplets bring their own positives (and hard negatives), and the "
        "other sentences of the batch are the negatives"
    ),
}
EXAMPLE_SENTENCES = ("A man is playing a guitar.", "A man is playing music.", "A woman is slicing an onion.")
BOOKKEEPING_KEYS = {"save_steps", "save_total_limit", "keep_checkpoints", "logging_steps", "report_to",
                    "eval_batch_size", "license", "overwrite_output_dir", "eval_steps"}


def template_path() -> Path:
    """The ``model_card.md`` template: the copy inside the installed package, else the repository's (editable)."""
    package_dir = Path(__file__).resolve().parent
    for candidate in (package_dir / TEMPLATE_NAME, package_dir.parent / TEMPLATE_NAME):
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(f"the model card template {TEMPLATE_NAME} is neither in {package_dir} (installed "
                            f"package) nor in {package_dir.parent} (source checkout); reinstall simcse-hub.")


# ---------------------------------------------------------------------------------------------------- card data


@dataclass
class SimCSEModelCardData(CardData):
    r"""What the model card says about a SimCSE model.

    The architecture (``encoder_type`` ... ``versions``) is read from the model folder by :meth:`from_folder`; the
    rest is filled by training (``simcse_hub.train``) and evaluation (``simcse-hub evaluate``), kept in
    ``simcse_card.json`` by :meth:`save`, and rendered by :func:`render_model_card`.

    Args:
        encoder_type (`str`): the wrapped encoder's ``model_type`` (``bert``, ``roberta``, ...).
        embedding_dim (`int`): size of the sentence embedding.
        pooler_type (`str`): the SimCSE pooler; ``mlp_only_train`` whether its MLP head served in training only.
        num_layers (`int`, *optional*), temperature (`float`, *optional*): from the config.
        max_seq_length (`int`, *optional*): truncation length of the sentence-transformers module.
        versions (`dict[str, str]`, *optional*): library versions that saved the model.
        model_name, model_id (`str`, *optional*): the card's title and what its snippets load (a repo id, or the
            folder as given before a push).
        base_model (`str`, *optional*): the Hub id of the encoder it was trained from (``base_model_name`` when it
            has none: a local folder's name, shown but not linked).
        language, license (`str`, *optional*): card metadata.
        objective (`str`, *optional*): ``"unsupervised"`` or ``"supervised"``.
        datasets (`list[dict]`, *optional*): ``{"name", "hub_id", "examples"}`` per training data set.
        hyperparameters (`dict`, *optional*): the training settings (paths and secrets are never shown).
        hardware, train_runtime_seconds, peak_memory, global_steps, best_step, best_stsb_dev_spearman: the training
            run (``peak_memory`` as text, e.g. ``"2.46 GB (process resident memory)"``).
        before_after (`dict`, *optional*): ``{"pooler", "before", "after"}``: STS-B dev Spearman, alignment,
            uniformity and mean cosine of the starting encoder and of the exported model (:data:`BEFORE_AFTER`).
        evaluations (`list[dict]`, *optional*): one record per split, setting and task set (see
            :func:`check_evaluation`); the card shows :meth:`shown_evaluation`.

    >>> data = SimCSEModelCardData.from_folder("outputs/quickstart")  # doctest: +SKIP
    >>> data.shown_evaluation()["tasks"]["STSBenchmark"]["spearman"]  # doctest: +SKIP
    82.64
    """

    encoder_type: str = "unknown"
    embedding_dim: int = 0
    pooler_type: str = "cls"
    mlp_only_train: bool = False
    num_layers: int | None = None
    temperature: float | None = None
    max_seq_length: int | None = None
    versions: dict[str, str] = field(default_factory=dict)
    model_name: str | None = None
    model_id: str | None = None
    base_model: str | None = None
    base_model_name: str | None = None
    language: str | list[str] | None = None
    license: str | None = None
    objective: str | None = None
    datasets: list[dict[str, Any]] = field(default_factory=list)
    hyperparameters: dict[str, Any] = field(default_factory=dict)
    hardware: str | None = None
    train_runtime_seconds: float | None = None
    peak_memory: str | None = None
    global_steps: int | None = None
    best_step: int | None = None
    best_stsb_dev_spearman: float | None = None
    evaluations: list[dict[str, Any]] = field(default_factory=list)
    before_after: dict[str, Any] | None = None
    plot: str | None = None
    example_sentences: tuple[str, ...] = EXAMPLE_SENTENCES

    # Fields kept in simcse_card.json, with their types (the architecture is read from config.json instead).
    SAVED = {
        "base_model": str, "base_model_name": str, "language": (str, list), "license": str, "objective": str,
        "datasets": list, "hyperparameters": dict, "hardware": str, "train_runtime_seconds": NUMBER,
        "peak_memory": str, "global_steps": int, "best_step": int, "best_stsb_dev_spearman": NUMBER,
        "evaluations": list, "before_after": dict,
    }

    def __post_init__(self) -> None:  # CardData's own __init__ is not called: the dataclass fields are the data
        self.ignore_metadata_errors = False

    # ------------------------------------------------------------------ reading

    @classmethod
    def from_config(cls, config: dict[str, Any], source: str = "config.json") -> SimCSEModelCardData:
        """The architecture, from a saved ``SimCSEConfig`` (the ``config.json`` dictionary)."""
        if config.get("model_type") != "simcse":
            raise CardDataError(f"{source}: model_type is {config.get('model_type')!r}, not 'simcse'; save the model "
                                "with simcse_hub.save_model(model, folder, tokenizer) first.")
        encoder = expect(config.get("encoder_config"), dict, "encoder_config", source)
        dim = next((encoder[k] for k in ("hidden_size", "dim", "d_model") if isinstance(encoder.get(k), int)), None)
        if dim is None:
            raise CardDataError(f"{source}: encoder_config has no hidden_size, dim or d_model.")
        layers = next((encoder[k] for k in ("num_hidden_layers", "n_layers") if isinstance(encoder.get(k), int)), None)
        return cls(encoder_type=str(encoder.get("model_type", "unknown")), embedding_dim=dim,
                   pooler_type=str(config.get("pooler_type", "cls")),
                   mlp_only_train=bool(config.get("mlp_only_train", False)), num_layers=layers,
                   temperature=config.get("temperature"),
                   base_model=hub_id(config.get("base_model_name_or_path")))

    @classmethod
    def from_folder(cls, folder: str | os.PathLike) -> SimCSEModelCardData:
        """Read a model folder: ``config.json`` (required), the sentence-transformers files, ``simcse_card.json``
        (or the two files of simcse_hub 0.1) and ``align_uniform.png``, whichever exist."""
        folder = Path(folder)
        if not (folder / "config.json").is_file():
            raise FileNotFoundError(f"{folder / 'config.json'} not found: {folder} is not a saved model folder.")
        data = cls.from_config(read_json(folder / "config.json"), str(folder / "config.json"))
        data.model_name = Path(os.path.abspath(folder)).name
        data.model_id = folder.as_posix() if not folder.is_absolute() else data.model_name
        if (folder / "sentence_bert_config.json").is_file():
            max_len = read_json(folder / "sentence_bert_config.json").get("max_seq_length")
            data.max_seq_length = max_len if isinstance(max_len, int) else None
        if (folder / "config_sentence_transformers.json").is_file():
            versions = read_json(folder / "config_sentence_transformers.json").get("__version__") or {}
            data.versions = {k: str(v) for k, v in versions.items() if v}
        if (folder / CARD_DATA_FILE).is_file():
            data.update(read_json(folder / CARD_DATA_FILE), str(folder / CARD_DATA_FILE))
        else:
            data._read_legacy(folder)
        data.plot = PLOT_FILE if (folder / PLOT_FILE).is_file() else None
        return data

    def update(self, values: dict[str, Any], source: str = CARD_DATA_FILE) -> SimCSEModelCardData:
        """Take in saved card data (the ``simcse_card.json`` dictionary), checking every field."""
        expect(values, dict, "the top level", source)
        for name, value in values.items():
            if name not in self.SAVED:
                continue  # written by a newer simcse_hub: ignored, not fatal
            setattr(self, name, expect(value, self.SAVED[name], name, source, optional=True))
        if self.objective is not None and self.objective not in OBJECTIVES:
            raise CardDataError(f"{source}: objective must be one of {sorted(OBJECTIVES)}, got {self.objective!r}.")
        self.base_model = hub_id(self.base_model)
        self.datasets = [self._dataset(entry, f"datasets[{i}]", source) for i, entry in enumerate(self.datasets or [])]
        self.evaluations = [check_evaluation(record, f"evaluations[{i}]", source)
                            for i, record in enumerate(self.evaluations or [])]
        self.hyperparameters = dict(self.hyperparameters or {})
        if isinstance(self.hyperparameters.get("temperature"), NUMBER):
            self.temperature = self.hyperparameters["temperature"]
        return self

    @staticmethod
    def _dataset(entry: Any, where: str, source: str) -> dict[str, Any]:
        expect(entry, dict, where, source)
        name = entry.get("name") or hub_id(entry.get("hub_id"))
        if not name:
            raise CardDataError(f"{source}: {where} needs a 'name'.")
        return {"name": scrub_paths(name), "hub_id": hub_id(entry.get("hub_id")),
                "examples": expect(entry.get("examples"), int, f"{where}.examples", source, optional=True)}

    def _read_legacy(self, folder: Path) -> None:
        """The ``simcse_training.json`` and ``eval_results.json`` that simcse_hub 0.1 wrote."""
        training, evaluation = (folder / name for name in LEGACY_FILES)
        if training.is_file():
            record = expect(read_json(training), dict, "the top level", str(training))
            best = expect(record.get("best"), dict, "best", str(training), optional=True) or {}
            peak = expect(record.get("peak_memory"), dict, "peak_memory", str(training), optional=True)
            self.update({
                **{key: record.get(key) for key in ("objective", "datasets", "hyperparameters", "hardware",
                                                    "train_runtime_seconds", "global_steps", "language", "license")},
                "base_model": hub_id(record.get("base_model")),
                "best_step": best.get("step"), "best_stsb_dev_spearman": best.get("stsb_dev_spearman"),
                "peak_memory": None if peak is None else format_memory(peak.get("bytes"), peak.get("kind")),
            }, str(training))
        if evaluation.is_file():
            self.evaluations = [check_evaluation(read_json(evaluation), "the top level", str(evaluation))]

    # ------------------------------------------------------------------ filling and saving

    def add_evaluation(self, results: dict[str, Any]) -> dict[str, Any]:
        """Keep one evaluation (a result of ``simcse_hub.evaluation.evaluate_sts``, with alignment and uniformity
        when computed), replacing an earlier one of the same split, setting and task set. Returns the kept record."""
        record = check_evaluation(results, "the evaluation", "evaluate")
        self.evaluations = [r for r in self.evaluations if evaluation_key(r) != evaluation_key(record)] + [record]
        return record

    def shown_evaluation(self) -> dict[str, Any] | None:
        """The evaluation the card shows: test before dev, then the one with the most tasks scored, then the latest."""
        ranked = sorted(enumerate(self.evaluations),
                        key=lambda item: (item[1]["split"] == "test", len(item[1]["tasks"]), item[0]))
        return ranked[-1][1] if ranked else None

    def saved_fields(self) -> dict[str, Any]:
        """What :meth:`save` writes: the fields training and evaluation fill."""
        return {name: getattr(self, name) for name in self.SAVED}

    def save(self, folder: str | os.PathLike, card: bool = True) -> Path:
        """Write ``simcse_card.json`` into ``folder`` and, with ``card``, render ``README.md`` there too, unless the
        folder holds a README.md that simcse_hub did not write (a hand-written card is never replaced).

        Raises:
            CardDataError: a value is not finite or holds a local path (nothing is written).
        """
        folder = Path(folder)
        content = json.dumps(self.saved_fields(), indent=2, ensure_ascii=False, allow_nan=False) + "\n"
        found = LOCAL_PATH.search(content)
        if found is not None and Path(found.group(0)).expanduser().exists():
            raise CardDataError(f"{CARD_DATA_FILE}: refusing to write the local path {found.group(0)!r} into "
                                f"{folder}; the card data is public once the folder is pushed.")
        (folder / CARD_DATA_FILE).write_text(content, encoding="utf-8")
        if card:
            readme = folder / CARD_FILE
            if readme.is_file() and CARD_MARKER not in readme.read_text(encoding="utf-8", errors="replace"):
                logger.info("Kept the hand-written %s (render the card with `simcse-hub card %s`).", readme, folder)
            else:
                render_model_card(self).save(readme)
        return folder / CARD_DATA_FILE

    # ------------------------------------------------------------------ rendering

    def recipe(self) -> dict[str, Any]:
        """The hyperparameters that define the training recipe (bookkeeping and unused MLM settings left out)."""
        unused = {"mlm_weight", "mlm_probability"} if self.hyperparameters.get("do_mlm") is False else set()
        if not self.hyperparameters.get("dataset_name", True):  # trained from a file: no Hub dataset settings
            unused |= {"dataset_split", "dataset_config_name"}
        return {k: v for k, v in self.hyperparameters.items() if k not in BOOKKEEPING_KEYS | unused}

    def eval_results(self) -> list[EvalResult]:
        """One :class:`~huggingface_hub.EvalResult` per scored task of the shown evaluation (cosine Spearman x100)."""
        shown = self.shown_evaluation()
        if shown is None:
            return []
        results = []
        for task, entry in shown["tasks"].items():
            if entry["spearman"] is None:
                continue
            # MTEB's copies hold the test splits (and STS-B's dev split); other dev sets keep their SentEval name.
            same_data = shown["split"] != "dev" or task == "STSBenchmark"
            results.append(EvalResult(
                task_type="STS", task_name="Semantic Textual Similarity",
                dataset_type=HUB_DATASETS.get(task, task) if same_data else task,
                dataset_name=DISPLAY_NAMES.get(task, task), dataset_split=SPLIT_TEXT[shown["split"]][0],
                metric_type="cosine_spearman", metric_value=entry["spearman"],
                metric_name=f"Cosine Spearman (x100, SentEval '{shown['setting']}')",
            ))
        return results

    def to_dict(self) -> dict[str, Any]:
        """The card's front matter (what ``card_data.to_yaml()`` writes)."""
        results = self.eval_results()
        return ModelCardData(
            base_model=self.base_model, datasets=[d["hub_id"] for d in self.datasets if d.get("hub_id")] or None,
            language=self.language, library_name="sentence-transformers", license=self.license,
            pipeline_tag="sentence-similarity", tags=list(TAGS),
            model_name=(self.model_name or "simcse-model") if results else None, eval_results=results or None,
            widget=[{"source_sentence": self.example_sentences[0], "sentences": list(self.example_sentences[1:])}],
        ).to_dict()

    def template_kwargs(self) -> dict[str, Any]:
        """What the template needs beyond the fields: formatted tables and sentences (unknowns are falsy)."""
        import simcse_hub

        if not self.model_id:
            raise ValueError("model_id is unknown: pass repo_id to render_model_card (or set model_id).")
        shown = self.shown_evaluation()
        pooler_key = "cls_mlp_only_train" if self.pooler_type == "cls" and self.mlp_only_train else self.pooler_type
        language = self.language if isinstance(self.language, str) else ", ".join(self.language or [])
        return {
            "marker": f"This card was {CARD_MARKER} {simcse_hub.__version__} from the model folder's config.json and "
                      f"{CARD_DATA_FILE}. `simcse-hub card` and `simcse-hub push` render it again while this line "
                      "is here.",
            "title": self.model_name or self.model_id,
            "base_model_text": (f"[{self.base_model}](https://huggingface.co/{self.base_model})" if self.base_model
                                else markdown_text(self.base_model_name) if self.base_model_name else None),
            "pooler_description": POOLERS.get(pooler_key, pooler_key),
            "objective_description": OBJECTIVES.get(self.objective or "", ""),
            "temperature_text": format_value(self.temperature) if self.temperature is not None else None,
            "language_text": language,
            "example_sentences_literal": json.dumps(list(self.example_sentences), ensure_ascii=False),
            "training_datasets": [(markdown_text(d["name"]) if not d["hub_id"] else f"[{markdown_text(d['name'])}]"
                                   f"(https://huggingface.co/datasets/{d['hub_id']})", d["hub_id"],
                                   f"{d['examples']:,}" if d.get("examples") is not None else "")
                                  for d in self.datasets],
            "hyperparameter_rows": [(k, markdown_text(v)) for k, v in public_items(self.recipe())],
            "run_facts": self.run_facts(),
            "evaluation": shown,
            "eval_split_note": SPLIT_TEXT[shown["split"]][1] if shown else None,
            "eval_setting_text": SETTING_TEXT.get(shown["setting"], "") if shown else None,
            **evaluation_tables(shown, self.evaluations),
            "versions_list": sorted({**self.versions, "simcse_hub": simcse_hub.__version__}.items()),
            "before_after_rows": before_after_rows(self.before_after),
        }

    def run_facts(self) -> list[tuple[str, str]]:
        """The training run in plain words: hardware, time, memory, steps, the checkpoint kept."""
        facts = []
        if self.hardware:
            facts.append(("Hardware", markdown_text(self.hardware)))
        if self.train_runtime_seconds is not None:
            facts.append(("Training time", format_duration(self.train_runtime_seconds)))
        if self.peak_memory:
            facts.append(("Peak memory", markdown_text(self.peak_memory)))
        if self.global_steps is not None:
            facts.append(("Optimisation steps", f"{int(self.global_steps):,}"))
        if self.best_step is not None and self.best_stsb_dev_spearman is not None:
            facts.append(("Kept checkpoint", f"step {self.best_step:,}, the best STS-B dev Spearman "
                          f"({self.best_stsb_dev_spearman:.2f}), as in the paper"))
        return facts


def render_model_card(
    folder_or_card_data: str | os.PathLike | SimCSEModelCardData,
    repo_id: str | None = None,
    template: str | os.PathLike | None = None,
) -> ModelCard:
    """Render the model card of a model folder (or of card data filled in memory).

    Args:
        folder_or_card_data (`str`, `os.PathLike` or `SimCSEModelCardData`): a folder written by
            ``simcse_hub.save_model`` or ``simcse-hub train``, or its card data.
        repo_id (`str`, *optional*): the Hub repo the card is for: the snippets load it and its name titles the
            card. Defaults to the folder as given (its name when the path is absolute).
        template (`str` or `os.PathLike`, *optional*): a Jinja template; defaults to the packaged ``model_card.md``.

    Returns:
        `huggingface_hub.ModelCard`: ``str(card)`` is the README.md text; ``card.data`` the front matter.

    >>> card = render_model_card("outputs/quickstart", repo_id="me/simcse-minilm")  # doctest: +SKIP
    """
    if isinstance(folder_or_card_data, SimCSEModelCardData):
        data = folder_or_card_data
    else:
        data = SimCSEModelCardData.from_folder(folder_or_card_data)
    if repo_id is not None:
        data = replace(data, model_id=repo_id, model_name=repo_id.split("/")[-1])
    return ModelCard.from_template(card_data=data, template_path=str(template or template_path()),
                                   data=data, **data.template_kwargs())


def write_model_card(folder: str | os.PathLike, repo_id: str | None = None) -> Path:
    """Render the card of ``folder`` and write it to ``folder/README.md`` (replacing one there).

    >>> write_model_card("outputs/quickstart", repo_id="me/simcse-minilm")  # doctest: +SKIP
    PosixPath('outputs/quickstart/README.md')
    """
    path = Path(folder) / CARD_FILE
    render_model_card(folder, repo_id=repo_id).save(path)
    logger.info("Wrote the model card to %s", path)
    return path


__all__ = ['CARD_DATA_FILE', 'CARD_FILE', 'CARD_MARKER', 'CardDataError', 'NUMBER', 'SimCSEModelCardData', 'before_after_rows', 'check_evaluation', 'evaluation_key', 'expect', 'format_before_after', 'format_duration', 'format_memory', 'format_value', 'hub_id', 'markdown_text', 'public_items', 'read_json', 'render_model_card', 'scrub_paths', 'template_path', 'write_model_card']
