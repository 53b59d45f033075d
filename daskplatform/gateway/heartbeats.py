"""Heartbeats as dask-gateway's handler can take them.

Its handler asserts that every started worker is listed as active, closing or closed:
a heartbeat that leaves one out (code on a scheduler holds the cluster's token and can
send one) fails the assertion and the request with HTTP 500. A started worker its
scheduler no longer lists has left it, so it is counted as closed.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from dask_gateway_server.backends.db_base import JobStatus, Worker

LISTS = ("active_workers", "closing_workers", "closed_workers")


def unlisted_as_closed(msg: dict[str, Any], workers: Iterable[Worker]) -> dict[str, Any]:
    """``msg`` with the running or closing ``workers`` it does not list added as closed."""
    listed = {name for key in LISTS for name in msg[key]}
    left = [w.name for w in workers
            if JobStatus.RUNNING <= w.status < JobStatus.STOPPED and w.name not in listed]
    return {**msg, "closed_workers": [*msg["closed_workers"], *left]} if left else msg
