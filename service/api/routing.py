"""The edge of every route: what a request may carry before any handler or database sees it.

Strings are checked once, here, rather than in each handler or schema: a NUL byte or a lone surrogate is
refused before it can reach PostgreSQL (which cannot store either) or a log line. JSON bodies are parsed
strictly: ``application/json`` only (415 otherwise), UTF-8, no duplicate keys (JSON leaves their meaning
open: a check and a use could read different values), no NaN, Infinity or numbers too large for a float.
The only other bodies, the applicant's page forms, must be URL-encoded UTF-8.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Coroutine
from typing import Any
from urllib.parse import parse_qsl

import orjson
from fastapi import Request, Response
from fastapi.routing import APIRoute

from service.errors import Invalid, NotFound, UnsupportedMediaType

# C0 controls but tab, newline and carriage return; DEL; UTF-16 surrogates (json.loads lets a lone "\ud800"
# through, and no UTF-8 encoder can write it).
FORBIDDEN_IN_TEXT = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\ud800-\udfff]")
FORBIDDEN_IN_NAMES = re.compile("[\x00-\x1f\x7f\ud800-\udfff]")  # paths and query strings: no line breaks either
JSON_TYPES = ("application/json",)
FORM_TYPES = ("application/x-www-form-urlencoded",)


class BodyError(ValueError):
    def __init__(self, loc: list[str | int], msg: str, type_: str) -> None:
        super().__init__(msg)
        self.loc, self.msg, self.type = loc, msg, type_


def _refuse(loc: list[str | int], msg: str, type_: str) -> Invalid:
    where = ".".join(str(p) for p in loc)
    return Invalid(f"{where}: {msg}", errors=[{"loc": loc, "msg": msg, "type": type_}])


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj: dict[str, Any] = {}
    for key, value in pairs:
        if key in obj:
            raise BodyError([key], f"duplicate key {key!r}", "duplicate_key")
        obj[key] = value
    return obj


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise BodyError([], f"number {text[:40]} is out of range", "finite_number")
    return value


def _bounded_int(text: str) -> int:
    if len(text.lstrip("-")) > 20:  # larger than any field allows, and Python refuses > 4300 digits anyway
        raise BodyError([], f"integer {text[:20]}... is out of range", "finite_number")
    return int(text)


def _no_constant(name: str) -> float:
    raise BodyError([], f"{name} is not a JSON number", "finite_number")


def _check_strings(node: Any, loc: list[str | int]) -> None:
    """Every key and string value, with the path to the first offending one."""
    if isinstance(node, str):
        if FORBIDDEN_IN_TEXT.search(node):
            raise BodyError(loc, "must not contain control characters (such as NUL) or lone surrogates",
                            "control_character")
    elif isinstance(node, dict):
        for key, value in node.items():
            if FORBIDDEN_IN_TEXT.search(key):
                raise BodyError([*loc, key], "key must not contain control characters", "control_character")
            _check_strings(value, [*loc, key])
    elif isinstance(node, list):
        for i, value in enumerate(node):
            _check_strings(value, [*loc, i])


# A key followed by white space before its colon: the quick duplicate count below cannot see such a key.
_SPACED_KEY = re.compile(rb'"[ \t\r\n]+:')
_INT_AS_FLOAT = 1e19  # orjson reads an integer beyond 64 bits as a float; the strict parser has the rule for it


def _quick_parse(raw: bytes) -> Any:  # noqa: ANN401 - any JSON value
    """orjson's parse (about a fifth of the strict parser's cost), or None when only the strict parser can say
    whether the body is acceptable. orjson already refuses what the strict rules refuse but duplicate keys and
    integers beyond 64 bits: every key ends in '":' unless white space precedes its colon, and a string may
    hold '":' too, so when the parsed objects hold as many keys as the text has '":' (and no key is spaced),
    no key was dropped as a duplicate."""
    try:
        parsed = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None  # the strict parser says where and why
    if not isinstance(parsed, dict | list):
        return parsed
    keys, stack = 0, [parsed]
    while stack:
        node = stack.pop()
        if type(node) is dict:
            keys += len(node)
            node = node.values()
        for value in node:
            kind = type(value)
            if kind is dict or kind is list:
                stack.append(value)
            elif kind is float and not -_INT_AS_FLOAT < value < _INT_AS_FLOAT:
                return None
    if keys != raw.count(b'":') or _SPACED_KEY.search(raw):
        return None
    return parsed


def parse_json_body(raw: bytes) -> Any:  # noqa: ANN401 - any JSON value
    """Strict JSON, or a BodyError naming where in the body and which rule."""
    parsed = _quick_parse(raw)
    if parsed is None:
        return strict_parse(raw)
    # orjson refuses raw control characters in strings, as the strict parser does: a forbidden character can only
    # come from a \u escape or a raw DEL.
    if b"\\u" in raw or b"\x7f" in raw:
        _check_strings(parsed, [])
    return parsed


def strict_parse(raw: bytes) -> Any:  # noqa: ANN401 - any JSON value
    """The rules themselves, with the place and rule of the first failure (the quick parse's fallback)."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BodyError([], f"must be UTF-8 (invalid byte at position {exc.start})", "utf8") from exc
    try:
        parsed = json.loads(text, object_pairs_hook=_no_duplicates, parse_float=_finite,
                            parse_int=_bounded_int, parse_constant=_no_constant)
    except json.JSONDecodeError as exc:
        raise BodyError([], f"is not valid JSON ({exc.msg} at position {exc.pos})", "json_invalid") from exc
    except BodyError as exc:  # raised inside the parser: the path is not known there, the rule is
        raise BodyError(exc.loc, exc.msg, exc.type) from None
    # The parser refuses raw control characters in strings, so a forbidden character can only come from a \u
    # escape or a raw DEL: without either, there is nothing to look for (most bodies; it saves a walk).
    if "\\u" in text or "\x7f" in text:
        _check_strings(parsed, [])
    return parsed


def check_form_body(raw: bytes) -> None:
    """A URL-encoded form: UTF-8, and no control characters in any name or value once decoded."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BodyError([], f"must be UTF-8 (invalid byte at position {exc.start})", "utf8") from exc
    try:
        fields = parse_qsl(text, keep_blank_values=True, errors="strict")
    except UnicodeDecodeError as exc:  # a percent-escape that is not UTF-8
        raise BodyError([], "must be UTF-8 once percent-decoded", "utf8") from exc
    for name, value in fields:
        if FORBIDDEN_IN_TEXT.search(name) or FORBIDDEN_IN_TEXT.search(value):
            raise BodyError([name], "must not contain control characters", "control_character")


def media_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";")[0].strip().lower()


class EdgeRoute(APIRoute):
    """An APIRoute that checks path, query and body strings and parses JSON bodies strictly."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handle = super().get_route_handler()
        takes_json = self.body_field is not None

        async def edge(request: Request) -> Response:
            for name, value in request.path_params.items():
                if isinstance(value, str) and FORBIDDEN_IN_NAMES.search(value):
                    raise NotFound(f"path.{name}: no such resource (control characters are never part of one)")
            for name, value in request.query_params.multi_items():
                if FORBIDDEN_IN_NAMES.search(name) or FORBIDDEN_IN_NAMES.search(value):
                    raise _refuse(["query", name], "must not contain control characters", "control_character")
            body = await request.body()
            if not body:
                return await handle(request)
            expected = JSON_TYPES if takes_json else FORM_TYPES  # the pages' forms are the only other bodies
            if media_type(request) not in expected:
                raise UnsupportedMediaType(
                    f"header.Content-Type: send the body as {expected[0]}, got "
                    f"{media_type(request) or 'no content type'}",
                    errors=[{"loc": ["header", "Content-Type"], "msg": f"must be {expected[0]}",
                             "type": "media_type"}])
            try:
                if takes_json:
                    request._json = parse_json_body(body)  # FastAPI's handler takes the parsed body from here
                else:
                    check_form_body(body)
            except BodyError as exc:
                raise _refuse(["body", *exc.loc], exc.msg, exc.type) from None
            return await handle(request)

        return edge
