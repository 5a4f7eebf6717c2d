"""Pseudonymous references: keyed HMACs, one key per lender, derived from the service's pseudonym key."""

from __future__ import annotations

import hashlib
import hmac
import json

import orjson

from service.config import Settings


def tenant_key(settings: Settings, tenant_id: int) -> bytes:
    """Each lender's own HMAC key: two lenders comparing their records cannot link an applicant through a
    shared reference or digest."""
    master = settings.pseudonym_key.get_secret_value().encode()
    return hmac.new(master, f"tenant:{tenant_id}".encode(), hashlib.sha256).digest()


def keyed(key: bytes, value: str) -> str:
    """A stable reference to ``value`` within one lender, not reversible without the key."""
    return hmac.new(key, value.encode("utf-8"), hashlib.sha256).hexdigest()


def input_digest(key: bytes, payload: dict) -> str:
    """The request's digest, keyed per tenant (an unkeyed hash of a guessable body could be confirmed), over
    its canonical JSON (sorted keys, compact, UTF-8) as orjson writes it."""
    return hmac.new(key, orjson.dumps(payload, option=orjson.OPT_SORT_KEYS), hashlib.sha256).hexdigest()


def legacy_input_digest(key: bytes, payload: dict) -> str:
    """The digest decisions recorded before orjson (the standard library's spelling of the same JSON): an
    idempotent retry of a request first sent to the older release still matches it."""
    return keyed(key, json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str))
