"""The values of a model card: read and checked (types, finite numbers, known splits and settings; a
`CardDataError` names the file and the field), and written as public text (no local path, no secret).
"""

from __future__ import annotations

import json
import math
import os
import re
from pathlib import Path
from typing import Any

from simcse_hub.sts_data import DISPLAY_NAMES, SETTINGS, SPLITS, STS_TASKS

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


__all__ = ["NUMBER", "CardDataError", "before_after_rows", "check_evaluation", "evaluation_key", "expect",
           "format_before_after", "format_duration", "format_memory", "format_value", "hub_id", "markdown_text",
           "public_items", "read_json", "scrub_paths"]
