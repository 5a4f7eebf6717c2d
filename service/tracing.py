"""Optional OpenTelemetry tracing (extra `tracing`): a span per request and one per SQL statement, exported over
OTLP/HTTP to ``SMECREDIT_TRACING_ENDPOINT`` (a collector: Jaeger, Tempo, ...). Off unless that is set.

Spans carry route templates and SQL text with placeholders, never parameter values. The applicant's page is not
traced at all: its path is the page's secret token, which must not travel to a tracing backend.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from fastapi import FastAPI
from sqlalchemy import Engine

from service import __version__

UNTRACED = "/v1/explanations/.*,/healthz,/readyz,/metrics"  # page tokens in the path; probes would only add noise


def install(app: FastAPI, engines: Iterable[Engine], *, endpoint: str | None = None, exporter: Any = None,  # noqa: ANN401
            batch: bool = True) -> Any:  # noqa: ANN401 - a TracerProvider, from an optional package
    """Trace ``app`` and ``engines`` to ``endpoint`` (OTLP/HTTP) or to ``exporter`` (tests: an in-memory one).
    Call before the app starts serving. Returns the tracer provider (shut it down to flush)."""
    try:
        from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor
        from opentelemetry.instrumentation.sqlalchemy import SQLAlchemyInstrumentor
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor
    except ImportError as exc:
        raise RuntimeError("SMECREDIT_TRACING_ENDPOINT is set but the tracing extra is not installed: "
                           "pip install 'smecredit[tracing]'") from exc
    if exporter is None:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        exporter = OTLPSpanExporter(endpoint=endpoint)
    provider = TracerProvider(resource=Resource.create({"service.name": "smecredit",
                                                        "service.version": __version__}))
    provider.add_span_processor(BatchSpanProcessor(exporter) if batch else SimpleSpanProcessor(exporter))
    FastAPIInstrumentor.instrument_app(app, tracer_provider=provider, excluded_urls=UNTRACED,
                                       exclude_spans=["receive", "send"])
    # One call for every engine: the instrumentor is a per-process singleton (a second call would be ignored).
    # Its declared range stops before SQLAlchemy 2.1, which it instruments correctly (tests/test_tracing.py):
    # without skip_dep_check it would silently trace no SQL at all.
    SQLAlchemyInstrumentor().instrument(engines=list(engines), tracer_provider=provider, enable_commenter=False,
                                        skip_dep_check=True)
    return provider


def uninstall(app: FastAPI) -> None:
    """Undo ``install`` (tests: the SQLAlchemy instrumentor is process-wide)."""
    from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor
    from opentelemetry.instrumentation.sqlalchemy import SQLAlchemyInstrumentor

    SQLAlchemyInstrumentor().uninstrument()
    FastAPIInstrumentor.uninstrument_app(app)
