"""Why contrastive learning works, on your own model: the post-hoc fixes of anisotropy beside SimCSE, in one table.

Raw encoder vectors are anisotropic: they crowd in a narrow cone, so every pair of sentences looks similar (a high
mean cosine of random pairs). Two earlier fixes reshape that distribution after the fact, fitted on an unlabelled
corpus: BERT-whitening (``simcse_hub.whitening``, linear: it decorrelates and rescales, optionally keeping the k
directions of largest variance) and BERT-flow (``simcse_hub.flow``, a normalizing flow to a Gaussian). Contrastive
learning instead trains the encoder so that paraphrases are close (alignment) and everything is spread over the sphere
(uniformity). :func:`compare_postprocessing` scores a model as it is and with each fix, on the same pooled output, each
with STS Spearman, alignment, uniformity and the mean cosine of all pairs; :func:`comparison_table` lays the rows side
by side (a SimCSE model evaluated as it is makes the last row).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

from simcse_hub.evaluation import EncodeFn, embed, evaluate_model, memoized
from simcse_hub.loading import public_model_name
from simcse_hub.sts_data import DISPLAY_NAMES

logger = logging.getLogger(__name__)

REDUCED_K = 256  # BERT-whitening's reduced dimension for 768-dim encoders (half the dimension for smaller ones)


def reduced_k(dim: int, k: int | None = None) -> int:
    """The reduced whitening dimension: ``k`` when given, else 256, or half the dimension when that is smaller."""
    return k if k is not None else min(REDUCED_K, dim // 2)


def compare_postprocessing(
    encode_fn: EncodeFn,
    model_name: str,
    corpus: Sequence[str],
    corpus_name: str,
    whiten_k: int | None = None,
    flow_kwargs: dict[str, Any] | None = None,
    **evaluate_kwargs: Any,
) -> list[dict]:
    r"""The model as it is, + BERT-whitening (all dimensions), + BERT-whitening (reduced), + BERT-flow: one result of
    [`~simcse_hub.evaluation.evaluate_model`] each, the fixes fitted on the raw embeddings of ``corpus``.

    Every sentence (of the corpus and of the tasks) is encoded once, for all four rows.

    Args:
        encode_fn (`Callable[[list[str]], np.ndarray]`): raw (not normalised) embeddings of the model.
        model_name (`str`): names the rows.
        corpus (`Sequence[str]`): the unlabelled fitting corpus (``simcse_hub.whitening.read_corpus``).
        corpus_name (`str`): how the rows name the corpus (a file name).
        whiten_k (`int`, *optional*): the reduced whitening dimension (default :func:`reduced_k`).
        flow_kwargs (`dict`, *optional*): passed to ``Flow.fit`` (``steps``, ``seed``, ...).
        evaluate_kwargs: passed to ``evaluate_model`` (``tasks``, ``data_dir``, ``setting``, ``split``).

    >>> rows = compare_postprocessing(raw_encode, "all-MiniLM-L6-v2 [CLS]", corpus, "train.tsv.gz",
    ...                               tasks=["STSBenchmark"])  # doctest: +SKIP
    """
    from simcse_hub.flow import Flow
    from simcse_hub.whitening import Whitening

    encode_fn = memoized(encode_fn)
    raw = embed(encode_fn, list(corpus))  # (n, dim)
    k = reduced_k(raw.shape[1], whiten_k)
    transforms: list[tuple[str, dict[str, Any], Callable]] = [
        ("whitening", {"corpus": corpus_name, "k": None}, Whitening().fit(raw, corpus=corpus_name).transform),
        (f"whitening-{k}", {"corpus": corpus_name, "k": k}, Whitening().fit(raw, k=k, corpus=corpus_name).transform),
    ]
    flow = Flow().fit(raw, corpus=corpus_name, **(flow_kwargs or {}))
    transforms.append(("flow", {"corpus": corpus_name}, flow.transform))
    rows = [evaluate_model(encode_fn, model_name, **evaluate_kwargs)]
    for label, description, transform in transforms:

        def fixed(sentences: list[str], transform: Callable = transform):
            return transform(encode_fn(sentences))

        result = evaluate_model(fixed, f"{model_name} + {label}", **evaluate_kwargs)
        result["flow" if label == "flow" else "whitening"] = description
        rows.append(result)
    return rows


def comparison_table(rows: Sequence[dict]) -> str:
    r"""A Markdown table of results (one row each): the STS tasks scored, alignment, uniformity, mean cosine.

    >>> print(comparison_table(rows))  # doctest: +SKIP
    | Model | STS-B | SICK-R | Alignment | Uniformity | Mean cosine |
    ...
    """
    tasks = list(dict.fromkeys(task for row in rows for task in row["tasks"]))

    def cell(value: Any, digits: int) -> str:
        return "–" if value is None else f"{value:.{digits}f}"

    lines = ["| Model | " + " | ".join(DISPLAY_NAMES.get(t, t) for t in tasks) + " | Alignment | Uniformity | "
             "Mean cosine |", "|:--|" + "--:|" * (len(tasks) + 3)]
    for row in rows:
        scores = [cell(row["tasks"].get(task, {}).get("spearman"), 2) for task in tasks]
        model, _, fix = str(row["model"]).partition(" + ")
        name = public_model_name(model) + (f" + {fix}" if fix else "")
        lines.append(f"| {name} | " + " | ".join(scores) + f" | {cell(row.get('alignment'), 4)} | "
                     f"{cell(row.get('uniformity'), 4)} | {cell(row.get('mean_cosine'), 4)} |")
    first = rows[0] if rows else {"split": "test"}
    return "\n".join(lines) + (f"\n\nSpearman x100 on the {first['split']} split; alignment, uniformity and the mean "
                               "cosine of all pairs on STS-B dev (lower is better for those three).\n")


__all__ = ["compare_postprocessing", "comparison_table", "reduced_k"]
