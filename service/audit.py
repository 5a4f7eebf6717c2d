"""Audit verification and decision replay: what an auditor runs years later.

``verify`` walks the hash chain (an edited, deleted or reordered event breaks it), cross-checks every
decision row against the digest its creation event recorded and every other sealed row (reviews, consents,
API keys, tenants) against the newest event that wrote it (an edited, inserted or deleted row shows), and,
given an anchor kept outside the database, notices the newest events being cut off. ``replay``
recomputes a decision from its stored feature snapshot with the bundle and policy versions it names.
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session

from service.db import repo
from service.db.tables import AuditEvent, Decision
from service.scoring.bundle import load_bundle
from service.scoring.engine import Engine, Scored
from service.scoring.policy import POLICY_FACTS, Policy, load_policy
from service.scoring.record import Explanation


@dataclass(frozen=True)
class Problem:
    where: str
    what: str


@dataclass(frozen=True)
class Anchor:
    """The chain's head as it was at some moment, kept outside the database (a log store, a ticket, a
    notary): a chain whose newest events were deleted no longer reaches it."""

    count: int
    head: str

    def to_json(self) -> dict:
        return {"count": self.count, "head": self.head}

    @classmethod
    def from_json(cls, data: dict) -> Anchor:
        count, head = data.get("count"), data.get("head")
        if not isinstance(count, int) or count < 0 or not isinstance(head, str) or len(head) != 64:
            raise ValueError("an anchor is {\"count\": <events>, \"head\": <64 hex digits>}")
        return cls(count, head)


def anchor(session: Session) -> Anchor:
    return Anchor(*repo.audit_head(session))


def verify(session: Session, *, anchored: Anchor | None = None) -> tuple[int, list[Problem]]:
    """(events checked, problems). Streams the chain in id order; memory holds one digest per sealed row.

    Checks the chain itself, every decision against its creation event, every sealed row (reviews, consents,
    API keys, tenants) against the newest event that sealed it, and, given an anchor, that the chain still
    reaches the anchored head.
    """
    problems: list[Problem] = []
    prev, count = repo.GENESIS, 0
    created: dict[str, str] = {}
    sealed: dict[str, str] = {}
    sealing_events = 0
    for event in session.scalars(select(AuditEvent).order_by(AuditEvent.id).execution_options(yield_per=1000)):
        count += 1
        if event.prev_hash != prev:
            problems.append(Problem(f"audit event {event.id}", "does not follow the previous event (an event was "
                                    "deleted, inserted or reordered before it)"))
        if repo.audit_hash(event.prev_hash, repo.audit_content(event)) != event.hash:
            problems.append(Problem(f"audit event {event.id}", f"content does not match its hash ({event.action} "
                                    f"{event.subject} was edited)"))
        if event.action == "decision.created":
            if event.subject in created:  # a decision is created once; a second event would re-seal an edit
                problems.append(Problem(f"audit event {event.id}", f"is a second creation event for decision "
                                        f"{event.subject} (forged)"))
            else:
                created[event.subject] = event.payload.get("record_digest", "")
        problems += _seal(event, sealed, sealing_events)
        sealing_events += repo.SEALED_KEY in event.payload
        if anchored is not None and count == anchored.count and event.hash != anchored.head:
            problems.append(Problem(f"audit event {event.id}", "is not the anchored head (the trail was rewritten "
                                    "up to the anchor)"))
        prev = event.hash
    if anchored is not None and count < anchored.count:
        problems.append(Problem("audit trail", f"has {count} events, the anchor recorded {anchored.count}: the "
                                "newest events were deleted"))
    seen = set()
    for d in session.scalars(select(Decision).execution_options(yield_per=1000)):
        seen.add(d.id)
        if d.id not in created:
            problems.append(Problem(f"decision {d.id}", "has no creation event in the audit trail"))
        elif repo.decision_digest(d) != created[d.id]:
            problems.append(Problem(f"decision {d.id}", "differs from what its creation event recorded (edited)"))
    for missing in sorted(set(created) - seen):
        problems.append(Problem(f"decision {missing}", "is in the audit trail but not in the decisions table "
                                "(deleted)"))
    for table in (t.model for t in repo.SEALED.values()):
        present = set()
        for row in session.scalars(select(table).order_by(table.id).execution_options(yield_per=1000)):
            key = repo.row_key(row)
            present.add(key)
            if key not in sealed:
                problems.append(Problem(key, "has no audit event (written outside the service)"))
            elif repo.row_digest(row) != sealed[key]:
                problems.append(Problem(key, "differs from what its last audit event recorded (edited)"))
        prefix = f"{table.__tablename__}:"
        for key in sorted(k for k in sealed if k.startswith(prefix) and k not in present):
            problems.append(Problem(key, "is in the audit trail but not in its table (deleted)"))
    return count, problems


def _seal(event: AuditEvent, sealed: dict[str, str], sealing_events_before: int) -> list[Problem]:
    """Take the event's seals; report those no such event ever writes (a forged re-seal of an edited row). The
    baseline is written by the migration that introduced seals, so it is the first event to seal anything."""
    problems = []
    for key, digest in event.payload.get(repo.SEALED_KEY, {}).items():
        table = repo.SEALED.get(key.split(":", 1)[0])
        allowed = table is not None and event.action in table.sealed_by and not (
            event.action == repo.BASELINE and (sealing_events_before or event.actor != "migration"))
        if allowed:
            sealed[key] = digest
        else:
            problems.append(Problem(f"audit event {event.id}", f"{event.action} seals {key}, which such an event "
                                    "never writes (forged)"))
    return problems


def find_policy(version: str, directories: list[Path]) -> Policy | None:
    for directory in directories:
        for path in sorted(directory.glob("*.yaml")):
            policy = load_policy(path)
            if policy.version == version:
                return policy
    return None


@dataclass(frozen=True)
class Replay:
    decision: Decision
    scored: Scored
    differences: list[str]


def replay(decision: Decision, *, registry: Path, policy_dirs: list[Path]) -> Replay:
    """Recompute a decision from its feature snapshot, model bundle and policy; list every difference."""
    engine = Engine(load_bundle(registry / decision.model_version))
    policy = find_policy(decision.policy_version, policy_dirs)
    if policy is None:
        raise ValueError(f"policy {decision.policy_version} is not in {', '.join(map(str, policy_dirs))}; "
                         "keep every policy version that decided something")
    names = engine.names
    if list(decision.features) != list(names):
        raise ValueError(f"decision {decision.id}: its feature snapshot does not match model {engine.version}")
    x = np.array([np.nan if v is None else v for v in decision.features.values()], dtype=np.float64)
    context = {k: v for k, v in decision.context.items() if k in POLICY_FACTS} | {
        "application_date": dt.date.fromisoformat(decision.context["application_date"])}
    scored = engine.decide(x, engine.bundle.contributions(x[None, :])[0], context, policy,
                           tuple(decision.sources_used))
    o = scored.outcome
    recorded = Explanation.from_json(decision.explanation)
    checks = {
        "pd": (decision.pd, scored.pd), "score": (decision.score, scored.score),
        "grade": (decision.grade, scored.grade), "offer": (decision.offer, o.offer and o.offer.to_json()),
        "decision": (decision.decision, o.decision),
        "reasons": (decision.reasons, [r.__dict__ for r in scored.reasons]),
        "contributions": (recorded.contributions, [float(c) for c in scored.contributions]),
        "base_value": (recorded.base_value, scored.base_value),
    }
    differences = [f"{k}: recorded {a!r}, replayed {b!r}" for k, (a, b) in checks.items() if not _same(a, b)]
    return Replay(decision, scored, differences)


def _same(a: object, b: object) -> bool:
    if isinstance(a, float) and isinstance(b, float):
        return a == b or (math.isnan(a) and math.isnan(b))
    return a == b
