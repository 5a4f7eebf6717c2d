"""Deciding applications: score each request, prepare its records, and wait until they are durable.

The CPU work (features, model, explanation, policy, encryption, digests) runs in the caller; the rows go to the
process's group-commit writer (service/db/writer.py), which answers once their batch is committed. A request
that carries an Idempotency-Key is first looked up (a read, off the event loop): a retry, sequential or
concurrent, gets the recorded decision and a page link of its own; links issued before stay valid.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import secrets
import uuid
from dataclasses import dataclass

import orjson
from anyio import to_thread
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from service.config import Settings
from service.crypto import Keyring
from service.db import repo, velocity
from service.db.repo import sha256_hex
from service.db.tables import AWAITING_DATA, utcnow
from service.db.writer import DecisionWriter, NewDecisions, NewLink, link_row
from service.errors import Conflict, Invalid, Unavailable
from service.pseudonyms import input_digest, keyed, legacy_input_digest, tenant_key
from service.scoring.engine import Engine
from service.scoring.policy import Policy
from service.scoring.raw import MONTHLY_SOURCES, consented_related, raw_for_applicant
from service.scoring.record import DecisionRecord
from service.usecases import consents


@dataclass(frozen=True)
class Issued:
    """A recorded decision as one response returns it: with the lender's own application id (held in clear
    only in the encrypted raw input) and the page link this response carries."""

    record: DecisionRecord
    application_id: str | None
    token: str
    expires_at: dt.datetime


@dataclass(frozen=True)
class Recorder:
    """What deciding needs of the running service: settings, the data keyring, the writer, and reads."""

    settings: Settings
    keyring: Keyring
    writer: DecisionWriter
    read_sessions: sessionmaker[Session]
    local_reads: bool = False  # SQLite: an indexed read of a local file, cheaper than a hop to a thread


async def decide(rec: Recorder, *, engine: Engine, policy: Policy, tenant_id: int, actor: str,
                 payloads: list[dict], idempotency_key: str | None = None, batch: bool = False) -> list[Issued]:
    """Score and record every payload (a request's JSON, as validated), all or none. A payload that names a
    consent request is scored with the applicant's grants as its consent (``batch``: errors name the item)."""
    missing = sorted(set(engine.bundle.scorer.grades.names) - set(policy.grades))
    if missing:
        raise Unavailable(f"policy {policy.version} does not cover grades {', '.join(missing)} of model "
                          f"{engine.version}; fix the policy before scoring")
    key = tenant_key(rec.settings, tenant_id)
    # Stored keyed too: lenders often use the application id itself as the Idempotency-Key.
    idempotency_key = keyed(key, idempotency_key) if idempotency_key else None
    digests = [input_digest(key, p) for p in payloads]
    if idempotency_key:
        replayed = await _replay(rec, key, tenant_id, idempotency_key, digests[0], payloads[0])
        if replayed is not None:
            return [replayed]
    if any(p.get("consent_request_id") is not None for p in payloads):  # a read, off the event loop
        payloads = await to_thread.run_sync(_with_grants, rec, tenant_id, payloads, batch)
    now = utcnow()
    keys = [velocity.keys_of(key, p) for p in payloads]
    counts = None
    if policy.velocity_windows:  # the policy's fraud checks read them: one grouped query
        counts = _velocity(rec, tenant_id, keys, policy.velocity_windows, now) if rec.local_reads else \
            await to_thread.run_sync(_velocity, rec, tenant_id, keys, policy.velocity_windows, now)
    args = (rec, key, engine, policy, tenant_id, actor, payloads, digests, idempotency_key, now, keys, counts)
    # One application (about a millisecond of CPU) is scored on the event loop, skipping a thread-pool hop; a
    # batch (up to max_batch) goes to a thread, so that the loop keeps answering other requests meanwhile.
    issued, work = _prepare(*args) if len(payloads) == 1 else await to_thread.run_sync(_prepare, *args)
    try:
        await asyncio.wrap_future(rec.writer.submit(work))
    except IntegrityError as exc:
        if not idempotency_key:
            raise
        # The same key raced in from a concurrent retry and won: answer with its decision.
        replayed = await _replay(rec, key, tenant_id, idempotency_key, digests[0], payloads[0])
        if replayed is None:
            raise Conflict("Idempotency-Key is being used by a concurrent request; retry") from exc
        return [replayed]
    except OperationalError as exc:
        raise Unavailable("the database is not reachable; nothing was recorded") from exc
    return issued


def _prepare(rec: Recorder, key: bytes, engine: Engine, policy: Policy, tenant_id: int, actor: str,
             payloads: list[dict], digests: list[str], idempotency_key: str | None, now: dt.datetime | None = None,
             keys: list[velocity.ApplicationKeys] | None = None,
             counts: list[dict[str, float]] | None = None) -> tuple[list[Issued], NewDecisions]:
    """The records of ``payloads``, scored; ``counts``: their velocity counts (None: the policy reads none)."""
    now = now or utcnow()
    keys = keys or [velocity.keys_of(key, p) for p in payloads]
    expires = now + dt.timedelta(hours=rec.settings.explanation_ttl_hours)
    work = NewDecisions(actor=actor, decisions=[], record_digests=[], consents=[], reviews=[], raw_inputs=[],
                        links=[])
    issued = []
    for i, (payload, digest) in enumerate(zip(payloads, digests, strict=True)):
        facts = {} if counts is None else {"velocity": counts[i]}  # in the record's context too: replay reads it
        allowed = [s for s in MONTHLY_SOURCES if payload["consent"][s]]
        links = payload["consent"].get("links") is True  # the related-party graph, with its own consent
        application, profile = payload["application"], payload["profile"]
        raw = raw_for_applicant(profile, {**application, "enterprise_id": profile["enterprise_id"]},
                                {s: payload["data"][s] for s in allowed}, consented_related(payload))
        scored = engine.score(raw, policy, allowed_sources=allowed + ["links"] * links,
                              facts=[facts] if facts else None)[0]
        if scored.fraud is not None:
            facts = {**facts, "fraud": scored.fraud, "fraud_model_version": engine.fraud.version}
        if links and engine.graph is not None:  # which firms' graph the related-party features were read from
            facts = {**facts, "graph_version": engine.graph.version}
        record = DecisionRecord.from_scored(
            scored, id=uuid.uuid4().hex, tenant_id=tenant_id, application_ref=keyed(key, application["application_id"]),
            applicant_ref=keyed(key, profile["enterprise_id"]), input_digest=digest, idempotency_key=idempotency_key,
            model_version=engine.version, feature_names=engine.names, points_per_margin=engine.points_per_margin,
            context={"industry": profile["industry"], "region": profile["region"], "legal_form": profile["legal_form"],
                     "application_date": application["application_date"],
                     "requested_amount": application["requested_amount"], "term_months": application["term_months"],
                     "purpose": application["purpose"], **facts},
            created_at=now, withheld=tuple(s for s in MONTHLY_SOURCES if s not in allowed))
        token = secrets.token_urlsafe(24)
        sealed = rec.keyring.seal(orjson.dumps(payload, option=orjson.OPT_SORT_KEYS), aad=record.id.encode())
        refs = {"tenant_id": tenant_id, "applicant_ref": record.applicant_ref, "decision_id": record.id}
        work.decisions.append(record.row())
        work.record_digests.append(record.digest())
        work.consents.append([{**refs, "source": source, "granted": granted, "recorded_at": now}
                              for source, granted in sorted(payload["consent"].items())
                              if granted is not None])  # links: not asked about, not recorded
        asks = record.explanation.data_requests  # a referral more data would settle waits for it, not for a person
        work.reviews.append(None if record.decision != "refer" else {
            "decision_id": record.id, "tenant_id": tenant_id, "status": AWAITING_DATA if asks else "pending",
            "requested_by": "policy", "reviewer": None, "outcome": None, "reason": None,
            "request_note": _review_note(asks, [h.code for h in scored.outcome.rule_hits
                                                if h.code in policy.fraud_codes]),
            "created_at": now, "decided_at": None})
        work.raw_inputs.append({**refs, "key_id": sealed.key_id, "nonce": sealed.nonce,
                                "ciphertext": sealed.ciphertext, "created_at": now})
        work.links.append(link_row(record.id, sha256_hex(token), expires))
        work.velocity_keys += keys[i].rows(tenant_id=tenant_id, decision_id=record.id, decided_at=now)
        issued.append(Issued(record, application["application_id"], token, expires))
    return issued, work


def _review_note(asks: list[str], fraud_codes: list[str]) -> str:
    """What the officer's queue says of a policy referral (the applicant's page never shows it)."""
    note = f"awaiting data: {', '.join(asks)}" if asks else "referred by the lender policy"
    return f"{note} (fraud checks: {', '.join(fraud_codes)})" if fraud_codes else note


def _velocity(rec: Recorder, tenant_id: int, keys: list[velocity.ApplicationKeys], windows: tuple[int, ...],
              now: dt.datetime) -> list[dict[str, float]]:
    try:
        with rec.read_sessions() as session:
            return velocity.read(session, tenant_id=tenant_id, applications=keys, windows=windows, now=now)
    except OperationalError as exc:
        raise Unavailable("the database is not reachable; nothing was recorded") from exc


def _with_grants(rec: Recorder, tenant_id: int, payloads: list[dict], batch: bool) -> list[dict]:
    """Each payload naming a consent request, with the applicant's current grants as its consent (recorded per
    decision and in the encrypted raw input like a lender's consent); refused when data was sent for a source
    they did not grant."""
    try:
        with rec.read_sessions() as session:
            return [p if p.get("consent_request_id") is None else {**p, "consent": consents.consent_for_scoring(
                session, settings=rec.settings, tenant_id=tenant_id, request_id=p["consent_request_id"],
                enterprise_id=p["profile"]["enterprise_id"],
                sent=[s for s in MONTHLY_SOURCES if p["data"][s]] + ["links"] * (p.get("related") is not None),
                loc=["body", "items", i] if batch else ["body"])} for i, p in enumerate(payloads)]
    except OperationalError as exc:
        raise Unavailable("the database is not reachable; nothing was recorded") from exc


async def _replay(rec: Recorder, key: bytes, tenant_id: int, idempotency_key: str, digest: str,
                  payload: dict) -> Issued | None:
    existing = await to_thread.run_sync(_find, rec.read_sessions, tenant_id, idempotency_key)
    if existing is None:
        return None
    if existing.input_digest not in (digest, legacy_input_digest(key, payload)):
        raise Invalid("Idempotency-Key was already used with a different request body",
                      errors=[{"loc": ["header", "Idempotency-Key"], "msg": "reused with a different body",
                               "type": "idempotency"}])
    # The first response may never have arrived: the retry gets a link of its own, and the first still works.
    token = secrets.token_urlsafe(24)
    expires = utcnow() + dt.timedelta(hours=rec.settings.explanation_ttl_hours)
    try:
        await asyncio.wrap_future(rec.writer.submit(NewLink(link_row(existing.id, sha256_hex(token), expires))))
    except OperationalError as exc:
        raise Unavailable("the database is not reachable") from exc
    return Issued(existing, payload["application"]["application_id"], token, expires)


def _find(sessions: sessionmaker[Session], tenant_id: int, idempotency_key: str) -> DecisionRecord | None:
    try:
        with sessions() as session:
            row = repo.get_by_idempotency_key(session, tenant_id=tenant_id, key=idempotency_key)
            return None if row is None else DecisionRecord.of(row)
    except OperationalError as exc:
        raise Unavailable("the database is not reachable; nothing was recorded") from exc
