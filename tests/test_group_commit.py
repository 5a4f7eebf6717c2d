"""The group-commit writer: many decisions per transaction, nothing acknowledged before it is durable, the audit
chain extended in order, only the job at fault failing, and nothing half-written when the database is gone.
Each test runs on SQLite and on PostgreSQL (skipped with a reason when none runs)."""

from __future__ import annotations

import concurrent.futures
import copy
import re
from pathlib import Path

import pytest
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError, OperationalError

from service import audit
from service.db.tables import AuditEvent, Consent, Decision, ExplanationLink, RawInput, Review
from service.db.writer import DecisionWriter, _Job
from tests.api_fixtures import Api, make_api


@pytest.fixture()
def api(database_url: str, champion_registry: Path) -> Api:
    a = make_api(database_url, champion_registry)
    with a.client:
        yield a
    a.client.app.state.engine.dispose()


def variant(example: dict, i: int) -> dict:
    body = copy.deepcopy(example)
    body["application"]["application_id"] = f"gc-{i}"
    body["application"]["requested_amount"] = 100_000 + 1_000 * i
    return body


def counts(api: Api) -> dict[str, int]:
    with api.client.app.state.read_sessions() as s:
        return {t.__tablename__: s.scalar(select(func.count()).select_from(t))
                for t in (Decision, Consent, Review, RawInput, ExplanationLink, AuditEvent)}


def test_concurrent_requests_share_commits_and_every_one_is_recorded(api: Api, example_request: dict) -> None:
    writer: DecisionWriter = api.client.app.state.writer
    before, batches = counts(api), writer.batches
    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        responses = list(pool.map(lambda i: api.score(variant(example_request, i)), range(64)))
    assert [r.status_code for r in responses] == [200] * 64
    ids = {r.json()["decision_id"] for r in responses}
    assert len(ids) == 64
    after = counts(api)
    assert after["decisions"] - before["decisions"] == 64
    assert after["raw_inputs"] - before["raw_inputs"] == 64
    assert after["explanation_links"] - before["explanation_links"] == 64
    assert after["audit_events"] - before["audit_events"] == 64
    assert writer.batches - batches < 64, "16 concurrent requests never shared a commit"
    metrics = api.client.get("/metrics").text  # what operators see: decisions per commit, and commits
    committed = float(re.search(r"^smecredit_commit_decisions_sum (\S+)$", metrics, re.M).group(1))
    commits = float(re.search(r"^smecredit_commit_decisions_count (\S+)$", metrics, re.M).group(1))
    assert committed == writer.written and commits == writer.batches
    with api.client.app.state.read_sessions() as s:  # the chain is intact and every row matches its seal
        checked, problems = audit.verify(s)
    assert problems == [] and checked == after["audit_events"]
    for r in responses:  # each acknowledged decision opens its page
        assert api.client.get(r.json()["explanation"]["url"].split("8000", 1)[-1]).status_code == 200


def test_a_batch_request_is_all_or_nothing_and_in_one_commit(api: Api, example_request: dict) -> None:
    writer: DecisionWriter = api.client.app.state.writer
    batches = writer.batches
    items = [variant(example_request, i) for i in range(20)]
    r = api.client.post("/v1/scores/batch", json={"items": items}, headers=api.headers())
    assert r.status_code == 200, r.text
    assert len({i["decision_id"] for i in r.json()["items"]}) == 20
    assert writer.batches - batches == 1


def test_retries_of_one_key_racing_into_one_batch_get_one_decision(api: Api, example_request: dict) -> None:
    """Concurrent retries under one Idempotency-Key: whether they meet in the database's unique index or in one
    batch, one decision is recorded and every retry is answered with it (each with a working link)."""
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        responses = list(pool.map(lambda _: api.score(example_request, **{"Idempotency-Key": "race-1"}), range(8)))
    assert [r.status_code for r in responses] == [200] * 8
    answered = [r.json() for r in responses]
    assert len({a["decision_id"] for a in answered}) == 1
    with api.client.app.state.read_sessions() as s:
        assert s.scalar(select(func.count()).select_from(Decision)) == 1
        checked, problems = audit.verify(s)
    assert problems == []
    for a in answered:
        assert api.client.get(a["explanation"]["url"].split("8000", 1)[-1]).status_code == 200


def test_only_the_job_at_fault_fails(api: Api, example_request: dict) -> None:
    """A job that breaks a constraint (here: a decision id already taken) fails alone; the jobs that were
    batched with it are written."""
    first = api.score(variant(example_request, 1)).json()
    stolen_id = first["decision_id"]
    state = api.client.app.state
    from service.pseudonyms import input_digest, tenant_key
    from service.usecases.scoring import _prepare

    key = tenant_key(state.settings, 1)
    engine, policy = state.champion.get(), state.policies.for_tenant(None)

    def work(i: int, decision_id: str | None = None):  # noqa: ANN202
        payload = variant(example_request, 100 + i)
        _, w = _prepare(state.recorder, key, engine, policy, 1, "test", [payload], [input_digest(key, payload)],
                        None)
        if decision_id:
            for rows in (w.decisions, w.raw_inputs, w.links, *w.consents):
                for row in rows:
                    row["decision_id" if "decision_id" in row else "id"] = decision_id
        return w

    before = counts(api)
    fresh = DecisionWriter(state.engine)  # its thread never starts: the three jobs are one batch, for certain
    jobs = [_Job(work(0)), _Job(work(1, decision_id=stolen_id)), _Job(work(2))]
    fresh._commit(jobs)  # noqa: SLF001 - the batch logic itself, without the thread's timing
    assert jobs[0].done.result(0) is None and jobs[2].done.result(0) is None
    with pytest.raises(IntegrityError):
        jobs[1].done.result(0)
    assert (fresh.batches, fresh.written) == (2, 2)  # the failed batch, then each job alone
    after = counts(api)
    assert after["decisions"] - before["decisions"] == 2
    assert after["raw_inputs"] - before["raw_inputs"] == 2
    with state.read_sessions() as s:
        assert audit.verify(s)[1] == []


def test_an_unreachable_database_fails_every_waiting_request_and_writes_nothing(database_url: str,
                                                                                 champion_registry: Path,
                                                                                 example_request: dict) -> None:
    api = make_api(database_url, champion_registry)
    with api.client:
        before = counts(api)
        state = api.client.app.state
        broken = DecisionWriter(state.engine)
        broken.engine = state.engine.execution_options()  # a copy whose connections fail
        from sqlalchemy import event

        @event.listens_for(broken.engine, "before_cursor_execute")
        def _cut(_conn, _cursor, statement: str, *_args, **_kw) -> None:  # noqa: ANN001, ANN002, ANN003
            if statement.lstrip().upper().startswith("INSERT INTO AUDIT_EVENTS"):  # after the decisions' rows
                raise OperationalError(statement[:40], {}, ConnectionError("connection cut"))

        state.recorder = type(state.recorder)(state.settings, state.keyring, broken, state.read_sessions)
        with concurrent.futures.ThreadPoolExecutor(3) as pool:  # waiting together, perhaps in one batch
            responses = list(pool.map(lambda i: api.score(variant(example_request, i)), range(3)))
        assert [r.status_code for r in responses] == [503] * 3
        assert "nothing was recorded" in responses[0].json()["detail"]
        broken.close()
        assert counts(api) == before


def test_close_writes_what_was_accepted(api: Api, example_request: dict) -> None:
    """Graceful shutdown: jobs already queued are written before the writer stops."""
    state = api.client.app.state
    writer = DecisionWriter(state.engine)
    from service.pseudonyms import input_digest, tenant_key
    from service.usecases.scoring import _prepare

    key = tenant_key(state.settings, 1)
    engine, policy = state.champion.get(), state.policies.for_tenant(None)
    payloads = [variant(example_request, 200 + i) for i in range(10)]
    futures = []
    for p in payloads:
        _, w = _prepare(state.recorder, key, engine, policy, 1, "test", [p], [input_digest(key, p)], None)
        futures.append(writer.submit(w))
    writer.close()
    assert all(f.done() and f.exception() is None for f in futures)
    with pytest.raises(RuntimeError, match="closed"):
        writer.submit(w)


def test_a_retry_of_a_request_recorded_by_the_older_release_still_matches(api: Api, example_request: dict) -> None:
    """Input digests moved from the standard library's JSON to orjson's: a decision recorded with the old
    spelling is still found by a retry of the same body, and a different body is still refused."""
    from sqlalchemy import update

    from service.api.schemas import ScoreRequest
    from service.pseudonyms import legacy_input_digest, tenant_key

    first = api.score(example_request, **{"Idempotency-Key": "old-release"}).json()
    state = api.client.app.state
    with state.sessions.begin() as s:  # as the older release wrote it
        tenant_id = s.scalar(select(Decision.tenant_id).where(Decision.id == first["decision_id"]))
        payload = ScoreRequest.model_validate(example_request).payload()  # the dump without the newer optional keys
        s.execute(update(Decision).where(Decision.id == first["decision_id"]).values(
            input_digest=legacy_input_digest(tenant_key(state.settings, tenant_id), payload)))
    retry = api.score(example_request, **{"Idempotency-Key": "old-release"})
    assert retry.status_code == 200 and retry.json()["decision_id"] == first["decision_id"]
    other = api.score(variant(example_request, 9), **{"Idempotency-Key": "old-release"})
    assert other.status_code == 422 and other.json()["errors"][0]["loc"] == ["header", "Idempotency-Key"]


def test_the_writer_outlives_a_failing_observer(api: Api, example_request: dict) -> None:
    """A failure after the commit (here: the metrics hook) neither loses the acknowledgement nor stops the
    writer: every later request is still written and answered."""
    state = api.client.app.state

    def broken(_decisions: int, _seconds: float) -> None:
        raise RuntimeError("metrics backend down")

    state.writer.on_commit = broken
    responses = [api.score(variant(example_request, 300 + i)) for i in range(3)]
    assert [r.status_code for r in responses] == [200] * 3


def test_a_request_cancelled_while_queued_is_dropped_and_does_not_fail_its_batch(api: Api,
                                                                                  example_request: dict) -> None:
    """A request whose client went away (or that shutdown's deadline cancelled) before its batch started is not
    written; the requests batched with it are, and each gets its answer."""
    state = api.client.app.state
    from service.pseudonyms import input_digest, tenant_key
    from service.usecases.scoring import _prepare

    key = tenant_key(state.settings, 1)
    engine, policy = state.champion.get(), state.policies.for_tenant(None)

    def work(i: int):  # noqa: ANN202
        p = variant(example_request, 400 + i)
        return _prepare(state.recorder, key, engine, policy, 1, "test", [p], [input_digest(key, p)], None)[1]

    before = counts(api)
    writer = DecisionWriter(state.engine)
    queued = [_Job(work(0)), _Job(work(1))]
    for job in queued:  # queued before the thread starts, which the submit below does
        writer._queue.put(job)  # noqa: SLF001
    assert queued[1].done.cancel()
    last = writer.submit(work(2))
    assert last.result(30) is None and queued[0].done.result(30) is None
    writer.close()
    assert counts(api)["decisions"] - before["decisions"] == 2
    assert writer.written == 2
