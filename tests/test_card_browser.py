"""The model card in a real browser (Debian's headless Chromium via Playwright, no browser download), at a phone's
and a desktop's width: nothing wider than the screen but the tables' own scroll boxes, every chart inside the
page with its legend, readable text; screenshots under build/screenshots/."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from service.scoring.registry import Registry

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
SCREENSHOTS = Path(__file__).resolve().parents[1] / "build" / "screenshots"
pytestmark = pytest.mark.skipif(not Path(CHROMIUM).exists(),
                                reason="Debian's chromium is not installed (apt-get install chromium); "
                                       ".ci/run installs it")

# What the page measures in the browser: the document's overflow, each chart's box and legend, the smallest text.
MEASURE = """() => {
  const doc = document.scrollingElement;
  const charts = [...document.querySelectorAll('svg')].map(s => {
    const r = s.getBoundingClientRect();
    return {left: r.left, right: r.right, width: r.width, legend: !!s.querySelector('g[id^="legend"]')};
  });
  const texts = [...document.querySelectorAll('p, li, td, th, h1, h2, h3')].filter(e => e.textContent.trim());
  const smallest = Math.min(...texts.map(e => parseFloat(getComputedStyle(e).fontSize)));
  return {scrollWidth: doc.scrollWidth, width: window.innerWidth, charts, smallest};
}"""


@pytest.mark.parametrize("width", [390, 1280])
def test_the_model_card_reads_at_phone_and_desktop_width(champion_registry: Path, width: int) -> None:
    from playwright.sync_api import sync_playwright

    card = champion_registry / Registry(champion_registry).champion() / "model_card.html"
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
        try:
            page = browser.new_page(viewport={"width": width, "height": 900})
            page.goto(card.as_uri())
            seen = page.evaluate(MEASURE)
            page.screenshot(path=str(SCREENSHOTS / f"model-card-{width}.png"), full_page=True)
        finally:
            browser.close()
    assert seen["scrollWidth"] <= seen["width"], seen  # wide tables scroll in their own box, not the page
    assert len(seen["charts"]) == 5
    for chart in seen["charts"]:
        assert chart["legend"] and chart["left"] >= 0 and chart["right"] <= width, chart
    assert seen["smallest"] >= 12, seen
