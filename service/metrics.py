"""Prometheus metrics of one worker process: requests, decisions, the live PD and score distributions, the
group-commit writer and the database pools, drift, and the process itself (docs/operations.md)."""

from __future__ import annotations

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
)
from sqlalchemy.pool import Pool

from service.db.writer import DecisionWriter
from service.monitoring.drift import DriftReport
from service.scoring.record import DecisionRecord

PD_BUCKETS = (0.005, 0.01, 0.02, 0.04, 0.08, 0.15, 0.3, 1.0)  # the default grades' upper PDs, then the tail
SCORE_BUCKETS = tuple(float(s) for s in range(350, 901, 50))


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("smecredit_requests_total", "HTTP requests", ["route", "method", "status"],
                                registry=self.registry)
        self.latency = Histogram("smecredit_request_seconds", "Request latency", ["route"], registry=self.registry,
                                 buckets=(0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5))
        # Label sets stay bounded: three decisions, the few model versions served, one tenant per lender.
        self.decisions = Counter("smecredit_decisions_total", "Decisions by outcome, model version and tenant",
                                 ["decision", "model_version", "tenant"], registry=self.registry)
        self.pd = Histogram("smecredit_decision_pd", "PD of each decision per model version: the live view of drift",
                            ["model_version"], registry=self.registry, buckets=PD_BUCKETS)
        self.score = Histogram("smecredit_decision_score", "Score of each decision per model version",
                               ["model_version"], registry=self.registry, buckets=SCORE_BUCKETS)
        self.write_queue = Gauge("smecredit_write_queue_jobs", "Requests waiting for the group-commit writer",
                                 registry=self.registry)
        self.db_pool = Gauge("smecredit_db_pool_connections", "Database connections of this process's pools",
                             ["pool", "state"], registry=self.registry)
        ProcessCollector(registry=self.registry)  # CPU, memory, open files of the worker process
        PlatformCollector(registry=self.registry)
        GCCollector(registry=self.registry)
        self.commit_decisions = Histogram("smecredit_commit_decisions", "Decisions per group commit",
                                          registry=self.registry, buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256))
        self.commit_seconds = Histogram("smecredit_commit_seconds", "Duration of one group commit",
                                        registry=self.registry,
                                        buckets=(0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1))

        self.drift_psi = Gauge("smecredit_drift_psi", "PSI of the latest drift report per subject and segment",
                               ["tenant", "subject", "kind", "segment"], registry=self.registry)
        self.drift_subjects = Gauge("smecredit_drift_subjects", "Subjects per status in the latest drift report",
                                    ["tenant", "status"], registry=self.registry)
        self._drift_series: dict[str, set[tuple[str, str, str]]] = {}

    def watch(self, writer: DecisionWriter, pools: dict[str, Pool]) -> None:
        """Gauges read when /metrics is scraped: the writer's queue and each pool's connections."""
        self.write_queue.set_function(writer.queued)
        for name, pool in pools.items():
            for state, read in (("checked_out", "checkedout"), ("idle", "checkedin"), ("overflow", "overflow")):
                if hasattr(pool, read):  # NullPool and StaticPool keep no counts
                    self.db_pool.labels(name, state).set_function(getattr(pool, read))

    def observe_decision(self, record: DecisionRecord, tenant: str) -> None:
        self.decisions.labels(record.decision, record.model_version, tenant).inc()
        self.pd.labels(record.model_version).observe(record.pd)
        self.score.labels(record.model_version).observe(record.score)

    def observe_commit(self, decisions: int, seconds: float) -> None:
        self.commit_decisions.observe(decisions)
        self.commit_seconds.observe(seconds)

    def observe_drift(self, tenant: str, report: DriftReport) -> None:
        """Set the drift gauges from a report just computed (GET /v1/monitoring/drift): the tenant's series are
        those of its latest report, older ones are removed."""
        series = {(i.subject, i.kind, i.segment) for i in report.items}
        for stale in self._drift_series.get(tenant, set()) - series:
            self.drift_psi.remove(tenant, *stale)
        self._drift_series[tenant] = series
        for i in report.items:
            self.drift_psi.labels(tenant, i.subject, i.kind, i.segment).set(i.psi)
        for status, n in report.counts().items():
            self.drift_subjects.labels(tenant, status).set(n)
