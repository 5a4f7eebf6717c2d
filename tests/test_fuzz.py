"""Fuzz the whole API from its own OpenAPI document: no 5xx, and no response that breaks the spec.

Schemathesis generates requests for every operation from openapi.json (valid and invalid ones) and checks
each response: not a server error, a documented status code, a documented content type, a body that matches
the documented schema. Bounded: a fixed number of examples per operation, in process (no network), then fewer
against the real server (`smecredit serve` on loopback), where uvicorn and the edge protocol answer too.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.specs.openapi.checks import positive_data_acceptance

from tests.api_fixtures import Api, make_api, running_service

EXAMPLES_PER_OPERATION = 30
LIVE_EXAMPLES_PER_OPERATION = 15  # over the network: about 40 s in all
# JSON Schema cannot state our cross-field rules (months start on the 1st, no future dates, region agrees with
# province, no data without consent, one row per month), so schema-valid requests may rightly get a documented
# 422: the "positive data is accepted" check does not apply. Every other check runs.
EXCLUDED = [positive_data_acceptance]


@pytest.fixture(scope="module")
def fuzz_api(champion_registry: Path, tmp_path_factory: pytest.TempPathFactory) -> Api:
    db = tmp_path_factory.mktemp("fuzz") / "db.sqlite"
    api = make_api(f"sqlite:///{db}", champion_registry, rate_limit_per_minute=1_000_000)
    with api.client:
        yield api


def operations(api: Api) -> list:
    schema = schemathesis.openapi.from_asgi("/openapi.json", api.client.app)
    return [result.ok() for result in schema.get_all_operations()]


def fuzz(ops: list, headers: dict[str, str], examples: int) -> dict[str, str]:
    """Each operation's first failure, by label; empty when every check held."""
    failures = {}
    for op in ops:

        @given(case=op.as_strategy())
        # derandomize: the same examples on every run, so CI does not pass or fail by luck; vary
        # EXAMPLES_PER_OPERATION (or drop derandomize locally) to explore further.
        @settings(max_examples=examples, deadline=None, database=None, derandomize=True,
                  suppress_health_check=list(HealthCheck))
        def check(case) -> None:  # noqa: ANN001
            case.call_and_validate(headers=headers, excluded_checks=EXCLUDED)

        try:
            check()
        except Exception as exc:  # noqa: BLE001 - collect every operation's failure, then report them all
            failures[op.label] = str(exc)[:1500]
    return failures


def test_every_operation_holds_to_the_contract(fuzz_api: Api) -> None:
    ops = operations(fuzz_api)
    assert len(ops) >= 15
    failures = fuzz(ops, fuzz_api.headers("all"), EXAMPLES_PER_OPERATION)
    assert not failures, "\n\n".join(f"{k}:\n{v}" for k, v in failures.items())


def test_the_live_server_holds_to_the_contract(champion_registry: Path, tmp_path: Path) -> None:
    """The same checks over real HTTP: uvicorn's parsing, the edge protocol and middleware are in the path."""
    url = f"sqlite:///{tmp_path}/db.sqlite"
    keys = make_api(url, champion_registry)  # creates the keys in the database the server will use
    keys.client.app.state.engine.dispose()
    with running_service(url, champion_registry) as (base, _):
        schema = schemathesis.openapi.from_url(f"{base}/openapi.json")
        ops = [result.ok() for result in schema.get_all_operations()]
        assert len(ops) >= 15
        failures = fuzz(ops, keys.headers("all"), LIVE_EXAMPLES_PER_OPERATION)
    assert not failures, "\n\n".join(f"{k}:\n{v}" for k, v in failures.items())
