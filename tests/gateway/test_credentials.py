"""The credential routes' refusals, on a real gateway (the vending itself, through moto's
STS with the policies enforced: tests/local/test_data_access.py)."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Callable

from tests.gateway.conftest import Pool


def test_refusals_say_what_happened_and_what_to_do(make_pool: Callable[..., Pool]) -> None:
    pool = make_pool()  # small_settings name no data roles
    pool.add_agent("sched-1", "scheduler", cores=2, memory_gb=2)
    pool.start_gateway()
    status, body = pool.api("GET", "/api/v1/credentials", "zed")
    assert status == 403 and "ask to be added to one of" in body["error"]
    status, body = pool.api("GET", "/api/v1/credentials", "eve")
    assert status == 503
    assert "no data role for data_engineers" in body["error"] and "ask an admin" in body["error"]
    request = urllib.request.Request(f"{pool.api_url}/api/v1/clusters/nosuch/credentials",
                                     headers={"Authorization": "token not-a-cluster-token"})
    try:
        urllib.request.urlopen(request, timeout=30)
        raise AssertionError("a made-up cluster token was accepted")
    except urllib.error.HTTPError as exc:
        assert exc.code == 401, json.loads(exc.read())
