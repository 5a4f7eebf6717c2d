"""The consent page round trip in a real browser: Debian's headless Chromium, driven by Playwright (no browser
download), against `smecredit serve` on loopback.

The lender asks for every source; the applicant opens the link on a 360 px phone, grants some, declines one and
submits; the lender scores with the granted sources (the declined one is refused); the applicant withdraws one
from the same link; the lender's view shows it and the audit chain still verifies. Screenshots go to
build/screenshots/ (consent-*.png).
"""

from __future__ import annotations

import copy
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, select

from service import audit
from service.db.session import make_engine, session_factory
from service.db.tables import RawInput
from service.scoring.raw import MONTHLY_SOURCES
from tests.api_fixtures import make_api, running_service
from tests.test_browser import CHROMIUM, SCREENSHOTS

pytestmark = pytest.mark.skipif(not Path(CHROMIUM).exists(),
                                reason="Debian's chromium is not installed (apt-get install chromium); "
                                       ".ci/run installs it")
LAUNCH = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
          "--disable-component-update", "--disable-sync"]
CHOICES = {"tax": "grant", "payments": "grant", "utilities": "grant", "social_insurance": "decline",
           "bureau": "grant"}
# The smallest rendered text on the page, in CSS pixels (the explanation page's chart once shrank to about 7 px).
SMALLEST_FONT = """() => Math.min(...[...document.querySelectorAll('body *')]
    .filter(e => e.offsetParent !== null && [...e.childNodes].some(n => n.nodeType === 3 && n.textContent.trim()))
    .map(e => parseFloat(getComputedStyle(e).fontSize)))"""


def check_layout(page, width: int) -> None:  # noqa: ANN001
    assert page.evaluate("document.documentElement.scrollWidth") <= width, "no sideways scrolling"
    assert page.evaluate(SMALLEST_FONT) >= 12


def test_grant_decline_score_withdraw_in_headless_chromium(champion_registry: Path, tmp_path: Path,
                                                           example_request: dict) -> None:
    from playwright.sync_api import sync_playwright

    url = f"sqlite:///{tmp_path}/db.sqlite"
    api = make_api(url, champion_registry)  # migrates the database and creates the keys
    api.client.app.state.engine.dispose()
    key = api.keys["all"]
    auth = {"Authorization": f"Bearer {key}"}
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    with running_service(url, champion_registry) as (base, _):
        created = httpx.post(f"{base}/v1/consent-requests", headers=auth, timeout=10, json={
            "enterprise_id": example_request["profile"]["enterprise_id"], "sources": list(MONTHLY_SOURCES),
            "purpose": "评估本次经营贷款申请（申请金额与期限见申请书）"}).json()
        link = created["link"]["url"]
        assert link.startswith(f"{base}/v1/explanations/consent/")
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=LAUNCH)
            try:
                desktop = browser.new_page(viewport={"width": 1280, "height": 900})
                for lang in ("zh", "en"):
                    desktop.goto(f"{link}?lang={lang}")
                    check_layout(desktop, 1280)
                    desktop.screenshot(path=str(SCREENSHOTS / f"consent-form-{lang}-1280.png"), full_page=True)

                phone = browser.new_page(viewport={"width": 360, "height": 780}, device_scale_factor=2)
                phone.goto(f"{link}?lang=en")
                check_layout(phone, 360)
                phone.screenshot(path=str(SCREENSHOTS / "consent-form-en-360.png"), full_page=True)
                phone.goto(link)  # Chinese by default
                assert phone.locator("html").get_attribute("lang") == "zh-CN"
                assert phone.locator("fieldset.source").count() == len(MONTHLY_SOURCES)
                for source in MONTHLY_SOURCES:
                    box = phone.locator(f"#source-{source}")
                    assert box.is_visible() and "lender-a" in box.inner_text()
                    assert "保存 180 天" in box.inner_text()
                check_layout(phone, 360)
                phone.screenshot(path=str(SCREENSHOTS / "consent-form-zh-360.png"), full_page=True)

                # Submitting with a choice missing: the browser itself asks for it (required), nothing is sent.
                for source, choice in list(CHOICES.items())[:-1]:
                    phone.locator(f"#source-{source} input[value={choice}]").check()
                phone.click("#answer button[type=submit]")
                assert phone.locator("#answer").is_visible() and not phone.locator("#done").count()
                phone.locator("#source-bureau input[value=grant]").check()
                phone.locator("#source-bureau input[value=grant]").scroll_into_view_if_needed()
                phone.click("#answer button[type=submit]")
                phone.wait_for_load_state()
                assert phone.locator("#done").is_visible()
                for source, choice in CHOICES.items():
                    chip = phone.locator(f"#grant-{source} .chip")
                    assert chip.inner_text() == ("已同意" if choice == "grant" else "已拒绝")
                assert phone.locator("#grants form").count() == 4  # a withdrawal button per granted source
                check_layout(phone, 360)
                phone.screenshot(path=str(SCREENSHOTS / "consent-answered-zh-360.png"), full_page=True)

                # The lender scores under the request: the declined source is refused, the granted ones are used.
                body = copy.deepcopy(example_request)
                del body["consent"]
                body["consent_request_id"] = created["id"]
                refused = httpx.post(f"{base}/v1/scores", json=body, headers=auth, timeout=10)
                assert refused.status_code == 422
                assert refused.json()["detail"].startswith("body.data.social_insurance: the applicant declined")
                body["data"]["social_insurance"] = []
                scored = httpx.post(f"{base}/v1/scores", json=body, headers=auth, timeout=10)
                assert scored.status_code == 200, scored.text
                granted = {s for s, c in CHOICES.items() if c == "grant"}
                assert set(scored.json()["sources_used"]) == {s for s in granted if body["data"][s]}

                # Later, from the same link, in English: withdraw payments.
                phone.goto(f"{link}?lang=en")
                phone.click("#grant-payments button")
                phone.wait_for_load_state()
                assert "Withdrawn" in phone.locator("#done").inner_text()
                assert phone.locator("#grant-payments .chip").inner_text() == "Withdrawn"
                assert phone.locator("#grant-payments button").count() == 0
                check_layout(phone, 360)
                phone.screenshot(path=str(SCREENSHOTS / "consent-withdrawn-en-360.png"), full_page=True)
            finally:
                browser.close()

        view = httpx.get(f"{base}/v1/consent-requests/{created['id']}", headers=auth, timeout=10).json()
        assert {g["source"]: g["status"] for g in view["grants"]} == {
            "tax": "granted", "payments": "withdrawn", "utilities": "granted", "social_insurance": "declined",
            "bureau": "granted"}
        assert view["link"] is None
        again = httpx.post(f"{base}/v1/scores", json=body, headers=auth, timeout=10)
        assert again.status_code == 422 and again.json()["detail"].startswith("body.data.payments: the applicant "
                                                                               "withdrew payments")
    engine = make_engine(url)
    try:
        with session_factory(engine)() as session:
            assert session.scalar(select(func.count()).select_from(RawInput)) == 0  # purged by the withdrawal
            count, problems = audit.verify(session)
            assert problems == [] and count > 0
    finally:
        engine.dispose()
