"""Velocity: how often a firm, its owners, phones and receiving accounts applied lately, from the decision records.

Each decision stores a ``velocity_keys`` row for the applicant firm and one for each owner or legal representative,
phone and receiving account it named (only with the applicant's links consent), every key a keyed HMAC with the
tenant's key: never the lender's reference. Before scoring, ``read`` gets the counts the policy's fraud checks name
(``velocity_<kind>_<days>d``, service/scoring/policy.py) with one grouped query over one index range
(tenant, key, decided_at); a batch's items also count the batch's earlier items. Only committed decisions count:
two requests of one firm racing each other do not see each other.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import delete, select, union_all
from sqlalchemy.orm import Session

from service.db.tables import VelocityKey
from service.pseudonyms import keyed

# The link kinds that are velocity keys. Owners and legal representatives share one namespace (one person may be
# both); a registered address is not one: business centres register hundreds of genuine firms.
LINK_KINDS = {"owner": "owner", "legal_rep": "owner", "phone": "phone", "account": "account"}
READ_CAP = 100  # rows read per key: a count stops at 100, far above any policy's threshold
LINKED = ("owner", "phone", "account")  # velocity_<kind>: applications by other firms that named the same key


@dataclass(frozen=True)
class ApplicationKeys:
    """One application's keys: the firm's (its applicant_ref) and those of the links it may be counted by."""

    applicant_ref: str
    purpose: str
    links: tuple[tuple[str, str], ...] = ()  # (kind, key), distinct

    @property
    def keys(self) -> tuple[str, ...]:
        return (self.applicant_ref, *(k for _, k in self.links))

    def rows(self, *, tenant_id: int, decision_id: str, decided_at: dt.datetime) -> list[dict]:
        """The ``velocity_keys`` rows of the decision that recorded this application."""
        common = {"tenant_id": tenant_id, "applicant_ref": self.applicant_ref, "decision_id": decision_id,
                  "purpose": self.purpose, "decided_at": decided_at}
        return [{**common, "kind": "firm", "key": self.applicant_ref},
                *({**common, "kind": kind, "key": key} for kind, key in self.links)]


def keys_of(key: bytes, payload: dict) -> ApplicationKeys:
    """The keys of a score request (its JSON as validated). The links (``related.links``) are used only when the
    applicant consented to share them (``consent.links`` true): a source not consented is not used; and only
    those that held by the application date."""
    applicant_ref = keyed(key, payload["profile"]["enterprise_id"])
    links: dict[tuple[str, str], None] = {}
    if (payload.get("consent") or {}).get("links") is True:
        applied = str(payload["application"]["application_date"])[:10]
        for link in (payload.get("related") or {}).get("links") or ():
            kind = LINK_KINDS.get(link["kind"])
            if kind is not None and str(link.get("since") or "")[:10] <= applied:  # not a link recorded later
                links[(kind, keyed(key, f"{kind}:{link['ref']}"))] = None
    return ApplicationKeys(applicant_ref, payload["application"]["purpose"], tuple(links))


def read(session: Session, *, tenant_id: int, applications: Sequence[ApplicationKeys], windows: Sequence[int],
         now: dt.datetime) -> list[dict[str, float]]:
    """The velocity counts of each application (``velocity_<kind>_<days>d`` for each window), as of ``now``."""
    if not windows or not applications:
        return [{} for _ in applications]
    starts = [now - dt.timedelta(days=d) for d in windows]
    keys = sorted({k for a in applications for k in a.keys})
    vk = VelocityKey
    # The newest READ_CAP rows of each key, in one statement: the read costs the same however often a firm (or
    # a spammer) has applied, and counts beyond the cap, far above any policy's threshold, read as the cap.
    newest = [select(vk.key, vk.applicant_ref, vk.purpose, vk.decided_at)
              .where(vk.tenant_id == tenant_id, vk.key == key, vk.decided_at >= min(starts))
              .order_by(vk.decided_at.desc()).limit(READ_CAP).subquery() for key in keys]
    statement = union_all(*(select(*part.c) for part in newest)) if len(newest) > 1 else select(*newest[0].c)
    grouped: dict[tuple[str, str, str], list[int]] = defaultdict(lambda: [0] * len(starts))
    for key, applicant, purpose, at in session.execute(statement):
        at = at if at.tzinfo is not None else at.replace(tzinfo=dt.UTC)  # SQLite gives it back naive
        tally = grouped[key, applicant, purpose]
        for w, start in enumerate(starts):
            tally[w] += at >= start
    found = [(key, applicant, purpose, tuple(tally)) for (key, applicant, purpose), tally in grouped.items()]
    return counts(found, applications, windows)


def forget_links(session: Session, *, tenant_id: int, applicant_ref: str) -> int:
    """Delete the owner, phone and account keys an applicant's decisions stored (its links consent withdrawn);
    its firm keys stay, as its decisions do. Returns the rows deleted; the caller commits."""
    return session.execute(delete(VelocityKey).where(
        VelocityKey.tenant_id == tenant_id, VelocityKey.applicant_ref == applicant_ref,
        VelocityKey.kind != "firm")).rowcount


Found = tuple[str, str, str, tuple[int, ...]]  # key, applicant_ref, purpose, applications in each window


def counts(found: Sequence[Found], applications: Sequence[ApplicationKeys],
           windows: Sequence[int]) -> list[dict[str, float]]:
    """Each application's counts from the recorded applications ``found`` and the batch's earlier items:
    firm: this firm's applications, this one included; purposes: their distinct purposes, this one's included;
    owner, phone, account: applications by other firms naming one of this firm's keys of the kind (the most over
    its keys), absent when it named none (a missing count never fires a check)."""
    by_key: dict[str, list[Found]] = defaultdict(list)
    for f in found:
        by_key[f[0]].append(f)
    ones = (1,) * len(windows)
    out = []
    for a in applications:
        mine = by_key[a.applicant_ref]
        values: dict[str, float] = {}
        for w, days in enumerate(windows):
            values[f"velocity_firm_{days}d"] = 1 + sum(f[3][w] for f in mine)
            values[f"velocity_purposes_{days}d"] = len({a.purpose} | {f[2] for f in mine if f[3][w]})
            for kind in LINKED:
                per_key = [sum(f[3][w] for f in by_key[key] if f[1] != a.applicant_ref)
                           for k, key in a.links if k == kind]
                if per_key:
                    values[f"velocity_{kind}_{days}d"] = max(per_key)
        out.append(values)
        for key in a.keys:  # later items of the batch count this one
            by_key[key].append((key, a.applicant_ref, a.purpose, ones))
    return out
