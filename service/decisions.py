"""Decision service: score a request, persist the decision record, shape responses. Handlers stay thin."""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
import math
import secrets
import uuid

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


def input_digest(payload: dict) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str).encode()).hexdigest()


def pseudonym(settings: Settings, enterprise_id: str) -> str:
    """A stable pseudonymous applicant reference: keyed HMAC, so it cannot be reversed without the key."""
    key = settings.pseudonym_key.get_secret_value().encode()
    return hmac.new(key, enterprise_id.encode("utf-8"), hashlib.sha256).hexdigest()


def _json_float(x: float) -> float | None:
    return None if math.isnan(x) else float(x)


def score_requests(session: Session, *, settings: Settings, keyring: Keyring, engine: Engine, policy: Policy,
                   tenant_id: int, actor: str, requests: list[schemas.ScoreRequest],
                   idempotency_key: str | None = None) -> list[tuple[Decision, str | None]]:
    """Score each request, then record them all in one short transaction; returns (decision, plain token).

    Scoring runs outside any transaction, so the database write lock (SQLite) or row locks (PostgreSQL) are
    held only for the inserts, not for the model.
    """
    missing = sorted(set(engine.bundle.scorer.grades.names) - set(policy.grades))
    if missing:
        raise Unavailable(f"policy {policy.version} does not cover grades {', '.join(missing)} of model "
                          f"{engine.version}; fix the policy before scoring")
    payloads = [req.model_dump(mode="json") for req in requests]
    digests = [input_digest(p) for p in payloads]
    try:
        if idempotency_key:
            existing = repo.get_by_idempotency_key(session, tenant_id=tenant_id, key=idempotency_key)
            if existing is not None:
                if existing.input_digest != digests[0]:
                    raise Invalid("Idempotency-Key was already used with a different request body",
                                  errors=[{"loc": ["header", "Idempotency-Key"],
                                           "msg": "reused with a different body", "type": "idempotency"}])
                # The first response may never have arrived: a retry gets a fresh link to the same page.
                token = secrets.token_urlsafe(24)
                existing.token_hash = repo.sha256_hex(token)
                existing.token_expires_at = dt.datetime.now(dt.UTC) + dt.timedelta(
                    hours=settings.explanation_ttl_hours)
                session.commit()
                return [(existing, token)]
            session.rollback()  # end the read: nothing may stay locked while scoring
        prepared = []
        for req, digest, payload in zip(requests, digests, payloads, strict=True):
            allowed = [s for s in MONTHLY_SOURCES if getattr(req.consent, s)]
            application = {**payload["application"], "enterprise_id": req.profile.enterprise_id}
            raw = raw_for_applicant(payload["profile"], application, {s: payload["data"][s] for s in allowed})
            scored = engine.score(raw, policy, allowed_sources=allowed)[0]
            token = secrets.token_urlsafe(24)
            prepared.append((_record(settings, engine, policy, tenant_id, req, digest, scored, token,
                                     idempotency_key), token, payload))
        for decision, _, payload in prepared:
            repo.add_decision(session, decision=decision, consents=payload["consent"], actor=actor)
            repo.store_raw_input(session, keyring=keyring, decision=decision, payload=payload)
        session.commit()
    except IntegrityError as exc:
        session.rollback()
        if idempotency_key:  # the same key raced in from a concurrent retry
            raise Conflict("Idempotency-Key is being used by a concurrent request; retry") from exc
        raise
    except OperationalError as exc:
        session.rollback()
        raise Unavailable("the database is not reachable; nothing was recorded") from exc
    return [(decision, token) for decision, token, _ in prepared]


def _record(settings: Settings, engine: Engine, policy: Policy, tenant_id: int, req: schemas.ScoreRequest,
            digest: str, s: Scored, token: str, idempotency_key: str | None) -> Decision:
    o = s.outcome
    now = dt.datetime.now(dt.UTC)
    names = engine.names
    return Decision(
        id=uuid.uuid4().hex, tenant_id=tenant_id, application_ref=req.application.application_id,
        applicant_ref=pseudonym(settings, req.profile.enterprise_id), input_digest=digest,
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
        sources_used=list(s.sources_used), token_hash=repo.sha256_hex(token),
        token_expires_at=now + dt.timedelta(hours=settings.explanation_ttl_hours), created_at=now,
    )


def to_response(d: Decision, token: str | None, settings: Settings) -> schemas.ScoreResponse:
    explanation = None
    if token is not None:
        explanation = schemas.ExplanationLink(url=f"{settings.public_base_url}/v1/explanations/{token}", token=token,
                                              expires_at=aware(d.token_expires_at))
    return schemas.ScoreResponse(
        decision_id=d.id, application_id=d.application_ref, applicant_ref=d.applicant_ref,
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
