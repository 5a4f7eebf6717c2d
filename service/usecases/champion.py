"""Promoting and rolling back the champion, once, for the API and the CLI.

Two records must agree: the registry's pointer (with its own append-only log) and the database's audit chain.
They cannot share one transaction, so the pointer moves only after every check passed, the audit event is then
committed, and if that commit fails the pointer is moved back (the registry's log keeps both moves and why):
a promotion is never left standing unaudited.
"""

from __future__ import annotations

from sqlalchemy.orm import Session

from service.db import repo
from service.scoring.registry import Event, Registry
from service.usecases.compare import promotion_summary, stored_comparison


def _audit(session: Session, *, event: Event, action: str, actor: str, tenant_id: int | None,
           comparison: dict | None = None) -> None:
    payload = {"previous": event.previous, "reason": event.reason}
    if comparison is not None:
        payload["comparison"] = comparison
    repo.append_audit(session, tenant_id=tenant_id, actor=actor, action=action, subject=event.version,
                      payload=payload)
    session.commit()


def promote(session: Session, *, registry: Registry, version: str, by: str, actor: str, reason: str,
            tenant_id: int | None = None, comparison: dict | None = None) -> Event:
    """Check and promote ``version`` (RegistryError says why not, and nothing moves), then audit it, with the
    comparison against the outgoing champion when there is one (service/usecases/compare.py): the one given, or
    the one kept in the registry by `models compare` or `train --data`."""
    if comparison is None and (stored := stored_comparison(registry, version)) is not None:
        comparison = promotion_summary(stored)
    event = registry.promote(version, by=by, reason=reason)
    try:
        _audit(session, event=event, action="model.promoted", actor=actor, tenant_id=tenant_id,
               comparison=comparison)
    except Exception:
        session.rollback()
        registry.rollback(by=by, reason=f"promotion of {version} undone: its audit event could not be recorded")
        raise
    return event


def rollback(session: Session, *, registry: Registry, by: str, actor: str, reason: str,
             tenant_id: int | None = None) -> Event:
    """Make the previous champion champion again, then audit it."""
    event = registry.rollback(by=by, reason=reason)
    try:
        _audit(session, event=event, action="model.rolled_back", actor=actor, tenant_id=tenant_id)
    except Exception:
        session.rollback()
        registry.promote(str(event.previous), by=by,
                         reason=f"rollback to {event.version} undone: its audit event could not be recorded")
        raise
    return event
