"""The report as a learner reads it: headless Chromium at a laptop's and a phone's width."""

import os
import shutil
from pathlib import Path

import pytest

from conftest import write_fake_idx
from digitlab.pipeline import run_course
from digitlab.run_config import load_config

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        CHROMIUM is None, reason="Chromium is not installed (apt-get install chromium)"
    ),
]
TINY = [
    "knn.train_size=300",
    "sweep.train_size=300",
    "sweep.ks='1-3'",
    "cnn.train_size=300",
    "cnn.epochs=1",
    "cnn.threads=1",
    "cluster.train_size=300",
    "cluster.n_init=2",
]


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("report")
    data = write_fake_idx(tmp / "d", n_train=400, n_test=80)
    cfg = load_config("quick", overrides=[*TINY, f'data.data_dir="{data}"'])
    run_course(cfg, tmp / "run", stages=["data", "knn", "sweep", "cnn", "cluster"], quiet=True)
    return tmp / "run" / "report.html"


@pytest.mark.parametrize("width", [1366, 390])
def test_report_fits_the_screen_and_figures_open_full_size(report, tmp_path, width):
    sync_api = pytest.importorskip("playwright.sync_api")
    shots = Path(os.environ.get("DIGITLAB_SCREENSHOTS") or tmp_path) / "report"
    shots.mkdir(parents=True, exist_ok=True)
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu", "--no-first-run"]
        )
        page = browser.new_page(viewport={"width": width, "height": 900})
        page.route(
            "**/*",
            lambda r: (
                r.abort() if not r.request.url.startswith(("file:", "data:")) else r.continue_()
            ),
        )
        page.goto(report.as_uri())
        page.screenshot(path=str(shots / f"report-{width}.png"), full_page=True)
        # Nothing runs off the page sideways: the page itself never scrolls horizontally.
        assert page.evaluate("document.documentElement.scrollWidth") <= width + 1
        # The environment table's values wrap inside the screen.
        for box in page.locator("#timing table.kv td").all():
            b = box.bounding_box()
            assert b["x"] + b["width"] <= width + 1
        # Every table box that overflows shows its visible cue; none that fits does.
        cues = page.evaluate(
            """[...document.querySelectorAll('.scroll')].map(b => [
                 b.scrollWidth > b.clientWidth + 1,
                 b.previousElementSibling.classList.contains('on')])"""
        )
        assert cues and all(over == shown for over, shown in cues)
        # The CNN summary's shapes and parameter counts: on screen, or behind a visible cue.
        pre = page.locator("pre.summary")
        fits = pre.evaluate("e => e.parentElement.scrollWidth <= e.parentElement.clientWidth + 1")
        cue = pre.evaluate("e => e.parentElement.previousElementSibling.classList.contains('on')")
        assert fits or cue
        # A tap on a figure opens it at full size; another tap closes it.
        fig = page.locator("figure img").nth(3)
        fig.scroll_into_view_if_needed()
        fig.click()
        zoom = page.locator("#zoom img")
        assert page.locator("#zoom").evaluate("e => e.classList.contains('open')")
        natural = zoom.evaluate("e => e.naturalWidth")
        assert abs(zoom.bounding_box()["width"] - natural) <= 1
        page.screenshot(path=str(shots / f"report-zoom-{width}.png"))
        page.locator("#zoom").click()
        assert not page.locator("#zoom").evaluate("e => e.classList.contains('open')")
        browser.close()
