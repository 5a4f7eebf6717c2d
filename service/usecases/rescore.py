"""Rescoring live loans of the book in the database with their newest operating data (POST
/v1/monitoring/rescore), recording each result, and replaying a recorded one (``smecredit monitor replay``).

A borrower's history is what its decision stored (the encrypted raw request: profile and the months before the
application) plus the newest months the lender sends now, for the sources the applicant consents to now. The
loan is scored as a new application dated ``as_of`` (its limit and term), with the same engine; the PD at
origination is the decision's feature snapshot scored by the same model, so that a new champion does not read
as a change of the borrower. Each rescoring is a row of ``rescorings``, sealed in the audit chain, with the
feature snapshot and the signals' lead indicators it was decided on: replaying recomputes PD, grade, signals,
triggers, level, expected loss and reasons from them with the recorded model and policy versions.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session

from service.audit import find_policy
from service.crypto import Keyring, KeyringError
from service.db import loans as loans_db
from service.db import repo
from service.db.tables import Decision, Loan, Rescoring
from service.errors import Conflict, Invalid, NotFound
from service.monitoring.lines import LineRecommendation, decide, inputs_for
from service.monitoring.warning import EarlyWarning, Rescored, assess, signal_rules
from service.scoring.bundle import load_bundle
from service.scoring.engine import Engine
from service.scoring.explain import Reason, group_points, principal_reasons
from service.scoring.features import Windows, build_features, gather_windows
from service.scoring.policy import Policy
from service.scoring.raw import MONTHLY_SOURCES, consented_related, raw_for_applicant
from service.scoring.signals import SIGNALS, Signals, fire, operating_signals
from service.usecases.portfolio import LossParameters

LIVE = ("current", "past_due")


@dataclass(frozen=True)
class NewMonths:
    """What the lender sends for one loan: the applicant's consent now and the newest months per source."""

    loan_id: int
    consent: dict[str, bool]
    data: dict[str, list[dict]]  # validated rows, JSON-ready (months as ISO dates)


def _invalid(loc: list[str | int], msg: str) -> Invalid:
    return Invalid(f"{'.'.join(map(str, loc))}: {msg}", errors=[{"loc": loc, "msg": msg, "type": "value_error"}])


def _history(stored: dict, item: NewMonths) -> dict[str, list[dict]]:
    """Stored months and new ones per source (a new row replaces the stored row of its month), only for the
    sources consented to both then (stored) and now."""
    out = {}
    for source in MONTHLY_SOURCES:
        if not item.consent.get(source):
            continue
        rows = {r["month"]: r for r in (stored["data"].get(source) or []) if stored["consent"].get(source)}
        rows |= {r["month"]: r for r in item.data.get(source) or []}
        out[source] = [rows[m] for m in sorted(rows)]
    return out


def _snapshot(engine: Engine, features: dict) -> np.ndarray | None:
    if list(features) != list(engine.names):
        return None
    return np.array([np.nan if v is None else v for v in features.values()], dtype=np.float64)


def _reasons_json(reasons: tuple[Reason, ...] | list[Reason]) -> list[dict]:
    return [r.__dict__ for r in reasons]


def _exposure(loan: Loan, loss: LossParameters) -> float:
    return float(loan.outstanding) + loss.ccf[loan.product] * max(float(loan.limit) - float(loan.drawn), 0.0)


@dataclass(frozen=True)
class Recorded:
    """A recorded rescoring as one response returns it: with the link to the borrower's page when a credit-line
    recommendation was made (the token is shown once; only its SHA-256 is stored)."""

    rescoring: Rescoring
    line_token: str | None = None
    line_expires_at: dt.datetime | None = None


def rescore_loans(session: Session, *, keyring: Keyring, engine: Engine, policy: Policy, tenant_id: int, actor: str,
                  items: list[NewMonths], as_of: dt.date, link_hours: int,
                  loss: LossParameters | None = None) -> list[Recorded]:
    """Rescore and record each item; all are recorded, or none (the caller commits)."""
    loss = loss or LossParameters.shipped()
    seen: set[int] = set()
    out = []
    for k, item in enumerate(items):
        loc = ["body", "items", k]
        if item.loan_id in seen:
            raise _invalid([*loc, "loan_id"], f"loan {item.loan_id} appears twice in one request")
        seen.add(item.loan_id)
        loan = loans_db.get_loan(session, tenant_id=tenant_id, loan_id=item.loan_id)
        if loan is None:
            raise NotFound(f"no loan {item.loan_id} for this tenant")
        if loan.status not in LIVE:
            raise Conflict(f"loan {loan.id} is {loan.status}: only current or past-due loans are monitored")
        if as_of < loan.origination_date:
            raise _invalid(["body", "as_of"], f"must not be before loan {loan.id}'s origination "
                           f"({loan.origination_date.isoformat()})")
        decision = session.get(Decision, loan.decision_id)
        try:
            stored = repo.read_raw_input(session, keyring=keyring, decision_id=loan.decision_id)
        except KeyringError:
            stored = None
        if stored is None:
            raise Conflict(f"loan {loan.id}: the origination's raw data is no longer held (consent withdrawn, "
                           "retention, or a key dropped); it cannot be rescored from the newest months alone")
        row = _rescore_one(session, engine=engine, policy=policy, loan=loan, decision=decision, stored=stored,
                           item=item, as_of=as_of, loss=loss, actor=actor)
        if row.line is None:
            out.append(Recorded(row))
        else:
            out.append(Recorded(row, *repo.issue_line_link(session, rescoring=row, hours=link_hours)))
    return out


def _rescore_one(session: Session, *, engine: Engine, policy: Policy, loan: Loan, decision: Decision, stored: dict,
                 item: NewMonths, as_of: dt.date, loss: LossParameters, actor: str) -> Rescoring:
    application = {"application_id": f"loan-{loan.id}", "enterprise_id": stored["profile"]["enterprise_id"],
                   "application_date": as_of.isoformat(), "requested_amount": float(loan.limit),
                   "term_months": int(loan.term_months), "purpose": stored["application"]["purpose"]}
    history = _history(stored, item)
    # The related-party features as the decision read them: with the links consent the request recorded (its
    # withdrawal purges the stored request), from the lender's graph as of this month; a rescoring without them
    # would move the PD of every linked firm against the decision's for no change in the firm.
    links = stored["consent"].get("links") is True
    raw = raw_for_applicant(stored["profile"], application, history, consented_related(stored))
    raw.graph = engine.graph if links else None
    windows = gather_windows(raw, allowed_sources=list(history))
    x_now = build_features(raw, windows=windows).values[0]
    signals = _signals_of(windows, policy)
    x_then = _snapshot(engine, decision.features)
    if x_then is None:  # the decision was made on another feature set: take what it said
        pd_then, grade_then = float(decision.pd), str(decision.grade)
    else:
        pd_then, grade_then = _score(engine, x_then)[:2]
    row_reasons, warning = _assess(engine, policy, x_now, signals.indicators, pd_then=pd_then, grade_then=grade_then,
                                   exposure=_exposure(loan, loss), lgd=loss.lgd[loan.product],
                                   industry=str(stored["profile"]["industry"]), loan=loan)
    pd_now, grade_now = _score(engine, x_now)[:2]
    line = None
    if loan.product in policy.spec.credit_lines.products:
        fired = tuple(t for t in (warning.triggers if warning else ()) if t in SIGNALS)
        inputs = inputs_for(policy, loan_id=str(loan.id), enterprise_id=loan.applicant_ref, product=loan.product,
                            as_of_month=_month(as_of), limit=float(loan.limit), drawn=float(loan.drawn),
                            outstanding=float(loan.outstanding), status=loan.status,
                            days_past_due=int(loan.days_past_due), pd_then=pd_then, grade_then=grade_then,
                            pd_now=pd_now, grade_now=grade_now, features_now=x_now, signals=fired,
                            indicators=signals.indicators)
        line = _line_json(decide(inputs, policy), row_reasons)
    row = Rescoring(
        tenant_id=loan.tenant_id, loan_id=loan.id, as_of=as_of, model_version=engine.version,
        policy_version=policy.version, pd_then=pd_then, grade_then=grade_then, pd_now=pd_now, grade_now=grade_now,
        level=warning.level if warning else None, triggers=list(warning.triggers) if warning else [],
        reasons=_reasons_json(row_reasons),
        indicators={k: _json_float(v) for k, v in signals.indicators.items()},
        features={n: _json_float(v) for n, v in zip(engine.names, x_now, strict=True)},
        exposure=_exposure(loan, loss), expected_loss=pd_now * loss.lgd[loan.product] * _exposure(loan, loss),
        line=line)
    session.add(row)
    session.flush()
    repo.append_audit(session, tenant_id=loan.tenant_id, actor=actor, action="loan.rescored", subject=f"loan:{loan.id}",
                      payload={"rescoring_id": row.id, "level": row.level, "triggers": row.triggers,
                               "model_version": row.model_version, "policy_version": row.policy_version},
                      rows=[row])
    return row


def _month(d: dt.date) -> int:
    return d.year * 12 + d.month - 1 - 1970 * 12  # month index, as service.scoring.raw.month_index


def _line_json(rec: LineRecommendation, engine_reasons: list[Reason]) -> dict:
    """A recommendation as stored: a cut or a freeze carries the engine's reasons, as a warning does."""
    if rec.action in ("cut", "freeze"):
        rec = dataclasses.replace(rec, engine_reasons=tuple(engine_reasons))
    return json.loads(json.dumps(rec.to_json()))  # tuples as lists: what the database hands back


def _signals_of(windows: Windows, policy: Policy) -> Signals:
    s = operating_signals(windows, signal_rules(policy.spec.early_warning))
    return Signals(fired=s.fired, indicators={k: float(v[0]) for k, v in s.indicators.items()})


def _score(engine: Engine, x: np.ndarray) -> tuple[float, str, np.ndarray]:
    contrib = engine.bundle.contributions(x[None, :])[0]
    pd, _, grade = engine.bundle.scorer.apply(np.array([contrib.sum()]))
    return float(pd[0]), str(grade[0]), contrib[:-1] * engine.points_per_margin


def _json_float(v: float) -> float | None:
    return None if v is None or math.isnan(v) else float(v)


def _assess(engine: Engine, policy: Policy, x_now: np.ndarray, indicators: dict[str, float], *, pd_then: float,
            grade_then: str, exposure: float, lgd: float, industry: str,
            loan: Loan) -> tuple[list[Reason], EarlyWarning | None]:
    """The warning (or None) and the reasons, from the feature snapshot and the lead indicators alone: the
    recorded path and the replay run exactly this."""
    pd_now, grade_now, points = _score(engine, x_now)
    rules = signal_rules(policy.spec.early_warning)
    values = {k: np.array([np.nan if v is None else v]) for k, v in indicators.items()}
    fired = fire(values, rules, 1)[0]
    rescored = Rescored(loan_id=str(loan.id), enterprise_id=loan.applicant_ref, exposure=exposure, lgd=lgd,
                        pd_then=pd_then, grade_then=grade_then, pd_now=pd_now, grade_now=grade_now,
                        signals=tuple(s for s, f in zip(SIGNALS, fired, strict=True) if f),
                        indicators={k: v for k, v in indicators.items() if v is not None and not math.isnan(v)})
    warned = assess([rescored], policy.spec.early_warning, policy.grades)
    reasons = principal_reasons(engine.names, x_now, points, engine.medians.get(industry),
                                group_points(engine.names, x_now, points))
    return reasons, (warned[0] if warned else None)


def list_rescorings(session: Session, *, tenant_id: int, loan_id: int, after: int, limit: int) -> list[Rescoring]:
    """One page of a loan's rescorings, oldest first (keyset pagination)."""
    q = select(Rescoring).where(Rescoring.tenant_id == tenant_id, Rescoring.loan_id == loan_id, Rescoring.id > after)
    return list(session.scalars(q.order_by(Rescoring.id).limit(limit)))


@dataclass(frozen=True)
class RescoringReplay:
    rescoring: Rescoring
    differences: list[str]


def replay_rescoring(session: Session, *, rescoring_id: int, registry: Path,
                     policy_dirs: list[Path]) -> RescoringReplay:
    """Recompute a recorded rescoring from its snapshot and indicators with its model and policy versions."""
    row = session.get(Rescoring, rescoring_id)
    if row is None:
        raise NotFound(f"no rescoring {rescoring_id}")
    loan = session.get(Loan, row.loan_id)
    decision = session.get(Decision, loan.decision_id)
    engine = Engine(load_bundle(registry / row.model_version))
    policy = find_policy(row.policy_version, policy_dirs)
    if policy is None:
        raise ValueError(f"policy {row.policy_version} is not in {', '.join(map(str, policy_dirs))}; keep every "
                         "policy version that decided something")
    x_now = _snapshot(engine, row.features)
    if x_now is None:
        raise ValueError(f"rescoring {row.id}: its feature snapshot does not match model {engine.version}")
    x_then = _snapshot(engine, decision.features)
    pd_then, grade_then = (float(decision.pd), str(decision.grade)) if x_then is None else _score(engine, x_then)[:2]
    industry = str(decision.context["industry"])
    reasons, warning = _assess(engine, policy, x_now, row.indicators, pd_then=pd_then, grade_then=grade_then,
                               exposure=row.exposure, lgd=LossParameters.shipped().lgd[loan.product],
                               industry=industry, loan=loan)
    pd_now, grade_now = _score(engine, x_now)[:2]
    checks = {
        "pd_then": (row.pd_then, pd_then), "grade_then": (row.grade_then, grade_then),
        "pd_now": (row.pd_now, pd_now), "grade_now": (row.grade_now, grade_now),
        "level": (row.level, warning.level if warning else None),
        "triggers": (row.triggers, list(warning.triggers) if warning else []),
        "reasons": (row.reasons, _reasons_json(reasons)),
    }
    if row.line is not None:
        stored = LineRecommendation.from_json(row.line)
        again = _line_json(decide(stored.inputs, policy), reasons)
        checks["line"] = (row.line, again)
        checks["line inputs"] = ((stored.inputs.pd_now, stored.inputs.grade_now, stored.inputs.pd_then),
                                 (pd_now, grade_now, pd_then))
    return RescoringReplay(row, [f"{k}: recorded {a!r}, replayed {b!r}" for k, (a, b) in checks.items() if a != b])
