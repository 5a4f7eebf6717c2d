"""Repository functions: keyword-only, session first; each does one thing and never commits by itself."""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
import logging
import secrets
from dataclasses import dataclass

from sqlalchemy import delete, func, select, text
from sqlalchemy.orm import Session

from service.crypto import Keyring, KeyringError, Sealed
from service.db import velocity
from service.db.tables import (
    OPEN_REVIEWS,
    ApiKey,
    AuditEvent,
    Base,
    Consent,
    ConsentGrant,
    ConsentRequest,
    Decision,
    ExplanationLink,
    LineLink,
    Loan,
    RawInput,
    Rescoring,
    Review,
    Tenant,
    as_utc,
    utcnow,
)
from service.scoring.record import COLUMNS as DECISION_COLUMNS
from service.scoring.record import iso_utc, record_digest

log = logging.getLogger("smecredit.db")
SCOPES = ("score", "review", "admin", "platform")  # platform: operators of the shared model registry
GENESIS = "0" * 64
# Rows whose state affects a decision or a data subject's rights, besides decisions themselves: each write goes
# through this module and seals the row's digest into its audit event; `audit verify` checks every row. Per
# table: the columns a seal covers (declared, so that a new column is a decision, and a migration that adds one
# reseals), and the only actions that may seal it (a seal in any other event is reported as forged).
SEALED_KEY = "sealed"  # the payload entry: {"<table>:<id>": <digest>}
BASELINE = "audit.baseline"  # the one event (written by migration 0003) that sealed rows written before sealing


@dataclass(frozen=True)
class SealedTable:
    model: type[Base]
    columns: tuple[str, ...]
    sealed_by: frozenset[str]


SEALED: dict[str, SealedTable] = {t.model.__tablename__: t for t in (
    SealedTable(Tenant, ("id", "name", "policy", "created_at"), frozenset({"tenant.created", BASELINE})),
    SealedTable(ApiKey, ("id", "tenant_id", "prefix", "key_hash", "scopes", "label", "created_at", "revoked_at"),
                frozenset({"key.created", "key.revoked", BASELINE})),
    SealedTable(Review, ("id", "decision_id", "tenant_id", "status", "requested_by", "request_note", "reviewer",
                         "outcome", "reason", "created_at", "decided_at"),
                frozenset({"decision.created", "review.requested", "review.decided", "consent.revoked", BASELINE})),
    SealedTable(Consent, ("id", "tenant_id", "applicant_ref", "decision_id", "source", "granted", "recorded_at"),
                frozenset({"decision.created", "consent.revoked", BASELINE})),
    SealedTable(ConsentRequest, ("id", "tenant_id", "applicant_ref", "token_hash", "sources", "purpose", "language",
                                 "created_at", "expires_at", "link_expires_at", "answered_at"),
                frozenset({"consent.requested", "consent.answered"})),
    SealedTable(ConsentGrant, ("id", "request_id", "source", "granted", "recorded_at"),
                frozenset({"consent.answered", "consent.revoked"})),
    SealedTable(Loan, ("id", "tenant_id", "decision_id", "loan_ref", "applicant_ref", "product", "limit", "drawn",
                       "outstanding", "term_months", "apr", "status", "days_past_due", "origination_date",
                       "default_month", "as_of_month", "created_at", "updated_at"),
                frozenset({"loan.created", "loan.serviced"})),
    SealedTable(Rescoring, ("id", "tenant_id", "loan_id", "as_of", "model_version", "policy_version", "pd_then",
                            "grade_then", "pd_now", "grade_now", "level", "triggers", "reasons", "indicators",
                            "features", "exposure", "expected_loss", "line", "created_at"),
                frozenset({"loan.rescored"})),
)}


def sha256_hex(value: str) -> str:
    return hashlib.sha256(value.encode("utf-8")).hexdigest()


# --- tenants and keys ------------------------------------------------------------------------------------


def get_or_create_tenant(session: Session, *, name: str, policy: str | None = None,
                         actor: str = "cli") -> Tenant:
    tenant = get_tenant_by_name(session, name=name)
    if tenant is None:
        tenant = Tenant(name=name, policy=policy)
        session.add(tenant)
        session.flush()
        append_audit(session, tenant_id=tenant.id, actor=actor, action="tenant.created", subject=name,
                     payload={"policy": policy}, rows=[tenant])
    return tenant


def get_tenant_by_name(session: Session, *, name: str) -> Tenant | None:
    return session.scalar(select(Tenant).where(Tenant.name == name))


def tenant_names(session: Session) -> list[str]:
    return list(session.scalars(select(Tenant.name).order_by(Tenant.name)))


def create_api_key(session: Session, *, tenant: Tenant, scopes: list[str], label: str | None = None,
                   actor: str = "cli") -> str:
    """A new key, returned once in plain text; only its SHA-256 is stored. Audited with the row's digest."""
    unknown = sorted(set(scopes) - set(SCOPES))
    if unknown or not scopes:
        raise ValueError(f"scopes must be a non-empty subset of {', '.join(SCOPES)}; got {', '.join(scopes) or 'none'}")
    prefix = secrets.token_hex(6)
    key = f"sk_{prefix}_{secrets.token_urlsafe(32)}"
    row = ApiKey(tenant_id=tenant.id, prefix=prefix, key_hash=sha256_hex(key), scopes=",".join(sorted(scopes)),
                 label=label)
    session.add(row)
    session.flush()
    append_audit(session, tenant_id=tenant.id, actor=actor, action="key.created", subject=prefix,
                 payload={"scopes": row.scopes, "label": label}, rows=[row])
    return key


def revoke_api_key(session: Session, *, prefix: str, actor: str) -> bool:
    """Revoke a key by its prefix (the part after ``sk_``); False when no active key has it."""
    row = session.scalar(select(ApiKey).where(ApiKey.prefix == prefix, ApiKey.revoked_at.is_(None)))
    if row is None:
        return False
    row.revoked_at = utcnow()
    session.flush()
    append_audit(session, tenant_id=row.tenant_id, actor=actor, action="key.revoked", subject=prefix, payload={},
                 rows=[row])
    return True


def authenticate(session: Session, *, key: str) -> tuple[Tenant, frozenset[str]] | None:
    """The tenant and scopes of a valid, unrevoked key; None otherwise (in constant time for the hash)."""
    parts = key.split("_")
    if len(parts) < 3 or parts[0] != "sk":
        return None
    row = session.scalar(select(ApiKey).where(ApiKey.prefix == parts[1]))
    if row is None or row.revoked_at is not None or not hmac.compare_digest(row.key_hash, sha256_hex(key)):
        return None
    tenant = session.get(Tenant, row.tenant_id)
    return (tenant, frozenset(row.scopes.split(","))) if tenant else None


@dataclass(frozen=True)
class KeyListing:
    """What may be shown of an API key: never the key or its hash."""

    prefix: str
    tenant: str
    scopes: tuple[str, ...]
    label: str | None
    created_at: dt.datetime
    revoked_at: dt.datetime | None


def list_api_keys(session: Session, *, tenant: Tenant | None = None) -> list[KeyListing]:
    """Every key, or one tenant's, oldest first, revoked ones included."""
    query = (select(ApiKey.prefix, Tenant.name, ApiKey.scopes, ApiKey.label, ApiKey.created_at, ApiKey.revoked_at)
             .join(Tenant, Tenant.id == ApiKey.tenant_id).order_by(ApiKey.created_at, ApiKey.id))
    if tenant is not None:
        query = query.where(ApiKey.tenant_id == tenant.id)
    return [KeyListing(prefix=prefix, tenant=name, scopes=tuple(scopes.split(",")), label=label,
                       created_at=as_utc(created), revoked_at=as_utc(revoked))
            for prefix, name, scopes, label, created, revoked in session.execute(query)]


# --- decisions ---------------------------------------------------------------------------------------------


def issue_line_link(session: Session, *, rescoring: Rescoring, hours: int) -> tuple[str, dt.datetime]:
    """A link token to the borrower's page for a credit-line recommendation, as for a decision's page."""
    token = secrets.token_urlsafe(24)
    expires = utcnow() + dt.timedelta(hours=hours)
    session.add(LineLink(token_hash=sha256_hex(token), rescoring_id=rescoring.id, expires_at=expires))
    return token, expires


def get_line_by_token(session: Session, *, token: str) -> tuple[Rescoring, dt.datetime] | None:
    row = session.execute(select(Rescoring, LineLink.expires_at).join(
        LineLink, LineLink.rescoring_id == Rescoring.id).where(LineLink.token_hash == sha256_hex(token))).first()
    return None if row is None else (row[0], as_utc(row[1]))


def read_raw_input(session: Session, *, keyring: Keyring, decision_id: str) -> dict | None:
    row = session.scalar(select(RawInput).where(RawInput.decision_id == decision_id))
    if row is None:
        return None
    return json.loads(keyring.open(Sealed(row.key_id, row.nonce, row.ciphertext), aad=decision_id.encode()))


def read_application_id(session: Session, *, keyring: Keyring, decision_id: str) -> str | None:
    """The lender's application id, held in clear only inside the encrypted raw input; None once that is purged
    or cannot be opened (a key removed from the keyring: the caller still gets the decision)."""
    try:
        raw = read_raw_input(session, keyring=keyring, decision_id=decision_id)
    except KeyringError as exc:
        log.warning("raw input of a decision cannot be opened (%s); answering without the application id",
                    type(exc).__name__)
        return None
    return None if raw is None else raw["application"]["application_id"]


def rotate_raw_inputs(session: Session, *, keyring: Keyring) -> int:
    """Re-encrypt every row not under the current key; returns how many were re-encrypted."""
    count = 0
    for row in session.scalars(select(RawInput).where(RawInput.key_id != keyring.current)):
        aad = row.decision_id.encode()
        sealed = keyring.seal(keyring.open(Sealed(row.key_id, row.nonce, row.ciphertext), aad=aad), aad=aad)
        row.key_id, row.nonce, row.ciphertext = sealed.key_id, sealed.nonce, sealed.ciphertext
        count += 1
    session.flush()
    return count


def revoke_consent(session: Session, *, tenant_id: int, applicant_ref: str, sources: list[str], actor: str,
                   reason: str, also_seal: list[Base] | tuple[Base, ...] = ()) -> int:
    """Record the withdrawal, purge the applicant's stored raw data (which holds the lender's application id in
    clear) and the notes they wrote with review requests; returns the raw rows purged. Decisions stay: they
    hold only digests, keyed pseudonyms and the feature snapshot. ``also_seal``: rows the caller wrote for the
    same withdrawal (flushed), sealed by the same event (a consent page's grant row)."""
    purged = session.execute(delete(RawInput).where(RawInput.tenant_id == tenant_id,
                                                    RawInput.applicant_ref == applicant_ref)).rowcount
    decisions = select(Decision.id).where(Decision.tenant_id == tenant_id, Decision.applicant_ref == applicant_ref)
    notes = list(session.scalars(select(Review).where(Review.decision_id.in_(decisions),
                                                      Review.requested_by == "applicant",
                                                      Review.request_note.is_not(None))))
    for review in notes:
        review.request_note = None
    # The related-party consent also covers the keyed owner, phone and account references the velocity checks keep.
    links_forgotten = velocity.forget_links(session, tenant_id=tenant_id, applicant_ref=applicant_ref) \
        if "links" in sources else 0
    withdrawals = [Consent(tenant_id=tenant_id, applicant_ref=applicant_ref, source=source, granted=False)
                   for source in sources]
    session.add_all(withdrawals)
    session.flush()
    append_audit(session, tenant_id=tenant_id, actor=actor, action="consent.revoked", subject=applicant_ref,
                 payload={"sources": sources, "reason": reason, "raw_rows_purged": purged,
                          "notes_purged": len(notes), "link_keys_deleted": links_forgotten},
                 rows=[*withdrawals, *notes, *also_seal])
    return purged


def known_applicant(session: Session, *, tenant_id: int, applicant_ref: str) -> bool:
    return session.scalar(select(Decision.id).where(Decision.tenant_id == tenant_id,
                                                    Decision.applicant_ref == applicant_ref).limit(1)) is not None


def purge_raw_before(session: Session, *, cutoff: dt.datetime) -> int:
    """Retention: delete raw data older than ``cutoff``. Decisions are never touched here."""
    purged = session.execute(delete(RawInput).where(RawInput.created_at < cutoff)).rowcount
    append_audit(session, tenant_id=None, actor="retention", action="raw.purged", subject="raw_inputs",
                 payload={"before": iso_utc(cutoff), "rows": purged})
    return purged


def get_decision(session: Session, *, tenant_id: int, decision_id: str) -> Decision | None:
    """A decision of this tenant only: another tenant's id is indistinguishable from a missing one."""
    return session.scalar(select(Decision).where(Decision.id == decision_id, Decision.tenant_id == tenant_id))


def get_by_idempotency_key(session: Session, *, tenant_id: int, key: str) -> Decision | None:
    return session.scalar(select(Decision).where(Decision.tenant_id == tenant_id, Decision.idempotency_key == key))


def get_by_token(session: Session, *, token: str) -> tuple[Decision, dt.datetime] | None:
    """The decision a page token opens and when the token expires."""
    row = session.execute(select(Decision, ExplanationLink.expires_at).join(
        ExplanationLink, ExplanationLink.decision_id == Decision.id).where(
        ExplanationLink.token_hash == sha256_hex(token))).first()
    return None if row is None else (row[0], as_utc(row[1]))


# --- reviews -----------------------------------------------------------------------------------------------


def list_reviews(session: Session, *, tenant_id: int, status: str | None, after: int = 0,
                 limit: int = 100) -> list[Review]:
    """One page of the queue, oldest first: reviews with an id above ``after`` (keyset pagination: a page
    never skips or repeats a review when new ones arrive)."""
    q = select(Review).where(Review.tenant_id == tenant_id, Review.id > after)
    if status:
        q = q.where(Review.status == status)
    return list(session.scalars(q.order_by(Review.id).limit(limit)))


def request_review(session: Session, *, decision: Decision, requested_by: str, note: str | None) -> Review:
    """Open a review for this requester unless theirs is already pending (the policy's own referral does not
    swallow an applicant's request: their note and the audit event are kept)."""
    pending = session.scalar(select(Review).where(Review.decision_id == decision.id, Review.status == "pending",
                                                  Review.requested_by == requested_by))
    if pending is not None:
        return pending
    review = Review(decision_id=decision.id, tenant_id=decision.tenant_id, requested_by=requested_by,
                    request_note=note)
    session.add(review)
    session.flush()
    append_audit(session, tenant_id=decision.tenant_id, actor=requested_by, action="review.requested",
                 subject=decision.id, payload={"review_id": review.id}, rows=[review])
    return review


def decide_review(session: Session, *, decision: Decision, reviewer: str, outcome: str, reason: str) -> Review:
    """Record a reviewer's decision; it answers every pending request on the decision (the policy's referral and
    the applicant's own), opening a review if the lender reviews unprompted."""
    pending = list(session.scalars(select(Review).where(Review.decision_id == decision.id,
                                                        Review.status.in_(OPEN_REVIEWS)).order_by(Review.id)
                                   .with_for_update()))
    if not pending:
        pending = [Review(decision_id=decision.id, tenant_id=decision.tenant_id, requested_by="lender")]
        session.add(pending[0])
    now = utcnow()
    for review in pending:
        review.status, review.reviewer, review.outcome, review.reason = "decided", reviewer, outcome, reason
        review.decided_at = now
    session.flush()
    append_audit(session, tenant_id=decision.tenant_id, actor=reviewer, action="review.decided", subject=decision.id,
                 payload={"review_ids": [r.id for r in pending], "outcome": outcome, "reason": reason,
                          "original_decision": decision.decision}, rows=pending)
    return pending[-1]


def reviews_of(session: Session, *, decision_id: str) -> list[Review]:
    return list(session.scalars(select(Review).where(Review.decision_id == decision_id).order_by(Review.id)))


# --- audit trail -------------------------------------------------------------------------------------------


def event_content(*, at: dt.datetime, tenant_id: int | None, actor: str, action: str, subject: str,
                  payload: dict) -> dict:
    """What an audit event's hash covers."""
    return {"at": iso_utc(at), "tenant_id": tenant_id, "actor": actor, "action": action, "subject": subject,
            "payload": payload}


def audit_content(event: AuditEvent) -> dict:
    return event_content(at=event.at, tenant_id=event.tenant_id, actor=event.actor, action=event.action,
                         subject=event.subject, payload=event.payload)


def audit_hash(prev_hash: str, content: dict) -> str:
    body = json.dumps(content, sort_keys=True, ensure_ascii=False, separators=(",", ":"), default=str)
    return hashlib.sha256(f"{prev_hash}\n{body}".encode()).hexdigest()


def decision_digest(d: Decision) -> str:
    """SHA-256 over what a decision said and why: an edit to the row no longer matches its audit event."""
    return record_digest({c: getattr(d, c) for c in DECISION_COLUMNS})


def _plain(value: object) -> object:
    if isinstance(value, dt.datetime):
        return iso_utc(value)
    if isinstance(value, bytes):
        return value.hex()
    return value


def row_key(row: Base) -> str:
    return f"{row.__tablename__}:{row.id}"


def digest_record(record: dict) -> str:
    """SHA-256 of a row's sealed columns, whatever types the database handed back."""
    plain = {name: _plain(value) for name, value in record.items()}
    return hashlib.sha256(json.dumps(plain, sort_keys=True, ensure_ascii=False, separators=(",", ":"),
                                     default=str).encode()).hexdigest()


def row_digest(row: Base) -> str:
    return digest_record({c: getattr(row, c) for c in SEALED[row.__tablename__].columns})


def audit_head(session: Session) -> tuple[int, str]:
    """(number of events, hash of the newest): an anchor to keep outside the database."""
    count = session.scalar(select(func.count()).select_from(AuditEvent)) or 0
    last = session.scalar(select(AuditEvent.hash).order_by(AuditEvent.id.desc()).limit(1))
    return count, last or GENESIS


def append_audit(session: Session, *, tenant_id: int | None, actor: str, action: str, subject: str,
                 payload: dict, rows: list[Base] | tuple[Base, ...] = (),
                 sealed: dict[str, str] | None = None) -> AuditEvent:
    """Append one event chained to the last one. Appends are serialised so that the chain never forks.
    ``rows`` (flushed, so that they have ids) are sealed: their digests go into the payload, and `audit
    verify` checks each row against the newest event that sealed it; ``sealed`` adds digests computed by the
    caller (the migration that seals rows written before sealing)."""
    if rows or sealed:
        payload = {**payload, SEALED_KEY: {**(sealed or {}), **{row_key(r): row_digest(r) for r in rows}}}
    if session.bind.dialect.name == "postgresql":
        session.execute(text("SELECT pg_advisory_xact_lock(7461)"))  # held until this transaction ends
    last = session.scalar(select(AuditEvent).order_by(AuditEvent.id.desc()).limit(1))
    prev = last.hash if last else GENESIS
    event = AuditEvent(at=utcnow(), tenant_id=tenant_id, actor=actor, action=action, subject=subject, payload=payload,
                       prev_hash=prev, hash="")
    event.hash = audit_hash(prev, audit_content(event))
    session.add(event)
    session.flush()
    return event
