"""The results of ``simcse-hub evaluate`` for people: a Markdown table of several models, the console table of one,
the JSON file, and the alignment-uniformity figure of Wang & Isola (2020)."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from simcse_hub.sts_data import DISPLAY_NAMES, STS_TASKS


def _cell(value: float | None) -> str:
    return "–" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.2f}"


def results_to_markdown(results: dict | Sequence[dict]) -> str:
    r"""The Markdown table of one or several results of [`evaluate_sts`] (one row per model), as in the SimCSE paper.

    >>> print(results_to_markdown(results))  # doctest: +SKIP
    | Model | STS-B | SICK-R | Avg. |
    ...
    """
    runs = [results] if isinstance(results, dict) else list(results)
    present = {task for run in runs for task in list(run["tasks"]) + list(run.get("missing", {}))}
    columns = [task for task in STS_TASKS if task in present]
    lines = ["| Model | " + " | ".join(DISPLAY_NAMES.get(t, t) for t in columns) + " | Avg. |",
             "|:--|" + "--:|" * (len(columns) + 1)]
    for run in runs:
        cells = [_cell(run["tasks"].get(task, {}).get("spearman")) for task in columns]
        lines.append(f"| {run['model']} | " + " | ".join(cells) + f" | {_cell(run.get('average'))} |")
    first = runs[0]
    notes = [
        (
            f"Spearman correlation x100 between cosine similarity and gold scores ({first['split']} split; STS12-16 "
            f"aggregated with SentEval's `{first['setting']}` setting; no trained regressor). "
            "Avg. is over the tasks scored."
        )
    ]
    for run in runs:
        prefix = f"{run['model']}: " if len(runs) > 1 else ""
        if run.get("alignment") is not None:
            notes.append(f"{prefix}alignment {run['alignment']:.4f}, uniformity {run['uniformity']:.4f} (STS-B dev, "
                         "normalised embeddings; lower is better).")
        if run.get("whitening"):
            whitening = run["whitening"]
            notes.append(f"{prefix}BERT-whitening fitted on `{whitening['corpus']}` (k={whitening['k']}).")
        if run.get("flow"):
            notes.append(f"{prefix}BERT-flow fitted on `{run['flow']['corpus']}`.")
        for task, reason in run.get("missing", {}).items():
            notes.append(f"{prefix}{DISPLAY_NAMES.get(task, task)} not evaluated: {reason}.")
    return "\n".join(lines) + "\n\n" + "\n".join(f"* {note}" if len(notes) > 1 else note for note in notes) + "\n"


def format_results_table(results: dict) -> str:
    r"""A plain-text table of one result of [`evaluate_sts`] for the console (sub-tasks indented).

    >>> print(format_results_table(results))  # doctest: +SKIP
    """
    width = 26
    lines = [f"{results['model']}  (split {results['split']}, setting {results['setting']})",
             f"{'Task':<{width}}{'Spearman':>10}{'Pairs':>8}", "-" * (width + 18)]
    for task, entry in results["tasks"].items():
        lines.append(f"{DISPLAY_NAMES.get(task, task):<{width}}{_cell(entry['spearman']):>10}{entry['n_pairs']:>8}")
        for name, sub in entry.get("subtasks", {}).items():
            lines.append(f"{'  ' + name:<{width}}{_cell(sub['spearman']):>10}{sub['n_pairs']:>8}")
    scored = [DISPLAY_NAMES.get(task, task) for task in results["tasks"]]
    total = len(scored) + len(results.get("missing", {}))
    over = f"Average ({len(scored)} of {total} tasks)" if len(scored) < total else "Average"
    lines += ["-" * (width + 18), f"{over:<{width}}{_cell(results.get('average')):>10}"]
    if results.get("alignment") is not None:
        lines.append(f"{'Alignment (STS-B dev)':<{width}}{results['alignment']:>10.4f}")
        lines.append(f"{'Uniformity (STS-B dev)':<{width}}{results['uniformity']:>10.4f}")
        if results.get("mean_cosine") is not None:
            lines.append(f"{'Mean cosine (STS-B dev)':<{width}}{results['mean_cosine']:>10.4f}")
    if results.get("whitening"):
        lines.append(f"Whitening: fitted on {results['whitening']['corpus']} (k={results['whitening']['k']})")
    if results.get("flow"):
        lines.append(f"BERT-flow: fitted on {results['flow']['corpus']}")
    lines += [f"Not evaluated, {DISPLAY_NAMES.get(task, task)}: {reason}"
              for task, reason in results.get("missing", {}).items()]
    return "\n".join(lines)


def save_results(results: dict | Sequence[dict], path: str | os.PathLike) -> Path:
    """Write results as JSON (NaN written as ``null``).

    >>> save_results(results, "results.json")  # doctest: +SKIP
    """

    def clean(value: Any) -> Any:
        if isinstance(value, dict):
            return {key: clean(item) for key, item in value.items()}
        if isinstance(value, (list, tuple)):
            return [clean(item) for item in value]
        return None if isinstance(value, float) and math.isnan(value) else value

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(clean(results), indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return path


def plot_alignment_uniformity(points: Sequence[dict], out_png: str | os.PathLike, title: str | None = None) -> Path:
    r"""The alignment-uniformity plot of the SimCSE paper (Figure 2): x = uniformity, y = alignment (lower is better
    on both), one labelled point per checkpoint, arrows from each checkpoint to the next in the order given.

    Args:
        points (`Sequence[dict]`): ``{"label": str, "alignment": float, "uniformity": float}`` per checkpoint.
        out_png (`str` or `os.PathLike`): the PNG to write.
        title (`str`, *optional*): the figure title.

    >>> points = [{"label": "step 0", "alignment": 0.3, "uniformity": -1.5}]
    >>> plot_alignment_uniformity(points, "au.png")  # doctest: +SKIP
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    if not points:
        raise ValueError("plot_alignment_uniformity needs at least one point.")
    for index, point in enumerate(points):
        if any(point.get(key) is None for key in ("label", "alignment", "uniformity")):
            raise ValueError(f"points[{index}] must have 'label', 'alignment' and 'uniformity' values; got {point!r}.")
    xs = [float(p["uniformity"]) for p in points]
    ys = [float(p["alignment"]) for p in points]
    figure = Figure(figsize=(5, 4), dpi=150)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    axes.scatter(xs, ys, c=range(len(points)), cmap="viridis", s=40, zorder=3)  # colour: checkpoint order
    for i in range(len(points) - 1):
        axes.annotate("", xy=(xs[i + 1], ys[i + 1]), xytext=(xs[i], ys[i]),
                      arrowprops={"arrowstyle": "->", "color": "0.4", "lw": 1.0, "shrinkA": 5, "shrinkB": 5}, zorder=2)
    for x, y, point in zip(xs, ys, points):
        axes.annotate(str(point["label"]), (x, y), textcoords="offset points", xytext=(5, 5), fontsize=8)
    axes.margins(0.15)  # room for the labels
    axes.set_xlabel(r"$\ell_{\mathrm{uniform}}$")
    axes.set_ylabel(r"$\ell_{\mathrm{align}}$")
    axes.set_title(title or "Alignment vs. uniformity (lower is better)")
    axes.grid(True, alpha=0.3)
    figure.tight_layout()
    out_png = Path(out_png)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out_png, format="png")
    return out_png


__all__ = ["format_results_table", "plot_alignment_uniformity", "results_to_markdown", "save_results"]
