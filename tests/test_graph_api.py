"""The graph and the fraud score through the API: an applicant scored online gets the graph features the batch
gives, only with links consent; planted rings are stopped by the policy's fraud checks and the decision says why,
to the officer and (neutrally) to the applicant; replay reproduces it."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from service import audit
from service.batch.requests import request_for
from service.db.tables import Decision
from service.runtime import DEFAULT_POLICY
from service.scoring.catalog import FEATURE_NAMES
from service.scoring.features import build_features
from service.scoring.raw import MONTHLY_SOURCES, RawData, business_today
from service.scoring.registry import Registry
from tests.api_fixtures import Api, error_of, make_api
from tests.test_graph_features import GRAPH, _busiest, same
from training.fraud import FraudConfig, train_from_folder
from training.synth import GROUND_TRUTH_FILE


def snapshot(api: Api, decision_id: str) -> Decision:
    with api.client.app.state.sessions() as session:
        return session.get(Decision, decision_id)


def features_of(decision: Decision) -> np.ndarray:
    return np.array([np.nan if decision.features[n] is None else decision.features[n] for n in FEATURE_NAMES])


def application_ids(data: RawData, rows: np.ndarray) -> list[str]:
    return [str(a) for a in data.applications["application_id"][rows]]


@pytest.fixture()
def api(database_url: str, linked_registry: Path) -> Iterator[Api]:
    """The API on the champion of linked firms, their graph published."""
    a = make_api(database_url, linked_registry)
    with a.client:
        yield a
    a.client.app.state.engine.dispose()


class TestOnline:
    def test_an_applicant_scored_online_gets_the_batch_graph_features(self, api: Api, linked_raw: RawData) -> None:
        rows = _busiest(linked_raw, 6)
        batch = build_features(linked_raw).values
        for i, application_id in zip(rows, application_ids(linked_raw, rows), strict=True):
            body = request_for(linked_raw, application_id)
            assert body["consent"]["links"] is True and body["related"]["links"]
            r = api.score(body)
            assert r.status_code == 200, r.text
            online = features_of(snapshot(api, r.json()["decision_id"]))
            assert same(online[GRAPH], batch[i, GRAPH]), application_id
            # Without its related block the service matches the firm on what its graph holds: the same values.
            body = {**copy.deepcopy(body), "application": {**body["application"],
                                                           "application_id": application_id + "-b"}}
            del body["related"]
            assert same(features_of(snapshot(api, api.score(body).json()["decision_id"]))[GRAPH], batch[i, GRAPH])

    def test_without_links_consent_no_graph_feature_and_related_is_refused(self, api: Api,
                                                                          linked_raw: RawData) -> None:
        application_id = application_ids(linked_raw, _busiest(linked_raw, 1))[0]
        body = request_for(linked_raw, application_id)
        body["consent"]["links"] = False
        r = api.score(body)
        assert r.status_code == 422 and error_of(r)["detail"] == (
            "body.related: sent without consent (consent.links is not true): do not send related-party records the "
            "applicant has not agreed to share")
        del body["related"]
        r = api.score(body)
        assert r.status_code == 200, r.text
        record = snapshot(api, r.json()["decision_id"])
        assert np.isnan(features_of(record)[GRAPH]).all()
        assert "graph_version" not in record.context  # no graph was read for it

    def test_related_records_must_be_about_the_applicant(self, api: Api, linked_raw: RawData) -> None:
        body = request_for(linked_raw, application_ids(linked_raw, _busiest(linked_raw, 1))[0])
        me = body["profile"]["enterprise_id"]
        body["related"]["guarantees"] = [{"guarantor_id": "E-OTHER-1", "borrower_id": "E-OTHER-2", "amount": 1e5,
                                          "start": "2020-01-01", "end": None}]
        body["related"]["counterparties"] = [
            {"month": "2023-01-01", "counterparty_id": me, "role": "customer", "share": 0.5},
            {"month": "2023-01-01", "counterparty_id": "X1", "role": "customer", "share": 0.7}]
        body["related"]["links"] = [{"kind": "phone", "ref": "P1", "since": "1990-01-01"}]
        r = api.score(body)
        assert r.status_code == 422
        errors = error_of(r)["errors"]
        detail = " | ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in errors)
        for fragment in (f"body.related.guarantees.0: must have the applicant ({me}) as guarantor_id or borrower_id",
                         "body.related.counterparties.0.counterparty_id: must not be the applicant itself",
                         "body.related.counterparties: the shares of customers in 2023-01-01 add up to 1.2",
                         "body.related.links.0.since: must not be before profile.registration_date"):
            assert fragment in detail, (fragment, detail)


# ---------------------------------------------------------------------------------------------------------
# The fraud score, published beside the champion: the policy's checks read it.


@pytest.fixture(scope="module")
def fraud_registry(linked_registry: Path, linked_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The champion registry with a fraud model trained on the small folder's planted rings."""
    root = tmp_path_factory.mktemp("fraud-registry")
    for item in linked_registry.iterdir():
        target = root / item.name
        if item.is_dir():
            import shutil

            shutil.copytree(item, target)
        else:
            target.write_bytes(item.read_bytes())
    # 3,000 firms hold a dozen rings: wider validation and test months keep five ring applications in each
    train_from_folder(linked_dir, FraudConfig(seed=7, valid_share=0.25, test_share=0.35), registry=root)
    return root


@pytest.fixture()
def fraud_api(fraud_registry: Path, tmp_path: Path) -> Iterator[Api]:
    a = make_api(f"sqlite:///{tmp_path}/fraud.db", fraud_registry)
    with a.client:
        yield a
    a.client.app.state.engine.dispose()


def test_planted_rings_are_stopped_and_explained(fraud_api: Api, linked_dir: Path, linked_raw: RawData,
                                                 fraud_registry: Path) -> None:
    truth = set(pq.read_table(linked_dir / GROUND_TRUTH_FILE)["enterprise_id"].to_pylist())
    apps = linked_raw.applications
    firm = linked_raw.profile["enterprise_id"][apps["enterprise_row"]]
    ring = np.array([e in truth for e in firm])
    latest = np.argsort(apps["application_date"])[::-1]  # the fraud model's test months
    rings = [i for i in latest if ring[i]][:8]
    honest = [i for i in latest if not ring[i]][:40]
    codes = {}
    for i in rings + honest:
        r = fraud_api.score(request_for(linked_raw, str(apps["application_id"][i])))
        assert r.status_code == 200, r.text
        body = r.json()
        hits = {h["code"] for h in body["rule_hits"]}
        codes[i] = (body["decision"], hits, body["decision_id"], body["explanation"]["token"])
    fraud = {"APPLICATION_TO_VERIFY", "APPLICATION_TO_VERIFY_HIGH", "SHARED_ACCOUNT_YOUNG_FIRMS"}
    caught = [i for i in rings if codes[i][1] & fraud and codes[i][0] != "approve"]
    assert len(caught) >= 0.75 * len(rings), {i: codes[i][:2] for i in rings}
    wrongly = [i for i in honest if codes[i][1] & fraud]
    assert len(wrongly) <= 2, {i: codes[i][:2] for i in wrongly}

    i = caught[0]
    decision, hits, decision_id, token = codes[i]
    record = snapshot(fraud_api, decision_id)
    assert 0 <= record.context["fraud"]["fraud_score"] <= 1 and record.context["fraud"]["fraud_flag"] in (0.0, 1.0)
    # The record names the graph and the fraud model it was decided with, as it names the credit model.
    served = fraud_api.client.app.state.champion.get()
    assert (record.context["graph_version"], record.context["fraud_model_version"]) == (
        served.graph.version, served.fraud.version)
    assert record.context["graph_version"].startswith("g-") and record.context["fraud_model_version"].startswith("f-")
    # The officer's queue names the checks; the applicant's page gives the neutral reason, no accusation.
    queue = fraud_api.client.get("/v1/reviews", headers=fraud_api.headers("review")).json()
    note = next(item["request_note"] for item in queue["items"] if item["decision_id"] == decision_id) \
        if decision == "refer" else None
    if note is not None:
        assert any(code in note for code in hits & fraud), note
    page = fraud_api.client.get(f"/v1/explanations/{token}?lang=en")
    assert page.status_code == 200
    assert "fraud" not in page.text.lower()
    assert "verif" in page.text.lower() or "confirm" in page.text.lower()
    # Replay from the stored snapshot and context (the fraud facts included) gives the same decision.
    result = audit.replay(record, registry=fraud_registry, policy_dirs=[DEFAULT_POLICY.parent])
    assert result.differences == [] and result.scored.outcome.decision == decision
    assert Registry(fraud_registry).champion() is not None


def test_withdrawing_links_consent_deletes_the_kept_references(api: Api, linked_raw: RawData) -> None:
    from sqlalchemy import func, select

    from service.db.tables import VelocityKey

    body = request_for(linked_raw, application_ids(linked_raw, _busiest(linked_raw, 1))[0])
    ref = api.score(body).json()["applicant_ref"]

    def kinds() -> dict[str, int]:
        with api.client.app.state.sessions() as session:
            return dict(session.execute(select(VelocityKey.kind, func.count()).where(
                VelocityKey.applicant_ref == ref).group_by(VelocityKey.kind)).all())

    before = kinds()
    assert before.get("firm") == 1 and sum(before.values()) > 1  # owner, phone and account keys were kept
    r = api.client.post(f"/v1/applicants/{ref}/consents/revoke", headers=api.headers("score"),
                        json={"sources": ["links"], "reason": "applicant withdrew related-party consent"})
    assert r.status_code == 200, r.text
    assert kinds() == {"firm": 1}  # the firm's own application count stays, as its decision does


def test_links_asked_on_the_consent_page_are_used_only_while_granted(api: Api, linked_raw: RawData) -> None:
    """The applicant's own page asks for links like a monthly source: granted, the related block is scored and
    the grant recorded; declined, the block is refused naming it and no graph feature is used; withdrawn on the
    page, the kept owner, phone and account references go, as with the lender's withdrawal."""
    from sqlalchemy import select

    from service.db.tables import Consent, VelocityKey

    ids = application_ids(linked_raw, _busiest(linked_raw, 2))
    sources = [*MONTHLY_SOURCES, "links"]
    form = {"Content-Type": "application/x-www-form-urlencoded"}

    def ask_and_answer(body: dict, links: str) -> dict:
        created = api.client.post("/v1/consent-requests", headers=api.headers("score"), json={
            "enterprise_id": body["profile"]["enterprise_id"], "sources": sources, "language": "en",
            "purpose": "assess this business loan application"}).json()
        path = f"/v1/explanations/consent/{created['link']['token']}"
        page = api.client.get(path + "?lang=en").text
        assert "Related parties" in page and "receiving accounts" in page  # what it holds, in the applicant's terms
        choices = "&".join(f"{s}={'grant' if s != 'links' else links}" for s in sources)
        assert api.client.post(path + "?lang=en", content=choices, headers=form,
                               follow_redirects=False).status_code == 303
        return {**created, "path": path}

    def under(body: dict, created: dict) -> dict:
        out = {k: v for k, v in copy.deepcopy(body).items() if k != "consent"}
        return {**out, "consent_request_id": created["id"]}

    granted_body = request_for(linked_raw, ids[0])
    granted = ask_and_answer(granted_body, "grant")
    r = api.score(under(granted_body, granted))
    assert r.status_code == 200, r.text
    record = snapshot(api, r.json()["decision_id"])
    assert not np.isnan(features_of(record)[GRAPH]).all() and "graph_version" in record.context
    ref = r.json()["applicant_ref"]
    with api.client.app.state.sessions() as session:
        assert session.scalar(select(Consent.granted).where(Consent.decision_id == record.id,
                                                            Consent.source == "links")) is True
        assert session.scalar(select(VelocityKey.id).where(VelocityKey.applicant_ref == ref,
                                                           VelocityKey.kind != "firm").limit(1)) is not None
    r = api.client.post(granted["path"] + "/withdraw?lang=en", content="source=links", headers=form,
                        follow_redirects=False)
    assert r.status_code == 303, r.text
    with api.client.app.state.sessions() as session:
        assert session.scalar(select(VelocityKey.id).where(VelocityKey.applicant_ref == ref,
                                                           VelocityKey.kind != "firm").limit(1)) is None
    r = api.score(under(granted_body, granted))
    assert r.status_code == 422 and error_of(r)["detail"].startswith(
        f"body.related: the applicant withdrew links in consent request {granted['id']}")

    declined_body = request_for(linked_raw, ids[1])
    declined = ask_and_answer(declined_body, "decline")
    r = api.score(under(declined_body, declined))
    assert r.status_code == 422
    assert [e["loc"] for e in error_of(r)["errors"]] == [["body", "related"]]
    without = {k: v for k, v in under(declined_body, declined).items() if k != "related"}
    r = api.score(without)
    assert r.status_code == 200, r.text
    assert np.isnan(features_of(snapshot(api, r.json()["decision_id"]))[GRAPH]).all()


def test_a_rescoring_reads_the_graph_only_when_the_decision_did(database_url: str, linked_registry: Path,
                                                                 linked_raw: RawData, tmp_path: Path) -> None:
    """Early warning compares a loan's PD now with the PD of its decision's features: a rescoring must read the
    related-party features when the decision did (links consent), as of its own month, and not otherwise. A lender
    whose policy approves nearly anything books the loans (the small model refers most of these applicants)."""
    from service.db.tables import Rescoring
    from tests.test_fraud_checks import fraud_api as lenient_api
    from tests.test_rescore import newest_months

    api = lenient_api(database_url, linked_registry, tmp_path, [])

    def rescored_graph(body: dict) -> np.ndarray:
        decision = api.score(body, who="fraud").json()
        assert decision["decision"] == "approve", decision
        loan = api.client.post("/v1/loans", headers=api.headers("fraud"), json={
            "decision_id": decision["decision_id"], "loan_reference": f"LN-{decision['decision_id'][:8]}",
            "product": "revolving_line", "drawn": round(decision["offer"]["limit"] / 2, 2),
            "origination_date": business_today().isoformat()}).json()
        r = api.client.post("/v1/monitoring/rescore", headers=api.headers("fraud"), json={"items": [
            {"loan_id": loan["id"], "consent": body["consent"], "data": newest_months(body)}]})
        assert r.status_code == 200, r.text
        with api.client.app.state.sessions() as session:
            row = session.get(Rescoring, r.json()["items"][0]["id"])
            return np.array([np.nan if row.features[FEATURE_NAMES[j]] is None else row.features[FEATURE_NAMES[j]]
                             for j in GRAPH])

    with api.client:
        body = request_for(linked_raw, application_ids(linked_raw, _busiest(linked_raw, 1))[0])
        unlinked = {**copy.deepcopy(body), "consent": {**body["consent"], "links": False},
                    "application": {**body["application"], "application_id": body["application"]["application_id"]
                                    + "-u"}}
        del unlinked["related"]
        assert not np.isnan(rescored_graph(body)).all()
        assert np.isnan(rescored_graph(unlinked)).all()
    api.client.app.state.engine.dispose()


def test_a_stored_book_is_stressed_with_the_graph_as_its_folder_is(linked_raw: RawData,
                                                                   linked_registry: Path) -> None:
    """Stress from the decisions' stored requests reads the related-party features as the folder's book does (the
    lender's graph and each request's own rows, with its links consent), and none for a loan whose applicant did
    not consent: the same features as from the folder, and other PDs once the links are withheld. The scenario
    keeps the graph (before, the folder's book and the shocked copy both dropped it). The stressed totals of the
    two paths differ for a reason of their own: the scenario's random draws follow each book's firm order."""
    from service.monitoring import stress as st
    from service.scoring.bundle import load_bundle
    from service.scoring.engine import Engine
    from service.scoring.graph import registry_graph
    from service.scoring.policy import load_policy
    from service.scoring.raw import month_index

    registry = Registry(linked_registry)
    engine = Engine(load_bundle(registry.path(registry.champion())), graph=registry_graph(linked_registry))
    policy, config, scenario = load_policy(DEFAULT_POLICY), st.load_config(), st.load_scenario("severe")
    apps = linked_raw.applications
    as_of = int(month_index(np.array([np.datetime64("2025-10-01")]))[0])  # the folders' last month of data
    rows = np.flatnonzero(month_index(apps["application_date"]) == as_of + 1)[:40]
    n = len(rows)
    book = {"loan_id": np.array([f"L{a}" for a in apps["application_id"][rows]], dtype=object),
            "enterprise_id": linked_raw.profile["enterprise_id"][apps["enterprise_row"][rows]],
            "application_id": apps["application_id"][rows],
            "product": np.array(["revolving_line", "term_loan"] * n, dtype=object)[:n],
            "limit": np.full(n, 100_000.0), "drawn": np.full(n, 60_000.0), "outstanding": np.full(n, 50_000.0),
            "term_months": np.full(n, 12.0), "apr": np.full(n, 0.1), "status": np.array(["current"] * n, dtype=object),
            "as_of_month": np.full(n, as_of)}
    requests = [request_for(linked_raw, str(a)) for a in apps["application_id"][rows]]
    assert all(r["consent"]["links"] for r in requests)
    # Only loans whose stored data reaches the book date: a request whose data ends earlier is scored as of then,
    # unlike the folder's book (tests/test_stress.py), which is not what this test is about.
    full = st.loans_from_requests(requests, book, config)[0].shock_end == as_of
    book = {k: v[full] for k, v in book.items()}
    requests = [r for r, keep in zip(requests, full, strict=True) if keep]
    assert len(requests) >= 30
    stored, _ = st.loans_from_requests(requests, book, config)
    folder = st.book_loans(linked_raw, book, config)
    graph = [FEATURE_NAMES.index(n) for n in FEATURE_NAMES if n.startswith("graph_")]
    np.testing.assert_array_equal(st.book_features(engine, stored.raw, stored.links_withheld).values,
                                  st.book_features(engine, folder.raw).values)
    shocked, _ = st.apply_scenario(folder.raw, scenario, folder.shock_end)
    assert (shocked.graph, shocked.links) == (folder.raw.graph, folder.raw.links)
    kept = [j for j in graph if FEATURE_NAMES[j] != "graph_guarantee_exposure"]  # exposure is per revenue
    np.testing.assert_array_equal(st.book_features(engine, shocked).values[:, kept],
                                  st.book_features(engine, folder.raw).values[:, kept])

    from_stored = st.stress_book(engine, policy, stored, scenario, config)
    from_folder = st.stress_book(engine, policy, folder, scenario, config)
    assert (from_stored.totals.pd_baseline, from_stored.totals.decline_baseline) == (
        from_folder.totals.pd_baseline, from_folder.totals.decline_baseline)

    withheld = [{**{k: v for k, v in r.items() if k != "related"}, "consent": {**r["consent"], "links": False}}
                for r in requests]
    unlinked, _ = st.loans_from_requests(withheld, book, config)
    assert unlinked.links_withheld.all() and not stored.links_withheld.any()
    assert np.isnan(st.book_features(engine, unlinked.raw, unlinked.links_withheld).values[:, graph]).all()
    assert not np.isnan(st.book_features(engine, stored.raw, stored.links_withheld).values[:, graph]).all()
    assert st.stress_book(engine, policy, unlinked, scenario, config).totals.pd_baseline != \
        from_stored.totals.pd_baseline


def test_the_book_is_monitored_with_the_graph_as_of_each_date(linked_raw: RawData, linked_registry: Path) -> None:
    """`monitor portfolio` scores each loan as of origination and now with the folder's graph, read as of each
    date (before, the book was scored without it: every linked firm's PD as if it had not consented)."""
    import dataclasses

    from service.scoring.bundle import load_bundle
    from service.scoring.engine import Engine
    from service.scoring.policy import load_policy
    from service.usecases.portfolio import LossParameters, live_loans, score_book

    registry = Registry(linked_registry)
    engine = Engine(load_bundle(registry.path(registry.champion())))
    as_of = int(np.max(linked_raw.book["as_of_month"])) + 1
    rows = live_loans(linked_raw.book, as_of)
    args = {"engine": engine, "policy": load_policy(DEFAULT_POLICY), "rows": rows, "as_of_month": as_of,
            "loss": LossParameters.shipped()}
    linked = score_book(data=linked_raw, **args)
    alone = score_book(data=dataclasses.replace(linked_raw, graph=None), **args)
    graph = [j for j, name in enumerate(engine.names) if name.startswith("graph_")]
    assert not np.isnan(linked.features_now[:, graph]).all() and np.isnan(alone.features_now[:, graph]).all()
    assert (linked.pd_now != alone.pd_now).any() and (linked.pd_then != alone.pd_then).any()  # the model reads them


def test_a_firms_default_raises_the_scores_of_its_linked_firms(mid_dir: Path,
                                                               tmp_path_factory: pytest.TempPathFactory) -> None:
    """Contagion: the same applicants and model, scored with the graph as it is and with the firms that defaulted
    taken out of its events (their own data untouched): the neighbours' trouble raises every PD it moves, and
    moves most of them. On the 20,000 linked firms of `make run` (3,000 hold too few such applicants for the
    model to learn it: bench_graph.py measures the same on 20,000)."""
    from service.scoring.bundle import load_bundle
    from service.scoring.engine import Engine
    from service.scoring.graph import EventLog, build_index
    from service.scoring.policy import load_policy
    from service.scoring.raw import load_folder
    from training.config import load_config
    from training.dataset import from_folder
    from training.pipeline import train

    registry = Registry(tmp_path_factory.mktemp("contagion-models"))
    version = train(from_folder(mid_dir), load_config(None), registry).version
    engine = Engine(load_bundle(registry.root / version))
    policy = load_policy(DEFAULT_POLICY)
    linked_raw = load_folder(mid_dir)
    X = build_features(linked_raw).values
    rows = np.flatnonzero(X[:, FEATURE_NAMES.index("graph_neighbour_defaults_12m")] > 0)[::4]
    assert len(rows) >= 100
    bureau = linked_raw.monthly["bureau"]
    defaulted = np.zeros(linked_raw.n_enterprises, dtype=bool)
    defaulted[bureau["enterprise_row"][bureau["worst_dpd"] >= 90]] = True
    events = EventLog()
    for source, table in linked_raw.monthly.items():
        keep = ~defaulted[table["enterprise_row"]]
        events.add_monthly(source, {k: v[keep] for k, v in table.items()})
    calm = RawData(profile=linked_raw.profile, applications=linked_raw.applications, monthly=linked_raw.monthly,
                   book=linked_raw.book, links=linked_raw.links)
    calm.graph = build_index(calm, events)
    calm_x = build_features(calm.select(rows)).values
    assert (calm_x[:, FEATURE_NAMES.index("graph_neighbour_defaults_12m")] == 0).all()
    as_is = np.array([s.pd for s in engine.score(linked_raw.select(rows), policy)])
    without = np.array([s.pd for s in engine.score(calm.select(rows), policy)])
    assert (as_is >= without - 1e-12).all()  # monotone: a neighbour's trouble never lowers a PD
    assert np.mean(as_is > without) >= 0.5 and np.median(as_is / without) > 1.1, (
        np.mean(as_is > without), np.median(as_is / without))
