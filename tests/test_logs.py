"""Logs the people who run the service can use (issue 13): one configuration for the API and the CLI, JSON lines in
production, ISO-8601 times with their offset, a request ID on every request (in the response, every log line
written meanwhile and every error body), route templates and never a raw path that could carry a token."""

from __future__ import annotations

import io
import json
import logging
import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from service import logs
from service.config import Environment, Settings
from service.crypto import Keyring
from tests.api_fixtures import Api, free_port, make_api, wait_ready

ISO_WITH_OFFSET = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}[+-]\d\d:\d\d$")


@pytest.fixture()
def captured() -> Iterator[io.StringIO]:
    """The service's own handler, writing JSON lines to a buffer; removed afterwards."""
    stream = io.StringIO()
    logs.configure("INFO", "json", stream=stream)
    try:
        yield stream
    finally:
        root = logging.getLogger()
        for h in [h for h in root.handlers if getattr(h, "smecredit", False)]:
            root.removeHandler(h)


def lines(stream: io.StringIO) -> list[dict]:
    return [json.loads(line) for line in stream.getvalue().splitlines() if line.strip()]


def test_a_json_line_has_an_iso_time_with_offset_the_logger_and_the_request_id(captured: io.StringIO) -> None:
    token = logs.REQUEST_ID.set("req-1")
    try:
        logging.getLogger("smecredit.test").info("scored %d applications", 3)
    finally:
        logs.REQUEST_ID.reset(token)
    logging.getLogger("smecredit.test").warning("outside a request")
    first, second = lines(captured)
    assert ISO_WITH_OFFSET.match(first["time"]), first["time"]
    assert (first["level"], first["logger"], first["message"], first["request_id"]) == \
        ("INFO", "smecredit.test", "scored 3 applications", "req-1")
    assert "request_id" not in second  # no request, no ID
    assert not {"pathname", "lineno", "filename"} & set(first)  # no source links


def test_text_lines_for_a_terminal() -> None:
    stream = io.StringIO()
    logs.configure("INFO", "text", stream=stream)
    try:
        logging.getLogger("alembic.runtime.migration").info("Context impl SQLiteImpl.")  # library chatter
        logging.getLogger("smecredit.train").info("fitting")
    finally:
        root = logging.getLogger()
        for h in [h for h in root.handlers if getattr(h, "smecredit", False)]:
            root.removeHandler(h)
    (line,) = stream.getvalue().splitlines()
    stamp, level, name, message = line.split(" ", 3)
    assert ISO_WITH_OFFSET.match(stamp) and (level, name, message) == ("INFO", "smecredit.train", "fitting")


def test_the_format_follows_the_environment_unless_set() -> None:
    assert Settings().log_format_in_effect == "text"
    production = Settings(environment=Environment.production, database_url="postgresql://db/prod",
                          pseudonym_key="x" * 32, data_keys=f"k1:{Keyring.new_key()}", docs_enabled=False,
                          public_base_url="https://credit.example.cn", metrics_token="m" * 32)
    assert production.log_format_in_effect == "json"
    assert Settings(log_format="json").log_format_in_effect == "json"
    with pytest.raises(ValueError, match="log_format"):
        Settings(log_format="xml")
    with pytest.raises(ValueError, match="log format must be one of text, json"):
        logs.configure("INFO", "xml")


class TestRequestIds:
    @pytest.fixture()
    def api(self, champion_registry: Path, tmp_path: Path, captured: io.StringIO) -> Iterator[Api]:
        a = make_api(f"sqlite:///{tmp_path}/db.sqlite", champion_registry)
        with a.client:
            yield a
        a.client.app.state.engine.dispose()

    def test_the_callers_id_comes_back_and_is_on_every_line(self, api: Api, captured: io.StringIO,
                                                           example_request: dict) -> None:
        r = api.client.post("/v1/scores", json=example_request,
                            headers={**api.headers(), "X-Request-ID": "lender-7f3a:42"})
        assert r.status_code == 200 and r.headers["x-request-id"] == "lender-7f3a:42"
        access = [e for e in lines(captured) if e["logger"] == "smecredit.access"]
        assert access[-1]["request_id"] == "lender-7f3a:42" and "POST /v1/scores 200" in access[-1]["message"]

    def test_an_error_body_names_the_request(self, api: Api) -> None:
        r = api.client.get("/v1/decisions/nope", headers={**api.headers(), "X-Request-ID": "abc"})
        assert r.status_code == 404
        assert r.json()["request_id"] == r.headers["x-request-id"] == "abc"
        refused = api.client.get("/v1/decisions/nope")  # refused at the edge, before any route: an ID all the same
        assert refused.status_code == 401 and refused.json()["request_id"] == refused.headers["x-request-id"]

    def test_ids_are_made_when_missing_or_unsafe(self, api: Api) -> None:
        made = {api.client.get("/healthz").headers["x-request-id"] for _ in range(3)}
        assert len(made) == 3 and all(re.fullmatch(r"[0-9a-f]{32}", m) for m in made)
        for bad in ("x" * 129, "has space", "quote\"d", "semi;colon"):
            got = api.client.get("/healthz", headers={"X-Request-ID": bad})
            assert re.fullmatch(r"[0-9a-f]{32}", got.headers["x-request-id"]), bad

    def test_a_path_that_matched_nothing_is_logged_without_what_could_be_a_token(self, api: Api,
                                                                                captured: io.StringIO) -> None:
        api.client.get("/v1/explanatins/Zx81_secretTOKEN", headers=api.headers())  # a typo in the address
        last = [e for e in lines(captured) if e["logger"] == "smecredit.access"][-1]
        assert last["message"].startswith("GET unmatched /v1/explanatins/* 404")
        assert "secret" not in json.dumps(lines(captured))


def test_a_served_process_writes_json_lines_only(champion_registry: Path, tmp_path: Path) -> None:
    """`smecredit serve` in production format: every line on stderr is one JSON object, uvicorn's included."""
    api = make_api(f"sqlite:///{tmp_path}/db.sqlite", champion_registry)
    api.client.app.state.engine.dispose()
    port = free_port()
    env = {**os.environ, "SMECREDIT_DATABASE_URL": f"sqlite:///{tmp_path}/db.sqlite",
           "SMECREDIT_REGISTRY": str(champion_registry), "SMECREDIT_ENVIRONMENT": "test",
           "SMECREDIT_LOG_FORMAT": "json"}
    smecredit = str(Path(sys.executable).with_name("smecredit"))
    proc = subprocess.Popen([smecredit, "serve", "--host", "127.0.0.1", "--port", str(port)], env=env,  # noqa: S603
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        wait_ready(f"http://127.0.0.1:{port}", proc)
        httpx.get(f"http://127.0.0.1:{port}/v1/models", headers={"Authorization": f"Bearer {api.keys['score']}",
                                                                  "X-Request-ID": "probe-1"})
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=40)
    entries = [json.loads(line) for line in err.splitlines()]  # fails on any line that is not JSON
    assert any(e["logger"].startswith("uvicorn") for e in entries)
    probe = [e for e in entries if e.get("request_id") == "probe-1"]
    assert probe and probe[-1]["message"].startswith("GET /v1/models 200")
    assert api.keys["score"] not in err
