"""The per-owner limit on mutating requests, through the API (answers checked against
openapi.yaml), on a clock the test controls."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from tests.integration.api_contract import OTHER, OWNER, Api, cluster_spec

pytestmark = pytest.mark.filterwarnings("ignore:IAMAuthorizer is not a supported in local mode")


@pytest.fixture
def limited(api: Api, monkeypatch: pytest.MonkeyPatch):
    from lsstctl import wiring
    from lsstctl.emulator.clock import VirtualClock

    monkeypatch.setenv("LSSTCTL_RATE_LIMIT_PER_MINUTE", "3")
    clock = VirtualClock(datetime(2026, 12, 4, 10, 0, 15, tzinfo=UTC))
    wiring.reset()
    wiring.use_clock(clock)
    yield api, clock
    wiring.use_clock(None)


def test_an_owner_beyond_the_limit_waits_for_the_next_minute(limited) -> None:
    api, clock = limited
    # Given three changes by alice in one minute (each answered as usual)
    assert api.call("POST", "/users", body={"name": OWNER}).status == 201
    assert api.call("POST", "/clusters", body=cluster_spec("one")).status == 202
    assert api.call("DELETE", "/clusters/{name}", name="one").status == 202
    # When she sends a fourth, then 429 rate_limited, with the rest of the minute to wait
    refused = api.call("POST", "/clusters", body=cluster_spec("two"))
    assert (refused.status, refused.body["error"]["code"]) == (429, "rate_limited")
    assert refused.body["error"]["details"] == {"limit_per_minute": 3}
    assert int({k.lower(): v for k, v in refused.headers.items()}["retry-after"]) == 45
    # and nothing was done: the cluster does not exist
    assert api.call("GET", "/clusters/{name}", name="two").status == 404
    # Reads are not limited, and bob has his own count
    for _ in range(5):
        assert api.call("GET", "/clusters").status == 200
    assert api.call("POST", "/clusters", body=cluster_spec("bobs"), who=OTHER).status == 202
    # When the minute is over, then alice may change things again
    clock.advance(45)
    assert api.call("POST", "/clusters", body=cluster_spec("two")).status == 202
