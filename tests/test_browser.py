"""The applicant's page in a real browser: Debian's headless Chromium, driven by Playwright (no browser download).

Starts the service as a real process on loopback, scores a declined applicant over HTTP, opens the page in both
languages, checks that the chart and the reasons are visible, asks for a human review by clicking the button,
and saves screenshots under build/screenshots/.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import httpx
import numpy as np
import pytest

from service.scoring.raw import RawData
from tests.api_fixtures import make_api, running_service

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
SCREENSHOTS = Path(__file__).resolve().parents[1] / "build" / "screenshots"
pytestmark = pytest.mark.skipif(not Path(CHROMIUM).exists(),
                                reason="Debian's chromium is not installed (apt-get install chromium); "
                                       ".ci/run installs it")


@pytest.fixture()
def server(champion_registry: Path, tmp_path: Path):  # noqa: ANN201
    url = f"sqlite:///{tmp_path}/db.sqlite"
    api = make_api(url, champion_registry)  # migrates the database and creates the keys
    api.client.app.state.engine.dispose()
    with running_service(url, champion_registry) as (base, _):
        yield base, api.keys["all"]


def scored_where(base: str, key: str, champion_registry: Path, raw: RawData, want) -> dict:  # noqa: ANN001
    """The first application ``want`` accepts, chosen offline with the champion, then scored over HTTP."""
    from service.batch.requests import request_for
    from service.runtime import DEFAULT_POLICY
    from service.scoring.bundle import load_bundle
    from service.scoring.engine import Engine
    from service.scoring.policy import load_policy
    from service.scoring.registry import Registry

    engine = Engine(load_bundle(champion_registry / Registry(champion_registry).champion()))
    for i, s in enumerate(engine.score(raw.select(np.arange(800)), load_policy(DEFAULT_POLICY))):
        if want(s):
            r = httpx.post(f"{base}/v1/scores", json=request_for(raw, str(raw.applications["application_id"][i])),
                           headers={"Authorization": f"Bearer {key}"}, timeout=10)
            return r.json()
    raise AssertionError("no such application among 800")


def knock_out_with_a_remedy(s) -> bool:  # noqa: ANN001
    rules = s.recourse and s.recourse.rules
    return bool(s.outcome.decision == "decline" and s.reasons and rules and rules.decides and rules.decision)


# Every text of the page's charts (the gauge and the factor chart) as the browser draws it: the font size in CSS
# pixels scaled by the SVG's transform to the screen, its box and its SVG's box.
CHART_TEXTS = """() => [...document.querySelectorAll('svg.chart text')].map(t => {
  const m = t.getScreenCTM(), r = t.getBoundingClientRect(), s = t.ownerSVGElement.getBoundingClientRect();
  return {text: t.textContent, chart: t.ownerSVGElement.id || t.closest('section').id,
          px: parseFloat(getComputedStyle(t).fontSize) * Math.hypot(m.a, m.b),
          box: [r.left, r.top, r.right, r.bottom], svg: [s.left, s.top, s.right, s.bottom]};
})"""


def illegible(texts: list[dict]) -> list[str]:
    """Texts under 12 px, outside their chart, or over another text of the same chart."""
    bad = [f"{t['chart']}: {t['text']!r} at {t['px']:.1f} px" for t in texts if t["px"] < 12.0]
    for t in texts:
        (left, top, right, bottom), (sl, st, sr, sb) = t["box"], t["svg"]
        if left < sl - 0.5 or right > sr + 0.5 or top < st - 0.5 or bottom > sb + 0.5:
            bad.append(f"{t['chart']}: {t['text']!r} leaves its chart {t['box']} {t['svg']}")
    for i, a in enumerate(texts):
        for c in texts[i + 1:]:
            if a["chart"] == c["chart"]:
                w = min(a["box"][2], c["box"][2]) - max(a["box"][0], c["box"][0])
                h = min(a["box"][3], c["box"][3]) - max(a["box"][1], c["box"][1])
                if w > 0.5 and h > 0.5:
                    bad.append(f"{a['chart']}: {a['text']!r} overlaps {c['text']!r}")
    return bad


def test_the_page_in_headless_chromium(server, champion_registry: Path, small_raw: RawData) -> None:  # noqa: ANN001
    """A knock-out decline at a 360 px phone and a 1280 px desktop, both languages: the remedy first, every chart
    text at least 12 px, inside its chart and clear of the others; then the review button."""
    from playwright.sync_api import sync_playwright

    base, key = server
    d = scored_where(base, key, champion_registry, small_raw, knock_out_with_a_remedy)
    url = d["explanation"]["url"]
    assert url.startswith(base)
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=[
            "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
            "--disable-component-update", "--disable-sync"])
        try:
            for width in (360, 1280):
                page = browser.new_page(viewport={"width": width, "height": 800}, device_scale_factor=2)
                for lang, field in (("zh", "text_zh"), ("en", "text_en")):
                    page.goto(f"{url}?lang={lang}")
                    bars = page.locator("#chart svg rect")
                    assert bars.count() >= 2 and bars.first.is_visible()
                    assert page.locator("#gauge").is_visible()
                    items = page.locator("#reasons li")
                    assert items.count() == len(d["reasons"])
                    for k, reason in enumerate(d["reasons"]):
                        assert items.nth(k).is_visible()
                        assert reason[field] in items.nth(k).inner_text()
                    rules = page.locator("#rules li.rule:not(.extra)")
                    assert rules.count() == sum(1 for h in d["rule_hits"] if h["action"] in ("decline", "refer"))
                    # the rules' remedies come first, above the chart
                    assert page.locator("#rules").bounding_box()["y"] < page.locator("#chart").bounding_box()["y"]
                    remedy = next(r for r in d["recourse"]["rules"]["remedies"] if r["decision"])
                    assert remedy[field] in page.locator("#rules").inner_text()
                    assert page.locator("#recourse").is_visible() and page.locator("#sources").is_visible()
                    assert page.evaluate("document.documentElement.scrollWidth") <= width, "no sideways scroll"
                    texts = page.evaluate(CHART_TEXTS)
                    assert len(texts) >= 2 * bars.count() + 4  # every label, every value, the gauge's texts
                    assert illegible(texts) == [], (width, lang)
                    page.screenshot(path=str(SCREENSHOTS / f"explanation-{lang}-{width}.png"), full_page=True)
                if width == 360:  # the check sees small text (the old 7 px labels), and text that does not fit
                    page.add_style_tag(content="svg.chart text { font-size: 9px; }")
                    assert any(b.endswith(" px") for b in illegible(page.evaluate(CHART_TEXTS)))
                    page.add_style_tag(content="svg.chart text { font-size: 30px; }")
                    too_big = illegible(page.evaluate(CHART_TEXTS))
                    assert any("leaves its chart" in b or "overlaps" in b for b in too_big)
                page.close()
            page = browser.new_page(viewport={"width": 360, "height": 800})
            page.goto(f"{url}?lang=en")
            page.fill("textarea[name=note]", "My orders doubled last month")
            page.click("#review button[type=submit]")
            page.wait_for_load_state()
            assert "being handled" in page.locator("#review").inner_text()
        finally:
            browser.close()
    queue = httpx.get(f"{base}/v1/reviews?status=pending", headers={"Authorization": f"Bearer {key}"}).json()["items"]
    assert any(q["decision_id"] == d["decision_id"] and q["requested_by"] == "applicant" for q in queue)


def test_a_referral_and_an_approval_at_phone_and_desktop_widths(server, champion_registry: Path,  # noqa: ANN001
                                                                 small_raw: RawData) -> None:
    """The headline says what happens next; the gauge and the chart stay legible; screenshots of each."""
    from playwright.sync_api import sync_playwright

    base, key = server
    cases = {"refer": ("转人工审核：信贷人员将与您联系", "Referred: a credit officer will contact you"),
             "approve": ("已批准", "Approved")}
    decided = {kind: scored_where(base, key, champion_registry, small_raw,
                                  lambda s, kind=kind: s.outcome.decision == kind) for kind in cases}
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
        try:
            for width in (360, 1280):
                page = browser.new_page(viewport={"width": width, "height": 800})
                for kind, d in decided.items():
                    for k, lang in enumerate(("zh", "en")):
                        page.goto(f"{d['explanation']['url']}?lang={lang}")
                        assert page.locator("#decision").inner_text() == cases[kind][k]
                        assert page.locator("#gauge").is_visible()
                        assert illegible(page.evaluate(CHART_TEXTS)) == [], (kind, width, lang)
                        assert page.evaluate("document.documentElement.scrollWidth") <= width
                        page.screenshot(path=str(SCREENSHOTS / f"explanation-{kind}-{lang}-{width}.png"),
                                        full_page=True)
                page.close()
        finally:
            browser.close()


def test_the_credit_line_page_in_headless_chromium() -> None:
    """The borrower's page for a frozen line, both languages, rendered as the service renders it."""
    from playwright.sync_api import sync_playwright

    from service.web.page import render_line

    line = {"action": "freeze", "current_limit": 400_000.0, "recommended_limit": 200_000.0, "change": -200_000.0,
            "frozen_undrawn": 200_000.0, "lines_version": "1.0.0",
            "reasons": [{"code": "RECEIPTS_DIVERTED",
                         "text_zh": "近3个月常用账户回款为去年同期的30%，而申报销售额为去年同期的100%",
                         "text_en": "Receipts in the last 3 months are 30% of a year earlier while declared sales are "
                                    "100%"}],
            "engine_reasons": []}
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 420, "height": 900})
            for lang, heading, action in (("zh", "您的授信额度调整说明", "未使用额度暂时冻结"),
                                          ("en", "Your credit line: what changes and why", "Undrawn part frozen")):
                page.set_content(render_line(line=line, as_of="2026-12", lang=lang, expires="2026-12-31 00:00 UTC"))
                assert page.locator("h1").inner_text() == heading
                assert action in page.locator(".decision").inner_text()
                assert page.locator("#reasons li").count() == 1
                page.screenshot(path=str(SCREENSHOTS / f"line-{lang}.png"), full_page=True)
        finally:
            browser.close()


def test_the_api_docs_render_with_the_network_off(server) -> None:  # noqa: ANN001
    """A bank's intranet has no CDN: /docs rendered blank. Every request that leaves loopback is refused here,
    and both Swagger UI and ReDoc must still show the operations."""
    from playwright.sync_api import sync_playwright

    base, _ = server
    refused: list[str] = []

    def loopback_only(route) -> None:  # noqa: ANN001
        if route.request.url.startswith(base):
            route.continue_()
        else:
            refused.append(route.request.url)
            route.abort()

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
        try:
            context = browser.new_context(viewport={"width": 1280, "height": 900})
            context.route("**/*", loopback_only)
            page = context.new_page()
            page.goto(f"{base}/docs")
            page.locator(".opblock-summary-path").first.wait_for(timeout=20_000)  # Swagger UI's operation rows
            paths = page.locator(".opblock-summary-path").all_inner_texts()
            assert "/v1/scores" in [t.strip() for t in paths]
            page.screenshot(path=str(SCREENSHOTS / "docs-swagger.png"))
            page.goto(f"{base}/redoc")
            page.get_by_text("Score one application", exact=False).first.wait_for(timeout=20_000)
            page.screenshot(path=str(SCREENSHOTS / "docs-redoc.png"))
        finally:
            browser.close()
    assert refused == [], f"the docs asked for assets off the machine: {refused[:3]}"
