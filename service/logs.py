"""One logging configuration for the service and the command line.

JSON lines (python-json-logger) where logs go to a collector, text for a person at a terminal; both with ISO-8601
times carrying the UTC offset, the logger's name, and the request's ID when a line is written while a request is
being handled (a context variable set by the app's outermost middleware, so a worker thread's lines carry it too).
Libraries that narrate their own start-up (alembic, httpx) are kept at WARNING. Nothing here formats request
data: handlers log route templates and codes, never tokens, keys or personal fields (tests/test_data_protection.py).
"""

from __future__ import annotations

import datetime as dt
import logging
import re
import sys
import uuid
from contextvars import ContextVar
from typing import TextIO

from pythonjsonlogger.json import JsonFormatter

REQUEST_ID: ContextVar[str | None] = ContextVar("request_id", default=None)
REQUEST_ID_HEADER = "x-request-id"
# A caller's own ID is kept when it is a plain token (what proxies and tracing systems send); anything else could
# smuggle text into log lines, so the request gets a fresh ID instead.
_ACCEPTED_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")
QUIET = ("alembic", "httpx", "httpcore", "urllib3", "asyncio", "multipart", "distributed", "matplotlib", "numba")
FORMATS = ("text", "json")


def request_id(offered: str | None) -> str:
    """The caller's X-Request-ID when it is acceptable, otherwise a new one."""
    return offered if offered is not None and _ACCEPTED_ID.fullmatch(offered) else uuid.uuid4().hex


_PLAIN_SEGMENT = re.compile(r"[a-z][a-z_-]{0,23}|v\d{1,2}")


def redacted_path(path: str) -> str:
    """A path that matched no route, for the access log: words kept, anything that could be a token, an id or
    personal data (digits, mixed case, long segments) shown as '*'."""
    return "/".join(p if not p or _PLAIN_SEGMENT.fullmatch(p) else "*" for p in path[:512].split("/"))


def _iso(record: logging.LogRecord) -> str:
    return dt.datetime.fromtimestamp(record.created).astimezone().isoformat(timespec="milliseconds")


class _WithRequestId(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = REQUEST_ID.get()
        return True


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line = f"{_iso(record)} {record.levelname} {record.name} {record.getMessage()}"
        if getattr(record, "request_id", None):
            line += f" request_id={record.request_id}"
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


class JsonLineFormatter(JsonFormatter):
    def __init__(self) -> None:
        super().__init__("%(levelname)s %(name)s %(message)s %(request_id)s",
                         rename_fields={"levelname": "level", "name": "logger"}, json_ensure_ascii=False)

    def add_fields(self, log_record: dict, record: logging.LogRecord, message_dict: dict) -> None:
        super().add_fields(log_record, record, message_dict)
        log_record["time"] = _iso(record)
        if log_record.get("request_id") is None:
            log_record.pop("request_id", None)


def configure(level: str = "INFO", fmt: str = "text", stream: TextIO | None = None) -> None:
    """Install (or replace) this module's handler on the root logger; other handlers (a test's capture) stay."""
    if fmt not in FORMATS:
        raise ValueError(f"log format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    root = logging.getLogger()
    for old in [h for h in root.handlers if getattr(h, "smecredit", False)]:
        root.removeHandler(old)
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.smecredit = True  # type: ignore[attr-defined] - marks the handler this function owns
    handler.setFormatter(JsonLineFormatter() if fmt == "json" else TextFormatter())
    handler.addFilter(_WithRequestId())
    root.addHandler(handler)
    root.setLevel(level.upper())
    for name in QUIET:
        logging.getLogger(name).setLevel(logging.WARNING)


def configured() -> bool:
    return any(getattr(h, "smecredit", False) for h in logging.getLogger().handlers)
