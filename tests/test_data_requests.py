"""Referrals more data would settle (issue 12): a referral made only by the score's review band, from an applicant
who did not share a source, asks for the source (``data_requests``) and waits for it outside the person's queue;
every other referral goes to a person as before."""

from __future__ import annotations

import copy

import pytest

from service.batch.requests import request_for
from service.scoring.raw import MONTHLY_SOURCES, RawData
from tests.api_fixtures import Api


def _without(body: dict, source: str) -> dict:
    out = copy.deepcopy(body)
    out["consent"][source] = False
    out["data"][source] = []
    return out


def _adverse(d: dict) -> set[str]:
    return {h["code"] for h in d["rule_hits"] if h["action"] in ("refer", "decline")}


@pytest.fixture()
def referrals(api: Api, small_raw: RawData) -> dict[str, dict]:
    """The first decisions of each kind among applicants who withheld their bureau data."""
    found: dict[str, dict] = {}
    for application_id in small_raw.applications["application_id"][:400]:
        body = request_for(small_raw, str(application_id))
        d = api.score(_without(body, "bureau")).json()
        if d["decision"] != "refer":
            continue
        kind = "band" if _adverse(d) == {"SCORE_REVIEW_BAND"} else "rule"
        if kind not in found:
            found[kind] = d
            found[f"{kind}_body"] = body
        if "band" in found and "rule" in found:
            break
    assert "band" in found, "no referral by the score band among 400 applicants"
    return found


def test_a_band_referral_without_a_source_asks_for_it_and_waits_outside_the_queue(api: Api, referrals: dict) -> None:
    d = referrals["band"]
    withheld = [s for s in MONTHLY_SOURCES if not _without(referrals["band_body"], "bureau")["consent"][s]]
    assert "bureau" in withheld and d["data_requests"] == withheld  # what the applicant did not consent to share
    waiting = api.client.get("/v1/reviews?status=awaiting_data", headers=api.headers("review")).json()["items"]
    queue = api.client.get("/v1/reviews?status=pending", headers=api.headers("review")).json()["items"]
    assert d["decision_id"] in {r["decision_id"] for r in waiting}
    assert d["decision_id"] not in {r["decision_id"] for r in queue}
    note = next(r["request_note"] for r in waiting if r["decision_id"] == d["decision_id"])
    assert note == f"awaiting data: {', '.join(withheld)}"
    # The record says the same when read back, and a reviewer may still decide it.
    again = api.client.get(f"/v1/decisions/{d['decision_id']}", headers=api.headers("review")).json()
    assert again["data_requests"] == withheld
    r = api.client.post(f"/v1/reviews/{d['decision_id']}", headers=api.headers("review"),
                        json={"reviewer": "officer-1", "outcome": "approve", "reason": "bureau checked by phone"})
    assert r.status_code == 200 and r.json()["status"] == "decided"
    assert not [x for x in api.client.get("/v1/reviews?status=awaiting_data", headers=api.headers("review"))
                .json()["items"] if x["decision_id"] == d["decision_id"]]


def test_once_the_source_is_shared_it_is_not_asked_for(api: Api, referrals: dict) -> None:
    body = referrals["band_body"]
    d = api.score(body).json()
    assert "bureau" not in d["data_requests"]
    assert d["data_requests"] in ([], [s for s in MONTHLY_SOURCES if not body["consent"][s]])
    if d["decision"] == "refer" and not d["data_requests"]:
        queue = api.client.get("/v1/reviews?status=pending", headers=api.headers("review")).json()["items"]
        assert d["decision_id"] in {r["decision_id"] for r in queue}


def test_a_referral_by_another_rule_goes_to_a_person(api: Api, referrals: dict) -> None:
    if "rule" not in referrals:
        pytest.skip("no referral by a rule other than the score band among the first 400 applicants")
    d = referrals["rule"]
    assert d["data_requests"] == []
    queue = api.client.get("/v1/reviews?status=pending", headers=api.headers("review")).json()["items"]
    assert d["decision_id"] in {r["decision_id"] for r in queue}
