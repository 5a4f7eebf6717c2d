"""Velocity: how often a firm, its owners, phones and receiving accounts applied lately, from the decision records.

Each decision stores a ``velocity_keys`` row for the applicant firm and one for each owner or legal representative,
phone and receiving account it named (only with the applicant's links consent), every key a keyed HMAC with the
tenant's key: never the lender's reference. Before scoring, ``read`` gets the counts the policy's fraud checks name
(``velocity_<kind>_<days>d``, service/scoring/policy.py) with one grouped query over an index range
(tenant, key, decided_at) per key; a batch's items also count the batch's earlier items. Only committed decisions count:
two requests of one firm racing each other do not see each other.
"""

from __future__ import annotations

import datetime as dt
import functools
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import TextClause, bindparam, delete, text
from sqlalchemy.orm import Session

from service.db.tables import VelocityKey
from service.pseudonyms import keyed

# The link kinds that are velocity keys. Owners and legal representatives share one namespace (one person may be
# both); a registered address is not one: business centres register hundreds of genuine firms.
LINK_KINDS = {"owner": "owner", "legal_rep": "owner", "phone": "phone", "account": "account"}
READ_CAP = 100  # rows read per key: a count stops at 100, far above any policy's threshold
MAX_KEYS = 64  # keys per statement: SQLite allows 500 terms in a compound SELECT, a batch names thousands
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
    starts = {f"start_{w}": now - dt.timedelta(days=d) for w, d in enumerate(windows)}
    keys = sorted({k for a in applications for k in a.keys})
    found: list[Found] = []
    for chunk in range(0, len(keys), MAX_KEYS):
        part = keys[chunk:chunk + MAX_KEYS]
        size = _padded(len(part))
        named = {f"key_{i}": k for i, k in enumerate(part + [""] * (size - len(part)))}  # "": no key is empty
        rows = session.execute(_statement(size, len(windows)), {"tenant": tenant_id, "oldest": min(starts.values()),
                                                                **starts, **named})
        found += [(key, applicant, purpose, tuple(int(n) for n in tally)) for key, applicant, purpose, *tally in rows]
    return counts(found, applications, windows)


def _padded(n: int) -> int:
    """The statement size for ``n`` keys: a power of two, so that a handful of statements serve every request."""
    return 1 << (n - 1).bit_length()


_NEWEST = ("SELECT * FROM (SELECT key, applicant_ref, purpose, decided_at FROM velocity_keys"
           " WHERE tenant_id = :tenant AND key = :key_{i} AND decided_at >= :oldest"
           " ORDER BY decided_at DESC LIMIT {cap}) AS newest_{i}")


@functools.lru_cache(maxsize=32)
def _statement(n_keys: int, n_windows: int) -> TextClause:
    """Counts per (key, applicant, purpose) in each window, from each key's newest READ_CAP rows in the oldest
    window: one index range per key, the counting done by the database. Built once per shape: composing the
    same query with the expression language cost about 1 ms a request, more than the query itself."""
    # Only integers are formatted into the text; every value is a bound parameter.
    newest = " UNION ALL ".join(_NEWEST.format(i=i, cap=READ_CAP) for i in range(n_keys))
    tallies = ", ".join(f"SUM(CASE WHEN decided_at >= :start_{w} THEN 1 ELSE 0 END) AS in_{w}"
                        for w in range(n_windows))
    at = VelocityKey.__table__.c.decided_at.type  # bound as the column stores it (SQLite: text that sorts)
    return text(f"SELECT key, applicant_ref, purpose, {tallies} FROM ({newest}) AS recent"  # noqa: S608
                f" GROUP BY key, applicant_ref, purpose").bindparams(
        bindparam("oldest", type_=at), *(bindparam(f"start_{w}", type_=at) for w in range(n_windows)))


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
