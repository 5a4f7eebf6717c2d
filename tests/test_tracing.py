"""Optional OpenTelemetry tracing (issue 13): a server span per request named by its route, SQL spans with
placeholders only, and nothing traced on the applicant's page, whose path is its secret token."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("opentelemetry.sdk", reason="the tracing extra is not installed (pip install '.[tracing]')")

from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter  # noqa: E402

from service import tracing  # noqa: E402
from tests.api_fixtures import make_api  # noqa: E402


def test_requests_and_sql_are_traced_and_page_tokens_are_not(champion_registry: Path, tmp_path: Path,
                                                             example_request: dict) -> None:
    api = make_api(f"sqlite:///{tmp_path}/db.sqlite", champion_registry)
    app = api.client.app
    exporter = InMemorySpanExporter()
    provider = tracing.install(app, [app.state.engine, app.state.read_engine], exporter=exporter, batch=False)
    try:
        with api.client:
            scored = api.score(example_request).json()
            token = scored["explanation"]["token"]
            assert api.client.get(f"/v1/explanations/{token}").status_code == 200
        provider.force_flush()
        spans = exporter.get_finished_spans()
    finally:
        tracing.uninstall(app)
        app.state.engine.dispose()
    server = [s for s in spans if s.kind.name == "SERVER"]
    assert [s.name for s in server] == ["POST /v1/scores"]  # the page was not traced
    assert server[0].attributes.get("http.route") == "/v1/scores"
    sql = [s for s in spans if s.kind.name == "CLIENT" and s.attributes.get("db.system") == "sqlite"]
    assert sql, "no SQL span"
    statements = " ".join(str(s.attributes.get("db.statement", "")) for s in sql)
    assert "INSERT INTO decisions" in statements
    everything = repr([(s.name, dict(s.attributes)) for s in spans])
    assert token not in everything and example_request["profile"]["enterprise_id"] not in everything


def test_a_missing_extra_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    import builtins

    real_import = builtins.__import__

    def no_otel(name: str, *args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        if name.startswith("opentelemetry"):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_otel)
    with pytest.raises(RuntimeError, match=r"pip install 'smecredit\[tracing\]'"):
        tracing.install(None, [], endpoint="http://collector:4318/v1/traces")  # type: ignore[arg-type]
