"""The decision record: what one automated decision said and why, typed, in the one JSON shape it is stored in.

Built from a ``Scored`` application when it is decided; written as a ``decisions`` row (``DecisionRecord.row``);
read back with ``DecisionRecord.of`` by the API, the applicant's page, drift monitoring, replay and the audit
check, so that no module reads the stored JSON by string keys.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import math
from dataclasses import dataclass, field, fields
from typing import Any

from service.scoring.engine import Scored
from service.scoring.policy import SCORE_REVIEW_BAND, PolicyOutcome
from service.scoring.raw import MONTHLY_SOURCES

COLUMNS = ("id", "tenant_id", "application_ref", "applicant_ref", "input_digest", "idempotency_key",
           "model_version", "policy_version", "pd", "score", "grade", "decision", "offer", "reasons", "explanation",
           "features", "context", "sources_used", "created_at")
DIGESTED = tuple(c for c in COLUMNS if c != "idempotency_key")  # what the audit event's record digest covers


def _json_float(x: float) -> float | None:
    return None if math.isnan(x) else float(x)


def _utc(at: dt.datetime) -> dt.datetime:
    """Aware UTC whatever the database handed back (naive values are UTC)."""
    return at.replace(tzinfo=dt.UTC) if at.tzinfo is None else at.astimezone(dt.UTC)


def iso_utc(at: dt.datetime) -> str:
    """One spelling of a timestamp whatever the database hands back."""
    return _utc(at).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass(frozen=True)
class Explanation:
    """The exact TreeSHAP explanation and the policy's reasoning, as the ``explanation`` column holds it."""

    base_value: float
    margin: float
    points_per_margin: float
    contributions: list[float]  # one per feature, in the model's order (log-odds)
    groups: dict[str, float]  # score points per reason group
    rule_hits: list[dict]  # the policy rules that fired: code, action, text_en, text_zh (+ requests: RuleHit)
    recourse: dict | None  # refer and decline: suggestions, combined score, whether they flip the decision
    data_requests: list[str] = field(default_factory=list)  # see data_requests(); absent in older records
    # The score's range and the policy's cut-offs when it was decided (engine.Scale); absent in older records
    scale: dict | None = None

    @classmethod
    def from_scored(cls, s: Scored, points_per_margin: float, withheld: list[str]) -> Explanation:
        return cls(base_value=s.base_value, margin=s.margin, points_per_margin=points_per_margin,
                   contributions=[float(c) for c in s.contributions], groups=s.groups,
                   rule_hits=[h.to_json() for h in s.outcome.rule_hits],
                   recourse=None if s.recourse is None else s.recourse.to_json(),
                   data_requests=data_requests(s.outcome, withheld), scale=s.scale.__dict__)

    def to_json(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_json(cls, data: dict) -> Explanation:
        return cls(base_value=data["base_value"], margin=data["margin"], points_per_margin=data["points_per_margin"],
                   contributions=data["contributions"], groups=data["groups"],
                   rule_hits=data.get("rule_hits", []), recourse=data.get("recourse"),
                   data_requests=data.get("data_requests", []), scale=data.get("scale"))


@dataclass(frozen=True)
class DecisionRecord:
    """One recorded decision: pseudonymous references (keyed per tenant), the digest of its input, what was
    decided and everything needed to explain and replay it. Holds no personal data in clear."""

    id: str
    tenant_id: int
    application_ref: str
    applicant_ref: str
    input_digest: str
    idempotency_key: str | None
    model_version: str
    policy_version: str
    pd: float
    score: float
    grade: str
    decision: str
    offer: dict | None
    reasons: list[dict]
    explanation: Explanation
    features: dict[str, float | None]  # the snapshot the model saw (None = missing)
    context: dict  # the facts the policy used (no identifiers), and the graph and fraud model versions read
    sources_used: list[str]
    created_at: dt.datetime

    @classmethod
    def from_scored(cls, s: Scored, *, id: str, tenant_id: int, application_ref: str, applicant_ref: str,  # noqa: A002
                    input_digest: str, idempotency_key: str | None, model_version: str, feature_names: list[str],
                    points_per_margin: float, context: dict, created_at: dt.datetime,
                    withheld: tuple[str, ...] = ()) -> DecisionRecord:  # withheld: the sources not consented
        o = s.outcome
        return cls(id=id, tenant_id=tenant_id, application_ref=application_ref, applicant_ref=applicant_ref,
                   input_digest=input_digest, idempotency_key=idempotency_key, model_version=model_version,
                   policy_version=o.policy_version, pd=s.pd, score=s.score, grade=s.grade, decision=o.decision,
                   offer=None if o.offer is None else o.offer.to_json(), reasons=[r.__dict__ for r in s.reasons],
                   explanation=Explanation.from_scored(s, points_per_margin, list(withheld)),
                   features={n: _json_float(v) for n, v in zip(feature_names, s.features, strict=True)},
                   context=context, sources_used=list(s.sources_used), created_at=created_at)

    @classmethod
    def of(cls, row: Any) -> DecisionRecord:  # noqa: ANN401 - a decisions row: ORM object or Core row
        values = {c: getattr(row, c) for c in COLUMNS}
        values["created_at"] = _utc(values["created_at"])
        return cls(**{**values, "explanation": Explanation.from_json(values["explanation"])})

    def row(self) -> dict:
        """The ``decisions`` row's columns."""
        return {c: getattr(self, c) for c in COLUMNS} | {"explanation": self.explanation.to_json()}

    def digest(self) -> str:
        return record_digest(self.row())


def data_requests(outcome: PolicyOutcome, withheld: list[str]) -> list[str]:
    """The sources to ask the applicant for before a person looks at a referral, in the contract's order: the
    sources an applicant did not consent to share when the score fell in the review band (with the data, the
    application is scored again and decided without anyone), and the original records a fraud check's
    ``request_data`` asks for (bank statements, electricity bills: a person decides once they are in). A referral
    by any other rule (utility arrears, say) is not something more data settles, and a source the applicant shared
    but has no records in (a thin file) cannot be asked for: both go to a person."""
    if outcome.decision != "refer":
        return []
    asked: set[str] = set()
    for h in outcome.rule_hits:
        if h.action not in ("refer", "decline"):
            continue
        if h.requests:
            asked.update(h.requests)
        elif h.code == SCORE_REVIEW_BAND and withheld:
            asked.update(withheld)
        else:
            return []
    return [s for s in MONTHLY_SOURCES if s in asked]


def record_digest(row: dict) -> str:
    """SHA-256 over what a decision said and why (every column but the idempotency key): an edit to the row no
    longer matches the digest its audit event recorded."""
    record = {c: row[c] for c in DIGESTED} | {"created_at": iso_utc(row["created_at"])}
    return hashlib.sha256(json.dumps(record, sort_keys=True, ensure_ascii=False, separators=(",", ":"),
                                     default=str).encode()).hexdigest()
