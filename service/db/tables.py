"""Database tables (SQLAlchemy 2). The same definitions run on SQLite and PostgreSQL; Alembic migrates them."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import (
    JSON,
    Boolean,
    Date,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def as_utc(at: dt.datetime | None) -> dt.datetime | None:
    """Aware UTC whatever the database handed back (SQLite returns naive UTC, PostgreSQL the session zone)."""
    if at is None:
        return None
    return at.replace(tzinfo=dt.UTC) if at.tzinfo is None else at.astimezone(dt.UTC)


class Base(DeclarativeBase):
    type_annotation_map = {dt.datetime: DateTime(timezone=True), dict: JSON, list: JSON}


class Tenant(Base):
    __tablename__ = "tenants"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    policy: Mapped[str | None] = mapped_column(String(128))  # policy file name; None: the shipped default
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class ApiKey(Base):
    """Only a SHA-256 of the key is stored; the prefix finds the row without scanning."""

    __tablename__ = "api_keys"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    tenant_id: Mapped[int] = mapped_column(ForeignKey("tenants.id"), index=True)
    prefix: Mapped[str] = mapped_column(String(16), unique=True)
    key_hash: Mapped[str] = mapped_column(String(64))
    scopes: Mapped[str] = mapped_column(String(64))  # comma-separated: score,review,admin
    label: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    revoked_at: Mapped[dt.datetime | None]


class Decision(Base):
    """One automated decision: pseudonymous, with the digest of its inputs and what is needed to replay it."""

    __tablename__ = "decisions"
    __table_args__ = (UniqueConstraint("tenant_id", "idempotency_key", name="uq_decisions_idempotency"),
                      Index("ix_decisions_tenant_created", "tenant_id", "created_at"))
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    tenant_id: Mapped[int] = mapped_column(ForeignKey("tenants.id"))
    application_ref: Mapped[str] = mapped_column(String(128))  # keyed HMAC (per tenant) of the lender's id
    applicant_ref: Mapped[str] = mapped_column(String(64), index=True)  # keyed HMAC (per tenant) of the enterprise
    input_digest: Mapped[str] = mapped_column(String(64))
    idempotency_key: Mapped[str | None] = mapped_column(String(128))  # keyed HMAC (per tenant) of the header
    model_version: Mapped[str] = mapped_column(String(32))
    policy_version: Mapped[str] = mapped_column(String(128))
    pd: Mapped[float] = mapped_column(Float)
    score: Mapped[float] = mapped_column(Float)
    grade: Mapped[str] = mapped_column(String(8))
    decision: Mapped[str] = mapped_column(String(16))
    offer: Mapped[dict | None]
    reasons: Mapped[list]
    explanation: Mapped[dict]  # every contribution, group totals, base value
    features: Mapped[dict]  # the feature snapshot the model saw (None = missing)
    context: Mapped[dict]  # application and profile facts the policy used (no identifiers)
    sources_used: Mapped[list]
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class ExplanationLink(Base):
    """A link to the applicant's page. Every link a response carried stays valid until it expires: an
    idempotent retry adds a link instead of replacing the one the first response may already have handed out.
    Only the token's SHA-256 is stored."""

    __tablename__ = "explanation_links"
    token_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    decision_id: Mapped[str] = mapped_column(ForeignKey("decisions.id"), index=True)
    expires_at: Mapped[dt.datetime]
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


AWAITING_DATA = "awaiting_data"  # a policy referral that asked the applicant for a source first
OPEN_REVIEWS = ("pending", AWAITING_DATA)  # a reviewer's decision answers both


class Review(Base):
    """A human review of a decision. The original decision row is never changed."""

    __tablename__ = "reviews"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    decision_id: Mapped[str] = mapped_column(ForeignKey("decisions.id"), index=True)
    tenant_id: Mapped[int] = mapped_column(ForeignKey("tenants.id"), index=True)
    status: Mapped[str] = mapped_column(String(16), default="pending")  # pending | awaiting_data | decided
    requested_by: Mapped[str] = mapped_column(String(16))  # policy (refer) | lender | applicant
    request_note: Mapped[str | None] = mapped_column(Text)
    reviewer: Mapped[str | None] = mapped_column(String(128))
    outcome: Mapped[str | None] = mapped_column(String(16))  # approve | decline
    reason: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    decided_at: Mapped[dt.datetime | None]


class Consent(Base):
    """Append-only record of what the applicant consented to, per source, as given with each request."""

    __tablename__ = "consents"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    tenant_id: Mapped[int] = mapped_column(ForeignKey("tenants.id"))
    applicant_ref: Mapped[str] = mapped_column(String(64), index=True)
    decision_id: Mapped[str | None] = mapped_column(ForeignKey("decisions.id"))
    source: Mapped[str] = mapped_column(String(32))
    granted: Mapped[bool] = mapped_column(Boolean)
    recorded_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class AuditEvent(Base):
    """Append-only, hash-chained: each row's hash covers its content and the previous row's hash."""

    __tablename__ = "audit_events"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    tenant_id: Mapped[int | None]
    actor: Mapped[str] = mapped_column(String(128))
    action: Mapped[str] = mapped_column(String(64))
    subject: Mapped[str] = mapped_column(String(128))
    payload: Mapped[dict]
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64), unique=True)


class RawInput(Base):
    """The raw operating data of a request, encrypted (AES-GCM). Purged when the applicant withdraws consent
    and by the retention job; decisions never depend on it (they keep digests and the feature snapshot)."""

    __tablename__ = "raw_inputs"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    tenant_id: Mapped[int] = mapped_column(ForeignKey("tenants.id"))
    applicant_ref: Mapped[str] = mapped_column(String(64), index=True)
    decision_id: Mapped[str] = mapped_column(ForeignKey("decisions.id"), unique=True)
    key_id: Mapped[str] = mapped_column(String(32))
    nonce: Mapped[bytes] = mapped_column(LargeBinary(12))
    ciphertext: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow, index=True)


class Loan(Base):
    """A loan booked on an approved decision, in the shape of the data contract's ``loans`` file, with its latest
    monthly servicing. Written only through service/db/loans.py, each write sealed in the audit chain."""

    __tablename__ = "loans"
    __table_args__ = (UniqueConstraint("tenant_id", "loan_ref", name="uq_loans_tenant_ref"),
                      Index("ix_loans_tenant_id", "tenant_id", "id"))
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    tenant_id: Mapped[int] = mapped_column(ForeignKey("tenants.id"))
    decision_id: Mapped[str] = mapped_column(ForeignKey("decisions.id"), unique=True)  # one loan per decision
    loan_ref: Mapped[str] = mapped_column(String(64))  # keyed HMAC (per tenant) of the lender's loan reference
    applicant_ref: Mapped[str] = mapped_column(String(64), index=True)  # the decision's keyed enterprise reference
    product: Mapped[str] = mapped_column(String(16))  # term_loan | revolving_line
    limit: Mapped[float] = mapped_column(Float)
    drawn: Mapped[float] = mapped_column(Float)
    outstanding: Mapped[float] = mapped_column(Float)
    term_months: Mapped[int] = mapped_column(Integer)
    apr: Mapped[float] = mapped_column(Float)
    status: Mapped[str] = mapped_column(String(16))  # current | past_due | defaulted | repaid
    days_past_due: Mapped[int] = mapped_column(Integer)
    origination_date: Mapped[dt.date] = mapped_column(Date)
    default_month: Mapped[dt.date | None] = mapped_column(Date)
    as_of_month: Mapped[dt.date] = mapped_column(Date)  # the month the figures describe (latest servicing)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class Rescoring(Base):
    """A live loan rescored as of a month (POST /v1/monitoring/rescore): what the model and the operating signals
    said, the warning if one was raised, and everything needed to replay it (the feature snapshot, the signals'
    lead indicators, the model and policy versions). Written once; sealed in the audit chain."""

    __tablename__ = "rescorings"
    __table_args__ = (Index("ix_rescorings_tenant_loan", "tenant_id", "loan_id", "id"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    tenant_id: Mapped[int] = mapped_column(ForeignKey("tenants.id"))
    loan_id: Mapped[int] = mapped_column(ForeignKey("loans.id"))
    as_of: Mapped[dt.date] = mapped_column(Date)  # data read: complete months before this date
    model_version: Mapped[str] = mapped_column(String(32))
    policy_version: Mapped[str] = mapped_column(String(128))
    pd_then: Mapped[float] = mapped_column(Float)  # the origination's feature snapshot, scored by this model
    grade_then: Mapped[str] = mapped_column(String(8))
    pd_now: Mapped[float] = mapped_column(Float)
    grade_now: Mapped[str] = mapped_column(String(8))
    level: Mapped[str | None] = mapped_column(String(8))  # act | watch | None (no warning)
    triggers: Mapped[list]
    reasons: Mapped[list]
    indicators: Mapped[dict]  # the signals' lead indicators (None = no data)
    features: Mapped[dict]  # the snapshot the model saw now (None = missing)
    exposure: Mapped[float] = mapped_column(Float)
    expected_loss: Mapped[float] = mapped_column(Float)
    line: Mapped[dict | None]  # the credit-line recommendation with its inputs (managed products only)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class LineLink(Base):
    """A link to the borrower's page for a credit-line recommendation (only its token's SHA-256 is stored)."""

    __tablename__ = "line_links"
    token_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    rescoring_id: Mapped[int] = mapped_column(ForeignKey("rescorings.id"), index=True)
    expires_at: Mapped[dt.datetime]
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class ConsentRequest(Base):
    """A lender's request for the applicant's consent per data source, answered on the applicant's own page (a
    token link: only its SHA-256 is stored). ``expires_at`` is the deadline to answer and to score under it;
    the page stays open until ``link_expires_at`` (the deadline plus the raw-data retention), so that the
    applicant can see and withdraw their grants for as long as data shared under them may be held."""

    __tablename__ = "consent_requests"
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    tenant_id: Mapped[int] = mapped_column(ForeignKey("tenants.id"))
    applicant_ref: Mapped[str] = mapped_column(String(64), index=True)  # keyed HMAC (per tenant) of the enterprise
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    sources: Mapped[list]  # the sources asked for, in the contract's order
    purpose: Mapped[str] = mapped_column(Text)  # the lender's own words, shown to the applicant
    language: Mapped[str] = mapped_column(String(2))  # zh | en: the page's default
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[dt.datetime]
    link_expires_at: Mapped[dt.datetime]
    answered_at: Mapped[dt.datetime | None]


class ConsentGrant(Base):
    """Append-only: the applicant's answer per source (granted or declined), then any withdrawal (a later row
    with ``granted`` false). The newest row of a source is its current state."""

    __tablename__ = "consent_grants"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    request_id: Mapped[str] = mapped_column(ForeignKey("consent_requests.id"), index=True)
    source: Mapped[str] = mapped_column(String(32))
    granted: Mapped[bool] = mapped_column(Boolean)
    recorded_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class VelocityKey(Base):
    """Who applied when, pseudonymously: per decision, a row for the applicant firm (its ``applicant_ref``) and one
    for each owner or legal representative, phone and receiving account it named with links consent, each a keyed
    HMAC (per tenant) of the reference, never the reference. Written with the decision; the fraud checks' velocity
    counts read it through one index range (service/db/velocity.py)."""

    __tablename__ = "velocity_keys"
    __table_args__ = (Index("ix_velocity_keys_lookup", "tenant_id", "key", "decided_at"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    tenant_id: Mapped[int] = mapped_column(ForeignKey("tenants.id"))
    kind: Mapped[str] = mapped_column(String(8))  # firm | owner (owners and legal representatives) | phone | account
    key: Mapped[str] = mapped_column(String(64))  # firm: the applicant_ref; else keyed(tenant key, "<kind>:<ref>")
    applicant_ref: Mapped[str] = mapped_column(String(64))  # the firm that applied
    # No foreign key: an index of the decisions, written in the same transaction; it must not stop the audit's
    # tamper tests (or an operator) deleting a decision row, which the audit chain then reports missing.
    decision_id: Mapped[str] = mapped_column(String(32))
    purpose: Mapped[str] = mapped_column(String(32))
    decided_at: Mapped[dt.datetime]
