"""The web app as a person uses it: started on 127.0.0.1, driven in headless Chromium or
through its API with gradio_client."""

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request

import numpy as np
import pytest

from conftest import write_fake_idx

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.slow
needs_chromium = pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def app_url(tmp_path_factory):
    """One app for the browser tests of both widths (each start took about 10 s); its own
    DIGITLAB_HOME, as the function-scoped isolation gives every test, set by hand: this
    fixture is made before that one runs."""
    pytest.importorskip("gradio")
    tmp_path = tmp_path_factory.mktemp("app")
    import torch

    from digitlab.gan import Generator
    from digitlab.loaders import save_generator

    data = write_fake_idx(tmp_path / "d", n_train=300, n_test=50)
    torch.manual_seed(0)
    save_generator(Generator(), tmp_path / "gen")
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("DIGITLAB_DATA", "DIGITLAB_MIRRORS")}
    env["DIGITLAB_HOME"] = str(tmp_path / "home")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "digitlab",
            "app",
            "--port",
            str(port),
            "--data-dir",
            str(data),
            "--model",
            str(tmp_path / "gen"),
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    url = f"http://127.0.0.1:{port}/"
    deadline = time.time() + 120
    while time.time() < deadline:
        try:
            urllib.request.urlopen(url, timeout=2).read()
            break
        except OSError:
            if proc.poll() is not None:
                pytest.fail(f"the app exited: {proc.stdout.read()}")
            time.sleep(0.5)
    else:
        proc.kill()
        pytest.fail("the app did not start within 120 s")
    yield url
    proc.terminate()
    proc.wait(timeout=30)


BROWSER_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def _shots_dir(tmp_path):
    """Screenshots go to $DIGITLAB_SCREENSHOTS when set (to look at them), else tmp_path."""
    out = os.environ.get("DIGITLAB_SCREENSHOTS")
    folder = __import__("pathlib").Path(out) / "app" if out else tmp_path / "screenshots"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _draw_stroke(page):
    canvas = page.locator("#pad canvas").last
    canvas.wait_for(timeout=60_000)
    box = canvas.bounding_box()
    x, y0 = box["x"] + box["width"] / 2, box["y"] + box["height"] * 0.2
    page.mouse.move(x, y0)
    page.mouse.down()
    for i in range(1, 21):  # a vertical stroke: a "1"
        page.mouse.move(x, y0 + i * box["height"] * 0.03)
    page.mouse.up()
    return box


def _status(page) -> str:
    return page.locator("#status").inner_text()


@needs_chromium
@pytest.mark.parametrize("width", [1366, 390])
def test_a_learner_in_a_browser(app_url, tmp_path, width):
    sync_api = pytest.importorskip("playwright.sync_api")
    shots = _shots_dir(tmp_path)
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=BROWSER_ARGS)
        page = browser.new_page(viewport={"width": width, "height": 900})
        page.goto(app_url)
        page.locator("#pad canvas").last.wait_for(timeout=60_000)
        # No "Layer 1" control; the pen is in hand without picking it.
        assert page.get_by_text("Layer 1").count() == 0
        page.wait_for_function(
            "document.querySelector(\"#pad button[aria-label='Brush']\") !== null", timeout=30_000
        )
        page.wait_for_timeout(1500)
        page.screenshot(path=str(shots / f"start-{width}.png"), full_page=True)
        # The hint above the canvas is not covered by the toolbar.
        hint = page.locator("#draw-hint").bounding_box()
        pad = page.locator("#pad").bounding_box()
        assert hint["y"] + hint["height"] <= pad["y"] + 1
        _draw_stroke(page)
        page.wait_for_function(
            "document.querySelector('#status') && "
            "document.querySelector('#status').innerText.includes('The CNN reads')",
            timeout=60_000,
        )
        assert "kNN (k=3) votes" in page.locator("#vote").inner_text()
        # Three neighbours, each caption fully inside the gallery, drawn pixel-sharp.
        page.wait_for_selector("#neighbours img", timeout=30_000)
        imgs = page.locator("#neighbours img")
        assert imgs.count() == 3
        assert imgs.first.evaluate("e => getComputedStyle(e).imageRendering") == "pixelated"
        # The answer's pictures come inline (no cache files, no extra request per picture).
        for sel in ("#neighbours img", "#seen img"):
            assert page.locator(sel).first.get_attribute("src").startswith("data:image/png;")
        gallery = page.locator("#neighbours").bounding_box()
        for i in range(3):
            b = imgs.nth(i).bounding_box()
            assert b["y"] + b["height"] <= gallery["y"] + gallery["height"] + 1
        page.screenshot(path=str(shots / f"draw-{width}.png"), full_page=True)

        # Clearing the canvas: the message appears once.
        page.locator("#pad button[aria-label*='lear']").first.click()
        page.wait_for_function(
            "document.querySelector('#status').innerText.includes('draw a digit first') || "
            "document.querySelector('#status').innerText.includes('Draw a digit')",
            timeout=30_000,
        )
        body = page.locator("body").inner_text()
        assert body.count("(or upload a picture of one) first") == 1, body
        # The pen is still in hand after clearing: drawing again gets an answer.
        page.wait_for_timeout(800)
        _draw_stroke(page)
        page.wait_for_function(
            "document.querySelector('#status').innerText.includes('The CNN reads')",
            timeout=60_000,
        )

        # A file that is not an image: the app's own clear message, no red error badge.
        bogus = tmp_path / "notes.png"
        bogus.write_text("this is not a picture")
        page.locator("#upload input[type=file]").set_input_files(str(bogus))
        page.wait_for_function(
            "document.querySelector('#status').innerText.includes('not an image')",
            timeout=30_000,
        )
        assert page.locator(".toast-body.error, .error").count() == 0
        page.screenshot(path=str(shots / f"upload-bad-{width}.png"), full_page=True)

        page.get_by_role("tab", name="Generate").click()
        page.locator("#generate").click()
        page.wait_for_selector("#generated img", timeout=60_000)
        assert page.locator("#generated img").count() >= 1
        page.screenshot(path=str(shots / f"generate-{width}.png"), full_page=True)
        page.get_by_label("seed (a whole number, 0 or more)").fill("-3")
        page.locator("#generate").click()
        page.wait_for_function(
            "document.querySelector('#gen-msg').innerText.includes('seed must be')",
            timeout=30_000,
        )

        page.get_by_role("tab", name="Morph").click()
        page.locator("#morph").click()
        page.wait_for_selector("#anim img", timeout=60_000)
        page.screenshot(path=str(shots / f"morph-{width}.png"), full_page=True)

        page.get_by_role("tab", name="Explore").click()
        page.locator("#browse-show").click()
        page.wait_for_function(
            "document.querySelector('#browse-msg').innerText.includes('page 1 of')",
            timeout=60_000,
        )
        first = page.locator("#browse img").first.get_attribute("src")
        page.locator("#browse-next").click()
        page.wait_for_function(
            "document.querySelector('#browse-msg').innerText.includes('page 2 of')",
            timeout=60_000,
        )
        assert page.locator("#browse img").first.get_attribute("src") != first
        page.screenshot(path=str(shots / f"explore-{width}.png"), full_page=True)
        browser.close()
    assert (shots / f"draw-{width}.png").stat().st_size > 10_000


def test_the_api_takes_what_its_schema_says_and_refuses_in_words(capfd):
    """Through gradio_client, as the tester did: a fractional seed was rounded by Gradio and
    drew 8 images; the digit, described as Literal['0', ..., '9'], refused '3'; the count
    slider stopped at 32 while the message said 1..64; and each refusal Gradio made printed a
    traceback in the server's log. Now every value reaches the handler, which answers."""
    pytest.importorskip("gradio")
    gradio_client = pytest.importorskip("gradio_client")
    import torch

    from digitlab import app
    from digitlab import app_handlers as h
    from digitlab.gan import Generator

    torch.manual_seed(0)
    dataset = type("DS", (), {"y_train": np.repeat(np.arange(10), 3),
                              "x_train": np.zeros((30, 28, 28), np.uint8)})()  # fmt: skip
    models = h.Models(generator=Generator().eval(), dataset=dataset)
    demo = app.serve(models, port=_free_port(), block=False)
    try:
        client = gradio_client.Client(demo.local_url, verbose=False)
        api = client.view_api(print_info=False, return_format="dict")["named_endpoints"]
        kinds = {
            p["parameter_name"]: p["python_type"]["type"] for p in api["/on_generate"]["parameters"]
        }
        assert kinds["digit"] == "Literal[" + ", ".join(f"'{d}'" for d in range(10)) + "]"
        assert kinds["count"] == kinds["seed"] == "int"
        count = next(b for b in demo.blocks.values() if getattr(b, "label", None) == "count")
        top = int(count.maximum)

        def generate(*args):
            images, message = client.predict(*args, api_name="/on_generate")
            return len(images), message

        assert generate("3", 2, 1) == (2, "")  # as the schema says
        assert generate(3, 2, 1) == (2, "")  # and as it worked before
        assert generate("3", top, 0)[0] == top
        for args, words in (
            (("3", 8, 1.5), "seed must be a whole number >= 0, got 1.5"),
            (("3", 8, -1), "seed must be a whole number >= 0"),
            (("3", 2.5, 1), "count must be a whole number"),
            (("3", top + 1, 1), f"count must be a whole number 1..{top}, got {top + 1}"),
            (("12", 2, 1), "digit must be a whole number 0..9"),
        ):
            n_images, message = generate(*args)
            assert n_images == 0 and words in message, args
        for args, words in (
            (("2", "6", 9.5), "steps must be a whole number"),
            ((2, "x", 9), "end must be a whole number 0..9"),
        ):
            path, message = client.predict(*args, api_name="/on_morph")
            assert path is None and words in message, args
        assert client.predict("2", 6, 3, api_name="/on_morph")[1] == ""
        for sent in ("6", 6):  # Explore: its dropdown, then the next page from its state
            assert "Digit 6: images 1–3 of 3" in client.predict(sent, api_name="/lambda")[1]
        assert "digit must be a whole number 0..9" in client.predict("6.5", api_name="/lambda")[1]
    finally:
        demo.close()
    log = capfd.readouterr()
    assert "Traceback" not in log.out + log.err
