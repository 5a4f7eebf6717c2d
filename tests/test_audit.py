"""The audit trail catches a one-byte edit made directly in the database; replay reproduces a decision exactly."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sqlalchemy import select, text
from typer.testing import CliRunner

from service.batch.requests import request_for
from service.cli import app as cli
from service.config import get_settings
from service.db import repo
from service.db.tables import Decision, Review
from service.scoring.raw import RawData
from tests.api_fixtures import Api, make_api

runner = CliRunner()


def flat(s: str) -> str:
    return " ".join(s.split())


@pytest.fixture()
def recorded(database_url: str, champion_registry: Path, small_raw: RawData,
             monkeypatch: pytest.MonkeyPatch):  # noqa: ANN201
    """Ten decisions and a review recorded through the API, and the CLI pointed at the same database."""
    api = make_api(database_url, champion_registry)
    ids = []
    with api.client:
        for application_id in small_raw.applications["application_id"][:10]:
            ids.append(api.score(request_for(small_raw, str(application_id))).json()["decision_id"])
        api.client.post(f"/v1/reviews/{ids[0]}", headers=api.headers("review"),
                        json={"outcome": "approve", "reason": "documents checked", "reviewer": "wang"})
        ref = api.client.get(f"/v1/decisions/{ids[1]}", headers=api.headers()).json()["applicant_ref"]
        api.client.post(f"/v1/applicants/{ref}/consents/revoke", headers=api.headers(), json={"sources": ["tax"]})
    monkeypatch.setenv("SMECREDIT_DATABASE_URL", database_url)
    monkeypatch.setenv("SMECREDIT_REGISTRY", str(champion_registry))
    get_settings.cache_clear()
    yield api, ids
    get_settings.cache_clear()
    api.client.app.state.engine.dispose()


def sql(api: Api, statement: str, **params: object) -> None:
    with api.client.app.state.engine.begin() as conn:
        conn.execute(text(statement), params)


def verify() -> tuple[int, str]:
    result = runner.invoke(cli, ["audit", "verify"])
    return result.exit_code, flat(result.output)


class TestAuditVerify:
    def test_an_untouched_trail_verifies(self, recorded) -> None:  # noqa: ANN001
        code, out = verify()
        assert code == 0, out
        assert "audit events chain correctly" in out

    def test_a_one_byte_edit_of_an_event_is_caught(self, recorded) -> None:  # noqa: ANN001
        api, ids = recorded
        sql(api, "UPDATE audit_events SET actor = 'kez:' || substr(actor, 5) WHERE id = 3")
        code, out = verify()
        assert code == 1 and "audit event 3: content does not match its hash" in out

    def test_a_one_byte_edit_of_a_decision_is_caught(self, recorded) -> None:  # noqa: ANN001
        api, ids = recorded
        sql(api, "UPDATE decisions SET grade = 'A' WHERE id = :id AND grade <> 'A'", id=ids[4])
        sql(api, "UPDATE decisions SET score = score + 1 WHERE id = :id", id=ids[5])
        code, out = verify()
        assert code == 1
        assert f"decision {ids[5]}: differs from what its creation event recorded" in out

    def test_a_deleted_event_is_caught(self, recorded) -> None:  # noqa: ANN001
        api, _ = recorded
        sql(api, "DELETE FROM audit_events WHERE id = 4")
        code, out = verify()
        assert code == 1 and "audit event 5: does not follow the previous event" in out

    def test_reordered_events_are_caught(self, recorded) -> None:  # noqa: ANN001
        api, _ = recorded
        sql(api, "UPDATE audit_events SET id = 1000 WHERE id = 2")
        sql(api, "UPDATE audit_events SET id = 2 WHERE id = 3")
        sql(api, "UPDATE audit_events SET id = 3 WHERE id = 1000")
        code, out = verify()
        assert code == 1 and "does not follow the previous event" in out

    def test_a_deleted_decision_is_caught(self, recorded) -> None:  # noqa: ANN001
        api, ids = recorded
        sql(api, "DELETE FROM consents WHERE decision_id = :id", id=ids[7])
        sql(api, "DELETE FROM reviews WHERE decision_id = :id", id=ids[7])
        sql(api, "DELETE FROM raw_inputs WHERE decision_id = :id", id=ids[7])
        sql(api, "DELETE FROM explanation_links WHERE decision_id = :id", id=ids[7])
        sql(api, "DELETE FROM decisions WHERE id = :id", id=ids[7])
        code, out = verify()
        assert code == 1 and f"decision {ids[7]}: is in the audit trail but not in the decisions table" in out


class TestReplay:
    def test_every_decision_replays_identically(self, recorded) -> None:  # noqa: ANN001
        _, ids = recorded
        for decision_id in ids:
            result = runner.invoke(cli, ["replay", decision_id])
            assert result.exit_code == 0, result.output
            assert "identical" in result.output

    def test_a_changed_record_does_not_replay(self, recorded) -> None:  # noqa: ANN001
        api, ids = recorded
        sql(api, "UPDATE decisions SET pd = pd * 1.01 WHERE id = :id", id=ids[2])
        result = runner.invoke(cli, ["replay", ids[2]])
        assert result.exit_code == 1 and "DIFFERS pd: recorded" in flat(result.output)

    def test_unknown_decision(self, recorded) -> None:  # noqa: ANN001
        result = runner.invoke(cli, ["replay", "nope"])
        assert result.exit_code == 2 and "no decision 'nope'" in flat(result.output)


class TestSealedRows:
    """Direct edits of the rows that carry a review's outcome, a consent, a key's scopes or a tenant's policy
    are caught like edits of decisions (the adversarial test turned a reviewed decline into an approval and
    revived a withdrawn consent, and verify said ok)."""

    @pytest.mark.parametrize(("statement", "table"), [
        ("UPDATE reviews SET outcome = 'decline' WHERE outcome = 'approve'", "reviews"),  # a reviewed approval
        ("UPDATE consents SET granted = true WHERE granted = false", "consents"),  # a withdrawn consent revived
        ("UPDATE api_keys SET scopes = 'admin,platform,review,score' WHERE scopes = 'score'", "api_keys"),
        ("UPDATE tenants SET policy = 'lenient' WHERE name = 'lender-a'", "tenants"),
    ])
    def test_an_edit_made_directly_in_the_database(self, recorded, statement: str,  # noqa: ANN001
                                                   table: str) -> None:
        api, _ = recorded
        sql(api, statement)
        code, out = verify()
        assert code == 1 and f"{table}:" in out and "differs from what its last audit event recorded (edited)" in out

    def test_a_consent_or_review_inserted_or_deleted_directly(self, recorded) -> None:  # noqa: ANN001
        api, ids = recorded
        sql(api, "INSERT INTO reviews (decision_id, tenant_id, status, requested_by, outcome, reason, created_at) "
                 "SELECT id, tenant_id, 'decided', 'lender', 'approve', 'forged', created_at FROM decisions "
                 "WHERE id = :id", id=ids[2])
        sql(api, "DELETE FROM consents WHERE decision_id = :id AND source = 'tax'", id=ids[3])
        code, out = verify()
        assert code == 1
        assert "has no audit event (written outside the service)" in out
        assert "is in the audit trail but not in its table (deleted)" in out

    def test_a_reseal_by_an_event_that_never_writes_the_row(self, recorded) -> None:  # noqa: ANN001
        """An insider edits a review, then appends a well-chained event sealing the edit under another action."""
        api, ids = recorded
        sql(api, "UPDATE reviews SET outcome = 'decline' WHERE outcome = 'approve'")
        with api.client.app.state.sessions() as session:
            review = session.scalar(select(Review).where(Review.outcome == "decline"))
            repo.append_audit(session, tenant_id=review.tenant_id, actor="ops", action="key.revoked",
                              subject="x", payload={}, rows=[review])
            decision = session.get(Decision, ids[4])
            decision.grade = "A" if decision.grade != "A" else "B"
            session.flush()
            repo.append_audit(session, tenant_id=decision.tenant_id, actor="ops", action="decision.created",
                              subject=decision.id, payload={"record_digest": repo.decision_digest(decision)})
            repo.append_audit(session, tenant_id=None, actor="migration", action=repo.BASELINE, subject="again",
                              payload={}, rows=[review])
            session.commit()
        code, out = verify()
        assert code == 1
        assert "key.revoked seals reviews:" in out and "which such an event never writes (forged)" in out
        assert f"is a second creation event for decision {ids[4]} (forged)" in out
        assert f"{repo.BASELINE} seals reviews:" in out

    def test_a_revoked_key_revived(self, recorded) -> None:  # noqa: ANN001
        api, _ = recorded
        prefix = api.keys["review"].split("_")[1]
        assert runner.invoke(cli, ["keys", "revoke", prefix]).exit_code == 0
        assert verify()[0] == 0
        sql(api, "UPDATE api_keys SET revoked_at = NULL WHERE prefix = :p", p=prefix)
        code, out = verify()
        assert code == 1 and "api_keys:" in out


class TestAnchor:
    def test_truncating_the_newest_events_is_caught_only_with_an_anchor(self, recorded,  # noqa: ANN001
                                                                         tmp_path: Path) -> None:
        api, _ = recorded
        anchor = tmp_path / "anchor.json"
        result = runner.invoke(cli, ["audit", "anchor", "--out", str(anchor)])
        assert result.exit_code == 0, result.output
        head = json.loads(anchor.read_text())
        assert head["count"] > 10 and len(head["head"]) == 64
        code, out = verify_with(anchor)
        assert code == 0 and f"reaches the anchor at event {head['count']}" in out
        # The newest events are a review request and a consent withdrawal: delete them, and the rows they wrote.
        sql(api, "DELETE FROM consents WHERE decision_id IS NULL")
        with api.client.app.state.engine.begin() as conn:
            newest = conn.execute(text("SELECT max(id) FROM audit_events")).scalar_one()
        sql(api, "DELETE FROM audit_events WHERE id = :id", id=newest)
        assert verify()[0] == 0  # without the anchor, a clean cut at the end is invisible
        code, out = verify_with(anchor)
        assert code == 1 and f"the anchor recorded {head['count']}: the newest events were deleted" in out

    def test_a_rewritten_head_is_caught(self, recorded, tmp_path: Path) -> None:  # noqa: ANN001
        anchor = tmp_path / "anchor.json"
        runner.invoke(cli, ["audit", "anchor", "--out", str(anchor)])
        head = json.loads(anchor.read_text())
        anchor.write_text(json.dumps({**head, "head": "f" * 64}))
        code, out = verify_with(anchor)
        assert code == 1 and "is not the anchored head" in out

    def test_a_malformed_anchor(self, recorded, tmp_path: Path) -> None:  # noqa: ANN001
        anchor = tmp_path / "anchor.json"
        anchor.write_text('{"count": "many"}')
        code, out = verify_with(anchor)
        assert code == 2 and "--anchor" in out and "count" in out


def verify_with(anchor: Path) -> tuple[int, str]:
    result = runner.invoke(cli, ["audit", "verify", "--anchor", str(anchor)])
    return result.exit_code, flat(result.output)


def test_every_column_of_a_sealed_table_is_sealed() -> None:
    """A new column on a sealed table must be a decision: sealed (and resealed by its migration) or not."""
    for name, table in repo.SEALED.items():
        assert set(table.columns) == {c.name for c in table.model.__table__.columns}, name
