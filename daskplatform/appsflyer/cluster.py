"""Where the pipeline's tasks run: in-process, a LocalCluster, a scheduler, or a gateway
cluster. Only clusters opened here are closed here; a user's gateway cluster or an
external scheduler is left running."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any


@contextmanager
def dask_client(scheduler: str = "sync", *, workers: int = 2, memory_per_worker: str = "2GiB",
                gateway: str | None = None) -> Iterator[Any]:
    """``sync`` yields None (the synchronous scheduler); ``local`` a LocalCluster of
    ``workers`` single-threaded processes capped at ``memory_per_worker`` each; any other
    value is a scheduler address; ``gateway`` names a running dask-gateway cluster."""
    if gateway:
        from dask_gateway import Gateway

        with Gateway() as connection:
            cluster = connection.connect(gateway)
            with cluster.get_client(set_as_default=False) as client:
                yield client
        return
    if scheduler == "sync":
        yield None
        return
    from distributed import Client, LocalCluster

    if scheduler == "local":
        with LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                          memory_limit=memory_per_worker, host="127.0.0.1",
                          dashboard_address=None) as cluster, Client(cluster) as client:
            yield client
        return
    with Client(scheduler, set_as_default=False) as client:
        yield client
