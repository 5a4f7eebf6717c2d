"""The audit trail catches a one-byte edit made directly in the database; replay reproduces a decision exactly."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import text
from typer.testing import CliRunner

from service.cli import app as cli
from service.config import get_settings
from service.scoring.raw import RawData
from tests.api_fixtures import Api, make_api
from training.offline import request_for

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
