"""The applicant's page in a real browser: Debian's headless Chromium, driven by Playwright (no browser download).

Starts the service as a real process on loopback, scores a declined applicant over HTTP, opens the page in both
languages, checks that the chart and the reasons are visible, asks for a human review by clicking the button,
and saves screenshots under build/screenshots/.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import httpx
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


def declined(base: str, key: str, raw: RawData) -> dict:
    from service.batch.requests import request_for

    for application_id in raw.applications["application_id"][:80]:
        r = httpx.post(f"{base}/v1/scores", json=request_for(raw, str(application_id)),
                       headers={"Authorization": f"Bearer {key}"}, timeout=10)
        d = r.json()
        if d["decision"] == "decline" and d["reasons"]:
            return d
    raise AssertionError("no declined applicant among 80")


def test_the_page_in_headless_chromium(server, small_raw: RawData) -> None:  # noqa: ANN001
    from playwright.sync_api import sync_playwright

    base, key = server
    d = declined(base, key, small_raw)
    url = d["explanation"]["url"]
    assert url.startswith(base)
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=[
            "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
            "--disable-component-update", "--disable-sync"])
        try:
            page = browser.new_page(viewport={"width": 390, "height": 844}, device_scale_factor=2)  # a phone
            for lang, field in (("zh", "text_zh"), ("en", "text_en")):
                page.goto(f"{url}?lang={lang}")
                bars = page.locator("#chart svg rect")
                assert bars.count() >= 2 and bars.first.is_visible()
                items = page.locator("#reasons li")
                assert items.count() == len(d["reasons"])
                for k, reason in enumerate(d["reasons"]):
                    assert items.nth(k).is_visible()
                    assert reason[field] in items.nth(k).inner_text()
                assert page.locator("#recourse").is_visible() and page.locator("#sources").is_visible()
                rules = page.locator("#rules li")
                assert rules.count() == sum(1 for h in d["rule_hits"] if h["action"] in ("decline", "refer"))
                width = page.evaluate("document.documentElement.scrollWidth")
                assert width <= 390, "the page must not scroll sideways on a phone"
                page.screenshot(path=str(SCREENSHOTS / f"explanation-{lang}.png"), full_page=True)
            page.fill("textarea[name=note]", "My orders doubled last month")
            page.click("#review button[type=submit]")
            page.wait_for_load_state()
            assert "being handled" in page.locator("#review").inner_text()
        finally:
            browser.close()
    queue = httpx.get(f"{base}/v1/reviews?status=pending", headers={"Authorization": f"Bearer {key}"}).json()["items"]
    assert any(q["decision_id"] == d["decision_id"] and q["requested_by"] == "applicant" for q in queue)


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
