"""Data protection: raw data encrypted at rest with rotating keys, consent withdrawal purges it, retention
deletes it on time, and decisions keep only digests and pseudonymous references."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from sqlalchemy import func, select, update
from typer.testing import CliRunner

from service.cli import app as cli
from service.config import get_settings
from service.crypto import Keyring, KeyringError
from service.db import repo
from service.db.tables import Consent, Decision, RawInput
from tests.api_fixtures import Api, make_api

runner = CliRunner()


def count(api: Api, model, *where) -> int:  # noqa: ANN001
    with api.client.app.state.read_sessions() as s:
        return s.scalar(select(func.count()).select_from(model).where(*where))


@pytest.fixture()
def sqlite_api(champion_registry: Path, tmp_path: Path) -> Api:
    api = make_api(f"sqlite:///{tmp_path}/db.sqlite", champion_registry)
    with api.client:
        yield api


class TestEncryptionAtRest:
    def test_raw_data_is_stored_encrypted_and_decrypts(self, sqlite_api: Api, example_request: dict,
                                                       tmp_path: Path) -> None:
        d = sqlite_api.score(example_request).json()
        enterprise_id = example_request["profile"]["enterprise_id"]
        blob = (tmp_path / "db.sqlite").read_bytes() + b"".join(p.read_bytes() for p in tmp_path.glob("db.sqlite-*"))
        assert enterprise_id.encode() not in blob  # only its keyed HMAC is stored
        # Raw monthly figures are not stored in clear. (The feature snapshot, kept for replay, holds aggregates;
        # outflows never appear in it as such, so they show whether raw rows leaked.)
        for row in example_request["data"]["payments"]:
            assert str(row["outflow"]).encode() not in blob, row
        assert len(d["applicant_ref"]) == 64 and d["applicant_ref"] != enterprise_id
        with sqlite_api.client.app.state.read_sessions() as s:
            raw = repo.read_raw_input(s, keyring=sqlite_api.client.app.state.keyring, decision_id=d["decision_id"])
        assert raw["profile"]["enterprise_id"] == enterprise_id
        assert raw["data"]["payments"][0]["inflow"] == example_request["data"]["payments"][0]["inflow"]

    def test_a_ciphertext_moved_to_another_row_does_not_open(self) -> None:
        ring = Keyring.parse(f"k1:{Keyring.new_key()}")
        sealed = ring.seal(b"secret", aad=b"decision-1")
        assert ring.open(sealed, aad=b"decision-1") == b"secret"
        with pytest.raises(KeyringError, match="does not authenticate"):
            ring.open(sealed, aad=b"decision-2")

    def test_key_rotation(self, champion_registry: Path, tmp_path: Path, example_request: dict,
                          monkeypatch: pytest.MonkeyPatch) -> None:
        url = f"sqlite:///{tmp_path}/db.sqlite"
        old, new = Keyring.new_key(), Keyring.new_key()
        api = make_api(url, champion_registry, data_keys=f"old:{old}")
        with api.client:
            ids = [api.score(example_request).json()["decision_id"] for _ in range(3)]
        monkeypatch.setenv("SMECREDIT_DATABASE_URL", url)
        monkeypatch.setenv("SMECREDIT_DATA_KEYS", f"new:{new},old:{old}")
        get_settings.cache_clear()
        try:
            result = runner.invoke(cli, ["data", "rotate"])
        finally:
            get_settings.cache_clear()
        assert result.exit_code == 0 and "re-encrypted 3 row(s) under key 'new'" in result.output
        only_new = Keyring.parse(f"new:{new}")
        with api.client.app.state.read_sessions() as s:
            assert {r.key_id for r in s.scalars(select(RawInput))} == {"new"}
            for decision_id in ids:
                assert repo.read_raw_input(s, keyring=only_new, decision_id=decision_id)["consent"]["tax"]
            with pytest.raises(KeyringError, match="'new' is not in the keyring"):
                repo.read_raw_input(s, keyring=Keyring.parse(f"old:{old}"), decision_id=ids[0])

    def test_malformed_keyrings_are_refused(self) -> None:
        with pytest.raises(KeyringError, match="must be 32 bytes"):
            Keyring.parse("k1:c2hvcnQ=")
        with pytest.raises(KeyringError, match="not valid base64"):
            Keyring.parse("k1:***")


class TestConsentWithdrawal:
    def test_revoke_purges_raw_data_and_keeps_decisions(self, sqlite_api: Api, example_request: dict,
                                                        small_raw) -> None:  # noqa: ANN001
        from service.batch.requests import request_for

        mine = [sqlite_api.score(example_request).json() for _ in range(2)]
        other = sqlite_api.score(request_for(small_raw, str(small_raw.applications["application_id"][5]))).json()
        ref = mine[0]["applicant_ref"]
        assert count(sqlite_api, RawInput) == 3
        r = sqlite_api.client.post(f"/v1/applicants/{ref}/consents/revoke", headers=sqlite_api.headers("score"),
                                   json={"sources": ["payments", "tax"], "reason": "applicant asked by phone"})
        assert r.status_code == 200, r.text
        assert r.json() == {"applicant_ref": ref, "sources": ["payments", "tax"], "raw_rows_purged": 2}
        assert count(sqlite_api, RawInput, RawInput.applicant_ref == ref) == 0
        assert count(sqlite_api, RawInput, RawInput.applicant_ref == other["applicant_ref"]) == 1
        assert count(sqlite_api, Decision, Decision.applicant_ref == ref) == 2  # decisions stay
        assert count(sqlite_api, Consent, Consent.applicant_ref == ref, Consent.granted.is_(False)) == 2
        assert runner.invoke(cli, ["audit", "verify"], env={
            "SMECREDIT_DATABASE_URL": str(sqlite_api.settings.database_url)}).exit_code == 0

    def test_another_tenant_cannot_revoke(self, sqlite_api: Api, example_request: dict) -> None:
        ref = sqlite_api.score(example_request).json()["applicant_ref"]
        r = sqlite_api.client.post(f"/v1/applicants/{ref}/consents/revoke", headers=sqlite_api.headers("other"),
                                   json={})
        assert r.status_code == 404 and count(sqlite_api, RawInput) == 1

    def test_the_applicant_withdraws_on_the_page(self, sqlite_api: Api, example_request: dict) -> None:
        d = sqlite_api.score(example_request).json()
        r = sqlite_api.client.post(f"/v1/explanations/{d['explanation']['token']}/consents/revoke?lang=en")
        assert r.status_code == 200 and "withdrawn" in r.text
        assert count(sqlite_api, RawInput) == 0
        assert count(sqlite_api, Consent, Consent.granted.is_(False)) == 5


class TestRetention:
    def test_old_raw_data_goes_decisions_stay(self, champion_registry: Path, tmp_path: Path,
                                              example_request: dict, monkeypatch: pytest.MonkeyPatch) -> None:
        url = f"sqlite:///{tmp_path}/db.sqlite"
        api = make_api(url, champion_registry)
        with api.client:
            ids = [api.score(example_request).json()["decision_id"] for _ in range(3)]
        with api.client.app.state.sessions.begin() as s:
            s.execute(update(RawInput).where(RawInput.decision_id.in_(ids[:2]))
                      .values(created_at=dt.datetime.now(dt.UTC) - dt.timedelta(days=200)))
        monkeypatch.setenv("SMECREDIT_DATABASE_URL", url)
        get_settings.cache_clear()
        try:
            result = runner.invoke(cli, ["data", "retention", "--days", "180"])
            verified = runner.invoke(cli, ["audit", "verify"])
        finally:
            get_settings.cache_clear()
        assert result.exit_code == 0 and "deleted 2 raw record(s)" in result.output
        assert count(api, RawInput) == 1 and count(api, Decision) == 3
        assert verified.exit_code == 0, verified.output


def test_a_keyring_error_never_shows_the_key() -> None:
    key = Keyring.new_key()
    with pytest.raises(KeyringError) as info:
        Keyring.parse(key)  # the key id forgotten: the whole setting is the secret
    assert key not in str(info.value) and key[:12] not in str(info.value)


class TestNothingLinkableOrLeftInClear:
    """Pseudonyms and digests were the same for every lender, the lender's application id and the applicant's
    review note stayed in clear after withdrawal, and the SQLite file was world-readable."""

    def test_two_lenders_get_unlinkable_references(self, sqlite_api: Api, example_request: dict) -> None:
        a = sqlite_api.score(example_request).json()
        b = sqlite_api.score(example_request, who="other").json()
        assert a["applicant_ref"] != b["applicant_ref"] and a["application_ref"] != b["application_ref"]
        with sqlite_api.client.app.state.read_sessions() as s:
            digests = {d.id: d.input_digest for d in s.scalars(select(Decision))}
        assert digests[a["decision_id"]] != digests[b["decision_id"]]
        again = sqlite_api.score(example_request).json()  # within one lender the references are stable
        assert again["applicant_ref"] == a["applicant_ref"] and again["application_ref"] == a["application_ref"]

    def test_the_application_id_is_never_stored_in_clear(self, sqlite_api: Api, example_request: dict) -> None:
        d = sqlite_api.score(example_request).json()
        application_id = example_request["application"]["application_id"]
        assert d["application_id"] == application_id
        got = sqlite_api.client.get(f"/v1/decisions/{d['decision_id']}", headers=sqlite_api.headers()).json()
        assert got["application_id"] == application_id  # read back from the encrypted raw input
        assert application_id.encode() not in database_bytes(sqlite_api)
        sqlite_api.client.post(f"/v1/applicants/{d['applicant_ref']}/consents/revoke", headers=sqlite_api.headers(),
                               json={})
        got = sqlite_api.client.get(f"/v1/decisions/{d['decision_id']}", headers=sqlite_api.headers()).json()
        assert got["application_id"] is None and got["application_ref"] == d["application_ref"]

    def test_withdrawal_purges_the_applicants_review_note(self, sqlite_api: Api, example_request: dict) -> None:
        from service.db.tables import Review

        d = sqlite_api.score(example_request).json()
        token = d["explanation"]["token"]
        note = "my new phone is 138 0000 0000"
        sqlite_api.client.post(f"/v1/explanations/{token}/review", data={"note": note}, follow_redirects=False)
        with sqlite_api.client.app.state.read_sessions() as s:
            assert [r.request_note for r in s.scalars(select(Review))] == [note]
        sqlite_api.client.post(f"/v1/explanations/{token}/consents/revoke")
        with sqlite_api.client.app.state.read_sessions() as s:
            reviews = list(s.scalars(select(Review)))
        assert [(r.requested_by, r.status, r.request_note) for r in reviews] == [("applicant", "pending", None)]
        assert note.encode() not in database_bytes(sqlite_api)  # secure_delete: not left in free pages either
        assert runner.invoke(cli, ["audit", "verify"], env={
            "SMECREDIT_DATABASE_URL": str(sqlite_api.settings.database_url)}).exit_code == 0

    def test_database_files_are_private(self, sqlite_api: Api, example_request: dict) -> None:
        sqlite_api.score(example_request)
        path = Path(sqlite_api.settings.database_url.split("///", 1)[1])
        files = [p for p in path.parent.iterdir() if p.name.startswith(path.name)]
        assert path in files and len(files) >= 2  # the database, its WAL and the write-turn lock
        for p in files:
            assert p.stat().st_mode & 0o777 == 0o600, p.name

    def test_an_existing_world_readable_database_is_made_private(self, champion_registry: Path,
                                                                 tmp_path: Path) -> None:
        path = tmp_path / "old.sqlite"
        path.touch(mode=0o644)
        path.chmod(0o644)
        make_api(f"sqlite:///{path}", champion_registry).client.app.state.engine.dispose()
        assert path.stat().st_mode & 0o777 == 0o600


    def test_the_idempotency_key_is_not_stored_in_clear(self, sqlite_api: Api, example_request: dict) -> None:
        key = "loan-application-2026-000123"  # lenders often use their application id
        first = sqlite_api.score(example_request, **{"Idempotency-Key": key}).json()
        assert sqlite_api.score(example_request, **{"Idempotency-Key": key}).json()["decision_id"] == \
            first["decision_id"]
        assert key.encode() not in database_bytes(sqlite_api)

    def test_a_raw_input_that_cannot_be_opened_still_answers(self, champion_registry: Path, tmp_path: Path,
                                                            example_request: dict) -> None:
        url = f"sqlite:///{tmp_path}/db.sqlite"
        api = make_api(url, champion_registry)
        with api.client:
            d = api.score(example_request).json()
        api.client.app.state.engine.dispose()
        other_keys = make_api(url, champion_registry, data_keys=f"new:{Keyring.new_key()}")  # the old key dropped
        with other_keys.client:
            r = other_keys.client.get(f"/v1/decisions/{d['decision_id']}", headers=other_keys.headers())
        other_keys.client.app.state.engine.dispose()
        assert r.status_code == 200 and r.json()["application_id"] is None and r.json()["pd"] == d["pd"]


def database_bytes(api: Api) -> bytes:
    """Every byte SQLite keeps for the database: the main file and its write-ahead log."""
    path = Path(api.settings.database_url.split("///", 1)[1])
    return b"".join(p.read_bytes() for p in path.parent.iterdir() if p.name.startswith(path.name))
