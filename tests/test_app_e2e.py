"""The web app as a person uses it: started on 127.0.0.1, driven in headless Chromium."""

import shutil
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

from conftest import write_fake_idx

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed"),
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def app_url(tmp_path):
    pytest.importorskip("gradio")
    import torch

    from digitlab.gan import Generator
    from digitlab.loaders import save_generator

    data = write_fake_idx(tmp_path / "d", n_train=300, n_test=50)
    torch.manual_seed(0)
    save_generator(Generator(), tmp_path / "gen")
    port = _free_port()
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


def test_draw_and_generate_in_a_browser(app_url, tmp_path):
    sync_api = pytest.importorskip("playwright.sync_api")
    shots = tmp_path / "screenshots"
    shots.mkdir()
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
            ],
        )
        page = browser.new_page(viewport={"width": 1280, "height": 1000})
        page.goto(app_url)
        canvas = page.locator("#pad canvas").last
        canvas.wait_for(timeout=60_000)
        page.locator("#pad button[aria-label='Brush']").click()
        box = canvas.bounding_box()
        x, y0 = box["x"] + box["width"] / 2, box["y"] + box["height"] * 0.2
        page.mouse.move(x, y0)
        page.mouse.down()
        for i in range(1, 21):  # a vertical stroke: a "1"
            page.mouse.move(x, y0 + i * box["height"] * 0.03)
        page.mouse.up()
        page.wait_for_function(
            "document.querySelector('#status') && "
            "document.querySelector('#status').innerText.includes('The CNN reads')",
            timeout=60_000,
        )
        page.screenshot(path=str(shots / "draw.png"), full_page=True)
        assert "kNN (k=3) votes" in page.locator("#vote").inner_text()

        page.get_by_role("tab", name="Generate").click()
        page.locator("#generate").click()
        page.wait_for_selector("#generated img", timeout=60_000)
        assert page.locator("#generated img").count() >= 1
        page.screenshot(path=str(shots / "generate.png"), full_page=True)

        page.get_by_role("tab", name="Morph").click()
        page.locator("#morph").click()
        page.wait_for_selector("#anim img", timeout=60_000)
        page.screenshot(path=str(shots / "morph.png"), full_page=True)

        page.get_by_role("tab", name="Explore").click()
        page.get_by_role("button", name="Show training images").click()
        page.wait_for_selector("#browse img", timeout=60_000)
        page.screenshot(path=str(shots / "explore.png"), full_page=True)
        browser.close()
    assert (shots / "draw.png").stat().st_size > 10_000
