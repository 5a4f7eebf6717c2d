"""Group commit: one writer thread per process records decisions in batches.

A score request does its CPU work (scoring, encryption, digests) itself, hands the rows to the writer and waits.
The writer takes every job waiting (up to ``MAX_BATCH`` decisions), writes them in one transaction with Core
bulk inserts, extends the audit chain in order, commits (one fsync for the whole batch) and only then answers
each request: a 200 still means the decision, its encrypted input and its audit event are on disk. While one
batch commits, the next one gathers, so batches grow with the load and a lone request waits for one commit.

A job is all or nothing (a batch request's decisions commit together). When a batch fails on a constraint
(two retries of one Idempotency-Key raced), it is rolled back and each job is written alone, so only the job
at fault fails; when the database is unreachable, every job of the batch fails and nothing is half-written.
"""

from __future__ import annotations

import concurrent.futures
import datetime as dt
import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from sqlalchemy import Engine, insert, select, text
from sqlalchemy.exc import IntegrityError

from service.db import repo
from service.db.tables import AuditEvent, Consent, Decision, ExplanationLink, RawInput, Review, VelocityKey, utcnow

log = logging.getLogger("smecredit.writer")
MAX_BATCH = 256  # decisions per transaction: bounds a commit's latency and the statement sizes
_STOP = object()


@dataclass
class NewDecisions:
    """The rows of one request's decisions, prepared by the request: each decision's row, its consents, the
    policy's review when it refers, its encrypted raw input, its page link and its velocity keys."""

    actor: str
    decisions: list[dict]
    record_digests: list[str]
    consents: list[list[dict]]  # per decision; ids are assigned by the database
    reviews: list[dict | None]  # per decision
    raw_inputs: list[dict]
    links: list[dict]
    velocity_keys: list[dict] = field(default_factory=list)  # all decisions' rows (service/db/velocity.py)

    @property
    def size(self) -> int:
        return len(self.decisions)


@dataclass
class NewLink:
    """A further page link for a recorded decision (an idempotent retry gets a link of its own)."""

    link: dict
    size: int = 1


@dataclass
class _Job:
    work: NewDecisions | NewLink
    done: concurrent.futures.Future = field(default_factory=concurrent.futures.Future)


class DecisionWriter:
    """The process's one writer of decisions. ``submit`` returns a future that resolves once the job is
    durable (or fails with the database's error: ``IntegrityError`` for a duplicate idempotency key)."""

    def __init__(self, engine: Engine, max_batch: int = MAX_BATCH,
                 on_commit: Callable[[int, float], None] | None = None) -> None:
        self.engine, self.max_batch, self.on_commit = engine, max_batch, on_commit
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._closed = False
        self.batches = 0  # commits so far, and the decisions they held: the mean batch size, for metrics
        self.written = 0

    def submit(self, work: NewDecisions | NewLink) -> concurrent.futures.Future:
        job = _Job(work)
        with self._lock:  # checked and queued together: nothing is queued behind the stop
            if self._closed:
                raise RuntimeError("the decision writer is closed")
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="decision-writer", daemon=True)
                self._thread.start()
            self._queue.put(job)
        return job.done

    def queued(self) -> int:
        """Jobs waiting for the next batch (a gauge: a queue that keeps growing means the database lags)."""
        return self._queue.qsize()

    def write(self, work: NewDecisions | NewLink, timeout: float | None = None) -> None:
        """Submit and wait (for callers without an event loop: the CLI, tests)."""
        self.submit(work).result(timeout)

    def close(self, timeout: float = 30.0) -> None:
        """Write what is queued, then stop (graceful shutdown: accepted requests are still recorded)."""
        with self._lock:
            self._closed = True
            if self._thread is not None:
                self._queue.put(_STOP)
        if self._thread is not None:
            self._thread.join(timeout)

    # --- the writer thread ----------------------------------------------------------------------------------

    def _run(self) -> None:
        stopping = False
        while not stopping:
            batch, size = [], 0
            job = self._queue.get()
            while True:
                if job is _STOP:
                    stopping = True
                    break
                # A request cancelled while queued (its client gone, or shutdown's deadline) is dropped; once
                # running, its future can no longer be cancelled, so the batch's answers cannot be refused.
                if job.done.set_running_or_notify_cancel():
                    batch.append(job)
                    size += job.work.size
                if size >= self.max_batch:
                    break
                try:
                    job = self._queue.get_nowait()
                except queue.Empty:
                    break
            if not batch:
                continue
            try:
                self._commit(batch)
            except BaseException as exc:  # the thread must outlive any one batch: its requests hear why
                log.exception("the decision writer failed on a batch")
                self._fail(batch, exc)

    def _commit(self, batch: list[_Job]) -> None:
        started = time.perf_counter()
        try:
            self._transaction([j.work for j in batch])
        except IntegrityError as exc:
            if len(batch) == 1:
                self._fail(batch, exc)
                return
            for job in batch:  # find the job at fault: each alone, in its own transaction
                self._commit([job])
            return
        except Exception as exc:  # noqa: BLE001 - every waiting request must hear of it, whatever it is
            self._fail(batch, exc)
            return
        size = sum(j.work.size for j in batch)
        self.batches += 1
        self.written += size
        for job in batch:
            job.done.set_result(None)
        if self.on_commit is not None:
            try:
                self.on_commit(size, time.perf_counter() - started)
            except Exception:  # a metrics failure must never stop the writer
                log.exception("observing a commit failed")

    @staticmethod
    def _fail(batch: list[_Job], exc: BaseException) -> None:
        for job in batch:
            if not job.done.done():
                job.done.set_exception(exc)

    def _transaction(self, works: list[NewDecisions | NewLink]) -> None:
        new = [w for w in works if isinstance(w, NewDecisions)]
        with self.engine.begin() as conn:
            if new:
                conn.execute(insert(Decision), [d for w in new for d in w.decisions])
                consents = [c for w in new for per in w.consents for c in per]
                reviews = [r for w in new for r in w.reviews if r is not None]
                _assign_ids(conn, Consent, consents)
                _assign_ids(conn, Review, reviews)
                events = [self._created_event(w, k) for w in new for k in range(w.size)]
                _append_chain(conn, events)
                conn.execute(insert(RawInput), [r for w in new for r in w.raw_inputs])
                velocity = [r for w in new for r in w.velocity_keys]
                if velocity:
                    conn.execute(insert(VelocityKey), velocity)
            links = [link for w in works for link in (w.links if isinstance(w, NewDecisions) else [w.link])]
            conn.execute(insert(ExplanationLink), links)

    @staticmethod
    def _created_event(w: NewDecisions, k: int) -> dict:
        d = w.decisions[k]
        written = [("consents", c) for c in w.consents[k]]
        if w.reviews[k] is not None:
            written.append(("reviews", w.reviews[k]))
        sealed = {f"{table}:{row['id']}": repo.digest_record({c: row[c] for c in repo.SEALED[table].columns})
                  for table, row in written}
        payload = {"input_digest": d["input_digest"], "record_digest": w.record_digests[k],
                   "model_version": d["model_version"], "policy_version": d["policy_version"],
                   "decision": d["decision"], repo.SEALED_KEY: sealed}
        return {"tenant_id": d["tenant_id"], "actor": w.actor, "action": "decision.created", "subject": d["id"],
                "payload": payload}


def _assign_ids(conn, table: type, rows: list[dict]) -> None:  # noqa: ANN001 - a Connection
    """Insert ``rows`` and write the ids the database gave them back into each dict (their seals name them)."""
    if not rows:
        return
    fresh = [{k: v for k, v in row.items() if k != "id"} for row in rows]  # not ids of a rolled-back attempt
    ids = conn.execute(insert(table).returning(table.id, sort_by_parameter_order=True), fresh).scalars().all()
    for row, id_ in zip(rows, ids, strict=True):
        row["id"] = id_


def _append_chain(conn, events: list[dict]) -> None:  # noqa: ANN001 - a Connection
    """Extend the audit chain by ``events``, in order, under the same serialisation as ``repo.append_audit``."""
    if conn.dialect.name == "postgresql":
        conn.execute(text("SELECT pg_advisory_xact_lock(7461)"))  # held until this transaction ends
    prev = conn.scalar(select(AuditEvent.hash).order_by(AuditEvent.id.desc()).limit(1)) or repo.GENESIS
    at = utcnow()
    rows = []
    for e in events:
        row = {**e, "at": at, "prev_hash": prev}
        row["hash"] = prev = repo.audit_hash(row["prev_hash"], repo.event_content(**{k: row[k] for k in (
            "at", "tenant_id", "actor", "action", "subject", "payload")}))
        rows.append(row)
    ids = conn.execute(insert(AuditEvent).returning(AuditEvent.id, sort_by_parameter_order=True), rows).scalars().all()
    if any(b <= a for a, b in zip(ids, ids[1:], strict=False)):  # the chain is walked in id order
        raise RuntimeError(f"audit events got ids out of order: {ids}")


def link_row(decision_id: str, token_hash: str, expires_at: dt.datetime) -> dict:
    return {"token_hash": token_hash, "decision_id": decision_id, "expires_at": expires_at, "created_at": utcnow()}
