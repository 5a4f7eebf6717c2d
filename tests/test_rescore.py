"""Post-loan monitoring through the API: a booked loan rescored with its newest months warns on diverted receipts,
every result is recorded, sealed in the audit chain and replays identically; bad input gets a clear 4xx."""

from __future__ import annotations

import copy
import datetime as dt
from pathlib import Path

import pytest
from sqlalchemy import text
from typer.testing import CliRunner

from service.batch.requests import request_for
from service.cli import app as cli
from service.config import get_settings
from service.scoring.raw import MONTHLY_SOURCES, RawData, business_today
from tests.api_fixtures import Api, error_of, make_api

runner = CliRunner()


def months_back(n: int) -> list[str]:
    """The n complete months before this one, oldest first."""
    first = business_today().replace(day=1)
    out = []
    for k in range(n, 0, -1):
        m = first.month - 1 - k
        out.append(dt.date(first.year + m // 12, m % 12 + 1, 1).isoformat())
    return out


def newest_months(request: dict, *, receipts: float = 1.0) -> dict[str, list[dict]]:
    """Two years of months up to last month at the applicant's latest level (a steady business), with payment
    receipts in the last three months scaled by ``receipts`` while declared sales stay as they were."""
    months = months_back(24)
    data: dict[str, list[dict]] = {}
    for source in MONTHLY_SOURCES:
        rows = request["data"][source]
        data[source] = []
        for i, month in enumerate(months):
            if not rows:
                break
            row = {**copy.deepcopy(rows[-1]), "month": month}
            if source == "payments" and i >= len(months) - 3:
                row["inflow"], row["outflow"] = round(row["inflow"] * receipts, 2), round(row["outflow"] * receipts, 2)
            if source == "tax":
                row["filed_on_time"] = True
            if source == "social_insurance":
                row["missed_payment"], row["contributions_paid"] = False, max(row["contributions_paid"], 1000.0)
            data[source].append(row)
    return data


@pytest.fixture()
def booked(database_url: str, champion_registry: Path, small_raw: RawData,
           monkeypatch: pytest.MonkeyPatch) -> tuple[Api, dict, dict]:
    """A fresh database with one approved decision of lender-a booked as a loan; the CLI on the same database."""
    api = make_api(database_url, champion_registry)
    with api.client:
        for application_id in small_raw.applications["application_id"][:80]:
            request = request_for(small_raw, str(application_id))
            if not all(request["data"][s] for s in ("payments", "tax", "social_insurance")):
                continue
            decision = api.score(request).json()
            if decision["decision"] == "approve":
                break
        else:
            pytest.fail("no approved decision with payments, tax and social insurance among the first applications")
        loan = api.client.post("/v1/loans", headers=api.headers("score"), json={
            "decision_id": decision["decision_id"], "loan_reference": "LN-1", "product": "revolving_line",
            "drawn": round(decision["offer"]["limit"] / 2, 2), "origination_date": business_today().isoformat()}).json()
        monkeypatch.setenv("SMECREDIT_DATABASE_URL", database_url)
        monkeypatch.setenv("SMECREDIT_REGISTRY", str(champion_registry))
        get_settings.cache_clear()
        yield api, request, loan
        get_settings.cache_clear()
    api.client.app.state.engine.dispose()


def rescore(api: Api, items: list[dict], who: str = "score", **extra: object):  # noqa: ANN201
    return api.client.post("/v1/monitoring/rescore", headers=api.headers(who), json={"items": items, **extra})


def item(loan: dict, request: dict, **kw: float) -> dict:
    return {"loan_id": loan["id"], "consent": request["consent"], "data": newest_months(request, **kw)}


class TestRescore:
    def test_diverted_receipts_are_warned_recorded_and_replayed(self, booked) -> None:  # noqa: ANN001
        api, request, loan = booked
        steady = rescore(api, [item(loan, request)])
        assert steady.status_code == 200, steady.text
        s = steady.json()["items"][0]
        assert "receipts_diverted" not in s["triggers"]
        assert s["indicators"]["receipts_yoy"] == pytest.approx(1.0)
        diverted = rescore(api, [item(loan, request, receipts=0.3)]).json()["items"][0]
        assert diverted["warning"] and diverted["level"] == "act" and "receipts_diverted" in diverted["triggers"]
        assert diverted["indicators"]["receipts_yoy"] == pytest.approx(0.3)
        assert diverted["indicators"]["declared_sales_yoy"] == pytest.approx(1.0)
        why = {t["code"]: t for t in diverted["trigger_texts"]}
        assert why["receipts_diverted"]["text_en"] == ("Receipts in the last 3 months are 30% of a year earlier while "
                                                        "declared sales are 100%")
        assert "30%" in why["receipts_diverted"]["text_zh"]
        assert all(r["text_zh"] and r["text_en"] for r in diverted["reasons"])  # the model's own, when adverse
        assert s["line"]["action"] in ("hold", "raise") and s["line"]["frozen_undrawn"] == 0
        line = diverted["line"]
        assert line["action"] == "freeze" and line["current_limit"] == loan["limit"]
        assert line["frozen_undrawn"] == pytest.approx(loan["limit"] - loan["drawn"])
        assert line["recommended_limit"] == pytest.approx(max(loan["drawn"], loan["outstanding"]))
        assert line["reasons"][0]["code"] == "RECEIPTS_DIVERTED"
        assert line["reasons"][0]["text_en"] == why["receipts_diverted"]["text_en"]  # one wording for both
        assert diverted["exposure"] >= loan["outstanding"] and diverted["expected_loss"] > 0
        page = api.client.get(f"/v1/loans/{loan['id']}/rescorings?limit=1", headers=api.headers("review")).json()
        assert [r["id"] for r in page["items"]] == [s["id"]] and page["next_cursor"]
        rest = api.client.get(f"/v1/loans/{loan['id']}/rescorings?cursor={page['next_cursor']}",
                              headers=api.headers("review")).json()
        assert [r["id"] for r in rest["items"]] == [diverted["id"]] and rest["next_cursor"] is None
        for rescoring_id in (s["id"], diverted["id"]):
            result = runner.invoke(cli, ["monitor", "replay", str(rescoring_id)])
            assert result.exit_code == 0, result.output
            assert "identical" in result.output
        assert runner.invoke(cli, ["audit", "verify"]).exit_code == 0

    def test_an_edited_record_is_caught_by_verify_and_replay(self, booked) -> None:  # noqa: ANN001
        api, request, loan = booked
        r = rescore(api, [item(loan, request, receipts=0.3)]).json()["items"][0]
        with api.client.app.state.engine.begin() as conn:
            conn.execute(text("UPDATE rescorings SET level = NULL WHERE id = :id"), {"id": r["id"]})
        verified = runner.invoke(cli, ["audit", "verify"])
        assert verified.exit_code == 1 and f"rescorings:{r['id']}" in verified.output
        replayed = runner.invoke(cli, ["monitor", "replay", str(r["id"])])
        assert replayed.exit_code == 1 and "level: recorded None, replayed 'act'" in " ".join(replayed.output.split())

    def test_another_tenant_sees_nothing(self, booked) -> None:  # noqa: ANN001
        api, request, loan = booked
        r = rescore(api, [item(loan, request)], who="other")
        assert r.status_code == 404 and error_of(r)["detail"] == f"no loan {loan['id']} for this tenant"
        assert api.client.get(f"/v1/loans/{loan['id']}/rescorings", headers=api.headers("other")).status_code == 404


class TestBorrowersPage:
    def test_a_frozen_line_is_explained_in_chinese_and_english(self, booked) -> None:  # noqa: ANN001
        api, request, loan = booked
        steady = rescore(api, [item(loan, request)]).json()["items"][0]
        diverted = rescore(api, [item(loan, request, receipts=0.3)]).json()["items"][0]
        link = diverted["line"]["explanation"]
        assert link["url"].endswith(f"/v1/explanations/lines/{link['token']}")
        page = api.client.get(f"/v1/explanations/lines/{link['token']}")
        assert page.status_code == 200 and page.headers["content-security-policy"].startswith("default-src 'none'")
        assert "未使用额度暂时冻结" in page.text and "常用账户回款为去年同期的30%" in page.text
        assert "人工复核" in page.text  # the right to a human review
        en = api.client.get(f"/v1/explanations/lines/{link['token']}?lang=en").text
        assert "Undrawn part frozen for now" in en and "Receipts in the last 3 months are 30%" in en
        assert api.client.get(f"/v1/explanations/lines/{steady['line']['explanation']['token']}").status_code == 200
        listed = api.client.get(f"/v1/loans/{loan['id']}/rescorings", headers=api.headers()).json()["items"]
        assert all(r["line"]["explanation"] is None for r in listed)  # a token is shown once, never listed
        assert api.client.get(f"/v1/explanations/lines/{link['token']}x").status_code == 404
        with api.client.app.state.engine.begin() as conn:
            conn.execute(text("UPDATE line_links SET expires_at = :at"),
                         {"at": dt.datetime.now(dt.UTC) - dt.timedelta(minutes=1)})
        expired = api.client.get(f"/v1/explanations/lines/{link['token']}?lang=en")
        assert expired.status_code == 410 and "expired" in expired.text


class TestBadInput:
    def test_data_without_consent(self, booked) -> None:  # noqa: ANN001
        api, request, loan = booked
        body = item(loan, request)
        body["consent"] = {**body["consent"], "payments": False}
        r = rescore(api, [body])
        assert r.status_code == 422
        assert error_of(r)["detail"].startswith("body.items.0.data.payments: sent without consent")

    def test_dates_and_duplicates(self, booked) -> None:  # noqa: ANN001
        api, request, loan = booked
        tomorrow = (business_today() + dt.timedelta(days=1)).isoformat()
        r = rescore(api, [item(loan, request)], as_of=tomorrow)
        assert r.status_code == 422 and error_of(r)["errors"][0]["loc"] == ["body", "as_of"]
        r = rescore(api, [item(loan, request)], as_of="2020-01-01")
        assert r.status_code == 422 and "must not be before loan" in error_of(r)["detail"]
        r = rescore(api, [item(loan, request), item(loan, request)])
        assert r.status_code == 422 and error_of(r)["errors"][0]["loc"] == ["body", "items", 1, "loan_id"]
        r = rescore(api, [{**item(loan, request), "loan_id": 999_999}])
        assert r.status_code == 404
        r = rescore(api, [item(loan, request)], who="review")
        assert r.status_code == 403

    def test_a_repaid_loan_is_not_monitored(self, booked) -> None:  # noqa: ANN001
        from service.db import loans as loans_db

        api, request, loan = booked
        with api.client.app.state.sessions() as session:  # the service's own sealed write path
            row = loans_db.get_loan(session, tenant_id=1, loan_id=loan["id"])
            loans_db.record_servicing(session, loan=row, changes={"status": "repaid", "outstanding": 0.0},
                                      actor="test")
            session.commit()
        r = rescore(api, [item(loan, request)])
        assert r.status_code == 409 and "repaid" in error_of(r)["detail"]
        assert api.client.get(f"/v1/loans/{loan['id']}/rescorings", headers=api.headers()).json()["items"] == []
