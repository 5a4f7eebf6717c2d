"""Cursor pagination for list endpoints: ``limit`` and an opaque ``cursor`` in, ``next_cursor`` out.

A cursor names the last item of the page it follows (keyset pagination), so a page never skips or repeats an
item when new ones arrive between requests, as an offset would. ``next_cursor`` is null on the last page.
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import Annotated

from fastapi import Query

from service.errors import Invalid

MAX_LIMIT = 500
Limit = Annotated[int, Query(ge=1, le=MAX_LIMIT, description="Items per page")]
Cursor = Annotated[str | None, Query(min_length=1, max_length=200,
                                     description="next_cursor of the previous page; omit for the first page")]


def encode_cursor(after: int | str) -> str:
    return base64.urlsafe_b64encode(json.dumps({"after": after}).encode()).decode().rstrip("=")


def decode_cursor(cursor: str | None, kind: type[int] | type[str]) -> int | str | None:
    """The position a cursor names; a 422 naming ``query.cursor`` when it is not one this service issued."""
    if cursor is None:
        return None
    try:
        after = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))["after"]
    except (binascii.Error, ValueError, TypeError, KeyError):
        after = None
    out_of_range = isinstance(after, int) and not 0 <= after < 2**63  # a database integer's range
    if not isinstance(after, kind) or isinstance(after, bool) or out_of_range:
        raise Invalid("query.cursor: not a cursor from this list; pass next_cursor from the previous page",
                      errors=[{"loc": ["query", "cursor"], "msg": "not a cursor from this list", "type": "cursor"}])
    return after
