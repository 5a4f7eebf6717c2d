"""Decision service: score a request, persist the decision record, shape responses. Handlers stay thin."""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
import math
import uuid
from dataclasses import dataclass

from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.orm import Session

from service.api import schemas
from service.config import Settings
from service.crypto import Keyring
from service.db import repo
from service.db.tables import Decision, Review
from service.db.tables import as_utc as aware  # timestamps leave as RFC 3339 with their offset
from service.errors import Conflict, Invalid, Unavailable
from service.scoring.catalog import BY_NAME, MISSING_DATA
from service.scoring.engine import Engine, Scored
from service.scoring.policy import Policy
from service.scoring.raw import MONTHLY_SOURCES, raw_for_applicant


def tenant_key(settings: Settings, tenant_id: int) -> bytes:
    """Each lender's own HMAC key, derived from the service's pseudonym key: two lenders comparing their
    records cannot link an applicant through a shared reference or digest."""
    master = settings.pseudonym_key.get_secret_value().encode()
    return hmac.new(master, f"tenant:{tenant_id}".encode(), hashlib.sha256).digest()


def keyed(key: bytes, value: str) -> str:
    return hmac.new(key, value.encode("utf-8"), hashlib.sha256).hexdigest()


def input_digest(key: bytes, payload: dict) -> str:
    """The request's digest, keyed per tenant (an unkeyed hash of a guessable body could be confirmed)."""
    return keyed(key, json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str))


def pseudonym(settings: Settings, tenant_id: int, enterprise_id: str) -> str:
    """A stable pseudonymous applicant reference within one lender: keyed HMAC, not reversible without the key."""
    return keyed(tenant_key(settings, tenant_id), enterprise_id)


def _json_float(x: float) -> float | None:
    return None if math.isnan(x) else float(x)


@dataclass(frozen=True)
class Issued:
    """A recorded decision as one response returns it: with the lender's own application id (held in clear
    only in the encrypted raw input) and the page link this response carries."""

    decision: Decision
    application_id: str | None
    token: str | None
    expires_at: dt.datetime | None


def score_requests(session: Session, *, settings: Settings, keyring: Keyring, engine: Engine, policy: Policy,
                   tenant_id: int, actor: str, requests: list[schemas.ScoreRequest],
                   idempotency_key: str | None = None) -> list[Issued]:
    """Score each request, then record them all in one short transaction.

    Scoring runs outside any transaction, so the database write lock (SQLite) or row locks (PostgreSQL) are
    held only for the inserts, not for the model. A retry under the same Idempotency-Key, sequential or
    concurrent, gets the recorded decision and a link of its own; links issued before stay valid.
    """
    missing = sorted(set(engine.bundle.scorer.grades.names) - set(policy.grades))
    if missing:
        raise Unavailable(f"policy {policy.version} does not cover grades {', '.join(missing)} of model "
                          f"{engine.version}; fix the policy before scoring")
    key = tenant_key(settings, tenant_id)
    # Stored keyed too: lenders often use the application id itself as the Idempotency-Key.
    idempotency_key = keyed(key, idempotency_key) if idempotency_key else None
    payloads = [req.model_dump(mode="json") for req in requests]
    digests = [input_digest(key, p) for p in payloads]
    try:
        if idempotency_key:
            replayed = _replay(session, settings, tenant_id, idempotency_key, digests[0], requests[0])
            if replayed is not None:
                return [replayed]
            session.rollback()  # end the read: nothing may stay locked while scoring
        prepared = []
        for req, digest, payload in zip(requests, digests, payloads, strict=True):
            allowed = [s for s in MONTHLY_SOURCES if getattr(req.consent, s)]
            application = {**payload["application"], "enterprise_id": req.profile.enterprise_id}
            raw = raw_for_applicant(payload["profile"], application, {s: payload["data"][s] for s in allowed})
            scored = engine.score(raw, policy, allowed_sources=allowed)[0]
            prepared.append((_record(key, settings, engine, tenant_id, req, digest, scored, idempotency_key),
                             req, payload))
        issued = []
        for decision, req, payload in prepared:
            repo.add_decision(session, decision=decision, consents=payload["consent"], actor=actor)
            repo.store_raw_input(session, keyring=keyring, decision=decision, payload=payload)
            token, expires = repo.issue_link(session, decision=decision, hours=settings.explanation_ttl_hours)
            issued.append(Issued(decision, req.application.application_id, token, expires))
        session.commit()
    except IntegrityError as exc:
        session.rollback()
        if not idempotency_key:
            raise
        # The same key raced in from a concurrent retry and won: answer with its decision.
        replayed = _replay(session, settings, tenant_id, idempotency_key, digests[0], requests[0])
        if replayed is None:
            raise Conflict("Idempotency-Key is being used by a concurrent request; retry") from exc
        return [replayed]
    except OperationalError as exc:
        session.rollback()
        raise Unavailable("the database is not reachable; nothing was recorded") from exc
    return issued


def _replay(session: Session, settings: Settings, tenant_id: int, idempotency_key: str, digest: str,
            req: schemas.ScoreRequest) -> Issued | None:
    existing = repo.get_by_idempotency_key(session, tenant_id=tenant_id, key=idempotency_key)
    if existing is None:
        return None
    if existing.input_digest != digest:
        raise Invalid("Idempotency-Key was already used with a different request body",
                      errors=[{"loc": ["header", "Idempotency-Key"], "msg": "reused with a different body",
                               "type": "idempotency"}])
    # The first response may never have arrived: the retry gets a link of its own, and the first still works.
    token, expires = repo.issue_link(session, decision=existing, hours=settings.explanation_ttl_hours)
    session.commit()
    return Issued(existing, req.application.application_id, token, expires)


def _record(key: bytes, settings: Settings, engine: Engine, tenant_id: int, req: schemas.ScoreRequest,
            digest: str, s: Scored, idempotency_key: str | None) -> Decision:
    o = s.outcome
    now = dt.datetime.now(dt.UTC)
    names = engine.names
    return Decision(
        id=uuid.uuid4().hex, tenant_id=tenant_id, application_ref=keyed(key, req.application.application_id),
        applicant_ref=keyed(key, req.profile.enterprise_id), input_digest=digest,
        idempotency_key=idempotency_key, model_version=engine.version, policy_version=o.policy_version,
        pd=s.pd, score=s.score, grade=s.grade, decision=o.decision,
        offer=None if o.offer is None else o.offer.to_json(),
        reasons=[r.__dict__ for r in s.reasons],
        explanation={"base_value": s.base_value, "margin": s.margin, "points_per_margin": engine.points_per_margin,
                     "contributions": [float(c) for c in s.contributions], "groups": s.groups,
                     "rule_hits": [h.__dict__ for h in o.rule_hits],
                     "recourse": None if s.recourse is None else {
                         **{k: v for k, v in s.recourse.__dict__.items() if k != "suggestions"},
                         "suggestions": [x.__dict__ for x in s.recourse.suggestions]}},
        features={n: _json_float(v) for n, v in zip(names, s.features, strict=True)},
        context={"industry": req.profile.industry, "region": req.profile.region,
                 "legal_form": req.profile.legal_form, "application_date": req.application.application_date.isoformat(),
                 "requested_amount": req.application.requested_amount, "term_months": req.application.term_months,
                 "purpose": req.application.purpose},
        sources_used=list(s.sources_used), created_at=now,
    )


def to_response(issued: Issued, settings: Settings) -> schemas.ScoreResponse:
    d = issued.decision
    explanation = None
    if issued.token is not None:
        explanation = schemas.ExplanationLink(url=f"{settings.public_base_url}/v1/explanations/{issued.token}",
                                              token=issued.token, expires_at=aware(issued.expires_at))
    return schemas.ScoreResponse(
        decision_id=d.id, application_id=issued.application_id, application_ref=d.application_ref,
        applicant_ref=d.applicant_ref,
        model_version=d.model_version, policy_version=d.policy_version, pd=d.pd, score=d.score, grade=d.grade,
        decision=d.decision,
        offer=d.offer, reasons=d.reasons, recourse=d.explanation.get("recourse"),
        rule_hits=d.explanation.get("rule_hits", []), sources_used=d.sources_used, explanation=explanation,
        created_at=aware(d.created_at))


def review_out(r: Review) -> schemas.ReviewOut:
    return schemas.ReviewOut(id=r.id, decision_id=r.decision_id, status=r.status, requested_by=r.requested_by,
                             request_note=r.request_note, reviewer=r.reviewer, outcome=r.outcome, reason=r.reason,
                             created_at=aware(r.created_at), decided_at=aware(r.decided_at))


def explanation_out(d: Decision) -> schemas.ExplanationOut:
    e = d.explanation
    ppm = e["points_per_margin"]
    rows = [schemas.ContributionOut(feature=n, group=MISSING_DATA if d.features.get(n) is None else BY_NAME[n].group,
                                    value=d.features.get(n), contribution=c, points=round(c * ppm, 4))
            for n, c in zip(list(d.features), e["contributions"], strict=True)]
    return schemas.ExplanationOut(decision_id=d.id, model_version=d.model_version, base_value=e["base_value"],
                                  margin=e["margin"], points_per_margin=ppm, contributions=rows,
                                  groups=[schemas.GroupOut(group=g, points=round(p, 4))
                                          for g, p in e["groups"].items()])
